use super::*;
use crate::app::memory::{MemoryStore, RecordingGate, TestClock};
use crate::app::users::resolve_user;
use crate::auth::Identity;
use crate::domain::ErrorCode;
use pollster::block_on;

fn user(store: &MemoryStore, clock: &TestClock, sub: &str) -> User {
    let identity = Identity {
        issuer: "https://iss".into(),
        subject: sub.into(),
    };
    block_on(resolve_user(store, clock, &identity)).unwrap()
}

fn create(
    store: &MemoryStore,
    clock: &TestClock,
    owner: &User,
    name: &str,
) -> Result<Agent, ApiError> {
    let req: CreateAgentRequest =
        serde_json::from_value(serde_json::json!({ "name": name })).unwrap();
    block_on(create_agent(store, clock, owner, req, 100))
}

#[test]
fn names_are_unique_per_user_not_globally() {
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let bob = user(&store, &clock, "bob");
    create(&store, &clock, &alice, "support-bot").unwrap();
    assert_eq!(
        create(&store, &clock, &alice, "support-bot")
            .unwrap_err()
            .code,
        ErrorCode::AgentNameTaken
    );
    assert!(create(&store, &clock, &bob, "support-bot").is_ok());
}

#[test]
fn the_agent_limit_counts_live_agents_only() {
    let gate = RecordingGate::default();
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let make = |name: &str| {
        let req: CreateAgentRequest =
            serde_json::from_value(serde_json::json!({ "name": name })).unwrap();
        block_on(create_agent(&store, &clock, &alice, req, 2))
    };
    let first = make("one").unwrap();
    make("two").unwrap();
    let err = make("three").unwrap_err();
    assert_eq!(err.code, ErrorCode::AgentLimitReached);
    assert_eq!(err.details.unwrap()["limit"], 2);
    block_on(delete_agent(
        &store,
        &gate,
        &clock,
        &alice,
        first.id.as_str(),
    ))
    .unwrap();
    make("three").unwrap();
}

#[test]
fn another_users_agent_is_indistinguishable_from_a_missing_one() {
    let gate = RecordingGate::default();
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let mallory = user(&store, &clock, "mallory");
    let agent = create(&store, &clock, &alice, "private-bot").unwrap();
    let id = agent.id.as_str();
    let missing = "agt_000000000000000000000000";
    for raw in [id, missing, "not-an-id"] {
        assert_eq!(
            block_on(get_agent(&store, &mallory, raw)).unwrap_err(),
            ApiError::agent_not_found()
        );
        let rename: UpdateAgentRequest =
            serde_json::from_value(serde_json::json!({"name": "stolen"})).unwrap();
        assert_eq!(
            block_on(update_agent(&store, &clock, &mallory, raw, rename)).unwrap_err(),
            ApiError::agent_not_found()
        );
        assert_eq!(
            block_on(set_agent_status(
                &store,
                &gate,
                &clock,
                &mallory,
                raw,
                AgentStatus::Disabled
            ))
            .unwrap_err(),
            ApiError::agent_not_found()
        );
        assert_eq!(
            block_on(delete_agent(&store, &gate, &clock, &mallory, raw)).unwrap_err(),
            ApiError::agent_not_found()
        );
    }
    assert_eq!(block_on(get_agent(&store, &alice, id)).unwrap(), agent);
    let page = block_on(list_agents(&store, &mallory, None, None)).unwrap();
    assert!(page.agents.is_empty());
}

