//! Authentication settings, read from the worker's configuration. A setting that is missing or unreadable is an
//! error: authentication never degrades to accepting everyone.

use super::jwks::Jwks;

#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched and cached (Clerk: `https://<frontend-api>/.well-known/jwks.json`).
    Url(String),
    /// Given inline as JSON (local development and tests).
    Inline(Jwks),
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Exact `iss` every token must carry.
    pub issuer: String,
    pub jwks: JwksSource,
    /// When set, a token's `azp` must be one of these.
    pub authorized_parties: Option<Vec<String>>,
    /// When set, a token's `aud` (one value or a list) must name one of these.
    pub audiences: Option<Vec<String>>,
    /// Tokens issued for longer than this (`exp` − `iat`) are refused, however well signed.
    pub max_lifetime_s: i64,
}

/// The longest token lifetime accepted unless `AUTH_MAX_TOKEN_LIFETIME_S` says otherwise (identity-provider
/// session tokens live minutes; a day leaves room for API clients' own).
pub const DEFAULT_MAX_TOKEN_LIFETIME_S: i64 = 24 * 60 * 60;
const MAX_CONFIGURABLE_LIFETIME_S: i64 = 30 * 24 * 60 * 60;

/// A comma-separated list variable: `None` when unset, an error when set to nothing.
fn list(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<Vec<String>>, String> {
    let Some(raw) = get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let items: Vec<String> = raw
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if items.is_empty() {
        return Err(format!("{name} is set but names nothing"));
    }
    Ok(Some(items))
}

impl AuthConfig {
    /// Reads `AUTH_ISSUER`, `AUTH_JWKS_URL` or `AUTH_JWKS`, and `AUTH_AUTHORIZED_PARTIES`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let nonempty = |name: &str| crate::config::nonempty_var(&get, name);
        let issuer = nonempty("AUTH_ISSUER").ok_or("AUTH_ISSUER is not set")?;
        let jwks = match (nonempty("AUTH_JWKS_URL"), nonempty("AUTH_JWKS")) {
            (Some(_), Some(_)) => return Err("set only one of AUTH_JWKS_URL and AUTH_JWKS".into()),
            (None, None) => return Err("neither AUTH_JWKS_URL nor AUTH_JWKS is set".into()),
            (Some(url), None) => {
                if !is_acceptable_jwks_url(&url) {
                    return Err(
                        "AUTH_JWKS_URL must be an https:// URL (http:// only for localhost)".into(),
                    );
                }
                JwksSource::Url(url)
            }
            (None, Some(json)) => {
                JwksSource::Inline(Jwks::parse(&json).map_err(|e| format!("AUTH_JWKS: {e}"))?)
            }
        };
        let authorized_parties = list(&get, "AUTH_AUTHORIZED_PARTIES")?;
        let audiences = list(&get, "AUTH_AUDIENCES")?;
        // With a real identity provider, a token must be bound to this platform: by audience, or by the
        // applications it was issued to. Otherwise any token the provider issues for any of its applications
        // would do (DESIGN.md §4.8). Keys given inline or served from this machine (tests, the local stack) are
        // this platform's own.
        if matches!(&jwks, JwksSource::Url(url) if url.starts_with("https://"))
            && audiences.is_none()
            && authorized_parties.is_none()
        {
            return Err(
                "set AUTH_AUDIENCES or AUTH_AUTHORIZED_PARTIES (or both) with AUTH_JWKS_URL: tokens must be bound to this platform"
                    .into(),
            );
        }
        let max_lifetime_s = match nonempty("AUTH_MAX_TOKEN_LIFETIME_S") {
            None => DEFAULT_MAX_TOKEN_LIFETIME_S,
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|s| (1..=MAX_CONFIGURABLE_LIFETIME_S).contains(s))
                .ok_or_else(|| {
                    format!(
                        "AUTH_MAX_TOKEN_LIFETIME_S must be whole seconds from 1 to {MAX_CONFIGURABLE_LIFETIME_S}"
                    )
                })?,
        };
        Ok(AuthConfig {
            issuer,
            jwks,
            authorized_parties,
            audiences,
            max_lifetime_s,
        })
    }
}

