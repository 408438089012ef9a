//! The Stripe requests the control plane makes, and how their answers are read.

use crate::domain::billing::event::Subscription;
use serde_json::Value;

/// The API version every request pins (`Stripe-Version`): the shapes parsed here are this version's (and, for
/// the fields read, the older ones too; see `domain::billing::event`).
pub const STRIPE_API_VERSION: &str = "2026-10-28.endive";
pub const DEFAULT_API_BASE_URL: &str = "https://api.stripe.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeRequest {
    pub method: &'static str,
    pub path: String,
    pub form: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
}

impl StripeRequest {
    /// `METHOD /path`: what errors and logs name (never the body, which may hold customer data).
    pub fn endpoint(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The form body, `application/x-www-form-urlencoded`.
    pub fn body(&self) -> Option<String> {
        (self.method == "POST").then(|| {
            self.form
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        })
    }
}

fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn create(path: &str, form: Vec<(&str, String)>, idempotency_key: String) -> StripeRequest {
    StripeRequest {
        method: "POST",
        path: path.to_owned(),
        form: form.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        idempotency_key: Some(idempotency_key),
    }
}

/// `POST /v1/customers`: the user's one customer. The key is the user's, so a retried or concurrent first
/// checkout creates one customer, not two.
pub fn create_customer(user_id: &str) -> StripeRequest {
    create(
        "/v1/customers",
        vec![("metadata[user_id]", user_id.to_owned())],
        format!("customer-{user_id}"),
    )
}

/// What a checkout needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout<'a> {
    pub customer: &'a str,
    pub price: &'a str,
    pub user_id: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    pub idempotency_key: String,
}

/// `POST /v1/checkout/sessions` in subscription mode for one price, naming the user as `client_reference_id`.
pub fn create_checkout_session(c: &Checkout<'_>) -> StripeRequest {
    create(
        "/v1/checkout/sessions",
        vec![
            ("mode", "subscription".into()),
            ("customer", c.customer.into()),
            ("client_reference_id", c.user_id.into()),
            ("line_items[0][price]", c.price.into()),
            ("line_items[0][quantity]", "1".into()),
            ("success_url", c.success_url.into()),
            ("cancel_url", c.cancel_url.into()),
            ("subscription_data[metadata][user_id]", c.user_id.into()),
        ],
        c.idempotency_key.clone(),
    )
}

/// `POST /v1/billing_portal/sessions`: where the customer manages the subscription.
pub fn create_portal_session(
    customer: &str,
    return_url: &str,
    idempotency_key: String,
) -> StripeRequest {
    create(
        "/v1/billing_portal/sessions",
        vec![
            ("customer", customer.into()),
            ("return_url", return_url.into()),
        ],
        idempotency_key,
    )
}

/// `GET /v1/subscriptions/{id}`: the subscription as it is now.
pub fn retrieve_subscription(id: &str) -> StripeRequest {
    StripeRequest {
        method: "GET",
        path: format!("/v1/subscriptions/{}", form_encode(id)),
        form: Vec::new(),
        idempotency_key: None,
    }
}

/// Why a call failed, for retry decisions and for the caller's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeFailure {
    /// 401/403: the secret key is wrong or lacks a permission.
    Auth,
    /// 400/402/404: Stripe refused this request; the same request will not succeed.
    Refused,
    /// 409: an idempotency key reused with other parameters, or a conflicting concurrent change.
    Conflict,
    /// 429.
    RateLimited,
    /// 5xx.
    Upstream,
    /// No HTTP answer.
    Network,
    /// A 2xx that is not what was expected.
    InvalidResponse,
}

