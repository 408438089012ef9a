//! Who the caller is: bearer JWT verification against the identity provider's keys. Pure: fetching keys over
//! HTTP is the platform adapter's job, guided by the cache policy in `jwks`.

pub mod bearer;
pub mod config;
pub mod jwks;
pub mod jwt;
#[cfg(test)]
pub(crate) mod test_keys;
pub mod verdict_cache;

pub use config::{AuthConfig, JwksSource};
pub use jwt::Identity;
