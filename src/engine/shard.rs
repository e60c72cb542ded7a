//! A sender shard: the wallets, idempotency window and history of the users that hash to
//! it, plus this shard's part of every creator's and stream's gifter aggregates.
//!
//! Every gifter lives in exactly one shard, so per-gifter totals (and the top-K lists
//! built from them) are split across shards without overlap and merge exactly at read
//! time. Coin totals per creator and stream are buffered here as `pending_coins` and
//! merged into the books once per chunk: the hot-account pattern.
//!
//! Size: every sender event's application (recharge, gift, purchase, account) reads and
//! writes the same wallet, budget and aggregate fields under one lock; the format-6
//! shard's conversion sits beside the fields it converts. Split by event kind, each part
//! would reach into the others' private state.

use std::collections::{BTreeMap, VecDeque};

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::EngineConfig;
use super::event::{
    AccountSettings, BudgetCap, CreatorId, Effect, Event, EventId, EventKind, Gift, GiftId,
    GiftTarget, GiftTotals, ItemId, LogEntry, Outcome, Period, Purchase, Recharge, RejectCode,
    Stamp, Status, StreamId, UserId, VideoGift,
};
use super::gift_records::GiftRecords;
use super::leaderboards::{Counted, ShardWindows};
use super::rules::{self, Budgets, Wallet, WalletV6};
pub(crate) use super::splitmap::PairCoins;
use super::splitmap::SplitMap;
use super::topk::GifterTop;
use super::videos::ShardVideos;
use super::window::LegacyWindow;
use crate::economy::{Currency, Economy};

mod chargeback;

pub(crate) use chargeback::RechargeBook;

/// One line of a user's recent history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event_id: EventId,
    pub kind: EventKind,
    pub seq: u64,
    pub stamp: Stamp,
    /// `None` when accepted.
    pub code: Option<RejectCode>,
    /// Change of the user's coin balance: +coins for a recharge, -cost for a gift or a
    /// purchase, 0 when rejected.
    pub coins_delta: i128,
}

/// A history line as stored: 48 bytes where [`HistoryEntry`] takes 64 (the id as two
/// words, so 8-byte alignment; the coin change as a magnitude and a direction — it is
/// always a u64 amount). A user keeps up to `engine.history_per_user` of them, so they
/// are most of a busy wallet's memory. Snapshots keep [`HistoryEntry`]'s encoding
/// (`serde(try_from, into)`): the format is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HistoryEntry", into = "HistoryEntry")]
pub(crate) struct HistoryLine {
    event_id: [u64; 2],
    seq: u64,
    stamp: Stamp,
    coins: u64,
    kind: EventKind,
    code: Option<RejectCode>,
    debit: bool,
}

const _: () = assert!(std::mem::size_of::<HistoryLine>() == 48);

impl HistoryLine {
    /// A line for event `id`: `coins` added to the balance, or taken (`debit`).
    fn new(
        id: EventId,
        kind: EventKind,
        seq: u64,
        stamp: Stamp,
        code: Option<RejectCode>,
        (coins, debit): (u64, bool),
    ) -> Self {
        HistoryLine {
            event_id: id.to_words(),
            seq,
            stamp,
            coins,
            kind,
            code,
            // A change of 0 has no direction (a reversal that found the balance empty):
            // as the snapshot's `coins_delta` reads back.
            debit: debit && coins > 0,
        }
    }
}

impl From<HistoryLine> for HistoryEntry {
    fn from(l: HistoryLine) -> Self {
        let coins = i128::from(l.coins);
        HistoryEntry {
            event_id: EventId::from_words(l.event_id),
            kind: l.kind,
            seq: l.seq,
            stamp: l.stamp,
            code: l.code,
            coins_delta: if l.debit { -coins } else { coins },
        }
    }
}

impl TryFrom<HistoryEntry> for HistoryLine {
    type Error = String;

    fn try_from(e: HistoryEntry) -> Result<Self, String> {
        let coins = u64::try_from(e.coins_delta.unsigned_abs()).map_err(|_| {
            format!(
                "history line of event {}: coin change {} out of range",
                e.event_id.0, e.coins_delta
            )
        })?;
        Ok(HistoryLine::new(
            e.event_id,
            e.kind,
            e.seq,
            e.stamp,
            e.code,
            (coins, e.coins_delta < 0),
        ))
    }
}

