//! `giftload run SCENARIO`, `giftload compare SCENARIO`, `giftload hostile SCENARIO`,
//! `giftload plot TABLE`, and the experiments: `giftload sweep …`, `giftload probe …`,
//! `giftload cluster …`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use giftload::experiment::compare;
use giftload::hostile::{HostileOptions, Watch};
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
    /// Redis of the redis-lua baseline (`run`: default redis://127.0.0.1:6379;
    /// `compare`: default a fresh redis-server of its own, started and stopped here).
    #[arg(long)]
    redis: Option<String>,
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
    /// Token with the admin scope: puts a scenario's `[economy]` keys in force.
    #[arg(
        long,
        env = "GIFTLOAD_ADMIN_TOKEN",
        default_value = "dev-admin-token-0001"
    )]
    admin_token: String,
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
    /// and print the ratio of their achieved rates. Each is measured alone: the baseline
    /// starts once giftstream's read model is quiet, on a fresh redis-server of its own
    /// (unless --redis); the report says how it was isolated.
    Compare {
        #[command(flatten)]
        common: Common,
    },
    /// Run a scenario over the binary protocol at a modest constant rate with hostile
    /// clients beside it (slowloris, idle HTTP and binary sockets, stalled readers,
    /// live-feed churn, bad tokens), and check that acks kept flowing.
    Hostile(Box<HostileArgs>),
    /// End-to-end sweeps against fresh servers and private redis-servers it starts
    /// (BENCHMARKS.md): one table (TSV) per sweep, and charts.
    #[command(subcommand)]
    Sweep(giftload::experiment::sweep::Sweep),
    /// One run against a fresh server and private redis-servers it starts, and where
    /// its time goes.
    #[command(subcommand)]
    Probe(giftload::experiment::probe::Probe),
    /// Scale-out experiments on a local Redis Cluster it starts (and `cluster up`).
    #[command(subcommand)]
    Cluster(giftload::experiment::cluster::Cluster),
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

/// `giftload hostile`.
#[derive(clap::Args)]
struct HostileArgs {
    /// Scenario file (load/scenarios/*.toml): its population, gift mix and load shape;
    /// its stages are replaced by one constant stage of --rate for --duration.
    scenario: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7070")]
    tcp: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Token with the ingest scope (the normal load; stalled readers).
    #[arg(long, env = "GIFTLOAD_TOKEN", default_value = "dev-ingest-token-0001")]
    token: String,
    /// Token with the read scope (feed subscriptions).
    #[arg(
        long,
        env = "GIFTLOAD_READ_TOKEN",
        default_value = "dev-read-token-00001"
    )]
    read_token: String,
    /// The normal load, events/s. Modest on purpose: ten minutes at 5,000/s put 3M ids
    /// in the idempotency index (4M with the shipped `engine.idempotency_entries_max`,
    /// for a 10-minute horizon); past it the server pushes back, by design.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// How long the normal load (and the hostile clients) run: 600, 600s, 10m, 500ms.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    duration: Duration,
    /// Override the scenario's connections.
    #[arg(long)]
    connections: Option<usize>,
    /// Override the scenario's events per batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Slowloris HTTP sockets.
    #[arg(long, default_value_t = 32)]
    slowloris: usize,
    /// A slowloris socket sends one byte of its request head this often.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    slowloris_byte_interval: Duration,
    /// HTTP sockets that send nothing.
    #[arg(long, default_value_t = 16)]
    idle_http: usize,
    /// Binary-protocol sockets that never authenticate (half send nothing, half a
    /// partial Auth frame).
    #[arg(long, default_value_t = 16)]
    idle_tcp: usize,
    /// Binary-protocol sockets that authenticate and send batches but never read.
    #[arg(long, default_value_t = 4)]
    stalled_readers: usize,
    /// Live-feed subscriptions open at once, each on a new stream id.
    #[arg(long, default_value_t = 64)]
    feed_subscribers: usize,
    /// How long a feed subscription is held before it is dropped.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    feed_hold: Duration,
    /// HTTP requests per second with unknown bearer tokens.
    #[arg(long, default_value_t = 5)]
    bad_tokens_per_second: u32,
    /// A hostile socket the server has not closed after this long is dropped and
    /// counted `outlived` (above the server's longest timeout, 60 s).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    hold_max: Duration,
    /// Connect every hostile kind from 127.0.0.1 (by default each has its own loopback
    /// address, so bad tokens do not spend the normal load's failed-auth budget).
    #[arg(long)]
    same_source: bool,
    /// The server's pid: its RSS from /proc/PID/status (else from /metrics, if it
    /// exports process_resident_memory_bytes).
    #[arg(long)]
    pid: Option<u32>,
    /// Fail if the normal load achieved less than this share of --rate.
    #[arg(long, default_value_t = 0.95)]
    min_rate_ratio: f64,
    /// Fail if any this long went by without an ack.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stall_window: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

