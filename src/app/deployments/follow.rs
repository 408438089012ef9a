//! Following deploys their own background work did not finish: an AgentCore version still starting when the
//! deploy's budget ran out, and a deploy whose background work was cut off before it recorded anything. A
//! per-deployment alarm (the `DeployFollower` Durable Object) looks at each deploy a few seconds at a time until it
//! leaves `deploying`; the cron job looks at every pending one on each run, as a backstop.

use super::{finish, DEPLOY_TIMEOUT_MS};
use crate::app::ports::{Clock, DeploymentStore, GateNotifier, Store};
use crate::app::runtime::RuntimeProvider;
use crate::domain::deployment::{Deployment, DeploymentError, DeploymentStatus};
use crate::domain::ids::{AgentId, DeploymentId, UserId};
use crate::domain::ApiError;
use serde::{Deserialize, Serialize};

/// The Durable Object that follows one deploy (addressed by its deployment id), and its one route.
pub const DEPLOY_FOLLOWER_BINDING: &str = "DEPLOY_FOLLOWER";
pub const FOLLOW_PATH: &str = "/follow";

/// `POST /follow` to a deploy's follower: which deploy (ids as the control plane wrote them: only it calls the
/// follower), and when it was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowRequest {
    pub user_id: String,
    pub agent_id: String,
    pub deployment_id: String,
    pub created_at: i64,
}

impl FollowRequest {
    pub fn of(d: &Deployment) -> Self {
        FollowRequest {
            user_id: d.user_id.to_string(),
            agent_id: d.agent_id.to_string(),
            deployment_id: d.id.to_string(),
            created_at: d.created_at,
        }
    }

    pub fn ids(&self) -> (UserId, AgentId, DeploymentId) {
        (
            UserId::from_trusted(self.user_id.clone()),
            AgentId::from_trusted(self.agent_id.clone()),
            DeploymentId::from_trusted(self.deployment_id.clone()),
        )
    }

    pub fn first_look_at_ms(&self) -> i64 {
        self.created_at + FIRST_LOOK_AFTER_MS
    }

    /// Past the deploy timeout there is nothing left to follow (the clean-up job fails the deploy); a follower
    /// whose looks keep failing gives up then too.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms - self.created_at >= DEPLOY_TIMEOUT_MS
    }
}

/// The first look, after the deploy's own background work (18 s of following plus one call) is over.
pub const FIRST_LOOK_AFTER_MS: i64 = 25_000;

/// Past this, nothing of a deploy's own background work still runs: Workers end work left after a response 30 s
/// after it, and a deploy's budget is inside that. A deploy that recorded no version by then never will.
const INTERRUPTED_AFTER_MS: i64 = 90_000;

/// The cron job leaves younger pending deploys to their own background work and their alarm.
const CRON_FOLLOWS_AFTER_MS: i64 = 60_000;

/// What one look at a deploy came to.
#[derive(Debug)]
pub enum FollowStep {
    /// It ended now, by this look: how, and the deployment its agent served before (to report it inactive
    /// when the pointer moved).
    Finished {
        deployment: Box<Deployment>,
        status: DeploymentStatus,
        served_before: Option<String>,
    },
    /// Still deploying: look again in this many milliseconds.
    Again(i64),
    /// Nothing more to follow: it ended some other way, it is gone, or it is past the deploy timeout (the
    /// clean-up job fails it).
    Over,
}

/// When to look at a deploy again, by its age: every 5 s in its first two minutes (an AgentCore version is
/// usually READY within them), then every 15 s, then every 30 s.
pub fn next_look_in_ms(age_ms: i64) -> i64 {
    match age_ms {
        a if a < 120_000 => 5_000,
        a if a < 300_000 => 15_000,
        _ => 30_000,
    }
}

fn interrupted() -> DeploymentError {
    DeploymentError::platform(
        "interrupted",
        "internal",
        "The deploy's background work ended before it recorded anything on the runtime; deploy again.",
    )
}

