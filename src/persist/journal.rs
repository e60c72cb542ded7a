//! Group commit: the committer task drains the engine's log at consistent cuts and
//! appends each cut to a [`Journal`] in one call; the commit watermark (the last
//! sequence number known durable) releases `durable` acks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use crate::engine::{Engine, LogEntry};
use crate::telemetry;

/// A failed journal operation. The committer keeps a batch whose append failed and
/// retries it (never dropped), unless the error says the process was fenced.
///
/// A Redis error is classified once, where it is received ([`From<redis::RedisError>`]):
/// the lease script's `FENCED` replies and `XADD`'s "equal or smaller" refusal get kinds
/// of their own. Every text starts with `journal: ` (logs and tests read them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Another process holds the ledger, or wrote its journal (`RedisJournal::acquire`):
    /// retrying cannot help. The text says who and how.
    #[error("journal: {0}")]
    Fenced(String),
    /// `XADD` refused the entry id as not greater than the stream's top: an earlier
    /// attempt of this very append may have run (its reply was lost).
    #[error("journal: redis: {0}")]
    AlreadyAppended(redis::RedisError),
    /// A Redis command failed (connection, timeout, an error reply).
    #[error("journal: redis: {0}")]
    Redis(redis::RedisError),
    /// A Redis reply of another shape than the command's.
    #[error("journal: {0}")]
    Reply(String),
    /// A journal entry that cannot be read (format, version, an event no engine holds).
    #[error("journal: {0}")]
    Format(String),
    /// What the ledger recorded in Redis refuses this start or this replay (its partition
    /// map, a missing or altered economy document, the read model's layout).
    #[error("journal: {0}")]
    Ledger(String),
    /// `WAIT` returned before enough replicas acknowledged the append.
    #[error("journal: WAIT: {acked} of {replicas} replicas acknowledged within {timeout_ms} ms")]
    ReplicasShort {
        acked: i64,
        replicas: u32,
        timeout_ms: u64,
    },
    /// A settlement inbox over its bound: its node is not draining it.
    #[error("journal: the inbox {key} holds {len} entries (its node is not draining it)")]
    InboxFull { key: String, len: u64 },
    /// The committer is gone (shutdown finished).
    #[error("journal: committer stopped")]
    CommitterStopped,
    /// The process is shutting down.
    #[error("journal: shutting down")]
    ShuttingDown,
    /// The memory journal was set to fail (tests of the retry path).
    #[error("journal: memory journal set to fail")]
    MemoryFailing,
    /// A helper process (the snapshot replica) failed.
    #[error("journal: {0}")]
    Process(String),
}

impl JournalError {
    /// Another process holds the ledger: retrying cannot help (`RedisJournal::acquire`).
    pub fn is_fenced(&self) -> bool {
        matches!(self, JournalError::Fenced(_))
    }
}

impl From<redis::RedisError> for JournalError {
    /// The one place a Redis error is classified: the lease script refuses with the
    /// error code `FENCED`; `XADD` (alone or in the script) refuses an id not above the
    /// stream's top with a plain `ERR` whose text is all that tells it apart.
    fn from(e: redis::RedisError) -> JournalError {
        if e.code() == Some("FENCED") {
            JournalError::Fenced(format!("redis: {e}"))
        } else if e.to_string().contains("equal or smaller") {
            JournalError::AlreadyAppended(e)
        } else {
            JournalError::Redis(e)
        }
    }
}

/// Durable storage for committed batches.
///
/// `append` gets a gap-free run of log entries, strictly after everything appended
/// before; it returns once the run is durable. It may be called again with the same run
/// after an error (the first call may have succeeded): implementations make that
/// idempotent by sequence number.
pub trait Journal: Send + Sync + 'static {
    fn append<'a>(&'a self, entries: &'a [LogEntry]) -> BoxFuture<'a, Result<(), JournalError>>;

    /// Drops runs that end at or before `seq` (covered by every kept snapshot).
    /// Default: keep everything.
    fn trim(&self, seq: u64) -> BoxFuture<'_, Result<u64, JournalError>> {
        let _ = seq;
        Box::pin(async { Ok(0) })
    }
}

