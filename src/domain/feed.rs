//! A user's live feed (`GET /v1/events`): what changed, as it changes — agents, deployments (status and the active
//! pointer), usage and the plan. Each event has an id, increasing per user; the last `FEED_CAPACITY` are kept so
//! a client that reconnects with `Last-Event-ID` misses nothing recent. Older than that, the client is told to
//! read everything again (`resync`) instead of silently missing events.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;

/// The Durable Object namespace binding of the feeds (wrangler.toml), one object per user.
pub const USER_FEED_BINDING: &str = "USER_FEED";
/// The object's routes: the worker publishes a `Publication`; a client's stream is opened with `Last-Event-ID`.
pub const FEED_PUBLISH_PATH: &str = "/publish";
pub const FEED_STREAM_PATH: &str = "/stream";

/// Set by the worker on a stream request: when the caller's token expires (ms), so the stream ends then.
pub const FEED_UNTIL_HEADER: &str = "X-Feed-Until";

/// Events kept for replay.
pub const FEED_CAPACITY: usize = 200;
/// How long a client waits before reconnecting (the SSE `retry:` field).
pub const FEED_RETRY_MS: u64 = 2_000;
/// A comment line this often keeps proxies from closing a quiet stream.
pub const FEED_HEARTBEAT_MS: u64 = 15_000;
/// A stream ends after this long; the client reconnects with `Last-Event-ID` (no connection lives for ever).
pub const FEED_MAX_STREAM_MS: i64 = 30 * 60 * 1000;
/// Streams open at once per user (dashboard tabs); opening one more closes the oldest.
pub const FEED_MAX_STREAMS: usize = 10;

/// What an event is about. `data` is the changed resource as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// An agent was created or changed (name, status, active deployment): `data` is the agent.
    Agent,
    /// An agent was deleted: `data` is `{id}`.
    AgentDeleted,
    /// A deployment was created or changed status: `data` is the deployment.
    Deployment,
    /// The period's usage moved (calls, telemetry): `data` is `{periodKey}`; read `/v1/usage/current`. Live
    /// only: it has no id and is not kept for replay (usage moves with every call and would push the events that
    /// matter out of the log; a client that reconnects reads usage again anyway).
    Usage,
    /// The plan changed (tier or entitlements): read `/v1/me`.
    Plan,
}

impl FeedKind {
    /// Whether events of this kind are numbered and kept for a reconnecting client.
    pub fn is_replayed(self) -> bool {
        !matches!(self, FeedKind::Usage)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Agent => "agent",
            FeedKind::AgentDeleted => "agent_deleted",
            FeedKind::Deployment => "deployment",
            FeedKind::Usage => "usage",
            FeedKind::Plan => "plan",
        }
    }
}

/// What the worker asks a user's feed to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Publication {
    pub kind: FeedKind,
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedEvent {
    pub id: u64,
    pub kind: FeedKind,
    pub data: Value,
    pub at_ms: i64,
}

impl FeedEvent {
    /// The event as one SSE frame. `data` is JSON on one line, so it never needs splitting.
    pub fn frame(&self) -> String {
        let data = serde_json::json!({ "data": self.data, "at": self.at_ms });
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            self.kind.as_str(),
            data
        )
    }
}

/// A live-only event (`FeedKind::is_replayed` false) as one SSE frame: no `id`, so a client's `Last-Event-ID`
/// stays at the last replayable event.
pub fn live_only_frame(publication: &Publication, at_ms: i64) -> String {
    let data = serde_json::json!({ "data": publication.data, "at": at_ms });
    format!("event: {}\ndata: {}\n\n", publication.kind.as_str(), data)
}

/// The frame that starts every stream: the retry delay, and `ready` with the id the client is now at (so a
/// client that connected without `Last-Event-ID` can resume from here next time).
pub fn ready_frame(last_id: u64) -> String {
    format!("retry: {FEED_RETRY_MS}\nid: {last_id}\nevent: ready\ndata: {{\"lastEventId\":{last_id}}}\n\n")
}

/// Sent instead of a replay the log can no longer give: read the resources again.
pub fn resync_frame(last_id: u64) -> String {
    format!("id: {last_id}\nevent: resync\ndata: {{\"lastEventId\":{last_id}}}\n\n")
}

pub const HEARTBEAT_FRAME: &str = ": keep-alive\n\n";

/// The events a reconnecting client missed.
#[derive(Debug, PartialEq)]
pub enum Replay {
    /// Every event after the client's id, oldest first (none if it is up to date).
    Events(Vec<FeedEvent>),
    /// Events the client missed are no longer kept (or the id is from the future): it must read everything again.
    Gap,
}

/// The last `FEED_CAPACITY` events of one user, and the next id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedLog {
    /// Ids start at 1, so `Last-Event-ID: 0` means "nothing seen".
    pub last_id: u64,
    pub events: VecDeque<FeedEvent>,
}

