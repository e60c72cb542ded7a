//! A node: one `giftstream serve` process, assembled as named steps — recover the ledger
//! ([`open`]), then ([`run`]) prepare the read model and settlement, start the commit
//! path, snapshots and the projector, serve the listeners, and shut down in order. The
//! node knows which journal it built ([`NodeJournal`]), so nothing asks a journal what
//! it is.
//!
//! Size: the assembly steps read top to bottom in start order; each step is a short
//! function, and splitting them across files would hide the order.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::cluster::PartitionMap;
use crate::config::{Config, SnapshotMethod};
use crate::economy::Economy;
use crate::engine::Engine;
use crate::persist::downstream::{ChangeStream, EconomyAt, History, HistoryReader};
use crate::persist::follow::{FollowerConfig, FollowerHandle, spawn_follower};
use crate::persist::journal::{
    CommitHandle, CommitterConfig, Journal, MemoryJournal, SnapshotPolicy, spawn_committer,
};
use crate::persist::read_model::{self, ProjectorHandle, ProjectorStart};
use crate::persist::redis::{RedisConn, RedisJournal};
use crate::persist::replica;
use crate::server::auth::Auth;
use crate::server::settlement::{self, Reporter};
use crate::server::sse::{FeedLimits, Feeds};
use crate::server::{Clock, ServeError, Service, http, http_conn, tcp, tls};
use crate::telemetry;

/// How long the final commit at shutdown keeps retrying a failing journal.
pub const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the shutdown grace the final commit waits for connection tasks that
/// have not ended by themselves (each closes its connection at the grace; this is a
/// bound on the time that takes).
pub const SHUTDOWN_GRACE_SLACK: Duration = Duration::from_secs(1);

/// The journal a node commits to, as the node built it.
pub enum NodeJournal {
    /// The Redis journal: besides commits, it holds the ledger's lease, feeds the read
    /// model, stores economy versions and is what the snapshot replica follows.
    Redis(RedisJournal),
    /// Any other journal (in memory, a test's): commits only.
    Other(Arc<dyn Journal>),
}

impl NodeJournal {
    /// The Redis journal, when it is one.
    pub fn redis(&self) -> Option<&RedisJournal> {
        match self {
            NodeJournal::Redis(redis) => Some(redis),
            NodeJournal::Other(_) => None,
        }
    }

    /// Where the committer appends.
    fn commits(&self) -> Arc<dyn Journal> {
        match self {
            NodeJournal::Redis(redis) => Arc::new(redis.clone()),
            NodeJournal::Other(journal) => journal.clone(),
        }
    }
}

impl From<RedisJournal> for NodeJournal {
    fn from(redis: RedisJournal) -> Self {
        NodeJournal::Redis(redis)
    }
}

impl From<Arc<dyn Journal>> for NodeJournal {
    fn from(journal: Arc<dyn Journal>) -> Self {
        NodeJournal::Other(journal)
    }
}

impl From<Arc<MemoryJournal>> for NodeJournal {
    fn from(journal: Arc<MemoryJournal>) -> Self {
        NodeJournal::Other(journal)
    }
}

/// Recovers the ledger `config` names: from the newest snapshot and the Redis journal
/// (taking the ledger's lease first), or — without `redis.url` — an empty ledger in
/// memory (snapshots off: nothing survives a restart).
pub async fn open(
    config: &mut Config,
    economy: Economy,
) -> Result<(Arc<Engine>, NodeJournal), ServeError> {
    if config.redis.url.is_empty() {
        tracing::warn!(
            "no GIFTSTREAM_REDIS_URL: running in memory, nothing survives a restart (no snapshots)"
        );
        config.snapshot.interval_ms = 0;
        config.snapshot.events = 0;
        let file = economy.to_file();
        let engine = crate::persist::recovery::build_engine(config, economy)?;
        if let Some(next) = engine.economy_for_start(file, None)? {
            let now = crate::clock::now();
            engine.check_economy_edit(&next, now)?;
            engine.change_economy(next, now)?;
        }
        let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::default());
        return Ok((engine, journal.into()));
    }
    let mut journal = RedisJournal::open(config)
        .await
        .map_err(ServeError::RedisUrl)?;
    // Takes the ledger lease before it reads the journal: no other process may append
    // after the read.
    let (engine, recovered) = crate::persist::recovery::recover(&mut journal, config, economy)
        .await
        .map_err(ServeError::Recovery)?;
    tracing::info!(
        snapshot = ?recovered.snapshot,
        events = recovered.replayed_events,
        last_seq = engine.last_seq(),
        seconds = recovered.seconds,
        "recovered from the snapshot and the Redis journal"
    );
    Ok((engine, journal.into()))
}

