//! Events, outcomes and the stable rejection codes: the engine's vocabulary.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::economy::{Currency, Region};

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

impl CreatorId {
    pub fn as_user(self) -> UserId {
        UserId(self.0)
    }
}

/// The server's UTC time when a batch was applied, in milliseconds since the Unix epoch.
/// It is journaled with every event so that replay never reads a clock.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Stamp(pub u64);

impl Stamp {
    /// Now, from the system clock. Only the service calls this; the engine never does.
    pub fn now() -> Stamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Stamp(ms)
    }

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

/// Where a recharge was bought.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// In-app purchase: packages only.
    App,
    /// Web: packages or a custom amount within the configured bounds.
    Web,
}

/// A user buys coins.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Recharge {
    pub id: EventId,
    pub user: UserId,
    pub coins: u64,
    /// The price paid, for revenue accounting.
    pub price: Decimal,
    pub currency: Currency,
    /// `None` for a custom web amount.
    pub package: Option<PackageId>,
    pub channel: Channel,
}

impl Recharge {
    /// A purchase of the package named `package` at its USD price in the app; `None` if
    /// the economy has no such package.
    pub fn of_package(
        economy: &crate::economy::Economy,
        id: u128,
        user: u64,
        package: &str,
    ) -> Option<Recharge> {
        let index = economy.package_index(package)?;
        let p = &economy.packages[index as usize];
        Some(Recharge {
            id: EventId(id),
            user: UserId(user),
            coins: p.coins,
            price: p.prices[&Currency::USD],
            currency: Currency::USD,
            package: Some(PackageId(index)),
            channel: Channel::App,
        })
    }
}

/// A viewer sends `count` gifts to a creator during a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Gift {
    pub id: EventId,
    pub sender: UserId,
    pub creator: CreatorId,
    pub stream: StreamId,
    pub gift: GiftId,
    pub count: u32,
}

/// A creator cashes out diamonds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Payout {
    pub id: EventId,
    pub creator: CreatorId,
    pub diamonds: u64,
    pub currency: Currency,
}

/// `PUT /v1/users/{id}`: region, adult flag, monthly budget.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AccountSettings {
    pub id: EventId,
    pub user: UserId,
    pub region: Option<Region>,
    pub adult: bool,
    /// Coins that gifts may spend per calendar month (UTC); `None` = no budget.
    pub monthly_budget_coins: Option<u64>,
}

/// `PUT /v1/streams/{id}/goal`: a creator's coin goal for a live stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamGoal {
    pub id: EventId,
    pub stream: StreamId,
    pub creator: CreatorId,
    pub coins_target: u64,
}

/// A cluster node reports to a creator's owner node the diamonds it has credited that
/// creator so far (cumulative, from its committed journal): the owner adds the increase
/// over the last report from that node, so the creator can cash out on its owner what
/// every node credited. Reports are idempotent by construction (a repeated or older one
/// adds nothing). Made by the nodes (through Redis), never accepted from clients.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Settlement {
    pub id: EventId,
    pub creator: CreatorId,
    /// The reporting node: its index in the cluster map's `nodes`.
    pub source: u16,
    /// Diamonds the source node has credited the creator, in total (whole ones)...
    pub diamonds: u64,
    /// ...and the fraction of one it carries, in billionths (shares have at most 9
    /// decimals, so it is exact; 0 in reports of builds before fractions were sent).
    pub nanos: u32,
}

/// Billionths of a diamond in one: the unit of a settlement's fraction.
pub const NANOS_PER_DIAMOND: u128 = 1_000_000_000;

impl Settlement {
    /// The id of a report of `diamonds` and `nanos` billionths: [`Settlement::id_for`],
    /// with the fraction mixed in when there is one.
    pub fn id_for_exact(creator: CreatorId, source: u16, diamonds: u64, nanos: u32) -> EventId {
        let id = Settlement::id_for(creator, source, diamonds);
        if nanos == 0 {
            return id;
        }
        let mut z = (id.0 as u64) ^ u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Keep the UUID's version and variant bits (in the high word and byte 8).
        let low = (z & 0x3FFF_FFFF_FFFF_FFFF) | (id.0 as u64 & 0xC000_0000_0000_0000);
        EventId(id.0 & !u128::from(u64::MAX) | u128::from(low))
    }

    /// The id of a report: a hash of its content (a UUIDv8), so that the same report
    /// sent again is the same event.
    pub fn id_for(creator: CreatorId, source: u16, diamonds: u64) -> EventId {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let a = mix(creator.0 ^ mix(diamonds.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        let b = mix(diamonds ^ mix(creator.0.wrapping_add(u64::from(source) << 48 | 0x5E77)));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        EventId(
            uuid::Builder::from_custom_bytes(bytes)
                .into_uuid()
                .as_u128(),
        )
    }
}

/// A new economy version comes into force for every event numbered after it: journal
/// only, made by the service (`PUT /v1/economy`, or a start with an edited
/// `economy.toml`). The version's content is stored beside the journal under `digest`
/// ([`crate::economy::EconomyDoc::digest`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EconomyChange {
    pub version: u32,
    pub digest: u64,
}

impl EconomyChange {
    /// Its event id: derived from the content, never claimed in the id index (an
    /// economy change is idempotent by version, not by id).
    pub fn id(&self) -> EventId {
        EventId(u128::from(self.digest) << 64 | u128::from(self.version))
    }
}

/// Everything that changes ledger state. Each is journaled and replayed alike.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Event {
    Recharge(Recharge),
    Gift(Gift),
    Payout(Payout),
    Account(AccountSettings),
    StreamGoal(StreamGoal),
    Settlement(Settlement),
    Economy(EconomyChange),
}

