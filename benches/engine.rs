//! Engine apply throughput (SPEC §4), in-process:
//! - `apply/uniform`: one thread, 1M funded wallets, uniform senders, 10k creators,
//!   batches of 1000 gifts;
//! - `apply/uniform_windows`: as `apply/uniform`, windowed leaderboards on;
//! - `apply/uniform_battles`: as `apply/uniform`, every stream in a live PK battle
//!   (streams 2i and 2i+1 paired: 5,000 battles, `engine.battles_max` raised to them)
//!   covering every stamp of the bench, so every gift counts in one;
//! - `apply/uniform_drained`: as `apply/uniform`, the log drained after every batch (as
//!   the service's committer does);
//! - `floor/{pairs,lean,full}`: the design's floor — only the map operations a uniform
//!   gift cannot avoid in this layout, on plain maps of the engine's sizes;
//! - `two_threads/{uniform,hot}`: two threads, the same, vs every gift to one creator;
//! - `replay/uniform`: a restart's replay of 100k uniform gifts into a 1M-wallet state.
//!
//! Run: `cargo bench --bench engine` (`GIFTSTREAM_BENCH_SHARDS=<n>` for another
//! `engine.shards` than the default). Figures go to BENCHMARKS.md.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rustc_hash::FxHashMap;

use giftstream::economy::Economy;
use giftstream::engine::{
    BATTLE_LENGTH_MS_MAX, Battle, BattleId, Effect, Engine, EngineConfig, Event, Status, StreamId,
};

