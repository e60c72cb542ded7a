//! The Redis read model against a real redis-server: after load, after a restart that
//! catches up from the journal, after the projector's queue overflowed, and after a
//! restore from a snapshot into an emptied Redis, it equals the ledger; a ranking
//! service reading `ZREVRANGE` sees what the API shows.

use std::time::Duration;

use giftstream::client::Client;
use giftstream::engine::Event;
use giftstream::persist::read_model::{self, Layout, PREFIX};
use giftstream::persist::redis::RedisJournal;

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::{RedisServer, journal_first_id, journal_first_seq};
use crate::support::server::*;
use crate::support::{gift, goal, payout, recharge};

/// Leaderboards keep the top 8 gifters here (30 users send): gifters are pushed out.
const TOP_K: usize = 8;

/// A server on `redis` with a short coalescing window (20 ms) and top-8 leaderboards.
async fn server(
    redis: &RedisServer,
    adjust: impl FnOnce(&mut giftstream::config::Config),
) -> TestServer {
    TestServer::on_redis(&redis.url(), |c| {
        c.engine.top_k = TOP_K;
        c.read_model.window_ms = 20;
        c.read_model.lag_max_ms = 1000;
        adjust(c);
    })
    .await
    .0
}

async fn conn(redis: &RedisServer) -> giftstream::persist::redis::RedisConn {
    giftstream::persist::redis::connect(&redis.url())
        .await
        .unwrap()
}

/// Waits (at most 10 s) until the read model holds seq `last`.
async fn caught_up(conn: &mut giftstream::persist::redis::RedisConn, last: u64) {
    caught_up_in(conn, Layout::SINGLE, last).await;
}

