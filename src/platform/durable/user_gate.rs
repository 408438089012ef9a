//! The `UserGate` client: one object per user, every call a `GateCall` (app::gate::protocol).

use crate::app::gate::protocol::{
    Admission, AdmitRequest, Forget, GateCall, GATE_PATH, USER_GATE_BINDING,
};
use crate::app::invoke::InvokeGate;
use crate::app::ports::GateNotifier;
use crate::app::telemetry::UsageCharger;
use crate::app::usage::RequestCounter;
use crate::domain::ids::UserId;
use crate::domain::period::PeriodKey;
use crate::domain::reservation::GateDecision;
use crate::domain::usage::UsageTotals;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsValue;
use worker::{Env, Method, Request, RequestInit};

pub struct UserGateClient<'a> {
    env: &'a Env,
}

impl<'a> UserGateClient<'a> {
    pub fn new(env: &'a Env) -> Self {
        UserGateClient { env }
    }

    async fn call<T: DeserializeOwned>(&self, user: &UserId, call: &GateCall) -> Result<T, String> {
        let run = async {
            let stub = self
                .env
                .durable_object(USER_GATE_BINDING)?
                .id_from_name(user.as_str())?
                .get_stub()?;
            let body =
                serde_json::to_string(call).map_err(|e| worker::Error::RustError(e.to_string()))?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_body(Some(JsValue::from_str(&body)));
            let mut res = stub
                .fetch_with_request(Request::new_with_init(
                    &format!("https://gate{GATE_PATH}"),
                    &init,
                )?)
                .await?;
            let status = res.status_code();
            let text = res.text().await?;
            if status != 200 {
                return Err(worker::Error::RustError(format!(
                    "{USER_GATE_BINDING} answered {status}: {text}"
                )));
            }
            serde_json::from_str(&text).map_err(|e| worker::Error::RustError(e.to_string()))
        };
        run.await.map_err(|e: worker::Error| e.to_string())
    }
}

impl InvokeGate for UserGateClient<'_> {
    async fn admit(&self, user: &UserId, request: &AdmitRequest) -> Result<Admission, String> {
        self.call(user, &GateCall::Admit(request.clone())).await
    }

    async fn release(&self, user: &UserId, period_key: PeriodKey) -> Result<GateDecision, String> {
        self.call(user, &GateCall::Release { period_key }).await
    }
}

impl RequestCounter for UserGateClient<'_> {
    async fn peek(
        &self,
        user: &UserId,
        period_key: PeriodKey,
        limit: u64,
    ) -> Result<GateDecision, String> {
        self.call(user, &GateCall::Peek { period_key, limit }).await
    }
}

impl UsageCharger for UserGateClient<'_> {
    async fn charge(
        &self,
        user: &UserId,
        period_key: PeriodKey,
        totals: UsageTotals,
    ) -> Result<(), String> {
        self.call::<serde_json::Value>(user, &GateCall::Charge { period_key, totals })
            .await
            .map(|_| ())
    }
}

impl GateNotifier for UserGateClient<'_> {
    async fn forget(&self, user: &UserId, what: Forget) -> Result<(), String> {
        self.call::<serde_json::Value>(user, &GateCall::Forget(what))
            .await
            .map(|_| ())
    }

    async fn hold(&self, user: &UserId, agent: &str) -> Result<(), String> {
        let agent_id = agent.to_owned();
        self.call::<serde_json::Value>(user, &GateCall::Hold { agent_id })
            .await
            .map(|_| ())
    }
}
