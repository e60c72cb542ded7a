//! `apply/uniform` of `benches/engine.rs` run end to end instead of under criterion:
//! the same funded ledger (1M wallets) and seeded uniform gifts, 3,000 batches of 1,000
//! applied back to back (the log drained after each), timed as a whole, with a count of
//! the outcomes (so two builds can be checked to do the same work). Used to compare
//! builds side by side where criterion's per-batch figure and a sustained run disagree
//! (docs/bench-log/2026-12-05-keyed-id-hash.txt).
//!
//! ```sh
//! cargo run --release --example sustained_apply
//! SUSTAINED_PREGEN=1 cargo run --release --example sustained_apply   # inputs cold
//! ```
#![allow(dead_code)]
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId, Recharge, Stamp,
    StreamId, UserId,
};

const WALLETS: u64 = 1_000_000;
const CREATORS: u64 = 10_000;
const BATCH: usize = 1_000;
const STAMP: Stamp = Stamp(1_794_700_800_000);

/// The service's defaults, with `engine.shards` from `GIFTSTREAM_BENCH_SHARDS` if set
/// (the shard-count sweep in BENCHMARKS.md), and a 1 s retry horizon: with the stamps
/// of [`next_stamp`] (100k events/s), the id index holds ~1.1M ids in its steady state
/// (the horizon and `ISSUED_AHEAD_MAX_MS`), as the 1M-entry window before it did.
fn base_config() -> EngineConfig {
    let shards = std::env::var("GIFTSTREAM_BENCH_SHARDS")
        .ok()
        .map(|s| s.parse().expect("GIFTSTREAM_BENCH_SHARDS is a number"));
    EngineConfig {
        shards: shards.unwrap_or(EngineConfig::default().shards),
        idempotency_horizon_ms: 1_000,
        idempotency_entries_max: 2 << 20,
        ..EngineConfig::default()
    }
}

/// Stamps move 10 ms per batch of 1000 (100k events/s), so ids expire as in service.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(STAMP.0);

fn next_stamp() -> Stamp {
    Stamp(NEXT_STAMP.fetch_add(10, Ordering::Relaxed))
}

fn funded_engine(config: EngineConfig) -> Engine {
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    let mut batch = Vec::with_capacity(BATCH);
    for u in 0..WALLETS {
        batch.push(Event::Recharge(Recharge {
            id: EventId(u128::from(u) | 1 << 100),
            user: UserId(CREATORS + u),
            coins: 2_500_000,
            price: Decimal::new(3_200_000, 2),
            currency: Currency::USD,
            package: None,
            channel: Channel::Web,
        }));
        if batch.len() == BATCH {
            engine.apply_batch(&batch, STAMP);
            batch.clear();
        }
    }
    engine.apply_batch(&batch, STAMP);
    engine
}

/// Generates batches of fresh gifts (new ids every call).
struct Gifts {
    rng: ChaCha8Rng,
    next_id: u128,
    hot: bool,
}

impl Gifts {
    fn new(seed: u64, hot: bool) -> Self {
        Gifts {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_id: u128::from(seed) << 64,
            hot,
        }
    }

    fn batch(&mut self) -> Vec<Event> {
        (0..BATCH)
            .map(|_| {
                self.next_id += 1;
                let creator = if self.hot {
                    0
                } else {
                    self.rng.random_range(0..CREATORS)
                };
                Event::Gift(Gift {
                    id: EventId(self.next_id),
                    sender: UserId(CREATORS + self.rng.random_range(0..WALLETS)),
                    creator: CreatorId(creator),
                    stream: StreamId(creator),
                    gift: GiftId(0),
                    count: 1,
                })
            })
            .collect()
    }
}

fn main() {
    let engine = funded_engine(base_config());
    let mut gifts = Gifts::new(1, false);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    // SUSTAINED_PREGEN=1: every batch generated before the clock starts (cold in the
    // caches when applied, as criterion's `iter_batched` with `LargeInput` has them).
    let pregen = std::env::var_os("SUSTAINED_PREGEN").is_some();
    let mut ready: std::collections::VecDeque<Vec<Event>> = if pregen {
        (0..3000).map(|_| gifts.batch()).collect()
    } else {
        Default::default()
    };
    let t = std::time::Instant::now();
    for _ in 0..3000 {
        let batch = ready.pop_front().unwrap_or_else(|| gifts.batch());
        for o in engine.apply_batch(&batch, next_stamp()) {
            *counts
                .entry(
                    format!("{:?} dup={}", o.status, o.duplicate)
                        .chars()
                        .take(40)
                        .collect(),
                )
                .or_default() += 1;
        }
        engine.drain_log();
    }
    println!("{:?} in {:?}", counts, t.elapsed());
}
