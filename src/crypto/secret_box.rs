//! Secrets at rest: AES-256-GCM under the operator's key (`TELEMETRY_SECRETS_ENCRYPTION_KEY`), with associated
//! data that binds each ciphertext to where it belongs (e.g. user, agent and secret name), so a ciphertext
//! copied to another row does not decrypt. Stored form: `v2.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`,
//! where the key id names the key that sealed it (so keys can rotate: `crypto::keyring`); values written before
//! key ids existed are `v1.<base64url(…)>` and open with whichever configured key sealed them.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use std::fmt;

const NONCE_LEN: usize = 12;
pub const LEGACY_PREFIX: &str = "v1.";
const PREFIX: &str = "v2.";
/// Hex digits of a key id: 64 bits of an HMAC of the key, which identifies it and reveals nothing of it.
const KEY_ID_HEX: usize = 16;

/// A 32-byte AES-256 key. `Debug` never shows the bytes.
#[derive(Clone)]
pub struct EncryptionKey(Box<[u8; 32]>);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl EncryptionKey {
    /// Accepts `hex:<64 hex digits>`, or 32 bytes as base64 or base64url (padded or not). Any other length is
    /// an error: a short key must fail loudly, not be padded.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let bytes = if let Some(hex) = value.strip_prefix("hex:") {
            decode_hex(hex).ok_or("the hex: key is not valid hexadecimal")?
        } else {
            STANDARD
                .decode(value)
                .or_else(|_| URL_SAFE.decode(value))
                .or_else(|_| URL_SAFE_NO_PAD.decode(value))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
                .map_err(|_| "the key is neither base64, base64url nor hex:…".to_string())?
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("the key must be 32 bytes, got {}", b.len()))?;
        Ok(EncryptionKey(Box::new(bytes)))
    }

    /// The key's id, recorded in every value it seals.
    pub fn key_id(&self) -> String {
        crate::domain::ids::hex_encode(&self.derive(b"webhost/key-id/v1")[..KEY_ID_HEX / 2])
    }

    /// A separate key for another purpose (`label` names it), derived so that neither reveals the other.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        crate::crypto::hmac_sha256(&self.0[..], label)
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).expect("the platform's random source is unavailable");
        self.seal_with_nonce(plaintext, aad, nonce)
    }

    fn seal_with_nonce(&self, plaintext: &[u8], aad: &[u8], nonce: [u8; NONCE_LEN]) -> String {
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}.{}", self.key_id(), URL_SAFE_NO_PAD.encode(out))
    }

    /// Fails on a value sealed under another key, a wrong `aad`, or any altered byte.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, String> {
        let encoded = match sealed_key_id(sealed)? {
            SealedUnder::Key(id) if id != self.key_id() => {
                return Err(format!("sealed under key {id}, not this one"))
            }
            SealedUnder::Key(id) => &sealed[PREFIX.len() + id.len() + 1..],
            SealedUnder::Legacy => &sealed[LEGACY_PREFIX.len()..],
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| "sealed secret is not base64url")?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err("sealed secret is too short".into());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        Aes256Gcm::new(self.0.as_ref().into())
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| {
                "sealed secret does not authenticate (wrong key, wrong binding, or altered)".into()
            })
    }
}

/// Which key a stored value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedUnder<'a> {
    Key(&'a str),
    /// Sealed before values recorded their key.
    Legacy,
}

/// The key id a stored value records (without opening it).
pub fn sealed_key_id(sealed: &str) -> Result<SealedUnder<'_>, String> {
    if sealed.starts_with(LEGACY_PREFIX) {
        return Ok(SealedUnder::Legacy);
    }
    let rest = sealed
        .strip_prefix(PREFIX)
        .ok_or("unknown sealed-secret format")?;
    match rest.split_once('.') {
        Some((id, _)) if id.len() == KEY_ID_HEX && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(SealedUnder::Key(id))
        }
        _ => Err("sealed secret has no key id".into()),
    }
}

