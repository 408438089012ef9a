//! The `Store` port over D1. SQL lives here as constants; every agent statement is scoped by `user_id`.

use crate::app::ports::{AgentChanges, Store, StoreError, StoreResult, Written};
use crate::domain::agent::{Agent, AgentDescription, AgentName, AgentStatus};
use crate::domain::entitlements::parse_stored_overrides;
use crate::domain::entitlements::Tier;
use crate::domain::ids::{AgentId, UserId};
use crate::domain::pagination::Cursor;
use crate::domain::user::User;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::D1Database;

pub struct D1Store {
    db: D1Database,
}

impl D1Store {
    pub fn new(db: D1Database) -> Self {
        D1Store { db }
    }

    pub(super) fn db(&self) -> &D1Database {
        &self.db
    }
}

// ?1 issuer, ?2 subject
const USER_BY_IDENTITY: &str =
    "SELECT id, tier, created_at, entitlements_json FROM users WHERE auth_issuer = ?1 AND auth_subject = ?2";
// ?1 id, ?2 issuer, ?3 subject, ?4 tier, ?5 created_at
const INSERT_USER_IF_ABSENT: &str =
    "INSERT INTO users (id, auth_issuer, auth_subject, tier, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (auth_issuer, auth_subject) DO NOTHING";

// ?1 user_id, ?2 limit
const LIST_AGENTS_FIRST_PAGE: &str =
    "SELECT id, user_id, name, description, status, active_deployment_id, \
     created_at, updated_at FROM agents WHERE user_id = ?1 AND deleted_at IS NULL \
     ORDER BY created_at DESC, id DESC LIMIT ?2";
// ?1 user_id, ?2 limit, ?3 cursor created_at, ?4 cursor id
const LIST_AGENTS_AFTER: &str =
    "SELECT id, user_id, name, description, status, active_deployment_id, \
     created_at, updated_at FROM agents WHERE user_id = ?1 AND deleted_at IS NULL \
     AND (created_at < ?3 OR (created_at = ?3 AND id < ?4)) \
     ORDER BY created_at DESC, id DESC LIMIT ?2";
// ?1 user_id, ?2 id
const AGENT_BY_ID: &str = "SELECT id, user_id, name, description, status, active_deployment_id, \
     created_at, updated_at FROM agents WHERE user_id = ?1 AND id = ?2 AND deleted_at IS NULL";
// ?1 id, ?2 user_id, ?3 name, ?4 description, ?5 status, ?6 created_at, ?7 updated_at, ?8 max live agents.
// The count and the insert are one statement, so concurrent creates cannot both take the last slot.
const INSERT_AGENT: &str =
    "INSERT INTO agents (id, user_id, name, description, status, active_deployment_id, \
     created_at, updated_at) SELECT ?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7 \
     WHERE (SELECT COUNT(*) FROM agents WHERE user_id = ?2 AND deleted_at IS NULL) < ?8 RETURNING id";
// ?1 user_id, ?2 id, ?3 set name?, ?4 name, ?5 set description?, ?6 description, ?7 status or NULL, ?8 updated_at
const UPDATE_AGENT: &str = "UPDATE agents SET \
     name = CASE WHEN ?3 THEN ?4 ELSE name END, \
     description = CASE WHEN ?5 THEN ?6 ELSE description END, \
     status = COALESCE(?7, status), \
     updated_at = ?8 \
     WHERE user_id = ?1 AND id = ?2 AND deleted_at IS NULL \
     RETURNING id, user_id, name, description, status, active_deployment_id, created_at, updated_at";
// ?1 user_id, ?2 id, ?3 deleted_at
const DELETE_AGENT: &str = "UPDATE agents SET deleted_at = ?3, updated_at = ?3 \
     WHERE user_id = ?1 AND id = ?2 AND deleted_at IS NULL RETURNING id";

#[derive(Deserialize)]
struct UserRow {
    id: String,
    tier: String,
    // D1 hands numbers to Rust as JS numbers; millisecond timestamps exceed i32, so read them as f64.
    created_at: f64,
    entitlements_json: Option<String>,
}

