//! Gift reversals (issue #31 feature 3): a `gift_reversal` gives the sender the coins
//! back and takes the diamonds that gift credited from the creator, exactly, while they
//! are held. Rule table at the release time's edges, top-K lists after a leader is
//! knocked out (against a brute-force ranking), reversals racing payouts, journal
//! replay and snapshot + replay, format 7 and 8 states, and a real server over Redis with
//! both protocols and `kill -9`. A gift on a video is reversed like a stream's (its
//! video's coins, counts and top gifters instead of a stream's); an id reused past the
//! retry horizon keeps the first gift's record (review F6); a refund's history line is
//! what reached the balance (review F3).

use std::sync::Arc;

use giftstream::client::Client;

use giftstream::engine::{
    CreatorId, Effect, Engine, EngineConfig, EngineState, EngineStateV7, Event, EventId,
    GiftReversal, LogEntry, Outcome, RejectCode, Stamp, Status, StreamId, UserId,
};
use giftstream::persist::redis::JournalBatch;
use rust_decimal::Decimal;
use serde_json::json;

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, SHIPPED_CONFIG, uuid};
use crate::support::*;

/// 15 s: a grid of 1 s, so release times are exact at NOV + whole seconds.
const HOLD: u64 = 15_000;

fn held_engine(hold_ms: u64, config: EngineConfig) -> Engine {
    Engine::new(held_economy(hold_ms), config).unwrap()
}

/// `ms` after NOV.
fn at(ms: u64) -> Stamp {
    Stamp(NOV.0 + ms)
}

fn reversal(id: u128, sender: u64, gift: u128) -> Event {
    Event::GiftReversal(GiftReversal::new(
        EventId(id),
        UserId(sender),
        EventId(gift),
    ))
}

fn rejected(code: RejectCode) -> Status {
    Status::Rejected(code)
}

fn coins(c: u64) -> Status {
    Status::Accepted(Effect::Coins(c))
}

fn assert_clean(engine: &Engine) {
    let report = engine.audit();
    assert!(report.is_clean(), "{:?}", report.violations);
    let t = &report.totals;
    assert_eq!(
        t.coins_recharged - t.coins_reversed + t.coins_owed,
        t.coins_in_wallets + t.coins_spent - t.coins_refunded + t.coins_spent_on_purchases
    );
    assert_eq!(
        t.diamonds_held + t.diamonds_available + t.diamonds_paid,
        t.diamonds_credited + t.diamonds_settled_in
    );
}

/// User 1 has 7000 coins and sends creator 2 a rose (id 10: 1 coin, half a diamond, a
/// fraction) and 3 pandas (id 11: 15 coins) at NOV; stream 9002 has a goal of 1000.
fn gifted(hold_ms: u64) -> Engine {
    let engine = held_engine(hold_ms, EngineConfig::default());
    let setup = [
        recharge(1, 1, "coins_7000"),
        recharge(2, 3, "coins_100"),
        goal(3, 9002, 2, 1000),
        gift(10, 1, 2, "rose", 1),
        gift(11, 1, 2, "panda", 3),
        gift(12, 1, 2, "universe", 9999),
    ];
    let out = engine.apply_batch(&setup, at(0));
    assert!(out[..5].iter().all(Outcome::is_accepted), "{out:?}");
    assert_eq!(out[5].code(), Some(RejectCode::InsufficientCoins));
    engine
}

#[test]
fn a_held_gift_is_reversed_exactly_and_every_rule_has_its_code() {
    let engine = gifted(HOLD);
    let c = engine.creator_at(CreatorId(2), at(0));
    assert_eq!((c.coins_received, c.diamonds_total), (16, 8));
    assert_eq!(c.diamond_fraction, Decimal::ZERO);
    assert_eq!(engine.stream(StreamId(9002)).goal, Some((1000, 16)));

    // The rose, one ms before its release: the coin back, half a diamond taken back.
    let o = engine.apply_batch(&[reversal(20, 1, 10)], at(HOLD - 1))[0];
    assert_eq!(o.status, coins(7000 - 15), "{o:?}");
    let c = engine.creator_at(CreatorId(2), at(HOLD - 1));
    assert_eq!((c.coins_received, c.diamonds_total), (15, 7));
    assert_eq!(c.diamond_fraction, Decimal::new(5, 1), "7.5 diamonds left");
    assert_eq!(c.diamonds_held, 7, "all still held, none available");
    assert_eq!(c.diamonds_available, 0);
    let rose = economy().gift_index("rose").unwrap();
    assert!(c.gifts.iter().all(|(g, _)| g.0 != rose), "{:?}", c.gifts);
    assert_eq!(engine.stream(StreamId(9002)).goal, Some((1000, 15)));
    assert_eq!(
        engine.creator_top_gifters(CreatorId(2), 10),
        vec![(UserId(1), 15)]
    );
    assert_eq!(
        engine.stream_top_gifters(StreamId(9002), 10),
        vec![(UserId(1), 15)]
    );
    let line = engine.history(UserId(1), 1)[0];
    assert_eq!((line.kind.as_str(), line.coins_delta), ("gift_reversal", 1));
    assert_clean(&engine);

    let cases = [
        // (name, event, stamp, expected)
        ("a retry", reversal(20, 1, 10), HOLD, coins(7000 - 15)),
        (
            "the id reused for another gift",
            reversal(20, 1, 11),
            HOLD,
            rejected(RejectCode::EventIdReused),
        ),
        (
            "reversed already",
            reversal(21, 1, 10),
            HOLD - 1,
            rejected(RejectCode::AlreadyReversed),
        ),
        (
            "another sender's gift",
            reversal(22, 3, 11),
            0,
            rejected(RejectCode::OriginalNotFound),
        ),
        (
            "a rejected gift",
            reversal(23, 1, 12),
            0,
            rejected(RejectCode::OriginalNotFound),
        ),
        (
            "no such event",
            reversal(24, 1, 999),
            0,
            rejected(RejectCode::OriginalNotFound),
        ),
        (
            "not a gift (a recharge)",
            reversal(25, 1, 1),
            0,
            rejected(RejectCode::OriginalNotFound),
        ),
        (
            "at the release time",
            reversal(26, 1, 11),
            HOLD,
            rejected(RejectCode::NotReversible),
        ),
        (
            "after it, once the record is dropped",
            reversal(27, 1, 11),
            2 * HOLD,
            rejected(RejectCode::NotReversible),
        ),
    ];
    for (name, event, ms, want) in cases {
        let o = engine.apply_batch(&[event], at(ms))[0];
        assert_eq!(o.status, want, "{name}: {o:?}");
        assert_eq!(o.duplicate, name == "a retry", "{name}");
        assert_clean(&engine);
    }
    // Nothing of the rejected ones changed the books.
    let c = engine.creator_at(CreatorId(2), at(2 * HOLD));
    assert_eq!((c.coins_received, c.diamonds_total), (15, 7));
    assert_eq!(c.diamonds_available, 7, "released");
    assert_eq!(engine.wallet(UserId(1), at(0)).coins, 7000 - 15);
    let t = engine.audit().totals;
    assert_eq!((t.coins_refunded, t.gift_reversals), (1, 1));
    assert_eq!(t.diamonds_reversed_nanos, 500_000_000);
}

