//! Adversarial review of the exactly-once change (issue 29): concrete input sequences
//! that break SPEC §1's idempotency promise, per-sender order, or the ledger's restart.
//!
//! Concurrent batches are modelled deterministically: the server stamps a batch
//! (`Clock::now`, monotonic) BEFORE the engine takes any lock, so a batch stamped
//! earlier can be applied after one stamped later. Two sequential `apply_issued` calls
//! with decreasing stamps are exactly that interleaving.

use giftstream::engine::{
    CreatorId, Effect, Engine, EngineConfig, Event, EventId, Outcome, RejectCode, Stamp, Status,
    UserId,
};

use crate::support::*;

/// The engine's shard hash (`engine::shard_of`), to place ids and users on chosen
/// shards. If the engine's hash changes, the placement asserts below say so.
fn shard_of(id: u64, mask: usize) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask
}

/// The first ids from `from` on that `engine` remembers on id shard `t` (which one
/// depends on the ledger's secret).
fn ids_on(engine: &Engine, t: usize, from: u128, n: usize) -> Vec<u128> {
    (from..)
        .filter(|&i| engine.id_shard_of(EventId(i)) == t)
        .take(n)
        .collect()
}

fn refused(code: RejectCode) -> Outcome {
    Outcome {
        seq: 0,
        status: Status::Rejected(code),
        duplicate: false,
        cap: None,
    }
}

fn config(shards: usize, entries: usize) -> EngineConfig {
    EngineConfig {
        shards,
        idempotency_entries_max: entries,
        ..EngineConfig::default()
    }
}

/// How long the index keeps an id: the horizon plus `ISSUED_AHEAD_MAX_MS`.
/// The longest an id is kept (the horizon, the allowance for clocks ahead, and the
/// epoch the index counts it in): one millisecond later it is forgotten.
fn keep_ms(config: &EngineConfig) -> u64 {
    config.id_kept_max_ms()
}

// ---- F1: a retry inside the horizon is applied twice when stamps go backwards -----

/// A backend whose clock runs `ISSUED_AHEAD_MAX_MS` ahead (allowed) sends R1.
/// Batch B (stamped one ms after R1's id leaves the index) and batch A (the retry of
/// R1, stamped one ms earlier, but locking after B) race. B's claim expires R1's id
/// by B's stamp; A's retry, issued `horizon` ms before A's stamp (inside the horizon,
/// so admitted), finds nothing and is applied again.
#[test]
fn a_retry_inside_the_horizon_is_not_applied_twice_when_a_later_stamped_batch_locks_first() {
    let config = config(1, 1 << 10);
    let keep = keep_ms(&config);
    let engine = Engine::new(economy(), config).unwrap();
    let t0 = NOV.0;
    let issued = t0 + giftstream::engine::ISSUED_AHEAD_MAX_MS; // the backend's clock is ahead
    let r1 = recharge(1, 1, "coins_100");
    let first = engine.apply_issued(&[r1], &[issued], Stamp(t0))[0];
    assert_eq!(first.status, Status::Accepted(Effect::Coins(100)));
    // Batch B, stamped t0 + keep + 1, takes the locks first.
    let b = engine.apply_issued(
        &[recharge(2, 2, "coins_100")],
        &[t0 + keep + 1],
        Stamp(t0 + keep + 1),
    );
    assert!(b[0].is_accepted(), "{b:?}");
    // Batch A, the retry of R1, was stamped t0 + keep (before B) and locks after it:
    // issued `horizon` ago, so inside the horizon.
    let retry = engine.apply_issued(&[r1], &[issued], Stamp(t0 + keep))[0];
    // B's stamp dropped R1's id: the retry is refused (ids that old are gone), or
    // answered; never applied again.
    assert!(
        retry == refused(RejectCode::EventExpired)
            || retry
                == Outcome {
                    duplicate: true,
                    ..first
                },
        "a retry inside the horizon: answered or refused, not applied again: {retry:?}"
    );
    assert_eq!(engine.wallet(UserId(1), NOV).coins, 100, "R1 credited once");
}

