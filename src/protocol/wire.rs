//! Frame payloads. Field order and enum variant order are the wire format: append new
//! variants at the end, never reorder.
//!
//! Size: the frame payloads and their conversions both ways are one wire contract (the
//! journal's `record` mirrors it byte for byte); split, the two directions would drift.
//! Size: every event kind's wire variant and its conversion both ways are one contract
//! with PROTOCOL.md and the journal's `record` (which must encode to the same bytes).
//! Size: every event kind's wire type and its conversions both ways are one contract
//! (PROTOCOL.md); split by kind, a new kind would touch several files that must agree.

use bincode::{Decode, Encode};
use rust_decimal::Decimal;

use crate::economy::{Currency, Region};
use crate::engine::{
    AccountSettings, BattleId, BudgetCap, Channel, CreatorId, EconomyChange, Effect, Event,
    EventId, Gift, GiftId, GiftReversal, ItemId, Outcome, PackageId, Payout, Purchase, Recharge,
    RechargeReversal, RejectCode, Settlement, Status, StreamGoal, StreamId, UserId, VideoGift,
    VideoId,
};

/// Client to server.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ClientFrame {
    /// Must be the first frame of a connection; the token needs the `ingest` scope.
    Auth { token: String },
    /// A batch of events; the response carries the same `request_id`.
    Request {
        request_id: u64,
        events: Vec<WireEvent>,
    },
    /// A batch whose events say when the backend created them: `issued_ms[i]` is event
    /// `i`'s `issued_ms` (UTC ms, the same on every retry; 0 = not given). One per event.
    RequestIssued {
        request_id: u64,
        events: Vec<WireEvent>,
        issued_ms: Vec<u64>,
    },
}

/// Server to client.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ServerFrame {
    /// The token was accepted. `last_seq` is the engine's last sequence number.
    AuthOk { last_seq: u64 },
    /// One outcome per event of request `request_id`, in event order.
    Response {
        request_id: u64,
        outcomes: Vec<WireOutcome>,
    },
    /// An error. `request_id` is 0 when not about one request. After any code but
    /// `UNAVAILABLE`, `RATE_LIMITED` and `WRONG_PARTITION` the server closes the
    /// connection; nothing of the offending frame was applied.
    Error {
        request_id: u64,
        code: u16,
        message: String,
    },
}

/// Protocol error codes (stable).
pub mod error_code {
    /// The payload could not be decoded (or had trailing bytes).
    pub const MALFORMED_FRAME: u16 = 1;
    /// The length prefix exceeds `limits.frame_bytes_max`.
    pub const FRAME_TOO_LARGE: u16 = 2;
    /// The first frame was not `Auth`, or the token is unknown.
    pub const UNAUTHENTICATED: u16 = 3;
    /// The token lacks the `ingest` scope.
    pub const FORBIDDEN: u16 = 4;
    /// More events than `limits.events_per_frame_max`.
    pub const TOO_MANY_EVENTS: u16 = 5;
    /// A request with no events.
    pub const EMPTY_BATCH: u16 = 6;
    /// Commits are failing and the pending queue is full: retry later (the connection
    /// stays open; nothing of the request was applied).
    pub const UNAVAILABLE: u16 = 7;
    /// `limits.connections_max` connections are open.
    pub const CONNECTION_LIMIT: u16 = 8;
    /// The server is shutting down.
    pub const SHUTTING_DOWN: u16 = 9;
    /// A field holds a value no event can have (a currency that is not 3 uppercase
    /// letters, a region that is not 2, a price scale over 28, a channel over 1), or the
    /// event is a kind only the cluster's nodes make (a settlement).
    pub const INVALID_EVENT: u16 = 10;
    /// No complete frame within `limits.read_timeout_ms`.
    pub const READ_TIMEOUT: u16 = 11;
    /// The token's request rate (`limits.token_requests_per_second`) is spent: retry
    /// later (the connection stays open; nothing of the request was applied).
    pub const RATE_LIMITED: u16 = 12;
    /// An event belongs to a partition another node owns (a cluster; the message names
    /// the event's index, the partition and the owner's name and addresses). Send it
    /// there (the connection stays open; nothing of the request was applied).
    pub const WRONG_PARTITION: u16 = 13;
    /// The client's address failed to authenticate too often
    /// (`limits.auth_failures_per_peer_max`): refused without looking at its token —
    /// a good one too — until its budget refills (the message says when).
    pub const AUTH_RATE_LIMITED: u16 = 14;

