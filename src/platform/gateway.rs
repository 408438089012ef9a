//! The invocation gateway: `POST /v1/invoke/{agentId}` (JSON) and `…/stream` (SSE).
//!
//! Hot path: one D1 read (caller, agent, active deployment, entitlement overrides and the period's usage in a
//! single query), then the `UserGate` reservation and the `SessionMap` lookup issued together (one Durable
//! Object round trip of latency), then the agent. Gateway-side metering is written after the response, with
//! `waitUntil`.
//!
//! Counting policy: a call takes one request of the period when the gate grants it, before the agent is
//! called. Calls refused earlier (bad input, unknown agent, disabled agent, no active deployment, not entitled,
//! token or compute quota spent, over the limit) never take one. A granted reservation is given back when the
//! call then fails before any request reached the agent (the session store failed, or the agent could not be
//! reached at all). Once the agent may have started work — any answer, a timeout, a broken stream, a client
//! that went away — it counts.

use super::d1_gateway::{Invocation, InvokeRow};
use super::d1_store::D1Store;
use super::{header, read_json, JsClock, Reply};
use crate::app::ports::Clock;
use crate::app::users;
use crate::auth::{jwt, Identity};
use crate::config::ServiceConfig;
use crate::domain::agent::AgentStatus;
use crate::domain::api_key;
use crate::domain::deployment::DEFAULT_INVOKE_PATH;
use crate::domain::entitlements::{not_entitled, Entitlements};
use crate::domain::ids::AgentId;
use crate::domain::ids::RequestId;
use crate::domain::invoke::{
    client_response, new_trace_id, InvokeRequest, UpstreamFailure, UpstreamTarget,
    MAX_INVOKE_BODY_BYTES, MAX_UPSTREAM_BODY_BYTES,
};
use crate::domain::period::PeriodKey;
use crate::domain::reservation::{GateDecision, GateRequest, RELEASE_PATH, RESERVE_PATH};
use crate::domain::session::{ResolveSession, ResolvedSession, RESOLVE_PATH};
use crate::domain::sse::{meta_event, StreamOutcome, StreamRelay};
use crate::domain::usage::check_quotas;
use crate::domain::{ApiError, ErrorCode};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use worker::{
    AbortController, ByteStream, Context, Delay, Env, EnvBinding, Fetch, Fetcher, Headers, Method,
    Request, RequestInit, Response,
};

#[wasm_bindgen]
extern "C" {
    /// The dispatch namespace binding (Workers for Platforms). workers-rs's own wrapper only has the
    /// one-argument `get`; this one passes per-invocation `limits`.
    #[wasm_bindgen(extends = js_sys::Object)]
    #[derive(Debug, Clone)]
    pub type DispatchNamespace;

    #[wasm_bindgen(method, catch, js_name = get)]
    fn get_with_options(
        this: &DispatchNamespace,
        name: &str,
        args: &JsValue,
        options: &JsValue,
    ) -> Result<worker::worker_sys::Fetcher, JsValue>;
}

impl EnvBinding for DispatchNamespace {
    // What the runtime calls the class of a dispatch namespace binding (and what the local emulation is named).
    const TYPE_NAME: &'static str = "DynamicDispatcher";
}

const DISPATCH_BINDING: &str = "DISPATCHER";

enum Caller {
    Identity(Identity),
    Key { hash: String },
}

fn invalid_api_key() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidApiKey,
        "The API key is not valid (unknown, malformed or revoked).",
    )
}

async fn identify(req: &Request, config: &ServiceConfig, now: i64) -> Result<Caller, ApiError> {
    let authorization = header(req, "Authorization");
    let token = jwt::bearer_token(authorization.as_deref())?;
    if api_key::looks_like_key(token) {
        if !api_key::is_well_formed(token) {
            return Err(invalid_api_key());
        }
        return Ok(Caller::Key {
            hash: api_key::hash(token),
        });
    }
    Ok(Caller::Identity(
        super::verify_identity(token, config, now).await?,
    ))
}

