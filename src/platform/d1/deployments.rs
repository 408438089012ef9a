//! The `DeploymentStore` port over D1. Pointer moves are single D1 batches (one transaction), so the agent's
//! `active_deployment_id` and the deployments' statuses never disagree, whatever runs concurrently.

use super::store::{fail, is_unique_violation, number, text, D1Store, IdRow};
use crate::app::ports::{
    Activation, DeployCounts, DeployLimits, DeployRefusal, DeploymentStore, Inserted,
    NewDeployment, RemovedScript, SealedSecret, StoreError, StoreResult, UnneededScript,
    RESTORE_LEASE_MS,
};
use crate::domain::deployment::{Deployment, DeploymentError, DeploymentStatus};
use crate::domain::ids::{AgentId, DeploymentId, UserId};
use serde::Deserialize;
use wasm_bindgen::JsValue;

const DEPLOYMENT_COLUMNS: &str = "id, agent_id, user_id, version, status, runtime_provider, deploy_target, script_name, \
     main_module_name, compatibility_date, invoke_path, source, code_sha256, env_json, provider_ref, error_json, \
     created_at, updated_at, finished_at, request_sha256, retries, container_uri, execution_role_arn";

// ?1 id … ?17 gateway_secret_sealed; the version is the agent's next one, computed in the same statement. The
// deploy limits hold (?18 in flight, ?19 per hour, ?20 live scripts), and an agent has one AgentCore deploy in
// flight at a time (AgentCore changes a runtime one version at a time), none while its runtime is being deleted.
const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments (id, agent_id, user_id, version, status, runtime_provider, \
     deploy_target, script_name, main_module_name, compatibility_date, invoke_path, source, code_sha256, env_json, \
     telemetry_secret_sealed, idempotency_key, request_sha256, created_at, updated_at, gateway_secret_sealed, \
     container_uri, execution_role_arn) \
     SELECT ?1, ?2, ?3, COALESCE(MAX(version), 0) + 1, 'deploying', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
     ?15, ?16, ?16, ?17, ?21, ?22 FROM deployments WHERE agent_id = ?2 \
     HAVING (SELECT COUNT(*) FROM deployments WHERE user_id = ?3 \
             AND (status = 'deploying' OR restoring_until > ?16)) < ?18 \
     AND (SELECT COUNT(*) FROM deployments WHERE user_id = ?3 AND created_at > ?16 - 3600000) \
         + (SELECT COUNT(*) FROM deployments WHERE user_id = ?3 AND restore_started_at > ?16 - 3600000) < ?19 \
     AND (SELECT COUNT(*) FROM deployments WHERE user_id = ?3 AND status != 'failed' \
          AND script_deleted_at IS NULL) < ?20 \
     AND NOT (?4 = 'agentcore' AND (EXISTS (SELECT 1 FROM deployments WHERE agent_id = ?2 \
          AND status = 'deploying' AND runtime_provider = 'agentcore') \
          OR EXISTS (SELECT 1 FROM agents WHERE id = ?2 AND agentcore_removing_until > ?16)))";
// ?2 now, ?3 agent. Whether a new AgentCore deploy of the agent is held back (INSERT_DEPLOYMENT's last condition).
const AGENTCORE_BUSY: &str = "(EXISTS (SELECT 1 FROM deployments WHERE agent_id = ?3 \
     AND status = 'deploying' AND runtime_provider = 'agentcore') \
     OR EXISTS (SELECT 1 FROM agents WHERE id = ?3 AND agentcore_removing_until > ?2)) AS agentcore_busy";
// ?1 agent, ?2 the deployment removed, ?3 now, ?4 lease end, ?5 the runtime: the lease to delete the agent's
// whole runtime, taken only while no other deployment of the agent has a version in it and no one else holds it;
// the agent stops recording the runtime in the same write.
const CLAIM_RUNTIME_REMOVAL: &str = "UPDATE agents SET agentcore_removing_until = ?4, \
     agentcore_runtime_id = CASE WHEN agentcore_runtime_id = ?5 THEN NULL ELSE agentcore_runtime_id END \
     WHERE id = ?1 AND (agentcore_removing_until IS NULL OR agentcore_removing_until <= ?3) \
     AND NOT EXISTS (SELECT 1 FROM deployments WHERE agent_id = ?1 AND id != ?2 \
          AND runtime_provider = 'agentcore' AND status != 'failed' AND script_deleted_at IS NULL) \
     RETURNING id";
