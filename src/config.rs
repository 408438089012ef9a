//! The worker's configuration, parsed once from its variables and secrets. Anything unreadable is an error
//! reported on the first request, never a silently permissive default.

use crate::app::billing::BillingConfig;
use crate::auth::AuthConfig;
use crate::aws::agentcore::{AgentCoreTarget, Lifecycle, LIFECYCLE_RANGE_S};
use crate::aws::sigv4::Credentials;
use crate::cloudflare::api::DeployTarget;
use crate::crypto::keyring::Keyring;
use crate::crypto::secret_box::EncryptionKey;
use crate::domain::billing::plan::Prices;
use crate::domain::billing::signature::DEFAULT_TOLERANCE_S;
use crate::domain::dashboard_sign_in::SignIn;
use crate::domain::entitlements::TierOverrides;
use crate::domain::rate_limit::Rate;
use crate::domain::usage::{DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS};
use crate::http::cors::CorsPolicy;
use crate::stripe::api::DEFAULT_API_BASE_URL as DEFAULT_STRIPE_API_BASE_URL;

/// A variable's value, trimmed; `None` when it is unset or blank (blank means "not configured" everywhere).
pub fn nonempty_var(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

pub struct ServiceConfig {
    pub auth: AuthConfig,
    pub cors: CorsPolicy,
    /// `None` when no deploy target is configured: deploy and secret routes then answer 503
    /// `deploys_not_configured`; everything else works.
    pub deploy: Option<DeployConfig>,
    /// Test-only routes (e.g. one that panics, to prove crashes become clean 500s). Off unless
    /// `ENABLE_DEBUG_ROUTES` is exactly `true`; never set it in production.
    pub debug_routes: bool,
    /// Operator overrides of the tiers' default entitlements (`TIER_ENTITLEMENTS`).
    pub tiers: TierOverrides,
    /// The operator API's bearer token (`ADMIN_TOKEN`); `None` turns `/v1/admin/…` off (503).
    pub admin_token: Option<String>,
    /// How long the gateway waits for an agent's answer, or for the next bytes of its stream.
    pub invoke_timeout_ms: u64,
    /// Days a period's raw telemetry events are kept after the period ends (then pruned, once rolled up).
    pub metrics_retention_days: u32,
    /// Days gateway metering rows (`invocations`) are kept.
    pub invocations_retention_days: u32,
    /// Days audited telemetry rejects are kept.
    pub rejects_retention_days: u32,
    /// Requests without a user's token, per client address (`UNAUTHENTICATED_RATE_LIMIT`, burst/per second).
    pub unauthenticated_rate: Rate,
    /// Telemetry reports per claimed deployment (`TELEMETRY_RATE_LIMIT`).
    pub telemetry_rate: Rate,
    /// Read unread request bodies to their end before answering (`DRAIN_UNREAD_BODIES=true`): what keeps
    /// `wrangler dev` alive; off in production.
    pub drain_unread_bodies: bool,
    /// How the dashboard signs people in (`DASHBOARD_CLERK_PUBLISHABLE_KEY`); `None`: the dashboard says sign-in
    /// is not configured.
    pub dashboard_sign_in: Option<SignIn>,
    /// Days audit rows are kept (`AUDIT_RETENTION_DAYS`).
    pub audit_retention_days: u32,
    /// Days finished billing events (their payloads hold customer data) are kept (`BILLING_EVENTS_RETENTION_DAYS`).
    pub billing_events_retention_days: u32,
    /// Billing with Stripe (`STRIPE_SECRET_KEY` and what it needs); `None`: billing routes answer 503.
    pub billing: Option<BillingConfig>,
}

pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 30_000;
/// Operator tokens shorter than this are refused: the admin API must not be guessable.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// How agents are deployed: the Cloudflare API and where their telemetry goes.
pub struct DeployConfig {
    pub target: DeployTarget,
    pub target_name: &'static str,
    /// `https://api.cloudflare.com/client/v4` unless overridden (the local Cloudflare in development).
    pub api_base_url: String,
    pub api_token: String,
    /// `TELEMETRY_SECRETS_ENCRYPTION_KEY` (seals), with `PREVIOUS_ENCRYPTION_KEYS` (open what they sealed).
    pub encryption_key: Keyring,
    pub telemetry_report_url: String,
    /// workers_dev only: where a script answers, with `{script}` standing for its name.
    pub workers_dev_url_template: Option<String>,
    pub default_compatibility_date: String,
    /// The second runtime (`AGENTCORE_REGION` and what it needs); `None`: `agentcore` deploys are refused.
    pub agentcore: Option<AgentCoreTarget>,
}

/// Reads the AgentCore settings. Unset `AGENTCORE_REGION` means AgentCore is off (`Ok(None)`); once it is set,
/// everything it needs is required and checked.
pub fn agentcore_from_vars(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<AgentCoreTarget>, String> {
    let nonempty = |name: &str| nonempty_var(get, name);
    let Some(region) = nonempty("AGENTCORE_REGION") else {
        return Ok(None);
    };
    let require = |name: &str| {
        nonempty(name).ok_or_else(|| format!("{name} is required when AGENTCORE_REGION is set"))
    };
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("AGENTCORE_REGION is not a region: {region:?}"));
    }
    let account_id = require("AGENTCORE_ACCOUNT_ID")?;
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err("AGENTCORE_ACCOUNT_ID must be a 12-digit AWS account id".into());
    }
    let execution_role_arn = require("AGENTCORE_EXECUTION_ROLE_ARN")?;
    let mut allowed_role_arns = vec![execution_role_arn.clone()];
    allowed_role_arns.extend(
        nonempty("AGENTCORE_ALLOWED_ROLE_ARNS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
    );
    // Every role runtimes may run as is in the platform's own account: a deploy never picks another account's.
    for role in &allowed_role_arns {
        let in_account = role
            .split_once(":iam::")
            .is_some_and(|(_, rest)| rest.starts_with(&format!("{account_id}:role/")));
        if !crate::aws::agentcore::is_role_arn(role) || !in_account {
            return Err(format!(
                "{role:?} (AGENTCORE_EXECUTION_ROLE_ARN, AGENTCORE_ALLOWED_ROLE_ARNS) must be an IAM role ARN in \
                 account {account_id}"
            ));
        }
    }
    // Every runtime version's lifecycle, when the operator sets it: seconds within AgentCore's bounds.
    let lifecycle_seconds = |name: &str| -> Result<Option<u32>, String> {
        nonempty(name)
            .map(|raw| {
                raw.parse::<u32>()
                    .ok()
                    .filter(|s| LIFECYCLE_RANGE_S.contains(s))
                    .ok_or_else(|| format!("{name} must be a number of seconds from 60 to 28800"))
            })
            .transpose()
    };
    let lifecycle = Lifecycle {
        idle_session_timeout_s: lifecycle_seconds("AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS")?,
        max_lifetime_s: lifecycle_seconds("AGENTCORE_MAX_LIFETIME_SECONDS")?,
    };
    if let (Some(idle), Some(max)) = (lifecycle.idle_session_timeout_s, lifecycle.max_lifetime_s) {
        if idle > max {
            return Err(
                "AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS may not exceed AGENTCORE_MAX_LIFETIME_SECONDS".into(),
            );
        }
    }
    // Plain HTTP only to this machine (the local AgentCore); anything else is signed over TLS.
    let url = |name: &str, default: String| -> Result<String, String> {
        let url = nonempty(name).unwrap_or(default);
        let local = ["http://127.0.0.1:", "http://localhost:"]
            .iter()
            .any(|p| url.starts_with(p));
        if url.starts_with("https://") || local {
            Ok(url.trim_end_matches('/').to_owned())
        } else {
            Err(format!("{name} must be an https URL"))
        }
    };
    Ok(Some(AgentCoreTarget {
        control_url: url(
            "AGENTCORE_CONTROL_URL",
            format!("https://bedrock-agentcore-control.{region}.amazonaws.com"),
        )?,
        data_url: url(
            "AGENTCORE_DATA_URL",
            format!("https://bedrock-agentcore.{region}.amazonaws.com"),
        )?,
        region,
        account_id,
        execution_role_arn,
        allowed_role_arns,
        allowed_image_prefixes: nonempty("AGENTCORE_ALLOWED_IMAGE_PREFIXES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        lifecycle,
        credentials: Credentials {
            access_key_id: require("AWS_ACCESS_KEY_ID")?,
            secret_access_key: require("AWS_SECRET_ACCESS_KEY")?,
            session_token: nonempty("AWS_SESSION_TOKEN"),
        },
    }))
}

pub const DEFAULT_API_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
pub const DEFAULT_AGENT_COMPATIBILITY_DATE: &str = "2026-07-30";

impl DeployConfig {
    /// Reads `DEPLOY_TARGET` and what it needs. Unset `DEPLOY_TARGET` means deploys are off (`Ok(None)`).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let nonempty = |name: &str| crate::config::nonempty_var(&get, name);
        let require = |name: &str| {
            nonempty(name).ok_or_else(|| format!("{name} is required when DEPLOY_TARGET is set"))
        };
        // The key is checked whenever it is set, so a wrong one fails loudly even before deploys are enabled.
        let key = nonempty("TELEMETRY_SECRETS_ENCRYPTION_KEY")
            .map(|k| {
                EncryptionKey::parse(&k)
                    .map_err(|e| format!("TELEMETRY_SECRETS_ENCRYPTION_KEY: {e}"))
            })
            .transpose()?;
        let previous = nonempty("PREVIOUS_ENCRYPTION_KEYS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .enumerate()
                    .map(|(i, k)| {
                        EncryptionKey::parse(k)
                            .map_err(|e| format!("PREVIOUS_ENCRYPTION_KEYS, key {}: {e}", i + 1))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let Some(target_name) = nonempty("DEPLOY_TARGET") else {
            return Ok(None);
        };
        let account_id = require("CLOUDFLARE_ACCOUNT_ID")?;
        let (target, target_name, workers_dev_url_template) = match target_name.as_str() {
            "dispatch_namespace" => (
                DeployTarget::DispatchNamespace {
                    account_id,
                    namespace: require("DISPATCH_NAMESPACE")?,
                },
                "dispatch_namespace",
                None,
            ),
            "workers_dev" => {
                let template = require("WORKERS_DEV_URL_TEMPLATE")?;
                if !template.contains("{script}") {
                    return Err("WORKERS_DEV_URL_TEMPLATE must contain {script}".into());
                }
                (
                    DeployTarget::WorkersDev { account_id },
                    "workers_dev",
                    Some(template),
                )
            }
            other => {
                return Err(format!(
                    "DEPLOY_TARGET must be dispatch_namespace or workers_dev, not {other:?}"
                ))
            }
        };
        let telemetry_report_url = require("TELEMETRY_REPORT_URL")?;
        if !(telemetry_report_url.starts_with("https://")
            || telemetry_report_url.starts_with("http://"))
        {
            return Err("TELEMETRY_REPORT_URL must be an http(s) URL".into());
        }
        Ok(Some(DeployConfig {
            target,
            target_name,
            api_base_url: nonempty("CLOUDFLARE_API_BASE_URL")
                .unwrap_or_else(|| DEFAULT_API_BASE_URL.into()),
            api_token: require("CLOUDFLARE_API_TOKEN")?,
            encryption_key: Keyring::new(
                key.ok_or(
                    "TELEMETRY_SECRETS_ENCRYPTION_KEY is required when DEPLOY_TARGET is set",
                )?,
                previous,
            ),
            telemetry_report_url,
            workers_dev_url_template,
            default_compatibility_date: nonempty("AGENT_COMPATIBILITY_DATE")
                .unwrap_or_else(|| DEFAULT_AGENT_COMPATIBILITY_DATE.into()),
            agentcore: agentcore_from_vars(&get)?,
        }))
    }

    /// Where the runtime reaches a deployed script: its URL (workers.dev) or `namespace/script`.
    pub fn provider_ref(&self, script: &str) -> String {
        match (&self.target, &self.workers_dev_url_template) {
            (DeployTarget::WorkersDev { .. }, Some(template)) => {
                template.replace("{script}", script)
            }
            (DeployTarget::DispatchNamespace { namespace, .. }, _) => {
                format!("{namespace}/{script}")
            }
            (DeployTarget::WorkersDev { .. }, None) => script.to_owned(),
        }
    }
}

impl ServiceConfig {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        Ok(ServiceConfig {
            auth: AuthConfig::from_vars(&get)?,
            cors: CorsPolicy::parse(get("CORS_ALLOWED_ORIGINS").as_deref())?,
            deploy: DeployConfig::from_vars(&get)?,
            debug_routes: get("ENABLE_DEBUG_ROUTES").as_deref() == Some("true"),
            tiers: TierOverrides::parse(get("TIER_ENTITLEMENTS").as_deref())?,
            admin_token: match get("ADMIN_TOKEN").map(|t| t.trim().to_owned()) {
                None => None,
                Some(t) if t.is_empty() => None,
                Some(t) if t.len() < MIN_ADMIN_TOKEN_LEN => {
                    return Err(format!(
                        "ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LEN} characters"
                    ))
                }
                Some(t) => Some(t),
            },
            invoke_timeout_ms: match get("INVOKE_TIMEOUT_MS").filter(|v| !v.trim().is_empty()) {
                None => DEFAULT_INVOKE_TIMEOUT_MS,
                Some(raw) => match raw.trim().parse::<u64>() {
                    Ok(ms) if (100..=600_000).contains(&ms) => ms,
                    _ => {
                        return Err(format!(
                            "INVOKE_TIMEOUT_MS must be milliseconds from 100 to 600000, not {raw:?}"
                        ))
                    }
                },
            },
            invocations_retention_days: days(&get, "INVOCATIONS_RETENTION_DAYS", 90)?,
            unauthenticated_rate: rate(&get, "UNAUTHENTICATED_RATE_LIMIT", DEFAULT_UNAUTHENTICATED_RATE)?,
            telemetry_rate: rate(&get, "TELEMETRY_RATE_LIMIT", DEFAULT_TELEMETRY_RATE)?,
            drain_unread_bodies: get("DRAIN_UNREAD_BODIES").as_deref() == Some("true"),
            dashboard_sign_in: SignIn::from_vars(&get)?,
            billing: billing_from_vars(&get)?,
            billing_events_retention_days: days(
                &get,
                "BILLING_EVENTS_RETENTION_DAYS",
                crate::app::billing::requests::DEFAULT_EVENTS_RETENTION_DAYS,
            )?,
            audit_retention_days: days(
                &get,
                "AUDIT_RETENTION_DAYS",
                crate::app::audit::DEFAULT_AUDIT_RETENTION_DAYS,
            )?,
            rejects_retention_days: days(&get, "TELEMETRY_REJECTS_RETENTION_DAYS", 30)?,
            metrics_retention_days: match get("METRICS_RETENTION_DAYS").filter(|v| !v.trim().is_empty())
            {
                None => DEFAULT_RETENTION_DAYS,
                Some(raw) => match raw.trim().parse::<u32>() {
                    Ok(days) if (1..=MAX_RETENTION_DAYS).contains(&days) => days,
                    _ => {
                        return Err(format!(
                            "METRICS_RETENTION_DAYS must be whole days from 1 to {MAX_RETENTION_DAYS}, not {raw:?}"
                        ))
                    }
                },
            },
        })
    }
}

pub const DEFAULT_UNAUTHENTICATED_RATE: Rate = Rate {
    burst: 120,
    per_second: 30,
};
pub const DEFAULT_TELEMETRY_RATE: Rate = Rate {
    burst: 600,
    per_second: 100,
};

/// A rate (`<burst>/<per second>`), or `default` when unset.
fn rate(get: &impl Fn(&str) -> Option<String>, name: &str, default: Rate) -> Result<Rate, String> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(raw) => Rate::parse(&raw).ok_or_else(|| {
            format!("{name} must be <burst>/<per second>, both at least 1, not {raw:?}")
        }),
    }
}

