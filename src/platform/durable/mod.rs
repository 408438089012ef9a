//! Typed clients of the Durable Objects: the only code that addresses them.

pub mod deploy_follower;
pub mod user_feed;
pub mod user_gate;
