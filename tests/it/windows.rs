//! Windowed leaderboards (issue #32 feature 1): top gifters per creator and per stream,
//! and top creators, per UTC hour, day, ISO week and month. Rule tests at the windows'
//! edges (23:59:59.999 against 00:00, an ISO week across a year end, a month end),
//! retention (a window past it is refused and its memory dropped), a gift reversal
//! lowering the window its gift counted in, ties by who reached the total first, gifts
//! on videos, windows off, snapshot format 10 (and 9, read with no windows) with replay,
//! gift popularity (feature 6), and the HTTP routes on a real server.

use giftstream::config::engine::WindowsConfig;
use giftstream::economy::{EMBEDDED_ECONOMY_TOML, Economy};
use giftstream::engine::{
    CreatorId, Engine, EngineConfig, Event, EventId, GiftReversal, Outcome, Stamp, StreamId,
    TimeWindow, UserId, WindowError, WindowKind,
};
use serde_json::json;

use crate::support::server::{READ, TestServer, uuid};
use crate::support::*;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

fn windowed(kept: [u32; 4]) -> EngineConfig {
    EngineConfig {
        shards: 2,
        windows: WindowsConfig {
            enabled: true,
            hours: kept[0],
            days: kept[1],
            weeks: kept[2],
            months: kept[3],
        },
        ..EngineConfig::default()
    }
}

fn window(kind: WindowKind, at: &str) -> TimeWindow {
    TimeWindow::parse(kind, at).unwrap_or_else(|| panic!("{at}"))
}

/// The stamp of `YYYY-MM-DD` plus `ms`.
fn on(date: &str, ms: u64) -> Stamp {
    Stamp(window(WindowKind::Day, date).start_ms() + ms)
}

fn apply_all(engine: &Engine, events: &[Event], stamp: Stamp) {
    let outcomes = engine.apply_batch(events, stamp);
    assert!(outcomes.iter().all(Outcome::is_accepted), "{outcomes:?}");
}

/// Users 1..=6 with 7000 coins each.
fn funded(engine: &Engine, stamp: Stamp) {
    let events: Vec<Event> = (1..=6)
        .map(|u| recharge(1000 + u128::from(u), u, "coins_7000"))
        .collect();
    apply_all(engine, &events, stamp);
}

fn gifters(list: Result<Vec<(UserId, u128)>, WindowError>) -> Vec<(u64, u128)> {
    list.expect("readable")
        .into_iter()
        .map(|(u, c)| (u.0, c))
        .collect()
}

/// A day ends at 23:59:59.999 and the next begins at 00:00: a gift at each counts in
/// its own hour, day and month, and both in the one ISO week (Monday 30 November and
/// Tuesday 1 December 2026).
#[test]
fn a_gift_at_23_59_59_999_and_one_at_midnight_count_in_their_own_day_and_month() {
    let engine = Engine::new(economy(), windowed([48, 14, 8, 12])).unwrap();
    funded(&engine, on("2026-11-30", 0));
    let last_ms = on("2026-11-30", DAY - 1);
    apply_all(&engine, &[gift(1, 1, 7, "panda", 1)], last_ms);
    apply_all(&engine, &[gift(2, 2, 7, "rose", 3)], on("2026-12-01", 0));
    let c = CreatorId(7);
    let top = |w: TimeWindow| gifters(engine.creator_top_gifters_in(c, w, 10));
    assert_eq!(top(window(WindowKind::Day, "2026-11-30")), vec![(1, 5)]);
    assert_eq!(top(window(WindowKind::Day, "2026-12-01")), vec![(2, 3)]);
    assert_eq!(top(window(WindowKind::Hour, "2026-11-30T23")), vec![(1, 5)]);
    assert_eq!(top(window(WindowKind::Hour, "2026-12-01T00")), vec![(2, 3)]);
    assert_eq!(top(window(WindowKind::Month, "2026-11")), vec![(1, 5)]);
    assert_eq!(top(window(WindowKind::Month, "2026-12")), vec![(2, 3)]);
    assert_eq!(
        top(window(WindowKind::Week, "2026-W49")),
        vec![(1, 5), (2, 3)]
    );
    let stream = StreamId(9007);
    let day = window(WindowKind::Day, "2026-12-01");
    assert_eq!(
        gifters(engine.stream_top_gifters_in(stream, day, 10)),
        vec![(2, 3)]
    );
    let creators = engine.top_creators_in(window(WindowKind::Month, "2026-11"), 10);
    assert_eq!(creators.unwrap(), vec![(c, 5)]);
    // The current windows (the ledger's time) are December's.
    assert_eq!(engine.current_window(WindowKind::Day), day);
}

