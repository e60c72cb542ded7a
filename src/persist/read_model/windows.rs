//! The read model's windowed leaderboards (`[engine.windows]`, issue #32 feature 1):
//! per UTC hour, day, ISO week and month, each creator's and stream's top gifters and
//! the top creators, in keys that carry the window
//! (`creator:<id>:top-gifters:day:2026-12-04`) and expire with it (`EXPIREAT`).
//!
//! # Why the projector keeps every windowed total
//! An all-time score is journaled with each gift (the sender's running totals), so the
//! all-time leaderboards need only their top K here. A windowed total is not journaled
//! (it would be eight more numbers per gift), and a value written must be absolute (a
//! retried chunk, or a bucket a crash left ahead, is written again): so the projector
//! keeps, for its buckets, what the engine keeps — every (window, target, gifter)
//! total of the retained windows, with the engine's own list code (`WindowTop`,
//! `add_window_pair`, `lower_window_pair`), so its lists are the engine's exactly,
//! ties included. Copied from the engine's view at a start; dropped by the same
//! retention.
//!
//! # What a write holds
//! Per key changed since the last write: `ZADD` of each listed member that entered or
//! whose score changed, `ZREM` of each member that left (pushed out, or lowered out by a
//! reversal — a gifter outside the list that a reversal brings in is known here, so,
//! unlike the all-time lists, the windowed lists in Redis are exact after a reversal
//! too), and, the first time this projector writes the key, `EXPIREAT` (the window's
//! end plus its retention: one window of its kind after the engine stops serving it, so
//! Redis never drops a window the engine still serves) in the same script call as its
//! `ZADD` ([`Op::SetExpiring`]: no crash between chunks leaves a key without its expiry,
//! review W2). After that a key keeps its expiry (its value is the window's), so it is not
//! sent again — until its list is emptied (Redis deletes an empty key) or the projector
//! restarts. A key touched by an entry older than the copied totals (a start's catch-up)
//! is written whole and reconciled (its other members removed).
//!
//! # Ties
//! A score in Redis is the coins (exact to 2^53), not (coins, seq): a double cannot hold
//! both. Which K members a list holds is decided by (coins, then who reached them first)
//! as the engine decides it; among equal scores Redis orders by member (`ZREVRANGE`:
//! the larger id string first). The HTTP API orders ties exactly.
//!
//! # Top creators
//! Per window and bucket, the creators' coins received in the window (a single node;
//! on a cluster node, whose creators' coins are contributions of several nodes, the
//! windowed top creators are not written).
//!
//! Size: the windowed totals, what changed since the last write and the operations that
//! write it are one contract (a key's list in Redis is the projector's list, its expiry
//! written once with its first scores); split, the dirty bookkeeping would be read apart
//! from the lists it describes.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use super::layout::{
    Layout, SCORE_MAX, creator_top_window_key, stream_top_window_key, top_creators_window_key,
};
use super::write::Op;
use crate::config::engine::WindowsConfig;
use crate::engine::{
    CreatorId, Score, SplitMap, StreamId, TimeWindow, UserId, WindowKind, WindowTop, WindowsView,
    add_window_pair, lower_window_pair, window_retained,
};

/// One windowed leaderboard of a window.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Board {
    Creator(CreatorId),
    Stream(StreamId),
    /// The top creators of one bucket.
    Creators(usize),
}

/// One window's totals and lists.
#[derive(Debug, Default)]
struct Boards {
    creator_pairs: SplitMap<(CreatorId, UserId), Score>,
    creator_tops: FxHashMap<CreatorId, WindowTop>,
    stream_pairs: SplitMap<(StreamId, UserId), Score>,
    stream_tops: FxHashMap<StreamId, WindowTop>,
    /// Coins each creator received in the window (top creators).
    creators: FxHashMap<CreatorId, Score>,
    /// The top creators per bucket.
    creator_lists: FxHashMap<usize, WindowTop>,
}

