//! PK battles (issue #32, feature 2): `PUT /v1/battles/{id}` records a battle of 2 to 4
//! streams over `[start_ms, end_ms)`; each side's score is the coins its stream received
//! from gifts numbered after the battle and stamped inside the window; a reversal of a
//! counted gift lowers it while the battle is open; the result is readable at
//! `GET /v1/battles/{id}` and announced in each side's live feed.
//!
//! Here: the rule table (streams, windows, overlap, reuse, retries, the bound), the
//! window's edges, reversals inside and after the window, replay and snapshots (format
//! 12, and 10 read as a state without battles), the HTTP routes and the SSE messages on
//! a real server, and a `kill -9` of the real binary mid-battle over Redis; then the
//! review findings: the close (B2: final from its number on; format 13, and 12 read
//! without closes), one `battle_end` per battle with traffic, idle and across a restart
//! past the end (B1, B8), a reused gift id (B3), a refused PUT sent again (B10) and a
//! client id equal to a derived one (B11).
//!
//! Size: one feature's tests sharing their helpers (the engine's rule table, the real
//! server's routes and its feed reader): split, the helpers would be copied.

use std::time::Duration;

use futures::StreamExt;
use giftstream::engine::{
    Battle, BattleClose, BattleId, Engine, EngineConfig, Event, EventId, GiftReversal, Outcome,
    RejectCode, Stamp, StreamId, UserId,
};
use giftstream::persist::snapshot;
use serde_json::{Value, json};

use crate::support::child::ServeProcess;
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, READ, SHIPPED_CONFIG, TestServer, uuid};
use crate::support::*;

const T0: u64 = 1_800_000_000_000;
/// Creator 7's stream and creator 8's (`support::gift` sends on 9000 + creator).
const A: u64 = 9007;
const B: u64 = 9008;

fn battle(id: u64, streams: &[u64], start_ms: u64, end_ms: u64) -> Event {
    let streams: Vec<StreamId> = streams.iter().map(|&s| StreamId(s)).collect();
    Event::Battle(Battle::new(BattleId(id), &streams, start_ms, end_ms).unwrap())
}

fn close(id: u64) -> Event {
    Event::BattleClose(BattleClose {
        battle: BattleId(id),
    })
}

fn apply(engine: &Engine, event: Event, at: u64) -> Outcome {
    engine.apply_batch(&[event], Stamp(at))[0]
}

fn code(o: Outcome) -> Option<RejectCode> {
    o.code()
}

fn funded(engine: &Engine) {
    for user in 1..=4u64 {
        let o = apply(engine, recharge(u128::from(user), user, "coins_1400"), T0);
        assert!(o.code().is_none());
    }
}

fn scores(engine: &Engine, id: u64) -> Vec<u128> {
    let view = engine.battle(BattleId(id), 10).unwrap();
    view.sides.iter().map(|s| s.coins).collect()
}

/// One row: a battle put at a stamp after `setup`, and the code it must get.
struct Case {
    name: &'static str,
    setup: Vec<(Event, u64)>,
    battle: Event,
    at: u64,
    expect: Option<RejectCode>,
}

#[test]
fn the_rule_table() {
    let minute = 60_000;
    let window = (T0 + minute, T0 + 5 * minute);
    let ok = || battle(1, &[A, B], window.0, window.1);
    let cases = vec![
        Case {
            name: "two streams, a future window",
            setup: vec![],
            battle: ok(),
            at: T0,
            expect: None,
        },
        Case {
            name: "four streams",
            setup: vec![],
            battle: battle(1, &[1, 2, 3, 4], window.0, window.1),
            at: T0,
            expect: None,
        },
        Case {
            name: "live already (started before it was recorded)",
            setup: vec![],
            battle: ok(),
            at: window.0 + 1,
            expect: None,
        },
        Case {
            name: "one stream",
            setup: vec![],
            battle: battle(1, &[A], window.0, window.1),
            at: T0,
            expect: Some(RejectCode::InvalidBattle),
        },
        Case {
            name: "a stream twice",
            setup: vec![],
            battle: battle(1, &[A, A], window.0, window.1),
            at: T0,
            expect: Some(RejectCode::InvalidBattle),
        },
        Case {
            name: "longer than 24 hours",
            setup: vec![],
            battle: battle(1, &[A, B], T0, T0 + 24 * 3_600_000 + 1),
            at: T0,
            expect: Some(RejectCode::InvalidBattle),
        },
        Case {
            name: "exactly 24 hours",
            setup: vec![],
            battle: battle(1, &[A, B], T0, T0 + 24 * 3_600_000),
            at: T0,
            expect: None,
        },
        Case {
            name: "over when recorded",
            setup: vec![],
            battle: ok(),
            at: window.1,
            expect: Some(RejectCode::InvalidBattle),
        },
        Case {
            name: "a stream in an overlapping battle",
            setup: vec![(battle(2, &[B, 5], window.1 - 1, window.1 + minute), T0)],
            battle: ok(),
            at: T0,
            expect: Some(RejectCode::StreamInBattle),
        },
        Case {
            name: "a stream in the battle just before (windows touch, no overlap)",
            setup: vec![(battle(2, &[B, 5], window.1, window.1 + minute), T0)],
            battle: ok(),
            at: T0,
            expect: None,
        },
        Case {
            name: "other streams, same window",
            setup: vec![(battle(2, &[5, 6], window.0, window.1), T0)],
            battle: ok(),
            at: T0,
            expect: None,
        },
        Case {
            name: "the id with another window (the id index remembers it: not recorded)",
            setup: vec![(battle(1, &[A, B], window.0, window.1 + 1), T0)],
            battle: ok(),
            at: T0,
            expect: Some(RejectCode::EventIdReused),
        },
        Case {
            name: "the id with other streams, after the id index forgot it (recorded)",
            setup: vec![(battle(1, &[A, 5], T0, T0 + 24 * 3_600_000), T0)],
            battle: battle(1, &[A, B], T0 + 3_600_000, T0 + 2 * 3_600_000),
            at: T0 + 3_600_000,
            expect: Some(RejectCode::BattleExists),
        },
    ];
    for case in cases {
        let engine = engine();
        for (event, at) in &case.setup {
            assert_eq!(
                code(apply(&engine, *event, *at)),
                None,
                "{}: setup",
                case.name
            );
        }
        let o = apply(&engine, case.battle, case.at);
        assert_eq!(code(o), case.expect, "{}", case.name);
        if case.expect.is_some() {
            // Nothing changed: the battle held is the setup's (or none).
            let held = engine.battle(BattleId(1), 10);
            let setup_1 = case.setup.iter().any(|(e, _)| e.id() == case.battle.id());
            assert_eq!(held.is_some(), setup_1, "{}", case.name);
        }
    }
}

