//! Mapping a verified identity to the internal user every table references.

use super::ports::{Clock, Store};
use crate::auth::Identity;
use crate::domain::entitlements::Tier;
use crate::domain::ids::UserId;
use crate::domain::user::User;
use crate::domain::ApiError;

/// Returns the caller's user row, creating it on first sight. The common case is one read; the insert is
/// race-safe (`ON CONFLICT DO NOTHING` on the identity), so two first requests in parallel share one user.
pub async fn resolve_user<S: Store, C: Clock>(
    store: &S,
    clock: &C,
    identity: &Identity,
) -> Result<User, ApiError> {
    if let Some(user) = store
        .user_by_identity(&identity.issuer, &identity.subject)
        .await?
    {
        return Ok(user);
    }
    let candidate = User {
        id: UserId::generate(),
        tier: Tier::Free,
        created_at: clock.now_ms(),
        overrides: Default::default(),
    };
    Ok(store
        .insert_user_if_absent(&identity.issuer, &identity.subject, &candidate)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::memory::{MemoryStore, TestClock};
    use pollster::block_on;

    fn identity(iss: &str, sub: &str) -> Identity {
        Identity {
            issuer: iss.into(),
            subject: sub.into(),
        }
    }

    #[test]
    fn first_sight_creates_a_free_user_and_later_calls_find_it() {
        let (store, clock) = (MemoryStore::default(), TestClock::new(42));
        let first = block_on(resolve_user(&store, &clock, &identity("https://a", "u1"))).unwrap();
        assert_eq!(first.tier, Tier::Free);
        assert_eq!(first.created_at, 42);
        clock.advance(100);
        let again = block_on(resolve_user(&store, &clock, &identity("https://a", "u1"))).unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn the_same_subject_from_another_issuer_is_another_user() {
        let (store, clock) = (MemoryStore::default(), TestClock::new(0));
        let a = block_on(resolve_user(&store, &clock, &identity("https://a", "u1"))).unwrap();
        let b = block_on(resolve_user(&store, &clock, &identity("https://b", "u1"))).unwrap();
        assert_ne!(a.id, b.id);
    }
}
