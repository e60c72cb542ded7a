//! Hostile clients to run beside a normal load (`giftload hostile`, issue #34): does the
//! server keep acknowledging events while it sheds clients that hold sockets, never
//! read, churn live feeds or guess tokens?
//!
//! Each kind is a fixed number of sockets (`bad_token`: a fixed request rate); a socket
//! the server closes is replaced after [`RECONNECT_PAUSE`]:
//! - `slowloris`: an HTTP request head trickled in one byte per interval, never finished
//!   (closed `limits.http_header_read_timeout_ms` after its first byte);
//! - `idle_http`: HTTP connections that send nothing (`limits.http_idle_timeout_ms`);
//! - `idle_tcp`: binary-protocol connections that never authenticate: even ones send
//!   nothing, odd ones the first bytes of an Auth frame (the authentication deadline);
//! - `stalled_reader`: binary-protocol connections that authenticate and send batches
//!   but never read a byte (`limits.write_timeout_ms`);
//! - `feed_churn`: live-feed (SSE) subscriptions, each on a stream id not used before in
//!   the run, held for a moment and dropped; refusals (`429 TOO_MANY_SUBSCRIBERS`,
//!   `503 CONNECTION_LIMIT`) are counted by status;
//! - `bad_token`: HTTP requests with unknown bearer tokens, each announcing a body it
//!   never sends: `401`, then `429 AUTH_RATE_LIMITED` once the address has spent its
//!   failed-authentication budget — answered from the head, and the connection closed.
//!
//! A socket's time to close runs from its connect to the moment its client sees the
//! server's close (end of stream, a reset, or a write that fails). Every wait is bounded:
//! a socket the server has not closed after `hold_max` is dropped and counted `outlived`
//! (a bound the server failed to enforce), and [`Hostile::stop`] ends every task.
//!
//! Source addresses: the failed-authentication limit is per peer address, and once the
//! bad tokens have spent the budget of 127.0.0.1 every connection from it is refused
//! before its token is looked at — the normal load's too. That is the limit doing its
//! job against a guesser on the backend's own address, not what this measures: so with
//! an IPv4 loopback target, each kind connects from its own loopback address
//! ([`Kind::source`], 127.0.0.2 and up) and the normal load from 127.0.0.1.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use giftstream::protocol::{self, ClientFrame, ServerFrame, WireEvent};
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// Most sockets of one kind: far above the server's `connections_max` default (1,024),
/// so a run can reach that cap, and well inside a process's file limit.
pub const SOCKETS_PER_KIND_MAX: usize = 2_000;
/// Most bad-token requests per second.
pub const BAD_TOKENS_PER_SECOND_MAX: u32 = 1_000;
/// A connect that takes longer fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a socket replaces one that closed: the server's close never turns into
/// a busy loop of reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a connect failed (a refused or full listener).
const CONNECT_RETRY: Duration = Duration::from_secs(1);
/// Bytes of an answer kept to read its status (and error code).
const HEAD_BYTES_MAX: usize = 2_048;
/// Bytes a slowloris head grows by at most (at one byte a second: over an hour).
const SLOWLORIS_BYTES_MAX: usize = 4_096;
/// Events per stalled reader's batch. The same events in every batch (and on every
/// connection of the run): after the first, each is a duplicate, answered from the
/// idempotency index, so stalled readers add no ids to it and move no coins.
const STALLED_BATCH_EVENTS: usize = 256;
/// A stalled reader sends a batch this often, until its writes block. The server's
/// send buffer for it grows to ~90 KiB (~60 batches' answers) before its writes wait:
/// at this pace that takes a second or two, and the write timeout starts then.
const STALLED_BATCH_INTERVAL: Duration = Duration::from_millis(20);
/// Batches a stalled reader sends at most on one connection.
const STALLED_BATCHES_MAX: usize = 100_000;
/// A stalled reader's receive buffer, and the segment size it announces (the usual
/// Ethernet MSS): over loopback the kernel's 64 KiB segments would give the server a
/// send buffer of megabytes, and the stall would take that many batches to start.
const STALLED_RECV_BUFFER_BYTES: u32 = 4_096;
const STALLED_MSS_BYTES: u32 = 1_460;
/// How long a feed or bad-token request waits for its answer's head.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a bad-token connection waits for the server to close it after the answer.
const BAD_TOKEN_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long [`Hostile::stop`] waits for the tasks before aborting them.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Time to close is recorded in ms, up to an hour.
const CLOSE_MS_MAX: u64 = 3_600_000;

