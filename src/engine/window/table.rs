//! The bucketed cuckoo table of the id index: two candidate buckets of four slots per
//! key, a bounded random walk on insert, a stash for what finds no slot, and the sweep
//! that frees slots of dead epochs a few at a time.

use super::entry::{Entry, WIDE};
use super::{IdWindow, KICKS_MAX, SLOTS, SWEEP_SLOTS, WORDS};
use crate::engine::idhash::{IdHash, mix};

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loc {
    Slot(usize),
    Stash,
}

impl IdWindow {
    pub(super) fn load(&self, slot: usize) -> Entry {
        let w = &self.table[slot * WORDS..slot * WORDS + WORDS];
        Entry {
            bits: u128::from(w[0])
                | u128::from(w[1]) << 32
                | u128::from(w[2]) << 64
                | u128::from(w[3]) << 96,
            value: w[4],
        }
    }

    pub(super) fn store(&mut self, slot: usize, entry: Entry) {
        let w = &mut self.table[slot * WORDS..slot * WORDS + WORDS];
        w[0] = entry.bits as u32;
        w[1] = (entry.bits >> 32) as u32;
        w[2] = (entry.bits >> 64) as u32;
        w[3] = (entry.bits >> 96) as u32;
        w[4] = entry.value;
    }

    pub(super) fn get_at(&self, loc: Loc, key: u64) -> Entry {
        match loc {
            Loc::Slot(s) => self.load(s),
            Loc::Stash => self.stash.get(&key).copied().unwrap_or(Entry::EMPTY),
        }
    }

    pub(super) fn set_at(&mut self, loc: Loc, entry: Entry) {
        match loc {
            Loc::Slot(s) => self.store(s, entry),
            Loc::Stash => {
                self.stash.insert(entry.key(), entry);
            }
        }
    }

    /// The two buckets `key` may be in (the same one in a one-bucket table).
    pub(super) fn buckets_of(&self, key: u64) -> [usize; 2] {
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

    /// Reads both buckets of each of `ids` (a block about to be claimed or settled): their
    /// cache misses in flight together, instead of one lookup's after another's. Reads
    /// only.
    pub(crate) fn warm(&self, ids: impl Iterator<Item = IdHash>) {
        std::hint::black_box(ids.fold(0, |seen, id| seen ^ self.warm_key(id.key())));
    }

    /// The first and last word of both buckets `key` may be in (a bucket spans two cache
    /// lines).
    pub(super) fn warm_key(&self, key: u64) -> u32 {
        let bucket = SLOTS * WORDS;
        self.buckets_of(key)
            .iter()
            .map(|&b| self.table[b * bucket] ^ self.table[b * bucket + bucket - 1])
            .fold(0, |a, w| a ^ w)
    }

    pub(super) fn find(&self, key: u64) -> Option<Loc> {
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
    pub(super) fn free(&self, slot: usize) -> bool {
        let e = self.load(slot);
        e.is_empty() || (!e.pending() && self.dead(self.epochs[e.tag()].number))
    }

    /// Removes the entry at `loc`, whatever it is.
    pub(super) fn remove(&mut self, loc: Loc, key: u64) {
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
    pub(super) fn insert(&mut self, mut entry: Entry) {
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
    pub(super) fn place(&mut self, bucket: usize, entry: Entry) -> bool {
        for s in bucket * SLOTS..bucket * SLOTS + SLOTS {
            if self.free(s) {
                self.remove(Loc::Slot(s), 0);
                self.store(s, entry);
                return true;
            }
        }
        false
    }

    pub(super) fn random(&mut self) -> u64 {
        self.walk ^= self.walk << 13;
        self.walk ^= self.walk >> 7;
        self.walk ^= self.walk << 17;
        self.walk
    }

    /// Drops dead ids from every slot and the stash holding tag `t`.
    pub(super) fn purge(&mut self, t: usize) {
        for s in 0..self.buckets * SLOTS {
            let e = self.load(s);
            if !e.is_empty() && e.tag() == t && self.free(s) {
                self.remove(Loc::Slot(s), 0);
            }
        }
        self.sweep_stash();
    }

    pub(super) fn sweep_stash(&mut self) {
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
    pub(super) fn sweep(&mut self) {
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
}
