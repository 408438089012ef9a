//! Agent use-cases. Every one takes the caller resolved server-side; nothing in a request body or query can
//! name another owner.

use super::gate::protocol::Forget;
use super::ports::{tell, AgentChanges, Clock, GateNotifier, Store, Written};
use crate::domain::agent::{name_taken, Agent, AgentDescription, AgentName, AgentStatus};
use crate::domain::ids::AgentId;
use crate::domain::pagination::{Cursor, PageLimit};
use crate::domain::patch::double_option;
use crate::domain::user::User;
use crate::domain::{ApiError, ErrorCode};
use serde::{de::IgnoredAny, Deserialize, Serialize};

/// `POST /v1/agents` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateAgentRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Accepted for compatibility with clients that send it, and ignored: the owner is always the caller.
    #[serde(default, rename = "userId")]
    pub _user_id: Option<IgnoredAny>,
}

/// `PATCH /v1/agents/{agentId}` body. `description: null` clears the description.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateAgentRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub description: Option<Option<String>>,
    #[serde(default, rename = "userId")]
    pub _user_id: Option<IgnoredAny>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentPage {
    pub agents: Vec<Agent>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A path id that is malformed, unknown or someone else's gets the same answer.
fn parse_agent_id(raw: &str) -> Result<AgentId, ApiError> {
    AgentId::parse(raw).ok_or_else(ApiError::agent_not_found)
}

pub async fn create_agent<S: Store, C: Clock>(
    store: &S,
    clock: &C,
    owner: &User,
    req: CreateAgentRequest,
    max_agents: u64,
) -> Result<Agent, ApiError> {
    let name = AgentName::parse(&req.name)?;
    let description = match req.description.as_deref() {
        Some(d) => AgentDescription::parse(d)?,
        None => None,
    };
    let now = clock.now_ms();
    let agent = Agent {
        id: AgentId::generate(),
        user_id: owner.id.clone(),
        name,
        description,
        status: AgentStatus::Active,
        active_deployment_id: None,
        created_at: now,
        updated_at: now,
    };
    match store.insert_agent(&agent, max_agents).await? {
        Written::Done(()) => Ok(agent),
        Written::NameTaken => Err(name_taken(&agent.name)),
        Written::LimitReached => Err(ApiError::new(
            ErrorCode::AgentLimitReached,
            format!("Your plan allows {max_agents} agents; delete one or ask for a higher limit."),
        )
        .with_details(serde_json::json!({ "entitlement": "maxAgents", "limit": max_agents }))),
    }
}

pub async fn list_agents<S: Store>(
    store: &S,
    owner: &User,
    cursor: Option<&str>,
    limit: Option<&str>,
) -> Result<AgentPage, ApiError> {
    let limit = PageLimit::parse(limit)?;
    let after = cursor.map(Cursor::decode).transpose()?;
    let mut agents = store
        .list_agents(&owner.id, after.as_ref(), limit.rows_to_fetch())
        .await?;
    let next_cursor = limit.finish_page(&mut agents, |last| Cursor {
        created_at: last.created_at,
        id: last.id.to_string(),
    });
    Ok(AgentPage {
        agents,
        next_cursor,
    })
}

pub async fn get_agent<S: Store>(store: &S, owner: &User, raw_id: &str) -> Result<Agent, ApiError> {
    let id = parse_agent_id(raw_id)?;
    store
        .agent(&owner.id, &id)
        .await?
        .ok_or_else(ApiError::agent_not_found)
}

/// Validates the whole body before touching storage, so a bad field changes nothing.
pub fn validate_update(req: UpdateAgentRequest) -> Result<AgentChanges, ApiError> {
    Ok(AgentChanges {
        name: req.name.as_deref().map(AgentName::parse).transpose()?,
        description: match req.description {
            None => None,
            Some(None) => Some(None),
            Some(Some(d)) => Some(AgentDescription::parse(&d)?),
        },
        status: None,
    })
}

async fn apply_changes<S: Store, C: Clock>(
    store: &S,
    clock: &C,
    owner: &User,
    raw_id: &str,
    changes: AgentChanges,
) -> Result<Agent, ApiError> {
    let id = parse_agent_id(raw_id)?;
    if changes.is_empty() {
        // `{}` is a valid PATCH that changes nothing, `updatedAt` included.
        return get_agent(store, owner, raw_id).await;
    }
    match store
        .update_agent(&owner.id, &id, &changes, clock.now_ms())
        .await?
    {
        Written::Done(Some(agent)) => Ok(agent),
        Written::Done(None) => Err(ApiError::agent_not_found()),
        Written::NameTaken => Err(name_taken(
            changes.name.as_ref().expect("only a rename can collide"),
        )),
        Written::LimitReached => Err(ApiError::internal("an update cannot reach the agent limit")),
    }
}

pub async fn update_agent<S: Store, C: Clock>(
    store: &S,
    clock: &C,
    owner: &User,
    raw_id: &str,
    req: UpdateAgentRequest,
) -> Result<Agent, ApiError> {
    let changes = validate_update(req)?;
    apply_changes(store, clock, owner, raw_id, changes).await
}

/// Disables or enables; the gate is told, so a disabled agent is refused from the very next call on.
pub async fn set_agent_status<S: Store, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    clock: &C,
    owner: &User,
    raw_id: &str,
    status: AgentStatus,
) -> Result<Agent, ApiError> {
    let changes = AgentChanges {
        status: Some(status),
        ..AgentChanges::default()
    };
    let agent = apply_changes(store, clock, owner, raw_id, changes).await?;
    tell(gate, &owner.id, Forget::Agent(agent.id.as_str().to_owned())).await?;
    Ok(agent)
}

pub async fn delete_agent<S: Store, C: Clock>(
    store: &S,
    gate: &impl GateNotifier,
    clock: &C,
    owner: &User,
    raw_id: &str,
) -> Result<(), ApiError> {
    let id = parse_agent_id(raw_id)?;
    let deleted = store.delete_agent(&owner.id, &id, clock.now_ms()).await?;
    // Told even when there was nothing to delete: a repeat after "the gate could not be told" finds the agent
    // already gone, and must still reach the gate. Harmless otherwise (the caller's own gate forgets an id).
    tell(gate, &owner.id, Forget::Agent(id.as_str().to_owned())).await?;
    if deleted {
        Ok(())
    } else {
        Err(ApiError::agent_not_found())
    }
}

#[cfg(test)]
mod tests;
