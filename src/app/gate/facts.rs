//! What a user's gate remembers of D1 between calls: the user's tier and overrides, each agent's route, each
//! key's standing and the period's charged totals. D1 stays the system of record; these are copies kept
//! coherent by the writes that change them (`Forget`, `Hold`, `Charge`) and re-read when missing or older than
//! `FACTS_TTL_MS` (a safety net for a notification that was lost, not the way changes normally arrive).

use super::protocol::{AdmitRequest, AgentRoute, Forget, KeyFacts, LoadedFacts, UserFacts};
use crate::domain::bounded_map::make_room_for;
use crate::domain::period::PeriodKey;
use crate::domain::usage::UsageTotals;
use std::collections::HashMap;

/// How long a copy is trusted without a notification.
pub const FACTS_TTL_MS: i64 = 5 * 60 * 1000;
/// Agents and keys remembered per user; beyond this the least recently loaded are dropped (and re-read).
pub const MAX_REMEMBERED: usize = 256;
/// The longest a hold lasts if the write that asked for it never says it is done.
pub const MAX_HOLD_MS: i64 = 60 * 1000;

#[derive(Debug, Clone)]
struct Stamped<T> {
    value: T,
    loaded_at: i64,
}

impl<T> Stamped<T> {
    fn new(value: T, now: i64) -> Self {
        Stamped {
            value,
            loaded_at: now,
        }
    }

    fn fresh(&self, now: i64) -> Option<&T> {
        (now - self.loaded_at < FACTS_TTL_MS && now >= self.loaded_at).then_some(&self.value)
    }
}

/// The facts one admission is decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct FactsView<'a> {
    pub user: &'a UserFacts,
    pub agent: Option<&'a AgentRoute>,
    pub key: Option<&'a KeyFacts>,
    pub usage: UsageTotals,
}

#[derive(Debug, Default)]
pub struct GateFacts {
    /// Bumped by every `Forget`, so a D1 read that started before one is not installed after it.
    generation: u64,
    user: Option<Stamped<UserFacts>>,
    agents: HashMap<String, Stamped<AgentRoute>>,
    keys: HashMap<String, Stamped<KeyFacts>>,
    usage: Option<Stamped<(PeriodKey, UsageTotals)>>,
    /// The highest totals telemetry (or the gateway's measure) charged per field, for the period: merged into every D1 read, so a read
    /// that raced a charge cannot lower them.
    charged: Option<(PeriodKey, UsageTotals)>,
    /// Agents whose route is being changed (a deploy going live): until the hold ends, every call reads D1.
    holds: HashMap<String, i64>,
}

fn max_totals(a: &UsageTotals, b: &UsageTotals) -> UsageTotals {
    UsageTotals::new(
        a.events.max(b.events),
        a.requests.max(b.requests),
        a.input_tokens.max(b.input_tokens),
        a.output_tokens.max(b.output_tokens),
        a.compute_ms.max(b.compute_ms),
        a.errors.max(b.errors),
    )
    .with_gateway_ms(a.gateway_ms.max(b.gateway_ms))
}

impl GateFacts {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn held(&self, agent_id: &str, now: i64) -> bool {
        self.holds.get(agent_id).is_some_and(|until| now < *until)
    }

