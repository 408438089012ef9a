//! Agent bundles: the manifest (`agent.config.json`), the modules it ships (ES modules, CommonJS, Wasm, text,
//! data, JSON), the limits checked before anything is uploaded, and the bundle's content address (SHA-256 of a
//! canonical form, so the same bundle is the same artifact however it was packed).

use crate::crypto::sha256_hex;
use crate::domain::deployment::{is_binding_name, RESERVED_BINDINGS};
use crate::domain::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How a module is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    EsModule,
    CommonJs,
    Wasm,
    Text,
    Data,
    Json,
}

impl ModuleKind {
    pub const ALL: [ModuleKind; 6] = [
        ModuleKind::EsModule,
        ModuleKind::CommonJs,
        ModuleKind::Wasm,
        ModuleKind::Text,
        ModuleKind::Data,
        ModuleKind::Json,
    ];

    /// The name the manifest uses (`modules[].type`), the same as `serde`'s.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::EsModule => "es_module",
            ModuleKind::CommonJs => "commonjs",
            ModuleKind::Wasm => "wasm",
            ModuleKind::Text => "text",
            ModuleKind::Data => "data",
            ModuleKind::Json => "json",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// The kind a file name implies when the manifest does not say (wrangler's defaults).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
        Some(match ext.as_str() {
            "js" | "mjs" => ModuleKind::EsModule,
            "cjs" => ModuleKind::CommonJs,
            "wasm" => ModuleKind::Wasm,
            "txt" | "html" | "md" | "sql" | "csv" => ModuleKind::Text,
            "bin" | "dat" => ModuleKind::Data,
            "json" => ModuleKind::Json,
            _ => return None,
        })
    }

    /// The content type the Workers upload API takes for this kind. JSON is none of them: it is sent as an ES
    /// module exporting the value (see `cloudflare_body`).
    pub fn upload_content_type(self) -> &'static str {
        match self {
            ModuleKind::EsModule | ModuleKind::Json => "application/javascript+module",
            ModuleKind::CommonJs => "application/javascript",
            ModuleKind::Wasm => "application/wasm",
            ModuleKind::Text => "text/plain",
            ModuleKind::Data => "application/octet-stream",
        }
    }

    fn is_code(self) -> bool {
        matches!(self, ModuleKind::EsModule | ModuleKind::CommonJs)
    }
}

/// One module of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleModule {
    pub name: String,
    pub kind: ModuleKind,
    pub bytes: Vec<u8>,
}

impl BundleModule {
    /// The bytes as uploaded to Cloudflare: a JSON module becomes `export default <value>;`.
    pub fn cloudflare_body(&self) -> Vec<u8> {
        match self.kind {
            ModuleKind::Json => {
                let mut out = b"export default ".to_vec();
                out.extend_from_slice(&self.bytes);
                out.extend_from_slice(b";\n");
                out
            }
            _ => self.bytes.clone(),
        }
    }
}

/// Limits checked before anything is uploaded. Cloudflare allows 64 MB uncompressed (10 MB compressed) per Worker
/// on paid plans; the control plane holds a bundle in its own memory while it checks and uploads it, so its
/// defaults are lower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    pub max_modules: usize,
    pub max_module_bytes: usize,
    pub max_total_bytes: usize,
}

/// The most code one deployment may have, whatever the tier (the request body is bounded just above it).
pub const MAX_TOTAL_BYTES: usize = 10 * 1024 * 1024;
const MAX_MODULES: usize = 100;
const MAX_MODULE_BYTES: usize = 5 * 1024 * 1024;

impl Default for BundleLimits {
    fn default() -> Self {
        BundleLimits {
            max_modules: MAX_MODULES,
            max_module_bytes: MAX_MODULE_BYTES,
            max_total_bytes: MAX_TOTAL_BYTES,
        }
    }
}

impl BundleLimits {
    /// The limits of a user entitled to `bundle_bytes` of code per deployment (entitlement `bundleBytes`).
    pub fn entitled(bundle_bytes: u64) -> Self {
        let total = usize::try_from(bundle_bytes)
            .unwrap_or(MAX_TOTAL_BYTES)
            .min(MAX_TOTAL_BYTES);
        BundleLimits {
            max_modules: MAX_MODULES,
            max_module_bytes: MAX_MODULE_BYTES.min(total),
            max_total_bytes: total,
        }
    }

