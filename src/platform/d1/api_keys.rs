//! D1 for API keys: create (bounded per user), list, revoke. Only a key's SHA-256 is stored.

use super::store::{number, opt_text, text, D1Store};
use crate::app::api_keys::{ApiKeyStore, ApiKeyView, NewApiKey};
use crate::app::ports::StoreResult;
use crate::domain::ids::{AgentId, ApiKeyId, UserId};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ApiKeyRow {
    id: String,
    name: String,
    prefix: String,
    agent_id: Option<String>,
    created_at: f64,
    last_used_at: Option<f64>,
    revoked_at: Option<f64>,
}

impl From<ApiKeyRow> for ApiKeyView {
    fn from(k: ApiKeyRow) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            agent_id: k.agent_id,
            created_at: k.created_at as i64,
            last_used_at: k.last_used_at.map(|t| t as i64),
            revoked_at: k.revoked_at.map(|t| t as i64),
        }
    }
}

// ?1 id, ?2 user_id, ?3 name, ?4 prefix, ?5 key_hash, ?6 agent_id, ?7 created_at, ?8 max live keys
const INSERT_KEY_UNDER_LIMIT: &str =
    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, agent_id, created_at) \
     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 \
     WHERE (SELECT COUNT(*) FROM api_keys WHERE user_id = ?2 AND revoked_at IS NULL) < ?8 \
     RETURNING id";
// ?1 user_id
const LIST_KEYS: &str = "SELECT id, name, prefix, agent_id, created_at, last_used_at, revoked_at \
     FROM api_keys WHERE user_id = ?1 ORDER BY created_at DESC, id DESC LIMIT 200";
// ?1 id, ?2 user_id, ?3 now
const REVOKE_KEY: &str = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) \
     WHERE id = ?1 AND user_id = ?2 RETURNING id";

impl ApiKeyStore for D1Store {
    async fn insert_api_key(&self, key: &NewApiKey, max_live: u32) -> StoreResult<bool> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                INSERT_KEY_UNDER_LIMIT,
                &[
                    text(key.id.as_str()),
                    text(key.owner.as_str()),
                    text(&key.name),
                    text(&key.prefix),
                    text(&key.hash),
                    opt_text(key.agent.as_ref().map(AgentId::as_str)),
                    number(key.created_at),
                    number(max_live as i64),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn api_keys(&self, owner: &UserId) -> StoreResult<Vec<ApiKeyView>> {
        let rows: Vec<ApiKeyRow> = self.rows(LIST_KEYS, &[text(owner.as_str())]).await?;
        Ok(rows.into_iter().map(ApiKeyView::from).collect())
    }

    async fn revoke_api_key(&self, owner: &UserId, id: &ApiKeyId, now: i64) -> StoreResult<bool> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                REVOKE_KEY,
                &[text(id.as_str()), text(owner.as_str()), number(now)],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}
