//! A user's own record of their invocations (`GET /v1/agents/{agentId}/invocations`): what the gateway metered
//! for each call to one of their agents — outcome, the agent's status, duration, whether it counted — newest
//! first, a page at a time. And their retention: metering rows and telemetry rejects are pruned by age.

use super::agents::get_agent;
use super::ports::{Store, StoreResult};
use super::retention::{cutoff, delete_in_chunks};
#[cfg(test)]
use super::retention::{DAY_MS, PRUNE_CHUNK};
use crate::domain::ids::{AgentId, UserId};
use crate::domain::invoke::AnswerUsage;
use crate::domain::pagination::{Cursor, PageLimit};
use crate::domain::user::User;
use crate::domain::ApiError;
use serde::Serialize;

/// One metered call, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationView {
    /// The trace id the call carried (also in its answer's `X-Trace-Id`).
    pub id: String,
    pub deployment_id: Option<String>,
    /// `json` or `stream`.
    pub mode: String,
    /// `ok`, an error code, or `client_closed` (a stream the client left).
    pub outcome: String,
    /// `None` for `ok`; else `limit`, `refused`, `upstream` or `client`.
    pub error_class: Option<&'static str>,
    pub upstream_status: Option<u16>,
    /// Whether it used one of the period's requests.
    pub counted: bool,
    pub started_at: i64,
    /// Measured by the gateway: from the call's start to its answer's last byte (or the client leaving).
    pub wall_ms: i64,
    pub api_key_id: Option<String>,
    /// The token counts the agent's answer carried (`usage`), when it carried any: what the agent told the
    /// caller, beside what its signed telemetry reported for the same trace id.
    pub answer_usage: Option<AnswerUsage>,
    /// For a refused call: how many more refusals of the user this row stands for (only counted, not written
    /// one by one, so a flood of refused calls costs a bounded number of writes).
    pub suppressed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationPage {
    pub invocations: Vec<InvocationView>,
    pub next_cursor: Option<String>,
}

#[allow(async_fn_in_trait)]
pub trait InvocationStore {
    /// The owner's invocations of `agent`, newest first, after `after`.
    async fn list_invocations(
        &self,
        owner: &UserId,
        agent: &AgentId,
        after: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Vec<InvocationView>>;
    /// Deletes at most `limit` metering rows started before `before_ms`; how many.
    async fn prune_invocations(&self, before_ms: i64, limit: u32) -> StoreResult<u64>;
    /// Deletes at most `limit` telemetry reject rows written before `before_ms`; how many.
    async fn prune_rejects(&self, before_ms: i64, limit: u32) -> StoreResult<u64>;
}

/// What kind of failure an outcome is, for people reading the list.
pub fn error_class(outcome: &str) -> Option<&'static str> {
    match outcome {
        "ok" => None,
        "client_closed" => Some("client"),
        "request_limit_exceeded" | "quota_exhausted" => Some("limit"),
        o if o.starts_with("upstream_") || o == "agent_error" => Some("upstream"),
        _ => Some("refused"),
    }
}

pub async fn list_invocations<S: Store + InvocationStore>(
    store: &S,
    owner: &User,
    raw_agent_id: &str,
    cursor: Option<&str>,
    limit: Option<&str>,
) -> Result<InvocationPage, ApiError> {
    // Someone else's agent is indistinguishable from one that does not exist.
    let agent = get_agent(store, owner, raw_agent_id).await?;
    let limit = PageLimit::parse(limit)?;
    let after = cursor.map(Cursor::decode).transpose()?;
    let mut invocations = store
        .list_invocations(&owner.id, &agent.id, after.as_ref(), limit.rows_to_fetch())
        .await?;
    let next_cursor = limit.finish_page(&mut invocations, |last| Cursor {
        created_at: last.started_at,
        id: last.id.clone(),
    });
    Ok(InvocationPage {
        invocations,
        next_cursor,
    })
}

