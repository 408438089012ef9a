//! JSON Web Key Sets: parsing the identity provider's published keys, and the cache policy that decides when
//! to fetch them again. The fetch itself is I/O and lives in the platform adapter.

use jwt_compact::alg::RsaPublicKey;
use jwt_compact::jwk::JsonWebKey;
use serde_json::Value;

/// RSA keys below this size are refused outright (NIST SP 800-57: 2048 bits minimum).
const MIN_RSA_BITS: usize = 2048;

/// The RS256 verification keys of one key set, by `kid`.
#[derive(Debug, Clone)]
pub struct Jwks {
    keys: Vec<(String, RsaPublicKey)>,
}

impl Jwks {
    /// Parses a JWKS document. Keys that cannot be used for RS256 signatures (other key types, `use: enc`, another
    /// `alg`, no `kid`) are skipped, as RFC 7517 §5 asks; a set with no usable key, or one carrying private key
    /// material, is an error because it can only be a misconfiguration.
    pub fn parse(json: &str) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| format!("the JWKS is not valid JSON ({e})"))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the JWKS has no \"keys\" array")?;
        let mut keys = Vec::new();
        for entry in entries {
            if entry.get("d").is_some() || entry.get("p").is_some() {
                return Err(
                    "the JWKS contains private key material; publish public keys only".into(),
                );
            }
            let field = |name: &str| entry.get(name).and_then(Value::as_str);
            if field("kty") != Some("RSA")
                || field("use").is_some_and(|u| u != "sig")
                || field("alg").is_some_and(|a| a != "RS256")
            {
                continue;
            }
            let Some(kid) = field("kid").filter(|k| !k.is_empty()) else {
                continue;
            };
            // Only the public parameters are handed to the JWK parser: extra members such as `x5c` are ignored.
            let public =
                serde_json::json!({ "kty": "RSA", "n": entry.get("n"), "e": entry.get("e") });
            let jwk: JsonWebKey<'_> = serde_json::from_value(public)
                .map_err(|e| format!("key {kid:?} is not a valid RSA JWK ({e})"))?;
            let key = RsaPublicKey::try_from(&jwk)
                .map_err(|e| format!("key {kid:?} is not a valid RSA public key ({e})"))?;
            if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
                return Err(format!("key {kid:?} is shorter than {MIN_RSA_BITS} bits"));
            }
            keys.push((kid.to_owned(), key));
        }
        if keys.is_empty() {
            return Err("the JWKS has no RS256 signing key with a \"kid\"".into());
        }
        Ok(Jwks { keys })
    }

    pub fn key(&self, kid: &str) -> Option<&RsaPublicKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How long fetched keys are trusted before they are fetched again.
pub const JWKS_TTL_MS: i64 = 10 * 60 * 1000;
/// A token with an unknown `kid` triggers a refetch (key rotation), but at most this often, so a flood of
/// forged `kid`s cannot turn into a flood of requests to the identity provider.
pub const UNKNOWN_KID_REFETCH_INTERVAL_MS: i64 = 30 * 1000;
/// When the provider is unreachable, keys this old are still used rather than failing every request.
pub const JWKS_MAX_STALE_MS: i64 = 60 * 60 * 1000;

/// Keys fetched from a URL, with the times the cache policy needs.
#[derive(Debug, Clone, Default)]
pub struct JwksCache {
    keys: Option<Jwks>,
    fetched_at_ms: i64,
    last_attempt_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePlan {
    UseCached,
    Fetch,
}

impl JwksCache {
    pub fn plan(&self, now_ms: i64, kid: &str) -> CachePlan {
        let Some(keys) = &self.keys else {
            return CachePlan::Fetch;
        };
        if now_ms - self.fetched_at_ms >= JWKS_TTL_MS {
            return CachePlan::Fetch;
        }
        if keys.key(kid).is_none() && self.may_attempt(now_ms) {
            return CachePlan::Fetch;
        }
        CachePlan::UseCached
    }

    fn may_attempt(&self, now_ms: i64) -> bool {
        self.last_attempt_ms
            .is_none_or(|t| now_ms - t >= UNKNOWN_KID_REFETCH_INTERVAL_MS)
    }

    pub fn record_attempt(&mut self, now_ms: i64) {
        self.last_attempt_ms = Some(now_ms);
    }