/// `600` (seconds), `600s`, `10m`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let seconds = number
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("{text:?}: {e} (e.g. 600, 600s, 10m, 500ms)"))?
        * scale;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Sweep(sweep) => return giftload::experiment::sweep::run(sweep),
        Command::Probe(probe) => return giftload::experiment::probe::run(probe),
        Command::Cluster(c) => return giftload::experiment::cluster::run(c),
        command => Cli { command },
    };
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
            Command::Hostile(args) => hostile(*args).await,
            Command::Plot { .. } | Command::Sweep(_) | Command::Probe(_) | Command::Cluster(_) => {
                unreachable!("handled above")
            }
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
    let comparing = kinds.len() > 1;
    // Kept until the runs are over: the baseline's own redis-server (`compare`).
    let mut baseline_redis = None;
    let mut isolation = Vec::new();
    for kind in kinds {
        let redis = match (&c.redis, &kind) {
            (Some(url), TargetKind::RedisLua) if comparing => {
                isolation
                    .push("the baseline ran on --redis (not alone if giftstream journals there)");
                url.clone()
            }
            (Some(url), _) => url.clone(),
            (None, TargetKind::RedisLua) if comparing => {
                let own = tokio::task::block_in_place(|| compare::baseline_redis(&[]))?;
                let url = own.url();
                baseline_redis = Some(own);
                isolation
                    .push("the baseline ran on a fresh redis-server of its own (AOF everysec)");
                url
            }
            (None, _) => "redis://127.0.0.1:6379".to_owned(),
        };
        if comparing && kind == TargetKind::RedisLua && cluster.is_none() {
            // giftstream's read model may still be catching up in its Redis: let it
            // finish first, so that the baseline does not share the machine with it.
            let http = c.http.clone();
            let quiet = tokio::task::block_in_place(|| compare::wait_read_model_quiet(&http));
            isolation.push(if quiet {
                "giftstream's read model was quiet (lag 0, nothing projected for 1 s) before the baseline started"
            } else {
                "giftstream's read model was NOT quiet within 120 s when the baseline started"
            });
        }
        let spec = TargetSpec {
            kind,
            tcp: c.tcp.clone(),
            http: c.http.clone(),
            redis,
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
        anyhow::ensure!(
            spec.kind != TargetKind::RedisLua || scenario.mix.payout_share == 0.0,
            "the redis-lua baseline has no payouts: mix.payout_share must be 0 for it"
        );
        anyhow::ensure!(
            spec.kind != TargetKind::RedisLua || scenario.mix.reversal_share == 0.0,
            "the redis-lua baseline has no recharge reversals: mix.reversal_share must be 0 for it"
        );
        anyhow::ensure!(
            spec.kind != TargetKind::RedisLua || scenario.mix.gift_reversal_share == 0.0,
            "the redis-lua baseline has no gift reversals: mix.gift_reversal_share must be 0 for it"
        );
        if let Some(keys) = &scenario.economy
            && spec.kind != TargetKind::RedisLua
        {
            giftload::target::put_economy(&spec, &c.admin_token, keys).await?;
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
        println!("isolation: {}", isolation.join("; "));
    }
    drop(baseline_redis);
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
                "isolation": isolation,
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

async fn hostile(a: HostileArgs) -> anyhow::Result<bool> {
    let mut scenario = Scenario::from_file(&a.scenario)
        .with_context(|| format!("scenario {}", a.scenario.display()))?;
    scenario.load.mode = "open".to_owned();
    if let Some(n) = a.connections {
        scenario.load.connections = n;
    }
    if let Some(n) = a.batch {
        scenario.load.batch = n;
    }
    anyhow::ensure!(
        a.duration.as_secs_f64() > scenario.load.warmup_s,
        "--duration must be longer than the scenario's warmup ({} s)",
        scenario.load.warmup_s
    );
    scenario.stages = vec![Stage::Constant {
        rate: a.rate,
        duration_s: a.duration.as_secs_f64(),
    }];
    scenario
        .validate()
        .context("scenario after the command-line overrides")?;
    let spec = TargetSpec {
        kind: TargetKind::Giftstream,
        tcp: a.tcp.clone(),
        http: a.http.clone(),
        redis: String::new(),
        token: a.token.clone(),
        read_token: a.read_token.clone(),
        tls_ca: None,
        cluster: None,
    };
    for host in spec.hosts() {
        anyhow::ensure!(
            a.allow_remote || is_loopback(&host),
            "{host} is not a loopback address: pass --allow-remote to load it"
        );
    }
    let resolve = |addr: &str| {
        let addr = addr.to_owned();
        async move {
            tokio::net::lookup_host(&addr)
                .await
                .with_context(|| format!("resolve {addr}"))?
                .next()
                .ok_or_else(|| anyhow::anyhow!("{addr} resolves to nothing"))
        }
    };
    let (tcp, http) = (resolve(&a.tcp).await?, resolve(&a.http).await?);
    // Own source addresses need both listeners on IPv4 loopback (127.0.0.2 cannot
    // reach ::1 or another host).
    let own_sources = !a.same_source
        && [tcp, http]
            .iter()
            .all(|s| matches!(s.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback()));
    let options = HostileOptions {
        tcp,
        http,
        token: a.token.clone(),
        read_token: a.read_token.clone(),
        slowloris: a.slowloris,
        slowloris_byte_interval: a.slowloris_byte_interval,
        idle_http: a.idle_http,
        idle_tcp: a.idle_tcp,
        stalled_readers: a.stalled_readers,
        feed_subscribers: a.feed_subscribers,
        feed_hold: a.feed_hold,
        bad_tokens_per_second: a.bad_tokens_per_second,
        hold_max: a.hold_max,
        own_sources,
    };
    options.validate()?;
    let watching = Watch {
        pid: a.pid,
        progress: !a.quiet,
        min_rate_ratio: a.min_rate_ratio,
        stall_window: a.stall_window,
    };
    let run_options = RunOptions {
        progress: false,
        audit: false,
        nonce: rand::random(),
    };
    if !a.quiet {
        println!(
            "{} at {} events/s for {:?} beside: {} slowloris, {} idle HTTP, {} idle binary, {} stalled readers, {} feed subscribers, {} bad tokens/s{}",
            scenario.name,
            a.rate,
            a.duration,
            a.slowloris,
            a.idle_http,
            a.idle_tcp,
            a.stalled_readers,
            a.feed_subscribers,
            a.bad_tokens_per_second,
            if own_sources {
                " (each kind from its own 127.0.0.x)"
            } else {
                ""
            }
        );
    }
    let report = giftload::hostile::run(&scenario, &spec, &run_options, &options, &watching)
        .await
        .context("hostile run")?;
    report.print();
    let passed = report.passed();
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("--json {}", path.display()))?;
    }
    println!("{}", if passed { "PASSED" } else { "FAILED" });
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's options are well-formed (no two share a name).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
