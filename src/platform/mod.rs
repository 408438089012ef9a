//! The Workers adapter: the entry points (fetch, scheduled) and the modules that do the I/O for the pure core.
//! Requests go through `router`; every response leaves through `reply::respond`.

mod admin;
mod artifacts;
mod audit;
mod aws;
mod billing;
mod bindings;
mod cloudflare;
mod config_cache;
mod d1;
mod durable;
mod gateway;
mod identity;
mod jobs;
mod jwks;
mod reply;
mod request;
mod router;
mod stripe;
mod telemetry;
mod upstream;

// What the Durable Object shells (durable_objects/) use of the adapter.
pub(crate) use bindings::{d1_database, TIER_ENTITLEMENTS_VAR};
pub(crate) use d1::D1Store;
pub(crate) use jobs::follow_one;

use crate::app::ports::Clock;
use crate::domain::ids::RequestId;
use worker::{event, Context, Env, Request, Response, ScheduleContext, ScheduledEvent};

struct JsClock;

impl Clock for JsClock {
    fn now_ms(&self) -> i64 {
        js_sys::Date::now() as i64
    }
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let request_id =
        RequestId::accept_or_generate(request::header(&req, "X-Request-Id").as_deref());
    let origin = request::header(&req, "Origin");
    let config = config_cache::load_config(&env);
    request::set_draining(config.as_ref().is_ok_and(|c| c.drain_unread_bodies));
    let outcome = match &config {
        Ok(config) => router::handle(&mut req, &env, &ctx, config, &request_id).await,
        Err(e) => Err(e.clone()),
    };
    // A body nobody read (a request refused before its body mattered) is read to its end before the answer:
    // answering mid-upload is what makes `wrangler dev` fail the next request and exit.
    request::drain(&mut req).await;
    let cors = match &config {
        Ok(config) => config.cors.response_headers(origin.as_deref()),
        Err(_) => Vec::new(),
    };
    reply::respond(outcome, &request_id, cors)
}

/// The cron trigger (wrangler.toml `[triggers]`): the usage rollup, then the deploy clean-up.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    jobs::run_scheduled(env).await
}
