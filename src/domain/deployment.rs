//! Deployments: immutable records of one upload of an agent's code, with the status state machine
//! (DESIGN.md §4.2) and the validation of a deploy request.

use super::entitlements::KNOWN_RUNTIME_PROVIDERS;
use super::error::{ApiError, ErrorCode};
use super::ids::{AgentId, DeploymentId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `deploying → active | failed`, `active → inactive` (superseded), `inactive → active` (rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Deploying,
    Active,
    Failed,
    Inactive,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 4] = [
        DeploymentStatus::Deploying,
        DeploymentStatus::Active,
        DeploymentStatus::Failed,
        DeploymentStatus::Inactive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Deploying => "deploying",
            DeploymentStatus::Active => "active",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Inactive => "inactive",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        DeploymentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
    }

    /// Whether a deployment may go from `self` to `next`. A deployment that finished deploying successfully but
    /// was overtaken by a newer one goes straight to `inactive`.
    pub fn can_become(self, next: DeploymentStatus) -> bool {
        use DeploymentStatus::*;
        matches!(
            (self, next),
            (Deploying, Active)
                | (Deploying, Failed)
                | (Deploying, Inactive)
                | (Active, Inactive)
                | (Inactive, Active)
        )
    }

    /// Only deployments that deployed successfully may receive the routing pointer.
    pub fn deployed_successfully(self) -> bool {
        matches!(self, DeploymentStatus::Active | DeploymentStatus::Inactive)
    }
}

/// Where a failed deployment stopped, for the owner to debug: no secrets, no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentError {
    pub step: String,
    pub endpoint: Option<String>,
    pub kind: String,
    pub status: Option<u16>,
    pub provider_codes: Vec<i64>,
    pub message: String,
}

impl DeploymentError {
    /// A failure on the platform's side of a deploy (no provider call involved): no endpoint, status or codes.
    pub fn platform(step: &str, kind: &str, message: impl Into<String>) -> Self {
        DeploymentError {
            step: step.into(),
            endpoint: None,
            kind: kind.into(),
            status: None,
            provider_codes: Vec::new(),
            message: message.into(),
        }
    }

    /// The error with the platform's account id replaced by `{account}` (it is the platform's, not the
    /// user's): in the endpoint and in the provider's message.
    pub fn without_account(self, account: &str) -> Self {
        if account.is_empty() {
            return self;
        }
        let redact = |text: &str| text.replace(account, "{account}");
        DeploymentError {
            endpoint: self.endpoint.as_deref().map(redact),
            message: redact(&self.message),
            ..self
        }
    }
}

/// A deployment as stored and returned. Only `status`, `provider_ref`, `error` and the timestamps that record
/// those changes are ever updated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: DeploymentId,
    pub agent_id: AgentId,
    #[serde(skip)]
    pub user_id: UserId,
    pub version: i64,
    pub status: DeploymentStatus,
    pub runtime_provider: String,
    pub deploy_target: String,
    pub script_name: String,
    pub main_module_name: String,
    pub compatibility_date: String,
    pub invoke_path: String,
    /// `template` or `custom`.
    pub source: String,
    pub code_sha256: String,
    /// Plain (non-secret) environment variables the request set.
    pub env: BTreeMap<String, String>,
    /// Where the runtime reaches it: a URL (workers.dev) or `namespace/script`.
    pub provider_ref: Option<String>,
    pub error: Option<DeploymentError>,
    /// Provider calls that failed transiently and were retried (a busy provider), so far.
    pub retries: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// AgentCore: the image this deployment runs (absent for Cloudflare deployments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_uri: Option<String>,
    /// AgentCore: the IAM role its runtime version runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

/// The script name on the provider: unique per deployment, valid as a Workers script name (lowercase
/// letters, digits, `-`; at most 63 characters).
pub fn script_name_for(id: &DeploymentId) -> String {
    format!("wh-{}", id.as_str().replace('_', "-"))
}

