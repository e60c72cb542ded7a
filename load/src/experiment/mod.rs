//! The recurring measurements of BENCHMARKS.md as giftload subcommands (`sweep`,
//! `probe`, `cluster`), on the processes of [`crate::harness`]: what they share is here
//! (the lab's paths and settings, one load run, TSV tables, charts, progress).

pub mod cluster;
pub mod compare;
pub mod cpu;
pub mod lab_args;
pub mod probe;
pub mod snapshot;
pub mod sweep;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::harness::{Edit, Redis, Serve, ServeOptions, ServerConfig};
use crate::report::{self, Summary};
use crate::runner::{self, RunOptions};
use crate::scenario::{Scenario, Stage};
use crate::target::{TargetKind, TargetSpec};

/// Load runs send more ids than the shipped index holds (4M: 10 minutes at ~7k
/// events/s): a 32M-id index, so that a run of a few million events at full rate is not
/// answered UNAVAILABLE (backpressure) part-way. ~120 B per id touched.
pub const LOAD_INDEX_ENTRIES: i64 = 33_554_432;

/// Where an experiment finds its binaries, configs and scenarios, where it writes, and
/// what every run of it shares.
pub struct Lab {
    /// Load runs are async; experiments are sequential code that blocks on them.
    pub rt: tokio::runtime::Runtime,
    /// The `giftstream` binary to serve.
    pub bin: PathBuf,
    /// The base config (`config/giftstream.toml`).
    pub config: PathBuf,
    /// Where `NAME` of a scenario is looked up (`load/scenarios/NAME.toml`).
    pub scenarios: PathBuf,
    /// Tables (TSV).
    pub out: PathBuf,
    /// Charts (PNG).
    pub results: PathBuf,
    /// Seconds per point (run).
    pub seconds: f64,
    /// Edits applied to every server's config.
    pub edits: Vec<Edit>,
    /// Further arguments of every redis-server.
    pub redis_args: Vec<String>,
    pub progress: bool,
}

/// How a point loads its server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loop {
    /// As fast as answers come.
    Closed,
    /// Planned arrivals at this many events/s.
    Open(f64),
}

impl Loop {
    pub fn name(self) -> &'static str {
        match self {
            Loop::Closed => "closed",
            Loop::Open(_) => "open",
        }
    }
}

impl Lab {
    /// The scenario `name` (`load/scenarios/NAME.toml`, or a path), shaped as `lp` for
    /// `seconds`.
    pub fn scenario(&self, name: &str, lp: Loop, seconds: f64) -> anyhow::Result<Scenario> {
        let path = if name.ends_with(".toml") {
            PathBuf::from(name)
        } else {
            self.scenarios.join(format!("{name}.toml"))
        };
        let mut s =
            Scenario::from_file(&path).with_context(|| format!("scenario {}", path.display()))?;
        match lp {
            Loop::Closed => {
                s.load.mode = "closed".to_owned();
                s.load.duration_s = seconds;
            }
            Loop::Open(rate) => {
                s.load.mode = "open".to_owned();
                s.stages = vec![Stage::Constant {
                    rate,
                    duration_s: seconds,
                }];
            }
        }
        s.validate()
            .context("scenario after the experiment's overrides")?;
        Ok(s)
    }

    /// The base config with the load index, `commit.interval_ms = interval_ms`, the
    /// lab's edits, then `edits`.
    pub fn server_config(&self, interval_ms: u64, edits: &[Edit]) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::from_file(&self.config)?;
        config.set("engine.idempotency_entries_max", LOAD_INDEX_ENTRIES);
        config.set("commit.interval_ms", interval_ms as i64);
        for e in self.edits.iter().chain(edits) {
            config.edit(e)?;
        }
        Ok(config)
    }

    /// A fresh `giftstream serve` (binary `bin`, or the lab's) on `redis`, emptied first
    /// so that no run inherits another's journal; ready when this returns.
    pub fn serve(
        &self,
        redis: &Redis,
        bin: Option<&Path>,
        config: ServerConfig,
        log: &str,
    ) -> anyhow::Result<Serve> {
        redis.query::<()>(&["FLUSHALL"])?;
        let mut serve = Serve::start(ServeOptions {
            bin: bin.unwrap_or(&self.bin).to_owned(),
            config,
            redis_url: Some(redis.url()),
            node: None,
            log: log.to_owned(),
        })?;
        serve.wait_for("/readyz")?;
        Ok(serve)
    }

    /// One giftload run of `scenario` against `spec` (no progress display of its own:
    /// the experiment shows its points').
    pub fn load(&self, scenario: &Scenario, spec: &TargetSpec) -> anyhow::Result<Summary> {
        let options = RunOptions {
            progress: false,
            audit: false,
            nonce: rand::random(),
        };
        self.rt
            .block_on(runner::run(scenario, spec, &options))
            .with_context(|| format!("{} against {}", scenario.name, spec.name()))
    }

    /// A progress bar over `points` runs (hidden with `--quiet`).
    pub fn bar(&self, what: &str, points: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(points as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    }

    /// Prints a point's line above the progress bar.
    pub fn say(&self, bar: &ProgressBar, line: String) {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    }
}