// ?1 id, ?2 owner, ?3 now, ?4 lease end, ?5 in flight, ?6 per hour, ?7 live scripts: the deploy limits as above,
// a restore counting as a deploy.
const CLAIM_RESTORE: &str = "UPDATE deployments SET restoring_until = ?4, restore_started_at = ?3 \
     WHERE id = ?1 AND user_id = ?2 AND script_deleted_at IS NOT NULL \
     AND (restoring_until IS NULL OR restoring_until <= ?3) \
     AND (SELECT COUNT(*) FROM deployments WHERE user_id = ?2 \
          AND (status = 'deploying' OR restoring_until > ?3)) < ?5 \
     AND (SELECT COUNT(*) FROM deployments WHERE user_id = ?2 AND created_at > ?3 - 3600000) \
         + (SELECT COUNT(*) FROM deployments WHERE user_id = ?2 AND restore_started_at > ?3 - 3600000) < ?6 \
     AND (SELECT COUNT(*) FROM deployments WHERE user_id = ?2 AND status != 'failed' \
          AND script_deleted_at IS NULL) < ?7 \
     RETURNING id";
// ?1 user_id, ?2 now. What the deploy limits count, for saying which one a refused deploy hit.
const DEPLOY_COUNTS: &str = "SELECT \
     (SELECT COUNT(*) FROM deployments WHERE user_id = ?1 \
      AND (status = 'deploying' OR restoring_until > ?2)) AS in_flight, \
     (SELECT COUNT(*) FROM deployments WHERE user_id = ?1 AND created_at > ?2 - 3600000) \
      + (SELECT COUNT(*) FROM deployments WHERE user_id = ?1 AND restore_started_at > ?2 - 3600000) AS last_hour, \
     (SELECT MIN(t) FROM (SELECT created_at AS t FROM deployments WHERE user_id = ?1 AND created_at > ?2 - 3600000 \
      UNION ALL SELECT restore_started_at FROM deployments WHERE user_id = ?1 \
      AND restore_started_at > ?2 - 3600000)) AS oldest_in_hour, \
     (SELECT COUNT(*) FROM deployments WHERE user_id = ?1 AND status != 'failed' \
      AND script_deleted_at IS NULL) AS live_scripts";

/// After any pointer move: every successfully deployed deployment of agent ?1 is `active` iff the pointer names
/// it. ?2 is the time of the change.
const STATUSES_FOLLOW_POINTER: &str = "UPDATE deployments SET \
     status = CASE WHEN id = (SELECT active_deployment_id FROM agents WHERE id = ?1) THEN 'active' ELSE 'inactive' END, \
     updated_at = ?2 \
     WHERE agent_id = ?1 AND status IN ('active', 'inactive') \
     AND status != CASE WHEN id = (SELECT active_deployment_id FROM agents WHERE id = ?1) THEN 'active' ELSE 'inactive' END";

// ?1 id, ?2 provider_ref, ?3 now
const MARK_DEPLOYED: &str =
    "UPDATE deployments SET status = 'inactive', provider_ref = ?2, finished_at = ?3, \
     updated_at = ?3 WHERE id = ?1 AND status = 'deploying' RETURNING id";
// ?1 deployment id, ?2 agent id, ?3 now, ?4 version: a newer deployment never loses the pointer to an older one.
const MOVE_POINTER_IF_NEWER: &str = "UPDATE agents SET active_deployment_id = ?1, updated_at = ?3 \
     WHERE id = ?2 AND deleted_at IS NULL \
     AND EXISTS (SELECT 1 FROM deployments WHERE id = ?1 AND status = 'inactive' AND script_deleted_at IS NULL) \
     AND (active_deployment_id IS NULL OR \
          (SELECT version FROM deployments WHERE id = agents.active_deployment_id) < ?4)";
// ?1 user, ?2 agent, ?3 deployment, ?4 now
const ACTIVATE: &str = "UPDATE agents SET active_deployment_id = ?3, updated_at = ?4 \
     WHERE id = ?2 AND user_id = ?1 AND deleted_at IS NULL \
     AND EXISTS (SELECT 1 FROM deployments WHERE id = ?3 AND agent_id = ?2 AND user_id = ?1 \
                 AND status IN ('active', 'inactive') AND script_deleted_at IS NULL) \
     RETURNING id";
// ?1 id, ?2 error_json, ?3 now
const MARK_FAILED: &str =
    "UPDATE deployments SET status = 'failed', error_json = ?2, finished_at = ?3, updated_at = ?3 \
     WHERE id = ?1 AND status = 'deploying' RETURNING id";
// ?1 cutoff, ?2 error_json, ?3 now
// ?1 id
const RECORD_RETRY: &str =
    "UPDATE deployments SET retries = retries + 1 WHERE id = ?1 AND status = 'deploying'";
