//! Coin purchases (issue #31, feature 7): a `purchase` spends coins on an item of the
//! economy's `items` catalog through the gift's account, limits and funds checks, and
//! credits no creator. The rule table is in `engine_rules` (`purchase_rules`); here:
//! purchases racing gifts on one account, retries and reused ids, restarts (journal
//! replay, snapshots of format 7 and 6, an economy edited between them), and both
//! protocols against a real server over Redis.

use std::sync::Arc;

use giftstream::client::Client;
use giftstream::engine::{
    Effect, Engine, EngineConfig, Event, LogEntry, Outcome, RejectCode, Status, UserId,
};
use giftstream::persist::read_model::{self, Layout, PREFIX};
use giftstream::persist::redis::{JOURNAL_VERSION, JournalBatch};
use giftstream::persist::snapshot;
use serde_json::json;

use crate::support::redis::RedisServer;
use crate::support::server::{ADMIN, INGEST, READ, TestServer, uuid};
use crate::support::*;

/// What an event costs under the embedded economy (0: neither a gift nor a purchase,
/// or one naming nothing).
fn cost_of(event: &Event) -> u64 {
    let e = economy();
    match event {
        Event::Purchase(p) => {
            e.items.get(p.item.0 as usize).map_or(0, |i| i.coins) * u64::from(p.count)
        }
        Event::Gift(g) => {
            e.gifts.get(g.gift.0 as usize).map_or(0, |g| g.coins) * u64::from(g.count)
        }
        _ => 0,
    }
}

fn accepted(coins: u64) -> Status {
    Status::Accepted(Effect::Coins(coins))
}

/// Threads send user 1's purchases and gifts at once, in two months (the budget renews,
/// the balance does not). In sequence order, each must be accepted exactly when it was
/// affordable then — within the monthly budget, which gifts and purchases share, and
/// the balance — and the balance never goes below zero.
#[test]
fn purchases_racing_gifts_on_one_account_accept_exactly_the_affordable_ones() {
    const BUDGET: u64 = 6_000;
    const FUNDS: u64 = 8_400;
    for shards in [1, 4] {
        let config = EngineConfig {
            shards,
            ..EngineConfig::default()
        };
        let engine = Engine::new(economy(), config).unwrap();
        let setup = engine.apply_batch(
            &[
                recharge(1, 1, "coins_7000"),
                recharge(2, 1, "coins_1400"),
                account(3, 1, None, true, Some(BUDGET)),
            ],
            NOV,
        );
        assert!(setup.iter().all(Outcome::is_accepted), "{setup:?}");
        let mut answers: Vec<(Event, Outcome)> = Vec::new();
        for (phase, stamp) in [NOV, DEC].into_iter().enumerate() {
            let answered = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..4u128)
                    .map(|t| {
                        let engine = &engine;
                        scope.spawn(move || {
                            let mut got = Vec::new();
                            for b in 0..20u128 {
                                let events: Vec<Event> = (0..6u128)
                                    .map(|i| {
                                        let id = (phase as u128 + 1) << 40 | t << 24 | b << 8 | i;
                                        let n = (b + i) as u32;
                                        if (t + i) % 2 == 0 {
                                            let item =
                                                ["sticker_pack", "profile_frame", "ad_free_month"]
                                                    [(n % 3) as usize];
                                            purchase(id, 1, item, 1 + n % 2)
                                        } else {
                                            let g =
                                                ["rose", "panda", "rainbow_puke"][(n % 3) as usize];
                                            gift(id, 1, 2 + (n % 3) as u64, g, 1 + n % 20)
                                        }
                                    })
                                    .collect();
                                let outcomes = engine.apply_batch(&events, stamp);
                                got.extend(events.into_iter().zip(outcomes));
                            }
                            got
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap())
                    .collect::<Vec<_>>()
            });
            answers.extend(answered);
        }
        let mut log = engine.drain_log();
        log.sort_by_key(|e| e.seq);
        // The model, in sequence order: spending in the stamp's month, and the balance.
        let (mut coins, mut spent, mut month) = (FUNDS, 0u64, NOV);
        let mut counts = [[0usize; 2]; 2];
        for entry in log.iter().filter(|e| cost_of(&e.event) > 0) {
            if entry.stamp != month {
                (month, spent) = (entry.stamp, 0);
            }
            let cost = cost_of(&entry.event);
            let want = if spent + cost > BUDGET {
                Status::Rejected(RejectCode::BudgetExceeded)
            } else if coins < cost {
                Status::Rejected(RejectCode::InsufficientCoins)
            } else {
                coins -= cost;
                spent += cost;
                accepted(coins)
            };
            assert_eq!(
                entry.outcome.status, want,
                "{shards} shards: seq {} {:?}: the model (in seq order) says {want:?}",
                entry.seq, entry.event
            );
            let kind = usize::from(matches!(entry.event, Event::Purchase(_)));
            counts[kind][usize::from(entry.outcome.is_accepted())] += 1;
        }
        assert!(
            counts.iter().flatten().all(|&n| n > 0),
            "gifts and purchases were both accepted and refused: {counts:?}"
        );
        for (event, got) in &answers {
            let journaled = log.iter().find(|e| e.event.id() == event.id()).unwrap();
            assert_eq!(*got, journaled.outcome, "live answer of {event:?}");
        }
        assert_eq!(engine.wallet(UserId(1), DEC).coins, coins);
        let audit = engine.audit();
        assert!(audit.is_clean(), "{:?}", audit.violations);
        let t = audit.totals;
        assert_eq!(
            t.coins_spent + t.coins_spent_on_purchases,
            u128::from(FUNDS - coins),
            "every coin that left the wallet is spent on a gift or a purchase"
        );
        assert_eq!(t.coins_spent, t.coins_received_by_creators);
        assert!(t.coins_spent_on_purchases > 0 && t.coins_spent > 0);
    }
}