/// 2026-W53 runs from Monday 28 December 2026 to Sunday 3 January 2027: gifts on 31
/// December and 1 January are one week's; Monday 4 January starts 2027-W01.
#[test]
fn an_iso_week_across_a_year_end_is_one_window() {
    let engine = Engine::new(economy(), windowed([48, 14, 8, 12])).unwrap();
    funded(&engine, on("2026-12-31", 0));
    apply_all(
        &engine,
        &[gift(1, 1, 7, "rose", 2)],
        on("2026-12-31", DAY - 1),
    );
    apply_all(&engine, &[gift(2, 2, 7, "rose", 1)], on("2027-01-01", 0));
    apply_all(&engine, &[gift(3, 3, 7, "rose", 4)], on("2027-01-04", 0));
    let top = |at: &str| {
        gifters(engine.creator_top_gifters_in(CreatorId(7), window(WindowKind::Week, at), 10))
    };
    assert_eq!(top("2026-W53"), vec![(1, 2), (2, 1)]);
    assert_eq!(top("2027-W01"), vec![(3, 4)]);
    let month = |at: &str| {
        engine
            .creator_coins_in(CreatorId(7), window(WindowKind::Month, at))
            .unwrap()
    };
    assert_eq!((month("2026-12"), month("2027-01")), (2, 5));
}

/// A window is kept while it is among the newest of its kind at the ledger's time: a
/// day window with `days = 2` is refused (`Expired`) once a gift two days later is
/// applied, and the shards drop its totals (memory bounded by the retained windows).
#[test]
fn a_window_past_its_retention_is_refused_and_dropped() {
    let engine = Engine::new(economy(), windowed([0, 2, 0, 0])).unwrap();
    funded(&engine, on("2026-12-04", 0));
    apply_all(&engine, &[gift(1, 1, 7, "rose", 1)], on("2026-12-04", HOUR));
    let dec4 = window(WindowKind::Day, "2026-12-04");
    assert_eq!(engine.window_pairs(), 2, "one creator and one stream pair");
    apply_all(&engine, &[gift(2, 1, 7, "rose", 1)], on("2026-12-05", 0));
    assert_eq!(
        gifters(engine.creator_top_gifters_in(CreatorId(7), dec4, 10)),
        vec![(1, 1)],
        "kept: one day back"
    );
    assert_eq!(engine.window_pairs(), 4);
    apply_all(&engine, &[gift(3, 1, 7, "rose", 1)], on("2026-12-06", 0));
    assert_eq!(
        engine.creator_top_gifters_in(CreatorId(7), dec4, 10),
        Err(WindowError::Expired)
    );
    assert_eq!(engine.top_creators_in(dec4, 10), Err(WindowError::Expired));
    assert_eq!(engine.window_pairs(), 4, "4 December's pairs are dropped");
    // Hours are not kept at all here.
    let hour = engine.current_window(WindowKind::Hour);
    assert_eq!(
        engine.creator_top_gifters_in(CreatorId(7), hour, 10),
        Err(WindowError::Expired)
    );
    // A window not begun yet is empty.
    let later = window(WindowKind::Day, "2026-12-31");
    assert_eq!(
        gifters(engine.creator_top_gifters_in(CreatorId(7), later, 10)),
        vec![]
    );
}

/// Of two equal totals, the one reached first ranks first (not the lower id, as
/// all-time does); the order follows each new tie.
#[test]
fn ties_break_by_who_reached_the_total_first() {
    let engine = Engine::new(economy(), windowed([48, 14, 8, 12])).unwrap();
    funded(&engine, on("2026-12-04", 0));
    let at = on("2026-12-04", HOUR);
    // User 5 reaches 5 coins before user 3.
    apply_all(&engine, &[gift(1, 5, 7, "panda", 1)], at);
    apply_all(&engine, &[gift(2, 3, 7, "panda", 1)], at);
    let day = window(WindowKind::Day, "2026-12-04");
    let top = || gifters(engine.creator_top_gifters_in(CreatorId(7), day, 10));
    assert_eq!(top(), vec![(5, 5), (3, 5)]);
    let all_time: Vec<u64> = engine
        .creator_top_gifters(CreatorId(7), 10)
        .iter()
        .map(|e| e.0.0)
        .collect();
    assert_eq!(all_time, vec![3, 5], "all-time breaks ties by the lower id");
    // User 3 reaches 6 first, then user 5: 3 ranks first.
    apply_all(&engine, &[gift(3, 3, 7, "rose", 1)], at);
    apply_all(&engine, &[gift(4, 5, 7, "rose", 1)], at);
    assert_eq!(top(), vec![(3, 6), (5, 6)]);
    // In one batch, the event numbered first (the order applied: sender shard by
    // sender shard) reaches its total first.
    let o = engine.apply_batch(&[gift(5, 5, 7, "rose", 2), gift(6, 3, 7, "rose", 2)], at);
    let first = if o[0].seq < o[1].seq { 5 } else { 3 };
    assert_eq!(top(), vec![(first, 8), (8 - first, 8)]);
    // Top creators: creator 8 reaches 16 coins after creator 7 did.
    apply_all(&engine, &[gift(7, 4, 8, "rose", 16)], at);
    let creators = engine.top_creators_in(day, 10).unwrap();
    assert_eq!(creators, vec![(CreatorId(7), 16), (CreatorId(8), 16)]);
    // A limit cuts the list.
    assert_eq!(top().len(), 2);
    assert_eq!(
        gifters(engine.creator_top_gifters_in(CreatorId(7), day, 1)),
        vec![(5, 8)]
    );
}

