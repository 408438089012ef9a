//! The control plane's API over HTTP: the bearer credential, JSON in and out, and every failure turned into the
//! envelope's code, message and request id.

use indicatif::ProgressBar;
use serde_json::Value;
use std::io::{Cursor, Read};
use ureq::SendBody;

/// Why a command failed, and the exit code it ends with.
#[derive(Debug)]
pub enum Failure {
    /// The API refused or failed: its envelope.
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// No answer, or not the control plane's.
    Network(String),
    /// Not logged in, bad input, a missing file.
    Usage(String),
    /// A deploy that ended `failed`.
    DeployFailed(String),
}

impl Failure {
    /// The failure as `--json` prints it.
    pub fn to_json(&self) -> Value {
        match self {
            Failure::Api {
                status,
                code,
                message,
                request_id,
            } => {
                serde_json::json!({ "error": { "status": status, "code": code, "message": message, "requestId": request_id } })
            }
            other => serde_json::json!({ "error": { "message": other.to_string() } }),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Api { .. } => 1,
            Failure::Usage(_) => 2,
            Failure::DeployFailed(_) => 3,
            Failure::Network(_) => 4,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api {
                status,
                code,
                message,
                request_id,
            } => {
                write!(f, "error {code} ({status}): {message}")?;
                if let Some(id) = request_id {
                    write!(f, " [request {id}]")?;
                }
                Ok(())
            }
            Failure::Network(m) | Failure::Usage(m) | Failure::DeployFailed(m) => f.write_str(m),
        }
    }
}

pub struct Client {
    endpoint: String,
    token: String,
    agent: ureq::Agent,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ureq::Body,
}

impl Client {
    pub fn new(endpoint: &str, token: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            // Errors are read from the envelope, not turned into transport errors.
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent,
        }
    }

    /// Sends a request; `body` is `(content type, bytes)`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Result<Response, Failure> {
        self.send_observed(method, path, body, headers, &ProgressBar::hidden())
    }

    /// `send`, moving `progress` on as the body's bytes are written to the connection.
    pub fn send_observed(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
        progress: &ProgressBar,
    ) -> Result<Response, Failure> {
        let url = format!("{}{}", self.endpoint, path);
        let auth = format!("Bearer {}", self.token);
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", &auth);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let result = match body {
            Some((content_type, bytes)) => {
                let length = bytes.len();
                progress.set_length(length as u64);
                let mut reader = progress.wrap_read(Cursor::new(bytes));
                let request = builder
                    .header("Content-Type", content_type)
                    // Known up front, so the body is sent as it is read, not chunked.
                    .header("Content-Length", length.to_string())
                    .body(SendBody::from_reader(&mut reader))
                    .map_err(|e| Failure::Usage(e.to_string()))?;
                self.agent.run(request)
            }
            None => {
                let request = builder
                    .body(())
                    .map_err(|e| Failure::Usage(e.to_string()))?;
                self.agent.run(request)
            }
        };
        let response = result
            .map_err(|e| Failure::Network(format!("could not reach {}: {e}", self.endpoint)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        Ok(Response {
            status,
            headers,
            body: response.into_body(),
        })
    }

    /// A JSON call: the answer on 2xx, the envelope's failure otherwise.
    pub fn json(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let response = self.send(method, path, body, &[])?;
        read_json(response)
    }
}

/// Reads a response: its JSON on 2xx (null when empty), the envelope as a `Failure` otherwise.
pub fn read_json(mut response: Response) -> Result<Value, Failure> {
    let mut text = String::new();
    response
        .body
        .as_reader()
        .read_to_string(&mut text)
        .map_err(|e| Failure::Network(format!("the answer broke off: {e}")))?;
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
    };
    if (200..300).contains(&response.status) {
        return Ok(value);
    }
    Err(envelope_failure(response.status, &value, &response.headers))
}

pub fn envelope_failure(status: u16, value: &Value, headers: &[(String, String)]) -> Failure {
    let error = value.get("error");
    let field = |k: &str| {
        error
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Failure::Api {
        status,
        code: field("code").unwrap_or_else(|| "unexpected_response".into()),
        message: field("message").unwrap_or_else(|| format!("the control plane answered {status}")),
        request_id: field("requestId").or_else(|| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
                .map(|(_, v)| v.clone())
        }),
    }
}
