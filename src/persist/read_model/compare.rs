//! The audit's comparison of the read model with the engine: every creator, stream and
//! video hash, the top of every leaderboard, every windowed leaderboard the engine
//! serves, and (with `read_model.wallets`) every wallet's `coins` and `coins_owed`.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::layout::{Layout, SCORE_MAX, redis_error};
use super::reader::{top_creators, top_creators_in};
use super::windows::expire_at_ms;
use crate::engine::{
    CreatorId, Credited, Engine, StreamBook, StreamId, TimeWindow, UserId, VideoBook, VideoId,
    ViewParts, WindowsView,
};
use crate::persist::journal::JournalError;
use crate::persist::redis::RedisConn;

/// Compares the read model with the engine: every creator hash, every stream hash, the
/// top of every leaderboard (scores in order, and each listed member's exact total).
/// With `wallets` (`read_model.wallets`), every wallet's `coins` and `coins_owed` too.
/// Returns the differences found; empty when they agree. Call it when the read model is
/// at the engine's sequence number.
pub async fn compare(
    conn: &mut RedisConn,
    engine: &Engine,
    layout: Layout,
    wallets: bool,
) -> Result<Vec<String>, JournalError> {
    let mut view = engine.read_model_view(ViewParts {
        tops: 0,
        wallets,
        windows: true,
    });
    let top_k = engine.config().top_k;
    let mut diffs = Vec::new();
    // A pipeline on a Redis Cluster stays in one slot: one bucket's keys at a time.
    view.creators
        .sort_by_key(|&(c, ..)| (layout.bucket(c.0), c));
    view.streams.sort_by_key(|&(s, _)| (layout.bucket(s.0), s));
    view.videos.sort_by_key(|&(v, _)| (layout.bucket(v.0), v));
    compare_creators(conn, engine, layout, &view.creators, &mut diffs).await?;
    compare_streams(conn, engine, layout, &view.streams, &mut diffs).await?;
    compare_videos(conn, engine, layout, &view.videos, &mut diffs).await?;
    view.wallets.sort_by_key(|&(u, ..)| (layout.bucket(u.0), u));
    compare_wallets(conn, layout, &view.wallets, &mut diffs).await?;
    let top = top_creators(conn, layout, top_k)
        .await
        .map_err(redis_error)?;
    let want = engine.top_creators(top_k);
    let want_scores: Vec<u128> = want.iter().map(|&(_, d)| d.min(SCORE_MAX)).collect();
    let got_scores: Vec<u128> = top.iter().map(|&(_, s)| s as u128).collect();
    if let Some(diff) = first_difference(&got_scores, &want_scores) {
        diffs.push(format!("top creators: {diff}"));
    }
    if let Some(windows) = &view.windows {
        let merge = false;
        compare_windows(conn, engine, layout, windows, merge, &mut diffs).await?;
    }
    Ok(diffs)
}

