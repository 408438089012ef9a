//! `multipart/form-data` encoding (RFC 7578) for script uploads.

/// One form part: a field name, optional filename, content type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Encodes `parts` with `boundary`. The boundary must not occur in any part; callers pass a random one.
pub fn encode(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match &part.filename {
            Some(f) => format!(
                "form-data; name=\"{}\"; filename=\"{}\"",
                quote(&part.name),
                quote(f)
            ),
            None => format!("form-data; name=\"{}\"", quote(&part.name)),
        };
        out.extend_from_slice(format!("Content-Disposition: {disposition}\r\n").as_bytes());
        out.extend_from_slice(format!("Content-Type: {}\r\n\r\n", part.content_type).as_bytes());
        out.extend_from_slice(&part.bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// RFC 7578 §4.2: field names and filenames are quoted strings; escape what would end them.
fn quote(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "%22")
        .replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_parts_with_dispositions_and_types() {
        let body = encode(
            "XyZ",
            &[
                Part {
                    name: "metadata".into(),
                    filename: None,
                    content_type: "application/json".into(),
                    bytes: b"{}".to_vec(),
                },
                Part {
                    name: "index.js".into(),
                    filename: Some("index.js".into()),
                    content_type: "application/javascript+module".into(),
                    bytes: b"export default {}".to_vec(),
                },
            ],
        );
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "--XyZ\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{}\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"index.js\"; filename=\"index.js\"\r\n\
             Content-Type: application/javascript+module\r\n\r\nexport default {}\r\n--XyZ--\r\n"
        );
    }

    #[test]
    fn names_cannot_break_out_of_their_quotes() {
        let body = encode(
            "b",
            &[Part {
                name: "a\"b\r\nX: y".into(),
                filename: None,
                content_type: "text/plain".into(),
                bytes: vec![],
            }],
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("name=\"a%22b  X: y\""), "{text}");
    }
}
