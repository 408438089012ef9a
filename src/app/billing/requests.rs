//! What users and operators ask of billing: a checkout, the portal, their plan; the events, and a retry.

use super::process::{process, Processed};
use super::{
    BillingConfig, BillingStore, EventStatus, StoredEvent, StoredSubscription, StripeApi,
    CLAIM_LEASE_MS,
};
use crate::app::ports::Clock;
use crate::app::ports::GateNotifier;
use crate::domain::entitlements::Tier;
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use crate::stripe::api::{
    create_checkout_session, create_customer, create_portal_session, created_id, session_url,
    Checkout, StripeError, StripeFailure,
};
use serde::Serialize;
use serde_json::{json, Value};

/// Events processed per scheduled run, at most.
pub const DUE_PER_RUN: u32 = 50;
/// Events an operator lists at once.
pub const EVENTS_LISTED: u32 = 100;

fn provider_error(e: StripeError) -> ApiError {
    let retryable = e.failure.retryable();
    ApiError {
        internal_cause: Some(e.to_string()),
        retryable_override: Some(retryable),
        ..ApiError::new(
            ErrorCode::BillingProviderError,
            match e.failure {
                StripeFailure::Auth => "The billing provider refused this platform's credentials; the operator has been told.".to_owned(),
                _ => format!("The billing provider could not do this: {}", e.message),
            },
        )
        .with_details(json!({ "stripeCode": e.stripe_code }))
    }
}

/// The tier a checkout buys, from `{tier}`.
fn requested_tier(body: &Value, config: &BillingConfig) -> Result<(Tier, String), ApiError> {
    let fields = body.as_object().filter(|o| o.keys().all(|k| k == "tier"));
    let tier = fields
        .and_then(|o| o.get("tier"))
        .and_then(Value::as_str)
        .and_then(Tier::parse)
        .filter(|t| *t != Tier::Free)
        .ok_or_else(|| {
            ApiError::validation("tier", "must be {\"tier\": \"pro\" | \"enterprise\"}")
        })?;
    let price = config.prices.price_for(tier).ok_or_else(|| {
        ApiError::validation(
            "tier",
            format!("the {} plan is not for sale here", tier.as_str()),
        )
    })?;
    Ok((tier, price.to_owned()))
}

/// The user's one customer: the recorded one, or a new one (created at Stripe with an idempotency key of the
/// user's, then recorded; a concurrent first checkout records the same one).
async fn customer_for(
    store: &impl BillingStore,
    stripe: &impl StripeApi,
    user: &User,
    now: i64,
) -> Result<String, ApiError> {
    if let Some(customer) = store.customer_of(&user.id).await? {
        return Ok(customer);
    }
    let request = create_customer(user.id.as_str());
    let answer = stripe.call(&request).await.map_err(provider_error)?;
    let created = created_id(&request, &answer, "cus_").map_err(provider_error)?;
    Ok(store.save_customer(&user.id, &created, now).await?)
}

#[derive(Debug, Serialize)]
pub struct SessionUrl {
    pub url: String,
}

/// `POST /v1/billing/checkout {tier}`: a Checkout Session for the tier's price; its URL.
pub async fn checkout(
    store: &impl BillingStore,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    user: &User,
    body: &Value,
    idempotency_key: String,
    now: i64,
) -> Result<SessionUrl, ApiError> {
    let (tier, price) = requested_tier(body, config)?;
    // One subscription per user: a second checkout would charge twice. Plans change in the portal.
    if let Some(current) = store.subscription_of(&user.id).await? {
        if matches!(current.status.as_str(), "active" | "trialing" | "past_due") {
            return Err(ApiError::new(
                ErrorCode::AlreadySubscribed,
                "You already have a subscription; change or cancel it in the billing portal (POST /v1/billing/portal).",
            )
            .with_details(json!({ "tier": current.tier, "status": current.status })));
        }
    }
    let customer = customer_for(store, stripe, user, now).await?;
    let back = &config.return_url;
    let request = create_checkout_session(&Checkout {
        customer: &customer,
        price: &price,
        user_id: user.id.as_str(),
        success_url: &format!("{back}?checkout=success&tier={}", tier.as_str()),
        cancel_url: &format!("{back}?checkout=cancelled"),
        idempotency_key,
    });
    let answer = stripe.call(&request).await.map_err(provider_error)?;
    Ok(SessionUrl {
        url: session_url(&request, &answer).map_err(provider_error)?,
    })
}

