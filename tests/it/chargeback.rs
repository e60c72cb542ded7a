//! Recharge reversals and debt (issue #31, feature 2): a `recharge_reversal` takes back
//! a recharge's coins once; what was already spent becomes `coins_owed`, repaid first by
//! later recharges, and gifts and purchases are `ACCOUNT_IN_DEBT` meanwhile. Here: the
//! rule table, reversals racing gifts and purchases on one account, journal replay and
//! snapshot + replay (format 8, and format 7 read as 8 with nothing to reverse), and a
//! real server over Redis on both protocols with `kill -9` and a restart.

use giftstream::client::Client;
use giftstream::engine::{
    DAY_MS, Effect, Engine, EngineConfig, Event, Outcome, RejectCode, Stamp, Status, UserId,
};
use giftstream::persist::snapshot;
use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, READ, SHIPPED_CONFIG, uuid};
use crate::support::*;

fn coins(c: u64) -> Status {
    Status::Accepted(Effect::Coins(c))
}

fn reversed(coins: u64, owed: u64) -> Status {
    Status::Accepted(Effect::Reversed { coins, owed })
}

fn rejected(code: RejectCode) -> Status {
    Status::Rejected(code)
}

/// The default window: 180 days.
const WINDOW_MS: u64 = 180 * DAY_MS;

/// One step of a rule case: events applied at `stamp`, and the statuses expected.
type Step = (Stamp, Vec<Event>, Vec<Status>);