/// This shard's part of one creator's aggregates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CreatorPart {
    /// Coins received since the last merge into the creator book.
    pub pending_coins: u128,
    /// Gift counts by catalog id (a creator receives few kinds: a short list).
    pub gifts: Vec<(GiftId, u128)>,
    /// Top gifters among this shard's senders (their totals are in `creator_gifters`).
    pub top: GifterTop,
}

/// This shard's part of one stream's aggregates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamPart {
    pub pending_coins: u128,
    /// Smallest creator id gifted to in this stream since the last merge.
    pub pending_creator: Option<CreatorId>,
    /// Top gifters among this shard's senders (their totals are in `stream_gifters`).
    pub top: GifterTop,
}

/// This shard's purchases, for the audit: the platform's revenue in coins. Kept beside
/// the shard's other totals but snapshotted on its own (`EngineState::purchases`, format
/// 7), so the shard's encoding, and every older format's, stays as it was. Bounded by
/// the item codes (at most `CATALOG_CODES_MAX`), not by users: no bytes per wallet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PurchaseTotals {
    /// Coins spent on purchases.
    pub coins: u128,
    /// Per item code: items bought and coins spent on them.
    pub items: BTreeMap<ItemId, (u128, u128)>,
}

impl PurchaseTotals {
    fn record(&mut self, item: ItemId, count: u32, cost: u64) {
        self.coins += u128::from(cost);
        let line = self.items.entry(item).or_default();
        line.0 += u128::from(count);
        line.1 += u128::from(cost);
    }
}

/// Sales under one promotion, for revenue accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionSales {
    /// Recharges accepted under it.
    pub recharges: u64,
    /// The bonus coins they gave (counted in `coins_recharged` too).
    pub bonus_coins: u128,
    /// The money they brought, per currency (counted in `revenue` too).
    pub revenue: BTreeMap<Currency, Decimal>,
}

/// A shard's sales per promotion id. Bounded by the promotions the ledger's economy
/// versions ever held.
pub type PromotionBook = BTreeMap<String, PromotionSales>;

/// Money and coin totals for the conservation audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SenderTotals {
    pub coins_recharged: u128,
    pub coins_spent: u128,
    pub revenue: BTreeMap<Currency, Decimal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SenderShard {
    pub wallets: FxHashMap<UserId, Wallet>,
    pub histories: FxHashMap<UserId, VecDeque<HistoryLine>>,
    /// Snapshot formats 1 and 2 kept this shard's ids here; moved to the id index at load.
    pub window: LegacyWindow,
    pub creators: FxHashMap<CreatorId, CreatorPart>,
    pub streams: FxHashMap<StreamId, StreamPart>,
    /// Coins gifted per (creator, sender of this shard). One flat map rather than a map
    /// per creator: no small-map growth on the hot path, one probe per gift; split in
    /// parts so that it grows in small steps (`splitmap`).
    pub creator_gifters: SplitMap<(CreatorId, UserId), PairCoins>,
    /// Coins gifted per (stream, sender of this shard).
    pub stream_gifters: SplitMap<(StreamId, UserId), PairCoins>,
    pub log: Vec<LogEntry>,
    pub totals: SenderTotals,
    /// Not in the shard's own encoding: a snapshot holds it in `EngineState::purchases`.
    #[serde(skip)]
    pub purchases: PurchaseTotals,
    /// Sales per promotion: encoded apart, at the end of the state (format 7), so that
    /// the shard encodes as it did before promotions.
    #[serde(skip)]
    pub promotions: PromotionBook,
    /// This shard's part of every video's totals and top gifters: encoded apart, at the
    /// end of the state (format 8), so that the shard encodes as it did before videos.
    #[serde(skip)]
    pub videos: ShardVideos,
    /// Gift records for reversals and their totals (`refund.rs`): encoded apart, at the
    /// end of the state (format 8).
    #[serde(skip)]
    pub gift_records: GiftRecords,
    /// The numbers of the stream gifts of the chunk being applied that got no gift
    /// record (they reused their sender's held id: `gift_records`, F6), for the battles
    /// (review B3). Cleared per chunk; empty but for such reuses.
    #[serde(skip)]
    pub unrecorded_gifts: Vec<u64>,
    /// Creators and streams with pending coins, to merge at the end of the chunk.
    pub touched_creators: Vec<CreatorId>,
    pub touched_streams: Vec<StreamId>,
    /// The budgets of the users who set one (snapshot format 7; formats 1 to 6 kept the
    /// monthly budget in the wallet). A wallet's `budgets` flag says it has an entry.
    pub budgets: FxHashMap<UserId, Budgets>,
    /// Recharges that can still be reversed, and what reversals took back (`chargeback`;
    /// encoded apart, at the end of the state: format 8).
    #[serde(skip)]
    pub recharges: RechargeBook,
    /// Coins owed by the users who owe any (a reversed recharge already spent): only
    /// users with a balance of 0 have an entry. Encoded apart (format 8).
    #[serde(skip)]
    pub debts: FxHashMap<UserId, u64>,
    /// Windowed totals and top gifters (`leaderboards.rs`; encoded apart, at the end of
    /// the state: format 10). Empty while `engine.windows.enabled` is off.
    #[serde(skip)]
    pub windows: ShardWindows,
}

