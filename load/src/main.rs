//! `giftload run SCENARIO` and `giftload compare SCENARIO`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use giftload::report::{self, Threshold};
use giftload::runner::{self, RunOptions};
use giftload::scenario::{Scenario, Stage};
use giftload::target::{TargetKind, TargetSpec, is_loopback};

#[derive(Parser)]
#[command(
    name = "giftload",
    version,
    about = "Load tests for giftstream, side by side with a Redis-Lua baseline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Scenario file (load/scenarios/*.toml).
    scenario: PathBuf,
    /// giftstream binary protocol address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    tcp: String,
    /// giftstream HTTP address (the giftstream-http target, reads, the audit).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Redis of the redis-lua baseline.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Token with the ingest scope.
    #[arg(long, env = "GIFTLOAD_TOKEN", default_value = "dev-ingest-token-0001")]
    token: String,
    /// Token with the read scope (the audit).
    #[arg(
        long,
        env = "GIFTLOAD_READ_TOKEN",
        default_value = "dev-read-token-00001"
    )]
    read_token: String,
    /// Override the load mode: open or closed.
    #[arg(long)]
    mode: Option<String>,
    /// Replace the stages by one constant stage at this rate (events/s).
    #[arg(long)]
    rate: Option<f64>,
    /// Override the duration, seconds (closed loop; with --rate, the stage's).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long)]
    connections: Option<usize>,
    /// Override the events per batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Pass/fail rules, e.g. --threshold 'p99<10ms' (in addition to the scenario's).
    #[arg(long = "threshold")]
    thresholds: Vec<String>,
    /// Write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Charts (PNG, SVG) and report.html go here.
    #[arg(long, default_value = "giftload-report")]
    out: PathBuf,
    /// After the run, check exactly-once and totals through the target.
    #[arg(long)]
    audit: bool,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// giftstream over TLS: trust this PEM CA (or self-signed certificate); the name
    /// verified is the host of --tcp / --http.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// A giftstream.toml with a `[cluster]` table: route each event to the node that
    /// owns its sender (the binary protocol to every node; `--tcp` is unused).
    #[arg(long, value_name = "TOML")]
    cluster: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario against one target.
    Run {
        #[command(flatten)]
        common: Common,
        /// giftstream (binary protocol), giftstream-http, or redis-lua.
        #[arg(long, default_value = "giftstream")]
        target: TargetKind,
    },
    /// Run the same seeded events against giftstream and then the redis-lua baseline,
    /// and print the ratio of their achieved rates.
    Compare {
        #[command(flatten)]
        common: Common,
    },
    /// Draw a tab-separated table (header row; x, then one column per series) as a
    /// line chart (PNG): the growth curves in BENCHMARKS.md.
    Plot {
        table: PathBuf,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        title: String,
        /// The y axis' description.
        #[arg(long)]
        y: String,
        /// log10 x axis.
        #[arg(long)]
        log_x: bool,
        /// log10 y axis (every value > 0), for latencies that span decades.
        #[arg(long)]
        log_y: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Plot {
        table,
        out,
        title,
        y,
        log_x,
        log_y,
    } = &cli.command
    {
        let text =
            std::fs::read_to_string(table).with_context(|| format!("table {}", table.display()))?;
        let (x, series) = report::read_table(&text)?;
        let log = report::LogAxes {
            x: *log_x,
            y: *log_y,
        };
        report::xy_chart(out, title, &x, y, log, &series)?;
        println!("chart: {}", out.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let passed = runtime.block_on(async move {
        match cli.command {
            Command::Run { common, target } => run(common, vec![target]).await,
            Command::Compare { common } => {
                run(common, vec![TargetKind::Giftstream, TargetKind::RedisLua]).await
            }
            Command::Plot { .. } => unreachable!("handled above"),
        }
    })?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

fn load_scenario(c: &Common) -> anyhow::Result<Scenario> {
    let mut s = Scenario::from_file(&c.scenario)
        .with_context(|| format!("scenario {}", c.scenario.display()))?;
    if let Some(mode) = &c.mode {
        s.load.mode = mode.clone();
    }
    if let Some(n) = c.connections {
        s.load.connections = n;
    }
    if let Some(n) = c.batch {
        s.load.batch = n;
    }
    if let Some(rate) = c.rate {
        let duration = c.duration.unwrap_or_else(|| s.total_s());
        s.stages = vec![Stage::Constant {
            rate,
            duration_s: duration,
        }];
    } else if let Some(d) = c.duration {
        s.load.duration_s = d;
    }
    s.validate()
        .context("scenario after the command-line overrides")?;
    Ok(s)
}

async fn run(c: Common, kinds: Vec<TargetKind>) -> anyhow::Result<bool> {
    let scenario = load_scenario(&c)?;
    let mut thresholds = Vec::new();
    for t in scenario.thresholds.iter().chain(&c.thresholds) {
        thresholds.push(Threshold::parse(t).map_err(|e| anyhow::anyhow!("--threshold {e}"))?);
    }
    let cluster = match &c.cluster {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--cluster {}", path.display()))?;
            let config = giftstream::config::Config::from_toml_str(&text)
                .map_err(|e| anyhow::anyhow!("--cluster {}: {e}", path.display()))?;
            let mut table = config.cluster;
            table.node.clear();
            let map = giftstream::cluster::PartitionMap::from_config(&table)
                .map_err(|e| anyhow::anyhow!("--cluster {}: {e}", path.display()))?
                .ok_or_else(|| {
                    anyhow::anyhow!("--cluster {}: no [cluster] nodes", path.display())
                })?;
            anyhow::ensure!(
                !c.audit,
                "--audit reads one node's totals: not with --cluster"
            );
            anyhow::ensure!(
                kinds.iter().all(|k| *k == TargetKind::Giftstream),
                "--cluster routes the binary protocol: use --target giftstream"
            );
            Some(map)
        }
    };
    let nonce: u64 = rand::random();
    let mut summaries = Vec::new();
    for kind in kinds {
        let spec = TargetSpec {
            kind,
            tcp: c.tcp.clone(),
            http: c.http.clone(),
            redis: c.redis.clone(),
            token: c.token.clone(),
            read_token: c.read_token.clone(),
            tls_ca: c.tls_ca.clone(),
            cluster: cluster.clone(),
        };
        for host in spec.hosts() {
            anyhow::ensure!(
                c.allow_remote || is_loopback(&host),
                "{host} is not a loopback address: pass --allow-remote to load it"
            );
        }
        let options = RunOptions {
            progress: !c.quiet,
            audit: c.audit,
            nonce,
        };
        let summary = runner::run(&scenario, &spec, &options)
            .await
            .with_context(|| format!("run against {}", spec.name()))?;
        summary.print();
        summaries.push(summary);
    }
    let mut passed = true;
    let mut results = Vec::new();
    for s in &summaries {
        let (ok, json) = report::check_thresholds(s, &thresholds);
        passed &= ok;
        if let Some(a) = &s.audit {
            passed &= a.is_clean();
        }
        let mut v = s.to_json();
        v["thresholds"] = json;
        results.push(v);
    }
    let ratio = (summaries.len() == 2)
        .then(|| summaries[0].achieved_rate / summaries[1].achieved_rate.max(1e-9));
    if let Some(r) = ratio {
        println!(
            "ratio: giftstream {:.0} events/s / redis-lua {:.0} events/s = {r:.2}x",
            summaries[0].achieved_rate, summaries[1].achieved_rate
        );
    }
    let refs: Vec<&report::Summary> = summaries.iter().collect();
    let html = report::write_charts(&c.out, &refs)?;
    std::fs::write(
        c.out.join("intervals.tsv"),
        summaries
            .iter()
            .map(report::interval_log)
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    println!("report: {}", html.display());
    if let Some(path) = &c.json {
        let json = match ratio {
            Some(ratio) => serde_json::json!({
                "schema": report::COMPARE_SCHEMA,
                "giftstream": results[0],
                "baseline": results[1],
                "ratio": ratio,
                "passed": passed,
            }),
            None => {
                let mut v = results.remove(0);
                v["passed"] = passed.into();
                v
            }
        };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(passed)
}
