//! Re-sealing secrets under the current key, so a leaked or retired key can be removed without losing a secret.
//! Every sealed value records its key id (`crypto::keyring`); this job finds values not under the current key —
//! agents' secrets, deployments' telemetry and gateway secrets — opens each with the key it names and seals it
//! again under the current key, bound to the same place. Each row is replaced only if it still holds the value
//! that was read, so a secret set again meanwhile is never overwritten with an older one. It runs, bounded,
//! with every cron trigger while previous keys are configured, and on demand (`POST /v1/admin/secrets/reseal`).

use super::ports::StoreResult;
use super::secrets::secret_aad;
use crate::crypto::keyring::Keyring;
use crate::domain::gateway_credential;
use crate::domain::ids::{AgentId, UserId};
use serde::Serialize;

/// Values re-sealed per run: a bounded amount of work (one D1 write each) per cron trigger or request.
pub const RESEAL_BATCH: u32 = 200;
/// Values under a key no longer configured named per run (they are counted in `remaining` either way).
pub const UNREADABLE_NAMED: u32 = 50;

/// Where a sealed value lives, which is also what it is bound to (its associated data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedField {
    AgentSecret {
        user_id: UserId,
        agent_id: AgentId,
        name: String,
    },
    TelemetrySecret {
        deployment_id: String,
    },
    GatewaySecret {
        deployment_id: String,
    },
}

impl SealedField {
    pub fn aad(&self) -> Vec<u8> {
        match self {
            SealedField::AgentSecret {
                user_id,
                agent_id,
                name,
            } => secret_aad(user_id, agent_id, name),
            SealedField::TelemetrySecret { deployment_id } => deployment_id.as_bytes().to_vec(),
            SealedField::GatewaySecret { deployment_id } => {
                gateway_credential::sealing_aad(deployment_id).into_bytes()
            }
        }
    }

    /// Names the value for the operator (never its content).
    pub fn describe(&self) -> String {
        match self {
            SealedField::AgentSecret { agent_id, name, .. } => {
                format!("secret {name} of agent {agent_id}")
            }
            SealedField::TelemetrySecret { deployment_id } => {
                format!("telemetry secret of deployment {deployment_id}")
            }
            SealedField::GatewaySecret { deployment_id } => {
                format!("gateway secret of deployment {deployment_id}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub field: SealedField,
    pub sealed: String,
}

#[allow(async_fn_in_trait)]
pub trait SealedStore {
    /// Up to `limit` stored values that start with one of `prefixes`.
    async fn sealed_under(&self, prefixes: &[String], limit: u32) -> StoreResult<Vec<SealedValue>>;
    /// Up to `limit` stored values that start with none of `prefixes`.
    async fn sealed_not_under(
        &self,
        prefixes: &[String],
        limit: u32,
    ) -> StoreResult<Vec<SealedValue>>;
    /// Puts `resealed` in place of `value`, only if the row still holds `value.sealed`; whether it did.
    async fn replace_sealed(&self, value: &SealedValue, resealed: &str) -> StoreResult<bool>;
    /// How many stored values are not under the current key.
    async fn count_sealed_elsewhere(&self, current_prefix: &str) -> StoreResult<u64>;
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResealRun {
    pub current_key_id: String,
    pub resealed: u64,
    /// Values that changed underneath the run (set again meanwhile): already under the current key.
    pub superseded: u64,
    /// Values no configured key opens (their key was removed too early, or they were altered), named: at most
    /// `UNREADABLE_NAMED` under removed keys, and any this run failed to open.
    pub unreadable: Vec<String>,
    /// Values still not under the current key after this run, unreadable ones included. At 0, previous keys
    /// can be removed from the configuration.
    pub remaining: u64,
}

/// Re-seals up to `limit` values under the current key. Only values some configured key can open are fetched
/// to be moved, so values under a removed key never hold up the others.
pub async fn reseal(
    store: &impl SealedStore,
    keys: &Keyring,
    limit: u32,
) -> StoreResult<ResealRun> {
    let mut run = ResealRun {
        current_key_id: keys.current_key_id(),
        ..ResealRun::default()
    };
    let lost = store
        .sealed_not_under(&keys.known_prefixes(), UNREADABLE_NAMED)
        .await?;
    run.unreadable
        .extend(lost.iter().map(|v| v.field.describe()));
    for value in store.sealed_under(&keys.movable_prefixes(), limit).await? {
        match keys.reseal(&value.sealed, &value.field.aad()) {
            Ok(resealed) => {
                if store.replace_sealed(&value, &resealed).await? {
                    run.resealed += 1;
                } else {
                    run.superseded += 1;
                }
            }
            Err(_) => run.unreadable.push(value.field.describe()),
        }
    }
    run.remaining = store.count_sealed_elsewhere(&keys.current_prefix()).await?;
    Ok(run)
}

#[cfg(test)]
mod tests;
