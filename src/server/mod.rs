//! `giftstream serve`: the engine behind the binary protocol and the HTTP/JSON API.
//!
//! [`run`] takes bound listeners, a [`Journal`] and a shutdown future (mini-redis
//! style), so tests run real servers on `127.0.0.1:0`. Shutdown: stop accepting, finish
//! in-flight requests (their acks still wait for durability) for at most
//! `server.shutdown_grace_ms`, close every connection left, make a final commit, return.

pub mod auth;
pub mod http;
pub mod http_conn;
pub mod settlement;
pub mod sse;
pub mod tcp;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::ConfigError;
use crate::config::{Config, SnapshotMethod};
use crate::engine::{Engine, Event, Outcome, Stamp};
use crate::persist::journal::{CommitHandle, CommitterConfig, Journal, spawn_committer};
use crate::persist::projection::{self, ProjectorHandle};
use crate::persist::replica;
use crate::telemetry;
use auth::Auth;
use sse::Feeds;

/// How long the final commit at shutdown keeps retrying a failing journal.
pub const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the shutdown grace the final commit waits for connection tasks that
/// have not ended by themselves (each closes its connection at the grace; this is a
/// bound on the time that takes).
pub const SHUTDOWN_GRACE_SLACK: Duration = Duration::from_secs(1);

/// Stamps batches with the system's UTC time, never going backwards (a clock step back
/// must not reorder months or idempotency ages).
#[derive(Debug, Default)]
pub struct Clock {
    last_ms: AtomicU64,
}

impl Clock {
    /// A clock that never stamps before `floor` (the ledger's newest recorded stamp).
    pub fn starting_at(floor: Stamp) -> Clock {
        Clock {
            last_ms: AtomicU64::new(floor.0),
        }
    }

    pub fn now(&self) -> Stamp {
        let now = Stamp::now().0;
        let prev = self.last_ms.fetch_max(now, Ordering::AcqRel);
        Stamp(prev.max(now))
    }
}

/// Resolves once `closing` turns true (or its sender is gone).
pub async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Everything the listeners share.
pub struct Service {
    pub engine: Arc<Engine>,
    pub config: Config,
    pub commits: CommitHandle,
    pub auth: Auth,
    pub feeds: Arc<Feeds>,
    pub clock: Clock,
    pub metrics: PrometheusHandle,
    /// True once state is loaded; false again while shutting down.
    pub ready: AtomicBool,
    pub closing: watch::Receiver<bool>,
    /// A cluster node's partition map (`None`: a single node owns everything).
    pub partitions: Option<crate::cluster::PartitionMap>,
    /// A cluster node's connection to the shared read model, which answers leaderboard
    /// reads for every partition.
    pub shared_reads: Option<crate::persist::redis::RedisConn>,
    /// Where economy versions are stored (the Redis journal; `None`: in memory).
    pub economy_store: Option<crate::persist::redis::RedisJournal>,
    /// One economy change at a time.
    pub economy_changes: tokio::sync::Mutex<()>,
}

/// Why an economy change was not made.
#[derive(Debug, thiserror::Error)]
pub enum EconomyChangeError {
    /// The new economy is invalid: names the key.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Storage is unavailable: nothing changed, or (after the change was applied) it is
    /// not confirmed durable yet.
    #[error("{0}")]
    Unavailable(String),
}

/// An economy version in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EconomyChanged {
    pub version: u32,
    /// The change's sequence number (0 when nothing changed).
    pub seq: u64,
    pub changed: bool,
}

impl Service {
    /// Applies a validated batch and counts its outcomes. `issued_ms`: one per event (0 =
    /// not given), or empty.
    pub fn apply(
        &self,
        events: &[Event],
        issued_ms: &[u64],
        protocol: &'static str,
    ) -> Vec<Outcome> {
        let outcomes = self
            .engine
            .apply_issued(events, issued_ms, self.clock.now());
        self.commits.applied();
        metrics::histogram!(telemetry::BATCH_EVENTS, "protocol" => protocol)
            .record(events.len() as f64);
        telemetry::count_outcomes(events, &outcomes);
        outcomes
    }