    pub fn name(code: u16) -> &'static str {
        match code {
            MALFORMED_FRAME => "MALFORMED_FRAME",
            FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
            UNAUTHENTICATED => "UNAUTHENTICATED",
            FORBIDDEN => "FORBIDDEN",
            TOO_MANY_EVENTS => "TOO_MANY_EVENTS",
            EMPTY_BATCH => "EMPTY_BATCH",
            UNAVAILABLE => "UNAVAILABLE",
            CONNECTION_LIMIT => "CONNECTION_LIMIT",
            SHUTTING_DOWN => "SHUTTING_DOWN",
            INVALID_EVENT => "INVALID_EVENT",
            READ_TIMEOUT => "READ_TIMEOUT",
            RATE_LIMITED => "RATE_LIMITED",
            WRONG_PARTITION => "WRONG_PARTITION",
            AUTH_RATE_LIMITED => "AUTH_RATE_LIMITED",
            _ => "UNKNOWN",
        }
    }
}

/// A decimal amount as mantissa and scale (value = mantissa / 10^scale, scale <= 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct WireDecimal {
    pub mantissa: i128,
    pub scale: u8,
}

impl From<Decimal> for WireDecimal {
    fn from(d: Decimal) -> Self {
        WireDecimal {
            mantissa: d.mantissa(),
            scale: d.scale() as u8,
        }
    }
}

impl TryFrom<WireDecimal> for Decimal {
    type Error = &'static str;
    fn try_from(w: WireDecimal) -> Result<Self, Self::Error> {
        Decimal::try_from_i128_with_scale(w.mantissa, u32::from(w.scale))
            .map_err(|_| "decimal out of range")
    }
}

/// An event on the wire. Gifts and packages are catalog positions (`economy.toml`
/// order); an unknown one becomes the outcome `UNKNOWN_GIFT` / `AMOUNT_OUT_OF_RANGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum WireEvent {
    Recharge {
        id: u128,
        user: u64,
        coins: u64,
        price: WireDecimal,
        currency: [u8; 3],
        package: Option<u32>,
        /// 0 = app, 1 = web.
        channel: u8,
    },
    Gift {
        id: u128,
        sender: u64,
        creator: u64,
        stream: u64,
        gift: u32,
        count: u32,
    },
    Payout {
        id: u128,
        creator: u64,
        diamonds: u64,
        currency: [u8; 3],
    },
    Account {
        id: u128,
        user: u64,
        region: Option<[u8; 2]>,
        adult: bool,
        monthly_budget_coins: Option<u64>,
    },
    StreamGoal {
        id: u128,
        stream: u64,
        creator: u64,
        coins_target: u64,
    },
    /// Journal only: a cluster node's settlement report (a client frame holding one is
    /// refused with `INVALID_EVENT`).
    Settlement {
        id: u128,
        creator: u64,
        source: u16,
        diamonds: u64,
    },
    /// Journal only: an economy version comes into force (a client frame holding one is
    /// refused with `INVALID_EVENT`).
    Economy { version: u32, digest: u64 },
    /// Journal only: a settlement report with a fraction (`Settlement` is one without).
    SettlementExact {
        id: u128,
        creator: u64,
        source: u16,
        diamonds: u64,
        nanos: u32,
    },
    /// A user spends coins on `count` of the item with code `item` (the economy's
    /// `items`; an unknown or retired code is the outcome `UNKNOWN_ITEM`).
    Purchase {
        id: u128,
        user: u64,
        item: u32,
        count: u32,
    },
    /// A recharge that says when the user paid (its event's `issued_ms`): journal only
    /// (a client gives `issued_ms` in the request, which sets it; a client frame holding
    /// one is refused with `INVALID_EVENT`).
    RechargePaid {
        id: u128,
        user: u64,
        coins: u64,
        price: WireDecimal,
        currency: [u8; 3],
        package: Option<u32>,
        /// 0 = app, 1 = web.
        channel: u8,
        /// UTC ms, not 0.
        paid_ms: u64,
    },
    /// Account settings with a daily or weekly budget (`Account` is one without them:
    /// both are read; a setting without them is written as `Account`).
    AccountV2 {
        id: u128,
        user: u64,
        region: Option<[u8; 2]>,
        adult: bool,
        monthly_budget_coins: Option<u64>,
        daily_budget_coins: Option<u64>,
        weekly_budget_coins: Option<u64>,
    },
    /// A chargeback: takes back the coins of the recharge with event id `recharge`
    /// (kind 11). Accepted: the outcome's `coins` is the balance after it and its
    /// `value` the coins the user owes after it (a whole number, scale 0).
    RechargeReversal { id: u128, user: u64, recharge: u128 },
    /// A gift reversal (kind 12): `gift` is the reversed gift's event id. `reversed` is
    /// what the ledger took back, set on journaled accepted reversals only (a client
    /// frame holding one is refused with `INVALID_EVENT`).
    GiftReversal {
        id: u128,
        sender: u64,
        gift: u128,
        reversed: Option<WireReversedGift>,
    },
    /// A gift on a video (number 13; a gift on a stream stays `Gift`, number 1).
    VideoGift {
        id: u128,
        sender: u64,
        creator: u64,
        video: u64,
        gift: u32,
        count: u32,
    },
    /// An accepted reversal of a gift on a video (number 14; journal format 7): as
    /// `GiftReversal` (12) with what it took back, whose `target` is the video's id.
    /// Journal only: the engine writes it (a client sends a `GiftReversal`, which names
    /// the gift by its event id only; a client frame holding this is refused with
    /// `INVALID_EVENT`). A reversal of a gift on a stream, and a rejected one, stay 12.
    VideoGiftReversal {
        id: u128,
        sender: u64,
        gift: u128,
        reversed: WireReversedGift,
    },
    /// A PK battle (number 15): `streams[..sides]` compete over `[start_ms, end_ms)`.
    /// Its event id is derived from `battle` (so a retry is the same event). A frame
    /// with more than 4 sides or `end_ms <= start_ms` is refused (`INVALID_EVENT`); 2 to
    /// 4 distinct streams and at most 24 hours are the engine's rules (`INVALID_BATTLE`).
    Battle {
        battle: u64,
        streams: [u64; 4],
        sides: u8,
        start_ms: u64,
        end_ms: u64,
    },
    /// Journal only (number 16, kept for the numbering: the journal's accepted gift
    /// reversal with its gift's hour; a client frame holding one is refused with
    /// `INVALID_EVENT`).
    GiftReversalAt {
        id: u128,
        sender: u64,
        gift: u128,
        reversed: WireReversedGift,
        video: bool,
        hour: u32,
    },
    /// A PK battle's close (number 17): accepted once the server's clock is at or past
    /// the battle's `end_ms` (else `BATTLE_NOT_ENDED`; `BATTLE_NOT_FOUND` for a battle
    /// not held); a close of a closed battle answers the accepted close. The service
    /// sends its own when a battle ends: a client need not.
    BattleClose { battle: u64 },
}

