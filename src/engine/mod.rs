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

mod books;
pub mod event;
mod idhash;
mod rules;
mod shard;
mod splitmap;
mod topk;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;
use parking_lot::{Mutex, MutexGuard, RwLock};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::economy::{Currency, Economy, EconomyDoc, Region};
pub use books::Credited;
use books::{CreatorShard, Settled, SettledNanos, StreamShard};
pub use event::*;
use idhash::IdHash;
pub use idhash::IdSecret;
pub use shard::HistoryEntry;
use shard::SenderShard;
pub use topk::{Offer, TopK};
use window::{Claim, IdWindow, IdWindowV4, IdWindowV5};

/// Largest number of shards of each kind.
pub const SHARDS_MAX: usize = 1024;
/// Largest top-K list kept per creator, stream and for the creators leaderboard.
pub const TOP_K_MAX: usize = 1000;
/// Largest history kept per user.
pub const HISTORY_PER_USER_MAX: usize = 1000;
/// How far ahead of the server's clock an event's `issued_ms` may be (client clocks
/// drift). The index keeps ids this much longer than the horizon, so that a retry
/// admitted by its `issued_ms` always finds its original.
pub const ISSUED_AHEAD_MAX_MS: u64 = 10_000;
/// Largest idempotency index (ids remembered in all).
pub const IDEMPOTENCY_ENTRIES_MAX: usize = 1 << 30;

/// Engine sizing and bounds. Every field has a limit checked by [`EngineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Number of shards of each kind; a power of two in 1..=1024. About two per core
    /// that applies batches: every shard keeps its own part of each creator's and
    /// stream's aggregates, so more shards than the cores can use cost memory and cache
    /// misses (BENCHMARKS.md "Shards: 16 → 4"). Fixed for a ledger's life: a snapshot
    /// loads with the count it was taken with.
    pub shards: usize,
    /// Event ids remembered for idempotency, in total (split evenly across the id
    /// shards). Size it to the retry horizon times the peak event rate: when it is full
    /// of ids younger than the horizon, new events are answered `UNAVAILABLE` (retry
    /// later), never admitted by forgetting an id early.
    pub idempotency_entries_max: usize,
    /// The retry horizon: every event id is remembered at least this long (by the
    /// journaled stamps), so a retry within it is answered with the original outcome.
    #[serde(alias = "idempotency_window_ms")]
    pub idempotency_horizon_ms: u64,
    /// Recent history entries kept per user (0 = none).
    pub history_per_user: usize,
    /// Length of every top-K list: top gifters per creator and per stream, top creators.
    pub top_k: usize,
    /// Keep a drainable log of applied events (the service's journal feed).
    pub keep_log: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 4,
            idempotency_entries_max: 1 << 22,
            idempotency_horizon_ms: 10 * 60 * 1000,
            history_per_user: 32,
            top_k: 100,
            keep_log: true,
        }
    }
}

impl EngineConfig {
    /// How long the index keeps an id after its stamp: the horizon, plus how far ahead
    /// an `issued_ms` may be.
    fn id_keep_ms(&self) -> u64 {
        self.idempotency_horizon_ms
            .saturating_add(ISSUED_AHEAD_MAX_MS)
    }

    /// The longest the index keeps an id after its stamp: [`EngineConfig::id_keep_ms`]
    /// plus the epoch it is counted in (ids are kept per epoch of 1/64 of that, so up to
    /// one epoch longer, never shorter). At its stamp plus this, an id is forgotten.
    pub fn id_kept_max_ms(&self) -> u64 {
        let keep = self.id_keep_ms();
        keep.saturating_add(window::epoch_ms(keep))
    }

    /// Whether an event issued at `issued_ms` is refused at `stamp` (`EVENT_EXPIRED`):
    /// issued longer than the horizon ago, or further ahead than [`ISSUED_AHEAD_MAX_MS`].
    pub fn is_expired(&self, issued_ms: u64, stamp: Stamp) -> bool {
        stamp.0.saturating_sub(issued_ms) > self.idempotency_horizon_ms
            || issued_ms.saturating_sub(stamp.0) > ISSUED_AHEAD_MAX_MS
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.shards.is_power_of_two() || self.shards > SHARDS_MAX {
            return Err(ConfigError::new(
                "engine.shards",
                format!(
                    "must be a power of two in 1..={SHARDS_MAX}, got {}",
                    self.shards
                ),
            ));
        }
        if self.top_k == 0 || self.top_k > TOP_K_MAX {
            return Err(ConfigError::new(
                "engine.top_k",
                format!("must be in 1..={TOP_K_MAX}"),
            ));
        }
        if self.history_per_user > HISTORY_PER_USER_MAX {
            return Err(ConfigError::new(
                "engine.history_per_user",
                format!("must be at most {HISTORY_PER_USER_MAX}"),
            ));
        }
        if self.idempotency_entries_max < self.shards {
            return Err(ConfigError::new(
                "engine.idempotency_entries_max",
                "must be at least one entry per shard",
            ));
        }
        if self.idempotency_horizon_ms == 0 {
            return Err(ConfigError::new(
                "engine.idempotency_horizon_ms",
                "must be positive",
            ));
        }
        if self.idempotency_entries_max > IDEMPOTENCY_ENTRIES_MAX {
            return Err(ConfigError::new(
                "engine.idempotency_entries_max",
                format!("must be at most {IDEMPOTENCY_ENTRIES_MAX}"),
            ));
        }
        Ok(())
    }
}

/// A wallet as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalletView {
    pub user: UserId,
    pub coins: u64,
    pub spent_this_month: u64,
    pub monthly_budget_coins: Option<u64>,
    pub region: Option<Region>,
    pub adult: bool,
}

/// A creator's totals as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatorView {
    pub creator: CreatorId,
    /// Diamonds credited on this node: floor(coins received x share).
    pub diamonds_total: u128,
    /// Credited here, plus settled in from other nodes, less paid out.
    pub diamonds_available: u128,
    /// A cluster owner: diamonds other nodes credited this creator and reported here.
    pub diamonds_settled_in: u128,
    /// The fraction of a diamond carried over, in [0, 1).
    pub diamond_fraction: Decimal,
    pub coins_received: u128,
    /// Gift counts by catalog id, in catalog order.
    pub gifts: Vec<(GiftId, u128)>,
}

/// A stream as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamView {
    pub stream: StreamId,
    pub creator: Option<CreatorId>,
    pub coins_received: u128,
    /// `(coins_target, progress)`; progress is the stream's coins received.
    pub goal: Option<(u64, u128)>,
}

/// Why a replay stopped. Replay refuses rather than guesses: a log it cannot reproduce
/// means the log or the code changed meaning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("log entry seq {seq} is not after seq {last}")]
    OutOfOrder { seq: u64, last: u64 },
    /// Sequence numbers never skip, so a log that does is missing events (e.g. a
    /// journal trimmed after snapshots that were not loaded).
    #[error(
        "log entry seq {seq} follows seq {last}: events {} to {} are missing (a journal trimmed after snapshots that were not loaded? the snapshot directory may be missing or another one)",
        last + 1,
        seq - 1
    )]
    Gap { seq: u64, last: u64 },
    #[error(
        "log entry seq {seq} (event {event:?}) replayed to {replayed:?}, recorded {recorded:?}"
    )]
    Mismatch {
        seq: u64,
        event: EventId,
        recorded: Status,
        replayed: Status,
    },
    #[error(
        "log entry seq {seq} puts economy version {version} in force, whose document (digest {digest:016x}) was not found"
    )]
    UnknownEconomy { seq: u64, version: u32, digest: u64 },
    #[error("log entry seq {seq}: {error}")]
    Economy { seq: u64, error: EconomyError },
}

/// An economy version that cannot follow the one in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EconomyError {
    #[error("economy version {next} cannot follow version {current} (one change at a time)")]
    NotNext { current: u32, next: u32 },
    #[error("economy version {version} moves or drops the catalog code {code} ({id:?})")]
    Codes {
        version: u32,
        code: usize,
        id: String,
    },
}

/// Whether `next` may follow `current`: the next version, every code kept.
fn check_successor(current: &Economy, next: &Economy) -> Result<(), EconomyError> {
    if Some(next.version) != current.version.checked_add(1) {
        return Err(EconomyError::NotNext {
            current: current.version,
            next: next.version,
        });
    }
    // Version 0 is not recorded: its codes are the file's positions at this start, which
    // a journal's first version (from any earlier file) need not keep. A ledger's events
    // all follow its first version, except those journaled by a build before versions.
    if current.version == 0 {
        return Ok(());
    }
    let gifts = current.gifts.iter().map(|g| &g.id).enumerate();
    let packages = current.packages.iter().map(|p| &p.id).enumerate();
    let kept = |code: usize, id: &String, now: Option<&String>| {
        if now == Some(id) {
            Ok(())
        } else {
            Err(EconomyError::Codes {
                version: next.version,
                code,
                id: id.clone(),
            })
        }
    };
    for (code, id) in gifts {
        kept(code, id, next.gifts.get(code).map(|g| &g.id))?;
    }
    for (code, id) in packages {
        kept(code, id, next.packages.get(code).map(|p| &p.id))?;
    }
    Ok(())
}