    /// Refuses code of `total` bytes over the limit (a single-module deploy is a bundle of one).
    pub fn check_total(&self, total: usize) -> Result<(), ApiError> {
        if total <= self.max_total_bytes {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::BundleTooLarge,
            format!(
                "The bundle is {total} bytes; at most {} are allowed.",
                self.max_total_bytes
            ),
        )
        .with_details(
            json!({ "limit": "totalBytes", "max": self.max_total_bytes, "actual": total }),
        ))
    }
}

/// `agent.config.json`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub name: Option<String>,
    pub main: String,
    pub compatibility_date: Option<String>,
    pub compatibility_flags: Vec<String>,
    pub vars: BTreeMap<String, String>,
    pub invoke_path: Option<String>,
    pub runtime_provider: Option<String>,
    /// Kinds the manifest states for modules whose file name does not say (`rules`-like, by exact name).
    pub module_types: BTreeMap<String, ModuleKind>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidManifest,
        format!("agent.config.json: {field} {}", message.into()),
    )
    .with_details(json!({ "field": field }))
}

/// A module name as Cloudflare and import specifiers take it: a relative path, no `.` or `..` segments, not one
/// of the platform's own (`__webhost…`).
pub fn is_module_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !name.starts_with("__webhost")
}

const KNOWN_FIELDS: &[&str] = &[
    "$schema",
    "name",
    "main",
    "compatibilityDate",
    "compatibilityFlags",
    "vars",
    "invokePath",
    "runtimeProvider",
    "modules",
];

impl Manifest {
    /// Parses `agent.config.json`; every error names the field.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ApiError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid("(the file)", format!("is not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("(the file)", "must be a JSON object"))?;
        if let Some(unknown) = object.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(invalid(unknown, "is not a field of agent.config.json"));
        }
        let text = |field: &str| -> Result<Option<String>, ApiError> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(field, "must be a string")),
            }
        };
        let main = text("main")?
            .ok_or_else(|| invalid("main", "is required (the entry module's path)"))?;
        if !is_module_name(&main)
            || !matches!(
                ModuleKind::from_file_name(&main),
                Some(ModuleKind::EsModule)
            )
        {
            return Err(invalid(
                "main",
                "must be the relative path of an ES module (.js or .mjs)",
            ));
        }
        let name = text("name")?;
        if let Some(n) = &name {
            let ok = (3..=63).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && n.as_bytes()[0].is_ascii_lowercase()
                && !n.ends_with('-');
            if !ok {
                return Err(invalid(
                    "name",
                    "must be an agent name: lowercase letters, digits and '-', 3 to 63",
                ));
            }
        }
        let compatibility_date = text("compatibilityDate")?;
        if let Some(d) = &compatibility_date {
            let b = d.as_bytes();
            let ok = b.len() == 10
                && b[4] == b'-'
                && b[7] == b'-'
                && d.bytes()
                    .enumerate()
                    .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
            if !ok {
                return Err(invalid("compatibilityDate", "must be a date YYYY-MM-DD"));
            }
        }
        let compatibility_flags = match object.get("compatibilityFlags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    f.as_str()
                        .filter(|s| {
                            !s.is_empty()
                                && s.len() <= 64
                                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        })
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            invalid(
                                &format!("compatibilityFlags[{i}]"),
                                "must be a flag name (letters, digits, '_')",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("compatibilityFlags", "must be a list of strings")),
        };
        let vars = match object.get("vars") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => vars(map)?,
            Some(_) => return Err(invalid("vars", "must be an object of names to strings")),
        };
        let module_types = match object.get("modules") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Array(items)) => module_types(items)?,
            Some(_) => return Err(invalid("modules", "must be a list of {path, type}")),
        };
        Ok(Manifest {
            name,
            main,
            compatibility_date,
            compatibility_flags,
            vars,
            invoke_path: text("invokePath")?,
            runtime_provider: text("runtimeProvider")?,
            module_types,
        })
    }

    /// The kind of module `name`: what the manifest says, else what its file name implies.
    pub fn kind_of(&self, name: &str) -> Option<ModuleKind> {
        self.module_types
            .get(name)
            .copied()
            .or_else(|| ModuleKind::from_file_name(name))
    }
}

