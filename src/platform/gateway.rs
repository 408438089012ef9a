//! The invocation gateway: `POST /v1/invoke/{agentId}` (JSON) and `…/stream` (SSE), the Workers side of
//! `app::invoke`.
//!
//! Hot path in the steady state: the caller from the isolate's caches (`identity`), then one round trip to the
//! user's gate (routing, entitlements, quotas, the reservation and the session together), then the agent. No
//! D1 read: the gate answers from its memory and storage. Gateway-side metering is written after the response,
//! with `waitUntil`. The counting policy is `app::invoke`'s.

use super::bindings::d1_database;
use super::d1::D1Store;
use super::durable::user_feed;
use super::durable::user_gate::UserGateClient;
use super::identity::{credential, invoke_caller};
use super::reply::Reply;
use super::request::{client_gone, header, read_json};
use super::router::{charge_address, client_address};
use super::upstream::{read_bounded, relay, send, StreamEnd, StreamProgress};
use super::JsClock;
use crate::app::deployments::deploys_not_configured;
use crate::app::gate::protocol::DeploymentTarget;
use crate::app::invoke::{
    abandoned_after_ms, given_back, gives_back, prepare, rate_limit_headers, stream_abandoned,
    stream_outcome, Admitted, InvokeGate, Meter, Refused, REFUSED_ROWS_PER_MINUTE,
};
use crate::app::ports::Clock;
use crate::app::runtime::{agent_answer, provider_refusal, upstream_call, CallContext};
use crate::app::telemetry::UsageCharger;
use crate::auth::verdict_cache::{VerdictCache, DEFAULT_CAPACITY};
use crate::config::ServiceConfig;
use crate::domain::admission::{admitted_trace_id, TRACE_KEY_LABEL};
use crate::domain::gateway_credential;
use crate::domain::ids::{AgentId, RequestId, UserId};
use crate::domain::invoke::{
    client_response, new_trace_id, AnswerUsage, InvokeRequest, UpstreamFailure, UpstreamTarget,
    MAX_INVOKE_BODY_BYTES,
};
use crate::domain::period::PeriodKey;
use crate::domain::sse::{meta_event, StreamRelay};
use crate::domain::telemetry::KeyedThrottle;
use crate::domain::usage::UsageTotals;
use crate::domain::ApiError;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Context, Delay, Env, Headers, Request, Response};

