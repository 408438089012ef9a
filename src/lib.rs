//! webhost.systems control plane: a Cloudflare Worker (Rust → Wasm) over D1 and Durable Objects.
//!
//! `domain`, `auth`, `app` and `http` are pure and build natively, so `cargo test` exercises them without a
//! Workers runtime. `platform` is the thin Workers adapter (routes, D1 store, JWKS fetch) and exists only on
//! wasm32, as do the Durable Object shells in `durable_objects/`.

pub mod app;
pub mod auth;
pub mod aws;
pub mod cloudflare;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod stripe;

#[cfg(target_arch = "wasm32")]
mod platform;

#[cfg(target_arch = "wasm32")]
#[path = "../durable_objects/mod.rs"]
mod durable_objects;
