//! Read-only queries: wallets, histories, creators, streams, leaderboards (all-time and
//! windowed, `leaderboards.rs`), gift popularity, and the read model's view at a
//! consistent cut. Each locks the shards it reads, one at a time.

use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde::Serialize;

use super::books::{CreatorShard, Credited, StreamShard};
use super::event::{
    CreatorId, GiftId, Stamp, StreamId, TimeWindow, UserId, VideoId, WindowKind, hour_of,
};
use super::leaderboards::{GiftCount, Score, ShardWindows, WindowsView, merge, retained};
use super::shard::{HistoryEntry, SenderShard};
use super::topk::{self, TopK};
use super::videos::VideoView;
use super::{Engine, shard_of};
use crate::economy::Region;
use rustc_hash::FxHashMap;

/// A wallet as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalletView {
    pub user: UserId,
    pub coins: u64,
    pub spent_this_month: u64,
    pub monthly_budget_coins: Option<u64>,
    pub region: Option<Region>,
    pub adult: bool,
    /// Coins spent on gifts in the UTC day of `now` (held at `u32::MAX`).
    pub spent_today: u64,
    /// Coins spent on gifts in the ISO week of `now` (held at `u32::MAX`).
    pub spent_this_week: u64,
    pub daily_budget_coins: Option<u64>,
    pub weekly_budget_coins: Option<u64>,
    /// Coins the user owes (reversed recharges already spent; repaid first by the next
    /// recharges): while above 0, gifts and purchases are `ACCOUNT_IN_DEBT`.
    pub coins_owed: u64,
}

/// A creator's totals as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatorView {
    pub creator: CreatorId,
    /// Diamonds credited on this node: floor(coins received x share).
    pub diamonds_total: u128,
    /// Credited here, plus settled in from other nodes, less held by the earnings hold,
    /// less paid out: what a payout may spend.
    pub diamonds_available: u128,
    /// Credited (or settled in) but not released yet by the earnings hold (0 without
    /// one). `diamonds_total + diamonds_settled_in = diamonds_held + diamonds_available +
    /// diamonds paid`.
    pub diamonds_held: u128,
    /// A cluster owner: diamonds other nodes credited this creator and reported here.
    pub diamonds_settled_in: u128,
    /// The fraction of a diamond carried over, in [0, 1).
    pub diamond_fraction: Decimal,
    pub coins_received: u128,
    /// Gift counts by catalog id, in catalog order.
    pub gifts: Vec<(GiftId, u128)>,
}

/// A stream as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamView {
    pub stream: StreamId,
    pub creator: Option<CreatorId>,
    pub coins_received: u128,
    /// `(coins_target, progress)`; progress is the stream's coins received.
    pub goal: Option<(u64, u128)>,
}

impl Engine {
    /// The wallet of `user`; `now` decides which day, week and month the spending
    /// counts are of.
    pub fn wallet(&self, user: UserId, now: Stamp) -> WalletView {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        let w = shard.wallets.get(&user).copied().unwrap_or_default();
        let budgets = shard.budgets_of(user, &w);
        let spent = w.spent_in(now.period());
        WalletView {
            user,
            coins: w.coins,
            spent_this_month: spent.month,
            monthly_budget_coins: budgets.monthly(),
            region: w.region(),
            adult: w.adult,
            spent_today: spent.day,
            spent_this_week: spent.week,
            daily_budget_coins: budgets.daily(),
            weekly_budget_coins: budgets.weekly(),
            coins_owed: shard.owed_at(user, w.coins),
        }
    }

    /// Recent history of `user`, newest first.
    pub fn history(&self, user: UserId, limit: usize) -> Vec<HistoryEntry> {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .histories
            .get(&user)
            .map(|h| h.iter().rev().take(limit).map(|&l| l.into()).collect())
            .unwrap_or_default()
    }

    /// `creator`'s totals, held and available diamonds as of the ledger's time (the
    /// newest stamp applied).
    pub fn creator(&self, creator: CreatorId) -> CreatorView {
        self.creator_at(creator, Stamp(0))
    }

