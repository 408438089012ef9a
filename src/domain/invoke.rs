//! invoke/v1 at the gateway (DESIGN.md §3): validating what clients send, building what the agent receives
//! (with the runtime session id in place of the client's), rewriting what the agent answers (the client's
//! session id back, the gateway's trace id), and classifying upstream failures into stable errors.

use super::error::{ApiError, ErrorCode};
use super::ids::random_hex;
use super::session::is_valid_client_session_id;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub const PROTOCOL: &str = "invoke/v1";
/// Largest invoke request accepted from a client.
pub const MAX_INVOKE_BODY_BYTES: usize = 512 * 1024;
/// Largest upstream answer the JSON endpoint (or a non-SSE answer on the stream endpoint) will read.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 2 * 1024 * 1024;
pub const MAX_MESSAGES: usize = 256;
/// How much of a failed upstream answer is shown to the caller.
pub const SNIPPET_BYTES: usize = 512;
const ROLES: &[&str] = &["system", "user", "assistant", "tool"];

/// A validated client request.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeRequest {
    pub messages: Vec<Value>,
    pub session_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequest {
    protocol: Value,
    input: Value,
    #[serde(default)]
    session_id: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// A gateway trace id: fresh per invocation and never taken from the client, so a client cannot make two
/// invocations look like one to anything that deduplicates by trace.
pub fn new_trace_id() -> String {
    format!("trc_{}", random_hex(16))
}

impl InvokeRequest {
    pub fn from_json(body: Value) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "The body must be an invoke/v1 request object.",
            ));
        }
        let raw: RawRequest = serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("Not an invoke/v1 request: {e}"),
            )
        })?;
        if raw.protocol != PROTOCOL {
            return Err(ApiError::validation(
                "protocol",
                format!("must be \"{PROTOCOL}\""),
            ));
        }
        let messages = match raw.input.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() && m.len() <= MAX_MESSAGES => m.clone(),
            _ => {
                return Err(ApiError::validation(
                    "input.messages",
                    format!("must be an array of 1 to {MAX_MESSAGES} messages"),
                ))
            }
        };
        if raw.input.as_object().is_none_or(|o| o.len() != 1) {
            return Err(ApiError::validation(
                "input",
                "must be an object with only `messages`",
            ));
        }
        for (i, m) in messages.iter().enumerate() {
            let role_ok = m
                .get("role")
                .and_then(Value::as_str)
                .is_some_and(|r| ROLES.contains(&r));
            let content_ok = m.get("content").is_some_and(Value::is_string);
            if !role_ok || !content_ok || m.as_object().is_none_or(|o| o.len() != 2) {
                return Err(ApiError::validation(
                    &format!("input.messages[{i}]"),
                    format!(
                        "must be {{\"role\": one of {}, \"content\": a string}}",
                        ROLES.join("|")
                    ),
                ));
            }
        }
        let session_id = match raw.session_id {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_valid_client_session_id(&s) => Some(s),
            Some(_) => {
                return Err(ApiError::validation(
                    "sessionId",
                    "must be 1 to 128 characters of letters, digits, '.', '_', ':' and '-'",
                ))
            }
        };
        let metadata = match raw.metadata {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(ApiError::validation("metadata", "must be an object")),
        };
        Ok(InvokeRequest {
            messages,
            session_id,
            metadata,
        })
    }

    /// The body the agent receives: the same request with the runtime session id.
    pub fn upstream_body(&self, runtime_session_id: &str) -> Vec<u8> {
        let mut body = json!({
            "protocol": PROTOCOL,
            "input": { "messages": self.messages },
            "sessionId": runtime_session_id,
        });
        if let Some(m) = &self.metadata {
            body["metadata"] = Value::Object(m.clone());
        }
        body.to_string().into_bytes()
    }
}

