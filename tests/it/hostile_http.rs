//! Issue #34 (2, 4, 5): hostile clients against a real server, in real bytes over
//! loopback — slowloris and idle sockets, stalled bodies, unauthenticated bodies,
//! clients that stop reading, too many requests at once, h2c, and a peer guessing
//! tokens on both listeners.

use std::time::{Duration, Instant};

use giftstream::protocol::{self, ClientFrame, ServerFrame, error_code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::server::*;

/// Reads until the server closes the connection (EOF or reset), at most `limit`;
/// what it sent and when it closed, or `None` if it did not.
async fn read_until_closed(socket: &mut TcpStream, limit: Duration) -> Option<(String, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&got).into_owned(), Instant::now()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request on a connection of its own (`connection: close`): the status line and
/// the rest of the answer.
async fn request_once(addr: std::net::SocketAddr, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut socket, Duration::from_secs(10))
        .await
        .expect("an answer and a close within 10 s");
    answer
}

/// Sends `request` on fresh connections until one is answered `want` (a slot the
/// server freed is free once its connection task has ended), for at most 3 s.
async fn until_status(addr: std::net::SocketAddr, request: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let answer = request_once(addr, request).await;
        if status(&answer) == want || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n")
}

/// The head of a POST /v1/events announcing `length` bytes of body.
fn post_head(token: Option<&str>, length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or_default()
}