/// Where the gateway's time went, for `Server-Timing` (what `make bench` reports the overhead is made of).
/// On Workers the clock advances only across I/O, which is exactly what these laps measure.
struct Stopwatch {
    last: i64,
    laps: Vec<(&'static str, i64)>,
    /// Events without a duration (a metric with no `dur`).
    marks: Vec<&'static str>,
}

impl Stopwatch {
    fn start(now: i64) -> Self {
        Stopwatch {
            last: now,
            laps: Vec::new(),
            marks: Vec::new(),
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
            .chain(self.marks.iter().map(|name| name.to_string()))
            .collect();
        ("Server-Timing", parts.join(", "))
    }
}

/// The client's side of a call: when it goes away, and the upstream request to cancel then.
struct ClientLink {
    gone: Option<JsFuture>,
    upstream: web_sys::AbortController,
}

/// How a call ended, as metering records it.
struct Ended {
    outcome: String,
    status: Option<u16>,
    counted: bool,
    usage: Option<AnswerUsage>,
    /// When it ended, if not now (a stream abandoned by its client ended at its last forwarded byte).
    at: Option<i64>,
}

impl Ended {
    fn new(outcome: String, status: Option<u16>, counted: bool) -> Self {
        Ended {
            outcome,
            status,
            counted,
            usage: None,
            at: None,
        }
    }
}

/// Writes the call's metering row (with its measured compute when it is the last write), and tells the user's
/// gate the measured total once it reaches the quota.
async fn write_meter(env: &Env, meter: &Meter, ended: &Ended, last_write: bool) {
    let now = JsClock.now_ms();
    let mut row = meter
        .row(
            &ended.outcome,
            ended.status,
            ended.counted,
            ended.at.unwrap_or(now),
        )
        .with_usage(ended.usage);
    if !last_write {
        row = row.provisional();
    }
    let result = match d1_database(env) {
        Ok(db) => D1Store::new(db).record_invocation(&row, now).await,
        Err(e) => Err(crate::app::ports::StoreError(e.message)),
    };
    let usage_moved = result.is_ok() && last_write && ended.counted;
    match result {
        Ok(Some(total)) if row.must_tell_gate(total) => {
            let user = UserId::from_trusted(meter.user_id.clone());
            let totals = UsageTotals::default().with_gateway_ms(total);
            if let Err(e) = UserGateClient::new(env)
                .charge(&user, meter.period, totals)
                .await
            {
                // The gate reads the measured total with its facts' next load (within their TTL).
                worker::console_error!(
                    "telling the gate of {}'s compute failed: {e}",
                    meter.user_id
                );
            }
        }
        Ok(_) => {}
        Err(e) => {
            // A refusal's count rides on the user's next written refusal instead.
            if let Some(suppressed) = meter.suppressed {
                // The refusal itself and those it stood for.
                REFUSED.with(|t| t.borrow_mut().restore(&meter.user_id, suppressed + 1));
            }
            worker::console_error!("metering {} failed: {}", meter.trace_id, e.0)
        }
    }
    // After the gate was told: the live feed never delays quota enforcement.
    if usage_moved {
        let user = UserId::from_trusted(meter.user_id.clone());
        user_feed::usage_moved(env, &user, &meter.period.to_string()).await;
    }
}

/// Where a call's metering row goes once its outcome is known. Every write happens in `waitUntil`, after (or
/// beside) the answer: metering never adds latency.
enum Metering {
    /// Written when the outcome is known.
    Direct(Meter),
    /// A stream, recorded as it starts (`client_closed`) while the agent is called, then completed with its
    /// real outcome through the sender. The completion is written after the first row, never before it.
    Started(oneshot::Sender<Ended>),
}

impl Metering {
    /// A JSON call, recorded when its outcome is known, or, if its client goes away first (the handler is then
    /// never resumed), as `client_closed`, measured to that moment, with the agent's answer cancelled.
    fn start_json(
        ctx: &Context,
        env: &Env,
        meter: Meter,
        gone: Option<JsFuture>,
        upstream: web_sys::AbortController,
    ) -> Self {
        let Some(gone) = gone else {
            return Metering::Direct(meter);
        };
        let (tx, rx) = oneshot::channel::<Ended>();
        let env = env.clone();
        ctx.wait_until(async move {
            let ended = match select(rx, gone).await {
                Either::Left((Ok(ended), _)) => ended,
                Either::Left((Err(_), _)) | Either::Right(_) => {
                    upstream.abort();
                    Ended::new("client_closed".into(), None, true)
                }
            };
            write_meter(&env, &meter, &ended, true).await;
        });
        Metering::Started(tx)
    }

    fn start_stream(ctx: &Context, env: &Env, meter: Meter) -> Self {
        let (tx, rx) = oneshot::channel::<Ended>();
        let env = env.clone();
        ctx.wait_until(async move {
            let started = Ended::new("client_closed".into(), None, true);
            write_meter(&env, &meter, &started, false).await;
            let ended = rx.await.unwrap_or(started);
            write_meter(&env, &meter, &ended, true).await;
        });
        Metering::Started(tx)
    }

    /// Records the outcome (in the background).
    fn finish(self, ctx: &Context, env: &Env, ended: Ended) {
        match self {
            Metering::Direct(meter) => {
                let env = env.clone();
                ctx.wait_until(async move {
                    write_meter(&env, &meter, &ended, true).await;
                });
            }
            Metering::Started(tx) => {
                let _ = tx.send(ended);
            }
        }
    }

    /// Records a call that ended in `err` and hands the error back.
    fn failed(
        self,
        ctx: &Context,
        env: &Env,
        err: ApiError,
        status: Option<u16>,
        counted: bool,
    ) -> ApiError {
        let ended = Ended::new(err.code.as_str().to_owned(), status, counted);
        self.finish(ctx, env, ended);
        err
    }