/// The token counts an invoke/v1 answer carried in `usage`: what the agent told the caller, recorded by the
/// gateway next to what its signed telemetry reports (so a mismatch is visible), never charged by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl AnswerUsage {
    /// Counts above a telemetry counter's bound (`MAX_EVENT_COUNTER`) are not believable usage: such an answer
    /// carries none, so no agent can make sums overflow.
    pub fn from_json(value: Option<&Value>) -> Option<Self> {
        let v = value?;
        let count = |name: &str| {
            v.get(name)?
                .as_u64()
                .filter(|n| *n <= super::telemetry::MAX_EVENT_COUNTER)
        };
        Some(AnswerUsage {
            input_tokens: count("inputTokens")?,
            output_tokens: count("outputTokens")?,
        })
    }

    pub fn to_json(self) -> Value {
        json!({ "inputTokens": self.input_tokens, "outputTokens": self.output_tokens })
    }
}

/// `usage` as the contract defines it; anything else from an agent is dropped rather than passed on.
pub fn clean_usage(value: Option<&Value>) -> Option<Value> {
    AnswerUsage::from_json(value).map(AnswerUsage::to_json)
}

/// An agent's answer body when it is an invoke/v1 response (`protocol` matches), whatever else it holds.
pub fn parse_answer(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v.get("protocol").and_then(Value::as_str) == Some(PROTOCOL))
}

/// The client's answer built from the agent's 2xx JSON answer. The agent's `sessionId` (the runtime's) and
/// `traceId` are replaced; an answer that is not invoke/v1 is an `upstream_invalid_response`.
pub fn client_response(
    upstream: &[u8],
    session_id: &str,
    trace_id: &str,
    target: &UpstreamTarget,
) -> Result<Value, ApiError> {
    let parsed = parse_answer(upstream);
    let output = parsed
        .as_ref()
        .and_then(|v| v.get("output"))
        .filter(|o| o.is_object());
    let Some(output) = output else {
        return Err(target.failure(
            UpstreamFailure::InvalidResponse {
                status: 200,
                body: upstream.to_vec(),
            },
            false,
        ));
    };
    let mut answer = json!({
        "protocol": PROTOCOL,
        "output": output,
        "sessionId": session_id,
        "traceId": trace_id,
    });
    if let Some(usage) = clean_usage(parsed.as_ref().and_then(|v| v.get("usage"))) {
        answer["usage"] = usage;
    }
    Ok(answer)
}

/// What went wrong talking to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamFailure {
    /// Certainly never reached the agent: nothing to dispatch to (no namespace binding, no such script in it),
    /// or the request could not even be built. The only failure whose reservation is given back.
    NotDispatched(String),
    /// No answer: the connection failed or broke. Whether the agent had started cannot be known.
    Network(String),
    /// Dispatched, then rejected by the runtime instead of answered: the agent threw, hit its CPU or
    /// subrequest limit.
    Rejected(String),
    /// No answer (or, streaming, no next event) within the time limit.
    Timeout { after_ms: u64 },
    /// An answer with a non-2xx status.
    Status { status: u16, body: Vec<u8> },
    /// A 2xx answer that is not invoke/v1.
    InvalidResponse { status: u16, body: Vec<u8> },
}

/// Which deployment a call went to: everything an error may safely name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub deployment_id: String,
}

/// A bounded, valid-UTF-8 prefix of an upstream body, for error details.
pub fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(SNIPPET_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let mut s = text.into_owned();
    if body.len() > SNIPPET_BYTES {
        s.push('…');
    }
    s
}

