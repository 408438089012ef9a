//! Stripe's webhook events as the control plane reads them: only the fields it acts on, from either shape
//! Stripe has used for them (`current_period_end` on the subscription or on its items; an invoice's
//! subscription at the top or under `parent.subscription_details`), so a change of API version does not break
//! billing silently.

use serde_json::Value;

/// The event types acted on; any other is stored and ignored.
pub const HANDLED_TYPES: &[&str] = &[
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
];

/// The envelope of every event.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    pub id: String,
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    pub livemode: bool,
    pub object: Value,
}

impl StripeEvent {
    /// Parses the envelope; `None` when it is not a Stripe event (no `evt_` id, type or object).
    pub fn parse(body: &Value) -> Option<StripeEvent> {
        let id = body.get("id")?.as_str()?;
        let valid_id = id.starts_with("evt_")
            && id.len() <= 255
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_id || body.get("object")?.as_str()? != "event" {
            return None;
        }
        let kind = body.get("type")?.as_str()?;
        if kind.is_empty() || kind.len() > 100 {
            return None;
        }
        Some(StripeEvent {
            id: id.to_owned(),
            kind: kind.to_owned(),
            created: body.get("created")?.as_i64()?,
            livemode: body
                .get("livemode")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            object: body.get("data")?.get("object")?.clone(),
        })
    }

    pub fn handled(&self) -> bool {
        HANDLED_TYPES.contains(&self.kind.as_str())
    }

    /// What the event says about billing, from its object.
    pub fn meaning(&self) -> Meaning {
        let o = &self.object;
        match self.kind.as_str() {
            "checkout.session.completed" => Meaning::CheckoutCompleted {
                customer: id_of(o.get("customer")),
                subscription: id_of(o.get("subscription")),
                client_reference_id: text(o, "client_reference_id"),
            },
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => match Subscription::parse(o) {
                Some(s) => Meaning::SubscriptionChanged(s),
                None => Meaning::Unreadable("the subscription has no id or customer"),
            },
            "invoice.paid" | "invoice.payment_failed" => Meaning::Invoice {
                customer: id_of(o.get("customer")),
                subscription: id_of(o.get("subscription")).or_else(|| {
                    id_of(
                        o.get("parent")
                            .and_then(|p| p.get("subscription_details"))
                            .and_then(|d| d.get("subscription")),
                    )
                }),
                paid: self.kind == "invoice.paid",
            },
            _ => Meaning::Ignored,
        }
    }
}

/// What an event means for a user's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Meaning {
    /// A checkout finished: the customer (and who started it) now has this subscription.
    CheckoutCompleted {
        customer: Option<String>,
        subscription: Option<String>,
        client_reference_id: Option<String>,
    },
    /// A subscription as the event saw it (it is read again from Stripe before it counts).
    SubscriptionChanged(Subscription),
    /// An invoice was paid or its payment failed; the subscription it bills is read again.
    Invoice {
        customer: Option<String>,
        subscription: Option<String>,
        paid: bool,
    },
    /// Stored, not acted on.
    Ignored,
    /// A handled type whose object lacks what it needs.
    Unreadable(&'static str),
}

/// A subscription as Stripe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: String,
    /// The price of its first item (our plans have one).
    pub price_id: Option<String>,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

