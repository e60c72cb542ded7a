//! The `giftstream` binary: parses the command line and calls the library.

use clap::{Parser, Subcommand};

use giftstream::demo::{self, DemoConfig};
use giftstream::engine::Stamp;

#[derive(Parser)]
#[command(
    name = "giftstream",
    version,
    about = "Gift stream processor for live-streaming platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine in-process on the embedded economy: a seeded synthetic burst,
    /// then throughput, outcomes, leaderboards and the invariant audit. No Redis needed.
    Demo {
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        #[arg(long, default_value_t = 1_000)]
        creators: u64,
        #[arg(long, default_value_t = 5_000_000)]
        gifts: u64,
        /// Share of gifts to the one hot stream, in [0, 1].
        #[arg(long, default_value_t = 0.3)]
        hot_share: f64,
        /// Events per batch.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Threads applying batches (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            users,
            creators,
            gifts,
            hot_share,
            batch,
            workers,
            seed,
            quiet,
        } => {
            let defaults = DemoConfig::default();
            let config = DemoConfig {
                users,
                creators,
                gifts,
                hot_share,
                batch_events: batch,
                workers: workers.unwrap_or(defaults.workers),
                seed,
                progress: !quiet,
            };
            let report = demo::run(&config, Stamp::now())?;
            print!("{}", demo::render(&report, &config));
            anyhow::ensure!(report.audit.is_clean(), "the invariant audit failed");
        }
    }
    Ok(())
}
