//! The worker's configuration, parsed once from its variables and secrets. Anything unreadable is an error
//! reported on the first request, never a silently permissive default.

use crate::auth::AuthConfig;
use crate::http::cors::CorsPolicy;

pub struct ServiceConfig {
    pub auth: AuthConfig,
    pub cors: CorsPolicy,
    /// Test-only routes (e.g. one that panics, to prove crashes become clean 500s). Off unless
    /// `ENABLE_DEBUG_ROUTES` is exactly `true`; never set it in production.
    pub debug_routes: bool,
}

impl ServiceConfig {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        Ok(ServiceConfig {
            auth: AuthConfig::from_vars(&get)?,
            cors: CorsPolicy::parse(get("CORS_ALLOWED_ORIGINS").as_deref())?,
            debug_routes: get("ENABLE_DEBUG_ROUTES").as_deref() == Some("true"),
        })
    }
}

/// Every variable the worker reads, so the platform can fingerprint the configuration and reparse on change.
pub const CONFIG_VARS: &[&str] = &[
    "AUTH_ISSUER",
    "AUTH_JWKS_URL",
    "AUTH_JWKS",
    "AUTH_AUTHORIZED_PARTIES",
    "CORS_ALLOWED_ORIGINS",
    "ENABLE_DEBUG_ROUTES",
];