/// Compares every windowed leaderboard the engine serves (retained at the ledger's
/// time) with its key: the same members at the same coins. Ties are compared as sets
/// (Redis orders equal scores by member; the engine by who reached them first).
async fn compare_windows(
    conn: &mut RedisConn,
    engine: &Engine,
    layout: Layout,
    view: &WindowsView,
    merge: bool,
    diffs: &mut Vec<String>,
) -> Result<(), JournalError> {
    let top_k = engine.config().top_k;
    let mut boards: BTreeSet<(TimeWindow, u8, u64)> = BTreeSet::new();
    boards.extend(view.creator_pairs.iter().map(|&(w, c, ..)| (w, 0, c.0)));
    boards.extend(view.stream_pairs.iter().map(|&(w, s, ..)| (w, 1, s.0)));
    if !merge {
        boards.extend(view.creators.iter().map(|&(w, ..)| (w, 2, 0)));
    }
    for (w, kind, id) in boards {
        let (what, want) = match kind {
            0 => (
                format!("creator {id} top gifters in {}", w.label()),
                engine
                    .creator_top_gifters_in(CreatorId(id), w, top_k)
                    .map(|l| l.into_iter().map(|(u, c)| (u.0, c)).collect::<Vec<_>>()),
            ),
            1 => (
                format!("stream {id} top gifters in {}", w.label()),
                engine
                    .stream_top_gifters_in(StreamId(id), w, top_k)
                    .map(|l| l.into_iter().map(|(u, c)| (u.0, c)).collect()),
            ),
            _ => (
                format!("top creators in {} {}", w.kind.name(), w.label()),
                engine
                    .top_creators_in(w, top_k)
                    .map(|l| l.into_iter().map(|(c, coins)| (c.0, coins)).collect()),
            ),
        };
        // Not served (past its retention at the ledger's time), or expired in Redis
        // by the wall clock (a ledger whose time is behind it): not compared.
        let Ok(want) = want else { continue };
        if expire_at_ms(&view.config, w) <= crate::clock::now().0 {
            continue;
        }
        let got: Vec<(u64, f64)> = match kind {
            0 | 1 => {
                let key = if kind == 0 {
                    layout.creator_top_in(CreatorId(id), w)
                } else {
                    layout.stream_top_in(StreamId(id), w)
                };
                redis::cmd("ZREVRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(top_k as isize - 1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await
                    .map_err(redis_error)?
            }
            _ => top_creators_in(conn, layout, w, top_k)
                .await
                .map_err(redis_error)?,
        };
        let mut got: Vec<(u128, u64)> = got.into_iter().map(|(m, s)| (s as u128, m)).collect();
        let mut want: Vec<(u128, u64)> = want
            .into_iter()
            .map(|(m, s)| (s.min(SCORE_MAX), m))
            .collect();
        got.sort_unstable_by(|a, b| b.cmp(a));
        want.sort_unstable_by(|a, b| b.cmp(a));
        if got != want {
            diffs.push(format!(
                "{what}: Redis {:?}, ledger {:?}",
                &got[..got.len().min(5)],
                &want[..want.len().min(5)]
            ));
        }
    }
    Ok(())
}

/// Compares each creator's hash and top gifters (`creators` sorted by bucket).
async fn compare_creators(
    conn: &mut RedisConn,
    engine: &Engine,
    layout: Layout,
    creators: &[(CreatorId, u128, u128, Credited)],
    diffs: &mut Vec<String>,
) -> Result<(), JournalError> {
    let top_k = engine.config().top_k;
    let chunks = creators
        .chunk_by(|a, b| layout.bucket(a.0.0) == layout.bucket(b.0.0))
        .flat_map(|bucket| bucket.chunks(1000));
    for chunk in chunks {
        let mut pipe = redis::pipe();
        for &(c, ..) in chunk {
            pipe.hgetall(layout.creator(c));
            pipe.zrevrange_withscores(layout.creator_top(c), 0, top_k as isize - 1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_error)?;
        for (i, &(c, coins, paid, credited)) in chunk.iter().enumerate() {
            let hash: FxHashMap<String, String> = parse(&replies[2 * i])?;
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
            let top: Vec<(u64, f64)> = parse(&replies[2 * i + 1])?;
            let want = engine.creator_top_gifters(c, top_k);
            compare_top(
                &format!("creator {} top gifters", c.0),
                &top,
                &want,
                |u| engine.creator_gifter_coins(c, u),
                diffs,
            );
        }
    }
    Ok(())
}

/// Compares each stream's hash and top gifters (`streams` sorted by bucket).
async fn compare_streams(
    conn: &mut RedisConn,
    engine: &Engine,
    layout: Layout,
    streams: &[(StreamId, StreamBook)],
    diffs: &mut Vec<String>,
) -> Result<(), JournalError> {
    let top_k = engine.config().top_k;
    let chunks = streams
        .chunk_by(|a, b| layout.bucket(a.0.0) == layout.bucket(b.0.0))
        .flat_map(|bucket| bucket.chunks(1000));
    for chunk in chunks {
        let mut pipe = redis::pipe();
        for (s, _) in chunk {
            pipe.hgetall(layout.stream(*s));
            pipe.zrevrange_withscores(layout.stream_top(*s), 0, top_k as isize - 1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_error)?;
        for (i, (s, book)) in chunk.iter().enumerate() {
            let hash: FxHashMap<String, String> = parse(&replies[2 * i])?;
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
            let top: Vec<(u64, f64)> = parse(&replies[2 * i + 1])?;
            let want = engine.stream_top_gifters(*s, top_k);
            compare_top(
                &format!("stream {} top gifters", s.0),
                &top,
                &want,
                |u| engine.stream_gifter_coins(*s, u),
                diffs,
            );
        }
    }
    Ok(())
}

/// Compares each video's hash and top gifters (`videos` sorted by bucket).
async fn compare_videos(
    conn: &mut RedisConn,
    engine: &Engine,
    layout: Layout,
    videos: &[(VideoId, VideoBook)],
    diffs: &mut Vec<String>,
) -> Result<(), JournalError> {
    let top_k = engine.config().top_k;
    let chunks = videos
        .chunk_by(|a, b| layout.bucket(a.0.0) == layout.bucket(b.0.0))
        .flat_map(|bucket| bucket.chunks(1000));
    for chunk in chunks {
        let mut pipe = redis::pipe();
        for (v, _) in chunk {
            pipe.hgetall(layout.video(*v));
            pipe.zrevrange_withscores(layout.video_top(*v), 0, top_k as isize - 1);
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_error)?;
        for (i, (v, book)) in chunk.iter().enumerate() {
            let hash: FxHashMap<String, String> = parse(&replies[2 * i])?;
            let want = [
                ("coins_received", Some(book.coins_received.to_string())),
                ("creator", book.creator.map(|c| c.0.to_string())),
            ];
            for (field, value) in want {
                if hash.get(field) != value.as_ref() {
                    diffs.push(format!(
                        "video {}: {field} in Redis {:?}, ledger {value:?}",
                        v.0,
                        hash.get(field)
                    ));
                }
            }
            let top: Vec<(u64, f64)> = parse(&replies[2 * i + 1])?;
            let want = engine.video_top_gifters(*v, top_k);
            compare_top(
                &format!("video {} top gifters", v.0),
                &top,
                &want,
                |u| engine.video_gifter_coins(*v, u),
                diffs,
            );
        }
    }
    Ok(())
}

/// Compares each wallet's hash (`wallets`: user, coins, coins owed; sorted by bucket).
/// The projector writes a wallet when an event changes its balance, and `coins_owed`
/// when one changes the debt (a recharge reversal; a recharge or a gift refund that
/// repays it): an absent hash or field is 0 (a wallet only account settings made, a user
/// who never owed).
async fn compare_wallets(
    conn: &mut RedisConn,
    layout: Layout,
    wallets: &[(UserId, u64, u64)],
    diffs: &mut Vec<String>,
) -> Result<(), JournalError> {
    let chunks = wallets
        .chunk_by(|a, b| layout.bucket(a.0.0) == layout.bucket(b.0.0))
        .flat_map(|bucket| bucket.chunks(1000));
    for chunk in chunks {
        let mut pipe = redis::pipe();
        for &(u, ..) in chunk {
            pipe.hgetall(layout.user(u));
        }
        let replies: Vec<redis::Value> = pipe.query_async(conn).await.map_err(redis_error)?;
        for (reply, &(u, coins, owed)) in replies.iter().zip(chunk) {
            let hash: FxHashMap<String, String> = parse(reply)?;
            for (field, value) in [("coins", coins), ("coins_owed", owed)] {
                let got = hash.get(field).map_or("0", String::as_str);
                if got != value.to_string() {
                    diffs.push(format!(
                        "user {}: {field} in Redis {:?}, ledger {value}",
                        u.0,
                        hash.get(field)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// One reply of a pipeline as `T`.
fn parse<T: redis::FromRedisValue>(reply: &redis::Value) -> Result<T, JournalError> {
    redis::from_redis_value(reply.clone())
        .map_err(|e| JournalError::Reply(format!("redis reply: {e}")))
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
