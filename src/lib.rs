//! giftstream: a high-throughput gift stream processor for live-streaming platforms.
//!
//! # Layout
//! - [`economy`]: `economy.toml`, the catalog and money rules, validated.
//! - [`engine`]: the ledger — synchronous, lock-sharded, deterministic; no tokio, no
//!   sockets, no Redis, no clock.
//! - [`demo`]: `giftstream demo`, a seeded burst through the engine in-process.
//!
//! `src/main.rs` only parses the command line and calls into these modules.

pub mod demo;
pub mod economy;
pub mod engine;
