//! Deploy orchestration: accept a deploy (an immutable `deploying` row, answered at once), run it against the
//! provider (upload, secrets, workers.dev route), and finish it `active` or `failed`. Also rollback and reads.

pub mod agentcore;
pub mod artifact;
pub mod bundle_request;
mod cleanup;
mod follow;
mod limits;
mod restore;
mod retries;

pub use restore::Uploader;

use cleanup::delete_script;
pub use cleanup::{clean_up, CleanUpRun};
pub use follow::{
    follow_deployment, follow_pending, FollowRequest, FollowStep, DEPLOY_FOLLOWER_BINDING,
    FOLLOW_PATH,
};

pub use limits::deploy_limit_error;
use retries::{call_retrying, retried};
pub use retries::{retry_wait_ms, MAX_RETRY_WAIT_MS};

use super::agents::get_agent;
use super::gate::protocol::Forget;
use super::ports::{
    gate_not_told, tell, Activation, ArtifactStore, Clock, DeployLimits, DeploymentStore,
    GateNotifier, Inserted, NewDeployment, ProviderApi, Sleeper, Store, UnneededScript,
};
use super::runtime::{Deployed, LeftBehind, RuntimeProvider};
use super::secrets::{open_secret, secret_aad};
use crate::cloudflare::api::{Binding, Module, ScriptMetadata, Step, JS_MODULE};
use crate::cloudflare::envelope::{FailureKind, ProviderError};
use crate::config::DeployConfig;
use crate::crypto::sha256_hex;
use crate::domain::agent::AgentStatus;
use crate::domain::bundle::BundleLimits;
use crate::domain::deployment::RESERVED_BINDINGS;
use crate::domain::deployment::{
    parse_idempotency_key, script_name_for, DeployRequest, DeploySpec, Deployment, DeploymentError,
    DeploymentStatus, ImageSpec, AGENTCORE_INVOKE_PATH,
};
use crate::domain::entitlements::Entitlements;
use crate::domain::gateway_credential;
use crate::domain::ids::{random_bytes, random_hex, DeploymentId};
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::BTreeMap;

/// Deployed when a deploy request has no `moduleCode`.
pub const TEMPLATE_MODULE: &str = include_str!("../../../worker-template/index.js");
/// A deployment still `deploying` after this long is marked failed by the clean-up job.
pub const DEPLOY_TIMEOUT_MS: i64 = 10 * 60 * 1000;
/// Inactive deployments kept on the provider per agent for instant rollback; older scripts are deleted.
pub const KEEP_INACTIVE_FOR_ROLLBACK: u32 = 3;
pub const RUNTIME_PROVIDER: &str = "cloudflare";

/// What a deployment runs: code uploaded to Cloudflare, or a container image AgentCore runs.
pub enum Workload {
    Code(DeploySpec),
    Image(ImageSpec),
}

/// Everything the background part of a deploy needs; only the request that created the row holds it.
pub struct PendingDeploy {
    pub deployment: Deployment,
    pub workload: Workload,
    pub telemetry_secret: String,
    pub gateway_secret: String,
}

impl PendingDeploy {
    /// The code, for a Cloudflare deploy (what is kept as its artifact).
    pub fn code(&self) -> Option<&DeploySpec> {
        match &self.workload {
            Workload::Code(spec) => Some(spec),
            Workload::Image(_) => None,
        }
    }
}

/// The guard deployed as every agent's main module, in front of its own code (`domain::gateway_credential`).
pub const GUARD_MODULE: &str = include_str!("../../../worker-template/gateway_guard.js");
pub const GUARD_MODULE_NAME: &str = "__webhost_gateway_guard.js";
const GUARD_AGENT_PLACEHOLDER: &str = "__AGENT_MAIN__";

/// The guard, importing the agent's main module.
pub fn guard_module(agent_main: &str) -> Module {
    let target = serde_json::to_string(&format!("./{agent_main}")).unwrap_or_default();
    Module {
        name: GUARD_MODULE_NAME.into(),
        content_type: JS_MODULE,
        bytes: GUARD_MODULE
            .replace(&format!("\"{GUARD_AGENT_PLACEHOLDER}\""), &target)
            .into_bytes(),
    }
}