/// Waits (at most 10 s) until every bucket of the read model holds seq `last`.
async fn caught_up_in(conn: &mut giftstream::persist::redis::RedisConn, layout: Layout, last: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ledger = giftstream::persist::redis::Ledger::default();
    loop {
        let seq = read_model::projected_seq_of(conn, &ledger, layout)
            .await
            .unwrap();
        if seq == last {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read model at {seq}, want {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The read model `compare`s equal to `engine`'s ledger: no differences.
async fn assert_equals_ledger(
    conn: &mut giftstream::persist::redis::RedisConn,
    engine: &giftstream::engine::Engine,
    layout: Layout,
) {
    assert_eq!(
        read_model::compare(conn, engine, layout, false)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

/// A skewed mix: 30 users, 5 creators (creator 7 hot) and their streams, a payout.
fn traffic(round: u128) -> Vec<Event> {
    let base = 10_000 + round * 1_000;
    let mut events: Vec<Event> = (0..200u128)
        .map(|i| {
            let sender = 100 + ((i * 7 + round) % 30) as u64;
            let creator = if i % 3 == 0 { 7 } else { 8 + (i % 4) as u64 };
            let kind = ["rose", "panda", "universe"][(i % 3) as usize];
            gift(base + i, sender, creator, kind, 1 + (i % 4) as u32)
        })
        .collect();
    events.push(payout(base + 900, 7, 20_000, "USD"));
    events
}

/// Sends `rounds` of traffic through a server whose read model is off (`adjust` sets
/// the rest of its config), stops it, and returns the ledger's last seq.
async fn commit_without_read_model(
    redis: &RedisServer,
    adjust: impl FnOnce(&mut giftstream::config::Config),
    rounds: std::ops::Range<u128>,
) -> u64 {
    let s = server(redis, |c| {
        adjust(c);
        c.read_model.enabled = false;
    })
    .await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    for round in rounds {
        client.send(&traffic(round)).await.unwrap();
    }
    let last = s.engine.last_seq();
    drop(client);
    s.stop().await.unwrap();
    last
}

fn funding() -> Vec<Event> {
    let mut events: Vec<Event> = (0..30u128)
        .flat_map(|u| (0..3).map(move |k| recharge(u * 10 + k, 100 + u as u64, "coins_7000")))
        .collect();
    events.push(goal(500, 9009, 9, 1_000_000));
    events
}

/// What a ranking service sees: `ZREVRANGE key 0 stop WITHSCORES`.
async fn zrevrange(
    conn: &mut giftstream::persist::redis::RedisConn,
    key: &str,
    stop: i64,
) -> Vec<(u64, u64)> {
    let raw: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
        .arg(format!("{PREFIX}{key}"))
        .arg(0)
        .arg(stop)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .unwrap();
    raw.into_iter().map(|(m, s)| (m, s as u64)).collect()
}

/// The API's top 10, ties in the ledger's order; compared with Redis by score and by
/// each member's score (Redis orders ties by member, descending).
async fn assert_leaderboards_match(
    s: &TestServer,
    conn: &mut giftstream::persist::redis::RedisConn,
) {
    for (path, key, member) in [
        (
            "/v1/creators/7/top-gifters?limit=8",
            "creator:7:top-gifters",
            "user",
        ),
        (
            "/v1/streams/9007/top-gifters?limit=8",
            "stream:9007:top-gifters",
            "user",
        ),
        (
            "/v1/leaderboards/creators?limit=8",
            "top-creators",
            "creator",
        ),
    ] {
        let (status, body) = s.get(path, Some(READ)).await;
        assert_eq!(status, 200);
        let score = if member == "user" {
            "coins"
        } else {
            "diamonds"
        };
        let api: Vec<(u64, u64)> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[member].as_u64().unwrap(), e[score].as_u64().unwrap()))
            .collect();
        let redis = zrevrange(conn, key, TOP_K as i64 - 1).await;
        assert!(!api.is_empty(), "{path}");
        let scores = |v: &[(u64, u64)]| v.iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(scores(&redis), scores(&api), "{path} vs ZREVRANGE {key}");
        let mut a = api.clone();
        let mut r = redis.clone();
        // Same members wherever the score is above the last (tied) score shown.
        let cut = api.last().unwrap().1;
        a.retain(|e| e.1 > cut);
        r.retain(|e| e.1 > cut);
        a.sort();
        r.sort();
        assert_eq!(r, a, "{path} vs ZREVRANGE {key}");
    }
}

/// Every gifter leaderboard in Redis holds at most the top K (and at least one is
/// full: gifters were pushed out).
async fn assert_top_k_only(conn: &mut giftstream::persist::redis::RedisConn) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("giftstream:{ledger}:rm:*:top-gifters")
        .query_async(conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let mut fullest = 0;
    for key in keys {
        let n: usize = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        assert!(n <= TOP_K, "{key} holds {n} gifters");
        fullest = fullest.max(n);
    }
    assert_eq!(fullest, TOP_K);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_equals_the_ledger_after_load_a_restart_and_a_queue_overflow() {
    let redis = RedisServer::start();
    let mut conn = conn(&redis).await;

    // 1. Live: projected within the window; Redis equals the API.
    let first = server(&redis, |_| {}).await;
    let client = Client::connect(first.tcp, INGEST).await.unwrap();
    client.send(&funding()).await.unwrap();
    for round in 0..5 {
        client.send(&traffic(round)).await.unwrap();
    }
    caught_up(&mut conn, first.engine.last_seq()).await;
    assert_equals_ledger(&mut conn, &first.engine, Layout::SINGLE).await;
    assert_leaderboards_match(&first, &mut conn).await;
    assert_top_k_only(&mut conn).await;
    let (_, stream) = first.get("/v1/streams/9009", Some(READ)).await;
    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{PREFIX}stream:9009"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hash["goal_coins_target"], "1000000");
    assert_eq!(
        hash["coins_received"],
        stream["goal"]["progress"].to_string(),
        "goal progress"
    );
    drop(client);
    first.stop().await.unwrap();

    // 2. A server without the read model commits more; the next start catches up from
    //    the journal.
    let last = commit_without_read_model(&redis, |_| {}, 5..8).await;
    assert!(read_model::projected_seq(&mut conn).await.unwrap() < last);
    let third = server(&redis, |_| {}).await;
    caught_up(&mut conn, last).await;
    assert_equals_ledger(&mut conn, &third.engine, Layout::SINGLE).await;
    assert_top_k_only(&mut conn).await;

    // 3. A queue of one run and many small commits: runs that do not fit are read back
    //    from the journal, none twice; windows are written in chunks of 7 operations,
    //    each followed by a pause (a 25 % share of Redis time).
    third.stop().await.unwrap();
    let fourth = server(&redis, |c| {
        c.read_model.ops_per_write_max = 7;
        c.read_model.redis_share_percent = 25;
        c.read_model.queue_runs_max = 1;
        c.read_model.window_ms = 200;
        c.read_model.lag_max_ms = 1000;
    })
    .await;
    let client = Client::connect(fourth.tcp, INGEST).await.unwrap();
    for round in 8..20 {
        for chunk in traffic(round).chunks(20) {
            client.send(chunk).await.unwrap();
        }
    }
    caught_up(&mut conn, fourth.engine.last_seq()).await;
    assert_equals_ledger(&mut conn, &fourth.engine, Layout::SINGLE).await;
    assert_leaderboards_match(&fourth, &mut conn).await;
    assert_top_k_only(&mut conn).await;
    let metrics = fourth.metrics().await;
    let reads: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("giftstream_read_model_journal_reads_total "))
        .map_or(0.0, |v| v.parse().unwrap());
    assert!(reads > 0.0, "the overflow path ran:\n{metrics}");
    assert!(metrics.contains("giftstream_read_model_lag_seconds"));
    fourth.stop().await.unwrap();

    // 4. A write retried after it ran changes nothing (exactly once by `seq`).
    let seq = read_model::projected_seq(&mut conn).await.unwrap();
    let before = zrevrange(&mut conn, "creator:7:top-gifters", -1).await;
    let journal = RedisJournal::connect(&redis.url()).await.unwrap();
    let engine_with_top = |top_k| {
        let mut config = giftstream::config::Config::from_toml_str(SHIPPED_CONFIG).unwrap();
        config.engine.top_k = top_k;
        giftstream::persist::recovery::build_engine(
            &config,
            giftstream::economy::Economy::embedded(),
        )
        .unwrap()
    };
    let engine = engine_with_top(TOP_K);
    journal.recover_into(&engine).await.unwrap();
    assert_eq!(engine.last_seq(), seq);
    let start = read_model::prepare(&journal, &redis.url(), &engine, (Layout::SINGLE, false))
        .await
        .unwrap();
    assert!(!start.rebuilt && start.projected() == seq);
    let after = zrevrange(&mut conn, "creator:7:top-gifters", -1).await;
    assert_eq!(before, after);

    // 5. Leaderboards of another K (or of an older layout) are rebuilt at the start.
    let engine = engine_with_top(TOP_K + 2);
    journal.recover_into(&engine).await.unwrap();
    let start = read_model::prepare(&journal, &redis.url(), &engine, (Layout::SINGLE, false))
        .await
        .unwrap();
    assert!(start.rebuilt && start.projected() == seq);
    assert_eq!(
        zrevrange(&mut conn, "creator:7:top-gifters", -1)
            .await
            .len(),
        TOP_K + 2
    );
    assert_equals_ledger(&mut conn, &engine, Layout::SINGLE).await;

    // 6. A window another projector has claimed (a process fenced out part-way through
    //    one) is not interleaved with: this projector stops writing; the next start
    //    clears the claim and catches up.
    let fifth = server(&redis, |_| {}).await;
    // After its start: `prepare` clears a claim (the process holds the lease).
    fifth.serving().await;
    redis::cmd("SET")
        .arg(format!("{PREFIX}writer"))
        .arg("another projector (pid 1)")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let client = Client::connect(fifth.tcp, INGEST).await.unwrap();
    client.send(&traffic(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read_model::projected_seq(&mut conn).await.unwrap(), seq);
    let failures: f64 = fifth
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("giftstream_read_model_write_failures_total "))
        .map_or(0.0, |v| v.parse().unwrap());
    assert!(failures >= 1.0, "the claimed window was refused");
    let last = fifth.engine.last_seq();
    drop(client);
    fifth.stop().await.unwrap();
    let sixth = server(&redis, |_| {}).await;
    caught_up(&mut conn, last).await;
    assert_equals_ledger(&mut conn, &sixth.engine, Layout::SINGLE).await;
    sixth.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_flushall_rebuilds_ledger_and_read_model_from_the_latest_snapshot() {
    let redis = RedisServer::start();
    let mut conn = conn(&redis).await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    // Top-100 leaderboards, as the CLI's default config below.
    let first = server(&redis, |c| {
        c.engine.top_k = 100;
        c.snapshot.dir = dir.clone();
        c.snapshot.events = 150;
    })
    .await;
    let client = Client::connect(first.tcp, INGEST).await.unwrap();
    client.send(&funding()).await.unwrap();
    for round in 0..6 {
        client.send(&traffic(round)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    first.stop().await.unwrap();
    let newest = giftstream::persist::snapshot::list(&dir)
        .unwrap()
        .pop()
        .expect("snapshots were taken");
    let (header, state) = giftstream::persist::snapshot::read(&newest).unwrap();
    let config = giftstream::config::Config::from_toml_str(SHIPPED_CONFIG).unwrap();
    let expected = giftstream::engine::Engine::from_state(
        giftstream::economy::Economy::embedded(),
        config.engine.clone(),
        state,
    )
    .unwrap();

    // Redis loses everything.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let restored = tempfile::tempdir().unwrap();
    let url = redis.url();
    let env = [
        ("GIFTSTREAM_REDIS_URL", url.as_str()),
        ("GIFTSTREAM_DATA_DIR", restored.path().to_str().unwrap()),
    ];
    let (ok, out) = run_cli(&["snapshot", "verify", newest.to_str().unwrap()], &env);
    assert!(ok, "{out}");
    let (ok, out) = run_cli(&["restore", newest.to_str().unwrap()], &env);
    assert!(ok, "{out}");
    assert!(out.contains("read model: rebuilt"), "{out}");
    assert_eq!(
        read_model::projected_seq(&mut conn).await.unwrap(),
        header.last_seq
    );
    assert_equals_ledger(&mut conn, &expected, Layout::SINGLE).await;

    // The next start is the snapshot's state, and goes on from its sequence number.
    let second = server(&redis, |c| {
        c.engine.top_k = 100;
        c.snapshot.dir = restored.path().to_owned();
    })
    .await;
    assert_eq!(
        second.engine.state_fingerprint(),
        expected.state_fingerprint()
    );
    let client = Client::connect(second.tcp, INGEST).await.unwrap();
    let o = client.send(&traffic(50)).await.unwrap();
    assert_eq!(
        o.iter().map(|o| o.seq).min(),
        Some(header.last_seq + 1),
        "the sequence goes on from the snapshot's"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(&traffic(51)).await.unwrap();
    caught_up(&mut conn, second.engine.last_seq()).await;
    assert_equals_ledger(&mut conn, &second.engine, Layout::SINGLE).await;
    drop(client);
    second.stop().await.unwrap();
    let (ok, out) = run_cli(&["audit"], &env);
    assert!(ok && out.contains("audit: clean"), "{out}");
    assert!(out.contains("0 differences from the ledger"), "{out}");

    // A restore over a journal that does not continue the snapshot (its first run
    // after it is gone) is refused, naming the problem.
    let first_after = journal_first_id(&redis, &format!("{}-0", header.last_seq + 1)).await;
    redis::cmd("XDEL")
        .arg(giftstream::persist::redis::JOURNAL_KEY)
        .arg(&first_after)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let env = [
        ("GIFTSTREAM_REDIS_URL", url.as_str()),
        ("GIFTSTREAM_DATA_DIR", elsewhere.path().to_str().unwrap()),
    ];
    let (ok, out) = run_cli(&["restore", newest.to_str().unwrap()], &env);
    assert!(!ok, "{out}");
    assert!(out.contains("does not continue the snapshot"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_can_live_in_its_own_redis() {
    let journal_redis = RedisServer::start();
    let read_redis = RedisServer::start();
    let url = read_redis.url();
    let s = server(&journal_redis, |c| c.read_model.url = url.clone()).await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    client.send(&funding()).await.unwrap();
    client.send(&traffic(0)).await.unwrap();
    let mut read_conn = conn(&read_redis).await;
    caught_up(&mut read_conn, s.engine.last_seq()).await;
    assert_equals_ledger(&mut read_conn, &s.engine, Layout::SINGLE).await;
    assert_leaderboards_match(&s, &mut read_conn).await;
    // The journal's Redis holds the journal and nothing of the read model.
    let mut journal_conn = conn(&journal_redis).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut journal_conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "giftstream:{ledger}:economies".to_owned(),
            "giftstream:{ledger}:head".to_owned(),
            "giftstream:{ledger}:journal".to_owned(),
            "giftstream:{ledger}:limits".to_owned(),
            "giftstream:{ledger}:owner".to_owned(),
            "giftstream:{ledger}:shards".to_owned()
        ],
        "the journal, its head, the ledger lease, its shard count, pinned limits and economy versions"
    );
    // A Redis that forgot the write script (restarted, `SCRIPT FLUSH`): the next write
    // loads it again and the read model keeps up.
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut read_conn)
        .await
        .unwrap();
    client.send(&traffic(1)).await.unwrap();
    caught_up(&mut read_conn, s.engine.last_seq()).await;
    assert_equals_ledger(&mut read_conn, &s.engine, Layout::SINGLE).await;
    drop(client);
    s.stop().await.unwrap();
}

/// The read model's own Redis loses everything while the server runs (a restart
/// without persistence, a failover to an empty replica): the projector cannot tell what
/// the leaderboards hold, so it stops and says so (`giftstream_read_model_stopped`),
/// acks go on, and the journal trim no longer waits for it — the journal's Redis would
/// otherwise keep every event from then on. The next start rebuilds the read model
/// equal to the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_whose_redis_lost_it_stops_holding_back_the_trim_and_is_rebuilt_at_start() {
    let journal_redis = RedisServer::start();
    let read_redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let (url, dir) = (read_redis.url(), data.path().to_owned());
    let adjust = |c: &mut giftstream::config::Config| {
        c.read_model.url = url.clone();
        c.snapshot.dir = dir.clone();
        c.snapshot.events = 150;
        c.snapshot.keep = 1;
    };
    let s = server(&journal_redis, adjust).await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    client.send(&funding()).await.unwrap();
    client.send(&traffic(0)).await.unwrap();
    let mut read_conn = conn(&read_redis).await;
    caught_up(&mut read_conn, s.engine.last_seq()).await;
    let lost_at = s.engine.last_seq();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut read_conn)
        .await
        .unwrap();

    // More traffic: the projector's next write finds no `seq` and stops; snapshots go on
    // and the journal is trimmed past where the read model was.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut round = 1;
    loop {
        let events = traffic(round);
        let answers = client.send(&events).await.unwrap();
        assert_eq!(answers.len(), events.len(), "acks go on");
        round += 1;
        let stopped = s
            .metrics()
            .await
            .contains("giftstream_read_model_stopped 1");
        // Held back, the journal's first run would hold `lost_at + 1`: one batch of 201.
        if stopped && journal_first_seq(&journal_redis).await > lost_at + 1000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stopped: {stopped}; journal from {}, read model lost at {lost_at}",
            journal_first_seq(&journal_redis).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing was projected after the loss.
    assert_eq!(read_model::projected_seq(&mut read_conn).await.unwrap(), 0);
    let last = s.engine.last_seq();
    drop(client);
    s.stop().await.unwrap();

    // The next start cannot catch up from the journal (trimmed): it rebuilds.
    let again = server(&journal_redis, adjust).await;
    again.serving().await;
    assert_eq!(again.engine.last_seq(), last);
    caught_up(&mut read_conn, last).await;
    assert_equals_ledger(&mut read_conn, &again.engine, Layout::SINGLE).await;
    again.stop().await.unwrap();
}

/// As above, seen from outside: `giftstream serve` as a process of its own (so its
/// metrics are its own), the read model's Redis flushed under it. The read model's
/// gauges say so: `giftstream_read_model_stopped` turns 1, and the lag keeps growing from
/// the oldest event not written, so an alert on the lag fires too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_read_model_shows_in_the_metrics_with_a_growing_lag() {
    let journal_redis = RedisServer::start();
    let read_redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("giftstream.toml");
    let text = SHIPPED_CONFIG.replace("window_ms = 100", "window_ms = 20");
    std::fs::write(&config, text).unwrap();
    let read_url = read_redis.url();
    let p = ServeProcess::start_with(
        &config,
        &journal_redis.url(),
        &tmp.path().join("data"),
        &[("GIFTSTREAM_READ_MODEL_URL", read_url.as_str())],
    );
    let http = reqwest::Client::new();
    let client = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
    client.send(&funding()).await.unwrap();
    let answers = client.send(&traffic(0)).await.unwrap();
    let mut read_conn = conn(&read_redis).await;
    caught_up(&mut read_conn, answers.last().unwrap().seq).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut read_conn)
        .await
        .unwrap();
    client.send(&traffic(1)).await.unwrap();

    let gauge = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in the metrics"))
            .parse()
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gauge(&p.metrics(&http).await, "giftstream_read_model_stopped") != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projector did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = gauge(&p.metrics(&http).await, "giftstream_read_model_lag_seconds");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = gauge(&p.metrics(&http).await, "giftstream_read_model_lag_seconds");
    assert!(
        second >= first + 1.0,
        "the lag grows while stopped: {first} s, then {second} s"
    );
    drop(client);
    p.stop();
}

/// Four buckets on one Redis, written by two projectors: a ranking service finds each key under `{rm-<id mod 4>}`
/// (docs/operations.md, "Reading leaderboards from Redis"), every bucket holds keys and none is left
/// in the journal's slot, the top creators are the best of the buckets' lists; a start
/// after a crash left the buckets at different places catches them all up; a start with
/// another bucket count is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_in_buckets_equals_the_ledger_and_catches_up_buckets_left_apart() {
    const BUCKETS: u32 = 4;
    let layout = Layout::new(BUCKETS);
    let redis = RedisServer::start();
    let mut conn = conn(&redis).await;
    // Two projectors, each writing two of the buckets.
    let bucketed = |c: &mut giftstream::config::Config| {
        c.read_model.buckets = BUCKETS;
        c.read_model.projectors = 2;
    };
    let first = server(&redis, bucketed).await;
    let client = Client::connect(first.tcp, INGEST).await.unwrap();
    client.send(&funding()).await.unwrap();
    for round in 0..5 {
        client.send(&traffic(round)).await.unwrap();
    }
    caught_up_in(&mut conn, layout, first.engine.last_seq()).await;
    assert_equals_ledger(&mut conn, &first.engine, layout).await;
    // What a ranking service reads, by the documented key names.
    let ranked = |raw: Vec<(u64, f64)>| raw.into_iter().map(|(_, s)| s as u64).collect::<Vec<_>>();
    for creator in 7u64..=11 {
        let (status, body) = first
            .get(
                &format!("/v1/creators/{creator}/top-gifters?limit=8"),
                Some(READ),
            )
            .await;
        assert_eq!(status, 200);
        let api: Vec<u64> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["coins"].as_u64().unwrap())
            .collect();
        let key = format!(
            "giftstream:{{rm-{}}}:rm:creator:{creator}:top-gifters",
            creator % 4
        );
        let raw: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
            .arg(&key)
            .arg(0)
            .arg(7)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!api.is_empty(), "creator {creator}");
        assert_eq!(ranked(raw), api, "ZREVRANGE {key}");
    }
    let mut best: Vec<(u64, f64)> = Vec::new();
    for bucket in 0..BUCKETS {
        let list: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
            .arg(format!("giftstream:{{rm-{bucket}}}:rm:top-creators"))
            .arg(0)
            .arg(7)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            list.iter().all(|&(c, _)| c % 4 == u64::from(bucket)),
            "bucket {bucket} lists its own creators: {list:?}"
        );
        best.extend(list);
    }
    best.sort_by(|a, b| b.1.total_cmp(&a.1));
    best.truncate(8);
    let (_, body) = first
        .get("/v1/leaderboards/creators?limit=8", Some(READ))
        .await;
    let api: Vec<u64> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["diamonds"].as_u64().unwrap())
        .collect();
    assert_eq!(ranked(best), api, "the best of the buckets' top-creators");
    let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("giftstream:{rm-1}:rm:stream:9009")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        hash["goal_coins_target"], "1000000",
        "stream 9009 in bucket 1"
    );
    for bucket in 0..BUCKETS {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("giftstream:{{rm-{bucket}}}:rm:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(keys.len() > 4, "bucket {bucket} holds {keys:?}");
    }
    let single: Vec<String> = redis::cmd("KEYS")
        .arg("giftstream:{ledger}:rm:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        single,
        Vec::<String>::new(),
        "nothing in the journal's slot"
    );
    drop(client);
    first.stop().await.unwrap();

    // More is committed without the read model; then bucket 3's seq is put back, as a
    // crash part-way through a window leaves it (the others wrote theirs). The next
    // start writes the others again from there, over their newer seq.
    let last = commit_without_read_model(&redis, bucketed, 5..8).await;
    let seq = read_model::projected_seq_of(&mut conn, &Default::default(), layout)
        .await
        .unwrap();
    assert!(seq > 100 && seq < last);
    redis::cmd("SET")
        .arg("giftstream:{rm-3}:rm:seq")
        .arg(seq - 100)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let third = server(&redis, bucketed).await;
    // (A projector that refused the buckets past its window's start would stop with
    // GIFTSTREAM_GAP, and never catch up.)
    caught_up_in(&mut conn, layout, last).await;
    assert_equals_ledger(&mut conn, &third.engine, layout).await;
    third.stop().await.unwrap();

    // Another bucket count is refused, naming the recorded one.
    let journal = RedisJournal::connect(&redis.url()).await.unwrap();
    let config = giftstream::config::Config::from_toml_str(SHIPPED_CONFIG).unwrap();
    let engine = giftstream::persist::recovery::build_engine(
        &config,
        giftstream::economy::Economy::embedded(),
    )
    .unwrap();
    journal.recover_into(&engine).await.unwrap();
    let refused = read_model::prepare(&journal, &redis.url(), &engine, (Layout::new(2), false))
        .await
        .err()
        .expect("another bucket count is refused");
    assert!(
        refused.to_string().contains("laid out in 4 buckets"),
        "{refused}"
    );
}