const FAIL_STUCK: &str =
    "UPDATE deployments SET status = 'failed', error_json = ?2, finished_at = ?3, updated_at = ?3 \
     WHERE status = 'deploying' AND created_at < ?1 RETURNING id, agent_id, user_id";
// ?1 keep, ?2 limit
const UNNEEDED_SCRIPTS: &str = "SELECT d.id, d.agent_id, d.script_name, d.runtime_provider, d.provider_ref, \
     d.finished_at FROM deployments d JOIN agents a ON a.id = d.agent_id \
     WHERE d.script_deleted_at IS NULL AND d.status != 'deploying' AND ( \
       d.status = 'failed' OR a.deleted_at IS NOT NULL OR \
       (d.status = 'inactive' AND (SELECT COUNT(*) FROM deployments n WHERE n.agent_id = d.agent_id \
          AND n.status = 'inactive' AND n.version > d.version AND n.script_deleted_at IS NULL) >= ?1)) \
     AND NOT (d.runtime_provider = 'agentcore' AND d.provider_ref IS NULL AND d.finished_at > ?3) \
     ORDER BY d.created_at LIMIT ?2";

/// DEPLOY_COUNTS' row.
#[derive(Deserialize)]
struct CountsRow {
    in_flight: f64,
    last_hour: f64,
    oldest_in_hour: Option<f64>,
    live_scripts: f64,
}

impl From<CountsRow> for DeployCounts {
    fn from(r: CountsRow) -> Self {
        DeployCounts {
            in_flight: r.in_flight as u64,
            last_hour: r.last_hour as u64,
            oldest_in_hour: r.oldest_in_hour.map(|t| t as i64),
            live_scripts: r.live_scripts as u64,
        }
    }
}

/// DEPLOY_COUNTS' row and AGENTCORE_BUSY, read with a refused insert.
#[derive(Deserialize)]
struct RefusalRow {
    #[serde(flatten)]
    counts: CountsRow,
    agentcore_busy: f64,
}

#[derive(Deserialize)]
struct DeploymentRow {
    id: String,
    agent_id: String,
    user_id: String,
    version: f64,
    status: String,
    runtime_provider: String,
    deploy_target: String,
    script_name: String,
    main_module_name: String,
    compatibility_date: String,
    invoke_path: String,
    source: String,
    code_sha256: String,
    env_json: String,
    provider_ref: Option<String>,
    error_json: Option<String>,
    created_at: f64,
    updated_at: f64,
    finished_at: Option<f64>,
    request_sha256: String,
    retries: f64,
    container_uri: Option<String>,
    execution_role_arn: Option<String>,
}

impl DeploymentRow {
    fn into_deployment(self) -> StoreResult<(Deployment, String)> {
        let bad = |what: &str| StoreError(format!("deployment {}: bad {what} in storage", self.id));
        let deployment = Deployment {
            status: DeploymentStatus::parse(&self.status).ok_or_else(|| bad("status"))?,
            env: serde_json::from_str(&self.env_json).map_err(|_| bad("env_json"))?,
            error: self
                .error_json
                .as_deref()
                .map(serde_json::from_str::<DeploymentError>)
                .transpose()
                .map_err(|_| bad("error_json"))?,
            id: DeploymentId::from_trusted(self.id),
            agent_id: AgentId::from_trusted(self.agent_id),
            user_id: UserId::from_trusted(self.user_id),
            version: self.version as i64,
            runtime_provider: self.runtime_provider,
            deploy_target: self.deploy_target,
            script_name: self.script_name,
            main_module_name: self.main_module_name,
            compatibility_date: self.compatibility_date,
            invoke_path: self.invoke_path,
            source: self.source,
            code_sha256: self.code_sha256,
            provider_ref: self.provider_ref,
            created_at: self.created_at as i64,
            updated_at: self.updated_at as i64,
            finished_at: self.finished_at.map(|t| t as i64),
            retries: self.retries as u32,
            container_uri: self.container_uri,
            execution_role_arn: self.execution_role_arn,
        };
        Ok((deployment, self.request_sha256))
    }
}

#[derive(Deserialize)]
struct SecretRow {
    name: String,
    value_sealed: String,
    created_at: f64,
    updated_at: f64,
}

/// A `RETURNING id` row: only its presence matters.
impl From<SecretRow> for SealedSecret {
    fn from(r: SecretRow) -> Self {
        SealedSecret {
            name: r.name,
            value_sealed: r.value_sealed,
            created_at: r.created_at as i64,
            updated_at: r.updated_at as i64,
        }
    }
}

#[derive(Deserialize)]
struct ScriptRow {
    id: String,
    agent_id: String,
    script_name: String,
    runtime_provider: String,
    provider_ref: Option<String>,
    finished_at: Option<f64>,
}

