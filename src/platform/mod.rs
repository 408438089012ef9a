//! The Workers adapter: turns a `worker::Request` into calls on the pure core and the result into a
//! `worker::Response`. Every response — success or error — leaves through `respond`, which adds the request id,
//! CORS headers and, for errors, the envelope.

mod admin;
mod api_keys;
mod bindings;
mod cloudflare;
mod d1_deployments;
mod d1_gate;
mod d1_gateway;
mod d1_store;
mod d1_telemetry;
mod durable;
mod gateway;
mod identity;
mod jwks;
mod telemetry;

// What the Durable Object shells (durable_objects/) use of the adapter.
pub(crate) use bindings::{d1_database, TIER_ENTITLEMENTS_VAR};
pub(crate) use d1_store::D1Store;

use crate::app::deployments::{self, deploys_not_configured};
use crate::app::ports::{Clock, Store};
use crate::app::{agents, secrets};
use crate::config::{DeployConfig, ServiceConfig, CONFIG_VARS};
use crate::domain::agent::AgentStatus;
use crate::domain::ids::RequestId;
use crate::domain::{ApiError, ErrorCode};
use crate::http::body::{
    check_declared_length, check_json_content_type, parse_json_limited, too_large,
    MAX_DEPLOY_BODY_BYTES, MAX_JSON_BODY_BYTES,
};
use crate::http::envelope::{error_body, error_headers};
use crate::http::routes::{match_route, Route, RouteMiss};
use cloudflare::FetchProvider;
use durable::user_gate::UserGateClient;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use worker::{
    console_error, console_log, event, Context, Env, Headers, Method, Request, Response,
    ScheduleContext, ScheduledEvent,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

struct JsClock;

impl Clock for JsClock {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }
}

