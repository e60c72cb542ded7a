//! The idempotency window: recent event ids and their recorded outcomes.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::event::{Effect, EventId, Outcome, RejectCode, Stamp, Status};

/// Remembers the outcome of each event id for a bounded number of entries and a bounded
/// age, whichever ends first. A duplicate inside the window gets the original outcome.
///
/// Eviction depends only on the order of inserts and their journaled stamps, never on a
/// clock, so a replay evicts exactly what the original run evicted.
///
/// Stored compactly, because a window of 1M ids is random memory every event touches: an
/// outcome as 16 bytes ([`Packed`]; a map entry 32 bytes instead of 64) — payouts,
/// whose outcome carries a decimal, go to a side map — and the eviction order as 24-byte
/// entries. Encoded as it always was (`WindowRepr`: the full outcomes and the order),
/// so snapshots keep their format.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "WindowRepr")]
pub(crate) struct IdempotencyWindow {
    outcomes: FxHashMap<EventId, Packed>,
    /// The outcomes that do not pack (payouts), by id: few.
    wide: FxHashMap<EventId, Outcome>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<OrderEntry>,
    entries_max: usize,
    age_ms: u64,
}

/// An id and its journaled stamp: 24 bytes (an `EventId` alone is 16-byte aligned).
#[derive(Debug, Clone, Copy)]
struct OrderEntry {
    id: [u64; 2],
    stamp: Stamp,
}

impl OrderEntry {
    fn new(id: EventId, stamp: Stamp) -> Self {
        OrderEntry {
            id: id.to_words(),
            stamp,
        }
    }

    fn id(self) -> EventId {
        EventId::from_words(self.id)
    }
}

/// An outcome in 16 bytes: a kind tag in the top byte over a 56-bit sequence number,
/// and the effect's one number. `WIDE` marks an outcome kept in the side map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    tag_seq: u64,
    value: u64,
}

const SEQ_BITS: u32 = 56;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const COINS: u64 = 0;
const STORED: u64 = 1;
const SETTLED: u64 = 2;
const REJECTED: u64 = 3;
const WIDE: u64 = 4;

impl Packed {
    /// The packed form, or `None` when the outcome does not fit (a payout, a sequence
    /// number of 2^56 or more).
    fn pack(o: Outcome) -> Option<Packed> {
        if o.duplicate || o.seq > SEQ_MASK {
            return None;
        }
        let (tag, value) = match o.status {
            Status::Accepted(Effect::Coins(coins)) => (COINS, coins),
            Status::Accepted(Effect::Stored) => (STORED, 0),
            Status::Accepted(Effect::Settled { credited }) => (SETTLED, credited),
            Status::Rejected(code) => (REJECTED, code as u64),
            Status::Accepted(Effect::PaidOut { .. }) => return None,
        };
        Some(Packed {
            tag_seq: tag << SEQ_BITS | o.seq,
            value,
        })
    }

    /// The outcome, unless it is kept in the side map.
    fn unpack(self) -> Option<Outcome> {
        let status = match self.tag_seq >> SEQ_BITS {
            COINS => Status::Accepted(Effect::Coins(self.value)),
            STORED => Status::Accepted(Effect::Stored),
            SETTLED => Status::Accepted(Effect::Settled {
                credited: self.value,
            }),
            REJECTED => Status::Rejected(
                u8::try_from(self.value)
                    .ok()
                    .and_then(RejectCode::from_u8)
                    .expect("a packed code is a reject code"),
            ),
            _ => return None,
        };
        Some(Outcome {
            seq: self.tag_seq & SEQ_MASK,
            status,
            duplicate: false,
        })
    }
}

const WIDE_MARK: Packed = Packed {
    tag_seq: WIDE << SEQ_BITS,
    value: 0,
};

impl IdempotencyWindow {
    pub(crate) fn new(entries_max: usize, age_ms: u64) -> Self {
        // Sized to the bound up front: a full window never rehashes while a shard's lock
        // is held (the pages are only touched as entries arrive).
        Self {
            outcomes: FxHashMap::with_capacity_and_hasher(entries_max, Default::default()),
            wide: FxHashMap::default(),
            order: VecDeque::with_capacity(entries_max),
            entries_max,
            age_ms,
        }
    }

    pub(crate) fn get(&self, id: EventId) -> Option<Outcome> {
        let packed = self.outcomes.get(&id)?;
        packed.unpack().or_else(|| self.wide.get(&id).copied())
    }

    pub(crate) fn contains(&self, id: EventId) -> bool {
        self.outcomes.contains_key(&id)
    }

    pub(crate) fn insert(&mut self, id: EventId, outcome: Outcome, stamp: Stamp) {
        if self.entries_max == 0 {
            return;
        }
        self.record(id, outcome, stamp);
        while self.order.len() > self.entries_max {
            self.evict_oldest();
        }
        while let Some(oldest) = self.order.front() {
            if oldest.stamp.0.saturating_add(self.age_ms) >= stamp.0 {
                break;
            }
            self.evict_oldest();
        }
    }

