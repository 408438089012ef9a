//! The operator API (`/v1/admin/…`) on the Workers side: the token is checked before any body is read, the call
//! is run by `app::admin`, and every call that got here is audited.

use super::d1::D1Store;
use super::durable::user_gate::UserGateClient;
use super::reply::Reply;
use super::request::{header, read_json};
use super::JsClock;
use crate::app::admin::{self, AdminCall, Sealing};
use crate::app::ports::Clock;
use crate::config::ServiceConfig;
use crate::domain::ids::RequestId;
use crate::domain::telemetry::RejectThrottle;
use crate::domain::ApiError;
use crate::http::body::MAX_JSON_BODY_BYTES;
use crate::http::routes::Route;
use serde_json::Value;
use worker::{console_error, Request};

thread_local! {
    // One per isolate for its whole life (leaked once), so a reference can be held across the audit's await.
    static REFUSALS: &'static std::cell::RefCell<RejectThrottle> =
        Box::leak(Box::new(std::cell::RefCell::new(RejectThrottle::default())));
}

/// Refuses a request without the operator's token (for operator routes outside `app::admin`).
pub(super) fn require_operator(req: &Request, config: &ServiceConfig) -> Result<(), ApiError> {
    admin::check_token(
        config.admin_token.as_deref(),
        header(req, "Authorization").as_deref(),
    )
}

pub(super) async fn handle(
    req: &mut Request,
    store: &D1Store,
    gate: &UserGateClient<'_>,
    config: &ServiceConfig,
    request_id: &RequestId,
    route: &Route,
) -> Result<Reply, ApiError> {
    let (action, raw_user) = match route {
        Route::AdminSetTier(u) => ("set_tier", Some(u.as_str())),
        Route::AdminSetEntitlements(u) => ("set_entitlements", Some(u.as_str())),
        Route::AdminUsage(u) => ("get_usage", Some(u.as_str())),
        Route::AdminRefreshGate(u) => ("refresh_gate", Some(u.as_str())),
        Route::AdminRecompute => ("recompute_usage", None),
        Route::AdminReseal => ("reseal_secrets", None),
        _ => return Err(ApiError::internal("not an admin route")),
    };
    let mut call = None;
    let outcome = run(req, store, gate, config, route, &mut call).await;
    let throttle = REFUSALS.with(|t| *t);
    if let Err(e) = admin::audit(
        store,
        throttle,
        request_id.as_str(),
        JsClock.now_ms(),
        action,
        raw_user,
        call.as_ref(),
        &outcome,
    )
    .await
    {
        console_error!("audit write failed for {action} ({request_id}): {e}");
    }
    outcome.map(|body| Reply::Json(200, body))
}

async fn run(
    req: &mut Request,
    store: &D1Store,
    gate: &UserGateClient<'_>,
    config: &ServiceConfig,
    route: &Route,
    call: &mut Option<AdminCall>,
) -> Result<Value, ApiError> {
    admin::check_token(
        config.admin_token.as_deref(),
        header(req, "Authorization").as_deref(),
    )?;
    let made = match route {
        Route::AdminSetTier(user) => AdminCall::SetTier {
            user: user.clone(),
            body: read_json(req, MAX_JSON_BODY_BYTES).await?.1,
        },
        Route::AdminSetEntitlements(user) => AdminCall::SetEntitlements {
            user: user.clone(),
            body: read_json(req, MAX_JSON_BODY_BYTES).await?.1,
        },
        Route::AdminUsage(user) => AdminCall::Usage {
            user: user.clone(),
            period: req
                .url()
                .map_err(ApiError::internal)?
                .query_pairs()
                .find(|(k, _)| k == "period")
                .map(|(_, v)| v.into_owned()),
        },
        Route::AdminRefreshGate(user) => AdminCall::RefreshGate { user: user.clone() },
        Route::AdminRecompute => AdminCall::Recompute {
            body: read_json(req, MAX_JSON_BODY_BYTES).await?.1,
        },
        Route::AdminReseal => AdminCall::Reseal,
        _ => return Err(ApiError::internal("not an admin route")),
    };
    let made = call.insert(made);
    let sealing = Sealing {
        store,
        keys: config.deploy.as_ref().map(|d| &d.encryption_key),
    };
    admin::run(
        store,
        store,
        gate,
        sealing,
        &config.tiers,
        made,
        JsClock.now_ms(),
    )
    .await
}