/// `POST /v1/agents/{agentId}/deploy` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeployRequest {
    #[serde(default)]
    pub module_code: Option<String>,
    /// Seed 001's `runtimeProvider`; `cloudflare` when absent.
    #[serde(default)]
    pub runtime_provider: Option<String>,
    #[serde(default)]
    pub main_module_name: Option<String>,
    #[serde(default)]
    pub compatibility_date: Option<String>,
    #[serde(default)]
    pub invoke_path: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, Value>>,
    /// AgentCore: the container image (an Amazon ECR URI) the deployment runs.
    #[serde(default)]
    pub container_uri: Option<String>,
    /// AgentCore: the IAM role the runtime runs as; the platform's `AGENTCORE_EXECUTION_ROLE_ARN` when absent.
    #[serde(default)]
    pub execution_role_arn: Option<String>,
}

/// An AgentCore deploy after validation: the image, the role, the plain variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub container_uri: String,
    pub execution_role_arn: String,
    pub env: BTreeMap<String, String>,
}

/// The path an AgentCore runtime serves invocations on (its HTTP protocol contract).
pub const AGENTCORE_INVOKE_PATH: &str = "/invocations";

impl ImageSpec {
    /// The content address of what the deployment runs: the image, the role and the variables.
    pub fn sha256(&self) -> String {
        crate::crypto::sha256_hex(
            serde_json::json!({ "containerUri": self.container_uri, "executionRoleArn": self.execution_role_arn, "env": self.env })
                .to_string()
                .as_bytes(),
        )
    }
}

/// A deploy request after validation and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    pub module_code: String,
    pub source: &'static str,
    pub main_module_name: String,
    pub compatibility_date: String,
    pub invoke_path: String,
    pub env: BTreeMap<String, String>,
    /// A bundle's other modules (none for a single-module deploy), uploaded beside the main one.
    pub extra_modules: Vec<crate::domain::bundle::BundleModule>,
    pub compatibility_flags: Vec<String>,
    /// The content address (`domain::bundle::content_address`), recorded as the deployment's `codeSha256`, and
    /// the manifest it covers: a single module's settings as a bundle of one, or the bundle's own manifest.
    pub address: CodeAddress,
}

/// What a deployment's code is stored under, and the manifest that address covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeAddress {
    pub sha256: String,
    pub manifest: Value,
}

impl CodeAddress {
    pub fn of(bundle: &crate::domain::bundle::Bundle) -> Self {
        CodeAddress {
            sha256: bundle.content_hash(),
            manifest: bundle.manifest_value(),
        }
    }
}

pub const MAX_MODULE_BYTES: usize = 1024 * 1024;
pub const MAX_ENV_VARS: usize = 32;
pub const MAX_ENV_VALUE_BYTES: usize = 4096;
pub const DEFAULT_INVOKE_PATH: &str = "/invoke";
/// Seed 001's default; `index.js` (and any other `.js`/`.mjs` name) is accepted when given.
pub const DEFAULT_MAIN_MODULE: &str = "index.mjs";

/// Bindings the platform injects into every deployment: an agent's env vars and secrets may not shadow them.
pub const RESERVED_BINDINGS: &[&str] = &[
    "TELEMETRY_SECRET",
    "GATEWAY_SECRET",
    "TELEMETRY_REPORT_URL",
    "USER_ID",
    "AGENT_ID",
    "DEPLOYMENT_ID",
    "RUNTIME_PROVIDER",
    "INVOKE_PATH",
];

/// Environment-variable style names: `[A-Z_][A-Z0-9_]*`, at most 64 characters.
pub fn is_binding_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_date(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&value[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&value[8..10].parse::<u32>().unwrap_or(0))
}

