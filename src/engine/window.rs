//! The idempotency index: every remembered event id, a check of its content and its
//! recorded outcome, in 20 bytes. One [`IdWindow`] per id shard (ids are spread by their
//! own hash, not by user), so an id is one key across users, event types and shards.
//!
//! # The retry horizon
//! An id is remembered while it is younger than the horizon (`engine.idempotency_horizon_ms`)
//! relative to the stamp of the event being checked, and is never dropped earlier: when a
//! window holds `entries_max` ids younger than the horizon, a new id is refused
//! ([`Claim::Full`], answered `UNAVAILABLE`), not admitted by forgetting an old one.
//! Time is kept per *epoch*: stamps are grouped in epochs of `horizon / 64` (at least
//! 1 ms), and an id counts as stamped at the end of its epoch — so it is kept up to one
//! epoch longer than the horizon, never shorter. Whether an id counts as remembered
//! depends only on the two journaled stamps, so a replay answers every id exactly as the
//! live run did, whatever order the shards' inserts interleaved in.
//!
//! # The layout (20 bytes an id)
//! A bucketed cuckoo table: every id has two candidate buckets of four 20-byte entries,
//! both derived from its key; an insert into two full buckets moves an entry to its
//! other bucket (a bounded random walk), and what still finds no room goes to a small
//! stash (a hash map: bounded by the live bound, not refused on its own), so nothing
//! remembered is ever dropped for want of a slot. The table is sized
//! for `entries_max` live ids at 94 % of its slots. An entry is:
//!
//! | bits | field |
//! |---|---|
//! | 56 | key: 56 bits of the id's keyed hash ([`IdHash`]; never 0: 0 is empty) |
//! | 32 | check: a hash of the content's 64-bit fingerprint |
//! | 8 | epoch tag: the epoch number mod 256 (the epoch table holds the number) |
//! | 3 | kind: coins, stored, settled, rejected, wide, pending |
//! | 29 | the sequence number, less its epoch's base |
//! | 32 | the effect's number (a balance, a credit, a reject code) |
//!
//! An outcome that does not fit (a payout, a balance of 2^32 coins or more, a sequence
//! number 2^29 or more from its epoch's base) is kept whole in a side map, by key.
//!
//! # What a hash costs
//! The key decides the buckets, so a new id whose 56-bit key equals a remembered one's is
//! always compared with it: (ids held) / 2^56 a new event. It is then refused
//! `EVENT_ID_REUSED` (its check differs), unless its content is the same (then it is
//! answered as the other's duplicate). The hash is keyed by the ledger's secret, so such
//! ids cannot be crafted. Other content under a remembered id goes unnoticed only if the
//! checks match: 2^-32 a reuse (the key has the bits: a fresh event refused by chance
//! costs a paying user, a reuse is a client's bug). Snapshots of format 5 held 48-bit
//! keys and 40-bit checks: their checks are narrowed to today's 32 on load.
//!
//! Epoch tags are reused every 256 epochs; ids of a dead epoch are swept a few slots per
//! claim, and a tag still holding dead ids when it comes round again is purged first.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::event::{Effect, EventFingerprint, EventId, Outcome, RejectCode, Stamp, Status};
use super::idhash::{IdHash, mix};

/// What [`IdWindow::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Not remembered: now claimed (pending) for this event; settle it with its outcome.
    Fresh,
    /// The same content was seen: its outcome, or `None` while it is still being applied
    /// (an earlier event of the same chunk).
    Retry(Option<Outcome>),
    /// The id is remembered with other content.
    Reused,
    /// The window holds `entries_max` ids younger than the horizon.
    Full,
    /// Not remembered, but ids as old as the event may be were dropped already: it may be
    /// a retry of one of them.
    Forgotten,
}

/// Entries a bucket holds.
const SLOTS: usize = 4;
/// 32-bit words an entry takes.
const WORDS: usize = 5;
/// Live ids the table is sized for, as a share of its slots (in thousandths).
const LOAD_PERMILLE: usize = 940;
/// Moves an insert may make before its entry goes to the stash.
const KICKS_MAX: usize = 500;
/// Slots swept for dead ids per claim.
const SWEEP_SLOTS: usize = 4;
/// Epoch tags: the epoch number mod this.
const TAGS: usize = 256;
/// Epochs a horizon spans (at least): `epoch_ms = horizon / EPOCHS_PER_HORIZON`.
const EPOCHS_PER_HORIZON: u64 = 64;

const KEY_BITS: u32 = super::idhash::KEY_BITS;
const CHECK_BITS: u32 = 32;
/// The check's width in snapshots of format 5.
const CHECK_BITS_V5: u32 = 40;
const SEQ_BITS: u32 = 29;
const KEY_MASK: u128 = (1 << KEY_BITS) - 1;
const CHECK_SHIFT: u32 = KEY_BITS;
const CHECK_MASK: u128 = (1 << CHECK_BITS) - 1;
const TAG_SHIFT: u32 = CHECK_SHIFT + CHECK_BITS;
const KIND_SHIFT: u32 = TAG_SHIFT + 8;
const SEQ_SHIFT: u32 = KIND_SHIFT + 3;
const SEQ_SPAN: u64 = 1 << SEQ_BITS;

const COINS: u32 = 0;
const STORED: u32 = 1;
const SETTLED: u32 = 2;
const REJECTED: u32 = 3;
const WIDE: u32 = 4;
const PENDING: u32 = 5;

/// The epoch length of a window keeping ids `horizon_ms`.
pub(crate) fn epoch_ms(horizon_ms: u64) -> u64 {
    (horizon_ms / EPOCHS_PER_HORIZON).max(1)
}

/// The check of a content fingerprint: 32 bits.
fn check_of(fingerprint: EventFingerprint) -> u64 {
    mix(fingerprint.0 ^ 0x243F_6A88_85A3_08D3) >> (64 - CHECK_BITS)
}

/// Whether an entry with `check` is the event with `fingerprint`, routed to `route` (an
/// id from a snapshot of format 2 or older matches any content routed where it was).
fn matches(check: u64, fingerprint: EventFingerprint, route: u32) -> bool {
    check == check_of(fingerprint) || check == check_of(EventFingerprint::legacy(route))
}

/// One remembered id (see the module doc for the bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    bits: u128,
    value: u32,
}

impl Entry {
    const EMPTY: Entry = Entry { bits: 0, value: 0 };

