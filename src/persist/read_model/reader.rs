//! Reading the read model: how far it is (`seq`), the top creators across buckets,
//! and [`ReadModelReader`], which owns every key and Redis read the HTTP routes make.

use super::layout::{Layout, redis_error};
use crate::engine::{CreatorId, StreamId, TimeWindow, UserId, VideoId};
use crate::persist::journal::JournalError;
use crate::persist::redis::{Ledger, RedisConn};

/// Why the read model could not be read: Redis's own error, shown as Redis words it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReadError(#[from] redis::RedisError);

/// A creator's hash in the read model (each field 0 when absent). In a cluster these are
/// the sums over the nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreatorTotals {
    pub coins_received: u128,
    pub diamonds_total: u128,
    pub diamonds_available: u128,
}

/// A stream's hash in the read model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamTotals {
    /// 0 when absent.
    pub coins_received: u128,
    pub creator: Option<u64>,
    pub goal_coins_target: Option<u64>,
}

/// A video's hash in the read model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoTotals {
    /// 0 when absent.
    pub coins_received: u128,
    pub creator: Option<u64>,
}

/// The HTTP routes' reads of the read model (a cluster node answers leaderboards and
/// totals for every partition from it, as of the read model's lag). It owns the keys it
/// reads, so no caller names a read-model key or a Redis command.
#[derive(Clone)]
pub struct ReadModelReader {
    /// Multiplexed: each read clones it, so concurrent requests share one connection.
    conn: RedisConn,
    layout: Layout,
}

impl ReadModelReader {
    pub fn new(conn: RedisConn, layout: Layout) -> ReadModelReader {
        ReadModelReader { conn, layout }
    }

    /// A creator's top `n` gifters, best first (`n` <= `engine.top_k`: the lists hold
    /// no more).
    pub async fn creator_top_gifters(
        &self,
        creator: CreatorId,
        n: usize,
    ) -> Result<Vec<(UserId, u128)>, ReadError> {
        self.top(self.layout.creator_top(creator), n).await
    }

    /// A stream's top `n` gifters, best first.
    pub async fn stream_top_gifters(
        &self,
        stream: StreamId,
        n: usize,
    ) -> Result<Vec<(UserId, u128)>, ReadError> {
        self.top(self.layout.stream_top(stream), n).await
    }

    /// A video's top `n` gifters, best first.
    pub async fn video_top_gifters(
        &self,
        video: VideoId,
        n: usize,
    ) -> Result<Vec<(UserId, u128)>, ReadError> {
        self.top(self.layout.video_top(video), n).await
    }

    /// A creator's top `n` gifters in `window` (`engine.windows`), best first (equal
    /// scores in Redis's order: the windowed lists hold coins, not who reached them
    /// first). An expired window is empty.
    pub async fn creator_top_gifters_in(
        &self,
        creator: CreatorId,
        window: TimeWindow,
        n: usize,
    ) -> Result<Vec<(UserId, u128)>, ReadError> {
        self.top(self.layout.creator_top_in(creator, window), n)
            .await
    }

    /// A stream's top `n` gifters in `window`, as [`Self::creator_top_gifters_in`].
    pub async fn stream_top_gifters_in(
        &self,
        stream: StreamId,
        window: TimeWindow,
        n: usize,
    ) -> Result<Vec<(UserId, u128)>, ReadError> {
        self.top(self.layout.stream_top_in(stream, window), n).await
    }

    /// The best `n` creators by coins received in `window`, over every bucket (a single
    /// node's read model: a cluster's holds no windowed top creators).
    pub async fn top_creators_in(
        &self,
        window: TimeWindow,
        n: usize,
    ) -> Result<Vec<(CreatorId, u128)>, ReadError> {
        let top = top_creators_in(&mut self.conn.clone(), self.layout, window, n).await?;
        Ok(top
            .into_iter()
            .map(|(c, coins)| (CreatorId(c), coins as u128))
            .collect())
    }

    /// A video's coins received and creator.
    pub async fn video_totals(&self, video: VideoId) -> Result<VideoTotals, ReadError> {
        let fields = ["coins_received", "creator"];
        let values = self.hash(self.layout.video(video), &fields).await?;
        Ok(VideoTotals {
            coins_received: values[0].unwrap_or_default(),
            creator: values[1].and_then(|c| u64::try_from(c).ok()),
        })
    }

    /// The best `n` creators by diamonds credited, best first, over every bucket.
    pub async fn top_creators(&self, n: usize) -> Result<Vec<(CreatorId, u128)>, ReadError> {
        let top = top_creators(&mut self.conn.clone(), self.layout, n).await?;
        Ok(top
            .into_iter()
            .map(|(c, d)| (CreatorId(c), d as u128))
            .collect())
    }

