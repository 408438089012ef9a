//! D1 for usage: the users' period totals, raw events for `/v1/metrics/recent`, and the rollup job's recompute,
//! finalize and prune statements.

use super::store::{fail, number, text, D1Store};
use crate::app::ports::{StoreError, StoreResult};
use crate::app::usage::{PeriodTotals, RecentEvent, Recomputed, UsageStore};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::usage::{MeasuredUsage, UsageTotals};
use serde::Deserialize;
use wasm_bindgen::JsValue;

/// One user's totals row for one period.
#[derive(Debug, Deserialize)]
pub struct TotalsRow {
    pub period_key: String,
    pub events: f64,
    pub requests: f64,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub compute_ms: f64,
    pub errors: f64,
    /// The gateway's measured compute, for the queries that join `measured_usage`.
    #[serde(default)]
    pub gateway_ms: Option<f64>,
    #[serde(default)]
    pub finalized_at: Option<f64>,
}

impl TotalsRow {
    pub fn totals(&self) -> UsageTotals {
        UsageTotals::new(
            self.events as u64,
            self.requests as u64,
            self.input_tokens as u64,
            self.output_tokens as u64,
            self.compute_ms as u64,
            self.errors as u64,
        )
        .with_gateway_ms(self.gateway_ms.unwrap_or(0.0) as u64)
    }
}

#[derive(Debug, Deserialize)]
struct MeasuredRow {
    invocations: f64,
    gateway_ms: f64,
    answer_input_tokens: f64,
    answer_output_tokens: f64,
}

/// D1 hands every number to Rust as a JS number (f64); counters and millisecond timestamps are whole numbers and
/// are shown as such.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    f64::deserialize(d).map(|n| n as i64)
}

/// A raw event as D1 returns it.
#[derive(Debug, Deserialize)]
struct EventRow {
    event_id: Option<String>,
    trace_id: String,
    deployment_id: String,
    agent_id: String,
    runtime_provider: String,
    #[serde(deserialize_with = "whole")]
    ts: i64,
    #[serde(deserialize_with = "whole")]
    received_at: i64,
    period_key: String,
    #[serde(deserialize_with = "whole")]
    requests: i64,
    #[serde(deserialize_with = "whole")]
    input_tokens: i64,
    #[serde(deserialize_with = "whole")]
    output_tokens: i64,
    #[serde(deserialize_with = "whole")]
    compute_ms: i64,
    #[serde(deserialize_with = "whole")]
    errors: i64,
}

impl From<EventRow> for RecentEvent {
    fn from(e: EventRow) -> Self {
        RecentEvent {
            event_id: e.event_id,
            trace_id: e.trace_id,
            deployment_id: e.deployment_id,
            agent_id: e.agent_id,
            runtime_provider: e.runtime_provider,
            ts: e.ts,
            received_at: e.received_at,
            period_key: e.period_key,
            requests: e.requests,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            compute_ms: e.compute_ms,
            errors: e.errors,
        }
    }
}

// ?1 period. Users whose stored row differs from the sums of their raw events, or who have a row but no events.
const DRIFT: &str = "WITH agg AS (SELECT user_id, COUNT(*) AS events, SUM(requests) AS requests, \
     SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, SUM(compute_ms) AS compute_ms, \
     SUM(errors) AS errors FROM metrics_events WHERE period_key = ?1 GROUP BY user_id) \
     SELECT (SELECT COUNT(*) FROM agg) AS users, (SELECT COALESCE(SUM(events), 0) FROM agg) AS events, \
     (SELECT COUNT(*) FROM agg LEFT JOIN billing_usage b ON b.user_id = agg.user_id AND b.period_key = ?1 \
       WHERE b.user_id IS NULL OR b.events != agg.events OR b.requests != agg.requests \
       OR b.input_tokens != agg.input_tokens OR b.output_tokens != agg.output_tokens \
       OR b.compute_ms != agg.compute_ms OR b.errors != agg.errors) \
     + (SELECT COUNT(*) FROM billing_usage b WHERE b.period_key = ?1 \
       AND NOT EXISTS (SELECT 1 FROM agg WHERE agg.user_id = b.user_id)) AS drifted";
