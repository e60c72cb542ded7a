//! Memory per wallet (SPEC §4: <= 100 bytes with no history): the resident-set growth
//! of an engine while 1M wallets are funded, with history off and an idempotency window
//! of one entry per shard (so the window's own, separately bounded, memory is excluded).
//!
//! Then the idempotency window's cost per remembered event id: the RSS growth while 4M
//! recharges to 1,000 wallets fill a window of 4M entries (history and log off).
//!
//! And a history line's cost: the RSS growth while 100k funded users each fill their
//! history (`engine.history_per_user`, 32) with recharges (log off, window of 16 ids).
//!
//! And what a gift that starts a new sender-creator pair leaves behind: the RSS growth
//! while 100k funded users each send one gift to 10 of 10k creators (history and log
//! off): the per-pair totals (creator and stream), the top-K lists and the parts.
//!
//! Run: `cargo bench --bench memory`. Prints bytes per wallet and per id; Linux only
//! (/proc).

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId, Recharge, Stamp,
    StreamId, UserId,
};
use rust_decimal::Decimal;

const WALLETS: u64 = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// History and log off, a window of 16 ids: only what is measured grows.
fn lean() -> EngineConfig {
    EngineConfig {
        history_per_user: 0,
        keep_log: false,
        idempotency_entries_max: 16,
        ..EngineConfig::default()
    }
}

/// Applies `events` in batches of 1000, as a client would send them.
fn apply_in_batches(engine: &Engine, events: impl Iterator<Item = Event>) {
    let mut batch = Vec::with_capacity(1000);
    for event in events {
        batch.push(event);
        if batch.len() == 1000 {
            engine.apply_batch(&batch, Stamp(1_794_700_800_000));
            batch.clear();
        }
    }
    engine.apply_batch(&batch, Stamp(1_794_700_800_000));
}

fn recharge(id: u64, user: u64) -> Event {
    Event::Recharge(Recharge {
        id: EventId(u128::from(id)),
        user: UserId(user),
        coins: 100,
        price: Decimal::new(129, 2),
        currency: Currency::USD,
        package: None,
        channel: Channel::Web,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs this without it: then the window
    // part runs small (a smoke test). Any other argument is a filter we ignore.
    let full = std::env::args().any(|a| a == "--bench");
    per_wallet();
    per_idempotency_id(if full { 4 << 20 } else { 64 << 10 });
    per_history_line(if full { 100_000 } else { 2_000 });
    per_new_pair(if full { 100_000 } else { 2_000 });
}

fn per_new_pair(users: u64) {
    const CREATORS: u64 = 10_000;
    const PER_USER: u64 = 10;
    let engine = Engine::new(Economy::embedded(), lean()).unwrap();
    apply_in_batches(
        &engine,
        (0..users).map(|u| recharge(u64::MAX - u, CREATORS + u)),
    );
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..users * PER_USER).map(|i| {
            let (user, nth) = (i / PER_USER, i % PER_USER);
            let creator = (user * 7919 + nth * 1009) % CREATORS;
            Event::Gift(Gift {
                id: EventId(u128::from(i) | 1 << 100),
                sender: UserId(CREATORS + user),
                creator: CreatorId(creator),
                stream: StreamId(creator),
                gift: GiftId(0),
                count: 1,
            })
        }),
    );
    let after = rss_bytes();
    let audit = engine.audit();
    assert!(audit.is_clean());
    let gifts = users * PER_USER;
    // Every gift accepted (a rose costs 1 coin).
    assert_eq!(audit.totals.coins_received_by_creators, u128::from(gifts));
    println!(
        "memory/new-pair-gift: {} gifts, each a new sender-creator pair, RSS +{} bytes = {:.1} bytes per gift",
        gifts,
        after - before,
        (after - before) as f64 / gifts as f64
    );
}

fn per_history_line(users: u64) {
    let config = EngineConfig {
        keep_log: false,
        idempotency_entries_max: 16,
        ..EngineConfig::default()
    };
    let lines = config.history_per_user as u64;
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    // The wallets (and each history's first line) first, so that only histories grow.
    apply_in_batches(&engine, (0..users).map(|u| recharge(u64::MAX - u, u)));
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..users * (lines - 1)).map(|id| recharge(id, id % users)),
    );
    let after = rss_bytes();
    let grown = users * (lines - 1);
    println!(
        "memory/history-line: {} users x {} lines, RSS +{} bytes for the last {} = {:.1} bytes per line",
        users,
        lines,
        after - before,
        grown,
        (after - before) as f64 / grown as f64
    );
}

fn per_idempotency_id(ids: u64) {
    const USERS: u64 = 1000;
    let config = EngineConfig {
        history_per_user: 0,
        keep_log: false,
        idempotency_entries_max: ids as usize,
        ..EngineConfig::default()
    };
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    // The wallets first, so that only the window grows below.
    let wallets: Vec<Event> = (0..USERS).map(|u| recharge(u64::MAX - u, u)).collect();
    engine.apply_batch(&wallets, Stamp(1_794_700_800_000));
    let before = rss_bytes();
    apply_in_batches(&engine, (0..ids - USERS).map(|id| recharge(id, id % USERS)));
    let after = rss_bytes();
    println!(
        "memory/idempotency-id: {} ids remembered, RSS +{} bytes = {:.1} bytes per id",
        ids,
        after - before,
        (after - before) as f64 / ids as f64
    );
}

fn per_wallet() {
    let engine = Engine::new(Economy::embedded(), lean()).unwrap();
    let before = rss_bytes();
    apply_in_batches(&engine, (0..WALLETS).map(|u| recharge(u, u)));
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
