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

/// When a token expires (ms since the epoch), read without checking it: only for a token already verified (the
/// live feed ends a stream when the token it was opened with expires).
pub fn expiry_ms_of_verified(token: &str) -> Option<i64> {
    let untrusted = parse_untrusted(token).ok()?;
    let claims = untrusted
        .deserialize_claims_unchecked::<serde_json::Value>()
        .ok()?;
    claims.expiration.map(|exp| exp.timestamp_millis())
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
    // An `iat` in the future cannot shorten the lifetime counted.
    let issued_s = claims
        .issued_at
        .or(claims.not_before)
        .map_or(now_s, |t| t.timestamp())
        .min(now_s);
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
mod tests;
