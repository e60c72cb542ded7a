//! Events, outcomes and the stable rejection codes: the engine's vocabulary.
//!
//! - here: the events ([`Event`] and one struct per kind) and [`EventKind`];
//! - `ids`: the id newtypes and [`Stamp`], the ledger's time;
//! - `fingerprint`: [`EventFingerprint`], the digest that tells a retry from a reuse;
//! - `outcome`: [`Outcome`], [`RejectCode`] (stable codes), [`LogEntry`].
//!
//! Size: one struct per event kind and the compact field types that keep [`Event`] at
//! 64 bytes (each with its round-trip test) are one vocabulary, read together.

mod battle;
mod fingerprint;
mod ids;
mod outcome;
mod windows;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use crate::economy::Channel;
use crate::economy::{Currency, Region};
pub use battle::{BATTLE_LENGTH_MS_MAX, BATTLE_SIDES_MAX, BATTLE_SIDES_MIN, Battle, BattleClose};
pub use fingerprint::EventFingerprint;
pub use ids::{
    BattleId, CreatorId, DAY_MS, EventId, GiftId, ItemId, PackageId, Period, Stamp, StreamId,
    UserId, VideoId, date_label, first_day_of_month, iso_week_label, month_of_day, week_of_day,
};
pub use outcome::{BudgetCap, Effect, GiftTotals, LogEntry, Outcome, RejectCode, Status};
pub use windows::{HOUR_MS, TimeWindow, WindowKind, hour_of};

/// A user buys coins.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Recharge {
    pub id: EventId,
    pub user: UserId,
    pub coins: u64,
    /// The price paid, for revenue accounting.
    pub price: Decimal,
    pub currency: Currency,
    /// `None` for a custom web amount ([`PackageRef`]: two bytes).
    pub package: PackageRef,
    pub channel: Channel,
    /// When the user paid: the event's `issued_ms` (UTC ms, the same on every retry),
    /// set by the protocol layer; 0 = not given, the server's stamp counts. A package's
    /// promotion is the one in force at that moment ([`Recharge::paid_at`]).
    pub paid_ms: u64,
}

impl Recharge {
    /// The moment the terms of the recharge are judged at: when the user paid, or the
    /// server's stamp when the event does not say. A payment is never later than its
    /// arrival: a `paid_ms` ahead of the stamp (a client clock running ahead, which the
    /// retry horizon lets through by a few seconds) counts as the stamp, so no offer can
    /// be claimed before it starts.
    pub fn paid_at(&self, stamp: Stamp) -> u64 {
        if self.paid_ms == 0 {
            stamp.0
        } else {
            self.paid_ms.min(stamp.0)
        }
    }

    /// The recharge with `paid_ms` set from the event's `issued_ms` (0: not given).
    pub fn paid(self, issued_ms: u64) -> Recharge {
        Recharge {
            paid_ms: issued_ms,
            ..self
        }
    }

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
            package: Some(PackageId(index)).into(),
            channel: Channel::App,
            paid_ms: 0,
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

/// A viewer sends `count` gifts to a creator on a regular video (not a live stream): the
/// same checks, debit and creator credit as a [`Gift`]; the video's own totals and top
/// gifters instead of a stream's. No goal or live feed sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VideoGift {
    pub id: EventId,
    pub sender: UserId,
    pub creator: CreatorId,
    pub video: VideoId,
    pub gift: GiftId,
    pub count: u32,
}

/// A user spends coins on `count` of an item of the economy's `items` catalog (a
/// feature unlock, ...): debited like a gift — the same account, limits and funds
/// checks, in the same order — and credited to no creator (platform revenue).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Purchase {
    pub id: EventId,
    pub user: UserId,
    pub item: ItemId,
    /// 1 <= count <= `max_gift_count`, else `INVALID_COUNT`.
    pub count: u32,
}

/// A chargeback (an unauthorized or disputed payment): takes back the coins the
/// recharge `recharge` credited to `user`, once. What the user already spent becomes
/// the user's debt (`coins_owed`), repaid first by later recharges; while it is owed,
/// gifts and purchases are rejected `ACCOUNT_IN_DEBT`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RechargeReversal {
    pub id: EventId,
    pub user: UserId,
    /// The event id of the accepted recharge it reverses (of this user, within the
    /// economy's `recharge_reversal_window_ms`), else `ORIGINAL_NOT_FOUND`.
    pub recharge: EventId,
}

