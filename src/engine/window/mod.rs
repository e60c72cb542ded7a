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
//! | 32 | the effect's number (a balance, a credit, a reject code and a budget's cap) |
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
//!
//! # Where things are
//! - `entry`: the 20-byte entry and its bit layout.
//! - `epochs`: time — epochs, the horizon, tags coming round.
//! - `table`: the bucketed cuckoo table, its stash and the sweep.
//! - `format`: how snapshots encode a window (format 5 on), and the older formats.
//! - here: [`IdWindow`] and its index operations (claim, settle, remember, reconfigure).

mod entry;
mod epochs;
mod format;
mod table;
#[cfg(test)]
mod tests;

use rustc_hash::FxHashMap;

use super::event::{BudgetCap, Effect, EventFingerprint, Outcome, RejectCode, Stamp, Status};
use super::idhash::{IdHash, mix};
use entry::{CHECK_BITS, COINS, Entry, PENDING, REJECTED, SEQ_SPAN, SETTLED, STORED, WIDE};
#[cfg(test)]
use entry::{KEY_BITS, SEQ_BITS};
use epochs::Epoch;
pub(crate) use epochs::epoch_ms;
pub use format::IdWindowV5;
pub(crate) use format::{IdWindowV4, LegacyWindow};
use table::Loc;

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
pub(super) const SLOTS: usize = 4;
/// 32-bit words an entry takes.
pub(super) const WORDS: usize = 5;
/// Live ids the table is sized for, as a share of its slots (in thousandths).
pub(super) const LOAD_PERMILLE: usize = 940;
/// Moves an insert may make before its entry goes to the stash.
pub(super) const KICKS_MAX: usize = 500;
/// Slots swept for dead ids per claim.
pub(super) const SWEEP_SLOTS: usize = 4;
/// Epoch tags: the epoch number mod this.
pub(super) const TAGS: usize = 256;
/// Epochs a horizon spans (at least): `epoch_ms = horizon / EPOCHS_PER_HORIZON`.
pub(super) const EPOCHS_PER_HORIZON: u64 = 64;

// Tags come round well after every epoch of a horizon is dead: a snapshot's window may
// span up to twice the epochs of a horizon (one reconfigured shorter keeps its epochs).
const _: () = assert!(2 * EPOCHS_PER_HORIZON + 2 < TAGS as u64);

/// The check of a content fingerprint: 32 bits.
fn check_of(fingerprint: EventFingerprint) -> u64 {
    mix(fingerprint.0 ^ 0x243F_6A88_85A3_08D3) >> (64 - CHECK_BITS)
}

/// Whether an entry with `check` is the event with `fingerprint`, routed to `route` (an
/// id from a snapshot of format 2 or older matches any content routed where it was).
fn matches(check: u64, fingerprint: EventFingerprint, route: u32) -> bool {
    check == check_of(fingerprint) || check == check_of(EventFingerprint::legacy(route))
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

    // --- outcomes ---

    fn outcome(&self, entry: Entry) -> Option<Outcome> {
        let mut cap = None;
        let status = match entry.kind() {
            COINS => Status::Accepted(Effect::Coins(u64::from(entry.value))),
            STORED => Status::Accepted(Effect::Stored),
            SETTLED => Status::Accepted(Effect::Settled {
                credited: u64::from(entry.value),
            }),
            REJECTED => {
                // The code in the low byte, a BUDGET_EXCEEDED's cap in the next.
                let code = RejectCode::from_u8(entry.value as u8);
                let code = code.expect("a packed code is a reject code");
                cap = BudgetCap::of(code, u64::from(entry.value >> 8));
                Status::Rejected(code)
            }
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
            cap,
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
            Status::Rejected(code) => {
                let cap = outcome.cap.map_or(0, |c| c as u32);
                Some((REJECTED, code as u32 | cap << 8))
            }
            // Two numbers (and rare): kept whole, like a payout's.
            Status::Accepted(Effect::PaidOut { .. } | Effect::Reversed { .. }) => None,
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
