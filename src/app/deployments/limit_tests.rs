use super::*;
use crate::app::ports::DeployCounts;

const NOW: i64 = 1_795_000_000_000;
const LIMITS: DeployLimits = DeployLimits {
    in_flight: 2,
    per_hour: 30,
    live_scripts: 20,
};

fn counts(in_flight: u64, last_hour: u64, live_scripts: u64) -> DeployCounts {
    DeployCounts {
        in_flight,
        last_hour,
        oldest_in_hour: Some(NOW - 3_590_000),
        live_scripts,
    }
}

fn said(err: &ApiError) -> (&str, Option<&str>) {
    let entitlement = err.details.as_ref().unwrap()["entitlement"]
        .as_str()
        .unwrap();
    let retry = err
        .headers
        .iter()
        .find(|(n, _)| *n == "Retry-After")
        .map(|(_, v)| v.as_str());
    (entitlement, retry)
}

#[test]
fn a_refused_deploy_says_which_limit_and_when_to_try_again() {
    let busy = deploy_limit_error(&LIMITS, &counts(2, 5, 3), NOW);
    assert_eq!(
        (busy.code, busy.status()),
        (ErrorCode::DeployLimitReached, 429)
    );
    assert_eq!(said(&busy), ("deploysInFlight", Some("5")));
    // The hour's oldest deploy leaves the window in 10 s.
    let hourly = deploy_limit_error(&LIMITS, &counts(0, 30, 3), NOW);
    assert_eq!(said(&hourly), ("deploysPerHour", Some("11")));
    assert!(hourly.code.retryable());
    let full = deploy_limit_error(&LIMITS, &counts(0, 3, 20), NOW);
    assert_eq!(said(&full), ("liveScripts", None));
    assert_eq!(
        full.retryable_override,
        Some(false),
        "waiting does not free a script"
    );
}
