//! Reading requests: headers, and bodies read with a size limit (never buffering more than the limit).

use crate::domain::ApiError;
use crate::http::body::{
    check_declared_length, check_json_content_type, parse_json_limited, too_large,
};
use futures_util::StreamExt;
use worker::Request;

pub(super) fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// Reads a JSON body, refusing a wrong content type, a declared or actual size over `limit` (without
/// buffering more than the limit), and malformed JSON. Returns the raw bytes too (idempotency hashes them).
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    limit: usize,
) -> Result<(Vec<u8>, T), ApiError> {
    check_json_content_type(header(req, "Content-Type").as_deref())?;
    check_declared_length(header(req, "Content-Length").as_deref(), limit)?;
    let body = read_body(req, limit).await?;
    let value = parse_json_limited(&body, limit)?;
    Ok((body, value))
}

/// How much of an unread or oversized body is read (and thrown away) before the answer, when draining is on.
/// Answering while the client is still sending makes `wrangler dev`'s proxy fail the next request and exit,
/// taking the local stack down; so the local stack drains (`DRAIN_UNREAD_BODIES=true`, set by `make dev`).
/// Cloudflare needs none of it, and production leaves it off: a refusal stays cheap.
const MAX_DRAIN_BYTES: usize = 128 * 1024 * 1024;

thread_local! {
    static DRAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether unread bodies are drained (from the configuration, set as each request starts).
pub(super) fn set_draining(on: bool) {
    DRAINING.with(|d| d.set(on));
}

fn draining() -> bool {
    DRAINING.with(|d| d.get())
}

/// Reads and drops what is left of a body nobody read, up to `MAX_DRAIN_BYTES`. A body already read (or taken)
/// leaves nothing to do.
pub(super) async fn drain(req: &mut Request) {
    if !draining() || req.inner().body_used() {
        return;
    }
    let Ok(mut stream) = req.stream() else { return };
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len();
        if seen > MAX_DRAIN_BYTES {
            break;
        }
    }
}

/// The raw body, refused with 413 once it passes `limit` bytes. Never buffers more than `limit`: the rest of an
/// oversized body is read and dropped (up to `MAX_DRAIN_BYTES`) so the connection ends cleanly.
pub(super) async fn read_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let mut stream = req.stream().map_err(ApiError::internal)?;
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::internal)?;
        seen += chunk.len();
        if seen > limit {
            if !draining() || seen > MAX_DRAIN_BYTES {
                break;
            }
            body.clear();
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(too_large(limit));
    }
    Ok(body)
}

/// Resolves when the client of `req` goes away (its `signal` aborts; needs the `enable_request_signal`
/// compatibility flag). `None` when the runtime gives requests no signal.
pub(super) fn client_gone(req: &Request) -> Option<wasm_bindgen_futures::JsFuture> {
    use js_sys::{Function, Promise, Reflect};
    use wasm_bindgen::{closure::Closure, JsCast, JsValue};
    let signal = Reflect::get(req.inner(), &JsValue::from_str("signal")).ok()?;
    let add: Function = Reflect::get(&signal, &JsValue::from_str("addEventListener"))
        .ok()?
        .dyn_into()
        .ok()?;
    let aborted = Reflect::get(&signal, &JsValue::from_str("aborted"))
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let promise = Promise::new(&mut |resolve, _| {
        if aborted {
            let _ = resolve.call0(&JsValue::UNDEFINED);
            return;
        }
        let on_abort = Closure::once_into_js(move || {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        });
        let _ = add.call2(&signal, &JsValue::from_str("abort"), &on_abort);
    });
    Some(wasm_bindgen_futures::JsFuture::from(promise))
}