/// Ledger-wide counts and totals at a consistent cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerTotals {
    pub last_seq: u64,
    pub wallets: u64,
    pub creators: u64,
    pub streams: u64,
    pub coins_recharged: u128,
    pub coins_in_wallets: u128,
    pub coins_spent: u128,
    pub coins_received_by_creators: u128,
    pub coins_received_by_streams: u128,
    pub diamonds_credited: u128,
    /// Diamonds other cluster nodes credited this node's creators (reported here).
    pub diamonds_settled_in: u128,
    pub diamonds_paid: u128,
    pub revenue: Vec<(Currency, Decimal)>,
    pub paid_out: Vec<(Currency, Decimal)>,
}

/// Result of [`Engine::foreign`]: how much state belongs to routing keys not owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Foreign {
    pub wallets: u64,
    pub creators: u64,
    pub goals: u64,
    /// The first one found, in words ("the wallet of user 42").
    pub example: Option<String>,
}

impl Foreign {
    pub fn is_empty(&self) -> bool {
        self.example.is_none()
    }
}

/// Result of [`Engine::audit`]: the totals and every violated invariant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub totals: LedgerTotals,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

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
    /// Nowhere: answered before it was routed (`EVENT_EXPIRED`).
    Refused,
}

/// Events looked up together by [`SenderShard::warm`] before they are applied: enough
/// for many cache misses in flight, few enough that their lines (~8 per gift) stay in
/// the core's L2 cache until applied.
const WARM_BLOCK: usize = 128;

/// Spreads ids over shards. Ids are often sequential or share low bits, so mix them
/// first; the multiplier differs from the map hasher's so both stay well spread.
fn shard_of(id: u64, mask: usize) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask
}

/// The engine. `Sync`: share it behind an `Arc` and call it from any thread.
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
    /// `(seq, economy)`: the economy in force for events numbered after `seq`, for every
    /// version this process put in force (the first: the one it started with, at 0).
    in_force: Mutex<Vec<(u64, Arc<Economy>)>>,
    /// The next sequence number to reserve (the first event gets 1).
    next_seq: CachePadded<AtomicU64>,
}

/// What a chunk found for one event's id.
#[derive(Clone, Copy)]
enum Verdict {
    Apply,
    Answer(Outcome),
    /// A retry of an earlier event of the same chunk: answered with its outcome.
    SameAsEarlier,
}

/// The ids of a batch seen so far, as a 65,536-bit filter (8 KB): most ids were not,
/// and only a possible repeat is checked against the earlier events.
struct SeenIds {
    bits: Box<[u64; 1024]>,
}

impl Default for SeenIds {
    fn default() -> Self {
        SeenIds {
            bits: Box::new([0; 1024]),
        }
    }
}

impl SeenIds {
    /// Whether an event before `i` that was routed (not refused) has `events[i]`'s id
    /// with other content. Marks the id seen.
    fn earlier_other_content(
        &mut self,
        events: &[Event],
        hashes: &[IdHash],
        fingerprints: &[EventFingerprint],
        i: usize,
        routes: &[Route],
    ) -> bool {
        let id = events[i].id();
        // Keyed: a client cannot craft ids that all set one bit (a quadratic scan).
        let h = hashes[i].key() & 0xFFFF;
        let (word, bit) = ((h >> 6) as usize, 1u64 << (h & 63));
        let maybe = self.bits[word] & bit != 0;
        self.bits[word] |= bit;
        maybe
            && (0..i).any(|j| {
                events[j].id() == id
                    && !matches!(routes[j], Route::Refused)
                    && fingerprints[j] != fingerprints[i]
            })
    }
}

/// What [`Engine::claim_ids`] needs of a batch.
struct ChunkClaim<'a> {
    events: &'a [Event],
    hashes: &'a [IdHash],
    fingerprints: &'a [EventFingerprint],
    issued_ms: &'a [u64],
    /// The chunk's sender shard, as [`route_tag`].
    route: u32,
    stamp: Stamp,
}

/// A route as a number: where formats 1 and 2 kept an event's id (see
/// [`EventFingerprint::legacy`]).
fn route_tag(route: Route) -> u32 {
    match route {
        Route::Sender(i) => i as u32,
        Route::Creator(i) => 1 << 16 | i as u32,
        Route::Stream(i) => 2 << 16 | i as u32,
        Route::Refused => u32::MAX,
    }
}

/// The oldest stamp an earlier attempt of an event issued at `issued_ms` (0: not given,
/// taken as issued at `stamp`) can carry: a backend's clock may run
/// [`ISSUED_AHEAD_MAX_MS`] ahead of the server's.
fn since(issued_ms: u64, stamp: Stamp) -> u64 {
    let issued = if issued_ms == 0 { stamp.0 } else { issued_ms };
    issued.saturating_sub(ISSUED_AHEAD_MAX_MS)
}

/// The account whose events must keep their order: the user of a recharge or account
/// settings, the sender of a gift (chunks hold only these).
fn sender_of(event: &Event) -> u64 {
    match event {
        Event::Recharge(r) => r.user.0,
        Event::Gift(g) => g.sender.0,
        Event::Account(a) => a.user.0,
        Event::Payout(_) | Event::StreamGoal(_) | Event::Settlement(_) | Event::Economy(_) => {
            unreachable!("a chunk holds sender-routed events only")
        }
    }
}

