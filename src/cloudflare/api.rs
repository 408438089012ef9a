//! Cloudflare API v4 calls as values: each builder returns the method, path, query and body of one request, so
//! every call the control plane makes is testable with no network. The platform adapter sends them.

use super::multipart::{self, Part};
use serde::Serialize;
use serde_json::{json, Value};

/// Which deploy step a call belongs to: carried into every failure so an operator knows where a deploy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Upload,
    Subdomain,
    Delete,
    /// Waiting for a new workers.dev URL to answer (Cloudflare propagates routes asynchronously).
    Live,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Upload => "upload",
            Step::Subdomain => "subdomain",
            Step::Delete => "delete",
            Step::Live => "live",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    None,
    Json(Value),
    Multipart { boundary: String, bytes: Vec<u8> },
}

/// One API call, relative to the configured base URL (`https://api.cloudflare.com/client/v4` in production).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub step: Step,
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Body,
}

impl ApiRequest {
    /// `METHOD /path`: how failures name the endpoint (no query, no body, no credentials).
    pub fn endpoint(&self) -> String {
        format!("{} {}", self.method.as_str(), self.path)
    }

    pub fn content_type(&self) -> Option<String> {
        match &self.body {
            Body::None => None,
            Body::Json(_) => Some("application/json".into()),
            Body::Multipart { boundary, .. } => {
                Some(format!("multipart/form-data; boundary={boundary}"))
            }
        }
    }

    pub fn body_bytes(&self) -> Option<Vec<u8>> {
        match &self.body {
            Body::None => None,
            Body::Json(v) => Some(v.to_string().into_bytes()),
            Body::Multipart { bytes, .. } => Some(bytes.clone()),
        }
    }

    /// Path plus encoded query string.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let query: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        format!("{}?{}", self.path, query.join("&"))
    }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A binding injected into the script's `env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    PlainText { name: String, text: String },
    SecretText { name: String, text: String },
}

impl Binding {
    fn to_json(&self) -> Value {
        match self {
            Binding::PlainText { name, text } => {
                json!({ "type": "plain_text", "name": name, "text": text })
            }
            Binding::SecretText { name, text } => {
                json!({ "type": "secret_text", "name": name, "text": text })
            }
        }
    }
}

/// A module of the script. The content type tells the runtime how to load it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// ES module JavaScript, the type the Workers API expects for `main_module`.
pub const JS_MODULE: &str = "application/javascript+module";

/// The `metadata` part of a script upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptMetadata {
    pub main_module: String,
    pub compatibility_date: String,
    pub compatibility_flags: Vec<String>,
    pub bindings: Vec<Binding>,
    pub tags: Vec<String>,
}

impl ScriptMetadata {
    pub fn to_json(&self) -> Value {
        json!({
            "main_module": self.main_module,
            "compatibility_date": self.compatibility_date,
            "compatibility_flags": self.compatibility_flags,
            "bindings": self.bindings.iter().map(Binding::to_json).collect::<Vec<_>>(),
            "tags": self.tags,
        })
    }
}

/// Where scripts go: the account's own workers (each reachable on workers.dev), or a Workers for Platforms
/// dispatch namespace (reached only through the namespace binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployTarget {
    WorkersDev {
        account_id: String,
    },
    DispatchNamespace {
        account_id: String,
        namespace: String,
    },
}

impl DeployTarget {
    /// The platform's Cloudflare account (never shown to users).
    pub fn account_id(&self) -> &str {
        match self {
            DeployTarget::WorkersDev { account_id }
            | DeployTarget::DispatchNamespace { account_id, .. } => account_id,
        }
    }
}

impl DeployTarget {
    fn scripts_path(&self) -> String {
        match self {
            DeployTarget::WorkersDev { account_id } => {
                format!("/accounts/{account_id}/workers/scripts")
            }
            DeployTarget::DispatchNamespace {
                account_id,
                namespace,
            } => {
                format!("/accounts/{account_id}/workers/dispatch/namespaces/{namespace}/scripts")
            }
        }
    }

    fn script_path(&self, script: &str) -> String {
        format!("{}/{script}", self.scripts_path())
    }

    /// `PUT …/scripts/{script}` as multipart: the `metadata` part, then one part per module.
    pub fn upload(
        &self,
        script: &str,
        metadata: &ScriptMetadata,
        modules: &[Module],
        boundary: &str,
    ) -> ApiRequest {
        let mut parts = vec![Part {
            name: "metadata".into(),
            filename: None,
            content_type: "application/json".into(),
            bytes: metadata.to_json().to_string().into_bytes(),
        }];
        parts.extend(modules.iter().map(|m| Part {
            name: m.name.clone(),
            filename: Some(m.name.clone()),
            content_type: m.content_type.into(),
            bytes: m.bytes.clone(),
        }));
        ApiRequest {
            step: Step::Upload,
            method: Method::Put,
            path: self.script_path(script),
            // As wrangler asks: the answer describes the script without echoing its code back.
            query: vec![("excludeScript".into(), "true".into())],
            body: Body::Multipart {
                boundary: boundary.into(),
                bytes: multipart::encode(boundary, &parts),
            },
        }
    }

