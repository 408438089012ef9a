//! Entitlements: what a user may do in a billing period. A user's entitlements are their tier's defaults, then
//! the operator's per-tier overrides from configuration (`TIER_ENTITLEMENTS`), then the operator's per-user
//! overrides (admin API), each later layer replacing single fields of the one before.

use super::error::ApiError;
use crate::domain::patch::double_option;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Runtime providers an entitlement may name. This control plane deploys `cloudflare` agents; `agentcore` is
/// accepted so operators can grant it ahead of its runtime adapter.
pub const KNOWN_RUNTIME_PROVIDERS: &[&str] = &["cloudflare", "agentcore"];

/// Upper bounds on any configured value, so a typo cannot produce a limit that overflows arithmetic downstream.
const MAX_COUNTER: u64 = 1_000_000_000_000;
/// Cloudflare's own ceiling for a Worker invocation's CPU time (5 minutes).
const MAX_CPU_MS: u64 = 300_000;
const MAX_SUBREQUESTS: u64 = 10_000;
/// The most code one deployment may have (`domain::bundle::MAX_TOTAL_BYTES`), whatever the tier.
const MAX_BUNDLE_BYTES: u64 = crate::domain::bundle::MAX_TOTAL_BYTES as u64;
/// The least: no real agent is smaller, and a tiny limit would only be a typo.
const MIN_BUNDLE_BYTES: u64 = 64 * 1024;

/// Pricing tiers; each has default entitlements (`entitlements`). New users start on `free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    /// A tier named by an operator (admin API).
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_stored(value).ok()
    }

    pub fn parse_stored(value: &str) -> Result<Self, ApiError> {
        match value {
            "free" => Ok(Tier::Free),
            "pro" => Ok(Tier::Pro),
            "enterprise" => Ok(Tier::Enterprise),
            other => Err(ApiError::internal(format!(
                "unknown tier in storage: {other:?}"
            ))),
        }
    }
}

/// Calls `$apply!` with every entitlement field name: the one list the layering code walks.
macro_rules! each_entitlement {
    ($apply:ident) => {
        $apply!(
            requests_per_period,
            tokens_per_period,
            compute_ms_per_period,
            max_agents,
            runtime_providers,
            cpu_ms_per_invocation,
            subrequests_per_invocation,
            streaming,
            deploys_per_hour,
            deploys_in_flight,
            live_scripts,
            bundle_bytes
        )
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlements {
    /// Invocations per billing period (enforced by the `UserGate` before the runtime is called).
    pub requests_per_period: u64,
    /// Input plus output tokens per billing period (charged from telemetry).
    pub tokens_per_period: u64,
    /// Agent compute milliseconds per billing period (charged from telemetry).
    pub compute_ms_per_period: u64,
    /// Live (not deleted) agents at once.
    pub max_agents: u64,
    /// Runtime providers the user may deploy to and invoke.
    pub runtime_providers: Vec<String>,
    /// CPU limit of one invocation in dispatch-namespace mode (the dispatch binding's `limits.cpuMs`).
    pub cpu_ms_per_invocation: u64,
    /// Subrequest limit of one invocation in dispatch-namespace mode (`limits.subRequests`).
    pub subrequests_per_invocation: u64,
    /// Whether the SSE endpoint may be used.
    pub streaming: bool,
    /// Deploys started in any hour (each costs several Cloudflare API calls, shared by every tenant).
    pub deploys_per_hour: u64,
    /// Deploys running at once.
    pub deploys_in_flight: u64,
    /// Scripts kept on the provider at once (active ones and those kept for rollback).
    pub live_scripts: u64,
    /// Bytes of one deployment's code, every module together (Cloudflare's own Worker size limit is lower on its
    /// free plan than on paid ones). Defaulted for entitlements cached before it existed.
    #[serde(default = "max_bundle_bytes")]
    pub bundle_bytes: u64,
}

fn max_bundle_bytes() -> u64 {
    MAX_BUNDLE_BYTES
}

impl Entitlements {
    /// The documented defaults (README, "Tiers and entitlements").
    pub fn tier_default(tier: Tier) -> Self {
        let providers = |list: &[&str]| list.iter().map(|p| p.to_string()).collect();
        match tier {
            Tier::Free => Entitlements {
                requests_per_period: 1_000,
                tokens_per_period: 200_000,
                compute_ms_per_period: 600_000,
                max_agents: 3,
                runtime_providers: providers(&["cloudflare"]),
                cpu_ms_per_invocation: 50,
                subrequests_per_invocation: 50,
                streaming: true,
                deploys_per_hour: 30,
                deploys_in_flight: 2,
                live_scripts: 20,
                bundle_bytes: 3 * 1024 * 1024,
            },
            Tier::Pro => Entitlements {
                requests_per_period: 100_000,
                tokens_per_period: 20_000_000,
                compute_ms_per_period: 36_000_000,
                max_agents: 50,
                runtime_providers: providers(&["cloudflare", "agentcore"]),
                cpu_ms_per_invocation: 1_000,
                subrequests_per_invocation: 200,
                streaming: true,
                deploys_per_hour: 300,
                deploys_in_flight: 5,
                live_scripts: 300,
                bundle_bytes: MAX_BUNDLE_BYTES,
            },
            Tier::Enterprise => Entitlements {
                requests_per_period: 10_000_000,
                tokens_per_period: 2_000_000_000,
                compute_ms_per_period: 3_600_000_000,
                max_agents: 1_000,
                runtime_providers: providers(&["cloudflare", "agentcore"]),
                cpu_ms_per_invocation: 30_000,
                subrequests_per_invocation: 1_000,
                streaming: true,
                deploys_per_hour: 3_000,
                deploys_in_flight: 20,
                live_scripts: 5_000,
                bundle_bytes: MAX_BUNDLE_BYTES,
            },
        }
    }

    pub fn allows_runtime(&self, provider: &str) -> bool {
        self.runtime_providers.iter().any(|p| p == provider)
    }

    /// The refusal when `provider` is not among the user's runtimes (checked on deploy and again on invoke).
    pub fn require_runtime(&self, provider: &str) -> Result<(), ApiError> {
        if self.allows_runtime(provider) {
            Ok(())
        } else {
            Err(runtime_not_entitled(provider))
        }
    }

    fn apply(&mut self, o: &Overrides) {
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = &o.$field { self.$field = v.clone(); } )* };
        }
        each_entitlement!(take);
    }
}

