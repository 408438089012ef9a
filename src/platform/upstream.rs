//! The upstream call: sending an invocation to the agent's active deployment (over HTTPS in `workers_dev` mode, through
//! the dispatch namespace binding with per-invocation limits otherwise), reading its answer within the time limit
//! and a size bound, and relaying its SSE as it arrives.

use super::bindings::DISPATCHER_BINDING;
use crate::app::invoke::stream_outcome;
use crate::app::runtime::UpstreamCall;
use crate::domain::invoke::{
    AnswerUsage, UpstreamFailure, UpstreamTarget, MAX_UPSTREAM_BODY_BYTES,
};
use crate::domain::sse::StreamRelay;
use crate::domain::{ApiError, ErrorCode};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::json;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use worker::{
    web_sys, ByteStream, Delay, Env, EnvBinding, Fetch, Fetcher, Headers, Method, Request,
    RequestInit, RequestRedirect, Response,
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

/// How a relayed stream ended, for metering: its outcome and the `usage` the agent sent, if any.
pub(super) type StreamEnd = (String, Option<AnswerUsage>);

/// What a relayed stream has done so far, shared with its metering: when it last handed bytes to the client,
/// and the `usage` the agent sent. When a client goes away, workerd stops pulling the relay and never ends or
/// drops it, so metering measures an abandoned stream from this.
pub(super) struct StreamProgress {
    pub last_forward_ms: Cell<i64>,
    pub usage: Cell<Option<AnswerUsage>>,
}

impl StreamProgress {
    pub fn starting(now: i64) -> Self {
        StreamProgress {
            last_forward_ms: Cell::new(now),
            usage: Cell::new(None),
        }
    }
}

/// Forwards the agent's SSE as it arrives, reporting how it ended through `tx` and its progress as it goes.
pub(super) fn relay(
    meta: Vec<u8>,
    source: ByteStream,
    target: UpstreamTarget,
    timeout_ms: u64,
    tx: oneshot::Sender<StreamEnd>,
    progress: Rc<StreamProgress>,
) -> futures_util::stream::LocalBoxStream<'static, Result<Vec<u8>, worker::Error>> {
    struct State {
        meta: Option<Vec<u8>>,
        source: Option<ByteStream>,
        relay: StreamRelay,
        target: UpstreamTarget,
        timeout_ms: u64,
        tx: Option<oneshot::Sender<StreamEnd>>,
        progress: Rc<StreamProgress>,
    }
    impl State {
        fn report(&mut self) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send((stream_outcome(self.relay.outcome()), self.relay.usage()));
            }
        }

        /// `bytes` are about to be handed to the client.
        fn forward(self, bytes: Vec<u8>) -> Option<(Result<Vec<u8>, worker::Error>, Self)> {
            self.progress
                .last_forward_ms
                .set(js_sys::Date::now() as i64);
            self.progress.usage.set(self.relay.usage());
            Some((Ok(bytes), self))
        }
    }
    let state = State {
        meta: Some(meta),
        source: Some(source),
        relay: StreamRelay::default(),
        target,
        timeout_ms,
        tx: Some(tx),
        progress,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(meta) = st.meta.take() {
            return st.forward(meta);
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
                return st.forward(out);
            }
        }
    })
    .boxed_local()
}

/// How long the check of a "Worker not found" rejection may take; past it, the script is taken to exist.
const PROBE_TIMEOUT_MS: u64 = 2_000;

/// Whether the namespace holds `script`: a credential-less GET that any script (its guard) answers, and only a
/// name the namespace does not hold rejects with "Worker not found". No answer in time counts as holding it.
async fn script_answers(fetcher: &Fetcher, script: &str) -> bool {
    let probe = fetcher.fetch(format!("https://{script}.dispatch.internal/"), None);
    match within(PROBE_TIMEOUT_MS, probe).await {
        Some(Ok(_)) | None => true,
        Some(Err(e)) => !e.to_string().contains("Worker not found"),
    }
}

/// `request`, cancelled (its answer's body included) when `abort` fires: on a timeout, or when the client of a
/// stream goes away.
fn cancellable(request: Request, abort: &web_sys::AbortController) -> worker::Result<Request> {
    let init = web_sys::RequestInit::new();
    init.set_signal(Some(&abort.signal()));
    Ok(Request::from(web_sys::Request::new_with_request_and_init(
        request.inner(),
        &init,
    )?))
}