fn deployment_not_found() -> ApiError {
    ApiError::new(
        ErrorCode::DeploymentNotFound,
        "No deployment with this id exists for this agent.",
    )
}

pub fn deploys_not_configured() -> ApiError {
    ApiError::new(
        ErrorCode::DeploysNotConfigured,
        "Deploying is not configured on this control plane (DEPLOY_TARGET is not set).",
    )
}

fn parse_deployment_id(raw: &str) -> Result<DeploymentId, ApiError> {
    DeploymentId::parse(raw).ok_or_else(deployment_not_found)
}

/// `POST /v1/agents/{agentId}/deploy`: validates, records a `deploying` deployment and returns it. The caller
/// runs the returned `PendingDeploy` in the background; `None` means an idempotent retry of an earlier request.
#[allow(clippy::too_many_arguments)]
pub async fn request_deploy<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    clock: &C,
    config: &DeployConfig,
    owner: &User,
    entitlements: &Entitlements,
    raw_agent_id: &str,
    raw_body: &[u8],
    request: DeployRequest,
    bundle: Option<crate::domain::bundle::Bundle>,
    idempotency_key: Option<&str>,
) -> Result<(Deployment, Option<PendingDeploy>), ApiError> {
    // A runtime the plan lacks is the entitlement's refusal, whatever this control plane can deploy.
    let provider = request.runtime_provider()?.to_owned();
    entitlements.require_runtime(&provider)?;
    let idempotency_key = parse_idempotency_key(idempotency_key)?;
    let agent = get_agent(store, owner, raw_agent_id).await?;
    let limits = BundleLimits::entitled(entitlements.bundle_bytes);
    let workload = if provider == agentcore::RUNTIME_PROVIDER {
        let target = config.agentcore.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::DeploysNotConfigured,
                "AgentCore deploys are not configured on this control plane (AGENTCORE_REGION is not set).",
            )
        })?;
        if bundle.is_some() {
            return Err(ApiError::validation(
                "runtimeProvider",
                "an agentcore deploy runs a container image (containerUri), not an uploaded bundle",
            ));
        }
        // A role as deployments show it (the platform's account as `{account}`) names the same role.
        let mut request = request;
        if let Some(role) = request.execution_role_arn.as_mut() {
            *role = role.replace("{account}", &target.account_id);
        }
        Workload::Image(request.validate_image(
            &target.execution_role_arn,
            &target.allowed_role_arns,
            &target.allowed_image_prefixes,
        )?)
    } else {
        Workload::Code(match bundle {
            Some(bundle) => bundle_request::with_bundle(
                request.validate_within(
                    TEMPLATE_MODULE,
                    &config.default_compatibility_date,
                    limits.max_module_bytes,
                )?,
                bundle,
            ),
            None => {
                let spec = request.validate(TEMPLATE_MODULE, &config.default_compatibility_date)?;
                // A single module is a bundle of one: the plan's limit on code applies to it too.
                limits.check_total(spec.module_code.len())?;
                spec
            }
        })
    };
    record_deploy(
        store,
        clock,
        config,
        owner,
        entitlements,
        &agent,
        raw_body,
        idempotency_key,
        workload,
    )
    .await
}

