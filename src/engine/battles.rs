//! PK battles: streams competing for coins over a window of the ledger's time.
//!
//! A battle is an event ([`Battle`], routed like a gift reversal: applied with the gate
//! held exclusively), so every gift is numbered either before it (not counted) or after
//! it (counted when its stamp is inside the window): what a battle counts is a function
//! of the journal, and a replay (book events split the sender runs) counts the same.
//!
//! - **Score:** per side (stream), the coins of the accepted gifts to it numbered after
//!   the battle and before its close, and stamped in `[start_ms, end_ms)`; per gifter
//!   the same, ties broken by the sequence number that reached the total (earlier
//!   first), then the user id.
//! - **The close** ([`BattleClose`], review B2): an event of its own, applied with the
//!   gate exclusive, accepted when the battle is held, not closed yet and the close is
//!   stamped at or after `end_ms` (else `BATTLE_NOT_ENDED` / `BATTLE_NOT_FOUND`,
//!   recorded). From its number on the result is final: no gift counts (a batch stamped
//!   before the end may be numbered after the close: it does not), no reversal lowers.
//!   Idempotent by the battle's state ([`Battles::closed_original`]), never claimed in
//!   the id index: an early close does not hold the real one off. Journals written
//!   before closes existed (formats 8 and 9) replay as written: their battles are closed
//!   by no event.
//! - **Reversals:** an accepted reversal of a counted gift lowers the side and the
//!   gifter while the battle is open; once it is **frozen** — at its close, or already at
//!   an event applied with the gate exclusive (a battle, a close or a reversal) stamped at
//!   or after `end_ms`, as before closes existed — reversals change nothing. To know a
//!   reversal's gift was counted, an open battle keeps its counted gifts' ids while an
//!   earnings hold is in force (no gift is reversible otherwise), at most
//!   [`COUNTED_PER_SHARD_MAX`] per sender shard (a shard applies its gifts in sequence
//!   order live and in replay, so the bound keeps the same ones); a gift past the bound
//!   counts, its reversal does not lower the battle. Only a gift that got a gift record
//!   of its own is kept (review B3): a sender reusing its own held id keeps the first
//!   gift's record (`gift_records`, F6), which a reversal of the id reverses — so the
//!   battle is lowered by exactly the gift reversed (the first's entry stays; the
//!   second, not reversible by id, has none). Exact, and no memory per gift record (72
//!   bytes, unchanged): the shard lists the numbers of a chunk's unrecorded gifts.
//!   Freezing drops them.
//! - **Bounds:** `engine.battles_max` battles held; an ended one is dropped
//!   `engine.battle_retention_ms` after its end (judged at the next battle recorded).
//!   Memory per battle (measured, `cargo bench --bench memory -- battle-gifter`): ~680
//!   bytes for two streams (~1,050 just after the battles' tables doubled) + ~59 per
//!   (side, gifter) pair + ~56 per counted gift id while open under a hold (computed). A battle is dropped by the retention whether or not it
//!   was closed (as journals of formats 8 and 9 were written); the service closes
//!   battles within a fraction of a second of their end, far inside it.
//!
//! Size: the battles' state, their rules (the battle, its close) and the engine's entry
//! points to them (live, replay, reads) are one contract about what a battle counts;
//! split, the order arguments of the module doc would be read in two places.
//!
//! Lock order: `Engine::battles` is a leaf, taken under a sender shard (a chunk's gifts)
//! or with the gate exclusive (battles, reversals); a cut takes it last.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::event::{
    Battle, BattleClose, BattleId, Effect, EventId, Gift, Outcome, RejectCode, Stamp, Status,
    StreamId, UserId,
};

/// Counted gift ids an open battle keeps per sender shard, for reversals (module doc).
pub const COUNTED_PER_SHARD_MAX: usize = 1 << 16;
/// Top gifters shown per side.
pub const BATTLE_TOP_GIFTERS: usize = 10;

/// One side of a battle: a stream's score and its gifters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Side {
    pub coins: u128,
    /// Counted gifts (less reversed ones).
    pub gifts: u64,
    /// Per gifter: coins, and the sequence number that reached them (ties).
    pub gifters: FxHashMap<UserId, (u128, u64)>,
}

