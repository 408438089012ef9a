//! The `StripeApi` port over `fetch`: a `stripe::api` request sent to the configured base URL with the secret key
//! (only ever in this header), the pinned API version and the request's idempotency key, bounded in time.

use super::upstream::within;
use crate::app::billing::StripeApi;
use crate::stripe::api::{
    network_failure, parse_response, StripeError, StripeRequest, STRIPE_API_VERSION,
};
use worker::{Fetch, Headers, Method, Request, RequestInit};

/// How long one Stripe call may take.
const STRIPE_TIMEOUT_MS: u64 = 10_000;

pub struct FetchStripe<'a> {
    pub base_url: &'a str,
    pub secret_key: &'a str,
}

impl StripeApi for FetchStripe<'_> {
    async fn call(&self, request: &StripeRequest) -> Result<serde_json::Value, StripeError> {
        let net = |e: worker::Error| network_failure(request, &e.to_string());
        let headers = Headers::new();
        headers
            .set("Authorization", &format!("Bearer {}", self.secret_key))
            .map_err(net)?;
        headers
            .set("Stripe-Version", STRIPE_API_VERSION)
            .map_err(net)?;
        if let Some(key) = &request.idempotency_key {
            headers.set("Idempotency-Key", key).map_err(net)?;
        }
        let mut init = RequestInit::new();
        init.with_method(if request.method == "POST" {
            Method::Post
        } else {
            Method::Get
        });
        if let Some(body) = request.body() {
            headers
                .set("Content-Type", "application/x-www-form-urlencoded")
                .map_err(net)?;
            init.with_body(Some(body.into()));
        }
        init.with_headers(headers);
        let url = format!("{}{}", self.base_url.trim_end_matches('/'), request.path);
        let outgoing = Request::new_with_init(&url, &init).map_err(net)?;
        let sent = async {
            let mut response = Fetch::Request(outgoing).send().await?;
            let bytes = response.bytes().await?;
            Ok::<_, worker::Error>((response.status_code(), bytes))
        };
        match within(STRIPE_TIMEOUT_MS, sent).await {
            Some(Ok((status, bytes))) => parse_response(request, status, &bytes),
            Some(Err(e)) => Err(net(e)),
            None => Err(network_failure(
                request,
                &format!("no answer within {STRIPE_TIMEOUT_MS} ms"),
            )),
        }
    }
}
