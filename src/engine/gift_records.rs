//! The gift records of reversals (`refund.rs`): per sender shard, what a reversal of each
//! gift held by the earnings hold needs — on a stream or a video —, bounded, dropped once
//! released.
//!
//! An event id is unique within the retry horizon only, and a hold lasts days: a gift
//! may reuse the id of a gift still held. A reversal names the sender and the gift's id,
//! so records are the sender's: a gift of another sender reusing a held id is recorded
//! apart ([`GiftRecords::others`], review G: before, it was not recorded when both
//! senders shared a shard and recorded when they did not, so the answer depended on the
//! shard layout). A gift of the same sender reusing its own held id keeps the record of
//! the first — reversed or not — and the second is not recorded (review F6: replacing it
//! lost a reversal, so the first gift could be reversed again). A reversal naming the id
//! then judges the first gift (`ALREADY_REVERSED` once reversed); the second answers as
//! a gift without a record (`refund.rs`: `NOT_REVERSIBLE` while in its sender's
//! history). A released record is replaced: its gift can no longer be reversed.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::event::{CreatorId, EventId, GiftId, GiftTarget, StreamId, UserId, VideoId};
use super::rules::GiftSend;

/// What a reversal of one accepted gift needs: 72 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GiftRecord {
    pub sender: UserId,
    pub creator: CreatorId,
    /// The stream's id, or the video's when `video` (a [`GiftTarget`] packed into the
    /// record's padding: the record stays 72 bytes).
    target_id: u64,
    pub gift: GiftId,
    pub count: u32,
    /// Coins the gift debited.
    pub coins: u64,
    /// The diamonds it credited, exactly, in billionths (as the hold holds them), as two
    /// words so the record is 8-byte aligned.
    nanos: [u64; 2],
    /// When its diamonds are released (UTC ms, the hold's release time).
    pub release_ms: u64,
    pub reversed: bool,
    /// A gift on a video (snapshot format 9; format 8 recorded stream gifts only).
    video: bool,
    /// The hour (since the epoch) of the gift's stamp: the windows a reversal lowers
    /// (`leaderboards.rs`). Not in the record's encoding: snapshot format 10 appends the
    /// hours apart ([`GiftRecords::hours`]); a record of an older format has 0, whose
    /// windows are long gone.
    #[serde(skip)]
    pub hour: u32,
}

const _: () = assert!(std::mem::size_of::<GiftRecord>() == 72);

impl GiftRecord {
    /// The record of gift `g` sent to `target` that debited `coins` and credited
    /// `nanos`, held until `release_ms`, stamped `now`.
    fn of(
        g: GiftSend,
        target: GiftTarget,
        (coins, nanos): (u64, u128),
        (release_ms, now): (u64, u64),
    ) -> GiftRecord {
        let (target_id, video) = match target {
            GiftTarget::Stream(s) => (s.0, false),
            GiftTarget::Video(v) => (v.0, true),
        };
        GiftRecord {
            sender: g.sender,
            creator: g.creator,
            target_id,
            gift: g.gift,
            count: g.count,
            coins,
            nanos: [nanos as u64, (nanos >> 64) as u64],
            release_ms,
            reversed: false,
            video,
            hour: super::event::hour_of(super::event::Stamp(now)),
        }
    }

    pub fn nanos(&self) -> u128 {
        u128::from(self.nanos[0]) | u128::from(self.nanos[1]) << 64
    }

    /// The stream or the video the gift was sent to.
    pub fn target(&self) -> GiftTarget {
        if self.video {
            GiftTarget::Video(VideoId(self.target_id))
        } else {
            GiftTarget::Stream(StreamId(self.target_id))
        }
    }
}

/// A gift record as snapshot format 8 encoded it: a gift on a stream (`stream`), no
/// target kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GiftRecordV8 {
    sender: UserId,
    creator: CreatorId,
    stream: StreamId,
    gift: GiftId,
    count: u32,
    coins: u64,
    nanos: [u64; 2],
    release_ms: u64,
    reversed: bool,
}