#[test]
fn pages_are_newest_first_and_cover_everything_once() {
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let mut created = Vec::new();
    for i in 0..7 {
        // Two agents per millisecond: the id breaks ties in the sort key.
        if i % 2 == 0 {
            clock.advance(1);
        }
        created.push(create(&store, &clock, &alice, &format!("agent-{i}")).unwrap());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = block_on(list_agents(&store, &alice, cursor.as_deref(), Some("3"))).unwrap();
        assert!(page.agents.len() <= 3);
        seen.extend(page.agents.into_iter().map(|a| a.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected = created.clone();
    expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    assert_eq!(seen, expected.into_iter().map(|a| a.id).collect::<Vec<_>>());
}

#[test]
fn invalid_updates_change_nothing() {
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let agent = create(&store, &clock, &alice, "keep-me").unwrap();
    create(&store, &clock, &alice, "taken-name").unwrap();
    clock.advance(10);
    for body in [
        serde_json::json!({"name": "Bad Name", "description": "new"}),
        serde_json::json!({"name": "ok-name", "description": "bell\u{7}"}),
        serde_json::json!({"name": "taken-name"}),
    ] {
        let req: UpdateAgentRequest = serde_json::from_value(body).unwrap();
        assert!(block_on(update_agent(&store, &clock, &alice, agent.id.as_str(), req)).is_err());
    }
    assert_eq!(
        block_on(get_agent(&store, &alice, agent.id.as_str())).unwrap(),
        agent
    );
}

#[test]
fn updates_disable_enable_and_delete() {
    let gate = RecordingGate::default();
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let agent = create(&store, &clock, &alice, "bot-one").unwrap();
    let id = agent.id.as_str();
    clock.advance(5);
    let req: UpdateAgentRequest =
        serde_json::from_value(serde_json::json!({"description": "hello"})).unwrap();
    let updated = block_on(update_agent(&store, &clock, &alice, id, req)).unwrap();
    assert_eq!(updated.description.as_ref().unwrap().as_str(), "hello");
    assert_eq!(updated.updated_at, 1_005);
    assert_eq!(updated.name, agent.name);
    let cleared: UpdateAgentRequest =
        serde_json::from_value(serde_json::json!({"description": null})).unwrap();
    assert_eq!(
        block_on(update_agent(&store, &clock, &alice, id, cleared))
            .unwrap()
            .description,
        None
    );
    clock.advance(5);
    let empty: UpdateAgentRequest = serde_json::from_value(serde_json::json!({})).unwrap();
    let unchanged = block_on(update_agent(&store, &clock, &alice, id, empty)).unwrap();
    assert_eq!(
        unchanged.updated_at, 1_005,
        "an empty PATCH is not a change"
    );
    for _ in 0..2 {
        let disabled = block_on(set_agent_status(
            &store,
            &gate,
            &clock,
            &alice,
            id,
            AgentStatus::Disabled,
        ))
        .unwrap();
        assert_eq!(disabled.status, AgentStatus::Disabled);
    }
    let enabled = block_on(set_agent_status(
        &store,
        &gate,
        &clock,
        &alice,
        id,
        AgentStatus::Active,
    ))
    .unwrap();
    assert_eq!(enabled.status, AgentStatus::Active);
    block_on(delete_agent(&store, &gate, &clock, &alice, id)).unwrap();
    assert_eq!(
        block_on(get_agent(&store, &alice, id)).unwrap_err().code,
        ErrorCode::AgentNotFound
    );
    assert_eq!(
        block_on(delete_agent(&store, &gate, &clock, &alice, id))
            .unwrap_err()
            .code,
        ErrorCode::AgentNotFound
    );
    // The name is free again once the agent is deleted.
    assert!(create(&store, &clock, &alice, "bot-one").is_ok());
}

#[test]
fn create_ignores_a_client_supplied_user_id_and_rejects_unknown_fields() {
    let (store, clock) = (MemoryStore::default(), TestClock::new(1_000));
    let alice = user(&store, &clock, "alice");
    let bob = user(&store, &clock, "bob");
    let req: CreateAgentRequest =
        serde_json::from_value(serde_json::json!({"name": "mine", "userId": bob.id.as_str()}))
            .unwrap();
    let agent = block_on(create_agent(&store, &clock, &alice, req, 100)).unwrap();
    assert_eq!(agent.user_id, alice.id);
    assert!(block_on(get_agent(&store, &bob, agent.id.as_str())).is_err());
    assert!(serde_json::from_value::<CreateAgentRequest>(
        serde_json::json!({"name": "x", "status": "disabled"})
    )
    .is_err());
}

#[test]
fn status_changes_and_deletes_tell_the_gate_and_say_so_when_it_cannot_be_told() {
    let (store, clock, gate) = (
        MemoryStore::default(),
        TestClock::new(1_000),
        RecordingGate::default(),
    );
    let alice = user(&store, &clock, "alice");
    let agent = create(&store, &clock, &alice, "bot").unwrap();
    let id = agent.id.as_str();
    block_on(set_agent_status(
        &store,
        &gate,
        &clock,
        &alice,
        id,
        AgentStatus::Disabled,
    ))
    .unwrap();
    assert_eq!(
        gate.told.borrow().last(),
        Some(&(alice.id.clone(), Forget::Agent(id.into())))
    );
    gate.fail.set(true);
    let err = block_on(set_agent_status(
        &store,
        &gate,
        &clock,
        &alice,
        id,
        AgentStatus::Active,
    ))
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::DependencyUnavailable);
    // The change itself was saved; repeating the request tells the gate.
    assert_eq!(
        block_on(get_agent(&store, &alice, id)).unwrap().status,
        AgentStatus::Active
    );
    // A delete the gate could not hear of: the repeat finds the agent gone (404) and still tells the gate.
    let err = block_on(delete_agent(&store, &gate, &clock, &alice, id)).unwrap_err();
    assert_eq!(err.code, ErrorCode::DependencyUnavailable);
    gate.fail.set(false);
    let err = block_on(delete_agent(&store, &gate, &clock, &alice, id)).unwrap_err();
    assert_eq!(err.code, ErrorCode::AgentNotFound);
    assert_eq!(
        gate.told.borrow().last(),
        Some(&(alice.id.clone(), Forget::Agent(id.into())))
    );
}
