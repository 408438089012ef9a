//! Usage: `GET /v1/usage/current`, `/v1/usage/history`, `/v1/metrics/recent`, the scheduled rollup (recompute,
//! finalize, prune) and the operator's recompute of one period. Decisions here; the SQL behind `UsageStore`.

use super::ports::StoreResult;
use crate::domain::entitlements::{Entitlements, TierOverrides};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::reservation::GateDecision;
use crate::domain::usage::{
    is_final, period_start_iso, prune_before, remaining, MeasuredUsage, Remaining, UsageTotals,
};
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;

/// A user's stored totals for one period, with whether the rollup job declared it final.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodTotals {
    pub period_key: PeriodKey,
    pub totals: UsageTotals,
    pub finalized: bool,
}

/// A raw event as `/v1/metrics/recent` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvent {
    pub event_id: Option<String>,
    pub trace_id: String,
    pub deployment_id: String,
    pub agent_id: String,
    pub runtime_provider: String,
    pub ts: i64,
    pub received_at: i64,
    pub period_key: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub compute_ms: i64,
    pub errors: i64,
}

/// What a recompute found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recomputed {
    pub period_key: String,
    /// Users with events in the period (each has a billing_usage row after the recompute).
    pub users: u64,
    pub events: u64,
    /// Users whose stored totals differed from the raw events before the recompute (0 when nothing drifted).
    pub drifted: u64,
    pub finalized: bool,
}

/// What one run of the rollup job did.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupRun {
    pub recomputed: Vec<Recomputed>,
    pub pruned_events: u64,
}

#[allow(async_fn_in_trait)]
pub trait UsageStore {
    /// The user's totals for `period` (zeros when nothing was reported).
    async fn usage_totals(&self, user: &UserId, period: PeriodKey) -> StoreResult<UsageTotals>;
    /// What the gateway measured and recorded for the user's period (zeros when nothing was).
    async fn measured_usage(&self, user: &UserId, period: PeriodKey) -> StoreResult<MeasuredUsage>;
    /// The user's stored periods in `oldest..=newest` (periods without usage have none).
    async fn usage_history(
        &self,
        user: &UserId,
        oldest: PeriodKey,
        newest: PeriodKey,
    ) -> StoreResult<Vec<PeriodTotals>>;
    /// Whether `agent` is the user's (deleted agents included: their usage is still the user's).
    async fn owns_agent(&self, user: &UserId, agent: &AgentId) -> StoreResult<bool>;
    /// The user's raw events for one agent with `ts >= since`, newest first.
    async fn recent_events(
        &self,
        user: &UserId,
        agent: &AgentId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<RecentEvent>>;
    /// `Some(pruned)` when the period has a rollup record.
    async fn rollup_pruned(&self, period: PeriodKey) -> StoreResult<Option<bool>>;
    /// Replaces every user's totals for `period` with the sums of their raw events (refused by the store itself
    /// once pruning began), finalizing the period if `finalize`.
    async fn recompute(
        &self,
        period: PeriodKey,
        now: i64,
        finalize: bool,
    ) -> StoreResult<Recomputed>;
    /// Periods up to `newest` that are not final yet.
    async fn open_periods(&self, newest: PeriodKey) -> StoreResult<Vec<PeriodKey>>;
    /// Final periods that ended before `ended_before` and still hold raw events.
    async fn prunable_periods(&self, ended_before: PeriodKey) -> StoreResult<Vec<PeriodKey>>;
    /// Deletes at most `limit` raw events of a final period; how many.
    async fn prune_period(&self, period: PeriodKey, now: i64, limit: u32) -> StoreResult<u64>;
}

/// The user's request count as the gate holds it (reserved requests are counted there, not in D1).
#[allow(async_fn_in_trait)]
pub trait RequestCounter {
    async fn peek(
        &self,
        user: &UserId,
        period: PeriodKey,
        limit: u64,
    ) -> Result<GateDecision, String>;
}

/// `GET /v1/usage/current`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentUsage {
    pub period_key: String,
    pub period_start: String,
    pub resets_at: String,
    pub tier: &'static str,
    /// Reported by the agents' signed telemetry, and `gatewayMs` measured by the gateway.
    pub totals: UsageTotals,
    /// Recorded by the gateway: counted calls, their measured compute, and the answers' token counts.
    pub measured: MeasuredUsage,
    pub requests_reserved: u64,
    pub entitlements: Entitlements,
    pub remaining: Remaining,
    pub exhausted: Vec<&'static str>,
}

pub async fn current(
    store: &impl UsageStore,
    counter: &impl RequestCounter,
    tiers: &TierOverrides,
    user: &User,
    now: i64,
) -> Result<CurrentUsage, ApiError> {
    let period = PeriodKey::containing(now);
    let entitlements = tiers.resolve(user.tier, &user.overrides);
    let totals = store.usage_totals(&user.id, period).await?;
    let measured = store.measured_usage(&user.id, period).await?;
    let gate = counter
        .peek(&user.id, period, entitlements.requests_per_period)
        .await
        .map_err(|cause| {
            ApiError::unavailable(
                "The request counter is unavailable; retry shortly.",
                format!("request gate: {cause}"),
            )
        })?;
    let left = remaining(&totals, gate.used, &entitlements);
    let exhausted = [
        ("requestsPerPeriod", left.requests),
        ("tokensPerPeriod", left.tokens),
        ("computeMsPerPeriod", left.compute_ms),
    ]
    .into_iter()
    .filter(|(_, n)| *n == 0)
    .map(|(name, _)| name)
    .collect();
    Ok(CurrentUsage {
        period_key: period.to_string(),
        period_start: period_start_iso(period),
        resets_at: period_start_iso(period.next()),
        tier: user.tier.as_str(),
        totals,
        measured,
        requests_reserved: gate.used,
        entitlements,
        remaining: left,
        exhausted,
    })
}