/// A hostile kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Slowloris,
    IdleHttp,
    IdleTcp,
    StalledReader,
    FeedChurn,
    BadToken,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Slowloris,
        Kind::IdleHttp,
        Kind::IdleTcp,
        Kind::StalledReader,
        Kind::FeedChurn,
        Kind::BadToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Slowloris => "slowloris",
            Kind::IdleHttp => "idle_http",
            Kind::IdleTcp => "idle_tcp",
            Kind::StalledReader => "stalled_reader",
            Kind::FeedChurn => "feed_churn",
            Kind::BadToken => "bad_token",
        }
    }

    /// The loopback address this kind connects from (an IPv4 loopback target): its own
    /// failed-authentication budget (see the module documentation).
    pub fn source(self) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 2 + self as u8)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct HostileOptions {
    /// The binary protocol.
    pub tcp: SocketAddr,
    /// The HTTP API.
    pub http: SocketAddr,
    /// A token with the ingest scope (stalled readers authenticate with it).
    pub token: String,
    /// A token with the read scope (feed subscriptions).
    pub read_token: String,
    pub slowloris: usize,
    /// A slowloris socket sends one byte of its head this often.
    pub slowloris_byte_interval: Duration,
    pub idle_http: usize,
    pub idle_tcp: usize,
    pub stalled_readers: usize,
    /// Feed subscriptions open at once.
    pub feed_subscribers: usize,
    /// How long a feed subscription is held once it streams.
    pub feed_hold: Duration,
    pub bad_tokens_per_second: u32,
    /// A socket the server has not closed after this long is dropped (`outlived`).
    pub hold_max: Duration,
    /// Connect each kind from its own loopback address ([`Kind::source`]).
    pub own_sources: bool,
}

impl HostileOptions {
    /// The sockets of `kind` (`bad_token`: requests per second).
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Slowloris => self.slowloris,
            Kind::IdleHttp => self.idle_http,
            Kind::IdleTcp => self.idle_tcp,
            Kind::StalledReader => self.stalled_readers,
            Kind::FeedChurn => self.feed_subscribers,
            Kind::BadToken => self.bad_tokens_per_second as usize,
        }
    }

    /// Rejects counts and durations outside their bounds.
    pub fn validate(&self) -> anyhow::Result<()> {
        for kind in Kind::ALL {
            let max = if kind == Kind::BadToken {
                BAD_TOKENS_PER_SECOND_MAX as usize
            } else {
                SOCKETS_PER_KIND_MAX
            };
            anyhow::ensure!(
                self.count(kind) <= max,
                "{}: {} is over the bound {max}",
                kind.name(),
                self.count(kind)
            );
        }
        anyhow::ensure!(
            self.slowloris_byte_interval >= Duration::from_millis(10),
            "the slowloris byte interval must be at least 10 ms"
        );
        anyhow::ensure!(
            self.hold_max >= Duration::from_secs(1) && self.hold_max <= Duration::from_secs(3_600),
            "--hold-max must be within 1 s..1 h"
        );
        anyhow::ensure!(
            self.feed_hold <= self.hold_max,
            "--feed-hold must not exceed --hold-max"
        );
        Ok(())
    }

    fn source(&self, kind: Kind) -> Option<IpAddr> {
        self.own_sources.then_some(IpAddr::V4(kind.source()))
    }
}

/// What one kind saw.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Connections opened, or tried (bad tokens: requests).
    pub attempts: u64,
    pub connect_failures: u64,
    /// Open right now.
    pub open: u64,
    pub closed_by_server: u64,
    /// Closed by giftload on purpose (a feed after its hold; an answered refusal).
    pub closed_by_client: u64,
    /// Still open after `hold_max`: dropped by giftload.
    pub outlived: u64,
    /// Still open when the run ended.
    pub open_at_end: u64,
    /// Connect to the server's close, ms (closes by the server only).
    pub time_to_close_ms: Histogram<u64>,
    /// Answers by status: `401`, `429 AUTH_RATE_LIMITED`, `error 11` (a binary error
    /// frame), `none` (closed without a byte).
    pub statuses: BTreeMap<String, u64>,
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats {
            attempts: 0,
            connect_failures: 0,
            open: 0,
            closed_by_server: 0,
            closed_by_client: 0,
            outlived: 0,
            open_at_end: 0,
            time_to_close_ms: Histogram::new_with_bounds(1, CLOSE_MS_MAX, 3)
                .expect("static bounds"),
            statuses: BTreeMap::new(),
        }
    }
}

impl KindStats {
    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.time_to_close_ms;
        serde_json::json!({
            "attempts": self.attempts,
            "connect_failures": self.connect_failures,
            "closed_by_server": self.closed_by_server,
            "closed_by_client": self.closed_by_client,
            "outlived": self.outlived,
            "open_at_end": self.open_at_end,
            "time_to_close_ms": {
                "p50": h.value_at_quantile(0.5),
                "p99": h.value_at_quantile(0.99),
                "max": h.max(),
            },
            "statuses": self.statuses,
        })
    }
}

/// The counters of every kind. A `parking_lot` mutex per kind, held only to update or
/// copy the counters: nothing awaits while holding it.
#[derive(Default)]
pub struct Board {
    kinds: [parking_lot::Mutex<KindStats>; 6],
}

/// How a socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Server,
    Client,
    Outlived,
    Stopped,
}

