//! `giftload sweep …`: end-to-end sweeps (BENCHMARKS.md "How cost grows" and the A/B
//! runs) — giftload -> a fresh `giftstream serve` -> a private redis-server (AOF
//! appendfsync everysec, read model on), the Redis emptied before every point, so that no
//! point inherits another's journal. Tables go to `--out` (target/sweep), charts to
//! `--results` (load/results).

use std::path::PathBuf;
use std::time::Instant;

use crate::experiment::lab_args::LabArgs;
use crate::experiment::{Lab, Loop, Table, chart, parse_setting, rate_and_latency, spec_of};
use crate::harness::{Redis, RedisOptions};
use crate::report::LogAxes;

#[derive(clap::Subcommand, Debug)]
pub enum Sweep {
    /// Open loop, uniform, at each offered rate: latency percentiles (growth-knee.png).
    Knee {
        #[command(flatten)]
        lab: LabArgs,
        /// Offered rates, events/s.
        #[arg(long, num_args = 1.., default_values_t = [25000.0, 50000.0, 100000.0, 150000.0, 200000.0, 250000.0, 300000.0, 350000.0, 400000.0])]
        rates: Vec<f64>,
    },
    /// Closed loop, uniform, at each batch size: events/s (growth-batch.png).
    Batch {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long, num_args = 1.., default_values_t = [10, 50, 100, 500, 1000, 5000])]
        batches: Vec<usize>,
    },
    /// Closed loop, uniform, at each commit.interval_ms: events/s and p99
    /// (growth-interval.png).
    Interval {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long, num_args = 1.., default_values_t = [1, 2, 5, 10, 20, 50])]
        intervals_ms: Vec<u64>,
    },
    /// Config settings side by side, alternated per round: latency, and the events
    /// projected into the read model and its lag at the end of each run.
    Settings(Box<SettingsArgs>),
    /// Two server binaries side by side (e.g. before/after a change), alternated per
    /// round: closed loop per scenario; `open` = uniform open loop at --rate.
    Binab(Box<BinabArgs>),
    /// The headline: `giftload compare` (closed loop) per scenario.
    Headline {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long, num_args = 1.., default_values_t = ["uniform".to_owned(), "zipf".to_owned(), "hot-creator".to_owned()])]
        scenarios: Vec<String>,
        /// The Redis-Lua baseline on the Redis giftstream has just loaded, with the server
        /// still running (how the figures before 2026-12 were taken) instead of alone on
        /// a fresh redis-server.
        #[arg(long)]
        shared_redis: bool,
    },
    /// CPU per event of giftload, giftstream and Redis, closed loop per scenario.
    Cpu {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long, num_args = 1.., default_values_t = ["uniform".to_owned(), "zipf".to_owned(), "hot-creator".to_owned()])]
        scenarios: Vec<String>,
    },
    /// What snapshots cost the ack latency (1M wallets, read model off, open loop).
    Snapshot(Box<super::snapshot::SnapshotArgs>),
    /// What Redis's own AOF rewrites cost: its default policy, then no rewrites.
    Aof {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long, default_value = "uniform")]
        scenario: String,
        /// Open loop at this rate (default: closed loop); also draws aof-p99.png.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// The config setting of these runs (default: the read model off).
        #[arg(long, default_value = "read_model.enabled=false")]
        setting: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct SettingsArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// A setting: config edits separated by `;` (e.g. read_model.ops_per_write_max=256).
    /// Repeatable.
    #[arg(long = "setting", required = true)]
    settings: Vec<String>,
    /// Open loop at these rates (default: closed loop).
    #[arg(long, num_args = 1..)]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, default_value = "uniform")]
    scenario: String,
    /// The table's name (NAME.tsv).
    #[arg(long, default_value = "settings")]
    name: String,
}

