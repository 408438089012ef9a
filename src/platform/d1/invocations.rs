//! D1 for gateway-side metering: one `invocations` row per call (and the key's last use).

use super::store::{fail, number, opt_text, text, D1Store};
use crate::app::invoke::Invocation;
use crate::app::ports::StoreResult;
use wasm_bindgen::JsValue;

const INSERT_INVOCATION: &str = "INSERT INTO invocations (id, request_id, user_id, agent_id, deployment_id, \
     api_key_id, period_key, mode, outcome, upstream_status, counted, started_at, wall_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, upstream_status = excluded.upstream_status, \
     counted = excluded.counted, wall_ms = excluded.wall_ms";
const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1";

impl D1Store {
    /// Writes (or, for a stream recorded when it started, completes) the metering row, and the key's last use,
    /// in one batch.
    pub async fn record_invocation(&self, inv: &Invocation<'_>) -> StoreResult<()> {
        let m = inv.meter;
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
            ])
            .map_err(fail)?;
        let mut statements = vec![insert];
        if let Some(key) = &m.api_key_id {
            statements.push(
                self.db()
                    .prepare(TOUCH_KEY)
                    .bind(&[text(key), number(m.started_at)])
                    .map_err(fail)?,
            );
        }
        self.db().batch(statements).await.map_err(fail)?;
        Ok(())
    }
}