/// Issue #34 (2): with `connections_max = 3`, three idle or slowloris sockets locked
/// everyone out for as long as they stayed. Now a request's head must be complete
/// within the header-read timeout of its first byte, however it trickles, and a
/// connection waiting for a request is closed after the (longer) idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_sockets_are_closed_after_their_timeouts_and_free_their_slots() {
    let s = TestServer::start_with(|c| {
        c.limits.connections_max = 3;
        c.limits.http_header_read_timeout_ms = 1_000;
        c.limits.http_idle_timeout_ms = 2_500;
    })
    .await;
    // A partial request line, then nothing.
    let mut line = TcpStream::connect(s.http).await.unwrap();
    line.write_all(b"GET /healthz HT").await.unwrap();
    let line_sent = Instant::now();
    // Headers that keep trickling in, a header every 200 ms: progress does not extend
    // the deadline.
    let mut headers = TcpStream::connect(s.http).await.unwrap();
    headers
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let headers_sent = Instant::now();
    let (mut headers_read, mut headers_write) = headers.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let header = format!("x-trickle-{i}: y\r\n");
            if headers_write.write_all(header.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    // A request answered, then the connection kept alive and idle.
    let mut idle = TcpStream::connect(s.http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    // The three hold every slot.
    let answer = request_once(s.http, &get("/healthz", None)).await;
    assert_eq!(status(&answer), "503", "{answer}");
    assert!(answer.contains(r#""code":"CONNECTION_LIMIT""#), "{answer}");

    let (_, line_closed) = read_until_closed(&mut line, Duration::from_secs(8))
        .await
        .expect("a partial request line is closed after the header-read timeout");
    let mut headers_answer = Vec::new();
    let headers_closed = tokio::time::timeout(
        Duration::from_secs(8),
        headers_read.read_to_end(&mut headers_answer),
    )
    .await
    .map(|_| Instant::now())
    .expect("trickling headers are closed after the header-read timeout");
    trickle.abort();
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed after the idle timeout");
    let line_after = line_closed - line_sent;
    let headers_after = headers_closed - headers_sent;
    let idle_after = idle_closed - idle_since;
    assert!(
        line_after >= Duration::from_millis(900) && line_after < Duration::from_secs(5),
        "{line_after:?}"
    );
    assert!(
        headers_after >= Duration::from_millis(900) && headers_after < Duration::from_secs(5),
        "{headers_after:?}"
    );
    // The idle timeout is its own: not the (shorter) header-read one.
    assert!(
        idle_after >= Duration::from_millis(2_300) && idle_after < Duration::from_millis(6_500),
        "{idle_after:?}"
    );
    // The slots are free again.
    let answer = until_status(s.http, &get("/healthz", None), "200").await;
    assert_eq!(status(&answer), "200", "{answer}");
    let metrics = request_once(s.http, &get("/metrics", None)).await;
    for limit in ["http_header_read_timeout", "http_idle_timeout"] {
        let counted = format!(r#"giftstream_limit_rejections_total{{limit="{limit}"}}"#);
        assert!(metrics.contains(&counted), "{counted}\n{metrics}");
    }
    s.stop().await.unwrap();
}

/// Issue #34 (2): a body that stops arriving held its request (and connection) forever.
/// Now: `408 BODY_TIMEOUT` once the body-read timeout has passed, and the connection
/// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_is_answered_408_after_the_body_read_timeout() {
    let s = TestServer::start_with(|c| c.limits.http_body_read_timeout_ms = 1_000).await;
    let before = s.engine.last_seq();
    let mut socket = TcpStream::connect(s.http).await.unwrap();
    socket
        .write_all(post_head(Some(INGEST), 100).as_bytes())
        .await
        .unwrap();
    socket.write_all(br#"{"events": ["#).await.unwrap();
    let sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut socket, Duration::from_secs(8))
        .await
        .expect("answered and closed after the body-read timeout");
    assert_eq!(status(&answer), "408", "{answer}");
    assert!(answer.contains(r#""code":"BODY_TIMEOUT""#), "{answer}");
    let after = closed - sent;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "{after:?}"
    );
    assert_eq!(s.engine.last_seq(), before, "nothing applied");
    s.stop().await.unwrap();
}

/// Issue #34 (2): bodies were read (buffered, up to 4 MiB each) before the token was
/// checked. Now a request without a good token is answered from its head alone: here its
/// body never comes, and the answer does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_good_token_is_refused_before_its_body_is_read() {
    let s = TestServer::start().await;
    for (token, want, code) in [
        (None, "401", "UNAUTHORIZED"),
        (Some("wrong-token-0000000000"), "401", "UNAUTHORIZED"),
        (Some(READ), "403", "FORBIDDEN"),
    ] {
        let mut socket = TcpStream::connect(s.http).await.unwrap();
        socket
            .write_all(post_head(token, 4_000_000).as_bytes())
            .await
            .unwrap();
        // 1 KiB of the announced ~4 MB, then nothing.
        socket.write_all(&[b' '; 1024]).await.unwrap();
        let (answer, _) = read_until_closed(&mut socket, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{token:?}: answered without the body, and closed"));
        assert_eq!(status(&answer), want, "{token:?}: {answer}");
        assert!(answer.contains(&format!(r#""code":"{code}""#)), "{answer}");
    }
    s.stop().await.unwrap();
}

/// An HTTP client that stops reading its responses held its connection (and the
/// shutdown) for as long as it liked. Now the write timeout closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let s = TestServer::start_with(|c| {
        c.limits.connections_max = 1;
        c.limits.write_timeout_ms = 1_000;
    })
    .await;
    let doc = request_once(s.http, &get("/openapi.json", None)).await;
    assert_eq!(status(&doc), "200");
    // Its slot is free once the server has seen the close (and the probe's too, a
    // moment after it).
    assert_eq!(
        status(&until_status(s.http, &get("/healthz", None), "200").await),
        "200"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Enough pipelined requests for ~64 MB of answers: far more than the socket buffers
    // hold. The client never reads.
    let requests = (64 << 20) / doc.len() + 1;
    let stalled = TcpStream::connect(s.http).await.unwrap();
    let (_read_half, mut write_half) = stalled.into_split();
    let writer = tokio::spawn(async move {
        let one = b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n";
        for _ in 0..requests {
            if write_half.write_all(one).await.is_err() {
                return;
            }
        }
        // Keep the write half open: the server must close by itself.
        std::future::pending::<()>().await;
    });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = request_once(s.http, &get("/healthz", None)).await;
    assert_eq!(
        status(&answer),
        "503",
        "the stalled client holds the slot: {answer}"
    );
    // Freed once a write has waited the write timeout.
    let freed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = request_once(s.http, &get("/healthz", None)).await;
        match status(&answer) {
            "200" => break started.elapsed(),
            "503" if started.elapsed() < Duration::from_secs(10) => {}
            other => panic!("want the slot freed within 10 s, got {other:?}: {answer}"),
        }
    };
    assert!(freed >= Duration::from_millis(900), "{freed:?}");
    writer.abort();
    let metrics = request_once(s.http, &get("/metrics", None)).await;
    // Process-wide metrics (other tests' servers count too): the label is there.
    let counted = r#"giftstream_limit_rejections_total{limit="http_write_timeout"}"#;
    assert!(metrics.contains(counted), "{metrics}");
    s.stop().await.unwrap();
}

/// Issue #34 (2): nothing bounded the requests being handled at once (an HTTP/2
/// connection carried ~200 past the connection cap). Now `limits.http_requests_inflight_max`
/// does: one more is answered `503 OVERLOADED` with Retry-After, the operations routes
/// still answer, and a slot frees when a request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_with_503_overloaded() {
    let s = TestServer::start_with(|c| c.limits.http_requests_inflight_max = 2).await;
    let body = serde_json::json!({"events": [{
        "type": "recharge", "event_id": uuid(1), "user": 42, "coins": 100,
        "price": "1.29", "currency": "USD", "package": "coins_100"
    }]})
    .to_string();
    // Two authorized requests whose bodies are on their way (half sent): in flight.
    let hold = || async {
        let mut socket = TcpStream::connect(s.http).await.unwrap();
        let head = post_head(Some(INGEST), body.len());
        socket.write_all(head.as_bytes()).await.unwrap();
        socket
            .write_all(&body.as_bytes()[..body.len() / 2])
            .await
            .unwrap();
        socket
    };
    let mut held = vec![hold().await, hold().await];
    let wallet = get("/v1/users/42/wallet", Some(READ));
    let started = Instant::now();
    let answer = loop {
        // A probe the server took before a held request's head held a slot then: that
        // held request was refused (answered). Hold another in its place.
        for h in &mut held {
            let mut buf = [0u8; 1024];
            match h.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => *h = hold().await,
            }
        }
        let answer = request_once(s.http, &wallet).await;
        if status(&answer) == "503" || started.elapsed() > Duration::from_secs(20) {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status(&answer), "503", "{answer}");
    assert!(answer.contains(r#""code":"OVERLOADED""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{answer}"
    );
    // Probes and scrapes are not counted.
    assert_eq!(
        status(&request_once(s.http, &get("/healthz", None)).await),
        "200"
    );
    // One held request finishes: a slot frees.
    let mut first = held.remove(0);
    first
        .write_all(&body.as_bytes()[body.len() / 2..])
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answer = request_once(s.http, &wallet).await;
    assert_eq!(status(&answer), "200", "{answer}");
    let metrics = request_once(s.http, &get("/metrics", None)).await;
    assert!(
        metrics.contains(r#"giftstream_limit_rejections_total{limit="http_requests_inflight"}"#),
        "{metrics}"
    );
    drop(held);
    s.stop().await.unwrap();
}

/// Issue #34 (2, 4): h2c was on, and one connection carried ~200 concurrent requests
/// (190 feed subscribers rode one connection with `connections_max = 2`). Now HTTP/2 is
/// off unless `server.http2` is set; then a connection carries at most
/// `limits.http2_streams_per_connection_max` streams, live feeds included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_off_by_default_and_bounded_per_connection_when_on() {
    let s = TestServer::start().await;
    let tcp = TcpStream::connect(s.http).await.unwrap();
    let refused = match h2::client::handshake(tcp).await {
        Err(_) => true,
        Ok((mut send, connection)) => {
            let driver = tokio::spawn(connection);
            let request = http_request("/healthz");
            let answered = match send.send_request(request, true) {
                Ok((response, _)) => tokio::time::timeout(Duration::from_secs(5), response)
                    .await
                    .is_ok_and(|r| r.is_ok()),
                Err(_) => false,
            };
            driver.abort();
            !answered
        }
    };
    assert!(
        refused,
        "HTTP/2 (h2c prior knowledge) must be off by default"
    );
    s.stop().await.unwrap();

    let s = TestServer::start_with(|c| {
        c.server.http2 = true;
        c.limits.http2_streams_per_connection_max = 4;
    })
    .await;
    let tcp = TcpStream::connect(s.http).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut connection = Box::pin(connection);
    // A first answer: the server's SETTINGS have arrived by then.
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(http_request("/healthz"), true).unwrap();
    let response = tokio::select! {
        r = response => r.unwrap(),
        _ = &mut connection => panic!("the connection ended"),
    };
    assert_eq!(response.status(), 200);
    assert_eq!(connection.max_concurrent_send_streams(), 4);
    let driver = tokio::spawn(connection);
    // Four feeds take every stream; a fifth waits for one of them to end.
    let mut feeds = Vec::new();
    for i in 0..4 {
        let mut ready = send.clone().ready().await.unwrap();
        let (response, _) = ready.send_request(feed_request(i), true).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("a feed within the stream limit answers")
            .unwrap();
        assert_eq!(response.status(), 200);
        feeds.push(response);
    }
    let fifth = async {
        let mut ready = send.clone().ready().await.unwrap();
        let (response, _) = ready.send_request(feed_request(4), true).unwrap();
        response.await.unwrap()
    };
    tokio::pin!(fifth);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut fifth)
            .await
            .is_err(),
        "a fifth stream on the connection must wait"
    );
    drop(feeds.pop());
    let response = tokio::time::timeout(Duration::from_secs(5), fifth)
        .await
        .expect("answered once a feed ended");
    assert_eq!(response.status(), 200);
    drop(feeds);
    driver.abort();
    s.stop().await.unwrap();
}

fn http_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .uri(format!("http://x{path}"))
        .body(())
        .unwrap()
}

fn feed_request(stream: u64) -> http::Request<()> {
    http::Request::builder()
        .uri(format!("http://x/v1/streams/{stream}/feed"))
        .header("authorization", format!("Bearer {READ}"))
        .body(())
        .unwrap()
}

/// Reads one binary frame; `None` when the server closed the connection.
async fn read_frame(socket: &mut TcpStream) -> Option<ServerFrame> {
    let mut header = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut header))
        .await
        .expect("a frame or a close in time");
    read.ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    socket.read_exact(&mut payload).await.ok()?;
    Some(protocol::decode(&payload).expect("a decodable server frame"))
}