/// Records a validated deploy: a `deploying` row within the deploy limits (or the one an idempotent retry
/// already made), and what its background part needs.
#[allow(clippy::too_many_arguments)]
async fn record_deploy<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    clock: &C,
    config: &DeployConfig,
    owner: &User,
    entitlements: &Entitlements,
    agent: &crate::domain::agent::Agent,
    raw_body: &[u8],
    idempotency_key: Option<String>,
    workload: Workload,
) -> Result<(Deployment, Option<PendingDeploy>), ApiError> {
    if agent.status == AgentStatus::Disabled {
        return Err(ApiError::new(
            ErrorCode::AgentDisabled,
            "This agent is disabled; enable it before deploying.",
        ));
    }
    let secret_names: Vec<String> = store
        .secrets(&owner.id, &agent.id)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let env = match &workload {
        Workload::Code(spec) => &spec.env,
        Workload::Image(image) => &image.env,
    };
    if let Some(clash) = env.keys().find(|name| secret_names.contains(name)) {
        return Err(ApiError::validation(
            &format!("env.{clash}"),
            "has the same name as one of the agent's secrets",
        ));
    }
    if let Workload::Image(image) = &workload {
        agentcore::check_environment_size(image, secret_names.len())?;
    }

    let id = DeploymentId::generate();
    let now = clock.now_ms();
    // Seed 001's contract: the agent gets base64url of 32 random bytes and signs with those bytes; the platform
    // keeps the bytes (sealed) and verifies with them.
    let telemetry_key = random_bytes::<32>();
    let telemetry_secret = URL_SAFE_NO_PAD.encode(telemetry_key);
    let gateway_secret = random_hex(32);
    let (runtime_provider, deploy_target) = match &workload {
        Workload::Code(_) => (RUNTIME_PROVIDER, config.target_name),
        Workload::Image(_) => (agentcore::RUNTIME_PROVIDER, agentcore::RUNTIME_PROVIDER),
    };
    let deployment = match &workload {
        Workload::Code(spec) => Deployment {
            main_module_name: spec.main_module_name.clone(),
            compatibility_date: spec.compatibility_date.clone(),
            invoke_path: spec.invoke_path.clone(),
            source: spec.source.into(),
            code_sha256: spec.address.sha256.clone(),
            env: spec.env.clone(),
            container_uri: None,
            execution_role_arn: None,
            ..new_deployment(&id, agent, owner, runtime_provider, deploy_target, now)
        },
        Workload::Image(image) => Deployment {
            invoke_path: AGENTCORE_INVOKE_PATH.into(),
            source: "image".into(),
            code_sha256: image.sha256(),
            env: image.env.clone(),
            container_uri: Some(image.container_uri.clone()),
            execution_role_arn: Some(image.execution_role_arn.clone()),
            ..new_deployment(&id, agent, owner, runtime_provider, deploy_target, now)
        },
    };
    let new = NewDeployment {
        telemetry_secret_sealed: config
            .encryption_key
            .seal(&telemetry_key, id.as_str().as_bytes()),
        gateway_secret_sealed: config.encryption_key.seal(
            gateway_secret.as_bytes(),
            gateway_credential::sealing_aad(id.as_str()).as_bytes(),
        ),
        idempotency_key,
        request_sha256: sha256_hex(raw_body),
        limits: DeployLimits::of(entitlements),
        deployment,
    };
    match store.insert_deployment(&new).await? {
        Inserted::New(deployment) => Ok((
            deployment.clone(),
            Some(PendingDeploy {
                deployment,
                workload,
                telemetry_secret,
                gateway_secret,
            }),
        )),
        Inserted::Existing {
            deployment,
            request_sha256,
        } if request_sha256 == new.request_sha256 => Ok((deployment, None)),
        Inserted::Existing { .. } => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "This Idempotency-Key was already used with a different request body.",
        )),
        Inserted::Refused(refusal) if limits::any_reached(&new.limits, &refusal.counts) => {
            Err(deploy_limit_error(&new.limits, &refusal.counts, now))
        }
        Inserted::Refused(refusal)
            if refusal.agentcore_busy
                && new.deployment.runtime_provider == agentcore::RUNTIME_PROVIDER =>
        {
            let mut busy = ApiError::new(
                ErrorCode::DeployInProgress,
                "This agent's AgentCore runtime is busy: another AgentCore deploy of it is still running, or its \
                 previous runtime is being deleted. Deploy again once that has finished.",
            )
            .with_headers(vec![("Retry-After", "10".to_owned())]);
            // It resolves itself: once the other deploy or the deletion ends, the same request succeeds.
            busy.retryable_override = Some(true);
            Err(busy)
        }
        Inserted::Refused(refusal) => Err(ApiError::internal(format!(
            "the deployment was not recorded, though no deploy limit was reached ({refusal:?})"
        ))),
    }
}

