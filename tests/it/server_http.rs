//! The HTTP/JSON API against a real server: every route with the spec's shapes, a whole
//! story with a live-feed subscriber, bad input, auth, and the unavailable path.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::server::*;

fn recharge(n: u128, user: u64, package: &str, coins: u64, price: &str) -> Value {
    json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": coins,
           "price": price, "currency": "USD", "package": package, "channel": "app"})
}

fn gift(n: u128, sender: u64, creator: u64, stream: u64, gift: &str, count: u32) -> Value {
    json!({"type": "gift", "event_id": uuid(n), "sender": sender, "creator": creator,
           "stream": stream, "gift": gift, "count": count})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_story_over_http_with_a_feed_subscriber() {
    let s = TestServer::start().await;

    // A live-feed subscriber on stream 9001, before anything happens.
    let feed = s
        .http_client
        .get(s.url("/v1/streams/9001/feed"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    assert!(
        feed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut feed = feed.bytes_stream();

    // Register users: 42 an adult in the US on a budget, 43 a minor.
    let (st, body) = s
        .send(
            "PUT",
            "/v1/users/42",
            Some(INGEST),
            r#"{"region": "US", "adult": true, "monthly_budget_coins": 1000}"#,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["user"], 42);
    assert_eq!(body["monthly_budget_coins"], 1000);
    let (st, _) = s
        .send("PUT", "/v1/users/43", Some(INGEST), r#"{"adult": false}"#)
        .await;
    assert_eq!(st, 200);

    // Goal, recharges, gifts.
    let (st, body) = s
        .send(
            "PUT",
            "/v1/streams/9001/goal",
            Some(INGEST),
            r#"{"creator": 7, "coins_target": 1000}"#,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!({"stream": 9001, "creator": 7, "coins_received": 0, "goal": {"coins_target": 1000, "progress": 0}})
    );
    let (st, body) = s
        .post_events(json!([
            recharge(1, 42, "coins_500", 500, "6.49"),
            recharge(11, 42, "coins_500", 500, "6.49"),
            recharge(2, 44, "coins_100", 100, "1.29"),
            recharge(3, 43, "coins_100", 100, "1.29"),
            gift(4, 42, 7, 9001, "rose", 3),
            gift(5, 44, 7, 9001, "panda", 2),
            gift(6, 42, 8, 9002, "concert", 1),
            gift(7, 42, 7, 9001, "unicorn", 1),
        ]))
        .await;
    assert_eq!(st, 200, "{body}");
    let o = body["outcomes"].as_array().unwrap();
    assert_eq!(o.len(), 8);
    assert_eq!(o[0]["event_id"], uuid(1));
    assert_eq!(
        (o[0]["status"].as_str(), o[0]["coins"].as_u64()),
        (Some("accepted"), Some(500))
    );
    assert_eq!(o[1]["coins"], 1000);
    assert_eq!(
        (o[3]["status"].as_str(), o[3]["code"].as_str()),
        (Some("rejected"), Some("AGE_RESTRICTED"))
    );
    assert_eq!(o[4]["coins"], 997);
    assert_eq!(o[5]["coins"], 90);
    assert_eq!(o[6]["coins"], 497);
    assert_eq!(o[7]["code"], "UNKNOWN_GIFT");
    assert!(
        o.iter()
            .all(|o| o["seq"].as_u64().unwrap() > 0 && o["duplicate"] == false)
    );

    // Reads with the spec's shapes.
    let (_, w) = s.get("/v1/users/42/wallet", Some(READ)).await;
    assert_eq!(w["user"], 42);
    assert_eq!(w["coins"], 497);
    assert_eq!(w["spent_this_month"], 503);
    assert_eq!(w["monthly_budget_coins"], 1000);
    assert_eq!(w["region"], "US");
    let (_, h) = s
        .get("/v1/users/42/transactions?limit=20", Some(READ))
        .await;
    let h = h["entries"].as_array().unwrap().clone();
    assert_eq!(h.len(), 5, "{h:?}");
    assert_eq!(
        (
            h[0]["type"].as_str(),
            h[0]["status"].as_str(),
            h[0]["code"].as_str()
        ),
        (Some("gift"), Some("rejected"), Some("UNKNOWN_GIFT"))
    );
    assert_eq!(h[0]["coins_delta"], 0);
    assert_eq!(h[0]["event_id"], uuid(7));
    assert_eq!(h[1]["coins_delta"], -500);
    assert_eq!(h[2]["coins_delta"], -3);
    assert_eq!(
        (h[3]["type"].as_str(), h[3]["coins_delta"].as_i64()),
        (Some("recharge"), Some(500))
    );
    assert!(h[0]["seq"].as_u64() > h[1]["seq"].as_u64());
    let (_, h1) = s.get("/v1/users/42/transactions?limit=1", Some(READ)).await;
    assert_eq!(h1["entries"].as_array().unwrap().len(), 1);
    let (_, c) = s.get("/v1/creators/7", Some(READ)).await;
    assert_eq!(c["creator"], 7);
    assert_eq!(c["coins_received"], 13);
    assert_eq!(c["diamonds_total"], 6);
    assert_eq!(c["diamonds_available"], 6);
    assert_eq!(c["diamond_fraction"], "0.5");
    assert_eq!(c["gifts"], json!({"rose": 3, "panda": 2}));
    let (_, t) = s
        .get("/v1/creators/7/top-gifters?limit=10", Some(READ))
        .await;
    assert_eq!(
        t,
        json!({"entries": [{"user": 44, "coins": 10}, {"user": 42, "coins": 3}]})
    );
    let (_, t) = s
        .get("/v1/streams/9001/top-gifters?limit=1", Some(READ))
        .await;
    assert_eq!(t, json!({"entries": [{"user": 44, "coins": 10}]}));
    let (_, l) = s
        .get("/v1/leaderboards/creators?limit=10", Some(READ))
        .await;
    assert_eq!(
        l,
        json!({"entries": [{"creator": 8, "diamonds": 250}, {"creator": 7, "diamonds": 6}]})
    );
    let (_, st9001) = s.get("/v1/streams/9001", Some(READ)).await;
    assert_eq!(
        st9001,
        json!({"stream": 9001, "creator": 7, "coins_received": 13, "goal": {"coins_target": 1000, "progress": 13}})
    );

    // Payouts: creator 8 has 250 diamonds (1.25 USD): below the minimum.
    let (_, p) = s
        .post_events(json!([{"type": "payout", "event_id": uuid(20), "creator": 8, "diamonds": 250, "currency": "USD"}]))
        .await;
    assert_eq!(p["outcomes"][0]["code"], "BELOW_PAYOUT_MINIMUM");
    // Fund a big gifter so creator 8 can cash out exactly 100 USD.
    let mut big = vec![];
    for i in 0..6 {
        big.push(recharge(30 + i, 50, "coins_7000", 7000, "99.99"));
    }
    big.push(gift(40, 50, 8, 9002, "universe", 1));
    big.push(gift(41, 50, 8, 9002, "drama_queen", 1));
    big.push(json!({"type": "payout", "event_id": uuid(42), "creator": 8, "diamonds": 20000, "currency": "USD"}));
    let (st, p) = s.post_events(json!(big)).await;
    assert_eq!(st, 200, "{p}");
    let payout = &p["outcomes"][8];
    assert_eq!(payout["status"], "accepted", "{p}");
    assert_eq!(payout["value"], "100.000");
    let (_, c8) = s.get("/v1/creators/8", Some(READ)).await;
    assert_eq!(
        (
            c8["diamonds_total"].as_u64(),
            c8["diamonds_available"].as_u64()
        ),
        (Some(20249), Some(249))
    );

    // The same events again: the original outcomes, nothing changes.
    let (_, again) = s
        .post_events(json!([gift(4, 42, 7, 9001, "rose", 3)]))
        .await;
    assert_eq!(again["outcomes"][0]["duplicate"], true);
    assert_eq!(again["outcomes"][0]["seq"], o[4]["seq"]);
    assert_eq!(again["outcomes"][0]["coins"], 997);
    assert_eq!(s.coins(42).await, 497);

    // The feed saw the goal, then the gifts to stream 9001 and the progress.
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(text.contains("\"count\":2") && text.contains("\"progress\":13")) {
        let chunk = tokio::time::timeout_at(deadline, feed.next())
            .await
            .expect("feed events in time")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: goal\ndata: {"), "{text}");
    assert!(
        text.contains("event: gift\ndata: {\"event\":\"gift\",\"event_id\":\"")
            && text.contains("\"gift\":\"rose\""),
        "{text}"
    );
    assert!(
        !text.contains("unicorn") && !text.contains("\"stream\":9002"),
        "only accepted gifts of this stream: {text}"
    );
    drop(feed);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_errors_and_changes_nothing() {
    let s = TestServer::start_with(|c| {
        c.limits.http_events_per_batch_max = 5;
        c.limits.http_body_bytes_max = 64 * 1024;
    })
    .await;
    let (st, _) = s
        .post_events(json!([recharge(1, 42, "coins_100", 100, "1.29")]))
        .await;
    assert_eq!(st, 200);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"events\": [".into(), 400, "MALFORMED_JSON"),
        ("not JSON", "hello".into(), 400, "MALFORMED_JSON"),
        ("wrong type", json!({"events": [{"type": "gift", "event_id": uuid(2), "sender": "42", "creator": 7, "stream": 1, "gift": "rose", "count": 1}]}).to_string(), 422, "INVALID_REQUEST"),
        ("negative count", json!({"events": [gift(3, 42, 7, 1, "rose", 1)]}).to_string().replace("\"count\":1", "\"count\":-1"), 422, "INVALID_REQUEST"),
        ("unknown event type", json!({"events": [{"type": "refund", "event_id": uuid(4), "user": 42}]}).to_string(), 422, "INVALID_REQUEST"),
        ("unknown field", json!({"events": [{"type": "gift", "event_id": uuid(5), "sender": 42, "creator": 7, "stream": 1, "gift": "rose", "count": 1, "amount": 5}]}).to_string(), 422, "INVALID_REQUEST"),
        ("no events key", "{}".into(), 422, "INVALID_REQUEST"),
        ("empty batch", json!({"events": []}).to_string(), 422, "EMPTY_BATCH"),
        ("batch over the limit", json!({"events": (0..6).map(|i| gift(100 + i, 42, 7, 1, "rose", 1)).collect::<Vec<_>>()}).to_string(), 413, "BATCH_TOO_LARGE"),
        ("one bad event", json!({"events": [gift(6, 42, 7, 1, "rose", 1), gift(7, 42, 7, 1, "rose", 1)]}).to_string().replacen(&uuid(7), "not-a-uuid", 1), 422, "INVALID_REQUEST"),
        ("bad price", json!({"events": [recharge(8, 42, "coins_100", 100, "1.2.9")]}).to_string(), 422, "INVALID_REQUEST"),
        ("bad currency", json!({"events": [recharge(9, 42, "coins_100", 100, "1.29")]}).to_string().replace("USD", "usd"), 422, "INVALID_REQUEST"),
    ];
    for (name, body, status, code) in cases {
        let (st, resp) = s.send("POST", "/v1/events", Some(INGEST), body).await;
        assert_eq!(
            (st, resp["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {resp}"
        );
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert_eq!(s.coins(42).await, 100, "{name}: nothing applied");
    }
    // Too large a body. The server answers 413 without reading the rest and closes that
    // connection, so use a client of its own (a pooled connection must not be reused).
    let oversize = reqwest::Client::new()
        .post(s.url("/v1/events"))
        .bearer_auth(INGEST)
        .header("connection", "close")
        .header("content-type", "application/json")
        .body(vec![b' '; 128 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(oversize.status().as_u16(), 413);
    let resp: serde_json::Value = oversize.json().await.unwrap();
    assert_eq!(resp["error"]["code"], "BODY_TOO_LARGE", "{resp}");
    // Bad parameters and routes.
    let (st, resp) = s.get("/v1/users/abc/wallet", Some(READ)).await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    let (st, resp) = s
        .get("/v1/creators/7/top-gifters?limit=0", Some(READ))
        .await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    let (st, resp) = s
        .get("/v1/creators/7/top-gifters?limit=101", Some(READ))
        .await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (400, Some("INVALID_PARAMETER"))
    );
    let (st, resp) = s.get("/v2/anything", Some(READ)).await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (st, resp) = s.send("DELETE", "/v1/events", Some(INGEST), "").await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
    let (st, resp) = s
        .send(
            "PUT",
            "/v1/streams/1/goal",
            Some(INGEST),
            r#"{"creator": 7, "coins_target": 0}"#,
        )
        .await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (422, Some("AMOUNT_OUT_OF_RANGE"))
    );
    let (st, resp) = s
        .send(
            "PUT",
            "/v1/users/42",
            Some(INGEST),
            r#"{"region": "Narnia"}"#,
        )
        .await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (422, Some("INVALID_REQUEST"))
    );
    // The server keeps serving.
    let (st, _) = s.post_events(json!([gift(50, 42, 7, 1, "rose", 1)])).await;
    assert_eq!(st, 200);
    assert_eq!(s.coins(42).await, 99);
}

/// Every protected route x every token kind: no token and unknown tokens get 401, a
/// token without the scope 403, one with it (or admin) passes auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_scope() {
    // 21 failed authentications from one address: more than the failed-auth limit lets
    // through (tested in hostile_http.rs).
    let s = TestServer::start_with(|c| c.limits.auth_failures_per_peer_max = 0).await;
    let ingest_routes = [
        (
            "POST",
            "/v1/events",
            json!({"events": [recharge(1, 42, "coins_100", 100, "1.29")]}).to_string(),
        ),
        ("PUT", "/v1/users/42", "{}".to_owned()),
        (
            "PUT",
            "/v1/streams/1/goal",
            r#"{"creator": 7, "coins_target": 10}"#.to_owned(),
        ),
    ];
    let read_routes = [
        "/v1/users/42/wallet",
        "/v1/users/42/transactions",
        "/v1/creators/7",
        "/v1/creators/7/top-gifters",
        "/v1/streams/1/top-gifters",
        "/v1/leaderboards/creators",
        "/v1/streams/1",
    ];
    for (method, path, body) in &ingest_routes {
        for (token, want) in [
            (None, 401),
            (Some("wrong-token-0000000000"), 401),
            (Some(READ), 403),
            (Some(INGEST), 200),
            (Some(ADMIN), 200),
        ] {
            let (st, resp) = s.send(method, path, token, body.clone()).await;
            assert_eq!(st, want, "{method} {path} with {token:?}: {resp}");
        }
    }
    for path in read_routes {
        for (token, want) in [
            (None, 401),
            (Some("wrong-token-0000000000"), 401),
            (Some(INGEST), 200),
            (Some(READ), 200),
            (Some(ADMIN), 200),
        ] {
            let (st, resp) = s.get(path, token).await;
            assert_eq!(st, want, "GET {path} with {token:?}: {resp}");
        }
    }
    // The feed needs read too.
    let resp = s
        .http_client
        .get(s.url("/v1/streams/1/feed"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Open routes.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (st, _) = s.get(path, None).await;
        assert_eq!(st, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_metrics_describe_the_service() {
    let s = TestServer::start().await;
    let (_, doc) = s.get("/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/events",
        "/v1/users/{id}",
        "/v1/users/{id}/wallet",
        "/v1/users/{id}/transactions",
        "/v1/creators/{id}",
        "/v1/creators/{id}/top-gifters",
        "/v1/streams/{id}/top-gifters",
        "/v1/leaderboards/creators",
        "/v1/streams/{id}/goal",
        "/v1/streams/{id}",
        "/v1/streams/{id}/feed",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"]["EventsRequest"].is_object());
    // Every route with a body documents 415; every 429 and 503 documents Retry-After.
    let mut bodies = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            if op.get("requestBody").is_some() {
                bodies += 1;
                assert!(responses["415"].is_object(), "{method} {path} lacks 415");
            }
            for status in ["429", "503"] {
                if let Some(r) = responses.get(status) {
                    assert!(
                        r["headers"]["Retry-After"].is_object(),
                        "{method} {path} {status} lacks Retry-After"
                    );
                }
            }
        }
    }
    assert!(bodies >= 4, "POST events, PUT user, goal, economy");
    s.post_events(json!([
        recharge(1, 42, "coins_100", 100, "1.29"),
        gift(2, 42, 7, 1, "rose", 1),
        gift(3, 42, 7, 1, "nope", 1)
    ]))
    .await;
    let text = s.metrics().await;
    for needle in [
        "giftstream_events_total{type=\"gift\",outcome=\"accepted\"}",
        "giftstream_events_total{type=\"gift\",outcome=\"UNKNOWN_GIFT\"}",
        "giftstream_ingest_duration_seconds_bucket{protocol=\"http\",le=\"0.001\"}",
        "giftstream_commit_duration_seconds_bucket",
        "giftstream_batch_events_bucket",
        "giftstream_commit_pending_events",
        "giftstream_build_info{version=",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}");
    }
    assert!(!text.contains("quantile="), "histograms, not summaries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_journal_makes_the_service_unavailable_then_it_resumes() {
    let s = TestServer::start_with(|c| {
        c.commit.events_max = 2;
        c.commit.pending_events_max = 2;
    })
    .await;
    s.journal
        .failing
        .store(true, std::sync::atomic::Ordering::Release);
    // Applied but not durable: the durable ack waits; meanwhile the queue fills.
    let pending = {
        let client = s.http_client.clone();
        let url = s.url("/v1/events");
        let body = json!({"events": [recharge(1, 42, "coins_100", 100, "1.29"), recharge(2, 42, "coins_100", 100, "1.29")]}).to_string();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(INGEST)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, resp) = s
        .post_events(json!([recharge(3, 42, "coins_100", 100, "1.29")]))
        .await;
    assert_eq!(
        (st, resp["error"]["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{resp}"
    );
    // Every 503 says when to come back.
    let refused = s
        .http_client
        .post(s.url("/v1/events"))
        .bearer_auth(INGEST)
        .json(&json!({"events": [recharge(3, 42, "coins_100", 100, "1.29")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let not_ready = s.http_client.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status().as_u16(), 503);
    assert_eq!(not_ready.headers()["retry-after"], "1");
    // Storage returns: the waiting request completes, new ones are accepted.
    s.journal
        .failing
        .store(false, std::sync::atomic::Ordering::Release);
    assert_eq!(pending.await.unwrap(), 200);
    let (st, _) = s
        .post_events(json!([recharge(3, 42, "coins_100", 100, "1.29")]))
        .await;
    assert_eq!(st, 200);
    let (st, _) = s.get("/readyz", None).await;
    assert_eq!(st, 200);
    assert_eq!(s.coins(42).await, 300);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_reused_or_issued_too_long_ago_is_refused_over_http() {
    let s = TestServer::start().await;
    let post = |events: Value| {
        let body = json!({ "events": events }).to_string();
        let s = &s;
        async move { s.send("POST", "/v1/events", Some(INGEST), body).await }
    };
    let (st, body) = post(json!([recharge(1, 10, "coins_100", 100, "1.29")])).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["outcomes"][0]["coins"], 100);
    // The same id for another user's recharge: refused, nothing of user 10 revealed.
    let (st, body) = post(json!([recharge(1, 11, "coins_500", 500, "6.49")])).await;
    assert_eq!(st, 200, "{body}");
    let o = &body["outcomes"][0];
    assert_eq!(o["status"], "rejected");
    assert_eq!(o["code"], "EVENT_ID_REUSED");
    assert_eq!(o["seq"], 0);
    assert!(o.get("coins").is_none(), "{o}");
    // An exact retry: the original outcome.
    let (_, body) = post(json!([recharge(1, 10, "coins_100", 100, "1.29")])).await;
    assert_eq!(body["outcomes"][0]["duplicate"], true);
    assert_eq!(body["outcomes"][0]["coins"], 100);
    // issued_ms an hour ago: past the default 10-minute horizon.
    let now = giftstream::clock::now().0;
    let mut old = recharge(2, 10, "coins_100", 100, "1.29");
    old["issued_ms"] = json!(now - 3_600_000);
    let mut fresh = recharge(3, 10, "coins_100", 100, "1.29");
    fresh["issued_ms"] = json!(now);
    let (st, body) = post(json!([old, fresh])).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["outcomes"][0]["code"], "EVENT_EXPIRED");
    assert_eq!(body["outcomes"][1]["coins"], 200);
    let (_, wallet) = s.send("GET", "/v1/users/10/wallet", Some(READ), "").await;
    assert_eq!(wallet["coins"], 200, "{wallet}");
    let (_, wallet) = s.send("GET", "/v1/users/11/wallet", Some(READ), "").await;
    assert_eq!(wallet["coins"], 0, "{wallet}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_id_reused_for_other_settings_is_a_conflict() {
    let s = TestServer::start().await;
    let put = |body: &'static str| {
        let s = &s;
        async move { s.send("PUT", "/v1/users/50", Some(INGEST), body).await }
    };
    let first = r#"{"event_id": "5f0c6c1e-0000-4000-8000-0000000000aa", "region": "US", "monthly_budget_coins": 500}"#;
    let (st, body) = put(first).await;
    assert_eq!(st, 200, "{body}");
    let (st, again) = put(first).await;
    assert_eq!((st, &again["duplicate"]), (200, &json!(true)), "{again}");
    assert_eq!(again["seq"], body["seq"]);
    // The same id with other settings: refused, the stored settings unchanged.
    let other =
        r#"{"event_id": "5f0c6c1e-0000-4000-8000-0000000000aa", "region": "DE", "adult": false}"#;
    let (st, body) = put(other).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "EVENT_ID_REUSED");
    let (_, wallet) = s.send("GET", "/v1/users/50/wallet", Some(READ), "").await;
    assert_eq!(
        (&wallet["region"], &wallet["adult"]),
        (&json!("US"), &json!(true)),
        "{wallet}"
    );
}

/// A body not declared JSON is 415 `UNSUPPORTED_MEDIA_TYPE` on every route that takes one,
/// in the error shape, before the body is read: nothing is applied. A JSON type with
/// parameters (`; charset=utf-8`) or a `+json` suffix is JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_not_declared_json_is_415_and_nothing_applies() {
    let s = TestServer::start().await;
    let events = json!({"events": [recharge(1, 42, "coins_100", 100, "1.29")]}).to_string();
    let routes: Vec<(reqwest::Method, &str, &str, String)> = vec![
        (reqwest::Method::POST, "/v1/events", INGEST, events.clone()),
        (
            reqwest::Method::PUT,
            "/v1/users/42",
            INGEST,
            json!({"event_id": uuid(2), "adult": false}).to_string(),
        ),
        (
            reqwest::Method::PUT,
            "/v1/streams/9001/goal",
            INGEST,
            json!({"event_id": uuid(3), "creator": 7, "coins_target": 1000}).to_string(),
        ),
        (reqwest::Method::PUT, "/v1/economy", ADMIN, "{}".to_owned()),
    ];
    for (method, path, token, body) in &routes {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            Some("text/json"),
        ] {
            let mut req = s
                .http_client
                .request(method.clone(), s.url(path))
                .bearer_auth(token)
                .body(body.clone());
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.status().as_u16(),
                415,
                "{method} {path} as {content_type:?}"
            );
            let answer: Value = resp.json().await.unwrap();
            assert_eq!(
                answer["error"]["code"], "UNSUPPORTED_MEDIA_TYPE",
                "{answer}"
            );
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
    assert_eq!(s.coins(42).await, 0, "nothing applied");
    let (st, stream) = s.get("/v1/streams/9001", Some(READ)).await;
    assert!(
        st == 404 || stream["goal"].is_null(),
        "no goal set: {stream}"
    );
    // Still an adult: the settings were not applied, so a recharge is accepted.
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.giftstream+json",
    ] {
        let resp = s
            .http_client
            .post(s.url("/v1/events"))
            .bearer_auth(INGEST)
            .header("content-type", content_type)
            .body(events.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{content_type}");
    }
    assert_eq!(
        s.coins(42).await,
        100,
        "applied once (the same event id thrice)"
    );
    s.stop().await.unwrap();
}
