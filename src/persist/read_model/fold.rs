//! Folding committed entries: the projector's own copy of the books and top-K lists,
//! and the coalesced changes of the pending window, taken as one [`Write`] of absolute
//! operations per bucket.
//!
//! Size: every event kind's fold (gifts on streams and videos, reversals, wallets with
//! their debts) changes the same books and pending sets; split by kind, each part would
//! reach into the others' private state.

use std::sync::Arc;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};

use super::layout::{Layout, SCORE_MAX, creator_top_key, stream_top_key, user_key, video_top_key};
use super::windows::{Counted, Windows};
use super::write::{Op, creator_ops, stream_ops, video_ops};
use crate::economy::Economy;
use crate::engine::{
    CreatorId, Credited, Effect, Event, GiftId, GiftReversal, GiftTarget, LogEntry, Offer,
    ReadModelView, Stamp, Status, StreamBook, StreamId, TopK, UserId, VideoBook, VideoId, hour_of,
};

/// The projector's copy of the creator and stream books and of their top-K gifter
/// lists, exact as of `seq`.
#[derive(Debug, Default)]
pub(super) struct Books {
    seq: u64,
    /// (coins received, diamonds paid, diamonds credited)
    creators: FxHashMap<CreatorId, (u128, u128, Credited)>,
    streams: FxHashMap<StreamId, StreamBook>,
    /// K of the lists (`engine.top_k`).
    top_k: usize,
    creator_tops: FxHashMap<CreatorId, TopK>,
    stream_tops: FxHashMap<StreamId, TopK>,
    videos: FxHashMap<VideoId, VideoBook>,
    video_tops: FxHashMap<VideoId, TopK>,
    /// Coins owed by the users who owe any (recharge reversals), to follow what a
    /// recharge repays.
    owed: FxHashMap<UserId, u64>,
    /// The windowed leaderboards (`engine.windows` on: the view holds them).
    pub(super) windows: Option<Windows>,
}

impl Books {
    /// From a view with the top `top_k` gifters ([`ViewParts::tops`](crate::engine::ViewParts::tops)): the creators and
    /// streams whose ids `mine` keeps.
    /// `layout` and `merge` (a cluster node) say which windowed lists it keeps.
    pub(super) fn from_view(
        view: &ReadModelView,
        (top_k, layout, merge): (usize, Layout, bool),
        mine: impl Fn(u64) -> bool,
    ) -> Books {
        let windows = view
            .windows
            .as_ref()
            .map(|w| Windows::from_view(w, (top_k, layout, !merge), &mine));
        let mut creator_tops: FxHashMap<CreatorId, TopK> = FxHashMap::default();
        for &(c, u, coins) in view.creator_gifters.iter().filter(|g| mine(g.0.0)) {
            creator_tops.entry(c).or_default().offer(top_k, u.0, coins);
        }
        let mut stream_tops: FxHashMap<StreamId, TopK> = FxHashMap::default();
        for &(s, u, coins) in view.stream_gifters.iter().filter(|g| mine(g.0.0)) {
            stream_tops.entry(s).or_default().offer(top_k, u.0, coins);
        }
        let mut video_tops: FxHashMap<VideoId, TopK> = FxHashMap::default();
        for &(v, u, coins) in view.video_gifters.iter().filter(|g| mine(g.0.0)) {
            video_tops.entry(v).or_default().offer(top_k, u.0, coins);
        }
        Books {
            seq: view.last_seq,
            creators: view
                .creators
                .iter()
                .filter(|c| mine(c.0.0))
                .map(|&(c, coins, paid, credited)| (c, (coins, paid, credited)))
                .collect(),
            streams: view
                .streams
                .iter()
                .filter(|s| mine(s.0.0))
                .copied()
                .collect(),
            top_k,
            creator_tops,
            stream_tops,
            videos: view
                .videos
                .iter()
                .filter(|v| mine(v.0.0))
                .copied()
                .collect(),
            video_tops,
            owed: view
                .wallets
                .iter()
                .filter(|&&(u, _, owed)| owed > 0 && mine(u.0))
                .map(|&(u, _, owed)| (u, owed))
                .collect(),
            windows,
        }
    }
}