#[test]
fn a_retried_purchase_is_applied_once_and_its_id_reused_is_refused() {
    let engine = Engine::new(
        economy(),
        EngineConfig {
            shards: 4,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine.apply_batch(
        &[recharge(1, 1, "coins_1400"), recharge(2, 2, "coins_100")],
        NOV,
    );
    let bought = purchase(0xB0, 1, "profile_frame", 2);
    // Twice in one batch: the second is the first's answer.
    let first = engine.apply_batch(&[bought, bought], NOV);
    assert_eq!(first[0].status, accepted(800));
    assert_eq!(
        first[1],
        Outcome {
            duplicate: true,
            ..first[0]
        }
    );
    let retry = engine.apply_batch(&[bought], NOV)[0];
    assert_eq!(
        retry,
        Outcome {
            duplicate: true,
            ..first[0]
        },
        "a later retry"
    );
    let reused = [
        purchase(0xB0, 1, "profile_frame", 1),
        purchase(0xB0, 1, "sticker_pack", 2),
        purchase(0xB0, 2, "profile_frame", 2),
        gift(0xB0, 1, 3, "rose", 2),
        recharge(0xB0, 1, "coins_100"),
    ];
    for event in reused {
        let got = engine.apply_batch(&[event], NOV)[0];
        assert_eq!(
            (got.seq, got.status),
            (0, Status::Rejected(RejectCode::EventIdReused)),
            "{event:?}"
        );
    }
    // A gift's id reused by a purchase, in one batch and later.
    let g = gift(0xC0, 1, 3, "rose", 5);
    let got = engine.apply_batch(&[g, purchase(0xC0, 1, "sticker_pack", 1)], NOV);
    assert_eq!(got[0].status, accepted(795));
    assert_eq!(got[1].code(), Some(RejectCode::EventIdReused));
    let got = engine.apply_batch(&[purchase(0xC0, 2, "sticker_pack", 1)], NOV)[0];
    assert_eq!(got.code(), Some(RejectCode::EventIdReused));
    assert_eq!(engine.wallet(UserId(1), NOV).coins, 795);
    assert_eq!(engine.wallet(UserId(2), NOV).coins, 100, "user 2 untouched");
    let kinds: Vec<_> = engine
        .history(UserId(1), 32)
        .iter()
        .map(|h| h.kind.as_str())
        .collect();
    assert_eq!(kinds, ["gift", "purchase", "recharge"], "one line each");
    let t = engine.audit().totals;
    assert_eq!((t.coins_spent_on_purchases, t.coins_spent), (600, 5));
}

/// The events of a short life: purchases, gifts and recharges of several users.
fn some_events(from: u128, users: std::ops::Range<u64>) -> Vec<Event> {
    let mut events = Vec::new();
    for (k, user) in users.enumerate() {
        let id = from + 10 * k as u128;
        events.push(recharge(id, user, "coins_1400"));
        events.push(purchase(
            id + 1,
            user,
            "profile_frame",
            1 + (user % 2) as u32,
        ));
        events.push(gift(id + 2, user, 90 + user % 3, "panda", 3));
        events.push(purchase(id + 3, user, "sticker_pack", 4));
        events.push(purchase(id + 4, user, "ad_free_month", 1));
        events.push(purchase(id + 5, user, "no_such_item", 1));
    }
    events
}

/// A journal's round trip: the records read back as the same entries.
fn through_the_journal(log: &[LogEntry]) -> Vec<LogEntry> {
    let bytes = JournalBatch::from_entries(log).encode();
    assert_eq!(bytes[0], JOURNAL_VERSION, "the current journal format");
    assert_eq!(
        bytes[0], 10,
        "journal format 10 (7 plus battles, reversals with their gift's hour, battle closes)"
    );
    assert_eq!(
        bytes[0],
        giftstream::persist::redis::JOURNAL_VERSION,
        "the journal format"
    );
    JournalBatch::decode(&bytes)
        .unwrap()
        .into_entries()
        .unwrap()
}

/// A live engine, then its journal replayed whole, and its snapshot (written to a file
/// and read back) plus the journal after it, give the same state — purchase totals
/// included — across an economy change that retires an item and reprices another.
#[test]
fn purchases_replay_from_the_journal_and_a_snapshot_to_the_same_state() {
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    engine.apply_batch(&some_events(1_000, 1..7), NOV);
    let (state, mut log) = engine.snapshot();
    let purchased_at_cut = engine.audit().totals.coins_spent_on_purchases;
    assert!(purchased_at_cut > 0);

    let mut file = economy().to_file();
    file.items.retain(|i| i.id != "sticker_pack");
    file.items
        .iter_mut()
        .find(|i| i.id == "profile_frame")
        .unwrap()
        .coins = 310;
    let next = engine.economy_successor(file).unwrap().unwrap();
    let version = Arc::new(next.clone());
    engine.change_economy(next, DEC).unwrap();
    let later = engine.apply_batch(&some_events(2_000, 4..10), DEC);
    let sticker = later
        .iter()
        .zip(some_events(2_000, 4..10))
        .find(|(_, e)| cost_of(e) == 200)
        .unwrap();
    assert_eq!(sticker.0.code(), Some(RejectCode::UnknownItem), "retired");
    log.extend(engine.drain_log());
    let log = through_the_journal(&log);
    let live = engine.state_fingerprint();
    let live_totals = engine.audit().totals;
    assert!(engine.audit().is_clean());
    // User 4 bought a frame before the change (300) and after it (310).
    let frames: Vec<i128> = engine
        .history(UserId(4), 32)
        .iter()
        .filter(|h| h.kind.as_str() == "purchase" && h.coins_delta.abs() >= 300)
        .map(|h| h.coins_delta)
        .collect();
    assert!(
        frames.contains(&-300) && frames.contains(&-310),
        "{frames:?}"
    );

    let replayed = Engine::new(economy(), config.clone()).unwrap();
    replayed.know_economy(Arc::clone(&version));
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live, "replay of the journal");
    assert_eq!(replayed.audit().totals, live_totals);

    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    assert_eq!(header.version, snapshot::VERSION);
    assert_eq!(header.version, giftstream::persist::snapshot::VERSION);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(economy(), config.clone(), read).unwrap();
    assert_eq!(
        restored.audit().totals.coins_spent_on_purchases,
        purchased_at_cut,
        "the snapshot keeps the purchases"
    );
    restored.know_economy(version);
    let from = state.last_seq() as usize;
    restored.replay(&log[from..]).unwrap();
    assert_eq!(restored.state_fingerprint(), live, "snapshot + journal");
    // Restarted, they still answer a retry with its original outcome.
    // (One of the last ones: ids far older than the retry horizon may be forgotten.)
    let retry = log
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::Purchase(_)))
        .unwrap();
    for engine in [&replayed, &restored] {
        let got = engine.apply_batch(&[retry.event], DEC)[0];
        assert_eq!(
            got,
            Outcome {
                duplicate: true,
                ..retry.outcome
            }
        );
    }
}

