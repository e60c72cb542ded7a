//! Windowed leaderboards (issue #32 feature 1): top gifters per creator and per stream,
//! and top creators, per UTC hour, day, ISO week and calendar month
//! (`[engine.windows]`, off by default).
//!
//! # Where they live
//! A sender shard keeps, per retained window, the coins each of its senders gave each
//! creator and stream in that window ([`ShardWindows`]: one flat map per target kind,
//! keyed by (target, gifter)) and the top-K of those pairs per target; a gifter lives in
//! one shard, so the shards' lists merge exactly at read time, as the all-time ones do.
//! Gifts on videos count for their creator (as all-time), not for any stream. The top
//! creators per window are in the creator books ([`BookWindows`]): a chunk buffers its
//! gifts' (creator, hour, coins, seq) and merges them with its coins, one lock per book
//! shard, as it merges the all-time totals.
//!
//! # Which window
//! A gift counts in the windows holding its batch's stamp (as the spending windows do):
//! the hour, the day, the ISO week and the month of that stamp. Each entry of a chunk
//! carries its hour, so a replay that merges several stamps at once still puts every
//! coin in its own windows.
//!
//! # Ties
//! A score is the coins in the window and the sequence number of the event that last
//! changed them: of two equal totals, the one reached first (the lower number) ranks
//! first. A creator's number is the largest of the gifts counted for it, which does not
//! depend on the order shards merge in. A gift reversal lowers a total and makes the
//! reversal's number the score's: a total lowered to a tie ranks after one that got
//! there without a reversal.
//!
//! # Exactness
//! Every list is the exact top-K of its window: a score changed by a gift only grows
//! (more coins; every growth is offered), so a pair outside a list can only enter by
//! growing; a reversal that lowers a listed score rebuilds that list from the window's
//! totals (reversals are rare).
//!
//! # Retention and memory
//! `[engine.windows]` keeps the newest `hours`, `days`, `weeks` and `months` windows of
//! each kind. A shard or book drops the windows no longer kept when it counts a gift of a
//! later hour, and a read judges a window by the ledger's time (the newest stamp applied,
//! the engine's `hold_clock`), so what a read returns never depends on when a shard
//! dropped it. Memory is bounded by the distinct (window, gifter) pairs of the retained
//! windows (per pair one 32-byte map entry per target kind, plus a top-K entry while
//! listed; `benches/memory.rs` measures the figure).
//!
//! Size: the sender shards' windows, the creator books' windows and their tests are
//! one structure (the same retention and tie rule), read together.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::event::{CreatorId, GiftId, StreamId, TimeWindow, UserId, WindowKind};
use super::splitmap::{PartKey, SplitMap};
use crate::config::engine::WindowsConfig;

/// Coins in a window and the sequence number of the event that made them so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub coins: u64,
    pub seq: u64,
}

/// True when `a` ranks before `b`: more coins, then reached first (the lower number),
/// then the lower id (never needed: one event changes one score per list).
fn ranks_before(a: (Score, u64), b: (Score, u64)) -> bool {
    a.0.coins > b.0.coins || (a.0.coins == b.0.coins && (a.0.seq, a.1) < (b.0.seq, b.1))
}

/// The windows of each kind `config` keeps.
fn kept(config: &WindowsConfig, kind: WindowKind) -> u32 {
    match kind {
        WindowKind::Hour => config.hours,
        WindowKind::Day => config.days,
        WindowKind::Week => config.weeks,
        WindowKind::Month => config.months,
    }
}

/// Whether `window` is retained at the hour `hour` (hours since the epoch).
pub fn retained(config: &WindowsConfig, window: TimeWindow, hour: u32) -> bool {
    window.kept_at(hour, kept(config, window.kind))
}

/// The K best `(score, id)` of one window's list, best first (always sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowTop {
    entries: Vec<(Score, u64)>,
}