    /// Records the stream's outcome when the relay reports it. A client that goes away leaves the relay
    /// suspended, neither ended nor dropped (workerd stops pulling it), so the stream is also watched: when the
    /// client goes away it is recorded as `client_closed`, measured to that moment (or to its last forwarded
    /// byte, when only its silence tells).
    #[allow(clippy::too_many_arguments)]
    fn finish_after(
        self,
        ctx: &Context,
        env: &Env,
        rx: oneshot::Receiver<StreamEnd>,
        progress: Rc<StreamProgress>,
        status: u16,
        idle_limit_ms: i64,
        client: ClientLink,
    ) {
        let env = env.clone();
        ctx.wait_until(async move {
            let watched =
                watch_stream(rx, &progress, idle_limit_ms, client.gone, &client.upstream).await;
            let ended = match watched {
                Some((outcome, usage)) => Ended {
                    usage,
                    ..Ended::new(outcome, Some(status), true)
                },
                None => Ended {
                    usage: progress.usage.get(),
                    at: Some(progress.last_forward_ms.get()),
                    ..Ended::new("client_closed".into(), Some(status), true)
                },
            };
            match self {
                Metering::Started(tx) => {
                    let _ = tx.send(ended);
                }
                Metering::Direct(meter) => write_meter(&env, &meter, &ended, true).await,
            }
        });
    }
}

/// What a stream's watch learned: its relay's report, or `None` once the client went away — its request signal
/// aborted or, on a runtime without request signals (without the `enable_request_signal` flag), nothing was
/// forwarded for longer than a live relay can stay silent. A client that went away has the agent's answer
/// cancelled, so the agent stops working.
async fn watch_stream(
    mut rx: oneshot::Receiver<StreamEnd>,
    progress: &StreamProgress,
    idle_limit_ms: i64,
    client_gone: Option<JsFuture>,
    upstream: &web_sys::AbortController,
) -> Option<StreamEnd> {
    if let Some(gone) = client_gone {
        return match select(rx, gone).await {
            Either::Left((end, _)) => end.ok(),
            Either::Right(_) => {
                // Measured to this moment: the client is gone.
                progress.last_forward_ms.set(JsClock.now_ms());
                upstream.abort();
                None
            }
        };
    }
    loop {
        let now = JsClock.now_ms();
        let last = progress.last_forward_ms.get();
        if stream_abandoned(last, now, idle_limit_ms) {
            upstream.abort();
            return None;
        }
        let wait = (last + idle_limit_ms - now).max(1) as u64;
        match select(&mut rx, Delay::from(Duration::from_millis(wait))).await {
            Either::Left((end, _)) => return end.ok(),
            Either::Right(_) => continue,
        }
    }
}

thread_local! {
    // Refused calls written per user (`REFUSED_ROWS_PER_MINUTE`), the rest counted into the next row.
    static REFUSED: RefCell<KeyedThrottle> =
        RefCell::new(KeyedThrottle::new(REFUSED_ROWS_PER_MINUTE, DEFAULT_CAPACITY));
    // Opened gateway secrets, by their sealed form: opening (AES-GCM) once per deployment and isolate.
    static OPENED: RefCell<VerdictCache<String, Vec<u8>>> = RefCell::new(VerdictCache::new(DEFAULT_CAPACITY));
}

/// The gateway credential for one call to `deployment` (`None` for a deployment made before the guard).
fn credential_for(
    config: &ServiceConfig,
    deployment: &DeploymentTarget,
    trace_id: &str,
    body: &[u8],
) -> Result<Option<String>, ApiError> {
    let Some(sealed) = &deployment.gateway_secret_sealed else {
        return Ok(None);
    };
    let now = JsClock.now_ms();
    let secret = match OPENED.with(|c| c.borrow_mut().get(sealed, now)) {
        Some(secret) => secret,
        None => {
            let key = &config
                .deploy
                .as_ref()
                .ok_or_else(deploys_not_configured)?
                .encryption_key;
            let aad = gateway_credential::sealing_aad(&deployment.deployment_id);
            let secret = key.open(sealed, aad.as_bytes()).map_err(|e| {
                ApiError::internal(format!(
                    "gateway secret of {}: {e}",
                    deployment.deployment_id
                ))
            })?;
            OPENED.with(|c| {
                c.borrow_mut()
                    .put(sealed.clone(), secret.clone(), i64::MAX, now)
            });
            secret
        }
    };
    Ok(Some(gateway_credential::sign(
        &secret,
        "POST",
        &deployment.invoke_path,
        now,
        trace_id,
        body,
    )))
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
    let gone = client_gone(req);
    let presented = credential(header(req, "Authorization").as_deref(), config, started_at).await?;
    let agent_id = AgentId::parse(raw_agent_id).ok_or_else(ApiError::agent_not_found)?;
    let (_, body): (_, Value) = read_json(req, MAX_INVOKE_BODY_BYTES).await?;
    let request = InvokeRequest::from_json(body)?;
    let store = D1Store::new(d1_database(env)?);
    let address = client_address(req);
    let caller = invoke_caller(presented, config, &store, || {
        charge_address(&address, config)
    })
    .await?;
    watch.lap("auth");

    let period = PeriodKey::containing(started_at);
    let gate = UserGateClient::new(env);
    let prepared = prepare(
        &gate, &caller, &agent_id, &request, streaming, period, started_at,
    )
    .await;
    watch.lap("gate");
    // An admitted call's trace id is its admission ticket: the only kind its telemetry can be charged under.
    let trace_id = match (&prepared, &config.deploy) {
        (Ok(admitted), Some(deploy)) => admitted_trace_id(
            &deploy.encryption_key.derive(TRACE_KEY_LABEL),
            &admitted.deployment.deployment_id,
            started_at,
        ),
        _ => new_trace_id(),
    };
    let mut meter = Meter {
        trace_id,
        request_id: request_id.as_str().to_owned(),
        user_id: caller.user_id().as_str().to_owned(),
        agent_id: agent_id.as_str().to_owned(),
        deployment_id: None,
        api_key_id: caller.key_id().map(str::to_owned),
        period,
        streaming,
        started_at,
        compute_ms_limit: 0,
        suppressed: None,
        forwarded_at: None,
    };
    match prepared {
        Ok(admitted) => {
            meter.deployment_id = Some(admitted.deployment.deployment_id.clone());
            meter.compute_ms_limit = admitted.granted.compute_ms_limit;
            if admitted.gate_loaded {
                // The gate read D1 for this call (new object or stale facts): named so `make bench` can see it.
                watch.marks.push("gate_d1");
            }
            call(
                env,
                ctx,
                config,
                &gate,
                caller.user_id(),
                &admitted,
                &request,
                meter,
                streaming,
                watch,
                gone,
            )
            .await
        }
        Err(Refused {
            error,
            agent_found,
            deployment_id,
        }) => {
            if !agent_found {
                return Err(error);
            }
            let Some(suppressed) =
                REFUSED.with(|t| t.borrow_mut().admit(&meter.user_id, started_at))
            else {
                // Only counted: the next refusal of this user that is written carries it.
                return Err(error);
            };
            meter.deployment_id = deployment_id;
            meter.suppressed = Some(suppressed);
            Err(Metering::Direct(meter).failed(ctx, env, error, None, false))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn call(
    env: &Env,
    ctx: &Context,
    config: &ServiceConfig,
    gate: &UserGateClient<'_>,
    user: &UserId,
    admitted: &Admitted,
    request: &InvokeRequest,
    mut meter: Meter,
    streaming: bool,
    mut watch: Stopwatch,
    gone: Option<JsFuture>,
) -> Result<Reply, ApiError> {
    let upstream_abort = web_sys::AbortController::new()
        .map_err(|e| ApiError::internal(format!("AbortController: {e:?}")))?;
    let granted = &admitted.granted;
    let decision = granted.decision;
    let deployment = &admitted.deployment;
    let limit_headers = rate_limit_headers(&decision, JsClock.now_ms());
    let target = UpstreamTarget {
        deployment_id: deployment.deployment_id.clone(),
    };
    let (trace_id, request_id) = (meter.trace_id.clone(), meter.request_id.clone());
    let (period, user_label) = (meter.period, meter.user_id.clone());
    let body = request.upstream_body(&granted.runtime_session_id);
    let credential = credential_for(config, deployment, &trace_id, &body);
    // The measured compute counts from here: not the caller's upload, the gate or the signing before it.
    meter.forwarded_at = Some(JsClock.now_ms());
    let (json_gone, stream_gone) = if streaming {
        (None, gone)
    } else {
        (gone, None)
    };
    // A stream's row exists from its start, so a client that goes away still leaves one.
    let metering = if streaming {
        Metering::start_stream(ctx, env, meter)
    } else {
        Metering::start_json(ctx, env, meter, json_gone, upstream_abort.clone())
    };
    let credential = match credential {
        Ok(credential) => credential,
        Err(err) => {
            // Nothing was sent: the request is given back.
            if let Err(e) = gate.release(user, period).await {
                worker::console_error!("releasing a reservation for {user_label} failed: {e}");
            }
            return Err(metering.failed(ctx, env, err, None, false));
        }
    };
    let call = upstream_call(
        deployment,
        config.deploy.as_ref().and_then(|d| d.agentcore.as_ref()),
        CallContext {
            body,
            trace_id: &trace_id,
            request_id: &request_id,
            credential: credential.as_deref(),
            runtime_session_id: &granted.runtime_session_id,
            streaming,
            cpu_ms: granted.cpu_ms,
            subrequests: granted.subrequests,
            now_ms: JsClock.now_ms(),
        },
    );
    let upstream = match call {
        Ok(call) => send(env, call, config.invoke_timeout_ms, &upstream_abort).await,
        Err(failure) => Err(failure),
    };
    // A runtime's own refusal (AgentCore throttling, a signature or permission problem) never reached the agent.
    let upstream = match upstream {
        Ok(res) if !(200..300).contains(&res.status_code()) => {
            let error_type = res.headers().get("x-amzn-ErrorType").ok().flatten();
            match provider_refusal(deployment, res.status_code(), error_type.as_deref()) {
                Some(failure) => Err(failure),
                None => Ok(res),
            }
        }
        other => other,
    };
    let mut upstream = match upstream {
        Ok(res) => res,
        Err(failure) => {
            let give_back = gives_back(&failure);
            let headers = if give_back {
                // Nothing reached the agent: the request is given back (app::invoke's counting policy).
                if let Err(e) = gate.release(user, period).await {
                    worker::console_error!("releasing a reservation for {user_label} failed: {e}");
                }
                rate_limit_headers(&given_back(&decision), JsClock.now_ms())
            } else {
                limit_headers
            };
            let err = target.failure(failure, streaming).with_headers(headers);
            return Err(metering.failed(ctx, env, err, None, !give_back));
        }
    };

    watch.lap("agent");
    let status = upstream.status_code();
    let mut headers = limit_headers;
    headers.push(watch.header());
    headers.push(("X-Deployment-Id", deployment.deployment_id.clone()));
    headers.push(("X-Trace-Id", trace_id.clone()));
    let timeout_ms = config.invoke_timeout_ms;

    if !(200..300).contains(&status) {
        let body = read_bounded(&mut upstream, timeout_ms)
            .await
            .unwrap_or_default();
        let account_id = config
            .deploy
            .as_ref()
            .and_then(|d| d.agentcore.as_ref())
            .map_or("", |aws| aws.account_id.as_str());
        let (status, body) = agent_answer(deployment, status, body, account_id);
        let err = target
            .failure(UpstreamFailure::Status { status, body }, streaming)
            .with_headers(headers);
        return Err(metering.failed(ctx, env, err, Some(status), true));
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
            Ok(body) => client_response(&body, &client_session, &trace_id, &target),
            Err(failure) => Err(target.failure(failure, false)),
        };
        return match outcome {
            Ok(answer) => {
                let ended = Ended {
                    usage: AnswerUsage::from_json(answer.get("usage")),
                    ..Ended::new("ok".into(), Some(status), true)
                };
                metering.finish(ctx, env, ended);
                Ok(Reply::JsonWith(200, answer, headers))
            }
            Err(err) => {
                Err(metering.failed(ctx, env, err.with_headers(headers), Some(status), true))
            }
        };
    }

    let meta = meta_event(&trace_id, &client_session, &deployment.deployment_id);
    let (tx, rx) = oneshot::channel();
    let progress = Rc::new(StreamProgress::starting(JsClock.now_ms()));
    metering.finish_after(
        ctx,
        env,
        rx,
        progress.clone(),
        status,
        abandoned_after_ms(timeout_ms),
        ClientLink {
            gone: stream_gone,
            upstream: upstream_abort,
        },
    );
    let body = if content_type.contains("text/event-stream") {
        let source = upstream.stream().map_err(ApiError::internal)?;
        relay(meta, source, target, timeout_ms, tx, progress)
    } else {
        // A whole answer on the stream endpoint: wrapped into events once read.
        let mut relay = StreamRelay::default();
        let mut bytes = meta;
        match read_bounded(&mut upstream, timeout_ms).await {
            Ok(body) => bytes.extend(relay.wrap_whole(&content_type, &body)),
            Err(failure) => bytes.extend(relay.fail(&target.failure(failure, true))),
        }
        let _ = tx.send((stream_outcome(relay.outcome()), relay.usage()));
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
