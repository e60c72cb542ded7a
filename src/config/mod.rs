//! `giftstream.toml` plus `GIFTSTREAM_*` environment overrides (SPEC §2.6).
//!
//! Typed (`deny_unknown_fields`), defaults as named constants, `validate()` rejects bad
//! bounds at start with an error naming the key.
//!
//! Size: every table of giftstream.toml with its defaults, the environment overrides and
//! the cross-table checks, so one file shows the whole operator-facing surface; the
//! tests (~190 lines) check the shipped files and each refusal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::economy::{EMBEDDED_ECONOMY_TOML, Economy, EconomyError};
pub mod cluster;
pub mod downstream;
pub mod engine;

pub use cluster::{ClusterConfig, NodeConfig};
pub use downstream::{ChangeStreamConfig, HistoryConfig};
pub use engine::EngineConfig;

/// An error in `giftstream.toml`, an override or a file it names: names the key that is
/// wrong. The error type of every start-up check (engine, cluster, TLS, economy).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid config: `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<EconomyError> for ConfigError {
    fn from(e: EconomyError) -> Self {
        ConfigError {
            key: e.key,
            message: e.message,
        }
    }
}

/// Largest frame on the binary protocol, in bytes (header excluded).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Hard upper bound any configuration may set for a frame.
pub const FRAME_BYTES_MAX_LIMIT: usize = 64 << 20;
pub const EVENTS_PER_FRAME_MAX_DEFAULT: usize = 10_000;
pub const INFLIGHT_FRAMES_MAX_DEFAULT: usize = 64;
pub const CONNECTIONS_MAX_DEFAULT: usize = 1_024;
pub const HTTP_BODY_BYTES_MAX_DEFAULT: usize = 4 << 20;
pub const HTTP_EVENTS_PER_BATCH_MAX_DEFAULT: usize = 10_000;
pub const SSE_SUBSCRIBERS_PER_STREAM_MAX_DEFAULT: usize = 256;
/// Live-feed subscribers in all, by default (each holds a buffer of
/// `sse_buffer_events` messages per stream it watches).
pub const SSE_SUBSCRIBERS_MAX_DEFAULT: usize = 10_000;
pub const SSE_BUFFER_EVENTS_DEFAULT: usize = 1_024;
/// Feed messages (gifts, goals reached) kept per stream for reconnecting clients.
pub const SSE_REPLAY_EVENTS_DEFAULT: usize = 256;
pub const SSE_REPLAY_EVENTS_LIMIT: usize = 100_000;
/// Streams without subscribers whose replay buffer is kept.
pub const SSE_REPLAY_IDLE_STREAMS_MAX_DEFAULT: usize = 1_000;
/// How long a stream's replay buffer outlives its last subscriber: long enough for a
/// phone to come back from a tunnel.
pub const SSE_REPLAY_KEEP_MS_DEFAULT: u64 = 300_000;
pub const SSE_REPLAY_KEEP_MS_LIMIT: u64 = 86_400_000;
pub const READ_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How long a response may wait to be written to a client (either listener), by default.
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// How long an HTTP request's line and headers may take to arrive, from its first byte.
pub const HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// How long an HTTP request's body may take to arrive, from when its handler reads it.
pub const HTTP_BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How long an HTTP connection may wait for a request (new, or kept alive after one).
pub const HTTP_IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// HTTP requests being handled at once (the operations routes not counted): with
/// `HTTP_BODY_BYTES_MAX_DEFAULT`, at most 1 GiB of request bodies in memory.
pub const HTTP_REQUESTS_INFLIGHT_MAX_DEFAULT: usize = 256;
/// Concurrent streams (requests, live feeds included) per HTTP/2 connection, when
/// `server.http2` is on.
pub const HTTP2_STREAMS_PER_CONNECTION_MAX_DEFAULT: u32 = 16;
/// Failed authentications a peer address may make in a burst...
pub const AUTH_FAILURES_PER_PEER_MAX_DEFAULT: u32 = 10;
/// ... and the time in which that many come back (one per window / max).
pub const AUTH_FAILURE_WINDOW_MS_DEFAULT: u64 = 60_000;
/// How long a shutdown waits for open connections before it closes them, by default.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 5_000;
pub const COMMIT_INTERVAL_MS_DEFAULT: u64 = 1;
pub const COMMIT_EVENTS_MAX_DEFAULT: usize = 65_536;
pub const PENDING_EVENTS_MAX_DEFAULT: u64 = 1_000_000;

/// When an outcome is released to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// As soon as the engine applied the event.
    Applied,
    /// Once the commit that contains the event is confirmed by the persistence layer.
    Durable,
}

/// How snapshots are taken (`snapshot.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMethod {
    /// At a cut of the serving engine the process forks (like Redis's BGSAVE); the child
    /// writes the state. The serving process pays the fork and copy-on-write faults.
    Fork,
    /// A second engine on a thread of its own, at idle priority, replays every committed
    /// run and writes the snapshots from its own state: nothing in the serving engine
    /// stops or is write-protected, at the price of a second copy of the state in memory
    /// and the replay's CPU (`persist::replica`).
    Replica,
}