impl WindowTop {
    /// Records that `id`'s score grew from `previous` (`None`: it had none) to `score`.
    pub fn offer(&mut self, k: usize, id: u64, score: Score, previous: Option<Score>) {
        if k == 0 {
            return;
        }
        let candidate = (score, id);
        // Sorted and exact: a listed entry is found where its previous score ranks.
        let listed = previous.and_then(|p| {
            let at = self.entries.partition_point(|&e| ranks_before(e, (p, id)));
            (self.entries.get(at) == Some(&(p, id))).then_some(at)
        });
        let from = match listed {
            Some(at) => at,
            None if self.entries.len() < k => {
                self.entries.push(candidate);
                self.entries.len() - 1
            }
            None => {
                let last = self.entries.len() - 1;
                if !ranks_before(candidate, self.entries[last]) {
                    return;
                }
                last // the last one leaves
            }
        };
        self.entries[from] = candidate;
        let to = self.entries[..from].partition_point(|&e| ranks_before(e, candidate));
        self.entries[to..=from].rotate_right(1);
    }

    pub fn lists(&self, id: u64) -> bool {
        self.entries.iter().any(|e| e.1 == id)
    }

    /// The top `k` of `all` (a score of 0 coins is no entry).
    pub fn rebuilt(k: usize, all: impl Iterator<Item = (Score, u64)>) -> WindowTop {
        let mut entries: Vec<(Score, u64)> = all.filter(|e| e.0.coins > 0).collect();
        entries.sort_unstable_by(|&a, &b| rank_cmp(a, b));
        entries.truncate(k);
        WindowTop { entries }
    }

    pub fn entries(&self) -> &[(Score, u64)] {
        &self.entries
    }
}

fn rank_cmp(a: (Score, u64), b: (Score, u64)) -> std::cmp::Ordering {
    if ranks_before(a, b) {
        std::cmp::Ordering::Less
    } else if ranks_before(b, a) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

/// The top `limit` of several lists over disjoint ids (the shards' lists of one target),
/// as `(id, coins)`.
pub(crate) fn merge<'a>(
    lists: impl IntoIterator<Item = &'a [(Score, u64)]>,
    limit: usize,
) -> Vec<(u64, u64)> {
    let mut all: Vec<(Score, u64)> = lists.into_iter().flatten().copied().collect();
    all.sort_unstable_by(|&a, &b| rank_cmp(a, b));
    all.truncate(limit);
    all.into_iter().map(|(s, id)| (id, s.coins)).collect()
}

/// Gifts sent of one catalog code in a window: how many, and their coins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftCount {
    pub count: u64,
    pub coins: u64,
}

impl GiftCount {
    fn add(&mut self, count: u32, coins: u64, up: bool) {
        if up {
            self.count = self.count.saturating_add(u64::from(count));
            self.coins = self.coins.saturating_add(coins);
        } else {
            self.count = self.count.saturating_sub(u64::from(count));
            self.coins = self.coins.saturating_sub(coins);
        }
    }
}

/// One window's totals and lists in one sender shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GifterBoards {
    /// Split maps: a window's pairs grow by millions under uniform traffic, and a whole
    /// map doubling at once would hold the shard's lock for as long (`splitmap.rs`).
    creator_pairs: SplitMap<(CreatorId, UserId), Score>,
    stream_pairs: SplitMap<(StreamId, UserId), Score>,
    creator_tops: FxHashMap<CreatorId, WindowTop>,
    stream_tops: FxHashMap<StreamId, WindowTop>,
    /// Gift popularity (#32 feature 6): per catalog code, over every creator (a short
    /// list: the catalog's codes), and per (creator, code).
    gifts: Vec<(GiftId, GiftCount)>,
    creator_gifts: FxHashMap<(CreatorId, GiftId), GiftCount>,
}

impl GifterBoards {
    /// Counts (`up`) or takes back `count` gifts of `gift` worth `coins` to `creator`.
    fn count_gift(
        &mut self,
        creator: CreatorId,
        (gift, count): (GiftId, u32),
        coins: u64,
        up: bool,
    ) {
        let at = match self.gifts.iter().position(|(g, _)| *g == gift) {
            Some(at) => at,
            None => {
                self.gifts.push((gift, GiftCount::default()));
                self.gifts.len() - 1
            }
        };
        self.gifts[at].1.add(count, coins, up);
        let line = self.creator_gifts.entry((creator, gift)).or_default();
        line.add(count, coins, up);
        if line.count == 0 && line.coins == 0 {
            self.creator_gifts.remove(&(creator, gift));
        }
        if self.gifts[at].1 == GiftCount::default() {
            self.gifts.swap_remove(at);
        }
    }
}

/// One kind of target's pairs in a window and their lists.
pub(crate) type Board<'a, T> = (
    &'a mut SplitMap<(T, UserId), Score>,
    &'a mut FxHashMap<T, WindowTop>,
);

