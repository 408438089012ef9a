use super::*;
use crate::app::memory::MemoryUsage;
use crate::domain::entitlements::{Overrides, Tier};
use pollster::block_on;

const NOW: i64 = 1_795_000_000_000; // within 2026-11

fn period(s: &str) -> PeriodKey {
    PeriodKey::parse(s).unwrap()
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
    let store = MemoryUsage::default();
    store.totals.borrow_mut().insert(
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
    let mut store = MemoryUsage::default();
    store
        .totals
        .borrow_mut()
        .insert(period("2026-09"), UsageTotals::new(1, 1, 1, 1, 1, 0));
    store
        .totals
        .borrow_mut()
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
    let mut store = MemoryUsage::default();
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
    let store = MemoryUsage {
        open: vec![period("2026-10")],
        prunable: vec![period("2026-01"), period("2026-02")],
        ..MemoryUsage::default()
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
    let mut store = MemoryUsage::default();
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
