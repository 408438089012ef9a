//! D1 for the invocation hot path's cold side: what a user's gate reads when it is new or told it is stale
//! (one query), and what an API key's hash stands for (read once per isolate, then cached).

use super::store::{text, D1Store};
use crate::app::gate::protocol::{
    AdmitRequest, AgentRoute, DeploymentTarget, KeyFacts, LoadedFacts, UserFacts,
};
use crate::app::invoke::KeyHolder;
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::agent::AgentStatus;
use crate::domain::deployment::DEFAULT_INVOKE_PATH;
use crate::domain::entitlements::{parse_stored_overrides, Tier};
use crate::domain::ids::UserId;
use crate::domain::usage::UsageTotals;
use serde::Deserialize;
use wasm_bindgen::JsValue;

// ?1 user id, ?2 agent id, ?3 key id (or NULL), ?4 period. The pointer is followed only to a deployment that is
// still `active` (DESIGN.md §4.2).
const GATE_FACTS: &str = "SELECT u.tier, u.entitlements_json, \
     a.id AS agent_id, a.status AS agent_status, \
     d.id AS deployment_id, d.deploy_target, d.script_name, d.invoke_path, d.provider_ref, d.runtime_provider, \
     d.gateway_secret_sealed, \
     k.id AS key_id, k.revoked_at AS key_revoked_at, \
     b.events, b.requests, b.input_tokens, b.output_tokens, b.compute_ms, b.errors, \
     m.gateway_ms \
     FROM users u \
     LEFT JOIN agents a ON a.id = ?2 AND a.user_id = u.id AND a.deleted_at IS NULL \
     LEFT JOIN deployments d ON d.id = a.active_deployment_id AND d.agent_id = a.id AND d.status = 'active' \
     LEFT JOIN api_keys k ON k.id = ?3 AND k.user_id = u.id \
     LEFT JOIN billing_usage b ON b.user_id = u.id AND b.period_key = ?4 \
     LEFT JOIN measured_usage m ON m.user_id = u.id AND m.period_key = ?4 \
     WHERE u.id = ?1";

#[derive(Debug, Deserialize)]
struct FactsRow {
    tier: String,
    entitlements_json: Option<String>,
    agent_id: Option<String>,
    agent_status: Option<String>,
    deployment_id: Option<String>,
    deploy_target: Option<String>,
    script_name: Option<String>,
    invoke_path: Option<String>,
    provider_ref: Option<String>,
    runtime_provider: Option<String>,
    gateway_secret_sealed: Option<String>,
    key_id: Option<String>,
    key_revoked_at: Option<f64>,
    events: Option<f64>,
    requests: Option<f64>,
    input_tokens: Option<f64>,
    output_tokens: Option<f64>,
    compute_ms: Option<f64>,
    errors: Option<f64>,
    gateway_ms: Option<f64>,
}

impl FactsRow {
    fn into_facts(self) -> StoreResult<LoadedFacts> {
        let bad = |e: crate::domain::ApiError| StoreError(e.message);
        let n = |v: Option<f64>| v.unwrap_or(0.0) as u64;
        let deployment = match (self.deployment_id, self.script_name) {
            (Some(deployment_id), Some(script_name)) => Some(DeploymentTarget {
                deployment_id,
                deploy_target: self.deploy_target.unwrap_or_default(),
                script_name,
                invoke_path: self
                    .invoke_path
                    .unwrap_or_else(|| DEFAULT_INVOKE_PATH.into()),
                provider_ref: self.provider_ref.unwrap_or_default(),
                runtime_provider: self.runtime_provider.unwrap_or_default(),
                gateway_secret_sealed: self.gateway_secret_sealed,
            }),
            _ => None,
        };
        Ok(LoadedFacts {
            user: Some(UserFacts {
                tier: Tier::parse_stored(&self.tier).map_err(bad)?,
                overrides: parse_stored_overrides(self.entitlements_json.as_deref())
                    .map_err(bad)?,
            }),
            agent: self.agent_id.map(|agent_id| AgentRoute {
                agent_id,
                enabled: self.agent_status.as_deref() == Some(AgentStatus::Active.as_str()),
                deployment,
            }),
            key: self.key_id.map(|key_id| KeyFacts {
                key_id,
                revoked: self.key_revoked_at.is_some(),
            }),
            usage: UsageTotals::new(
                n(self.events),
                n(self.requests),
                n(self.input_tokens),
                n(self.output_tokens),
                n(self.compute_ms),
                n(self.errors),
            )
            .with_gateway_ms(n(self.gateway_ms)),
        })
    }
}

#[derive(Debug, Deserialize)]
struct KeyRow {
    id: String,
    user_id: String,
    agent_id: Option<String>,
}

impl D1Store {
    /// Everything a gate needs for `request`, in one read. No user: nothing is known.
    pub async fn gate_facts(
        &self,
        user_id: &str,
        request: &AdmitRequest,
    ) -> StoreResult<LoadedFacts> {
        let rows: Vec<FactsRow> = self
            .rows(
                GATE_FACTS,
                &[
                    text(user_id),
                    text(&request.agent_id),
                    request.key_id.as_deref().map_or(JsValue::NULL, text),
                    text(&request.period_key.to_string()),
                ],
            )
            .await?;
        match rows.into_iter().next() {
            Some(row) => row.into_facts(),
            None => Ok(LoadedFacts::default()),
        }
    }

    /// Whose a live key is and what it may invoke; `None` for an unknown or revoked key.
    pub async fn key_holder(&self, key_hash: &str) -> StoreResult<Option<KeyHolder>> {
        let rows: Vec<KeyRow> = self
            .rows(
                "SELECT id, user_id, agent_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                &[text(key_hash)],
            )
            .await?;
        Ok(rows.into_iter().next().map(|k| KeyHolder {
            key_id: k.id,
            user_id: UserId::from_trusted(k.user_id),
            agent_scope: k.agent_id,
        }))
    }
}
