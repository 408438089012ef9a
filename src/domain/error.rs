//! The control plane's one error type: a stable machine code, its HTTP status, a human message and optional
//! structured details. Every failure that reaches a client is one of these; `http::envelope` is the only place
//! that turns it into bytes.

use serde_json::Value;
use std::fmt;

/// Stable, snake_case error codes. Clients match on these, so a code is never renamed or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidJson,
    InvalidBody,
    ValidationFailed,
    InvalidQuery,
    InvalidCursor,
    MissingCredentials,
    InvalidToken,
    UnsupportedTokenAlgorithm,
    UnknownSigningKey,
    InvalidTokenSignature,
    TokenExpired,
    TokenNotYetValid,
    InvalidTokenIssuer,
    UnauthorizedParty,
    InvalidTokenAudience,
    TokenLifetimeTooLong,
    CorsOriginNotAllowed,
    RouteNotFound,
    AgentNotFound,
    MethodNotAllowed,
    AgentNameTaken,
    PayloadTooLarge,
    UnsupportedMediaType,
    InternalError,
    ServerMisconfigured,
    DependencyUnavailable,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    DeploymentNotFound,
    AgentDisabled,
    DeploymentNotActivatable,
    SecretNotFound,
    DeploysNotConfigured,
    NoActiveDeployment,
    RequestLimitExceeded,
    NotEntitled,
    AgentLimitReached,
    InvalidAdminToken,
    AdminNotConfigured,
    UserNotFound,
    InvalidApiKey,
    ApiKeyNotAllowed,
    ApiKeyScopeMismatch,
    ApiKeyNotFound,
    ApiKeyLimitReached,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamInterrupted,
    AgentError,
    InvalidTelemetryHeaders,
    UnknownDeployment,
    InvalidTelemetrySignature,
    TooManyEvents,
    TelemetryMismatch,
    TimestampOutOfWindow,
    TraceNotAdmitted,
    QuotaExhausted,
    UsagePeriodPruned,
    DeployLimitReached,
    RateLimited,
    InvalidWebhookSignature,
    BillingNotConfigured,
    BillingProviderError,
    NoBillingCustomer,
    BillingEventNotFound,
    AlreadySubscribed,
    InvalidManifest,
    BundleTooLarge,
    ArtifactNotFound,
    RestoreFailed,
    RestoreInProgress,
    DeployInProgress,
}

