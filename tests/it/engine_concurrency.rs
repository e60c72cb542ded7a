//! Several threads apply overlapping streams at once: gifts between users that are each
//! other's creators, in both directions, payouts and consistent-cut drains in between.
//! Totals and invariants hold, nothing deadlocks, and the drained log replays exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use giftstream::engine::{Engine, EngineConfig, Event, Stamp};

use crate::support::*;

const THREADS: u64 = 4;
const USERS: u64 = 64;
const ROUNDS: u64 = 150;

#[test]
fn overlapping_streams_in_both_directions_keep_invariants_and_replay() {
    let config = EngineConfig {
        shards: 4,
        top_k: 5,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(economy(), config.clone()).unwrap());
    let funding: Vec<Event> = (1..=USERS)
        .map(|u| recharge(u as u128, u, "coins_7000"))
        .collect();
    engine.apply_batch(&funding, NOV);

    let done = Arc::new(AtomicBool::new(false));
    // A drainer takes consistent cuts while the writers run.
    let drainer = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let mut log = Vec::new();
            while !done.load(Ordering::Acquire) {
                let cut = engine.drain_log();
                if let (Some(last), Some(first)) = (log.last(), cut.first()) {
                    let (last, first): (
                        &giftstream::engine::LogEntry,
                        &giftstream::engine::LogEntry,
                    ) = (last, first);
                    assert!(first.seq > last.seq);
                }
                log.extend(cut);
                std::thread::sleep(Duration::from_millis(1));
            }
            log
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut accepted = 0u64;
                for round in 0..ROUNDS {
                    let mut batch = Vec::new();
                    for u in 1..=USERS {
                        // Each thread sends for every user (shared senders), to the next
                        // and the previous user: a gives to b while b gives to a.
                        let id = ((t + 1) as u128) << 96 | (round as u128) << 32 | u as u128;
                        let to = if (u + round + t) % 2 == 0 {
                            u % USERS + 1
                        } else {
                            (u + USERS - 2) % USERS + 1
                        };
                        batch.push(gift(
                            id,
                            u,
                            to,
                            if u % 7 == 0 { "panda" } else { "rose" },
                            1 + (round % 3) as u32,
                        ));
                    }
                    if round % 10 == 0 {
                        let id = ((t + 1) as u128) << 96 | 1 << 95 | round as u128;
                        batch.push(payout(id, 1 + (round + t) % USERS, 100, "USD"));
                    }
                    let stamp = Stamp(NOV.0 + round);
                    accepted += engine
                        .apply_batch(&batch, stamp)
                        .iter()
                        .filter(|o| o.is_accepted())
                        .count() as u64;
                }
                accepted
            })
        })
        .collect();
    let accepted: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    done.store(true, Ordering::Release);
    let mut log = drainer.join().unwrap();
    log.extend(engine.drain_log());

    assert!(accepted > 0);
    let audit = engine.audit();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.totals.coins_recharged, u128::from(USERS) * 7000);
    assert_eq!(
        log.len() as u64,
        engine.last_seq(),
        "no gaps: no duplicates were sent"
    );
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));

    let fresh = Engine::new(economy(), config).unwrap();
    fresh.replay(&log).unwrap();
    assert_eq!(fresh.state_fingerprint(), engine.state_fingerprint());
    assert!(
        fresh.drain_log().is_empty(),
        "replayed events are not logged again"
    );
}

/// A creator cashes out while two connections gift to them: every payout is accepted
/// (well above the minimum) and races the gift chunks' credits. The log must replay to
/// the same outcomes (it did not: a payout was numbered after gifts it had not seen).
#[test]
fn accepted_payouts_racing_gifts_to_their_creator_replay_exactly() {
    let config = EngineConfig::default();
    let engine = Arc::new(Engine::new(economy(), config.clone()).unwrap());
    let funding: Vec<Event> = (0..200u64)
        .flat_map(|u| (0..4).map(move |k| recharge(u128::from(u * 4 + k), 100 + u, "coins_7000")))
        .collect();
    engine.apply_batch(&funding, NOV);
    let gifters: Vec<_> = (0..2u64)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for round in 0..120u64 {
                    let batch: Vec<Event> = (0..1000u64)
                        .map(|k| {
                            let id = 1 << 100 | u128::from(t) << 64 | u128::from(round * 1000 + k);
                            gift(id, 100 + (k + t * 7) % 200, 7, "rose", 10)
                        })
                        .collect();
                    engine.apply_batch(&batch, Stamp(NOV.0 + round));
                }
            })
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    // 20,000 diamonds = 100 USD, the minimum: each one accepted as soon as affordable.
    let cashier = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let mut accepted = 0;
            for k in 0..1_000_000u64 {
                if done.load(Ordering::Acquire) {
                    break;
                }
                let id = 2 << 100 | u128::from(k);
                let o = engine.apply_batch(&[payout(id, 7, 20_000, "USD")], NOV)[0];
                accepted += u64::from(o.is_accepted());
                std::thread::yield_now();
            }
            accepted
        })
    };
    for g in gifters {
        g.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let accepted = cashier.join().unwrap();
    assert!(
        accepted > 10,
        "payouts must be accepted to race: {accepted}"
    );
    let log = engine.drain_log();
    let fresh = Engine::new(economy(), config).unwrap();
    fresh.replay(&log).unwrap();
    assert_eq!(fresh.state_fingerprint(), engine.state_fingerprint());
    assert!(engine.audit().is_clean());
}
