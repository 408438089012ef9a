use super::*;

const NOW: i64 = 1_795_000_000_000;

fn event(extra: Value) -> Value {
    let mut e = json!({
        "eventId": "ev-1", "traceId": "trc_1", "userId": "usr_1", "agentId": "agt_1",
        "deploymentId": "dep_1", "runtimeProvider": "cloudflare", "ts": NOW,
        "requests": 1, "inputTokens": 2, "outputTokens": 3, "computeMs": 4, "errors": 0
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            e.as_object_mut().unwrap().remove(k);
        } else {
            e[k] = v.clone();
        }
    }
    e
}

fn parse(v: &Value) -> Result<Vec<TelemetryEvent>, ApiError> {
    parse_report(v.to_string().as_bytes())
}

const OWNER: DeploymentOwner<'static> = DeploymentOwner {
    deployment_id: "dep_1",
    user_id: "usr_1",
    agent_id: "agt_1",
    runtime_provider: "cloudflare",
};

#[test]
fn signature_header_is_v1_and_64_hex_digits() {
    let hex = "ab".repeat(32);
    assert_eq!(
        parse_signature_header(Some(&format!("v1={hex}"))).unwrap(),
        [0xab; 32]
    );
    assert_eq!(
        parse_signature_header(Some(&format!(" v1={} ", hex.to_uppercase()))).unwrap(),
        [0xab; 32]
    );
    for bad in [
        None,
        Some(""),
        Some("v2=abab"),
        Some(&*hex),
        Some("v1="),
        Some(&*format!("v1={}", &hex[..62])),
        Some(&*format!("v1={hex}00")),
        Some(&*format!("v1={}zz", &hex[..62])),
        Some(&*format!("v1={}é", &hex[..62])),
    ] {
        let err = parse_signature_header(bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTelemetryHeaders, "{bad:?}");
    }
}

#[test]
fn deployment_header_must_be_a_deployment_id() {
    let id = format!("dep_{}", "0".repeat(24));
    assert_eq!(parse_deployment_header(Some(&id)).unwrap().as_str(), id);
    for bad in [
        None,
        Some(""),
        Some("agt_000000000000000000000000"),
        Some("dep_x"),
    ] {
        assert_eq!(
            parse_deployment_header(bad).unwrap_err().code,
            ErrorCode::InvalidTelemetryHeaders
        );
    }
}

#[test]
fn one_event_or_a_batch() {
    let single = parse(&event(json!({}))).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].counters.output_tokens, 3);
    let batch =
        parse(&json!({"events": [event(json!({})), event(json!({"eventId": "ev-2"}))]})).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1].event_id.as_deref(), Some("ev-2"));
}

#[test]
fn dedupe_key_prefers_the_event_id_and_keeps_namespaces_apart() {
    let with_id = &parse(&event(json!({"eventId": "x"}))).unwrap()[0];
    let without = &parse(&event(json!({"eventId": null, "traceId": "x"}))).unwrap()[0];
    assert_eq!(with_id.dedupe_key(), "e:x");
    assert_eq!(without.dedupe_key(), "t:x");
}

#[test]
fn every_malformed_report_is_refused_with_its_path() {
    let cases: Vec<(Vec<u8>, ErrorCode, Option<&str>)> = vec![
        (b"{not json".to_vec(), ErrorCode::InvalidJson, None),
        (b"[1,2]".to_vec(), ErrorCode::InvalidBody, None),
        (
            event(json!({"traceId": null})).to_string().into_bytes(),
            ErrorCode::ValidationFailed,
            Some("traceId"),
        ),
        (
            event(json!({"inputTokens": -1})).to_string().into_bytes(),
            ErrorCode::ValidationFailed,
            Some("inputTokens"),
        ),
        (
            event(json!({"computeMs": 1.5})).to_string().into_bytes(),
            ErrorCode::ValidationFailed,
            Some("computeMs"),
        ),
        (
            event(json!({"errors": MAX_EVENT_COUNTER + 1}))
                .to_string()
                .into_bytes(),
            ErrorCode::ValidationFailed,
            Some("errors"),
        ),
        (
            event(json!({"ts": "yesterday"})).to_string().into_bytes(),
            ErrorCode::ValidationFailed,
            Some("ts"),
        ),
        (
            event(json!({"agentId": "has space"}))
                .to_string()
                .into_bytes(),
            ErrorCode::ValidationFailed,
            Some("agentId"),
        ),
        (
            event(json!({"surprise": 1})).to_string().into_bytes(),
            ErrorCode::ValidationFailed,
            Some("surprise"),
        ),
        (
            json!({"events": []}).to_string().into_bytes(),
            ErrorCode::ValidationFailed,
            Some("events"),
        ),
        (
            json!({"events": [event(json!({})), event(json!({"requests": null}))]})
                .to_string()
                .into_bytes(),
            ErrorCode::ValidationFailed,
            Some("events[1].requests"),
        ),
        (
            json!({"events": [event(json!({}))], "extra": 1})
                .to_string()
                .into_bytes(),
            ErrorCode::ValidationFailed,
            Some("extra"),
        ),
        (
            json!({"events": vec![event(json!({})); MAX_EVENTS_PER_REPORT + 1]})
                .to_string()
                .into_bytes(),
            ErrorCode::TooManyEvents,
            None,
        ),
    ];
    for (body, code, field) in cases {
        let err = parse_report(&body).unwrap_err();
        assert_eq!(err.code, code, "{}", String::from_utf8_lossy(&body));
        if let Some(field) = field {
            assert_eq!(err.details.as_ref().unwrap()["field"], field);
        }
    }
    // The largest batch fits the size limit with room to spare.
    let full = json!({"events": vec![event(json!({})); MAX_EVENTS_PER_REPORT]}).to_string();
    assert!(full.len() < MAX_REPORT_BYTES / 2, "{}", full.len());
    assert_eq!(
        parse_report(full.as_bytes()).unwrap().len(),
        MAX_EVENTS_PER_REPORT
    );
}