    fn new(key: u64, check: u64, tag: usize, kind: u32, seq_delta: u64, value: u32) -> Entry {
        debug_assert!(key != 0 && u128::from(key) <= KEY_MASK);
        debug_assert!(u128::from(check) <= CHECK_MASK && tag < TAGS && seq_delta < SEQ_SPAN);
        Entry {
            bits: u128::from(key)
                | u128::from(check) << CHECK_SHIFT
                | (tag as u128) << TAG_SHIFT
                | u128::from(kind) << KIND_SHIFT
                | u128::from(seq_delta) << SEQ_SHIFT,
            value,
        }
    }

    fn is_empty(self) -> bool {
        self.key() == 0
    }

    fn key(self) -> u64 {
        (self.bits & KEY_MASK) as u64
    }

    fn check(self) -> u64 {
        (self.bits >> CHECK_SHIFT & CHECK_MASK) as u64
    }

    fn tag(self) -> usize {
        (self.bits >> TAG_SHIFT & 0xFF) as usize
    }

    fn kind(self) -> u32 {
        (self.bits >> KIND_SHIFT & 0b111) as u32
    }

    fn seq_delta(self) -> u64 {
        (self.bits >> SEQ_SHIFT) as u64
    }

    fn pending(self) -> bool {
        self.kind() == PENDING
    }

    /// The same id with another kind, sequence offset and value.
    fn with(self, kind: u32, seq_delta: u64, value: u32) -> Entry {
        Entry::new(self.key(), self.check(), self.tag(), kind, seq_delta, value)
    }
}

/// An epoch a tag stands for, and how many entries carry the tag.
#[derive(Debug, Clone, Copy, Default)]
struct Epoch {
    number: u64,
    entries: usize,
    /// The sequence number entries of this epoch count from (`None`: none settled yet).
    base_seq: Option<u64>,
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Slot(usize),
    Stash,
}

/// One id shard's remembered ids.
#[derive(Debug, Clone)]
pub struct IdWindow {
    /// `buckets × SLOTS × WORDS` words.
    table: Vec<u32>,
    buckets: usize,
    /// Entries no slot could be found for, by key: few.
    stash: FxHashMap<u64, Entry>,
    /// The outcomes that do not pack, by key: few.
    wide: FxHashMap<u64, Outcome>,
    epochs: Box<[Epoch; TAGS]>,
    /// Entries of epochs not yet dead (pending ones included).
    live: usize,
    entries_max: usize,
    /// How long an id is kept after its stamp.
    horizon_ms: u64,
    epoch_ms: u64,
    /// The newest stamp seen: epochs older than `dead_before` are past the horizon at it.
    newest: Stamp,
    dead_before: u64,
    /// The newest stamp an id this window has dropped may have had: an event that may be
    /// a retry of one at least this old is refused, not taken as new (see
    /// [`IdWindow::claim`]).
    forgot_through: Stamp,
    /// The next slot the sweep looks at.
    sweep: usize,
    /// The random walk's state (xorshift).
    walk: u64,
}

impl IdWindow {
    pub(crate) fn new(entries_max: usize, horizon_ms: u64) -> Self {
        let buckets = (entries_max.saturating_mul(1000) / LOAD_PERMILLE)
            .div_ceil(SLOTS)
            .max(1);
        Self {
            // Zeroed pages come from the allocator untouched: memory grows as ids arrive.
            table: vec![0u32; buckets * SLOTS * WORDS],
            buckets,
            stash: FxHashMap::default(),
            wide: FxHashMap::default(),
            epochs: Box::new([Epoch::default(); TAGS]),
            live: 0,
            entries_max,
            horizon_ms,
            epoch_ms: epoch_ms(horizon_ms),
            newest: Stamp(0),
            dead_before: 0,
            forgot_through: Stamp(0),
            sweep: 0,
            walk: 0x2545_F491_4F6C_DD1D,
        }
    }

    // --- time ---

    fn epoch_of(&self, stamp: Stamp) -> u64 {
        stamp.0 / self.epoch_ms
    }

    /// The last stamp of epoch `number`: every id of it counts as stamped then.
    fn end_of(&self, number: u64) -> Stamp {
        Stamp(
            number
                .saturating_add(1)
                .saturating_mul(self.epoch_ms)
                .saturating_sub(1),
        )
    }

    /// The first epoch not past the horizon at `stamp`.
    fn first_live_at(&self, stamp: Stamp) -> u64 {
        match stamp.0.checked_sub(self.horizon_ms) {
            None | Some(0) => 0,
            Some(oldest) => (oldest + 1).div_ceil(self.epoch_ms) - 1,
        }
    }

    /// Whether epoch `number` is past the horizon at the newest stamp (its ids dropped).
    fn dead(&self, number: u64) -> bool {
        number < self.dead_before
    }

    /// Whether `entry` is remembered at `stamp` (a pending one always is).
    fn live_at(&self, entry: Entry, stamp: Stamp) -> bool {
        let number = self.epochs[entry.tag()].number;
        entry.pending()
            || (!self.dead(number)
                && self.end_of(number).0.saturating_add(self.horizon_ms) >= stamp.0)
    }

    /// Takes `stamp` as seen: epochs past the horizon at it die, and their ids count as
    /// dropped.
    fn advance(&mut self, stamp: Stamp) {
        if stamp <= self.newest {
            return;
        }
        self.newest = stamp;
        let first = self.first_live_at(stamp);
        if first <= self.dead_before {
            return;
        }
        let (old, new) = (self.dead_before, first);
        self.dead_before = new;
        for t in 0..TAGS {
            let e = self.epochs[t];
            if e.entries > 0 && (old..new).contains(&e.number) {
                self.live -= e.entries;
                self.forgot_through = self.forgot_through.max(self.end_of(e.number));
            }
        }
    }

    /// The live count and `forgot_through` as they would be at `stamp` (time moves
    /// only with recorded outcomes: a claim does not move it).
    fn at(&self, stamp: Stamp) -> (usize, Stamp) {
        let first = self.first_live_at(stamp);
        let (mut live, mut forgot) = (self.live, self.forgot_through);
        if first > self.dead_before {
            for e in self.epochs.iter() {
                if e.entries > 0 && (self.dead_before..first).contains(&e.number) {
                    live -= e.entries;
                    forgot = forgot.max(self.end_of(e.number));
                }
            }
        }
        (live, forgot)
    }

