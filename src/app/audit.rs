//! The audit trail: who did what to what, when, and how it ended — every privileged action (agents, deploys and
//! their outcome, rollbacks, secrets by name, API keys, plan changes by an operator or by billing, billing events).
//! Rows hold ids, names and outcomes, never a secret's value or a key. A user reads their own trail; operators
//! read everyone's.

use super::ports::StoreResult;
use crate::domain::ids::UserId;
use crate::domain::pagination::{Cursor, PageLimit};
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::Value;

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    ApiKey(String),
    Operator,
    Stripe,
    /// The control plane itself (a deploy finishing, the clean-up job).
    System,
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::ApiKey(_) => "api_key",
            Actor::Operator => "operator",
            Actor::Stripe => "stripe",
            Actor::System => "system",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::User(id) => Some(id.as_str()),
            Actor::ApiKey(id) => Some(id),
            _ => None,
        }
    }
}

/// One row of the trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub at: i64,
    pub request_id: Option<String>,
    pub actor: Actor,
    /// Whose trail it is in (the owner of what was acted on).
    pub user_id: Option<UserId>,
    pub action: &'static str,
    /// What was acted on: an agent, deployment or key id, a secret's name, a billing event id.
    pub target: Option<String>,
    pub agent_id: Option<String>,
    /// `ok`, `refused` (a 4xx) or `failed` (a 5xx, or work that failed after the answer).
    pub outcome: &'static str,
    pub status: Option<u16>,
    /// Structured context (the error code, a tier change); never a secret.
    pub detail: Option<Value>,
}

impl AuditRecord {
    /// The outcome an HTTP status stands for.
    pub fn outcome_of(status: u16) -> &'static str {
        match status {
            200..=299 => "ok",
            400..=499 => "refused",
            _ => "failed",
        }
    }
}

/// A row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: String,
    pub at: i64,
    pub request_id: Option<String>,
    pub actor: String,
    pub actor_id: Option<String>,
    pub user_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub agent_id: Option<String>,
    pub outcome: String,
    pub status: Option<u16>,
    pub detail: Option<Value>,
}

/// Which rows to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub agent_id: Option<String>,
}

#[allow(async_fn_in_trait)]
pub trait AuditStore {
    async fn record_audit(&self, record: &AuditRecord) -> StoreResult<()>;
    /// Newest first, after `after` (the previous page's last row).
    async fn audit_rows(
        &self,
        filter: &AuditFilter,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<AuditView>>;
    /// Deletes up to `limit` rows older than `before` (ms); returns how many.
    async fn prune_audit(&self, before: i64, limit: u32) -> StoreResult<u64>;
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

fn filter_value(value: Option<&String>, field: &str) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(v)
            if !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Ok(Some(v.clone()))
        }
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("{field} must be 1 to 64 letters, digits, '.', '_' or '-'"),
        )),
    }
}

async fn page(
    store: &impl AuditStore,
    filter: AuditFilter,
    query: &std::collections::HashMap<String, String>,
) -> Result<AuditPage, ApiError> {
    let limit = PageLimit::parse(query.get("limit").map(String::as_str))?;
    let after = query.get("cursor").map(|c| Cursor::decode(c)).transpose()?;
    let mut entries = store
        .audit_rows(&filter, after.as_ref(), limit.rows_to_fetch())
        .await?;
    let next_cursor = limit.finish_page(&mut entries, |last| Cursor {
        created_at: last.at,
        id: last.id.clone(),
    });
    Ok(AuditPage {
        entries,
        next_cursor,
    })
}

/// `GET /v1/audit?action=&agentId=&limit=&cursor=`: the caller's own trail.
pub async fn own_trail(
    store: &impl AuditStore,
    user: &User,
    query: &std::collections::HashMap<String, String>,
) -> Result<AuditPage, ApiError> {
    let filter = AuditFilter {
        user_id: Some(user.id.as_str().to_owned()),
        action: filter_value(query.get("action"), "action")?,
        agent_id: filter_value(query.get("agentId"), "agentId")?,
    };
    page(store, filter, query).await
}

/// `GET /v1/admin/audit?userId=&action=&agentId=&limit=&cursor=`: everyone's, for operators.
pub async fn full_trail(
    store: &impl AuditStore,
    query: &std::collections::HashMap<String, String>,
) -> Result<AuditPage, ApiError> {
    let filter = AuditFilter {
        user_id: filter_value(query.get("userId"), "userId")?,
        action: filter_value(query.get("action"), "action")?,
        agent_id: filter_value(query.get("agentId"), "agentId")?,
    };
    page(store, filter, query).await
}

/// Default days audit rows are kept (`AUDIT_RETENTION_DAYS`).
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;
/// Statements per scheduled run, each of `retention::PRUNE_CHUNK` rows: bounded work per tick.
const PRUNE_CHUNKS_PER_RUN: u32 = 10;

/// Deletes rows older than `retention_days`; returns how many.
pub async fn prune(
    store: &impl AuditStore,
    retention_days: u32,
    now: i64,
) -> Result<u64, ApiError> {
    let before = super::retention::cutoff(now, retention_days);
    Ok(
        super::retention::delete_in_chunks(PRUNE_CHUNKS_PER_RUN, |limit| {
            store.prune_audit(before, limit)
        })
        .await?,
    )
}
