//! Work that is not a request: the cron jobs and what a request leaves running after its answer.

use super::artifacts::R2Artifacts;
use super::aws::FetchAws;
use super::bindings::d1_database;
use super::cloudflare::FetchProvider;
use super::config_cache::load_config;
use super::d1::D1Store;
use super::durable::user_feed::publish_now;
use super::durable::user_gate::UserGateClient;
use super::JsClock;
use crate::app::audit::{Actor, AuditRecord};
use crate::app::deployments;
use crate::app::deployments::agentcore::AgentCoreRuntime;
use crate::app::deployments::CloudflareRuntime;
use crate::app::ports::{ArtifactStore, Clock, DeploymentStore, Sleeper, Store};
use crate::app::runtime::Runtimes;
use crate::app::{invocations, key_rotation, usage};
use crate::config::{DeployConfig, ServiceConfig};
use crate::domain::deployment::{Deployment, DeploymentStatus};
use crate::domain::feed::{FeedKind, Publication};
use crate::domain::ids::{AgentId, DeploymentId, UserId};
use crate::domain::ApiError;
use std::rc::Rc;
use worker::{console_error, console_log, Context, Env};

/// The cron trigger (wrangler.toml `[triggers]`): the usage rollup (recompute, finalize, prune), the retention
/// of metering rows and telemetry rejects, re-sealing secrets while a key rotation is under way, then the deploy
/// clean-up (fails stuck deploys and deletes unneeded scripts).
pub(super) async fn run_scheduled(env: Env) {
    let config = match load_config(&env) {
        Ok(config) => config,
        Err(e) => {
            console_error!(
                "scheduled jobs skipped: {}",
                e.internal_cause.unwrap_or(e.message)
            );
            return;
        }
    };
    match d1_database(&env).map(D1Store::new) {
        Ok(store) => {
            let now = JsClock.now_ms();
            // Billing events whose processing failed (or never ran), once their backoff is over.
            super::billing::process_due_events(&env, &config, &store).await;
            match usage::run_rollups(&store, config.metrics_retention_days, now).await {
                Ok(run) => console_log!(
                    "usage rollup: {} periods recomputed ({} drifted users corrected), {} raw events pruned",
                    run.recomputed.len(),
                    run.recomputed.iter().map(|r| r.drifted).sum::<u64>(),
                    run.pruned_events
                ),
                Err(e) => console_error!(
                    "usage rollup failed: {}",
                    e.internal_cause.unwrap_or(e.message)
                ),
            }
            let (kept_calls, kept_rejects) = (
                config.invocations_retention_days,
                config.rejects_retention_days,
            );
            match invocations::prune(&store, kept_calls, kept_rejects, now).await {
                Ok(run) => console_log!(
                    "retention: {} metering rows and {} telemetry rejects pruned",
                    run.invocations,
                    run.rejects
                ),
                Err(e) => console_error!(
                    "retention failed: {}",
                    e.internal_cause.unwrap_or(e.message)
                ),
            }
            match crate::app::audit::prune(&store, config.audit_retention_days, now).await {
                Ok(n) if n > 0 => console_log!("retention: {n} audit rows pruned"),
                Ok(_) => {}
                Err(e) => console_error!(
                    "audit retention failed: {}",
                    e.internal_cause.unwrap_or(e.message)
                ),
            }
            // A key rotation under way: move a batch of sealed values to the current key.
            if let Some(keys) = config
                .deploy
                .as_ref()
                .map(|d| &d.encryption_key)
                .filter(|k| k.rotating())
            {
                match key_rotation::reseal(&store, keys, key_rotation::RESEAL_BATCH).await {
                    Ok(run) => console_log!(
                        "re-seal: {} values moved to key {}, {} superseded, {} unreadable, {} remaining",
                        run.resealed,
                        run.current_key_id,
                        run.superseded,
                        run.unreadable.len(),
                        run.remaining
                    ),
                    Err(e) => console_error!("re-seal failed: {}", e.0),
                }
            }
        }
        Err(e) => console_error!("scheduled jobs skipped: no database: {}", e.message),
    }
    let Some(deploy) = &config.deploy else { return };
    match clean_up(&env, deploy).await {
        Ok(deployments::CleanUpRun {
            failed,
            deleted,
            not_removed,
        }) => {
            console_log!(
                "clean-up: {} stuck deployments failed, {deleted} scripts deleted",
                failed.len()
            );
            for (id, why) in not_removed {
                console_error!(
                    "clean-up: deployment {id} not removed (next run tries again): {why}"
                );
            }
            // A deploy the timeout ended is reported like any other ending: the owner's trail and feed.
            if let Ok(store) = d1_database(&env).map(D1Store::new) {
                for (id, agent, owner) in failed {
                    report_finished(&env, &owner, &agent, &id, Some(DeploymentStatus::Failed))
                        .await;
                    publish_deployment(&env, &store, deploy, &owner, &agent, id.as_str()).await;
                }
            }
        }
        Err(e) => console_error!("clean-up failed: {}", e.internal_cause.unwrap_or(e.message)),
    }
    match remove_orphaned_artifacts(&env).await {
        Ok(0) => {}
        Ok(n) => console_log!("clean-up: {n} artifacts of deleted agents removed"),
        Err(e) => console_error!("artifact clean-up failed: {e}"),
    }
}

