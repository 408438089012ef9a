//! Usage per billing period (rolled up from telemetry) and the quotas charged against it. Tokens and compute
//! are charged after the fact: an invocation is refused once the period's totals have reached the entitlement,
//! before the runtime is called, until the period rolls over or the entitlement is raised.

use super::entitlements::Entitlements;
use super::error::{ApiError, ErrorCode};
use super::period::PeriodKey;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How long after a period ends its totals are declared final: a report accepted in the period's last instant
/// may still be committing just after it. No event can join an ended period (events are charged to the period
/// in which the control plane accepted them), so after this the period's totals can never change.
pub const FINALIZE_GRACE_MS: i64 = 60 * 60 * 1000;
/// Raw events are kept this many days after their period ends, unless `METRICS_RETENTION_DAYS` says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
pub const MAX_RETENTION_DAYS: u32 = 3_650;
const MS_PER_DAY: i64 = 86_400_000;

pub fn is_final(period: PeriodKey, now: i64) -> bool {
    now >= period.end_ms() + FINALIZE_GRACE_MS
}

/// Periods before the returned one ended at least `retention_days` ago: their raw events may be pruned (once
/// final and rolled up).
pub fn prune_before(now: i64, retention_days: u32) -> PeriodKey {
    PeriodKey::containing(now - i64::from(retention_days) * MS_PER_DAY)
}

/// A user's totals for one period: what the deployments' signed telemetry reported (`billing_usage`), and the
/// compute the gateway measured itself (`gateway_ms`, from `measured_usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    pub events: u64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input plus output: what `tokensPerPeriod` is charged against.
    pub tokens: u64,
    /// Compute the agents reported.
    pub compute_ms: u64,
    pub errors: u64,
    /// Compute the gateway measured: from forwarding each admitted call to its answer's last byte (or to the
    /// moment the client went away), whether or not the agent reports anything.
    #[serde(default)]
    pub gateway_ms: u64,
}

impl UsageTotals {
    pub fn new(
        events: u64,
        requests: u64,
        input_tokens: u64,
        output_tokens: u64,
        compute_ms: u64,
        errors: u64,
    ) -> Self {
        UsageTotals {
            events,
            requests,
            input_tokens,
            output_tokens,
            tokens: input_tokens.saturating_add(output_tokens),
            compute_ms,
            errors,
            gateway_ms: 0,
        }
    }

    pub fn with_gateway_ms(self, gateway_ms: u64) -> Self {
        UsageTotals { gateway_ms, ..self }
    }

    /// What `computeMsPerPeriod` is charged against: the larger of the measured and the reported compute, so an
    /// agent that reports nothing still uses its quota and one doing work the gateway cannot see (after its
    /// answer) is still charged what it reported.
    pub fn charged_compute_ms(&self) -> u64 {
        self.compute_ms.max(self.gateway_ms)
    }
}

/// What the gateway recorded itself for a user's period (`measured_usage`): the calls it counted, their
/// measured compute, and the token counts the agents' answers carried — shown beside what the signed telemetry
/// reported, so a mismatch is visible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasuredUsage {
    pub invocations: u64,
    pub gateway_ms: u64,
    pub answer_input_tokens: u64,
    pub answer_output_tokens: u64,
}

/// What is left of each metered entitlement (never negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Remaining {
    pub requests: u64,
    pub tokens: u64,
    pub compute_ms: u64,
}

/// `requests_reserved` is the request gate's count (what `requestsPerPeriod` is enforced against).
pub fn remaining(totals: &UsageTotals, requests_reserved: u64, e: &Entitlements) -> Remaining {
    Remaining {
        requests: e.requests_per_period.saturating_sub(requests_reserved),
        tokens: e.tokens_per_period.saturating_sub(totals.tokens),
        compute_ms: e
            .compute_ms_per_period
            .saturating_sub(totals.charged_compute_ms()),
    }
}

/// ISO 8601 for the first instant of `period` (when the previous period's quotas reset).
pub fn period_start_iso(period: PeriodKey) -> String {
    format!("{period}-01T00:00:00Z")
}

