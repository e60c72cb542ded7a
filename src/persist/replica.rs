//! Snapshots without a fork (`snapshot.method = "replica"`).
//!
//! A second process, the replica (`giftstream snapshot-replica`, started and watched by
//! `serve`), holds a second [`Engine`]. It starts from the newest snapshot on disk, then
//! reads the journal after it and keeps reading it as it grows, replaying every committed
//! run. When a snapshot is due it writes its own state; the server then trims the journal
//! as after a forked snapshot. It runs at idle priority (`SCHED_IDLE`: any other runnable
//! task goes first).
//!
//! So the serving engine never stops, forks or has its pages write-protected for a
//! snapshot: with the fork, the copy-on-write faults after each fork of a 1M-wallet state
//! added hundreds of milliseconds to the ack p99 (BENCHMARKS "Snapshots at 1M wallets").
//! It is a process, not a thread, so that it shares no lock with the server: no
//! allocator arena, no address-space lock, no queue. An idle-priority thread holding one
//! of those while it waits for CPU stalls the serving threads behind it (the first,
//! thread-based attempt in BENCHMARKS "Snapshots from a replica"). What the replica costs instead:
//! - a second copy of the state in memory, always (the fork needs one while it writes);
//! - replaying every committed event once more, and reading it from Redis, on otherwise
//!   idle CPU. Where there is none, the replica falls behind: snapshots are then older,
//!   the journal is kept from the oldest kept snapshot (nothing is lost; Redis holds
//!   more) and `giftstream_snapshot_replica_lag_events` shows by how much. Beyond twice
//!   `snapshot.events` (at least 2M) behind, it catches up at normal priority, like the
//!   fork's child, so that the journal stays bounded; it goes back to idle priority once
//!   within a quarter of that.
//!
//! A snapshot can only hold committed events: the replica reads nothing else. Replay
//! checks every outcome against the journaled one, so each snapshot the replica writes is
//! also a check that the journal reproduces the served state; a mismatch stops the
//! replica (logged, `giftstream_snapshot_failures_total`), and the server starts it again
//! after a backoff.
//!
//! The server hands the replica its configuration and economy as one JSON line on the
//! replica's stdin and keeps stdin open: its end (the server stopping or dying) stops
//! the replica. The replica reports on its stdout, one [`Report`] per line; it logs on
//! stderr.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::config::Config;
use crate::economy::{Economy, EconomyFile};
use crate::engine::{Engine, LogEntry};
use crate::persist::journal::{JournalError, SnapshotPolicy, trim_to_snapshots};
use crate::persist::redis::RedisJournal;
use crate::persist::snapshot;
use crate::telemetry;