/// What an accepted gift reversal took back (its journal record): the gift's creator,
/// target (the stream's id in a `GiftReversal`, the video's in a `VideoGiftReversal`),
/// catalog code, count, coins and exact diamonds in billionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct WireReversedGift {
    pub creator: u64,
    pub target: u64,
    pub gift: u32,
    pub count: u32,
    pub coins: u64,
    pub nanos: u128,
}

/// Nothing sends these on the wire any more (the journal has its own record type and a
/// client frame holding one is refused): the layout is kept for the binary protocol's
/// numbering, and tests compare the journal's bytes with it.
#[cfg(test)]
impl WireReversedGift {
    /// The record of `g`: its target's id (the variant holding it says its kind).
    pub(crate) fn of(g: crate::engine::ReversedGift) -> Self {
        WireReversedGift {
            creator: g.creator.0,
            target: g.target.id(),
            gift: g.gift.0,
            count: g.count,
            coins: g.coins,
            nanos: g.nanos,
        }
    }
}

impl WireEvent {
    /// Made by the cluster's nodes, never accepted from a client.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            WireEvent::Settlement { .. }
                | WireEvent::Economy { .. }
                | WireEvent::SettlementExact { .. }
                | WireEvent::RechargePaid { .. }
                | WireEvent::GiftReversal {
                    reversed: Some(_),
                    ..
                }
                | WireEvent::VideoGiftReversal { .. }
                | WireEvent::GiftReversalAt { .. }
        )
    }
}

fn currency(bytes: [u8; 3]) -> Result<Currency, &'static str> {
    Currency::from_bytes(bytes).ok_or("currency must be 3 uppercase ASCII letters")
}

fn channel_byte(channel: Channel) -> u8 {
    match channel {
        Channel::App => 0,
        Channel::Web => 1,
    }
}

