//! The route table applied: a matched route to its handler, with the caller authenticated where the route needs
//! it. Handlers live in files named for their area; this file only dispatches.

use super::artifacts::R2Artifacts;
use super::bindings::d1_database;
use super::cloudflare::FetchProvider;
use super::d1::D1Store;
use super::durable::deploy_follower;
use super::durable::user_feed::{self, publish};
use super::durable::user_gate::UserGateClient;
use super::jobs::{in_background, publish_pointer_moved, Background, WorkersTimer};
use super::reply::{json_reply, Reply};
use super::request::{header, read_body, read_json};
use super::{admin, audit, billing, gateway, identity, telemetry, JsClock};
use crate::app::deployments::{self, deploys_not_configured};
use crate::app::ports::{ArtifactStore, Clock, DeployLimits, Store};
use crate::app::{agents, api_keys, invocations, secrets, usage};
use crate::config::ServiceConfig;
use crate::domain::agent::AgentStatus;
use crate::domain::bundle::BundleLimits;
use crate::domain::feed::FeedKind;
use crate::domain::ids::{AgentId, RequestId, UserId};
use crate::domain::rate_limit::Buckets;
use crate::domain::telemetry::DEPLOYMENT_HEADER;
use crate::domain::{ApiError, ErrorCode};
use crate::http::body::{
    check_declared_length, MAX_BUNDLE_BODY_BYTES, MAX_DEPLOY_BODY_BYTES, MAX_JSON_BODY_BYTES,
};
use crate::http::routes::{match_route, Route, RouteMiss};
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use worker::{console_error, Context, Env, Method, Request};

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(super) async fn handle(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    config: &Rc<ServiceConfig>,
    request_id: &RequestId,
) -> Result<Reply, ApiError> {
    let method = req.method();
    let url = req.url().map_err(ApiError::internal)?;
    let path = url.path().to_owned();

    if method == Method::Options && header(req, "Access-Control-Request-Method").is_some() {
        return preflight(config, header(req, "Origin").as_deref());
    }
    if config.debug_routes && path == "/__debug/panic" {
        panic!("deliberate panic from /__debug/panic");
    }

    let route = match_route(method.as_ref(), &path).map_err(|miss| match miss {
        RouteMiss::NotFound => ApiError::new(
            ErrorCode::RouteNotFound,
            "No such route. See docs/openapi.yaml.",
        ),
        RouteMiss::MethodNotAllowed(allow) => ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("This route does not accept {method}."),
        )
        .with_details(json!({ "allow": allow })),
    })?;

    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    // Who acted, once known (set when the caller is authenticated).
    let mut caller: Option<UserId> = None;
    // Read before the route is handed over: the audit record needs only these.
    let audited = route.audited();
    let by_operator = route.is_operator();
    let outcome = dispatch(
        req,
        env,
        ctx,
        config,
        request_id,
        route,
        &query,
        &mut caller,
    )
    .await;
    if let Some(audited) = audited {
        audit::record_route(ctx, env, request_id, by_operator, audited, caller, &outcome);
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    config: &Rc<ServiceConfig>,
    request_id: &RequestId,
    route: Route,
    query: &HashMap<String, String>,
    caller: &mut Option<UserId>,
) -> Result<Reply, ApiError> {
    admit_unauthenticated(req, config, &route)?;
    let store = D1Store::new(d1_database(env)?);
    let clock = JsClock;

    match &route {
        Route::Health => return health(&store).await,
        Route::DashboardConfig => {
            return json_reply(200, &json!({ "signIn": config.dashboard_sign_in }))
        }
        Route::BillingWebhook => {
            return billing::webhook(req, env, ctx, &store, config, request_id).await
        }
        Route::AdminBillingEvents | Route::AdminRetryBillingEvent(_) => {
            return billing::for_operator(req, env, &store, config, &route, query).await
        }
        Route::AdminAudit => return audit::for_operator(req, &store, config, query).await,
        Route::Invoke(agent, streaming) => {
            return gateway::invoke(req, env, ctx, config, request_id, agent, *streaming).await
        }
        // Authenticated by the deployment's signature, not a user's credentials.
        Route::TelemetryReport => {
            return telemetry::report(req, env, ctx, &store, config, request_id).await
        }
        r if r.is_admin() => {
            let reply = admin::handle(
                req,
                &store,
                &UserGateClient::new(env),
                config,
                request_id,
                &route,
            )
            .await;
            // The user's plan changed: their dashboard reads it again.
            if let (Ok(_), Route::AdminSetTier(user) | Route::AdminSetEntitlements(user)) =
                (&reply, &route)
            {
                let user = UserId::from_trusted(user.clone());
                publish(ctx, env, &user, FeedKind::Plan, json!({}));
            }
            return reply;
        }
        _ => {}
    }
    let user =
        identity::authenticate(header(req, "Authorization").as_deref(), config, &store).await?;
    *caller = Some(user.id.clone());
    let gate = UserGateClient::new(env);
    // Only the routes that need them resolve the caller's entitlements.
    let entitlements = || config.tiers.resolve(user.tier, &user.overrides);

    match route {
        Route::Health
        | Route::DashboardConfig
        | Route::BillingWebhook
        | Route::AdminBillingEvents
        | Route::AdminRetryBillingEvent(_)
        | Route::AdminAudit
        | Route::Invoke(..)
        | Route::AdminSetTier(_)
        | Route::AdminSetEntitlements(_)
        | Route::AdminUsage(_)
        | Route::AdminRefreshGate(_)
        | Route::AdminRecompute
        | Route::AdminReseal
        | Route::TelemetryReport => unreachable!("answered before user authentication"),
        Route::UsageCurrent => json_reply(
            200,
            &usage::current(&store, &gate, &config.tiers, &user, clock.now_ms()).await?,
        ),
        Route::UsageHistory => json_reply(
            200,
            &json!({ "periods": usage::history(&store, &user, query, clock.now_ms()).await? }),
        ),
        Route::MetricsRecent => json_reply(
            200,
            &json!({ "events": usage::recent(&store, &user, query).await? }),
        ),
        Route::Audit => json_reply(
            200,
            &crate::app::audit::own_trail(&store, &user, query).await?,
        ),
        Route::GetArtifact(agent, dep) => {
            // Only the owner's deployment (someone else's is not found), then its stored code.
            let deployment = deployments::get_deployment(&store, &user, &agent, &dep).await?;
            let bytes = R2Artifacts::new(env)
                .artifact(&deployment.code_sha256)
                .await
                .map_err(|e| ApiError::unavailable("The artifact store is not reachable.", e.0))?
                .ok_or_else(deployments::artifact::not_found)?;
            json_reply(
                200,
                &deployments::artifact::view(&deployment.code_sha256, &bytes)?,
            )
        }
        Route::Billing | Route::BillingCheckout | Route::BillingPortal => {
            billing::for_user(req, &store, config, &route, &user).await
        }
        Route::Events => {
            let until = header(req, "Authorization")
                .and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned))
                .and_then(|token| crate::auth::jwt::expiry_ms_of_verified(&token));
            let last_event_id = header(req, "Last-Event-ID");
            let stream = user_feed::open_stream(env, &user.id, last_event_id.as_deref(), until)
                .await
                .map_err(|e| {
                    ApiError::unavailable(
                        "The live feed is not reachable; reconnect in a moment.",
                        format!("feed: {e}"),
                    )
                })?;
            Ok(Reply::Stream(stream))
        }
        Route::Me => {
            let mut me = serde_json::to_value(&user).map_err(ApiError::internal)?;
            me["entitlements"] =
                serde_json::to_value(entitlements()).map_err(ApiError::internal)?;
            Ok(Reply::Json(200, me))
        }
        Route::ListApiKeys => json_reply(
            200,
            &json!({ "apiKeys": api_keys::list_keys(&store, &user).await? }),
        ),
        Route::CreateApiKey => {
            let (_, body) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            json_reply(
                201,
                &api_keys::create_key(&store, &clock, &user, body).await?,
            )
        }
        Route::RevokeApiKey(id) => {
            api_keys::revoke_key(&store, &gate, &clock, &user, &id).await?;
            Ok(Reply::NoContent)
        }
        Route::ListAgents => {
            let page = agents::list_agents(
                &store,
                &user,
                query.get("cursor").map(String::as_str),
                query.get("limit").map(String::as_str),
            )
            .await?;
            json_reply(200, &page)
        }
        Route::CreateAgent => {
            let (_, body) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            let agent =
                agents::create_agent(&store, &clock, &user, body, entitlements().max_agents)
                    .await?;
            publish(ctx, env, &user.id, FeedKind::Agent, &agent);
            json_reply(201, &agent)
        }
        Route::GetAgent(id) => json_reply(200, &agents::get_agent(&store, &user, &id).await?),
        Route::UpdateAgent(id) => {
            let (_, body) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            let agent = agents::update_agent(&store, &clock, &user, &id, body).await?;
            publish(ctx, env, &user.id, FeedKind::Agent, &agent);
            json_reply(200, &agent)
        }
        Route::DeleteAgent(id) => {
            agents::delete_agent(&store, &gate, &clock, &user, &id).await?;
            publish(
                ctx,
                env,
                &user.id,
                FeedKind::AgentDeleted,
                json!({ "id": id }),
            );
            if config.deploy.is_some() {
                in_background(ctx, env, config, Background::CleanUp);
            }
            Ok(Reply::NoContent)
        }
        Route::DisableAgent(ref id) | Route::EnableAgent(ref id) => {
            let status = match route {
                Route::DisableAgent(_) => AgentStatus::Disabled,
                _ => AgentStatus::Active,
            };
            let agent = agents::set_agent_status(&store, &gate, &clock, &user, id, status).await?;
            publish(ctx, env, &user.id, FeedKind::Agent, &agent);
            json_reply(200, &agent)
        }
        Route::Deploy(id) => {
            let deploy = config.deploy.as_ref().ok_or_else(deploys_not_configured)?;
            // A bundle (multipart, agent.config.json and its modules) or a JSON deploy.
            let bundle_boundary = header(req, "Content-Type")
                .as_deref()
                .and_then(crate::http::form_data::boundary);
            let (raw, body, bundle) = match bundle_boundary {
                Some(boundary) => {
                    let limits = BundleLimits::entitled(entitlements().bundle_bytes);
                    check_declared_length(
                        header(req, "Content-Length").as_deref(),
                        MAX_BUNDLE_BODY_BYTES,
                    )?;
                    let raw = read_body(req, MAX_BUNDLE_BODY_BYTES).await?;
                    let (request, bundle) =
                        deployments::bundle_request::read_bundle(&raw, &boundary, &limits)?;
                    (raw, request, Some(bundle))
                }
                None => {
                    let (raw, body) = read_json(req, MAX_DEPLOY_BODY_BYTES).await?;
                    (raw, body, None)
                }
            };
            let key = header(req, "Idempotency-Key");
            let (deployment, pending) = deployments::request_deploy(
                &store,
                &clock,
                deploy,
                &user,
                &entitlements(),
                &id,
                &raw,
                body,
                bundle,
                key.as_deref(),
            )
            .await?;
            let started = pending.is_some();
            if let Some(pending) = pending {
                // Its follower is told in work of its own, started first: should the deploy's background work be
                // cut off at any point, the follower still ends the deploy (best effort: the cron job and the
                // timeout remain). The answer waits for neither.
                let (follow_env, followed) = (env.clone(), pending.deployment.clone());
                ctx.wait_until(async move {
                    if let Err(e) = deploy_follower::follow(&follow_env, &followed).await {
                        console_error!("deploy {}: its follower was not told: {e}", followed.id);
                    }
                });
                in_background(ctx, env, config, Background::Deploy(Box::new(pending)));
            }
            // A replayed Idempotency-Key answers the stored deployment, which may have failed since.
            let shown = deployments::for_owner(deployment, config.deploy.as_ref());
            if started {
                publish(ctx, env, &user.id, FeedKind::Deployment, &shown);
            }
            json_reply(202, &shown)
        }
        Route::ListDeployments(id) => {
            let query = query.clone().into_iter().collect();
            json_reply(
                200,
                &json!({ "deployments": deployments::list_deployments(&store, &user, &id, &query)
                    .await?
                    .into_iter()
                    .map(|d| deployments::for_owner(d, config.deploy.as_ref()))
                    .collect::<Vec<_>>() }),
            )
        }
        Route::GetDeployment(agent, dep) => json_reply(
            200,
            &deployments::for_owner(
                deployments::get_deployment(&store, &user, &agent, &dep).await?,
                config.deploy.as_ref(),
            ),
        ),
        Route::ActivateDeployment(agent, dep) => {
            // Rolling back to a deployment whose script was cleaned up uploads it again from its artifact.
            let artifacts = R2Artifacts::new(env);
            let provider = config.deploy.as_ref().map(|deploy| FetchProvider {
                base_url: &deploy.api_base_url,
                api_token: &deploy.api_token,
            });
            let plan = entitlements();
            let uploader =
                config
                    .deploy
                    .as_ref()
                    .zip(provider.as_ref())
                    .map(|(config, provider)| deployments::Uploader {
                        artifacts: &artifacts,
                        provider,
                        sleeper: &WorkersTimer,
                        config,
                        limits: DeployLimits::of(&plan),
                        bundle_limits: BundleLimits::entitled(plan.bundle_bytes),
                    });
            let (activated, served_before) = deployments::activate_deployment(
                &store,
                &gate,
                &clock,
                uploader.as_ref(),
                &user,
                &agent,
                &dep,
            )
            .await?;
            let shown = deployments::for_owner(activated, config.deploy.as_ref());
            // The pointer moved: the deployment now serving, the agent, and the one it replaced.
            publish(ctx, env, &user.id, FeedKind::Deployment, &shown);
            if let Some(agent_id) = AgentId::parse(&agent) {
                let (env, owner, config) = (env.clone(), user.id.clone(), config.clone());
                ctx.wait_until(async move {
                    let (Some(deploy), Ok(db)) = (config.deploy.as_ref(), d1_database(&env)) else {
                        return;
                    };
                    let store = D1Store::new(db);
                    publish_pointer_moved(&env, &store, deploy, &owner, &agent_id, served_before)
                        .await;
                });
            }
            json_reply(200, &shown)
        }
        Route::ListInvocations(id) => json_reply(
            200,
            &invocations::list_invocations(
                &store,
                &user,
                &id,
                query.get("cursor").map(String::as_str),
                query.get("limit").map(String::as_str),
            )
            .await?,
        ),
        Route::ListSecrets(id) => json_reply(
            200,
            &json!({ "secrets": secrets::list_secrets(&store, &user, &id).await? }),
        ),
        Route::PutSecret(id, name) => {
            let deploy = config.deploy.as_ref().ok_or_else(deploys_not_configured)?;
            let (_, body) = read_json(req, MAX_JSON_BODY_BYTES).await?;
            json_reply(
                200,
                &secrets::put_secret(
                    &store,
                    &clock,
                    &deploy.encryption_key,
                    &user,
                    &id,
                    &name,
                    body,
                )
                .await?,
            )
        }
        Route::DeleteSecret(id, name) => {
            secrets::delete_secret(&store, &user, &id, &name).await?;
            Ok(Reply::NoContent)
        }
    }
}

