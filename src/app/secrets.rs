//! Write-only agent secrets (ADR-0003): values go in, only names and timestamps come out. Values are sealed
//! with AES-256-GCM bound to (user, agent, name) and injected into each deployment as secret bindings.

use super::agents::get_agent;
use super::ports::{Clock, DeploymentStore, SealedSecret, Store};
use crate::crypto::keyring::Keyring;
use crate::domain::deployment::{is_binding_name, RESERVED_BINDINGS};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

pub const MAX_SECRET_BYTES: usize = 5 * 1024;
pub const MAX_SECRETS_PER_AGENT: usize = 64;

/// `PUT /v1/agents/{agentId}/secrets/{name}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    pub value: String,
}

/// What clients see of a secret: never its value.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<SealedSecret> for SecretInfo {
    fn from(s: SealedSecret) -> Self {
        SecretInfo {
            name: s.name,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// The associated data a secret is sealed under: moving the ciphertext to another agent, user or name breaks it.
pub fn secret_aad(user: &UserId, agent: &AgentId, name: &str) -> Vec<u8> {
    format!("agent-secret/{user}/{agent}/{name}").into_bytes()
}

pub fn open_secret(key: &Keyring, aad: &[u8], sealed: &str) -> Result<String, String> {
    String::from_utf8(key.open(sealed, aad)?).map_err(|_| "secret is not UTF-8".to_string())
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    if !is_binding_name(name) {
        return Err(ApiError::validation(
            "name",
            "must match [A-Z_][A-Z0-9_]* (at most 64 characters)",
        ));
    }
    if RESERVED_BINDINGS.contains(&name) {
        return Err(ApiError::validation(
            "name",
            "is set by the platform and cannot be overridden",
        ));
    }
    Ok(())
}

pub async fn put_secret<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    clock: &C,
    key: &Keyring,
    owner: &User,
    raw_agent_id: &str,
    name: &str,
    request: PutSecretRequest,
) -> Result<SecretInfo, ApiError> {
    validate_name(name)?;
    if request.value.is_empty() || request.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::validation("value", "must be 1 to 5120 bytes"));
    }
    let agent = get_agent(store, owner, raw_agent_id).await?;
    let existing = store.secrets(&owner.id, &agent.id).await?;
    if existing.len() >= MAX_SECRETS_PER_AGENT && !existing.iter().any(|s| s.name == name) {
        return Err(ApiError::validation(
            "name",
            "an agent may have at most 64 secrets",
        ));
    }
    let now = clock.now_ms();
    let sealed = SealedSecret {
        name: name.to_owned(),
        value_sealed: key.seal(
            request.value.as_bytes(),
            &secret_aad(&owner.id, &agent.id, name),
        ),
        created_at: now,
        updated_at: now,
    };
    Ok(store
        .put_secret(&owner.id, &agent.id, &sealed)
        .await?
        .into())
}

pub async fn list_secrets<S: Store + DeploymentStore>(
    store: &S,
    owner: &User,
    raw_agent_id: &str,
) -> Result<Vec<SecretInfo>, ApiError> {
    let agent = get_agent(store, owner, raw_agent_id).await?;
    Ok(store
        .secrets(&owner.id, &agent.id)
        .await?
        .into_iter()
        .map(SecretInfo::from)
        .collect())
}

pub async fn delete_secret<S: Store + DeploymentStore>(
    store: &S,
    owner: &User,
    raw_agent_id: &str,
    name: &str,
) -> Result<(), ApiError> {
    let agent = get_agent(store, owner, raw_agent_id).await?;
    if store.delete_secret(&owner.id, &agent.id, name).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::SecretNotFound,
            "This agent has no secret with this name.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_bound_to_their_owner_agent_and_name() {
        let key: Keyring =
            crate::crypto::secret_box::EncryptionKey::parse(&format!("hex:{}", "42".repeat(32)))
                .unwrap()
                .into();
        let (u, a) = (UserId::generate(), AgentId::generate());
        let sealed = key.seal(b"value", &secret_aad(&u, &a, "API_KEY"));
        assert_eq!(
            open_secret(&key, &secret_aad(&u, &a, "API_KEY"), &sealed).unwrap(),
            "value"
        );
        assert!(open_secret(&key, &secret_aad(&u, &a, "OTHER"), &sealed).is_err());
        assert!(open_secret(
            &key,
            &secret_aad(&u, &AgentId::generate(), "API_KEY"),
            &sealed
        )
        .is_err());
        assert!(open_secret(
            &key,
            &secret_aad(&UserId::generate(), &a, "API_KEY"),
            &sealed
        )
        .is_err());
    }

    #[test]
    fn names_are_env_style_and_not_reserved() {
        assert!(validate_name("OPENAI_API_KEY").is_ok());
        for bad in [
            "lower",
            "TELEMETRY_SECRET",
            "GATEWAY_SECRET",
            "AGENT_ID",
            "A-B",
            "",
        ] {
            assert_eq!(
                validate_name(bad).unwrap_err().code,
                ErrorCode::ValidationFailed,
                "{bad}"
            );
        }
    }
}
