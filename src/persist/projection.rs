//! The Redis read model: creator totals, leaderboards and stream goals that ranking
//! services read straight from Redis, fed from committed runs off the ack path.
//!
//! Key layout (prefix [`PREFIX`] = `giftstream:{ledger}:rm:`, one hash tag, so every key
//! lives in one Redis Cluster slot with the journal; or, with `read_model.buckets` = n >
//! 1, `giftstream:{rm-<b>}:rm:` for bucket b = a creator's, stream's or user's id mod n,
//! one slot per bucket — see [`Layout`]; every key below but `top-creators` is then in
//! its id's bucket, and `top-creators`, `seq`, `writer` and `format` are per bucket):
//! - `creator:<id>` — hash: `coins_received`, `diamonds_total`, `diamonds_available`
//! - `creator:<id>:top-gifters` — sorted set: member user id, score coins given; the
//!   creator's top `engine.top_k` gifters (see "Top-K only" below)
//! - `stream:<id>` — hash: `coins_received`, `creator`, and `goal_coins_target` once a
//!   goal is set (the goal's progress is `coins_received`)
//! - `stream:<id>:top-gifters` — sorted set: member user id, score coins given; the
//!   stream's top `engine.top_k` gifters
//! - `top-creators` — sorted set: member creator id, score diamonds credited (a bucket's
//!   creators: the top creators are the best of the buckets' lists, [`top_creators`])
//! - `user:<id>` — hash: `coins` (only with `read_model.wallets = true`)
//! - `seq` — the last sequence number projected
//! - `writer` — the projector part-way through a window (see "Exactly once")
//! - `format` — `<FORMAT>:<top_k>` ([`format_value`]): the layout version and the K of
//!   the leaderboards; another value (or none) makes the next start rebuild the read
//!   model from the ledger
//!
//! Top-K only: the leaderboards hold each creator's and stream's top `engine.top_k`
//! gifters (what `/v1/creators/{id}/top-gifters` serves, `limit` <= `engine.top_k`), not
//! every gifter: a gift is written only if it moves its sender into or up the top K,
//! with the sender's absolute total (journaled with the gift, [`LogEntry::totals`]),
//! and a gifter pushed out is removed. Totals only grow, so the projector's own top-K
//! per key ([`TopK`]) stays exact, and with a hot creator almost every gift changes
//! nothing in Redis. (A start that catches up from the journal reads the members of
//! each key it touches and removes its own gifters that are not listed, so a gifter
//! pushed out after the read model's `seq` leaves too.)
//!
//! In a cluster (SPEC §6) every node writes its partitions' share into the same keys:
//! gifter scores are members only one node owns (a gifter's partition), each node
//! keeping its own gifters' top K (the union holds the cluster's top K),
//! and the creator and stream totals are merged — each node keeps its own contribution
//! in `<field>@<node>` and moves the shared `<field>` (and `top-creators`) by the change,
//! with `HINCRBY`/`ZINCRBY` — so the totals are sums over the nodes and a write that is
//! retried or a rebuild of one node never counts twice. Each node has its own `seq:<node>`.
//! A node's contributions are held at 2^53 (as scores are) because the script computes
//! their changes in doubles.
//!
//! Exactly once: every value written is absolute — hashes and `top-creators` from the
//! projector's own copy of the books, gifter scores from the totals journaled with each
//! gift (a cluster node's merged fields from its own contribution) — all from committed
//! runs only, so the read model never shows an event that was not durable, and writing
//! a value twice is harmless. A window (up to `ops_per_window_max` operations, one per
//! key) is written as Lua scripts of at most `ops_per_write_max` operations (each
//! blocks Redis briefly); each checks `seq`, the first claims the window in `writer`
//! and every later one checks that claim — so a second projector on the same ledger
//! (a process fenced out but not yet stopped) cannot interleave older values with this
//! one's: whichever claims the window first writes it, the other stops (the read model
//! is then rebuilt at its next start) — and the last chunk moves `seq` to the window's
//! end and releases the claim. A start (under the ledger lease) clears a claim left by
//! a crashed projector. A window cut short by
//! a crash is written again from `seq` at the next start; a retried last chunk whose
//! first attempt ran finds `seq` at its end and does nothing. With buckets, each bucket
//! is written this way side by side (every window moves every bucket's `seq`, with
//! operations or not); a crash can leave some buckets' `seq` past the others', and the
//! next start goes on from the least, writing the buckets already past it again (a
//! script inside its window writes: its values are absolute and as new as the window's
//! end). A window's operations are
//! ordered by kind and key before they are cut into scripts, so each key's gifter scores
//! (and `top-creators`) in a script are one multi-member `ZADD`, its removals one `ZREM`
//! (the order does not matter: every value is absolute).
//!
//! Scores are doubles: exact up to 2^53. A score that would pass [`SCORE_MAX`] is held at
//! it and counted in `giftstream_read_model_saturated_total` (the HTTP API stays exact;
//! 2^53 coins are about 90 trillion USD). Hash fields are decimal strings, exact.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::{mpsc, watch};

use super::journal::JournalError;
use super::redis::{Ledger, RedisConn, RedisJournal};
use crate::config::ReadModelConfig;
use crate::economy::Economy;
use crate::engine::Credited;
use crate::engine::{
    CreatorId, Effect, Engine, Event, LogEntry, Offer, ReadModelView, Stamp, Status, StreamBook,
    StreamId, TopK, UserId, ViewParts,
};
use crate::telemetry;

pub const PREFIX: &str = "giftstream:{ledger}:rm:";
pub const SEQ_KEY: &str = "giftstream:{ledger}:rm:seq";
/// The bucket count the shared read model was laid out with (see [`Layout`]): every node
/// writing it must use the same.
pub const BUCKETS_KEY: &str = "giftstream:{ledger}:rm-buckets";

/// Where the read model's keys live (`read_model.buckets`). One bucket (the default):
/// every key under [`PREFIX`], in the journal's slot. `n` > 1 buckets: key `k` of bucket
/// `b` is `giftstream:{rm-<b>}:rm:<k>`, one hash tag (so one Redis Cluster slot) per
/// bucket, so the read model spreads over the cluster's masters. A creator's keys are in
/// bucket `creator id mod n`, a stream's in `stream id mod n`, a user's in `user id mod
/// n`; each bucket has its own `seq`, `writer` and `format`, and its own `top-creators`
/// holding its creators (the top creators are the best of the buckets' lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    buckets: u32,
}

impl Layout {
    /// The most buckets (`read_model.buckets`).
    pub const BUCKETS_MAX: u32 = 1024;
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

