//! The binary protocol listener: one task per connection, reading request frames,
//! applying them, and a writer task that releases responses in request order once their
//! events are durable (or applied, in `applied` ack mode).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};
use tokio_util::task::TaskTracker;

use super::Service;
use super::auth::{AuthError, TokenId};
use super::ingest::{self, Admitted, BatchError, Protocol, Rate, Refusal};
use crate::config::{AckMode, Scope};
use crate::engine::{Event, Outcome};
use crate::protocol::{self, ClientFrame, ServerFrame, WireEvent, WireOutcome, error_code};
use crate::telemetry;

/// How long a new connection may take to authenticate (at most the read timeout).
pub const AUTH_TIMEOUT_MS: u64 = 5_000;
/// Largest frame before authentication: an Auth frame (a token of at most a few hundred
/// bytes) fits many times over.
pub const PRE_AUTH_FRAME_BYTES_MAX: usize = 4_096;

/// What the reader hands the writer, in request order.
enum Outgoing {
    Response {
        request_id: u64,
        outcomes: Vec<Outcome>,
        wait_seq: u64,
        received: Instant,
    },
    /// The token was accepted.
    AuthOk,
    /// An error frame; `close` ends the connection after it.
    Error {
        request_id: u64,
        code: u16,
        message: String,
        close: bool,
    },
}

/// Accepts connections until `closing` turns true; each runs on `tracker`.
pub async fn serve(
    service: Arc<Service>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut closing: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let handshake_timeout = Duration::from_millis(service.config.limits.read_timeout_ms);
    let permits = Arc::new(Semaphore::new(service.config.limits.connections_max));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = super::closed(&mut closing) => break,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let closing = closing.clone();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let tls = tls.clone();
                tracker.spawn(async move {
                    metrics::gauge!(telemetry::CONNECTIONS).increment(1.0);
                    match tls {
                        None => handle(service, socket, peer, closing).await,
                        Some(acceptor) => {
                            if let Some(stream) =
                                super::tls::handshake(&acceptor, socket, handshake_timeout, peer)
                                    .await
                            {
                                handle(service, stream, peer, closing).await;
                            }
                        }
                    }
                    metrics::gauge!(telemetry::CONNECTIONS).decrement(1.0);
                    drop(permit);
                    tracing::debug!(%peer, "connection closed");
                });
            }
            Err(_) => {
                metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "connections")
                    .increment(1);
                tracker.spawn(async move {
                    let (_, w) = socket.into_split();
                    let mut sink =
                        FramedWrite::new(w, protocol::codec(service.config.limits.frame_bytes_max));
                    let frame = ServerFrame::Error {
                        request_id: 0,
                        code: error_code::CONNECTION_LIMIT,
                        message: "too many connections".to_owned(),
                    };
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        sink.send(Bytes::from(protocol::encode(&frame))),
                    )
                    .await;
                });
            }
        }
    }
}

fn error(request_id: u64, code: u16, message: impl Into<String>, close: bool) -> Outgoing {
    metrics::counter!(telemetry::REQUEST_ERRORS_TOTAL, "code" => error_code::name(code))
        .increment(1);
    Outgoing::Error {
        request_id,
        code,
        message: message.into(),
        close,
    }
}

/// The error that refuses an address over its failed-auth budget, or `None`.
fn peer_refusal(e: AuthError) -> Option<Outgoing> {
    match e {
        AuthError::PeerLimited { retry_after } => {
            let msg = format!(
                "too many failed authentications from this address: retry in {} s",
                retry_after.as_secs() + 1
            );
            Some(error(0, error_code::AUTH_RATE_LIMITED, msg, true))
        }
        AuthError::Unauthenticated | AuthError::Forbidden => None,
    }
}

