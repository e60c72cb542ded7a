//! The earnings hold (`economy.earnings_hold_ms`, issue #31 feature 4): rule tables at
//! the release time's edges, held and available diamonds shown apart, a hold changed by
//! an economy edit and across a restart, settlements, and the bucket bound.

use std::sync::Arc;

use giftstream::engine::{
    CreatorId, Effect, Engine, EngineConfig, Event, RejectCode, Stamp, Status, release_at,
};

use crate::support::server::{ADMIN, READ, TestServer, uuid};
use crate::support::*;

/// 15 s: a grid of 1 s, so release times are exact at NOV + whole seconds.
const HOLD: u64 = 15_000;

fn held_engine(hold_ms: u64) -> Engine {
    Engine::new(held_economy(hold_ms), EngineConfig::default()).unwrap()
}

/// `ms` after NOV.
fn at(ms: u64) -> Stamp {
    Stamp(NOV.0 + ms)
}

/// 42_000 coins for `user` (ids `id..id + 6`).
fn fund(id: u128, user: u64) -> Vec<Event> {
    (0..6)
        .map(|i| recharge(id + i, user, "coins_7000"))
        .collect()
}

/// 40_000 coins from `sender` to `creator`: 20_000 diamonds, the USD payout minimum.
fn gifts_20_000(id: u128, sender: u64, creator: u64) -> Vec<Event> {
    vec![
        gift(id, sender, creator, "universe", 1),
        gift(id + 1, sender, creator, "drama_queen", 1),
        gift(id + 2, sender, creator, "rose", 1),
    ]
}

fn accept_all(engine: &Engine, events: &[Event], stamp: Stamp) {
    for (i, o) in engine.apply_batch(events, stamp).iter().enumerate() {
        assert!(o.is_accepted(), "event {i}: {o:?}");
    }
}

fn paid_out(available: u64) -> Status {
    Status::Accepted(Effect::PaidOut {
        diamonds_available: available,
        value: dec("100.000"),
    })
}

fn held_and_available(engine: &Engine, creator: u64, now: Stamp) -> (u128, u128) {
    let c = engine.creator_at(CreatorId(creator), now);
    (c.diamonds_held, c.diamonds_available)
}

fn assert_clean(engine: &Engine) {
    let report = engine.audit();
    assert!(report.is_clean(), "{:?}", report.violations);
    let t = &report.totals;
    assert_eq!(
        t.diamonds_held + t.diamonds_available + t.diamonds_paid,
        t.diamonds_credited + t.diamonds_settled_in
    );
}

#[test]
fn a_payout_one_ms_before_the_release_time_is_refused_and_at_it_accepted() {
    let insufficient = Status::Rejected(RejectCode::InsufficientDiamonds);
    let cases = [
        ("at the credit", 0, 20_000, insufficient),
        ("one ms before", HOLD - 1, 20_000, insufficient),
        ("at the release time", HOLD, 20_000, paid_out(0)),
        ("after it", HOLD + 1, 20_000, paid_out(0)),
        (
            "limits before funds while held",
            HOLD - 1,
            19_999,
            Status::Rejected(RejectCode::BelowPayoutMinimum),
        ),
    ];
    for (name, offset, diamonds, want) in cases {
        let engine = held_engine(HOLD);
        accept_all(&engine, &fund(1, 1), at(0));
        accept_all(&engine, &gifts_20_000(10, 1, 2), at(0));
        let p = payout(100, 2, diamonds, "USD");
        let got = engine.apply_batch(&[p], at(offset))[0];
        assert_eq!(got.status, want, "{name}");
        assert_clean(&engine);
        // A retry after the release time is the original outcome, never re-decided.
        let again = engine.apply_batch(&[p], at(10 * HOLD))[0];
        assert!(again.duplicate && again.status == want, "{name}: {again:?}");
    }
}

#[test]
fn a_hold_of_zero_is_todays_behaviour() {
    let plain = engine();
    let zero = held_engine(0);
    assert_eq!(
        zero.economy().to_doc().digest(),
        plain.economy().to_doc().digest()
    );
    for engine in [&plain, &zero] {
        accept_all(engine, &fund(1, 1), at(0));
        accept_all(engine, &gifts_20_000(10, 1, 2), at(0));
        assert_eq!(held_and_available(engine, 2, at(0)), (0, 20_000));
        let o = engine.apply_batch(&[payout(100, 2, 20_000, "USD")], at(0))[0];
        assert_eq!(o.status, paid_out(0));
        assert_clean(engine);
    }
    assert_eq!(plain.audit().totals, zero.audit().totals);
}

