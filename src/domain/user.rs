//! Users: the internal record an external identity (issuer + subject) maps to on first sight.

use super::entitlements::{Overrides, Tier};
use super::ids::UserId;
use serde::Serialize;

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
