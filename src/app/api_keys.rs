//! API keys: `GET/POST /v1/api-keys`, `DELETE /v1/api-keys/{keyId}`. Managed with a user session, never with a
//! key; shown once at creation, stored only as a SHA-256; a revoked key is refused by the user's gate from the
//! very next invocation on.

use super::gate::protocol::Forget;
use super::ports::{tell, Clock, GateNotifier, Store, StoreResult};
use crate::domain::api_key::{self, CreateKey, MAX_LIVE_KEYS};
use crate::domain::ids::{AgentId, ApiKeyId, UserId};
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::Value;

/// What clients see of a key (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub agent_id: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key about to be stored: its hash, never its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub owner: UserId,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub agent: Option<AgentId>,
    pub created_at: i64,
}

/// A created key, with its secret: the only time it is ever shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    pub key: String,
}

#[allow(async_fn_in_trait)]
pub trait ApiKeyStore {
    /// Inserts unless the owner already holds `max_live` live keys (checked in the same statement); `false`
    /// when at the limit.
    async fn insert_api_key(&self, key: &NewApiKey, max_live: u32) -> StoreResult<bool>;
    /// The owner's keys, newest first (at most 200).
    async fn api_keys(&self, owner: &UserId) -> StoreResult<Vec<ApiKeyView>>;
    /// Revokes (idempotently); `false` when the owner has no such key.
    async fn revoke_api_key(&self, owner: &UserId, id: &ApiKeyId, now: i64) -> StoreResult<bool>;
}

fn key_not_found() -> ApiError {
    ApiError::new(ErrorCode::ApiKeyNotFound, "No API key with this id exists.")
}

pub async fn create_key<S: Store + ApiKeyStore>(
    store: &S,
    clock: &impl Clock,
    user: &User,
    body: Value,
) -> Result<CreatedKey, ApiError> {
    let request = CreateKey::from_json(body)?;
    if let Some(agent) = &request.agent_id {
        // A key can only be scoped to one of the caller's own agents.
        if store.agent(&user.id, agent).await?.is_none() {
            return Err(ApiError::agent_not_found());
        }
    }
    let secret = api_key::generate();
    let new = NewApiKey {
        id: ApiKeyId::generate(),
        owner: user.id.clone(),
        name: request.name,
        prefix: secret.prefix,
        hash: secret.hash,
        agent: request.agent_id,
        created_at: clock.now_ms(),
    };
    if !store.insert_api_key(&new, MAX_LIVE_KEYS).await? {
        return Err(ApiError::new(
            ErrorCode::ApiKeyLimitReached,
            format!("You already have {MAX_LIVE_KEYS} live API keys; revoke one first."),
        ));
    }
    Ok(CreatedKey {
        view: ApiKeyView {
            id: new.id.as_str().to_owned(),
            name: new.name,
            prefix: new.prefix,
            agent_id: new.agent.map(|a| a.as_str().to_owned()),
            created_at: new.created_at,
            last_used_at: None,
            revoked_at: None,
        },
        key: secret.secret,
    })
}

pub async fn list_keys(store: &impl ApiKeyStore, user: &User) -> Result<Vec<ApiKeyView>, ApiError> {
    Ok(store.api_keys(&user.id).await?)
}

pub async fn revoke_key(
    store: &impl ApiKeyStore,
    gate: &impl GateNotifier,
    clock: &impl Clock,
    user: &User,
    raw_id: &str,
) -> Result<(), ApiError> {
    let id = ApiKeyId::parse(raw_id).ok_or_else(key_not_found)?;
    if !store.revoke_api_key(&user.id, &id, clock.now_ms()).await? {
        return Err(key_not_found());
    }
    // Refused from the very next call on: every isolate asks the gate whether a key still works.
    tell(gate, &user.id, Forget::Key(id.as_str().to_owned())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::memory::{MemoryStore, RecordingGate, TestClock};
    use crate::app::users::resolve_user;
    use crate::auth::Identity;
    use pollster::block_on;
    use serde_json::json;

    fn user(store: &MemoryStore, clock: &TestClock, sub: &str) -> User {
        let identity = Identity {
            issuer: "https://iss".into(),
            subject: sub.into(),
        };
        block_on(resolve_user(store, clock, &identity)).unwrap()
    }

    #[test]
    fn a_key_is_shown_once_and_stored_only_as_its_hash() {
        let (store, clock) = (MemoryStore::default(), TestClock::new(5));
        let alice = user(&store, &clock, "alice");
        let created = block_on(create_key(&store, &clock, &alice, json!({"name": "ci"}))).unwrap();
        assert!(api_key::is_well_formed(&created.key));
        assert!(created.key.starts_with(&created.view.prefix));
        let stored = store.stored_keys();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].hash, api_key::hash(&created.key));
        let listed = block_on(list_keys(&store, &alice)).unwrap();
        assert_eq!(listed, vec![created.view.clone()]);
        let shown = serde_json::to_value(&listed[0]).unwrap();
        assert!(!shown.to_string().contains(&created.key));
    }

    #[test]
    fn a_key_is_scoped_only_to_the_callers_own_agent_and_bounded_per_user() {
        let (store, clock) = (MemoryStore::default(), TestClock::new(5));
        let alice = user(&store, &clock, "alice");
        let foreign = AgentId::generate();
        let err = block_on(create_key(
            &store,
            &clock,
            &alice,
            json!({"name": "x", "agentId": foreign.as_str()}),
        ))
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::AgentNotFound);
        assert!(store.stored_keys().is_empty(), "a refusal stores nothing");
        for i in 0..MAX_LIVE_KEYS {
            block_on(create_key(
                &store,
                &clock,
                &alice,
                json!({"name": format!("k{i}")}),
            ))
            .unwrap();
        }
        let err = block_on(create_key(
            &store,
            &clock,
            &alice,
            json!({"name": "one too many"}),
        ))
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::ApiKeyLimitReached);
    }

    #[test]
    fn revoking_tells_the_gate_and_only_the_owner_can() {
        let (store, clock, gate) = (
            MemoryStore::default(),
            TestClock::new(5),
            RecordingGate::default(),
        );
        let alice = user(&store, &clock, "alice");
        let bob = user(&store, &clock, "bob");
        let created = block_on(create_key(&store, &clock, &alice, json!({"name": "ci"}))).unwrap();
        let id = created.view.id.clone();
        let err = block_on(revoke_key(&store, &gate, &clock, &bob, &id)).unwrap_err();
        assert_eq!(err.code, ErrorCode::ApiKeyNotFound);
        assert!(gate.told.borrow().is_empty());
        block_on(revoke_key(&store, &gate, &clock, &alice, &id)).unwrap();
        assert_eq!(
            gate.told.borrow().as_slice(),
            &[(alice.id.clone(), Forget::Key(id.clone()))]
        );
        // Idempotent, and the gate is told again (a retry after a failed notification).
        block_on(revoke_key(&store, &gate, &clock, &alice, &id)).unwrap();
        assert_eq!(gate.told.borrow().len(), 2);
        assert_eq!(
            block_on(list_keys(&store, &alice)).unwrap()[0].revoked_at,
            Some(5)
        );
        let err = block_on(revoke_key(&store, &gate, &clock, &alice, "garbage")).unwrap_err();
        assert_eq!(err.code, ErrorCode::ApiKeyNotFound);
    }
}
