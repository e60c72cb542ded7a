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
//! And windowed leaderboards after a simulated day (#32: "memory after a simulated day
//! of uniform traffic at 100k events/s"): the uniform scenario (100k users gifting
//! uniformly to 10k creators, one stream each, at 100k gifts/s) scaled down by `s` in
//! users and rate together (creators stay 10k), so that every window holds the same share
//! of the possible (creator, gifter) pairs as at full scale and the pairs scale by `s`;
//! the clock is accelerated (each batch of 10 simulated seconds is stamped 10 s after the
//! one before). The day starts at 2027-02-01 00:00 UTC, a Monday and a month's first day,
//! so its hour, day, ISO week and month windows all begin with it (24 hour windows, one
//! of each other kind). Every user is funded first for exactly what it will spend, and
//! every gift must be accepted. Every 2 simulated hours it prints the pairs held
//! (`Engine::window_pairs`, checked against the distinct pairs the bench counts itself)
//! and the RSS growth; at the end the RSS growth with `engine.windows` on less off per
//! pair, and the pairs and memory extrapolated to full scale (x 1/s). `cargo bench`: s =
//! 1/1000 (100 users, 100 gifts per simulated second, 8.64M gifts);
//! `GIFTSTREAM_SIMDAY_SCALE_USERS` sets the users (and gifts per simulated second) of
//! that run. `cargo test`: 5 users for 3 simulated hours.
//!
//! And PK battles (#32 feature 2): a (side, gifter) pair's cost — the RSS growth while
//! 100k funded users each send one gift to one of 2,000 streams, all paired in 1,000 live
//! battles (streams 2i and 2i+1), each gift a new (side, gifter) pair, less the growth of
//! the same gifts with no battle held, over the pairs held (no earnings hold: no counted
//! gift ids are kept); and a battle's own cost: the RSS growth while 28,672 battles of two
//! streams each are recorded (`engine.battles_max` raised to them; the battles' tables
//! full, at the top of a doubling), then 32,768 (just after they doubled), with no gifts,
//! over the battles.
//!
//! Run: `cargo bench --bench memory`. Prints bytes per wallet and per id; Linux only
//! (/proc). `cargo bench --bench memory -- simulated-day` runs only the simulated day,
//! `-- battle-gifter` only the battles' cases.

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    BATTLE_LENGTH_MS_MAX, Battle, BattleId, Channel, CreatorId, Engine, EngineConfig, Event,
    EventId, Gift, GiftId, ItemId, Purchase, Recharge, RechargeReversal, Stamp, Status, StreamId,
    UserId, VideoGift, VideoId,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
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
    recharge_coins(id, user, 100)
}

/// One rose (gift 0) from `sender` to `creator`, on the creator's stream (numbered as
/// the creator).
fn rose(id: EventId, sender: UserId, creator: u64) -> Event {
    Event::Gift(Gift {
        id,
        sender,
        creator: CreatorId(creator),
        stream: StreamId(creator),
        gift: GiftId(0),
        count: 1,
    })
}