/// A sender shard's gift records as snapshot format 8 encoded them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct GiftRecordsV8 {
    records: FxHashMap<EventId, GiftRecordV8>,
    order: VecDeque<(u64, EventId)>,
    coins_refunded: u128,
    nanos_reversed: u128,
    reversals: u64,
    dropped_early: u64,
}

impl From<GiftRecordsV8> for GiftRecords {
    /// Every record of format 8 is a gift on a stream.
    fn from(v8: GiftRecordsV8) -> Self {
        let records = v8.records.into_iter().map(|(id, r)| {
            let record = GiftRecord {
                sender: r.sender,
                creator: r.creator,
                target_id: r.stream.0,
                gift: r.gift,
                count: r.count,
                coins: r.coins,
                nanos: r.nanos,
                release_ms: r.release_ms,
                reversed: r.reversed,
                video: false,
                hour: 0,
            };
            (id, record)
        });
        GiftRecords {
            records: records.collect(),
            order: v8.order,
            coins_refunded: v8.coins_refunded,
            nanos_reversed: v8.nanos_reversed,
            reversals: v8.reversals,
            dropped_early: v8.dropped_early,
            ..GiftRecords::default()
        }
    }
}

impl GiftRecords {
    /// The records as format 8 encoded them (for the format tests); `None` when one is
    /// of a gift on a video, which format 8 cannot hold.
    pub(crate) fn as_format_8(&self) -> Option<GiftRecordsV8> {
        let mut records = FxHashMap::default();
        for (&id, r) in &self.records {
            let GiftTarget::Stream(stream) = r.target() else {
                return None;
            };
            let v8 = GiftRecordV8 {
                sender: r.sender,
                creator: r.creator,
                stream,
                gift: r.gift,
                count: r.count,
                coins: r.coins,
                nanos: r.nanos,
                release_ms: r.release_ms,
                reversed: r.reversed,
            };
            records.insert(id, v8);
        }
        Some(GiftRecordsV8 {
            records,
            order: self.order.clone(),
            coins_refunded: self.coins_refunded,
            nanos_reversed: self.nanos_reversed,
            reversals: self.reversals,
            dropped_early: self.dropped_early,
        })
    }
}

/// A sender shard's gift records and reversal totals (snapshot format 8, appended to
/// the state as `gift_records`; records with their target's kind from format 9; older
/// formats read with none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GiftRecords {
    pub(super) records: FxHashMap<EventId, GiftRecord>,
    /// `(release_ms, gift)` in the order recorded: dropped from the front once released,
    /// or when full.
    order: VecDeque<(u64, EventId)>,
    /// Coins refunded by accepted reversals (spent on gifts net of refunds is
    /// `coins_spent − coins_refunded`).
    pub coins_refunded: u128,
    /// Diamonds taken back, in billionths.
    pub nanos_reversed: u128,
    /// Accepted reversals.
    pub reversals: u64,
    /// Records dropped while still held because the shard's bound was reached.
    pub dropped_early: u64,
    /// The records of gifts that reused the id of another sender's gift held in
    /// `records` (module doc; almost always empty), by id and sender, bounded apart by
    /// the same `max`. Snapshot format 11 appends them to the state
    /// ([`GiftRecords::others_in_order`]); older formats had none.
    #[serde(skip)]
    others: FxHashMap<(EventId, UserId), GiftRecord>,
    /// `(release_ms, gift, sender)` of `others`, in the order recorded.
    #[serde(skip)]
    others_order: VecDeque<(u64, EventId, UserId)>,
}

impl GiftRecords {
    /// The held record of `sender`'s gift `id`, if any.
    pub fn get(&self, id: EventId, sender: UserId) -> Option<&GiftRecord> {
        match self.records.get(&id) {
            Some(r) if r.sender == sender => Some(r),
            _ if self.others.is_empty() => None,
            _ => self.others.get(&(id, sender)),
        }
    }

