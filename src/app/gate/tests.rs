//! The gate end to end over in-memory storage and an in-memory D1: what is read when, and what each
//! notification makes visible on the very next call.

use super::facts::{GateFacts, FACTS_TTL_MS};
use super::protocol::*;
use super::serve::{FactsSource, GateAnswer, GateMemory, GateStorage};
use crate::app::ports::StoreResult;
use crate::domain::entitlements::{Overrides, Tier, TierOverrides};
use crate::domain::period::PeriodKey;
use crate::domain::reservation::PeriodCount;
use crate::domain::session::SessionRecord;
use crate::domain::usage::UsageTotals;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

#[derive(Default)]
struct Storage {
    count: RefCell<Option<PeriodCount>>,
    sessions: RefCell<HashMap<String, SessionRecord>>,
}

impl GateStorage for Storage {
    async fn count(&self) -> StoreResult<Option<PeriodCount>> {
        Ok(*self.count.borrow())
    }
    async fn session(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        Ok(self.sessions.borrow().get(key).cloned())
    }
    async fn save(
        &self,
        count: PeriodCount,
        session: Option<(&str, &SessionRecord)>,
    ) -> StoreResult<()> {
        *self.count.borrow_mut() = Some(count);
        if let Some((k, r)) = session {
            self.sessions.borrow_mut().insert(k.into(), r.clone());
        }
        Ok(())
    }
}

/// D1 as the gate sees it, counting reads.
struct Records {
    user: RefCell<Option<UserFacts>>,
    agents: RefCell<HashMap<String, AgentRoute>>,
    keys: RefCell<HashMap<String, KeyFacts>>,
    usage: RefCell<UsageTotals>,
    reads: Cell<u32>,
}

impl FactsSource for Records {
    async fn load(&self, _user: &str, request: &AdmitRequest) -> StoreResult<LoadedFacts> {
        self.reads.set(self.reads.get() + 1);
        Ok(LoadedFacts {
            user: self.user.borrow().clone(),
            agent: self.agents.borrow().get(&request.agent_id).cloned(),
            key: request
                .key_id
                .as_ref()
                .and_then(|k| self.keys.borrow().get(k).cloned()),
            usage: *self.usage.borrow(),
        })
    }
}

const NOW: i64 = 1_795_000_000_000; // 2026-11
fn period() -> PeriodKey {
    PeriodKey::containing(NOW)
}

fn target(deployment: &str) -> DeploymentTarget {
    DeploymentTarget {
        deployment_id: deployment.into(),
        deploy_target: "workers_dev".into(),
        script_name: format!("wh-dep-{deployment}"),
        invoke_path: "/invoke".into(),
        provider_ref: format!("http://x/{deployment}"),
        runtime_provider: "cloudflare".into(),
        gateway_secret_sealed: None,
    }
}

fn records() -> Records {
    let mut agents = HashMap::new();
    agents.insert(
        "agt_1".to_string(),
        AgentRoute {
            agent_id: "agt_1".into(),
            enabled: true,
            deployment: Some(target("dep_a")),
        },
    );
    let mut keys = HashMap::new();
    keys.insert(
        "key_1".to_string(),
        KeyFacts {
            key_id: "key_1".into(),
            revoked: false,
        },
    );
    Records {
        user: RefCell::new(Some(UserFacts {
            tier: Tier::Free,
            overrides: Overrides::default(),
        })),
        agents: RefCell::new(agents),
        keys: RefCell::new(keys),
        usage: RefCell::new(UsageTotals::default()),
        reads: Cell::new(0),
    }
}

struct Rig {
    memory: GateMemory,
    storage: Storage,
    d1: Records,
    tiers: TierOverrides,
}

impl Rig {
    fn new() -> Self {
        Rig {
            memory: GateMemory::default(),
            storage: Storage::default(),
            d1: records(),
            tiers: TierOverrides::default(),
        }
    }

    fn call(&self, call: GateCall, now: i64) -> GateAnswer {
        pollster::block_on(self.memory.serve(
            "usr_1",
            call,
            &self.storage,
            &self.d1,
            &self.tiers,
            now,
        ))
        .unwrap()
    }

