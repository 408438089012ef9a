//! Stripe's webhook signature (`Stripe-Signature: t=<unix seconds>,v1=<hex>,v1=<hex>,v0=…`): HMAC-SHA256 with the
//! endpoint's signing secret (the whole `whsec_…` string is the key) over `<t>.<raw body>`. Several `v1` may be
//! present while Stripe rolls a secret, and several secrets may be configured while we roll ours: any match of any
//! pair accepts. `v0` and unknown schemes are ignored. The timestamp must be within the tolerance of now, either
//! way, so a captured request cannot be replayed later.

use crate::crypto::{constant_time_eq, hmac_sha256};

/// Stripe's own default tolerance.
pub const DEFAULT_TOLERANCE_S: i64 = 300;
/// A header longer than this is not Stripe's (it holds one timestamp and a few 64-character signatures).
const MAX_HEADER_BYTES: usize = 2048;
/// `v1` values looked at, at most.
const MAX_SIGNATURES: usize = 8;

/// Why a webhook was refused; the `details.reason` of `invalid_webhook_signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureProblem {
    MissingHeader,
    MalformedHeader,
    TimestampOutOfTolerance,
    NoMatchingSignature,
}

impl SignatureProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureProblem::MissingHeader => "missing_header",
            SignatureProblem::MalformedHeader => "malformed_header",
            SignatureProblem::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            SignatureProblem::NoMatchingSignature => "no_matching_signature",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            SignatureProblem::MissingHeader => "The request has no Stripe-Signature header.",
            SignatureProblem::MalformedHeader => {
                "The Stripe-Signature header is not t=<timestamp>,v1=<signature>."
            }
            SignatureProblem::TimestampOutOfTolerance => {
                "The Stripe-Signature timestamp is outside the tolerance of the current time."
            }
            SignatureProblem::NoMatchingSignature => {
                "No signature in Stripe-Signature matches the body with a configured signing secret."
            }
        }
    }
}

struct Parsed {
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse(header: &str) -> Result<Parsed, SignatureProblem> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(SignatureProblem::MalformedHeader);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureProblem::MalformedHeader)?;
        match key {
            "t" => {
                if timestamp.is_some()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(SignatureProblem::MalformedHeader);
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureProblem::MalformedHeader)?,
                );
            }
            "v1" if signatures.len() < MAX_SIGNATURES => {
                // A value that is not 32 bytes of hex can never match; it is skipped, not fatal.
                if let Some(tag) = decode_hex_32(value) {
                    signatures.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureProblem::MalformedHeader)?;
    Ok(Parsed {
        timestamp,
        signatures,
    })
}

