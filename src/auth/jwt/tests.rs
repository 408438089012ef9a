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
    // An `iat` in the future does not shorten it.
    assert_eq!(
        lifetime(Some(NOW_S + 30 * 86_400), NOW_S + 30 * 86_400 + 60),
        Err(ErrorCode::TokenLifetimeTooLong)
    );
    // Without `iat`, the lifetime counts from now.
    assert!(lifetime(None, NOW_S + 3_600).is_ok());
    assert_eq!(
        lifetime(None, NOW_S + 30 * 86_400),
        Err(ErrorCode::TokenLifetimeTooLong)
    );
}

#[test]
fn a_verified_tokens_expiry_is_read_for_the_live_feed() {
    let token = sign(TestKey::get(0), claims());
    assert_eq!(expiry_ms_of_verified(&token), Some((NOW_S + 60) * 1000));
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(expiry_ms_of_verified(&sign(TestKey::get(0), no_exp)), None);
    assert_eq!(expiry_ms_of_verified("not.a.token"), None);
}
