//! The per-user request reservation (DESIGN.md §4.5): one request of the current period is reserved before the
//! runtime is called. The counter is owned by one Durable Object per user, which serialises every decision, so
//! with N requests left exactly N reservations are granted however many arrive at once.

use super::period::PeriodKey;
use serde::{Deserialize, Serialize};

/// What the gate stores: the requests reserved in one period. A new period starts from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeriodCount {
    pub period_key: PeriodKey,
    pub used: u64,
}

/// One reservation question: the period, and the requests allowed in it (ignored by release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateRequest {
    pub period_key: PeriodKey,
    pub limit: u64,
}

/// The gate's answer: whether this reservation was granted, and the period's count after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateDecision {
    pub granted: bool,
    pub period_key: PeriodKey,
    pub used: u64,
    pub limit: u64,
    pub remaining: u64,
    /// When the period ends and the count resets (ms since the epoch): what `Retry-After` is derived from.
    pub resets_at_ms: i64,
}

fn current(stored: Option<PeriodCount>, period: PeriodKey) -> PeriodCount {
    match stored {
        // A caller whose clock is behind (an isolate still in the last period at the turn of the month) counts
        // against the newer period: the count never goes back, so it can never be reset by going back.
        Some(count) if count.period_key >= period => count,
        // No count yet, or one from an earlier period: this period starts at zero.
        _ => PeriodCount {
            period_key: period,
            used: 0,
        },
    }
}

fn decision(count: PeriodCount, limit: u64, granted: bool) -> GateDecision {
    GateDecision {
        granted,
        period_key: count.period_key,
        used: count.used,
        limit,
        remaining: limit.saturating_sub(count.used),
        resets_at_ms: count.period_key.end_ms(),
    }
}

/// Reserves one request if any remain; returns the count to store and the decision.
pub fn reserve(stored: Option<PeriodCount>, request: GateRequest) -> (PeriodCount, GateDecision) {
    let mut count = current(stored, request.period_key);
    let granted = count.used < request.limit;
    if granted {
        count.used += 1;
    }
    (count, decision(count, request.limit, granted))
}

/// Gives back one reservation of the period (for a call refused before it reached the runtime). A reservation
/// of a period that has since ended is not given back to the new one: nothing was taken from it.
pub fn release(stored: Option<PeriodCount>, request: GateRequest) -> (PeriodCount, GateDecision) {
    let mut count = current(stored, request.period_key);
    if count.period_key == request.period_key {
        count.used = count.used.saturating_sub(1);
    }
    (count, decision(count, request.limit, true))
}

/// The period's count as it stands; reserves nothing.
pub fn peek(stored: Option<PeriodCount>, request: GateRequest) -> (PeriodCount, GateDecision) {
    let count = current(stored, request.period_key);
    (count, decision(count, request.limit, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(period: &str, limit: u64) -> GateRequest {
        GateRequest {
            period_key: PeriodKey::parse(period).unwrap(),
            limit,
        }
    }

    #[test]
    fn grants_exactly_the_limit() {
        let mut stored = None;
        let mut granted = 0;
        for _ in 0..10 {
            let (count, d) = reserve(stored, req("2026-11", 3));
            stored = Some(count);
            granted += u64::from(d.granted);
            assert!(d.used <= 3);
        }
        assert_eq!(granted, 3);
        let (_, last) = reserve(stored, req("2026-11", 3));
        assert!(!last.granted);
        assert_eq!(last.remaining, 0);
        assert_eq!(
            last.resets_at_ms,
            PeriodKey::parse("2026-12").unwrap().start_ms()
        );
    }

    #[test]
    fn a_new_period_starts_from_zero() {
        let (count, _) = reserve(
            Some(PeriodCount {
                period_key: PeriodKey::parse("2026-10").unwrap(),
                used: 99,
            }),
            req("2026-11", 5),
        );
        assert_eq!(count.used, 1);
        assert_eq!(count.period_key.to_string(), "2026-11");
    }

    #[test]
    fn a_zero_limit_grants_nothing() {
        let (count, d) = reserve(None, req("2026-11", 0));
        assert!(!d.granted);
        assert_eq!(count.used, 0);
    }

    #[test]
    fn release_returns_one_and_never_goes_negative() {
        let (count, _) = reserve(None, req("2026-11", 5));
        let (count, d) = release(Some(count), req("2026-11", 5));
        assert_eq!(count.used, 0);
        assert_eq!(d.remaining, 5);
        let (count, _) = release(Some(count), req("2026-11", 5));
        assert_eq!(count.used, 0);
    }

    #[test]
    fn peek_reads_without_reserving() {
        let (count, _) = reserve(None, req("2026-11", 5));
        let (count, d) = peek(Some(count), req("2026-11", 5));
        assert_eq!((count.used, d.used, d.remaining), (1, 1, 4));
        // A count from an earlier period reads as a fresh one.
        let (_, d) = peek(Some(count), req("2026-12", 5));
        assert_eq!((d.used, d.remaining), (0, 5));
    }

    #[test]
    fn the_count_never_goes_back_to_an_earlier_period() {
        let (nov, _) = reserve(None, req("2026-11", 5));
        let (dec, _) = reserve(Some(nov), req("2026-12", 5));
        assert_eq!(
            (dec.period_key.to_string(), dec.used),
            ("2026-12".into(), 1)
        );
        // A call stamped with the old month (a clock behind) counts against the new one, not a reset.
        let (late, d) = reserve(Some(dec), req("2026-11", 5));
        assert_eq!(
            (late.period_key.to_string(), late.used),
            ("2026-12".into(), 2)
        );
        assert_eq!(d.period_key.to_string(), "2026-12");
        // Giving back a November reservation in December takes nothing off December.
        let (after, _) = release(Some(late), req("2026-11", 5));
        assert_eq!(
            (after.period_key.to_string(), after.used),
            ("2026-12".into(), 2)
        );
    }
}