/// A retry answers the original outcome and records nothing, within the retry horizon
/// (the id index) and after it (the battle held); the bound refuses a battle beyond
/// `engine.battles_max` until an ended one is past its retention.
#[test]
fn retries_are_idempotent_and_the_bound_holds() {
    let config = EngineConfig {
        battles_max: 2,
        battle_retention_ms: 3_600_000,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config).unwrap();
    let b1 = battle(1, &[A, B], T0, T0 + 60_000);
    let first = apply(&engine, b1, T0);
    assert_eq!(code(first), None);
    let again = apply(&engine, b1, T0 + 1);
    assert!(again.duplicate && again.seq == first.seq, "{again:?}");
    let much_later = apply(&engine, b1, T0 + 50_000);
    assert_eq!((much_later.seq, much_later.duplicate), (first.seq, true));
    let last = engine.last_seq();
    assert_eq!(
        code(apply(&engine, battle(2, &[5, 6], T0, T0 + 60_000), T0)),
        None
    );
    let full = apply(&engine, battle(3, &[7, 8], T0, T0 + 60_000), T0);
    assert_eq!(code(full), Some(RejectCode::BattlesFull));
    assert_eq!(
        engine.last_seq(),
        last + 2,
        "a refusal is a recorded outcome"
    );
    // Ended an hour ago (the retention): dropped when the next battle is recorded.
    let later = T0 + 60_000 + 3_600_000;
    let o = apply(&engine, battle(3, &[7, 8], later, later + 60_000), later);
    assert_eq!(code(o), None);
    assert!(engine.battle(BattleId(1), 10).is_none());
    assert_eq!(engine.battles_held(), 1);
}

/// A gift stamped at `end_ms - 1` counts, one at `end_ms` does not, nor one before
/// `start_ms`, nor one numbered before the battle; ties by who reached the total first.
#[test]
fn the_window_edges_and_the_result() {
    let engine = engine();
    funded(&engine);
    let (start, end) = (T0 + 1_000, T0 + 61_000);
    // Numbered before the battle, stamped inside its window: not counted.
    assert_eq!(code(apply(&engine, gift(10, 1, 7, "rose", 5), start)), None);
    assert_eq!(
        code(apply(&engine, battle(1, &[A, B], start, end), T0)),
        None
    );
    let sends = [
        (11, 1, 7, start - 1, 1), // before the window
        (12, 1, 7, start, 2),     // first ms: counts
        (13, 2, 7, end - 1, 3),   // last ms: counts
        (14, 3, 8, end, 100),     // end: does not
        (15, 3, 8, end - 1, 5),   // side B
    ];
    for (id, sender, creator, at, count) in sends {
        let o = apply(&engine, gift(id, sender, creator, "rose", count), at);
        assert_eq!(code(o), None);
    }
    let view = engine.battle(BattleId(1), 10).unwrap();
    assert_eq!(scores(&engine, 1), vec![5, 5]);
    assert_eq!(view.sides[0].gifts, 2);
    assert_eq!(
        view.sides[0].top_gifters,
        vec![(UserId(2), 3), (UserId(1), 2)]
    );
    assert_eq!(view.leader(), None, "a draw");
    assert_eq!(view.state_at(end - 1, u64::MAX).as_str(), "live");
    assert_eq!(
        view.state_at(end, u64::MAX).as_str(),
        "ending",
        "over, not closed"
    );
    assert_eq!(view.state_at(start - 1, u64::MAX).as_str(), "scheduled");
    let closed = apply(&engine, close(1), end);
    assert_eq!(code(closed), None);
    let view = engine.battle(BattleId(1), 10).unwrap();
    assert_eq!(view.closed_seq, Some(closed.seq));
    assert_eq!(
        view.state_at(end, closed.seq - 1).as_str(),
        "ending",
        "closed, not committed"
    );
    assert_eq!(view.state_at(end, closed.seq).as_str(), "ended");
    assert!(engine.audit().is_clean(), "{:?}", engine.audit().violations);
}

