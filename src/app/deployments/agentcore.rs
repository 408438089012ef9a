//! Deploying to the second runtime, Amazon Bedrock AgentCore. One agent is one AgentCore runtime; a deployment is
//! one immutable version of it (CreateAgentRuntime for the agent's first, UpdateAgentRuntime after) with an endpoint
//! of its own pinned to that version, so rollback moves only the platform's pointer, as with Cloudflare. The
//! version's environment carries the platform's settings, the agent's variables and its secrets (AgentCore has no
//! other way to hand a container a value); the deploy follows the version and the endpoint until they are READY, or
//! fails with AgentCore's reason.

use super::*;
use crate::app::ports::AwsApi;
use crate::app::runtime::Deployed;
use crate::aws::agentcore::{
    self as api, client_token, endpoint_name_for, runtime_name_for, runtime_state, AgentCoreTarget,
    AwsCall, AwsFailure, RuntimeSpec, RuntimeVersion, Status, MAX_ENVIRONMENT_VALUE,
    MAX_ENVIRONMENT_VARIABLES,
};
use crate::domain::ids::AgentId;

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

/// How long after a deploy that recorded no version failed its version is looked for (`remove_version`).
pub(super) const UNRECORDED_SEARCH_AFTER_MS: i64 = 120_000;

/// How long deleting an agent's whole runtime holds off its new AgentCore deploys at most (one call of at most
/// 5 s, and time for one that timed out on our side to land at AgentCore).
const RUNTIME_REMOVAL_LEASE_MS: i64 = 60_000;

/// How long a deploy's own background work follows AgentCore, by the clock: with one call of at most 5 s after it
/// (the platform's call timeout) and one more look, the work ends inside the 30 s the runtime gives work left after
/// a response. What is not READY by then is left pending for the cron job.
const BACKGROUND_BUDGET_MS: i64 = 18_000;

/// Sends a call (built afresh for each attempt: its signature carries the time), retrying what `retry` says may
/// pass — throttling, AgentCore's 5xx, a runtime still changing — with a doubling wait until `deadline_ms`.
#[allow(clippy::too_many_arguments)]
async fn send_retrying<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    sleeper: &impl Sleeper,
    clock: &impl Clock,
    d: &Deployment,
    deadline_ms: i64,
    retry: impl Fn(&AwsFailure) -> bool,
    build: impl Fn(i64) -> AwsCall,
) -> Result<serde_json::Value, AwsFailure> {
    let mut wait = 500u64;
    loop {
        match aws.send(&build(clock.now_ms())).await {
            Ok(answer) => return Ok(answer),
            Err(f) if retry(&f) && clock.now_ms() + wait as i64 <= deadline_ms => {
                let _ = store.record_retry(&d.id).await;
                sleeper.sleep(wait).await;
                wait = (wait * 2).min(8_000);
            }
            Err(f) => return Err(f),
        }
    }
}

/// The id of the live runtime named `name`, looked up (ListAgentRuntimes, page by page; pages after the first
/// only until `deadline_ms`) when creating it said it exists. `None` when only a runtime being deleted holds it
/// (listed as DELETING, or no longer listed at all).
async fn find_runtime(
    aws: &impl AwsApi,
    clock: &impl Clock,
    target: &AgentCoreTarget,
    name: &str,
    deadline_ms: i64,
) -> Result<Option<String>, DeploymentError> {
    let mut next: Option<String> = None;
    loop {
        let page = aws
            .send(&target.list_runtimes(next.as_deref(), clock.now_ms()))
            .await
            .map_err(|f| deployment_error("runtime", &f))?;
        // One being deleted is no runtime to deploy to.
        let found = page["agentRuntimes"].as_array().and_then(|runtimes| {
            runtimes
                .iter()
                .find(|r| r["agentRuntimeName"] == name && r["status"] != "DELETING")
                .and_then(|r| r["agentRuntimeId"].as_str().map(str::to_owned))
        });
        if found.is_some() {
            return Ok(found);
        }
        match page["nextToken"].as_str() {
            Some(_) if clock.now_ms() > deadline_ms => {
                return Err(DeploymentError::platform(
                    "runtime",
                    "timeout",
                    format!(
                        "The runtime named {name} could not be looked up within the deploy's budget; deploy again."
                    ),
                ))
            }
            Some(token) => next = Some(token.to_owned()),
            None => return Ok(None),
        }
    }
}

