//! [`TimeWindow`]: a UTC hour, day, ISO week or calendar month, the windows leaderboards
//! are kept for (`leaderboards.rs`), with their labels (`2026-12-04T13`, `2026-12-04`,
//! `2026-W49`, `2026-12`) parsed and printed.

use serde::{Deserialize, Serialize};

use super::ids::{
    DAY_MS, Stamp, civil_from_days, date_label, days_from_civil, first_day_of_month,
    iso_week_label, month_of_day, week_of_day,
};

/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;

/// A window's length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum WindowKind {
    Hour,
    Day,
    Week,
    Month,
}

impl WindowKind {
    pub const ALL: [WindowKind; 4] = [
        WindowKind::Hour,
        WindowKind::Day,
        WindowKind::Week,
        WindowKind::Month,
    ];

    /// `hour`, `day`, `week`, `month`: the query parameter and the read model's key part.
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Hour => "hour",
            WindowKind::Day => "day",
            WindowKind::Week => "week",
            WindowKind::Month => "month",
        }
    }

    pub fn parse(name: &str) -> Option<WindowKind> {
        WindowKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One window: its kind and its key, a number that grows with time (hours since the
/// epoch, days since 1970-01-01, [`week_of_day`], [`month_of_day`]). Ordered by kind,
/// then time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct TimeWindow {
    pub kind: WindowKind,
    pub key: u32,
}

impl TimeWindow {
    /// The window of `kind` holding the hour `hour` (hours since the epoch): every
    /// day, week and month begins on an hour, so an hour decides all four.
    pub fn of_hour(kind: WindowKind, hour: u32) -> TimeWindow {
        let day = hour / 24;
        let key = match kind {
            WindowKind::Hour => hour,
            WindowKind::Day => day,
            WindowKind::Week => week_of_day(day),
            WindowKind::Month => month_of_day(day),
        };
        TimeWindow { kind, key }
    }

    /// The window of `kind` holding `stamp`.
    pub fn of(kind: WindowKind, stamp: Stamp) -> TimeWindow {
        TimeWindow::of_hour(kind, hour_of(stamp))
    }

    /// The first millisecond of the window (UTC).
    pub fn start_ms(self) -> u64 {
        let key = u64::from(self.key);
        match self.kind {
            WindowKind::Hour => key * HOUR_MS,
            WindowKind::Day => key * DAY_MS,
            // Week 0 began on 1969-12-29: clamp to the epoch.
            WindowKind::Week => (key * 7).saturating_sub(3) * DAY_MS,
            WindowKind::Month => u64::from(first_day_of_month(self.key)) * DAY_MS,
        }
    }

    /// The first millisecond after the window (UTC).
    pub fn end_ms(self) -> u64 {
        TimeWindow {
            key: self.key + 1,
            ..self
        }
        .start_ms()
    }

    /// Whether this window is among the `kept` newest of its kind at the hour `hour`
    /// (the window holding it and the `kept - 1` before it). A later window is kept too
    /// (it has not begun: empty).
    pub fn kept_at(self, hour: u32, kept: u32) -> bool {
        let now = TimeWindow::of_hour(self.kind, hour).key;
        kept > 0 && u64::from(self.key) + u64::from(kept) > u64::from(now)
    }

    /// The window's label: `2026-12-04T13` (hour), `2026-12-04` (day), `2026-W49` (ISO
    /// week, its ISO year), `2026-12` (month).
    pub fn label(self) -> String {
        match self.kind {
            WindowKind::Hour => {
                format!("{}T{:02}", date_label(self.key / 24), self.key % 24)
            }
            WindowKind::Day => date_label(self.key),
            WindowKind::Week => iso_week_label((self.key * 7).saturating_sub(3)),
            WindowKind::Month => format!("{:04}-{:02}", self.key / 12, self.key % 12 + 1),
        }
    }

    /// The window of `kind` labelled `at` (the form [`TimeWindow::label`] prints for
    /// that kind, and no other); `None` for anything else, a date that does not exist
    /// or one before 1970.
    pub fn parse(kind: WindowKind, at: &str) -> Option<TimeWindow> {
        let number = |s: &str, len: usize| -> Option<i64> {
            if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let date = |s: &str| -> Option<u32> {
            let (y, rest) = s.split_once('-')?;
            let (m, d) = rest.split_once('-')?;
            let (y, m, d) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
            if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
                return None;
            }
            let days = days_from_civil(y, m, d);
            // A day that does not exist (2026-02-30) comes back as another date.
            (days >= 0 && civil_from_days(days) == (y, m, d)).then_some(days as u32)
        };
        let key = match kind {
            WindowKind::Hour => {
                let (day, hour) = at.split_once('T')?;
                let hour = number(hour, 2)?;
                if hour > 23 {
                    return None;
                }
                u32::try_from(i64::from(date(day)?) * 24 + hour).ok()?
            }
            WindowKind::Day => date(at)?,
            WindowKind::Week => {
                let (year, week) = at.split_once("-W")?;
                let (year, week) = (number(year, 4)?, number(week, 2)?);
                // Week 1 holds 4 January.
                let jan4 = days_from_civil(year, 1, 4);
                if !(1..=53).contains(&week) || jan4 < 0 {
                    return None;
                }
                let key = week_of_day(jan4 as u32) + (week - 1) as u32;
                // Week 53 exists only in some years: the label must read back.
                let window = TimeWindow { kind, key };
                return (window.label() == at).then_some(window);
            }
            WindowKind::Month => {
                let (y, m) = at.split_once('-')?;
                let (y, m) = (number(y, 4)?, number(m, 2)?);
                if !(1..=12).contains(&m) || y < 1970 {
                    return None;
                }
                u32::try_from(y * 12 + m - 1).ok()?
            }
        };
        Some(TimeWindow { kind, key })
    }
}

/// Hours since the epoch of `stamp` (u32 hours reach the year 491,000).
pub fn hour_of(stamp: Stamp) -> u32 {
    (stamp.0 / HOUR_MS) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_back_and_bad_ones_are_refused() {
        for (kind, at) in [
            (WindowKind::Hour, "2026-12-04T13"),
            (WindowKind::Hour, "2026-12-04T00"),
            (WindowKind::Day, "2026-12-04"),
            (WindowKind::Day, "2024-02-29"),
            (WindowKind::Week, "2026-W49"),
            (WindowKind::Week, "2026-W53"),
            (WindowKind::Week, "2027-W01"),
            (WindowKind::Month, "2026-12"),
            (WindowKind::Month, "1970-01"),
        ] {
            let w = TimeWindow::parse(kind, at).unwrap_or_else(|| panic!("{at}"));
            assert_eq!(w.label(), at);
            assert!(w.start_ms() < w.end_ms());
            assert_eq!(TimeWindow::of(kind, Stamp(w.start_ms())), w);
            assert_eq!(TimeWindow::of(kind, Stamp(w.end_ms() - 1)), w);
            assert_ne!(TimeWindow::of(kind, Stamp(w.end_ms())), w);
        }
        for (kind, at) in [
            (WindowKind::Hour, "2026-12-04T24"),
            (WindowKind::Hour, "2026-12-04"),
            (WindowKind::Day, "2026-02-30"),
            (WindowKind::Day, "2026-12-4"),
            (WindowKind::Day, "1969-12-31"),
            (WindowKind::Week, "2025-W53"),
            (WindowKind::Week, "2026-W00"),
            (WindowKind::Week, "2026-12"),
            (WindowKind::Month, "2026-13"),
            (WindowKind::Month, "2026-12-01"),
            (WindowKind::Day, "+026-12-04"),
        ] {
            assert_eq!(TimeWindow::parse(kind, at), None, "{at}");
        }
        // 2026-W53 runs from Monday 2026-12-28 to Sunday 2027-01-03.
        let w53 = TimeWindow::parse(WindowKind::Week, "2026-W53").unwrap();
        let dec28 = TimeWindow::parse(WindowKind::Day, "2026-12-28").unwrap();
        assert_eq!(w53.start_ms(), dec28.start_ms());
        assert_eq!(w53.end_ms() - w53.start_ms(), 7 * DAY_MS);
    }

    #[test]
    fn a_window_is_kept_while_among_the_newest_of_its_kind() {
        let day = TimeWindow::parse(WindowKind::Day, "2026-12-04").unwrap();
        let hour_of_day = |d: &str, h: u32| {
            hour_of(Stamp(
                TimeWindow::parse(WindowKind::Day, d).unwrap().start_ms(),
            )) + h
        };
        assert!(day.kept_at(hour_of_day("2026-12-04", 23), 1));
        assert!(!day.kept_at(hour_of_day("2026-12-05", 0), 1));
        assert!(day.kept_at(hour_of_day("2026-12-17", 23), 14));
        assert!(!day.kept_at(hour_of_day("2026-12-18", 0), 14));
        assert!(!day.kept_at(hour_of_day("2026-12-04", 0), 0));
        assert!(
            day.kept_at(hour_of_day("2026-12-01", 0), 1),
            "not begun yet"
        );
    }
}
