//! The ledger state a snapshot holds: [`EngineState`] (and the formats 1 to 9 it is
//! decoded from), [`StateView`] (the same, borrowed at a live cut), taking it
//! ([`Engine::snapshot`], [`Engine::with_cut`]) and loading it ([`Engine::from_state`]).
//!
//! Size: every snapshot format's state struct (1 to 10) and its conversion into today's are one
//! contract with `persist::snapshot`; the fields appended by each format sit side by side.

use std::sync::atomic::Ordering;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::battles::Battles;
use super::books::{CreatorShard, Credited, Settled, SettledNanos, StreamShard};
use super::cut::in_seq_order;
use super::event::{
    BattleId, CreatorId, EventFingerprint, EventId, LogEntry, Outcome, Stamp, UserId,
};
use super::gift_records::{GiftRecord, GiftRecords, GiftRecordsV8};
use super::hold::{HoldState, HoldStateView};
use super::idhash::IdSecret;
use super::leaderboards::{BookWindows, ShardWindows};
use super::shard::{PromotionBook, PurchaseTotals, RechargeBook, SenderShard, SenderShardV6};
use super::topk::TopK;
use super::videos::ShardVideos;
use super::window::{self, IdWindow, IdWindowV4, IdWindowV5};
use super::{Engine, EngineConfig, Route, route_tag};
use crate::config::ConfigError;
use crate::economy::{Economy, EconomyDoc};