/// Under an earnings hold: a reversal of a counted gift stamped inside the window lowers
/// its side and its gifter; once the battle is closed (an event stamped at its end) a
/// reversal changes nothing; a reversal of a gift the battle did not count changes
/// nothing. Replayed and restored alike.
#[test]
fn a_reversal_inside_the_window_lowers_the_score_and_the_result_freezes() {
    let config = EngineConfig::default();
    let held = || held_economy(7 * 24 * 3_600_000);
    let engine = Engine::new(held(), config.clone()).unwrap();
    funded(&engine);
    let (start, end) = (T0 + 1_000, T0 + 61_000);
    assert_eq!(
        code(apply(&engine, battle(1, &[A, B], start, end), T0)),
        None
    );
    for (id, sender, creator, count, at) in [
        (20, 1, 7, 10, start),
        (21, 2, 7, 4, start + 1),
        (22, 3, 8, 12, start + 2),
        (23, 4, 8, 2, start + 3),
        (24, 1, 7, 50, T0), // before the window: not counted
    ] {
        assert_eq!(
            code(apply(&engine, gift(id, sender, creator, "rose", count), at)),
            None
        );
    }
    assert_eq!(scores(&engine, 1), vec![14, 14]);
    let reverse = |id: u128, sender: u64, gift: u128| {
        Event::GiftReversal(GiftReversal::new(
            EventId(id),
            UserId(sender),
            EventId(gift),
        ))
    };
    // Live: user 1's 10 coins come off side A, which now trails.
    assert_eq!(code(apply(&engine, reverse(30, 1, 20), start + 10)), None);
    assert_eq!(scores(&engine, 1), vec![4, 14]);
    let view = engine.battle(BattleId(1), 10).unwrap();
    assert_eq!(view.sides[0].top_gifters, vec![(UserId(2), 4)]);
    assert_eq!(view.leader(), Some(StreamId(B)));
    // Not counted by the battle: nothing.
    assert_eq!(code(apply(&engine, reverse(31, 1, 24), start + 11)), None);
    assert_eq!(scores(&engine, 1), vec![4, 14]);
    // Ended: a reversal stamped at the end freezes it.
    assert_eq!(code(apply(&engine, reverse(32, 3, 22), end)), None);
    assert_eq!(scores(&engine, 1), vec![4, 14], "the result is frozen");
    assert!(engine.audit().is_clean(), "{:?}", engine.audit().violations);

    // Replay and snapshot give the same battle.
    let (state, log) = engine.snapshot();
    let replayed = Engine::new(held(), config.clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(held(), config.clone(), read).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    assert_eq!(
        restored.battle(BattleId(1), 10),
        engine.battle(BattleId(1), 10)
    );

    // Format 11: the state less the battles (format 12 appended them).
    let bytes = std::fs::read(&path).unwrap();
    let tail = giftstream::protocol::encode_serde(&state.view().format_12_tail())
        .unwrap()
        .len();
    let mut body = bytes[snapshot::HEADER_BYTES..bytes.len() - tail].to_vec();
    let mut v11 = bytes[..snapshot::HEADER_BYTES].to_vec();
    v11[8..12].copy_from_slice(&11u32.to_le_bytes());
    v11[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
    v11[56..60].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    v11.append(&mut body);
    let (header, old) = snapshot::parse(std::path::Path::new("v11.gsnap"), &v11).unwrap();
    assert_eq!(header.version, 11);
    let loaded = Engine::from_state(held(), config, old).unwrap();
    assert!(loaded.battle(BattleId(1), 10).is_none());
    assert_eq!(loaded.battles_held(), 0);
}

/// A gift numbered after the battle counts even when another shard's gifts race it:
/// the live engine (four threads) and a replay of its log agree on every score.
#[test]
fn concurrent_gifts_count_as_a_replay_counts_them() {
    let engine = std::sync::Arc::new(engine());
    for user in 1..=64u64 {
        apply(&engine, recharge(u128::from(user), user, "coins_1400"), T0);
    }
    let (start, end) = (T0, T0 + 10_000);
    assert_eq!(
        code(apply(&engine, battle(1, &[A, B], start, end), T0)),
        None
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let sender = 1 + (t * 16 + i % 16);
                    let id = u128::from(1_000 + t * 1_000 + i);
                    let at = T0 + i * 60; // the last ones after the end
                    let g = gift(id, sender, 7 + i % 2, "rose", 1 + (i % 3) as u32);
                    engine.apply_batch(&[g], Stamp(at));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let log = engine.drain_log();
    let replayed = Engine::new(economy(), EngineConfig::default()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(scores(&replayed, 1), scores(&engine, 1));
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
    // Independently: the coins of the accepted gifts stamped in the window, after it.
    let mut expected = [0u128; 2];
    let battle_seq = engine.battle(BattleId(1), 0).unwrap().seq;
    for e in &log {
        if let (Event::Gift(g), None) = (&e.event, e.outcome.code())
            && e.seq > battle_seq
            && (start..end).contains(&e.stamp.0)
        {
            expected[usize::from(g.stream.0 == B)] += u128::from(g.count);
        }
    }
    assert_eq!(scores(&engine, 1), expected.to_vec());
    assert!(expected[0] > 0 && expected[1] > 0);
}

// ---- a real server ---------------------------------------------------------------

async fn put(s: &TestServer, id: u64, body: Value) -> (u16, Value) {
    s.send(
        "PUT",
        &format!("/v1/battles/{id}"),
        Some(INGEST),
        body.to_string(),
    )
    .await
}

fn rose(n: u128, sender: u64, stream: u64, count: u32) -> Value {
    json!({"type": "gift", "event_id": uuid(n), "sender": sender, "creator": stream - 9000,
           "stream": stream, "gift": "rose", "count": count})
}

/// The routes' rules: 400 for a body breaking them (nothing recorded), 409 for a
/// conflict, the same body again answers the battle; a cluster-free node serves GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_answer_each_rule() {
    let s = TestServer::start().await;
    let now = giftstream::clock::now().0;
    let (start, end) = (now + 60_000, now + 120_000);
    let body = json!({"streams": [A, B], "start_ms": start, "end_ms": end});
    let (st, b) = put(&s, 1, body.clone()).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["state"], "scheduled");
    assert_eq!(b["streams"], json!([A, B]));
    let seq = b["seq"].as_u64().unwrap();
    let (st, again) = put(&s, 1, body.clone()).await;
    assert_eq!((st, again["seq"].as_u64()), (200, Some(seq)), "{again}");
    for (bad, why) in [
        (
            json!({"streams": [A], "start_ms": start, "end_ms": end}),
            "one stream",
        ),
        (
            json!({"streams": [A, B, 1, 2, 3], "start_ms": start, "end_ms": end}),
            "five streams",
        ),
        (
            json!({"streams": [A, A], "start_ms": start, "end_ms": end}),
            "twice",
        ),
        (
            json!({"streams": [A, B], "start_ms": end, "end_ms": start}),
            "backwards",
        ),
        (
            json!({"streams": [A, B], "start_ms": start, "end_ms": start + 86_400_001}),
            "too long",
        ),
    ] {
        let (st, e) = put(&s, 2, bad).await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (400, Some("INVALID_BATTLE")),
            "{why}: {e}"
        );
    }
    let (st, e) = put(
        &s,
        2,
        json!({"streams": [B, 3], "start_ms": start + 1, "end_ms": end + 1}),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("STREAM_IN_BATTLE")),
        "{e}"
    );
    // Review B10: the refused PUT again, same body: its refusal again (not
    // BATTLE_EXISTS; GET says 404).
    let (st, e) = put(
        &s,
        2,
        json!({"streams": [B, 3], "start_ms": start + 1, "end_ms": end + 1}),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("STREAM_IN_BATTLE")),
        "{e}"
    );
    let (st, e) = put(
        &s,
        1,
        json!({"streams": [A, 3], "start_ms": start, "end_ms": end}),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("BATTLE_EXISTS")),
        "{e}"
    );
    let (st, e) = put(
        &s,
        3,
        json!({"streams": [5, 6], "start_ms": now - 2, "end_ms": now - 1}),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (422, Some("INVALID_BATTLE")),
        "{e}"
    );
    let (st, e) = s.get("/v1/battles/2", Some(READ)).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (404, Some("BATTLE_NOT_FOUND")),
        "{e}"
    );
    let (st, got) = s.get("/v1/battles/1", Some(READ)).await;
    assert_eq!(st, 200);
    assert_eq!(got["sides"][0]["coins"], 0);
    assert_eq!(
        (got["winner"].clone(), got["draw"].clone()),
        (Value::Null, json!(false))
    );
    let (st, _) = s.get("/v1/battles/1", None).await;
    assert_eq!(st, 401);
}

