//! The `DeployFollower` client: hands a new deploy to its follower, which looks at it from 25 s on until it
//! leaves `deploying`. Best effort: a deploy whose follower cannot be reached is still followed by the cron job
//! and ended by the clean-up job's timeout.

use crate::app::deployments::{FollowRequest, DEPLOY_FOLLOWER_BINDING, FOLLOW_PATH};
use crate::domain::deployment::Deployment;
use wasm_bindgen::JsValue;
use worker::{Env, Method, Request, RequestInit};

pub async fn follow(env: &Env, deployment: &Deployment) -> Result<(), String> {
    let run = async {
        let request = FollowRequest::of(deployment);
        let body =
            serde_json::to_string(&request).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(&body)));
        let res = env
            .durable_object(DEPLOY_FOLLOWER_BINDING)?
            .id_from_name(&request.deployment_id)?
            .get_stub()?
            .fetch_with_request(Request::new_with_init(
                &format!("https://follower{FOLLOW_PATH}"),
                &init,
            )?)
            .await?;
        match res.status_code() {
            200 => Ok(()),
            status => Err(worker::Error::RustError(format!(
                "{DEPLOY_FOLLOWER_BINDING} answered {status}"
            ))),
        }
    };
    run.await.map_err(|e: worker::Error| e.to_string())
}