/// Where the gateway's time went, for `Server-Timing` (what `make bench` reports the overhead is made of).
/// On Workers the clock advances only across I/O, which is exactly what these laps measure.
struct Stopwatch {
    last: i64,
    laps: Vec<(&'static str, i64)>,
}

impl Stopwatch {
    fn start(now: i64) -> Self {
        Stopwatch {
            last: now,
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = JsClock.now_ms();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    fn header(&self) -> (&'static str, String) {
        let parts: Vec<String> = self
            .laps
            .iter()
            .map(|(name, ms)| format!("{name};dur={ms}"))
            .collect();
        ("Server-Timing", parts.join(", "))
    }
}

/// Where and how a call goes, from the row.
struct Route<'a> {
    row: &'a InvokeRow,
    agent_id: &'a str,
    deployment_id: &'a str,
}

/// Gateway-side metering for one call; written with `waitUntil` once the outcome is known.
struct Meter {
    trace_id: String,
    request_id: String,
    user_id: String,
    agent_id: String,
    deployment_id: Option<String>,
    api_key_id: Option<String>,
    period: PeriodKey,
    streaming: bool,
    started_at: i64,
}

impl Meter {
    fn record<'a>(
        &'a self,
        outcome: &'a str,
        upstream_status: Option<u16>,
        counted: bool,
    ) -> Invocation<'a> {
        Invocation {
            id: &self.trace_id,
            request_id: &self.request_id,
            user_id: &self.user_id,
            agent_id: &self.agent_id,
            deployment_id: self.deployment_id.as_deref(),
            api_key_id: self.api_key_id.as_deref(),
            period_key: self.period.to_string(),
            streaming: self.streaming,
            outcome,
            upstream_status,
            counted,
            started_at: self.started_at,
            wall_ms: (JsClock.now_ms() - self.started_at).max(0),
        }
    }

    /// Records now (in the background).
    fn finish(self, ctx: &Context, env: &Env, outcome: String, status: Option<u16>, counted: bool) {
        let env = env.clone();
        ctx.wait_until(async move {
            write_meter(&env, &self, &outcome, status, counted).await;
        });
    }

    /// Records when the stream ends or the client goes away (the sender is dropped).
    fn finish_after(self, ctx: &Context, env: &Env, rx: oneshot::Receiver<String>, status: u16) {
        let env = env.clone();
        ctx.wait_until(async move {
            let outcome = rx.await.unwrap_or_else(|_| "client_closed".into());
            write_meter(&env, &self, &outcome, Some(status), true).await;
        });
    }
}

async fn write_meter(env: &Env, meter: &Meter, outcome: &str, status: Option<u16>, counted: bool) {
    let result = match env.d1("DB") {
        Ok(db) => {
            D1Store::new(db)
                .record_invocation(&meter.record(outcome, status, counted))
                .await
        }
        Err(e) => Err(crate::app::ports::StoreError(e.to_string())),
    };
    if let Err(e) = result {
        worker::console_error!("metering {} failed: {}", meter.trace_id, e.0);
    }
}

pub(super) async fn invoke(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    config: &Rc<ServiceConfig>,
    request_id: &RequestId,
    raw_agent_id: &str,
    streaming: bool,
) -> Result<Reply, ApiError> {
    let started_at = JsClock.now_ms();
    let mut watch = Stopwatch::start(started_at);
    let caller = identify(req, config, started_at).await?;
    watch.lap("auth");
    let agent_id = AgentId::parse(raw_agent_id).ok_or_else(ApiError::agent_not_found)?;
    let (_, body): (_, Value) = read_json(req, MAX_INVOKE_BODY_BYTES).await?;
    let request = InvokeRequest::from_json(body)?;

    let store = D1Store::new(env.d1("DB").map_err(ApiError::internal)?);
    let period = PeriodKey::containing(started_at);
    let row = match &caller {
        Caller::Identity(identity) => {
            store
                .invoke_row_by_identity(&identity.issuer, &identity.subject, &agent_id, period)
                .await?
        }
        Caller::Key { hash } => store.invoke_row_by_key(hash, &agent_id, period).await?,
    };
    watch.lap("d1");
    let row = match (row, caller) {
        (Some(row), _) => row,
        (None, Caller::Key { .. }) => return Err(invalid_api_key()),
        (None, Caller::Identity(identity)) => {
            // First sight of this identity: they have a user now, and certainly no agents.
            users::resolve_user(&store, &JsClock, &identity).await?;
            return Err(ApiError::agent_not_found());
        }
    };
    // A key scoped to one agent answers for that agent only; the check precedes any lookup result, so it
    // tells nothing about other agents.
    if let Some(scope) = &row.key_agent_id {
        if scope != agent_id.as_str() {
            return Err(ApiError::new(
                ErrorCode::ApiKeyScopeMismatch,
                "This API key may only invoke the agent it was created for.",
            )
            .with_details(json!({ "keyId": row.key_id })));
        }
    }
    if row.agent_id.is_none() {
        return Err(ApiError::agent_not_found());
    }
    let user = row.user()?;
    let entitlements = config.tiers.resolve(user.tier, &user.overrides);
    let meter = Meter {
        trace_id: new_trace_id(),
        request_id: request_id.as_str().to_owned(),
        user_id: user.id.as_str().to_owned(),
        agent_id: agent_id.as_str().to_owned(),
        deployment_id: row.deployment_id.clone(),
        api_key_id: row.key_id.clone(),
        period,
        streaming,
        started_at,
    };
    match admit(&row, &entitlements, streaming, period, started_at) {
        Ok(deployment_id) => {
            let route = Route {
                row: &row,
                agent_id: agent_id.as_str(),
                deployment_id,
            };
            call(
                env,
                ctx,
                config,
                &route,
                &entitlements,
                &request,
                meter,
                streaming,
                watch,
            )
            .await
        }
        Err(err) => {
            meter.finish(ctx, env, err.code.as_str().to_owned(), None, false);
            Err(err)
        }
    }
}

