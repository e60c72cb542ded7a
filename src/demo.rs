//! `giftstream demo`: the engine in-process on the embedded economy, a seeded synthetic
//! burst applied from every core, then throughput, outcomes, leaderboards and the audit.
//!
//! The burst is reproducible: each worker owns the senders `u % workers == worker` and
//! generates its events from `seed + worker`, so per-sender order (the only order that
//! decides outcomes) does not depend on thread timing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::economy::{Currency, Economy, Region};
use crate::engine::{
    AccountSettings, AuditReport, Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift,
    GiftId, PackageId, Recharge, Stamp, StreamGoal, StreamId, UserId,
};

/// The shape of the burst. Every count is bounded by [`DemoConfig::validate`].
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub users: u64,
    pub creators: u64,
    pub gifts: u64,
    /// Share of gifts that go to the one hot stream (of creator 1).
    pub hot_share: f64,
    pub batch_events: usize,
    pub workers: usize,
    pub seed: u64,
    pub progress: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            users: 100_000,
            creators: 1_000,
            gifts: 5_000_000,
            hot_share: 0.3,
            batch_events: 1_000,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            seed: 42,
            progress: true,
        }
    }
}

/// Bounds that keep a demo run to seconds and memory to a few GiB.
pub const DEMO_USERS_MAX: u64 = 10_000_000;
pub const DEMO_GIFTS_MAX: u64 = 100_000_000;

impl DemoConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=DEMO_USERS_MAX).contains(&self.users),
            "--users must be in 1..={DEMO_USERS_MAX}"
        );
        anyhow::ensure!(self.creators >= 1, "--creators must be at least 1");
        anyhow::ensure!(
            self.gifts <= DEMO_GIFTS_MAX,
            "--gifts must be at most {DEMO_GIFTS_MAX}"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.hot_share),
            "--hot-share must be in [0, 1]"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.batch_events),
            "--batch must be in 1..=100000"
        );
        anyhow::ensure!(
            (1..=256).contains(&self.workers),
            "--workers must be in 1..=256"
        );
        Ok(())
    }
}

/// What a demo run measured.
#[derive(Debug)]
pub struct DemoReport {
    pub setup_events: u64,
    pub gift_events: u64,
    pub gift_elapsed: Duration,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub duplicates: u64,
    pub hot_stream: StreamId,
    pub hot_stream_top: Vec<(UserId, u128)>,
    pub top_creators: Vec<(CreatorId, u128)>,
    pub audit: AuditReport,
    pub creator_share: Decimal,
}

impl DemoReport {
    pub fn gifts_per_second(&self) -> f64 {
        self.gift_events as f64 / self.gift_elapsed.as_secs_f64().max(1e-9)
    }
}

/// Gift mix: (catalog id, weight). Cheap gifts dominate, as in real streams.
const GIFT_MIX: [(&str, u32); 9] = [
    ("rose", 6000),
    ("panda", 1800),
    ("finger_heart", 1200),
    ("rainbow_puke", 700),
    ("concert", 250),
    ("drama_queen", 40),
    ("planet", 7),
    ("lion", 2),
    ("universe", 1),
];

/// Stream of creator `c` (one live stream each).
fn stream_of(c: u64) -> StreamId {
    StreamId(1_000_000 + c)
}

/// Creators are users too: ids `1..=creators`; viewers follow.
fn viewer(i: u64, creators: u64) -> UserId {
    UserId(creators + 1 + i)
}

struct Generator<'a> {
    rng: ChaCha8Rng,
    economy: &'a Economy,
    config: &'a DemoConfig,
    worker: u64,
    next_id: u64,
    gift_table: Vec<(GiftId, u32)>,
    weight_total: u32,
}

