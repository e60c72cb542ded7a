//! Review of the economy-versions change: adversarial sequences (written by a reviewer
//! trying to break it; three of them failed before their fixes: a settlement racing a
//! gift chunk, events of a build before versions replayed under an edited file, and a
//! restart with an unchanged file undoing a PUT).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use giftstream::economy::{Economy, EconomyFile};
use giftstream::engine::{
    CreatorId, Effect, Engine, EngineConfig, Event, LogEntry, RejectCode, Settlement, Status,
    UserId,
};

use crate::support::*;

fn with_share(e: &Economy, share: &str) -> Economy {
    let mut file = e.to_file();
    file.creator_share = share.to_owned();
    e.successor(file).unwrap()
}

fn settlement(creator: u64, source: u16, diamonds: u64, nanos: u32) -> Event {
    Event::Settlement(Settlement {
        id: Settlement::id_for_exact(CreatorId(creator), source, diamonds, nanos),
        creator: CreatorId(creator),
        source,
        diamonds,
        nanos,
    })
}

fn settled(o: &giftstream::engine::Outcome) -> u64 {
    match o.status {
        Status::Accepted(Effect::Settled { credited }) => credited,
        other => panic!("not a settlement outcome: {other:?}"),
    }
}

// ---- Finding 1: a settlement's outcome now depends on the owner's own carried fraction,
// but a settlement does not take the sequence gate: it can be numbered after a gift chunk
// whose credits are not merged yet, and replay (which merges first) answers differently.

