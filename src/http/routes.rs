//! The route table: one list that both the router and the OpenAPI consistency test read, so the two cannot
//! drift apart silently.

/// Every public route as `(method, path template)`, in the OpenAPI document's `{param}` syntax.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/v1/me"),
    ("GET", "/v1/agents"),
    ("POST", "/v1/agents"),
    ("GET", "/v1/agents/{agentId}"),
    ("PATCH", "/v1/agents/{agentId}"),
    ("DELETE", "/v1/agents/{agentId}"),
    ("POST", "/v1/agents/{agentId}/disable"),
    ("POST", "/v1/agents/{agentId}/enable"),
    ("POST", "/v1/agents/{agentId}/deploy"),
    ("GET", "/v1/agents/{agentId}/deployments"),
    ("GET", "/v1/agents/{agentId}/deployments/{deploymentId}"),
    (
        "POST",
        "/v1/agents/{agentId}/deployments/{deploymentId}/activate",
    ),
    ("GET", "/v1/agents/{agentId}/invocations"),
    ("GET", "/v1/agents/{agentId}/secrets"),
    ("PUT", "/v1/agents/{agentId}/secrets/{name}"),
    ("DELETE", "/v1/agents/{agentId}/secrets/{name}"),
    ("POST", "/v1/invoke/{agentId}"),
    ("POST", "/v1/invoke/{agentId}/stream"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/{keyId}"),
    ("PUT", "/v1/admin/users/{userId}/tier"),
    ("PUT", "/v1/admin/users/{userId}/entitlements"),
    ("GET", "/v1/admin/users/{userId}/usage"),
    ("POST", "/v1/admin/users/{userId}/gate/refresh"),
    ("POST", "/v1/admin/usage/recompute"),
    ("POST", "/v1/admin/secrets/reseal"),
    ("POST", "/v1/telemetry/report"),
    ("GET", "/v1/dashboard/config"),
    ("GET", "/v1/events"),
    ("GET", "/v1/billing"),
    ("POST", "/v1/billing/checkout"),
    ("POST", "/v1/billing/portal"),
    ("POST", "/v1/billing/webhook"),
    ("GET", "/v1/admin/billing/events"),
    ("GET", "/v1/audit"),
    (
        "GET",
        "/v1/agents/{agentId}/deployments/{deploymentId}/artifact",
    ),
    ("GET", "/v1/admin/audit"),
    ("POST", "/v1/admin/billing/events/{eventId}/retry"),
    ("GET", "/v1/usage/current"),
    ("GET", "/v1/usage/history"),
    ("GET", "/v1/metrics/recent"),
];

/// How the audit trail records a route (`Route::audited`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    pub action: &'static str,
    pub target: Option<String>,
    pub agent: Option<String>,
    /// For an operator's action on one user: that user (whose trail it joins).
    pub subject: Option<String>,
}

/// A matched route with its path parameters. Parameters are raw path segments; handlers parse them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// What the dashboard needs before anyone signs in: how to sign in. No credentials.
    DashboardConfig,
    /// The caller's live feed (SSE).
    Events,
    Billing,
    BillingCheckout,
    BillingPortal,
    /// Stripe's signed events: authenticated by their signature, not a user.
    BillingWebhook,
    AdminBillingEvents,
    AdminRetryBillingEvent(String),
    /// The caller's own audit trail.
    Audit,
    /// A deployment's stored code: the manifest and the modules' names, types, sizes and hashes.
    GetArtifact(String, String),
    /// Everyone's, for operators.
    AdminAudit,
    Me,
    ListAgents,
    CreateAgent,
    GetAgent(String),
    UpdateAgent(String),
    DeleteAgent(String),
    DisableAgent(String),
    EnableAgent(String),
    Deploy(String),
    ListDeployments(String),
    GetDeployment(String, String),
    ActivateDeployment(String, String),
    ListInvocations(String),
    ListSecrets(String),
    PutSecret(String, String),
    DeleteSecret(String, String),
    /// `(agentId, streaming)`.
    Invoke(String, bool),
    ListApiKeys,
    CreateApiKey,
    RevokeApiKey(String),
    AdminSetTier(String),
    AdminSetEntitlements(String),
    AdminUsage(String),
    AdminRefreshGate(String),
    AdminRecompute,
    AdminReseal,
    TelemetryReport,
    UsageCurrent,
    UsageHistory,
    MetricsRecent,
}

