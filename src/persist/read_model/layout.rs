//! Where the read model's keys live: the key names, the hash-tagged buckets
//! ([`Layout`]), the per-node copies of `seq`/`writer`/`format`, and the bucket count
//! recorded in Redis that every node must agree on.

use crate::config::ReadModelConfig;
use crate::engine::{CreatorId, StreamId, TimeWindow, UserId, VideoId};
use crate::persist::journal::JournalError;
use crate::persist::redis::{Ledger, RedisConn};

pub const PREFIX: &str = "giftstream:{ledger}:rm:";
pub const SEQ_KEY: &str = "giftstream:{ledger}:rm:seq";
/// The bucket count the shared read model was laid out with (see [`Layout`]): every node
/// writing it must use the same.
pub const BUCKETS_KEY: &str = "giftstream:{ledger}:rm-buckets";

/// Where the read model's keys live (`read_model.buckets`). One bucket (the default):
/// every key under [`PREFIX`], in the journal's slot. `n` > 1 buckets: key `k` of bucket
/// `b` is `giftstream:{rm-<b>}:rm:<k>`, one hash tag (so one Redis Cluster slot) per
/// bucket, so the read model spreads over the cluster's masters. A creator's keys are in
/// bucket `creator id mod n`, a stream's in `stream id mod n`, a video's in `video id mod
/// n`, a user's in `user id mod n`; each bucket has its own `seq`, `writer` and `format`, and its own `top-creators`
/// holding its creators (the top creators are the best of the buckets' lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    buckets: u32,
}

impl Layout {
    /// The most buckets (`read_model.buckets`; the bound is the config's).
    pub const BUCKETS_MAX: u32 = ReadModelConfig::BUCKETS_MAX;
    /// One bucket: every key in the journal's slot.
    pub const SINGLE: Layout = Layout { buckets: 1 };

    /// `buckets` in 1..=[`Layout::BUCKETS_MAX`] (checked by the config).
    pub fn new(buckets: u32) -> Layout {
        assert!((1..=Self::BUCKETS_MAX).contains(&buckets));
        Layout { buckets }
    }

    pub fn of(config: &ReadModelConfig) -> Layout {
        Layout::new(config.buckets)
    }

    pub fn buckets(self) -> usize {
        self.buckets as usize
    }

    /// The bucket of a creator, stream, video or user id.
    pub fn bucket(self, id: u64) -> usize {
        (id % u64::from(self.buckets)) as usize
    }

    /// The prefix of `bucket`'s keys.
    pub fn prefix(self, bucket: usize) -> String {
        if self.buckets == 1 {
            PREFIX.to_owned()
        } else {
            format!("giftstream:{{rm-{bucket}}}:rm:")
        }
    }

    /// A user's wallet hash (`read_model.wallets`).
    pub fn user(self, u: UserId) -> String {
        format!("{}{}", self.prefix(self.bucket(u.0)), user_key(u))
    }
    pub fn creator(self, c: CreatorId) -> String {
        format!("{}{}", self.prefix(self.bucket(c.0)), creator_key(c))
    }
    pub fn creator_top(self, c: CreatorId) -> String {
        format!("{}{}", self.prefix(self.bucket(c.0)), creator_top_key(c))
    }
    pub fn stream(self, s: StreamId) -> String {
        format!("{}{}", self.prefix(self.bucket(s.0)), stream_key(s))
    }
    pub fn stream_top(self, s: StreamId) -> String {
        format!("{}{}", self.prefix(self.bucket(s.0)), stream_top_key(s))
    }
    pub fn video(self, v: VideoId) -> String {
        format!("{}{}", self.prefix(self.bucket(v.0)), video_key(v))
    }
    pub fn video_top(self, v: VideoId) -> String {
        format!("{}{}", self.prefix(self.bucket(v.0)), video_top_key(v))
    }
    /// `bucket`'s `top-creators` (every creator's with one bucket).
    pub fn top_creators(self, bucket: usize) -> String {
        format!("{}{TOP_CREATORS}", self.prefix(bucket))
    }
    /// A creator's top gifters in `window` (`engine.windows`).
    pub fn creator_top_in(self, c: CreatorId, window: TimeWindow) -> String {
        let key = creator_top_window_key(c, window);
        format!("{}{key}", self.prefix(self.bucket(c.0)))
    }
    /// A stream's top gifters in `window`.
    pub fn stream_top_in(self, s: StreamId, window: TimeWindow) -> String {
        let key = stream_top_window_key(s, window);
        format!("{}{key}", self.prefix(self.bucket(s.0)))
    }
    /// `bucket`'s top creators in `window` (coins received in it).
    pub fn top_creators_in(self, bucket: usize, window: TimeWindow) -> String {
        let key = top_creators_window_key(window);
        format!("{}{key}", self.prefix(bucket))
    }

    /// The key holding how far `ledger`'s events are in `bucket`.
    pub fn seq_key(self, bucket: usize, ledger: &Ledger) -> String {
        node_key(&format!("{}seq", self.prefix(bucket)), ledger)
    }

