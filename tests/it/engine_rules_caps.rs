//! Spending caps (issue #31, feature 5): the users' daily and weekly budgets beside the
//! monthly one, the economy's platform caps per user per day and ISO week, and which
//! cap a `BUDGET_EXCEEDED` names. Rule tables at the UTC boundaries (the last
//! millisecond of a day and the first of the next, Sunday to Monday, a week across a
//! month end and across a year end), precedence, a late-stamped gift, an economy
//! edited mid-day, bad settings, restart (replay and snapshot), and both protocols.

use giftstream::economy::{EMBEDDED_ECONOMY_TOML, Economy};
use giftstream::engine::{
    BudgetCap, Engine, EngineConfig, Event, RejectCode, Stamp, Status, UserId,
    WINDOW_LIMIT_COINS_MAX,
};

use crate::support::server::*;
use crate::support::*;

const DAY_MS: u64 = 86_400_000;
/// 2026-11-30T00:00:00Z, a Monday: its ISO week (2026-W49) ends on Sunday 2026-12-06.
const MON_NOV_30: Stamp = Stamp(DEC.0 - DAY_MS);
/// 2026-12-07T00:00:00Z, a Monday (2026-W50).
const MON_DEC_7: Stamp = Stamp(DEC.0 + 6 * DAY_MS);
/// 2027-01-01T00:00:00Z, a Friday in 2026-W53 (which runs 2026-12-28 to 2027-01-03).
const JAN_1: Stamp = Stamp(1_798_761_600_000);

fn at(stamp: Stamp, ms: i64) -> Stamp {
    Stamp(stamp.0.checked_add_signed(ms).unwrap())
}

/// An engine whose economy has these platform caps per user.
fn engine_with_caps(daily: Option<u64>, weekly: Option<u64>) -> Engine {
    Engine::new(economy_with_caps(daily, weekly), EngineConfig::default()).unwrap()
}

fn economy_with_caps(daily: Option<u64>, weekly: Option<u64>) -> Economy {
    let mut text = EMBEDDED_ECONOMY_TOML.to_owned();
    text.push_str("\n[spending_caps]\n");
    if let Some(d) = daily {
        text.push_str(&format!("daily_coins = {d}\n"));
    }
    if let Some(w) = weekly {
        text.push_str(&format!("weekly_coins = {w}\n"));
    }
    Economy::from_toml_str(&text).unwrap()
}

/// What one gift was answered: accepted, or the cap its BUDGET_EXCEEDED names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Accepted,
    Over(BudgetCap),
    Other(RejectCode),
}
use Got::*;

fn send(engine: &Engine, event: Event, stamp: Stamp) -> Got {
    let o = engine.apply_batch(&[event], stamp)[0];
    let got = match (o.status, o.cap) {
        (Status::Accepted(_), None) => Accepted,
        (Status::Rejected(RejectCode::BudgetExceeded), Some(cap)) => Over(cap),
        (Status::Rejected(code), None) => Other(code),
        other => panic!("an outcome with a cap that does not fit it: {other:?}"),
    };
    // A retry gets the very same answer, cap included.
    let again = engine.apply_batch(&[event], at(stamp, 1))[0];
    assert!(again.duplicate, "{event:?}");
    assert_eq!(
        (again.seq, again.status, again.cap),
        (o.seq, o.status, o.cap)
    );
    got
}

/// User 1 funded with 7000 coins and these budgets (monthly, weekly, daily).
fn funded(engine: &Engine, budgets_of: (Option<u64>, Option<u64>, Option<u64>), stamp: Stamp) {
    let (m, w, d) = budgets_of;
    for o in engine.apply_batch(
        &[recharge(1, 1, "coins_7000"), budgets(2, 1, m, w, d)],
        stamp,
    ) {
        assert!(o.is_accepted(), "{o:?}");
    }
}