/// A sender shard as snapshot formats 1 to 6 encoded it: wallets of their layout, no
/// budgets beside them.
#[derive(Deserialize)]
pub(crate) struct SenderShardV6 {
    wallets: FxHashMap<UserId, WalletV6>,
    histories: FxHashMap<UserId, VecDeque<HistoryLine>>,
    window: LegacyWindow,
    creators: FxHashMap<CreatorId, CreatorPart>,
    streams: FxHashMap<StreamId, StreamPart>,
    creator_gifters: SplitMap<(CreatorId, UserId), PairCoins>,
    stream_gifters: SplitMap<(StreamId, UserId), PairCoins>,
    log: Vec<LogEntry>,
    totals: SenderTotals,
    touched_creators: Vec<CreatorId>,
    touched_streams: Vec<StreamId>,
}

impl From<SenderShardV6> for SenderShard {
    /// Monthly budgets move beside the wallets; day and week counts start at zero.
    fn from(v6: SenderShardV6) -> Self {
        let mut budgets = FxHashMap::default();
        let wallets = v6
            .wallets
            .into_iter()
            .map(|(user, old)| {
                let (wallet, budget) = Wallet::of_v6(old);
                if wallet.budgets {
                    budgets.insert(user, budget);
                }
                (user, wallet)
            })
            .collect();
        SenderShard {
            wallets,
            histories: v6.histories,
            window: v6.window,
            creators: v6.creators,
            streams: v6.streams,
            creator_gifters: v6.creator_gifters,
            stream_gifters: v6.stream_gifters,
            log: v6.log,
            totals: v6.totals,
            unrecorded_gifts: Vec::new(),
            touched_creators: v6.touched_creators,
            touched_streams: v6.touched_streams,
            budgets,
            purchases: PurchaseTotals::default(),
            promotions: PromotionBook::new(),
            videos: ShardVideos::default(),
            recharges: RechargeBook::default(),
            debts: FxHashMap::default(),
            gift_records: GiftRecords::default(),
            windows: ShardWindows::default(),
        }
    }
}

/// What one chunk owes the books.
pub(crate) struct PendingCredits {
    pub creators: Vec<(CreatorId, u128)>,
    pub streams: Vec<(StreamId, CreatorId, u128)>,
}

impl SenderShard {
    pub(crate) fn new() -> Self {
        SenderShard {
            wallets: FxHashMap::default(),
            histories: FxHashMap::default(),
            window: LegacyWindow::default(),
            creators: FxHashMap::default(),
            streams: FxHashMap::default(),
            creator_gifters: SplitMap::default(),
            stream_gifters: SplitMap::default(),
            log: Vec::new(),
            totals: SenderTotals::default(),
            purchases: PurchaseTotals::default(),
            promotions: PromotionBook::new(),
            videos: ShardVideos::default(),
            gift_records: GiftRecords::default(),
            unrecorded_gifts: Vec::new(),
            touched_creators: Vec::new(),
            touched_streams: Vec::new(),
            budgets: FxHashMap::default(),
            recharges: RechargeBook::default(),
            debts: FxHashMap::default(),
            windows: ShardWindows::default(),
        }
    }

    /// The budgets of `user` (none when it set none).
    pub(crate) fn budgets_of(&self, user: UserId, wallet: &Wallet) -> Budgets {
        if wallet.budgets {
            self.budgets.get(&user).copied().unwrap_or(Budgets::NONE)
        } else {
            Budgets::NONE
        }
    }