impl Boards {
    fn list(&self, board: Board) -> &[(Score, u64)] {
        let top = match board {
            Board::Creator(c) => self.creator_tops.get(&c),
            Board::Stream(s) => self.stream_tops.get(&s),
            Board::Creators(b) => self.creator_lists.get(&b),
        };
        top.map_or(&[], |t| t.entries())
    }
}

/// What changed in one key since the last write. Lists hold at most `top_k` members, so
/// plain vectors (sorted, searched by halving) stand in for sets: a key is touched by
/// every gift, and hashing a list's members into a set at each touch and write was most
/// of the projector's time with windows on.
#[derive(Debug)]
struct Dirty {
    /// The members listed before the first change, sorted (`None`: write the key whole
    /// and reconcile it — a catch-up's entry, older than the totals).
    before: Option<Vec<u64>>,
    /// Members whose score changed (repeats allowed; sorted and deduplicated at the
    /// write, or when it doubles past its last compaction, from [`Dirty::COMPACT_AT`]:
    /// amortised, as a key like `top-creators` has thousands of distinct members).
    changed: Vec<u64>,
    /// `changed`'s length that compacts it next.
    compact_at: usize,
    /// This key's share of [`Windows::ops`]: its expiry, and two operations per changed
    /// member (its score, the member it may push out) up to `2 x top_k`.
    ops: usize,
}

impl Dirty {
    /// `changed` is compacted at this length (a hot key's repeats).
    const COMPACT_AT: usize = 1024;

    fn compact(&mut self) {
        self.changed.sort_unstable();
        self.changed.dedup();
        self.compact_at = Dirty::COMPACT_AT.max(2 * self.changed.len());
    }
}

/// A gift or a reversal as the windows count it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Counted {
    /// Its creator, if this projector writes the creator's bucket.
    pub creator: Option<CreatorId>,
    /// Its stream (not for a gift on a video), if this projector writes its bucket.
    pub stream: Option<StreamId>,
    pub sender: UserId,
    pub coins: u64,
    pub seq: u64,
}

/// A projector's windowed totals and lists, and the keys changed since its last write.
#[derive(Debug)]
pub(super) struct Windows {
    config: WindowsConfig,
    top_k: usize,
    layout: Layout,
    /// Keep the top creators (a single node).
    creators: bool,
    /// The newest hour a gift was counted at: windows not retained then are gone.
    newest_hour: u32,
    boards: BTreeMap<TimeWindow, Boards>,
    dirty: FxHashMap<(TimeWindow, Board), Dirty>,
    /// A bound on the operations `dirty` makes ([`Windows::ops`]).
    dirty_ops: usize,
    /// Keys this projector gave their expiry (written with it, not emptied since), of
    /// retained windows.
    expiring: FxHashSet<(TimeWindow, Board)>,
}

