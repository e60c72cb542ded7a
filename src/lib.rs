//! giftstream: a high-throughput gift stream processor for live-streaming platforms.
//!
//! # Layout
//! - [`economy`]: `economy.toml`, the catalog and money rules, validated.
//! - [`engine`]: the ledger — synchronous, lock-sharded, deterministic; no tokio, no
//!   sockets, no Redis, no clock.
//! - [`config`]: `giftstream.toml` and `GIFTSTREAM_*` overrides.
//! - [`protocol`]: binary frames (bincode format) and their conversion to engine types.
//! - [`client`]: the async, pipelining Rust client of the binary protocol.
//! - [`clock`]: the one place ledger time is read (the engine takes it with the batch).
//! - [`cluster`]: the partition map of a multi-node deployment (who owns which sender).
//! - [`server`]: TCP and HTTP listeners, the one admission path of events, auth, live
//!   feed.
//! - [`node`]: `giftstream serve`'s assembly — recovery, commit path, read model,
//!   snapshots, settlement, listeners, shutdown in order.
//! - [`persist`]: the commit path (group commit, journal trait, durable watermark).
//! - [`telemetry`]: metric names and buckets, Prometheus recorder, tracing setup.
//! - [`demo`]: `giftstream demo`, a seeded burst through the engine in-process.
//!
//! Layers go one way: node → server → persist → engine; protocol/http → server.
//! `src/main.rs` only parses the command line and calls into these modules.

pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod economy;
pub mod engine;
pub mod node;
pub mod persist;
pub mod protocol;
pub mod server;
pub mod telemetry;