/// Folds 64-bit words into a fingerprint: a fixed function (snapshots keep fingerprints,
/// so it must not change between builds), well mixed (splitmix64's finalizer per word).
struct Fingerprint(u64);

impl Fingerprint {
    fn new(kind: EventKind) -> Self {
        Fingerprint(0x6A09_E667_F3BC_C908 ^ kind as u64)
    }

    fn word(mut self, w: u64) -> Self {
        let mut z = self.0 ^ w.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
        self
    }

    fn bytes(self, bytes: &[u8]) -> Self {
        bytes.chunks(8).fold(self.word(bytes.len() as u64), |f, c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            f.word(u64::from_le_bytes(w))
        })
    }

    fn option(self, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.word(1).word(v),
            None => self.word(0),
        }
    }

    /// Never a legacy fingerprint (the top bit is clear).
    fn finish(self) -> EventFingerprint {
        EventFingerprint(self.0 & !EventFingerprint::LEGACY)
    }
}

/// A 64-bit digest of every field of an event but its id: two events with one id and
/// equal fingerprints are the same event (an exact retry); different fingerprints mean
/// the id was reused for other content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventFingerprint(pub u64);

impl EventFingerprint {
    /// The top bit marks a legacy fingerprint.
    const LEGACY: u64 = 1 << 63;

    /// The fingerprint of an id remembered before fingerprints were kept (snapshot format
    /// 2 and older kept ids per routing shard): it matches any event routed where the
    /// original was (`route`, see [`EventFingerprint::matches`]), as those ids did then.
    pub fn legacy(route: u32) -> EventFingerprint {
        EventFingerprint(Self::LEGACY | u64::from(route))
    }

    /// Whether an event with fingerprint `other`, routed to `route`, is the event
    /// remembered with this fingerprint.
    pub fn matches(self, other: EventFingerprint, route: u32) -> bool {
        if self.0 & Self::LEGACY != 0 {
            self == Self::legacy(route)
        } else {
            self == other
        }
    }
}

impl Event {
    /// The fingerprint of everything in the event but its id.
    pub fn fingerprint(&self) -> EventFingerprint {
        let f = Fingerprint::new(self.kind());
        match self {
            Event::Recharge(r) => f
                .word(r.user.0)
                .word(r.coins)
                .bytes(&r.price.normalize().serialize())
                .bytes(r.currency.as_str().as_bytes())
                .option(r.package.map(|p| u64::from(p.0)))
                .word(r.channel as u64),
            Event::Gift(g) => f
                .word(g.sender.0)
                .word(g.creator.0)
                .word(g.stream.0)
                .word(u64::from(g.gift.0))
                .word(u64::from(g.count)),
            Event::Payout(p) => f
                .word(p.creator.0)
                .word(p.diamonds)
                .bytes(p.currency.as_str().as_bytes()),
            Event::Account(a) => f
                .word(a.user.0)
                .option(a.region.map(|r| {
                    let b = r.as_str().as_bytes();
                    u64::from(b[0]) << 8 | u64::from(b[1])
                }))
                .word(u64::from(a.adult))
                .option(a.monthly_budget_coins),
            Event::StreamGoal(g) => f.word(g.stream.0).word(g.creator.0).word(g.coins_target),
            Event::Settlement(s) if s.nanos == 0 => f
                .word(s.creator.0)
                .word(u64::from(s.source))
                .word(s.diamonds),
            Event::Settlement(s) => f
                .word(s.creator.0)
                .word(u64::from(s.source))
                .word(s.diamonds)
                .word(u64::from(s.nanos)),
            Event::Economy(e) => f.word(u64::from(e.version)).word(e.digest),
        }
        .finish()
    }

    pub fn id(&self) -> EventId {
        match self {
            Event::Recharge(e) => e.id,
            Event::Gift(e) => e.id,
            Event::Payout(e) => e.id,
            Event::Account(e) => e.id,
            Event::StreamGoal(e) => e.id,
            Event::Settlement(e) => e.id,
            Event::Economy(e) => e.id(),
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::Recharge(_) => EventKind::Recharge,
            Event::Gift(_) => EventKind::Gift,
            Event::Payout(_) => EventKind::Payout,
            Event::Account(_) => EventKind::Account,
            Event::StreamGoal(_) => EventKind::StreamGoal,
            Event::Settlement(_) => EventKind::Settlement,
            Event::Economy(_) => EventKind::Economy,
        }
    }
}

/// The type of an event, for history entries and metric labels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Recharge,
    Gift,
    Payout,
    Account,
    StreamGoal,
    Settlement,
    Economy,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Recharge,
        EventKind::Gift,
        EventKind::Payout,
        EventKind::Account,
        EventKind::StreamGoal,
        EventKind::Settlement,
        EventKind::Economy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Recharge => "recharge",
            EventKind::Gift => "gift",
            EventKind::Payout => "payout",
            EventKind::Account => "account",
            EventKind::StreamGoal => "stream_goal",
            EventKind::Settlement => "settlement",
            EventKind::Economy => "economy",
        }
    }
}

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
}

impl RejectCode {
    pub const ALL: [RejectCode; 15] = [
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
    /// Recharge or gift: the user's coin balance after the event.
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

    #[test]
    fn reject_codes_round_trip_through_u8() {
        for code in RejectCode::ALL {
            assert_eq!(RejectCode::from_u8(code as u8), Some(code));
        }
        assert_eq!(RejectCode::from_u8(0), None);
    }
}
