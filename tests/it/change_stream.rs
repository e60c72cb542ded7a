//! The change stream (issue #32, feature 4) under kill -9: a bounded HTTP load while
//! giftstream (a child process) is killed with SIGKILL and restarted, and the example
//! consumer's logic (`examples/change_consumer.rs`, compiled in here) is killed at
//! random moments (its task aborted mid-step) and restarted. In the end every committed
//! event is in the consumer's record exactly once, in sequence order, with the outcome
//! the HTTP answer gave.

#[path = "../../examples/change_consumer.rs"]
#[allow(dead_code)]
mod change_consumer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use change_consumer::{Consumer, STREAM, ensure_group};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

use crate::support::child::ServeProcess;
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, SHIPPED_CONFIG, uuid};

const ROUNDS: usize = 3;
const BATCHES_PER_ROUND: u128 = 24;
const BATCH: u128 = 20;
const USERS: u64 = 12;

/// The shipped config with the change stream and the history on, and frequent
/// snapshots (each trims the journal, never past what the change stream wrote).
pub fn config_with_downstream(dir: &Path) -> PathBuf {
    let mut text = SHIPPED_CONFIG.replace("events = 10000000", "events = 300");
    for table in ["[change_stream]", "[history]"] {
        let at = text.find(table).unwrap();
        let rel = text[at..].find("enabled = false").unwrap();
        text.replace_range(
            at + rel..at + rel + "enabled = false".len(),
            "enabled = true",
        );
    }
    let path = dir.join("giftstream-downstream.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Event `n` of the load: a recharge now and then, otherwise a gift that the sender's
/// coins may not cover (so some are rejected INSUFFICIENT_COINS).
fn event(n: u128, rng: &mut rand_chacha::ChaCha8Rng) -> Value {
    let user = 100 + rng.random_range(0..USERS);
    if rng.random_range(0..4) == 0 {
        json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": 100,
               "price": "1.29", "currency": "USD", "package": "coins_100", "channel": "app"})
    } else {
        json!({"type": "gift", "event_id": uuid(n), "sender": user, "creator": 900 + rng.random_range(0..3u64),
               "stream": 9100, "gift": "rainbow_puke", "count": rng.random_range(1..3u32)})
    }
}

