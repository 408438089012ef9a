//! Deploy orchestration: accept a deploy (an immutable `deploying` row, answered at once), run it against the
//! provider (upload, secrets, workers.dev route), and finish it `active` or `failed`. Also rollback and reads.

use super::agents::get_agent;
use super::gate::protocol::Forget;
use super::ports::{
    gate_not_told, tell, Clock, DeployCounts, DeployLimits, DeploymentStore, GateNotifier,
    Inserted, NewDeployment, ProviderApi, Sleeper, Store, UnneededScript,
};
use super::secrets::{open_secret, secret_aad};
use crate::cloudflare::api::{ApiRequest, Binding, Module, ScriptMetadata, JS_MODULE};
use crate::cloudflare::envelope::{FailureKind, ProviderError};
use crate::config::DeployConfig;
use crate::crypto::sha256_hex;
use crate::domain::agent::AgentStatus;
use crate::domain::deployment::{
    parse_idempotency_key, script_name_for, DeployRequest, DeploySpec, Deployment, DeploymentError,
    DeploymentStatus,
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
pub const TEMPLATE_MODULE: &str = include_str!("../../worker-template/index.js");
/// A deployment still `deploying` after this long is marked failed by the clean-up job.
pub const DEPLOY_TIMEOUT_MS: i64 = 10 * 60 * 1000;
/// Inactive deployments kept on the provider per agent for instant rollback; older scripts are deleted.
pub const KEEP_INACTIVE_FOR_ROLLBACK: u32 = 3;
pub const RUNTIME_PROVIDER: &str = "cloudflare";

/// Everything the background part of a deploy needs; only the request that created the row holds it.
pub struct PendingDeploy {
    pub deployment: Deployment,
    pub spec: DeploySpec,
    pub telemetry_secret: String,
    pub gateway_secret: String,
}

/// The guard deployed as every agent's main module, in front of its own code (`domain::gateway_credential`).
pub const GUARD_MODULE: &str = include_str!("../../worker-template/gateway_guard.js");
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
    idempotency_key: Option<&str>,
) -> Result<(Deployment, Option<PendingDeploy>), ApiError> {
    // A runtime the plan lacks is the entitlement's refusal, whatever this control plane can deploy.
    let provider = request.runtime_provider()?;
    entitlements.require_runtime(provider)?;
    if provider != RUNTIME_PROVIDER {
        return Err(ApiError::validation(
            "runtimeProvider",
            "only cloudflare deploys are available on this control plane",
        ));
    }
    let idempotency_key = parse_idempotency_key(idempotency_key)?;
    let agent = get_agent(store, owner, raw_agent_id).await?;
    let spec = request.validate(TEMPLATE_MODULE, &config.default_compatibility_date)?;
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
    if let Some(clash) = spec.env.keys().find(|name| secret_names.contains(name)) {
        return Err(ApiError::validation(
            &format!("env.{clash}"),
            "has the same name as one of the agent's secrets",
        ));
    }

    let id = DeploymentId::generate();
    let now = clock.now_ms();
    // Seed 001's contract: the agent gets base64url of 32 random bytes and signs with those bytes; the platform
    // keeps the bytes (sealed) and verifies with them.
    let telemetry_key = random_bytes::<32>();
    let telemetry_secret = URL_SAFE_NO_PAD.encode(telemetry_key);
    let gateway_secret = random_hex(32);
    let deployment = Deployment {
        script_name: script_name_for(&id),
        id: id.clone(),
        agent_id: agent.id.clone(),
        user_id: owner.id.clone(),
        version: 0, // assigned by the store
        status: DeploymentStatus::Deploying,
        runtime_provider: RUNTIME_PROVIDER.into(),
        deploy_target: config.target_name.into(),
        main_module_name: spec.main_module_name.clone(),
        compatibility_date: spec.compatibility_date.clone(),
        invoke_path: spec.invoke_path.clone(),
        source: spec.source.into(),
        code_sha256: sha256_hex(spec.module_code.as_bytes()),
        env: spec.env.clone(),
        provider_ref: None,
        error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
        retries: 0,
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
        limits: DeployLimits {
            in_flight: entitlements.deploys_in_flight,
            per_hour: entitlements.deploys_per_hour,
            live_scripts: entitlements.live_scripts,
        },
        deployment,
    };
    match store.insert_deployment(&new).await? {
        Inserted::New(deployment) => Ok((
            deployment.clone(),
            Some(PendingDeploy {
                deployment,
                spec,
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
        Inserted::LimitReached => {
            let counts = store.deploy_counts(&owner.id, now).await?;
            Err(deploy_limit_error(&new.limits, &counts, now))
        }
    }
}

/// Which deploy limit a refused deploy hit, and when trying again can help. Checked before any Cloudflare API
/// call: one tenant's deploys cannot spend the platform's API rate limit or script quota for everyone.
pub fn deploy_limit_error(limits: &DeployLimits, counts: &DeployCounts, now: i64) -> ApiError {
    let refuse = |entitlement: &str, limit: u64, current: u64, message: String| {
        ApiError::new(ErrorCode::DeployLimitReached, message).with_details(
            serde_json::json!({ "entitlement": entitlement, "limit": limit, "current": current }),
        )
    };
    let retry_after = |s: i64| vec![("Retry-After", s.max(1).to_string())];
    if counts.in_flight >= limits.in_flight {
        refuse(
            "deploysInFlight",
            limits.in_flight,
            counts.in_flight,
            format!(
                "{} of your deploys are still running; start another when one has finished.",
                counts.in_flight
            ),
        )
        .with_headers(retry_after(5))
    } else if counts.last_hour >= limits.per_hour {
        let wait_s = (counts.oldest_in_hour.map_or(now, |t| t + 3_600_000) - now).max(0) / 1000 + 1;
        refuse(
            "deploysPerHour",
            limits.per_hour,
            counts.last_hour,
            format!(
                "Your plan allows {} deploys an hour; the next one can start in {wait_s} s.",
                limits.per_hour
            ),
        )
        .with_headers(retry_after(wait_s))
    } else {
        let mut err = refuse(
            "liveScripts",
            limits.live_scripts,
            counts.live_scripts,
            format!(
                "You have {} deployed scripts, your plan's limit; delete agents you no longer need (their scripts go with them).",
                counts.live_scripts
            ),
        );
        // Waiting does not help: something has to be deleted.
        err.retryable_override = Some(false);
        err
    }
}

/// What a deploy's failure shows its owner: the step, the class, the provider's codes and message, and the
/// endpoint with the platform's account id taken out (it is the platform's, not the user's).
fn error_from_provider(e: &ProviderError, config: &DeployConfig) -> DeploymentError {
    let account = config.target.account_id();
    let redact = |text: &str| {
        if account.is_empty() {
            text.to_owned()
        } else {
            text.replace(account, "{account}")
        }
    };
    DeploymentError {
        step: e.step.as_str().into(),
        endpoint: Some(redact(&e.endpoint)),
        kind: serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        status: e.status,
        provider_codes: e.codes.clone(),
        message: redact(&e.message),
    }
}

/// How a deploy waits out a busy provider (seed 000 §5.2): a transient failure (429, 5xx, no answer) is tried
/// again after a backoff — or what `Retry-After` asks, if longer — while the total wait stays within
/// `MAX_RETRY_WAIT_MS`. A deploy runs after its answer (`waitUntil`), so the bound keeps it inside the runtime's
/// allowance for background work.
pub const MAX_RETRY_WAIT_MS: u64 = 20_000;
const FIRST_BACKOFF_MS: u64 = 500;
const MAX_ATTEMPTS: u32 = 6;

/// The wait before retry `n` (1-based): doubling from `FIRST_BACKOFF_MS`, at least what the provider asked for.
pub fn retry_wait_ms(n: u32, retry_after_s: Option<u64>) -> u64 {
    let backoff = FIRST_BACKOFF_MS.saturating_mul(1 << (n.saturating_sub(1)).min(10));
    backoff.max(retry_after_s.unwrap_or(0).saturating_mul(1000))
}

/// One provider call, retried while the failure is transient and the wait budget allows. `on_retry` runs before
/// each wait (the deployment shows its attempts).
async fn call_retrying<F: std::future::Future<Output = ()>>(
    provider: &impl ProviderApi,
    sleeper: &impl Sleeper,
    request: &ApiRequest,
    waited_ms: &mut u64,
    mut on_retry: impl FnMut() -> F,
) -> Result<serde_json::Value, ProviderError> {
    let mut attempt = 1;
    loop {
        match provider.call(request).await {
            Err(e) if e.kind.retryable() && attempt < MAX_ATTEMPTS => {
                let wait = retry_wait_ms(attempt, e.retry_after_s);
                if *waited_ms + wait > MAX_RETRY_WAIT_MS {
                    return Err(e);
                }
                on_retry().await;
                sleeper.sleep(wait).await;
                *waited_ms += wait;
                attempt += 1;
            }
            outcome => return outcome,
        }
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

/// A notification of the gate, tried up to three times: a deploy runs in the background, with nobody to repeat
/// it. What still fails is reported (and the gate catches up within its hold or its copies' lifetime).
async fn retried<F: std::future::Future<Output = Result<(), String>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<(), String> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = attempt().await;
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Runs a pending deploy to completion. Every provider failure ends in the deployment's row (`failed`, with the
/// step and the provider's message); only a storage failure is returned as an error.
pub async fn run_deploy<S: DeploymentStore, P: ProviderApi, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    provider: &P,
    sleeper: &impl Sleeper,
    clock: &C,
    config: &DeployConfig,
    pending: PendingDeploy,
) -> Result<DeploymentStatus, ApiError> {
    let d = &pending.deployment;
    let outcome = deploy_steps(store, provider, sleeper, config, &pending).await;
    let now = clock.now_ms();
    match outcome {
        Ok(()) => {
            // Whoever polls this deployment may invoke the moment D1 says `active`, before any notification
            // after the write could arrive: the gate reads the route from D1 from before the write until after.
            let agent = d.agent_id.as_str();
            let held = retried(|| gate.hold(&d.user_id, agent)).await;
            store
                .finish_success(d, &config.provider_ref(&d.script_name), now)
                .await?;
            retried(|| gate.forget(&d.user_id, Forget::Agent(agent.to_owned())))
                .await
                .and(held)
                .map_err(gate_not_told)?;
            Ok(DeploymentStatus::Active)
        }
        Err(error) => {
            store.finish_failure(&d.id, &error, now).await?;
            // Best effort: the clean-up job deletes what this leaves behind.
            let _ = delete_script(store, provider, config, &d.id, &d.script_name, now).await;
            Ok(DeploymentStatus::Failed)
        }
    }
}

async fn deploy_steps<S: DeploymentStore, P: ProviderApi>(
    store: &S,
    provider: &P,
    sleeper: &impl Sleeper,
    config: &DeployConfig,
    pending: &PendingDeploy,
) -> Result<(), DeploymentError> {
    let d = &pending.deployment;
    let sealed = store.secrets(&d.user_id, &d.agent_id).await.map_err(|e| {
        DeploymentError::platform(
            "secrets",
            "internal",
            format!("could not read the agent's secrets: {}", e.0),
        )
    })?;
    let mut secrets = vec![
        (
            "TELEMETRY_SECRET".to_string(),
            pending.telemetry_secret.clone(),
        ),
        (
            gateway_credential::SECRET_BINDING.to_string(),
            pending.gateway_secret.clone(),
        ),
    ];
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
        secrets.push((s.name, value));
    }
    // The guard is the entry point: nothing of the agent runs for a call without the gateway's credential.
    let metadata = ScriptMetadata {
        main_module: GUARD_MODULE_NAME.into(),
        compatibility_date: pending.spec.compatibility_date.clone(),
        compatibility_flags: Vec::new(),
        bindings: plain_bindings(config, d)
            .into_iter()
            .map(|(name, text)| Binding::PlainText { name, text })
            .collect(),
        tags: tags_for(d),
    };
    let module = Module {
        name: pending.spec.main_module_name.clone(),
        content_type: JS_MODULE,
        bytes: pending.spec.module_code.clone().into_bytes(),
    };
    let boundary = format!("webhost-{}", random_hex(12));
    let target = &config.target;
    let step = |e: ProviderError| error_from_provider(&e, config);
    let mut waited_ms = 0;
    // Shown on the deployment while it waits; a failed count is no reason to give up the deploy.
    let count = || async {
        let _ = store.record_retry(&d.id).await;
    };
    let upload = target.upload(
        &d.script_name,
        &metadata,
        &[guard_module(&pending.spec.main_module_name), module],
        &boundary,
    );
    call_retrying(provider, sleeper, &upload, &mut waited_ms, count)
        .await
        .map_err(step)?;
    for (name, value) in &secrets {
        let put = target.put_secret(&d.script_name, name, value);
        call_retrying(provider, sleeper, &put, &mut waited_ms, count)
            .await
            .map_err(step)?;
    }
    if let Some(subdomain) = target.enable_subdomain(&d.script_name) {
        call_retrying(provider, sleeper, &subdomain, &mut waited_ms, count)
            .await
            .map_err(step)?;
    }
    Ok(())
}

/// Deletes one deployment's script (a missing script counts as deleted) and records it. A provider refusal and a
/// storage failure are both reported as what they are; the caller retries on the next clean-up.
async fn delete_script<S: DeploymentStore, P: ProviderApi>(
    store: &S,
    provider: &P,
    config: &DeployConfig,
    id: &DeploymentId,
    script: &str,
    now: i64,
) -> Result<(), ApiError> {
    let request = config
        .target
        .delete_by_tag(&format!("deployment-{id}"))
        .unwrap_or_else(|| config.target.delete(script));
    match provider.call(&request).await {
        Ok(_) => {}
        Err(e) if e.kind == FailureKind::NotFound => {}
        Err(e) => return Err(ApiError::internal(e)),
    }
    Ok(store.mark_script_deleted(id, now).await?)
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
/// successfully and whose script still exists.
pub async fn activate_deployment<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    clock: &C,
    owner: &User,
    raw_agent_id: &str,
    raw_deployment_id: &str,
) -> Result<Deployment, ApiError> {
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
    if !store
        .activate(
            &owner.id,
            &deployment.agent_id,
            &deployment.id,
            clock.now_ms(),
        )
        .await?
    {
        return Err(not_activatable(
            "This deployment's script has been cleaned up; deploy again instead.",
        ));
    }
    // A rollback is visible to the very next invocation, from any isolate: they all ask this gate.
    tell(
        gate,
        &owner.id,
        Forget::Agent(deployment.agent_id.as_str().to_owned()),
    )
    .await?;
    get_deployment(store, owner, raw_agent_id, raw_deployment_id).await
}

/// The scheduled clean-up: fail stuck deploys, then delete scripts nobody needs. Returns (failed, deleted).
pub async fn clean_up<S: DeploymentStore, P: ProviderApi, C: Clock>(
    store: &S,
    provider: &P,
    clock: &C,
    config: &DeployConfig,
) -> Result<(u32, u32), ApiError> {
    let now = clock.now_ms();
    let timeout = DeploymentError::platform(
        "timeout",
        "timeout",
        format!(
            "the deploy did not finish within {} minutes",
            DEPLOY_TIMEOUT_MS / 60_000
        ),
    );
    let failed = store
        .fail_stuck_deployments(now - DEPLOY_TIMEOUT_MS, &timeout, now)
        .await?;
    let mut deleted = 0;
    for UnneededScript {
        deployment_id,
        script_name,
    } in store
        .unneeded_scripts(KEEP_INACTIVE_FOR_ROLLBACK, 50)
        .await?
    {
        if delete_script(store, provider, config, &deployment_id, &script_name, now)
            .await
            .is_ok()
        {
            deleted += 1;
        }
    }
    Ok((failed, deleted))
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use crate::cloudflare::api::{DeployTarget, Step};
    use pollster::block_on;
    use std::cell::{Cell, RefCell};

    /// Answers with the scripted failures first, then succeeds.
    struct Busy {
        failures: RefCell<Vec<ProviderError>>,
        calls: Cell<u32>,
    }

    impl ProviderApi for Busy {
        async fn call(&self, _: &ApiRequest) -> Result<serde_json::Value, ProviderError> {
            self.calls.set(self.calls.get() + 1);
            let mut failures = self.failures.borrow_mut();
            if failures.is_empty() {
                Ok(serde_json::json!({}))
            } else {
                Err(failures.remove(0))
            }
        }
    }

    #[derive(Default)]
    struct Waits(RefCell<Vec<u64>>);

    impl Sleeper for Waits {
        async fn sleep(&self, ms: u64) {
            self.0.borrow_mut().push(ms);
        }
    }

    fn failure(kind: FailureKind, status: u16, retry_after_s: Option<u64>) -> ProviderError {
        ProviderError {
            kind,
            step: Step::Upload,
            endpoint: "PUT /accounts/acc-123/workers/scripts/x".into(),
            status: Some(status),
            codes: vec![],
            message: "busy".into(),
            retry_after_s,
        }
    }

    fn run(
        failures: Vec<ProviderError>,
    ) -> (Result<serde_json::Value, ProviderError>, u32, Vec<u64>, u32) {
        let provider = Busy {
            failures: RefCell::new(failures),
            calls: Cell::new(0),
        };
        let (waits, retries) = (Waits::default(), Cell::new(0));
        let request = DeployTarget::WorkersDev {
            account_id: "acc-123".into(),
        }
        .put_secret("x", "N", "v");
        let mut waited = 0;
        let outcome = block_on(call_retrying(
            &provider,
            &waits,
            &request,
            &mut waited,
            || {
                retries.set(retries.get() + 1);
                async {}
            },
        ));
        (
            outcome,
            provider.calls.get(),
            waits.0.into_inner(),
            retries.get(),
        )
    }

    #[test]
    fn transient_failures_are_retried_with_backoff_honouring_retry_after() {
        let (outcome, calls, waits, retries) = run(vec![
            failure(FailureKind::RateLimited, 429, Some(3)),
            failure(FailureKind::Upstream, 503, None),
            failure(FailureKind::Network, 0, None),
        ]);
        assert!(outcome.is_ok());
        assert_eq!(calls, 4);
        assert_eq!(
            waits,
            vec![3_000, 1_000, 2_000],
            "Retry-After when longer, else doubling from 500 ms"
        );
        assert_eq!(retries, 3, "each retry is shown on the deployment");
    }

    #[test]
    fn what_retrying_cannot_fix_fails_at_once_and_waiting_is_bounded() {
        let (outcome, calls, waits, _) = run(vec![failure(FailureKind::Validation, 400, None)]);
        assert_eq!(outcome.unwrap_err().kind, FailureKind::Validation);
        assert_eq!((calls, waits.len()), (1, 0));
        // A provider that keeps asking for 15 s: the second wait would pass the budget, so the deploy gives up.
        let (outcome, calls, waits, _) =
            run(vec![failure(FailureKind::RateLimited, 429, Some(15)); 5]);
        assert_eq!(outcome.unwrap_err().kind, FailureKind::RateLimited);
        assert_eq!((calls, waits), (2, vec![15_000]));
        // Never more than MAX_ATTEMPTS calls.
        let (_, calls, _, _) = run(vec![failure(FailureKind::Upstream, 502, None); 10]);
        assert_eq!(calls, MAX_ATTEMPTS);
    }

    #[test]
    fn errors_shown_to_users_never_carry_the_platform_account() {
        let config = DeployConfig::from_vars(|name| {
            match name {
                "DEPLOY_TARGET" => Some("workers_dev"),
                "CLOUDFLARE_ACCOUNT_ID" => Some("acc-123"),
                "CLOUDFLARE_API_TOKEN" => Some("t"),
                "WORKERS_DEV_URL_TEMPLATE" => Some("https://{script}.x.workers.dev"),
                "TELEMETRY_REPORT_URL" => Some("https://cp/v1/telemetry/report"),
                "TELEMETRY_SECRETS_ENCRYPTION_KEY" => {
                    Some("hex:1111111111111111111111111111111111111111111111111111111111111111")
                }
                _ => None,
            }
            .map(String::from)
        })
        .unwrap()
        .unwrap();
        let mut e = failure(FailureKind::Auth, 403, None);
        e.message = "Authentication error: token has no access to account acc-123".into();
        let shown = error_from_provider(&e, &config);
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("acc-123"), "{text}");
        assert_eq!(
            shown.endpoint.as_deref(),
            Some("PUT /accounts/{account}/workers/scripts/x")
        );
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;
    const LIMITS: DeployLimits = DeployLimits {
        in_flight: 2,
        per_hour: 30,
        live_scripts: 20,
    };

    fn counts(in_flight: u64, last_hour: u64, live_scripts: u64) -> DeployCounts {
        DeployCounts {
            in_flight,
            last_hour,
            oldest_in_hour: Some(NOW - 3_590_000),
            live_scripts,
        }
    }

    fn said(err: &ApiError) -> (&str, Option<&str>) {
        let entitlement = err.details.as_ref().unwrap()["entitlement"]
            .as_str()
            .unwrap();
        let retry = err
            .headers
            .iter()
            .find(|(n, _)| *n == "Retry-After")
            .map(|(_, v)| v.as_str());
        (entitlement, retry)
    }

    #[test]
    fn a_refused_deploy_says_which_limit_and_when_to_try_again() {
        let busy = deploy_limit_error(&LIMITS, &counts(2, 5, 3), NOW);
        assert_eq!(
            (busy.code, busy.status()),
            (ErrorCode::DeployLimitReached, 429)
        );
        assert_eq!(said(&busy), ("deploysInFlight", Some("5")));
        // The hour's oldest deploy leaves the window in 10 s.
        let hourly = deploy_limit_error(&LIMITS, &counts(0, 30, 3), NOW);
        assert_eq!(said(&hourly), ("deploysPerHour", Some("11")));
        assert!(hourly.code.retryable());
        let full = deploy_limit_error(&LIMITS, &counts(0, 3, 20), NOW);
        assert_eq!(said(&full), ("liveScripts", None));
        assert_eq!(
            full.retryable_override,
            Some(false),
            "waiting does not free a script"
        );
    }
}
