//! The journal's own event and outcome types, so that a change of the wire protocol
//! never changes the journal. Field order, field types and variant order are the journal
//! format (bincode): they encode to the same bytes as the wire's `WireEvent` and
//! `WireOutcome` did when the journal stored those (format 4), so every journal written
//! since reads unchanged. Append new variants at the end, never reorder (`Purchase`,
//! journal format 5; `RechargeReversal`, `GiftReversal` and `VideoGift`, numbers 11 to
//! 13, journal format 6; `VideoGiftReversal`, number 14, journal format 7; `Battle`,
//! number 15, journal format 8; `GiftReversalAt`, number 16, journal format 9;
//! `BattleClose`, number 17, journal format 10, is the last).
//!
//! Size: the journal's event and outcome types, their encoding both ways and the test that
//! compares every kind with the wire's bytes are one on-disk contract (~180 lines of tests).

use bincode::{Decode, Encode};
use rust_decimal::Decimal;

use crate::economy::{Currency, Region};
use crate::engine::{
    AccountSettings, Battle, BattleClose, BattleId, BudgetCap, Channel, CreatorId, EconomyChange,
    Effect, Event, EventId, Gift, GiftId, GiftReversal, GiftTarget, ItemId, NANOS_PER_DIAMOND,
    Outcome, PackageId, Payout, Purchase, Recharge, RechargeReversal, RejectCode, ReversedGift,
    Settlement, Status, StreamGoal, StreamId, UserId, VideoGift, VideoId,
};

/// A decimal amount as mantissa and scale (value = mantissa / 10^scale, scale <= 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct JournalDecimal {
    pub mantissa: i128,
    pub scale: u8,
}

impl From<Decimal> for JournalDecimal {
    fn from(d: Decimal) -> Self {
        JournalDecimal {
            mantissa: d.mantissa(),
            scale: d.scale() as u8,
        }
    }
}

impl TryFrom<JournalDecimal> for Decimal {
    type Error = &'static str;
    fn try_from(d: JournalDecimal) -> Result<Self, Self::Error> {
        Decimal::try_from_i128_with_scale(d.mantissa, u32::from(d.scale))
            .map_err(|_| "decimal out of range")
    }
}

/// A journaled event. Gifts and packages are catalog positions (`economy.toml` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum JournalEvent {
    Recharge {
        id: u128,
        user: u64,
        coins: u64,
        price: JournalDecimal,
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
    /// A cluster node's settlement report in whole diamonds (journal format 3).
    Settlement {
        id: u128,
        creator: u64,
        source: u16,
        diamonds: u64,
    },
    /// An economy version comes into force (journal format 4).
    Economy { version: u32, digest: u64 },
    /// A settlement report with a fraction (`Settlement` is one without).
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
        price: JournalDecimal,
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
        reversed: Option<JournalReversedGift>,
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
        reversed: JournalReversedGift,
    },
    /// A PK battle (number 15; journal format 8): its id, streams (2 to 4 in a valid
    /// one; the event id is derived from the battle id) and window.
    Battle {
        battle: u64,
        /// The first `sides` are the streams (the rest 0).
        streams: [u64; 4],
        sides: u8,
        start_ms: u64,
        end_ms: u64,
    },
    /// An accepted gift reversal with the hour of its gift's stamp (number 16; journal
    /// format 9): as `GiftReversal` (12) or `VideoGiftReversal` (14) — `video` says which
    /// — plus `hour`, the hour since the epoch of the reversed gift's stamp, so that the
    /// read model lowers the windowed leaderboards the gift counted in (the engine
    /// finds them in its gift record). Journal only, written for every accepted
    /// reversal; 12 and 14 are still read (their hour unknown).
    GiftReversalAt {
        id: u128,
        sender: u64,
        gift: u128,
        reversed: JournalReversedGift,
        video: bool,
        hour: u32,
    },
    /// A PK battle's close (number 17; journal format 10): the battle id (the event id
    /// is derived from it). Accepted or rejected (`BATTLE_NOT_ENDED`,
    /// `BATTLE_NOT_FOUND`), its outcome says.
    BattleClose { battle: u64 },
}

