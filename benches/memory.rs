//! Memory per wallet (SPEC §4: <= 100 bytes with no history): the resident-set growth
//! of an engine while 1M wallets are funded, with history off and a small id index whose
//! ids expire between batches (a 1 ms horizon, stamps further apart than ids are kept), so the index's
//! own, separately bounded, memory is excluded.
//!
//! Then the idempotency window's cost per remembered event id: the RSS growth while 4M
//! recharges to 1,000 wallets fill a window of 4M entries (history and log off).
//!
//! And a history line's cost: the RSS growth while 100k funded users each fill their
//! history (`engine.history_per_user`, 32) with recharges (log off, the small index).
//!
//! And what a gift that starts a new sender-creator pair leaves behind: the RSS growth
//! while 100k funded users each send one gift to 10 of 10k creators (history and log
//! off): the per-pair totals (creator and stream), the top-K lists and the parts.
//!
//! And a gift on a video (issue #31 feature 6) that starts a new (video, gifter) pair:
//! the RSS growth while the same 100k users, each already a gifter of its creator, send
//! one gift to 10 of 10k videos: the per-pair totals, the videos' top-K lists and parts.
//!
//! And recharge reversals (#31, feature 2): a recharge record's cost (the RSS growth
//! while 1M recharges of 1,000 users are recorded for reversal), and a user in debt's
//! (the growth while 100k users who spent part of a recharge have it reversed: the
//! debts beside the wallets). Every other part keeps one record per shard
//! (`engine.recharge_records_per_shard_max` = 1), so recharges do not count there.
//!
//! And a gift held under an earnings hold (#31, features 3 and 4): the RSS growth while
//! 100k users who already gifted their creator send 10 more gifts each under a 7-day
//! hold — each leaves a record for its reversal (`GiftRecords`: the map entry and the
//! drop queue's) and nothing else that grows (no new pair, history and log off).
//!
//! And a windowed leaderboards' pair (#32 feature 1): the RSS growth of the new-pair
//! gifts above with `engine.windows` on, less with it off, over the (window, target,
//! gifter) pairs held.
//!
//! Run: `cargo bench --bench memory`. Prints bytes per wallet and per id; Linux only
//! (/proc).

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId, ItemId, Purchase,
    Recharge, RechargeReversal, Stamp, StreamId, UserId, VideoGift, VideoId,
};
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicU64, Ordering};

const WALLETS: u64 = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A small id index whose ids expire between batches of [`apply_in_batches`].
fn small_index(config: EngineConfig) -> EngineConfig {
    EngineConfig {
        idempotency_entries_max: 1 << 14,
        idempotency_horizon_ms: 1,
        recharge_records_per_shard_max: 1,
        ..config
    }
}

/// History and log off, the small id index: only what is measured grows.
fn lean() -> EngineConfig {
    small_index(EngineConfig {
        history_per_user: 0,
        keep_log: false,
        ..EngineConfig::default()
    })
}

/// The stamp of the next batch: time only moves forward, across calls too.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1_794_700_800_000);

/// Applies `events` in batches of 1000, as a client would send them, each batch stamped
/// `step_ms` after the one before. Every event must be applied (none refused).
fn apply_in_batches(engine: &Engine, events: impl Iterator<Item = Event>, step_ms: u64) {
    let apply = |batch: &[Event]| {
        let stamp = Stamp(NEXT_STAMP.fetch_add(step_ms, Ordering::Relaxed));
        let outcomes = engine.apply_batch(batch, stamp);
        assert!(outcomes.iter().all(|o| o.seq != 0), "{outcomes:?}");
    };
    let mut batch = Vec::with_capacity(1000);
    for event in events {
        batch.push(event);
        if batch.len() == 1000 {
            apply(&batch);
            batch.clear();
        }
    }
    apply(&batch);
}

/// A step that drops every id of the batch before (the small index's 1 ms horizon plus
/// the seconds ids are kept for clocks ahead).
const EXPIRE_STEP_MS: u64 = 1 + giftstream::engine::ISSUED_AHEAD_MAX_MS + 1;

