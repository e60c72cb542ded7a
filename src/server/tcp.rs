//! The binary protocol listener: one task per connection, reading request frames,
//! applying them, and a writer task that releases responses in request order once their
//! events are durable (or applied, in `applied` ack mode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::task::TaskTracker;

use super::Service;
use super::auth::AuthError;
use crate::config::{AckMode, Scope};
use crate::engine::{Event, Outcome};
use crate::protocol::{self, ClientFrame, ServerFrame, WireOutcome, error_code};
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

async fn handle<S>(
    service: Arc<Service>,
    socket: S,
    peer: SocketAddr,
    mut closing: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let limits = service.config.limits.clone();
    let (r, w) = tokio::io::split(socket);
    let mut frames = FramedRead::new(r, protocol::codec(limits.frame_bytes_max));
    let (tx, rx) = mpsc::channel::<Outgoing>(limits.inflight_frames_max);
    let mut writer = tokio::spawn(write_loop(
        service.clone(),
        FramedWrite::new(w, protocol::codec(limits.frame_bytes_max)),
        rx,
    ));
    let grace = Duration::from_millis(service.config.server.shutdown_grace_ms);
    // An address over its failed-auth budget is refused before it sends anything.
    let refused = service.auth.admit(peer.ip()).err().and_then(peer_refusal);
    let read_timeout = Duration::from_millis(limits.read_timeout_ms);
    // Until it authenticates, a connection gets a short deadline and room for an Auth
    // frame only: an unauthenticated socket neither holds a slot for the read timeout
    // nor makes the server buffer a large frame.
    let auth_timeout = read_timeout.min(Duration::from_millis(AUTH_TIMEOUT_MS));
    frames
        .decoder_mut()
        .set_max_frame_length(PRE_AUTH_FRAME_BYTES_MAX.min(limits.frame_bytes_max));
    let mut authenticated = false;
    let mut token_id: Option<super::auth::TokenId> = None;
    if let Some(refusal) = refused {
        let _ = tx.send(refusal).await;
        drop(tx);
        let _ = writer.await;
        return;
    }
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(
                if authenticated { read_timeout } else { auth_timeout },
                frames.next(),
            ) => n,
            // The writer gave up on the client (write timeout): the connection is over.
            _ = tx.closed() => break,
            _ = super::closed(&mut closing) => {
                let _ = tx.send(error(0, error_code::SHUTTING_DOWN, "the server is shutting down", true)).await;
                break;
            }
        };
        let bytes = match next {
            Err(_) => {
                let _ = tx
                    .send(error(
                        0,
                        error_code::READ_TIMEOUT,
                        "no frame within the read timeout",
                        true,
                    ))
                    .await;
                break;
            }
            Ok(None) => break, // the client closed
            Ok(Some(Err(e))) => {
                // An oversize length prefix, or a stream that ended mid-frame.
                let (code, msg) = if e.to_string().contains("frame size too big") {
                    let max = frames.decoder().max_frame_length();
                    (
                        error_code::FRAME_TOO_LARGE,
                        format!("frame larger than {max} bytes (before auth: an Auth frame only)"),
                    )
                } else {
                    (error_code::MALFORMED_FRAME, format!("bad frame: {e}"))
                };
                let _ = tx.send(error(0, code, msg, true)).await;
                break;
            }
            Ok(Some(Ok(bytes))) => bytes,
        };
        let received = Instant::now();
        let frame: ClientFrame = match protocol::decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx
                    .send(error(0, error_code::MALFORMED_FRAME, e.to_string(), true))
                    .await;
                break;
            }
        };
        // A plain request is one whose events give no issued_ms.
        let frame = match frame {
            ClientFrame::Request { request_id, events } => ClientFrame::RequestIssued {
                request_id,
                events,
                issued_ms: Vec::new(),
            },
            other => other,
        };
        match frame {
            ClientFrame::Request { .. } => unreachable!("made a RequestIssued above"),
            ClientFrame::Auth { token } => {
                match service
                    .auth
                    .check_from(Some(peer.ip()), Some(&token), Scope::Ingest)
                {
                    Ok(id) => {
                        authenticated = true;
                        token_id = Some(id);
                        frames
                            .decoder_mut()
                            .set_max_frame_length(limits.frame_bytes_max);
                        if tx.send(Outgoing::AuthOk).await.is_err() {
                            break;
                        }
                    }
                    Err(AuthError::Unauthenticated) => {
                        let _ = tx
                            .send(error(0, error_code::UNAUTHENTICATED, "unknown token", true))
                            .await;
                        break;
                    }
                    Err(e @ AuthError::PeerLimited { .. }) => {
                        if let Some(refusal) = peer_refusal(e) {
                            let _ = tx.send(refusal).await;
                        }
                        break;
                    }
                    Err(AuthError::Forbidden) => {
                        let _ = tx
                            .send(error(
                                0,
                                error_code::FORBIDDEN,
                                "the token lacks the ingest scope",
                                true,
                            ))
                            .await;
                        break;
                    }
                }
            }
            ClientFrame::RequestIssued {
                request_id,
                events,
                issued_ms,
            } => {
                if !authenticated {
                    let _ = tx
                        .send(error(
                            request_id,
                            error_code::UNAUTHENTICATED,
                            "the first frame must be Auth",
                            true,
                        ))
                        .await;
                    break;
                }
                if events.is_empty() {
                    let _ = tx
                        .send(error(
                            request_id,
                            error_code::EMPTY_BATCH,
                            "a request needs at least one event",
                            true,
                        ))
                        .await;
                    break;
                }
                if events.len() > limits.events_per_frame_max {
                    metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "events_per_frame").increment(1);
                    let msg = format!(
                        "{} events; at most {} per frame",
                        events.len(),
                        limits.events_per_frame_max
                    );
                    let _ = tx
                        .send(error(request_id, error_code::TOO_MANY_EVENTS, msg, true))
                        .await;
                    break;
                }
                if !issued_ms.is_empty() && issued_ms.len() != events.len() {
                    let msg = format!(
                        "{} events but {} issued_ms: one per event",
                        events.len(),
                        issued_ms.len()
                    );
                    let _ = tx
                        .send(error(request_id, error_code::INVALID_EVENT, msg, true))
                        .await;
                    break;
                }
                // Validate the whole batch before applying any of it.
                let converted: Result<Vec<Event>, (usize, &str)> = events
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        if w.is_internal() {
                            return Err((
                                i,
                                "settlements are made by the cluster's nodes, not by clients",
                            ));
                        }
                        Event::try_from(*w).map_err(|e| (i, e))
                    })
                    .collect();
                let events = match converted {
                    Ok(events) => events,
                    Err((i, e)) => {
                        let _ = tx
                            .send(error(
                                request_id,
                                error_code::INVALID_EVENT,
                                format!("event {i}: {e}"),
                                true,
                            ))
                            .await;
                        break;
                    }
                };
                // Refusals that keep the connection open; nothing of the request applied.
                let refusal = if let Err(wrong) = service.check_partitions(&events, "tcp") {
                    Some((error_code::WRONG_PARTITION, wrong.to_string()))
                } else if token_id.is_some_and(|t| !service.auth.allow(t)) {
                    metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "token_rate")
                        .increment(1);
                    let msg =
                        "this token's request rate is spent; retry later (nothing was applied)";
                    Some((error_code::RATE_LIMITED, msg.to_owned()))
                } else if !service.commits.accepting() {
                    metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "pending_commit_events").increment(1);
                    let msg = "commits are behind; retry later (nothing was applied)";
                    Some((error_code::UNAVAILABLE, msg.to_owned()))
                } else {
                    None
                };
                if let Some((code, msg)) = refusal {
                    if tx.send(error(request_id, code, msg, false)).await.is_err() {
                        break;
                    }
                    continue;
                }
                let outcomes = service.apply(&events, &issued_ms, "tcp");
                let wait_seq = outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
                let out = Outgoing::Response {
                    request_id,
                    outcomes,
                    wait_seq,
                    received,
                };
                if tx.send(out).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    // The writer sends what was answered (durable acks wait for their commit); at
    // shutdown, for at most the grace: then the connection closes whatever it holds.
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
    mut sink: FramedWrite<WriteHalf<W>, tokio_util::codec::LengthDelimitedCodec>,
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
