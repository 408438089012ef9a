//! The billing routes on the Workers side: the webhook (verified, stored, acknowledged, then processed after the
//! answer), a user's checkout, portal and plan, the operators' event list and retry, and the scheduled retries.

use super::admin::require_operator;
use super::audit::{record, record_now};
use super::d1::D1Store;
use super::durable::user_feed::publish_now;
use super::durable::user_gate::UserGateClient;
use super::reply::{json_reply, Reply};
use super::request::{header, read_body, read_json};
use super::stripe::FetchStripe;
use super::JsClock;
use crate::app::audit::{Actor, AuditRecord};
use crate::app::billing::process::Processed;
use crate::app::billing::requests::{
    checkout, list_events, portal, process_and_record, process_due, prune_events, retry_event, view,
};
use crate::app::billing::webhook::receive;
use crate::app::billing::{BillingConfig, BillingStore, EventStatus};
use crate::app::ports::Clock;
use crate::config::ServiceConfig;
use crate::domain::feed::{FeedKind, Publication};
use crate::domain::ids::{random_hex, RequestId};
use crate::domain::telemetry::RejectThrottle;
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use crate::http::body::MAX_JSON_BODY_BYTES;
use crate::http::routes::Route;
use serde_json::json;
use std::collections::HashMap;
use worker::{console_error, console_log, Context, Env, Request};

/// Stripe's events are small; a larger body is not one of them.
const MAX_WEBHOOK_BYTES: usize = 512 * 1024;

fn configured(config: &ServiceConfig) -> Result<&BillingConfig, ApiError> {
    config.billing.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::BillingNotConfigured,
            "Billing is not configured on this control plane (STRIPE_SECRET_KEY).",
        )
    })
}

fn stripe(billing: &BillingConfig) -> FetchStripe<'_> {
    FetchStripe {
        base_url: &billing.api_base_url,
        secret_key: &billing.secret_key,
    }
}

/// The key a create carries to Stripe: the client's `Idempotency-Key` (so its retry gets the same session), or
/// a fresh one.
fn idempotency_key(req: &Request, user: &User, what: &str) -> String {
    match header(req, "Idempotency-Key").filter(|k| !k.is_empty() && k.len() <= 200) {
        Some(key) => format!("{what}-{}-{key}", user.id.as_str()),
        None => format!("{what}-{}", random_hex(16)),
    }
}

/// After processing: the owner's audit trail records the event and what it did, and if their plan changed, their
/// live feed says so.
async fn announce(env: &Env, processed: &Processed) {
    let o = &processed.outcome;
    let (from, to) = processed
        .tier_change
        .as_ref()
        .map_or((None, None), |(_, from, to)| {
            (Some(from.as_str()), Some(to.as_str()))
        });
    record_now(
        env,
        &AuditRecord {
            at: o.at,
            request_id: None,
            actor: Actor::Stripe,
            user_id: o.user_id.clone(),
            action: "billing.event",
            target: Some(processed.event_id.clone()),
            agent_id: None,
            outcome: match o.status {
                EventStatus::Processed | EventStatus::Ignored => "ok",
                EventStatus::Rejected => "refused",
                _ => "failed",
            },
            status: None,
            detail: Some(json!({ "type": processed.kind, "status": o.status.as_str(), "tierFrom": from, "tierTo": to, "error": o.error })),
        },
    )
    .await;
    if let Some((user, from, to)) = &processed.tier_change {
        console_log!(
            "billing: {user} moved from {} to {}",
            from.as_str(),
            to.as_str()
        );
        let data = json!({ "tier": to.as_str() });
        publish_now(
            env,
            user,
            Publication {
                kind: FeedKind::Plan,
                data,
            },
        )
        .await;
    }
}

thread_local! {
    /// Refused webhooks written to the audit trail per minute and isolate; the rest are counted into the next row.
    static REFUSED: std::cell::RefCell<RejectThrottle> = std::cell::RefCell::new(RejectThrottle::default());
}

/// A refused webhook's record (throttled): the reason, never the body.
fn record_refusal(ctx: &Context, env: &Env, request_id: &RequestId, error: &ApiError) {
    let now = JsClock.now_ms();
    let Some(suppressed) = REFUSED.with(|t| t.borrow_mut().admit(now)) else {
        return;
    };
    record(
        ctx,
        env,
        AuditRecord {
            at: now,
            request_id: Some(request_id.as_str().to_owned()),
            actor: Actor::Stripe,
            user_id: None,
            action: "billing.webhook_refused",
            target: None,
            agent_id: None,
            outcome: "refused",
            status: Some(error.status()),
            detail: Some(
                json!({ "code": error.code.as_str(), "reason": error.details.as_ref().and_then(|d| d.get("reason")), "suppressed": suppressed }),
            ),
        },
    );
}

