use super::retries::MAX_ATTEMPTS;
use super::*;
use crate::cloudflare::api::{ApiRequest, DeployTarget, Step};
use crate::domain::ids::{AgentId, UserId};
use pollster::block_on;
use std::cell::{Cell, RefCell};

/// Answers with the scripted failures first, then succeeds.
struct Busy {
    failures: RefCell<Vec<ProviderError>>,
    calls: Cell<u32>,
}

impl ProviderApi for Busy {
    async fn call(&self, _: &ApiRequest) -> Result<serde_json::Value, ProviderError> {
        self.calls.set(self.calls.get() + 1);
        let mut failures = self.failures.borrow_mut();
        if failures.is_empty() {
            Ok(serde_json::json!({}))
        } else {
            Err(failures.remove(0))
        }
    }
    async fn probe(&self, _: &str) -> Result<(u16, String), String> {
        Ok((
            401,
            r#"{"error":{"code":"gateway_credential_required"}}"#.into(),
        ))
    }
}

#[derive(Default)]
struct Waits(RefCell<Vec<u64>>);

impl Sleeper for Waits {
    async fn sleep(&self, ms: u64) {
        self.0.borrow_mut().push(ms);
    }
}

fn failure(kind: FailureKind, status: u16, retry_after_s: Option<u64>) -> ProviderError {
    ProviderError {
        kind,
        step: Step::Upload,
        endpoint: "PUT /accounts/acc-123/workers/scripts/x".into(),
        status: Some(status),
        codes: vec![],
        message: "busy".into(),
        retry_after_s,
    }
}

fn run(
    failures: Vec<ProviderError>,
) -> (Result<serde_json::Value, ProviderError>, u32, Vec<u64>, u32) {
    let provider = Busy {
        failures: RefCell::new(failures),
        calls: Cell::new(0),
    };
    let (waits, retries) = (Waits::default(), Cell::new(0));
    let request = DeployTarget::WorkersDev {
        account_id: "acc-123".into(),
    }
    .delete("x");
    let mut waited = 0;
    let outcome = block_on(call_retrying(
        &provider,
        &waits,
        &request,
        &mut waited,
        || {
            retries.set(retries.get() + 1);
            async {}
        },
    ));
    (
        outcome,
        provider.calls.get(),
        waits.0.into_inner(),
        retries.get(),
    )
}

#[test]
fn transient_failures_are_retried_with_backoff_honouring_retry_after() {
    let (outcome, calls, waits, retries) = run(vec![
        failure(FailureKind::RateLimited, 429, Some(3)),
        failure(FailureKind::Upstream, 503, None),
        failure(FailureKind::Network, 0, None),
    ]);
    assert!(outcome.is_ok());
    assert_eq!(calls, 4);
    assert_eq!(
        waits,
        vec![3_000, 1_000, 2_000],
        "Retry-After when longer, else doubling from 500 ms"
    );
    assert_eq!(retries, 3, "each retry is shown on the deployment");
}

#[test]
fn what_retrying_cannot_fix_fails_at_once_and_waiting_is_bounded() {
    let (outcome, calls, waits, _) = run(vec![failure(FailureKind::Validation, 400, None)]);
    assert_eq!(outcome.unwrap_err().kind, FailureKind::Validation);
    assert_eq!((calls, waits.len()), (1, 0));
    // A provider that keeps asking for 15 s: the second wait would pass the budget, so the deploy gives up.
    let (outcome, calls, waits, _) = run(vec![failure(FailureKind::RateLimited, 429, Some(15)); 5]);
    assert_eq!(outcome.unwrap_err().kind, FailureKind::RateLimited);
    assert_eq!((calls, waits), (2, vec![15_000]));
    // Never more than MAX_ATTEMPTS calls.
    let (_, calls, _, _) = run(vec![failure(FailureKind::Upstream, 502, None); 10]);
    assert_eq!(calls, MAX_ATTEMPTS);
}

