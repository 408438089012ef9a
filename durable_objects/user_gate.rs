//! `UserGate`: one per user (addressed by the internal user id). The shell around `app::gate`: it decodes a
//! `GateCall`, lends the gate its storage (the request count and the sessions) and D1 (the facts, read only
//! when missing or stale), and answers. Expired sessions are purged by an alarm.

use super::{error_response, read_body};
use crate::app::gate::protocol::{AdmitRequest, GateCall, LoadedFacts, GATE_PATH};
use crate::app::gate::serve::{
    FactsSource, GateAnswer, GateMemory, GateStorage, SESSION_KEY_PREFIX,
};
use crate::app::ports::{StoreError, StoreResult};
use crate::domain::entitlements::TierOverrides;
use crate::domain::reservation::PeriodCount;
use crate::domain::session::SessionRecord;
use crate::domain::{ApiError, ErrorCode};
use crate::platform::{d1_database, D1Store, TIER_ENTITLEMENTS_VAR};
use std::cell::{Cell, RefCell};
use worker::{
    durable_object, js_sys, DurableObject, Env, ListOptions, Method, Request, Response, Result,
    ScheduledTime, State,
};

const COUNT_KEY: &str = "count";
/// Sessions looked at per alarm.
const SESSIONS_PER_SWEEP: usize = 500;

#[durable_object]
pub struct UserGate {
    state: State,
    env: Env,
    memory: GateMemory,
    /// Whether an alarm is known to be set (so a session write does not ask storage every time).
    alarm_set: Cell<bool>,
    /// The parsed `TIER_ENTITLEMENTS`, keyed by its raw text.
    tiers: RefCell<Option<(String, TierOverrides)>>,
    /// Where the session sweep goes on (a page at a time); from the start after a restart.
    sweep_from: RefCell<Option<String>>,
}

struct Storage<'a>(&'a UserGate);

impl GateStorage for Storage<'_> {
    async fn count(&self) -> StoreResult<Option<PeriodCount>> {
        self.0.state.storage().get(COUNT_KEY).await.map_err(fail)
    }

    async fn session(&self, key: &str) -> StoreResult<Option<SessionRecord>> {
        self.0.state.storage().get(key).await.map_err(fail)
    }

    async fn save(
        &self,
        count: PeriodCount,
        session: Option<(&str, &SessionRecord)>,
    ) -> StoreResult<()> {
        let storage = self.0.state.storage();
        // The output gate holds the answer until these writes are durable: a granted reservation is never
        // reported and then lost to a restart.
        match session {
            None => storage.put(COUNT_KEY, count).await.map_err(fail),
            Some((key, record)) => {
                let both = js_sys::Object::new();
                let set =
                    |k: &str, v: wasm_bindgen::JsValue| js_sys::Reflect::set(&both, &k.into(), &v);
                set(
                    COUNT_KEY,
                    serde_wasm_bindgen::to_value(&count).map_err(|e| StoreError(e.to_string()))?,
                )
                .map_err(|e| StoreError(format!("{e:?}")))?;
                set(
                    key,
                    serde_wasm_bindgen::to_value(record).map_err(|e| StoreError(e.to_string()))?,
                )
                .map_err(|e| StoreError(format!("{e:?}")))?;
                storage.put_multiple_raw(both).await.map_err(fail)?;
                if !self.0.alarm_set.get() {
                    if storage.get_alarm().await.map_err(fail)?.is_none() {
                        storage
                            .set_alarm(at(record.expires_at_ms))
                            .await
                            .map_err(fail)?;
                    }
                    self.0.alarm_set.set(true);
                }
                Ok(())
            }
        }
    }
}

struct Facts<'a>(&'a Env);

impl FactsSource for Facts<'_> {
    async fn load(&self, user_id: &str, request: &AdmitRequest) -> StoreResult<LoadedFacts> {
        let store = D1Store::new(d1_database(self.0).map_err(|e| StoreError(e.message))?);
        store.gate_facts(user_id, request).await
    }
}

