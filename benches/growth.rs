//! How the engine's cost grows (issue #6, BENCHMARKS.md "How cost grows"), in-process:
//! - wallets 10k -> 10M, uniform and Zipf (s = 1.1) creators: gifts/s on one thread and
//!   resident bytes per wallet;
//! - creators 10 -> 1M (1M wallets, uniform): gifts/s on one thread;
//! - share of gifts to one hot creator 0 % -> 100 % (1M wallets, 10k creators): gifts/s on
//!   two threads.
//!
//! Every point is a fresh engine with the service's defaults (history 32 per user, the
//! log kept and drained outside the timing, as the committer does), funded with one
//! custom recharge per wallet, then three timed rounds of 300 batches of 1000 rose gifts
//! with fresh ids; the median round is reported. Tables go to stdout (markdown) and
//! `target/growth/*.tsv`; `giftload plot` draws them.
//!
//! Run: `cargo bench --bench growth` (about 3 minutes, ~6 GB at 10M wallets).
//! Under `cargo test` the same code runs once on small sizes (a smoke test).

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId, Recharge, Stamp,
    StreamId, UserId,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use rust_decimal::Decimal;

const BATCH: usize = 1000;
const ROUNDS: usize = 3;

/// The sizes of one run: the full sweep under `cargo bench`, a smoke run of the same
/// code under `cargo test` (which runs harness-less benches without `--bench`).
struct Plan {
    batches: usize,
    wallets: Vec<u64>,
    creators: Vec<u64>,
    shares: Vec<f64>,
    /// Wallets for the creator and hot-share sweeps.
    base_wallets: u64,
}

impl Plan {
    fn from_args() -> Plan {
        if std::env::args().any(|a| a == "--bench") {
            Plan {
                batches: 300,
                wallets: vec![10_000, 100_000, 1_000_000, 10_000_000],
                creators: vec![10, 100, 1_000, 10_000, 100_000, 1_000_000],
                shares: vec![0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
                base_wallets: 1_000_000,
            }
        } else {
            Plan {
                batches: 2,
                wallets: vec![1_000, 10_000],
                creators: vec![10, 1_000],
                shares: vec![0.0, 1.0],
                base_wallets: 10_000,
            }
        }
    }
}
const STAMP: Stamp = Stamp(1_794_700_800_000);
/// Users get ids above every creator id (no SELF_GIFT).
const USER0: u64 = 1 << 40;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Gives freed memory back to the OS between points, so each point's RSS is its own.
fn trim() {
    // SAFETY: malloc_trim only releases free memory of glibc's allocator.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc_malloc_trim(0);
    }
}

#[cfg(target_env = "gnu")]
unsafe extern "C" {
    #[link_name = "malloc_trim"]
    fn libc_malloc_trim(pad: usize) -> i32;
}

fn funded(wallets: u64) -> Engine {
    let engine = Engine::new(Economy::embedded(), EngineConfig::default()).unwrap();
    let mut batch = Vec::with_capacity(BATCH);
    for u in 0..wallets {
        batch.push(Event::Recharge(Recharge {
            id: EventId(u128::from(u) | 1 << 100),
            user: UserId(USER0 + u),
            coins: 2_500_000,
            price: Decimal::new(3_200_000, 2),
            currency: Currency::USD,
            package: None.into(),
            channel: Channel::Web,
            paid_ms: 0,
        }));
        if batch.len() == BATCH {
            engine.apply_batch(&batch, STAMP);
            engine.drain_log();
            batch.clear();
        }
    }
    engine.apply_batch(&batch, STAMP);
    engine.drain_log();
    engine
}

#[derive(Clone, Copy)]
enum Creators {
    Uniform(u64),
    Zipf(u64),
    /// `share` of the gifts to creator 0, the rest uniform over `n`.
    Hot {
        n: u64,
        share: f64,
    },
}

struct Gifts {
    rng: ChaCha8Rng,
    next_id: u128,
    wallets: u64,
    creators: Creators,
    zipf: Option<Zipf<f64>>,
}

impl Gifts {
    fn new(seed: u64, wallets: u64, creators: Creators) -> Gifts {
        let zipf = match creators {
            Creators::Zipf(n) => Some(Zipf::new(n as f64, 1.1).unwrap()),
            _ => None,
        };
        Gifts {
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_id: u128::from(seed) << 64,
            wallets,
            creators,
            zipf,
        }
    }

