//! Telemetry v1 (DESIGN.md §3): what a deployed agent reports, and every check a report passes before anything
//! of it is stored. The platform adapter supplies the bytes, the headers, the deployment row and the clock.
//!
//! Order of checks: headers, content type and size (before reading the body); the deployment; the signature
//! over the exact bytes received; only then the JSON, its shape, its ownership and its timestamps. Nothing an
//! unauthenticated sender wrote is parsed as JSON.

use super::error::{ApiError, ErrorCode};
use super::ids::DeploymentId;
use serde::Serialize;
use serde_json::{json, Map, Value};

pub const DEPLOYMENT_HEADER: &str = "X-Telemetry-Deployment-Id";
pub const SIGNATURE_HEADER: &str = "X-Telemetry-Signature";
/// A report's body is at most this many bytes (a full batch of 100 events is about 35 KB).
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Events in one `{"events":[…]}` report.
pub const MAX_EVENTS_PER_REPORT: usize = 100;
/// An event's `ts` may be at most this old when it arrives. Retention of raw events (days) is far longer, so a
/// replayed report is refused by dedupe while its events are kept, and by this window once they are gone.
pub const MAX_EVENT_AGE_MS: i64 = 60 * 60 * 1000;
/// …and at most this far in the future (clock skew between the agent's runtime and ours).
pub const MAX_EVENT_SKEW_MS: i64 = 5 * 60 * 1000;
/// Any one counter of one event; keeps sums far from overflow and a typo from billing absurd amounts.
pub const MAX_EVENT_COUNTER: u64 = 1_000_000_000;
const MAX_ID_LEN: usize = 128;

const STRING_FIELDS: [&str; 5] = [
    "traceId",
    "userId",
    "agentId",
    "deploymentId",
    "runtimeProvider",
];
const COUNTER_FIELDS: [&str; 5] = [
    "requests",
    "inputTokens",
    "outputTokens",
    "computeMs",
    "errors",
];

/// What one event adds to a user's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub compute_ms: u64,
    pub errors: u64,
}

/// One validated telemetry event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryEvent {
    pub event_id: Option<String>,
    pub trace_id: String,
    pub user_id: String,
    pub agent_id: String,
    pub deployment_id: String,
    pub runtime_provider: String,
    pub ts: i64,
    #[serde(flatten)]
    pub counters: Counters,
}

impl TelemetryEvent {
    /// What makes two events the same within one deployment: the eventId, or the traceId for an event without
    /// one. The two namespaces are kept apart so an eventId can never collide with some other event's traceId.
    pub fn dedupe_key(&self) -> String {
        match &self.event_id {
            Some(id) => format!("e:{id}"),
            None => format!("t:{}", self.trace_id),
        }
    }
}

/// The deployment a report claims to come from, as stored.
pub struct DeploymentOwner<'a> {
    pub deployment_id: &'a str,
    pub user_id: &'a str,
    pub agent_id: &'a str,
    pub runtime_provider: &'a str,
}

fn header_error(header: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidTelemetryHeaders, message.to_owned())
        .with_details(json!({ "header": header }))
}

/// A header's trimmed value, or the refusal that names it and says what it must hold.
fn required_header<'a>(
    value: Option<&'a str>,
    header: &str,
    holds: &str,
) -> Result<&'a str, ApiError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| header_error(header, &format!("{header} is required: {holds}.")))
}

pub fn parse_deployment_header(value: Option<&str>) -> Result<DeploymentId, ApiError> {
    let value = required_header(
        value,
        DEPLOYMENT_HEADER,
        "the id of the deployment sending the report",
    )?;
    DeploymentId::parse(value).ok_or_else(|| {
        header_error(
            DEPLOYMENT_HEADER,
            "X-Telemetry-Deployment-Id is not a deployment id (dep_…).",
        )
    })
}

/// `v1=<64 hex digits>`: the HMAC-SHA256 of the raw body under the deployment's telemetry secret.
pub fn parse_signature_header(value: Option<&str>) -> Result<[u8; 32], ApiError> {
    let value = required_header(
        value,
        SIGNATURE_HEADER,
        "v1=<hex HMAC-SHA256 of the raw body>",
    )?;
    let garbled = || {
        header_error(
            SIGNATURE_HEADER,
            "X-Telemetry-Signature must be v1=<64 hex digits> (HMAC-SHA256 of the raw body).",
        )
    };
    let hex = value.strip_prefix("v1=").ok_or_else(garbled)?;
    if hex.len() != 64 {
        return Err(garbled());
    }
    let mut tag = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => tag[i] = (hi * 16 + lo) as u8,
            _ => return Err(garbled()),
        }
    }
    Ok(tag)
}