// Never once pruning of the period has begun: its raw events are then incomplete and the stored totals are
// the record.
const NOT_PRUNED: &str =
    "NOT EXISTS (SELECT 1 FROM usage_rollups WHERE period_key = ?1 AND pruned_at IS NOT NULL)";

#[derive(Deserialize)]
struct DriftRow {
    users: f64,
    events: f64,
    drifted: f64,
}

#[derive(Deserialize)]
struct CountRow {
    n: f64,
}

#[derive(Deserialize)]
struct PeriodRow {
    period_key: String,
}

#[derive(Debug, Deserialize)]
struct RollupRow {
    pruned_at: Option<f64>,
}

fn first<T>(rows: Vec<T>) -> StoreResult<T> {
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError("a statement that always returns a row returned none".into()))
}

impl D1Store {
    /// Runs a query over one period bound (`?1`) that selects `period_key`s.
    async fn periods(&self, sql: &str, bound: PeriodKey) -> StoreResult<Vec<PeriodKey>> {
        let rows: Vec<PeriodRow> = self.rows(sql, &[text(&bound.to_string())]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| PeriodKey::parse(&r.period_key))
            .collect())
    }
}

impl UsageStore for D1Store {
    /// The user's totals for `period` (zeros when nothing was reported).
    async fn usage_totals(&self, user: &UserId, period: PeriodKey) -> StoreResult<UsageTotals> {
        let rows: Vec<TotalsRow> = self
            .rows(
                "SELECT ?2 AS period_key, COALESCE(b.events, 0) AS events, COALESCE(b.requests, 0) AS requests, \
                 COALESCE(b.input_tokens, 0) AS input_tokens, COALESCE(b.output_tokens, 0) AS output_tokens, \
                 COALESCE(b.compute_ms, 0) AS compute_ms, COALESCE(b.errors, 0) AS errors, \
                 (SELECT gateway_ms FROM measured_usage WHERE user_id = ?1 AND period_key = ?2) AS gateway_ms \
                 FROM (SELECT 1) LEFT JOIN billing_usage b ON b.user_id = ?1 AND b.period_key = ?2",
                &[text(user.as_str()), text(&period.to_string())],
            )
            .await?;
        Ok(rows.first().map(TotalsRow::totals).unwrap_or_default())
    }

    async fn measured_usage(&self, user: &UserId, period: PeriodKey) -> StoreResult<MeasuredUsage> {
        let rows: Vec<MeasuredRow> = self
            .rows(
                "SELECT invocations, gateway_ms, answer_input_tokens, answer_output_tokens \
                 FROM measured_usage WHERE user_id = ?1 AND period_key = ?2",
                &[text(user.as_str()), text(&period.to_string())],
            )
            .await?;
        Ok(rows
            .first()
            .map_or_else(MeasuredUsage::default, |r| MeasuredUsage {
                invocations: r.invocations as u64,
                gateway_ms: r.gateway_ms as u64,
                answer_input_tokens: r.answer_input_tokens as u64,
                answer_output_tokens: r.answer_output_tokens as u64,
            }))
    }

