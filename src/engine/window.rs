//! The idempotency index: every remembered event id, its content's fingerprint and its
//! recorded outcome. One [`IdWindow`] per id shard (ids are spread by their own hash, not
//! by user), so an id is one key across users, event types and shards.
//!
//! # The retry horizon
//! An id is remembered while it is younger than the horizon (`engine.idempotency_horizon_ms`)
//! relative to the stamp of the event being checked, and is never dropped earlier: when a
//! window is full of ids younger than the horizon, a new id is refused
//! ([`Claim::Full`], answered `UNAVAILABLE`), not admitted by forgetting an old one.
//! Whether an id counts as remembered depends only on the two journaled stamps, so a
//! replay answers every id exactly as the live run did, whatever order the shards'
//! inserts interleaved in.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::event::{Effect, EventFingerprint, EventId, Outcome, RejectCode, Stamp, Status};

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

/// One id shard's remembered ids.
#[derive(Debug, Clone)]
pub(crate) struct IdWindow {
    slots: FxHashMap<EventId, Slot>,
    /// The outcomes that do not pack (payouts), by id: few.
    wide: FxHashMap<EventId, Outcome>,
    /// Insertion order, oldest first, for eviction. An id claimed again after it expired
    /// has two entries here; the older one no longer matches its slot's stamp and seq.
    order: VecDeque<OrderEntry>,
    entries_max: usize,
    /// How long an id is kept after its stamp.
    horizon_ms: u64,
    /// The newest stamp of an id this window has dropped: an event that may be a retry
    /// of one at least this old is refused, not taken as new (see [`IdWindow::claim`]).
    forgot_through: Stamp,
}

/// A remembered id: 40 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    fingerprint: EventFingerprint,
    stamp: Stamp,
    packed: Packed,
}

/// An id and its stamp: 24 bytes (an `EventId` alone is 16-byte aligned).
#[derive(Debug, Clone, Copy)]
struct OrderEntry {
    id: [u64; 2],
    stamp: Stamp,
}

impl OrderEntry {
    fn id(self) -> EventId {
        EventId::from_words(self.id)
    }
}

/// An outcome in 16 bytes: a kind tag in the top byte over a 56-bit sequence number,
/// and the effect's one number. `WIDE` marks an outcome kept in the side map, `PENDING`
/// an id claimed by an event still being applied.
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
const PENDING: u64 = 5;

impl Packed {
    const WIDE_MARK: Packed = Packed {
        tag_seq: WIDE << SEQ_BITS,
        value: 0,
    };
    const PENDING_MARK: Packed = Packed {
        tag_seq: PENDING << SEQ_BITS,
        value: 0,
    };

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

    /// The outcome, unless it is kept in the side map or pending.
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

impl IdWindow {
    pub(crate) fn new(entries_max: usize, horizon_ms: u64) -> Self {
        // Sized to the bound up front: a full window never rehashes while a shard's lock
        // is held (the pages are only touched as entries arrive).
        Self {
            slots: FxHashMap::with_capacity_and_hasher(entries_max, Default::default()),
            wide: FxHashMap::default(),
            order: VecDeque::with_capacity(entries_max),
            entries_max,
            horizon_ms,
            forgot_through: Stamp(0),
        }
    }

    fn live(&self, slot: &Slot, stamp: Stamp) -> bool {
        slot.stamp.0.saturating_add(self.horizon_ms) >= stamp.0
    }

    fn outcome(&self, id: EventId, slot: &Slot) -> Option<Outcome> {
        if slot.packed == Packed::PENDING_MARK {
            return None;
        }
        slot.packed.unpack().or_else(|| self.wide.get(&id).copied())
    }

    /// The outcome recorded for `id` if it is remembered at `stamp` (pending: `None`).
    #[cfg(test)]
    pub(crate) fn get(&self, id: EventId, stamp: Stamp) -> Option<Outcome> {
        let slot = self.slots.get(&id).filter(|s| self.live(s, stamp))?;
        self.outcome(id, slot)
    }