/// A binary connection's answer to an Auth frame with `token`.
async fn binary_auth(s: &TestServer, token: &str) -> ServerFrame {
    let mut socket = TcpStream::connect(s.tcp).await.unwrap();
    // Written whole; the server may have refused (and closed) before reading it.
    let _ = socket
        .write_all(&protocol::frame_bytes(&ClientFrame::Auth {
            token: token.into(),
        }))
        .await;
    read_frame(&mut socket).await.expect("an answer frame")
}

/// Issue #34 (5): failed authentications were never limited. Now a peer address gets
/// `limits.auth_failures_per_peer_max` failures (either listener) in a burst; then every
/// attempt from it — a good token too: the test client shares the guesser's address,
/// 127.0.0.1 — is refused without its token being checked (HTTP 429 AUTH_RATE_LIMITED
/// with Retry-After; binary error 14 and close) until the budget refills. Successes do
/// not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_guessing_tokens_is_refused_on_both_listeners_until_its_budget_refills() {
    // 3 failures in a burst, then one more every 5 s (long enough that none comes back
    // while the test makes its 3 failures, even on a starved machine).
    let s = TestServer::start_with(|c| {
        c.limits.auth_failures_per_peer_max = 3;
        c.limits.auth_failure_window_ms = 15_000;
    })
    .await;
    let wallet = "/v1/users/42/wallet";
    for _ in 0..20 {
        assert_eq!(
            s.get(wallet, Some(READ)).await.0,
            200,
            "successes are not counted"
        );
    }
    assert!(matches!(
        binary_auth(&s, INGEST).await,
        ServerFrame::AuthOk { .. }
    ));
    for _ in 0..3 {
        let (st, body) = s.get(wallet, Some("wrong-token-0000000000")).await;
        assert_eq!(st, 401, "{body}");
    }
    // Spent: refused whatever the token, on both listeners.
    let resp = s
        .http_client
        .get(s.url(wallet))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AUTH_RATE_LIMITED", "{body}");
    match binary_auth(&s, INGEST).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, error_code::AUTH_RATE_LIMITED),
        other => panic!("want AUTH_RATE_LIMITED, got {other:?}"),
    }
    // Refilled after Retry-After: the good token passes again.
    tokio::time::sleep(Duration::from_millis(retry_after * 1000 + 100)).await;
    assert_eq!(s.get(wallet, Some(READ)).await.0, 200);
    // A failure on the binary listener counts against the same address: the budget
    // (one unit back) is spent again, and HTTP refuses.
    match binary_auth(&s, "wrong-token-0000000000").await {
        ServerFrame::Error { code, .. } => assert_eq!(code, error_code::UNAUTHENTICATED),
        other => panic!("{other:?}"),
    }
    let (st, body) = s.get(wallet, Some(READ)).await;
    assert_eq!(st, 429, "{body}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"giftstream_limit_rejections_total{limit="auth_failures"}"#),
        "{metrics}"
    );
    s.stop().await.unwrap();
}
