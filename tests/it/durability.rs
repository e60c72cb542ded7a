//! The Redis journal against a real redis-server (AOF on): restarts reproduce the state
//! exactly, idempotency survives them, and a Redis outage refuses new work without
//! losing or doubling anything acknowledged.

use std::sync::Arc;
use std::time::Duration;

use giftstream::client::{Client, ClientError};
use giftstream::engine::Event;
use giftstream::protocol::error_code;

use crate::support::redis::{RedisServer, journal_first_seq};
use crate::support::server::*;
use crate::support::{NOV, account, gift, goal, payout, recharge};

async fn server_on(redis: &RedisServer) -> TestServer {
    server_with(redis, |_| {}).await.0
}

/// A server on `redis` with small commits (64 events), so that tests cross commits.
async fn server_with(
    redis: &RedisServer,
    adjust: impl FnOnce(&mut giftstream::config::Config),
) -> (TestServer, giftstream::persist::recovery::Recovered) {
    TestServer::on_redis(&redis.url(), |c| {
        c.commit.events_max = 64;
        c.commit.pending_events_max = 64;
        adjust(c);
    })
    .await
}

const READS: [&str; 10] = [
    "/v1/users/42/wallet",
    "/v1/users/43/wallet",
    "/v1/users/42/transactions?limit=32",
    "/v1/creators/7",
    "/v1/creators/8",
    "/v1/creators/7/top-gifters",
    "/v1/streams/9007/top-gifters",
    "/v1/streams/9007",
    "/v1/streams/77",
    "/v1/leaderboards/creators",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_recovers_the_exact_state_and_idempotency() {
    let redis = RedisServer::start();
    let first = server_on(&redis).await;
    let client = Client::connect(first.tcp, INGEST).await.unwrap();
    let mut events: Vec<Event> = vec![
        account(1, 43, Some("DE"), true, Some(50)),
        goal(2, 77, 7, 500),
    ];
    events.extend((0..6).map(|i| recharge(10 + i, 42, "coins_7000")));
    events.push(recharge(20, 43, "coins_100"));
    for i in 0..40u128 {
        events.push(gift(
            100 + i,
            42 + (i as u64 % 2),
            7 + (i as u64 % 2),
            if i % 3 == 0 { "panda" } else { "universe" },
            1,
        ));
    }
    events.push(payout(200, 7, 20_000, "USD"));
    let original = client.send(&events).await.unwrap();
    assert!(
        original.iter().any(|o| !o.is_accepted()),
        "some rejections are journaled too"
    );
    let before: Vec<_> =
        futures::future::join_all(READS.iter().map(|p| first.get(p, Some(READ)))).await;
    let last_seq = first.engine.last_seq();
    drop(client);
    first.stop().await.unwrap();

    let second = server_on(&redis).await;
    assert_eq!(second.engine.last_seq(), last_seq);
    let after: Vec<_> =
        futures::future::join_all(READS.iter().map(|p| second.get(p, Some(READ)))).await;
    for ((path, b), a) in READS.iter().zip(&before).zip(&after) {
        assert_eq!(a, b, "{path} differs after the restart");
    }
    assert!(second.engine.audit().is_clean());
    // Every old event id still answers its original outcome.
    let client = Client::connect(second.tcp, INGEST).await.unwrap();
    let again = client.send(&events).await.unwrap();
    for (o, a) in original.iter().zip(&again) {
        assert!(a.duplicate);
        assert_eq!((a.seq, a.status), (o.seq, o.status));
    }
    // New events continue the sequence.
    let next = client.send(&[gift(300, 42, 7, "rose", 1)]).await.unwrap();
    assert_eq!(next[0].seq, last_seq + 1);
    second.stop().await.unwrap();

    // `giftstream audit` rebuilds the ledger from the journal alone and finds it clean.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_giftstream"))
        .arg("audit")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GIFTSTREAM_REDIS_URL", redis.url())
        .env("GIFTSTREAM_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("last seq {}", last_seq + 1)),
        "{stdout}"
    );
    assert!(
        stdout.contains("event ids journaled twice: 0") && stdout.contains("audit: clean"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_refuses_new_work_and_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start();
    let s = server_on(&redis).await;
    let client = Arc::new(Client::connect(s.tcp, INGEST).await.unwrap());
    client.send(&[recharge(1, 42, "coins_7000")]).await.unwrap();

    redis.stop();
    // Requests keep coming: the first are applied and wait for durability; once 64
    // events are pending the rest are refused with UNAVAILABLE (nothing applied).
    let mut handles = Vec::new();
    for r in 0..20u128 {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let events: Vec<Event> = (0..10)
                .map(|i| gift(1000 + r * 10 + i, 42, 7, "rose", 1))
                .collect();
            client.send(&events).await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, _) = s.get("/readyz", None).await;
    assert_eq!(st, 503, "not ready while commits fail");
    let pending_metric = s.metrics().await;
    assert!(pending_metric.contains("giftstream_commit_failures_total"));

    redis.restart();
    let mut acknowledged = 0u64;
    let mut refused = 0u64;
    for h in handles {
        match h.await.unwrap() {
            Ok(outcomes) => {
                assert!(outcomes.iter().all(|o| o.is_accepted()));
                acknowledged += outcomes.len() as u64;
            }
            Err(ClientError::Server {
                code: error_code::UNAVAILABLE,
                ..
            }) => refused += 10,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        acknowledged > 0 && refused > 0,
        "acknowledged {acknowledged}, refused {refused}"
    );
    assert_eq!(acknowledged + refused, 200);
    // Ready again by itself, and serving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.get("/readyz", None).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready again after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.send(&[gift(5000, 42, 7, "rose", 1)]).await.unwrap();
    assert_eq!(s.coins(42).await, 7000 - acknowledged - 1);
    drop(client);
    s.stop().await.unwrap();

    // A fresh start from Redis alone has exactly the acknowledged events, once.
    let s2 = server_on(&redis).await;
    assert_eq!(s2.coins(42).await, 7000 - acknowledged - 1);
    let (_, c) = s2.get("/v1/creators/7", Some(READ)).await;
    assert_eq!(c["coins_received"], acknowledged + 1);
    assert!(s2.engine.audit().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_plus_the_journal_tail_restore_exactly_and_a_corrupt_one_is_skipped() {
    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let snapshots_every = |c: &mut giftstream::config::Config| {
        c.snapshot.dir = dir.clone();
        c.snapshot.events = 100;
        c.snapshot.keep = 2;
        // The trim also waits for the read model (tested in read_model.rs); here the
        // journal alone decides.
        c.read_model.enabled = false;
    };
    let (first, recovered) = server_with(&redis, snapshots_every).await;
    assert!(recovered.snapshot.is_none());
    let client = Client::connect(first.tcp, INGEST).await.unwrap();
    client
        .send(
            &(0..8)
                .map(|i| recharge(i, 40 + i as u64, "coins_7000"))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    // At least 12 rounds of 50 gifts, and on until two snapshots are kept (a snapshot
    // is cut only when the previous one is written: on a slow machine it takes more —
    // 200 rounds were not enough on a saturated CI machine), bounded by 60 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for r in 0..4000u128 {
        if r >= 12 && giftstream::persist::snapshot::list(&dir).unwrap().len() >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second snapshot within 60 s"
        );
        let events: Vec<Event> = (0..50)
            .map(|i| {
                gift(
                    1000 + r * 50 + i,
                    40 + (i as u64 % 8),
                    7 + (i as u64 % 3),
                    "panda",
                    1,
                )
            })
            .collect();
        client.send(&events).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<_> =
        futures::future::join_all(READS.iter().map(|p| first.get(p, Some(READ)))).await;
    let last_seq = first.engine.last_seq();
    drop(client);
    first.stop().await.unwrap();
    let files = giftstream::persist::snapshot::list(&dir).unwrap();
    assert_eq!(files.len(), 2, "keep = 2: {files:?}");
    let newest = giftstream::persist::snapshot::read_header(files.last().unwrap()).unwrap();
    assert!(newest.last_seq > 0 && newest.last_seq <= last_seq);
    // The journal was trimmed up to the oldest kept snapshot, not further.
    let oldest = giftstream::persist::snapshot::read_header(&files[0]).unwrap();
    let first_seq = journal_first_seq(&redis).await;
    assert!(
        first_seq > oldest.last_seq,
        "trimmed: first entry {first_seq}, oldest snapshot {}",
        oldest.last_seq
    );

    // Restart: the newest snapshot plus the journal after it.
    let (second, recovered) = server_with(&redis, snapshots_every).await;
    assert_eq!(
        recovered.snapshot.as_ref(),
        files.last(),
        "loaded the newest snapshot"
    );
    assert_eq!(
        recovered.replayed_events,
        last_seq - newest.last_seq,
        "then only the journal tail"
    );
    assert_eq!(second.engine.last_seq(), last_seq);
    let after: Vec<_> =
        futures::future::join_all(READS.iter().map(|p| second.get(p, Some(READ)))).await;
    assert_eq!(after, before);
    second.stop().await.unwrap();

    // Corrupt the newest: the previous one is used, and the state is still exact.
    let newest_path = giftstream::persist::snapshot::list(&dir)
        .unwrap()
        .pop()
        .unwrap();
    let mut bytes = std::fs::read(&newest_path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&newest_path, bytes).unwrap();
    assert!(giftstream::persist::snapshot::read(&newest_path).is_err());
    let (third, recovered) = server_with(&redis, |c| c.snapshot.dir = dir.clone()).await;
    let previous = giftstream::persist::snapshot::list(&dir).unwrap()[0].clone();
    assert_eq!(
        recovered.snapshot,
        Some(previous),
        "fell back to the previous snapshot"
    );
    assert_eq!(third.engine.last_seq(), last_seq);
    let again: Vec<_> =
        futures::future::join_all(READS.iter().map(|p| third.get(p, Some(READ)))).await;
    assert_eq!(again, before);
    assert!(third.engine.audit().is_clean());
    third.stop().await.unwrap();

    // Without its snapshot directory the trimmed journal cannot rebuild the ledger: the
    // start is refused (sequence numbers never skip), not served with the tail alone.
    let empty = tempfile::tempdir().unwrap();
    let mut config = giftstream::config::Config::from_toml_str(SHIPPED_CONFIG).unwrap();
    config.snapshot.dir = empty.path().to_owned();
    let mut journal = giftstream::persist::redis::RedisJournal::connect(&redis.url())
        .await
        .unwrap();
    let refused = giftstream::persist::recovery::recover(
        &mut journal,
        &config,
        giftstream::economy::Economy::embedded(),
    )
    .await
    .err()
    .expect("a start without the snapshots of a trimmed journal is refused")
    .to_string();
    assert!(
        refused.contains("follows seq 0: events 1 to") && refused.contains("are missing"),
        "{refused}"
    );
}

#[test]
fn a_forked_snapshot_is_published_only_when_told_and_reads_back_exactly() {
    let engine = crate::support::engine();
    let events: Vec<Event> = (0..50u128)
        .map(|i| recharge(i, 40 + i as u64 % 7, "coins_7000"))
        .chain((0..200u128).map(|i| gift(1000 + i, 40 + i as u64 % 7, 7, "panda", 1)))
        .collect();
    engine.apply_batch(&events, giftstream::clock::now());
    let dir = tempfile::tempdir().unwrap();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    // Abandoned (the cut's log could not be committed): nothing is left behind.
    let (forked, log) = giftstream::persist::snapshot::fork_snapshot(&engine, dir.path(), 3, true);
    assert_eq!(
        log.len(),
        events.len(),
        "the cut hands over the undrained log"
    );
    forked.unwrap().abandon();
    assert_eq!(listing(), Vec::<String>::new());

    // Published: the file holds the state at the cut, exactly.
    let at_cut = engine.state_fingerprint();
    let (forked, log) = giftstream::persist::snapshot::fork_snapshot(&engine, dir.path(), 3, true);
    assert!(log.is_empty());
    // Changes after the cut are not in the snapshot.
    engine.apply_batch(&[gift(5000, 40, 7, "rose", 1)], giftstream::clock::now());
    let path = forked.unwrap().publish().unwrap();
    assert_eq!(listing(), vec![path.display().to_string()]);
    // The published image loads back into a state with that last seq and fingerprint.
    let reads_back = |path: &std::path::Path, last_seq: u64, fingerprint: &str| {
        let (header, state) = giftstream::persist::snapshot::read(&dir.path().join(path)).unwrap();
        assert_eq!(header.last_seq, last_seq);
        let loaded = giftstream::engine::Engine::from_state(
            crate::support::economy(),
            engine.config().clone(),
            state,
        )
        .unwrap();
        assert_eq!(loaded.state_fingerprint(), fingerprint);
    };
    reads_back(&path, events.len() as u64, &at_cut);

    // The child copies the resident pages first (`snapshot.copy_pages_in_child`, the
    // default above) or leaves them shared: the image is the state at the cut either way.
    let at_cut = engine.state_fingerprint();
    let (forked, log) = giftstream::persist::snapshot::fork_snapshot(&engine, dir.path(), 3, false);
    assert_eq!(log.len(), 1, "the gift after the first cut");
    engine.apply_batch(&[gift(5001, 41, 7, "rose", 1)], giftstream::clock::now());
    let path = forked.unwrap().publish().unwrap();
    reads_back(&path, events.len() as u64 + 1, &at_cut);
}

/// A ledger keeps its shard count: a snapshot taken with 16 shards loads with 16 under a
/// config of 4 (an id is remembered in its sender's shard, so dealing the shards out
/// again could forget it), and its ids stay duplicates.
#[test]
fn a_snapshot_loads_with_the_shard_count_it_was_taken_with() {
    use giftstream::engine::{Engine, EngineConfig};
    let sixteen = EngineConfig {
        shards: 16,
        ..EngineConfig::default()
    };
    let engine = Engine::new(crate::support::economy(), sixteen).unwrap();
    let events: Vec<Event> = (0..40u128)
        .map(|i| recharge(i, 40 + i as u64, "coins_7000"))
        .chain((0..40u128).map(|i| gift(1000 + i, 40 + i as u64, 7 + i as u64 % 3, "panda", 1)))
        .collect();
    let outcomes = engine.apply_batch(&events, giftstream::clock::now());
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = engine.snapshot();
    giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();

    let four = EngineConfig::default();
    assert_eq!(four.shards, 4);
    let (_, loaded) =
        giftstream::persist::snapshot::load_newest(dir.path(), &crate::support::economy(), &four)
            .unwrap()
            .expect("the snapshot loads");
    assert_eq!(loaded.config().shards, 16);
    assert_eq!(loaded.state_fingerprint(), engine.state_fingerprint());
    let again = loaded.apply_batch(&events, giftstream::clock::now());
    for (first, second) in outcomes.iter().zip(&again) {
        assert!(second.duplicate);
        assert_eq!((first.seq, first.status), (second.seq, second.status));
    }
    assert_eq!(loaded.last_seq(), engine.last_seq());
    assert!(loaded.audit().is_clean());
}

/// The ledger the fixture `tests/fixtures/snapshot-format-2.gsnap` holds: written by the
/// build before snapshot format 3 (`Engine::snapshot` of these events, stamped
/// 2026-11-15T00:00Z, with the default config and the embedded economy).
pub(crate) fn format_2_fixture_events() -> Vec<Event> {
    (0..20u128)
        .map(|i| recharge(i, 40 + i as u64 % 5, "coins_7000"))
        .chain((0..60u128).map(|i| gift(1000 + i, 40 + i as u64 % 5, 7, "panda", 1)))
        .chain([payout(2000, 7, 20_000, "USD")])
        .collect()
}

/// A state fingerprint without the id index (formats 1 and 2 keep ids elsewhere).
fn without_ids(fingerprint: String) -> String {
    fingerprint
        .lines()
        .filter(|l| !l.starts_with("ids:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn fixture_v2() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-2.gsnap"
    ))
    .unwrap()
}

#[test]
fn a_snapshot_of_format_2_loads_with_its_ids_remembered() {
    use giftstream::engine::{Engine, Stamp};
    let path = std::path::Path::new("snapshot-format-2.gsnap");
    let (header, state) = giftstream::persist::snapshot::parse(path, &fixture_v2()).unwrap();
    assert_eq!((header.version, header.last_seq), (2, 81));
    let loaded = Engine::from_state(
        crate::support::economy(),
        giftstream::engine::EngineConfig::default(),
        state,
    )
    .unwrap();
    let events = format_2_fixture_events();
    let engine = crate::support::engine();
    let live = engine.apply_batch(&events, NOV);
    assert_eq!(
        without_ids(loaded.state_fingerprint_v6()),
        without_ids(engine.state_fingerprint_v6())
    );
    assert!(loaded.audit().is_clean());
    // Every id moved to the index: a retry gets its original outcome, nothing changes.
    let before = loaded.state_fingerprint();
    let retried = loaded.apply_batch(&events, Stamp(NOV.0 + 1_000));
    assert!(retried.iter().all(|o| o.duplicate));
    let strip = |o: &[giftstream::engine::Outcome]| -> Vec<_> {
        o.iter().map(|o| (o.seq, o.status)).collect()
    };
    assert_eq!(strip(&retried), strip(&live));
    assert_eq!(loaded.state_fingerprint(), before);
    // And it is written back in the current format, which reads back the same.
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = loaded.snapshot();
    let (path, header) =
        giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();
    assert_eq!(header.version, giftstream::persist::snapshot::VERSION);
    let (_, state) = giftstream::persist::snapshot::read(&path).unwrap();
    let again = Engine::from_state(
        crate::support::economy(),
        giftstream::engine::EngineConfig::default(),
        state,
    )
    .unwrap();
    assert_eq!(again.state_fingerprint(), loaded.state_fingerprint());
}

#[test]
fn a_snapshot_of_format_1_still_loads() {
    // Format 2 appended the settlement reports (one map per creator shard) to format 1's
    // state: a format-1 file is a format-2 body without them.
    let mut bytes = fixture_v2();
    let shards = giftstream::engine::EngineConfig::default().shards;
    let tail = bytes.split_off(bytes.len() - 1 - shards);
    assert_eq!(
        tail[0] as usize, shards,
        "the settlements: one empty map per shard"
    );
    assert!(tail[1..].iter().all(|&b| b == 0));
    let body_len = (bytes.len() - giftstream::persist::snapshot::HEADER_BYTES) as u64;
    let crc = crc32fast::hash(&bytes[giftstream::persist::snapshot::HEADER_BYTES..]);
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    bytes[48..56].copy_from_slice(&body_len.to_le_bytes());
    bytes[56..60].copy_from_slice(&crc.to_le_bytes());
    let path = std::path::Path::new("snapshot-format-1.gsnap");
    let (header, state) = giftstream::persist::snapshot::parse(path, &bytes).unwrap();
    assert_eq!(header.version, 1);
    let loaded = giftstream::engine::Engine::from_state(
        crate::support::economy(),
        giftstream::engine::EngineConfig::default(),
        state,
    )
    .unwrap();
    let engine = crate::support::engine();
    engine.apply_batch(&format_2_fixture_events(), NOV);
    assert_eq!(
        without_ids(loaded.state_fingerprint_v6()),
        without_ids(engine.state_fingerprint_v6())
    );
    assert!(loaded.audit().is_clean());
}

/// The shard count recorded for the single node's ledger, read straight from Redis.
async fn recorded_shards(redis: &RedisServer) -> Option<String> {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("GET")
        .arg("giftstream:{ledger}:shards")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A ledger with no snapshot yet keeps its shard count too: `serve` records the count in
/// Redis, and a start whose config says another count replays the journal with the
/// recorded one (logged), so the ledger answers as before; `audit` does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_a_snapshot_replays_with_the_recorded_shard_count() {
    use crate::support::child::{ServeProcess, run_cli};
    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let config_with = |shards: usize| {
        let path = data.path().join(format!("giftstream-{shards}.toml"));
        let text = SHIPPED_CONFIG.replace("shards = 4\n", &format!("shards = {shards}\n"));
        assert!(text.contains(&format!("shards = {shards}\n")));
        std::fs::write(&path, text).unwrap();
        path
    };
    let (sixteen, four) = (config_with(16), config_with(4));
    let snapshots = data.path().join("snapshots");
    let http = reqwest::Client::new();

    let first = ServeProcess::start(&sixteen, &redis.url(), &snapshots);
    let client = Client::connect(first.tcp.as_str(), INGEST).await.unwrap();
    let events: Vec<Event> = (0..30u128)
        .map(|i| recharge(i, 40 + i as u64, "coins_7000"))
        .chain((0..30u128).map(|i| gift(100 + i, 40 + i as u64, 7, "panda", 1)))
        .collect();
    let outcomes = client.send(&events).await.unwrap();
    let wallet = first.read(&http, "/v1/users/45").await;
    let log = first.stop();
    assert!(!log.iter().any(|l| l.contains("ledger keeps")), "{log:#?}");
    assert_eq!(recorded_shards(&redis).await.as_deref(), Some("16"));
    assert_eq!(
        std::fs::read_dir(&snapshots).map_or(0, |d| d.count()),
        0,
        "no snapshot: the journal alone"
    );

    // Restarted with a config of 4 shards: the ledger replays with its 16.
    let second = ServeProcess::start(&four, &redis.url(), &snapshots);
    assert_eq!(second.read(&http, "/v1/users/45").await, wallet);
    let metrics = second.metrics(&http).await;
    assert!(
        metrics.lines().any(|l| l == "giftstream_engine_shards 16"),
        "{metrics}"
    );
    let client = Client::connect(second.tcp.as_str(), INGEST).await.unwrap();
    let again = client.send(&events).await.unwrap();
    for (first, second) in outcomes.iter().zip(&again) {
        assert!(second.duplicate);
        assert_eq!((first.seq, first.status), (second.seq, second.status));
    }
    let log = second.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains("the ledger keeps its 16 shards")),
        "{log:#?}"
    );
    assert_eq!(recorded_shards(&redis).await.as_deref(), Some("16"));

    let (ok, out) = run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", four.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", &redis.url()),
            ("GIFTSTREAM_DATA_DIR", snapshots.to_str().unwrap()),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("the ledger keeps its 16 shards"), "{out}");
    assert!(out.contains("audit: clean"), "{out}");
}

/// `serve` reads the journal Redis's AOF settings at start: a Redis that writes no AOF
/// gets a warning in the log and `appendonly="no"` in the metrics; one with an AOF gets
/// no warning, and its settings logged and exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_the_journal_redis_aof_settings_and_warns_without_an_aof() {
    use crate::support::child::ServeProcess;
    let http = reqwest::Client::new();
    for (extra, appendonly, warned) in [
        (&["--appendonly", "no"][..], "no", true),
        (&[][..], "yes", false),
    ] {
        let redis = RedisServer::start_with(extra);
        let data = tempfile::tempdir().unwrap();
        let p = ServeProcess::start(
            std::path::Path::new("config/giftstream.toml"),
            &redis.url(),
            data.path(),
        );
        let metrics = p.metrics(&http).await;
        // The test Redis fsyncs always (`RedisServer`).
        let line = format!(
            "giftstream_journal_redis_info{{appendonly=\"{appendonly}\",appendfsync=\"always\"}} 1"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in {metrics}"
        );
        let log = p.stop();
        let warning = log
            .iter()
            .any(|l| l.contains("WARN") && l.contains("writes no AOF (appendonly no)"));
        assert_eq!(warning, warned, "{log:#?}");
        let reported = log
            .iter()
            .any(|l| l.contains("journal Redis persistence") && l.contains("appendfsync=always"));
        assert_eq!(reported, !warned, "{log:#?}");
    }
}

/// Gift rounds of 50 to creators 7..9 from users 40..47, from event id `from`.
fn gift_round(from: u128) -> Vec<Event> {
    (0..50)
        .map(|i| {
            gift(
                from + i,
                40 + (i as u64 % 8),
                7 + (i as u64 % 3),
                "panda",
                1,
            )
        })
        .collect()
}

/// Waits (up to 20 s) for a snapshot in `dir` holding every event up to `seq`.
async fn snapshot_at(dir: &std::path::Path, seq: u64) -> std::path::PathBuf {
    for _ in 0..400 {
        let newest = giftstream::persist::snapshot::list(dir).unwrap().pop();
        let at = |p: &std::path::PathBuf| {
            giftstream::persist::snapshot::read_header(p)
                .unwrap()
                .last_seq
                == seq
        };
        if let Some(path) = newest.filter(at) {
            return path;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no snapshot at seq {seq} in {}", dir.display());
}

/// The state a snapshot file holds, as a fingerprint.
fn fingerprint_of(path: &std::path::Path) -> String {
    let (_, state) = giftstream::persist::snapshot::read(path).unwrap();
    let config = giftstream::engine::EngineConfig {
        shards: state.shards(),
        ..giftstream::config::Config::default().engine
    };
    giftstream::engine::Engine::from_state(giftstream::economy::Economy::embedded(), config, state)
        .unwrap()
        .state_fingerprint()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_replica_writes_the_served_state_and_catches_up_from_the_journal() {
    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let replica = |c: &mut giftstream::config::Config| {
        c.snapshot.method = giftstream::config::SnapshotMethod::Replica;
        c.snapshot.replica_exe = env!("CARGO_BIN_EXE_giftstream").into();
        // The replica process logs on the test's stderr: only what goes wrong.
        c.server.log_level = "warn".to_owned();
        c.snapshot.dir = dir.clone();
        c.snapshot.events = 300;
        c.snapshot.interval_ms = 200;
        c.snapshot.keep = 2;
        c.read_model.enabled = false;
    };
    let (first, _) = server_with(&redis, replica).await;
    let client = Client::connect(first.tcp, INGEST).await.unwrap();
    client
        .send(
            &(0..8)
                .map(|i| recharge(i, 40 + i as u64, "coins_7000"))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    for r in 0..20u128 {
        client.send(&gift_round(1000 + r * 50)).await.unwrap();
        if r == 9 {
            // A snapshot half-way, so that two are kept whatever the replica's pace (at
            // SCHED_IDLE on a busy machine it may catch up on all of it at once).
            snapshot_at(&dir, first.engine.last_seq()).await;
        }
    }
    // Quiet: the replica's next snapshot (due by time) holds exactly the served state.
    let last_seq = first.engine.last_seq();
    let newest = snapshot_at(&dir, last_seq).await;
    assert_eq!(fingerprint_of(&newest), first.engine.state_fingerprint());
    drop(client);
    first.stop().await.unwrap();
    // The journal was trimmed up to the oldest kept snapshot, not further.
    let files = giftstream::persist::snapshot::list(&dir).unwrap();
    assert_eq!(files.len(), 2, "keep = 2: {files:?}");
    let oldest = giftstream::persist::snapshot::read_header(&files[0]).unwrap();
    let first_seq = journal_first_seq(&redis).await;
    assert!(
        first_seq > oldest.last_seq,
        "trimmed: first entry {first_seq}, oldest snapshot {}",
        oldest.last_seq
    );

    // Events journaled with no snapshot after them (snapshots off), then a replica
    // start: it loads the newest snapshot and must read that tail back from the journal
    // before it follows the live runs.
    let (second, _) = server_with(&redis, |c| {
        c.snapshot.dir = dir.clone();
        c.snapshot.events = 0;
        c.snapshot.interval_ms = 0;
        c.read_model.enabled = false;
    })
    .await;
    let client = Client::connect(second.tcp, INGEST).await.unwrap();
    for r in 20..30u128 {
        client.send(&gift_round(1000 + r * 50)).await.unwrap();
    }
    drop(client);
    let tail = second.engine.last_seq() - last_seq;
    second.stop().await.unwrap();
    assert!(tail >= 500);
    let (third, recovered) = server_with(&redis, replica).await;
    assert_eq!(recovered.replayed_events, tail);
    let client = Client::connect(third.tcp, INGEST).await.unwrap();
    for r in 30..34u128 {
        client.send(&gift_round(1000 + r * 50)).await.unwrap();
    }
    let last_seq = third.engine.last_seq();
    let newest = snapshot_at(&dir, last_seq).await;
    assert_eq!(fingerprint_of(&newest), third.engine.state_fingerprint());
    let lag = third.metrics().await.lines().find_map(|l| {
        l.strip_prefix("giftstream_snapshot_replica_lag_events ")
            .map(str::to_owned)
    });
    assert!(lag.is_some(), "the server reads the replica's reports");
    drop(client);
    third.stop().await.unwrap();
}

/// Issue #34: a group commit after a long Redis stall holds every waiting event (up to
/// `commit.pending_events_max`, 1M by default). Written as one stream entry, a run of
/// more than ~350k events could not be read back (the frame decoder's 64 MiB limit):
/// acknowledged, then the ledger could not start. Now a run is split into entries of at
/// most `JOURNAL_ENTRY_RECORDS_MAX` records, appended in turn, idempotent on a retry,
/// and read back with the journal's own decode limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_larger_than_an_entry_is_split_and_always_reads_back() {
    use giftstream::persist::journal::Journal;
    use giftstream::persist::redis::{JOURNAL_ENTRY_RECORDS_MAX, RedisJournal};
    const EVENTS: u64 = 360_000;
    let redis = RedisServer::start();
    let live = crate::support::engine();
    for from in (0..EVENTS).step_by(20_000) {
        let batch: Vec<Event> = (from..from + 20_000)
            .map(|i| recharge(u128::from(i) + 1, i % 50_000 + 1, "coins_100"))
            .collect();
        live.apply_batch(&batch, NOV);
    }
    let run = live.drain_log();
    assert_eq!(run.len() as u64, EVENTS);
    let journal = RedisJournal::connect(&redis.url()).await.unwrap();
    journal.append(&run).await.unwrap();
    // The committer retries a run whose append failed (it may have been written).
    journal.append(&run).await.unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: u64 = redis::cmd("XLEN")
        .arg(giftstream::persist::redis::JOURNAL_KEY)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        entries,
        EVENTS.div_ceil(JOURNAL_ENTRY_RECORDS_MAX as u64),
        "split, and the retry wrote nothing twice"
    );
    let restarted = crate::support::engine();
    let replayed = journal.recover_into(&restarted).await.unwrap();
    assert_eq!(replayed, EVENTS);
    assert_eq!(restarted.state_fingerprint(), live.state_fingerprint());
}

/// A snapshot of format 5 (the compact id index, keys of the unkeyed id hash), written
/// by the build before format 6 from the same ledger as the format-2 fixture
/// ([`format_2_fixture_events`]). Its ledger goes on with the unkeyed hash: its ids'
/// keys cannot be computed under a new secret, and each one stays remembered.
#[test]
fn a_snapshot_of_format_5_loads_with_its_ids_remembered() {
    use giftstream::engine::{Engine, Stamp};
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-5.gsnap"
    ))
    .unwrap();
    let path = std::path::Path::new("snapshot-format-5.gsnap");
    let (header, state) = giftstream::persist::snapshot::parse(path, &bytes).unwrap();
    assert_eq!((header.version, header.last_seq), (5, 81));
    let config = giftstream::engine::EngineConfig::default();
    let loaded = Engine::from_state(crate::support::economy(), config.clone(), state).unwrap();
    let events = format_2_fixture_events();
    let engine = crate::support::engine();
    let live = engine.apply_batch(&events, NOV);
    // Snapshot formats 1 to 6 hold no day or week counts: compared as they can hold it.
    assert_eq!(loaded.state_fingerprint_v6(), engine.state_fingerprint_v6());
    let before = loaded.state_fingerprint();
    let retried = loaded.apply_batch(&events, Stamp(NOV.0 + 1_000));
    let strip = |o: &[giftstream::engine::Outcome]| -> Vec<_> {
        o.iter().map(|o| (o.seq, o.status, o.duplicate)).collect()
    };
    let expected: Vec<_> = live.iter().map(|o| (o.seq, o.status, true)).collect();
    assert_eq!(strip(&retried), expected);
    assert_eq!(loaded.state_fingerprint(), before);
    // Written back in the current format (6 on: the unkeyed hash recorded as such), it
    // reads back the same.
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = loaded.snapshot();
    let (path, header) =
        giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();
    assert_eq!(header.version, giftstream::persist::snapshot::VERSION);
    let (_, state) = giftstream::persist::snapshot::read(&path).unwrap();
    let again = Engine::from_state(crate::support::economy(), config, state).unwrap();
    assert_eq!(again.state_fingerprint(), loaded.state_fingerprint());
    let retried = again.apply_batch(&events, Stamp(NOV.0 + 2_000));
    assert_eq!(strip(&retried), expected);
}

/// A snapshot of format 6 keeps the ledger's secret: the restored ledger files ids as
/// the one that wrote it (a retry after the restart is answered, not applied again).
#[test]
fn a_snapshot_keeps_the_id_index_secret() {
    use giftstream::engine::{Engine, EventId, Stamp};
    let config = giftstream::engine::EngineConfig::default();
    let engine = crate::support::engine();
    let events = format_2_fixture_events();
    engine.apply_batch(&events, NOV);
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = engine.snapshot();
    let (path, _) = giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();
    let (_, state) = giftstream::persist::snapshot::read(&path).unwrap();
    let loaded = Engine::from_state(crate::support::economy(), config, state).unwrap();
    for i in 0..4096u128 {
        assert_eq!(
            loaded.id_shard_of(EventId(i)),
            engine.id_shard_of(EventId(i))
        );
    }
    let retried = loaded.apply_batch(&events, Stamp(NOV.0 + 1_000));
    assert!(retried.iter().all(|o| o.duplicate));
}

/// Review 2, A4: `giftstream restore` of a format-2 snapshot published the state as read,
/// whose ids (kept in the shards until format 3) serialize empty: the restored ledger
/// had forgotten every remembered id. It publishes the loaded ledger's state now.
#[test]
fn giftstream_restore_of_a_format_2_snapshot_keeps_its_ids() {
    use giftstream::engine::{Engine, EngineConfig, Stamp};
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-2.gsnap"
    );
    let (ok, out) = crate::support::child::run_cli(
        &["restore", fixture],
        &[
            ("GIFTSTREAM_REDIS_URL", ""),
            ("GIFTSTREAM_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert!(ok, "{out}");
    let newest = giftstream::persist::snapshot::list(dir.path())
        .unwrap()
        .pop()
        .expect("restore wrote a snapshot");
    let (header, state) = giftstream::persist::snapshot::read(&newest).unwrap();
    assert_eq!(header.version, giftstream::persist::snapshot::VERSION);
    let config = EngineConfig {
        shards: state.shards(),
        ..EngineConfig::default()
    };
    let served = Engine::from_state(crate::support::economy(), config, state).unwrap();
    // Id 0 was user 40's recharge: a retry is answered, another user's event refused.
    let at = Stamp(NOV.0 + 1_000);
    let before = served.wallet(giftstream::engine::UserId(41), at).coins;
    let retry = served.apply_batch(&[recharge(0, 40, "coins_7000")], at)[0];
    assert!(retry.duplicate, "{retry:?}");
    let reuse = served.apply_batch(&[recharge(0, 41, "coins_7000")], at)[0];
    assert!(!reuse.is_accepted() && !reuse.duplicate, "{reuse:?}");
    assert_eq!(
        served.wallet(giftstream::engine::UserId(41), at).coins,
        before
    );
}