/// The least lag bound (events) when `snapshot.events` is smaller or 0 (time only).
const CATCH_UP_LAG_MIN: u64 = 1_000_000;
/// Journal runs per read.
const RUNS_PER_READ: usize = 64;
/// How long the replica waits before it reads the journal again once it found nothing
/// new (it is then caught up).
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// Backoff between failed journal reads (Redis unavailable): doubling up to this.
const READ_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The replica reports its position (and reads the journal's head) this often.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// A replica that exited is started again after this, doubling up to
/// [`RESTART_BACKOFF_MAX`] while it keeps failing.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// At shutdown, how long the server waits for the replica to finish a snapshot it is
/// writing before it kills it (the temp file is then left unpublished).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server hands the replica (one JSON line on its stdin).
#[derive(Serialize, Deserialize)]
pub struct Handoff {
    pub config: Config,
    pub economy: EconomyFile,
    /// The ledger's shard count (the serving engine's; it may differ from the file's).
    pub shards: usize,
}

/// One line of the replica's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// It holds every committed event up to `seq`.
    At { seq: u64 },
    /// It wrote a snapshot holding every event up to `seq`.
    Written { seq: u64, seconds: f64 },
    /// A snapshot write failed (the next one is tried when due).
    WriteFailed { error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("replay: {0}")]
    Replay(#[from] crate::engine::ReplayError),
    #[error("{0}")]
    Engine(#[from] crate::config::ConfigError),
    #[error(
        "the journal does not continue from seq {0} (trimmed past it?): a snapshot at or after \
         the journal's first run is needed in snapshot.dir"
    )]
    Gap(u64),
    #[error("stdout: {0}")]
    Report(std::io::Error),
    #[error(transparent)]
    Journal(#[from] crate::persist::journal::JournalError),
}

// ---- the replica process ----------------------------------------------------------

/// The replica's main loop (`giftstream snapshot-replica`), until `stop` is set. Reads
/// the journal through `runtime`; reports on `out`.
pub fn follow(
    handoff: &Handoff,
    journal: &RedisJournal,
    runtime: &tokio::runtime::Runtime,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<(), ReplicaError> {
    let economy =
        Economy::from_file(handoff.economy.clone()).map_err(crate::config::ConfigError::from)?;
    let engine_config = crate::engine::EngineConfig {
        shards: handoff.shards,
        ..handoff.config.engine.clone()
    };
    let policy = &handoff.config.snapshot;
    let started = Instant::now();
    let engine = match snapshot::load_newest(&policy.dir, &economy, &engine_config)? {
        Some((_, engine)) => engine,
        None => Engine::new(economy, engine_config)?,
    };
    crate::persist::recovery::adopt_partition_map(&engine, &handoff.config)?;
    runtime.block_on(journal.assume_base_economy(&engine))?;
    tracing::info!(
        seq = engine.last_seq(),
        seconds = started.elapsed().as_secs_f64(),
        "snapshot replica loaded; following the journal"
    );
    let mut report = |r: Report| -> Result<(), ReplicaError> {
        let line = serde_json::to_string(&r).expect("a report serializes");
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(ReplicaError::Report)
    };
    let interval = (policy.interval_ms > 0).then(|| Duration::from_millis(policy.interval_ms));
    let events = (policy.events > 0).then_some(policy.events);
    let mut last_snapshot = (Instant::now(), engine.last_seq());
    let mut reported = Instant::now();
    let mut backoff = IDLE_WAIT;
    // Beyond this lag the replica takes its share of the CPU like any process, so that
    // the journal (kept from the oldest snapshot) stays bounded under a load that
    // leaves no idle CPU; back at idle priority below a quarter of it.
    let lag_max = policy.events.max(CATCH_UP_LAG_MIN) * 2;
    let mut catching_up = false;
    while !stop.load(Ordering::Acquire) {
        let from = engine.last_seq() + 1;
        match runtime.block_on(journal.runs_from(from, RUNS_PER_READ)) {
            Ok(runs) if runs.is_empty() => std::thread::sleep(IDLE_WAIT),
            Ok(runs) => {
                backoff = IDLE_WAIT;
                if runs[0].first().is_some_and(|e| e.seq > from) {
                    return Err(ReplicaError::Gap(from - 1));
                }
                for run in &runs {
                    runtime.block_on(journal.know_economies(&engine, run))?;
                    replay_after(&engine, run)?;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "snapshot replica: journal read failed");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(READ_BACKOFF_MAX);
                continue;
            }
        }
        let seq = engine.last_seq();
        if reported.elapsed() >= REPORT_EVERY {
            report(Report::At { seq })?;
            reported = Instant::now();
            // The journal's head, to bound the lag (below).
            if let Ok(head) = runtime.block_on(journal.last_seq()) {
                catching_up = catch_up(catching_up, head.saturating_sub(seq), lag_max);
            }
        }
        let due = interval.is_some_and(|i| last_snapshot.0.elapsed() >= i)
            || events.is_some_and(|n| seq.saturating_sub(last_snapshot.1) >= n);
        if due && seq > last_snapshot.1 {
            let started = Instant::now();
            // The replica's own engine: the cut stops nobody, and replay leaves no log.
            let (written, log) =
                engine.with_cut(|view| snapshot::write(&policy.dir, view, policy.keep));
            debug_assert!(log.is_empty(), "replayed events are not logged");
            match written {
                Ok((path, header)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(path = %path.display(), last_seq = header.last_seq,
                        seconds, "snapshot written by the replica");
                    report(Report::Written {
                        seq: header.last_seq,
                        seconds,
                    })?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "snapshot failed");
                    report(Report::WriteFailed {
                        error: e.to_string(),
                    })?;
                }
            }
            last_snapshot = (Instant::now(), seq);
        }
    }
    Ok(())
}

/// Replays the entries of `run` after the engine's last sequence number.
fn replay_after(engine: &Engine, run: &[LogEntry]) -> Result<(), ReplicaError> {
    let last = engine.last_seq();
    let start = run.partition_point(|e| e.seq <= last);
    if start < run.len() {
        engine.replay(&run[start..])?;
    }
    Ok(())
}

/// Whether the replica should be catching up at normal priority, given its lag: from
/// over `lag_max` until within a quarter of it.
fn catching_up_at(catching_up: bool, lag: u64, lag_max: u64) -> bool {
    if catching_up {
        lag > lag_max / 4
    } else {
        lag > lag_max
    }
}

/// [`catching_up_at`], and the priority changed to match.
fn catch_up(catching_up: bool, lag: u64, lag_max: u64) -> bool {
    let now = catching_up_at(catching_up, lag, lag_max);
    if now != catching_up {
        if now {
            tracing::warn!(
                lag,
                lag_max,
                "snapshot replica behind: catching up at normal priority"
            );
        } else {
            tracing::info!(lag, "snapshot replica caught up: back at idle priority");
        }
        set_priority(!now);
    }
    now
}

/// Puts this process's calling thread (and the threads it starts after) on
/// `SCHED_IDLE`: it runs only on CPU nothing else wants. Best effort: where it is
/// refused, a warning says so and the replica runs at normal priority.
pub fn idle_priority() {
    set_priority(true);
}

fn set_priority(idle: bool) {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        // SAFETY: pid 0 is the calling thread; `param` is a valid parameter block.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), idle,
                "snapshot replica: scheduling policy refused");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = idle;
}

