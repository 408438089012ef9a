//! The operator API (`/v1/admin/…`): authenticated by `ADMIN_TOKEN` (compared in constant time), never by a
//! user's token; every call that reaches it, allowed or not, leaves a row in the audit trail. Tier and
//! entitlement changes tell the user's gate, so they hold from the user's very next invocation.

use super::gate::protocol::Forget;
use super::key_rotation::{self, SealedStore, RESEAL_BATCH};
use super::ports::{tell, GateNotifier, StoreResult};
use super::usage::{self, UsageStore};
use crate::auth::jwt::bearer_token;
use crate::crypto::constant_time_eq;
use crate::crypto::keyring::Keyring;
use crate::domain::entitlements::{Entitlements, Overrides, OverridesChange, Tier, TierOverrides};
use crate::domain::ids::{random_hex, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::telemetry::RejectThrottle;
use crate::domain::usage::remaining;
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde_json::{json, Map, Value};

/// One operator call, with what the worker read of the request (bodies only after the token was checked).
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCall {
    SetTier {
        user: String,
        body: Value,
    },
    SetEntitlements {
        user: String,
        body: Value,
    },
    Usage {
        user: String,
        period: Option<String>,
    },
    RefreshGate {
        user: String,
    },
    Recompute {
        body: Value,
    },
    /// Re-seal a batch of secrets under the current key (a key rotation).
    Reseal,
}

/// The sealed values and the keys, for `Reseal` (`None` when deploys, and so secrets, are not configured).
pub struct Sealing<'a, S> {
    pub store: &'a S,
    pub keys: Option<&'a Keyring>,
}

/// The gateway-metered calls of one outcome in a period.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeCount {
    pub outcome: String,
    pub calls: u64,
    pub counted: u64,
    pub wall_ms: u64,
}

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry<'a> {
    pub id: String,
    pub request_id: &'a str,
    pub at: i64,
    pub action: &'static str,
    /// Only a well-formed user id, so the table never holds arbitrary caller text there.
    pub target_user_id: Option<String>,
    pub status: u16,
    pub outcome: &'a str,
    pub change_json: Option<String>,
    /// Refused calls left out of the trail (over the throttle) since the last row.
    pub suppressed: u64,
}

#[allow(async_fn_in_trait)]
pub trait AdminStore {
    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>>;
    async fn set_tier(&self, id: &UserId, tier: Tier) -> StoreResult<bool>;
    /// Replaces the overrides if they still equal `expected` (compare-and-set); `false` when they changed.
    async fn replace_overrides(
        &self,
        id: &UserId,
        expected: &Overrides,
        next: &Overrides,
    ) -> StoreResult<bool>;
    async fn usage_by_outcome(
        &self,
        id: &UserId,
        period: PeriodKey,
    ) -> StoreResult<Vec<OutcomeCount>>;
    async fn audit(&self, entry: &AuditEntry<'_>) -> StoreResult<()>;
}

fn user_not_found() -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, "No user with this id exists.")
}

/// The operator token check: off without `ADMIN_TOKEN`, constant-time otherwise.
pub fn check_token(configured: Option<&str>, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = configured else {
        return Err(ApiError::new(
            ErrorCode::AdminNotConfigured,
            "The operator API is off: ADMIN_TOKEN is not set.",
        ));
    };
    let token = bearer_token(authorization)?;
    if constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidAdminToken,
            "The operator token is not valid.",
        ))
    }
}

/// The string in a body that must be exactly `{"<name>": "<string>"}`.
fn only_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(name))
        .and_then(Value::as_str)
}

fn view(user: &User, entitlements: &Entitlements) -> Value {
    json!({
        "userId": user.id.as_str(),
        "tier": user.tier.as_str(),
        "overrides": user.overrides,
        "entitlements": entitlements,
    })
}

fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).ok_or_else(user_not_found)
}