/// One binary connection: reads frames, hands the writer what to answer (in request
/// order), then closes once the writer is done (at shutdown, within the grace).
async fn handle<S>(
    service: Arc<Service>,
    socket: S,
    peer: SocketAddr,
    mut closing: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let frame_bytes_max = service.config.limits.frame_bytes_max;
    let (r, w) = tokio::io::split(socket);
    let mut frames = FramedRead::new(r, protocol::codec(frame_bytes_max));
    let (tx, rx) = mpsc::channel::<Outgoing>(service.config.limits.inflight_frames_max);
    let writer = tokio::spawn(write_loop(
        service.clone(),
        FramedWrite::new(w, protocol::codec(frame_bytes_max)),
        rx,
    ));
    // An address over its failed-auth budget is refused before it sends anything.
    if let Some(refusal) = service.auth.admit(peer.ip()).err().and_then(peer_refusal) {
        let _ = tx.send(refusal).await;
        drop(tx);
        let _ = writer.await;
        return;
    }
    // Until it authenticates, a connection gets a short deadline and room for an Auth
    // frame only: an unauthenticated socket neither holds a slot for the read timeout
    // nor makes the server buffer a large frame.
    frames
        .decoder_mut()
        .set_max_frame_length(PRE_AUTH_FRAME_BYTES_MAX.min(frame_bytes_max));
    let grace = Duration::from_millis(service.config.server.shutdown_grace_ms);
    let mut reader = Reader {
        service,
        peer,
        tx,
        token: None,
    };
    reader.read_frames(&mut frames, &mut closing).await;
    drop(reader);
    finish_writing(writer, closing, grace, peer).await;
}

/// The reading side of a binary connection.
struct Reader {
    service: Arc<Service>,
    peer: SocketAddr,
    /// To the writer, in request order; closed when the writer gave up on the client.
    tx: mpsc::Sender<Outgoing>,
    /// The connection's token, once it authenticated.
    token: Option<TokenId>,
}

/// What a connection does after a frame.
enum Next {
    Read,
    Close,
}

