//! The runtime provider interface: everything that differs between where agents run — Cloudflare Workers (the
//! default) and Amazon Bedrock AgentCore (pro and enterprise) — behind one set of operations, so deploy
//! orchestration, the gateway, sessions, metering and telemetry never ask which provider they talk to.
//!
//! - `RuntimeProvider`: deploy a workload (until it serves, or a failure with its step) and remove what a
//!   deployment left on the provider. `Runtimes` holds both providers and picks by the deployment.
//! - `upstream_call`: the invocation of a deployment as data — an HTTP request (a workers.dev URL, or AgentCore's
//!   data API signed with SigV4) or a call through the dispatch namespace binding — which the platform only sends.

use super::deployments::agentcore::RUNTIME_PROVIDER as AGENTCORE;
use super::deployments::{Workload, RUNTIME_PROVIDER as CLOUDFLARE};
use super::gate::protocol::DeploymentTarget;
use crate::aws::agentcore::{self, AgentCoreTarget};
use crate::domain::deployment::{Deployment, DeploymentError};
use crate::domain::gateway_credential;
use crate::domain::ids::DeploymentId;
use crate::domain::invoke::UpstreamFailure;
use crate::domain::ApiError;

/// Where a deploy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// It serves, at this provider reference.
    Serving(String),
    /// The provider is still bringing it up: it stays `deploying`, and the cron job follows it (`follow`).
    Pending,
}

/// One runtime provider.
#[allow(async_fn_in_trait)]
pub trait RuntimeProvider {
    /// Makes `deployment` serve `workload` with these platform secrets, waiting within the deploy's budget.
    async fn deploy(
        &self,
        deployment: &Deployment,
        workload: &Workload,
        telemetry_secret: &str,
        gateway_secret: &str,
    ) -> Result<Deployed, DeploymentError>;

    /// Where a deployment the deploy left `Pending` stands now (one look, no waiting).
    async fn follow(&self, deployment: &Deployment) -> Result<Deployed, DeploymentError>;

    /// Removes what a deployment left on the provider (what is gone already counts as removed) and records it.
    async fn remove(&self, deployment: &LeftBehind) -> Result<(), ApiError>;
}

/// What a deployment may have left on its provider: its script, or its AgentCore version and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftBehind {
    pub id: DeploymentId,
    pub agent_id: crate::domain::ids::AgentId,
    pub runtime_provider: String,
    pub script_name: String,
    pub provider_ref: Option<String>,
    /// When the deployment ended (failed, or stopped serving), if known.
    pub ended_at: Option<i64>,
}

/// Both providers; each operation goes to the one a deployment runs on.
pub struct Runtimes<C, A> {
    pub cloudflare: C,
    pub agentcore: A,
}

impl<C: RuntimeProvider, A: RuntimeProvider> RuntimeProvider for Runtimes<C, A> {
    async fn deploy(
        &self,
        deployment: &Deployment,
        workload: &Workload,
        telemetry_secret: &str,
        gateway_secret: &str,
    ) -> Result<Deployed, DeploymentError> {
        if deployment.runtime_provider == CLOUDFLARE {
            self.cloudflare
                .deploy(deployment, workload, telemetry_secret, gateway_secret)
                .await
        } else {
            self.agentcore
                .deploy(deployment, workload, telemetry_secret, gateway_secret)
                .await
        }
    }

    async fn follow(&self, deployment: &Deployment) -> Result<Deployed, DeploymentError> {
        if deployment.runtime_provider == CLOUDFLARE {
            self.cloudflare.follow(deployment).await
        } else {
            self.agentcore.follow(deployment).await
        }
    }

    async fn remove(&self, deployment: &LeftBehind) -> Result<(), ApiError> {
        if deployment.runtime_provider == CLOUDFLARE {
            self.cloudflare.remove(deployment).await
        } else {
            self.agentcore.remove(deployment).await
        }
    }
}

/// One invocation, as the platform sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCall {
    /// An HTTP request: to a workers.dev URL, or to AgentCore's data API (signed).
    Http {
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Through the dispatch namespace binding, with per-invocation limits.
    Dispatch {
        script: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        cpu_ms: u64,
        subrequests: u64,
    },
}