/// `POST /v1/billing/portal`: a Customer Portal session; only for a user who has been a customer.
pub async fn portal(
    store: &impl BillingStore,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    user: &User,
    idempotency_key: String,
) -> Result<SessionUrl, ApiError> {
    let customer = store.customer_of(&user.id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoBillingCustomer,
            "There is no billing account yet: start a checkout first.",
        )
    })?;
    let request = create_portal_session(&customer, &config.return_url, idempotency_key);
    let answer = stripe.call(&request).await.map_err(provider_error)?;
    Ok(SessionUrl {
        url: session_url(&request, &answer).map_err(provider_error)?,
    })
}

/// `GET /v1/billing`: the user's plan and subscription.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingView {
    pub tier: Tier,
    pub subscription: Option<SubscriptionView>,
    /// The tiers a checkout can buy here.
    pub purchasable: Vec<Tier>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub status: String,
    pub tier: Tier,
    /// ms since the epoch.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

pub async fn view(
    store: &impl BillingStore,
    config: &BillingConfig,
    user: &User,
) -> Result<BillingView, ApiError> {
    let subscription = store
        .subscription_of(&user.id)
        .await?
        .map(|s: StoredSubscription| SubscriptionView {
            status: s.status,
            tier: s.tier,
            current_period_end: s.current_period_end.map(|t| t.saturating_mul(1000)),
            cancel_at_period_end: s.cancel_at_period_end,
        });
    Ok(BillingView {
        tier: user.tier,
        subscription,
        purchasable: [Tier::Pro, Tier::Enterprise]
            .into_iter()
            .filter(|t| config.prices.price_for(*t).is_some())
            .collect(),
    })
}

/// Claims event `id`, processes it and stores how it ended; `None` when another run holds it (or it is not
/// pending or failed, or, for an operator, also dead or rejected).
pub async fn process_and_record(
    store: &impl BillingStore,
    gate: &impl GateNotifier,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    id: &str,
    clock: &impl Clock,
    by_operator: bool,
) -> Result<Option<Processed>, ApiError> {
    let now = clock.now_ms();
    let Some(event) = store
        .claim_event(id, now, now + CLAIM_LEASE_MS, by_operator)
        .await?
    else {
        return Ok(None);
    };
    let processed = process(store, gate, stripe, config, &event, clock).await;
    store.finish_event(&event.id, &processed.outcome).await?;
    Ok(Some(processed))
}

/// The scheduled job: every event due (new ones whose first processing did not finish, failed ones whose
/// backoff is over). One event's failure to be recorded does not stop the others.
pub async fn process_due(
    store: &impl BillingStore,
    gate: &impl GateNotifier,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    clock: &impl Clock,
) -> Result<Vec<Processed>, ApiError> {
    let mut done = Vec::new();
    for event in store.due_events(clock.now_ms(), DUE_PER_RUN).await? {
        match process_and_record(store, gate, stripe, config, &event.id, clock, false).await {
            Ok(Some(processed)) => done.push(processed),
            Ok(None) => {}
            Err(_) => {} // Its lease ends and a later run takes it again.
        }
    }
    Ok(done)
}

/// Default days finished billing events are kept (`BILLING_EVENTS_RETENTION_DAYS`). Stripe stops redelivering
/// an event after three days, so deduplication never needs one this old.
pub const DEFAULT_EVENTS_RETENTION_DAYS: u32 = 90;

/// Deletes finished events older than `retention_days` (one batch per run); returns how many.
pub async fn prune_events(
    store: &impl BillingStore,
    retention_days: u32,
    now: i64,
) -> Result<u64, ApiError> {
    let before = crate::app::retention::cutoff(now, retention_days);
    Ok(
        crate::app::retention::delete_in_chunks(1, |limit| store.prune_events(before, limit))
            .await?,
    )
}

/// `GET /v1/admin/billing/events?status=`: the newest events, optionally of one status.
pub async fn list_events(
    store: &impl BillingStore,
    status: Option<&str>,
) -> Result<Vec<StoredEvent>, ApiError> {
    let status = status
        .map(|s| {
            EventStatus::parse(s).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    "status must be pending, processed, ignored, rejected, failed or dead",
                )
            })
        })
        .transpose()?;
    Ok(store.list_events(status, EVENTS_LISTED).await?)
}

/// `POST /v1/admin/billing/events/{id}/retry`: processes a pending, failed, dead or rejected event again, now,
/// its attempts counted from 1.
pub async fn retry_event(
    store: &impl BillingStore,
    gate: &impl GateNotifier,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    id: &str,
    clock: &impl Clock,
) -> Result<Processed, ApiError> {
    let event = store.event(id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::BillingEventNotFound,
            "No billing event with this id was received.",
        )
    })?;
    process_and_record(store, gate, stripe, config, id, clock, true)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ValidationFailed,
                format!(
                    "The event is {} or being processed right now; only pending, failed, dead or rejected events are retried.",
                    event.status.as_str()
                ),
            )
        })
}