/// What an accepted gift reversal took back (its journal record): the gift's creator,
/// target (the stream's id in a `GiftReversal`, the video's in a `VideoGiftReversal`),
/// catalog code, count, coins and exact diamonds in billionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct JournalReversedGift {
    pub creator: u64,
    pub target: u64,
    pub gift: u32,
    pub count: u32,
    pub coins: u64,
    pub nanos: u128,
}

impl JournalReversedGift {
    /// The record of `g`: its target's id (the variant holding it says its kind).
    fn of(g: ReversedGift) -> Self {
        JournalReversedGift {
            creator: g.creator.0,
            target: g.target.id(),
            gift: g.gift.0,
            count: g.count,
            coins: g.coins,
            nanos: g.nanos,
        }
    }

    /// The reversed gift, sent to `target` (the stream or the video with the record's
    /// target id).
    fn on(self, target: fn(u64) -> GiftTarget, hour: Option<u32>) -> ReversedGift {
        ReversedGift {
            creator: CreatorId(self.creator),
            target: target(self.target),
            gift: GiftId(self.gift),
            count: self.count,
            coins: self.coins,
            nanos: self.nanos,
            hour,
        }
    }
}

/// A reversed gift's target from a `GiftReversal`'s record: a stream.
fn on_stream(id: u64) -> GiftTarget {
    GiftTarget::Stream(StreamId(id))
}

/// A reversed gift's target from a `VideoGiftReversal`'s record: a video.
fn on_video(id: u64) -> GiftTarget {
    GiftTarget::Video(VideoId(id))
}

/// A journaled outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct JournalOutcome {
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
    pub value: JournalDecimal,
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
    price: JournalDecimal,
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

impl From<&Event> for JournalEvent {
    fn from(e: &Event) -> Self {
        match *e {
            Event::Recharge(r) if r.paid_ms != 0 => JournalEvent::RechargePaid {
                id: r.id.0,
                user: r.user.0,
                coins: r.coins,
                price: r.price.into(),
                currency: r.currency.to_bytes(),
                package: r.package.get().map(|p| p.0),
                channel: channel_byte(r.channel),
                paid_ms: r.paid_ms,
            },
            Event::Recharge(r) => JournalEvent::Recharge {
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
            Event::Gift(g) => JournalEvent::Gift {
                id: g.id.0,
                sender: g.sender.0,
                creator: g.creator.0,
                stream: g.stream.0,
                gift: g.gift.0,
                count: g.count,
            },
            Event::Payout(p) => JournalEvent::Payout {
                id: p.id.0,
                creator: p.creator.0,
                diamonds: p.diamonds,
                currency: p.currency.to_bytes(),
            },
            Event::Account(a) if a.has_window_budgets() => JournalEvent::AccountV2 {
                id: a.id.0,
                user: a.user.0,
                region: a.region.map(Region::to_bytes),
                adult: a.adult,
                monthly_budget_coins: a.monthly_budget_coins.get(),
                daily_budget_coins: a.daily_budget_coins.get(),
                weekly_budget_coins: a.weekly_budget_coins.get(),
            },
            Event::Account(a) => JournalEvent::Account {
                id: a.id.0,
                user: a.user.0,
                region: a.region.map(Region::to_bytes),
                adult: a.adult,
                monthly_budget_coins: a.monthly_budget_coins.get(),
            },
            Event::StreamGoal(g) => JournalEvent::StreamGoal {
                id: g.id.0,
                stream: g.stream.0,
                creator: g.creator.0,
                coins_target: g.coins_target,
            },
            Event::Settlement(s) if s.nanos != 0 => JournalEvent::SettlementExact {
                id: s.id.0,
                creator: s.creator.0,
                source: s.source,
                diamonds: s.diamonds,
                nanos: s.nanos,
            },
            Event::Settlement(s) => JournalEvent::Settlement {
                id: s.id.0,
                creator: s.creator.0,
                source: s.source,
                diamonds: s.diamonds,
            },
            Event::Economy(e) => JournalEvent::Economy {
                version: e.version,
                digest: e.digest,
            },
            Event::Purchase(p) => JournalEvent::Purchase {
                id: p.id.0,
                user: p.user.0,
                item: p.item.0,
                count: p.count,
            },
            Event::VideoGift(v) => JournalEvent::VideoGift {
                id: v.id.0,
                sender: v.sender.0,
                creator: v.creator.0,
                video: v.video.0,
                gift: v.gift.0,
                count: v.count,
            },
            Event::RechargeReversal(r) => JournalEvent::RechargeReversal {
                id: r.id.0,
                user: r.user.0,
                recharge: r.recharge.0,
            },
            Event::GiftReversal(r) => JournalEvent::GiftReversal {
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
                JournalEvent::Battle {
                    battle: b.battle.0,
                    streams,
                    sides: b.streams().len() as u8,
                    start_ms: b.start_ms,
                    end_ms: b.end_ms(),
                }
            }
            Event::BattleClose(c) => JournalEvent::BattleClose { battle: c.battle.0 },
        }
    }
}

impl JournalEvent {
    /// The journal form of an entry's event: a gift reversal carries what it took back
    /// ([`LogEntry::reversed`]).
    /// A reversal of a gift on a video is its own kind (14), journal-only.
    pub fn of_entry(e: &crate::engine::LogEntry) -> JournalEvent {
        let j = JournalEvent::from(&e.event);
        let (
            JournalEvent::GiftReversal {
                id, sender, gift, ..
            },
            Some(g),
        ) = (j, e.reversed.as_deref().copied())
        else {
            return j;
        };
        if let Some(hour) = g.hour {
            return JournalEvent::GiftReversalAt {
                id,
                sender,
                gift,
                reversed: JournalReversedGift::of(g),
                video: matches!(g.target, GiftTarget::Video(_)),
                hour,
            };
        }
        match g.target {
            GiftTarget::Video(_) => JournalEvent::VideoGiftReversal {
                id,
                sender,
                gift,
                reversed: JournalReversedGift::of(g),
            },
            GiftTarget::Stream(_) => JournalEvent::GiftReversal {
                id,
                sender,
                gift,
                reversed: Some(JournalReversedGift::of(g)),
            },
        }
    }