    /// The tag for epoch `number`, made ready for a new entry; `None` when a live epoch
    /// holds it (`number` is 256 epochs or more before it, so long dead).
    fn tag_for(&mut self, number: u64) -> Option<usize> {
        let t = (number % TAGS as u64) as usize;
        let e = self.epochs[t];
        if e.number == number && e.entries > 0 {
            return Some(t);
        }
        if e.entries > 0 {
            if !self.dead(e.number) {
                return None;
            }
            self.purge(t);
            if self.epochs[t].entries > 0 {
                return None;
            }
        }
        if self.epochs[t].number != number {
            self.epochs[t] = Epoch {
                number,
                entries: 0,
                base_seq: None,
            };
        }
        Some(t)
    }

    // --- slots ---

    fn load(&self, slot: usize) -> Entry {
        let w = &self.table[slot * WORDS..slot * WORDS + WORDS];
        Entry {
            bits: u128::from(w[0])
                | u128::from(w[1]) << 32
                | u128::from(w[2]) << 64
                | u128::from(w[3]) << 96,
            value: w[4],
        }
    }

    fn store(&mut self, slot: usize, entry: Entry) {
        let w = &mut self.table[slot * WORDS..slot * WORDS + WORDS];
        w[0] = entry.bits as u32;
        w[1] = (entry.bits >> 32) as u32;
        w[2] = (entry.bits >> 64) as u32;
        w[3] = (entry.bits >> 96) as u32;
        w[4] = entry.value;
    }

    fn get_at(&self, loc: Loc, key: u64) -> Entry {
        match loc {
            Loc::Slot(s) => self.load(s),
            Loc::Stash => self.stash.get(&key).copied().unwrap_or(Entry::EMPTY),
        }
    }

    fn set_at(&mut self, loc: Loc, entry: Entry) {
        match loc {
            Loc::Slot(s) => self.store(s, entry),
            Loc::Stash => {
                self.stash.insert(entry.key(), entry);
            }
        }
    }

    /// The two buckets `key` may be in (the same one in a one-bucket table).
    fn buckets_of(&self, key: u64) -> [usize; 2] {
        let h = mix(key ^ 0xB7E1_5162_8AED_2A6A);
        let n = self.buckets as u64;
        let first = (((h & 0xFFFF_FFFF) * n) >> 32) as usize;
        let second = (((h >> 32) * n) >> 32) as usize;
        if second == first {
            [first, (first + 1) % self.buckets]
        } else {
            [first, second]
        }
    }

    fn find(&self, key: u64) -> Option<Loc> {
        for b in self.buckets_of(key) {
            for s in b * SLOTS..b * SLOTS + SLOTS {
                if self.load(s).key() == key {
                    return Some(Loc::Slot(s));
                }
            }
        }
        (!self.stash.is_empty() && self.stash.contains_key(&key)).then_some(Loc::Stash)
    }

    /// Whether a slot may take a new entry: empty, or an id of a dead epoch.
    fn free(&self, slot: usize) -> bool {
        let e = self.load(slot);
        e.is_empty() || (!e.pending() && self.dead(self.epochs[e.tag()].number))
    }

    /// Removes the entry at `loc`, whatever it is.
    fn remove(&mut self, loc: Loc, key: u64) {
        let entry = self.get_at(loc, key);
        if entry.is_empty() {
            return;
        }
        let epoch = &mut self.epochs[entry.tag()];
        epoch.entries -= 1;
        let number = epoch.number;
        if !self.dead(number) {
            self.live -= 1;
        }
        if entry.kind() == WIDE {
            self.wide.remove(&entry.key());
        }
        match loc {
            Loc::Slot(s) => self.store(s, Entry::EMPTY),
            Loc::Stash => {
                self.stash.remove(&key);
            }
        }
    }

    /// Adds `entry` (its tag made ready by [`IdWindow::tag_for`]; its key not held).
    fn insert(&mut self, mut entry: Entry) {
        let epoch = &mut self.epochs[entry.tag()];
        epoch.entries += 1;
        let number = epoch.number;
        if self.dead(number) {
            // Dead on arrival: it counts as dropped at once.
            self.forgot_through = self.forgot_through.max(self.end_of(number));
        } else {
            self.live += 1;
        }
        let [first, second] = self.buckets_of(entry.key());
        if self.place(first, entry) || self.place(second, entry) {
            return;
        }
        // Both full: take a random entry's place; it moves to its other bucket.
        let mut bucket = if self.random() & 1 == 0 {
            first
        } else {
            second
        };
        for _ in 0..KICKS_MAX {
            let s = bucket * SLOTS + (self.random() % SLOTS as u64) as usize;
            let victim = self.load(s);
            self.store(s, entry);
            entry = victim;
            let [a, b] = self.buckets_of(entry.key());
            bucket = if a == bucket { b } else { a };
            if self.place(bucket, entry) {
                return;
            }
        }
        self.stash.insert(entry.key(), entry);
    }

    /// Puts `entry` in a free slot of `bucket`, if it has one.
    fn place(&mut self, bucket: usize, entry: Entry) -> bool {
        for s in bucket * SLOTS..bucket * SLOTS + SLOTS {
            if self.free(s) {
                self.remove(Loc::Slot(s), 0);
                self.store(s, entry);
                return true;
            }
        }
        false
    }

    fn random(&mut self) -> u64 {
        self.walk ^= self.walk << 13;
        self.walk ^= self.walk >> 7;
        self.walk ^= self.walk << 17;
        self.walk
    }

    /// Drops dead ids from every slot and the stash holding tag `t`.
    fn purge(&mut self, t: usize) {
        for s in 0..self.buckets * SLOTS {
            let e = self.load(s);
            if !e.is_empty() && e.tag() == t && self.free(s) {
                self.remove(Loc::Slot(s), 0);
            }
        }
        self.sweep_stash();
    }

    fn sweep_stash(&mut self) {
        let dead: Vec<u64> = self
            .stash
            .values()
            .filter(|e| !e.pending() && self.dead(self.epochs[e.tag()].number))
            .map(|e| e.key())
            .collect();
        for key in dead {
            self.remove(Loc::Stash, key);
        }
    }

    /// Frees a few slots of dead ids (so that tags come round clean).
    fn sweep(&mut self) {
        for _ in 0..SWEEP_SLOTS {
            let s = self.sweep;
            if !self.load(s).is_empty() && self.free(s) {
                self.remove(Loc::Slot(s), 0);
            }
            self.sweep += 1;
            if self.sweep == self.buckets * SLOTS {
                self.sweep = 0;
                self.sweep_stash();
            }
        }
    }