/// Checks made before any reservation: the agent is enabled, has an active deployment, the user is entitled
/// to its runtime (defense in depth: deploy checked too, but entitlements can change) and to streaming, and
/// the period's token and compute quotas are not spent.
fn admit<'a>(
    row: &'a InvokeRow,
    entitlements: &Entitlements,
    streaming: bool,
    period: PeriodKey,
    now: i64,
) -> Result<&'a str, ApiError> {
    if row.agent_status.as_deref() != Some(AgentStatus::Active.as_str()) {
        return Err(ApiError::new(
            ErrorCode::AgentDisabled,
            "This agent is disabled; enable it to invoke it.",
        ));
    }
    let Some(deployment_id) = row.deployment_id.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::NoActiveDeployment,
            "This agent has no active deployment. Deploy it (or activate a deployment) first.",
        ));
    };
    entitlements.require_runtime(row.runtime_provider.as_deref().unwrap_or_default())?;
    if streaming && !entitlements.streaming {
        return Err(not_entitled(
            "streaming",
            "Your plan does not include streaming; use POST /v1/invoke/{agentId}.".into(),
        ));
    }
    check_quotas(&row.usage(), entitlements, period, now)?;
    Ok(deployment_id)
}

/// `X-RateLimit-*` (and, when refused, `Retry-After`) from the gate's decision.
fn rate_limit_headers(d: &GateDecision, now_ms: i64) -> Vec<(&'static str, String)> {
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

pub(super) async fn do_call<T: DeserializeOwned>(
    env: &Env,
    binding: &str,
    object: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T, String> {
    let run = async {
        let stub = env
            .durable_object(binding)?
            .id_from_name(object)?
            .get_stub()?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(
                &serde_json::to_string(body)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?,
            )));
        let mut res = stub
            .fetch_with_request(Request::new_with_init(&format!("https://do{path}"), &init)?)
            .await?;
        let status = res.status_code();
        let text = res.text().await?;
        if status != 200 {
            return Err(worker::Error::RustError(format!(
                "{binding} answered {status}: {text}"
            )));
        }
        serde_json::from_str(&text).map_err(|e| worker::Error::RustError(e.to_string()))
    };
    run.await.map_err(|e: worker::Error| e.to_string())
}

fn dependency_down(what: &str, cause: String) -> ApiError {
    ApiError {
        internal_cause: Some(format!("{what}: {cause}")),
        ..ApiError::new(
            ErrorCode::DependencyUnavailable,
            format!("The {what} is unavailable; the call was not made. Retry shortly."),
        )
    }
}