/// A custom web recharge of `coins` (30 to 2.5M in the embedded economy).
fn recharge_coins(id: u64, user: u64, coins: u64) -> Event {
    Event::Recharge(Recharge {
        id: EventId(u128::from(id)),
        user: UserId(user),
        coins,
        price: Decimal::new(129, 2),
        currency: Currency::USD,
        package: None.into(),
        channel: Channel::Web,
        paid_ms: 0,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs this without it: then every case
    // runs small (a smoke test). `simulated-day` runs only that case; any other argument
    // is a filter we ignore.
    let full = std::env::args().any(|a| a == "--bench");
    let scale_users = std::env::var("GIFTSTREAM_SIMDAY_SCALE_USERS")
        .map(|v| {
            v.parse()
                .expect("GIFTSTREAM_SIMDAY_SCALE_USERS: a number of users")
        })
        .unwrap_or(100);
    let simulated_day = || {
        if full {
            simulated_day(scale_users, scale_users, 24);
        } else {
            simulated_day(5, 5, 3);
        }
    };
    if std::env::args().any(|a| a == "simulated-day") {
        simulated_day();
        return;
    }
    let battles = || {
        per_battle_gifter(if full { 100_000 } else { 2_000 });
        // 28,672 battles fill the battles' tables (32k slots, 64k for their 57,344
        // streams) to the top of a doubling; 32,768 come just after both doubled.
        for battles in if full {
            vec![28_672, 1 << 15]
        } else {
            vec![1 << 10]
        } {
            per_battle(battles);
        }
    };
    if std::env::args().any(|a| a == "battle-gifter") {
        battles();
        return;
    }
    per_wallet();
    per_idempotency_id(if full { 4 << 20 } else { 64 << 10 });
    per_history_line(if full { 100_000 } else { 2_000 });
    per_new_pair(if full { 100_000 } else { 2_000 });
    per_new_video_pair(if full { 100_000 } else { 2_000 });
    per_recharge_record(if full { 1 << 20 } else { 16 << 10 });
    per_debtor(if full { 100_000 } else { 2_000 });
    per_held_gift_record(if full { 100_000 } else { 2_000 });
    per_window_pair(if full { 100_000 } else { 2_000 });
    battles();
    simulated_day();
}

/// Battles of two streams, 2i against 2i+1 for i in `0..battles`, live from the next
/// batch's stamp for the longest window (24 h), recorded in batches of 1000; every one
/// accepted.
fn open_battles(engine: &Engine, battles: u64) {
    let start = NEXT_STAMP.load(Ordering::Relaxed);
    let end = start + BATTLE_LENGTH_MS_MAX;
    apply_in_batches(
        engine,
        (0..battles).map(|i| {
            let streams = [StreamId(2 * i), StreamId(2 * i + 1)];
            Event::Battle(Battle::new(BattleId(i + 1), &streams, start, end).unwrap())
        }),
        EXPIRE_STEP_MS,
    );
    assert_eq!(engine.battles_held(), battles as usize, "every battle held");
}

/// PK battles (#32 feature 2): the RSS growth per (side, gifter) pair held — `users`
/// funded users each send one gift to a stream of 2,000 paired in 1,000 live battles (a
/// new (side, gifter) pair each), less the same gifts with no battle, over the pairs.
fn per_battle_gifter(users: u64) {
    const STREAMS: u64 = 2_000;
    const BATTLES: u64 = STREAMS / 2;
    let run = |battles: bool| -> (u64, u64, usize) {
        let engine = Engine::new(Economy::embedded(), lean()).unwrap();
        apply_in_batches(
            &engine,
            (0..users).map(|u| recharge(u64::MAX - u, STREAMS + u)),
            EXPIRE_STEP_MS,
        );
        if battles {
            open_battles(&engine, BATTLES);
        }
        // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel:
        // what the run before freed does not absorb this one's growth.
        unsafe {
            libc::malloc_trim(0);
        }
        let before = rss_bytes();
        apply_in_batches(
            &engine,
            (0..users).map(|u| {
                let stream = (u * 7919) % STREAMS;
                rose(
                    EventId(u128::from(u) | 1 << 100),
                    UserId(STREAMS + u),
                    stream,
                )
            }),
            EXPIRE_STEP_MS,
        );
        let after = rss_bytes();
        let audit = engine.audit();
        assert!(audit.is_clean(), "{:?}", audit.violations);
        assert_eq!(audit.totals.coins_received_by_creators, u128::from(users));
        // What the battles counted, read as `GET /v1/battles/{id}` reads it: every gift
        // once, each sender a gifter of one side.
        let (mut counted, mut gifters) = (0, 0);
        for id in (1..=BATTLES).filter(|_| battles) {
            let view = engine.battle(BattleId(id), usize::MAX).expect("held");
            for side in view.sides {
                counted += side.gifts;
                gifters += side.top_gifters.len();
            }
        }
        (after - before, counted, gifters)
    };
    let (off, _, _) = run(false);
    let (on, counted, pairs) = run(true);
    assert_eq!(
        (counted, pairs as u64),
        (users, users),
        "every gift counted, each a (side, gifter) pair"
    );
    println!(
        "memory/battle-gifter: {users} gifts to {STREAMS} streams in {BATTLES} live battles, {pairs} (side, gifter) pairs held; RSS +{on} bytes with the battles, +{off} without = {:.1} bytes per (side, gifter) pair",
        (on as f64 - off as f64) / pairs.max(1) as f64
    );
}

/// PK battles (#32 feature 2): the RSS growth per battle held — `battles` battles of two
/// streams each recorded (`engine.battles_max` raised to them), with no gifts.
fn per_battle(battles: u64) {
    let config = EngineConfig {
        battles_max: battles as usize,
        ..lean()
    };
    let engine = Engine::new(Economy::embedded(), config).unwrap();
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let before = rss_bytes();
    open_battles(&engine, battles);
    let after = rss_bytes();
    println!(
        "memory/battle: {battles} battles of two streams held, no gifts, RSS +{} bytes = {:.1} bytes per battle",
        after - before,
        (after - before) as f64 / battles as f64
    );
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
                rose(
                    EventId(u128::from(i) | 1 << 100),
                    UserId(CREATORS + user),
                    creator,
                )
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

/// The uniform scenario's creators (load/scenarios/uniform.toml), one stream each.
const SIMDAY_CREATORS: u64 = 10_000;

/// One gift of the simulated day, drawn as the uniform scenario draws them: a uniform
/// sender (of `users`) and creator; rose 70 %, panda 25 %, universe 5 %; combos of 1
/// (85 %), 10 (12 %) and 99 (3 %). (sender index, creator, gift code, count, coins.)
fn simday_gift(rng: &mut ChaCha8Rng, users: u64) -> (u64, u64, u32, u32, u64) {
    let sender = rng.random_range(0..users);
    let creator = rng.random_range(0..SIMDAY_CREATORS);
    // Codes and costs of the embedded catalog (config/economy.toml).
    let (code, coins) = match rng.random_range(0..100u32) {
        0..70 => (0, 1),
        70..95 => (1, 5),
        _ => (8, 34_999),
    };
    let count = match rng.random_range(0..100u32) {
        0..85 => 1,
        85..97 => 10,
        _ => 99,
    };
    (sender, creator, code, count, coins * u64::from(count))
}

/// Applies `batch` at `stamp`; every event must be accepted. Returns how many were.
fn apply_accepted(engine: &Engine, batch: &[Event], stamp: Stamp) -> u64 {
    let outcomes = engine.apply_batch(batch, stamp);
    let refused = outcomes
        .iter()
        .find(|o| !matches!(o.status, Status::Accepted(_)));
    assert!(refused.is_none(), "refused at {stamp:?}: {refused:?}");
    outcomes.len() as u64
}

/// What one run of the simulated day measured.
struct DayRun {
    rss_growth: u64,
    pairs: u64,
    /// Distinct (creator, gifter) pairs summed over the hour windows, and in the day.
    hour_pairs: u64,
    day_pairs: u64,
    accepted: u64,
    seconds: f64,
}

/// Windowed leaderboards after a simulated day of uniform traffic (#32; module doc):
/// `scale_users` users (the uniform scenario's 100k scaled by s = scale_users / 100k)
/// send `gifts_per_sim_second` gifts per simulated second (100k s at full scale) to 10k
/// creators for `sim_hours` (at most 24) from 2027-02-01 00:00 UTC; the RSS growth with
/// `engine.windows` on (default retention) less off, over the pairs held.
fn simulated_day(scale_users: u64, gifts_per_sim_second: u64, sim_hours: u64) {
    const CREATORS: u64 = SIMDAY_CREATORS;
    /// 2027-02-01 00:00 UTC: a Monday and the first day of a month.
    const DAY0_MS: u64 = 1_801_440_000_000;
    /// Simulated seconds per batch (its gifts share its stamp).
    const BATCH_S: u64 = 10;
    const REPORT_EVERY_S: u64 = 2 * 3600;
    const SEED: u64 = 1;
    /// The largest custom recharge (config/economy.toml's `custom_max_coins`).
    const RECHARGE_MAX: u64 = 2_500_000;
    assert!(
        (1..=24).contains(&sim_hours),
        "one day: its day, week and month windows are one each"
    );
    let users = scale_users;
    let batch_len = gifts_per_sim_second * BATCH_S;
    let batches = sim_hours * 3600 / BATCH_S;
    let gifts = batches * batch_len;
    let scale = users as f64 / 100_000.0;
    println!(
        "memory/simulated-day: {users} users (s = {scale}), {CREATORS} creators, {gifts_per_sim_second} gifts per simulated second, {sim_hours} simulated hours from 2027-02-01T00:00Z: {gifts} gifts, batches of {batch_len} stamped {BATCH_S} s apart"
    );

    // What each user will spend: the same seeded gifts, drawn once before the runs.
    let mut need = vec![0u64; users as usize];
    let mut total_coins = 0u128;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    for _ in 0..gifts {
        let (u, _, _, _, coins) = simday_gift(&mut rng, users);
        need[u as usize] += coins;
        total_coins += u128::from(coins);
    }
    let sender = |u: u64| UserId(CREATORS + u);

    let run = |windows: bool| -> DayRun {
        let label = if windows { "on" } else { "off" };
        let mut config = lean();
        config.windows.enabled = windows;
        // Two batches' ids are live at a time (10 s apart, kept 10 s for clocks ahead).
        config.idempotency_entries_max = config.idempotency_entries_max.max(4 * batch_len as usize);
        let engine = Engine::new(Economy::embedded(), config).unwrap();
        // The fundings, from an hour before the day: what each user will spend, in
        // recharges of at most 2.5M coins, 1,000 a batch.
        let fundings: Vec<Event> = need
            .iter()
            .enumerate()
            .flat_map(|(u, &n)| {
                let recharges = n.div_ceil(RECHARGE_MAX);
                (0..recharges).map(move |k| {
                    let coins = RECHARGE_MAX.min(n - k * RECHARGE_MAX).max(30);
                    (u as u64, k, coins)
                })
            })
            .enumerate()
            .map(|(i, (u, _, coins))| recharge_coins(u64::MAX - i as u64, CREATORS + u, coins))
            .collect();
        for (k, chunk) in fundings.chunks(1000).enumerate() {
            let stamp = Stamp(DAY0_MS - 3_600_000 + k as u64 * EXPIRE_STEP_MS);
            apply_accepted(&engine, chunk, stamp);
        }
        drop(fundings);
        // Which (creator, gifter) pairs the current hour and the day have seen.
        let words = (users * CREATORS).div_ceil(64) as usize;
        let mut hour_seen = vec![u64::MAX; words];
        let mut day_seen = vec![u64::MAX; words];
        day_seen.fill(0);
        let mut batch = Vec::with_capacity(batch_len as usize);
        // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel:
        // what the runs before freed does not absorb this one's growth.
        unsafe {
            libc::malloc_trim(0);
        }
        let before = rss_bytes();
        let started = std::time::Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let (mut hour_pairs, mut day_pairs, mut accepted, mut next_id) = (0u64, 0u64, 0u64, 0u64);
        let mut pairs = 0;
        for b in 0..batches {
            let at_s = b * BATCH_S;
            if at_s.is_multiple_of(3600) {
                hour_seen.fill(0);
            }
            batch.clear();
            for _ in 0..batch_len {
                let (u, creator, code, count, _) = simday_gift(&mut rng, users);
                let bit = u * CREATORS + creator;
                let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
                hour_pairs += u64::from(hour_seen[word] & mask == 0);
                hour_seen[word] |= mask;
                day_pairs += u64::from(day_seen[word] & mask == 0);
                day_seen[word] |= mask;
                batch.push(Event::Gift(Gift {
                    id: EventId(u128::from(next_id) | 1 << 100),
                    sender: sender(u),
                    creator: CreatorId(creator),
                    stream: StreamId(creator),
                    gift: GiftId(code),
                    count,
                }));
                next_id += 1;
            }
            accepted += apply_accepted(&engine, &batch, Stamp(DAY0_MS + at_s * 1000));
            let done_s = at_s + BATCH_S;
            if done_s.is_multiple_of(REPORT_EVERY_S) || b + 1 == batches {
                pairs = engine.window_pairs() as u64;
                // Creator and stream pairs alike (a stream per creator): each hour's, and
                // the day's in its day, week and month windows (all three began with it).
                let expected = if windows {
                    2 * (hour_pairs + 3 * day_pairs)
                } else {
                    0
                };
                assert_eq!(pairs, expected, "window pairs held at {done_s} s");
                let split = if windows {
                    format!(
                        " ({} hour, {} day+week+month)",
                        2 * hour_pairs,
                        6 * day_pairs
                    )
                } else {
                    String::new()
                };
                println!(
                    "memory/simulated-day: windows {label:>3}: {:02}:{:02} simulated, {accepted} gifts applied, {pairs} window pairs held{split}, RSS +{:.1} MB, {:.1} s",
                    done_s / 3600,
                    done_s % 3600 / 60,
                    (rss_bytes() - before) as f64 / 1e6,
                    started.elapsed().as_secs_f64(),
                );
            }
        }
        let rss_growth = rss_bytes() - before;
        let seconds = started.elapsed().as_secs_f64();
        let audit = engine.audit();
        assert!(audit.is_clean(), "{:?}", audit.violations);
        assert_eq!(audit.totals.coins_received_by_creators, total_coins);
        DayRun {
            rss_growth,
            pairs,
            hour_pairs,
            day_pairs,
            accepted,
            seconds,
        }
    };
    let off = run(false);
    let on = run(true);
    assert_eq!(
        (off.accepted, on.accepted),
        (gifts, gifts),
        "every gift accepted"
    );
    let per_pair = (on.rss_growth as f64 - off.rss_growth as f64) / on.pairs.max(1) as f64;
    println!(
        "memory/simulated-day: {gifts} gifts sent, {} accepted (each run, {} coins); {} window pairs held at the end ({} in the {sim_hours} hour windows, {} in the day, week and month windows: {} distinct (creator, gifter) pairs x creator and stream); RSS +{} bytes windows on ({:.1} s), +{} off ({:.1} s) = {per_pair:.1} bytes per window pair",
        on.accepted,
        total_coins,
        on.pairs,
        2 * on.hour_pairs,
        6 * on.day_pairs,
        on.day_pairs,
        on.rss_growth,
        on.seconds,
        off.rss_growth,
        off.seconds,
    );
    let factor = 100_000.0 / users as f64;
    let full_pairs = on.pairs as f64 * factor;
    println!(
        "memory/simulated-day: EXTRAPOLATED (not measured) to full scale, x {factor} (100k users, 100k gifts/s, 10k creators): {full_pairs:.3e} window pairs ({:.3e} hour, {:.3e} day+week+month) x {per_pair:.1} B = {:.0} GB after the day",
        2.0 * on.hour_pairs as f64 * factor,
        6.0 * on.day_pairs as f64 * factor,
        full_pairs * per_pair / 1e9,
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
    let gift = |id: u128, u: u64| rose(EventId(id), sender(u), u % CREATORS);
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
        (0..users).map(|u| rose(EventId(u128::from(u) | 1 << 101), sender(u), u % CREATORS)),
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
            rose(
                EventId(u128::from(i) | 1 << 100),
                UserId(CREATORS + user),
                creator,
            )
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
