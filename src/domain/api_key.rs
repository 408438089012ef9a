//! API keys for programmatic invocation. A key is `whk_` plus 48 hex characters (192 random bits); only its
//! SHA-256 is stored, with a short visible prefix so owners can tell keys apart. Keys authenticate the invoke
//! routes only, optionally for a single agent.

use super::error::{ApiError, ErrorCode};
use super::ids::{random_hex, AgentId};
use crate::crypto::sha256_hex;
use serde::Deserialize;
use serde_json::Value;

pub const KEY_PREFIX: &str = "whk_";
const SECRET_HEX_LEN: usize = 48;
/// How much of a key is shown back (`whk_` plus 8 characters): enough to recognise, too little to guess.
pub const VISIBLE_PREFIX_LEN: usize = 12;
/// Live (unrevoked) keys a user may hold at once.
pub const MAX_LIVE_KEYS: u32 = 25;
pub const MAX_KEY_NAME_LEN: usize = 64;

/// A freshly generated key: `secret` is shown to the caller once and never again.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

pub fn generate() -> NewKey {
    let secret = format!("{KEY_PREFIX}{}", random_hex(SECRET_HEX_LEN / 2));
    NewKey {
        prefix: secret[..VISIBLE_PREFIX_LEN].to_owned(),
        hash: hash(&secret),
        secret,
    }
}

pub fn hash(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

/// Whether a bearer credential is an API key (rather than an identity provider's JWT). Only the shape is
/// checked here; whether it is a live key is the store's answer.
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// Whether a credential that looks like a key is well formed, so garbage never reaches the database.
pub fn is_well_formed(token: &str) -> bool {
    token.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == SECRET_HEX_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `POST /v1/api-keys` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateKey {
    pub name: String,
    pub agent_id: Option<AgentId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCreate {
    name: String,
    #[serde(default)]
    agent_id: Option<String>,
}

impl CreateKey {
    pub fn from_json(body: Value) -> Result<Self, ApiError> {
        let raw: RawCreate = serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("Expected {{\"name\": string, \"agentId\"?: string}}: {e}"),
            )
        })?;
        let name = raw.name.trim().to_owned();
        if name.is_empty()
            || name.chars().count() > MAX_KEY_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(ApiError::validation(
                "name",
                format!("must be 1 to {MAX_KEY_NAME_LEN} printable characters"),
            ));
        }
        let agent_id =
            match raw.agent_id {
                None => None,
                Some(id) => Some(AgentId::parse(&id).ok_or_else(|| {
                    ApiError::validation("agentId", "must be an agent id (agt_…)")
                })?),
            };
        Ok(CreateKey { name, agent_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_keys_are_well_formed_and_stored_only_as_a_hash() {
        let key = generate();
        assert!(is_well_formed(&key.secret));
        assert!(looks_like_key(&key.secret));
        assert_eq!(key.prefix.len(), VISIBLE_PREFIX_LEN);
        assert!(key.secret.starts_with(&key.prefix));
        assert_eq!(key.hash, hash(&key.secret));
        assert!(!key.hash.contains(&key.secret[KEY_PREFIX.len()..]));
        assert_ne!(generate().secret, key.secret);
    }

    #[test]
    fn malformed_keys_are_recognised_without_a_lookup() {
        assert!(!is_well_formed("whk_123"));
        assert!(!is_well_formed(&format!("whk_{}", "G".repeat(48))));
        assert!(!looks_like_key("eyJhbGciOi.x.y"));
    }

    #[test]
    fn create_bodies() {
        let ok = CreateKey::from_json(
            json!({"name": " ci ", "agentId": "agt_0123456789abcdef01234567"}),
        )
        .unwrap();
        assert_eq!(ok.name, "ci");
        assert!(ok.agent_id.is_some());
        for bad in [
            json!({}),
            json!({"name": ""}),
            json!({"name": "x".repeat(65)}),
            json!({"name": "a\nb"}),
            json!({"name": "ci", "agentId": "nope"}),
            json!({"name": "ci", "userId": "usr_x"}),
        ] {
            assert!(CreateKey::from_json(bad.clone()).is_err(), "{bad}");
        }
    }
}
