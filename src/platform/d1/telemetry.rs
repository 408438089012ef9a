//! D1 for telemetry ingestion: the deployment a report claims, the ingest batch (events and billing usage in
//! one transaction), and the audit of rejected reports.

use super::store::{fail, number, opt_text, text, D1Store};
use crate::app::ports::{StoreError, StoreResult};
use crate::app::telemetry::{ClaimedDeployment, RejectEntry, TelemetryStore};
use crate::domain::ids::DeploymentId;
use crate::domain::period::PeriodKey;
use crate::domain::telemetry::TelemetryEvent;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct DeploymentRow {
    user_id: String,
    agent_id: String,
    runtime_provider: String,
    telemetry_secret_sealed: String,
}

#[derive(Deserialize)]
struct CountRow {
    n: f64,
}

// ?1 deployment_id, ?2 dedupe_key, ?3 event_id, ?4 trace_id, ?5 user_id, ?6 agent_id, ?7 runtime_provider,
// ?8 ts, ?9 received_at, ?10 period_key, ?11 report_id, ?12–?16 counters. A retried event keeps its first row.
const INSERT_EVENT: &str = "INSERT INTO metrics_events (deployment_id, dedupe_key, event_id, trace_id, \
     user_id, agent_id, runtime_provider, ts, received_at, period_key, report_id, requests, input_tokens, \
     output_tokens, compute_ms, errors) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
     ON CONFLICT (deployment_id, dedupe_key) DO NOTHING";
// ?1 report_id, ?2 now. Adds exactly the rows this report inserted (duplicates kept their first report's id),
// in the same batch as the inserts: the two can never disagree after a crash.
const ADD_REPORT_TO_USAGE: &str = "INSERT INTO billing_usage (user_id, period_key, events, requests, \
     input_tokens, output_tokens, compute_ms, errors, updated_at) \
     SELECT user_id, period_key, COUNT(*), SUM(requests), SUM(input_tokens), SUM(output_tokens), \
     SUM(compute_ms), SUM(errors), ?2 FROM metrics_events WHERE report_id = ?1 GROUP BY user_id, period_key \
     ON CONFLICT (user_id, period_key) DO UPDATE SET events = events + excluded.events, \
     requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, \
     output_tokens = output_tokens + excluded.output_tokens, compute_ms = compute_ms + excluded.compute_ms, \
     errors = errors + excluded.errors, updated_at = excluded.updated_at";
const COUNT_REPORT: &str = "SELECT COUNT(*) AS n FROM metrics_events WHERE report_id = ?1";

fn first<T>(rows: Vec<T>) -> StoreResult<T> {
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError("a statement that always returns a row returned none".into()))
}

impl TelemetryStore for D1Store {
    async fn telemetry_deployment(
        &self,
        id: &DeploymentId,
    ) -> StoreResult<Option<ClaimedDeployment>> {
        let rows: Vec<DeploymentRow> = self
            .rows(
                "SELECT user_id, agent_id, runtime_provider, telemetry_secret_sealed FROM deployments WHERE id = ?1",
                &[text(id.as_str())],
            )
            .await?;
        Ok(rows.into_iter().next().map(|d| ClaimedDeployment {
            user_id: d.user_id,
            agent_id: d.agent_id,
            runtime_provider: d.runtime_provider,
            telemetry_secret_sealed: d.telemetry_secret_sealed,
        }))
    }

    /// Stores a verified report's events and adds the new ones to billing usage, in one batch (one D1
    /// transaction). Returns how many events were new.
    async fn ingest(
        &self,
        report_id: &str,
        events: &[TelemetryEvent],
        period: PeriodKey,
        received_at: i64,
    ) -> StoreResult<u64> {
        let period = period.to_string();
        let counter = |n: u64| number(n as i64);
        let mut statements = Vec::with_capacity(events.len() + 2);
        for e in events {
            statements.push(
                self.db()
                    .prepare(INSERT_EVENT)
                    .bind(&[
                        text(&e.deployment_id),
                        text(&e.dedupe_key()),
                        opt_text(e.event_id.as_deref()),
                        text(&e.trace_id),
                        text(&e.user_id),
                        text(&e.agent_id),
                        text(&e.runtime_provider),
                        number(e.ts),
                        number(received_at),
                        text(&period),
                        text(report_id),
                        counter(e.counters.requests),
                        counter(e.counters.input_tokens),
                        counter(e.counters.output_tokens),
                        counter(e.counters.compute_ms),
                        counter(e.counters.errors),
                    ])
                    .map_err(fail)?,
            );
        }
        statements.push(
            self.db()
                .prepare(ADD_REPORT_TO_USAGE)
                .bind(&[text(report_id), number(received_at)])
                .map_err(fail)?,
        );
        statements.push(
            self.db()
                .prepare(COUNT_REPORT)
                .bind(&[text(report_id)])
                .map_err(fail)?,
        );
        let results = self.db().batch(statements).await.map_err(fail)?;
        let count = results
            .last()
            .ok_or_else(|| StoreError("the ingest batch returned no results".into()))?
            .results::<CountRow>()
            .map_err(fail)?;
        Ok(first(count)?.n as u64)
    }

    async fn record_reject(&self, entry: &RejectEntry<'_>) -> StoreResult<()> {
        self.rows::<serde_json::Value>(
            "INSERT INTO telemetry_rejects (id, at, request_id, code, status, deployment_id, suppressed) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &[
                text(&entry.id),
                number(entry.at),
                text(entry.request_id),
                text(entry.code),
                number(entry.status as i64),
                opt_text(entry.deployment_id),
                number(entry.suppressed as i64),
            ],
        )
        .await?;
        Ok(())
    }
}
