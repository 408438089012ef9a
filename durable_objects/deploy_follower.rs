//! `DeployFollower`: one per deploy (addressed by its deployment id). The deploy's request hands it the deploy
//! (`POST /follow`, a `FollowRequest`); its alarm then looks at the deploy — first once the deploy's own
//! background work is over, then every few seconds — until the deploy is active or failed
//! (`app::deployments::follow_deployment` decides; `platform::jobs::follow_one` reports), and forgets it.

use super::{error_response, read_body};
use crate::app::deployments::{FollowRequest, FOLLOW_PATH};
use crate::domain::{ApiError, ErrorCode};
use worker::{
    durable_object, js_sys, DurableObject, Env, Method, Request, Response, Result, ScheduledTime,
    State,
};

const REQUEST_KEY: &str = "request";

/// An alarm time as a point in time (a bare number would be an offset from now).
fn at(epoch_ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&(epoch_ms as f64).into()))
}
/// A look that failed (storage, the gate) is tried again after this long.
const RETRY_AFTER_FAILURE_MS: i64 = 30_000;

#[durable_object]
pub struct DeployFollower {
    state: State,
    env: Env,
}

impl DurableObject for DeployFollower {
    fn new(state: State, env: Env) -> Self {
        DeployFollower { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if !(req.method() == Method::Post && req.path() == FOLLOW_PATH) {
            return error_response(ApiError::new(
                ErrorCode::RouteNotFound,
                "No such Durable Object route.",
            ));
        }
        let request: FollowRequest = match read_body(&mut req).await {
            Ok(request) => request,
            Err(e) => return error_response(e),
        };
        let storage = self.state.storage();
        // Stored as JSON text: what is read back is exactly what was written.
        let text =
            serde_json::to_string(&request).map_err(|e| worker::Error::RustError(e.to_string()))?;
        storage.put(REQUEST_KEY, text).await?;
        // A repeated hand-over keeps the schedule it already has.
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(at(request.first_look_at_ms())).await?;
        }
        Response::ok("following")
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let text: Option<String> = storage.get(REQUEST_KEY).await?;
        let Some(request) = text.and_then(|t| serde_json::from_str::<FollowRequest>(&t).ok())
        else {
            storage.delete_all().await?;
            return Response::ok("nothing to follow");
        };
        let now = js_sys::Date::now() as i64;
        let next = match crate::platform::follow_one(&self.env, &request).await {
            Ok(next) => next,
            Err(e) => {
                worker::console_error!("following deploy {}: {e}", request.deployment_id);
                Some(RETRY_AFTER_FAILURE_MS)
            }
        };
        match next.filter(|_| !request.expired(now)) {
            Some(after_ms) => storage.set_alarm(at(now + after_ms)).await?,
            None => storage.delete_all().await?,
        }
        Response::ok("looked")
    }
}