fn vars(map: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    if map.len() > 32 {
        return Err(invalid("vars", "may hold at most 32 variables"));
    }
    map.iter()
        .map(|(k, v)| {
            let field = format!("vars.{k}");
            if !is_binding_name(k) || RESERVED_BINDINGS.contains(&k.as_str()) {
                return Err(invalid(
                    &field,
                    "must be named [A-Z_][A-Z0-9_]* and not one of the platform's own",
                ));
            }
            match v {
                Value::String(s) if s.len() <= 4096 => Ok((k.clone(), s.clone())),
                Value::String(_) => Err(invalid(&field, "must be at most 4096 bytes")),
                _ => Err(invalid(
                    &field,
                    "must be a string (secrets go through `webhost secrets set`)",
                )),
            }
        })
        .collect()
}

fn module_types(items: &[Value]) -> Result<BTreeMap<String, ModuleKind>, ApiError> {
    let mut out = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = item
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| is_module_name(p))
            .ok_or_else(|| {
                invalid(
                    &format!("modules[{i}].path"),
                    "must be a module's relative path",
                )
            })?;
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .and_then(ModuleKind::parse)
            .ok_or_else(|| {
                invalid(
                    &format!("modules[{i}].type"),
                    "must be es_module, commonjs, wasm, text, data or json",
                )
            })?;
        out.insert(path.to_owned(), kind);
    }
    Ok(out)
}

/// A bundle ready to upload: its manifest and modules, checked against the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub manifest: Manifest,
    pub modules: Vec<BundleModule>,
}

/// What the artifact route shows of a module: never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ModuleKind,
    pub size: usize,
    pub sha256: String,
}

