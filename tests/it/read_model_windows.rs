//! The read model's windowed leaderboards (issue #32 feature 1) against a real
//! redis-server: the keys carry the window (`creator:7:top-gifters:day:2026-12-05`) and
//! hold what the HTTP API answers for that window; they expire at the window's end plus
//! its retention; a gift reversal lowers the window its gift counted in (a gifter
//! outside the list that it brings in enters at once); a window older than its
//! retention by the wall clock is gone; with the windows off there are no windowed
//! keys.

use std::time::Duration;

use giftstream::client::Client;
use giftstream::config::engine::WindowsConfig;
use giftstream::engine::{
    CreatorId, Engine, EngineConfig, Event, EventId, GiftReversal, Stamp, StreamId, TimeWindow,
    UserId, WindowKind,
};
use giftstream::persist::read_model::{self, Layout, expire_at_ms};
use giftstream::persist::redis::{RedisConn, RedisJournal};

use crate::support::redis::RedisServer;
use crate::support::server::*;
use crate::support::{economy, gift, held_economy, recharge, video_gift};

/// Lists keep the top 3 here: gifters are pushed out.
const TOP_K: usize = 3;

async fn server(redis: &RedisServer, windows: bool) -> TestServer {
    TestServer::on_redis_with(&redis.url(), held_economy(600_000), |c| {
        c.engine.top_k = TOP_K;
        c.engine.windows.enabled = windows;
        c.read_model.window_ms = 20;
        c.read_model.lag_max_ms = 1000;
    })
    .await
    .0
}

async fn conn(redis: &RedisServer) -> RedisConn {
    giftstream::persist::redis::connect(&redis.url())
        .await
        .unwrap()
}