    /// The recorded outcome of `id` if it is remembered at `stamp` for this content
    /// (`fingerprint`, routed to `route`); claims nothing.
    pub(crate) fn lookup(
        &self,
        id: EventId,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
    ) -> Option<Outcome> {
        let slot = self.slots.get(&id).filter(|s| self.live(s, stamp))?;
        if !slot.fingerprint.matches(fingerprint, route) {
            return None;
        }
        self.outcome(id, slot)
    }

    /// Looks `id` up for an event with `fingerprint`, routed to `route`, stamped `stamp`,
    /// and claims it when it is not remembered (live ingestion). `since`: the oldest
    /// stamp an earlier attempt of the event can have (its `issued_ms` less the `ISSUED_AHEAD_MAX_MS` a
    /// clock may run ahead, or for an event without one its own stamp less as much):
    /// if ids that old were dropped already, it may be a retry of one of them and is
    /// refused ([`Claim::Forgotten`]), whatever order concurrent batches' stamps came in.
    pub(crate) fn claim(
        &mut self,
        id: EventId,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
        since: u64,
    ) -> Claim {
        if let Some(slot) = self.slots.get(&id)
            && (slot.packed == Packed::PENDING_MARK || self.live(slot, stamp))
        {
            return if slot.fingerprint.matches(fingerprint, route) {
                Claim::Retry(self.outcome(id, slot))
            } else {
                Claim::Reused
            };
        }
        self.expire(stamp);
        if self.forgot_through.0 != 0 && self.forgot_through.0 >= since {
            return Claim::Forgotten;
        }
        if self.slots.len() >= self.entries_max {
            return Claim::Full;
        }
        self.put(id, fingerprint, stamp, Packed::PENDING_MARK);
        Claim::Fresh
    }

    /// Stores `id` as the newest entry, replacing what it held.
    fn put(&mut self, id: EventId, fingerprint: EventFingerprint, stamp: Stamp, packed: Packed) {
        if self.slots.remove(&id).is_some() {
            self.wide.remove(&id);
        }
        self.slots.insert(
            id,
            Slot {
                fingerprint,
                stamp,
                packed,
            },
        );
        self.order.push_back(OrderEntry {
            id: id.to_words(),
            stamp,
        });
    }

    /// Forgets a claim whose event was not applied after all.
    pub(crate) fn unclaim(&mut self, id: EventId) {
        if self
            .slots
            .get(&id)
            .is_some_and(|s| s.packed == Packed::PENDING_MARK)
        {
            self.slots.remove(&id);
        }
    }

    /// Records the outcome of an id claimed by [`IdWindow::claim`].
    pub(crate) fn settle(&mut self, id: EventId, outcome: Outcome) {
        let packed = Packed::pack(outcome).unwrap_or_else(|| {
            self.wide.insert(id, outcome);
            Packed::WIDE_MARK
        });
        let slot = self.slots.get_mut(&id).expect("a settled id was claimed");
        debug_assert_eq!(slot.packed, Packed::PENDING_MARK, "an id is settled once");
        slot.packed = packed;
    }