    /// The held record of `sender`'s gift `id`, to change.
    pub fn get_mut(&mut self, id: EventId, sender: UserId) -> Option<&mut GiftRecord> {
        match self.records.get_mut(&id) {
            Some(r) if r.sender == sender => Some(r),
            _ => self.others.get_mut(&(id, sender)),
        }
    }

    /// Records accepted gift `id` (`g`, sent to `target`) that debited `coins` and
    /// credited `nanos`, held until `release_ms`, at the gift's stamp `now`: drops the
    /// oldest records while the shard holds `max` (0: nothing is recorded). The caller
    /// dropped what is released at `now`. An id whose record is still held at `now`
    /// keeps it (module doc, F6): the gift is not recorded and `false` returned.
    pub fn record(
        &mut self,
        max: usize,
        (id, g, target): (EventId, GiftSend, GiftTarget),
        (coins, nanos): (u64, u128),
        (release_ms, now): (u64, u64),
    ) -> bool {
        if max == 0 {
            return false;
        }
        let record = GiftRecord::of(g, target, (coins, nanos), (release_ms, now));
        match self.records.get(&id) {
            Some(r) if r.release_ms > now && r.sender == g.sender => return false,
            Some(r) if r.release_ms > now => return self.record_other(max, id, record, now),
            _ => {}
        }
        while self.records.len() >= max {
            let Some((release, id)) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.remove_if(id, release)
                && !r.reversed
            {
                self.dropped_early += 1;
            }
        }
        // A released record of the id (not pruned yet: release times need not follow
        // the queue's order when the hold changed) is replaced; its queue entry, of
        // another release time, will not remove the new one.
        self.records.insert(id, record);
        self.order.push_back((release_ms, id));
        true
    }

    /// Records `record` of gift `id` in `others` (its id is held by another sender's
    /// record): not when the sender's own record of the id is still held (F6), and
    /// dropping the oldest of `others` while it holds `max`.
    fn record_other(&mut self, max: usize, id: EventId, record: GiftRecord, now: u64) -> bool {
        let key = (id, record.sender);
        if self.others.get(&key).is_some_and(|r| r.release_ms > now) {
            return false;
        }
        while self.others.len() >= max {
            let Some((release, id, sender)) = self.others_order.pop_front() else {
                break;
            };
            if let Some(r) = self.remove_other_if((id, sender), release)
                && !r.reversed
            {
                self.dropped_early += 1;
            }
        }
        self.others.insert(key, record);
        self.others_order
            .push_back((record.release_ms, id, record.sender));
        true
    }

    fn remove_other_if(&mut self, key: (EventId, UserId), release: u64) -> Option<GiftRecord> {
        match self.others.get(&key) {
            Some(r) if r.release_ms == release => self.others.remove(&key),
            _ => None,
        }
    }

    /// Drops the records released at `clock` (from the front of the queue: records are
    /// kept in the order made, release times follow the stamps).
    pub fn prune(&mut self, clock: u64) {
        while let Some(&(release, id)) = self.order.front() {
            if release > clock {
                break;
            }
            self.order.pop_front();
            self.remove_if(id, release);
        }
        while let Some(&(release, id, sender)) = self.others_order.front() {
            if release > clock {
                break;
            }
            self.others_order.pop_front();
            self.remove_other_if((id, sender), release);
        }
    }

    /// The records of `others` still held, in the order recorded, with their gift
    /// hours (snapshot format 11).
    pub fn others_in_order(&self) -> Vec<(EventId, GiftRecord, u32)> {
        self.others_order
            .iter()
            .filter_map(|&(release, id, sender)| {
                let r = self.others.get(&(id, sender))?;
                (r.release_ms == release).then_some((id, *r, r.hour))
            })
            .collect()
    }

    /// Sets `others` from [`GiftRecords::others_in_order`].
    pub fn set_others(&mut self, others: Vec<(EventId, GiftRecord, u32)>) {
        self.others.clear();
        self.others_order.clear();
        for (id, record, hour) in others {
            let record = GiftRecord { hour, ..record };
            self.others_order
                .push_back((record.release_ms, id, record.sender));
            self.others.insert((id, record.sender), record);
        }
    }

