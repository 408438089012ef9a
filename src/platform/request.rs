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

/// The raw body, refused with 413 as soon as it passes `limit` bytes (never buffering more).
pub(super) async fn read_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, ApiError> {
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
