//! The ledger engine: synchronous, lock-sharded, deterministic.
//!
//! Architecture Invariant: nothing here knows about tokio, sockets, Redis or the clock.
//! Time comes in with each batch ([`Stamp`]); I/O wraps the engine from outside.
//!
//! # Shards and locks
//! - `senders[i]`: wallets, idempotency window, history and per-gifter aggregates of the
//!   users hashing to `i`. Recharges, gifts and account settings lock only their
//!   sender's shard, once per chunk of a batch.
//! - `creators[j]`: coin totals, diamonds and payouts of the creators hashing to `j`.
//! - `streams[k]`: coin totals and goals of the streams hashing to `k`.
//!
//! - `ids[t]`: the idempotency index of the event ids hashing to `t` (by the id, not the
//!   user: an id is one key across users, event types and shards).
//!
//! Lock order: the sequence gate, then a sender shard, then (to merge a chunk's
//! credits) one book shard at a time. Payouts and goals lock one book shard only. An id
//! shard is a leaf: taken under a sender or book shard, nothing is locked while it is
//! held. A consistent cut ([`Engine::drain_log`], [`Engine::audit`]) locks every sender
//! shard, then every creator shard, then every stream shard, then every id shard, in
//! index order. No path takes two shards of one kind or goes from a book back to a
//! sender, so there is no deadlock.
//!
//! # Exactly once
//! A chunk first claims its ids in the index (one lock per id shard touched): an id not
//! remembered is claimed for the event (pending), an exact retry gets the original
//! outcome, other content under a remembered id is `EVENT_ID_REUSED`, and a full index
//! answers `UNAVAILABLE`. Only the claimed events are applied; their outcomes then settle
//! the claims. Claims and settles of one chunk happen under its sender shard's lock, so
//! no cut sees a pending claim.
//!
//! # Sequence numbers
//! A chunk counts its claimed events and reserves exactly that many numbers with a
//! single `fetch_add` under its shard's lock, then applies in that order: numbers are
//! unique, increasing and never skip, and a retry or reuse consumes none. Because
//! reservation and application happen under the same lock, at a consistent cut every
//! reserved number belongs to a finished event: [`Engine::drain_log`] returns a gap-free
//! prefix.
//!
//! A chunk credits the books after it has reserved its numbers. So that a payout sees
//! exactly the credits of the events numbered before it (what a replay in sequence order
//! sees), chunks hold the sequence gate shared from reserving until their credits are
//! merged, and a payout takes it exclusively: it is numbered and applied when no chunk
//! is between the two.

//! # Where things are
//! - `config`: [`EngineConfig`], the engine's sizing and bounds.
//! - `apply`: [`Engine::apply_batch`] and its phases (route, claim, apply per chunk,
//!   merge credits, book events, deferred retries).
//! - `ids`: the exactly-once claims of a chunk in the id index (`window`).
//! - `replay`: [`Engine::replay`] of journaled entries with their stamps.
//! - `economies`: the economy versions in force and their changes.
//! - `hold`: the earnings hold (held diamonds per creator, by release time).
//! - `shard::chargeback`: recharge reversals, their records and the debts they leave.
//! - `refund`, `gift_records`: gift reversals, and the records of held gifts they need.
//! - `battles`: PK battles (scores per stream in a window, top gifters, results).
//! - `leaderboards`: windowed top gifters and top creators (hour, day, week, month).
//! - `cut`, `state`: consistent cuts, snapshot state and its older formats.
//! - `query`: read-only views (wallets, creators, streams, leaderboards, read model).
//! - `audit`: invariant checks, foreign state, the state fingerprint.
//! - `shard`, `books`, `rules`, `topk`, `splitmap`, `idhash`, `event`: the data.

mod apply;
mod audit;
mod battles;
mod books;
mod config;
mod cut;
mod economies;
pub mod event;
mod gift_records;
mod hold;
mod idhash;
mod ids;
mod leaderboards;
mod query;
mod refund;
mod replay;
mod rules;
mod shard;
mod splitmap;
mod state;
mod topk;
mod videos;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;
use parking_lot::{Mutex, MutexGuard, RwLock};
use rustc_hash::FxHashMap;

