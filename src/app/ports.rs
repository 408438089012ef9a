//! Ports: what the use-cases need from the outside world. The Workers adapter implements them over D1 and the
//! JS clock; `app::memory` implements them in memory for native tests.

use crate::domain::agent::{Agent, AgentDescription, AgentName, AgentStatus};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::pagination::Cursor;
use crate::domain::user::User;
use crate::domain::ApiError;

/// A storage failure. Its text is for the operator's log; clients see a generic 500.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError(pub String);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("store: {}", e.0))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Result of a write that may hit the per-user unique agent name.
#[derive(Debug, Clone, PartialEq)]
pub enum Written<T> {
    Done(T),
    NameTaken,
}

/// The fields a PATCH may change, already validated. `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentChanges {
    pub name: Option<AgentName>,
    pub description: Option<Option<AgentDescription>>,
    pub status: Option<AgentStatus>,
}

impl AgentChanges {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.description.is_none() && self.status.is_none()
    }
}

/// Persistence. Every agent operation takes the owner's id and matches on it in the query itself, so a
/// foreign agent is simply not found: tenant isolation does not depend on a check being remembered.
// Futures here are !Send on wasm (they hold JS values), and nothing is spawned across threads.
#[allow(async_fn_in_trait)]
pub trait Store {
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>>;
    /// Inserts unless a row for this identity exists; either way returns the stored user.
    async fn insert_user_if_absent(
        &self,
        issuer: &str,
        subject: &str,
        candidate: &User,
    ) -> StoreResult<User>;

    async fn list_agents(
        &self,
        owner: &UserId,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<Agent>>;
    async fn agent(&self, owner: &UserId, id: &AgentId) -> StoreResult<Option<Agent>>;
    async fn insert_agent(&self, agent: &Agent) -> StoreResult<Written<()>>;
    /// Applies `changes` and stamps `updated_at`; `Done(None)` when the owner has no such agent.
    async fn update_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        changes: &AgentChanges,
        updated_at: i64,
    ) -> StoreResult<Written<Option<Agent>>>;
    /// Soft-deletes; `false` when the owner has no such agent.
    async fn delete_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        deleted_at: i64,
    ) -> StoreResult<bool>;

    /// A trivial round trip, for health checks.
    async fn ping(&self) -> StoreResult<()>;
}

/// Time comes through a port: `SystemTime::now` panics on wasm32-unknown-unknown, and tests want to set it.
pub trait Clock {
    fn now_ms(&self) -> i64;
}
