use super::process::Processed;
use super::requests::{checkout, portal, process_and_record, process_due, retry_event, view};
use super::webhook::receive;
use super::*;
use crate::app::memory::{RecordingGate, TestClock};
use crate::crypto::hmac_sha256;
use crate::domain::billing::plan::{is_newer, MAX_ATTEMPTS};
use crate::domain::entitlements::Overrides;
use crate::domain::user::User;
use crate::domain::ErrorCode;
use crate::stripe::api::{StripeError, StripeFailure, StripeRequest};
use pollster::block_on;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

const SECRET: &str = "whsec_local";
const NOW: i64 = 1_800_000_000_000;

fn config() -> BillingConfig {
    BillingConfig {
        api_base_url: "http://stripe.test".into(),
        secret_key: "sk_test_123".into(),
        webhook_secrets: vec![SECRET.into()],
        tolerance_s: 300,
        prices: Prices {
            pro: Some("price_pro".into()),
            enterprise: Some("price_ent".into()),
        },
        return_url: "https://app.example/billing".into(),
    }
}

#[derive(Default)]
struct Store {
    customers: RefCell<HashMap<String, String>>,
    subscriptions: RefCell<HashMap<String, StoredSubscription>>,
    tiers: RefCell<HashMap<String, Tier>>,
    events: RefCell<Vec<StoredEvent>>,
    leases: RefCell<HashMap<String, i64>>,
}

