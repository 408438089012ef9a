//! AWS Signature Version 4 (docs.aws.amazon.com, "Create a signed AWS API request"): the canonical request, the
//! string to sign, the derived signing key and the `Authorization` header, for services other than S3 (paths
//! normalized, every path segment escaped once more than it is on the wire). Checked against AWS's published
//! test-suite vectors and botocore's signatures (`tests` below), and in every call to the local AgentCore, which
//! verifies it with @smithy/signature-v4 (tests/agentcore.test.mjs, tests/local_agentcore.test.mjs).

use crate::crypto::sha256_hex;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An access key pair and, for temporary credentials, the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// What one signature is for: the region, the service's signing name and the time (`YYYYMMDDTHHMMSSZ`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub region: String,
    pub service: String,
    pub amz_date: String,
}

impl Scope {
    pub fn date(&self) -> &str {
        &self.amz_date[..self.amz_date.len().min(8)]
    }

    /// `date/region/service/aws4_request`.
    pub fn credential_scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region,
            self.service
        )
    }
}

/// `YYYYMMDDTHHMMSSZ` of an instant in milliseconds since the epoch.
pub fn amz_date(epoch_ms: i64) -> String {
    let secs = epoch_ms.div_euclid(1000);
    let (year, month, day) = crate::domain::period::civil_from_days(secs.div_euclid(86_400));
    let in_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// A request as it will go on the wire: `path` as sent (already percent-encoded), the query as decoded
/// name/value pairs, every header that will be sent (and signed), and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// RFC 3986 escaping as SigV4 wants it: unreserved characters stay, every other byte is `%XX` (upper case).
pub fn uri_escape(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The path with `.` and `..` segments resolved and empty segments dropped (a trailing `/` is kept), then every
/// segment escaped: a path already escaped on the wire is escaped a second time, as AWS services other than S3
/// expect.
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(
        &segments
            .iter()
            .map(|s| uri_escape(s, false))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if !segments.is_empty() && (path.ends_with('/') || path.ends_with("/.")) {
        out.push('/');
    }
    out
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_escape(k, false), uri_escape(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Header names lower-cased and sorted, values trimmed with inner runs of spaces collapsed, repeated headers
/// joined with `,`. Returns the canonical headers block and the signed-headers list.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => merged.push((name, vec![value])),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let block = merged
        .iter()
        .map(|(n, v)| format!("{n}:{}\n", v.join(",")))
        .collect::<String>();
    let signed = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, signed)
}

/// The canonical request and the signed-headers list.
pub fn canonical_request(request: &Request) -> (String, String) {
    let (headers, signed) = canonical_headers(&request.headers);
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.path),
        canonical_query(&request.query),
        headers,
        signed,
        sha256_hex(request.body)
    );
    (canonical, signed)
}

