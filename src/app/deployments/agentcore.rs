//! Deploying to the second runtime, Amazon Bedrock AgentCore. One agent is one AgentCore runtime; a deployment is
//! one immutable version of it (CreateAgentRuntime for the agent's first, UpdateAgentRuntime after) with an endpoint
//! of its own pinned to that version, so rollback moves only the platform's pointer, as with Cloudflare. The
//! version's environment carries the platform's settings, the agent's variables and its secrets (AgentCore has no
//! other way to hand a container a value); the deploy follows the version and the endpoint until they are READY, or
//! fails with AgentCore's reason.

use super::*;
use crate::aws::agentcore::{
    self as api, client_token, endpoint_name_for, endpoint_state, runtime_name_for, runtime_state,
    AgentCoreTarget, AwsCall, AwsFailure, RuntimeSpec, RuntimeVersion, Status,
    MAX_ENVIRONMENT_VALUE, MAX_ENVIRONMENT_VARIABLES,
};

pub const RUNTIME_PROVIDER: &str = "agentcore";
/// The settings the platform gives every deployment (`plain_bindings`) and its telemetry secret.
const PLATFORM_VARIABLES: usize = 7;

const FIRST_POLL_WAIT_MS: u64 = 100;
const MAX_POLL_WAIT_MS: u64 = 2_000;

/// Refuses a deploy whose environment AgentCore would refuse: at most 50 variables (the request's, the agent's
/// secrets and the platform's) — before anything is recorded.
pub fn check_environment_size(image: &ImageSpec, secrets: usize) -> Result<(), ApiError> {
    let total = image.env.len() + secrets + PLATFORM_VARIABLES;
    if total > MAX_ENVIRONMENT_VARIABLES {
        return Err(ApiError::validation(
            "env",
            format!(
                "an AgentCore runtime takes at most {MAX_ENVIRONMENT_VARIABLES} environment variables; this deploy \
                 would need {total} ({} variables, {secrets} secrets, {PLATFORM_VARIABLES} of the platform's)",
                image.env.len()
            ),
        ));
    }
    Ok(())
}

fn not_configured() -> DeploymentError {
    DeploymentError::platform(
        "runtime",
        "not_configured",
        "AgentCore is no longer configured on this control plane (AGENTCORE_REGION).",
    )
}

/// What a failed call shows on the deployment: the step, AgentCore's error type and message, the endpoint.
fn deployment_error(step: &str, failure: &AwsFailure) -> DeploymentError {
    DeploymentError {
        step: step.into(),
        endpoint: Some(failure.endpoint.clone()),
        kind: failure.kind().into(),
        status: Some(failure.status).filter(|s| *s != 0),
        provider_codes: Vec::new(),
        message: format!("{}: {}", failure.error_type, failure.message),
    }
}

/// Sends a call (built afresh for each attempt: its signature carries the time), retrying what AgentCore says
/// may pass — throttling, its 5xx, a runtime still changing — with a doubling wait inside the deploy's budget.
#[allow(clippy::too_many_arguments)]
async fn send_retrying<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    sleeper: &impl Sleeper,
    clock: &impl Clock,
    d: &Deployment,
    step: &str,
    waited_ms: &mut u64,
    build: impl Fn(i64) -> AwsCall,
) -> Result<serde_json::Value, DeploymentError> {
    let mut wait = 500u64;
    loop {
        match aws.send(&build(clock.now_ms())).await {
            Ok(answer) => return Ok(answer),
            Err(f) if f.transient() && *waited_ms + wait <= MAX_RETRY_WAIT_MS => {
                let _ = store.record_retry(&d.id).await;
                sleeper.sleep(wait).await;
                *waited_ms += wait;
                wait = (wait * 2).min(8_000);
            }
            Err(f) => return Err(deployment_error(step, &f)),
        }
    }
}