#[test]
fn without_a_hold_every_reversal_is_not_reversible() {
    let engine = gifted(0);
    for (id, sender, gift) in [(20, 1, 10), (21, 1, 12), (22, 3, 11)] {
        let o = engine.apply_batch(&[reversal(id, sender, gift)], at(0))[0];
        assert_eq!(o.status, rejected(RejectCode::NotReversible), "{id}");
    }
    assert_eq!(engine.gift_records(), (0, 0), "nothing recorded");
    assert_clean(&engine);
}

#[test]
fn the_bound_drops_the_oldest_record_and_counts_it() {
    let config = EngineConfig {
        shards: 1,
        gift_records_per_shard_max: 2,
        ..EngineConfig::default()
    };
    let engine = held_engine(HOLD, config);
    let mut events = vec![recharge(1, 1, "coins_100")];
    events.extend((0..3).map(|i| gift(10 + i, 1, 2, "rose", 1)));
    assert!(
        engine
            .apply_batch(&events, at(0))
            .iter()
            .all(Outcome::is_accepted)
    );
    assert_eq!(engine.gift_records(), (2, 1));
    let o = engine.apply_batch(&[reversal(20, 1, 10), reversal(21, 1, 12)], at(1));
    assert_eq!(
        o[0].status,
        rejected(RejectCode::NotReversible),
        "dropped early"
    );
    assert_eq!(o[1].status, coins(98));
    assert_clean(&engine);
}

/// The creator's and stream's top K after reversals that knock leaders out, against a
/// ranking of every gifter's total computed here; and the top creators.
#[test]
fn top_lists_stay_exact_after_a_reversal_knocks_a_leader_out() {
    for shards in [1, 4] {
        let config = EngineConfig {
            shards,
            top_k: 3,
            ..EngineConfig::default()
        };
        let engine = held_engine(HOLD, config);
        let mut events: Vec<Event> = (1..=8)
            .map(|u| recharge(u128::from(u), u, "coins_7000"))
            .collect();
        // Gifter u gives creator 50 u x 10 coins (gift ids 100 + u); the leaders are 8, 7, 6.
        for u in 1..=8u64 {
            events.push(gift(100 + u128::from(u), u, 50, "rose", (u * 10) as u32));
        }
        // Creators 30..=34 get 1000, 900, ... coins from user 1 (ids 200 + i).
        for i in 0..5u64 {
            events.push(gift(
                200 + u128::from(i),
                1,
                30 + i,
                "rose",
                (1000 - 100 * i) as u32,
            ));
        }
        assert!(
            engine
                .apply_batch(&events, at(0))
                .iter()
                .all(Outcome::is_accepted)
        );
        let o = engine.apply_batch(
            &[
                reversal(300, 8, 108),
                reversal(301, 7, 107),
                reversal(302, 1, 200),
            ],
            at(1),
        );
        assert!(o.iter().all(Outcome::is_accepted), "{o:?}");
        let brute = |totals: Vec<(UserId, u128)>| {
            let mut all: Vec<_> = totals.into_iter().filter(|t| t.1 > 0).collect();
            all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(3);
            all
        };
        let creator: Vec<_> = (1..=8)
            .map(|u| {
                (
                    UserId(u),
                    engine.creator_gifter_coins(CreatorId(50), UserId(u)),
                )
            })
            .collect();
        let want = brute(creator);
        assert_eq!(
            want,
            vec![(UserId(6), 60), (UserId(5), 50), (UserId(4), 40)]
        );
        assert_eq!(
            engine.creator_top_gifters(CreatorId(50), 3),
            want,
            "{shards} shards"
        );
        let stream: Vec<_> = (1..=8)
            .map(|u| {
                (
                    UserId(u),
                    engine.stream_gifter_coins(StreamId(9050), UserId(u)),
                )
            })
            .collect();
        assert_eq!(engine.stream_top_gifters(StreamId(9050), 3), brute(stream));
        let tops = engine.top_creators(3);
        assert_eq!(
            tops,
            vec![
                (CreatorId(31), 450),
                (CreatorId(32), 400),
                (CreatorId(33), 350)
            ],
            "{shards} shards"
        );
        assert_clean(&engine);
        // A gift after the reversal ranks as usual.
        let o = engine.apply_batch(&[gift(400, 8, 50, "rose", 1)], at(2))[0];
        assert!(o.is_accepted());
        let creator: Vec<_> = (1..=8)
            .map(|u| {
                (
                    UserId(u),
                    engine.creator_gifter_coins(CreatorId(50), UserId(u)),
                )
            })
            .collect();
        assert_eq!(engine.creator_top_gifters(CreatorId(50), 3), brute(creator));
        assert_clean(&engine);
    }
}

