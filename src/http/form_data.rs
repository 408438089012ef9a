//! Reading a `multipart/form-data` body (RFC 7578), as a bundle deploy sends it: a `manifest` part and one part
//! per module, each module named by its filename (the shape of Cloudflare's own script upload). Bounded: the
//! caller reads the body within its size limit first; here the parts are counted and their headers capped.

use crate::domain::{ApiError, ErrorCode};

/// Parts read at most (a bundle's modules plus its manifest).
pub const MAX_PARTS: usize = 256;
const MAX_PART_HEADER_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

fn malformed(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidBody,
        format!("The multipart body is malformed: {why}."),
    )
}

/// The boundary of a `multipart/form-data` content type; `None` for any other content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| (1..=70).contains(&b.len()))
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A parameter of a `Content-Disposition` header (`name="…"`, `filename="…"`).
fn disposition_param(header: &str, param: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let key = format!("{param}=\"");
    let mut at = 0;
    while let Some(i) = lower[at..].find(&key) {
        let start = at + i;
        // `name=` must not match inside `filename=`.
        let preceded_ok = start == 0 || matches!(lower.as_bytes()[start - 1], b' ' | b';');
        let value_start = start + key.len();
        if preceded_ok {
            let end = header[value_start..].find('"')?;
            return Some(header[value_start..value_start + end].to_owned());
        }
        at = value_start;
    }
    None
}

/// Splits `body` into its parts.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, ApiError> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0).ok_or_else(|| malformed("no boundary line"))?;
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(malformed("a boundary line is not followed by CRLF"));
        }
        at += 2;
        let headers_end =
            find(body, b"\r\n\r\n", at).ok_or_else(|| malformed("a part has no end of headers"))?;
        if headers_end - at > MAX_PART_HEADER_BYTES {
            return Err(malformed("a part's headers are too long"));
        }
        let headers = std::str::from_utf8(&body[at..headers_end])
            .map_err(|_| malformed("part headers are not UTF-8"))?;
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in headers.split("\r\n") {
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| malformed("a header line has no ':'"))?;
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    name = disposition_param(value, "name");
                    filename = disposition_param(value, "filename");
                }
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let data_start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let data_end = find(body, &closing, data_start)
            .ok_or_else(|| malformed("a part does not end with the boundary"))?;
        parts.push(Part {
            name: name.ok_or_else(|| malformed("a part has no name"))?,
            filename,
            content_type,
            bytes: body[data_start..data_end].to_vec(),
        });
        if parts.len() > MAX_PARTS {
            return Err(ApiError::new(
                ErrorCode::BundleTooLarge,
                format!("A bundle upload has at most {MAX_PARTS} parts."),
            ));
        }
        at = data_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            let file = filename
                .map(|f| format!("; filename=\"{f}\""))
                .unwrap_or_default();
            out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"{file}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    #[test]
    fn parts_are_read_with_their_names_filenames_and_exact_bytes() {
        let wasm = b"\0asm\x01\0\0\0\r\n--not-the-boundary";
        let b = body(&[
            ("manifest", None, br#"{"main":"index.js"}"#),
            ("index.js", Some("index.js"), b"export default {}"),
            ("files", Some("lib/add.wasm"), wasm),
        ]);
        assert_eq!(
            boundary("multipart/form-data; boundary=XyZ").as_deref(),
            Some("XyZ")
        );
        assert_eq!(
            boundary("multipart/form-data; charset=utf-8; boundary=\"XyZ\"").as_deref(),
            Some("XyZ")
        );
        assert_eq!(boundary("application/json"), None);
        let parts = parse(&b, "XyZ").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].filename.as_deref()),
            ("manifest", None)
        );
        assert_eq!(parts[2].filename.as_deref(), Some("lib/add.wasm"));
        assert_eq!(
            parts[2].bytes,
            wasm.to_vec(),
            "binary data, CRLFs and dashes kept exactly"
        );
        assert_eq!(
            parts[1].content_type.as_deref(),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            b"no boundary at all".to_vec(),
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated".to_vec(),
            b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--".to_vec(),
            b"--XyZjunk".to_vec(),
        ] {
            assert_eq!(parse(&bad, "XyZ").unwrap_err().code, ErrorCode::InvalidBody);
        }
        let many: Vec<(String, Option<&str>, &[u8])> = (0..=MAX_PARTS)
            .map(|i| (format!("p{i}"), None, &b"x"[..]))
            .collect();
        let refs: Vec<(&str, Option<&str>, &[u8])> =
            many.iter().map(|(n, f, d)| (n.as_str(), *f, *d)).collect();
        assert_eq!(
            parse(&body(&refs), "XyZ").unwrap_err().code,
            ErrorCode::BundleTooLarge
        );
    }
}