thread_local! {
    static BY_ADDRESS: RefCell<Buckets> = RefCell::new(Buckets::default());
    static BY_DEPLOYMENT: RefCell<Buckets> = RefCell::new(Buckets::default());
}

/// Requests that carry no user's token — the routes reachable without one (health, the operator API) and any
/// request without `Authorization` — are limited per client address before anything reads D1 (as are API keys
/// no cache knows yet: `charge_address`); telemetry reports per claimed deployment and address instead (agents
/// report from Cloudflare's own addresses, shared by every agent, so an address alone says nothing about who
/// sent one, and a deployment alone would let anyone spend a real agent's allowance before its signature is
/// checked): 429 `rate_limited` with `Retry-After`.
fn admit_unauthenticated(
    req: &Request,
    config: &ServiceConfig,
    route: &Route,
) -> Result<(), ApiError> {
    let anonymous = matches!(
        route,
        Route::Health
            | Route::DashboardConfig
            | Route::TelemetryReport
            | Route::BillingWebhook
            | Route::AdminBillingEvents
            | Route::AdminRetryBillingEvent(_)
            | Route::AdminAudit
    ) || route.is_admin()
        || header(req, "Authorization").is_none();
    if !anonymous {
        return Ok(());
    }
    let address = client_address(req);
    if !matches!(route, Route::TelemetryReport) {
        return charge_address(&address, config);
    }
    let claimed: String = header(req, DEPLOYMENT_HEADER)
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect();
    BY_DEPLOYMENT
        .with(|b| {
            b.borrow_mut().take(
                &format!("{claimed} {address}"),
                config.telemetry_rate,
                JsClock.now_ms(),
            )
        })
        .map_err(|wait| rate_limited(wait, "deployment and address"))
}

