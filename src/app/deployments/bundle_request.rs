//! A bundle deploy's body (`multipart/form-data`: a `manifest` part holding `agent.config.json`, and one part per
//! module, named by its filename) read into the deploy request it stands for and the bundle it carries.

use crate::domain::bundle::{Bundle, BundleLimits, Manifest};
use crate::domain::deployment::DeployRequest;
use crate::domain::{ApiError, ErrorCode};
use crate::http::form_data::{parse, Part};
use serde_json::Value;

/// The part that holds the manifest (a file part named `agent.config.json` is taken too).
pub const MANIFEST_PART: &str = "manifest";

/// Reads a bundle upload; the limits are checked before anything is uploaded anywhere.
pub fn read_bundle(
    body: &[u8],
    boundary: &str,
    limits: &BundleLimits,
) -> Result<(DeployRequest, Bundle), ApiError> {
    let parts = parse(body, boundary)?;
    let is_manifest =
        |p: &Part| p.name == MANIFEST_PART || p.filename.as_deref() == Some("agent.config.json");
    let mut manifests = parts.iter().filter(|p| is_manifest(p));
    let manifest_part = manifests.next().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidManifest,
            "A bundle upload needs a `manifest` part holding agent.config.json.",
        )
        .with_details(serde_json::json!({ "field": "(the file)" }))
    })?;
    if manifests.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "A bundle upload has one manifest.",
        ));
    }
    let manifest = Manifest::parse(&manifest_part.bytes)?;
    let mut files = Vec::new();
    for part in parts.iter().filter(|p| !is_manifest(p)) {
        let name = part.filename.clone().ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("Part {:?} is not a file: every module part needs a filename (its module path).", part.name),
            )
        })?;
        files.push((name, part.bytes.clone()));
    }
    let bundle = Bundle::assemble(manifest, files, limits)?;
    let main_code = bundle
        .modules
        .iter()
        .find(|m| m.name == bundle.manifest.main)
        .map(|m| String::from_utf8_lossy(&m.bytes).into_owned())
        .unwrap_or_default();
    let request = DeployRequest {
        module_code: Some(main_code),
        runtime_provider: bundle.manifest.runtime_provider.clone(),
        main_module_name: Some(bundle.manifest.main.clone()),
        compatibility_date: bundle.manifest.compatibility_date.clone(),
        invoke_path: bundle.manifest.invoke_path.clone(),
        env: Some(
            bundle
                .manifest
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
        container_uri: None,
        execution_role_arn: None,
    };
    Ok((request, bundle))
}

/// Puts the bundle's other modules, flags and content address on a validated single-module spec.
pub fn with_bundle(
    mut spec: crate::domain::deployment::DeploySpec,
    bundle: Bundle,
) -> crate::domain::deployment::DeploySpec {
    spec.address = crate::domain::deployment::CodeAddress::of(&bundle);
    spec.compatibility_flags = bundle.manifest.compatibility_flags.clone();
    // Uploaded code, like a single module: `source` stays `custom`; the bundle shows in `codeSha256`.
    spec.source = "custom";
    spec.extra_modules = bundle
        .modules
        .into_iter()
        .filter(|m| m.name != bundle.manifest.main)
        .collect();
    spec
}