/// `POST /v1/billing/webhook`.
pub(super) async fn webhook(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    store: &D1Store,
    config: &ServiceConfig,
    request_id: &RequestId,
) -> Result<Reply, ApiError> {
    let billing = configured(config)?;
    let signature = header(req, "Stripe-Signature");
    let body = read_body(req, MAX_WEBHOOK_BYTES).await?;
    let now = JsClock.now_ms();
    let received = match receive(store, billing, signature.as_deref(), &body, now).await {
        Ok(received) => received,
        Err(e) => {
            if e.status() < 500 {
                record_refusal(ctx, env, request_id, &e);
            }
            return Err(e);
        }
    };
    if received.needs_processing {
        let (env, billing, id) = (env.clone(), billing.clone(), received.event_id.clone());
        ctx.wait_until(async move {
            let Ok(db) = super::bindings::d1_database(&env) else {
                return;
            };
            let store = D1Store::new(db);
            let gate = UserGateClient::new(&env);
            match process_and_record(
                &store,
                &gate,
                &stripe(&billing),
                &billing,
                &id,
                &JsClock,
                false,
            )
            .await
            {
                Ok(Some(processed)) => announce(&env, &processed).await,
                Ok(None) => {}
                // Its lease ends and the scheduled job processes it.
                Err(e) => console_error!(
                    "billing event {id}: {}",
                    e.internal_cause.unwrap_or(e.message)
                ),
            }
        });
    }
    json_reply(200, &received)
}

/// `GET /v1/billing`, `POST /v1/billing/checkout`, `POST /v1/billing/portal`.
pub(super) async fn for_user(
    req: &mut Request,
    store: &D1Store,
    config: &ServiceConfig,
    route: &Route,
    user: &User,
) -> Result<Reply, ApiError> {
    let billing = configured(config)?;
    let now = JsClock.now_ms();
    match route {
        Route::Billing => json_reply(200, &view(store, billing, user).await?),
        Route::BillingCheckout => {
            let (_, body) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            let key = idempotency_key(req, user, "checkout");
            json_reply(
                200,
                &checkout(store, &stripe(billing), billing, user, &body, key, now).await?,
            )
        }
        Route::BillingPortal => {
            let key = idempotency_key(req, user, "portal");
            json_reply(
                200,
                &portal(store, &stripe(billing), billing, user, key).await?,
            )
        }
        _ => Err(ApiError::internal("not a billing route")),
    }
}

/// `GET /v1/admin/billing/events?status=`, `POST /v1/admin/billing/events/{id}/retry` (operator token).
pub(super) async fn for_operator(
    req: &Request,
    env: &Env,
    store: &D1Store,
    config: &ServiceConfig,
    route: &Route,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    require_operator(req, config)?;
    let billing = configured(config)?;
    match route {
        Route::AdminBillingEvents => json_reply(
            200,
            &json!({ "events": list_events(store, query.get("status").map(String::as_str)).await? }),
        ),
        Route::AdminRetryBillingEvent(id) => {
            let gate = UserGateClient::new(env);
            let processed =
                retry_event(store, &gate, &stripe(billing), billing, id, &JsClock).await?;
            announce(env, &processed).await;
            let event = store.event(id).await?;
            json_reply(200, &json!({ "event": event }))
        }
        _ => Err(ApiError::internal("not a billing admin route")),
    }
}

/// The scheduled job's part: every due event, processed.
pub(super) async fn process_due_events(env: &Env, config: &ServiceConfig, store: &D1Store) {
    let Some(billing) = &config.billing else {
        return;
    };
    let gate = UserGateClient::new(env);
    match process_due(store, &gate, &stripe(billing), billing, &JsClock).await {
        Ok(done) if !done.is_empty() => {
            console_log!("billing: {} due events processed", done.len());
            for processed in &done {
                announce(env, processed).await;
            }
        }
        Ok(_) => {}
        Err(e) => console_error!(
            "billing retries failed: {}",
            e.internal_cause.unwrap_or(e.message)
        ),
    }
    match prune_events(
        store,
        config.billing_events_retention_days,
        JsClock.now_ms(),
    )
    .await
    {
        Ok(n) if n > 0 => console_log!("retention: {n} billing events pruned"),
        Ok(_) => {}
        Err(e) => console_error!(
            "billing retention failed: {}",
            e.internal_cause.unwrap_or(e.message)
        ),
    }
}
