//! The SSE relay: turns the agent's `text/event-stream` bytes, chunk by chunk as they arrive, into the client's
//! stream `meta → delta* → usage? → done | error` (DESIGN.md §3). The gateway writes `meta` itself (the agent's
//! would carry the runtime session id), re-encodes every event it forwards, and ends a stream that breaks the
//! order, stops early or fails with an `error` event. Nothing here buffers more than one event.

use super::error::{ApiError, ErrorCode};
use super::invoke::{parse_answer, AnswerUsage};
use serde_json::{json, Value};

/// Largest single upstream event; a bigger one ends the stream with an error rather than growing memory.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// One server-sent event as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// An incremental `text/event-stream` parser (WHATWG rules for `event:` and `data:`; `id:`, `retry:` and
/// comments are ignored). Chunk boundaries may fall anywhere, including inside a UTF-8 character or a CRLF.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
    pending_bytes: usize,
    last_was_cr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge;

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.last_was_cr {
                self.last_was_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.last_was_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        out.push(event);
                    }
                }
                _ => {
                    self.line.push(b);
                    self.pending_bytes += 1;
                    if self.pending_bytes > MAX_EVENT_BYTES {
                        return Err(EventTooLarge);
                    }
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            let event = std::mem::take(&mut self.event);
            self.pending_bytes = 0;
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data: data.join("\n"),
            });
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

pub fn encode(event: &str, data: &Value) -> Vec<u8> {
    format!("event: {event}\ndata: {data}\n\n").into_bytes()
}

/// The `error` event for a gateway-side failure.
pub fn error_event(err: &ApiError) -> Vec<u8> {
    let mut data = json!({
        "code": err.code.as_str(),
        "message": err.message,
        "retryable": err.retryable(),
    });
    if let Some(details) = &err.details {
        data["details"] = details.clone();
    }
    encode("error", &data)
}

/// The gateway's first event.
pub fn meta_event(trace_id: &str, session_id: &str, deployment_id: &str) -> Vec<u8> {
    encode(
        "meta",
        &json!({ "traceId": trace_id, "sessionId": session_id, "deploymentId": deployment_id }),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Deltas,
    AfterUsage,
    Finished,
}

/// Why a relay ended, for gateway-side metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutcome {
    Done,
    AgentError,
    Failed(ErrorCode),
}

/// The per-stream state machine between the agent and the client.
#[derive(Debug)]
pub struct StreamRelay {
    parser: SseParser,
    phase: Phase,
    outcome: Option<StreamOutcome>,
    /// The `usage` event the agent sent, if any (recorded by metering).
    usage: Option<AnswerUsage>,
}

impl Default for StreamRelay {
    fn default() -> Self {
        StreamRelay {
            parser: SseParser::default(),
            phase: Phase::Deltas,
            outcome: None,
            usage: None,
        }
    }
}

fn protocol_error(message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UpstreamInvalidResponse,
        format!("The agent's stream broke invoke/v1: {message}."),
    )
}

impl StreamRelay {
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    pub fn outcome(&self) -> Option<StreamOutcome> {
        self.outcome
    }

    /// The token counts the agent's `usage` event carried, once it passed.
    pub fn usage(&self) -> Option<AnswerUsage> {
        self.usage
    }

