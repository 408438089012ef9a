//! D1 for billing: customers, subscriptions (newest state wins, the tier set in the same batch) and webhook
//! events (inserted once, then finished).

use super::store::{fail, number, opt_text, text, D1Store};
use crate::app::billing::{
    BillingStore, EventOutcome, EventStatus, StoredEvent, StoredSubscription,
};
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::entitlements::Tier;
use crate::domain::ids::UserId;
use serde::Deserialize;
use wasm_bindgen::JsValue;

const CUSTOMER_OF: &str = "SELECT customer_id FROM billing_customers WHERE user_id = ?1";
const OWNER_OF_CUSTOMER: &str = "SELECT user_id FROM billing_customers WHERE customer_id = ?1";
// ?1 user, ?2 customer, ?3 now. A user keeps the first customer recorded for them.
const SAVE_CUSTOMER: &str = "INSERT INTO billing_customers (user_id, customer_id, created_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (user_id) DO NOTHING";
const SUBSCRIPTION_OF: &str = "SELECT subscription_id, customer_id, status, price_id, tier, \
     current_period_end, cancel_at_period_end, state_at FROM billing_subscriptions WHERE user_id = ?1";
// ?1 user … ?9 state_at: replaces the stored state only when this one was read at the same time or later.
const APPLY_SUBSCRIPTION: &str =
    "INSERT INTO billing_subscriptions (user_id, subscription_id, customer_id, \
     status, price_id, tier, current_period_end, cancel_at_period_end, state_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (user_id) DO UPDATE SET subscription_id = excluded.subscription_id, \
     customer_id = excluded.customer_id, status = excluded.status, price_id = excluded.price_id, \
     tier = excluded.tier, current_period_end = excluded.current_period_end, \
     cancel_at_period_end = excluded.cancel_at_period_end, state_at = excluded.state_at \
     WHERE excluded.state_at >= billing_subscriptions.state_at RETURNING user_id";
// ?1 user, ?2 tier, ?3 state_at: the tier follows the subscription row only if that row now holds this state.
const SET_TIER_FROM_SUBSCRIPTION: &str = "UPDATE users SET tier = ?2 WHERE id = ?1 AND \
     EXISTS (SELECT 1 FROM billing_subscriptions WHERE user_id = ?1 AND state_at = ?3 AND tier = ?2)";
const INSERT_EVENT: &str = "INSERT INTO billing_events (id, type, created, livemode, payload, status, attempts, \
     next_attempt_at, last_error, user_id, received_at, processed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, NULL, ?9, ?10) ON CONFLICT (id) DO NOTHING RETURNING id";
const EVENT_COLUMNS: &str =
    "id, type, created, livemode, payload, status, attempts, next_attempt_at, \
     last_error, user_id, received_at, processed_at";
const FINISH_EVENT: &str =
    "UPDATE billing_events SET status = ?2, attempts = ?3, next_attempt_at = ?4, \
     last_error = ?5, user_id = COALESCE(?6, user_id), processed_at = ?7, lease_until = NULL WHERE id = ?1";

#[derive(Deserialize)]
struct CustomerRow {
    customer_id: String,
}

#[derive(Deserialize)]
struct OwnerRow {
    user_id: String,
}

#[derive(Deserialize)]
struct SubscriptionRow {
    subscription_id: String,
    customer_id: String,
    status: String,
    price_id: Option<String>,
    tier: String,
    current_period_end: Option<f64>,
    cancel_at_period_end: f64,
    state_at: f64,
}

#[derive(Deserialize)]
struct EventRow {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: f64,
    livemode: f64,
    payload: String,
    status: String,
    attempts: f64,
    next_attempt_at: Option<f64>,
    last_error: Option<String>,
    user_id: Option<String>,
    received_at: f64,
    processed_at: Option<f64>,
}

impl EventRow {
    fn into_event(self) -> StoreResult<StoredEvent> {
        Ok(StoredEvent {
            status: EventStatus::parse(&self.status).ok_or_else(|| {
                StoreError(format!(
                    "billing event {} has status {:?}",
                    self.id, self.status
                ))
            })?,
            id: self.id,
            kind: self.kind,
            created: self.created as i64,
            livemode: self.livemode != 0.0,
            payload: self.payload,
            attempts: self.attempts as u32,
            next_attempt_at: self.next_attempt_at.map(|t| t as i64),
            last_error: self.last_error,
            user_id: self.user_id,
            received_at: self.received_at as i64,
            processed_at: self.processed_at.map(|t| t as i64),
        })
    }
}

fn opt_number(value: Option<i64>) -> JsValue {
    value.map_or(JsValue::NULL, number)
}

impl D1Store {
    async fn events(&self, sql: &str, params: &[JsValue]) -> StoreResult<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = self.rows(sql, params).await?;
        rows.into_iter().map(EventRow::into_event).collect()
    }
}

impl BillingStore for D1Store {
    async fn customer_of(&self, user: &UserId) -> StoreResult<Option<String>> {
        let rows: Vec<CustomerRow> = self.rows(CUSTOMER_OF, &[text(user.as_str())]).await?;
        Ok(rows.into_iter().next().map(|r| r.customer_id))
    }

