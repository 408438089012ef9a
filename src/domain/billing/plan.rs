//! Which plan a subscription gives, which of two states of it is newer, and how a failed event is retried.

use super::event::Subscription;
use crate::domain::entitlements::Tier;

/// The Stripe price of each paid tier (`STRIPE_PRICE_PRO`, `STRIPE_PRICE_ENTERPRISE`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prices {
    pub pro: Option<String>,
    pub enterprise: Option<String>,
}

impl Prices {
    /// The price a checkout for `tier` uses; `None` for free or an unpriced tier.
    pub fn price_for(&self, tier: Tier) -> Option<&str> {
        match tier {
            Tier::Free => None,
            Tier::Pro => self.pro.as_deref(),
            Tier::Enterprise => self.enterprise.as_deref(),
        }
    }

    /// The tier a price buys; `None` for a price that is none of ours.
    pub fn tier_of(&self, price: &str) -> Option<Tier> {
        [(Tier::Pro, &self.pro), (Tier::Enterprise, &self.enterprise)]
            .into_iter()
            .find(|(_, p)| p.as_deref() == Some(price))
            .map(|(tier, _)| tier)
    }

    /// The tier `subscription` gives its customer now: its price's tier while it entitles, free otherwise (a
    /// subscription to a price that is none of ours gives nothing).
    pub fn tier_given_by(&self, subscription: &Subscription) -> Tier {
        match (&subscription.price_id, subscription.entitles()) {
            (Some(price), true) => self.tier_of(price).unwrap_or(Tier::Free),
            _ => Tier::Free,
        }
    }
}

/// Whether a subscription state read at `seen_at` replaces the one stored from `stored_at` (both ms): an older
/// state never overwrites a newer one, whatever order Stripe delivers events in.
pub fn is_newer(seen_at: i64, stored_at: Option<i64>) -> bool {
    stored_at.is_none_or(|stored| seen_at >= stored)
}

/// Processing attempts before an event is marked dead (visible to operators, retried only by hand).
pub const MAX_ATTEMPTS: u32 = 8;

/// How long after its `attempts`-th failed attempt an event is tried again (ms); `None`: it is dead.
pub fn retry_after_ms(attempts: u32) -> Option<i64> {
    const MINUTE: i64 = 60_000;
    // Roughly Stripe's own schedule, compressed: the cron job looks every 5 minutes.
    const SCHEDULE: [i64; 7] = [1, 5, 15, 60, 3 * 60, 6 * 60, 12 * 60];
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let step = (attempts.max(1) as usize - 1).min(SCHEDULE.len() - 1);
    Some(SCHEDULE[step] * MINUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices {
            pro: Some("price_pro".into()),
            enterprise: Some("price_ent".into()),
        }
    }

    fn sub(status: &str, price: Option<&str>) -> Subscription {
        Subscription {
            id: "sub_1".into(),
            customer: "cus_1".into(),
            status: status.into(),
            price_id: price.map(str::to_owned),
            current_period_end: None,
            cancel_at_period_end: false,
        }
    }

    #[test]
    fn a_subscription_gives_its_prices_tier_while_it_entitles() {
        let p = prices();
        assert_eq!(
            p.tier_given_by(&sub("active", Some("price_pro"))),
            Tier::Pro
        );
        assert_eq!(
            p.tier_given_by(&sub("past_due", Some("price_ent"))),
            Tier::Enterprise
        );
        assert_eq!(
            p.tier_given_by(&sub("canceled", Some("price_pro"))),
            Tier::Free
        );
        assert_eq!(
            p.tier_given_by(&sub("active", Some("price_someone_elses"))),
            Tier::Free
        );
        assert_eq!(p.tier_given_by(&sub("active", None)), Tier::Free);
        assert_eq!(p.price_for(Tier::Pro), Some("price_pro"));
        assert_eq!(p.price_for(Tier::Free), None);
        assert_eq!(Prices::default().price_for(Tier::Enterprise), None);
    }

    #[test]
    fn an_older_state_never_overwrites_a_newer_one() {
        assert!(is_newer(10, None));
        assert!(is_newer(10, Some(10)));
        assert!(is_newer(11, Some(10)));
        assert!(!is_newer(9, Some(10)));
    }

    #[test]
    fn retries_back_off_and_end() {
        let delays: Vec<_> = (1..=MAX_ATTEMPTS).map(retry_after_ms).collect();
        assert_eq!(delays[0], Some(60_000));
        assert!(delays.windows(2).all(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => b >= a,
            (_, None) => true,
            _ => false,
        }));
        assert_eq!(retry_after_ms(MAX_ATTEMPTS), None);
        assert_eq!(retry_after_ms(MAX_ATTEMPTS - 1), Some(12 * 60 * 60_000));
    }
}
