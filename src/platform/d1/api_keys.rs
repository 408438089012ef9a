//! D1 for API keys: create (bounded per user), list, revoke. Only a key's SHA-256 is stored.

use super::store::{number, opt_text, text, D1Store};
use crate::app::ports::StoreResult;
use crate::domain::ids::{AgentId, ApiKeyId, UserId};
use serde::Deserialize;

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

impl D1Store {
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
}
