//! `giftload probe …`: one run against a fresh server on an empty private Redis, and
//! where its time goes — `tail` (the ack tail: the server's histograms, Redis's command
//! times, stalls and forks, each process's CPU), `read-model` (the read model sampled
//! under load and after it) and `restart` (kill -9 under load, then how long until
//! ready).

use std::time::{Duration, Instant};

use crate::experiment::lab_args::LabArgs;
use crate::experiment::{Lab, Loop, own_cpu_seconds, parse_setting, percentiles_ms, spec_of};
use crate::harness::{Edit, Redis, RedisOptions, cpu_seconds, thread_cpu_seconds};
use crate::runner::{self, RunOptions};

/// README's journal policy: no AOF rewrite in a run of a few minutes.
const README_AOF_POLICY: [&str; 4] = [
    "--auto-aof-rewrite-percentage",
    "400",
    "--auto-aof-rewrite-min-size",
    "2gb",
];

#[derive(clap::Subcommand, Debug)]
pub enum Probe {
    /// An open-loop run, then where its ack tail sits.
    Tail(Box<TailArgs>),
    /// The Redis read model under load, sampled every 2 s for the 10 s run and 10 s
    /// after it; then the Redis command statistics of its writes.
    ReadModel {
        #[command(flatten)]
        lab: LabArgs,
        #[arg(long, default_value = "hot-from-start")]
        scenario: String,
        /// Open loop at this rate (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Restart after kill -9 under load: snapshots every 1M events, uniform closed loop
    /// for 10 s, kill -9, restart; the seconds until /readyz answers 200 and the
    /// lease/recovery log lines.
    Restart {
        #[command(flatten)]
        lab: LabArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    lab: LabArgs,
    #[arg(long, default_value = "uniform")]
    scenario: String,
    #[arg(long, default_value_t = 150000.0)]
    rate: f64,
    /// Redis's default AOF rewrite policy (a rewrite each time the AOF doubles past 64
    /// MB) instead of README's (none in a run of a few minutes); --redis-arg adds to it.
    #[arg(long)]
    redis_default_policy: bool,
    /// MB of filler strings in the journal's Redis before the run (DEBUG POPULATE), so
    /// that a rewrite has a steady-state dataset to write.
    #[arg(long)]
    prefill_mb: Option<u64>,
    /// BGREWRITEAOF on the journal's Redis this many seconds after giftload starts (its
    /// setup included).
    #[arg(long)]
    rewrite_at: Option<f64>,
    /// The read model to a second private Redis started at this niceness, and its
    /// projector threads at read_model.nice = this.
    #[arg(long)]
    rm_nice: Option<i32>,
}

pub fn run(probe: Probe) -> anyhow::Result<()> {
    match probe {
        Probe::Tail(a) => tail(&a.lab.lab(10.0)?, &a),
        Probe::ReadModel {
            lab,
            scenario,
            rate,
        } => read_model(&lab.lab(10.0)?, &scenario, rate),
        Probe::Restart { lab } => restart(&lab.lab(12.0)?),
    }
}

/// Times (from the probe's start) of a BGREWRITEAOF: started, finished.
fn rewrite_after(
    url: String,
    after: Duration,
) -> std::thread::JoinHandle<Option<(Instant, Instant)>> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let client = redis::Client::open(url).ok()?;
        let mut con = client.get_connection().ok()?;
        let start = Instant::now();
        redis::cmd("BGREWRITEAOF").query::<()>(&mut con).ok()?;
        loop {
            let info: String = redis::cmd("INFO").arg("persistence").query(&mut con).ok()?;
            if info.contains("aof_rewrite_in_progress:0") {
                return Some((start, Instant::now()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn tail(lab: &Lab, a: &TailArgs) -> anyhow::Result<()> {
    let mut args: Vec<String> = if a.redis_default_policy {
        Vec::new()
    } else {
        README_AOF_POLICY.map(str::to_owned).to_vec()
    };
    args.extend(lab.redis_args.iter().cloned());
    if a.prefill_mb.is_some() {
        args.extend(["--enable-debug-command".to_owned(), "local".to_owned()]);
    }
    // Redis's own record of every stall of 5 ms or more (LATENCY LATEST, printed at the end).
    args.extend(["--latency-monitor-threshold".to_owned(), "5".to_owned()]);
    let journal = Redis::start(&RedisOptions {
        args,
        ..RedisOptions::default()
    })?;
    if let Some(mb) = a.prefill_mb {
        // 1 KB values; keys outside giftstream's prefix.
        journal.query::<()>(&[
            "DEBUG",
            "POPULATE",
            &(mb * 1000).to_string(),
            "filler",
            "1000",
        ])?;
    }
    let mut edits: Vec<Edit> = Vec::new();
    let rm = match a.rm_nice {
        Some(nice) => {
            let rm = Redis::start(&RedisOptions {
                nice: Some(nice),
                ..RedisOptions::default()
            })?;
            edits.extend(parse_setting(&format!(
                "read_model.url=\"{}\";read_model.nice={nice}",
                rm.url()
            ))?);
            Some(rm)
        }
        None => None,
    };
    // Not emptied: the prefill stays.
    let mut serve = crate::harness::Serve::start(crate::harness::ServeOptions {
        bin: lab.bin.clone(),
        config: lab.server_config(1, &edits)?,
        redis_url: Some(journal.url()),
        node: None,
        log: "warn".to_owned(),
    })?;
    serve.wait_for("/readyz")?;
    let cpu = || {
        (
            own_cpu_seconds(),
            cpu_seconds(serve.pid()),
            cpu_seconds(journal.pid()),
            rm.as_ref().map_or(0.0, |r| cpu_seconds(r.pid())),
        )
    };
    let before = cpu();
    let threads_before = thread_cpu_seconds(serve.pid());
    let t0 = Instant::now();
    let rewrite = a
        .rewrite_at
        .map(|s| rewrite_after(journal.url(), Duration::from_secs_f64(s)));
    let s = lab.load(
        &lab.scenario(&a.scenario, Loop::Open(a.rate), lab.seconds)?,
        &spec_of(&serve),
    )?;
    let load_end = Instant::now();
    let rewrite = rewrite.and_then(|h| h.join().ok().flatten());
    let after = cpu();
    let threads_after = thread_cpu_seconds(serve.pid());
    let m = serve.metrics();
    let [p50, p99, p999] = percentiles_ms(&s);
    println!(
        "giftload: {:.0}/s p50 {p50:.2} p99 {p99:.2} p99.9 {p999:.2} ms",
        s.achieved_rate
    );
    println!(
        "cpu s during the run: giftload {:.2}, giftstream {:.2}, journal Redis {:.2}, read-model Redis {:.2}",
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        after.3 - before.3
    );
    // Where giftstream's CPU went, by thread name (threads that ended are not counted).
    let threads: Vec<String> = threads_after
        .iter()
        .map(|(name, s)| (name, s - threads_before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, s)| *s >= 0.01)
        .map(|(name, s)| format!("{name} {s:.2}"))
        .collect();
    println!("giftstream cpu s by thread: {}", threads.join(", "));
    for name in [
        "giftstream_commit_duration_seconds",
        "giftstream_ingest_duration_seconds",
        "giftstream_read_model_write_seconds",
    ] {
        let buckets = m.buckets(name);
        if !buckets.is_empty() {
            let n = m.sum(&format!("{name}_count"), "");
            let cells: Vec<String> = buckets
                .iter()
                .map(|(le, v)| format!("<={le}:{v:.4}"))
                .collect();
            println!("{name} n={n:.0} {}", cells.join(" "));
        }
    }
    for name in [
        "giftstream_read_model_events_total",
        "giftstream_read_model_lag_seconds",
    ] {
        for (labels, v) in m.samples(name) {
            println!("{name}{labels} {v}");
        }
    }
    if a.rewrite_at.is_some() || a.prefill_mb.is_some() {
        let p99s: Vec<String> = s
            .intervals
            .iter()
            .map(|i| format!("{:.1}", i.p99_us as f64 / 1000.0))
            .collect();
        println!("p99 ms per second: {}", p99s.join(" "));
        if let Some((start, end)) = rewrite {
            let measured0 = load_end - Duration::from_secs_f64(s.measured_s);
            let at = |t: Instant| t.saturating_duration_since(measured0).as_secs_f64();
            println!(
                "rewrite: seconds {:.1}-{:.1} of the load (probe start +{:.1} s)",
                at(start),
                at(end),
                (start - t0).as_secs_f64()
            );
        }
    }
    drop(serve);
    for r in std::iter::once(&journal).chain(rm.as_ref()) {
        redis_report(r);
    }
    Ok(())
}

/// Redis's side of a run: command times, forks, stalls, sizes.
fn redis_report(r: &Redis) {
    let port = r.port;
    let stats: String = r.query(&["INFO", "commandstats"]).unwrap_or_default();
    for l in stats.lines().filter(|l| {
        [
            "evalsha", "xadd", "xrange", "zadd", "zrem", "expireat", "hset", "hincrby",
        ]
        .iter()
        .any(|c| l.starts_with(&format!("cmdstat_{c}:")))
    }) {
        println!("redis {port}: {l}");
    }
    // Forks: AOF rewrites (each copies the dataset's page tables and stalls Redis briefly).
    if let Some(f) = r.info_field("stats", "total_forks") {
        println!("redis {port}: total_forks:{f}");
    }
    let latest: redis::Value = r.query(&["LATENCY", "LATEST"]).unwrap_or(redis::Value::Nil);
    println!("redis {port}: latency latest (event, at, last ms, max ms): {latest:?}");
    let sizes: Vec<String> = [
        "used_memory",
        "aof_current_size",
        "aof_last_rewrite_time_sec",
        "latest_fork_usec",
    ]
    .iter()
    .filter_map(|f| Some(format!("{f}:{}", r.info_field("all", f)?)))
    .collect();
    println!("redis {port}: {}", sizes.join(" "));
}

fn read_model(lab: &Lab, scenario: &str, rate: Option<f64>) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let serve = lab.serve(&redis, None, lab.server_config(1, &[])?, "warn")?;
    let s = lab.scenario(scenario, rate.map_or(Loop::Closed, Loop::Open), lab.seconds)?;
    let spec = spec_of(&serve);
    let options = RunOptions {
        progress: false,
        audit: false,
        nonce: rand::random(),
    };
    let run = lab
        .rt
        .spawn(async move { runner::run(&s, &spec, &options).await });
    println!("s\taccepted\tprojected\tlag s");
    for t in (2..=20).step_by(2) {
        std::thread::sleep(Duration::from_secs(2));
        let m = serve.metrics();
        println!(
            "{t}\t{:.0}\t{:.0}\t{}",
            m.sum("giftstream_events_total", "outcome=\"accepted\""),
            m.sum("giftstream_read_model_events_total", ""),
            m.sum("giftstream_read_model_lag_seconds", "")
        );
    }
    let summary = lab.rt.block_on(run)??;
    let [p50, p99, _] = percentiles_ms(&summary);
    println!(
        "giftload achieved {:.0} events/s, ack p50 {p50} ms, p99 {p99} ms",
        summary.achieved_rate
    );
    let stats: String = redis.query(&["INFO", "commandstats"])?;
    for l in stats.lines().filter(|l| {
        [
            "evalsha", "zadd", "zincrby", "zrem", "hset", "hincrby", "xadd",
        ]
        .iter()
        .any(|c| l.contains(c))
    }) {
        println!("{l}");
    }
    Ok(())
}

fn restart(lab: &Lab) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let config = lab.server_config(1, &parse_setting("snapshot.events=1000000")?)?;
    let mut serve = lab.serve(&redis, None, config, "info")?;
    let s = lab.scenario("uniform", Loop::Closed, lab.seconds)?;
    let (spec, options) = (
        spec_of(&serve),
        RunOptions {
            progress: false,
            audit: false,
            nonce: rand::random(),
        },
    );
    let run = lab
        .rt
        .spawn(async move { runner::run(&s, &spec, &options).await });
    std::thread::sleep(Duration::from_secs(10));
    serve.kill9();
    run.abort();
    let t0 = Instant::now();
    serve.restart()?;
    serve.wait_for("/readyz")?;
    println!("ready after {:.2} s", t0.elapsed().as_secs_f64());
    let log = serve.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lease") || l.contains("recovered"))
        .collect();
    for l in &lines[lines.len().saturating_sub(4)..] {
        println!("{}", l.chars().take(260).collect::<String>());
    }
    Ok(())
}