/// One look at a deployment that may still be deploying. A recorded runtime reference (an AgentCore version) is
/// followed at its runtime; a deploy that recorded none past `INTERRUPTED_AFTER_MS` was cut off, and is failed
/// (what it may have left is removed, as for any failure). Only the follower that changes the row reports it.
#[allow(clippy::too_many_arguments)]
pub async fn follow_deployment<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    runtime: &impl RuntimeProvider,
    clock: &C,
    owner: &UserId,
    agent: &AgentId,
    id: &DeploymentId,
) -> Result<FollowStep, ApiError> {
    let Some(d) = store.deployment(owner, agent, id).await? else {
        return Ok(FollowStep::Over);
    };
    let age = clock.now_ms() - d.created_at;
    if d.status != DeploymentStatus::Deploying || age >= DEPLOY_TIMEOUT_MS {
        return Ok(FollowStep::Over);
    }
    let outcome = if d.provider_ref.is_some() {
        runtime.follow(&d).await
    } else if age >= INTERRUPTED_AFTER_MS {
        Err(interrupted())
    } else {
        return Ok(FollowStep::Again(
            next_look_in_ms(age).min(INTERRUPTED_AFTER_MS - age),
        ));
    };
    finish_followed(store, gate, runtime, clock, d, outcome, age).await
}

async fn finish_followed<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    runtime: &impl RuntimeProvider,
    clock: &C,
    d: Deployment,
    outcome: Result<crate::app::runtime::Deployed, DeploymentError>,
    age: i64,
) -> Result<FollowStep, ApiError> {
    let served_before = store
        .agent(&d.user_id, &d.agent_id)
        .await
        .ok()
        .flatten()
        .and_then(|a| a.active_deployment_id);
    Ok(
        match finish(store, gate, runtime, clock, &d, outcome).await? {
            Some(status) => FollowStep::Finished {
                deployment: Box::new(d),
                status,
                served_before,
            },
            None => FollowStep::Again(next_look_in_ms(age)),
        },
    )
}

/// The cron job's follow-up: deploys their runtime left pending (AgentCore versions take minutes), each looked
/// at once and finished when its runtime says so. Returns the ones that finished, how, and the deployment their
/// agent served before.
pub async fn follow_pending<S: Store + DeploymentStore, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    runtime: &impl RuntimeProvider,
    clock: &C,
) -> Result<Vec<(Deployment, DeploymentStatus, Option<String>)>, ApiError> {
    let mut finished = Vec::new();
    let now = clock.now_ms();
    for d in store
        .pending_deployments(now - CRON_FOLLOWS_AFTER_MS, 20)
        .await?
    {
        let outcome = runtime.follow(&d).await;
        let age = now - d.created_at;
        // One that cannot be finished now (storage, the gate) is looked at again on the next run.
        if let Ok(FollowStep::Finished {
            deployment,
            status,
            served_before,
        }) = finish_followed(store, gate, runtime, clock, d, outcome, age).await
        {
            finished.push((*deployment, status, served_before));
        }
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_is_looked_at_often_at_first_and_less_as_it_ages() {
        assert_eq!(next_look_in_ms(25_000), 5_000);
        assert_eq!(next_look_in_ms(119_999), 5_000);
        assert_eq!(next_look_in_ms(120_000), 15_000);
        assert_eq!(next_look_in_ms(300_000), 30_000);
        // Every deploy is looked at at least once after its own work is certainly over, and before the timeout.
        const { assert!(FIRST_LOOK_AFTER_MS < INTERRUPTED_AFTER_MS) };
        const { assert!(INTERRUPTED_AFTER_MS < DEPLOY_TIMEOUT_MS) };
    }

    #[test]
    fn a_follow_request_is_what_the_follower_stores_and_it_expires_with_the_deploy_timeout() {
        let request = FollowRequest {
            user_id: UserId::generate().to_string(),
            agent_id: AgentId::generate().to_string(),
            deployment_id: DeploymentId::generate().to_string(),
            created_at: 1_000,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.contains("\"deploymentId\":\"dep_"), "{text}");
        assert_eq!(
            serde_json::from_str::<FollowRequest>(&text).unwrap(),
            request
        );
        assert_eq!(request.first_look_at_ms(), 1_000 + FIRST_LOOK_AFTER_MS);
        assert!(!request.expired(1_000 + DEPLOY_TIMEOUT_MS - 1));
        assert!(request.expired(1_000 + DEPLOY_TIMEOUT_MS));
    }
}