/// Adds `coins` at `seq` to the pair `(target, sender)` and offers it to `target`'s list.
pub(crate) fn add_pair<T: Copy + Eq + std::hash::Hash>(
    (pairs, tops): Board<'_, T>,
    k: usize,
    (target, sender): (T, UserId),
    coins: u64,
    seq: u64,
) where
    (T, UserId): PartKey,
{
    let score = pairs.entry((target, sender)).or_default();
    let previous = (score.coins > 0).then_some(*score);
    *score = Score {
        coins: score.coins.saturating_add(coins),
        seq,
    };
    let score = *score;
    tops.entry(target)
        .or_default()
        .offer(k, sender.0, score, previous);
}

/// Takes `coins` off the pair `(target, sender)` (a reversal numbered `seq`); a listed
/// pair's list is rebuilt from the window's pairs of `target`.
pub(crate) fn lower_pair<T: Copy + Eq + std::hash::Hash>(
    (pairs, tops): Board<'_, T>,
    k: usize,
    (target, sender): (T, UserId),
    coins: u64,
    seq: u64,
) where
    (T, UserId): PartKey,
{
    let Some(score) = pairs.get_mut(&(target, sender)) else {
        return;
    };
    score.coins = score.coins.saturating_sub(coins);
    score.seq = score.seq.max(seq);
    if score.coins == 0 {
        pairs.remove(&(target, sender));
    }
    if let Some(top) = tops.get_mut(&target)
        && top.lists(sender.0)
    {
        let all = pairs
            .iter()
            .filter(|((t, _), _)| *t == target)
            .map(|(&(_, u), &s)| (s, u.0));
        *top = WindowTop::rebuilt(k, all);
    }
}

/// Every windowed total the engine holds at a cut, for the read model (which keeps its
/// own copy to write absolute scores: `persist::read_model`).
#[derive(Clone, Debug, Default)]
pub struct WindowsView {
    /// The retention in force (`engine.windows`).
    pub config: WindowsConfig,
    /// The newest hour a gift was counted at (the windows retained then are kept).
    pub newest_hour: u32,
    /// `(window, creator, gifter, score)`: every pair.
    pub creator_pairs: Vec<(TimeWindow, CreatorId, UserId, Score)>,
    /// `(window, stream, gifter, score)`: every pair.
    pub stream_pairs: Vec<(TimeWindow, StreamId, UserId, Score)>,
    /// `(window, creator, score)`: coins each creator received.
    pub creators: Vec<(TimeWindow, CreatorId, Score)>,
}

/// A gift to count: its creator, its stream (`None`: a gift on a video), its sender, its
/// catalog code and count, its coins and number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counted {
    pub creator: CreatorId,
    pub stream: Option<StreamId>,
    pub sender: UserId,
    pub gift: (GiftId, u32),
    pub coins: u64,
    pub seq: u64,
}

/// What a chunk owes the books' top creators: (creator, hour, coins, seq) per gift.
pub(crate) type PendingWindowCredits = Vec<(CreatorId, u32, u64, u64)>;

/// A sender shard's windowed totals and top gifters (module doc). Snapshot format 10.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardWindows {
    windows: BTreeMap<TimeWindow, GifterBoards>,
    /// The newest hour a gift was counted at: the windows no longer kept then are gone.
    newest_hour: u32,
    /// The chunk's credits for the top creators, merged with its coins (empty at a cut).
    #[serde(skip)]
    pub pending: PendingWindowCredits,
    /// The windows of the hour last counted at that are kept ([`HourWindows`]).
    #[serde(skip)]
    at: HourWindows,
}

/// A cache of the windows holding one hour that are kept at one newest hour: a window's
/// week and month take a calendar conversion, and every gift of a batch has the same
/// hour. Not state: equal to any other (a loaded shard has none yet).
#[derive(Clone, Copy, Debug, Default)]
struct HourWindows(Option<(u32, u32, [Option<TimeWindow>; 4])>);

