//! Typed clients of the Durable Objects: the only code that addresses them.

pub mod deploy_follower;
pub mod user_feed;
pub mod user_gate;

use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::{Env, Method, Request, RequestInit};

/// POSTs `body` as JSON to `path` of the object `name` of `binding`; anything but 200 is an error naming the
/// binding and the status.
async fn post_json(
    env: &Env,
    binding: &str,
    name: &str,
    path: &str,
    body: &impl Serialize,
) -> worker::Result<()> {
    let body = serde_json::to_string(body).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let res = env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?
        .fetch_with_request(Request::new_with_init(
            &format!("https://object{path}"),
            &init,
        )?)
        .await?;
    match res.status_code() {
        200 => Ok(()),
        status => Err(worker::Error::RustError(format!(
            "{binding} answered {status}"
        ))),
    }
}