#[derive(Deserialize)]
struct RemovedScriptRow {
    telemetry_secret_sealed: String,
    gateway_secret_sealed: Option<String>,
}

// ?1 id, ?2 owner: the script exists again (uploaded again from the deployment's artifact); the restore is over.
const SCRIPT_RESTORED: &str =
    "UPDATE deployments SET script_deleted_at = NULL, restoring_until = NULL \
     WHERE id = ?1 AND user_id = ?2";
// ?1 agent, ?2 owner: where the pointer was before an activation (read in its transaction).
const POINTER_BEFORE: &str =
    "SELECT active_deployment_id FROM agents WHERE id = ?1 AND user_id = ?2";

fn optional(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, text)
}

impl D1Store {
    async fn deployment_rows(
        &self,
        sql: &str,
        params: &[JsValue],
    ) -> StoreResult<Vec<(Deployment, String)>> {
        let rows: Vec<DeploymentRow> = self.rows(sql, params).await?;
        rows.into_iter()
            .map(DeploymentRow::into_deployment)
            .collect()
    }

    async fn by_idempotency_key(
        &self,
        agent: &AgentId,
        key: &str,
    ) -> StoreResult<Option<(Deployment, String)>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE agent_id = ?1 AND idempotency_key = ?2");
        Ok(self
            .deployment_rows(&sql, &[text(agent.as_str()), text(key)])
            .await?
            .into_iter()
            .next())
    }

    /// The deployment already recorded under this request's idempotency key, if any.
    async fn existing_for_key(&self, new: &NewDeployment) -> StoreResult<Option<Inserted>> {
        let Some(key) = &new.idempotency_key else {
            return Ok(None);
        };
        Ok(self
            .by_idempotency_key(&new.deployment.agent_id, key)
            .await?
            .map(|(deployment, request_sha256)| Inserted::Existing {
                deployment,
                request_sha256,
            }))
    }
}