/// A `deploying` row's common fields; the caller fills in what it runs.
fn new_deployment(
    id: &DeploymentId,
    agent: &crate::domain::agent::Agent,
    owner: &User,
    runtime_provider: &str,
    deploy_target: &str,
    now: i64,
) -> Deployment {
    Deployment {
        script_name: script_name_for(id),
        id: id.clone(),
        agent_id: agent.id.clone(),
        user_id: owner.id.clone(),
        version: 0, // assigned by the store
        status: DeploymentStatus::Deploying,
        runtime_provider: runtime_provider.into(),
        deploy_target: deploy_target.into(),
        main_module_name: String::new(),
        compatibility_date: String::new(),
        invoke_path: String::new(),
        source: String::new(),
        code_sha256: String::new(),
        env: BTreeMap::new(),
        provider_ref: None,
        error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
        retries: 0,
        container_uri: None,
        execution_role_arn: None,
    }
}

/// What a deploy's failure shows its owner: the step, the class, the provider's codes and message, and the
/// endpoint with the platform's account id taken out (it is the platform's, not the user's).
fn error_from_provider(e: &ProviderError, config: &DeployConfig) -> DeploymentError {
    DeploymentError {
        step: e.step.as_str().into(),
        endpoint: Some(e.endpoint.clone()),
        kind: serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        status: e.status,
        provider_codes: e.codes.clone(),
        message: e.message.clone(),
    }
    .without_account(config.target.account_id())
}

/// A deployment as its owner sees it: the platform's account ids are not its owner's business, so the Cloudflare
/// account id is taken out of its error (one stored before errors were redacted is redacted on the way out), and
/// the AWS account id out of an AgentCore deployment's error, runtime ARN and execution role (`{account}`).
pub fn for_owner(deployment: Deployment, config: Option<&DeployConfig>) -> Deployment {
    let Some(config) = config else {
        return deployment;
    };
    let aws_account = config
        .agentcore
        .as_ref()
        .map(|t| t.account_id.as_str())
        .filter(|a| !a.is_empty() && deployment.runtime_provider == agentcore::RUNTIME_PROVIDER);
    let redact = |text: String| match aws_account {
        Some(account) => text.replace(account, "{account}"),
        None => text,
    };
    Deployment {
        error: deployment.error.map(|e| {
            let e = e.without_account(config.target.account_id());
            match aws_account {
                Some(account) => e.without_account(account),
                None => e,
            }
        }),
        provider_ref: deployment.provider_ref.map(redact),
        execution_role_arn: deployment.execution_role_arn.map(redact),
        ..deployment
    }
}

/// The bindings every deployment gets, plus the request's own env vars.
pub fn plain_bindings(config: &DeployConfig, deployment: &Deployment) -> BTreeMap<String, String> {
    let mut bindings = deployment.env.clone();
    for (name, value) in [
        ("TELEMETRY_REPORT_URL", config.telemetry_report_url.clone()),
        ("USER_ID", deployment.user_id.to_string()),
        ("AGENT_ID", deployment.agent_id.to_string()),
        ("DEPLOYMENT_ID", deployment.id.to_string()),
        ("RUNTIME_PROVIDER", deployment.runtime_provider.clone()),
        ("INVOKE_PATH", deployment.invoke_path.clone()),
    ] {
        bindings.insert(name.into(), value);
    }
    bindings
}

/// Tags on every script, so clean-up can find scripts by user, agent or deployment.
pub fn tags_for(deployment: &Deployment) -> Vec<String> {
    vec![
        format!("user-{}", deployment.user_id),
        format!("agent-{}", deployment.agent_id),
        format!("deployment-{}", deployment.id),
    ]
}