    pub fn store(&mut self, keys: Jwks, now_ms: i64) {
        self.keys = Some(keys);
        self.fetched_at_ms = now_ms;
    }

    /// The keys to verify with: fresh ones, or, after a failed fetch, ones not older than the stale bound.
    pub fn usable(&self, now_ms: i64) -> Option<&Jwks> {
        self.keys
            .as_ref()
            .filter(|_| now_ms - self.fetched_at_ms < JWKS_MAX_STALE_MS)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::test_keys::{jwks_json, TestKey};

    #[test]
    fn parses_rs256_keys_and_skips_unusable_ones() {
        let a = TestKey::get(0);
        let mut doc: Value = serde_json::from_str(&jwks_json(&[a])).unwrap();
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.push(serde_json::json!({"kty":"EC","kid":"ec","crv":"P-256","x":"AA","y":"AA"}));
        let mut enc = keys[0].clone();
        enc["kid"] = "enc-key".into();
        enc["use"] = "enc".into();
        keys.push(enc);
        let jwks = Jwks::parse(&doc.to_string()).unwrap();
        assert_eq!(jwks.len(), 1);
        assert!(jwks.key(&a.kid).is_some());
        assert!(jwks.key("enc-key").is_none());
    }

    #[test]
    fn refuses_sets_that_can_only_be_misconfiguration() {
        assert!(Jwks::parse("not json").is_err());
        assert!(Jwks::parse("{}").is_err());
        assert!(Jwks::parse(r#"{"keys":[]}"#).is_err());
        let mut doc: Value = serde_json::from_str(&jwks_json(&[TestKey::get(0)])).unwrap();
        doc["keys"][0]["d"] = "AQAB".into();
        let err = Jwks::parse(&doc.to_string()).unwrap_err();
        assert!(err.contains("private"), "{err}");
    }

    #[test]
    fn refuses_short_rsa_keys() {
        // A 512-bit modulus (all 0xff bytes) with e = 65537.
        use base64::Engine;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xffu8; 64]);
        let doc = format!(r#"{{"keys":[{{"kty":"RSA","kid":"short","n":"{n}","e":"AQAB"}}]}}"#);
        let err = Jwks::parse(&doc).unwrap_err();
        assert!(err.contains("2048"), "{err}");
    }

    #[test]
    fn cache_fetches_when_empty_or_expired() {
        let keys = Jwks::parse(&jwks_json(&[TestKey::get(0)])).unwrap();
        let kid = TestKey::get(0).kid.clone();
        let mut cache = JwksCache::default();
        assert_eq!(cache.plan(0, &kid), CachePlan::Fetch);
        cache.record_attempt(1_000);
        cache.store(keys, 1_000);
        assert_eq!(
            cache.plan(1_000 + JWKS_TTL_MS - 1, &kid),
            CachePlan::UseCached
        );
        assert_eq!(cache.plan(1_000 + JWKS_TTL_MS, &kid), CachePlan::Fetch);
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_interval() {
        let keys = Jwks::parse(&jwks_json(&[TestKey::get(0)])).unwrap();
        let mut cache = JwksCache::default();
        cache.record_attempt(0);
        cache.store(keys, 0);
        // Right after a fetch, an unknown kid does not trigger another one.
        assert_eq!(cache.plan(1, "rotated"), CachePlan::UseCached);
        let t = UNKNOWN_KID_REFETCH_INTERVAL_MS + 5_000;
        assert_eq!(cache.plan(t, "rotated"), CachePlan::Fetch);
        cache.record_attempt(t);
        assert_eq!(cache.plan(t + 1, "rotated"), CachePlan::UseCached);
        assert_eq!(
            cache.plan(t + UNKNOWN_KID_REFETCH_INTERVAL_MS - 1, "forged"),
            CachePlan::UseCached
        );
        assert_eq!(
            cache.plan(t + UNKNOWN_KID_REFETCH_INTERVAL_MS, "forged"),
            CachePlan::Fetch
        );
    }

    #[test]
    fn stale_keys_serve_only_within_the_bound() {
        let keys = Jwks::parse(&jwks_json(&[TestKey::get(0)])).unwrap();
        let mut cache = JwksCache::default();
        assert!(cache.usable(0).is_none());
        cache.store(keys, 0);
        assert!(cache.usable(JWKS_MAX_STALE_MS - 1).is_some());
        assert!(cache.usable(JWKS_MAX_STALE_MS).is_none());
    }
}