impl UserRow {
    fn into_user(self) -> StoreResult<User> {
        stored_user(
            self.id,
            &self.tier,
            self.created_at,
            self.entitlements_json.as_deref(),
        )
    }
}

/// A user from the `users` columns, however the query that read them was shaped.
pub(super) fn stored_user(
    id: String,
    tier: &str,
    created_at: f64,
    entitlements_json: Option<&str>,
) -> StoreResult<User> {
    Ok(User {
        id: UserId::from_trusted(id),
        tier: Tier::parse_stored(tier).map_err(|e| StoreError(e.to_string()))?,
        created_at: created_at as i64,
        overrides: parse_stored_overrides(entitlements_json)
            .map_err(|e| StoreError(e.to_string()))?,
    })
}

#[derive(Deserialize)]
struct AgentRow {
    id: String,
    user_id: String,
    name: String,
    description: Option<String>,
    status: String,
    active_deployment_id: Option<String>,
    created_at: f64,
    updated_at: f64,
}

impl AgentRow {
    fn into_agent(self) -> StoreResult<Agent> {
        Ok(Agent {
            id: AgentId::from_trusted(self.id),
            user_id: UserId::from_trusted(self.user_id),
            name: AgentName::from_trusted(self.name),
            description: self.description.map(AgentDescription::from_trusted),
            status: AgentStatus::parse_stored(&self.status)
                .map_err(|e| StoreError(e.to_string()))?,
            active_deployment_id: self.active_deployment_id,
            created_at: self.created_at as i64,
            updated_at: self.updated_at as i64,
        })
    }
}

/// A `RETURNING id` row: only its presence matters.
#[derive(Deserialize)]
pub(super) struct IdRow {
    #[allow(dead_code)]
    id: String,
}

pub(super) fn text(value: &str) -> JsValue {
    JsValue::from_str(value)
}

/// SQL NULL for `None`.
pub(super) fn opt_text(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, text)
}

pub(super) fn number(value: i64) -> JsValue {
    JsValue::from_f64(value as f64)
}

pub(super) fn fail(e: worker::Error) -> StoreError {
    StoreError(e.to_string())
}

/// D1 reports a unique-index collision only in its error text.
pub(super) fn is_unique_violation(e: &worker::Error) -> bool {
    is_unique_violation_message(&e.to_string())
}

fn is_unique_violation_message(message: &str) -> bool {
    message.contains("UNIQUE constraint failed")
}

impl D1Store {
    /// One statement with its parameters bound, to run or to put in a batch.
    pub(super) fn statement(
        &self,
        sql: &str,
        params: &[JsValue],
    ) -> StoreResult<worker::D1PreparedStatement> {
        self.db.prepare(sql).bind(params).map_err(fail)
    }

    /// Runs one statement and deserialises every row it returns.
    pub(super) async fn rows<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[JsValue],
    ) -> StoreResult<Vec<T>> {
        self.db
            .prepare(sql)
            .bind(params)
            .map_err(fail)?
            .all()
            .await
            .map_err(fail)?
            .results()
            .map_err(fail)
    }

    async fn agent_rows(&self, sql: &str, params: &[JsValue]) -> StoreResult<Vec<Agent>> {
        let rows: Vec<AgentRow> = self.rows(sql, params).await?;
        rows.into_iter().map(AgentRow::into_agent).collect()
    }
}

