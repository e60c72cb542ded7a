//! Engine apply throughput (SPEC §4), in-process:
//! - `apply/uniform`: one thread, 1M funded wallets, uniform senders, 10k creators,
//!   batches of 1000 gifts;
//! - `two_threads/{uniform,hot}`: two threads, the same, vs every gift to one creator.
//!
//! Run: `cargo bench --bench engine`. Figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId, Recharge, Stamp,
    StreamId, UserId,
};

const WALLETS: u64 = 1_000_000;
const CREATORS: u64 = 10_000;
const BATCH: usize = 1_000;
const STAMP: Stamp = Stamp(1_794_700_800_000);

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

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, config) in [
        ("uniform", EngineConfig::default()),
        (
            "uniform_lean",
            EngineConfig {
                history_per_user: 0,
                keep_log: false,
                ..EngineConfig::default()
            },
        ),
    ] {
        let engine = funded_engine(config);
        let mut gifts = Gifts::new(1, false);
        group.bench_function(name, |b| {
            b.iter_batched(
                || gifts.batch(),
                |batch| black_box(engine.apply_batch(&batch, STAMP)),
                BatchSize::LargeInput,
            );
            // The log is the journal's feed; the service drains it every commit.
            engine.drain_log();
        });
    }
    group.finish();
}

/// Two threads apply `iters` batches each; returns the wall time for the 2 x iters batches.
fn two_threads(engine: &Engine, hot: bool, iters: u64, round: u64) -> Duration {
    let mut prepared: Vec<Vec<Vec<Event>>> = (0..2)
        .map(|t| {
            let mut g = Gifts::new(1000 + round * 2 + t, hot);
            (0..iters).map(|_| g.batch()).collect()
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for batches in prepared.iter_mut() {
            s.spawn(move || {
                for batch in batches.iter() {
                    black_box(engine.apply_batch(batch, STAMP));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    engine.drain_log();
    elapsed
}

fn bench_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    group.throughput(Throughput::Elements(2 * BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    let engine = funded_engine(EngineConfig::default());
    let mut round = 0;
    for (name, hot) in [("uniform", false), ("hot", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                round += 1;
                two_threads(&engine, hot, iters, round)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply, bench_two_threads);
criterion_main!(benches);
