//! Exactly once: a chunk's claims in the id index (one lock per id shard touched), the
//! answers for retries and reuses, backpressure that keeps a sender's events in order,
//! and the ids a snapshot of format 3 to 5 left under the unkeyed hash.

use super::event::{Event, EventFingerprint, Outcome, RejectCode, Stamp};
use super::idhash::IdHash;
use super::window::Claim;
use super::{Engine, LockOrder, Route, unrecorded};
use crate::config::engine::ISSUED_AHEAD_MAX_MS;

/// Ids whose index buckets are looked up together ([`IdWindow::warm`]) before they
/// are claimed or settled: their cache misses in flight at once.
///
/// [`IdWindow::warm`]: super::window::IdWindow::warm
const WARM_IDS: usize = 64;

/// What a chunk found for one event's id.
#[derive(Clone, Copy)]
pub(super) enum Verdict {
    Apply,
    Answer(Outcome),
    /// A retry of an earlier event of the same chunk: answered with its outcome.
    SameAsEarlier,
}

/// The ids of a batch seen so far, as a 65,536-bit filter (8 KB): most ids were not,
/// and only a possible repeat is checked against the earlier events.
pub(super) struct SeenIds {
    bits: Box<[u64; 1024]>,
}

impl Default for SeenIds {
    fn default() -> Self {
        SeenIds {
            bits: Box::new([0; 1024]),
        }
    }
}

impl SeenIds {
    /// Whether an event before `i` that was routed (not refused) has `events[i]`'s id
    /// with other content. Marks the id seen.
    pub(super) fn earlier_other_content(
        &mut self,
        events: &[Event],
        hashes: &[IdHash],
        fingerprints: &[EventFingerprint],
        i: usize,
        routes: &[Route],
    ) -> bool {
        let id = events[i].id();
        // Keyed: a client cannot craft ids that all set one bit (a quadratic scan).
        let h = hashes[i].key() & 0xFFFF;
        let (word, bit) = ((h >> 6) as usize, 1u64 << (h & 63));
        let maybe = self.bits[word] & bit != 0;
        self.bits[word] |= bit;
        maybe
            && (0..i).any(|j| {
                events[j].id() == id
                    && !matches!(routes[j], Route::Refused)
                    && fingerprints[j] != fingerprints[i]
            })
    }
}

/// What [`Engine::claim_ids`] needs of a batch.
pub(super) struct ChunkClaim<'a> {
    pub(super) events: &'a [Event],
    pub(super) hashes: &'a [IdHash],
    pub(super) fingerprints: &'a [EventFingerprint],
    pub(super) issued_ms: &'a [u64],
    /// The chunk's sender shard, as [`route_tag`].
    pub(super) route: u32,
    pub(super) stamp: Stamp,
}

/// The oldest stamp an earlier attempt of an event issued at `issued_ms` (0: not given,
/// taken as issued at `stamp`) can carry: a backend's clock may run
/// [`ISSUED_AHEAD_MAX_MS`] ahead of the server's.
pub(super) fn since(issued_ms: u64, stamp: Stamp) -> u64 {
    let issued = if issued_ms == 0 { stamp.0 } else { issued_ms };
    issued.saturating_sub(ISSUED_AHEAD_MAX_MS)
}

/// The account whose events must keep their order: the user of a recharge or account
/// settings, the sender of a gift (chunks hold only these).
pub(super) fn sender_of(event: &Event) -> u64 {
    match event {
        Event::Recharge(r) => r.user.0,
        Event::Gift(g) => g.sender.0,
        Event::Account(a) => a.user.0,
        Event::Purchase(p) => p.user.0,
        Event::VideoGift(v) => v.sender.0,
        Event::RechargeReversal(r) => r.user.0,
        Event::Payout(_)
        | Event::StreamGoal(_)
        | Event::Settlement(_)
        | Event::Economy(_)
        | Event::GiftReversal(_)
        | Event::Battle(_)
        | Event::BattleClose(_) => {
            unreachable!("a chunk holds sender-routed events only")
        }
    }
}

