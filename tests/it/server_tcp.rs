//! The binary protocol against a real server: the Rust client, pipelining, the same
//! state as over HTTP, and real bad bytes on the wire.

use std::sync::Arc;
use std::time::Duration;

use giftstream::client::{Client, ClientError};
use giftstream::engine::{Effect, Event, RejectCode, Status};
use giftstream::protocol::{self, ClientFrame, ServerFrame, WireEvent, error_code};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::server::*;
use crate::support::{gift, recharge};

/// Reads one frame; `None` when the server closed the connection.
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

async fn expect_closed(socket: &mut TcpStream) {
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the server closes the connection"
    );
}

async fn authed(s: &TestServer) -> TcpStream {
    authenticate(TcpStream::connect(s.tcp).await.unwrap()).await
}

/// Sends the Auth frame on `socket` and expects `AuthOk`.
async fn authenticate(mut socket: TcpStream) -> TcpStream {
    socket
        .write_all(&protocol::frame_bytes(&ClientFrame::Auth {
            token: INGEST.into(),
        }))
        .await
        .unwrap();
    assert!(matches!(
        read_frame(&mut socket).await,
        Some(ServerFrame::AuthOk { .. })
    ));
    socket
}

fn request(request_id: u64, events: &[Event]) -> Vec<u8> {
    protocol::frame_bytes(&ClientFrame::Request {
        request_id,
        events: events.iter().map(WireEvent::from).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_round_trip_and_pipelining_keep_request_order() {
    let s = TestServer::start().await;
    let client = Arc::new(Client::connect(s.tcp, INGEST).await.unwrap());
    let o = client
        .send(&[
            recharge(1, 42, "coins_7000"),
            gift(2, 42, 7, "rose", 3),
            gift(3, 42, 42, "rose", 1),
            gift(4, 42, 7, "nope", 1),
        ])
        .await
        .unwrap();
    assert_eq!(o[0].status, Status::Accepted(Effect::Coins(7000)));
    assert_eq!(o[1].status, Status::Accepted(Effect::Coins(6997)));
    assert_eq!(o[2].code(), Some(RejectCode::SelfGift));
    assert_eq!(o[3].code(), Some(RejectCode::UnknownGift));

    // 200 requests in flight on one connection, submitted before any is awaited.
    let mut pending = Vec::new();
    for r in 0..200u128 {
        let events: Vec<Event> = (0..10)
            .map(|i| gift(1000 + r * 10 + i, 42, 7, "rose", 1))
            .collect();
        pending.push(client.submit(&events).await.unwrap());
    }
    let mut last_seq = 0;
    let mut last_balance = 6997;
    for p in pending {
        for o in p.outcomes().await.unwrap() {
            assert!(o.seq > last_seq, "outcomes in request order");
            last_seq = o.seq;
            let Status::Accepted(Effect::Coins(c)) = o.status else {
                panic!("{o:?}")
            };
            assert_eq!(c, last_balance - 1);
            last_balance = c;
        }
    }
    assert_eq!(s.coins(42).await, 6997 - 2000);
    // Concurrent tasks sharing the client.
    let tasks: Vec<_> = (0..8u128)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for r in 0..20u128 {
                    let e = [gift(100_000 + t * 1000 + r, 42, 8, "rose", 1)];
                    assert!(client.send(&e).await.unwrap()[0].is_accepted());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.coins(42).await, 6997 - 2000 - 160);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_give_the_same_state_over_tcp_and_http() {
    let events = [
        recharge(1, 42, "coins_500"),
        recharge(2, 43, "coins_100"),
        gift(3, 42, 7, "panda", 4),
        gift(4, 43, 7, "rose", 9),
        gift(5, 43, 8, "rose", 200),
        gift(6, 42, 8, "concert", 1),
    ];
    let over_tcp = TestServer::start().await;
    Client::connect(over_tcp.tcp, INGEST)
        .await
        .unwrap()
        .send(&events)
        .await
        .unwrap();
    let over_http = TestServer::start().await;
    let json_events: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Recharge(r) => json!({"type": "recharge", "event_id": uuid(r.id.0), "user": r.user.0, "coins": r.coins,
                "price": r.price.to_string(), "currency": "USD", "package": format!("coins_{}", r.coins)}),
            Event::Gift(g) => {
                let name = &giftstream::economy::Economy::embedded().gifts[g.gift.0 as usize].id;
                json!({"type": "gift", "event_id": uuid(g.id.0), "sender": g.sender.0, "creator": g.creator.0,
                    "stream": g.stream.0, "gift": name, "count": g.count})
            }
            _ => unreachable!(),
        })
        .collect();
    let (st, _) = over_http.post_events(json!(json_events)).await;
    assert_eq!(st, 200);
    for path in [
        "/v1/users/42/wallet",
        "/v1/users/43/wallet",
        "/v1/users/42/transactions",
        "/v1/creators/7",
        "/v1/creators/8",
        "/v1/creators/7/top-gifters",
        "/v1/streams/9007/top-gifters",
        "/v1/leaderboards/creators",
        "/v1/streams/9008",
    ] {
        let (a, b) = (
            over_tcp.get(path, Some(READ)).await,
            over_http.get(path, Some(READ)).await,
        );
        let strip = |mut v: serde_json::Value| {
            // Times differ between the two servers; everything else must not.
            if let Some(entries) = v["entries"].as_array_mut() {
                for e in entries {
                    e.as_object_mut().unwrap().remove("time_ms");
                }
            }
            v
        };
        assert_eq!(strip(a.1), strip(b.1), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_close_the_connection_and_apply_nothing() {
    let s = TestServer::start_with(|c| {
        c.limits.frame_bytes_max = 64 * 1024;
        c.limits.events_per_frame_max = 100;
    })
    .await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    client.send(&[recharge(1, 42, "coins_100")]).await.unwrap();

    async fn error_code_of(socket: &mut TcpStream) -> u16 {
        match read_frame(socket).await {
            Some(ServerFrame::Error { code, message, .. }) => {
                assert!(!message.is_empty());
                code
            }
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    // Garbage bytes where the auth frame should be.
    let mut socket = TcpStream::connect(s.tcp).await.unwrap();
    socket
        .write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0xff])
        .await
        .unwrap();
    assert_eq!(
        error_code_of(&mut socket).await,
        error_code::MALFORMED_FRAME
    );
    expect_closed(&mut socket).await;

    // Garbage after a good auth.
    let mut socket = authed(&s).await;
    socket.write_all(b"\x00\x00\x00\x03GET").await.unwrap();
    assert_eq!(
        error_code_of(&mut socket).await,
        error_code::MALFORMED_FRAME
    );
    expect_closed(&mut socket).await;

    // A valid payload with trailing bytes is not a valid frame.
    let mut socket = authed(&s).await;
    let mut payload = protocol::encode(&ClientFrame::Request {
        request_id: 1,
        events: vec![WireEvent::from(&gift(2, 42, 7, "rose", 1))],
    });
    payload.push(0);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend(payload);
    socket.write_all(&frame).await.unwrap();
    assert_eq!(
        error_code_of(&mut socket).await,
        error_code::MALFORMED_FRAME
    );

    // Oversize: the header alone is enough to refuse it.
    let mut socket = authed(&s).await;
    socket.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(
        error_code_of(&mut socket).await,
        error_code::FRAME_TOO_LARGE
    );
    expect_closed(&mut socket).await;

    // Truncated: half a frame, then the client stops sending.
    let mut socket = authed(&s).await;
    let whole = request(1, &[gift(3, 42, 7, "rose", 1)]);
    socket.write_all(&whole[..whole.len() / 2]).await.unwrap();
    socket.shutdown().await.unwrap();
    assert_eq!(
        error_code_of(&mut socket).await,
        error_code::MALFORMED_FRAME
    );
    expect_closed(&mut socket).await;

    // No auth frame first.
    let mut socket = TcpStream::connect(s.tcp).await.unwrap();
    socket
        .write_all(&request(1, &[gift(4, 42, 7, "rose", 1)]))
        .await
        .unwrap();
    assert_eq!(
        error_code_of(&mut socket).await,
        error_code::UNAUTHENTICATED
    );
    expect_closed(&mut socket).await;

    // Wrong token, wrong scope.
    for (token, code) in [
        ("not-a-token-at-all-00", error_code::UNAUTHENTICATED),
        (READ, error_code::FORBIDDEN),
    ] {
        let err = Client::connect(s.tcp, token).await.err().expect("refused");
        assert!(
            matches!(err, ClientError::Server { code: c, .. } if c == code),
            "{err}"
        );
    }

    // Empty batch, too many events, an impossible field value.
    for (frame, code) in [
        (request(7, &[]), error_code::EMPTY_BATCH),
        (
            request(
                8,
                &(0..101)
                    .map(|i| gift(500 + i, 42, 7, "rose", 1))
                    .collect::<Vec<_>>(),
            ),
            error_code::TOO_MANY_EVENTS,
        ),
        (
            protocol::frame_bytes(&ClientFrame::Request {
                request_id: 9,
                events: vec![
                    WireEvent::from(&gift(600, 42, 7, "rose", 1)),
                    WireEvent::Payout {
                        id: 601,
                        creator: 7,
                        diamonds: 1,
                        currency: *b"us$",
                    },
                ],
            }),
            error_code::INVALID_EVENT,
        ),
        // A settlement is made by the cluster's nodes: a client cannot mint diamonds.
        (
            protocol::frame_bytes(&ClientFrame::Request {
                request_id: 10,
                events: vec![WireEvent::Settlement {
                    id: 602,
                    creator: 7,
                    source: 1,
                    diamonds: 1_000_000,
                }],
            }),
            error_code::INVALID_EVENT,
        ),
    ] {
        let mut socket = authed(&s).await;
        socket.write_all(&frame).await.unwrap();
        assert_eq!(error_code_of(&mut socket).await, code);
        expect_closed(&mut socket).await;
    }

    // Nothing of any bad frame was applied; the first client still works.
    assert_eq!(s.coins(42).await, 100);
    assert_eq!(
        s.engine
            .creator(giftstream::engine::CreatorId(7))
            .diamonds_available,
        0
    );
    let o = client.send(&[gift(700, 42, 7, "rose", 1)]).await.unwrap();
    assert_eq!(o[0].status, Status::Accepted(Effect::Coins(99)));
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_unavailable_are_error_frames() {
    let s = TestServer::start_with(|c| {
        c.limits.connections_max = 2;
        c.commit.events_max = 1;
        c.commit.pending_events_max = 1;
    })
    .await;
    let a = Client::connect(s.tcp, INGEST).await.unwrap();
    let _b = Client::connect(s.tcp, INGEST).await.unwrap();
    let err = Client::connect(s.tcp, INGEST)
        .await
        .err()
        .expect("over the limit");
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: error_code::CONNECTION_LIMIT,
                ..
            }
        ),
        "{err}"
    );

    s.journal
        .failing
        .store(true, std::sync::atomic::Ordering::Release);
    let first = a.submit(&[recharge(1, 42, "coins_100")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Refused at once (nothing applied), but answered in request order: after `first`.
    let second = a.submit(&[recharge(2, 42, "coins_100")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.journal
        .failing
        .store(false, std::sync::atomic::Ordering::Release);
    assert!(
        first.outcomes().await.unwrap()[0].is_accepted(),
        "the durable ack arrives once storage is back"
    );
    let err = second.outcomes().await.expect_err("unavailable");
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: error_code::UNAVAILABLE,
                ..
            }
        ),
        "{err}"
    );
    // The same connection goes on.
    assert!(a.send(&[recharge(2, 42, "coins_100")]).await.unwrap()[0].is_accepted());
    assert_eq!(s.coins(42).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_request_rate_is_refused_on_both_listeners_and_nothing_applies() {
    let s = TestServer::start_with(|c| c.limits.token_requests_per_second = 5).await;
    // HTTP: a second's burst of 5, then 429 RATE_LIMITED, nothing applied.
    let mut statuses = Vec::new();
    for i in 0..6u128 {
        let (status, body) = s
            .post_events(serde_json::json!([{"type": "recharge",
                "event_id": crate::support::server::uuid(100 + i), "user": 42, "coins": 500,
                "price": "6.49", "currency": "USD", "package": "coins_500", "channel": "app"}]))
            .await;
        statuses.push((status, body["error"]["code"].clone()));
    }
    assert!(
        statuses[..5].iter().all(|(st, _)| *st == 200),
        "{statuses:?}"
    );
    assert_eq!(statuses[5], (429, serde_json::json!("RATE_LIMITED")));
    assert_eq!(s.coins(42).await, 5 * 500);
    // The 429 says when the token may send again: the budget refills one request per
    // 200 ms, so the rounded-up wait is one second.
    let refused = s
        .http_client
        .post(s.url("/v1/events"))
        .bearer_auth(INGEST)
        .json(&serde_json::json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");

    // Binary protocol (another token's budget is its own; this one is fresh): the 6th
    // request in a second gets RATE_LIMITED, the connection stays open, and after a
    // second the token may send again.
    let client = Client::connect(s.tcp, ADMIN).await.unwrap();
    let mut results = Vec::new();
    for i in 0..6u128 {
        results.push(client.send(&[recharge(200 + i, 43, "coins_7000")]).await);
    }
    assert!(results[..5].iter().all(|r| r.is_ok()), "{results:?}");
    assert!(matches!(
        results[5],
        Err(ClientError::Server {
            code: error_code::RATE_LIMITED,
            ..
        })
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = client.send(&[recharge(300, 43, "coins_7000")]).await;
    assert!(again.is_ok(), "{again:?}");
    assert!(
        s.metrics()
            .await
            .contains("giftstream_limit_rejections_total{limit=\"token_rate\"}")
    );
}

/// Issue #34: a client that stops reading held its connection (and the shutdown) for
/// ever: the writer's send had no timeout. Now, past `limits.write_timeout_ms`, the
/// server closes it; what it sent and was applied keeps its outcomes (a retry with the
/// same ids gets them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let server = TestServer::start_with(|c| c.limits.write_timeout_ms = 300).await;
    // A small receive buffer (no autotuning): the server's send buffer fills first.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let socket = authenticate(socket.connect(server.tcp).await.unwrap()).await;
    let (mut read, mut write) = socket.into_split();
    // ~8 bytes of response per event: 600 requests of 2,000 events are ~10 MB of
    // responses, more than the socket buffers hold, and this client reads none of them.
    const REQUESTS: u64 = 600;
    // One batch sent again and again (exact retries, answered in full): cheap to make.
    let events: Vec<Event> = (0..2_000u128)
        .map(|i| gift(i + 1, 1_000 + i as u64, 7, "rose", 1))
        .collect();
    let writer = tokio::spawn(async move {
        for r in 0..REQUESTS {
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                write.write_all(&request(r + 1, &events)),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                break; // the server stopped reading, or closed
            }
        }
        write // kept open: this client neither reads nor hangs up
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now drain: the server must have given up on this client and closed.
    let mut responses = 0u64;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        let mut header = [0u8; 4];
        loop {
            if read.read_exact(&mut header).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
            if read.read_exact(&mut payload).await.is_err() {
                return;
            }
            responses += 1;
        }
    })
    .await;
    assert!(drained.is_ok(), "the server closed the connection");
    assert!(
        responses < REQUESTS,
        "it stopped writing to a client that did not read ({responses} responses)"
    );
    let _held = writer.await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "shutdown is not held up");
}

/// Issue #34: the client treated `WRONG_PARTITION` (a refusal of one request: nothing of
/// it applied, the connection stays open) as fatal for the whole connection, failing
/// every in-flight request the server had applied. Against a server that refuses
/// request 1 and answers request 2 (real frames over loopback), only request 1 fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_partition_refusal_fails_only_its_request() {
    use giftstream::protocol::WireOutcome;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let next = async |socket: &mut TcpStream| -> ClientFrame {
            let mut header = [0u8; 4];
            socket.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
            socket.read_exact(&mut payload).await.unwrap();
            protocol::decode(&payload).unwrap()
        };
        assert!(matches!(next(&mut socket).await, ClientFrame::Auth { .. }));
        let auth_ok = protocol::frame_bytes(&ServerFrame::AuthOk { last_seq: 0 });
        socket.write_all(&auth_ok).await.unwrap();
        // Both requests arrive (pipelined) before either is answered.
        let mut ids = Vec::new();
        for _ in 0..2 {
            match next(&mut socket).await {
                ClientFrame::Request { request_id, .. }
                | ClientFrame::RequestIssued { request_id, .. } => ids.push(request_id),
                other => panic!("{other:?}"),
            }
        }
        let refused = ServerFrame::Error {
            request_id: ids[0],
            code: error_code::WRONG_PARTITION,
            message: "partition 7 is owned by node b".into(),
        };
        socket
            .write_all(&protocol::frame_bytes(&refused))
            .await
            .unwrap();
        let outcome = WireOutcome::from(&giftstream::engine::Outcome {
            seq: 1,
            status: Status::Accepted(Effect::Coins(100)),
            duplicate: false,
            cap: None,
        });
        let answered = ServerFrame::Response {
            request_id: ids[1],
            outcomes: vec![outcome],
        };
        socket
            .write_all(&protocol::frame_bytes(&answered))
            .await
            .unwrap();
        // Keep the connection open until the client is done.
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
    });
    let client = Client::connect(addr, INGEST).await.unwrap();
    let first = client.submit(&[recharge(1, 1, "coins_100")]).await.unwrap();
    let second = client.submit(&[recharge(2, 2, "coins_100")]).await.unwrap();
    let first = first.outcomes().await;
    assert!(
        matches!(first, Err(ClientError::Server { code, .. }) if code == error_code::WRONG_PARTITION),
        "{first:?}"
    );
    let second = second
        .outcomes()
        .await
        .expect("the applied request keeps its answer");
    assert_eq!(second[0].status, Status::Accepted(Effect::Coins(100)));
    assert!(!client.is_closed(), "the connection stays usable");
    drop(client);
    server.await.unwrap();
}

/// Issue #34: an unauthenticated socket held a connection slot for the whole read
/// timeout (60 s) and could make the server take a 4 MiB frame before auth. Now it gets
/// a 5 s deadline and room for an Auth frame only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_socket_gets_a_short_deadline_and_a_small_frame() {
    let server = TestServer::start().await;
    // Silent: closed at the auth deadline, long before the 60 s read timeout.
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(server.tcp).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "closed within 10 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4_500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    // A 1 MiB frame before auth: refused from its length prefix, nothing more read.
    let mut big = TcpStream::connect(server.tcp).await.unwrap();
    big.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    match read_frame(&mut big).await {
        Some(ServerFrame::Error { code, .. }) => assert_eq!(code, error_code::FRAME_TOO_LARGE),
        other => panic!("{other:?}"),
    }
    expect_closed(&mut big).await;
    // After auth, the configured frame limit applies again.
    let mut ok = authed(&server).await;
    let events: Vec<Event> = (0..600u128)
        .map(|i| recharge(900_000 + i, 5, "coins_100"))
        .collect();
    let frame = request(1, &events);
    assert!(frame.len() > 4_096, "{}", frame.len());
    ok.write_all(&frame).await.unwrap();
    assert!(matches!(
        read_frame(&mut ok).await,
        Some(ServerFrame::Response { .. })
    ));
    server.stop().await.unwrap();
}