/// Runs a pending deploy to completion on its runtime. Every provider failure ends in the deployment's row
/// (`failed`, with the step and the provider's message); only a storage failure is returned as an error.
pub async fn run_deploy<S: DeploymentStore, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    runtime: &impl RuntimeProvider,
    clock: &C,
    pending: &PendingDeploy,
) -> Result<DeploymentStatus, ApiError> {
    let d = &pending.deployment;
    let outcome = runtime
        .deploy(
            d,
            &pending.workload,
            &pending.telemetry_secret,
            &pending.gateway_secret,
        )
        .await;
    Ok(finish(store, gate, runtime, clock, d, outcome)
        .await?
        .unwrap_or(DeploymentStatus::Deploying))
}

/// Ends a deploy as its runtime says: `active` or `inactive` (a newer deployment holds the pointer) with the gate
/// told before and after, so the next call routes to it; `failed` with what it left on the provider removed (best
/// effort). `None` while it is pending, and when another follower finished it first — only the one that changed
/// the row acts on it (removes, reports), so two followers never undo each other.
pub(super) async fn finish<S: DeploymentStore>(
    store: &S,
    gate: &impl GateNotifier,
    runtime: &impl RuntimeProvider,
    clock: &impl Clock,
    d: &Deployment,
    outcome: Result<Deployed, DeploymentError>,
) -> Result<Option<DeploymentStatus>, ApiError> {
    let now = clock.now_ms();
    match outcome {
        Ok(Deployed::Pending) => Ok(None),
        Ok(Deployed::Serving(provider_ref)) => {
            // Whoever polls this deployment may invoke the moment D1 says `active`, before any notification
            // after the write could arrive: the gate reads the route from D1 from before the write until after.
            let agent = d.agent_id.as_str();
            let held = retried(|| gate.hold(&d.user_id, agent)).await;
            let finished = store.finish_success(d, &provider_ref, now).await?;
            let told = retried(|| gate.forget(&d.user_id, Forget::Agent(agent.to_owned())))
                .await
                .and(held);
            // Another follower finished it: its report and its telling the gate are that follower's.
            if !finished {
                return Ok(None);
            }
            told.map_err(gate_not_told)?;
            // As stored: `inactive` when a newer deployment already holds the pointer.
            let stored = store.deployment(&d.user_id, &d.agent_id, &d.id).await?;
            Ok(Some(stored.map_or(DeploymentStatus::Active, |s| s.status)))
        }
        Err(error) => {
            if !store.finish_failure(&d.id, &error, now).await? {
                return Ok(None);
            }
            // Best effort, as stored (a deploy may record where it runs before it serves): the clean-up job
            // removes what this leaves behind.
            let stored = store.deployment(&d.user_id, &d.agent_id, &d.id).await;
            let provider_ref = stored.ok().flatten().and_then(|s| s.provider_ref);
            let _ = runtime
                .remove(&LeftBehind {
                    id: d.id.clone(),
                    agent_id: d.agent_id.clone(),
                    runtime_provider: d.runtime_provider.clone(),
                    script_name: d.script_name.clone(),
                    provider_ref,
                    ended_at: Some(now),
                })
                .await;
            Ok(Some(DeploymentStatus::Failed))
        }
    }
}

/// Cloudflare Workers as a runtime provider: a deployment is a script (the gateway guard in front of the agent's
/// modules), uploaded with its bindings in one call and live once its URL answers.
pub struct CloudflareRuntime<'a, S, P, W, C> {
    pub store: &'a S,
    pub provider: &'a P,
    pub sleeper: &'a W,
    pub clock: &'a C,
    pub config: &'a DeployConfig,
}