impl Engine {
    /// Claims the ids of `chunk`'s events (indexes into the batch) in the id index,
    /// leaving one verdict per event in `verdicts`, in chunk order. Each id shard is
    /// locked once; events are taken in chunk order within it, so of two events of the
    /// chunk with one id the first is applied. A sender's events are applied in order:
    /// after one refused for backpressure, none of its later ones is applied.
    pub(super) fn claim_ids(
        &self,
        claim: &ChunkClaim<'_>,
        chunk: &[u32],
        verdicts: &mut Vec<Verdict>,
    ) {
        verdicts.clear();
        verdicts.resize(chunk.len(), Verdict::Apply);
        if claim.stamp <= self.legacy_ids_until {
            for (k, &i) in chunk.iter().enumerate() {
                let i = i as usize;
                let (event, fingerprint) = (&claim.events[i], claim.fingerprints[i]);
                if let Some(held) = self.legacy_claim(event, fingerprint, claim.route, claim.stamp)
                {
                    verdicts[k] = Verdict::Answer(held);
                }
            }
        }
        let mut by_shard: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .filter(|&(k, _)| matches!(verdicts[k], Verdict::Apply))
            .map(|(k, &i)| (self.id_shard(claim.hashes[i as usize]), k))
            .collect();
        by_shard.sort_unstable();
        let mut backpressure = false;
        let mut order = LockOrder::default();
        for run in by_shard.chunk_by(|a, b| a.0 == b.0) {
            let mut ids = self.ids[order.next(run[0].0)].lock();
            for block in run.chunks(WARM_IDS) {
                ids.warm(block.iter().map(|&(_, k)| claim.hashes[chunk[k] as usize]));
                for &(_, k) in block {
                    let i = chunk[k] as usize;
                    let since = since(claim.issued_ms.get(i).copied().unwrap_or(0), claim.stamp);
                    let id = claim.hashes[i];
                    verdicts[k] =
                        match ids.claim(id, claim.fingerprints[i], claim.route, claim.stamp, since)
                        {
                            Claim::Fresh => Verdict::Apply,
                            Claim::Retry(Some(original)) => Verdict::Answer(Outcome {
                                duplicate: true,
                                ..original
                            }),
                            Claim::Retry(None) => Verdict::SameAsEarlier,
                            Claim::Reused => Verdict::Answer(unrecorded(RejectCode::EventIdReused)),
                            Claim::Forgotten => {
                                Verdict::Answer(unrecorded(RejectCode::EventExpired))
                            }
                            Claim::Full => {
                                backpressure = true;
                                Verdict::Answer(unrecorded(RejectCode::Unavailable))
                            }
                        };
                }
            }
        }
        if backpressure {
            self.hold_back_after_refusals(claim, chunk, verdicts);
        }
    }

    /// The answer for `event` from the ids a ledger restored from a snapshot of format 3
    /// to 5 holds under the unkeyed hash (only until they are past the horizon: see
    /// `legacy_ids_until`): a retry's original outcome, or `EVENT_ID_REUSED`.
    pub(super) fn legacy_claim(
        &self,
        event: &Event,
        fingerprint: EventFingerprint,
        route: u32,
        stamp: Stamp,
    ) -> Option<Outcome> {
        if stamp > self.legacy_ids_until {
            return None;
        }
        let hash = IdHash::unkeyed(event.id());
        let held = self.ids[self.id_shard(hash)]
            .lock()
            .probe(hash, fingerprint, route, stamp)?;
        Some(match held {
            Claim::Retry(Some(original)) => Outcome {
                duplicate: true,
                ..original
            },
            _ => unrecorded(RejectCode::EventIdReused),
        })
    }

    /// After a sender's event refused for backpressure, its later events of the chunk are
    /// refused too (and their claims released): applying them would reorder the sender's
    /// events (a gift before the recharge that pays for it).
    pub(super) fn hold_back_after_refusals(
        &self,
        claim: &ChunkClaim<'_>,
        chunk: &[u32],
        verdicts: &mut [Verdict],
    ) {
        let unavailable = unrecorded(RejectCode::Unavailable);
        let mut held: Vec<u64> = Vec::new();
        for (k, &i) in chunk.iter().enumerate() {
            let event = &claim.events[i as usize];
            let sender = sender_of(event);
            if matches!(verdicts[k], Verdict::Answer(o) if o == unavailable) {
                held.push(sender);
            } else if held.contains(&sender) {
                if matches!(verdicts[k], Verdict::Apply) {
                    let hash = claim.hashes[i as usize];
                    self.ids[self.id_shard(hash)].lock().unclaim(hash);
                }
                if matches!(verdicts[k], Verdict::Apply | Verdict::SameAsEarlier) {
                    verdicts[k] = Verdict::Answer(unavailable);
                }
            }
        }
    }

    /// Records the outcomes of claimed ids, one lock per id shard touched.
    pub(super) fn settle_ids(&self, settled: &mut [(IdHash, Outcome)]) {
        settled.sort_unstable_by_key(|(id, _)| self.id_shard(*id));
        let mut order = LockOrder::default();
        for run in settled.chunk_by(|a, b| self.id_shard(a.0) == self.id_shard(b.0)) {
            let mut ids = self.ids[order.next(self.id_shard(run[0].0))].lock();
            for block in run.chunks(WARM_IDS) {
                ids.warm(block.iter().map(|&(id, _)| id));
                for &(id, outcome) in block {
                    ids.settle(id, outcome);
                }
            }
        }
    }
}
