//! Bearer JWT verification (Clerk-compatible): RS256 only, key chosen by `kid`, then `exp`/`nbf` with a small
//! leeway, `iss`, and `azp` when authorized parties are configured. Every failure is a 401 with a stable code;
//! nothing a token contains can make verification panic or return a 500.

use super::config::AuthConfig;
use super::jwks::Jwks;
use crate::domain::{ApiError, ErrorCode};
use jwt_compact::alg::Rsa;
use jwt_compact::{AlgorithmExt, UntrustedToken, ValidationError};
use serde::Deserialize;

/// The only algorithm accepted. Naming it here, instead of trusting the token's header, is what defeats
/// `alg: none` and HS256-keyed-with-the-public-key forgeries.
pub const ACCEPTED_ALGORITHM: &str = "RS256";
/// Clock skew tolerated between the identity provider and this worker.
pub const LEEWAY_SECONDS: i64 = 10;
/// Tokens longer than this are refused before any parsing (Clerk session tokens are ~1 KB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who a verified token speaks for. `issuer` + `subject` is the external identity the user row is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
}

#[derive(Debug, Deserialize)]
struct RegisteredClaims {
    iss: Option<String>,
    sub: Option<String>,
    azp: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
}

/// `aud` is one string or a list of them (RFC 7519 §4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::One(a) => accepted.contains(a),
            Audience::Many(list) => list.iter().any(|a| accepted.contains(a)),
        }
    }
}

fn reject(code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(code, message)
}

/// Reads `Authorization: Bearer <token>`.
pub fn bearer_token(header: Option<&str>) -> Result<&str, ApiError> {
    let missing = || {
        reject(
            ErrorCode::MissingCredentials,
            "Send 'Authorization: Bearer <token>' with a session token.",
        )
    };
    let value = header.ok_or_else(missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// The `kid` of a token whose algorithm is acceptable: what the key lookup (and a possible JWKS refetch) needs.
pub fn signing_key_id(token: &str) -> Result<String, ApiError> {
    let untrusted = parse_untrusted(token)?;
    untrusted
        .header()
        .key_id
        .clone()
        .filter(|kid| !kid.is_empty())
        .ok_or_else(|| {
            reject(
                ErrorCode::InvalidToken,
                "The token header has no 'kid' naming its signing key.",
            )
        })
}

fn parse_untrusted(token: &str) -> Result<UntrustedToken<'_>, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(reject(ErrorCode::InvalidToken, "The token is too long."));
    }
    let untrusted = UntrustedToken::new(token).map_err(|_| {
        reject(
            ErrorCode::InvalidToken,
            "The token is not a well-formed JWT.",
        )
    })?;
    if untrusted.algorithm() != ACCEPTED_ALGORITHM {
        return Err(reject(
            ErrorCode::UnsupportedTokenAlgorithm,
            "Only RS256-signed tokens are accepted.",
        ));
    }
    Ok(untrusted)
}

/// Verifies signature and claims at `now_ms` (milliseconds since the Unix epoch).
pub fn verify(
    token: &str,
    keys: &Jwks,
    config: &AuthConfig,
    now_ms: i64,
) -> Result<Identity, ApiError> {
    verify_until(token, keys, config, now_ms).map(|(identity, _)| identity)
}

