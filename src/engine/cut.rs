//! A consistent cut: every shard locked in the documented order (module doc of
//! `engine`), and the log of applied events taken under it.

use std::sync::Arc;

use parking_lot::MutexGuard;

use super::Engine;
use super::books::{CreatorShard, StreamShard};
use super::event::LogEntry;
use super::shard::SenderShard;
use super::window::IdWindow;
use crate::economy::Economy;

impl Engine {
    pub(super) fn lock_all(&self) -> Cut<'_> {
        Cut {
            economy: self.gate.read(),
            meta_log: self.meta_log.lock(),
            senders: self.senders.iter().map(|m| m.lock()).collect(),
            creators: self.creators.iter().map(|m| m.lock()).collect(),
            streams: self.streams.iter().map(|m| m.lock()).collect(),
            ids: self.ids.iter().map(|m| m.lock()).collect(),
            battles: self.battles.lock(),
        }
    }

    /// Takes the log of applied events at a consistent cut: every event with a number
    /// up to the returned entries' last, none after, sorted by seq.
    pub fn drain_log(&self) -> Vec<LogEntry> {
        in_seq_order(self.lock_all().take_log())
    }
}

/// A log taken at a cut, sorted by seq (after releasing the locks). Numbers are unique:
/// each was reserved once, by one `fetch_add`.
pub(super) fn in_seq_order(mut log: Vec<LogEntry>) -> Vec<LogEntry> {
    log.sort_unstable_by_key(|e| e.seq);
    assert!(
        log.windows(2).all(|w| w[0].seq < w[1].seq),
        "an applied log's sequence numbers strictly increase"
    );
    log
}

/// Every shard locked, in the documented order.
pub(super) struct Cut<'a> {
    /// The economy in force: no change (nor payout) while the cut is held.
    pub(super) economy: parking_lot::RwLockReadGuard<'a, Arc<Economy>>,
    pub(super) meta_log: MutexGuard<'a, Vec<LogEntry>>,
    pub(super) senders: Vec<MutexGuard<'a, SenderShard>>,
    pub(super) creators: Vec<MutexGuard<'a, CreatorShard>>,
    pub(super) streams: Vec<MutexGuard<'a, StreamShard>>,
    pub(super) ids: Vec<MutexGuard<'a, IdWindow>>,
    /// Last: a leaf lock (`battles.rs`).
    pub(super) battles: MutexGuard<'a, super::battles::Battles>,
}

impl Cut<'_> {
    /// The economy in force as a snapshot records it (empty: version 0, not recorded).
    pub(super) fn economy_bytes(&self) -> Vec<u8> {
        if self.economy.version == 0 {
            Vec::new()
        } else {
            self.economy.to_doc().to_bytes()
        }
    }

    /// Checks what a snapshot relies on: every chunk merged its credits into the books
    /// before releasing its sender shard, so none is left buffered at a cut.
    pub(super) fn assert_merged(&self) {
        assert!(
            self.senders.iter().all(|s| s.touched_creators.is_empty()
                && s.touched_streams.is_empty()
                && s.windows.pending.is_empty()),
            "no sender shard holds unmerged credits at a cut"
        );
    }

    /// Moves every shard's log out (unsorted; sort by seq after releasing the locks).
    /// Sized up front: this runs with every shard locked, and growing it by doubling
    /// copied the entries several times while the locks were held.
    pub(super) fn take_log(&mut self) -> Vec<LogEntry> {
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