/// A battle held by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BattleBook {
    pub spec: Battle,
    /// The battle event's number: gifts numbered after it count.
    pub seq: u64,
    pub stamp: Stamp,
    pub sides: Vec<Side>,
    /// Frozen (module doc): reversals no longer lower it.
    pub closed: bool,
    /// The number of the accepted [`BattleClose`] (0: not closed by one): from it on no
    /// gift counts and the result is final. Not in the book's encoding: snapshot format
    /// 13 appends the closes apart ([`Battles::closes`]; older formats had none).
    #[serde(skip)]
    pub close_seq: u64,
    /// While open under a hold: per sender shard, counted gifts by (sender, id) → (side,
    /// coins).
    pub counted: Vec<FxHashMap<(UserId, EventId), (u8, u64)>>,
}

/// Every battle held, and which streams they name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Battles {
    pub held: FxHashMap<BattleId, BattleBook>,
    /// Derived from `held` (rebuilt at load).
    #[serde(skip)]
    by_stream: FxHashMap<StreamId, Vec<BattleId>>,
}

/// A side as read: the stream, its score and top gifters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattleSideView {
    pub stream: StreamId,
    pub coins: u128,
    pub gifts: u64,
    /// Best first: (user, coins).
    pub top_gifters: Vec<(UserId, u128)>,
}

/// A battle as read ([`super::Engine::battle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattleView {
    pub battle: BattleId,
    pub start_ms: u64,
    pub end_ms: u64,
    pub seq: u64,
    /// The number of its accepted close: the result is final (`None` until closed).
    pub closed_seq: Option<u64>,
    pub sides: Vec<BattleSideView>,
}

/// Whether a battle is before, inside or after its window at a time, and whether its
/// result is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BattleState {
    Scheduled,
    Live,
    /// The window is over but its close is not committed yet: the scores may still
    /// change (a gift stamped before the end, numbered before the close).
    Ending,
    /// Closed by its close event, committed: the result is final.
    Ended,
}

impl BattleState {
    pub fn as_str(self) -> &'static str {
        match self {
            BattleState::Scheduled => "scheduled",
            BattleState::Live => "live",
            BattleState::Ending => "ending",
            BattleState::Ended => "ended",
        }
    }
}

impl BattleView {
    /// The state at `now_ms` when the events through `committed_through` are durable:
    /// `ended` only once its close is (review B2: the result never changes after it).
    pub fn state_at(&self, now_ms: u64, committed_through: u64) -> BattleState {
        if self.closed_seq.is_some_and(|s| s <= committed_through) {
            BattleState::Ended
        } else if now_ms < self.start_ms {
            BattleState::Scheduled
        } else if now_ms < self.end_ms {
            BattleState::Live
        } else {
            BattleState::Ending
        }
    }

    /// The side with the most coins, `None` on a draw (two or more with the most).
    pub fn leader(&self) -> Option<StreamId> {
        let best = self.sides.iter().map(|s| s.coins).max()?;
        let mut leaders = self.sides.iter().filter(|s| s.coins == best);
        let first = leaders.next()?;
        leaders.next().is_none().then_some(first.stream)
    }
}

impl Battles {
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Rebuilds the stream index (after a load).
    pub fn reindex(&mut self) {
        self.by_stream.clear();
        for (&id, b) in &self.held {
            for &s in b.spec.streams() {
                self.by_stream.entry(s).or_default().push(id);
            }
        }
    }

    /// Closes the battles ended at `stamp` (an event applied with the gate exclusive)
    /// and drops those ended `retention_ms` before it (`prune`).
    fn close(&mut self, stamp: Stamp, retention_ms: Option<u64>) {
        for b in self.held.values_mut() {
            if !b.closed && b.spec.end_ms() <= stamp.0 {
                b.closed = true;
                b.counted = Vec::new();
            }
        }
        if let Some(retention_ms) = retention_ms {
            let before = self.held.len();
            self.held
                .retain(|_, b| b.spec.end_ms().saturating_add(retention_ms) > stamp.0);
            if self.held.len() != before {
                self.reindex();
            }
        }
    }

