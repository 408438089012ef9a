//! `GET/POST /v1/api-keys`, `DELETE /v1/api-keys/{keyId}`: managed with a user session, never with a key.

use super::d1::api_keys::ApiKeyRow;
use super::d1::D1Store;
use super::reply::Reply;
use super::JsClock;
use crate::app::gate::protocol::Forget;
use crate::app::ports::{tell, Clock, GateNotifier, Store};
use crate::domain::api_key::{self, CreateKey, MAX_LIVE_KEYS};
use crate::domain::ids::ApiKeyId;
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde_json::{json, Value};

/// What clients see of a key (never its secret or hash).
fn view(k: &ApiKeyRow) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "agentId": k.agent_id,
        "createdAt": k.created_at as i64,
        "lastUsedAt": k.last_used_at.map(|t| t as i64),
        "revokedAt": k.revoked_at.map(|t| t as i64),
    })
}

fn key_not_found() -> ApiError {
    ApiError::new(ErrorCode::ApiKeyNotFound, "No API key with this id exists.")
}

pub(super) async fn create(
    store: &D1Store,
    clock: &JsClock,
    user: &User,
    body: Value,
) -> Result<Reply, ApiError> {
    let request = CreateKey::from_json(body)?;
    if let Some(agent) = &request.agent_id {
        // A key can only be scoped to one of the caller's own agents.
        if store.agent(&user.id, agent).await?.is_none() {
            return Err(ApiError::agent_not_found());
        }
    }
    let key = api_key::generate();
    let id = ApiKeyId::generate();
    let now = clock.now_ms();
    let inserted = store
        .insert_api_key(
            &id,
            &user.id,
            &request.name,
            &key.prefix,
            &key.hash,
            request.agent_id.as_ref(),
            now,
            MAX_LIVE_KEYS,
        )
        .await?;
    if !inserted {
        return Err(ApiError::new(
            ErrorCode::ApiKeyLimitReached,
            format!("You already have {MAX_LIVE_KEYS} live API keys; revoke one first."),
        ));
    }
    let mut created = view(&ApiKeyRow {
        id: id.as_str().to_owned(),
        name: request.name,
        prefix: key.prefix,
        agent_id: request.agent_id.map(|a| a.as_str().to_owned()),
        created_at: now as f64,
        last_used_at: None,
        revoked_at: None,
    });
    // Shown once: only its SHA-256 is stored.
    created["key"] = json!(key.secret);
    Ok(Reply::Json(201, created))
}

pub(super) async fn list(store: &D1Store, user: &User) -> Result<Reply, ApiError> {
    let keys = store.api_keys(&user.id).await?;
    let keys: Vec<Value> = keys.iter().map(view).collect();
    Ok(Reply::Json(200, json!({ "apiKeys": keys })))
}

pub(super) async fn revoke(
    store: &D1Store,
    gate: &impl GateNotifier,
    clock: &JsClock,
    user: &User,
    raw_id: &str,
) -> Result<Reply, ApiError> {
    let id = ApiKeyId::parse(raw_id).ok_or_else(key_not_found)?;
    if store
        .revoke_api_key(&user.id, id.as_str(), clock.now_ms())
        .await?
    {
        // Refused from the very next call on: every isolate asks the gate whether a key still works.
        tell(gate, &user.id, Forget::Key(id.as_str().to_owned())).await?;
        Ok(Reply::NoContent)
    } else {
        Err(key_not_found())
    }
}
