//! A deployment's artifact: every module it was deployed with and its manifest, stored content-addressed (by the
//! deployment's `codeSha256`) so the same code is stored once and any deployment can be shown — and uploaded
//! again when the clean-up job has removed its script — from it. Never a secret: secrets are bound at deploy time, not part of the code.

use crate::domain::bundle::{BundleModule, ModuleKind};
use crate::domain::deployment::DeploySpec;
use crate::domain::{ApiError, ErrorCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long after its agent was deleted an artifact only that agent used is removed.
pub const ARTIFACT_GRACE_MS: i64 = 7 * crate::app::retention::DAY_MS;

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

/// The artifact of `spec` as stored: the manifest (for a single module, the settings it was deployed with) and
/// every module with its bytes.
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
        version: 1,
        manifest: json!({
            "main": spec.main_module_name,
            "compatibilityDate": spec.compatibility_date,
            "compatibilityFlags": spec.compatibility_flags,
            "vars": spec.env,
            "invokePath": spec.invoke_path,
        }),
        modules,
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// What `GET …/artifact` shows: the manifest and the modules' names, types, sizes and hashes — never the bytes.
pub fn view(sha256: &str, stored: &[u8]) -> Result<Value, ApiError> {
    let stored: Stored = serde_json::from_slice(stored)
        .map_err(|e| ApiError::internal(format!("artifact {sha256}: {e}")))?;
    Ok(json!({
        "codeSha256": sha256,
        "manifest": stored.manifest,
        "modules": stored.modules.iter().map(|m| json!({ "name": m.name, "type": m.kind, "size": m.size, "sha256": m.sha256 })).collect::<Vec<_>>(),
    }))
}

/// The code and settings of a stored artifact, as the spec its deployment was uploaded from. Every module is
/// checked against the hash stored beside it, so damaged bytes are never uploaded.
pub fn decode(sha256: &str, stored: &[u8]) -> Result<DeploySpec, String> {
    let stored: Stored =
        serde_json::from_slice(stored).map_err(|e| format!("artifact {sha256}: {e}"))?;
    let text = |field: &str| {
        stored.manifest[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("artifact {sha256}: the manifest has no {field}"))
    };
    let main = text("main")?;
    let mut module_code = None;
    let mut extra_modules = Vec::new();
    for m in stored.modules {
        let bytes = STANDARD
            .decode(&m.base64)
            .map_err(|e| format!("artifact {sha256}: module {}: {e}", m.name))?;
        if crate::crypto::sha256_hex(&bytes) != m.sha256 {
            return Err(format!(
                "artifact {sha256}: module {} does not match its hash",
                m.name
            ));
        }
        if m.name == main {
            module_code = Some(
                String::from_utf8(bytes)
                    .map_err(|_| format!("artifact {sha256}: the main module is not UTF-8"))?,
            );
            continue;
        }
        let kind = ModuleKind::parse(&m.kind)
            .ok_or_else(|| format!("artifact {sha256}: module {} has type {}", m.name, m.kind))?;
        extra_modules.push(BundleModule {
            name: m.name,
            kind,
            bytes,
        });
    }
    let strings = |field: &str| -> Vec<(String, String)> {
        stored.manifest[field]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(DeploySpec {
        module_code: module_code
            .ok_or_else(|| format!("artifact {sha256}: the main module {main} is missing"))?,
        source: "custom",
        main_module_name: main,
        compatibility_date: text("compatibilityDate")?,
        invoke_path: text("invokePath")?,
        env: strings("vars").into_iter().collect(),
        extra_modules,
        compatibility_flags: stored.manifest["compatibilityFlags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        bundle_sha256: Some(sha256.to_owned()),
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
    use std::collections::BTreeMap;

    #[test]
    fn an_artifact_holds_every_module_and_shows_none_of_their_bytes() {
        let spec = DeploySpec {
            module_code: "export default {}".into(),
            source: "custom",
            main_module_name: "src/index.js".into(),
            compatibility_date: "2026-07-30".into(),
            invoke_path: "/invoke".into(),
            env: BTreeMap::from([("MODE".to_owned(), "x".to_owned())]),
            extra_modules: vec![BundleModule {
                name: "add.wasm".into(),
                kind: ModuleKind::Wasm,
                bytes: b"\0asm\x01\0\0\0".to_vec(),
            }],
            compatibility_flags: vec!["nodejs_compat".into()],
            bundle_sha256: None,
        };
        let stored = encode(&spec);
        let shown = view("abc", &stored).unwrap();
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

        // What is stored is what comes back to be uploaded again, whatever order it was stored in.
        let restored = decode("abc", &stored).unwrap();
        assert_eq!(restored.module_code, spec.module_code);
        assert_eq!(restored.main_module_name, spec.main_module_name);
        assert_eq!(restored.extra_modules, spec.extra_modules);
        assert_eq!(restored.env, spec.env);
        assert_eq!(restored.compatibility_flags, spec.compatibility_flags);
        assert_eq!(
            (restored.compatibility_date, restored.invoke_path),
            (spec.compatibility_date, spec.invoke_path)
        );

        // Damaged bytes are refused, never uploaded.
        let mut damaged: Value = serde_json::from_slice(&stored).unwrap();
        damaged["modules"][0]["base64"] = json!(STANDARD.encode(b"\0asm\x01\0\0\x02"));
        let err = decode("abc", &serde_json::to_vec(&damaged).unwrap()).unwrap_err();
        assert!(err.contains("add.wasm does not match its hash"), "{err}");
        let mut headless: Value = serde_json::from_slice(&stored).unwrap();
        headless["manifest"]["main"] = json!("src/other.js");
        assert!(decode("abc", &serde_json::to_vec(&headless).unwrap()).is_err());
    }
}