    /// A creator's totals.
    pub async fn creator_totals(&self, creator: CreatorId) -> Result<CreatorTotals, ReadError> {
        let fields = ["coins_received", "diamonds_total", "diamonds_available"];
        let values = self.hash(self.layout.creator(creator), &fields).await?;
        let [coins_received, diamonds_total, diamonds_available] =
            [0, 1, 2].map(|i| values[i].unwrap_or_default());
        Ok(CreatorTotals {
            coins_received,
            diamonds_total,
            diamonds_available,
        })
    }

    /// A stream's coins received, creator and goal.
    pub async fn stream_totals(&self, stream: StreamId) -> Result<StreamTotals, ReadError> {
        let fields = ["coins_received", "creator", "goal_coins_target"];
        let values = self.hash(self.layout.stream(stream), &fields).await?;
        Ok(StreamTotals {
            coins_received: values[0].unwrap_or_default(),
            creator: values[1].and_then(|c| u64::try_from(c).ok()),
            goal_coins_target: values[2].and_then(|t| u64::try_from(t).ok()),
        })
    }

    /// The top `n` members of sorted set `key` with their scores, best first.
    async fn top(&self, key: String, n: usize) -> Result<Vec<(UserId, u128)>, ReadError> {
        let top: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
            .arg(key)
            .arg(0)
            .arg(n.saturating_sub(1))
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(top
            .into_iter()
            .map(|(m, s)| (UserId(m), s as u128))
            .collect())
    }

    /// The `fields` of hash `key`, each `None` when absent.
    async fn hash(&self, key: String, fields: &[&str]) -> Result<Vec<Option<u128>>, ReadError> {
        let values: Vec<Option<i128>> = redis::cmd("HMGET")
            .arg(key)
            .arg(fields)
            .query_async(&mut self.conn.clone())
            .await?;
        // A merged sum can be briefly negative: an owner's payout of diamonds another node
        // credited (a settlement) may reach the read model before that node's credit does.
        Ok(values
            .into_iter()
            .map(|v| v.map(|v| u128::try_from(v).unwrap_or(0)))
            .collect())
    }
}

/// The last sequence number the read model holds (0 when empty), of a single node with
/// one bucket.
pub async fn projected_seq(conn: &mut RedisConn) -> Result<u64, JournalError> {
    projected_seq_of(conn, &Ledger::default(), Layout::SINGLE).await
}

/// The last sequence number of `ledger` the read model holds (0 when empty): the least
/// of its buckets'.
pub async fn projected_seq_of(
    conn: &mut RedisConn,
    ledger: &Ledger,
    layout: Layout,
) -> Result<u64, JournalError> {
    Ok(bucket_seqs(conn, ledger, layout)
        .await?
        .into_iter()
        .min()
        .unwrap_or(0))
}

/// Each bucket's `seq` of `ledger` (0 when absent).
pub(super) async fn bucket_seqs(
    conn: &mut RedisConn,
    ledger: &Ledger,
    layout: Layout,
) -> Result<Vec<u64>, JournalError> {
    let mut seqs = Vec::with_capacity(layout.buckets());
    for bucket in 0..layout.buckets() {
        let seq: Option<u64> = redis::cmd("GET")
            .arg(layout.seq_key(bucket, ledger))
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        seqs.push(seq.unwrap_or(0));
    }
    Ok(seqs)
}

/// The best `n` creators by diamonds credited, best first: the best of the buckets'
/// `top-creators` lists (what a direct reader does too).
pub async fn top_creators(
    conn: &mut RedisConn,
    layout: Layout,
    n: usize,
) -> Result<Vec<(u64, f64)>, redis::RedisError> {
    best_of_buckets(conn, layout, n, |b| layout.top_creators(b)).await
}

/// The best `n` creators by coins received in `window`, over every bucket.
pub async fn top_creators_in(
    conn: &mut RedisConn,
    layout: Layout,
    window: TimeWindow,
    n: usize,
) -> Result<Vec<(u64, f64)>, redis::RedisError> {
    best_of_buckets(conn, layout, n, |b| layout.top_creators_in(b, window)).await
}

/// The best `n` of every bucket's sorted set `key(bucket)`, best first.
async fn best_of_buckets(
    conn: &mut RedisConn,
    layout: Layout,
    n: usize,
    key: impl Fn(usize) -> String,
) -> Result<Vec<(u64, f64)>, redis::RedisError> {
    // One request per bucket (a Redis Cluster pipeline stays in one slot), all in
    // flight at once: a read costs one round trip, not one per bucket.
    let lists = futures::future::try_join_all((0..layout.buckets()).map(|bucket| {
        let mut conn = conn.clone();
        let key = key(bucket);
        async move {
            redis::cmd("ZREVRANGE")
                .arg(key)
                .arg(0)
                .arg(n.saturating_sub(1))
                .arg("WITHSCORES")
                .query_async::<Vec<(u64, f64)>>(&mut conn)
                .await
        }
    }))
    .await?;
    let mut top: Vec<(u64, f64)> = lists.into_iter().flatten().collect();
    // As ZREVRANGE orders: by score, then by member (as a string) descending.
    top.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| b.0.to_string().cmp(&a.0.to_string()))
    });
    top.truncate(n);
    Ok(top)
}