/// Reads the handoff line from stdin, then watches stdin on a thread of its own: its
/// end sets the returned flag.
pub fn read_handoff() -> std::io::Result<(Handoff, Arc<AtomicBool>)> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let handoff: Handoff = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("replica-stdin".to_owned())
        .spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
            flag.store(true, Ordering::Release);
        })?;
    Ok((handoff, stop))
}

// ---- the server's side ------------------------------------------------------------

/// Starts the replica process and keeps it running until `closing` turns true: reads
/// its reports (the lag gauge, the write histogram), trims the journal after each
/// snapshot it writes (never past `policy.trim_floors`), and starts it again, after a
/// backoff, when it exits. At shutdown it closes the replica's stdin and waits for it.
pub async fn supervise(
    handoff: Handoff,
    exe: PathBuf,
    journal: RedisJournal,
    policy: SnapshotPolicy,
    watermark: watch::Receiver<u64>,
    mut closing: watch::Receiver<bool>,
) {
    let line = serde_json::to_string(&handoff).expect("the handoff serializes") + "\n";
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match run_once(&line, &exe, &journal, &policy, &watermark, &mut closing).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!(telemetry::SNAPSHOT_FAILURES_TOTAL).increment(1);
                if started.elapsed() > RESTART_BACKOFF_MAX {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::error!(error = %e, restart_in_s = backoff.as_secs(),
                    "snapshot replica stopped: no snapshots until it runs again");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = closed(&mut closing) => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// One replica process's life: `Ok` once it stopped because the server is closing.
async fn run_once(
    handoff: &str,
    exe: &std::path::Path,
    journal: &RedisJournal,
    policy: &SnapshotPolicy,
    watermark: &watch::Receiver<u64>,
    closing: &mut watch::Receiver<bool>,
) -> Result<(), JournalError> {
    use tokio::io::AsyncWriteExt;
    let failed = |what: &str, e: std::io::Error| JournalError::Process(format!("{what}: {e}"));
    let mut child = tokio::process::Command::new(exe)
        .arg("snapshot-replica")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failed(
                &format!("cannot start {} snapshot-replica", exe.display()),
                e,
            )
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(handoff.as_bytes())
        .await
        .map_err(|e| failed("handoff", e))?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => on_report(&line, journal, policy, watermark).await,
                Ok(None) | Err(_) => {
                    let status = child.wait().await.map_err(|e| failed("wait", e))?;
                    return Err(JournalError::Process(format!("snapshot replica exited: {status}")));
                }
            },
            () = closed(closing) => {
                drop(stdin);
                // Its last reports (a snapshot it was finishing) still count.
                let drain = async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        on_report(&line, journal, policy, watermark).await;
                    }
                    child.wait().await
                };
                if tokio::time::timeout(STOP_TIMEOUT, drain).await.is_err() {
                    tracing::warn!("snapshot replica did not stop in time; killed");
                    let _ = child.kill().await;
                }
                return Ok(());
            }
        }
    }
}

