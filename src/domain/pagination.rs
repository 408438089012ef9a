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

    /// Rows to ask the store for: one more than the page, so the extra row tells whether another
    /// page exists without a count query.
    pub fn rows_to_fetch(self) -> u32 {
        self.0 + 1
    }

    /// Cuts rows fetched with [`Self::rows_to_fetch`] down to the page and returns the cursor of the
    /// next page (the last row kept), or `None` when these were the last rows.
    pub fn finish_page<T>(
        self,
        rows: &mut Vec<T>,
        cursor_of: impl Fn(&T) -> Cursor,
    ) -> Option<String> {
        if rows.len() <= self.0 as usize {
            return None;
        }
        rows.truncate(self.0 as usize);
        rows.last().map(|last| cursor_of(last).encode())
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
    fn a_page_is_cut_to_its_limit_and_names_its_last_row() {
        let cursor_of = |n: &i64| Cursor {
            created_at: *n,
            id: format!("row_{n}"),
        };
        let limit = PageLimit::parse(Some("2")).unwrap();
        assert_eq!(limit.rows_to_fetch(), 3);

        let mut rows = vec![30, 20, 10];
        let next = limit.finish_page(&mut rows, cursor_of);
        assert_eq!(rows, vec![30, 20]);
        assert_eq!(Cursor::decode(&next.unwrap()).unwrap(), cursor_of(&20));

        let mut last_rows = vec![30, 20];
        assert_eq!(limit.finish_page(&mut last_rows, cursor_of), None);
        assert_eq!(last_rows, vec![30, 20]);
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