/// The same race on two shards: users 1 and 2 on different sender shards, their ids on
/// one id shard. Whatever the live answer, the journal must replay.
#[test]
fn a_retry_racing_a_later_stamped_batch_keeps_the_log_replayable() {
    let shards = 2;
    let config = config(shards, 1 << 10);
    let keep = keep_ms(&config);
    let (u1, u2) = (
        1u64,
        (2..).find(|&u| shard_of(u, 1) != shard_of(1, 1)).unwrap(),
    );
    let engine = Engine::new(economy(), config.clone()).unwrap();
    let ids = ids_on(&engine, 0, 1, 2);
    let t0 = NOV.0;
    let issued = t0 + giftstream::engine::ISSUED_AHEAD_MAX_MS;
    let r1 = recharge(ids[0], u1, "coins_100");
    engine.apply_issued(&[r1], &[issued], Stamp(t0));
    engine.apply_issued(
        &[recharge(ids[1], u2, "coins_100")],
        &[t0 + keep + 1],
        Stamp(t0 + keep + 1),
    );
    engine.apply_issued(&[r1], &[issued], Stamp(t0 + keep));
    let log = engine.drain_log();
    let replayed = Engine::new(economy(), config).unwrap();
    replayed
        .replay(&log)
        .unwrap_or_else(|e| panic!("the journal of a live run must replay: {e}"));
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

// ---- F2: a restart with a larger horizon ---------------------------------------------

/// An event without `issued_ms` is taken as issued when received; sent again after its
/// id left the index it is applied again (the documented weaker guarantee) and
/// journaled twice. An operator then raises `engine.idempotency_horizon_ms` and
/// restarts: replay finds the first copy still "remembered" under the new horizon,
/// answers the second as a retry, and the ledger refuses to start — from the whole
/// journal and from a snapshot + the rest alike.
#[test]
fn a_restart_with_a_larger_horizon_replays_the_journal() {
    let small = EngineConfig {
        idempotency_horizon_ms: 1_000,
        ..config(1, 1 << 10)
    };
    let keep = keep_ms(&small);
    let engine = Engine::new(economy(), small.clone()).unwrap();
    let r1 = recharge(1, 1, "coins_100");
    assert!(engine.apply_batch(&[r1], NOV)[0].is_accepted());
    let (state, mut log) = engine.snapshot();
    let again = engine.apply_batch(&[r1], Stamp(NOV.0 + keep + 1))[0];
    assert!(again.is_accepted() && !again.duplicate, "{again:?}");
    let rest = engine.drain_log();
    log.extend(rest.iter().cloned());
    let larger = EngineConfig {
        idempotency_horizon_ms: 600_000,
        ..small
    };
    let replayed = Engine::new(economy(), larger.clone()).unwrap();
    let whole = replayed.replay(&log);
    let restored = Engine::from_state(economy(), larger, state).unwrap();
    let after_snapshot = restored.replay(&rest);
    assert!(
        whole.is_ok() && after_snapshot.is_ok(),
        "a changed horizon must not make the journal unreplayable: whole log {whole:?}, \
         snapshot + rest {after_snapshot:?}"
    );
}

/// The horizon raised from 1 s to 10 min across a restart: an id the old horizon let go
/// before the snapshot is not remembered, yet a retry issued 2 minutes ago is inside the
/// new horizon and admitted: applied twice.
#[test]
fn a_retry_inside_a_raised_horizon_is_not_applied_twice_after_a_restart() {
    let small = EngineConfig {
        idempotency_horizon_ms: 1_000,
        ..config(1, 1 << 10)
    };
    let keep = keep_ms(&small);
    let engine = Engine::new(economy(), small.clone()).unwrap();
    let t0 = NOV.0;
    let r1 = recharge(1, 1, "coins_100");
    let first = engine.apply_issued(&[r1], &[t0], Stamp(t0))[0];
    assert!(first.is_accepted());
    // Any later event on the id shard lets R1's id go (as the old horizon allows).
    engine.apply_issued(
        &[recharge(2, 2, "coins_100")],
        &[t0 + keep + 1],
        Stamp(t0 + keep + 1),
    );
    let (state, _) = engine.snapshot();
    let larger = EngineConfig {
        idempotency_horizon_ms: 600_000,
        ..small
    };
    let restarted = Engine::from_state(economy(), larger, state).unwrap();
    let retry = restarted.apply_issued(&[r1], &[t0], Stamp(t0 + 120_000))[0];
    assert!(
        retry.duplicate || retry == refused(RejectCode::EventExpired),
        "a retry issued 2 min ago, inside the 10-min horizon: answered or refused, never \
         applied twice; got {retry:?}"
    );
    assert_eq!(
        restarted.wallet(UserId(1), NOV).coins,
        100,
        "R1 credited once"
    );
}

// ---- F3: a full id shard in the middle of a sender's events -------------------------

/// Two id shards of one id each. Id shard 0 is full; a user sends [recharge (id on
/// shard 0), gift (id on shard 1)] in one batch. The recharge is refused UNAVAILABLE
/// (backpressure) but the gift after it is applied — rejected INSUFFICIENT_COINS and
/// recorded for good, so when the client retries the batch once there is room, the
/// recharge is applied and the gift is answered with its recorded rejection. SPEC:
/// "events of one sender are applied in the order received".
#[test]
fn backpressure_never_applies_a_senders_later_event_ahead_of_a_refused_one() {
    let shards = 2;
    let config = config(shards, 2);
    let keep = keep_ms(&config);
    let engine = Engine::new(economy(), config).unwrap();
    let on0 = ids_on(&engine, 0, 1, 2);
    let on1 = ids_on(&engine, 1, 1, 1);
    let t0 = NOV.0;
    // Fill id shard 0.
    assert!(engine.apply_batch(&[recharge(on0[0], 1, "coins_100")], Stamp(t0))[0].is_accepted());
    let batch = [
        recharge(on0[1], 3, "coins_100"),
        gift(on1[0], 3, 2, "rose", 1),
    ];
    let got = engine.apply_batch(&batch, Stamp(t0 + 10));
    assert_eq!(got[0], refused(RejectCode::Unavailable), "{got:?}");
    // The client retries the whole batch once id shard 0 has room (its id expired).
    let again = engine.apply_batch(&batch, Stamp(t0 + keep + 5));
    assert!(again[0].is_accepted(), "{again:?}");
    assert!(
        again[1].is_accepted(),
        "the gift comes after the recharge: refused with it the first time, applied after it \
         now; first answers {got:?}, retry {again:?}"
    );
}

// ---- F4: one id twice in one batch ---------------------------------------------------

/// One id used by two users' recharges in one batch: the first in batch order is the
/// event; the second reuses its id. The engine decides by sender shard index instead.
#[test]
fn of_two_users_events_with_one_id_in_one_batch_the_first_in_batch_order_is_applied() {
    let shards = 4;
    let engine = Engine::new(economy(), config(shards, 1 << 10)).unwrap();
    // A user on a higher sender shard first, one on a lower shard second.
    let (a, b) = (1u64..)
        .flat_map(|a| (1u64..20).map(move |b| (a, b)))
        .find(|&(a, b)| shard_of(a, 3) > shard_of(b, 3))
        .unwrap();
    let got = engine.apply_batch(
        &[
            recharge(0x51, a, "coins_100"),
            recharge(0x51, b, "coins_70"),
        ],
        NOV,
    );
    assert!(
        got[0].is_accepted() && got[1] == refused(RejectCode::EventIdReused),
        "user {a}'s recharge came first in the batch: {got:?}"
    );
}

/// The same across kinds: a payout, then a gift with the payout's id, in one batch.
/// Sender events run before book events, so the gift takes the id.
#[test]
fn a_payout_then_a_gift_with_its_id_in_one_batch_applies_the_payout() {
    let engine = Engine::new(economy(), config(4, 1 << 10)).unwrap();
    engine.apply_batch(
        &[
            custom(0x60, 1, 200_000, "2000"),
            gift(0x61, 1, 2, "universe", 2),
        ],
        NOV,
    );
    let got = engine.apply_batch(
        &[payout(0x70, 2, 20_000, "USD"), gift(0x70, 1, 2, "rose", 1)],
        NOV,
    );
    assert!(
        got[0].is_accepted() && got[1] == refused(RejectCode::EventIdReused),
        "the payout came first in the batch: {got:?}"
    );
    assert_eq!(
        engine.creator(CreatorId(2)).diamonds_available,
        34_999 - 20_000
    );
}

// ---- F5: an id reused after the horizon, replayed shard by shard ---------------------

/// An id is free again once older than the horizon (+ the 60 s allowance). User A (on
/// sender shard 1) uses id X; 11 minutes later user B (on sender shard 0) uses X for
/// another event: accepted, rightly. With no payout, settlement or goal in between, the
/// two are in one replay run, replayed shard by shard: B's X (shard 0) is remembered
/// first, and A's X, stamped 11 minutes EARLIER, finds B's slot "live" (a slot stamped
/// in the future counts as remembered) with other content: EVENT_ID_REUSED, and the
/// ledger refuses to restart. No backwards stamps, no config change, default horizon.
#[test]
fn an_id_reused_after_the_horizon_on_a_lower_shard_keeps_the_log_replayable() {
    let shards = 2;
    let config = config(shards, 1 << 10);
    let keep = keep_ms(&config);
    let a = (1u64..).find(|&u| shard_of(u, 1) == 1).unwrap();
    let b = (1u64..).find(|&u| shard_of(u, 1) == 0).unwrap();
    let engine = Engine::new(economy(), config.clone()).unwrap();
    let x = 0xC0FFEE;
    assert!(engine.apply_batch(&[recharge(x, a, "coins_100")], NOV)[0].is_accepted());
    let later = engine.apply_batch(&[recharge(x, b, "coins_70")], Stamp(NOV.0 + keep + 1))[0];
    assert!(
        later.is_accepted(),
        "past the horizon the id is free: {later:?}"
    );
    let log = engine.drain_log();
    let replayed = Engine::new(economy(), config).unwrap();
    replayed
        .replay(&log)
        .unwrap_or_else(|e| panic!("the journal of a live run must replay: {e}"));
    assert_eq!(replayed.state_fingerprint(), engine.state_fingerprint());
}

// ---- F6: ids migrated from a format-2 snapshot ----------------------------------------

/// The format-2 fixture (ids 0..20: recharges of users 40..=44, 7000 coins; default
/// config, 4 shards) loads with its ids fingerprinted UNKNOWN, which match ANY content.
/// For the first horizon after the upgrade, issue 29's defect 3 is back, worse: user
/// U (on another sender shard than user 40) recharges with id 0 and gets user 40's
/// balance back as `duplicate: true`, and U's paid recharge is dropped. The legacy
/// windows were per routing shard: an id from sender shard 0's window can only be a
/// retry of an event routed to sender shard 0.
#[test]
fn an_id_from_a_format_2_snapshot_is_not_answered_to_another_shards_user() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-2.gsnap"
    ))
    .unwrap();
    let path = std::path::Path::new("snapshot-format-2.gsnap");
    let (_, state) = giftstream::persist::snapshot::parse(path, &bytes).unwrap();
    let loaded = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    let before = loaded.wallet(UserId(40), NOV).coins;
    let u = (100u64..)
        .find(|&u| shard_of(u, 3) != shard_of(40, 3))
        .unwrap();
    let got = loaded.apply_batch(&[recharge(0, u, "coins_7000")], Stamp(NOV.0 + 1_000))[0];
    assert_eq!(
        got,
        refused(RejectCode::EventIdReused),
        "user {u} reused user 40's id 0: refused, revealing nothing of user 40's outcome"
    );
    assert_eq!(loaded.wallet(UserId(40), NOV).coins, before);
    assert_eq!(loaded.wallet(UserId(u), NOV).coins, 0);
}