    /// Applies battle event `b` numbered `seq` at `stamp` (gate exclusive): its rules in
    /// order (content, then the id, then the streams, then the bound).
    pub fn open(
        &mut self,
        (battles_max, retention_ms): (usize, u64),
        b: &Battle,
        seq: u64,
        stamp: Stamp,
    ) -> Outcome {
        self.close(stamp, Some(retention_ms));
        let code = if !b.is_valid() || b.end_ms() <= stamp.0 {
            Some(RejectCode::InvalidBattle)
        } else if self.held.contains_key(&b.battle) {
            Some(RejectCode::BattleExists)
        } else if self.overlaps(b) {
            Some(RejectCode::StreamInBattle)
        } else if self.held.len() >= battles_max {
            Some(RejectCode::BattlesFull)
        } else {
            None
        };
        if let Some(code) = code {
            return Outcome::new(seq, Status::Rejected(code), false);
        }
        let book = BattleBook {
            spec: *b,
            seq,
            stamp,
            sides: vec![Side::default(); b.streams().len()],
            closed: false,
            close_seq: 0,
            counted: Vec::new(),
        };
        for &s in b.streams() {
            self.by_stream.entry(s).or_default().push(b.battle);
        }
        self.held.insert(b.battle, book);
        Outcome::new(seq, Status::Accepted(Effect::Stored), false)
    }

    /// The original outcome of battle `b` when it is held with exactly this content (a
    /// retry after the id index forgot it).
    pub fn same(&self, b: &Battle) -> Option<Outcome> {
        let held = self.held.get(&b.battle).filter(|h| h.spec == *b)?;
        Some(Outcome {
            duplicate: true,
            ..Outcome::new(held.seq, Status::Accepted(Effect::Stored), false)
        })
    }

    /// The original outcome of a close of battle `battle` when it is closed already (a
    /// retry, or the service's close after a client's): the accepted close, as a
    /// duplicate.
    pub fn closed_original(&self, battle: BattleId) -> Option<Outcome> {
        let held = self.held.get(&battle).filter(|h| h.close_seq != 0)?;
        Some(Outcome {
            duplicate: true,
            ..Outcome::new(held.close_seq, Status::Accepted(Effect::Stored), false)
        })
    }

    /// Applies close `c` numbered `seq` at `stamp` (gate exclusive; the caller answered
    /// a close of a closed battle with [`Battles::closed_original`]): accepted when the
    /// battle is held and `stamp` is at or after its end; every battle ended by `stamp`
    /// is frozen for reversals too, as by any exclusive event.
    pub fn close_event(&mut self, c: &BattleClose, seq: u64, stamp: Stamp) -> Outcome {
        self.close(stamp, None);
        let code = match self.held.get_mut(&c.battle) {
            None => Some(RejectCode::BattleNotFound),
            Some(b) if stamp.0 < b.spec.end_ms() => Some(RejectCode::BattleNotEnded),
            Some(b) => {
                debug_assert!(b.closed && b.close_seq == 0);
                b.close_seq = seq;
                None
            }
        };
        let status = code.map_or(Status::Accepted(Effect::Stored), Status::Rejected);
        Outcome::new(seq, status, false)
    }