fn recharge(id: u64, user: u64) -> Event {
    Event::Recharge(Recharge {
        id: EventId(u128::from(id)),
        user: UserId(user),
        coins: 100,
        price: Decimal::new(129, 2),
        currency: Currency::USD,
        package: None.into(),
        channel: Channel::Web,
        paid_ms: 0,
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
    per_new_video_pair(if full { 100_000 } else { 2_000 });
    per_recharge_record(if full { 1 << 20 } else { 16 << 10 });
    per_debtor(if full { 100_000 } else { 2_000 });
    per_held_gift_record(if full { 100_000 } else { 2_000 });
    per_window_pair(if full { 100_000 } else { 2_000 });
}

/// Windowed leaderboards (#32 feature 1, `[engine.windows]` at its default retention):
/// the RSS growth per (window, target, gifter) pair held — the growth of 10 gifts per
/// user to new creators (each a new pair, 8 window pairs: 4 kinds × creator and stream,
/// and more as the hours turn) with windows on, less the same gifts with them off, over
/// the pairs held.
fn per_window_pair(users: u64) {
    const CREATORS: u64 = 10_000;
    const PER_USER: u64 = 10;
    let run = |windows: bool| -> (u64, usize, u64) {
        let mut config = lean();
        config.windows.enabled = windows;
        let engine = Engine::new(Economy::embedded(), config).unwrap();
        apply_in_batches(
            &engine,
            (0..users).map(|u| recharge(u64::MAX - u, CREATORS + u)),
            EXPIRE_STEP_MS,
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
            EXPIRE_STEP_MS,
        );
        let after = rss_bytes();
        (after - before, engine.window_pairs(), users * PER_USER)
    };
    let (off, _, gifts) = run(false);
    let (on, pairs, _) = run(true);
    println!(
        "memory/window-pair: {gifts} gifts (new pairs), {pairs} window pairs held; RSS +{on} bytes windows on, +{off} off = {:.1} bytes per window pair",
        (on as f64 - off as f64) / pairs.max(1) as f64
    );
}

fn per_held_gift_record(users: u64) {
    const CREATORS: u64 = 1_000;
    const PER_USER: u64 = 10;
    let text = giftstream::economy::EMBEDDED_ECONOMY_TOML.replacen(
        "max_gift_count = 9999",
        "max_gift_count = 9999\nearnings_hold_ms = 604800000",
        1,
    );
    let economy = Economy::from_toml_str(&text).expect("a 7-day hold");
    let config = EngineConfig {
        gift_records_per_shard_max: 1 << 22,
        ..lean()
    };
    let engine = Engine::new(economy, config).unwrap();
    let sender = |u: u64| UserId(CREATORS + u);
    let gift = |id: u128, u: u64| {
        Event::Gift(Gift {
            id: EventId(id),
            sender: sender(u),
            creator: CreatorId(u % CREATORS),
            stream: StreamId(u % CREATORS),
            gift: GiftId(0),
            count: 1,
        })
    };
    apply_in_batches(
        &engine,
        (0..users).map(|u| recharge(u64::MAX - u, CREATORS + u)),
        EXPIRE_STEP_MS,
    );
    // Every pair (and its first record) first: below, only records grow.
    apply_in_batches(
        &engine,
        (0..users).map(|u| gift(u128::from(u) | 1 << 100, u)),
        EXPIRE_STEP_MS,
    );
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..users * PER_USER).map(|i| gift(u128::from(i) | 1 << 101, i % users)),
        EXPIRE_STEP_MS,
    );
    let after = rss_bytes();
    let audit = engine.audit();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    let gifts = users * PER_USER;
    let (held, dropped) = engine.gift_records();
    assert_eq!(
        (held as u64, dropped),
        (users + gifts, 0),
        "every gift still held"
    );
    println!(
        "memory/held-gift-record: {} gifts held under a 7-day hold, RSS +{} bytes = {:.1} bytes per record",
        gifts,
        after - before,
        (after - before) as f64 / gifts as f64
    );
}

fn per_recharge_record(records: u64) {
    const USERS: u64 = 1000;
    let config = EngineConfig {
        recharge_records_per_shard_max: 1 << 22,
        ..lean()
    };
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    apply_in_batches(
        &engine,
        (0..USERS).map(|u| recharge(u64::MAX - u, u)),
        EXPIRE_STEP_MS,
    );
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..records).map(|id| recharge(id, id % USERS)),
        EXPIRE_STEP_MS,
    );
    let after = rss_bytes();
    assert_eq!(engine.recharge_records().0, records + USERS);
    println!(
        "memory/recharge-record: {} recharges kept for reversal, RSS +{} bytes = {:.1} bytes per record",
        records,
        after - before,
        (after - before) as f64 / records as f64
    );
}