/// A recharge from its encoded fields (`paid_ms` 0: not given).
#[allow(clippy::too_many_arguments)]
fn recharge(
    id: u128,
    user: u64,
    coins: u64,
    price: WireDecimal,
    cur: [u8; 3],
    package: Option<u32>,
    channel: u8,
    paid_ms: u64,
) -> Result<Event, &'static str> {
    Ok(Event::Recharge(Recharge {
        id: EventId(id),
        user: UserId(user),
        coins,
        price: price.try_into()?,
        currency: currency(cur)?,
        package: package.map(PackageId).into(),
        channel: match channel {
            0 => Channel::App,
            1 => Channel::Web,
            _ => return Err("channel must be 0 (app) or 1 (web)"),
        },
        paid_ms,
    }))
}

impl TryFrom<WireEvent> for Event {
    type Error = &'static str;
    fn try_from(w: WireEvent) -> Result<Self, Self::Error> {
        Ok(match w {
            WireEvent::Recharge {
                id,
                user,
                coins,
                price,
                currency: cur,
                package,
                channel,
            } => recharge(id, user, coins, price, cur, package, channel, 0)?,
            WireEvent::RechargePaid {
                id,
                user,
                coins,
                price,
                currency: cur,
                package,
                channel,
                paid_ms,
            } => recharge(id, user, coins, price, cur, package, channel, paid_ms)?,
            WireEvent::Gift {
                id,
                sender,
                creator,
                stream,
                gift,
                count,
            } => Event::Gift(Gift {
                id: EventId(id),
                sender: UserId(sender),
                creator: CreatorId(creator),
                stream: StreamId(stream),
                gift: GiftId(gift),
                count,
            }),
            WireEvent::Payout {
                id,
                creator,
                diamonds,
                currency: cur,
            } => Event::Payout(Payout {
                id: EventId(id),
                creator: CreatorId(creator),
                diamonds,
                currency: currency(cur)?,
            }),
            WireEvent::Account {
                id,
                user,
                region,
                adult,
                monthly_budget_coins,
            } => Event::Account(AccountSettings {
                id: EventId(id),
                user: UserId(user),
                region: match region {
                    Some(r) => Some(
                        Region::from_bytes(r).ok_or("region must be 2 uppercase ASCII letters")?,
                    ),
                    None => None,
                },
                adult,
                monthly_budget_coins: monthly_budget_coins.into(),
                daily_budget_coins: None.into(),
                weekly_budget_coins: None.into(),
            }),
            WireEvent::AccountV2 {
                id,
                user,
                region,
                adult,
                monthly_budget_coins,
                daily_budget_coins,
                weekly_budget_coins,
            } => Event::Account(AccountSettings {
                id: EventId(id),
                user: UserId(user),
                region: match region {
                    Some(r) => Some(
                        Region::from_bytes(r).ok_or("region must be 2 uppercase ASCII letters")?,
                    ),
                    None => None,
                },
                adult,
                monthly_budget_coins: monthly_budget_coins.into(),
                daily_budget_coins: daily_budget_coins.into(),
                weekly_budget_coins: weekly_budget_coins.into(),
            }),
            WireEvent::StreamGoal {
                id,
                stream,
                creator,
                coins_target,
            } => Event::StreamGoal(StreamGoal {
                id: EventId(id),
                stream: StreamId(stream),
                creator: CreatorId(creator),
                coins_target,
            }),
            WireEvent::Settlement {
                id,
                creator,
                source,
                diamonds,
            } => Event::Settlement(Settlement {
                id: EventId(id),
                creator: CreatorId(creator),
                source,
                diamonds,
                nanos: 0,
            }),
            WireEvent::SettlementExact {
                id,
                creator,
                source,
                diamonds,
                nanos,
            } => {
                if u128::from(nanos) >= crate::engine::NANOS_PER_DIAMOND {
                    return Err("a settlement's nanos must be below 10^9");
                }
                Event::Settlement(Settlement {
                    id: EventId(id),
                    creator: CreatorId(creator),
                    source,
                    diamonds,
                    nanos,
                })
            }
            WireEvent::Economy { version, digest } => {
                Event::Economy(EconomyChange { version, digest })
            }
            WireEvent::Purchase {
                id,
                user,
                item,
                count,
            } => Event::Purchase(Purchase {
                id: EventId(id),
                user: UserId(user),
                item: ItemId(item),
                count,
            }),
            WireEvent::VideoGift {
                id,
                sender,
                creator,
                video,
                gift,
                count,
            } => Event::VideoGift(VideoGift {
                id: EventId(id),
                sender: UserId(sender),
                creator: CreatorId(creator),
                video: VideoId(video),
                gift: GiftId(gift),
                count,
            }),
            WireEvent::RechargeReversal { id, user, recharge } => {
                Event::RechargeReversal(RechargeReversal {
                    id: EventId(id),
                    user: UserId(user),
                    recharge: EventId(recharge),
                })
            }
            // `reversed` is the journal's (an internal frame: refused from clients).
            WireEvent::GiftReversal {
                id, sender, gift, ..
            } => Event::GiftReversal(GiftReversal {
                id: EventId(id),
                sender: UserId(sender),
                gift: EventId(gift),
            }),
            WireEvent::VideoGiftReversal {
                id, sender, gift, ..
            }
            | WireEvent::GiftReversalAt {
                id, sender, gift, ..
            } => Event::GiftReversal(GiftReversal {
                id: EventId(id),
                sender: UserId(sender),
                gift: EventId(gift),
            }),
            WireEvent::Battle {
                battle,
                streams,
                sides,
                start_ms,
                end_ms,
            } => {
                let sides = usize::from(sides);
                if sides > streams.len() {
                    return Err("a battle has at most 4 streams");
                }
                let streams: Vec<StreamId> =
                    streams[..sides].iter().map(|&s| StreamId(s)).collect();
                Event::Battle(
                    crate::engine::Battle::new(BattleId(battle), &streams, start_ms, end_ms)
                        .ok_or("a battle's end_ms must be after its start_ms")?,
                )
            }
            WireEvent::BattleClose { battle } => Event::BattleClose(crate::engine::BattleClose {
                battle: BattleId(battle),
            }),
        })
    }
}

