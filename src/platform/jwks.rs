//! Resolving the verification keys for a token: inline keys as configured, or keys fetched from the JWKS URL
//! and cached in the isolate under the policy in `auth::jwks`.

use crate::auth::jwks::{CachePlan, Jwks, JwksCache};
use crate::auth::JwksSource;
use crate::domain::ApiError;
use std::cell::RefCell;
use worker::{console_error, Fetch, Url};

thread_local! {
    // Workers run one request at a time per isolate thread; the cache lives as long as the isolate.
    static CACHE: RefCell<(String, JwksCache)> = RefCell::new((String::new(), JwksCache::default()));
}

pub async fn keys_for(source: &JwksSource, kid: &str, now_ms: i64) -> Result<Jwks, ApiError> {
    let url = match source {
        JwksSource::Inline(keys) => return Ok(keys.clone()),
        JwksSource::Url(url) => url,
    };
    let plan = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if &c.0 != url {
            // The configured URL changed: nothing cached for the old one applies.
            *c = (url.clone(), JwksCache::default());
        }
        let plan = c.1.plan(now_ms, kid);
        if plan == CachePlan::Fetch {
            c.1.record_attempt(now_ms);
        }
        plan
    });
    if plan == CachePlan::Fetch {
        match fetch_jwks(url).await {
            Ok(keys) => CACHE.with(|c| c.borrow_mut().1.store(keys, now_ms)),
            Err(reason) => console_error!("JWKS fetch from {url} failed: {reason}"),
        }
    }
    CACHE
        .with(|c| c.borrow().1.usable(now_ms).cloned())
        .ok_or_else(|| {
            ApiError::unavailable(
                "The identity provider's signing keys could not be loaded. Retry shortly.",
                format!("no usable JWKS from {url}"),
            )
        })
}

async fn fetch_jwks(url: &str) -> Result<Jwks, String> {
    let url = Url::parse(url).map_err(|e| e.to_string())?;
    let mut response = Fetch::Url(url).send().await.map_err(|e| e.to_string())?;
    if response.status_code() != 200 {
        return Err(format!("HTTP {}", response.status_code()));
    }
    let body = response.text().await.map_err(|e| e.to_string())?;
    Jwks::parse(&body)
}
