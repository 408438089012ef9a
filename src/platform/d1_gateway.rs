//! D1 for the gateway: gateway-side metering, API keys and the operator API.

use super::d1_store::{fail, number, opt_text, stored_user, text, D1Store};
use crate::app::invoke::Invocation;
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::entitlements::Overrides;
use crate::domain::entitlements::Tier;
use crate::domain::ids::{AgentId, ApiKeyId, UserId};
use crate::domain::user::User;
use serde::Deserialize;
use wasm_bindgen::JsValue;

const INSERT_INVOCATION: &str = "INSERT INTO invocations (id, request_id, user_id, agent_id, deployment_id, \
     api_key_id, period_key, mode, outcome, upstream_status, counted, started_at, wall_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, upstream_status = excluded.upstream_status, \
     counted = excluded.counted, wall_ms = excluded.wall_ms";
const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1";

#[derive(Debug, Deserialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub agent_id: Option<String>,
    pub created_at: f64,
    pub last_used_at: Option<f64>,
    pub revoked_at: Option<f64>,
}

const KEY_COLUMNS: &str = "id, name, prefix, agent_id, created_at, last_used_at, revoked_at";

#[derive(Debug, Deserialize)]
pub struct UsageRow {
    pub outcome: String,
    pub calls: f64,
    pub counted: f64,
    pub wall_ms: f64,
}

#[derive(Deserialize)]
struct AdminUserRow {
    id: String,
    tier: String,
    created_at: f64,
    entitlements_json: Option<String>,
}

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

    /// Inserts a key unless the user already holds `max_live` live keys; `false` when at the limit.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_api_key(
        &self,
        id: &ApiKeyId,
        owner: &UserId,
        name: &str,
        prefix: &str,
        hash: &str,
        agent: Option<&AgentId>,
        now: i64,
        max_live: u32,
    ) -> StoreResult<bool> {
        let sql =
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, agent_id, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 \
             WHERE (SELECT COUNT(*) FROM api_keys WHERE user_id = ?2 AND revoked_at IS NULL) < ?8 \
             RETURNING id";
        let rows: Vec<serde_json::Value> = self
            .rows(
                sql,
                &[
                    text(id.as_str()),
                    text(owner.as_str()),
                    text(name),
                    text(prefix),
                    text(hash),
                    opt_text(agent.map(AgentId::as_str)),
                    number(now),
                    number(max_live as i64),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    pub async fn api_keys(&self, owner: &UserId) -> StoreResult<Vec<ApiKeyRow>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT 200"
        );
        self.rows(&sql, &[text(owner.as_str())]).await
    }

    /// Revokes (idempotently); `false` when the owner has no such key.
    pub async fn revoke_api_key(&self, owner: &UserId, id: &str, now: i64) -> StoreResult<bool> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) \
                 WHERE id = ?1 AND user_id = ?2 RETURNING id",
                &[text(id), text(owner.as_str()), number(now)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    pub async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let rows: Vec<AdminUserRow> = self
            .rows(
                "SELECT id, tier, created_at, entitlements_json FROM users WHERE id = ?1",
                &[text(id.as_str())],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| stored_user(r.id, &r.tier, r.created_at, r.entitlements_json.as_deref()))
            .transpose()
    }

    pub async fn set_tier(&self, id: &UserId, tier: Tier) -> StoreResult<bool> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                "UPDATE users SET tier = ?2 WHERE id = ?1 RETURNING id",
                &[text(id.as_str()), text(tier.as_str())],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Replaces the user's overrides if they still equal `expected` (compare-and-set, so two operators editing
    /// different fields at once cannot silently undo each other); `false` when they changed meanwhile.
    pub async fn replace_overrides(
        &self,
        id: &UserId,
        expected: &Overrides,
        next: &Overrides,
    ) -> StoreResult<bool> {
        let encode = |o: &Overrides| -> StoreResult<JsValue> {
            if o.is_empty() {
                Ok(JsValue::NULL)
            } else {
                serde_json::to_string(o)
                    .map(|s| text(&s))
                    .map_err(|e| StoreError(e.to_string()))
            }
        };
        // Stored JSON is always written by this function, so equal overrides have equal text.
        let rows: Vec<serde_json::Value> = self
            .rows(
                "UPDATE users SET entitlements_json = ?3 \
                 WHERE id = ?1 AND entitlements_json IS ?2 RETURNING id",
                &[text(id.as_str()), encode(expected)?, encode(next)?],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    pub async fn usage_by_outcome(&self, id: &UserId, period: &str) -> StoreResult<Vec<UsageRow>> {
        self.rows(
            "SELECT outcome, COUNT(*) AS calls, SUM(counted) AS counted, SUM(wall_ms) AS wall_ms \
             FROM invocations WHERE user_id = ?1 AND period_key = ?2 GROUP BY outcome ORDER BY outcome",
            &[text(id.as_str()), text(period)],
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        id: &str,
        request_id: &str,
        at: i64,
        action: &str,
        target: Option<&str>,
        status: u16,
        outcome: &str,
        change: Option<&str>,
    ) -> StoreResult<()> {
        self.rows::<serde_json::Value>(
            "INSERT INTO admin_audit (id, request_id, at, action, target_user_id, status, outcome, change_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                text(id),
                text(request_id),
                number(at),
                text(action),
                opt_text(target),
                number(status as i64),
                text(outcome),
                opt_text(change),
            ],
        )
        .await?;
        Ok(())
    }
}