impl Subscription {
    pub fn parse(o: &Value) -> Option<Subscription> {
        let id = text(o, "id").filter(|id| id.starts_with("sub_"))?;
        let customer = id_of(o.get("customer"))?;
        let first_item = o
            .get("items")
            .and_then(|i| i.get("data"))
            .and_then(|d| d.get(0));
        Some(Subscription {
            id,
            customer,
            status: text(o, "status").unwrap_or_else(|| "incomplete".into()),
            price_id: first_item
                .and_then(|item| item.get("price"))
                .and_then(|p| id_of(Some(p))),
            current_period_end: o
                .get("current_period_end")
                .and_then(Value::as_i64)
                .or_else(|| {
                    first_item
                        .and_then(|i| i.get("current_period_end"))
                        .and_then(Value::as_i64)
                }),
            cancel_at_period_end: o
                .get("cancel_at_period_end")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// Whether the subscription entitles its customer to its plan now. `past_due` keeps the plan while Stripe
    /// retries the payment (its dunning); `unpaid`, `canceled`, `incomplete(_expired)` and `paused` do not.
    pub fn entitles(&self) -> bool {
        matches!(self.status.as_str(), "active" | "trialing" | "past_due")
    }
}

fn text(o: &Value, key: &str) -> Option<String> {
    o.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A reference that Stripe sends either as an id or as the expanded object.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, object: Value) -> Value {
        json!({ "id": "evt_1NqX", "object": "event", "type": kind, "created": 1_800_000_000, "livemode": false,
                "data": { "object": object } })
    }

    #[test]
    fn the_envelope_is_checked() {
        assert!(StripeEvent::parse(&event("invoice.paid", json!({}))).is_some());
        for bad in [
            json!({}),
            json!({ "id": "nope", "object": "event", "type": "x", "created": 1, "data": { "object": {} } }),
            json!({ "id": "evt_1", "object": "charge", "type": "x", "created": 1, "data": { "object": {} } }),
            json!({ "id": "evt_1", "object": "event", "type": "x", "created": "1", "data": { "object": {} } }),
            json!({ "id": "evt_1; drop", "object": "event", "type": "x", "created": 1, "data": { "object": {} } }),
        ] {
            assert_eq!(StripeEvent::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_subscription_is_read_from_either_shape() {
        let old_shape = json!({ "id": "sub_1", "customer": "cus_1", "status": "active", "current_period_end": 1_900_000_000,
            "cancel_at_period_end": true, "items": { "data": [ { "price": { "id": "price_pro" } } ] } });
        let new_shape = json!({ "id": "sub_1", "customer": { "id": "cus_1" }, "status": "active",
            "items": { "data": [ { "price": "price_pro", "current_period_end": 1_900_000_000 } ] } });
        let a = Subscription::parse(&old_shape).unwrap();
        let b = Subscription::parse(&new_shape).unwrap();
        assert_eq!(
            (
                a.price_id.as_deref(),
                a.current_period_end,
                a.cancel_at_period_end
            ),
            (Some("price_pro"), Some(1_900_000_000), true)
        );
        assert_eq!(
            (
                b.customer.as_str(),
                b.price_id.as_deref(),
                b.current_period_end
            ),
            ("cus_1", Some("price_pro"), Some(1_900_000_000))
        );
        assert!(Subscription::parse(&json!({ "id": "sub_1" })).is_none());
        assert!(Subscription::parse(&json!({ "id": "cus_1", "customer": "cus_1" })).is_none());
    }

    #[test]
    fn which_statuses_entitle() {
        let with = |status: &str| Subscription {
            id: "sub_1".into(),
            customer: "cus_1".into(),
            status: status.into(),
            price_id: None,
            current_period_end: None,
            cancel_at_period_end: false,
        };
        for s in ["active", "trialing", "past_due"] {
            assert!(with(s).entitles(), "{s}");
        }
        for s in [
            "canceled",
            "unpaid",
            "incomplete",
            "incomplete_expired",
            "paused",
            "whatever",
        ] {
            assert!(!with(s).entitles(), "{s}");
        }
    }

    #[test]
    fn each_handled_type_has_its_meaning_and_others_are_ignored() {
        let e = |kind: &str, o: Value| StripeEvent::parse(&event(kind, o)).unwrap();
        assert_eq!(
            e("checkout.session.completed", json!({ "customer": "cus_1", "subscription": "sub_1", "client_reference_id": "usr_1" })).meaning(),
            Meaning::CheckoutCompleted { customer: Some("cus_1".into()), subscription: Some("sub_1".into()), client_reference_id: Some("usr_1".into()) }
        );
        assert_eq!(
            e("invoice.payment_failed", json!({ "customer": "cus_1", "parent": { "subscription_details": { "subscription": "sub_9" } } })).meaning(),
            Meaning::Invoice { customer: Some("cus_1".into()), subscription: Some("sub_9".into()), paid: false }
        );
        assert!(
            matches!(e("customer.subscription.deleted", json!({ "id": "sub_1", "customer": "cus_1", "status": "canceled" })).meaning(), Meaning::SubscriptionChanged(s) if s.status == "canceled")
        );
        assert!(matches!(
            e("customer.subscription.updated", json!({ "id": "sub_1" })).meaning(),
            Meaning::Unreadable(_)
        ));
        let ignored = e("charge.refunded", json!({}));
        assert!(!ignored.handled());
        assert_eq!(ignored.meaning(), Meaning::Ignored);
    }
}
