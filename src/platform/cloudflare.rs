//! The `ProviderApi` port over `fetch`: sends a `cloudflare::api` request to the configured base URL with the
//! API token, and hands the answer to `cloudflare::envelope`. The token is only ever put in this header.

use super::upstream::{read_bounded, within};
use crate::app::ports::ProviderApi;
use crate::cloudflare::api::ApiRequest;
use crate::cloudflare::envelope::{network_failure, parse_response, ProviderError};
use worker::{js_sys::Uint8Array, Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

/// How long one probe of a new workers.dev URL may take.
const PROBE_TIMEOUT_MS: u64 = 3_000;

pub struct FetchProvider<'a> {
    pub base_url: &'a str,
    pub api_token: &'a str,
}

impl ProviderApi for FetchProvider<'_> {
    async fn call(&self, request: &ApiRequest) -> Result<serde_json::Value, ProviderError> {
        let net = |e: worker::Error| network_failure(request, &e.to_string());
        let headers = Headers::new();
        headers
            .set("Authorization", &format!("Bearer {}", self.api_token))
            .map_err(net)?;
        if let Some(ct) = request.content_type() {
            headers.set("Content-Type", &ct).map_err(net)?;
        }
        let mut init = RequestInit::new();
        init.with_method(match request.method.as_str() {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            _ => Method::Delete,
        })
        .with_headers(headers);
        if let Some(bytes) = request.body_bytes() {
            init.with_body(Some(Uint8Array::from(bytes.as_slice()).into()));
        }
        let url = format!(
            "{}{}",
            self.base_url.trim_end_matches('/'),
            request.path_and_query()
        );
        let outgoing = Request::new_with_init(&url, &init).map_err(net)?;
        let mut response = Fetch::Request(outgoing).send().await.map_err(net)?;
        let retry_after = response.headers().get("Retry-After").ok().flatten();
        let body = response.text().await.map_err(net)?;
        parse_response(
            request,
            response.status_code(),
            retry_after.as_deref(),
            &body,
        )
    }

    /// A redirect is an answer (never followed, so only the script at `url` can prove it is live); the probe
    /// and its body are bounded in time and size.
    async fn probe(&self, url: &str) -> Result<(u16, String), String> {
        let mut init = RequestInit::new();
        init.with_method(Method::Get)
            .with_redirect(RequestRedirect::Manual);
        let request = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
        let mut response = match within(PROBE_TIMEOUT_MS, Fetch::Request(request).send()).await {
            Some(sent) => sent.map_err(|e| e.to_string())?,
            None => return Err(format!("no answer within {PROBE_TIMEOUT_MS} ms")),
        };
        let status = response.status_code();
        let body = read_bounded(&mut response, PROBE_TIMEOUT_MS)
            .await
            .map(|bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(2_000)]).into_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}
