//! D1 for the re-seal job: every sealed value not under the current key (agents' secrets, deployments'
//! telemetry and gateway secrets), and a compare-and-set replacement of one.

use super::store::{number, text, D1Store};
use crate::app::key_rotation::{SealedField, SealedStore, SealedValue};
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::ids::{AgentId, UserId};
use serde::Deserialize;

// Every sealed value with where it lives.
macro_rules! every_sealed_value {
    () => {
        "SELECT 'agent' AS kind, user_id, agent_id, name, NULL AS deployment_id, value_sealed AS sealed \
           FROM agent_secrets \
         UNION ALL SELECT 'telemetry', NULL, NULL, NULL, id, telemetry_secret_sealed FROM deployments \
         UNION ALL SELECT 'gateway', NULL, NULL, NULL, id, gateway_secret_sealed FROM deployments \
           WHERE gateway_secret_sealed IS NOT NULL"
    };
}
// ?1 a JSON array of prefixes, ?2 1 to keep values under one of them or 0 to keep values under none. Prefixes
// are compared exactly (`substr`), whatever characters they hold.
macro_rules! under_prefixes {
    () => {
        "WHERE EXISTS (SELECT 1 FROM json_each(?1) p WHERE substr(sealed, 1, length(p.value)) = p.value) = ?2"
    };
}
// ?3 limit.
const SEALED_VALUES: &str = concat!(
    "SELECT * FROM (",
    every_sealed_value!(),
    ") ",
    under_prefixes!(),
    " LIMIT ?3"
);
const COUNT_SEALED: &str = concat!(
    "SELECT COUNT(*) AS n FROM (",
    every_sealed_value!(),
    ") ",
    under_prefixes!()
);

#[derive(Debug, Deserialize)]
struct SealedRow {
    kind: String,
    user_id: Option<String>,
    agent_id: Option<String>,
    name: Option<String>,
    deployment_id: Option<String>,
    sealed: String,
}

impl SealedRow {
    fn into_value(self) -> StoreResult<SealedValue> {
        let missing = || StoreError(format!("sealed value of kind {} is incomplete", self.kind));
        let field = match self.kind.as_str() {
            "agent" => SealedField::AgentSecret {
                user_id: UserId::from_trusted(self.user_id.clone().ok_or_else(missing)?),
                agent_id: AgentId::from_trusted(self.agent_id.clone().ok_or_else(missing)?),
                name: self.name.clone().ok_or_else(missing)?,
            },
            "telemetry" => SealedField::TelemetrySecret {
                deployment_id: self.deployment_id.clone().ok_or_else(missing)?,
            },
            "gateway" => SealedField::GatewaySecret {
                deployment_id: self.deployment_id.clone().ok_or_else(missing)?,
            },
            other => return Err(StoreError(format!("unknown sealed kind {other}"))),
        };
        Ok(SealedValue {
            field,
            sealed: self.sealed,
        })
    }
}

#[derive(Deserialize)]
struct CountRow {
    n: f64,
}

impl D1Store {
    async fn sealed_values(
        &self,
        prefixes: &[String],
        under: bool,
        limit: u32,
    ) -> StoreResult<Vec<SealedValue>> {
        let prefixes = serde_json::to_string(prefixes).map_err(|e| StoreError(e.to_string()))?;
        let rows: Vec<SealedRow> = self
            .rows(
                SEALED_VALUES,
                &[text(&prefixes), number(under as i64), number(limit as i64)],
            )
            .await?;
        rows.into_iter().map(SealedRow::into_value).collect()
    }
}

impl SealedStore for D1Store {
    async fn sealed_under(&self, prefixes: &[String], limit: u32) -> StoreResult<Vec<SealedValue>> {
        self.sealed_values(prefixes, true, limit).await
    }

    async fn sealed_not_under(
        &self,
        prefixes: &[String],
        limit: u32,
    ) -> StoreResult<Vec<SealedValue>> {
        self.sealed_values(prefixes, false, limit).await
    }

    async fn replace_sealed(&self, value: &SealedValue, resealed: &str) -> StoreResult<bool> {
        let (sql, params) = match &value.field {
            SealedField::AgentSecret { agent_id, name, .. } => (
                "UPDATE agent_secrets SET value_sealed = ?1 \
                 WHERE agent_id = ?2 AND name = ?3 AND value_sealed = ?4 RETURNING 1 AS n",
                vec![
                    text(resealed),
                    text(agent_id.as_str()),
                    text(name),
                    text(&value.sealed),
                ],
            ),
            SealedField::TelemetrySecret { deployment_id } => (
                "UPDATE deployments SET telemetry_secret_sealed = ?1 \
                 WHERE id = ?2 AND telemetry_secret_sealed = ?3 RETURNING 1 AS n",
                vec![text(resealed), text(deployment_id), text(&value.sealed)],
            ),
            SealedField::GatewaySecret { deployment_id } => (
                "UPDATE deployments SET gateway_secret_sealed = ?1 \
                 WHERE id = ?2 AND gateway_secret_sealed = ?3 RETURNING 1 AS n",
                vec![text(resealed), text(deployment_id), text(&value.sealed)],
            ),
        };
        let rows: Vec<CountRow> = self.rows(sql, &params).await?;
        Ok(!rows.is_empty())
    }

    async fn count_sealed_elsewhere(&self, prefix: &str) -> StoreResult<u64> {
        let prefixes = serde_json::to_string(&[prefix]).map_err(|e| StoreError(e.to_string()))?;
        let rows: Vec<CountRow> = self
            .rows(COUNT_SEALED, &[text(&prefixes), number(0)])
            .await?;
        Ok(rows.first().map_or(0, |r| r.n as u64))
    }
}
