//! The `DeployFollower` client: hands a new deploy to its follower, which looks at it from 25 s on until it
//! leaves `deploying`. Best effort: a deploy whose follower cannot be reached is still followed by the cron job
//! and ended by the clean-up job's timeout.

use super::post_json;
use crate::app::deployments::{FollowRequest, DEPLOY_FOLLOWER_BINDING, FOLLOW_PATH};
use crate::domain::deployment::Deployment;
use worker::Env;

pub async fn follow(env: &Env, deployment: &Deployment) -> Result<(), String> {
    let request = FollowRequest::of(deployment);
    post_json(
        env,
        DEPLOY_FOLLOWER_BINDING,
        &request.deployment_id,
        FOLLOW_PATH,
        &request,
    )
    .await
    .map_err(|e| e.to_string())
}
