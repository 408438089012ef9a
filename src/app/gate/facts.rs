//! What a user's gate remembers of D1 between calls: the user's tier and overrides, each agent's route, each
//! key's standing and the period's charged totals. D1 stays the system of record; these are copies kept
//! coherent by the writes that change them (`Forget`, `Charge`) and re-read when missing or older than
//! `FACTS_TTL_MS` (a safety net for a notification that was lost, not the way changes normally arrive).

use super::protocol::{AdmitRequest, AgentRoute, Forget, KeyFacts, LoadedFacts, UserFacts};
use crate::domain::period::PeriodKey;
use crate::domain::usage::UsageTotals;
use std::collections::HashMap;

/// How long a copy is trusted without a notification.
pub const FACTS_TTL_MS: i64 = 5 * 60 * 1000;
/// Agents and keys remembered per user; beyond this the least recently loaded are dropped (and re-read).
pub const MAX_REMEMBERED: usize = 256;

#[derive(Debug, Clone)]
struct Stamped<T> {
    value: T,
    loaded_at: i64,
}

impl<T> Stamped<T> {
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
    /// Bumped by every notification, so a D1 read that started before one is not installed after it.
    generation: u64,
    user: Option<Stamped<UserFacts>>,
    agents: HashMap<String, Stamped<AgentRoute>>,
    keys: HashMap<String, Stamped<KeyFacts>>,
    usage: Option<Stamped<(PeriodKey, UsageTotals)>>,
}

impl GateFacts {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Everything `request` needs, if it is all remembered and fresh.
    pub fn view(&self, request: &AdmitRequest, now: i64) -> Option<FactsView<'_>> {
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

    /// Installs what D1 returned for `request`, unless a notification arrived since `generation` was read
    /// (then `false`: the caller reads again). Absent things are not remembered: they are asked for again.
    pub fn install(
        &mut self,
        request: &AdmitRequest,
        loaded: &LoadedFacts,
        generation: u64,
        now: i64,
    ) -> bool {
        if generation != self.generation {
            return false;
        }
        let stamp = |value| Stamped {
            value,
            loaded_at: now,
        };
        self.user = loaded.user.clone().map(stamp);
        if let Some(agent) = &loaded.agent {
            make_room(&mut self.agents);
            self.agents
                .insert(request.agent_id.clone(), stamp_with(agent.clone(), now));
        }
        if let Some(key) = &loaded.key {
            make_room(&mut self.keys);
            self.keys
                .insert(key.key_id.clone(), stamp_with(key.clone(), now));
        }
        self.usage = Some(stamp_with((request.period_key, loaded.usage), now));
        true
    }

    /// The facts of a call whose D1 read found no user or no agent (nothing to remember).
    pub fn view_of_loaded<'a>(loaded: &'a LoadedFacts) -> Option<FactsView<'a>> {
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

    /// Telemetry charged the user: totals only grow within a period (a recompute that corrects them down is
    /// picked up by the TTL or a `Forget::All`), so reports answered out of order cannot move them back.
    pub fn charge(&mut self, period: PeriodKey, totals: UsageTotals) {
        self.generation += 1;
        let Some(stamped) = &mut self.usage else {
            return;
        };
        let (held_period, held) = &mut stamped.value;
        if *held_period == period {
            *held = UsageTotals::new(
                held.events.max(totals.events),
                held.requests.max(totals.requests),
                held.input_tokens.max(totals.input_tokens),
                held.output_tokens.max(totals.output_tokens),
                held.compute_ms.max(totals.compute_ms),
                held.errors.max(totals.errors),
            );
        } else if *held_period < period {
            // Without the D1 stamp of a full read, keep the period's totals only as fresh as the old ones.
            *held_period = period;
            *held = totals;
        }
    }
}

fn stamp_with<T>(value: T, now: i64) -> Stamped<T> {
    Stamped {
        value,
        loaded_at: now,
    }
}

fn make_room<T>(map: &mut HashMap<String, Stamped<T>>) {
    if map.len() < MAX_REMEMBERED {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, s)| s.loaded_at)
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}
