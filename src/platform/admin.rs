//! The operator API (`/v1/admin/…`), authenticated by `ADMIN_TOKEN` (compared in constant time), never by a
//! user's token. Every call that reaches it, allowed or not, leaves a row in `admin_audit`.

use super::d1::D1Store;
use super::durable::user_gate::UserGateClient;
use super::reply::Reply;
use super::request::{header, read_json};
use super::JsClock;
use crate::app::gate::protocol::Forget;
use crate::app::ports::tell;
use crate::app::ports::Clock;
use crate::app::usage::{self, UsageStore};
use crate::auth::jwt;
use crate::config::ServiceConfig;
use crate::crypto::constant_time_eq;
use crate::domain::entitlements::Tier;
use crate::domain::entitlements::{Entitlements, OverridesChange};
use crate::domain::ids::{random_hex, RequestId, UserId};
use crate::domain::period::PeriodKey;
use crate::domain::usage::remaining;
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use crate::http::body::MAX_JSON_BODY_BYTES;
use crate::http::routes::Route;
use serde_json::{json, Map, Value};
use worker::{console_error, Request};

fn user_not_found() -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, "No user with this id exists.")
}

fn check_token(req: &Request, config: &ServiceConfig) -> Result<(), ApiError> {
    let Some(expected) = &config.admin_token else {
        return Err(ApiError::new(
            ErrorCode::AdminNotConfigured,
            "The operator API is off: ADMIN_TOKEN is not set.",
        ));
    };
    let authorization = header(req, "Authorization");
    let token = jwt::bearer_token(authorization.as_deref())?;
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

fn resolved_view(user: &User, config: &ServiceConfig) -> Value {
    view(user, &config.tiers.resolve(user.tier, &user.overrides))
}

pub(super) async fn handle(
    req: &mut Request,
    store: &D1Store,
    gate: &UserGateClient<'_>,
    config: &ServiceConfig,
    request_id: &RequestId,
    route: &Route,
) -> Result<Reply, ApiError> {
    let (action, raw_user) = match route {
        Route::AdminSetTier(u) => ("set_tier", Some(u.as_str())),
        Route::AdminSetEntitlements(u) => ("set_entitlements", Some(u.as_str())),
        Route::AdminUsage(u) => ("get_usage", Some(u.as_str())),
        Route::AdminRefreshGate(u) => ("refresh_gate", Some(u.as_str())),
        Route::AdminRecompute => ("recompute_usage", None),
        _ => return Err(ApiError::internal("not an admin route")),
    };
    let mut change: Option<Value> = None;
    let outcome = run(req, store, gate, config, route, raw_user, &mut change).await;
    let (status, code) = match &outcome {
        Ok(_) => (200, "ok"),
        Err(e) => (e.status(), e.code.as_str()),
    };
    // Only well-formed ids are stored as the target, so the audit table never holds arbitrary caller text there.
    let target = raw_user
        .and_then(UserId::parse)
        .map(|u| u.as_str().to_owned());
    let change_json = change.map(|c| c.to_string());
    if let Err(e) = store
        .audit(
            &format!("aud_{}", random_hex(12)),
            request_id.as_str(),
            JsClock.now_ms(),
            action,
            target.as_deref(),
            status,
            code,
            change_json.as_deref(),
        )
        .await
    {
        // An operator change that cannot be audited is still reported, loudly, rather than hidden.
        console_error!("audit write failed for {action} ({request_id}): {}", e.0);
    }
    outcome
}

async fn run(
    req: &mut Request,
    store: &D1Store,
    gate: &UserGateClient<'_>,
    config: &ServiceConfig,
    route: &Route,
    raw_user: Option<&str>,
    change: &mut Option<Value>,
) -> Result<Reply, ApiError> {
    check_token(req, config)?;
    if let Route::AdminRecompute = route {
        let (_, body): (_, Value) = read_json(req, MAX_JSON_BODY_BYTES).await?;
        *change = Some(body.clone());
        let period = only_field(&body, "period")
            .and_then(PeriodKey::parse)
            .ok_or_else(|| ApiError::validation("period", "must be {\"period\": \"YYYY-MM\"}"))?;
        let done = usage::recompute(store, period, JsClock.now_ms()).await?;
        return Ok(Reply::Json(
            200,
            serde_json::to_value(done).map_err(ApiError::internal)?,
        ));
    }
    let user_id = raw_user
        .and_then(UserId::parse)
        .ok_or_else(user_not_found)?;
    match route {
        Route::AdminSetTier(_) => {
            let (_, body): (_, Value) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            *change = Some(body.clone());
            let tier = only_field(&body, "tier")
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
            Ok(Reply::Json(200, resolved_view(&user, config)))
        }
        Route::AdminSetEntitlements(_) => {
            let (_, body): (_, Value) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            *change = Some(body.clone());
            let requested = OverridesChange::from_json(body)?;
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
                    let user = User {
                        overrides: next,
                        ..user
                    };
                    return Ok(Reply::Json(200, resolved_view(&user, config)));
                }
            }
            Err(ApiError::new(
                ErrorCode::DependencyUnavailable,
                "The user's entitlements kept changing underneath this call; retry.",
            ))
        }
        Route::AdminRefreshGate(_) => {
            store
                .user_by_id(&user_id)
                .await?
                .ok_or_else(user_not_found)?;
            tell(gate, &user_id, Forget::All).await?;
            Ok(Reply::Json(
                200,
                json!({ "userId": user_id.as_str(), "refreshed": true }),
            ))
        }
        Route::AdminUsage(_) => {
            let url = req.url().map_err(ApiError::internal)?;
            let period = match url.query_pairs().find(|(k, _)| k == "period") {
                None => PeriodKey::containing(JsClock.now_ms()),
                Some((_, v)) => PeriodKey::parse(&v).ok_or_else(|| {
                    ApiError::new(ErrorCode::InvalidQuery, "period must be YYYY-MM.")
                        .with_details(json!({ "parameter": "period" }))
                })?,
            };
            let user = store
                .user_by_id(&user_id)
                .await?
                .ok_or_else(user_not_found)?;
            let rows = store
                .usage_by_outcome(&user_id, &period.to_string())
                .await?;
            let totals = store.usage_totals(&user_id, period).await?;
            let mut by_outcome = Map::new();
            let (mut calls, mut counted, mut wall_ms) = (0i64, 0i64, 0i64);
            for r in rows {
                calls += r.calls as i64;
                counted += r.counted as i64;
                wall_ms += r.wall_ms as i64;
                by_outcome.insert(r.outcome, json!(r.calls as i64));
            }
            let entitlements = config.tiers.resolve(user.tier, &user.overrides);
            let mut body = view(&user, &entitlements);
            body["periodKey"] = json!(period.to_string());
            body["invocations"] = json!({
                "total": calls,
                "counted": counted,
                "byOutcome": by_outcome,
                "wallMs": wall_ms,
            });
            body["totals"] = json!(totals);
            body["remaining"] = json!(remaining(&totals, counted.max(0) as u64, &entitlements));
            Ok(Reply::Json(200, body))
        }
        _ => Err(ApiError::internal("not an admin route")),
    }
}