    /// Looks up, without changing anything, the entries `events` will touch: their
    /// senders' wallets and histories, and each gift's creator and stream parts and
    /// per-pair totals, and with windowed leaderboards kept (`windows_hour`: the batch's
    /// hour) their pairs and lists in each window. Every lookup is independent of the others, so the CPU keeps many
    /// of these cache misses in flight at once; [`SenderShard::apply`] then finds the
    /// lines in cache instead of waiting for each miss in turn. Returns a value to pass to
    /// `std::hint::black_box`, so the lookups are not optimised away.
    pub(crate) fn warm<'a>(
        &self,
        events: impl Iterator<Item = &'a Event>,
        windows_hour: Option<u32>,
    ) -> u64 {
        let mut seen = 0u64;
        for event in events {
            let user = match event {
                Event::Recharge(r) => r.user,
                Event::Gift(g) => {
                    if let Some(hour) = windows_hour {
                        let targets = (g.creator, g.stream);
                        seen ^= self.windows.warm(hour, targets, g.sender, g.gift);
                    }
                    if let Some(part) = self.creators.get(&g.creator) {
                        seen ^= part.top.entries().last().map_or(0, |e| e.0);
                    }
                    if let Some(total) = self.creator_gifters.get(&(g.creator, g.sender)) {
                        seen ^= total.0;
                    }
                    if let Some(part) = self.streams.get(&g.stream) {
                        seen ^= part.top.entries().last().map_or(0, |e| e.0);
                    }
                    if let Some(total) = self.stream_gifters.get(&(g.stream, g.sender)) {
                        seen ^= total.0;
                    }
                    g.sender
                }
                Event::Account(a) => a.user,
                Event::Purchase(p) => p.user,
                Event::VideoGift(v) => v.sender,
                Event::RechargeReversal(r) => r.user,
                _ => continue,
            };
            if let Some(wallet) = self.wallets.get(&user) {
                seen ^= wallet.coins;
            }
            if let Some(line) = self.histories.get(&user).and_then(|h| h.front()) {
                seen ^= line.seq;
            }
        }
        seen
    }

    /// Applies one sender-routed event (recharge, gift, purchase, account settings, recharge
    /// reversal) with the
    /// sequence number `seq` reserved for it. The caller has claimed its id: it is not a
    /// retry.
    pub(crate) fn apply(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        event: &Event,
        seq: u64,
        stamp: Stamp,
        period: Period,
    ) -> Outcome {
        let id = event.id();
        let mut totals = None;
        let mut cap = None;
        // The change of the user's coins: an amount and whether it was taken.
        let (status, user, change) = match event {
            Event::Recharge(r) => {
                let (status, to_balance) = self.recharge(economy, config, r, stamp);
                (status, Some(r.user), (to_balance, false))
            }
            Event::RechargeReversal(r) => {
                let (status, taken) = self.reverse_recharge(economy, r, stamp);
                (status, Some(r.user), (taken, true))
            }
            Event::Gift(g) => {
                let (status, gift_cap, cost, gift_totals) = self.gift(economy, config, g, period);
                // Under an earnings hold, what a reversal needs (`refund.rs`); without
                // one, nothing: one branch.
                if economy.earnings_hold_ms > 0 && gift_totals.is_some() {
                    let target = GiftTarget::Stream(g.stream);
                    let gift = (g.id, g.into(), target);
                    if !self.record_gift(economy, config, gift, cost, stamp) {
                        self.unrecorded_gifts.push(seq);
                    }
                }
                // Windowed leaderboards: off, one branch.
                if config.windows.enabled && gift_totals.is_some() {
                    let counted = Counted {
                        creator: g.creator,
                        stream: Some(g.stream),
                        sender: g.sender,
                        gift: (g.gift, g.count),
                        coins: cost,
                        seq,
                    };
                    self.count_in_windows(config, stamp, counted);
                }
                totals = gift_totals;
                cap = gift_cap;
                (status, Some(g.sender), (cost, true))
            }
            Event::Account(a) => (self.account(a), None, (0, false)),
            Event::Purchase(p) => {
                let (status, purchase_cap, cost) = self.purchase(economy, p, period);
                cap = purchase_cap;
                (status, Some(p.user), (cost, true))
            }
            Event::VideoGift(v) => {
                let (status, gift_cap, cost, gift_totals) =
                    self.video_gift(economy, config, v, period);
                // Reversible like a stream's gift (`refund.rs`).
                if economy.earnings_hold_ms > 0 && gift_totals.is_some() {
                    let target = GiftTarget::Video(v.video);
                    // A video is in no battle: whether it got a record of its own is moot.
                    let _ =
                        self.record_gift(economy, config, (v.id, v.into(), target), cost, stamp);
                }
                // A gift on a video counts for its creator, in no stream.
                if config.windows.enabled && gift_totals.is_some() {
                    let counted = Counted {
                        creator: v.creator,
                        stream: None,
                        sender: v.sender,
                        gift: (v.gift, v.count),
                        coins: cost,
                        seq,
                    };
                    self.count_in_windows(config, stamp, counted);
                }
                totals = gift_totals;
                cap = gift_cap;
                (status, Some(v.sender), (cost, true))
            }
            Event::Payout(_)
            | Event::StreamGoal(_)
            | Event::Settlement(_)
            | Event::Economy(_)
            | Event::GiftReversal(_)
            | Event::Battle(_)
            | Event::BattleClose(_) => {
                unreachable!(
                    "payouts, settlements, goals, reversals, battles and economy changes are not applied in chunks"
                )
            }
        };
        let outcome = Outcome {
            seq,
            status,
            duplicate: false,
            cap,
        };
        if let Some(user) = user {
            self.push_history(
                config,
                user,
                (id, event.kind(), seq, stamp),
                outcome,
                change,
            );
        }
        if config.keep_log {
            self.log.push(LogEntry {
                seq,
                stamp,
                event: *event,
                outcome,
                totals,
                reversed: None,
            });
        }
        outcome
    }

    /// Appends a line to `user`'s history: event `id` of `kind` numbered `seq` at
    /// `stamp`, with its outcome and, when accepted, its `change` of the balance.
    pub(crate) fn push_history(
        &mut self,
        config: &EngineConfig,
        user: UserId,
        (id, kind, seq, stamp): (EventId, EventKind, u64, Stamp),
        outcome: Outcome,
        change: (u64, bool),
    ) {
        // A user with no wallet was never registered, funded or gifted from: a rejected
        // event of one leaves no history, so hostile ids cost no memory.
        if config.history_per_user == 0 || !self.wallets.contains_key(&user) {
            return;
        }
        let accepted = outcome.is_accepted();
        let history = self.histories.entry(user).or_default();
        // `>=`: a history loaded from a snapshot taken with a larger
        // `engine.history_per_user` shrinks to the bound at its next line.
        while history.len() >= config.history_per_user {
            history.pop_front();
        }
        history.push_back(HistoryLine::new(
            id,
            kind,
            seq,
            stamp,
            outcome.code(),
            if accepted { change } else { (0, false) },
        ));
    }

    /// Returns the status and the coins that reached the balance (a debt is repaid
    /// first; 0 when rejected).
    fn recharge(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        r: &Recharge,
        stamp: Stamp,
    ) -> (Status, u64) {
        let wallet = self.wallets.get(&r.user).copied().unwrap_or_default();
        match rules::recharge(economy, &wallet, r, r.paid_at(stamp)) {
            Ok(done) => {
                // The rules checked the balance plus every coin fits; a debt only lowers
                // what reaches it.
                let credit = self.credit_coins(r.user, r.coins);
                let credit = credit.expect("the overflow rule checked the balance");
                self.record_recharge(economy, config.recharge_records_per_shard_max, r, stamp);
                self.totals.coins_recharged += u128::from(r.coins);
                let revenue = self.totals.revenue.entry(r.currency).or_default();
                *revenue = revenue.saturating_add(r.price);
                if let Some(offer) = done.promotion.map(|i| &economy.promotions[i]) {
                    let sales = self.promotions.entry(offer.id.clone()).or_default();
                    sales.recharges += 1;
                    sales.bonus_coins += u128::from(offer.bonus_coins);
                    let revenue = sales.revenue.entry(r.currency).or_default();
                    *revenue = revenue.saturating_add(r.price);
                }
                (
                    Status::Accepted(Effect::Coins(credit.balance)),
                    credit.to_balance,
                )
            }
            Err(code) => (Status::Rejected(code), 0),
        }
    }

    /// Returns the status, the cap a `BUDGET_EXCEEDED` names, the cost debited (0 when
    /// rejected) and, when accepted, the sender's totals after it.
    fn gift(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        g: &Gift,
        period: Period,
    ) -> (Status, Option<BudgetCap>, u64, Option<GiftTotals>) {
        let (balance, cost, creator_total) = match self.send_gift(economy, config, g.into(), period)
        {
            Ok(sent) => sent,
            Err(refusal) => return (Status::Rejected(refusal.code), refusal.cap, 0, None),
        };
        let part = self.streams.entry(g.stream).or_default();
        if part.pending_coins == 0 {
            self.touched_streams.push(g.stream);
        }
        part.pending_coins += u128::from(cost);
        part.pending_creator = Some(part.pending_creator.map_or(g.creator, |c| c.min(g.creator)));
        let total = self.stream_gifters.entry((g.stream, g.sender)).or_default();
        let previous = total.0;
        total.0 = total.0.saturating_add(cost);
        part.top.offer(config.top_k, g.sender.0, total.0, previous);
        let totals = GiftTotals {
            creator: creator_total,
            stream: total.0,
        };

        (
            Status::Accepted(Effect::Coins(balance)),
            None,
            cost,
            Some(totals),
        )
    }

    /// A gift on a video: [`SenderShard::send_gift`] as a stream's gift, then the
    /// video's own totals ([`ShardVideos::credit`]) instead of a stream's. The journaled
    /// totals' `stream` is the sender's total on the video.
    fn video_gift(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        v: &VideoGift,
        period: Period,
    ) -> (Status, Option<BudgetCap>, u64, Option<GiftTotals>) {
        let (balance, cost, creator_total) = match self.send_gift(economy, config, v.into(), period)
        {
            Ok(sent) => sent,
            Err(refusal) => return (Status::Rejected(refusal.code), refusal.cap, 0, None),
        };
        let video_total = self.videos.credit(config.top_k, v, cost);
        let totals = GiftTotals {
            creator: creator_total,
            stream: video_total,
        };
        (
            Status::Accepted(Effect::Coins(balance)),
            None,
            cost,
            Some(totals),
        )
    }

    /// What every gift does, on a stream or a video: the checks ([`rules::gift`]), the
    /// debit, and the creator's part (pending coins, gift counts, the sender's total
    /// and top gifters). Returns the balance, the cost and the sender's creator total.
    #[inline(always)]
    fn send_gift(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        g: rules::GiftSend,
        period: Period,
    ) -> Result<(u64, u64, u64), rules::Refusal> {
        // A gift from a user never seen can only be rejected: do not create a wallet for
        // it, so hostile ids cost no memory.
        let Some(wallet) = self.wallets.get_mut(&g.sender) else {
            let refusal = rules::gift(
                economy,
                &Wallet::default(),
                &Budgets::NONE,
                false,
                g,
                period,
            )
            .expect_err("an empty wallet cannot pay for a gift");
            return Err(refusal);
        };
        let budgets = if wallet.budgets {
            self.budgets
                .get(&g.sender)
                .copied()
                .unwrap_or(Budgets::NONE)
        } else {
            Budgets::NONE
        };
        // A user who owes coins has a balance of 0: the debts are looked at only then.
        let in_debt =
            wallet.coins == 0 && !self.debts.is_empty() && self.debts.contains_key(&g.sender);
        let cost = rules::gift(economy, wallet, &budgets, in_debt, g, period)?;
        let coins = wallet.coins.checked_sub(cost);
        wallet.coins = coins.expect("the funds rule keeps a balance from going negative");
        // A gift stamped earlier than one already applied (stamps are taken before the
        // locks) counts in the later day, week and month: the counters never go back.
        wallet.count_spent(period, cost);
        let balance = wallet.coins;
        self.totals.coins_spent += u128::from(cost);

        let part = self.creators.entry(g.creator).or_default();
        if part.pending_coins == 0 {
            self.touched_creators.push(g.creator);
        }
        part.pending_coins += u128::from(cost);
        match part.gifts.iter_mut().find(|(id, _)| *id == g.gift) {
            Some((_, n)) => *n += u128::from(g.count),
            None => part.gifts.push((g.gift, u128::from(g.count))),
        }
        let total = self
            .creator_gifters
            .entry((g.creator, g.sender))
            .or_default();
        let previous = total.0;
        total.0 = total.0.saturating_add(cost);
        part.top.offer(config.top_k, g.sender.0, total.0, previous);
        Ok((balance, cost, total.0))
    }

    /// Counts an accepted gift in the windows holding `stamp` (`leaderboards.rs`).
    #[inline(never)]
    fn count_in_windows(&mut self, config: &EngineConfig, stamp: Stamp, counted: Counted) {
        let hour = super::event::hour_of(stamp);
        self.windows
            .gift(&config.windows, config.top_k, hour, counted);
    }

    /// Records accepted gift `gift` (its id, what the rules read, its stream or video;
    /// cost `cost`, at `stamp`) for a reversal while its diamonds are held; drops the
    /// records released at `stamp`. False when the gift got no record of its own.
    #[inline(never)]
    fn record_gift(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        gift: (EventId, rules::GiftSend, GiftTarget),
        cost: u64,
        stamp: Stamp,
    ) -> bool {
        let release = super::hold::release_at(stamp, economy.earnings_hold_ms);
        let nanos = super::hold::nanos_for(economy, u128::from(cost));
        self.gift_records.prune(stamp.0);
        let max = config.gift_records_per_shard_max;
        self.gift_records
            .record(max, gift, (cost, nanos), (release, stamp.0))
    }

    /// Returns the status, the cap a `BUDGET_EXCEEDED` names, and the cost debited (0
    /// when rejected). The same account, limits and funds checks as a gift
    /// ([`rules::spend`]); the coins count in the same day, week and month.
    fn purchase(
        &mut self,
        economy: &Economy,
        p: &Purchase,
        period: Period,
    ) -> (Status, Option<BudgetCap>, u64) {
        // As a gift: a user never seen can only be rejected and gets no wallet.
        let Some(wallet) = self.wallets.get_mut(&p.user) else {
            let refusal = rules::purchase(
                economy,
                &Wallet::default(),
                &Budgets::NONE,
                false,
                p,
                period,
            )
            .expect_err("an empty wallet cannot pay for an item");
            return (Status::Rejected(refusal.code), refusal.cap, 0);
        };
        let budgets = if wallet.budgets {
            self.budgets.get(&p.user).copied().unwrap_or(Budgets::NONE)
        } else {
            Budgets::NONE
        };
        let in_debt =
            wallet.coins == 0 && !self.debts.is_empty() && self.debts.contains_key(&p.user);
        let cost = match rules::purchase(economy, wallet, &budgets, in_debt, p, period) {
            Ok(cost) => cost,
            Err(refusal) => return (Status::Rejected(refusal.code), refusal.cap, 0),
        };
        let coins = wallet.coins.checked_sub(cost);
        wallet.coins = coins.expect("the funds rule keeps a balance from going negative");
        wallet.count_spent(period, cost);
        let balance = wallet.coins;
        self.purchases.record(p.item, p.count, cost);
        (Status::Accepted(Effect::Coins(balance)), None, cost)
    }

    fn account(&mut self, a: &AccountSettings) -> Status {
        if let Err(code) = rules::account(a) {
            return Status::Rejected(code);
        }
        let wallet = self.wallets.entry(a.user).or_default();
        wallet.region = a.region.map_or([0; 2], crate::economy::Region::to_bytes);
        wallet.adult = a.adult;
        let budgets = Budgets::of(a);
        wallet.budgets = budgets != Budgets::NONE;
        if wallet.budgets {
            self.budgets.insert(a.user, budgets);
        } else {
            self.budgets.remove(&a.user);
        }
        Status::Accepted(Effect::Stored)
    }

    /// Takes the coins buffered since the last merge.
    pub(crate) fn take_pending(&mut self) -> PendingCredits {
        let creators = self
            .touched_creators
            .drain(..)
            .map(|c| {
                let part = self
                    .creators
                    .get_mut(&c)
                    .expect("touched creator has a part");
                (c, std::mem::take(&mut part.pending_coins))
            })
            .collect();
        let streams = self
            .touched_streams
            .drain(..)
            .map(|s| {
                let part = self.streams.get_mut(&s).expect("touched stream has a part");
                let creator = part.pending_creator.take().expect("a gift names a creator");
                (s, creator, std::mem::take(&mut part.pending_coins))
            })
            .collect();
        PendingCredits { creators, streams }
    }
}