    /// `creator`'s totals, with held and available diamonds as of `now` (or the ledger's
    /// time, if later): what a payout stamped `now` would find.
    pub fn creator_at(&self, creator: CreatorId, now: Stamp) -> CreatorView {
        let at = now.0.max(self.hold_clock.load(Ordering::Acquire));
        let (totals, credited, diamonds) = {
            let book = self.creators[shard_of(creator.0, self.mask)].lock();
            let totals = book.creators.get(&creator).copied().unwrap_or_default();
            let credited = book.credited.get(&creator).copied().unwrap_or_default();
            (totals, credited, book.diamonds_at(creator, at))
        };
        let mut gifts: Vec<(GiftId, u128)> = Vec::new();
        for shard in self.senders.iter() {
            let shard = shard.lock();
            if let Some(part) = shard.creators.get(&creator) {
                for &(gift, n) in &part.gifts {
                    match gifts.iter_mut().find(|(g, _)| *g == gift) {
                        Some((_, total)) => *total += n,
                        None => gifts.push((gift, n)),
                    }
                }
            }
        }
        gifts.sort_unstable();
        CreatorView {
            creator,
            diamonds_total: credited.diamonds,
            diamonds_available: diamonds.available,
            diamonds_held: diamonds.held,
            diamonds_settled_in: diamonds.settled_in,
            diamond_fraction: credited.fraction(),
            coins_received: totals.coins_received,
            gifts,
        }
    }

    /// The read model at a consistent cut (does not take the log).
    pub fn read_model_view(&self, parts: ViewParts) -> ReadModelView {
        let parts = ViewParts {
            windows: parts.windows && self.config.windows.enabled,
            ..parts
        };
        let cut = self.lock_all();
        let mut view = read_model_view(
            self.last_seq(),
            cut.senders.iter().map(|g| &**g),
            cut.creators.iter().map(|g| &**g),
            cut.streams.iter().map(|g| &**g),
            parts,
        );
        if let Some(w) = view.windows.as_mut() {
            w.config = self.config.windows.clone();
        }
        view
    }

    /// The diamonds credited here, exactly, to every creator `select` picks (a cluster
    /// node's creators owned by other nodes: what it reports to them as settlements).
    pub fn creators_credited(
        &self,
        select: impl Fn(CreatorId) -> bool,
    ) -> Vec<(CreatorId, Credited)> {
        let mut out = Vec::new();
        for book in self.creators.iter() {
            let book = book.lock();
            out.extend(
                book.credited
                    .iter()
                    .filter(|(c, _)| select(**c))
                    .map(|(&c, credited)| (c, *credited)),
            );
        }
        out
    }

    /// Coins `user` gave `creator` in total.
    pub fn creator_gifter_coins(&self, creator: CreatorId, user: UserId) -> u128 {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .creator_gifters
            .get(&(creator, user))
            .map_or(0, |c| c.get())
    }

    /// Coins `user` gave in `stream` in total.
    pub fn stream_gifter_coins(&self, stream: StreamId, user: UserId) -> u128 {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .stream_gifters
            .get(&(stream, user))
            .map_or(0, |c| c.get())
    }

    /// Top gifters of a creator: `(user, coins)`, best first.
    pub fn creator_top_gifters(&self, creator: CreatorId, limit: usize) -> Vec<(UserId, u128)> {
        self.top_gifters(limit, |s| {
            s.creators.get(&creator).map(|p| p.top.entries().to_vec())
        })
    }

    /// Merges the shards' top-K lists picked by `part` (each gifter is in one shard).
    fn top_gifters(
        &self,
        limit: usize,
        part: impl Fn(&SenderShard) -> Option<Vec<(u64, u64)>>,
    ) -> Vec<(UserId, u128)> {
        let parts: Vec<Vec<(u64, u64)>> = self
            .senders
            .iter()
            .filter_map(|s| part(&s.lock()))
            .collect();
        topk::merge_entries(parts.iter().map(|p| &p[..]), limit.min(self.config.top_k))
            .into_iter()
            .map(|(coins, user)| (UserId(user), coins))
            .collect()
    }

