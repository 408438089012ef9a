//! `UserGate`: one per user (addressed by the internal user id). Holds the user's request count for the current
//! period and answers `POST /reserve`, `POST /release` and `POST /peek` with a `GateDecision`.

use super::{error_response, no_such_route, read_body};
use crate::domain::reservation::{
    self, GateRequest, PeriodCount, PEEK_PATH, RELEASE_PATH, RESERVE_PATH,
};
use std::cell::RefCell;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

const COUNT_KEY: &str = "count";

#[durable_object]
pub struct UserGate {
    state: State,
    /// `None` until loaded from storage. Decisions are made on this copy synchronously — no `.await` between
    /// reading and updating it — so concurrent requests cannot both take the last reservation.
    count: RefCell<Option<Option<PeriodCount>>>,
}

impl DurableObject for UserGate {
    fn new(state: State, _env: Env) -> Self {
        UserGate {
            state,
            count: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op = match (req.method(), req.path().as_str()) {
            (Method::Post, RESERVE_PATH) => reservation::reserve,
            (Method::Post, RELEASE_PATH) => reservation::release,
            (Method::Post, PEEK_PATH) => reservation::peek,
            _ => return no_such_route(),
        };
        let request: GateRequest = match read_body(&mut req).await {
            Ok(r) => r,
            Err(e) => return error_response(e),
        };
        if self.count.borrow().is_none() {
            let stored: Option<PeriodCount> = self.state.storage().get(COUNT_KEY).await?;
            self.count.borrow_mut().get_or_insert(stored);
        }
        let (count, decision) = {
            let mut slot = self.count.borrow_mut();
            let (count, decision) = op(slot.flatten(), request);
            *slot = Some(Some(count));
            (count, decision)
        };
        // The output gate holds the response until this write is durable: a granted reservation is never
        // reported and then lost to a restart.
        self.state.storage().put(COUNT_KEY, count).await?;
        Response::from_json(&decision)
    }
}