/// A deploy's plain variables: at most 32, named like bindings, never the platform's own, string values of at
/// most 4096 bytes.
fn validate_env(raw_env: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    if raw_env.len() > MAX_ENV_VARS {
        return Err(ApiError::validation("env", "at most 32 variables"));
    }
    let mut env = BTreeMap::new();
    for (name, value) in raw_env {
        let field = format!("env.{name}");
        if !is_binding_name(&name) {
            return Err(ApiError::validation(
                &field,
                "names must match [A-Z_][A-Z0-9_]* (at most 64)",
            ));
        }
        if RESERVED_BINDINGS.contains(&name.as_str()) {
            return Err(ApiError::validation(
                &field,
                "is set by the platform and cannot be overridden",
            ));
        }
        let Value::String(value) = value else {
            return Err(ApiError::validation(&field, "values must be strings"));
        };
        if value.len() > MAX_ENV_VALUE_BYTES {
            return Err(ApiError::validation(
                &field,
                "values must be at most 4096 bytes",
            ));
        }
        env.insert(name, value);
    }
    Ok(env)
}

impl DeployRequest {
    /// The runtime the deploy asks for: a known provider (`validation_failed` otherwise), `cloudflare` by default.
    /// Whether the caller may use it is the entitlements' to say.
    pub fn runtime_provider(&self) -> Result<&str, ApiError> {
        match self.runtime_provider.as_deref() {
            None => Ok("cloudflare"),
            Some(p) if KNOWN_RUNTIME_PROVIDERS.contains(&p) => Ok(p),
            Some(_) => Err(ApiError::validation(
                "runtimeProvider",
                format!("must be one of {}", KNOWN_RUNTIME_PROVIDERS.join(", ")),
            )),
        }
    }

    /// Validates an AgentCore deploy: an image, optionally a role (one of `allowed_roles`, the operator's; else
    /// `default_role`), plain variables; none of the fields that only code deploys have.
    pub fn validate_image(
        self,
        default_role: &str,
        allowed_roles: &[String],
        allowed_image_prefixes: &[String],
    ) -> Result<ImageSpec, ApiError> {
        for (field, given) in [
            ("moduleCode", self.module_code.is_some()),
            ("mainModuleName", self.main_module_name.is_some()),
            ("compatibilityDate", self.compatibility_date.is_some()),
            ("invokePath", self.invoke_path.is_some()),
        ] {
            if given {
                return Err(ApiError::validation(
                    field,
                    "is for cloudflare deploys; an agentcore deploy names a containerUri",
                ));
            }
        }
        let container_uri = self.container_uri.ok_or_else(|| {
            ApiError::validation(
                "containerUri",
                "is required for an agentcore deploy (an Amazon ECR image URI)",
            )
        })?;
        if !crate::aws::agentcore::is_container_uri(&container_uri) {
            return Err(ApiError::validation(
                "containerUri",
                "must be an Amazon ECR image URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY[:TAG|@DIGEST] or public.ecr.aws/…)",
            ));
        }
        if !allowed_image_prefixes.is_empty()
            && !allowed_image_prefixes
                .iter()
                .any(|p| container_uri.starts_with(p.as_str()))
        {
            return Err(ApiError::validation(
                "containerUri",
                "is not in a repository this platform runs agents from (ask the operator)",
            ));
        }
        let execution_role_arn = self
            .execution_role_arn
            .unwrap_or_else(|| default_role.to_owned());
        if !allowed_roles.contains(&execution_role_arn) {
            return Err(ApiError::validation(
                "executionRoleArn",
                "must be one of the roles this platform lets deployments run as (ask the operator)",
            ));
        }
        Ok(ImageSpec {
            container_uri,
            execution_role_arn,
            env: validate_env(self.env.unwrap_or_default())?,
        })
    }

    /// Validates and fills defaults; `template` is deployed when no `moduleCode` is given.
    pub fn validate(
        self,
        template: &str,
        default_compatibility_date: &str,
    ) -> Result<DeploySpec, ApiError> {
        self.validate_within(template, default_compatibility_date, MAX_MODULE_BYTES)
    }

