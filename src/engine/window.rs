//! The idempotency window: recent event ids and their recorded outcomes.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::event::{EventId, Outcome, Stamp};

/// Remembers the outcome of each event id for a bounded number of entries and a bounded
/// age, whichever ends first. A duplicate inside the window gets the original outcome.
///
/// Eviction depends only on the order of inserts and their journaled stamps, never on a
/// clock, so a replay evicts exactly what the original run evicted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct IdempotencyWindow {
    outcomes: FxHashMap<EventId, Outcome>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<(EventId, Stamp)>,
    entries_max: usize,
    age_ms: u64,
}

impl IdempotencyWindow {
    pub(crate) fn new(entries_max: usize, age_ms: u64) -> Self {
        // Sized to the bound up front: a full window never rehashes while a shard's lock
        // is held (the pages are only touched as entries arrive).
        Self {
            outcomes: FxHashMap::with_capacity_and_hasher(entries_max, Default::default()),
            order: VecDeque::with_capacity(entries_max),
            entries_max,
            age_ms,
        }
    }

    pub(crate) fn get(&self, id: EventId) -> Option<Outcome> {
        self.outcomes.get(&id).copied()
    }

    pub(crate) fn contains(&self, id: EventId) -> bool {
        self.outcomes.contains_key(&id)
    }

    pub(crate) fn insert(&mut self, id: EventId, outcome: Outcome, stamp: Stamp) {
        if self.entries_max == 0 {
            return;
        }
        let previous = self.outcomes.insert(id, outcome);
        debug_assert!(previous.is_none(), "an event id is recorded once");
        self.order.push_back((id, stamp));
        while self.order.len() > self.entries_max {
            self.evict_oldest();
        }
        while let Some(&(_, oldest)) = self.order.front() {
            if oldest.0.saturating_add(self.age_ms) >= stamp.0 {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((id, _)) = self.order.pop_front() {
            self.outcomes.remove(&id);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Entries oldest first, for snapshots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (EventId, Stamp, Outcome)> + '_ {
        self.order
            .iter()
            .map(|&(id, stamp)| (id, stamp, self.outcomes[&id]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Effect, Status};

    fn outcome(seq: u64) -> Outcome {
        Outcome {
            seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
        }
    }

    #[test]
    fn evicts_by_count_and_by_age() {
        let mut w = IdempotencyWindow::new(2, 1_000);
        w.insert(EventId(1), outcome(1), Stamp(0));
        w.insert(EventId(2), outcome(2), Stamp(10));
        w.insert(EventId(3), outcome(3), Stamp(20));
        assert_eq!(w.get(EventId(1)), None, "count bound");
        assert_eq!(w.get(EventId(2)), Some(outcome(2)));
        w.insert(EventId(4), outcome(4), Stamp(1_015));
        assert_eq!(w.get(EventId(2)), None, "older than the age bound");
        assert_eq!(w.get(EventId(3)), Some(outcome(3)), "exactly at the bound");
        assert_eq!(w.len(), 2);
    }
}
