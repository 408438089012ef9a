//! D1 for gateway-side metering: one `invocations` row per call (and the key's last use), the owner's list of
//! them, and their retention (with the telemetry rejects').

use super::store::{fail, number, opt_text, text, D1Store};
use crate::app::invocations::{error_class, InvocationStore, InvocationView};
use crate::app::invoke::Invocation;
use crate::app::ports::StoreResult;
use crate::domain::ids::{AgentId, UserId};
use crate::domain::invoke::AnswerUsage;
use crate::domain::pagination::Cursor;
use wasm_bindgen::JsValue;

const INSERT_INVOCATION: &str = "INSERT INTO invocations (id, request_id, user_id, agent_id, deployment_id, \
     api_key_id, period_key, mode, outcome, upstream_status, counted, started_at, wall_ms, \
     answer_input_tokens, answer_output_tokens, suppressed) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
     ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, upstream_status = excluded.upstream_status, \
     counted = excluded.counted, wall_ms = excluded.wall_ms, \
     answer_input_tokens = excluded.answer_input_tokens, answer_output_tokens = excluded.answer_output_tokens \
     WHERE invocations.request_id = excluded.request_id AND invocations.user_id = excluded.user_id";
const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1";
// ?1 user, ?2 period, ?3 wall ms, ?4 answer input tokens, ?5 answer output tokens, ?6 now
const CHARGE_MEASURED: &str =
    "INSERT INTO measured_usage (user_id, period_key, invocations, gateway_ms, \
     answer_input_tokens, answer_output_tokens, updated_at) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6) \
     ON CONFLICT (user_id, period_key) DO UPDATE SET invocations = invocations + 1, \
     gateway_ms = gateway_ms + excluded.gateway_ms, \
     answer_input_tokens = answer_input_tokens + excluded.answer_input_tokens, \
     answer_output_tokens = answer_output_tokens + excluded.answer_output_tokens, \
     updated_at = excluded.updated_at \
     RETURNING gateway_ms";

#[derive(Debug, serde::Deserialize)]
struct MeasuredRow {
    gateway_ms: f64,
}

impl D1Store {
    /// Writes (or, for a stream recorded when it started, completes) the metering row, the key's last use and
    /// the call's measured compute, in one batch. Answers the user's measured total for the period when this
    /// write charged one.
    pub async fn record_invocation(
        &self,
        inv: &Invocation<'_>,
        now: i64,
    ) -> StoreResult<Option<u64>> {
        let m = inv.meter;
        let answered = |tokens: fn(&AnswerUsage) -> u64| {
            inv.answer_usage
                .as_ref()
                .map_or(JsValue::NULL, |u| number(tokens(u) as i64))
        };
        let insert = self
            .db()
            .prepare(INSERT_INVOCATION)
            .bind(&[
                text(&m.trace_id),
                text(&m.request_id),
                text(&m.user_id),
                text(&m.agent_id),
                opt_text(m.deployment_id.as_deref()),
                opt_text(m.api_key_id.as_deref()),
                text(&m.period.to_string()),
                text(if m.streaming { "stream" } else { "json" }),
                text(inv.outcome),
                inv.upstream_status
                    .map_or(JsValue::NULL, |s| number(s as i64)),
                number(inv.counted as i64),
                number(m.started_at),
                number(inv.wall_ms),
                answered(|u| u.input_tokens),
                answered(|u| u.output_tokens),
                number(m.suppressed.unwrap_or(0) as i64),
            ])
            .map_err(fail)?;
        let mut statements = vec![insert];
        let charge = inv.measured_charge_ms();
        if let Some(wall_ms) = charge {
            let usage = inv.answer_usage.unwrap_or_default();
            statements.push(
                self.db()
                    .prepare(CHARGE_MEASURED)
                    .bind(&[
                        text(&m.user_id),
                        text(&m.period.to_string()),
                        number(wall_ms),
                        number(usage.input_tokens as i64),
                        number(usage.output_tokens as i64),
                        number(now),
                    ])
                    .map_err(fail)?,
            );
        }
        if let Some(key) = &m.api_key_id {
            statements.push(
                self.db()
                    .prepare(TOUCH_KEY)
                    .bind(&[text(key), number(m.started_at)])
                    .map_err(fail)?,
            );
        }
        let results = self.db().batch(statements).await.map_err(fail)?;
        if charge.is_none() {
            return Ok(None);
        }
        let total = results
            .get(1)
            .map(|r| r.results::<MeasuredRow>())
            .transpose()
            .map_err(fail)?
            .and_then(|rows| rows.first().map(|r| r.gateway_ms as u64));
        Ok(total)
    }
}