#[derive(clap::Args, Debug)]
pub struct BinabArgs {
    #[command(flatten)]
    lab: LabArgs,
    #[arg(long)]
    bin_a: PathBuf,
    #[arg(long)]
    bin_b: PathBuf,
    /// Config setting for A only (`;`-separated edits; e.g. `server.x=` to delete a key
    /// an older binary does not know).
    #[arg(long, default_value = "")]
    a_setting: String,
    #[arg(long, default_value = "")]
    b_setting: String,
    #[arg(long, num_args = 1.., default_values_t = ["uniform".to_owned(), "zipf".to_owned(), "hot-creator".to_owned(), "open".to_owned()])]
    scenarios: Vec<String>,
    /// The open loop's rate (the `open` scenario).
    #[arg(long, default_value_t = 150000.0)]
    rate: f64,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// Runs one sweep.
pub fn run(sweep: Sweep) -> anyhow::Result<()> {
    match sweep {
        Sweep::Knee { lab, rates } => knee(&lab.lab(10.0)?, &rates),
        Sweep::Batch { lab, batches } => batch(&lab.lab(10.0)?, &batches),
        Sweep::Interval { lab, intervals_ms } => interval(&lab.lab(10.0)?, &intervals_ms),
        Sweep::Settings(a) => settings(&a.lab.lab(10.0)?, &a),
        Sweep::Binab(a) => binab(&a.lab.lab(10.0)?, &a),
        Sweep::Headline {
            lab,
            scenarios,
            shared_redis,
        } => super::compare::headline(&lab.lab(10.0)?, &scenarios, shared_redis),
        Sweep::Cpu { lab, scenarios } => super::cpu::cpu(&lab.lab(10.0)?, &scenarios),
        Sweep::Snapshot(a) => super::snapshot::snapshot(&a.lab.lab(30.0)?, &a),
        Sweep::Aof {
            lab,
            scenario,
            rate,
            rounds,
            setting,
        } => super::snapshot::aof(&lab.lab(10.0)?, &scenario, rate, rounds, &setting),
    }
}

impl Lab {
    /// The sweep's Redis: AOF everysec, the lab's arguments.
    pub fn redis(&self, extra: &[&str]) -> anyhow::Result<Redis> {
        let mut args = self.redis_args.clone();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Redis::start(&RedisOptions {
            args,
            ..RedisOptions::default()
        })
    }

