//! The invocation use-case around the agent call. `prepare`: the caller (resolved by the worker from its
//! caches) → the key's agent scope → one call to the user's gate, which checks routing, entitlements and quotas,
//! reserves one request and resolves the session. `settle`: the counting policy and the metering row.
//!
//! Counting policy: a call takes one request of the period when the gate grants it, before the agent is
//! called. Calls refused earlier (bad input, unknown agent, disabled agent, no active deployment, not entitled,
//! token or compute quota spent, over the limit) never take one. A granted reservation is given back when the
//! call then certainly failed before the agent ran (nothing to dispatch to). Once the agent may have started
//! work — any answer, a rejection, a broken connection, a timeout, a broken stream, a client that went away —
//! it counts.

use super::gate::protocol::{Admission, AdmitRequest, DeploymentTarget, Granted, Refusal, Verdict};
use crate::domain::entitlements::{not_entitled, runtime_not_entitled};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::invoke::{AnswerUsage, InvokeRequest, UpstreamFailure};
use crate::domain::period::PeriodKey;
use crate::domain::reservation::GateDecision;
use crate::domain::usage::check_quotas;
use crate::domain::{ApiError, ErrorCode};
use serde_json::json;

/// Who is calling, as the worker resolved them.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// A user's identity-provider token.
    Token { user_id: UserId },
    /// An API key, matched by its hash.
    Key(KeyHolder),
}

/// What never changes about an API key once issued (so the worker may cache it): whose it is and which agent
/// it may invoke. Whether it still works is the gate's to say.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyHolder {
    pub key_id: String,
    pub user_id: UserId,
    pub agent_scope: Option<String>,
}

impl Caller {
    pub fn user_id(&self) -> &UserId {
        match self {
            Caller::Token { user_id } => user_id,
            Caller::Key(k) => &k.user_id,
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Token { .. } => None,
            Caller::Key(k) => Some(&k.key_id),
        }
    }
}

/// The user's gate, as the invocation sees it (the typed Durable Object client implements it).
#[allow(async_fn_in_trait)]
pub trait InvokeGate {
    async fn admit(&self, user: &UserId, request: &AdmitRequest) -> Result<Admission, String>;
    async fn release(&self, user: &UserId, period: PeriodKey) -> Result<GateDecision, String>;
}

/// A call the gate admitted: one request reserved, the session resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub granted: Granted,
    pub deployment: DeploymentTarget,
    /// Whether the gate read D1 for this call (reported in `Server-Timing`).
    pub gate_loaded: bool,
}

/// A call refused before the agent: the error, and, when the gate found the caller's agent, the deployment it
/// would have gone to. Only refusals of a found agent are metered (a metering row names an agent of the
/// caller's, never an id someone sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub error: ApiError,
    pub agent_found: bool,
    pub deployment_id: Option<String>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused {
            error,
            agent_found: false,
            deployment_id: None,
        }
    }
}

pub fn invalid_api_key() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidApiKey,
        "The API key is not valid (unknown, malformed or revoked).",
    )
}

/// The gate (or another store the call needs) could not be asked: fail closed, nothing was reserved.
pub fn gate_unavailable(cause: String) -> ApiError {
    ApiError::unavailable(
        "The request gate is unavailable; the call was not made. Retry shortly.",
        format!("request gate: {cause}"),
    )
}

