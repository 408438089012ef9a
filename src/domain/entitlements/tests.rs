use super::*;
use serde_json::json;

#[test]
fn layers_apply_field_by_field() {
    let tiers = TierOverrides::parse(Some(
        r#"{"free":{"requestsPerPeriod":10,"streaming":false}}"#,
    ))
    .unwrap();
    let user = Overrides {
        requests_per_period: Some(7),
        ..Overrides::default()
    };
    let e = tiers.resolve(Tier::Free, &user);
    assert_eq!(e.requests_per_period, 7);
    assert!(!e.streaming);
    assert_eq!(e.max_agents, 3, "untouched fields keep the tier default");
    let pro = tiers.resolve(Tier::Pro, &Overrides::default());
    assert_eq!(pro, Entitlements::tier_default(Tier::Pro));
}

#[test]
fn configuration_errors_name_the_problem() {
    assert!(TierOverrides::parse(None).unwrap() == TierOverrides::default());
    assert!(TierOverrides::parse(Some("  ")).is_ok());
    let typo = TierOverrides::parse(Some(r#"{"free":{"requestPerPeriod":1}}"#)).unwrap_err();
    assert!(typo.contains("requestPerPeriod"), "{typo}");
    let tier = TierOverrides::parse(Some(r#"{"gold":{}}"#)).unwrap_err();
    assert!(tier.contains("gold"), "{tier}");
    let bad = TierOverrides::parse(Some(r#"{"pro":{"cpuMsPerInvocation":0}}"#)).unwrap_err();
    assert!(bad.contains("pro.cpuMsPerInvocation"), "{bad}");
    let negative = TierOverrides::parse(Some(r#"{"pro":{"maxAgents":-1}}"#));
    assert!(negative.is_err());
}

#[test]
fn a_change_sets_clears_and_keeps() {
    let current = Overrides {
        requests_per_period: Some(5),
        streaming: Some(false),
        ..Overrides::default()
    };
    let change =
        OverridesChange::from_json(json!({"requestsPerPeriod": null, "maxAgents": 9})).unwrap();
    let next = change.apply_to(&current).unwrap();
    assert_eq!(next.requests_per_period, None);
    assert_eq!(next.max_agents, Some(9));
    assert_eq!(next.streaming, Some(false));
}

#[test]
fn bad_changes_are_refused() {
    for body in [
        json!({}),
        json!([]),
        json!({"requestsPerPeriod": "10"}),
        json!({"requestsPerPeriod": 1.5}),
        json!({"unknown": 1}),
        json!({"userId": "usr_x"}),
    ] {
        assert!(OverridesChange::from_json(body.clone()).is_err(), "{body}");
    }
    let unknown_provider =
        OverridesChange::from_json(json!({"runtimeProviders": ["lambda"]})).unwrap();
    let err = unknown_provider
        .apply_to(&Overrides::default())
        .unwrap_err();
    assert_eq!(err.details.unwrap()["field"], "runtimeProviders");
    let zero_cpu = OverridesChange::from_json(json!({"cpuMsPerInvocation": 0})).unwrap();
    assert!(zero_cpu.apply_to(&Overrides::default()).is_err());
    // Code per deployment: between 64 KiB and the platform's 10 MiB ceiling.
    for bytes in [1024, 10 * 1024 * 1024 + 1] {
        let change = OverridesChange::from_json(json!({ "bundleBytes": bytes })).unwrap();
        let err = change.apply_to(&Overrides::default()).unwrap_err();
        assert_eq!(err.details.unwrap()["field"], "bundleBytes");
    }
    let fine = OverridesChange::from_json(json!({ "bundleBytes": 1024 * 1024 })).unwrap();
    assert_eq!(
        fine.apply_to(&Overrides::default()).unwrap().bundle_bytes,
        Some(1024 * 1024)
    );
}

#[test]
fn entitlements_cached_before_bundle_bytes_existed_still_read() {
    let mut old = serde_json::to_value(Entitlements::tier_default(Tier::Free)).unwrap();
    old.as_object_mut().unwrap().remove("bundleBytes");
    let read: Entitlements = serde_json::from_value(old).unwrap();
    assert_eq!(read.bundle_bytes, 10 * 1024 * 1024);
    assert_eq!(
        Entitlements::tier_default(Tier::Free).bundle_bytes,
        3 * 1024 * 1024
    );
}

#[test]
fn stored_overrides_round_trip() {
    let o = Overrides {
        runtime_providers: Some(vec!["agentcore".into()]),
        ..Overrides::default()
    };
    let raw = serde_json::to_string(&o).unwrap();
    assert_eq!(raw, r#"{"runtimeProviders":["agentcore"]}"#);
    assert_eq!(parse_stored_overrides(Some(&raw)).unwrap(), o);
    assert!(parse_stored_overrides(None).unwrap().is_empty());
    assert!(parse_stored_overrides(Some("{")).is_err());
}

#[test]
fn stored_tiers_round_trip() {
    for tier in [Tier::Free, Tier::Pro, Tier::Enterprise] {
        assert_eq!(Tier::parse_stored(tier.as_str()).unwrap(), tier);
    }
    assert!(Tier::parse_stored("gold").is_err());
}