    /// The battles held, not closed by a close event, whose window ended at or before
    /// `now_ms`, oldest end first (the service closes them).
    pub fn to_close(&self, now_ms: u64) -> Vec<BattleId> {
        let mut due: Vec<(u64, BattleId)> = self
            .held
            .values()
            .filter(|b| b.close_seq == 0 && b.spec.end_ms() <= now_ms)
            .map(|b| (b.spec.end_ms(), b.spec.battle))
            .collect();
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The closes of the battles held, by battle id (snapshot format 13).
    pub fn closes(&self) -> Vec<(BattleId, u64)> {
        let mut closes: Vec<(BattleId, u64)> = self
            .held
            .iter()
            .filter(|(_, b)| b.close_seq != 0)
            .map(|(&id, b)| (id, b.close_seq))
            .collect();
        closes.sort_unstable();
        closes
    }

    /// Sets the closes from [`Battles::closes`] (a battle no longer held is skipped).
    pub fn set_closes(&mut self, closes: &[(BattleId, u64)]) {
        for &(id, seq) in closes {
            if let Some(b) = self.held.get_mut(&id) {
                b.close_seq = seq;
            }
        }
    }

    fn overlaps(&self, b: &Battle) -> bool {
        b.streams().iter().any(|s| {
            self.by_stream.get(s).is_some_and(|ids| {
                ids.iter().any(|id| {
                    let o = &self.held[id].spec;
                    o.start_ms < b.end_ms() && b.start_ms < o.end_ms()
                })
            })
        })
    }

    /// Counts accepted gift `g` (numbered `seq`, stamped `stamp`, `coins`) applied on
    /// sender shard `shard` of `shards`; `reversible`: the gift got a gift record of its
    /// own (an earnings hold is in force, and it did not reuse its sender's held id:
    /// review B3), so a reversal of it is a reversal of exactly this gift.
    pub fn gift(
        &mut self,
        (shard, shards): (usize, usize),
        g: &Gift,
        (seq, stamp, coins): (u64, Stamp, u64),
        reversible: bool,
    ) {
        let Some(ids) = self.by_stream.get(&g.stream) else {
            return;
        };
        for id in ids {
            let b = self.held.get_mut(id).expect("indexed battles are held");
            if seq <= b.seq || b.close_seq != 0 || !b.spec.holds(stamp.0) {
                continue;
            }
            let Some(side) = b.spec.streams().iter().position(|s| *s == g.stream) else {
                continue;
            };
            let s = &mut b.sides[side];
            s.coins += u128::from(coins);
            s.gifts += 1;
            let gifter = s.gifters.entry(g.sender).or_default();
            gifter.0 += u128::from(coins);
            gifter.1 = seq;
            if reversible && !b.closed {
                if b.counted.len() < shards {
                    b.counted.resize_with(shards, FxHashMap::default);
                }
                let counted = &mut b.counted[shard];
                // A full map still replaces the entry of an id this gift's own record
                // took over (an older gift's, released or dropped): a reversal of this
                // gift lowers by this gift, never by the stale one (review M2).
                if counted.len() < COUNTED_PER_SHARD_MAX || counted.contains_key(&(g.sender, g.id))
                {
                    counted.insert((g.sender, g.id), (side as u8, coins));
                }
            }
        }
    }

    /// An accepted reversal (numbered `seq`, stamped `stamp`, gate exclusive) of gift
    /// `gift` of `sender` to `stream`: lowers the battle that counted it, while open.
    pub fn reverse(
        &mut self,
        shard: usize,
        (sender, gift, stream): (UserId, EventId, StreamId),
        seq: u64,
        stamp: Stamp,
    ) {
        self.close(stamp, None);
        let Some(ids) = self.by_stream.get(&stream) else {
            return;
        };
        for id in ids {
            let b = self.held.get_mut(id).expect("indexed battles are held");
            if b.closed {
                continue;
            }
            let Some((side, coins)) = b
                .counted
                .get_mut(shard)
                .and_then(|c| c.remove(&(sender, gift)))
            else {
                continue;
            };
            let s = &mut b.sides[usize::from(side)];
            s.coins -= u128::from(coins);
            s.gifts -= 1;
            let gifter = s.gifters.get_mut(&sender).expect("a counted gift's gifter");
            gifter.0 -= u128::from(coins);
            gifter.1 = seq;
        }
    }

    pub fn view(&self, id: BattleId, top: usize) -> Option<BattleView> {
        self.held.get(&id).map(|b| b.view(top))
    }

    /// The battle of `stream` whose window holds `stamp_ms`.
    pub fn of_stream_at(&self, stream: StreamId, stamp_ms: u64) -> Option<BattleView> {
        let ids = self.by_stream.get(&stream)?;
        ids.iter()
            .map(|id| &self.held[id])
            .find(|b| b.close_seq == 0 && b.spec.holds(stamp_ms))
            .map(|b| b.view(0))
    }

    /// Every battle, sorted, for [`super::Engine::state_fingerprint`].
    pub fn canonical(&self) -> String {
        let mut held: Vec<String> = self
            .held
            .iter()
            .map(|(id, b)| {
                let sides: Vec<String> = b
                    .sides
                    .iter()
                    .map(|s| {
                        let mut g: Vec<_> = s.gifters.iter().collect();
                        g.sort_unstable();
                        format!("{} {} {g:?}", s.coins, s.gifts)
                    })
                    .collect();
                let mut counted: Vec<_> = b.counted.iter().flat_map(|c| c.iter()).collect();
                counted.sort_unstable();
                format!(
                    "{id:?} {:?} seq {} {:?} closed {} at {} {sides:?} {counted:?}",
                    b.spec, b.seq, b.stamp, b.closed, b.close_seq
                )
            })
            .collect();
        held.sort_unstable();
        held.join("; ")
    }

    /// The audit's check: each side's coins and gifts are its gifters' sums; counted ids
    /// sum within their sides.
    pub fn check(&self) -> Result<(), String> {
        for (id, b) in &self.held {
            if b.sides.len() != b.spec.streams().len() {
                return Err(format!("battle {id}: {} sides", b.sides.len()));
            }
            for (i, s) in b.sides.iter().enumerate() {
                let sum: u128 = s.gifters.values().map(|g| g.0).sum();
                if sum != s.coins {
                    return Err(format!(
                        "battle {id} side {i}: coins {} but its gifters gave {sum}",
                        s.coins
                    ));
                }
                let counted: u128 = b
                    .counted
                    .iter()
                    .flat_map(|c| c.values())
                    .filter(|(side, _)| usize::from(*side) == i)
                    .map(|(_, coins)| u128::from(*coins))
                    .sum();
                if counted > s.coins {
                    return Err(format!(
                        "battle {id} side {i}: reversible gifts of {counted} coins above its {}",
                        s.coins
                    ));
                }
            }
        }
        Ok(())
    }
}

impl BattleBook {
    fn view(&self, top: usize) -> BattleView {
        let sides = self
            .spec
            .streams()
            .iter()
            .zip(&self.sides)
            .map(|(&stream, s)| {
                // Scores only (`top` 0: the feed's `battle` after every run): no copy of
                // the gifters, which the battles' lock would hold for (review B5).
                let mut gifters: Vec<(UserId, u128, u64)> = if top == 0 {
                    Vec::new()
                } else {
                    s.gifters
                        .iter()
                        .filter(|(_, g)| g.0 > 0)
                        .map(|(&u, &(coins, seq))| (u, coins, seq))
                        .collect()
                };
                let by_rank = |a: &(UserId, u128, u64), b: &(UserId, u128, u64)| {
                    b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0))
                };
                if gifters.len() > top && top > 0 {
                    gifters.select_nth_unstable_by(top - 1, by_rank);
                }
                gifters.truncate(top);
                gifters.sort_unstable_by(by_rank);
                BattleSideView {
                    stream,
                    coins: s.coins,
                    gifts: s.gifts,
                    top_gifters: gifters.into_iter().map(|(u, c, _)| (u, c)).collect(),
                }
            })
            .collect();
        BattleView {
            battle: self.spec.battle,
            start_ms: self.spec.start_ms,
            end_ms: self.spec.end_ms(),
            seq: self.seq,
            closed_seq: (self.close_seq != 0).then_some(self.close_seq),
            sides,
        }
    }
}