    // --- outcomes ---

    fn outcome(&self, entry: Entry) -> Option<Outcome> {
        let status = match entry.kind() {
            COINS => Status::Accepted(Effect::Coins(u64::from(entry.value))),
            STORED => Status::Accepted(Effect::Stored),
            SETTLED => Status::Accepted(Effect::Settled {
                credited: u64::from(entry.value),
            }),
            REJECTED => Status::Rejected(
                u8::try_from(entry.value)
                    .ok()
                    .and_then(RejectCode::from_u8)
                    .expect("a packed code is a reject code"),
            ),
            WIDE => return self.wide.get(&entry.key()).copied(),
            _ => return None,
        };
        let base = self.epochs[entry.tag()]
            .base_seq
            .expect("a settled epoch has a base");
        Some(Outcome {
            seq: base + entry.seq_delta(),
            status,
            duplicate: false,
        })
    }

    /// Records `outcome` in the entry at `loc` (pending, or replaced in replay).
    fn record(&mut self, loc: Loc, key: u64, outcome: Outcome) {
        let entry = self.get_at(loc, key);
        let epoch = &mut self.epochs[entry.tag()];
        let base = *epoch
            .base_seq
            .get_or_insert(outcome.seq.saturating_sub(SEQ_SPAN / 2));
        let number = epoch.number;
        // Time moves with recorded outcomes only (the start of their epochs), so that a
        // replay of the journal ages ids exactly as the live run did.
        self.advance(Stamp(number.saturating_mul(self.epoch_ms)));
        let value = |v: u64| u32::try_from(v).ok();
        let packed = match outcome.status {
            _ if outcome.duplicate => None,
            _ if outcome.seq < base || outcome.seq - base >= SEQ_SPAN => None,
            Status::Accepted(Effect::Coins(coins)) => value(coins).map(|v| (COINS, v)),
            Status::Accepted(Effect::Stored) => Some((STORED, 0)),
            Status::Accepted(Effect::Settled { credited }) => value(credited).map(|v| (SETTLED, v)),
            Status::Rejected(code) => Some((REJECTED, code as u32)),
            Status::Accepted(Effect::PaidOut { .. }) => None,
        };
        let entry = match packed {
            Some((kind, v)) => {
                if entry.kind() == WIDE {
                    self.wide.remove(&key);
                }
                entry.with(kind, outcome.seq - base, v)
            }
            None => {
                self.wide.insert(key, outcome);
                entry.with(WIDE, 0, 0)
            }
        };
        self.set_at(loc, entry);
    }

    // --- the index ---

    /// The outcome recorded for `id` if it is remembered at `stamp` (pending: `None`).
    #[cfg(test)]
    pub(crate) fn get(&self, id: IdHash, stamp: Stamp) -> Option<Outcome> {
        let key = id.key();
        let entry = self.get_at(self.find(key)?, key);
        if !self.live_at(entry, stamp) {
            return None;
        }
        self.outcome(entry)
    }

    /// The recorded outcome of `id` if it is remembered at `stamp` for this content
    /// (`fingerprint`, routed to `route`); claims nothing.
    pub(crate) fn lookup(
        &self,
        id: IdHash,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
    ) -> Option<Outcome> {
        let key = id.key();
        let entry = self.get_at(self.find(key)?, key);
        if !self.live_at(entry, stamp) || !matches(entry.check(), fingerprint, route) {
            return None;
        }
        self.outcome(entry)
    }

    /// What a claim of `id` would answer from an entry held for it, without claiming:
    /// `Retry` (its outcome) or `Reused`; `None` when it is not remembered at `stamp`.
    pub(crate) fn probe(
        &self,
        id: IdHash,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
    ) -> Option<Claim> {
        let key = id.key();
        let entry = self.get_at(self.find(key)?, key);
        if !self.live_at(entry, stamp) {
            return None;
        }
        Some(if matches(entry.check(), fingerprint, route) {
            Claim::Retry(self.outcome(entry))
        } else {
            Claim::Reused
        })
    }

    /// Looks `id` up for an event with `fingerprint`, routed to `route`, stamped `stamp`,
    /// and claims it when it is not remembered (live ingestion). `since`: the oldest
    /// stamp an earlier attempt of the event can have (its `issued_ms` less the
    /// `ISSUED_AHEAD_MAX_MS` a clock may run ahead, or for an event without one its own
    /// stamp less as much): if ids that old were dropped already, it may be a retry of
    /// one of them and is refused ([`Claim::Forgotten`]), whatever order concurrent
    /// batches' stamps came in.
    pub(crate) fn claim(
        &mut self,
        id: IdHash,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
        since: u64,
    ) -> Claim {
        let key = id.key();
        let held = self.find(key);
        if let Some(loc) = held {
            let entry = self.get_at(loc, key);
            if self.live_at(entry, stamp) {
                return if matches(entry.check(), fingerprint, route) {
                    Claim::Retry(self.outcome(entry))
                } else {
                    Claim::Reused
                };
            }
        }
        let (live, forgot_through) = self.at(stamp);
        if forgot_through.0 != 0 && forgot_through.0 >= since {
            return Claim::Forgotten;
        }
        if live >= self.entries_max {
            return Claim::Full;
        }
        let number = self.epoch_of(stamp);
        if self.dead(number) {
            // Its epoch is past the horizon at a stamp already recorded (a clock behind
            // the journal's, a batch long delayed): the id would be forgotten on arrival,
            // and its retry applied again. Refused, never admitted.
            return Claim::Forgotten;
        }
        if self.first_live_at(stamp) > self.dead_before
            && self.epochs[(number % TAGS as u64) as usize].number < self.first_live_at(stamp)
        {
            // Its tag still holds an epoch dead at this stamp (a long silence): time
            // moves to this epoch now, as recording the outcome would.
            self.advance(Stamp(number.saturating_mul(self.epoch_ms)));
        }
        let Some(tag) = self.tag_for(number) else {
            // Its epoch's tag is held by one 256 epochs younger: a batch that old is
            // refused like one older than an id dropped.
            return Claim::Forgotten;
        };
        if let Some(loc) = held
            && self.get_at(loc, key).key() == key
        {
            // A dead entry of the same id (unless a purge took it): the new one replaces it.
            self.remove(loc, key);
        }
        self.insert(Entry::new(key, check_of(fingerprint), tag, PENDING, 0, 0));
        self.sweep();
        Claim::Fresh
    }