/// Resolves once `closing` is true (or its sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

async fn on_report(
    line: &str,
    journal: &RedisJournal,
    policy: &SnapshotPolicy,
    watermark: &watch::Receiver<u64>,
) {
    let lag = |seq: u64| watermark.borrow().saturating_sub(seq) as f64;
    match serde_json::from_str::<Report>(line) {
        Ok(Report::At { seq }) => {
            metrics::gauge!(telemetry::SNAPSHOT_REPLICA_LAG_EVENTS).set(lag(seq));
        }
        Ok(Report::Written { seq, seconds }) => {
            metrics::gauge!(telemetry::SNAPSHOT_REPLICA_LAG_EVENTS).set(lag(seq));
            metrics::histogram!(telemetry::SNAPSHOT_WRITE_SECONDS).record(seconds);
            trim_to_snapshots(journal, policy, snapshot::oldest_kept(&policy.dir)).await;
        }
        Ok(Report::WriteFailed { .. }) => {
            metrics::counter!(telemetry::SNAPSHOT_FAILURES_TOTAL).increment(1);
        }
        Err(e) => tracing::warn!(error = %e, line, "snapshot replica: unreadable report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_catches_up_beyond_the_bound_until_within_a_quarter_of_it() {
        assert!(!catching_up_at(false, 2_000_000, 2_000_000));
        assert!(catching_up_at(false, 2_000_001, 2_000_000));
        assert!(catching_up_at(true, 600_000, 2_000_000));
        assert!(!catching_up_at(true, 500_000, 2_000_000));
    }

    #[test]
    fn reports_read_back_as_written() {
        for r in [
            Report::At { seq: 7 },
            Report::Written {
                seq: 9,
                seconds: 1.5,
            },
            Report::WriteFailed {
                error: "disk full".to_owned(),
            },
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), r);
        }
    }

    #[test]
    fn the_handoff_carries_the_economy_and_the_config_unchanged() {
        let economy = Economy::embedded();
        let mut config = Config::default();
        config.snapshot.method = crate::config::SnapshotMethod::Replica;
        config.engine.top_k = 17;
        let line = serde_json::to_string(&Handoff {
            config: config.clone(),
            economy: economy.to_file(),
            shards: 8,
        })
        .unwrap();
        let back: Handoff = serde_json::from_str(&line).unwrap();
        assert_eq!(Economy::from_file(back.economy).unwrap(), economy);
        assert_eq!(back.config, config);
        assert_eq!(back.shards, 8);
    }
}
