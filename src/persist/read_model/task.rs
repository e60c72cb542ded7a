//! The projector tasks: each on a thread of its own (at a lower nice), following the
//! committed watermark, reading back from the journal what its queue missed, writing
//! windows bucket by bucket with retries, and keeping the lag gauge and the journal
//! trim's lower bound ([`ProjectorHandle::projected`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::fold::{Books, EconomyLookup, Pending, Projector, Write, owns, writes_bucket};
use super::layout::Layout;
use super::rebuild::ProjectorStart;
use super::write::{Op, group_by_key, reconcile_ops, write};
use crate::config::ReadModelConfig;
use crate::economy::Economy;
use crate::engine::{LogEntry, Stamp};
use crate::persist::follow::{
    FINAL_WRITE_TIMEOUT, JOURNAL_RUNS_PER_READ, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN, lag_of,
};
use crate::persist::journal::JournalError;
use crate::persist::redis::{Ledger, RedisConn, RedisJournal};
use crate::persist::thread::on_own_thread;
use crate::telemetry;

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
            books: Books::from_view(
                &start.view,
                (start.top_k, layout, journal.ledger().node.is_some()),
                |id| owns(layout, part, id),
            ),
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

/// A queue of committed runs, each with how far into it the projector has folded.
type RunQueue = VecDeque<(Arc<Vec<LogEntry>>, usize)>;

/// One projector's life: fold what is committed, write a window when it is due (its
/// time is up, it is full, the lag is over the bound, or shutdown), wait for more.
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
    let (mut conn, journal) = connect(&journal, &config).await;
    let mut queue: RunQueue = VecDeque::new();
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
        let folded = fold_committed(&mut projector, &mut queue, &journal, &config, committed);
        if folded.await.is_err() {
            let oldest = projector.oldest_unwritten();
            hold_lag(rx, &progress, oldest, window, stop).await;
            return;
        }
        if let Some(seq) = projector.untotalled {
            rebuild_at_next_start(&mut conn, projector.layout, journal.ledger(), seq).await;
            let oldest = projector.oldest_unwritten();
            hold_lag(rx, &progress, oldest, window, stop).await;
            return;
        }
        let lag_ms = lag_ms(&projector, &queue);
        progress.lag(lag_ms);
        over_lag = note_lag(lag_ms, lag_max, over_lag);
        let due = over_lag || stopping_since.is_some() || window_full(&projector, &config);
        if !projector.pending.is_empty() && due {
            let oldest = Stamp(projector.pending.oldest_stamp);
            let target = (journal.ledger(), &config, writer.as_str());
            let lag = (oldest, &*progress);
            match write_window(&mut projector, &mut conn, target, lag, stopping_since).await {
                Ok(()) => continue,
                Err(Halt::Lost) => {
                    hold_lag(rx, &progress, oldest, window, stop).await;
                    return;
                }
                Err(Halt::OutOfTime) => return,
            }
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

/// The read model's connection, and one for journal read-backs of this thread's own
/// (not the committer's); retried until both are made.
async fn connect(journal: &RedisJournal, config: &ReadModelConfig) -> (RedisConn, RedisJournal) {
    loop {
        let connected = async {
            let url = config.redis_url(journal.url());
            let conn = crate::persist::redis::connect_to(url, journal.cluster()).await?;
            Ok::<_, JournalError>((conn, journal.reader().await?))
        };
        match connected.await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "read model: cannot connect; retrying");
                tokio::time::sleep(RETRY_BACKOFF_MAX).await;
            }
        }
    }
}

/// Folds what is committed (up to `committed`), up to the window's size: from the
/// queue, and what the queue missed read back from the journal. `Err(Halt::Lost)`: the
/// journal was trimmed past the projector.
async fn fold_committed(
    projector: &mut Projector,
    queue: &mut RunQueue,
    journal: &RedisJournal,
    config: &ReadModelConfig,
    committed: u64,
) -> Result<(), Halt> {
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
                            return Err(Halt::Lost);
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
    Ok(())
}

/// A gift in the journal has no totals (journal format 1, at `seq`): forgets the read
/// model's layout version, so that the next start rebuilds it from the ledger.
async fn rebuild_at_next_start(conn: &mut RedisConn, layout: Layout, ledger: &Ledger, seq: u64) {
    tracing::error!(
        seq,
        "read model: a gift in the journal has no totals (journal format 1); it is rebuilt at the next start"
    );
    let _ = redis::cmd("DEL")
        .arg(layout.format_key(0, ledger))
        .query_async::<()>(conn)
        .await;
}

/// Whether the pending window is due by itself: its time is up, or it is full.
fn window_full(projector: &Projector, config: &ReadModelConfig) -> bool {
    let window = Duration::from_millis(config.window_ms);
    projector
        .pending
        .opened
        .is_some_and(|t| t.elapsed() >= window)
        || projector.pending.ops() >= config.ops_per_window_max
}

/// The read model's lag, ms: the age of the oldest committed event not written.
fn lag_ms(projector: &Projector, queue: &RunQueue) -> u64 {
    if projector.pending.is_empty() {
        match queue.front() {
            Some((run, at)) => run.get(*at).map_or(0, |e| lag_of(e.stamp)),
            None => 0,
        }
    } else {
        lag_of(Stamp(projector.pending.oldest_stamp))
    }
}

/// Whether the lag is over `lag_max`; counted and logged once each time it goes over
/// (`was_over`: it was over at the last look).
fn note_lag(lag_ms: u64, lag_max: Duration, was_over: bool) -> bool {
    if Duration::from_millis(lag_ms) <= lag_max {
        return false;
    }
    if !was_over {
        metrics::counter!(telemetry::READ_MODEL_LAG_EXCEEDED_TOTAL).increment(1);
        tracing::warn!(lag_ms, "read model lag over read_model.lag_max_ms");
    }
    true
}

/// Writes the pending window: first the removals that reconcile the leaderboards a
/// catch-up touched, then this projector's buckets side by side (on a Redis Cluster, by
/// their slots' masters), each in order; every bucket's `seq` moves, with operations or
/// not. `oldest` is the window's oldest event (for the lag). Moves the projector's
/// progress on success; `Err` says why the projector must stop.
async fn write_window(
    projector: &mut Projector,
    conn: &mut RedisConn,
    (ledger, config, writer): (&Ledger, &ReadModelConfig, &str),
    (oldest, progress): (Stamp, &Progress),
    stopping_since: Option<Instant>,
) -> Result<(), Halt> {
    let events = projector.pending.events;
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
        match reconcile_ops(conn, ledger, layout, &mut reconcile).await {
            Ok(removals) => {
                for (bucket, op) in removals {
                    ops[bucket].push(op);
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "read model: reading leaderboards to reconcile failed; retrying");
                if stopping_since.is_some_and(|t| t.elapsed() > FINAL_WRITE_TIMEOUT) {
                    return Err(Halt::OutOfTime);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
    let part = projector.part;
    let writes = ops
        .into_iter()
        .enumerate()
        .filter(|&(bucket, _)| writes_bucket(part, bucket))
        .map(|(bucket, mut ops)| {
            let mut conn = conn.clone();
            async move {
                group_by_key(&mut ops);
                write_bucket(
                    &mut conn,
                    (ledger, layout, bucket),
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
        saturated += written?;
    }
    if part.0 == 0 {
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
    progress.set(part.0, to);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