    pub fn stream(&self, stream: StreamId) -> StreamView {
        let totals = self.streams[shard_of(stream.0, self.mask)]
            .lock()
            .streams
            .get(&stream)
            .copied()
            .unwrap_or_default();
        StreamView {
            stream,
            creator: totals.creator,
            coins_received: totals.coins_received,
            goal: totals
                .goal_set
                .then_some((totals.coins_target, totals.coins_received)),
        }
    }

    /// Top gifters in a stream: `(user, coins)`, best first.
    pub fn stream_top_gifters(&self, stream: StreamId, limit: usize) -> Vec<(UserId, u128)> {
        self.top_gifters(limit, |s| {
            s.streams.get(&stream).map(|p| p.top.entries().to_vec())
        })
    }

    /// A video's totals: the sum of every sender shard's part (each locked in turn).
    pub fn video(&self, video: VideoId) -> VideoView {
        let mut view = VideoView::new(video);
        for shard in &self.senders {
            if let Some(part) = shard.lock().videos.parts.get(&video) {
                view.add(part);
            }
        }
        view
    }

    /// Top gifters on a video: `(user, coins)`, best first.
    pub fn video_top_gifters(&self, video: VideoId, limit: usize) -> Vec<(UserId, u128)> {
        self.top_gifters(limit, |s| {
            s.videos.parts.get(&video).map(|p| p.top.entries().to_vec())
        })
    }

    /// Coins `user` gave on `video` in total.
    pub fn video_gifter_coins(&self, video: VideoId, user: UserId) -> u128 {
        let shard = self.senders[shard_of(user.0, self.mask)].lock();
        shard
            .videos
            .gifters
            .get(&(video, user))
            .map_or(0, |c| c.get())
    }

    /// Top creators by diamonds credited: `(creator, diamonds)`, best first.
    pub fn top_creators(&self, limit: usize) -> Vec<(CreatorId, u128)> {
        let parts: Vec<TopK> = self.creators.iter().map(|c| c.lock().top.clone()).collect();
        TopK::merge(&parts, limit.min(self.config.top_k))
            .into_iter()
            .map(|(diamonds, creator)| (CreatorId(creator), diamonds))
            .collect()
    }
}

/// Which parts of [`ReadModelView`] to fill.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViewParts {
    /// The top `tops` gifters of every creator and stream (0: none); the read model
    /// keeps `engine.top_k`.
    pub tops: usize,
    pub wallets: bool,
    /// Every windowed total ([`ReadModelView::windows`]; nothing while the windows are
    /// off).
    pub windows: bool,
}

/// A stream's book as the read model shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamBook {
    pub creator: Option<CreatorId>,
    pub coins_received: u128,
    /// The goal's coin target, if one was set.
    pub goal: Option<u64>,
}

/// A video's totals as the read model shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoBook {
    pub creator: Option<CreatorId>,
    pub coins_received: u128,
}

/// Everything the Redis read model projects, at a consistent cut: the creator and
/// stream books, and (with [`ViewParts`]) their top gifters and every wallet balance.
#[derive(Debug, Clone, Default)]
pub struct ReadModelView {
    pub last_seq: u64,
    /// [`ViewParts::tops`]: how many top gifters per creator and stream it holds.
    pub tops: usize,
    /// `(creator, coins received, diamonds paid, diamonds credited)`.
    pub creators: Vec<(CreatorId, u128, u128, Credited)>,
    pub streams: Vec<(StreamId, StreamBook)>,
    /// `(creator, gifter, coins)` for each creator's top [`ViewParts::tops`] gifters.
    pub creator_gifters: Vec<(CreatorId, UserId, u128)>,
    /// `(stream, gifter, coins)` for each stream's top [`ViewParts::tops`] gifters.
    pub stream_gifters: Vec<(StreamId, UserId, u128)>,
    /// Every video gifted on, summed over the sender shards.
    pub videos: Vec<(VideoId, VideoBook)>,
    /// `(video, gifter, coins)` for each video's top [`ViewParts::tops`] gifters.
    pub video_gifters: Vec<(VideoId, UserId, u128)>,
    /// `(user, coins, coins owed)` for every wallet.
    pub wallets: Vec<(UserId, u64, u64)>,
    /// [`ViewParts::windows`] with `engine.windows` on: every windowed total.
    pub windows: Option<WindowsView>,
}