impl Board {
    /// A copy of `kind`'s counters.
    pub fn get(&self, kind: Kind) -> KindStats {
        self.kinds[kind as usize].lock().clone()
    }

    fn opened(&self, kind: Kind, ok: bool) {
        let mut s = self.kinds[kind as usize].lock();
        s.attempts += 1;
        if ok {
            s.open += 1;
        } else {
            s.connect_failures += 1;
        }
    }

    fn status(&self, kind: Kind, status: String) {
        *self.kinds[kind as usize]
            .lock()
            .statuses
            .entry(status)
            .or_default() += 1;
    }

    fn ended(&self, kind: Kind, connected: Instant, end: End) {
        let mut s = self.kinds[kind as usize].lock();
        s.open = s.open.saturating_sub(1);
        match end {
            End::Server => {
                s.closed_by_server += 1;
                let ms = connected
                    .elapsed()
                    .as_millis()
                    .clamp(1, CLOSE_MS_MAX.into()) as u64;
                let _ = s.time_to_close_ms.record(ms);
            }
            End::Client => s.closed_by_client += 1,
            End::Outlived => s.outlived += 1,
            End::Stopped => s.open_at_end += 1,
        }
    }
}

/// The running hostile clients.
pub struct Hostile {
    board: Arc<Board>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hostile {
    /// Starts every kind's sockets (on the current tokio runtime).
    pub fn start(options: &HostileOptions) -> anyhow::Result<Hostile> {
        options.validate()?;
        let o = Arc::new(options.clone());
        let board = Arc::new(Board::default());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        // Feed subscriptions walk stream ids from a random start: ids no earlier run
        // (or the normal load's streams, numbered from 0) is likely to hold.
        let next_stream = Arc::new(AtomicU64::new(
            (1 << 40) + (rand::random::<u64>() % (1 << 40)),
        ));
        let stalled_batch = Arc::new(stalled_events());
        for _ in 0..options.slowloris {
            tasks.push(tokio::spawn(slowloris(
                o.clone(),
                board.clone(),
                stopped.clone(),
            )));
        }
        for _ in 0..options.idle_http {
            tasks.push(tokio::spawn(idle(
                Kind::IdleHttp,
                o.clone(),
                board.clone(),
                stopped.clone(),
                &[],
            )));
        }
        for i in 0..options.idle_tcp {
            // The first 6 bytes of a 23-byte Auth frame: a length prefix, the variant,
            // the token's length, and no more.
            const PARTIAL_AUTH: &[u8] = &[0, 0, 0, 23, 0, 21];
            let send: &'static [u8] = if i % 2 == 0 { &[] } else { PARTIAL_AUTH };
            tasks.push(tokio::spawn(idle(
                Kind::IdleTcp,
                o.clone(),
                board.clone(),
                stopped.clone(),
                send,
            )));
        }
        for _ in 0..options.stalled_readers {
            tasks.push(tokio::spawn(stalled_reader(
                o.clone(),
                board.clone(),
                stopped.clone(),
                stalled_batch.clone(),
            )));
        }
        for i in 0..options.feed_subscribers {
            // Staggered over one hold, so that subscriptions come and go all the time
            // rather than all together.
            let stagger = options
                .feed_hold
                .mul_f64(i as f64 / options.feed_subscribers as f64);
            tasks.push(tokio::spawn(feed_churn(
                o.clone(),
                board.clone(),
                stopped.clone(),
                next_stream.clone(),
                stagger,
            )));
        }
        if options.bad_tokens_per_second > 0 {
            tasks.push(tokio::spawn(bad_tokens(
                o.clone(),
                board.clone(),
                stopped.clone(),
            )));
        }
        Ok(Hostile { board, stop, tasks })
    }

    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Stops every socket (those still open count `open_at_end`) and returns the
    /// counters. Tasks not done within [`STOP_WAIT`] are aborted.
    pub async fn stop(self) -> Arc<Board> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.board
    }
}

/// Resolves when the run is told to stop (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `d`, or less if the run stops.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = stopped(stop) => {}
    }
}

/// Connects from `kind`'s source address; counts the attempt.
async fn open(
    o: &HostileOptions,
    board: &Board,
    kind: Kind,
    addr: SocketAddr,
    small_window: bool,
) -> Option<TcpStream> {
    let connect = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = o.source(kind) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        if small_window {
            socket.set_recv_buffer_size(STALLED_RECV_BUFFER_BYTES)?;
            socket2::SockRef::from(&socket).set_tcp_mss(STALLED_MSS_BYTES)?;
        }
        tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    };
    let stream = connect.await.ok();
    board.opened(kind, stream.is_some());
    stream
}