/// A snapshot of format 6 (written by the build before purchases, fixture) reads as a
/// state without purchases; purchases after the upgrade count from zero.
#[test]
fn a_format_6_snapshot_reads_as_a_state_without_purchases() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-6.gsnap"
    ))
    .unwrap();
    let (header, read) =
        snapshot::parse(std::path::Path::new("snapshot-format-6.gsnap"), &bytes).unwrap();
    assert_eq!(header.version, 6);
    let restored = Engine::from_state(economy(), EngineConfig::default(), read).unwrap();
    let engine = Engine::new(economy(), EngineConfig::default()).unwrap();
    engine.apply_batch(&crate::durability::format_2_fixture_events(), NOV);
    // Format 6 held no day or week counts: compared as format 6 could hold the state.
    assert_eq!(
        restored.state_fingerprint_v6(),
        engine.state_fingerprint_v6()
    );
    assert_eq!(restored.audit().totals.coins_spent_on_purchases, 0);
    let funded = restored.apply_batch(&[recharge(9_998, 77, "coins_100")], NOV)[0];
    assert!(funded.is_accepted(), "{funded:?}");
    let got = restored.apply_batch(&[purchase(9_999, 77, "sticker_pack", 1)], NOV)[0];
    assert!(got.is_accepted(), "{got:?}");
    let audit = restored.audit();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.totals.coins_spent_on_purchases, 50);
}