fn read_model_view<'a>(
    last_seq: u64,
    senders: impl Iterator<Item = &'a SenderShard>,
    creators: impl Iterator<Item = &'a CreatorShard>,
    streams: impl Iterator<Item = &'a StreamShard>,
    parts: ViewParts,
) -> ReadModelView {
    let mut view = ReadModelView {
        last_seq,
        tops: parts.tops,
        ..Default::default()
    };
    let mut creator_tops: FxHashMap<CreatorId, Vec<&[(u64, u64)]>> = FxHashMap::default();
    let mut stream_tops: FxHashMap<StreamId, Vec<&[(u64, u64)]>> = FxHashMap::default();
    let mut videos: FxHashMap<VideoId, VideoBook> = FxHashMap::default();
    let mut video_tops: FxHashMap<VideoId, Vec<&[(u64, u64)]>> = FxHashMap::default();
    let mut windows = parts.windows.then(WindowsView::default);
    for s in senders {
        if let Some(w) = windows.as_mut() {
            s.windows.export(w);
        }
        for (&v, part) in &s.videos.parts {
            let book = videos.entry(v).or_default();
            book.coins_received += part.coins;
            book.creator = Some(book.creator.map_or(part.creator, |c| c.min(part.creator)));
            if parts.tops > 0 {
                video_tops.entry(v).or_default().push(part.top.entries());
            }
        }
        if parts.tops > 0 {
            for (&c, part) in &s.creators {
                creator_tops.entry(c).or_default().push(part.top.entries());
            }
            for (&st, part) in &s.streams {
                stream_tops.entry(st).or_default().push(part.top.entries());
            }
        }
        if parts.wallets {
            view.wallets.extend(
                s.wallets
                    .iter()
                    .map(|(&u, w)| (u, w.coins, s.owed_at(u, w.coins))),
            );
        }
    }
    for (c, lists) in creator_tops {
        view.creator_gifters.extend(
            topk::merge_entries(lists, parts.tops)
                .into_iter()
                .map(|(coins, u)| (c, UserId(u), coins)),
        );
    }
    for (st, lists) in stream_tops {
        view.stream_gifters.extend(
            topk::merge_entries(lists, parts.tops)
                .into_iter()
                .map(|(coins, u)| (st, UserId(u), coins)),
        );
    }
    for (v, lists) in video_tops {
        view.video_gifters.extend(
            topk::merge_entries(lists, parts.tops)
                .into_iter()
                .map(|(coins, u)| (v, UserId(u), coins)),
        );
    }
    view.videos = videos.into_iter().collect();
    for c in creators {
        if let Some(w) = windows.as_mut() {
            c.windows.export(w);
        }
        view.creators.extend(c.creators.iter().map(|(&id, t)| {
            let credited = c.credited.get(&id).copied().unwrap_or_default();
            (id, t.coins_received, t.diamonds_paid, credited)
        }));
    }
    for s in streams {
        view.streams.extend(s.streams.iter().map(|(&id, t)| {
            (
                id,
                StreamBook {
                    creator: t.creator,
                    coins_received: t.coins_received,
                    goal: t.goal_set.then_some(t.coins_target),
                },
            )
        }));
    }
    view.windows = windows;
    view
}

// ---- windowed leaderboards (`leaderboards.rs`) ----------------------------------------

/// Why a windowed leaderboard cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// `engine.windows.enabled` is off.
    #[error("windowed leaderboards are off on this ledger (engine.windows.enabled)")]
    Disabled,
    /// The window is older than the retention of its kind at the ledger's time.
    #[error("the window is past its retention (engine.windows)")]
    Expired,
}

impl Engine {
    /// The window of `kind` holding the ledger's time (the newest stamp applied): the
    /// current one.
    pub fn current_window(&self, kind: WindowKind) -> TimeWindow {
        let now = self.hold_clock.load(Ordering::Acquire);
        TimeWindow::of(kind, Stamp(now))
    }

