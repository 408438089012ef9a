//! The audit trail on the Workers side: a record of every privileged route after its answer (who, what, on what,
//! how it ended), of work that ends later (deploys, billing events), and the operators' read of the whole trail.

use super::admin::require_operator;
use super::bindings::d1_database;
use super::d1::D1Store;
use super::reply::{json_reply, Reply};
use super::JsClock;
use crate::app::audit::{full_trail, Actor, AuditRecord, AuditStore};
use crate::app::ports::Clock;
use crate::config::ServiceConfig;
use crate::domain::ids::{RequestId, UserId};
use crate::domain::ApiError;
use crate::http::routes::Audited;
use serde_json::{json, Value};
use std::collections::HashMap;
use worker::{console_error, Context, Env, Request};

/// Writes `record` after the answer; a failure is logged (the action itself already happened).
pub(super) fn record(ctx: &Context, env: &Env, record: AuditRecord) {
    let env = env.clone();
    ctx.wait_until(async move { record_now(&env, &record).await });
}

pub(super) async fn record_now(env: &Env, record: &AuditRecord) {
    let written = match d1_database(env) {
        Ok(db) => D1Store::new(db).record_audit(record).await.map_err(|e| e.0),
        Err(e) => Err(e.message),
    };
    if let Err(e) = written {
        console_error!("audit record {} not written: {e}", record.action);
    }
}

/// Records a privileged route's outcome: the caller (a user, or the operator on an operator route), the target
/// from the path or, for a creation, from the answer, and the error code when it was refused.
pub(super) fn record_route(
    ctx: &Context,
    env: &Env,
    request_id: &RequestId,
    by_operator: bool,
    audited: Audited,
    caller: Option<UserId>,
    outcome: &Result<Reply, ApiError>,
) {
    let (status, answer, error) = match outcome {
        Ok(Reply::Json(status, body)) | Ok(Reply::JsonWith(status, body, _)) => {
            (*status, Some(body), None)
        }
        Ok(_) => (204, None, None),
        Err(e) => (e.status(), None, Some(e)),
    };
    let actor = if by_operator {
        Actor::Operator
    } else {
        match &caller {
            Some(user) => Actor::User(user.clone()),
            // Refused before the caller was known (no or a bad token): nothing to put in anyone's trail.
            None => return,
        }
    };
    let answered_id = || {
        answer
            .and_then(|b| b.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let user_id = match &audited.subject {
        Some(subject) => UserId::parse(subject),
        None => caller,
    };
    record(
        ctx,
        env,
        AuditRecord {
            at: JsClock.now_ms(),
            request_id: Some(request_id.as_str().to_owned()),
            actor,
            user_id,
            action: audited.action,
            target: audited
                .target
                .or_else(answered_id)
                .map(|t| t.chars().take(128).collect()),
            agent_id: audited.agent.map(|a| a.chars().take(64).collect()),
            outcome: AuditRecord::outcome_of(status),
            status: Some(status),
            detail: error.map(|e| json!({ "code": e.code.as_str() })),
        },
    );
}

/// `GET /v1/admin/audit` (operator token).
pub(super) async fn for_operator(
    req: &Request,
    store: &D1Store,
    config: &ServiceConfig,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    require_operator(req, config)?;
    json_reply(200, &full_trail(store, query).await?)
}
