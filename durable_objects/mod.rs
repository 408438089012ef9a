//! Durable Object classes. Each is a thin shell: it parses the request, keeps its state in storage and hands
//! every decision to a pure function in `domain` (tested natively). Exported from the worker's entry module.

mod deploy_follower;
mod user_feed;
mod user_gate;

use crate::domain::ApiError;
use crate::http::envelope::error_body;
use serde::de::DeserializeOwned;
use worker::{Request, Response, Result};

/// Durable Objects are reached only by the control plane itself; a bad call is a bug there, but it still gets
/// the envelope so the caller's logs say what was wrong.
fn error_response(err: ApiError) -> Result<Response> {
    Ok(Response::from_json(&error_body(&err, "durable-object"))?.with_status(err.status()))
}

async fn read_body<T: DeserializeOwned>(req: &mut Request) -> std::result::Result<T, ApiError> {
    let bytes = req.bytes().await.map_err(ApiError::internal)?;
    crate::http::body::parse_json(&bytes)
}