#[test]
fn a_daily_budget_ends_at_the_last_millisecond_of_the_utc_day() {
    let engine = engine();
    funded(&engine, (None, None, Some(100)), DEC);
    let last_ms = at(DEC, DAY_MS as i64 - 1);
    assert_eq!(send(&engine, gift(3, 1, 2, "rose", 60), DEC), Accepted);
    assert_eq!(
        send(&engine, gift(4, 1, 2, "rose", 40), last_ms),
        Accepted,
        "exactly the budget"
    );
    assert_eq!(
        send(&engine, gift(5, 1, 2, "rose", 1), last_ms),
        Over(BudgetCap::DailyBudget)
    );
    let next = at(DEC, DAY_MS as i64);
    assert_eq!(
        send(&engine, gift(6, 1, 2, "rose", 100), next),
        Accepted,
        "a new day at 00:00"
    );
    let w = engine.wallet(UserId(1), next);
    assert_eq!(
        (w.spent_today, w.spent_this_week, w.spent_this_month),
        (100, 200, 200)
    );
    assert_eq!(
        (w.daily_budget_coins, w.weekly_budget_coins),
        (Some(100), None)
    );
    assert_eq!(
        engine
            .wallet(UserId(1), at(next, DAY_MS as i64))
            .spent_today,
        0
    );
    assert!(engine.audit().is_clean());
}

#[test]
fn a_weekly_budget_runs_monday_to_sunday_across_a_month_end_and_a_year_end() {
    // Monday 30 November to Sunday 6 December is one ISO week across the month end.
    let engine = engine();
    funded(&engine, (Some(5_000), Some(300), None), MON_NOV_30);
    assert_eq!(
        send(&engine, gift(3, 1, 2, "rose", 300), at(DEC, -1)),
        Accepted
    );
    assert_eq!(
        send(&engine, gift(4, 1, 2, "rose", 1), DEC),
        Over(BudgetCap::WeeklyBudget),
        "a new month, the same week"
    );
    let sunday_last_ms = at(MON_DEC_7, -1);
    assert_eq!(
        send(&engine, gift(5, 1, 2, "rose", 1), sunday_last_ms),
        Over(BudgetCap::WeeklyBudget)
    );
    assert_eq!(
        send(&engine, gift(6, 1, 2, "rose", 300), MON_DEC_7),
        Accepted,
        "Monday 00:00"
    );
    let w = engine.wallet(UserId(1), MON_DEC_7);
    assert_eq!((w.spent_this_week, w.spent_this_month), (300, 300));

    // 2026-W53 runs from Monday 28 December 2026 to Sunday 3 January 2027: one week
    // across the year end (the month's budget starts again on 1 January).
    let engine = engine_with_caps(None, Some(1_000));
    funded(
        &engine,
        (Some(600), None, None),
        at(JAN_1, -4 * DAY_MS as i64),
    );
    assert_eq!(
        send(&engine, gift(3, 1, 2, "concert", 1), at(JAN_1, -1)),
        Accepted
    );
    assert_eq!(
        send(&engine, gift(4, 1, 2, "rose", 500), JAN_1),
        Accepted,
        "a new month and year"
    );
    assert_eq!(
        send(&engine, gift(5, 1, 2, "rose", 1), JAN_1),
        Over(BudgetCap::WeeklyPlatformCap),
        "500 + 500 in 2026-W53"
    );
    let sunday_jan_3_last_ms = at(JAN_1, 3 * DAY_MS as i64 - 1);
    assert_eq!(
        send(&engine, gift(6, 1, 2, "rose", 1), sunday_jan_3_last_ms),
        Over(BudgetCap::WeeklyPlatformCap)
    );
    let monday_jan_4 = at(JAN_1, 3 * DAY_MS as i64);
    assert_eq!(
        send(&engine, gift(7, 1, 2, "rose", 100), monday_jan_4),
        Accepted,
        "2027-W01"
    );
    assert_eq!(
        send(&engine, gift(8, 1, 2, "rose", 1), monday_jan_4),
        Over(BudgetCap::MonthlyBudget),
        "January's 600"
    );
    assert!(engine.audit().is_clean());
}