    /// `validate` with the main module allowed up to `max_module_bytes` (a bundle's own limits, checked when it
    /// was assembled, are larger than a JSON deploy's).
    pub fn validate_within(
        self,
        template: &str,
        default_compatibility_date: &str,
        max_module_bytes: usize,
    ) -> Result<DeploySpec, ApiError> {
        for (field, given) in [
            ("containerUri", self.container_uri.is_some()),
            ("executionRoleArn", self.execution_role_arn.is_some()),
        ] {
            if given {
                return Err(ApiError::validation(
                    field,
                    "is for agentcore deploys; set runtimeProvider to agentcore",
                ));
            }
        }
        let (module_code, source) = match self.module_code {
            Some(code) if code.trim().is_empty() => {
                return Err(ApiError::validation(
                    "moduleCode",
                    "must not be empty; omit it to deploy the template",
                ))
            }
            Some(code) if code.len() > max_module_bytes => {
                return Err(ApiError::validation(
                    "moduleCode",
                    format!("must be at most {} bytes", max_module_bytes),
                ))
            }
            Some(code) => (code, "custom"),
            None => (template.to_owned(), "template"),
        };
        let main_module_name = self
            .main_module_name
            .unwrap_or_else(|| DEFAULT_MAIN_MODULE.into());
        // A relative path (a bundle's main module may sit in a folder), never one of the platform's own modules
        // (the gateway guard is `__webhost…`).
        if !crate::domain::bundle::is_module_name(&main_module_name)
            || !(main_module_name.ends_with(".js") || main_module_name.ends_with(".mjs"))
            || main_module_name.starts_with('.')
        {
            return Err(ApiError::validation(
                "mainModuleName",
                "must be a relative path ending in .js or .mjs (letters, digits, '.', '_', '-', '/')",
            ));
        }
        let compatibility_date = self
            .compatibility_date
            .unwrap_or_else(|| default_compatibility_date.into());
        if !is_date(&compatibility_date) {
            return Err(ApiError::validation(
                "compatibilityDate",
                "must be a date YYYY-MM-DD",
            ));
        }
        let invoke_path = self
            .invoke_path
            .unwrap_or_else(|| DEFAULT_INVOKE_PATH.into());
        if !invoke_path.starts_with('/')
            || invoke_path.len() > 128
            || !invoke_path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
            // Dot segments would be normalised by the runtime: the path signed would not be the path seen.
            || invoke_path
                .split('/')
                .any(|segment| segment == "." || segment == "..")
        {
            return Err(ApiError::validation(
                "invokePath",
                "must be a path starting with '/' (letters, digits, '/', '-', '_', '.'; at most 128)",
            ));
        }
        let env = validate_env(self.env.unwrap_or_default())?;
        let address = CodeAddress::of(&crate::domain::bundle::Bundle::of_one_module(
            &main_module_name,
            &module_code,
            &compatibility_date,
            &env,
            &invoke_path,
        ));
        Ok(DeploySpec {
            module_code,
            source,
            main_module_name,
            compatibility_date,
            invoke_path,
            env,
            extra_modules: Vec::new(),
            compatibility_flags: Vec::new(),
            address,
        })
    }
}

