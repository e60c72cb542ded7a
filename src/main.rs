//! The `giftstream` binary: parses the command line and calls the library.

use clap::{Parser, Subcommand};

mod commands;

use giftstream::demo::{self, DemoConfig};

/// `giftstream --version`: the version and how this binary was built (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GIFTSTREAM_GIT_COMMIT"),
    ", ",
    env!("GIFTSTREAM_RUSTC_VERSION"),
    ", profile ",
    env!("GIFTSTREAM_BUILD_PROFILE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "giftstream",
    version = VERSION,
    about = "Gift stream processor for live-streaming platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the binary protocol and the HTTP/JSON API. Reads GIFTSTREAM_CONFIG
    /// (default config/giftstream.toml) and the GIFTSTREAM_* overrides.
    Serve,
    /// Check the ledger's invariants: rebuild the state as a start would (newest valid
    /// snapshot in GIFTSTREAM_DATA_DIR, then the Redis journal after it) and audit it — coins recharged = in
    /// wallets + spent, diamonds = floor(coins received x share) per creator, paid <=
    /// credited, leaderboards consistent, no event id journaled twice, sequence numbers
    /// strictly increasing; and, when the Redis read model is at the ledger's sequence
    /// number, that its totals and leaderboards equal the ledger's. Exits non-zero on any
    /// violation.
    Audit,
    /// Make FILE (a verified snapshot, e.g. a backup after Redis lost its data) the newest
    /// snapshot in GIFTSTREAM_DATA_DIR, so that the next `serve` starts from it and
    /// replays only the journal after it. With GIFTSTREAM_REDIS_URL: checks that the
    /// journal continues the snapshot (or is empty) and rebuilds the Redis read model
    /// from the snapshot.
    Restore { file: std::path::PathBuf },
    /// The snapshot replica `serve` starts with `snapshot.method = "replica"` (reads its
    /// configuration on stdin; not for running by hand).
    #[command(hide = true)]
    SnapshotReplica,
    /// Check the configuration without starting: the config file, the `GIFTSTREAM_*`
    /// environment overrides, the economy file and the TLS files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect or verify a snapshot file.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
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

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Print the header: version, shards, last sequence number, counts, size, checksum.
    Inspect { file: std::path::PathBuf },
    /// Check everything: header, length, checksum, decoding, and the invariant audit of
    /// the state it holds. Exits non-zero when anything is wrong.
    Verify { file: std::path::PathBuf },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate what `serve` would load: exits non-zero with the wrong key's name.
    /// Connects to nothing (Redis is not checked).
    Check {
        /// The config file (default: GIFTSTREAM_CONFIG, else config/giftstream.toml).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// The economy file (default: GIFTSTREAM_ECONOMY, else the config's
        /// server.economy).
        #[arg(long)]
        economy: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => commands::serve()?,
        Command::Audit => commands::audit()?,
        Command::SnapshotReplica => commands::snapshot_replica()?,
        Command::Snapshot { command } => commands::snapshot(command)?,
        Command::Config {
            command: ConfigCommand::Check { config, economy },
        } => commands::config_check(config.as_deref(), economy.as_deref())?,
        Command::Restore { file } => commands::restore(&file)?,
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
            let report = demo::run(&config, giftstream::clock::now())?;
            print!("{}", demo::render(&report, &config));
            anyhow::ensure!(report.audit.is_clean(), "the invariant audit failed");
        }
    }
    Ok(())
}
