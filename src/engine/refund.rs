//! Gift reversals (issue #31 feature 3): a `GiftReversal` names an earlier gift of its
//! sender; while the gift's diamonds are still held by the earnings hold, the sender
//! gets the coins back and the creator loses exactly the diamonds that gift credited.
//!
//! # Records
//! Only while a hold is in force (`economy.earnings_hold_ms > 0`) a sender shard keeps,
//! per accepted gift — on a stream or a video: the record says which —, what a reversal
//! needs ([`GiftRecord`]: 72 bytes, ~142 with its map slot and its place in the drop
//! queue; measured by a test). Records are keyed by the gift's sender and event id (an id
//! is unique within the retry horizon only): another sender's gift reusing a held id is
//! recorded apart (review G), whichever shards the senders are in; a sender's gift
//! reusing its own held id is not recorded, and the first gift's record stays, reversed
//! or not (`gift_records`, review F6) — a reversal naming the id judges the first gift
//! (the second answers `NOT_REVERSIBLE` while in the sender's history). Records are dropped once
//! released — at the next gift of the shard stamped at or after their release time, or
//! the next reversal — and at most `engine.gift_records_per_shard_max` are kept per
//! shard: when full, the oldest is dropped early (that gift is no longer reversible:
//! `NOT_REVERSIBLE`; counted in [`GiftRecords::dropped_early`], exported as
//! `giftstream_gift_records_dropped_total`). Without a hold nothing is recorded: a gift
//! pays one branch.
//!
//! # Check order
//! While the gift's record is held (its release time after the ledger's time):
//! 1. no held record of the sender's gift with that id (another user's gift of that id
//!    is another record: answered as an unknown id, nothing of it is revealed) →
//!    answered as without a held record, below;
//! 2. reversed already → `ALREADY_REVERSED`;
//! 3. the sender's balance would overflow → `OVERFLOW`; else accepted.
//!
//! Without a held record — released (at or before the ledger's time), dropped early by
//! the bound, or never recorded — the answer is `NOT_REVERSIBLE` when no hold is in
//! force or the gift is an accepted gift in the sender's recent history
//! (`engine.history_per_user` lines), else `ORIGINAL_NOT_FOUND` (a rejected gift, an id
//! that is not a gift of this sender, or a gift older than both the hold and the
//! history: the ledger no longer knows it). So an answer never depends on when a shard
//! drops a released record, and replays exactly.
//!
//! On a cluster node, a gift to a creator another node owns is `NOT_REVERSIBLE` after
//! check 1 (its diamonds were reported to the owner as a settlement, which keeps the
//! largest report it was sent: a reversal here could not take them back there).
//!
//! # Why a reversal is applied like a payout (gate exclusive)
//! "Still held" is judged by the ledger's time (the hold clock), which a payout also
//! spends by. Live, a sender chunk may see the clock moved by a concurrent chunk with a
//! later stamp; a replay moves it per run. With the gate held exclusively, a reversal
//! sees exactly the time every event numbered before it left (as a payout does, and as
//! replay does), so its outcome replays exactly and a payout can never have spent the
//! diamonds it takes back (a payout spends released diamonds only). A reversal is
//! therefore applied after the sender events of its batch (as payouts are) — reversals
//! are rare; the gift path is untouched. The price, documented for clients (README "Gift
//! reversals", PROTOCOL.md "Order within a request", the OpenAPI description of a
//! batch): a gift placed after a reversal in the same batch runs before it and does not
//! see the refund (`INSUFFICIENT_COINS` if it needs those coins); in a later batch it
//! does (`tests/it/reversal_order.rs`).
//!
//! # Effects (all or nothing, after the checks)
//! Sender shard: the coins back through [`SenderShard::credit_refund`] (the one place a
//! refund credits a wallet; a debt is repaid first, and the history line's `coins_delta`
//! is what reached the balance, as a recharge's — review F3); the per-pair totals of the
//! gift's creator and of its stream or video go down by its coins, their top gifters
//! with them (a full list that loses a listed gifter is rebuilt from the shard's totals:
//! another gifter may come in); the gift counts per catalog code go down (the creator's,
//! and a video's: `ShardVideos::reverse`, the mirror of its `credit`). The spending
//! windows (day, week, month) are **not** given back: what a user spent stays spent
//! against its limits — a refund never lets a user pass a cap, and the windows a gift
//! counted in may be over. Creator book: coins received and the exact diamonds
//! (`Credited`, and the held bucket through `Holds::reduce`), the top creators. Stream
//! book (a gift on a stream): coins received (the goal's progress). A video has no book:
//! its coins are the sender shards' parts, lowered with the pair. Goals and the live
//! feed are per stream: a video's reversal touches no stream. The journaled
//! [`ReversedGift`] names the target, so the read model lowers the same keys.