    /// Forgets a claim whose event was not applied after all.
    pub(crate) fn unclaim(&mut self, id: IdHash) {
        let key = id.key();
        if let Some(loc) = self.find(key)
            && self.get_at(loc, key).pending()
        {
            self.remove(loc, key);
        }
    }

    /// Records the outcome of an id claimed by [`IdWindow::claim`].
    pub(crate) fn settle(&mut self, id: IdHash, outcome: Outcome) {
        let key = id.key();
        let loc = self.find(key).expect("a settled id was claimed");
        debug_assert!(self.get_at(loc, key).pending(), "an id is settled once");
        self.record(loc, key, outcome);
    }

    /// Remembers `id` as `outcome`, recorded by the journal (replay, snapshots,
    /// migration): no check, the journal is the truth. Of two entries of one id (reused
    /// after its horizon), the later one in sequence order is kept, whatever order they
    /// come in.
    pub(crate) fn remember(
        &mut self,
        id: IdHash,
        fingerprint: EventFingerprint,
        outcome: Outcome,
        stamp: Stamp,
    ) {
        let number = self.epoch_of(stamp);
        self.put(id.key(), check_of(fingerprint), number, outcome);
    }

    /// [`IdWindow::remember`] by key, check and epoch.
    fn put(&mut self, key: u64, check: u64, number: u64, outcome: Outcome) {
        if let Some(loc) = self.find(key) {
            let held = self.get_at(loc, key);
            if self.outcome(held).is_some_and(|o| o.seq > outcome.seq) {
                return;
            }
            self.remove(loc, key);
        }
        self.advance(Stamp(number.saturating_mul(self.epoch_ms)));
        if self.dead(number) {
            // Past the horizon already: dropped on arrival.
            self.forgot_through = self.forgot_through.max(self.end_of(number));
            return;
        }
        let tag = self
            .tag_for(number)
            .expect("a live epoch's tag is free or its own");
        self.insert(Entry::new(key, check, tag, PENDING, 0, 0));
        let loc = self.find(key).expect("just inserted");
        self.record(loc, key, outcome);
    }

    /// Takes the config's bound and horizon (a restart may change them: a smaller
    /// horizon forgets ids earlier, a smaller bound refuses new ids sooner). The table is
    /// rebuilt when its size or epochs change.
    pub(crate) fn reconfigure(&mut self, entries_max: usize, horizon_ms: u64) {
        if entries_max == self.entries_max && horizon_ms == self.horizon_ms {
            return;
        }
        let mut next = IdWindow::new(entries_max, horizon_ms);
        // A shorter horizon keeps the epochs' length. Refiled into shorter epochs, an id
        // would count as stamped at its old epoch's end: up to one old epoch past the
        // newest stamp, which either moves time ahead of the ids' real stamps or (filed
        // no later than the newest stamp) keeps the newest epoch's ids too briefly. Ids
        // are then kept up to one old epoch longer than the horizon, never shorter.
        next.epoch_ms = next.epoch_ms.max(self.epoch_ms);
        next.forgot_through = self.forgot_through;
        next.advance(self.newest);
        for (key, check, number, outcome) in self.iter() {
            // In the new epochs, the one holding this one's end (kept as long or longer).
            let number = next.epoch_of(self.end_of(number));
            next.put(key, check, number, outcome);
        }
        *self = next;
    }

    /// The last stamp at which an id this window holds now may still be remembered.
    pub(crate) fn remembered_until(&self) -> Stamp {
        let newest = self.end_of(self.epoch_of(self.newest));
        Stamp(newest.0.saturating_add(self.horizon_ms))
    }

    /// Ids held in epochs not past the horizon (pending ones included).
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// The start of the newest epoch an outcome was recorded in: how far time has
    /// moved for this window (the stamp the audit compares remembered ids at).
    pub(crate) fn newest(&self) -> Stamp {
        self.newest
    }

    /// Remembered ids as (key, check, epoch number, outcome), in table order.
    fn iter(&self) -> impl Iterator<Item = (u64, u64, u64, Outcome)> + '_ {
        let slots = (0..self.buckets * SLOTS).map(|s| self.load(s));
        slots
            .chain(self.stash.values().copied())
            .filter(|e| !e.is_empty() && !self.dead(self.epochs[e.tag()].number))
            .map(|e| {
                let outcome = self.outcome(e).expect("no id is pending at a cut");
                (e.key(), e.check(), self.epochs[e.tag()].number, outcome)
            })
    }

    /// The ids remembered at `stamp` as (check, epoch number, outcome), sorted: the same
    /// set whatever order they were inserted in (for comparing a replayed engine with the
    /// live one). Keys are left out: they depend on the ledger's secret, and an outcome's
    /// sequence number names its event.
    pub(crate) fn canonical(&self, stamp: Stamp) -> Vec<(u64, u64, Outcome)> {
        let mut ids: Vec<_> = self
            .iter()
            .filter(|&(_, _, number, _)| {
                self.end_of(number).0.saturating_add(self.horizon_ms) >= stamp.0
            })
            .map(|(_, check, number, outcome)| (check, number, outcome))
            .collect();
        ids.sort_unstable_by_key(|&(check, number, outcome)| (outcome.seq, check, number));
        ids
    }
}

/// The window as snapshots (format 5 on) encode it.
#[derive(Deserialize)]
pub(crate) struct IdWindowRepr {
    /// (key, check, epoch number, outcome)
    ids: Vec<(u64, u64, u64, Outcome)>,
    entries_max: usize,
    horizon_ms: u64,
    epoch_ms: u64,
    newest: Stamp,
    forgot_through: Stamp,
}

impl TryFrom<IdWindowRepr> for IdWindow {
    type Error = String;

    fn try_from(repr: IdWindowRepr) -> Result<Self, String> {
        if repr.epoch_ms == 0 || repr.horizon_ms / repr.epoch_ms > 2 * EPOCHS_PER_HORIZON {
            return Err(format!(
                "an id window of {} ms epochs for a {} ms horizon",
                repr.epoch_ms, repr.horizon_ms
            ));
        }
        let mut window = IdWindow::new(repr.entries_max, repr.horizon_ms);
        window.epoch_ms = repr.epoch_ms;
        window.advance(repr.newest);
        window.forgot_through = repr.forgot_through;
        for (key, check, number, outcome) in repr.ids {
            if key == 0 || u128::from(key) > KEY_MASK || u128::from(check) > CHECK_MASK {
                return Err("an id window entry out of range".to_owned());
            }
            if number > window.epoch_of(window.newest) {
                return Err("an id window entry newer than the window".to_owned());
            }
            window.put(key, check, number, outcome);
        }
        Ok(window)
    }
}