impl FeedLog {
    /// Appends an event and returns it with the id it got; the oldest is dropped past the capacity (returned
    /// second, so storage can drop it too).
    pub fn append(&mut self, publication: Publication, at_ms: i64) -> (FeedEvent, Option<u64>) {
        self.last_id += 1;
        let event = FeedEvent {
            id: self.last_id,
            kind: publication.kind,
            data: publication.data,
            at_ms,
        };
        self.events.push_back(event.clone());
        let dropped = (self.events.len() > FEED_CAPACITY)
            .then(|| self.events.pop_front().map(|e| e.id))
            .flatten();
        (event, dropped)
    }

    /// What a client that has seen every event up to `seen` (its `Last-Event-ID`) missed.
    pub fn replay_after(&self, seen: u64) -> Replay {
        if seen > self.last_id {
            return Replay::Gap;
        }
        let oldest_kept = self.events.front().map_or(self.last_id + 1, |e| e.id);
        // Events `seen + 1 .. oldest_kept` are gone.
        if seen + 1 < oldest_kept {
            return Replay::Gap;
        }
        Replay::Events(
            self.events
                .iter()
                .filter(|e| e.id > seen)
                .cloned()
                .collect(),
        )
    }
}

/// A `Last-Event-ID` header as the feed reads it: a decimal id, or nothing (a new client). Anything else is
/// treated as nothing, so a garbled header costs a resync at worst, never an error.
pub fn parse_last_event_id(header: Option<&str>) -> Option<u64> {
    let raw = header?.trim();
    (!raw.is_empty() && raw.len() <= 20 && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publish(log: &mut FeedLog, n: u64) -> FeedEvent {
        log.append(
            Publication {
                kind: FeedKind::Agent,
                data: json!({ "n": n }),
            },
            1_000 + n as i64,
        )
        .0
    }

    #[test]
    fn ids_increase_from_one_and_a_reconnect_gets_exactly_what_it_missed() {
        let mut log = FeedLog::default();
        for n in 1..=5 {
            assert_eq!(publish(&mut log, n).id, n);
        }
        let ids = |r: Replay| match r {
            Replay::Events(events) => events.into_iter().map(|e| e.id).collect::<Vec<_>>(),
            Replay::Gap => panic!("unexpected gap"),
        };
        assert_eq!(ids(log.replay_after(0)), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids(log.replay_after(3)), vec![4, 5]);
        assert_eq!(ids(log.replay_after(5)), Vec::<u64>::new());
    }

    #[test]
    fn past_the_capacity_the_oldest_go_and_a_client_that_missed_them_must_resync() {
        let mut log = FeedLog::default();
        let mut dropped = Vec::new();
        for n in 1..=(FEED_CAPACITY as u64 + 3) {
            let (_, gone) = log.append(
                Publication {
                    kind: FeedKind::Usage,
                    data: json!({}),
                },
                n as i64,
            );
            dropped.extend(gone);
        }
        assert_eq!(dropped, vec![1, 2, 3]);
        assert_eq!(log.events.len(), FEED_CAPACITY);
        // Seen up to 3: 4 onwards are all kept.
        assert!(matches!(log.replay_after(3), Replay::Events(e) if e.len() == FEED_CAPACITY));
        // Seen up to 2: event 3 is gone.
        assert_eq!(log.replay_after(2), Replay::Gap);
        assert_eq!(log.replay_after(0), Replay::Gap);
        // An id from the future (another user's, or a restarted log's) is never trusted.
        assert_eq!(log.replay_after(log.last_id + 1), Replay::Gap);
    }

    #[test]
    fn frames_are_single_line_sse_events() {
        let mut log = FeedLog::default();
        let event = log
            .append(
                Publication {
                    kind: FeedKind::Deployment,
                    data: json!({ "id": "dep_1", "status": "active", "note": "two\nlines" }),
                },
                42,
            )
            .0;
        let frame = event.frame();
        assert!(frame.starts_with("id: 1\nevent: deployment\ndata: {"));
        assert!(frame.ends_with("}\n\n"));
        assert_eq!(
            frame.matches('\n').count(),
            4,
            "the data is one line: {frame}"
        );
        assert!(ready_frame(7).contains("retry: 2000\nid: 7\nevent: ready\n"));
        let usage = Publication {
            kind: FeedKind::Usage,
            data: json!({ "periodKey": "2026-11" }),
        };
        assert!(!FeedKind::Usage.is_replayed() && FeedKind::Deployment.is_replayed());
        assert_eq!(
            live_only_frame(&usage, 5),
            "event: usage\ndata: {\"at\":5,\"data\":{\"periodKey\":\"2026-11\"}}\n\n"
        );
        assert_eq!(FeedKind::AgentDeleted.as_str(), "agent_deleted");
    }

    #[test]
    fn last_event_id_is_a_decimal_id_or_nothing() {
        assert_eq!(parse_last_event_id(Some("42")), Some(42));
        assert_eq!(parse_last_event_id(Some(" 7 ")), Some(7));
        for bad in ["", "-1", "1e3", "abc", "99999999999999999999999", "0x10"] {
            assert_eq!(parse_last_event_id(Some(bad)), None, "{bad}");
        }
        assert_eq!(parse_last_event_id(None), None);
    }
}
