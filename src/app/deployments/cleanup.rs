//! The scheduled clean-up of deploys: fail the ones stuck in `deploying`, delete provider scripts nobody needs.

use super::*;
use crate::app::runtime::{LeftBehind, RuntimeProvider};
use crate::domain::ids::{AgentId, UserId};

/// What one clean-up run did.
pub struct CleanUpRun {
    /// The deploys it failed (id, agent, owner: to report them).
    pub failed: Vec<(DeploymentId, AgentId, UserId)>,
    /// How many scripts, versions and runtimes it deleted.
    pub deleted: u32,
    /// What it could not remove, and why (tried again on the next run).
    pub not_removed: Vec<(DeploymentId, String)>,
}

/// The scheduled clean-up: fail stuck deploys, then delete scripts (and AgentCore versions and the runtimes of
/// deleted agents) nobody needs.
pub async fn clean_up<S: DeploymentStore, C: Clock>(
    store: &S,
    runtime: &impl RuntimeProvider,
    aws: &impl crate::app::ports::AwsApi,
    clock: &C,
    config: &DeployConfig,
) -> Result<CleanUpRun, ApiError> {
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
    let mut deleted =
        super::agentcore::remove_deleted_agents_runtimes(store, aws, clock, config).await?;
    let mut not_removed = Vec::new();
    for UnneededScript {
        deployment_id,
        agent_id,
        script_name,
        runtime_provider,
        provider_ref,
        finished_at,
    } in store
        .unneeded_scripts(
            KEEP_INACTIVE_FOR_ROLLBACK,
            50,
            now - super::agentcore::UNRECORDED_SEARCH_AFTER_MS,
        )
        .await?
    {
        let id = deployment_id.clone();
        let removed = runtime
            .remove(&LeftBehind {
                id: deployment_id,
                agent_id,
                runtime_provider,
                script_name,
                provider_ref,
                ended_at: finished_at,
            })
            .await;
        match removed {
            Ok(()) => deleted += 1,
            Err(e) => not_removed.push((id, e.internal_cause.unwrap_or(e.message))),
        }
    }
    Ok(CleanUpRun {
        failed,
        deleted,
        not_removed,
    })
}

/// Deletes one deployment's script (a missing script counts as deleted) and records it. A provider refusal and a
/// storage failure are both reported as what they are; the caller retries on the next clean-up.
pub(super) async fn delete_script<S: DeploymentStore, P: ProviderApi>(
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
