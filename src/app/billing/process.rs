//! Processing a stored event: what it means for whose plan, with the subscription read again from Stripe (the
//! event's copy may be stale or out of order), applied only if it is newer than what is stored, and the user's
//! gate told so the new tier holds from their next call.

use super::{
    BillingConfig, BillingStore, EventOutcome, EventStatus, StoredEvent, StoredSubscription,
    StripeApi,
};
use crate::app::gate::protocol::Forget;
use crate::app::ports::{tell, Clock, GateNotifier};
use crate::domain::billing::event::{Meaning, StripeEvent};
use crate::domain::billing::plan::retry_after_ms;
use crate::domain::entitlements::Tier;
use crate::domain::ids::UserId;
use crate::stripe::api::{retrieve_subscription, subscription, StripeFailure};
use serde_json::Value;

/// What processing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    pub event_id: String,
    /// The event's type.
    pub kind: String,
    pub outcome: EventOutcome,
    /// The user whose tier changed (from, to), if one did.
    pub tier_change: Option<(UserId, Tier, Tier)>,
}

enum Stop {
    /// Verified but not acted on: it does not hold together. Not retried.
    Reject(String),
    /// Could not finish now (Stripe or the store unreachable, the gate not told): retried later.
    Retry(String),
}

/// Processes `event` once (it was claimed: its `attempts` already count this one) and says how it ended.
pub async fn process(
    store: &impl BillingStore,
    gate: &impl GateNotifier,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    event: &StoredEvent,
    clock: &impl Clock,
) -> Processed {
    let attempts = event.attempts;
    let mut owner: Option<UserId> = None;
    let result = run(store, gate, stripe, config, event, clock, &mut owner).await;
    let now = clock.now_ms();
    let (status, error, next, tier_change) = match result {
        Ok(change) => (EventStatus::Processed, None, None, change),
        Err(Stop::Reject(why)) => (EventStatus::Rejected, Some(why), None, None),
        Err(Stop::Retry(why)) => match retry_after_ms(attempts) {
            Some(delay) => (EventStatus::Failed, Some(why), Some(now + delay), None),
            None => (EventStatus::Dead, Some(why), None, None),
        },
    };
    let outcome = EventOutcome {
        status,
        attempts,
        next_attempt_at: next,
        error: error.map(|e| e.chars().take(500).collect()),
        user_id: owner,
        at: now,
    };
    Processed {
        event_id: event.id.clone(),
        kind: event.kind.clone(),
        outcome,
        tier_change,
    }
}

async fn run(
    store: &impl BillingStore,
    gate: &impl GateNotifier,
    stripe: &impl StripeApi,
    config: &BillingConfig,
    event: &StoredEvent,
    clock: &impl Clock,
    owner_seen: &mut Option<UserId>,
) -> Result<Option<(UserId, Tier, Tier)>, Stop> {
    // Checked here too, not only on arrival: an operator's retry of a rejected event must not act on it.
    if event.livemode != config.livemode() {
        return Err(Stop::Reject(
            "the event's mode (livemode) is not this endpoint's".into(),
        ));
    }
    let json: Value = serde_json::from_str(&event.payload)
        .map_err(|_| Stop::Reject("the stored payload is not JSON".into()))?;
    let parsed = StripeEvent::parse(&json)
        .ok_or_else(|| Stop::Reject("the stored payload is not a Stripe event".into()))?;
    let (customer, subscription_id) = match parsed.meaning() {
        Meaning::Ignored => return Ok(None),
        Meaning::Unreadable(why) => return Err(Stop::Reject(why.into())),
        Meaning::CheckoutCompleted {
            customer,
            subscription,
            client_reference_id,
        } => {
            let customer =
                customer.ok_or_else(|| Stop::Reject("the checkout has no customer".into()))?;
            let owner = owner_of(store, &customer).await?;
            *owner_seen = Some(owner.clone());
            // The checkout must have been started by the customer's own user: a session naming someone else
            // never moves anyone's plan.
            if client_reference_id.as_deref() != Some(owner.as_str()) {
                return Err(Stop::Reject(
                    "the checkout's client_reference_id names another user than the customer's owner".into(),
                ));
            }
            (customer, subscription)
        }
        Meaning::SubscriptionChanged(s) => (s.customer, Some(s.id)),
        Meaning::Invoice {
            customer,
            subscription,
            ..
        } => (
            customer.ok_or_else(|| Stop::Reject("the invoice has no customer".into()))?,
            subscription,
        ),
    };
    let owner = owner_of(store, &customer).await?;
    *owner_seen = Some(owner.clone());
    let Some(subscription_id) = subscription_id else {
        return Ok(None);
    };
    // The subscription as it is now, not as the event saw it.
    let request = retrieve_subscription(&subscription_id);
    let answer = stripe.call(&request).await.map_err(|e| match e.failure {
        StripeFailure::Refused => {
            Stop::Reject(format!("Stripe does not know the subscription: {e}"))
        }
        _ => Stop::Retry(e.to_string()),
    })?;
    let current = subscription(&request, &answer).map_err(|e| Stop::Retry(e.to_string()))?;
    // Stamped when the answer came: of two reads, the one answered later saw the newer subscription.
    let read_at = clock.now_ms();
    if current.customer != customer {
        return Err(Stop::Reject(
            "the subscription belongs to another customer".into(),
        ));
    }
    let tier = config.prices.tier_given_by(&current);
    let before = store
        .subscription_of(&owner)
        .await
        .map_err(|e| Stop::Retry(e.0))?;
    let state = StoredSubscription::from_stripe(&current, tier, read_at);
    let applied = store
        .apply_subscription(&owner, &state)
        .await
        .map_err(|e| Stop::Retry(e.0))?;
    if !applied {
        // A newer state is stored already: this one changes nothing.
        return Ok(None);
    }
    // Effective from the user's next call; if the gate cannot be told, the retry tells it.
    tell(gate, &owner, Forget::User).await.map_err(|e| {
        Stop::Retry(format!(
            "the plan was saved but the gate was not told: {}",
            e.message
        ))
    })?;
    let was = before.map_or(Tier::Free, |b| b.tier);
    Ok((was != tier).then_some((owner, was, tier)))
}

async fn owner_of(store: &impl BillingStore, customer: &str) -> Result<UserId, Stop> {
    store
        .owner_of_customer(customer)
        .await
        .map_err(|e| Stop::Retry(e.0))?
        .ok_or_else(|| Stop::Reject("the customer is not one of this platform's users".into()))
}