impl UpstreamTarget {
    /// The stable error for an upstream failure. `streaming` only changes the wording of timeouts.
    pub fn failure(&self, failure: UpstreamFailure, streaming: bool) -> ApiError {
        let deployment_id = &self.deployment_id;
        match failure {
            UpstreamFailure::Rejected(cause) => ApiError {
                internal_cause: Some(format!("upstream {deployment_id}: {cause}")),
                ..ApiError::new(
                    ErrorCode::UpstreamError,
                    "The agent failed while handling the call (it threw, or hit a runtime limit).",
                )
                .with_details(json!({ "deploymentId": deployment_id }))
            },
            UpstreamFailure::NotDispatched(cause) | UpstreamFailure::Network(cause) => ApiError {
                internal_cause: Some(format!("upstream {deployment_id}: {cause}")),
                ..ApiError::new(
                    ErrorCode::UpstreamUnreachable,
                    "The agent could not be reached.",
                )
                .with_details(json!({ "deploymentId": deployment_id }))
            },
            UpstreamFailure::Timeout { after_ms } => ApiError::new(
                ErrorCode::UpstreamTimeout,
                if streaming {
                    format!("The agent produced nothing for {after_ms} ms.")
                } else {
                    format!("The agent did not answer within {after_ms} ms.")
                },
            )
            .with_details(json!({ "deploymentId": deployment_id, "timeoutMs": after_ms })),
            UpstreamFailure::Status { status, body } => {
                let mut err = ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("The agent answered with HTTP {status}."),
                )
                .with_details(json!({
                    "deploymentId": deployment_id,
                    "upstreamStatus": status,
                    "upstreamBody": snippet(&body),
                }));
                // Whether a retry may help is the agent's status class: its own 5xx and 429 are transient.
                err.retryable_override = Some(status >= 500 || status == 429);
                err
            }
            UpstreamFailure::InvalidResponse { status, body } => ApiError::new(
                ErrorCode::UpstreamInvalidResponse,
                "The agent's answer is not an invoke/v1 response.",
            )
            .with_details(json!({
                "deploymentId": deployment_id,
                "upstreamStatus": status,
                "upstreamBody": snippet(&body),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        json!({"protocol": "invoke/v1", "input": {"messages": [{"role": "user", "content": "hi"}]}})
    }

    fn target() -> UpstreamTarget {
        UpstreamTarget {
            deployment_id: "dep_1".into(),
        }
    }

    #[test]
    fn accepts_the_contract_and_replaces_the_session() {
        let mut body = valid();
        body["sessionId"] = json!("conv-1");
        body["metadata"] = json!({"delayMs": 5});
        let req = InvokeRequest::from_json(body).unwrap();
        assert_eq!(req.session_id.as_deref(), Some("conv-1"));
        let upstream: Value = serde_json::from_slice(&req.upstream_body("rts_abc")).unwrap();
        assert_eq!(upstream["sessionId"], "rts_abc");
        assert_eq!(upstream["metadata"]["delayMs"], 5);
        assert_eq!(upstream["input"]["messages"][0]["content"], "hi");
    }

    #[test]
    fn refuses_what_is_not_invoke_v1() {
        let cases = [
            (json!([]), ErrorCode::InvalidBody, None),
            (
                json!({"protocol": "invoke/v2", "input": {"messages": [{"role":"user","content":"x"}]}}),
                ErrorCode::ValidationFailed,
                Some("protocol"),
            ),
            (
                json!({"protocol": "invoke/v1"}),
                ErrorCode::InvalidBody,
                None,
            ),
            (
                json!({"protocol": "invoke/v1", "input": {}}),
                ErrorCode::ValidationFailed,
                Some("input.messages"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": []}}),
                ErrorCode::ValidationFailed,
                Some("input.messages"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": [{"role": "king", "content": "x"}]}}),
                ErrorCode::ValidationFailed,
                Some("input.messages[0]"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": [{"role": "user", "content": 5}]}}),
                ErrorCode::ValidationFailed,
                Some("input.messages[0]"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": [{"role":"user","content":"x"}], "extra": 1}}),
                ErrorCode::ValidationFailed,
                Some("input"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": [{"role":"user","content":"x"}]}, "sessionId": "a b"}),
                ErrorCode::ValidationFailed,
                Some("sessionId"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": [{"role":"user","content":"x"}]}, "metadata": 3}),
                ErrorCode::ValidationFailed,
                Some("metadata"),
            ),
            (
                json!({"protocol": "invoke/v1", "input": {"messages": [{"role":"user","content":"x"}]}, "userId": "usr_x"}),
                ErrorCode::InvalidBody,
                None,
            ),
        ];
        for (body, code, field) in cases {
            let err = InvokeRequest::from_json(body.clone()).unwrap_err();
            assert_eq!(err.code, code, "{body}");
            if let Some(field) = field {
                assert_eq!(err.details.unwrap()["field"], field, "{body}");
            }
        }
        let too_many: Vec<Value> = (0..=MAX_MESSAGES)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        assert!(InvokeRequest::from_json(
            json!({"protocol": "invoke/v1", "input": {"messages": too_many}})
        )
        .is_err());
    }

    #[test]
    fn the_client_sees_its_own_session_and_the_gateway_trace() {
        let upstream = br#"{"protocol":"invoke/v1","output":{"text":"hi"},"sessionId":"rts_secret_runtime","traceId":"agent","usage":{"inputTokens":1,"outputTokens":2,"costUsd":9}}"#;
        let answer = client_response(upstream, "conv-1", "trc_1", &target()).unwrap();
        assert_eq!(answer["sessionId"], "conv-1");
        assert_eq!(answer["traceId"], "trc_1");
        assert_eq!(
            answer["usage"],
            json!({"inputTokens": 1, "outputTokens": 2})
        );
        assert!(!answer.to_string().contains("rts_secret_runtime"));
        // Counts no model produces (here past 2^63, which would turn negative in D1) are not usage at all.
        let absurd = br#"{"protocol":"invoke/v1","output":{"text":"hi"},"usage":{"inputTokens":1,"outputTokens":18446744073709551615}}"#;
        let answer = client_response(absurd, "conv-1", "trc_1", &target()).unwrap();
        assert!(answer.get("usage").is_none(), "{answer}");
        assert_eq!(
            AnswerUsage::from_json(Some(
                &json!({"inputTokens": 1_000_000_000, "outputTokens": 0})
            )),
            Some(AnswerUsage {
                input_tokens: 1_000_000_000,
                output_tokens: 0
            })
        );
    }

    #[test]
    fn a_2xx_that_is_not_invoke_v1_is_an_invalid_response() {
        for body in [
            &b"not json"[..],
            br#"{"output":{"text":"x"}}"#,
            br#"{"protocol":"invoke/v1","output":"x"}"#,
        ] {
            let err = client_response(body, "s", "t", &target()).unwrap_err();
            assert_eq!(err.code, ErrorCode::UpstreamInvalidResponse);
            assert_eq!(err.details.as_ref().unwrap()["deploymentId"], "dep_1");
        }
    }

    #[test]
    fn failures_are_classified_with_safe_bounded_details() {
        let long = vec![b'x'; 5000];
        let err = target().failure(
            UpstreamFailure::Status {
                status: 503,
                body: long,
            },
            false,
        );
        assert_eq!(err.code, ErrorCode::UpstreamError);
        assert!(err.retryable());
        let details = err.details.unwrap();
        assert_eq!(details["upstreamStatus"], 503);
        assert!(details["upstreamBody"].as_str().unwrap().len() <= SNIPPET_BYTES + 3);

        let not_retryable = target().failure(
            UpstreamFailure::Status {
                status: 400,
                body: vec![],
            },
            false,
        );
        assert!(!not_retryable.retryable());

        let net = target().failure(
            UpstreamFailure::Network("connect ECONNREFUSED 10.0.0.1".into()),
            false,
        );
        assert_eq!(net.code, ErrorCode::UpstreamUnreachable);
        assert!(net.retryable());
        assert!(!net.details.unwrap().to_string().contains("ECONNREFUSED"));
        assert!(net.internal_cause.unwrap().contains("ECONNREFUSED"));

        let timeout = target().failure(UpstreamFailure::Timeout { after_ms: 100 }, false);
        assert_eq!(timeout.code, ErrorCode::UpstreamTimeout);
        assert_eq!(timeout.status(), 504);
    }

    #[test]
    fn snippets_stay_valid_utf8_when_cut_mid_character() {
        let mut body = vec![b'a'; SNIPPET_BYTES - 1];
        body.extend("é and more".as_bytes());
        let s = snippet(&body);
        assert!(s.ends_with('…'));
        assert!(s.is_char_boundary(s.len()));
    }
}
