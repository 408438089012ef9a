//! D1 for the operator API: a user by id, their tier and overrides (compare-and-set), and the audit trail.

use super::store::{number, opt_text, stored_user, text, D1Store};
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::entitlements::{Overrides, Tier};
use crate::domain::ids::UserId;
use crate::domain::user::User;
use serde::Deserialize;
use wasm_bindgen::JsValue;

#[derive(Deserialize)]
struct AdminUserRow {
    id: String,
    tier: String,
    created_at: f64,
    entitlements_json: Option<String>,
}

impl D1Store {
    pub async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let rows: Vec<AdminUserRow> = self
            .rows(
                "SELECT id, tier, created_at, entitlements_json FROM users WHERE id = ?1",
                &[text(id.as_str())],
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|r| stored_user(r.id, &r.tier, r.created_at, r.entitlements_json.as_deref()))
            .transpose()
    }

    pub async fn set_tier(&self, id: &UserId, tier: Tier) -> StoreResult<bool> {
        let rows: Vec<serde_json::Value> = self
            .rows(
                "UPDATE users SET tier = ?2 WHERE id = ?1 RETURNING id",
                &[text(id.as_str()), text(tier.as_str())],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Replaces the user's overrides if they still equal `expected` (compare-and-set, so two operators editing
    /// different fields at once cannot silently undo each other); `false` when they changed meanwhile.
    pub async fn replace_overrides(
        &self,
        id: &UserId,
        expected: &Overrides,
        next: &Overrides,
    ) -> StoreResult<bool> {
        let encode = |o: &Overrides| -> StoreResult<JsValue> {
            if o.is_empty() {
                Ok(JsValue::NULL)
            } else {
                serde_json::to_string(o)
                    .map(|s| text(&s))
                    .map_err(|e| StoreError(e.to_string()))
            }
        };
        // Stored JSON is always written by this function, so equal overrides have equal text.
        let rows: Vec<serde_json::Value> = self
            .rows(
                "UPDATE users SET entitlements_json = ?3 \
                 WHERE id = ?1 AND entitlements_json IS ?2 RETURNING id",
                &[text(id.as_str()), encode(expected)?, encode(next)?],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        id: &str,
        request_id: &str,
        at: i64,
        action: &str,
        target: Option<&str>,
        status: u16,
        outcome: &str,
        change: Option<&str>,
    ) -> StoreResult<()> {
        self.rows::<serde_json::Value>(
            "INSERT INTO admin_audit (id, request_id, at, action, target_user_id, status, outcome, change_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                text(id),
                text(request_id),
                number(at),
                text(action),
                opt_text(target),
                number(status as i64),
                text(outcome),
                opt_text(change),
            ],
        )
        .await?;
        Ok(())
    }
}