impl Route {
    /// Routes authenticated by the operator token rather than a user's credentials.
    /// The audit trail's record of this route, if it is a privileged action: what it is called, and what it acts
    /// on as its path names it (a created resource's id comes from the answer).
    pub fn audited(&self) -> Option<Audited> {
        let on = |action, target: Option<&String>, agent: Option<&String>| {
            Some(Audited {
                action,
                target: target.cloned(),
                agent: agent.cloned(),
                subject: None,
            })
        };
        let operator = |action, user: &String| {
            Some(Audited {
                action,
                target: Some(user.clone()),
                agent: None,
                subject: Some(user.clone()),
            })
        };
        match self {
            Route::CreateAgent => on("agent.create", None, None),
            Route::UpdateAgent(a) => on("agent.update", Some(a), Some(a)),
            Route::DeleteAgent(a) => on("agent.delete", Some(a), Some(a)),
            Route::DisableAgent(a) => on("agent.disable", Some(a), Some(a)),
            Route::EnableAgent(a) => on("agent.enable", Some(a), Some(a)),
            Route::Deploy(a) => on("deploy.request", None, Some(a)),
            Route::ActivateDeployment(a, d) => on("deployment.activate", Some(d), Some(a)),
            // The secret's name only; its value is never part of a route.
            Route::PutSecret(a, name) => on("secret.set", Some(name), Some(a)),
            Route::DeleteSecret(a, name) => on("secret.delete", Some(name), Some(a)),
            Route::CreateApiKey => on("api_key.create", None, None),
            Route::RevokeApiKey(k) => on("api_key.revoke", Some(k), None),
            Route::BillingCheckout => on("billing.checkout", None, None),
            Route::BillingPortal => on("billing.portal", None, None),
            Route::AdminSetTier(u) => operator("tier.set", u),
            Route::AdminSetEntitlements(u) => operator("entitlements.set", u),
            Route::AdminRefreshGate(u) => operator("gate.refresh", u),
            Route::AdminRecompute => on("usage.recompute", None, None),
            Route::AdminReseal => on("secrets.reseal", None, None),
            Route::AdminRetryBillingEvent(e) => on("billing.retry", Some(e), None),
            _ => None,
        }
    }