/// `verify`, and until when (ms) the answer holds: the token's `exp`, without the leeway, so a cached verdict
/// never outlives the token.
pub fn verify_until(
    token: &str,
    keys: &Jwks,
    config: &AuthConfig,
    now_ms: i64,
) -> Result<(Identity, i64), ApiError> {
    let untrusted = parse_untrusted(token)?;
    let kid = signing_key_id(token)?;
    let key = keys.key(&kid).ok_or_else(|| {
        reject(
            ErrorCode::UnknownSigningKey,
            "The token was signed by a key this service does not trust.",
        )
    })?;
    let verified = Rsa::rs256()
        .validator::<RegisteredClaims>(key)
        .validate(&untrusted)
        .map_err(|e| match e {
            ValidationError::MalformedClaims(_) => reject(
                ErrorCode::InvalidToken,
                "The token's claims are not valid JSON of the expected shape.",
            ),
            _ => reject(
                ErrorCode::InvalidTokenSignature,
                "The token's signature does not verify.",
            ),
        })?;
    let claims = verified.claims();
    let now_s = now_ms.div_euclid(1000);

    let exp = claims
        .expiration
        .ok_or_else(|| reject(ErrorCode::InvalidToken, "The token has no 'exp' claim."))?;
    if now_s > exp.timestamp() + LEEWAY_SECONDS {
        return Err(reject(ErrorCode::TokenExpired, "The token has expired."));
    }
    if let Some(nbf) = claims.not_before {
        if now_s + LEEWAY_SECONDS < nbf.timestamp() {
            return Err(reject(
                ErrorCode::TokenNotYetValid,
                "The token is not valid yet.",
            ));
        }
    }
    if claims.custom.iss.as_deref() != Some(config.issuer.as_str()) {
        return Err(reject(
            ErrorCode::InvalidTokenIssuer,
            "The token was issued by an issuer this service does not trust.",
        ));
    }
    if let Some(accepted) = &config.audiences {
        if !claims
            .custom
            .aud
            .as_ref()
            .is_some_and(|aud| aud.names_any(accepted))
        {
            return Err(reject(
                ErrorCode::InvalidTokenAudience,
                "The token was issued for another audience than this service.",
            ));
        }
    }
    // How long the token was issued for: from `iat` (or `nbf`), else from now.
    let issued_s = claims
        .issued_at
        .or(claims.not_before)
        .map_or(now_s, |t| t.timestamp());
    if exp.timestamp() - issued_s > config.max_lifetime_s {
        return Err(reject(
            ErrorCode::TokenLifetimeTooLong,
            "The token was issued for longer than this service accepts.",
        ));
    }
    if let Some(allowed) = &config.authorized_parties {
        let azp_ok = claims
            .custom
            .azp
            .as_deref()
            .is_some_and(|azp| allowed.iter().any(|a| a == azp));
        if !azp_ok {
            return Err(reject(
                ErrorCode::UnauthorizedParty,
                "The token was issued to an application (azp) this service does not accept.",
            ));
        }
    }
    let subject = claims
        .custom
        .sub
        .clone()
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| {
            reject(
                ErrorCode::InvalidToken,
                "The token has no usable 'sub' claim.",
            )
        })?;
    Ok((
        Identity {
            issuer: config.issuer.clone(),
            subject,
        },
        exp.timestamp().saturating_mul(1000),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{AuthConfig, JwksSource};
    use crate::auth::test_keys::{jwks_json, TestKey};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_compact::alg::{Hs256, Hs256Key};
    use jwt_compact::{Claims, Header};
    use serde_json::json;

    const ISSUER: &str = "https://clerk.example.test";
    const NOW_MS: i64 = 1_800_000_000_000;
    const NOW_S: i64 = NOW_MS / 1000;

    fn config(parties: Option<Vec<&str>>) -> AuthConfig {
        AuthConfig {
            issuer: ISSUER.into(),
            jwks: JwksSource::Inline(Jwks::parse(&jwks_json(&[TestKey::get(0)])).unwrap()),
            authorized_parties: parties.map(|p| p.into_iter().map(String::from).collect()),
            audiences: None,
            max_lifetime_s: crate::auth::config::DEFAULT_MAX_TOKEN_LIFETIME_S,
        }
    }

    fn keys() -> Jwks {
        Jwks::parse(&jwks_json(&[TestKey::get(0)])).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISSUER, "sub": "user_2abc", "exp": NOW_S + 60, "nbf": NOW_S - 5, "iat": NOW_S - 5,
               "azp": "https://app.example.test"})
    }

    fn sign(key: &TestKey, claims: serde_json::Value) -> String {
        let header = Header::empty().with_key_id(key.kid.clone());
        Rsa::rs256()
            .token(&header, &Claims::new(claims), &key.private)
            .unwrap()
    }

    fn check(token: &str) -> Result<Identity, ErrorCode> {
        verify(token, &keys(), &config(None), NOW_MS).map_err(|e| e.code)
    }

    #[test]
    fn a_valid_token_yields_issuer_and_subject() {
        let id = check(&sign(TestKey::get(0), claims())).unwrap();
        assert_eq!(
            id,
            Identity {
                issuer: ISSUER.into(),
                subject: "user_2abc".into()
            }
        );
    }

    #[test]
    fn a_verdict_holds_until_exp_not_until_exp_plus_leeway() {
        let token = sign(TestKey::get(0), claims());
        let (_, until) = verify_until(&token, &keys(), &config(None), NOW_MS).unwrap();
        assert_eq!(until, (NOW_S + 60) * 1000);
        // Verification itself still tolerates the leeway; a remembered verdict never does.
        let late = (NOW_S + 60 + LEEWAY_SECONDS) * 1000;
        assert!(verify(&token, &keys(), &config(None), late).is_ok());
        assert!(late > until);
    }

    #[test]
    fn alg_none_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k0","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let code = check(&token).unwrap_err();
            assert!(
                matches!(
                    code,
                    ErrorCode::UnsupportedTokenAlgorithm | ErrorCode::InvalidToken
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn hs256_tokens_are_refused_even_when_keyed_with_the_public_key() {
        let key = TestKey::get(0);
        let header = Header::empty().with_key_id(key.kid.clone());
        for secret in [b"secret".to_vec(), key.public_jwk_json.clone().into_bytes()] {
            let token = Hs256
                .token(&header, &Claims::new(claims()), &Hs256Key::new(secret))
                .unwrap();
            assert_eq!(
                check(&token).unwrap_err(),
                ErrorCode::UnsupportedTokenAlgorithm
            );
        }
    }

    #[test]
    fn a_token_from_an_untrusted_key_is_refused() {
        // Same kid, different key: the signature must not verify.
        let mut impostor = TestKey::get(1).clone();
        impostor.kid = TestKey::get(0).kid.clone();
        assert_eq!(
            check(&sign(&impostor, claims())).unwrap_err(),
            ErrorCode::InvalidTokenSignature
        );
        // Its own kid is simply unknown.
        assert_eq!(
            check(&sign(TestKey::get(1), claims())).unwrap_err(),
            ErrorCode::UnknownSigningKey
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = sign(TestKey::get(0), claims());
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims();
        forged["sub"] = "someone_else".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged.to_string()),
            parts[2]
        );
        assert_eq!(
            check(&forged).unwrap_err(),
            ErrorCode::InvalidTokenSignature
        );
    }

    #[test]
    fn expiry_and_not_before_honour_the_leeway() {
        let at = |exp: i64, nbf: i64| {
            let mut c = claims();
            c["exp"] = exp.into();
            c["nbf"] = nbf.into();
            check(&sign(TestKey::get(0), c))
        };
        assert!(at(NOW_S - LEEWAY_SECONDS, NOW_S).is_ok());
        assert_eq!(
            at(NOW_S - LEEWAY_SECONDS - 1, NOW_S).unwrap_err(),
            ErrorCode::TokenExpired
        );
        assert!(at(NOW_S + 60, NOW_S + LEEWAY_SECONDS).is_ok());
        assert_eq!(
            at(NOW_S + 60, NOW_S + LEEWAY_SECONDS + 1).unwrap_err(),
            ErrorCode::TokenNotYetValid
        );
    }

    #[test]
    fn missing_exp_and_sub_are_refused() {
        for field in ["exp", "sub"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(field);
            assert_eq!(
                check(&sign(TestKey::get(0), c)).unwrap_err(),
                ErrorCode::InvalidToken,
                "{field}"
            );
        }
        let mut c = claims();
        c["exp"] = "tomorrow".into();
        assert_eq!(
            check(&sign(TestKey::get(0), c)).unwrap_err(),
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn a_foreign_issuer_is_refused() {
        for iss in [json!("https://evil.example.test"), json!(null), json!(42)] {
            let mut c = claims();
            c["iss"] = iss;
            let code = check(&sign(TestKey::get(0), c)).unwrap_err();
            assert!(
                matches!(
                    code,
                    ErrorCode::InvalidTokenIssuer | ErrorCode::InvalidToken
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn authorized_parties_are_enforced_only_when_configured() {
        let cfg = config(Some(vec!["https://app.example.test"]));
        let ok = sign(TestKey::get(0), claims());
        assert!(verify(&ok, &keys(), &cfg, NOW_MS).is_ok());
        let mut other = claims();
        other["azp"] = "https://evil.example.test".into();
        let other = sign(TestKey::get(0), other);
        assert_eq!(
            verify(&other, &keys(), &cfg, NOW_MS).unwrap_err().code,
            ErrorCode::UnauthorizedParty
        );
        let mut none = claims();
        none.as_object_mut().unwrap().remove("azp");
        let none = sign(TestKey::get(0), none);
        assert_eq!(
            verify(&none, &keys(), &cfg, NOW_MS).unwrap_err().code,
            ErrorCode::UnauthorizedParty
        );
        assert!(verify(&other, &keys(), &config(None), NOW_MS).is_ok());
    }

    #[test]
    fn garbage_is_a_401_never_a_panic() {
        for junk in [
            "",
            ".",
            "..",
            "a.b.c",
            "eyJhbGciOiJSUzI1NiJ9.e30.",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.e30.AAAA",
            "😀.😀.😀",
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            let code = check(junk).unwrap_err();
            assert_eq!(code.status(), 401, "{junk:?} -> {code}");
        }
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("bearer   abc ")).unwrap(), "abc");
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic abc"),
            Some("abc"),
        ] {
            assert_eq!(
                bearer_token(bad).unwrap_err().code,
                ErrorCode::MissingCredentials,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_token_for_another_audience_is_refused_when_audiences_are_configured() {
        let mut cfg = config(None);
        cfg.audiences = Some(vec!["webhost".into(), "webhost-api".into()]);
        let with_aud = |aud: serde_json::Value| {
            let mut c = claims();
            c["aud"] = aud;
            verify(&sign(TestKey::get(0), c), &keys(), &cfg, NOW_MS).map_err(|e| e.code)
        };
        assert!(with_aud(json!("webhost")).is_ok());
        assert!(with_aud(json!(["other", "webhost-api"])).is_ok());
        for aud in [
            json!("other-app"),
            json!(["a", "b"]),
            json!([]),
            json!(null),
        ] {
            assert_eq!(
                with_aud(aud.clone()),
                Err(ErrorCode::InvalidTokenAudience),
                "{aud}"
            );
        }
        // Without `aud` at all.
        assert_eq!(
            verify(&sign(TestKey::get(0), claims()), &keys(), &cfg, NOW_MS).map_err(|e| e.code),
            Err(ErrorCode::InvalidTokenAudience)
        );
    }

    #[test]
    fn a_token_issued_for_longer_than_the_maximum_is_refused() {
        let mut cfg = config(None);
        cfg.max_lifetime_s = 3_600;
        let lifetime = |iat: Option<i64>, exp: i64| {
            let mut c = claims();
            c["exp"] = json!(exp);
            c.as_object_mut().unwrap().remove("nbf");
            match iat {
                Some(t) => c["iat"] = json!(t),
                None => {
                    c.as_object_mut().unwrap().remove("iat");
                }
            }
            verify(&sign(TestKey::get(0), c), &keys(), &cfg, NOW_MS).map_err(|e| e.code)
        };
        assert!(lifetime(Some(NOW_S - 10), NOW_S - 10 + 3_600).is_ok());
        assert_eq!(
            lifetime(Some(NOW_S - 10), NOW_S - 10 + 3_601),
            Err(ErrorCode::TokenLifetimeTooLong)
        );
        // Without `iat`, the lifetime counts from now.
        assert!(lifetime(None, NOW_S + 3_600).is_ok());
        assert_eq!(
            lifetime(None, NOW_S + 30 * 86_400),
            Err(ErrorCode::TokenLifetimeTooLong)
        );
    }
}
