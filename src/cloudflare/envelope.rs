//! The Cloudflare API v4 envelope (`{success, errors, messages, result}`) and the classification of failures.
//! A `ProviderError` names the deploy step and endpoint and carries the provider's own message (bounded), so a
//! failed deployment is debuggable; it never carries the API token, which only ever lives in a request header.

use super::api::{ApiRequest, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest provider message kept on a deployment row.
pub const MAX_PROVIDER_MESSAGE_CHARS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// 401/403: the token is wrong or lacks a permission. Retrying will not help.
    Auth,
    /// 404: account, namespace or script does not exist.
    NotFound,
    /// 400/409/413/422: the request (e.g. the script) was refused. Retrying the same request will not help.
    Validation,
    /// 429: slow down; `retry_after_s` when Cloudflare said how long.
    RateLimited,
    /// 5xx: Cloudflare's side; retryable.
    Upstream,
    /// The request never got an HTTP answer.
    Network,
    /// A 2xx whose body is not a v4 envelope.
    InvalidResponse,
}

impl FailureKind {
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::RateLimited | FailureKind::Upstream | FailureKind::Network
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderError {
    pub kind: FailureKind,
    pub step: Step,
    /// `METHOD /path`, no query and no credentials.
    pub endpoint: String,
    pub status: Option<u16>,
    /// Cloudflare's error codes, e.g. 10021 for a script that does not compile.
    pub codes: Vec<i64>,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed at {} ({:?}",
            self.step.as_str(),
            self.endpoint,
            self.kind
        )?;
        if let Some(s) = self.status {
            write!(f, ", HTTP {s}")?;
        }
        write!(f, "): {}", self.message)
    }
}

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    result: Value,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    /// The errors beneath this one (Cloudflare reports e.g. an authentication failure as a 400 whose chain holds
    /// 10000 or a 9xxx code).
    #[serde(default)]
    error_chain: Vec<ErrorItem>,
}

impl ErrorItem {
    /// This error's code and those of its chain, outermost first.
    fn codes(&self, into: &mut Vec<i64>) {
        into.push(self.code);
        for inner in &self.error_chain {
            inner.codes(into);
        }
    }
}

/// Codes Cloudflare answers for a moment's trouble, whatever the HTTP status: 10013 (an unknown error, seen under
/// concurrent deploys) and 10035 (a concurrent modification of the same script).
const TRANSIENT_CODES: [i64; 2] = [10013, 10035];

/// 10000 (authentication error) and the 9xxx family (a missing, malformed or invalid token or key).
fn is_auth_code(code: i64) -> bool {
    code == 10000 || (9000..10000).contains(&code)
}

/// What an operator does about an authentication failure.
const AUTH_HINT: &str = "check CLOUDFLARE_API_TOKEN (a valid API token with Workers Scripts: Edit, and Workers \
     for Platforms: Edit for a dispatch namespace) and that CLOUDFLARE_ACCOUNT_ID is that token's account";

