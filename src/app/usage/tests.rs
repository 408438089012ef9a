use super::*;
use crate::domain::entitlements::{Overrides, Tier};
use pollster::block_on;
use std::cell::RefCell;

const NOW: i64 = 1_795_000_000_000; // within 2026-11

fn period(s: &str) -> PeriodKey {
    PeriodKey::parse(s).unwrap()
}

#[derive(Default)]
struct Fake {
    totals: HashMap<PeriodKey, UsageTotals>,
    finalized: Vec<PeriodKey>,
    agents: Vec<AgentId>,
    pruned: HashMap<PeriodKey, bool>,
    open: Vec<PeriodKey>,
    prunable: Vec<PeriodKey>,
    /// Raw events left per prunable period.
    raw_left: RefCell<HashMap<PeriodKey, u64>>,
    recomputed: RefCell<Vec<(PeriodKey, bool)>>,
}

impl UsageStore for Fake {
    async fn usage_totals(&self, _: &UserId, period: PeriodKey) -> StoreResult<UsageTotals> {
        Ok(self.totals.get(&period).copied().unwrap_or_default())
    }
    async fn usage_history(
        &self,
        _: &UserId,
        oldest: PeriodKey,
        newest: PeriodKey,
    ) -> StoreResult<Vec<PeriodTotals>> {
        Ok(self
            .totals
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

struct Counter(Result<u64, String>);

impl RequestCounter for Counter {
    async fn peek(
        &self,
        _: &UserId,
        period: PeriodKey,
        limit: u64,
    ) -> Result<GateDecision, String> {
        self.0.clone().map(|used| GateDecision {
            granted: true,
            period_key: period,
            used,
            limit,
            remaining: limit.saturating_sub(used),
            resets_at_ms: period.end_ms(),
        })
    }
}

fn user() -> User {
    User {
        id: UserId::from_trusted("usr_1".into()),
        tier: Tier::Free,
        created_at: 0,
        overrides: Overrides::default(),
    }
}

fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn current_usage_says_what_remains_and_what_is_exhausted() {
    let mut store = Fake::default();
    store.totals.insert(
        period("2026-11"),
        UsageTotals::new(3, 3, 150_000, 50_000, 10, 0),
    );
    let tiers = TierOverrides::parse(Some(r#"{"free":{"requestsPerPeriod":5}}"#)).unwrap();
    let now = block_on(current(&store, &Counter(Ok(2)), &tiers, &user(), NOW)).unwrap();
    assert_eq!(now.period_key, "2026-11");
    assert_eq!(now.resets_at, "2026-12-01T00:00:00Z");
    assert_eq!(now.requests_reserved, 2);
    assert_eq!(now.remaining.requests, 3);
    assert_eq!(now.remaining.tokens, 0);
    assert_eq!(now.exhausted, vec!["tokensPerPeriod"]);
    let down = block_on(current(
        &store,
        &Counter(Err("gone".into())),
        &tiers,
        &user(),
        NOW,
    ))
    .unwrap_err();
    assert_eq!(down.code, ErrorCode::DependencyUnavailable);
}

#[test]
fn history_fills_the_gaps_newest_first_and_knows_what_is_final() {
    let mut store = Fake::default();
    store
        .totals
        .insert(period("2026-09"), UsageTotals::new(1, 1, 1, 1, 1, 0));
    store
        .totals
        .insert(period("2026-10"), UsageTotals::new(2, 2, 2, 2, 2, 0));
    store.finalized.push(period("2026-09"));
    let list = block_on(history(&store, &user(), &query(&[("periods", "4")]), NOW)).unwrap();
    let keys: Vec<_> = list.iter().map(|p| p.period_key.as_str()).collect();
    assert_eq!(keys, ["2026-11", "2026-10", "2026-09", "2026-08"]);
    assert_eq!(list[1].totals.events, 2);
    // 2026-10 has usage the job has not finalized yet; 2026-08 had none and has ended.
    assert_eq!(
        list.iter().map(|p| p.finalized).collect::<Vec<_>>(),
        [false, false, true, true]
    );
    for bad in ["0", "25", "x", "-1"] {
        let err = block_on(history(&store, &user(), &query(&[("periods", bad)]), NOW)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidQuery, "{bad}");
    }
}

#[test]
fn recent_events_only_for_the_callers_own_agent() {
    let mut store = Fake::default();
    let mine = AgentId::generate();
    store.agents.push(mine.clone());
    let events = block_on(recent(
        &store,
        &user(),
        &query(&[("agentId", mine.as_str()), ("limit", "2")]),
    ))
    .unwrap();
    assert_eq!(events.len(), 2);
    let foreign = AgentId::generate();
    for q in [
        vec![("agentId", foreign.as_str())],
        vec![("agentId", "junk")],
    ] {
        let err = block_on(recent(&store, &user(), &query(&q))).unwrap_err();
        assert_eq!(err.code, ErrorCode::AgentNotFound);
    }
    let err = block_on(recent(&store, &user(), &query(&[]))).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidQuery);
    let err = block_on(recent(
        &store,
        &user(),
        &query(&[("agentId", mine.as_str()), ("limit", "201")]),
    ))
    .unwrap_err();
    assert_eq!(err.details.unwrap()["parameter"], "limit");
}

#[test]
fn the_rollup_recomputes_open_periods_and_prunes_within_its_budget() {
    let store = Fake {
        open: vec![period("2026-10")],
        prunable: vec![period("2026-01"), period("2026-02")],
        ..Fake::default()
    };
    store
        .raw_left
        .borrow_mut()
        .insert(period("2026-01"), 25_500);
    store.raw_left.borrow_mut().insert(period("2026-02"), 10);
    let run = block_on(run_rollups(&store, 90, NOW)).unwrap();
    // The current period is always recomputed; an ended one is finalized.
    assert_eq!(
        store.recomputed.borrow().as_slice(),
        &[(period("2026-10"), true), (period("2026-11"), false)]
    );
    // 20 chunks of 1 000 at most per run: the rest waits for the next tick.
    assert_eq!(
        run.pruned_events,
        u64::from(PRUNE_CHUNK * PRUNE_CHUNKS_PER_RUN)
    );
    assert_eq!(store.raw_left.borrow()[&period("2026-01")], 5_500);
    assert_eq!(store.raw_left.borrow()[&period("2026-02")], 10);
}

#[test]
fn an_operator_recompute_is_refused_for_the_future_and_for_pruned_periods() {
    let mut store = Fake::default();
    store.pruned.insert(period("2026-01"), true);
    let err = block_on(recompute(&store, period("2026-12"), NOW)).unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationFailed);
    let err = block_on(recompute(&store, period("2026-01"), NOW)).unwrap_err();
    assert_eq!(err.code, ErrorCode::UsagePeriodPruned);
    assert!(
        store.recomputed.borrow().is_empty(),
        "refusals change nothing"
    );
    let done = block_on(recompute(&store, period("2026-10"), NOW)).unwrap();
    assert!(done.finalized);
}