impl Windows {
    /// From the engine's windowed totals, keeping those `mine` says (a creator's or
    /// stream's id is in this projector's buckets); `creators`: keep the top creators.
    pub(super) fn from_view(
        view: &WindowsView,
        (top_k, layout, creators): (usize, Layout, bool),
        mine: impl Fn(u64) -> bool,
    ) -> Windows {
        let mut w = Windows {
            config: view.config.clone(),
            top_k,
            layout,
            creators,
            newest_hour: view.newest_hour,
            boards: BTreeMap::new(),
            dirty: FxHashMap::default(),
            dirty_ops: 0,
            expiring: FxHashSet::default(),
        };
        let kept = |t: TimeWindow| window_retained(&view.config, t, view.newest_hour);
        for &(t, c, u, s) in &view.creator_pairs {
            if kept(t) && mine(c.0) {
                w.boards
                    .entry(t)
                    .or_default()
                    .creator_pairs
                    .insert((c, u), s);
            }
        }
        for &(t, st, u, s) in &view.stream_pairs {
            if kept(t) && mine(st.0) {
                w.boards
                    .entry(t)
                    .or_default()
                    .stream_pairs
                    .insert((st, u), s);
            }
        }
        if creators {
            for &(t, c, s) in &view.creators {
                if kept(t) && mine(c.0) && s.coins > 0 {
                    w.boards.entry(t).or_default().creators.insert(c, s);
                }
            }
        }
        let k = top_k;
        for b in w.boards.values_mut() {
            let mut by_creator: FxHashMap<CreatorId, Vec<(Score, u64)>> = FxHashMap::default();
            for (&(c, u), &s) in &b.creator_pairs {
                by_creator.entry(c).or_default().push((s, u.0));
            }
            b.creator_tops = by_creator
                .into_iter()
                .map(|(c, all)| (c, WindowTop::rebuilt(k, all.into_iter())))
                .collect();
            let mut by_stream: FxHashMap<StreamId, Vec<(Score, u64)>> = FxHashMap::default();
            for (&(st, u), &s) in &b.stream_pairs {
                by_stream.entry(st).or_default().push((s, u.0));
            }
            b.stream_tops = by_stream
                .into_iter()
                .map(|(st, all)| (st, WindowTop::rebuilt(k, all.into_iter())))
                .collect();
            let mut by_bucket: FxHashMap<usize, Vec<(Score, u64)>> = FxHashMap::default();
            for (&c, &s) in &b.creators {
                by_bucket
                    .entry(layout.bucket(c.0))
                    .or_default()
                    .push((s, c.0));
            }
            b.creator_lists = by_bucket
                .into_iter()
                .map(|(bucket, all)| (bucket, WindowTop::rebuilt(k, all.into_iter())))
                .collect();
        }
        w
    }

    /// The layout version's part for these windows (their retention: another makes a
    /// start rebuild the read model, so every key expires by the retention in force).
    pub(super) fn format_part(config: &WindowsConfig) -> String {
        format!(
            "w{}.{}.{}.{}",
            config.hours, config.days, config.weeks, config.months
        )
    }

    /// Notes that `board` of `window` changes (its members before the first change).
    fn touch(&mut self, window: TimeWindow, board: Board, member: u64, fresh: bool) {
        let boards = self.boards.get(&window);
        let expiring = &self.expiring;
        let d = self.dirty.entry((window, board)).or_insert_with(|| {
            let mut before: Vec<u64> = boards
                .map(|b| b.list(board).iter().map(|e| e.1).collect())
                .unwrap_or_default();
            before.sort_unstable();
            Dirty {
                before: Some(before),
                changed: Vec::new(),
                compact_at: Dirty::COMPACT_AT,
                // Its expiry, the first time.
                ops: usize::from(!expiring.contains(&(window, board))),
            }
        });
        let cap = 2 * self.top_k + 1;
        let ops = if !fresh {
            d.before = None;
            // Written whole: its list and its expiry.
            cap
        } else {
            if d.changed.len() >= d.compact_at {
                d.compact();
            }
            d.changed.push(member);
            (d.ops + 2).min(cap)
        };
        if ops > d.ops {
            self.dirty_ops += ops - d.ops;
            d.ops = ops;
        }
    }

    /// The windows holding `hour` that are kept.
    fn windows_of(&self, hour: u32) -> [Option<TimeWindow>; 4] {
        WindowKind::ALL.map(|kind| {
            let w = TimeWindow::of_hour(kind, hour);
            window_retained(&self.config, w, self.newest_hour).then_some(w)
        })
    }