impl<S: DeploymentStore, P: ProviderApi, W: Sleeper, C: Clock> RuntimeProvider
    for CloudflareRuntime<'_, S, P, W, C>
{
    async fn deploy(
        &self,
        d: &Deployment,
        workload: &Workload,
        telemetry_secret: &str,
        gateway_secret: &str,
    ) -> Result<Deployed, DeploymentError> {
        let Workload::Code(spec) = workload else {
            return Err(DeploymentError::platform(
                "upload",
                "validation",
                "A Cloudflare deployment runs code, not a container image.",
            ));
        };
        deploy_steps(
            self.store,
            self.provider,
            self.sleeper,
            self.clock,
            self.config,
            d,
            spec,
            telemetry_secret,
            gateway_secret,
        )
        .await?;
        Ok(Deployed::Serving(self.config.provider_ref(&d.script_name)))
    }

    /// A Cloudflare deploy finishes in its own request's background work; one stuck there is failed by the
    /// clean-up job's timeout.
    async fn follow(&self, _d: &Deployment) -> Result<Deployed, DeploymentError> {
        Ok(Deployed::Pending)
    }

    async fn remove(&self, d: &LeftBehind) -> Result<(), ApiError> {
        delete_script(
            self.store,
            self.provider,
            self.config,
            &d.id,
            &d.script_name,
            self.clock.now_ms(),
        )
        .await
    }
}

/// The agent's secrets, opened, without any of the platform's own names; then the platform's secrets, which win.
pub(super) async fn agent_secrets<S: DeploymentStore>(
    store: &S,
    config: &DeployConfig,
    d: &Deployment,
    telemetry_secret: &str,
) -> Result<Vec<(String, String)>, DeploymentError> {
    let sealed = store.secrets(&d.user_id, &d.agent_id).await.map_err(|e| {
        DeploymentError::platform(
            "secrets",
            "internal",
            format!("could not read the agent's secrets: {}", e.0),
        )
    })?;
    let mut secrets = Vec::new();
    for s in sealed {
        let value = open_secret(
            &config.encryption_key,
            &secret_aad(&d.user_id, &d.agent_id, &s.name),
            &s.value_sealed,
        )
        .map_err(|_| {
            DeploymentError::platform(
                "secrets",
                "internal",
                format!("secret {} could not be decrypted; set it again", s.name),
            )
        })?;
        // Never one of the platform's own (refused when set; skipped here too, for rows from before that).
        if !RESERVED_BINDINGS.contains(&s.name.as_str()) {
            secrets.push((s.name, value));
        }
    }
    // The platform's secrets last: whatever came before, these are the values the agent gets.
    secrets.push(("TELEMETRY_SECRET".to_string(), telemetry_secret.to_owned()));
    Ok(secrets)
}

#[allow(clippy::too_many_arguments)]
async fn deploy_steps<S: DeploymentStore, P: ProviderApi>(
    store: &S,
    provider: &P,
    sleeper: &impl Sleeper,
    clock: &impl Clock,
    config: &DeployConfig,
    d: &Deployment,
    spec: &DeploySpec,
    telemetry_secret: &str,
    gateway_secret: &str,
) -> Result<(), DeploymentError> {
    let mut secrets = agent_secrets(store, config, d, telemetry_secret).await?;
    secrets.push((
        gateway_credential::SECRET_BINDING.to_string(),
        gateway_secret.to_owned(),
    ));
    // The guard is the entry point: nothing of the agent runs for a call without the gateway's credential.
    // Secrets travel in the upload itself as `secret_text` bindings: one atomic upload makes one version with
    // everything (Cloudflare promises a new dispatch script is live when its first upload answers, not the
    // versions later PUTs would make), and a deploy costs the same few API calls whatever the number of secrets.
    // A secret wins over a plain variable of the same name (Cloudflare refuses duplicate binding names).
    let mut bindings: Vec<Binding> = plain_bindings(config, d)
        .into_iter()
        .filter(|(name, _)| !secrets.iter().any(|(secret, _)| secret == name))
        .map(|(name, text)| Binding::PlainText { name, text })
        .collect();
    bindings.extend(
        secrets
            .into_iter()
            .map(|(name, text)| Binding::SecretText { name, text }),
    );
    let metadata = ScriptMetadata {
        main_module: GUARD_MODULE_NAME.into(),
        compatibility_date: spec.compatibility_date.clone(),
        compatibility_flags: spec.compatibility_flags.clone(),
        bindings,
        tags: tags_for(d),
    };
    let module = Module {
        name: spec.main_module_name.clone(),
        content_type: JS_MODULE,
        bytes: spec.module_code.clone().into_bytes(),
    };
    let boundary = format!("webhost-{}", random_hex(12));
    let target = &config.target;
    let step = |e: ProviderError| error_from_provider(&e, config);
    let mut waited_ms = 0;
    // Shown on the deployment while it waits; a failed count is no reason to give up the deploy.
    let count = || async {
        let _ = store.record_retry(&d.id).await;
    };
    let mut modules = vec![guard_module(&spec.main_module_name), module];
    modules.extend(spec.extra_modules.iter().map(|m| Module {
        name: m.name.clone(),
        content_type: m.kind.upload_content_type(),
        bytes: m.cloudflare_body(),
    }));
    let upload = target.upload(&d.script_name, &metadata, &modules, &boundary);
    call_retrying(provider, sleeper, &upload, &mut waited_ms, count)
        .await
        .map_err(step)?;
    if let Some(subdomain) = target.enable_subdomain(&d.script_name) {
        call_retrying(provider, sleeper, &subdomain, &mut waited_ms, count)
            .await
            .map_err(step)?;
        // Live means live: the upload's 200 says the script exists, not that its workers.dev URL answers yet.
        let url = config.provider_ref(&d.script_name);
        wait_until_live(provider, sleeper, clock, &url, &mut waited_ms).await?;
    }
    Ok(())
}

