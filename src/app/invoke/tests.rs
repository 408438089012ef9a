use super::*;
use crate::app::gate::protocol::{AgentRoute, DeploymentTarget};
use crate::domain::entitlements::{Entitlements, Tier};
use crate::domain::usage::UsageTotals;
use pollster::block_on;
use std::cell::RefCell;

const NOW: i64 = 1_795_000_000_000;

/// A gate that answers what it is given and remembers what it was asked.
struct ScriptedGate {
    answer: Result<Admission, String>,
    asked: RefCell<Vec<(UserId, AdmitRequest)>>,
}

impl InvokeGate for ScriptedGate {
    async fn admit(&self, user: &UserId, request: &AdmitRequest) -> Result<Admission, String> {
        self.asked
            .borrow_mut()
            .push((user.clone(), request.clone()));
        self.answer.clone()
    }
    async fn release(&self, _: &UserId, _: PeriodKey) -> Result<GateDecision, String> {
        Err("not used".into())
    }
}

fn gate(answer: Result<Admission, String>) -> ScriptedGate {
    ScriptedGate {
        answer,
        asked: RefCell::new(Vec::new()),
    }
}

fn decision(granted: bool, used: u64, limit: u64) -> GateDecision {
    let period = PeriodKey::containing(NOW);
    GateDecision {
        granted,
        period_key: period,
        used,
        limit,
        remaining: limit.saturating_sub(used),
        resets_at_ms: period.end_ms(),
    }
}

fn granted_admission() -> Admission {
    let deployment = DeploymentTarget {
        deployment_id: "dep_1".into(),
        deploy_target: "workers_dev".into(),
        script_name: "wh-dep-dep_1".into(),
        invoke_path: "/invoke".into(),
        provider_ref: "http://agent".into(),
        runtime_provider: "cloudflare".into(),
        gateway_secret_sealed: None,
    };
    Admission {
        deployment_id: Some("dep_1".into()),
        verdict: Verdict::Granted(Box::new(Granted {
            decision: decision(true, 1, 10),
            route: AgentRoute {
                agent_id: "agt_1".into(),
                enabled: true,
                deployment: Some(deployment),
            },
            session_id: "ses_1".into(),
            runtime_session_id: "rts_1".into(),
            cpu_ms: 50,
            subrequests: 50,
            compute_ms_limit: 1_000,
        })),
        loaded: true,
    }
}

fn refused(refusal: Refusal) -> Admission {
    Admission {
        deployment_id: Some("dep_1".into()),
        verdict: Verdict::Refused(refusal),
        loaded: false,
    }
}

thread_local! {
    static AGENT: AgentId = AgentId::generate();
}

fn agent() -> AgentId {
    AGENT.with(Clone::clone)
}

fn user() -> UserId {
    UserId::from_trusted("usr_1".into())
}

fn request() -> InvokeRequest {
    InvokeRequest::from_json(json!({
        "protocol": "invoke/v1",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "sessionId": "conv-1"
    }))
    .unwrap()
}

// The same result `prepare` returns; refusals are rare and carry the whole error.
#[allow(clippy::result_large_err)]
fn run(gate: &ScriptedGate, caller: &Caller, streaming: bool) -> Result<Admitted, Refused> {
    block_on(prepare(
        gate,
        caller,
        &agent(),
        &request(),
        streaming,
        PeriodKey::containing(NOW),
        NOW,
    ))
}

#[test]
fn a_granted_call_carries_the_route_and_asks_the_gate_once_with_the_whole_question() {
    let g = gate(Ok(granted_admission()));
    let caller = Caller::Key(KeyHolder {
        key_id: "key_1".into(),
        user_id: user(),
        agent_scope: Some(agent().as_str().into()),
    });
    let admitted = run(&g, &caller, true).unwrap();
    assert_eq!(admitted.deployment.script_name, "wh-dep-dep_1");
    assert!(admitted.gate_loaded);
    let asked = g.asked.borrow();
    assert_eq!(asked.len(), 1);
    let (asked_user, asked) = &asked[0];
    assert_eq!(asked_user, &user());
    assert_eq!(asked.agent_id, agent().as_str());
    assert_eq!(asked.key_id.as_deref(), Some("key_1"));
    assert!(asked.streaming);
    assert_eq!(asked.session_id.as_deref(), Some("conv-1"));
}

#[test]
fn a_scoped_key_is_refused_for_another_agent_before_the_gate_is_asked() {
    let g = gate(Ok(granted_admission()));
    let caller = Caller::Key(KeyHolder {
        key_id: "key_1".into(),
        user_id: user(),
        agent_scope: Some("agt_other".into()),
    });
    let refused = run(&g, &caller, false).unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::ApiKeyScopeMismatch);
    assert_eq!(refused.error.details.unwrap()["keyId"], "key_1");
    assert!(g.asked.borrow().is_empty());
}

#[test]
fn an_unreachable_gate_fails_closed() {
    let g = gate(Err("connection reset".into()));
    let refused = run(&g, &Caller::Token { user_id: user() }, false).unwrap_err();
    assert_eq!(refused.error.code, ErrorCode::DependencyUnavailable);
    assert!(refused
        .error
        .internal_cause
        .unwrap()
        .contains("connection reset"));
    assert!(!refused.error.message.contains("reset"));
}