use super::books::{CreatorShard, StreamShard};
use super::event::{
    Effect, Event, EventFingerprint, EventId, EventKind, GiftReversal, GiftTarget, LogEntry,
    Outcome, RejectCode, ReversedGift, Stamp, Status, StreamId, UserId,
};
use super::gift_records::GiftRecord;
use super::idhash::IdHash;
use super::shard::SenderShard;
use super::topk::GifterTop;
use super::window::Claim;
use super::{Engine, Route, route_tag, shard_of, unrecorded};
use std::sync::atomic::Ordering;

impl SenderShard {
    /// Credits `coins` refunded to `user`: the one place a refund reaches a wallet. A
    /// user who owes coins (a reversed recharge) repays the debt first, as a recharge
    /// does ([`SenderShard::credit_coins`]): only the rest reaches the balance. Returns
    /// the balance after it and the coins that reached it (what the history line shows,
    /// as a recharge's: review F3); `OVERFLOW` changes nothing.
    pub(crate) fn credit_refund(
        &mut self,
        user: UserId,
        coins: u64,
    ) -> Result<(u64, u64), RejectCode> {
        self.credit_coins(user, coins)
            .map(|credit| (credit.balance, credit.to_balance))
    }

    /// Whether `gift` is an accepted gift (on a stream or a video) in `user`'s recent
    /// history.
    fn gift_in_history(&self, user: UserId, gift: EventId) -> bool {
        self.histories.get(&user).is_some_and(|h| {
            h.iter().any(|l| {
                let e = super::shard::HistoryEntry::from(*l);
                e.event_id == gift
                    && matches!(e.kind, EventKind::Gift | EventKind::VideoGift)
                    && e.code.is_none()
            })
        })
    }

    /// The checks of a reversal (module doc), at the ledger's time `clock`, `hold_ms`
    /// the hold in force: the record to reverse, or the code.
    fn judge(&self, r: &GiftReversal, clock: u64, hold_ms: u64) -> Result<GiftRecord, RejectCode> {
        match self.gift_records.get(r.gift, r.sender) {
            Some(record) if record.release_ms > clock => {
                if record.reversed {
                    Err(RejectCode::AlreadyReversed)
                } else {
                    Ok(*record)
                }
            }
            // Released (whether its record is dropped yet or not: the answer must not
            // depend on when a shard drops it), dropped by the bound, or never recorded.
            _ if hold_ms == 0 || self.gift_in_history(r.sender, r.gift) => {
                Err(RejectCode::NotReversible)
            }
            _ => Err(RejectCode::OriginalNotFound),
        }
    }

    /// Applies the sender side of a reversal of `record` (checked by `judge`): the
    /// coins back, the pair totals, top gifters and gift counts down — the creator's,
    /// and the stream's or the video's. Returns the sender's balance after it, the
    /// coins that reached it, and its new totals with the creator and on the target.
    fn reverse(
        &mut self,
        top_k: usize,
        r: &GiftReversal,
        record: &GiftRecord,
    ) -> Result<((u64, u64), u64, u64), RejectCode> {
        let balance = self.credit_refund(r.sender, record.coins)?;
        let coins = record.coins;
        let creator_total = self
            .creator_gifters
            .lower((record.creator, r.sender), coins);
        if let Some(part) = self.creators.get_mut(&record.creator) {
            if let Some(i) = part.gifts.iter().position(|(g, _)| *g == record.gift) {
                let n = &mut part.gifts[i].1;
                *n = n.saturating_sub(u128::from(record.count));
                if *n == 0 {
                    part.gifts.remove(i);
                }
            }
            let creator = record.creator;
            part.top.lower(top_k, r.sender.0, creator_total, || {
                self.creator_gifters
                    .iter()
                    .filter(|((c, _), _)| *c == creator)
                    .map(|((_, u), t)| (t.0, u.0))
                    .collect()
            });
        }
        let target_total = match record.target() {
            GiftTarget::Stream(stream) => {
                let total = self.stream_gifters.lower((stream, r.sender), coins);
                if let Some(part) = self.streams.get_mut(&stream) {
                    part.top.lower(top_k, r.sender.0, total, || {
                        self.stream_gifters
                            .iter()
                            .filter(|((s, _), _)| *s == stream)
                            .map(|((_, u), t)| (t.0, u.0))
                            .collect()
                    });
                }
                total
            }
            GiftTarget::Video(video) => {
                self.videos
                    .reverse(top_k, (video, r.sender), (record.gift, record.count), coins)
            }
        };
        let rec = self
            .gift_records
            .get_mut(r.gift, r.sender)
            .expect("judged record");
        rec.reversed = true;
        let records = &mut self.gift_records;
        records.coins_refunded += u128::from(coins);
        records.nanos_reversed += record.nanos();
        records.reversals += 1;
        Ok((balance, creator_total, target_total))
    }
}