impl PartialEq for HourWindows {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HourWindows {}

impl HourWindows {
    /// The windows holding `hour` that are kept at the newest hour `newest`.
    fn kept(&mut self, config: &WindowsConfig, hour: u32, newest: u32) -> [Option<TimeWindow>; 4] {
        if let HourWindows(Some((h, n, windows))) = *self
            && (h, n) == (hour, newest)
        {
            return windows;
        }
        let windows = WindowKind::ALL.map(|kind| {
            let window = TimeWindow::of_hour(kind, hour);
            retained(config, window, newest).then_some(window)
        });
        *self = HourWindows(Some((hour, newest, windows)));
        windows
    }
}

impl ShardWindows {
    /// Counts gift `g` at the hour `hour` in the windows holding it.
    pub(crate) fn gift(&mut self, config: &WindowsConfig, k: usize, hour: u32, g: Counted) {
        if g.coins == 0 {
            return;
        }
        if hour > self.newest_hour {
            self.newest_hour = hour;
            let newest = self.newest_hour;
            self.windows.retain(|&w, _| retained(config, w, newest));
        }
        let kept = self.at.kept(config, hour, self.newest_hour);
        for window in kept.into_iter().flatten() {
            let b = self.windows.entry(window).or_default();
            let creators = (&mut b.creator_pairs, &mut b.creator_tops);
            add_pair(creators, k, (g.creator, g.sender), g.coins, g.seq);
            if let Some(stream) = g.stream {
                let streams = (&mut b.stream_pairs, &mut b.stream_tops);
                add_pair(streams, k, (stream, g.sender), g.coins, g.seq);
            }
            b.count_gift(g.creator, g.gift, g.coins, true);
        }
        self.pending.push((g.creator, hour, g.coins, g.seq));
    }

    /// Looks up, without changing anything, what counting a gift of `gift` from `sender`
    /// to `creator` (and `stream`) at the hour `hour` will touch in each window: the
    /// pairs, the lists and the gift counts, so that [`SenderShard::warm`] keeps these
    /// cache misses in flight together. Nothing before the first gift of an hour.
    ///
    /// [`SenderShard::warm`]: super::shard::SenderShard::warm
    pub(crate) fn warm(
        &self,
        hour: u32,
        (creator, stream): (CreatorId, StreamId),
        sender: UserId,
        gift: GiftId,
    ) -> u64 {
        let HourWindows(Some((h, _, windows))) = self.at else {
            return 0;
        };
        if h != hour {
            return 0;
        }
        let mut seen = 0;
        let last = |top: Option<&WindowTop>| top.and_then(|t| t.entries.last()).map_or(0, |e| e.1);
        for window in windows.into_iter().flatten() {
            let Some(b) = self.windows.get(&window) else {
                continue;
            };
            seen ^= b
                .creator_pairs
                .get(&(creator, sender))
                .map_or(0, |s| s.coins);
            seen ^= last(b.creator_tops.get(&creator));
            seen ^= b.stream_pairs.get(&(stream, sender)).map_or(0, |s| s.coins);
            seen ^= last(b.stream_tops.get(&stream));
            seen ^= b.creator_gifts.get(&(creator, gift)).map_or(0, |n| n.coins);
        }
        seen
    }

    /// Takes a reversed gift `g` (counted at the hour `hour`) off its windows.
    pub(crate) fn reverse(&mut self, k: usize, hour: u32, g: Counted) {
        for kind in WindowKind::ALL {
            let Some(b) = self.windows.get_mut(&TimeWindow::of_hour(kind, hour)) else {
                continue;
            };
            let creators = (&mut b.creator_pairs, &mut b.creator_tops);
            lower_pair(creators, k, (g.creator, g.sender), g.coins, g.seq);
            if let Some(stream) = g.stream {
                let streams = (&mut b.stream_pairs, &mut b.stream_tops);
                lower_pair(streams, k, (stream, g.sender), g.coins, g.seq);
            }
            b.count_gift(g.creator, g.gift, g.coins, false);
        }
    }

    /// This shard's gifts per catalog code in `window`: of every creator, or of one.
    pub(crate) fn gift_counts(
        &self,
        window: TimeWindow,
        creator: Option<CreatorId>,
    ) -> Vec<(GiftId, GiftCount)> {
        let Some(b) = self.windows.get(&window) else {
            return Vec::new();
        };
        match creator {
            None => b.gifts.clone(),
            Some(c) => b
                .creator_gifts
                .iter()
                .filter(|((of, _), _)| *of == c)
                .map(|(&(_, g), &n)| (g, n))
                .collect(),
        }
    }

