use super::*;
use crate::app::memory::{MemoryUsage, RecordingGate};
use crate::domain::telemetry::RejectThrottle;
use crate::domain::usage::UsageTotals;
use pollster::block_on;
use std::cell::{Cell, RefCell};

const NOW: i64 = 1_795_000_000_000;

/// (action, target, status, outcome, change) of one audit row.
type Audited = (String, Option<String>, u16, String, Option<String>);

#[derive(Default)]
struct Fake {
    user: RefCell<Option<User>>,
    audits: RefCell<Vec<Audited>>,
    suppressed: RefCell<Vec<u64>>,
    /// Overrides changed by someone else this many times before each compare-and-set.
    interfering: Cell<u32>,
}

impl AdminStore for Fake {
    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        Ok(self.user.borrow().clone().filter(|u| &u.id == id))
    }
    async fn set_tier(&self, id: &UserId, tier: Tier) -> StoreResult<bool> {
        let mut user = self.user.borrow_mut();
        match user.as_mut().filter(|u| &u.id == id) {
            Some(u) => {
                u.tier = tier;
                Ok(true)
            }
            None => Ok(false),
        }
    }
    async fn replace_overrides(
        &self,
        _: &UserId,
        expected: &Overrides,
        next: &Overrides,
    ) -> StoreResult<bool> {
        if self.interfering.get() > 0 {
            self.interfering.set(self.interfering.get() - 1);
            return Ok(false);
        }
        let mut user = self.user.borrow_mut();
        let u = user.as_mut().unwrap();
        if &u.overrides != expected {
            return Ok(false);
        }
        u.overrides = next.clone();
        Ok(true)
    }
    async fn usage_by_outcome(&self, _: &UserId, _: PeriodKey) -> StoreResult<Vec<OutcomeCount>> {
        Ok(vec![
            OutcomeCount {
                outcome: "ok".into(),
                calls: 3,
                counted: 3,
                wall_ms: 30,
            },
            OutcomeCount {
                outcome: "request_limit_exceeded".into(),
                calls: 2,
                counted: 0,
                wall_ms: 2,
            },
        ])
    }
    async fn audit(&self, e: &AuditEntry<'_>) -> StoreResult<()> {
        self.audits.borrow_mut().push((
            e.action.to_string(),
            e.target_user_id.clone(),
            e.status,
            e.outcome.to_string(),
            e.change_json.clone(),
        ));
        self.suppressed.borrow_mut().push(e.suppressed);
        Ok(())
    }
}

/// The user's stored totals for every period: 100 input and 50 output tokens, 10 compute ms.
fn usage() -> MemoryUsage {
    let usage = MemoryUsage::default();
    usage.totals.borrow_mut().insert(
        PeriodKey::containing(NOW),
        UsageTotals::new(2, 2, 100, 50, 10, 0),
    );
    usage
}

/// No sealed values (operator calls other than `Reseal`).
struct NoSealed;

impl crate::app::key_rotation::SealedStore for NoSealed {
    async fn sealed_under(
        &self,
        _: &[String],
        _: u32,
    ) -> StoreResult<Vec<crate::app::key_rotation::SealedValue>> {
        Ok(Vec::new())
    }
    async fn sealed_not_under(
        &self,
        _: &[String],
        _: u32,
    ) -> StoreResult<Vec<crate::app::key_rotation::SealedValue>> {
        Ok(Vec::new())
    }
    async fn replace_sealed(
        &self,
        _: &crate::app::key_rotation::SealedValue,
        _: &str,
    ) -> StoreResult<bool> {
        Ok(false)
    }
    async fn count_sealed_elsewhere(&self, _: &str) -> StoreResult<u64> {
        Ok(0)
    }
}

/// Runs `c` with the default tiers and the usage above.
fn run_call(store: &Fake, gate: &RecordingGate, c: &AdminCall) -> Result<Value, ApiError> {
    let no_secrets: Sealing<'_, NoSealed> = Sealing {
        store: &NoSealed,
        keys: None,
    };
    block_on(run(
        store,
        &usage(),
        gate,
        no_secrets,
        &TierOverrides::default(),
        c,
        NOW,
    ))
}

