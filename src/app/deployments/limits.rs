//! Per-user deploy limits (entitlements): which one a refused deploy hit, and when trying again can help.

use crate::app::ports::{DeployCounts, DeployLimits};
use crate::domain::{ApiError, ErrorCode};

/// Whether any deploy limit is reached (a restore refused for this, rather than for another restore under way).
pub fn any_reached(limits: &DeployLimits, counts: &DeployCounts) -> bool {
    counts.in_flight >= limits.in_flight
        || counts.last_hour >= limits.per_hour
        || counts.live_scripts >= limits.live_scripts
}

/// Which deploy limit a refused deploy hit, and when trying again can help. Checked before any Cloudflare API
/// call: one tenant's deploys cannot spend the platform's API rate limit or script quota for everyone.
pub fn deploy_limit_error(limits: &DeployLimits, counts: &DeployCounts, now: i64) -> ApiError {
    let refuse = |entitlement: &str, limit: u64, current: u64, message: String| {
        ApiError::new(ErrorCode::DeployLimitReached, message).with_details(
            serde_json::json!({ "entitlement": entitlement, "limit": limit, "current": current }),
        )
    };
    let retry_after = |s: i64| vec![("Retry-After", s.max(1).to_string())];
    if counts.in_flight >= limits.in_flight {
        refuse(
            "deploysInFlight",
            limits.in_flight,
            counts.in_flight,
            format!(
                "{} of your deploys are still running; start another when one has finished.",
                counts.in_flight
            ),
        )
        .with_headers(retry_after(5))
    } else if counts.last_hour >= limits.per_hour {
        let wait_s = (counts.oldest_in_hour.map_or(now, |t| t + 3_600_000) - now).max(0) / 1000 + 1;
        refuse(
            "deploysPerHour",
            limits.per_hour,
            counts.last_hour,
            format!(
                "Your plan allows {} deploys an hour; the next one can start in {wait_s} s.",
                limits.per_hour
            ),
        )
        .with_headers(retry_after(wait_s))
    } else {
        let mut err = refuse(
            "liveScripts",
            limits.live_scripts,
            counts.live_scripts,
            format!(
                "You have {} deployed scripts, your plan's limit; delete agents you no longer need (their scripts go with them).",
                counts.live_scripts
            ),
        );
        // Waiting does not help: something has to be deleted.
        err.retryable_override = Some(false);
        err
    }
}