fn held_economy() -> Economy {
    let text = EMBEDDED_ECONOMY_TOML.replacen(
        "max_gift_count = 9999",
        "max_gift_count = 9999\nearnings_hold_ms = 15000",
        1,
    );
    Economy::from_toml_str(&text).unwrap()
}

/// A gift reversal lowers the windows its gift counted in (its stamp's), not the
/// windows of the reversal's own stamp; a leader knocked out of a full list is
/// replaced (the list is rebuilt from the window's totals).
#[test]
fn a_reversal_lowers_the_window_its_gift_counted_in() {
    let config = EngineConfig {
        top_k: 2,
        ..windowed([48, 14, 8, 12])
    };
    let engine = Engine::new(held_economy(), config).unwrap();
    funded(&engine, on("2026-11-30", 0));
    let before = on("2026-11-30", DAY - 1);
    apply_all(
        &engine,
        &[
            gift(1, 1, 7, "panda", 2),
            gift(2, 2, 7, "panda", 1),
            gift(3, 3, 7, "rose", 2),
        ],
        before,
    );
    let after = on("2026-12-01", 5_000);
    apply_all(&engine, &[gift(4, 1, 7, "rose", 1)], after);
    let nov30 = window(WindowKind::Day, "2026-11-30");
    let dec1 = window(WindowKind::Day, "2026-12-01");
    // (Each shard keeps its top 2: a read asks for 2.)
    let top = |w| gifters(engine.creator_top_gifters_in(CreatorId(7), w, 2));
    assert_eq!(top(nov30), vec![(1, 10), (2, 5)]);
    let reversal = Event::GiftReversal(GiftReversal::new(EventId(5), UserId(1), EventId(1)));
    apply_all(&engine, &[reversal], after);
    assert_eq!(top(nov30), vec![(2, 5), (3, 2)], "user 3 comes in");
    assert_eq!(
        top(dec1),
        vec![(1, 1)],
        "the reversal's own day is untouched"
    );
    let stream = engine.stream_top_gifters_in(StreamId(9007), nov30, 2);
    assert_eq!(gifters(stream), vec![(2, 5), (3, 2)]);
    assert_eq!(engine.creator_coins_in(CreatorId(7), nov30), Ok(7));
    assert_eq!(engine.creator_coins_in(CreatorId(7), dec1), Ok(1));
    let week = window(WindowKind::Week, "2026-W49");
    assert_eq!(top(week), vec![(2, 5), (3, 2)], "user 1's 1 coin is after");
    assert!(engine.audit().is_clean());
}

