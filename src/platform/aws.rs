//! The `AwsApi` port over `fetch`: sends a signed `aws::agentcore` call as it was built (its headers carry the
//! signature; the credentials themselves never leave `aws::sigv4`), and reads the answer, bounded in time.

use super::upstream::within;
use crate::app::ports::AwsApi;
use crate::aws::agentcore::{failure, read_answer, AwsCall, AwsFailure};
use worker::{js_sys::Uint8Array, Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

/// How long one call may take (a deploy's background work fits its calls and waits in the runtime's 30 s).
const CALL_TIMEOUT_MS: u64 = 5_000;

pub struct FetchAws;

/// The `fetch` request for `call`: its method, URL, signed headers and body, redirects not followed.
pub(super) fn request_for(call: &AwsCall) -> Result<Request, worker::Error> {
    let headers = Headers::new();
    for (name, value) in &call.headers {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(match call.method {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        _ => Method::Delete,
    })
    .with_headers(headers)
    .with_redirect(RequestRedirect::Manual);
    if !call.body.is_empty() {
        init.with_body(Some(Uint8Array::from(call.body.as_slice()).into()));
    }
    Request::new_with_init(&call.url, &init)
}

impl AwsApi for FetchAws {
    async fn send(&self, call: &AwsCall) -> Result<serde_json::Value, AwsFailure> {
        let net = |e: String| failure(call, 0, "network", &e);
        let request = request_for(call).map_err(|e| net(e.to_string()))?;
        let mut response = within(CALL_TIMEOUT_MS, Fetch::Request(request).send())
            .await
            .ok_or_else(|| net(format!("no answer within {CALL_TIMEOUT_MS} ms")))?
            .map_err(|e| net(e.to_string()))?;
        let error_type = response.headers().get("x-amzn-ErrorType").ok().flatten();
        let body = response.bytes().await.map_err(|e| net(e.to_string()))?;
        read_answer(call, response.status_code(), error_type.as_deref(), &body)
    }
}