    /// Counts an accepted gift stamped in the hour `hour` (`fresh`: not in the copied
    /// totals yet; otherwise its keys are only written again).
    pub(super) fn gift(&mut self, hour: u32, g: Counted, fresh: bool) {
        if g.coins == 0 {
            return;
        }
        if fresh && hour > self.newest_hour {
            self.newest_hour = hour;
            let (config, newest) = (&self.config, self.newest_hour);
            self.boards
                .retain(|&w, _| window_retained(config, w, newest));
            // (The operations bound stays: an over-estimate until the write.)
            self.dirty
                .retain(|&(w, _), _| window_retained(config, w, newest));
            self.expiring
                .retain(|&(w, _)| window_retained(config, w, newest));
        }
        let k = self.top_k;
        for w in self.windows_of(hour).into_iter().flatten() {
            if let Some(c) = g.creator {
                self.touch(w, Board::Creator(c), g.sender.0, fresh);
                if fresh {
                    let b = self.boards.entry(w).or_default();
                    let board = (&mut b.creator_pairs, &mut b.creator_tops);
                    add_window_pair(board, k, (c, g.sender), g.coins, g.seq);
                }
                if self.creators {
                    let bucket = self.layout.bucket(c.0);
                    self.touch(w, Board::Creators(bucket), c.0, fresh);
                    if fresh {
                        let b = self.boards.entry(w).or_default();
                        let score = b.creators.entry(c).or_default();
                        let previous = (score.coins > 0).then_some(*score);
                        // The largest number, as the engine's books (any merge order).
                        *score = Score {
                            coins: score.coins.saturating_add(g.coins),
                            seq: score.seq.max(g.seq),
                        };
                        let score = *score;
                        let list = b.creator_lists.entry(bucket).or_default();
                        list.offer(k, c.0, score, previous);
                    }
                }
            }
            if let Some(s) = g.stream {
                self.touch(w, Board::Stream(s), g.sender.0, fresh);
                if fresh {
                    let b = self.boards.entry(w).or_default();
                    let board = (&mut b.stream_pairs, &mut b.stream_tops);
                    add_window_pair(board, k, (s, g.sender), g.coins, g.seq);
                }
            }
        }
    }

    /// Takes a reversed gift, stamped in the hour `hour`, off the windows it counted in
    /// (numbered `g.seq`, the reversal's number, as the engine does).
    pub(super) fn reverse(&mut self, hour: u32, g: Counted, fresh: bool) {
        let k = self.top_k;
        for kind in WindowKind::ALL {
            let w = TimeWindow::of_hour(kind, hour);
            if !self.boards.contains_key(&w) {
                continue;
            }
            if let Some(c) = g.creator {
                self.touch(w, Board::Creator(c), g.sender.0, fresh);
                if fresh && let Some(b) = self.boards.get_mut(&w) {
                    let board = (&mut b.creator_pairs, &mut b.creator_tops);
                    lower_window_pair(board, k, (c, g.sender), g.coins, g.seq);
                }
                if self.creators {
                    let bucket = self.layout.bucket(c.0);
                    self.touch(w, Board::Creators(bucket), c.0, fresh);
                    if fresh && let Some(b) = self.boards.get_mut(&w) {
                        lower_creator(b, k, (c, bucket), g.coins, g.seq, self.layout);
                    }
                }
            }
            if let Some(s) = g.stream {
                self.touch(w, Board::Stream(s), g.sender.0, fresh);
                if fresh && let Some(b) = self.boards.get_mut(&w) {
                    let board = (&mut b.stream_pairs, &mut b.stream_tops);
                    lower_window_pair(board, k, (s, g.sender), g.coins, g.seq);
                }
            }
        }
    }

    /// A bound on the operations of the changes pending (the write's size).
    pub(super) fn ops(&self) -> usize {
        self.dirty_ops
    }

