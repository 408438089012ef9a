//! The admission decision of one invocation, made inside the user's gate so that checking and reserving are
//! one step: the key still works, the agent exists and is enabled, it has an active deployment, the user is
//! entitled to its runtime and (for a stream) to streaming, the period's token and compute quotas are not
//! spent, and a request of the period is left. Only then is one reserved and the session resolved.

use super::facts::FactsView;
use super::protocol::{Admission, AdmitRequest, Granted, Refusal, Verdict};
use crate::domain::entitlements::TierOverrides;
use crate::domain::reservation::{reserve, GateRequest, PeriodCount};
use crate::domain::session::{new_client_session_id, resolve, SessionRecord};
use crate::domain::usage::check_quotas;

/// What the gate must persist after deciding (nothing for a refusal before the reservation).
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub admission: Admission,
    pub count: Option<PeriodCount>,
    /// The session to store under (agent, client session id).
    pub session: Option<(String, SessionRecord)>,
}

/// Decides one admission. `count` is the stored request count; `session` the stored record of the client's
/// session id, if it sent one and one exists.
pub fn admit(
    facts: Option<FactsView<'_>>,
    tiers: &TierOverrides,
    count: Option<PeriodCount>,
    session: Option<SessionRecord>,
    request: &AdmitRequest,
    now: i64,
) -> Decided {
    let refuse = |deployment_id: Option<String>, refusal: Refusal| Decided {
        admission: Admission {
            deployment_id,
            verdict: Verdict::Refused(refusal),
            loaded: false,
        },
        count: None,
        session: None,
    };
    let key_refused = |facts: &Option<FactsView<'_>>| {
        request.key_id.is_some() && facts.as_ref().and_then(|f| f.key).is_none_or(|k| k.revoked)
    };
    if key_refused(&facts) {
        return refuse(None, Refusal::InvalidApiKey);
    }
    let Some(facts) = facts else {
        return refuse(None, Refusal::AgentNotFound);
    };
    let Some(agent) = facts.agent else {
        return refuse(None, Refusal::AgentNotFound);
    };
    let deployment_id = agent.deployment.as_ref().map(|d| d.deployment_id.clone());
    if !agent.enabled {
        return refuse(deployment_id, Refusal::AgentDisabled);
    }
    let Some(deployment) = &agent.deployment else {
        return refuse(None, Refusal::NoActiveDeployment);
    };
    let entitlements = tiers.resolve(facts.user.tier, &facts.user.overrides);
    // Defense in depth: deploys check the runtime too, but entitlements can change after a deploy.
    if !entitlements.allows_runtime(&deployment.runtime_provider) {
        let provider = deployment.runtime_provider.clone();
        return refuse(deployment_id, Refusal::RuntimeNotEntitled { provider });
    }
    if request.streaming && !entitlements.streaming {
        return refuse(deployment_id, Refusal::StreamingNotEntitled);
    }
    if check_quotas(&facts.usage, &entitlements, request.period_key, now).is_err() {
        return refuse(
            deployment_id,
            Refusal::QuotaExhausted {
                usage: facts.usage,
                entitlements: Box::new(entitlements),
            },
        );
    }
    let (next, decision) = reserve(
        count,
        GateRequest {
            period_key: request.period_key,
            limit: entitlements.requests_per_period,
        },
    );
    if !decision.granted {
        return refuse(deployment_id, Refusal::LimitExceeded { decision });
    }
    let session_id = request
        .session_id
        .clone()
        .unwrap_or_else(new_client_session_id);
    let (record, _created) = resolve(session, now);
    Decided {
        admission: Admission {
            deployment_id,
            verdict: Verdict::Granted(Box::new(Granted {
                decision,
                route: agent.clone(),
                session_id: session_id.clone(),
                runtime_session_id: record.runtime_session_id.clone(),
                cpu_ms: entitlements.cpu_ms_per_invocation,
                subrequests: entitlements.subrequests_per_invocation,
                compute_ms_limit: entitlements.compute_ms_per_period,
            })),
            loaded: false,
        },
        count: Some(next),
        session: Some((session_id, record)),
    }
}
