//! In-memory implementations of the ports, for native tests of the use-cases. Semantics follow the D1 store:
//! owner-scoped queries, unique live names per owner, soft delete, newest-first keyset pages.

use super::api_keys::{ApiKeyStore, ApiKeyView, NewApiKey};
use super::gate::protocol::Forget;
use super::ports::{AgentChanges, Clock, GateNotifier, Store, StoreResult, Written};
use super::usage::{PeriodTotals, RecentEvent, Recomputed, UsageStore};
use crate::domain::agent::Agent;
use crate::domain::ids::ApiKeyId;
use crate::domain::ids::{AgentId, UserId};
use crate::domain::pagination::Cursor;
use crate::domain::period::PeriodKey;
use crate::domain::usage::{MeasuredUsage, UsageTotals};
use crate::domain::user::User;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

#[derive(Default)]
pub struct MemoryStore {
    users: RefCell<Vec<(String, String, User)>>,
    agents: RefCell<Vec<(Agent, Option<i64>)>>,
    keys: RefCell<Vec<(NewApiKey, Option<i64>)>>,
}

impl MemoryStore {
    fn name_in_use(&self, owner: &UserId, name: &str, except: Option<&AgentId>) -> bool {
        self.agents.borrow().iter().any(|(a, deleted)| {
            deleted.is_none()
                && &a.user_id == owner
                && a.name.as_str() == name
                && Some(&a.id) != except
        })
    }
}