/// The client's address as Cloudflare gives it; locally it may be absent (one shared bucket then).
pub(super) fn client_address(req: &Request) -> String {
    header(req, "CF-Connecting-IP").unwrap_or_else(|| "unknown".into())
}

/// Takes one request from `address`'s allowance for requests without a user's token.
pub(super) fn charge_address(address: &str, config: &ServiceConfig) -> Result<(), ApiError> {
    BY_ADDRESS
        .with(|b| {
            b.borrow_mut()
                .take(address, config.unauthenticated_rate, JsClock.now_ms())
        })
        .map_err(|wait| rate_limited(wait, "address"))
}

fn rate_limited(wait_s: u64, per: &str) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        format!("Too many requests without a user's token from this {per}; retry in {wait_s} s."),
    )
    .with_headers(vec![("Retry-After", wait_s.to_string())])
}

fn preflight(config: &ServiceConfig, origin: Option<&str>) -> Result<Reply, ApiError> {
    match origin {
        Some(origin) if config.cors.allows(origin) => {
            Ok(Reply::Preflight(config.cors.preflight_headers(origin)))
        }
        _ => Err(ApiError::new(
            ErrorCode::CorsOriginNotAllowed,
            "This origin is not allowed to call the API from a browser.",
        )),
    }
}

async fn health(store: &D1Store) -> Result<Reply, ApiError> {
    match store.ping().await {
        Ok(()) => Ok(Reply::Json(
            200,
            json!({ "status": "ok", "version": VERSION, "d1": "ok" }),
        )),
        Err(e) => Err(ApiError::unavailable(
            "The database is not reachable.",
            format!("health: {}", e.0),
        )
        .with_details(json!({ "version": VERSION, "d1": "unreachable" }))),
    }
}