/// Reversals and payouts on one creator from threads, with gifts: a payout spends
/// available diamonds only, a reversal takes back held ones only; the audit is clean
/// and the journal replays to the same state (every outcome as recorded).
#[test]
fn reversals_racing_payouts_conserve_and_replay() {
    // A history long enough that a released gift is still in it: NOT_REVERSIBLE.
    let config = EngineConfig {
        shards: 4,
        history_per_user: 1000,
        ..EngineConfig::default()
    };
    let engine = Arc::new(held_engine(HOLD, config.clone()));
    let funding: Vec<Event> = (0..40u64)
        .flat_map(|u| (0..6).map(move |k| recharge(u128::from(u * 8 + k), 100 + u, "coins_7000")))
        .collect();
    assert!(
        engine
            .apply_batch(&funding, at(0))
            .iter()
            .all(Outcome::is_accepted)
    );
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for round in 0..200u64 {
                    let ms = round * 200;
                    let mut batch = Vec::new();
                    for k in 0..20u64 {
                        let id = 1 << 64 | u128::from(t << 32 | round << 8 | k);
                        let sender = 100 + (k * 2 + t) % 40;
                        batch.push(gift(id, sender, 7, "rose", 100));
                        // Reverse a gift of 1 to 85 rounds (0.2 to 17 s) ago: held, or
                        // released by now (the hold is 15 s).
                        let lag = k * 7 % 100 + 1;
                        if k % 3 == 0 && round >= lag {
                            let old = 1 << 64 | u128::from(t << 32 | (round - lag) << 8 | k);
                            let id = 2 << 64 | u128::from(t << 32 | round << 8 | k);
                            batch.push(reversal(id, sender, old));
                        }
                    }
                    if payout_round(round, t) {
                        batch.push(payout(
                            3 << 64 | u128::from(t << 32 | round),
                            7,
                            20_000,
                            "USD",
                        ));
                    }
                    engine.apply_batch(&batch, at(ms + t));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_clean(&engine);
    let log = engine.drain_log();
    let kinds = |status: fn(&LogEntry) -> bool| log.iter().filter(|e| status(e)).count();
    let reversed = kinds(|e| matches!(e.event, Event::GiftReversal(_)) && e.outcome.is_accepted());
    let late = kinds(|e| e.outcome.code() == Some(RejectCode::NotReversible));
    let paid = kinds(|e| matches!(e.event, Event::Payout(_)) && e.outcome.is_accepted());
    assert!(
        reversed > 0 && late > 0 && paid > 0,
        "{reversed} {late} {paid}"
    );
    // Through the journal's format and back, replayed: the same state.
    let bytes = JournalBatch::from_entries(&log).encode();
    assert_eq!(
        bytes[0], 10,
        "journal format 10 (reversals carry their gift's hour; 10 added battle closes)"
    );
    let read = JournalBatch::decode(&bytes)
        .unwrap()
        .into_entries()
        .unwrap();
    assert_eq!(read, log);
    let replayed = held_engine(HOLD, config);
    replayed.replay(&read).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
    assert_eq!(replayed.audit().totals, engine.audit().totals);
}

fn payout_round(round: u64, t: u64) -> bool {
    t == 0 && round % 25 == 24
}

/// A snapshot (file, format 9) plus the journal after it gives the live state, records
/// included; a state without the gift records (format 7) loads with none.
#[test]
fn a_snapshot_plus_the_journal_gives_the_live_state_and_format_7_loads_without_records() {
    use giftstream::persist::snapshot;
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let engine = held_engine(HOLD, config.clone());
    let mut events: Vec<Event> = (1..=4)
        .map(|u| recharge(u128::from(u), u, "coins_100"))
        .collect();
    events.extend((1..=4).map(|u| gift(10 + u128::from(u), u, 2, "rose", 3)));
    engine.apply_batch(&events, at(0));
    engine.apply_batch(&[reversal(20, 1, 11)], at(1));
    let (state, mut log) = engine.snapshot();
    engine.apply_batch(&[reversal(21, 2, 12), reversal(22, 2, 12)], at(2));
    log.extend(engine.drain_log());
    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(held_economy(HOLD), config.clone(), read).unwrap();
    let from = state.last_seq() as usize;
    restored.replay(&log[from..]).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    // A restored ledger still reverses a held gift, and refuses one twice.
    for e in [&engine, &restored] {
        let o = e.apply_batch(&[reversal(23, 3, 13), reversal(24, 3, 13)], at(3));
        assert_eq!(o[0].status, coins(100), "{o:?}");
        assert_eq!(o[1].status, rejected(RejectCode::AlreadyReversed));
        assert_clean(e);
    }

    // Format 7: the state less the fields format 8 appended.
    let plain = held_engine(0, config.clone());
    plain.apply_batch(&events, at(0));
    let (state, _) = plain.snapshot();
    let bytes = giftstream::protocol::encode_serde(&state.view()).unwrap();
    let tail = giftstream::protocol::encode_serde(&state.view().format_8_tail())
        .unwrap()
        .len();
    let v7 = &bytes[..bytes.len() - tail];
    let old: EngineStateV7 = giftstream::protocol::decode_serde(v7).unwrap();
    let loaded = Engine::from_state(economy(), config, EngineState::from(old)).unwrap();
    // Compared as formats before 8 hold a state: without the recharge records its
    // recharges left (format 8's, like the gift records).
    assert_eq!(loaded.state_fingerprint_v6(), plain.state_fingerprint_v6());
    assert_eq!(loaded.gift_records(), (0, 0));
}

/// Snapshot format 9 records whether a held gift was on a stream or a video: a snapshot
/// holding a video gift's record restores a ledger that reverses it. Format 8 recorded
/// gifts on streams only: a format-8 file (the state less format 9's gift records, plus
/// them as format 8 encoded them) reads as the same ledger, its gifts still reversible.
#[test]
fn a_format_9_snapshot_keeps_video_gift_records_and_format_8_reads_as_stream_gifts() {
    use giftstream::persist::snapshot;
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let setup = |with_video: bool| {
        let engine = held_engine(HOLD, config.clone());
        let mut events: Vec<Event> = (1..=3)
            .map(|u| recharge(u128::from(u), u, "coins_100"))
            .collect();
        events.extend((1..=3).map(|u| gift(10 + u128::from(u), u, 4, "rose", 3)));
        if with_video {
            events.push(video_gift(20, 2, 4, 77, "panda", 1));
        }
        assert!(
            engine
                .apply_batch(&events, at(0))
                .iter()
                .all(Outcome::is_accepted)
        );
        engine
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = setup(true);
    let (state, _) = engine.snapshot();
    assert!(
        state.view().format_8_gift_records().is_none(),
        "format 8 holds no video gift"
    );
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(held_economy(HOLD), config.clone(), read).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    for e in [&engine, &restored] {
        let o = e.apply_batch(&[reversal(30, 2, 20), reversal(31, 2, 12)], at(1));
        assert_eq!(o[0].status, coins(100 - 3 - 5 + 5), "{o:?}");
        assert_eq!(o[1].status, coins(100), "{o:?}");
        assert_eq!(e.video(giftstream::engine::VideoId(77)).coins_received, 0);
        assert_clean(e);
    }

    let engine = setup(false);
    let (state, _) = engine.snapshot();
    let (path, _) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let view = state.view();
    let tail9 = giftstream::protocol::encode_serde(&view.format_9_tail()).unwrap();
    let records8 = view.format_8_gift_records().expect("gifts on streams only");
    let records8 = giftstream::protocol::encode_serde(&records8).unwrap();
    let header_bytes = snapshot::HEADER_BYTES;
    let mut body = bytes[header_bytes..bytes.len() - tail9.len()].to_vec();
    body.extend_from_slice(&records8);
    let mut v8 = bytes[..header_bytes].to_vec();
    v8[8..12].copy_from_slice(&8u32.to_le_bytes());
    v8[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
    v8[56..60].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    v8.extend_from_slice(&body);
    let (header, read) = snapshot::parse(std::path::Path::new("v8.gsnap"), &v8).unwrap();
    assert_eq!(header.version, 8);
    let loaded = Engine::from_state(held_economy(HOLD), config, read).unwrap();
    assert_eq!(loaded.state_fingerprint(), engine.state_fingerprint());
    let o = loaded.apply_batch(&[reversal(30, 1, 11)], at(1))[0];
    assert_eq!(o.status, coins(100), "{o:?}");
    assert_clean(&loaded);
    // Read as format 9, the format-8 body is refused, not misread.
    let mut as_9 = v8.clone();
    as_9[8..12].copy_from_slice(&9u32.to_le_bytes());
    assert!(snapshot::parse(std::path::Path::new("x.gsnap"), &as_9).is_err());
}

/// Both protocols against a real server over Redis under a 10-minute hold: reversals
/// over HTTP and TCP, a second one refused, then `kill -9` and a restart that replays
/// them; the audit (with the read model) is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_over_http_and_tcp_survive_kill_9() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("giftstream.toml");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let economy_file = tmp.path().join("economy.toml");
    std::fs::write(&economy_file, held_economy_text(600_000)).unwrap();
    let data = tmp.path().join("data");
    let env = [("GIFTSTREAM_ECONOMY", economy_file.to_str().unwrap())];
    let p = ServeProcess::start_with(&config, &redis.url(), &data, &env);
    let http = reqwest::Client::new();
    let post = |events: serde_json::Value, addr: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{addr}/v1/events"))
                .bearer_auth(INGEST)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = post(
        json!([
            {"type": "recharge", "event_id": uuid(1), "user": 42, "coins": 100,
             "price": "1.29", "currency": "USD", "package": "coins_100", "channel": "app"},
            {"type": "gift", "event_id": uuid(10), "sender": 42, "creator": 7,
             "stream": 9001, "gift": "rose", "count": 1},
            {"type": "gift", "event_id": uuid(11), "sender": 42, "creator": 7,
             "stream": 9001, "gift": "panda", "count": 2},
            {"type": "gift_reversal", "event_id": uuid(20), "sender": 42, "gift": uuid(10)},
            {"type": "gift_reversal", "event_id": uuid(21), "sender": 42, "gift": uuid(10)},
            {"type": "gift_reversal", "event_id": uuid(22), "sender": 43, "gift": uuid(11)},
        ]),
        p.http.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<_> = body["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["status"].as_str().unwrap().to_owned(),
                o["code"].as_str().map(str::to_owned),
                o["coins"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("accepted".to_owned(), None, Some(100)),
            ("accepted".to_owned(), None, Some(99)),
            ("accepted".to_owned(), None, Some(89)),
            ("accepted".to_owned(), None, Some(90)),
            (
                "rejected".to_owned(),
                Some("ALREADY_REVERSED".to_owned()),
                None
            ),
            (
                "rejected".to_owned(),
                Some("ORIGINAL_NOT_FOUND".to_owned()),
                None
            ),
        ],
        "{body}"
    );
    // Gifts on video 31337 from 42 (to creator 7) and 43 (to creator 8); 42's reversed:
    // the video's coins and top gifters go down, in the engine and in the read model.
    let (status, body) = post(
        json!([
            {"type": "recharge", "event_id": uuid(2), "user": 43, "coins": 100,
             "price": "1.29", "currency": "USD", "package": "coins_100", "channel": "app"},
            {"type": "gift", "event_id": uuid(12), "sender": 42, "creator": 7,
             "video": 31337, "gift": "panda", "count": 1},
            {"type": "gift", "event_id": uuid(13), "sender": 43, "creator": 8,
             "video": 31337, "gift": "rose", "count": 1},
            {"type": "gift_reversal", "event_id": uuid(25), "sender": 42, "gift": uuid(12)},
        ]),
        p.http.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let balances: Vec<_> = body["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["coins"].as_u64())
        .collect();
    assert_eq!(
        balances,
        [Some(100), Some(85), Some(99), Some(90)],
        "{body}"
    );
    let video = p.read(&http, "/v1/videos/31337").await;
    assert_eq!(video["coins_received"], 1, "{video}");
    assert_eq!(video["gifts"], json!({"rose": 1}), "{video}");
    let top = p.read(&http, "/v1/videos/31337/top-gifters?limit=10").await;
    assert_eq!(top["entries"], json!([{"user": 43, "coins": 1}]), "{top}");
    let mut conn = giftstream::persist::redis::connect(&redis.url())
        .await
        .unwrap();
    let prefix = giftstream::persist::read_model::PREFIX;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let board: Vec<(u64, f64)> = ::redis::cmd("ZREVRANGE")
            .arg(format!("{prefix}video:31337:top-gifters"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        let coins: Option<String> = ::redis::cmd("HGET")
            .arg(format!("{prefix}video:31337"))
            .arg("coins_received")
            .query_async(&mut conn)
            .await
            .unwrap();
        if board == [(43, 1.0)] && coins.as_deref() == Some("1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read model: {board:?} {coins:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A malformed gift id fails the whole batch.
    let (status, body) = post(
        json!([{"type": "gift_reversal", "event_id": uuid(23), "sender": 42, "gift": "nope"}]),
        p.http.clone(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("events[0].gift"), "{body}");
    // The binary protocol.
    let client = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
    let o = client
        .send(&[reversal(uuid_n(24), 42, uuid_n(11))])
        .await
        .unwrap();
    assert_eq!(o[0].status, coins(100), "{o:?}");
    drop(client);
    let creator = p.read(&http, "/v1/creators/7").await;
    assert_eq!(
        (
            &creator["coins_received"],
            &creator["diamonds_total"],
            &creator["diamonds_held"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{creator}"
    );
    let stream = p.read(&http, "/v1/streams/9001").await;
    assert_eq!(stream["coins_received"], 0, "{stream}");
    p.kill9();

    let p = ServeProcess::start_with(&config, &redis.url(), &data, &env);
    let wallet = p.read(&http, "/v1/users/42/wallet").await;
    assert_eq!(wallet["coins"], 100, "{wallet}");
    let creator = p.read(&http, "/v1/creators/7").await;
    assert_eq!(creator["coins_received"], 0, "{creator}");
    // A retry after the restart: the original outcome.
    let (_, body) = post(
        json!([{"type": "gift_reversal", "event_id": uuid(20), "sender": 42, "gift": uuid(10)}]),
        p.http.clone(),
    )
    .await;
    assert_eq!(body["outcomes"][0]["duplicate"], true, "{body}");
    assert_eq!(body["outcomes"][0]["coins"], 90, "{body}");
    let tx = p.read(&http, "/v1/users/42/transactions?limit=10").await;
    assert!(tx.to_string().contains("gift_reversal"), "{tx}");
    let doc = p.read(&http, "/openapi.json").await;
    assert!(doc.to_string().contains("gift_reversal"), "openapi");
    // Let the read model catch up before the audit compares it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    p.stop();
    let (ok, out) = run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_ECONOMY", economy_file.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", redis.url().as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert!(ok && out.contains("audit: clean"), "{out}");
    assert!(out.contains("0 differences from the ledger"), "{out}");
}

/// `uuid(n)`'s id as a number.
fn uuid_n(n: u128) -> u128 {
    ::uuid::Uuid::parse_str(&uuid(n)).unwrap().as_u128()
}

/// A refund to a user who owes coins (a reversed recharge it had spent) repays the debt
/// first, as a recharge does, and its history line shows what reached the balance, as a
/// recharge's line does (review F3: it showed the gross refund). A gift on a video is
/// reversed like a stream's.
#[test]
fn a_refund_repays_a_debt_first_and_its_history_line_shows_what_reached_the_balance() {
    use giftstream::engine::{RechargeReversal, VideoId};
    let engine = held_engine(HOLD, EngineConfig::default());
    let out = engine.apply_batch(
        &[
            recharge(1, 1, "coins_500"),
            recharge(2, 1, "coins_100"),
            gift(10, 1, 2, "panda", 30),
            video_gift(11, 1, 2, 77, "panda", 20),
        ],
        at(0),
    );
    assert_eq!(out[2].status, coins(450), "{out:?}");
    assert_eq!(out[3].status, coins(350), "{out:?}");
    // The first recharge is charged back: 350 from the balance, 150 owed.
    let charged_back = Event::RechargeReversal(RechargeReversal {
        id: EventId(20),
        user: UserId(1),
        recharge: EventId(1),
    });
    let out = engine.apply_batch(&[charged_back], at(1_000));
    assert!(out[0].is_accepted(), "{out:?}");
    assert_eq!(engine.audit().totals.coins_owed, 150);
    // A recharge repays 100 of the debt: nothing reaches the balance, and its line says
    // so. The video gift's refund (100) repays the last 50: 50 reach the balance; the
    // stream gift's (150) reaches it whole.
    let out = engine.apply_batch(&[recharge(3, 1, "coins_100")], at(1_500));
    assert_eq!(out[0].status, coins(0), "{out:?}");
    let out = engine.apply_batch(&[reversal(21, 1, 11), reversal(22, 1, 10)], at(2_000));
    assert_eq!(out[0].status, coins(50), "{out:?}");
    assert_eq!(out[1].status, coins(200), "{out:?}");
    let lines: Vec<_> = engine
        .history(UserId(1), 4)
        .iter()
        .map(|h| (h.event_id.0, h.kind.as_str(), h.coins_delta))
        .collect();
    assert_eq!(
        lines,
        [
            (22, "gift_reversal", 150),
            (21, "gift_reversal", 50),
            (3, "recharge", 0),
            (20, "recharge_reversal", -350),
        ],
        "a refund's line is what reached the balance, as a recharge's"
    );
    assert!(engine.video(VideoId(77)).gifts.is_empty());
    let report = engine.audit();
    assert!(report.is_clean(), "{:?}", report.violations);
    let t = &report.totals;
    assert_eq!(
        (t.coins_owed, t.coins_in_wallets, t.coins_refunded),
        (0, 200, 250)
    );
    assert_eq!(
        (t.coins_received_by_videos, t.coins_received_by_streams),
        (0, 0)
    );
    assert_eq!(
        t.coins_recharged + t.coins_owed,
        t.coins_in_wallets + t.coins_spent - t.coins_refunded
            + t.coins_spent_on_purchases
            + t.coins_reversed
    );
}

fn charge_back(id: u128, user: u64, recharge: u128) -> Event {
    Event::RechargeReversal(giftstream::engine::RechargeReversal {
        id: EventId(id),
        user: UserId(user),
        recharge: EventId(recharge),
    })
}

/// Review finding F6: an event id reused (past the retry horizon) by a new gift while the
/// first gift with it is still held does not replace the first's record, reversed or
/// not: a reversal naming the id judges the first gift (`ALREADY_REVERSED` once
/// reversed; reversed — its coins — if not); the new gift of another sender is that
/// sender's own record (review G) and is reversed by it. A recharge reusing its user's recharge id within the window keeps
/// the first record too. Once the first gift is released, the id is recorded again.
#[test]
fn an_id_reused_while_its_first_gift_is_held_keeps_the_first_record() {
    let config = EngineConfig {
        shards: 2,
        idempotency_horizon_ms: 1_000,
        ..EngineConfig::default()
    };
    let hold = 600_000;
    let past = config.id_kept_max_ms() + 1;
    assert!(
        past < hold / 2,
        "the ids are forgotten while the gifts are held"
    );
    let engine = held_engine(hold, config);
    let out = engine.apply_batch(
        &[
            recharge(1, 1, "coins_500"),
            recharge(2, 3, "coins_500"),
            gift(10, 1, 2, "panda", 1),
            video_gift(11, 1, 2, 77, "panda", 2),
        ],
        at(0),
    );
    assert!(out.iter().all(Outcome::is_accepted), "{out:?}");
    // The panda back (490), then the recharge charged back: 490 taken, 10 owed.
    let out = engine.apply_batch(&[reversal(20, 1, 10)], at(1));
    assert_eq!(out[0].status, coins(490), "{out:?}");
    let out = engine.apply_batch(&[charge_back(21, 1, 1)], at(2));
    assert!(out[0].is_accepted(), "{out:?}");
    // Past the horizon the ids are free again: new gifts and a new recharge reuse them.
    let out = engine.apply_batch(
        &[
            recharge(1, 1, "coins_500"),
            gift(10, 1, 2, "rose", 7),
            video_gift(11, 3, 4, 78, "rose", 3),
        ],
        at(past),
    );
    assert!(
        out.iter().all(|o| o.is_accepted() && !o.duplicate),
        "{out:?}"
    );
    // The recharge repaid the 10 coins owed; the rose cost 7.
    assert_eq!(engine.wallet(UserId(1), at(past)).coins, 483);
    let creator_4 = engine.creator_at(CreatorId(4), at(past));
    let cases = [
        // (name, event, expected)
        (
            "the first gift, reversed already",
            reversal(30, 1, 10),
            rejected(RejectCode::AlreadyReversed),
        ),
        (
            "the first recharge, reversed already",
            charge_back(31, 1, 1),
            Status::Rejected(RejectCode::AlreadyReversed),
        ),
        (
            "the second gift's sender: its own record (review G), its 3 coins back",
            reversal(32, 3, 11),
            coins(500),
        ),
        (
            "the first gift on the video, by its sender: reversed, its 10 coins",
            reversal(33, 1, 11),
            coins(483 + 10),
        ),
    ];
    for (name, event, want) in cases {
        let o = engine.apply_batch(&[event], at(past + 1))[0];
        assert_eq!(o.status, want, "{name}: {o:?}");
        assert_clean(&engine);
    }
    // The second video gift's creator gave back what it was given.
    let after = engine.creator_at(CreatorId(4), at(past + 1));
    assert_eq!(after.coins_received, creator_4.coins_received - 3);
    assert_eq!(
        engine.video(giftstream::engine::VideoId(78)).coins_received,
        0
    );
    assert_eq!(
        engine.video(giftstream::engine::VideoId(77)).coins_received,
        0
    );
    // Once the first gifts are released, a gift reusing the id is recorded anew.
    let late = at(hold + 1);
    let out = engine.apply_batch(&[gift(10, 1, 2, "rose", 2)], late);
    assert!(out[0].is_accepted() && !out[0].duplicate, "{out:?}");
    let o = engine.apply_batch(&[reversal(34, 1, 10)], late)[0];
    assert_eq!(o.status, coins(493), "the new gift's 2 coins back: {o:?}");
    assert_clean(&engine);
}

/// A held gift on a video is reversed exactly as a stream's: the coins back, the
/// creator's coins and diamonds (fraction included), the video's coins, gift counts and
/// top gifters (a knocked-out leader replaced from the shard's totals at top K = 1) go
/// down; no stream, goal or stream leaderboard moves; the second time
/// `ALREADY_REVERSED`, at the release `NOT_REVERSIBLE`.
#[test]
fn a_held_gift_on_a_video_is_reversed_exactly() {
    use giftstream::engine::VideoId;
    let config = EngineConfig {
        shards: 1,
        top_k: 1,
        ..EngineConfig::default()
    };
    let engine = held_engine(HOLD, config);
    let out = engine.apply_batch(
        &[
            recharge(1, 1, "coins_500"),
            recharge(2, 3, "coins_500"),
            goal(3, 77, 2, 1_000),
            video_gift(10, 1, 2, 77, "rose", 1),
            video_gift(11, 1, 2, 77, "panda", 3),
            video_gift(12, 3, 2, 77, "panda", 2),
        ],
        at(0),
    );
    assert!(out.iter().all(Outcome::is_accepted), "{out:?}");
    assert_eq!(
        engine.video_top_gifters(VideoId(77), 1),
        vec![(UserId(1), 16)]
    );
    let o = engine.apply_batch(&[reversal(20, 1, 11)], at(HOLD - 1))[0];
    assert_eq!(o.status, coins(500 - 1), "{o:?}");
    let v = engine.video(VideoId(77));
    assert_eq!((v.creator, v.coins_received), (Some(CreatorId(2)), 11));
    let panda = economy().gift_index("panda").unwrap();
    let rose = economy().gift_index("rose").unwrap();
    let mut counts = v.gifts.clone();
    counts.sort_unstable();
    let mut want = vec![
        (giftstream::engine::GiftId(rose), 1),
        (giftstream::engine::GiftId(panda), 2),
    ];
    want.sort_unstable();
    assert_eq!(counts, want);
    assert_eq!(
        engine.video_top_gifters(VideoId(77), 1),
        vec![(UserId(3), 10)],
        "the leader knocked out, the next one in"
    );
    let c = engine.creator_at(CreatorId(2), at(HOLD - 1));
    assert_eq!((c.coins_received, c.diamonds_total), (11, 5));
    assert_eq!(c.diamond_fraction, Decimal::new(5, 1));
    assert_eq!(
        engine.creator_top_gifters(CreatorId(2), 1),
        vec![(UserId(3), 10)]
    );
    let stream = engine.stream(StreamId(77));
    assert_eq!((stream.coins_received, stream.goal), (0, Some((1_000, 0))));
    let line = engine.history(UserId(1), 1)[0];
    assert_eq!(
        (line.kind.as_str(), line.coins_delta),
        ("gift_reversal", 15)
    );
    assert_clean(&engine);
    for (name, event, ms, want) in [
        (
            "reversed already",
            reversal(21, 1, 11),
            HOLD - 1,
            rejected(RejectCode::AlreadyReversed),
        ),
        (
            "another sender's video gift",
            reversal(22, 3, 10),
            HOLD - 1,
            rejected(RejectCode::OriginalNotFound),
        ),
        (
            "at the release time",
            reversal(23, 1, 10),
            HOLD,
            rejected(RejectCode::NotReversible),
        ),
    ] {
        let o = engine.apply_batch(&[event], at(ms))[0];
        assert_eq!(o.status, want, "{name}: {o:?}");
    }
    let t = engine.audit().totals;
    assert_eq!((t.coins_refunded, t.gift_reversals), (15, 1));
    assert_eq!(t.coins_received_by_videos, 11);
    assert_clean(&engine);
}

/// Review of #31, finding A: on a cluster node a gift to another node's creator was
/// reported to that node as a settlement, which keeps the largest report it was sent —
/// a reversal here could not take those diamonds back there, so the creator would be
/// paid and the viewer refunded. Such a gift is `NOT_REVERSIBLE`; one to a creator this
/// node owns is reversed. A replay with the same partition map judges alike.
#[test]
fn on_a_cluster_node_a_gift_to_another_nodes_creator_is_not_reversible() {
    let owned = || -> giftstream::engine::CreatorOwned { Box::new(|c| c.0 != 7) };
    let engine = held_engine(HOLD, EngineConfig::default());
    engine.set_creator_owned(owned());
    let out = engine.apply_batch(
        &[
            recharge(1, 1, "coins_7000"),
            gift(10, 1, 7, "panda", 3),
            gift(11, 1, 2, "panda", 3),
        ],
        at(0),
    );
    assert!(out.iter().all(Outcome::is_accepted), "{out:?}");
    let out = engine.apply_batch(&[reversal(20, 1, 10), reversal(21, 1, 11)], at(1_000));
    assert_eq!(
        (out[0].status, out[1].status),
        (rejected(RejectCode::NotReversible), coins(7000 - 15))
    );
    assert_clean(&engine);
    let log = engine.drain_log();
    let replayed = held_engine(HOLD, EngineConfig::default());
    replayed.set_creator_owned(owned());
    replayed.replay(&log).expect("the same map judges alike");
    assert_eq!(replayed.wallet(UserId(1), at(2_000)).coins, 7000 - 15);
    // A single node (no map) would have reversed it: a replay without the map refuses.
    let single = held_engine(HOLD, EngineConfig::default());
    assert!(single.replay(&log).is_err());
}

/// Review finding G: an id reused (past the retry horizon) by other senders while the
/// first gift with it is held: each sender's gift is its own record, reversed by that
/// sender only, whatever the shard layout (before, a sender sharing the first's shard
/// got `NOT_REVERSIBLE` and one in another shard got its coins back). The same outcomes
/// with 1, 2, 4 and 8 shards; the records kept apart survive a snapshot (format 11) and
/// a replay.
#[test]
fn an_id_reused_by_other_senders_is_each_senders_own_gift_whatever_the_shards() {
    let hold = 600_000;
    let run = |shards: usize| {
        let config = EngineConfig {
            shards,
            idempotency_horizon_ms: 1_000,
            ..EngineConfig::default()
        };
        let past = config.id_kept_max_ms() + 1;
        let engine = held_engine(hold, config.clone());
        let mut setup: Vec<Event> = (1..=6)
            .map(|u| recharge(u as u128, u, "coins_500"))
            .collect();
        setup.push(gift(10, 1, 99, "panda", 1));
        let mut outcomes = engine.apply_batch(&setup, at(0));
        // Users 2..=6 reuse gift id 10 in turn, each past the horizon of the one before
        // (user 1's gift still held): u roses each; user 6 then reuses its own id 10
        // again (F6).
        assert!(8 * past < hold, "every gift is still held");
        for u in 2..=6 {
            let reuse = gift(10, u, 99, "rose", u as u32);
            outcomes.extend(engine.apply_batch(&[reuse], at((u - 1) * past)));
        }
        outcomes.extend(engine.apply_batch(&[gift(10, 6, 99, "rose", 1)], at(6 * past)));
        let now = at(6 * past + 1);
        // A snapshot now, then the reversals on the live engine and on the restored one.
        use giftstream::persist::snapshot;
        let (state, _) = engine.snapshot();
        let dir = tempfile::tempdir().unwrap();
        let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
        assert_eq!(header.version, snapshot::VERSION);
        let (_, read) = snapshot::read(&path).unwrap();
        let restored = Engine::from_state(held_economy(hold), config, read).unwrap();
        assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
        let reversals = [
            reversal(20, 4, 10), // 4's roses: 4 coins back
            reversal(21, 1, 10), // 1's panda: 5 back
            reversal(22, 4, 10), // again: ALREADY_REVERSED
            reversal(23, 7, 10), // no gift of 7's: ORIGINAL_NOT_FOUND
            reversal(24, 6, 10), // 6's first (6 roses), its second not recorded (F6)
            reversal(25, 6, 10), // ALREADY_REVERSED
            reversal(26, 2, 10), // 2's rose
        ];
        let live = engine.apply_batch(&reversals, now);
        let again = restored.apply_batch(&reversals, now);
        let status = |o: &[Outcome]| o.iter().map(|o| o.status).collect::<Vec<_>>();
        assert_eq!(status(&live), status(&again), "{shards} shards: restored");
        assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
        assert_clean(&engine);
        outcomes.extend(live);
        status(&outcomes)
    };
    let one = run(1);
    let n = one.len();
    assert_eq!(
        one[n - 7..],
        [
            coins(500 - 4 + 4),
            coins(500),
            rejected(RejectCode::AlreadyReversed),
            rejected(RejectCode::OriginalNotFound),
            coins(500 - 6 - 1 + 6),
            rejected(RejectCode::AlreadyReversed),
            coins(500),
        ],
        "{one:?}"
    );
    for shards in [2, 4, 8] {
        assert_eq!(run(shards), one, "{shards} shards");
    }
}