impl CreatorShard {
    /// Takes back a reversed gift: `coins` received and `nanos` credited, held until
    /// `release_ms` (still held at `clock`: checked by the sender shard); the top
    /// creators follow.
    fn reverse(&mut self, top_k: usize, g: &ReversedGift, release_ms: u64, clock: u64) {
        let totals = self.creators.entry(g.creator).or_default();
        totals.coins_received = totals.coins_received.saturating_sub(u128::from(g.coins));
        let credited = self.credited.entry(g.creator).or_default();
        credited.take_back(g.nanos);
        let held = self.holds.reduce(g.creator, release_ms, g.nanos, clock);
        assert!(
            held || g.nanos == 0,
            "a reversed gift's diamonds are held (release {release_ms} > clock {clock})"
        );
        if self.top.score_of(g.creator.0).is_some() {
            // Diamonds went down: the list is exact only because scores grow, so it is
            // rebuilt from the shard's creators (another may come in).
            let mut top = super::topk::TopK::default();
            for (c, t) in &self.creators {
                if t.coins_received > 0 {
                    top.offer(top_k, c.0, self.credited(*c));
                }
            }
            self.top = top;
        }
    }
}

impl StreamShard {
    /// Takes back a reversed gift's coins (the goal's progress goes down with them).
    fn reverse(&mut self, stream: StreamId, coins: u64) {
        if let Some(t) = self.streams.get_mut(&stream) {
            t.coins_received = t.coins_received.saturating_sub(u128::from(coins));
        }
    }
}

impl GifterTop {
    /// Records that `id`'s score went down to `score` (0: gone). A listed gifter of a
    /// full list may now rank below one outside it: then the list is rebuilt from
    /// `all()`, every `(score, id)` of its key (O(pairs in the shard): reversals are
    /// rare).
    pub(crate) fn lower(
        &mut self,
        k: usize,
        id: u64,
        score: u64,
        all: impl FnOnce() -> Vec<(u64, u64)>,
    ) {
        let Some(at) = self.position(id) else {
            return; // not listed: the list does not change
        };
        if self.len() < k {
            // Not full: every gifter with a score is listed.
            self.set_or_remove(at, score);
            return;
        }
        let mut scores = all();
        scores.retain(|e| e.0 > 0);
        self.rebuild(k, scores);
    }
}

impl Engine {
    /// Applies a gift reversal live (routed to sender shard `s`), the gate held
    /// exclusively (module doc).
    pub(super) fn apply_reversal(
        &self,
        event: &Event,
        (id, fingerprint): (IdHash, EventFingerprint),
        s: usize,
        stamp: Stamp,
        since: u64,
    ) -> Outcome {
        let Event::GiftReversal(r) = event else {
            unreachable!("a reversal route holds reversals")
        };
        let gate = self.gate.write();
        let mut shard = self.senders[s].lock();
        let route = route_tag(Route::Reversal(s));
        if let Some(held) = self.legacy_claim(event, fingerprint, route, stamp) {
            return held;
        }
        // An id shard is a leaf lock: not held while the books are locked below (a
        // goal holds its stream shard, then an id shard). The claim stays pending in
        // between under the sender shard's lock, so no cut sees it.
        let claim = self.ids[self.id_shard(id)]
            .lock()
            .claim(id, fingerprint, route, stamp, since);
        match claim {
            Claim::Fresh => {}
            Claim::Retry(Some(original)) => {
                return Outcome {
                    duplicate: true,
                    ..original
                };
            }
            Claim::Retry(None) | Claim::Reused => return unrecorded(RejectCode::EventIdReused),
            Claim::Forgotten => return unrecorded(RejectCode::EventExpired),
            Claim::Full => return unrecorded(RejectCode::Unavailable),
        }
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        self.hold_clock.fetch_max(stamp.0, Ordering::AcqRel);
        let clock = self.hold_clock.load(Ordering::Acquire);
        let outcome = self.reverse(&mut shard, gate.earnings_hold_ms, r, seq, (stamp, clock));
        self.ids[self.id_shard(id)].lock().settle(id, outcome);
        outcome
    }

