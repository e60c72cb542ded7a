//! Following committed runs off the ack path: what every writer of derived data shares
//! (the read model's projectors, the change stream, the durable history). A follower
//! takes the runs the committer offers (a bounded queue; a run that does not fit is
//! read back from the journal), writes them in sequence order and idempotently by
//! sequence number, retries a failed write with bounded backoff, exports its lag and
//! what it wrote, and publishes its position, which the journal trim stays behind.
//!
//! [`spawn_follower`] runs a [`Sink`] (the change stream's or the history's) on a thread
//! of its own; the read model's projectors have their own loop (windows coalesced per
//! key, buckets) and share the constants and helpers here.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::engine::{LogEntry, Stamp};
use crate::persist::journal::JournalError;
use crate::persist::redis::{RedisConn, RedisJournal};
use crate::persist::thread::on_own_thread;

/// Journal runs read per request when a follower catches up from the journal.
pub(crate) const JOURNAL_RUNS_PER_READ: usize = 4;
/// How long a follower keeps writing at shutdown; the rest is caught up at the next
/// start (from the journal, which is not trimmed past it).
pub(crate) const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);
pub(crate) const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle follower looks at the watermark without being woken.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// Milliseconds since `stamp` (0 if in the future).
pub(crate) fn lag_of(stamp: Stamp) -> u64 {
    crate::clock::now().0.saturating_sub(stamp.0)
}

/// A follower's metric names (`telemetry`).
#[derive(Debug, Clone, Copy)]
pub struct SinkMetrics {
    /// Gauge: the age of the oldest committed event not yet written, seconds.
    pub lag_seconds: &'static str,
    /// Counter: events written.
    pub events_total: &'static str,
    /// Counter: failed writes (each retried).
    pub write_failures_total: &'static str,
    /// Counter: events skipped because the journal no longer held them.
    pub skipped_total: &'static str,
}

/// Where a follower writes: idempotent by sequence number, so a batch written twice
/// (a retry whose first attempt ran, a restart after a crash) is written once.
pub trait Sink: Send + 'static {
    /// Names it in logs and its thread.
    fn name(&self) -> &'static str;

    fn metrics(&self) -> SinkMetrics;

    /// The last sequence number the target holds, read from Redis at the start.
    /// `committed` is what was committed when the node started: a target that does not
    /// exist yet is created to begin after it (it holds the events committed from its
    /// first start).
    fn resume(
        &mut self,
        conn: &mut RedisConn,
        committed: u64,
    ) -> impl Future<Output = Result<u64, JournalError>> + Send;

    /// Moves the target's position up to `seq` (the events up to it are skipped: the
    /// journal no longer holds them), so that the next write, after `seq`, is taken.
    fn skip_to(
        &mut self,
        conn: &mut RedisConn,
        seq: u64,
    ) -> impl Future<Output = Result<(), JournalError>> + Send;

    /// Writes `entries` (consecutive sequence numbers, the first right after the last
    /// one written). `Ok(Some(held))`: the target holds less than the follower wrote
    /// (its Redis lost data): nothing was written, go on after `held`.
    fn write(
        &mut self,
        conn: &mut RedisConn,
        entries: &[LogEntry],
    ) -> impl Future<Output = Result<Option<u64>, JournalError>> + Send;
}

/// Bounds of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerConfig {
    pub queue_runs_max: usize,
    pub entries_per_write_max: usize,
    pub nice: i32,
}

/// What the committer hands a follower.
#[derive(Clone)]
pub struct FollowerHandle {
    runs: mpsc::Sender<Arc<Vec<LogEntry>>>,
}

impl FollowerHandle {
    /// Offers a committed run. When the queue is full the run is not queued: the
    /// follower reads it back from the journal.
    pub fn committed(&self, run: &Arc<Vec<LogEntry>>) {
        let _ = self.runs.try_send(run.clone());
    }
}