pub async fn prepare(
    gate: &impl InvokeGate,
    caller: &Caller,
    agent: &AgentId,
    request: &InvokeRequest,
    streaming: bool,
    period: PeriodKey,
    now: i64,
) -> Result<Admitted, Refused> {
    // A key scoped to one agent answers for that agent only; checked before anything is looked up, so it tells
    // nothing about other agents.
    if let Caller::Key(key) = caller {
        if key
            .agent_scope
            .as_deref()
            .is_some_and(|s| s != agent.as_str())
        {
            return Err(ApiError::new(
                ErrorCode::ApiKeyScopeMismatch,
                "This API key may only invoke the agent it was created for.",
            )
            .with_details(json!({ "keyId": key.key_id }))
            .into());
        }
    }
    let admit = AdmitRequest {
        agent_id: agent.as_str().to_owned(),
        key_id: caller.key_id().map(str::to_owned),
        streaming,
        period_key: period,
        session_id: request.session_id.clone(),
    };
    let admission = gate
        .admit(caller.user_id(), &admit)
        .await
        .map_err(gate_unavailable)?;
    let deployment_id = admission.deployment_id;
    match admission.verdict {
        Verdict::Refused(refusal) => Err(Refused {
            agent_found: !matches!(refusal, Refusal::InvalidApiKey | Refusal::AgentNotFound),
            error: refusal_error(refusal, period, now),
            deployment_id,
        }),
        Verdict::Granted(granted) => {
            let deployment =
                granted.route.deployment.clone().ok_or_else(|| {
                    ApiError::internal("the gate granted a call with no deployment")
                })?;
            Ok(Admitted {
                granted: *granted,
                deployment,
                gate_loaded: admission.loaded,
            })
        }
    }
}

/// The client's error for a gate refusal.
pub fn refusal_error(refusal: Refusal, period: PeriodKey, now: i64) -> ApiError {
    match refusal {
        Refusal::InvalidApiKey => invalid_api_key(),
        Refusal::AgentNotFound => ApiError::agent_not_found(),
        Refusal::AgentDisabled => ApiError::new(
            ErrorCode::AgentDisabled,
            "This agent is disabled; enable it to invoke it.",
        ),
        Refusal::NoActiveDeployment => ApiError::new(
            ErrorCode::NoActiveDeployment,
            "This agent has no active deployment. Deploy it (or activate a deployment) first.",
        ),
        Refusal::RuntimeNotEntitled { provider } => runtime_not_entitled(&provider),
        Refusal::StreamingNotEntitled => not_entitled(
            "streaming",
            "Your plan does not include streaming; use POST /v1/invoke/{agentId}.".into(),
        ),
        Refusal::QuotaExhausted {
            usage,
            entitlements,
        } => check_quotas(&usage, &entitlements, period, now)
            .err()
            .unwrap_or_else(|| ApiError::internal("the gate refused a quota that is not spent")),
        Refusal::LimitExceeded { decision } => ApiError::new(
            ErrorCode::RequestLimitExceeded,
            format!(
                "You have used all {} requests of period {}; the count resets at the start of the next period.",
                decision.limit, decision.period_key
            ),
        )
        .with_details(json!({
            "entitlement": "requestsPerPeriod",
            "limit": decision.limit,
            "periodKey": decision.period_key.to_string(),
            "resetsAt": decision.resets_at_ms,
        }))
        .with_headers(rate_limit_headers(&decision, now)),
    }
}

/// `X-RateLimit-*` (and, when refused, `Retry-After`) from the gate's decision.
pub fn rate_limit_headers(d: &GateDecision, now_ms: i64) -> Vec<(&'static str, String)> {
    let reset_s = (d.resets_at_ms + 999) / 1000;
    let mut headers = vec![
        ("X-RateLimit-Limit", d.limit.to_string()),
        ("X-RateLimit-Remaining", d.remaining.to_string()),
        ("X-RateLimit-Reset", reset_s.to_string()),
    ];
    if !d.granted {
        let wait_s = ((d.resets_at_ms - now_ms).max(0) + 999) / 1000;
        headers.push(("Retry-After", wait_s.max(1).to_string()));
    }
    headers
}

/// Whether a failed call gives its request back: only when it certainly never reached the agent. A broken
/// connection may have broken after the agent started, and a rejection came from the agent: both count.
pub fn gives_back(failure: &UpstreamFailure) -> bool {
    matches!(failure, UpstreamFailure::NotDispatched(_))
}

/// The client's view of what is left once a request was given back.
pub fn given_back(d: &GateDecision) -> GateDecision {
    GateDecision {
        used: d.used.saturating_sub(1),
        remaining: d.remaining + 1,
        ..*d
    }
}