impl super::Engine {
    /// Applies battle event `event` (live): the gate exclusive, so every gift is
    /// numbered before or after it (module doc). A battle held with this very content
    /// answers its original outcome, even after the id index forgot the id; other
    /// content under its id is `EVENT_ID_REUSED` while the index remembers the id (not
    /// recorded), `BATTLE_EXISTS` after (recorded).
    pub(super) fn apply_battle(
        &self,
        event: &super::Event,
        (id, fingerprint): (super::idhash::IdHash, super::EventFingerprint),
        stamp: Stamp,
        since: u64,
    ) -> Outcome {
        use std::sync::atomic::Ordering;

        use super::window::Claim;
        let b = match event {
            super::Event::Battle(b) => b,
            super::Event::BattleClose(c) => return self.apply_battle_close(event, c, stamp),
            _ => unreachable!("a battle route holds battles and their closes"),
        };
        let _gate = self.gate.write();
        let mut battles = self.battles.lock();
        if let Some(original) = battles.same(b) {
            return original;
        }
        let route = super::route_tag(super::Route::Battle);
        if let Some(held) = self.legacy_claim(event, fingerprint, route, stamp) {
            return held;
        }
        let mut ids = self.ids[self.id_shard(id)].lock();
        match ids.claim(id, fingerprint, route, stamp, since) {
            Claim::Fresh => {}
            Claim::Retry(Some(original)) => {
                return Outcome {
                    duplicate: true,
                    ..original
                };
            }
            // Other content under the battle's id while the id index remembers it: the
            // answer of any reused id (the HTTP route words it as BATTLE_EXISTS).
            Claim::Retry(None) | Claim::Reused => {
                return super::unrecorded(RejectCode::EventIdReused);
            }
            Claim::Forgotten => return super::unrecorded(RejectCode::EventExpired),
            Claim::Full => return super::unrecorded(RejectCode::Unavailable),
        }
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let limits = (self.config.battles_max, self.config.battle_retention_ms);
        let outcome = battles.open(limits, b, seq, stamp);
        self.battles_held.store(battles.len(), Ordering::Release);
        ids.settle(id, outcome);
        drop(ids);
        if self.config.keep_log {
            self.meta_log.lock().push(super::LogEntry {
                seq,
                stamp,
                event: *event,
                outcome,
                totals: None,
                reversed: None,
            });
        }
        outcome
    }