#[derive(Debug, serde::Deserialize)]
struct InvocationRow {
    id: String,
    deployment_id: Option<String>,
    mode: String,
    outcome: String,
    upstream_status: Option<f64>,
    counted: f64,
    started_at: f64,
    wall_ms: f64,
    api_key_id: Option<String>,
    answer_input_tokens: Option<f64>,
    answer_output_tokens: Option<f64>,
    suppressed: f64,
}

// ?1 user_id, ?2 agent_id, ?3 limit
const LIST_FIRST_PAGE: &str =
    "SELECT id, deployment_id, mode, outcome, upstream_status, counted, started_at, \
     wall_ms, api_key_id, answer_input_tokens, answer_output_tokens, suppressed FROM invocations \
     WHERE user_id = ?1 AND agent_id = ?2 ORDER BY started_at DESC, id DESC LIMIT ?3";
// ?4 cursor started_at, ?5 cursor id
const LIST_AFTER: &str = "SELECT id, deployment_id, mode, outcome, upstream_status, counted, started_at, \
     wall_ms, api_key_id, answer_input_tokens, answer_output_tokens, suppressed FROM invocations \
     WHERE user_id = ?1 AND agent_id = ?2 AND (started_at < ?4 OR (started_at = ?4 AND id < ?5)) ORDER BY started_at DESC, id DESC LIMIT ?3";
// ?1 before, ?2 limit
const PRUNE_INVOCATIONS: &str = "DELETE FROM invocations WHERE rowid IN \
     (SELECT rowid FROM invocations WHERE started_at < ?1 LIMIT ?2) RETURNING 1 AS n";
const PRUNE_REJECTS: &str = "DELETE FROM telemetry_rejects WHERE rowid IN \
     (SELECT rowid FROM telemetry_rejects WHERE at < ?1 LIMIT ?2) RETURNING 1 AS n";

impl InvocationStore for D1Store {
    async fn list_invocations(
        &self,
        owner: &UserId,
        agent: &AgentId,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<InvocationView>> {
        let mut params = vec![
            text(owner.as_str()),
            text(agent.as_str()),
            number(limit as i64),
        ];
        let sql = match after {
            None => LIST_FIRST_PAGE,
            Some(c) => {
                params.push(number(c.created_at));
                params.push(text(&c.id));
                LIST_AFTER
            }
        };
        let rows: Vec<InvocationRow> = self.rows(sql, &params).await?;
        Ok(rows
            .into_iter()
            .map(|r| InvocationView {
                error_class: error_class(&r.outcome),
                id: r.id,
                deployment_id: r.deployment_id,
                mode: r.mode,
                outcome: r.outcome,
                upstream_status: r.upstream_status.map(|s| s as u16),
                counted: r.counted > 0.0,
                started_at: r.started_at as i64,
                wall_ms: r.wall_ms as i64,
                api_key_id: r.api_key_id,
                answer_usage: match (r.answer_input_tokens, r.answer_output_tokens) {
                    (Some(input), Some(output)) => Some(AnswerUsage {
                        input_tokens: input as u64,
                        output_tokens: output as u64,
                    }),
                    _ => None,
                },
                suppressed: r.suppressed as u64,
            })
            .collect())
    }

    async fn prune_invocations(&self, before_ms: i64, limit: u32) -> StoreResult<u64> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                PRUNE_INVOCATIONS,
                &[number(before_ms), number(limit as i64)],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    async fn prune_rejects(&self, before_ms: i64, limit: u32) -> StoreResult<u64> {
        let rows: Vec<serde_json::Value> = self
            .rows(PRUNE_REJECTS, &[number(before_ms), number(limit as i64)])
            .await?;
        Ok(rows.len() as u64)
    }
}