/// A successful outcome before headers are added.
enum Reply {
    Json(u16, Value),
    /// JSON with extra headers (e.g. `X-RateLimit-*` on an invocation).
    JsonWith(u16, Value, Vec<(&'static str, String)>),
    NoContent,
    Preflight(Vec<(&'static str, String)>),
    /// A response built elsewhere (a stream); only the common headers are added.
    Stream(Response),
}

fn json_reply<T: Serialize>(status: u16, value: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(value)
        .map(|v| Reply::Json(status, v))
        .map_err(ApiError::internal)
}

/// The raw values of `CONFIG_VARS`, in order: the key the parsed configuration is cached under.
type RawConfig = Vec<Option<String>>;

thread_local! {
    // Parsing the configuration (RSA keys included) once per isolate, keyed by the raw values so a changed
    // variable is picked up without a redeploy of the code.
    static CONFIG: RefCell<Option<(RawConfig, Rc<ServiceConfig>)>> = const { RefCell::new(None) };
}

fn read_var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
}

fn load_config(env: &Env) -> Result<Rc<ServiceConfig>, ApiError> {
    let raw: RawConfig = CONFIG_VARS.iter().map(|name| read_var(env, name)).collect();
    if let Some(config) = CONFIG.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(cached_raw, _)| *cached_raw == raw)
            .map(|(_, config)| config.clone())
    }) {
        return Ok(config);
    }
    let values: HashMap<&str, Option<String>> = CONFIG_VARS
        .iter()
        .copied()
        .zip(raw.iter().cloned())
        .collect();
    let config =
        ServiceConfig::from_vars(|name| values.get(name).cloned().flatten()).map_err(|reason| {
            ApiError {
                internal_cause: Some(format!("configuration: {reason}")),
                ..ApiError::new(
                    ErrorCode::ServerMisconfigured,
                    "The service is misconfigured; the operator has been told why in the logs.",
                )
            }
        })?;
    let config = Rc::new(config);
    CONFIG.with(|c| *c.borrow_mut() = Some((raw, config.clone())));
    Ok(config)
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let request_id = RequestId::accept_or_generate(header(&req, "X-Request-Id").as_deref());
    let origin = header(&req, "Origin");
    let config = load_config(&env);
    let outcome = match &config {
        Ok(config) => handle(req, &env, &ctx, config, &request_id).await,
        Err(e) => Err(e.clone()),
    };
    let cors = match &config {
        Ok(config) => config.cors.response_headers(origin.as_deref()),
        Err(_) => Vec::new(),
    };
    respond(outcome, &request_id, cors)
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

fn respond(
    outcome: Result<Reply, ApiError>,
    request_id: &RequestId,
    cors: Vec<(&'static str, String)>,
) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("X-Request-Id", request_id.as_str())?;
    headers.set("Cache-Control", "no-store")?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    // A preflight answer carries its own CORS set instead of the one every other response gets.
    let (status, body, headers_to_add) = match outcome {
        Ok(Reply::Stream(mut response)) => {
            let h = response.headers_mut();
            h.set("X-Request-Id", request_id.as_str())?;
            h.set("Cache-Control", "no-store")?;
            h.set("X-Content-Type-Options", "nosniff")?;
            for (name, value) in cors {
                h.set(name, &value)?;
            }
            return Ok(response);
        }
        Ok(Reply::Json(status, value)) => (status, Some(value), cors),
        Ok(Reply::JsonWith(status, value, mut extra)) => {
            extra.extend(cors);
            (status, Some(value), extra)
        }
        Ok(Reply::NoContent) => (204, None, cors),
        Ok(Reply::Preflight(preflight)) => (204, None, preflight),
        Err(err) => {
            if let Some(cause) = &err.internal_cause {
                console_error!("request {request_id} failed with {}: {cause}", err.code);
            }
            let mut error_headers = error_headers(&err);
            error_headers.extend(cors);
            (
                err.status(),
                Some(error_body(&err, request_id.as_str())),
                error_headers,
            )
        }
    };
    for (name, value) in headers_to_add {
        headers.set(name, &value)?;
    }
    match body {
        Some(value) => {
            headers.set("Content-Type", "application/json; charset=utf-8")?;
            Ok(Response::from_bytes(value.to_string().into_bytes())?
                .with_status(status)
                .with_headers(headers))
        }
        None => Ok(Response::empty()?.with_status(status).with_headers(headers)),
    }
}

/// The cron trigger (wrangler.toml `[triggers]`): the usage rollup (recompute, finalize, prune), then the
/// deploy clean-up (fails stuck deploys and deletes unneeded scripts).
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let config = match load_config(&env) {
        Ok(config) => config,
        Err(e) => {
            console_error!(
                "scheduled jobs skipped: {}",
                e.internal_cause.unwrap_or(e.message)
            );
            return;
        }
    };
    match env.d1("DB").map(D1Store::new) {
        Ok(store) => match telemetry::run_rollups(&store, &config).await {
            Ok(run) => console_log!(
                "usage rollup: {} periods recomputed ({} drifted users corrected), {} raw events pruned",
                run.recomputed.len(),
                run.recomputed.iter().map(|r| r.drifted).sum::<u64>(),
                run.pruned_events
            ),
            Err(e) => console_error!(
                "usage rollup failed: {}",
                e.internal_cause.unwrap_or(e.message)
            ),
        },
        Err(e) => console_error!("usage rollup skipped: no database: {e}"),
    }
    let Some(deploy) = &config.deploy else { return };
    match clean_up(&env, deploy).await {
        Ok((failed, deleted)) => {
            console_log!("clean-up: {failed} stuck deployments failed, {deleted} scripts deleted")
        }
        Err(e) => console_error!("clean-up failed: {}", e.internal_cause.unwrap_or(e.message)),
    }
}

async fn clean_up(env: &Env, deploy: &DeployConfig) -> Result<(u32, u32), ApiError> {
    let store = D1Store::new(env.d1("DB").map_err(ApiError::internal)?);
    let provider = FetchProvider {
        base_url: &deploy.api_base_url,
        api_token: &deploy.api_token,
    };
    deployments::clean_up(&store, &provider, &JsClock, deploy).await
}