    /// Stores `id`'s outcome (packed, or in the side map) as the newest entry.
    fn record(&mut self, id: EventId, outcome: Outcome, stamp: Stamp) {
        let packed = Packed::pack(outcome).unwrap_or_else(|| {
            self.wide.insert(id, outcome);
            WIDE_MARK
        });
        let previous = self.outcomes.insert(id, packed);
        debug_assert!(previous.is_none(), "an event id is recorded once");
        self.order.push_back(OrderEntry::new(id, stamp));
    }

    fn evict_oldest(&mut self) {
        if let Some(entry) = self.order.pop_front() {
            let id = entry.id();
            if self.outcomes.remove(&id) == Some(WIDE_MARK) {
                self.wide.remove(&id);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Entries oldest first, for snapshots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (EventId, Stamp, Outcome)> + '_ {
        self.order.iter().map(|e| {
            let id = e.id();
            (
                id,
                e.stamp,
                self.get(id).expect("an ordered id is recorded"),
            )
        })
    }
}

/// The window as snapshots encode it (the layout it had before it was packed).
#[derive(Deserialize)]
struct WindowRepr {
    outcomes: FxHashMap<EventId, Outcome>,
    order: VecDeque<(EventId, Stamp)>,
    entries_max: usize,
    age_ms: u64,
}

impl From<WindowRepr> for IdempotencyWindow {
    fn from(repr: WindowRepr) -> Self {
        let mut window = IdempotencyWindow::new(repr.entries_max, repr.age_ms);
        for (id, stamp) in repr.order {
            if let Some(&outcome) = repr.outcomes.get(&id) {
                window.record(id, outcome, stamp);
            }
        }
        window
    }
}

impl Serialize for IdempotencyWindow {
    /// As `WindowRepr`: the outcomes as a map of full outcomes, then the order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Outcomes<'a>(&'a IdempotencyWindow);
        impl Serialize for Outcomes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(id, _, outcome)| (id, outcome)))
            }
        }
        struct Order<'a>(&'a IdempotencyWindow);
        impl Serialize for Order<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.order.iter().map(|e| (e.id(), e.stamp)))
            }
        }
        let mut s = serializer.serialize_struct("IdempotencyWindow", 4)?;
        s.serialize_field("outcomes", &Outcomes(self))?;
        s.serialize_field("order", &Order(self))?;
        s.serialize_field("entries_max", &self.entries_max)?;
        s.serialize_field("age_ms", &self.age_ms)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    /// The window's encoding before it was packed.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Unpacked {
        outcomes: FxHashMap<EventId, Outcome>,
        order: VecDeque<(EventId, Stamp)>,
        entries_max: usize,
        age_ms: u64,
    }

    #[test]
    fn every_outcome_kind_round_trips_and_snapshots_keep_their_encoding() {
        use crate::protocol::{decode_serde, encode_serde};
        let mut statuses = vec![
            Status::Accepted(Effect::Coins(0)),
            Status::Accepted(Effect::Coins(u64::MAX)),
            Status::Accepted(Effect::Stored),
            Status::Accepted(Effect::Settled { credited: 7 }),
            Status::Accepted(Effect::PaidOut {
                diamonds_available: 3,
                value: Decimal::new(12_345, 2),
            }),
        ];
        statuses.extend(RejectCode::ALL.iter().map(|&c| Status::Rejected(c)));
        let outcomes: Vec<(EventId, Outcome)> = statuses
            .iter()
            .enumerate()
            .map(|(i, &status)| {
                // Sequence numbers below and at the packing bound (2^56 and up go wide).
                let seq = if i % 2 == 0 {
                    i as u64
                } else {
                    SEQ_MASK + i as u64
                };
                let id = EventId(u128::MAX - i as u128);
                (
                    id,
                    Outcome {
                        seq,
                        status,
                        duplicate: false,
                    },
                )
            })
            .collect();
        let mut w = IdempotencyWindow::new(outcomes.len(), 1_000);
        for (i, &(id, o)) in outcomes.iter().enumerate() {
            w.insert(id, o, Stamp(i as u64));
        }
        for &(id, o) in &outcomes {
            assert_eq!(w.get(id), Some(o));
        }
        // Encoded as before, and an old encoding reads back to the same window.
        let old = Unpacked {
            outcomes: outcomes.iter().copied().collect(),
            order: outcomes
                .iter()
                .enumerate()
                .map(|(i, &(id, _))| (id, Stamp(i as u64)))
                .collect(),
            entries_max: outcomes.len(),
            age_ms: 1_000,
        };
        let bytes = encode_serde(&w).unwrap();
        assert_eq!(decode_serde::<Unpacked>(&bytes).unwrap(), old);
        let read: IdempotencyWindow = decode_serde(&encode_serde(&old).unwrap()).unwrap();
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            w.iter().collect::<Vec<_>>()
        );
        // Evicting a payout's outcome drops it from the side map too.
        let mut w = read;
        for i in 0..outcomes.len() {
            w.insert(EventId(i as u128), outcomes[0].1, Stamp(100));
        }
        assert!(outcomes.iter().all(|&(id, _)| w.get(id).is_none()));
        assert!(w.wide.is_empty(), "no outcome left in the side map");
    }

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