impl<'a> Generator<'a> {
    fn new(economy: &'a Economy, config: &'a DemoConfig, worker: u64) -> Self {
        let gift_table: Vec<(GiftId, u32)> = GIFT_MIX
            .iter()
            .map(|(id, w)| {
                (
                    GiftId(economy.gift_index(id).expect("demo gift in catalog")),
                    *w,
                )
            })
            .collect();
        Generator {
            rng: ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(worker)),
            economy,
            config,
            worker,
            next_id: 0,
            weight_total: gift_table.iter().map(|g| g.1).sum(),
            gift_table,
        }
    }

    fn event_id(&mut self) -> EventId {
        self.next_id += 1;
        EventId((u128::from(self.worker + 1) << 64) | u128::from(self.next_id))
    }

    /// A viewer owned by this worker.
    fn own_viewer(&mut self) -> UserId {
        let workers = self.config.workers as u64;
        let owned = (self.config.users + workers - 1 - self.worker) / workers;
        let k = self.rng.random_range(0..owned.max(1));
        viewer(self.worker + k * workers, self.config.creators)
    }

    /// Account settings and recharges for this worker's viewers.
    fn setup(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let packages = &self.economy.packages;
        let workers = self.config.workers as u64;
        let mut i = self.worker;
        while i < self.config.users {
            let user = viewer(i, self.config.creators);
            i += workers;
            let roll = self.rng.random_range(0..1000u32);
            if roll < 30 {
                // A few users are minors, some in restricted regions, some on a budget.
                let id = self.event_id();
                events.push(Event::Account(AccountSettings {
                    id,
                    user,
                    region: Some(if roll < 10 {
                        region("KP")
                    } else {
                        region("US")
                    }),
                    adult: roll >= 5,
                    monthly_budget_coins: (roll >= 10).then_some(200).into(),
                    daily_budget_coins: (roll >= 20).then_some(60).into(),
                    weekly_budget_coins: None.into(),
                }));
            }
            for _ in 0..self.rng.random_range(1..=3u32) {
                let p = self.rng.random_range(0..packages.len());
                let id = self.event_id();
                events.push(Event::Recharge(Recharge {
                    id,
                    user,
                    coins: packages[p].coins,
                    price: packages[p].prices[&Currency::USD],
                    currency: Currency::USD,
                    package: Some(PackageId(p as u32)).into(),
                    channel: Channel::App,
                    paid_ms: 0,
                }));
            }
        }
        events
    }

    fn gift(&mut self) -> Event {
        let sender = self.own_viewer();
        let hot = self.rng.random_bool(self.config.hot_share);
        let creator = if hot {
            1
        } else {
            self.rng.random_range(1..=self.config.creators)
        };
        let mut pick = self.rng.random_range(0..self.weight_total);
        let mut gift = self.gift_table[0].0;
        for &(id, w) in &self.gift_table {
            if pick < w {
                gift = id;
                break;
            }
            pick -= w;
        }
        let count = match self.rng.random_range(0..100u32) {
            0..=79 => 1,
            80..=94 => 5,
            95..=98 => 10,
            _ => 99,
        };
        // A sprinkle of bad input: the engine records it, never fails on it.
        let (gift, count) = match self.rng.random_range(0..10_000u32) {
            0 => (GiftId::UNKNOWN, count),
            1 => (gift, 0),
            _ => (gift, count),
        };
        let id = self.event_id();
        Event::Gift(Gift {
            id,
            sender,
            creator: CreatorId(creator),
            stream: stream_of(creator),
            gift,
            count,
        })
    }
}

fn region(s: &str) -> Region {
    s.parse().expect("static region code")
}