    /// Puts `file`'s terms in force as the next economy version, for every event
    /// numbered after the change: validated whole, stored, journaled (waits until
    /// durable). Terms already in force change nothing (the answer names their version).
    pub async fn change_economy(
        &self,
        file: crate::economy::EconomyFile,
    ) -> Result<EconomyChanged, EconomyChangeError> {
        let _one_at_a_time = self.economy_changes.lock().await;
        let Some(next) = self.engine.economy_successor(file)? else {
            return Ok(EconomyChanged {
                version: self.engine.economy().version,
                seq: 0,
                changed: false,
            });
        };
        if let Some(store) = &self.economy_store {
            store
                .store_economy(&next)
                .await
                .map_err(|e| EconomyChangeError::Unavailable(format!("nothing changed: {e}")))?;
        }
        let version = next.version;
        let outcome = self
            .engine
            .change_economy(next, self.clock.now())
            .map_err(|e| ConfigError::new("economy", e.to_string()))?;
        self.commits.applied();
        self.commits.durable(outcome.seq).await.map_err(|_| {
            EconomyChangeError::Unavailable(format!(
                "economy version {version} applied at seq {} but not confirmed durable",
                outcome.seq
            ))
        })?;
        tracing::info!(version, seq = outcome.seq, "economy version in force");
        Ok(EconomyChanged {
            version,
            seq: outcome.seq,
            changed: true,
        })
    }

    /// `Ok` when this node owns every event of the batch (always on a single node);
    /// else the first event it does not own, with its owner. Counted by protocol.
    pub fn check_partitions(
        &self,
        events: &[Event],
        protocol: &'static str,
    ) -> Result<(), crate::cluster::WrongPartition> {
        let Some(map) = &self.partitions else {
            return Ok(());
        };
        map.check(events).inspect_err(|_| {
            metrics::counter!(telemetry::WRONG_PARTITION_TOTAL, "protocol" => protocol)
                .increment(1);
        })
    }

    /// Ready: state loaded, commits healthy, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.commits.healthy() && !*self.closing.borrow()
    }
}

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the final commit failed: applied events may not be durable")]
    FinalCommit,
    #[error(
        "fenced: this process lost the ledger's lease (another process took it, or wrote the \
         journal while it was free); events applied here after that were not journaled and \
         were not acknowledged"
    )]
    Fenced,
    #[error("read model: {0}")]
    ReadModel(#[from] crate::persist::journal::JournalError),
}

/// Snapshots as configured; none when neither trigger is set.
fn snapshot_policy(
    config: &Config,
    trim_floor: Option<Arc<AtomicU64>>,
) -> Option<crate::persist::journal::SnapshotPolicy> {
    let s = &config.snapshot;
    let interval = (s.interval_ms > 0).then(|| Duration::from_millis(s.interval_ms));
    let events = (s.events > 0).then_some(s.events);
    (interval.is_some() || events.is_some()).then(|| crate::persist::journal::SnapshotPolicy {
        dir: s.dir.clone(),
        interval,
        events,
        keep: s.keep,
        trim_journal: s.trim_journal,
        copy_pages_in_child: s.copy_pages_in_child,
        trim_floor,
    })
}

