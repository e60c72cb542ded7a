//! Gifts on videos: a sender shard's part of every video's totals and top gifters.
//!
//! A video gift is checked, debited and credited to its creator exactly as a stream's
//! gift (`SenderShard::send_gift`); only its target's aggregates differ, and they live
//! here. A video has no book of its own: every figure of it is a sum (coins, gift
//! counts), a minimum (its creator) or a merge (top gifters) over the shards' parts, so
//! nothing needs merging per chunk and no lock beyond the sender's is taken per gift.
//! Reads lock the sender shards one at a time, as a stream's top gifters do.
//!
//! Memory: per shard a video's gifters are in, an 80-byte part (96 with its key in the
//! map) plus its gift-count list (24 bytes a gift kind) and top-K entries (16 bytes a
//! gifter, at most `engine.top_k`); a (video, gifter) pair is a 24-byte entry in
//! `gifters`. The `memory` bench measures them whole (`memory/new-video-pair-gift`).
//! Like the streams' per-pair totals, they grow with distinct pairs (the data a video's
//! leaderboard needs); video ids are bounded like stream ids, by the ledger's gifts.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::event::{CreatorId, GiftId, UserId, VideoGift, VideoId};
use super::splitmap::{PairCoins, SplitMap};
use super::topk::{GifterTop, TopK};

/// This shard's part of one video's aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VideoPart {
    /// Coins this shard's senders gave on the video.
    pub coins: u128,
    /// The smallest creator gifted to on the video (a video has one creator; a client
    /// naming another is not refused, as for streams: the smallest id is shown).
    pub creator: CreatorId,
    /// Gift counts by catalog id (a video receives few kinds: a short list).
    pub gifts: Vec<(GiftId, u128)>,
    /// Top gifters among this shard's senders (their totals are in `gifters`).
    pub top: GifterTop,
}

const _: () = assert!(std::mem::size_of::<VideoPart>() == 80);
const _: () = assert!(std::mem::size_of::<(VideoId, UserId, PairCoins)>() == 24);

/// A shard's video aggregates: snapshotted at the end of the state (format 8), so the
/// shard's own encoding, and every older format's, stays as it was.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ShardVideos {
    pub parts: FxHashMap<VideoId, VideoPart>,
    /// Coins gifted per (video, sender of this shard).
    pub gifters: SplitMap<(VideoId, UserId), PairCoins>,
}

impl ShardVideos {
    /// Counts an accepted video gift of `cost` coins (already debited and credited to
    /// the creator): the video's coins, creator, gift counts, the sender's total and
    /// the shard's top gifters of the video. Returns the sender's total on the video.
    /// The one place a video's aggregates grow ([`ShardVideos::reverse`] lowers them).
    pub(crate) fn credit(&mut self, top_k: usize, v: &VideoGift, cost: u64) -> u64 {
        let part = self.parts.entry(v.video).or_insert_with(|| VideoPart {
            coins: 0,
            creator: v.creator,
            gifts: Vec::new(),
            top: GifterTop::default(),
        });
        part.coins += u128::from(cost);
        part.creator = part.creator.min(v.creator);
        match part.gifts.iter_mut().find(|(id, _)| *id == v.gift) {
            Some((_, n)) => *n += u128::from(v.count),
            None => part.gifts.push((v.gift, u128::from(v.count))),
        }
        let total = self.gifters.entry((v.video, v.sender)).or_default();
        let previous = total.0;
        total.0 = total.0.saturating_add(cost);
        part.top.offer(top_k, v.sender.0, total.0, previous);
        total.0
    }

    /// Takes back an accepted gift of `sender` on `video` (a gift reversal: `count`
    /// gifts of catalog code `gift`, `coins` coins): the mirror of
    /// [`ShardVideos::credit`]. The video's coins and gift counts go down, the
    /// sender's total with them (the pair leaves at 0), and the shard's top gifters of
    /// the video: a full list that loses a listed gifter is rebuilt from the shard's
    /// totals (another gifter may come in), as a stream's is. The part stays (its
    /// creator is the video's). Returns the sender's total on the video after it.
    pub(crate) fn reverse(
        &mut self,
        top_k: usize,
        (video, sender): (VideoId, UserId),
        (gift, count): (GiftId, u32),
        coins: u64,
    ) -> u64 {
        let total = self.gifters.lower((video, sender), coins);
        let Some(part) = self.parts.get_mut(&video) else {
            return total;
        };
        part.coins = part.coins.saturating_sub(u128::from(coins));
        if let Some(i) = part.gifts.iter().position(|(g, _)| *g == gift) {
            let n = &mut part.gifts[i].1;
            *n = n.saturating_sub(u128::from(count));
            if *n == 0 {
                part.gifts.remove(i);
            }
        }
        let gifters = &self.gifters;
        part.top.lower(top_k, sender.0, total, || {
            gifters
                .iter()
                .filter(|((v, _), _)| *v == video)
                .map(|((_, u), t)| (t.0, u.0))
                .collect()
        });
        total
    }

    /// The audit of shard `i`'s videos: each part's coins are its gifters' totals' sum,
    /// its top gifters the top `top_k` of them, no gifter without its video's part.
    /// Returns the coins the shard's videos received.
    pub(crate) fn audit(&self, i: usize, top_k: usize, v: &mut Vec<String>) -> u128 {
        let mut sums = FxHashMap::<VideoId, (u128, TopK<u64>)>::default();
        for (&(video, user), &coins) in &self.gifters {
            let (sum, top) = sums.entry(video).or_default();
            *sum += coins.get();
            top.offer(top_k, user.0, coins.0);
        }
        let mut received = 0;
        for (video, part) in &self.parts {
            received += part.coins;
            let (sum, top) = sums.remove(video).unwrap_or_default();
            if sum != part.coins {
                v.push(format!(
                    "video {video}: gifter totals in shard {i} sum to {sum}, its coins are {}",
                    part.coins
                ));
            }
            if top.entries() != part.top.ranked() {
                v.push(format!(
                    "video {video}: top gifters in shard {i} differ from its gifter totals"
                ));
            }
        }
        if let Some(video) = sums.keys().next() {
            v.push(format!(
                "video {video}: gifters in shard {i} without a part"
            ));
        }
        received
    }
}

/// A video as the API shows it: its totals over every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoView {
    pub video: VideoId,
    /// The creator gifted to on it (`None`: no gift accepted on it yet).
    pub creator: Option<CreatorId>,
    pub coins_received: u128,
    /// Gift counts by catalog id, in catalog order.
    pub gifts: Vec<(GiftId, u128)>,
}

impl VideoView {
    /// The empty view of `video`, to add the shards' parts to.
    pub(crate) fn new(video: VideoId) -> VideoView {
        VideoView {
            video,
            creator: None,
            coins_received: 0,
            gifts: Vec::new(),
        }
    }

    /// Adds one shard's part.
    pub(crate) fn add(&mut self, part: &VideoPart) {
        self.coins_received += part.coins;
        self.creator = Some(self.creator.map_or(part.creator, |c| c.min(part.creator)));
        for &(gift, n) in &part.gifts {
            match self.gifts.iter_mut().find(|(id, _)| *id == gift) {
                Some((_, total)) => *total += n,
                None => self.gifts.push((gift, n)),
            }
        }
        self.gifts.sort_unstable();
    }
}
