//! Keyset pagination, newest first. A cursor names the last item of the previous page by its sort key
//! `(createdAt, id)`, so pages stay stable while items are added and no offset scan is needed.

use super::error::{ApiError, ErrorCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Opaque to clients: base64url of `v1:<createdAt>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    const VERSION: &'static str = "v1";
    const MAX_ENCODED_LEN: usize = 256;

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", Self::VERSION, self.created_at, self.id))
    }

    pub fn decode(value: &str) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "The cursor is not one this API returned; start again without it.",
            )
        };
        if value.len() > Self::MAX_ENCODED_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, ':');
        let (Some(version), Some(created_at), Some(id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if version != Self::VERSION
            || id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(invalid());
        }
        let created_at = created_at.parse::<i64>().map_err(|_| invalid())?;
        if created_at < 0 {
            return Err(invalid());
        }
        Ok(Cursor {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// How many items a page holds: `limit` query parameter, 1–100, default 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 100;

    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(value) = value else {
            return Ok(PageLimit(Self::DEFAULT));
        };
        match value.parse::<u32>() {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(PageLimit(n)),
            _ => Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "limit must be a whole number from 1 to 100.",
            )
            .with_details(serde_json::json!({ "parameter": "limit" }))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            created_at: 1_763_800_000_123,
            id: "agt_0123456789abcdef01234567".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn tampered_or_foreign_cursors_are_rejected() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "".to_string(),
            "not base64!".to_string(),
            enc("v2:1:agt_x"),
            enc("v1:abc:agt_x"),
            enc("v1:-5:agt_x"),
            enc("v1:5:"),
            enc("v1:5:agt_x' OR 1=1 --"),
            enc("v1:5"),
            "A".repeat(300),
        ] {
            assert_eq!(
                Cursor::decode(&bad).unwrap_err().code,
                ErrorCode::InvalidCursor,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn limits_default_and_stay_in_range() {
        assert_eq!(PageLimit::parse(None).unwrap().get(), 20);
        assert_eq!(PageLimit::parse(Some("1")).unwrap().get(), 1);
        assert_eq!(PageLimit::parse(Some("100")).unwrap().get(), 100);
        for bad in ["0", "101", "-1", "ten", "", "1.5"] {
            assert_eq!(
                PageLimit::parse(Some(bad)).unwrap_err().code,
                ErrorCode::InvalidQuery
            );
        }
    }
}
