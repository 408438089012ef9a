//! Users: the internal record an external identity (issuer + subject) maps to on first sight.

use super::entitlements::Overrides;
use super::error::ApiError;
use super::ids::UserId;
use serde::Serialize;

/// Pricing tiers; each has default entitlements (`entitlements`). New users start on `free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    /// A tier named by an operator (admin API).
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_stored(value).ok()
    }

    pub fn parse_stored(value: &str) -> Result<Self, ApiError> {
        match value {
            "free" => Ok(Tier::Free),
            "pro" => Ok(Tier::Pro),
            "enterprise" => Ok(Tier::Enterprise),
            other => Err(ApiError::internal(format!(
                "unknown tier in storage: {other:?}"
            ))),
        }
    }
}

/// The caller as every table knows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    pub tier: Tier,
    pub created_at: i64,
    /// The operator's per-user entitlement overrides (admin API); empty for most users.
    #[serde(skip)]
    pub overrides: Overrides,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_tiers_round_trip() {
        for tier in [Tier::Free, Tier::Pro, Tier::Enterprise] {
            assert_eq!(Tier::parse_stored(tier.as_str()).unwrap(), tier);
        }
        assert!(Tier::parse_stored("gold").is_err());
    }
}
