//! `POST /v1/billing/webhook`: verify, store, acknowledge. Nothing here changes a plan; `process` does, after.

use super::{BillingConfig, BillingStore, EventStatus, StoredEvent};
use crate::domain::billing::event::StripeEvent;
use crate::domain::billing::signature::verify;
use crate::domain::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::{json, Value};

/// The acknowledgement Stripe gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub received: bool,
    pub event_id: String,
    /// A redelivery of an event already stored: acknowledged, nothing changes.
    pub duplicate: bool,
    #[serde(skip)]
    pub needs_processing: bool,
}

/// Verifies `body` (the raw bytes) against `signature` (the `Stripe-Signature` header) and stores the event.
/// Bad input is refused with 400 and changes nothing; a verified event is stored once however often it comes.
pub async fn receive(
    store: &impl BillingStore,
    config: &BillingConfig,
    signature: Option<&str>,
    body: &[u8],
    now_ms: i64,
) -> Result<Received, ApiError> {
    verify(
        signature,
        body,
        &config.webhook_secrets,
        config.tolerance_s,
        now_ms / 1000,
    )
    .map_err(|problem| {
        ApiError::new(ErrorCode::InvalidWebhookSignature, problem.message())
            .with_details(json!({ "reason": problem.as_str() }))
    })?;
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(ErrorCode::InvalidJson, "The signed body is not JSON."))?;
    let event = StripeEvent::parse(&json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidBody,
            "The signed body is not a Stripe event.",
        )
    })?;
    let (status, error) = if !event.handled() {
        (EventStatus::Ignored, None)
    } else if event.livemode != config.livemode() {
        // A test-mode event at a live endpoint (or the reverse) is never acted on.
        (
            EventStatus::Rejected,
            Some("the event's mode (livemode) is not this endpoint's".to_owned()),
        )
    } else {
        (EventStatus::Pending, None)
    };
    let stored = StoredEvent {
        id: event.id.clone(),
        kind: event.kind.clone(),
        created: event.created,
        livemode: event.livemode,
        payload: String::from_utf8_lossy(body).into_owned(),
        status,
        attempts: 0,
        // The webhook's own processing goes first; the scheduled job only takes it if that never finished.
        next_attempt_at: (status == EventStatus::Pending).then_some(now_ms + super::CLAIM_LEASE_MS),
        last_error: error,
        user_id: None,
        received_at: now_ms,
        processed_at: (status != EventStatus::Pending).then_some(now_ms),
    };
    let inserted = store.insert_event(&stored).await?;
    Ok(Received {
        received: true,
        event_id: event.id,
        duplicate: !inserted,
        needs_processing: inserted && status == EventStatus::Pending,
    })
}
