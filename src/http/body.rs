//! Request bodies: content type, size and JSON shape, each failing with its own stable code before any
//! handler runs, so bad input never reaches the store.

use crate::domain::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// Largest JSON body accepted by the API routes. Agent metadata is small; this leaves ample headroom.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

/// Largest deploy request: a module of up to 1 MiB, JSON-escaped, plus the other fields.
pub const MAX_DEPLOY_BODY_BYTES: usize = 3 * 1024 * 1024;
/// A bundle deploy's multipart body: its modules (at most `BundleLimits::max_total_bytes` together, checked
/// once read) and their part headers. Held in the worker's memory while it is checked and uploaded.
pub const MAX_BUNDLE_BODY_BYTES: usize = 12 * 1024 * 1024;

pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The request body exceeds {limit} bytes."),
    )
    .with_details(serde_json::json!({ "maxBytes": limit }))
}

/// A declared `Content-Length` above the limit is refused before reading anything.
pub fn check_declared_length(content_length: Option<&str>, limit: usize) -> Result<(), ApiError> {
    match content_length.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) if n > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// Requires `application/json` (parameters such as `charset=utf-8` allowed).
pub fn check_json_content_type(content_type: Option<&str>) -> Result<(), ApiError> {
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if media_type.as_deref() == Some("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Send the body as JSON with 'Content-Type: application/json'.",
        ))
    }
}

/// Parses a JSON body into `T`. Syntax errors are `invalid_json`; a body of the wrong shape (unknown field,
/// missing field, wrong type) is `invalid_body` with serde's description, which names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json_limited(bytes, MAX_JSON_BODY_BYTES)
}

pub fn parse_json_limited<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, ApiError> {
    if bytes.len() > limit {
        return Err(too_large(limit));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                ErrorCode::InvalidBody,
                format!("The request body does not have the expected shape: {e}."),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                ErrorCode::InvalidJson,
                format!("The request body is not valid JSON: {e}."),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::patch::double_option;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default, deserialize_with = "double_option")]
        description: Option<Option<String>>,
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(check_json_content_type(Some("application/json")).is_ok());
        assert!(check_json_content_type(Some("Application/JSON; charset=utf-8")).is_ok());
        for bad in [
            None,
            Some("text/plain"),
            Some("application/jsonx"),
            Some(""),
        ] {
            assert_eq!(
                check_json_content_type(bad).unwrap_err().code,
                ErrorCode::UnsupportedMediaType
            );
        }
    }

    #[test]
    fn declared_length_over_the_limit_is_refused() {
        assert!(check_declared_length(Some("65536"), MAX_JSON_BODY_BYTES).is_ok());
        assert_eq!(
            check_declared_length(Some("65537"), MAX_JSON_BODY_BYTES)
                .unwrap_err()
                .code,
            ErrorCode::PayloadTooLarge
        );
        assert!(check_declared_length(None, MAX_JSON_BODY_BYTES).is_ok());
    }

    #[test]
    fn syntax_and_shape_errors_have_distinct_codes() {
        assert_eq!(
            parse_json::<Body>(b"{\"name\":").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_json::<Body>(b"").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        let unknown = parse_json::<Body>(br#"{"name":"a","nmae":"b"}"#).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::InvalidBody);
        assert!(unknown.message.contains("nmae"), "{}", unknown.message);
        assert_eq!(
            parse_json::<Body>(br#"{"name":5}"#).unwrap_err().code,
            ErrorCode::InvalidBody
        );
        assert_eq!(
            parse_json::<Body>(b"[]").unwrap_err().code,
            ErrorCode::InvalidBody
        );
        assert_eq!(
            parse_json::<Body>(&vec![b' '; MAX_JSON_BODY_BYTES + 1])
                .unwrap_err()
                .code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn double_option_distinguishes_absent_null_and_value() {
        let absent: Body = parse_json(br#"{"name":"a"}"#).unwrap();
        let null: Body = parse_json(br#"{"name":"a","description":null}"#).unwrap();
        let value: Body = parse_json(br#"{"name":"a","description":"d"}"#).unwrap();
        assert_eq!(absent.description, None);
        assert_eq!(null.description, Some(None));
        assert_eq!(value.description, Some(Some("d".into())));
    }
}
