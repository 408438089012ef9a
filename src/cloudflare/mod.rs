//! The Cloudflare API v4 client, as data: request builders (`api`), form encoding (`multipart`) and response
//! interpretation (`envelope`). Sending is the platform adapter's job.

pub mod api;
pub mod envelope;
pub mod multipart;