impl BillingStore for Store {
    async fn customer_of(&self, user: &UserId) -> StoreResult<Option<String>> {
        Ok(self.customers.borrow().get(user.as_str()).cloned())
    }
    async fn owner_of_customer(&self, customer: &str) -> StoreResult<Option<UserId>> {
        Ok(self
            .customers
            .borrow()
            .iter()
            .find(|(_, c)| c.as_str() == customer)
            .map(|(u, _)| UserId::from_trusted(u.clone())))
    }
    async fn save_customer(&self, user: &UserId, customer: &str, _now: i64) -> StoreResult<String> {
        Ok(self
            .customers
            .borrow_mut()
            .entry(user.as_str().to_owned())
            .or_insert_with(|| customer.to_owned())
            .clone())
    }
    async fn subscription_of(&self, user: &UserId) -> StoreResult<Option<StoredSubscription>> {
        Ok(self.subscriptions.borrow().get(user.as_str()).cloned())
    }
    async fn apply_subscription(
        &self,
        user: &UserId,
        state: &StoredSubscription,
    ) -> StoreResult<bool> {
        let stored = self
            .subscriptions
            .borrow()
            .get(user.as_str())
            .map(|s| s.state_at);
        if !is_newer(state.state_at, stored) {
            return Ok(false);
        }
        self.subscriptions
            .borrow_mut()
            .insert(user.as_str().to_owned(), state.clone());
        self.tiers
            .borrow_mut()
            .insert(user.as_str().to_owned(), state.tier);
        Ok(true)
    }
    async fn insert_event(&self, event: &StoredEvent) -> StoreResult<bool> {
        if self.events.borrow().iter().any(|e| e.id == event.id) {
            return Ok(false);
        }
        self.events.borrow_mut().push(event.clone());
        Ok(true)
    }
    async fn event(&self, id: &str) -> StoreResult<Option<StoredEvent>> {
        Ok(self.events.borrow().iter().find(|e| e.id == id).cloned())
    }
    async fn prune_events(&self, before: i64, limit: u32) -> StoreResult<u64> {
        let mut events = self.events.borrow_mut();
        let old = events.len();
        let mut removed = 0;
        events.retain(|e| {
            let finished = matches!(
                e.status,
                EventStatus::Processed | EventStatus::Ignored | EventStatus::Rejected
            );
            let drop = finished && e.received_at < before && removed < limit;
            removed += u32::from(drop);
            !drop
        });
        Ok((old - events.len()) as u64)
    }
    async fn claim_event(
        &self,
        id: &str,
        now: i64,
        lease_until: i64,
        by_operator: bool,
    ) -> StoreResult<Option<StoredEvent>> {
        if self
            .leases
            .borrow()
            .get(id)
            .is_some_and(|until| *until >= now)
        {
            return Ok(None);
        }
        let mut events = self.events.borrow_mut();
        let Some(e) = events.iter_mut().find(|e| e.id == id) else {
            return Ok(None);
        };
        let takeable = matches!(e.status, EventStatus::Pending | EventStatus::Failed)
            || (by_operator && matches!(e.status, EventStatus::Dead | EventStatus::Rejected));
        if !takeable {
            return Ok(None);
        }
        e.attempts = if by_operator { 1 } else { e.attempts + 1 };
        self.leases.borrow_mut().insert(id.to_owned(), lease_until);
        Ok(Some(e.clone()))
    }
    async fn finish_event(&self, id: &str, o: &EventOutcome) -> StoreResult<()> {
        self.leases.borrow_mut().remove(id);
        for e in self.events.borrow_mut().iter_mut().filter(|e| e.id == id) {
            e.status = o.status;
            e.attempts = o.attempts;
            e.next_attempt_at = o.next_attempt_at;
            e.last_error = o.error.clone();
            e.user_id = o.user_id.as_ref().map(|u| u.as_str().to_owned());
            e.processed_at = Some(o.at);
        }
        Ok(())
    }
    async fn due_events(&self, now: i64, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        Ok(self
            .events
            .borrow()
            .iter()
            .filter(|e| {
                matches!(e.status, EventStatus::Pending | EventStatus::Failed)
                    && e.next_attempt_at.is_some_and(|t| t <= now)
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        Ok(self
            .events
            .borrow()
            .iter()
            .rev()
            .filter(|e| status.is_none_or(|s| e.status == s))
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

/// Stripe with its subscriptions by id; `down` makes it unreachable. Records every request.
#[derive(Default)]
struct Stripe {
    subscriptions: RefCell<HashMap<String, Value>>,
    down: Cell<bool>,
    calls: RefCell<Vec<StripeRequest>>,
    next_customer: Cell<u32>,
}

impl StripeApi for Stripe {
    async fn call(&self, request: &StripeRequest) -> Result<Value, StripeError> {
        self.calls.borrow_mut().push(request.clone());
        let fail = |failure, status| StripeError {
            failure,
            endpoint: request.endpoint(),
            status,
            stripe_type: None,
            stripe_code: None,
            message: "fake".into(),
        };
        if self.down.get() {
            return Err(fail(StripeFailure::Upstream, Some(503)));
        }
        match (request.method, request.path.as_str()) {
            ("POST", "/v1/customers") => {
                self.next_customer.set(self.next_customer.get() + 1);
                Ok(json!({ "id": format!("cus_{}", self.next_customer.get()) }))
            }
            ("POST", "/v1/checkout/sessions") => {
                Ok(json!({ "id": "cs_1", "url": "https://checkout.stripe.test/cs_1" }))
            }
            ("POST", "/v1/billing_portal/sessions") => {
                Ok(json!({ "id": "bps_1", "url": "https://billing.stripe.test/p/1" }))
            }
            ("GET", path) => {
                let id = path.trim_start_matches("/v1/subscriptions/");
                self.subscriptions
                    .borrow()
                    .get(id)
                    .cloned()
                    .ok_or_else(|| fail(StripeFailure::Refused, Some(404)))
            }
            _ => Err(fail(StripeFailure::Refused, Some(400))),
        }
    }
}

fn user(id: &str) -> User {
    User {
        id: UserId::from_trusted(id.into()),
        tier: Tier::Free,
        created_at: 0,
        overrides: Overrides::default(),
    }
}

fn sign(body: &str, t_s: i64) -> String {
    let tag = hmac_sha256(SECRET.as_bytes(), format!("{t_s}.{body}").as_bytes());
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t_s},v1={hex}")
}

fn event_json(id: &str, kind: &str, object: Value) -> String {
    json!({ "id": id, "object": "event", "type": kind, "created": NOW / 1000, "livemode": false, "data": { "object": object } })
        .to_string()
}

fn subscription(id: &str, customer: &str, status: &str, price: &str) -> Value {
    json!({ "id": id, "object": "subscription", "customer": customer, "status": status, "cancel_at_period_end": false,
            "items": { "data": [ { "price": { "id": price }, "current_period_end": 1_900_000_000 } ] } })
}

struct World {
    store: Store,
    stripe: Stripe,
    gate: RecordingGate,
    config: BillingConfig,
}

impl World {
    fn new() -> Self {
        let w = World {
            store: Store::default(),
            stripe: Stripe::default(),
            gate: RecordingGate::default(),
            config: config(),
        };
        w.store
            .customers
            .borrow_mut()
            .insert("usr_alice".into(), "cus_alice".into());
        w.store
            .customers
            .borrow_mut()
            .insert("usr_bob".into(), "cus_bob".into());
        w
    }

    /// Stripe's current state of subscription `id`.
    fn stripe_has(&self, id: &str, customer: &str, status: &str, price: &str) {
        self.stripe
            .subscriptions
            .borrow_mut()
            .insert(id.into(), subscription(id, customer, status, price));
    }

    /// Receives `body` signed now and processes it like the platform does.
    fn deliver(&self, body: &str) -> Option<Processed> {
        let received = block_on(receive(
            &self.store,
            &self.config,
            Some(&sign(body, NOW / 1000)),
            body.as_bytes(),
            NOW,
        ))
        .unwrap();
        if !received.needs_processing {
            return None;
        }
        block_on(process_and_record(
            &self.store,
            &self.gate,
            &self.stripe,
            &self.config,
            &received.event_id,
            &TestClock::new(NOW),
            false,
        ))
        .unwrap()
    }

    fn tier(&self, user: &str) -> Option<Tier> {
        self.store.tiers.borrow().get(user).copied()
    }

    fn status(&self, id: &str) -> EventStatus {
        block_on(self.store.event(id)).unwrap().unwrap().status
    }
}

#[test]
fn bad_signatures_are_refused_and_store_nothing() {
    let w = World::new();
    let body = event_json("evt_1", "invoice.paid", json!({ "customer": "cus_alice" }));
    let cases = [
        (None, body.clone(), "missing_header"),
        (Some("t=abc".to_owned()), body.clone(), "malformed_header"),
        (
            Some(sign(&body, NOW / 1000 - 301)),
            body.clone(),
            "timestamp_out_of_tolerance",
        ),
        (
            Some(sign(&body, NOW / 1000)),
            body.replacen("cus_alice", "cus_alicf", 1),
            "no_matching_signature",
        ),
    ];
    for (header, sent, reason) in cases {
        let err = block_on(receive(
            &w.store,
            &w.config,
            header.as_deref(),
            sent.as_bytes(),
            NOW,
        ))
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidWebhookSignature, "{reason}");
        assert_eq!(err.status(), 400);
        assert_eq!(err.details.unwrap()["reason"], reason);
    }
    // Another endpoint's secret: refused.
    let other = BillingConfig {
        webhook_secrets: vec!["whsec_other".into()],
        ..config()
    };
    assert!(block_on(receive(
        &w.store,
        &other,
        Some(&sign(&body, NOW / 1000)),
        body.as_bytes(),
        NOW
    ))
    .is_err());
    assert!(w.store.events.borrow().is_empty());
}

#[test]
fn a_checkout_upgrades_its_customers_owner_and_tells_the_gate() {
    let w = World::new();
    w.stripe_has("sub_1", "cus_alice", "active", "price_pro");
    let body = event_json(
        "evt_checkout",
        "checkout.session.completed",
        json!({ "object": "checkout.session", "customer": "cus_alice", "subscription": "sub_1", "client_reference_id": "usr_alice" }),
    );
    let processed = w.deliver(&body).unwrap();
    assert_eq!(processed.outcome.status, EventStatus::Processed);
    assert_eq!(
        processed.tier_change,
        Some((
            UserId::from_trusted("usr_alice".into()),
            Tier::Free,
            Tier::Pro
        ))
    );
    assert_eq!(w.tier("usr_alice"), Some(Tier::Pro));
    assert_eq!(w.gate.told.borrow().len(), 1);
    let view = block_on(view(&w.store, &w.config, &user("usr_alice"))).unwrap();
    let sub = view.subscription.unwrap();
    assert_eq!(
        (sub.status.as_str(), sub.tier, sub.current_period_end),
        ("active", Tier::Pro, Some(1_900_000_000_000))
    );
    // A redelivery is acknowledged and changes nothing.
    let again = block_on(receive(
        &w.store,
        &w.config,
        Some(&sign(&body, NOW / 1000)),
        body.as_bytes(),
        NOW,
    ))
    .unwrap();
    assert!(again.duplicate && !again.needs_processing);
    assert_eq!(w.gate.told.borrow().len(), 1);
}

#[test]
fn a_checkout_naming_another_user_or_an_unknown_customer_moves_no_plan() {
    let w = World::new();
    w.stripe_has("sub_1", "cus_alice", "active", "price_ent");
    let forged = event_json(
        "evt_forged",
        "checkout.session.completed",
        json!({ "customer": "cus_alice", "subscription": "sub_1", "client_reference_id": "usr_bob" }),
    );
    assert_eq!(
        w.deliver(&forged).unwrap().outcome.status,
        EventStatus::Rejected
    );
    let stranger = event_json(
        "evt_stranger",
        "customer.subscription.updated",
        subscription("sub_9", "cus_unknown", "active", "price_ent"),
    );
    assert_eq!(
        w.deliver(&stranger).unwrap().outcome.status,
        EventStatus::Rejected
    );
    // An event about Bob's customer whose subscription is really Alice's.
    let crossed = event_json(
        "evt_crossed",
        "customer.subscription.updated",
        subscription("sub_1", "cus_bob", "active", "price_ent"),
    );
    assert_eq!(
        w.deliver(&crossed).unwrap().outcome.status,
        EventStatus::Rejected
    );
    assert_eq!((w.tier("usr_alice"), w.tier("usr_bob")), (None, None));
    assert!(w.gate.told.borrow().is_empty());
    let rejected = block_on(w.store.event("evt_forged")).unwrap().unwrap();
    assert!(rejected.last_error.unwrap().contains("client_reference_id"));
}

#[test]
fn the_subscription_is_read_again_so_a_stale_event_cannot_regress_a_user() {
    let w = World::new();
    // Stripe now: canceled. A late `updated` event still says active/enterprise.
    w.stripe_has("sub_1", "cus_alice", "canceled", "price_ent");
    let stale = event_json(
        "evt_stale",
        "customer.subscription.updated",
        subscription("sub_1", "cus_alice", "active", "price_ent"),
    );
    w.deliver(&stale).unwrap();
    assert_eq!(w.tier("usr_alice"), Some(Tier::Free));
    // And a state stored from later is never replaced by one read earlier.
    let later = StoredSubscription::from_stripe(
        &crate::domain::billing::event::Subscription::parse(&subscription(
            "sub_1",
            "cus_alice",
            "active",
            "price_pro",
        ))
        .unwrap(),
        Tier::Pro,
        NOW + 10,
    );
    assert!(block_on(
        w.store
            .apply_subscription(&UserId::from_trusted("usr_alice".into()), &later)
    )
    .unwrap());
    let earlier = StoredSubscription {
        state_at: NOW + 5,
        tier: Tier::Free,
        ..later.clone()
    };
    assert!(!block_on(
        w.store
            .apply_subscription(&UserId::from_trusted("usr_alice".into()), &earlier)
    )
    .unwrap());
    assert_eq!(w.tier("usr_alice"), Some(Tier::Pro));
}

#[test]
fn unknown_types_are_stored_and_ignored_and_the_wrong_mode_is_rejected() {
    let w = World::new();
    assert!(w
        .deliver(&event_json("evt_misc", "charge.refunded", json!({})))
        .is_none());
    assert_eq!(w.status("evt_misc"), EventStatus::Ignored);
    let live = json!({ "id": "evt_live", "object": "event", "type": "invoice.paid", "created": NOW / 1000, "livemode": true,
                       "data": { "object": { "customer": "cus_alice" } } }).to_string();
    assert!(w.deliver(&live).is_none());
    assert_eq!(w.status("evt_live"), EventStatus::Rejected);
}

#[test]
fn a_failure_is_retried_with_backoff_then_dead_and_an_operator_can_retry_it() {
    let w = World::new();
    w.stripe_has("sub_1", "cus_alice", "active", "price_pro");
    w.stripe.down.set(true);
    let body = event_json(
        "evt_retry",
        "invoice.paid",
        json!({ "customer": "cus_alice", "subscription": "sub_1" }),
    );
    let first = w.deliver(&body).unwrap();
    assert_eq!(first.outcome.status, EventStatus::Failed);
    assert_eq!(first.outcome.next_attempt_at, Some(NOW + 60_000));
    // Not due yet; then due, still failing, until dead.
    assert!(block_on(process_due(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        &TestClock::new(NOW + 1)
    ))
    .unwrap()
    .is_empty());
    let mut at = NOW;
    for _ in 1..MAX_ATTEMPTS {
        at += 24 * 3_600_000;
        block_on(process_due(
            &w.store,
            &w.gate,
            &w.stripe,
            &w.config,
            &TestClock::new(at),
        ))
        .unwrap();
    }
    assert_eq!(w.status("evt_retry"), EventStatus::Dead);
    assert!(
        block_on(process_due(
            &w.store,
            &w.gate,
            &w.stripe,
            &w.config,
            &TestClock::new(at + 10 * 24 * 3_600_000)
        ))
        .unwrap()
        .is_empty(),
        "dead events wait for an operator"
    );
    w.stripe.down.set(false);
    let retried = block_on(retry_event(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        "evt_retry",
        &TestClock::new(at),
    ))
    .unwrap();
    assert_eq!(retried.outcome.status, EventStatus::Processed);
    assert_eq!(w.tier("usr_alice"), Some(Tier::Pro));
    let missing = block_on(retry_event(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        "evt_nope",
        &TestClock::new(at),
    ))
    .unwrap_err();
    assert_eq!(missing.code, ErrorCode::BillingEventNotFound);
}

#[test]
fn a_plan_saved_while_the_gate_is_unreachable_is_retried_until_the_gate_is_told() {
    let w = World::new();
    w.stripe_has("sub_1", "cus_alice", "active", "price_pro");
    w.gate.fail.set(true);
    let body = event_json(
        "evt_gate",
        "customer.subscription.created",
        subscription("sub_1", "cus_alice", "active", "price_pro"),
    );
    assert_eq!(
        w.deliver(&body).unwrap().outcome.status,
        EventStatus::Failed
    );
    w.gate.fail.set(false);
    block_on(process_due(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        &TestClock::new(NOW + 60_000),
    ))
    .unwrap();
    assert_eq!(w.status("evt_gate"), EventStatus::Processed);
    assert_eq!(w.gate.told.borrow().len(), 1);
}

#[test]
fn checkout_uses_one_customer_per_user_and_the_tiers_price() {
    let w = World::new();
    let carol = user("usr_carol");
    let a = block_on(checkout(
        &w.store,
        &w.stripe,
        &w.config,
        &carol,
        &json!({ "tier": "pro" }),
        "k1".into(),
        NOW,
    ))
    .unwrap();
    assert_eq!(a.url, "https://checkout.stripe.test/cs_1");
    block_on(checkout(
        &w.store,
        &w.stripe,
        &w.config,
        &carol,
        &json!({ "tier": "enterprise" }),
        "k2".into(),
        NOW,
    ))
    .unwrap();
    let calls = w.stripe.calls.borrow();
    assert_eq!(
        calls.iter().filter(|c| c.path == "/v1/customers").count(),
        1,
        "one customer per user"
    );
    let sessions: Vec<_> = calls
        .iter()
        .filter(|c| c.path == "/v1/checkout/sessions")
        .collect();
    assert!(sessions[0]
        .form
        .contains(&("line_items[0][price]".into(), "price_pro".into())));
    assert!(sessions[1]
        .form
        .contains(&("line_items[0][price]".into(), "price_ent".into())));
    assert!(sessions.iter().all(|s| s
        .form
        .contains(&("client_reference_id".into(), "usr_carol".into()))
        && s.idempotency_key.is_some()));
    drop(calls);
    for bad in [
        json!({ "tier": "free" }),
        json!({ "tier": "gold" }),
        json!({}),
        json!({ "tier": "pro", "price": "price_x" }),
    ] {
        let err = block_on(checkout(
            &w.store,
            &w.stripe,
            &w.config,
            &carol,
            &bad,
            "k".into(),
            NOW,
        ))
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed, "{bad}");
    }
    // The portal needs a customer.
    let dave = user("usr_dave");
    assert_eq!(
        block_on(portal(&w.store, &w.stripe, &w.config, &dave, "p".into()))
            .unwrap_err()
            .code,
        ErrorCode::NoBillingCustomer
    );
    assert!(block_on(portal(&w.store, &w.stripe, &w.config, &carol, "p".into())).is_ok());
    // Stripe down: a clear, retryable error.
    w.stripe.down.set(true);
    let err = block_on(checkout(
        &w.store,
        &w.stripe,
        &w.config,
        &carol,
        &json!({ "tier": "pro" }),
        "k3".into(),
        NOW,
    ))
    .unwrap_err();
    assert_eq!(
        (err.code, err.retryable()),
        (ErrorCode::BillingProviderError, true)
    );
}

#[test]
fn an_event_held_by_one_run_is_not_processed_by_another() {
    let w = World::new();
    let body = event_json(
        "evt_held",
        "invoice.paid",
        json!({ "customer": "cus_alice" }),
    );
    let received = block_on(receive(
        &w.store,
        &w.config,
        Some(&sign(&body, NOW / 1000)),
        body.as_bytes(),
        NOW,
    ))
    .unwrap();
    // The webhook's own run takes it…
    let first = block_on(
        w.store
            .claim_event(&received.event_id, NOW, NOW + CLAIM_LEASE_MS, false),
    )
    .unwrap();
    assert_eq!(first.map(|e| e.attempts), Some(1));
    // …so neither the scheduled job nor an operator can while it holds it.
    assert!(block_on(w.store.claim_event(
        &received.event_id,
        NOW + 1,
        NOW + 1 + CLAIM_LEASE_MS,
        false
    ))
    .unwrap()
    .is_none());
    assert!(block_on(process_due(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        &TestClock::new(NOW + CLAIM_LEASE_MS)
    ))
    .unwrap()
    .is_empty());
    let busy = block_on(retry_event(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        "evt_held",
        &TestClock::new(NOW + 2),
    ))
    .unwrap_err();
    assert_eq!(busy.code, ErrorCode::ValidationFailed);
    // A run that died leaves the lease to expire; then the job takes it, counting the lost attempt.
    let done = block_on(process_due(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        &TestClock::new(NOW + CLAIM_LEASE_MS + 1),
    ))
    .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome.attempts, 2);
    assert_eq!(done[0].outcome.status, EventStatus::Processed);
}

#[test]
fn a_second_checkout_is_refused_while_a_subscription_is_active() {
    let w = World::new();
    w.stripe_has("sub_1", "cus_alice", "active", "price_pro");
    w.deliver(&event_json("evt_c", "checkout.session.completed", json!({ "customer": "cus_alice", "subscription": "sub_1", "client_reference_id": "usr_alice" })));
    let again = block_on(checkout(
        &w.store,
        &w.stripe,
        &w.config,
        &user("usr_alice"),
        &json!({ "tier": "enterprise" }),
        "k".into(),
        NOW,
    ))
    .unwrap_err();
    assert_eq!(
        (again.code, again.status()),
        (ErrorCode::AlreadySubscribed, 409)
    );
    assert!(w
        .stripe
        .calls
        .borrow()
        .iter()
        .all(|c| c.path != "/v1/checkout/sessions"));
    // Once it has ended, a new checkout is allowed.
    w.stripe_has("sub_1", "cus_alice", "canceled", "price_pro");
    w.deliver(&event_json(
        "evt_d",
        "customer.subscription.deleted",
        subscription("sub_1", "cus_alice", "canceled", "price_pro"),
    ));
    assert!(block_on(checkout(
        &w.store,
        &w.stripe,
        &w.config,
        &user("usr_alice"),
        &json!({ "tier": "enterprise" }),
        "k2".into(),
        NOW
    ))
    .is_ok());
}

#[test]
fn an_operators_retry_of_a_wrong_mode_event_still_does_not_act_on_it() {
    let w = World::new();
    w.stripe_has("sub_1", "cus_alice", "active", "price_ent");
    let live = json!({ "id": "evt_live2", "object": "event", "type": "customer.subscription.updated", "created": NOW / 1000,
                       "livemode": true, "data": { "object": subscription("sub_1", "cus_alice", "active", "price_ent") } }).to_string();
    assert!(w.deliver(&live).is_none());
    let retried = block_on(retry_event(
        &w.store,
        &w.gate,
        &w.stripe,
        &w.config,
        "evt_live2",
        &TestClock::new(NOW),
    ))
    .unwrap();
    assert_eq!(retried.outcome.status, EventStatus::Rejected);
    assert_eq!(w.tier("usr_alice"), None);
}

#[test]
fn finished_events_are_pruned_after_the_retention_and_failed_ones_kept() {
    let w = World::new();
    w.deliver(&event_json("evt_old_ignored", "charge.refunded", json!({})));
    w.stripe.down.set(true);
    w.deliver(&event_json(
        "evt_old_failed",
        "invoice.paid",
        json!({ "customer": "cus_alice", "subscription": "sub_1" }),
    ));
    let day = 86_400_000;
    let pruned = block_on(super::requests::prune_events(&w.store, 90, NOW + 89 * day)).unwrap();
    assert_eq!(pruned, 0, "not yet");
    let pruned = block_on(super::requests::prune_events(&w.store, 90, NOW + 91 * day)).unwrap();
    assert_eq!(pruned, 1);
    assert!(block_on(w.store.event("evt_old_ignored"))
        .unwrap()
        .is_none());
    assert_eq!(
        w.status("evt_old_failed"),
        EventStatus::Failed,
        "kept for an operator"
    );
}