const FIRST_PROBE_WAIT_MS: u64 = 100;
const MAX_PROBE_WAIT_MS: u64 = 2_000;

/// Probes the deployment's URL (no credential: its guard's refusal proves the script answers there) until it
/// answers, with a doubling wait. The wait shares the deploy's budget with the provider retries before it
/// (`MAX_RETRY_WAIT_MS`, time spent probing included), so the whole deploy stays inside the runtime's allowance
/// for background work.
async fn wait_until_live(
    provider: &impl ProviderApi,
    sleeper: &impl Sleeper,
    clock: &impl Clock,
    url: &str,
    waited_ms: &mut u64,
) -> Result<(), DeploymentError> {
    let mut wait = FIRST_PROBE_WAIT_MS;
    loop {
        let before = clock.now_ms();
        let probed = provider.probe(url).await;
        *waited_ms += (clock.now_ms() - before).max(0) as u64;
        let last = match probed {
            Ok((status, body)) if gateway_credential::is_guard_refusal(status, &body) => {
                return Ok(())
            }
            // Cloudflare refuses a Worker's fetch to another Worker on the same zone: waiting cannot help.
            Ok((_, body)) if body.contains("error code: 1042") => {
                return Err(DeploymentError::platform(
                    Step::Live.as_str(),
                    "same_zone",
                    "The control plane may not fetch the agent's workers.dev URL (Cloudflare error 1042: a \
                     Worker fetching another on the same zone). Serve the control plane from a custom domain, \
                     or add global_fetch_strictly_public to its compatibility_flags (README › Deploying to \
                     Cloudflare).",
                ))
            }
            Ok((status, _)) => format!("HTTP {status}"),
            Err(cause) => cause,
        };
        if *waited_ms + wait > MAX_RETRY_WAIT_MS {
            return Err(DeploymentError::platform(
                Step::Live.as_str(),
                "not_live",
                format!(
                    "The script was uploaded but its workers.dev URL did not answer within the deploy's {} s \
                     (last: {last}).",
                    MAX_RETRY_WAIT_MS / 1000
                ),
            ));
        }
        sleeper.sleep(wait).await;
        *waited_ms += wait;
        wait = (wait * 2).min(MAX_PROBE_WAIT_MS);
    }
}