/// Removes the artifacts only deleted agents used, once they have been deleted for `ARTIFACT_GRACE_MS`, in two
/// steps. An artifact any other deployment references (of a live agent, or of one deleted more recently) is kept:
/// the same code may be shared (the template, a bundle deployed twice). First it is claimed, in one statement that
/// checks it is orphaned; a deploy of the same code after that stores it (if need be) and clears the claim. Only
/// a claim older than `ARTIFACT_CLAIM_MS` that nothing cleared is removed, by a later run, so a deploy recorded
/// around the claim has long finished (and stored its code again) or cleared it. A run that dies midway leaves
/// claims or removals the next run completes.
async fn remove_orphaned_artifacts(env: &Env) -> Result<u32, String> {
    let store = D1Store::new(d1_database(env).map_err(|e| e.message)?);
    let now = JsClock.now_ms();
    let deleted_before = now - deployments::artifact::ARTIFACT_GRACE_MS;
    for sha256 in store
        .orphaned_artifacts(deleted_before, 50)
        .await
        .map_err(|e| e.0)?
    {
        store
            .claim_orphaned_artifact(&sha256, deleted_before, now)
            .await
            .map_err(|e| e.0)?;
    }
    let artifacts = R2Artifacts::new(env);
    let mut removed = 0;
    for sha256 in store
        .claimed_artifacts(now - deployments::artifact::ARTIFACT_CLAIM_MS, 50)
        .await
        .map_err(|e| e.0)?
    {
        if !store.still_claimed(&sha256).await.map_err(|e| e.0)? {
            continue;
        }
        artifacts.remove(&sha256).await.map_err(|e| e.0)?;
        store
            .mark_artifact_removed(&sha256, now)
            .await
            .map_err(|e| e.0)?;
        removed += 1;
    }
    Ok(removed)
}

async fn clean_up(env: &Env, deploy: &DeployConfig) -> Result<deployments::CleanUpRun, ApiError> {
    let store = D1Store::new(d1_database(env)?);
    let provider = FetchProvider {
        base_url: &deploy.api_base_url,
        api_token: &deploy.api_token,
    };
    let runtime = runtimes(&store, &provider, deploy);
    // Deploys their runtime is still bringing up (AgentCore), finished as they become ready or fail.
    let followed =
        deployments::follow_pending(&store, &UserGateClient::new(env), &runtime, &JsClock)
            .await
            .unwrap_or_else(|e| {
                // The clean-up below runs whatever happened here.
                console_error!(
                    "following pending deploys failed: {}",
                    e.internal_cause.unwrap_or(e.message)
                );
                Vec::new()
            });
    for (d, status, served_before) in followed {
        report_followed(env, &store, deploy, &d, status, served_before).await;
    }
    deployments::clean_up(&store, &runtime, &FetchAws, &JsClock, deploy).await
}

/// One look at a deploy its follower (`DeployFollower`) holds; reports it if it ended now. Answers when to look
/// again (`None`: never).
pub(crate) async fn follow_one(
    env: &Env,
    request: &deployments::FollowRequest,
) -> Result<Option<i64>, String> {
    let config = load_config(env).map_err(|e| e.internal_cause.unwrap_or(e.message))?;
    let Some(deploy) = &config.deploy else {
        return Ok(None);
    };
    let store = D1Store::new(d1_database(env).map_err(|e| e.message)?);
    let provider = FetchProvider {
        base_url: &deploy.api_base_url,
        api_token: &deploy.api_token,
    };
    let (owner, agent, id) = request.ids();
    let step = deployments::follow_deployment(
        &store,
        &UserGateClient::new(env),
        &runtimes(&store, &provider, deploy),
        &JsClock,
        &owner,
        &agent,
        &id,
    )
    .await
    .map_err(|e| e.internal_cause.unwrap_or(e.message))?;
    Ok(match step {
        deployments::FollowStep::Finished {
            deployment: d,
            status,
            served_before,
        } => {
            report_followed(env, &store, deploy, &d, status, served_before).await;
            None
        }
        deployments::FollowStep::Again(after_ms) => Some(after_ms),
        deployments::FollowStep::Over => None,
    })
}

