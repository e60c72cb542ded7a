//! Serves the HTTP API on the connections [`HttpListener`] accepts: hyper under the axum
//! router, one task per connection, with the bounds `axum::serve` does not have.
//!
//! - **Timeouts**, on the connection's bytes ([`Watched`]), Go `net/http` style: a
//!   connection waiting for a request (new, or kept alive after a response) is closed
//!   after `limits.http_idle_timeout_ms` without a byte of one; from a request's first
//!   byte, its line and headers must be complete within
//!   `limits.http_header_read_timeout_ms` however slowly they trickle in (slowloris); a
//!   response of which the client takes no byte for `limits.write_timeout_ms` closes the
//!   connection. While a request is handled (its body is read by the handler, within
//!   `limits.http_body_read_timeout_ms`; a live feed streams) no read deadline applies.
//! - **Protocols**: HTTP/1.1 only (one request at a time per connection) unless
//!   `server.http2` is set; then h2 too, with at most
//!   `limits.http2_streams_per_connection_max` concurrent streams per connection.
//! - **Shutdown** with a deadline: when `closing` turns, every connection is asked to
//!   finish (in-flight requests complete, no new ones) and is closed
//!   `server.shutdown_grace_ms` later whatever it is doing.
//! - Each request carries its connection's [`Peer`] address (the failed-auth limit is
//!   per address).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

use super::tls::{HttpConn, HttpListener};
use crate::config::Config;
use crate::telemetry;

/// The address of the peer that sent a request (an extension of every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// The per-connection bounds, from `[limits]` and `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub idle: Duration,
    pub header_read: Duration,
    pub write: Duration,
    pub shutdown_grace: Duration,
    /// Streams per connection when HTTP/2 is served; `None`: HTTP/1.1 only.
    pub http2_streams: Option<u32>,
}

impl ConnLimits {
    pub fn of(config: &Config) -> ConnLimits {
        let l = &config.limits;
        ConnLimits {
            idle: Duration::from_millis(l.http_idle_timeout_ms),
            header_read: Duration::from_millis(l.http_header_read_timeout_ms),
            write: Duration::from_millis(l.write_timeout_ms),
            shutdown_grace: Duration::from_millis(config.server.shutdown_grace_ms),
            http2_streams: config
                .server
                .http2
                .then_some(l.http2_streams_per_connection_max),
        }
    }
}

/// Accepts connections until `closing` turns true; each is served on `tracker` (so
/// that shutdown can wait for them) and ends by itself at most `shutdown_grace` after.
pub async fn serve(
    mut listener: HttpListener,
    router: Router,
    limits: ConnLimits,
    mut closing: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    loop {
        let (conn, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = super::closed(&mut closing) => break,
        };
        tracker.spawn(serve_connection(
            conn,
            peer,
            router.clone(),
            limits,
            closing.clone(),
        ));
    }
}

async fn serve_connection(
    conn: HttpConn,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched::new(conn, activity.clone(), limits));
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // Counted from here until the response's last byte is handed to hyper.
        let handling = activity.started();
        request.extensions_mut().insert(Peer(peer));
        let response = tower::Service::call(&mut router.clone(), request.map(Body::new));
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| Counted {
                body,
                _handling: handling,
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timeouts are `Watched`'s: hyper's header timer would also close a connection
    // kept alive after the header timeout, which is shorter than the idle one.
    builder.http1().header_read_timeout(None);
    let builder = match limits.http2_streams {
        Some(streams) => {
            builder.http2().max_concurrent_streams(streams);
            builder
        }
        None => builder.http1_only(),
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        // Errors are the peer's doing (a reset, a timeout, a malformed request): hyper
        // answered what it could.
        _ = connection.as_mut() => return,
        _ = super::closed(&mut closing) => {}
    }
    connection.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.shutdown_grace, connection)
        .await
        .is_err()
    {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "shutdown_grace")
            .increment(1);
        tracing::info!(%peer, "http connection closed: still busy at the end of the shutdown grace");
    }
}

/// Where a connection is between requests: shared by its [`Watched`] bytes, which apply
/// the deadline of the phase, and its service, which sees requests start and end.
struct Activity {
    /// A `parking_lot::Mutex`, not a tokio one: held for a few instructions, never
    /// across an await; contended only by a connection's own streams (HTTP/2).
    state: parking_lot::Mutex<ActivityState>,
}

