//! Pure rules of the control plane: values, validation and state, with no I/O and no `worker` import.

pub mod admission;
pub mod agent;
pub mod api_key;
pub mod billing;
pub mod bounded_map;
pub mod bundle;
pub mod dashboard_sign_in;
pub mod deployment;
pub mod entitlements;
pub mod error;
pub mod feed;
pub mod gateway_credential;
pub mod ids;
pub mod invoke;
pub mod pagination;
pub mod patch;
pub mod period;
pub mod rate_limit;
pub mod reservation;
pub mod session;
pub mod sse;
pub mod telemetry;
pub mod usage;
pub mod user;

pub use error::{ApiError, ErrorCode};
