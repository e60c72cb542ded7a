//! The ledger and the gifts of `apply/uniform`, shared by `benches/engine.rs` and
//! `examples/sustained_apply.rs` (the same work, timed by criterion or end to end).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId, Recharge, Stamp,
    StreamId, UserId,
};

pub const WALLETS: u64 = 1_000_000;
pub const CREATORS: u64 = 10_000;
pub const BATCH: usize = 1_000;
pub const STAMP: Stamp = Stamp(1_794_700_800_000);

/// The service's defaults, with `engine.shards` from `GIFTSTREAM_BENCH_SHARDS` if set
/// (the shard-count sweep in BENCHMARKS.md), and a 1 s retry horizon: with the stamps
/// of [`next_stamp`] (100k events/s), the id index holds ~1.1M ids in its steady state
/// (the horizon and `ISSUED_AHEAD_MAX_MS`), as the 1M-entry window before it did.
pub fn base_config() -> EngineConfig {
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
pub static NEXT_STAMP: AtomicU64 = AtomicU64::new(STAMP.0);

pub fn next_stamp() -> Stamp {
    Stamp(NEXT_STAMP.fetch_add(10, Ordering::Relaxed))
}

pub fn funded_engine(config: EngineConfig) -> Engine {
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    let mut batch = Vec::with_capacity(BATCH);
    for u in 0..WALLETS {
        batch.push(Event::Recharge(Recharge {
            id: EventId(u128::from(u) | 1 << 100),
            user: UserId(CREATORS + u),
            coins: 2_500_000,
            price: Decimal::new(3_200_000, 2),
            currency: Currency::USD,
            package: None.into(),
            channel: Channel::Web,
            paid_ms: 0,
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
pub struct Gifts {
    rng: ChaCha8Rng,
    next_id: u128,
    hot: bool,
}

impl Gifts {
    pub fn new(seed: u64, hot: bool) -> Self {
        Gifts {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_id: u128::from(seed) << 64,
            hot,
        }
    }

    pub fn batch(&mut self) -> Vec<Event> {
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