fn bounded(message: &str) -> String {
    let mut out: String = message.chars().take(MAX_PROVIDER_MESSAGE_CHARS).collect();
    if message.chars().count() > MAX_PROVIDER_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

fn kind_for(status: u16) -> FailureKind {
    match status {
        401 | 403 => FailureKind::Auth,
        404 => FailureKind::NotFound,
        429 => FailureKind::RateLimited,
        500..=599 => FailureKind::Upstream,
        _ => FailureKind::Validation,
    }
}

/// Interprets one HTTP answer to `request`: the envelope's `result` on success, a classified failure otherwise.
pub fn parse_response(
    request: &ApiRequest,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> Result<Value, ProviderError> {
    let envelope: Option<Envelope> = serde_json::from_str(body).ok();
    let fail = |kind: FailureKind, codes: Vec<i64>, message: String| ProviderError {
        kind,
        step: request.step,
        endpoint: request.endpoint(),
        status: Some(status),
        codes,
        message: bounded(&message),
        retry_after_s: retry_after.and_then(|v| v.trim().parse().ok()),
    };
    match envelope {
        Some(env) if env.success && (200..300).contains(&status) => Ok(env.result),
        Some(env) => {
            let mut codes = Vec::new();
            for e in &env.errors {
                e.codes(&mut codes);
            }
            let message = env
                .errors
                .iter()
                .map(|e| {
                    if e.code != 0 {
                        format!("{} ({})", e.message, e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let mut message = if message.is_empty() {
                format!("HTTP {status}")
            } else {
                message
            };
            let kind = if codes.iter().any(|c| TRANSIENT_CODES.contains(c)) {
                FailureKind::Upstream
            } else if matches!(status, 400 | 401 | 403) && codes.iter().copied().any(is_auth_code) {
                message = format!("{message} — {AUTH_HINT}");
                FailureKind::Auth
            } else if (200..300).contains(&status) {
                FailureKind::Validation
            } else {
                kind_for(status)
            };
            Err(fail(kind, codes, message))
        }
        // No content: the call succeeded and has nothing to say.
        None if matches!(status, 204 | 205) && body.trim().is_empty() => Ok(Value::Null),
        None if (200..300).contains(&status) => Err(fail(
            FailureKind::InvalidResponse,
            Vec::new(),
            "the response is not a Cloudflare API envelope".into(),
        )),
        None => {
            let snippet: String = body.chars().take(200).collect();
            Err(fail(
                kind_for(status),
                Vec::new(),
                format!("HTTP {status}: {snippet}"),
            ))
        }
    }
}

/// A request that got no HTTP answer at all.
pub fn network_failure(request: &ApiRequest, cause: &str) -> ProviderError {
    ProviderError {
        kind: FailureKind::Network,
        step: request.step,
        endpoint: request.endpoint(),
        status: None,
        codes: Vec::new(),
        message: bounded(cause),
        retry_after_s: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudflare::api::DeployTarget;

    fn upload() -> ApiRequest {
        DeployTarget::WorkersDev {
            account_id: "a".into(),
        }
        .upload(
            "s",
            &crate::cloudflare::api::ScriptMetadata {
                main_module: "index.js".into(),
                compatibility_date: "2026-07-30".into(),
                compatibility_flags: vec![],
                bindings: vec![],
                tags: vec![],
            },
            &[],
            "b",
        )
    }

    #[test]
    fn success_returns_the_result() {
        let body = include_str!("fixtures/upload_success.json");
        let result = parse_response(&upload(), 200, None, body).unwrap();
        assert_eq!(result["id"], "s");
    }

    #[test]
    fn a_script_that_does_not_compile_is_a_validation_failure_with_the_providers_message() {
        let body = include_str!("fixtures/upload_syntax_error.json");
        let err = parse_response(&upload(), 400, None, body).unwrap_err();
        assert_eq!(err.kind, FailureKind::Validation);
        assert_eq!(err.step, Step::Upload);
        assert_eq!(err.endpoint, "PUT /accounts/a/workers/scripts/s");
        assert_eq!(err.codes, vec![10021]);
        assert!(
            err.message.contains("Uncaught SyntaxError"),
            "{}",
            err.message
        );
        assert!(!err.kind.retryable());
    }

    #[test]
    fn statuses_are_classified() {
        let body = r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}"#;
        for (status, kind) in [
            (401, FailureKind::Auth),
            (403, FailureKind::Auth),
            (404, FailureKind::NotFound),
            (409, FailureKind::Validation),
            (429, FailureKind::RateLimited),
            (500, FailureKind::Upstream),
            (503, FailureKind::Upstream),
        ] {
            assert_eq!(
                parse_response(&upload(), status, None, body)
                    .unwrap_err()
                    .kind,
                kind,
                "{status}"
            );
        }
        let limited = parse_response(&upload(), 429, Some("17"), body).unwrap_err();
        assert_eq!(limited.retry_after_s, Some(17));
        assert!(limited.kind.retryable());
    }

    #[test]
    fn transient_codes_are_retryable_whatever_the_status() {
        for (status, code) in [(400, 10013), (409, 10035), (200, 10013), (403, 10035)] {
            let body = format!(
                r#"{{"success":false,"errors":[{{"code":{code},"message":"An unknown error has occurred"}}],"result":null}}"#
            );
            let e = parse_response(&upload(), status, None, &body).unwrap_err();
            assert!(e.kind.retryable(), "{status} {code}: {:?}", e.kind);
            assert_eq!(e.codes, vec![code]);
        }
    }

    #[test]
    fn an_auth_failure_inside_a_400_is_an_auth_error_that_says_what_to_fix() {
        let body = r#"{"success":false,"errors":[{"code":10001,"message":"Unable to authenticate request","error_chain":[{"code":9109,"message":"Invalid access token"}]}],"result":null}"#;
        let e = parse_response(&upload(), 400, None, body).unwrap_err();
        assert_eq!(e.kind, FailureKind::Auth);
        assert!(!e.kind.retryable());
        assert_eq!(e.codes, vec![10001, 9109]);
        assert!(e.message.contains("CLOUDFLARE_API_TOKEN"), "{}", e.message);
        // A 400 about the script itself stays a validation failure.
        let refused = r#"{"success":false,"errors":[{"code":10021,"message":"Uncaught SyntaxError"}],"result":null}"#;
        assert_eq!(
            parse_response(&upload(), 400, None, refused)
                .unwrap_err()
                .kind,
            FailureKind::Validation
        );
    }

    #[test]
    fn an_empty_204_or_205_is_success() {
        assert_eq!(parse_response(&upload(), 204, None, ""), Ok(Value::Null));
        assert_eq!(parse_response(&upload(), 205, None, "  "), Ok(Value::Null));
        assert_eq!(
            parse_response(&upload(), 200, None, "").unwrap_err().kind,
            FailureKind::InvalidResponse
        );
    }

    #[test]
    fn non_envelope_answers_are_classified_and_bounded() {
        let err = parse_response(
            &upload(),
            502,
            None,
            &"<html>bad gateway</html>".repeat(100),
        )
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Upstream);
        assert!(err.message.len() < 300);
        let err = parse_response(&upload(), 200, None, "ok").unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidResponse);
        let long = format!(
            r#"{{"success":false,"errors":[{{"code":1,"message":"{}"}}]}}"#,
            "x".repeat(5000)
        );
        let err = parse_response(&upload(), 400, None, &long).unwrap_err();
        assert!(err.message.chars().count() <= MAX_PROVIDER_MESSAGE_CHARS + 1);
    }

    #[test]
    fn network_failures_name_the_step() {
        let err = network_failure(&upload(), "connection refused");
        assert_eq!(err.kind, FailureKind::Network);
        assert_eq!(err.status, None);
        assert!(err
            .to_string()
            .contains("upload failed at PUT /accounts/a/workers/scripts/s"));
    }
}