// ---- Review: a restart onto a clock behind the journal's stamps -----------------------

/// The journal was written while the clock ran an hour ahead; the ledger restarts on a
/// correct clock. An id claimed now is in an epoch the index already counts as past the
/// horizon: it used to be forgotten on arrival, and its exact retry (no `issued_ms`)
/// 20 s later was applied again. Now the first attempt is refused (`EVENT_EXPIRED`, the
/// client retries later) or answered; never applied twice.
#[test]
fn after_a_restart_behind_the_journals_stamps_a_retry_is_never_applied_twice() {
    let config = EngineConfig {
        idempotency_horizon_ms: 60_000,
        ..config(1, 1 << 10)
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    engine.apply_batch(&[recharge(1, 1, "coins_100")], Stamp(NOV.0 + 3_600_000));
    let log = engine.drain_log();
    let restarted = Engine::new(economy(), config).unwrap();
    restarted.replay(&log).unwrap();
    let r = recharge(2, 2, "coins_100");
    let first = restarted.apply_batch(&[r], NOV)[0];
    let retry = restarted.apply_batch(&[r], Stamp(NOV.0 + 20_000))[0];
    let applied = [first, retry]
        .iter()
        .filter(|o| o.is_accepted() && !o.duplicate)
        .count();
    assert!(applied <= 1, "applied twice: {first:?}, {retry:?}");
    assert!(restarted.wallet(UserId(2), NOV).coins <= 100);
}

// ---- Review: ids crafted to share the index's key ----------------------------------

/// Review finding (#29): the index keeps 48 bits of an id's hash, and the hash was not
/// keyed: a second id with a remembered id's key was easy to make, and the same user's
/// second paid recharge of the same package under it was answered as the first one's
/// duplicate: paid twice, credited once. Under the ledger's secret they are two events.
#[test]
fn two_ids_crafted_to_share_the_unkeyed_key_are_two_events() {
    let (a, b) = unkeyed_key_twins(|s1, s2| s1 == s2);
    let engine = engine();
    let first = engine.apply_batch(&[recharge(a, 1, "coins_100")], NOV)[0];
    let second = engine.apply_batch(&[recharge(b, 1, "coins_100")], Stamp(NOV.0 + 1_000))[0];
    assert!(first.is_accepted() && !first.duplicate, "{first:?}");
    assert!(second.is_accepted() && !second.duplicate, "{second:?}");
    assert_ne!(first.seq, second.seq);
    assert_eq!(engine.wallet(UserId(1), NOV).coins, 200);
    // Both stay remembered: each retry gets its own outcome.
    let retried = engine.apply_batch(
        &[recharge(a, 1, "coins_100"), recharge(b, 1, "coins_100")],
        Stamp(NOV.0 + 2_000),
    );
    assert_eq!((retried[0].seq, retried[1].seq), (first.seq, second.seq));
    assert!(retried.iter().all(|o| o.duplicate));
}

/// Two ledgers file one id under different keys and shards: a client that learns where
/// its ids land on one ledger (by timing, by filling a shard) learns nothing of another.
#[test]
fn each_ledger_hashes_ids_under_its_own_secret() {
    let config = config(64, 1 << 12);
    let (x, y) = (
        Engine::new(economy(), config.clone()).unwrap(),
        Engine::new(economy(), config).unwrap(),
    );
    let differ = (1..=64u128)
        .filter(|&i| x.id_shard_of(EventId(i)) != y.id_shard_of(EventId(i)))
        .count();
    assert!(differ > 32, "only {differ} of 64 ids change shards");
}

// ---- Review 2 (helper attack on the keyed index) ------------------------------------

/// Two ids with one unkeyed 48-bit key (`IdHash::unkeyed` is invertible): the second
/// id's high word is one XOR away from the first's. `pick` chooses the second's low word
/// by the two ids' full 16 shard bits.
fn unkeyed_key_twins(pick: impl Fn(u64, u64) -> bool) -> (u128, u128) {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let inner = |lo: u64| mix(lo.wrapping_add(0x9E37_79B9_7F4A_7C15));
    let shard = |hi: u64, lo: u64| ((hi ^ lo).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & 0xFFFF;
    let (hi1, lo1) = (0x5f0c_6c1e_0000_4000u64, 1u64);
    let (hi2, lo2) = (2..)
        .map(|lo2| (hi1 ^ inner(lo1) ^ inner(lo2), lo2))
        .find(|&(hi2, lo2)| pick(shard(hi1, lo1), shard(hi2, lo2)))
        .unwrap();
    (
        u128::from(hi1) << 64 | u128::from(lo1),
        u128::from(hi2) << 64 | u128::from(lo2),
    )
}

/// The ledger of the format-5 fixture (every ledger that ran the build before format 6).
fn format_5_ledger() -> Engine {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-5.gsnap"
    ))
    .unwrap();
    let path = std::path::Path::new("snapshot-format-5.gsnap");
    let (_, state) = giftstream::persist::snapshot::parse(path, &bytes).unwrap();
    Engine::from_state(economy(), EngineConfig::default(), state).unwrap()
}