#[test]
fn when_several_limits_are_exceeded_the_longest_window_and_the_platform_are_named() {
    // Every limit is 100 coins or unset; a gift of 101 roses exceeds the set ones.
    // (monthly, weekly cap, weekly budget, daily cap, daily budget) -> the cap named.
    let on = Some(100);
    type Set = (bool, bool, bool, bool, bool);
    let cases: [(Set, BudgetCap); 7] = [
        ((true, true, true, true, true), BudgetCap::MonthlyBudget),
        (
            (false, true, true, true, true),
            BudgetCap::WeeklyPlatformCap,
        ),
        ((false, false, true, true, true), BudgetCap::WeeklyBudget),
        (
            (false, false, false, true, true),
            BudgetCap::DailyPlatformCap,
        ),
        ((false, false, false, false, true), BudgetCap::DailyBudget),
        (
            (false, true, false, false, true),
            BudgetCap::WeeklyPlatformCap,
        ),
        ((false, false, true, true, false), BudgetCap::WeeklyBudget),
    ];
    for ((monthly, weekly_cap, weekly, daily_cap, daily), want) in cases {
        let pick = |set: bool| if set { on } else { None };
        let engine = engine_with_caps(pick(daily_cap), pick(weekly_cap));
        funded(&engine, (pick(monthly), pick(weekly), pick(daily)), DEC);
        assert_eq!(
            send(&engine, gift(3, 1, 2, "rose", 101), DEC),
            Over(want),
            "{want:?}"
        );
        assert_eq!(send(&engine, gift(4, 1, 2, "rose", 100), DEC), Accepted);
    }
    // The account comes before the limits, the limits before the funds.
    let engine = engine_with_caps(Some(10), None);
    engine.apply_batch(&[account(1, 1, None, false, None)], DEC);
    assert_eq!(
        send(&engine, gift(2, 1, 2, "rose", 11), DEC),
        Other(RejectCode::AgeRestricted)
    );
    assert_eq!(
        send(&engine, gift(3, 3, 2, "rose", 11), DEC),
        Over(BudgetCap::DailyPlatformCap),
        "a user never funded: the cap before the funds"
    );
    assert_eq!(
        send(&engine, gift(4, 3, 2, "rose", 10), DEC),
        Other(RejectCode::InsufficientCoins)
    );
}

#[test]
fn a_late_gift_from_the_day_before_counts_in_the_later_day() {
    // Stamps are taken before the locks: a 23:59:59.999 gift may be applied after a
    // 00:00 one. It counts in the later day (and week): a limit is never doubled.
    let engine = engine();
    funded(
        &engine,
        (None, Some(1_000), Some(100)),
        at(MON_DEC_7, -(DAY_MS as i64)),
    );
    assert_eq!(
        send(&engine, gift(3, 1, 2, "rose", 100), MON_DEC_7),
        Accepted
    );
    assert_eq!(
        send(&engine, gift(4, 1, 2, "rose", 1), at(MON_DEC_7, -1)),
        Over(BudgetCap::DailyBudget),
        "Sunday's last millisecond, applied after Monday's first"
    );
    let w = engine.wallet(UserId(1), MON_DEC_7);
    assert_eq!((w.spent_today, w.spent_this_week), (100, 100));
    // Without a daily limit it is accepted and counts toward Monday and its week.
    let engine = engine_with_caps(None, Some(150));
    funded(&engine, (None, None, None), at(MON_DEC_7, -(DAY_MS as i64)));
    assert_eq!(
        send(&engine, gift(3, 1, 2, "rose", 100), MON_DEC_7),
        Accepted
    );
    assert_eq!(
        send(&engine, gift(4, 1, 2, "rose", 50), at(MON_DEC_7, -1)),
        Accepted
    );
    let w = engine.wallet(UserId(1), MON_DEC_7);
    assert_eq!((w.spent_today, w.spent_this_week), (150, 150));
    assert_eq!(
        send(&engine, gift(5, 1, 2, "rose", 1), MON_DEC_7),
        Over(BudgetCap::WeeklyPlatformCap)
    );
}