    /// Replays a journaled reversal with its number (after every earlier event).
    pub(super) fn replay_reversal(&self, entry: &LogEntry, s: usize) -> Outcome {
        let Event::GiftReversal(r) = &entry.event else {
            unreachable!("a reversal route holds reversals")
        };
        let gate = self.gate.write();
        let mut shard = self.senders[s].lock();
        self.hold_clock.fetch_max(entry.stamp.0, Ordering::AcqRel);
        let clock = self.hold_clock.load(Ordering::Acquire);
        let r = GiftReversal::new(r.id, r.sender, r.gift);
        let outcome = self.reverse(
            &mut shard,
            gate.earnings_hold_ms,
            &r,
            entry.seq,
            (entry.stamp, clock),
        );
        drop(gate);
        // Replayed events are committed already: not logged again.
        if let Some(i) = shard.log.iter().rposition(|e| e.seq == entry.seq) {
            shard.log.remove(i);
        }
        drop(shard);
        let id = self.id_hash(entry.event.id());
        self.ids[self.id_shard(id)].lock().remember(
            id,
            entry.event.fingerprint(),
            outcome,
            entry.stamp,
        );
        outcome
    }

    /// Judges and applies reversal `r` numbered `seq` at `stamp`, the ledger's time
    /// `clock`, under the exclusive gate and the sender shard's lock: the sender side,
    /// then the creator's and the stream's books (one lock at a time); logs it.
    fn reverse(
        &self,
        shard: &mut SenderShard,
        hold_ms: u64,
        r: &GiftReversal,
        seq: u64,
        (stamp, clock): (Stamp, u64),
    ) -> Outcome {
        // A gift to another cluster node's creator was settled there: not reversible
        // here (the owner keeps the largest report it was sent, so a lower one would
        // not take the diamonds back; `set_creator_owned`).
        let judged = shard.judge(r, clock, hold_ms).and_then(|record| {
            if self.owns_creator(record.creator) {
                Ok(record)
            } else {
                Err(RejectCode::NotReversible)
            }
        });
        let done = judged.and_then(|record| {
            shard
                .reverse(self.config.top_k, r, &record)
                .map(|after| (record, after))
        });
        let mut reversed = None;
        let mut totals = None;
        // The coins that reached the balance (a debt is repaid first).
        let mut refunded = 0;
        let status = match done {
            Ok((record, ((balance, to_balance), creator_total, target_total))) => {
                refunded = to_balance;
                let gift = ReversedGift {
                    creator: record.creator,
                    target: record.target(),
                    gift: record.gift,
                    count: record.count,
                    coins: record.coins,
                    nanos: record.nanos(),
                    hour: Some(record.hour),
                };
                reversed = Some(Box::new(gift));
                // As a gift's: the `stream` total is the sender's on the gift's target.
                totals = Some(super::event::GiftTotals {
                    creator: creator_total,
                    stream: target_total,
                });
                let c = shard_of(record.creator.0, self.mask);
                let mut book = self.creators[c].lock();
                book.reverse(self.config.top_k, &gift, record.release_ms, clock);
                // The windows the gift counted in (its stamp's) go down with it.
                if self.config.windows.enabled {
                    let stream = match record.target() {
                        GiftTarget::Stream(stream) => Some(stream),
                        GiftTarget::Video(_) => None,
                    };
                    let counted = super::leaderboards::Counted {
                        creator: record.creator,
                        stream,
                        sender: r.sender,
                        gift: (record.gift, record.count),
                        coins: record.coins,
                        seq,
                    };
                    let k = self.config.top_k;
                    shard.windows.reverse(k, record.hour, counted);
                    let windowed = (record.hour, record.coins, seq);
                    book.windows.reverse(k, record.creator, windowed);
                }
                drop(book);
                // A video has no book (its figures are the sender shards' parts, lowered
                // above); a stream's coins (its goal's progress) are in its book.
                if let GiftTarget::Stream(stream) = record.target() {
                    let k = shard_of(stream.0, self.mask);
                    self.streams[k].lock().reverse(stream, record.coins);
                    self.battle_reversal((r.sender, r.gift, stream), seq, stamp);
                }
                Status::Accepted(Effect::Coins(balance))
            }
            Err(code) => Status::Rejected(code),
        };
        // Released records go once judged (deterministic: the ledger's time).
        shard.gift_records.prune(clock);
        let outcome = Outcome::new(seq, status, false);
        shard.push_history(
            &self.config,
            r.sender,
            (r.id, EventKind::GiftReversal, seq, stamp),
            outcome,
            // What reached the balance, as a recharge's line (review F3): the part that
            // repaid a debt shows in the wallet's `coins_owed`.
            (refunded, false),
        );
        if self.config.keep_log {
            shard.log.push(LogEntry {
                seq,
                stamp,
                event: Event::GiftReversal(*r),
                outcome,
                totals,
                reversed,
            });
        }
        outcome
    }

    /// Gift records kept by the sender shards, and those dropped early by the bound, in
    /// total.
    pub fn gift_records(&self) -> (usize, u64) {
        self.senders.iter().fold((0, 0), |acc, s| {
            let g = &s.lock().gift_records;
            (acc.0 + g.len(), acc.1 + g.dropped_early)
        })
    }
}