    fn batch(&mut self) -> Vec<Event> {
        (0..BATCH)
            .map(|_| {
                self.next_id += 1;
                let creator = match self.creators {
                    Creators::Uniform(n) => self.rng.random_range(0..n),
                    Creators::Zipf(_) => {
                        self.zipf.as_ref().unwrap().sample(&mut self.rng) as u64 - 1
                    }
                    Creators::Hot { n, share } => {
                        if self.rng.random_bool(share) {
                            0
                        } else {
                            self.rng.random_range(0..n)
                        }
                    }
                };
                Event::Gift(Gift {
                    id: EventId(self.next_id),
                    sender: UserId(USER0 + self.rng.random_range(0..self.wallets)),
                    creator: CreatorId(creator),
                    stream: StreamId(creator),
                    gift: GiftId(0),
                    count: 1,
                })
            })
            .collect()
    }
}

/// Median gifts/s over the rounds, applying on `threads` threads.
fn measure(
    engine: &Engine,
    wallets: u64,
    creators: Creators,
    threads: usize,
    batches: usize,
) -> f64 {
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let prepared: Vec<Vec<Vec<Event>>> = (0..threads)
            .map(|t| {
                let mut g = Gifts::new((round * threads + t) as u64 + 1, wallets, creators);
                (0..batches).map(|_| g.batch()).collect()
            })
            .collect();
        let started = Instant::now();
        std::thread::scope(|s| {
            for batches in &prepared {
                s.spawn(move || {
                    for batch in batches {
                        black_box(engine.apply_batch(batch, STAMP));
                    }
                });
            }
        });
        let elapsed = started.elapsed().as_secs_f64();
        engine.drain_log();
        rates.push((threads * batches * BATCH) as f64 / elapsed);
    }
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

struct Table {
    name: &'static str,
    header: String,
    rows: Vec<String>,
}

impl Table {
    fn new(name: &'static str, header: &[&str]) -> Table {
        Table {
            name,
            header: header.join("\t"),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: &[String]) {
        eprintln!("{}: {}", self.name, cells.join("  "));
        self.rows.push(cells.join("\t").replace(',', ""));
    }

    fn save(&self, dir: &std::path::Path) {
        let header: Vec<&str> = self.header.split('\t').collect();
        println!("\n### {}\n\n| {} |", self.name, header.join(" | "));
        println!("|{}", "---:|".repeat(header.len()));
        for row in &self.rows {
            println!("| {} |", row.replace('\t', " | "));
        }
        let _ = std::io::stdout().flush();
        let path = dir.join(format!("{}.tsv", self.name));
        let text = format!("{}\n{}\n", self.header, self.rows.join("\n"));
        std::fs::write(&path, text).unwrap();
    }
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    let plan = Plan::from_args();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(if plan.batches > 2 {
        "target/growth"
    } else {
        "target/growth-smoke"
    });
    std::fs::create_dir_all(&dir).unwrap();

    let mut t = Table::new("wallets", &["wallets", "uniform gifts/s", "zipf gifts/s"]);
    let mut memory = Table::new(
        "wallet-memory",
        &[
            "wallets",
            "bytes/wallet funded",
            "bytes/wallet after the uniform gifts",
        ],
    );
    for &wallets in &plan.wallets {
        let mut cells = vec![wallets.to_string()];
        let mut bytes = (0, 0);
        for creators in [Creators::Uniform(10_000), Creators::Zipf(10_000)] {
            trim();
            let before = rss_bytes();
            let engine = funded(wallets);
            let funded_rss = rss_bytes().saturating_sub(before);
            let rate = measure(&engine, wallets, creators, 1, plan.batches);
            if matches!(creators, Creators::Uniform(_)) {
                bytes = (funded_rss, rss_bytes().saturating_sub(before));
            }
            cells.push(thousands(rate));
            drop(engine);
        }
        t.row(&cells);
        memory.row(&[
            wallets.to_string(),
            format!("{:.0}", bytes.0 as f64 / wallets as f64),
            format!("{:.0}", bytes.1 as f64 / wallets as f64),
        ]);
    }
    t.save(&dir);
    memory.save(&dir);

    let mut t = Table::new("creators", &["creators", "gifts/s (1M wallets, uniform)"]);
    for &creators in &plan.creators {
        trim();
        let engine = funded(plan.base_wallets);
        let rate = measure(
            &engine,
            plan.base_wallets,
            Creators::Uniform(creators),
            1,
            plan.batches,
        );
        t.row(&[creators.to_string(), thousands(rate)]);
    }
    t.save(&dir);

    let mut t = Table::new(
        "hot-share",
        &[
            "hot share %",
            "gifts/s (2 threads, 1M wallets, 10k creators)",
        ],
    );
    for &share in &plan.shares {
        trim();
        let engine = funded(plan.base_wallets);
        let hot = Creators::Hot { n: 10_000, share };
        let rate = measure(&engine, plan.base_wallets, hot, 2, plan.batches);
        t.row(&[format!("{:.0}", share * 100.0), thousands(rate)]);
    }
    t.save(&dir);
    println!("\ntables: {}", dir.display());
}
