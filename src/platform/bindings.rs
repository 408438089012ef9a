//! The names the worker's bindings and variables have in wrangler.toml, in one place.

use crate::domain::ApiError;
use worker::{D1Database, Env};

/// The control plane's D1 database (`[[d1_databases]]`).
pub const DB_BINDING: &str = "DB";
/// The Workers for Platforms dispatch namespace (`[[dispatch_namespaces]]`), in `dispatch_namespace` mode.
pub const DISPATCHER_BINDING: &str = "DISPATCHER";
/// Per-tier entitlement overrides; read by the worker's configuration and by the user gate.
pub const TIER_ENTITLEMENTS_VAR: &str = "TIER_ENTITLEMENTS";

pub fn d1_database(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(DB_BINDING).map_err(ApiError::internal)
}