pub fn string_to_sign(canonical_request: &str, scope: &Scope) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.amz_date,
        scope.credential_scope(),
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `kSigning`: the secret narrowed to one day, region and service.
pub fn signing_key(secret_access_key: &str, scope: &Scope) -> Vec<u8> {
    let k_date = hmac(
        format!("AWS4{secret_access_key}").as_bytes(),
        scope.date().as_bytes(),
    );
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Authorization` header's value for `request`, whose headers must already hold everything that is signed
/// (`host`, `x-amz-date`, and `x-amz-security-token` with temporary credentials: see `sign`).
pub fn authorization(request: &Request, credentials: &Credentials, scope: &Scope) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let signature = hex(&hmac(
        &signing_key(&credentials.secret_access_key, scope),
        string_to_sign(&canonical, scope).as_bytes(),
    ));
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id,
        scope.credential_scope()
    )
}

/// Signs `request` in place: adds `X-Amz-Date`, `X-Amz-Security-Token` (temporary credentials) and
/// `Authorization`. `host` must be among its headers already.
pub fn sign(request: &mut Request, credentials: &Credentials, scope: &Scope) {
    request
        .headers
        .push(("X-Amz-Date".into(), scope.amz_date.clone()));
    if let Some(token) = &credentials.session_token {
        request
            .headers
            .push(("X-Amz-Security-Token".into(), token.clone()));
    }
    let value = authorization(request, credentials, scope);
    request.headers.push(("Authorization".into(), value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn scope(service: &str) -> Scope {
        Scope {
            region: "us-east-1".into(),
            service: service.into(),
            amz_date: "20150830T123600Z".into(),
        }
    }

    /// AWS's worked example (IAM ListUsers) from "Examples of the complete Signature Version 4 signing process".
    #[test]
    fn the_documented_iam_example_signs_as_published() {
        let request = Request {
            method: "GET",
            path: "/",
            query: vec![
                ("Action".into(), "ListUsers".into()),
                ("Version".into(), "2010-05-08".into()),
            ],
            headers: vec![
                (
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                ),
                ("Host".into(), "iam.amazonaws.com".into()),
                ("X-Amz-Date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let (canonical, _) = canonical_request(&request);
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            hex(&signing_key(
                &example_credentials().secret_access_key,
                &scope("iam")
            )),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        assert_eq!(
            authorization(&request, &example_credentials(), &scope("iam")),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    type Pairs = Vec<(String, String)>;

    fn percent_decode(value: &str) -> String {
        let bytes = value.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&value[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }

    /// Reads a test-suite `.req` file: the request line, headers (a line starting with white space continues the
    /// header before it), an empty line, the body.
    fn read_req(raw: &str) -> (String, String, Pairs, Pairs, String) {
        let (head, body) = raw.split_once("\n\n").unwrap_or((raw, ""));
        let mut lines = head.lines();
        let line = lines.next().unwrap();
        let (method, rest) = line.split_once(' ').unwrap();
        let target = rest.strip_suffix(" HTTP/1.1").unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                headers
                    .last_mut()
                    .unwrap()
                    .1
                    .push_str(&format!(" {}", line.trim()));
            } else {
                let (name, value) = line.split_once(':').unwrap();
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        (method.into(), path.into(), query, headers, body.into())
    }

    /// Every case under `src/aws/fixtures` (AWS's suite, and botocore's signatures of requests like ours).
    #[test]
    fn every_published_and_botocore_vector_signs_byte_for_byte() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/aws/fixtures");
        let mut cases = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "req") {
                    cases.push(path);
                }
            }
        }
        assert!(cases.len() >= 16, "the vectors are there: {}", cases.len());
        for case in cases {
            let read = |ext: &str| std::fs::read_to_string(case.with_extension(ext)).unwrap();
            let (method, path, query, mut headers, body) = read_req(&read("req"));
            // Where the suite's request leaves the session token to the signer, `sign` adds it as a header.
            let token = read("creq")
                .lines()
                .find_map(|l| l.strip_prefix("x-amz-security-token:").map(str::to_owned));
            if let Some(token) = token {
                if !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("x-amz-security-token"))
                {
                    headers.push(("X-Amz-Security-Token".into(), token));
                }
            }
            let service = read("sts")
                .lines()
                .nth(2)
                .unwrap()
                .split('/')
                .nth(2)
                .unwrap()
                .to_owned();
            let scope = Scope {
                region: "us-east-1".into(),
                service,
                amz_date: "20150830T123600Z".into(),
            };
            let request = Request {
                method: &method,
                path: &path,
                query,
                headers,
                body: body.as_bytes(),
            };
            let name = case.display();
            let (canonical, _) = canonical_request(&request);
            assert_eq!(canonical, read("creq"), "{name}: canonical request");
            assert_eq!(
                string_to_sign(&canonical, &scope),
                read("sts"),
                "{name}: string to sign"
            );
            assert_eq!(
                authorization(&request, &example_credentials(), &scope),
                read("authz"),
                "{name}: Authorization"
            );
        }
    }

    #[test]
    fn sign_adds_the_date_the_session_token_and_the_authorization() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/aws/fixtures/sigv4/get-vanilla-with-session-token");
        let read = |ext: &str| {
            std::fs::read_to_string(dir.join(format!("get-vanilla-with-session-token.{ext}")))
                .unwrap()
        };
        let token = read("creq")
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-security-token:").map(str::to_owned))
            .unwrap();
        let mut request = Request {
            method: "GET",
            path: "/",
            query: vec![],
            headers: vec![("Host".into(), "example.amazonaws.com".into())],
            body: b"",
        };
        let credentials = Credentials {
            session_token: Some(token.clone()),
            ..example_credentials()
        };
        sign(&mut request, &credentials, &scope("service"));
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("X-Amz-Date").as_deref(), Some("20150830T123600Z"));
        assert_eq!(header("X-Amz-Security-Token"), Some(token));
        assert_eq!(header("Authorization"), Some(read("authz")));
    }

    #[test]
    fn dates_are_utc_in_the_basic_format() {
        assert_eq!(amz_date(1_440_938_160_000), "20150830T123600Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_798_761_599_999), "20261231T235959Z");
    }

    #[test]
    fn credentials_never_show_their_secrets() {
        let shown = format!(
            "{:?}",
            Credentials {
                session_token: Some("token-value".into()),
                ..example_credentials()
            }
        );
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("EXAMPLEKEY") && !shown.contains("token-value"));
    }
}