    fn admit_with(&self, request: AdmitRequest, now: i64) -> Admission {
        match self.call(GateCall::Admit(request), now) {
            GateAnswer::Admission(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn admit(&self) -> Admission {
        self.admit_with(request(None), NOW)
    }

    fn forget(&self, what: Forget) {
        assert_eq!(self.call(GateCall::Forget(what), NOW), GateAnswer::Done);
    }
}

fn request(key: Option<&str>) -> AdmitRequest {
    AdmitRequest {
        agent_id: "agt_1".into(),
        key_id: key.map(Into::into),
        streaming: false,
        period_key: period(),
        session_id: None,
    }
}

fn granted(a: &Admission) -> &Granted {
    match &a.verdict {
        Verdict::Granted(g) => g,
        Verdict::Refused(r) => panic!("refused: {r:?}"),
    }
}

fn refusal(a: &Admission) -> &Refusal {
    match &a.verdict {
        Verdict::Refused(r) => r,
        Verdict::Granted(_) => panic!("granted"),
    }
}

#[test]
fn d1_is_read_once_then_every_call_is_answered_from_memory() {
    let rig = Rig::new();
    let first = rig.admit();
    assert!(first.loaded);
    assert_eq!(
        granted(&first)
            .route
            .deployment
            .as_ref()
            .unwrap()
            .deployment_id,
        "dep_a"
    );
    for _ in 0..20 {
        let next = rig.admit();
        assert!(!next.loaded);
        granted(&next);
    }
    assert_eq!(rig.d1.reads.get(), 1);
    assert_eq!(rig.storage.count.borrow().unwrap().used, 21);
}

#[test]
fn exactly_the_limit_is_granted() {
    let mut rig = Rig::new();
    rig.tiers = TierOverrides::parse(Some(r#"{"free":{"requestsPerPeriod":3}}"#)).unwrap();
    let outcomes: Vec<bool> = (0..10)
        .map(|_| matches!(rig.admit().verdict, Verdict::Granted(_)))
        .collect();
    assert_eq!(outcomes.iter().filter(|g| **g).count(), 3);
    match refusal(&rig.admit()) {
        Refusal::LimitExceeded { decision } => {
            assert_eq!((decision.limit, decision.remaining), (3, 0))
        }
        other => panic!("{other:?}"),
    }
    // A request given back is available again, once.
    rig.call(
        GateCall::Release {
            period_key: period(),
        },
        NOW,
    );
    granted(&rig.admit());
    refusal(&rig.admit());
}

#[test]
fn a_rollback_is_visible_on_the_next_call_once_the_gate_is_told() {
    let rig = Rig::new();
    granted(&rig.admit());
    rig.d1
        .agents
        .borrow_mut()
        .get_mut("agt_1")
        .unwrap()
        .deployment = Some(target("dep_b"));
    // Not told: the copy stands (this is what `Forget` exists for).
    let stale = rig.admit();
    assert_eq!(stale.deployment_id.as_deref(), Some("dep_a"));
    rig.forget(Forget::Agent("agt_1".into()));
    let next = rig.admit();
    assert!(next.loaded);
    assert_eq!(next.deployment_id.as_deref(), Some("dep_b"));
    assert_eq!(
        granted(&next)
            .route
            .deployment
            .as_ref()
            .unwrap()
            .script_name,
        "wh-dep-dep_b"
    );
}

#[test]
fn a_disabled_or_deleted_agent_is_refused_on_the_next_call() {
    let rig = Rig::new();
    granted(&rig.admit());
    rig.d1.agents.borrow_mut().get_mut("agt_1").unwrap().enabled = false;
    rig.forget(Forget::Agent("agt_1".into()));
    assert_eq!(refusal(&rig.admit()), &Refusal::AgentDisabled);
    rig.d1.agents.borrow_mut().clear();
    rig.forget(Forget::Agent("agt_1".into()));
    assert_eq!(refusal(&rig.admit()), &Refusal::AgentNotFound);
    // Refusals reserve nothing.
    assert_eq!(rig.storage.count.borrow().unwrap().used, 1);
}

#[test]
fn a_tier_change_applies_to_the_next_call() {
    let mut rig = Rig::new();
    rig.tiers = TierOverrides::parse(Some(r#"{"free":{"requestsPerPeriod":1}}"#)).unwrap();
    granted(&rig.admit());
    refusal(&rig.admit());
    *rig.d1.user.borrow_mut() = Some(UserFacts {
        tier: Tier::Pro,
        overrides: Overrides::default(),
    });
    rig.forget(Forget::User);
    assert_eq!(granted(&rig.admit()).decision.limit, 100_000);
}

#[test]
fn a_revoked_key_is_refused_on_the_next_call_and_unknown_keys_never_pass() {
    let rig = Rig::new();
    granted(&rig.admit_with(request(Some("key_1")), NOW));
    assert_eq!(
        refusal(&rig.admit_with(request(Some("key_other")), NOW)),
        &Refusal::InvalidApiKey
    );
    rig.d1.keys.borrow_mut().get_mut("key_1").unwrap().revoked = true;
    rig.forget(Forget::Key("key_1".into()));
    assert_eq!(
        refusal(&rig.admit_with(request(Some("key_1")), NOW)),
        &Refusal::InvalidApiKey
    );
    // The user's own token still works.
    granted(&rig.admit());
}

#[test]
fn charged_telemetry_spends_the_quota_without_a_d1_read() {
    let mut rig = Rig::new();
    rig.tiers = TierOverrides::parse(Some(r#"{"free":{"tokensPerPeriod":10}}"#)).unwrap();
    granted(&rig.admit());
    let reads = rig.d1.reads.get();
    let spent = UsageTotals::new(1, 1, 6, 4, 5, 0);
    rig.call(
        GateCall::Charge {
            period_key: period(),
            totals: spent,
        },
        NOW,
    );
    // An older report's totals arriving late do not move them back.
    rig.call(
        GateCall::Charge {
            period_key: period(),
            totals: UsageTotals::new(1, 1, 1, 1, 1, 0),
        },
        NOW,
    );
    // A charge bumps the generation but keeps the copy: no D1 read follows.
    match refusal(&rig.admit()) {
        Refusal::QuotaExhausted { usage, .. } => assert_eq!(usage.tokens, 10),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.d1.reads.get(), reads);
}

#[test]
fn stale_copies_and_a_new_period_are_read_again() {
    let rig = Rig::new();
    granted(&rig.admit());
    granted(&rig.admit_with(request(None), NOW + FACTS_TTL_MS - 1));
    assert_eq!(rig.d1.reads.get(), 1);
    granted(&rig.admit_with(request(None), NOW + FACTS_TTL_MS));
    assert_eq!(rig.d1.reads.get(), 2);
    let mut next_month = request(None);
    next_month.period_key = period().next();
    let a = rig.admit_with(next_month, NOW + FACTS_TTL_MS + 1);
    assert!(a.loaded);
    assert_eq!(granted(&a).decision.used, 1);
}

#[test]
fn sessions_continue_per_agent_and_start_fresh_elsewhere() {
    let rig = Rig::new();
    let first = granted(&rig.admit()).clone();
    let mut again = request(None);
    again.session_id = Some(first.session_id.clone());
    let second = granted(&rig.admit_with(again.clone(), NOW + 1)).clone();
    assert_eq!(second.runtime_session_id, first.runtime_session_id);
    assert_eq!(second.session_id, first.session_id);
    // The same client id for another agent maps to another runtime session.
    rig.d1.agents.borrow_mut().insert(
        "agt_2".into(),
        AgentRoute {
            agent_id: "agt_2".into(),
            enabled: true,
            deployment: Some(target("dep_c")),
        },
    );
    again.agent_id = "agt_2".into();
    let other = granted(&rig.admit_with(again, NOW + 2)).clone();
    assert_ne!(other.runtime_session_id, first.runtime_session_id);
}

#[test]
fn a_session_is_created_only_for_an_admitted_call() {
    let mut rig = Rig::new();
    rig.tiers = TierOverrides::parse(Some(r#"{"free":{"requestsPerPeriod":1}}"#)).unwrap();
    granted(&rig.admit());
    assert_eq!(rig.storage.sessions.borrow().len(), 1);
    // Over the limit, and then for a disabled agent: refused, and no session is stored for either.
    let mut asking = request(None);
    asking.session_id = Some("ses_new_for_a_refused_call".into());
    refusal(&rig.admit_with(asking.clone(), NOW + 1));
    rig.d1.agents.borrow_mut().get_mut("agt_1").unwrap().enabled = false;
    rig.forget(Forget::Agent("agt_1".into()));
    assert_eq!(
        refusal(&rig.admit_with(asking, NOW + 2)),
        &Refusal::AgentDisabled
    );
    assert_eq!(rig.storage.sessions.borrow().len(), 1);
}

#[test]
fn a_read_that_raced_a_notification_is_not_installed() {
    let mut facts = GateFacts::default();
    let generation = facts.generation();
    facts.forget(&Forget::Agent("agt_1".into()));
    let mut loaded = pollster::block_on(records().load("usr_1", &request(None))).unwrap();
    assert!(!facts.install(&request(None), &mut loaded, generation, NOW));
    assert!(facts.view(&request(None), NOW).is_none());
    assert!(facts.install(&request(None), &mut loaded, facts.generation(), NOW));
    assert!(facts.view(&request(None), NOW).is_some());
}

#[test]
fn refusals_keep_their_order() {
    let rig = Rig::new();
    // A revoked key is refused before anything about the agent is told.
    rig.d1.agents.borrow_mut().clear();
    assert_eq!(
        refusal(&rig.admit_with(request(Some("nope")), NOW)),
        &Refusal::InvalidApiKey
    );
    assert_eq!(refusal(&rig.admit()), &Refusal::AgentNotFound);
    rig.d1.agents.borrow_mut().insert(
        "agt_1".into(),
        AgentRoute {
            agent_id: "agt_1".into(),
            enabled: true,
            deployment: None,
        },
    );
    assert_eq!(refusal(&rig.admit()), &Refusal::NoActiveDeployment);
    let mut no_runtime = target("dep_x");
    no_runtime.runtime_provider = "agentcore".into();
    rig.d1
        .agents
        .borrow_mut()
        .get_mut("agt_1")
        .unwrap()
        .deployment = Some(no_runtime);
    rig.forget(Forget::All);
    assert_eq!(
        refusal(&rig.admit()),
        &Refusal::RuntimeNotEntitled {
            provider: "agentcore".into()
        }
    );
}

#[test]
fn the_wire_form_is_camel_case_throughout() {
    let call: GateCall = serde_json::from_str(r#"{"op":"release","periodKey":"2026-11"}"#).unwrap();
    assert_eq!(
        call,
        GateCall::Release {
            period_key: PeriodKey::parse("2026-11").unwrap()
        }
    );
    let forget: GateCall =
        serde_json::from_str(r#"{"op":"forget","what":"agent","id":"agt_1"}"#).unwrap();
    assert_eq!(forget, GateCall::Forget(Forget::Agent("agt_1".into())));
    assert!(
        serde_json::from_str::<GateCall>(r#"{"op":"release","period_key":"2026-11"}"#).is_err()
    );
    let refusal = serde_json::to_value(Refusal::RuntimeNotEntitled {
        provider: "x".into(),
    })
    .unwrap();
    assert_eq!(
        refusal,
        serde_json::json!({"reason": "runtimeNotEntitled", "provider": "x"})
    );
}

#[test]
fn a_fresh_read_that_finds_the_agent_gone_is_never_overruled_by_the_old_copy() {
    let rig = Rig::new();
    granted(&rig.admit());
    // Deleted, and the notification lost; then something else makes the gate read D1 (a key not yet known).
    rig.d1.agents.borrow_mut().clear();
    assert_eq!(
        refusal(&rig.admit_with(request(Some("key_1")), NOW)),
        &Refusal::AgentNotFound
    );
    assert_eq!(refusal(&rig.admit()), &Refusal::AgentNotFound);
    // Likewise a key D1 no longer has.
    rig.d1.agents.borrow_mut().insert(
        "agt_1".into(),
        AgentRoute {
            agent_id: "agt_1".into(),
            enabled: true,
            deployment: Some(target("dep_a")),
        },
    );
    rig.forget(Forget::Agent("agt_1".into()));
    granted(&rig.admit_with(request(Some("key_1")), NOW));
    rig.d1.keys.borrow_mut().clear();
    rig.forget(Forget::User);
    assert_eq!(
        refusal(&rig.admit_with(request(Some("key_1")), NOW)),
        &Refusal::InvalidApiKey
    );
}

#[test]
fn a_hold_makes_every_call_read_the_route_until_the_change_is_done() {
    let rig = Rig::new();
    granted(&rig.admit());
    let reads = rig.d1.reads.get();
    rig.call(
        GateCall::Hold {
            agent_id: "agt_1".into(),
        },
        NOW,
    );
    // The deploy commits in D1 while the hold stands: the very next call sees it, with no notification yet.
    rig.d1
        .agents
        .borrow_mut()
        .get_mut("agt_1")
        .unwrap()
        .deployment = Some(target("dep_b"));
    assert_eq!(rig.admit().deployment_id.as_deref(), Some("dep_b"));
    assert_eq!(rig.admit().deployment_id.as_deref(), Some("dep_b"));
    assert_eq!(
        rig.d1.reads.get(),
        reads + 2,
        "nothing remembered while held"
    );
    // Done: answered from memory again.
    rig.forget(Forget::Agent("agt_1".into()));
    rig.admit();
    assert!(!rig.admit().loaded);
    // A hold whose end was never announced lapses.
    rig.call(
        GateCall::Hold {
            agent_id: "agt_1".into(),
        },
        NOW,
    );
    let later = NOW + super::facts::MAX_HOLD_MS;
    assert!(rig.admit_with(request(None), later).loaded);
    assert!(!rig.admit_with(request(None), later + 1).loaded);
}

#[test]
fn charges_never_invalidate_a_read_and_a_read_never_lowers_a_charge() {
    let mut facts = GateFacts::default();
    let generation = facts.generation();
    facts.charge(period(), UsageTotals::new(1, 1, 50, 0, 0, 0));
    // A D1 read that started before the charge (it says 10 tokens) still installs, merged with the charge.
    let mut loaded = pollster::block_on(records().load("usr_1", &request(None))).unwrap();
    loaded.usage = UsageTotals::new(1, 1, 10, 0, 0, 0);
    assert!(facts.install(&request(None), &mut loaded, generation, NOW));
    assert_eq!(facts.view(&request(None), NOW).unwrap().usage.tokens, 50);
    // An older period's charge changes nothing.
    facts.charge(period().previous(), UsageTotals::new(9, 9, 999, 0, 0, 0));
    assert_eq!(facts.view(&request(None), NOW).unwrap().usage.tokens, 50);
}

/// A D1 that, while the gate reads it, has a write land and the gate told of it: what a deploy going live does
/// to a call already in flight.
struct RacingD1<'a> {
    d1: &'a Records,
    memory: &'a GateMemory,
    storage: &'a Storage,
    races_left: Cell<u32>,
}

impl FactsSource for RacingD1<'_> {
    async fn load(&self, user: &str, request: &AdmitRequest) -> StoreResult<LoadedFacts> {
        let before = self.d1.load(user, request).await?;
        if self.races_left.get() > 0 {
            self.races_left.set(self.races_left.get() - 1);
            self.d1
                .agents
                .borrow_mut()
                .get_mut("agt_1")
                .unwrap()
                .deployment = Some(target(&format!("dep_race{}", self.races_left.get())));
            let forget = GateCall::Forget(Forget::Agent("agt_1".into()));
            let tiers = TierOverrides::default();
            self.memory
                .serve(user, forget, self.storage, self.d1, &tiers, NOW)
                .await?;
        }
        Ok(before)
    }
}

#[test]
fn a_read_overtaken_by_a_change_is_read_again_and_never_remembered() {
    let (memory, storage, d1) = (GateMemory::default(), Storage::default(), records());
    let admit = |races: u32| {
        let racing = RacingD1 {
            d1: &d1,
            memory: &memory,
            storage: &storage,
            races_left: Cell::new(races),
        };
        let call = GateCall::Admit(request(None));
        match pollster::block_on(memory.serve(
            "usr_1",
            call,
            &storage,
            &racing,
            &TierOverrides::default(),
            NOW,
        )) {
            Ok(GateAnswer::Admission(a)) => a,
            other => panic!("{other:?}"),
        }
    };
    // One change lands during the first read: the second read sees it, and that is what is remembered.
    let first = admit(1);
    assert_eq!(first.deployment_id.as_deref(), Some("dep_race0"));
    assert_eq!(d1.reads.get(), 2);
    assert_eq!(admit(0).deployment_id.as_deref(), Some("dep_race0"));
    assert_eq!(d1.reads.get(), 2, "remembered");
    // Changes keep landing: after three reads the last one decides the call, and nothing stale is kept.
    let forget_all = GateCall::Forget(Forget::All);
    pollster::block_on(memory.serve(
        "usr_1",
        forget_all,
        &storage,
        &d1,
        &TierOverrides::default(),
        NOW,
    ))
    .unwrap();
    let reads = d1.reads.get();
    let storm = admit(5);
    assert_eq!(d1.reads.get(), reads + 3);
    assert_eq!(
        storm.deployment_id.as_deref(),
        Some("dep_race3"),
        "decided on the newest read it made"
    );
    let after = admit(0);
    assert!(after.loaded, "a read that lost its race is not remembered");
    assert_eq!(after.deployment_id.as_deref(), Some("dep_race2"));
}