    async fn owner_of_customer(&self, customer: &str) -> StoreResult<Option<UserId>> {
        let rows: Vec<OwnerRow> = self.rows(OWNER_OF_CUSTOMER, &[text(customer)]).await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|r| UserId::from_trusted(r.user_id)))
    }

    async fn save_customer(&self, user: &UserId, customer: &str, now: i64) -> StoreResult<String> {
        self.statement(
            SAVE_CUSTOMER,
            &[text(user.as_str()), text(customer), number(now)],
        )?
        .run()
        .await
        .map_err(fail)?;
        self.customer_of(user)
            .await?
            .ok_or_else(|| StoreError("the customer just recorded is not there".into()))
    }

    async fn subscription_of(&self, user: &UserId) -> StoreResult<Option<StoredSubscription>> {
        let rows: Vec<SubscriptionRow> = self.rows(SUBSCRIPTION_OF, &[text(user.as_str())]).await?;
        rows.into_iter()
            .next()
            .map(|r| {
                Ok(StoredSubscription {
                    tier: Tier::parse_stored(&r.tier).map_err(|e| StoreError(e.message))?,
                    subscription_id: r.subscription_id,
                    customer_id: r.customer_id,
                    status: r.status,
                    price_id: r.price_id,
                    current_period_end: r.current_period_end.map(|t| t as i64),
                    cancel_at_period_end: r.cancel_at_period_end != 0.0,
                    state_at: r.state_at as i64,
                })
            })
            .transpose()
    }

    async fn apply_subscription(&self, user: &UserId, s: &StoredSubscription) -> StoreResult<bool> {
        let results = self
            .db()
            .batch(vec![
                self.statement(
                    APPLY_SUBSCRIPTION,
                    &[
                        text(user.as_str()),
                        text(&s.subscription_id),
                        text(&s.customer_id),
                        text(&s.status),
                        opt_text(s.price_id.as_deref()),
                        text(s.tier.as_str()),
                        opt_number(s.current_period_end),
                        number(s.cancel_at_period_end as i64),
                        number(s.state_at),
                    ],
                )?,
                self.statement(
                    SET_TIER_FROM_SUBSCRIPTION,
                    &[
                        text(user.as_str()),
                        text(s.tier.as_str()),
                        number(s.state_at),
                    ],
                )?,
            ])
            .await
            .map_err(fail)?;
        let applied: Vec<OwnerRow> = results
            .first()
            .map(|r| r.results())
            .transpose()
            .map_err(fail)?
            .unwrap_or_default();
        Ok(!applied.is_empty())
    }

    async fn insert_event(&self, e: &StoredEvent) -> StoreResult<bool> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                INSERT_EVENT,
                &[
                    text(&e.id),
                    text(&e.kind),
                    number(e.created),
                    number(e.livemode as i64),
                    text(&e.payload),
                    text(e.status.as_str()),
                    opt_number(e.next_attempt_at),
                    opt_text(e.last_error.as_deref()),
                    number(e.received_at),
                    opt_number(e.processed_at),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn event(&self, id: &str) -> StoreResult<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM billing_events WHERE id = ?1");
        Ok(self.events(&sql, &[text(id)]).await?.into_iter().next())
    }

    async fn prune_events(&self, before: i64, limit: u32) -> StoreResult<u64> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                "DELETE FROM billing_events WHERE id IN (SELECT id FROM billing_events \
                 WHERE status IN ('processed', 'ignored', 'rejected') AND received_at < ?1 \
                 ORDER BY received_at LIMIT ?2) RETURNING id",
                &[number(before), number(limit as i64)],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    async fn claim_event(
        &self,
        id: &str,
        now: i64,
        lease_until: i64,
        by_operator: bool,
    ) -> StoreResult<Option<StoredEvent>> {
        // One statement: the check and the take cannot be split by a concurrent run.
        let sql = format!(
            "UPDATE billing_events SET lease_until = ?3, \
             attempts = CASE WHEN ?4 THEN 1 ELSE attempts + 1 END \
             WHERE id = ?1 AND (lease_until IS NULL OR lease_until < ?2) \
             AND (status IN ('pending', 'failed') OR (?4 AND status IN ('dead', 'rejected'))) \
             RETURNING {EVENT_COLUMNS}"
        );
        Ok(self
            .events(
                &sql,
                &[
                    text(id),
                    number(now),
                    number(lease_until),
                    number(by_operator as i64),
                ],
            )
            .await?
            .into_iter()
            .next())
    }

    async fn finish_event(&self, id: &str, o: &EventOutcome) -> StoreResult<()> {
        self.statement(
            FINISH_EVENT,
            &[
                text(id),
                text(o.status.as_str()),
                number(o.attempts as i64),
                opt_number(o.next_attempt_at),
                opt_text(o.error.as_deref()),
                opt_text(o.user_id.as_ref().map(UserId::as_str)),
                number(o.at),
            ],
        )?
        .run()
        .await
        .map_err(fail)?;
        Ok(())
    }

    async fn due_events(&self, now: i64, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM billing_events WHERE status IN ('pending', 'failed') \
             AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1) \
             ORDER BY next_attempt_at LIMIT ?2"
        );
        self.events(&sql, &[number(now), number(limit as i64)])
            .await
    }

    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM billing_events WHERE (?1 IS NULL OR status = ?1) \
             ORDER BY received_at DESC LIMIT ?2"
        );
        self.events(
            &sql,
            &[
                opt_text(status.map(EventStatus::as_str)),
                number(limit as i64),
            ],
        )
        .await
    }
}
