//! The id newtypes (one id space for users and creators; client-chosen event ids) and
//! [`Stamp`], the ledger's time in UTC milliseconds with its calendar day, ISO week and
//! month ([`Period`]).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_newtype!(
    /// A viewer (and, for payouts and self-gift checks, a creator: one id space).
    UserId(u64)
);
id_newtype!(
    /// A creator receiving gifts; the same id space as [`UserId`].
    CreatorId(u64)
);
id_newtype!(
    /// A live stream.
    StreamId(u64)
);
id_newtype!(
    /// A regular (recorded) video that gifts can be sent on, as on a live stream: its
    /// own id space.
    VideoId(u64)
);
id_newtype!(
    /// A PK battle (`PUT /v1/battles/{id}`): its own id space, chosen by the client.
    BattleId(u64)
);
id_newtype!(
    /// A client-chosen 128-bit event id (a UUID): the idempotency key.
    EventId(u128)
);
id_newtype!(
    /// A gift: its 0-based position in the catalog of `economy.toml`.
    GiftId(u32)
);
id_newtype!(
    /// A coin package: its 0-based position in `economy.toml`.
    PackageId(u32)
);
id_newtype!(
    /// An item of the economy's `items` catalog (a purchase): its stable code.
    ItemId(u32)
);

impl EventId {
    /// The id as two words, high first: 8-byte aligned, so a struct holding it packs
    /// tighter than around a `u128` (16-byte aligned).
    pub(crate) fn to_words(self) -> [u64; 2] {
        [(self.0 >> 64) as u64, self.0 as u64]
    }

    pub(crate) fn from_words(words: [u64; 2]) -> EventId {
        EventId(u128::from(words[0]) << 64 | u128::from(words[1]))
    }
}

impl GiftId {
    /// A gift id that names nothing: what a client's unknown gift name maps to, so that
    /// it becomes the recorded outcome `UNKNOWN_GIFT` rather than a request error.
    pub const UNKNOWN: GiftId = GiftId(u32::MAX);
}

impl PackageId {
    /// A package id that names nothing (an unknown package name): `AMOUNT_OUT_OF_RANGE`.
    pub const UNKNOWN: PackageId = PackageId(u32::MAX);
}

impl ItemId {
    /// An item id that names nothing (an unknown item name): the outcome `UNKNOWN_ITEM`.
    pub const UNKNOWN: ItemId = ItemId(u32::MAX);
}

impl CreatorId {
    pub fn as_user(self) -> UserId {
        UserId(self.0)
    }
}

/// The server's UTC time when a batch was applied, in milliseconds since the Unix epoch.
/// It is journaled with every event so that replay never reads a clock; the service
/// reads it with `crate::clock::now`, the engine never does.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Stamp(pub u64);

/// Milliseconds in a UTC day.
pub const DAY_MS: u64 = 86_400_000;

impl Stamp {
    /// The calendar month (UTC) of this stamp as `year * 12 + (month - 1)`.
    pub fn month_key(self) -> u32 {
        month_of_day(self.day_key())
    }

    /// The calendar day (UTC) of this stamp: days since 1970-01-01.
    pub fn day_key(self) -> u32 {
        // u32 days reach the year 11.7 million: a stamp's day always fits.
        (self.0 / DAY_MS) as u32
    }

    /// The day, ISO week and month of this stamp: the windows spending is counted in.
    pub fn period(self) -> Period {
        Period::of_day(self.day_key())
    }
}

/// The UTC day, ISO week and calendar month one stamp falls in, as keys that grow with
/// time: what budgets and spending caps count by. Computed once per batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Period {
    /// Days since 1970-01-01.
    pub day: u32,
    /// [`week_of_day`]: ISO weeks (Monday to Sunday) since the one holding 1970-01-01.
    pub week: u32,
    /// `year * 12 + (month - 1)`.
    pub month: u32,
    /// The first day of `month` ([`first_day_of_month`]): an earlier day is in the same
    /// month exactly when it is not before it, so a wallet last counted on an earlier day
    /// needs no calendar arithmetic of its own ([`Period::same_month`]).
    pub month_first_day: u32,
}

impl Period {
    pub fn of_day(day: u32) -> Period {
        let month = month_of_day(day);
        Period {
            day,
            week: week_of_day(day),
            month,
            month_first_day: first_day_of_month(month),
        }
    }

    /// Whether `day`, at or before this period's day, is in its ISO week.
    pub fn same_week(&self, day: u32) -> bool {
        week_of_day(day) == self.week
    }

    /// Whether `day`, at or before this period's day, is in its calendar month.
    pub fn same_month(&self, day: u32) -> bool {
        debug_assert!(day <= self.day);
        day >= self.month_first_day
    }
}

/// The ISO week (Monday 00:00 to Sunday 24:00 UTC) of a day, counted from the week
/// holding 1970-01-01 (a Thursday, so that week began on 1969-12-29). One number per
/// ISO week: a week spanning a month or a year end is one week, as ISO 8601 counts it
/// (the ISO year it is labelled with is [`iso_week_label`]'s business, not the key's).
pub fn week_of_day(day: u32) -> u32 {
    (day + 3) / 7
}

/// The calendar month key (`year * 12 + (month - 1)`) of a day since 1970-01-01.
pub fn month_of_day(day: u32) -> u32 {
    let (year, month, _) = civil_from_days(i64::from(day));
    (year * 12 + (month - 1)) as u32
}

