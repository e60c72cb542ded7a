//! Memory per wallet (SPEC §4: <= 100 bytes with no history): the resident-set growth
//! of an engine while 1M wallets are funded, with history off and an idempotency window
//! of one entry per shard (so the window's own, separately bounded, memory is excluded).
//!
//! Run: `cargo bench --bench memory`. Prints bytes per wallet; Linux only (/proc).

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{Channel, Engine, EngineConfig, Event, EventId, Recharge, Stamp, UserId};
use rust_decimal::Decimal;

const WALLETS: u64 = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we ignore.
    let config = EngineConfig {
        history_per_user: 0,
        keep_log: false,
        idempotency_entries_max: 16,
        ..EngineConfig::default()
    };
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    let before = rss_bytes();
    let mut batch = Vec::with_capacity(1000);
    for u in 0..WALLETS {
        batch.push(Event::Recharge(Recharge {
            id: EventId(u128::from(u)),
            user: UserId(u),
            coins: 100,
            price: Decimal::new(129, 2),
            currency: Currency::USD,
            package: None,
            channel: Channel::Web,
        }));
        if batch.len() == 1000 {
            engine.apply_batch(&batch, Stamp(1_794_700_800_000));
            batch.clear();
        }
    }
    let after = rss_bytes();
    let audit = engine.audit();
    assert_eq!(audit.totals.wallets, WALLETS);
    println!(
        "memory/wallet: {} wallets, RSS +{} bytes = {:.1} bytes per wallet",
        WALLETS,
        after - before,
        (after - before) as f64 / WALLETS as f64
    );
}