#[test]
fn events_must_belong_to_the_signing_deployment() {
    let ok = parse(&event(json!({}))).unwrap();
    assert!(check_events(&ok, &OWNER, NOW).is_ok());
    for (field, value) in [
        ("userId", "usr_2"),
        ("agentId", "agt_2"),
        ("deploymentId", "dep_2"),
        ("runtimeProvider", "agentcore"),
    ] {
        let batch =
            parse(&json!({"events": [event(json!({})), event(json!({ field: value }))]})).unwrap();
        let err = check_events(&batch, &OWNER, NOW).unwrap_err();
        assert_eq!(err.code, ErrorCode::TelemetryMismatch);
        assert_eq!(err.details.unwrap(), json!({"index": 1, "field": field}));
    }
}

#[test]
fn timestamps_must_fall_inside_the_window() {
    for (ts, ok) in [
        (NOW, true),
        (NOW - MAX_EVENT_AGE_MS, true),
        (NOW - MAX_EVENT_AGE_MS - 1, false),
        (NOW + MAX_EVENT_SKEW_MS, true),
        (NOW + MAX_EVENT_SKEW_MS + 1, false),
    ] {
        let events = parse(&event(json!({ "ts": ts }))).unwrap();
        let result = check_events(&events, &OWNER, NOW);
        assert_eq!(result.is_ok(), ok, "{ts}");
        if let Err(e) = result {
            assert_eq!(e.code, ErrorCode::TimestampOutOfWindow);
        }
    }
}

#[test]
fn the_throttle_writes_a_bounded_number_of_rows_and_carries_the_rest() {
    let mut t = RejectThrottle::default();
    let mut rows = Vec::new();
    for i in 0..100 {
        if let Some(s) = t.admit(NOW + i) {
            rows.push(s);
        }
    }
    assert_eq!(rows.len(), RejectThrottle::MAX_ROWS as usize);
    assert!(rows.iter().all(|s| *s == 0));
    // The next window's first row stands for the ones that were only counted.
    assert_eq!(
        t.admit(NOW + RejectThrottle::WINDOW_MS),
        Some(100 - u64::from(RejectThrottle::MAX_ROWS))
    );
    assert_eq!(t.admit(NOW + RejectThrottle::WINDOW_MS + 1), Some(0));
    // A failed write puts its count back.
    t.restore(7);
    assert_eq!(t.admit(NOW + RejectThrottle::WINDOW_MS + 2), Some(7));
    // Every reject is accounted for exactly once: rows plus what they carried.
    let mut t = RejectThrottle::default();
    let (mut written, mut carried) = (0u64, 0u64);
    for i in 0..1_000 {
        if let Some(s) = t.admit(NOW + i * 500) {
            written += 1;
            carried += s;
        }
    }
    assert_eq!(written + carried + t.suppressed, 1_000);
}

#[test]
fn a_keyed_throttle_gives_each_key_its_own_rows() {
    let mut t = KeyedThrottle::new(3, 2);
    let written = |t: &mut KeyedThrottle, key: &str, at: i64| {
        (0..10).filter(|i| t.admit(key, at + i).is_some()).count()
    };
    assert_eq!(written(&mut t, "usr_flood", NOW), 3);
    // Another user's refusals are not held back by the first one's flood.
    assert_eq!(written(&mut t, "usr_quiet", NOW), 3);
    // The flood's next row, a window later, carries what was only counted.
    assert_eq!(
        t.admit("usr_flood", NOW + RejectThrottle::WINDOW_MS),
        Some(7)
    );
    t.restore("usr_flood", 2);
    assert_eq!(
        t.admit("usr_flood", NOW + RejectThrottle::WINDOW_MS + 1),
        Some(2)
    );
    // The map holds at most 2 keys: a third pushes out the one whose window started longest ago.
    assert_eq!(
        written(&mut t, "usr_third", NOW + RejectThrottle::WINDOW_MS),
        3
    );
    assert_eq!(t.per_key.len(), 2);
    assert!(!t.per_key.contains_key("usr_quiet"));
}