impl AdminCall {
    /// The audit trail's name for the call.
    pub fn action(&self) -> &'static str {
        match self {
            AdminCall::SetTier { .. } => "set_tier",
            AdminCall::SetEntitlements { .. } => "set_entitlements",
            AdminCall::Usage { .. } => "get_usage",
            AdminCall::RefreshGate { .. } => "refresh_gate",
            AdminCall::Recompute { .. } => "recompute_usage",
            AdminCall::Reseal => "reseal_secrets",
        }
    }

    fn raw_user(&self) -> Option<&str> {
        match self {
            AdminCall::SetTier { user, .. }
            | AdminCall::SetEntitlements { user, .. }
            | AdminCall::Usage { user, .. }
            | AdminCall::RefreshGate { user } => Some(user),
            AdminCall::Recompute { .. } | AdminCall::Reseal => None,
        }
    }

    /// What the call asked to change, as the audit records it.
    fn change(&self) -> Option<&Value> {
        match self {
            AdminCall::SetTier { body, .. }
            | AdminCall::SetEntitlements { body, .. }
            | AdminCall::Recompute { body } => Some(body),
            AdminCall::Usage { .. } | AdminCall::RefreshGate { .. } | AdminCall::Reseal => None,
        }
    }
}

/// Runs one call (the token already checked).
pub async fn run(
    store: &impl AdminStore,
    usage: &impl UsageStore,
    gate: &impl GateNotifier,
    sealing: Sealing<'_, impl SealedStore>,
    tiers: &TierOverrides,
    call: &AdminCall,
    now: i64,
) -> Result<Value, ApiError> {
    let resolved = |user: &User| view(user, &tiers.resolve(user.tier, &user.overrides));
    match call {
        AdminCall::Reseal => {
            let keys = sealing
                .keys
                .ok_or_else(super::deployments::deploys_not_configured)?;
            let run = key_rotation::reseal(sealing.store, keys, RESEAL_BATCH).await?;
            serde_json::to_value(run).map_err(ApiError::internal)
        }
        AdminCall::Recompute { body } => {
            let period = only_field(body, "period")
                .and_then(PeriodKey::parse)
                .ok_or_else(|| {
                    ApiError::validation("period", "must be {\"period\": \"YYYY-MM\"}")
                })?;
            let done = usage::recompute(usage, period, now).await?;
            serde_json::to_value(done).map_err(ApiError::internal)
        }
        AdminCall::SetTier { user, body } => {
            let user_id = parse_user(user)?;
            let tier = only_field(body, "tier")
                .and_then(Tier::parse)
                .ok_or_else(|| {
                    ApiError::validation(
                        "tier",
                        "must be {\"tier\": \"free\" | \"pro\" | \"enterprise\"}",
                    )
                })?;
            if !store.set_tier(&user_id, tier).await? {
                return Err(user_not_found());
            }
            // Effective from the user's very next invocation.
            tell(gate, &user_id, Forget::User).await?;
            let user = store
                .user_by_id(&user_id)
                .await?
                .ok_or_else(user_not_found)?;
            Ok(resolved(&user))
        }
        AdminCall::SetEntitlements { user, body } => {
            let user_id = parse_user(user)?;
            let requested = OverridesChange::from_json(body.clone())?;
            // Compare-and-set: retried if another operator changed the same user in between.
            for _ in 0..3 {
                let user = store
                    .user_by_id(&user_id)
                    .await?
                    .ok_or_else(user_not_found)?;
                let next = requested.apply_to(&user.overrides)?;
                if store
                    .replace_overrides(&user_id, &user.overrides, &next)
                    .await?
                {
                    tell(gate, &user_id, Forget::User).await?;
                    return Ok(resolved(&User {
                        overrides: next,
                        ..user
                    }));
                }
            }
            Err(ApiError::unavailable(
                "The user's entitlements kept changing underneath this call; retry.",
                "overrides compare-and-set lost three times",
            ))
        }
        AdminCall::RefreshGate { user } => {
            let user_id = parse_user(user)?;
            store
                .user_by_id(&user_id)
                .await?
                .ok_or_else(user_not_found)?;
            tell(gate, &user_id, Forget::All).await?;
            Ok(json!({ "userId": user_id.as_str(), "refreshed": true }))
        }
        AdminCall::Usage { user, period } => {
            let user_id = parse_user(user)?;
            let period = match period {
                None => PeriodKey::containing(now),
                Some(raw) => PeriodKey::parse(raw).ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidQuery, "period must be YYYY-MM.")
                        .with_details(json!({ "parameter": "period" }))
                })?,
            };
            let user = store
                .user_by_id(&user_id)
                .await?
                .ok_or_else(user_not_found)?;
            let rows = store.usage_by_outcome(&user_id, period).await?;
            let totals = usage.usage_totals(&user_id, period).await?;
            let measured = usage.measured_usage(&user_id, period).await?;
            let mut by_outcome = Map::new();
            let (mut calls, mut counted, mut wall_ms) = (0u64, 0u64, 0u64);
            for r in rows {
                calls += r.calls;
                counted += r.counted;
                wall_ms += r.wall_ms;
                by_outcome.insert(r.outcome, json!(r.calls));
            }
            let entitlements = tiers.resolve(user.tier, &user.overrides);
            let mut body = view(&user, &entitlements);
            body["periodKey"] = json!(period.to_string());
            body["invocations"] = json!({
                "total": calls,
                "counted": counted,
                "byOutcome": by_outcome,
                "wallMs": wall_ms,
            });
            body["totals"] = json!(totals);
            // What the answers told callers beside what the signed telemetry reported: a difference means an
            // agent under-reports (or its reports were refused).
            body["measured"] = json!(measured);
            body["answeredVsReported"] = json!({
                "inputTokens": measured.answer_input_tokens as i64 - totals.input_tokens as i64,
                "outputTokens": measured.answer_output_tokens as i64 - totals.output_tokens as i64,
            });
            body["remaining"] = json!(remaining(&totals, counted, &entitlements));
            Ok(body)
        }
    }
}