#[test]
fn errors_shown_to_users_never_carry_the_platform_account() {
    let config = workers_dev_config(&[]);
    let mut e = failure(FailureKind::Auth, 403, None);
    e.message = "Authentication error: token has no access to account acc-123".into();
    let shown = error_from_provider(&e, &config);
    let text = serde_json::to_string(&shown).unwrap();
    assert!(!text.contains("acc-123"), "{text}");
    assert_eq!(
        shown.endpoint.as_deref(),
        Some("PUT /accounts/{account}/workers/scripts/x")
    );

    // A row stored before errors were redacted is redacted when its owner reads it.
    let stored = DeploymentError {
        endpoint: Some("PUT /accounts/acc-123/workers/scripts/x".into()),
        message: "no access to account acc-123".into(),
        ..shown
    };
    let mut deployment = sample_deployment();
    deployment.error = Some(stored);
    let read = for_owner(deployment, Some(&config));
    let text = serde_json::to_string(&read).unwrap();
    assert!(!text.contains("acc-123"), "{text}");
    assert!(text.contains("no access to account {account}"), "{text}");
}

#[test]
fn agentcore_deployments_never_show_the_platforms_aws_account() {
    let config = workers_dev_config(&[
        ("AGENTCORE_REGION", "us-east-1"),
        ("AGENTCORE_ACCOUNT_ID", "210987654321"),
        (
            "AGENTCORE_EXECUTION_ROLE_ARN",
            "arn:aws:iam::210987654321:role/Agents",
        ),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ]);
    let arn = "arn:aws:bedrock-agentcore:us-east-1:210987654321:runtime/webhost_a-0123456789";
    let mut deployment = Deployment {
        runtime_provider: "agentcore".into(),
        deploy_target: "agentcore".into(),
        provider_ref: Some(format!("{arn}?version=3&qualifier=dep_x")),
        execution_role_arn: Some("arn:aws:iam::210987654321:role/Agents".into()),
        error: Some(DeploymentError {
            step: "ready".into(),
            endpoint: Some(format!("GET /runtimes/{arn}/")),
            kind: "provider".into(),
            status: Some(409),
            provider_codes: vec![],
            message: format!("Role arn:aws:iam::210987654321:role/Agents of {arn} cannot pull"),
        }),
        ..sample_deployment()
    };
    let text = serde_json::to_string(&for_owner(deployment.clone(), Some(&config))).unwrap();
    assert!(!text.contains("210987654321"), "{text}");
    assert!(
        text.contains("\"providerRef\":\"arn:aws:bedrock-agentcore:us-east-1:{account}:runtime/webhost_a-0123456789?version=3&qualifier=dep_x\""),
        "{text}"
    );
    assert!(
        text.contains("\"executionRoleArn\":\"arn:aws:iam::{account}:role/Agents\""),
        "{text}"
    );
    // A Cloudflare deployment's reference is its own: left as it is.
    deployment.runtime_provider = "cloudflare".into();
    deployment.provider_ref = Some("https://wh-dep-210987654321.x.workers.dev".into());
    let shown = for_owner(deployment, Some(&config));
    assert_eq!(
        shown.provider_ref.as_deref(),
        Some("https://wh-dep-210987654321.x.workers.dev")
    );
}