/// Keys must come over TLS, except from this machine (the local stack and tests).
fn is_acceptable_jwks_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return url.len() > "https://".len();
    }
    ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|local| {
            url.strip_prefix(local).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::{jwks_json, TestKey};
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<AuthConfig, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AuthConfig::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn inline_and_url_sources() {
        let jwks = jwks_json(&[TestKey::get(0)]);
        let cfg = from(&[("AUTH_ISSUER", "https://iss"), ("AUTH_JWKS", &jwks)]).unwrap();
        assert!(matches!(cfg.jwks, JwksSource::Inline(_)));
        assert!(cfg.authorized_parties.is_none());
        let cfg = from(&[
            ("AUTH_ISSUER", "https://iss"),
            (
                "AUTH_JWKS_URL",
                "https://clerk.example.test/.well-known/jwks.json",
            ),
            ("AUTH_AUTHORIZED_PARTIES", "https://a.test, https://b.test"),
        ])
        .unwrap();
        assert!(matches!(cfg.jwks, JwksSource::Url(_)));
        assert_eq!(
            cfg.authorized_parties.unwrap(),
            vec!["https://a.test", "https://b.test"]
        );
    }

    #[test]
    fn misconfiguration_is_an_error_not_an_open_door() {
        let jwks = jwks_json(&[TestKey::get(0)]);
        for (pairs, expect) in [
            (vec![("AUTH_JWKS", jwks.as_str())], "AUTH_ISSUER"),
            (vec![("AUTH_ISSUER", "i")], "neither"),
            (
                vec![("AUTH_ISSUER", "i"), ("AUTH_JWKS", "{bad json")],
                "AUTH_JWKS",
            ),
            (
                vec![("AUTH_ISSUER", "i"), ("AUTH_JWKS", r#"{"keys":[]}"#)],
                "AUTH_JWKS",
            ),
            (
                vec![
                    ("AUTH_ISSUER", "i"),
                    ("AUTH_JWKS", &jwks),
                    ("AUTH_JWKS_URL", "https://x"),
                ],
                "only one",
            ),
            (
                vec![
                    ("AUTH_ISSUER", "i"),
                    ("AUTH_JWKS_URL", "http://evil.test/jwks"),
                ],
                "https",
            ),
            (
                vec![
                    ("AUTH_ISSUER", "i"),
                    ("AUTH_JWKS_URL", "http://localhost.evil.test/"),
                ],
                "https",
            ),
            (
                vec![
                    ("AUTH_ISSUER", "i"),
                    ("AUTH_JWKS", &jwks),
                    ("AUTH_AUTHORIZED_PARTIES", " , "),
                ],
                "AUTH_AUTHORIZED_PARTIES",
            ),
        ] {
            let err = from(&pairs).unwrap_err();
            assert!(err.contains(expect), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn local_http_jwks_urls_are_allowed_for_development() {
        for url in [
            "http://127.0.0.1:9000/jwks.json",
            "http://localhost/jwks",
            "http://[::1]:1/x",
        ] {
            assert!(is_acceptable_jwks_url(url), "{url}");
        }
    }

    #[test]
    fn a_remote_identity_provider_needs_tokens_bound_to_this_platform() {
        let remote = [
            ("AUTH_ISSUER", "https://iss"),
            (
                "AUTH_JWKS_URL",
                "https://clerk.example.test/.well-known/jwks.json",
            ),
        ];
        assert!(from(&remote).unwrap_err().contains("AUTH_AUDIENCES"));
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = remote.to_vec();
            pairs.push(extra);
            from(&pairs)
        };
        assert_eq!(
            with(("AUTH_AUDIENCES", "webhost, webhost-api"))
                .unwrap()
                .audiences
                .unwrap(),
            vec!["webhost", "webhost-api"]
        );
        assert!(with(("AUTH_AUTHORIZED_PARTIES", "https://app.test")).is_ok());
        assert!(with(("AUTH_AUDIENCES", " , "))
            .unwrap_err()
            .contains("names nothing"));
        let jwks = jwks_json(&[TestKey::get(0)]);
        let inline = [("AUTH_ISSUER", "i"), ("AUTH_JWKS", jwks.as_str())];
        assert_eq!(
            from(&inline).unwrap().max_lifetime_s,
            DEFAULT_MAX_TOKEN_LIFETIME_S
        );
        for bad in ["0", "-5", "x", "2592001"] {
            let mut pairs = inline.to_vec();
            pairs.push(("AUTH_MAX_TOKEN_LIFETIME_S", bad));
            assert!(
                from(&pairs)
                    .unwrap_err()
                    .contains("AUTH_MAX_TOKEN_LIFETIME_S"),
                "{bad}"
            );
        }
    }
}
