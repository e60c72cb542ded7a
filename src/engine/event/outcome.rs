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
    /// A gift or purchase of a user who owes coins (a reversed recharge they had
    /// already spent): an account check, after the event's own checks.
    AccountInDebt = 17,
    /// A reversal names an event this ledger cannot reverse for that user: unknown, of
    /// another user (nothing of it is revealed), not of the reversible kind, rejected,
    /// or (a recharge) older than the window.
    OriginalNotFound = 18,
    /// A reversal names an event already reversed (by another reversal event).
    AlreadyReversed = 19,
    /// The gift's diamonds are no longer held (released by the earnings hold, or no hold
    /// in force): a gift can be reversed only while they are.
    NotReversible = 20,
    /// A battle's streams (2 to 4, distinct) or window (`start_ms < end_ms`, at most
    /// `BATTLE_LENGTH_MS_MAX` long, ending after the battle is recorded) are invalid.
    InvalidBattle = 21,
    /// A battle names a stream already in another battle whose window overlaps.
    StreamInBattle = 22,
    /// The battle id is taken by a battle with other streams or another window (after
    /// the id index forgot the first; while it remembers it, `EVENT_ID_REUSED`).
    BattleExists = 23,
    /// `engine.battles_max` battles are held (scheduled, live, or ended within
    /// `engine.battle_retention_ms`).
    BattlesFull = 24,
    /// A battle close stamped before the battle's `end_ms`: the battle goes on (review
    /// B2: no one ends a battle early). Recorded.
    BattleNotEnded = 25,
    /// A battle close naming no battle held (never recorded, or dropped
    /// `engine.battle_retention_ms` after its end). Recorded.
    BattleNotFound = 26,
}

impl RejectCode {
    pub const ALL: [RejectCode; 26] = [
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
        RejectCode::AccountInDebt,
        RejectCode::OriginalNotFound,
        RejectCode::AlreadyReversed,
        RejectCode::NotReversible,
        RejectCode::InvalidBattle,
        RejectCode::StreamInBattle,
        RejectCode::BattleExists,
        RejectCode::BattlesFull,
        RejectCode::BattleNotEnded,
        RejectCode::BattleNotFound,
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
            RejectCode::AccountInDebt => "ACCOUNT_IN_DEBT",
            RejectCode::OriginalNotFound => "ORIGINAL_NOT_FOUND",
            RejectCode::AlreadyReversed => "ALREADY_REVERSED",
            RejectCode::NotReversible => "NOT_REVERSIBLE",
            RejectCode::InvalidBattle => "INVALID_BATTLE",
            RejectCode::StreamInBattle => "STREAM_IN_BATTLE",
            RejectCode::BattleExists => "BATTLE_EXISTS",
            RejectCode::BattlesFull => "BATTLES_FULL",
            RejectCode::BattleNotEnded => "BATTLE_NOT_ENDED",
            RejectCode::BattleNotFound => "BATTLE_NOT_FOUND",
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

/// Which limit a `BUDGET_EXCEEDED` gift would have passed: the outcome names it. The
/// numbers are a contract (the binary protocol and the journal carry them in an
/// outcome's `coins`; 0 there, from builds before daily and weekly limits, is the
/// monthly budget, the only one then).
///
/// When several would be exceeded, the outcome names the first of
/// [`BudgetCap::PRECEDENCE`]: the longest window first (monthly, weekly, daily), and in
/// one window the platform's cap before the user's own budget — so the cap named is one
/// that neither the end of a shorter window nor raising one's own budget would lift.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[repr(u8)]
pub enum BudgetCap {
    MonthlyBudget = 1,
    DailyBudget = 2,
    WeeklyBudget = 3,
    DailyPlatformCap = 4,
    WeeklyPlatformCap = 5,
}

impl BudgetCap {
    pub const ALL: [BudgetCap; 5] = [
        BudgetCap::MonthlyBudget,
        BudgetCap::DailyBudget,
        BudgetCap::WeeklyBudget,
        BudgetCap::DailyPlatformCap,
        BudgetCap::WeeklyPlatformCap,
    ];

    /// The order in which the limits are checked; the first exceeded is named.
    pub const PRECEDENCE: [BudgetCap; 5] = [
        BudgetCap::MonthlyBudget,
        BudgetCap::WeeklyPlatformCap,
        BudgetCap::WeeklyBudget,
        BudgetCap::DailyPlatformCap,
        BudgetCap::DailyBudget,
    ];

    /// The stable identifier (JSON `cap`).
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetCap::MonthlyBudget => "monthly_budget",
            BudgetCap::DailyBudget => "daily_budget",
            BudgetCap::WeeklyBudget => "weekly_budget",
            BudgetCap::DailyPlatformCap => "daily_platform_cap",
            BudgetCap::WeeklyPlatformCap => "weekly_platform_cap",
        }
    }