    /// Applies close `c` (live; `event` holds it): the gate exclusive, so every gift is
    /// numbered before it (counted when stamped inside the window) or after it (never
    /// counted). Not claimed in the id index (idempotent by the battle's state): a close
    /// of a closed battle answers the accepted close.
    fn apply_battle_close(&self, event: &super::Event, c: &BattleClose, stamp: Stamp) -> Outcome {
        use std::sync::atomic::Ordering;
        let _gate = self.gate.write();
        let mut battles = self.battles.lock();
        if let Some(original) = battles.closed_original(c.battle) {
            return original;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let outcome = battles.close_event(c, seq, stamp);
        drop(battles);
        if self.config.keep_log {
            self.meta_log.lock().push(super::LogEntry {
                seq,
                stamp,
                event: *event,
                outcome,
                totals: None,
                reversed: None,
            });
        }
        outcome
    }

    /// Replays a journaled battle or close with its number (after every earlier event).
    pub(super) fn replay_battle(&self, entry: &super::LogEntry) -> Outcome {
        use std::sync::atomic::Ordering;
        let b = match &entry.event {
            super::Event::Battle(b) => b,
            super::Event::BattleClose(c) => {
                let _gate = self.gate.write();
                return self.battles.lock().close_event(c, entry.seq, entry.stamp);
            }
            _ => unreachable!("a battle route holds battles and their closes"),
        };
        let _gate = self.gate.write();
        let mut battles = self.battles.lock();
        let limits = (self.config.battles_max, self.config.battle_retention_ms);
        let outcome = battles.open(limits, b, entry.seq, entry.stamp);
        self.battles_held.store(battles.len(), Ordering::Release);
        drop(battles);
        let id = self.event_hash(&entry.event);
        self.ids[self.id_shard(id)].lock().remember(
            id,
            entry.event.fingerprint(),
            outcome,
            entry.stamp,
        );
        outcome
    }

    /// Counts the accepted gifts among `gifts` (`(gift, seq, stamp)`, applied on sender
    /// shard `shard` under `economy`) in the battles of their streams. `unrecorded`: the
    /// numbers of the gifts among them that got no gift record of their own (they reused
    /// their sender's held id: a reversal naming the id reverses the first gift, review
    /// B3). Called
    /// under the sender shard's lock and the gate shared; a no-op without battles.
    pub(super) fn battle_gifts(
        &self,
        shard: usize,
        economy: &crate::economy::Economy,
        gifts: impl Iterator<Item = (Gift, u64, Stamp)>,
        unrecorded: &[u64],
    ) {
        let mut battles = self.battles.lock();
        let reversible = economy.earnings_hold_ms > 0 && self.config.gift_records_per_shard_max > 0;
        let shards = self.senders.len();
        for (g, seq, stamp) in gifts {
            let coins = economy
                .gifts
                .get(g.gift.0 as usize)
                .map_or(0, |spec| spec.coins.saturating_mul(u64::from(g.count)));
            // `unrecorded` is in sequence order: a halving search (a replayed run lists many).
            let own_record = reversible && unrecorded.binary_search(&seq).is_err();
            battles.gift((shard, shards), &g, (seq, stamp, coins), own_record);
        }
    }

    /// Whether any battle is held (a chunk's check; stable under the gate shared).
    pub(super) fn battles_on(&self) -> bool {
        self.battles_held.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// An accepted reversal of a gift on `stream` (gate exclusive): lowers the battle
    /// that counted it while open.
    pub(super) fn battle_reversal(
        &self,
        (sender, gift, stream): (UserId, EventId, StreamId),
        seq: u64,
        stamp: Stamp,
    ) {
        if !self.battles_on() {
            return;
        }
        let shard = super::shard_of(sender.0, self.mask);
        self.battles
            .lock()
            .reverse(shard, (sender, gift, stream), seq, stamp);
    }

    /// Battle `id` with each side's top `top` gifters; `None` if not held.
    pub fn battle(&self, id: BattleId, top: usize) -> Option<BattleView> {
        self.battles.lock().view(id, top)
    }

    /// The battle of `stream` whose window holds `stamp_ms` (no gifters).
    pub fn battle_of_stream_at(&self, stream: StreamId, stamp_ms: u64) -> Option<BattleView> {
        if !self.battles_on() {
            return None;
        }
        self.battles.lock().of_stream_at(stream, stamp_ms)
    }

    /// The battles held whose window ended at or before `now_ms` and that no close
    /// event closed yet, oldest end first: the service closes them ([`BattleClose`]).
    pub fn battles_to_close(&self, now_ms: u64) -> Vec<BattleId> {
        if !self.battles_on() {
            return Vec::new();
        }
        self.battles.lock().to_close(now_ms)
    }

    /// Battles held now.
    pub fn battles_held(&self) -> usize {
        self.battles_held.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gift(id: u128, sender: u64, stream: u64) -> Gift {
        Gift {
            id: EventId(id),
            sender: UserId(sender),
            creator: super::super::event::CreatorId(1000),
            stream: StreamId(stream),
            gift: super::super::event::GiftId(0),
            count: 1,
        }
    }

    #[test]
    fn ties_break_by_who_reached_first_and_a_draw_has_no_leader() {
        let mut battles = Battles::default();
        let b = Battle::new(BattleId(7), &[StreamId(1), StreamId(2)], 100, 200).unwrap();
        let o = battles.open((8, 1000), &b, 10, Stamp(50));
        assert_eq!(o.status, Status::Accepted(Effect::Stored));
        // Numbered before the battle: not counted.
        battles.gift((0, 1), &gift(1, 5, 1), (9, Stamp(150), 10), false);
        battles.gift((0, 1), &gift(2, 5, 1), (11, Stamp(150), 10), false);
        battles.gift((0, 1), &gift(3, 6, 1), (12, Stamp(199), 10), false);
        battles.gift((0, 1), &gift(4, 6, 2), (13, Stamp(200), 99), false);
        let v = battles.view(BattleId(7), 10).unwrap();
        assert_eq!(v.sides[0].coins, 20);
        assert_eq!(v.sides[1].coins, 0);
        assert_eq!(
            v.sides[0].top_gifters,
            vec![(UserId(5), 10), (UserId(6), 10)]
        );
        assert_eq!(v.leader(), Some(StreamId(1)));
        battles.gift((0, 1), &gift(5, 6, 2), (14, Stamp(100), 20), false);
        assert_eq!(battles.view(BattleId(7), 10).unwrap().leader(), None);
        assert!(battles.check().is_ok());
    }

    /// Review M2: with the counted map full, a gift whose own record took over an id
    /// replaces the older gift's entry, so its reversal lowers the battle by it.
    #[test]
    fn a_full_counted_map_still_replaces_a_reused_ids_entry() {
        let mut battles = Battles::default();
        let b = Battle::new(BattleId(7), &[StreamId(1), StreamId(2)], 100, 1_000_000).unwrap();
        battles.open((8, 1000), &b, 10, Stamp(50));
        battles.gift((0, 1), &gift(1, 5, 1), (11, Stamp(150), 1), true);
        for n in 0..COUNTED_PER_SHARD_MAX as u128 {
            battles.gift(
                (0, 1),
                &gift(1000 + n, 6, 1),
                (12 + n as u64, Stamp(150), 1),
                true,
            );
        }
        let seq = 20 + COUNTED_PER_SHARD_MAX as u64;
        // The same sender and id again, with its own record: 10,000 coins.
        battles.gift((0, 1), &gift(1, 5, 1), (seq, Stamp(150), 10_000), true);
        let before = battles.view(BattleId(7), 0).unwrap().sides[0].coins;
        battles.reverse(0, (UserId(5), EventId(1), StreamId(1)), seq + 1, Stamp(160));
        let after = battles.view(BattleId(7), 0).unwrap().sides[0].coins;
        assert_eq!(before - after, 10_000, "lowered by the gift reversed");
        assert!(battles.check().is_ok());
    }
}
