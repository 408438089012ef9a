//! Token buckets per key (a client address, a claimed deployment): what keeps requests that carry no user's
//! token from reaching D1 faster than a set rate. Held per isolate, so the bound is per isolate; it stops one
//! client from spending the platform's storage on refusals.

use super::bounded_map::make_room_for;
use std::collections::HashMap;

/// `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: u32,
}

impl Rate {
    /// `"<burst>/<per second>"`, e.g. `120/30`.
    pub fn parse(raw: &str) -> Option<Rate> {
        let (burst, per_second) = raw.trim().split_once('/')?;
        let rate = Rate {
            burst: burst.trim().parse().ok()?,
            per_second: per_second.trim().parse().ok()?,
        };
        (rate.burst >= 1 && rate.per_second >= 1).then_some(rate)
    }
}

/// Keys remembered at once; the least recently seen go first.
pub const MAX_KEYS: usize = 4096;

#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<String, (f64, i64)>,
}

impl Buckets {
    /// Takes one request for `key` at `now` (ms): `Ok(())`, or `Err(seconds)` to wait before one is free.
    pub fn take(&mut self, key: &str, rate: Rate, now: i64) -> Result<(), u64> {
        make_room_for(&mut self.buckets, key, MAX_KEYS, |(_, seen)| *seen);
        let (tokens, last) = self
            .buckets
            .entry(key.to_owned())
            .or_insert((f64::from(rate.burst), now));
        let elapsed_s = (now - *last).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed_s * f64::from(rate.per_second)).min(f64::from(rate.burst));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / f64::from(rate.per_second))
                .ceil()
                .max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        burst: 3,
        per_second: 2,
    };

    #[test]
    fn a_burst_then_the_rate_per_key() {
        let mut b = Buckets::default();
        for _ in 0..3 {
            assert_eq!(b.take("a", RATE, 0), Ok(()));
        }
        assert_eq!(b.take("a", RATE, 0), Err(1));
        assert_eq!(
            b.take("b", RATE, 0),
            Ok(()),
            "another key has its own bucket"
        );
        // Half a second refills one at 2/s.
        assert_eq!(b.take("a", RATE, 500), Ok(()));
        assert_eq!(b.take("a", RATE, 500), Err(1));
        // Never more than the burst, however long the pause.
        for _ in 0..3 {
            assert_eq!(b.take("a", RATE, 60_000), Ok(()));
        }
        assert!(b.take("a", RATE, 60_000).is_err());
    }

    #[test]
    fn rates_parse_from_configuration_and_keys_stay_bounded() {
        assert_eq!(
            Rate::parse(" 120/30 "),
            Some(Rate {
                burst: 120,
                per_second: 30
            })
        );
        for bad in ["", "120", "0/5", "5/0", "a/b", "-1/2"] {
            assert_eq!(Rate::parse(bad), None, "{bad}");
        }
        let mut b = Buckets::default();
        for i in 0..MAX_KEYS + 10 {
            let _ = b.take(&format!("k{i}"), RATE, i as i64);
        }
        assert_eq!(b.buckets.len(), MAX_KEYS);
    }
}