#[path = "common/uniform.rs"]
mod uniform;
use uniform::*;

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, config) in [
        ("uniform", base_config()),
        (
            "uniform_lean",
            EngineConfig {
                history_per_user: 0,
                keep_log: false,
                ..base_config()
            },
        ),
        // `apply/uniform` with the windowed leaderboards on (#32 feature 1, default
        // retention): their per-gift cost, side by side.
        ("uniform_windows", {
            let mut config = base_config();
            config.windows.enabled = true;
            config
        }),
        // `apply/uniform` with every stream in a live battle (#32 feature 2): their
        // per-gift cost, side by side.
        ("uniform_battles", {
            let mut config = base_config();
            config.battles_max = BATTLES as usize;
            config
        }),
    ] {
        let engine = funded_engine(config);
        if name == "uniform_battles" {
            open_battles(&engine);
        }
        let mut gifts = Gifts::new(1, false);
        group.bench_function(name, |b| {
            b.iter_batched(
                || gifts.batch(),
                |batch| black_box(engine.apply_batch(&batch, next_stamp())),
                BatchSize::LargeInput,
            );
            // The log is the journal's feed; the service drains it every commit.
            engine.drain_log();
        });
        if name == "uniform_battles" {
            let (gifts, coins) = battle_totals(&engine);
            eprintln!(
                "apply/uniform_battles: after the run, {gifts} gifts ({coins} coins) counted"
            );
        }
    }
    // As the service runs: the committer drains the log after every group commit.
    let engine = funded_engine(base_config());
    let mut gifts = Gifts::new(2, false);
    group.bench_function("uniform_drained", |b| {
        b.iter_batched(
            || gifts.batch(),
            |batch| {
                let outcomes = engine.apply_batch(&batch, next_stamp());
                black_box(engine.drain_log());
                outcomes
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// `apply/uniform_battles`' battles: one per pair of streams (2i, 2i+1).
const BATTLES: u64 = CREATORS / 2;

/// Records [`BATTLES`] battles, streams 2i against 2i+1, live from now for the longest
/// window (24 h: the bench's stamps move ~10 ms a batch), and checks that a batch of
/// uniform gifts (ids of their own) counts in them, every gift once.
fn open_battles(engine: &Engine) {
    let start = next_stamp();
    let end = start.0 + BATTLE_LENGTH_MS_MAX;
    let battles: Vec<Event> = (0..BATTLES)
        .map(|i| {
            let streams = [StreamId(2 * i), StreamId(2 * i + 1)];
            Event::Battle(Battle::new(BattleId(i + 1), &streams, start.0, end).unwrap())
        })
        .collect();
    for chunk in battles.chunks(BATCH) {
        for o in engine.apply_batch(chunk, start) {
            assert_eq!(o.status, Status::Accepted(Effect::Stored), "{o:?}");
        }
    }
    assert_eq!(engine.battles_held(), BATTLES as usize);
    let batch = Gifts::new(99, false).batch();
    let outcomes = engine.apply_batch(&batch, next_stamp());
    assert!(outcomes.iter().all(|o| o.code().is_none()), "{outcomes:?}");
    let (gifts, coins) = battle_totals(engine);
    assert_eq!(
        (gifts, coins),
        (BATCH as u64, BATCH as u128),
        "every gift counts in its stream's battle"
    );
    eprintln!(
        "apply/uniform_battles: {} battles held (streams 2i vs 2i+1 of {CREATORS}), [{}, {end}) ms; a check batch of {BATCH} gifts counted {gifts} gifts, {coins} coins",
        engine.battles_held(),
        start.0
    );
}

/// The gifts and coins counted in [`open_battles`]' battles, every side summed (read as
/// `GET /v1/battles/{id}` reads them).
fn battle_totals(engine: &Engine) -> (u64, u128) {
    (1..=BATTLES)
        .map(|id| engine.battle(BattleId(id), 0).expect("held"))
        .flat_map(|v| v.sides)
        .fold((0, 0), |(g, c), s| (g + s.gifts, c + s.coins))
}

/// Gifts replayed per `replay/uniform` iteration: a journal tail of 100 batches.
const REPLAY_BATCHES: usize = 100;

/// A restart's replay: a 1M-wallet state (as loaded from a snapshot) replays a journal
/// tail of uniform gifts, as `giftstream serve` does after the snapshot (two threads
/// for a long run). Each iteration starts from a fresh copy of the state (not timed).
fn bench_replay(c: &mut Criterion) {
    let config = base_config();
    let engine = funded_engine(config.clone());
    let (state, _) = engine.snapshot();
    let mut gifts = Gifts::new(3, false);
    for _ in 0..REPLAY_BATCHES {
        engine.apply_batch(&gifts.batch(), STAMP);
    }
    let tail = engine.drain_log();
    drop(engine);
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(tail.len() as u64));
    group.sample_size(10);
    group.bench_function("uniform", |b| {
        b.iter_batched(
            || Engine::from_state(Economy::embedded(), config.clone(), state.clone()).unwrap(),
            |engine| {
                engine.replay(&tail).expect("the tail replays as recorded");
                engine
            },
            BatchSize::PerIteration,
        );
    });
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
                    black_box(engine.apply_batch(batch, next_stamp()));
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
    let engine = funded_engine(base_config());
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

/// The design's floor: only the memory operations a uniform gift cannot avoid in this
/// engine's layout, on plain maps of the engine's sizes and entry widths, with no rules,
/// locks, routing, top-K lists or aggregates beyond them. Run beside `apply/*`, it says
/// how far the engine is from what its own data structures allow (BENCHMARKS.md "The
/// design's floor").
struct Floor {
    /// 1M funded wallets (a `Wallet` is 32 bytes).
    wallets: FxHashMap<u64, [u64; 4]>,
    /// The idempotency window kept full at its default 1M entries: an id and a 48-byte
    /// outcome, and the insertion order for eviction.
    window: FxHashMap<u128, [u64; 6]>,
    order: VecDeque<(u128, u64)>,
    /// Coins per (creator, sender) and per (stream, sender): they grow with every new pair.
    creator_pairs: FxHashMap<(u64, u64), u64>,
    stream_pairs: FxHashMap<(u64, u64), u64>,
    /// 32 history lines of 48 bytes per user, and the journal feed.
    histories: FxHashMap<u64, VecDeque<[u64; 6]>>,
    log: Vec<[u64; LOG_WORDS]>,
}

const LOG_WORDS: usize = std::mem::size_of::<giftstream::engine::LogEntry>() / 8;
const WINDOW: usize = 1 << 20;

/// What a floor gift does beyond the pair maps.
#[derive(Clone, Copy)]
enum FloorLevel {
    /// The two pair-map updates only.
    Pairs,
    /// Window, wallet and the pair maps: `apply/uniform_lean`'s work.
    Lean,
    /// Lean plus a history line and a log entry: `apply/uniform`'s work.
    Full,
}

impl Floor {
    fn new() -> Self {
        let mut floor = Floor {
            wallets: FxHashMap::default(),
            window: FxHashMap::with_capacity_and_hasher(WINDOW, Default::default()),
            order: VecDeque::with_capacity(WINDOW),
            creator_pairs: FxHashMap::default(),
            stream_pairs: FxHashMap::default(),
            histories: FxHashMap::default(),
            log: Vec::new(),
        };
        for u in 0..WALLETS {
            let user = CREATORS + u;
            floor.wallets.insert(user, [2_500_000, 0, 0, 0]);
            let id = u128::from(u) | 1 << 100;
            floor.window.insert(id, [u; 6]);
            floor.order.push_back((id, u));
            floor.histories.entry(user).or_default().push_back([u; 6]);
        }
        floor
    }

    fn gift(&mut self, level: FloorLevel, id: u128, sender: u64, creator: u64) {
        let cost = 1;
        if !matches!(level, FloorLevel::Pairs) {
            if self.window.contains_key(&id) {
                return;
            }
            let wallet = self.wallets.get_mut(&sender).expect("funded");
            wallet[0] -= cost;
            self.window.insert(id, [wallet[0]; 6]);
            self.order.push_back((id, sender));
            if let Some((oldest, _)) = self.order.pop_front() {
                self.window.remove(&oldest);
            }
        }
        *self.creator_pairs.entry((creator, sender)).or_default() += cost;
        *self.stream_pairs.entry((creator, sender)).or_default() += cost;
        if matches!(level, FloorLevel::Full) {
            let history = self.histories.entry(sender).or_default();
            if history.len() == 32 {
                history.pop_front();
            }
            history.push_back([sender; 6]);
            self.log.push([sender; LOG_WORDS]);
        }
    }
}

fn bench_floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(10));
    for (name, level) in [
        ("pairs", FloorLevel::Pairs),
        ("lean", FloorLevel::Lean),
        ("full", FloorLevel::Full),
    ] {
        let mut floor = Floor::new();
        let mut gifts = Gifts::new(1, false);
        group.bench_function(name, |b| {
            b.iter_batched(
                || gifts.batch(),
                |batch| {
                    for event in &batch {
                        if let Event::Gift(g) = event {
                            floor.gift(level, g.id.0, g.sender.0, g.creator.0);
                        }
                    }
                },
                BatchSize::LargeInput,
            );
            floor.log.clear();
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_apply,
    bench_floor,
    bench_two_threads,
    bench_replay
);
criterion_main!(benches);
