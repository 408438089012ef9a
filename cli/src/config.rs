//! Where `webhost login` keeps the endpoint and credential: `$WEBHOST_CONFIG`, else
//! `$XDG_CONFIG_HOME/webhost/config.json`, else `~/.config/webhost/config.json` (mode 0600). `WEBHOST_ENDPOINT`
//! and `WEBHOST_TOKEN` override what is stored.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    pub endpoint: Option<String>,
    pub token: Option<String>,
}

pub fn path() -> PathBuf {
    if let Ok(p) = std::env::var("WEBHOST_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".config")
        });
    base.join("webhost").join("config.json")
}

pub fn load() -> Config {
    let mut config: Config = std::fs::read_to_string(path())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    if let Ok(endpoint) = std::env::var("WEBHOST_ENDPOINT") {
        config.endpoint = Some(endpoint);
    }
    if let Ok(token) = std::env::var("WEBHOST_TOKEN") {
        config.token = Some(token);
    }
    config
}

pub fn save(config: &Config) -> std::io::Result<PathBuf> {
    let path = path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(config)? + "\n")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(path)
}