/// Refuses an invocation when the period's tokens or compute have reached the entitlement. `now` only shapes
/// `Retry-After`.
pub fn check_quotas(
    totals: &UsageTotals,
    e: &Entitlements,
    period: PeriodKey,
    now: i64,
) -> Result<(), ApiError> {
    let spent = [
        (
            "tokensPerPeriod",
            "tokens",
            totals.tokens,
            e.tokens_per_period,
        ),
        (
            "computeMsPerPeriod",
            "compute milliseconds",
            totals.charged_compute_ms(),
            e.compute_ms_per_period,
        ),
    ]
    .into_iter()
    .find(|(_, _, used, limit)| used >= limit);
    let Some((entitlement, what, used, limit)) = spent else {
        return Ok(());
    };
    let resets_at = period.end_ms();
    let retry_after_s = ((resets_at - now).max(0) + 999) / 1000;
    Err(ApiError::new(
        ErrorCode::QuotaExhausted,
        format!(
            "Your plan's {limit} {what} for period {period} are used up ({used} used). Invocations resume when \
             the period resets at {}, or sooner if your plan is raised.",
            period_start_iso(period.next())
        ),
    )
    .with_details(json!({
        "entitlement": entitlement,
        "limit": limit,
        "used": used,
        "periodKey": period.to_string(),
        "resetsAt": resets_at,
    }))
    .with_headers(vec![("Retry-After", retry_after_s.max(1).to_string())]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entitlements::Tier;

    fn limits(tokens: u64, compute: u64) -> Entitlements {
        Entitlements {
            tokens_per_period: tokens,
            compute_ms_per_period: compute,
            ..Entitlements::tier_default(Tier::Free)
        }
    }

    #[test]
    fn quotas_bite_once_reached_not_before() {
        let p = PeriodKey::parse("2026-11").unwrap();
        let now = p.start_ms() + 1_000;
        let under = UsageTotals::new(3, 3, 5, 4, 99, 0);
        assert!(check_quotas(&under, &limits(10, 100), p, now).is_ok());

        let tokens_reached = UsageTotals::new(3, 3, 5, 5, 0, 0);
        let err = check_quotas(&tokens_reached, &limits(10, 100), p, now).unwrap_err();
        assert_eq!(err.code, ErrorCode::QuotaExhausted);
        assert_eq!(err.status(), 429);
        let d = err.details.clone().unwrap();
        assert_eq!(d["entitlement"], "tokensPerPeriod");
        assert_eq!(d["used"], 10);
        assert_eq!(
            d["resetsAt"],
            PeriodKey::parse("2026-12").unwrap().start_ms()
        );
        assert!(
            err.message.contains("2026-12-01T00:00:00Z"),
            "{}",
            err.message
        );
        let retry = err
            .headers
            .iter()
            .find(|(n, _)| *n == "Retry-After")
            .unwrap();
        assert_eq!(retry.1.parse::<i64>().unwrap(), (p.end_ms() - now) / 1000);

        let compute_over = UsageTotals::new(1, 1, 0, 0, 150, 0);
        let err = check_quotas(&compute_over, &limits(10, 100), p, now).unwrap_err();
        assert_eq!(err.details.unwrap()["entitlement"], "computeMsPerPeriod");

        // Raising the entitlement lets the same totals through.
        assert!(check_quotas(&tokens_reached, &limits(11, 100), p, now).is_ok());
    }

    #[test]
    fn measured_compute_is_charged_when_the_agent_reports_less() {
        let p = PeriodKey::parse("2026-11").unwrap();
        let now = p.end_ms() - 1_000;
        // An agent that reports nothing: the gateway's measure alone spends the quota.
        let silent = UsageTotals::default().with_gateway_ms(100);
        let err = check_quotas(&silent, &limits(10, 100), p, now).unwrap_err();
        let details = err.details.unwrap();
        assert_eq!(details["entitlement"], "computeMsPerPeriod");
        assert_eq!(details["used"], 100);
        assert!(check_quotas(&silent.with_gateway_ms(99), &limits(10, 100), p, now).is_ok());
        // An agent reporting more than was measured is charged what it reported.
        let reported = UsageTotals::new(1, 1, 0, 0, 70, 0).with_gateway_ms(40);
        assert_eq!(reported.charged_compute_ms(), 70);
        assert_eq!(
            remaining(&reported, 0, &limits(10, 100)).compute_ms,
            30,
            "the larger figure is charged, not the sum"
        );
    }

    #[test]
    fn periods_become_final_after_the_grace_and_prunable_after_the_retention() {
        let nov = PeriodKey::parse("2026-11").unwrap();
        assert!(!is_final(nov, nov.end_ms()));
        assert!(!is_final(nov, nov.end_ms() + FINALIZE_GRACE_MS - 1));
        assert!(is_final(nov, nov.end_ms() + FINALIZE_GRACE_MS));
        // November ended on Dec 1st: prunable from Dec 31st with 30 days of retention, not a millisecond before.
        let dec_31 = nov.end_ms() + 30 * MS_PER_DAY;
        assert!(nov < prune_before(dec_31, 30));
        assert!(nov >= prune_before(dec_31 - 1, 30));
    }

    #[test]
    fn remaining_never_goes_negative() {
        let t = UsageTotals::new(1, 1, 500, 600, 10, 0);
        let r = remaining(&t, 2_000, &limits(1_000, 100));
        assert_eq!(
            r,
            Remaining {
                requests: 0,
                tokens: 0,
                compute_ms: 90
            }
        );
    }
}