#[allow(clippy::too_many_arguments)]
async fn call(
    env: &Env,
    ctx: &Context,
    config: &ServiceConfig,
    route: &Route<'_>,
    entitlements: &Entitlements,
    request: &InvokeRequest,
    meter: Meter,
    streaming: bool,
    mut watch: Stopwatch,
) -> Result<Reply, ApiError> {
    let gate_request = GateRequest {
        period_key: meter.period,
        limit: entitlements.requests_per_period,
    };
    let user_id = meter.user_id.clone();
    let session_object = format!("{user_id}:{}", route.agent_id);
    let session_request = ResolveSession {
        session_id: request.session_id.clone(),
    };
    // Both before the agent is called, issued together: one round trip of latency.
    let (gate, session) = futures_util::future::join(
        do_call::<GateDecision>(env, "USER_GATE", &user_id, RESERVE_PATH, &gate_request),
        do_call::<ResolvedSession>(
            env,
            "SESSION_MAP",
            &session_object,
            RESOLVE_PATH,
            &session_request,
        ),
    )
    .await;
    watch.lap("do");
    let decision = match gate {
        Ok(d) => d,
        Err(cause) => {
            // Fail closed: without the gate the limit cannot be enforced.
            let err = dependency_down("request gate", cause);
            meter.finish(ctx, env, err.code.as_str().into(), None, false);
            return Err(err);
        }
    };
    let limit_headers = rate_limit_headers(&decision, JsClock.now_ms());
    if !decision.granted {
        let err = ApiError::new(
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
        .with_headers(limit_headers);
        meter.finish(ctx, env, err.code.as_str().into(), None, false);
        return Err(err);
    }
    let release = |env: &Env| {
        let env = env.clone();
        let user_id = user_id.clone();
        async move {
            if let Err(e) =
                do_call::<GateDecision>(&env, "USER_GATE", &user_id, RELEASE_PATH, &gate_request)
                    .await
            {
                worker::console_error!("releasing a reservation for {user_id} failed: {e}");
            }
        }
    };
    let session = match session {
        Ok(s) => s,
        Err(cause) => {
            release(env).await;
            let err = dependency_down("session store", cause).with_headers(limit_headers);
            meter.finish(ctx, env, err.code.as_str().into(), None, false);
            return Err(err);
        }
    };

    let target = UpstreamTarget {
        deployment_id: route.deployment_id.to_owned(),
    };
    let sending = send(
        env,
        route,
        entitlements,
        request.upstream_body(&session.runtime_session_id),
        &meter.trace_id,
        &meter.request_id,
        streaming,
        config.invoke_timeout_ms,
    );
    let upstream = if streaming {
        // A stream is recorded as it starts (while the agent is being called, so it adds no latency) as
        // `client_closed`, and completed with its real outcome when it ends. If the client goes away, the
        // runtime cancels the request and with it any later write; the row then still says what happened.
        let (upstream, ()) = futures_util::future::join(
            sending,
            write_meter(env, &meter, "client_closed", None, true),
        )
        .await;
        upstream
    } else {
        sending.await
    };
    let mut upstream = match upstream {
        Ok(res) => res,
        Err(failure) => {
            let unreachable = matches!(failure, UpstreamFailure::Network(_));
            if unreachable {
                // Nothing reached the agent: the request is given back (see the module's counting policy).
                release(env).await;
            }
            let headers = if unreachable {
                // The client's view of what is left includes the request just given back.
                let given_back = GateDecision {
                    used: decision.used.saturating_sub(1),
                    remaining: decision.remaining + 1,
                    ..decision
                };
                rate_limit_headers(&given_back, JsClock.now_ms())
            } else {
                limit_headers
            };
            let err = target.failure(failure, streaming).with_headers(headers);
            meter.finish(ctx, env, err.code.as_str().into(), None, !unreachable);
            return Err(err);
        }
    };

    watch.lap("agent");
    let status = upstream.status_code();
    let mut headers = limit_headers;
    headers.push(watch.header());
    headers.push(("X-Deployment-Id", route.deployment_id.to_owned()));
    headers.push(("X-Trace-Id", meter.trace_id.clone()));
    let timeout_ms = config.invoke_timeout_ms;

    if !(200..300).contains(&status) {
        let body = read_bounded(&mut upstream, timeout_ms)
            .await
            .unwrap_or_default();
        let err = target
            .failure(UpstreamFailure::Status { status, body }, streaming)
            .with_headers(headers);
        meter.finish(ctx, env, err.code.as_str().into(), Some(status), true);
        return Err(err);
    }

    let content_type = upstream
        .headers()
        .get("Content-Type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let client_session = session.session_id.clone();

    if !streaming {
        let outcome = match read_bounded(&mut upstream, timeout_ms).await {
            Ok(body) => client_response(&body, &client_session, &meter.trace_id, &target),
            Err(failure) => Err(target.failure(failure, false)),
        };
        return match outcome {
            Ok(answer) => {
                meter.finish(ctx, env, "ok".into(), Some(status), true);
                Ok(Reply::JsonWith(200, answer, headers))
            }
            Err(err) => {
                meter.finish(ctx, env, err.code.as_str().into(), Some(status), true);
                Err(err.with_headers(headers))
            }
        };
    }

    let meta = meta_event(&meter.trace_id, &client_session, route.deployment_id);
    let (tx, rx) = oneshot::channel();
    meter.finish_after(ctx, env, rx, status);
    let body = if content_type.contains("text/event-stream") {
        let source = upstream.stream().map_err(ApiError::internal)?;
        relay(meta, source, target, timeout_ms, tx)
    } else {
        // A whole answer on the stream endpoint: wrapped into events once read.
        let mut relay = StreamRelay::default();
        let mut bytes = meta;
        match read_bounded(&mut upstream, timeout_ms).await {
            Ok(body) => bytes.extend(relay.wrap_whole(&content_type, &body)),
            Err(failure) => bytes.extend(relay.fail(&target.failure(failure, true))),
        }
        let _ = tx.send(outcome_name(relay.outcome()));
        futures_util::stream::once(async move { Ok::<Vec<u8>, worker::Error>(bytes) }).boxed_local()
    };
    let response = Response::from_stream(body).map_err(ApiError::internal)?;
    let response_headers = Headers::new();
    response_headers
        .set("Content-Type", "text/event-stream; charset=utf-8")
        .map_err(ApiError::internal)?;
    for (name, value) in headers {
        response_headers
            .set(name, &value)
            .map_err(ApiError::internal)?;
    }
    Ok(Reply::Stream(response.with_headers(response_headers)))
}

fn outcome_name(outcome: Option<StreamOutcome>) -> String {
    match outcome {
        Some(StreamOutcome::Done) => "ok".into(),
        Some(StreamOutcome::AgentError) => ErrorCode::AgentError.as_str().into(),
        Some(StreamOutcome::Failed(code)) => code.as_str().into(),
        None => "client_closed".into(),
    }
}

/// Forwards the agent's SSE as it arrives. Dropping this stream (the client went away) drops the upstream
/// reader, which cancels the agent's response body.
fn relay(
    meta: Vec<u8>,
    source: ByteStream,
    target: UpstreamTarget,
    timeout_ms: u64,
    tx: oneshot::Sender<String>,
) -> futures_util::stream::LocalBoxStream<'static, Result<Vec<u8>, worker::Error>> {
    struct State {
        meta: Option<Vec<u8>>,
        source: Option<ByteStream>,
        relay: StreamRelay,
        target: UpstreamTarget,
        timeout_ms: u64,
        tx: Option<oneshot::Sender<String>>,
    }
    impl State {
        fn report(&mut self) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(outcome_name(self.relay.outcome()));
            }
        }
    }
    let state = State {
        meta: Some(meta),
        source: Some(source),
        relay: StreamRelay::default(),
        target,
        timeout_ms,
        tx: Some(tx),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(meta) = st.meta.take() {
            return Some((Ok(meta), st));
        }
        loop {
            if st.relay.is_finished() {
                // Stop reading the agent at once (cancels its body) and record the outcome.
                st.source = None;
                st.report();
                return None;
            }
            let source = st.source.as_mut()?;
            let out = match within(st.timeout_ms, source.next()).await {
                Some(Some(Ok(chunk))) => st.relay.feed(&chunk),
                Some(Some(Err(e))) => {
                    worker::console_log!("agent stream {} broke: {e}", st.target.deployment_id);
                    st.relay.fail(&ApiError::new(
                        ErrorCode::UpstreamInterrupted,
                        "The agent's stream broke off.",
                    ))
                }
                Some(None) => st.relay.end(),
                None => st.relay.fail(&st.target.failure(
                    UpstreamFailure::Timeout {
                        after_ms: st.timeout_ms,
                    },
                    true,
                )),
            };
            if !out.is_empty() {
                return Some((Ok(out), st));
            }
        }
    })
    .boxed_local()
}