/// The stored-value prefix of everything `key_id` sealed (what the re-seal job looks past).
pub fn sealed_prefix(key_id: &str) -> String {
    format!("{PREFIX}{key_id}.")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::parse(&format!("hex:{}", "00".repeat(32))).unwrap()
    }

    fn raw(sealed: &str) -> Vec<u8> {
        let (_, encoded) = sealed
            .strip_prefix(PREFIX)
            .unwrap()
            .split_once('.')
            .unwrap();
        URL_SAFE_NO_PAD.decode(encoded).unwrap()
    }

    /// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13 and 14 (AES-256, zero key and IV).
    #[test]
    fn gcm_spec_vectors() {
        let t13 = raw(&key().seal_with_nonce(b"", b"", [0; 12]));
        assert_eq!(
            crate::domain::ids::hex_encode(&t13[12..]),
            "530f8afbc74536b9a963b4f1c4cb738b"
        );
        let t14 = raw(&key().seal_with_nonce(&[0u8; 16], b"", [0; 12]));
        assert_eq!(
            crate::domain::ids::hex_encode(&t14[12..]),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let k = key();
        let a = k.seal(b"hunter2", b"usr_1/agt_1/API_KEY");
        let b = k.seal(b"hunter2", b"usr_1/agt_1/API_KEY");
        assert_ne!(a, b, "nonces are random");
        assert!(!a.contains("hunter2"));
        assert_eq!(k.open(&a, b"usr_1/agt_1/API_KEY").unwrap(), b"hunter2");
    }

    #[test]
    fn wrong_binding_key_or_any_altered_byte_fails() {
        let k = key();
        let sealed = k.seal(b"hunter2", b"usr_1/agt_1/API_KEY");
        assert!(k.open(&sealed, b"usr_2/agt_1/API_KEY").is_err());
        let other = EncryptionKey::parse(&format!("hex:{}", "11".repeat(32))).unwrap();
        assert!(other.open(&sealed, b"usr_1/agt_1/API_KEY").is_err());
        let bytes = raw(&sealed);
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 1;
            let forged = format!(
                "{}{}",
                sealed_prefix(&k.key_id()),
                URL_SAFE_NO_PAD.encode(&altered)
            );
            assert!(k.open(&forged, b"usr_1/agt_1/API_KEY").is_err(), "byte {i}");
        }
        assert!(k.open("v0.abc", b"").is_err());
        assert!(k.open("v1.AAAA", b"").is_err());
        assert!(k.open("v2.AAAA", b"").is_err());
    }

    #[test]
    fn values_name_their_key_and_legacy_values_still_open() {
        let k = key();
        let sealed = k.seal(b"hunter2", b"aad");
        assert_eq!(
            sealed_key_id(&sealed),
            Ok(SealedUnder::Key(&k.key_id()[..]))
        );
        assert!(sealed.starts_with(&sealed_prefix(&k.key_id())));
        let other = EncryptionKey::parse(&format!("hex:{}", "11".repeat(32))).unwrap();
        assert_ne!(other.key_id(), k.key_id());
        assert!(other
            .open(&sealed, b"aad")
            .unwrap_err()
            .contains(&k.key_id()));
        // A value from before key ids: `v1.` and the same bytes.
        let legacy = format!("{LEGACY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw(&sealed)));
        assert_eq!(sealed_key_id(&legacy), Ok(SealedUnder::Legacy));
        assert_eq!(k.open(&legacy, b"aad").unwrap(), b"hunter2");
        assert!(other.open(&legacy, b"aad").is_err());
    }

    #[test]
    fn key_encodings_and_lengths() {
        let bytes = [7u8; 32];
        for encoded in [
            STANDARD.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            format!("hex:{}", "07".repeat(32)),
        ] {
            let k = EncryptionKey::parse(&encoded).unwrap();
            assert_eq!(*k.0, bytes);
        }
        for bad in [
            STANDARD.encode([1u8; 16]),
            STANDARD.encode([1u8; 33]),
            "hex:zz".into(),
            "hex:abc".into(),
            "!!".into(),
            String::new(),
        ] {
            assert!(EncryptionKey::parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{:?}", key()), "EncryptionKey(<redacted>)");
    }
}
