//! Responding: every response — success or error — leaves through `respond`, which adds the request id, the
//! security headers, CORS and, for errors, the envelope.

use crate::domain::ids::RequestId;
use crate::domain::ApiError;
use crate::http::envelope::{error_body, error_headers};
use serde::Serialize;
use serde_json::Value;
use worker::{console_error, Headers, Response};

/// A successful outcome before headers are added.
pub(super) enum Reply {
    Json(u16, Value),
    /// JSON with extra headers (e.g. `X-RateLimit-*` on an invocation).
    JsonWith(u16, Value, Vec<(&'static str, String)>),
    NoContent,
    Preflight(Vec<(&'static str, String)>),
    /// A response built elsewhere (a stream); only the common headers are added.
    Stream(Response),
}

pub(super) fn json_reply<T: Serialize>(status: u16, value: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(value)
        .map(|v| Reply::Json(status, v))
        .map_err(ApiError::internal)
}

pub(super) fn respond(
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