impl DeploymentStore for D1Store {
    async fn insert_deployment(&self, new: &NewDeployment) -> StoreResult<Inserted> {
        let d = &new.deployment;
        if let Some(existing) = self.existing_for_key(new).await? {
            return Ok(existing);
        }
        let params = [
            text(d.id.as_str()),
            text(d.agent_id.as_str()),
            text(d.user_id.as_str()),
            text(&d.runtime_provider),
            text(&d.deploy_target),
            text(&d.script_name),
            text(&d.main_module_name),
            text(&d.compatibility_date),
            text(&d.invoke_path),
            text(&d.source),
            text(&d.code_sha256),
            text(&serde_json::to_string(&d.env).map_err(|e| StoreError(e.to_string()))?),
            text(&new.telemetry_secret_sealed),
            optional(new.idempotency_key.as_deref()),
            text(&new.request_sha256),
            number(d.created_at),
            text(&new.gateway_secret_sealed),
            number(new.limits.in_flight as i64),
            number(new.limits.per_hour as i64),
            number(new.limits.live_scripts as i64),
            optional(d.container_uri.as_deref()),
            optional(d.execution_role_arn.as_deref()),
        ];
        // One transaction: the insert, the row it made, and (when the insert was refused) why, from the same
        // snapshot, so the refusal named is the one that held it back. Two inserts racing collide on a unique
        // index: on the idempotency key (answer with the winner) or on the version (try again: the next attempt
        // computes a higher one).
        let select_row = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?1");
        let select_refusal = format!("{DEPLOY_COUNTS}, {AGENTCORE_BUSY}");
        let refusal_params = [
            text(d.user_id.as_str()),
            number(d.created_at),
            text(d.agent_id.as_str()),
        ];
        const ATTEMPTS: usize = 3;
        let mut results = Vec::new();
        for attempt in 1..=ATTEMPTS {
            let batch = vec![
                self.statement(INSERT_DEPLOYMENT, &params)?,
                self.statement(&select_row, &[text(d.id.as_str())])?,
                self.statement(&select_refusal, &refusal_params)?,
            ];
            match self.db().batch(batch).await {
                Ok(r) => {
                    results = r;
                    break;
                }
                Err(e) if is_unique_violation(&e) => {
                    if let Some(existing) = self.existing_for_key(new).await? {
                        return Ok(existing);
                    }
                    if attempt == ATTEMPTS {
                        return Err(fail(e));
                    }
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let result = |i: usize| {
            results
                .get(i)
                .ok_or_else(|| StoreError("the insert batch returned too few results".into()))
        };
        let rows: Vec<DeploymentRow> = result(1)?.results().map_err(fail)?;
        if let Some(row) = rows.into_iter().next() {
            return Ok(Inserted::New(row.into_deployment()?.0));
        }
        // Held back; unless a concurrent retry with the same key got in first.
        if let Some(existing) = self.existing_for_key(new).await? {
            return Ok(existing);
        }
        let refusal: Vec<RefusalRow> = result(2)?.results().map_err(fail)?;
        let r = refusal
            .into_iter()
            .next()
            .ok_or_else(|| StoreError("the refusal's counts returned no row".into()))?;
        Ok(Inserted::Refused(DeployRefusal {
            agentcore_busy: r.agentcore_busy != 0.0,
            counts: r.counts.into(),
        }))
    }

    async fn deploy_counts(&self, owner: &UserId, now: i64) -> StoreResult<DeployCounts> {
        let rows: Vec<CountsRow> = self
            .rows(DEPLOY_COUNTS, &[text(owner.as_str()), number(now)])
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .ok_or_else(|| StoreError("deploy counts returned no row".into()))?
            .into())
    }

    async fn deployment(
        &self,
        owner: &UserId,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> StoreResult<Option<Deployment>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE user_id = ?1 AND agent_id = ?2 AND id = ?3");
        Ok(self
            .deployment_rows(
                &sql,
                &[
                    text(owner.as_str()),
                    text(agent.as_str()),
                    text(id.as_str()),
                ],
            )
            .await?
            .into_iter()
            .next()
            .map(|(d, _)| d))
    }

    async fn list_deployments(
        &self,
        owner: &UserId,
        agent: &AgentId,
        status: Option<DeploymentStatus>,
        include_inactive: bool,
        limit: u32,
    ) -> StoreResult<Vec<Deployment>> {
        // ?3 status filter or NULL; ?4 1 to include inactive ones.
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE user_id = ?1 AND agent_id = ?2 \
             AND (?3 IS NULL OR status = ?3) AND (?4 = 1 OR ?3 = 'inactive' OR status != 'inactive') \
             ORDER BY version DESC LIMIT ?5"
        );
        let params = [
            text(owner.as_str()),
            text(agent.as_str()),
            optional(status.map(DeploymentStatus::as_str)),
            number(include_inactive as i64),
            number(limit as i64),
        ];
        Ok(self
            .deployment_rows(&sql, &params)
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    async fn finish_success(
        &self,
        d: &Deployment,
        provider_ref: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let batch = vec![
            self.statement(
                MARK_DEPLOYED,
                &[text(d.id.as_str()), text(provider_ref), number(now)],
            )?,
            self.statement(
                MOVE_POINTER_IF_NEWER,
                &[
                    text(d.id.as_str()),
                    text(d.agent_id.as_str()),
                    number(now),
                    number(d.version),
                ],
            )?,
            self.statement(
                STATUSES_FOLLOW_POINTER,
                &[text(d.agent_id.as_str()), number(now)],
            )?,
        ];
        let results = self.db().batch(batch).await.map_err(fail)?;
        let marked: Vec<IdRow> = results
            .first()
            .map(|r| r.results())
            .transpose()
            .map_err(fail)?
            .unwrap_or_default();
        Ok(!marked.is_empty())
    }

    async fn record_retry(&self, id: &DeploymentId) -> StoreResult<()> {
        self.statement(RECORD_RETRY, &[text(id.as_str())])?
            .run()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn finish_failure(
        &self,
        id: &DeploymentId,
        error: &DeploymentError,
        now: i64,
    ) -> StoreResult<bool> {
        let error = serde_json::to_string(error).map_err(|e| StoreError(e.to_string()))?;
        let rows: Vec<IdRow> = self
            .rows(MARK_FAILED, &[text(id.as_str()), text(&error), number(now)])
            .await?;
        Ok(!rows.is_empty())
    }

    async fn activate(
        &self,
        owner: &UserId,
        agent: &AgentId,
        id: &DeploymentId,
        now: i64,
        script_restored: bool,
    ) -> StoreResult<Activation> {
        let mut statements = Vec::new();
        if script_restored {
            statements
                .push(self.statement(SCRIPT_RESTORED, &[text(id.as_str()), text(owner.as_str())])?);
        }
        statements.push(self.statement(
            POINTER_BEFORE,
            &[text(agent.as_str()), text(owner.as_str())],
        )?);
        statements.push(self.statement(
            ACTIVATE,
            &[
                text(owner.as_str()),
                text(agent.as_str()),
                text(id.as_str()),
                number(now),
            ],
        )?);
        statements.push(self.statement(
            STATUSES_FOLLOW_POINTER,
            &[text(agent.as_str()), number(now)],
        )?);
        let results = self.db().batch(statements).await.map_err(fail)?;
        let first = usize::from(script_restored);
        #[derive(Deserialize)]
        struct PointerRow {
            active_deployment_id: Option<String>,
        }
        let before: Vec<PointerRow> = results
            .get(first)
            .map(|r| r.results())
            .transpose()
            .map_err(fail)?
            .unwrap_or_default();
        let moved: Vec<IdRow> = results
            .get(first + 1)
            .map(|r| r.results())
            .transpose()
            .map_err(fail)?
            .unwrap_or_default();
        Ok(if moved.is_empty() {
            Activation::NotMoved
        } else {
            Activation::Moved {
                previous: before
                    .into_iter()
                    .next()
                    .and_then(|r| r.active_deployment_id),
            }
        })
    }

    async fn claim_restore(
        &self,
        owner: &UserId,
        id: &DeploymentId,
        now: i64,
        limits: &DeployLimits,
    ) -> StoreResult<bool> {
        let rows: Vec<IdRow> = self
            .rows(
                CLAIM_RESTORE,
                &[
                    text(id.as_str()),
                    text(owner.as_str()),
                    number(now),
                    number(now + RESTORE_LEASE_MS),
                    number(limits.in_flight as i64),
                    number(limits.per_hour as i64),
                    number(limits.live_scripts as i64),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn end_restore(&self, id: &DeploymentId, script_left: bool) -> StoreResult<()> {
        let sql = if script_left {
            "UPDATE deployments SET restoring_until = NULL, script_deleted_at = NULL WHERE id = ?1"
        } else {
            "UPDATE deployments SET restoring_until = NULL WHERE id = ?1"
        };
        self.statement(sql, &[text(id.as_str())])?
            .run()
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn mark_script_deleted(&self, id: &DeploymentId, now: i64) -> StoreResult<()> {
        self.statement(
            "UPDATE deployments SET script_deleted_at = ?2 WHERE id = ?1 AND script_deleted_at IS NULL",
            &[text(id.as_str()), number(now)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    async fn claim_agentcore_runtime_removal(
        &self,
        agent: &AgentId,
        runtime_id: &str,
        except: &DeploymentId,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<bool> {
        let rows: Vec<IdRow> = self
            .rows(
                CLAIM_RUNTIME_REMOVAL,
                &[
                    text(agent.as_str()),
                    text(except.as_str()),
                    number(now),
                    number(lease_until),
                    text(runtime_id),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn end_agentcore_runtime_removal(
        &self,
        agent: &AgentId,
        lease_until: i64,
    ) -> StoreResult<()> {
        self.statement(
            "UPDATE agents SET agentcore_removing_until = NULL \
             WHERE id = ?1 AND agentcore_removing_until = ?2",
            &[text(agent.as_str()), number(lease_until)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    async fn pending_deployments(
        &self,
        started_before: i64,
        limit: u32,
    ) -> StoreResult<Vec<Deployment>> {
        let rows: Vec<DeploymentRow> = self
            .rows(
                &format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status = 'deploying' \
                     AND provider_ref IS NOT NULL AND created_at < ?1 ORDER BY created_at LIMIT ?2"
                ),
                &[number(started_before), number(limit as i64)],
            )
            .await?;
        rows.into_iter()
            .map(|r| r.into_deployment().map(|(d, _)| d))
            .collect()
    }

    async fn agentcore_runtime(&self, agent: &AgentId) -> StoreResult<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            agentcore_runtime_id: Option<String>,
        }
        let rows: Vec<Row> = self
            .rows(
                "SELECT agentcore_runtime_id FROM agents WHERE id = ?1",
                &[text(agent.as_str())],
            )
            .await?;
        Ok(rows.into_iter().next().and_then(|r| r.agentcore_runtime_id))
    }

    async fn set_agentcore_runtime(&self, agent: &AgentId, runtime_id: &str) -> StoreResult<()> {
        self.statement(
            "UPDATE agents SET agentcore_runtime_id = ?2 WHERE id = ?1 AND agentcore_runtime_id IS NULL",
            &[text(agent.as_str()), text(runtime_id)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    async fn set_provider_ref(&self, id: &DeploymentId, provider_ref: &str) -> StoreResult<()> {
        self.statement(
            "UPDATE deployments SET provider_ref = ?2 WHERE id = ?1 AND status = 'deploying'",
            &[text(id.as_str()), text(provider_ref)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    async fn removed_script(
        &self,
        owner: &UserId,
        id: &DeploymentId,
    ) -> StoreResult<Option<RemovedScript>> {
        let rows: Vec<RemovedScriptRow> = self
            .rows(
                "SELECT telemetry_secret_sealed, gateway_secret_sealed FROM deployments \
                 WHERE id = ?1 AND user_id = ?2 AND script_deleted_at IS NOT NULL",
                &[text(id.as_str()), text(owner.as_str())],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| RemovedScript {
            telemetry_secret_sealed: r.telemetry_secret_sealed,
            gateway_secret_sealed: r.gateway_secret_sealed,
        }))
    }

    async fn secrets(&self, owner: &UserId, agent: &AgentId) -> StoreResult<Vec<SealedSecret>> {
        let rows: Vec<SecretRow> = self
            .rows(
                "SELECT name, value_sealed, created_at, updated_at FROM agent_secrets \
                 WHERE user_id = ?1 AND agent_id = ?2 ORDER BY name",
                &[text(owner.as_str()), text(agent.as_str())],
            )
            .await?;
        Ok(rows.into_iter().map(SealedSecret::from).collect())
    }

    async fn put_secret(
        &self,
        owner: &UserId,
        agent: &AgentId,
        s: &SealedSecret,
    ) -> StoreResult<SealedSecret> {
        let rows: Vec<SecretRow> = self
            .rows(
                "INSERT INTO agent_secrets (agent_id, user_id, name, value_sealed, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                 ON CONFLICT (agent_id, name) DO UPDATE SET value_sealed = excluded.value_sealed, \
                 updated_at = excluded.updated_at WHERE agent_secrets.user_id = excluded.user_id \
                 RETURNING name, value_sealed, created_at, updated_at",
                &[text(agent.as_str()), text(owner.as_str()), text(&s.name), text(&s.value_sealed), number(s.updated_at)],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(SealedSecret::from)
            .ok_or_else(|| StoreError("secret upsert returned no row".into()))
    }

    async fn delete_secret(
        &self,
        owner: &UserId,
        agent: &AgentId,
        name: &str,
    ) -> StoreResult<bool> {
        let rows: Vec<SecretRow> = self
            .rows(
                "DELETE FROM agent_secrets WHERE user_id = ?1 AND agent_id = ?2 AND name = ?3 \
                 RETURNING name, value_sealed, created_at, updated_at",
                &[text(owner.as_str()), text(agent.as_str()), text(name)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn fail_stuck_deployments(
        &self,
        cutoff: i64,
        error: &DeploymentError,
        now: i64,
    ) -> StoreResult<Vec<(DeploymentId, AgentId, UserId)>> {
        #[derive(Deserialize)]
        struct Row {
            id: String,
            agent_id: String,
            user_id: String,
        }
        let error = serde_json::to_string(error).map_err(|e| StoreError(e.to_string()))?;
        let rows: Vec<Row> = self
            .rows(FAIL_STUCK, &[number(cutoff), text(&error), number(now)])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    DeploymentId::from_trusted(r.id),
                    AgentId::from_trusted(r.agent_id),
                    UserId::from_trusted(r.user_id),
                )
            })
            .collect())
    }

    async fn unneeded_scripts(
        &self,
        keep: u32,
        limit: u32,
        searchable_before: i64,
    ) -> StoreResult<Vec<UnneededScript>> {
        let rows: Vec<ScriptRow> = self
            .rows(
                UNNEEDED_SCRIPTS,
                &[
                    number(keep as i64),
                    number(limit as i64),
                    number(searchable_before),
                ],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| UnneededScript {
                deployment_id: DeploymentId::from_trusted(r.id),
                agent_id: AgentId::from_trusted(r.agent_id),
                script_name: r.script_name,
                runtime_provider: r.runtime_provider,
                provider_ref: r.provider_ref,
                finished_at: r.finished_at.map(|t| t as i64),
            })
            .collect())
    }

    async fn agentcore_version_recorded(
        &self,
        agent: &AgentId,
        runtime_id: &str,
        version: &str,
    ) -> StoreResult<bool> {
        // A substring test (D1 refuses LIKE patterns this long).
        let rows: Vec<IdRow> = self
            .rows(
                "SELECT id FROM deployments WHERE agent_id = ?1 AND instr(provider_ref, ?2) > 0 LIMIT 1",
                &[
                    text(agent.as_str()),
                    text(&format!(":runtime/{runtime_id}?version={version}&")),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn deleted_agent_runtimes(&self, limit: u32) -> StoreResult<Vec<(AgentId, String)>> {
        #[derive(Deserialize)]
        struct Row {
            id: String,
            agentcore_runtime_id: String,
        }
        let rows: Vec<Row> = self
            .rows(
                "SELECT id, agentcore_runtime_id FROM agents \
                 WHERE deleted_at IS NOT NULL AND agentcore_runtime_id IS NOT NULL LIMIT ?1",
                &[number(limit as i64)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (AgentId::from_trusted(r.id), r.agentcore_runtime_id))
            .collect())
    }

    async fn forget_agentcore_runtime(&self, agent: &AgentId, runtime_id: &str) -> StoreResult<()> {
        self.statement(
            "UPDATE agents SET agentcore_runtime_id = NULL WHERE id = ?1 AND agentcore_runtime_id = ?2",
            &[text(agent.as_str()), text(runtime_id)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }
}

// Artifacts used only by agents deleted before ?1 and not removed yet: no deployment of any other agent (live, or
// deleted at or after ?1) has the same code.
const ORPHANED_ARTIFACTS: &str = "SELECT DISTINCT d.code_sha256 AS code_sha256 FROM deployments d \
     JOIN agents a ON a.id = d.agent_id \
     WHERE a.deleted_at IS NOT NULL AND a.deleted_at < ?1 AND d.artifact_deleted_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM deployments d2 JOIN agents a2 ON a2.id = d2.agent_id \
       WHERE d2.code_sha256 = d.code_sha256 AND (a2.deleted_at IS NULL OR a2.deleted_at >= ?1)) \
     LIMIT ?2";

#[derive(serde::Deserialize)]
struct CodeRow {
    code_sha256: String,
}

impl D1Store {
    /// See `ORPHANED_ARTIFACTS`.
    pub async fn orphaned_artifacts(
        &self,
        deleted_before: i64,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<CodeRow> = self
            .rows(
                ORPHANED_ARTIFACTS,
                &[number(deleted_before), number(limit as i64)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.code_sha256).collect())
    }

    /// Claims the artifact `sha256` for removal on every deployment that has it, in one statement and only while
    /// it is still orphaned (see `ORPHANED_ARTIFACTS`); `true` when it was. A deploy of the same code recorded
    /// before this statement keeps the artifact; one recorded after it clears the claim (`artifact_stored`).
    pub async fn claim_orphaned_artifact(
        &self,
        sha256: &str,
        deleted_before: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let rows: Vec<IdRow> = self
            .rows(
                "UPDATE deployments SET artifact_deleted_at = ?3 \
                 WHERE code_sha256 = ?1 AND artifact_deleted_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM deployments d2 JOIN agents a2 ON a2.id = d2.agent_id \
                   WHERE d2.code_sha256 = ?1 AND (a2.deleted_at IS NULL OR a2.deleted_at >= ?2)) \
                 RETURNING id",
                &[text(sha256), number(deleted_before), number(now)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Artifacts claimed before `claimed_before` that no deployment recorded since still uses: every deployment
    /// with that code is claimed (a deploy of it after the claim is not), and it is not removed yet.
    pub async fn claimed_artifacts(
        &self,
        claimed_before: i64,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        let rows: Vec<CodeRow> = self
            .rows(
                "SELECT DISTINCT d.code_sha256 AS code_sha256 FROM deployments d \
                 WHERE d.artifact_deleted_at IS NOT NULL AND d.artifact_deleted_at < ?1 \
                 AND d.artifact_removed_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM deployments d2 WHERE d2.code_sha256 = d.code_sha256 \
                   AND d2.artifact_deleted_at IS NULL) \
                 LIMIT ?2",
                &[number(claimed_before), number(limit as i64)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.code_sha256).collect())
    }

    /// Whether `sha256` is still claimed by every deployment that has it (checked again just before removing it).
    pub async fn still_claimed(&self, sha256: &str) -> StoreResult<bool> {
        let rows: Vec<CodeRow> = self
            .rows(
                "SELECT code_sha256 FROM deployments WHERE code_sha256 = ?1 AND artifact_deleted_at IS NULL \
                 LIMIT 1",
                &[text(sha256)],
            )
            .await?;
        Ok(rows.is_empty())
    }

    pub async fn mark_artifact_removed(&self, sha256: &str, now: i64) -> StoreResult<()> {
        self.statement(
            "UPDATE deployments SET artifact_removed_at = ?2 WHERE code_sha256 = ?1 AND artifact_removed_at IS NULL",
            &[text(sha256), number(now)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    /// The artifact `sha256` is stored (a deploy of that code): no deployment counts it claimed or removed.
    pub async fn artifact_stored(&self, sha256: &str) -> StoreResult<()> {
        self.statement(
            "UPDATE deployments SET artifact_deleted_at = NULL, artifact_removed_at = NULL \
             WHERE code_sha256 = ?1 AND artifact_deleted_at IS NOT NULL",
            &[text(sha256)],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }
}
