//! `giftstream::client`: an async client of the binary protocol with pipelining.
//!
//! ```no_run
//! # async fn example() -> Result<(), giftstream::client::ClientError> {
//! use giftstream::client::Client;
//! let client = Client::connect("127.0.0.1:7070", "dev-ingest-token-0001").await?;
//! let outcomes = client.send(&[/* events */]).await?;
//! # Ok(()) }
//! ```
//!
//! Many tasks may call [`Client::send`] on one shared client: frames are written in call
//! order and responses matched by request id, so requests pipeline on one connection.
//! [`Client::submit`] sends without waiting and returns a handle to await later.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::config::FRAME_BYTES_MAX_LIMIT;
use crate::engine::{Event, Outcome};
use crate::protocol::{self, ClientFrame, ServerFrame, WireEvent, WireOutcome, error_code};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error frame.
    #[error("server error {name} ({code}): {message}")]
    Server {
        code: u16,
        name: &'static str,
        message: String,
    },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
}

type Waiter = oneshot::Sender<Result<Vec<WireOutcome>, ClientError>>;

struct Shared {
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// An error frame without a request id ends every waiter with it.
    fatal: Mutex<Option<(u16, String)>>,
}

type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, LengthDelimitedCodec>;
type Writer = FramedWrite<Box<dyn AsyncWrite + Send + Unpin>, LengthDelimitedCodec>;

pub struct Client {
    sink: tokio::sync::Mutex<Writer>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    /// The server's last sequence number when this connection authenticated.
    pub last_seq_at_connect: u64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A request in flight; await [`Pending::outcomes`].
pub struct Pending {
    rx: oneshot::Receiver<Result<Vec<WireOutcome>, ClientError>>,
    events: Vec<Event>,
}

impl Pending {
    pub async fn outcomes(self) -> Result<Vec<Outcome>, ClientError> {
        let wire = self.rx.await.map_err(|_| ClientError::Closed)??;
        if wire.len() != self.events.len() {
            return Err(ClientError::Protocol(format!(
                "{} outcomes for {} events",
                wire.len(),
                self.events.len()
            )));
        }
        wire.iter()
            .zip(&self.events)
            .map(|(w, e)| {
                w.to_outcome(e)
                    .map_err(|m| ClientError::Protocol(m.to_owned()))
            })
            .collect()
    }
}

impl Client {
    /// Connects and authenticates with a token that has the `ingest` scope.
    pub async fn connect(addr: impl ToSocketAddrs, token: &str) -> Result<Client, ClientError> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (r, w) = socket.into_split();
        Client::authenticate(Box::new(r), Box::new(w), token).await
    }

