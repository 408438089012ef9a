//! `UserFeed`: one per user (addressed by the internal user id), the live feed behind `GET /v1/events`. The
//! worker publishes what changed (`POST /publish`, a `Publication`); the object numbers it, keeps the last
//! `FEED_CAPACITY` in storage for replay, and writes it to every stream the user has open (`GET /stream`, with
//! `Last-Event-ID`). The log itself (`domain::feed`) is pure and tested natively.

use super::{error_response, read_body};
use crate::domain::feed::{
    live_only_frame, parse_last_event_id, ready_frame, resync_frame, FeedEvent, FeedLog,
    Publication, Replay, FEED_HEARTBEAT_MS, FEED_MAX_STREAMS, FEED_MAX_STREAM_MS,
    FEED_PUBLISH_PATH, FEED_STREAM_PATH, FEED_UNTIL_HEADER, HEARTBEAT_FRAME,
};
use crate::domain::{ApiError, ErrorCode};
use futures_channel::mpsc::{unbounded, UnboundedSender};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use worker::{
    durable_object, js_sys, DurableObject, Env, Headers, ListOptions, Method, Request, Response,
    Result, State,
};

const LAST_ID_KEY: &str = "last_id";
const EVENT_KEY_PREFIX: &str = "e:";

fn event_key(id: u64) -> String {
    // Zero-padded, so storage lists events in id order.
    format!("{EVENT_KEY_PREFIX}{id:020}")
}

type Frames = UnboundedSender<std::result::Result<Vec<u8>, worker::Error>>;

struct OpenStream {
    id: u64,
    frames: Frames,
    /// When the stream ends: its maximum life, or earlier when the token it was opened with expires.
    until_ms: i64,
}

#[durable_object]
pub struct UserFeed {
    state: State,
    /// The log as storage holds it, read on first use.
    log: RefCell<Option<FeedLog>>,
    streams: Rc<RefCell<Vec<OpenStream>>>,
    next_stream_id: Cell<u64>,
    heartbeat_running: Rc<Cell<bool>>,
}

impl UserFeed {
    async fn load(&self) -> Result<()> {
        if self.log.borrow().is_some() {
            return Ok(());
        }
        let storage = self.state.storage();
        let last_id: u64 = storage.get(LAST_ID_KEY).await?.unwrap_or(0);
        let entries = storage
            .list_with_options(ListOptions::new().prefix(EVENT_KEY_PREFIX))
            .await?;
        let mut log = FeedLog {
            last_id,
            events: Default::default(),
        };
        for entry in entries.values() {
            // Stored as JSON text: what is read back is exactly what was written.
            let text = entry?.as_string().unwrap_or_default();
            let event: FeedEvent = serde_json::from_str(&text)
                .map_err(|e| worker::Error::RustError(format!("feed event: {e}")))?;
            log.events.push_back(event);
        }
        // Another load may have finished while this one waited on storage.
        self.log.borrow_mut().get_or_insert(log);
        Ok(())
    }

    /// Writes `frame` to every open stream; a stream whose client went away refuses it and is dropped.
    fn broadcast(&self, frame: Vec<u8>) {
        self.streams
            .borrow_mut()
            .retain(|s| s.frames.unbounded_send(Ok(frame.clone())).is_ok());
    }

    async fn publish(&self, publication: Publication) -> Result<Response> {
        let now = js_sys::Date::now() as i64;
        if !publication.kind.is_replayed() {
            self.broadcast(live_only_frame(&publication, now).into_bytes());
            return Response::from_json(&serde_json::json!({ "id": null }));
        }
        self.load().await?;
        let (event, dropped) = self
            .log
            .borrow_mut()
            .as_mut()
            .expect("loaded above")
            .append(publication, now);
        let storage = self.state.storage();
        let both = js_sys::Object::new();
        let set = |k: &str, v: wasm_bindgen::JsValue| js_sys::Reflect::set(&both, &k.into(), &v);
        let text =
            serde_json::to_string(&event).map_err(|e| worker::Error::RustError(e.to_string()))?;
        set(&event_key(event.id), text.into()).map_err(js_error)?;
        // Ids stay far below 2^53: a JS number holds them exactly.
        set(LAST_ID_KEY, (event.id as f64).into()).map_err(js_error)?;
        storage.put_multiple_raw(both).await?;
        if let Some(old) = dropped {
            storage.delete(&event_key(old)).await?;
        }
        self.broadcast(event.frame().into_bytes());
        Response::from_json(&serde_json::json!({ "id": event.id }))
    }