use crate::config::ConfigError;
pub use crate::config::engine::{
    EngineConfig, HISTORY_PER_USER_MAX, IDEMPOTENCY_ENTRIES_MAX, ISSUED_AHEAD_MAX_MS,
    RECHARGE_RECORDS_PER_SHARD_MAX, REPLAY_THREADS_MAX, SHARDS_MAX, TOP_K_MAX,
};
use crate::economy::Economy;
pub use audit::{AuditReport, Foreign, LedgerTotals, PromotionSales};
pub use battles::{BATTLE_TOP_GIFTERS, BattleSideView, BattleState, BattleView};
pub use books::Credited;
use books::{CreatorShard, StreamShard};
pub use economies::EconomyError;
pub use event::*;
pub use hold::{HOLD_BUCKETS_CARRY, HOLD_BUCKETS_MAX, HOLD_GRID_STEPS, hold_grid_ms, release_at};
use idhash::IdHash;
pub use idhash::IdSecret;
pub use leaderboards::{GiftCount, Score, WindowTop, WindowsView, retained as window_retained};
pub(crate) use leaderboards::{add_pair as add_window_pair, lower_pair as lower_window_pair};
pub use query::{
    CreatorView, ReadModelView, StreamBook, StreamView, VideoBook, ViewParts, WalletView,
    WindowError,
};
pub use replay::ReplayError;
pub use rules::WINDOW_LIMIT_COINS_MAX;
pub use shard::HistoryEntry;
use shard::SenderShard;
pub(crate) use splitmap::SplitMap;
pub use state::{
    EngineState, EngineStateV5, EngineStateV6, EngineStateV7, EngineStateV8, EngineStateV9,
    StateError, StateView,
};
pub(crate) use state::{EngineStateV1, EngineStateV2, EngineStateV3, EngineStateV4};
pub use topk::{Offer, TopK};
pub use videos::VideoView;
use window::IdWindow;

/// A locked book shard.
enum BookGuard<'a> {
    Creator(MutexGuard<'a, CreatorShard>),
    Stream(MutexGuard<'a, StreamShard>),
}

/// Where an event is applied.
#[derive(Clone, Copy)]
enum Route {
    Sender(usize),
    Creator(usize),
    Stream(usize),
    /// A gift reversal: applied under the sender shard `i` (and the books of the gift's
    /// creator and stream) with the gate held exclusively, like a payout (`refund.rs`).
    Reversal(usize),
    /// A PK battle: applied with the gate held exclusively (`battles.rs`).
    Battle,
    /// Nowhere: answered before it was routed (`EVENT_EXPIRED`).
    Refused,
}

/// Spreads ids over shards. Ids are often sequential or share low bits, so mix them
/// first; the multiplier differs from the map hasher's so both stay well spread.
fn shard_of(id: u64, mask: usize) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask
}

/// The engine. `Sync`: share it behind an `Arc` and call it from any thread.
/// Whether this node owns a creator (a cluster node's partition map).
pub type CreatorOwned = Box<dyn Fn(CreatorId) -> bool + Send + Sync>;

pub struct Engine {
    config: EngineConfig,
    mask: usize,
    senders: Box<[CachePadded<Mutex<SenderShard>>]>,
    creators: Box<[CachePadded<Mutex<CreatorShard>>]>,
    streams: Box<[CachePadded<Mutex<StreamShard>>]>,
    ids: Box<[CachePadded<Mutex<IdWindow>>]>,
    /// The key ids are hashed under in `ids` (see [`IdHash`]).
    id_secret: IdSecret,
    /// A ledger restored from a snapshot of format 3 to 5 holds ids under the unkeyed
    /// hash: until this stamp (when they are all past the horizon) a claim first looks
    /// there ([`Engine::legacy_claim`]). 0: none.
    legacy_ids_until: Stamp,
    /// The economy in force. Shared by a chunk from reserving its numbers to merging its
    /// credits; exclusive for a payout and for an economy change (see the module doc):
    /// every event numbered after a change is applied under the new economy, every one
    /// before under the old.
    gate: RwLock<Arc<Economy>>,
    /// Economy versions this engine knows, by digest: those it applied, and those loaded
    /// for replay ([`Engine::know_economy`]). One per version ever recorded (an operator
    /// action each, a few KB each).
    economies: Mutex<FxHashMap<u64, Arc<Economy>>>,
    /// The log of economy changes not drained yet (they lock no shard).
    meta_log: Mutex<Vec<LogEntry>>,
    /// On a cluster node: whether this node owns a creator (its diamonds are paid here).
    /// A gift to another node's creator was reported there as a settlement, which a
    /// reversal here cannot take back: such a gift is `NOT_REVERSIBLE` (`refund.rs`).
    /// Set once, before the journal is replayed, from the ledger's fixed partition map.
    creator_owned: std::sync::OnceLock<CreatorOwned>,
    /// `(seq, economy)`: the economy in force for events numbered after `seq`, for every
    /// version this process put in force (the first: the one it started with, at 0).
    in_force: Mutex<Vec<(u64, Arc<Economy>)>>,
    /// The next sequence number to reserve (the first event gets 1).
    next_seq: CachePadded<AtomicU64>,
    /// The ledger's time for the earnings hold (`hold.rs`): the newest stamp of the
    /// events applied under the gate (sender chunks, payouts, settlements), UTC ms.
    /// Moved under the gate, so a payout (exclusive) sees that of every event numbered
    /// before it and none after.
    hold_clock: CachePadded<AtomicU64>,
    /// PK battles (`battles.rs`): a leaf lock, taken under a sender shard (a chunk's
    /// gifts) or with the gate exclusive (battles, reversals); a cut takes it last.
    battles: Mutex<battles::Battles>,
    /// Battles held (`battles.len()`), read without the lock: a chunk's gifts cost one
    /// load when there are none. Changed only with the gate exclusive, so stable while a
    /// chunk holds it shared.
    battles_held: AtomicUsize,
}