struct ActivityState {
    phase: Phase,
    /// The read that is pending: woken when the phase changes its deadline (an HTTP/2
    /// connection's reader does not wake by itself when its last stream ends).
    reader: Option<Waker>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request since then, no byte of it yet: the idle timeout.
    Idle(Instant),
    /// A request's first byte came then: its line and headers are due within the
    /// header-read timeout.
    Head(Instant),
    /// This many requests are being handled (until their responses are written): no
    /// read deadline (the handler bounds the body read).
    Busy(usize),
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: parking_lot::Mutex::new(ActivityState {
                phase: Phase::Idle(Instant::now()),
                reader: None,
            }),
        }
    }

    /// A request's head is complete and its handler called.
    fn started(self: &Arc<Self>) -> Handling {
        let mut state = self.state.lock();
        state.phase = match state.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Idle(_) | Phase::Head(_) => Phase::Busy(1),
        };
        Handling(self.clone())
    }

    /// Bytes arrived.
    fn read_some(&self) {
        let mut state = self.state.lock();
        if let Phase::Idle(_) = state.phase {
            state.phase = Phase::Head(Instant::now());
        }
    }

    /// The deadline of a read that found nothing (and which bound passes then), noting
    /// the reader to wake when the phase changes.
    fn read_deadline(
        &self,
        limits: &ConnLimits,
        reader: &Waker,
    ) -> Option<(Instant, &'static str)> {
        let mut state = self.state.lock();
        if !state.reader.as_ref().is_some_and(|w| w.will_wake(reader)) {
            state.reader = Some(reader.clone());
        }
        match state.phase {
            Phase::Idle(since) => Some((since + limits.idle, "http_idle_timeout")),
            Phase::Head(since) => Some((since + limits.header_read, "http_header_read_timeout")),
            Phase::Busy(_) => None,
        }
    }
}

/// One request being handled; dropped with its response body (hyper drops it once its
/// last byte is written, or when the connection ends).
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.phase = match state.phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }
}

/// A response body that holds its request's [`Handling`].
struct Counted {
    body: Body,
    _handling: Handling,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's bytes with the deadlines of its [`Activity`]: a read that finds
/// nothing fails when the idle or header-read deadline has passed, a write the peer does
/// not take fails after the write timeout. hyper then closes the connection.
struct Watched {
    io: HttpConn,
    activity: Arc<Activity>,
    limits: ConnLimits,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    /// Since when writes have not been taken (`None`: the last one was).
    write_stalled: Option<Instant>,
    /// A deadline passed (counted once; every later call fails too).
    timed_out: Option<&'static str>,
}

impl Watched {
    fn new(io: HttpConn, activity: Arc<Activity>, limits: ConnLimits) -> Watched {
        let never = Instant::now() + Duration::from_secs(365 * 86_400);
        Watched {
            io,
            activity,
            limits,
            read_timer: Box::pin(tokio::time::sleep_until(never)),
            write_timer: Box::pin(tokio::time::sleep_until(never)),
            write_stalled: None,
            timed_out: None,
        }
    }

    fn time_out(&mut self, limit: &'static str) -> io::Error {
        if self.timed_out.is_none() {
            self.timed_out = Some(limit);
            metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => limit).increment(1);
            tracing::debug!(limit, "http connection closed: timed out");
        }
        io::Error::new(io::ErrorKind::TimedOut, limit)
    }

    /// A write found the peer's window full: fails once that has lasted the write
    /// timeout.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = *self.write_stalled.get_or_insert_with(Instant::now) + self.limits.write;
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.time_out("http_write_timeout"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.write_pending(cx),
            Poll::Ready(r) => {
                self.write_stalled = None;
                Poll::Ready(r)
            }
        }
    }

    fn expired<T>(&mut self) -> Option<Poll<io::Result<T>>> {
        self.timed_out
            .map(|limit| Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, limit))))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(expired) = this.expired() {
            return expired;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, limit)) = this.activity.read_deadline(&this.limits, cx.waker())
                else {
                    return Poll::Pending;
                };
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                match this.read_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(this.time_out(limit))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(expired) = this.expired() {
            return expired;
        }
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(expired) = this.expired() {
            return expired;
        }
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(expired) = this.expired() {
            return expired;
        }
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.wrote(result, cx)
    }
}
