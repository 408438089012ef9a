//! `POST /v1/telemetry/report` on the Workers side: the checks that need no body or database, the body read
//! within its limit, then `app::telemetry`. Refusals are audited (within the isolate's throttle).

use super::d1::D1Store;
use super::durable::user_gate::UserGateClient;
use super::reply::Reply;
use super::request::{header, read_body};
use super::JsClock;
use crate::app::deployments::deploys_not_configured;
use crate::app::ports::Clock;
use crate::app::telemetry::{audit_reject, ingest, SignedReport};
use crate::config::ServiceConfig;
use crate::domain::ids::{DeploymentId, RequestId};
use crate::domain::telemetry::{
    parse_deployment_header, parse_signature_header, RejectThrottle, DEPLOYMENT_HEADER,
    MAX_REPORT_BYTES, SIGNATURE_HEADER,
};
use crate::domain::ApiError;
use crate::http::body::{check_declared_length, check_json_content_type};
use std::cell::RefCell;
use worker::{console_error, Env, Request};

thread_local! {
    // One per isolate for its whole life (leaked once), so a reference can be held across the audit's await.
    static REJECTS: &'static RefCell<RejectThrottle> =
        Box::leak(Box::new(RefCell::new(RejectThrottle::default())));
}

/// Accepts one signed report, or refuses it (and audits the refusal, within the throttle).
pub(super) async fn report(
    req: &mut Request,
    env: &Env,
    store: &D1Store,
    config: &ServiceConfig,
    request_id: &RequestId,
) -> Result<Reply, ApiError> {
    let now = JsClock.now_ms();
    let claimed = parse_deployment_header(header(req, DEPLOYMENT_HEADER).as_deref());
    let outcome = match &claimed {
        Ok(deployment_id) => receive(req, env, store, config, deployment_id, now).await,
        Err(e) => Err(e.clone()),
    };
    if let Err(err) = &outcome {
        if err.status() < 500 {
            let claimed = claimed.as_ref().ok().map(DeploymentId::as_str);
            let throttle = REJECTS.with(|t| *t);
            if let Err(e) =
                audit_reject(store, throttle, request_id.as_str(), now, err, claimed).await
            {
                console_error!("auditing a telemetry reject ({request_id}) failed: {e}");
            }
        }
    }
    outcome
}

async fn receive(
    req: &mut Request,
    env: &Env,
    store: &D1Store,
    config: &ServiceConfig,
    deployment_id: &DeploymentId,
    now: i64,
) -> Result<Reply, ApiError> {
    // Everything that can be judged without reading the body or the database, first.
    let tag = parse_signature_header(header(req, SIGNATURE_HEADER).as_deref())?;
    check_json_content_type(header(req, "Content-Type").as_deref())?;
    check_declared_length(header(req, "Content-Length").as_deref(), MAX_REPORT_BYTES)?;
    let body = read_body(req, MAX_REPORT_BYTES).await?;
    let key = &config
        .deploy
        .as_ref()
        .ok_or_else(deploys_not_configured)?
        .encryption_key;
    let gate = UserGateClient::new(env);
    let report = SignedReport {
        deployment_id,
        tag: &tag,
        body: &body,
    };
    let accepted = ingest(store, store, &gate, key, report, now).await?;
    Ok(Reply::Json(
        200,
        serde_json::to_value(&accepted).map_err(ApiError::internal)?,
    ))
}
