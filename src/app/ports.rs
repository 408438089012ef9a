//! Ports: what the use-cases need from the outside world. The Workers adapter implements them over D1 and the
//! JS clock; `app::memory` implements them in memory for native tests.

use crate::app::gate::protocol::Forget;
use crate::domain::agent::{Agent, AgentDescription, AgentName, AgentStatus};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::pagination::Cursor;
use crate::domain::user::User;
use crate::domain::ApiError;

/// A storage failure. Its text is for the operator's log; clients see a generic 500.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError(pub String);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("store: {}", e.0))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Result of a write that may hit the per-user unique agent name.
#[derive(Debug, Clone, PartialEq)]
pub enum Written<T> {
    Done(T),
    NameTaken,
    /// The owner already has as many live agents as their entitlements allow.
    LimitReached,
}

/// The fields a PATCH may change, already validated. `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentChanges {
    pub name: Option<AgentName>,
    pub description: Option<Option<AgentDescription>>,
    pub status: Option<AgentStatus>,
}

impl AgentChanges {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.description.is_none() && self.status.is_none()
    }
}

/// Persistence. Every agent operation takes the owner's id and matches on it in the query itself, so a
/// foreign agent is simply not found: tenant isolation does not depend on a check being remembered.
// Futures here are !Send on wasm (they hold JS values), and nothing is spawned across threads.
#[allow(async_fn_in_trait)]
pub trait Store {
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>>;
    /// Inserts unless a row for this identity exists; either way returns the stored user.
    async fn insert_user_if_absent(
        &self,
        issuer: &str,
        subject: &str,
        candidate: &User,
    ) -> StoreResult<User>;

    async fn list_agents(
        &self,
        owner: &UserId,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<Agent>>;
    async fn agent(&self, owner: &UserId, id: &AgentId) -> StoreResult<Option<Agent>>;
    /// Inserts unless the owner already has `max_agents` live agents (checked in the same statement, so
    /// concurrent creates cannot overshoot).
    async fn insert_agent(&self, agent: &Agent, max_agents: u64) -> StoreResult<Written<()>>;
    /// Applies `changes` and stamps `updated_at`; `Done(None)` when the owner has no such agent.
    async fn update_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        changes: &AgentChanges,
        updated_at: i64,
    ) -> StoreResult<Written<Option<Agent>>>;
    /// Soft-deletes; `false` when the owner has no such agent.
    async fn delete_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        deleted_at: i64,
    ) -> StoreResult<bool>;

    /// A trivial round trip, for health checks.
    async fn ping(&self) -> StoreResult<()>;
}

/// Tells a user's gate (`app::gate`) that a write changed what it remembers. The write is made first; the gate
/// re-reads D1 on the next call. A failure here means the change is saved but may not be seen by invocations
/// until the gate's copy goes stale (`FACTS_TTL_MS`), so use-cases report it (`gate_not_told`) for a retry.
#[allow(async_fn_in_trait)]
pub trait GateNotifier {
    async fn forget(&self, user: &UserId, what: Forget) -> Result<(), String>;
    /// Announces that `agent`'s route is about to change (see `GateCall::Hold`).
    async fn hold(&self, user: &UserId, agent: &str) -> Result<(), String>;
}

/// The answer when a change was saved but the gate could not be told about it.
pub fn gate_not_told(cause: String) -> ApiError {
    ApiError::unavailable(
        "The change was saved, but the invocation gateway could not be told yet; repeat the request.",
        format!("request gate: {cause}"),
    )
}

/// Saves nothing else: tells the gate, or turns its failure into `gate_not_told`.
pub async fn tell(gate: &impl GateNotifier, user: &UserId, what: Forget) -> Result<(), ApiError> {
    gate.forget(user, what).await.map_err(gate_not_told)
}

/// Time comes through a port: `SystemTime::now` panics on wasm32-unknown-unknown, and tests want to set it.
pub trait Clock {
    fn now_ms(&self) -> i64;
}

use crate::cloudflare::api::ApiRequest;
use crate::cloudflare::envelope::ProviderError;
use crate::domain::deployment::{Deployment, DeploymentError, DeploymentStatus};
use crate::domain::ids::DeploymentId;

/// A deployment row about to be inserted, with what only the store keeps (never returned to clients).
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub deployment: Deployment,
    pub telemetry_secret_sealed: String,
    /// The gateway credential's key (`domain::gateway_credential`), sealed.
    pub gateway_secret_sealed: String,
    /// The owner's deploy limits, checked in the same statement as the insert (so concurrent deploys cannot
    /// overshoot them).
    pub limits: DeployLimits,
    pub idempotency_key: Option<String>,
    pub request_sha256: String,
}

/// Result of inserting a deployment under an idempotency key.
#[derive(Debug, Clone)]
pub enum Inserted {
    New(Deployment),
    /// Not inserted, and why, as one snapshot taken with the refused insert.
    Refused(DeployRefusal),
    /// A deployment with this key exists; its request hash tells whether the retry was the same request.
    Existing {
        deployment: Deployment,
        request_sha256: String,
    },
}