    /// Everything `request` needs, if it is all remembered and fresh (and its agent is not on hold).
    pub fn view(&self, request: &AdmitRequest, now: i64) -> Option<FactsView<'_>> {
        if self.held(&request.agent_id, now) {
            return None;
        }
        let user = self.user.as_ref()?.fresh(now)?;
        let agent = self.agents.get(&request.agent_id)?.fresh(now)?;
        let key = match &request.key_id {
            Some(id) => Some(self.keys.get(id)?.fresh(now)?),
            None => None,
        };
        let (period, usage) = self.usage.as_ref()?.fresh(now)?;
        if *period != request.period_key {
            return None;
        }
        Some(FactsView {
            user,
            agent: Some(agent),
            key,
            usage: *usage,
        })
    }

    /// Installs what D1 returned for `request`, unless a `Forget` arrived since `generation` was read (then
    /// `false`: the caller reads again). What D1 says is absent is dropped from memory, so a fresh read can
    /// never be overruled by an older copy; an agent on hold is not remembered at all.
    pub fn install(
        &mut self,
        request: &AdmitRequest,
        loaded: &mut LoadedFacts,
        generation: u64,
        now: i64,
    ) -> bool {
        if generation != self.generation {
            return false;
        }
        if let Some((period, charged)) = &self.charged {
            if *period == request.period_key {
                loaded.usage = max_totals(&loaded.usage, charged);
            }
        }
        self.user = loaded.user.clone().map(|u| Stamped::new(u, now));
        match &loaded.agent {
            Some(agent) if !self.held(&request.agent_id, now) => {
                remember(&mut self.agents, &request.agent_id, agent.clone(), now)
            }
            _ => {
                self.agents.remove(&request.agent_id);
            }
        }
        if let Some(key_id) = &request.key_id {
            match &loaded.key {
                Some(key) => remember(&mut self.keys, key_id, key.clone(), now),
                None => {
                    self.keys.remove(key_id);
                }
            }
        }
        self.usage = Some(Stamped::new((request.period_key, loaded.usage), now));
        true
    }

    /// The facts of a call decided on a D1 read that was not (or could not be) installed.
    pub fn view_of_loaded(loaded: &LoadedFacts) -> Option<FactsView<'_>> {
        Some(FactsView {
            user: loaded.user.as_ref()?,
            agent: loaded.agent.as_ref(),
            key: loaded.key.as_ref(),
            usage: loaded.usage,
        })
    }

    pub fn forget(&mut self, what: &Forget) {
        self.generation += 1;
        match what {
            Forget::User => self.user = None,
            Forget::Agent(id) => {
                self.agents.remove(id);
                // The change the hold announced is done: calls may be answered from memory again.
                self.holds.remove(id);
            }
            Forget::Key(id) => {
                self.keys.remove(id);
            }
            Forget::All => {
                let generation = self.generation;
                *self = GateFacts {
                    generation,
                    ..GateFacts::default()
                };
            }
        }
    }

    /// A write is about to change this agent's route: until it says it is done (`Forget::Agent`), or
    /// `MAX_HOLD_MS` at the most, every call reads the route from D1 and nothing is remembered, so the change is
    /// seen by the first call after D1 has it, whatever happens to the notification that follows.
    pub fn hold(&mut self, agent_id: &str, now: i64) {
        self.forget(&Forget::Agent(agent_id.to_owned()));
        self.holds.retain(|_, until| *until > now);
        self.holds.insert(agent_id.to_owned(), now + MAX_HOLD_MS);
    }

    /// Telemetry charged the user: totals only grow within a period (a recompute that corrects them down is
    /// picked up by the TTL or a `Forget::All`), so reports answered out of order cannot move them back. A
    /// charge does not invalidate a D1 read in progress: the read is merged with it when installed.
    pub fn charge(&mut self, period: PeriodKey, totals: UsageTotals) {
        let charged = match &self.charged {
            Some((p, held)) if *p == period => max_totals(held, &totals),
            Some((p, _)) if *p > period => return,
            _ => totals,
        };
        self.charged = Some((period, charged));
        if let Some(stamped) = &mut self.usage {
            let (held_period, held) = &mut stamped.value;
            if *held_period == period {
                *held = max_totals(held, &charged);
            }
        }
    }
}

/// Remembers `value` under `id`, dropping the least recently loaded entry first if the map is full.
fn remember<T>(map: &mut HashMap<String, Stamped<T>>, id: &str, value: T, now: i64) {
    make_room_for(map, id, MAX_REMEMBERED, |stamped| stamped.loaded_at);
    map.insert(id.to_owned(), Stamped::new(value, now));
}