/// The JSON form of a purchase (`count` optional).
fn json_purchase(n: u128, user: u64, item: &str, count: Option<u32>) -> serde_json::Value {
    let mut v = json!({"type": "purchase", "event_id": uuid(n), "user": user, "item": item});
    if let Some(c) = count {
        v["count"] = c.into();
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_over_http_and_tcp_are_journaled_and_survive_a_restart() {
    let redis = RedisServer::start();
    let wallets = |c: &mut giftstream::config::Config| c.read_model.wallets = true;
    let (s, _) = TestServer::on_redis(&redis.url(), wallets).await;
    s.serving().await;
    let (status, body) = s
        .post_events(json!([
            {"type": "recharge", "event_id": uuid(1), "user": 42, "coins": 1400,
             "price": "17.99", "currency": "USD", "package": "coins_1400", "channel": "app"},
            json_purchase(2, 42, "profile_frame", Some(2)),
            json_purchase(3, 42, "no_such_item", None),
            json_purchase(4, 42, "ad_free_month", None),
            json_purchase(5, 42, "sticker_pack", None),
            json_purchase(6, 42, "sticker_pack", Some(0)),
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<_> = body["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["status"].as_str().unwrap(),
                o["code"].as_str(),
                o["coins"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("accepted", None, Some(1400)),
            ("accepted", None, Some(800)),
            ("rejected", Some("UNKNOWN_ITEM"), None),
            ("rejected", Some("INSUFFICIENT_COINS"), None),
            ("accepted", None, Some(750)),
            ("rejected", Some("INVALID_COUNT"), None),
        ]
    );
    // A malformed purchase (no item) fails the whole batch: nothing applied.
    let (status, body) = s
        .post_events(json!([
            json_purchase(7, 42, "sticker_pack", None),
            {"type": "purchase", "event_id": uuid(8), "user": 42},
        ]))
        .await;
    assert_eq!(status, 422, "{body}");
    // The binary protocol: item codes.
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    let o = client
        .send(&[purchase(9, 42, "sticker_pack", 3)])
        .await
        .unwrap();
    assert_eq!(o[0].status, accepted(600));
    assert_eq!(s.coins(42).await, 600);
    // The read model's wallet (read_model.wallets) follows purchases too.
    let mut conn = giftstream::persist::redis::connect(&redis.url())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let ledger = giftstream::persist::redis::Ledger::default();
    while read_model::projected_seq_of(&mut conn, &ledger, Layout::SINGLE)
        .await
        .unwrap()
        < s.engine.last_seq()
    {
        assert!(tokio::time::Instant::now() < deadline, "read model behind");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let coins: String = ::redis::cmd("HGET")
        .arg(format!("{PREFIX}user:42"))
        .arg("coins")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(coins, "600");
    let (_, wallet) = s.get("/v1/users/42/wallet", Some(READ)).await;
    assert_eq!(wallet["spent_this_month"], 800, "{wallet}");
    let (_, economy_doc) = s.get("/v1/economy", Some(READ)).await;
    let items: Vec<_> = economy_doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["code"].as_u64().unwrap(),
                i["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(items[1], (1, "profile_frame".to_owned()), "{economy_doc}");
    let metrics = s.metrics().await;
    for needle in [
        "giftstream_events_total{type=\"purchase\",outcome=\"accepted\"}",
        "giftstream_events_total{type=\"purchase\",outcome=\"UNKNOWN_ITEM\"}",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    // PUT /v1/economy carries the items: a duplicate id is refused, naming the key; an
    // item left out is retired (its code kept), and purchases of it are UNKNOWN_ITEM on
    // both protocols.
    let mut file = economy().to_file();
    file.items.push(file.items[0].clone());
    let put = |file: &giftstream::economy::EconomyFile| serde_json::to_string(file).unwrap();
    let (status, body) = s.send("PUT", "/v1/economy", Some(ADMIN), put(&file)).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("items[3].id"), "{message}");
    file.items.truncate(2);
    file.items.retain(|i| i.id != "sticker_pack");
    let (status, body) = s.send("PUT", "/v1/economy", Some(ADMIN), put(&file)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["economy"]["items"][0]["retired"], true, "{body}");
    assert_eq!(body["economy"]["items"][2]["retired"], true, "left out too");
    let (_, body) = s
        .post_events(json!([
            {"type": "recharge", "event_id": uuid(20), "user": 43, "coins": 100,
             "price": "1.29", "currency": "USD", "package": "coins_100"},
            json_purchase(21, 43, "sticker_pack", None),
            json_purchase(22, 43, "profile_frame", None),
        ]))
        .await;
    assert_eq!(body["outcomes"][1]["code"], "UNKNOWN_ITEM", "{body}");
    assert_eq!(body["outcomes"][2]["code"], "INSUFFICIENT_COINS", "{body}");
    let o = client
        .send(&[purchase(23, 43, "sticker_pack", 1)])
        .await
        .unwrap();
    assert_eq!(
        o[0].code(),
        Some(RejectCode::UnknownItem),
        "code 0, retired"
    );
    let (_, openapi) = s.get("/openapi.json", None).await;
    assert!(openapi["components"]["schemas"]["JsonPurchase"].is_object());
    let (_, history) = s
        .get("/v1/users/42/transactions?limit=10", Some(READ))
        .await;
    let lines: Vec<_> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["coins_delta"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines[0], ("purchase".to_owned(), -150));
    assert_eq!(lines.len(), 7, "{history}");
    let totals = s.engine.audit().totals;
    assert_eq!(totals.coins_spent_on_purchases, 800);
    s.stop().await.unwrap();

    // A restart replays the journal: the same wallet, history and totals, and a retry
    // answered as the original.
    let (s, _) = TestServer::on_redis(&redis.url(), wallets).await;
    s.serving().await;
    assert_eq!(s.coins(42).await, 600);
    let (_, again) = s
        .get("/v1/users/42/transactions?limit=10", Some(READ))
        .await;
    assert_eq!(again, history);
    assert_eq!(s.engine.audit().totals, totals);
    let (_, body) = s
        .post_events(json!([json_purchase(2, 42, "profile_frame", Some(2))]))
        .await;
    assert_eq!(body["outcomes"][0]["duplicate"], true, "{body}");
    assert_eq!(body["outcomes"][0]["coins"], 800, "{body}");
    let (_, body) = s
        .post_events(json!([json_purchase(2, 42, "profile_frame", Some(1))]))
        .await;
    assert_eq!(body["outcomes"][0]["code"], "EVENT_ID_REUSED", "{body}");
    assert_eq!(s.coins(42).await, 600);
    // The PUT's economy is still in force: the retired item is still unknown.
    let (_, body) = s
        .post_events(json!([json_purchase(24, 43, "sticker_pack", None)]))
        .await;
    assert_eq!(body["outcomes"][0]["code"], "UNKNOWN_ITEM", "{body}");
    s.stop().await.unwrap();
}