/// A workers.dev deploy configuration (Cloudflare account `acc-123`), with `extra` variables set too.
fn workers_dev_config(extra: &[(&str, &str)]) -> DeployConfig {
    let base = [
        ("DEPLOY_TARGET", "workers_dev"),
        ("CLOUDFLARE_ACCOUNT_ID", "acc-123"),
        ("CLOUDFLARE_API_TOKEN", "t"),
        ("WORKERS_DEV_URL_TEMPLATE", "https://{script}.x.workers.dev"),
        ("TELEMETRY_REPORT_URL", "https://cp/v1/telemetry/report"),
        (
            "TELEMETRY_SECRETS_ENCRYPTION_KEY",
            "hex:1111111111111111111111111111111111111111111111111111111111111111",
        ),
    ];
    DeployConfig::from_vars(|name| {
        base.iter()
            .chain(extra)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
    .unwrap()
}

fn sample_deployment() -> Deployment {
    let id = DeploymentId::generate();
    Deployment {
        script_name: script_name_for(&id),
        id,
        agent_id: AgentId::generate(),
        user_id: UserId::generate(),
        version: 1,
        status: DeploymentStatus::Failed,
        runtime_provider: "cloudflare".into(),
        deploy_target: "workers_dev".into(),
        main_module_name: "index.mjs".into(),
        compatibility_date: "2026-07-30".into(),
        invoke_path: "/invoke".into(),
        source: "custom".into(),
        code_sha256: String::new(),
        env: BTreeMap::new(),
        provider_ref: None,
        error: None,
        retries: 0,
        created_at: 0,
        updated_at: 0,
        finished_at: Some(0),
        container_uri: None,
        execution_role_arn: None,
    }
}

/// A workers.dev URL that answers 404 for its first `not_yet` probes, then as a deployed guard.
struct Propagating {
    not_yet: Cell<u32>,
    probes: Cell<u32>,
}

impl ProviderApi for Propagating {
    async fn call(&self, _: &ApiRequest) -> Result<serde_json::Value, ProviderError> {
        Ok(serde_json::json!({}))
    }
    async fn probe(&self, _: &str) -> Result<(u16, String), String> {
        self.probes.set(self.probes.get() + 1);
        if self.not_yet.get() == 0 {
            return Ok((
                401,
                r#"{"error":{"code":"gateway_credential_required"}}"#.into(),
            ));
        }
        self.not_yet.set(self.not_yet.get() - 1);
        Ok((404, "There is nothing here yet".into()))
    }
}

/// Time that moves only when the deploy sleeps.
struct Timeline {
    now: Cell<i64>,
    sleeps: RefCell<Vec<u64>>,
}

impl Clock for Timeline {
    fn now_ms(&self) -> i64 {
        self.now.get()
    }
}

impl Sleeper for Timeline {
    async fn sleep(&self, ms: u64) {
        self.sleeps.borrow_mut().push(ms);
        self.now.set(self.now.get() + ms as i64);
    }
}

fn timeline() -> Timeline {
    Timeline {
        now: Cell::new(0),
        sleeps: RefCell::new(Vec::new()),
    }
}

const URL: &str = "https://wh-x.example.workers.dev";

#[test]
fn a_workers_dev_deploy_waits_until_its_url_answers_within_the_deploys_budget() {
    let slow = Propagating {
        not_yet: Cell::new(4),
        probes: Cell::new(0),
    };
    let time = timeline();
    let mut waited = 0;
    block_on(wait_until_live(&slow, &time, &time, URL, &mut waited)).unwrap();
    assert_eq!(slow.probes.get(), 5);
    assert_eq!(*time.sleeps.borrow(), vec![100, 200, 400, 800]);
    assert_eq!(waited, 1_500);

    // Never live: a failure at step `live` that says so, within what is left of the budget the provider
    // retries before it already spent from.
    let never = Propagating {
        not_yet: Cell::new(u32::MAX),
        probes: Cell::new(0),
    };
    let time = timeline();
    let mut waited = 12_000;
    let err = block_on(wait_until_live(&never, &time, &time, URL, &mut waited)).unwrap_err();
    assert_eq!(err.step, "live");
    assert!(err.message.contains("HTTP 404"), "{}", err.message);
    assert!(waited <= MAX_RETRY_WAIT_MS, "{waited}");
    let slept: u64 = time.sleeps.borrow().iter().sum();
    assert!(slept <= MAX_RETRY_WAIT_MS - 12_000, "{slept}");
}

/// Answers Cloudflare's error 1042 (a Worker fetching another on the same zone).
struct SameZone;

impl ProviderApi for SameZone {
    async fn call(&self, _: &ApiRequest) -> Result<serde_json::Value, ProviderError> {
        Ok(serde_json::json!({}))
    }
    async fn probe(&self, _: &str) -> Result<(u16, String), String> {
        Ok((404, "error code: 1042".into()))
    }
}

#[test]
fn error_1042_fails_at_once_and_says_how_to_configure_around_it() {
    let time = timeline();
    let mut waited = 0;
    let err = block_on(wait_until_live(&SameZone, &time, &time, URL, &mut waited)).unwrap_err();
    assert_eq!(
        (err.step.as_str(), err.kind.as_str()),
        ("live", "same_zone")
    );
    assert!(err.message.contains("custom domain"), "{}", err.message);
    assert!(
        time.sleeps.borrow().is_empty(),
        "no waiting for what waiting cannot fix"
    );
}
