//! Ingestion over an in-memory store that keeps the D1 semantics that matter: events deduplicated per
//! deployment, billing usage grown by exactly the new ones.

use super::*;
use crate::app::memory::MemoryUsage;
use crate::crypto::hmac_sha256;
use crate::domain::admission::admitted_trace_id;
use crate::domain::{ApiError, ErrorCode};
use pollster::block_on;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;

const NOW: i64 = 1_795_000_000_000;
const DEP: &str = "dep_0123456789abcdef01234567";

#[derive(Default)]
struct Fake {
    deployments: HashMap<String, ClaimedDeployment>,
    events: RefCell<HashMap<(String, String), TelemetryEvent>>,
    /// Billing usage, grown by `ingest` as the D1 batch grows it.
    usage: MemoryUsage,
    rejects: RefCell<Vec<(String, Option<String>, u64)>>,
    fail_rejects: bool,
}

impl TelemetryStore for Fake {
    async fn telemetry_deployment(
        &self,
        id: &DeploymentId,
    ) -> StoreResult<Option<ClaimedDeployment>> {
        Ok(self.deployments.get(id.as_str()).cloned())
    }
    async fn ingest(
        &self,
        _: &str,
        events: &[TelemetryEvent],
        period: PeriodKey,
        _: i64,
    ) -> StoreResult<u64> {
        let mut new = 0;
        for e in events {
            let key = (e.deployment_id.clone(), e.dedupe_key());
            if self.events.borrow().contains_key(&key) {
                continue;
            }
            self.events.borrow_mut().insert(key, e.clone());
            let mut totals = self.usage.totals.borrow_mut();
            let t = totals.entry(period).or_default();
            let c = &e.counters;
            *t = UsageTotals::new(
                t.events + 1,
                t.requests + c.requests,
                t.input_tokens + c.input_tokens,
                t.output_tokens + c.output_tokens,
                t.compute_ms + c.compute_ms,
                t.errors + c.errors,
            );
            new += 1;
        }
        Ok(new)
    }
    async fn record_reject(&self, entry: &RejectEntry<'_>) -> StoreResult<()> {
        if self.fail_rejects {
            return Err(crate::app::ports::StoreError("down".into()));
        }
        self.rejects.borrow_mut().push((
            entry.code.to_string(),
            entry.deployment_id.map(str::to_owned),
            entry.suppressed,
        ));
        Ok(())
    }
}

#[derive(Default)]
struct Charger {
    told: RefCell<Vec<UsageTotals>>,
    fail: bool,
}

impl UsageCharger for Charger {
    async fn charge(&self, _: &UserId, _: PeriodKey, totals: UsageTotals) -> Result<(), String> {
        if self.fail {
            return Err("gate down".into());
        }
        self.told.borrow_mut().push(totals);
        Ok(())
    }
}

struct Rig {
    store: Fake,
    key: Keyring,
    secret: Vec<u8>,
}

fn rig() -> Rig {
    let key = key();
    let secret = b"the deployment's telemetry secret".to_vec();
    let mut store = Fake::default();
    store.deployments.insert(
        DEP.into(),
        ClaimedDeployment {
            user_id: "usr_1".into(),
            agent_id: "agt_1".into(),
            runtime_provider: "cloudflare".into(),
            telemetry_secret_sealed: key.seal(&secret, DEP.as_bytes()),
        },
    );
    Rig { store, key, secret }
}

fn key() -> Keyring {
    crate::crypto::secret_box::EncryptionKey::parse(&format!("hex:{}", "11".repeat(32)))
        .unwrap()
        .into()
}

/// A trace id the gateway would have issued for a call to `deployment`.
fn admitted(deployment: &str) -> String {
    admitted_trace_id(&key().derive(TRACE_KEY_LABEL), deployment, NOW)
}

fn event(id: &str, tokens: u64) -> serde_json::Value {
    json!({"eventId": id, "traceId": admitted(DEP), "userId": "usr_1", "agentId": "agt_1",
           "deploymentId": DEP, "runtimeProvider": "cloudflare", "ts": NOW, "requests": 1,
           "inputTokens": tokens, "outputTokens": 0, "computeMs": 5, "errors": 0})
}

impl Rig {
    fn send(&self, charger: &Charger, body: &[u8], tag: [u8; 32]) -> Result<Accepted, ApiError> {
        let dep = DeploymentId::parse(DEP).unwrap();
        block_on(ingest(
            &self.store,
            &self.store.usage,
            charger,
            &self.key,
            SignedReport {
                deployment_id: &dep,
                tag: &tag,
                body,
            },
            NOW,
        ))
    }

    fn signed(&self, charger: &Charger, body: &serde_json::Value) -> Result<Accepted, ApiError> {
        let bytes = body.to_string().into_bytes();
        self.send(charger, &bytes, hmac_sha256(&self.secret, &bytes))
    }
}

fn tokens(store: &Fake) -> u64 {
    block_on(store.usage.usage_totals(
        &UserId::from_trusted("usr_1".into()),
        PeriodKey::containing(NOW),
    ))
    .unwrap()
    .tokens
}

#[test]
fn a_signed_report_is_stored_once_and_the_gate_is_handed_the_charged_totals() {
    let (rig, charger) = (rig(), Charger::default());
    let batch = json!({"events": [event("a", 3), event("b", 4)]});
    let first = rig.signed(&charger, &batch).unwrap();
    assert_eq!((first.accepted, first.duplicates), (2, 0));
    assert_eq!(charger.told.borrow().last().unwrap().tokens, 7);
    // A retry counts nothing twice, and hands the gate the same totals again.
    let again = rig.signed(&charger, &batch).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    assert_eq!(charger.told.borrow().len(), 2);
    assert_eq!(charger.told.borrow()[1].tokens, 7);
    assert_eq!(tokens(&rig.store), 7);
}