    /// `POST /accounts/{id}/workers/scripts/{script}/subdomain {"enabled":true}`; dispatch namespace scripts have
    /// no workers.dev route, so there is nothing to call.
    pub fn enable_subdomain(&self, script: &str) -> Option<ApiRequest> {
        match self {
            DeployTarget::WorkersDev { .. } => Some(ApiRequest {
                step: Step::Subdomain,
                method: Method::Post,
                path: format!("{}/subdomain", self.script_path(script)),
                query: Vec::new(),
                // No version is reachable at a preview URL: only the deployed one, through its guard.
                body: Body::Json(json!({ "enabled": true, "previews_enabled": false })),
            }),
            DeployTarget::DispatchNamespace { .. } => None,
        }
    }

    /// `DELETE …/scripts/{script}?force=true` (force: also when bindings reference it).
    pub fn delete(&self, script: &str) -> ApiRequest {
        ApiRequest {
            step: Step::Delete,
            method: Method::Delete,
            path: self.script_path(script),
            query: vec![("force".into(), "true".into())],
            body: Body::None,
        }
    }

    /// Dispatch namespaces only (the account's own scripts API has no tag filter): `DELETE
    /// …/scripts?tags=<tag>:yes`, every script carrying `tag` at once. The clean-up job deletes by tag rather
    /// than listing and deleting each script, so no paginated list has to be followed to its end.
    pub fn delete_by_tag(&self, tag: &str) -> Option<ApiRequest> {
        matches!(self, DeployTarget::DispatchNamespace { .. }).then(|| ApiRequest {
            step: Step::Delete,
            method: Method::Delete,
            path: self.scripts_path(),
            query: vec![("tags".into(), format!("{tag}:yes"))],
            body: Body::None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wfp() -> DeployTarget {
        DeployTarget::DispatchNamespace {
            account_id: "acc1".into(),
            namespace: "agents".into(),
        }
    }

    fn dev() -> DeployTarget {
        DeployTarget::WorkersDev {
            account_id: "acc1".into(),
        }
    }

    fn metadata() -> ScriptMetadata {
        ScriptMetadata {
            main_module: "index.js".into(),
            compatibility_date: "2026-07-30".into(),
            compatibility_flags: vec!["nodejs_compat".into()],
            bindings: vec![
                Binding::PlainText {
                    name: "AGENT_ID".into(),
                    text: "agt_1".into(),
                },
                Binding::SecretText {
                    name: "API_KEY".into(),
                    text: "s3cr3t".into(),
                },
            ],
            tags: vec!["user-usr_1".into(), "agent-agt_1".into()],
        }
    }

    #[test]
    fn upload_paths_for_both_targets() {
        let m = metadata();
        let module = Module {
            name: "index.js".into(),
            content_type: JS_MODULE,
            bytes: b"export default {}".to_vec(),
        };
        let a = dev().upload("s1", &m, std::slice::from_ref(&module), "B");
        assert_eq!(a.endpoint(), "PUT /accounts/acc1/workers/scripts/s1");
        let b = wfp().upload("s1", &m, &[module], "B");
        assert_eq!(
            b.endpoint(),
            "PUT /accounts/acc1/workers/dispatch/namespaces/agents/scripts/s1"
        );
        assert_eq!(b.content_type().unwrap(), "multipart/form-data; boundary=B");
        assert_eq!(
            a.path_and_query(),
            "/accounts/acc1/workers/scripts/s1?excludeScript=true"
        );
    }

    #[test]
    fn upload_metadata_matches_the_api_fixture() {
        let expected: Value =
            serde_json::from_str(include_str!("fixtures/upload_metadata.json")).unwrap();
        assert_eq!(metadata().to_json(), expected);
        let module = Module {
            name: "index.js".into(),
            content_type: JS_MODULE,
            bytes: b"export default {}".to_vec(),
        };
        let body = String::from_utf8(
            dev()
                .upload("s1", &metadata(), &[module], "B")
                .body_bytes()
                .unwrap(),
        )
        .unwrap();
        assert!(body.contains("name=\"metadata\"\r\nContent-Type: application/json"));
        assert!(body.contains("filename=\"index.js\"\r\nContent-Type: application/javascript+module\r\n\r\nexport default {}"));
    }

    #[test]
    fn subdomain_and_delete() {
        let sub = dev().enable_subdomain("s1").unwrap();
        assert_eq!(
            sub.endpoint(),
            "POST /accounts/acc1/workers/scripts/s1/subdomain"
        );
        assert_eq!(
            sub.body,
            Body::Json(json!({"enabled": true, "previews_enabled": false}))
        );
        assert!(wfp().enable_subdomain("s1").is_none());
        assert_eq!(
            dev().delete("s1").path_and_query(),
            "/accounts/acc1/workers/scripts/s1?force=true"
        );
    }

    #[test]
    fn delete_by_tag_exists_only_for_dispatch_namespaces() {
        let del = wfp().delete_by_tag("agent-agt_1").unwrap();
        assert_eq!(del.method, Method::Delete);
        assert_eq!(
            del.path_and_query(),
            "/accounts/acc1/workers/dispatch/namespaces/agents/scripts?tags=agent-agt_1%3Ayes"
        );
        assert!(dev().delete_by_tag("x").is_none());
    }
}