/// A deploy a follower (its `DeployFollower`, or the cron job) ended: the log, the owner's trail and live feed,
/// and the deployment it replaced when the pointer moved.
async fn report_followed(
    env: &Env,
    store: &D1Store,
    deploy: &DeployConfig,
    d: &Deployment,
    status: DeploymentStatus,
    served_before: Option<String>,
) {
    console_log!("deploy {} finished {} (followed)", d.id, status.as_str());
    report_finished(env, &d.user_id, &d.agent_id, &d.id, Some(status)).await;
    publish_deployment(env, store, deploy, &d.user_id, &d.agent_id, d.id.as_str()).await;
    publish_pointer_moved(env, store, deploy, &d.user_id, &d.agent_id, served_before).await;
}

/// The owner's trail of how a deploy they asked for ended (`status` `None`: it could not be recorded).
async fn report_finished(
    env: &Env,
    owner: &UserId,
    agent: &AgentId,
    id: &DeploymentId,
    status: Option<DeploymentStatus>,
) {
    let (result, shown) = match status {
        // Deployed; `inactive` when a newer deployment already held the pointer.
        Some(s @ (DeploymentStatus::Active | DeploymentStatus::Inactive)) => ("ok", s.as_str()),
        Some(other) => ("failed", other.as_str()),
        None => ("failed", "unknown"),
    };
    super::audit::record_now(
        env,
        &AuditRecord {
            at: JsClock.now_ms(),
            request_id: None,
            actor: Actor::System,
            user_id: Some(owner.clone()),
            action: "deploy.finish",
            target: Some(id.as_str().to_owned()),
            agent_id: Some(agent.as_str().to_owned()),
            outcome: result,
            status: None,
            detail: Some(serde_json::json!({ "status": shown })),
        },
    )
    .await;
}

/// Both runtime providers over this worker's I/O: Cloudflare through its API, AgentCore through its own.
type WorkerRuntimes<'a> = Runtimes<
    CloudflareRuntime<'a, D1Store, FetchProvider<'a>, WorkersTimer, JsClock>,
    AgentCoreRuntime<'a, D1Store, FetchAws, WorkersTimer, JsClock>,
>;

fn runtimes<'a>(
    store: &'a D1Store,
    provider: &'a FetchProvider<'a>,
    deploy: &'a DeployConfig,
) -> WorkerRuntimes<'a> {
    Runtimes {
        cloudflare: CloudflareRuntime {
            store,
            provider,
            sleeper: &WorkersTimer,
            clock: &JsClock,
            config: deploy,
        },
        agentcore: AgentCoreRuntime {
            store,
            aws: &FetchAws,
            sleeper: &WorkersTimer,
            clock: &JsClock,
            config: deploy,
        },
    }
}

/// Stores `spec`'s artifact under `sha256` unless it is there already. A failure is logged: the deploy goes on
/// (only showing the artifact, and restoring a cleaned-up script, need it).
async fn store_artifact(
    env: &Env,
    store: &D1Store,
    spec: &crate::domain::deployment::DeploySpec,
    sha256: &str,
) {
    let stored = async {
        R2Artifacts::new(env)
            .put_artifact_once(sha256, || deployments::artifact::encode(spec))
            .await?;
        // In use again: a claim of the clean-up job on it no longer holds (a no-op unless there is one).
        store.artifact_stored(sha256).await
    };
    if let Err(e) = stored.await {
        console_error!("artifact {sha256} not stored: {}", e.0);
    }
}

/// Publishes deployment `id` as it stands now to its owner's live feed.
pub(super) async fn publish_deployment(
    env: &Env,
    store: &D1Store,
    deploy: &DeployConfig,
    owner: &UserId,
    agent: &AgentId,
    id: &str,
) {
    let Some(id) = DeploymentId::parse(id) else {
        return;
    };
    if let Ok(Some(found)) = store.deployment(owner, agent, &id).await {
        if let Ok(data) = serde_json::to_value(deployments::for_owner(found, Some(deploy))) {
            let kind = FeedKind::Deployment;
            publish_now(env, owner, Publication { kind, data }).await;
        }
    }
}

