//! D1 for the operator API: a user by id, their tier and overrides (compare-and-set), their metered calls by
//! outcome, and the audit trail.

use super::store::{number, opt_text, stored_user, text, D1Store};
use crate::app::admin::{AdminStore, AuditEntry, OutcomeCount};
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::entitlements::{Overrides, Tier};
use crate::domain::ids::UserId;
use crate::domain::period::PeriodKey;
use crate::domain::user::User;
use serde::Deserialize;
use wasm_bindgen::JsValue;

#[derive(Deserialize)]
struct OutcomeRow {
    outcome: String,
    calls: f64,
    counted: f64,
    wall_ms: f64,
}

#[derive(Deserialize)]
struct AdminUserRow {
    id: String,
    tier: String,
    created_at: f64,
    entitlements_json: Option<String>,
}

impl AdminStore for D1Store {
    async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
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

    async fn set_tier(&self, id: &UserId, tier: Tier) -> StoreResult<bool> {
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
    async fn replace_overrides(
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

    async fn usage_by_outcome(
        &self,
        id: &UserId,
        period: PeriodKey,
    ) -> StoreResult<Vec<OutcomeCount>> {
        let rows: Vec<OutcomeRow> = self
            .rows(
                "SELECT outcome, SUM(1 + suppressed) AS calls, SUM(counted) AS counted, SUM(wall_ms) AS wall_ms \
                 FROM invocations WHERE user_id = ?1 AND period_key = ?2 GROUP BY outcome ORDER BY outcome",
                &[text(id.as_str()), text(&period.to_string())],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| OutcomeCount {
                outcome: r.outcome,
                calls: r.calls as u64,
                counted: r.counted as u64,
                wall_ms: r.wall_ms as u64,
            })
            .collect())
    }

    async fn audit(&self, e: &AuditEntry<'_>) -> StoreResult<()> {
        self.rows::<serde_json::Value>(
            "INSERT INTO admin_audit (id, request_id, at, action, target_user_id, status, outcome, change_json, \
             suppressed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &[
                text(&e.id),
                text(e.request_id),
                number(e.at),
                text(e.action),
                opt_text(e.target_user_id.as_deref()),
                number(e.status as i64),
                text(e.outcome),
                opt_text(e.change_json.as_deref()),
                number(e.suppressed as i64),
            ],
        )
        .await?;
        Ok(())
    }
}