/// What one call carries besides its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext<'a> {
    pub body: Vec<u8>,
    pub trace_id: &'a str,
    pub request_id: &'a str,
    /// The gateway's credential for this call (Cloudflare's guard); `None` for a deployment before the guard.
    pub credential: Option<&'a str>,
    /// The SessionMap's runtime session id (AgentCore's session header; always in the invoke/v1 body too).
    pub runtime_session_id: &'a str,
    pub streaming: bool,
    pub cpu_ms: u64,
    pub subrequests: u64,
    pub now_ms: i64,
}

/// Whether a deployment runs on AgentCore (an AgentCore deployment names it as both its provider and its target).
fn runs_on_agentcore(target: &DeploymentTarget) -> bool {
    target.runtime_provider == AGENTCORE || target.deploy_target == AGENTCORE
}

/// The invocation of `target`. Only what the agent needs goes along: never the caller's credentials.
pub fn upstream_call(
    target: &DeploymentTarget,
    agentcore_target: Option<&AgentCoreTarget>,
    call: CallContext,
) -> Result<UpstreamCall, UpstreamFailure> {
    if runs_on_agentcore(target) {
        let aws = agentcore_target.ok_or_else(|| {
            UpstreamFailure::NotDispatched("AgentCore is not configured (AGENTCORE_REGION)".into())
        })?;
        let (arn, qualifier) =
            agentcore::parse_provider_ref(&target.provider_ref).ok_or_else(|| {
                UpstreamFailure::NotDispatched(format!(
                    "deployment {} has no AgentCore reference",
                    target.deployment_id
                ))
            })?;
        let signed = aws.invoke(
            arn,
            qualifier,
            call.runtime_session_id,
            call.trace_id,
            call.streaming,
            call.body,
            call.now_ms,
        );
        return Ok(UpstreamCall::Http {
            url: signed.url,
            headers: signed.headers,
            body: signed.body,
        });
    }
    let accept = if call.streaming {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/json".into()),
        ("Accept".into(), accept.into()),
        ("X-Trace-Id".into(), call.trace_id.into()),
        ("X-Request-Id".into(), call.request_id.into()),
    ];
    if let Some(credential) = call.credential {
        headers.push((gateway_credential::HEADER.into(), credential.into()));
    }
    if target.deploy_target == "dispatch_namespace" {
        return Ok(UpstreamCall::Dispatch {
            script: target.script_name.clone(),
            path: target.invoke_path.clone(),
            headers,
            body: call.body,
            cpu_ms: call.cpu_ms,
            subrequests: call.subrequests,
        });
    }
    Ok(UpstreamCall::Http {
        url: format!(
            "{}{}",
            target.provider_ref.trim_end_matches('/'),
            target.invoke_path
        ),
        headers,
        body: call.body,
    })
}

/// How a non-2xx answer to an invocation reads. On Cloudflare any answer is the agent's (`None`). On AgentCore only
/// `RuntimeClientError` is the agent's own failure; anything else — throttling, AgentCore's 5xx, a signature or
/// permission refusal, an endpoint that is gone — is AgentCore refusing before the agent ran: the call never
/// reached it (the request is given back, and AgentCore's words stay in the logs).
pub fn provider_refusal(
    target: &DeploymentTarget,
    status: u16,
    error_type: Option<&str>,
) -> Option<UpstreamFailure> {
    if !runs_on_agentcore(target) {
        return None;
    }
    let named = error_type
        .map(|t| t.split(':').next().unwrap_or(t))
        .map(|t| t.rsplit('#').next().unwrap_or(t))
        .unwrap_or("");
    if named == "RuntimeClientError" {
        return None;
    }
    // Refusals AgentCore makes before any container runs: the call is given back. Anything else (its 5xx, an
    // error nobody names) may have come after the agent started: it counts, as a broken connection does.
    const BEFORE_DISPATCH: &[&str] = &[
        "ThrottlingException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "ValidationException",
        "ResourceNotFoundException",
        "ServiceQuotaExceededException",
        "ConflictException",
        "RetryableConflictException",
    ];
    let cause = format!("AgentCore refused the invocation: {status} {named}");
    Some(if BEFORE_DISPATCH.contains(&named) {
        UpstreamFailure::NotDispatched(cause)
    } else {
        UpstreamFailure::Network(cause)
    })
}