    /// Removes the record of `id` if it is the one queued with `release` (an id re-used
    /// after the horizon would have a newer one).
    fn remove_if(&mut self, id: EventId, release: u64) -> Option<GiftRecord> {
        match self.records.get(&id) {
            Some(r) if r.release_ms == release => self.records.remove(&id),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len() + self.others.len()
    }

    /// Each record's gift hour, sorted by gift id (snapshot format 10).
    pub fn hours(&self) -> Vec<(EventId, u32)> {
        let mut all: Vec<_> = self.records.iter().map(|(&id, r)| (id, r.hour)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// Sets the records' gift hours from [`GiftRecords::hours`] (an id no longer
    /// recorded is skipped).
    pub fn set_hours(&mut self, hours: &[(EventId, u32)]) {
        for (id, hour) in hours {
            if let Some(r) = self.records.get_mut(id) {
                r.hour = *hour;
            }
        }
    }

    /// The records sorted by gift id, then those of `others` by id and sender, for the
    /// state fingerprint (their hours apart, in [`GiftRecords::hours`]: a format before
    /// 10 has none).
    pub fn canonical(&self) -> Vec<(EventId, GiftRecord)> {
        let mut all: Vec<_> = self
            .records
            .iter()
            .map(|(&id, &r)| (id, GiftRecord { hour: 0, ..r }))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        let mut others: Vec<_> = self
            .others
            .iter()
            .map(|(&(id, _), &r)| (id, GiftRecord { hour: 0, ..r }))
            .collect();
        others.sort_unstable_by_key(|(id, r)| (*id, r.sender));
        all.extend(others);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a gift record costs (issue #31 asks for the figure): the map slot (key +
    /// record, with its control byte, at the map's 7/8 load) and the queue entry.
    #[test]
    fn bytes_per_gift_record() {
        let slot = std::mem::size_of::<(EventId, GiftRecord)>() + 1;
        let queue = std::mem::size_of::<(u64, EventId)>();
        let bytes = slot * 8 / 7 + queue;
        println!("gift record: {slot} B slot + {queue} B queue = about {bytes} B per held gift");
        assert!(bytes <= 160, "{bytes}");
    }

    fn send(sender: u64) -> GiftSend {
        GiftSend {
            sender: UserId(sender),
            creator: CreatorId(2),
            gift: GiftId(0),
            count: 1,
        }
    }

    fn stream(id: u128, sender: u64) -> (EventId, GiftSend, GiftTarget) {
        (EventId(id), send(sender), GiftTarget::Stream(StreamId(3)))
    }

    #[test]
    fn records_drop_when_released_and_the_oldest_when_full() {
        let mut r = GiftRecords::default();
        assert!(r.record(2, stream(1, 1), (5, 10), (100, 0)));
        assert!(r.record(2, stream(2, 1), (5, 10), (200, 0)));
        assert!(r.record(2, stream(3, 1), (5, 10), (300, 0)));
        assert_eq!(r.len(), 2);
        assert_eq!(r.dropped_early, 1);
        assert!(!r.records.contains_key(&EventId(1)));
        r.prune(200);
        assert_eq!(r.canonical().len(), 1);
        assert!(!r.record(0, stream(4, 1), (5, 10), (400, 0)));
        assert_eq!(r.len(), 1, "a bound of 0 records nothing");
    }

    /// Review finding F6: a gift reusing the id of the same sender's gift still held
    /// (after the retry horizon) does not replace its record, reversed or not; once the
    /// first is released, the id is recorded again.
    #[test]
    fn an_id_reused_while_its_record_is_held_keeps_the_first_record() {
        let mut r = GiftRecords::default();
        let video = GiftTarget::Video(VideoId(77));
        assert!(r.record(8, (EventId(1), send(1), video), (5, 10), (1_000, 0)));
        r.records.get_mut(&EventId(1)).unwrap().reversed = true;
        // The same sender reuses the id at 600 (before the release).
        assert!(!r.record(8, stream(1, 1), (9, 18), (1_600, 600)));
        let kept = r.records[&EventId(1)];
        assert!(kept.reversed && kept.coins == 5 && kept.target() == video);
        assert_eq!(
            (r.len(), r.order.len()),
            (1, 1),
            "nothing queued for the second"
        );
        // At 1_000 the first is released: a gift reusing the id is recorded.
        assert!(r.record(8, stream(1, 4), (9, 18), (2_000, 1_000)));
        let new = r.records[&EventId(1)];
        assert!(!new.reversed && new.sender == UserId(4) && new.release_ms == 2_000);
        assert_eq!(new.target(), GiftTarget::Stream(StreamId(3)));
        // The first's queue entry (release 1_000) does not drop the new record.
        r.prune(1_500);
        assert_eq!(r.records[&EventId(1)], new);
        r.prune(2_000);
        assert_eq!(r.len(), 0);
    }

    /// Review finding G: another sender's gift reusing a held id is recorded apart, so a
    /// reversal finds each sender's own gift whether or not the senders share a shard;
    /// each sender's own reuse is F6's; `others` is bounded, pruned and survives a
    /// snapshot (its queue order).
    #[test]
    fn another_senders_gift_reusing_a_held_id_is_recorded_apart() {
        let mut r = GiftRecords::default();
        assert!(r.record(2, stream(1, 1), (5, 10), (1_000, 0)));
        assert!(r.record(2, stream(1, 4), (9, 18), (1_600, 600)));
        assert!(
            !r.record(2, stream(1, 4), (7, 14), (1_700, 700)),
            "F6 for 4"
        );
        assert_eq!((r.get(EventId(1), UserId(1)).unwrap().coins), 5);
        assert_eq!((r.get(EventId(1), UserId(4)).unwrap().coins), 9);
        assert!(r.get(EventId(1), UserId(5)).is_none());
        r.get_mut(EventId(1), UserId(4)).unwrap().reversed = true;
        assert!(!r.get(EventId(1), UserId(1)).unwrap().reversed);
        assert_eq!(r.len(), 2);
        // Two more senders: the bound (2) drops the oldest of `others` (4's, reversed:
        // not counted as dropped early), then 5's, unreversed.
        assert!(r.record(2, stream(1, 5), (1, 2), (1_800, 800)));
        assert!(r.record(2, stream(1, 6), (1, 2), (1_900, 900)));
        assert!(r.get(EventId(1), UserId(4)).is_none());
        assert_eq!(r.dropped_early, 0);
        assert!(r.record(2, stream(1, 7), (1, 2), (1_950, 950)));
        assert_eq!(r.dropped_early, 1);
        assert!(r.get(EventId(1), UserId(5)).is_none());
        // Through a snapshot: the same records, in the same order.
        let mut back = GiftRecords::default();
        back.set_others(r.others_in_order());
        assert_eq!(back.others_in_order(), r.others_in_order());
        assert_eq!(back.others, r.others);
        // Released at their release times.
        r.prune(1_900);
        assert_eq!((r.len(), r.others_in_order().len()), (1, 1), "7's is left");
        r.prune(1_950);
        assert_eq!(r.len(), 0);
        assert!(r.get(EventId(1), UserId(7)).is_none());
    }

    /// Format 8's records read as gifts on streams; a state's records write back as
    /// format 8 while they are all on streams.
    #[test]
    fn format_8_records_are_gifts_on_streams() {
        let mut r = GiftRecords::default();
        r.record(8, stream(1, 1), (5, 10), (1_000, 0));
        r.coins_refunded = 3;
        let v8 = r.as_format_8().expect("stream gifts only");
        let bytes = crate::protocol::encode_serde(&v8).unwrap();
        let back: GiftRecordsV8 = crate::protocol::decode_serde(&bytes).unwrap();
        assert_eq!(GiftRecords::from(back), r);
        r.record(
            8,
            (EventId(2), send(1), GiftTarget::Video(VideoId(7))),
            (5, 10),
            (1_000, 0),
        );
        assert!(r.as_format_8().is_none());
    }
}
