//! The invocation gateway: `POST /v1/invoke/{agentId}` (JSON) and `…/stream` (SSE), the Workers side of
//! `app::invoke`.
//!
//! Hot path in the steady state: the caller from the isolate's caches (`identity`), then one round trip to the
//! user's gate (routing, entitlements, quotas, the reservation and the session together), then the agent. No
//! D1 read: the gate answers from its memory and storage. Gateway-side metering is written after the response,
//! with `waitUntil`. The counting policy is `app::invoke`'s.

use super::bindings::{d1_database, DISPATCHER_BINDING};
use super::d1_store::D1Store;
use super::durable::user_gate::UserGateClient;
use super::identity::{credential, invoke_caller};
use super::{header, read_json, JsClock, Reply};
use crate::app::gate::protocol::DeploymentTarget;
use crate::app::invoke::{
    given_back, gives_back, prepare, rate_limit_headers, stream_outcome, Admitted, InvokeGate,
    Meter, Refused,
};
use crate::app::ports::Clock;
use crate::config::ServiceConfig;
use crate::domain::ids::{AgentId, RequestId};
use crate::domain::invoke::{
    client_response, new_trace_id, InvokeRequest, UpstreamFailure, UpstreamTarget,
    MAX_INVOKE_BODY_BYTES, MAX_UPSTREAM_BODY_BYTES,
};
use crate::domain::period::PeriodKey;
use crate::domain::sse::{meta_event, StreamRelay};
use crate::domain::{ApiError, ErrorCode};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
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

async fn write_meter(env: &Env, meter: &Meter, outcome: &str, status: Option<u16>, counted: bool) {
    let row = meter.row(outcome, status, counted, JsClock.now_ms());
    let result = match d1_database(env) {
        Ok(db) => D1Store::new(db).record_invocation(&row).await,
        Err(e) => Err(crate::app::ports::StoreError(e.message)),
    };
    if let Err(e) = result {
        worker::console_error!("metering {} failed: {}", meter.trace_id, e.0);
    }
}

/// Records now (in the background).
fn finish(
    ctx: &Context,
    env: &Env,
    meter: Meter,
    outcome: String,
    status: Option<u16>,
    counted: bool,
) {
    let env = env.clone();
    ctx.wait_until(async move {
        write_meter(&env, &meter, &outcome, status, counted).await;
    });
}

/// Records when the stream ends or the client goes away (the sender is dropped).
fn finish_after(
    ctx: &Context,
    env: &Env,
    meter: Meter,
    rx: oneshot::Receiver<String>,
    status: u16,
) {
    let env = env.clone();
    ctx.wait_until(async move {
        let outcome = rx.await.unwrap_or_else(|_| "client_closed".into());
        write_meter(&env, &meter, &outcome, Some(status), true).await;
    });
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
    let presented = credential(header(req, "Authorization").as_deref(), config, started_at).await?;
    let agent_id = AgentId::parse(raw_agent_id).ok_or_else(ApiError::agent_not_found)?;
    let (_, body): (_, Value) = read_json(req, MAX_INVOKE_BODY_BYTES).await?;
    let request = InvokeRequest::from_json(body)?;
    let store = D1Store::new(d1_database(env)?);
    let caller = invoke_caller(presented, config, &store).await?;
    watch.lap("auth");

    let period = PeriodKey::containing(started_at);
    let gate = UserGateClient::new(env);
    let prepared = prepare(
        &gate, &caller, &agent_id, &request, streaming, period, started_at,
    )
    .await;
    watch.lap("gate");
    let mut meter = Meter {
        trace_id: new_trace_id(),
        request_id: request_id.as_str().to_owned(),
        user_id: caller.user_id().as_str().to_owned(),
        agent_id: agent_id.as_str().to_owned(),
        deployment_id: None,
        api_key_id: caller.key_id().map(str::to_owned),
        period,
        streaming,
        started_at,
    };
    match prepared {
        Ok(admitted) => {
            meter.deployment_id = Some(admitted.deployment.deployment_id.clone());
            if admitted.gate_loaded {
                // The gate read D1 for this call (new object or stale facts): named so `make bench` can see it.
                watch.laps.push(("gate_d1", 1));
            }
            call(
                env,
                ctx,
                config,
                &gate,
                &caller_user(&caller),
                &admitted,
                &request,
                meter,
                streaming,
                watch,
            )
            .await
        }
        Err(Refused {
            error,
            deployment_id,
        }) => {
            meter.deployment_id = deployment_id;
            finish(ctx, env, meter, error.code.as_str().to_owned(), None, false);
            Err(error)
        }
    }
}

