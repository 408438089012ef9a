//! Admission tickets (DESIGN.md §4.8): the trace id the gateway gives an admitted call carries a tag that only
//! the control plane can make — a MAC, keyed with a key derived from its encryption key, over the deployment and
//! the trace id's random part. Telemetry is charged only for events whose trace id carries this deployment's tag,
//! so an event about a call the gateway never admitted (made up, or about another deployment) bills nobody.
//! The trace id also carries, under the tag, the minute it was issued: it is accepted only as long as an event
//! about it could be (`MAX_EVENT_AGE_MS`), so a trace id a client once saw cannot be billed under for ever (say,
//! by calling a deployment made before the gateway guard existed, which anyone can reach).

use crate::crypto::{constant_time_eq, hmac_sha256};
use crate::domain::ids::{hex_encode, random_hex};
use crate::domain::telemetry::{MAX_EVENT_AGE_MS, MAX_EVENT_SKEW_MS};

/// The label the trace-id key is derived under from `TELEMETRY_SECRETS_ENCRYPTION_KEY`.
pub const TRACE_KEY_LABEL: &[u8] = b"webhost/trace-ids/v1";
/// The nonce: 8 hex digits of the minute it was issued (since the Unix epoch), then 16 random ones (64 bits, so
/// ids issued in the same minute do not collide).
const NONCE_HEX: usize = 24;
const MINUTE_HEX: usize = 8;
const TAG_HEX: usize = 16;
const MINUTE_MS: i64 = 60_000;

fn tag(trace_key: &[u8; 32], deployment_id: &str, nonce: &str) -> String {
    let mac = hmac_sha256(trace_key, format!("{deployment_id}\n{nonce}").as_bytes());
    hex_encode(&mac[..TAG_HEX / 2])
}

/// A fresh trace id for a call admitted to `deployment_id` at `now`: `trc_` + 8 hex minute + 16 hex random + 16
/// hex tag.
pub fn admitted_trace_id(trace_key: &[u8; 32], deployment_id: &str, now: i64) -> String {
    let minute = (now.max(0) / MINUTE_MS) as u32;
    let nonce = format!(
        "{minute:0width$x}{}",
        random_hex((NONCE_HEX - MINUTE_HEX) / 2),
        width = MINUTE_HEX
    );
    let tag = tag(trace_key, deployment_id, &nonce);
    format!("trc_{nonce}{tag}")
}

/// Whether `trace_id` is one the gateway issued for a call admitted to `deployment_id`, recently enough at `now`
/// that an event about it may still be reported.
pub fn is_admitted(trace_key: &[u8; 32], deployment_id: &str, trace_id: &str, now: i64) -> bool {
    let Some(rest) = trace_id.strip_prefix("trc_") else {
        return false;
    };
    if rest.len() != NONCE_HEX + TAG_HEX || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let (nonce, presented) = rest.split_at(NONCE_HEX);
    if !constant_time_eq(
        tag(trace_key, deployment_id, nonce).as_bytes(),
        presented.as_bytes(),
    ) {
        return false;
    }
    let Ok(minute) = i64::from_str_radix(&nonce[..MINUTE_HEX], 16) else {
        return false;
    };
    let issued = minute * MINUTE_MS;
    // Issued within the minute: up to a minute later than `issued` says.
    issued + MINUTE_MS >= now - MAX_EVENT_AGE_MS && issued <= now + MAX_EVENT_SKEW_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    #[test]
    fn only_the_trace_ids_issued_for_a_deployment_are_admitted_to_it() {
        let key = [7u8; 32];
        let id = admitted_trace_id(&key, "dep_a", NOW);
        assert_eq!(id.len(), 4 + 40);
        assert!(is_admitted(&key, "dep_a", &id, NOW));
        assert!(
            !is_admitted(&key, "dep_b", &id, NOW),
            "another deployment's"
        );
        assert!(
            !is_admitted(&[8u8; 32], "dep_a", &id, NOW),
            "another control plane's"
        );
        let mut forged = id.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(!is_admitted(&key, "dep_a", &forged, NOW));
        for junk in [
            "",
            "trc_",
            "trc-1",
            "trace-1",
            &id[..id.len() - 1],
            &format!("{id}0"),
        ] {
            assert!(!is_admitted(&key, "dep_a", junk, NOW), "{junk}");
        }
        assert_ne!(
            admitted_trace_id(&key, "dep_a", NOW),
            id,
            "fresh every time"
        );
    }

    #[test]
    fn a_trace_id_is_admitted_only_while_an_event_about_it_could_be() {
        let key = [7u8; 32];
        let id = admitted_trace_id(&key, "dep_a", NOW);
        assert!(is_admitted(&key, "dep_a", &id, NOW + MAX_EVENT_AGE_MS));
        assert!(!is_admitted(
            &key,
            "dep_a",
            &id,
            NOW + MAX_EVENT_AGE_MS + 2 * MINUTE_MS
        ));
        assert!(is_admitted(&key, "dep_a", &id, NOW - MAX_EVENT_SKEW_MS));
        assert!(!is_admitted(
            &key,
            "dep_a",
            &id,
            NOW - MAX_EVENT_SKEW_MS - 2 * MINUTE_MS
        ));
        // The minute is under the tag: changing it breaks the tag.
        let mut moved = id.clone();
        moved.replace_range(4..12, &format!("{:08x}", (NOW / MINUTE_MS) as u32 + 1000));
        assert!(!is_admitted(&key, "dep_a", &moved, NOW + 1000 * MINUTE_MS));
    }
}
