//! Typed identifiers. Internal ids are a short type prefix plus 24 lowercase hex characters (96 random bits),
//! so a malformed id can be recognised without a database read and ids of one kind never pass as another.

use serde::Serialize;
use std::fmt;

const RANDOM_HEX_LEN: usize = 24;

/// 96 bits from the platform's CSPRNG (Web Crypto in Workers, the OS elsewhere), as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the platform's random source is unavailable");
    hex_encode(&buf)
}

/// `N` random bytes from the platform's source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).expect("the platform's random source is unavailable");
    buf
}

pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

fn is_prefixed_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == RANDOM_HEX_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, random_hex(RANDOM_HEX_LEN / 2)))
            }

            /// `None` for anything that is not a well-formed id of this kind.
            pub fn parse(value: &str) -> Option<Self> {
                is_prefixed_id(value, $prefix).then(|| $name(value.to_owned()))
            }

            /// For values read back from our own storage, which only ever holds generated ids.
            pub fn from_trusted(value: String) -> Self {
                $name(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// The internal user id every table references; never the identity provider's subject.
    UserId,
    "usr_"
);
prefixed_id!(
    /// An agent, owned by exactly one user.
    AgentId,
    "agt_"
);
prefixed_id!(
    /// One immutable deployment of an agent.
    DeploymentId,
    "dep_"
);

prefixed_id!(
    /// An API key's public id (the key itself is never stored).
    ApiKeyId,
    "key_"
);

/// Correlates one request across the response, the logs and support conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    const MAX_LEN: usize = 128;

    pub fn generate() -> Self {
        RequestId(format!("req_{}", random_hex(12)))
    }

    /// Keeps a caller's id when it is safe to echo into headers and logs (1–128 of `[A-Za-z0-9._:-]`),
    /// otherwise mints a fresh one.
    pub fn accept_or_generate(incoming: Option<&str>) -> Self {
        match incoming {
            Some(id)
                if !id.is_empty()
                    && id.len() <= Self::MAX_LEN
                    && id.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                    }) =>
            {
                RequestId(id.to_owned())
            }
            _ => RequestId::generate(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_differ() {
        let a = AgentId::generate();
        let b = AgentId::generate();
        assert_ne!(a, b);
        assert_eq!(AgentId::parse(a.as_str()), Some(a.clone()));
        assert!(a.as_str().starts_with("agt_"));
        assert_eq!(a.as_str().len(), 4 + 24);
    }

    #[test]
    fn ids_of_one_kind_do_not_parse_as_another() {
        let user = UserId::generate();
        assert_eq!(AgentId::parse(user.as_str()), None);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "agt_",
            "agt_123",
            "agt_ABCDEFABCDEFABCDEFABCDEF",
            "agt_0123456789abcdef01234567x",
            "agt_0123456789abcdef0123456",   // one short
            "agt_0123456789abcdef012345678", // one long
            "../agt_0123456789abcdef01234567",
            "agt_0123456789abcdef01234567\n",
        ] {
            assert_eq!(AgentId::parse(bad), None, "{bad:?}");
        }
        assert!(AgentId::parse("agt_0123456789abcdef01234567").is_some());
    }

    #[test]
    fn request_ids_are_kept_only_when_safe() {
        assert_eq!(
            RequestId::accept_or_generate(Some("client-42:retry.1")).as_str(),
            "client-42:retry.1"
        );
        for bad in ["", "has space", "new\nline", "<script>", &"x".repeat(129)] {
            let id = RequestId::accept_or_generate(Some(bad));
            assert_ne!(id.as_str(), bad);
            assert!(id.as_str().starts_with("req_"));
        }
        assert!(RequestId::accept_or_generate(None)
            .as_str()
            .starts_with("req_"));
    }
}