    /// One point: a fresh server (commit interval `interval_ms`) on `redis`, one run of
    /// `scenario` shaped as `lp`, the server stopped.
    fn point(
        &self,
        redis: &Redis,
        interval_ms: u64,
        scenario: &str,
        lp: Loop,
        batch: Option<usize>,
    ) -> anyhow::Result<crate::report::Summary> {
        let mut s = self.scenario(scenario, lp, self.seconds)?;
        if let Some(b) = batch {
            s.load.batch = b;
        }
        let serve = self.serve(redis, None, self.server_config(interval_ms, &[])?, "warn")?;
        self.load(&s, &spec_of(&serve))
    }
}

fn knee(lab: &Lab, rates: &[f64]) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let header = [
        "offered events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "achieved events/s",
    ];
    let mut t = Table::new("knee-all", &header);
    let bar = lab.bar("knee", rates.len());
    for &rate in rates {
        bar.set_message(format!("{rate} events/s"));
        let s = lab.point(&redis, 1, "uniform", Loop::Open(rate), None)?;
        let c = rate_and_latency(&s);
        lab.say(
            &bar,
            format!(
                "knee: offered {rate} achieved {} p50 {} p99 {} p99.9 {}",
                c[0], c[1], c[2], c[3]
            ),
        );
        t.row(vec![
            format!("{rate}"),
            c[1].clone(),
            c[2].clone(),
            c[3].clone(),
            c[0].clone(),
        ]);
        t.save(&lab.out)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let text = t.save_columns(&lab.out, "knee", &[0, 1, 2, 3])?;
    t.save_columns(&lab.out, "knee-rate", &[0, 4])?;
    chart(
        &text,
        &lab.results.join("growth-knee.png"),
        "uniform, open loop: ack latency against offered load",
        "ms (corrected, log10)",
        LogAxes { x: false, y: true },
    )
}

fn batch(lab: &Lab, batches: &[usize]) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let mut t = Table::new("batch", &["events per batch", "events/s", "p99 ms"]);
    let bar = lab.bar("batch", batches.len());
    for &b in batches {
        bar.set_message(format!("batch {b}"));
        let s = lab.point(&redis, 1, "uniform", Loop::Closed, Some(b))?;
        let c = rate_and_latency(&s);
        lab.say(&bar, format!("batch: {b} achieved {} p99 {}", c[0], c[2]));
        t.row(vec![b.to_string(), c[0].clone(), c[2].clone()]);
        t.save(&lab.out)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let text = t.save_columns(&lab.out, "batch-rate", &[0, 1])?;
    chart(
        &text,
        &lab.results.join("growth-batch.png"),
        "uniform, closed loop (4 x 16 in flight): throughput against batch size",
        "events/s",
        LogAxes { x: true, y: false },
    )
}

fn interval(lab: &Lab, intervals_ms: &[u64]) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let mut t = Table::new("interval", &["commit interval ms", "events/s", "p99 ms"]);
    let bar = lab.bar("interval", intervals_ms.len());
    for &i in intervals_ms {
        bar.set_message(format!("{i} ms"));
        let s = lab.point(&redis, i, "uniform", Loop::Closed, None)?;
        let c = rate_and_latency(&s);
        lab.say(
            &bar,
            format!("interval: {i} ms achieved {} p99 {}", c[0], c[2]),
        );
        t.row(vec![i.to_string(), c[0].clone(), c[2].clone()]);
        t.save(&lab.out)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let text = t.save_columns(&lab.out, "interval-rate", &[0, 1])?;
    chart(
        &text,
        &lab.results.join("growth-interval.png"),
        "uniform, closed loop: throughput against commit interval",
        "events/s",
        LogAxes { x: true, y: false },
    )
}

/// The read model at the end of a run: events projected per second of the run (from
/// the server's ready to the load's end), and its lag, seconds.
fn read_model(serve: &crate::harness::Serve, since: Instant) -> (f64, f64) {
    let m = serve.metrics();
    let projected = m.sum("giftstream_read_model_events_total", "");
    let lag = m.sum("giftstream_read_model_lag_seconds", "");
    (projected / since.elapsed().as_secs_f64(), lag)
}

fn settings(lab: &Lab, a: &SettingsArgs) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let loops: Vec<Loop> = if a.rates.is_empty() {
        vec![Loop::Closed]
    } else {
        a.rates.iter().map(|&r| Loop::Open(r)).collect()
    };
    let header = [
        "round",
        "setting",
        "offered events/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "projected events/s",
        "read model lag s",
    ];
    let mut t = Table::new(&a.name, &header);
    let bar = lab.bar("settings", a.rounds * a.settings.len() * loops.len());
    for round in 1..=a.rounds {
        for setting in &a.settings {
            for &lp in &loops {
                bar.set_message(format!("round {round}: {setting}"));
                let config = lab.server_config(1, &parse_setting(setting)?)?;
                let serve = lab.serve(&redis, None, config, "warn")?;
                let t0 = Instant::now();
                let s = lab.load(
                    &lab.scenario(&a.scenario, lp, lab.seconds)?,
                    &spec_of(&serve),
                )?;
                let (per_s, lag) = read_model(&serve, t0);
                drop(serve);
                let offered = match lp {
                    Loop::Open(r) => format!("{r}"),
                    Loop::Closed => "closed".to_owned(),
                };
                let c = rate_and_latency(&s);
                lab.say(&bar, format!(
                    "settings: round {round} {setting} at {offered}: {} events/s, p50 {} p99 {} p99.9 {}, projected {per_s:.0} events/s, read model lag at the end {lag} s",
                    c[0], c[1], c[2], c[3]
                ));
                let mut row = vec![round.to_string(), setting.clone(), offered];
                row.extend(c);
                row.extend([format!("{per_s:.0}"), format!("{lag}")]);
                t.row(row);
                t.save(&lab.out)?;
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn binab(lab: &Lab, a: &BinabArgs) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let header = [
        "round",
        "binary",
        "scenario",
        "mode",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "projected share",
        "lag s",
    ];
    let mut t = Table::new("binab", &header);
    let bar = lab.bar("binab", a.rounds * a.scenarios.len() * 2);
    for round in 1..=a.rounds {
        for scenario in &a.scenarios {
            for (bin, setting) in [(&a.bin_a, &a.a_setting), (&a.bin_b, &a.b_setting)] {
                bar.set_message(format!("round {round}: {scenario} {}", bin.display()));
                let (name, lp) = match scenario.as_str() {
                    "open" => ("uniform", Loop::Open(a.rate)),
                    s => (s, Loop::Closed),
                };
                let config = lab.server_config(1, &parse_setting(setting)?)?;
                let serve = lab.serve(&redis, Some(bin), config, "warn")?;
                let s = lab.load(&lab.scenario(name, lp, lab.seconds)?, &spec_of(&serve))?;
                let m = serve.metrics();
                drop(serve);
                let projected = m.sum("giftstream_read_model_events_total", "");
                let lag = m.sum("giftstream_read_model_lag_seconds", "");
                let share = projected / (s.achieved_rate * lab.seconds).max(1.0);
                let c = rate_and_latency(&s);
                lab.say(&bar, format!(
                    "binab: round {round} {} {scenario}: {} events/s, p50 {} p99 {} p99.9 {}, read model: projected {share:.3} of the events, lag {lag} s",
                    bin.display(), c[0], c[1], c[2], c[3]
                ));
                let mut row = vec![
                    round.to_string(),
                    bin.display().to_string(),
                    name.to_owned(),
                    lp.name().to_owned(),
                ];
                row.extend(c);
                row.extend([format!("{share:.3}"), format!("{lag}")]);
                t.row(row);
                t.save(&lab.out)?;
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}