#[test]
fn an_economy_edited_mid_day_applies_to_later_gifts_and_keeps_what_was_spent() {
    let engine = engine();
    funded(&engine, (None, None, None), DEC);
    assert_eq!(send(&engine, gift(3, 1, 2, "rose", 300), DEC), Accepted);
    let capped = engine
        .economy_successor(economy_with_caps(Some(350), None).to_file())
        .unwrap()
        .expect("new terms");
    engine.change_economy(capped, at(DEC, 10)).unwrap();
    assert_eq!(
        send(&engine, gift(4, 1, 2, "rose", 51), at(DEC, 20)),
        Over(BudgetCap::DailyPlatformCap),
        "300 already spent today counts"
    );
    assert_eq!(
        send(&engine, gift(5, 1, 2, "rose", 50), at(DEC, 20)),
        Accepted
    );
    let lifted = engine
        .economy_successor(economy().to_file())
        .unwrap()
        .expect("new terms");
    engine.change_economy(lifted, at(DEC, 30)).unwrap();
    assert_eq!(
        send(&engine, gift(6, 1, 2, "rose", 51), at(DEC, 40)),
        Accepted
    );
    assert_eq!(engine.wallet(UserId(1), DEC).spent_today, 401);
    // A replay puts each version in force at its number: the same answers.
    let replayed = engine_with_versions(&engine);
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

/// A fresh engine that replayed `engine`'s log (knowing its economy versions).
fn engine_with_versions(engine: &Engine) -> Engine {
    let replayed = Engine::new(economy(), engine.config().clone()).unwrap();
    let log = engine.drain_log();
    for entry in &log {
        if let Event::Economy(change) = entry.event {
            replayed.know_economy(engine.economy_by_digest(change.digest).unwrap());
        }
    }
    replayed.replay(&log).unwrap();
    replayed
}

#[test]
fn bad_budgets_are_refused_and_change_nothing() {
    let engine = engine();
    funded(&engine, (None, None, Some(5)), DEC);
    let max = WINDOW_LIMIT_COINS_MAX;
    assert_eq!(max, u64::from(u32::MAX));
    for (i, (weekly, daily)) in [
        (None, Some(max + 1)),
        (Some(max + 1), None),
        (Some(u64::MAX), Some(1)),
    ]
    .into_iter()
    .enumerate()
    {
        let got = send(
            &engine,
            budgets(10 + i as u128, 1, None, weekly, daily),
            DEC,
        );
        assert_eq!(got, Other(RejectCode::AmountOutOfRange));
        assert_eq!(engine.wallet(UserId(1), DEC).daily_budget_coins, Some(5));
    }
    // A user never seen gets no wallet from a refused setting.
    assert_eq!(
        send(&engine, budgets(20, 77, None, None, Some(max + 1)), DEC),
        Other(RejectCode::AmountOutOfRange)
    );
    assert_eq!(engine.audit().totals.wallets, 1);
    // The largest allowed is no limit in practice, and a setting without budgets
    // clears them.
    assert_eq!(
        send(&engine, budgets(21, 1, None, Some(max), Some(max)), DEC),
        Accepted
    );
    assert_eq!(send(&engine, gift(22, 1, 2, "rose", 6), DEC), Accepted);
    assert_eq!(
        send(&engine, account(23, 1, None, true, None), DEC),
        Accepted
    );
    let w = engine.wallet(UserId(1), DEC);
    assert_eq!((w.daily_budget_coins, w.weekly_budget_coins), (None, None));
    assert!(engine.audit().is_clean());
    // An economy with a cap over the bound is refused, naming the key.
    let text = format!(
        "{EMBEDDED_ECONOMY_TOML}\n[spending_caps]\nweekly_coins = {}\n",
        max + 1
    );
    let e = Economy::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("spending_caps.weekly_coins"), "{e}");
    let text = format!("{EMBEDDED_ECONOMY_TOML}\n[spending_caps]\nhourly_coins = 5\n");
    assert!(Economy::from_toml_str(&text).is_err());
}

#[test]
fn an_economy_without_caps_keeps_its_digest() {
    // Economies recorded before caps existed are named by their digest in journals:
    // a file without `[spending_caps]` must serialize (and digest) as it did.
    let doc = economy().to_doc();
    let json = String::from_utf8(doc.to_bytes()).unwrap();
    assert!(!json.contains("spending_caps"), "{json}");
    let capped = economy_with_caps(Some(1), Some(2));
    let back = Economy::from_doc(capped.to_doc()).unwrap();
    assert_eq!(
        (back.daily_cap_coins, back.weekly_cap_coins),
        (Some(1), Some(2))
    );
    assert_ne!(capped.to_doc().digest(), doc.digest());
}

/// Events across a day, a week, a month and a year boundary, with caps and budgets.
fn across_boundaries(engine: &Engine) -> Vec<(Event, Stamp, Option<BudgetCap>)> {
    let mut events = vec![
        (recharge(1, 1, "coins_7000"), at(JAN_1, -5 * DAY_MS as i64)),
        (recharge(2, 3, "coins_7000"), at(JAN_1, -5 * DAY_MS as i64)),
        (
            budgets(3, 1, Some(4_000), Some(1_500), Some(500)),
            at(JAN_1, -5 * DAY_MS as i64),
        ),
    ];
    let mut id = 100;
    // User 1 meets its daily budget (300 + 250 > 500, within the 600 cap) and, in
    // 2026-W53, its weekly one; user 3 (no budgets) the daily platform cap.
    let last_ms = DAY_MS as i64 - 1;
    for day in -5i64..=4 {
        for (ms, user, count) in [(0, 1, 300), (last_ms, 1, 250), (7, 3, 400), (8, 3, 300)] {
            id += 1;
            events.push((
                gift(id, user, 2, "rose", count),
                at(JAN_1, day * DAY_MS as i64 + ms),
            ));
        }
    }
    events
        .into_iter()
        .map(|(event, stamp)| (event, stamp, engine.apply_batch(&[event], stamp)[0].cap))
        .collect()
}