#[test]
fn a_charge_the_gate_did_not_get_is_retried_by_the_agent_and_nothing_is_counted_twice() {
    let rig = rig();
    let down = Charger {
        fail: true,
        ..Charger::default()
    };
    let err = rig.signed(&down, &event("a", 3)).unwrap_err();
    assert_eq!(err.code, ErrorCode::DependencyUnavailable);
    assert!(err.code.retryable(), "the template retries a 5xx");
    assert_eq!(tokens(&rig.store), 3, "the report itself is stored");
    let up = Charger::default();
    let retried = rig.signed(&up, &event("a", 3)).unwrap();
    assert_eq!((retried.accepted, retried.duplicates), (0, 1));
    assert_eq!(up.told.borrow().last().unwrap().tokens, 3);
    assert_eq!(tokens(&rig.store), 3);
}

#[test]
fn forged_altered_and_foreign_reports_change_nothing() {
    let (rig, charger) = (rig(), Charger::default());
    let body = event("a", 3).to_string().into_bytes();
    let good = hmac_sha256(&rig.secret, &body);
    let mut altered = body.clone();
    *altered.last_mut().unwrap() = b' ';
    let cases: Vec<(Vec<u8>, [u8; 32], ErrorCode)> = vec![
        (
            body.clone(),
            hmac_sha256(b"another secret", &body),
            ErrorCode::InvalidTelemetrySignature,
        ),
        (altered, good, ErrorCode::InvalidTelemetrySignature),
        (
            {
                let mut e = event("a", 3);
                e["userId"] = json!("usr_someone_else");
                e.to_string().into_bytes()
            },
            [0; 32],
            ErrorCode::InvalidTelemetrySignature,
        ),
    ];
    for (bytes, tag, code) in cases {
        assert_eq!(rig.send(&charger, &bytes, tag).unwrap_err().code, code);
    }
    // Signed by the deployment but about another user: refused after the signature, still nothing stored.
    let mut foreign = event("b", 3);
    foreign["userId"] = json!("usr_someone_else");
    assert_eq!(
        rig.signed(&charger, &foreign).unwrap_err().code,
        ErrorCode::TelemetryMismatch
    );
    let unknown = DeploymentId::parse("dep_ffffffffffffffffffffffff").unwrap();
    let err = block_on(ingest(
        &rig.store,
        &rig.store.usage,
        &charger,
        &rig.key,
        SignedReport {
            deployment_id: &unknown,
            tag: &good,
            body: &body,
        },
        NOW,
    ))
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownDeployment);
    assert!(rig.store.events.borrow().is_empty());
    assert_eq!(tokens(&rig.store), 0);
    assert!(charger.told.borrow().is_empty());
}

#[test]
fn refusals_are_audited_within_the_throttle_and_a_failed_write_gives_its_count_back() {
    let rig = rig();
    let throttle = RefCell::new(RejectThrottle::default());
    let err = invalid_signature();
    for _ in 0..RejectThrottle::MAX_ROWS + 5 {
        block_on(audit_reject(
            &rig.store,
            &throttle,
            "req_1",
            NOW,
            &err,
            Some(DEP),
        ))
        .unwrap();
    }
    assert_eq!(
        rig.store.rejects.borrow().len(),
        RejectThrottle::MAX_ROWS as usize
    );
    // The next window's first row carries the five that were only counted.
    block_on(audit_reject(
        &rig.store,
        &throttle,
        "req_2",
        NOW + RejectThrottle::WINDOW_MS,
        &err,
        None,
    ))
    .unwrap();
    assert_eq!(
        rig.store.rejects.borrow().last().unwrap(),
        &("invalid_telemetry_signature".into(), None, 5)
    );

    let failing = Fake {
        fail_rejects: true,
        ..Fake::default()
    };
    let throttle = RefCell::new(RejectThrottle::default());
    throttle.borrow_mut().restore(3);
    assert!(block_on(audit_reject(&failing, &throttle, "req_3", NOW, &err, None)).is_err());
    assert_eq!(
        throttle.borrow_mut().admit(NOW + 1),
        Some(3),
        "the count rides on the next row"
    );
}

#[test]
fn only_calls_the_gateway_admitted_to_this_deployment_are_charged() {
    let (rig, charger) = (rig(), Charger::default());
    let other_deployment = "dep_ffffffffffffffffffffffff";
    for trace_id in [
        "trc_0123456789abcdef0123456789abcdef01234567".to_string(),
        "made-up".to_string(),
        admitted(other_deployment),
    ] {
        let mut e = event("x", 500);
        e["traceId"] = json!(trace_id);
        let batch = json!({"events": [event("ok", 1), e]});
        let err = rig.signed(&charger, &batch).unwrap_err();
        assert_eq!(err.code, ErrorCode::TraceNotAdmitted, "{trace_id}");
        assert_eq!(err.status(), 403);
        assert_eq!(err.details.unwrap()["index"], 1);
    }
    assert!(rig.store.events.borrow().is_empty(), "all or nothing");
    assert_eq!(tokens(&rig.store), 0);
    assert!(charger.told.borrow().is_empty());
}