impl From<&Event> for WireEvent {
    fn from(e: &Event) -> Self {
        match *e {
            Event::Recharge(r) if r.paid_ms != 0 => WireEvent::RechargePaid {
                id: r.id.0,
                user: r.user.0,
                coins: r.coins,
                price: r.price.into(),
                currency: r.currency.to_bytes(),
                package: r.package.get().map(|p| p.0),
                channel: channel_byte(r.channel),
                paid_ms: r.paid_ms,
            },
            Event::Recharge(r) => WireEvent::Recharge {
                id: r.id.0,
                user: r.user.0,
                coins: r.coins,
                price: r.price.into(),
                currency: r.currency.to_bytes(),
                package: r.package.get().map(|p| p.0),
                channel: match r.channel {
                    Channel::App => 0,
                    Channel::Web => 1,
                },
            },
            Event::Gift(g) => WireEvent::Gift {
                id: g.id.0,
                sender: g.sender.0,
                creator: g.creator.0,
                stream: g.stream.0,
                gift: g.gift.0,
                count: g.count,
            },
            Event::Payout(p) => WireEvent::Payout {
                id: p.id.0,
                creator: p.creator.0,
                diamonds: p.diamonds,
                currency: p.currency.to_bytes(),
            },
            Event::Account(a) if a.has_window_budgets() => WireEvent::AccountV2 {
                id: a.id.0,
                user: a.user.0,
                region: a.region.map(Region::to_bytes),
                adult: a.adult,
                monthly_budget_coins: a.monthly_budget_coins.get(),
                daily_budget_coins: a.daily_budget_coins.get(),
                weekly_budget_coins: a.weekly_budget_coins.get(),
            },
            Event::Account(a) => WireEvent::Account {
                id: a.id.0,
                user: a.user.0,
                region: a.region.map(Region::to_bytes),
                adult: a.adult,
                monthly_budget_coins: a.monthly_budget_coins.get(),
            },
            Event::StreamGoal(g) => WireEvent::StreamGoal {
                id: g.id.0,
                stream: g.stream.0,
                creator: g.creator.0,
                coins_target: g.coins_target,
            },
            Event::Settlement(s) if s.nanos != 0 => WireEvent::SettlementExact {
                id: s.id.0,
                creator: s.creator.0,
                source: s.source,
                diamonds: s.diamonds,
                nanos: s.nanos,
            },
            Event::Settlement(s) => WireEvent::Settlement {
                id: s.id.0,
                creator: s.creator.0,
                source: s.source,
                diamonds: s.diamonds,
            },
            Event::Economy(e) => WireEvent::Economy {
                version: e.version,
                digest: e.digest,
            },
            Event::Purchase(p) => WireEvent::Purchase {
                id: p.id.0,
                user: p.user.0,
                item: p.item.0,
                count: p.count,
            },
            Event::VideoGift(v) => WireEvent::VideoGift {
                id: v.id.0,
                sender: v.sender.0,
                creator: v.creator.0,
                video: v.video.0,
                gift: v.gift.0,
                count: v.count,
            },
            Event::RechargeReversal(r) => WireEvent::RechargeReversal {
                id: r.id.0,
                user: r.user.0,
                recharge: r.recharge.0,
            },
            Event::GiftReversal(r) => WireEvent::GiftReversal {
                id: r.id.0,
                sender: r.sender.0,
                gift: r.gift.0,
                reversed: None,
            },
            Event::Battle(b) => {
                let mut streams = [0u64; 4];
                for (slot, s) in streams.iter_mut().zip(b.streams()) {
                    *slot = s.0;
                }
                WireEvent::Battle {
                    battle: b.battle.0,
                    streams,
                    sides: b.streams().len() as u8,
                    start_ms: b.start_ms,
                    end_ms: b.end_ms(),
                }
            }
            Event::BattleClose(c) => WireEvent::BattleClose { battle: c.battle.0 },
        }
    }
}

