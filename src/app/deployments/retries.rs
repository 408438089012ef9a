//! Calls a deploy makes that may have to be repeated: provider calls through a busy provider (backoff,
//! `Retry-After`, a bounded total wait) and notifications of the user's gate.

use crate::app::ports::{ProviderApi, Sleeper};
use crate::cloudflare::api::ApiRequest;
use crate::cloudflare::envelope::ProviderError;

/// How a deploy waits out a busy provider (seed 000 §5.2): a transient failure (429, 5xx, no answer) is tried
/// again after a backoff — or what `Retry-After` asks, if longer — while the total wait stays within
/// `MAX_RETRY_WAIT_MS`. A deploy runs after its answer (`waitUntil`), so the bound keeps it inside the runtime's
/// allowance for background work.
pub const MAX_RETRY_WAIT_MS: u64 = 20_000;
const FIRST_BACKOFF_MS: u64 = 500;
pub(super) const MAX_ATTEMPTS: u32 = 6;

/// The wait before retry `n` (1-based): doubling from `FIRST_BACKOFF_MS`, at least what the provider asked for.
pub fn retry_wait_ms(n: u32, retry_after_s: Option<u64>) -> u64 {
    let backoff = FIRST_BACKOFF_MS.saturating_mul(1 << (n.saturating_sub(1)).min(10));
    backoff.max(retry_after_s.unwrap_or(0).saturating_mul(1000))
}

/// One provider call, retried while the failure is transient and the wait budget allows. `on_retry` runs before
/// each wait (the deployment shows its attempts).
pub(super) async fn call_retrying<F: std::future::Future<Output = ()>>(
    provider: &impl ProviderApi,
    sleeper: &impl Sleeper,
    request: &ApiRequest,
    waited_ms: &mut u64,
    mut on_retry: impl FnMut() -> F,
) -> Result<serde_json::Value, ProviderError> {
    let mut attempt = 1;
    loop {
        match provider.call(request).await {
            Err(e) if e.kind.retryable() && attempt < MAX_ATTEMPTS => {
                let wait = retry_wait_ms(attempt, e.retry_after_s);
                if *waited_ms + wait > MAX_RETRY_WAIT_MS {
                    return Err(e);
                }
                on_retry().await;
                sleeper.sleep(wait).await;
                *waited_ms += wait;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// A notification of the gate, tried up to three times: a deploy runs in the background, with nobody to repeat
/// it. What still fails is reported (and the gate catches up within its hold or its copies' lifetime).
pub(super) async fn retried<F: std::future::Future<Output = Result<(), String>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<(), String> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = attempt().await;
        if last.is_ok() {
            break;
        }
    }
    last
}
