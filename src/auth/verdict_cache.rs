//! A bounded per-isolate memory of verdicts that cost I/O or CPU to reach (a verified token, the user an
//! identity maps to, the holder of an API key), each kept until its own expiry at the latest.

use crate::domain::bounded_map::make_room_for;
use std::collections::HashMap;
use std::hash::Hash;

/// Entries kept at most; when full, expired entries go first, then the soonest to expire.
pub const DEFAULT_CAPACITY: usize = 2048;

#[derive(Debug)]
pub struct VerdictCache<K, V> {
    entries: HashMap<K, (V, i64)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> VerdictCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        VerdictCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The verdict for `key`, if one is held and `now` is before its expiry.
    pub fn get(&mut self, key: &K, now: i64) -> Option<V> {
        match self.entries.get(key) {
            Some((value, until)) if now < *until => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Holds `value` until `until` (ms); one already expired is not held at all.
    pub fn put(&mut self, key: K, value: V, until: i64, now: i64) {
        if until <= now {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, u)| *u > now);
            make_room_for(&mut self.entries, &key, self.capacity, |(_, until)| *until);
        }
        self.entries.insert(key, (value, until));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_never_served_at_or_after_its_expiry() {
        let mut cache = VerdictCache::new(8);
        cache.put("t", 1, 1_000, 0);
        assert_eq!(cache.get(&"t", 999), Some(1));
        assert_eq!(cache.get(&"t", 1_000), None);
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
        cache.put("late", 2, 5, 5);
        assert_eq!(cache.get(&"late", 4), None, "already expired: not held");
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let mut cache = VerdictCache::new(3);
        for i in 0..10 {
            cache.put(i, i, 100 + i as i64, 0);
            assert!(cache.len() <= 3);
        }
        // The soonest to expire went first: the newest three remain.
        assert_eq!(cache.get(&9, 1), Some(9));
        assert_eq!(cache.get(&0, 1), None);
        // Expired entries make room before live ones are dropped.
        cache.put(20, 20, 50, 0);
        assert_eq!(cache.len(), 3);
        cache.put(21, 21, 1_000, 60);
        assert_eq!(cache.get(&21, 61), Some(21));
        assert_eq!(cache.get(&9, 61), Some(9));
    }
}