/// Runs the node on bound listeners until `shutdown` resolves (mini-redis style, so
/// tests run real nodes on `127.0.0.1:0`). `engine` holds the recovered state;
/// `journal` is where commits go. Shutdown: stop accepting, finish in-flight requests
/// (their acks still wait for durability) for at most `server.shutdown_grace_ms`, close
/// every connection left, make a final commit, return.
pub async fn run(
    config: Config,
    engine: Arc<Engine>,
    journal: impl Into<NodeJournal>,
    http_listener: TcpListener,
    tcp_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let journal = journal.into();
    config.validate()?;
    // The recorder first, so that the gauges set at start are kept.
    telemetry::prometheus();
    metrics::gauge!(telemetry::ENGINE_SHARDS).set(engine.config().shards as f64);
    if let Some(redis) = journal.redis() {
        redis.report_aof_settings().await;
    }
    let tls = tls::acceptors(&config.tls, config.server.http2)?;
    let feeds = Feeds::new(
        FeedLimits {
            subscribers_per_stream_max: config.limits.sse_subscribers_per_stream_max,
            subscribers_max: config.limits.sse_subscribers_max,
            buffer: config.limits.sse_buffer_events,
            replay_events: config.limits.sse_replay_events,
            replay_idle_streams_max: config.limits.sse_replay_idle_streams_max,
            replay_keep: Duration::from_millis(config.limits.sse_replay_keep_ms),
        },
        engine.last_seq(),
    );
    let read_model = prepare_read_model(&config, journal.redis(), &engine).await?;
    let partitions = crate::cluster::PartitionMap::from_config(&config.cluster)?;
    let shared_reads = match (&partitions, &read_model) {
        (Some(_), Some(read_model)) => Some(read_model::ReadModelReader::new(
            read_model.redis.connect_again().await?,
            read_model::Layout::of(&config.read_model),
        )),
        _ => None,
    };
    let history = match journal.redis().filter(|_| config.history.enabled) {
        Some(redis) => Some(HistoryReader::new(
            redis.connect_again().await?,
            config.history.buckets,
            config.history.retention_ms,
        )),
        None => None,
    };
    let settlement = prepare_settlement(&engine, partitions.as_ref(), journal.redis()).await?;
    let (closing_tx, closing) = watch::channel(false);
    let (committer, background) = start_background(
        &config,
        &engine,
        &journal,
        &feeds,
        read_model,
        settlement.as_ref().map(|s| s.reporter.clone()),
        &closing,
    )?;
    warn_if_clock_behind(&engine);
    let service = Arc::new(Service {
        partitions,
        shared_reads,
        history,
        auth: auth_of(&config),
        clock: Clock::starting_at(engine.newest_stamp()),
        engine,
        config,
        commits: committer,
        feeds,
        metrics: telemetry::prometheus(),
        ready: AtomicBool::new(true),
        closing: closing.clone(),
        economy_store: journal.redis().cloned(),
        economy_changes: tokio::sync::Mutex::new(()),
    });
    report_serving(&service, &http_listener, &tcp_listener, tls.is_some())?;
    let tracker = TaskTracker::new();
    tracker.spawn(crate::server::closer::run(service.clone(), closing.clone()));
    if let Some(settlement) = settlement {
        start_settlement(&service, settlement, &closing, &tracker);
    }
    let listeners = start_listeners(&service, tls, (http_listener, tcp_listener), &tracker)?;
    let stopping = (closing_tx, listeners, tracker, background);
    shut_down(service, shutdown, stopping, journal.redis()).await
}

/// The Redis read model, ready to catch up.
struct ReadModel {
    redis: RedisJournal,
    start: ProjectorStart,
    /// The last sequence number it holds (the journal trim stays behind it).
    projected: Arc<AtomicU64>,
}

/// The Redis read model: where it is, rebuilt first if the journal cannot bring it up to
/// date (before serving, while the engine holds only committed state). `None` without a
/// Redis journal or when `read_model.enabled` is off.
async fn prepare_read_model(
    config: &Config,
    redis: Option<&RedisJournal>,
    engine: &Engine,
) -> Result<Option<ReadModel>, ServeError> {
    let Some(redis) = redis.filter(|_| config.read_model.enabled) else {
        return Ok(None);
    };
    let url = config.read_model.redis_url(redis.url()).to_owned();
    let layout = read_model::Layout::of(&config.read_model);
    let start =
        read_model::prepare(redis, &url, engine, (layout, config.read_model.wallets)).await?;
    tracing::info!(
        projected = start.projected(),
        rebuilt = start.rebuilt,
        "read model ready to catch up"
    );
    Ok(Some(ReadModel {
        redis: redis.clone(),
        projected: Arc::new(AtomicU64::new(start.projected())),
        start,
    }))
}

