//! How the gate answers a call, over two ports: its own storage (the request count and the sessions, durable)
//! and D1 (the facts, read only when missing or stale). The Durable Object shell supplies both; native tests
//! supply in-memory ones, so the whole gate — loading, coherence and the admission — is tested without workerd.

use super::admit::admit;
use super::facts::GateFacts;
use super::protocol::{Admission, AdmitRequest, GateCall, LoadedFacts};
use crate::app::ports::StoreResult;
use crate::domain::entitlements::TierOverrides;
use crate::domain::reservation::{self, GateDecision, GateRequest, PeriodCount};
use crate::domain::session::SessionRecord;
use std::cell::RefCell;

/// The object's durable state.
#[allow(async_fn_in_trait)]
pub trait GateStorage {
    async fn count(&self) -> StoreResult<Option<PeriodCount>>;
    async fn session(&self, key: &str) -> StoreResult<Option<SessionRecord>>;
    /// Writes the count and (if given) one session together.
    async fn save(
        &self,
        count: PeriodCount,
        session: Option<(&str, &SessionRecord)>,
    ) -> StoreResult<()>;
}

/// The system of record, read when the gate's copy of a fact is missing or stale.
#[allow(async_fn_in_trait)]
pub trait FactsSource {
    async fn load(&self, user_id: &str, request: &AdmitRequest) -> StoreResult<LoadedFacts>;
}

/// Where a session is stored: per agent, so a session id presented for another agent is another session.
pub fn session_key(agent_id: &str, session_id: &str) -> String {
    format!("{SESSION_KEY_PREFIX}{agent_id}:{session_id}")
}
pub const SESSION_KEY_PREFIX: &str = "s:";

/// A D1 read that keeps losing to notifications is used once, uninstalled, after this many tries.
const MAX_LOADS: usize = 3;

/// What the gate holds in memory between calls. Every decision reads and updates it without an `.await` in
/// between, so concurrent calls cannot both take the last request.
#[derive(Debug, Default)]
pub struct GateMemory {
    facts: RefCell<GateFacts>,
    /// `None` until read from storage once.
    count: RefCell<Option<Option<PeriodCount>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GateAnswer {
    Admission(Admission),
    Decision(GateDecision),
    Done,
}

impl GateMemory {
    async fn load_count(&self, storage: &impl GateStorage) -> StoreResult<()> {
        if self.count.borrow().is_none() {
            let stored = storage.count().await?;
            self.count.borrow_mut().get_or_insert(stored);
        }
        Ok(())
    }

    /// Applies `op` to the count in memory (synchronously) and returns what to store and answer.
    fn update_count(
        &self,
        op: impl FnOnce(Option<PeriodCount>) -> (PeriodCount, GateDecision),
    ) -> (PeriodCount, GateDecision) {
        let mut slot = self.count.borrow_mut();
        let (count, decision) = op(slot.flatten());
        *slot = Some(Some(count));
        (count, decision)
    }

    pub async fn serve(
        &self,
        user_id: &str,
        call: GateCall,
        storage: &impl GateStorage,
        source: &impl FactsSource,
        tiers: &TierOverrides,
        now: i64,
    ) -> StoreResult<GateAnswer> {
        match call {
            GateCall::Admit(request) => self
                .admit(user_id, &request, storage, source, tiers, now)
                .await
                .map(GateAnswer::Admission),
            GateCall::Release { period_key } => {
                self.load_count(storage).await?;
                let request = GateRequest {
                    period_key,
                    limit: 0,
                };
                let (count, decision) = self.update_count(|c| reservation::release(c, request));
                storage.save(count, None).await?;
                Ok(GateAnswer::Decision(decision))
            }
            GateCall::Peek { period_key, limit } => {
                self.load_count(storage).await?;
                let count = self.count.borrow().flatten();
                let (_, decision) = reservation::peek(count, GateRequest { period_key, limit });
                Ok(GateAnswer::Decision(decision))
            }
            GateCall::Forget(what) => {
                self.facts.borrow_mut().forget(&what);
                Ok(GateAnswer::Done)
            }
            GateCall::Hold { agent_id } => {
                self.facts.borrow_mut().hold(&agent_id, now);
                Ok(GateAnswer::Done)
            }
            GateCall::Charge { period_key, totals } => {
                self.facts.borrow_mut().charge(period_key, totals);
                Ok(GateAnswer::Done)
            }
        }
    }

    async fn admit(
        &self,
        user_id: &str,
        request: &AdmitRequest,
        storage: &impl GateStorage,
        source: &impl FactsSource,
        tiers: &TierOverrides,
        now: i64,
    ) -> StoreResult<Admission> {
        self.load_count(storage).await?;
        let mut loaded: Option<LoadedFacts> = None;
        let mut tries = 0;
        while self.facts.borrow().view(request, now).is_none() && tries < MAX_LOADS {
            tries += 1;
            let generation = self.facts.borrow().generation();
            // A D1 read lets other calls (and notifications) in: hence the generation check on install.
            let mut facts = source.load(user_id, request).await?;
            let installed = self
                .facts
                .borrow_mut()
                .install(request, &mut facts, generation, now);
            loaded = Some(facts);
            if installed {
                break;
            }
        }
        // Storage reads hold the object's input gate (no other call runs meanwhile), so from here to the
        // reservation nothing can change underneath: two calls with one new session id cannot fork it.
        let key = request
            .session_id
            .as_deref()
            .map(|s| session_key(&request.agent_id, s));
        let stored_session = match &key {
            Some(key) => storage.session(key).await?,
            None => None,
        };
        let decided = {
            let facts = self.facts.borrow();
            let view = facts
                .view(request, now)
                .or_else(|| loaded.as_ref().and_then(GateFacts::view_of_loaded));
            let count = self.count.borrow().flatten();
            admit(view, tiers, count, stored_session, request, now)
        };
        let mut admission = decided.admission;
        admission.loaded = loaded.is_some();
        if let Some(count) = decided.count {
            *self.count.borrow_mut() = Some(Some(count));
            let session = decided
                .session
                .as_ref()
                .map(|(id, record)| (session_key(&request.agent_id, id), record));
            storage
                .save(count, session.as_ref().map(|(k, r)| (k.as_str(), *r)))
                .await?;
        }
        Ok(admission)
    }
}