/// One key's leaderboard changes in a pending write: gifters to set (absolute
/// totals) and gifters pushed out of the top K.
#[derive(Debug)]
struct BoardChanges<K> {
    set: FxHashMap<(K, UserId), u128>,
    removed: FxHashSet<(K, UserId)>,
    /// Keys touched by a stale entry: their members not listed are removed.
    reconcile: FxHashSet<K>,
}

impl<K> Default for BoardChanges<K> {
    fn default() -> Self {
        BoardChanges {
            set: FxHashMap::default(),
            removed: FxHashSet::default(),
            reconcile: FxHashSet::default(),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> BoardChanges<K> {
    fn len(&self) -> usize {
        self.set.len() + self.removed.len() + self.reconcile.len()
    }

    /// Offers `user`'s new `total` to `key`'s list and records what changed. A stale
    /// entry (older than the projector's lists: a start's catch-up) rewrites the listed
    /// total, if any, and marks the key for reconciling — a gifter the lists pushed out
    /// after the read model's `seq` then leaves too, though no entry names it.
    fn place(
        &mut self,
        tops: &mut FxHashMap<K, TopK>,
        top_k: usize,
        key: K,
        user: UserId,
        total: u128,
        fresh: bool,
    ) {
        if !fresh {
            if let Some(listed) = tops.get(&key).and_then(|t| t.score_of(user.0)) {
                self.set.insert((key, user), listed);
            }
            self.reconcile.insert(key);
            return;
        }
        if let Offer::Ranked { evicted } = tops.entry(key).or_default().offer(top_k, user.0, total)
        {
            self.removed.remove(&(key, user));
            self.set.insert((key, user), total);
            if let Some(out) = evicted {
                let out = (key, UserId(out));
                self.set.remove(&out);
                self.removed.insert(out);
            }
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> BoardChanges<K> {
    /// A listed gifter's total went down to `total` (a reversal): written at its new
    /// score, or removed at 0; a gifter not listed changes nothing.
    fn lower(
        &mut self,
        tops: &mut FxHashMap<K, TopK>,
        top_k: usize,
        (key, user): (K, UserId),
        total: u128,
    ) {
        let Some(top) = tops.get_mut(&key) else {
            return;
        };
        if top.score_of(user.0).is_none() {
            return;
        }
        top.remove(user.0);
        if total > 0 {
            top.offer(top_k, user.0, total);
            self.removed.remove(&(key, user));
            self.set.insert((key, user), total);
        } else {
            self.set.remove(&(key, user));
            self.removed.insert((key, user));
        }
    }
}

/// The coalesced changes of one write.
#[derive(Debug, Default)]
pub(super) struct Pending {
    from: u64,
    to: u64,
    pub(super) oldest_stamp: u64,
    pub(super) opened: Option<Instant>,
    pub(super) events: u64,
    creators: FxHashSet<CreatorId>,
    streams: FxHashSet<StreamId>,
    creator_gifters: BoardChanges<CreatorId>,
    stream_gifters: BoardChanges<StreamId>,
    videos: FxHashSet<VideoId>,
    video_gifters: BoardChanges<VideoId>,
    /// A user's balance, and the coins owed when the window changed them.
    wallets: FxHashMap<UserId, (u64, Option<u64>)>,
    /// The windowed leaderboards' operations pending ([`Windows::ops`]).
    windowed: usize,
}

impl Pending {
    /// The user's balance after an event, and what it owes when the event changed that
    /// (a change kept until the write, under later events that did not).
    fn wallet(&mut self, user: UserId, coins: u64, owed: Option<u64>) {
        let w = self.wallets.entry(user).or_insert((coins, owed));
        w.0 = coins;
        if owed.is_some() {
            w.1 = owed;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.opened.is_none()
    }

    /// Operations the write will hold (an upper bound).
    pub(super) fn ops(&self) -> usize {
        self.creators.len() * 2
            + self.streams.len()
            + self.creator_gifters.len()
            + self.stream_gifters.len()
            + self.videos.len()
            + self.video_gifters.len()
            + self.wallets.len()
            + self.windowed
    }
}

/// The economy version recorded under a digest (the engine's: it keeps every version it
/// applied or replayed).
pub type EconomyLookup = Arc<dyn Fn(u64) -> Option<Arc<Economy>> + Send + Sync>;

/// Folds committed entries into pending writes.
pub(super) struct Projector {
    /// The economy in force at the last folded entry: it decides the diamonds a gift
    /// credits. Follows the journaled changes ([`EconomyLookup`]).
    pub(super) economy: Arc<Economy>,
    pub(super) economies: EconomyLookup,
    pub(super) books: Books,
    pub(super) pending: Pending,
    pub(super) wallets: bool,
    /// Merge with the other nodes' contributions (a cluster node).
    pub(super) merge: bool,
    pub(super) layout: Layout,
    /// This projector's part of the buckets: (index, count) — it writes the buckets `b`
    /// with `b mod count = index` ([`owns`]).
    pub(super) part: (usize, usize),
    /// The next sequence number to fold.
    pub(super) next: u64,
    /// An accepted gift without journaled totals (a journal older than format 2 that
    /// the start did not rebuild past): its sequence number.
    pub(super) untotalled: Option<u64>,
}

impl Projector {
    pub(super) fn fold(&mut self, e: &LogEntry) {
        debug_assert_eq!(e.seq, self.next);
        let (layout, part) = (self.layout, self.part);
        let mine = |id: u64| owns(layout, part, id);
        let p = &mut self.pending;
        if p.opened.is_none() {
            p.opened = Some(Instant::now());
            p.from = e.seq;
            p.oldest_stamp = e.stamp.0;
        }
        p.to = e.seq;
        p.events += 1;
        self.next = e.seq + 1;
        // The books were copied at `books.seq`: older entries are already in them.
        let fresh = e.seq > self.books.seq;
        let Status::Accepted(effect) = e.outcome.status else {
            return;
        };
        match e.event {
            Event::Gift(g) => {
                let sent = (g.sender, g.creator, g.gift, g.count);
                self.fold_gift(e, sent, Target::Stream(g.stream), effect, fresh);
            }
            Event::VideoGift(v) => {
                let sent = (v.sender, v.creator, v.gift, v.count);
                self.fold_gift(e, sent, Target::Video(v.video), effect, fresh);
            }
            Event::Recharge(r) => {
                if let (true, true, Effect::Coins(balance)) = (mine(r.user.0), self.wallets, effect)
                {
                    // A recharge repays a debt first. (An entry the books hold already:
                    // what they say, the value after every such entry.)
                    let owed = match self.books.owed.get(&r.user).copied() {
                        Some(owed) if fresh => {
                            let left = owed - owed.min(r.coins);
                            if left == 0 {
                                self.books.owed.remove(&r.user);
                            } else {
                                self.books.owed.insert(r.user, left);
                            }
                            Some(left)
                        }
                        owed => Some(owed.unwrap_or(0)).filter(|_| !fresh),
                    };
                    p.wallet(r.user, balance, owed);
                }
            }
            Event::RechargeReversal(r) => {
                if let (true, true, Effect::Reversed { coins, owed }) =
                    (mine(r.user.0), self.wallets, effect)
                {
                    if fresh && owed > 0 {
                        self.books.owed.insert(r.user, owed);
                    }
                    p.wallet(r.user, coins, Some(owed));
                }
            }
            // A purchase credits no creator: only the buyer's balance shows it.
            Event::Purchase(pu) => {
                if let (true, true, Effect::Coins(balance)) =
                    (mine(pu.user.0), self.wallets, effect)
                {
                    p.wallet(pu.user, balance, None);
                }
            }
            Event::GiftReversal(r) => self.fold_reversal(e, &r, effect, fresh),
            Event::Payout(pay) if mine(pay.creator.0) => {
                p.creators.insert(pay.creator);
                if fresh {
                    self.books.creators.entry(pay.creator).or_default().1 +=
                        u128::from(pay.diamonds);
                }
            }
            Event::StreamGoal(goal) if mine(goal.stream.0) => {
                p.streams.insert(goal.stream);
                if fresh {
                    let s = self.books.streams.entry(goal.stream).or_default();
                    s.creator = Some(goal.creator);
                    s.goal = Some(goal.coins_target);
                }
            }
            // Battles are read from the engine (`GET /v1/battles/{id}`), not Redis.
            Event::Payout(_) | Event::StreamGoal(_) | Event::Battle(_) | Event::BattleClose(_) => {}
            // Settled diamonds stay counted on the node that credited them: the merged
            // `diamonds_total` sums every node's own credits, so they are not added again.
            Event::Account(_) | Event::Settlement(_) => {}
            Event::Economy(change) if fresh => match (self.economies)(change.digest) {
                Some(economy) => self.economy = economy,
                // Every committed change was applied or replayed by this process's
                // engine, which keeps every version: not reached.
                None => tracing::error!(
                    seq = e.seq,
                    version = change.version,
                    "read model: unknown economy version; diamonds follow the previous one"
                ),
            },
            Event::Economy(_) => {}
        }
    }

    /// Folds an accepted gift (`fresh`: not in the books yet), `(sender, creator, gift,
    /// count)` sent to `target`: its creator's and stream's or video's hashes, their
    /// leaderboards (from the totals journaled with it), the sender's wallet.
    fn fold_gift(
        &mut self,
        e: &LogEntry,
        (sender_id, creator_id, gift, count): (UserId, CreatorId, GiftId, u32),
        target: Target,
        effect: Effect,
        fresh: bool,
    ) {
        let (layout, part) = (self.layout, self.part);
        let mine = |id: u64| owns(layout, part, id);
        let p = &mut self.pending;
        let (creator, target_mine, sender) =
            (mine(creator_id.0), mine(target.id()), mine(sender_id.0));
        let cost = self
            .economy
            .gifts
            .get(gift.0 as usize)
            .map_or(0, |spec| u128::from(spec.coins) * u128::from(count));
        if creator {
            p.creators.insert(creator_id);
        }
        if target_mine {
            match target {
                Target::Stream(s) => p.streams.insert(s),
                Target::Video(v) => p.videos.insert(v),
            };
        }
        let Some(totals) = e.totals else {
            self.untotalled.get_or_insert(e.seq);
            return;
        };
        let books = &mut self.books;
        if creator {
            p.creator_gifters.place(
                &mut books.creator_tops,
                books.top_k,
                creator_id,
                sender_id,
                u128::from(totals.creator),
                fresh,
            );
        }
        // The journaled `stream` total is the sender's total on the gift's target.
        let target_total = u128::from(totals.stream);
        match target {
            Target::Stream(s) if target_mine => {
                let tops = &mut books.stream_tops;
                let top_k = books.top_k;
                p.stream_gifters
                    .place(tops, top_k, s, sender_id, target_total, fresh);
            }
            Target::Video(v) if target_mine => {
                let tops = &mut books.video_tops;
                let top_k = books.top_k;
                p.video_gifters
                    .place(tops, top_k, v, sender_id, target_total, fresh);
            }
            _ => {}
        }
        if let (true, true, Effect::Coins(balance)) = (sender, self.wallets, effect) {
            p.wallet(sender_id, balance, None);
        }
        if let Some(windows) = self.books.windows.as_mut() {
            // A gift on a video counts for its creator only (as in the engine).
            let stream = match target {
                Target::Stream(s) if target_mine => Some(s),
                _ => None,
            };
            let counted = Counted {
                creator: creator.then_some(creator_id),
                stream,
                sender: sender_id,
                coins: u64::try_from(cost).unwrap_or(u64::MAX),
                seq: e.seq,
            };
            if counted.creator.is_some() || counted.stream.is_some() {
                windows.gift(hour_of(e.stamp), counted, fresh);
                p.windowed = windows.ops();
            }
        }
        if fresh && creator {
            let book = self.books.creators.entry(creator_id).or_default();
            book.0 += cost;
            book.2.credit(&self.economy, cost);
        }
        let smallest = |c: Option<CreatorId>| Some(c.map_or(creator_id, |c| c.min(creator_id)));
        match target {
            Target::Stream(s) if fresh && target_mine => {
                let s = self.books.streams.entry(s).or_default();
                s.coins_received += cost;
                if s.goal.is_none() {
                    s.creator = smallest(s.creator);
                }
            }
            Target::Video(v) if fresh && target_mine => {
                let v = self.books.videos.entry(v).or_default();
                v.coins_received += cost;
                v.creator = smallest(v.creator);
            }
            _ => {}
        }
    }

    /// Folds an accepted gift reversal: the gift's creator and stream or video hashes go
    /// down by what it took back (journaled with it, its target named), the sender's
    /// scores down to its journaled totals. A lowered gifter stays listed at its new score (or leaves at 0): a gifter
    /// outside the list that now ranks above it enters at its next gift (the projector
    /// knows only the top K); the HTTP API, from the engine, is exact at once.
    fn fold_reversal(&mut self, e: &LogEntry, r: &GiftReversal, effect: Effect, fresh: bool) {
        let (layout, part) = (self.layout, self.part);
        let mine = |id: u64| owns(layout, part, id);
        let p = &mut self.pending;
        let Some(g) = e.reversed.as_deref().copied() else {
            return;
        };
        if let (true, true, Effect::Coins(balance)) = (mine(r.sender.0), self.wallets, effect) {
            // A refund repays a debt first, as a recharge does.
            let owed = match self.books.owed.get(&r.sender).copied() {
                Some(owed) if fresh => {
                    let left = owed - owed.min(g.coins);
                    if left == 0 {
                        self.books.owed.remove(&r.sender);
                    } else {
                        self.books.owed.insert(r.sender, left);
                    }
                    Some(left)
                }
                owed => Some(owed.unwrap_or(0)).filter(|_| !fresh),
            };
            p.wallet(r.sender, balance, owed);
        }
        // The windows the gift counted in (its stamp's hour, journaled with the
        // reversal since journal format 8; unknown before, then unchanged here).
        if let (Some(windows), Some(hour)) = (self.books.windows.as_mut(), g.hour) {
            let stream = match g.target {
                GiftTarget::Stream(s) if mine(s.0) => Some(s),
                _ => None,
            };
            let counted = Counted {
                creator: mine(g.creator.0).then_some(g.creator),
                stream,
                sender: r.sender,
                coins: g.coins,
                seq: e.seq,
            };
            if counted.creator.is_some() || counted.stream.is_some() {
                windows.reverse(hour, counted, fresh);
                p.windowed = windows.ops();
            }
        }
        let totals = e.totals.unwrap_or_default();
        let books = &mut self.books;
        if mine(g.creator.0) {
            p.creators.insert(g.creator);
            if fresh {
                p.creator_gifters.lower(
                    &mut books.creator_tops,
                    books.top_k,
                    (g.creator, r.sender),
                    u128::from(totals.creator),
                );
                let book = books.creators.entry(g.creator).or_default();
                book.0 = book.0.saturating_sub(u128::from(g.coins));
                book.2.take_back(g.nanos);
            } else {
                p.creator_gifters.reconcile.insert(g.creator);
            }
        }
        // The journaled `stream` total is the sender's total on the gift's target.
        match g.target {
            GiftTarget::Stream(stream) if mine(stream.0) => {
                p.streams.insert(stream);
                if fresh {
                    p.stream_gifters.lower(
                        &mut books.stream_tops,
                        books.top_k,
                        (stream, r.sender),
                        u128::from(totals.stream),
                    );
                    let s = books.streams.entry(stream).or_default();
                    s.coins_received = s.coins_received.saturating_sub(u128::from(g.coins));
                } else {
                    p.stream_gifters.reconcile.insert(stream);
                }
            }
            GiftTarget::Video(video) if mine(video.0) => {
                p.videos.insert(video);
                if fresh {
                    p.video_gifters.lower(
                        &mut books.video_tops,
                        books.top_k,
                        (video, r.sender),
                        u128::from(totals.stream),
                    );
                    let v = books.videos.entry(video).or_default();
                    v.coins_received = v.coins_received.saturating_sub(u128::from(g.coins));
                } else {
                    p.video_gifters.reconcile.insert(video);
                }
            }
            _ => {}
        }
    }

    /// The stamp of the oldest committed event not yet written: the pending window's
    /// oldest, or now when nothing is pending.
    pub(super) fn oldest_unwritten(&self) -> Stamp {
        if self.pending.is_empty() {
            crate::clock::now()
        } else {
            Stamp(self.pending.oldest_stamp)
        }
    }

    /// Takes the pending changes as one write.
    pub(super) fn take_ops(&mut self) -> Write {
        let p = std::mem::take(&mut self.pending);
        let layout = self.layout;
        let mut ops: Vec<Vec<Op>> = vec![Vec::new(); layout.buckets()];
        let mut saturated = 0;
        for &c in &p.creators {
            let (coins, paid, credited) = self.books.creators.get(&c).copied().unwrap_or_default();
            let bucket = &mut ops[layout.bucket(c.0)];
            saturated += creator_ops(c, coins, credited.diamonds, paid, self.merge, bucket);
        }
        for &s in &p.streams {
            let book = self.books.streams.get(&s).copied().unwrap_or_default();
            saturated += stream_ops(s, &book, self.merge, &mut ops[layout.bucket(s.0)]);
        }
        for (&(c, u), &coins) in &p.creator_gifters.set {
            saturated += u64::from(coins > SCORE_MAX);
            ops[layout.bucket(c.0)].push(Op::Set(creator_top_key(c), u.0, coins.min(SCORE_MAX)));
        }
        for &(c, u) in &p.creator_gifters.removed {
            ops[layout.bucket(c.0)].push(Op::Remove(creator_top_key(c), u.0));
        }
        let listed = |top: Option<&TopK>| -> FxHashSet<u64> {
            top.map_or_else(FxHashSet::default, |t| {
                t.entries().iter().map(|e| e.1).collect()
            })
        };
        let mut reconcile = Vec::new();
        for c in &p.creator_gifters.reconcile {
            let key = creator_top_key(*c);
            reconcile.push((
                layout.bucket(c.0),
                key,
                listed(self.books.creator_tops.get(c)),
            ));
        }
        for s in &p.stream_gifters.reconcile {
            let key = stream_top_key(*s);
            reconcile.push((
                layout.bucket(s.0),
                key,
                listed(self.books.stream_tops.get(s)),
            ));
        }
        for (&(s, u), &coins) in &p.stream_gifters.set {
            saturated += u64::from(coins > SCORE_MAX);
            ops[layout.bucket(s.0)].push(Op::Set(stream_top_key(s), u.0, coins.min(SCORE_MAX)));
        }
        for &(s, u) in &p.stream_gifters.removed {
            ops[layout.bucket(s.0)].push(Op::Remove(stream_top_key(s), u.0));
        }
        for &v in &p.videos {
            let book = self.books.videos.get(&v).copied().unwrap_or_default();
            saturated += video_ops(v, &book, self.merge, &mut ops[layout.bucket(v.0)]);
        }
        for v in &p.video_gifters.reconcile {
            let key = video_top_key(*v);
            reconcile.push((
                layout.bucket(v.0),
                key,
                listed(self.books.video_tops.get(v)),
            ));
        }
        for (&(v, u), &coins) in &p.video_gifters.set {
            saturated += u64::from(coins > SCORE_MAX);
            ops[layout.bucket(v.0)].push(Op::Set(video_top_key(v), u.0, coins.min(SCORE_MAX)));
        }
        for &(v, u) in &p.video_gifters.removed {
            ops[layout.bucket(v.0)].push(Op::Remove(video_top_key(v), u.0));
        }
        if let Some(windows) = self.books.windows.as_mut() {
            saturated += windows.take_ops(&mut ops, &mut reconcile);
        }
        for (&u, &(coins, owed)) in &p.wallets {
            let mut fields = vec![("coins", coins.to_string())];
            if let Some(owed) = owed {
                fields.push(("coins_owed", owed.to_string()));
            }
            ops[layout.bucket(u.0)].push(Op::Hash(user_key(u), fields));
        }
        Write {
            ops,
            from: p.from,
            to: p.to,
            held: saturated,
            reconcile,
        }
    }
}

/// What a gift is sent to: a live stream or a video.
#[derive(Debug, Clone, Copy)]
enum Target {
    Stream(StreamId),
    Video(VideoId),
}

impl Target {
    fn id(self) -> u64 {
        match self {
            Target::Stream(s) => s.0,
            Target::Video(v) => v.0,
        }
    }
}

/// Whether the keys of creator, stream, video or user `id` are in the buckets of projector
/// `part` = (index, count): bucket `b` is projector `b mod count`'s.
pub(super) fn owns(layout: Layout, part: (usize, usize), id: u64) -> bool {
    writes_bucket(part, layout.bucket(id))
}

/// Whether projector `part` = (index, count) writes `bucket`.
pub(super) fn writes_bucket((index, count): (usize, usize), bucket: usize) -> bool {
    bucket % count == index
}

/// One pending write, taken from the projector.
pub(super) struct Write {
    /// Each bucket's operations.
    pub(super) ops: Vec<Vec<Op>>,
    /// The sequence numbers it covers.
    pub(super) from: u64,
    pub(super) to: u64,
    /// Scores held at the max.
    pub(super) held: u64,
    /// Keys to reconcile (bucket, key), with the gifters listed for each.
    pub(super) reconcile: Vec<(usize, String, FxHashSet<u64>)>,
}