/// Runs the demo. `stamp` is the time every batch is stamped with (the CLI passes now).
pub fn run(config: &DemoConfig, stamp: Stamp) -> anyhow::Result<DemoReport> {
    config.validate()?;
    let economy = Economy::embedded();
    // The demo's clock runs at 100k events/s from `stamp` (each batch a step on), with a
    // 1 s retry horizon: the id index holds the last ~11 s of ids (the horizon and the
    // 10 s kept for clocks ahead, ~1.1M), whatever the run's length.
    let engine = Engine::new(
        economy.clone(),
        EngineConfig {
            keep_log: false,
            history_per_user: 8,
            idempotency_horizon_ms: 1_000,
            idempotency_entries_max: 4 << 20,
            ..EngineConfig::default()
        },
    )?;
    let clock = AtomicU64::new(stamp.0);
    let step_ms = (config.batch_events as u64 / 100).max(1);
    let next_stamp = || Stamp(clock.fetch_add(step_ms, Ordering::Relaxed));
    let workers = config.workers as u64;

    // Goals for the hot stream and a few others, then every worker funds its viewers.
    let goals: Vec<Event> = (1..=config.creators.min(10))
        .map(|c| {
            Event::StreamGoal(StreamGoal {
                id: EventId(u128::from(c)),
                stream: stream_of(c),
                creator: CreatorId(c),
                coins_target: 1_000_000,
            })
        })
        .collect();
    engine.apply_batch(&goals, next_stamp());
    let setup_events = AtomicU64::new(goals.len() as u64);
    std::thread::scope(|s| {
        for w in 0..workers {
            let (engine, economy, setup_events) = (&engine, &economy, &setup_events);
            s.spawn(move || {
                let events = Generator::new(economy, config, w).setup();
                for batch in events.chunks(config.batch_events) {
                    engine.apply_batch(batch, next_stamp());
                }
                setup_events.fetch_add(events.len() as u64, Ordering::Relaxed);
            });
        }
    });

    let progress = if config.progress {
        let bar = ProgressBar::new(config.gifts);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} gifts [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let started = Instant::now();
    let per_worker: Vec<(BTreeMap<&'static str, u64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (engine, economy, progress) = (&engine, &economy, &progress);
                s.spawn(move || {
                    let mut generator = Generator::new(economy, config, w);
                    // Skip the setup draws so gift streams differ from setup streams.
                    generator.rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5EED ^ w);
                    generator.next_id = 1 << 40;
                    let mine = config.gifts / workers + u64::from(w < config.gifts % workers);
                    let mut counts = BTreeMap::new();
                    let mut duplicates = 0u64;
                    let mut batch = Vec::with_capacity(config.batch_events + 1);
                    let mut done = 0u64;
                    let mut batches = 0u64;
                    while done < mine {
                        batches += 1;
                        batch.clear();
                        let n = (config.batch_events as u64).min(mine - done);
                        for _ in 0..n {
                            batch.push(generator.gift());
                        }
                        // A client retry: the first event of every 100th batch again.
                        if batches.is_multiple_of(100) {
                            batch.push(batch[0]);
                        }
                        for o in engine.apply_batch(&batch, next_stamp()) {
                            if o.duplicate {
                                duplicates += 1;
                            } else {
                                *counts.entry(o.label()).or_insert(0) += 1;
                            }
                        }
                        done += n;
                        progress.inc(n);
                    }
                    (counts, duplicates)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("demo worker"))
            .collect()
    });
    let gift_elapsed = started.elapsed();
    progress.finish_and_clear();

    let mut outcomes = BTreeMap::new();
    let mut duplicates = 0;
    for (counts, dups) in per_worker {
        for (k, v) in counts {
            *outcomes.entry(k).or_insert(0) += v;
        }
        duplicates += dups;
    }
    let hot_stream = stream_of(1);
    Ok(DemoReport {
        setup_events: setup_events.into_inner(),
        gift_events: config.gifts,
        gift_elapsed,
        outcomes,
        duplicates,
        hot_stream,
        hot_stream_top: engine.stream_top_gifters(hot_stream, 10),
        top_creators: engine.top_creators(10),
        audit: engine.audit(),
        creator_share: economy.creator_share,
    })
}

/// The report as the terminal shows it.
pub fn render(report: &DemoReport, config: &DemoConfig) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "giftstream demo: {} users, {} creators, {} gifts ({:.0}% to one hot stream), {} workers",
        config.users,
        config.creators,
        config.gifts,
        config.hot_share * 100.0,
        config.workers
    );
    let _ = writeln!(
        out,
        "setup: {} account, goal and recharge events",
        report.setup_events
    );
    let _ = writeln!(
        out,
        "applied {} gifts in {:.2} s: {:.0} gifts/s",
        report.gift_events,
        report.gift_elapsed.as_secs_f64(),
        report.gifts_per_second()
    );
    let _ = writeln!(out, "\noutcomes:");
    for (code, n) in &report.outcomes {
        let _ = writeln!(out, "  {code:<22} {n:>10}");
    }
    let _ = writeln!(
        out,
        "  {:<22} {:>10}",
        "(duplicates answered)", report.duplicates
    );
    let _ = writeln!(
        out,
        "\ntop 10 gifters of the hottest stream {}:",
        report.hot_stream
    );
    for (i, (user, coins)) in report.hot_stream_top.iter().enumerate() {
        let _ = writeln!(out, "  {:>2}. user {:<10} {:>10} coins", i + 1, user, coins);
    }
    let _ = writeln!(out, "\ntop 10 creators by diamonds:");
    for (i, (creator, diamonds)) in report.top_creators.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. creator {:<7} {:>10} diamonds",
            i + 1,
            creator,
            diamonds
        );
    }
    let t = &report.audit.totals;
    let _ = writeln!(
        out,
        "\naudit: {}\n  coins recharged {} = in wallets {} + spent {}\n  coins received by creators {}, diamonds credited {} (share {})",
        if report.audit.is_clean() {
            "clean"
        } else {
            "VIOLATIONS"
        },
        t.coins_recharged,
        t.coins_in_wallets,
        t.coins_spent,
        t.coins_received_by_creators,
        t.diamonds_credited,
        report.creator_share,
    );
    for v in &report.audit.violations {
        let _ = writeln!(out, "  violation: {v}");
    }
    out
}
