//! D1 for the gateway: the one read an invocation needs, gateway-side metering, API keys and the operator API.

use super::d1_store::{fail, number, opt_text, stored_user, text, D1Store};
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::entitlements::Overrides;
use crate::domain::ids::{AgentId, ApiKeyId, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::usage::UsageTotals;
use crate::domain::user::{Tier, User};
use serde::Deserialize;
use wasm_bindgen::JsValue;

const INVOKE_COLUMNS: &str = "u.id AS user_id, u.tier, u.created_at, u.entitlements_json, \
     a.id AS agent_id, a.status AS agent_status, \
     d.id AS deployment_id, d.deploy_target, d.script_name, d.invoke_path, d.provider_ref, d.runtime_provider, \
     b.input_tokens AS used_input_tokens, b.output_tokens AS used_output_tokens, b.compute_ms AS used_compute_ms";
// The pointer is followed only to a deployment that is still `active` (DESIGN.md §4.2), never cached: a
// rollback is visible to the very next invocation in every isolate.
const INVOKE_JOINS: &str = "LEFT JOIN agents a ON a.id = ?3 AND a.user_id = u.id AND a.deleted_at IS NULL \
     LEFT JOIN deployments d ON d.id = a.active_deployment_id AND d.agent_id = a.id AND d.status = 'active' \
     LEFT JOIN billing_usage b ON b.user_id = u.id AND b.period_key = ?4";
// The period's usage comes with the same read: quotas are checked without a second query.

#[derive(Debug, Deserialize)]
pub struct InvokeRow {
    pub user_id: String,
    pub tier: String,
    pub created_at: f64,
    pub entitlements_json: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub key_agent_id: Option<String>,
    pub agent_id: Option<String>,
    pub agent_status: Option<String>,
    pub deployment_id: Option<String>,
    pub deploy_target: Option<String>,
    pub script_name: Option<String>,
    pub invoke_path: Option<String>,
    pub provider_ref: Option<String>,
    pub runtime_provider: Option<String>,
    pub used_input_tokens: Option<f64>,
    pub used_output_tokens: Option<f64>,
    pub used_compute_ms: Option<f64>,
}

impl InvokeRow {
    /// The period's tokens and compute so far (what the quotas are charged against).
    pub fn usage(&self) -> UsageTotals {
        let n = |v: Option<f64>| v.unwrap_or(0.0) as u64;
        UsageTotals::new(
            0,
            0,
            n(self.used_input_tokens),
            n(self.used_output_tokens),
            n(self.used_compute_ms),
            0,
        )
    }

    pub fn user(&self) -> StoreResult<User> {
        stored_user(
            self.user_id.clone(),
            &self.tier,
            self.created_at,
            self.entitlements_json.as_deref(),
        )
    }
}

/// One gateway-side metering row.
pub struct Invocation<'a> {
    pub id: &'a str,
    pub request_id: &'a str,
    pub user_id: &'a str,
    pub agent_id: &'a str,
    pub deployment_id: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub period_key: String,
    pub streaming: bool,
    pub outcome: &'a str,
    pub upstream_status: Option<u16>,
    pub counted: bool,
    pub started_at: i64,
    pub wall_ms: i64,
}

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
    /// The single D1 read of an invocation, for a caller identified by their identity provider.
    pub async fn invoke_row_by_identity(
        &self,
        issuer: &str,
        subject: &str,
        agent: &AgentId,
        period: PeriodKey,
    ) -> StoreResult<Option<InvokeRow>> {
        let sql = format!(
            "SELECT {INVOKE_COLUMNS} FROM users u {INVOKE_JOINS} \
             WHERE u.auth_issuer = ?1 AND u.auth_subject = ?2"
        );
        let rows = self
            .rows(
                &sql,
                &[
                    text(issuer),
                    text(subject),
                    text(agent.as_str()),
                    text(&period.to_string()),
                ],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The single D1 read of an invocation, for a caller presenting an API key (by its hash). A revoked key
    /// finds nothing.
    pub async fn invoke_row_by_key(
        &self,
        key_hash: &str,
        agent: &AgentId,
        period: PeriodKey,
    ) -> StoreResult<Option<InvokeRow>> {
        let sql = format!(
            "SELECT {INVOKE_COLUMNS}, k.id AS key_id, k.agent_id AS key_agent_id \
             FROM api_keys k JOIN users u ON u.id = k.user_id {INVOKE_JOINS} \
             WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
        );
        let rows = self
            .rows(
                &sql,
                &[
                    text(key_hash),
                    JsValue::NULL,
                    text(agent.as_str()),
                    text(&period.to_string()),
                ],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Writes (or, for a stream recorded when it started, completes) the metering row, and the key's last use,
    /// in one batch.
    pub async fn record_invocation(&self, inv: &Invocation<'_>) -> StoreResult<()> {
        let insert = self
            .db()
            .prepare(INSERT_INVOCATION)
            .bind(&[
                text(inv.id),
                text(inv.request_id),
                text(inv.user_id),
                text(inv.agent_id),
                opt_text(inv.deployment_id),
                opt_text(inv.api_key_id),
                text(&inv.period_key),
                text(if inv.streaming { "stream" } else { "json" }),
                text(inv.outcome),
                inv.upstream_status
                    .map_or(JsValue::NULL, |s| number(s as i64)),
                number(inv.counted as i64),
                number(inv.started_at),
                number(inv.wall_ms),
            ])
            .map_err(fail)?;
        let mut statements = vec![insert];
        if let Some(key) = inv.api_key_id {
            statements.push(
                self.db()
                    .prepare(TOUCH_KEY)
                    .bind(&[text(key), number(inv.started_at)])
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
