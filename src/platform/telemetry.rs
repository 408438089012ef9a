//! Telemetry ingestion (`POST /v1/telemetry/report`), the usage reads (`/v1/usage/…`, `/v1/metrics/recent`)
//! and the rollup job (recompute, finalize, prune) that the cron trigger and the operator API run.

use super::d1::telemetry::Recomputed;
use super::d1::D1Store;
use super::durable::user_gate::UserGateClient;
use super::reply::Reply;
use super::request::{header, read_body};
use super::JsClock;
use crate::app::deployments::deploys_not_configured;
use crate::app::ports::Clock;
use crate::config::ServiceConfig;
use crate::crypto::hmac_sha256_verify;
use crate::domain::ids::{random_hex, AgentId, DeploymentId, RequestId, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::telemetry::{
    check_events, invalid_signature, parse_deployment_header, parse_report, parse_signature_header,
    unknown_deployment, DeploymentOwner, RejectThrottle, DEPLOYMENT_HEADER, MAX_REPORT_BYTES,
    SIGNATURE_HEADER,
};
use crate::domain::usage::{is_final, period_start_iso, prune_before, remaining};
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use crate::http::body::{check_declared_length, check_json_content_type};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{console_error, Env, Request};

thread_local! {
    static REJECTS: RefCell<RejectThrottle> = RefCell::new(RejectThrottle::default());
}

/// Accepts one signed report, or refuses it (and audits the refusal, within the throttle).
pub(super) async fn report(
    req: &mut Request,
    env: &Env,
    store: &D1Store,
    config: &ServiceConfig,
    request_id: &RequestId,
) -> Result<Reply, ApiError> {
    let now = JsClock.now_ms();
    let claimed = parse_deployment_header(header(req, DEPLOYMENT_HEADER).as_deref());
    let outcome = match &claimed {
        Ok(deployment_id) => ingest(req, env, store, config, deployment_id, now).await,
        Err(e) => Err(e.clone()),
    };
    if let Err(err) = &outcome {
        if err.status() < 500 {
            let claimed = claimed.as_ref().ok().map(DeploymentId::as_str);
            audit_reject(store, request_id, now, err, claimed).await;
        }
    }
    outcome
}

async fn ingest(
    req: &mut Request,
    env: &Env,
    store: &D1Store,
    config: &ServiceConfig,
    deployment_id: &DeploymentId,
    now: i64,
) -> Result<Reply, ApiError> {
    // Everything that can be judged without reading the body or the database, first.
    let tag = parse_signature_header(header(req, SIGNATURE_HEADER).as_deref())?;
    check_json_content_type(header(req, "Content-Type").as_deref())?;
    check_declared_length(header(req, "Content-Length").as_deref(), MAX_REPORT_BYTES)?;
    let body = read_body(req, MAX_REPORT_BYTES).await?;
    let key = &config
        .deploy
        .as_ref()
        .ok_or_else(deploys_not_configured)?
        .encryption_key;

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
    if !hmac_sha256_verify(&secret, &body, &tag) {
        return Err(invalid_signature());
    }
    let events = parse_report(&body)?;
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
    let period = PeriodKey::containing(now);
    let report_id = format!("rpt_{}", random_hex(12));
    let accepted = store.ingest(&report_id, &events, period, now).await?;
    if accepted > 0 {
        // The gate checks quotas from its own copy of the totals: hand it the charged ones.
        let user = UserId::from_trusted(deployment.user_id.clone());
        let charged = store.usage_totals(&user, period).await?;
        if let Err(e) = UserGateClient::new(env)
            .charge(&user, period, charged)
            .await
        {
            console_error!(
                "telemetry {report_id}: the gate of {user} was not told of the charge: {e}"
            );
        }
    }
    Ok(Reply::Json(
        200,
        json!({
            "reportId": report_id,
            "accepted": accepted,
            "duplicates": events.len() as u64 - accepted,
            "periodKey": period.to_string(),
        }),
    ))
}

async fn audit_reject(
    store: &D1Store,
    request_id: &RequestId,
    now: i64,
    err: &ApiError,
    deployment: Option<&str>,
) {
    let Some(suppressed) = REJECTS.with(|t| t.borrow_mut().admit(now)) else {
        return;
    };
    let written = store
        .record_reject(
            &format!("tlr_{}", random_hex(12)),
            now,
            request_id.as_str(),
            err.code.as_str(),
            err.status(),
            deployment,
            suppressed,
        )
        .await;
    if let Err(e) = written {
        REJECTS.with(|t| t.borrow_mut().restore(suppressed));
        console_error!("auditing a telemetry reject ({request_id}) failed: {}", e.0);
    }
}

fn invalid_query(parameter: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message.to_owned())
        .with_details(json!({ "parameter": parameter }))
}