/// `future`'s output, or `None` when `timeout_ms` pass first (the future is then dropped).
pub(super) async fn within<F: std::future::Future>(
    timeout_ms: u64,
    future: F,
) -> Option<F::Output> {
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
pub(super) async fn read_bounded(
    res: &mut Response,
    timeout_ms: u64,
) -> Result<Vec<u8>, UpstreamFailure> {
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

/// What a rejected fetch means. Through a dispatch namespace, "Worker not found" (Cloudflare's message for a name
/// the namespace does not hold) is the one "never ran", once `script_answers` confirms the name is not held; any
/// other rejection came from the agent's run.
/// Over HTTP (workers.dev) a rejection is a connection that failed or broke, at a point nobody can tell.
fn rejection(message: String, dispatching: bool) -> UpstreamFailure {
    if !dispatching {
        UpstreamFailure::Network(message)
    } else if message.contains("Worker not found") {
        UpstreamFailure::NotDispatched(message)
    } else {
        UpstreamFailure::Rejected(message)
    }
}

/// Sends an invocation (`app::runtime::upstream_call`: an HTTP request, or a call through the dispatch namespace
/// binding) and waits (bounded) for the response head. Which provider it goes to is not this code's concern.
pub(super) async fn send(
    env: &Env,
    call: UpstreamCall,
    timeout_ms: u64,
    abort: &web_sys::AbortController,
) -> Result<Response, UpstreamFailure> {
    let init_with = |headers_list: &[(String, String)], body: &[u8]| {
        let headers = Headers::new();
        for (name, value) in headers_list {
            headers
                .set(name, value)
                .map_err(|e| UpstreamFailure::NotDispatched(e.to_string()))?;
        }
        let mut init = RequestInit::new();
        // A redirect from an agent is its answer (an upstream error), never a second request on its behalf.
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_redirect(RequestRedirect::Manual)
            .with_body(Some(js_sys::Uint8Array::from(body).into()));
        Ok::<_, UpstreamFailure>(init)
    };
    let unbuilt = |e: worker::Error| UpstreamFailure::NotDispatched(e.to_string());
    let dispatching = matches!(call, UpstreamCall::Dispatch { .. });
    // The namespace's fetcher for the script, kept to check a "Worker not found" rejection.
    let mut prober: Option<(Fetcher, String)> = None;
    let pending: std::pin::Pin<Box<dyn std::future::Future<Output = worker::Result<Response>>>> =
        match call {
            UpstreamCall::Dispatch {
                script,
                path,
                headers,
                body,
                cpu_ms,
                subrequests,
            } => {
                let namespace: DispatchNamespace =
                    env.get_binding(DISPATCHER_BINDING).map_err(|e| {
                        UpstreamFailure::NotDispatched(format!(
                            "no {DISPATCHER_BINDING} dispatch namespace binding: {e}"
                        ))
                    })?;
                let limits = json!({ "limits": {
                    "cpuMs": cpu_ms,
                    "subRequests": subrequests,
                }});
                // Through JSON so the binding receives plain objects (serde-wasm-bindgen would make Maps).
                let options = js_sys::JSON::parse(&limits.to_string())
                    .map_err(|e| UpstreamFailure::NotDispatched(format!("{e:?}")))?;
                let fetcher: Fetcher = namespace
                    .get_with_options(&script, &JsValue::UNDEFINED, &options)
                    .map_err(|e| UpstreamFailure::NotDispatched(format!("{e:?}")))?
                    .into();
                prober = Some((fetcher.clone(), script.clone()));
                let request = Request::new_with_init(
                    &format!("https://{script}.dispatch.internal{path}"),
                    &init_with(&headers, &body)?,
                )
                .and_then(|r| cancellable(r, abort))
                .map_err(unbuilt)?;
                Box::pin(async move { fetcher.fetch_request(request).await })
            }
            UpstreamCall::Http { url, headers, body } => {
                let request = Request::new_with_init(&url, &init_with(&headers, &body)?)
                    .and_then(|r| cancellable(r, abort))
                    .map_err(unbuilt)?;
                Box::pin(async move { Fetch::Request(request).send().await })
            }
        };
    match within(timeout_ms, pending).await {
        Some(Ok(res)) => Ok(res),
        Some(Err(e)) => match (rejection(e.to_string(), dispatching), prober) {
            // An agent can throw "Worker not found" itself, after doing work, to have its call given back. The
            // namespace is asked again without a credential: a script that exists answers (its guard refuses),
            // so the call reached it and counts.
            (UpstreamFailure::NotDispatched(message), Some((fetcher, script))) => {
                if script_answers(&fetcher, &script).await {
                    Err(UpstreamFailure::Rejected(message))
                } else {
                    Err(UpstreamFailure::NotDispatched(message))
                }
            }
            (failure, _) => Err(failure),
        },
        None => {
            abort.abort();
            Err(UpstreamFailure::Timeout {
                after_ms: timeout_ms,
            })
        }
    }
}