#[test]
fn held_and_available_diamonds_are_shown_apart_and_release_exactly() {
    let engine = held_engine(HOLD);
    accept_all(&engine, &fund(1, 1), at(0));
    accept_all(&engine, &fund(20, 1), at(0));
    // 40_000 coins now (20_000 diamonds), 5_001 five seconds later (2_500.5).
    accept_all(&engine, &gifts_20_000(10, 1, 2), at(0));
    accept_all(
        &engine,
        &[gift(30, 1, 2, "drama_queen", 1), gift(31, 1, 2, "rose", 1)],
        at(5_000),
    );
    let c = engine.creator(CreatorId(2));
    assert_eq!(
        (c.diamonds_total, c.diamonds_held, c.diamonds_available),
        (22_500, 22_500, 0)
    );
    assert_eq!(held_and_available(&engine, 2, at(HOLD - 1)), (22_500, 0));
    assert_eq!(held_and_available(&engine, 2, at(HOLD)), (2_500, 20_000));
    assert_eq!(
        held_and_available(&engine, 2, at(HOLD + 4_999)),
        (2_500, 20_000)
    );
    assert_eq!(
        held_and_available(&engine, 2, at(HOLD + 5_000)),
        (0, 22_500)
    );
    // Reads at a later time do not move the ledger's time: a payout stamped at the
    // first release time still finds the second credit held.
    let over = engine.apply_batch(&[payout(100, 2, 20_001, "USD")], at(HOLD))[0];
    assert_eq!(over.code(), Some(RejectCode::InsufficientDiamonds));
    let o = engine.apply_batch(&[payout(101, 2, 20_000, "USD")], at(HOLD))[0];
    assert_eq!(o.status, paid_out(0));
    assert_eq!(held_and_available(&engine, 2, at(HOLD)), (2_500, 0));
    assert_eq!(held_and_available(&engine, 2, at(HOLD + 5_000)), (0, 2_500));
    assert_clean(&engine);
    let t = engine.audit().totals;
    assert_eq!(
        (
            t.diamonds_credited,
            t.diamonds_held,
            t.diamonds_available,
            t.diamonds_paid
        ),
        (22_500, 2_500, 0, 20_000)
    );
    // What is held counts in the totals and the leaderboard already.
    assert_eq!(engine.top_creators(1), vec![(CreatorId(2), 22_500)]);
}

#[test]
fn the_ledgers_time_never_goes_back() {
    let engine = held_engine(HOLD);
    accept_all(&engine, &fund(1, 1), at(0));
    accept_all(&engine, &gifts_20_000(10, 1, 2), at(0));
    // Another user's recharge stamped at the release time moves the ledger's time there;
    // a payout stamped before it (stamps of concurrent batches are not in order) finds
    // the diamonds released, as a replay will.
    accept_all(&engine, &[recharge(50, 3, "coins_70")], at(HOLD));
    let o = engine.apply_batch(&[payout(100, 2, 20_000, "USD")], at(1))[0];
    assert_eq!(o.status, paid_out(0));
    let replayed = held_engine(HOLD);
    replayed.replay(&engine.drain_log()).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

#[test]
fn a_hold_changed_by_an_economy_edit_keeps_each_credits_own_across_a_restart() {
    let config = EngineConfig::default();
    let live = Engine::new(held_economy(60_000), config.clone()).unwrap();
    for user in [11, 12, 13] {
        accept_all(&live, &fund(u128::from(user) * 10_000, user), at(0));
    }
    // Credited under a 60 s hold.
    accept_all(&live, &gifts_20_000(1_000, 11, 2), at(0));
    // The hold is lifted: later credits are available at once, earlier ones keep theirs.
    let v1 = live
        .economy_successor(held_economy(0).to_file())
        .unwrap()
        .unwrap();
    live.change_economy(v1.clone(), at(1)).unwrap();
    accept_all(&live, &gifts_20_000(1_010, 12, 3), at(2));
    let o = live.apply_batch(&[payout(1_100, 3, 20_000, "USD")], at(3))[0];
    assert_eq!(o.status, paid_out(0), "credited without a hold");
    let o = live.apply_batch(&[payout(1_101, 2, 20_000, "USD")], at(3))[0];
    assert_eq!(
        o.code(),
        Some(RejectCode::InsufficientDiamonds),
        "its own hold"
    );
    let (state, mut log) = live.snapshot();
    // A longer hold for later credits does not lengthen the first one's.
    let v2 = live
        .economy_successor(held_economy(120_000).to_file())
        .unwrap()
        .unwrap();
    live.change_economy(v2.clone(), at(4)).unwrap();
    accept_all(&live, &gifts_20_000(1_020, 13, 4), at(5));
    let o = live.apply_batch(&[payout(1_102, 2, 20_000, "USD")], at(60_000))[0];
    assert_eq!(o.status, paid_out(0), "released at its own time");
    log.extend(live.drain_log());
    assert_clean(&live);

    // Restarts: the whole journal replayed, and the snapshot plus the rest.
    let replayed = Engine::new(held_economy(60_000), config.clone()).unwrap();
    replayed.know_economy(Arc::new(v1.clone()));
    replayed.know_economy(Arc::new(v2.clone()));
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live.state_fingerprint());
    // The snapshot records the economy in force (v1): the file at the restart does not
    // matter for what was credited.
    let restored = Engine::from_state(economy(), config, state).unwrap();
    restored.know_economy(Arc::new(v2));
    let rest: Vec<_> = log
        .iter()
        .filter(|e| e.seq > restored.last_seq())
        .cloned()
        .collect();
    restored.replay(&rest).unwrap();
    assert_eq!(restored.state_fingerprint(), live.state_fingerprint());
    // Creator 4's diamonds were credited at +5 ms under the 120 s hold: one ms before
    // their release time a payout is refused, at it accepted — on every engine.
    let release = release_at(at(5), 120_000);
    assert!(release >= at(5).0 + 120_000);
    for engine in [&live, &replayed, &restored] {
        let p = payout(1_103, 4, 20_000, "USD");
        let o = engine.apply_batch(&[p], Stamp(release - 1))[0];
        assert_eq!(o.code(), Some(RejectCode::InsufficientDiamonds));
        let o = engine.apply_batch(&[payout(1_104, 4, 20_000, "USD")], Stamp(release))[0];
        assert_eq!(o.status, paid_out(0));
        assert_clean(engine);
    }
    assert_eq!(replayed.state_fingerprint(), live.state_fingerprint());
}