/// A cluster node's settlement: the reporter of the diamonds it credits other nodes'
/// creators, and its connections (to report, to read its own inbox).
struct Settlement {
    reporter: Arc<Reporter>,
    report_conn: RedisConn,
    inbox_conn: RedisConn,
}

/// Settlement, on a cluster node with a Redis journal. The reporter reads the committed
/// runs (the engine holds only committed state until serving).
async fn prepare_settlement(
    engine: &Arc<Engine>,
    partitions: Option<&PartitionMap>,
    redis: Option<&RedisJournal>,
) -> Result<Option<Settlement>, ServeError> {
    let reporter = Reporter::new(engine, partitions);
    let (Some(reporter), Some(redis)) = (reporter, redis) else {
        return Ok(None);
    };
    Ok(Some(Settlement {
        reporter,
        report_conn: redis.connect_again().await?,
        inbox_conn: redis.connect_again().await?,
    }))
}

/// Snapshots as configured; none when neither trigger is set.
fn snapshot_policy(config: &Config, trim_floors: Vec<Arc<AtomicU64>>) -> Option<SnapshotPolicy> {
    let s = &config.snapshot;
    let interval = (s.interval_ms > 0).then(|| Duration::from_millis(s.interval_ms));
    let events = (s.events > 0).then_some(s.events);
    (interval.is_some() || events.is_some()).then(|| SnapshotPolicy {
        dir: s.dir.clone(),
        interval,
        events,
        keep: s.keep,
        trim_journal: s.trim_journal,
        copy_pages_in_child: s.copy_pages_in_child,
        trim_floors,
    })
}

/// The tasks beside the listeners, stopped in order at shutdown.
struct Background {
    commit_task: JoinHandle<bool>,
    stop_commits: watch::Sender<bool>,
    projector_task: Option<JoinHandle<()>>,
    stop_projector: watch::Sender<bool>,
    /// The change stream's and the durable history's writers (stopped with the
    /// projector, after the final commit).
    follower_tasks: Vec<JoinHandle<()>>,
    replica_task: Option<JoinHandle<()>>,
}

/// Starts the commit path, then the snapshot replica and the read model's projector,
/// which follow its durable watermark. Snapshots are taken by fork in the committer, or
/// from the replica (`snapshot.method = "replica"`, with a Redis journal).
fn start_background(
    config: &Config,
    engine: &Arc<Engine>,
    journal: &NodeJournal,
    feeds: &Arc<Feeds>,
    read_model: Option<ReadModel>,
    reporter: Option<Arc<Reporter>>,
    closing: &watch::Receiver<bool>,
) -> Result<(CommitHandle, Background), ServeError> {
    let downstream = downstream_sinks(config, engine, journal.redis());
    let floors = read_model
        .as_ref()
        .map(|r| r.projected.clone())
        .into_iter()
        .chain(downstream.iter().map(|d| d.written.clone()))
        .collect();
    let policy = snapshot_policy(config, floors);
    let (fork_policy, replica_policy) = match (config.snapshot.method, journal.redis()) {
        (SnapshotMethod::Replica, Some(_)) => (None, policy),
        _ => (policy, None),
    };
    let projector_slot: Arc<OnceLock<ProjectorHandle>> = Arc::new(OnceLock::new());
    let followers_slot: Arc<OnceLock<Vec<FollowerHandle>>> = Arc::new(OnceLock::new());
    let (stop_commits, stop_rx) = watch::channel(false);
    let (committer, commit_task) = start_commit(
        config,
        engine,
        journal.commits(),
        (
            feeds.clone(),
            (projector_slot.clone(), followers_slot.clone()),
            reporter,
        ),
        fork_policy,
        stop_rx,
    );
    let replica_task = match (replica_policy, journal.redis()) {
        (Some(policy), Some(redis)) => Some(start_replica(
            config,
            engine,
            redis,
            policy,
            committer.watermark_receiver(),
            closing.clone(),
        )?),
        _ => None,
    };
    let (stop_projector, stop_projector_rx) = watch::channel(false);
    let projector_task = match read_model {
        Some(read_model) => {
            let (handle, task) = read_model::spawn_projector(
                read_model.start,
                read_model.redis,
                (engine.economy(), {
                    let engine = engine.clone();
                    Arc::new(move |digest| engine.economy_by_digest(digest))
                }),
                config.read_model.clone(),
                committer.watermark_receiver(),
                stop_projector_rx.clone(),
                read_model.projected,
            )?;
            let _ = projector_slot.set(handle);
            Some(task)
        }
        None => None,
    };
    let mut handles = Vec::new();
    let mut follower_tasks = Vec::new();
    if let Some(redis) = journal.redis() {
        for sink in downstream {
            let signals = (committer.watermark_receiver(), stop_projector_rx.clone());
            let (handle, task) = match sink.sink {
                DownstreamSink::Changes(s) => {
                    spawn_follower(s, redis.clone(), sink.config, signals, sink.written)?
                }
                DownstreamSink::History(s) => {
                    spawn_follower(s, redis.clone(), sink.config, signals, sink.written)?
                }
            };
            handles.push(handle);
            follower_tasks.push(task);
        }
    }
    let _ = followers_slot.set(handles);
    let background = Background {
        commit_task,
        stop_commits,
        projector_task,
        stop_projector,
        follower_tasks,
        replica_task,
    };
    Ok((committer, background))
}