    /// Connects over TLS to a server with `[tls]` set, verifying its certificate for
    /// `server_name` against `roots` (see [`tls_roots`]), then authenticates.
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        roots: Arc<tokio_rustls::rustls::ClientConfig>,
        token: &str,
    ) -> Result<Client, ClientError> {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| ClientError::Protocol(format!("server name {server_name:?}: {e}")))?;
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let stream = tokio_rustls::TlsConnector::from(roots)
            .connect(name, socket)
            .await?;
        let (r, w) = tokio::io::split(stream);
        Client::authenticate(Box::new(r), Box::new(w), token).await
    }

    async fn authenticate(
        r: Box<dyn AsyncRead + Send + Unpin>,
        w: Box<dyn AsyncWrite + Send + Unpin>,
        token: &str,
    ) -> Result<Client, ClientError> {
        let mut sink: Writer = FramedWrite::new(w, protocol::codec(FRAME_BYTES_MAX_LIMIT));
        let mut frames: Reader = FramedRead::new(r, protocol::codec(FRAME_BYTES_MAX_LIMIT));
        sink.send(Bytes::from(protocol::encode(&ClientFrame::Auth {
            token: token.to_owned(),
        })))
        .await?;
        let first = frames.next().await.ok_or(ClientError::Closed)??;
        let last_seq = match protocol::decode::<ServerFrame>(&first)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            ServerFrame::AuthOk { last_seq } => last_seq,
            ServerFrame::Error { code, message, .. } => {
                return Err(ClientError::Server {
                    code,
                    name: error_code::name(code),
                    message,
                });
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected AuthOk, got {other:?}"
                )));
            }
        };
        let shared = Arc::new(Shared {
            waiters: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
        });
        let reader = tokio::spawn(read_loop(frames, shared.clone()));
        Ok(Client {
            sink: tokio::sync::Mutex::new(sink),
            shared,
            next_id: AtomicU64::new(1),
            last_seq_at_connect: last_seq,
            reader,
        })
    }

    /// Sends a batch and returns a handle to await its outcomes (pipelining). Every
    /// event is sent as issued now; a retry of an earlier batch should use
    /// [`Client::submit_issued`] with the first attempt's times.
    pub async fn submit(&self, events: &[Event]) -> Result<Pending, ClientError> {
        let now = crate::clock::now().0;
        // A recharge that says when it was paid is issued then (a retry says the same).
        let issued: Vec<u64> = events
            .iter()
            .map(|e| if e.paid_ms() != 0 { e.paid_ms() } else { now })
            .collect();
        self.submit_issued(events, &issued).await
    }

    /// Sends a batch whose events were created at `issued_ms` (UTC ms, one per event,
    /// the same on every retry; 0 = not given): the server refuses an event issued
    /// longer ago than its retry horizon (`EVENT_EXPIRED`), so a retry is answered or
    /// refused, never applied twice.
    pub async fn submit_issued(
        &self,
        events: &[Event],
        issued_ms: &[u64],
    ) -> Result<Pending, ClientError> {
        assert_eq!(events.len(), issued_ms.len(), "one issued_ms per event");
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A recharge's payment time travels as its issued_ms: the wire kind that holds
        // it is the journal's, refused from clients.
        let issued_ms = events
            .iter()
            .zip(issued_ms)
            .map(|(e, &t)| if e.paid_ms() != 0 { e.paid_ms() } else { t })
            .collect();
        let frame = ClientFrame::RequestIssued {
            request_id,
            events: events
                .iter()
                .map(|e| WireEvent::from(&e.issued(0)))
                .collect(),
            issued_ms,
        };
        let (tx, rx) = oneshot::channel();
        if let Some((code, message)) = self.shared.fatal.lock().clone() {
            return Err(ClientError::Server {
                code,
                name: error_code::name(code),
                message,
            });
        }
        self.shared.waiters.lock().insert(request_id, tx);
        let bytes = Bytes::from(protocol::encode(&frame));
        let sent = self.sink.lock().await.send(bytes).await;
        if let Err(e) = sent {
            self.shared.waiters.lock().remove(&request_id);
            return Err(e.into());
        }
        Ok(Pending {
            rx,
            events: events.to_vec(),
        })
    }

    /// Sends a batch and waits for its outcomes (in event order).
    pub async fn send(&self, events: &[Event]) -> Result<Vec<Outcome>, ClientError> {
        self.submit(events).await?.outcomes().await
    }

    /// True once the connection is gone (closed by the server, an I/O error, or a
    /// fatal error frame): every request on it fails; connect again.
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished() || self.shared.fatal.lock().is_some()
    }
}

async fn read_loop(mut frames: Reader, shared: Arc<Shared>) {
    let fail_all = |shared: &Shared, code: u16, message: String| {
        *shared.fatal.lock() = Some((code, message.clone()));
        for (_, w) in shared.waiters.lock().drain() {
            let _ = w.send(Err(ClientError::Server {
                code,
                name: error_code::name(code),
                message: message.clone(),
            }));
        }
    };
    while let Some(frame) = frames.next().await {
        let Ok(bytes) = frame else { break };
        match protocol::decode::<ServerFrame>(&bytes) {
            Ok(ServerFrame::Response {
                request_id,
                outcomes,
            }) => {
                if let Some(w) = shared.waiters.lock().remove(&request_id) {
                    let _ = w.send(Ok(outcomes));
                }
            }
            Ok(ServerFrame::Error {
                request_id,
                code,
                message,
            }) => {
                let waiter = shared.waiters.lock().remove(&request_id);
                match waiter {
                    // Refusals of one request (nothing of it applied): the server keeps
                    // the connection open, and so does the client — only this request
                    // fails (a WRONG_PARTITION one is sent to its owner, or retried).
                    Some(w)
                        if code == error_code::UNAVAILABLE
                            || code == error_code::RATE_LIMITED
                            || code == error_code::WRONG_PARTITION =>
                    {
                        let _ = w.send(Err(ClientError::Server {
                            code,
                            name: error_code::name(code),
                            message,
                        }));
                    }
                    Some(w) => {
                        let _ = w.send(Err(ClientError::Server {
                            code,
                            name: error_code::name(code),
                            message: message.clone(),
                        }));
                        fail_all(&shared, code, message);
                    }
                    None => fail_all(&shared, code, message),
                }
            }
            Ok(ServerFrame::AuthOk { .. }) => {}
            Err(e) => {
                fail_all(&shared, error_code::MALFORMED_FRAME, e.to_string());
                break;
            }
        }
    }
    let mut fatal = shared.fatal.lock();
    if fatal.is_none() {
        *fatal = Some((0, "connection closed".to_owned()));
    }
    drop(fatal);
    for (_, w) in shared.waiters.lock().drain() {
        let _ = w.send(Err(ClientError::Closed));
    }
}