/// An answer that records nothing: seq 0, not a duplicate.
fn unrecorded(code: RejectCode) -> Outcome {
    debug_assert!(!code.is_recorded());
    Outcome {
        seq: 0,
        status: Status::Rejected(code),
        duplicate: false,
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
            next_seq: CachePadded::new(AtomicU64::new(1)),
            config,
        })
    }

    /// The economy in force now (version 0: not recorded in a ledger yet).
    pub fn economy(&self) -> Arc<Economy> {
        Arc::clone(&self.gate.read())
    }

    /// The economy an event numbered `seq` was applied under (for events this process
    /// applied or replayed; older ones: the one it started with).
    pub fn economy_at(&self, seq: u64) -> Arc<Economy> {
        let in_force = self.in_force.lock();
        let i = in_force.partition_point(|(from, _)| *from < seq).max(1);
        Arc::clone(&in_force[i - 1].1)
    }

    /// The economy version recorded under `digest`, if this engine knows it.
    pub fn economy_by_digest(&self, digest: u64) -> Option<Arc<Economy>> {
        self.economies.lock().get(&digest).cloned()
    }

    /// The version that would put `file`'s terms in force, validated whole, with every
    /// catalog code kept ([`Economy::successor`]); `None` when those terms are in force
    /// and recorded already (a version 0 economy is not recorded: its successor is due).
    pub fn economy_successor(
        &self,
        file: crate::economy::EconomyFile,
    ) -> Result<Option<Economy>, ConfigError> {
        let current = self.economy();
        let next = current.successor(file)?;
        Ok((current.version == 0 || !current.same_terms(&next)).then_some(next))
    }

    /// The version a start records for `file` (economy.toml), given the digest of the
    /// file the last start saw (`last_file`, [`crate::economy::EconomyFile::digest`]):
    /// `None` when the file was not edited since (an economy put in force by
    /// `PUT /v1/economy` meanwhile stays), or when its terms are in force already.
    pub fn economy_for_start(
        &self,
        file: crate::economy::EconomyFile,
        last_file: Option<u64>,
    ) -> Result<Option<Economy>, ConfigError> {
        if self.economy().version > 0 && last_file == Some(file.digest()) {
            return Ok(None);
        }
        self.economy_successor(file)
    }

    /// Puts `base`'s terms in force as the unrecorded version 0 (`false`, and nothing
    /// changes, once a version is recorded): a ledger whose first recorded version is
    /// `base` replays the events journaled before it — by a build before versions — under
    /// the terms they were applied with, whatever the file at this start says.
    pub fn assume_base_economy(&self, base: &Economy) -> bool {
        let mut gate = self.gate.write();
        if gate.version != 0 {
            return false;
        }
        let mut base = base.clone();
        base.version = 0;
        *gate = Arc::new(base);
        self.in_force.lock()[0].1 = Arc::clone(&gate);
        true
    }

    /// Makes a recorded economy version known, for replaying its change event.
    pub fn know_economy(&self, economy: Arc<Economy>) {
        let digest = economy.to_doc().digest();
        self.economies.lock().insert(digest, economy);
    }

    /// Puts `next` in force for every event numbered after the change, which is logged
    /// (and journaled) as an [`EconomyChange`] with its own number. `next` must be the
    /// version after the one in force and keep its catalog codes
    /// ([`Economy::successor`]). Waits for the chunks in flight, like a payout.
    pub fn change_economy(&self, next: Economy, stamp: Stamp) -> Result<Outcome, EconomyError> {
        let mut gate = self.gate.write();
        check_successor(&gate, &next)?;
        let doc = next.to_doc();
        let change = EconomyChange {
            version: next.version,
            digest: doc.digest(),
        };
        let next = Arc::new(next);
        self.economies
            .lock()
            .insert(change.digest, Arc::clone(&next));
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let outcome = Outcome {
            seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
        };
        self.meta_log.lock().push(LogEntry {
            seq,
            stamp,
            event: Event::Economy(change),
            outcome,
            totals: None,
        });
        self.in_force.lock().push((seq, Arc::clone(&next)));
        *gate = next;
        Ok(outcome)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
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

    /// The last sequence number reserved (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    fn route(&self, event: &Event) -> Route {
        match event {
            Event::Recharge(r) => Route::Sender(shard_of(r.user.0, self.mask)),
            Event::Gift(g) => Route::Sender(shard_of(g.sender.0, self.mask)),
            Event::Account(a) => Route::Sender(shard_of(a.user.0, self.mask)),
            Event::Payout(p) => Route::Creator(shard_of(p.creator.0, self.mask)),
            Event::Settlement(s) => Route::Creator(shard_of(s.creator.0, self.mask)),
            Event::StreamGoal(g) => Route::Stream(shard_of(g.stream.0, self.mask)),
            // Applied by `change_economy` and `replay` only, never in a batch.
            Event::Economy(_) => Route::Refused,
        }
    }

    /// Applies a batch stamped `stamp` and returns one outcome per event, in batch order.
    ///
    /// Sender-routed events (recharge, gift, account) are applied first, each sender
    /// shard's chunk under one lock, in batch order per sender; then payouts and goals in
    /// batch order, so a payout sees the gifts of its own batch. Sequence numbers record
    /// the order actually applied.
    pub fn apply_batch(&self, events: &[Event], stamp: Stamp) -> Vec<Outcome> {
        self.apply_issued(events, &[], stamp)
    }

    /// [`Engine::apply_batch`] for events that say when the backend created them:
    /// `issued_ms[i]` is event `i`'s `issued_ms` (UTC ms, the same on every retry; 0 when
    /// not given), or `issued_ms` is empty. An event issued longer than the retry horizon
    /// before `stamp` is answered `EVENT_EXPIRED` and not applied: within the horizon
    /// its id is remembered, so a retry is answered or refused, never applied twice.
    pub fn apply_issued(&self, events: &[Event], issued_ms: &[u64], stamp: Stamp) -> Vec<Outcome> {
        assert!(
            issued_ms.is_empty() || issued_ms.len() == events.len(),
            "one issued_ms per event, or none"
        );
        let mut outcomes = vec![
            Outcome {
                seq: 0,
                status: Status::Accepted(Effect::Stored),
                duplicate: false,
            };
            events.len()
        ];
        let month = stamp.month_key();
        // Counting sort of the sender-routed events by shard, keeping batch order.
        let shards = self.senders.len();
        let mut counts = vec![0u32; shards + 1];
        let mut routes = Vec::with_capacity(events.len());
        let mut book_events = Vec::new();
        // Of two events of the batch with one id and other content, the later one is never
        // applied, whatever shards they go to (a payout is applied after the gifts): it
        // is answered at the end, as a retry if the id holds its content by then, else
        // EVENT_ID_REUSED.
        let fingerprints: Vec<EventFingerprint> = events.iter().map(Event::fingerprint).collect();
        let hashes: Vec<IdHash> = events.iter().map(|e| self.id_hash(e.id())).collect();
        let mut seen = (events.len() > 1).then(SeenIds::default);
        let mut deferred = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if let Event::Economy(_) = event {
                // Made by the service only (clients' frames holding one are refused).
                debug_assert!(false, "an economy change in a batch");
                outcomes[i] = unrecorded(RejectCode::Unavailable);
                routes.push(Route::Refused);
                continue;
            }
            if issued_ms
                .get(i)
                .is_some_and(|&t| t != 0 && self.config.is_expired(t, stamp))
            {
                outcomes[i] = unrecorded(RejectCode::EventExpired);
                routes.push(Route::Refused);
                continue;
            }
            if let Some(seen) = &mut seen
                && seen.earlier_other_content(events, &hashes, &fingerprints, i, &routes)
            {
                deferred.push(i);
                routes.push(Route::Refused);
                continue;
            }
            let route = self.route(event);
            if let Route::Sender(s) = route {
                counts[s + 1] += 1;
            } else {
                book_events.push(i);
            }
            routes.push(route);
        }
        for s in 0..shards {
            counts[s + 1] += counts[s];
        }
        let mut order = vec![0u32; counts[shards] as usize];
        let mut next = counts.clone();
        for (i, route) in routes.iter().enumerate() {
            if let Route::Sender(s) = *route {
                order[next[s] as usize] = i as u32;
                next[s] += 1;
            }
        }
        let mut verdicts = Vec::new();
        let mut settled = Vec::new();
        for s in 0..shards {
            let chunk = &order[counts[s] as usize..counts[s + 1] as usize];
            if chunk.is_empty() {
                continue;
            }
            let gate = self.gate.read();
            let mut shard = self.senders[s].lock();
            let claim = ChunkClaim {
                events,
                hashes: &hashes,
                fingerprints: &fingerprints,
                issued_ms,
                route: route_tag(Route::Sender(s)),
                stamp,
            };
            self.claim_ids(&claim, chunk, &mut verdicts);
            // Reserve exactly one number per claimed event, so that numbers never skip.
            let claimed = verdicts
                .iter()
                .filter(|v| matches!(v, Verdict::Apply))
                .count();
            let mut next = self.next_seq.fetch_add(claimed as u64, Ordering::AcqRel);
            settled.clear();
            for (block, verdicts) in chunk.chunks(WARM_BLOCK).zip(verdicts.chunks(WARM_BLOCK)) {
                std::hint::black_box(shard.warm(block.iter().map(|&i| &events[i as usize])));
                for (&i, verdict) in block.iter().zip(verdicts) {
                    let i = i as usize;
                    outcomes[i] = match *verdict {
                        Verdict::Apply => {
                            let outcome =
                                shard.apply(&gate, &self.config, &events[i], next, stamp, month);
                            next += 1;
                            settled.push((hashes[i], outcome));
                            outcome
                        }
                        Verdict::Answer(outcome) => outcome,
                        Verdict::SameAsEarlier => {
                            // The earlier event the index took this one for: the same
                            // key in the same id shard (ids that differ elsewhere in
                            // their hash are one id to the index).
                            let same = |h: IdHash| {
                                h.key() == hashes[i].key()
                                    && self.id_shard(h) == self.id_shard(hashes[i])
                            };
                            match settled.iter().rev().find(|(h, _)| same(*h)) {
                                Some(&(_, original)) => Outcome {
                                    duplicate: true,
                                    ..original
                                },
                                // Another chunk's pending id with this content's check
                                // (a 2^-32 chance: content names the sender): refused.
                                None => unrecorded(RejectCode::EventIdReused),
                            }
                        }
                    };
                }
            }
            self.merge_credits(&mut shard, &gate);
            drop(gate);
            self.settle_ids(&mut settled);
        }
        for i in book_events {
            let since = since(issued_ms.get(i).copied().unwrap_or(0), stamp);
            let (event, hash) = (&events[i], hashes[i]);
            outcomes[i] = self.apply_to_book(event, hash, fingerprints[i], routes[i], stamp, since);
        }
        for i in deferred {
            let event = &events[i];
            let route = route_tag(self.route(event));
            let legacy = self
                .legacy_claim(event, fingerprints[i], route, stamp)
                .filter(|o| o.duplicate);
            outcomes[i] = legacy.unwrap_or_else(|| {
                self.ids[self.id_shard(hashes[i])]
                    .lock()
                    .lookup(hashes[i], fingerprints[i], route, stamp)
                    .map_or(unrecorded(RejectCode::EventIdReused), |original| Outcome {
                        duplicate: true,
                        ..original
                    })
            });
        }
        outcomes
    }

    /// The id shard that remembers `id` (for tests that place ids on chosen shards).
    pub fn id_shard_of(&self, id: EventId) -> usize {
        self.id_shard(self.id_hash(id))
    }

    /// `id`'s hash under this ledger's secret.
    fn id_hash(&self, id: EventId) -> IdHash {
        IdHash::keyed(id, &self.id_secret)
    }

    /// The id shard of an id hashing to `hash`.
    fn id_shard(&self, hash: IdHash) -> usize {
        hash.shard(self.mask)
    }

    /// Claims the ids of `chunk`'s events (indexes into the batch) in the id index,
    /// leaving one verdict per event in `verdicts`, in chunk order. Each id shard is
    /// locked once; events are taken in chunk order within it, so of two events of the
    /// chunk with one id the first is applied. A sender's events are applied in order:
    /// after one refused for backpressure, none of its later ones is applied.
    fn claim_ids(&self, claim: &ChunkClaim<'_>, chunk: &[u32], verdicts: &mut Vec<Verdict>) {
        verdicts.clear();
        verdicts.resize(chunk.len(), Verdict::Apply);
        if claim.stamp <= self.legacy_ids_until {
            for (k, &i) in chunk.iter().enumerate() {
                let i = i as usize;
                let (event, fingerprint) = (&claim.events[i], claim.fingerprints[i]);
                if let Some(held) = self.legacy_claim(event, fingerprint, claim.route, claim.stamp)
                {
                    verdicts[k] = Verdict::Answer(held);
                }
            }
        }
        let mut by_shard: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .filter(|&(k, _)| matches!(verdicts[k], Verdict::Apply))
            .map(|(k, &i)| (self.id_shard(claim.hashes[i as usize]), k))
            .collect();
        by_shard.sort_unstable();
        let mut backpressure = false;
        for run in by_shard.chunk_by(|a, b| a.0 == b.0) {
            let mut ids = self.ids[run[0].0].lock();
            for &(_, k) in run {
                let i = chunk[k] as usize;
                let since = since(claim.issued_ms.get(i).copied().unwrap_or(0), claim.stamp);
                let id = claim.hashes[i];
                verdicts[k] =
                    match ids.claim(id, claim.fingerprints[i], claim.route, claim.stamp, since) {
                        Claim::Fresh => Verdict::Apply,
                        Claim::Retry(Some(original)) => Verdict::Answer(Outcome {
                            duplicate: true,
                            ..original
                        }),
                        Claim::Retry(None) => Verdict::SameAsEarlier,
                        Claim::Reused => Verdict::Answer(unrecorded(RejectCode::EventIdReused)),
                        Claim::Forgotten => Verdict::Answer(unrecorded(RejectCode::EventExpired)),
                        Claim::Full => {
                            backpressure = true;
                            Verdict::Answer(unrecorded(RejectCode::Unavailable))
                        }
                    };
            }
        }
        if backpressure {
            self.hold_back_after_refusals(claim, chunk, verdicts);
        }
    }

    /// The answer for `event` from the ids a ledger restored from a snapshot of format 3
    /// to 5 holds under the unkeyed hash (only until they are past the horizon: see
    /// `legacy_ids_until`): a retry's original outcome, or `EVENT_ID_REUSED`.
    fn legacy_claim(
        &self,
        event: &Event,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
    ) -> Option<Outcome> {
        if stamp > self.legacy_ids_until {
            return None;
        }
        let hash = IdHash::unkeyed(event.id());
        let held = self.ids[self.id_shard(hash)]
            .lock()
            .probe(hash, fingerprint, route, stamp)?;
        Some(match held {
            Claim::Retry(Some(original)) => Outcome {
                duplicate: true,
                ..original
            },
            _ => unrecorded(RejectCode::EventIdReused),
        })
    }

    /// After a sender's event refused for backpressure, its later events of the chunk are
    /// refused too (and their claims released): applying them would reorder the sender's
    /// events (a gift before the recharge that pays for it).
    fn hold_back_after_refusals(
        &self,
        claim: &ChunkClaim<'_>,
        chunk: &[u32],
        verdicts: &mut [Verdict],
    ) {
        let unavailable = unrecorded(RejectCode::Unavailable);
        let mut held: Vec<u64> = Vec::new();
        for (k, &i) in chunk.iter().enumerate() {
            let event = &claim.events[i as usize];
            let sender = sender_of(event);
            if matches!(verdicts[k], Verdict::Answer(o) if o == unavailable) {
                held.push(sender);
            } else if held.contains(&sender) {
                if matches!(verdicts[k], Verdict::Apply) {
                    let hash = claim.hashes[i as usize];
                    self.ids[self.id_shard(hash)].lock().unclaim(hash);
                }
                if matches!(verdicts[k], Verdict::Apply | Verdict::SameAsEarlier) {
                    verdicts[k] = Verdict::Answer(unavailable);
                }
            }
        }
    }

    /// Records the outcomes of claimed ids, one lock per id shard touched.
    fn settle_ids(&self, settled: &mut [(IdHash, Outcome)]) {
        settled.sort_unstable_by_key(|(id, _)| self.id_shard(*id));
        for run in settled.chunk_by(|a, b| self.id_shard(a.0) == self.id_shard(b.0)) {
            let mut ids = self.ids[self.id_shard(run[0].0)].lock();
            for &(id, outcome) in run {
                ids.settle(id, outcome);
            }
        }
    }

    /// Applies a payout or a goal under its book shard's lock, reserving its number there
    /// (or using `seq` in replay).
    /// Live: `fingerprint` is the event's, `since` as for [`IdWindow::claim`].
    fn apply_to_book(
        &self,
        event: &Event,
        id: IdHash,
        fingerprint: EventFingerprint,
        route: Route,
        stamp: Stamp,
        since: u64,
    ) -> Outcome {
        // A payout reads the credits: it waits for the chunks between reserving their
        // numbers and merging their credits, and holds off new ones (module doc).
        let gate = matches!(event, Event::Payout(_)).then(|| self.gate.write());
        let mut book = self.lock_book(route);
        if let Some(held) = self.legacy_claim(event, fingerprint, route_tag(route), stamp) {
            return held;
        }
        let mut ids = self.ids[self.id_shard(id)].lock();
        match ids.claim(id, fingerprint, route_tag(route), stamp, since) {
            Claim::Fresh => {}
            Claim::Retry(Some(original)) => {
                return Outcome {
                    duplicate: true,
                    ..original
                };
            }
            // Pending ids belong to sender chunks, whose kinds differ: other content.
            Claim::Retry(None) | Claim::Reused => return unrecorded(RejectCode::EventIdReused),
            Claim::Forgotten => return unrecorded(RejectCode::EventExpired),
            Claim::Full => return unrecorded(RejectCode::Unavailable),
        }
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let economy = gate.as_deref();
        let outcome = self.apply_in_book(&mut book, economy, event, seq, stamp);
        ids.settle(id, outcome);
        outcome
    }

    /// Replays a journaled payout, settlement or goal with its number.
    fn replay_in_book(&self, entry: &LogEntry, route: Route) -> Outcome {
        let gate = self.gate.read();
        let mut book = self.lock_book(route);
        let outcome =
            self.apply_in_book(&mut book, Some(&gate), &entry.event, entry.seq, entry.stamp);
        let id = self.id_hash(entry.event.id());
        self.ids[self.id_shard(id)].lock().remember(
            id,
            entry.event.fingerprint(),
            outcome,
            entry.stamp,
        );
        outcome
    }

    fn lock_book(&self, route: Route) -> BookGuard<'_> {
        match route {
            Route::Creator(c) => BookGuard::Creator(self.creators[c].lock()),
            Route::Stream(k) => BookGuard::Stream(self.streams[k].lock()),
            Route::Sender(_) | Route::Refused => unreachable!("not a book event"),
        }
    }

    /// `economy`: the one in force, for a payout (which holds the gate).
    fn apply_in_book(
        &self,
        book: &mut BookGuard<'_>,
        economy: Option<&Arc<Economy>>,
        event: &Event,
        seq: u64,
        stamp: Stamp,
    ) -> Outcome {
        match (event, book) {
            (Event::Payout(p), BookGuard::Creator(book)) => {
                let economy = economy.expect("a payout holds the gate");
                book.payout(economy, &self.config, p, seq, stamp)
            }
            (Event::Settlement(st), BookGuard::Creator(book)) => {
                book.settle(&self.config, st, seq, stamp)
            }
            (Event::StreamGoal(g), BookGuard::Stream(book)) => {
                book.goal(&self.config, g, seq, stamp)
            }
            _ => unreachable!("payouts and settlements go to creators, goals to streams"),
        }
    }

    /// Merges a chunk's buffered coins into the books, one lock per book shard touched.
    fn merge_credits(&self, shard: &mut MutexGuard<'_, SenderShard>, economy: &Economy) {
        let mut pending = shard.take_pending();
        let mask = self.mask;
        pending
            .creators
            .sort_unstable_by_key(|(c, _)| shard_of(c.0, mask));
        for run in pending
            .creators
            .chunk_by(|a, b| shard_of(a.0.0, mask) == shard_of(b.0.0, mask))
        {
            let mut book = self.creators[shard_of(run[0].0.0, mask)].lock();
            for &(creator, coins) in run {
                book.credit(economy, self.config.top_k, creator, coins);
            }
        }
        pending
            .streams
            .sort_unstable_by_key(|(s, _, _)| shard_of(s.0, mask));
        for run in pending
            .streams
            .chunk_by(|a, b| shard_of(a.0.0, mask) == shard_of(b.0.0, mask))
        {
            let mut book = self.streams[shard_of(run[0].0.0, mask)].lock();
            for &(stream, creator, coins) in run {
                book.credit(stream, creator, coins);
            }
        }
    }

    /// Replays logged events (sorted by seq, all after [`Engine::last_seq`]) with their
    /// journaled stamps. Every outcome must come out as recorded, payouts included (they
    /// were applied live with exactly the credits numbered before them). Never reads a
    /// clock.
    pub fn replay(&self, entries: &[LogEntry]) -> Result<(), ReplayError> {
        let mut last = self.last_seq();
        for entry in entries {
            if entry.seq <= last {
                return Err(ReplayError::OutOfOrder {
                    seq: entry.seq,
                    last,
                });
            }
            if entry.seq > last + 1 {
                return Err(ReplayError::Gap {
                    seq: entry.seq,
                    last,
                });
            }
            last = entry.seq;
        }
        // Between two book events (payouts, goals), sender events of different shards
        // are independent: replay them per shard, one lock and one credit merge per
        // shard, and large segments on two threads. Book events go one by one, after
        // every earlier sender event, so they see the credits they saw live.
        let mut i = 0;
        while i < entries.len() {
            let start = i;
            while i < entries.len() && matches!(self.route(&entries[i].event), Route::Sender(_)) {
                i += 1;
            }
            if start < i {
                self.replay_senders(&entries[start..i])?;
            }
            if let Some(entry) = entries.get(i) {
                if let Event::Economy(change) = entry.event {
                    self.replay_economy(entry, change)?;
                    i += 1;
                    continue;
                }
                let route = self.route(&entry.event);
                let replayed = self.replay_in_book(entry, route);
                check_replayed(entry, &replayed)?;
                self.unlog(route, entry.seq);
                i += 1;
            }
        }
        if let Some(last) = entries.last() {
            self.next_seq.store(last.seq + 1, Ordering::Release);
        }
        Ok(())
    }

    /// Replays a journaled economy change: the version it names must be known
    /// ([`Engine::know_economy`]) and follow the one in force.
    fn replay_economy(&self, entry: &LogEntry, change: EconomyChange) -> Result<(), ReplayError> {
        let next = self
            .economy_by_digest(change.digest)
            .filter(|e| e.version == change.version)
            .ok_or(ReplayError::UnknownEconomy {
                seq: entry.seq,
                version: change.version,
                digest: change.digest,
            })?;
        let mut gate = self.gate.write();
        check_successor(&gate, &next).map_err(|e| ReplayError::Economy {
            seq: entry.seq,
            error: e,
        })?;
        self.in_force.lock().push((entry.seq, Arc::clone(&next)));
        *gate = next;
        let replayed = Outcome {
            seq: entry.seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
        };
        check_replayed(entry, &replayed)
    }

    /// Replays a run of sender-routed entries (sorted by seq), grouped by shard.
    fn replay_senders(&self, entries: &[LogEntry]) -> Result<(), ReplayError> {
        let economy = self.economy();
        let economy = &*economy;
        let shards = self.senders.len();
        let mut by_shard: Vec<Vec<&LogEntry>> = vec![Vec::new(); shards];
        for e in entries {
            let Route::Sender(s) = self.route(&e.event) else {
                unreachable!("sender run")
            };
            by_shard[s].push(e);
        }
        let replay_shard = |s: usize, chunk: &[&LogEntry]| -> Result<(), ReplayError> {
            if chunk.is_empty() {
                return Ok(());
            }
            let mut shard = self.senders[s].lock();
            // Replayed events are committed already: they do not go to the log.
            let logged = shard.log.len();
            let (mut stamp, mut month) = (chunk[0].stamp, chunk[0].stamp.month_key());
            for entry in chunk {
                if entry.stamp != stamp {
                    (stamp, month) = (entry.stamp, entry.stamp.month_key());
                }
                let replayed = shard.apply(
                    economy,
                    &self.config,
                    &entry.event,
                    entry.seq,
                    entry.stamp,
                    month,
                );
                check_replayed(entry, &replayed)?;
            }
            shard.log.truncate(logged);
            self.merge_credits(&mut shard, economy);
            self.remember_replayed(chunk);
            Ok(())
        };
        if entries.len() < REPLAY_PARALLEL_EVENTS_MIN || shards == 1 {
            return by_shard
                .iter()
                .enumerate()
                .try_for_each(|(s, c)| replay_shard(s, c));
        }
        // Two threads: even and odd shards (the machine has two cores).
        std::thread::scope(|scope| {
            let odd = scope.spawn(|| {
                by_shard
                    .iter()
                    .enumerate()
                    .filter(|(s, _)| s % 2 == 1)
                    .try_for_each(|(s, c)| replay_shard(s, c))
            });
            let even = by_shard
                .iter()
                .enumerate()
                .filter(|(s, _)| s % 2 == 0)
                .try_for_each(|(s, c)| replay_shard(s, c));
            even.and(odd.join().expect("replay thread"))
        })
    }

    /// Remembers the ids of replayed sender events, one lock per id shard touched. The
    /// journal is the truth: no check (a journaled event was applied).
    fn remember_replayed(&self, chunk: &[&LogEntry]) {
        let mut by_shard: Vec<(IdHash, &LogEntry)> = chunk
            .iter()
            .map(|&e| (self.id_hash(e.event.id()), e))
            .collect();
        by_shard.sort_unstable_by_key(|&(h, e)| (self.id_shard(h), e.seq));
        for run in by_shard.chunk_by(|a, b| self.id_shard(a.0) == self.id_shard(b.0)) {
            let mut ids = self.ids[self.id_shard(run[0].0)].lock();
            for &(h, e) in run {
                ids.remember(h, e.event.fingerprint(), e.outcome, e.stamp);
            }
        }
    }

    /// Removes the log entry `seq` a replayed book event left (replayed events are
    /// committed already).
    fn unlog(&self, route: Route, seq: u64) {
        let unlog = |log: &mut Vec<LogEntry>| {
            if let Some(i) = log.iter().rposition(|e| e.seq == seq) {
                log.remove(i);
            }
        };
        match route {
            Route::Creator(j) => unlog(&mut self.creators[j].lock().log),
            Route::Stream(k) => unlog(&mut self.streams[k].lock().log),
            Route::Sender(i) => unlog(&mut self.senders[i].lock().log),
            Route::Refused => {}
        }
    }

    fn lock_all(&self) -> Cut<'_> {
        Cut {
            economy: self.gate.read(),
            meta_log: self.meta_log.lock(),
            senders: self.senders.iter().map(|m| m.lock()).collect(),
            creators: self.creators.iter().map(|m| m.lock()).collect(),
            streams: self.streams.iter().map(|m| m.lock()).collect(),
            ids: self.ids.iter().map(|m| m.lock()).collect(),
        }
    }

    /// Takes the log of applied events at a consistent cut: every event with a number
    /// up to the returned entries' last, none after, sorted by seq.
    pub fn drain_log(&self) -> Vec<LogEntry> {
        let mut log = self.lock_all().take_log();
        log.sort_unstable_by_key(|e| e.seq);
        log
    }

    /// Calls `f` with the whole state at a consistent cut (every shard locked while `f`
    /// runs: keep it short — the fork-based snapshot forks in it) and returns its result
    /// with the log of applied events not drained yet, which the caller must commit
    /// before the cut counts as durable.
    pub fn with_cut<R>(&self, f: impl FnOnce(&StateView<'_>) -> R) -> (R, Vec<LogEntry>) {
        let mut cut = self.lock_all();
        let mut log = cut.take_log();
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
        };
        let result = f(&view);
        drop(view);
        drop(cut);
        log.sort_unstable_by_key(|e| e.seq);
        (result, log)
    }

    /// Takes a consistent cut: the state and the log of applied events not drained yet
    /// (which the caller must commit before the state counts as durable). The cut
    /// clones the shards under their locks (a memory copy); encoding happens outside.
    pub fn snapshot(&self) -> (EngineState, Vec<LogEntry>) {
        let mut cut = self.lock_all();
        let mut log = cut.take_log();
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
        };
        drop(cut);
        log.sort_unstable_by_key(|e| e.seq);
        (state, log)
    }

    /// An engine holding `state` (taken with the same number of shards). The id index
    /// takes the config's bound and horizon; a state from before it (snapshot format 2 or
    /// older) has its ids moved in from the shards, without fingerprints.
    pub fn from_state(
        economy: Economy,
        config: EngineConfig,
        mut state: EngineState,
    ) -> Result<Engine, StateError> {
        let n = config.shards;
        if state.senders.len() != n
            || state.creators.len() != n
            || state.streams.len() != n
            || state.settled.len() != n
            || !(state.ids.len() == n || state.ids.is_empty())
            || !(state.credited.len() == n || state.credited.is_empty())
            || !(state.settled_nanos.len() == n || state.settled_nanos.is_empty())
        {
            return Err(StateError::Shards {
                found: state.senders.len(),
                expected: n,
            });
        }
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
        // Each legacy id matches the events routed where it was kept, as it did then.
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
        for (i, s) in state.senders.iter_mut().enumerate() {
            take(Route::Sender(i), &mut s.window);
        }
        for (i, c) in state.creators.iter_mut().enumerate() {
            take(Route::Creator(i), &mut c.window);
        }
        for (i, s) in state.streams.iter_mut().enumerate() {
            take(Route::Stream(i), &mut s.window);
        }
        let mut senders = state.senders.into_iter();
        for slot in engine.senders.iter() {
            *slot.lock() = senders.next().expect("checked length");
        }
        let mut credited = state.credited.into_iter();
        let mut settled_nanos = state.settled_nanos.into_iter();
        let mut creators = state.creators.into_iter().zip(state.settled);
        for slot in engine.creators.iter() {
            let (mut book, settled) = creators.next().expect("checked length");
            book.settled = settled;
            book.settled_nanos = settled_nanos.next().unwrap_or_default();
            // Formats 1 and 2 did not store credited diamonds: as they were computed then.
            book.credited = credited.next().unwrap_or_else(|| {
                book.creators
                    .iter()
                    .map(|(&c, t)| (c, Credited::of(&engine.economy(), t.coins_received)))
                    .collect()
            });
            *slot.lock() = book;
        }
        let mut streams = state.streams.into_iter();
        for slot in engine.streams.iter() {
            *slot.lock() = streams.next().expect("checked length");
        }
        for (slot, mut window) in engine.ids.iter().zip(state.ids) {
            window.reconfigure(
                engine.config.idempotency_entries_max / n,
                engine.config.id_keep_ms(),
            );
            *slot.lock() = window;
        }
        if unkeyed || engine.legacy_ids_until.0 > 0 {
            // Computed again under this config: a longer horizon keeps the unkeyed ids
            // longer too, and they must be probed as long as they are kept.
            let until = engine.ids.iter().map(|w| w.lock().remembered_until());
            let until = until.max().unwrap_or_default();
            engine.legacy_ids_until = engine.legacy_ids_until.max(until);
        }
        legacy.sort_unstable_by_key(|&(_, stamp, outcome, _)| (stamp, outcome.seq));
        for (id, stamp, outcome, fingerprint) in legacy {
            let hash = engine.id_hash(id);
            engine.ids[engine.id_shard(hash)]
                .lock()
                .remember(hash, fingerprint, outcome, stamp);
        }
        if state.top_k != engine.config.top_k as u64 {
            engine.rebuild_tops();
        }
        engine.next_seq.store(state.last_seq + 1, Ordering::Release);
        Ok(engine)
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
        }
        for book in self.creators.iter() {
            let mut book = book.lock();
            let mut top = TopK::default();
            for (&creator, credited) in &book.credited {
                top.offer(k, creator.0, credited.diamonds);
            }
            book.top = top;
        }
    }

    // ---- reads ------------------------------------------------------------------

    /// The wallet of `user`; `now` decides which month `spent_this_month` counts.
    pub fn wallet(&self, user: UserId, now: Stamp) -> WalletView {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        let w = shard.wallets.get(&user).copied().unwrap_or_default();
        WalletView {
            user,
            coins: w.coins,
            spent_this_month: w.spent_in(now.month_key()),
            monthly_budget_coins: w.budget(),
            region: w.region,
            adult: w.adult,
        }
    }

    /// Recent history of `user`, newest first.
    pub fn history(&self, user: UserId, limit: usize) -> Vec<HistoryEntry> {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .histories
            .get(&user)
            .map(|h| h.iter().rev().take(limit).map(|&l| l.into()).collect())
            .unwrap_or_default()
    }

    pub fn creator(&self, creator: CreatorId) -> CreatorView {
        let (totals, settled_in, credited) = {
            let book = self.creators[shard_of(creator.0, self.mask)].lock();
            let totals = book.creators.get(&creator).copied().unwrap_or_default();
            let credited = book.credited.get(&creator).copied().unwrap_or_default();
            (totals, book.settled_in(creator), credited)
        };
        let mut gifts: Vec<(GiftId, u128)> = Vec::new();
        for shard in self.senders.iter() {
            let shard = shard.lock();
            if let Some(part) = shard.creators.get(&creator) {
                for &(gift, n) in &part.gifts {
                    match gifts.iter_mut().find(|(g, _)| *g == gift) {
                        Some((_, total)) => *total += n,
                        None => gifts.push((gift, n)),
                    }
                }
            }
        }
        gifts.sort_unstable();
        CreatorView {
            creator,
            diamonds_total: credited.diamonds,
            diamonds_available: totals.diamonds_available(credited.diamonds, settled_in),
            diamonds_settled_in: settled_in,
            diamond_fraction: credited.fraction(),
            coins_received: totals.coins_received,
            gifts,
        }
    }

    /// The read model at a consistent cut (does not take the log).
    pub fn read_model_view(&self, parts: ViewParts) -> ReadModelView {
        let cut = self.lock_all();
        read_model_view(
            self.last_seq(),
            cut.senders.iter().map(|g| &**g),
            cut.creators.iter().map(|g| &**g),
            cut.streams.iter().map(|g| &**g),
            parts,
        )
    }

    /// The diamonds credited here, exactly, to every creator `select` picks (a cluster
    /// node's creators owned by other nodes: what it reports to them as settlements).
    pub fn creators_credited(
        &self,
        select: impl Fn(CreatorId) -> bool,
    ) -> Vec<(CreatorId, Credited)> {
        let mut out = Vec::new();
        for book in self.creators.iter() {
            let book = book.lock();
            out.extend(
                book.credited
                    .iter()
                    .filter(|(c, _)| select(**c))
                    .map(|(&c, credited)| (c, *credited)),
            );
        }
        out
    }

    /// Coins `user` gave `creator` in total.
    pub fn creator_gifter_coins(&self, creator: CreatorId, user: UserId) -> u128 {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .creator_gifters
            .get(&(creator, user))
            .map_or(0, |c| c.get())
    }

    /// Coins `user` gave in `stream` in total.
    pub fn stream_gifter_coins(&self, stream: StreamId, user: UserId) -> u128 {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .stream_gifters
            .get(&(stream, user))
            .map_or(0, |c| c.get())
    }

    /// Top gifters of a creator: `(user, coins)`, best first.
    pub fn creator_top_gifters(&self, creator: CreatorId, limit: usize) -> Vec<(UserId, u128)> {
        self.top_gifters(limit, |s| {
            s.creators.get(&creator).map(|p| p.top.entries().to_vec())
        })
    }

    /// Merges the shards' top-K lists picked by `part` (each gifter is in one shard).
    fn top_gifters(
        &self,
        limit: usize,
        part: impl Fn(&SenderShard) -> Option<Vec<(u64, u64)>>,
    ) -> Vec<(UserId, u128)> {
        let parts: Vec<Vec<(u64, u64)>> = self
            .senders
            .iter()
            .filter_map(|s| part(&s.lock()))
            .collect();
        topk::merge_entries(parts.iter().map(|p| &p[..]), limit.min(self.config.top_k))
            .into_iter()
            .map(|(coins, user)| (UserId(user), coins))
            .collect()
    }

    pub fn stream(&self, stream: StreamId) -> StreamView {
        let totals = self.streams[shard_of(stream.0, self.mask)]
            .lock()
            .streams
            .get(&stream)
            .copied()
            .unwrap_or_default();
        StreamView {
            stream,
            creator: totals.creator,
            coins_received: totals.coins_received,
            goal: totals
                .goal_set
                .then_some((totals.coins_target, totals.coins_received)),
        }
    }

    /// Top gifters in a stream: `(user, coins)`, best first.
    pub fn stream_top_gifters(&self, stream: StreamId, limit: usize) -> Vec<(UserId, u128)> {
        self.top_gifters(limit, |s| {
            s.streams.get(&stream).map(|p| p.top.entries().to_vec())
        })
    }

    /// Top creators by diamonds credited: `(creator, diamonds)`, best first.
    pub fn top_creators(&self, limit: usize) -> Vec<(CreatorId, u128)> {
        let parts: Vec<TopK> = self.creators.iter().map(|c| c.lock().top.clone()).collect();
        TopK::merge(&parts, limit.min(self.config.top_k))
            .into_iter()
            .map(|(diamonds, creator)| (CreatorId(creator), diamonds))
            .collect()
    }

    /// Checks the ledger's invariants at a consistent cut (SPEC §2.5):
    /// coins recharged = coins in wallets + coins spent; coins spent = coins received by
    /// creators = coins received by streams; per creator diamonds credited <= coins
    /// received (floor(coins received x share) under one share) and paid <= credited;
    /// per-gifter aggregates sum to the book totals; top-K lists equal the top of the
    /// aggregates.
    pub fn audit(&self) -> AuditReport {
        let cut = self.lock_all();
        let mut report = AuditReport::default();
        let mut v = Vec::new();
        let t = &mut report.totals;
        t.last_seq = self.last_seq();
        let mut revenue = std::collections::BTreeMap::<Currency, Decimal>::new();
        let mut creator_parts = std::collections::HashMap::<CreatorId, u128>::new();
        let mut stream_parts = std::collections::HashMap::<StreamId, u128>::new();
        for (i, s) in cut.senders.iter().enumerate() {
            t.wallets += s.wallets.len() as u64;
            t.coins_recharged += s.totals.coins_recharged;
            t.coins_spent += s.totals.coins_spent;
            t.coins_in_wallets += s
                .wallets
                .values()
                .map(|w| u128::from(w.coins))
                .sum::<u128>();
            for (c, amount) in &s.totals.revenue {
                *revenue.entry(*c).or_default() += *amount;
            }
            if !s.touched_creators.is_empty() || !s.touched_streams.is_empty() {
                v.push(format!("sender shard {i} has unmerged credits at a cut"));
            }
            let mut tops = std::collections::HashMap::<CreatorId, TopK<u64>>::new();
            for (&(creator, user), &coins) in &s.creator_gifters {
                *creator_parts.entry(creator).or_default() += coins.get();
                tops.entry(creator)
                    .or_default()
                    .offer(self.config.top_k, user.0, coins.0);
            }
            for (creator, part) in &s.creators {
                if tops.get(creator).map_or(&[][..], |t| t.entries()) != part.top.ranked() {
                    v.push(format!(
                        "creator {creator}: top gifters in shard {i} differ from its gifter totals"
                    ));
                }
            }
            for (&(stream, _), &coins) in &s.stream_gifters {
                *stream_parts.entry(stream).or_default() += coins.get();
            }
        }
        let mut top_check = Vec::new();
        for c in cut.creators.iter() {
            t.creators += c.creators.len() as u64;
            for &creator in c.settled.keys() {
                t.diamonds_settled_in += c.settled_in(creator);
            }
            for (creator, totals) in &c.creators {
                t.coins_received_by_creators += totals.coins_received;
                let credited = c.credited(*creator);
                t.diamonds_credited += credited;
                // creator_share is at most 1, whatever economies were in force.
                if credited > totals.coins_received {
                    v.push(format!(
                        "creator {creator}: {credited} diamonds credited for {} coins",
                        totals.coins_received
                    ));
                }
                t.diamonds_paid += totals.diamonds_paid;
                let settled_in = c.settled_in(*creator);
                if totals.diamonds_paid > credited + settled_in {
                    v.push(format!(
                        "creator {creator}: paid {} > credited {credited} + settled in {settled_in}",
                        totals.diamonds_paid
                    ));
                }
                if creator_parts.get(creator).copied().unwrap_or(0) != totals.coins_received {
                    v.push(format!(
                        "creator {creator}: gifter totals do not sum to coins received"
                    ));
                }
                // A creator paid out only diamonds settled in from other nodes was never
                // credited here, so it is not ranked here.
                if totals.coins_received > 0 {
                    top_check.push((credited, creator.0));
                }
            }
            for (cur, amount) in &c.paid_value {
                t.paid_out.push((*cur, *amount));
            }
        }
        top_check.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        top_check.truncate(self.config.top_k);
        let parts: Vec<TopK> = cut.creators.iter().map(|c| c.top.clone()).collect();
        if TopK::merge(&parts, self.config.top_k) != top_check {
            v.push("top creators differ from creator totals".to_owned());
        }
        for s in cut.streams.iter() {
            t.streams += s.streams.len() as u64;
            for (stream, totals) in &s.streams {
                t.coins_received_by_streams += totals.coins_received;
                if stream_parts.get(stream).copied().unwrap_or(0) != totals.coins_received {
                    v.push(format!(
                        "stream {stream}: gifter totals do not sum to coins received"
                    ));
                }
            }
        }
        drop(cut);
        t.revenue = revenue.into_iter().collect();
        if t.coins_recharged != t.coins_in_wallets + t.coins_spent {
            v.push(format!(
                "coins recharged {} != in wallets {} + spent {}",
                t.coins_recharged, t.coins_in_wallets, t.coins_spent
            ));
        }
        if t.coins_spent != t.coins_received_by_creators {
            v.push(format!(
                "coins spent {} != received by creators {}",
                t.coins_spent, t.coins_received_by_creators
            ));
        }
        if t.coins_spent != t.coins_received_by_streams {
            v.push(format!(
                "coins spent {} != received by streams {}",
                t.coins_spent, t.coins_received_by_streams
            ));
        }
        report.violations = v;
        report
    }

    /// The state held for routing keys `owns` rejects: wallets of other users, payouts
    /// or settlement reports of other creators, goals of streams whose creator is
    /// another's. A cluster node checks its recovered ledger with its partition map:
    /// anything found means the state is another ledger's (a snapshot directory copied
    /// to the wrong node) or the map changed under the ledger.
    pub fn foreign(&self, owns: impl Fn(u64) -> bool) -> Foreign {
        let mut found = Foreign::default();
        let mut note = |what: String| {
            found.example.get_or_insert(what);
        };
        for shard in self.senders.iter() {
            for user in shard.lock().wallets.keys().filter(|u| !owns(u.0)) {
                found.wallets += 1;
                note(format!("the wallet of user {user}"));
            }
        }
        for shard in self.creators.iter() {
            let shard = shard.lock();
            let paid = shard
                .creators
                .iter()
                .filter(|(_, t)| t.diamonds_paid > 0)
                .map(|(c, _)| *c);
            let mut creators: Vec<CreatorId> = paid.chain(shard.settled.keys().copied()).collect();
            creators.sort_unstable();
            creators.dedup();
            for creator in creators.into_iter().filter(|c| !owns(c.0)) {
                found.creators += 1;
                note(format!("the payouts of creator {creator}"));
            }
        }
        for shard in self.streams.iter() {
            for (stream, totals) in shard.lock().streams.iter() {
                if let (true, Some(creator)) = (totals.goal_set, totals.creator)
                    && !owns(creator.0)
                {
                    found.goals += 1;
                    note(format!("the goal of stream {stream} (creator {creator})"));
                }
            }
        }
        found
    }

    /// A fingerprint of the whole ledger state at a consistent cut, for replay checks:
    /// equal states give equal fingerprints. (Debug-formats sorted state; for tests and
    /// the audit, not for hot paths.)
    pub fn state_fingerprint(&self) -> String {
        use std::fmt::Write;
        let cut = self.lock_all();
        let mut out = String::new();
        let _ = writeln!(out, "seq {}", self.last_seq());
        for (i, s) in cut.senders.iter().enumerate() {
            let mut wallets: Vec<_> = s.wallets.iter().collect();
            wallets.sort_unstable_by_key(|(u, _)| **u);
            let mut hist: Vec<_> = s.histories.iter().collect();
            hist.sort_unstable_by_key(|(u, _)| **u);
            let mut creators: Vec<_> = s
                .creators
                .iter()
                .map(|(c, p)| (c, &p.gifts, p.top.ranked(), p.pending_coins))
                .collect();
            creators.sort_unstable_by_key(|e| *e.0);
            let mut streams: Vec<_> = s
                .streams
                .iter()
                .map(|(st, p)| (st, p.top.ranked(), p.pending_coins))
                .collect();
            streams.sort_unstable_by_key(|e| *e.0);
            let mut creator_gifters: Vec<_> = s.creator_gifters.iter().collect();
            creator_gifters.sort_unstable();
            let mut stream_gifters: Vec<_> = s.stream_gifters.iter().collect();
            stream_gifters.sort_unstable();
            let _ = writeln!(
                out,
                "sender {i}: {wallets:?} {hist:?} {creators:?} {streams:?} {creator_gifters:?} {stream_gifters:?} {:?}",
                s.totals
            );
        }
        for (i, c) in cut.creators.iter().enumerate() {
            let mut creators: Vec<_> = c.creators.iter().collect();
            creators.sort_unstable_by_key(|(id, _)| **id);
            let mut settled: Vec<_> = c.settled.iter().collect();
            settled.sort_unstable_by_key(|(id, _)| **id);
            let mut credited: Vec<_> = c.credited.iter().collect();
            credited.sort_unstable_by_key(|(id, _)| **id);
            let mut fractions: Vec<_> = c.settled_nanos.iter().collect();
            fractions.sort_unstable_by_key(|(id, _)| **id);
            let _ = writeln!(
                out,
                "creator {i}: {creators:?} {credited:?} {:?} {:?} {settled:?} {fractions:?}",
                c.top, c.paid_value
            );
        }
        for (i, s) in cut.streams.iter().enumerate() {
            let mut streams: Vec<_> = s.streams.iter().collect();
            streams.sort_unstable_by_key(|(id, _)| **id);
            let _ = writeln!(out, "stream {i}: {streams:?}");
        }
        // The ids remembered at the newest stamp: the same set whatever order concurrent
        // chunks inserted them in (a replay inserts them in sequence order).
        // (Across shards: which id shard holds an id depends on the ledger's secret.)
        let newest = cut.ids.iter().map(|w| w.newest()).max().unwrap_or_default();
        let mut ids: Vec<_> = cut.ids.iter().flat_map(|w| w.canonical(newest)).collect();
        ids.sort_unstable_by_key(|&(check, number, outcome)| (outcome.seq, check, number));
        let _ = writeln!(out, "ids: {ids:?}");
        out
    }
}