fn settlement(creator: u64, source: u16, diamonds: u64) -> Event {
    Event::Settlement(giftstream::engine::Settlement {
        id: giftstream::engine::Settlement::id_for_exact(CreatorId(creator), source, diamonds, 0),
        creator: CreatorId(creator),
        source,
        diamonds,
        nanos: 0,
    })
}

#[test]
fn diamonds_settled_in_are_held_from_the_settlements_stamp() {
    let engine = held_engine(HOLD);
    let o = engine.apply_batch(&[settlement(2, 1, 20_000)], at(1_000))[0];
    assert_eq!(
        o.status,
        Status::Accepted(Effect::Settled { credited: 20_000 })
    );
    let c = engine.creator(CreatorId(2));
    assert_eq!(
        (c.diamonds_settled_in, c.diamonds_held, c.diamonds_available),
        (20_000, 20_000, 0)
    );
    let o = engine.apply_batch(&[payout(10, 2, 20_000, "USD")], at(1_000 + HOLD - 1))[0];
    assert_eq!(o.code(), Some(RejectCode::InsufficientDiamonds));
    let o = engine.apply_batch(&[payout(11, 2, 20_000, "USD")], at(1_000 + HOLD))[0];
    assert_eq!(o.status, paid_out(0));
    assert_clean(&engine);
    let replayed = held_engine(HOLD);
    replayed.replay(&engine.drain_log()).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

/// Whole diamonds held at `t` by an exact list of `(release, billionths)` credits.
fn exact_held(credits: &[(u64, u128)], t: u64) -> u128 {
    let total: u128 = credits.iter().map(|c| c.1).sum();
    let held: u128 = credits.iter().filter(|c| c.0 > t).map(|c| c.1).sum();
    total / 1_000_000_000 - (total - held) / 1_000_000_000
}

#[test]
fn buckets_stay_bounded_across_hold_changes_and_never_release_early() {
    let live = held_engine(150_000);
    accept_all(&live, &fund(1, 1), at(0));
    let mut credits = Vec::new();
    let mut id = 100;
    let mut economies = Vec::new();
    // Roses under four holds and grids: 150 s (10 s grid) for 150 s, so 16 buckets are
    // held when 15 s (1 s grid) comes in force and adds up to 16 more; at the change to
    // 30 s (2 s grid) every creator keeps 16, the latest merged into the latest.
    let phases = [
        (0u64, 150_000u64, 150u64, 1_000u64),
        (151_000, 15_000, 30, 500),
        (167_000, 30_000, 30, 500),
        (183_000, 150_000, 10, 500),
    ];
    for (start, hold, count, step) in phases {
        if start > 0 {
            let next = live
                .economy_successor(held_economy(hold).to_file())
                .unwrap()
                .unwrap();
            live.change_economy(next.clone(), at(start)).unwrap();
            economies.push(next);
        }
        for k in 0..count {
            let stamp = at(start + 1 + k * step);
            id += 1;
            accept_all(&live, &[gift(id, 1, 2, "rose", 1)], stamp);
            credits.push((release_at(stamp, hold), 500_000_000u128));
        }
        assert_clean(&live);
    }
    let last = credits.iter().map(|c| c.0).max().unwrap();
    // Reads look from the ledger's time (the last gift's stamp) on, never back.
    let (mut probe, mut delayed) = (at(187_501).0, false);
    while probe <= last + 3_000 {
        let (held, _) = held_and_available(&live, 2, Stamp(probe));
        let exact = exact_held(&credits, probe);
        assert!(held >= exact, "released early at +{}", probe - NOV.0);
        delayed |= held > exact;
        probe += 250;
    }
    assert!(delayed, "the change to a 2 s grid merged buckets");
    assert_eq!(held_and_available(&live, 2, Stamp(last + 3_000)).0, 0);
    let replayed = held_engine(150_000);
    for e in economies {
        replayed.know_economy(Arc::new(e));
    }
    replayed.replay(&live.drain_log()).unwrap();
    assert_eq!(replayed.state_fingerprint(), live.state_fingerprint());
}

/// HTTP: a hold put in force with `PUT /v1/economy`, a creator's diamonds shown held
/// and available apart, a payout over the available refused, and `/openapi.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_shows_held_and_available_diamonds() {
    use serde_json::json;
    let s = TestServer::start().await;
    let (status, body) = s
        .send(
            "PUT",
            "/v1/economy",
            Some(ADMIN),
            serde_json::to_string(&held_economy(600_000).to_file()).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, economy) = s.get("/v1/economy", Some(READ)).await;
    assert_eq!(economy["earnings_hold_ms"], 600_000);
    let mut events: Vec<_> = (0..6)
        .map(|i| {
            json!({"type": "recharge", "event_id": uuid(i + 1), "user": 42, "coins": 7000,
                   "price": "99.99", "currency": "USD", "package": "coins_7000", "channel": "app"})
        })
        .collect();
    for (i, name) in ["universe", "drama_queen", "rose"].iter().enumerate() {
        events.push(
            json!({"type": "gift", "event_id": uuid(10 + i as u128), "sender": 42,
            "creator": 7, "stream": 9001, "gift": name, "count": 1}),
        );
    }
    events.push(json!({"type": "payout", "event_id": uuid(20), "creator": 7,
        "diamonds": 20000, "currency": "USD"}));
    let (status, out) = s.post_events(json!(events)).await;
    assert_eq!(status, 200, "{out}");
    let outcomes = out["outcomes"].as_array().unwrap();
    assert!(
        outcomes[..9].iter().all(|o| o["status"] == "accepted"),
        "{out}"
    );
    assert_eq!(outcomes[9]["code"], "INSUFFICIENT_DIAMONDS", "{out}");
    let (_, c) = s.get("/v1/creators/7", Some(READ)).await;
    assert_eq!(
        (
            &c["diamonds_total"],
            &c["diamonds_held"],
            &c["diamonds_available"]
        ),
        (&json!(20_000), &json!(20_000), &json!(0)),
        "{c}"
    );
    let (_, doc) = s.get("/openapi.json", None).await;
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["CreatorResponse"]["properties"]["diamonds_held"].is_object());
    assert!(schemas["EconomyResponse"]["properties"]["earnings_hold_ms"].is_object());
}

/// A snapshot of format 6 (written by the build before the hold, fixture) loads with
/// nothing held: its creators' diamonds are available as before.
#[test]
fn a_snapshot_of_format_6_loads_with_nothing_held() {
    use giftstream::persist::snapshot;
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-6.gsnap"
    ))
    .unwrap();
    let (header, state) =
        snapshot::parse(std::path::Path::new("snapshot-format-6.gsnap"), &bytes).unwrap();
    assert_eq!(header.version, 6);
    let loaded = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    let events = crate::durability::format_2_fixture_events();
    let live = Engine::new(economy(), EngineConfig::default()).unwrap();
    live.apply_batch(&events, NOV);
    // Format 6 held no day or week counts (a migrated wallet counts from the first of
    // its month): compared as format 6 could hold the state.
    assert_eq!(loaded.state_fingerprint_v6(), live.state_fingerprint_v6());
    for e in &events {
        if let Event::Gift(g) = e {
            let (held, available) = held_and_available(&loaded, g.creator.0, NOV);
            assert_eq!(held, 0, "{:?}", g.creator);
            assert_eq!(
                available,
                live.creator_at(g.creator, NOV).diamonds_available
            );
        }
    }
    assert_clean(&loaded);
}
