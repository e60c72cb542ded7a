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
        }
    }

    /// Takes the log of applied events at a consistent cut: every event with a number
    /// up to the returned entries' last, none after, sorted by seq.
    pub fn drain_log(&self) -> Vec<LogEntry> {
        let spares = std::mem::take(&mut *self.spare_logs.lock());
        let runs = self.lock_all().take_log(spares);
        self.in_seq_order(runs)
    }

    /// A log taken at a cut, merged into seq order (after releasing the locks); the
    /// emptied buffers are kept for the next cut.
    pub(super) fn in_seq_order(&self, mut runs: Runs) -> Vec<LogEntry> {
        let log = merge_in_seq_order(&mut runs);
        let mut spares = self.spare_logs.lock();
        spares.extend(
            runs.into_iter()
                .filter(|r| (1..=SPARE_LOG_ENTRIES_MAX).contains(&r.capacity())),
        );
        // At most one per log (a run each), however often cuts overlap.
        spares.truncate(self.senders.len() + self.creators.len() + self.streams.len() + 1);
        log
    }
}

/// Runs merged by a linear scan of their heads; more go through a heap.
const MERGE_LINEAR_RUNS_MAX: usize = 8;

/// A drained buffer larger than this (a burst, a long replay) is freed rather than kept:
/// 10 MiB of 160-byte entries.
const SPARE_LOG_ENTRIES_MAX: usize = 1 << 16;

/// The log taken at a cut: one run per shard (and the engine's own), each in
/// application order.
pub(super) type Runs = Vec<Vec<LogEntry>>;

/// Merges the runs of a cut into one log in seq order, leaving them empty (their
/// capacity kept). Numbers are unique: each was reserved once, by one `fetch_add`. Each
/// run is in seq order already (a shard reserves its numbers under its own lock;
/// checked, and sorted if not), so every entry moves once — instead of a sort of the
/// whole log, which moved each 160-byte entry about log2(n) times (a tenth of a uniform
/// gift's instructions when drained every batch). The smallest head is found by a
/// linear scan: there are a few runs, one per shard at most.
pub(super) fn merge_in_seq_order(runs: &mut Runs) -> Vec<LogEntry> {
    let len = runs.iter().map(Vec::len).sum();
    let mut log = Vec::with_capacity(len);
    let mut heads: Vec<std::vec::Drain<'_, LogEntry>> = runs
        .iter_mut()
        .filter(|run| !run.is_empty())
        .map(|run| {
            if !run.windows(2).all(|w| w[0].seq < w[1].seq) {
                run.sort_unstable_by_key(|e| e.seq);
            }
            run.drain(..)
        })
        .collect();
    if heads.len() > MERGE_LINEAR_RUNS_MAX {
        // Many shards: a heap of the heads (a linear scan would cost runs per entry).
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> = heads
            .iter()
            .enumerate()
            .map(|(i, h)| std::cmp::Reverse((h.as_slice()[0].seq, i)))
            .collect();
        while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
            log.extend(heads[i].next());
            if let Some(e) = heads[i].as_slice().first() {
                heap.push(std::cmp::Reverse((e.seq, i)));
            }
        }
        heads.clear();
    }
    while !heads.is_empty() {
        let mut smallest = (0, u64::MAX);
        for (i, head) in heads.iter().enumerate() {
            match head.as_slice().first() {
                Some(e) if e.seq < smallest.1 => smallest = (i, e.seq),
                _ => {}
            }
        }
        let i = smallest.0;
        log.extend(heads[i].next());
        if heads[i].as_slice().is_empty() {
            drop(heads.swap_remove(i));
        }
    }
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

    /// Moves every shard's log out, a run each (merged by seq after releasing the
    /// locks), and gives each shard an empty buffer from `spares` (the buffers of the
    /// previous cut, so their memory is warm) or a new one. Nothing is copied here: this
    /// runs with every shard locked.
    pub(super) fn take_log(&mut self, mut spares: Runs) -> Runs {
        let mut fresh = |log: &mut Vec<LogEntry>| {
            if log.is_empty() {
                return Vec::new();
            }
            std::mem::replace(log, spares.pop().unwrap_or_default())
        };
        let mut runs =
            Vec::with_capacity(1 + self.senders.len() + self.creators.len() + self.streams.len());
        runs.push(fresh(&mut self.meta_log));
        runs.extend(self.senders.iter_mut().map(|s| fresh(&mut s.log)));
        runs.extend(self.creators.iter_mut().map(|c| fresh(&mut c.log)));
        runs.extend(self.streams.iter_mut().map(|s| fresh(&mut s.log)));
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Effect, Event, EventId, Outcome, Stamp, Status, StreamGoal};
    use crate::engine::{CreatorId, StreamId};

    fn entry(seq: u64) -> LogEntry {
        LogEntry {
            seq,
            stamp: Stamp(seq),
            event: Event::StreamGoal(StreamGoal {
                id: EventId(u128::from(seq)),
                stream: StreamId(1),
                creator: CreatorId(1),
                coins_target: 1,
            }),
            outcome: Outcome {
                seq,
                status: Status::Accepted(Effect::Stored),
                duplicate: false,
                cap: None,
            },
            totals: None,
            reversed: None,
        }
    }

    fn seqs(log: &[LogEntry]) -> Vec<u64> {
        log.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn runs_merge_into_seq_order_and_an_unsorted_run_is_sorted_first() {
        let in_seq_order = |mut runs: Runs| {
            let log = merge_in_seq_order(&mut runs);
            assert!(runs.iter().all(Vec::is_empty), "every run emptied");
            log
        };
        let runs = |r: &[&[u64]]| -> Runs {
            r.iter()
                .map(|run| run.iter().map(|&s| entry(s)).collect())
                .collect()
        };
        assert!(in_seq_order(runs(&[&[], &[]])).is_empty());
        assert_eq!(
            seqs(&in_seq_order(runs(&[&[], &[3, 4, 9], &[]]))),
            [3, 4, 9]
        );
        assert_eq!(
            seqs(&in_seq_order(runs(&[
                &[2, 7],
                &[1, 3, 4, 9],
                &[],
                &[5, 6],
                &[8, 10]
            ]))),
            (1..=10).collect::<Vec<_>>()
        );
        // Replay and tests may build a run out of order: it is sorted, not trusted.
        assert_eq!(
            seqs(&in_seq_order(runs(&[&[6, 2, 4], &[1, 5], &[3]]))),
            (1..=6).collect::<Vec<_>>()
        );
        // Many shards' runs: merged through a heap.
        let many: Vec<Vec<u64>> = (0..40u64)
            .map(|r| (0..5).map(|k| k * 40 + r + 1).collect())
            .collect();
        let many: Vec<&[u64]> = many.iter().map(Vec::as_slice).collect();
        assert_eq!(
            seqs(&in_seq_order(runs(&many))),
            (1..=200).collect::<Vec<_>>()
        );
    }

    #[test]
    #[should_panic(expected = "strictly increase")]
    fn a_number_in_two_runs_is_refused() {
        merge_in_seq_order(&mut vec![vec![entry(1), entry(2)], vec![entry(2)]]);
    }
}