/// One look at a deployment's version and endpoint: `Serving` once both are READY, `Pending` while AgentCore is
/// still at work (or busy: throttled, 5xx), the reason once either failed. Makes the endpoint once the version is
/// READY (with a client token, so a repeat is the same request).
async fn follow_once<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    clock: &impl Clock,
    target: &AgentCoreTarget,
    d: &Deployment,
    reference: &str,
) -> Result<Deployed, DeploymentError> {
    let unreadable = || {
        DeploymentError::platform(
            "ready",
            "internal",
            format!("the deployment's AgentCore reference is unreadable: {reference}"),
        )
    };
    let (arn, endpoint) = api::parse_provider_ref(reference).ok_or_else(unreadable)?;
    let runtime = api::runtime_id_of(arn).ok_or_else(unreadable)?;
    let version = api::version_of_ref(reference).ok_or_else(unreadable)?;
    // A busy AgentCore is looked at again later (counted as a retry); anything else it says is the outcome.
    let refused = |step: &'static str, f: AwsFailure| async move {
        if f.transient() {
            let _ = store.record_retry(&d.id).await;
            Ok(Deployed::Pending)
        } else {
            Err(deployment_error(step, &f))
        }
    };
    let failed = |step: &str, what: &str, reason: Option<String>| {
        DeploymentError::platform(
            step,
            "runtime_failed",
            format!(
                "AgentCore could not make the {what} ready: {}",
                reason.unwrap_or_else(|| "no reason given".into())
            ),
        )
    };
    let version_answer = match aws
        .send(&target.get_runtime(runtime, version, clock.now_ms()))
        .await
    {
        Ok(answer) => answer,
        Err(f) => return refused("ready", f).await,
    };
    match runtime_state(&version_answer).map(|s| (s.status, s.failure_reason)) {
        Some((Status::Ready, _)) => {}
        Some((Status::Failed, reason)) => return Err(failed("ready", "runtime version", reason)),
        Some((Status::Deleting, _)) => {
            return Err(DeploymentError::platform(
                "ready",
                "deleted",
                "The runtime version is being deleted.",
            ))
        }
        Some(_) => return Ok(Deployed::Pending),
        None => {
            return Err(DeploymentError::platform(
                "ready",
                "invalid_response",
                "AgentCore's answer about the runtime version has no status we know.",
            ))
        }
    }
    match aws
        .send(&target.get_endpoint(runtime, endpoint, clock.now_ms()))
        .await
    {
        Ok(answer) => match runtime_state(&answer).map(|s| (s.status, s.failure_reason)) {
            Some((Status::Ready, _)) => Ok(Deployed::Serving(reference.to_owned())),
            Some((Status::Failed, reason)) => Err(failed("endpoint", "endpoint", reason)),
            Some((Status::Deleting, _)) => Err(DeploymentError::platform(
                "endpoint",
                "deleted",
                "The endpoint is being deleted.",
            )),
            _ => Ok(Deployed::Pending),
        },
        Err(f) if f.not_found() => {
            let token = client_token("endpoint", &d.id);
            match aws
                .send(&target.create_endpoint(runtime, endpoint, version, &token, clock.now_ms()))
                .await
            {
                Ok(_) => Ok(Deployed::Pending),
                Err(f) => refused("endpoint", f).await,
            }
        }
        Err(f) => refused("endpoint", f).await,
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
) -> Result<Deployed, DeploymentError> {
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
        description: api::version_description(&d.id),
    };
    let deadline_ms = clock.now_ms() + BACKGROUND_BUDGET_MS;
    let store_failed = |what: &str, e: crate::app::ports::StoreError| {
        DeploymentError::platform("runtime", "internal", format!("could not {what}: {}", e.0))
    };
    let mut runtime = store
        .agentcore_runtime(&d.agent_id)
        .await
        .map_err(|e| store_failed("read the agent", e))?;
    // The agent's first AgentCore deploy creates its runtime; later ones add a version to it. A runtime found
    // missing is made again; one that exists though none is recorded (a create whose answer was lost, or two
    // first deploys at once) is found by its name and used.
    let name = runtime_name_for(&d.agent_id);
    let (create, update) = (client_token("create", &d.id), client_token("update", &d.id));
    let mut answer = None;
    let mut name_wait = FIRST_POLL_WAIT_MS;
    // Each change of runtime (one found missing, one found by name) counts, a few at most; waiting for the name
    // of a runtime being deleted does not (the deadline bounds it).
    let mut changes = 0;
    while changes < 4 {
        match runtime.clone() {
            Some(id) => {
                let sent = send_retrying(
                    store,
                    aws,
                    sleeper,
                    clock,
                    d,
                    deadline_ms,
                    AwsFailure::transient,
                    |now| target.update_runtime(&id, &spec, &update, now),
                )
                .await;
                match sent {
                    Ok(a) => {
                        answer = Some(a);
                        break;
                    }
                    Err(f) if f.not_found() => {
                        let _ = store.forget_agentcore_runtime(&d.agent_id, &id).await;
                        runtime = None;
                        changes += 1;
                    }
                    Err(f) => return Err(deployment_error("runtime", &f)),
                }
            }
            None => {
                let exists = |f: &AwsFailure| f.error_type == "ConflictException";
                let sent = send_retrying(
                    store,
                    aws,
                    sleeper,
                    clock,
                    d,
                    deadline_ms,
                    |f| f.transient() && !exists(f),
                    |now| target.create_runtime(&name, &spec, &create, now),
                )
                .await;
                match sent {
                    Ok(a) => {
                        let id = a["agentRuntimeId"].as_str().unwrap_or_default().to_owned();
                        if id.is_empty() {
                            return Err(DeploymentError::platform(
                                "runtime",
                                "invalid_response",
                                "AgentCore's answer to creating the runtime names no runtime.",
                            ));
                        }
                        store
                            .set_agentcore_runtime(&d.agent_id, &id)
                            .await
                            .map_err(|e| store_failed("record the runtime", e))?;
                        answer = Some(a);
                        break;
                    }
                    Err(f) if exists(&f) => {
                        match find_runtime(aws, clock, target, &name, deadline_ms).await? {
                            Some(found) => {
                                store
                                    .set_agentcore_runtime(&d.agent_id, &found)
                                    .await
                                    .map_err(|e| store_failed("record the runtime", e))?;
                                runtime = Some(found);
                                changes += 1;
                            }
                            // The agent's previous runtime (its last version removed) is still going away: AgentCore
                            // frees its name once it is gone.
                            None if clock.now_ms() + name_wait as i64 <= deadline_ms => {
                                let _ = store.record_retry(&d.id).await;
                                sleeper.sleep(name_wait).await;
                                name_wait = (name_wait * 2).min(MAX_POLL_WAIT_MS);
                            }
                            None => {
                                return Err(DeploymentError::platform(
                                    "runtime",
                                    "conflict",
                                    format!(
                                        "The agent's previous AgentCore runtime is still being deleted ({}); deploy again in a minute.",
                                        f.message
                                    ),
                                ))
                            }
                        }
                    }
                    Err(f) => return Err(deployment_error("runtime", &f)),
                }
            }
        }
    }
    let answer = answer.ok_or_else(|| {
        DeploymentError::platform(
            "runtime",
            "conflict",
            "The agent's AgentCore runtime kept changing under this deploy; deploy again.",
        )
    })?;
    let version: RuntimeVersion = serde_json::from_value(answer).map_err(|e| {
        DeploymentError::platform(
            "runtime",
            "invalid_response",
            format!("AgentCore's answer names no runtime version: {e}"),
        )
    })?;
    let endpoint = endpoint_name_for(&d.id);
    let reference = api::provider_ref(
        &version.agent_runtime_arn,
        &version.agent_runtime_version,
        &endpoint,
    );
    // Recorded now, so whatever happens next, the clean-up job can find this version to delete it; a version that
    // cannot be recorded is deleted at once (nothing else would ever find it).
    if let Err(e) = store.set_provider_ref(&d.id, &reference).await {
        let _ = remove_version(
            store,
            aws,
            clock,
            config,
            &d.id,
            &d.agent_id,
            Some(&reference),
        )
        .await;
        return Err(store_failed("record the runtime version", e));
    }
    // Followed within the deploy's budget; a version AgentCore is still starting after that is left pending,
    // and the cron job follows it (`follow`).
    let mut wait = FIRST_POLL_WAIT_MS;
    loop {
        if clock.now_ms() > deadline_ms {
            return Ok(Deployed::Pending);
        }
        if let Deployed::Serving(reference) =
            follow_once(store, aws, clock, target, d, &reference).await?
        {
            return Ok(Deployed::Serving(reference));
        }
        if clock.now_ms() + wait as i64 > deadline_ms {
            return Ok(Deployed::Pending);
        }
        sleeper.sleep(wait).await;
        wait = (wait * 2).min(MAX_POLL_WAIT_MS);
    }
}