/// An access token and its scopes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for TokenConfig {
    /// Tokens never appear in logs or debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// What a token may do. `admin` implies `ingest` and `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events (POST /v1/events, PUT users and goals, the binary protocol).
    Ingest,
    /// Read wallets, histories, creators, streams, leaderboards, the live feed.
    Read,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?} (expected ingest, read or admin)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP/JSON API, metrics and health (`GIFTSTREAM_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Binary protocol (`GIFTSTREAM_TCP_ADDR`).
    pub tcp_addr: SocketAddr,
    /// `durable` (default) or `applied` (`GIFTSTREAM_ACK`).
    pub ack: AckMode,
    /// Log filter when `RUST_LOG` is unset, e.g. `info` or `giftstream=debug`.
    pub log_level: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Economy file (`GIFTSTREAM_ECONOMY`); empty = the embedded default.
    pub economy: String,
    /// Worker threads of the async runtime (0 = one per core).
    pub worker_threads: usize,
    /// Serve HTTP/2 too (h2c by prior knowledge on plain TCP, ALPN `h2` with TLS), with
    /// at most `limits.http2_streams_per_connection_max` streams per connection. Off:
    /// HTTP/1.1 only, one request at a time per connection.
    pub http2: bool,
    /// At shutdown, how long open connections get to finish what they are doing (and
    /// their acks to become durable) before they are closed; the final commit follows.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: "127.0.0.1:8080".parse().expect("static address"),
            tcp_addr: "127.0.0.1:7070".parse().expect("static address"),
            ack: AckMode::Durable,
            log_level: "info".to_owned(),
            log_format: "text".to_owned(),
            economy: "config/economy.toml".to_owned(),
            worker_threads: 0,
            http2: false,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest binary frame payload in bytes.
    pub frame_bytes_max: usize,
    /// Most events in one binary request frame.
    pub events_per_frame_max: usize,
    /// Request frames a connection may have awaiting their response; beyond it the
    /// server stops reading that connection (backpressure).
    pub inflight_frames_max: usize,
    /// Open connections per listener; one more gets an error frame (binary) or `503
    /// CONNECTION_LIMIT` (HTTP) and is closed.
    pub connections_max: usize,
    /// Largest HTTP request body in bytes (413 beyond).
    pub http_body_bytes_max: usize,
    /// Most events in one POST /v1/events (413 beyond).
    pub http_events_per_batch_max: usize,
    /// Live-feed subscribers per stream (429 beyond).
    pub sse_subscribers_per_stream_max: usize,
    /// Live-feed subscribers in all, every stream together (429 beyond).
    pub sse_subscribers_max: usize,
    /// Feed messages buffered per subscriber; a subscriber that falls further behind
    /// is disconnected, ingestion never waits for it.
    pub sse_buffer_events: usize,
    /// Gifts and goals reached kept per stream for clients reconnecting with
    /// `Last-Event-ID` (0: a reconnect always gets `reset`).
    pub sse_replay_events: usize,
    /// Streams without subscribers whose replay buffer is kept (the longest idle goes
    /// first beyond it).
    pub sse_replay_idle_streams_max: usize,
    /// How long a stream's replay buffer is kept after its last subscriber left.
    pub sse_replay_keep_ms: u64,
    /// A binary connection idle (no complete frame) this long is closed.
    pub read_timeout_ms: u64,
    /// A connection (binary or HTTP) whose client takes no byte of a response within
    /// this long (it stopped reading) is closed.
    pub write_timeout_ms: u64,
    /// Requests (HTTP requests and binary request frames) per second per token, in
    /// bursts of up to a second's worth; beyond it `RATE_LIMITED` (HTTP 429). 0 = none.
    pub token_requests_per_second: u32,
    /// An HTTP request's line and headers must arrive within this long of its first
    /// byte (however slowly they trickle in), or the connection is closed.
    pub http_header_read_timeout_ms: u64,
    /// An HTTP request's body must arrive within this long of when its handler starts
    /// reading it (after authorization): `408 BODY_TIMEOUT`, and the connection closes.
    pub http_body_read_timeout_ms: u64,
    /// An HTTP connection that waits this long for a request (new, or kept alive after
    /// a response) without a byte of one is closed.
    pub http_idle_timeout_ms: u64,
    /// HTTP requests being handled at once over all connections (`/healthz`, `/readyz`,
    /// `/metrics` and `/openapi.json` not counted); beyond it `503 OVERLOADED`. A live
    /// feed counts until its stream starts.
    pub http_requests_inflight_max: usize,
    /// Concurrent streams per HTTP/2 connection (live feeds included), when
    /// `server.http2` is on. HTTP/1.1 carries one request at a time per connection.
    pub http2_streams_per_connection_max: u32,
    /// Failed authentications (unknown or missing token, on either listener) a peer
    /// address (IPv4, or an IPv6 /64) may make in a burst; refilled at that many per
    /// `auth_failure_window_ms`. Once spent, every attempt from that address is refused
    /// (`AUTH_RATE_LIMITED`; HTTP 429 with Retry-After) without looking at its token,
    /// good tokens included, until one comes back. Successes are not counted. 0 = no limit.
    pub auth_failures_per_peer_max: u32,
    /// See `auth_failures_per_peer_max`.
    pub auth_failure_window_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            events_per_frame_max: EVENTS_PER_FRAME_MAX_DEFAULT,
            inflight_frames_max: INFLIGHT_FRAMES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            http_body_bytes_max: HTTP_BODY_BYTES_MAX_DEFAULT,
            http_events_per_batch_max: HTTP_EVENTS_PER_BATCH_MAX_DEFAULT,
            sse_subscribers_per_stream_max: SSE_SUBSCRIBERS_PER_STREAM_MAX_DEFAULT,
            sse_subscribers_max: SSE_SUBSCRIBERS_MAX_DEFAULT,
            sse_buffer_events: SSE_BUFFER_EVENTS_DEFAULT,
            sse_replay_events: SSE_REPLAY_EVENTS_DEFAULT,
            sse_replay_idle_streams_max: SSE_REPLAY_IDLE_STREAMS_MAX_DEFAULT,
            sse_replay_keep_ms: SSE_REPLAY_KEEP_MS_DEFAULT,
            read_timeout_ms: READ_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
            token_requests_per_second: 20_000,
            http_header_read_timeout_ms: HTTP_HEADER_READ_TIMEOUT_MS_DEFAULT,
            http_body_read_timeout_ms: HTTP_BODY_READ_TIMEOUT_MS_DEFAULT,
            http_idle_timeout_ms: HTTP_IDLE_TIMEOUT_MS_DEFAULT,
            http_requests_inflight_max: HTTP_REQUESTS_INFLIGHT_MAX_DEFAULT,
            http2_streams_per_connection_max: HTTP2_STREAMS_PER_CONNECTION_MAX_DEFAULT,
            auth_failures_per_peer_max: AUTH_FAILURES_PER_PEER_MAX_DEFAULT,
            auth_failure_window_ms: AUTH_FAILURE_WINDOW_MS_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitConfig {
    /// Group commit: applied events are committed as soon as the commit before them has
    /// finished, and commits start at least this many ms apart ...
    pub interval_ms: u64,
    /// ... unless this many are waiting.
    pub events_max: usize,
    /// Applied but not yet committed events; beyond it new events are refused with
    /// "unavailable" (HTTP 503) until commits catch up.
    pub pending_events_max: u64,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            interval_ms: COMMIT_INTERVAL_MS_DEFAULT,
            events_max: COMMIT_EVENTS_MAX_DEFAULT,
            pending_events_max: PENDING_EVENTS_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis URL (`GIFTSTREAM_REDIS_URL`); empty = in memory only. With `cluster`, one or
    /// more seed node URLs separated by commas.
    pub url: String,
    /// The URL points at a Redis Cluster (redis-rs `cluster-async`; keys are hash-tagged
    /// so each node's commit stays in one slot).
    pub cluster: bool,
    /// After each journal append, `WAIT` for this many replicas to have it (0 = do not
    /// wait): narrows what a failover of the journal's master can lose (README, "Scale-out").
    pub wait_replicas: u32,
    /// How long one `WAIT` may take, ms; a commit whose `WAIT` saw fewer replicas fails
    /// and is retried (the append itself is idempotent).
    pub wait_timeout_ms: u64,
    /// The ledger lease, ms: a serving process holds `giftstream:{ledger…}:owner` for
    /// this long and renews it with every append (and every third of it when idle). A
    /// second process for the same ledger refuses to start, and a process that lost the
    /// lease is fenced: its appends are refused and it exits (README, "One writer per
    /// ledger"). A restart after a crash takes over at once on the same host (the dead
    /// holder's pid is gone), else waits for its lease to run out.
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Where snapshots go (`GIFTSTREAM_DATA_DIR`).
    pub dir: PathBuf,
    /// Take a snapshot at least this often, ms (0 = not by time).
    pub interval_ms: u64,
    /// ... or once this many events were committed since the last one (0 = not by count).
    pub events: u64,
    /// Snapshots kept (older ones are deleted).
    pub keep: usize,
    /// After a snapshot, delete journal entries covered by the oldest kept snapshot.
    pub trim_journal: bool,
    /// The forked child takes its own copy of the resident pages before it encodes, so
    /// the serving process does not copy them in its page faults (faster acks after a
    /// fork; the child holds a second copy of the resident memory while it writes).
    /// `false`: the serving process copies only the pages it writes to meanwhile (less
    /// memory when the load touches little of the state, slower acks when it touches
    /// much). Linux only; elsewhere ignored.
    pub copy_pages_in_child: bool,
    /// `fork` or `replica` (see [`SnapshotMethod`]).
    pub method: SnapshotMethod,
    /// The `giftstream` executable the replica runs as (`giftstream snapshot-replica`);
    /// empty = this process's own. Not read from the file: for embedders and tests whose
    /// process is not `giftstream`.
    #[serde(skip)]
    pub replica_exe: PathBuf,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dir: PathBuf::from("data"),
            interval_ms: 300_000,
            events: 10_000_000,
            keep: 3,
            trim_journal: true,
            copy_pages_in_child: true,
            method: SnapshotMethod::Fork,
            replica_exe: PathBuf::new(),
        }
    }
}