    /// This shard's list of `creator`'s top gifters in `window`.
    pub(crate) fn creator_top(&self, window: TimeWindow, creator: CreatorId) -> &[(Score, u64)] {
        self.windows
            .get(&window)
            .and_then(|b| b.creator_tops.get(&creator))
            .map_or(&[], |t| t.entries())
    }

    /// This shard's list of `stream`'s top gifters in `window`.
    pub(crate) fn stream_top(&self, window: TimeWindow, stream: StreamId) -> &[(Score, u64)] {
        self.windows
            .get(&window)
            .and_then(|b| b.stream_tops.get(&stream))
            .map_or(&[], |t| t.entries())
    }

    /// Adds this shard's (window, target, gifter) totals to `view` (the read model's
    /// copy at a cut).
    pub(crate) fn export(&self, view: &mut WindowsView) {
        view.newest_hour = view.newest_hour.max(self.newest_hour);
        for (&w, b) in &self.windows {
            let creators = b.creator_pairs.iter();
            view.creator_pairs
                .extend(creators.map(|(&(c, u), &s)| (w, c, u, s)));
            let streams = b.stream_pairs.iter();
            view.stream_pairs
                .extend(streams.map(|(&(st, u), &s)| (w, st, u, s)));
        }
    }

    /// The (window, target, gifter) totals held: what the memory is proportional to.
    pub(crate) fn pairs(&self) -> usize {
        self.windows
            .values()
            .map(|b| b.creator_pairs.len() + b.stream_pairs.len())
            .sum()
    }

    /// Every window's totals and lists, sorted (for the state fingerprint).
    pub(crate) fn canonical(&self) -> String {
        let mut out = format!("newest {}", self.newest_hour);
        for (w, b) in &self.windows {
            let mut creators: Vec<_> = b.creator_pairs.iter().collect();
            creators.sort_unstable_by_key(|e| *e.0);
            let mut streams: Vec<_> = b.stream_pairs.iter().collect();
            streams.sort_unstable_by_key(|e| *e.0);
            let mut ctops: Vec<_> = b.creator_tops.iter().collect();
            ctops.sort_unstable_by_key(|e| *e.0);
            let mut stops: Vec<_> = b.stream_tops.iter().collect();
            stops.sort_unstable_by_key(|e| *e.0);
            let mut gifts = b.gifts.clone();
            gifts.sort_unstable_by_key(|e| e.0);
            let mut creator_gifts: Vec<_> = b.creator_gifts.iter().collect();
            creator_gifts.sort_unstable_by_key(|e| *e.0);
            out.push_str(&format!(
                " {w:?}: {creators:?} {streams:?} {ctops:?} {stops:?} {gifts:?} {creator_gifts:?}"
            ));
        }
        out
    }

    /// Rebuilds every list at length `k` (the config's `top_k` changed).
    pub(crate) fn rebuild_tops(&mut self, k: usize) {
        for b in self.windows.values_mut() {
            for (creator, top) in b.creator_tops.iter_mut() {
                let all = b.creator_pairs.iter().filter(|((c, _), _)| c == creator);
                *top = WindowTop::rebuilt(k, all.map(|(&(_, u), &s)| (s, u.0)));
            }
            for (stream, top) in b.stream_tops.iter_mut() {
                let all = b.stream_pairs.iter().filter(|((s, _), _)| s == stream);
                *top = WindowTop::rebuilt(k, all.map(|(&(_, u), &s)| (s, u.0)));
            }
        }
    }
}

/// One window's creator totals and top creators in one creator book.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CreatorBoard {
    scores: FxHashMap<CreatorId, Score>,
    top: WindowTop,
}

/// A creator book's windowed coins received and top creators (module doc). Snapshot
/// format 10.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BookWindows {
    windows: BTreeMap<TimeWindow, CreatorBoard>,
    newest_hour: u32,
    /// The windows of the hour last credited at that are kept ([`HourWindows`]).
    #[serde(skip)]
    at: HourWindows,
}

impl BookWindows {
    /// Credits `creator` with `coins` received at the hour `hour` by gift `seq`.
    pub(crate) fn credit(
        &mut self,
        config: &WindowsConfig,
        k: usize,
        creator: CreatorId,
        (hour, coins, seq): (u32, u64, u64),
    ) {
        if hour > self.newest_hour {
            self.newest_hour = hour;
            let newest = self.newest_hour;
            self.windows.retain(|&w, _| retained(config, w, newest));
        }
        let kept = self.at.kept(config, hour, self.newest_hour);
        for window in kept.into_iter().flatten() {
            let board = self.windows.entry(window).or_default();
            let score = board.scores.entry(creator).or_default();
            let previous = (score.coins > 0).then_some(*score);
            // The largest number: whatever order the shards merge in.
            *score = Score {
                coins: score.coins.saturating_add(coins),
                seq: score.seq.max(seq),
            };
            let score = *score;
            board.top.offer(k, creator.0, score, previous);
        }
    }