/// Starts `sink`'s follower on a thread of its own (a single-threaded runtime at nice
/// `config.nice`, as the read model's projectors): it follows `watermark` (the last
/// committed seq) until `stop` turns true, then writes what is committed (bounded by
/// [`FINAL_WRITE_TIMEOUT`]) and returns. A target that does not exist yet begins after
/// the watermark at the call (call it before serving). `written` is the last sequence
/// number the target holds, published as it advances (0 until the start has read it:
/// the journal trim waits).
pub fn spawn_follower<S: Sink>(
    sink: S,
    journal: RedisJournal,
    config: FollowerConfig,
    (watermark, stop): (watch::Receiver<u64>, watch::Receiver<bool>),
    written: Arc<AtomicU64>,
) -> std::io::Result<(FollowerHandle, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(config.queue_runs_max);
    written.store(0, Ordering::Release);
    let name = format!("gs-{}", sink.name());
    // Read now, at spawn (before the listeners serve): a target that does not exist yet
    // begins here. Read later, on the follower's thread, it could be past events
    // committed meanwhile, which the new target would then never hold (found by the
    // change stream test: a user's first recharges were missing from the history).
    let begin = *watermark.borrow();
    let task = follow(
        sink,
        journal,
        config,
        rx,
        (watermark, stop),
        (begin, written),
    );
    let ended = on_own_thread(name, config.nice, task)?;
    let task = tokio::spawn(async move {
        // (An error: the thread ended without saying so, i.e. it panicked.)
        let _ = ended.await;
    });
    Ok((FollowerHandle { runs: tx }, task))
}

/// A queue of committed runs, each with how far into it the follower has taken.
type RunQueue = VecDeque<(Arc<Vec<LogEntry>>, usize)>;