fn decode_hex_32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Checks `header` against `body` (the raw bytes, exactly as received) with any of `secrets`, at `now_s`.
/// Returns the signed timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    tolerance_s: i64,
    now_s: i64,
) -> Result<i64, SignatureProblem> {
    let header = header.ok_or(SignatureProblem::MissingHeader)?;
    let parsed = parse(header)?;
    if (now_s - parsed.timestamp).abs() > tolerance_s {
        return Err(SignatureProblem::TimestampOutOfTolerance);
    }
    let mut signed = Vec::with_capacity(body.len() + 12);
    signed.extend_from_slice(parsed.timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // One HMAC per secret (the body may be large), compared with every tag in constant time; every pair is
    // compared (no early exit), so timing says nothing about which one matched.
    let mut matched = false;
    for secret in secrets {
        let expected = hmac_sha256(secret.as_bytes(), &signed);
        for tag in &parsed.signatures {
            matched |= constant_time_eq(&expected, tag);
        }
    }
    if matched {
        Ok(parsed.timestamp)
    } else {
        Err(SignatureProblem::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hmac_sha256;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_800_000_000;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(body);
        hex(&hmac_sha256(secret.as_bytes(), &message))
    }

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_correctly_signed_body_is_accepted_and_any_change_refused() {
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let header = format!("t={NOW},v1={}", sign(SECRET, NOW, body));
        assert_eq!(
            verify(Some(&header), body, &secrets(&[SECRET]), 300, NOW),
            Ok(NOW)
        );
        let mut altered = body.to_vec();
        altered[5] ^= 1;
        assert_eq!(
            verify(Some(&header), &altered, &secrets(&[SECRET]), 300, NOW),
            Err(SignatureProblem::NoMatchingSignature)
        );
        assert_eq!(
            verify(Some(&header), body, &secrets(&["whsec_other"]), 300, NOW),
            Err(SignatureProblem::NoMatchingSignature)
        );
    }

    #[test]
    fn a_header_made_by_stripes_own_library_verifies() {
        // From the `stripe` npm package (23.1.0): webhooks.generateTestHeaderString({payload: "{}", secret:
        // "whsec_x", timestamp: 1700000000}).
        let header =
            "t=1700000000,v1=be8cb8325f2202445260a855532f967e30ad2a9394ce28da66ee02880ddcb661";
        let whsec = secrets(&["whsec_x"]);
        assert_eq!(
            verify(Some(header), b"{}", &whsec, 300, 1_700_000_000),
            Ok(1_700_000_000)
        );
        assert!(verify(Some(header), b"{ }", &whsec, 300, 1_700_000_000).is_err());
    }

    #[test]
    fn during_rotation_any_v1_with_any_secret_matches() {
        let body = b"{}";
        let header = format!(
            "t={NOW},v1={},v0={},v1={}",
            sign("whsec_old", NOW, body),
            "00".repeat(32),
            sign("whsec_new", NOW, body)
        );
        // Stripe rolling its secret: two v1; we hold only the new one.
        assert!(verify(Some(&header), body, &secrets(&["whsec_new"]), 300, NOW).is_ok());
        // We rolling ours: one v1; we hold both.
        let one = format!("t={NOW},v1={}", sign("whsec_new", NOW, body));
        assert!(verify(
            Some(&one),
            body,
            &secrets(&["whsec_old", "whsec_new"]),
            300,
            NOW
        )
        .is_ok());
        // v0 alone never counts.
        let v0_only = format!("t={NOW},v0={}", sign(SECRET, NOW, body));
        assert_eq!(
            verify(Some(&v0_only), body, &secrets(&[SECRET]), 300, NOW),
            Err(SignatureProblem::NoMatchingSignature)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance_either_way() {
        let body = b"{}";
        for (t, ok) in [
            (NOW - 300, true),
            (NOW - 301, false),
            (NOW + 300, true),
            (NOW + 301, false),
        ] {
            let header = format!("t={t},v1={}", sign(SECRET, t, body));
            assert_eq!(
                verify(Some(&header), body, &secrets(&[SECRET]), 300, NOW).is_ok(),
                ok,
                "t = now {:+}",
                t - NOW
            );
        }
        // The timestamp is part of what is signed: moving it breaks the signature.
        let header = format!("t={},v1={}", NOW + 1, sign(SECRET, NOW, body));
        assert_eq!(
            verify(Some(&header), body, &secrets(&[SECRET]), 300, NOW),
            Err(SignatureProblem::NoMatchingSignature)
        );
    }

    #[test]
    fn malformed_or_missing_headers_are_refused_with_their_reason() {
        let body = b"{}";
        let sig = sign(SECRET, NOW, body);
        assert_eq!(
            verify(None, body, &secrets(&[SECRET]), 300, NOW),
            Err(SignatureProblem::MissingHeader)
        );
        for bad in [
            String::new(),
            format!("v1={sig}"),
            format!("t=abc,v1={sig}"),
            format!("t=-5,v1={sig}"),
            format!("t={NOW},t={NOW},v1={sig}"),
            "garbage".to_owned(),
            format!("t={NOW},v1={}", "a".repeat(3000)),
        ] {
            assert_eq!(
                verify(Some(&bad), body, &secrets(&[SECRET]), 300, NOW),
                Err(SignatureProblem::MalformedHeader),
                "{bad:.40}"
            );
        }
        // No secret configured: nothing can match.
        let header = format!("t={NOW},v1={sig}");
        assert_eq!(
            verify(Some(&header), body, &[], 300, NOW),
            Err(SignatureProblem::NoMatchingSignature)
        );
    }
}