/// The Redis read model (creator totals, leaderboards, stream goals), fed from
/// committed batches off the ack path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadModelConfig {
    /// Project into Redis (only with a Redis URL).
    pub enabled: bool,
    /// Coalescing window, ms: one write per distinct key per window.
    pub window_ms: u64,
    /// The lag bound, ms: beyond it the projector flushes without waiting for the window,
    /// logs a warning and counts `giftstream_read_model_lag_exceeded_total`.
    pub lag_max_ms: u64,
    /// Most Redis operations in one atomic read-model write (bounds how long one write
    /// blocks Redis; a window with more keys is written in several).
    pub ops_per_write_max: usize,
    /// Most operations one coalescing window gathers before it is written (in writes of
    /// `ops_per_write_max`): bounds the projector's pending memory.
    pub ops_per_window_max: usize,
    /// Committed runs queued for the projector; when full, it reads the journal instead.
    pub queue_runs_max: usize,
    /// Most of the wall time, in percent (5..=100), that the projector keeps Redis busy
    /// with its writes: after a write that took `t` it pauses `t x (100 / p - 1)`. Below
    /// 100 it protects journal appends (the ack latency) when the read model cannot keep
    /// up, at the price of more lag. 100 = no pause.
    pub redis_share_percent: u8,
    /// Also project wallet balances (`user:<id>` hashes).
    pub wallets: bool,
    /// The Redis the read model is written to; "" = the journal's (`redis.url`). A
    /// separate instance keeps read-model writes from delaying journal appends
    /// (`GIFTSTREAM_READ_MODEL_URL`).
    pub url: String,
    /// Hash-tagged buckets the read model's keys are spread over (1..=1024; 1 = every key
    /// in the journal's slot). On a Redis Cluster each bucket is one slot, so more
    /// buckets spread the read model's writes over the masters. Every node of a cluster
    /// uses the same count (recorded in Redis; a start with another is refused).
    pub buckets: u32,
    /// Projector tasks (1..=`buckets`): each folds every committed event and writes its
    /// part of the buckets (bucket `b` is projector `b mod projectors`'s), so a node's
    /// read model can use more than one core.
    pub projectors: u32,
    /// The nice value (0..=19) of the projectors' threads: each projector runs on a
    /// thread of its own, and above 0 the serving threads (acks) get the CPU first when
    /// both want it; the projector then runs on what they leave. 0 = the serving
    /// threads' priority.
    pub nice: i32,
}

