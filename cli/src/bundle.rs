//! A folder as a bundle: `agent.config.json` and the module files beside it (every file under the folder but
//! hidden ones, `node_modules` and the manifest itself), encoded as the `multipart/form-data` body a bundle
//! deploy takes.

use crate::api::Failure;
use std::path::{Path, PathBuf};

pub struct Folder {
    pub manifest: Vec<u8>,
    /// (module path relative to the folder, with `/`, and its bytes)
    pub modules: Vec<(String, Vec<u8>)>,
}

impl Folder {
    pub fn bytes(&self) -> usize {
        self.modules.iter().map(|(_, b)| b.len()).sum()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "node_modules" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if path != root.join("agent.config.json") {
            out.push(path);
        }
    }
    Ok(())
}

pub fn read(dir: &Path) -> Result<Folder, Failure> {
    let manifest_path = dir.join("agent.config.json");
    let manifest = std::fs::read(&manifest_path).map_err(|e| {
        Failure::Usage(format!(
            "{}: {e} (a bundle folder holds agent.config.json)",
            manifest_path.display()
        ))
    })?;
    let mut files = Vec::new();
    walk(dir, dir, &mut files).map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?;
    let mut modules = Vec::new();
    for path in files {
        let relative = path
            .strip_prefix(dir)
            .map_err(|e| Failure::Usage(e.to_string()))?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let bytes =
            std::fs::read(&path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        modules.push((relative, bytes));
    }
    Ok(Folder { manifest, modules })
}

/// The body and its content type.
pub fn multipart(folder: &Folder) -> (String, Vec<u8>) {
    let boundary = format!(
        "webhost-cli-{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    );
    let mut body = Vec::new();
    let mut part = |name: &str, filename: &str, content_type: &str, bytes: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "manifest",
        "agent.config.json",
        "application/json",
        &folder.manifest,
    );
    for (name, bytes) in &folder.modules {
        part("files", name, "application/octet-stream", bytes);
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