impl Bundle {
    /// Builds a bundle from the manifest and the uploaded files (name → bytes): every file must be a module of a
    /// known kind, the main module must be among them, code must be UTF-8 and JSON must parse, and the limits hold.
    pub fn assemble(
        manifest: Manifest,
        files: Vec<(String, Vec<u8>)>,
        limits: &BundleLimits,
    ) -> Result<Bundle, ApiError> {
        if files.len() > limits.max_modules {
            return Err(ApiError::new(
                ErrorCode::BundleTooLarge,
                format!(
                    "The bundle has {} modules; at most {} are allowed.",
                    files.len(),
                    limits.max_modules
                ),
            )
            .with_details(
                json!({ "limit": "modules", "max": limits.max_modules, "actual": files.len() }),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut total = 0usize;
        let mut modules = Vec::with_capacity(files.len());
        for (name, bytes) in files {
            let field = format!("modules[{name}]");
            if !is_module_name(&name) {
                return Err(invalid(
                    &field,
                    "is not a valid module path (relative, letters, digits, '.', '_', '-', '/')",
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(invalid(&field, "appears twice"));
            }
            let kind = manifest
                .kind_of(&name)
                .ok_or_else(|| invalid(&field, "has no known type: name it .js/.mjs/.cjs/.wasm/.txt/.bin/.json or list it under modules"))?;
            if bytes.len() > limits.max_module_bytes {
                return Err(ApiError::new(
                    ErrorCode::BundleTooLarge,
                    format!("Module {name} is {} bytes; a module may be at most {}.", bytes.len(), limits.max_module_bytes),
                )
                .with_details(json!({ "limit": "moduleBytes", "module": name, "max": limits.max_module_bytes, "actual": bytes.len() })));
            }
            total += bytes.len();
            if (kind.is_code() || kind == ModuleKind::Text) && std::str::from_utf8(&bytes).is_err()
            {
                return Err(invalid(&field, "is not UTF-8 text"));
            }
            if kind == ModuleKind::Json && serde_json::from_slice::<Value>(&bytes).is_err() {
                return Err(invalid(&field, "is not valid JSON"));
            }
            if kind == ModuleKind::Wasm && !bytes.starts_with(b"\0asm") {
                return Err(invalid(&field, "is not a WebAssembly module"));
            }
            modules.push(BundleModule { name, kind, bytes });
        }
        limits.check_total(total)?;
        if !modules.iter().any(|m| m.name == manifest.main) {
            return Err(invalid(
                "main",
                format!(
                    "names {}, which is not among the uploaded modules",
                    manifest.main
                ),
            ));
        }
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Bundle { manifest, modules })
    }

    pub fn summaries(&self) -> Vec<ModuleSummary> {
        self.modules
            .iter()
            .map(|m| ModuleSummary {
                name: m.name.clone(),
                kind: m.kind,
                size: m.bytes.len(),
                sha256: sha256_hex(&m.bytes),
            })
            .collect()
    }

    /// The manifest as the content address covers it (and as the artifact stores it).
    pub fn manifest_value(&self) -> Value {
        serde_json::to_value(&self.manifest).unwrap_or(Value::Null)
    }

    /// The content address: SHA-256 of the canonical form — the manifest as canonical JSON (keys sorted) and each
    /// module's name, kind and SHA-256, in name order — so packing order and whitespace of the upload do not
    /// matter, and any change of a byte, a name, a type or a setting does.
    pub fn content_hash(&self) -> String {
        let modules: Vec<(String, &str, String)> = self
            .summaries()
            .into_iter()
            .map(|m| (m.name, m.kind.as_str(), m.sha256))
            .collect();
        content_address(&self.manifest_value(), &modules)
    }

    /// A single-module deploy as the bundle of one it stands for, so its content address covers its settings as
    /// a bundle's does (the same code deployed with other settings is other content).
    pub fn of_one_module(
        main: &str,
        code: &str,
        compatibility_date: &str,
        vars: &BTreeMap<String, String>,
        invoke_path: &str,
    ) -> Bundle {
        Bundle {
            manifest: Manifest {
                name: None,
                main: main.to_owned(),
                compatibility_date: Some(compatibility_date.to_owned()),
                compatibility_flags: Vec::new(),
                vars: vars.clone(),
                invoke_path: Some(invoke_path.to_owned()),
                runtime_provider: None,
                module_types: BTreeMap::new(),
            },
            modules: vec![BundleModule {
                name: main.to_owned(),
                kind: ModuleKind::EsModule,
                bytes: code.as_bytes().to_vec(),
            }],
        }
    }
}

/// SHA-256 of `{"manifest": …, "modules": [[name, type, sha256], …]}` as canonical JSON (serde_json's maps are
/// ordered by key), the modules in name order. Checked again when an artifact is read back.
pub fn content_address(manifest: &Value, modules: &[(String, &str, String)]) -> String {
    let mut modules: Vec<&(String, &str, String)> = modules.iter().collect();
    modules.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical = json!({
        "manifest": manifest,
        "modules": modules.iter().map(|(name, kind, sha)| json!([name, kind, sha])).collect::<Vec<_>>(),
    });
    sha256_hex(canonical.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn manifest(json: Value) -> Result<Manifest, ApiError> {
        Manifest::parse(json.to_string().as_bytes())
    }

    fn field_of(e: &ApiError) -> String {
        e.details.as_ref().unwrap()["field"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Uploaded files, name → bytes.
    type Files = Vec<(String, Vec<u8>)>;

    fn files() -> Files {
        vec![
            (
                "src/index.js".into(),
                b"import add from './add.wasm'; export default {};".to_vec(),
            ),
            ("add.wasm".into(), WASM.to_vec()),
            ("data/words.json".into(), br#"{"hello": 1}"#.to_vec()),
            ("README.txt".into(), b"notes".to_vec()),
        ]
    }

    #[test]
    fn a_manifest_is_read_and_every_error_names_its_field() {
        let m = manifest(json!({ "name": "support-bot", "main": "src/index.js", "compatibilityDate": "2026-07-30",
            "compatibilityFlags": ["nodejs_compat"], "vars": { "GREETING": "hi" }, "modules": [{ "path": "blob.dat", "type": "data" }] }))
        .unwrap();
        assert_eq!(m.main, "src/index.js");
        assert_eq!(m.kind_of("blob.dat"), Some(ModuleKind::Data));
        assert_eq!(m.kind_of("x.cjs"), Some(ModuleKind::CommonJs));
        for (bad, field) in [
            (json!({}), "main"),
            (json!({ "main": "index.py" }), "main"),
            (json!({ "main": "../escape.js" }), "main"),
            (json!({ "main": "i.js", "name": "Bad Name" }), "name"),
            (
                json!({ "main": "i.js", "compatibilityDate": "yesterday" }),
                "compatibilityDate",
            ),
            (
                json!({ "main": "i.js", "compatibilityFlags": ["ok", "no spaces"] }),
                "compatibilityFlags[1]",
            ),
            (
                json!({ "main": "i.js", "vars": { "lower": "x" } }),
                "vars.lower",
            ),
            (
                json!({ "main": "i.js", "vars": { "GATEWAY_SECRET": "x" } }),
                "vars.GATEWAY_SECRET",
            ),
            (json!({ "main": "i.js", "vars": { "N": 1 } }), "vars.N"),
            (
                json!({ "main": "i.js", "modules": [{ "path": "a.x", "type": "python" }] }),
                "modules[0].type",
            ),
            (json!({ "main": "i.js", "routes": [] }), "routes"),
        ] {
            let e = manifest(bad.clone()).unwrap_err();
            assert_eq!(
                (e.code, field_of(&e)),
                (ErrorCode::InvalidManifest, field.to_owned()),
                "{bad}"
            );
        }
        assert_eq!(
            Manifest::parse(b"not json").unwrap_err().code,
            ErrorCode::InvalidManifest
        );
    }

    #[test]
    fn a_bundle_holds_known_modules_and_its_main_one() {
        let m = manifest(json!({ "main": "src/index.js" })).unwrap();
        let bundle = Bundle::assemble(m.clone(), files(), &BundleLimits::default()).unwrap();
        let kinds: Vec<_> = bundle
            .modules
            .iter()
            .map(|x| (x.name.as_str(), x.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("README.txt", ModuleKind::Text),
                ("add.wasm", ModuleKind::Wasm),
                ("data/words.json", ModuleKind::Json),
                ("src/index.js", ModuleKind::EsModule)
            ]
        );
        let json_module = bundle
            .modules
            .iter()
            .find(|x| x.kind == ModuleKind::Json)
            .unwrap();
        assert_eq!(
            json_module.cloudflare_body(),
            b"export default {\"hello\": 1};\n".to_vec()
        );
        assert_eq!(
            ModuleKind::Json.upload_content_type(),
            "application/javascript+module"
        );
        let refusals: Vec<(Files, &str)> = vec![
            (vec![("other.js".into(), b"x".to_vec())], "main"),
            (
                vec![
                    ("src/index.js".into(), b"x".to_vec()),
                    ("src/index.js".into(), b"y".to_vec()),
                ],
                "modules[src/index.js]",
            ),
            (
                vec![
                    ("src/index.js".into(), b"x".to_vec()),
                    ("archive.zip".into(), b"x".to_vec()),
                ],
                "modules[archive.zip]",
            ),
            (
                vec![
                    ("src/index.js".into(), b"x".to_vec()),
                    ("fake.wasm".into(), b"MZ".to_vec()),
                ],
                "modules[fake.wasm]",
            ),
            (
                vec![
                    ("src/index.js".into(), b"x".to_vec()),
                    ("bad.json".into(), b"{".to_vec()),
                ],
                "modules[bad.json]",
            ),
            (
                vec![("src/index.js".into(), vec![0xff, 0xfe])],
                "modules[src/index.js]",
            ),
            (
                vec![
                    ("src/index.js".into(), b"x".to_vec()),
                    ("__webhost_guard.js".into(), b"x".to_vec()),
                ],
                "modules[__webhost_guard.js]",
            ),
        ];
        for (files, field) in refusals {
            let e = Bundle::assemble(m.clone(), files, &BundleLimits::default()).unwrap_err();
            assert_eq!(
                (e.code, field_of(&e)),
                (ErrorCode::InvalidManifest, field.to_owned())
            );
        }
    }

    #[test]
    fn the_limits_are_checked_with_a_stable_code_before_anything_is_uploaded() {
        let m = manifest(json!({ "main": "src/index.js" })).unwrap();
        let tight = BundleLimits {
            max_modules: 3,
            max_module_bytes: 64,
            max_total_bytes: 80,
        };
        let too_many = Bundle::assemble(m.clone(), files(), &tight).unwrap_err();
        assert_eq!(
            (too_many.code, too_many.status()),
            (ErrorCode::BundleTooLarge, 413)
        );
        assert_eq!(too_many.details.unwrap()["limit"], "modules");
        let big = vec![("src/index.js".into(), vec![b'a'; 65])];
        assert_eq!(
            Bundle::assemble(m.clone(), big, &tight)
                .unwrap_err()
                .details
                .unwrap()["limit"],
            "moduleBytes"
        );
        let total = vec![
            ("src/index.js".into(), vec![b'a'; 60]),
            ("b.txt".into(), vec![b'b'; 30]),
        ];
        assert_eq!(
            Bundle::assemble(m, total, &tight)
                .unwrap_err()
                .details
                .unwrap()["limit"],
            "totalBytes"
        );
    }

    #[test]
    fn a_plan_narrows_the_limits_and_never_widens_them() {
        let free = BundleLimits::entitled(3 * 1024 * 1024);
        assert_eq!(free.max_total_bytes, 3 * 1024 * 1024);
        assert_eq!(
            free.max_module_bytes,
            3 * 1024 * 1024,
            "no module larger than the whole"
        );
        assert_eq!(free.max_modules, 100);
        assert_eq!(BundleLimits::entitled(u64::MAX), BundleLimits::default());
        assert_eq!(
            BundleLimits::entitled(7 * 1024 * 1024).max_module_bytes,
            5 * 1024 * 1024
        );
        assert!(free.check_total(3 * 1024 * 1024).is_ok());
        let over = free.check_total(3 * 1024 * 1024 + 1).unwrap_err();
        assert_eq!((over.code, over.status()), (ErrorCode::BundleTooLarge, 413));
        assert_eq!(over.details.unwrap()["limit"], "totalBytes");
    }

    #[test]
    fn the_content_hash_ignores_packing_order_and_sees_every_change() {
        let m = manifest(json!({ "main": "src/index.js", "vars": { "A": "1" } })).unwrap();
        let a = Bundle::assemble(m.clone(), files(), &BundleLimits::default()).unwrap();
        let mut reversed = files();
        reversed.reverse();
        let b = Bundle::assemble(m.clone(), reversed, &BundleLimits::default()).unwrap();
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash().len(), 64);
        let mut changed = files();
        changed[3].1 = b"notes!".to_vec();
        assert_ne!(
            Bundle::assemble(m.clone(), changed, &BundleLimits::default())
                .unwrap()
                .content_hash(),
            a.content_hash()
        );
        let other_vars = manifest(json!({ "main": "src/index.js", "vars": { "A": "2" } })).unwrap();
        assert_ne!(
            Bundle::assemble(other_vars, files(), &BundleLimits::default())
                .unwrap()
                .content_hash(),
            a.content_hash()
        );
        let summaries = a.summaries();
        assert_eq!(summaries[1].size, WASM.len());
        assert_eq!(summaries[1].sha256, sha256_hex(WASM));
    }

    #[test]
    fn the_json_schema_in_docs_lists_exactly_the_fields_read_here() {
        let schema: Value =
            serde_json::from_str(include_str!("../../docs/agent.config.schema.json")).unwrap();
        let mut documented: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut read = KNOWN_FIELDS.to_vec();
        documented.sort_unstable();
        read.sort_unstable();
        assert_eq!(documented, read);
        let kinds: Vec<&str> = schema["properties"]["modules"]["items"]["properties"]["type"]
            ["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(kinds, ModuleKind::ALL.map(ModuleKind::as_str).to_vec());
    }

    #[test]
    fn module_names_are_relative_paths_without_dot_segments() {
        for ok in ["index.js", "src/lib/util.mjs", "a-b_c.d.txt"] {
            assert!(is_module_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/abs.js",
            "a/../b.js",
            "./a.js",
            "a//b.js",
            "dir/",
            "sp ace.js",
            "__webhost_x.js",
            &"a".repeat(129),
        ] {
            assert!(!is_module_name(bad), "{bad}");
        }
    }
}