/// Applies each step of a case to a fresh engine, checks every status, the balance and
/// debt of user 1 after the last one, and the audit.
fn check(name: &str, steps: Vec<Step>, wallet: (u64, u64)) {
    let engine = Engine::new(
        economy(),
        EngineConfig {
            shards: 2,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    for (i, (stamp, events, want)) in steps.into_iter().enumerate() {
        let got: Vec<Status> = engine
            .apply_batch(&events, stamp)
            .iter()
            .map(|o| o.status)
            .collect();
        assert_eq!(got, want, "{name}: step {i}");
    }
    let w = engine.wallet(UserId(1), NOV);
    assert_eq!((w.coins, w.coins_owed), wallet, "{name}: (coins, owed)");
    let audit = engine.audit();
    assert!(audit.is_clean(), "{name}: {:?}", audit.violations);
}

#[test]
fn recharge_reversal_rules() {
    use RejectCode::*;
    let late = |ms: u64| Stamp(NOV.0 + ms);
    let cases: Vec<(&str, Vec<Step>, (u64, u64))> = vec![
        (
            "an unspent recharge is taken back whole",
            vec![(
                NOV,
                vec![recharge(1, 1, "coins_500"), reversal(2, 1, 1)],
                vec![coins(500), reversed(0, 0)],
            )],
            (0, 0),
        ),
        (
            "only its coins: an earlier recharge's stay",
            vec![(
                NOV,
                vec![
                    recharge(1, 1, "coins_100"),
                    recharge(2, 1, "coins_500"),
                    reversal(3, 1, 2),
                ],
                vec![coins(100), coins(600), reversed(100, 0)],
            )],
            (100, 0),
        ),
        (
            "partly spent: the spent part becomes debt",
            vec![(
                NOV,
                vec![
                    recharge(1, 1, "coins_500"),
                    gift(2, 1, 7, "concert", 1),
                    gift(3, 1, 7, "rainbow_puke", 1),
                    reversal(4, 1, 1),
                ],
                vec![
                    coins(500),
                    coins(0),
                    rejected(InsufficientCoins),
                    reversed(0, 500),
                ],
            )],
            (0, 500),
        ),
        (
            "partly spent on a purchase: what is left is taken, the rest owed",
            vec![(
                NOV,
                vec![
                    recharge(1, 1, "coins_500"),
                    purchase(2, 1, "profile_frame", 1),
                    reversal(3, 1, 1),
                ],
                vec![coins(500), coins(200), reversed(0, 300)],
            )],
            (0, 300),
        ),
        (
            "in debt: gifts and purchases are ACCOUNT_IN_DEBT, before limits and funds",
            vec![
                (
                    NOV,
                    vec![
                        account(1, 1, None, true, Some(10)),
                        recharge(2, 1, "coins_100"),
                        gift(3, 1, 7, "rose", 10),
                        reversal(4, 1, 2),
                    ],
                    vec![
                        Status::Accepted(Effect::Stored),
                        coins(100),
                        coins(90),
                        reversed(0, 10),
                    ],
                ),
                (
                    NOV,
                    // Over the monthly budget of 10 and unaffordable: the debt is named.
                    vec![
                        gift(5, 1, 7, "universe", 1),
                        purchase(6, 1, "sticker_pack", 1),
                        gift(7, 1, 7, "no_such_gift", 1),
                    ],
                    vec![
                        rejected(AccountInDebt),
                        rejected(AccountInDebt),
                        rejected(UnknownGift),
                    ],
                ),
            ],
            (0, 10),
        ),
        (
            "a minor in debt is AGE_RESTRICTED first (account order: age, region, debt)",
            vec![(
                NOV,
                // A chargeback is the payment's: it applies to a minor's account too.
                vec![
                    recharge(1, 1, "coins_100"),
                    gift(2, 1, 7, "panda", 2),
                    account(3, 1, None, false, None),
                    reversal(4, 1, 1),
                    gift(5, 1, 7, "rose", 1),
                ],
                vec![
                    coins(100),
                    coins(90),
                    Status::Accepted(Effect::Stored),
                    reversed(0, 10),
                    rejected(AgeRestricted),
                ],
            )],
            (0, 10),
        ),
        (
            "a recharge repays the debt first, then gifting works again",
            vec![(
                NOV,
                vec![
                    recharge(1, 1, "coins_500"),
                    gift(2, 1, 7, "concert", 1),
                    reversal(3, 1, 1),
                    recharge(4, 1, "coins_100"),
                    gift(5, 1, 7, "rose", 1),
                    recharge(6, 1, "coins_500"),
                    gift(7, 1, 7, "rose", 1),
                ],
                vec![
                    coins(500),
                    coins(0),
                    reversed(0, 500),
                    coins(0),
                    rejected(AccountInDebt),
                    coins(100),
                    coins(99),
                ],
            )],
            (99, 0),
        ),
        (
            "a second reversal is ALREADY_REVERSED and changes nothing",
            vec![(
                NOV,
                vec![
                    recharge(1, 1, "coins_100"),
                    recharge(2, 1, "coins_500"),
                    reversal(3, 1, 2),
                    reversal(4, 1, 2),
                ],
                vec![
                    coins(100),
                    coins(600),
                    reversed(100, 0),
                    rejected(AlreadyReversed),
                ],
            )],
            (100, 0),
        ),
        (
            "a reversal of a repaid debt's recharge after the repayment",
            vec![(
                NOV,
                vec![
                    recharge(1, 1, "coins_100"),
                    gift(2, 1, 7, "rainbow_puke", 1),
                    reversal(3, 1, 1),
                    recharge(4, 1, "coins_500"),
                    reversal(5, 1, 4),
                ],
                // 500 credited: 100 repaid, 400 to the balance; its reversal takes the
                // 400 and owes the 100 it had repaid.
                vec![
                    coins(100),
                    coins(0),
                    reversed(0, 100),
                    coins(400),
                    reversed(0, 100),
                ],
            )],
            (0, 100),
        ),
        (
            "another user's recharge, a gift, a rejected recharge, an unknown id: not found",
            vec![(
                NOV,
                vec![
                    recharge(1, 2, "coins_100"),
                    recharge(2, 1, "coins_100"),
                    gift(3, 1, 7, "rose", 1),
                    custom(4, 1, 5, "0.01"),
                    reversal(10, 1, 1),
                    reversal(11, 1, 3),
                    reversal(12, 1, 4),
                    reversal(13, 1, 999),
                    reversal(14, 3, 2),
                ],
                vec![
                    coins(100),
                    coins(100),
                    coins(99),
                    rejected(AmountOutOfRange),
                    rejected(OriginalNotFound),
                    rejected(OriginalNotFound),
                    rejected(OriginalNotFound),
                    rejected(OriginalNotFound),
                    rejected(OriginalNotFound),
                ],
            )],
            (99, 0),
        ),
        (
            "the window: at window - 1 ms reversed, at the window not found",
            vec![
                (
                    NOV,
                    vec![recharge(1, 1, "coins_100"), recharge(2, 1, "coins_500")],
                    vec![coins(100), coins(600)],
                ),
                (
                    late(WINDOW_MS - 1),
                    vec![reversal(3, 1, 1)],
                    vec![reversed(500, 0)],
                ),
                (
                    late(WINDOW_MS),
                    vec![reversal(4, 1, 2)],
                    vec![rejected(OriginalNotFound)],
                ),
            ],
            (500, 0),
        ),
        (
            "a recharge after the window drops the old records for good",
            vec![
                (NOV, vec![recharge(1, 1, "coins_100")], vec![coins(100)]),
                (
                    late(WINDOW_MS + 1),
                    vec![
                        recharge(2, 1, "coins_500"),
                        reversal(3, 1, 1),
                        reversal(4, 1, 2),
                    ],
                    vec![coins(600), rejected(OriginalNotFound), reversed(100, 0)],
                ),
            ],
            (100, 0),
        ),
    ];
    for (name, steps, wallet) in cases {
        check(name, steps, wallet);
    }
}

#[test]
fn a_retried_reversal_is_its_original_outcome_and_a_reused_id_is_refused() {
    let engine = engine();
    engine.apply_batch(
        &[recharge(1, 1, "coins_500"), gift(2, 1, 7, "concert", 1)],
        NOV,
    );
    let chargeback = reversal(3, 1, 1);
    let first = engine.apply_batch(&[chargeback, chargeback], NOV);
    assert_eq!(first[0].status, reversed(0, 500));
    assert_eq!(
        first[1],
        Outcome {
            duplicate: true,
            ..first[0]
        }
    );
    // Later, after the debt was repaid: still the original answer, nothing applied again.
    engine.apply_batch(&[recharge(4, 1, "coins_1400")], NOV);
    let retry = engine.apply_batch(&[chargeback], NOV)[0];
    assert_eq!(
        retry,
        Outcome {
            duplicate: true,
            ..first[0]
        }
    );
    for reused in [
        reversal(3, 1, 4),
        reversal(3, 2, 1),
        gift(3, 1, 7, "rose", 1),
    ] {
        let got = engine.apply_batch(&[reused], NOV)[0];
        assert_eq!(
            (got.seq, got.code()),
            (0, Some(RejectCode::EventIdReused)),
            "{reused:?}"
        );
    }
    let w = engine.wallet(UserId(1), NOV);
    assert_eq!((w.coins, w.coins_owed), (900, 0));
    // The history: the reversal took nothing from the balance (all was spent), the
    // recharge after it repaid 500 and brought 900.
    let lines: Vec<(&str, i128)> = engine
        .history(UserId(1), 10)
        .iter()
        .map(|h| (h.kind.as_str(), h.coins_delta))
        .collect();
    assert_eq!(
        lines,
        [
            ("recharge", 900),
            ("recharge_reversal", 0),
            ("gift", -500),
            ("recharge", 500)
        ]
    );
    let t = engine.audit().totals;
    assert_eq!(
        (t.coins_recharged, t.coins_reversed, t.coins_owed),
        (1900, 500, 0)
    );
    assert_eq!(t.revenue_reversed.len(), 1);
}

/// Threads send user 1's gifts and purchases while others reverse its recharges. In
/// sequence order each outcome is what a model of balance and debt says, and the audit
/// (coins recharged - reversed = in wallets - owed + spent) holds.
#[test]
fn reversals_racing_gifts_and_purchases_on_one_account_conserve_coins() {
    for shards in [1, 4] {
        let engine = Engine::new(
            economy(),
            EngineConfig {
                shards,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        // Ten recharges of 500 to reverse, 5,000 coins in all.
        let funding: Vec<Event> = (0..10).map(|i| recharge(100 + i, 1, "coins_500")).collect();
        assert!(
            engine
                .apply_batch(&funding, NOV)
                .iter()
                .all(Outcome::is_accepted)
        );
        std::thread::scope(|scope| {
            for t in 0..3u128 {
                let engine = &engine;
                scope.spawn(move || {
                    for b in 0..40u128 {
                        let id = 1 << 40 | t << 20 | b << 4;
                        // Reversals in the second half, when the coins are mostly spent.
                        let events = if b % 8 == 3 && b > 16 {
                            // Reversals (each recharge twice over the threads) and a
                            // recharge that repays.
                            vec![
                                reversal(id, 1, 100 + (b / 8 + t * 2) % 10),
                                recharge(id + 1, 1, "coins_100"),
                            ]
                        } else {
                            vec![
                                gift(id, 1, 7, ["rose", "panda", "concert"][(b % 3) as usize], 1),
                                purchase(id + 1, 1, "sticker_pack", 1),
                            ]
                        };
                        engine.apply_batch(&events, NOV);
                    }
                });
            }
        });
        let mut log = engine.drain_log();
        log.sort_by_key(|e| e.seq);
        let cost = |e: &Event| match e {
            Event::Gift(g) => economy().gifts[g.gift.0 as usize].coins * u64::from(g.count),
            Event::Purchase(p) => economy().items[p.item.0 as usize].coins,
            _ => 0,
        };
        let (mut balance, mut owed) = (0u64, 0u64);
        let mut credited = std::collections::HashMap::new();
        let mut seen = [0usize; 4];
        for e in &log {
            let want = match e.event {
                Event::Recharge(r) => {
                    credited.insert(r.id, (r.coins, false));
                    let repaid = owed.min(r.coins);
                    owed -= repaid;
                    balance += r.coins - repaid;
                    coins(balance)
                }
                Event::RechargeReversal(r) => match credited.get_mut(&r.recharge) {
                    Some((_, true)) => rejected(RejectCode::AlreadyReversed),
                    Some((c, done)) => {
                        *done = true;
                        let taken = balance.min(*c);
                        owed += *c - taken;
                        balance -= taken;
                        seen[0] += usize::from(owed > 0);
                        reversed(balance, owed)
                    }
                    None => rejected(RejectCode::OriginalNotFound),
                },
                ref spend => {
                    if owed > 0 {
                        seen[1] += 1;
                        rejected(RejectCode::AccountInDebt)
                    } else if balance < cost(spend) {
                        seen[2] += 1;
                        rejected(RejectCode::InsufficientCoins)
                    } else {
                        seen[3] += 1;
                        balance -= cost(spend);
                        coins(balance)
                    }
                }
            };
            assert_eq!(
                e.outcome.status, want,
                "{shards} shards: seq {} {:?}",
                e.seq, e.event
            );
        }
        // Debt made (and so refusals for it) and spends accepted; short funds are likely
        // but depend on the interleaving.
        assert!(
            seen[0] > 0 && seen[1] > 0 && seen[3] > 0,
            "debt made, in-debt refusals, spends (short funds): {seen:?}"
        );
        let w = engine.wallet(UserId(1), NOV);
        assert_eq!((w.coins, w.coins_owed), (balance, owed));
        let audit = engine.audit();
        assert!(audit.is_clean(), "{:?}", audit.violations);
        let t = audit.totals;
        assert_eq!(
            t.coins_recharged + t.coins_owed,
            t.coins_in_wallets + t.coins_spent + t.coins_spent_on_purchases + t.coins_reversed
        );
        assert_eq!(t.coins_owed, u128::from(owed));
    }
}

/// Reversals, debts and repayments of several users.
fn life(from: u128, users: std::ops::Range<u64>) -> Vec<Event> {
    let mut events = Vec::new();
    for (k, user) in users.enumerate() {
        let id = from + 10 * k as u128;
        events.push(recharge(id, user, "coins_500"));
        events.push(gift(id + 1, user, 90, "concert", 1));
        events.push(recharge(id + 2, user, "coins_100"));
        events.push(reversal(id + 3, user, id));
        events.push(reversal(id + 4, user, id + 2 - 2 * (user as u128 % 2)));
        events.push(purchase(id + 5, user, "sticker_pack", 1));
    }
    events
}

/// A live engine, its journal replayed, and its snapshot (a file, format 8) plus the
/// journal after it give the same state: balances, debts, records, reversed totals.
#[test]
fn reversals_and_debts_replay_from_the_journal_and_a_snapshot_to_the_same_state() {
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    engine.apply_batch(&life(1_000, 1..7), NOV);
    let (state, mut log) = engine.snapshot();
    let at_cut = engine.audit().totals;
    assert!(
        at_cut.coins_owed > 0 && at_cut.users_in_debt > 0,
        "{at_cut:?}"
    );
    // After the cut: more reversals (of recharges from before it), repayments.
    engine.apply_batch(&life(2_000, 4..10), DEC);
    engine.apply_batch(
        &[reversal(3_000, 1, 1_002), recharge(3_001, 2, "coins_1400")],
        DEC,
    );
    log.extend(engine.drain_log());
    let bytes = giftstream::persist::redis::JournalBatch::from_entries(&log).encode();
    assert_eq!(bytes[0], 10, "journal format 10");
    let log = giftstream::persist::redis::JournalBatch::decode(&bytes)
        .unwrap()
        .into_entries()
        .unwrap();
    let live = engine.state_fingerprint();
    let totals = engine.audit().totals;
    assert!(engine.audit().is_clean());

    let replayed = Engine::new(economy(), config.clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live, "replay of the journal");
    assert_eq!(replayed.audit().totals, totals);

    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(economy(), config.clone(), read).unwrap();
    let restored_totals = restored.audit().totals;
    assert_eq!(
        (restored_totals.coins_owed, restored_totals.coins_reversed),
        (at_cut.coins_owed, at_cut.coins_reversed)
    );
    restored.replay(&log[state.last_seq() as usize..]).unwrap();
    assert_eq!(restored.state_fingerprint(), live, "snapshot + journal");
}

/// A state of format 7 is format 8 less its two trailing lists (recharge records and
/// debts, one zero byte each when empty): a ledger with nothing to reverse, written as
/// format 8, cut to format 7 and read, is the same ledger; a recharge after the upgrade
/// can be reversed.
#[test]
fn a_format_7_snapshot_reads_as_a_state_with_nothing_to_reverse() {
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    engine.apply_batch(
        &[
            account(1, 5, None, true, Some(900)),
            gift(2, 6, 7, "rose", 1),
            goal(3, 9, 7, 1_000),
        ],
        NOV,
    );
    let (state, _) = engine.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let bytes = std::fs::read(&path).unwrap();
    let tail = giftstream::protocol::encode_serde(&state.view().format_8_tail())
        .unwrap()
        .len();
    let v7 = as_format_7(&bytes, tail);
    let (header, state7) = snapshot::parse(std::path::Path::new("v7.gsnap"), &v7).unwrap();
    assert_eq!(header.version, 7);
    let loaded = Engine::from_state(economy(), config, state7).unwrap();
    assert_eq!(loaded.state_fingerprint(), engine.state_fingerprint());
    assert_eq!(loaded.audit().totals.recharge_records, 0);
    let got = loaded.apply_batch(&[recharge(7, 5, "coins_100"), reversal(8, 5, 7)], NOV);
    assert_eq!(
        got[1].status,
        reversed(0, 0),
        "a recharge after the upgrade"
    );
    // A body cut anywhere else is refused (the checksum matches, the decoding does not).
    let mut short = v7.clone();
    short.truncate(short.len() - 1);
    let body = short[snapshot::HEADER_BYTES..].to_vec();
    short[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
    short[56..60].copy_from_slice(&crc32fast::hash(&body).to_le_bytes());
    assert!(snapshot::parse(std::path::Path::new("short.gsnap"), &short).is_err());
}

/// `bytes` (a format-8 snapshot whose two trailing lists are empty) as format 7 wrote
/// it: the body without its last two bytes, the header's version, length and CRC-32
/// (at bytes 8, 48 and 56 of `snapshot::HEADER_BYTES`) set to match.
/// A format-8 snapshot file as format 7 wrote it: the body less the `tail` bytes format 8
/// appended, the header's version, length and checksum set to match.
fn as_format_7(bytes: &[u8], tail: usize) -> Vec<u8> {
    let header = snapshot::HEADER_BYTES;
    let body = &bytes[header..bytes.len() - tail];
    let mut out = bytes[..header].to_vec();
    out[8..12].copy_from_slice(&7u32.to_le_bytes());
    out[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
    out[56..60].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Over a real server with a real Redis: both protocols, the wallet and the history,
/// `kill -9` and a restart (the debt and the records come back from the journal), the
/// audit's conservation line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_over_http_and_tcp_survive_kill_9_and_the_audit_balances() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("giftstream.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let redis = RedisServer::start();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let http = reqwest::Client::new();
    let post = |server_http: String, events: Value| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{server_http}/v1/events"))
                .bearer_auth(INGEST)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let recharge_json = |n: u128, user: u64| {
        json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": 500,
            "price": "6.49", "currency": "USD", "package": "coins_500"})
    };
    let reversal_json = |n: u128, user: u64, of: u128| {
        json!({"type": "recharge_reversal", "event_id": uuid(n), "user": user,
            "recharge": uuid(of)})
    };
    let (status, body) = post(
        server.http.clone(),
        json!([
            recharge_json(1, 42),
            {"type": "gift", "event_id": uuid(2), "sender": 42, "creator": 7, "stream": 9,
             "gift": "rainbow_puke", "count": 3},
            reversal_json(3, 42, 1),
            reversal_json(4, 42, 1),
            reversal_json(5, 42, 2),
            {"type": "gift", "event_id": uuid(6), "sender": 42, "creator": 7, "stream": 9,
             "gift": "rose", "count": 1},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let o = &body["outcomes"];
    assert_eq!(o[0]["coins"], 500, "{body}");
    assert_eq!(o[1]["coins"], 200, "{body}");
    assert_eq!(
        (
            o[2]["status"].clone(),
            o[2]["coins"].clone(),
            o[2]["coins_owed"].clone()
        ),
        (json!("accepted"), json!(0), json!(300)),
        "{body}"
    );
    assert_eq!(o[3]["code"], "ALREADY_REVERSED", "{body}");
    assert_eq!(o[4]["code"], "ORIGINAL_NOT_FOUND", "{body}");
    assert_eq!(o[5]["code"], "ACCOUNT_IN_DEBT", "{body}");
    // A malformed reversal (not a UUID) fails the whole batch.
    let (status, body) = post(
        server.http.clone(),
        json!([recharge_json(7, 43), {"type": "recharge_reversal", "event_id": uuid(8),
            "user": 43, "recharge": "nope"}]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[1].recharge"),
        "{body}"
    );
    // The binary protocol: a recharge of user 43, its reversal, a retry of it.
    let client = Client::connect(&server.tcp, INGEST).await.unwrap();
    let got = client
        .send(&[
            recharge(10, 43, "coins_100"),
            gift(11, 43, 7, "panda", 2),
            reversal(12, 43, 10),
        ])
        .await
        .unwrap();
    assert_eq!(got[2].status, reversed(0, 10));
    let wallet = server.read(&http, "/v1/users/42/wallet").await;
    assert_eq!(
        (wallet["coins"].clone(), wallet["coins_owed"].clone()),
        (json!(0), json!(300)),
        "{wallet}"
    );
    let history = server
        .read(&http, "/v1/users/42/transactions?limit=10")
        .await;
    let line = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == uuid(3))
        .unwrap()
        .clone();
    assert_eq!(line["type"], "recharge_reversal", "{history}");
    assert_eq!(
        line["coins_delta"], -200,
        "what left the balance: {history}"
    );

    let metrics = server.metrics(&http).await;
    let accepted = "giftstream_events_total{type=\"recharge_reversal\",outcome=\"accepted\"} 2";
    assert!(metrics.contains(accepted), "metrics lack {accepted}");
    // kill -9 and a restart: the journal brings back the debt and the records.
    server.kill9();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let client = Client::connect(&server.tcp, INGEST).await.unwrap();
    let retry = client.send(&[reversal(12, 43, 10)]).await.unwrap();
    assert_eq!(
        (retry[0].status, retry[0].duplicate),
        (reversed(0, 10), true)
    );
    let wallet = server.read(&http, "/v1/users/42/wallet").await;
    assert_eq!(wallet["coins_owed"], 300, "{wallet}");
    let (_, body) = post(
        server.http.clone(),
        json!([reversal_json(13, 42, 1), recharge_json(14, 42),
            {"type": "gift", "event_id": uuid(15), "sender": 42, "creator": 7, "stream": 9,
             "gift": "rose", "count": 1}]),
    )
    .await;
    let o = &body["outcomes"];
    assert_eq!(o[0]["code"], "ALREADY_REVERSED", "{body}");
    assert_eq!(o[1]["coins"], 200, "repaid 300 first: {body}");
    assert_eq!(o[2]["coins"], 199, "{body}");
    let metrics = server.metrics(&http).await;
    for needle in [
        "giftstream_events_total{type=\"recharge_reversal\",outcome=\"ALREADY_REVERSED\"}",
        "giftstream_recharge_records_evicted_total 0",
        "giftstream_recharge_records ",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}");
    }
    let openapi: Value = http
        .get(format!("http://{}/openapi.json", server.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["components"]["schemas"]["JsonRechargeReversal"].is_object());
    let _ = READ;
    server.stop();
    let (ok, out) = run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", redis.url().as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert!(ok, "{out}");
    // 1,100 recharged (500 + 100 + 500), 600 reversed; 43 owes 10; 42 holds 199; 311
    // spent on gifts (300 + 10 + 1).
    assert!(
        out.contains("coins recharged 1100 - reversed 600 = in wallets 199 - owed 10 + spent on gifts 311 + spent on purchases 0"),
        "{out}"
    );
    assert!(
        out.contains("revenue USD 14.27, reversed 7.78, net 6.49"),
        "{out}"
    );
}