    /// The user's rows for periods `oldest..=newest` (periods without usage have no row), with whether each
    /// period is final.
    async fn usage_history(
        &self,
        user: &UserId,
        oldest: PeriodKey,
        newest: PeriodKey,
    ) -> StoreResult<Vec<PeriodTotals>> {
        let rows: Vec<TotalsRow> = self.rows(
            // A period with telemetry, measured compute, or both.
            "SELECT k.period_key, COALESCE(b.events, 0) AS events, COALESCE(b.requests, 0) AS requests, \
             COALESCE(b.input_tokens, 0) AS input_tokens, COALESCE(b.output_tokens, 0) AS output_tokens, \
             COALESCE(b.compute_ms, 0) AS compute_ms, COALESCE(b.errors, 0) AS errors, m.gateway_ms, \
             r.finalized_at FROM \
             (SELECT period_key FROM billing_usage WHERE user_id = ?1 AND period_key >= ?2 AND period_key <= ?3 \
              UNION SELECT period_key FROM measured_usage \
              WHERE user_id = ?1 AND period_key >= ?2 AND period_key <= ?3) k \
             LEFT JOIN billing_usage b ON b.user_id = ?1 AND b.period_key = k.period_key \
             LEFT JOIN measured_usage m ON m.user_id = ?1 AND m.period_key = k.period_key \
             LEFT JOIN usage_rollups r ON r.period_key = k.period_key",
            &[
                text(user.as_str()),
                text(&oldest.to_string()),
                text(&newest.to_string()),
            ],
        )
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(PeriodTotals {
                    period_key: PeriodKey::parse(&r.period_key)?,
                    totals: r.totals(),
                    finalized: r.finalized_at.is_some(),
                })
            })
            .collect())
    }

    /// Whether `agent` belongs to `user` (deleted agents included: their usage is still the user's).
    async fn owns_agent(&self, user: &UserId, agent: &AgentId) -> StoreResult<bool> {
        let rows: Vec<CountRow> = self
            .rows(
                "SELECT COUNT(*) AS n FROM agents WHERE id = ?1 AND user_id = ?2",
                &[text(agent.as_str()), text(user.as_str())],
            )
            .await?;
        Ok(first(rows)?.n > 0.0)
    }

    /// The user's raw events for one agent with `ts >= since`, newest first.
    async fn recent_events(
        &self,
        user: &UserId,
        agent: &AgentId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<RecentEvent>> {
        let rows: Vec<EventRow> = self.rows(
            "SELECT event_id, trace_id, deployment_id, agent_id, runtime_provider, ts, received_at, period_key, \
             requests, input_tokens, output_tokens, compute_ms, errors FROM metrics_events \
             WHERE user_id = ?1 AND agent_id = ?2 AND ts >= ?3 \
             ORDER BY ts DESC, received_at DESC, dedupe_key DESC LIMIT ?4",
            &[
                text(user.as_str()),
                text(agent.as_str()),
                number(since),
                number(limit as i64),
            ],
        )
        .await?;
        Ok(rows.into_iter().map(RecentEvent::from).collect())
    }

    async fn rollup_pruned(&self, period: PeriodKey) -> StoreResult<Option<bool>> {
        let rows: Vec<RollupRow> = self
            .rows(
                "SELECT pruned_at FROM usage_rollups WHERE period_key = ?1",
                &[text(&period.to_string())],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| r.pruned_at.is_some()))
    }

    /// Replaces every user's `billing_usage` row for `period` with the sums of its raw events, in one batch, and
    /// records the rollup (`finalize`: the period is over and can no longer change). Does nothing to a period
    /// whose pruning has begun. Idempotent: a second run finds nothing drifted.
    async fn recompute(
        &self,
        period: PeriodKey,
        now: i64,
        finalize: bool,
    ) -> StoreResult<Recomputed> {
        let p = text(&period.to_string());
        let delete = format!("DELETE FROM billing_usage WHERE period_key = ?1 AND {NOT_PRUNED}");
        let insert = format!(
            "INSERT INTO billing_usage (user_id, period_key, events, requests, input_tokens, output_tokens, \
             compute_ms, errors, updated_at) \
             SELECT user_id, period_key, COUNT(*), SUM(requests), SUM(input_tokens), SUM(output_tokens), \
             SUM(compute_ms), SUM(errors), ?2 FROM metrics_events WHERE period_key = ?1 AND {NOT_PRUNED} \
             GROUP BY user_id, period_key"
        );
        let record = format!(
            "INSERT INTO usage_rollups (period_key, recomputed_at, finalized_at, events, users) \
             SELECT ?1, ?2, ?3, (SELECT COUNT(*) FROM metrics_events WHERE period_key = ?1), \
             (SELECT COUNT(DISTINCT user_id) FROM metrics_events WHERE period_key = ?1) WHERE {NOT_PRUNED} \
             ON CONFLICT (period_key) DO UPDATE SET recomputed_at = excluded.recomputed_at, \
             finalized_at = COALESCE(usage_rollups.finalized_at, excluded.finalized_at), \
             events = excluded.events, users = excluded.users"
        );
        let finalized_at = if finalize { number(now) } else { JsValue::NULL };
        let db = self.db();
        let results = db
            .batch(vec![
                db.prepare(DRIFT)
                    .bind(std::slice::from_ref(&p))
                    .map_err(fail)?,
                db.prepare(&delete)
                    .bind(std::slice::from_ref(&p))
                    .map_err(fail)?,
                db.prepare(&insert)
                    .bind(&[p.clone(), number(now)])
                    .map_err(fail)?,
                db.prepare(&record)
                    .bind(&[p, number(now), finalized_at])
                    .map_err(fail)?,
            ])
            .await
            .map_err(fail)?;
        let drift = first(
            results
                .first()
                .ok_or_else(|| StoreError("the recompute batch returned no results".into()))?
                .results::<DriftRow>()
                .map_err(fail)?,
        )?;
        Ok(Recomputed {
            period_key: period.to_string(),
            users: drift.users as u64,
            events: drift.events as u64,
            drifted: drift.drifted as u64,
            finalized: finalize,
        })
    }

    /// Periods up to `newest` that have raw events but are not final yet: the recompute job's work list.
    async fn open_periods(&self, newest: PeriodKey) -> StoreResult<Vec<PeriodKey>> {
        self.periods(
            "SELECT DISTINCT period_key FROM metrics_events WHERE period_key <= ?1 \
             AND period_key NOT IN (SELECT period_key FROM usage_rollups WHERE finalized_at IS NOT NULL) \
             ORDER BY period_key",
            newest,
        )
        .await
    }

    /// Final periods whose raw events may go (ended before `ended_before`), including ones already being pruned.
    async fn prunable_periods(&self, ended_before: PeriodKey) -> StoreResult<Vec<PeriodKey>> {
        self.periods(
            "SELECT period_key FROM usage_rollups WHERE finalized_at IS NOT NULL AND period_key < ?1 \
             AND EXISTS (SELECT 1 FROM metrics_events m WHERE m.period_key = usage_rollups.period_key) \
             ORDER BY period_key",
            ended_before,
        )
        .await
    }

    /// Marks the period as being pruned (from now on it is never recomputed), then deletes up to `limit` of its
    /// raw events. Both statements require the period to be final, so nothing is removed before it is rolled
    /// up. Returns how many rows were deleted.
    async fn prune_period(&self, period: PeriodKey, now: i64, limit: u32) -> StoreResult<u64> {
        let p = text(&period.to_string());
        let db = self.db();
        let results = db
            .batch(vec![
                db.prepare(
                    "UPDATE usage_rollups SET pruned_at = COALESCE(pruned_at, ?2) \
                     WHERE period_key = ?1 AND finalized_at IS NOT NULL",
                )
                .bind(&[p.clone(), number(now)])
                .map_err(fail)?,
                db.prepare(
                    "DELETE FROM metrics_events WHERE rowid IN (SELECT rowid FROM metrics_events \
                     WHERE period_key = ?1 LIMIT ?2) AND period_key IN (SELECT period_key FROM usage_rollups \
                     WHERE finalized_at IS NOT NULL AND pruned_at IS NOT NULL) RETURNING 1 AS n",
                )
                .bind(&[p, number(limit as i64)])
                .map_err(fail)?,
            ])
            .await
            .map_err(fail)?;
        let deleted = results
            .last()
            .map(|r| r.results::<CountRow>().map(|rows| rows.len() as u64))
            .transpose()
            .map_err(fail)?
            .unwrap_or(0);
        Ok(deleted)
    }
}
