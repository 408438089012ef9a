//! Use-cases over the ports. Pure: they see storage and time only through `ports`.

pub mod admin;
pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod billing;
pub mod deployments;
pub mod gate;
pub mod invocations;
pub mod invoke;
pub mod key_rotation;
#[cfg(test)]
pub(crate) mod memory;
pub mod ports;
pub mod retention;
pub mod runtime;
pub mod secrets;
pub mod telemetry;
pub mod usage;
pub mod users;