/// The binary protocol of `serve`.
pub fn spec_of(serve: &Serve) -> TargetSpec {
    TargetSpec {
        kind: TargetKind::Giftstream,
        tcp: serve.tcp.clone(),
        http: serve.http.clone(),
        redis: String::new(),
        token: "dev-ingest-token-0001".to_owned(),
        read_token: "dev-read-token-00001".to_owned(),
        tls_ca: None,
        cluster: None,
    }
}

/// A config setting given on the command line: edits separated by `;`
/// (`read_model.ops_per_write_max=256`, `read_model.enabled=false`).
pub fn parse_setting(text: &str) -> anyhow::Result<Vec<Edit>> {
    text.split(';')
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .collect()
}

/// Latency percentiles of a summary, ms: p50, p99, p99.9.
pub fn percentiles_ms(s: &Summary) -> [f64; 3] {
    [0.5, 0.99, 0.999].map(|q| s.corrected.value_at_quantile(q) as f64 / 1000.0)
}

/// `achieved p50 p99 p99.9` of a summary as TSV cells (events/s, ms).
pub fn rate_and_latency(s: &Summary) -> Vec<String> {
    let [p50, p99, p999] = percentiles_ms(s);
    vec![
        format!("{:.0}", s.achieved_rate),
        format!("{p50:.2}"),
        format!("{p99:.2}"),
        format!("{p999:.2}"),
    ]
}

/// A tab-separated table with a header row, written to `DIR/NAME.tsv`.
pub struct Table {
    name: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(name: &str, header: &[&str]) -> Table {
        Table {
            name: name.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table's text, only `columns` (by index) of it.
    pub fn text(&self, columns: &[usize]) -> String {
        let pick = |r: &[String]| {
            columns
                .iter()
                .map(|&i| r.get(i).map_or("", String::as_str))
                .collect::<Vec<_>>()
                .join("\t")
        };
        let mut out = pick(&self.header);
        out.push('\n');
        for r in &self.rows {
            let _ = writeln!(out, "{}", pick(r));
        }
        out
    }

    /// Writes `DIR/NAME.tsv` (every column), after each row so that a run stopped
    /// half-way keeps what it measured.
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.tsv", self.name));
        let all: Vec<usize> = (0..self.header.len()).collect();
        std::fs::write(&path, self.text(&all))
            .with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Writes `DIR/NAME.tsv` of `columns` only (`cut -f`).
    pub fn save_columns(
        &self,
        dir: &Path,
        name: &str,
        columns: &[usize],
    ) -> anyhow::Result<String> {
        let text = self.text(columns);
        std::fs::write(dir.join(format!("{name}.tsv")), &text)?;
        Ok(text)
    }
}

/// Draws a table's text (x, then one column per series) as `png` (`giftload plot`).
pub fn chart(
    text: &str,
    png: &Path,
    title: &str,
    y: &str,
    log: report::LogAxes,
) -> anyhow::Result<()> {
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (x, series) = report::read_table(text)?;
    report::xy_chart(png, title, &x, y, log, &series)?;
    println!("chart: {}", png.display());
    Ok(())
}

/// Every second's p99 (ms) of several runs, side by side: `second`, then one column
/// per run.
#[derive(Default)]
pub struct Series {
    runs: Vec<(String, Vec<(u64, f64)>)>,
}

impl Series {
    pub fn add(&mut self, label: String, s: &Summary) {
        let points = s
            .intervals
            .iter()
            .map(|i| (i.second, i.p99_us as f64 / 1000.0))
            .collect();
        self.runs.push((label, points));
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn text(&self) -> String {
        let mut seconds: Vec<u64> = self
            .runs
            .iter()
            .flat_map(|(_, p)| p.iter().map(|x| x.0))
            .collect();
        seconds.sort_unstable();
        seconds.dedup();
        let mut out = String::from("second");
        for (label, _) in &self.runs {
            let _ = write!(out, "\t{label}");
        }
        out.push('\n');
        for sec in seconds {
            let _ = write!(out, "{sec}");
            for (_, p) in &self.runs {
                match p.iter().find(|x| x.0 == sec) {
                    Some(x) => {
                        let _ = write!(out, "\t{:.1}", x.1);
                    }
                    None => out.push('\t'),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// This process's CPU time (user + system), seconds: giftload's own share of a run.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