/// Gift popularity (#32 feature 6): per gift, how many were sent in a window and their
/// coins, over every creator or one; a reversal takes its gift back from the window it
/// counted in.
#[test]
fn gift_popularity_counts_gifts_and_coins_per_window() {
    let engine = Engine::new(held_economy(), windowed([48, 14, 8, 12])).unwrap();
    funded(&engine, on("2026-12-04", 0));
    let at = on("2026-12-04", HOUR);
    apply_all(
        &engine,
        &[
            gift(1, 1, 7, "rose", 3),
            gift(2, 2, 7, "panda", 1),
            gift(3, 3, 8, "rose", 2),
            video_gift(4, 4, 8, 77, "panda", 2),
        ],
        at,
    );
    let day = window(WindowKind::Day, "2026-12-04");
    let stats = |of: Option<u64>| -> Vec<(u32, u64, u64)> {
        engine
            .gift_stats_in(day, of.map(CreatorId))
            .unwrap()
            .into_iter()
            .map(|(g, n)| (g.0, n.count, n.coins))
            .collect()
    };
    let (rose, panda) = (
        economy().gift_index("rose").unwrap(),
        economy().gift_index("panda").unwrap(),
    );
    // Five roses (5 coins), three pandas (15 coins): most sent first.
    assert_eq!(stats(None), vec![(rose, 5, 5), (panda, 3, 15)]);
    assert_eq!(stats(Some(7)), vec![(rose, 3, 3), (panda, 1, 5)]);
    assert_eq!(stats(Some(8)), vec![(panda, 2, 10), (rose, 2, 2)]);
    assert_eq!(stats(Some(9)), vec![]);
    // Reversed while held (15 s), after a later day began: the 4th's figures go down.
    let reversal = Event::GiftReversal(GiftReversal::new(EventId(6), UserId(4), EventId(4)));
    apply_all(&engine, &[reversal], on("2026-12-04", HOUR + 1_000));
    assert_eq!(stats(None), vec![(rose, 5, 5), (panda, 1, 5)]);
    assert_eq!(stats(Some(8)), vec![(rose, 2, 2)]);
    apply_all(&engine, &[gift(7, 2, 7, "rose", 9)], on("2026-12-05", 0));
    assert_eq!(
        stats(None),
        vec![(rose, 5, 5), (panda, 1, 5)],
        "the 5th is its own"
    );
    let month = engine
        .gift_stats_in(window(WindowKind::Month, "2026-12"), None)
        .unwrap();
    assert_eq!(month[0].1.count, 14, "the roses of both days");
    let dec5 = engine.gift_stats_in(window(WindowKind::Day, "2026-12-05"), None);
    assert_eq!(
        dec5.unwrap()[0].1,
        giftstream::engine::GiftCount { count: 9, coins: 9 }
    );
}

/// A gift on a video counts for its creator (every list of the creator and the top
/// creators), in no stream.
#[test]
fn a_gift_on_a_video_counts_for_its_creator() {
    let engine = Engine::new(economy(), windowed([48, 14, 8, 12])).unwrap();
    funded(&engine, on("2026-12-04", 0));
    apply_all(
        &engine,
        &[video_gift(1, 1, 7, 77, "panda", 1)],
        on("2026-12-04", 1),
    );
    let day = window(WindowKind::Day, "2026-12-04");
    assert_eq!(
        gifters(engine.creator_top_gifters_in(CreatorId(7), day, 10)),
        vec![(1, 5)]
    );
    assert_eq!(
        gifters(engine.stream_top_gifters_in(StreamId(9007), day, 10)),
        vec![]
    );
    assert_eq!(engine.top_creators_in(day, 10), Ok(vec![(CreatorId(7), 5)]));
}

/// Windows off (the default): reads are refused `Disabled` and gifts keep nothing.
#[test]
fn windows_off_keep_nothing_and_refuse_reads() {
    let engine = Engine::new(economy(), EngineConfig::default()).unwrap();
    funded(&engine, DEC);
    apply_all(&engine, &[gift(1, 1, 7, "panda", 1)], DEC);
    assert_eq!(engine.window_pairs(), 0);
    let day = engine.current_window(WindowKind::Day);
    assert_eq!(
        engine.creator_top_gifters_in(CreatorId(7), day, 10),
        Err(WindowError::Disabled)
    );
}