/// Gateway-side metering of one call, written once its outcome is known (`invocations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub trace_id: String,
    pub request_id: String,
    pub user_id: String,
    pub agent_id: String,
    pub deployment_id: Option<String>,
    pub api_key_id: Option<String>,
    pub period: PeriodKey,
    pub streaming: bool,
    pub started_at: i64,
    /// The admission's `computeMsPerPeriod` (0 for a refused call, which is never charged).
    pub compute_ms_limit: u64,
    /// For a refused call: the earlier refusals of the user that were only counted, not written (this row
    /// stands for them too). `None` for a call that was not refused.
    pub suppressed: Option<u64>,
    /// When the call was forwarded to the agent: what the measured compute counts from.
    pub forwarded_at: Option<i64>,
}

/// Rows of refused calls written per user, per minute and isolate; past that, refusals are only counted and the
/// next row written carries the count. A caller hammering a spent quota costs a bounded number of D1 writes.
pub const REFUSED_ROWS_PER_MINUTE: u32 = 10;

/// One metering row.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation<'a> {
    pub meter: &'a Meter,
    pub outcome: &'a str,
    pub upstream_status: Option<u16>,
    pub counted: bool,
    /// From the call's start to its answer's last byte (or to when the client went away).
    pub wall_ms: i64,
    /// From forwarding the call to the agent to the same end: what the gateway charges.
    pub measured_ms: i64,
    /// The token counts the agent's answer carried in `usage`.
    pub answer_usage: Option<AnswerUsage>,
    /// Whether this is the call's last write. A stream's row written as it starts is provisional: only the
    /// last write charges the measured compute, so a call is charged once.
    pub last_write: bool,
}

impl Meter {
    pub fn row<'a>(
        &'a self,
        outcome: &'a str,
        upstream_status: Option<u16>,
        counted: bool,
        now: i64,
    ) -> Invocation<'a> {
        Invocation {
            meter: self,
            outcome,
            upstream_status,
            counted,
            wall_ms: (now - self.started_at).max(0),
            measured_ms: (now - self.forwarded_at.unwrap_or(self.started_at)).max(0),
            answer_usage: None,
            last_write: true,
        }
    }
}

impl Invocation<'_> {
    pub fn with_usage(self, answer_usage: Option<AnswerUsage>) -> Self {
        Invocation {
            answer_usage,
            ..self
        }
    }

    pub fn provisional(self) -> Self {
        Invocation {
            last_write: false,
            ..self
        }
    }

    /// The compute this write adds to the user's measured total for the period: a counted call's time from
    /// forwarding to its end, once. Calls that never reached the agent (refused, given back) are not charged.
    pub fn measured_charge_ms(&self) -> Option<i64> {
        (self.last_write && self.counted).then_some(self.measured_ms)
    }

    /// Whether the user's gate must hear of the measured total now (`total` after this write): once it reaches
    /// the quota, so the next call is refused. Below it, the gate picks the total up with its facts' next read.
    pub fn must_tell_gate(&self, total_ms: u64) -> bool {
        total_ms >= self.meter.compute_ms_limit
    }
}

/// How long past the relay's own silence limit a stream may go without forwarding a byte before metering takes
/// it as abandoned by its client (a live relay forwards, or ends with `upstream_timeout`, within the limit).
const ABANDON_GRACE_MS: i64 = 2_000;

/// After how long without a forwarded byte a stream relayed with `timeout_ms` is abandoned.
pub fn abandoned_after_ms(timeout_ms: u64) -> i64 {
    timeout_ms as i64 + ABANDON_GRACE_MS
}

/// Whether a stream that last forwarded at `last_forward_ms` is abandoned at `now`.
pub fn stream_abandoned(last_forward_ms: i64, now: i64, idle_limit_ms: i64) -> bool {
    now - last_forward_ms >= idle_limit_ms
}

/// How a stream that ended is recorded.
pub fn stream_outcome(outcome: Option<crate::domain::sse::StreamOutcome>) -> String {
    use crate::domain::sse::StreamOutcome;
    match outcome {
        Some(StreamOutcome::Done) => "ok".into(),
        Some(StreamOutcome::AgentError) => ErrorCode::AgentError.as_str().into(),
        Some(StreamOutcome::Failed(code)) => code.as_str().into(),
        None => "client_closed".into(),
    }
}

#[cfg(test)]
mod tests;