pub fn invalid_signature() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidTelemetrySignature,
        "The signature does not match the body under this deployment's telemetry secret.",
    )
}

pub fn unknown_deployment() -> ApiError {
    ApiError::new(
        ErrorCode::UnknownDeployment,
        "No deployment with this id exists.",
    )
}

fn field_error(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(path, message)
}

fn is_id_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn id_text(obj: &Map<String, Value>, prefix: &str, name: &str) -> Result<String, ApiError> {
    let path = format!("{prefix}{name}");
    match obj.get(name) {
        None | Some(Value::Null) => Err(field_error(&path, "is required")),
        Some(Value::String(s)) if is_id_text(s) => Ok(s.clone()),
        Some(_) => Err(field_error(
            &path,
            format!("must be a string of 1 to {MAX_ID_LEN} characters from A-Z a-z 0-9 . _ : -"),
        )),
    }
}

fn counter(obj: &Map<String, Value>, prefix: &str, name: &str) -> Result<u64, ApiError> {
    let path = format!("{prefix}{name}");
    let value = obj
        .get(name)
        .ok_or_else(|| field_error(&path, "is required"))?;
    value
        .as_u64()
        .filter(|n| *n <= MAX_EVENT_COUNTER)
        .ok_or_else(|| {
            field_error(
                &path,
                format!("must be a whole number from 0 to {MAX_EVENT_COUNTER}"),
            )
        })
}

fn parse_event(value: &Value, prefix: &str) -> Result<TelemetryEvent, ApiError> {
    let obj = value.as_object().ok_or_else(|| {
        field_error(
            prefix.trim_end_matches('.'),
            "must be a telemetry event object",
        )
    })?;
    for key in obj.keys() {
        let known = key == "eventId"
            || key == "ts"
            || STRING_FIELDS.contains(&key.as_str())
            || COUNTER_FIELDS.contains(&key.as_str());
        if !known {
            return Err(field_error(
                &format!("{prefix}{key}"),
                "is not a telemetry v1 field",
            ));
        }
    }
    let event_id = match obj.get("eventId") {
        None | Some(Value::Null) => None,
        Some(_) => Some(id_text(obj, prefix, "eventId")?),
    };
    let ts = obj
        .get("ts")
        .ok_or_else(|| field_error(&format!("{prefix}ts"), "is required"))?
        .as_i64()
        .filter(|t| *t > 0)
        .ok_or_else(|| {
            field_error(
                &format!("{prefix}ts"),
                "must be milliseconds since the Unix epoch (a positive whole number)",
            )
        })?;
    Ok(TelemetryEvent {
        event_id,
        trace_id: id_text(obj, prefix, "traceId")?,
        user_id: id_text(obj, prefix, "userId")?,
        agent_id: id_text(obj, prefix, "agentId")?,
        deployment_id: id_text(obj, prefix, "deploymentId")?,
        runtime_provider: id_text(obj, prefix, "runtimeProvider")?,
        ts,
        counters: Counters {
            requests: counter(obj, prefix, "requests")?,
            input_tokens: counter(obj, prefix, "inputTokens")?,
            output_tokens: counter(obj, prefix, "outputTokens")?,
            compute_ms: counter(obj, prefix, "computeMs")?,
            errors: counter(obj, prefix, "errors")?,
        },
    })
}

/// Parses an authenticated report body: one event, or `{"events":[…]}` with 1 to `MAX_EVENTS_PER_REPORT`.
/// Any invalid event refuses the whole report.
pub fn parse_report(body: &[u8]) -> Result<Vec<TelemetryEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("The report is not valid JSON: {e}."),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "A report is one event object or {\"events\": [event, …]}.",
        ));
    };
    let Some(events) = obj.get("events") else {
        return Ok(vec![parse_event(&value, "")?]);
    };
    if let Some(other) = obj.keys().find(|k| *k != "events") {
        return Err(field_error(other, "a batch report holds only \"events\""));
    }
    let events = events
        .as_array()
        .ok_or_else(|| field_error("events", "must be an array of events"))?;
    if events.is_empty() {
        return Err(field_error("events", "must hold at least one event"));
    }
    if events.len() > MAX_EVENTS_PER_REPORT {
        return Err(ApiError::new(
            ErrorCode::TooManyEvents,
            format!(
                "A report holds at most {MAX_EVENTS_PER_REPORT} events; this one has {}. Split it.",
                events.len()
            ),
        )
        .with_details(json!({ "max": MAX_EVENTS_PER_REPORT, "got": events.len() })));
    }
    events
        .iter()
        .enumerate()
        .map(|(i, e)| parse_event(e, &format!("events[{i}].")))
        .collect()
}

