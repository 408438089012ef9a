//! What a bearer credential is, by its form: an identity-provider token or one of our API keys. Decided in one
//! place so every route sniffs it the same way.

use super::jwt::bearer_token;
use crate::domain::{api_key, ApiError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    Token(&'a str),
    Key(&'a str),
}

/// Reads `Authorization: Bearer …` and tells a key (by its prefix) from a token.
pub fn bearer(authorization: Option<&str>) -> Result<Bearer<'_>, ApiError> {
    let value = bearer_token(authorization)?;
    Ok(if api_key::looks_like_key(value) {
        Bearer::Key(value)
    } else {
        Bearer::Token(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;

    #[test]
    fn keys_and_tokens_are_told_apart_by_form() {
        let key = api_key::generate().secret;
        assert_eq!(
            bearer(Some(&format!("Bearer {key}"))).unwrap(),
            Bearer::Key(&key)
        );
        assert_eq!(
            bearer(Some("Bearer eyJhbGciOi.x.y")).unwrap(),
            Bearer::Token("eyJhbGciOi.x.y")
        );
        assert_eq!(
            bearer(None).unwrap_err().code,
            ErrorCode::MissingCredentials
        );
    }
}