/// Sender runs at least this long are replayed on two threads.
const REPLAY_PARALLEL_EVENTS_MIN: usize = 4096;

fn check_replayed(entry: &LogEntry, replayed: &Outcome) -> Result<(), ReplayError> {
    if replayed.status != entry.outcome.status || replayed.duplicate {
        return Err(ReplayError::Mismatch {
            seq: entry.seq,
            event: entry.event.id(),
            recorded: entry.outcome.status,
            replayed: replayed.status,
        });
    }
    Ok(())
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
}

/// A state as snapshot format 5 encoded it (40-bit id checks), decoded with the two
/// fields format 6 appended given as absent.
pub type EngineStateV5 = EngineState<IdWindowV5>;

impl From<EngineStateV5> for EngineState {
    fn from(v5: EngineStateV5) -> Self {
        EngineState {
            last_seq: v5.last_seq,
            senders: v5.senders,
            creators: v5.creators,
            streams: v5.streams,
            settled: v5.settled,
            ids: v5.ids.into_iter().map(IdWindow::from).collect(),
            credited: v5.credited,
            top_k: v5.top_k,
            economy: v5.economy,
            settled_nanos: v5.settled_nanos,
            id_secret: v5.id_secret,
            legacy_ids_until: v5.legacy_ids_until,
        }
    }
}