    /// Whether `window` can be read: windows on, and retained at the ledger's time (a
    /// cluster node asks before it reads the window from the shared read model).
    pub fn window_readable(&self, window: TimeWindow) -> Result<(), WindowError> {
        if !self.config.windows.enabled {
            return Err(WindowError::Disabled);
        }
        let now = self.hold_clock.load(Ordering::Acquire);
        let hour = hour_of(Stamp(now));
        if !retained(&self.config.windows, window, hour) {
            return Err(WindowError::Expired);
        }
        Ok(())
    }

    /// Top gifters of `creator` in `window` (gifts on its streams and videos): `(user,
    /// coins)`, best first, ties by who reached the total first.
    pub fn creator_top_gifters_in(
        &self,
        creator: CreatorId,
        window: TimeWindow,
        limit: usize,
    ) -> Result<Vec<(UserId, u128)>, WindowError> {
        self.window_readable(window)?;
        Ok(self.gifters_in(limit, |s| s.creator_top(window, creator).to_vec()))
    }

    /// Top gifters in `stream` in `window`, as [`Engine::creator_top_gifters_in`].
    pub fn stream_top_gifters_in(
        &self,
        stream: StreamId,
        window: TimeWindow,
        limit: usize,
    ) -> Result<Vec<(UserId, u128)>, WindowError> {
        self.window_readable(window)?;
        Ok(self.gifters_in(limit, |s| s.stream_top(window, stream).to_vec()))
    }

    fn gifters_in(
        &self,
        limit: usize,
        list: impl Fn(&ShardWindows) -> Vec<(Score, u64)>,
    ) -> Vec<(UserId, u128)> {
        // Copied out one shard at a time: a read holds one lock at a time.
        let lists: Vec<Vec<(Score, u64)>> = self
            .senders
            .iter()
            .map(|s| list(&s.lock().windows))
            .collect();
        merge(lists.iter().map(|l| &l[..]), limit)
            .into_iter()
            .map(|(id, coins)| (UserId(id), u128::from(coins)))
            .collect()
    }

    /// Top creators by coins received in `window`: `(creator, coins)`, best first, ties
    /// by who reached the total first.
    pub fn top_creators_in(
        &self,
        window: TimeWindow,
        limit: usize,
    ) -> Result<Vec<(CreatorId, u128)>, WindowError> {
        self.window_readable(window)?;
        let lists: Vec<Vec<(Score, u64)>> = self
            .creators
            .iter()
            .map(|b| b.lock().windows.top(window).to_vec())
            .collect();
        Ok(merge(lists.iter().map(|l| &l[..]), limit)
            .into_iter()
            .map(|(id, coins)| (CreatorId(id), u128::from(coins)))
            .collect())
    }

    /// Coins `creator` received in `window`.
    pub fn creator_coins_in(
        &self,
        creator: CreatorId,
        window: TimeWindow,
    ) -> Result<u128, WindowError> {
        self.window_readable(window)?;
        let book = self.creators[shard_of(creator.0, self.mask)].lock();
        Ok(u128::from(book.windows.coins(window, creator)))
    }

    /// Gift popularity (#32 feature 6) in `window`: per catalog code, how many were
    /// sent and their coins, of every creator or of `creator`, most sent first (then
    /// most coins, then the code).
    pub fn gift_stats_in(
        &self,
        window: TimeWindow,
        creator: Option<CreatorId>,
    ) -> Result<Vec<(GiftId, GiftCount)>, WindowError> {
        self.window_readable(window)?;
        let mut all: Vec<(GiftId, GiftCount)> = Vec::new();
        for s in self.senders.iter() {
            let part = s.lock().windows.gift_counts(window, creator);
            for (gift, n) in part {
                match all.iter_mut().find(|(g, _)| *g == gift) {
                    Some((_, total)) => {
                        total.count = total.count.saturating_add(n.count);
                        total.coins = total.coins.saturating_add(n.coins);
                    }
                    None => all.push((gift, n)),
                }
            }
        }
        all.sort_unstable_by(|a, b| (b.1.count, b.1.coins, a.0).cmp(&(a.1.count, a.1.coins, b.0)));
        Ok(all)
    }

    /// The (window, target, gifter) totals the sender shards hold (gauge and memory
    /// figure: the windows' memory is proportional to it).
    pub fn window_pairs(&self) -> usize {
        self.senders.iter().map(|s| s.lock().windows.pairs()).sum()
    }
}