/// A TLS client configuration that trusts the PEM certificates in `ca_pem` (e.g. the
/// server's own self-signed certificate, or the CA that issued it).
pub fn tls_roots(
    ca_pem: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, ClientError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |e: &dyn std::fmt::Display| {
        ClientError::Protocol(format!("CA file {}: {e}", ca_pem.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no CERTIFICATE block"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client of a cluster (SPEC §6): one [`Client`] per node, each batch split by the
/// partition map so every event goes to the node that owns its sender, and the outcomes
/// put back in event order.
///
/// A batch that spans nodes is several requests: each part is applied (and made
/// durable) by its node on its own, so a failure may leave some parts applied. Resend
/// the whole batch with the same ids: the applied parts answer as duplicates. A node's
/// connection that closed (the node restarted) is opened again by the next request.
pub struct ClusterClient {
    map: crate::cluster::PartitionMap,
    token: String,
    nodes: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
}

/// A batch in flight on a cluster; await [`ClusterPending::outcomes`].
pub struct ClusterPending {
    parts: Vec<(Vec<usize>, Pending)>,
    len: usize,
    /// The connections the parts went out on, kept open until they answer.
    _conns: Vec<Arc<Client>>,
}

impl ClusterPending {
    pub async fn outcomes(self) -> Result<Vec<Outcome>, ClientError> {
        let mut out: Vec<Option<Outcome>> = vec![None; self.len];
        let results = futures::future::join_all(
            self.parts
                .into_iter()
                .map(|(indices, p)| async move { (indices, p.outcomes().await) }),
        )
        .await;
        for (indices, outcomes) in results {
            for (i, o) in indices.into_iter().zip(outcomes?) {
                out[i] = Some(o);
            }
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| ClientError::Protocol("an event without an outcome".into())))
            .collect()
    }
}

impl ClusterClient {
    /// Connects to every node of `map` (plain TCP) and authenticates.
    pub async fn connect(
        map: crate::cluster::PartitionMap,
        token: &str,
    ) -> Result<ClusterClient, ClientError> {
        let mut nodes = Vec::with_capacity(map.nodes().len());
        for node in map.nodes() {
            let client = Client::connect(node.tcp_addr.as_str(), token).await?;
            nodes.push(tokio::sync::Mutex::new(Some(Arc::new(client))));
        }
        Ok(ClusterClient {
            map,
            token: token.to_owned(),
            nodes,
        })
    }

    /// Node `i`'s connection, opened again if it closed.
    async fn node(&self, i: usize) -> Result<Arc<Client>, ClientError> {
        let mut slot = self.nodes[i].lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        *slot = None;
        let addr = self.map.nodes()[i].tcp_addr.as_str();
        let client = Arc::new(Client::connect(addr, &self.token).await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The map it routes by.
    pub fn map(&self) -> &crate::cluster::PartitionMap {
        &self.map
    }

    /// Sends each node its part of the batch (pipelining, like [`Client::submit`]).
    pub async fn submit(&self, events: &[Event]) -> Result<ClusterPending, ClientError> {
        let mut by_node: Vec<(Vec<usize>, Vec<Event>)> = vec![Default::default(); self.nodes.len()];
        for (i, e) in events.iter().enumerate() {
            let part = &mut by_node[self.map.owner_index(e)];
            part.0.push(i);
            part.1.push(*e);
        }
        let mut parts = Vec::new();
        let mut conns = Vec::new();
        for (node, (indices, part)) in by_node.into_iter().enumerate() {
            if !part.is_empty() {
                let client = self.node(node).await?;
                parts.push((indices, client.submit(&part).await?));
                conns.push(client);
            }
        }
        Ok(ClusterPending {
            parts,
            len: events.len(),
            _conns: conns,
        })
    }

    /// Sends a batch and waits for its outcomes (in event order).
    pub async fn send(&self, events: &[Event]) -> Result<Vec<Outcome>, ClientError> {
        self.submit(events).await?.outcomes().await
    }
}