/// Runs the service on bound listeners until `shutdown` resolves. `engine` holds the
/// recovered state; `journal` is where commits go.
pub async fn run(
    config: Config,
    engine: Arc<Engine>,
    journal: Arc<dyn Journal>,
    http_listener: TcpListener,
    tcp_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    config.validate()?;
    // The recorder first, so that the gauges set at start are kept.
    telemetry::prometheus();
    metrics::gauge!(telemetry::ENGINE_SHARDS).set(engine.config().shards as f64);
    if let Some(redis) = journal.as_redis() {
        redis.report_aof_settings().await;
    }
    let tls = tls::acceptors(&config.tls, config.server.http2)?;
    let feeds = Feeds::new(
        config.limits.sse_subscribers_per_stream_max,
        config.limits.sse_subscribers_max,
        config.limits.sse_buffer_events,
    );
    // The Redis read model: where it is, rebuilt first if the journal cannot bring it
    // up to date (before serving, while the engine holds only committed state).
    let read_model = match journal.as_redis() {
        Some(redis) if config.read_model.enabled => {
            let url = config.read_model.redis_url(redis.url()).to_owned();
            let start = projection::prepare(
                &redis,
                &url,
                &engine,
                (
                    projection::Layout::of(&config.read_model),
                    config.read_model.wallets,
                ),
            )
            .await?;
            tracing::info!(
                projected = start.projected(),
                rebuilt = start.rebuilt,
                "read model ready to catch up"
            );
            Some((redis, start))
        }
        _ => None,
    };
    let partitions = crate::cluster::PartitionMap::from_config(&config.cluster)?;
    let shared_reads = match (&partitions, &read_model) {
        (Some(_), Some((redis, _))) => Some(redis.connect_again().await?),
        _ => None,
    };
    let projected = read_model
        .as_ref()
        .map(|(_, start)| Arc::new(AtomicU64::new(start.projected())));
    let projector_slot: Arc<OnceLock<ProjectorHandle>> = Arc::new(OnceLock::new());
    let lease = journal.as_redis();
    // A cluster node reports the diamonds it credits other nodes' creators to them, from
    // its committed runs (the engine holds only committed state until serving).
    let reporter = settlement::Reporter::new(&engine, partitions.as_ref());
    let settle_conns = match (&reporter, &lease) {
        (Some(_), Some(redis)) => {
            Some((redis.connect_again().await?, redis.connect_again().await?))
        }
        _ => None,
    };
    // Snapshots: by fork in the committer, or from the replica (with a Redis journal).
    let policy = snapshot_policy(&config, projected.clone());
    let replica_policy = match (config.snapshot.method, &lease) {
        (SnapshotMethod::Replica, Some(_)) => policy.clone(),
        _ => None,
    };
    let fork_policy = if replica_policy.is_some() {
        None
    } else {
        policy
    };
    let (stop_commits, stop_rx) = watch::channel(false);
    let (committer, commit_task) = {
        let (engine2, feeds2, slot) = (engine.clone(), feeds.clone(), projector_slot.clone());
        let reporter = reporter.clone();
        spawn_committer(
            engine.clone(),
            journal,
            CommitterConfig {
                interval: Duration::from_millis(config.commit.interval_ms),
                events_max: config.commit.events_max as u64,
                pending_events_max: config.commit.pending_events_max,
                final_commit_timeout: FINAL_COMMIT_TIMEOUT,
                snapshots: fork_policy,
            },
            stop_rx,
            move |entries| {
                if let Some(projector) = slot.get() {
                    projector.committed(entries);
                }
                if let Some(reporter) = &reporter {
                    reporter.committed(entries);
                }
                feeds2.publish(&engine2, entries);
            },
        )
    };
    let (closing_tx, closing) = watch::channel(false);
    // The snapshot replica: a process of its own, watched by this task.
    let replica_task = match (replica_policy, &lease) {
        (Some(policy), Some(redis)) => {
            let exe = if config.snapshot.replica_exe.as_os_str().is_empty() {
                std::env::current_exe()?
            } else {
                config.snapshot.replica_exe.clone()
            };
            // The journal it reads is this one (embedders may open it themselves).
            let mut replica_config = config.clone();
            replica_config.redis.url = redis.url().to_owned();
            replica_config.redis.cluster = redis.cluster();
            let handoff = replica::Handoff {
                config: replica_config,
                economy: engine.economy().to_file(),
                shards: engine.config().shards,
            };
            Some(tokio::spawn(replica::supervise(
                handoff,
                exe,
                redis.clone(),
                policy,
                committer.watermark_receiver(),
                closing.clone(),
            )))
        }
        _ => None,
    };
    let (stop_projector, stop_projector_rx) = watch::channel(false);
    let projector_task = match read_model {
        Some((redis, start)) => {
            let (handle, task) = projection::spawn_projector(
                start,
                redis,
                (engine.economy(), {
                    let engine = engine.clone();
                    Arc::new(move |digest| engine.economy_by_digest(digest))
                }),
                config.read_model.clone(),
                committer.watermark_receiver(),
                stop_projector_rx,
                projected.clone().expect("set with the read model"),
            )?;
            let _ = projector_slot.set(handle);
            Some(task)
        }
        None => None,
    };
    let newest_stamp = engine.newest_stamp();
    let ahead_ms = newest_stamp.0.saturating_sub(Stamp::now().0);
    if ahead_ms > 1_000 {
        // Stamps never go back: until this clock catches up, batches are stamped at the
        // ledger's newest stamp (events with an older `issued_ms` may be EVENT_EXPIRED).
        tracing::warn!(
            ahead_ms,
            "the ledger's newest stamp is ahead of this clock; batches are stamped at it until the clock catches up"
        );
    }
    let service = Arc::new(Service {
        partitions,
        shared_reads,
        engine,
        auth: Auth::new(
            config.auth.tokens.clone(),
            config.limits.token_requests_per_second,
        )
        .with_peer_failures(
            config.limits.auth_failures_per_peer_max,
            Duration::from_millis(config.limits.auth_failure_window_ms),
        ),
        config,
        commits: committer,
        feeds,
        clock: Clock::starting_at(newest_stamp),
        metrics: telemetry::prometheus(),
        ready: AtomicBool::new(true),
        closing: closing.clone(),
        economy_store: lease.clone(),
        economy_changes: tokio::sync::Mutex::new(()),
    });
    if let Some(node) = service
        .partitions
        .as_ref()
        .and_then(|m| m.local().map(|n| (n.name.clone(), m.owned())))
    {
        metrics::gauge!(telemetry::CLUSTER_PARTITIONS_OWNED, "node" => node.0).set(node.1 as f64);
    }
    tracing::info!(
        http = %http_listener.local_addr()?,
        tcp = %tcp_listener.local_addr()?,
        ack = ?service.config.server.ack,
        tls = tls.is_some(),
        "giftstream serving"
    );

    let tracker = TaskTracker::new();
    if let (Some(reporter), Some((report_conn, inbox_conn))) = (reporter, settle_conns) {
        let interval = Duration::from_millis(service.config.cluster.settle_interval_ms);
        tracker.spawn(settlement::run_reporter(
            reporter,
            report_conn,
            interval,
            closing.clone(),
        ));
        tracker.spawn(settlement::run_applier(
            service.clone(),
            inbox_conn,
            interval,
            closing.clone(),
        ));
    }
    let handshake_timeout = Duration::from_millis(service.config.limits.read_timeout_ms);
    let tcp_task = tokio::spawn(tcp::serve(
        service.clone(),
        tcp_listener,
        tls.as_ref().map(|t| t.tcp.clone()),
        closing.clone(),
        tracker.clone(),
    ));
    let http_task = {
        let app = http::router(service.clone());
        let listener = tls::HttpListener::new(
            http_listener,
            tls.map(|t| t.http),
            service.config.limits.connections_max,
            handshake_timeout,
        )?;
        tokio::spawn(http_conn::serve(
            listener,
            app,
            http_conn::ConnLimits::of(&service.config),
            closing.clone(),
            tracker.clone(),
        ))
    };

    // The committer ends by itself only when fenced (another process took the ledger):
    // then this process shuts down too, without acknowledging anything more.
    let mut commit_task = commit_task;
    let fenced = tokio::select! {
        () = shutdown => false,
        _ = &mut commit_task => true,
    };
    if fenced {
        tracing::error!("the journal refused this process (fenced): shutting down");
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    service.ready.store(false, Ordering::Release);
    let _ = closing_tx.send(true);
    // Connections get the grace to finish, then each closes itself: the final commit
    // never waits on a client.
    let grace = Duration::from_millis(service.config.server.shutdown_grace_ms);
    let deadline = tokio::time::Instant::now() + grace + SHUTDOWN_GRACE_SLACK;
    let _ = tcp_task.await;
    if let Err(e) = http_task.await {
        tracing::warn!(error = %e, "http task failed");
    }
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = tracker.len(),
            "connection tasks still running after the shutdown grace: committing without them"
        );
    }
    let _ = stop_commits.send(true);
    let committed = !fenced && commit_task.await.unwrap_or(false);
    let _ = stop_projector.send(true);
    if let Some(task) = projector_task {
        let _ = task.await;
    }
    // Before the lease goes: a snapshot the replica is finishing still trims the journal.
    if let Some(task) = replica_task {
        let _ = task.await;
    }
    if fenced {
        return Err(ServeError::Fenced);
    }
    if !committed {
        return Err(ServeError::FinalCommit);
    }
    // Everything is journaled: the next process need not wait for the lease to run out.
    if let Some(journal) = lease {
        journal.release().await;
    }
    tracing::info!(
        last_seq = service.engine.last_seq(),
        "final commit done; bye"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger whose journal was stamped by a clock running ahead restarts on a correct
    /// clock: its stamps start at the journal's newest, never behind it.
    #[test]
    fn a_clock_never_stamps_before_the_ledgers_newest_stamp() {
        let ahead = Stamp(Stamp::now().0 + 3_600_000);
        let clock = Clock::starting_at(ahead);
        assert!(clock.now() >= ahead);
        assert!(clock.now() >= ahead);
        let fresh = Clock::default();
        assert!(fresh.now() < ahead);
    }
}
