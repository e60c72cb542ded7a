//! The `[engine]` values that decide outcomes are pinned with a ledger (review of #31,
//! F4): `engine.recharge_records_per_shard_max`, `engine.gift_records_per_shard_max` and
//! `engine.history_per_user`. A real `giftstream serve` on a real Redis runs with one
//! value; a start with another is refused naming the key, the pinned value and what to
//! do (so is `restore`); `audit` replays with the pinned value and stays clean (with the
//! configured one its replay would decide a reversal otherwise); a start with the pinned
//! value serves and answers retries with the original outcomes.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli, serve_refused};
use crate::support::redis::RedisServer;
use crate::support::server::{SHIPPED_CONFIG, uuid};
use giftstream::economy::EMBEDDED_ECONOMY_TOML;

/// The shipped config with one sender shard (so the bounds are per ledger), a snapshot
/// every `snapshot_events` committed events (0: none while a test runs, so `audit` and a
/// restart replay the whole journal, bounds and evictions included), and `edits`
/// (`engine.<key>` and the value of a line of `[engine]`, replacing the shipped one).
fn config_with(dir: &Path, name: &str, snapshot_events: u64, edits: &[(&str, usize)]) -> PathBuf {
    let mut text = SHIPPED_CONFIG
        .replace("shards = 4\n", "shards = 1\n")
        .replace(
            "events = 10000000\n",
            &format!("events = {snapshot_events}\n"),
        );
    for (key, value) in edits {
        let key = key.strip_prefix("engine.").expect("an [engine] key");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(str::to_owned);
        let line = line.expect("a key of the shipped [engine]");
        text = text.replace(&format!("{line}\n"), &format!("{key} = {value}\n"));
        assert!(text.contains(&format!("\n{key} = {value}\n")), "{key}");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `(status or code, duplicate)` of each outcome.
fn answers(outcomes: &[Value]) -> Vec<(String, bool)> {
    outcomes
        .iter()
        .map(|o| {
            let what = o["code"].as_str().or(o["status"].as_str()).unwrap();
            (what.to_owned(), o["duplicate"] == true)
        })
        .collect()
}

fn answer(what: &str) -> (String, bool) {
    (what.to_owned(), false)
}

async fn pinned_hash(redis: &RedisServer) -> std::collections::HashMap<String, String> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("HGETALL")
        .arg("giftstream:{ledger}:limits")
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn cli(
    args: &[&str],
    config: &Path,
    redis: &RedisServer,
    data: &Path,
    economy: &Path,
) -> (bool, String) {
    run_cli(
        args,
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_ECONOMY", economy.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", redis.url().as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    )
}

/// The newest snapshot file in `data`, if any.
fn newest(data: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gsnap"))
        .collect();
    files.sort();
    files.pop()
}

fn recharge(n: u128, user: u64) -> Value {
    json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": 100,
        "price": "1.29", "currency": "USD", "package": "coins_100", "channel": "app"})
}

fn recharge_reversal(n: u128, user: u64, of: u128) -> Value {
    json!({"type": "recharge_reversal", "event_id": uuid(n), "user": user, "recharge": uuid(of)})
}

fn gift(n: u128, sender: u64) -> Value {
    json!({"type": "gift", "event_id": uuid(n), "sender": sender, "creator": 7,
        "stream": 9001, "gift": "rose", "count": 1})
}

fn gift_reversal(n: u128, sender: u64, of: u128) -> Value {
    json!({"type": "gift_reversal", "event_id": uuid(n), "sender": sender, "gift": uuid(of)})
}