/// Reads (and discards) until the server closes the connection — end of stream or an
/// error — keeping the first [`HEAD_BYTES_MAX`] bytes in `head`. False if `bound`
/// passed first.
async fn until_closed<R: AsyncRead + Unpin>(
    r: &mut R,
    head: &mut Vec<u8>,
    bound: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    let mut buf = [0u8; 4_096];
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(n)) => {
                let room = HEAD_BYTES_MAX.saturating_sub(head.len());
                head.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// How reading an answer's head went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// The head's blank line arrived (or [`HEAD_BYTES_MAX`] bytes).
    Complete,
    /// The connection ended first.
    Closed,
    TimedOut,
}

/// Reads until the end of an HTTP head, within `bound`.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R, head: &mut Vec<u8>, bound: Duration) -> Head {
    let deadline = tokio::time::Instant::now() + bound;
    let mut buf = [0u8; 1_024];
    while head.len() < HEAD_BYTES_MAX {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Head::Complete;
        }
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return Head::TimedOut,
            Ok(Ok(0) | Err(_)) => return Head::Closed,
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n.min(HEAD_BYTES_MAX - head.len())]),
        }
    }
    Head::Complete
}

/// `401`, `429 AUTH_RATE_LIMITED` (the error body's code when it arrived), or `none`.
pub fn http_status(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let Some(status) = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|t| t.get(..3))
    else {
        return if head.is_empty() {
            "none".to_owned()
        } else {
            "unparsed".to_owned()
        };
    };
    let code = text.split_once("\"code\":\"").and_then(|(_, rest)| {
        rest.split_once('"')
            .map(|(code, _)| code)
            .filter(|c| !c.is_empty() && c.len() <= 40)
    });
    match code {
        Some(code) => format!("{status} {code}"),
        None => status.to_owned(),
    }
}

/// `error 11` (a binary error frame's code), `frame` (another frame), or `none`.
fn frame_status(head: &[u8]) -> String {
    if head.is_empty() {
        return "none".to_owned();
    }
    let Some(len) = head
        .get(..protocol::HEADER_BYTES)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return "unparsed".to_owned();
    };
    match head
        .get(protocol::HEADER_BYTES..protocol::HEADER_BYTES + len)
        .map(protocol::decode::<ServerFrame>)
    {
        Some(Ok(ServerFrame::Error { code, .. })) => format!("error {code}"),
        Some(Ok(_)) => "frame".to_owned(),
        _ => "unparsed".to_owned(),
    }
}