/// Review 2, A1: a ledger restored from a format-5 snapshot hashed ids unkeyed for ever
/// (format 6 wrote `None` back), so #29's attack still worked on it a day later: the
/// second paid recharge under a crafted id was answered as the first's duplicate. Now
/// it files new ids under a new secret (and looks under the unkeyed hash only while the
/// snapshot's ids may be remembered).
#[test]
fn a_format_5_ledger_files_new_ids_under_a_secret() {
    let (a, b) = unkeyed_key_twins(|s1, s2| s1 == s2);
    let ledger = format_5_ledger();
    let day = Stamp(NOV.0 + 86_400_000);
    let first = ledger.apply_batch(&[recharge(a, 7_000, "coins_100")], day)[0];
    let second = ledger.apply_batch(&[recharge(b, 7_000, "coins_100")], Stamp(day.0 + 1_000))[0];
    assert!(first.is_accepted() && !first.duplicate, "{first:?}");
    assert!(
        second.is_accepted() && !second.duplicate,
        "paid twice, credited once: {second:?}"
    );
    assert_eq!(ledger.wallet(UserId(7_000), day).coins, 200);
}

/// A2: on such a ledger, two crafted ids with one key and one id shard (under the
/// shard mask) but other high shard bits, in one batch with the same content, make the
/// second's claim find the first's pending entry (`Verdict::SameAsEarlier`), and the
/// lookup of the earlier outcome by the full 64-bit hash finds nothing: a panic in
/// `apply_issued` after the first event was applied. Its id then stays pending for
/// good: every later retry of it panics the same way, and every snapshot of the live
/// engine panics ("no id is pending at a cut", window.rs).
#[test]
fn crafted_twins_in_one_batch_do_not_panic_a_format_5_ledger() {
    let mask = u64::from(EngineConfig::default().shards as u32 - 1);
    let (a, b) = unkeyed_key_twins(|s1, s2| s1 & mask == s2 & mask && s1 != s2);
    let ledger = format_5_ledger();
    let at = Stamp(NOV.0 + 86_400_000);
    let batch = [
        recharge(a, 7_001, "coins_100"),
        recharge(b, 7_001, "coins_100"),
    ];
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ledger.apply_batch(&batch, at)
    }));
    let outcomes = got.expect("apply_batch panicked");
    assert!(outcomes[0].is_accepted(), "{outcomes:?}");
}

