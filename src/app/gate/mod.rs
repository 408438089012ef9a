//! The per-user gate (`UserGate` Durable Object): one round trip answers everything an invocation needs —
//! routing, entitlements, quota state, the request reservation and the session — from the object's memory
//! and storage. The Durable Object in `durable_objects/user_gate.rs` is the shell around this module.

pub mod admit;
pub mod facts;
pub mod protocol;
pub mod serve;

#[cfg(test)]
mod tests;