    /// The human message of a `BUDGET_EXCEEDED` naming this cap.
    pub fn message(self) -> &'static str {
        match self {
            BudgetCap::MonthlyBudget => "the gift would exceed the user's monthly budget",
            BudgetCap::DailyBudget => "the gift would exceed the user's daily budget",
            BudgetCap::WeeklyBudget => "the gift would exceed the user's weekly budget",
            BudgetCap::DailyPlatformCap => "the gift would exceed the daily platform cap",
            BudgetCap::WeeklyPlatformCap => "the gift would exceed the weekly platform cap",
        }
    }

    pub fn from_u8(v: u8) -> Option<BudgetCap> {
        BudgetCap::ALL.into_iter().find(|c| *c as u8 == v)
    }

    /// The cap of a decoded outcome with `code`, carried as the number `n` (0 or unknown
    /// for a `BUDGET_EXCEEDED`: the monthly budget, as recorded before the other limits
    /// existed); `None` for every other code.
    pub fn of(code: RejectCode, n: u64) -> Option<BudgetCap> {
        (code == RejectCode::BudgetExceeded).then(|| {
            u8::try_from(n)
                .ok()
                .and_then(BudgetCap::from_u8)
                .unwrap_or(BudgetCap::MonthlyBudget)
        })
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
    /// Recharge reversal: the user's coin balance after it, and the coins the user owes
    /// after it (the part of the reversed recharge already spent, plus any debt before).
    Reversed { coins: u64, owed: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Status {
    Accepted(Effect),
    Rejected(RejectCode),
}

/// The recorded result of one event: its sequence number and status. A duplicate event
/// id gets the original outcome back with `duplicate = true`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(from = "OutcomeRepr", into = "OutcomeRepr")]
pub struct Outcome {
    /// Global, strictly increasing over applied events (accepted and rejected alike).
    pub seq: u64,
    pub status: Status,
    /// True when this answer is the stored outcome of an earlier event with the same id.
    pub duplicate: bool,
    /// A `BUDGET_EXCEEDED`: the limit it names (always set then, `None` otherwise).
    pub cap: Option<BudgetCap>,
}

/// How snapshots encode an [`Outcome`] (inside the id index): as formats 1 to 6 did,
/// `(seq, status, duplicate)`, with a `BUDGET_EXCEEDED`'s cap in the top byte of its
/// `seq` (0 in older snapshots: the monthly budget). Sequence numbers stay far below
/// 2^56 (at 10M events/s, 228 years), so the byte is free.
#[derive(Serialize, Deserialize)]
struct OutcomeRepr {
    seq: u64,
    status: Status,
    duplicate: bool,
}

/// Where [`OutcomeRepr`] keeps a cap.
const CAP_SHIFT: u32 = 56;
const SEQ_MASK: u64 = (1 << CAP_SHIFT) - 1;

impl From<OutcomeRepr> for Outcome {
    fn from(r: OutcomeRepr) -> Self {
        let cap = match r.status {
            Status::Rejected(code) => BudgetCap::of(code, r.seq >> CAP_SHIFT),
            Status::Accepted(_) => None,
        };
        Outcome {
            seq: if cap.is_some() {
                r.seq & SEQ_MASK
            } else {
                r.seq
            },
            status: r.status,
            duplicate: r.duplicate,
            cap,
        }
    }
}

impl From<Outcome> for OutcomeRepr {
    fn from(o: Outcome) -> Self {
        let seq = match o.cap {
            Some(cap) => o.seq.min(SEQ_MASK) | u64::from(cap as u8) << CAP_SHIFT,
            None => o.seq,
        };
        OutcomeRepr {
            seq,
            status: o.status,
            duplicate: o.duplicate,
        }
    }
}

impl Outcome {
    /// An outcome with no cap (anything but a `BUDGET_EXCEEDED`).
    pub fn new(seq: u64, status: Status, duplicate: bool) -> Outcome {
        Outcome {
            seq,
            status,
            duplicate,
            cap: None,
        }
    }

    /// A `BUDGET_EXCEEDED` naming `cap`.
    pub fn over_budget(seq: u64, cap: BudgetCap) -> Outcome {
        Outcome {
            seq,
            status: Status::Rejected(RejectCode::BudgetExceeded),
            duplicate: false,
            cap: Some(cap),
        }
    }

    /// The human message of a rejection that carries one (a `BUDGET_EXCEEDED` names its
    /// cap).
    pub fn message(&self) -> Option<&'static str> {
        self.cap.map(BudgetCap::message)
    }

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

/// One applied event as the log, journal and replay see it: 160 bytes (a test pins it).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    pub stamp: Stamp,
    pub event: Event,
    pub outcome: Outcome,
    /// An accepted gift's totals (`None` otherwise, and for gifts journaled by a build
    /// before journal format 2).
    pub totals: Option<GiftTotals>,
    /// What an accepted gift reversal took back (set by the engine; `None` for every
    /// other entry). Boxed: reversals are rare and every entry carries the field.
    pub reversed: Option<Box<super::ReversedGift>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gift path copies events and log entries by value: their size is a cost
    /// (issue #31 measured +295 instructions per gift from 64 to 112 bytes).
    #[test]
    fn an_event_is_64_bytes_and_a_log_entry_160() {
        assert_eq!(std::mem::size_of::<Event>(), 64);
        assert_eq!(std::mem::size_of::<LogEntry>(), 160);
    }

    #[test]
    fn caps_round_trip_through_u8_and_the_snapshot_encoding_of_outcomes() {
        for cap in BudgetCap::ALL {
            assert_eq!(BudgetCap::from_u8(cap as u8), Some(cap));
            assert_eq!(
                BudgetCap::of(RejectCode::BudgetExceeded, cap as u64),
                Some(cap)
            );
            assert_eq!(
                BudgetCap::of(RejectCode::InsufficientCoins, cap as u64),
                None
            );
        }
        assert_eq!(
            BudgetCap::of(RejectCode::BudgetExceeded, 0),
            Some(BudgetCap::MonthlyBudget)
        );
        let mut sorted = BudgetCap::PRECEDENCE;
        sorted.sort_by_key(|c| *c as u8);
        assert_eq!(sorted, BudgetCap::ALL);
        use crate::protocol::{decode_serde, encode_serde};
        for cap in BudgetCap::ALL {
            let o = Outcome::over_budget(SEQ_MASK, cap);
            assert_eq!(
                decode_serde::<Outcome>(&encode_serde(&o).unwrap()).unwrap(),
                o
            );
        }
        // An outcome encodes as formats 1 to 6 did when it has no cap; a budget outcome
        // of those formats (no cap byte) reads as the monthly budget.
        let plain = Outcome::new(7, Status::Rejected(RejectCode::InsufficientCoins), true);
        let old = OutcomeRepr {
            seq: 7,
            status: plain.status,
            duplicate: true,
        };
        assert_eq!(encode_serde(&plain).unwrap(), encode_serde(&old).unwrap());
        let old_budget = OutcomeRepr {
            seq: 9,
            status: Status::Rejected(RejectCode::BudgetExceeded),
            duplicate: false,
        };
        let read: Outcome = decode_serde(&encode_serde(&old_budget).unwrap()).unwrap();
        assert_eq!(read, Outcome::over_budget(9, BudgetCap::MonthlyBudget));
    }

    #[test]
    fn reject_codes_round_trip_through_u8() {
        for code in RejectCode::ALL {
            assert_eq!(RejectCode::from_u8(code as u8), Some(code));
        }
        assert_eq!(RejectCode::from_u8(0), None);
    }
}
