//! Agents: the validated values a client may set, the status state machine, and the record itself.

use super::error::{ApiError, ErrorCode};
use super::ids::{AgentId, UserId};
use serde::Serialize;

/// A name unique per user, usable as a slug in URLs and provider script names:
/// 3–63 characters of `a-z`, `0-9` and `-`, starting with a letter and not ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 63;

    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let fail = |reason: &str| Err(ApiError::validation("name", reason));
        let len = value.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return fail("must be 3 to 63 characters long");
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return fail("may contain only lowercase letters a-z, digits and '-'");
        }
        if !value.as_bytes()[0].is_ascii_lowercase() {
            return fail("must start with a letter");
        }
        if value.ends_with('-') {
            return fail("must not end with '-'");
        }
        Ok(AgentName(value.to_owned()))
    }

    pub fn from_trusted(value: String) -> Self {
        AgentName(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text shown in dashboards: at most 500 characters, no control characters except newline and tab.
/// An empty description means "none".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AgentDescription(String);

impl AgentDescription {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(value: &str) -> Result<Option<Self>, ApiError> {
        if value.chars().count() > Self::MAX_CHARS {
            return Err(ApiError::validation(
                "description",
                "must be at most 500 characters long",
            ));
        }
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ApiError::validation(
                "description",
                "must not contain control characters other than newline and tab",
            ));
        }
        Ok((!value.trim().is_empty()).then(|| AgentDescription(value.to_owned())))
    }

    pub fn from_trusted(value: String) -> Self {
        AgentDescription(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether an agent may be deployed and invoked. Both transitions are allowed from either state and are
/// idempotent: disabling a disabled agent is a no-op, not an error, so clients can retry safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    Disabled,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Disabled => "disabled",
        }
    }

    pub fn parse_stored(value: &str) -> Result<Self, ApiError> {
        match value {
            "active" => Ok(AgentStatus::Active),
            "disabled" => Ok(AgentStatus::Disabled),
            other => Err(ApiError::internal(format!(
                "unknown agent status in storage: {other:?}"
            ))),
        }
    }
}

/// An agent as stored and as returned to its owner. The owner id stays internal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: AgentId,
    #[serde(skip)]
    pub user_id: UserId,
    pub name: AgentName,
    pub description: Option<AgentDescription>,
    pub status: AgentStatus,
    /// The only routing pointer for invocations; null until a deployment succeeds.
    pub active_deployment_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A name conflict is reported the same way from create and rename.
pub fn name_taken(name: &AgentName) -> ApiError {
    ApiError::new(
        ErrorCode::AgentNameTaken,
        format!("You already have an agent named '{}'.", name.as_str()),
    )
    .with_details(serde_json::json!({ "field": "name" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_accept_slugs() {
        for ok in ["abc", "support-bot", "a1-b2-c3", &"a".repeat(63)] {
            assert_eq!(AgentName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn agent_names_reject_bad_length_and_charset() {
        for bad in [
            "",
            "ab",
            &"a".repeat(64),
            "Support",
            "has space",
            "under_score",
            "1starts-with-digit",
            "-leading",
            "trailing-",
            "naïve",
            "emoji😀x",
            "semi;colon",
        ] {
            let err = AgentName::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::ValidationFailed, "{bad:?}");
            assert_eq!(err.details.as_ref().unwrap()["field"], "name");
        }
    }

    #[test]
    fn descriptions_are_bounded_and_free_of_control_characters() {
        assert_eq!(AgentDescription::parse("").unwrap(), None);
        assert_eq!(AgentDescription::parse("   ").unwrap(), None);
        assert!(AgentDescription::parse("line one\nline two\tand tab")
            .unwrap()
            .is_some());
        // 500 multi-byte characters are fine: the limit counts characters, not bytes.
        assert!(AgentDescription::parse(&"é".repeat(500)).is_ok());
        assert!(AgentDescription::parse(&"é".repeat(501)).is_err());
        assert!(AgentDescription::parse("bell\u{7}").is_err());
        assert!(AgentDescription::parse("nul\0").is_err());
    }

    #[test]
    fn stored_status_round_trips_and_rejects_unknown_values() {
        for status in [AgentStatus::Active, AgentStatus::Disabled] {
            assert_eq!(AgentStatus::parse_stored(status.as_str()).unwrap(), status);
        }
        assert_eq!(
            AgentStatus::parse_stored("deleted").unwrap_err().code,
            ErrorCode::InternalError
        );
    }
}
