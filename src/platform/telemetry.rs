//! `POST /v1/telemetry/report` on the Workers side: the checks that need no body or database, the body read
//! within its limit, then `app::telemetry`. Refusals are audited (within the isolate's throttle).

use super::d1::D1Store;
use super::durable::user_feed;
use super::durable::user_gate::UserGateClient;
use super::reply::Reply;
use super::request::{header, read_body};
use super::router::{charge_address, client_address};
use super::JsClock;
use crate::app::deployments::deploys_not_configured;
use crate::app::ports::Clock;
use crate::app::telemetry::{audit_reject, ingest, SignedReport};
use crate::auth::verdict_cache::{VerdictCache, DEFAULT_CAPACITY};
use crate::config::ServiceConfig;
use crate::domain::ids::{DeploymentId, RequestId};
use crate::domain::telemetry::{
    parse_deployment_header, parse_signature_header, RejectThrottle, DEPLOYMENT_HEADER,
    MAX_REPORT_BYTES, SIGNATURE_HEADER,
};
use crate::domain::ApiError;
use crate::http::body::{check_declared_length, check_json_content_type};
use std::cell::RefCell;
use worker::{console_error, Context, Env, Request};

thread_local! {
    // One per isolate for its whole life (leaked once), so a reference can be held across the audit's await.
    static REJECTS: &'static RefCell<RejectThrottle> =
        Box::leak(Box::new(RefCell::new(RejectThrottle::default())));
    // Deployments whose reports this isolate accepted lately: any other claimed id costs a D1 read to refuse,
    // so its report is charged to the sender's address first (agents' own reports are not, once known).
    static KNOWN: RefCell<VerdictCache<String, ()>> = RefCell::new(VerdictCache::new(DEFAULT_CAPACITY));
}

/// How long a deployment whose report was accepted stays known.
const KNOWN_FOR_MS: i64 = 60 * 60 * 1000;

/// Accepts one signed report, or refuses it (and audits the refusal, within the throttle).
pub(super) async fn report(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    store: &D1Store,
    config: &ServiceConfig,
    request_id: &RequestId,
) -> Result<Reply, ApiError> {
    let now = JsClock.now_ms();
    let claimed = parse_deployment_header(header(req, DEPLOYMENT_HEADER).as_deref());
    let known = claimed
        .as_ref()
        .is_ok_and(|id| KNOWN.with(|k| k.borrow_mut().get(&id.as_str().to_owned(), now).is_some()));
    if !known {
        // Refused without an audit row: a flood of made-up deployment ids writes nothing.
        charge_address(&client_address(req), config)?;
    }
    let outcome = match &claimed {
        Ok(deployment_id) => receive(req, env, ctx, store, config, deployment_id, now).await,
        Err(e) => Err(e.clone()),
    };
    if let (Ok(_), Ok(id)) = (&outcome, &claimed) {
        KNOWN.with(|k| {
            k.borrow_mut()
                .put(id.as_str().to_owned(), (), now + KNOWN_FOR_MS, now)
        });
    }
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
    ctx: &Context,
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
    if accepted.accepted > 0 {
        let (env, owner, period) = (
            env.clone(),
            accepted.owner.clone(),
            accepted.period_key.clone(),
        );
        ctx.wait_until(async move { user_feed::usage_moved(&env, &owner, &period).await });
    }
    Ok(Reply::Json(
        200,
        serde_json::to_value(&accepted).map_err(ApiError::internal)?,
    ))
}
