//! Session mapping: the `sessionId` a client sees is opaque and is mapped, per user and agent, to the session id
//! the runtime sees. The mapping lives in the user's gate (one Durable Object per user) under the agent's id, so
//! a session id presented by another user or for another agent is another session and never reaches this one's
//! runtime session.

use super::ids::random_hex;
use serde::{Deserialize, Serialize};

/// Sessions expire after this long without use (each use slides the expiry).
pub const SESSION_TTL_MS: i64 = 24 * 60 * 60 * 1000;
pub const MAX_CLIENT_SESSION_ID_LEN: usize = 128;

/// What the user's gate stores per (agent, client session id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub runtime_session_id: String,
    pub expires_at_ms: i64,
}

/// Client session ids: 1–128 characters of `[A-Za-z0-9._:-]` (safe in headers, logs and storage keys).
pub fn is_valid_client_session_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CLIENT_SESSION_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub fn new_client_session_id() -> String {
    format!("ses_{}", random_hex(16))
}

/// 52 characters: providers such as AgentCore require runtime session ids of at least 33.
pub fn new_runtime_session_id() -> String {
    format!("rts_{}", random_hex(24))
}

/// Continues a live session (sliding its expiry) or starts a new runtime session.
pub fn resolve(existing: Option<SessionRecord>, now_ms: i64) -> (SessionRecord, bool) {
    match existing {
        Some(record) if record.expires_at_ms > now_ms => (
            SessionRecord {
                expires_at_ms: now_ms + SESSION_TTL_MS,
                ..record
            },
            false,
        ),
        _ => (
            SessionRecord {
                runtime_session_id: new_runtime_session_id(),
                expires_at_ms: now_ms + SESSION_TTL_MS,
            },
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_session_keeps_its_runtime_id_and_slides() {
        let (first, created) = resolve(None, 1_000);
        assert!(created);
        assert!(first.runtime_session_id.len() >= 33);
        let (again, created) = resolve(Some(first.clone()), 5_000);
        assert!(!created);
        assert_eq!(again.runtime_session_id, first.runtime_session_id);
        assert_eq!(again.expires_at_ms, 5_000 + SESSION_TTL_MS);
    }

    #[test]
    fn an_expired_session_gets_a_new_runtime_id() {
        let (first, _) = resolve(None, 0);
        let (next, created) = resolve(Some(first.clone()), first.expires_at_ms);
        assert!(created);
        assert_ne!(next.runtime_session_id, first.runtime_session_id);
    }

    #[test]
    fn client_session_ids() {
        assert!(is_valid_client_session_id(&new_client_session_id()));
        assert!(is_valid_client_session_id("conv-42:part.1"));
        for bad in ["", "has space", "slash/", "s:\n", &"a".repeat(129)] {
            assert!(!is_valid_client_session_id(bad), "{bad:?}");
        }
    }
}