/// Ids remembered over the whole run (ten days): every one is retried after restarts.
fn long_memory() -> EngineConfig {
    EngineConfig {
        idempotency_horizon_ms: 30 * DAY_MS,
        ..EngineConfig::default()
    }
}

#[test]
fn a_restart_replays_and_restores_every_count_and_cap_named() {
    let capped = economy_with_caps(Some(600), Some(2_000));
    let engine = Engine::new(capped.clone(), long_memory()).unwrap();
    let events = across_boundaries(&engine);
    let caps: Vec<_> = events.iter().map(|e| e.2).collect();
    assert!(caps.contains(&Some(BudgetCap::DailyBudget)), "{caps:?}");
    assert!(
        caps.contains(&Some(BudgetCap::DailyPlatformCap)),
        "{caps:?}"
    );
    assert!(caps.contains(&Some(BudgetCap::WeeklyBudget)), "{caps:?}");
    assert!(engine.audit().is_clean(), "{:?}", engine.audit());
    let (state, log) = engine.snapshot();
    let config = engine.config().clone();
    // Replay of the journal.
    let replayed = Engine::new(capped, config.clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
    // A snapshot file (the current format) read back.
    let dir = tempfile::tempdir().unwrap();
    let (path, header) =
        giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();
    assert_eq!(header.version, giftstream::persist::snapshot::VERSION);
    assert_eq!(header.version, 12);
    let (_, state) = giftstream::persist::snapshot::read(&path).unwrap();
    let restored =
        Engine::from_state(economy_with_caps(Some(600), Some(2_000)), config, state).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    for ledger in [&replayed, &restored] {
        let retry_at = at(JAN_1, 5 * DAY_MS as i64);
        for (event, _, cap) in &events {
            let o = ledger.apply_batch(&[*event], retry_at)[0];
            assert!(o.duplicate, "{event:?}: {o:?}");
            assert_eq!(o.cap, *cap, "{event:?}");
        }
        let (a, b) = (
            ledger.wallet(UserId(1), JAN_1),
            engine.wallet(UserId(1), JAN_1),
        );
        assert_eq!(a, b);
    }
}

#[test]
fn a_format_6_snapshot_moves_monthly_budgets_beside_the_wallets() {
    // The format-5 fixture's ledger (read as formats 1 to 6 are): its wallets keep
    // coins and this month's spending; days and weeks count from the restore on.
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-5.gsnap"
    ))
    .unwrap();
    let path = std::path::Path::new("snapshot-format-5.gsnap");
    let (_, state) = giftstream::persist::snapshot::parse(path, &bytes).unwrap();
    let loaded = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    let live = engine();
    live.apply_batch(&crate::durability::format_2_fixture_events(), NOV);
    assert_eq!(loaded.state_fingerprint_v6(), live.state_fingerprint_v6());
    assert!(loaded.audit().is_clean(), "{:?}", loaded.audit());
    for user in 40..45 {
        let (a, b) = (
            loaded.wallet(UserId(user), NOV),
            live.wallet(UserId(user), NOV),
        );
        assert_eq!((a.coins, a.spent_this_month), (b.coins, b.spent_this_month));
        assert_eq!((a.spent_today, a.spent_this_week), (0, 0));
    }
    // A budget set after the restore is kept by the next snapshot (format 7).
    loaded.apply_batch(&[budgets(9_000, 40, Some(1), Some(2), Some(3))], NOV);
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = loaded.snapshot();
    let (path, _) = giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();
    let (_, state) = giftstream::persist::snapshot::read(&path).unwrap();
    let again = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    assert_eq!(again.state_fingerprint(), loaded.state_fingerprint());
    let w = again.wallet(UserId(40), NOV);
    assert_eq!(
        (
            w.monthly_budget_coins,
            w.weekly_budget_coins,
            w.daily_budget_coins
        ),
        (Some(1), Some(2), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_set_budgets_and_name_the_cap() {
    use serde_json::json;
    let s = TestServer::start().await;
    let (st, body) = s
        .send(
            "PUT",
            "/v1/users/42",
            Some(INGEST),
            r#"{"monthly_budget_coins": 10000, "weekly_budget_coins": 600, "daily_budget_coins": 100}"#,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (&body["daily_budget_coins"], &body["weekly_budget_coins"]),
        (&json!(100), &json!(600))
    );
    let (st, body) = s
        .send(
            "PUT",
            "/v1/users/43",
            Some(INGEST),
            r#"{"daily_budget_coins": 4294967296}"#,
        )
        .await;
    assert_eq!(
        (st, &body["error"]["code"]),
        (422, &json!("AMOUNT_OUT_OF_RANGE")),
        "{body}"
    );
    let gift_json = |n: u128, count: u32| {
        json!({"type": "gift", "event_id": uuid(n), "sender": 42, "creator": 7,
               "stream": 9001, "gift": "rose", "count": count})
    };
    let (st, body) = s
        .post_events(json!([
            {"type": "recharge", "event_id": uuid(1), "user": 42, "coins": 500,
             "price": "6.49", "currency": "USD", "package": "coins_500", "channel": "app"},
            gift_json(2, 60),
            gift_json(3, 41),
        ]))
        .await;
    assert_eq!(st, 200, "{body}");
    let o = &body["outcomes"];
    assert_eq!(o[1]["coins"], 440);
    assert_eq!(
        (&o[2]["code"], &o[2]["cap"], &o[2]["message"]),
        (
            &json!("BUDGET_EXCEEDED"),
            &json!("daily_budget"),
            &json!("the gift would exceed the user's daily budget")
        )
    );
    // A retry names the same cap.
    let (_, again) = s.post_events(json!([gift_json(3, 41)])).await;
    assert_eq!(again["outcomes"][0]["cap"], "daily_budget");
    assert_eq!(again["outcomes"][0]["duplicate"], true);
    let (_, w) = s.get("/v1/users/42/wallet", Some(READ)).await;
    assert_eq!(
        (
            &w["spent_today"],
            &w["spent_this_week"],
            &w["spent_this_month"]
        ),
        (&json!(60), &json!(60), &json!(60)),
        "{w}"
    );
    assert_eq!(
        (&w["daily_budget_coins"], &w["weekly_budget_coins"]),
        (&json!(100), &json!(600))
    );
    assert!(w["daily_platform_cap_coins"].is_null());
    assert!(w["week"].as_str().unwrap().contains("-W"), "{w}");

    // The binary protocol: budgets in the new account variant, the cap in the outcome.
    let client = giftstream::client::Client::connect(s.tcp, INGEST)
        .await
        .unwrap();
    let o = client
        .send(&[
            budgets(10, 44, None, Some(50), None),
            recharge(11, 44, "coins_100"),
            gift(12, 44, 7, "rose", 51),
            gift(13, 44, 7, "rose", 50),
        ])
        .await
        .unwrap();
    assert!(o[0].is_accepted() && o[1].is_accepted(), "{o:?}");
    assert_eq!(o[2].code(), Some(RejectCode::BudgetExceeded));
    assert_eq!(o[2].cap, Some(BudgetCap::WeeklyBudget));
    assert!(o[3].is_accepted(), "{o:?}");
    let (_, w) = s.get("/v1/users/44/wallet", Some(READ)).await;
    assert_eq!(
        (&w["weekly_budget_coins"], &w["spent_this_week"]),
        (&json!(50), &json!(50))
    );
    let (_, e) = s.get("/v1/economy", Some(READ)).await;
    assert!(e["spending_caps"]["daily_coins"].is_null(), "{e}");
}

/// Review of #31, finding F: a monthly budget of `u64::MAX` was no budget before
/// budgets were compact (a snapshot from then shows none); it still is, however the
/// state was reached (live or replayed), and no budgets entry is kept for it.
#[test]
fn a_monthly_budget_of_u64_max_is_no_budget_live_and_replayed() {
    let engine = engine();
    let out = engine.apply_batch(
        &[
            recharge(1, 42, "coins_100"),
            account(2, 42, None, true, Some(u64::MAX)),
            account(3, 43, None, true, Some(u64::MAX - 1)),
        ],
        DEC,
    );
    assert!(out.iter().all(|o| o.is_accepted()), "{out:?}");
    for user in [42, 43] {
        let w = engine.wallet(UserId(user), DEC);
        assert_eq!(w.monthly_budget_coins, None, "user {user}");
    }
    let replayed =
        giftstream::engine::Engine::new(economy(), giftstream::engine::EngineConfig::default())
            .unwrap();
    replayed.replay(&engine.drain_log()).unwrap();
    assert_eq!(replayed.wallet(UserId(42), DEC).monthly_budget_coins, None);
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}
