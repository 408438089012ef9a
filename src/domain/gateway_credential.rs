//! The gateway credential (DESIGN.md §4.7): every call the gateway forwards to an agent carries a short-lived
//! signature, made with the deployment's own secret, over the method, the path, the time, the trace id and the
//! body's SHA-256. The guard the platform deploys in front of every agent (worker-template/gateway_guard.js)
//! checks it before any of the agent's code runs; a call without one — anyone who found the agent's URL — gets
//! 401 and does no work.

use crate::crypto::{hmac_sha256, sha256_hex};
use crate::domain::ids::hex_encode;

/// The header the credential travels in: `t=<unix ms>,v1=<hex HMAC-SHA256>`.
pub const HEADER: &str = "X-Webhost-Gateway";
/// The binding the secret is injected as (a secret, never a plain variable).
pub const SECRET_BINDING: &str = "GATEWAY_SECRET";
/// How far a signature's time may be from the agent's clock, either way.
pub const WINDOW_MS: i64 = 30_000;
/// The error code the guard answers a call without the credential with (HTTP 401).
pub const REFUSAL_CODE: &str = "gateway_credential_required";

/// Whether an answer is the guard of a deployed script refusing a call without the credential: the proof that
/// the script is live at that address.
pub fn is_guard_refusal(status: u16, body: &str) -> bool {
    status == 401 && body.contains(REFUSAL_CODE)
}

/// What is signed; the guard builds the same string.
pub fn signing_input(method: &str, path: &str, at_ms: i64, trace_id: &str, body: &[u8]) -> String {
    format!(
        "webhost-gateway/v1\n{method}\n{path}\n{at_ms}\n{trace_id}\n{}",
        sha256_hex(body)
    )
}

/// The header value for one forwarded call.
pub fn sign(
    secret: &[u8],
    method: &str,
    path: &str,
    at_ms: i64,
    trace_id: &str,
    body: &[u8],
) -> String {
    let mac = hmac_sha256(
        secret,
        signing_input(method, path, at_ms, trace_id, body).as_bytes(),
    );
    format!("t={at_ms},v1={}", hex_encode(&mac))
}

/// The AES-GCM associated data the sealed secret is bound to: its deployment, and this purpose.
pub fn sealing_aad(deployment_id: &str) -> String {
    format!("{deployment_id}:gateway")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_every_part_and_matches_a_known_vector() {
        let header = sign(
            b"secret",
            "POST",
            "/invoke",
            1_795_000_000_000,
            "trc_1",
            b"{}",
        );
        // HMAC-SHA256("secret", "webhost-gateway/v1\nPOST\n/invoke\n1795000000000\ntrc_1\n" + hex SHA-256("{}")),
        // as Node's crypto computes it (and as the guard's WebCrypto does, end to end in the workerd tests).
        assert_eq!(
            header,
            "t=1795000000000,v1=b1e5cfcc81342aa512de501a40e072922a5bfe85e4c91b10b268816478d86806"
        );
        let parts = [
            sign(
                b"other",
                "POST",
                "/invoke",
                1_795_000_000_000,
                "trc_1",
                b"{}",
            ),
            sign(
                b"secret",
                "GET",
                "/invoke",
                1_795_000_000_000,
                "trc_1",
                b"{}",
            ),
            sign(
                b"secret",
                "POST",
                "/other",
                1_795_000_000_000,
                "trc_1",
                b"{}",
            ),
            sign(
                b"secret",
                "POST",
                "/invoke",
                1_795_000_000_001,
                "trc_1",
                b"{}",
            ),
            sign(
                b"secret",
                "POST",
                "/invoke",
                1_795_000_000_000,
                "trc_2",
                b"{}",
            ),
            sign(
                b"secret",
                "POST",
                "/invoke",
                1_795_000_000_000,
                "trc_1",
                b"{ }",
            ),
        ];
        for other in parts {
            assert_ne!(other.split("v1=").nth(1), header.split("v1=").nth(1));
        }
        assert_eq!(sealing_aad("dep_1"), "dep_1:gateway");
    }
}