fn store_with_user() -> (Fake, UserId) {
    let id = UserId::generate();
    let store = Fake::default();
    *store.user.borrow_mut() = Some(User {
        id: id.clone(),
        tier: Tier::Free,
        created_at: 0,
        overrides: Overrides::default(),
    });
    (store, id)
}

#[test]
fn the_token_is_required_configured_and_exact() {
    let token = "x".repeat(40);
    assert_eq!(
        check_token(None, Some("Bearer x")).unwrap_err().code,
        ErrorCode::AdminNotConfigured
    );
    assert_eq!(
        check_token(Some(&token), None).unwrap_err().code,
        ErrorCode::MissingCredentials
    );
    let almost = format!("Bearer {}y", &token[..39]);
    assert_eq!(
        check_token(Some(&token), Some(&almost)).unwrap_err().code,
        ErrorCode::InvalidAdminToken
    );
    check_token(Some(&token), Some(&format!("Bearer {token}"))).unwrap();
}

#[test]
fn a_tier_change_tells_the_gate_and_answers_the_new_entitlements() {
    let ((store, id), gate) = (store_with_user(), RecordingGate::default());
    let call = AdminCall::SetTier {
        user: id.as_str().into(),
        body: json!({"tier": "pro"}),
    };
    let view = run_call(&store, &gate, &call).unwrap();
    assert_eq!(view["tier"], "pro");
    assert_eq!(view["entitlements"]["requestsPerPeriod"], 100_000);
    assert_eq!(gate.told.borrow().as_slice(), &[(id.clone(), Forget::User)]);
    // Bad input changes nothing and tells nothing.
    for body in [
        json!({"tier": "gold"}),
        json!({"tier": "pro", "extra": 1}),
        json!("pro"),
    ] {
        let call = AdminCall::SetTier {
            user: id.as_str().into(),
            body,
        };
        let err = run_call(&store, &gate, &call).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed);
    }
    assert_eq!(gate.told.borrow().len(), 1);
    let unknown = AdminCall::SetTier {
        user: UserId::generate().as_str().into(),
        body: json!({"tier": "pro"}),
    };
    assert_eq!(
        run_call(&store, &gate, &unknown).unwrap_err().code,
        ErrorCode::UserNotFound
    );
}

#[test]
fn overrides_are_compare_and_set_and_give_up_after_three_lost_races() {
    let ((store, id), gate) = (store_with_user(), RecordingGate::default());
    let call = AdminCall::SetEntitlements {
        user: id.as_str().into(),
        body: json!({"requestsPerPeriod": 5}),
    };
    store.interfering.set(2);
    let view = run_call(&store, &gate, &call).unwrap();
    assert_eq!(view["entitlements"]["requestsPerPeriod"], 5);
    store.interfering.set(3);
    let err = run_call(&store, &gate, &call).unwrap_err();
    assert_eq!(err.code, ErrorCode::DependencyUnavailable);
    assert_eq!(
        gate.told.borrow().len(),
        1,
        "only the change that was made is told"
    );
}

#[test]
fn usage_adds_up_the_metered_outcomes_and_what_remains() {
    let ((store, id), gate) = (store_with_user(), RecordingGate::default());
    let call = AdminCall::Usage {
        user: id.as_str().into(),
        period: None,
    };
    let body = run_call(&store, &gate, &call).unwrap();
    assert_eq!(body["periodKey"], "2026-11");
    assert_eq!(body["invocations"]["total"], 5);
    assert_eq!(body["invocations"]["counted"], 3);
    assert_eq!(
        body["invocations"]["byOutcome"]["request_limit_exceeded"],
        2
    );
    assert_eq!(body["remaining"]["requests"], 1_000 - 3);
    assert_eq!(body["remaining"]["tokens"], 200_000 - 150);
    let bad = AdminCall::Usage {
        user: id.as_str().into(),
        period: Some("2026-13".into()),
    };
    assert_eq!(
        run_call(&store, &gate, &bad).unwrap_err().code,
        ErrorCode::InvalidQuery
    );
}

