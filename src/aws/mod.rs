//! AWS as data, like `cloudflare` and `stripe`: AWS Signature Version 4 (`sigv4`) over requests built here; the
//! platform only sends the bytes. Credentials live in `sigv4::Credentials`, whose `Debug` never shows a secret.

pub mod agentcore;
pub mod sigv4;
