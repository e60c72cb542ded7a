//! What the background work of persistence costs the ack latency: `giftload sweep
//! snapshot` (BENCHMARKS.md "Snapshots at 1M wallets": by fork, with and without
//! copy_pages_in_child, from the replica, none) and `giftload sweep aof` (Redis's own AOF
//! rewrites: its default policy against none during the run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::experiment::lab_args::LabArgs;
use crate::experiment::{
    Lab, Loop, Series, Table, chart, parse_setting, percentiles_ms, rate_and_latency, spec_of,
};
use crate::harness::{Edit, Serve, children, cpu_seconds, status_mb};
use crate::report::{LogAxes, Summary};

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub lab: LabArgs,
    /// A round's runs, alternated: `fork:EVENTS` (snapshot.method = "fork",
    /// copy_pages_in_child = true), `fork-nocopy:EVENTS` (copy_pages_in_child = false),
    /// `replica:EVENTS` (snapshot.method = "replica"), `none` (no snapshots); EVENTS is
    /// snapshot.events.
    #[arg(long, num_args = 1.., default_values_t = ["fork:1500000".to_owned(), "fork-nocopy:1500000".to_owned(), "none".to_owned()])]
    pub runs: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Open loop at this many events/s.
    #[arg(long, default_value_t = 150000.0)]
    pub rate: f64,
    /// Funded users (the scenario's population replaced).
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    #[arg(long, default_value = "uniform")]
    pub scenario: String,
}

/// A run of `--runs`: its label and config edits.
fn snapshot_run(run: &str) -> anyhow::Result<(String, Vec<Edit>)> {
    let (how, events) = run.split_once(':').unwrap_or((run, "0"));
    let (label, method, copy) = match how {
        "fork" => ("fork, copy_pages_in_child=true", "fork", true),
        "fork-nocopy" => ("fork, copy_pages_in_child=false", "fork", false),
        "replica" => ("replica", "replica", true),
        "none" => ("no snapshots", "fork", true),
        _ => anyhow::bail!("--runs {run}: fork, fork-nocopy, replica or none"),
    };
    let events: i64 = if how == "none" { 0 } else { events.parse()? };
    let edits = parse_setting(&format!(
        "snapshot.events={events};snapshot.copy_pages_in_child={copy};snapshot.method=\"{method}\";read_model.enabled=false"
    ))?;
    Ok((label.to_owned(), edits))
}

