use super::*;
use crate::crypto::secret_box::EncryptionKey;
use pollster::block_on;
use std::cell::RefCell;

fn key(byte: &str) -> EncryptionKey {
    EncryptionKey::parse(&format!("hex:{}", byte.repeat(32))).unwrap()
}

/// The stored values, by place.
#[derive(Default)]
struct Stored {
    values: RefCell<Vec<SealedValue>>,
    /// A value to swap in (a secret set again) right after it is read, before the run writes.
    set_again: RefCell<Option<(SealedField, String)>>,
}

impl Stored {
    fn matching(&self, prefixes: &[String], under: bool, limit: u32) -> Vec<SealedValue> {
        self.values
            .borrow()
            .iter()
            .filter(|v| prefixes.iter().any(|p| v.sealed.starts_with(p)) == under)
            .take(limit as usize)
            .cloned()
            .collect()
    }
}

impl SealedStore for Stored {
    async fn sealed_under(&self, prefixes: &[String], limit: u32) -> StoreResult<Vec<SealedValue>> {
        let found = self.matching(prefixes, true, limit);
        if let Some((field, sealed)) = self.set_again.borrow_mut().take() {
            for v in self.values.borrow_mut().iter_mut() {
                if v.field == field {
                    v.sealed = sealed.clone();
                }
            }
        }
        Ok(found)
    }

    async fn sealed_not_under(
        &self,
        prefixes: &[String],
        limit: u32,
    ) -> StoreResult<Vec<SealedValue>> {
        Ok(self.matching(prefixes, false, limit))
    }

    async fn replace_sealed(&self, value: &SealedValue, resealed: &str) -> StoreResult<bool> {
        for v in self.values.borrow_mut().iter_mut() {
            if v.field == value.field && v.sealed == value.sealed {
                v.sealed = resealed.to_owned();
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn count_sealed_elsewhere(&self, prefix: &str) -> StoreResult<u64> {
        Ok(self
            .values
            .borrow()
            .iter()
            .filter(|v| !v.sealed.starts_with(prefix))
            .count() as u64)
    }
}

fn fields() -> Vec<SealedField> {
    vec![
        SealedField::AgentSecret {
            user_id: UserId::from_trusted("usr_1".into()),
            agent_id: AgentId::from_trusted("agt_1".into()),
            name: "OPENAI_KEY".into(),
        },
        SealedField::TelemetrySecret {
            deployment_id: "dep_1".into(),
        },
        SealedField::GatewaySecret {
            deployment_id: "dep_1".into(),
        },
    ]
}

fn sealed_under(keys: &Keyring) -> Stored {
    let stored = Stored::default();
    for (i, field) in fields().into_iter().enumerate() {
        let sealed = keys.seal(format!("value {i}").as_bytes(), &field.aad());
        stored
            .values
            .borrow_mut()
            .push(SealedValue { field, sealed });
    }
    stored
}

fn opened(stored: &Stored, keys: &Keyring) -> Vec<String> {
    stored
        .values
        .borrow()
        .iter()
        .map(|v| String::from_utf8(keys.open(&v.sealed, &v.field.aad()).unwrap()).unwrap())
        .collect()
}

#[test]
fn seal_with_key_1_add_key_2_reseal_remove_key_1_and_every_value_is_still_there() {
    let stored = sealed_under(&Keyring::from(key("01")));
    let rotating = Keyring::new(key("02"), vec![key("01")]);
    let run = block_on(reseal(&stored, &rotating, RESEAL_BATCH)).unwrap();
    assert_eq!(run.resealed, 3);
    assert_eq!(run.remaining, 0);
    assert_eq!(run.current_key_id, key("02").key_id());
    assert!(run.unreadable.is_empty());

    let after = Keyring::from(key("02"));
    assert_eq!(opened(&stored, &after), ["value 0", "value 1", "value 2"]);
    // A second run finds nothing to do.
    let again = block_on(reseal(&stored, &after, RESEAL_BATCH)).unwrap();
    assert_eq!((again.resealed, again.remaining), (0, 0));
}

#[test]
fn runs_are_bounded_and_report_what_is_left() {
    let stored = sealed_under(&Keyring::from(key("01")));
    let rotating = Keyring::new(key("02"), vec![key("01")]);
    let first = block_on(reseal(&stored, &rotating, 2)).unwrap();
    assert_eq!((first.resealed, first.remaining), (2, 1));
    let second = block_on(reseal(&stored, &rotating, 2)).unwrap();
    assert_eq!((second.resealed, second.remaining), (1, 0));
}

#[test]
fn a_value_set_again_meanwhile_is_not_overwritten_with_the_older_one() {
    let stored = sealed_under(&Keyring::from(key("01")));
    let rotating = Keyring::new(key("02"), vec![key("01")]);
    let field = fields().remove(0);
    let newer = rotating.seal(b"set again", &field.aad());
    *stored.set_again.borrow_mut() = Some((field, newer));
    let run = block_on(reseal(&stored, &rotating, RESEAL_BATCH)).unwrap();
    assert_eq!((run.resealed, run.superseded, run.remaining), (2, 1, 0));
    assert_eq!(opened(&stored, &rotating)[0], "set again");
}

#[test]
fn values_no_configured_key_opens_are_named_and_left_in_place() {
    let stored = sealed_under(&Keyring::from(key("01")));
    // Key 1 removed before the re-seal: nothing can be moved, nothing is destroyed.
    let premature = Keyring::from(key("02"));
    let run = block_on(reseal(&stored, &premature, RESEAL_BATCH)).unwrap();
    assert_eq!(run.resealed, 0);
    assert_eq!(run.remaining, 3);
    assert_eq!(
        run.unreadable,
        [
            "secret OPENAI_KEY of agent agt_1",
            "telemetry secret of deployment dep_1",
            "gateway secret of deployment dep_1"
        ]
    );
    // Putting key 1 back lets the next run finish the job.
    let restored = Keyring::new(key("02"), vec![key("01")]);
    assert_eq!(
        block_on(reseal(&stored, &restored, RESEAL_BATCH))
            .unwrap()
            .remaining,
        0
    );
}

#[test]
fn values_under_a_removed_key_never_hold_up_the_others() {
    // Three values under a key nobody kept, then one under the previous key.
    let stored = sealed_under(&Keyring::from(key("09")));
    let field = fields().remove(0);
    let under_previous = SealedValue {
        sealed: key("01").seal(b"movable", &field.aad()),
        field,
    };
    stored.values.borrow_mut().push(under_previous);
    let rotating = Keyring::new(key("02"), vec![key("01")]);
    // A batch of 2: the lost values are not what it is spent on.
    let run = block_on(reseal(&stored, &rotating, 2)).unwrap();
    assert_eq!(run.resealed, 1);
    assert_eq!(run.unreadable.len(), 3);
    assert_eq!(run.remaining, 3);
}