    /// Bytes to send the client for one upstream chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.is_finished() {
            return Vec::new();
        }
        let events = match self.parser.feed(chunk) {
            Ok(events) => events,
            Err(EventTooLarge) => {
                return self.fail(&protocol_error(&format!(
                    "an event is larger than {MAX_EVENT_BYTES} bytes"
                )))
            }
        };
        let mut out = Vec::new();
        for event in events {
            out.extend(self.forward(event));
            if self.is_finished() {
                break;
            }
        }
        out
    }

    fn forward(&mut self, event: SseEvent) -> Vec<u8> {
        let data: Option<Value> = serde_json::from_str(&event.data).ok();
        match (event.event.as_str(), self.phase) {
            // The agent's meta names the runtime session: never forwarded (the gateway sent its own).
            ("meta", _) => Vec::new(),
            ("delta", Phase::Deltas) => {
                match data
                    .as_ref()
                    .and_then(|d| d.get("text"))
                    .and_then(Value::as_str)
                {
                    Some(text) => encode("delta", &json!({ "text": text })),
                    None => self.fail(&protocol_error("a delta without a text string")),
                }
            }
            ("usage", Phase::Deltas) => match AnswerUsage::from_json(data.as_ref()) {
                Some(usage) => {
                    self.phase = Phase::AfterUsage;
                    self.usage = Some(usage);
                    encode("usage", &usage.to_json())
                }
                None => self.fail(&protocol_error("a usage event without token counts")),
            },
            ("done", _) => {
                self.finish(StreamOutcome::Done);
                encode("done", &json!({}))
            }
            ("error", _) => {
                let d = data.unwrap_or(Value::Null);
                let message = d
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("The agent reported an error.");
                let mut err = ApiError::new(
                    ErrorCode::AgentError,
                    super::invoke::snippet(message.as_bytes()),
                );
                err.retryable_override =
                    Some(d.get("retryable").and_then(Value::as_bool).unwrap_or(false));
                if let Some(code) = d.get("code").and_then(Value::as_str) {
                    err = err.with_details(
                        json!({ "agentCode": super::invoke::snippet(code.as_bytes()) }),
                    );
                }
                self.finish(StreamOutcome::AgentError);
                error_event(&err)
            }
            ("delta" | "usage", _) => {
                self.fail(&protocol_error(&format!("`{}` after `usage`", event.event)))
            }
            // Comments, keep-alives and events the contract does not name are dropped.
            _ => Vec::new(),
        }
    }

    fn finish(&mut self, outcome: StreamOutcome) {
        self.phase = Phase::Finished;
        self.outcome = Some(outcome);
    }

    /// Ends the stream with an `error` event (unless it already ended).
    pub fn fail(&mut self, err: &ApiError) -> Vec<u8> {
        if self.is_finished() {
            return Vec::new();
        }
        self.finish(StreamOutcome::Failed(err.code));
        error_event(err)
    }

    /// The agent's stream ended. Without `done` or `error` that is an interrupted stream.
    pub fn end(&mut self) -> Vec<u8> {
        self.fail(&ApiError::new(
            ErrorCode::UpstreamInterrupted,
            "The agent's stream ended before `done`.",
        ))
    }

    /// A whole non-SSE 2xx answer as events: an invoke/v1 JSON answer becomes `delta` + `usage?` + `done`,
    /// any other text one `delta` and `done`.
    pub fn wrap_whole(&mut self, content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if content_type.contains("json") {
            let parsed = parse_answer(body);
            let text = parsed
                .as_ref()
                .and_then(|v| v.get("output"))
                .and_then(|o| o.get("text"))
                .and_then(Value::as_str);
            let Some(text) = text else {
                return self.fail(&protocol_error("a JSON answer that is not invoke/v1"));
            };
            if !text.is_empty() {
                out.extend(encode("delta", &json!({ "text": text })));
            }
            if let Some(usage) =
                AnswerUsage::from_json(parsed.as_ref().and_then(|v| v.get("usage")))
            {
                self.usage = Some(usage);
                out.extend(encode("usage", &usage.to_json()));
            }
        } else {
            let text = String::from_utf8_lossy(body);
            if !text.is_empty() {
                out.extend(encode("delta", &json!({ "text": text })));
            }
        }
        self.finish(StreamOutcome::Done);
        out.extend(encode("done", &json!({})));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let mut p = SseParser::default();
        p.feed(bytes)
            .unwrap()
            .into_iter()
            .map(|e| (e.event, serde_json::from_str(&e.data).unwrap()))
            .collect()
    }

    fn names(bytes: &[u8]) -> Vec<String> {
        events(bytes).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn parses_across_arbitrary_chunk_boundaries() {
        let stream = "event: delta\r\ndata: {\"text\":\"h\u{e9}\"}\r\n\r\n: comment\n\nevent: done\ndata: {}\n\n";
        let bytes = stream.as_bytes();
        for split in 0..bytes.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&bytes[..split]).unwrap();
            got.extend(p.feed(&bytes[split..]).unwrap());
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0].data, "{\"text\":\"h\u{e9}\"}");
            assert_eq!(got[1].event, "done");
        }
    }

    #[test]
    fn multi_line_data_and_default_event_name() {
        let mut p = SseParser::default();
        let got = p.feed(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!(
            got,
            vec![SseEvent {
                event: "message".into(),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn relays_in_order_and_drops_the_agents_meta() {
        let mut r = StreamRelay::default();
        let mut out = r.feed(b"event: meta\ndata: {\"sessionId\":\"rts_runtime\"}\n\nevent: delta\ndata: {\"text\":\"a\"}\n\n");
        out.extend(r.feed(b"event: delta\ndata: {\"text\":\"b\",\"x\":1}\n\nevent: usage\ndata: {\"inputTokens\":1,\"outputTokens\":2}\n\nevent: done\ndata: {}\n\n"));
        assert_eq!(names(&out), ["delta", "delta", "usage", "done"]);
        assert!(!String::from_utf8_lossy(&out).contains("rts_runtime"));
        assert_eq!(events(&out)[1].1, json!({"text": "b"}));
        assert!(r.is_finished());
        assert_eq!(r.outcome(), Some(StreamOutcome::Done));
        assert_eq!(
            r.usage(),
            Some(AnswerUsage {
                input_tokens: 1,
                output_tokens: 2
            })
        );
        assert!(r
            .feed(b"event: delta\ndata: {\"text\":\"late\"}\n\n")
            .is_empty());
        assert!(
            r.end().is_empty(),
            "a finished stream gets no second ending"
        );
    }

    #[test]
    fn an_early_end_or_a_broken_order_ends_with_an_error() {
        let mut r = StreamRelay::default();
        let mut out = r.feed(b"event: delta\ndata: {\"text\":\"a\"}\n\n");
        out.extend(r.end());
        let evs = events(&out);
        assert_eq!(evs.last().unwrap().0, "error");
        assert_eq!(evs.last().unwrap().1["code"], "upstream_interrupted");
        assert_eq!(evs.last().unwrap().1["retryable"], true);

        let mut r = StreamRelay::default();
        let out = r.feed(b"event: usage\ndata: {\"inputTokens\":1,\"outputTokens\":1}\n\nevent: delta\ndata: {\"text\":\"a\"}\n\nevent: done\ndata: {}\n\n");
        assert_eq!(names(&out), ["usage", "error"]);
        assert_eq!(
            r.outcome(),
            Some(StreamOutcome::Failed(ErrorCode::UpstreamInvalidResponse))
        );

        let mut r = StreamRelay::default();
        assert_eq!(
            names(&r.feed(b"event: delta\ndata: not json\n\n")),
            ["error"]
        );
    }

    #[test]
    fn the_agents_error_event_is_passed_on_under_a_stable_code() {
        let mut r = StreamRelay::default();
        let out = r.feed(b"event: error\ndata: {\"code\":\"model_overloaded\",\"message\":\"busy\",\"retryable\":true}\n\n");
        let evs = events(&out);
        assert_eq!(evs[0].0, "error");
        assert_eq!(evs[0].1["code"], "agent_error");
        assert_eq!(evs[0].1["retryable"], true);
        assert_eq!(evs[0].1["details"]["agentCode"], "model_overloaded");
        assert_eq!(r.outcome(), Some(StreamOutcome::AgentError));
    }

    #[test]
    fn an_oversized_event_ends_the_stream() {
        let mut r = StreamRelay::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 10];
        let out = r.feed(&big);
        assert_eq!(names(&out), ["error"]);
        assert!(r.is_finished());
    }

    #[test]
    fn whole_answers_are_wrapped_into_events() {
        let mut r = StreamRelay::default();
        let out = r.wrap_whole(
            "application/json",
            br#"{"protocol":"invoke/v1","output":{"text":"hi there"},"usage":{"inputTokens":2,"outputTokens":2}}"#,
        );
        assert_eq!(names(&out), ["delta", "usage", "done"]);
        assert_eq!(events(&out)[0].1["text"], "hi there");
        assert_eq!(r.usage().map(|u| u.input_tokens), Some(2));

        let mut r = StreamRelay::default();
        assert_eq!(
            names(&r.wrap_whole("text/plain", b"plain words")),
            ["delta", "done"]
        );

        let mut r = StreamRelay::default();
        assert_eq!(
            names(&r.wrap_whole("application/json", b"{\"nope\":1}")),
            ["error"]
        );
    }

    #[test]
    fn meta_names_the_client_session() {
        let evs = events(&meta_event("trc_1", "conv-1", "dep_1"));
        assert_eq!(evs[0].0, "meta");
        assert_eq!(
            evs[0].1,
            json!({"traceId": "trc_1", "sessionId": "conv-1", "deploymentId": "dep_1"})
        );
    }
}
