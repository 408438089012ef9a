//! `SessionMap`: one per (user, agent). Maps client session ids to runtime session ids (`POST /resolve`) and
//! purges expired mappings with an alarm.

use super::{error_response, no_such_route, read_body};
use crate::domain::session::{
    is_valid_client_session_id, new_client_session_id, resolve, ResolveSession, ResolvedSession,
    SessionRecord, RESOLVE_PATH,
};
use crate::domain::ApiError;
use worker::{
    durable_object, js_sys, DurableObject, Env, ListOptions, Method, Request, Response, Result,
    ScheduledTime, State,
};

const KEY_PREFIX: &str = "s:";

#[durable_object]
pub struct SessionMap {
    state: State,
}

impl DurableObject for SessionMap {
    fn new(state: State, _env: Env) -> Self {
        SessionMap { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if !(req.method() == Method::Post && req.path() == RESOLVE_PATH) {
            return no_such_route();
        }
        let request: ResolveSession = match read_body(&mut req).await {
            Ok(r) => r,
            Err(e) => return error_response(e),
        };
        let session_id = match request.session_id {
            Some(id) if is_valid_client_session_id(&id) => id,
            Some(_) => {
                return error_response(ApiError::validation(
                    "sessionId",
                    "must be 1 to 128 characters of letters, digits, '.', '_', ':' and '-'",
                ))
            }
            None => new_client_session_id(),
        };
        let key = format!("{KEY_PREFIX}{session_id}");
        let storage = self.state.storage();
        let existing: Option<SessionRecord> = storage.get(&key).await?;
        let (record, created) = resolve(existing, js_sys::Date::now() as i64);
        storage.put(&key, &record).await?;
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(at(record.expires_at_ms)).await?;
        }
        Response::from_json(&ResolvedSession {
            session_id,
            runtime_session_id: record.runtime_session_id,
            created,
            expires_at_ms: record.expires_at_ms,
        })
    }

    /// Deletes expired mappings and schedules itself for the next expiry, so storage holds live sessions only.
    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let now = js_sys::Date::now() as i64;
        let entries = storage
            .list_with_options(ListOptions::new().prefix(KEY_PREFIX))
            .await?;
        let mut expired = Vec::new();
        let mut next: Option<i64> = None;
        for entry in entries.entries() {
            let pair: js_sys::Array = entry?.into();
            let key = pair.get(0).as_string().unwrap_or_default();
            let record: std::result::Result<SessionRecord, _> =
                serde_wasm_bindgen::from_value(pair.get(1));
            match record {
                Ok(r) if r.expires_at_ms > now => {
                    next = Some(next.map_or(r.expires_at_ms, |n| n.min(r.expires_at_ms)))
                }
                _ => expired.push(key),
            }
        }
        if !expired.is_empty() {
            storage.delete_multiple(expired).await?;
        }
        if let Some(when) = next {
            storage.set_alarm(at(when)).await?;
        }
        Response::empty()
    }
}

fn at(epoch_ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&(epoch_ms as f64).into()))
}