/// An agent's own non-2xx answer as the caller sees it: on Cloudflare as it came; on AgentCore through
/// `agent_failure` (`account_id`: the platform's AWS account, taken out of what is shown).
pub fn agent_answer(
    target: &DeploymentTarget,
    status: u16,
    body: Vec<u8>,
    account_id: &str,
) -> (u16, Vec<u8>) {
    if runs_on_agentcore(target) {
        agent_failure(status, &body, account_id)
    } else {
        (status, body)
    }
}

/// An AgentCore `RuntimeClientError` as the agent's own failure: the status its container answered and what the
/// caller sees of it. AgentCore answers every non-2xx of a container 424 with "Received error (N) from runtime…"
/// and drops the container's body, so N is read from the message: the caller gets the agent's status (and, as on
/// Cloudflare, a retryable error for its 5xx and 429). A failure with no status in it (a container that never
/// became healthy) stays 424. The message only, the platform's account id taken out (AgentCore's messages may
/// name ARNs).
pub fn agent_failure(status: u16, body: &[u8], account_id: &str) -> (u16, Vec<u8>) {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let agent_status = message
        .split_once("Received error (")
        .and_then(|(_, rest)| rest.split_once(") from runtime"))
        .and_then(|(n, _)| n.parse::<u16>().ok())
        .filter(|n| (400..=599).contains(n))
        .unwrap_or(status);
    let message = if account_id.is_empty() {
        message
    } else {
        message.replace(account_id, "{account}")
    };
    (
        agent_status,
        serde_json::json!({ "message": message })
            .to_string()
            .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::sigv4::Credentials;

    fn target(deploy_target: &str, provider_ref: &str) -> DeploymentTarget {
        DeploymentTarget {
            deployment_id: "dep_0123456789abcdef01234567".into(),
            deploy_target: deploy_target.into(),
            script_name: "wh-dep-0123".into(),
            invoke_path: if deploy_target == "agentcore" {
                "/invocations"
            } else {
                "/invoke"
            }
            .into(),
            provider_ref: provider_ref.into(),
            runtime_provider: if deploy_target == "agentcore" {
                "agentcore"
            } else {
                "cloudflare"
            }
            .into(),
            gateway_secret_sealed: None,
        }
    }

    fn context<'a>(streaming: bool) -> CallContext<'a> {
        CallContext {
            body: br#"{"protocol":"invoke/v1"}"#.to_vec(),
            trace_id: "trc_1",
            request_id: "req_1",
            credential: Some("v1.cred"),
            runtime_session_id: "rts_0123456789abcdef0123456789abcdef0123456789abcdef",
            streaming,
            cpu_ms: 50,
            subrequests: 10,
            now_ms: 1_440_938_160_000,
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn only_the_agents_own_failure_is_its_answer_on_agentcore() {
        let agentcore = target(
            "agentcore",
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/x?version=1&qualifier=q",
        );
        assert_eq!(
            provider_refusal(&agentcore, 424, Some("RuntimeClientError")),
            None
        );
        for (status, kind) in [
            (429, "ThrottlingException"),
            (403, "AccessDeniedException"),
            (404, "ResourceNotFoundException:http://internal"),
        ] {
            assert!(
                matches!(
                    provider_refusal(&agentcore, status, Some(kind)),
                    Some(UpstreamFailure::NotDispatched(_))
                ),
                "{status} {kind}: never reached the agent"
            );
        }
        for (status, kind) in [
            (503, "ServiceUnavailableException"),
            (500, "InternalServerException"),
            (502, ""),
        ] {
            assert!(
                matches!(
                    provider_refusal(&agentcore, status, Some(kind)),
                    Some(UpstreamFailure::Network(_))
                ),
                "{status} {kind}: may have run, so it counts"
            );
        }
        let workers = target("workers_dev", "https://x");
        assert_eq!(
            provider_refusal(&workers, 500, None),
            None,
            "any Cloudflare answer is the agent's"
        );
        let (status, shown) = agent_failure(
            424,
            br#"{"message":"The runtime arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/x did not start"}"#,
            "123456789012",
        );
        let shown = String::from_utf8(shown).unwrap();
        assert!(
            !shown.contains("123456789012") && shown.contains("{account}"),
            "{shown}"
        );
        assert_eq!(status, 424, "no status of the agent's in it");
    }

    #[test]
    fn an_agentcore_agents_own_status_is_read_from_the_runtime_client_error() {
        let said = |n: &str| {
            format!(
                r#"{{"message":"Received error ({n}) from runtime. Please check your CloudWatch logs for more information."}}"#
            )
        };
        for (n, expected) in [("500", 500), ("429", 429), ("400", 400), ("503", 503)] {
            assert_eq!(agent_failure(424, said(n).as_bytes(), "").0, expected);
        }
        // Anything else is not a status of the agent's.
        for n in ["200", "9999", "abc", ""] {
            assert_eq!(agent_failure(424, said(n).as_bytes(), "").0, 424, "{n}");
        }
        assert_eq!(agent_failure(424, b"not json", "").0, 424);
        // On Cloudflare the agent's answer is its own, as it came.
        let workers = target("workers_dev", "https://x");
        assert_eq!(
            agent_answer(&workers, 424, said("500").into_bytes(), ""),
            (424, said("500").into_bytes())
        );
        let agentcore = target(
            "agentcore",
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/x?version=1&qualifier=q",
        );
        assert_eq!(
            agent_answer(&agentcore, 424, said("500").into_bytes(), "").0,
            500
        );
    }

    #[test]
    fn a_workers_dev_deployment_is_called_at_its_url_with_the_gateways_credential() {
        let call = upstream_call(
            &target("workers_dev", "https://wh.example.workers.dev/"),
            None,
            context(true),
        )
        .unwrap();
        let UpstreamCall::Http { url, headers, .. } = call else {
            panic!("an HTTP call")
        };
        assert_eq!(url, "https://wh.example.workers.dev/invoke");
        assert_eq!(header(&headers, "Accept"), Some("text/event-stream"));
        assert_eq!(
            header(&headers, gateway_credential::HEADER),
            Some("v1.cred")
        );
        assert_eq!(header(&headers, "X-Trace-Id"), Some("trc_1"));
        assert_eq!(
            header(&headers, "Authorization"),
            None,
            "never the caller's credentials"
        );
    }

    #[test]
    fn a_namespace_deployment_goes_through_the_binding_with_its_limits() {
        let call = upstream_call(
            &target("dispatch_namespace", "ns/wh-dep-0123"),
            None,
            context(false),
        )
        .unwrap();
        assert!(matches!(
            call,
            UpstreamCall::Dispatch { ref script, ref path, cpu_ms: 50, subrequests: 10, .. }
                if script == "wh-dep-0123" && path == "/invoke"
        ));
    }

    #[test]
    fn an_agentcore_deployment_is_a_signed_invocation_of_its_endpoint_with_the_session() {
        let aws = AgentCoreTarget {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            control_url: "https://bedrock-agentcore-control.us-east-1.amazonaws.com".into(),
            data_url: "https://bedrock-agentcore.us-east-1.amazonaws.com".into(),
            execution_role_arn: "arn:aws:iam::123456789012:role/R".into(),
            allowed_role_arns: vec!["arn:aws:iam::123456789012:role/R".into()],
            allowed_image_prefixes: vec![],
            lifecycle: Default::default(),
            credentials: Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: None,
            },
        };
        let arn = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/webhost_abc-AbCdEf1234";
        let reference = agentcore::provider_ref(arn, "2", "dep_0123456789abcdef01234567");
        let call =
            upstream_call(&target("agentcore", &reference), Some(&aws), context(true)).unwrap();
        let UpstreamCall::Http { url, headers, .. } = call else {
            panic!("an HTTP call")
        };
        assert_eq!(
            url,
            "https://bedrock-agentcore.us-east-1.amazonaws.com/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fwebhost_abc-AbCdEf1234/invocations?qualifier=dep_0123456789abcdef01234567"
        );
        assert_eq!(
            header(&headers, agentcore::SESSION_HEADER),
            Some("rts_0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_eq!(header(&headers, agentcore::TRACE_HEADER), Some("trc_1"));
        assert!(header(&headers, "Authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 "));
        assert_eq!(
            header(&headers, gateway_credential::HEADER),
            None,
            "AgentCore needs no guard credential"
        );
        // Not configured, or no reference: nothing is sent, and the call is given back.
        assert!(matches!(
            upstream_call(&target("agentcore", &reference), None, context(true)),
            Err(UpstreamFailure::NotDispatched(_))
        ));
        assert!(matches!(
            upstream_call(&target("agentcore", "nonsense"), Some(&aws), context(true)),
            Err(UpstreamFailure::NotDispatched(_))
        ));
    }
}