/// Who hears of each committed run: the live feeds, the read model's projector and the
/// change stream's and history's writers (once they are started) and a cluster node's
/// settlement reporter.
type CommitListeners = (
    Arc<Feeds>,
    (
        Arc<OnceLock<ProjectorHandle>>,
        Arc<OnceLock<Vec<FollowerHandle>>>,
    ),
    Option<Arc<Reporter>>,
);

/// A downstream writer to start: its sink, bounds and published position (a journal
/// trim floor).
struct Downstream {
    sink: DownstreamSink,
    config: FollowerConfig,
    written: Arc<AtomicU64>,
}

enum DownstreamSink {
    Changes(ChangeStream),
    History(History),
}

/// The change stream's and the durable history's writers, as configured (only with a
/// Redis journal).
fn downstream_sinks(
    config: &Config,
    engine: &Arc<Engine>,
    redis: Option<&RedisJournal>,
) -> Vec<Downstream> {
    let Some(redis) = redis else {
        return Vec::new();
    };
    let economy_at: EconomyAt = {
        let engine = engine.clone();
        Arc::new(move |seq| engine.economy_at(seq))
    };
    let mut sinks = Vec::new();
    let c = &config.change_stream;
    if c.enabled {
        sinks.push(Downstream {
            sink: DownstreamSink::Changes(ChangeStream::new(
                redis.ledger(),
                c.events_max,
                economy_at.clone(),
            )),
            config: FollowerConfig {
                queue_runs_max: c.queue_runs_max,
                entries_per_write_max: c.entries_per_write_max,
                nice: c.nice,
            },
            written: Arc::new(AtomicU64::new(0)),
        });
    }
    let h = &config.history;
    if h.enabled {
        sinks.push(Downstream {
            sink: DownstreamSink::History(History::new(
                redis.ledger(),
                h.buckets,
                h.retention_ms,
                economy_at,
            )),
            config: FollowerConfig {
                queue_runs_max: h.queue_runs_max,
                entries_per_write_max: h.entries_per_write_max,
                nice: h.nice,
            },
            written: Arc::new(AtomicU64::new(0)),
        });
    }
    sinks
}

/// The group committer: appends applied runs to `journal`, then tells `listeners`.
fn start_commit(
    config: &Config,
    engine: &Arc<Engine>,
    journal: Arc<dyn Journal>,
    (feeds, (projector, followers), reporter): CommitListeners,
    snapshots: Option<SnapshotPolicy>,
    stop: watch::Receiver<bool>,
) -> (CommitHandle, JoinHandle<bool>) {
    let committed_engine = engine.clone();
    spawn_committer(
        engine.clone(),
        journal,
        CommitterConfig {
            interval: Duration::from_millis(config.commit.interval_ms),
            events_max: config.commit.events_max as u64,
            pending_events_max: config.commit.pending_events_max,
            final_commit_timeout: FINAL_COMMIT_TIMEOUT,
            snapshots,
        },
        stop,
        move |entries| {
            if let Some(projector) = projector.get() {
                projector.committed(entries);
            }
            for follower in followers.get().into_iter().flatten() {
                follower.committed(entries);
            }
            if let Some(reporter) = &reporter {
                reporter.committed(entries);
            }
            feeds.publish(&committed_engine, entries);
        },
    )
}