    /// The changed keys' operations, into `ops` by bucket; keys to reconcile into
    /// `reconcile`. Returns the scores held at the max.
    pub(super) fn take_ops(
        &mut self,
        ops: &mut [Vec<Op>],
        reconcile: &mut Vec<(usize, String, FxHashSet<u64>)>,
    ) -> u64 {
        let mut saturated = 0;
        let dirty = std::mem::take(&mut self.dirty);
        self.dirty_ops = 0;
        for ((w, board), mut d) in dirty {
            d.compact();
            // A window dropped since: Redis expires it by itself.
            let Some(boards) = self.boards.get(&w) else {
                continue;
            };
            let (bucket, key) = self.key(w, board);
            let after = boards.list(board);
            let out = &mut ops[bucket];
            let mut listed: Vec<u64> = after.iter().map(|e| e.1).collect();
            listed.sort_unstable();
            let has = |sorted: &[u64], id: u64| sorted.binary_search(&id).is_ok();
            // The key's expiry with its scores, the first time (module doc).
            let expire_at =
                (!self.expiring.contains(&(w, board))).then(|| expire_at_s(&self.config, w));
            let set = |out: &mut Vec<Op>, (score, id): (Score, u64)| {
                let coins = u128::from(score.coins);
                let capped = coins.min(SCORE_MAX);
                out.push(match expire_at {
                    Some(at) => Op::SetExpiring(key.clone(), id, capped, at),
                    None => Op::Set(key.clone(), id, capped),
                });
                u64::from(coins > SCORE_MAX)
            };
            let mut sets = 0;
            match &d.before {
                None => {
                    for &e in after {
                        saturated += set(out, e);
                        sets += 1;
                    }
                    reconcile.push((bucket, key.clone(), listed.into_iter().collect()));
                }
                Some(before) => {
                    for &e in after {
                        if !has(before, e.1) || has(&d.changed, e.1) {
                            saturated += set(out, e);
                            sets += 1;
                        }
                    }
                    for &id in before.iter().filter(|&&id| !has(&listed, id)) {
                        out.push(Op::Remove(key.clone(), id));
                    }
                }
            }
            if after.is_empty() {
                // Emptied: Redis deletes the key, and its expiry with it.
                self.expiring.remove(&(w, board));
            } else if expire_at.is_some() && sets > 0 {
                self.expiring.insert((w, board));
            }
        }
        saturated
    }

    /// Every windowed key's whole content (a rebuild), into `ops` by bucket.
    pub(super) fn all_ops(&self, ops: &mut [Vec<Op>]) {
        for (&w, boards) in &self.boards {
            let lists = boards
                .creator_tops
                .keys()
                .map(|&c| Board::Creator(c))
                .chain(boards.stream_tops.keys().map(|&s| Board::Stream(s)))
                .chain(boards.creator_lists.keys().map(|&b| Board::Creators(b)));
            for board in lists {
                let list = boards.list(board);
                if list.is_empty() {
                    continue;
                }
                let (bucket, key) = self.key(w, board);
                let at = expire_at_s(&self.config, w);
                for &(score, id) in list {
                    let coins = u128::from(score.coins).min(SCORE_MAX);
                    ops[bucket].push(Op::SetExpiring(key.clone(), id, coins, at));
                }
            }
        }
    }

    /// `board`'s bucket and key (within the bucket) in `window`.
    fn key(&self, window: TimeWindow, board: Board) -> (usize, String) {
        match board {
            Board::Creator(c) => (self.layout.bucket(c.0), creator_top_window_key(c, window)),
            Board::Stream(s) => (self.layout.bucket(s.0), stream_top_window_key(s, window)),
            Board::Creators(b) => (b, top_creators_window_key(window)),
        }
    }
}

/// When `window`'s keys expire (UTC seconds): [`expire_at_ms`].
fn expire_at_s(config: &WindowsConfig, window: TimeWindow) -> u64 {
    expire_at_ms(config, window) / 1000
}

/// When a window's keys expire (UTC ms): its end plus its retention (the windows of its
/// kind kept), one window of its kind after the engine stops serving it.
pub fn expire_at_ms(config: &WindowsConfig, window: TimeWindow) -> u64 {
    let kept = match window.kind {
        WindowKind::Hour => config.hours,
        WindowKind::Day => config.days,
        WindowKind::Week => config.weeks,
        WindowKind::Month => config.months,
    };
    TimeWindow {
        key: window.key.saturating_add(kept),
        ..window
    }
    .end_ms()
}

