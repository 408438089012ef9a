//! The worker's configuration, parsed once per isolate and again only when a variable changes.

use crate::config::{ServiceConfig, CONFIG_VARS};
use crate::domain::{ApiError, ErrorCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use worker::Env;

/// The raw values of `CONFIG_VARS`, in order: the key the parsed configuration is cached under.
type RawConfig = Vec<Option<String>>;

thread_local! {
    // Parsing the configuration (RSA keys included) once per isolate, keyed by the raw values so a changed
    // variable is picked up without a redeploy of the code.
    static CONFIG: RefCell<Option<(RawConfig, Rc<ServiceConfig>)>> = const { RefCell::new(None) };
}

fn read_var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
}

pub(super) fn load_config(env: &Env) -> Result<Rc<ServiceConfig>, ApiError> {
    let raw: RawConfig = CONFIG_VARS.iter().map(|name| read_var(env, name)).collect();
    if let Some(config) = CONFIG.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(cached_raw, _)| *cached_raw == raw)
            .map(|(_, config)| config.clone())
    }) {
        return Ok(config);
    }
    let values: HashMap<&str, Option<String>> = CONFIG_VARS
        .iter()
        .copied()
        .zip(raw.iter().cloned())
        .collect();
    let config =
        ServiceConfig::from_vars(|name| values.get(name).cloned().flatten()).map_err(|reason| {
            ApiError {
                internal_cause: Some(format!("configuration: {reason}")),
                ..ApiError::new(
                    ErrorCode::ServerMisconfigured,
                    "The service is misconfigured; the operator has been told why in the logs.",
                )
            }
        })?;
    let config = Rc::new(config);
    CONFIG.with(|c| *c.borrow_mut() = Some((raw, config.clone())));
    Ok(config)
}