/// One slowloris socket at a time, until stopped: the head is a request line, a Host
/// line and a header whose value grows a byte per interval and never ends its line.
async fn slowloris(o: Arc<HostileOptions>, board: Arc<Board>, mut stop: watch::Receiver<bool>) {
    const PREFIX: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: giftload\r\nX-Slowloris: ";
    let kind = Kind::Slowloris;
    while !*stop.borrow() {
        let Some(stream) = open(&o, &board, kind, o.http, false).await else {
            pause(&mut stop, CONNECT_RETRY).await;
            continue;
        };
        let connected = Instant::now();
        let (mut rd, mut wr) = stream.into_split();
        let interval = o.slowloris_byte_interval;
        // Returns only when a write fails: the server closed the connection.
        let drip = async move {
            for i in 0..SLOWLORIS_BYTES_MAX {
                let byte = PREFIX.get(i).copied().unwrap_or(b'a');
                if wr.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
            std::future::pending::<()>().await;
        };
        let mut head = Vec::new();
        let end = tokio::select! {
            closed = until_closed(&mut rd, &mut head, o.hold_max) => {
                if closed { End::Server } else { End::Outlived }
            }
            () = drip => End::Server,
            () = stopped(&mut stop) => End::Stopped,
        };
        if end == End::Server {
            board.status(kind, http_status(&head));
        }
        board.ended(kind, connected, end);
        pause(&mut stop, RECONNECT_PAUSE).await;
    }
}

/// One idle socket at a time, until stopped: it sends `send` (maybe nothing), then
/// waits for the server to close it.
async fn idle(
    kind: Kind,
    o: Arc<HostileOptions>,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
    send: &'static [u8],
) {
    let addr = if kind == Kind::IdleTcp { o.tcp } else { o.http };
    while !*stop.borrow() {
        let Some(mut stream) = open(&o, &board, kind, addr, false).await else {
            pause(&mut stop, CONNECT_RETRY).await;
            continue;
        };
        let connected = Instant::now();
        let mut head = Vec::new();
        let end = if !send.is_empty() && stream.write_all(send).await.is_err() {
            End::Server
        } else {
            tokio::select! {
                closed = until_closed(&mut stream, &mut head, o.hold_max) => {
                    if closed { End::Server } else { End::Outlived }
                }
                () = stopped(&mut stop) => End::Stopped,
            }
        };
        if end == End::Server {
            let status = if kind == Kind::IdleTcp {
                frame_status(&head)
            } else {
                http_status(&head)
            };
            board.status(kind, status);
        }
        board.ended(kind, connected, end);
        pause(&mut stop, RECONNECT_PAUSE).await;
    }
}

/// A stalled reader's events: gifts from senders no scenario funds (ids from 2^50), so
/// each is refused for want of coins the first time and a duplicate after that.
fn stalled_events() -> Vec<WireEvent> {
    // The normal load's ids are `nonce << 64 | ...` with another random nonce.
    let base = u128::from(rand::random::<u64>()) << 64;
    (0..STALLED_BATCH_EVENTS as u64)
        .map(|i| WireEvent::Gift {
            id: base | u128::from(i),
            sender: (1 << 50) + i,
            creator: 0,
            stream: 0,
            gift: 0,
            count: 1,
        })
        .collect()
}

/// One stalled reader at a time, until stopped: it authenticates and sends a batch every
/// [`STALLED_BATCH_INTERVAL`] without ever reading, so the server's answers fill its
/// send buffer and this socket's receive buffer, and its writer waits for a client that
/// never takes a byte. A write of ours that fails means the server closed the socket.
async fn stalled_reader(
    o: Arc<HostileOptions>,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
    events: Arc<Vec<WireEvent>>,
) {
    let kind = Kind::StalledReader;
    let auth = protocol::frame_bytes(&ClientFrame::Auth {
        token: o.token.clone(),
    });
    while !*stop.borrow() {
        let Some(mut stream) = open(&o, &board, kind, o.tcp, true).await else {
            pause(&mut stop, CONNECT_RETRY).await;
            continue;
        };
        let connected = Instant::now();
        let write = async {
            if stream.write_all(&auth).await.is_err() {
                return;
            }
            for request_id in 1..=STALLED_BATCHES_MAX as u64 {
                let batch = protocol::frame_bytes(&ClientFrame::Request {
                    request_id,
                    events: events.to_vec(),
                });
                if stream.write_all(&batch).await.is_err() {
                    return;
                }
                tokio::time::sleep(STALLED_BATCH_INTERVAL).await;
            }
            std::future::pending::<()>().await;
        };
        let end = tokio::select! {
            () = write => End::Server,
            () = tokio::time::sleep(o.hold_max) => End::Outlived,
            () = stopped(&mut stop) => End::Stopped,
        };
        board.ended(kind, connected, end);
        pause(&mut stop, RECONNECT_PAUSE).await;
    }
}

/// One feed subscription at a time, until stopped, each on the next stream id: it reads
/// the answer's head; a stream is held for `feed_hold` and dropped, a refusal dropped.
async fn feed_churn(
    o: Arc<HostileOptions>,
    board: Arc<Board>,
    mut stop: watch::Receiver<bool>,
    next_stream: Arc<AtomicU64>,
    stagger: Duration,
) {
    let kind = Kind::FeedChurn;
    pause(&mut stop, stagger).await;
    while !*stop.borrow() {
        let Some(mut stream) = open(&o, &board, kind, o.http, false).await else {
            pause(&mut stop, CONNECT_RETRY).await;
            continue;
        };
        let connected = Instant::now();
        let id = next_stream.fetch_add(1, Ordering::Relaxed);
        let request = format!(
            "GET /v1/streams/{id}/feed HTTP/1.1\r\nHost: giftload\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            o.read_token
        );
        let mut head = Vec::new();
        let end = tokio::select! {
            end = async {
                if stream.write_all(request.as_bytes()).await.is_err() {
                    return End::Server;
                }
                match read_head(&mut stream, &mut head, ANSWER_TIMEOUT).await {
                    Head::Complete => {}
                    Head::Closed => {
                        board.status(kind, http_status(&head));
                        return End::Server;
                    }
                    Head::TimedOut => return End::Outlived,
                }
                let status = http_status(&head);
                let streaming = status == "200";
                board.status(kind, status);
                if !streaming {
                    return End::Client;
                }
                let mut rest = Vec::new();
                if until_closed(&mut stream, &mut rest, o.feed_hold).await {
                    End::Server
                } else {
                    End::Client
                }
            } => end,
            () = stopped(&mut stop) => End::Stopped,
        };
        board.ended(kind, connected, end);
        pause(&mut stop, RECONNECT_PAUSE).await;
    }
}

/// `bad_tokens_per_second` requests with unknown tokens, one connection each, one at a
/// time (a slow answer delays the next: the rate is a bound, not a promise). Each is a
/// `POST /v1/events` that announces a body and never sends it: the server must answer
/// from the head, without waiting for the body, and close the connection.
async fn bad_tokens(o: Arc<HostileOptions>, board: Arc<Board>, mut stop: watch::Receiver<bool>) {
    let kind = Kind::BadToken;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / o.bad_tokens_per_second.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => break,
        }
        let Some(mut stream) = open(&o, &board, kind, o.http, false).await else {
            continue;
        };
        let connected = Instant::now();
        // 24 hex digits: as long as a real token, never one.
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: giftload\r\nAuthorization: Bearer bad-{:024x}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n",
            rand::random::<u128>() >> 32
        );
        let mut head = Vec::new();
        let end = tokio::select! {
            end = async {
                if stream.write_all(request.as_bytes()).await.is_err() {
                    return End::Server;
                }
                if read_head(&mut stream, &mut head, ANSWER_TIMEOUT).await == Head::TimedOut {
                    return End::Outlived;
                }
                // A socket it keeps open after answering counts `outlived`.
                let closed = until_closed(&mut stream, &mut head, BAD_TOKEN_CLOSE_WAIT).await;
                board.status(kind, http_status(&head));
                if closed { End::Server } else { End::Outlived }
            } => end,
            () = stopped(&mut stop) => End::Stopped,
        };
        board.ended(kind, connected, end);
    }
}