/// Waits (at most 10 s) until the read model holds seq `last`.
async fn caught_up(conn: &mut RedisConn, last: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ledger = giftstream::persist::redis::Ledger::default();
    loop {
        let seq = read_model::projected_seq_of(conn, &ledger, Layout::SINGLE)
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

/// `ZREVRANGE key 0 -1 WITHSCORES`: what a ranking service reads.
async fn zrevrange(conn: &mut RedisConn, key: &str) -> Vec<(u64, u64)> {
    let raw: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .unwrap();
    raw.into_iter().map(|(m, s)| (m, s as u64)).collect()
}

/// `EXPIRETIME key`: its expiry in UTC seconds (-1: none, -2: no key).
async fn expiretime(conn: &mut RedisConn, key: &str) -> i64 {
    redis::cmd("EXPIRETIME")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

/// The HTTP answer for `path` (`entries` as (id, coins); `id_field` names the id).
async fn http_entries(s: &TestServer, path: &str, id_field: &str) -> Vec<(u64, u64)> {
    let (status, body) = s.get(path, Some(READ)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[id_field].as_u64().unwrap(), e["coins"].as_u64().unwrap()))
        .collect()
}

/// Every windowed key of each kind equals the engine's answer over HTTP for the same
/// window, and expires at the window's end plus its retention.
async fn assert_windows_equal_http(s: &TestServer, conn: &mut RedisConn, what: &str) {
    let layout = Layout::SINGLE;
    let config = s.engine.config().windows.clone();
    for kind in WindowKind::ALL {
        let w = s.engine.current_window(kind);
        let q = format!("window={}&at={}", kind.name(), w.label());
        for (key, path, id) in [
            (
                layout.creator_top_in(CreatorId(7), w),
                format!("/v1/creators/7/top-gifters?{q}"),
                "user",
            ),
            (
                layout.stream_top_in(StreamId(9007), w),
                format!("/v1/streams/9007/top-gifters?{q}"),
                "user",
            ),
            (
                layout.top_creators_in(0, w),
                format!("/v1/leaderboards/creators?{q}&limit={TOP_K}"),
                "creator",
            ),
        ] {
            let got = zrevrange(conn, &key).await;
            let want = http_entries(s, &path, id).await;
            assert_eq!(got, want, "{what}: {key}");
            assert!(!want.is_empty(), "{what}: {key}");
            assert_eq!(
                expiretime(conn, &key).await,
                (expire_at_ms(&config, w) / 1000) as i64,
                "{what}: {key} expires at the window's end + its retention"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_keys_hold_the_engines_windows_expire_with_them_and_reversals_lower_them() {
    let redis = RedisServer::start();
    let s = server(&redis, true).await;
    let mut conn = conn(&redis).await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    let funding: Vec<Event> = (1..=6)
        .map(|u| recharge(u128::from(u), u, "coins_7000"))
        .collect();
    client.send(&funding).await.unwrap();
    // Creator 7 (stream 9007): users 1..=5 give 50, 40, 30, 20, 10 roses; 4 more to
    // creator 8, and user 6 gives 8 a drama queen on a video: top creators 8, 7.
    let mut gifts: Vec<Event> = (1..=5u64)
        .map(|u| gift(100 + u128::from(u), u, 7, "rose", 60 - 10 * u as u32))
        .collect();
    gifts.push(gift(120, 4, 8, "rose", 4));
    gifts.push(video_gift(121, 6, 8, 31337, "drama_queen", 1));
    client.send(&gifts).await.unwrap();
    caught_up(&mut conn, s.engine.last_seq()).await;
    let day = s.engine.current_window(WindowKind::Day);
    let key = Layout::SINGLE.creator_top_in(CreatorId(7), day);
    assert!(
        key.ends_with(&format!(":creator:7:top-gifters:day:{}", day.label())),
        "{key}"
    );
    assert_eq!(
        zrevrange(&mut conn, &key).await,
        vec![(1, 50), (2, 40), (3, 30)],
        "the top 3 only"
    );
    assert_windows_equal_http(&s, &mut conn, "after the gifts").await;
    let engine = s.engine.clone();
    assert_eq!(
        read_model::compare(&mut conn, &engine, Layout::SINGLE, false)
            .await
            .unwrap(),
        Vec::<String>::new(),
        "the audit's comparison, windowed lists included"
    );
    // The expiry is the window's end plus its retention (14 days by default).
    assert_eq!(
        expire_at_ms(&s.engine.config().windows, day),
        day.end_ms() + 14 * 86_400_000
    );

    // User 1 reverses its gift: it leaves creator 7's and stream 9007's lists (user 4,
    // outside them, comes in at once), and creator 7's coins in the windows go down.
    let undo = Event::GiftReversal(GiftReversal::new(EventId(200), UserId(1), EventId(101)));
    let outcomes = client.send(std::slice::from_ref(&undo)).await.unwrap();
    assert!(outcomes[0].is_accepted(), "{outcomes:?}");
    caught_up(&mut conn, s.engine.last_seq()).await;
    assert_eq!(
        zrevrange(&mut conn, &key).await,
        vec![(2, 40), (3, 30), (4, 20)],
        "the reversed gifter left, the next one came in"
    );
    assert_windows_equal_http(&s, &mut conn, "after the reversal").await;
    // The all-time lists have a known gap here (a gifter a reversal brings in appears
    // at its next gift: ARCHITECTURE.md); the windowed ones have none.
    let diffs = read_model::compare(&mut conn, &engine, Layout::SINGLE, false)
        .await
        .unwrap();
    assert!(
        diffs
            .iter()
            .all(|d| !d.contains(" top gifters in ") && !d.starts_with("top creators in ")),
        "windowed lists differ: {diffs:?}"
    );
    assert_eq!(diffs.len(), 2, "the all-time gap: {diffs:?}");
    drop(client);
    s.stop().await.unwrap();

    // A restart that rebuilds the read model (its layout version forgotten) writes the
    // windowed keys again, equal, with their expiry.
    redis::cmd("DEL")
        .arg("giftstream:{ledger}:rm:format")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let s = server(&redis, true).await;
    s.serving().await;
    assert_windows_equal_http(&s, &mut conn, "after a rebuild").await;
    // The audit sees a windowed list that differs.
    let engine = s.engine.clone();
    let stream_key = Layout::SINGLE.stream_top_in(StreamId(9007), day);
    redis::cmd("ZREM")
        .arg(&stream_key)
        .arg(2)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let diffs = read_model::compare(&mut conn, &engine, Layout::SINGLE, false)
        .await
        .unwrap();
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with(&format!("stream 9007 top gifters in {}", day.label()))),
        "{diffs:?}"
    );
    s.stop().await.unwrap();
}

/// Windows off: the read model has no windowed key at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_off_write_no_windowed_keys() {
    let redis = RedisServer::start();
    let s = server(&redis, false).await;
    let mut conn = conn(&redis).await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    client.send(&[recharge(1, 1, "coins_7000")]).await.unwrap();
    client.send(&[gift(2, 1, 7, "rose", 5)]).await.unwrap();
    caught_up(&mut conn, s.engine.last_seq()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("giftstream:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .any(|k| k.ends_with(":rm:creator:7:top-gifters")),
        "{keys:?}"
    );
    let windowed: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains(":top-gifters:") || k.contains(":top-creators:"))
        .collect();
    assert!(windowed.is_empty(), "{windowed:?}");
    drop(client);
    s.stop().await.unwrap();
}

/// A ledger whose events are all of 2026-11-02 (its time is then): the engine still
/// serves that day's hour (retained at the ledger's time), but by the wall clock the
/// hour's keys are past their expiry, so Redis holds none; the month's (kept 12
/// months) are there, with their expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_past_its_expiry_by_the_wall_clock_is_gone() {
    let redis = RedisServer::start();
    let old = Stamp(
        TimeWindow::parse(WindowKind::Day, "2026-11-02")
            .unwrap()
            .start_ms()
            + 10 * 3_600_000,
    );
    let windows = WindowsConfig {
        enabled: true,
        ..WindowsConfig::default()
    };
    let engine = Engine::new(
        economy(),
        EngineConfig {
            top_k: TOP_K,
            windows: windows.clone(),
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine.apply_batch(&[recharge(1, 1, "coins_7000")], old);
    engine.apply_batch(&[gift(2, 1, 7, "rose", 5)], old);
    let journal = RedisJournal::connect(&redis.url()).await.unwrap();
    {
        use giftstream::persist::journal::Journal;
        journal.append(&engine.drain_log()).await.unwrap();
    }
    let (s, _) = TestServer::on_redis(&redis.url(), |c| {
        c.engine.top_k = TOP_K;
        c.engine.windows = windows.clone();
        c.read_model.window_ms = 20;
    })
    .await;
    s.serving().await;
    let mut conn = conn(&redis).await;
    caught_up(&mut conn, s.engine.last_seq()).await;
    let hour = TimeWindow::of(WindowKind::Hour, old);
    let month = TimeWindow::of(WindowKind::Month, old);
    let (st, body) = s
        .get(
            &format!("/v1/creators/7/top-gifters?window=hour&at={}", hour.label()),
            Some(READ),
        )
        .await;
    assert_eq!(st, 200, "the engine serves it by the ledger's time: {body}");
    let layout = Layout::SINGLE;
    let hour_key = layout.creator_top_in(CreatorId(7), hour);
    assert_eq!(expiretime(&mut conn, &hour_key).await, -2, "no key");
    let month_key = layout.creator_top_in(CreatorId(7), month);
    assert_eq!(zrevrange(&mut conn, &month_key).await, vec![(1, 5)]);
    assert_eq!(
        expiretime(&mut conn, &month_key).await,
        (expire_at_ms(&windows, month) / 1000) as i64
    );
    s.stop().await.unwrap();
}