impl Store for MemoryStore {
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        Ok(self
            .users
            .borrow()
            .iter()
            .find(|(i, s, _)| i == issuer && s == subject)
            .map(|(_, _, u)| u.clone()))
    }

    async fn insert_user_if_absent(
        &self,
        issuer: &str,
        subject: &str,
        candidate: &User,
    ) -> StoreResult<User> {
        if let Some(user) = self.user_by_identity(issuer, subject).await? {
            return Ok(user);
        }
        self.users
            .borrow_mut()
            .push((issuer.into(), subject.into(), candidate.clone()));
        Ok(candidate.clone())
    }

    async fn list_agents(
        &self,
        owner: &UserId,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<Agent>> {
        let mut live: Vec<Agent> = self
            .agents
            .borrow()
            .iter()
            .filter(|(a, deleted)| deleted.is_none() && &a.user_id == owner)
            .filter(|(a, _)| {
                after.is_none_or(|c| (a.created_at, a.id.as_str()) < (c.created_at, c.id.as_str()))
            })
            .map(|(a, _)| a.clone())
            .collect();
        live.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        live.truncate(limit as usize);
        Ok(live)
    }

    async fn agent(&self, owner: &UserId, id: &AgentId) -> StoreResult<Option<Agent>> {
        Ok(self
            .agents
            .borrow()
            .iter()
            .find(|(a, deleted)| deleted.is_none() && &a.user_id == owner && &a.id == id)
            .map(|(a, _)| a.clone()))
    }

    async fn insert_agent(&self, agent: &Agent, max_agents: u64) -> StoreResult<Written<()>> {
        let live = self
            .agents
            .borrow()
            .iter()
            .filter(|(a, deleted)| a.user_id == agent.user_id && deleted.is_none())
            .count() as u64;
        if live >= max_agents {
            return Ok(Written::LimitReached);
        }
        if self.name_in_use(&agent.user_id, agent.name.as_str(), None) {
            return Ok(Written::NameTaken);
        }
        self.agents.borrow_mut().push((agent.clone(), None));
        Ok(Written::Done(()))
    }

    async fn update_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        changes: &AgentChanges,
        updated_at: i64,
    ) -> StoreResult<Written<Option<Agent>>> {
        if self.agent(owner, id).await?.is_none() {
            return Ok(Written::Done(None));
        }
        if let Some(name) = &changes.name {
            if self.name_in_use(owner, name.as_str(), Some(id)) {
                return Ok(Written::NameTaken);
            }
        }
        let mut agents = self.agents.borrow_mut();
        let (agent, _) = agents
            .iter_mut()
            .find(|(a, deleted)| deleted.is_none() && &a.id == id)
            .expect("checked above");
        if let Some(name) = &changes.name {
            agent.name = name.clone();
        }
        if let Some(description) = &changes.description {
            agent.description = description.clone();
        }
        if let Some(status) = changes.status {
            agent.status = status;
        }
        agent.updated_at = updated_at;
        Ok(Written::Done(Some(agent.clone())))
    }

    async fn delete_agent(
        &self,
        owner: &UserId,
        id: &AgentId,
        deleted_at: i64,
    ) -> StoreResult<bool> {
        let mut agents = self.agents.borrow_mut();
        match agents
            .iter_mut()
            .find(|(a, deleted)| deleted.is_none() && &a.user_id == owner && &a.id == id)
        {
            Some((_, deleted)) => {
                *deleted = Some(deleted_at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

pub struct TestClock(Cell<i64>);

impl TestClock {
    pub fn new(now_ms: i64) -> Self {
        TestClock(Cell::new(now_ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.set(self.0.get() + ms);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

/// Records what the gate was told; `fail` makes it unreachable.
#[derive(Default)]
pub struct RecordingGate {
    pub told: RefCell<Vec<(UserId, Forget)>>,
    pub held: RefCell<Vec<(UserId, String)>>,
    pub fail: Cell<bool>,
}

impl GateNotifier for RecordingGate {
    async fn forget(&self, user: &UserId, what: Forget) -> Result<(), String> {
        if self.fail.get() {
            return Err("gate unreachable".into());
        }
        self.told.borrow_mut().push((user.clone(), what));
        Ok(())
    }

    async fn hold(&self, user: &UserId, agent: &str) -> Result<(), String> {
        if self.fail.get() {
            return Err("gate unreachable".into());
        }
        self.held
            .borrow_mut()
            .push((user.clone(), agent.to_owned()));
        Ok(())
    }
}

impl MemoryStore {
    pub fn stored_keys(&self) -> Vec<NewApiKey> {
        self.keys.borrow().iter().map(|(k, _)| k.clone()).collect()
    }
}

impl ApiKeyStore for MemoryStore {
    async fn insert_api_key(&self, key: &NewApiKey, max_live: u32) -> StoreResult<bool> {
        let mut keys = self.keys.borrow_mut();
        let live = keys
            .iter()
            .filter(|(k, revoked)| k.owner == key.owner && revoked.is_none())
            .count();
        if live >= max_live as usize {
            return Ok(false);
        }
        keys.push((key.clone(), None));
        Ok(true)
    }

    async fn api_keys(&self, owner: &UserId) -> StoreResult<Vec<ApiKeyView>> {
        let mut keys: Vec<ApiKeyView> = self
            .keys
            .borrow()
            .iter()
            .filter(|(k, _)| &k.owner == owner)
            .map(|(k, revoked)| ApiKeyView {
                id: k.id.as_str().to_owned(),
                name: k.name.clone(),
                prefix: k.prefix.clone(),
                agent_id: k.agent.as_ref().map(|a| a.as_str().to_owned()),
                created_at: k.created_at,
                last_used_at: None,
                revoked_at: *revoked,
            })
            .collect();
        keys.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(keys)
    }

    async fn revoke_api_key(&self, owner: &UserId, id: &ApiKeyId, now: i64) -> StoreResult<bool> {
        let mut keys = self.keys.borrow_mut();
        match keys
            .iter_mut()
            .find(|(k, _)| &k.owner == owner && &k.id == id)
        {
            Some((_, revoked)) => {
                revoked.get_or_insert(now);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Usage as the stores keep it, for native tests: totals per period, owned agents, rollup state, and the raw
/// events left in each prunable period.
#[derive(Default)]
pub struct MemoryUsage {
    pub totals: RefCell<HashMap<PeriodKey, UsageTotals>>,
    pub measured: RefCell<HashMap<PeriodKey, MeasuredUsage>>,
    pub finalized: Vec<PeriodKey>,
    pub agents: Vec<AgentId>,
    pub pruned: HashMap<PeriodKey, bool>,
    pub open: Vec<PeriodKey>,
    pub prunable: Vec<PeriodKey>,
    /// Raw events left per prunable period.
    pub raw_left: RefCell<HashMap<PeriodKey, u64>>,
    pub recomputed: RefCell<Vec<(PeriodKey, bool)>>,
}

impl UsageStore for MemoryUsage {
    async fn usage_totals(&self, _: &UserId, period: PeriodKey) -> StoreResult<UsageTotals> {
        Ok(self
            .totals
            .borrow()
            .get(&period)
            .copied()
            .unwrap_or_default())
    }
    async fn measured_usage(&self, _: &UserId, period: PeriodKey) -> StoreResult<MeasuredUsage> {
        Ok(self
            .measured
            .borrow()
            .get(&period)
            .copied()
            .unwrap_or_default())
    }
    async fn usage_history(
        &self,
        _: &UserId,
        oldest: PeriodKey,
        newest: PeriodKey,
    ) -> StoreResult<Vec<PeriodTotals>> {
        Ok(self
            .totals
            .borrow()
            .iter()
            .filter(|(p, _)| **p >= oldest && **p <= newest)
            .map(|(p, t)| PeriodTotals {
                period_key: *p,
                totals: *t,
                finalized: self.finalized.contains(p),
            })
            .collect())
    }
    async fn owns_agent(&self, _: &UserId, agent: &AgentId) -> StoreResult<bool> {
        Ok(self.agents.contains(agent))
    }
    async fn recent_events(
        &self,
        _: &UserId,
        agent: &AgentId,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<RecentEvent>> {
        Ok((0..limit.min(3))
            .map(|i| RecentEvent {
                event_id: Some(format!("e{i}")),
                trace_id: format!("t{i}"),
                deployment_id: "dep".into(),
                agent_id: agent.as_str().into(),
                runtime_provider: "cloudflare".into(),
                ts: since + i as i64,
                received_at: since,
                period_key: "2026-11".into(),
                requests: 1,
                input_tokens: 1,
                output_tokens: 1,
                compute_ms: 1,
                errors: 0,
            })
            .collect())
    }
    async fn rollup_pruned(&self, period: PeriodKey) -> StoreResult<Option<bool>> {
        Ok(self.pruned.get(&period).copied())
    }
    async fn recompute(
        &self,
        period: PeriodKey,
        _: i64,
        finalize: bool,
    ) -> StoreResult<Recomputed> {
        self.recomputed.borrow_mut().push((period, finalize));
        Ok(Recomputed {
            period_key: period.to_string(),
            finalized: finalize,
            ..Recomputed::default()
        })
    }
    async fn open_periods(&self, _: PeriodKey) -> StoreResult<Vec<PeriodKey>> {
        Ok(self.open.clone())
    }
    async fn prunable_periods(&self, _: PeriodKey) -> StoreResult<Vec<PeriodKey>> {
        Ok(self.prunable.clone())
    }
    async fn prune_period(&self, period: PeriodKey, _: i64, limit: u32) -> StoreResult<u64> {
        let mut left = self.raw_left.borrow_mut();
        let n = left.entry(period).or_default();
        let deleted = (*n).min(u64::from(limit));
        *n -= deleted;
        Ok(deleted)
    }
}