/// A state as snapshot format 4 encoded it (the ids whole).
#[derive(Deserialize)]
pub(crate) struct EngineStateV4 {
    last_seq: u64,
    senders: Vec<SenderShard>,
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
            senders: v4.senders,
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
        }
    }
}

/// A state as snapshot format 3 encoded it (no economy).
#[derive(Deserialize)]
pub(crate) struct EngineStateV3 {
    last_seq: u64,
    senders: Vec<SenderShard>,
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
            senders: v3.senders,
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
        }
    }
}

/// A state as snapshot format 2 encoded it (the ids in the shards' windows).
#[derive(Deserialize)]
pub(crate) struct EngineStateV2 {
    last_seq: u64,
    senders: Vec<SenderShard>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
    settled: Vec<Settled>,
}

impl From<EngineStateV2> for EngineState {
    fn from(v2: EngineStateV2) -> Self {
        EngineState {
            last_seq: v2.last_seq,
            senders: v2.senders,
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
        }
    }
}

/// A state as snapshot format 1 encoded it (no settlements).
#[derive(Deserialize)]
pub(crate) struct EngineStateV1 {
    last_seq: u64,
    senders: Vec<SenderShard>,
    creators: Vec<CreatorShard>,
    streams: Vec<StreamShard>,
}

impl From<EngineStateV1> for EngineState {
    fn from(v1: EngineStateV1) -> Self {
        EngineState {
            last_seq: v1.last_seq,
            settled: vec![Settled::default(); v1.creators.len()],
            senders: v1.senders,
            creators: v1.creators,
            streams: v1.streams,
            ids: Vec::new(),
            credited: Vec::new(),
            top_k: 0,
            economy: Vec::new(),
            settled_nanos: Vec::new(),
            id_secret: None,
            legacy_ids_until: Stamp(0),
        }
    }
}