/// A refund of a gift (a minor's, or an unauthorized one): `gift` names the original
/// gift's event id. The sender gets the coins back and the creator loses exactly the
/// diamonds that gift credited, while they are still held by the earnings hold
/// (`engine/refund.rs`). Routed by sender; applied like a payout (gate exclusive), so
/// that "still held" is judged at exactly the ledger's time a replay sees. What an
/// accepted one took back rides beside it in its [`LogEntry::reversed`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GiftReversal {
    pub id: EventId,
    pub sender: UserId,
    /// The event id of the gift to reverse.
    pub gift: EventId,
}

/// The gift an accepted [`GiftReversal`] took back (its log entry's
/// [`LogEntry::reversed`], so that the journal and the read model know the gift without
/// the engine's records): its creator, target (the stream or the video it was sent to),
/// catalog code and count, the coins it debited and the exact diamonds it credited
/// (billionths), and the hour of the gift's stamp.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReversedGift {
    pub creator: CreatorId,
    pub target: GiftTarget,
    pub gift: GiftId,
    pub count: u32,
    pub coins: u64,
    pub nanos: u128,
    /// The hour (since the epoch) of the gift's stamp: the windowed leaderboards it
    /// counted in, which the reversal lowers (`leaderboards.rs`; the read model does the
    /// same from this). `None` when journaled before journal format 8.
    pub hour: Option<u32>,
}

/// What a gift was sent to: a live stream ([`Gift`]) or a video ([`VideoGift`]). A
/// reversal takes the coins back from the same one; goals and the live feed are per
/// stream only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum GiftTarget {
    Stream(StreamId),
    Video(VideoId),
}

impl GiftTarget {
    /// The stream's or the video's id (each its own id space).
    pub fn id(self) -> u64 {
        match self {
            GiftTarget::Stream(s) => s.0,
            GiftTarget::Video(v) => v.0,
        }
    }
}

impl GiftReversal {
    /// The reversal as a client sends it.
    pub fn new(id: EventId, sender: UserId, gift: EventId) -> GiftReversal {
        GiftReversal { id, sender, gift }
    }
}

/// A creator cashes out diamonds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Payout {
    pub id: EventId,
    pub creator: CreatorId,
    pub diamonds: u64,
    pub currency: Currency,
}

/// `PUT /v1/users/{id}`: region, adult flag, monthly, weekly and daily budgets. Each
/// setting replaces all of them (an absent budget is none).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AccountSettings {
    pub id: EventId,
    pub user: UserId,
    pub region: Option<Region>,
    pub adult: bool,
    /// Coins that gifts may spend per calendar month (UTC); none = no budget.
    pub monthly_budget_coins: OptCoins,
    /// Coins that gifts may spend per UTC day; none = no budget. At most
    /// `WINDOW_LIMIT_COINS_MAX`, else `AMOUNT_OUT_OF_RANGE`.
    pub daily_budget_coins: WindowBudget,
    /// Coins that gifts may spend per ISO week (Monday to Sunday, UTC); none = none.
    pub weekly_budget_coins: WindowBudget,
}

impl AccountSettings {
    /// Whether it sets a daily or weekly budget (which the wire and journal formats of
    /// before carry in their own variant).
    pub fn has_window_budgets(&self) -> bool {
        self.daily_budget_coins.get().is_some() || self.weekly_budget_coins.get().is_some()
    }
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

/// A recharge's package in two bytes: `None` (a custom web amount) or the package's
/// code (codes stay below `CATALOG_CODES_MAX`, far below `u16::MAX`). Keeps
/// [`Recharge`], and with it [`Event`], within 64 bytes. A code that cannot be one
/// (from a client: `u32` on the wire) is kept as [`PackageRef::UNKNOWN`] — rejected
/// `AMOUNT_OUT_OF_RANGE` as any unknown package is (two such recharges under one id
/// count as the same content). Serialized as an `Option<PackageId>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PackageRef(u16);

impl PackageRef {
    pub const NONE: PackageRef = PackageRef(u16::MAX);
    /// Every code from `u16::MAX - 1` up, which no economy has.
    pub const UNKNOWN: PackageRef = PackageRef(u16::MAX - 1);