#[test]
fn every_call_is_audited_with_a_well_formed_target_only() {
    let (store, id) = store_with_user();
    let call = AdminCall::SetTier {
        user: id.as_str().into(),
        body: json!({"tier": "pro"}),
    };
    let throttle = std::cell::RefCell::new(RejectThrottle::default());
    block_on(audit(
        &store,
        &throttle,
        "req_1",
        NOW,
        call.action(),
        Some(id.as_str()),
        Some(&call),
        &Ok(json!({})),
    ))
    .unwrap();
    let refused: Result<Value, ApiError> = Err(ApiError::new(ErrorCode::InvalidAdminToken, "no"));
    block_on(audit(
        &store,
        &throttle,
        "req_2",
        NOW,
        "set_tier",
        Some("'; DROP TABLE users; --"),
        None,
        &refused,
    ))
    .unwrap();
    let audits = store.audits.borrow();
    assert_eq!(
        audits[0],
        (
            "set_tier".into(),
            Some(id.as_str().into()),
            200,
            "ok".into(),
            Some(r#"{"tier":"pro"}"#.into())
        )
    );
    assert_eq!(
        audits[1],
        (
            "set_tier".into(),
            None,
            401,
            "invalid_admin_token".into(),
            None
        )
    );
}

#[test]
fn refresh_tells_the_gate_to_forget_everything_for_a_known_user() {
    let ((store, id), gate) = (store_with_user(), RecordingGate::default());
    let call = AdminCall::RefreshGate {
        user: id.as_str().into(),
    };
    run_call(&store, &gate, &call).unwrap();
    assert_eq!(gate.told.borrow().as_slice(), &[(id, Forget::All)]);
    let unknown = AdminCall::RefreshGate {
        user: "usr_nobody".into(),
    };
    assert_eq!(
        run_call(&store, &gate, &unknown).unwrap_err().code,
        ErrorCode::UserNotFound
    );
    let recompute = AdminCall::Recompute {
        body: json!({"period": "2026-10"}),
    };
    let usage = usage();
    let no_secrets: Sealing<'_, NoSealed> = Sealing {
        store: &NoSealed,
        keys: None,
    };
    block_on(run(
        &store,
        &usage,
        &gate,
        no_secrets,
        &TierOverrides::default(),
        &recompute,
        NOW,
    ))
    .unwrap();
    assert_eq!(usage.recomputed.borrow().len(), 1);
    // Re-sealing needs the keys, which come with the deploy configuration.
    assert_eq!(
        run_call(&store, &gate, &AdminCall::Reseal)
            .unwrap_err()
            .code,
        ErrorCode::DeploysNotConfigured
    );
}

#[test]
fn refused_credentials_are_audited_within_a_throttle_but_every_authorized_call_always() {
    let (store, id) = store_with_user();
    let throttle = std::cell::RefCell::new(RejectThrottle::default());
    let refused: Result<Value, ApiError> = Err(ApiError::new(ErrorCode::InvalidAdminToken, "no"));
    let rows = RejectThrottle::MAX_ROWS as usize;
    for i in 0..rows + 7 {
        block_on(audit(
            &store,
            &throttle,
            &format!("req_{i}"),
            NOW,
            "get_usage",
            None,
            None,
            &refused,
        ))
        .unwrap();
    }
    assert_eq!(
        store.audits.borrow().len(),
        rows,
        "a flood costs a bounded number of rows"
    );
    // An operator's own calls are never held back, in the same minute.
    let call = AdminCall::RefreshGate {
        user: id.as_str().into(),
    };
    let denied: Result<Value, ApiError> = Err(ApiError::new(ErrorCode::UserNotFound, "x"));
    for outcome in [Ok(json!({})), denied] {
        block_on(audit(
            &store,
            &throttle,
            "req_op",
            NOW,
            call.action(),
            Some(id.as_str()),
            Some(&call),
            &outcome,
        ))
        .unwrap();
    }
    assert_eq!(store.audits.borrow().len(), rows + 2);
    // The next minute's first refused row carries the seven left out.
    block_on(audit(
        &store,
        &throttle,
        "req_late",
        NOW + 60_000,
        "get_usage",
        None,
        None,
        &refused,
    ))
    .unwrap();
    assert_eq!(*store.suppressed.borrow().last().unwrap(), 7);
}