impl Store for D1Store {
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = self
            .db
            .prepare(USER_BY_IDENTITY)
            .bind(&[text(issuer), text(subject)])
            .map_err(fail)?
            .first(None)
            .await
            .map_err(fail)?;
        row.map(UserRow::into_user).transpose()
    }

    async fn insert_user_if_absent(
        &self,
        issuer: &str,
        subject: &str,
        candidate: &User,
    ) -> StoreResult<User> {
        // One round trip: the insert (a no-op if a concurrent request won) and the read of whichever row exists.
        let insert = self
            .db
            .prepare(INSERT_USER_IF_ABSENT)
            .bind(&[
                text(candidate.id.as_str()),
                text(issuer),
                text(subject),
                text(candidate.tier.as_str()),
                number(candidate.created_at),
            ])
            .map_err(fail)?;
        let select = self
            .db
            .prepare(USER_BY_IDENTITY)
            .bind(&[text(issuer), text(subject)])
            .map_err(fail)?;
        let results = self.db.batch(vec![insert, select]).await.map_err(fail)?;
        let rows: Vec<UserRow> = results
            .get(1)
            .ok_or_else(|| StoreError("batch returned no select result".into()))?
            .results()
            .map_err(fail)?;
        rows.into_iter()
            .next()
            .ok_or_else(|| StoreError("user row missing after insert".into()))?
            .into_user()
    }

    async fn list_agents(
        &self,
        owner: &UserId,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<Agent>> {
        let owner = text(owner.as_str());
        let limit = number(limit as i64);
        match after {
            None => {
                self.agent_rows(LIST_AGENTS_FIRST_PAGE, &[owner, limit])
                    .await
            }
            Some(c) => {
                self.agent_rows(
                    LIST_AGENTS_AFTER,
                    &[owner, limit, number(c.created_at), text(&c.id)],
                )
                .await
            }
        }
    }

    async fn agent(&self, owner: &UserId, id: &AgentId) -> StoreResult<Option<Agent>> {
        Ok(self
            .agent_rows(AGENT_BY_ID, &[text(owner.as_str()), text(id.as_str())])
            .await?
            .into_iter()
            .next())
    }

    async fn insert_agent(&self, agent: &Agent, max_agents: u64) -> StoreResult<Written<()>> {
        let statement = self
            .db
            .prepare(INSERT_AGENT)
            .bind(&[
                text(agent.id.as_str()),
                text(agent.user_id.as_str()),
                text(agent.name.as_str()),
                agent
                    .description
                    .as_ref()
                    .map_or(JsValue::NULL, |d| text(d.as_str())),
                text(agent.status.as_str()),
                number(agent.created_at),
                number(agent.updated_at),
                number(max_agents.min(i64::MAX as u64) as i64),
            ])
            .map_err(fail)?;
        match statement.all().await.and_then(|r| r.results::<IdRow>()) {
            Ok(rows) if rows.is_empty() => Ok(Written::LimitReached),
            Ok(_) => Ok(Written::Done(())),
            Err(e) if is_unique_violation(&e) => Ok(Written::NameTaken),
            Err(e) => Err(fail(e)),
        }
    }

    async fn update_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        changes: &AgentChanges,
        updated_at: i64,
    ) -> StoreResult<Written<Option<Agent>>> {
        let flag = |set: bool| number(set as i64);
        let params = [
            text(owner.as_str()),
            text(id.as_str()),
            flag(changes.name.is_some()),
            changes
                .name
                .as_ref()
                .map_or(JsValue::NULL, |n| text(n.as_str())),
            flag(changes.description.is_some()),
            changes
                .description
                .as_ref()
                .and_then(|d| d.as_ref())
                .map_or(JsValue::NULL, |d| text(d.as_str())),
            changes.status.map_or(JsValue::NULL, |s| text(s.as_str())),
            number(updated_at),
        ];
        match self.agent_rows(UPDATE_AGENT, &params).await {
            Ok(rows) => Ok(Written::Done(rows.into_iter().next())),
            Err(StoreError(msg)) if is_unique_violation_message(&msg) => Ok(Written::NameTaken),
            Err(e) => Err(e),
        }
    }

    async fn delete_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        deleted_at: i64,
    ) -> StoreResult<bool> {
        let rows: Vec<IdRow> = self
            .rows(
                DELETE_AGENT,
                &[text(owner.as_str()), text(id.as_str()), number(deleted_at)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .prepare("SELECT 1")
            .first::<serde_json::Value>(None)
            .await
            .map_err(fail)?;
        Ok(())
    }
}