/// Idempotency keys: 1–128 printable ASCII characters without spaces.
pub fn parse_idempotency_key(value: Option<&str>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(k) if !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 128 printable ASCII characters without spaces.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeploymentStatus::*;

    #[test]
    fn every_transition_is_listed() {
        let allowed = [
            (Deploying, Active),
            (Deploying, Failed),
            (Deploying, Inactive),
            (Active, Inactive),
            (Inactive, Active),
        ];
        for from in DeploymentStatus::ALL {
            for to in DeploymentStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn only_successful_deployments_may_be_routed_to() {
        assert!(Active.deployed_successfully());
        assert!(Inactive.deployed_successfully());
        assert!(!Deploying.deployed_successfully());
        assert!(!Failed.deployed_successfully());
        for s in DeploymentStatus::ALL {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn script_names_are_valid_workers_names() {
        let name = script_name_for(&DeploymentId::generate());
        assert!(name.len() <= 63);
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    }

    fn request(json: serde_json::Value) -> Result<DeploySpec, ApiError> {
        serde_json::from_value::<DeployRequest>(json)
            .unwrap()
            .validate("export default {}", "2026-07-30")
    }

    #[test]
    fn defaults_deploy_the_template() {
        let spec = request(serde_json::json!({})).unwrap();
        assert_eq!(spec.source, "template");
        assert_eq!(spec.module_code, "export default {}");
        assert_eq!(spec.main_module_name, "index.mjs", "seed 001's default");
        assert_eq!(spec.compatibility_date, "2026-07-30");
        assert_eq!(spec.invoke_path, "/invoke");
        let js = request(serde_json::json!({"mainModuleName": "index.js"})).unwrap();
        assert_eq!(js.main_module_name, "index.js", "still accepted");
    }

    #[test]
    fn the_platforms_module_names_and_dot_segments_are_refused() {
        let field =
            |body: serde_json::Value| request(body).unwrap_err().details.unwrap()["field"].clone();
        assert_eq!(
            field(serde_json::json!({"mainModuleName": "__webhost_gateway_guard.js"})),
            "mainModuleName"
        );
        for path in ["/a/../invoke", "/./invoke", "/.."] {
            assert_eq!(
                field(serde_json::json!({"invokePath": path})),
                "invokePath",
                "{path}"
            );
        }
        assert!(request(serde_json::json!({"invokePath": "/v1.2/invoke"})).is_ok());
    }

    #[test]
    fn the_runtime_provider_is_a_known_one_cloudflare_by_default() {
        let parse =
            |body: serde_json::Value| serde_json::from_value::<DeployRequest>(body).unwrap();
        assert_eq!(
            parse(serde_json::json!({})).runtime_provider().unwrap(),
            "cloudflare"
        );
        assert_eq!(
            parse(serde_json::json!({"runtimeProvider": "agentcore"}))
                .runtime_provider()
                .unwrap(),
            "agentcore"
        );
        let err = parse(serde_json::json!({"runtimeProvider": "lambda"}))
            .runtime_provider()
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed);
    }

    #[test]
    fn invalid_fields_name_themselves() {
        for (json, field) in [
            (serde_json::json!({"moduleCode": "  "}), "moduleCode"),
            (
                serde_json::json!({"moduleCode": "x".repeat(MAX_MODULE_BYTES + 1)}),
                "moduleCode",
            ),
            (
                serde_json::json!({"mainModuleName": "../x.js"}),
                "mainModuleName",
            ),
            (
                serde_json::json!({"mainModuleName": "index.ts"}),
                "mainModuleName",
            ),
            (
                serde_json::json!({"compatibilityDate": "2026-13-01"}),
                "compatibilityDate",
            ),
            (
                serde_json::json!({"compatibilityDate": "yesterday"}),
                "compatibilityDate",
            ),
            (serde_json::json!({"invokePath": "invoke"}), "invokePath"),
            (serde_json::json!({"invokePath": "/a b"}), "invokePath"),
            (serde_json::json!({"env": {"lower": "x"}}), "env.lower"),
            (
                serde_json::json!({"env": {"TELEMETRY_SECRET": "x"}}),
                "env.TELEMETRY_SECRET",
            ),
            (serde_json::json!({"env": {"N": 5}}), "env.N"),
            (
                serde_json::json!({"env": {"BIG": "x".repeat(4097)}}),
                "env.BIG",
            ),
        ] {
            let err = request(json.clone()).unwrap_err();
            assert_eq!(err.code, ErrorCode::ValidationFailed, "{json}");
            assert_eq!(err.details.unwrap()["field"], field, "{json}");
        }
        assert!(serde_json::from_value::<DeployRequest>(serde_json::json!({"code": "x"})).is_err());
    }

    #[test]
    fn binding_names() {
        for ok in ["A", "API_KEY", "_X1"] {
            assert!(is_binding_name(ok), "{ok}");
        }
        for bad in ["", "1A", "a", "A-B", "A B", &"A".repeat(65)] {
            assert!(!is_binding_name(bad), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(
            parse_idempotency_key(Some("retry-1")).unwrap(),
            Some("retry-1".into())
        );
        assert_eq!(parse_idempotency_key(None).unwrap(), None);
        for bad in ["", "has space", &"k".repeat(129)] {
            assert_eq!(
                parse_idempotency_key(Some(bad)).unwrap_err().code,
                ErrorCode::InvalidIdempotencyKey
            );
        }
    }
}