// A wallet is at most 32 bytes: the memory target is <= 100 bytes per wallet.
const _: () = assert!(std::mem::size_of::<Wallet>() <= 32);
// A budgets entry (only for users who set a budget) is 24 bytes.
const _: () = assert!(std::mem::size_of::<Budgets>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    /// A history longer than `engine.history_per_user` (a snapshot of a ledger that kept
    /// more, loaded with a lower bound) is cut to the bound at its next line: it never
    /// grows past it (review finding F4).
    #[test]
    fn a_history_over_a_lowered_bound_shrinks_to_it() {
        let mut shard = SenderShard::new();
        let user = UserId(7);
        shard.wallets.insert(user, Wallet::default());
        let push = |shard: &mut SenderShard, config: &EngineConfig, seq: u64| {
            let outcome = Outcome::new(seq, Status::Accepted(Effect::Coins(1)), false);
            let line = (
                EventId(u128::from(seq)),
                EventKind::Recharge,
                seq,
                Stamp(seq),
            );
            shard.push_history(config, user, line, outcome, (1, false));
        };
        let wide = EngineConfig {
            history_per_user: 8,
            ..EngineConfig::default()
        };
        for seq in 1..=8 {
            push(&mut shard, &wide, seq);
        }
        assert_eq!(shard.histories[&user].len(), 8);
        let narrow = EngineConfig {
            history_per_user: 3,
            ..EngineConfig::default()
        };
        push(&mut shard, &narrow, 9);
        let seqs: Vec<u64> = shard.histories[&user].iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9]);
    }

    #[test]
    fn a_history_line_keeps_every_field_and_the_snapshot_encoding() {
        let entries: VecDeque<HistoryEntry> = [
            (u128::MAX, EventKind::Gift, None, -i128::from(u64::MAX)),
            (1 << 64 | 7, EventKind::Recharge, None, i128::from(u64::MAX)),
            (3, EventKind::Gift, Some(RejectCode::InsufficientCoins), 0),
            (0, EventKind::Account, None, 0),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (id, kind, code, coins_delta))| HistoryEntry {
            event_id: EventId(id),
            kind,
            seq: u64::MAX - i as u64,
            stamp: Stamp(1_794_700_800_000 + i as u64),
            code,
            coins_delta,
        })
        .collect();
        let lines: VecDeque<HistoryLine> = entries
            .iter()
            .map(|&e| HistoryLine::try_from(e).unwrap())
            .collect();
        let back: VecDeque<HistoryEntry> = lines.iter().map(|&l| l.into()).collect();
        assert_eq!(back, entries);
        // Snapshots hold histories: stored as lines, they encode exactly as entries did.
        let encoded = crate::protocol::encode_serde(&lines).unwrap();
        assert_eq!(encoded, crate::protocol::encode_serde(&entries).unwrap());
        let decoded: VecDeque<HistoryLine> = crate::protocol::decode_serde(&encoded).unwrap();
        assert_eq!(decoded, lines);
        // A coin change no apply can make is refused, not wrapped.
        let mut wide = entries[0];
        wide.coins_delta = i128::from(u64::MAX) + 1;
        assert!(HistoryLine::try_from(wide).is_err());
        let wrong = crate::protocol::encode_serde(&[wide]).unwrap();
        assert!(crate::protocol::decode_serde::<Vec<HistoryLine>>(&wrong).is_err());
    }

    #[test]
    fn pair_totals_encode_as_the_u128_they_were_and_a_wider_one_is_refused() {
        use crate::protocol::{decode_serde, encode_serde};
        let mut pairs: SplitMap<(CreatorId, UserId), PairCoins> = SplitMap::default();
        let mut wide: FxHashMap<(CreatorId, UserId), u128> = FxHashMap::default();
        for (i, coins) in [0, 1, 250, 251, 65_536, u64::MAX].into_iter().enumerate() {
            let key = (CreatorId(7), UserId(i as u64));
            pairs.insert(key, PairCoins(coins));
            wide.insert(key, u128::from(coins));
        }
        // A snapshot written with u128 totals reads back, and is written the same way.
        let from_wide: SplitMap<(CreatorId, UserId), PairCoins> =
            decode_serde(&encode_serde(&wide).unwrap()).unwrap();
        assert!(
            wide.iter()
                .all(|(k, &v)| from_wide.get(k).map(|c| c.get()) == Some(v))
        );
        let back: FxHashMap<(CreatorId, UserId), u128> =
            decode_serde(&encode_serde(&pairs).unwrap()).unwrap();
        assert_eq!(back, wide);
        wide.insert((CreatorId(8), UserId(1)), u128::from(u64::MAX) + 1);
        let err =
            decode_serde::<SplitMap<(CreatorId, UserId), PairCoins>>(&encode_serde(&wide).unwrap())
                .expect_err("a total over 64 bits is refused");
        assert!(err.contains("exceeds 64 bits"), "{err}");
    }
}