/// One parsed SSE message: (id, event, data).
async fn next_message(
    body: &mut std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    text: &mut String,
) -> (Option<String>, String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            if event.is_empty() {
                continue;
            }
            return (id, event, data);
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("a feed message in time")
            .expect("the feed stays open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Every feed message that arrives within `for_ms`.
async fn messages_for(
    body: &mut std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    text: &mut String,
    for_ms: u64,
) -> Vec<(Option<String>, String, Value)> {
    let mut got = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    while let Ok(m) = tokio::time::timeout_at(until, next_message(body, text)).await {
        got.push(m);
    }
    got
}

fn battle_ends(messages: &[(Option<String>, String, Value)]) -> usize {
    messages.iter().filter(|m| m.1 == "battle_end").count()
}

/// The live feed of a battling stream: `battle` with both scores after each run that
/// moved them (id `<seq>.3`), then `battle_end` once with the result (id `<seq>.4`),
/// kept for a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battle_messages_on_the_wire() {
    let s = TestServer::start().await;
    let (st, body) = s
        .post_events(json!([
            {"type": "recharge", "event_id": uuid(1), "user": 42, "coins": 500, "price": "6.49",
             "currency": "USD", "package": "coins_500", "channel": "app"},
            {"type": "recharge", "event_id": uuid(2), "user": 43, "coins": 500, "price": "6.49",
             "currency": "USD", "package": "coins_500", "channel": "app"}
        ]))
        .await;
    assert_eq!(st, 200, "{body}");
    let now = giftstream::clock::now().0;
    let end = now + 2_500;
    let (st, b) = put(
        &s,
        5,
        json!({"streams": [A, B], "start_ms": now, "end_ms": end}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let resp = s
        .http_client
        .get(s.url(&format!("/v1/streams/{A}/feed")))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> =
        Box::pin(resp.bytes_stream());
    let mut text = String::new();
    let (_, first, _) = next_message(&mut body, &mut text).await;
    assert_eq!(first, "goal");
    let (st, out) = s
        .post_events(json!([rose(10, 42, A, 3), rose(11, 43, B, 5)]))
        .await;
    assert_eq!(st, 200, "{out}");
    let seq_b = out["outcomes"][1]["seq"].as_u64().unwrap();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(_, e, _): &(Option<String>, String, Value)| e == "battle")
    {
        seen.push(next_message(&mut body, &mut text).await);
    }
    let (id, _, data) = seen.last().unwrap().clone();
    assert_eq!(
        id.as_deref(),
        Some(format!("{seq_b}.3").as_str()),
        "{seen:?}"
    );
    assert_eq!(
        data["sides"],
        json!([{"stream": A, "coins": 3}, {"stream": B, "coins": 5}])
    );
    assert_eq!(data["leader"], json!(B));
    // Traffic over the end (review B1: battle_end went out 2-5 times): a one-coin gift
    // to side A every 50 ms from 300 ms before the end to 700 ms after it.
    let mut n = 100u128;
    while giftstream::clock::now().0 < end - 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while giftstream::clock::now().0 < end + 700 {
        let (st, _) = s.post_events(json!([rose(n, 42, A, 1)])).await;
        assert_eq!(st, 200);
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = messages_for(&mut body, &mut text, 1_500).await;
    let ends: Vec<_> = seen
        .iter()
        .filter(|m| m.1 == "battle_end")
        .cloned()
        .collect();
    assert_eq!(ends.len(), 1, "battle_end once with traffic: {seen:?}");
    let (id, _, data) = ends[0].clone();
    let id = id.unwrap();
    // After the close, no battle message for this battle.
    let at = seen.iter().position(|m| m.1 == "battle_end").unwrap();
    assert!(
        seen.drain(at..).all(|m| m.1 != "battle"),
        "no scores after the end"
    );
    let (_, got) = s.get("/v1/battles/5", Some(READ)).await;
    assert_eq!(got["state"], "ended", "{got}");
    assert_eq!(id, format!("{}.4", got["closed_seq"]), "{got}");
    // The result on the wire is the result read: frozen at the close.
    assert_eq!(
        data["sides"],
        json!([{"stream": A, "coins": got["sides"][0]["coins"]},
                                     {"stream": B, "coins": 5}])
    );
    let winner = if got["sides"][0]["coins"].as_u64() > Some(5) {
        json!(A)
    } else {
        json!(B)
    };
    let draw = got["sides"][0]["coins"] == 5;
    assert_eq!(
        (data["winner"].clone(), data["draw"].clone()),
        (if draw { Value::Null } else { winner.clone() }, json!(draw))
    );
    // Gifts after the end do not count.
    let (st, _) = s.post_events(json!([rose(12, 42, A, 9)])).await;
    assert_eq!(st, 200);
    let (_, after) = s.get("/v1/battles/5", Some(READ)).await;
    assert_eq!(after["sides"], got["sides"]);
    assert_eq!(after["winner"], got["winner"]);
    assert_eq!(
        got["sides"][1]["top_gifters"],
        json!([{"user": 43, "coins": 5}])
    );
    // An idle battle (no gift at all): one battle_end, no more.
    let now = giftstream::clock::now().0;
    let (st, b) = put(
        &s,
        6,
        json!({"streams": [A, B], "start_ms": now, "end_ms": now + 500}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let idle = messages_for(&mut body, &mut text, 2_500).await;
    assert_eq!(
        battle_ends(&idle),
        1,
        "battle_end once while idle: {idle:?}"
    );
    // A reconnect from before the close gets the battle_end again (kept), once.
    let closed_seq = got["closed_seq"].as_u64().unwrap();
    let resp = s
        .http_client
        .get(s.url(&format!("/v1/streams/{A}/feed")))
        .bearer_auth(READ)
        .header("Last-Event-ID", format!("{}.4", closed_seq - 1))
        .send()
        .await
        .unwrap();
    let mut body: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> =
        Box::pin(resp.bytes_stream());
    let mut text = String::new();
    let (again, event, _) = next_message(&mut body, &mut text).await;
    assert_eq!(
        (again.as_deref(), event.as_str()),
        (Some(id.as_str()), "battle_end")
    );
    let rest = messages_for(&mut body, &mut text, 500).await;
    assert_eq!(battle_ends(&rest), 1, "the idle battle's, once: {rest:?}");
}

/// A battle survives `kill -9` of the real binary mid-battle (durable acks, journal
/// replay): its scores and, after the end, its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battle_survives_kill_9_mid_battle() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("giftstream.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let redis = RedisServer::start();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let http = reqwest::Client::new();
    let req = |m: reqwest::Method, addr: &str, path: &str, token: &str, body: Option<Value>| {
        let mut r = http
            .request(m, format!("http://{addr}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let funding: Vec<Value> = (1..=4u64)
        .map(|u| {
            json!({"type": "recharge", "event_id": uuid(u128::from(u)), "user": u,
                   "coins": 1400, "price": "17.99", "currency": "USD", "package": "coins_1400"})
        })
        .collect();
    let events = json!({ "events": funding });
    let (st, _) = req(
        reqwest::Method::POST,
        &server.http,
        "/v1/events",
        INGEST,
        Some(events),
    )
    .await;
    assert_eq!(st, 200);
    let now = giftstream::clock::now().0;
    let end = now + 4_000;
    let battle = json!({"streams": [A, B], "start_ms": now, "end_ms": end});
    let (st, b) = req(
        reqwest::Method::PUT,
        &server.http,
        "/v1/battles/9",
        INGEST,
        Some(battle.clone()),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let mut expected = [0u64; 2];
    for i in 0..20u128 {
        let (sender, stream) = (1 + (i % 4) as u64, if i % 3 == 0 { B } else { A });
        let events = json!({ "events": [rose(100 + i, sender, stream, 1 + (i % 2) as u32)] });
        let (st, out) = req(
            reqwest::Method::POST,
            &server.http,
            "/v1/events",
            INGEST,
            Some(events),
        )
        .await;
        assert_eq!(st, 200);
        if out["outcomes"][0]["status"] == "accepted" {
            expected[usize::from(stream == B)] += 1 + (i % 2) as u64;
        }
    }
    assert!(
        giftstream::clock::now().0 < end,
        "the gifts were sent inside the window"
    );
    server.kill9();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let (st, got) = req(
        reqwest::Method::GET,
        &server.http,
        "/v1/battles/9",
        READ,
        None,
    )
    .await;
    assert_eq!(st, 200, "{got}");
    let coins = |v: &Value| {
        [
            v["sides"][0]["coins"].as_u64(),
            v["sides"][1]["coins"].as_u64(),
        ]
    };
    assert_eq!(coins(&got), [Some(expected[0]), Some(expected[1])], "{got}");
    // The same PUT again after the restart: the battle as recorded.
    let (st, again) = req(
        reqwest::Method::PUT,
        &server.http,
        "/v1/battles/9",
        INGEST,
        Some(battle),
    )
    .await;
    assert_eq!(
        (st, again["seq"].clone()),
        (200, b["seq"].clone()),
        "{again}"
    );
    let wait = end.saturating_sub(giftstream::clock::now().0) + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    // Over: `ending` until the service's close is committed (a look every 250 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let got = loop {
        let (_, got) = req(
            reqwest::Method::GET,
            &server.http,
            "/v1/battles/9",
            READ,
            None,
        )
        .await;
        if got["state"] == "ended" || tokio::time::Instant::now() > deadline {
            break got;
        }
        assert_eq!(got["state"], "ending", "{got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got["state"], "ended", "{got}");
    let winner = match expected[0].cmp(&expected[1]) {
        std::cmp::Ordering::Greater => json!(A),
        std::cmp::Ordering::Less => json!(B),
        std::cmp::Ordering::Equal => Value::Null,
    };
    assert_eq!(got["winner"], winner, "{got}");
    // And once more after a second kill: the ended battle's result is the same.
    server.kill9();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let (_, after) = req(
        reqwest::Method::GET,
        &server.http,
        "/v1/battles/9",
        READ,
        None,
    )
    .await;
    assert_eq!(
        (after["winner"].clone(), coins(&after)),
        (winner, coins(&got))
    );
    server.stop();
}

fn reverse(id: u128, sender: u64, gift: u128) -> Event {
    Event::GiftReversal(GiftReversal::new(
        EventId(id),
        UserId(sender),
        EventId(gift),
    ))
}

/// Review B2: a batch is stamped before it is numbered, so a gift stamped `end_ms - 1`
/// may be numbered after the battle was announced over. The close event fixes the
/// result: it is refused before the end (`BATTLE_NOT_ENDED`, recorded: no one ends a
/// battle early), accepted once at or after it (a second close answers the first);
/// after it no gift counts, whatever its stamp, and no reversal lowers the battle.
/// Replayed, restored (snapshot format 13) and read as format 12 (no closes) alike.
#[test]
fn b2_after_the_close_no_gift_counts_and_no_reversal_lowers() {
    let config = EngineConfig::default();
    let held = || held_economy(7 * 24 * 3_600_000);
    let engine = Engine::new(held(), config.clone()).unwrap();
    funded(&engine);
    let (start, end) = (T0 + 1_000, T0 + 61_000);
    assert_eq!(
        code(apply(&engine, battle(1, &[A, B], start, end), T0)),
        None
    );
    assert_eq!(
        code(apply(&engine, gift(20, 1, 7, "rose", 10), start)),
        None
    );
    assert_eq!(
        code(apply(&engine, gift(21, 2, 8, "rose", 4), end - 1)),
        None
    );
    // Early: refused, recorded (a number, journaled), the battle goes on.
    let last = engine.last_seq();
    let early = apply(&engine, close(1), end - 1);
    assert_eq!(code(early), Some(RejectCode::BattleNotEnded));
    assert_eq!((early.seq, early.duplicate), (last + 1, false));
    assert_eq!(engine.battle(BattleId(1), 10).unwrap().closed_seq, None);
    assert_eq!(engine.battles_to_close(end - 1), Vec::<BattleId>::new());
    assert_eq!(engine.battles_to_close(end), vec![BattleId(1)]);
    assert_eq!(
        code(apply(&engine, close(2), end)),
        Some(RejectCode::BattleNotFound)
    );
    // A gift stamped before the end, numbered before the close: counts.
    assert_eq!(
        code(apply(&engine, gift(22, 3, 8, "rose", 3), end - 1)),
        None
    );
    assert_eq!(scores(&engine, 1), vec![10, 7]);
    let closed = apply(&engine, close(1), end + 5);
    assert_eq!(code(closed), None);
    assert!(engine.battles_to_close(u64::MAX).is_empty());
    let again = apply(&engine, close(1), end + 9);
    assert_eq!((again.seq, again.duplicate), (closed.seq, true));
    // Numbered after the close, stamped inside the window (a batch stamped before the
    // end and applied after the close): not counted.
    assert_eq!(
        code(apply(&engine, gift(23, 4, 7, "rose", 50), end - 1)),
        None
    );
    assert_eq!(scores(&engine, 1), vec![10, 7], "frozen: no gift counts");
    // A reversal of a counted gift, numbered after the close: accepted, not lowering.
    assert_eq!(code(apply(&engine, reverse(30, 1, 20), end - 1)), None);
    assert_eq!(
        scores(&engine, 1),
        vec![10, 7],
        "frozen: no reversal lowers"
    );
    assert!(engine.audit().is_clean(), "{:?}", engine.audit().violations);

    let (state, log) = engine.snapshot();
    let replayed = Engine::new(held(), config.clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    assert_eq!(snapshot::VERSION, 13);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(held(), config.clone(), read).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    assert_eq!(
        restored.battle(BattleId(1), 10).unwrap().closed_seq,
        Some(closed.seq)
    );
    // Format 12: the state less the closes (format 13 appended them).
    let bytes = std::fs::read(&path).unwrap();
    let tail = giftstream::protocol::encode_serde(&state.view().format_13_tail())
        .unwrap()
        .len();
    let mut body = bytes[snapshot::HEADER_BYTES..bytes.len() - tail].to_vec();
    let mut v12 = bytes[..snapshot::HEADER_BYTES].to_vec();
    v12[8..12].copy_from_slice(&12u32.to_le_bytes());
    v12[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
    v12[56..60].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    v12.append(&mut body);
    let (header, old) = snapshot::parse(std::path::Path::new("v12.gsnap"), &v12).unwrap();
    assert_eq!(header.version, 12);
    let loaded = Engine::from_state(held(), config, old).unwrap();
    let view = loaded.battle(BattleId(1), 10).unwrap();
    assert_eq!((view.closed_seq, scores(&loaded, 1)), (None, vec![10, 7]));
    assert_eq!(
        loaded.battles_to_close(end),
        vec![BattleId(1)],
        "closed again"
    );
}

/// Review B3: a sender reusing its own gift id past the retry horizon, during a long
/// battle, under an earnings hold. A reversal naming the id reverses the first gift
/// (its record is the one kept): the battle is lowered by exactly that gift — not by
/// the second gift's coins, and not at all when the first was not counted.
#[test]
fn b3_a_reused_gift_id_lowers_the_battle_by_the_gift_reversed() {
    let config = EngineConfig {
        idempotency_horizon_ms: 60_000,
        ..EngineConfig::default()
    };
    let held = || held_economy(7 * 24 * 3_600_000);
    let engine = Engine::new(held(), config.clone()).unwrap();
    funded(&engine);
    let hour = 3_600_000;
    let (start, end) = (T0 + hour, T0 + 5 * hour);
    assert_eq!(
        code(apply(&engine, battle(1, &[A, B], start, end), T0)),
        None
    );
    // Id 40: first before the window (not counted), then reused inside it (counted).
    assert_eq!(code(apply(&engine, gift(40, 1, 7, "rose", 10), T0)), None);
    assert_eq!(
        code(apply(&engine, gift(40, 1, 7, "rose", 50), start)),
        None
    );
    // Id 41: counted twice (10 coins, then 3 past the horizon).
    assert_eq!(
        code(apply(&engine, gift(41, 2, 8, "rose", 10), start + 1)),
        None
    );
    let later = start + 2 * 60_000;
    assert_eq!(code(apply(&engine, gift(41, 2, 8, "rose", 3), later)), None);
    assert_eq!(scores(&engine, 1), vec![50, 13]);
    // Reversing 40 reverses the first (10 coins, never counted): the battle stays.
    let r = apply(&engine, reverse(50, 1, 40), later + 1);
    assert_eq!(code(r), None);
    assert_eq!(scores(&engine, 1), vec![50, 13], "not the second gift's 50");
    // Reversing 41 reverses the first (10 coins, counted): side B loses 10, not 3.
    assert_eq!(code(apply(&engine, reverse(51, 2, 41), later + 2)), None);
    assert_eq!(scores(&engine, 1), vec![50, 3]);
    let view = engine.battle(BattleId(1), 10).unwrap();
    assert_eq!(view.sides[1].top_gifters, vec![(UserId(2), 3)]);
    assert!(engine.audit().is_clean(), "{:?}", engine.audit().violations);
    let (_, log) = engine.snapshot();
    let replayed = Engine::new(held(), config).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

/// Review B10: a PUT whose battle was refused (`STREAM_IN_BATTLE`), sent again with the
/// same content, answers the original refusal (within the retry horizon the id index
/// has it), not `BATTLE_EXISTS`.
#[test]
fn b10_a_refused_battle_sent_again_answers_its_refusal() {
    let engine = engine();
    let w = (T0 + 60_000, T0 + 120_000);
    assert_eq!(code(apply(&engine, battle(1, &[A, B], w.0, w.1), T0)), None);
    let refused = apply(&engine, battle(2, &[B, 3], w.0, w.1), T0);
    assert_eq!(code(refused), Some(RejectCode::StreamInBattle));
    let again = apply(&engine, battle(2, &[B, 3], w.0, w.1), T0 + 1);
    assert_eq!(code(again), Some(RejectCode::StreamInBattle), "{again:?}");
    assert_eq!((again.seq, again.duplicate), (refused.seq, true));
    assert!(engine.battle(BattleId(2), 10).is_none());
}

/// Review B11: a client event carrying a battle's derived event id (or its close's)
/// does not squat the battle: the PUT and the close are judged as if it were not there,
/// and the client event is judged as any other.
#[test]
fn b11_a_client_id_equal_to_a_derived_id_blocks_nothing() {
    let engine = engine();
    funded(&engine);
    let (start, end) = (T0 + 1_000, T0 + 61_000);
    let squat = |id: EventId, n: u32| match gift(0, 1, 7, "rose", n) {
        Event::Gift(g) => Event::Gift(giftstream::engine::Gift { id, ..g }),
        _ => unreachable!(),
    };
    let battle_id = Battle::event_id(BattleId(5));
    let close_id = BattleClose::event_id(BattleId(5));
    assert_eq!(code(apply(&engine, squat(battle_id, 1), T0)), None);
    assert_eq!(code(apply(&engine, squat(close_id, 1), T0)), None);
    let put = apply(&engine, battle(5, &[A, B], start, end), T0 + 1);
    assert_eq!(code(put), None, "{put:?}");
    assert!(!put.duplicate);
    // The other way round: the battle first, then a client event with its id.
    assert_eq!(
        code(apply(&engine, battle(6, &[5, 6], start, end), T0)),
        None
    );
    let late = apply(&engine, squat(Battle::event_id(BattleId(6)), 2), T0 + 2);
    assert_eq!(code(late), None, "{late:?}");
    // Retries of each are still answered as themselves.
    let retry = apply(&engine, squat(battle_id, 1), T0 + 3);
    assert!(retry.duplicate && code(retry).is_none(), "{retry:?}");
    let again = apply(&engine, battle(5, &[A, B], start, end), T0 + 3);
    assert_eq!((again.seq, again.duplicate), (put.seq, true));
    assert_eq!(code(apply(&engine, close(5), end)), None);
    assert!(engine.audit().is_clean(), "{:?}", engine.audit().violations);
}

/// Reviews B1/B8: a battle that ends while the process is down gets its close at the
/// next start, and its `battle_end` once: a client reconnecting with the last id it saw
/// before the `kill -9` gets exactly one (kept for the reconnect even when it comes
/// after the close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b8_battle_end_once_after_a_restart_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("giftstream.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let redis = RedisServer::start();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let http = reqwest::Client::new();
    let url = |addr: &str, path: &str| format!("http://{addr}{path}");
    let events = json!({"events": [
        {"type": "recharge", "event_id": uuid(1), "user": 1, "coins": 1400, "price": "17.99",
         "currency": "USD", "package": "coins_1400"},
    ]});
    let resp = http
        .post(url(&server.http, "/v1/events"))
        .bearer_auth(INGEST)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let now = giftstream::clock::now().0;
    let end = now + 1_500;
    let resp = http
        .put(url(&server.http, "/v1/battles/3"))
        .bearer_auth(INGEST)
        .json(&json!({"streams": [A, B], "start_ms": now, "end_ms": end}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let feed = http
        .get(url(&server.http, &format!("/v1/streams/{A}/feed")))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let mut body: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> =
        Box::pin(feed.bytes_stream());
    let mut text = String::new();
    assert_eq!(next_message(&mut body, &mut text).await.1, "goal");
    let gift = json!({"events": [rose(10, 1, A, 7)]});
    let resp = http
        .post(url(&server.http, "/v1/events"))
        .bearer_auth(INGEST)
        .json(&gift)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut last = None;
    loop {
        let (id, event, _) = next_message(&mut body, &mut text).await;
        last = id.or(last);
        if event == "battle" {
            break;
        }
    }
    let last = last.unwrap();
    assert!(giftstream::clock::now().0 < end, "killed before the end");
    drop(body);
    server.kill9();
    // Down over the end.
    let wait = end.saturating_sub(giftstream::clock::now().0) + 300;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let feed = http
        .get(url(&server.http, &format!("/v1/streams/{A}/feed")))
        .bearer_auth(READ)
        .header("Last-Event-ID", last.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let mut body: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> =
        Box::pin(feed.bytes_stream());
    let mut text = String::new();
    let seen = messages_for(&mut body, &mut text, 2_000).await;
    assert_eq!(battle_ends(&seen), 1, "after {last}: {seen:?}");
    assert!(seen.iter().all(|m| m.1 != "reset"), "{seen:?}");
    let end_msg = seen.iter().find(|m| m.1 == "battle_end").unwrap();
    assert_eq!(end_msg.2["winner"], json!(A));
    let got: Value = http
        .get(url(&server.http, "/v1/battles/3"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "ended", "{got}");
    assert_eq!(
        end_msg.0.as_deref(),
        Some(format!("{}.4", got["closed_seq"]).as_str())
    );
    server.stop();
}