/// Amazon Bedrock AgentCore as a runtime provider: a deployment is a runtime version with its own endpoint.
pub struct AgentCoreRuntime<'a, S, A, W, C> {
    pub store: &'a S,
    pub aws: &'a A,
    pub sleeper: &'a W,
    pub clock: &'a C,
    pub config: &'a DeployConfig,
}

impl<S, A, W, C> AgentCoreRuntime<'_, S, A, W, C> {
    /// A failure as its owner sees it: the platform's AWS account id taken out (AgentCore's messages name ARNs).
    fn for_owner(&self, error: DeploymentError) -> DeploymentError {
        match &self.config.agentcore {
            Some(target) => error.without_account(&target.account_id),
            None => error,
        }
    }
}

impl<S: DeploymentStore, A: AwsApi, W: Sleeper, C: Clock> RuntimeProvider
    for AgentCoreRuntime<'_, S, A, W, C>
{
    async fn deploy(
        &self,
        d: &Deployment,
        workload: &Workload,
        telemetry_secret: &str,
        _gateway_secret: &str,
    ) -> Result<Deployed, DeploymentError> {
        // Nothing reaches a runtime without the platform's AWS credentials: no gateway guard to give it.
        let Workload::Image(image) = workload else {
            return Err(DeploymentError::platform(
                "runtime",
                "validation",
                "An AgentCore deployment runs a container image, not uploaded code.",
            ));
        };
        deploy_image(
            self.store,
            self.aws,
            self.sleeper,
            self.clock,
            self.config,
            d,
            image,
            telemetry_secret,
        )
        .await
        .map_err(|e| self.for_owner(e))
    }

    async fn follow(&self, d: &Deployment) -> Result<Deployed, DeploymentError> {
        let target = self.config.agentcore.as_ref().ok_or_else(not_configured)?;
        let Some(reference) = d.provider_ref.as_deref() else {
            return Ok(Deployed::Pending);
        };
        follow_once(self.store, self.aws, self.clock, target, d, reference)
            .await
            .map_err(|e| self.for_owner(e))
    }

    async fn remove(&self, d: &LeftBehind) -> Result<(), ApiError> {
        // A version whose making was never recorded is looked for only once AgentCore has surely finished what
        // it was asked (a lost answer's call may still be under way): by the clean-up job, a while after.
        if d.provider_ref.is_none()
            && d.ended_at
                .is_some_and(|t| self.clock.now_ms() - t < UNRECORDED_SEARCH_AFTER_MS)
        {
            return Ok(());
        }
        remove_version(
            self.store,
            self.aws,
            self.clock,
            self.config,
            &d.id,
            &d.agent_id,
            d.provider_ref.as_deref(),
        )
        .await
    }
}