    /// What a journaled gift reversal took back (the entry's [`LogEntry::reversed`]).
    pub fn reversed(&self) -> Option<Box<ReversedGift>> {
        match self {
            JournalEvent::GiftReversal {
                reversed: Some(g), ..
            } => Some(Box::new(g.on(on_stream, None))),
            JournalEvent::VideoGiftReversal { reversed, .. } => {
                Some(Box::new(reversed.on(on_video, None)))
            }
            JournalEvent::GiftReversalAt {
                reversed,
                video,
                hour,
                ..
            } => {
                let target = if *video { on_video } else { on_stream };
                Some(Box::new(reversed.on(target, Some(*hour))))
            }
            _ => None,
        }
    }
}

impl TryFrom<JournalEvent> for Event {
    type Error = &'static str;
    fn try_from(j: JournalEvent) -> Result<Self, Self::Error> {
        Ok(match j {
            JournalEvent::Recharge {
                id,
                user,
                coins,
                price,
                currency: cur,
                package,
                channel,
            } => recharge(id, user, coins, price, cur, package, channel, 0)?,
            JournalEvent::RechargePaid {
                id,
                user,
                coins,
                price,
                currency: cur,
                package,
                channel,
                paid_ms,
            } => recharge(id, user, coins, price, cur, package, channel, paid_ms)?,
            JournalEvent::Gift {
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
            JournalEvent::Payout {
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
            JournalEvent::Account {
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
            JournalEvent::AccountV2 {
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
            JournalEvent::StreamGoal {
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
            JournalEvent::Settlement {
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
            JournalEvent::SettlementExact {
                id,
                creator,
                source,
                diamonds,
                nanos,
            } => {
                if u128::from(nanos) >= NANOS_PER_DIAMOND {
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
            JournalEvent::Economy { version, digest } => {
                Event::Economy(EconomyChange { version, digest })
            }
            JournalEvent::Purchase {
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
            JournalEvent::VideoGift {
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
            JournalEvent::RechargeReversal { id, user, recharge } => {
                Event::RechargeReversal(RechargeReversal {
                    id: EventId(id),
                    user: UserId(user),
                    recharge: EventId(recharge),
                })
            }
            JournalEvent::GiftReversal {
                id, sender, gift, ..
            } => Event::GiftReversal(GiftReversal {
                id: EventId(id),
                sender: UserId(sender),
                gift: EventId(gift),
            }),
            JournalEvent::VideoGiftReversal {
                id, sender, gift, ..
            }
            | JournalEvent::GiftReversalAt {
                id, sender, gift, ..
            } => Event::GiftReversal(GiftReversal {
                id: EventId(id),
                sender: UserId(sender),
                gift: EventId(gift),
            }),
            JournalEvent::Battle {
                battle,
                streams,
                sides,
                start_ms,
                end_ms,
            } => {
                let sides = usize::from(sides).min(streams.len());
                let streams: Vec<StreamId> =
                    streams[..sides].iter().map(|&s| StreamId(s)).collect();
                Event::Battle(
                    Battle::new(BattleId(battle), &streams, start_ms, end_ms)
                        .ok_or("a battle with more than 4 streams or an empty window")?,
                )
            }
            JournalEvent::BattleClose { battle } => Event::BattleClose(BattleClose {
                battle: BattleId(battle),
            }),
        })
    }
}

impl From<&Outcome> for JournalOutcome {
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
        JournalOutcome {
            seq: o.seq,
            status,
            duplicate: o.duplicate,
            coins,
            value: value.into(),
        }
    }
}

impl JournalOutcome {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, WireEvent, WireOutcome};

    /// Every event kind (and every optional field both ways).
    fn events() -> Vec<Event> {
        let usd = Currency::from_bytes(*b"USD").unwrap();
        let recharge = |package: Option<PackageId>, channel, price: Decimal| {
            Event::Recharge(Recharge {
                id: EventId(u128::MAX - 3),
                user: UserId(u64::MAX),
                coins: 7_000,
                price,
                currency: usd,
                package: package.into(),
                channel,
                paid_ms: 0,
            })
        };
        let settlement = |nanos| {
            Event::Settlement(Settlement {
                id: EventId(1 << 100),
                creator: CreatorId(4),
                source: 3,
                diamonds: 250,
                nanos,
            })
        };
        let account = |region, budget: Option<u64>| {
            Event::Account(AccountSettings {
                id: EventId(12),
                user: UserId(3),
                region,
                adult: budget.is_some(),
                monthly_budget_coins: budget.into(),
                daily_budget_coins: None.into(),
                weekly_budget_coins: None.into(),
            })
        };
        let account_v2 = |daily: Option<u64>, weekly: Option<u64>| {
            Event::Account(AccountSettings {
                id: EventId(13),
                user: UserId(3),
                region: Region::from_bytes(*b"FR"),
                adult: true,
                monthly_budget_coins: Some(9).into(),
                daily_budget_coins: daily.into(),
                weekly_budget_coins: weekly.into(),
            })
        };
        vec![
            // Journal format 10: a battle's close (kind 17).
            Event::BattleClose(BattleClose {
                battle: BattleId(u64::MAX),
            }),
            // Journal format 8: a battle (kind 15), with 2 and 4 streams.
            Event::Battle(
                Battle::new(
                    BattleId(u64::MAX),
                    &[StreamId(1), StreamId(u64::MAX)],
                    5,
                    60_005,
                )
                .unwrap(),
            ),
            Event::Battle(
                Battle::new(
                    BattleId(3),
                    &[StreamId(1), StreamId(2), StreamId(3), StreamId(4)],
                    u64::MAX - 86_400_000,
                    u64::MAX,
                )
                .unwrap(),
            ),
            recharge(Some(PackageId(2)), Channel::App, Decimal::new(9_999, 2)),
            recharge(None, Channel::Web, Decimal::new(-123_456_789, 28)),
            match recharge(Some(PackageId(1)), Channel::Web, Decimal::new(499, 2)) {
                Event::Recharge(r) => Event::Recharge(r.paid(1_796_395_441_000)),
                _ => unreachable!(),
            },
            Event::Gift(Gift {
                id: EventId(99),
                sender: UserId(3),
                creator: CreatorId(4),
                stream: StreamId(5),
                gift: GiftId(7),
                count: 300,
            }),
            Event::Payout(Payout {
                id: EventId(100),
                creator: CreatorId(4),
                diamonds: 1 << 40,
                currency: usd,
            }),
            account(Region::from_bytes(*b"DE"), Some(5_000)),
            account(None, None),
            account_v2(Some(1), None),
            account_v2(None, Some(u64::from(u32::MAX))),
            account_v2(Some(0), Some(7)),
            Event::StreamGoal(StreamGoal {
                id: EventId(0),
                stream: StreamId(5),
                creator: CreatorId(4),
                coins_target: 1_000_000,
            }),
            settlement(0),
            settlement(999_999_999),
            Event::Economy(EconomyChange {
                version: 2,
                digest: 0xFEED_F00D_DEAD_BEEF,
            }),
            Event::Purchase(Purchase {
                id: EventId(u128::MAX),
                user: UserId(u64::MAX - 1),
                item: ItemId(2),
                count: 9_999,
            }),
            Event::VideoGift(VideoGift {
                id: EventId(u128::MAX - 9),
                sender: UserId(3),
                creator: CreatorId(u64::MAX),
                video: VideoId(u64::MAX - 2),
                gift: GiftId(7),
                count: 1,
            }),
            Event::RechargeReversal(RechargeReversal {
                id: EventId(u128::MAX - 11),
                user: UserId(u64::MAX - 2),
                recharge: EventId(u128::MAX - 3),
            }),
            Event::GiftReversal(GiftReversal::new(EventId(7), UserId(3), EventId(99))),
        ]
    }

    /// An accepted gift reversal's journal record carries what it took back (its log
    /// entry's `reversed`, not the event's): the same bytes as the wire type's, and
    /// back into the entry.
    #[test]
    fn a_gift_reversal_record_carries_what_it_took_back() {
        let on_stream = ReversedGift {
            creator: CreatorId(4),
            target: GiftTarget::Stream(StreamId(5)),
            gift: GiftId(7),
            count: 300,
            coins: 1 << 40,
            nanos: u128::from(u64::MAX) * 3,
            hour: None,
        };
        // Journal format 7: a gift on a video, reversed (kind 14).
        let on_video = ReversedGift {
            creator: CreatorId(u64::MAX),
            target: GiftTarget::Video(VideoId(5)),
            gift: GiftId(0),
            count: 1,
            coins: 1,
            nanos: 500_000_000,
            hour: None,
        };
        for (gift, kind) in [(on_stream, 12), (on_video, 14)] {
            let r = GiftReversal::new(EventId(u128::MAX - 9), UserId(u64::MAX), EventId(1 << 90));
            let entry = crate::engine::LogEntry {
                seq: 5,
                stamp: crate::engine::Stamp(1),
                event: Event::GiftReversal(r),
                outcome: Outcome::new(5, Status::Accepted(Effect::Coins(9)), false),
                totals: None,
                reversed: Some(Box::new(gift)),
            };
            let journal = JournalEvent::of_entry(&entry);
            let wire = match gift.target {
                GiftTarget::Stream(_) => WireEvent::GiftReversal {
                    id: r.id.0,
                    sender: r.sender.0,
                    gift: r.gift.0,
                    reversed: Some(crate::protocol::WireReversedGift::of(gift)),
                },
                GiftTarget::Video(_) => WireEvent::VideoGiftReversal {
                    id: r.id.0,
                    sender: r.sender.0,
                    gift: r.gift.0,
                    reversed: crate::protocol::WireReversedGift::of(gift),
                },
            };
            let bytes = protocol::encode(&journal);
            assert_eq!(bytes, protocol::encode(&wire));
            assert_eq!(bytes[0], kind);
            assert_eq!(journal.reversed().as_deref(), Some(&gift));
            assert_eq!(Event::try_from(journal).unwrap(), entry.event);
            assert!(
                wire.is_internal(),
                "a client may not send what was taken back"
            );
            let plain = JournalEvent::from(&entry.event);
            assert_eq!(plain.reversed(), None, "the event alone does not carry it");
        }
    }

    /// Journal format 9: an accepted reversal whose gift's hour is known is kind 16, on
    /// a stream or a video, and reads back with its hour (12 and 14, above, without).
    #[test]
    fn a_gift_reversal_with_its_gift_hour_is_kind_16_and_reads_back() {
        for target in [
            GiftTarget::Stream(StreamId(5)),
            GiftTarget::Video(VideoId(6)),
        ] {
            let gift = ReversedGift {
                creator: CreatorId(4),
                target,
                gift: GiftId(2),
                count: 3,
                coins: 300,
                nanos: 150_000_000_000,
                hour: Some(492_000),
            };
            let r = GiftReversal::new(EventId(17), UserId(3), EventId(1 << 90));
            let entry = crate::engine::LogEntry {
                seq: 5,
                stamp: crate::engine::Stamp(1),
                event: Event::GiftReversal(r),
                outcome: Outcome::new(5, Status::Accepted(Effect::Coins(9)), false),
                totals: None,
                reversed: Some(Box::new(gift)),
            };
            let journal = JournalEvent::of_entry(&entry);
            let bytes = protocol::encode(&journal);
            assert_eq!(bytes[0], 16);
            let back: JournalEvent = protocol::decode(&bytes).unwrap();
            assert_eq!(back.reversed().as_deref(), Some(&gift));
            assert_eq!(Event::try_from(back).unwrap(), entry.event);
        }
    }

    /// Every outcome kind, for an event it can answer.
    fn outcomes(event: &Event, seq: u64) -> Vec<Outcome> {
        let accepted = match event {
            Event::Recharge(_)
            | Event::Gift(_)
            | Event::Purchase(_)
            | Event::VideoGift(_)
            | Event::GiftReversal(_) => Effect::Coins(u64::MAX - seq),
            Event::Payout(_) => Effect::PaidOut {
                diamonds_available: 17,
                value: Decimal::new(123_456, 3),
            },
            Event::Account(_)
            | Event::StreamGoal(_)
            | Event::Economy(_)
            | Event::Battle(_)
            | Event::BattleClose(_) => Effect::Stored,
            Event::Settlement(_) => Effect::Settled { credited: 200 },
            Event::RechargeReversal(_) => Effect::Reversed {
                coins: seq,
                owed: u64::MAX - seq,
            },
        };
        let mut all = vec![Outcome {
            seq,
            status: Status::Accepted(accepted),
            duplicate: false,
            cap: None,
        }];
        all.extend(BudgetCap::ALL.into_iter().map(|cap| Outcome {
            duplicate: seq.is_multiple_of(3),
            ..Outcome::over_budget(seq, cap)
        }));
        all.extend(RejectCode::ALL.into_iter().map(|code| Outcome {
            seq,
            status: Status::Rejected(code),
            duplicate: seq.is_multiple_of(2),
            cap: BudgetCap::of(code, 0),
        }));
        all
    }

    #[test]
    fn journal_records_encode_to_the_bytes_the_wire_types_did_and_read_both_ways() {
        for (i, event) in events().iter().enumerate() {
            let journal = protocol::encode(&JournalEvent::from(event));
            let wire = protocol::encode(&WireEvent::from(event));
            assert_eq!(journal, wire, "{event:?}");
            let from_wire: JournalEvent = protocol::decode(&wire).unwrap();
            assert_eq!(Event::try_from(from_wire).unwrap(), *event);
            let from_journal: WireEvent = protocol::decode(&journal).unwrap();
            assert_eq!(Event::try_from(from_journal).unwrap(), *event);
            for outcome in outcomes(event, i as u64 + 1) {
                let journal = protocol::encode(&JournalOutcome::from(&outcome));
                let wire = protocol::encode(&WireOutcome::from(&outcome));
                assert_eq!(journal, wire, "{outcome:?}");
                let from_wire: JournalOutcome = protocol::decode(&wire).unwrap();
                assert_eq!(from_wire.to_outcome(event).unwrap(), outcome);
                let from_journal: WireOutcome = protocol::decode(&journal).unwrap();
                assert_eq!(from_journal.to_outcome(event).unwrap(), outcome);
            }
        }
    }
}
