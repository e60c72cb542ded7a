//! Data-driven rule tests: one case per reason code and per edge of SPEC §1.

use giftstream::economy::{EMBEDDED_ECONOMY_TOML, Economy};
use giftstream::engine::{
    CreatorId, Effect, Engine, EngineConfig, Event, EventId, Outcome, RejectCode, Stamp, Status,
    StreamId, UserId,
};

use crate::support::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Accepted; for recharges and gifts, the balance after.
    Coins(u64),
    PaidOut(u64),
    Rejected(RejectCode),
}
use Want::*;

/// Applies `setup` (each must be accepted), then `event`, and checks its outcome.
fn check_on(engine: &Engine, name: &str, setup: &[Event], event: Event, want: Want) {
    for (i, o) in engine.apply_batch(setup, NOV).iter().enumerate() {
        assert!(o.is_accepted(), "{name}: setup event {i} was {o:?}");
    }
    let before = engine.audit().totals;
    let got = engine.apply_batch(&[event], NOV)[0];
    let ok = match (want, got.status) {
        (Coins(c), Status::Accepted(Effect::Coins(g))) => c == g,
        (
            PaidOut(d),
            Status::Accepted(Effect::PaidOut {
                diamonds_available, ..
            }),
        ) => d == diamonds_available,
        (Rejected(c), Status::Rejected(g)) => c == g,
        _ => false,
    };
    assert!(ok, "{name}: want {want:?}, got {got:?}");
    let after = engine.audit();
    assert!(after.is_clean(), "{name}: {after:?}");
    if matches!(want, Rejected(_)) {
        // A rejection is recorded (seq, window, history) but moves nothing.
        let after = giftstream::engine::LedgerTotals {
            last_seq: before.last_seq,
            ..after.totals
        };
        assert_eq!(after, before, "{name}: a rejection changed totals");
    }
    let again = engine.apply_batch(&[event], NOV)[0];
    assert!(
        again.duplicate && again.status == got.status && again.seq == got.seq,
        "{name}: duplicate"
    );
}

fn check(name: &str, setup: &[Event], event: Event, want: Want) {
    check_on(&engine(), name, setup, event, want);
}

#[test]
fn recharge_rules() {
    let fund = recharge(1, 1, "coins_100");
    check("package", &[], recharge(10, 1, "coins_500"), Coins(500));
    check(
        "second package",
        &[fund],
        recharge(10, 1, "coins_70"),
        Coins(170),
    );
    let mut wrong_price = recharge(10, 1, "coins_100");
    if let Event::Recharge(r) = &mut wrong_price {
        r.price = dec("1.28");
    }
    check(
        "price mismatch",
        &[],
        wrong_price,
        Rejected(RejectCode::AmountOutOfRange),
    );
    let mut same_price_more_digits = recharge(10, 1, "coins_100");
    if let Event::Recharge(r) = &mut same_price_more_digits {
        r.price = dec("1.290");
    }
    check("1.290 is 1.29", &[], same_price_more_digits, Coins(100));
    let mut wrong_coins = recharge(10, 1, "coins_100");
    if let Event::Recharge(r) = &mut wrong_coins {
        r.coins = 101;
    }
    check(
        "coins mismatch",
        &[],
        wrong_coins,
        Rejected(RejectCode::AmountOutOfRange),
    );
    let mut no_price_in_currency = recharge(10, 1, "coins_100");
    if let Event::Recharge(r) = &mut no_price_in_currency {
        r.currency = "JPY".parse().unwrap();
    }
    check(
        "currency without a price",
        &[],
        no_price_in_currency,
        Rejected(RejectCode::AmountOutOfRange),
    );
    let mut unknown_package = recharge(10, 1, "coins_100");
    if let Event::Recharge(r) = &mut unknown_package {
        r.package = Some(giftstream::engine::PackageId::UNKNOWN).into();
    }
    check(
        "unknown package",
        &[],
        unknown_package,
        Rejected(RejectCode::AmountOutOfRange),
    );
    check(
        "custom below min",
        &[],
        custom(10, 1, 29, "0.40"),
        Rejected(RejectCode::AmountOutOfRange),
    );
    check("custom at min", &[], custom(10, 1, 30, "0.40"), Coins(30));
    let custom_in = |currency: &str| {
        let mut e = custom(10, 1, 100, "1.20");
        if let Event::Recharge(r) = &mut e {
            r.currency = currency.parse().unwrap();
        }
        e
    };
    check("custom in EUR (sold)", &[], custom_in("EUR"), Coins(100));
    check(
        "custom in a currency no package is sold in",
        &[],
        custom_in("XYZ"),
        Rejected(RejectCode::AmountOutOfRange),
    );
    check(
        "custom at max",
        &[],
        custom(10, 1, 2_500_000, "32000"),
        Coins(2_500_000),
    );
    check(
        "custom above max",
        &[],
        custom(10, 1, 2_500_001, "32000"),
        Rejected(RejectCode::AmountOutOfRange),
    );
    check(
        "custom zero price",
        &[],
        custom(10, 1, 100, "0"),
        Rejected(RejectCode::AmountOutOfRange),
    );
    let mut custom_in_app = custom(10, 1, 100, "1.30");
    if let Event::Recharge(r) = &mut custom_in_app {
        r.channel = giftstream::engine::Channel::App;
    }
    check(
        "custom amounts only on the web",
        &[],
        custom_in_app,
        Rejected(RejectCode::AmountOutOfRange),
    );
    check(
        "minor",
        &[account(2, 1, None, false, None)],
        recharge(10, 1, "coins_100"),
        Rejected(RejectCode::AgeRestricted),
    );
    check(
        "restricted region",
        &[account(2, 1, Some("KP"), true, None)],
        recharge(10, 1, "coins_100"),
        Rejected(RejectCode::RegionUnavailable),
    );
    check(
        "other region",
        &[account(2, 1, Some("DE"), true, None)],
        recharge(10, 1, "coins_100"),
        Coins(100),
    );
    check(
        "order: the amount before the account",
        &[account(2, 1, None, false, None)],
        custom(10, 1, 1, "0.01"),
        Rejected(RejectCode::AmountOutOfRange),
    );
}