/// Deletes a deployment's endpoint and runtime version (what is already gone counts as deleted) and records its
/// script deleted; the runtime itself when no other deployment of the agent still has a version in it (AgentCore
/// keeps no runtime without a version, and a runtime whose only version failed must go for the next deploy to
/// create it afresh). `provider_ref` is the deployment's as stored (a deploy records it before the version is
/// ready). Without one — the deploy failed or was cut off before it recorded its version, which AgentCore may
/// still have made (an answer lost on the way) — the version is looked for by its description in the agent's
/// runtime. A failure is reported; the clean-up job tries again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn remove_version<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    clock: &impl Clock,
    config: &DeployConfig,
    id: &DeploymentId,
    agent: &AgentId,
    provider_ref: Option<&str>,
) -> Result<(), ApiError> {
    let target = config
        .agentcore
        .as_ref()
        .ok_or_else(|| ApiError::internal("AgentCore is not configured"))?;
    let recorded = provider_ref.and_then(|r| {
        let (arn, endpoint) = api::parse_provider_ref(r)?;
        Some((
            api::runtime_id_of(arn)?.to_owned(),
            api::version_of_ref(r)?.to_owned(),
            endpoint.to_owned(),
        ))
    });
    let named = match recorded {
        Some(named) => Some(named),
        None => unrecorded_version(store, aws, clock, target, id, agent).await?,
    };
    if let Some((runtime, version, endpoint)) =
        named.filter(|(r, _, e)| !r.is_empty() && !e.is_empty())
    {
        let (runtime, version, endpoint) = (runtime.as_str(), version.as_str(), endpoint.as_str());
        let gone_ok = |sent: Result<serde_json::Value, AwsFailure>| match sent {
            Ok(_) => Ok(()),
            Err(f) if f.not_found() => Ok(()),
            Err(f) => Err(ApiError::internal(f)),
        };
        gone_ok(
            aws.send(&target.delete_endpoint(runtime, endpoint, clock.now_ms()))
                .await,
        )?;
        // The whole runtime goes under the agent's removal lease, which new AgentCore deploys of the agent wait
        // for: none can add a version to it between the check that no other version is in use and the delete.
        // Taking it, the agent stops recording the runtime, so no later deploy updates a runtime being deleted.
        // A deletion that failed keeps the lease until it expires (the call may still land at AgentCore); the
        // clean-up job tries again.
        let now = clock.now_ms();
        let lease_until = now + RUNTIME_REMOVAL_LEASE_MS;
        if store
            .claim_agentcore_runtime_removal(agent, runtime, id, now, lease_until)
            .await?
        {
            gone_ok(
                aws.send(&target.delete_runtime(runtime, None, clock.now_ms()))
                    .await,
            )?;
            store
                .end_agentcore_runtime_removal(agent, lease_until)
                .await?;
        } else {
            gone_ok(
                aws.send(&target.delete_runtime(runtime, Some(version), clock.now_ms()))
                    .await,
            )?;
        }
    }
    Ok(store.mark_script_deleted(id, clock.now_ms()).await?)
}