/// A route as a number: where formats 1 and 2 kept an event's id (see
/// [`EventFingerprint::legacy`]).
fn route_tag(route: Route) -> u32 {
    match route {
        Route::Sender(i) => i as u32,
        Route::Creator(i) => 1 << 16 | i as u32,
        Route::Stream(i) => 2 << 16 | i as u32,
        Route::Reversal(i) => 3 << 16 | i as u32,
        Route::Battle => 4 << 16,
        Route::Refused => u32::MAX,
    }
}

/// The shards of one kind a path locks one after another: each once, in ascending
/// index order (the order of a consistent cut; see the module doc).
#[derive(Default)]
struct LockOrder(Option<usize>);

impl LockOrder {
    /// Passes `shard` through, checking it comes after the last one locked.
    fn next(&mut self, shard: usize) -> usize {
        assert!(
            self.0.is_none_or(|last| last < shard),
            "one lock per shard touched, in ascending order"
        );
        self.0 = Some(shard);
        shard
    }
}

/// An answer that records nothing: seq 0, not a duplicate.
fn unrecorded(code: RejectCode) -> Outcome {
    debug_assert!(!code.is_recorded());
    Outcome {
        seq: 0,
        status: Status::Rejected(code),
        duplicate: false,
        cap: None,
    }
}

impl Engine {
    /// An empty ledger, with a new secret for its id index (see [`IdSecret`]).
    pub fn new(economy: Economy, config: EngineConfig) -> Result<Engine, ConfigError> {
        Engine::with_id_secret(economy, config, IdSecret::random())
    }

    /// An empty ledger whose id index hashes ids under `secret` (a seeded test, or a
    /// replay that must file ids as a snapshot did).
    pub fn with_id_secret(
        economy: Economy,
        config: EngineConfig,
        secret: IdSecret,
    ) -> Result<Engine, ConfigError> {
        Engine::build(economy, config, secret)
    }