    /// The package code; an unknown one as `u32::MAX`, what an unknown package name
    /// was before codes were compact, so its fingerprint and journaled form are the
    /// ones earlier builds recorded (review of #31, F).
    pub fn get(self) -> Option<PackageId> {
        match self {
            PackageRef::NONE => None,
            PackageRef::UNKNOWN => Some(PackageId(u32::MAX)),
            PackageRef(code) => Some(PackageId(u32::from(code))),
        }
    }
}

impl From<Option<PackageId>> for PackageRef {
    fn from(p: Option<PackageId>) -> Self {
        match p {
            None => PackageRef::NONE,
            Some(p) => u16::try_from(p.0)
                .ok()
                .filter(|&c| c < PackageRef::UNKNOWN.0)
                .map_or(PackageRef::UNKNOWN, PackageRef),
        }
    }
}

impl Serialize for PackageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PackageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<PackageId>::deserialize(d).map(PackageRef::from)
    }
}

/// An optional coin amount in eight bytes (`u64::MAX` = none): an account's monthly
/// budget, so that [`AccountSettings`] fits 48 bytes and [`Event`] 64. A budget of
/// `u64::MAX` coins is kept as `u64::MAX - 1` (neither can be spent: a month's spend is
/// a `u64` of coins a user held). Serialized as an `Option<u64>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OptCoins(u64);

impl OptCoins {
    pub const NONE: OptCoins = OptCoins(u64::MAX);

    pub fn get(self) -> Option<u64> {
        (self != OptCoins::NONE).then_some(self.0)
    }
}

impl From<Option<u64>> for OptCoins {
    fn from(c: Option<u64>) -> Self {
        c.map_or(OptCoins::NONE, |c| OptCoins(c.min(u64::MAX - 1)))
    }
}

impl Serialize for OptCoins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptCoins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<u64>::deserialize(d).map(OptCoins::from)
    }
}

/// An optional daily or weekly budget in five unaligned bytes (a marker and a `u32`), so
/// that [`AccountSettings`] fits 48 bytes and [`Event`] 64. Budgets above
/// `WINDOW_LIMIT_COINS_MAX` (`u32::MAX`) are `AMOUNT_OUT_OF_RANGE` whatever their
/// value: they are all kept as one "too large" value, read back as `u64::MAX` (two such
/// settings under one id count as the same content). Serialized as an `Option<u64>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WindowBudget([u8; 5]);

impl WindowBudget {
    pub const NONE: WindowBudget = WindowBudget([0; 5]);
    const SOME: u8 = 1;
    const TOO_LARGE: u8 = 2;

    pub fn get(self) -> Option<u64> {
        let [marker, a, b, c, d] = self.0;
        match marker {
            0 => None,
            WindowBudget::SOME => Some(u64::from(u32::from_le_bytes([a, b, c, d]))),
            _ => Some(u64::MAX),
        }
    }
}

impl From<Option<u64>> for WindowBudget {
    fn from(b: Option<u64>) -> Self {
        match b.map(u32::try_from) {
            None => WindowBudget::NONE,
            Some(Ok(coins)) => {
                let [a, b, c, d] = coins.to_le_bytes();
                WindowBudget([WindowBudget::SOME, a, b, c, d])
            }
            Some(Err(_)) => WindowBudget([WindowBudget::TOO_LARGE, 0, 0, 0, 0]),
        }
    }
}

impl Serialize for WindowBudget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for WindowBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<u64>::deserialize(d).map(WindowBudget::from)
    }
}

/// Everything that changes ledger state. Each is journaled and replayed alike: 64
/// bytes (a test pins it; the gift path copies events and log entries by value).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Event {
    Recharge(Recharge),
    Gift(Gift),
    Payout(Payout),
    Account(AccountSettings),
    StreamGoal(StreamGoal),
    Settlement(Settlement),
    Economy(EconomyChange),
    /// Appended: variant order is the serde encoding of anything holding an `Event`.
    Purchase(Purchase),
    /// Appended (wire and journal kind 11).
    RechargeReversal(RechargeReversal),
    /// Appended (wire and journal kind 12).
    GiftReversal(GiftReversal),
    /// Appended (wire and journal kind 13).
    VideoGift(VideoGift),
    /// Appended (wire kind 14, journal kind 15): a PK battle.
    Battle(Battle),
    /// Appended (wire and journal kind 17): a PK battle's close.
    BattleClose(BattleClose),
}