/// The in-memory journal of `serve` without Redis: nothing survives a restart. It counts
/// what it was given and can be made to fail (for tests of the retry path).
#[derive(Debug, Default)]
pub struct MemoryJournal {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub last_seq: AtomicU64,
    pub failing: AtomicBool,
}

impl Journal for MemoryJournal {
    fn append<'a>(&'a self, entries: &'a [LogEntry]) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            if self.failing.load(Ordering::Acquire) {
                return Err(JournalError::MemoryFailing);
            }
            let last = entries.last().map_or(0, |e| e.seq);
            // Idempotent by sequence number: a run already appended is not counted twice.
            if last > self.last_seq.load(Ordering::Acquire) {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.events
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                self.last_seq.store(last, Ordering::Release);
            }
            Ok(())
        })
    }
}

/// How often an idle committer looks for events logged without
/// [`CommitHandle::applied`] (every ingest path calls it; this is a safety net).
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Backoff between retries of a failed append: doubling from 1 ms, at most 1 s.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(1);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the protocol side sees of the committer.
#[derive(Clone)]
pub struct CommitHandle {
    watermark: watch::Receiver<u64>,
    wake: Arc<Notify>,
    healthy: Arc<AtomicBool>,
    engine: Arc<Engine>,
    pending_events_max: u64,
}

impl CommitHandle {
    /// The last sequence number known durable.
    pub fn watermark(&self) -> u64 {
        *self.watermark.borrow()
    }

    /// Events applied but not yet durable.
    pub fn pending_events(&self) -> u64 {
        self.engine.last_seq().saturating_sub(self.watermark())
    }

    /// False when the bounded pending queue is full: refuse new events ("unavailable").
    pub fn accepting(&self) -> bool {
        self.pending_events() < self.pending_events_max
    }

    /// True while the last commit attempt succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Tells the committer that events were applied: it commits them as soon as the
    /// commit in progress (if any) has finished and `commit.interval_ms` has passed since
    /// it started, or at once when `commit.events_max` are waiting.
    pub fn applied(&self) {
        self.wake.notify_one();
    }

    /// Follows the commit watermark.
    pub fn watermark_receiver(&self) -> watch::Receiver<u64> {
        self.watermark.clone()
    }

    /// Waits until every event up to `seq` is durable. Errs only if the committer is
    /// gone (shutdown finished).
    pub async fn durable(&self, seq: u64) -> Result<(), JournalError> {
        let mut rx = self.watermark.clone();
        rx.wait_for(|w| *w >= seq)
            .await
            .map(|_| ())
            .map_err(|_| JournalError::CommitterStopped)
    }
}

/// The committer's bounds.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    /// Commits start at least this far apart (an applied event waits for the commit in
    /// progress, if any, and for this spacing).
    pub interval: Duration,
    /// ... unless this many events wait.
    pub events_max: u64,
    /// Beyond this many uncommitted events, ingestion is refused.
    pub pending_events_max: u64,
    /// How long the final commit at shutdown keeps retrying a failing journal.
    pub final_commit_timeout: Duration,
    /// Periodic snapshots by fork, if any (`snapshot.method = "replica"` takes them
    /// elsewhere: `persist::replica`).
    pub snapshots: Option<SnapshotPolicy>,
}

/// When and where the committer takes snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    pub dir: std::path::PathBuf,
    /// `None`: not by time.
    pub interval: Option<Duration>,
    /// `None`: not by count.
    pub events: Option<u64>,
    pub keep: usize,
    /// Trim the journal up to the oldest kept snapshot after each snapshot.
    pub trim_journal: bool,
    /// The forked child copies the resident pages first (`snapshot::fork_snapshot`).
    pub copy_pages_in_child: bool,
    /// Never trim past any of these sequence numbers: the positions of the Redis read
    /// model, the change stream and the durable history, which catch up from the
    /// journal (each the last sequence number its writer holds as written).
    pub trim_floors: Vec<Arc<AtomicU64>>,
}