fn per_debtor(users: u64) {
    let config = EngineConfig {
        recharge_records_per_shard_max: 1 << 22,
        ..lean()
    };
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    // Each user recharges 100 coins and spends 50 on a sticker pack (item code 0).
    apply_in_batches(
        &engine,
        (0..users).flat_map(|u| {
            [
                recharge(u, u),
                Event::Purchase(Purchase {
                    id: EventId(u128::from(u) | 1 << 100),
                    user: UserId(u),
                    item: ItemId(0),
                    count: 1,
                }),
            ]
        }),
        EXPIRE_STEP_MS,
    );
    // The debts are small tables (~20 B a user): without a trim they fit in the heap the
    // cases before freed, and the RSS does not move (the run of 2026-12-05 measured
    // +0 bytes). Freed pages go back to the kernel first, so that they show.
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..users).map(|u| {
            Event::RechargeReversal(RechargeReversal {
                id: EventId(u128::from(u) | 1 << 101),
                user: UserId(u),
                recharge: EventId(u128::from(u)),
            })
        }),
        EXPIRE_STEP_MS,
    );
    let after = rss_bytes();
    let audit = engine.audit();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert_eq!(audit.totals.users_in_debt, users);
    assert_eq!(audit.totals.coins_owed, u128::from(users) * 50);
    println!(
        "memory/user-in-debt: {} users owing coins, RSS +{} bytes = {:.1} bytes per user in debt",
        users,
        after - before,
        (after - before) as f64 / users as f64
    );
}

fn per_new_video_pair(users: u64) {
    const CREATORS: u64 = 10_000;
    const VIDEOS: u64 = 10_000;
    const PER_USER: u64 = 10;
    let engine = Engine::new(Economy::embedded(), lean()).unwrap();
    let sender = |u: u64| UserId(CREATORS + u);
    apply_in_batches(
        &engine,
        (0..users).map(|u| recharge(u64::MAX - u, CREATORS + u)),
        EXPIRE_STEP_MS,
    );
    // Each user already gifted its creator: the video gifts add no creator pair.
    apply_in_batches(
        &engine,
        (0..users).map(|u| {
            Event::Gift(Gift {
                id: EventId(u128::from(u) | 1 << 101),
                sender: sender(u),
                creator: CreatorId(u % CREATORS),
                stream: StreamId(u % CREATORS),
                gift: GiftId(0),
                count: 1,
            })
        }),
        EXPIRE_STEP_MS,
    );
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..users * PER_USER).map(|i| {
            let (user, nth) = (i / PER_USER, i % PER_USER);
            Event::VideoGift(VideoGift {
                id: EventId(u128::from(i) | 1 << 102),
                sender: sender(user),
                creator: CreatorId(user % CREATORS),
                video: VideoId((user * 7919 + nth * 1009) % VIDEOS),
                gift: GiftId(0),
                count: 1,
            })
        }),
        EXPIRE_STEP_MS,
    );
    let after = rss_bytes();
    let audit = engine.audit();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    let gifts = users * PER_USER;
    assert_eq!(audit.totals.coins_received_by_videos, u128::from(gifts));
    println!(
        "memory/new-video-pair-gift: {} gifts on {} videos, each a new (video, gifter) pair, RSS +{} bytes = {:.1} bytes per gift",
        gifts,
        audit.totals.videos,
        after - before,
        (after - before) as f64 / gifts as f64
    );
}

fn per_new_pair(users: u64) {
    const CREATORS: u64 = 10_000;
    const PER_USER: u64 = 10;
    let engine = Engine::new(Economy::embedded(), lean()).unwrap();
    apply_in_batches(
        &engine,
        (0..users).map(|u| recharge(u64::MAX - u, CREATORS + u)),
        EXPIRE_STEP_MS,
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
        EXPIRE_STEP_MS,
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
    let config = small_index(EngineConfig {
        keep_log: false,
        ..EngineConfig::default()
    });
    let lines = config.history_per_user as u64;
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    // The wallets (and each history's first line) first, so that only histories grow.
    apply_in_batches(
        &engine,
        (0..users).map(|u| recharge(u64::MAX - u, u)),
        EXPIRE_STEP_MS,
    );
    let before = rss_bytes();
    apply_in_batches(
        &engine,
        (0..users * (lines - 1)).map(|id| recharge(id, id % users)),
        EXPIRE_STEP_MS,
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
        idempotency_entries_max: (ids + ids / 8) as usize,
        recharge_records_per_shard_max: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    // The wallets first, so that only the window grows below.
    let wallets: Vec<Event> = (0..USERS).map(|u| recharge(u64::MAX - u, u)).collect();
    engine.apply_batch(&wallets, Stamp(1_794_700_800_000));
    let before = rss_bytes();
    // Every id stays (one stamp), so the index is sized with room for uneven shards.
    apply_in_batches(
        &engine,
        (0..ids - USERS).map(|id| recharge(id, id % USERS)),
        0,
    );
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
    apply_in_batches(
        &engine,
        (0..WALLETS).map(|u| recharge(u, u)),
        EXPIRE_STEP_MS,
    );
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