impl Event {
    /// The event as received with `issued_ms` (0: not given): a recharge records it as
    /// when the user paid; other kinds do not keep it.
    pub fn issued(self, issued_ms: u64) -> Event {
        match self {
            Event::Recharge(r) => Event::Recharge(r.paid(issued_ms)),
            other => other,
        }
    }

    /// A recharge that says when it was paid.
    pub fn is_paid_recharge(&self) -> bool {
        matches!(self, Event::Recharge(r) if r.paid_ms != 0)
    }

    /// When a recharge was paid (0: not given, or not a recharge).
    pub fn paid_ms(&self) -> u64 {
        match self {
            Event::Recharge(r) => r.paid_ms,
            _ => 0,
        }
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
            Event::Purchase(e) => e.id,
            Event::VideoGift(e) => e.id,
            Event::RechargeReversal(e) => e.id,
            Event::GiftReversal(e) => e.id,
            Event::Battle(b) => b.id(),
            Event::BattleClose(c) => c.id(),
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
            Event::Purchase(_) => EventKind::Purchase,
            Event::VideoGift(_) => EventKind::VideoGift,
            Event::RechargeReversal(_) => EventKind::RechargeReversal,
            Event::GiftReversal(_) => EventKind::GiftReversal,
            Event::Battle(_) => EventKind::Battle,
            Event::BattleClose(_) => EventKind::BattleClose,
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
    /// Appended: history lines in snapshots encode the kind by its position.
    Purchase,
    RechargeReversal,
    GiftReversal,
    /// A gift on a video: its own kind, so a history line tells it from a stream's.
    VideoGift,
    /// A PK battle (no user's history holds one).
    Battle,
    /// A PK battle's close.
    BattleClose,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::Recharge,
        EventKind::Gift,
        EventKind::Payout,
        EventKind::Account,
        EventKind::StreamGoal,
        EventKind::Settlement,
        EventKind::Economy,
        EventKind::Purchase,
        EventKind::RechargeReversal,
        EventKind::GiftReversal,
        EventKind::VideoGift,
        EventKind::Battle,
        EventKind::BattleClose,
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
            EventKind::Purchase => "purchase",
            EventKind::VideoGift => "video_gift",
            EventKind::RechargeReversal => "recharge_reversal",
            EventKind::GiftReversal => "gift_reversal",
            EventKind::Battle => "battle",
            EventKind::BattleClose => "battle_close",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact fields read back what they were given (budgets above the window
    /// limit as one "too large" value), and serialize as the `Option`s they replace.
    #[test]
    fn compact_fields_round_trip_and_serialize_as_options() {
        for b in [None, Some(0), Some(1), Some(u64::from(u32::MAX))] {
            assert_eq!(WindowBudget::from(b).get(), b);
            let json = serde_json::to_string(&WindowBudget::from(b)).unwrap();
            assert_eq!(json, serde_json::to_string(&b).unwrap());
            let back: WindowBudget = serde_json::from_str(&json).unwrap();
            assert_eq!(back, WindowBudget::from(b));
        }
        for too_large in [u64::from(u32::MAX) + 1, u64::MAX] {
            assert_eq!(WindowBudget::from(Some(too_large)).get(), Some(u64::MAX));
        }
        for c in [None, Some(0), Some(7), Some(u64::MAX - 1)] {
            assert_eq!(OptCoins::from(c).get(), c);
            let json = serde_json::to_string(&OptCoins::from(c)).unwrap();
            assert_eq!(json, serde_json::to_string(&c).unwrap());
        }
        assert_eq!(OptCoins::from(Some(u64::MAX)).get(), Some(u64::MAX - 1));
        for p in [None, Some(PackageId(0)), Some(PackageId(16_383))] {
            assert_eq!(PackageRef::from(p).get(), p);
            let json = serde_json::to_string(&PackageRef::from(p)).unwrap();
            assert_eq!(json, serde_json::to_string(&p).unwrap());
        }
        for unknown in [PackageId(65_534), PackageId(70_000), PackageId::UNKNOWN] {
            assert_eq!(PackageRef::from(Some(unknown)), PackageRef::UNKNOWN);
        }
        // An unknown code reads (so is fingerprinted and journaled) as an unknown
        // package name was before codes were compact: `PackageId::UNKNOWN`.
        assert_eq!(PackageId::UNKNOWN, PackageId(u32::MAX));
        assert_eq!(PackageRef::UNKNOWN.get(), Some(PackageId::UNKNOWN));
    }
}
