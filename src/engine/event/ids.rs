//! The id newtypes (one id space for users and creators; client-chosen event ids) and
//! [`Stamp`], the ledger's time in UTC milliseconds with its calendar month.

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

impl Stamp {
    /// The calendar month (UTC) of this stamp as `year * 12 + (month - 1)`.
    pub fn month_key(self) -> u32 {
        let days = (self.0 / 86_400_000) as i64;
        let (year, month) = civil_year_month(days);
        (year * 12 + (month - 1)) as u32
    }
}

/// Year and month (1..=12) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian calendar).
fn civil_year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
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
}