fn fail(e: worker::Error) -> StoreError {
    StoreError(e.to_string())
}

impl UserGate {
    fn tiers(&self) -> std::result::Result<TierOverrides, ApiError> {
        let raw = self
            .env
            .var(TIER_ENTITLEMENTS_VAR)
            .map(|v| v.to_string())
            .unwrap_or_default();
        if let Some((cached_raw, tiers)) = &*self.tiers.borrow() {
            if *cached_raw == raw {
                return Ok(tiers.clone());
            }
        }
        let tiers = TierOverrides::parse(Some(&raw)).map_err(|reason| ApiError {
            internal_cause: Some(reason),
            ..ApiError::new(
                ErrorCode::ServerMisconfigured,
                "TIER_ENTITLEMENTS is not valid.",
            )
        })?;
        *self.tiers.borrow_mut() = Some((raw, tiers.clone()));
        Ok(tiers)
    }
}

impl DurableObject for UserGate {
    fn new(state: State, env: Env) -> Self {
        UserGate {
            state,
            env,
            memory: GateMemory::default(),
            alarm_set: Cell::new(false),
            tiers: RefCell::new(None),
            sweep_from: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if !(req.method() == Method::Post && req.path() == GATE_PATH) {
            return error_response(ApiError::new(
                ErrorCode::RouteNotFound,
                "No such Durable Object route.",
            ));
        }
        let call: GateCall = match read_body(&mut req).await {
            Ok(call) => call,
            Err(e) => return error_response(e),
        };
        let tiers = match self.tiers() {
            Ok(tiers) => tiers,
            Err(e) => return error_response(e),
        };
        // Addressed by name (the user id) by its only client; anything else is a bug to report, not to serve.
        let Some(user_id) = self.state.id().name() else {
            return error_response(ApiError::internal("a user gate addressed without a name"));
        };
        let now = js_sys::Date::now() as i64;
        let answer = self
            .memory
            .serve(
                &user_id,
                call,
                &Storage(self),
                &Facts(&self.env),
                &tiers,
                now,
            )
            .await;
        match answer {
            Ok(GateAnswer::Admission(a)) => Response::from_json(&a),
            Ok(GateAnswer::Decision(d)) => Response::from_json(&d),
            Ok(GateAnswer::Done) => Response::from_json(&serde_json::json!({})),
            Err(e) => error_response(ApiError::internal(format!("gate storage: {}", e.0))),
        }
    }

    /// Deletes expired sessions and schedules itself for the next expiry, so storage holds live sessions only.
    /// Sessions are read a page at a time: this object also serves every call of the user, which must not wait
    /// behind one long sweep. A full page means more may follow: the next page comes in a second.
    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let now = js_sys::Date::now() as i64;
        let from = self.sweep_from.borrow_mut().take();
        let mut options = ListOptions::new()
            .prefix(SESSION_KEY_PREFIX)
            .limit(SESSIONS_PER_SWEEP);
        if let Some(from) = &from {
            options = options.start(from);
        }
        let entries = storage.list_with_options(options).await?;
        let mut last_key = None;
        let mut expired = Vec::new();
        let mut next: Option<i64> = None;
        let mut seen = 0;
        for entry in entries.entries() {
            seen += 1;
            let pair: js_sys::Array = entry?.into();
            let key = pair.get(0).as_string().unwrap_or_default();
            last_key = Some(key.clone());
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
        if seen >= SESSIONS_PER_SWEEP {
            // The next page starts just after this one's last key (a NUL sorts before every other character).
            *self.sweep_from.borrow_mut() = last_key.map(|k| format!("{k}\u{0}"));
            next = Some(now + 1_000);
        }
        match next {
            Some(when) => storage.set_alarm(at(when)).await?,
            None => self.alarm_set.set(false),
        }
        Response::empty()
    }
}

fn at(epoch_ms: i64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&(epoch_ms as f64).into()))
}
