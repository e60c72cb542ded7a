//! Property tests: random event sequences keep the ledger's invariants, duplicates
//! change nothing, and replaying the drained log reproduces the state exactly.

use std::collections::BTreeMap;

use giftstream::engine::{
    CreatorId, Effect, Engine, EngineConfig, Event, EventId, GiftTotals, Stamp, Status, UserId,
};
use proptest::prelude::*;

use crate::support::*;

const GIFTS: [&str; 5] = ["rose", "panda", "concert", "lion", "unicorn"];
const PACKAGES: [&str; 3] = ["coins_70", "coins_500", "coins_7000"];

/// One generated step; ids are assigned in order, `Repeat(k)` resends an earlier event.
#[derive(Debug, Clone)]
enum Step {
    Recharge {
        user: u64,
        package: usize,
    },
    Custom {
        user: u64,
        coins: u64,
    },
    Gift {
        sender: u64,
        creator: u64,
        gift: usize,
        count: u32,
    },
    Payout {
        creator: u64,
        diamonds: u64,
        eur: bool,
    },
    Account {
        user: u64,
        minor: bool,
        restricted: bool,
        budget: Option<u64>,
    },
    Goal {
        creator: u64,
        target: u64,
    },
    /// A cluster node's cumulative report of the diamonds it credited `creator`.
    Settle {
        creator: u64,
        source: u16,
        diamonds: u64,
    },
    Repeat(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let user = 1u64..12;
    prop_oneof![
        3 => (user.clone(), 0..PACKAGES.len()).prop_map(|(user, package)| Step::Recharge { user, package }),
        1 => (user.clone(), 0u64..3_000_000).prop_map(|(user, coins)| Step::Custom { user, coins }),
        10 => (user.clone(), user.clone(), 0..GIFTS.len(), 0u32..12)
            .prop_map(|(sender, creator, gift, count)| Step::Gift { sender, creator, gift, count }),
        1 => (user.clone(), prop_oneof![0u64..30_000, Just(20_000)], any::<bool>())
            .prop_map(|(creator, diamonds, eur)| Step::Payout { creator, diamonds, eur }),
        1 => (user.clone(), prop::bool::weighted(0.2), prop::bool::weighted(0.1), prop::option::of(0u64..5_000))
            .prop_map(|(user, minor, restricted, budget)| Step::Account { user, minor, restricted, budget }),
        1 => (user.clone(), 0u64..10_000).prop_map(|(creator, target)| Step::Goal { creator, target }),
        1 => (user, 1u16..4, 0u64..40_000)
            .prop_map(|(creator, source, diamonds)| Step::Settle { creator, source, diamonds }),
        1 => (0usize..1000).prop_map(Step::Repeat),
    ]
}

fn events(steps: &[Step]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let id = i as u128 + 1;
        let e = match *s {
            Step::Recharge { user, package } => recharge(id, user, PACKAGES[package]),
            Step::Custom { user, coins } => custom(id, user, coins, "9.99"),
            Step::Gift {
                sender,
                creator,
                gift: g,
                count,
            } => gift(id, sender, creator, GIFTS[g], count),
            Step::Payout {
                creator,
                diamonds,
                eur,
            } => payout(id, creator, diamonds, if eur { "EUR" } else { "USD" }),
            Step::Account {
                user,
                minor,
                restricted,
                budget,
            } => account(id, user, restricted.then_some("KP"), !minor, budget),
            Step::Goal { creator, target } => goal(id, 9000 + creator, creator, target),
            Step::Settle {
                creator,
                source,
                diamonds,
            } => Event::Settlement(giftstream::engine::Settlement {
                id: EventId(id),
                creator: CreatorId(creator),
                source,
                diamonds,
                nanos: 0,
            }),
            Step::Repeat(k) if !out.is_empty() => out[k % out.len()],
            Step::Repeat(_) => recharge(id, 1, "coins_70"),
        };
        out.push(e);
    }
    out
}