/// Takes `coins` off `creator`'s coins in a window (a reversal numbered `seq`), as the
/// engine's books do: a listed creator's list is rebuilt from the bucket's totals.
fn lower_creator(
    b: &mut Boards,
    k: usize,
    (creator, bucket): (CreatorId, usize),
    coins: u64,
    seq: u64,
    layout: Layout,
) {
    let Some(score) = b.creators.get_mut(&creator) else {
        return;
    };
    score.coins = score.coins.saturating_sub(coins);
    score.seq = score.seq.max(seq);
    if score.coins == 0 {
        b.creators.remove(&creator);
    }
    if let Some(list) = b.creator_lists.get_mut(&bucket)
        && list.lists(creator.0)
    {
        let all = b
            .creators
            .iter()
            .filter(|(c, _)| layout.bucket(c.0) == bucket)
            .map(|(&c, &s)| (s, c.0));
        *list = WindowTop::rebuilt(k, all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WindowsConfig {
        WindowsConfig {
            enabled: true,
            ..WindowsConfig::default()
        }
    }

    fn windows(top_k: usize) -> Windows {
        let view = WindowsView {
            config: config(),
            ..WindowsView::default()
        };
        Windows::from_view(&view, (top_k, Layout::SINGLE, true), |_| true)
    }

    fn gift(sender: u64, coins: u64, seq: u64) -> Counted {
        Counted {
            creator: Some(CreatorId(7)),
            stream: None,
            sender: UserId(sender),
            coins,
            seq,
        }
    }

    /// The day key's operations of one write, sorted.
    fn day_ops(w: &mut Windows, hour: u32) -> Vec<Op> {
        let mut ops = vec![Vec::new()];
        let mut reconcile = Vec::new();
        w.take_ops(&mut ops, &mut reconcile);
        let day = TimeWindow::of_hour(WindowKind::Day, hour);
        let key = creator_top_window_key(CreatorId(7), day);
        let mut mine: Vec<Op> = ops
            .remove(0)
            .into_iter()
            .filter(|o| o.key() == key)
            .collect();
        mine.sort_by_key(|o| format!("{o:?}"));
        mine
    }

    /// A write holds the members that entered or moved and the ones that left; the key's
    /// expiry travels with its first scores only (and again once the key was emptied); a
    /// reversal that lowers a listed gifter out brings the next one in.
    #[test]
    fn a_write_holds_what_entered_moved_and_left_and_the_expiry_once() {
        let hour = 493_000;
        let mut w = windows(2);
        w.gift(hour, gift(1, 50, 1), true);
        w.gift(hour, gift(2, 40, 2), true);
        w.gift(hour, gift(3, 30, 3), true);
        let day = TimeWindow::of_hour(WindowKind::Day, hour);
        let key = creator_top_window_key(CreatorId(7), day);
        let at = expire_at_ms(&config(), day) / 1000;
        assert_eq!(
            day_ops(&mut w, hour),
            vec![
                Op::SetExpiring(key.clone(), 1, 50, at),
                Op::SetExpiring(key.clone(), 2, 40, at)
            ]
        );
        // User 3 passes user 2: 3 enters, 2 leaves; the key has its expiry already.
        w.gift(hour, gift(3, 15, 4), true);
        assert_eq!(
            day_ops(&mut w, hour),
            vec![Op::Remove(key.clone(), 2), Op::Set(key.clone(), 3, 45)]
        );
        // User 1's 50 coins reversed: it leaves, user 2 (outside the list) comes back.
        w.reverse(hour, gift(1, 50, 5), true);
        assert_eq!(
            day_ops(&mut w, hour),
            vec![Op::Remove(key.clone(), 1), Op::Set(key.clone(), 2, 40)]
        );
        // Nothing changed: nothing written.
        assert_eq!(day_ops(&mut w, hour), vec![]);
        // Every gift reversed: the key is emptied (Redis deletes it), so the next gift
        // writes the expiry again.
        w.reverse(hour, gift(2, 40, 6), true);
        w.reverse(hour, gift(3, 45, 7), true);
        assert_eq!(
            day_ops(&mut w, hour),
            vec![Op::Remove(key.clone(), 2), Op::Remove(key.clone(), 3)]
        );
        w.gift(hour, gift(4, 10, 8), true);
        assert_eq!(
            day_ops(&mut w, hour),
            vec![Op::SetExpiring(key.clone(), 4, 10, at)]
        );
        assert_eq!(
            expire_at_ms(&config(), day),
            day.end_ms() + 14 * 86_400_000,
            "the window's end + its 14 days"
        );
    }
}