impl<'de> Deserialize<'de> for IdWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IdWindowRepr::deserialize(deserializer)
            .and_then(|repr| IdWindow::try_from(repr).map_err(serde::de::Error::custom))
    }
}

impl Serialize for IdWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Ids<'a>(&'a IdWindow);
        impl Serialize for Ids<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                // The bincode format needs the length first: count, then write.
                let mut seq = serializer.serialize_seq(Some(self.0.iter().count()))?;
                for entry in self.0.iter() {
                    seq.serialize_element(&entry)?;
                }
                seq.end()
            }
        }
        let mut s = serializer.serialize_struct("IdWindow", 6)?;
        s.serialize_field("ids", &Ids(self))?;
        s.serialize_field("entries_max", &self.entries_max)?;
        s.serialize_field("horizon_ms", &self.horizon_ms)?;
        s.serialize_field("epoch_ms", &self.epoch_ms)?;
        s.serialize_field("newest", &self.newest)?;
        s.serialize_field("forgot_through", &self.forgot_through)?;
        s.end()
    }
}

/// The window as snapshot format 5 encoded it: checks of 40 bits, whose top 32 are
/// today's check of the same content.
#[derive(Deserialize)]
#[serde(try_from = "IdWindowRepr")]
pub struct IdWindowV5(IdWindow);

impl TryFrom<IdWindowRepr> for IdWindowV5 {
    type Error = String;

    fn try_from(mut repr: IdWindowRepr) -> Result<Self, String> {
        for entry in &mut repr.ids {
            if entry.1 >> CHECK_BITS_V5 != 0 {
                return Err("an id window entry out of range".to_owned());
            }
            entry.1 >>= CHECK_BITS_V5 - CHECK_BITS;
        }
        IdWindow::try_from(repr).map(IdWindowV5)
    }
}

impl From<IdWindowV5> for IdWindow {
    fn from(v5: IdWindowV5) -> Self {
        v5.0
    }
}

/// The window as snapshot formats 3 and 4 encoded it: whole ids, fingerprints and stamps.
#[derive(Deserialize)]
pub(crate) struct IdWindowV4 {
    ids: Vec<(EventId, EventFingerprint, Stamp, Outcome)>,
    entries_max: usize,
    horizon_ms: u64,
    forgot_through: Stamp,
}

impl From<IdWindowV4> for IdWindow {
    fn from(v4: IdWindowV4) -> Self {
        let mut window = IdWindow::new(v4.entries_max, v4.horizon_ms);
        // Filed under the unkeyed hash, as the ids of format 5 (see `idhash`).
        for (id, fingerprint, stamp, outcome) in v4.ids {
            window.remember(IdHash::unkeyed(id), fingerprint, outcome, stamp);
        }
        window.forgot_through = window.forgot_through.max(v4.forgot_through);
        window
    }
}

/// The per-shard windows of snapshot formats 1 and 2 (ids kept by routing shard, without
/// fingerprints). Read so that such a snapshot loads: its ids move to the id index with
/// [`EventFingerprint::UNKNOWN`]. Written empty from format 3 on.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LegacyWindow {
    outcomes: FxHashMap<EventId, Outcome>,
    order: VecDeque<(EventId, Stamp)>,
    #[expect(dead_code, reason = "decoded with the window, not used since")]
    entries_max: usize,
    age_ms: u64,
}

impl LegacyWindow {
    /// Its ids, oldest first, emptying it.
    pub(crate) fn take(&mut self) -> Vec<(EventId, Stamp, Outcome)> {
        let outcomes = std::mem::take(&mut self.outcomes);
        std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(|(id, stamp)| outcomes.get(&id).map(|&o| (id, stamp, o)))
            .collect()
    }
}

impl Serialize for LegacyWindow {
    /// Always empty (its ids moved to the id index when it was loaded).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("IdempotencyWindow", 4)?;
        s.serialize_field("outcomes", &FxHashMap::<EventId, Outcome>::default())?;
        s.serialize_field("order", &VecDeque::<(EventId, Stamp)>::new())?;
        s.serialize_field("entries_max", &0usize)?;
        s.serialize_field("age_ms", &self.age_ms)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use std::collections::HashMap;

    fn outcome(seq: u64) -> Outcome {
        Outcome {
            seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
        }
    }

    const FP: EventFingerprint = EventFingerprint(7);

    /// The hash of id `i` (the unkeyed one: these tests craft bucket collisions).
    fn hid(i: u128) -> IdHash {
        IdHash::unkeyed(EventId(i))
    }

    /// A live claim, settled at once (`since` = the stamp: no allowance for clocks ahead).
    fn insert(w: &mut IdWindow, id: u128, seq: u64, stamp: u64) -> Claim {
        let claim = w.claim(hid(id), FP, 0, Stamp(stamp), stamp);
        if claim == Claim::Fresh {
            w.settle(hid(id), outcome(seq));
        }
        claim
    }

    #[test]
    fn an_entry_is_20_bytes() {
        assert_eq!(SLOTS * WORDS * 4, 80);
        assert_eq!(KEY_BITS + CHECK_BITS + 8 + 3 + SEQ_BITS, 128);
        let w = IdWindow::new(940_000, 1_000);
        assert_eq!(w.table.len() * 4, 20_000_000, "1M slots of 20 bytes");
    }

