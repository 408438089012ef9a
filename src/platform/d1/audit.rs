//! D1 for the audit trail: one row per privileged action, read newest first with a keyset cursor.

use super::store::{fail, number, opt_text, text, D1Store};
use crate::app::audit::{AuditFilter, AuditRecord, AuditStore, AuditView};
use crate::app::ports::StoreResult;
use crate::domain::ids::random_hex;
use crate::domain::pagination::Cursor;
use serde::Deserialize;
use wasm_bindgen::JsValue;

const INSERT: &str = "INSERT INTO audit_log (id, at, request_id, actor, actor_id, user_id, action, target, \
     agent_id, outcome, status, detail_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
// ?1 user, ?2 action, ?3 agent (each NULL for any), ?4 cursor at, ?5 cursor id (NULL: first page), ?6 limit
const LIST: &str = "SELECT id, at, request_id, actor, actor_id, user_id, action, target, agent_id, outcome, \
     status, detail_json FROM audit_log \
     WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR agent_id = ?3) \
     AND (?5 IS NULL OR at < ?4 OR (at = ?4 AND id < ?5)) \
     ORDER BY at DESC, id DESC LIMIT ?6";
const PRUNE: &str = "DELETE FROM audit_log WHERE id IN \
     (SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2) RETURNING id";

#[derive(Deserialize)]
struct Row {
    id: String,
    at: f64,
    request_id: Option<String>,
    actor: String,
    actor_id: Option<String>,
    user_id: Option<String>,
    action: String,
    target: Option<String>,
    agent_id: Option<String>,
    outcome: String,
    status: Option<f64>,
    detail_json: Option<String>,
}

impl AuditStore for D1Store {
    async fn record_audit(&self, r: &AuditRecord) -> StoreResult<()> {
        let detail = r.detail.as_ref().map(|d| d.to_string());
        self.statement(
            INSERT,
            &[
                // Time-ordered ids, so rows of the same millisecond keep their order.
                text(&format!("aud_{:013x}{}", r.at, random_hex(6))),
                number(r.at),
                opt_text(r.request_id.as_deref()),
                text(r.actor.kind()),
                opt_text(r.actor.id()),
                opt_text(r.user_id.as_ref().map(|u| u.as_str())),
                text(r.action),
                opt_text(r.target.as_deref()),
                opt_text(r.agent_id.as_deref()),
                text(r.outcome),
                r.status.map_or(JsValue::NULL, |s| number(s as i64)),
                opt_text(detail.as_deref()),
            ],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    async fn audit_rows(
        &self,
        f: &AuditFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<AuditView>> {
        let rows: Vec<Row> = self
            .rows(
                LIST,
                &[
                    opt_text(f.user_id.as_deref()),
                    opt_text(f.action.as_deref()),
                    opt_text(f.agent_id.as_deref()),
                    after.map_or(JsValue::NULL, |c| number(c.created_at)),
                    opt_text(after.map(|c| c.id.as_str())),
                    number(limit as i64),
                ],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditView {
                id: r.id,
                at: r.at as i64,
                request_id: r.request_id,
                actor: r.actor,
                actor_id: r.actor_id,
                user_id: r.user_id,
                action: r.action,
                target: r.target,
                agent_id: r.agent_id,
                outcome: r.outcome,
                status: r.status.map(|s| s as u16),
                detail: r.detail_json.and_then(|d| serde_json::from_str(&d).ok()),
            })
            .collect())
    }

    async fn prune_audit(&self, before: i64, limit: u32) -> StoreResult<u64> {
        let rows: Vec<serde_json::Value> = self
            .rows(PRUNE, &[number(before), number(limit as i64)])
            .await?;
        Ok(rows.len() as u64)
    }
}
