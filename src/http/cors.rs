//! CORS for browser dashboards. Origins are allowed only by exact match against `CORS_ALLOWED_ORIGINS`; with
//! nothing configured, no origin is allowed.

/// Request headers a dashboard may send.
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, X-Request-Id";
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Response headers scripts may read.
pub const EXPOSED_HEADERS: &str =
    "X-Request-Id, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, \
     X-RateLimit-Reset, X-Deployment-Id, X-Trace-Id, Server-Timing";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_SECONDS: &str = "600";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Vec<String>,
}

impl CorsPolicy {
    /// Parses a comma-separated list of origins (`scheme://host[:port]`, no path, no wildcard).
    pub fn parse(list: Option<&str>) -> Result<Self, String> {
        let mut origins = Vec::new();
        for entry in list
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let Some((scheme, host)) = entry.split_once("://") else {
                return Err(format!(
                    "CORS_ALLOWED_ORIGINS: {entry:?} is not an origin like https://app.example.com"
                ));
            };
            if !matches!(scheme, "http" | "https")
                || host.is_empty()
                || host.contains(['/', '*', ' ', '?', '#'])
            {
                return Err(format!(
                    "CORS_ALLOWED_ORIGINS: {entry:?} is not an origin like https://app.example.com"
                ));
            }
            origins.push(entry.to_owned());
        }
        Ok(CorsPolicy { origins })
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }

    /// Headers for an actual (non-preflight) response to an allowed origin; none otherwise.
    pub fn response_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        match origin {
            Some(origin) if self.allows(origin) => vec![
                ("Access-Control-Allow-Origin", origin.to_owned()),
                ("Access-Control-Expose-Headers", EXPOSED_HEADERS.to_owned()),
                ("Vary", "Origin".to_owned()),
            ],
            _ => vec![("Vary", "Origin".to_owned())],
        }
    }

    /// Headers answering a preflight from an allowed origin.
    pub fn preflight_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        vec![
            ("Access-Control-Allow-Origin", origin.to_owned()),
            ("Access-Control-Allow-Methods", ALLOWED_METHODS.to_owned()),
            ("Access-Control-Allow-Headers", ALLOWED_HEADERS.to_owned()),
            ("Access-Control-Max-Age", MAX_AGE_SECONDS.to_owned()),
            ("Vary", "Origin".to_owned()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allowed_by_default() {
        let policy = CorsPolicy::parse(None).unwrap();
        assert!(!policy.allows("https://app.example.test"));
        assert!(!policy.allows("null"));
        assert_eq!(
            policy.response_headers(Some("https://app.example.test")),
            vec![("Vary", "Origin".to_owned())]
        );
    }

    #[test]
    fn only_exact_origins_match() {
        let policy =
            CorsPolicy::parse(Some("https://app.example.test, http://localhost:5173")).unwrap();
        assert!(policy.allows("https://app.example.test"));
        assert!(policy.allows("http://localhost:5173"));
        for other in [
            "https://app.example.test.evil.test",
            "http://app.example.test",
            "https://evil.test",
            "http://localhost:5174",
            "null",
        ] {
            assert!(!policy.allows(other), "{other}");
        }
    }

    #[test]
    fn malformed_origins_are_configuration_errors() {
        for bad in [
            "*",
            "app.example.test",
            "https://*.example.test",
            "https://a.test/path",
            "ftp://a.test",
        ] {
            assert!(CorsPolicy::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
