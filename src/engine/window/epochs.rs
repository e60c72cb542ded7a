//! Time in the id index: stamps grouped in epochs of `horizon / 64`, the first epoch
//! still live at a stamp, epochs dying as time moves (their ids count as dropped), and
//! the 256 epoch tags coming round.

use super::{EPOCHS_PER_HORIZON, IdWindow, TAGS};
use crate::engine::event::Stamp;
use crate::engine::window::entry::Entry;

/// The epoch length of a window keeping ids `horizon_ms`.
pub(crate) fn epoch_ms(horizon_ms: u64) -> u64 {
    (horizon_ms / EPOCHS_PER_HORIZON).max(1)
}

/// An epoch a tag stands for, and how many entries carry the tag.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Epoch {
    pub(super) number: u64,
    pub(super) entries: usize,
    /// The sequence number entries of this epoch count from (`None`: none settled yet).
    pub(super) base_seq: Option<u64>,
}

impl IdWindow {
    pub(super) fn epoch_of(&self, stamp: Stamp) -> u64 {
        stamp.0 / self.epoch_ms
    }

    /// The last stamp of epoch `number`: every id of it counts as stamped then.
    pub(super) fn end_of(&self, number: u64) -> Stamp {
        Stamp(
            number
                .saturating_add(1)
                .saturating_mul(self.epoch_ms)
                .saturating_sub(1),
        )
    }

    /// The first epoch not past the horizon at `stamp`.
    pub(super) fn first_live_at(&self, stamp: Stamp) -> u64 {
        match stamp.0.checked_sub(self.horizon_ms) {
            None | Some(0) => 0,
            Some(oldest) => (oldest + 1).div_ceil(self.epoch_ms) - 1,
        }
    }

    /// Whether epoch `number` is past the horizon at the newest stamp (its ids dropped).
    pub(super) fn dead(&self, number: u64) -> bool {
        number < self.dead_before
    }

    /// Whether `entry` is remembered at `stamp` (a pending one always is).
    pub(super) fn live_at(&self, entry: Entry, stamp: Stamp) -> bool {
        let number = self.epochs[entry.tag()].number;
        entry.pending()
            || (!self.dead(number)
                && self.end_of(number).0.saturating_add(self.horizon_ms) >= stamp.0)
    }

    /// Takes `stamp` as seen: epochs past the horizon at it die, and their ids count as
    /// dropped.
    pub(super) fn advance(&mut self, stamp: Stamp) {
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
                let live = self.live.checked_sub(e.entries);
                self.live = live.expect("a live epoch's entries are counted live");
                self.forgot_through = self.forgot_through.max(self.end_of(e.number));
            }
        }
    }

    /// The live count and `forgot_through` as they would be at `stamp` (time moves
    /// only with recorded outcomes: a claim does not move it).
    pub(super) fn at(&self, stamp: Stamp) -> (usize, Stamp) {
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
    pub(super) fn tag_for(&mut self, number: u64) -> Option<usize> {
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
}