    #[test]
    fn every_outcome_kind_round_trips_through_a_snapshot() {
        use crate::protocol::{decode_serde, encode_serde};
        let mut statuses = vec![
            Status::Accepted(Effect::Coins(0)),
            Status::Accepted(Effect::Coins(u64::from(u32::MAX))),
            Status::Accepted(Effect::Coins(u64::MAX)),
            Status::Accepted(Effect::Stored),
            Status::Accepted(Effect::Settled { credited: 7 }),
            Status::Accepted(Effect::Settled { credited: 1 << 40 }),
            Status::Accepted(Effect::PaidOut {
                diamonds_available: 3,
                value: Decimal::new(12_345, 2),
            }),
        ];
        statuses.extend(RejectCode::ALL.iter().map(|&c| Status::Rejected(c)));
        let mut w = IdWindow::new(statuses.len(), 1_000);
        let mut expected = Vec::new();
        for (i, &status) in statuses.iter().enumerate() {
            // Sequence numbers near the epoch's base and far from it (those go wide).
            let seq = if i % 2 == 0 {
                1_000 + i as u64
            } else {
                u64::MAX / 2 + i as u64
            };
            let o = Outcome {
                seq,
                status,
                duplicate: false,
            };
            let id = hid(u128::MAX - i as u128);
            w.remember(id, FP, o, Stamp(i as u64));
            expected.push((id, o));
        }
        let read: IdWindow = decode_serde(&encode_serde(&w).unwrap()).unwrap();
        for window in [&w, &read] {
            assert_eq!(window.len(), expected.len());
            for &(id, o) in &expected {
                assert_eq!(window.lookup(id, FP, 0, Stamp(100)), Some(o));
            }
        }
        assert_eq!(w.canonical(Stamp(100)), read.canonical(Stamp(100)));
        assert!(!w.wide.is_empty() && w.wide.len() < expected.len());
    }

    #[test]
    fn a_full_window_refuses_new_ids_and_never_forgets_a_young_one() {
        // A 1,000 ms horizon: 15 ms epochs; an id counts as stamped at its epoch's end.
        let mut w = IdWindow::new(2, 1_000);
        assert_eq!(insert(&mut w, 1, 1, 100_000), Claim::Fresh);
        assert_eq!(insert(&mut w, 2, 2, 100_010), Claim::Fresh);
        assert_eq!(insert(&mut w, 3, 3, 100_020), Claim::Full);
        assert_eq!(
            w.claim(hid(1), FP, 0, Stamp(101_004), 0),
            Claim::Retry(Some(outcome(1))),
            "still remembered when full, up to its epoch's end (100,004) + the horizon"
        );
        // Past the horizon of id 1, a new id takes its place.
        assert_eq!(insert(&mut w, 3, 3, 101_010), Claim::Fresh);
        assert_eq!(w.get(hid(1), Stamp(101_010)), None);
        assert_eq!(w.get(hid(2), Stamp(101_010)), Some(outcome(2)));
        assert_eq!(w.len(), 2);
        assert_eq!(w.forgot_through, Stamp(100_004));
    }

    #[test]
    fn an_event_as_old_as_a_dropped_id_is_refused() {
        let mut w = IdWindow::new(4, 1_000);
        insert(&mut w, 1, 1, 100_000);
        insert(&mut w, 2, 2, 102_000); // drops id 1 (its epoch ends at 100,004)
        // A batch stamped before the drop, applied after it: it may be id 1's retry.
        assert_eq!(
            w.claim(hid(1), FP, 0, Stamp(100_500), 100_000),
            Claim::Forgotten
        );
        assert_eq!(
            w.claim(hid(3), FP, 0, Stamp(102_000), 100_005),
            Claim::Fresh
        );
    }

    #[test]
    fn other_content_under_a_remembered_id_is_a_reuse() {
        let mut w = IdWindow::new(4, 1_000);
        insert(&mut w, 1, 1, 0);
        assert_eq!(
            w.claim(hid(1), EventFingerprint(8), 0, Stamp(5), 0),
            Claim::Reused
        );
        // An id from an old snapshot matches any content routed where it was kept.
        w.remember(hid(2), EventFingerprint::legacy(3), outcome(2), Stamp(0));
        assert_eq!(
            w.claim(hid(2), EventFingerprint(9), 3, Stamp(5), 0),
            Claim::Retry(Some(outcome(2)))
        );
        assert_eq!(
            w.claim(hid(2), EventFingerprint(9), 4, Stamp(5), 0),
            Claim::Reused
        );
    }

    #[test]
    fn replay_keeps_the_later_entry_of_a_reused_id_in_any_order() {
        let mut a = IdWindow::new(4, 100);
        a.remember(hid(1), FP, outcome(1), Stamp(0));
        a.remember(hid(1), FP, outcome(5), Stamp(500));
        let mut b = IdWindow::new(4, 100);
        b.remember(hid(1), FP, outcome(5), Stamp(500));
        b.remember(hid(1), FP, outcome(1), Stamp(0));
        assert_eq!(a.get(hid(1), Stamp(500)), Some(outcome(5)));
        assert_eq!(b.get(hid(1), Stamp(500)), Some(outcome(5)));
        assert_eq!(a.canonical(Stamp(500)), b.canonical(Stamp(500)));
    }

    #[test]
    fn a_window_fills_to_its_bound_and_answers_every_id() {
        let n = 100_000;
        let mut w = IdWindow::new(n, 60_000);
        for i in 0..n as u128 {
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            assert_eq!(insert(&mut w, id, i as u64 + 1, 1_000), Claim::Fresh);
        }
        assert_eq!(insert(&mut w, u128::MAX, 0, 1_000), Claim::Full);
        assert!(w.stash.len() < 16, "stash: {}", w.stash.len());
        for i in 0..n as u128 {
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            assert_eq!(w.get(hid(id), Stamp(2_000)), Some(outcome(i as u64 + 1)));
        }
        // All of it expires at once; the next horizon's ids take the slots.
        for i in 0..n as u128 {
            assert_eq!(insert(&mut w, !i, i as u64 + 1, 200_000), Claim::Fresh);
        }
        assert_eq!(w.len(), n);
    }

    #[test]
    fn epoch_tags_come_round_without_bringing_dead_ids_back() {
        // 64 ms horizon, 1 ms epochs: 256 epochs pass in 256 ms.
        let mut w = IdWindow::new(80, 64);
        let mut seq = 0;
        for t in 0..5_000u64 {
            seq += 1;
            assert_eq!(
                insert(&mut w, u128::from(t), seq, t),
                Claim::Fresh,
                "at {t}"
            );
            if t >= 300 {
                // The id 256 epochs back shares this epoch's tag: long dead.
                assert_eq!(w.get(hid(u128::from(t - 256)), Stamp(t)), None);
                assert_eq!(
                    w.get(hid(u128::from(t - 60)), Stamp(t)),
                    Some(outcome(seq - 60))
                );
            }
            assert!(w.len() <= 66, "{} live at {t}", w.len());
        }
        // A long silence: every tag comes round at once.
        assert_eq!(insert(&mut w, 1 << 100, 1, 1_000_000), Claim::Fresh);
        assert_eq!(w.len(), 1);
        assert_eq!(w.get(hid(4_999), Stamp(1_000_000)), None);
    }