impl EngineState {
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
        }
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
}

impl StateView<'_> {
    pub fn last_seq(&self) -> u64 {
        self.last_seq
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

/// Which parts of [`ReadModelView`] to fill.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViewParts {
    /// The top `tops` gifters of every creator and stream (0: none); the read model
    /// keeps `engine.top_k`.
    pub tops: usize,
    pub wallets: bool,
}

/// A stream's book as the read model shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamBook {
    pub creator: Option<CreatorId>,
    pub coins_received: u128,
    /// The goal's coin target, if one was set.
    pub goal: Option<u64>,
}

/// Everything the Redis read model projects, at a consistent cut: the creator and
/// stream books, and (with [`ViewParts`]) their top gifters and every wallet balance.
#[derive(Debug, Clone, Default)]
pub struct ReadModelView {
    pub last_seq: u64,
    /// [`ViewParts::tops`]: how many top gifters per creator and stream it holds.
    pub tops: usize,
    /// `(creator, coins received, diamonds paid, diamonds credited)`.
    pub creators: Vec<(CreatorId, u128, u128, Credited)>,
    pub streams: Vec<(StreamId, StreamBook)>,
    /// `(creator, gifter, coins)` for each creator's top [`ViewParts::tops`] gifters.
    pub creator_gifters: Vec<(CreatorId, UserId, u128)>,
    /// `(stream, gifter, coins)` for each stream's top [`ViewParts::tops`] gifters.
    pub stream_gifters: Vec<(StreamId, UserId, u128)>,
    /// `(user, coins)` for every wallet.
    pub wallets: Vec<(UserId, u64)>,
}