/// The server's resident memory: `/proc/PID/status` `VmRSS`, bytes.
pub fn rss_of_pid(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// From a Prometheus text exposition: `process_resident_memory_bytes`, and the
/// `giftstream_limit_rejections_total` series by their `limit` label.
pub fn parse_metrics(text: &str) -> (Option<u64>, BTreeMap<String, f64>) {
    let mut rss = None;
    let mut limits = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name == "process_resident_memory_bytes" {
            rss = Some(value as u64);
        } else if let Some(labels) = name.strip_prefix("giftstream_limit_rejections_total{")
            && let Some((_, rest)) = labels.split_once("limit=\"")
            && let Some((limit, _)) = rest.split_once('"')
        {
            *limits.entry(limit.to_owned()).or_default() += value;
        }
    }
    (rss, limits)
}

/// How a hostile run is judged and watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The server's process id: its resident memory from `/proc` (else from `/metrics`).
    pub pid: Option<u32>,
    /// A progress line every [`PROGRESS_INTERVAL`].
    pub progress: bool,
    /// The run fails if the normal load achieved less than this share of its rate.
    pub min_rate_ratio: f64,
    /// The run fails if any this many consecutive seconds had no ack.
    pub stall_window: Duration,
}

/// A progress line this often.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// The JSON report's schema; bump on an incompatible change.
pub const HOSTILE_SCHEMA: &str = "giftload.hostile/v1";

/// The server's resident memory over the run, bytes.
#[derive(Debug, Clone, Default)]
pub struct Rss {
    /// `/proc/PID/status` or `/metrics`; `None` if neither gave it.
    pub source: Option<&'static str>,
    pub start: Option<u64>,
    pub max: Option<u64>,
    pub end: Option<u64>,
}

/// A pass/fail rule of the run and what it measured.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub value: f64,
}

/// The result of `giftload hostile`.
pub struct HostileReport {
    /// The normal load, as `giftload run` reports it.
    pub normal: crate::report::Summary,
    pub options: HostileOptions,
    /// Acks per second of wall-clock time (when they arrived, setup included), from the
    /// start of the run: what "acks kept flowing" is judged on. The normal load's own
    /// per-second intervals are by planned send time, where a stall does not show as a
    /// gap.
    pub acks_per_second: Vec<u64>,
    pub kinds: Vec<(Kind, KindStats)>,
    pub rss: Rss,
    /// `giftstream_limit_rejections_total` during the run, by limit (empty if
    /// `/metrics` did not answer).
    pub limit_rejections: BTreeMap<String, f64>,
    pub checks: Vec<Check>,
}