/// Polls `build`'s answer until its state leaves CREATING/UPDATING: `Ok` once READY, the reason once FAILED.
#[allow(clippy::too_many_arguments)]
async fn until_ready<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    sleeper: &impl Sleeper,
    clock: &impl Clock,
    d: &Deployment,
    step: &str,
    what: &str,
    waited_ms: &mut u64,
    build: impl Fn(i64) -> AwsCall,
) -> Result<(), DeploymentError> {
    let mut wait = FIRST_POLL_WAIT_MS;
    loop {
        let answer = send_retrying(store, aws, sleeper, clock, d, step, waited_ms, &build).await?;
        let state = runtime_state(&answer).or_else(|| endpoint_state(&answer));
        match state.map(|s| (s.status, s.failure_reason)) {
            Some((Status::Ready, _)) => return Ok(()),
            Some((Status::Failed, reason)) => {
                return Err(DeploymentError::platform(
                    step,
                    "runtime_failed",
                    format!(
                        "AgentCore could not make the {what} ready: {}",
                        reason.unwrap_or_else(|| "no reason given".into())
                    ),
                ))
            }
            Some((Status::Deleting, _)) => {
                return Err(DeploymentError::platform(
                    step,
                    "deleted",
                    format!("The {what} is being deleted."),
                ))
            }
            Some(_) => {}
            None => {
                return Err(DeploymentError::platform(
                    step,
                    "invalid_response",
                    format!("AgentCore's answer about the {what} has no status we know."),
                ))
            }
        }
        if *waited_ms + wait > MAX_RETRY_WAIT_MS {
            return Err(DeploymentError::platform(
                step,
                "not_ready",
                format!(
                    "The {what} was not ready within the deploy's {} s.",
                    MAX_RETRY_WAIT_MS / 1000
                ),
            ));
        }
        sleeper.sleep(wait).await;
        *waited_ms += wait;
        wait = (wait * 2).min(MAX_POLL_WAIT_MS);
    }
}

/// Deploys `image` as a new version of the agent's runtime, with an endpoint of its own; returns the provider
/// reference (runtime ARN, version, endpoint) once both are READY.
#[allow(clippy::too_many_arguments)]
pub(super) async fn deploy_image<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    sleeper: &impl Sleeper,
    clock: &impl Clock,
    config: &DeployConfig,
    d: &Deployment,
    image: &ImageSpec,
    telemetry_secret: &str,
) -> Result<String, DeploymentError> {
    let target: &AgentCoreTarget = config.agentcore.as_ref().ok_or_else(not_configured)?;
    let secrets = agent_secrets(store, config, d, telemetry_secret).await?;
    // A secret wins over a plain variable of the same name, as on Cloudflare.
    let mut environment = plain_bindings(config, d);
    environment.extend(secrets);
    if let Some((name, _)) = environment
        .iter()
        .find(|(_, v)| v.len() > MAX_ENVIRONMENT_VALUE)
    {
        return Err(DeploymentError::platform(
            "runtime",
            "validation",
            format!("{name} is longer than AgentCore's {MAX_ENVIRONMENT_VALUE} characters for a variable."),
        ));
    }
    let spec = RuntimeSpec {
        container_uri: image.container_uri.clone(),
        role_arn: image.execution_role_arn.clone(),
        environment,
    };
    let mut waited_ms = 0;
    let runtime = store.agentcore_runtime(&d.agent_id).await.map_err(|e| {
        DeploymentError::platform(
            "runtime",
            "internal",
            format!("could not read the agent: {}", e.0),
        )
    })?;
    // The agent's first AgentCore deploy creates its runtime; later ones add a version to it.
    let name = runtime_name_for(&d.agent_id);
    let (create, update) = (client_token("create", &d.id), client_token("update", &d.id));
    let answer = send_retrying(
        store,
        aws,
        sleeper,
        clock,
        d,
        "runtime",
        &mut waited_ms,
        |now| match &runtime {
            None => target.create_runtime(&name, &spec, &create, now),
            Some(id) => target.update_runtime(id, &spec, &update, now),
        },
    )
    .await?;
    let version: RuntimeVersion = serde_json::from_value(answer).map_err(|e| {
        DeploymentError::platform(
            "runtime",
            "invalid_response",
            format!("AgentCore's answer names no runtime version: {e}"),
        )
    })?;
    if runtime.is_none() {
        store
            .set_agentcore_runtime(&d.agent_id, &version.agent_runtime_id)
            .await
            .map_err(|e| {
                DeploymentError::platform(
                    "runtime",
                    "internal",
                    format!("could not record the runtime: {}", e.0),
                )
            })?;
    }
    let endpoint = endpoint_name_for(&d.id);
    let reference = api::provider_ref(
        &version.agent_runtime_arn,
        &version.agent_runtime_version,
        &endpoint,
    );
    // Recorded now, so whatever happens next, the clean-up job can find this version to delete it.
    let _ = store.set_provider_ref(&d.id, &reference).await;
    let id = &version.agent_runtime_id;
    let number = &version.agent_runtime_version;
    until_ready(
        store,
        aws,
        sleeper,
        clock,
        d,
        "ready",
        "runtime version",
        &mut waited_ms,
        |now| target.get_runtime(id, number, now),
    )
    .await?;
    let token = client_token("endpoint", &d.id);
    send_retrying(
        store,
        aws,
        sleeper,
        clock,
        d,
        "endpoint",
        &mut waited_ms,
        |now| target.create_endpoint(id, &endpoint, number, &token, now),
    )
    .await?;
    until_ready(
        store,
        aws,
        sleeper,
        clock,
        d,
        "endpoint",
        "endpoint",
        &mut waited_ms,
        |now| target.get_endpoint(id, &endpoint, now),
    )
    .await?;
    Ok(reference)
}

