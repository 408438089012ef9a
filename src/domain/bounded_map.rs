//! Per-isolate memories (verdicts, rate buckets, gate facts) must not grow with what callers send: each holds
//! a fixed number of keys, and a new key pushes out the entry that matters least.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Before `key` goes into `map`: if the map already holds `capacity` entries and `key` is not one of them,
/// drops the entry `rank` puts lowest (the oldest, or the soonest to expire).
pub fn make_room_for<K, Q, V, R>(
    map: &mut HashMap<K, V>,
    key: &Q,
    capacity: usize,
    rank: impl Fn(&V) -> R,
) where
    K: Borrow<Q> + Eq + Hash + Clone,
    Q: Eq + Hash + ?Sized,
    R: Ord,
{
    if map.len() < capacity || map.contains_key(key) {
        return;
    }
    if let Some(lowest) = map
        .iter()
        .min_by_key(|(_, value)| rank(value))
        .map(|(k, _)| k.clone())
    {
        map.remove::<K>(&lowest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_in_a_full_map_pushes_out_the_lowest_ranked_entry() {
        let mut map: HashMap<String, i64> = [
            ("b".to_string(), 20),
            ("a".to_string(), 10),
            ("c".to_string(), 30),
        ]
        .into();
        make_room_for(&mut map, "d", 3, |seen| *seen);
        assert_eq!(map.len(), 2);
        assert!(!map.contains_key("a"));
    }

    #[test]
    fn a_known_key_or_a_map_with_room_loses_nothing() {
        let mut map: HashMap<String, i64> = [("a".to_string(), 10), ("b".to_string(), 20)].into();
        make_room_for(&mut map, "a", 2, |seen| *seen);
        make_room_for(&mut map, "z", 3, |seen| *seen);
        assert_eq!(map.len(), 2);
    }
}