/// Writes the audit row of a call that reached the operator API, allowed or not. `call` is `None` when the
/// request was refused before its body was read. Returns the store's failure for the log: an operator change
/// that cannot be audited is still reported, loudly, rather than hidden.
#[allow(clippy::too_many_arguments)]
pub async fn audit(
    store: &impl AdminStore,
    throttle: &std::cell::RefCell<RejectThrottle>,
    request_id: &str,
    now: i64,
    action: &'static str,
    raw_user: Option<&str>,
    call: Option<&AdminCall>,
    outcome: &Result<Value, ApiError>,
) -> Result<(), String> {
    let (status, code) = match outcome {
        Ok(_) => (200, "ok"),
        Err(e) => (e.status(), e.code.as_str()),
    };
    // A call refused for its credentials is anyone's: those are audited within a throttle (a flood costs a
    // bounded number of rows, the next row counting the rest). Everything an operator's token got through to is
    // audited, always.
    let anonymous = matches!(
        outcome,
        Err(e) if matches!(
            e.code,
            ErrorCode::MissingCredentials | ErrorCode::InvalidAdminToken | ErrorCode::AdminNotConfigured
        )
    );
    let suppressed = if anonymous {
        match throttle.borrow_mut().admit(now) {
            Some(suppressed) => suppressed,
            None => return Ok(()),
        }
    } else {
        0
    };
    let entry = AuditEntry {
        id: format!("aud_{}", random_hex(12)),
        request_id,
        at: now,
        action,
        target_user_id: call
            .and_then(AdminCall::raw_user)
            .or(raw_user)
            .and_then(UserId::parse)
            .map(|u| u.as_str().to_owned()),
        status,
        outcome: code,
        change_json: call.and_then(AdminCall::change).map(Value::to_string),
        suppressed,
    };
    store.audit(&entry).await.map_err(|e| {
        throttle.borrow_mut().restore(suppressed);
        e.0
    })
}

#[cfg(test)]
mod tests;