/// A3: f3f73eb's reconfigure files every id of the newest epoch at the START of that
/// epoch (`IdWindow::newest` is an epoch start, not the newest stamp). A restart with a
/// shorter horizon (1 h -> 10 min) then keeps the last epoch's ids up to one old epoch
/// (56 s) less than the new horizon allows: an exact retry, issued 590 s before (inside
/// the 600 s horizon), is applied a second time.
#[test]
fn a_restart_with_a_shorter_horizon_keeps_the_last_epochs_ids_for_the_horizon() {
    let hour = EngineConfig {
        shards: 1,
        idempotency_horizon_ms: 3_600_000,
        ..EngineConfig::default()
    };
    let ten_min = EngineConfig {
        idempotency_horizon_ms: 600_000,
        ..hour.clone()
    };
    let epoch = (3_600_000 + giftstream::engine::ISSUED_AHEAD_MAX_MS) / 64;
    let start = (NOV.0 / epoch + 1) * epoch;
    let s = start + epoch - 500; // late in its epoch
    let engine = Engine::new(economy(), hour).unwrap();
    let r: Event = recharge(9, 9, "coins_100");
    let first = engine.apply_issued(&[r], &[s], Stamp(s))[0];
    assert!(first.is_accepted() && !first.duplicate);
    let (state, _) = engine.snapshot();
    let restarted = Engine::from_state(economy(), ten_min, state).unwrap();
    assert!(
        restarted.newest_stamp().0 <= s,
        "the clock starts at or before now"
    );
    let t = s + 590_000; // 590 s after issue: inside the 600 s horizon
    let retry = restarted.apply_issued(&[r], &[s], Stamp(t))[0];
    assert!(
        retry.duplicate && retry.seq == first.seq,
        "an exact retry 590 s after issue, horizon 600 s: {retry:?}"
    );
    assert_eq!(restarted.wallet(UserId(9), Stamp(t)).coins, 100);
}

/// The same sequence without the horizon edit: answered (the control of the test above).
#[test]
fn a_restart_with_the_same_horizon_answers_a_retry_late_in_it() {
    let hour = EngineConfig {
        shards: 1,
        idempotency_horizon_ms: 3_600_000,
        ..EngineConfig::default()
    };
    let epoch = (3_600_000 + giftstream::engine::ISSUED_AHEAD_MAX_MS) / 64;
    let s = (NOV.0 / epoch + 2) * epoch - 500;
    let engine = Engine::new(economy(), hour.clone()).unwrap();
    let r: Event = recharge(9, 9, "coins_100");
    engine.apply_issued(&[r], &[s], Stamp(s));
    let (state, _) = engine.snapshot();
    let restarted = Engine::from_state(economy(), hour, state).unwrap();
    let retry = restarted.apply_issued(&[r], &[s], Stamp(s + 3_590_000))[0];
    assert!(retry.duplicate, "{retry:?}");
}