/// Per-user limits on deploys, from the entitlements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployLimits {
    pub in_flight: u64,
    pub per_hour: u64,
    pub live_scripts: u64,
}

impl DeployLimits {
    pub fn of(entitlements: &crate::domain::entitlements::Entitlements) -> Self {
        DeployLimits {
            in_flight: entitlements.deploys_in_flight,
            per_hour: entitlements.deploys_per_hour,
            live_scripts: entitlements.live_scripts,
        }
    }
}

/// What the deploy limits count, right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployCounts {
    pub in_flight: u64,
    pub last_hour: u64,
    /// When the oldest deploy of the last hour started (the hour's count drops by one an hour after it).
    pub oldest_in_hour: Option<i64>,
    pub live_scripts: u64,
}

/// Why an insert was refused, read in the same transaction as the insert: the deploy limits' counts, and whether
/// the agent's AgentCore runtime was busy (another AgentCore deploy of the agent under way, or its runtime being
/// deleted). At least one of them refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployRefusal {
    pub counts: DeployCounts,
    pub agentcore_busy: bool,
}

/// A stored agent secret, still sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecret {
    pub name: String,
    pub value_sealed: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What uploading a deployment's script again needs: whether the clean-up job removed it, and the secrets the
/// platform gave it (sealed), so the script comes back with the credentials the gateway and telemetry expect.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovedScript {
    pub telemetry_secret_sealed: String,
    /// `None` for a deployment made before the gateway guard.
    pub gateway_secret_sealed: Option<String>,
}

/// What an activation did: moved the pointer (from `previous`), or could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    Moved { previous: Option<String> },
    NotMoved,
}

/// How long a restore may hold its deployment before another may start (it takes seconds).
pub const RESTORE_LEASE_MS: i64 = 120_000;

/// A provider script that no deployment needs any more.
#[derive(Debug, Clone, PartialEq)]
pub struct UnneededScript {
    pub deployment_id: DeploymentId,
    pub agent_id: AgentId,
    pub script_name: String,
    /// `cloudflare` (a script) or `agentcore` (an endpoint and a runtime version, named in `provider_ref`).
    pub runtime_provider: String,
    pub provider_ref: Option<String>,
    pub finished_at: Option<i64>,
}

