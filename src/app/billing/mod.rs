//! Billing: Stripe Checkout and the Customer Portal move a user between plans, and Stripe's signed webhooks are
//! the only thing that changes a user's tier on the billing side. A webhook is verified, stored (deduplicated by
//! Stripe's event id) and acknowledged first; it is processed after, and a failed processing is retried by the
//! scheduled job until it succeeds or is marked dead for an operator.

/// How long one processing attempt holds an event (longer than a Stripe call's timeout and the writes after it).
pub const CLAIM_LEASE_MS: i64 = 60_000;

pub mod process;
pub mod requests;
pub mod webhook;

#[cfg(test)]
mod tests;

use super::ports::StoreResult;
use crate::domain::billing::event::Subscription;
use crate::domain::billing::plan::Prices;
use crate::domain::entitlements::Tier;
use crate::domain::ids::UserId;
use crate::stripe::api::{StripeError, StripeRequest};
use serde::Serialize;
use serde_json::Value;

/// Billing's configuration (`STRIPE_*`, `BILLING_RETURN_URL`); absent when billing is off. Its `Debug` leaves the
/// secret key and the signing secrets out.
#[derive(Clone)]
pub struct BillingConfig {
    pub api_base_url: String,
    pub secret_key: String,
    /// Every signing secret accepted (more than one while a secret is rolled).
    pub webhook_secrets: Vec<String>,
    pub tolerance_s: i64,
    pub prices: Prices,
    /// Where Checkout and the portal send a person back (the dashboard's billing page).
    pub return_url: String,
}

impl std::fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field("api_base_url", &self.api_base_url)
            .field("secret_key", &"<redacted>")
            .field(
                "webhook_secrets",
                &format!("<{} redacted>", self.webhook_secrets.len()),
            )
            .field("tolerance_s", &self.tolerance_s)
            .field("prices", &self.prices)
            .field("return_url", &self.return_url)
            .finish()
    }
}

impl BillingConfig {
    /// Test-mode keys (`sk_test_…`) take test-mode events only, live keys live ones.
    pub fn livemode(&self) -> bool {
        self.secret_key.starts_with("sk_live_") || self.secret_key.starts_with("rk_live_")
    }
}

/// Where a stored event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Stored, not processed yet (or due for another attempt after a failure).
    Pending,
    Processed,
    /// A type not acted on.
    Ignored,
    /// Verified, but not acted on because it does not hold together (an unknown customer, a checkout naming
    /// another user, the wrong mode). Not retried.
    Rejected,
    /// Processing failed; retried at `next_attempt_at`.
    Failed,
    /// Failed `MAX_ATTEMPTS` times: an operator looks at it and may retry it.
    Dead,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Processed => "processed",
            EventStatus::Ignored => "ignored",
            EventStatus::Rejected => "rejected",
            EventStatus::Failed => "failed",
            EventStatus::Dead => "dead",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            EventStatus::Pending,
            EventStatus::Processed,
            EventStatus::Ignored,
            EventStatus::Rejected,
            EventStatus::Failed,
            EventStatus::Dead,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// A webhook event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Stripe's `created` (unix seconds).
    pub created: i64,
    pub livemode: bool,
    #[serde(skip)]
    pub payload: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    /// The user whose plan it concerned, once known.
    pub user_id: Option<String>,
    pub received_at: i64,
    pub processed_at: Option<i64>,
}

/// How processing ended, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub status: EventStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub error: Option<String>,
    pub user_id: Option<UserId>,
    pub at: i64,
}

/// A user's subscription as stored (the newest state seen).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSubscription {
    pub subscription_id: String,
    pub customer_id: String,
    pub status: String,
    pub price_id: Option<String>,
    pub tier: Tier,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When this state was read from Stripe (ms).
    pub state_at: i64,
}

#[allow(async_fn_in_trait)]
pub trait BillingStore {
    async fn customer_of(&self, user: &UserId) -> StoreResult<Option<String>>;
    async fn owner_of_customer(&self, customer: &str) -> StoreResult<Option<UserId>>;
    /// Records the user's customer unless one is recorded already; returns the one recorded.
    async fn save_customer(&self, user: &UserId, customer: &str, now: i64) -> StoreResult<String>;
    async fn subscription_of(&self, user: &UserId) -> StoreResult<Option<StoredSubscription>>;
    /// Stores `state` and sets the user's tier to `state.tier`, in one batch, unless the stored state is newer
    /// (`state_at`); returns whether it was applied.
    async fn apply_subscription(
        &self,
        user: &UserId,
        state: &StoredSubscription,
    ) -> StoreResult<bool>;
    /// Inserts the event unless one with its id exists; `false` for a redelivery.
    async fn insert_event(&self, event: &StoredEvent) -> StoreResult<bool>;
    async fn event(&self, id: &str) -> StoreResult<Option<StoredEvent>>;
    /// Takes `id` for one processing attempt: counts the attempt and holds the event until `lease_until`, so no
    /// concurrent run (the webhook's own, the scheduled job, an operator) processes it at the same time. Only a
    /// pending or failed event (`by_operator`: also a dead or rejected one, its attempts counted from 1 again)
    /// whose lease is over is taken; `None` otherwise.
    async fn claim_event(
        &self,
        id: &str,
        now: i64,
        lease_until: i64,
        by_operator: bool,
    ) -> StoreResult<Option<StoredEvent>>;
    async fn finish_event(&self, id: &str, outcome: &EventOutcome) -> StoreResult<()>;
    /// Pending or failed events whose next attempt is due and which no run holds, oldest first.
    async fn due_events(&self, now: i64, limit: u32) -> StoreResult<Vec<StoredEvent>>;
    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// Deletes up to `limit` finished events (processed, ignored, rejected) received before `before`; their
    /// payloads hold customer data. Failed and dead ones stay for an operator. Returns how many.
    async fn prune_events(&self, before: i64, limit: u32) -> StoreResult<u64>;
}

/// Stripe, over HTTP (the platform adds the secret key and the pinned version).
#[allow(async_fn_in_trait)]
pub trait StripeApi {
    async fn call(&self, request: &StripeRequest) -> Result<Value, StripeError>;
}

impl StoredSubscription {
    pub fn from_stripe(s: &Subscription, tier: Tier, state_at: i64) -> Self {
        StoredSubscription {
            subscription_id: s.id.clone(),
            customer_id: s.customer.clone(),
            status: s.status.clone(),
            price_id: s.price_id.clone(),
            tier,
            current_period_end: s.current_period_end,
            cancel_at_period_end: s.cancel_at_period_end,
            state_at,
        }
    }
}
