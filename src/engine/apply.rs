//! Applying a live batch ([`Engine::apply_batch`]): route each event, apply each sender
//! shard's chunk under one lock (claim ids, reserve numbers, apply, merge credits, settle
//! ids), then payouts and goals one by one, then answer the deferred repeats.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;

use super::event::{Effect, Event, EventFingerprint, Outcome, Period, RejectCode, Stamp, Status};
use super::idhash::IdHash;
use super::ids::{ChunkClaim, SeenIds, Verdict, since};
use super::shard::SenderShard;
use super::window::Claim;
use super::{BookGuard, Engine, LockOrder, Route, route_tag, shard_of, unrecorded};
use crate::economy::Economy;

/// A batch routed by [`Engine::route_batch`].
struct Batch<'a> {
    events: &'a [Event],
    issued_ms: &'a [u64],
    stamp: Stamp,
    /// The day, ISO week and month of `stamp`: computed once per batch.
    period: Period,
    fingerprints: Vec<EventFingerprint>,
    hashes: Vec<IdHash>,
    routes: Vec<Route>,
    /// Shard `s`'s chunk is `order[starts[s]..starts[s + 1]]` (counts per shard until
    /// [`Batch::sort_by_shard`]).
    starts: Vec<u32>,
    /// The sender-routed events' indexes, by shard, in batch order within a shard.
    order: Vec<u32>,
    /// Payouts, settlements and goals, in batch order.
    book_events: Vec<usize>,
    /// Later events of the batch with an earlier one's id and other content.
    deferred: Vec<usize>,
}

impl Batch<'_> {
    /// Counting sort of the sender-routed events by shard, keeping batch order.
    fn sort_by_shard(&mut self) {
        let shards = self.starts.len() - 1;
        for s in 0..shards {
            self.starts[s + 1] += self.starts[s];
        }
        self.order = vec![0u32; self.starts[shards] as usize];
        let mut next = self.starts.clone();
        for (i, route) in self.routes.iter().enumerate() {
            if let Route::Sender(s) = *route {
                self.order[next[s] as usize] = i as u32;
                next[s] += 1;
            }
        }
    }

    /// Shard `s`'s chunk: indexes into the batch, in batch order.
    fn chunk(&self, s: usize) -> &[u32] {
        &self.order[self.starts[s] as usize..self.starts[s + 1] as usize]
    }
}

/// Buffers reused from chunk to chunk of a batch.
#[derive(Default)]
struct ChunkScratch {
    verdicts: Vec<Verdict>,
    /// The claimed ids of the chunk and their outcomes, to settle.
    settled: Vec<(IdHash, Outcome)>,
}

/// Events looked up together by [`SenderShard::warm`] before they are applied: enough
/// for many cache misses in flight, few enough that their lines (~8 per gift) stay in
/// the core's L2 cache until applied.
const WARM_BLOCK: usize = 128;

impl Engine {
    /// Applies a batch stamped `stamp` and returns one outcome per event, in batch order.
    ///
    /// Sender-routed events (recharge, gift, purchase, account) are applied first, each sender
    /// shard's chunk under one lock, in batch order per sender; then payouts and goals in
    /// batch order, so a payout sees the gifts of its own batch. Sequence numbers record
    /// the order actually applied.
    pub fn apply_batch(&self, events: &[Event], stamp: Stamp) -> Vec<Outcome> {
        self.apply_issued(events, &[], stamp)
    }

    /// [`Engine::apply_batch`] for events that say when the backend created them:
    /// `issued_ms[i]` is event `i`'s `issued_ms` (UTC ms, the same on every retry; 0 when
    /// not given), or `issued_ms` is empty. An event issued longer than the retry horizon
    /// before `stamp` is answered `EVENT_EXPIRED` and not applied: within the horizon
    /// its id is remembered, so a retry is answered or refused, never applied twice.
    pub fn apply_issued(&self, events: &[Event], issued_ms: &[u64], stamp: Stamp) -> Vec<Outcome> {
        assert!(
            issued_ms.is_empty() || issued_ms.len() == events.len(),
            "one issued_ms per event, or none"
        );
        // A recharge's payment time is its issued_ms (the protocol layer sets one from
        // the other): a caller that gives none still has it judged so.
        let paid;
        let issued_ms = if issued_ms.is_empty() && events.iter().any(Event::is_paid_recharge) {
            paid = events.iter().map(Event::paid_ms).collect::<Vec<u64>>();
            &paid[..]
        } else {
            issued_ms
        };
        let mut outcomes = vec![
            Outcome {
                seq: 0,
                status: Status::Accepted(Effect::Stored),
                duplicate: false,
                cap: None,
            };
            events.len()
        ];
        let batch = self.route_batch(events, issued_ms, stamp, &mut outcomes);
        let mut scratch = ChunkScratch::default();
        for s in 0..self.senders.len() {
            let chunk = batch.chunk(s);
            if !chunk.is_empty() {
                self.apply_chunk(s, chunk, &batch, &mut outcomes, &mut scratch);
            }
        }
        for &i in &batch.book_events {
            let since = since(issued_ms.get(i).copied().unwrap_or(0), stamp);
            let (event, hash) = (&events[i], batch.hashes[i]);
            let (fingerprint, route) = (batch.fingerprints[i], batch.routes[i]);
            outcomes[i] = self.apply_to_book(event, hash, fingerprint, route, stamp, since);
        }
        for &i in &batch.deferred {
            outcomes[i] =
                self.answer_deferred(&events[i], batch.hashes[i], batch.fingerprints[i], stamp);
        }
        outcomes
    }