    async fn open(&self, req: &Request) -> Result<Response> {
        self.load().await?;
        let seen = parse_last_event_id(req.headers().get("Last-Event-ID")?.as_deref());
        let now = js_sys::Date::now() as i64;
        let until_ms = req
            .headers()
            .get(FEED_UNTIL_HEADER)?
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(now + FEED_MAX_STREAM_MS, |t| {
                t.min(now + FEED_MAX_STREAM_MS)
            });
        let (tx, rx) = unbounded();
        {
            let log = self.log.borrow();
            let log = log.as_ref().expect("loaded above");
            let mut start = String::new();
            match seen.map(|id| log.replay_after(id)) {
                // A new client starts from now.
                None => start.push_str(&ready_frame(log.last_id)),
                Some(Replay::Events(missed)) => {
                    start.push_str(&ready_frame(seen.unwrap_or_default()));
                    missed.iter().for_each(|e| start.push_str(&e.frame()));
                }
                Some(Replay::Gap) => {
                    start.push_str(&ready_frame(log.last_id));
                    start.push_str(&resync_frame(log.last_id));
                }
            }
            let _ = tx.unbounded_send(Ok(start.into_bytes()));
        }
        let mut streams = self.streams.borrow_mut();
        if streams.len() >= FEED_MAX_STREAMS {
            // Closing its channel ends the oldest stream; its client reconnects and resumes.
            streams.remove(0);
        }
        let id = self.next_stream_id.get() + 1;
        self.next_stream_id.set(id);
        streams.push(OpenStream {
            id,
            frames: tx,
            until_ms,
        });
        drop(streams);
        self.start_heartbeat();
        // The stream ends on time (its token's expiry), not at the next heartbeat after it.
        let open = self.streams.clone();
        let left = u64::try_from(until_ms - now).unwrap_or(0);
        wasm_bindgen_futures::spawn_local(async move {
            worker::Delay::from(Duration::from_millis(left)).await;
            open.borrow_mut().retain(|s| s.id != id);
        });
        let headers = Headers::new();
        headers.set("Content-Type", "text/event-stream; charset=utf-8")?;
        headers.set("Cache-Control", "no-store")?;
        Ok(Response::from_stream(rx)?.with_headers(headers))
    }

    /// While streams are open: a comment frame every `FEED_HEARTBEAT_MS`, which also finds streams whose client
    /// left, and ends streams past their time (`OpenStream::until_ms`).
    fn start_heartbeat(&self) {
        if self.heartbeat_running.replace(true) {
            return;
        }
        let streams = self.streams.clone();
        let running = self.heartbeat_running.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                worker::Delay::from(Duration::from_millis(FEED_HEARTBEAT_MS)).await;
                let now = js_sys::Date::now() as i64;
                let mut open = streams.borrow_mut();
                open.retain(|s| {
                    now < s.until_ms
                        && s.frames
                            .unbounded_send(Ok(HEARTBEAT_FRAME.as_bytes().to_vec()))
                            .is_ok()
                });
                if open.is_empty() {
                    running.set(false);
                    return;
                }
            }
        });
    }
}

fn js_error(e: wasm_bindgen::JsValue) -> worker::Error {
    worker::Error::RustError(format!("{e:?}"))
}

impl DurableObject for UserFeed {
    fn new(state: State, _env: Env) -> Self {
        UserFeed {
            state,
            log: RefCell::new(None),
            streams: Rc::new(RefCell::new(Vec::new())),
            next_stream_id: Cell::new(0),
            heartbeat_running: Rc::new(Cell::new(false)),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            (Method::Post, FEED_PUBLISH_PATH) => match read_body::<Publication>(&mut req).await {
                Ok(publication) => self.publish(publication).await,
                Err(e) => error_response(e),
            },
            (Method::Get, FEED_STREAM_PATH) => self.open(&req).await,
            _ => error_response(ApiError::new(
                ErrorCode::RouteNotFound,
                "No such Durable Object route.",
            )),
        }
    }
}
