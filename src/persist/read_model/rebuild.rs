//! Rebuilding the read model from the engine's view, and deciding at a start whether
//! the journal can bring it up to date or it must be rebuilt ([`prepare`]).

use super::layout::{
    Layout, SCORE_MAX, creator_top_key, redis_error, stream_top_key, user_key, video_top_key,
};
use super::reader::bucket_seqs;
use super::windows::Windows;
use super::write::{Op, REBUILD_COMMANDS_PER_PIPELINE, creator_ops, stream_ops, video_ops, write};
use crate::engine::{Engine, ReadModelView, ViewParts};
use crate::persist::journal::JournalError;
use crate::persist::redis::{Ledger, RedisConn, RedisJournal};

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
            for (i, op) in chunk.iter().enumerate() {
                match op {
                    Op::Hash(k, fields) => {
                        pipe.hset_multiple(format!("{prefix}{k}"), fields).ignore()
                    }
                    Op::Set(k, m, s) => pipe
                        .zadd(format!("{prefix}{k}"), *m, s.to_string())
                        .ignore(),
                    Op::SetExpiring(k, m, s, at_s) => {
                        pipe.zadd(format!("{prefix}{k}"), *m, s.to_string())
                            .ignore();
                        // Once per key: after its last member in this pipeline (a crash
                        // part-way leaves the format unset, so the next start rebuilds).
                        let last = chunk.get(i + 1).is_none_or(|next| next.key() != k.as_str());
                        if last {
                            pipe.cmd("EXPIREAT")
                                .arg(format!("{prefix}{k}"))
                                .arg(*at_s)
                                .ignore();
                        }
                        &mut pipe
                    }
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
                layout.format_value(view.tops, windows_part(view)),
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
    let prefix = escaped(&layout.prefix(bucket));
    let slot = layout.seq_key(bucket, ledger);
    // The all-time lists and the windowed ones (`…:top-gifters:<kind>:<label>`).
    let mut keys = conn
        .scan_slot(&slot, &format!("{prefix}*:top-gifters"))
        .await?;
    keys.extend(
        conn.scan_slot(&slot, &format!("{prefix}*:top-gifters:*"))
            .await?,
    );
    for key in keys {
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
    for (v, book) in &view.videos {
        video_ops(*v, book, merge, &mut ops[layout.bucket(v.0)]);
    }
    for &(v, u, coins) in &view.video_gifters {
        ops[layout.bucket(v.0)].push(Op::Set(video_top_key(v), u.0, coins.min(SCORE_MAX)));
    }
    if let Some(w) = &view.windows {
        // Every bucket's (the rebuild writes them all).
        Windows::from_view(w, (view.tops, layout, !merge), |_| true).all_ops(&mut ops);
    }
    if wallets {
        for &(u, coins, owed) in &view.wallets {
            let fields = vec![
                ("coins", coins.to_string()),
                ("coins_owed", owed.to_string()),
            ];
            ops[layout.bucket(u.0)].push(Op::Hash(user_key(u), fields));
        }
    }
    ops
}

/// The layout version's part for `view`'s windowed leaderboards (none when off).
fn windows_part(view: &ReadModelView) -> Option<String> {
    view.windows
        .as_ref()
        .map(|w| Windows::format_part(&w.config))
}

/// Where the projector starts.
pub struct ProjectorStart {
    /// The engine's view (with the top gifters) the projectors copy their books from.
    pub(super) view: ReadModelView,
    pub(super) top_k: usize,
    pub(super) next: u64,
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
    let mut conn = crate::persist::redis::connect_to(url, journal.cluster()).await?;
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
        windows: true,
    };
    let windows = &engine.config().windows;
    let format = layout.format_value(
        top_k,
        windows.enabled.then(|| Windows::format_part(windows)),
    );
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