impl StripeFailure {
    pub fn retryable(self) -> bool {
        matches!(
            self,
            StripeFailure::RateLimited
                | StripeFailure::Upstream
                | StripeFailure::Network
                | StripeFailure::Conflict
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeError {
    pub failure: StripeFailure,
    pub endpoint: String,
    pub status: Option<u16>,
    /// Stripe's `error.type` and `error.code`, when it gave them.
    pub stripe_type: Option<String>,
    pub stripe_code: Option<String>,
    pub message: String,
}

impl std::fmt::Display for StripeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed", self.endpoint)?;
        if let Some(status) = self.status {
            write!(f, " ({status})")?;
        }
        write!(f, ": {}", self.message)
    }
}

pub fn network_failure(request: &StripeRequest, cause: &str) -> StripeError {
    StripeError {
        failure: StripeFailure::Network,
        endpoint: request.endpoint(),
        status: None,
        stripe_type: None,
        stripe_code: None,
        message: format!("no answer from Stripe: {cause}"),
    }
}

/// Reads an answer: the object on 2xx, a classified error otherwise.
pub fn parse_response(
    request: &StripeRequest,
    status: u16,
    body: &[u8],
) -> Result<Value, StripeError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return json.filter(Value::is_object).ok_or_else(|| StripeError {
            failure: StripeFailure::InvalidResponse,
            endpoint: request.endpoint(),
            status: Some(status),
            stripe_type: None,
            stripe_code: None,
            message: "Stripe answered with something that is not a JSON object".into(),
        });
    }
    let error = json.as_ref().and_then(|j| j.get("error"));
    let field = |k: &str| {
        error
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let failure = match status {
        401 | 403 => StripeFailure::Auth,
        409 => StripeFailure::Conflict,
        429 => StripeFailure::RateLimited,
        s if s >= 500 => StripeFailure::Upstream,
        _ => StripeFailure::Refused,
    };
    Err(StripeError {
        failure,
        endpoint: request.endpoint(),
        status: Some(status),
        stripe_type: field("type"),
        stripe_code: field("code"),
        // Stripe's messages name the request's problem; a key is never echoed in them.
        message: field("message")
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_else(|| format!("Stripe answered {status}")),
    })
}

/// The `id` of a created object, or why there is none.
pub fn created_id(
    request: &StripeRequest,
    object: &Value,
    prefix: &str,
) -> Result<String, StripeError> {
    object
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| id.starts_with(prefix))
        .map(str::to_owned)
        .ok_or_else(|| invalid(request, &format!("no {prefix}… id in the answer")))
}

/// The `url` of a created checkout or portal session.
pub fn session_url(request: &StripeRequest, object: &Value) -> Result<String, StripeError> {
    object
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(str::to_owned)
        .ok_or_else(|| invalid(request, "no url in the answer"))
}

pub fn subscription(request: &StripeRequest, object: &Value) -> Result<Subscription, StripeError> {
    Subscription::parse(object).ok_or_else(|| invalid(request, "not a subscription"))
}

fn invalid(request: &StripeRequest, message: &str) -> StripeError {
    StripeError {
        failure: StripeFailure::InvalidResponse,
        endpoint: request.endpoint(),
        status: None,
        stripe_type: None,
        stripe_code: None,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_is_form_encoded_with_its_idempotency_key() {
        let r = create_checkout_session(&Checkout {
            customer: "cus_1",
            price: "price_pro",
            user_id: "usr_1",
            success_url: "https://app.example/billing?done=1&x=a b",
            cancel_url: "https://app.example/billing",
            idempotency_key: "chk-1".into(),
        });
        assert_eq!(r.endpoint(), "POST /v1/checkout/sessions");
        assert_eq!(r.idempotency_key.as_deref(), Some("chk-1"));
        let body = r.body().unwrap();
        assert!(body.starts_with("mode=subscription&customer=cus_1&client_reference_id=usr_1&line_items%5B0%5D%5Bprice%5D=price_pro&"));
        assert!(
            body.contains("success_url=https%3A%2F%2Fapp.example%2Fbilling%3Fdone%3D1%26x%3Da+b")
        );
        assert_eq!(
            create_customer("usr_1").idempotency_key.as_deref(),
            Some("customer-usr_1")
        );
        assert_eq!(retrieve_subscription("sub_1").body(), None);
        assert_eq!(
            retrieve_subscription("sub_1/../x").path,
            "/v1/subscriptions/sub_1%2F..%2Fx"
        );
    }

    #[test]
    fn errors_are_classified_with_stripes_type_and_code() {
        let r = create_customer("usr_1");
        let body = br#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such price"}}"#;
        let e = parse_response(&r, 400, body).unwrap_err();
        assert_eq!(
            (e.failure, e.stripe_code.as_deref()),
            (StripeFailure::Refused, Some("resource_missing"))
        );
        assert!(!e.failure.retryable());
        for (status, failure) in [
            (401, StripeFailure::Auth),
            (409, StripeFailure::Conflict),
            (429, StripeFailure::RateLimited),
            (503, StripeFailure::Upstream),
        ] {
            assert_eq!(
                parse_response(&r, status, b"not json").unwrap_err().failure,
                failure
            );
        }
        assert!(StripeFailure::Upstream.retryable());
        assert_eq!(
            parse_response(&r, 200, b"[]").unwrap_err().failure,
            StripeFailure::InvalidResponse
        );
        let ok = parse_response(&r, 200, br#"{"id":"cus_9"}"#).unwrap();
        assert_eq!(created_id(&r, &ok, "cus_").unwrap(), "cus_9");
        assert!(created_id(&r, &ok, "sub_").is_err());
        assert!(!e.to_string().contains("sk_"));
    }
}