    #[test]
    fn reconfiguring_keeps_every_id_for_at_least_the_new_horizon() {
        let mut w = IdWindow::new(1_000, 10_000);
        for i in 0..500u64 {
            insert(&mut w, u128::from(i), i + 1, 50_000 + i);
        }
        w.reconfigure(2_000, 20_000);
        assert_eq!(w.len(), 500);
        assert_eq!(w.get(hid(0), Stamp(70_000)), Some(outcome(1)));
        w.reconfigure(600, 1_000);
        assert_eq!(w.get(hid(499), Stamp(50_499)), Some(outcome(500)));
        assert_eq!(w.len(), 500);
        assert_eq!(insert(&mut w, 1 << 90, 9_999, 50_500), Claim::Fresh);
    }

    /// Review finding: ids claimed at a stamp whose epoch is already dead (a clock
    /// behind the journal's after a restart) were forgotten on arrival, and an exact
    /// retry a few seconds later was applied again. Now such a claim is refused.
    #[test]
    fn a_claim_behind_the_recorded_time_is_refused_not_forgotten_on_arrival() {
        let mut w = IdWindow::new(100, 640);
        w.remember(hid(99), FP, outcome(1), Stamp(100_000));
        let first = w.claim(hid(5), FP, 0, Stamp(10_000), 9_900);
        if first == Claim::Fresh {
            w.settle(hid(5), outcome(2));
            let retry = w.claim(hid(5), FP, 0, Stamp(10_200), 10_100);
            assert_eq!(retry, Claim::Retry(Some(outcome(2))), "applied twice");
        } else {
            assert_eq!(first, Claim::Forgotten);
            let retry = w.claim(hid(5), FP, 0, Stamp(10_200), 10_100);
            assert_ne!(
                retry,
                Claim::Fresh,
                "a retry of a refused event is refused too"
            );
        }
    }

    /// Review finding: a reconfigured window wrote entries newer than its newest stamp,
    /// and the snapshot could not be read back.
    #[test]
    fn a_reconfigured_window_round_trips_through_a_snapshot() {
        use crate::protocol::{decode_serde, encode_serde};
        let mut w = IdWindow::new(100, 64_000); // 1,000 ms epochs
        assert_eq!(insert(&mut w, 1, 1, 5_000), Claim::Fresh);
        w.reconfigure(100, 6_400); // 100 ms epochs
        let read: IdWindow = decode_serde(&encode_serde(&w).unwrap()).unwrap();
        assert_eq!(read.get(hid(1), Stamp(5_000)), Some(outcome(1)));
    }

    /// Review finding: a ~256x shorter horizon mapped two epochs onto one tag (panic).
    #[test]
    fn reconfiguring_to_a_much_shorter_horizon_keeps_both_epochs() {
        let mut w = IdWindow::new(100, 16_384); // 256 ms epochs
        w.remember(hid(1), FP, outcome(1), Stamp(100));
        w.remember(hid(2), FP, outcome(2), Stamp(300));
        w.reconfigure(100, 64); // 1 ms epochs
        assert_eq!(w.get(hid(2), Stamp(300)), Some(outcome(2)));
        assert_eq!(w.get(hid(1), Stamp(300)), Some(outcome(1)));
    }

    /// Review finding: ids crafted into a few buckets filled the stash, and a stash bound
    /// refused every new id at 4 % of the window's bound.
    #[test]
    fn ids_crafted_into_few_buckets_do_not_refuse_everyone_else() {
        let entries_max = 100_000;
        let mut w = IdWindow::new(entries_max, 60_000);
        let (mut n, mut i) = (0u64, 0u128);
        while n < 4 * 1_024 + 300 {
            i += 1;
            let [a, b] = w.buckets_of(hid(i).key());
            if a < 1_024 && b < 1_024 {
                n += 1;
                assert_eq!(insert(&mut w, i, n, 1_000), Claim::Fresh, "at {n}");
            }
        }
        assert!(!w.stash.is_empty());
        assert_eq!(insert(&mut w, u128::MAX - 5, n + 1, 1_000), Claim::Fresh);
    }

    /// An id as the model keeps it: content, stamp, outcome (None: pending).
    type Model = HashMap<u128, (u64, u64, Option<Outcome>)>;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against a model that keeps every id with its exact stamp: never `Fresh` for an
        /// id remembered within the horizon, always the recorded outcome for a retry,
        /// `Reused` for other content, `Full` only at the bound.
        #[test]
        fn the_window_never_admits_a_remembered_id_again(
            steps in proptest::collection::vec((0u128..300, 0u64..3, 0u64..40, any::<bool>()), 1..600),
            entries_max in 8usize..200,
        ) {
            let horizon = 640;
            let mut w = IdWindow::new(entries_max, horizon);
            let epoch_ms = horizon / 64;
            let mut model: Model = HashMap::new();
            let (mut stamp, mut seq) = (1_000u64, 0u64);
            for (id, content, advance, settle) in steps {
                stamp += advance;
                let live_in_model = |m: &Model, id: u128| {
                    m.get(&id).filter(|(_, s, o)| o.is_none() || (s / epoch_ms + 1) * epoch_ms - 1 + horizon >= stamp).copied()
                };
                let claim = w.claim(hid(id), EventFingerprint(content), 0, Stamp(stamp), stamp - 10);
                match (claim, live_in_model(&model, id)) {
                    (Claim::Retry(o), Some((c, _, mo))) => {
                        prop_assert_eq!(c, content);
                        prop_assert_eq!(o, mo);
                    }
                    (Claim::Reused, Some((c, _, _))) => prop_assert_ne!(c, content),
                    (Claim::Fresh, None) => {
                        seq += 1;
                        if settle {
                            let o = outcome(seq);
                            w.settle(hid(id), o);
                            model.insert(id, (content, stamp, Some(o)));
                        } else {
                            w.unclaim(hid(id));
                        }
                    }
                    (Claim::Full, None) => {
                        let live = model.keys().filter(|&&i| live_in_model(&model, i).is_some()).count();
                        prop_assert!(live >= entries_max, "full at {} of {}", live, entries_max);
                    }
                    (Claim::Forgotten, None) => {}
                    (claim, held) => prop_assert!(false, "{:?} for {:?}", claim, held),
                }
            }
        }
    }
}
