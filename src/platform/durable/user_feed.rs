//! The `UserFeed` client: publishes what changed to a user's live feed, and opens the feed's stream for
//! `GET /v1/events`. Publishing is best effort and never delays or fails the change it reports: it runs after
//! the answer (`waitUntil`), and a feed that cannot be reached only costs its clients a missed event.

use crate::domain::feed::{
    FeedKind, Publication, FEED_PUBLISH_PATH, FEED_STREAM_PATH, FEED_UNTIL_HEADER,
    USER_FEED_BINDING,
};
use crate::domain::ids::UserId;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;
use worker::{console_error, Context, Env, Headers, Method, Request, RequestInit, Response};

/// Usage moves with every call: at most one `usage` event per user per this long from one isolate, the last
/// change always published (a call inside the window schedules one at its end).
const USAGE_EVENT_INTERVAL_MS: f64 = 1_000.0;
/// A scheduled event not sent by now was dropped with its `waitUntil`: the next change schedules another.
const USAGE_SCHEDULE_EXPIRES_MS: f64 = 5_000.0;
/// Users remembered per isolate; past it, those idle for longer than the expiry are forgotten.
const USAGE_USERS_REMEMBERED: usize = 10_000;

#[derive(Clone, Copy)]
struct UsageSent {
    /// When this isolate last published `usage` for the user.
    last_ms: f64,
    /// When the pending publication was scheduled, if one is.
    scheduled_at_ms: Option<f64>,
}

thread_local! {
    static USAGE_SENT: RefCell<HashMap<String, UsageSent>> = RefCell::new(HashMap::new());
}

fn stub(env: &Env, user: &UserId) -> worker::Result<worker::Stub> {
    env.durable_object(USER_FEED_BINDING)?
        .id_from_name(user.as_str())?
        .get_stub()
}

async fn send(env: &Env, user: &UserId, publication: &Publication) -> worker::Result<()> {
    super::post_json(
        env,
        USER_FEED_BINDING,
        user.as_str(),
        FEED_PUBLISH_PATH,
        publication,
    )
    .await
}

/// Publishes `kind` with `data` to `user`'s feed after the answer.
pub fn publish(ctx: &Context, env: &Env, user: &UserId, kind: FeedKind, data: impl Serialize) {
    let data = match serde_json::to_value(data) {
        Ok(data) => data,
        Err(e) => return console_error!("feed event {}: {e}", kind.as_str()),
    };
    let (env, user) = (env.clone(), user.clone());
    ctx.wait_until(async move { publish_now(&env, &user, Publication { kind, data }).await });
}

/// Publishes now (for work already running after the answer, such as a deploy).
pub async fn publish_now(env: &Env, user: &UserId, publication: Publication) {
    if let Err(e) = send(env, user, &publication).await {
        console_error!(
            "feed event {} not published: {e}",
            publication.kind.as_str()
        );
    }
}

/// Tells `user`'s feed their usage moved, at most once per `USAGE_EVENT_INTERVAL_MS` from this isolate.
pub async fn usage_moved(env: &Env, user: &UserId, period_key: &str) {
    let now = worker::Date::now().as_millis() as f64;
    let wait = USAGE_SENT.with(|sent| {
        let mut sent = sent.borrow_mut();
        if sent.len() >= USAGE_USERS_REMEMBERED {
            sent.retain(|_, s| {
                now - s.last_ms < USAGE_SCHEDULE_EXPIRES_MS || s.scheduled_at_ms.is_some()
            });
        }
        let entry = sent.entry(user.as_str().to_owned()).or_insert(UsageSent {
            last_ms: f64::MIN,
            scheduled_at_ms: None,
        });
        if entry
            .scheduled_at_ms
            .is_some_and(|at| now - at < USAGE_SCHEDULE_EXPIRES_MS)
        {
            // One is on its way and will carry this change too.
            return None;
        }
        entry.scheduled_at_ms = Some(now);
        Some((entry.last_ms + USAGE_EVENT_INTERVAL_MS - now).max(0.0))
    });
    let Some(wait) = wait else { return };
    if wait > 0.0 {
        worker::Delay::from(Duration::from_millis(wait as u64)).await;
    }
    USAGE_SENT.with(|sent| {
        sent.borrow_mut().insert(
            user.as_str().to_owned(),
            UsageSent {
                last_ms: worker::Date::now().as_millis() as f64,
                scheduled_at_ms: None,
            },
        );
    });
    let data = serde_json::json!({ "periodKey": period_key });
    publish_now(
        env,
        user,
        Publication {
            kind: FeedKind::Usage,
            data,
        },
    )
    .await;
}

/// Opens `user`'s feed from `last_event_id` (the client's header, passed on as is): the object's SSE stream,
/// which ends at `until_ms` (the caller's token expiry: a stream never outlives the credential that opened it).
pub async fn open_stream(
    env: &Env,
    user: &UserId,
    last_event_id: Option<&str>,
    until_ms: Option<i64>,
) -> worker::Result<Response> {
    let headers = Headers::new();
    if let Some(id) = last_event_id {
        headers.set("Last-Event-ID", id)?;
    }
    if let Some(until) = until_ms {
        headers.set(FEED_UNTIL_HEADER, &until.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let mut res = stub(env, user)?
        .fetch_with_request(Request::new_with_init(
            &format!("https://feed{FEED_STREAM_PATH}"),
            &init,
        )?)
        .await?;
    if res.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "{USER_FEED_BINDING} answered {}",
            res.status_code()
        )));
    }
    // A response from a Durable Object has immutable headers; the reply adds its own, so the stream is passed on
    // in a response of our own.
    let headers = Headers::new();
    headers.set("Content-Type", "text/event-stream; charset=utf-8")?;
    headers.set("Cache-Control", "no-store")?;
    Ok(Response::from_stream(res.stream()?)?.with_headers(headers))
}
