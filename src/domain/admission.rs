//! Admission tickets (DESIGN.md §4.8): the trace id the gateway gives an admitted call carries a tag that only
//! the control plane can make — a MAC, keyed with a key derived from its encryption key, over the deployment and
//! the trace id's random part. Telemetry is charged only for events whose trace id carries this deployment's tag,
//! so an event about a call the gateway never admitted (made up, or about another deployment) bills nobody.

use crate::crypto::{constant_time_eq, hmac_sha256};
use crate::domain::ids::{hex_encode, random_hex};

/// The label the trace-id key is derived under from `TELEMETRY_SECRETS_ENCRYPTION_KEY`.
pub const TRACE_KEY_LABEL: &[u8] = b"webhost/trace-ids/v1";
const NONCE_HEX: usize = 16;
const TAG_HEX: usize = 16;

fn tag(trace_key: &[u8; 32], deployment_id: &str, nonce: &str) -> String {
    let mac = hmac_sha256(trace_key, format!("{deployment_id}\n{nonce}").as_bytes());
    hex_encode(&mac[..TAG_HEX / 2])
}

/// A fresh trace id for a call admitted to `deployment_id`: `trc_` + 16 hex random + 16 hex tag.
pub fn admitted_trace_id(trace_key: &[u8; 32], deployment_id: &str) -> String {
    let nonce = random_hex(NONCE_HEX / 2);
    let tag = tag(trace_key, deployment_id, &nonce);
    format!("trc_{nonce}{tag}")
}

/// Whether `trace_id` is one the gateway issued for a call admitted to `deployment_id`.
pub fn is_admitted(trace_key: &[u8; 32], deployment_id: &str, trace_id: &str) -> bool {
    let Some(rest) = trace_id.strip_prefix("trc_") else {
        return false;
    };
    if rest.len() != NONCE_HEX + TAG_HEX || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let (nonce, presented) = rest.split_at(NONCE_HEX);
    constant_time_eq(
        tag(trace_key, deployment_id, nonce).as_bytes(),
        presented.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_trace_ids_issued_for_a_deployment_are_admitted_to_it() {
        let key = [7u8; 32];
        let id = admitted_trace_id(&key, "dep_a");
        assert_eq!(id.len(), 4 + 32);
        assert!(is_admitted(&key, "dep_a", &id));
        assert!(!is_admitted(&key, "dep_b", &id), "another deployment's");
        assert!(
            !is_admitted(&[8u8; 32], "dep_a", &id),
            "another control plane's"
        );
        let mut forged = id.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(!is_admitted(&key, "dep_a", &forged));
        for junk in [
            "",
            "trc_",
            "trc-1",
            "trace-1",
            &id[..id.len() - 1],
            &format!("{id}0"),
        ] {
            assert!(!is_admitted(&key, "dep_a", junk), "{junk}");
        }
        assert_ne!(admitted_trace_id(&key, "dep_a"), id, "fresh every time");
    }
}