/// Starts the committer task. It runs until `stop` turns true, then makes a final commit
/// of everything applied. `on_commit` sees every committed run (the live feed uses it).
/// The task returns false if the final commit failed.
pub fn spawn_committer(
    engine: Arc<Engine>,
    journal: Arc<dyn Journal>,
    config: CommitterConfig,
    stop: watch::Receiver<bool>,
    on_commit: impl Fn(&Arc<Vec<LogEntry>>) + Send + 'static,
) -> (CommitHandle, tokio::task::JoinHandle<bool>) {
    let CommitterConfig {
        interval,
        events_max,
        pending_events_max,
        final_commit_timeout,
        snapshots,
    } = config;
    let initial = engine.last_seq();
    let (tx, rx) = watch::channel(initial);
    let wake = Arc::new(Notify::new());
    let healthy = Arc::new(AtomicBool::new(true));
    let handle = CommitHandle {
        watermark: rx,
        wake: wake.clone(),
        healthy: healthy.clone(),
        engine: engine.clone(),
        pending_events_max,
    };
    let task = tokio::spawn(async move {
        let mut stop = stop;
        let mut last_snapshot = (Instant::now(), engine.last_seq());
        let mut writing: Option<tokio::task::JoinHandle<Option<u64>>> = None;
        let mut last_start: Option<tokio::time::Instant> = None;
        loop {
            if !*stop.borrow() {
                let pending = || engine.last_seq().saturating_sub(*tx.borrow());
                // Wait for applied events (`CommitHandle::applied`); a timer also ends
                // the wait, for anything logged without saying so.
                if pending() == 0 {
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(interval.max(IDLE_CHECK)) => {}
                        _ = stop.changed() => {}
                    }
                }
                // Commits start at least `interval` apart (the events applied meanwhile
                // join this one), unless `events_max` already wait.
                let next = last_start.map_or_else(tokio::time::Instant::now, |s| s + interval);
                while !*stop.borrow()
                    && tokio::time::Instant::now() < next
                    && pending() < events_max
                {
                    tokio::select! {
                        _ = tokio::time::sleep_until(next) => {}
                        _ = wake.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            let started = tokio::time::Instant::now();
            let stopping = *stop.borrow();
            let entries = engine.drain_log();
            if !entries.is_empty() {
                last_start = Some(started);
                let deadline = stopping.then(|| Instant::now() + final_commit_timeout);
                if !commit(&*journal, &entries, &healthy, deadline).await {
                    return false;
                }
                let last = entries.last().expect("non-empty").seq;
                tx.send_replace(last);
                on_commit(&Arc::new(entries));
            }
            if let Some(policy) = &snapshots {
                if writing.as_ref().is_some_and(|w| w.is_finished()) {
                    let oldest_kept = writing.take().expect("some").await.ok().flatten();
                    trim_to_snapshots(&*journal, policy, oldest_kept).await;
                }
                let watermark = *tx.borrow();
                let due = policy
                    .interval
                    .is_some_and(|i| last_snapshot.0.elapsed() >= i)
                    || policy
                        .events
                        .is_some_and(|n| watermark.saturating_sub(last_snapshot.1) >= n);
                let idle = writing.as_ref().is_none_or(|w| w.is_finished());
                if due && idle && !stopping && watermark > last_snapshot.1 {
                    // A cut at a commit boundary: a forked child holds the state at the
                    // cut; the cut's log is committed before the child may publish.
                    let started = Instant::now();
                    let (forked, log) = crate::persist::snapshot::fork_snapshot(
                        &engine,
                        &policy.dir,
                        policy.keep,
                        policy.copy_pages_in_child,
                    );
                    metrics::histogram!(telemetry::SNAPSHOT_CUT_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    if !log.is_empty() {
                        if !commit(&*journal, &log, &healthy, None).await {
                            if let Ok(forked) = forked {
                                tokio::task::spawn_blocking(move || forked.abandon());
                            }
                            return false;
                        }
                        tx.send_replace(log.last().expect("non-empty").seq);
                        on_commit(&Arc::new(log));
                    }
                    last_snapshot = (Instant::now(), *tx.borrow());
                    let forked = match forked {
                        Ok(forked) => forked,
                        Err(e) => {
                            metrics::counter!(telemetry::SNAPSHOT_FAILURES_TOTAL).increment(1);
                            tracing::error!(error = %e, "snapshot failed");
                            continue;
                        }
                    };
                    let dir = policy.dir.clone();
                    writing = Some(tokio::task::spawn_blocking(move || {
                        let last_seq = forked.last_seq;
                        match forked.publish() {
                            Ok(path) => {
                                metrics::histogram!(telemetry::SNAPSHOT_WRITE_SECONDS)
                                    .record(started.elapsed().as_secs_f64());
                                tracing::info!(path = %dir.join(path).display(), last_seq,
                                    seconds = started.elapsed().as_secs_f64(), "snapshot written");
                                crate::persist::snapshot::oldest_kept(&dir)
                            }
                            Err(e) => {
                                metrics::counter!(telemetry::SNAPSHOT_FAILURES_TOTAL).increment(1);
                                tracing::error!(error = %e, "snapshot failed");
                                None
                            }
                        }
                    }));
                }
            }
            metrics::gauge!(telemetry::COMMIT_PENDING_EVENTS)
                .set(engine.last_seq().saturating_sub(*tx.borrow()) as f64);
            if stopping && engine.last_seq() == *tx.borrow() {
                // A snapshot still being written is finished, and the journal trimmed to
                // it, as if the server had run on.
                if let (Some(w), Some(policy)) = (writing.take(), &snapshots) {
                    let oldest_kept = w.await.ok().flatten();
                    trim_to_snapshots(&*journal, policy, oldest_kept).await;
                }
                return true;
            }
        }
    });
    (handle, task)
}

/// Trims the journal up to the oldest kept snapshot (`oldest_kept`, what the last
/// write found on disk), never past a follower's position (`trim_floors`: the read
/// model's, the change stream's, the history's).
pub(crate) async fn trim_to_snapshots(
    journal: &dyn Journal,
    policy: &SnapshotPolicy,
    oldest_kept: Option<u64>,
) {
    let floor = policy
        .trim_floors
        .iter()
        .map(|f| f.load(Ordering::Acquire))
        .min()
        .unwrap_or(u64::MAX);
    let Some(seq) = oldest_kept.map(|s| s.min(floor)) else {
        return;
    };
    if !policy.trim_journal {
        return;
    }
    match journal.trim(seq).await {
        Ok(n) => tracing::info!(up_to_seq = seq, entries = n, "journal trimmed"),
        Err(e) => tracing::warn!(error = %e, "journal trim failed; the next snapshot retries"),
    }
}

/// Appends one run, retrying with bounded backoff until it succeeds (or `deadline`).
async fn commit(
    journal: &dyn Journal,
    entries: &[LogEntry],
    healthy: &AtomicBool,
    deadline: Option<Instant>,
) -> bool {
    let mut backoff = RETRY_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match journal.append(entries).await {
            Ok(()) => {
                healthy.store(true, Ordering::Release);
                metrics::histogram!(telemetry::COMMIT_DURATION_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!(telemetry::COMMIT_BATCH_EVENTS).record(entries.len() as f64);
                metrics::counter!(telemetry::COMMITS_TOTAL).increment(1);
                return true;
            }
            Err(e) if e.is_fenced() => {
                healthy.store(false, Ordering::Release);
                metrics::counter!(telemetry::COMMIT_FAILURES_TOTAL).increment(1);
                tracing::error!(error = %e, events = entries.len(), "commit fenced: these events are not durable and are never acknowledged; stopping");
                return false;
            }
            Err(e) => {
                healthy.store(false, Ordering::Release);
                metrics::counter!(telemetry::COMMIT_FAILURES_TOTAL).increment(1);
                tracing::warn!(error = %e, events = entries.len(), retry_in_ms = backoff.as_millis() as u64, "commit failed; retrying");
                if deadline.is_some_and(|d| Instant::now() + backoff > d) {
                    tracing::error!(events = entries.len(), "final commit failed; giving up");
                    return false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::economy::Economy;
    use crate::engine::{EngineConfig, Event, Recharge, Stamp};

    const LONG: Duration = Duration::from_secs(60);

    /// A committer over a memory journal with the given interval and `events_max`.
    fn committer(
        interval: Duration,
        events_max: u64,
    ) -> (
        Arc<Engine>,
        Arc<MemoryJournal>,
        CommitHandle,
        watch::Sender<bool>,
    ) {
        let engine = Arc::new(Engine::new(Economy::embedded(), EngineConfig::default()).unwrap());
        let journal = Arc::new(MemoryJournal::default());
        let (stop_tx, stop) = watch::channel(false);
        let config = CommitterConfig {
            interval,
            events_max,
            pending_events_max: 1_000_000,
            final_commit_timeout: Duration::from_secs(1),
            snapshots: None,
        };
        let (handle, _task) =
            spawn_committer(engine.clone(), journal.clone(), config, stop, |_| {});
        (engine, journal, handle, stop_tx)
    }

    /// Applies `n` recharges (ids from `first`) as the service does, and returns the
    /// last sequence number.
    fn apply(engine: &Engine, handle: &CommitHandle, first: u128, n: u128) -> u64 {
        let economy = Economy::embedded();
        let events: Vec<Event> = (first..first + n)
            .map(|id| Event::Recharge(Recharge::of_package(&economy, id, 7, "coins_7000").unwrap()))
            .collect();
        engine.apply_batch(&events, Stamp(1));
        handle.applied();
        engine.last_seq()
    }

    #[tokio::test(start_paused = true)]
    async fn applied_events_are_committed_at_once_not_after_the_interval() {
        let (engine, journal, handle, _stop) = committer(LONG, 65_536);
        let seq = apply(&engine, &handle, 1, 3);
        let started = tokio::time::Instant::now();
        handle.durable(seq).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1),
            "waited {:?} for the commit",
            started.elapsed()
        );
        assert_eq!(journal.events.load(Ordering::Acquire), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn commits_start_the_interval_apart_and_what_waits_joins_the_next() {
        let interval = Duration::from_millis(100);
        let (engine, journal, handle, _stop) = committer(interval, 65_536);
        let started = tokio::time::Instant::now();
        let first = apply(&engine, &handle, 1, 1);
        handle.durable(first).await.unwrap();
        // Two batches applied right after the first commit: one commit, an interval
        // after the first one started.
        apply(&engine, &handle, 2, 1);
        let last = apply(&engine, &handle, 3, 1);
        handle.durable(last).await.unwrap();
        assert_eq!(started.elapsed(), interval);
        assert_eq!(journal.batches.load(Ordering::Acquire), 2);
        assert_eq!(journal.events.load(Ordering::Acquire), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn events_max_waiting_are_committed_without_waiting_out_the_interval() {
        let (engine, journal, handle, _stop) = committer(LONG, 4);
        let first = apply(&engine, &handle, 1, 1);
        handle.durable(first).await.unwrap();
        let started = tokio::time::Instant::now();
        let last = apply(&engine, &handle, 2, 4);
        handle.durable(last).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(1));
        assert_eq!(journal.batches.load(Ordering::Acquire), 2);
    }
}