impl ReadModelConfig {
    /// The most buckets (`read_model.buckets`): the read model's layout takes its bound
    /// from here, so the config depends on nothing above it.
    pub const BUCKETS_MAX: u32 = 1024;

    /// The read model's Redis: its own URL, else the journal's.
    pub fn redis_url<'a>(&'a self, journal: &'a str) -> &'a str {
        if self.url.is_empty() {
            journal
        } else {
            &self.url
        }
    }
}

impl Default for ReadModelConfig {
    fn default() -> Self {
        ReadModelConfig {
            enabled: true,
            window_ms: 100,
            lag_max_ms: 1000,
            ops_per_write_max: 256,
            ops_per_window_max: 65_536,
            queue_runs_max: 1024,
            redis_share_percent: 100,
            wallets: false,
            url: String::new(),
            buckets: 1,
            projectors: 1,
            nice: 10,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            cluster: false,
            wait_replicas: 0,
            wait_timeout_ms: 1000,
            lease_ms: 3000,
        }
    }
}

/// Optional TLS (rustls) on both listeners: set both paths or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (`GIFTSTREAM_TLS_CERT`); "" = plain TCP.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf (`GIFTSTREAM_TLS_KEY`).
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer tokens (`GIFTSTREAM_TOKENS=secret=scope+scope,secret2=read` replaces them).
    pub tokens: Vec<TokenConfig>,
}

/// `giftstream.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub engine: EngineConfig,
    pub limits: LimitsConfig,
    pub commit: CommitConfig,
    pub redis: RedisConfig,
    pub snapshot: SnapshotConfig,
    pub read_model: ReadModelConfig,
    pub change_stream: ChangeStreamConfig,
    pub history: HistoryConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub cluster: ClusterConfig,
}

