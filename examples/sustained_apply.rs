//! `apply/uniform` of `benches/engine.rs` run end to end instead of under criterion:
//! the same funded ledger (1M wallets) and seeded uniform gifts, 3,000 batches of 1,000
//! applied back to back (the log drained after each), timed as a whole, with a count of
//! the outcomes (so two builds can be checked to do the same work). Used to compare
//! builds side by side where criterion's per-batch figure and a sustained run disagree
//! (docs/bench-log/2026-12-05-keyed-id-hash.txt).
//!
//! ```sh
//! cargo run --release --example sustained_apply
//! SUSTAINED_PREGEN=1 cargo run --release --example sustained_apply   # inputs cold
//! ```
use std::collections::BTreeMap;

use giftstream::engine::Event;

#[path = "../benches/common/uniform.rs"]
mod uniform;
use uniform::*;

fn main() {
    let engine = funded_engine(base_config());
    let mut gifts = Gifts::new(1, false);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    // SUSTAINED_PREGEN=1: every batch generated before the clock starts (cold in the
    // caches when applied, as criterion's `iter_batched` with `LargeInput` has them).
    let pregen = std::env::var_os("SUSTAINED_PREGEN").is_some();
    let mut ready: std::collections::VecDeque<Vec<Event>> = if pregen {
        (0..3000).map(|_| gifts.batch()).collect()
    } else {
        Default::default()
    };
    let t = std::time::Instant::now();
    for _ in 0..3000 {
        let batch = ready.pop_front().unwrap_or_else(|| gifts.batch());
        for o in engine.apply_batch(&batch, next_stamp()) {
            *counts
                .entry(
                    format!("{:?} dup={}", o.status, o.duplicate)
                        .chars()
                        .take(40)
                        .collect(),
                )
                .or_default() += 1;
        }
        engine.drain_log();
    }
    println!("{:?} in {:?}", counts, t.elapsed());
}
