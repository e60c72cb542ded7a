//! Optional TLS (rustls) for both listeners, and the HTTP listener that bounds
//! connections and runs handshakes off the accept loop.
//!
//! With `[tls]` set, the binary protocol and the HTTP API both speak TLS only (1.2 and
//! 1.3, rustls' safe defaults; the HTTP listener offers ALPN `http/1.1`, and `h2` first
//! when `server.http2` is on). A handshake must finish within `limits.read_timeout_ms`;
//! one that fails or stalls costs the peer its connection and counts
//! `giftstream_tls_handshake_failures_total`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::config::ConfigError;
use crate::config::TlsConfig;
use crate::telemetry;

/// The acceptors of both listeners; `None` when TLS is off.
#[derive(Clone)]
pub struct Acceptors {
    pub http: TlsAcceptor,
    pub tcp: TlsAcceptor,
}

/// Loads the certificate chain and key named by `tls`; the HTTP acceptor offers `h2`
/// when `http2` (`server.http2`). Errors name the file and what is wrong with it.
pub fn acceptors(tls: &TlsConfig, http2: bool) -> Result<Option<Acceptors>, ConfigError> {
    if !tls.enabled() {
        return Ok(None);
    }
    let chain = certificates(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ConfigError::new("tls.key", format!("{}: {e}", tls.key.display())))?;
    let config = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(chain.clone(), key.clone_key())
            })
            .map_err(|e| {
                ConfigError::new(
                    "tls",
                    format!("{} with {}: {e}", tls.cert.display(), tls.key.display()),
                )
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    };
    let http_alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    Ok(Some(Acceptors {
        http: TlsAcceptor::from(config(http_alpn)?),
        tcp: TlsAcceptor::from(config(&[])?),
    }))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |e: &dyn std::fmt::Display| {
        ConfigError::new("tls.cert", format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if chain.is_empty() {
        return Err(bad(&"no CERTIFICATE block"));
    }
    Ok(chain)
}

/// Runs a server-side handshake within `timeout`, counting failures.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let reason = match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    metrics::counter!(telemetry::TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
    tracing::debug!(%peer, %reason, "TLS handshake failed");
    None
}

/// A connection accepted by [`HttpListener`]: plain or TLS, holding its slot of
/// `limits.connections_max` until dropped.
pub struct HttpConn {
    io: HttpIo,
    _permit: OwnedSemaphorePermit,
}

enum HttpIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for HttpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            HttpIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            HttpIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            HttpIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            HttpIo::Plain(s) => s.is_write_vectored(),
            HttpIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            HttpIo::Plain(s) => Pin::new(s).poll_flush(cx),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            HttpIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HttpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The HTTP API's listener (served by `http_conn::serve`): at most `connections_max`
/// open connections (one over the limit gets a `503 CONNECTION_LIMIT` and is closed),
/// TLS handshakes in their own tasks so a slow peer never holds up the accept loop.
pub struct HttpListener {
    ready: mpsc::Receiver<(HttpConn, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl HttpListener {
    pub fn new(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        connections_max: usize,
        handshake_timeout: Duration,
    ) -> io::Result<HttpListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let permits = Arc::new(Semaphore::new(connections_max));
        let accept_task = tokio::spawn(async move {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "http_connections")
                        .increment(1);
                    if tls.is_none() {
                        tokio::spawn(refuse(socket));
                    }
                    continue;
                };
                let (tx, tls) = (tx.clone(), tls.clone());
                tokio::spawn(async move {
                    let io = match tls {
                        None => HttpIo::Plain(socket),
                        Some(acceptor) => {
                            match handshake(&acceptor, socket, handshake_timeout, peer).await {
                                Some(s) => HttpIo::Tls(Box::new(s)),
                                None => return,
                            }
                        }
                    };
                    let conn = HttpConn {
                        io,
                        _permit: permit,
                    };
                    let _ = tx.send((conn, peer)).await;
                });
            }
        });
        Ok(HttpListener {
            ready,
            local,
            accept_task,
        })
    }
}

/// The answer to a connection over the limit (plain HTTP only: a TLS peer would need a
/// handshake first, which is what the limit saves).
async fn refuse(mut socket: TcpStream) {
    const BODY: &str =
        r#"{"error":{"code":"CONNECTION_LIMIT","message":"too many connections: retry later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await
    })
    .await;
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl HttpListener {
    /// The next connection, handshake done, holding its slot.
    pub async fn accept(&mut self) -> (HttpConn, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (it only does when aborted): accept nothing more.
            None => std::future::pending().await,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