/// Shortest accepted token: shorter secrets are guessable.
pub const TOKEN_CHARS_MIN: usize = 16;

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError::new("giftstream.toml", e.to_string().trim().replace('\n', " "))
        })
    }

    /// Reads the file at `GIFTSTREAM_CONFIG` (default `config/giftstream.toml`), applies
    /// the environment overrides and validates.
    pub fn load_from_env() -> Result<Config, ConfigError> {
        let path = std::env::var("GIFTSTREAM_CONFIG")
            .unwrap_or_else(|_| "config/giftstream.toml".to_owned());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::new("GIFTSTREAM_CONFIG", format!("cannot read {path}: {e}"))
        })?;
        let mut config = Config::from_toml_str(&text)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `GIFTSTREAM_*` overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn addr(name: &str, v: &str) -> Result<SocketAddr, ConfigError> {
            v.parse()
                .map_err(|e| ConfigError::new(name, format!("not a socket address ({v:?}): {e}")))
        }
        if let Some(v) = var("GIFTSTREAM_HTTP_ADDR") {
            self.server.http_addr = addr("GIFTSTREAM_HTTP_ADDR", &v)?;
        }
        if let Some(v) = var("GIFTSTREAM_TCP_ADDR") {
            self.server.tcp_addr = addr("GIFTSTREAM_TCP_ADDR", &v)?;
        }
        if let Some(v) = var("GIFTSTREAM_REDIS_URL") {
            self.redis.url = v;
        }
        if let Some(v) = var("GIFTSTREAM_DATA_DIR") {
            self.snapshot.dir = PathBuf::from(v);
        }
        if let Some(v) = var("GIFTSTREAM_ECONOMY") {
            self.server.economy = v;
        }
        if let Some(v) = var("GIFTSTREAM_ACK") {
            self.server.ack = match v.as_str() {
                "applied" => AckMode::Applied,
                "durable" => AckMode::Durable,
                _ => {
                    return Err(ConfigError::new(
                        "GIFTSTREAM_ACK",
                        "must be `applied` or `durable`",
                    ));
                }
            };
        }
        if let Some(v) = var("GIFTSTREAM_READ_MODEL_URL") {
            self.read_model.url = v;
        }
        if let Some(v) = var("GIFTSTREAM_TLS_CERT") {
            self.tls.cert = PathBuf::from(v);
        }
        if let Some(v) = var("GIFTSTREAM_TLS_KEY") {
            self.tls.key = PathBuf::from(v);
        }
        if let Some(v) = var("GIFTSTREAM_CLUSTER_NODE") {
            self.cluster.node = v;
        }
        if let Some(v) = var("GIFTSTREAM_TOKENS") {
            self.auth.tokens = parse_tokens(&v)?;
        }
        // A file of `secret=scope+scope` lines (e.g. a mounted secret): the secrets stay
        // out of the environment and of process listings.
        if let Some(path) = var("GIFTSTREAM_TOKENS_FILE") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new("GIFTSTREAM_TOKENS_FILE", format!("{path}: {e}")))?;
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            self.auth.tokens = parse_tokens(&lines.join(","))?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        let l = &self.limits;
        let bounded = |key: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(ConfigError::new(
                    key,
                    format!("must be in 1..={max}, got {v}"),
                ))
            } else {
                Ok(())
            }
        };
        bounded(
            "limits.frame_bytes_max",
            l.frame_bytes_max,
            FRAME_BYTES_MAX_LIMIT,
        )?;
        bounded(
            "limits.events_per_frame_max",
            l.events_per_frame_max,
            1_000_000,
        )?;
        bounded("limits.inflight_frames_max", l.inflight_frames_max, 65_536)?;
        bounded("limits.connections_max", l.connections_max, 1_000_000)?;
        bounded(
            "limits.http_body_bytes_max",
            l.http_body_bytes_max,
            256 << 20,
        )?;
        bounded(
            "limits.http_events_per_batch_max",
            l.http_events_per_batch_max,
            1_000_000,
        )?;
        bounded(
            "limits.sse_subscribers_per_stream_max",
            l.sse_subscribers_per_stream_max,
            1_000_000,
        )?;
        bounded(
            "limits.sse_subscribers_max",
            l.sse_subscribers_max,
            1_000_000,
        )?;
        bounded("limits.sse_buffer_events", l.sse_buffer_events, 1_000_000)?;
        // 0 is allowed for these two: no replay, no idle stream kept.
        if l.sse_replay_events > SSE_REPLAY_EVENTS_LIMIT {
            return Err(ConfigError::new(
                "limits.sse_replay_events",
                format!(
                    "must be in 0..={SSE_REPLAY_EVENTS_LIMIT}, got {}",
                    l.sse_replay_events
                ),
            ));
        }
        if l.sse_replay_idle_streams_max > 1_000_000 {
            return Err(ConfigError::new(
                "limits.sse_replay_idle_streams_max",
                format!(
                    "must be in 0..=1000000, got {}",
                    l.sse_replay_idle_streams_max
                ),
            ));
        }
        if l.sse_replay_keep_ms > SSE_REPLAY_KEEP_MS_LIMIT {
            return Err(ConfigError::new(
                "limits.sse_replay_keep_ms",
                format!(
                    "must be in 0..={SSE_REPLAY_KEEP_MS_LIMIT}, got {}",
                    l.sse_replay_keep_ms
                ),
            ));
        }
        if self.tls.cert.as_os_str().is_empty() != self.tls.key.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "tls",
                "set both tls.cert and tls.key (GIFTSTREAM_TLS_CERT, GIFTSTREAM_TLS_KEY) or neither",
            ));
        }
        if l.read_timeout_ms == 0 {
            return Err(ConfigError::new(
                "limits.read_timeout_ms",
                "must be positive",
            ));
        }
        for (key, ms) in [
            ("limits.write_timeout_ms", l.write_timeout_ms),
            (
                "limits.http_header_read_timeout_ms",
                l.http_header_read_timeout_ms,
            ),
            (
                "limits.http_body_read_timeout_ms",
                l.http_body_read_timeout_ms,
            ),
            ("limits.http_idle_timeout_ms", l.http_idle_timeout_ms),
            ("limits.auth_failure_window_ms", l.auth_failure_window_ms),
        ] {
            if ms == 0 || ms > 3_600_000 {
                return Err(ConfigError::new(key, "must be in 1..=3600000"));
            }
        }
        bounded(
            "limits.http_requests_inflight_max",
            l.http_requests_inflight_max,
            1_000_000,
        )?;
        bounded(
            "limits.http2_streams_per_connection_max",
            l.http2_streams_per_connection_max as usize,
            1_000,
        )?;
        if l.auth_failures_per_peer_max > 1_000_000 {
            return Err(ConfigError::new(
                "limits.auth_failures_per_peer_max",
                "must be in 0..=1000000",
            ));
        }
        if self.server.shutdown_grace_ms > 600_000 {
            return Err(ConfigError::new(
                "server.shutdown_grace_ms",
                "must be in 0..=600000",
            ));
        }
        let c = &self.commit;
        if c.interval_ms == 0 || c.interval_ms > 10_000 {
            return Err(ConfigError::new(
                "commit.interval_ms",
                "must be in 1..=10000",
            ));
        }
        bounded("commit.events_max", c.events_max, 10_000_000)?;
        if c.pending_events_max < c.events_max as u64 {
            return Err(ConfigError::new(
                "commit.pending_events_max",
                "must be at least commit.events_max",
            ));
        }
        let r = &self.read_model;
        if r.window_ms == 0 || r.window_ms > 60_000 {
            return Err(ConfigError::new(
                "read_model.window_ms",
                "must be in 1..=60000",
            ));
        }
        if r.lag_max_ms < r.window_ms {
            return Err(ConfigError::new(
                "read_model.lag_max_ms",
                "must be at least read_model.window_ms",
            ));
        }
        bounded(
            "read_model.ops_per_write_max",
            r.ops_per_write_max,
            1_000_000,
        )?;
        bounded(
            "read_model.ops_per_window_max",
            r.ops_per_window_max,
            4_000_000,
        )?;
        if r.ops_per_window_max < r.ops_per_write_max {
            return Err(ConfigError::new(
                "read_model.ops_per_window_max",
                "must be at least read_model.ops_per_write_max",
            ));
        }
        bounded("read_model.queue_runs_max", r.queue_runs_max, 1_000_000)?;
        bounded(
            "read_model.buckets",
            r.buckets as usize,
            ReadModelConfig::BUCKETS_MAX as usize,
        )?;
        bounded(
            "read_model.projectors",
            r.projectors as usize,
            r.buckets as usize,
        )
        .map_err(|_| {
            ConfigError::new("read_model.projectors", "must be in 1..=read_model.buckets")
        })?;
        if !(0..=19).contains(&r.nice) {
            return Err(ConfigError::new("read_model.nice", "must be in 0..=19"));
        }
        if !(5..=100).contains(&r.redis_share_percent) {
            return Err(ConfigError::new(
                "read_model.redis_share_percent",
                "must be in 5..=100",
            ));
        }
        downstream::validate(&self.change_stream, &self.history)?;
        if self.snapshot.keep == 0 || self.snapshot.keep > 1000 {
            return Err(ConfigError::new("snapshot.keep", "must be in 1..=1000"));
        }
        if !self.engine.keep_log {
            return Err(ConfigError::new(
                "engine.keep_log",
                "must be true for `serve`: the log feeds every commit",
            ));
        }
        if !matches!(self.server.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::new(
                "server.log_format",
                "must be `text` or `json`",
            ));
        }
        if self.server.worker_threads > 1024 {
            return Err(ConfigError::new(
                "server.worker_threads",
                "must be at most 1024",
            ));
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.token.chars().count() < TOKEN_CHARS_MIN {
                return Err(ConfigError::new(
                    format!("auth.tokens[{i}].token"),
                    format!("must be at least {TOKEN_CHARS_MIN} characters"),
                ));
            }
            if t.scopes.is_empty() {
                return Err(ConfigError::new(
                    format!("auth.tokens[{i}].scopes"),
                    "is empty",
                ));
            }
        }
        if self.auth.tokens.is_empty() {
            return Err(ConfigError::new(
                "auth.tokens",
                "no tokens: set some in the file or GIFTSTREAM_TOKENS",
            ));
        }
        if self.redis.wait_replicas > 16 {
            return Err(ConfigError::new(
                "redis.wait_replicas",
                "must be at most 16",
            ));
        }
        if self.redis.wait_timeout_ms == 0 || self.redis.wait_timeout_ms > 60_000 {
            return Err(ConfigError::new(
                "redis.wait_timeout_ms",
                "must be in 1..=60000",
            ));
        }
        if !(500..=60_000).contains(&self.redis.lease_ms) {
            return Err(ConfigError::new("redis.lease_ms", "must be in 500..=60000"));
        }
        if self.redis.cluster && self.redis.url.is_empty() {
            return Err(ConfigError::new(
                "redis.cluster",
                "needs redis.url (the seed nodes of the Redis Cluster)",
            ));
        }
        if self
            .cluster
            .assignment()?
            .is_some_and(|a| a.local.is_some())
        {
            // The nodes merge their creator totals and leaderboards in one Redis read
            // model, and answer creator reads from it.
            if self.redis.url.is_empty() {
                return Err(ConfigError::new(
                    "redis.url",
                    "a cluster node needs Redis (its journal and the shared read model)",
                ));
            }
            if !self.read_model.enabled || !self.read_model.url.is_empty() {
                return Err(ConfigError::new(
                    "read_model",
                    "a cluster node needs read_model.enabled = true and read_model.url = \"\" (the read model is shared in redis.url)",
                ));
            }
        }
        Ok(())
    }

    /// The economy this config names (the embedded one for an empty path).
    pub fn load_economy(&self) -> Result<Economy, ConfigError> {
        if self.server.economy.is_empty() {
            return Ok(Economy::from_toml_str(EMBEDDED_ECONOMY_TOML)?);
        }
        let path = Path::new(&self.server.economy);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "server.economy",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(Economy::from_toml_str(&text)?)
    }
}