/// Persistence of deployments and secrets. Reads and writes a client can trigger take the owner's id.
#[allow(async_fn_in_trait)]
pub trait DeploymentStore {
    /// Inserts with the agent's next version number, unless the owner is at a deploy limit or (an AgentCore
    /// deployment) the agent's runtime is busy.
    async fn insert_deployment(&self, new: &NewDeployment) -> StoreResult<Inserted>;
    async fn deploy_counts(&self, owner: &UserId, now: i64) -> StoreResult<DeployCounts>;
    async fn deployment(
        &self,
        owner: &UserId,
        agent: &AgentId,
        id: &DeploymentId,
    ) -> StoreResult<Option<Deployment>>;
    async fn list_deployments(
        &self,
        owner: &UserId,
        agent: &AgentId,
        status: Option<DeploymentStatus>,
        include_inactive: bool,
        limit: u32,
    ) -> StoreResult<Vec<Deployment>>;
    /// `deploying → active` (or `inactive` if a newer deployment already holds the pointer), moving the pointer
    /// in the same transaction. No-op unless the deployment is still `deploying`.
    /// `true` when this call finished it (it was still `deploying`).
    async fn finish_success(
        &self,
        deployment: &Deployment,
        provider_ref: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Counts one more retried provider call of a deployment still `deploying`.
    async fn record_retry(&self, id: &DeploymentId) -> StoreResult<()>;
    /// `deploying → failed`. No-op unless the deployment is still `deploying`; `true` when this call failed it.
    async fn finish_failure(
        &self,
        id: &DeploymentId,
        error: &DeploymentError,
        now: i64,
    ) -> StoreResult<bool>;
    /// Moves the pointer to a successfully deployed deployment whose script still exists. With
    /// `script_restored`, first records that the deployment's script exists again (it was just uploaded again)
    /// and ends its restore, in the same transaction.
    async fn activate(
        &self,
        owner: &UserId,
        agent: &AgentId,
        id: &DeploymentId,
        now: i64,
        script_restored: bool,
    ) -> StoreResult<Activation>;
    /// Takes the restore lease of the owner's deployment `id` (its script removed, no restore under way), within
    /// the deploy limits (a restore counts as a deploy in flight and in the hour); `false` otherwise.
    async fn claim_restore(
        &self,
        owner: &UserId,
        id: &DeploymentId,
        now: i64,
        limits: &DeployLimits,
    ) -> StoreResult<bool>;
    /// Ends a restore that failed; `script_left` when its script could not be deleted again, so the clean-up job
    /// finds and deletes it.
    async fn end_restore(&self, id: &DeploymentId, script_left: bool) -> StoreResult<()>;
    async fn mark_script_deleted(&self, id: &DeploymentId, now: i64) -> StoreResult<()>;
    /// Deployments still `deploying`, started before `started_before`, that know where they run (a provider
    /// reference recorded while pending): what the cron job follows.
    async fn pending_deployments(
        &self,
        started_before: i64,
        limit: u32,
    ) -> StoreResult<Vec<Deployment>>;
    /// The AgentCore runtime of an agent, once its first AgentCore deploy created it.
    async fn agentcore_runtime(&self, agent: &AgentId) -> StoreResult<Option<String>>;
    /// Records the agent's AgentCore runtime (kept if one is recorded already).
    async fn set_agentcore_runtime(&self, agent: &AgentId, runtime_id: &str) -> StoreResult<()>;
    /// Records where a deployment still `deploying` runs, before it is live (so clean-up can find a failed one).
    async fn set_provider_ref(&self, id: &DeploymentId, provider_ref: &str) -> StoreResult<()>;
    /// The owner's deployment `id`, when the clean-up job has removed its script; `None` otherwise.
    async fn removed_script(
        &self,
        owner: &UserId,
        id: &DeploymentId,
    ) -> StoreResult<Option<RemovedScript>>;

    async fn secrets(&self, owner: &UserId, agent: &AgentId) -> StoreResult<Vec<SealedSecret>>;
    async fn put_secret(
        &self,
        owner: &UserId,
        agent: &AgentId,
        secret: &SealedSecret,
    ) -> StoreResult<SealedSecret>;
    async fn delete_secret(&self, owner: &UserId, agent: &AgentId, name: &str)
        -> StoreResult<bool>;

    /// Clean-up: fails deployments stuck in `deploying` since before `cutoff`; returns which (id, agent, owner).
    async fn fail_stuck_deployments(
        &self,
        cutoff: i64,
        error: &DeploymentError,
        now: i64,
    ) -> StoreResult<Vec<(DeploymentId, AgentId, UserId)>>;
    /// Clean-up: scripts of failed deployments, of deleted agents, and inactive ones beyond the newest `keep`.
    /// A failed AgentCore deployment that recorded no version is left out until it failed before
    /// `searchable_before`: AgentCore may still be making a version whose answer was lost.
    async fn unneeded_scripts(
        &self,
        keep: u32,
        limit: u32,
        searchable_before: i64,
    ) -> StoreResult<Vec<UnneededScript>>;
    /// Whether a deployment of the agent records version `version` of runtime `runtime_id` as its own.
    async fn agentcore_version_recorded(
        &self,
        agent: &AgentId,
        runtime_id: &str,
        version: &str,
    ) -> StoreResult<bool>;
    /// Clean-up: the AgentCore runtimes of deleted agents, still to be deleted (agent id, runtime id).
    async fn deleted_agent_runtimes(&self, limit: u32) -> StoreResult<Vec<(AgentId, String)>>;
    /// The agent's AgentCore runtime `runtime_id` is gone (deleted, or found missing): forget it, unless the agent
    /// already records another.
    async fn forget_agentcore_runtime(&self, agent: &AgentId, runtime_id: &str) -> StoreResult<()>;
    /// Takes the lease to delete the agent's whole AgentCore runtime `runtime_id`, until `lease_until`, only
    /// while no deployment of the agent other than `except` still has a version in it (deploying, active or
    /// inactive, not removed) and no one else holds it; in the same write the agent stops recording that runtime
    /// (a deploy after this creates a new one, even if the deletion fails). While the lease is held, new AgentCore
    /// deploys of the agent are refused.
    async fn claim_agentcore_runtime_removal(
        &self,
        agent: &AgentId,
        runtime_id: &str,
        except: &DeploymentId,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<bool>;
    /// Gives back the lease taken until `lease_until` (not one someone else took after it expired).
    async fn end_agentcore_runtime_removal(
        &self,
        agent: &AgentId,
        lease_until: i64,
    ) -> StoreResult<()>;
}

/// AgentCore's APIs: sends one signed call built by `aws::agentcore`, reads the answer.
#[allow(async_fn_in_trait)]
pub trait AwsApi {
    async fn send(
        &self,
        call: &crate::aws::agentcore::AwsCall,
    ) -> Result<serde_json::Value, crate::aws::agentcore::AwsFailure>;
}

/// Deployment artifacts by content address (an R2 bucket on the platform).
#[allow(async_fn_in_trait)]
pub trait ArtifactStore {
    async fn artifact(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Stores `encode()` under `sha256` unless something is stored there already (the same address is the same
    /// code; encoding is skipped then); `true` when it stored it.
    async fn put_artifact_once(
        &self,
        sha256: &str,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> StoreResult<bool>;
}

/// Waiting, for retries with backoff (the Workers timer on the platform, a recorder in tests).
#[allow(async_fn_in_trait)]
pub trait Sleeper {
    async fn sleep(&self, ms: u64);
}

/// The Cloudflare API: sends one request built by `cloudflare::api`, interprets the answer.
#[allow(async_fn_in_trait)]
pub trait ProviderApi {
    async fn call(&self, request: &ApiRequest) -> Result<serde_json::Value, ProviderError>;
    /// `GET url` without any credential: the status and (the start of) the body, or why there was no answer.
    /// Tells whether a deployed script answers at its URL yet.
    async fn probe(&self, url: &str) -> Result<(u16, String), String>;
}