    /// Routes only an operator calls (with `ADMIN_TOKEN`).
    pub fn is_operator(&self) -> bool {
        self.is_admin()
            || matches!(
                self,
                Route::AdminBillingEvents | Route::AdminRetryBillingEvent(_) | Route::AdminAudit
            )
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Route::AdminSetTier(_)
                | Route::AdminSetEntitlements(_)
                | Route::AdminUsage(_)
                | Route::AdminRefreshGate(_)
                | Route::AdminRecompute
                | Route::AdminReseal
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    NotFound,
    /// The path exists but not with this method; carries the methods that do exist, for `Allow`.
    MethodNotAllowed(Vec<&'static str>),
}

fn build(method: &str, template: &str, params: Vec<String>) -> Option<Route> {
    let mut params = params.into_iter();
    let mut param = || {
        params
            .next()
            .expect("template and match agree on parameters")
    };
    Some(match (method, template) {
        ("GET", "/health") => Route::Health,
        ("GET", "/v1/dashboard/config") => Route::DashboardConfig,
        ("GET", "/v1/events") => Route::Events,
        ("GET", "/v1/billing") => Route::Billing,
        ("POST", "/v1/billing/checkout") => Route::BillingCheckout,
        ("POST", "/v1/billing/portal") => Route::BillingPortal,
        ("POST", "/v1/billing/webhook") => Route::BillingWebhook,
        ("GET", "/v1/admin/billing/events") => Route::AdminBillingEvents,
        ("GET", "/v1/audit") => Route::Audit,
        ("GET", "/v1/agents/{agentId}/deployments/{deploymentId}/artifact") => {
            Route::GetArtifact(param(), param())
        }
        ("GET", "/v1/admin/audit") => Route::AdminAudit,
        ("POST", "/v1/admin/billing/events/{eventId}/retry") => {
            Route::AdminRetryBillingEvent(param())
        }
        ("GET", "/v1/me") => Route::Me,
        ("GET", "/v1/agents") => Route::ListAgents,
        ("POST", "/v1/agents") => Route::CreateAgent,
        ("GET", "/v1/agents/{agentId}") => Route::GetAgent(param()),
        ("PATCH", "/v1/agents/{agentId}") => Route::UpdateAgent(param()),
        ("DELETE", "/v1/agents/{agentId}") => Route::DeleteAgent(param()),
        ("POST", "/v1/agents/{agentId}/disable") => Route::DisableAgent(param()),
        ("POST", "/v1/agents/{agentId}/enable") => Route::EnableAgent(param()),
        ("POST", "/v1/agents/{agentId}/deploy") => Route::Deploy(param()),
        ("GET", "/v1/agents/{agentId}/deployments") => Route::ListDeployments(param()),
        ("GET", "/v1/agents/{agentId}/deployments/{deploymentId}") => {
            Route::GetDeployment(param(), param())
        }
        ("POST", "/v1/agents/{agentId}/deployments/{deploymentId}/activate") => {
            Route::ActivateDeployment(param(), param())
        }
        ("GET", "/v1/agents/{agentId}/invocations") => Route::ListInvocations(param()),
        ("GET", "/v1/agents/{agentId}/secrets") => Route::ListSecrets(param()),
        ("PUT", "/v1/agents/{agentId}/secrets/{name}") => Route::PutSecret(param(), param()),
        ("DELETE", "/v1/agents/{agentId}/secrets/{name}") => Route::DeleteSecret(param(), param()),
        ("POST", "/v1/invoke/{agentId}") => Route::Invoke(param(), false),
        ("POST", "/v1/invoke/{agentId}/stream") => Route::Invoke(param(), true),
        ("GET", "/v1/api-keys") => Route::ListApiKeys,
        ("POST", "/v1/api-keys") => Route::CreateApiKey,
        ("DELETE", "/v1/api-keys/{keyId}") => Route::RevokeApiKey(param()),
        ("PUT", "/v1/admin/users/{userId}/tier") => Route::AdminSetTier(param()),
        ("PUT", "/v1/admin/users/{userId}/entitlements") => Route::AdminSetEntitlements(param()),
        ("GET", "/v1/admin/users/{userId}/usage") => Route::AdminUsage(param()),
        ("POST", "/v1/admin/users/{userId}/gate/refresh") => Route::AdminRefreshGate(param()),
        ("POST", "/v1/admin/usage/recompute") => Route::AdminRecompute,
        ("POST", "/v1/admin/secrets/reseal") => Route::AdminReseal,
        ("POST", "/v1/telemetry/report") => Route::TelemetryReport,
        ("GET", "/v1/usage/current") => Route::UsageCurrent,
        ("GET", "/v1/usage/history") => Route::UsageHistory,
        ("GET", "/v1/metrics/recent") => Route::MetricsRecent,
        _ => return None,
    })
}

/// Segment-wise match of `path` against `template`; `{name}` matches one non-empty segment.
fn match_template(template: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                params.push(ps.to_owned());
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

pub fn match_route(method: &str, path: &str) -> Result<Route, RouteMiss> {
    // A trailing slash names the same resource; anything else must match exactly.
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    let mut allowed = Vec::new();
    for (m, template) in ROUTES {
        if let Some(params) = match_template(template, path) {
            if m.eq_ignore_ascii_case(method) {
                if let Some(route) = build(m, template, params) {
                    return Ok(route);
                }
            }
            allowed.push(*m);
        }
    }
    if allowed.is_empty() {
        Err(RouteMiss::NotFound)
    } else {
        Err(RouteMiss::MethodNotAllowed(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_in_the_table_is_reachable() {
        for (method, template) in ROUTES {
            let path = template
                .replace("{agentId}", "agt_x")
                .replace("{deploymentId}", "dep_x")
                .replace("{name}", "API_KEY")
                .replace("{keyId}", "key_x")
                .replace("{userId}", "usr_x");
            assert!(
                match_route(method, &path).is_ok(),
                "{method} {template} has no handler"
            );
        }
    }

    #[test]
    fn paths_with_parameters() {
        assert_eq!(
            match_route("GET", "/v1/agents/agt_1"),
            Ok(Route::GetAgent("agt_1".into()))
        );
        assert_eq!(
            match_route("POST", "/v1/agents/agt_1/disable/"),
            Ok(Route::DisableAgent("agt_1".into()))
        );
        assert_eq!(match_route("GET", "/v1/agents/"), Ok(Route::ListAgents));
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        assert_eq!(match_route("GET", "/v1/nope"), Err(RouteMiss::NotFound));
        assert_eq!(
            match_route("GET", "/v1/agents//disable"),
            Err(RouteMiss::NotFound)
        );
        assert_eq!(
            match_route("GET", "/v1/agents/a/b"),
            Err(RouteMiss::NotFound)
        );
        assert_eq!(
            match_route("PUT", "/v1/agents/agt_1"),
            Err(RouteMiss::MethodNotAllowed(vec!["GET", "PATCH", "DELETE"]))
        );
        assert_eq!(
            match_route("GET", "/v1/agents/agt_1/enable"),
            Err(RouteMiss::MethodNotAllowed(vec!["POST"]))
        );
    }

    /// The OpenAPI document and the router must name the same `(method, path)` pairs.
    #[test]
    fn openapi_document_matches_the_router() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
                .expect("docs/openapi.yaml");
        let documented = documented_routes(&doc);
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routed.sort();
        assert_eq!(documented, routed, "docs/openapi.yaml and ROUTES disagree");
    }

    /// Every stable error code is listed in the document's `ErrorCode` schema.
    #[test]
    fn openapi_document_lists_every_error_code() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml"))
                .unwrap();
        for code in crate::domain::ErrorCode::ALL {
            assert!(
                doc.contains(&format!("- {}\n", code.as_str())),
                "error code {code} is not documented in docs/openapi.yaml"
            );
        }
    }

    /// Reads `paths:` from the YAML: path keys at two spaces, operations at four.
    fn documented_routes(doc: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut in_paths = false;
        let mut current: Option<String> = None;
        for line in doc.lines() {
            if !line.starts_with(' ') && !line.trim().is_empty() {
                in_paths = line.trim_end() == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                current = Some(format!("/{path}"));
            } else if let Some(op) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
                if ["get", "post", "put", "patch", "delete"].contains(&op) {
                    out.push((
                        op.to_uppercase(),
                        current.clone().expect("operation under a path"),
                    ));
                }
            }
        }
        out.sort();
        out
    }
}