/// After a deploy or a rollback: when the agent's active deployment is no longer `served_before`, publishes the
/// agent (its new pointer) and the deployment it stopped serving (now inactive).
pub(super) async fn publish_pointer_moved(
    env: &Env,
    store: &D1Store,
    deploy: &DeployConfig,
    owner: &UserId,
    agent: &AgentId,
    served_before: Option<String>,
) {
    let Ok(Some(now)) = store.agent(owner, agent).await else {
        return;
    };
    if now.active_deployment_id == served_before {
        return;
    }
    if let Ok(data) = serde_json::to_value(&now) {
        publish_now(
            env,
            owner,
            Publication {
                kind: FeedKind::Agent,
                data,
            },
        )
        .await;
    }
    if let Some(previous) = served_before {
        publish_deployment(env, store, deploy, owner, agent, &previous).await;
    }
}

/// Runs `work` after the response is sent (the deploy itself, clean-up after a delete).
pub(super) fn in_background(
    ctx: &Context,
    env: &Env,
    config: &Rc<ServiceConfig>,
    work: Background,
) {
    let env = env.clone();
    let config = config.clone();
    ctx.wait_until(async move {
        let Some(deploy) = &config.deploy else { return };
        let outcome = match work {
            Background::Deploy(pending) => {
                let id = pending.deployment.id.clone();
                let (owner, agent) = (
                    pending.deployment.user_id.clone(),
                    pending.deployment.agent_id.clone(),
                );
                let store = match d1_database(&env) {
                    Ok(db) => D1Store::new(db),
                    Err(e) => return console_error!("deploy {id}: no database: {}", e.message),
                };
                // The code, kept by its content address before it is uploaded (once per address).
                let sha256 = &pending.deployment.code_sha256;
                if let Some(spec) = pending.code() {
                    store_artifact(&env, &store, spec, sha256).await;
                }
                // What the agent served before, to report it inactive if this deploy replaces it.
                let served_before = store
                    .agent(&owner, &agent)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|a| a.active_deployment_id);
                let provider = FetchProvider {
                    base_url: &deploy.api_base_url,
                    api_token: &deploy.api_token,
                };
                let outcome = deployments::run_deploy(
                    &store,
                    &UserGateClient::new(&env),
                    &runtimes(&store, &provider, deploy),
                    &JsClock,
                    &pending,
                )
                .await
                .inspect(|status| console_log!("deploy {id} finished {}", status.as_str()));
                // Once more (a HEAD when it is there): had the clean-up removed this code between its check of
                // references and its delete, while this deploy was recorded, it is stored again.
                if let Some(spec) = pending.code() {
                    store_artifact(&env, &store, spec, sha256).await;
                }
                let outcome = match outcome {
                    // Left to its follower (AgentCore still starting the version): reported when it ends.
                    Ok(DeploymentStatus::Deploying) => Ok(()),
                    Ok(status) => {
                        report_finished(&env, &owner, &agent, &id, Some(status)).await;
                        Ok(())
                    }
                    // Something failed after the deploy ended (the gate not told, say): its trail says how it
                    // ended as stored, when that is known; a deploy still `deploying` is its follower's to report.
                    Err(e) => {
                        match store.deployment(&owner, &agent, &id).await {
                            Ok(Some(d)) if d.status == DeploymentStatus::Deploying => {}
                            Ok(Some(d)) => {
                                report_finished(&env, &owner, &agent, &id, Some(d.status)).await
                            }
                            Ok(None) => report_finished(&env, &owner, &agent, &id, None).await,
                            // Unknown: whoever ends it later reports it.
                            Err(read) => {
                                console_error!("deploy {id}: its end is not known: {}", read.0)
                            }
                        }
                        Err(e)
                    }
                };
                // The owner's live feed: the deployment as it stands, and the pointer if it moved.
                publish_deployment(&env, &store, deploy, &owner, &agent, id.as_str()).await;
                publish_pointer_moved(&env, &store, deploy, &owner, &agent, served_before).await;
                outcome
            }
            Background::CleanUp => clean_up(&env, deploy).await.map(|_| ()),
        };
        if let Err(e) = outcome {
            console_error!(
                "background work failed: {}",
                e.internal_cause.unwrap_or(e.message)
            );
        }
    });
}

/// Waits on the Workers timer (a deploy's backoff between provider retries).
pub(super) struct WorkersTimer;

impl Sleeper for WorkersTimer {
    async fn sleep(&self, ms: u64) {
        worker::Delay::from(std::time::Duration::from_millis(ms)).await;
    }
}

pub(super) enum Background {
    Deploy(Box<deployments::PendingDeploy>),
    CleanUp,
}