/// The refusal for a runtime provider the caller's plan does not include.
pub fn runtime_not_entitled(provider: &str) -> ApiError {
    not_entitled(
        "runtimeProviders",
        format!("Your plan does not include the {provider:?} runtime."),
    )
}

/// The refusal for something the caller's plan does not include.
pub fn not_entitled(entitlement: &str, message: String) -> ApiError {
    ApiError::new(super::ErrorCode::NotEntitled, message)
        .with_details(serde_json::json!({ "entitlement": entitlement }))
}

/// A set of field replacements; absent fields leave the layer below alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_ms_per_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_providers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_invocation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subrequests_per_invocation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploys_per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploys_in_flight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_scripts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_bytes: Option<u64>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }

    /// Checks bounds; `field_prefix` names where the value came from in the error.
    pub fn check(&self, field_prefix: &str) -> Result<(), ApiError> {
        let bounded = |name: &str, value: Option<u64>, max: u64, min: u64| match value {
            Some(v) if v < min || v > max => Err(ApiError::validation(
                &format!("{field_prefix}{name}"),
                format!("must be an integer from {min} to {max}"),
            )),
            _ => Ok(()),
        };
        bounded(
            "requestsPerPeriod",
            self.requests_per_period,
            MAX_COUNTER,
            0,
        )?;
        bounded("tokensPerPeriod", self.tokens_per_period, MAX_COUNTER, 0)?;
        bounded(
            "computeMsPerPeriod",
            self.compute_ms_per_period,
            MAX_COUNTER,
            0,
        )?;
        bounded("maxAgents", self.max_agents, 1_000_000, 0)?;
        bounded("deploysPerHour", self.deploys_per_hour, 1_000_000, 0)?;
        bounded("deploysInFlight", self.deploys_in_flight, 10_000, 0)?;
        bounded("liveScripts", self.live_scripts, 1_000_000, 0)?;
        bounded(
            "bundleBytes",
            self.bundle_bytes,
            MAX_BUNDLE_BYTES,
            MIN_BUNDLE_BYTES,
        )?;
        bounded(
            "cpuMsPerInvocation",
            self.cpu_ms_per_invocation,
            MAX_CPU_MS,
            1,
        )?;
        bounded(
            "subrequestsPerInvocation",
            self.subrequests_per_invocation,
            MAX_SUBREQUESTS,
            1,
        )?;
        if let Some(providers) = &self.runtime_providers {
            if let Some(bad) = providers
                .iter()
                .find(|p| !KNOWN_RUNTIME_PROVIDERS.contains(&p.as_str()))
            {
                return Err(ApiError::validation(
                    &format!("{field_prefix}runtimeProviders"),
                    format!(
                        "unknown runtime provider {bad:?}; known: {}",
                        KNOWN_RUNTIME_PROVIDERS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Per-tier overrides from `TIER_ENTITLEMENTS`, e.g. `{"free":{"requestsPerPeriod":100}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierOverrides {
    #[serde(default)]
    pub free: Overrides,
    #[serde(default)]
    pub pro: Overrides,
    #[serde(default)]
    pub enterprise: Overrides,
}

impl TierOverrides {
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(TierOverrides::default());
        };
        let parsed: TierOverrides =
            serde_json::from_str(raw).map_err(|e| format!("TIER_ENTITLEMENTS: {e}"))?;
        for (tier, o) in [
            ("free", &parsed.free),
            ("pro", &parsed.pro),
            ("enterprise", &parsed.enterprise),
        ] {
            o.check(&format!("{tier}.")).map_err(|e| {
                let field = e.details.as_ref().map(|d| d["field"].to_string());
                format!(
                    "TIER_ENTITLEMENTS {}: {}",
                    field.unwrap_or_default(),
                    e.message
                )
            })?;
        }
        Ok(parsed)
    }

    fn for_tier(&self, tier: Tier) -> &Overrides {
        match tier {
            Tier::Free => &self.free,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }

    /// A user's effective entitlements.
    pub fn resolve(&self, tier: Tier, user: &Overrides) -> Entitlements {
        let mut e = Entitlements::tier_default(tier);
        e.apply(self.for_tier(tier));
        e.apply(user);
        e
    }
}

/// `PUT /v1/admin/users/{userId}/entitlements` body: each field sets (a value) or clears (`null`) one per-user
/// override; fields not mentioned are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OverridesChange {
    #[serde(default, deserialize_with = "double_option")]
    pub requests_per_period: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub tokens_per_period: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub compute_ms_per_period: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub max_agents: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub runtime_providers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub cpu_ms_per_invocation: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub subrequests_per_invocation: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub streaming: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    pub deploys_per_hour: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub deploys_in_flight: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub live_scripts: Option<Option<u64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub bundle_bytes: Option<Option<u64>>,
}

impl OverridesChange {
    /// Parses and validates a change body; an empty object is refused (it would change nothing).
    pub fn from_json(body: Value) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::new(
                super::ErrorCode::InvalidBody,
                "The body must be a JSON object of entitlement names to values or null.",
            ));
        }
        let change: OverridesChange = serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                super::ErrorCode::InvalidBody,
                format!("Invalid entitlements: {e}"),
            )
        })?;
        if change == OverridesChange::default() {
            return Err(ApiError::new(
                super::ErrorCode::InvalidBody,
                "Name at least one entitlement to set or clear.",
            ));
        }
        Ok(change)
    }

    /// The user's overrides after this change, validated.
    pub fn apply_to(&self, current: &Overrides) -> Result<Overrides, ApiError> {
        let mut next = current.clone();
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { next.$field = v.clone(); } )* };
        }
        each_entitlement!(set);
        next.check("")?;
        Ok(next)
    }
}

/// Stored per-user overrides (`users.entitlements_json`); `None`/empty means none.
pub fn parse_stored_overrides(raw: Option<&str>) -> Result<Overrides, ApiError> {
    match raw {
        None | Some("") => Ok(Overrides::default()),
        Some(raw) => serde_json::from_str(raw)
            .map_err(|e| ApiError::internal(format!("stored entitlement overrides: {e}"))),
    }
}

#[cfg(test)]
mod tests;