/// A whole-number query parameter within `range`, or `default` when absent.
fn bounded(
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

/// `GET /v1/usage/current`: this period's totals, the entitlements, and what remains.
pub(super) async fn current(
    env: &Env,
    store: &D1Store,
    config: &ServiceConfig,
    user: &User,
) -> Result<Reply, ApiError> {
    let now = JsClock.now_ms();
    let period = PeriodKey::containing(now);
    let entitlements = config.tiers.resolve(user.tier, &user.overrides);
    let (totals, gate) = futures_util::future::join(
        store.usage_totals(&user.id, period),
        UserGateClient::new(env).peek(&user.id, period, entitlements.requests_per_period),
    )
    .await;
    let totals = totals?;
    let gate = gate.map_err(|cause| {
        ApiError::unavailable(
            "The request counter is unavailable; retry shortly.",
            format!("request gate: {cause}"),
        )
    })?;
    let left = remaining(&totals, gate.used, &entitlements);
    let exhausted: Vec<&str> = [
        ("requestsPerPeriod", left.requests),
        ("tokensPerPeriod", left.tokens),
        ("computeMsPerPeriod", left.compute_ms),
    ]
    .into_iter()
    .filter(|(_, n)| *n == 0)
    .map(|(name, _)| name)
    .collect();
    Ok(Reply::Json(
        200,
        json!({
            "periodKey": period.to_string(),
            "periodStart": period_start_iso(period),
            "resetsAt": period_start_iso(period.next()),
            "tier": user.tier.as_str(),
            "totals": totals,
            "requestsReserved": gate.used,
            "entitlements": entitlements,
            "remaining": left,
            "exhausted": exhausted,
        }),
    ))
}

/// `GET /v1/usage/history?periods=N`: the last N periods (this one included), newest first, zeros where
/// nothing was used.
pub(super) async fn history(
    store: &D1Store,
    user: &User,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let count = bounded(query, "periods", 6, 1..=24)?;
    let now = JsClock.now_ms();
    let newest = PeriodKey::containing(now);
    let mut periods = vec![newest];
    while (periods.len() as i64) < count {
        let before = periods[periods.len() - 1].previous();
        periods.push(before);
    }
    let oldest = periods[periods.len() - 1];
    let rows = store.usage_history(&user.id, oldest, newest).await?;
    let list: Vec<Value> = periods
        .iter()
        .map(|p| {
            let key = p.to_string();
            let row = rows.iter().find(|r| r.period_key == key);
            // A period nobody reported in is final once it has ended; one with usage once the job said so.
            let finalized = match row {
                Some(r) => r.finalized_at.is_some(),
                None => is_final(*p, now),
            };
            json!({
                "periodKey": key,
                "totals": row.map(|r| r.totals()).unwrap_or_default(),
                "finalized": finalized,
            })
        })
        .collect();
    Ok(Reply::Json(200, json!({ "periods": list })))
}

/// `GET /v1/metrics/recent?agentId=…&sinceMs=…&limit=…`: the caller's raw events for one of their agents.
pub(super) async fn recent(
    store: &D1Store,
    user: &User,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
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
    let events = store.recent_events(&user.id, &agent, since, limit).await?;
    Ok(Reply::Json(200, json!({ "events": events })))
}

/// What one run of the rollup job did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupRun {
    pub recomputed: Vec<Recomputed>,
    pub pruned_events: u64,
}

/// Rows deleted per statement and statements per run when pruning: bounded work per cron tick.
const PRUNE_CHUNK: u32 = 1_000;
const PRUNE_CHUNKS_PER_RUN: u32 = 20;

/// The scheduled rollup: recomputes every period that is not final yet (finalizing those that have ended), then
/// prunes raw events of final periods past the retention.
pub(super) async fn run_rollups(
    store: &D1Store,
    config: &ServiceConfig,
) -> Result<RollupRun, ApiError> {
    let now = JsClock.now_ms();
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
        .prunable_periods(prune_before(now, config.metrics_retention_days))
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
pub(super) async fn recompute(store: &D1Store, period: PeriodKey) -> Result<Value, ApiError> {
    let now = JsClock.now_ms();
    if period > PeriodKey::containing(now) {
        return Err(ApiError::validation(
            "period",
            "is in the future; nothing can have been used in it yet",
        ));
    }
    if let Some(rollup) = store.rollup(period).await? {
        if rollup.pruned_at.is_some() {
            return Err(ApiError::new(
                ErrorCode::UsagePeriodPruned,
                format!(
                    "The raw events of {period} have been pruned (retention); its stored totals are final and cannot be recomputed."
                ),
            ));
        }
    }
    let done = store.recompute(period, now, is_final(period, now)).await?;
    serde_json::to_value(done).map_err(ApiError::internal)
}
