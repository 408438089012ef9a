//! The error envelope (DESIGN.md §3): the single place an `ApiError` becomes a response body.

use crate::domain::{ApiError, ErrorCode};
use serde_json::{json, Value};

pub fn error_body(err: &ApiError, request_id: &str) -> Value {
    let mut error = json!({
        "code": err.code.as_str(),
        "message": err.message,
        "retryable": err.retryable(),
        "requestId": request_id,
    });
    if let Some(details) = &err.details {
        error["details"] = details.clone();
    }
    json!({ "error": error })
}

/// Headers an error response needs beyond the defaults.
pub fn error_headers(err: &ApiError) -> Vec<(&'static str, String)> {
    let mut headers = err.headers.clone();
    headers.extend(code_headers(err));
    headers
}

fn code_headers(err: &ApiError) -> Vec<(&'static str, String)> {
    match err.code.status() {
        401 => vec![(
            "WWW-Authenticate",
            format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                err.code
            ),
        )],
        _ if err.code == ErrorCode::MethodNotAllowed => err
            .details
            .as_ref()
            .and_then(|d| d.get("allow"))
            .and_then(Value::as_array)
            .map(|methods| {
                let list: Vec<&str> = methods.iter().filter_map(Value::as_str).collect();
                vec![("Allow", list.join(", "))]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let err = ApiError::validation("name", "must be 3 to 63 characters long");
        let body = error_body(&err, "req_1");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["retryable"], false);
        assert_eq!(body["error"]["requestId"], "req_1");
        assert_eq!(body["error"]["details"]["field"], "name");
    }

    #[test]
    fn internal_causes_never_reach_the_body() {
        let err = ApiError::internal("D1_ERROR: secret-ish detail at src/x.rs:42");
        let text = error_body(&err, "req_1").to_string();
        assert!(!text.contains("D1_ERROR"));
        assert!(!text.contains("x.rs"));
        assert!(text.contains("\"retryable\":true"));
    }

    #[test]
    fn auth_failures_carry_www_authenticate() {
        let err = ApiError::new(ErrorCode::TokenExpired, "expired");
        assert_eq!(error_headers(&err)[0].0, "WWW-Authenticate");
        let err = ApiError::new(ErrorCode::MethodNotAllowed, "no")
            .with_details(json!({"allow": ["GET", "PATCH"]}));
        assert_eq!(
            error_headers(&err),
            vec![("Allow", "GET, PATCH".to_owned())]
        );
    }
}