/// An outcome on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct WireOutcome {
    pub seq: u64,
    /// 0 = accepted; otherwise the `RejectCode` number.
    pub status: u8,
    pub duplicate: bool,
    /// Accepted recharge, gift, purchase or recharge reversal: the balance after. Accepted payout: diamonds
    /// available after. Accepted settlement: the diamonds it credited. Rejected
    /// `BUDGET_EXCEEDED`: the cap it names (1 monthly budget, 2 daily budget, 3 weekly
    /// budget, 4 daily platform cap, 5 weekly platform cap; 0 from builds before daily
    /// and weekly limits: the monthly budget). Otherwise 0.
    pub coins: u64,
    /// Accepted payout: its value. Accepted recharge reversal: the coins the user owes
    /// after it (scale 0). Otherwise zero.
    pub value: WireDecimal,
}

impl From<&Outcome> for WireOutcome {
    fn from(o: &Outcome) -> Self {
        let (status, coins, value) = match o.status {
            Status::Accepted(Effect::Coins(c)) => (0, c, Decimal::ZERO),
            Status::Accepted(Effect::PaidOut {
                diamonds_available,
                value,
            }) => (0, diamonds_available, value),
            Status::Accepted(Effect::Stored) => (0, 0, Decimal::ZERO),
            Status::Accepted(Effect::Settled { credited }) => (0, credited, Decimal::ZERO),
            // The debt after it, a whole number of coins.
            Status::Accepted(Effect::Reversed { coins, owed }) => (0, coins, Decimal::from(owed)),
            // A BUDGET_EXCEEDED carries the cap it names (`BudgetCap` number).
            Status::Rejected(code) => (code as u8, o.cap.map_or(0, |c| c as u64), Decimal::ZERO),
        };
        WireOutcome {
            seq: o.seq,
            status,
            duplicate: o.duplicate,
            coins,
            value: value.into(),
        }
    }
}

impl WireOutcome {
    /// Back to an engine outcome, given the event it answers (which decides the effect).
    pub fn to_outcome(&self, event: &Event) -> Result<Outcome, &'static str> {
        let status = if self.status == 0 {
            Status::Accepted(match event {
                Event::Recharge(_)
                | Event::Gift(_)
                | Event::Purchase(_)
                | Event::VideoGift(_)
                | Event::GiftReversal(_) => Effect::Coins(self.coins),
                Event::Payout(_) => Effect::PaidOut {
                    diamonds_available: self.coins,
                    value: self.value.try_into()?,
                },
                Event::Account(_)
                | Event::StreamGoal(_)
                | Event::Battle(_)
                | Event::BattleClose(_) => Effect::Stored,
                Event::Settlement(_) => Effect::Settled {
                    credited: self.coins,
                },
                Event::Economy(_) => Effect::Stored,
                Event::RechargeReversal(_) => Effect::Reversed {
                    coins: self.coins,
                    owed: u64::try_from(self.value.mantissa)
                        .ok()
                        .filter(|_| self.value.scale == 0)
                        .ok_or("a reversal's debt must be a whole number of coins")?,
                },
            })
        } else {
            Status::Rejected(RejectCode::from_u8(self.status).ok_or("unknown reject code")?)
        };
        let cap = match status {
            Status::Rejected(code) => BudgetCap::of(code, self.coins),
            Status::Accepted(_) => None,
        };
        Ok(Outcome {
            seq: self.seq,
            status,
            duplicate: self.duplicate,
            cap,
        })
    }
}