/// Statements per run, each of `PRUNE_CHUNK` rows: bounded work per cron tick.
pub const PRUNE_CHUNKS_PER_RUN: u32 = 20;

/// What one retention run deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneRun {
    pub invocations: u64,
    pub rejects: u64,
}

/// Deletes metering rows older than `invocation_days` and telemetry rejects older than `reject_days`, a bounded
/// number per run (the rest waits for the next tick).
pub async fn prune(
    store: &impl InvocationStore,
    invocation_days: u32,
    reject_days: u32,
    now: i64,
) -> Result<PruneRun, ApiError> {
    let invocations_cutoff = cutoff(now, invocation_days);
    let rejects_cutoff = cutoff(now, reject_days);
    Ok(PruneRun {
        invocations: delete_in_chunks(PRUNE_CHUNKS_PER_RUN, |limit| {
            store.prune_invocations(invocations_cutoff, limit)
        })
        .await?,
        rejects: delete_in_chunks(PRUNE_CHUNKS_PER_RUN, |limit| {
            store.prune_rejects(rejects_cutoff, limit)
        })
        .await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollster::block_on;
    use std::cell::RefCell;

    #[test]
    fn outcomes_fall_into_classes_people_can_filter_on() {
        assert_eq!(error_class("ok"), None);
        assert_eq!(error_class("client_closed"), Some("client"));
        assert_eq!(error_class("quota_exhausted"), Some("limit"));
        assert_eq!(error_class("request_limit_exceeded"), Some("limit"));
        assert_eq!(error_class("upstream_timeout"), Some("upstream"));
        assert_eq!(error_class("agent_error"), Some("upstream"));
        assert_eq!(error_class("agent_disabled"), Some("refused"));
    }

    /// Rows with their age, deleting the oldest first as the store does.
    struct Aged {
        invocations: RefCell<Vec<i64>>,
        rejects: RefCell<Vec<i64>>,
    }

    fn delete_before(rows: &RefCell<Vec<i64>>, before: i64, limit: u32) -> u64 {
        let mut rows = rows.borrow_mut();
        let old: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i] < before)
            .take(limit as usize)
            .collect();
        for &i in old.iter().rev() {
            rows.remove(i);
        }
        old.len() as u64
    }

    impl InvocationStore for Aged {
        async fn list_invocations(
            &self,
            _: &UserId,
            _: &AgentId,
            _: Option<&Cursor>,
            _: u32,
        ) -> StoreResult<Vec<InvocationView>> {
            unreachable!()
        }
        async fn prune_invocations(&self, before_ms: i64, limit: u32) -> StoreResult<u64> {
            Ok(delete_before(&self.invocations, before_ms, limit))
        }
        async fn prune_rejects(&self, before_ms: i64, limit: u32) -> StoreResult<u64> {
            Ok(delete_before(&self.rejects, before_ms, limit))
        }
    }

    #[test]
    fn retention_deletes_what_is_older_than_its_days_a_bounded_amount_per_run() {
        let now = 1_795_000_000_000;
        let day = DAY_MS;
        let store = Aged {
            invocations: RefCell::new(
                std::iter::repeat_n(now - 100 * day, 25_500)
                    .chain([now - 89 * day, now])
                    .collect(),
            ),
            rejects: RefCell::new(vec![now - 31 * day, now - 29 * day]),
        };
        let run = block_on(prune(&store, 90, 30, now)).unwrap();
        assert_eq!(
            run.invocations,
            u64::from(PRUNE_CHUNK * PRUNE_CHUNKS_PER_RUN)
        );
        assert_eq!(run.rejects, 1);
        let run = block_on(prune(&store, 90, 30, now)).unwrap();
        assert_eq!(run.invocations, 5_500, "the rest on the next tick");
        assert_eq!(
            store.invocations.borrow().len(),
            2,
            "what is younger than 90 days stays"
        );
        assert_eq!(*store.rejects.borrow(), vec![now - 29 * day]);
    }
}
