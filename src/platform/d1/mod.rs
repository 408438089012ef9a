//! The D1 stores: `store` holds the connection, the shared helpers and the `Store` port (users and agents);
//! every other file holds the statements of one table group, as methods on the same `D1Store`.

mod api_keys;
mod audit;
mod billing;
mod deployments;
mod gate;
mod invocations;
mod sealed;
pub mod store;
pub mod telemetry;
mod usage;
mod users;

pub use store::D1Store;
