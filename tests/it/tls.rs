//! TLS on both listeners (a certificate made at test time by rcgen), and the HTTP
//! listener's connection limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use giftstream::client::{Client, tls_roots};
use giftstream::config::Config;
use giftstream::engine::{Effect, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::server::{INGEST, READ, SHIPPED_CONFIG, TestServer};
use crate::support::{gift, recharge};

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert.pem, key.pem).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn https(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_speak_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let (other, _) = certificate(dir.path(), "other");
    let s = TestServer::start_with(|c| {
        c.tls.cert = cert.clone();
        c.tls.key = key.clone();
        c.limits.read_timeout_ms = 500;
    })
    .await;

    // Binary protocol over TLS, the certificate verified for its name.
    let roots = tls_roots(&cert).unwrap();
    let client = Client::connect_tls(s.tcp, "localhost", roots.clone(), INGEST)
        .await
        .unwrap();
    let o = client
        .send(&[recharge(1, 42, "coins_100"), gift(2, 42, 7, "rose", 1)])
        .await
        .unwrap();
    assert!(o[0].is_accepted(), "{o:?}");
    assert_eq!(o[1].status, Status::Accepted(Effect::Coins(99)));

    // HTTP over TLS sees what the binary protocol did.
    let http = https(&cert);
    let base = format!("https://127.0.0.1:{}", s.http.port());
    let wallet = http
        .get(format!("{base}/v1/users/42/wallet"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(wallet.status(), 200);
    let body: serde_json::Value = wallet.json().await.unwrap();
    assert_eq!(body["coins"], 99, "{body}");

    // A client that does not trust the certificate is refused before any token is sent.
    let err = Client::connect_tls(s.tcp, "localhost", tls_roots(&other).unwrap(), INGEST)
        .await
        .err()
        .expect("an untrusted certificate");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(https(&other).get(&base).send().await.is_err());
    // ... and so is the wrong name.
    assert!(
        Client::connect_tls(s.tcp, "example.com", roots.clone(), INGEST)
            .await
            .is_err()
    );

    // Plain text gets nothing: no HTTP response, no protocol frame.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/healthz", s.http.port()))
            .await
            .is_err()
    );
    assert!(Client::connect(s.tcp, INGEST).await.is_err());

    // A peer that opens a connection and never handshakes is dropped after the read
    // timeout instead of holding its slot.
    let mut silent = tokio::net::TcpStream::connect(s.tcp).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("giftstream_tls_handshake_failures_total "))
        .expect("the handshake failure counter")
        .parse()
        .unwrap();
    assert!(failures >= 4.0, "{failures}");
    // Only the first client's events were applied.
    assert_eq!(s.engine.last_seq(), 2);
    s.stop().await.unwrap();
}

#[test]
fn tls_config_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let mut config = Config::from_toml_str(SHIPPED_CONFIG).unwrap();
    config.tls.cert = cert.clone();
    let err = config.validate().unwrap_err();
    assert_eq!(err.key, "tls");

    // A key file that is not a key, a certificate file without a certificate.
    config.tls.key = cert.clone();
    let err = giftstream::server::tls::acceptors(&config.tls, false)
        .err()
        .expect("a certificate is no key");
    assert_eq!(err.key, "tls.key", "{err}");
    config.tls.key = key.clone();
    config.tls.cert = key.clone();
    let err = giftstream::server::tls::acceptors(&config.tls, false)
        .err()
        .expect("a key is no certificate");
    assert_eq!(err.key, "tls.cert", "{err}");
    config.tls.cert = dir.path().join("missing.pem");
    let err = giftstream::server::tls::acceptors(&config.tls, false)
        .err()
        .expect("missing file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A key that does not match the certificate.
    let (other_cert, _) = certificate(dir.path(), "other");
    config.tls.cert = other_cert;
    let err = giftstream::server::tls::acceptors(&config.tls, false)
        .err()
        .expect("mismatched pair");
    assert_eq!(err.key, "tls", "{err}");
    config.tls.cert = cert;
    assert!(
        giftstream::server::tls::acceptors(&config.tls, false)
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_bounded() {
    let s = TestServer::start_with(|c| c.limits.connections_max = 2).await;
    // Two idle keep-alive connections hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(s.http).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let mut third = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"CONNECTION_LIMIT""#), "{answer}");
    // A slot frees when a connection closes (once the server has seen the close: on a
    // loaded machine that can take longer than a moment, and until then it refuses).
    // Probed with one plain connection per request, so that every connection the server
    // counts is one the test sees (a pooling client may retry on a fresh connection).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut refused = 1;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = tokio::net::TcpStream::connect(s.http).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        match answer.get(9..12).unwrap_or_default() {
            "200" => break,
            "503" if tokio::time::Instant::now() < deadline => refused += 1,
            status => panic!("a freed slot: want 200, got {status:?}: {answer}"),
        }
    }
    // Free every slot, so that reading the metrics is not refused itself.
    drop(held);
    // The metrics are the test process's: other tests' servers (hostile_http) refuse
    // HTTP connections too, so this server's refusals are a lower bound.
    let metrics = s.metrics().await;
    let counted = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"giftstream_limit_rejections_total{limit="http_connections"} "#)
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no http_connections rejections counted\n{metrics}"));
    assert!(counted >= refused, "{counted} < {refused}\n{metrics}");
    s.stop().await.unwrap();
}