/// Parses `GIFTSTREAM_TOKENS`: `secret=scope+scope,secret2=read`.
pub fn parse_tokens(v: &str) -> Result<Vec<TokenConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, item) in v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let key = format!("GIFTSTREAM_TOKENS[{i}]");
        let (token, scopes) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::new(&key, "expected secret=scope+scope"))?;
        let scopes = scopes
            .split('+')
            .map(|s| {
                s.trim()
                    .parse::<Scope>()
                    .map_err(|e| ConfigError::new(&key, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(TokenConfig {
            token: token.trim().to_owned(),
            scopes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../config/giftstream.toml");

    #[test]
    fn the_shipped_config_is_valid() {
        let config = Config::from_toml_str(SHIPPED).unwrap();
        config.validate().unwrap();
        assert_eq!(config.server.ack, AckMode::Durable);
    }

    #[test]
    fn env_overrides_apply_and_name_the_variable() {
        let mut config = Config::from_toml_str(SHIPPED).unwrap();
        let env = |name: &str| match name {
            "GIFTSTREAM_HTTP_ADDR" => Some("127.0.0.1:9999".to_owned()),
            "GIFTSTREAM_TOKENS" => {
                Some("0123456789abcdef=read+ingest, fedcba9876543210=admin".to_owned())
            }
            "GIFTSTREAM_REDIS_URL" => Some(String::new()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.server.http_addr.port(), 9999);
        assert_eq!(config.auth.tokens.len(), 2);
        assert_eq!(
            config.auth.tokens[0].scopes,
            vec![Scope::Read, Scope::Ingest]
        );
        assert!(config.redis.url.is_empty());

        let err = config
            .apply_env(|n| (n == "GIFTSTREAM_TCP_ADDR").then(|| "nowhere".to_owned()))
            .unwrap_err();
        assert_eq!(err.key, "GIFTSTREAM_TCP_ADDR");
        let err = parse_tokens("abc=root").unwrap_err();
        assert_eq!(err.key, "GIFTSTREAM_TOKENS[0]");

        // Tokens from a file: one per line, comments and blank lines skipped.
        let dir = std::env::temp_dir().join(format!("giftstream-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(
            &file,
            "# backend\n0123456789abcdef=ingest+read\n\nfedcba9876543210=read\n",
        )
        .unwrap();
        let path = file.display().to_string();
        config
            .apply_env(|n| (n == "GIFTSTREAM_TOKENS_FILE").then(|| path.clone()))
            .unwrap();
        assert_eq!(config.auth.tokens.len(), 2);
        assert_eq!(config.auth.tokens[1].scopes, vec![Scope::Read]);
        let err = config
            .apply_env(|n| (n == "GIFTSTREAM_TOKENS_FILE").then(|| "/nonexistent/t".to_owned()))
            .unwrap_err();
        assert_eq!(err.key, "GIFTSTREAM_TOKENS_FILE");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (from, to, key) in [
            ("shards = 4", "shards = 6", "engine.shards"),
            ("interval_ms = 1", "interval_ms = 0", "commit.interval_ms"),
            (
                "frame_bytes_max = 4194304",
                "frame_bytes_max = 0",
                "limits.frame_bytes_max",
            ),
            ("[limits]", "[limits]\nframes = 1", "giftstream.toml"),
            (
                "redis_share_percent = 100",
                "redis_share_percent = 4",
                "read_model.redis_share_percent",
            ),
            ("buckets = 1", "buckets = 1025", "read_model.buckets"),
            ("projectors = 1", "projectors = 2", "read_model.projectors"),
            ("projectors = 1", "projectors = 0", "read_model.projectors"),
            ("nice = 10", "nice = 20", "read_model.nice"),
            ("nice = 10", "nice = -1", "read_model.nice"),
            (
                "http_idle_timeout_ms = 60000",
                "http_idle_timeout_ms = 0",
                "limits.http_idle_timeout_ms",
            ),
            (
                "http_header_read_timeout_ms = 10000",
                "http_header_read_timeout_ms = 3600001",
                "limits.http_header_read_timeout_ms",
            ),
            (
                "http_requests_inflight_max = 256",
                "http_requests_inflight_max = 0",
                "limits.http_requests_inflight_max",
            ),
            (
                "http2_streams_per_connection_max = 16",
                "http2_streams_per_connection_max = 0",
                "limits.http2_streams_per_connection_max",
            ),
            (
                "shutdown_grace_ms = 5000",
                "shutdown_grace_ms = 600001",
                "server.shutdown_grace_ms",
            ),
        ] {
            assert!(SHIPPED.contains(from), "{from}");
            let text = SHIPPED.replacen(from, to, 1);
            let err = Config::from_toml_str(&text)
                .and_then(|c| c.validate().map(|_| c))
                .unwrap_err();
            assert_eq!(err.key, key, "{to}: {err}");
        }
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    const CLUSTER: &str = include_str!("../../config/cluster.toml");

    #[test]
    fn the_shipped_cluster_config_is_valid_for_each_node() {
        for node in ["a", "b"] {
            let mut config = Config::from_toml_str(CLUSTER).unwrap();
            config
                .apply_env(|k| (k == "GIFTSTREAM_CLUSTER_NODE").then(|| node.to_owned()))
                .unwrap();
            config.validate().unwrap();
            let map = crate::cluster::PartitionMap::from_config(&config.cluster)
                .unwrap()
                .unwrap();
            assert_eq!(map.local().unwrap().name, node);
            assert_eq!(map.partitions(), 16);
        }
    }

    #[test]
    fn a_cluster_node_needs_redis_and_the_shared_read_model() {
        let node = |edit: &dyn Fn(&mut Config)| {
            let mut config = Config::from_toml_str(CLUSTER).unwrap();
            config.cluster.node = "a".into();
            edit(&mut config);
            config.validate().map_err(|e| e.key)
        };
        assert_eq!(node(&|_| {}), Ok(()));
        assert_eq!(node(&|c| c.redis.url.clear()), Err("redis.cluster".into()));
        assert_eq!(
            node(&|c| {
                c.redis.url.clear();
                c.redis.cluster = false;
            }),
            Err("redis.url".into())
        );
        assert_eq!(
            node(&|c| c.read_model.enabled = false),
            Err("read_model".into())
        );
        assert_eq!(
            node(&|c| c.read_model.url = "redis://x:1".into()),
            Err("read_model".into())
        );
        assert_eq!(
            node(&|c| c.redis.wait_replicas = 17),
            Err("redis.wait_replicas".into())
        );
        assert_eq!(
            node(&|c| c.redis.wait_timeout_ms = 0),
            Err("redis.wait_timeout_ms".into())
        );
        assert_eq!(
            node(&|c| c.redis.lease_ms = 100),
            Err("redis.lease_ms".into())
        );
        assert_eq!(
            node(&|c| c.cluster.node = "z".into()),
            Err("cluster.node".into())
        );
        assert_eq!(
            node(&|c| c.cluster.partitions = 8),
            Err("cluster.nodes[1].partitions".into())
        );
    }
}