impl HostileReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.normal.corrected;
        let mut hostile = serde_json::Map::new();
        for (kind, stats) in &self.kinds {
            let mut v = stats.to_json();
            v["configured"] = self.options.count(*kind).into();
            hostile.insert(kind.name().to_owned(), v);
        }
        serde_json::json!({
            "schema": HOSTILE_SCHEMA,
            "normal": self.normal.to_json(),
            "acks": {
                "planned_rate": self.normal.planned_rate,
                "achieved_rate": self.normal.achieved_rate,
                "latency_ms": {
                    "p50": h.value_at_quantile(0.5) as f64 / 1000.0,
                    "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
                    "p999": h.value_at_quantile(0.999) as f64 / 1000.0,
                    "max": h.max() as f64 / 1000.0,
                },
                "per_second": self.acks_per_second,
            },
            "hostile": hostile,
            "server": {
                "rss_bytes": {
                    "source": self.rss.source,
                    "start": self.rss.start,
                    "max": self.rss.max,
                    "end": self.rss.end,
                },
                "limit_rejections": self.limit_rejections,
            },
            "checks": self.checks.iter().map(|c| serde_json::json!({
                "check": c.name, "ok": c.ok, "value": c.value,
            })).collect::<Vec<_>>(),
            "passed": self.passed(),
        })
    }

    /// The terminal report: the normal load's summary, then the hostile kinds as a
    /// Markdown table (ready for BENCHMARKS.md).
    pub fn print(&self) {
        self.normal.print();
        let h = &self.normal.corrected;
        println!(
            "acks beside the hostile clients: {:.0} events/s ({:.1} % of planned), latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.normal.achieved_rate,
            100.0
                * self
                    .normal
                    .planned_rate
                    .map_or(1.0, |p| self.normal.achieved_rate / p),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
        println!();
        println!(
            "| kind | sockets | attempts | closed by server | time to close p50 / max | closed by giftload | outlived | open at end | answers |"
        );
        println!("|---|---:|---:|---:|---|---:|---:|---:|---|");
        for (kind, s) in &self.kinds {
            let t = &s.time_to_close_ms;
            let close = if s.closed_by_server == 0 {
                "-".to_owned()
            } else {
                format!("{} / {}", ms(t.value_at_quantile(0.5)), ms(t.max()))
            };
            let answers: Vec<String> = s
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let configured = self.options.count(*kind);
            println!(
                "| {} | {} | {} | {} | {close} | {} | {} | {} | {} |",
                kind.name(),
                if *kind == Kind::BadToken {
                    format!("{configured}/s")
                } else {
                    configured.to_string()
                },
                s.attempts,
                s.closed_by_server,
                s.closed_by_client,
                s.outlived,
                s.open_at_end,
                answers.join(", ")
            );
        }
        println!();
        let mib = |b: Option<u64>| {
            b.map_or("?".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            })
        };
        println!(
            "server RSS ({}): start {}, max {}, end {}",
            self.rss.source.unwrap_or("unknown: pass --pid"),
            mib(self.rss.start),
            mib(self.rss.max),
            mib(self.rss.end)
        );
        if !self.limit_rejections.is_empty() {
            let l: Vec<String> = self
                .limit_rejections
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("server limit rejections during the run: {}", l.join(", "));
        }
        for c in &self.checks {
            println!(
                "  check {:<40} {} (measured {})",
                c.name,
                if c.ok { "ok" } else { "FAILED" },
                c.value
            );
        }
    }
}

/// `12 ms`, `10.0 s`.
fn ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The server's resident memory now: `/proc/PID/status` with a pid, else `/metrics`.
async fn rss_now(
    pid: Option<u32>,
    metrics: &Option<(reqwest::Client, String)>,
) -> (Option<&'static str>, Option<u64>) {
    if let Some(pid) = pid {
        return (Some("/proc/PID/status VmRSS"), rss_of_pid(pid));
    }
    match scrape(metrics).await {
        Some(text) => match parse_metrics(&text).0 {
            Some(rss) => (Some("/metrics process_resident_memory_bytes"), Some(rss)),
            None => (None, None),
        },
        None => (None, None),
    }
}