#[test]
fn review_settlement_racing_a_gift_chunk_replays_exactly() {
    const CREATOR: u64 = 7;
    const CHUNK: u64 = 333; // odd: each chunk flips the creator's own half-diamond
    let mut failures = Vec::new();
    for attempt in 0..3u128 {
        let live = Arc::new(engine());
        let base = attempt * 1_000_000;
        live.apply_batch(
            &[
                recharge(base + 1, 1, "coins_7000"),
                recharge(base + 2, 1, "coins_7000"),
            ],
            NOV,
        );
        let done = Arc::new(AtomicBool::new(false));
        let gifter = {
            let (live, done) = (live.clone(), done.clone());
            std::thread::spawn(move || {
                for b in 0..40u128 {
                    let batch: Vec<Event> = (0..CHUNK as u128)
                        .map(|i| gift(base + 10_000 + b * 1000 + i, 1, CREATOR, "rose", 1))
                        .collect();
                    live.apply_batch(&batch, NOV);
                }
                done.store(true, Ordering::Release);
            })
        };
        // Node 1 reports (k, 0), (k, 0.5), (k+1, 0), ...: each one's credit depends on
        // whether the owner's own fraction is 0 or 0.5 at its number.
        let mut k = 0u64;
        while !done.load(Ordering::Acquire) && k < 200_000 {
            let (d, n) = (k / 2, if k % 2 == 1 { 500_000_000 } else { 0 });
            live.apply_batch(&[settlement(CREATOR, 1, d, n)], NOV);
            k += 1;
        }
        gifter.join().unwrap();
        let log = live.drain_log();
        let replayed = engine();
        match replayed.replay(&log) {
            Err(e) => failures.push(format!("attempt {attempt}: {e}")),
            Ok(()) => {
                if replayed.state_fingerprint() != live.state_fingerprint() {
                    failures.push(format!("attempt {attempt}: fingerprints differ"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "live run not reproduced by replay:\n{}",
        failures.join("\n")
    );
}

// ---- Finding 2: a ledger journaled before versions is replayed under the file of the
// *current* start (version 0 skips check_successor), not the file version 1 recorded.

#[test]
fn review_legacy_events_replay_under_version_1_not_an_edited_file() {
    // Build before versions: events under economy.toml F (version 0, nothing recorded).
    let live = engine();
    let o = live.apply_batch(
        &[recharge(1, 1, "coins_100"), gift(2, 1, 7, "panda", 1)],
        NOV,
    );
    assert_eq!(o[1].status, Status::Accepted(Effect::Coins(95)));
    // First start of the new build: records F as version 1 (journaled at seq 3).
    let v1 = live
        .economy_for_start(economy().to_file(), None)
        .unwrap()
        .unwrap();
    live.change_economy(v1.clone(), NOV).unwrap();
    live.apply_batch(&[gift(3, 1, 7, "rose", 1)], NOV);
    let log = live.drain_log();

    // The operator then reorders economy.toml (docs/operations.md: "Reordering entries changes
    // nothing") and restarts before a snapshot covers seq 1..2: recovery builds the
    // engine from the file of this start and replays the journal.
    let mut edited: EconomyFile = economy().to_file();
    edited.gifts.swap(0, 1); // panda first, rose second
    let restarted =
        Engine::new(Economy::from_file(edited).unwrap(), EngineConfig::default()).unwrap();
    // Recovery puts the ledger's first recorded version in force as version 0 (its
    // digest is the `base` field of the economies hash): what the old events ran under.
    assert!(restarted.assume_base_economy(&v1));
    restarted.know_economy(Arc::new(v1));
    let replay = restarted.replay(&log);
    assert!(replay.is_ok(), "replay after a reordered file: {replay:?}");
    assert_eq!(restarted.state_fingerprint(), live.state_fingerprint());
}

// ---- Held: codes across versions, from_doc round trips, snapshots and replay.

#[test]
fn review_codes_stay_put_across_reorder_remove_readd_and_round_trip() {
    let live = engine();
    let mut versions: Vec<Economy> = Vec::new();
    let v1 = live
        .economy_for_start(economy().to_file(), None)
        .unwrap()
        .unwrap();
    live.change_economy(v1.clone(), NOV).unwrap();
    versions.push(v1.clone());
    let rose = v1.gift_index("rose").unwrap();
    let panda = v1.gift_index("panda").unwrap();
    let coins_100 = v1.package_index("coins_100").unwrap();
    live.apply_batch(
        &[
            recharge(1, 1, "coins_7000"),
            gift(2, 1, 7, "panda", 3),
            gift(3, 1, 7, "rose", 1),
        ],
        NOV,
    );

    // v2: reversed, panda and coins_100 removed, a new gift and package added.
    let mut f2 = v1.to_file();
    f2.gifts.reverse();
    f2.gifts.retain(|g| g.id != "panda");
    f2.gifts.push(giftstream::economy::GiftFile {
        id: "comet".into(),
        name: "Comet".into(),
        coins: 7,
    });
    f2.packages.reverse();
    f2.packages.retain(|p| p.id != "coins_100");
    let mut new_pkg = v1.to_file().packages[0].clone();
    new_pkg.id = "coins_77".into();
    new_pkg.coins = 77;
    f2.packages.push(new_pkg);
    let v2 = live.economy_successor(f2).unwrap().unwrap();
    assert_eq!(v2.gift_index("rose"), Some(rose));
    assert_eq!(v2.gift_index("panda"), None);
    assert!(v2.gifts[panda as usize].retired && v2.gifts[panda as usize].id == "panda");
    assert_eq!(v2.gift_index("comet"), Some(v1.gifts.len() as u32));
    assert_eq!(v2.package_index("coins_100"), None);
    assert!(v2.packages[coins_100 as usize].retired);
    live.change_economy(v2.clone(), NOV).unwrap();
    versions.push(v2.clone());

    let o = live.apply_batch(
        &[gift(4, 1, 7, "panda", 1), recharge(5, 1, "coins_100")],
        NOV,
    );
    assert_eq!(o[0].status, Status::Rejected(RejectCode::UnknownGift));
    assert_eq!(o[1].status, Status::Rejected(RejectCode::AmountOutOfRange));
    // History and the creator's gift counts keep panda.
    let view = live.creator(CreatorId(7));
    assert!(
        view.gifts.contains(&(giftstream::engine::GiftId(panda), 3)),
        "{view:?}"
    );
    assert!(live.history(UserId(1), 100).len() >= 5);

    // v3: panda re-added (at the front), comet removed, a second new gift.
    let mut f3 = v2.to_file();
    f3.gifts
        .insert(0, v1.to_file().gifts[panda as usize].clone());
    f3.gifts.retain(|g| g.id != "comet");
    f3.gifts.push(giftstream::economy::GiftFile {
        id: "star".into(),
        name: "Star".into(),
        coins: 3,
    });
    let v3 = live.economy_successor(f3).unwrap().unwrap();
    assert_eq!(v3.gift_index("panda"), Some(panda));
    assert_eq!(v3.gift_index("comet"), None);
    assert_eq!(v3.gift_index("star"), Some(v1.gifts.len() as u32 + 1));
    live.change_economy(v3.clone(), NOV).unwrap();
    versions.push(v3.clone());
    let o = live.apply_batch(&[gift(6, 1, 7, "panda", 1)], NOV);
    assert!(matches!(o[0].status, Status::Accepted(_)), "{o:?}");

    for v in &versions {
        let back = Economy::from_doc(v.to_doc()).unwrap();
        assert_eq!(&back, v);
        assert_eq!(back.to_doc().digest(), v.to_doc().digest());
        let bytes = giftstream::economy::EconomyDoc::from_bytes(&v.to_doc().to_bytes()).unwrap();
        assert_eq!(&Economy::from_doc(bytes).unwrap(), v);
    }

    let (state, log) = live.snapshot();
    let restored = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    assert_eq!(*restored.economy(), v3);
    assert_eq!(restored.state_fingerprint(), live.state_fingerprint());
    let replayed = engine();
    for v in &versions {
        replayed.know_economy(Arc::new(v.clone()));
    }
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live.state_fingerprint());
    assert!(live.audit().is_clean(), "{:?}", live.audit().violations);
}

// ---- Held: fractions carry exactly across shares with different scales.

#[test]
fn review_fractions_carry_across_share_scales() {
    let live = engine();
    let v1 = live
        .economy_for_start(economy().to_file(), None)
        .unwrap()
        .unwrap();
    live.change_economy(v1.clone(), NOV).unwrap();
    live.apply_batch(
        &[recharge(1, 1, "coins_100"), gift(2, 1, 7, "rose", 1)],
        NOV,
    );
    let v2 = with_share(&v1, "0.333333333");
    live.change_economy(v2.clone(), NOV).unwrap();
    live.apply_batch(&[gift(3, 1, 7, "rose", 1)], NOV);
    let v3 = with_share(&v2, "0.7");
    live.change_economy(v3.clone(), NOV).unwrap();
    live.apply_batch(&[gift(4, 1, 7, "rose", 1)], NOV);
    let c = live.creator(CreatorId(7));
    // 0.5 + 0.333333333 + 0.7 = 1.533333333
    assert_eq!(c.diamonds_total, 1);
    assert_eq!(c.diamond_fraction, dec("0.533333333"));
    let v4 = with_share(&v3, "1");
    live.change_economy(v4.clone(), NOV).unwrap();
    live.apply_batch(&[gift(5, 1, 7, "panda", 19)], NOV);
    assert_eq!(live.creator(CreatorId(7)).diamonds_total, 96);
    let log = live.drain_log();
    let replayed = engine();
    for v in [v1, v2, v3, v4] {
        replayed.know_economy(Arc::new(v));
    }
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live.state_fingerprint());
}

// ---- Held: reports with fractions; repeated, older and legacy reports; payout bound.

#[test]
fn review_exact_reports_repeat_reorder_and_legacy_add_nothing_twice() {
    let e = engine();
    // Owner's own credit: 3 roses = 1.5 diamonds.
    e.apply_batch(
        &[recharge(1, 1, "coins_100"), gift(2, 1, 7, "rose", 3)],
        NOV,
    );
    let legacy = e.apply_batch(&[settlement(7, 1, 10, 0)], NOV)[0];
    assert_eq!(settled(&legacy), 10);
    let exact = e.apply_batch(&[settlement(7, 1, 10, 600_000_000)], NOV)[0];
    assert_eq!(settled(&exact), 0, "the reports' whole diamonds: still 10");
    // But what the creator can cash out counts the owner's own half: 1 + 10 + 1.
    let c = e.creator(CreatorId(7));
    assert_eq!(c.diamonds_total + c.diamonds_settled_in, 12);
    // Repeated (same id), older, and a legacy retry add nothing.
    let again = e.apply_batch(&[settlement(7, 1, 10, 600_000_000)], NOV)[0];
    assert!(again.duplicate && again.seq == exact.seq, "{again:?}");
    let legacy_again = e.apply_batch(&[settlement(7, 1, 10, 0)], NOV)[0];
    assert!(legacy_again.duplicate && legacy_again.seq == legacy.seq);
    for ev in [
        settlement(7, 1, 10, 100_000_000),
        settlement(7, 1, 9, 999_999_999),
        settlement(7, 1, 9, 0),
    ] {
        let o = e.apply_batch(&[ev], NOV)[0];
        assert_eq!(settled(&o), 0, "{o:?}");
    }
    // A second node's fraction.
    let o = e.apply_batch(&[settlement(7, 2, 0, 900_000_000)], NOV)[0];
    assert_eq!(settled(&o), 1, "the reports: 10.6 + 0.9 = 11.5");
    let c = e.creator(CreatorId(7));
    assert_eq!(c.diamonds_total + c.diamonds_settled_in, 13);
    assert!(e.audit().is_clean(), "{:?}", e.audit().violations);
    let log = e.drain_log();
    let r = engine();
    r.replay(&log).unwrap();
    assert_eq!(r.state_fingerprint(), e.state_fingerprint());
    let (state, _) = e.snapshot();
    let back = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    assert_eq!(back.state_fingerprint(), e.state_fingerprint());
}

// ---- Held: changes racing chunks, payouts and a snapshot cut.

#[test]
fn review_changes_racing_gifts_payouts_and_a_cut_replay_exactly() {
    let live = Arc::new(engine());
    let v1 = live
        .economy_for_start(economy().to_file(), None)
        .unwrap()
        .unwrap();
    live.change_economy(v1.clone(), NOV).unwrap();
    let funding: Vec<Event> = (0..40u128)
        .map(|i| recharge(1 + i, 1 + (i as u64 % 8), "coins_7000"))
        .collect();
    live.apply_batch(&funding, NOV);
    let versions = Arc::new(parking_lot::Mutex::new(vec![v1.clone()]));
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..2u64 {
        let (live, done) = (live.clone(), done.clone());
        handles.push(std::thread::spawn(move || {
            for b in 0..300u128 {
                let batch: Vec<Event> = (0..8u128)
                    .map(|i| {
                        let id = 100_000 + (t as u128) * 1_000_000 + b * 100 + i;
                        let name = if i % 3 == 0 { "panda" } else { "planet" };
                        gift(id, 1 + (i as u64 % 8), 7 + t, name, 1)
                    })
                    .collect();
                live.apply_batch(&batch, NOV);
                if b % 10 == 0 {
                    let id = 9_000_000 + (t as u128) * 10_000 + b;
                    live.apply_batch(&[payout(id, 7 + t, 20_000, "USD")], NOV);
                }
            }
            done.store(true, Ordering::Release);
        }));
    }
    let changer = {
        let (live, versions) = (live.clone(), versions.clone());
        std::thread::spawn(move || {
            let shares = ["0.333333333", "0.7", "0.5", "0.9"];
            for n in 0..60 {
                let cur = live.economy();
                let mut f = cur.to_file();
                f.creator_share = shares[n % 4].to_owned();
                if n % 5 == 1 {
                    f.gifts.retain(|g| g.id != "panda");
                } else if !f.gifts.iter().any(|g| g.id == "panda") {
                    f.gifts.push(economy().to_file().gifts[1].clone());
                }
                f.gifts.reverse();
                if let Some(next) = live.economy_successor(f).unwrap() {
                    versions.lock().push(next.clone());
                    live.change_economy(next, NOV).unwrap();
                }
                std::thread::yield_now();
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (state, before_cut) = live.snapshot();
    changer.join().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    let after_cut = live.drain_log();
    let versions = versions.lock().clone();

    let restored = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    for v in &versions {
        restored.know_economy(Arc::new(v.clone()));
    }
    restored.replay(&after_cut).unwrap();
    assert_eq!(restored.state_fingerprint(), live.state_fingerprint());

    let scratch = engine();
    for v in &versions {
        scratch.know_economy(Arc::new(v.clone()));
    }
    let all: Vec<LogEntry> = before_cut.into_iter().chain(after_cut).collect();
    scratch.replay(&all).unwrap();
    assert_eq!(scratch.state_fingerprint(), live.state_fingerprint());
    assert!(live.audit().is_clean(), "{:?}", live.audit().violations);
}

// ---- Finding 3: a start whose edited file has the terms in force records nothing and
// keeps the old file digest; the next restart with that (unchanged) file undoes a PUT.

/// A restart: the state as a snapshot carries it, then the start's economy.toml check
/// against the file the last start saw (as `RedisJournal::adopt_start_economy` does).
fn restart(live: &Engine, file: &EconomyFile, last_file: &mut Option<u64>) -> Engine {
    let (state, _) = live.snapshot();
    let e = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    if let Some(next) = e.economy_for_start(file.clone(), *last_file).unwrap() {
        e.change_economy(next, NOV).unwrap();
    }
    *last_file = Some(file.digest());
    e
}

#[test]
fn review_restart_with_unchanged_file_keeps_the_put_version() {
    let a = economy().to_file();
    let first = engine();
    let v1 = first.economy_for_start(a.clone(), None).unwrap().unwrap();
    first.change_economy(v1, NOV).unwrap();
    let mut last_file = Some(a.digest());

    // PUT /v1/economy with share 0.6 (Service::change_economy: economy_successor).
    let mut b = a.clone();
    b.creator_share = "0.6".into();
    let v2 = first.economy_successor(b.clone()).unwrap().unwrap();
    first.change_economy(v2, NOV).unwrap();

    // docs/operations.md: "keep the file in step with what you PUT": economy.toml := B, restart.
    let second = restart(&first, &b, &mut last_file);
    assert_eq!(second.economy().version, 2, "same terms: nothing new");

    // PUT share 0.7, then restart with economy.toml unchanged (still B).
    let mut c = b.clone();
    c.creator_share = "0.7".into();
    let v3 = second.economy_successor(c).unwrap().unwrap();
    second.change_economy(v3, NOV).unwrap();
    let third = restart(&second, &b, &mut last_file);
    assert_eq!(
        (third.economy().version, third.economy().creator_share),
        (3, dec("0.7")),
        "a restart with the file unchanged must keep the PUT's version"
    );
}
