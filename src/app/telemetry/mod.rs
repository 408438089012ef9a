//! Telemetry ingestion (`POST /v1/telemetry/report`): a report is accepted only with a valid signature over
//! its exact bytes, from a deployment whose owner matches every event, inside the time window; then its events
//! and the billing usage are written in one transaction (duplicates counted once), and the user's gate is handed
//! the charged totals. Refusals are audited within a throttle. The worker reads the body; everything else is
//! decided here.

use super::ports::StoreResult;
use super::usage::UsageStore;
use crate::crypto::hmac_sha256_verify;
use crate::crypto::keyring::Keyring;
use crate::domain::admission::{is_admitted, TRACE_KEY_LABEL};
use crate::domain::ids::{random_hex, DeploymentId, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::telemetry::{
    check_events, invalid_signature, parse_report, unknown_deployment, DeploymentOwner,
    RejectThrottle, TelemetryEvent,
};
use crate::domain::usage::UsageTotals;
use crate::domain::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::json;

/// The deployment a report claims to come from, as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDeployment {
    pub user_id: String,
    pub agent_id: String,
    pub runtime_provider: String,
    pub telemetry_secret_sealed: String,
}

/// One audited refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectEntry<'a> {
    pub id: String,
    pub at: i64,
    pub request_id: &'a str,
    pub code: &'static str,
    pub status: u16,
    /// Only a well-formed id, never arbitrary caller text.
    pub deployment_id: Option<&'a str>,
    /// Refusals not written since the last row (over the throttle).
    pub suppressed: u64,
}

#[allow(async_fn_in_trait)]
pub trait TelemetryStore {
    async fn telemetry_deployment(
        &self,
        id: &DeploymentId,
    ) -> StoreResult<Option<ClaimedDeployment>>;
    /// Inserts the events (a retried event keeps its first row) and adds exactly the new ones to the owner's
    /// billing usage, in one transaction; returns how many were new.
    async fn ingest(
        &self,
        report_id: &str,
        events: &[TelemetryEvent],
        period: PeriodKey,
        received_at: i64,
    ) -> StoreResult<u64>;
    async fn record_reject(&self, entry: &RejectEntry<'_>) -> StoreResult<()>;
}

/// The user's gate, told of a charge so that quotas are checked against it without a D1 read.
#[allow(async_fn_in_trait)]
pub trait UsageCharger {
    async fn charge(
        &self,
        user: &UserId,
        period: PeriodKey,
        totals: UsageTotals,
    ) -> Result<(), String>;
}

/// The answer to an accepted report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub report_id: String,
    pub accepted: u64,
    pub duplicates: u64,
    pub period_key: String,
    /// Whose usage moved (for their live feed); never part of the answer.
    #[serde(skip)]
    pub owner: UserId,
}

/// A report as received: the deployment it claims, its signature, and its body (read within the size limit).
#[derive(Debug, Clone, Copy)]
pub struct SignedReport<'a> {
    pub deployment_id: &'a DeploymentId,
    pub tag: &'a [u8; 32],
    pub body: &'a [u8],
}

/// Verifies and stores one report.
pub async fn ingest(
    store: &impl TelemetryStore,
    usage: &impl UsageStore,
    charger: &impl UsageCharger,
    key: &Keyring,
    report: SignedReport<'_>,
    now: i64,
) -> Result<Accepted, ApiError> {
    let SignedReport {
        deployment_id,
        tag,
        body,
    } = report;
    let deployment = store
        .telemetry_deployment(deployment_id)
        .await?
        .ok_or_else(unknown_deployment)?;
    let secret = key
        .open(
            &deployment.telemetry_secret_sealed,
            deployment_id.as_str().as_bytes(),
        )
        .map_err(|e| ApiError::internal(format!("telemetry secret of {deployment_id}: {e}")))?;
    // Over the exact bytes received; the JSON is parsed only once they are known to come from the deployment.
    if !hmac_sha256_verify(&secret, body, tag) {
        return Err(invalid_signature());
    }
    let events = parse_report(body)?;
    check_events(
        &events,
        &DeploymentOwner {
            deployment_id: deployment_id.as_str(),
            user_id: &deployment.user_id,
            agent_id: &deployment.agent_id,
            runtime_provider: &deployment.runtime_provider,
        },
        now,
    )?;
    // Only calls the gateway admitted to this deployment can be charged (DESIGN.md §4.8).
    // Every configured key's: a call admitted just before a key rotation still reports under its trace id.
    let trace_keys = key.derive_all(TRACE_KEY_LABEL);
    let admitted = |trace_id: &str| {
        trace_keys
            .iter()
            .any(|k| is_admitted(k, deployment_id.as_str(), trace_id, now))
    };
    if let Some(index) = events.iter().position(|e| !admitted(&e.trace_id)) {
        return Err(ApiError::new(
            ErrorCode::TraceNotAdmitted,
            format!(
                "Event {index}'s traceId was not issued by the gateway for a call to this deployment; only admitted calls are charged."
            ),
        )
        .with_details(json!({ "index": index, "field": "traceId" })));
    }
    // Charged to the period in which the control plane accepted them, never the agent's clock.
    let period = PeriodKey::containing(now);
    let report_id = format!("rpt_{}", random_hex(12));
    let accepted = store.ingest(&report_id, &events, period, now).await?;
    // The gate checks quotas against its copy of the totals, so it is handed them even when every event was a
    // duplicate: that is the retry of a report whose charge did not reach it. If it cannot be told, the agent is
    // asked to retry (the retry stores nothing twice).
    let user = UserId::from_trusted(deployment.user_id.clone());
    let charged = usage.usage_totals(&user, period).await?;
    charger.charge(&user, period, charged).await.map_err(|e| {
        ApiError::unavailable(
            "The report was stored, but the usage could not be passed on yet; send it again.",
            format!("charging the gate of {user}: {e}"),
        )
    })?;
    Ok(Accepted {
        report_id,
        accepted,
        duplicates: events.len() as u64 - accepted,
        period_key: period.to_string(),
        owner: user,
    })
}

/// Audits a refusal unless the throttle says enough have been written this minute (then it is counted into the
/// next row's `suppressed`). A failed write gives its count back. Returns the store's failure for the log.
pub async fn audit_reject(
    store: &impl TelemetryStore,
    throttle: &std::cell::RefCell<RejectThrottle>,
    request_id: &str,
    now: i64,
    err: &ApiError,
    deployment_id: Option<&str>,
) -> Result<(), String> {
    let Some(suppressed) = throttle.borrow_mut().admit(now) else {
        return Ok(());
    };
    let entry = RejectEntry {
        id: format!("tlr_{}", random_hex(12)),
        at: now,
        request_id,
        code: err.code.as_str(),
        status: err.status(),
        deployment_id,
        suppressed,
    };
    store.record_reject(&entry).await.map_err(|e| {
        throttle.borrow_mut().restore(suppressed);
        e.0
    })
}

#[cfg(test)]
mod tests;
