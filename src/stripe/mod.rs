//! The Stripe API as data, like `cloudflare`: each call is a request value (form-encoded, with an
//! `Idempotency-Key` on every create and the API version pinned), and each answer is parsed and classified
//! here. The platform only sends the bytes; the secret key is added there and never appears in a request value,
//! an error or a log.

pub mod api;