/// `future`'s output, or `None` when `timeout_ms` pass first (the future is then dropped).
async fn within<F: std::future::Future>(timeout_ms: u64, future: F) -> Option<F::Output> {
    match select(
        Box::pin(future),
        Delay::from(Duration::from_millis(timeout_ms)),
    )
    .await
    {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Reads a whole upstream body, up to `MAX_UPSTREAM_BODY_BYTES` (more is an invalid response) and within the
/// time limit.
async fn read_bounded(res: &mut Response, timeout_ms: u64) -> Result<Vec<u8>, UpstreamFailure> {
    let status = res.status_code();
    let mut stream = match res.stream() {
        Ok(s) => s,
        Err(_) => return Ok(Vec::new()),
    };
    let read = async move {
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| UpstreamFailure::Network(e.to_string()))?;
            if body.len() + chunk.len() > MAX_UPSTREAM_BODY_BYTES {
                body.truncate(MAX_UPSTREAM_BODY_BYTES.min(body.len()));
                return Err(UpstreamFailure::InvalidResponse { status, body });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    within(timeout_ms, read)
        .await
        .unwrap_or(Err(UpstreamFailure::Timeout {
            after_ms: timeout_ms,
        }))
}

/// Sends the invocation to the agent's active deployment and waits (bounded) for the response head.
#[allow(clippy::too_many_arguments)]
async fn send(
    env: &Env,
    route: &Route<'_>,
    entitlements: &Entitlements,
    body: Vec<u8>,
    trace_id: &str,
    request_id: &str,
    streaming: bool,
    timeout_ms: u64,
) -> Result<Response, UpstreamFailure> {
    let row = route.row;
    let invoke_path = row.invoke_path.as_deref().unwrap_or(DEFAULT_INVOKE_PATH);
    // Only what the agent needs: never the caller's credentials or cookies.
    let headers = Headers::new();
    let set = |name: &str, value: &str| {
        headers
            .set(name, value)
            .map_err(|e| UpstreamFailure::Network(e.to_string()))
    };
    set("Content-Type", "application/json")?;
    set(
        "Accept",
        if streaming {
            "text/event-stream"
        } else {
            "application/json"
        },
    )?;
    set("X-Trace-Id", trace_id)?;
    set("X-Request-Id", request_id)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));

    let network = |e: worker::Error| UpstreamFailure::Network(e.to_string());
    let abort = AbortController::default();
    let pending: std::pin::Pin<Box<dyn std::future::Future<Output = worker::Result<Response>>>> =
        match row.deploy_target.as_deref() {
            Some("dispatch_namespace") => {
                let script = row.script_name.clone().unwrap_or_default();
                let namespace: DispatchNamespace =
                    env.get_binding(DISPATCH_BINDING).map_err(|e| {
                        UpstreamFailure::Network(format!(
                            "no {DISPATCH_BINDING} dispatch namespace binding: {e}"
                        ))
                    })?;
                let limits = json!({ "limits": {
                    "cpuMs": entitlements.cpu_ms_per_invocation,
                    "subRequests": entitlements.subrequests_per_invocation,
                }});
                // Through JSON so the binding receives plain objects (serde-wasm-bindgen would make Maps).
                let options = js_sys::JSON::parse(&limits.to_string())
                    .map_err(|e| UpstreamFailure::Network(format!("{e:?}")))?;
                let fetcher: Fetcher = namespace
                    .get_with_options(&script, &JsValue::UNDEFINED, &options)
                    .map_err(|e| UpstreamFailure::Network(format!("{e:?}")))?
                    .into();
                let request = Request::new_with_init(
                    &format!("https://{script}.dispatch.internal{invoke_path}"),
                    &init,
                )
                .map_err(network)?;
                Box::pin(async move { fetcher.fetch_request(request).await })
            }
            _ => {
                let base = row.provider_ref.clone().unwrap_or_default();
                let url = format!("{}{invoke_path}", base.trim_end_matches('/'));
                let request = Request::new_with_init(&url, &init).map_err(network)?;
                let signal = abort.signal();
                Box::pin(async move { Fetch::Request(request).send_with_signal(&signal).await })
            }
        };
    match within(timeout_ms, pending).await {
        Some(Ok(res)) => Ok(res),
        Some(Err(e)) => Err(network(e)),
        None => {
            abort.abort();
            Err(UpstreamFailure::Timeout {
                after_ms: timeout_ms,
            })
        }
    }
}