    /// The key holding the layout version of `ledger`'s share of `bucket`.
    pub fn format_key(self, bucket: usize, ledger: &Ledger) -> String {
        node_key(&format!("{}format", self.prefix(bucket)), ledger)
    }

    /// The key naming the projector writing `ledger`'s current window into `bucket`
    /// (cleared when the bucket's last chunk of the window moves its `seq`, and by
    /// [`prepare`](super::rebuild::prepare)).
    pub fn writer_key(self, bucket: usize, ledger: &Ledger) -> String {
        node_key(&format!("{}writer", self.prefix(bucket)), ledger)
    }

    /// What each bucket's `format` key holds for leaderboards of `top_k` gifters, and
    /// `windows` (the windowed leaderboards' part, when they are on: their retention).
    pub fn format_value(self, top_k: usize, windows: Option<String>) -> String {
        let mut value = if self.buckets == 1 {
            format!("{FORMAT}:{top_k}")
        } else {
            format!("{FORMAT}:{top_k}:{}", self.buckets)
        };
        if let Some(w) = windows {
            value.push(':');
            value.push_str(&w);
        }
        value
    }

    /// Checks that the read model is laid out in this many buckets (recorded in
    /// [`BUCKETS_KEY`] by the first node to write it; recorded now if it is not). Every
    /// node of a cluster writes the same keys, so they must agree; changing the count is
    /// a procedure (README, "Reading leaderboards from Redis").
    pub async fn check(self, conn: &mut RedisConn) -> Result<(), JournalError> {
        if self.verify(conn).await? {
            return Ok(());
        }
        redis::cmd("SET")
            .arg(BUCKETS_KEY)
            .arg(self.buckets)
            .query_async::<()>(conn)
            .await
            .map_err(redis_error)
    }

    /// Whether the read model is recorded as laid out in this many buckets (false: no
    /// count recorded yet); another count is an error naming it. Writes nothing: a
    /// start checks this before it takes the ledger lease.
    pub async fn verify(self, conn: &mut RedisConn) -> Result<bool, JournalError> {
        let recorded: Option<u32> = redis::cmd("GET")
            .arg(BUCKETS_KEY)
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        match recorded {
            None => Ok(false),
            Some(b) if b == self.buckets => Ok(true),
            Some(b) => Err(JournalError::Ledger(format!(
                "the Redis read model is laid out in {b} buckets ({BUCKETS_KEY}) and read_model.buckets is {}: \
                 set read_model.buckets = {b}, or change the layout as README \"Reading leaderboards from Redis\" says \
                 (stop every node, delete the read model's keys and {BUCKETS_KEY}, start them)",
                self.buckets
            ))),
        }
    }
}

/// `base`, or on a cluster node `base:<node>`: the node's own copy of a per-ledger key.
fn node_key(base: &str, ledger: &Ledger) -> String {
    match &ledger.node {
        None => base.to_owned(),
        Some(n) => format!("{base}:{n}"),
    }
}

/// The read model's layout version: 2 = top-K-only leaderboards from journaled totals
/// (1, unmarked: every gifter, by increments).
pub const FORMAT: u64 = 2;
pub const TOP_CREATORS: &str = "top-creators";
/// The largest sorted-set score kept exactly: 2^53.
pub const SCORE_MAX: u128 = 1 << 53;

/// Key names within a bucket (a bucket's prefix comes first).
pub fn creator_key(c: CreatorId) -> String {
    format!("creator:{}", c.0)
}
pub fn creator_top_key(c: CreatorId) -> String {
    format!("creator:{}:top-gifters", c.0)
}
pub fn stream_key(s: StreamId) -> String {
    format!("stream:{}", s.0)
}
pub fn stream_top_key(s: StreamId) -> String {
    format!("stream:{}:top-gifters", s.0)
}
pub fn video_key(v: VideoId) -> String {
    format!("video:{}", v.0)
}
pub fn video_top_key(v: VideoId) -> String {
    format!("video:{}:top-gifters", v.0)
}
/// A creator's top gifters in a window: `creator:<id>:top-gifters:<kind>:<label>`, the
/// label as the HTTP `at=` (`2026-12-04T13`, `2026-12-04`, `2026-W49`, `2026-12`).
pub fn creator_top_window_key(c: CreatorId, w: TimeWindow) -> String {
    format!(
        "creator:{}:top-gifters:{}:{}",
        c.0,
        w.kind.name(),
        w.label()
    )
}
/// A stream's top gifters in a window: `stream:<id>:top-gifters:<kind>:<label>`.
pub fn stream_top_window_key(s: StreamId, w: TimeWindow) -> String {
    format!("stream:{}:top-gifters:{}:{}", s.0, w.kind.name(), w.label())
}
/// The top creators by coins received in a window: `top-creators:<kind>:<label>`.
pub fn top_creators_window_key(w: TimeWindow) -> String {
    format!("{TOP_CREATORS}:{}:{}", w.kind.name(), w.label())
}
pub fn user_key(u: UserId) -> String {
    format!("user:{}", u.0)
}

pub(super) fn redis_error(e: redis::RedisError) -> JournalError {
    JournalError::from(e)
}