/// Posts `batch`; its outcomes by event id: (seq, status, code), or `None` if no
/// answer came (the server was killed).
async fn post(
    http: &reqwest::Client,
    addr: &str,
    batch: &[Value],
) -> Option<Vec<(String, u64, String, String)>> {
    let resp = http
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(INGEST)
        .json(&json!({ "events": batch }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body: Value = resp.json().await.ok()?;
    Some(
        body["outcomes"]
            .as_array()?
            .iter()
            .map(|o| {
                (
                    o["event_id"].as_str().unwrap().to_owned(),
                    o["seq"].as_u64().unwrap(),
                    o["status"].as_str().unwrap().to_owned(),
                    o["code"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect(),
    )
}

/// The consumer, run until aborted (a kill: it stops at any await).
fn spawn_consumer(url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer = test_consumer();
        let Ok(client) = redis::Client::open(url) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        loop {
            if consumer.step(&mut conn, 37, 50).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
}

fn test_consumer() -> Consumer {
    Consumer {
        stream: STREAM.to_owned(),
        group: "audit".to_owned(),
        name: "c1".to_owned(),
        prefix: "consumer:{audit}".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_giftstream_and_the_consumer_sees_every_committed_event_once_in_order() {
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("change stream test seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = config_with_downstream(tmp.path());
    let data = tmp.path().join("data");
    let http = reqwest::Client::new();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // Event id -> (seq, status, code) as HTTP answered; batches not answered yet.
    let mut answered: HashMap<String, (u64, String, String)> = HashMap::new();
    // Event id -> its user (the recharge's or the gift's sender).
    let mut user_of: HashMap<String, u64> = HashMap::new();
    let mut unanswered: Vec<Vec<Value>> = Vec::new();
    let mut next_id: u128 = 1;
    let mut consumer = None;
    let mut server = None;
    for round in 0..ROUNDS {
        let p = ServeProcess::start(&config, &redis.url(), &data);
        if round == 0 {
            // The group reads from the start of the stream (what the first start made).
            ensure_group(&mut conn, STREAM, "audit", "0").await.unwrap();
        }
        consumer.get_or_insert_with(|| spawn_consumer(redis.url()));
        for batch in std::mem::take(&mut unanswered) {
            let outcomes = post(&http, &p.http, &batch)
                .await
                .expect("a retry after a restart is answered");
            record(&mut answered, outcomes);
        }
        let batches: Vec<Vec<Value>> = (0..BATCHES_PER_ROUND)
            .map(|_| {
                (0..BATCH)
                    .map(|_| {
                        next_id += 1;
                        event(next_id, &mut rng)
                    })
                    .collect()
            })
            .collect();
        for e in batches.iter().flatten() {
            let user = e.get("user").or_else(|| e.get("sender")).unwrap();
            user_of.insert(
                e["event_id"].as_str().unwrap().to_owned(),
                user.as_u64().unwrap(),
            );
        }
        let kill_after =
            (round + 1 < ROUNDS).then(|| rng.random_range(5..BATCHES_PER_ROUND as usize - 5));
        // Two senders side by side; the server is killed while both are sending.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for part in [0, 1] {
            let (http, addr, tx) = (http.clone(), p.http.clone(), tx.clone());
            let mine: Vec<Vec<Value>> = batches.iter().skip(part).step_by(2).cloned().collect();
            tokio::spawn(async move {
                for batch in mine {
                    let outcomes = post(&http, &addr, &batch).await;
                    let _ = tx.send((batch, outcomes));
                }
            });
        }
        drop(tx);
        let mut done = 0;
        let mut p = Some(p);
        while let Some((batch, outcomes)) = rx.recv().await {
            match outcomes {
                Some(o) => record(&mut answered, o),
                None => unanswered.push(batch),
            }
            done += 1;
            // The consumer dies now and then too (its task aborted at any await).
            if rng.random_range(0..6) == 0 {
                if let Some(c) = consumer.take() {
                    c.abort();
                    let _ = c.await;
                }
                consumer = Some(spawn_consumer(redis.url()));
            }
            if kill_after == Some(done) {
                p.take().unwrap().kill9();
            }
        }
        server = p;
    }
    let server = server.expect("the last round is not killed");
    assert!(unanswered.is_empty());
    let last = answered.values().map(|a| a.0).max().unwrap();

    // Wait until the consumer has applied everything committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied: Option<u64> = redis::cmd("HGET")
            .arg("consumer:{audit}:state")
            .arg("last_seq")
            .query_async(&mut conn)
            .await
            .unwrap();
        if applied.unwrap_or(0) >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer is at {applied:?}, the ledger at {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(c) = consumer.take() {
        c.abort();
    }
    let metrics = server.metrics(&http).await;
    // The durable history, written beside the change stream through the same kills,
    // holds each user's events once: the coin changes of every page add up to the
    // wallet's balance.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written: Option<u64> = redis::cmd("GET")
            .arg("giftstream:{ledger}:history:seq")
            .query_async(&mut conn)
            .await
            .unwrap();
        if written.unwrap_or(0) >= last {
            break;
        }
        assert!(Instant::now() < deadline, "the history is at {written:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for user in 100..100 + USERS {
        let wallet = server
            .read(&http, &format!("/v1/users/{user}/wallet"))
            .await;
        let (mut sum, mut lines, mut before) = (0i64, Vec::new(), u64::MAX);
        loop {
            let path = format!("/v1/users/{user}/transactions?limit=100&before={before}");
            let page = server.read(&http, &path).await;
            let entries = page["entries"].as_array().unwrap();
            for e in entries {
                sum += e["coins_delta"].as_i64().unwrap();
                lines.push(e.clone());
            }
            match page["next_before"].as_u64() {
                Some(b) => before = b,
                None => break,
            }
        }
        // Every line is an answered event of this user, with its outcome.
        let mine: HashMap<u64, &(u64, String, String)> = answered
            .iter()
            .filter(|(id, _)| user_of[*id] == user)
            .map(|(_, a)| (a.0, a))
            .collect();
        for l in &lines {
            let seq = l["seq"].as_u64().unwrap();
            let a = mine
                .get(&seq)
                .unwrap_or_else(|| panic!("user {user}: line {l} is no event of theirs"));
            assert_eq!(l["status"].as_str(), Some(a.1.as_str()), "{l}");
        }
        let missing: Vec<&u64> = mine
            .keys()
            .filter(|s| !lines.iter().any(|l| l["seq"].as_u64() == Some(**s)))
            .collect();
        let accepted_missing: Vec<_> = missing
            .iter()
            .filter(|s| mine[**s].1 == "accepted")
            .collect();
        assert!(
            accepted_missing.is_empty(),
            "user {user}: accepted events without a line: {accepted_missing:?}"
        );
        assert_eq!(
            sum,
            wallet["coins"].as_i64().unwrap(),
            "user {user}: {} lines; {lines:?}",
            lines.len()
        );
    }
    server.stop();

    let seen: Vec<String> = redis::cmd("LRANGE")
        .arg("consumer:{audit}:seen")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut by_seq: HashMap<u64, (String, String, String)> = HashMap::new();
    let mut previous: Option<u64> = None;
    for line in &seen {
        let f: Vec<&str> = line.split(' ').collect();
        let seq: u64 = f[0].parse().unwrap();
        if let Some(p) = previous {
            assert_eq!(seq, p + 1, "in order, each once, no gap: {line} after {p}");
        }
        previous = Some(seq);
        by_seq.insert(seq, (f[1].to_owned(), f[2].to_owned(), f[3].to_owned()));
    }
    let first: u64 = seen[0].split(' ').next().unwrap().parse().unwrap();
    assert!(
        first <= 2,
        "the stream begins at the ledger's first events: {first}"
    );
    assert_eq!(previous, Some(last), "ends at the last committed event");
    for (id, (seq, status, code)) in &answered {
        let (kind, s, c) = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("event {id} (seq {seq}) not seen"));
        assert!(kind == "gift" || kind == "recharge", "{kind}");
        assert_eq!((s, c), (status, code), "event {id} at seq {seq}");
    }
    let rejected = answered.values().filter(|a| a.1 == "rejected").count();
    assert!(
        rejected > 0 && rejected < answered.len(),
        "a mix of outcomes: {rejected}"
    );
    assert!(
        metrics.contains("giftstream_change_stream_events_total"),
        "the change stream's metrics are exported"
    );
    // The documents are of the documented schema.
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg(format!("{last}-0"))
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&raw[0].1[0].1).unwrap();
    assert_eq!(
        (doc["v"].as_u64(), doc["seq"].as_u64()),
        (Some(1), Some(last))
    );
    let (bytes, len): (u64, u64) = redis::pipe()
        .cmd("MEMORY")
        .arg("USAGE")
        .arg(STREAM)
        .arg("SAMPLES")
        .arg(0)
        .cmd("XLEN")
        .arg(STREAM)
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "{} events answered over {ROUNDS} rounds; {} seen by the consumer, {rejected} rejected; \
         the stream: {len} entries, MEMORY USAGE {bytes} bytes = {:.0} bytes per entry",
        answered.len(),
        seen.len(),
        bytes as f64 / len as f64
    );
}

fn record(
    answered: &mut HashMap<String, (u64, String, String)>,
    outcomes: Vec<(String, u64, String, String)>,
) {
    for (id, seq, status, code) in outcomes {
        let before = answered.insert(id.clone(), (seq, status.clone(), code.clone()));
        if let Some(b) = before {
            assert_eq!(b, (seq, status, code), "event {id}: the outcome changed");
        }
    }
}