impl Reader {
    /// Reads and answers frames until the client closes, a frame closes the connection,
    /// the writer gave up, or the server shuts down.
    async fn read_frames<R: AsyncRead + Unpin>(
        &mut self,
        frames: &mut FramedRead<R, LengthDelimitedCodec>,
        closing: &mut watch::Receiver<bool>,
    ) {
        let read_timeout = Duration::from_millis(self.service.config.limits.read_timeout_ms);
        let auth_timeout = read_timeout.min(Duration::from_millis(AUTH_TIMEOUT_MS));
        loop {
            let timeout = if self.token.is_some() {
                read_timeout
            } else {
                auth_timeout
            };
            let next = tokio::select! {
                n = tokio::time::timeout(timeout, frames.next()) => n,
                // The writer gave up on the client (write timeout): the connection is over.
                _ = self.tx.closed() => break,
                _ = super::closed(closing) => {
                    let _ = self.tx.send(error(0, error_code::SHUTTING_DOWN, "the server is shutting down", true)).await;
                    break;
                }
            };
            let bytes = match next {
                Err(_) => {
                    let msg = "no frame within the read timeout";
                    let _ = self
                        .tx
                        .send(error(0, error_code::READ_TIMEOUT, msg, true))
                        .await;
                    break;
                }
                Ok(None) => break, // the client closed
                Ok(Some(Err(e))) => {
                    let max = frames.decoder().max_frame_length();
                    let _ = self.tx.send(frame_error(&e, max)).await;
                    break;
                }
                Ok(Some(Ok(bytes))) => bytes,
            };
            let received = Instant::now();
            let next = match protocol::decode(&bytes) {
                Ok(frame) => self.on_frame(frame, received, frames.decoder_mut()).await,
                Err(e) => {
                    let out = error(0, error_code::MALFORMED_FRAME, e.to_string(), true);
                    self.close_with(out).await
                }
            };
            if let Next::Close = next {
                break;
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: ClientFrame,
        received: Instant,
        decoder: &mut LengthDelimitedCodec,
    ) -> Next {
        match frame {
            ClientFrame::Auth { token } => self.on_auth(&token, decoder).await,
            // A plain request is one whose events give no issued_ms.
            ClientFrame::Request { request_id, events } => {
                self.on_request(request_id, &events, &[], received).await
            }
            ClientFrame::RequestIssued {
                request_id,
                events,
                issued_ms,
            } => {
                self.on_request(request_id, &events, &issued_ms, received)
                    .await
            }
        }
    }

    /// An Auth frame: the token needs the ingest scope. Accepted, the connection may send
    /// frames up to `limits.frame_bytes_max`.
    async fn on_auth(&mut self, token: &str, decoder: &mut LengthDelimitedCodec) -> Next {
        let peer = Some(self.peer.ip());
        match self
            .service
            .auth
            .check_from(peer, Some(token), Scope::Ingest)
        {
            Ok(id) => {
                self.token = Some(id);
                decoder.set_max_frame_length(self.service.config.limits.frame_bytes_max);
                self.send(Outgoing::AuthOk).await
            }
            Err(AuthError::Unauthenticated) => {
                let out = error(0, error_code::UNAUTHENTICATED, "unknown token", true);
                self.close_with(out).await
            }
            Err(e @ AuthError::PeerLimited { .. }) => match peer_refusal(e) {
                Some(refusal) => self.close_with(refusal).await,
                None => Next::Close,
            },
            Err(AuthError::Forbidden) => {
                let msg = "the token lacks the ingest scope";
                self.close_with(error(0, error_code::FORBIDDEN, msg, true))
                    .await
            }
        }
    }

    /// A batch: validated whole (an invalid one closes the connection), then admitted
    /// ([`ingest::admit`]; a refusal keeps the connection open) and answered.
    async fn on_request(
        &mut self,
        request_id: u64,
        events: &[WireEvent],
        issued_ms: &[u64],
        received: Instant,
    ) -> Next {
        let Some(token) = self.token else {
            let msg = "the first frame must be Auth";
            return self
                .close_with(error(request_id, error_code::UNAUTHENTICATED, msg, true))
                .await;
        };
        let events = match self.validate(request_id, events, issued_ms) {
            Ok(events) => events,
            Err(out) => return self.close_with(out).await,
        };
        let rate = Rate::Charge(token);
        match ingest::admit(&self.service, rate, &events, issued_ms, Protocol::Tcp) {
            Ok(Admitted { outcomes, wait_seq }) => {
                let out = Outgoing::Response {
                    request_id,
                    outcomes,
                    wait_seq,
                    received,
                };
                self.send(out).await
            }
            // Nothing of the request applied; the connection stays open.
            Err(refusal) => {
                let (code, msg) = refusal_error(refusal);
                self.send(error(request_id, code, msg, false)).await
            }
        }
    }

    /// The whole batch is checked before any of it is applied.
    fn validate(
        &self,
        request_id: u64,
        events: &[WireEvent],
        issued_ms: &[u64],
    ) -> Result<Vec<Event>, Outgoing> {
        let events_max = self.service.config.limits.events_per_frame_max;
        ingest::check_batch_len(events.len(), events_max, Protocol::Tcp).map_err(|e| match e {
            BatchError::Empty => {
                let msg = "a request needs at least one event";
                error(request_id, error_code::EMPTY_BATCH, msg, true)
            }
            BatchError::TooLarge { events, max } => {
                let msg = format!("{events} events; at most {max} per frame");
                error(request_id, error_code::TOO_MANY_EVENTS, msg, true)
            }
        })?;
        if !issued_ms.is_empty() && issued_ms.len() != events.len() {
            let msg = format!(
                "{} events but {} issued_ms: one per event",
                events.len(),
                issued_ms.len()
            );
            return Err(error(request_id, error_code::INVALID_EVENT, msg, true));
        }
        events
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if w.is_internal() {
                    return Err((
                        i,
                        "a journal-only event kind (settlement, economy change, recharge \
                         with its payment time, a reversal with what it took back): \
                         clients give issued_ms instead",
                    ));
                }
                if matches!(w, WireEvent::Battle { .. } | WireEvent::BattleClose { .. })
                    && self.service.partitions.is_some()
                {
                    return Err((
                        i,
                        "battles are not available on a cluster node (a battle's streams \
                         receive gifts on every node)",
                    ));
                }
                let event = Event::try_from(*w).map_err(|e| (i, e))?;
                Ok(event.issued(issued_ms.get(i).copied().unwrap_or(0)))
            })
            .collect::<Result<Vec<Event>, (usize, &str)>>()
            .map_err(|(i, e)| {
                let msg = format!("event {i}: {e}");
                error(request_id, error_code::INVALID_EVENT, msg, true)
            })
    }

