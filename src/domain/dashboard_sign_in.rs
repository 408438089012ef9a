//! How the dashboard signs a person in: Clerk, named by its publishable key. The key encodes Clerk's frontend API
//! host (`pk_live_` or `pk_test_`, then base64 of `<host>$`), and clerk-js is loaded from that host, so the key is
//! all a deployment configures. The local stack's identity provider serves a Clerk-compatible script from its own
//! address, given as `DASHBOARD_CLERK_JS_URL`.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde::Serialize;

/// The clerk-js major version the dashboard is written against.
pub const CLERK_JS_MAJOR: u32 = 5;

/// What `GET /v1/dashboard/config` tells the dashboard about signing in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignIn {
    pub provider: &'static str,
    pub publishable_key: String,
    /// The identity provider's own script: the only code the dashboard loads from another origin.
    pub script_url: String,
}

impl SignIn {
    /// Reads `DASHBOARD_CLERK_PUBLISHABLE_KEY` (and the optional `DASHBOARD_CLERK_JS_URL`). Unset: the dashboard
    /// has no sign-in (`Ok(None)`) and says so; a key that is not a Clerk publishable key is an error.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<SignIn>, String> {
        let nonempty = |name: &str| crate::config::nonempty_var(&get, name);
        let Some(key) = nonempty("DASHBOARD_CLERK_PUBLISHABLE_KEY") else {
            return Ok(None);
        };
        let host =
            frontend_api(&key).map_err(|e| format!("DASHBOARD_CLERK_PUBLISHABLE_KEY: {e}"))?;
        let script_url = match nonempty("DASHBOARD_CLERK_JS_URL") {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => url,
            Some(url) => {
                return Err(format!(
                    "DASHBOARD_CLERK_JS_URL must be an http(s) URL, not {url:?}"
                ))
            }
            None => {
                format!("https://{host}/npm/@clerk/clerk-js@{CLERK_JS_MAJOR}/dist/clerk.browser.js")
            }
        };
        Ok(Some(SignIn {
            provider: "clerk",
            publishable_key: key,
            script_url,
        }))
    }
}

/// The frontend API host a Clerk publishable key names.
pub fn frontend_api(publishable_key: &str) -> Result<String, String> {
    let encoded = publishable_key
        .strip_prefix("pk_live_")
        .or_else(|| publishable_key.strip_prefix("pk_test_"))
        .ok_or("a Clerk publishable key starts with pk_live_ or pk_test_")?;
    let bytes = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .map_err(|_| "the part after pk_live_/pk_test_ is not base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "the decoded key is not text")?;
    let host = text
        .strip_suffix('$')
        .ok_or("the decoded key does not end with '$'")?;
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !valid {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key(host: &str, live: bool) -> String {
        let prefix = if live { "pk_live_" } else { "pk_test_" };
        format!("{prefix}{}", STANDARD.encode(format!("{host}$")))
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_publishable_key_names_its_frontend_api_and_the_script_comes_from_there() {
        let k = key("clerk.example.com", true);
        assert_eq!(frontend_api(&k).unwrap(), "clerk.example.com");
        let sign_in = SignIn::from_vars(vars(&[("DASHBOARD_CLERK_PUBLISHABLE_KEY", &k)]))
            .unwrap()
            .unwrap();
        assert_eq!(
            sign_in.script_url,
            "https://clerk.example.com/npm/@clerk/clerk-js@5/dist/clerk.browser.js"
        );
        assert_eq!(sign_in.provider, "clerk");
        // Clerk's development keys, with the port the local identity provider uses.
        assert_eq!(
            frontend_api(&key("127.0.0.1:8789", false)).unwrap(),
            "127.0.0.1:8789"
        );
    }

    #[test]
    fn the_script_url_can_be_given_for_a_local_identity_provider() {
        let k = key("127.0.0.1:8789", false);
        let url = "http://127.0.0.1:8789/npm/@clerk/clerk-js@5/dist/clerk.browser.js";
        let sign_in = SignIn::from_vars(vars(&[
            ("DASHBOARD_CLERK_PUBLISHABLE_KEY", &k),
            ("DASHBOARD_CLERK_JS_URL", url),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(sign_in.script_url, url);
        let bad = SignIn::from_vars(vars(&[
            ("DASHBOARD_CLERK_PUBLISHABLE_KEY", &k),
            ("DASHBOARD_CLERK_JS_URL", "javascript:alert(1)"),
        ]));
        assert!(bad.unwrap_err().contains("http(s) URL"));
    }

    #[test]
    fn no_key_means_no_sign_in_and_a_wrong_key_is_an_error() {
        assert_eq!(SignIn::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(
            SignIn::from_vars(vars(&[("DASHBOARD_CLERK_PUBLISHABLE_KEY", " ")])).unwrap(),
            None
        );
        for wrong in [
            "sk_live_abc".to_owned(),
            "pk_live_!!!".to_owned(),
            format!("pk_live_{}", STANDARD.encode("no-dollar")),
            format!("pk_live_{}", STANDARD.encode("evil.com/path$")),
            key("", true),
        ] {
            let err = SignIn::from_vars(vars(&[("DASHBOARD_CLERK_PUBLISHABLE_KEY", &wrong)]))
                .unwrap_err();
            assert!(
                err.starts_with("DASHBOARD_CLERK_PUBLISHABLE_KEY: "),
                "{wrong}: {err}"
            );
        }
    }
}