/// One follower's life.
async fn follow<S: Sink>(
    mut sink: S,
    journal: RedisJournal,
    config: FollowerConfig,
    mut rx: mpsc::Receiver<Arc<Vec<LogEntry>>>,
    (mut watermark, mut stop): (watch::Receiver<u64>, watch::Receiver<bool>),
    (begin, written): (u64, Arc<AtomicU64>),
) {
    let names = sink.metrics();
    let name = sink.name();
    let Some((mut conn, reader)) = connect(&journal, name, &mut stop).await else {
        return;
    };
    let mut backoff = RETRY_BACKOFF_MIN;
    let mut next = loop {
        match sink.resume(&mut conn, begin).await {
            Ok(held) => break held + 1,
            Err(e) => {
                tracing::warn!(sink = name, error = %e, "cannot read where the target is; retrying");
                if *stop.borrow() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    };
    written.store(next - 1, Ordering::Release);
    tracing::info!(sink = name, next, "following committed runs");
    let mut queue: RunQueue = VecDeque::new();
    let mut stopping_since: Option<Instant> = None;
    loop {
        if stopping_since.is_none() && *stop.borrow() {
            stopping_since = Some(Instant::now());
        }
        if stopping_since.is_some_and(|t| t.elapsed() > FINAL_WRITE_TIMEOUT) {
            tracing::warn!(
                sink = name,
                written = next - 1,
                "shutdown timeout; the next start catches up from the journal"
            );
            return;
        }
        while let Ok(run) = rx.try_recv() {
            queue.push_back((run, 0));
        }
        let committed = *watermark.borrow();
        let batch = take(&mut queue, next, committed, config.entries_per_write_max);
        if batch.is_empty() && next <= committed {
            match read_back(&reader, next, names, name).await {
                Ok((runs, from)) => {
                    if from > next {
                        if let Err(e) = sink.skip_to(&mut conn, from - 1).await {
                            tracing::warn!(sink = name, error = %e, "cannot skip; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                            continue;
                        }
                        next = from;
                        written.store(next - 1, Ordering::Release);
                    }
                    queue.extend(runs.into_iter().map(|r| (Arc::new(r), 0)));
                    if !queue.is_empty() {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(sink = name, error = %e, "journal read failed"),
            }
        }
        if let Some(first) = batch.first() {
            metrics::gauge!(names.lag_seconds).set(lag_of(first.stamp) as f64 / 1000.0);
            let result = sink.write(&mut conn, &batch).await;
            match result {
                Ok(None) => {
                    next = batch.last().map_or(next, |e| e.seq + 1);
                    written.store(next - 1, Ordering::Release);
                    metrics::counter!(names.events_total).increment(batch.len() as u64);
                    backoff = RETRY_BACKOFF_MIN;
                }
                Ok(Some(held)) => {
                    tracing::error!(
                        sink = name,
                        held,
                        expected = next - 1,
                        "the target holds less than was written (its Redis lost data?); writing again from the journal after what it holds"
                    );
                    next = held + 1;
                    written.store(held, Ordering::Release);
                    queue.clear();
                }
                Err(e) => {
                    metrics::counter!(names.write_failures_total).increment(1);
                    tracing::warn!(sink = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "write failed; retrying");
                    // The batch goes back in front: the next pass writes it again.
                    queue.push_front((Arc::new(batch), 0));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
            continue;
        }
        if next > committed {
            metrics::gauge!(names.lag_seconds).set(0.0);
            if stopping_since.is_some() {
                return;
            }
        }
        tokio::select! {
            run = rx.recv() => {
                if let Some(run) = run {
                    queue.push_back((run, 0));
                }
            }
            changed = watermark.changed() => {
                if changed.is_err() {
                    // The committer has ended (shutdown): only `stop` is left to wait for.
                    tokio::time::sleep(IDLE_WAKE).await;
                }
            }
            _ = tokio::time::sleep(IDLE_WAKE) => {}
            _ = stop.changed(), if stopping_since.is_none() => {}
        }
    }
}

/// The follower's connection to the target, and one for journal read-backs of its own;
/// retried until both are made (`None`: stopped meanwhile).
async fn connect(
    journal: &RedisJournal,
    name: &str,
    stop: &mut watch::Receiver<bool>,
) -> Option<(RedisConn, RedisJournal)> {
    loop {
        let connected = async {
            let conn = journal.connect_again().await?;
            Ok::<_, JournalError>((conn, journal.reader().await?))
        };
        match connected.await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(sink = name, error = %e, "cannot connect; retrying");
                if *stop.borrow() {
                    return None;
                }
                tokio::time::sleep(RETRY_BACKOFF_MAX).await;
            }
        }
    }
}

/// Up to `max` entries from `next` on (at most `committed`), consecutive, taken from the
/// queue; a gap before a run (earlier runs were not queued) empties the queue, so the
/// journal fills it.
fn take(queue: &mut RunQueue, next: u64, committed: u64, max: usize) -> Vec<LogEntry> {
    let mut batch: Vec<LogEntry> = Vec::new();
    let mut want = next;
    while batch.len() < max && want <= committed {
        let Some((run, at)) = queue.front_mut() else {
            break;
        };
        match run.get(*at) {
            None => {
                queue.pop_front();
            }
            Some(e) if e.seq < want => *at += 1,
            Some(e) if e.seq == want => {
                batch.push(e.clone());
                want += 1;
                *at += 1;
            }
            Some(_) => {
                queue.clear();
            }
        }
    }
    batch
}

/// Reads committed runs from `next` on back from the journal; with where to go on from:
/// `next`, or — when the journal was trimmed past it (only when the target lost data,
/// or was behind the trim when it was switched on again) — the journal's first entry,
/// the events in between skipped (logged and counted).
async fn read_back(
    reader: &RedisJournal,
    next: u64,
    names: SinkMetrics,
    name: &str,
) -> Result<(Vec<Vec<LogEntry>>, u64), JournalError> {
    let runs = reader.runs_from(next, JOURNAL_RUNS_PER_READ).await?;
    let first = runs.iter().flat_map(|r| r.first()).map(|e| e.seq).next();
    match first {
        Some(first) if first > next => {
            metrics::counter!(names.skipped_total).increment(first - next);
            tracing::error!(
                sink = name,
                from = next,
                to = first - 1,
                "the journal no longer holds these events: they are skipped (the target lost data?)"
            );
            Ok((runs, first))
        }
        _ => Ok((runs, next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EventId, Outcome, Status};

    fn run(seqs: std::ops::RangeInclusive<u64>) -> Arc<Vec<LogEntry>> {
        Arc::new(
            seqs.map(|seq| LogEntry {
                seq,
                stamp: Stamp(seq),
                event: crate::engine::Event::Economy(crate::engine::EconomyChange {
                    version: 1,
                    digest: EventId(u128::from(seq)).0 as u64,
                }),
                outcome: Outcome::new(seq, Status::Accepted(crate::engine::Effect::Stored), false),
                totals: None,
                reversed: None,
            })
            .collect(),
        )
    }

    fn seqs(batch: &[LogEntry]) -> Vec<u64> {
        batch.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn take_is_consecutive_bounded_by_max_and_the_watermark_and_a_gap_empties_the_queue() {
        let mut q: RunQueue = [(run(1..=3), 0), (run(4..=6), 0)].into_iter().collect();
        assert_eq!(seqs(&take(&mut q, 2, 100, 3)), [2, 3, 4]);
        assert_eq!(seqs(&take(&mut q, 5, 5, 10)), [5], "not past the watermark");
        assert_eq!(seqs(&take(&mut q, 6, 100, 10)), [6]);
        assert!(q.is_empty() || take(&mut q, 7, 100, 10).is_empty());
        let mut q: RunQueue = [(run(1..=2), 0), (run(5..=6), 0)].into_iter().collect();
        assert_eq!(seqs(&take(&mut q, 1, 100, 10)), [1, 2]);
        assert!(
            q.is_empty(),
            "3 and 4 were not queued: the journal has them"
        );
    }
}