    /// Drops the ids older than the horizon at `stamp`, oldest first. Entries are in
    /// insertion order, which concurrent batches make only roughly stamp order: an
    /// expired id behind a younger one waits for it (it is already treated as absent),
    /// and so does everything behind a claim still pending.
    fn expire(&mut self, stamp: Stamp) {
        while let Some(&front) = self.order.front() {
            if front.stamp.0.saturating_add(self.horizon_ms) >= stamp.0 {
                break;
            }
            let id = front.id();
            // The slot may be a newer entry of the same id: leave that one.
            match self.slots.get(&id) {
                Some(s) if s.stamp == front.stamp && s.packed == Packed::PENDING_MARK => break,
                Some(s) if s.stamp == front.stamp => {
                    if self
                        .slots
                        .remove(&id)
                        .is_some_and(|s| s.packed == Packed::WIDE_MARK)
                    {
                        self.wide.remove(&id);
                    }
                    self.forgot_through = self.forgot_through.max(front.stamp);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Takes the config's bound and horizon (a restart may change them: a smaller
    /// horizon forgets ids earlier, a smaller bound refuses new ids sooner).
    pub(crate) fn reconfigure(&mut self, entries_max: usize, horizon_ms: u64) {
        self.entries_max = entries_max;
        self.horizon_ms = horizon_ms;
    }

    /// Ids held (some may be past the horizon, not dropped yet).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Remembered ids with their fingerprints, stamps and outcomes, oldest first.
    pub(crate) fn iter(
        &self,
    ) -> impl Iterator<Item = (EventId, EventFingerprint, Stamp, Outcome)> + '_ {
        self.order.iter().filter_map(|e| {
            let id = e.id();
            let slot = self.slots.get(&id).filter(|s| s.stamp == e.stamp)?;
            let outcome = self.outcome(id, slot).expect("no id is pending at a cut");
            Some((id, slot.fingerprint, e.stamp, outcome))
        })
    }

    /// The ids remembered at `stamp`, sorted: the same set whatever order they were
    /// inserted in (for comparing a replayed engine with the live one).
    pub(crate) fn canonical(
        &self,
        stamp: Stamp,
    ) -> Vec<(EventId, EventFingerprint, Stamp, Outcome)> {
        let mut ids: Vec<_> = self
            .iter()
            .filter(|&(_, _, s, _)| s.0.saturating_add(self.horizon_ms) >= stamp.0)
            .collect();
        ids.sort_unstable_by_key(|e| e.0);
        ids
    }

    /// Remembers `id` as `outcome`, recorded by the journal (replay, snapshots,
    /// migration): no check, the journal is the truth. Of two entries of one id (reused
    /// after its horizon), the later one in sequence order is kept, whatever order they
    /// come in.
    pub(crate) fn remember(
        &mut self,
        id: EventId,
        fingerprint: EventFingerprint,
        outcome: Outcome,
        stamp: Stamp,
    ) {
        self.expire(stamp);
        if let Some(slot) = self.slots.get(&id)
            && self.outcome(id, slot).is_some_and(|o| o.seq > outcome.seq)
        {
            return;
        }
        self.put(id, fingerprint, stamp, Packed::PENDING_MARK);
        self.settle(id, outcome);
    }
}

/// The window as snapshots (format 3) encode it.
#[derive(Deserialize)]
struct IdWindowRepr {
    ids: Vec<(EventId, EventFingerprint, Stamp, Outcome)>,
    entries_max: usize,
    horizon_ms: u64,
    forgot_through: Stamp,
}

impl From<IdWindowRepr> for IdWindow {
    fn from(repr: IdWindowRepr) -> Self {
        let mut window = IdWindow::new(repr.entries_max, repr.horizon_ms);
        window.forgot_through = repr.forgot_through;
        for (id, fingerprint, stamp, outcome) in repr.ids {
            window.put(id, fingerprint, stamp, Packed::PENDING_MARK);
            window.settle(id, outcome);
        }
        window
    }
}

impl<'de> Deserialize<'de> for IdWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IdWindowRepr::deserialize(deserializer).map(IdWindow::from)
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
        let mut s = serializer.serialize_struct("IdWindow", 4)?;
        s.serialize_field("ids", &Ids(self))?;
        s.serialize_field("entries_max", &self.entries_max)?;
        s.serialize_field("horizon_ms", &self.horizon_ms)?;
        s.serialize_field("forgot_through", &self.forgot_through)?;
        s.end()
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
    use rust_decimal::Decimal;

    fn outcome(seq: u64) -> Outcome {
        Outcome {
            seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
        }
    }

    const FP: EventFingerprint = EventFingerprint(7);

    /// A live claim, settled at once (`since` = the stamp: these windows keep ids for
    /// 1 s, with no allowance for clocks ahead).
    fn insert(w: &mut IdWindow, id: u128, seq: u64, stamp: u64) -> Claim {
        let claim = w.claim(EventId(id), FP, 0, Stamp(stamp), stamp);
        if claim == Claim::Fresh {
            w.settle(EventId(id), outcome(seq));
        }
        claim
    }

    #[test]
    fn every_outcome_kind_round_trips_through_a_snapshot() {
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
        let mut w = IdWindow::new(statuses.len(), 1_000);
        let mut expected = Vec::new();
        for (i, &status) in statuses.iter().enumerate() {
            // Sequence numbers below and at the packing bound (2^56 and up go wide).
            let seq = if i % 2 == 0 {
                i as u64
            } else {
                SEQ_MASK + i as u64
            };
            let o = Outcome {
                seq,
                status,
                duplicate: false,
            };
            let id = EventId(u128::MAX - i as u128);
            w.remember(id, FP, o, Stamp(i as u64));
            expected.push((id, FP, Stamp(i as u64), o));
        }
        w.forgot_through = Stamp(3);
        assert_eq!(w.iter().collect::<Vec<_>>(), expected);
        let read: IdWindow = decode_serde(&encode_serde(&w).unwrap()).unwrap();
        assert_eq!(read.iter().collect::<Vec<_>>(), expected);
        assert_eq!(read.forgot_through, Stamp(3));
    }

    #[test]
    fn a_full_window_refuses_new_ids_and_never_forgets_a_young_one() {
        let mut w = IdWindow::new(2, 1_000);
        assert_eq!(insert(&mut w, 1, 1, 100_000), Claim::Fresh);
        assert_eq!(insert(&mut w, 2, 2, 100_010), Claim::Fresh);
        assert_eq!(insert(&mut w, 3, 3, 100_020), Claim::Full);
        assert_eq!(
            w.claim(EventId(1), FP, 0, Stamp(100_020), 0),
            Claim::Retry(Some(outcome(1))),
            "still remembered when full"
        );
        // Past the horizon of id 1, a new id takes its place.
        assert_eq!(insert(&mut w, 3, 3, 101_001), Claim::Fresh);
        assert_eq!(w.get(EventId(1), Stamp(101_001)), None);
        assert_eq!(w.get(EventId(2), Stamp(101_001)), Some(outcome(2)));
        assert_eq!(w.len(), 2);
        assert_eq!(w.forgot_through, Stamp(100_000));
    }

    #[test]
    fn an_event_as_old_as_a_dropped_id_is_refused() {
        let mut w = IdWindow::new(4, 1_000);
        insert(&mut w, 1, 1, 100_000);
        insert(&mut w, 2, 2, 102_000); // drops id 1 (stamp 100,000)
        // A batch stamped before the drop, applied after it: it may be id 1's retry.
        assert_eq!(
            w.claim(EventId(1), FP, 0, Stamp(100_500), 100_000),
            Claim::Forgotten
        );
        assert_eq!(
            w.claim(EventId(3), FP, 0, Stamp(102_000), 100_001),
            Claim::Fresh
        );
    }

    #[test]
    fn other_content_under_a_remembered_id_is_a_reuse() {
        let mut w = IdWindow::new(4, 1_000);
        insert(&mut w, 1, 1, 0);
        assert_eq!(
            w.claim(EventId(1), EventFingerprint(8), 0, Stamp(5), 0),
            Claim::Reused
        );
        // An id from an old snapshot matches any content routed where it was kept.
        w.remember(
            EventId(2),
            EventFingerprint::legacy(3),
            outcome(2),
            Stamp(0),
        );
        assert_eq!(
            w.claim(EventId(2), EventFingerprint(9), 3, Stamp(5), 0),
            Claim::Retry(Some(outcome(2)))
        );
        assert_eq!(
            w.claim(EventId(2), EventFingerprint(9), 4, Stamp(5), 0),
            Claim::Reused
        );
    }

    #[test]
    fn replay_keeps_the_later_entry_of_a_reused_id_in_any_order() {
        let mut a = IdWindow::new(4, 100);
        a.remember(EventId(1), FP, outcome(1), Stamp(0));
        a.remember(EventId(1), FP, outcome(5), Stamp(500));
        let mut b = IdWindow::new(4, 100);
        b.remember(EventId(1), FP, outcome(5), Stamp(500));
        b.remember(EventId(1), FP, outcome(1), Stamp(0));
        assert_eq!(a.get(EventId(1), Stamp(500)), Some(outcome(5)));
        assert_eq!(b.get(EventId(1), Stamp(500)), Some(outcome(5)));
        assert_eq!(a.canonical(Stamp(500)), b.canonical(Stamp(500)));
    }
}
