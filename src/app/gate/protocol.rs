//! The `UserGate` wire protocol, shared by the Durable Object and its client: the binding, the one path, and
//! every request and answer as a type. Nothing else names the binding or builds a gate URL.

use crate::domain::entitlements::{Entitlements, Overrides, Tier};
use crate::domain::period::PeriodKey;
use crate::domain::reservation::GateDecision;
use crate::domain::usage::UsageTotals;
use serde::{Deserialize, Serialize};

/// The Durable Object namespace binding (wrangler.toml `[[durable_objects.bindings]]`).
pub const USER_GATE_BINDING: &str = "USER_GATE";
/// The object's one route: every call is a `GateCall` in the body.
pub const GATE_PATH: &str = "/call";

/// One call to a user's gate. The object is addressed by the internal user id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "op",
    deny_unknown_fields
)]
pub enum GateCall {
    /// Routing, entitlements, quotas, one reservation and the session, for one invocation.
    Admit(AdmitRequest),
    /// Gives back one reservation of the period (a call that certainly never reached the agent).
    Release { period_key: PeriodKey },
    /// The period's count as it stands, with the limit the caller resolved; reserves nothing.
    Peek { period_key: PeriodKey, limit: u64 },
    /// D1 changed underneath: drop the cached facts so the next call reads them again.
    Forget(Forget),
    /// An agent's route is about to change (a deploy going live): read it from D1 on every call until the
    /// write sends `Forget::Agent`, or for `MAX_HOLD_MS` at the most.
    Hold { agent_id: String },
    /// Telemetry was charged, or the gateway's measured compute reached the quota: the user's period totals as D1
    /// holds them after the charge (merged field by field, by maximum).
    Charge {
        period_key: PeriodKey,
        totals: UsageTotals,
    },
}

/// What a write made stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "what", content = "id")]
pub enum Forget {
    /// Tier or entitlement overrides changed.
    User,
    /// The agent's status, existence or active deployment changed.
    Agent(String),
    /// An API key was revoked.
    Key(String),
    /// Everything (an operator saying the object is stale after editing D1 by hand).
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmitRequest {
    pub agent_id: String,
    /// The API key the call presented (its id; the key itself was matched by hash in the worker).
    #[serde(default)]
    pub key_id: Option<String>,
    pub streaming: bool,
    pub period_key: PeriodKey,
    /// The client's session id, already validated; `None` starts a new session.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// The gate's answer to `Admit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// The active deployment, when the agent has one (also on refusals: metering records it).
    pub deployment_id: Option<String>,
    pub verdict: Verdict,
    /// Whether the facts came from D1 on this call (cold object or stale facts); for `Server-Timing`.
    pub loaded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Verdict {
    Granted(Box<Granted>),
    Refused(Refusal),
}

/// An admitted call: one request reserved, the session resolved, and where to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Granted {
    pub decision: GateDecision,
    pub route: AgentRoute,
    pub session_id: String,
    pub runtime_session_id: String,
    /// Per-invocation limits for the dispatch namespace binding.
    pub cpu_ms: u64,
    pub subrequests: u64,
    /// The period's `computeMsPerPeriod`: once the gateway's measured compute reaches it, the gateway tells the
    /// gate (an ordinary call's measure reaches the gate with its facts' next read).
    #[serde(default)]
    pub compute_ms_limit: u64,
}

/// Why a call was refused before any request was reserved (or, for `LimitExceeded`, because none was left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "reason"
)]
pub enum Refusal {
    /// The key is unknown to this user or revoked.
    InvalidApiKey,
    AgentNotFound,
    AgentDisabled,
    NoActiveDeployment,
    RuntimeNotEntitled {
        provider: String,
    },
    StreamingNotEntitled,
    QuotaExhausted {
        usage: UsageTotals,
        entitlements: Box<Entitlements>,
    },
    LimitExceeded {
        decision: GateDecision,
    },
}

/// The facts an invocation is decided on, as D1 holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserFacts {
    pub tier: Tier,
    pub overrides: Overrides,
}

/// Where an agent's calls go: its status and its active deployment (only one that is `active`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRoute {
    pub agent_id: String,
    pub enabled: bool,
    pub deployment: Option<DeploymentTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentTarget {
    pub deployment_id: String,
    pub deploy_target: String,
    pub script_name: String,
    pub invoke_path: String,
    pub provider_ref: String,
    pub runtime_provider: String,
    /// The key the gateway signs calls to this deployment with, still sealed (`domain::gateway_credential`);
    /// `None` for a deployment made before the guard existed.
    #[serde(default)]
    pub gateway_secret_sealed: Option<String>,
}

/// An API key as the gate needs it: whether it still works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFacts {
    pub key_id: String,
    pub revoked: bool,
}

/// One read of D1 for what the gate is missing: the user (`None` if no such user), the agent (`None` if the
/// user has no such live agent), the key (`None` if not theirs), and the period's charged totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadedFacts {
    pub user: Option<UserFacts>,
    pub agent: Option<AgentRoute>,
    pub key: Option<KeyFacts>,
    pub usage: UsageTotals,
}