/// Deletes a deployment's endpoint and runtime version (what is already gone counts as deleted) and records its
/// script deleted. `provider_ref` is the deployment's as stored (a deploy records it before the version is ready).
/// A failure is reported; the clean-up job tries again.
pub(super) async fn remove_version<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    clock: &impl Clock,
    config: &DeployConfig,
    id: &DeploymentId,
    provider_ref: Option<&str>,
) -> Result<(), ApiError> {
    let target = config
        .agentcore
        .as_ref()
        .ok_or_else(|| ApiError::internal("AgentCore is not configured"))?;
    if let Some((arn, endpoint)) = provider_ref.and_then(api::parse_provider_ref) {
        let runtime = api::runtime_id_of(arn).unwrap_or_default();
        let version = provider_ref
            .and_then(|r| r.split("version=").nth(1))
            .and_then(|v| v.split('&').next())
            .unwrap_or_default();
        for call in [
            target.delete_endpoint(runtime, endpoint, clock.now_ms()),
            target.delete_runtime(runtime, Some(version), clock.now_ms()),
        ] {
            match aws.send(&call).await {
                Ok(_) => {}
                Err(f) if f.not_found() => {}
                Err(f) => return Err(ApiError::internal(f)),
            }
        }
    }
    Ok(store.mark_script_deleted(id, clock.now_ms()).await?)
}

/// Deletes the AgentCore runtimes of deleted agents (every version at once); returns how many.
pub(super) async fn remove_deleted_agents_runtimes<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    clock: &impl Clock,
    config: &DeployConfig,
) -> Result<u32, ApiError> {
    let Some(target) = config.agentcore.as_ref() else {
        return Ok(0);
    };
    let mut removed = 0;
    for (agent, runtime) in store.deleted_agent_runtimes(20).await? {
        match aws
            .send(&target.delete_runtime(&runtime, None, clock.now_ms()))
            .await
        {
            Ok(_) => {}
            Err(f) if f.not_found() => {}
            Err(_) => continue,
        }
        store.forget_agentcore_runtime(&agent).await?;
        removed += 1;
    }
    Ok(removed)
}