/// A shard of 2 recharge records: the first of three recharges is dropped, so its
/// reversal is `ORIGINAL_NOT_FOUND` (with 4 records it would be accepted). A start with
/// 4 is refused; `audit` replays the whole journal with the pinned 2 and is clean (with
/// 4 it would replay the reversal as accepted: a mismatch); a start with 2 serves and a
/// retry of the reversal gets its original answer; `restore` of a snapshot with 4 is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recharge_records_per_shard_max_is_pinned_with_the_ledger() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (data, economy) = (tmp.path().join("data"), tmp.path().join("economy.toml"));
    std::fs::write(&economy, EMBEDDED_ECONOMY_TOML).unwrap();
    let key = "engine.recharge_records_per_shard_max";
    let two = config_with(tmp.path(), "two.toml", 0, &[(key, 2)]);
    let four = config_with(tmp.path(), "four.toml", 0, &[(key, 4)]);
    let two_snapshots = config_with(tmp.path(), "two-snapshots.toml", 1, &[(key, 2)]);
    let env = [("GIFTSTREAM_ECONOMY", economy.to_str().unwrap())];
    let http = reqwest::Client::new();

    let p = ServeProcess::start_with(&two, &redis.url(), &data, &env);
    let batch = json!([recharge(1, 42), recharge(2, 42), recharge(3, 42)]);
    let o = p.post_events(&http, batch).await;
    assert_eq!(answers(&o), vec![answer("accepted"); 3]);
    let reversals = json!([recharge_reversal(4, 42, 1), recharge_reversal(5, 42, 3)]);
    let o = p.post_events(&http, reversals.clone()).await;
    assert_eq!(
        answers(&o),
        [answer("ORIGINAL_NOT_FOUND"), answer("accepted")],
        "the first record was dropped by the bound of 2"
    );
    p.stop();
    let pinned = pinned_hash(&redis).await;
    assert_eq!(pinned.get(key).map(String::as_str), Some("2"), "{pinned:?}");
    assert_eq!(
        pinned.get("engine.history_per_user").map(String::as_str),
        Some("32")
    );
    assert_eq!(
        pinned
            .get("engine.gift_records_per_shard_max")
            .map(String::as_str),
        Some("262144")
    );
    assert_eq!(
        pinned.get("seq").map(String::as_str),
        Some("0"),
        "the first start"
    );

    // Another value: refused, naming the key, both values and what to do.
    let out = serve_refused(&four, &redis.url(), &data, &env);
    for needle in [
        "engine.recharge_records_per_shard_max is 4, the ledger's is 2",
        "giftstream:{ledger}:limits",
        "Nothing was served; set the pinned value",
    ] {
        assert!(out.contains(needle), "lacks {needle:?}: {out}");
    }
    // The audit replays as the ledger ran: with 2 (with 4, the first reversal would
    // replay as accepted: a mismatch).
    let (ok, out) = cli(&["audit"], &four, &redis, &data, &economy);
    assert!(ok && out.contains("audit: clean"), "{out}");
    assert!(
        out.contains("engine.recharge_records_per_shard_max: the ledger's pinned 2 (the configuration says 4)"),
        "{out}"
    );

    // The pinned value: serves from the snapshot and the journal; the same answers.
    let p = ServeProcess::start_with(&two, &redis.url(), &data, &env);
    let o = p.post_events(&http, reversals).await;
    assert_eq!(
        answers(&o),
        [
            ("ORIGINAL_NOT_FOUND".to_owned(), true),
            ("accepted".to_owned(), true)
        ]
    );
    let o = p
        .post_events(&http, json!([recharge(6, 42), recharge_reversal(7, 42, 2)]))
        .await;
    assert_eq!(
        answers(&o),
        [answer("accepted"), answer("ORIGINAL_NOT_FOUND")],
        "recharge 6 dropped recharge 2 (the bound is still 2)"
    );
    p.stop();
    let (ok, out) = cli(&["audit"], &two, &redis, &data, &economy);
    assert!(ok && out.contains("audit: clean"), "{out}");
    assert!(!out.contains("pinned"), "{out}");

    // A snapshot, then `restore` of it with 4: refused while Redis holds the pin.
    let p = ServeProcess::start_with(&two_snapshots, &redis.url(), &data, &env);
    let o = p.post_events(&http, json!([recharge(8, 43)])).await;
    assert_eq!(answers(&o), [answer("accepted")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while newest(&data).is_none() {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    p.stop();
    let snapshot = newest(&data).unwrap();
    let (ok, out) = cli(
        &["restore", snapshot.to_str().unwrap()],
        &four,
        &redis,
        &data,
        &economy,
    );
    // The snapshot (format 11) carries the pinned 2: the restore keeps it and says so.
    assert!(
        ok && out.contains("the snapshot's 2, the configuration says 4"),
        "{out}"
    );
    assert!(out.contains("restored"), "{out}");
    assert_eq!(
        pinned_hash(&redis).await["engine.recharge_records_per_shard_max"],
        "2"
    );
    let (ok, out) = cli(
        &["restore", snapshot.to_str().unwrap()],
        &two,
        &redis,
        &data,
        &economy,
    );
    assert!(ok && out.contains("restored"), "{out}");

    // Review H: Redis lost everything (a fresh one): a restore with 4 configured pins
    // the snapshot's 2, not the file's 4, so `serve` with 4 is refused and with 2 serves
    // the restored ledger with its bound of 2: a new recharge drops recharge 6's record.
    drop(redis);
    let redis = RedisServer::start();
    let (ok, out) = cli(
        &["restore", snapshot.to_str().unwrap()],
        &four,
        &redis,
        &data,
        &economy,
    );
    assert!(ok && out.contains("pinned with the ledger"), "{out}");
    let pins = pinned_hash(&redis).await;
    assert_eq!(
        pins["engine.recharge_records_per_shard_max"], "2",
        "{pins:?}"
    );
    let refused = serve_refused(&four, &redis.url(), &data, &env);
    assert!(refused.contains("is 4, the ledger's is 2"), "{refused}");
    let p = ServeProcess::start_with(&two, &redis.url(), &data, &env);
    let o = p
        .post_events(
            &http,
            json!([recharge(10, 44), recharge_reversal(9, 42, 6)]),
        )
        .await;
    assert_eq!(
        answers(&o),
        [answer("accepted"), answer("ORIGINAL_NOT_FOUND")]
    );
    p.stop();
}

/// Under an earnings hold, a shard of 1 gift record and a history of 2 lines: the first
/// gift's record is dropped by the second, so its reversal is `NOT_REVERSIBLE` while the
/// gift is in the sender's history and `ORIGINAL_NOT_FOUND` once it left it. A start
/// with another record bound or another history length is refused naming the key; the
/// audit replays with the pinned values; the pinned values serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gift_records_and_history_per_user_are_pinned_with_the_ledger() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let (data, economy) = (tmp.path().join("data"), tmp.path().join("economy.toml"));
    let held = crate::support::held_economy_text(600_000);
    std::fs::write(&economy, held).unwrap();
    let (records, history) = (
        "engine.gift_records_per_shard_max",
        "engine.history_per_user",
    );
    let config = |name: &str, edits: &[(&str, usize)]| config_with(tmp.path(), name, 0, edits);
    let pinned = config("pinned.toml", &[(records, 1), (history, 2)]);
    let more_records = config("records.toml", &[(records, 8), (history, 2)]);
    let longer_history = config("history.toml", &[(records, 1), (history, 32)]);
    let env = [("GIFTSTREAM_ECONOMY", economy.to_str().unwrap())];
    let http = reqwest::Client::new();

    let p = ServeProcess::start_with(&pinned, &redis.url(), &data, &env);
    let o = p
        .post_events(&http, json!([recharge(1, 42), gift(10, 42), gift(11, 42)]))
        .await;
    assert_eq!(answers(&o), vec![answer("accepted"); 3]);
    // Gift 10's record was dropped by gift 11's (a bound of 1); 10 is in the history.
    let o = p
        .post_events(&http, json!([gift_reversal(20, 42, 10)]))
        .await;
    assert_eq!(answers(&o), [answer("NOT_REVERSIBLE")]);
    // Two more lines push gift 10 out of a history of 2: the ledger no longer knows it
    // (with a history of 32 it would still be NOT_REVERSIBLE).
    let o = p
        .post_events(&http, json!([gift(12, 42), gift_reversal(21, 42, 10)]))
        .await;
    assert_eq!(
        answers(&o),
        [answer("accepted"), answer("ORIGINAL_NOT_FOUND")]
    );
    // Gift 12's record is held: reversible.
    let o = p
        .post_events(&http, json!([gift_reversal(22, 42, 12)]))
        .await;
    assert_eq!(answers(&o), [answer("accepted")]);
    p.stop();

    for (config, needle) in [
        (
            &more_records,
            "engine.gift_records_per_shard_max is 8, the ledger's is 1",
        ),
        (
            &longer_history,
            "engine.history_per_user is 32, the ledger's is 2",
        ),
    ] {
        let out = serve_refused(config, &redis.url(), &data, &env);
        assert!(out.contains(needle), "lacks {needle:?}: {out}");
        assert!(out.contains("giftstream:{ledger}:limits"), "{out}");
    }
    let (ok, out) = cli(&["audit"], &longer_history, &redis, &data, &economy);
    assert!(ok && out.contains("audit: clean"), "{out}");
    assert!(
        out.contains("engine.history_per_user: the ledger's pinned 2 (the configuration says 32)"),
        "{out}"
    );

    let p = ServeProcess::start_with(&pinned, &redis.url(), &data, &env);
    let retries = json!([
        gift_reversal(20, 42, 10),
        gift_reversal(21, 42, 10),
        gift_reversal(22, 42, 12)
    ]);
    let o = p.post_events(&http, retries).await;
    assert_eq!(
        answers(&o),
        [
            ("NOT_REVERSIBLE".to_owned(), true),
            ("ORIGINAL_NOT_FOUND".to_owned(), true),
            ("accepted".to_owned(), true)
        ]
    );
    // Let the read model catch up before the audit compares it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    p.stop();
    let (ok, out) = cli(&["audit"], &pinned, &redis, &data, &economy);
    assert!(ok && out.contains("audit: clean"), "{out}");
    assert!(out.contains("0 differences from the ledger"), "{out}");
}