fn invalid_query(parameter: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message.to_owned())
        .with_details(json!({ "parameter": parameter }))
}

/// A whole-number query parameter within `range`, or `default` when absent.
pub fn bounded(
    query: &HashMap<String, String>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                invalid_query(
                    name,
                    &format!(
                        "{name} must be a whole number from {} to {}.",
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}

/// One period of `GET /v1/usage/history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPeriod {
    pub period_key: String,
    pub totals: UsageTotals,
    pub finalized: bool,
}

/// `GET /v1/usage/history?periods=N`: the last N periods (this one included), newest first, zeros where
/// nothing was used.
pub async fn history(
    store: &impl UsageStore,
    user: &User,
    query: &HashMap<String, String>,
    now: i64,
) -> Result<Vec<HistoryPeriod>, ApiError> {
    let count = bounded(query, "periods", 6, 1..=24)?;
    let newest = PeriodKey::containing(now);
    let mut periods = vec![newest];
    while (periods.len() as i64) < count {
        let before = periods[periods.len() - 1].previous();
        periods.push(before);
    }
    let oldest = periods[periods.len() - 1];
    let stored = store.usage_history(&user.id, oldest, newest).await?;
    Ok(periods
        .iter()
        .map(|p| {
            let row = stored.iter().find(|r| r.period_key == *p);
            HistoryPeriod {
                period_key: p.to_string(),
                totals: row.map(|r| r.totals).unwrap_or_default(),
                // A period without telemetry is final once it has ended; one with telemetry once the job said so.
                finalized: row
                    .filter(|r| r.totals.events > 0)
                    .map_or_else(|| is_final(*p, now), |r| r.finalized),
            }
        })
        .collect())
}

/// `GET /v1/metrics/recent?agentId=…&sinceMs=…&limit=…`: the caller's raw events for one of their agents.
pub async fn recent(
    store: &impl UsageStore,
    user: &User,
    query: &HashMap<String, String>,
) -> Result<Vec<RecentEvent>, ApiError> {
    let raw_agent = query
        .get("agentId")
        .ok_or_else(|| invalid_query("agentId", "agentId is required."))?;
    let since = bounded(query, "sinceMs", 0, 0..=9_999_999_999_999)?;
    let limit = bounded(query, "limit", 50, 1..=200)? as u32;
    // Someone else's agent is indistinguishable from one that does not exist.
    let agent = AgentId::parse(raw_agent).ok_or_else(ApiError::agent_not_found)?;
    if !store.owns_agent(&user.id, &agent).await? {
        return Err(ApiError::agent_not_found());
    }
    Ok(store.recent_events(&user.id, &agent, since, limit).await?)
}

/// Rows deleted per statement and statements per run when pruning: bounded work per cron tick.
pub const PRUNE_CHUNK: u32 = 1_000;
pub const PRUNE_CHUNKS_PER_RUN: u32 = 20;

/// The scheduled rollup: recomputes every period that is not final yet (finalizing those that have ended), then
/// prunes raw events of final periods past the retention.
pub async fn run_rollups(
    store: &impl UsageStore,
    retention_days: u32,
    now: i64,
) -> Result<RollupRun, ApiError> {
    let mut run = RollupRun::default();
    let current = PeriodKey::containing(now);
    let mut open = store.open_periods(current).await?;
    if !open.contains(&current) {
        open.push(current);
    }
    for period in open {
        run.recomputed
            .push(store.recompute(period, now, is_final(period, now)).await?);
    }
    let mut budget = PRUNE_CHUNKS_PER_RUN;
    for period in store
        .prunable_periods(prune_before(now, retention_days))
        .await?
    {
        while budget > 0 {
            budget -= 1;
            let deleted = store.prune_period(period, now, PRUNE_CHUNK).await?;
            run.pruned_events += deleted;
            if deleted < u64::from(PRUNE_CHUNK) {
                break;
            }
        }
    }
    Ok(run)
}

/// The operator's recompute of one period: refused for a future period and for one whose raw events are
/// being (or have been) pruned.
pub async fn recompute(
    store: &impl UsageStore,
    period: PeriodKey,
    now: i64,
) -> Result<Recomputed, ApiError> {
    if period > PeriodKey::containing(now) {
        return Err(ApiError::validation(
            "period",
            "is in the future; nothing can have been used in it yet",
        ));
    }
    if store.rollup_pruned(period).await? == Some(true) {
        return Err(ApiError::new(
            ErrorCode::UsagePeriodPruned,
            format!(
                "The raw events of {period} have been pruned (retention); its stored totals are final and cannot be recomputed."
            ),
        ));
    }
    Ok(store.recompute(period, now, is_final(period, now)).await?)
}

#[cfg(test)]
mod tests;