/// Runs `work` after the response is sent (the deploy itself, clean-up after a delete).
fn in_background(ctx: &Context, env: &Env, config: &Rc<ServiceConfig>, work: Background) {
    let env = env.clone();
    let config = config.clone();
    ctx.wait_until(async move {
        let Some(deploy) = &config.deploy else { return };
        let outcome = match work {
            Background::Deploy(pending) => {
                let id = pending.deployment.id.clone();
                let store = match env.d1("DB") {
                    Ok(db) => D1Store::new(db),
                    Err(e) => return console_error!("deploy {id}: no database: {e}"),
                };
                let provider = FetchProvider {
                    base_url: &deploy.api_base_url,
                    api_token: &deploy.api_token,
                };
                deployments::run_deploy(
                    &store,
                    &UserGateClient::new(&env),
                    &provider,
                    &JsClock,
                    deploy,
                    *pending,
                )
                .await
                .map(|status| console_log!("deploy {id} finished {}", status.as_str()))
            }
            Background::CleanUp => clean_up(&env, deploy).await.map(|_| ()),
        };
        if let Err(e) = outcome {
            console_error!(
                "background work failed: {}",
                e.internal_cause.unwrap_or(e.message)
            );
        }
    });
}

enum Background {
    Deploy(Box<deployments::PendingDeploy>),
    CleanUp,
}