fn small_engine(shards: usize) -> Engine {
    Engine::new(
        economy(),
        EngineConfig {
            shards,
            history_per_user: 4,
            top_k: 3,
            idempotency_horizon_ms: 60 * 24 * 3600 * 1000,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(
        steps in proptest::collection::vec(step(), 1..300),
        batch in 1usize..40,
        shards in prop_oneof![Just(1usize), Just(2), Just(8)],
    ) {
        let events = events(&steps);
        let engine = small_engine(shards);
        // Independent bookkeeping from the outcomes alone.
        let mut recharged = 0u128;
        let mut spent = 0u128;
        let mut received: BTreeMap<u64, u128> = BTreeMap::new();
        // The last (largest) report per (creator, source node).
        let mut reported: BTreeMap<(u64, u16), u64> = BTreeMap::new();
        let mut seen: BTreeMap<EventId, giftstream::engine::Outcome> = BTreeMap::new();
        let mut last_seq = 0;
        let economy = economy();
        for (b, chunk) in events.chunks(batch).enumerate() {
            // Time moves on, across a month boundary halfway.
            let stamp = if b * batch < events.len() / 2 { Stamp(NOV.0 + b as u64) } else { Stamp(DEC.0 + b as u64) };
            let outcomes = engine.apply_batch(chunk, stamp);
            for (e, o) in chunk.iter().zip(&outcomes) {
                if let Some(first) = seen.get(&e.id()) {
                    prop_assert!(o.duplicate);
                    prop_assert_eq!((o.seq, o.status), (first.seq, first.status));
                    continue;
                }
                prop_assert!(!o.duplicate);
                prop_assert!(o.seq > 0);
                last_seq = last_seq.max(o.seq);
                seen.insert(e.id(), *o);
                if let Status::Accepted(effect) = o.status {
                    match e {
                        Event::Recharge(r) => recharged += u128::from(r.coins),
                        Event::Gift(g) => {
                            let cost = u128::from(economy.gifts[g.gift.0 as usize].coins) * u128::from(g.count);
                            spent += cost;
                            *received.entry(g.creator.0).or_default() += cost;
                            prop_assert_ne!(g.sender, g.creator.as_user());
                        }
                        Event::Settlement(st) => {
                            let last = reported.entry((st.creator.0, st.source)).or_default();
                            prop_assert_eq!(effect, Effect::Settled { credited: st.diamonds.saturating_sub(*last) });
                            *last = (*last).max(st.diamonds);
                        }
                        _ => {}
                    }
                }
            }
        }
        let audit = engine.audit();
        prop_assert!(audit.is_clean(), "{:?}", audit.violations);
        prop_assert_eq!(audit.totals.coins_recharged, recharged);
        prop_assert_eq!(audit.totals.coins_spent, spent);
        prop_assert_eq!(audit.totals.coins_recharged, audit.totals.coins_in_wallets + audit.totals.coins_spent);
        prop_assert!(audit.totals.diamonds_paid <= audit.totals.diamonds_credited + audit.totals.diamonds_settled_in);
        prop_assert_eq!(audit.totals.diamonds_settled_in, reported.values().map(|&d| u128::from(d)).sum::<u128>());
        for creator in 1u64..12 {
            let c = engine.creator(CreatorId(creator));
            let coins = received.get(&creator).copied().unwrap_or(0);
            let settled: u128 = reported.range((creator, 0)..(creator + 1, 0)).map(|(_, &d)| u128::from(d)).sum();
            prop_assert_eq!(c.coins_received, coins);
            prop_assert_eq!(c.diamonds_total, coins / 2, "share 0.5: floor(coins x share)");
            prop_assert_eq!(c.diamonds_settled_in, settled);
            prop_assert!(c.diamonds_available <= c.diamonds_total + settled);
        }
        prop_assert_eq!(engine.last_seq(), last_seq);

        // A batch of only duplicates changes nothing.
        let before = engine.state_fingerprint();
        let outcomes = engine.apply_batch(&events, Stamp(DEC.0 + 1_000_000));
        prop_assert!(outcomes.iter().all(|o| o.duplicate));
        prop_assert_eq!(engine.state_fingerprint(), before.clone());

        // Replaying the drained log into a fresh engine reproduces the state exactly.
        let log = engine.drain_log();
        prop_assert_eq!(log.len(), seen.len());
        prop_assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
        // Each accepted gift carries its sender's running totals (the read model's
        // absolute scores): equal to a tally of the log in order.
        let mut by_creator: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut by_stream: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for entry in &log {
            match (entry.event, entry.outcome.status) {
                (Event::Gift(g), Status::Accepted(_)) => {
                    let cost = economy.gifts[g.gift.0 as usize].coins * u64::from(g.count);
                    let c = by_creator.entry((g.creator.0, g.sender.0)).or_default();
                    *c += cost;
                    let s = by_stream.entry((g.stream.0, g.sender.0)).or_default();
                    *s += cost;
                    prop_assert_eq!(entry.totals, Some(GiftTotals { creator: *c, stream: *s }));
                }
                _ => prop_assert_eq!(entry.totals, None),
            }
        }
        let fresh = small_engine(shards);
        fresh.replay(&log).unwrap();
        prop_assert_eq!(fresh.state_fingerprint(), before);
        // Replayed events are committed already: none is logged (and journaled) again.
        prop_assert!(fresh.drain_log().is_empty());
        // And the replica keeps going the same way as the original.
        let next = [gift(99_999, 1, 2, "rose", 1)];
        prop_assert_eq!(
            engine.apply_batch(&next, Stamp(DEC.0 + 2_000_000)),
            fresh.apply_batch(&next, Stamp(DEC.0 + 2_000_000))
        );
        let _ = UserId(0);
    }
}

#[test]
fn replay_refuses_a_log_it_cannot_reproduce() {
    let engine = small_engine(2);
    engine.apply_batch(&[recharge(1, 1, "coins_70"), gift(2, 1, 2, "rose", 5)], NOV);
    let mut log = engine.drain_log();
    assert_eq!(log.len(), 2);
    let fresh = small_engine(2);
    let engine_outcome = log[1].outcome.status;
    log[1].outcome.status = Status::Accepted(Effect::Coins(1));
    assert!(matches!(
        fresh.replay(&log),
        Err(giftstream::engine::ReplayError::Mismatch { seq: 2, .. })
    ));
    log[1].outcome.status = engine_outcome;
    // Sequence numbers never skip: a log missing its first event is refused, not
    // applied as if the wallet had never been funded.
    let fresh = small_engine(2);
    assert_eq!(
        fresh.replay(&log[1..]),
        Err(giftstream::engine::ReplayError::Gap { seq: 2, last: 0 })
    );
    assert_eq!(fresh.last_seq(), 0, "nothing of a refused log is applied");
    fresh.replay(&log[..1]).unwrap();
    assert!(matches!(
        fresh.replay(&log[..1]),
        Err(giftstream::engine::ReplayError::OutOfOrder { seq: 1, last: 1 })
    ));
    let fresh = small_engine(2);
    log.swap(0, 1);
    assert!(matches!(
        fresh.replay(&log),
        Err(giftstream::engine::ReplayError::Gap { seq: 2, last: 0 })
    ));
}
