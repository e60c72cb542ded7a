//! What an event did: [`Outcome`] (its number and [`Status`]), the stable
//! [`RejectCode`]s, and [`LogEntry`], an applied event as the log and journal see it.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Event, Stamp};

/// Why an event was rejected. The string codes are a stable contract (SPEC §1);
/// numeric values are the binary protocol's and never change either.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[repr(u8)]
pub enum RejectCode {
    UnknownGift = 1,
    InvalidCount = 2,
    AmountOutOfRange = 3,
    SelfGift = 4,
    Overflow = 5,
    AgeRestricted = 6,
    RegionUnavailable = 7,
    BudgetExceeded = 8,
    BelowPayoutMinimum = 9,
    InsufficientCoins = 10,
    InsufficientDiamonds = 11,
    /// A payout in a currency without a configured `diamond_value`.
    UnsupportedCurrency = 12,
    /// The event id was used before by an event with other content. Not recorded: it
    /// changes nothing, takes no sequence number and reveals nothing of the original.
    EventIdReused = 13,
    /// The idempotency index is full of ids younger than the retry horizon: the event
    /// was not applied and can be retried (backpressure; never recorded).
    Unavailable = 14,
    /// The event's `issued_ms` is older than the retry horizon (or further ahead of the
    /// server's clock than it allows): a retry that late might no longer be recognised,
    /// so it is refused. Not recorded.
    EventExpired = 15,
    /// A purchase names an item that is not (or no longer) in the economy's `items`.
    UnknownItem = 16,
}

impl RejectCode {
    pub const ALL: [RejectCode; 16] = [
        RejectCode::UnknownGift,
        RejectCode::InvalidCount,
        RejectCode::AmountOutOfRange,
        RejectCode::SelfGift,
        RejectCode::Overflow,
        RejectCode::AgeRestricted,
        RejectCode::RegionUnavailable,
        RejectCode::BudgetExceeded,
        RejectCode::BelowPayoutMinimum,
        RejectCode::InsufficientCoins,
        RejectCode::InsufficientDiamonds,
        RejectCode::UnsupportedCurrency,
        RejectCode::EventIdReused,
        RejectCode::Unavailable,
        RejectCode::EventExpired,
        RejectCode::UnknownItem,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::UnknownGift => "UNKNOWN_GIFT",
            RejectCode::InvalidCount => "INVALID_COUNT",
            RejectCode::AmountOutOfRange => "AMOUNT_OUT_OF_RANGE",
            RejectCode::SelfGift => "SELF_GIFT",
            RejectCode::Overflow => "OVERFLOW",
            RejectCode::AgeRestricted => "AGE_RESTRICTED",
            RejectCode::RegionUnavailable => "REGION_UNAVAILABLE",
            RejectCode::BudgetExceeded => "BUDGET_EXCEEDED",
            RejectCode::BelowPayoutMinimum => "BELOW_PAYOUT_MINIMUM",
            RejectCode::InsufficientCoins => "INSUFFICIENT_COINS",
            RejectCode::InsufficientDiamonds => "INSUFFICIENT_DIAMONDS",
            RejectCode::UnsupportedCurrency => "UNSUPPORTED_CURRENCY",
            RejectCode::EventIdReused => "EVENT_ID_REUSED",
            RejectCode::Unavailable => "UNAVAILABLE",
            RejectCode::EventExpired => "EVENT_EXPIRED",
            RejectCode::UnknownItem => "UNKNOWN_ITEM",
        }
    }

    pub fn from_u8(v: u8) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| *c as u8 == v)
    }

    /// Whether an event rejected with this code is a recorded outcome (journaled, with a
    /// sequence number, remembered for retries). `EVENT_ID_REUSED` and `UNAVAILABLE`
    /// are answers about the id or the service, not outcomes of the event: nothing is
    /// recorded and the event keeps no number.
    pub fn is_recorded(self) -> bool {
        !matches!(
            self,
            RejectCode::EventIdReused | RejectCode::Unavailable | RejectCode::EventExpired
        )
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an accepted event did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Effect {
    /// Recharge, gift or purchase: the user's coin balance after the event.
    Coins(u64),
    /// Payout: the creator's available diamonds after it, and the money paid out.
    PaidOut {
        diamonds_available: u64,
        value: Decimal,
    },
    /// Account settings or stream goal stored.
    Stored,
    /// Settlement: the diamonds it added to the creator's (0 for a report not above the
    /// last one from its node).
    Settled { credited: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Status {
    Accepted(Effect),
    Rejected(RejectCode),
}

/// The recorded result of one event: its sequence number and status. A duplicate event
/// id gets the original outcome back with `duplicate = true`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// Global, strictly increasing over applied events (accepted and rejected alike).
    pub seq: u64,
    pub status: Status,
    /// True when this answer is the stored outcome of an earlier event with the same id.
    pub duplicate: bool,
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self.status, Status::Accepted(_))
    }

    pub fn code(&self) -> Option<RejectCode> {
        match self.status {
            Status::Rejected(code) => Some(code),
            Status::Accepted(_) => None,
        }
    }

    /// The stable label for metrics and reports: `accepted` or the reject code.
    pub fn label(&self) -> &'static str {
        match self.status {
            Status::Accepted(_) => "accepted",
            Status::Rejected(code) => code.as_str(),
        }
    }
}

/// An accepted gift's running totals after it: what its sender has given the creator
/// and in the stream, in coins (held at `u64::MAX`). Derived data, for the Redis read
/// model's top-K leaderboards (absolute scores from committed entries); replay
/// recomputes them and does not check them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct GiftTotals {
    pub creator: u64,
    pub stream: u64,
}

/// One applied event as the log, journal and replay see it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub stamp: Stamp,
    pub event: Event,
    pub outcome: Outcome,
    /// An accepted gift's totals (`None` otherwise, and for gifts journaled by a build
    /// before journal format 2).
    pub totals: Option<GiftTotals>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_codes_round_trip_through_u8() {
        for code in RejectCode::ALL {
            assert_eq!(RejectCode::from_u8(code as u8), Some(code));
        }
        assert_eq!(RejectCode::from_u8(0), None);
    }
}