async fn handle(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    config: &Rc<ServiceConfig>,
    request_id: &RequestId,
) -> Result<Reply, ApiError> {
    let method = req.method();
    let url = req.url().map_err(ApiError::internal)?;
    let path = url.path().to_owned();

    if method == Method::Options && header(&req, "Access-Control-Request-Method").is_some() {
        return preflight(config, header(&req, "Origin").as_deref());
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

    let store = D1Store::new(env.d1("DB").map_err(ApiError::internal)?);
    let clock = JsClock;
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();

    match &route {
        Route::Health => return health(&store).await,
        Route::Invoke(agent, streaming) => {
            return gateway::invoke(&mut req, env, ctx, config, request_id, agent, *streaming).await
        }
        // Authenticated by the deployment's signature, not a user's credentials.
        Route::TelemetryReport => {
            return telemetry::report(&mut req, env, &store, config, request_id).await
        }
        r if r.is_admin() => {
            return admin::handle(
                &mut req,
                &store,
                &UserGateClient::new(env),
                config,
                request_id,
                &route,
            )
            .await
        }
        _ => {}
    }
    let user =
        identity::authenticate(header(&req, "Authorization").as_deref(), config, &store).await?;
    let gate = UserGateClient::new(env);
    // Only the routes that need them resolve the caller's entitlements.
    let entitlements = || config.tiers.resolve(user.tier, &user.overrides);

    match route {
        Route::Health
        | Route::Invoke(..)
        | Route::AdminSetTier(_)
        | Route::AdminSetEntitlements(_)
        | Route::AdminUsage(_)
        | Route::AdminRefreshGate(_)
        | Route::AdminRecompute
        | Route::TelemetryReport => unreachable!("answered before user authentication"),
        Route::UsageCurrent => telemetry::current(env, &store, config, &user).await,
        Route::UsageHistory => telemetry::history(&store, &user, &query).await,
        Route::MetricsRecent => telemetry::recent(&store, &user, &query).await,
        Route::Me => {
            let mut me = serde_json::to_value(&user).map_err(ApiError::internal)?;
            me["entitlements"] =
                serde_json::to_value(entitlements()).map_err(ApiError::internal)?;
            Ok(Reply::Json(200, me))
        }
        Route::ListApiKeys => api_keys::list(&store, &user).await,
        Route::CreateApiKey => {
            let (_, body) = read_json(&mut req, MAX_JSON_BODY_BYTES).await?;
            api_keys::create(&store, &clock, &user, body).await
        }
        Route::RevokeApiKey(id) => api_keys::revoke(&store, &gate, &clock, &user, &id).await,
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
            let (_, body) = read_json(&mut req, MAX_JSON_BODY_BYTES).await?;
            json_reply(
                201,
                &agents::create_agent(&store, &clock, &user, body, entitlements().max_agents)
                    .await?,
            )
        }
        Route::GetAgent(id) => json_reply(200, &agents::get_agent(&store, &user, &id).await?),
        Route::UpdateAgent(id) => {
            let (_, body) = read_json(&mut req, MAX_JSON_BODY_BYTES).await?;
            json_reply(
                200,
                &agents::update_agent(&store, &clock, &user, &id, body).await?,
            )
        }
        Route::DeleteAgent(id) => {
            agents::delete_agent(&store, &gate, &clock, &user, &id).await?;
            if config.deploy.is_some() {
                in_background(ctx, env, config, Background::CleanUp);
            }
            Ok(Reply::NoContent)
        }
        Route::DisableAgent(id) => json_reply(
            200,
            &agents::set_agent_status(&store, &gate, &clock, &user, &id, AgentStatus::Disabled)
                .await?,
        ),
        Route::EnableAgent(id) => json_reply(
            200,
            &agents::set_agent_status(&store, &gate, &clock, &user, &id, AgentStatus::Active)
                .await?,
        ),
        Route::Deploy(id) => {
            let deploy = config.deploy.as_ref().ok_or_else(deploys_not_configured)?;
            entitlements().require_runtime(deployments::RUNTIME_PROVIDER)?;
            let (raw, body) = read_json(&mut req, MAX_DEPLOY_BODY_BYTES).await?;
            let key = header(&req, "Idempotency-Key");
            let (deployment, pending) = deployments::request_deploy(
                &store,
                &clock,
                deploy,
                &user,
                &id,
                &raw,
                body,
                key.as_deref(),
            )
            .await?;
            if let Some(pending) = pending {
                in_background(ctx, env, config, Background::Deploy(Box::new(pending)));
            }
            json_reply(202, &deployment)
        }
        Route::ListDeployments(id) => {
            let query = query.into_iter().collect();
            json_reply(
                200,
                &json!({ "deployments": deployments::list_deployments(&store, &user, &id, &query).await? }),
            )
        }
        Route::GetDeployment(agent, dep) => json_reply(
            200,
            &deployments::get_deployment(&store, &user, &agent, &dep).await?,
        ),
        Route::ActivateDeployment(agent, dep) => json_reply(
            200,
            &deployments::activate_deployment(&store, &gate, &clock, &user, &agent, &dep).await?,
        ),
        Route::ListSecrets(id) => json_reply(
            200,
            &json!({ "secrets": secrets::list_secrets(&store, &user, &id).await? }),
        ),
        Route::PutSecret(id, name) => {
            let deploy = config.deploy.as_ref().ok_or_else(deploys_not_configured)?;
            let (_, body) = read_json(&mut req, MAX_JSON_BODY_BYTES).await?;
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
        Err(e) => Err(ApiError {
            internal_cause: Some(format!("health: {}", e.0)),
            ..ApiError::new(
                ErrorCode::DependencyUnavailable,
                "The database is not reachable.",
            )
            .with_details(json!({ "version": VERSION, "d1": "unreachable" }))
        }),
    }
}

/// Reads a JSON body, refusing a wrong content type, a declared or actual size over `limit` (without
/// buffering more than the limit), and malformed JSON. Returns the raw bytes too (idempotency hashes them).
async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    limit: usize,
) -> Result<(Vec<u8>, T), ApiError> {
    check_json_content_type(header(req, "Content-Type").as_deref())?;
    check_declared_length(header(req, "Content-Length").as_deref(), limit)?;
    let body = read_body(req, limit).await?;
    let value = parse_json_limited(&body, limit)?;
    Ok((body, value))
}

/// The raw body, refused with 413 as soon as it passes `limit` bytes (never buffering more).
async fn read_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let mut stream = req.stream().map_err(ApiError::internal)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::internal)?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
