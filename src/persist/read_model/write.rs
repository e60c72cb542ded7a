//! Writing the read model: its operations ([`Op`]), the Lua script that applies one
//! chunk of a window atomically (checking `seq` and the window's writer), and the
//! operations of one creator or stream. Every value written is absolute.

use super::layout::{Layout, SCORE_MAX, TOP_CREATORS, creator_key, stream_key, video_key};
use crate::engine::{CreatorId, StreamBook, StreamId, VideoBook, VideoId};
use crate::persist::redis::{Ledger, RedisConn};
use rustc_hash::FxHashSet;

/// Commands per pipeline when rebuilding.
pub(super) const REBUILD_COMMANDS_PER_PIPELINE: usize = 10_000;

/// The write into one bucket: check `seq` (behind the window's start: Redis lost data; at
/// or past its end: written already; inside it: a bucket a crash left ahead of the
/// others, written again — every value is absolute and as new as the window's end) and
/// that no other projector is part-way through this window (KEYS[2], the writer; claimed
/// by the first chunk), apply the operations, and if this is the bucket's last chunk of
/// the window set `seq` and release the window. KEYS: seq, writer. ARGV:
/// from, to, prefix, score max, node ("" for a single node), last chunk ("1" or "0"),
/// writer token, then operations: `H key n field value ...`
/// (HSET of n fields), `A key n score member ...` (ZADD of n members), `R key n member
/// ...` (ZREM of n members), `E key seconds n score member ...` (ZADD of n
/// members, then EXPIREAT in the same call: a windowed key never exists without its
/// expiry, whatever chunk a crash stops at), `M key member
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
  elseif op == 'E' then
    local n = tonumber(ARGV[i + 3])
    redis.call('ZADD', k, unpack(ARGV, i + 4, i + 3 + 2 * n))
    redis.call('EXPIREAT', k, ARGV[i + 2])
    i = i + 4 + 2 * n
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
pub(super) enum Op {
    /// HSET key field value [field value ...]
    Hash(String, Vec<(&'static str, String)>),
    /// ZADD key score member (absolute)
    Set(String, u64, u128),
    /// ZADD key score member, then EXPIREAT key seconds in the same script call (a
    /// windowed leaderboard's first write in a projector's life: the key and its expiry
    /// are created together).
    SetExpiring(String, u64, u128, u64),
    /// ZREM key member
    Remove(String, u64),
    /// This node's contribution to merged hash fields (held at 2^53); with a member,
    /// `top-creators` moves with `diamonds_total`.
    Merge(String, Option<u64>, Vec<(&'static str, i128)>),
}

impl Op {
    pub(super) fn key(&self) -> &str {
        match self {
            Op::Hash(k, _)
            | Op::Set(k, ..)
            | Op::SetExpiring(k, ..)
            | Op::Remove(k, _)
            | Op::Merge(k, ..) => k,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Op::Set(..) | Op::SetExpiring(..) => 0,
            Op::Remove(..) => 1,
            Op::Hash(..) => 2,
            Op::Merge(..) => 3,
        }
    }
}

/// Orders a window's operations by kind and key, so that each key's scores (and
/// removals) are one run: one `ZADD` (`ZREM`) per key and chunk. The order of a window's
/// operations does not matter: every value is absolute, no member is both set and
/// removed in one window, and a windowed key's expiry travels with its scores
/// ([`Op::SetExpiring`]). Scores come before removals, so a key that keeps members is
/// never emptied (deleted by Redis, with its expiry) part-way through a window.
pub(super) fn group_by_key(ops: &mut [Op]) {
    ops.sort_unstable_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.key().cmp(b.key())));
}

/// Members one `ZADD` or `ZREM` of the write script takes at most (Lua's `unpack` has a
/// limit of a few thousand values).
const MEMBERS_PER_CALL: usize = 1000;

/// Removals that make each key's members that `ledger` owns exactly the ones listed,
/// with their buckets: reads the keys' members (only this projector writes this node's
/// gifters, so nothing changes them before the write).
pub(super) async fn reconcile_ops(
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
pub(super) fn creator_ops(
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
    // A creator ranks once it received coins; one whose every gift was reversed leaves
    // (as the ledger's list).
    if coins == 0 {
        ops.push(Op::Remove(TOP_CREATORS.to_owned(), c.0));
    } else {
        ops.push(Op::Set(
            TOP_CREATORS.to_owned(),
            c.0,
            diamonds.min(SCORE_MAX),
        ));
    }
    u64::from(diamonds > SCORE_MAX)
}

/// The hash operations of one stream; returns 1 if a merged contribution was held at the
/// max.
pub(super) fn stream_ops(s: StreamId, book: &StreamBook, merge: bool, ops: &mut Vec<Op>) -> u64 {
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

/// The hash operations of one video (as a stream's, without a goal); returns 1 if a
/// merged contribution was held at the max.
pub(super) fn video_ops(v: VideoId, book: &VideoBook, merge: bool, ops: &mut Vec<Op>) -> u64 {
    let mut held = 0;
    let mut fields = Vec::new();
    if merge {
        held = u64::from(book.coins_received > SCORE_MAX);
        ops.push(Op::Merge(
            video_key(v),
            None,
            vec![("coins_received", book.coins_received.min(SCORE_MAX) as i128)],
        ));
    } else {
        fields.push(("coins_received", book.coins_received.to_string()));
    }
    if let Some(c) = book.creator {
        fields.push(("creator", c.0.to_string()));
    }
    if !fields.is_empty() {
        ops.push(Op::Hash(video_key(v), fields));
    }
    held
}

/// Writes one chunk of a window into `bucket` atomically (`from` = 0: a rebuild's
/// chunk) as the projector `writer`; the bucket's last chunk moves its `seq` to `to`.
/// Returns whether it ran (not if `seq` is at `to` already: the window was written) and
/// the scores held at the max.
pub(super) async fn write(
    conn: &mut RedisConn,
    (ledger, layout, bucket): (&Ledger, Layout, usize),
    ops: &[Op],
    (from, to): (u64, u64),
    (last, writer): (bool, &str),
) -> Result<(bool, u64), redis::RedisError> {
    // `EVALSHA` built as one command (its arguments in one buffer), not through
    // `ScriptInvocation` (an allocation per argument, then copied into a command).
    let mut invocation = redis::cmd("EVALSHA");
    invocation
        .arg(WRITE.get_hash())
        .arg(2)
        .arg(layout.seq_key(bucket, ledger))
        .arg(layout.writer_key(bucket, ledger))
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
            Op::Set(k, ..) | Op::SetExpiring(k, ..) | Op::Remove(k, ..) => rest
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
                        invocation.arg(score_arg(*s)).arg(*m);
                    }
                }
                &mut invocation
            }
            Op::SetExpiring(k, _, _, at_s) => {
                // A run has one key, so one expiry (the key's window's).
                invocation.arg("E").arg(k).arg(*at_s).arg(run);
                for o in now {
                    if let Op::SetExpiring(_, m, s, _) = o {
                        invocation.arg(score_arg(*s)).arg(*m);
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
    let (ran, saturated): (u64, u64) = match invocation.query_async(conn).await {
        // A Redis that does not know the script (restarted, flushed): load it, once.
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(WRITE_SCRIPT)
                .query_async(conn)
                .await?;
            invocation.query_async(conn).await?
        }
        result => result?,
    };
    Ok((ran == 1, saturated))
}

/// The write script, hashed once.
static WRITE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(WRITE_SCRIPT));

/// A score as the script's argument: written as an integer (held at [`SCORE_MAX`], far
/// below `u64::MAX`, by every operation's maker).
fn score_arg(score: u128) -> u64 {
    u64::try_from(score.min(SCORE_MAX)).expect("SCORE_MAX fits a u64")
}