    /// Routes every event of a batch, answering those refused before routing in
    /// `outcomes` (an economy change, an expired event) and deferring the later of two
    /// events with one id and other content; sorts the sender-routed events by shard.
    fn route_batch<'a>(
        &self,
        events: &'a [Event],
        issued_ms: &'a [u64],
        stamp: Stamp,
        outcomes: &mut [Outcome],
    ) -> Batch<'a> {
        let mut batch = Batch {
            events,
            issued_ms,
            stamp,
            period: stamp.period(),
            // Of two events of the batch with one id and other content, the later one is
            // never applied, whatever shards they go to (a payout is applied after the
            // gifts): it is answered at the end, as a retry if the id holds its content by
            // then, else EVENT_ID_REUSED.
            fingerprints: events.iter().map(Event::fingerprint).collect(),
            hashes: events.iter().map(|e| self.event_hash(e)).collect(),
            routes: Vec::with_capacity(events.len()),
            starts: vec![0u32; self.senders.len() + 1],
            order: Vec::new(),
            book_events: Vec::new(),
            deferred: Vec::new(),
        };
        let mut seen = (events.len() > 1).then(SeenIds::default);
        for (i, event) in events.iter().enumerate() {
            let route = if let Event::Economy(_) = event {
                // Made by the service only (clients' frames holding one are refused).
                debug_assert!(false, "an economy change in a batch");
                outcomes[i] = unrecorded(RejectCode::Unavailable);
                Route::Refused
            } else if issued_ms
                .get(i)
                .is_some_and(|&t| t != 0 && self.config.is_expired(t, stamp))
            {
                outcomes[i] = unrecorded(RejectCode::EventExpired);
                Route::Refused
            } else if let Some(seen) = &mut seen
                && seen.earlier_other_content(
                    events,
                    &batch.hashes,
                    &batch.fingerprints,
                    i,
                    &batch.routes,
                )
            {
                batch.deferred.push(i);
                Route::Refused
            } else {
                let route = self.route(event);
                match route {
                    Route::Sender(s) => batch.starts[s + 1] += 1,
                    _ => batch.book_events.push(i),
                }
                route
            };
            batch.routes.push(route);
        }
        batch.sort_by_shard();
        batch
    }

    /// Applies one sender shard's chunk (indexes into the batch, in batch order) under
    /// the shard's lock: claims its ids, reserves one number per claimed event, applies
    /// them, merges the chunk's credits into the books and settles the claims.
    fn apply_chunk(
        &self,
        s: usize,
        chunk: &[u32],
        batch: &Batch<'_>,
        outcomes: &mut [Outcome],
        scratch: &mut ChunkScratch,
    ) {
        let (events, hashes) = (batch.events, &batch.hashes);
        let ChunkScratch { verdicts, settled } = scratch;
        let gate = self.gate.read();
        let mut shard = self.senders[s].lock();
        let claim = ChunkClaim {
            events,
            hashes,
            fingerprints: &batch.fingerprints,
            issued_ms: batch.issued_ms,
            route: route_tag(Route::Sender(s)),
            stamp: batch.stamp,
        };
        self.claim_ids(&claim, chunk, verdicts);
        // Reserve exactly one number per claimed event, so that numbers never skip.
        let claimed = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Apply))
            .count();
        let first = self.next_seq.fetch_add(claimed as u64, Ordering::AcqRel);
        assert!(first > 0, "sequence numbers start at 1");
        // Under the gate: a payout sees the time of every event numbered before it. (Read
        // first: the clock only grows, and most chunks do not move it.)
        if claimed > 0 && self.hold_clock.load(Ordering::Acquire) < batch.stamp.0 {
            self.hold_clock.fetch_max(batch.stamp.0, Ordering::AcqRel);
        }
        let mut next = first;
        settled.clear();
        shard.unrecorded_gifts.clear();
        // The windows' pairs are warmed too when they are kept (leaderboards.rs).
        let windows_hour = self
            .config
            .windows
            .enabled
            .then(|| super::event::hour_of(batch.stamp));
        for (block, verdicts) in chunk.chunks(WARM_BLOCK).zip(verdicts.chunks(WARM_BLOCK)) {
            let block_events = block.iter().map(|&i| &events[i as usize]);
            std::hint::black_box(shard.warm(block_events, windows_hour));
            for (&i, verdict) in block.iter().zip(verdicts) {
                let i = i as usize;
                outcomes[i] = match *verdict {
                    Verdict::Apply => {
                        let (event, stamp) = (&events[i], batch.stamp);
                        let outcome =
                            shard.apply(&gate, &self.config, event, next, stamp, batch.period);
                        next += 1;
                        settled.push((hashes[i], outcome));
                        outcome
                    }
                    Verdict::Answer(outcome) => outcome,
                    Verdict::SameAsEarlier => self.same_as_earlier(settled, hashes[i]),
                };
            }
        }
        assert!(
            next - first == claimed as u64 && settled.len() == claimed,
            "every number reserved is applied and settled once"
        );
        if claimed > 0 && self.battles_on() {
            // The gifts applied now (a retry's outcome is a duplicate or numbered earlier).
            let applied =
                chunk
                    .iter()
                    .filter_map(|&i| match (&events[i as usize], outcomes[i as usize]) {
                        (Event::Gift(g), o)
                            if !o.duplicate
                                && o.seq >= first
                                && matches!(o.status, Status::Accepted(_)) =>
                        {
                            Some((*g, o.seq, batch.stamp))
                        }
                        _ => None,
                    });
            self.battle_gifts(s, &gate, applied, &shard.unrecorded_gifts);
        }
        self.merge_credits(&mut shard, &gate, batch.stamp);
        drop(gate);
        self.settle_ids(settled);
    }

    /// The answer for a retry of an earlier event of its chunk (`hash` is its id's): the
    /// event the index took it for, the one with the same key in the same id shard (ids
    /// that differ elsewhere in their hash are one id to the index).
    fn same_as_earlier(&self, settled: &[(IdHash, Outcome)], hash: IdHash) -> Outcome {
        let same = |h: IdHash| h.key() == hash.key() && self.id_shard(h) == self.id_shard(hash);
        match settled.iter().rev().find(|(h, _)| same(*h)) {
            Some(&(_, original)) => Outcome {
                duplicate: true,
                ..original
            },
            // Another chunk's pending id with this content's check (a 2^-32 chance:
            // content names the sender): refused.
            None => unrecorded(RejectCode::EventIdReused),
        }
    }

    /// The answer for an event deferred as a repeat of an earlier one of its batch with
    /// other content: a retry if its id holds its content by now, else `EVENT_ID_REUSED`.
    fn answer_deferred(
        &self,
        event: &Event,
        hash: IdHash,
        fingerprint: EventFingerprint,
        stamp: Stamp,
    ) -> Outcome {
        let route = route_tag(self.route(event));
        let legacy = self
            .legacy_claim(event, fingerprint, route, stamp)
            .filter(|o| o.duplicate);
        legacy.unwrap_or_else(|| {
            self.ids[self.id_shard(hash)]
                .lock()
                .lookup(hash, fingerprint, route, stamp)
                .map_or(unrecorded(RejectCode::EventIdReused), |original| Outcome {
                    duplicate: true,
                    ..original
                })
        })
    }

    /// Applies a payout or a goal under its book shard's lock, reserving its number there
    /// (or using `seq` in replay).
    /// Live: `fingerprint` is the event's, `since` as for [`IdWindow::claim`].
    pub(super) fn apply_to_book(
        &self,
        event: &Event,
        id: IdHash,
        fingerprint: EventFingerprint,
        route: Route,
        stamp: Stamp,
        since: u64,
    ) -> Outcome {
        if let Route::Reversal(s) = route {
            return self.apply_reversal(event, (id, fingerprint), s, stamp, since);
        }
        if let Route::Battle = route {
            return self.apply_battle(event, (id, fingerprint), stamp, since);
        }
        // A payout reads the credits: it waits for the chunks between reserving their
        // numbers and merging their credits, and holds off new ones (module doc). A
        // settlement holds it shared, like a chunk: it moves the ledger's time and holds
        // what it adds under the economy in force at its number.
        let write = matches!(event, Event::Payout(_)).then(|| self.gate.write());
        let read = matches!(event, Event::Settlement(_)).then(|| self.gate.read());
        let mut book = self.lock_book(route);
        if let Some(held) = self.legacy_claim(event, fingerprint, route_tag(route), stamp) {
            return held;
        }
        let mut ids = self.ids[self.id_shard(id)].lock();
        match ids.claim(id, fingerprint, route_tag(route), stamp, since) {
            Claim::Fresh => {}
            Claim::Retry(Some(original)) => {
                return Outcome {
                    duplicate: true,
                    ..original
                };
            }
            // Pending ids belong to sender chunks, whose kinds differ: other content.
            Claim::Retry(None) | Claim::Reused => return unrecorded(RejectCode::EventIdReused),
            Claim::Forgotten => return unrecorded(RejectCode::EventExpired),
            Claim::Full => return unrecorded(RejectCode::Unavailable),
        }
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let economy = write.as_deref().or(read.as_deref());
        if economy.is_some() {
            self.hold_clock.fetch_max(stamp.0, Ordering::AcqRel);
        }
        let outcome = self.apply_in_book(&mut book, economy, event, seq, stamp);
        ids.settle(id, outcome);
        outcome
    }

    /// `economy`: the one in force, for a payout (which holds the gate exclusively) and
    /// a settlement (shared); the ledger's time has been moved to `stamp` for them.
    pub(super) fn apply_in_book(
        &self,
        book: &mut BookGuard<'_>,
        economy: Option<&Arc<Economy>>,
        event: &Event,
        seq: u64,
        stamp: Stamp,
    ) -> Outcome {
        match (event, book) {
            (Event::Payout(p), BookGuard::Creator(book)) => {
                let economy = economy.expect("a payout holds the gate");
                let clock = self.hold_clock.load(Ordering::Acquire);
                book.payout(economy, &self.config, p, seq, (stamp, clock))
            }
            (Event::Settlement(st), BookGuard::Creator(book)) => {
                let economy = economy.expect("a settlement holds the gate");
                let clock = self.hold_clock.load(Ordering::Acquire);
                book.settle((economy, &self.config), st, seq, (stamp, clock))
            }
            (Event::StreamGoal(g), BookGuard::Stream(book)) => {
                book.goal(&self.config, g, seq, stamp)
            }
            _ => unreachable!("payouts and settlements go to creators, goals to streams"),
        }
    }

    /// Merges a chunk's buffered coins, received at `stamp`, into the books, one lock per
    /// book shard touched (the ledger's time is at `stamp` or later already).
    pub(super) fn merge_credits(
        &self,
        shard: &mut MutexGuard<'_, SenderShard>,
        economy: &Economy,
        stamp: Stamp,
    ) {
        let mut pending = shard.take_pending();
        let clock = self.hold_clock.load(Ordering::Acquire);
        let mask = self.mask;
        let mut order = LockOrder::default();
        pending
            .creators
            .sort_unstable_by_key(|(c, _)| shard_of(c.0, mask));
        // The windows' credits (empty while they are off) go with the coins, under the
        // same lock: every one names a creator with pending coins.
        let mut windowed = std::mem::take(&mut shard.windows.pending);
        windowed.sort_unstable_by_key(|e| shard_of(e.0.0, mask));
        let mut w = 0;
        for run in pending
            .creators
            .chunk_by(|a, b| shard_of(a.0.0, mask) == shard_of(b.0.0, mask))
        {
            let j = shard_of(run[0].0.0, mask);
            let mut book = self.creators[order.next(j)].lock();
            for &(creator, coins) in run {
                book.credit(economy, self.config.top_k, creator, coins, (stamp, clock));
            }
            while let Some(&(creator, hour, coins, seq)) = windowed.get(w)
                && shard_of(creator.0, mask) == j
            {
                let (config, k) = (&self.config.windows, self.config.top_k);
                book.windows.credit(config, k, creator, (hour, coins, seq));
                w += 1;
            }
        }
        assert_eq!(
            w,
            windowed.len(),
            "a windowed credit's creator has coins pending"
        );
        windowed.clear();
        shard.windows.pending = windowed;
        let mut order = LockOrder::default();
        pending
            .streams
            .sort_unstable_by_key(|(s, _, _)| shard_of(s.0, mask));
        for run in pending
            .streams
            .chunk_by(|a, b| shard_of(a.0.0, mask) == shard_of(b.0.0, mask))
        {
            let mut book = self.streams[order.next(shard_of(run[0].0.0, mask))].lock();
            for &(stream, creator, coins) in run {
                book.credit(stream, creator, coins);
            }
        }
    }
}