    /// Hands `out` to the writer; closes when the writer is gone.
    async fn send(&self, out: Outgoing) -> Next {
        match self.tx.send(out).await {
            Ok(()) => Next::Read,
            Err(_) => Next::Close,
        }
    }

    /// Hands `out` to the writer, then closes.
    async fn close_with(&self, out: Outgoing) -> Next {
        let _ = self.tx.send(out).await;
        Next::Close
    }
}

/// The error code and message of a refused batch.
fn refusal_error(refusal: Refusal) -> (u16, String) {
    match refusal {
        Refusal::WrongPartition(wrong) => (error_code::WRONG_PARTITION, wrong.to_string()),
        Refusal::RateLimited { .. } => {
            let msg = "this token's request rate is spent; retry later (nothing was applied)";
            (error_code::RATE_LIMITED, msg.to_owned())
        }
        Refusal::Unavailable => {
            let msg = "commits are behind; retry later (nothing was applied)";
            (error_code::UNAVAILABLE, msg.to_owned())
        }
    }
}

/// The error for a frame that could not be read: an oversize length prefix (the codec's
/// own error type), or a stream that ended mid-frame.
fn frame_error(e: &io::Error, max: usize) -> Outgoing {
    let oversize = e
        .get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
    if oversize {
        let msg = format!("frame larger than {max} bytes (before auth: an Auth frame only)");
        error(0, error_code::FRAME_TOO_LARGE, msg, true)
    } else {
        error(
            0,
            error_code::MALFORMED_FRAME,
            format!("bad frame: {e}"),
            true,
        )
    }
}

/// The writer sends what was answered (durable acks wait for their commit); at
/// shutdown, for at most the grace: then the connection closes whatever it holds.
async fn finish_writing(
    mut writer: JoinHandle<()>,
    mut closing: watch::Receiver<bool>,
    grace: Duration,
    peer: SocketAddr,
) {
    tokio::select! {
        _ = &mut writer => {}
        () = async {
            super::closed(&mut closing).await;
            tokio::time::sleep(grace).await;
        } => {
            writer.abort();
            metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "shutdown_grace")
                .increment(1);
            tracing::info!(%peer, "binary connection closed: still busy at the end of the shutdown grace");
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    service: Arc<Service>,
    mut sink: FramedWrite<WriteHalf<W>, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let durable = service.config.server.ack == AckMode::Durable;
    let write_timeout = Duration::from_millis(service.config.limits.write_timeout_ms);
    while let Some(out) = rx.recv().await {
        let (frame, close, received) = match out {
            Outgoing::Response {
                request_id,
                outcomes,
                wait_seq,
                received,
            } => {
                if durable && service.commits.durable(wait_seq).await.is_err() {
                    break;
                }
                let outcomes = outcomes.iter().map(WireOutcome::from).collect();
                (
                    ServerFrame::Response {
                        request_id,
                        outcomes,
                    },
                    false,
                    Some(received),
                )
            }
            Outgoing::AuthOk => (
                ServerFrame::AuthOk {
                    last_seq: service.engine.last_seq(),
                },
                false,
                None,
            ),
            Outgoing::Error {
                request_id,
                code,
                message,
                close,
            } => (
                ServerFrame::Error {
                    request_id,
                    code,
                    message,
                },
                close,
                None,
            ),
        };
        let bytes = Bytes::from(protocol::encode(&frame));
        // Flush only when nothing else is ready: pipelined responses share syscalls. A
        // client that stopped reading gets the write timeout, then the connection closes
        // (its slot and the shutdown do not wait for it).
        let write = async {
            if rx.is_empty() || close {
                sink.send(bytes).await
            } else {
                sink.feed(bytes).await
            }
        };
        match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "write_timeout")
                    .increment(1);
                tracing::info!(
                    "binary connection closed: its client took no response within limits.write_timeout_ms"
                );
                return;
            }
        }
        if let Some(received) = received {
            metrics::histogram!(telemetry::INGEST_DURATION_SECONDS, "protocol" => "tcp")
                .record(received.elapsed().as_secs_f64());
        }
        if close {
            break;
        }
    }
    let _ = tokio::time::timeout(write_timeout, SinkExt::<Bytes>::flush(&mut sink)).await;
}
