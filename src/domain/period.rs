//! Billing periods: UTC calendar months, named `YYYY-MM` (DESIGN.md §3).

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeriodKey {
    year: i32,
    month: u32,
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant, "chrono-compatible
/// low-level date algorithms").
pub(crate) fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl PeriodKey {
    pub fn containing(epoch_ms: i64) -> Self {
        let (year, month, _) = civil_from_days(epoch_ms.div_euclid(MS_PER_DAY));
        PeriodKey { year, month }
    }

    /// Accepts exactly `YYYY-MM` with a month from 01 to 12.
    pub fn parse(value: &str) -> Option<Self> {
        let (y, m) = value.split_once('-')?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let month: u32 = m.parse().ok()?;
        let year: i32 = y.parse().ok()?;
        (1..=12)
            .contains(&month)
            .then_some(PeriodKey { year, month })
    }

    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * MS_PER_DAY
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            PeriodKey {
                year: self.year + 1,
                month: 1,
            }
        } else {
            PeriodKey {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(self) -> Self {
        if self.month == 1 {
            PeriodKey {
                year: self.year - 1,
                month: 12,
            }
        } else {
            PeriodKey {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// When this period's counters reset: the first millisecond of the next month.
    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }
}

impl fmt::Display for PeriodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for PeriodKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeriodKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PeriodKey::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("expected a period key YYYY-MM"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_around_boundaries() {
        assert_eq!(PeriodKey::containing(0).to_string(), "1970-01");
        // 2024-02-29T23:59:59.999Z and the next millisecond.
        assert_eq!(
            PeriodKey::containing(1_709_251_199_999).to_string(),
            "2024-02"
        );
        assert_eq!(
            PeriodKey::containing(1_709_251_200_000).to_string(),
            "2024-03"
        );
        // 2026-12-31T23:59:59.999Z → 2027-01.
        assert_eq!(
            PeriodKey::containing(1_798_761_599_999).to_string(),
            "2026-12"
        );
        assert_eq!(
            PeriodKey::containing(1_798_761_600_000).to_string(),
            "2027-01"
        );
    }

    #[test]
    fn start_and_end_bracket_every_instant() {
        for ms in [
            0,
            951_782_400_000,
            1_709_251_199_999,
            1_798_761_600_000,
            4_102_444_800_000,
        ] {
            let p = PeriodKey::containing(ms);
            assert!(p.start_ms() <= ms && ms < p.end_ms(), "{p} {ms}");
            assert_eq!(PeriodKey::containing(p.end_ms()), p.next());
            assert_eq!(p.next().previous(), p);
            assert_eq!(PeriodKey::containing(p.start_ms() - 1), p.previous());
            assert_eq!(PeriodKey::containing(p.start_ms()), p);
        }
    }

    #[test]
    fn parse_accepts_only_yyyy_mm() {
        assert_eq!(PeriodKey::parse("2026-11").unwrap().to_string(), "2026-11");
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "2026-11-01",
            "",
            "abcd-ef",
            "+026-11",
        ] {
            assert!(PeriodKey::parse(bad).is_none(), "{bad}");
        }
    }
}