fn caller_user(caller: &crate::app::invoke::Caller) -> crate::domain::ids::UserId {
    caller.user_id().clone()
}

#[allow(clippy::too_many_arguments)]
async fn call(
    env: &Env,
    ctx: &Context,
    config: &ServiceConfig,
    gate: &UserGateClient<'_>,
    user: &crate::domain::ids::UserId,
    admitted: &Admitted,
    request: &InvokeRequest,
    meter: Meter,
    streaming: bool,
    mut watch: Stopwatch,
) -> Result<Reply, ApiError> {
    let granted = &admitted.granted;
    let decision = granted.decision;
    let deployment = &admitted.deployment;
    let limit_headers = rate_limit_headers(&decision, JsClock.now_ms());
    let target = UpstreamTarget {
        deployment_id: deployment.deployment_id.clone(),
    };
    let sending = send(
        env,
        deployment,
        (granted.cpu_ms, granted.subrequests),
        request.upstream_body(&granted.runtime_session_id),
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
            let give_back = gives_back(&failure);
            let headers = if give_back {
                // Nothing reached the agent: the request is given back (app::invoke's counting policy).
                if let Err(e) = gate.release(user, meter.period).await {
                    worker::console_error!(
                        "releasing a reservation for {} failed: {e}",
                        meter.user_id
                    );
                }
                rate_limit_headers(&given_back(&decision), JsClock.now_ms())
            } else {
                limit_headers
            };
            let err = target.failure(failure, streaming).with_headers(headers);
            finish(ctx, env, meter, err.code.as_str().into(), None, !give_back);
            return Err(err);
        }
    };

    watch.lap("agent");
    let status = upstream.status_code();
    let mut headers = limit_headers;
    headers.push(watch.header());
    headers.push(("X-Deployment-Id", deployment.deployment_id.clone()));
    headers.push(("X-Trace-Id", meter.trace_id.clone()));
    let timeout_ms = config.invoke_timeout_ms;

    if !(200..300).contains(&status) {
        let body = read_bounded(&mut upstream, timeout_ms)
            .await
            .unwrap_or_default();
        let err = target
            .failure(UpstreamFailure::Status { status, body }, streaming)
            .with_headers(headers);
        finish(
            ctx,
            env,
            meter,
            err.code.as_str().into(),
            Some(status),
            true,
        );
        return Err(err);
    }

    let content_type = upstream
        .headers()
        .get("Content-Type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let client_session = granted.session_id.clone();

    if !streaming {
        let outcome = match read_bounded(&mut upstream, timeout_ms).await {
            Ok(body) => client_response(&body, &client_session, &meter.trace_id, &target),
            Err(failure) => Err(target.failure(failure, false)),
        };
        return match outcome {
            Ok(answer) => {
                finish(ctx, env, meter, "ok".into(), Some(status), true);
                Ok(Reply::JsonWith(200, answer, headers))
            }
            Err(err) => {
                finish(
                    ctx,
                    env,
                    meter,
                    err.code.as_str().into(),
                    Some(status),
                    true,
                );
                Err(err.with_headers(headers))
            }
        };
    }

    let meta = meta_event(&meter.trace_id, &client_session, &deployment.deployment_id);
    let (tx, rx) = oneshot::channel();
    finish_after(ctx, env, meter, rx, status);
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
        let _ = tx.send(stream_outcome(relay.outcome()));
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
                let _ = tx.send(stream_outcome(self.relay.outcome()));
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
    deployment: &DeploymentTarget,
    (cpu_ms, subrequests): (u64, u64),
    body: Vec<u8>,
    trace_id: &str,
    request_id: &str,
    streaming: bool,
    timeout_ms: u64,
) -> Result<Response, UpstreamFailure> {
    let invoke_path = deployment.invoke_path.as_str();
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
        match deployment.deploy_target.as_str() {
            "dispatch_namespace" => {
                let script = deployment.script_name.clone();
                let namespace: DispatchNamespace =
                    env.get_binding(DISPATCHER_BINDING).map_err(|e| {
                        UpstreamFailure::Network(format!(
                            "no {DISPATCHER_BINDING} dispatch namespace binding: {e}"
                        ))
                    })?;
                let limits = json!({ "limits": {
                    "cpuMs": cpu_ms,
                    "subRequests": subrequests,
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
                let base = deployment.provider_ref.clone();
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