impl Engine {
    /// Calls `f` with the whole state at a consistent cut (every shard locked while `f`
    /// runs: keep it short — the fork-based snapshot forks in it) and returns its result
    /// with the log of applied events not drained yet, which the caller must commit
    /// before the cut counts as durable.
    pub fn with_cut<R>(&self, f: impl FnOnce(&StateView<'_>) -> R) -> (R, Vec<LogEntry>) {
        let mut cut = self.lock_all();
        cut.assert_merged();
        let log = cut.take_log();
        let view = StateView {
            last_seq: self.last_seq(),
            senders: cut.senders.iter().map(|g| &**g).collect(),
            creators: cut.creators.iter().map(|g| &**g).collect(),
            streams: cut.streams.iter().map(|g| &**g).collect(),
            settled: cut.creators.iter().map(|g| &g.settled).collect(),
            ids: cut.ids.iter().map(|g| &**g).collect(),
            credited: cut.creators.iter().map(|g| &g.credited).collect(),
            top_k: self.config.top_k as u64,
            economy: cut.economy_bytes(),
            settled_nanos: cut.creators.iter().map(|g| &g.settled_nanos).collect(),
            id_secret: Some(self.id_secret),
            legacy_ids_until: self.legacy_ids_until,
            purchases: cut.senders.iter().map(|s| &s.purchases).collect(),
            hold: Some(HoldStateView {
                clock: Stamp(self.hold_clock.load(Ordering::Acquire)),
                shards: cut.creators.iter().map(|g| &g.holds).collect(),
            }),
            promotions: cut.senders.iter().map(|g| &g.promotions).collect(),
            videos: cut.senders.iter().map(|g| &g.videos).collect(),
            recharge_records: cut.senders.iter().map(|g| &g.recharges).collect(),
            debts: cut.senders.iter().map(|g| &g.debts).collect(),
            gift_records: cut.senders.iter().map(|g| &g.gift_records).collect(),
            windows: cut.senders.iter().map(|g| &g.windows).collect(),
            book_windows: cut.creators.iter().map(|g| &g.windows).collect(),
            // (Only while windows are on: the hours are for them, and a cut is short.)
            gift_hours: if self.config.windows.enabled {
                cut.senders.iter().map(|g| g.gift_records.hours()).collect()
            } else {
                Vec::new()
            },
            gift_records_others: cut
                .senders
                .iter()
                .map(|g| g.gift_records.others_in_order())
                .collect(),
            pinned: self.pinned_values(),
            battles: &cut.battles,
            battle_closes: cut.battles.closes(),
        };
        let result = f(&view);
        drop(view);
        drop(cut);
        (result, in_seq_order(log))
    }

    /// Takes a consistent cut: the state and the log of applied events not drained yet
    /// (which the caller must commit before the state counts as durable). The cut
    /// clones the shards under their locks (a memory copy); encoding happens outside.
    pub fn snapshot(&self) -> (EngineState, Vec<LogEntry>) {
        let mut cut = self.lock_all();
        cut.assert_merged();
        let log = cut.take_log();
        let state = EngineState {
            last_seq: self.last_seq(),
            senders: cut.senders.iter().map(|s| (**s).clone()).collect(),
            creators: cut.creators.iter().map(|c| (**c).clone()).collect(),
            streams: cut.streams.iter().map(|s| (**s).clone()).collect(),
            settled: cut.creators.iter().map(|c| c.settled.clone()).collect(),
            ids: cut.ids.iter().map(|w| (**w).clone()).collect(),
            credited: cut.creators.iter().map(|c| c.credited.clone()).collect(),
            top_k: self.config.top_k as u64,
            economy: cut.economy_bytes(),
            settled_nanos: cut
                .creators
                .iter()
                .map(|c| c.settled_nanos.clone())
                .collect(),
            id_secret: Some(self.id_secret),
            legacy_ids_until: self.legacy_ids_until,
            purchases: cut.senders.iter().map(|s| s.purchases.clone()).collect(),
            hold: Some(HoldState {
                clock: Stamp(self.hold_clock.load(Ordering::Acquire)),
                shards: cut.creators.iter().map(|c| c.holds.clone()).collect(),
            }),
            promotions: cut.senders.iter().map(|s| s.promotions.clone()).collect(),
            videos: cut.senders.iter().map(|s| s.videos.clone()).collect(),
            recharge_records: cut.senders.iter().map(|s| s.recharges.clone()).collect(),
            debts: cut.senders.iter().map(|s| s.debts.clone()).collect(),
            gift_records: cut.senders.iter().map(|s| s.gift_records.clone()).collect(),
            windows: cut.senders.iter().map(|s| s.windows.clone()).collect(),
            book_windows: cut.creators.iter().map(|c| c.windows.clone()).collect(),
            gift_hours: if self.config.windows.enabled {
                cut.senders.iter().map(|s| s.gift_records.hours()).collect()
            } else {
                Vec::new()
            },
            gift_records_others: cut
                .senders
                .iter()
                .map(|s| s.gift_records.others_in_order())
                .collect(),
            pinned: self.pinned_values(),
            battles: (*cut.battles).clone(),
            battle_closes: cut.battles.closes(),
        };
        drop(cut);
        (state, in_seq_order(log))
    }

    /// An engine holding `state` (taken with the same number of shards). The id index
    /// takes the config's bound and horizon; a state from before it (snapshot format 2 or
    /// older) has its ids moved in from the shards, without fingerprints.
    pub fn from_state(
        economy: Economy,
        config: EngineConfig,
        mut state: EngineState,
    ) -> Result<Engine, StateError> {
        state.check_shards(config.shards)?;
        let economy = if state.economy.is_empty() {
            economy
        } else {
            Economy::from_doc(EconomyDoc::from_bytes(&state.economy).map_err(ConfigError::from)?)
                .map_err(ConfigError::from)?
        };
        let recorded = economy.version > 0;
        // A state of format 3 to 5 holds ids under the unkeyed hash: new ids are filed
        // under a new secret, and claims look there too until those ids are past the
        // horizon. (Formats 1 and 2 kept whole ids: they are filed under the new secret.)
        let unkeyed = state.id_secret.is_none() && state.ids.iter().any(|w| w.len() > 0);
        let id_secret = state.id_secret.unwrap_or_else(IdSecret::random);
        let mut engine = Engine::build(economy, config, id_secret)?;
        engine.legacy_ids_until = state.legacy_ids_until;
        if recorded {
            engine.know_economy(engine.economy());
        }
        let legacy = state.take_legacy_ids();
        let (top_k, last_seq) = (state.top_k, state.last_seq);
        engine.install(state);
        if unkeyed || engine.legacy_ids_until.0 > 0 {
            // Computed again under this config: a longer horizon keeps the unkeyed ids
            // longer too, and they must be probed as long as they are kept.
            let until = engine.ids.iter().map(|w| w.lock().remembered_until());
            let until = until.max().unwrap_or_default();
            engine.legacy_ids_until = engine.legacy_ids_until.max(until);
        }
        engine.file_legacy_ids(legacy);
        if top_k != engine.config.top_k as u64 {
            engine.rebuild_tops();
        }
        engine.next_seq.store(last_seq + 1, Ordering::Release);
        Ok(engine)
    }

    /// The `[engine]` values pinned with the ledger, as this engine runs with them, for
    /// the state (format 11).
    fn pinned_values(&self) -> Vec<(String, u64)> {
        let pinned = self.config.pinned().into_iter();
        pinned.map(|(k, v)| (k.to_owned(), v as u64)).collect()
    }

    /// Moves a state's shards into this engine's (the same count, checked), its id
    /// windows under this config's bound and horizon.
    fn install(&self, state: EngineState) {
        let mut senders = state.senders.into_iter();
        let mut purchases = state.purchases.into_iter();
        // Formats before 7 hold no promotion sales: every shard starts with none.
        let mut promotions = state.promotions.into_iter();
        // Formats before 8 hold no video gifts.
        let mut videos = state.videos.into_iter();
        // Formats before 8 hold no recharge records and no debts.
        let mut recharge_records = state.recharge_records.into_iter();
        let mut debts = state.debts.into_iter();
        // Formats before 8 hold no gift records: no gift is reversible.
        let mut gift_records = state.gift_records.into_iter();
        // Formats before 10 hold no windows (and no gift hours: 0, long gone).
        let mut windows = state.windows.into_iter();
        let mut gift_hours = state.gift_hours.into_iter();
        // Formats before 11 hold no records apart.
        let mut gift_records_others = state.gift_records_others.into_iter();
        for slot in self.senders.iter() {
            let mut shard = senders.next().expect("checked length");
            shard.recharges = recharge_records.next().unwrap_or_default();
            shard.debts = debts.next().unwrap_or_default();
            shard.gift_records = gift_records.next().unwrap_or_default();
            shard.windows = windows.next().unwrap_or_default();
            shard
                .gift_records
                .set_hours(&gift_hours.next().unwrap_or_default());
            shard
                .gift_records
                .set_others(gift_records_others.next().unwrap_or_default());
            // Formats 1 to 6 knew no purchases.
            shard.purchases = purchases.next().unwrap_or_default();
            shard.promotions = promotions.next().unwrap_or_default();
            shard.videos = videos.next().unwrap_or_default();
            *slot.lock() = shard;
        }
        let mut credited = state.credited.into_iter();
        let mut settled_nanos = state.settled_nanos.into_iter();
        // Format 7: the earnings hold (older formats held nothing).
        let hold = state.hold.unwrap_or_default();
        self.hold_clock.store(hold.clock.0, Ordering::Release);
        let mut holds = hold.shards.into_iter();
        let mut book_windows = state.book_windows.into_iter();
        let mut creators = state.creators.into_iter().zip(state.settled);
        for slot in self.creators.iter() {
            let (mut book, settled) = creators.next().expect("checked length");
            book.settled = settled;
            book.settled_nanos = settled_nanos.next().unwrap_or_default();
            book.holds = holds.next().unwrap_or_default();
            book.windows = book_windows.next().unwrap_or_default();
            // Formats 1 and 2 did not store credited diamonds: as they were computed then.
            book.credited = credited.next().unwrap_or_else(|| {
                book.creators
                    .iter()
                    .map(|(&c, t)| (c, Credited::of(&self.economy(), t.coins_received)))
                    .collect()
            });
            *slot.lock() = book;
        }
        let mut streams = state.streams.into_iter();
        for slot in self.streams.iter() {
            *slot.lock() = streams.next().expect("checked length");
        }
        let mut battles = state.battles;
        battles.reindex();
        battles.set_closes(&state.battle_closes);
        self.battles_held.store(battles.len(), Ordering::Release);
        *self.battles.lock() = battles;
        let n = self.config.shards;
        for (slot, mut window) in self.ids.iter().zip(state.ids) {
            window.reconfigure(
                self.config.idempotency_entries_max / n,
                self.config.id_keep_ms(),
            );
            *slot.lock() = window;
        }
    }

    /// Files the ids of formats 1 and 2 under this ledger's secret, oldest first.
    fn file_legacy_ids(&self, mut legacy: Vec<LegacyId>) {
        legacy.sort_unstable_by_key(|&(_, stamp, outcome, _)| (stamp, outcome.seq));
        for (id, stamp, outcome, fingerprint) in legacy {
            let hash = self.id_hash(id);
            self.ids[self.id_shard(hash)]
                .lock()
                .remember(hash, fingerprint, outcome, stamp);
        }
    }

    /// Rebuilds every leaderboard from the totals with `engine.top_k` (a state kept with
    /// another length, or one that did not record it): a list kept shorter would miss
    /// gifters, one kept longer would not be the top `top_k`.
    fn rebuild_tops(&self) {
        let k = self.config.top_k;
        for shard in self.senders.iter() {
            let mut shard = shard.lock();
            let SenderShard {
                creators,
                streams,
                creator_gifters,
                stream_gifters,
                ..
            } = &mut *shard;
            creators
                .values_mut()
                .for_each(|p| p.top = Default::default());
            streams
                .values_mut()
                .for_each(|p| p.top = Default::default());
            for (&(creator, user), &coins) in &*creator_gifters {
                if let Some(part) = creators.get_mut(&creator) {
                    part.top.offer(k, user.0, coins.0, 0);
                }
            }
            for (&(stream, user), &coins) in &*stream_gifters {
                if let Some(part) = streams.get_mut(&stream) {
                    part.top.offer(k, user.0, coins.0, 0);
                }
            }
            shard.windows.rebuild_tops(k);
        }
        for book in self.creators.iter() {
            let mut book = book.lock();
            let mut top = TopK::default();
            for (&creator, credited) in &book.credited {
                top.offer(k, creator.0, credited.diamonds);
            }
            book.top = top;
            book.windows.rebuild_tops(k);
        }
    }
}

/// The whole ledger state at a consistent cut, for snapshots. Opaque: it is encoded by
/// `persist::snapshot` and loaded back with [`Engine::from_state`].
///
/// `W` is the id index's shard as the format encodes it: today's [`IdWindow`], or
/// [`EngineStateV5`]'s.
#[derive(Clone, Serialize, Deserialize)]
pub struct EngineState<W = IdWindow> {
    last_seq: u64,
    senders: Vec<SenderShard>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    /// Per creator shard, its settlement reports (`CreatorShard::settled`): after the
    /// shards, so that format 1 (without them) is format 2's prefix.
    settled: Vec<Settled>,
    /// Per id shard, its remembered ids (format 3; compact from format 5; format 2 is its prefix, with the ids
    /// in the shards' legacy windows).
    ids: Vec<W>,
    /// Per creator shard, the diamonds credited per creator (`CreatorShard::credited`;
    /// format 3; older formats recompute them from the coins received).
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    /// The `engine.top_k` the leaderboards were kept with (format 3; 0: not recorded).
    /// Loaded with another, they are rebuilt from the totals.
    top_k: u64,
    /// The economy in force ([`crate::economy::EconomyDoc`] bytes; format 4; empty: not
    /// recorded, the caller's economy is used).
    economy: Vec<u8>,
    /// Per creator shard, the fractions of the settlement reports
    /// (`CreatorShard::settled_nanos`; format 4).
    settled_nanos: Vec<SettledNanos>,
    /// The key the ids in `ids` are hashed under (format 6; `None` in a state of an
    /// older format). Last, with the next, so that format 5 is format 6 less them.
    id_secret: Option<IdSecret>,
    /// Until when `ids` also holds ids under the unkeyed hash of formats 3 to 5 (format
    /// 6; 0: none).
    legacy_ids_until: Stamp,
    /// Per sender shard, its purchases (`SenderShard::purchases`; format 7, appended:
    /// format 6 is format 7 less it, an empty list being one zero byte).
    purchases: Vec<PurchaseTotals>,
    /// The earnings hold: the ledger's hold clock and each creator shard's held
    /// diamonds (format 7; `None` in an older format: nothing held). Last, so that
    /// format 6 is format 7 with `None` (one zero byte).
    hold: Option<HoldState>,
    /// Per sender shard, its sales under each promotion (`SenderShard::promotions`;
    /// format 7, one zero byte when empty).
    promotions: Vec<PromotionBook>,
    /// Per sender shard, its part of the videos' aggregates (`SenderShard::videos`;
    /// format 8, appended: format 7 is format 8 less it, an empty list being one zero
    /// byte).
    videos: Vec<ShardVideos>,
    /// Per sender shard, its recharge records and what reversals took back
    /// (`SenderShard::recharges`; format 8, appended: format 7 is format 8 less it and
    /// the next, an empty list being one zero byte each).
    recharge_records: Vec<RechargeBook>,
    /// Per sender shard, the coins its users owe (`SenderShard::debts`; format 8).
    debts: Vec<FxHashMap<UserId, u64>>,
    /// Per sender shard, its gift records for reversals and the reversal totals
    /// (`SenderShard::gift_records`; format 8, appended: format 7 reads through
    /// [`EngineStateV7`] with none). Format 9 records say whether a gift was on a stream
    /// or a video (format 8 reads through [`EngineStateV8`]: every record on a stream).
    gift_records: Vec<GiftRecords>,
    /// Format 10: the windowed leaderboards, per sender shard and per creator shard,
    /// and the hours of the gift records (their windows), per sender shard.
    windows: Vec<ShardWindows>,
    book_windows: Vec<BookWindows>,
    gift_hours: Vec<Vec<(EventId, u32)>>,
    /// Format 11: per sender shard, the gift records of another sender's gift reusing
    /// a held id (`GiftRecords::others`, review G), in the order recorded, with their
    /// hours; format 10 is format 11 less this and the next (one zero byte each).
    gift_records_others: Vec<Vec<(EventId, GiftRecord, u32)>>,
    /// Format 11: the `[engine]` values pinned with the ledger
    /// ([`EngineConfig::pinned`]) the state was kept with, by config key (review H): a
    /// restore keeps them, as it keeps the shard count. Empty in an older format.
    pinned: Vec<(String, u64)>,
    /// Format 12: the PK battles held (appended: formats 10 and 11 read as 12 with an
    /// empty map, one zero byte).
    battles: Battles,
    /// Format 13: the accepted closes of the battles held, `(battle, close's number)`
    /// (`BattleBook::close_seq`; appended: format 12 reads with none, one zero byte).
    battle_closes: Vec<(BattleId, u64)>,
}

/// Format 9: no windowed leaderboards.
#[derive(Deserialize)]
pub struct EngineStateV9 {
    last_seq: u64,
    senders: Vec<SenderShard>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
    ids: Vec<IdWindow>,
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    top_k: u64,
    economy: Vec<u8>,
    settled_nanos: Vec<SettledNanos>,
    id_secret: Option<IdSecret>,
    legacy_ids_until: Stamp,
    purchases: Vec<PurchaseTotals>,
    hold: Option<HoldState>,
    promotions: Vec<PromotionBook>,
    videos: Vec<ShardVideos>,
    recharge_records: Vec<RechargeBook>,
    debts: Vec<FxHashMap<UserId, u64>>,
    gift_records: Vec<GiftRecords>,
}

impl From<EngineStateV9> for EngineState {
    fn from(v9: EngineStateV9) -> Self {
        EngineState {
            last_seq: v9.last_seq,
            senders: v9.senders,
            creators: v9.creators,
            streams: v9.streams,
            settled: v9.settled,
            ids: v9.ids,
            credited: v9.credited,
            top_k: v9.top_k,
            economy: v9.economy,
            settled_nanos: v9.settled_nanos,
            id_secret: v9.id_secret,
            legacy_ids_until: v9.legacy_ids_until,
            purchases: v9.purchases,
            hold: v9.hold,
            promotions: v9.promotions,
            videos: v9.videos,
            recharge_records: v9.recharge_records,
            debts: v9.debts,
            gift_records: v9.gift_records,
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 8 encoded it: [`EngineState`] with gift records that do
/// not say their target (every one a gift on a stream: format 8 recorded no other).
#[derive(Deserialize)]
pub struct EngineStateV8 {
    last_seq: u64,
    senders: Vec<SenderShard>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
    ids: Vec<IdWindow>,
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    top_k: u64,
    economy: Vec<u8>,
    settled_nanos: Vec<SettledNanos>,
    id_secret: Option<IdSecret>,
    legacy_ids_until: Stamp,
    purchases: Vec<PurchaseTotals>,
    hold: Option<HoldState>,
    promotions: Vec<PromotionBook>,
    videos: Vec<ShardVideos>,
    recharge_records: Vec<RechargeBook>,
    debts: Vec<FxHashMap<UserId, u64>>,
    gift_records: Vec<GiftRecordsV8>,
}

impl From<EngineStateV8> for EngineState {
    /// The gift records become records of gifts on streams.
    fn from(v8: EngineStateV8) -> Self {
        EngineState {
            last_seq: v8.last_seq,
            senders: v8.senders,
            creators: v8.creators,
            streams: v8.streams,
            settled: v8.settled,
            ids: v8.ids,
            credited: v8.credited,
            top_k: v8.top_k,
            economy: v8.economy,
            settled_nanos: v8.settled_nanos,
            id_secret: v8.id_secret,
            legacy_ids_until: v8.legacy_ids_until,
            purchases: v8.purchases,
            hold: v8.hold,
            promotions: v8.promotions,
            videos: v8.videos,
            recharge_records: v8.recharge_records,
            debts: v8.debts,
            gift_records: v8.gift_records.into_iter().map(GiftRecords::from).collect(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 7 encoded it: [`EngineState`] without the fields format 8
/// appended (`videos`, `recharge_records`, `debts`, `gift_records`).
#[derive(Deserialize)]
pub struct EngineStateV7 {
    last_seq: u64,
    senders: Vec<SenderShard>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
    ids: Vec<IdWindow>,
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    top_k: u64,
    economy: Vec<u8>,
    settled_nanos: Vec<SettledNanos>,
    id_secret: Option<IdSecret>,
    legacy_ids_until: Stamp,
    purchases: Vec<PurchaseTotals>,
    hold: Option<HoldState>,
    promotions: Vec<PromotionBook>,
}

impl From<EngineStateV7> for EngineState {
    /// Nothing recorded for reversals.
    fn from(v7: EngineStateV7) -> Self {
        EngineState {
            last_seq: v7.last_seq,
            senders: v7.senders,
            creators: v7.creators,
            streams: v7.streams,
            settled: v7.settled,
            ids: v7.ids,
            credited: v7.credited,
            top_k: v7.top_k,
            economy: v7.economy,
            settled_nanos: v7.settled_nanos,
            id_secret: v7.id_secret,
            legacy_ids_until: v7.legacy_ids_until,
            purchases: v7.purchases,
            hold: v7.hold,
            promotions: v7.promotions,
            videos: Vec::new(),
            recharge_records: Vec::new(),
            debts: Vec::new(),
            gift_records: Vec::new(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 6 encoded it: the same fields, with sender shards of
/// formats 1 to 6 (wallets holding the monthly budget, no day or week counts). Format 5
/// is it with 40-bit id checks ([`EngineStateV5`]).
#[derive(Deserialize)]
pub struct EngineStateV6<W = IdWindow> {
    last_seq: u64,
    senders: Vec<SenderShardV6>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
    ids: Vec<W>,
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    top_k: u64,
    economy: Vec<u8>,
    settled_nanos: Vec<SettledNanos>,
    id_secret: Option<IdSecret>,
    legacy_ids_until: Stamp,
}

/// A state as snapshot format 5 encoded it (40-bit id checks), decoded with the two
/// fields format 6 appended given as absent (and format 7's as empty).
pub type EngineStateV5 = EngineStateV6<IdWindowV5>;

impl<W: Into<IdWindow>> From<EngineStateV6<W>> for EngineState {
    fn from(v6: EngineStateV6<W>) -> Self {
        EngineState {
            last_seq: v6.last_seq,
            senders: v6.senders.into_iter().map(SenderShard::from).collect(),
            creators: v6.creators,
            streams: v6.streams,
            settled: v6.settled,
            ids: v6.ids.into_iter().map(Into::into).collect(),
            credited: v6.credited,
            top_k: v6.top_k,
            economy: v6.economy,
            settled_nanos: v6.settled_nanos,
            id_secret: v6.id_secret,
            legacy_ids_until: v6.legacy_ids_until,
            purchases: Vec::new(),
            hold: None,
            promotions: Vec::new(),
            videos: Vec::new(),
            recharge_records: Vec::new(),
            debts: Vec::new(),
            gift_records: Vec::new(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 4 encoded it (the ids whole).
#[derive(Deserialize)]
pub(crate) struct EngineStateV4 {
    last_seq: u64,
    senders: Vec<SenderShardV6>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
    ids: Vec<IdWindowV4>,
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    top_k: u64,
    economy: Vec<u8>,
    settled_nanos: Vec<SettledNanos>,
}

impl From<EngineStateV4> for EngineState {
    fn from(v4: EngineStateV4) -> Self {
        EngineState {
            last_seq: v4.last_seq,
            senders: v4.senders.into_iter().map(SenderShard::from).collect(),
            creators: v4.creators,
            streams: v4.streams,
            settled: v4.settled,
            ids: v4.ids.into_iter().map(IdWindow::from).collect(),
            credited: v4.credited,
            top_k: v4.top_k,
            economy: v4.economy,
            settled_nanos: v4.settled_nanos,
            id_secret: None,
            legacy_ids_until: Stamp(0),
            purchases: Vec::new(),
            hold: None,
            promotions: Vec::new(),
            videos: Vec::new(),
            recharge_records: Vec::new(),
            debts: Vec::new(),
            gift_records: Vec::new(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 3 encoded it (no economy).
#[derive(Deserialize)]
pub(crate) struct EngineStateV3 {
    last_seq: u64,
    senders: Vec<SenderShardV6>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
    ids: Vec<IdWindowV4>,
    credited: Vec<FxHashMap<CreatorId, Credited>>,
    top_k: u64,
}

impl From<EngineStateV3> for EngineState {
    fn from(v3: EngineStateV3) -> Self {
        EngineState {
            last_seq: v3.last_seq,
            senders: v3.senders.into_iter().map(SenderShard::from).collect(),
            creators: v3.creators,
            streams: v3.streams,
            settled: v3.settled,
            ids: v3.ids.into_iter().map(IdWindow::from).collect(),
            credited: v3.credited,
            top_k: v3.top_k,
            economy: Vec::new(),
            settled_nanos: Vec::new(),
            id_secret: None,
            legacy_ids_until: Stamp(0),
            purchases: Vec::new(),
            hold: None,
            promotions: Vec::new(),
            videos: Vec::new(),
            recharge_records: Vec::new(),
            debts: Vec::new(),
            gift_records: Vec::new(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 2 encoded it (the ids in the shards' windows).
#[derive(Deserialize)]
pub(crate) struct EngineStateV2 {
    last_seq: u64,
    senders: Vec<SenderShardV6>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
}

impl From<EngineStateV2> for EngineState {
    fn from(v2: EngineStateV2) -> Self {
        EngineState {
            last_seq: v2.last_seq,
            senders: v2.senders.into_iter().map(SenderShard::from).collect(),
            creators: v2.creators,
            streams: v2.streams,
            settled: v2.settled,
            ids: Vec::new(),
            credited: Vec::new(),
            top_k: 0,
            economy: Vec::new(),
            settled_nanos: Vec::new(),
            id_secret: None,
            legacy_ids_until: Stamp(0),
            purchases: Vec::new(),
            hold: None,
            promotions: Vec::new(),
            videos: Vec::new(),
            recharge_records: Vec::new(),
            debts: Vec::new(),
            gift_records: Vec::new(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// A state as snapshot format 1 encoded it (no settlements).
#[derive(Deserialize)]
pub(crate) struct EngineStateV1 {
    last_seq: u64,
    senders: Vec<SenderShardV6>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
}

impl From<EngineStateV1> for EngineState {
    fn from(v1: EngineStateV1) -> Self {
        EngineState {
            last_seq: v1.last_seq,
            settled: vec![Settled::default(); v1.creators.len()],
            senders: v1.senders.into_iter().map(SenderShard::from).collect(),
            creators: v1.creators,
            streams: v1.streams,
            ids: Vec::new(),
            credited: Vec::new(),
            top_k: 0,
            economy: Vec::new(),
            settled_nanos: Vec::new(),
            id_secret: None,
            legacy_ids_until: Stamp(0),
            purchases: Vec::new(),
            hold: None,
            promotions: Vec::new(),
            videos: Vec::new(),
            recharge_records: Vec::new(),
            debts: Vec::new(),
            gift_records: Vec::new(),
            windows: Vec::new(),
            book_windows: Vec::new(),
            gift_hours: Vec::new(),
            gift_records_others: Vec::new(),
            pinned: Vec::new(),
            battles: Battles::default(),
            battle_closes: Vec::new(),
        }
    }
}

/// An id of snapshot formats 1 and 2, as [`EngineState::take_legacy_ids`] takes it.
type LegacyId = (EventId, Stamp, Outcome, EventFingerprint);

impl EngineState {
    /// Whether the state was taken with `n` shards of each kind (older formats lack
    /// some parts: those are empty).
    fn check_shards(&self, n: usize) -> Result<(), StateError> {
        if self.senders.len() != n
            || self.creators.len() != n
            || self.streams.len() != n
            || self.settled.len() != n
            || !(self.ids.len() == n || self.ids.is_empty())
            || !(self.credited.len() == n || self.credited.is_empty())
            || !(self.settled_nanos.len() == n || self.settled_nanos.is_empty())
            || !(self.purchases.len() == n || self.purchases.is_empty())
            || !(self.promotions.len() == n || self.promotions.is_empty())
            || !(self.videos.len() == n || self.videos.is_empty())
            || !(self.recharge_records.len() == n || self.recharge_records.is_empty())
            || !(self.debts.len() == n || self.debts.is_empty())
            || !(self.gift_records.len() == n || self.gift_records.is_empty())
            || !(self.windows.len() == n || self.windows.is_empty())
            || !(self.book_windows.len() == n || self.book_windows.is_empty())
            || !(self.gift_hours.len() == n || self.gift_hours.is_empty())
            || !(self.gift_records_others.len() == n || self.gift_records_others.is_empty())
            || self.hold.as_ref().is_some_and(|h| h.shards.len() != n)
        {
            return Err(StateError::Shards {
                found: self.senders.len(),
                expected: n,
            });
        }
        Ok(())
    }

    /// Takes the ids formats 1 and 2 kept in the shards' windows. Each legacy id matches
    /// the events routed where it was kept, as it did then.
    fn take_legacy_ids(&mut self) -> Vec<LegacyId> {
        let mut legacy = Vec::new();
        let mut take = |route: Route, window: &mut window::LegacyWindow| {
            let fingerprint = EventFingerprint::legacy(route_tag(route));
            legacy.extend(
                window
                    .take()
                    .into_iter()
                    .map(|(id, stamp, o)| (id, stamp, o, fingerprint)),
            );
        };
        for (i, s) in self.senders.iter_mut().enumerate() {
            take(Route::Sender(i), &mut s.window);
        }
        for (i, c) in self.creators.iter_mut().enumerate() {
            take(Route::Creator(i), &mut c.window);
        }
        for (i, s) in self.streams.iter_mut().enumerate() {
            take(Route::Stream(i), &mut s.window);
        }
        legacy
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// (wallets, creators, streams)
    pub fn counts(&self) -> (u64, u64, u64) {
        self.view().counts()
    }

    /// A borrowed view that encodes exactly like the state.
    pub fn view(&self) -> StateView<'_> {
        StateView {
            last_seq: self.last_seq,
            senders: self.senders.iter().collect(),
            creators: self.creators.iter().collect(),
            streams: self.streams.iter().collect(),
            settled: self.settled.iter().collect(),
            ids: self.ids.iter().collect(),
            credited: self.credited.iter().collect(),
            top_k: self.top_k,
            economy: self.economy.clone(),
            settled_nanos: self.settled_nanos.iter().collect(),
            id_secret: self.id_secret,
            legacy_ids_until: self.legacy_ids_until,
            purchases: self.purchases.iter().collect(),
            hold: self.hold.as_ref().map(|h| HoldStateView {
                clock: h.clock,
                shards: h.shards.iter().collect(),
            }),
            promotions: self.promotions.iter().collect(),
            videos: self.videos.iter().collect(),
            recharge_records: self.recharge_records.iter().collect(),
            debts: self.debts.iter().collect(),
            gift_records: self.gift_records.iter().collect(),
            windows: self.windows.iter().collect(),
            book_windows: self.book_windows.iter().collect(),
            gift_hours: self.gift_hours.clone(),
            gift_records_others: self.gift_records_others.clone(),
            pinned: self.pinned.clone(),
            battles: &self.battles,
            battle_closes: self.battle_closes.clone(),
        }
    }

    /// The `[engine]` values pinned with the ledger that the state was kept with (format
    /// 11; empty before), by config key.
    pub fn pinned(&self) -> &[(String, u64)] {
        &self.pinned
    }
}

/// The ledger state borrowed at a consistent cut: what a snapshot encodes. Serializes
/// exactly like [`EngineState`] (serde encodes `&T` as `T`), so a snapshot can be written
/// from a live cut without cloning the shards.
#[derive(Serialize)]
pub struct StateView<'a> {
    last_seq: u64,
    senders: Vec<&'a SenderShard>,
    creators: Vec<&'a CreatorShard>,
    streams: Vec<&'a StreamShard>,
    settled: Vec<&'a Settled>,
    ids: Vec<&'a IdWindow>,
    credited: Vec<&'a FxHashMap<CreatorId, Credited>>,
    top_k: u64,
    economy: Vec<u8>,
    settled_nanos: Vec<&'a SettledNanos>,
    id_secret: Option<IdSecret>,
    legacy_ids_until: Stamp,
    purchases: Vec<&'a PurchaseTotals>,
    hold: Option<HoldStateView<'a>>,
    promotions: Vec<&'a PromotionBook>,
    videos: Vec<&'a ShardVideos>,
    recharge_records: Vec<&'a RechargeBook>,
    debts: Vec<&'a FxHashMap<UserId, u64>>,
    gift_records: Vec<&'a GiftRecords>,
    windows: Vec<&'a ShardWindows>,
    book_windows: Vec<&'a BookWindows>,
    gift_hours: Vec<Vec<(EventId, u32)>>,
    gift_records_others: Vec<Vec<(EventId, GiftRecord, u32)>>,
    pinned: Vec<(String, u64)>,
    battles: &'a Battles,
    battle_closes: Vec<(BattleId, u64)>,
}

impl StateView<'_> {
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The fields snapshot format 8 appended (videos, recharge records, debts, gift
    /// records), serializing as they end the state: a format-7 state is the state's
    /// encoding less this one's (for the format tests).
    #[doc(hidden)]
    pub fn format_8_tail(&self) -> impl Serialize + '_ {
        (
            &self.videos,
            &self.recharge_records,
            &self.debts,
            &self.gift_records,
            self.format_10_tail(),
        )
    }

    /// The fields snapshot format 10 appended (the windowed leaderboards and the gift
    /// records' hours): a format-9 state is the state's encoding less this one's.
    #[doc(hidden)]
    pub fn format_10_tail(&self) -> impl Serialize + '_ {
        (
            &self.windows,
            &self.book_windows,
            &self.gift_hours,
            self.format_11_tail(),
        )
    }

    /// The fields snapshot format 11 appended (the gift records apart and the pinned
    /// values): a format-10 state is the state's encoding less this one's.
    #[doc(hidden)]
    pub fn format_11_tail(&self) -> impl Serialize + '_ {
        (
            &self.gift_records_others,
            &self.pinned,
            self.format_12_tail(),
        )
    }

    /// The field snapshot format 12 appended (the battles): a format-11 state is the
    /// state's encoding less this one's (for the format tests).
    #[doc(hidden)]
    pub fn format_12_tail(&self) -> impl Serialize + '_ {
        (self.battles, self.format_13_tail())
    }

    /// The field snapshot format 13 appended (the battles' closes): a format-12 state
    /// is the state's encoding less this one's (for the format tests).
    #[doc(hidden)]
    pub fn format_13_tail(&self) -> impl Serialize + '_ {
        &self.battle_closes
    }

    /// The field whose encoding snapshot format 9 changed (the gift records, last in
    /// the state): a format-8 state is the state's encoding less this one's, plus
    /// [`StateView::format_8_gift_records`]'s (for the format tests).
    #[doc(hidden)]
    pub fn format_9_tail(&self) -> impl Serialize + '_ {
        (&self.gift_records, self.format_10_tail())
    }

    /// The gift records as snapshot format 8 encoded them (for the format tests);
    /// `None` when one is of a gift on a video, which format 8 cannot hold.
    #[doc(hidden)]
    pub fn format_8_gift_records(&self) -> Option<impl Serialize + use<>> {
        let records = self.gift_records.iter().map(|g| g.as_format_8());
        records.collect::<Option<Vec<_>>>()
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// (wallets, creators, streams)
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.senders.iter().map(|s| s.wallets.len() as u64).sum(),
            self.creators.iter().map(|c| c.creators.len() as u64).sum(),
            self.streams.iter().map(|s| s.streams.len() as u64).sum(),
        )
    }
}

/// Why a state cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(
        "the state has {found} shards, the config {expected} (engine.shards must match the snapshot)"
    )]
    Shards { found: usize, expected: usize },
    #[error(transparent)]
    Config(#[from] ConfigError),
}