/// A retention in whole days (1 to `MAX_RETENTION_DAYS`), or `default` when unset.
fn days(get: &impl Fn(&str) -> Option<String>, name: &str, default: u32) -> Result<u32, String> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_RETENTION_DAYS).contains(d))
            .ok_or_else(|| {
                format!("{name} must be whole days from 1 to {MAX_RETENTION_DAYS}, not {raw:?}")
            }),
    }
}

/// Reads billing's settings. Unset `STRIPE_SECRET_KEY` means billing is off (`Ok(None)`); set, everything it
/// needs must be there and well-formed, or every request fails with the reason logged.
pub fn billing_from_vars(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<BillingConfig>, String> {
    let nonempty = |name: &str| nonempty_var(&get, name);
    let Some(secret_key) = nonempty("STRIPE_SECRET_KEY") else {
        return Ok(None);
    };
    if !["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
        .iter()
        .any(|p| secret_key.starts_with(p))
    {
        return Err(
            "STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_… or rk_…)".into(),
        );
    }
    let webhook_secrets: Vec<String> = nonempty("STRIPE_WEBHOOK_SECRETS")
        .ok_or("STRIPE_WEBHOOK_SECRETS is required with STRIPE_SECRET_KEY")?
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if webhook_secrets.is_empty() || webhook_secrets.iter().any(|s| !s.starts_with("whsec_")) {
        return Err(
            "STRIPE_WEBHOOK_SECRETS must be whsec_… signing secrets, comma-separated".into(),
        );
    }
    let prices = Prices {
        pro: nonempty("STRIPE_PRICE_PRO"),
        enterprise: nonempty("STRIPE_PRICE_ENTERPRISE"),
    };
    let priced = [&prices.pro, &prices.enterprise];
    if priced.iter().all(|p| p.is_none()) {
        return Err(
            "set STRIPE_PRICE_PRO and/or STRIPE_PRICE_ENTERPRISE with STRIPE_SECRET_KEY".into(),
        );
    }
    if priced
        .iter()
        .flat_map(|p| p.iter())
        .any(|p| !p.starts_with("price_"))
    {
        return Err(
            "STRIPE_PRICE_PRO and STRIPE_PRICE_ENTERPRISE must be Stripe price ids (price_…)"
                .into(),
        );
    }
    let return_url = nonempty("BILLING_RETURN_URL")
        .ok_or("BILLING_RETURN_URL is required with STRIPE_SECRET_KEY")?;
    if !(return_url.starts_with("https://") || return_url.starts_with("http://")) {
        return Err("BILLING_RETURN_URL must be an http(s) URL".into());
    }
    let tolerance_s = match nonempty("STRIPE_WEBHOOK_TOLERANCE_S") {
        None => DEFAULT_TOLERANCE_S,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .ok_or_else(|| {
                format!("STRIPE_WEBHOOK_TOLERANCE_S must be seconds from 1 to 3600, not {raw:?}")
            })?,
    };
    let api_base_url =
        nonempty("STRIPE_API_BASE_URL").unwrap_or_else(|| DEFAULT_STRIPE_API_BASE_URL.into());
    // The secret key travels to this address: in clear only to this machine (the local Stripe).
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|p| api_base_url.starts_with(p));
    if !(api_base_url.starts_with("https://") || loopback) {
        return Err("STRIPE_API_BASE_URL must be https:// (http:// only for this machine)".into());
    }
    Ok(Some(BillingConfig {
        api_base_url,
        secret_key,
        webhook_secrets,
        tolerance_s,
        prices,
        return_url,
    }))
}

/// Every variable the worker reads, so the platform can fingerprint the configuration and reparse on change.
pub const CONFIG_VARS: &[&str] = &[
    "AUTH_ISSUER",
    "AUTH_JWKS_URL",
    "AUTH_JWKS",
    "AUTH_AUTHORIZED_PARTIES",
    "AUTH_AUDIENCES",
    "AUTH_MAX_TOKEN_LIFETIME_S",
    "CORS_ALLOWED_ORIGINS",
    "ENABLE_DEBUG_ROUTES",
    "DEPLOY_TARGET",
    "CLOUDFLARE_ACCOUNT_ID",
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_API_BASE_URL",
    "DISPATCH_NAMESPACE",
    "WORKERS_DEV_URL_TEMPLATE",
    "TELEMETRY_SECRETS_ENCRYPTION_KEY",
    "PREVIOUS_ENCRYPTION_KEYS",
    "TELEMETRY_REPORT_URL",
    "AGENT_COMPATIBILITY_DATE",
    "AGENTCORE_REGION",
    "AGENTCORE_ACCOUNT_ID",
    "AGENTCORE_EXECUTION_ROLE_ARN",
    "AGENTCORE_ALLOWED_ROLE_ARNS",
    "AGENTCORE_ALLOWED_IMAGE_PREFIXES",
    "AGENTCORE_CONTROL_URL",
    "AGENTCORE_DATA_URL",
    "AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS",
    "AGENTCORE_MAX_LIFETIME_SECONDS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "TIER_ENTITLEMENTS",
    "ADMIN_TOKEN",
    "INVOKE_TIMEOUT_MS",
    "METRICS_RETENTION_DAYS",
    "INVOCATIONS_RETENTION_DAYS",
    "TELEMETRY_REJECTS_RETENTION_DAYS",
    "UNAUTHENTICATED_RATE_LIMIT",
    "TELEMETRY_RATE_LIMIT",
    "DRAIN_UNREAD_BODIES",
    "DASHBOARD_CLERK_PUBLISHABLE_KEY",
    "DASHBOARD_CLERK_JS_URL",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRETS",
    "STRIPE_PRICE_PRO",
    "STRIPE_PRICE_ENTERPRISE",
    "STRIPE_API_BASE_URL",
    "STRIPE_WEBHOOK_TOLERANCE_S",
    "BILLING_RETURN_URL",
    "AUDIT_RETENTION_DAYS",
    "BILLING_EVENTS_RETENTION_DAYS",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A variable read but missing from CONFIG_VARS would never reach the worker (only these are read from
    /// its environment): every name the parser asks for is listed.
    #[test]
    fn every_variable_the_parser_reads_is_listed() {
        let asked = std::cell::RefCell::new(Vec::<String>::new());
        // Everything set, so the parser reads every variable instead of stopping at the first error.
        let parsed = ServiceConfig::from_vars(|name| {
            asked.borrow_mut().push(name.to_owned());
            match name {
                "AUTH_ISSUER" => Some("https://issuer.example".into()),
                "AUTH_JWKS_URL" => Some("http://127.0.0.1:9/jwks.json".into()),
                "DASHBOARD_CLERK_PUBLISHABLE_KEY" => {
                    Some("pk_test_Y2xlcmsuZXhhbXBsZS5jb20k".into())
                }
                "STRIPE_SECRET_KEY" => Some("sk_test_1".into()),
                "STRIPE_WEBHOOK_SECRETS" => Some("whsec_1".into()),
                "STRIPE_PRICE_PRO" => Some("price_1".into()),
                "BILLING_RETURN_URL" => Some("https://app.example/billing".into()),
                _ => None,
            }
        });
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        let asked = asked.into_inner();
        assert!(asked.iter().any(|n| n == "DASHBOARD_CLERK_JS_URL"));
        assert!(asked.iter().any(|n| n == "STRIPE_WEBHOOK_TOLERANCE_S"));
        for name in asked {
            assert!(
                CONFIG_VARS.contains(&name.as_str()),
                "{name} is read but not in CONFIG_VARS"
            );
        }
    }

    /// A variable lookup over fixed pairs, as the worker's environment would answer.
    fn vars_from(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn billing_is_off_without_a_key_and_complete_with_one() {
        assert!(billing_from_vars(vars_from(&[])).unwrap().is_none());
        let full: &'static [(&str, &str)] = &[
            ("STRIPE_SECRET_KEY", "sk_test_1"),
            ("STRIPE_WEBHOOK_SECRETS", "whsec_new, whsec_old"),
            ("STRIPE_PRICE_PRO", "price_pro"),
            ("BILLING_RETURN_URL", "https://app.example/billing"),
        ];
        let config = billing_from_vars(vars_from(full)).unwrap().unwrap();
        assert_eq!(config.webhook_secrets, vec!["whsec_new", "whsec_old"]);
        assert_eq!(config.tolerance_s, 300);
        assert_eq!(config.api_base_url, "https://api.stripe.com");
        assert!(!config.livemode());
        assert!(
            !format!("{config:?}").contains("sk_test_1"),
            "Debug never shows the key"
        );
        let in_clear: &'static [(&str, &str)] = &[
            ("STRIPE_SECRET_KEY", "sk_test_1"),
            ("STRIPE_WEBHOOK_SECRETS", "whsec_1"),
            ("STRIPE_PRICE_PRO", "price_1"),
            ("BILLING_RETURN_URL", "https://app.example/billing"),
            ("STRIPE_API_BASE_URL", "http://stripe.example.com"),
        ];
        assert!(billing_from_vars(vars_from(in_clear))
            .unwrap_err()
            .contains("https://"));
        let broken: [(&'static [(&'static str, &'static str)], &str); 6] = [
            (&[("STRIPE_SECRET_KEY", "pk_test_1")], "STRIPE_SECRET_KEY"),
            (
                &[("STRIPE_SECRET_KEY", "sk_test_1")],
                "STRIPE_WEBHOOK_SECRETS",
            ),
            (
                &[
                    ("STRIPE_SECRET_KEY", "sk_test_1"),
                    ("STRIPE_WEBHOOK_SECRETS", "secret"),
                ],
                "whsec_",
            ),
            (
                &[
                    ("STRIPE_SECRET_KEY", "sk_test_1"),
                    ("STRIPE_WEBHOOK_SECRETS", "whsec_1"),
                ],
                "STRIPE_PRICE_PRO",
            ),
            (
                &[
                    ("STRIPE_SECRET_KEY", "sk_test_1"),
                    ("STRIPE_WEBHOOK_SECRETS", "whsec_1"),
                    ("STRIPE_PRICE_PRO", "prod_1"),
                ],
                "price ids",
            ),
            (
                &[
                    ("STRIPE_SECRET_KEY", "sk_test_1"),
                    ("STRIPE_WEBHOOK_SECRETS", "whsec_1"),
                    ("STRIPE_PRICE_PRO", "price_1"),
                ],
                "BILLING_RETURN_URL",
            ),
        ];
        for (pairs, expected) in broken {
            let err = billing_from_vars(vars_from(pairs)).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    fn deploy(pairs: &[(&str, &str)]) -> Result<Option<DeployConfig>, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeployConfig::from_vars(|n| map.get(n).cloned())
    }

    const KEY: &str = "hex:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn deploys_are_off_without_a_target() {
        assert!(deploy(&[]).unwrap().is_none());
    }

    #[test]
    fn a_wrong_length_key_fails_even_without_a_target() {
        let err = deploy(&[("TELEMETRY_SECRETS_ENCRYPTION_KEY", "hex:00")])
            .err()
            .unwrap();
        assert!(err.contains("32 bytes"), "{err}");
    }

    #[test]
    fn each_target_requires_what_it_uses() {
        let base = [
            ("CLOUDFLARE_ACCOUNT_ID", "acc"),
            ("CLOUDFLARE_API_TOKEN", "tok"),
            ("TELEMETRY_SECRETS_ENCRYPTION_KEY", KEY),
            (
                "TELEMETRY_REPORT_URL",
                "https://cp.example.test/v1/telemetry/report",
            ),
        ];
        let mut wfp = base.to_vec();
        wfp.push(("DEPLOY_TARGET", "dispatch_namespace"));
        assert!(deploy(&wfp).err().unwrap().contains("DISPATCH_NAMESPACE"));
        wfp.push(("DISPATCH_NAMESPACE", "agents"));
        let cfg = deploy(&wfp).unwrap().unwrap();
        assert_eq!(cfg.api_base_url, DEFAULT_API_BASE_URL);
        assert_eq!(cfg.provider_ref("wh-1"), "agents/wh-1");

        let mut dev = base.to_vec();
        dev.push(("DEPLOY_TARGET", "workers_dev"));
        assert!(deploy(&dev)
            .err()
            .unwrap()
            .contains("WORKERS_DEV_URL_TEMPLATE"));
        dev.push((
            "WORKERS_DEV_URL_TEMPLATE",
            "https://{script}.acme.workers.dev",
        ));
        assert_eq!(
            deploy(&dev).unwrap().unwrap().provider_ref("wh-1"),
            "https://wh-1.acme.workers.dev"
        );

        let mut bad = base.to_vec();
        bad.push(("DEPLOY_TARGET", "lambda"));
        assert!(deploy(&bad).is_err());
        let mut no_token: Vec<_> = base
            .iter()
            .filter(|(k, _)| *k != "CLOUDFLARE_API_TOKEN")
            .copied()
            .collect();
        no_token.extend([
            ("DEPLOY_TARGET", "dispatch_namespace"),
            ("DISPATCH_NAMESPACE", "agents"),
        ]);
        assert!(deploy(&no_token)
            .err()
            .unwrap()
            .contains("CLOUDFLARE_API_TOKEN"));
    }

    #[test]
    fn agentcore_is_off_unless_a_region_is_set_and_then_needs_everything() {
        assert!(agentcore_from_vars(&vars_from(&[])).unwrap().is_none());
        let full: &'static [(&str, &str)] = &[
            ("AGENTCORE_REGION", "eu-west-1"),
            ("AGENTCORE_ACCOUNT_ID", "123456789012"),
            (
                "AGENTCORE_EXECUTION_ROLE_ARN",
                "arn:aws:iam::123456789012:role/Runtime",
            ),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ];
        let target = agentcore_from_vars(&vars_from(full)).unwrap().unwrap();
        assert_eq!(
            target.control_url,
            "https://bedrock-agentcore-control.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            target.data_url,
            "https://bedrock-agentcore.eu-west-1.amazonaws.com"
        );
        assert!(target.credentials.session_token.is_none());
        assert!(
            !format!("{target:?}").contains("very-secret"),
            "Debug never shows the secret"
        );
        for (missing, _) in full.iter().skip(1) {
            let without: Vec<(&str, &str)> =
                full.iter().filter(|(k, _)| k != missing).cloned().collect();
            let without: &'static [(&str, &str)] = Box::leak(without.into_boxed_slice());
            let err = agentcore_from_vars(&vars_from(without)).unwrap_err();
            assert!(err.contains(missing), "{err}");
        }
        let mut bad = full.to_vec();
        bad.push(("AGENTCORE_CONTROL_URL", "http://agentcore.example.com"));
        let bad: &'static [(&str, &str)] = Box::leak(bad.into_boxed_slice());
        assert!(agentcore_from_vars(&vars_from(bad))
            .unwrap_err()
            .contains("https"));
        let mut local = full.to_vec();
        local.push(("AGENTCORE_DATA_URL", "http://127.0.0.1:8792/"));
        let local: &'static [(&str, &str)] = Box::leak(local.into_boxed_slice());
        assert_eq!(
            agentcore_from_vars(&vars_from(local))
                .unwrap()
                .unwrap()
                .data_url,
            "http://127.0.0.1:8792",
            "plain HTTP only to this machine"
        );
        assert_eq!(
            target.lifecycle,
            Lifecycle::default(),
            "AgentCore's defaults"
        );
        for (value, ok) in [
            ("600", true),
            ("60", true),
            ("3600", true),
            ("3601", false),
            ("59", false),
            ("28801", false),
            ("ten", false),
        ] {
            let mut set = full.to_vec();
            set.push(("AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS", value));
            set.push(("AGENTCORE_MAX_LIFETIME_SECONDS", "3600"));
            let set: &'static [(&str, &str)] = Box::leak(set.into_boxed_slice());
            match agentcore_from_vars(&vars_from(set)) {
                Ok(Some(t)) => {
                    assert!(ok, "{value}");
                    assert_eq!(t.lifecycle.idle_session_timeout_s, value.parse().ok());
                    assert_eq!(t.lifecycle.max_lifetime_s, Some(3600));
                }
                Err(e) => assert!(
                    !ok && e.contains("AGENTCORE_IDLE_SESSION_TIMEOUT_SECONDS"),
                    "{value}: {e}"
                ),
                Ok(None) => panic!("AgentCore is configured"),
            }
        }
        let account: &'static [(&str, &str)] = &[
            ("AGENTCORE_REGION", "eu-west-1"),
            ("AGENTCORE_ACCOUNT_ID", "12345"),
        ];
        assert!(agentcore_from_vars(&vars_from(account)).is_err());
        let mut foreign = full.to_vec();
        foreign.push((
            "AGENTCORE_ALLOWED_ROLE_ARNS",
            "arn:aws:iam::999999999999:role/Theirs",
        ));
        let foreign: &'static [(&str, &str)] = Box::leak(foreign.into_boxed_slice());
        assert!(
            agentcore_from_vars(&vars_from(foreign))
                .unwrap_err()
                .contains("account 123456789012"),
            "a role in another account is refused"
        );
    }
}
