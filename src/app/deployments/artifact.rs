//! A deployment's artifact: every module it was deployed with and its manifest, stored content-addressed (by the
//! deployment's `codeSha256`) so the same code is stored once and any deployment can be shown — and uploaded
//! again when the clean-up job has removed its script — from it. Never a secret: secrets are bound at deploy time, not part of the code.

use crate::domain::bundle::{content_address, BundleModule, ModuleKind};
use crate::domain::deployment::{CodeAddress, DeploySpec, Deployment};
use crate::domain::{ApiError, ErrorCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long after its agent was deleted an artifact only that agent used is removed.
pub const ARTIFACT_GRACE_MS: i64 = 7 * crate::app::retention::DAY_MS;
/// How long a claim on an orphaned artifact stands before the clean-up job removes it: longer than any deploy
/// (`DEPLOY_TIMEOUT_MS`), so a deploy of the same code recorded around the claim has cleared it by then.
pub const ARTIFACT_CLAIM_MS: i64 = 15 * 60 * 1000;

/// The object key of the artifact with content address `sha256`.
pub fn key(sha256: &str) -> String {
    format!("artifacts/{sha256}.json")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredModule {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: usize,
    sha256: String,
    base64: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    version: u32,
    manifest: Value,
    modules: Vec<StoredModule>,
}

fn stored_module(name: &str, kind: ModuleKind, bytes: &[u8]) -> StoredModule {
    StoredModule {
        name: name.to_owned(),
        kind: kind.as_str().to_owned(),
        size: bytes.len(),
        sha256: crate::crypto::sha256_hex(bytes),
        base64: STANDARD.encode(bytes),
    }
}

/// The layout `encode` writes; `read` refuses any other (an artifact whose address is not checked is not used).
const VERSION: u32 = 2;

/// The artifact of `spec` as stored: the manifest its content address covers (a single module's settings as a
/// bundle of one, or the bundle's manifest) and every module with its bytes.
pub fn encode(spec: &DeploySpec) -> Vec<u8> {
    let mut modules = vec![stored_module(
        &spec.main_module_name,
        ModuleKind::EsModule,
        spec.module_code.as_bytes(),
    )];
    modules.extend(
        spec.extra_modules
            .iter()
            .map(|m| stored_module(&m.name, m.kind, &m.bytes)),
    );
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    let stored = Stored {
        version: VERSION,
        manifest: spec.address.manifest.clone(),
        modules,
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// Reads an artifact stored under `sha256` and checks it is what that address names: every module against its
/// hash, and the manifest and modules together against the address. Anything else is never shown or uploaded.
fn read(sha256: &str, stored: &[u8]) -> Result<(Value, Vec<BundleModule>), String> {
    let stored: Stored =
        serde_json::from_slice(stored).map_err(|e| format!("artifact {sha256}: {e}"))?;
    if stored.version != VERSION {
        return Err(format!(
            "artifact {sha256}: layout {} is not {VERSION}",
            stored.version
        ));
    }
    let mut modules = Vec::with_capacity(stored.modules.len());
    for m in &stored.modules {
        let bytes = STANDARD
            .decode(&m.base64)
            .map_err(|e| format!("artifact {sha256}: module {}: {e}", m.name))?;
        let kind = ModuleKind::parse(&m.kind)
            .ok_or_else(|| format!("artifact {sha256}: module {} has type {}", m.name, m.kind))?;
        if crate::crypto::sha256_hex(&bytes) != m.sha256 {
            return Err(format!(
                "artifact {sha256}: module {} does not match its hash",
                m.name
            ));
        }
        modules.push(BundleModule {
            name: m.name.clone(),
            kind,
            bytes,
        });
    }
    let summary: Vec<(String, &str, String)> = stored
        .modules
        .iter()
        .map(|m| (m.name.clone(), m.kind.as_str(), m.sha256.clone()))
        .collect();
    if content_address(&stored.manifest, &summary) != sha256 {
        return Err(format!(
            "artifact {sha256}: its content has another address"
        ));
    }
    Ok((stored.manifest, modules))
}

/// What `GET …/artifact` shows: the manifest and the modules' names, types, sizes and hashes — never the bytes.
/// The manifest is the one the address covers, so it is the deployment's own.
pub fn view(sha256: &str, stored: &[u8]) -> Result<Value, ApiError> {
    let (manifest, modules) = read(sha256, stored).map_err(ApiError::internal)?;
    Ok(json!({
        "codeSha256": sha256,
        "manifest": manifest,
        "modules": modules.iter().map(|m| json!({ "name": m.name, "type": m.kind.as_str(), "size": m.bytes.len(), "sha256": crate::crypto::sha256_hex(&m.bytes) })).collect::<Vec<_>>(),
    }))
}

/// The spec `deployment` was uploaded from, rebuilt from its artifact: the code and the compatibility flags (both
/// covered by the address) from the artifact, the settings from the deployment itself.
pub fn decode(deployment: &Deployment, stored: &[u8]) -> Result<DeploySpec, String> {
    let sha256 = &deployment.code_sha256;
    let (manifest, mut modules) = read(sha256, stored)?;
    let main = modules
        .iter()
        .position(|m| m.name == deployment.main_module_name)
        .map(|i| modules.remove(i))
        .ok_or_else(|| {
            format!(
                "artifact {sha256}: the main module {} is missing",
                deployment.main_module_name
            )
        })?;
    Ok(DeploySpec {
        module_code: String::from_utf8(main.bytes)
            .map_err(|_| format!("artifact {sha256}: the main module is not UTF-8"))?,
        source: "custom",
        main_module_name: deployment.main_module_name.clone(),
        compatibility_date: deployment.compatibility_date.clone(),
        invoke_path: deployment.invoke_path.clone(),
        env: deployment.env.clone(),
        extra_modules: modules,
        compatibility_flags: manifest["compatibilityFlags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        address: CodeAddress {
            sha256: sha256.clone(),
            manifest,
        },
    })
}

pub fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::ArtifactNotFound,
        "This deployment has no stored artifact (it was made before artifacts were kept, or it is being stored).",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bundle::Bundle;
    use std::collections::BTreeMap;

    fn spec() -> DeploySpec {
        let env = BTreeMap::from([("MODE".to_owned(), "x".to_owned())]);
        let bundle = Bundle {
            manifest: crate::domain::bundle::Manifest::parse(
                br#"{"main":"src/index.js","compatibilityFlags":["nodejs_compat"],"vars":{"MODE":"x"}}"#,
            )
            .unwrap(),
            modules: vec![
                BundleModule {
                    name: "src/index.js".into(),
                    kind: ModuleKind::EsModule,
                    bytes: b"export default {}".to_vec(),
                },
                BundleModule {
                    name: "add.wasm".into(),
                    kind: ModuleKind::Wasm,
                    bytes: b"\0asm\x01\0\0\0".to_vec(),
                },
            ],
        };
        DeploySpec {
            module_code: "export default {}".into(),
            source: "custom",
            main_module_name: "src/index.js".into(),
            compatibility_date: "2026-07-30".into(),
            invoke_path: "/invoke".into(),
            env,
            extra_modules: vec![bundle.modules[1].clone()],
            compatibility_flags: vec!["nodejs_compat".into()],
            address: CodeAddress::of(&bundle),
        }
    }

    fn deployment_of(spec: &DeploySpec) -> Deployment {
        use crate::domain::deployment::DeploymentStatus;
        use crate::domain::ids::{AgentId, DeploymentId, UserId};
        let id = DeploymentId::generate();
        Deployment {
            script_name: crate::domain::deployment::script_name_for(&id),
            id,
            agent_id: AgentId::generate(),
            user_id: UserId::generate(),
            version: 1,
            status: DeploymentStatus::Inactive,
            runtime_provider: "cloudflare".into(),
            deploy_target: "workers_dev".into(),
            main_module_name: spec.main_module_name.clone(),
            compatibility_date: "2026-08-01".into(),
            invoke_path: "/run".into(),
            source: "custom".into(),
            code_sha256: spec.address.sha256.clone(),
            env: BTreeMap::from([("MODE".to_owned(), "row".to_owned())]),
            provider_ref: None,
            error: None,
            retries: 0,
            created_at: 0,
            updated_at: 0,
            finished_at: None,
            container_uri: None,
            execution_role_arn: None,
        }
    }

    #[test]
    fn an_artifact_holds_every_module_and_shows_none_of_their_bytes() {
        let spec = spec();
        let stored = encode(&spec);
        let shown = view(&spec.address.sha256, &stored).unwrap();
        assert_eq!(shown["manifest"]["main"], "src/index.js");
        assert_eq!(shown["manifest"]["vars"]["MODE"], "x");
        let modules = shown["modules"].as_array().unwrap();
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0]["name"], "add.wasm");
        assert_eq!(modules[0]["type"], "wasm");
        assert_eq!(modules[0]["size"], 8);
        assert!(!shown.to_string().contains("base64"), "no bytes are shown");
        assert_eq!(key("abc"), "artifacts/abc.json");
        assert!(view("abc", b"not json").is_err());
    }

    #[test]
    fn what_comes_back_is_the_code_with_the_deployments_own_settings() {
        let spec = spec();
        let stored = encode(&spec);
        let deployment = deployment_of(&spec);
        let restored = decode(&deployment, &stored).unwrap();
        assert_eq!(restored.module_code, spec.module_code);
        assert_eq!(restored.extra_modules, spec.extra_modules);
        assert_eq!(restored.compatibility_flags, spec.compatibility_flags);
        // Settings come from the deployment, never from whoever stored the same code first.
        assert_eq!(restored.env["MODE"], "row");
        assert_eq!(
            (
                restored.compatibility_date.as_str(),
                restored.invoke_path.as_str()
            ),
            ("2026-08-01", "/run")
        );
    }

    #[test]
    fn an_artifact_that_is_not_what_its_address_names_is_refused() {
        let spec = spec();
        let stored = encode(&spec);
        let deployment = deployment_of(&spec);
        let tamper = |edit: &dyn Fn(&mut Value)| {
            let mut v: Value = serde_json::from_slice(&stored).unwrap();
            edit(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        // Damaged bytes.
        let damaged =
            tamper(&|v| v["modules"][0]["base64"] = json!(STANDARD.encode(b"\0asm\x01\0\0\x02")));
        assert!(decode(&deployment, &damaged)
            .unwrap_err()
            .contains("does not match its hash"));
        // Other flags than the address covers (someone else's settings stored under this address).
        let flags = tamper(&|v| v["manifest"]["compatibilityFlags"] = json!(["other"]));
        assert!(decode(&deployment, &flags)
            .unwrap_err()
            .contains("another address"));
        assert!(view(&spec.address.sha256, &flags).is_err());
        // A module swapped for another, with its own matching hash.
        let swapped = tamper(&|v| {
            v["modules"][1]["base64"] = json!(STANDARD.encode(b"export default 1"));
            v["modules"][1]["sha256"] = json!(crate::crypto::sha256_hex(b"export default 1"));
        });
        assert!(decode(&deployment, &swapped)
            .unwrap_err()
            .contains("another address"));
        // The old layout, whose address did not cover the settings.
        let old = tamper(&|v| v["version"] = json!(1));
        assert!(decode(&deployment, &old).is_err());
    }

    #[test]
    fn one_module_with_other_settings_is_other_content() {
        let env = BTreeMap::new();
        let a = CodeAddress::of(&Bundle::of_one_module(
            "index.mjs",
            "x",
            "2026-01-01",
            &env,
            "/invoke",
        ));
        let b = CodeAddress::of(&Bundle::of_one_module(
            "index.mjs",
            "x",
            "2026-01-02",
            &env,
            "/invoke",
        ));
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let c = CodeAddress::of(&Bundle::of_one_module(
            "index.mjs",
            "x",
            "2026-01-01",
            &vars,
            "/invoke",
        ));
        assert_ne!(a.sha256, b.sha256);
        assert_ne!(a.sha256, c.sha256);
        assert_ne!(
            a.sha256,
            crate::crypto::sha256_hex(b"x"),
            "never the bare module's hash"
        );
    }
}