fn read_model_view<'a>(
    last_seq: u64,
    senders: impl Iterator<Item = &'a SenderShard>,
    creators: impl Iterator<Item = &'a CreatorShard>,
    streams: impl Iterator<Item = &'a StreamShard>,
    parts: ViewParts,
) -> ReadModelView {
    let mut view = ReadModelView {
        last_seq,
        tops: parts.tops,
        ..Default::default()
    };
    let mut creator_tops: FxHashMap<CreatorId, Vec<&[(u64, u64)]>> = FxHashMap::default();
    let mut stream_tops: FxHashMap<StreamId, Vec<&[(u64, u64)]>> = FxHashMap::default();
    for s in senders {
        if parts.tops > 0 {
            for (&c, part) in &s.creators {
                creator_tops.entry(c).or_default().push(part.top.entries());
            }
            for (&st, part) in &s.streams {
                stream_tops.entry(st).or_default().push(part.top.entries());
            }
        }
        if parts.wallets {
            view.wallets
                .extend(s.wallets.iter().map(|(&u, w)| (u, w.coins)));
        }
    }
    for (c, lists) in creator_tops {
        view.creator_gifters.extend(
            topk::merge_entries(lists, parts.tops)
                .into_iter()
                .map(|(coins, u)| (c, UserId(u), coins)),
        );
    }
    for (st, lists) in stream_tops {
        view.stream_gifters.extend(
            topk::merge_entries(lists, parts.tops)
                .into_iter()
                .map(|(coins, u)| (st, UserId(u), coins)),
        );
    }
    for c in creators {
        view.creators.extend(c.creators.iter().map(|(&id, t)| {
            let credited = c.credited.get(&id).copied().unwrap_or_default();
            (id, t.coins_received, t.diamonds_paid, credited)
        }));
    }
    for s in streams {
        view.streams.extend(s.streams.iter().map(|(&id, t)| {
            (
                id,
                StreamBook {
                    creator: t.creator,
                    coins_received: t.coins_received,
                    goal: t.goal_set.then_some(t.coins_target),
                },
            )
        }));
    }
    view
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

/// Every shard locked, in the documented order.
struct Cut<'a> {
    /// The economy in force: no change (nor payout) while the cut is held.
    economy: parking_lot::RwLockReadGuard<'a, Arc<Economy>>,
    meta_log: MutexGuard<'a, Vec<LogEntry>>,
    senders: Vec<MutexGuard<'a, SenderShard>>,
    creators: Vec<MutexGuard<'a, CreatorShard>>,
    streams: Vec<MutexGuard<'a, StreamShard>>,
    ids: Vec<MutexGuard<'a, IdWindow>>,
}

impl Cut<'_> {
    /// The economy in force as a snapshot records it (empty: version 0, not recorded).
    fn economy_bytes(&self) -> Vec<u8> {
        if self.economy.version == 0 {
            Vec::new()
        } else {
            self.economy.to_doc().to_bytes()
        }
    }

    /// Moves every shard's log out (unsorted; sort by seq after releasing the locks).
    /// Sized up front: this runs with every shard locked, and growing it by doubling
    /// copied the entries several times while the locks were held.
    fn take_log(&mut self) -> Vec<LogEntry> {
        let len = self.meta_log.len()
            + self.senders.iter().map(|s| s.log.len()).sum::<usize>()
            + self.creators.iter().map(|c| c.log.len()).sum::<usize>()
            + self.streams.iter().map(|s| s.log.len()).sum::<usize>();
        let mut log = Vec::with_capacity(len);
        log.append(&mut self.meta_log);
        for s in self.senders.iter_mut() {
            log.append(&mut s.log);
        }
        for c in self.creators.iter_mut() {
            log.append(&mut c.log);
        }
        for s in self.streams.iter_mut() {
            log.append(&mut s.log);
        }
        log
    }
}