#[test]
fn every_refusal_has_its_stable_code_and_keeps_the_deployment_for_metering() {
    let ent = Entitlements::tier_default(Tier::Free);
    let cases = [
        (Refusal::InvalidApiKey, ErrorCode::InvalidApiKey, 401),
        (Refusal::AgentNotFound, ErrorCode::AgentNotFound, 404),
        (Refusal::AgentDisabled, ErrorCode::AgentDisabled, 409),
        (
            Refusal::NoActiveDeployment,
            ErrorCode::NoActiveDeployment,
            409,
        ),
        (
            Refusal::RuntimeNotEntitled {
                provider: "agentcore".into(),
            },
            ErrorCode::NotEntitled,
            403,
        ),
        (Refusal::StreamingNotEntitled, ErrorCode::NotEntitled, 403),
        (
            Refusal::QuotaExhausted {
                usage: UsageTotals::new(1, 1, ent.tokens_per_period, 0, 0, 0),
                entitlements: Box::new(ent.clone()),
            },
            ErrorCode::QuotaExhausted,
            429,
        ),
        (
            Refusal::LimitExceeded {
                decision: decision(false, 10, 10),
            },
            ErrorCode::RequestLimitExceeded,
            429,
        ),
    ];
    for (refusal, code, status) in cases {
        let g = gate(Ok(refused(refusal.clone())));
        let out = run(&g, &Caller::Token { user_id: user() }, false).unwrap_err();
        assert_eq!(
            (out.error.code, out.error.status()),
            (code, status),
            "{refusal:?}"
        );
        assert_eq!(out.deployment_id.as_deref(), Some("dep_1"));
        let unknown = matches!(code, ErrorCode::InvalidApiKey | ErrorCode::AgentNotFound);
        assert_eq!(out.agent_found, !unknown, "{refusal:?}");
        if status == 429 {
            assert!(
                out.error.headers.iter().any(|(n, _)| *n == "Retry-After"),
                "{refusal:?}"
            );
        }
    }
}

#[test]
fn only_a_call_that_never_reached_the_agent_gives_its_request_back() {
    assert!(gives_back(&UpstreamFailure::NotDispatched(
        "Worker not found.".into()
    )));
    assert!(!gives_back(&UpstreamFailure::Network(
        "Network connection lost.".into()
    )));
    assert!(!gives_back(&UpstreamFailure::Rejected(
        "Error: the agent threw".into()
    )));
    assert!(!gives_back(&UpstreamFailure::Timeout { after_ms: 10 }));
    assert!(!gives_back(&UpstreamFailure::Status {
        status: 500,
        body: vec![]
    }));
    assert!(!gives_back(&UpstreamFailure::InvalidResponse {
        status: 200,
        body: vec![]
    }));
    let back = given_back(&decision(true, 4, 10));
    assert_eq!((back.used, back.remaining), (3, 7));
    let headers = rate_limit_headers(&back, NOW);
    assert!(headers.contains(&("X-RateLimit-Remaining", "7".into())));
    assert!(!headers.iter().any(|(n, _)| *n == "Retry-After"));
}

#[test]
fn a_metering_row_measures_from_the_start_and_never_goes_negative() {
    let meter = Meter {
        trace_id: "trc_1".into(),
        request_id: "req_1".into(),
        user_id: "usr_1".into(),
        agent_id: "agt_1".into(),
        deployment_id: None,
        api_key_id: None,
        period: PeriodKey::containing(NOW),
        streaming: false,
        started_at: NOW,
        compute_ms_limit: 100,
        suppressed: None,
        forwarded_at: None,
    };
    assert_eq!(meter.row("ok", Some(200), true, NOW + 42).wall_ms, 42);
    assert_eq!(meter.row("ok", Some(200), true, NOW - 5).wall_ms, 0);
}

#[test]
fn measured_compute_is_charged_once_for_a_counted_call_only() {
    let meter = Meter {
        trace_id: "trc_1".into(),
        request_id: "req_1".into(),
        user_id: "usr_1".into(),
        agent_id: "agt_1".into(),
        deployment_id: Some("dep_1".into()),
        api_key_id: None,
        period: PeriodKey::containing(NOW),
        streaming: true,
        started_at: NOW,
        compute_ms_limit: 100,
        suppressed: None,
        forwarded_at: None,
    };
    // A stream's first row is provisional; its last write charges the whole call.
    let started = meter
        .row("client_closed", None, true, NOW + 3)
        .provisional();
    assert_eq!(started.measured_charge_ms(), None);
    let ended = meter.row("ok", Some(200), true, NOW + 250);
    assert_eq!(ended.measured_charge_ms(), Some(250));
    // A call given back (or refused) never reached the agent: not charged.
    assert_eq!(
        meter
            .row("upstream_unavailable", None, false, NOW + 9)
            .measured_charge_ms(),
        None
    );
    // The gate hears of the total once it reaches the quota, not before.
    assert!(!ended.must_tell_gate(99));
    assert!(ended.must_tell_gate(100));
    let usage = AnswerUsage {
        input_tokens: 3,
        output_tokens: 4,
    };
    assert_eq!(ended.with_usage(Some(usage)).answer_usage, Some(usage));
}

#[test]
fn a_stream_is_abandoned_only_past_the_relays_own_silence_limit() {
    let limit = abandoned_after_ms(4_000);
    assert_eq!(limit, 6_000);
    assert!(!stream_abandoned(NOW, NOW + 5_999, limit));
    assert!(stream_abandoned(NOW, NOW + 6_000, limit));
}