    /// Takes a reversed gift's `coins` (counted at the hour `hour`) off `creator`, the
    /// reversal numbered `seq`.
    pub(crate) fn reverse(
        &mut self,
        k: usize,
        creator: CreatorId,
        (hour, coins, seq): (u32, u64, u64),
    ) {
        for kind in WindowKind::ALL {
            let Some(board) = self.windows.get_mut(&TimeWindow::of_hour(kind, hour)) else {
                continue;
            };
            let Some(score) = board.scores.get_mut(&creator) else {
                continue;
            };
            score.coins = score.coins.saturating_sub(coins);
            score.seq = score.seq.max(seq);
            if score.coins == 0 {
                board.scores.remove(&creator);
            }
            if board.top.lists(creator.0) {
                let all = board.scores.iter().map(|(&c, &s)| (s, c.0));
                board.top = WindowTop::rebuilt(k, all);
            }
        }
    }

    /// Adds this book's (window, creator) totals to `view`.
    pub(crate) fn export(&self, view: &mut WindowsView) {
        view.newest_hour = view.newest_hour.max(self.newest_hour);
        for (&w, b) in &self.windows {
            view.creators
                .extend(b.scores.iter().map(|(&c, &s)| (w, c, s)));
        }
    }

    /// This book's list of top creators in `window`.
    pub(crate) fn top(&self, window: TimeWindow) -> &[(Score, u64)] {
        self.windows.get(&window).map_or(&[], |b| b.top.entries())
    }

    /// Coins `creator` received in `window` (0 when none or not retained).
    pub(crate) fn coins(&self, window: TimeWindow, creator: CreatorId) -> u64 {
        self.windows
            .get(&window)
            .and_then(|b| b.scores.get(&creator))
            .map_or(0, |s| s.coins)
    }

    /// Every window's totals and list, sorted (for the state fingerprint).
    pub(crate) fn canonical(&self) -> String {
        let mut out = format!("newest {}", self.newest_hour);
        for (w, b) in &self.windows {
            let mut scores: Vec<_> = b.scores.iter().collect();
            scores.sort_unstable_by_key(|e| *e.0);
            out.push_str(&format!(" {w:?}: {scores:?} {:?}", b.top));
        }
        out
    }

    /// Rebuilds every list at length `k`.
    pub(crate) fn rebuild_tops(&mut self, k: usize) {
        for board in self.windows.values_mut() {
            let all = board.scores.iter().map(|(&c, &s)| (s, c.0));
            board.top = WindowTop::rebuilt(k, all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list offered scores in any order equals the sorted top K of the final scores,
    /// ties broken by the number that reached them.
    #[test]
    fn a_window_list_is_the_exact_top_k_with_ties_by_first_reached() {
        let mut top = WindowTop::default();
        let mut scores: FxHashMap<u64, Score> = FxHashMap::default();
        for step in 0..2_000u64 {
            let id = (step * 7_919) % 37;
            let coins = 1 + (step * 31) % 5;
            let seq = step + 1;
            let previous = scores.get(&id).copied();
            let score = Score {
                coins: previous.map_or(0, |p| p.coins) + coins,
                seq,
            };
            scores.insert(id, score);
            top.offer(5, id, score, previous);
            let expected = WindowTop::rebuilt(5, scores.iter().map(|(&i, &s)| (s, i)));
            assert_eq!(top, expected, "step {step}");
        }
        // Equal coins: the one reached first ranks first.
        let mut tie = WindowTop::default();
        tie.offer(2, 9, Score { coins: 5, seq: 1 }, None);
        tie.offer(2, 3, Score { coins: 5, seq: 2 }, None);
        tie.offer(2, 4, Score { coins: 5, seq: 3 }, None);
        assert_eq!(
            tie.entries().iter().map(|e| e.1).collect::<Vec<_>>(),
            vec![9, 3]
        );
    }
}