/// The first day (since 1970-01-01) of a month key: the inverse of [`month_of_day`] at
/// the start of the month.
pub fn first_day_of_month(month: u32) -> u32 {
    let (year, month) = (i64::from(month / 12), i64::from(month % 12) + 1);
    days_from_civil(year, month, 1).max(0) as u32
}

/// The ISO 8601 label of a day's week, e.g. `2026-W53`: the week-numbering year is the
/// year of the week's Thursday (so 2027-01-01, a Friday, is in 2026-W53).
pub fn iso_week_label(day: u32) -> String {
    let monday = i64::from(week_of_day(day)) * 7 - 3;
    let thursday = monday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let jan1 = days_from_civil(year, 1, 1);
    let week = (thursday - jan1) / 7 + 1;
    format!("{year:04}-W{week:02}")
}

/// A day since 1970-01-01 as `YYYY-MM-DD`.
pub fn date_label(day: u32) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month (1..=12) and day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian calendar).
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    /// A period tells whether an earlier day shares its week and month exactly as the
    /// calendar functions do (month ends, leap years, year ends, ISO weeks across them).
    #[test]
    fn a_period_knows_its_week_and_month_without_calendar_arithmetic() {
        for day in (0..40_000u32).step_by(7).chain(20_450..20_530) {
            let period = Period::of_day(day);
            for back in 0..70u32.min(day + 1) {
                let earlier = day - back;
                assert_eq!(
                    period.same_month(earlier),
                    month_of_day(earlier) == period.month,
                    "day {day}, earlier {earlier}"
                );
                assert_eq!(
                    period.same_week(earlier),
                    week_of_day(earlier) == period.week
                );
            }
        }
    }

    use super::*;

    #[test]
    fn month_keys_follow_the_utc_calendar() {
        // 2026-11-30T23:59:59.999Z and 2026-12-01T00:00:00.000Z
        let nov_end = Stamp(1_796_083_199_999);
        let dec_start = Stamp(1_796_083_200_000);
        assert_eq!(nov_end.month_key(), 2026 * 12 + 10);
        assert_eq!(dec_start.month_key(), 2026 * 12 + 11);
        // 2024-02-29T12:00:00Z, a leap day.
        assert_eq!(Stamp(1_709_208_000_000).month_key(), 2024 * 12 + 1);
        assert_eq!(Stamp(0).month_key(), 1970 * 12);
    }

    /// `YYYY-MM-DD` at `hh:mm:ss.mmm` UTC as a stamp.
    fn at(date: &str, ms_of_day: u64) -> Stamp {
        let p: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
        Stamp(days_from_civil(p[0], p[1], p[2]) as u64 * DAY_MS + ms_of_day)
    }

    #[test]
    fn days_weeks_and_months_follow_the_utc_calendar_and_iso_weeks() {
        let last_ms = DAY_MS - 1;
        // A day ends at 23:59:59.999 and the next begins at 00:00.
        let (a, b) = (at("2026-11-30", last_ms), at("2026-12-01", 0));
        assert_eq!(b.day_key(), a.day_key() + 1);
        assert_eq!(a.period().week, b.period().week, "Mon 30 Nov and Tue 1 Dec");
        assert_ne!(a.period().month, b.period().month);
        // Sunday 23:59:59.999 and Monday 00:00 are in two ISO weeks.
        let (sun, mon) = (at("2026-12-06", last_ms), at("2026-12-07", 0));
        assert_eq!(sun.period().week + 1, mon.period().week);
        assert_eq!(iso_week_label(sun.day_key()), "2026-W49");
        assert_eq!(iso_week_label(mon.day_key()), "2026-W50");
        // A week spanning a year end is one week: 2026-12-28 (Mon) to 2027-01-03 (Sun)
        // is 2026-W53, labelled by the year of its Thursday.
        let (dec31, jan1, jan3, jan4) = (
            at("2026-12-31", last_ms),
            at("2027-01-01", 0),
            at("2027-01-03", last_ms),
            at("2027-01-04", 0),
        );
        assert_eq!(dec31.period().week, jan1.period().week);
        assert_eq!(jan1.period().week, jan3.period().week);
        assert_eq!(jan3.period().week + 1, jan4.period().week);
        assert_eq!(iso_week_label(jan1.day_key()), "2026-W53");
        assert_eq!(iso_week_label(jan4.day_key()), "2027-W01");
        assert_ne!(dec31.period().month, jan1.period().month);
        // 2025-12-29 (Mon) starts 2026-W01; 1970-01-01 was a Thursday of 1970-W01.
        assert_eq!(iso_week_label(at("2025-12-29", 0).day_key()), "2026-W01");
        assert_eq!(iso_week_label(0), "1970-W01");
        assert_eq!(date_label(jan1.day_key()), "2027-01-01");
        // The first day of a month is the inverse of the month key.
        for day in [0, 59, 60, 20_000, 20_788, 20_819, 50_000] {
            let month = month_of_day(day);
            let first = first_day_of_month(month);
            assert!(first <= day && month_of_day(first) == month);
            assert!(first == 0 || month_of_day(first - 1) == month - 1);
        }
        // A week begins on every Monday (1970-01-05 was one) and on no other day.
        for day in 0..4_000u32 {
            let monday = (day + 1 + 3) % 7 == 0;
            assert_eq!(week_of_day(day + 1) - week_of_day(day), u32::from(monday));
        }
    }
}