/// The snapshot replica: a process of its own, watched by the returned task.
fn start_replica(
    config: &Config,
    engine: &Engine,
    redis: &RedisJournal,
    policy: SnapshotPolicy,
    watermark: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServeError> {
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
    Ok(tokio::spawn(replica::supervise(
        handoff,
        exe,
        redis.clone(),
        policy,
        watermark,
        closing,
    )))
}

/// Stamps never go back: until this clock catches up with the ledger's newest stamp,
/// batches are stamped at it (events with an older `issued_ms` may be EVENT_EXPIRED).
fn warn_if_clock_behind(engine: &Engine) {
    let ahead_ms = engine
        .newest_stamp()
        .0
        .saturating_sub(crate::clock::now().0);
    if ahead_ms > 1_000 {
        tracing::warn!(
            ahead_ms,
            "the ledger's newest stamp is ahead of this clock; batches are stamped at it until the clock catches up"
        );
    }
}

/// The tokens, their request rate and the failed-auth budget per address.
fn auth_of(config: &Config) -> Auth {
    Auth::new(
        config.auth.tokens.clone(),
        config.limits.token_requests_per_second,
    )
    .with_peer_failures(
        config.limits.auth_failures_per_peer_max,
        Duration::from_millis(config.limits.auth_failure_window_ms),
    )
}

/// The partitions gauge of a cluster node, and the "serving" log line.
fn report_serving(
    service: &Service,
    http_listener: &TcpListener,
    tcp_listener: &TcpListener,
    tls: bool,
) -> Result<(), ServeError> {
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
        tls,
        "giftstream serving"
    );
    Ok(())
}

/// A cluster node's settlement tasks: the reporter and the applier of its inbox.
fn start_settlement(
    service: &Arc<Service>,
    settlement: Settlement,
    closing: &watch::Receiver<bool>,
    tracker: &TaskTracker,
) {
    let interval = Duration::from_millis(service.config.cluster.settle_interval_ms);
    tracker.spawn(settlement::run_reporter(
        settlement.reporter,
        settlement.report_conn,
        interval,
        closing.clone(),
    ));
    tracker.spawn(settlement::run_applier(
        service.clone(),
        settlement.inbox_conn,
        interval,
        closing.clone(),
    ));
}

/// The accept loops of the binary protocol and the HTTP API; their connections run on
/// `tracker`.
fn start_listeners(
    service: &Arc<Service>,
    tls: Option<tls::Acceptors>,
    (http_listener, tcp_listener): (TcpListener, TcpListener),
    tracker: &TaskTracker,
) -> Result<(JoinHandle<()>, JoinHandle<()>), ServeError> {
    let limits = &service.config.limits;
    let handshake_timeout = Duration::from_millis(limits.read_timeout_ms);
    let tcp_task = tokio::spawn(tcp::serve(
        service.clone(),
        tcp_listener,
        tls.as_ref().map(|t| t.tcp.clone()),
        service.closing.clone(),
        tracker.clone(),
    ));
    let listener = tls::HttpListener::new(
        http_listener,
        tls.map(|t| t.http),
        limits.connections_max,
        handshake_timeout,
    )?;
    let http_task = tokio::spawn(http_conn::serve(
        listener,
        http::router(service.clone()),
        http_conn::ConnLimits::of(&service.config),
        service.closing.clone(),
        tracker.clone(),
    ));
    Ok((tcp_task, http_task))
}

/// What [`shut_down`] stops: the closing signal's sender, the accept loops (binary,
/// HTTP), the connections' tracker, the background tasks.
type Stopping = (
    watch::Sender<bool>,
    (JoinHandle<()>, JoinHandle<()>),
    TaskTracker,
    Background,
);

/// Waits for `shutdown` (or for the committer to end, fenced), then stops in order:
/// listeners and connections (within the grace), the final commit, the projector, the
/// replica; the lease is released once everything applied is journaled.
async fn shut_down(
    service: Arc<Service>,
    shutdown: impl Future<Output = ()>,
    (closing_tx, (tcp_task, http_task), tracker, mut background): Stopping,
    lease: Option<&RedisJournal>,
) -> Result<(), ServeError> {
    // The committer ends by itself only when fenced (another process took the ledger):
    // then this process shuts down too, without acknowledging anything more.
    let fenced = tokio::select! {
        () = shutdown => false,
        _ = &mut background.commit_task => true,
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
    let _ = background.stop_commits.send(true);
    let committed = !fenced && background.commit_task.await.unwrap_or(false);
    let _ = background.stop_projector.send(true);
    if let Some(task) = background.projector_task {
        let _ = task.await;
    }
    for task in background.follower_tasks {
        let _ = task.await;
    }
    // Before the lease goes: a snapshot the replica is finishing still trims the journal.
    if let Some(task) = background.replica_task {
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