pub async fn get_deployment<S: Store + DeploymentStore>(
    store: &S,
    owner: &User,
    raw_agent_id: &str,
    raw_deployment_id: &str,
) -> Result<Deployment, ApiError> {
    let agent = get_agent(store, owner, raw_agent_id).await?;
    let id = parse_deployment_id(raw_deployment_id)?;
    store
        .deployment(&owner.id, &agent.id, &id)
        .await?
        .ok_or_else(deployment_not_found)
}

pub async fn list_deployments<S: Store + DeploymentStore>(
    store: &S,
    owner: &User,
    raw_agent_id: &str,
    query: &BTreeMap<String, String>,
) -> Result<Vec<Deployment>, ApiError> {
    let agent = get_agent(store, owner, raw_agent_id).await?;
    let invalid = |p: &str, m: &str| {
        ApiError::new(ErrorCode::InvalidQuery, m.to_string())
            .with_details(serde_json::json!({ "parameter": p }))
    };
    let limit = match query.get("limit") {
        None => 50,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| invalid("limit", "limit must be a whole number from 1 to 200."))?,
    };
    let status = query
        .get("status")
        .map(|s| {
            DeploymentStatus::parse(s).ok_or_else(|| {
                invalid(
                    "status",
                    "status must be deploying, active, failed or inactive.",
                )
            })
        })
        .transpose()?;
    // Seed 001: inactive deployments are listed unless asked not to be.
    let include_inactive = match query.get("includeInactive").map(String::as_str) {
        Some("false") => false,
        None | Some("true") => true,
        Some(_) => {
            return Err(invalid(
                "includeInactive",
                "includeInactive must be true or false.",
            ))
        }
    };
    Ok(store
        .list_deployments(&owner.id, &agent.id, status, include_inactive, limit)
        .await?)
}

/// `POST …/deployments/{id}/activate`: instant rollback (or roll-forward) to a deployment that deployed
/// successfully. A deployment whose script the clean-up job removed is first uploaded again from its artifact
/// (`restore`), so any deployment with stored code can be rolled back to. Returns the deployment and the one the
/// pointer moved from.
/// `uploader` is `None` on a control plane that cannot deploy: only deployments whose scripts exist activate.
pub async fn activate_deployment<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    clock: &C,
    uploader: Option<&restore::Uploader<'_, impl ArtifactStore, impl ProviderApi, impl Sleeper>>,
    owner: &User,
    raw_agent_id: &str,
    raw_deployment_id: &str,
) -> Result<(Deployment, Option<String>), ApiError> {
    let deployment = get_deployment(store, owner, raw_agent_id, raw_deployment_id).await?;
    let not_activatable = |why: &str| {
        ApiError::new(ErrorCode::DeploymentNotActivatable, why.to_string())
            .with_details(serde_json::json!({ "status": deployment.status }))
    };
    if !deployment.status.deployed_successfully() {
        return Err(not_activatable(
            "Only a deployment that deployed successfully can be activated.",
        ));
    }
    let (owner_id, agent_id, id) = (&owner.id, &deployment.agent_id, &deployment.id);
    let mut activation = store
        .activate(owner_id, agent_id, id, clock.now_ms(), false)
        .await?;
    if activation == Activation::NotMoved {
        if let Some(removed) = store.removed_script(owner_id, id).await? {
            let uploader = uploader.ok_or_else(deploys_not_configured)?;
            restore::upload_again(store, uploader, clock, &deployment, &removed).await?;
            activation = store
                .activate(owner_id, agent_id, id, clock.now_ms(), true)
                .await?;
        }
    }
    let Activation::Moved { previous } = activation else {
        // The agent was deleted, or the deployment's script removed, while this request ran.
        return Err(not_activatable(
            "This deployment can no longer be activated (its agent or its script went while it was being \
             activated).",
        ));
    };
    // A rollback is visible to the very next invocation, from any isolate: they all ask this gate.
    tell(
        gate,
        &owner.id,
        Forget::Agent(deployment.agent_id.as_str().to_owned()),
    )
    .await?;
    let now = get_deployment(store, owner, raw_agent_id, raw_deployment_id).await?;
    Ok((now, previous))
}

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod retry_tests;
