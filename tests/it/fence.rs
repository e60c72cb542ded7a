//! One writer per ledger (`redis.lease_ms`): a second `giftstream serve` for the same
//! ledger refuses to start; a process paused past its lease loses the ledger to the one
//! that took over, acknowledges nothing more, journals nothing more and exits non-zero;
//! a graceful stop gives the lease back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, uuid};

/// A journal entry as `XRANGE` returns it: id, fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

const CONFIG: &str = "config/giftstream.toml";
/// The shipped `redis.lease_ms`.
const LEASE: Duration = Duration::from_millis(3000);

/// 100 coins (the `coins_100` package).
fn recharge(id: u128, user: u64) -> Value {
    json!({"events": [{"type": "recharge", "event_id": uuid(id), "user": user, "coins": 100,
        "price": "1.29", "currency": "USD", "package": "coins_100", "channel": "app"}]})
}

async fn post(http: &reqwest::Client, p: &ServeProcess, body: &Value) -> (u16, Value) {
    let r = http
        .post(format!("http://{}/v1/events", p.http))
        .bearer_auth(INGEST)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Sends `body` to `a`, which must refuse to acknowledge it, then exit non-zero with
/// `why` in its log.
async fn refused_then_exits(http: &reqwest::Client, a: ServeProcess, body: &Value, why: &str) {
    let (status, answer) = post(http, &a, body).await;
    assert_ne!(status, 200, "a fenced process acknowledged: {answer}");
    let (exit, log) = a.wait_exit(Duration::from_secs(20));
    assert!(!exit.success(), "a fenced process exited 0");
    assert!(
        log.iter().any(|l| l.contains(why)),
        "{why:?} not in {log:#?}"
    );
}

/// One Redis command, its reply ignored (beyond success).
async fn redis_do(conn: &mut giftstream::persist::redis::RedisConn, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_ledger_and_a_paused_one_is_fenced() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let http = reqwest::Client::new();

    let a = ServeProcess::start(CONFIG.as_ref(), &url, &data_a);
    let (status, body) = post(&http, &a, &recharge(1, 1)).await;
    assert_eq!(
        (status, body["outcomes"][0]["coins"].as_u64()),
        (200, Some(100)),
        "{body}"
    );

    // A second process for the same ledger waits one lease (the holder renews it), then
    // refuses to start, naming the holder.
    let started = Instant::now();
    let env = [
        ("GIFTSTREAM_CONFIG", CONFIG),
        ("GIFTSTREAM_HTTP_ADDR", "127.0.0.1:0"),
        ("GIFTSTREAM_TCP_ADDR", "127.0.0.1:0"),
        ("GIFTSTREAM_REDIS_URL", url.as_str()),
        ("GIFTSTREAM_DATA_DIR", data_b.to_str().unwrap()),
    ];
    let (ok, out) = run_cli(&["serve"], &env);
    assert!(!ok, "a second writer started: {out}");
    assert!(
        out.contains("is held by another running giftstream") && out.contains("(pid "),
        "{out}"
    );
    assert!(started.elapsed() >= LEASE, "gave up before one lease");

    // `a` stops answering (SIGSTOP) for longer than its lease: `b` takes the ledger
    // over and recovers what `a` journaled.
    a.signal("STOP");
    let b = ServeProcess::start(CONFIG.as_ref(), &url, &data_b);
    let wallet = b.read(&http, "/v1/users/1/wallet").await;
    assert_eq!(wallet["coins"], 100, "{wallet}");
    let (status, body) = post(&http, &b, &recharge(2, 1)).await;
    assert_eq!(
        (status, body["outcomes"][0]["coins"].as_u64()),
        (200, Some(200)),
        "{body}"
    );

    // `a` wakes up: its next batch is not acknowledged (its append is refused in the
    // same script that checks the lease), and it exits non-zero.
    a.signal("CONT");
    refused_then_exits(&http, a, &recharge(3, 2), "commit fenced").await;

    // Nothing `a` applied after losing the lease reached the journal: `b` never sees it,
    // and the ledger rebuilt from the journal audits clean.
    let wallet = b.read(&http, "/v1/users/2/wallet").await;
    assert_eq!(wallet["coins"], 0, "{wallet}");
    let wallet = b.read(&http, "/v1/users/1/wallet").await;
    assert_eq!(wallet["coins"], 200, "{wallet}");
    let log = b.stop();
    assert!(
        log.iter().any(|l| l.contains("ledger lease released")),
        "{log:#?}"
    );
    let (ok, out) = run_cli(&["audit"], &env);
    assert!(ok, "{out}");
    assert!(out.contains("audit: clean"), "{out}");

    // Released at the graceful stop: the next start does not wait for it.
    let started = Instant::now();
    let c = ServeProcess::start(CONFIG.as_ref(), &url, &data_b);
    assert!(started.elapsed() < LEASE, "waited for a released lease");
    let wallet = c.read(&http, "/v1/users/1/wallet").await;
    assert_eq!(wallet["coins"], 200, "{wallet}");
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_need_the_journal_where_this_process_left_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut conn = giftstream::persist::redis::connect(&url).await.unwrap();
    let (owner, head, journal) = (
        "giftstream:{ledger}:owner",
        "giftstream:{ledger}:head",
        giftstream::persist::redis::JOURNAL_KEY,
    );
    let a = ServeProcess::start(CONFIG.as_ref(), &url, dir.path());
    for id in 1..=2 {
        let (status, body) = post(&http, &a, &recharge(id, 1)).await;
        assert_eq!(status, 200, "{body}");
    }

    // The lease vanishes (as when it runs out while Redis is unreachable): nobody wrote
    // the journal meanwhile, so the next append takes it back and is acknowledged.
    redis_do(&mut conn, &["DEL", owner]).await;
    let (status, body) = post(&http, &a, &recharge(3, 1)).await;
    assert_eq!(
        (status, body["outcomes"][0]["coins"].as_u64()),
        (200, Some(300)),
        "{body}"
    );
    let holder: Option<String> = redis::cmd("GET")
        .arg(owner)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        holder.is_some_and(|h| h.contains("(pid ")),
        "lease not taken back"
    );

    // A failover loses the last append (the entry and the head written with it): the
    // next append would leave a gap, so it is refused and `a` stops without acking.
    let top: Vec<StreamEntry> = redis::cmd("XREVRANGE")
        .arg(journal)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    redis_do(&mut conn, &["XDEL", journal, &top[0].0]).await;
    redis_do(&mut conn, &["XSETID", journal, &top[1].0]).await;
    redis_do(&mut conn, &["SET", head, &top[1].0]).await;
    refused_then_exits(&http, a, &recharge(4, 2), "is not as this process left it").await;

    // A restart continues from what the journal holds: the lost recharge is gone.
    let a = ServeProcess::start(CONFIG.as_ref(), &url, dir.path());
    let wallet = a.read(&http, "/v1/users/1/wallet").await;
    assert_eq!(wallet["coins"], 200, "{wallet}");

    // Another writer appends while the lease is free: `a`'s next append finds an entry
    // that is not its own where its run goes, does not acknowledge, and stops.
    redis_do(&mut conn, &["DEL", owner]).await;
    redis_do(
        &mut conn,
        &["XADD", journal, "999999-0", "b", "someone else"],
    )
    .await;
    refused_then_exits(&http, a, &recharge(5, 2), "another writer's entry").await;
}