/// `GET /metrics` (bounded by the client's timeout); `None` if it failed.
async fn scrape(metrics: &Option<(reqwest::Client, String)>) -> Option<String> {
    let (client, url) = metrics.as_ref()?;
    let r = client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// Runs `scenario` against `target` (the binary protocol) with the hostile clients of
/// `options` beside it for as long as it runs (its funding setup included), and judges
/// whether acks kept flowing.
pub async fn run(
    scenario: &crate::scenario::Scenario,
    target: &crate::target::TargetSpec,
    run_options: &crate::runner::RunOptions,
    options: &HostileOptions,
    watching: &Watch,
) -> anyhow::Result<HostileReport> {
    anyhow::ensure!(
        target.kind == crate::target::TargetKind::Giftstream && target.cluster.is_none(),
        "the hostile mix runs beside the binary protocol of one giftstream"
    );
    anyhow::ensure!(
        target.tls_ca.is_none(),
        "the hostile clients speak plain TCP: not with --tls-ca"
    );
    let metrics = Some((
        target.http_client(Duration::from_secs(5))?,
        format!("{}/metrics", target.http_base()),
    ));
    let limits_before = scrape(&metrics).await.map(|t| parse_metrics(&t).1);
    let (source, rss_start) = rss_now(watching.pid, &metrics).await;
    let live = Arc::new(crate::runner::Live::default());
    let hostile = Hostile::start(options)?;

    // Once a second: acks of that second; every PROGRESS_INTERVAL, a progress line.
    let (done_tx, mut done_rx) = watch::channel(false);
    let ticker = {
        let (live, board, pid, progress, metrics) = (
            live.clone(),
            hostile.board().clone(),
            watching.pid,
            watching.progress,
            metrics.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let (mut acks, mut rss_max) = (Vec::new(), rss_start);
            let (mut last, mut last_line) = (0u64, 0u64);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopped(&mut done_rx) => break,
                }
                let answered = live.answered.load(Ordering::Relaxed);
                acks.push(answered - last);
                last = answered;
                if !(acks.len() as u64).is_multiple_of(PROGRESS_INTERVAL.as_secs()) {
                    continue;
                }
                let rss = rss_now(pid, &metrics).await.1;
                rss_max = rss_max.max(rss);
                if !progress {
                    continue;
                }
                let p99 = live.take_recent().value_at_quantile(0.99);
                let window = answered - last_line;
                last_line = answered;
                let kinds: Vec<String> = Kind::ALL
                    .iter()
                    .filter(|k| board.get(**k).attempts > 0)
                    .map(|k| {
                        let s = board.get(*k);
                        format!("{} {}/{}", k.name(), s.open, s.closed_by_server)
                    })
                    .collect();
                println!(
                    "{:>5} s  acks {:.0}/s{}, p99 {:.2} ms, {} errors | open/closed by server: {} | rss {}",
                    started.elapsed().as_secs(),
                    window as f64 / PROGRESS_INTERVAL.as_secs_f64(),
                    if window == 0 { " (NO ACKS)" } else { "" },
                    p99 as f64 / 1000.0,
                    live.errors.load(Ordering::Relaxed),
                    kinds.join(", "),
                    rss.map_or("?".to_owned(), |b| format!(
                        "{:.1} MiB",
                        b as f64 / 1048576.0
                    )),
                );
            }
            (acks, rss_max)
        })
    };

    let normal = crate::runner::run_with_live(scenario, target, run_options, live).await;
    let _ = done_tx.send(true);
    let board = hostile.stop().await;
    let (acks_per_second, rss_max) = ticker.await?;
    let normal = normal.context("the normal load")?;
    let rss_end = rss_now(watching.pid, &metrics).await.1;
    let limit_rejections = match (limits_before, scrape(&metrics).await) {
        (Some(before), Some(after)) => parse_metrics(&after)
            .1
            .into_iter()
            .map(|(k, v)| {
                let d = v - before.get(&k).copied().unwrap_or(0.0);
                (k, d)
            })
            .filter(|(_, d)| *d > 0.0)
            .collect(),
        _ => BTreeMap::new(),
    };
    let kinds = Kind::ALL
        .iter()
        .filter(|k| options.count(**k) > 0)
        .map(|k| (*k, board.get(*k)))
        .collect();

    // Acks kept flowing: no window of `stall_window` seconds without one (the whole run
    // if shorter), and the planned rate achieved.
    let window =
        (watching.stall_window.as_secs().max(1) as usize).min(acks_per_second.len().max(1));
    let silent = acks_per_second
        .windows(window)
        .filter(|w| w.iter().all(|a| *a == 0))
        .count();
    let ratio = normal
        .planned_rate
        .map_or(1.0, |p| normal.achieved_rate / p.max(1e-9));
    let checks = vec![
        Check {
            name: format!("no {window} s without an ack (windows)"),
            ok: silent == 0 && !acks_per_second.is_empty(),
            value: silent as f64,
        },
        Check {
            name: format!("achieved_rate>={}", watching.min_rate_ratio),
            ok: ratio >= watching.min_rate_ratio,
            value: ratio,
        },
    ];
    Ok(HostileReport {
        normal,
        options: options.clone(),
        acks_per_second,
        kinds,
        rss: Rss {
            source,
            start: rss_start,
            max: rss_max.max(rss_end),
            end: rss_end,
        },
        limit_rejections,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_the_status_line_and_the_error_code() {
        for (head, status) in [
            (&b""[..], "none"),
            (b"HTTP/1.1 401 Unauthorized\r\n\r\n", "401"),
            (
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\r\n{\"error\":{\"code\":\"AUTH_RATE_LIMITED\",\"message\":\"x\"}}",
                "429 AUTH_RATE_LIMITED",
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", "200"),
            (b"garbage", "unparsed"),
        ] {
            assert_eq!(http_status(head), status, "{}", String::from_utf8_lossy(head));
        }
        let error = protocol::frame_bytes(&ServerFrame::Error {
            request_id: 0,
            code: 11,
            message: "no frame within the read timeout".into(),
        });
        assert_eq!(frame_status(&error), "error 11");
        assert_eq!(frame_status(&[]), "none");
        assert_eq!(frame_status(&[0, 0]), "unparsed");
    }

    #[test]
    fn metrics_give_the_resident_memory_and_the_limit_rejections() {
        let text = "# HELP x\nprocess_resident_memory_bytes 1.5e7\n\
            giftstream_limit_rejections_total{limit=\"write_timeout\"} 3\n\
            giftstream_limit_rejections_total{limit=\"http_header_read_timeout\"} 12\n\
            giftstream_events_total{outcome=\"accepted\"} 9\n";
        let (rss, limits) = parse_metrics(text);
        assert_eq!(rss, Some(15_000_000));
        assert_eq!(limits["write_timeout"], 3.0);
        assert_eq!(limits["http_header_read_timeout"], 12.0);
        assert_eq!(limits.len(), 2);
    }

    #[test]
    fn each_kind_has_its_own_loopback_source() {
        let sources: std::collections::BTreeSet<_> = Kind::ALL.iter().map(|k| k.source()).collect();
        assert_eq!(sources.len(), Kind::ALL.len());
        assert!(
            sources
                .iter()
                .all(|s| s.is_loopback() && *s != Ipv4Addr::LOCALHOST)
        );
    }
}
