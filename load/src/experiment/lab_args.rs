//! The command-line options every experiment shares, and the [`Lab`] they make.

use std::path::PathBuf;

use crate::experiment::Lab;
use crate::harness::Edit;

#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// The giftstream binary (default: `giftstream` beside this giftload, i.e.
    /// target/release/giftstream after `cargo build --release --workspace`).
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// The base server config.
    #[arg(long, default_value = "config/giftstream.toml")]
    pub config: PathBuf,
    /// Where scenario NAMEs are looked up (NAME.toml).
    #[arg(long, default_value = "load/scenarios")]
    pub scenario_dir: PathBuf,
    /// Tables (TSV) go here.
    #[arg(long, default_value = "target/sweep")]
    pub out: PathBuf,
    /// Charts (PNG) go here.
    #[arg(long, default_value = "load/results")]
    pub results: PathBuf,
    /// Seconds per run (default: the experiment's).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// A config edit for every server: section.key=value (a TOML value), or
    /// section.key= to delete the key (an older binary may not know it). Repeatable.
    #[arg(long = "set", value_name = "EDIT")]
    pub edits: Vec<Edit>,
    /// A further argument of every redis-server (e.g. --redis-arg=--auto-aof-rewrite-percentage
    /// --redis-arg=400). Repeatable.
    #[arg(long = "redis-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub redis_args: Vec<String>,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
}

impl LabArgs {
    /// The lab, with `seconds` per run unless `--seconds` says otherwise.
    pub fn lab(&self, seconds: f64) -> anyhow::Result<Lab> {
        let bin = match &self.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(|d| d.join("giftstream"))
                .filter(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from("target/release/giftstream")),
        };
        anyhow::ensure!(
            bin.exists(),
            "{}: no giftstream binary (cargo build --release --workspace, or --bin)",
            bin.display()
        );
        Ok(Lab {
            rt: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?,
            bin,
            config: self.config.clone(),
            scenarios: self.scenario_dir.clone(),
            out: self.out.clone(),
            results: self.results.clone(),
            seconds: self.seconds.unwrap_or(seconds),
            edits: self.edits.clone(),
            redis_args: self.redis_args.clone(),
            progress: !self.quiet,
        })
    }
}