    /// The bucket of a creator, stream or user id.
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
    /// `bucket`'s `top-creators` (every creator's with one bucket).
    pub fn top_creators(self, bucket: usize) -> String {
        format!("{}{TOP_CREATORS}", self.prefix(bucket))
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
    /// [`prepare`]).
    pub fn writer_key(self, bucket: usize, ledger: &Ledger) -> String {
        node_key(&format!("{}writer", self.prefix(bucket)), ledger)
    }

    /// What each bucket's `format` key holds for leaderboards of `top_k` gifters.
    pub fn format_value(self, top_k: usize) -> String {
        if self.buckets == 1 {
            format!("{FORMAT}:{top_k}")
        } else {
            format!("{FORMAT}:{top_k}:{}", self.buckets)
        }
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
            Some(b) => Err(JournalError(format!(
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
/// Journal runs read per request when the projector catches up from the journal.
const JOURNAL_RUNS_PER_READ: usize = 4;
/// Commands per pipeline when rebuilding.
const REBUILD_COMMANDS_PER_PIPELINE: usize = 10_000;
/// How long the projector keeps writing at shutdown; the rest is caught up at the next
/// start.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
pub fn user_key(u: UserId) -> String {
    format!("user:{}", u.0)
}

/// The write into one bucket: check `seq` (behind the window's start: Redis lost data; at
/// or past its end: written already; inside it: a bucket a crash left ahead of the
/// others, written again — every value is absolute and as new as the window's end) and
/// that no other projector is part-way through this window (KEYS[2], the writer; claimed
/// by the first chunk), apply the operations, and if this is the bucket's last chunk of
/// the window set `seq` and release the window. KEYS: seq, writer. ARGV:
/// from, to, prefix, score max, node ("" for a single node), last chunk ("1" or "0"),
/// writer token, then operations: `H key n field value ...`
/// (HSET of n fields), `A key n score member ...` (ZADD of n members), `R key n member
/// ...` (ZREM of n members), `M key member
/// n field value ...` (this node's contribution to n merged
/// fields; `member` not "": `top-creators` moves with `diamonds_total`). `from` = 0 is a
/// rebuild: no check, `seq` left alone.
const WRITE_SCRIPT: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local from = tonumber(ARGV[1])
local to = tonumber(ARGV[2])
if from > 0 then
  if cur >= to then return {0, 0} end
  if cur < from - 1 then
    return redis.error_reply('GIFTSTREAM_GAP read model at seq ' .. cur .. ', write starts at ' .. from)
  end
  local writer = redis.call('GET', KEYS[2])
  if not writer then
    redis.call('SET', KEYS[2], ARGV[7])
  elseif writer ~= ARGV[7] then
    return redis.error_reply('GIFTSTREAM_GAP another projector is writing the window from ' .. from .. ' (' .. writer .. ')')
  end
end
local p = ARGV[3]
local max = tonumber(ARGV[4])
local node = ARGV[5]
local last = ARGV[6] == '1'
local saturated = 0
local i = 8
while i <= #ARGV do
  local op, k = ARGV[i], p .. ARGV[i + 1]
  if op == 'H' then
    local n = tonumber(ARGV[i + 2])
    redis.call('HSET', k, unpack(ARGV, i + 3, i + 2 + 2 * n))
    i = i + 3 + 2 * n
  elseif op == 'R' then
    local n = tonumber(ARGV[i + 2])
    redis.call('ZREM', k, unpack(ARGV, i + 3, i + 2 + n))
    i = i + 3 + n
  elseif op == 'A' then
    local n = tonumber(ARGV[i + 2])
    redis.call('ZADD', k, unpack(ARGV, i + 3, i + 2 + 2 * n))
    i = i + 3 + 2 * n
  elseif op == 'M' then
    local member = ARGV[i + 2]
    local n = tonumber(ARGV[i + 3])
    for j = 0, n - 1 do
      local f, v = ARGV[i + 4 + 2 * j], ARGV[i + 5 + 2 * j]
      local mine = f .. '@' .. node
      local change = tonumber(v) - tonumber(redis.call('HGET', k, mine) or '0')
      if change ~= 0 then
        redis.call('HSET', k, mine, v)
        redis.call('HINCRBY', k, f, string.format('%d', change))
        if member ~= '' and f == 'diamonds_total' then
          local t = p .. 'top-creators'
          local s = tonumber(redis.call('ZINCRBY', t, string.format('%d', change), member))
          if s > max then
            redis.call('ZADD', t, max, member)
            saturated = saturated + 1
          end
        end
      end
    end
    i = i + 4 + 2 * n
  else
    return redis.error_reply('GIFTSTREAM_OP ' .. op)
  end
end
if from > 0 and last then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
return {1, saturated}
"#;

/// One read-model operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// HSET key field value [field value ...]
    Hash(String, Vec<(&'static str, String)>),
    /// ZADD key score member (absolute)
    Set(String, u64, u128),
    /// ZREM key member
    Remove(String, u64),
    /// This node's contribution to merged hash fields (held at 2^53); with a member,
    /// `top-creators` moves with `diamonds_total`.
    Merge(String, Option<u64>, Vec<(&'static str, i128)>),
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Hash(k, _) | Op::Set(k, ..) | Op::Remove(k, _) | Op::Merge(k, ..) => k,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Op::Set(..) => 0,
            Op::Remove(..) => 1,
            Op::Hash(..) => 2,
            Op::Merge(..) => 3,
        }
    }
}

/// Orders a window's operations by kind and key, so that each key's scores (and
/// removals) are one run: one `ZADD` (`ZREM`) per key and chunk. The order of a window's
/// operations does not matter: every value is absolute, and no member is both set and
/// removed in one window.
fn group_by_key(ops: &mut [Op]) {
    ops.sort_unstable_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.key().cmp(b.key())));
}

/// Members one `ZADD` or `ZREM` of the write script takes at most (Lua's `unpack` has a
/// limit of a few thousand values).
const MEMBERS_PER_CALL: usize = 1000;

fn redis_error(e: redis::RedisError) -> JournalError {
    JournalError(format!("redis: {e}"))
}

/// The projector's copy of the creator and stream books and of their top-K gifter
/// lists, exact as of `seq`.
#[derive(Debug, Default)]
struct Books {
    seq: u64,
    /// (coins received, diamonds paid, diamonds credited)
    creators: FxHashMap<CreatorId, (u128, u128, Credited)>,
    streams: FxHashMap<StreamId, StreamBook>,
    /// K of the lists (`engine.top_k`).
    top_k: usize,
    creator_tops: FxHashMap<CreatorId, TopK>,
    stream_tops: FxHashMap<StreamId, TopK>,
}

impl Books {
    /// From a view with the top `top_k` gifters ([`ViewParts::tops`]): the creators and
    /// streams whose ids `mine` keeps.
    fn from_view(view: &ReadModelView, top_k: usize, mine: impl Fn(u64) -> bool) -> Books {
        let mut creator_tops: FxHashMap<CreatorId, TopK> = FxHashMap::default();
        for &(c, u, coins) in view.creator_gifters.iter().filter(|g| mine(g.0.0)) {
            creator_tops.entry(c).or_default().offer(top_k, u.0, coins);
        }
        let mut stream_tops: FxHashMap<StreamId, TopK> = FxHashMap::default();
        for &(s, u, coins) in view.stream_gifters.iter().filter(|g| mine(g.0.0)) {
            stream_tops.entry(s).or_default().offer(top_k, u.0, coins);
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

/// The coalesced changes of one write.
#[derive(Debug, Default)]
struct Pending {
    from: u64,
    to: u64,
    oldest_stamp: u64,
    opened: Option<Instant>,
    events: u64,
    creators: FxHashSet<CreatorId>,
    streams: FxHashSet<StreamId>,
    creator_gifters: BoardChanges<CreatorId>,
    stream_gifters: BoardChanges<StreamId>,
    wallets: FxHashMap<UserId, u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.opened.is_none()
    }

    /// Operations the write will hold (an upper bound).
    fn ops(&self) -> usize {
        self.creators.len() * 2
            + self.streams.len()
            + self.creator_gifters.len()
            + self.stream_gifters.len()
            + self.wallets.len()
    }
}

/// The economy version recorded under a digest (the engine's: it keeps every version it
/// applied or replayed).
pub type EconomyLookup = Arc<dyn Fn(u64) -> Option<Arc<Economy>> + Send + Sync>;

/// Folds committed entries into pending writes.
struct Projector {
    /// The economy in force at the last folded entry: it decides the diamonds a gift
    /// credits. Follows the journaled changes ([`EconomyLookup`]).
    economy: Arc<Economy>,
    economies: EconomyLookup,
    books: Books,
    pending: Pending,
    wallets: bool,
    /// Merge with the other nodes' contributions (a cluster node).
    merge: bool,
    layout: Layout,
    /// This projector's part of the buckets: (index, count) — it writes the buckets `b`
    /// with `b mod count = index` ([`Projector::mine`]).
    part: (usize, usize),
    /// The next sequence number to fold.
    next: u64,
    /// An accepted gift without journaled totals (a journal older than format 2 that
    /// the start did not rebuild past): its sequence number.
    untotalled: Option<u64>,
}

impl Projector {
    fn fold(&mut self, e: &LogEntry) {
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
                let (creator, stream, sender) =
                    (mine(g.creator.0), mine(g.stream.0), mine(g.sender.0));
                let cost = self
                    .economy
                    .gifts
                    .get(g.gift.0 as usize)
                    .map_or(0, |spec| u128::from(spec.coins) * u128::from(g.count));
                if creator {
                    p.creators.insert(g.creator);
                }
                if stream {
                    p.streams.insert(g.stream);
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
                        g.creator,
                        g.sender,
                        u128::from(totals.creator),
                        fresh,
                    );
                }
                if stream {
                    p.stream_gifters.place(
                        &mut books.stream_tops,
                        books.top_k,
                        g.stream,
                        g.sender,
                        u128::from(totals.stream),
                        fresh,
                    );
                }
                if let (true, true, Effect::Coins(balance)) = (sender, self.wallets, effect) {
                    p.wallets.insert(g.sender, balance);
                }
                if fresh && creator {
                    let book = self.books.creators.entry(g.creator).or_default();
                    book.0 += cost;
                    book.2.credit(&self.economy, cost);
                }
                if fresh && stream {
                    let s = self.books.streams.entry(g.stream).or_default();
                    s.coins_received += cost;
                    if s.goal.is_none() {
                        s.creator = Some(s.creator.map_or(g.creator, |c| c.min(g.creator)));
                    }
                }
            }
            Event::Recharge(r) => {
                if let (true, true, Effect::Coins(balance)) = (mine(r.user.0), self.wallets, effect)
                {
                    p.wallets.insert(r.user, balance);
                }
            }
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
            Event::Payout(_) | Event::StreamGoal(_) => {}
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

    /// Takes the pending changes as one write.
    /// The stamp of the oldest committed event not yet written: the pending window's
    /// oldest, or now when nothing is pending.
    fn oldest_unwritten(&self) -> Stamp {
        if self.pending.is_empty() {
            crate::clock::now()
        } else {
            Stamp(self.pending.oldest_stamp)
        }
    }

    fn take_ops(&mut self) -> Write {
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
        for (&u, &coins) in &p.wallets {
            ops[layout.bucket(u.0)].push(Op::Hash(user_key(u), vec![("coins", coins.to_string())]));
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

/// Whether the keys of creator, stream or user `id` are in the buckets of projector
/// `part` = (index, count): bucket `b` is projector `b mod count`'s.
fn owns(layout: Layout, part: (usize, usize), id: u64) -> bool {
    writes_bucket(part, layout.bucket(id))
}

/// Whether projector `part` = (index, count) writes `bucket`.
fn writes_bucket((index, count): (usize, usize), bucket: usize) -> bool {
    bucket % count == index
}

/// One pending write, taken from the projector.
struct Write {
    /// Each bucket's operations.
    ops: Vec<Vec<Op>>,
    /// The sequence numbers it covers.
    from: u64,
    to: u64,
    /// Scores held at the max.
    held: u64,
    /// Keys to reconcile (bucket, key), with the gifters listed for each.
    reconcile: Vec<(usize, String, FxHashSet<u64>)>,
}

/// Removals that make each key's members that `ledger` owns exactly the ones listed,
/// with their buckets: reads the keys' members (only this projector writes this node's
/// gifters, so nothing changes them before the write).
async fn reconcile_ops(
    conn: &mut RedisConn,
    ledger: &Ledger,
    layout: Layout,
    keys: &mut [(usize, String, FxHashSet<u64>)],
) -> Result<Vec<(usize, Op)>, redis::RedisError> {
    let mut ops = Vec::new();
    // A pipeline on a Redis Cluster stays in one slot: one bucket's keys at a time.
    keys.sort_unstable_by_key(|k| k.0);
    let chunks = keys
        .chunk_by(|a, b| a.0 == b.0)
        .flat_map(|bucket| bucket.chunks(REBUILD_COMMANDS_PER_PIPELINE / 10));
    for chunk in chunks {
        let mut pipe = redis::pipe();
        for (bucket, key, _) in chunk {
            pipe.zrange(format!("{}{key}", layout.prefix(*bucket)), 0, -1);
        }
        let members: Vec<Vec<u64>> = pipe.query_async(conn).await?;
        for ((bucket, key, listed), members) in chunk.iter().zip(members) {
            ops.extend(
                members
                    .into_iter()
                    .filter(|m| {
                        !listed.contains(m) && ledger.map.as_ref().is_none_or(|p| p.owns(*m))
                    })
                    .map(|m| (*bucket, Op::Remove(key.clone(), m))),
            );
        }
    }
    Ok(ops)
}

/// The hash and top-creators operations of one creator; returns 1 if its score (or, when
/// merging, a contribution) was held at the max.
fn creator_ops(
    c: CreatorId,
    coins: u128,
    diamonds: u128,
    paid: u128,
    merge: bool,
    ops: &mut Vec<Op>,
) -> u64 {
    let key = creator_key(c);
    if merge {
        // A node's contribution to `diamonds_available` is what it credited less what it
        // paid out, which is negative on an owner that paid out diamonds other nodes
        // credited (settlements): the merged sum is the cluster's credited less paid.
        let max = SCORE_MAX as i128;
        let signed = |v: u128| i128::try_from(v).unwrap_or(i128::MAX);
        let fields = [
            ("coins_received", signed(coins)),
            ("diamonds_total", signed(diamonds)),
            ("diamonds_available", signed(diamonds) - signed(paid)),
        ];
        let held = fields.iter().any(|&(_, v)| v.abs() > max);
        ops.push(Op::Merge(
            key,
            Some(c.0),
            fields
                .iter()
                .map(|&(f, v)| (f, v.clamp(-max, max)))
                .collect(),
        ));
        return u64::from(held);
    }
    ops.push(Op::Hash(
        key,
        vec![
            ("coins_received", coins.to_string()),
            ("diamonds_total", diamonds.to_string()),
            (
                "diamonds_available",
                diamonds.saturating_sub(paid).to_string(),
            ),
        ],
    ));
    ops.push(Op::Set(
        TOP_CREATORS.to_owned(),
        c.0,
        diamonds.min(SCORE_MAX),
    ));
    u64::from(diamonds > SCORE_MAX)
}

/// The hash operations of one stream; returns 1 if a merged contribution was held at the
/// max.
fn stream_ops(s: StreamId, book: &StreamBook, merge: bool, ops: &mut Vec<Op>) -> u64 {
    let mut held = 0;
    let mut fields = Vec::new();
    if merge {
        held = u64::from(book.coins_received > SCORE_MAX);
        ops.push(Op::Merge(
            stream_key(s),
            None,
            vec![("coins_received", book.coins_received.min(SCORE_MAX) as i128)],
        ));
    } else {
        fields.push(("coins_received", book.coins_received.to_string()));
    }
    if let Some(c) = book.creator {
        fields.push(("creator", c.0.to_string()));
    }
    if let Some(target) = book.goal {
        fields.push(("goal_coins_target", target.to_string()));
    }
    if !fields.is_empty() {
        ops.push(Op::Hash(stream_key(s), fields));
    }
    held
}

/// Writes one chunk of a window into `bucket` atomically (`from` = 0: a rebuild's
/// chunk) as the projector `writer`; the bucket's last chunk moves its `seq` to `to`.
/// Returns whether it ran (not if `seq` is at `to` already: the window was written) and
/// the scores held at the max.
async fn write(
    conn: &mut RedisConn,
    (ledger, layout, bucket): (&Ledger, Layout, usize),
    ops: &[Op],
    (from, to): (u64, u64),
    (last, writer): (bool, &str),
) -> Result<(bool, u64), redis::RedisError> {
    let script = redis::Script::new(WRITE_SCRIPT);
    let mut invocation = script.key(layout.seq_key(bucket, ledger));
    invocation.key(layout.writer_key(bucket, ledger));
    invocation
        .arg(from)
        .arg(to)
        .arg(layout.prefix(bucket))
        .arg(SCORE_MAX as u64)
        .arg(ledger.node.as_deref().unwrap_or(""))
        .arg(if last { "1" } else { "0" })
        .arg(writer);
    // A run of scores set (or members removed) on one key is one `ZADD` (`ZREM`) of up
    // to MEMBERS_PER_CALL members: a call per member cost as much again in the script.
    let mut rest = ops;
    while let Some(op) = rest.first() {
        let run = match op {
            Op::Set(k, ..) | Op::Remove(k, ..) => rest
                .iter()
                .take(MEMBERS_PER_CALL)
                .take_while(|o| {
                    std::mem::discriminant(*o) == std::mem::discriminant(op) && o.key() == k
                })
                .count(),
            Op::Hash(..) | Op::Merge(..) => 1,
        };
        let (now, later) = rest.split_at(run);
        rest = later;
        match op {
            Op::Hash(k, fields) => {
                invocation.arg("H").arg(k).arg(fields.len());
                for (f, v) in fields {
                    invocation.arg(*f).arg(v);
                }
                &mut invocation
            }
            Op::Set(k, ..) => {
                invocation.arg("A").arg(k).arg(run);
                for o in now {
                    if let Op::Set(_, m, s) = o {
                        invocation.arg(s.to_string()).arg(*m);
                    }
                }
                &mut invocation
            }
            Op::Remove(k, _) => {
                invocation.arg("R").arg(k).arg(run);
                for o in now {
                    if let Op::Remove(_, m) = o {
                        invocation.arg(*m);
                    }
                }
                &mut invocation
            }
            Op::Merge(k, member, fields) => {
                invocation
                    .arg("M")
                    .arg(k)
                    .arg(member.map_or(String::new(), |m| m.to_string()))
                    .arg(fields.len());
                for (f, v) in fields {
                    invocation.arg(*f).arg(v.to_string());
                }
                &mut invocation
            }
        };
    }
    let (ran, saturated): (u64, u64) = invocation.invoke_async(conn).await?;
    Ok((ran == 1, saturated))
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
async fn bucket_seqs(
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

/// Replaces the whole read model with `view` (which must hold the top gifters, and the
/// wallets when `wallets`). Not atomic: every bucket's `seq` is deleted first and set
/// last, so an interrupted rebuild is rebuilt again at the next start.
///
/// A cluster node (`ledger.node`) replaces only its own contributions: its merged
/// fields are set to the view's values (the shared totals move by the change), its
/// gifters' scores set; nothing is deleted (the other nodes' data stays).
///
/// The caller has checked the bucket count ([`Layout::check`]).
pub async fn rebuild(
    conn: &mut RedisConn,
    (ledger, layout): (&Ledger, Layout),
    view: &ReadModelView,
    wallets: bool,
) -> Result<(), JournalError> {
    for bucket in 0..layout.buckets() {
        redis::cmd("DEL")
            .arg(layout.seq_key(bucket, ledger))
            .query_async::<()>(conn)
            .await
            .map_err(redis_error)?;
    }
    let merge = ledger.node.is_some();
    let buckets = view_ops(view, wallets, merge, layout);
    for (bucket, ops) in buckets.iter().enumerate() {
        let prefix = layout.prefix(bucket);
        if merge {
            // Only this node's contributions, through the write script (no seq check):
            // first its gifters leave every leaderboard (a gifter first seen after the
            // view would otherwise keep a score the catch-up adds to again).
            remove_own_gifters(conn, ledger, layout, bucket).await?;
            for chunk in ops.chunks(REBUILD_COMMANDS_PER_PIPELINE / 10) {
                write(conn, (ledger, layout, bucket), chunk, (0, 0), (true, ""))
                    .await
                    .map_err(redis_error)?;
            }
            continue;
        }
        unlink_all(conn, layout, bucket).await?;
        for chunk in ops.chunks(REBUILD_COMMANDS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            for op in chunk {
                match op {
                    Op::Hash(k, fields) => {
                        pipe.hset_multiple(format!("{prefix}{k}"), fields).ignore()
                    }
                    Op::Set(k, m, s) => pipe
                        .zadd(format!("{prefix}{k}"), *m, s.to_string())
                        .ignore(),
                    Op::Remove(..) | Op::Merge(..) => {
                        unreachable!("a single node's rebuild writes absolute values")
                    }
                };
            }
            pipe.query_async::<()>(conn).await.map_err(redis_error)?;
        }
    }
    for bucket in 0..layout.buckets() {
        redis::pipe()
            .set(
                layout.format_key(bucket, ledger),
                layout.format_value(view.tops),
            )
            .ignore()
            .set(layout.seq_key(bucket, ledger), view.last_seq)
            .ignore()
            .query_async::<()>(conn)
            .await
            .map_err(redis_error)?;
    }
    Ok(())
}

/// Removes the members this cluster node owns from every gifter leaderboard of `bucket`.
async fn remove_own_gifters(
    conn: &mut RedisConn,
    ledger: &Ledger,
    layout: Layout,
    bucket: usize,
) -> Result<(), JournalError> {
    let Some(map) = &ledger.map else {
        return Ok(());
    };
    let pattern = format!("{}*:top-gifters", escaped(&layout.prefix(bucket)));
    let slot = layout.seq_key(bucket, ledger);
    for key in conn.scan_slot(&slot, &pattern).await? {
        let members: Vec<u64> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        let own: Vec<u64> = members.into_iter().filter(|&u| map.owns(u)).collect();
        for chunk in own.chunks(REBUILD_COMMANDS_PER_PIPELINE) {
            redis::cmd("ZREM")
                .arg(&key)
                .arg(chunk)
                .query_async::<()>(conn)
                .await
                .map_err(redis_error)?;
        }
    }
    Ok(())
}

/// Deletes every key of `bucket` (a single node's rebuild).
async fn unlink_all(
    conn: &mut RedisConn,
    layout: Layout,
    bucket: usize,
) -> Result<(), JournalError> {
    let prefix = layout.prefix(bucket);
    let keys = conn
        .scan_slot(&prefix, &format!("{}*", escaped(&prefix)))
        .await?;
    for chunk in keys.chunks(1000) {
        redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(conn)
            .await
            .map_err(redis_error)?;
    }
    Ok(())
}

/// A key prefix as a `SCAN MATCH` pattern (the hash tag's braces escaped).
fn escaped(prefix: &str) -> String {
    prefix.replace('{', "\\{").replace('}', "\\}")
}

/// Every value of `view` as absolute operations (a rebuild's content), by bucket.
fn view_ops(view: &ReadModelView, wallets: bool, merge: bool, layout: Layout) -> Vec<Vec<Op>> {
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); layout.buckets()];
    for &(c, coins, paid, credited) in &view.creators {
        let bucket = &mut ops[layout.bucket(c.0)];
        creator_ops(c, coins, credited.diamonds, paid, merge, bucket);
    }
    for (s, book) in &view.streams {
        stream_ops(*s, book, merge, &mut ops[layout.bucket(s.0)]);
    }
    for &(c, u, coins) in &view.creator_gifters {
        ops[layout.bucket(c.0)].push(Op::Set(creator_top_key(c), u.0, coins.min(SCORE_MAX)));
    }
    for &(s, u, coins) in &view.stream_gifters {
        ops[layout.bucket(s.0)].push(Op::Set(stream_top_key(s), u.0, coins.min(SCORE_MAX)));
    }
    if wallets {
        for &(u, coins) in &view.wallets {
            ops[layout.bucket(u.0)].push(Op::Hash(user_key(u), vec![("coins", coins.to_string())]));
        }
    }
    ops
}

/// Where the projector starts.
pub struct ProjectorStart {
    /// The engine's view (with the top gifters) the projectors copy their books from.
    view: ReadModelView,
    top_k: usize,
    next: u64,
    /// True when the read model was rebuilt from the engine.
    pub rebuilt: bool,
}

impl ProjectorStart {
    /// The last sequence number the read model holds.
    pub fn projected(&self) -> u64 {
        self.next - 1
    }
}

/// Before serving (the engine holds only committed state): reads where the read model
/// is; rebuilds it from the engine if the journal cannot bring it up to date (trimmed
/// past it, the read model ahead of the ledger, e.g. after Redis lost data, or laid out
/// otherwise). Refuses a read model laid out in another number of buckets
/// ([`Layout::check`]).
pub async fn prepare(
    journal: &RedisJournal,
    url: &str,
    engine: &Engine,
    (layout, wallets): (Layout, bool),
) -> Result<ProjectorStart, JournalError> {
    let mut conn = super::redis::connect_to(url, journal.cluster()).await?;
    let ledger = journal.ledger().clone();
    layout.check(&mut conn).await?;
    // This process holds the ledger lease: a window another projector left part-way
    // (it crashed, or was fenced) is rewritten from `seq` by this one.
    let mut formats = Vec::with_capacity(layout.buckets());
    for bucket in 0..layout.buckets() {
        redis::cmd("DEL")
            .arg(layout.writer_key(bucket, &ledger))
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)?;
        let format: Option<String> = redis::cmd("GET")
            .arg(layout.format_key(bucket, &ledger))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        formats.push(format);
    }
    let seqs = bucket_seqs(&mut conn, &ledger, layout).await?;
    // A crash part-way through a window can leave buckets at different places: the
    // projector starts after the one furthest behind (the others write it again).
    let projected = seqs.iter().copied().min().unwrap_or(0);
    let ahead = seqs.iter().copied().max().unwrap_or(0);
    let last = engine.last_seq();
    let top_k = engine.config().top_k;
    let tops = ViewParts {
        tops: top_k,
        wallets: false,
    };
    let format = layout.format_value(top_k);
    let covered = formats
        .iter()
        .all(|f| f.as_deref() == Some(format.as_str()))
        && ahead <= last
        && (projected == last
            || journal
                .runs_from(projected + 1, 1)
                .await?
                .first()
                .and_then(|run| run.first())
                .is_some_and(|e| e.seq <= projected + 1));
    if covered {
        let view = engine.read_model_view(tops);
        return Ok(ProjectorStart {
            view,
            top_k,
            next: projected + 1,
            rebuilt: false,
        });
    }
    tracing::warn!(
        read_model_seq = projected,
        read_model_ahead = ahead,
        read_model_format = ?formats.iter().find(|f| f.as_deref() != Some(format.as_str())),
        ledger_seq = last,
        "the journal cannot bring the read model up to date (or it has another layout): rebuilding it from the ledger"
    );
    let view = engine.read_model_view(ViewParts { wallets, ..tops });
    rebuild(&mut conn, (&ledger, layout), &view, wallets).await?;
    Ok(ProjectorStart {
        next: view.last_seq + 1,
        view,
        top_k,
        rebuilt: true,
    })
}

/// What the committer hands the projector.
#[derive(Clone)]
pub struct ProjectorHandle {
    /// Each projector's queue.
    runs: Vec<mpsc::Sender<Arc<Vec<LogEntry>>>>,
    projected: Arc<AtomicU64>,
}

impl ProjectorHandle {
    /// Offers a committed run to every projector. When a queue is full the run is not
    /// queued there: that projector reads it back from the journal.
    pub fn committed(&self, run: &Arc<Vec<LogEntry>>) {
        for runs in &self.runs {
            let _ = runs.try_send(run.clone());
        }
    }

    /// The last sequence number in the read model (the journal must keep what follows).
    pub fn projected(&self) -> Arc<AtomicU64> {
        self.projected.clone()
    }
}

/// How far each projector is, and the least of them (what the read model holds as a
/// whole: the journal trim stays behind it).
struct Progress {
    parts: Vec<AtomicU64>,
    least: Arc<AtomicU64>,
    /// A projector has stopped for good ([`Progress::halted`]).
    halted: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// A projector stopped for good while serving: the next start rebuilds the read
    /// model from the ledger (or catches it up) whatever the journal holds, so the
    /// journal trim no longer waits for it — Redis would otherwise keep every event
    /// from here on until that start. Said in `giftstream_read_model_stopped`; the lag
    /// gauge is the halted projector's from now on ([`hold_lag`]).
    fn halted(&self) {
        self.halted.store(true, Ordering::Release);
        self.least.store(u64::MAX, Ordering::Release);
        metrics::gauge!(telemetry::READ_MODEL_STOPPED).set(1.0);
    }

    /// Sets the lag gauge, unless a projector has halted (its lag, which only grows,
    /// is the read model's).
    fn lag(&self, lag_ms: u64) {
        if !self.halted.load(Ordering::Acquire) {
            metrics::gauge!(telemetry::READ_MODEL_LAG_SECONDS).set(lag_ms as f64 / 1000.0);
        }
    }

    fn set(&self, index: usize, seq: u64) {
        self.parts[index].store(seq, Ordering::Release);
        let least = self.parts.iter().map(|p| p.load(Ordering::Acquire)).min();
        // Every part only grows, so a least computed before another part moved is
        // never above the true one; `fetch_max` keeps a stale one from going back.
        self.least.fetch_max(least.unwrap_or(seq), Ordering::AcqRel);
    }
}

/// Starts `read_model.projectors` projectors, each writing its part of the buckets
/// (bucket `b` is projector `b mod projectors`'s), each on a thread of its own with its
/// own single-threaded runtime, at nice `read_model.nice`: folding runs and parsing
/// journal read-backs never wait on, nor hold up, the serving runtime's workers, and
/// above nice 0 those workers get the CPU first. Each follows `watermark` (the last
/// committed seq) until `stop` turns true, then writes what is committed (bounded by a
/// timeout) and returns; the task returned ends when all have. `projected`, the least
/// of their progress, is published as the read model advances (the journal trim stays
/// behind it). Fails only if a thread or its runtime cannot be made.
pub fn spawn_projector(
    start: ProjectorStart,
    journal: RedisJournal,
    (economy, economies): (Arc<Economy>, EconomyLookup),
    config: ReadModelConfig,
    watermark: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    projected: Arc<AtomicU64>,
) -> std::io::Result<(ProjectorHandle, tokio::task::JoinHandle<()>)> {
    let count = config.projectors as usize;
    let layout = Layout::of(&config);
    projected.store(start.next - 1, Ordering::Release);
    let progress = Arc::new(Progress {
        parts: (0..count).map(|_| AtomicU64::new(start.next - 1)).collect(),
        least: projected.clone(),
        halted: Default::default(),
    });
    let mut runs = Vec::with_capacity(count);
    let mut done = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = mpsc::channel(config.queue_runs_max);
        runs.push(tx);
        let part = (index, count);
        let projector = Projector {
            economy: economy.clone(),
            economies: economies.clone(),
            books: Books::from_view(&start.view, start.top_k, |id| owns(layout, part, id)),
            pending: Pending::default(),
            wallets: config.wallets,
            merge: journal.ledger().node.is_some(),
            layout,
            part,
            next: start.next,
            untotalled: None,
        };
        let task = run(
            projector,
            journal.clone(),
            config.clone(),
            rx,
            watermark.clone(),
            stop.clone(),
            progress.clone(),
        );
        done.push(on_own_thread(
            format!("gs-projector-{index}"),
            config.nice,
            task,
        )?);
    }
    let handle = ProjectorHandle { runs, projected };
    let task = tokio::spawn(async move {
        for ended in done {
            // (An error: the thread ended without saying so, i.e. it panicked.)
            let _ = ended.await;
        }
    });
    Ok((handle, task))
}

/// Runs `task` to its end on a new thread named `name`, at nice `nice`, with a
/// single-threaded runtime of its own; the receiver hears when it has ended.
fn on_own_thread(
    name: String,
    nice: i32,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ended, ended_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        set_thread_nice(nice);
        runtime.block_on(task);
        let _ = ended.send(());
    })?;
    Ok(ended_rx)
}

/// Sets the calling thread's nice value (Linux: nice is per thread). Best effort: where
/// it is refused, the thread runs at the serving threads' priority (logged).
fn set_thread_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: plain system calls on the calling thread's own id; no memory is passed.
    let refused = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0
    };
    if refused {
        tracing::warn!(
            nice,
            error = %std::io::Error::last_os_error(),
            "read model: cannot lower the projector thread's priority; it runs at the serving threads'"
        );
    }
}

async fn run(
    mut projector: Projector,
    journal: RedisJournal,
    config: ReadModelConfig,
    mut rx: mpsc::Receiver<Arc<Vec<LogEntry>>>,
    watermark: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) {
    let window = Duration::from_millis(config.window_ms);
    // Names this projector in `rm:writer` while it is part-way through a window.
    let writer = format!("{} (pid {})", uuid::Uuid::new_v4(), std::process::id());
    let lag_max = Duration::from_millis(config.lag_max_ms);
    // The read model's connection, and one for journal read-backs of this thread's own
    // (not the committer's).
    let (mut conn, journal) = loop {
        let connected = async {
            let url = config.redis_url(journal.url());
            let conn = super::redis::connect_to(url, journal.cluster()).await?;
            Ok::<_, JournalError>((conn, journal.reader().await?))
        };
        match connected.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "read model: cannot connect; retrying");
                tokio::time::sleep(RETRY_BACKOFF_MAX).await;
            }
        }
    };
    let mut queue: VecDeque<(Arc<Vec<LogEntry>>, usize)> = VecDeque::new();
    let mut over_lag = false;
    let mut stopping_since: Option<Instant> = None;
    loop {
        if stopping_since.is_none() && *stop.borrow() {
            stopping_since = Some(Instant::now());
        }
        if stopping_since.is_some_and(|t| t.elapsed() > FINAL_WRITE_TIMEOUT) {
            tracing::warn!(
                projected = projector.next - 1,
                "read model: shutdown timeout; the next start catches up from the journal"
            );
            return;
        }
        while let Ok(run) = rx.try_recv() {
            queue.push_back((run, 0));
        }
        let committed = *watermark.borrow();
        // Fold what is committed, up to the window's size.
        while projector.pending.ops() < config.ops_per_window_max {
            let Some((run, at)) = queue.front_mut() else {
                if projector.next <= committed {
                    // Committed but not queued (the queue was full): read it back.
                    match journal
                        .runs_from(projector.next, JOURNAL_RUNS_PER_READ)
                        .await
                    {
                        Ok(runs) if runs.is_empty() => break,
                        Ok(runs) => {
                            metrics::counter!(telemetry::READ_MODEL_JOURNAL_READS_TOTAL)
                                .increment(runs.len() as u64);
                            if runs[0].first().is_some_and(|e| e.seq > projector.next) {
                                tracing::error!(
                                    next = projector.next,
                                    "read model: the journal was trimmed past the projector; it is rebuilt at the next start"
                                );
                                let oldest = projector.oldest_unwritten();
                                hold_lag(rx, &progress, oldest, window, stop).await;
                                return;
                            }
                            queue.extend(runs.into_iter().map(|r| (Arc::new(r), 0)));
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "read model: journal read failed");
                            break;
                        }
                    }
                }
                break;
            };
            match run.get(*at) {
                None => {
                    queue.pop_front();
                }
                Some(e) if e.seq < projector.next => *at += 1,
                Some(e) if e.seq == projector.next => {
                    projector.fold(e);
                    *at += 1;
                }
                Some(_) => {
                    // A gap before this run (earlier runs were not queued): fill it from
                    // the journal first.
                    queue.clear();
                    // (the loop reads the journal on the next pass)
                }
            }
        }
        if let Some(seq) = projector.untotalled {
            tracing::error!(
                seq,
                "read model: a gift in the journal has no totals (journal format 1); it is rebuilt at the next start"
            );
            let _ = redis::cmd("DEL")
                .arg(projector.layout.format_key(0, journal.ledger()))
                .query_async::<()>(&mut conn)
                .await;
            let oldest = projector.oldest_unwritten();
            hold_lag(rx, &progress, oldest, window, stop).await;
            return;
        }
        let lag_ms = if projector.pending.is_empty() {
            match queue.front() {
                Some((run, at)) => run.get(*at).map_or(0, |e| lag_of(e.stamp)),
                None => 0,
            }
        } else {
            lag_of(Stamp(projector.pending.oldest_stamp))
        };
        progress.lag(lag_ms);
        if Duration::from_millis(lag_ms) > lag_max {
            if !over_lag {
                metrics::counter!(telemetry::READ_MODEL_LAG_EXCEEDED_TOTAL).increment(1);
                tracing::warn!(lag_ms, "read model lag over read_model.lag_max_ms");
            }
            over_lag = true;
        } else {
            over_lag = false;
        }
        let due = projector
            .pending
            .opened
            .is_some_and(|t| t.elapsed() >= window)
            || projector.pending.ops() >= config.ops_per_window_max
            || over_lag
            || stopping_since.is_some();
        if !projector.pending.is_empty() && due {
            let events = projector.pending.events;
            let oldest = Stamp(projector.pending.oldest_stamp);
            let Write {
                mut ops,
                from,
                to,
                held,
                mut reconcile,
            } = projector.take_ops();
            let layout = projector.layout;
            let mut backoff = RETRY_BACKOFF_MIN;
            while !reconcile.is_empty() {
                match reconcile_ops(&mut conn, journal.ledger(), layout, &mut reconcile).await {
                    Ok(removals) => {
                        for (bucket, op) in removals {
                            ops[bucket].push(op);
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "read model: reading leaderboards to reconcile failed; retrying");
                        if stopping_since.is_some_and(|t| t.elapsed() > FINAL_WRITE_TIMEOUT) {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    }
                }
            }
            // The buckets are written side by side (on a Redis Cluster, by their slots'
            // masters), each in order; every bucket's `seq` moves, with operations or not.
            let part = projector.part;
            let writes = ops
                .into_iter()
                .enumerate()
                .filter(|&(bucket, _)| writes_bucket(part, bucket))
                .map(|(bucket, mut ops)| {
                    let mut conn = conn.clone();
                    let target = (journal.ledger(), layout, bucket);
                    let (config, writer) = (&config, writer.as_str());
                    let progress = &*progress;
                    async move {
                        group_by_key(&mut ops);
                        write_bucket(
                            &mut conn,
                            target,
                            &ops,
                            (from, to),
                            writer,
                            config,
                            (oldest, progress),
                            stopping_since,
                        )
                        .await
                    }
                });
            let mut saturated = held;
            for written in futures::future::join_all(writes).await {
                match written {
                    Ok(held) => saturated += held,
                    Err(Halt::Lost) => {
                        hold_lag(rx, &progress, oldest, window, stop).await;
                        return;
                    }
                    Err(Halt::OutOfTime) => return,
                }
            }
            if projector.part.0 == 0 {
                // (Every projector folds every event: the first counts them.)
                metrics::counter!(telemetry::READ_MODEL_EVENTS_TOTAL).increment(events);
            }
            if saturated > 0 {
                metrics::counter!(telemetry::READ_MODEL_SATURATED_TOTAL).increment(saturated);
                tracing::error!(
                    scores = saturated,
                    "read model: sorted-set scores held at 2^53"
                );
            }
            progress.set(projector.part.0, to);
            continue;
        }
        if stopping_since.is_some() && projector.pending.is_empty() && projector.next > committed {
            return;
        }
        let wait = projector
            .pending
            .opened
            .map_or(window, |t| window.saturating_sub(t.elapsed()));
        tokio::select! {
            run = rx.recv() => {
                if let Some(run) = run {
                    queue.push_back((run, 0));
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed(), if stopping_since.is_none() => {}
        }
    }
}

/// A projector that stopped for good while serving: closes its queue (the committer's
/// runs are no longer kept for it), marks it ([`Progress::halted`]), then, until
/// shutdown, keeps the lag gauge at the age of `oldest` (the oldest committed event it
/// did not write), so the lag grows and a lag alert fires too.
async fn hold_lag(
    queue: mpsc::Receiver<Arc<Vec<LogEntry>>>,
    progress: &Progress,
    oldest: Stamp,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    drop(queue);
    progress.halted();
    loop {
        metrics::gauge!(telemetry::READ_MODEL_LAG_SECONDS).set(lag_of(oldest) as f64 / 1000.0);
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

/// Why a projector stops writing before its work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// The read model is not where this projector left it (its Redis lost data, or
    /// another projector wrote it): only a rebuild at the next start can tell what it
    /// holds.
    Lost,
    /// The shutdown's time for the last writes is up; the next start catches up from
    /// the journal.
    OutOfTime,
}

/// Writes one bucket's share of the window `(from, to)`: every value is absolute, so it
/// is written in chunks of at most `ops_per_write_max` (each blocks Redis briefly) and a
/// chunk can be retried; each checks the bucket's `seq`, the last moves it. Returns the
/// scores held at the max, or why the projector must stop.
#[allow(clippy::too_many_arguments)]
async fn write_bucket(
    conn: &mut RedisConn,
    target: (&Ledger, Layout, usize),
    ops: &[Op],
    (from, to): (u64, u64),
    writer: &str,
    config: &ReadModelConfig,
    (oldest, progress): (Stamp, &Progress),
    stopping_since: Option<Instant>,
) -> Result<u64, Halt> {
    let chunks: Vec<&[Op]> = if ops.is_empty() {
        vec![&[]]
    } else {
        ops.chunks(config.ops_per_write_max).collect()
    };
    let mut saturated = 0;
    let mut backoff = RETRY_BACKOFF_MIN;
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        loop {
            let started = Instant::now();
            match write(conn, target, chunk, (from, to), (last, writer)).await {
                Ok((ran, held)) => {
                    let took = started.elapsed();
                    metrics::histogram!(telemetry::READ_MODEL_WRITE_SECONDS)
                        .record(took.as_secs_f64());
                    if stopping_since.is_none() {
                        let pause = share_pause(took, config.redis_share_percent);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                    metrics::counter!(telemetry::READ_MODEL_WRITES_TOTAL).increment(1);
                    // A large window takes many writes: the lag stays current.
                    progress.lag(lag_of(oldest));
                    saturated += held;
                    if !ran {
                        // A retried last chunk whose first attempt ran.
                        return Ok(saturated);
                    }
                    break;
                }
                Err(e) => {
                    metrics::counter!(telemetry::READ_MODEL_WRITE_FAILURES_TOTAL).increment(1);
                    if e.to_string().contains("GIFTSTREAM_GAP") {
                        tracing::error!(error = %e, bucket = target.2, "read model: not where the projector left it (Redis lost data?); it is rebuilt at the next start");
                        return Err(Halt::Lost);
                    }
                    tracing::warn!(error = %e, bucket = target.2, retry_in_ms = backoff.as_millis() as u64, "read model write failed; retrying");
                    if stopping_since.is_some_and(|t| t.elapsed() > FINAL_WRITE_TIMEOUT) {
                        return Err(Halt::OutOfTime);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
    }
    Ok(saturated)
}

/// The pause after a write that took `took` that keeps the projector's share of Redis
/// time at `percent` (100: none).
fn share_pause(took: Duration, percent: u8) -> Duration {
    let percent = u32::from(percent.clamp(1, 100));
    took * (100 - percent) / percent
}

/// Milliseconds since `stamp` (0 if in the future).
fn lag_of(stamp: Stamp) -> u64 {
    crate::clock::now().0.saturating_sub(stamp.0)
}

/// Compares the read model with the engine: every creator hash, every stream hash, the
/// top of every leaderboard (scores in order, and each listed member's exact total).
/// Returns the differences found; empty when they agree. Call it when the read model is
/// at the engine's sequence number.
pub async fn compare(
    conn: &mut RedisConn,
    engine: &Engine,
    layout: Layout,
) -> Result<Vec<String>, JournalError> {
    let mut view = engine.read_model_view(ViewParts::default());
    let top_k = engine.config().top_k;
    let mut diffs = Vec::new();
    // A pipeline on a Redis Cluster stays in one slot: one bucket's keys at a time.
    view.creators
        .sort_by_key(|&(c, ..)| (layout.bucket(c.0), c));
    view.streams.sort_by_key(|&(s, _)| (layout.bucket(s.0), s));
    let creators = view
        .creators
        .chunk_by(|a, b| layout.bucket(a.0.0) == layout.bucket(b.0.0))
        .flat_map(|bucket| bucket.chunks(1000));
    for chunk in creators {
        let mut pipe = redis::pipe();
        for &(c, ..) in chunk {
            pipe.hgetall(layout.creator(c));
            pipe.zrevrange_withscores(layout.creator_top(c), 0, top_k as isize - 1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_error)?;
        for (i, &(c, coins, paid, credited)) in chunk.iter().enumerate() {
            let hash: FxHashMap<String, String> =
                redis::from_redis_value(replies[2 * i].clone())
                    .map_err(|e| JournalError(format!("redis reply: {e}")))?;
            let diamonds = credited.diamonds;
            let want = [
                ("coins_received", coins),
                ("diamonds_total", diamonds),
                ("diamonds_available", diamonds.saturating_sub(paid)),
            ];
            for (field, value) in want {
                if hash.get(field).map(String::as_str) != Some(value.to_string().as_str()) {
                    diffs.push(format!(
                        "creator {}: {field} in Redis {:?}, ledger {value}",
                        c.0,
                        hash.get(field)
                    ));
                }
            }
            let top: Vec<(u64, f64)> = redis::from_redis_value(replies[2 * i + 1].clone())
                .map_err(|e| JournalError(format!("redis reply: {e}")))?;
            let want = engine.creator_top_gifters(c, top_k);
            compare_top(
                &format!("creator {} top gifters", c.0),
                &top,
                &want,
                |u| engine.creator_gifter_coins(c, u),
                &mut diffs,
            );
        }
    }
    let streams = view
        .streams
        .chunk_by(|a, b| layout.bucket(a.0.0) == layout.bucket(b.0.0))
        .flat_map(|bucket| bucket.chunks(1000));
    for chunk in streams {
        let mut pipe = redis::pipe();
        for (s, _) in chunk {
            pipe.hgetall(layout.stream(*s));
            pipe.zrevrange_withscores(layout.stream_top(*s), 0, top_k as isize - 1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_error)?;
        for (i, (s, book)) in chunk.iter().enumerate() {
            let hash: FxHashMap<String, String> =
                redis::from_redis_value(replies[2 * i].clone())
                    .map_err(|e| JournalError(format!("redis reply: {e}")))?;
            let mut want = vec![("coins_received", Some(book.coins_received.to_string()))];
            want.push(("creator", book.creator.map(|c| c.0.to_string())));
            want.push(("goal_coins_target", book.goal.map(|t| t.to_string())));
            for (field, value) in want {
                if hash.get(field) != value.as_ref() {
                    diffs.push(format!(
                        "stream {}: {field} in Redis {:?}, ledger {value:?}",
                        s.0,
                        hash.get(field)
                    ));
                }
            }
            let top: Vec<(u64, f64)> = redis::from_redis_value(replies[2 * i + 1].clone())
                .map_err(|e| JournalError(format!("redis reply: {e}")))?;
            let want = engine.stream_top_gifters(*s, top_k);
            compare_top(
                &format!("stream {} top gifters", s.0),
                &top,
                &want,
                |u| engine.stream_gifter_coins(*s, u),
                &mut diffs,
            );
        }
    }
    let top = top_creators(conn, layout, top_k)
        .await
        .map_err(redis_error)?;
    let want = engine.top_creators(top_k);
    let want_scores: Vec<u128> = want.iter().map(|&(_, d)| d.min(SCORE_MAX)).collect();
    let got_scores: Vec<u128> = top.iter().map(|&(_, s)| s as u128).collect();
    if let Some(diff) = first_difference(&got_scores, &want_scores) {
        diffs.push(format!("top creators: {diff}"));
    }
    Ok(diffs)
}

/// The best `n` creators by diamonds credited, best first: the best of the buckets'
/// `top-creators` lists (what a direct reader does too).
pub async fn top_creators(
    conn: &mut RedisConn,
    layout: Layout,
    n: usize,
) -> Result<Vec<(u64, f64)>, redis::RedisError> {
    // One request per bucket (a Redis Cluster pipeline stays in one slot), all in
    // flight at once: a read costs one round trip, not one per bucket.
    let lists = futures::future::try_join_all((0..layout.buckets()).map(|bucket| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("ZREVRANGE")
                .arg(layout.top_creators(bucket))
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

/// Where two ranked score lists first differ, in words.
fn first_difference(got: &[u128], want: &[u128]) -> Option<String> {
    if got == want {
        return None;
    }
    Some(match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(rank) => format!(
            "rank {} has score {} in Redis, {} in the ledger",
            rank + 1,
            got[rank],
            want[rank]
        ),
        None => format!(
            "{} entries in Redis, {} in the ledger",
            got.len(),
            want.len()
        ),
    })
}

fn compare_top<Id: Copy>(
    what: &str,
    got: &[(u64, f64)],
    want: &[(Id, u128)],
    exact: impl Fn(UserId) -> u128,
    diffs: &mut Vec<String>,
) {
    let want_scores: Vec<u128> = want.iter().map(|&(_, s)| s.min(SCORE_MAX)).collect();
    let got_scores: Vec<u128> = got.iter().map(|&(_, s)| s as u128).collect();
    if let Some(diff) = first_difference(&got_scores, &want_scores) {
        diffs.push(format!("{what}: {diff}"));
        return;
    }
    for &(user, score) in got {
        let coins = exact(UserId(user)).min(SCORE_MAX);
        if coins != score as u128 {
            diffs.push(format!(
                "{what}: user {user} has {score} in Redis, {coins} in the ledger"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, from /proc (field 19 of its stat line).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces: count from after its ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_projector_thread_runs_its_task_at_its_nice_and_says_when_it_ended() {
        let before = own_nice();
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let ended = on_own_thread("gs-test-nice".to_owned(), 7, async move {
            // A timer works: the thread has a runtime of its own.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let name = std::thread::current().name().map(str::to_owned);
            seen_tx.send((own_nice(), name)).unwrap();
        })
        .unwrap();
        let (nice, name) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(nice, before + 7);
        assert_eq!(name.as_deref(), Some("gs-test-nice"));
        assert_eq!(own_nice(), before, "the caller's priority is unchanged");
        assert!(ended.blocking_recv().is_ok());
    }

    #[test]
    fn the_share_pause_keeps_writes_to_their_share_of_the_time() {
        let took = Duration::from_millis(6);
        assert_eq!(share_pause(took, 100), Duration::ZERO);
        assert_eq!(share_pause(took, 50), took, "half the time writing");
        assert_eq!(share_pause(took, 25), 3 * took);
        assert_eq!(share_pause(took, 5), 19 * took);
        for percent in [5u8, 10, 30, 60, 99] {
            let busy = took.as_secs_f64() / (took + share_pause(took, percent)).as_secs_f64();
            assert!(
                (busy - f64::from(percent) / 100.0).abs() < 1e-6,
                "{percent}: {busy}"
            );
        }
    }
}