/// Samples the peak private memory (Private_Dirty, MB) of `pid`'s children every 0.1 s
/// until dropped: what a forked snapshot writer copied.
struct ChildPeak {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChildPeak {
    fn start(pid: u32) -> ChildPeak {
        let (stop, peak_kb) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, p) = (stop.clone(), peak_kb.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for child in children(pid) {
                    let kb = std::fs::read_to_string(format!("/proc/{child}/smaps_rollup"))
                        .ok()
                        .and_then(|t| {
                            let line = t
                                .lines()
                                .find(|l| l.starts_with("Private_Dirty"))?
                                .to_owned();
                            line.split_whitespace().nth(1)?.parse::<u64>().ok()
                        })
                        .unwrap_or(0);
                    p.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        ChildPeak {
            stop,
            peak_kb,
            thread: Some(thread),
        }
    }

    fn peak_mb(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// The snapshot writes' durations (s) from the server's log.
fn snapshot_writes(serve: &Serve) -> String {
    let writes: Vec<String> = serve
        .log()
        .lines()
        .filter(|l| l.contains("snapshot written"))
        .filter_map(|l| {
            let v = l.split_once("seconds=")?.1;
            let n: String = v
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            Some(format!("{:.1}", n.parse::<f64>().ok()?))
        })
        .collect();
    if writes.is_empty() {
        "none".to_owned()
    } else {
        writes.join(" ")
    }
}

pub fn snapshot(lab: &Lab, a: &SnapshotArgs) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let runs = a
        .runs
        .iter()
        .map(|r| snapshot_run(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut series = Series::default();
    let bar = lab.bar("snapshot", a.rounds * runs.len());
    for round in 1..=a.rounds {
        for (label, edits) in &runs {
            bar.set_message(format!("round {round}: {label}"));
            let mut s = lab.scenario(&a.scenario, Loop::Open(a.rate), lab.seconds)?;
            s.population.users = a.users;
            let mut serve = lab.serve(&redis, None, lab.server_config(1, edits)?, "info")?;
            let sampler = ChildPeak::start(serve.pid());
            let summary = lab.load(&s, &spec_of(&serve))?;
            let m = serve.metrics();
            let cuts = m.sum("giftstream_snapshot_cut_seconds_count", "");
            let cut_s = m.sum("giftstream_snapshot_cut_seconds_sum", "");
            let lag = m
                .samples("giftstream_snapshot_replica_lag_events")
                .next()
                .map(|x| x.1);
            let rss = status_mb(serve.pid(), "VmHWM").unwrap_or(0.0);
            serve.stop();
            let child = sampler.peak_mb();
            let [p50, p99, p999] = percentiles_ms(&summary);
            let worst = summary
                .intervals
                .iter()
                .map(|i| i.p99_us)
                .max()
                .unwrap_or(0) as f64
                / 1000.0;
            let cuts = if cuts > 0.0 {
                format!("{cuts:.0}, avg {:.0} ms", cut_s / cuts * 1000.0)
            } else {
                "none".to_owned()
            };
            lab.say(&bar, format!(
                "round {round} {label}: {:.0} events/s, p50 {p50:.2} p99 {p99:.2} p99.9 {p999:.2} max {:.0} ms, worst second's p99 {worst:.0} ms; cuts {cuts}; writes (s) {}; child's private memory {child:.0} MB; server peak RSS {rss:.0} MB; replica lag at the end {} events",
                summary.achieved_rate,
                summary.corrected.max() as f64 / 1000.0,
                snapshot_writes(&serve),
                lag.map_or("none".to_owned(), |l| format!("{l:.0}")),
            ));
            series.add(format!("{label} (round {round})"), &summary);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let text = series.text();
    std::fs::create_dir_all(&lab.out)?;
    std::fs::write(lab.out.join("snapshot-p99.tsv"), &text)?;
    let title = format!(
        "p99 ack latency per second, {} wallets, {} gifts/s",
        a.users, a.rate
    );
    chart(
        &text,
        &lab.results.join("snapshot-p99.png"),
        &title,
        "p99 ms",
        LogAxes::default(),
    )
}

/// `giftload sweep aof`: per round, a fresh Redis with its default rewrite policy (a
/// rewrite whenever the AOF doubled past 64 MB, the lab's `--redis-arg`s not applied),
/// then one that never rewrites during the run (auto-aof-rewrite-percentage 0).
pub fn aof(
    lab: &Lab,
    scenario: &str,
    rate: Option<f64>,
    rounds: usize,
    setting: &str,
) -> anyhow::Result<()> {
    let header = [
        "round",
        "redis",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "aof rewrites",
        "redis cpu s",
    ];
    let mut t = Table::new("aof", &header);
    let mut series = Series::default();
    let lp = rate.map_or(Loop::Closed, Loop::Open);
    let edits = parse_setting(setting)?;
    let bar = lab.bar("aof", rounds * 2);
    for round in 1..=rounds {
        for (policy, args) in [
            ("default", &[][..]),
            ("no-rewrite", &["--auto-aof-rewrite-percentage", "0"][..]),
        ] {
            bar.set_message(format!("round {round}: {policy}"));
            let redis = crate::experiment::compare::baseline_redis(
                &args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
            )?;
            let serve = lab.serve(&redis, None, lab.server_config(1, &edits)?, "warn")?;
            let r0 = cpu_seconds(redis.pid());
            let s: Summary =
                lab.load(&lab.scenario(scenario, lp, lab.seconds)?, &spec_of(&serve))?;
            let cpu = cpu_seconds(redis.pid()) - r0;
            let rewrites = redis
                .info_field("persistence", "aof_rewrites")
                .unwrap_or_default();
            drop(serve);
            let c = rate_and_latency(&s);
            lab.say(&bar, format!(
                "aof: round {round} {policy}: {} events/s, p50 {} p99 {} p99.9 {}, {rewrites} rewrites, Redis CPU {cpu:.1} s",
                c[0], c[1], c[2], c[3]
            ));
            let mut row = vec![round.to_string(), policy.to_owned()];
            row.extend(c);
            row.extend([rewrites.clone(), format!("{cpu:.1}")]);
            t.row(row);
            t.save(&lab.out)?;
            series.add(format!("{policy} (round {round}: {rewrites} rewrites)"), &s);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if let Some(rate) = rate {
        let text = series.text();
        std::fs::write(lab.out.join("aof-p99.tsv"), &text)?;
        let title = format!(
            "p99 ack latency per second, {scenario} at {rate} events/s: Redis's AOF rewrites"
        );
        chart(
            &text,
            &lab.results.join("aof-p99.png"),
            &title,
            "p99 ms",
            LogAxes::default(),
        )?;
    }
    Ok(())
}