    fn build(
        economy: Economy,
        config: EngineConfig,
        id_secret: IdSecret,
    ) -> Result<Engine, ConfigError> {
        config.validate()?;
        let n = config.shards;
        Ok(Engine {
            mask: n - 1,
            id_secret,
            legacy_ids_until: Stamp(0),
            senders: (0..n)
                .map(|_| CachePadded::new(Mutex::new(SenderShard::new())))
                .collect(),
            creators: (0..n)
                .map(|_| CachePadded::new(Mutex::new(CreatorShard::new())))
                .collect(),
            streams: (0..n)
                .map(|_| CachePadded::new(Mutex::new(StreamShard::new())))
                .collect(),
            ids: (0..n)
                .map(|_| {
                    CachePadded::new(Mutex::new(IdWindow::new(
                        config.idempotency_entries_max / n,
                        config.id_keep_ms(),
                    )))
                })
                .collect(),
            in_force: Mutex::new(vec![(0, Arc::new(economy.clone()))]),
            gate: RwLock::new(Arc::new(economy)),
            economies: Mutex::new(FxHashMap::default()),
            meta_log: Mutex::new(Vec::new()),
            creator_owned: std::sync::OnceLock::new(),
            next_seq: CachePadded::new(AtomicU64::new(1)),
            hold_clock: CachePadded::new(AtomicU64::new(0)),
            battles: Mutex::new(battles::Battles::default()),
            battles_held: AtomicUsize::new(0),
            config,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Recharge records held (that a reversal may still take back) and records dropped
    /// because a shard was full (`engine.recharge_records_per_shard_max`), over every
    /// sender shard.
    pub fn recharge_records(&self) -> (u64, u64) {
        self.senders.iter().fold((0, 0), |(held, evicted), s| {
            let s = s.lock();
            (
                held + s.recharges.len() as u64,
                evicted + s.recharges.evicted,
            )
        })
    }

    /// Event ids the idempotency index holds, and the most it may hold.
    pub fn ids_remembered(&self) -> (usize, usize) {
        let held = self.ids.iter().map(|w| w.lock().len()).sum();
        (held, self.config.idempotency_entries_max)
    }

    /// Where the idempotency index's time is: the start of the newest epoch it recorded
    /// an outcome in (0 before the first; at most one epoch, 1/64 of the kept span,
    /// before the newest stamp). A service's clock starts here so that its stamps never
    /// run behind the journal's by more than that (a clock stepped back across a restart
    /// would otherwise stamp claims in epochs the index already counts as past the
    /// horizon; those are refused).
    pub fn newest_stamp(&self) -> Stamp {
        self.ids
            .iter()
            .map(|w| w.lock().newest())
            .max()
            .unwrap_or_default()
    }

    /// Makes this engine a cluster node's: `owned` says which creators it owns (module
    /// `refund`: a gift to another node's creator is not reversible here). Call before
    /// the journal is replayed, with the ledger's partition map (fixed for its life), so
    /// replay judges as live did. Set once; a second call is ignored.
    pub fn set_creator_owned(&self, owned: CreatorOwned) {
        let _ = self.creator_owned.set(owned);
    }

    /// Whether `creator`'s diamonds are paid on this node (always, outside a cluster).
    pub(crate) fn owns_creator(&self, creator: CreatorId) -> bool {
        self.creator_owned.get().is_none_or(|owned| owned(creator))
    }

    /// The last sequence number reserved (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    fn route(&self, event: &Event) -> Route {
        match event {
            Event::Recharge(r) => Route::Sender(shard_of(r.user.0, self.mask)),
            Event::Gift(g) => Route::Sender(shard_of(g.sender.0, self.mask)),
            Event::Account(a) => Route::Sender(shard_of(a.user.0, self.mask)),
            Event::Purchase(p) => Route::Sender(shard_of(p.user.0, self.mask)),
            Event::VideoGift(v) => Route::Sender(shard_of(v.sender.0, self.mask)),
            Event::RechargeReversal(r) => Route::Sender(shard_of(r.user.0, self.mask)),
            Event::Payout(p) => Route::Creator(shard_of(p.creator.0, self.mask)),
            Event::Settlement(s) => Route::Creator(shard_of(s.creator.0, self.mask)),
            Event::StreamGoal(g) => Route::Stream(shard_of(g.stream.0, self.mask)),
            Event::GiftReversal(r) => Route::Reversal(shard_of(r.sender.0, self.mask)),
            Event::Battle(_) | Event::BattleClose(_) => Route::Battle,
            // Applied by `change_economy` and `replay` only, never in a batch.
            Event::Economy(_) => Route::Refused,
        }
    }

    /// The id shard that remembers `id` (for tests that place ids on chosen shards).
    pub fn id_shard_of(&self, id: EventId) -> usize {
        self.id_shard(self.id_hash(id))
    }

    /// `id`'s hash under this ledger's secret.
    fn id_hash(&self, id: EventId) -> IdHash {
        IdHash::keyed(id, &self.id_secret)
    }

    /// The hash `event`'s id is filed under in the id index: a client's id under the
    /// ledger's secret; an id the service derives (a battle's, from its battle id) under
    /// a secret of its own, so no client id shares its key (review B11: a gift carrying a
    /// battle's derived id refused the battle's PUT). Two ids of different domains meet
    /// only by a 2^-56 chance, as any two ids do.
    fn event_hash(&self, event: &Event) -> IdHash {
        match event {
            Event::Battle(_) | Event::BattleClose(_) => {
                IdHash::keyed(event.id(), &self.id_secret.derived())
            }
            _ => self.id_hash(event.id()),
        }
    }

    /// The id shard of an id hashing to `hash`.
    fn id_shard(&self, hash: IdHash) -> usize {
        hash.shard(self.mask)
    }

    fn lock_book(&self, route: Route) -> BookGuard<'_> {
        match route {
            Route::Creator(c) => BookGuard::Creator(self.creators[c].lock()),
            Route::Stream(k) => BookGuard::Stream(self.streams[k].lock()),
            Route::Sender(_) | Route::Reversal(_) | Route::Battle | Route::Refused => {
                unreachable!("not a book event")
            }
        }
    }
}