#[test]
fn recharge_overflow_is_an_outcome() {
    let text = EMBEDDED_ECONOMY_TOML.replace(
        "custom_max_coins = 2500000",
        &format!("custom_max_coins = {}", u64::MAX),
    );
    let engine = Engine::new(
        Economy::from_toml_str(&text).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    check_on(
        &engine,
        "balance overflow",
        &[custom(1, 1, u64::MAX, "1")],
        custom(2, 1, 30, "1"),
        Rejected(RejectCode::Overflow),
    );
    assert_eq!(engine.wallet(UserId(1), NOV).coins, u64::MAX);
    // An event check comes before the account checks (SPEC order): a minor's overflowing
    // recharge is OVERFLOW, not AGE_RESTRICTED.
    check_on(
        &engine,
        "overflow before the account",
        &[account(3, 1, None, false, None)],
        custom(4, 1, 30, "1"),
        Rejected(RejectCode::Overflow),
    );
}

#[test]
fn gift_rules() {
    let fund = recharge(1, 1, "coins_100");
    check("rose", &[fund], gift(10, 1, 2, "rose", 3), Coins(97));
    check(
        "unknown gift",
        &[fund],
        gift(10, 1, 2, "unicorn", 1),
        Rejected(RejectCode::UnknownGift),
    );
    check(
        "count 0",
        &[fund],
        gift(10, 1, 2, "rose", 0),
        Rejected(RejectCode::InvalidCount),
    );
    check(
        "count max + 1",
        &[fund],
        gift(10, 1, 2, "rose", 10_000),
        Rejected(RejectCode::InvalidCount),
    );
    check(
        "count max",
        &[recharge(1, 1, "coins_7000"), recharge(2, 1, "coins_7000")],
        gift(10, 1, 2, "rose", 9_999),
        Coins(4_001),
    );
    check(
        "self gift",
        &[fund],
        gift(10, 1, 1, "rose", 1),
        Rejected(RejectCode::SelfGift),
    );
    check(
        "insufficient",
        &[fund],
        gift(10, 1, 2, "rose", 101),
        Rejected(RejectCode::InsufficientCoins),
    );
    check(
        "exact balance",
        &[fund],
        gift(10, 1, 2, "panda", 20),
        Coins(0),
    );
    check(
        "never registered",
        &[],
        gift(10, 77, 2, "rose", 1),
        Rejected(RejectCode::InsufficientCoins),
    );
    check(
        "minor",
        &[fund, account(2, 1, None, false, None)],
        gift(10, 1, 2, "rose", 1),
        Rejected(RejectCode::AgeRestricted),
    );
    check(
        "restricted region",
        &[fund, account(2, 1, Some("IR"), true, None)],
        gift(10, 1, 2, "rose", 1),
        Rejected(RejectCode::RegionUnavailable),
    );
    // Check order when two rules fail at once: the earlier group wins.
    check(
        "order: unknown gift before minor",
        &[fund, account(2, 1, None, false, None)],
        gift(10, 1, 2, "unicorn", 1),
        Rejected(RejectCode::UnknownGift),
    );
    check(
        "order: count before self",
        &[fund],
        gift(10, 1, 1, "rose", 0),
        Rejected(RejectCode::InvalidCount),
    );
    check(
        "order: minor before region",
        &[fund, account(2, 1, Some("KP"), false, None)],
        gift(10, 1, 2, "rose", 1),
        Rejected(RejectCode::AgeRestricted),
    );
    check(
        "order: minor before funds",
        &[account(2, 1, None, false, None)],
        gift(10, 1, 2, "rose", 1),
        Rejected(RejectCode::AgeRestricted),
    );
    check(
        "order: budget before funds",
        &[fund, account(2, 1, None, true, Some(150))],
        gift(10, 1, 2, "rose", 151),
        Rejected(RejectCode::BudgetExceeded),
    );
}

#[test]
fn gift_cost_overflow_is_an_outcome() {
    let text = EMBEDDED_ECONOMY_TOML.replace("coins = 34999", &format!("coins = {}", u64::MAX / 2));
    let engine = Engine::new(
        Economy::from_toml_str(&text).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    check_on(
        &engine,
        "cost overflow",
        &[recharge(1, 1, "coins_100")],
        gift(10, 1, 2, "universe", 3),
        Rejected(RejectCode::Overflow),
    );
    // The event checks come before the account: a minor still gets OVERFLOW.
    check_on(
        &engine,
        "overflow before minor",
        &[account(2, 1, None, false, None)],
        gift(11, 1, 2, "universe", 3),
        Rejected(RejectCode::Overflow),
    );
}

#[test]
fn monthly_budget_has_an_exact_boundary_and_resets_each_utc_month() {
    let engine = engine();
    engine.apply_batch(
        &[
            recharge(1, 1, "coins_500"),
            account(2, 1, None, true, Some(100)),
        ],
        NOV,
    );
    let o = engine.apply_batch(&[gift(3, 1, 2, "rose", 60), gift(4, 1, 2, "rose", 40)], NOV);
    assert_eq!(
        o[1].status,
        Status::Accepted(Effect::Coins(400)),
        "exactly at the budget"
    );
    let o = engine.apply_batch(&[gift(5, 1, 2, "rose", 1)], NOV);
    assert_eq!(o[0].code(), Some(RejectCode::BudgetExceeded));
    let w = engine.wallet(UserId(1), NOV);
    assert_eq!(
        (w.coins, w.spent_this_month, w.monthly_budget_coins),
        (400, 100, Some(100))
    );
    // The last millisecond of November still counts against November.
    let o = engine.apply_batch(&[gift(6, 1, 2, "rose", 1)], Stamp(DEC.0 - 1));
    assert_eq!(o[0].code(), Some(RejectCode::BudgetExceeded));
    assert_eq!(
        engine.wallet(UserId(1), DEC).spent_this_month,
        0,
        "a new month"
    );
    let o = engine.apply_batch(&[gift(7, 1, 2, "rose", 100)], DEC);
    assert_eq!(o[0].status, Status::Accepted(Effect::Coins(300)));
    assert_eq!(engine.wallet(UserId(1), DEC).spent_this_month, 100);
    // Removing the budget lifts the limit.
    engine.apply_batch(&[account(8, 1, None, true, None)], DEC);
    let o = engine.apply_batch(&[gift(9, 1, 2, "rose", 1)], DEC);
    assert!(o[0].is_accepted());
}

#[test]
fn diamonds_carry_fractions_exactly() {
    let engine = engine();
    engine.apply_batch(&[recharge(1, 1, "coins_100")], NOV);
    let creator = CreatorId(2);
    engine.apply_batch(
        &[
            gift(2, 1, 2, "rose", 1),
            gift(3, 1, 2, "rose", 1),
            gift(4, 1, 2, "rose", 1),
        ],
        NOV,
    );
    let c = engine.creator(creator);
    assert_eq!(
        (c.coins_received, c.diamonds_total, c.diamond_fraction),
        (3, 1, dec("0.5"))
    );
    engine.apply_batch(&[gift(5, 1, 2, "rose", 1)], NOV);
    let c = engine.creator(creator);
    assert_eq!(
        (c.coins_received, c.diamonds_total, c.diamond_fraction),
        (4, 2, dec("0"))
    );
    // Fractions from different senders in different shards add up too.
    engine.apply_batch(
        &[recharge(6, 3, "coins_100"), gift(7, 3, 2, "rose", 1)],
        NOV,
    );
    assert_eq!(engine.creator(creator).diamonds_total, 2);
    engine.apply_batch(&[gift(8, 1, 2, "rose", 1)], NOV);
    assert_eq!(engine.creator(creator).diamonds_total, 3);
}

#[test]
fn payout_rules() {
    // 40_000 coins received -> 20_000 diamonds = 100 USD, exactly the minimum.
    let funds = [
        recharge(1, 1, "coins_7000"),
        recharge(2, 1, "coins_7000"),
        recharge(3, 1, "coins_7000"),
        recharge(4, 1, "coins_7000"),
        recharge(5, 1, "coins_7000"),
        recharge(6, 1, "coins_7000"),
        gift(7, 1, 2, "universe", 1),
        gift(8, 1, 2, "drama_queen", 1),
        gift(9, 1, 2, "rose", 1),
    ];
    check(
        "exactly the minimum",
        &funds,
        payout(10, 2, 20_000, "USD"),
        PaidOut(0),
    );
    check(
        "below the minimum",
        &funds,
        payout(10, 2, 19_999, "USD"),
        Rejected(RejectCode::BelowPayoutMinimum),
    );
    check(
        "more than credited",
        &funds,
        payout(10, 2, 20_001, "USD"),
        Rejected(RejectCode::InsufficientDiamonds),
    );
    check(
        "zero diamonds",
        &funds,
        payout(10, 2, 0, "USD"),
        Rejected(RejectCode::AmountOutOfRange),
    );
    check(
        "no diamond value",
        &funds,
        payout(10, 2, 20_000, "JPY"),
        Rejected(RejectCode::UnsupportedCurrency),
    );
    check("EUR", &funds, payout(10, 2, 20_000, "EUR"), PaidOut(0));
    check(
        "nothing received",
        &[],
        payout(10, 5, 20_000, "USD"),
        Rejected(RejectCode::InsufficientDiamonds),
    );
    check(
        "order: minimum before funds",
        &[],
        payout(10, 5, 1, "USD"),
        Rejected(RejectCode::BelowPayoutMinimum),
    );

    let engine = engine();
    engine.apply_batch(&funds, NOV);
    let o = engine.apply_batch(&[payout(10, 2, 20_000, "USD")], NOV)[0];
    assert_eq!(
        o.status,
        Status::Accepted(Effect::PaidOut {
            diamonds_available: 0,
            value: dec("100.000")
        })
    );
    let c = engine.creator(CreatorId(2));
    assert_eq!((c.diamonds_total, c.diamonds_available), (20_000, 0));
    let again = engine.apply_batch(&[payout(11, 2, 20_000, "USD")], NOV)[0];
    assert_eq!(
        again.code(),
        Some(RejectCode::InsufficientDiamonds),
        "paid once only"
    );
}

fn settlement(creator: u64, source: u16, diamonds: u64) -> Event {
    exact_settlement(creator, source, diamonds, 0)
}

fn exact_settlement(creator: u64, source: u16, diamonds: u64, nanos: u32) -> Event {
    Event::Settlement(giftstream::engine::Settlement {
        id: giftstream::engine::Settlement::id_for_exact(
            CreatorId(creator),
            source,
            diamonds,
            nanos,
        ),
        creator: CreatorId(creator),
        source,
        diamonds,
        nanos,
    })
}

#[test]
fn fractions_credited_on_different_nodes_carry_as_on_one_ledger() {
    // SPEC: fractions carry, never lost. One rose (1 coin at share 0.5) here and one on
    // node 1: one ledger would credit 1 diamond; so does the owner with node 1's report
    // of 0.5 (0 whole, 500_000_000 billionths).
    let engine = engine();
    engine.apply_batch(&[recharge(1, 1, "coins_70"), gift(2, 1, 2, "rose", 1)], NOV);
    assert_eq!(engine.creator(CreatorId(2)).diamonds_available, 0);
    let half = exact_settlement(2, 1, 0, 500_000_000);
    let o = engine.apply_batch(&[half], NOV)[0];
    // The outcome counts the reports' whole diamonds (none yet): it must not depend on
    // this node's own credits, which gift chunks in flight change.
    assert_eq!(
        o.status,
        Status::Accepted(Effect::Settled { credited: 0 }),
        "{o:?}"
    );
    let c = engine.creator(CreatorId(2));
    assert_eq!((c.diamonds_settled_in, c.diamonds_available), (1, 1));
    // The same report again adds nothing; a whole-diamond report of the same node that
    // is not above it neither.
    assert!(engine.apply_batch(&[half], NOV)[0].duplicate);
    let older = engine.apply_batch(&[settlement(2, 1, 0)], NOV)[0];
    assert_eq!(
        older.status,
        Status::Accepted(Effect::Settled { credited: 0 })
    );
    // Another rose here: 1.0 here + 0.5 there = 1 whole diamond still.
    engine.apply_batch(&[gift(3, 1, 2, "rose", 1)], NOV);
    assert_eq!(engine.creator(CreatorId(2)).diamonds_available, 1);
    // And a third: 1.5 + 0.5 = 2.
    engine.apply_batch(&[gift(4, 1, 2, "rose", 1)], NOV);
    assert_eq!(engine.creator(CreatorId(2)).diamonds_available, 2);
    let paid = engine.apply_batch(&[payout(5, 2, 2, "USD")], NOV)[0];
    // 2 diamonds are below the payout minimum: the rule, not the carry, refuses it.
    assert_eq!(paid.code(), Some(RejectCode::BelowPayoutMinimum));
    assert!(engine.audit().is_clean());
    // A snapshot keeps the fractions; a replay reproduces every outcome.
    let (state, log) = engine.snapshot();
    let restored = Engine::from_state(economy(), engine.config().clone(), state).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    assert_eq!(restored.creator(CreatorId(2)).diamonds_available, 2);
    let replayed = Engine::new(economy(), engine.config().clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

#[test]
fn settlements_make_other_nodes_diamonds_payable_once_and_survive_snapshot_and_replay() {
    // A cluster owner: two other nodes report 20_000 and 3_000 diamonds they credited
    // creator 2; later a gift here credits it too.
    let engine = engine();
    let setup: Vec<Event> = (0..2).map(|i| recharge(i, 1, "coins_7000")).collect();
    let o = engine.apply_batch(&setup, NOV);
    assert!(o.iter().all(|o| o.is_accepted()));
    let credited = |engine: &Engine| engine.creator(CreatorId(2));
    let settled = |engine: &Engine, e: Event| match engine.apply_batch(&[e], NOV)[0].status {
        Status::Accepted(Effect::Settled { credited }) => credited,
        other => panic!("settlement: {other:?}"),
    };
    // Diamonds only from other nodes: payable here.
    assert_eq!(settled(&engine, settlement(2, 1, 20_000)), 20_000);
    assert_eq!(settled(&engine, settlement(2, 2, 3_000)), 3_000);
    assert_eq!(credited(&engine).diamonds_settled_in, 23_000);
    assert_eq!(credited(&engine).diamonds_available, 23_000);
    assert_eq!(credited(&engine).diamonds_total, 0, "credited here: none");
    // A repeated report is a duplicate; an older (smaller) one adds nothing; a newer
    // one adds the increase only.
    let again = engine.apply_batch(&[settlement(2, 1, 20_000)], NOV)[0];
    assert!(again.duplicate);
    assert_eq!(settled(&engine, settlement(2, 1, 19_000)), 0);
    assert_eq!(settled(&engine, settlement(2, 1, 22_000)), 2_000);
    assert_eq!(credited(&engine).diamonds_available, 25_000);
    // Local credits and settled ones are spent together, never more.
    engine.apply_batch(&[gift(3, 1, 2, "drama_queen", 1)], NOV);
    let local = credited(&engine).diamonds_total;
    assert!(local > 0);
    let all = 25_000 + local as u64;
    let over = engine.apply_batch(&[payout(10, 2, all + 1, "USD")], NOV)[0];
    assert_eq!(over.code(), Some(RejectCode::InsufficientDiamonds));
    let paid = engine.apply_batch(&[payout(11, 2, all, "USD")], NOV)[0];
    assert!(paid.is_accepted(), "{paid:?}");
    assert_eq!(credited(&engine).diamonds_available, 0);
    let report = engine.audit();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.totals.diamonds_settled_in, 25_000);
    assert_eq!(report.totals.diamonds_paid, u128::from(all));

    // A snapshot keeps the reports (an older report after it still adds nothing), and a
    // replay of the log reproduces every outcome.
    let (state, log) = engine.snapshot();
    let restored = Engine::from_state(economy(), engine.config().clone(), state).unwrap();
    assert_eq!(restored.state_fingerprint(), engine.state_fingerprint());
    assert_eq!(settled(&restored, settlement(2, 1, 21_000)), 0);
    let replayed = Engine::new(economy(), engine.config().clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

#[test]
fn a_payout_sees_the_gifts_of_its_own_batch() {
    let engine = engine();
    let mut batch: Vec<Event> = (0..6).map(|i| recharge(i, 1, "coins_7000")).collect();
    batch.push(payout(100, 2, 20_000, "USD"));
    batch.push(gift(101, 1, 2, "universe", 1));
    batch.push(gift(102, 1, 2, "drama_queen", 1));
    batch.push(gift(103, 1, 2, "rose", 1));
    let o = engine.apply_batch(&batch, NOV);
    assert!(o[6].is_accepted(), "{:?}", o[6]);
    assert!(o[6].seq > o[9].seq, "seq records the order applied");
}

#[test]
fn duplicates_return_the_original_outcome_and_change_nothing() {
    let engine = engine();
    let first = engine.apply_batch(
        &[recharge(1, 1, "coins_100"), gift(2, 1, 2, "rose", 3)],
        NOV,
    );
    let before = engine.state_fingerprint();
    // The same events, in another order, later (within the retry horizon).
    let again = engine.apply_batch(
        &[gift(2, 1, 2, "rose", 3), recharge(1, 1, "coins_100")],
        Stamp(NOV.0 + 599_999),
    );
    assert_eq!(engine.state_fingerprint(), before);
    assert_eq!(
        (again[0].seq, again[0].status),
        (first[1].seq, first[1].status)
    );
    assert_eq!(
        (again[1].seq, again[1].status),
        (first[0].seq, first[0].status)
    );
    assert!(again.iter().all(|o| o.duplicate));
    // Within one batch, the second copy is the duplicate.
    let o = engine.apply_batch(&[gift(3, 1, 2, "rose", 1), gift(3, 1, 2, "rose", 1)], NOV);
    assert!(!o[0].duplicate && o[1].duplicate && o[0].seq == o[1].seq);
    assert_eq!(engine.wallet(UserId(1), NOV).coins, 96);
    // Rejections are idempotent too.
    let r = engine.apply_batch(&[gift(4, 1, 2, "unicorn", 1)], NOV)[0];
    let r2 = engine.apply_batch(&[gift(4, 1, 2, "unicorn", 1)], NOV)[0];
    assert_eq!((r2.seq, r2.status, r2.duplicate), (r.seq, r.status, true));
    // Payouts and goals too.
    let g = engine.apply_batch(&[goal(5, 9002, 2, 1000)], NOV)[0];
    let g2 = engine.apply_batch(&[goal(5, 9002, 2, 1000)], NOV)[0];
    assert_eq!((g2.seq, g2.duplicate), (g.seq, true));
    assert_eq!(engine.stream(StreamId(9002)).goal, Some((1000, 4)));
}

/// An unrecorded answer: `EVENT_ID_REUSED` (or `UNAVAILABLE`), no number.
fn refused(code: RejectCode) -> Outcome {
    Outcome {
        seq: 0,
        status: Status::Rejected(code),
        duplicate: false,
        cap: None,
    }
}

#[test]
fn an_id_with_other_content_is_refused_and_changes_nothing() {
    let engine = engine();
    let first = engine.apply_batch(
        &[recharge(1, 1, "coins_100"), gift(2, 1, 2, "rose", 3)],
        NOV,
    );
    engine.drain_log();
    let before = engine.state_fingerprint();
    let reused = refused(RejectCode::EventIdReused);
    // Other content: another count, another gift, another kind, another user.
    let o = engine.apply_batch(
        &[
            gift(2, 1, 2, "rose", 50),
            gift(2, 1, 2, "panda", 3),
            payout(2, 2, 100, "USD"),
            recharge(1, 3, "coins_100"),
            goal(1, 9002, 2, 10),
        ],
        NOV,
    );
    assert_eq!(o, vec![reused; 5], "nothing of the originals is revealed");
    assert_eq!(engine.state_fingerprint(), before);
    assert!(engine.drain_log().is_empty(), "nothing journaled");
    assert_eq!(engine.wallet(UserId(3), NOV).coins, 0);
    assert!(engine.history(UserId(3), 10).is_empty());
    // The exact retry still gets the original outcome, and the next event the next seq.
    let again = engine.apply_batch(&[recharge(1, 1, "coins_100")], NOV)[0];
    assert_eq!((again.seq, again.duplicate), (first[0].seq, true));
    let next = engine.apply_batch(&[recharge(9, 3, "coins_100")], NOV)[0];
    assert_eq!(next.seq, first[1].seq + 1);
    // Within one batch: the first use in batch order is applied, whatever shards the
    // two users are on; the later one with other content is refused.
    let o = engine.apply_batch(
        &[recharge(10, 4, "coins_100"), recharge(10, 5, "coins_100")],
        NOV,
    );
    assert!(o[0].is_accepted() && !o[0].duplicate, "{o:?}");
    assert_eq!(o[1], reused);
    let coins = |u| engine.wallet(UserId(u), NOV).coins;
    assert_eq!((coins(4), coins(5)), (100, 0));
    // Of one sender, in batch order: the first is applied.
    let o = engine.apply_batch(
        &[recharge(11, 4, "coins_100"), recharge(11, 4, "coins_500")],
        NOV,
    );
    assert!(o[0].is_accepted() && o[1] == reused);
}

#[test]
fn an_id_is_one_key_across_users_and_shards() {
    // The same id as recharges of users 1..=11 (4 shards: several land elsewhere).
    let engine = engine();
    let o: Vec<Outcome> = (1..=11)
        .map(|u| engine.apply_batch(&[recharge(77, u, "coins_100")], NOV)[0])
        .collect();
    assert!(o[0].is_accepted());
    assert!(
        o[1..]
            .iter()
            .all(|&x| x == refused(RejectCode::EventIdReused)),
        "{o:?}"
    );
    assert_eq!(engine.wallet(UserId(1), NOV).coins, 100);
    assert!((2..=11).all(|u| engine.wallet(UserId(u), NOV).coins == 0));
    assert_eq!(engine.last_seq(), 1);
}

#[test]
fn a_full_window_is_backpressure_and_never_forgets_a_young_id() {
    let config = EngineConfig {
        shards: 1,
        idempotency_entries_max: 2,
        idempotency_horizon_ms: 60_000,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config).unwrap();
    // Defect: [R1], [R2], [R3, R1] credited R1 twice and gave a number twice.
    let r1 = engine.apply_batch(&[recharge(1, 1, "coins_100")], NOV)[0];
    engine.apply_batch(&[recharge(2, 1, "coins_100")], NOV);
    let o = engine.apply_batch(
        &[recharge(3, 1, "coins_100"), recharge(1, 1, "coins_100")],
        NOV,
    );
    assert_eq!(o[0], refused(RejectCode::Unavailable), "full: not applied");
    assert_eq!((o[1].seq, o[1].duplicate), (r1.seq, true));
    assert_eq!(engine.wallet(UserId(1), NOV).coins, 200);
    assert_eq!(engine.last_seq(), 2);
    let next = engine.apply_batch(&[account(4, 9, None, true, None)], NOV)[0];
    assert_eq!(next, refused(RejectCode::Unavailable));
    // Past the horizon of R1 and R2 (and the seconds ids are kept for clocks ahead), new
    // ids are admitted again: numbers go on from 3.
    let later = Stamp(NOV.0 + engine.config().id_kept_max_ms() + 1);
    let o = engine.apply_batch(&[recharge(3, 1, "coins_100")], later)[0];
    assert!(o.is_accepted() && o.seq == 3, "{o:?}");
    let log = engine.drain_log();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let replayed = Engine::new(economy(), engine.config().clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

#[test]
fn stream_goals_leaderboards_and_history() {
    let engine = engine();
    engine.apply_batch(
        &[
            recharge(1, 10, "coins_500"),
            recharge(2, 11, "coins_500"),
            recharge(3, 12, "coins_500"),
            goal(4, 9007, 7, 1000),
        ],
        NOV,
    );
    let o = engine.apply_batch(
        &[
            gift(5, 10, 7, "panda", 2),
            gift(6, 11, 7, "rose", 30),
            gift(7, 12, 8, "concert", 1),
            gift(8, 10, 7, "rose", 1),
            gift(9, 12, 7, "unicorn", 1),
        ],
        NOV,
    );
    assert!(o[..4].iter().all(|o| o.is_accepted()));
    let s = engine.stream(StreamId(9007));
    assert_eq!(
        (s.creator, s.coins_received, s.goal),
        (Some(CreatorId(7)), 41, Some((1000, 41)))
    );
    assert_eq!(
        engine.stream_top_gifters(StreamId(9007), 10),
        vec![(UserId(11), 30), (UserId(10), 11)]
    );
    assert_eq!(
        engine.creator_top_gifters(CreatorId(7), 1),
        vec![(UserId(11), 30)]
    );
    assert_eq!(
        engine.top_creators(10),
        vec![(CreatorId(8), 250), (CreatorId(7), 20)]
    );
    let c = engine.creator(CreatorId(7));
    let e = economy();
    let names: Vec<(&str, u128)> = c
        .gifts
        .iter()
        .map(|(g, n)| (e.gifts[g.0 as usize].id.as_str(), *n))
        .collect();
    assert_eq!(names, vec![("rose", 31), ("panda", 2)]);
    let h = engine.history(UserId(12), 10);
    assert_eq!(h.len(), 3);
    assert_eq!(
        (h[0].event_id, h[0].code, h[0].coins_delta),
        (EventId(9), Some(RejectCode::UnknownGift), 0)
    );
    assert_eq!((h[1].event_id, h[1].coins_delta), (EventId(7), -500));
    assert_eq!((h[2].event_id, h[2].coins_delta), (EventId(3), 500));
    assert_eq!(engine.history(UserId(12), 1).len(), 1);
    assert!(engine.audit().is_clean());
}

#[test]
fn invalid_engine_configs_name_the_key() {
    let bad = [
        (
            EngineConfig {
                shards: 3,
                ..EngineConfig::default()
            },
            "engine.shards",
        ),
        (
            EngineConfig {
                top_k: 0,
                ..EngineConfig::default()
            },
            "engine.top_k",
        ),
        (
            EngineConfig {
                history_per_user: 5000,
                ..EngineConfig::default()
            },
            "engine.history_per_user",
        ),
    ];
    for (config, key) in bad {
        let err = Engine::new(economy(), config).err().expect(key);
        assert_eq!(err.key, key);
    }
}

#[test]
fn foreign_finds_state_of_keys_not_owned() {
    // Users 1 and 2 fund creator 3 (paid out) and 4 (a goal on its stream 9004);
    // creator 5 is reported diamonds by another node.
    let engine = engine();
    let funds = (1..=6).map(|id| recharge(id, 1, "coins_7000"));
    let events: Vec<Event> = funds
        .chain([
            recharge(7, 2, "coins_100"),
            gift(8, 1, 3, "universe", 1),
            gift(9, 1, 3, "drama_queen", 1),
            gift(10, 1, 3, "rose", 1),
            gift(11, 2, 4, "rose", 1),
            payout(12, 3, 20_000, "USD"),
            goal(13, 9004, 4, 1_000),
            settlement(5, 1, 10),
        ])
        .collect();
    let outcomes = engine.apply_batch(&events, NOV);
    assert!(outcomes.iter().all(|o| o.is_accepted()), "{outcomes:?}");

    assert!(engine.foreign(|_| true).is_empty());
    let all = engine.foreign(|_| false);
    assert_eq!((all.wallets, all.creators, all.goals), (2, 2, 1));
    // Owning the users but not the creators: the payouts, the reports and the goal.
    let creators = engine.foreign(|key| key <= 2);
    assert_eq!(
        (creators.wallets, creators.creators, creators.goals),
        (0, 2, 1)
    );
    let one = engine.foreign(|key| key != 2);
    assert_eq!((one.wallets, one.creators, one.goals), (1, 0, 0));
    assert_eq!(one.example.as_deref(), Some("the wallet of user 2"));
}

#[test]
fn a_late_gift_from_the_month_before_does_not_reset_the_budget() {
    // Stamps are taken before the locks: a 23:59:59.999 November gift may be applied
    // after a 00:00 December one. It counts in December; the budget is never doubled.
    let engine = engine();
    engine.apply_batch(
        &[
            recharge(1, 1, "coins_7000"),
            account(2, 1, None, true, Some(100)),
        ],
        NOV,
    );
    let late_nov = Stamp(DEC.0 - 1);
    let o = engine.apply_batch(&[gift(3, 1, 2, "rose", 100)], DEC)[0];
    assert!(o.is_accepted());
    let o = engine.apply_batch(&[gift(4, 1, 2, "rose", 1)], late_nov)[0];
    assert_eq!(o.status, Status::Rejected(RejectCode::BudgetExceeded));
    let o = engine.apply_batch(&[gift(5, 1, 2, "rose", 1)], DEC)[0];
    assert_eq!(o.status, Status::Rejected(RejectCode::BudgetExceeded));
    assert_eq!(engine.wallet(UserId(1), DEC).spent_this_month, 100);
    // And the journal replays to the same answers.
    let replayed = Engine::new(economy(), engine.config().clone()).unwrap();
    replayed.replay(&engine.drain_log()).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

#[test]
fn rejected_events_of_unknown_users_leave_no_history() {
    let engine = engine();
    let o = engine.apply_batch(&[gift(1, 500, 2, "rose", 1), custom(2, 501, 10, "0")], NOV);
    assert!(o.iter().all(|o| !o.is_accepted()));
    assert!(engine.history(UserId(500), 10).is_empty());
    assert!(engine.history(UserId(501), 10).is_empty());
}

#[test]
fn the_retry_horizon_answers_or_refuses_a_retry_never_applies_it_twice() {
    let config = EngineConfig {
        idempotency_horizon_ms: 600_000,
        ..EngineConfig::default()
    };
    let horizon = config.idempotency_horizon_ms;
    let engine = Engine::new(economy(), config).unwrap();
    let t = NOV.0;
    let expired = refused(RejectCode::EventExpired);
    // First sent at t, retried at the horizon's edge and just past it.
    let first = engine.apply_issued(&[recharge(1, 1, "coins_100")], &[t], Stamp(t))[0];
    assert!(first.is_accepted());
    let edge = engine.apply_issued(&[recharge(1, 1, "coins_100")], &[t], Stamp(t + horizon))[0];
    assert_eq!((edge.seq, edge.duplicate), (first.seq, true));
    let late = engine.apply_issued(&[recharge(1, 1, "coins_100")], &[t], Stamp(t + horizon + 1))[0];
    assert_eq!(late, expired);
    // A first attempt that arrives only at the edge is applied; its retry past it refused.
    let slow = engine.apply_issued(&[recharge(2, 1, "coins_100")], &[t], Stamp(t + horizon))[0];
    assert!(slow.is_accepted() && !slow.duplicate);
    let again =
        engine.apply_issued(&[recharge(2, 1, "coins_100")], &[t], Stamp(t + 2 * horizon))[0];
    assert_eq!(again, expired);
    // A backend clock up to ISSUED_AHEAD_MAX_MS ahead: still remembered for every
    // admitted retry.
    let ahead = t + giftstream::engine::ISSUED_AHEAD_MAX_MS;
    let o = engine.apply_issued(&[recharge(3, 1, "coins_100")], &[ahead], Stamp(t))[0];
    assert!(o.is_accepted());
    let retry = engine.apply_issued(
        &[recharge(3, 1, "coins_100")],
        &[ahead],
        Stamp(ahead + horizon),
    )[0];
    assert_eq!((retry.seq, retry.duplicate), (o.seq, true));
    // Further ahead than that is refused; 0 means not given (issued when received).
    let o = engine.apply_issued(
        &[recharge(4, 1, "coins_100")],
        &[t + giftstream::engine::ISSUED_AHEAD_MAX_MS + 1],
        Stamp(t),
    )[0];
    assert_eq!(o, expired);
    let o = engine.apply_issued(&[recharge(5, 1, "coins_100")], &[0], Stamp(t + horizon))[0];
    assert!(o.is_accepted());
    assert_eq!(
        engine.wallet(UserId(1), NOV).coins,
        400,
        "1, 2, 3 and 5 credited once"
    );
    let log = engine.drain_log();
    assert_eq!(log.len(), 4, "refusals are not journaled");
    let replayed = Engine::new(economy(), engine.config().clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

#[test]
fn a_share_changed_between_restarts_applies_to_later_coins_only() {
    let engine = engine();
    engine.apply_batch(
        &[
            recharge(1, 1, "coins_7000"),
            gift(2, 1, 7, "panda", 3), // 15 coins: 7 diamonds and a half carried
        ],
        NOV,
    );
    let (state, _) = engine.snapshot();
    let text = EMBEDDED_ECONOMY_TOML.replace("creator_share = \"0.5\"", "creator_share = \"0.75\"");
    assert_ne!(text, EMBEDDED_ECONOMY_TOML);
    let raised = Economy::from_toml_str(&text).unwrap();
    let restarted = Engine::from_state(raised, engine.config().clone(), state).unwrap();
    let c = restarted.creator(CreatorId(7));
    assert_eq!(
        (c.diamonds_total, c.diamond_fraction),
        (7, dec("0.5")),
        "credited stays"
    );
    // 1 coin at 0.75 plus the half carried: 8 diamonds and a quarter.
    restarted.apply_batch(&[gift(3, 1, 7, "rose", 1)], NOV);
    let c = restarted.creator(CreatorId(7));
    assert_eq!((c.diamonds_total, c.diamond_fraction), (8, dec("0.25")));
    assert!(
        restarted.audit().is_clean(),
        "{:?}",
        restarted.audit().violations
    );
    // Lowered: what was credited stays credited.
    let (state, _) = engine.snapshot();
    let text = EMBEDDED_ECONOMY_TOML.replace("creator_share = \"0.5\"", "creator_share = \"0.1\"");
    let lowered = Engine::from_state(
        Economy::from_toml_str(&text).unwrap(),
        engine.config().clone(),
        state,
    )
    .unwrap();
    assert_eq!(lowered.creator(CreatorId(7)).diamonds_total, 7);
}

#[test]
fn a_top_k_changed_between_restarts_rebuilds_the_leaderboards() {
    let config = EngineConfig {
        top_k: 3,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    let mut events: Vec<Event> = (1..=40)
        .map(|u| recharge(u, 100 + u as u64, "coins_7000"))
        .collect();
    // 40 gifters, about 10 per sender shard: each shard's list of 3 left some out.
    // Gifter 100 + u gives u roses to creator 7 (and to stream 9007).
    events.extend((1..=40u64).map(|u| gift(100 + u128::from(u), 100 + u, 7, "rose", u as u32)));
    engine.apply_batch(&events, NOV);
    let (state, _) = engine.snapshot();
    for k in [5, 2] {
        let restarted = Engine::from_state(
            economy(),
            EngineConfig {
                top_k: k,
                ..config.clone()
            },
            state.clone(),
        )
        .unwrap();
        let top: Vec<u64> = restarted
            .creator_top_gifters(CreatorId(7), 10)
            .iter()
            .map(|(u, _)| u.0)
            .collect();
        let want: Vec<u64> = (0..k as u64).map(|i| 140 - i).collect();
        assert_eq!(top, want, "top_k {k}");
        let stream: Vec<u64> = restarted
            .stream_top_gifters(StreamId(9007), 10)
            .iter()
            .map(|(u, _)| u.0)
            .collect();
        assert_eq!(stream, want, "top_k {k}");
        assert!(
            restarted.audit().is_clean(),
            "{:?}",
            restarted.audit().violations
        );
    }
}

/// The README's main command: a demo longer than its id index's steady state (its clock
/// runs at 100k events/s with a 1 s horizon, so ids age out) answers no event
/// `UNAVAILABLE` or `EVENT_EXPIRED`, and its client retries are answered as duplicates.
#[test]
fn the_demo_runs_past_its_horizon_without_refusals() {
    let config = giftstream::demo::DemoConfig {
        users: 2_000,
        creators: 50,
        gifts: 1_500_000,
        workers: 2,
        progress: false,
        ..Default::default()
    };
    let report = giftstream::demo::run(&config, NOV).unwrap();
    assert!(report.audit.is_clean(), "{:?}", report.audit.violations);
    for code in ["UNAVAILABLE", "EVENT_EXPIRED", "EVENT_ID_REUSED"] {
        assert_eq!(
            report.outcomes.get(code),
            None,
            "{code}: {:?}",
            report.outcomes
        );
    }
    // 750 batches per worker, every 100th with a retry of its first event.
    assert_eq!(report.duplicates, 14);
    assert_eq!(report.outcomes.values().sum::<u64>(), 1_500_000);
}

// ---- purchases (issue #31, feature 7) ----------------------------------------------

/// A purchase is checked in the order of a gift: the event (`UNKNOWN_ITEM`,
/// `INVALID_COUNT`, `OVERFLOW`), the account, the limits (the monthly budget, which gifts
/// and purchases share), the funds.
#[test]
fn purchase_rules() {
    let fund = recharge(1, 1, "coins_500");
    let item = |id: u128, name: &str, count: u32| purchase(id, 1, name, count);
    check(
        "one item",
        &[fund],
        item(10, "profile_frame", 1),
        Coins(200),
    );
    check("a count", &[fund], item(10, "sticker_pack", 3), Coins(350));
    check(
        "the whole balance",
        &[recharge(1, 1, "coins_350")],
        item(10, "sticker_pack", 7),
        Coins(0),
    );
    check(
        "one coin short",
        &[recharge(1, 1, "coins_350")],
        item(10, "sticker_pack", 8),
        Rejected(RejectCode::InsufficientCoins),
    );
    check(
        "unknown item",
        &[fund],
        item(10, "no_such_item", 1),
        Rejected(RejectCode::UnknownItem),
    );
    check(
        "a gift is not an item",
        &[fund],
        item(10, "rose", 1),
        Rejected(RejectCode::UnknownItem),
    );
    check(
        "count 0",
        &[fund],
        item(10, "sticker_pack", 0),
        Rejected(RejectCode::InvalidCount),
    );
    check(
        "count over max_gift_count",
        &[fund],
        item(10, "sticker_pack", 10_000),
        Rejected(RejectCode::InvalidCount),
    );
    check(
        "count at max_gift_count is valid (then too dear)",
        &[fund],
        item(10, "sticker_pack", 9_999),
        Rejected(RejectCode::InsufficientCoins),
    );
    check(
        "unknown item before invalid count",
        &[fund],
        item(10, "no_such_item", 0),
        Rejected(RejectCode::UnknownItem),
    );
    let minor = account(2, 1, None, false, None);
    check(
        "minor",
        &[fund, minor],
        item(10, "sticker_pack", 1),
        Rejected(RejectCode::AgeRestricted),
    );
    check(
        "invalid count before the account",
        &[minor],
        item(10, "sticker_pack", 0),
        Rejected(RejectCode::InvalidCount),
    );
    check(
        "restricted region",
        &[fund, account(2, 1, Some("KP"), true, None)],
        item(10, "sticker_pack", 1),
        Rejected(RejectCode::RegionUnavailable),
    );
    check(
        "minor before region",
        &[account(2, 1, Some("KP"), false, None)],
        item(10, "sticker_pack", 1),
        Rejected(RejectCode::AgeRestricted),
    );
    check(
        "region before the budget",
        &[fund, account(2, 1, Some("CU"), true, Some(0))],
        item(10, "sticker_pack", 1),
        Rejected(RejectCode::RegionUnavailable),
    );
    check(
        "over the monthly budget",
        &[fund, account(2, 1, None, true, Some(299))],
        item(10, "profile_frame", 1),
        Rejected(RejectCode::BudgetExceeded),
    );
    check(
        "the budget before the funds",
        &[account(2, 1, None, true, Some(299))],
        item(10, "profile_frame", 1),
        Rejected(RejectCode::BudgetExceeded),
    );
    check(
        "at the monthly budget",
        &[fund, account(2, 1, None, true, Some(300))],
        item(10, "profile_frame", 1),
        Coins(200),
    );
    // One budget for gifts and purchases, whichever comes first.
    check(
        "a gift then a purchase over the budget",
        &[
            fund,
            account(2, 1, None, true, Some(400)),
            gift(3, 1, 2, "rose", 150),
        ],
        item(10, "profile_frame", 1),
        Rejected(RejectCode::BudgetExceeded),
    );
    check(
        "a purchase then a gift over the budget",
        &[
            fund,
            account(2, 1, None, true, Some(400)),
            item(3, "profile_frame", 1),
        ],
        gift(10, 1, 2, "rose", 150),
        Rejected(RejectCode::BudgetExceeded),
    );
    check(
        "a gift and a purchase at the budget",
        &[
            fund,
            account(2, 1, None, true, Some(350)),
            gift(3, 1, 2, "rose", 50),
        ],
        item(10, "profile_frame", 1),
        Coins(150),
    );
    check(
        "a user never seen",
        &[],
        purchase(10, 77, "sticker_pack", 1),
        Rejected(RejectCode::InsufficientCoins),
    );
}

#[test]
fn purchase_cost_overflow_is_an_outcome_before_the_account() {
    // A validated economy refuses an item whose price times max_gift_count overflows
    // (`items[i].coins`); the rule still checks the product, as a gift's does.
    let mut economy = economy();
    let code = economy.item_index("ad_free_month").unwrap() as usize;
    economy.items[code].coins = u64::MAX / 2;
    let engine = Engine::new(economy, EngineConfig::default()).unwrap();
    check_on(
        &engine,
        "cost overflow",
        &[recharge(1, 1, "coins_100")],
        purchase(10, 1, "ad_free_month", 3),
        Rejected(RejectCode::Overflow),
    );
    check_on(
        &engine,
        "overflow before minor",
        &[account(2, 1, None, false, None)],
        purchase(11, 1, "ad_free_month", 3),
        Rejected(RejectCode::Overflow),
    );
    check_on(
        &engine,
        "one is only too dear",
        &[],
        purchase(12, 1, "ad_free_month", 1),
        Rejected(RejectCode::AgeRestricted),
    );
}

#[test]
fn a_retired_item_is_unknown_and_its_purchases_stay_in_history_and_the_audit() {
    let engine = engine();
    let before = engine.apply_batch(
        &[
            recharge(1, 1, "coins_500"),
            purchase(2, 1, "sticker_pack", 2),
        ],
        NOV,
    );
    assert_eq!(before[1].status, Status::Accepted(Effect::Coins(400)));
    let mut file = economy().to_file();
    file.items.retain(|i| i.id != "sticker_pack");
    let next = engine.economy_successor(file).unwrap().expect("new terms");
    engine.change_economy(next, NOV).unwrap();
    // The code still names the item (retired), so a binary client's purchase of it is
    // UNKNOWN_ITEM; JSON clients' ids no longer resolve.
    let sticker = economy().item_index("sticker_pack").unwrap();
    assert!(engine.economy().items[sticker as usize].retired);
    check_on(
        &engine,
        "retired item",
        &[],
        purchase(3, 1, "sticker_pack", 1),
        Rejected(RejectCode::UnknownItem),
    );
    check_on(
        &engine,
        "the others are on sale",
        &[],
        purchase(4, 1, "profile_frame", 1),
        Coins(100),
    );
    let totals = engine.audit().totals;
    assert_eq!(totals.coins_spent_on_purchases, 400);
    assert_eq!(totals.coins_spent, 0, "no gift");
    assert_eq!(totals.coins_received_by_creators, 0, "no creator credited");
    let frame = economy().item_index("profile_frame").unwrap();
    assert_eq!(totals.purchases, [(sticker, 2, 100), (frame, 1, 300)]);
    let history: Vec<_> = engine
        .history(UserId(1), 10)
        .into_iter()
        .map(|h| (h.kind.as_str(), h.code, h.coins_delta))
        .collect();
    assert_eq!(
        history,
        [
            ("purchase", None, -300),
            ("purchase", Some(RejectCode::UnknownItem), 0),
            ("purchase", None, -100),
            ("recharge", None, 500),
        ]
    );
    assert_eq!(engine.wallet(UserId(1), NOV).spent_this_month, 400);
}