/// The version AgentCore made for deployment `id` though the deploy never recorded it, found by its description
/// in the runtime the agent records: (runtime, version, the deployment's endpoint name). A version some
/// deployment records is never taken for it.
async fn unrecorded_version<S: DeploymentStore>(
    store: &S,
    aws: &impl AwsApi,
    clock: &impl Clock,
    target: &AgentCoreTarget,
    id: &DeploymentId,
    agent: &AgentId,
) -> Result<Option<(String, String, String)>, ApiError> {
    let Some(runtime) = store.agentcore_runtime(agent).await? else {
        return Ok(None);
    };
    let description = api::version_description(id);
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let page = match aws
            .send(&target.list_versions(&runtime, next.as_deref(), clock.now_ms()))
            .await
        {
            Ok(page) => page,
            Err(f) if f.not_found() => return Ok(None),
            Err(f) => return Err(ApiError::internal(f)),
        };
        let found = page["agentRuntimes"].as_array().and_then(|versions| {
            versions
                .iter()
                .find(|v| v["description"] == description.as_str())
                .and_then(|v| v["agentRuntimeVersion"].as_str().map(str::to_owned))
        });
        if let Some(version) = found {
            if store
                .agentcore_version_recorded(agent, &runtime, &version)
                .await?
            {
                return Ok(None);
            }
            return Ok(Some((runtime, version, endpoint_name_for(id))));
        }
        match page["nextToken"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => return Ok(None),
        }
    }
    Err(ApiError::internal(format!(
        "runtime {runtime} has more versions than are looked through for deployment {id}"
    )))
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
        store.forget_agentcore_runtime(&agent, &runtime).await?;
        removed += 1;
    }
    Ok(removed)
}