impl ErrorCode {
    /// Every code, so tests can check each one is documented and unique.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidBody,
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidCursor,
        ErrorCode::MissingCredentials,
        ErrorCode::InvalidToken,
        ErrorCode::UnsupportedTokenAlgorithm,
        ErrorCode::UnknownSigningKey,
        ErrorCode::InvalidTokenSignature,
        ErrorCode::TokenExpired,
        ErrorCode::TokenNotYetValid,
        ErrorCode::InvalidTokenIssuer,
        ErrorCode::UnauthorizedParty,
        ErrorCode::InvalidTokenAudience,
        ErrorCode::TokenLifetimeTooLong,
        ErrorCode::CorsOriginNotAllowed,
        ErrorCode::RouteNotFound,
        ErrorCode::AgentNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AgentNameTaken,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InternalError,
        ErrorCode::ServerMisconfigured,
        ErrorCode::DependencyUnavailable,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::DeploymentNotFound,
        ErrorCode::AgentDisabled,
        ErrorCode::DeploymentNotActivatable,
        ErrorCode::SecretNotFound,
        ErrorCode::DeploysNotConfigured,
        ErrorCode::NoActiveDeployment,
        ErrorCode::RequestLimitExceeded,
        ErrorCode::NotEntitled,
        ErrorCode::AgentLimitReached,
        ErrorCode::InvalidAdminToken,
        ErrorCode::AdminNotConfigured,
        ErrorCode::UserNotFound,
        ErrorCode::InvalidApiKey,
        ErrorCode::ApiKeyNotAllowed,
        ErrorCode::ApiKeyScopeMismatch,
        ErrorCode::ApiKeyNotFound,
        ErrorCode::ApiKeyLimitReached,
        ErrorCode::UpstreamUnreachable,
        ErrorCode::UpstreamTimeout,
        ErrorCode::UpstreamError,
        ErrorCode::UpstreamInvalidResponse,
        ErrorCode::UpstreamInterrupted,
        ErrorCode::AgentError,
        ErrorCode::InvalidTelemetryHeaders,
        ErrorCode::UnknownDeployment,
        ErrorCode::InvalidTelemetrySignature,
        ErrorCode::TooManyEvents,
        ErrorCode::TelemetryMismatch,
        ErrorCode::TimestampOutOfWindow,
        ErrorCode::TraceNotAdmitted,
        ErrorCode::QuotaExhausted,
        ErrorCode::UsagePeriodPruned,
        ErrorCode::DeployLimitReached,
        ErrorCode::RateLimited,
        ErrorCode::InvalidWebhookSignature,
        ErrorCode::BillingNotConfigured,
        ErrorCode::BillingProviderError,
        ErrorCode::NoBillingCustomer,
        ErrorCode::BillingEventNotFound,
        ErrorCode::AlreadySubscribed,
        ErrorCode::InvalidManifest,
        ErrorCode::BundleTooLarge,
        ErrorCode::ArtifactNotFound,
        ErrorCode::RestoreFailed,
        ErrorCode::RestoreInProgress,
        ErrorCode::DeployInProgress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::MissingCredentials => "missing_credentials",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::UnsupportedTokenAlgorithm => "unsupported_token_algorithm",
            ErrorCode::UnknownSigningKey => "unknown_signing_key",
            ErrorCode::InvalidTokenSignature => "invalid_token_signature",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::InvalidTokenIssuer => "invalid_token_issuer",
            ErrorCode::UnauthorizedParty => "unauthorized_party",
            ErrorCode::InvalidTokenAudience => "invalid_token_audience",
            ErrorCode::TokenLifetimeTooLong => "token_lifetime_too_long",
            ErrorCode::CorsOriginNotAllowed => "cors_origin_not_allowed",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::AgentNotFound => "agent_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AgentNameTaken => "agent_name_taken",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::ServerMisconfigured => "server_misconfigured",
            ErrorCode::DependencyUnavailable => "dependency_unavailable",
            ErrorCode::DeploysNotConfigured => "deploys_not_configured",
            ErrorCode::SecretNotFound => "secret_not_found",
            ErrorCode::DeploymentNotActivatable => "deployment_not_activatable",
            ErrorCode::AgentDisabled => "agent_disabled",
            ErrorCode::DeploymentNotFound => "deployment_not_found",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::NoActiveDeployment => "no_active_deployment",
            ErrorCode::RequestLimitExceeded => "request_limit_exceeded",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::AgentLimitReached => "agent_limit_reached",
            ErrorCode::InvalidAdminToken => "invalid_admin_token",
            ErrorCode::AdminNotConfigured => "admin_not_configured",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::ApiKeyNotAllowed => "api_key_not_allowed",
            ErrorCode::ApiKeyScopeMismatch => "api_key_scope_mismatch",
            ErrorCode::ApiKeyNotFound => "api_key_not_found",
            ErrorCode::ApiKeyLimitReached => "api_key_limit_reached",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamInvalidResponse => "upstream_invalid_response",
            ErrorCode::UpstreamInterrupted => "upstream_interrupted",
            ErrorCode::AgentError => "agent_error",
            ErrorCode::InvalidTelemetryHeaders => "invalid_telemetry_headers",
            ErrorCode::UnknownDeployment => "unknown_deployment",
            ErrorCode::InvalidTelemetrySignature => "invalid_telemetry_signature",
            ErrorCode::TooManyEvents => "too_many_events",
            ErrorCode::TelemetryMismatch => "telemetry_mismatch",
            ErrorCode::TimestampOutOfWindow => "timestamp_out_of_window",
            ErrorCode::TraceNotAdmitted => "trace_not_admitted",
            ErrorCode::QuotaExhausted => "quota_exhausted",
            ErrorCode::UsagePeriodPruned => "usage_period_pruned",
            ErrorCode::DeployLimitReached => "deploy_limit_reached",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidWebhookSignature => "invalid_webhook_signature",
            ErrorCode::BillingNotConfigured => "billing_not_configured",
            ErrorCode::BillingProviderError => "billing_provider_error",
            ErrorCode::NoBillingCustomer => "no_billing_customer",
            ErrorCode::BillingEventNotFound => "billing_event_not_found",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::InvalidManifest => "invalid_manifest",
            ErrorCode::BundleTooLarge => "bundle_too_large",
            ErrorCode::ArtifactNotFound => "artifact_not_found",
            ErrorCode::RestoreFailed => "restore_failed",
            ErrorCode::RestoreInProgress => "restore_in_progress",
            ErrorCode::DeployInProgress => "deploy_in_progress",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidBody
            | ErrorCode::ValidationFailed
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidCursor => 400,
            ErrorCode::MissingCredentials
            | ErrorCode::InvalidToken
            | ErrorCode::UnsupportedTokenAlgorithm
            | ErrorCode::UnknownSigningKey
            | ErrorCode::InvalidTokenSignature
            | ErrorCode::TokenExpired
            | ErrorCode::TokenNotYetValid
            | ErrorCode::InvalidTokenIssuer
            | ErrorCode::UnauthorizedParty
            | ErrorCode::InvalidTokenAudience
            | ErrorCode::TokenLifetimeTooLong => 401,
            ErrorCode::CorsOriginNotAllowed => 403,
            ErrorCode::RouteNotFound | ErrorCode::AgentNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AgentNameTaken => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InternalError | ErrorCode::ServerMisconfigured => 500,
            ErrorCode::DependencyUnavailable | ErrorCode::DeploysNotConfigured => 503,
            ErrorCode::InvalidIdempotencyKey => 400,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::DeploymentNotFound | ErrorCode::SecretNotFound => 404,
            ErrorCode::AgentDisabled | ErrorCode::DeploymentNotActivatable => 409,
            ErrorCode::NoActiveDeployment => 409,
            ErrorCode::RequestLimitExceeded => 429,
            ErrorCode::NotEntitled => 403,
            ErrorCode::AgentLimitReached => 403,
            ErrorCode::InvalidAdminToken => 401,
            ErrorCode::AdminNotConfigured => 503,
            ErrorCode::UserNotFound => 404,
            ErrorCode::InvalidApiKey => 401,
            ErrorCode::ApiKeyNotAllowed => 403,
            ErrorCode::ApiKeyScopeMismatch => 403,
            ErrorCode::ApiKeyNotFound => 404,
            ErrorCode::ApiKeyLimitReached => 409,
            ErrorCode::UpstreamUnreachable => 502,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::UpstreamError => 502,
            ErrorCode::UpstreamInvalidResponse => 502,
            ErrorCode::UpstreamInterrupted => 502,
            ErrorCode::AgentError => 502,
            ErrorCode::InvalidTelemetryHeaders => 400,
            ErrorCode::UnknownDeployment => 401,
            ErrorCode::InvalidTelemetrySignature => 401,
            ErrorCode::TooManyEvents => 400,
            ErrorCode::TelemetryMismatch => 403,
            ErrorCode::TimestampOutOfWindow => 400,
            ErrorCode::TraceNotAdmitted => 403,
            ErrorCode::QuotaExhausted => 429,
            ErrorCode::UsagePeriodPruned => 409,
            ErrorCode::DeployLimitReached => 429,
            ErrorCode::RateLimited => 429,
            ErrorCode::InvalidWebhookSignature => 400,
            ErrorCode::BillingNotConfigured => 503,
            ErrorCode::BillingProviderError => 502,
            ErrorCode::NoBillingCustomer => 409,
            ErrorCode::BillingEventNotFound => 404,
            ErrorCode::AlreadySubscribed => 409,
            ErrorCode::InvalidManifest => 400,
            ErrorCode::BundleTooLarge => 413,
            ErrorCode::ArtifactNotFound => 404,
            ErrorCode::RestoreFailed => 502,
            ErrorCode::RestoreInProgress => 409,
            ErrorCode::DeployInProgress => 409,
        }
    }

    /// Whether the same request may succeed if simply retried later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::InternalError
                | ErrorCode::DependencyUnavailable
                | ErrorCode::RequestLimitExceeded
                | ErrorCode::DeployLimitReached
                | ErrorCode::RateLimited
                | ErrorCode::UpstreamUnreachable
                | ErrorCode::UpstreamTimeout
                | ErrorCode::UpstreamInterrupted
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure on its way to the client. `internal_cause` is for the operator's log only and is never serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
    pub internal_cause: Option<String>,
    /// Set when retrying depends on more than the code (an agent's own HTTP status, an agent's error event).
    pub retryable_override: Option<bool>,
    /// Headers the response must carry (e.g. `Retry-After` and `X-RateLimit-*` on a 429).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
            internal_cause: None,
            retryable_override: None,
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A 500 whose cause is logged with the request id but hidden from the caller.
    pub fn internal(cause: impl fmt::Display) -> Self {
        ApiError {
            code: ErrorCode::InternalError,
            message:
                "An internal error occurred. Retry later; quote the request id if it persists."
                    .into(),
            details: None,
            internal_cause: Some(cause.to_string()),
            retryable_override: None,
            headers: Vec::new(),
        }
    }

    /// 503 `dependency_unavailable`: something this request needs (the database, a Durable Object, the identity
    /// provider) could not be reached. `message` tells the caller what it means for them; `cause` is logged only.
    pub fn unavailable(message: impl Into<String>, cause: impl fmt::Display) -> Self {
        ApiError {
            internal_cause: Some(cause.to_string()),
            ..ApiError::new(ErrorCode::DependencyUnavailable, message)
        }
    }

    /// A failed value rule on one named input field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(ErrorCode::ValidationFailed, message.clone())
            .with_details(serde_json::json!({ "field": field, "reason": message }))
    }

    pub fn agent_not_found() -> Self {
        ApiError::new(ErrorCode::AgentNotFound, "No agent with this id exists.")
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn retryable(&self) -> bool {
        self.retryable_override
            .unwrap_or_else(|| self.code.retryable())
    }

    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.headers.extend(headers);
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case_and_map_to_error_statuses() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{s} is not snake_case"
            );
            assert!((400..600).contains(&code.status()), "{s}");
        }
    }

    #[test]
    fn only_transient_server_failures_are_retryable() {
        for code in ErrorCode::ALL {
            if code.retryable() {
                assert!(
                    code.status() >= 500 || code.status() == 429,
                    "{code} is a 4xx marked retryable"
                );
            }
        }
        assert!(!ErrorCode::ServerMisconfigured.retryable());
        assert!(ErrorCode::DependencyUnavailable.retryable());
    }

    #[test]
    fn internal_errors_keep_the_cause_out_of_the_message() {
        let err = ApiError::internal("D1_ERROR: no such table: agents");
        assert_eq!(err.code, ErrorCode::InternalError);
        assert!(!err.message.contains("D1_ERROR"));
        assert_eq!(
            err.internal_cause.as_deref(),
            Some("D1_ERROR: no such table: agents")
        );
    }
}