/// Every event must name the deployment the report was signed for, with that deployment's user, agent and
/// runtime, and carry a timestamp inside the accepted window around `now`.
pub fn check_events(
    events: &[TelemetryEvent],
    owner: &DeploymentOwner<'_>,
    now: i64,
) -> Result<(), ApiError> {
    let (earliest, latest) = (now - MAX_EVENT_AGE_MS, now + MAX_EVENT_SKEW_MS);
    for (index, e) in events.iter().enumerate() {
        let mismatched = [
            (
                "deploymentId",
                e.deployment_id.as_str(),
                owner.deployment_id,
            ),
            ("userId", e.user_id.as_str(), owner.user_id),
            ("agentId", e.agent_id.as_str(), owner.agent_id),
            (
                "runtimeProvider",
                e.runtime_provider.as_str(),
                owner.runtime_provider,
            ),
        ]
        .into_iter()
        .find(|(_, got, want)| got != want);
        if let Some((field, _, _)) = mismatched {
            return Err(ApiError::new(
                ErrorCode::TelemetryMismatch,
                format!("Event {index}'s {field} is not the signing deployment's."),
            )
            .with_details(json!({ "index": index, "field": field })));
        }
        if e.ts < earliest || e.ts > latest {
            return Err(ApiError::new(
                ErrorCode::TimestampOutOfWindow,
                format!(
                    "Event {index}'s ts is outside the accepted window: at most {} minutes old and {} minutes ahead.",
                    MAX_EVENT_AGE_MS / 60_000,
                    MAX_EVENT_SKEW_MS / 60_000
                ),
            )
            .with_details(json!({
                "index": index,
                "ts": e.ts,
                "earliest": earliest,
                "latest": latest,
            })));
        }
    }
    Ok(())
}

/// Limits audit rows for rejected reports to `MAX_ROWS` per minute per isolate, so a flood of garbage costs
/// at most that many writes. Rejects past the limit are counted, and the next row written carries the count.
#[derive(Debug)]
pub struct RejectThrottle {
    window_start_ms: i64,
    written: u32,
    suppressed: u64,
    max_rows: u32,
}

impl Default for RejectThrottle {
    fn default() -> Self {
        RejectThrottle::with_limit(Self::MAX_ROWS)
    }
}

impl RejectThrottle {
    pub const WINDOW_MS: i64 = 60_000;
    pub const MAX_ROWS: u32 = 60;

    /// At most `max_rows` rows a minute.
    pub fn with_limit(max_rows: u32) -> Self {
        RejectThrottle {
            window_start_ms: 0,
            written: 0,
            suppressed: 0,
            max_rows,
        }
    }

    /// `Some(suppressed)` when this reject should be written (with the rejects it stands for besides itself),
    /// `None` when it is only counted.
    pub fn admit(&mut self, now: i64) -> Option<u64> {
        if now - self.window_start_ms >= Self::WINDOW_MS || now < self.window_start_ms {
            self.window_start_ms = now;
            self.written = 0;
        }
        if self.written >= self.max_rows {
            self.suppressed += 1;
            return None;
        }
        self.written += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Puts back a count whose row could not be written, so it rides on the next one.
    pub fn restore(&mut self, suppressed: u64) {
        self.suppressed += suppressed;
    }

    fn window_start_ms(&self) -> i64 {
        self.window_start_ms
    }
}

/// One `RejectThrottle` per key (a user), in a bounded map: one caller's flood of refusals neither writes a row
/// each nor uses up another caller's rows.
#[derive(Debug)]
pub struct KeyedThrottle {
    per_key: std::collections::HashMap<String, RejectThrottle>,
    max_rows: u32,
    capacity: usize,
}

impl KeyedThrottle {
    pub fn new(max_rows: u32, capacity: usize) -> Self {
        KeyedThrottle {
            per_key: std::collections::HashMap::new(),
            max_rows,
            capacity,
        }
    }

    /// As `RejectThrottle::admit`, for `key`. A key pushed out of a full map (the one whose window started
    /// longest ago) loses its count of suppressed refusals.
    pub fn admit(&mut self, key: &str, now: i64) -> Option<u64> {
        super::bounded_map::make_room_for(
            &mut self.per_key,
            key,
            self.capacity,
            RejectThrottle::window_start_ms,
        );
        let max_rows = self.max_rows;
        self.per_key
            .entry(key.to_owned())
            .or_insert_with(|| RejectThrottle::with_limit(max_rows))
            .admit(now)
    }

    pub fn restore(&mut self, key: &str, suppressed: u64) {
        if let Some(throttle) = self.per_key.get_mut(key) {
            throttle.restore(suppressed);
        }
    }
}

#[cfg(test)]
mod tests;