/// Snapshot format 10 holds the windows (and the gift records' hours, so a restored
/// ledger's reversal lowers the right window); a replay of the journal rebuilds them;
/// format 9 (the state less format 10's fields) reads with none.
#[test]
fn windows_survive_a_snapshot_and_a_replay_and_format_9_reads_without_them() {
    use giftstream::persist::snapshot;
    let config = windowed([48, 14, 8, 12]);
    let engine = Engine::new(held_economy(), config.clone()).unwrap();
    let t0 = on("2026-11-30", DAY - 1);
    funded(&engine, t0);
    apply_all(
        &engine,
        &[gift(1, 1, 7, "panda", 2), gift(2, 2, 8, "rose", 3)],
        t0,
    );
    apply_all(
        &engine,
        &[video_gift(3, 3, 7, 77, "rose", 1)],
        on("2026-12-01", 0),
    );
    let (state, log) = engine.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, 12);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(held_economy(), config.clone(), read).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    let replayed = Engine::new(held_economy(), config.clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
    let nov30 = window(WindowKind::Day, "2026-11-30");
    let reversal = Event::GiftReversal(GiftReversal::new(EventId(9), UserId(1), EventId(1)));
    for e in [&engine, &restored, &replayed] {
        apply_all(e, &[reversal], on("2026-12-01", 1_000));
        assert_eq!(e.top_creators_in(nov30, 10), Ok(vec![(CreatorId(8), 3)]));
    }
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());

    // Format 9: the state less the fields format 10 appended.
    let bytes = std::fs::read(&path).unwrap();
    let tail = giftstream::protocol::encode_serde(&state.view().format_10_tail())
        .unwrap()
        .len();
    let mut body = bytes[snapshot::HEADER_BYTES..bytes.len() - tail].to_vec();
    let mut v9 = bytes[..snapshot::HEADER_BYTES].to_vec();
    v9[8..12].copy_from_slice(&9u32.to_le_bytes());
    v9[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
    v9[56..60].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    v9.append(&mut body);
    let (header, old) = snapshot::parse(std::path::Path::new("v9.gsnap"), &v9).unwrap();
    assert_eq!(header.version, 9);
    let loaded = Engine::from_state(held_economy(), config, old).unwrap();
    assert_eq!(loaded.window_pairs(), 0);
    assert_eq!(
        gifters(loaded.creator_top_gifters_in(CreatorId(7), nov30, 10)),
        vec![]
    );
    assert_eq!(loaded.creator_top_gifters(CreatorId(7), 10).len(), 2);
}

/// The routes: `window` and `at` on the creator's and the stream's top gifters and the
/// top creators; the current window without `at`; 400 for a bad parameter, 404
/// `WINDOW_EXPIRED` past retention and `WINDOWS_DISABLED` when off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_leaderboards_over_http() {
    let s = TestServer::start_with(|c| {
        c.engine.windows.enabled = true;
        c.engine.windows.days = 2;
    })
    .await;
    let (st, body) = s
        .post_events(json!([
            {"type": "recharge", "event_id": uuid(1), "user": 42, "coins": 500,
             "price": "6.49", "currency": "USD", "package": "coins_500", "channel": "app"},
            {"type": "gift", "event_id": uuid(2), "sender": 42, "creator": 7,
             "stream": 9001, "gift": "panda", "count": 2},
        ]))
        .await;
    assert_eq!(st, 200, "{body}");
    let day = s.engine.current_window(WindowKind::Day).label();
    let (st, body) = s
        .get(
            &format!("/v1/creators/7/top-gifters?window=day&at={day}"),
            Some(READ),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["entries"], json!([{"user": 42, "coins": 10}]));
    assert_eq!(body["window"]["kind"], "day");
    assert_eq!(body["window"]["at"], day);
    let (st, body) = s
        .get("/v1/streams/9001/top-gifters?window=hour", Some(READ))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["entries"], json!([{"user": 42, "coins": 10}]));
    let (st, body) = s
        .get("/v1/leaderboards/creators?window=month&limit=5", Some(READ))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["entries"], json!([{"creator": 7, "coins": 10}]));
    // All-time, as before: diamonds, no window.
    let (st, body) = s.get("/v1/leaderboards/creators", Some(READ)).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.get("window").is_none(), "{body}");
    assert!(body["entries"][0]["diamonds"].is_u64(), "{body}");
    for bad in [
        "window=year",
        "window=day&at=2026-12-4",
        "window=week&at=2026-12-04",
        "at=2026-12-04",
        "window=day&at=2026-02-30",
    ] {
        let (st, body) = s
            .get(&format!("/v1/creators/7/top-gifters?{bad}"), Some(READ))
            .await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (400, Some("INVALID_PARAMETER")),
            "{bad}"
        );
    }
    let (st, body) = s.get("/v1/gifts/stats?window=day", Some(READ)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["gifts"],
        json!([{"gift": "panda", "count": 2, "coins": 10}])
    );
    let (st, body) = s
        .get(
            &format!("/v1/gifts/stats?window=day&at={day}&creator=8"),
            Some(READ),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (body["creator"].as_u64(), body["gifts"].clone()),
        (Some(8), json!([]))
    );
    let (st, body) = s.get("/v1/gifts/stats", Some(READ)).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (400, Some("INVALID_PARAMETER")),
        "{body}"
    );
    let (st, body) = s
        .get(
            "/v1/creators/7/top-gifters?window=day&at=2020-01-01",
            Some(READ),
        )
        .await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("WINDOW_EXPIRED")),
        "{body}"
    );
    s.stop().await.unwrap();

    let off = TestServer::start().await;
    let (st, body) = off
        .get("/v1/leaderboards/creators?window=day", Some(READ))
        .await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("WINDOWS_DISABLED")),
        "{body}"
    );
    off.stop().await.unwrap();
}
