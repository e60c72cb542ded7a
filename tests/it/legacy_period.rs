//! Review 3 of #29 (a helper's attack on fa2878e): the legacy period of ledgers restored
//! from snapshot formats 3-5. Each test has a control beside it (the same sequence on a
//! ledger whose ids are all keyed, or without the edit) that shows the expected answer.

use giftstream::engine::{
    Engine, EngineConfig, EngineState, Outcome, RejectCode, Stamp, Status, UserId,
};
use giftstream::persist::snapshot;

use crate::support::*;

const FIXTURE_5: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/snapshot-format-5.gsnap"
);

// The events the format-5 fixture's ledger applied, all at `NOV`.
use crate::durability::format_2_fixture_events as fixture_events;

fn fixture_5_state() -> EngineState {
    let bytes = std::fs::read(FIXTURE_5).unwrap();
    let path = std::path::Path::new("snapshot-format-5.gsnap");
    snapshot::parse(path, &bytes).unwrap().1
}

fn format_5_ledger(config: EngineConfig) -> Engine {
    Engine::from_state(economy(), config, fixture_5_state()).unwrap()
}

/// A ledger whose ids are all keyed, holding the same events (the control).
fn keyed_ledger() -> (Engine, Vec<Outcome>) {
    let engine = engine();
    let live = engine.apply_batch(&fixture_events(), NOV);
    (engine, live)
}

fn reused() -> Outcome {
    Outcome {
        seq: 0,
        status: Status::Rejected(RejectCode::EventIdReused),
        duplicate: false,
        cap: None,
    }
}

/// Through a snapshot file, as a restart does.
fn through_a_file(engine: &Engine, config: EngineConfig) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = engine.snapshot();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 1).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let (_, state) = snapshot::read(&path).unwrap();
    Engine::from_state(economy(), config, state).unwrap()
}

fn hour() -> EngineConfig {
    EngineConfig {
        idempotency_horizon_ms: 3_600_000,
        ..EngineConfig::default()
    }
}

// ---- 1. legacy_ids_until is not recomputed when the horizon grows -----------------

/// Sequence: the format-5 ledger restarts on fa2878e (horizon 10 min) and writes its
/// format-6 snapshot during the legacy period (legacy_ids_until = its ids' end + 610 s);
/// the next restart raises the horizon to 1 h. The windows keep the unkeyed entries for
/// the new horizon, but `legacy_ids_until` comes from the snapshot unchanged: 20 min
/// after it was first applied (issued_ms inside the 1 h horizon) an exact retry of a
/// snapshot id is not probed, the keyed claim finds nothing and nothing forgotten, and
/// the recharge is APPLIED A SECOND TIME.
#[test]
fn a_legacy_id_is_answered_within_a_horizon_raised_at_a_restart_in_the_legacy_period() {
    let first = format_5_ledger(EngineConfig::default());
    let ledger = through_a_file(&first, hour());
    let issued = ledger.newest_stamp().0;
    let at = Stamp(issued + 20 * 60_000);
    let before = ledger.wallet(UserId(40), at).coins;
    let retry = ledger.apply_issued(&[recharge(0, 40, "coins_7000")], &[issued], at)[0];
    assert!(
        retry.duplicate,
        "an exact retry 20 min after issue, horizon 1 h: {retry:?}"
    );
    assert_eq!(
        ledger.wallet(UserId(40), at).coins,
        before,
        "recharged twice"
    );
}

/// Control: the same ids keyed (a ledger that never was format 5), the same restart
/// with the horizon raised: answered.
#[test]
fn control_a_keyed_id_is_answered_within_a_horizon_raised_at_a_restart() {
    let (first, _) = keyed_ledger();
    let ledger = through_a_file(&first, hour());
    let issued = NOV.0;
    let at = Stamp(issued + 20 * 60_000);
    let retry = ledger.apply_issued(&[recharge(0, 40, "coins_7000")], &[issued], at)[0];
    assert!(retry.duplicate, "{retry:?}");
}

/// Control: the format-5 snapshot loaded straight under the raised horizon (the legacy
/// period computed with it): answered.
#[test]
fn control_a_format_5_ledger_loaded_with_the_raised_horizon_answers() {
    let ledger = format_5_ledger(hour());
    let issued = ledger.newest_stamp().0;
    let at = Stamp(issued + 20 * 60_000);
    let retry = ledger.apply_issued(&[recharge(0, 40, "coins_7000")], &[issued], at)[0];
    assert!(retry.duplicate, "{retry:?}");
}

// ---- 2. the deferred path never probes the unkeyed ids -----------------------------

/// Sequence: on the format-5 ledger, one batch [id 0 with other content (user 41),
/// id 0 exactly as applied (user 40)]. The first is EVENT_ID_REUSED (legacy probe); the
/// second is deferred by SeenIds and answered by a lookup under the KEYED hash only,
/// which holds nothing: EVENT_ID_REUSED for an exact retry, instead of its original
/// outcome. Same for a payout.
#[test]
fn an_exact_retry_of_a_legacy_id_after_other_content_in_its_batch_gets_its_outcome() {
    let (_, live) = keyed_ledger();
    let ledger = format_5_ledger(EngineConfig::default());
    let at = Stamp(ledger.newest_stamp().0 + 1_000);
    let got = ledger.apply_batch(
        &[recharge(0, 41, "coins_7000"), recharge(0, 40, "coins_7000")],
        at,
    );
    assert_eq!(got[0], reused());
    assert!(
        got[1].duplicate && got[1].seq == live[0].seq && got[1].status == live[0].status,
        "the exact retry after a reuse in its batch: {got:?}, applied as {:?}",
        live[0]
    );
    let got = ledger.apply_batch(
        &[
            payout(2000, 7, 20_001, "USD"),
            payout(2000, 7, 20_000, "USD"),
        ],
        at,
    );
    assert_eq!(got[0], reused());
    assert!(
        got[1].duplicate && got[1].seq == live[80].seq,
        "the payout's exact retry: {got:?}"
    );
}

/// Control: the same batches on a keyed ledger.
#[test]
fn control_an_exact_retry_after_other_content_in_its_batch_gets_its_outcome() {
    let (ledger, live) = keyed_ledger();
    let at = Stamp(NOV.0 + 1_000);
    let got = ledger.apply_batch(
        &[recharge(0, 41, "coins_7000"), recharge(0, 40, "coins_7000")],
        at,
    );
    assert_eq!(got[0], reused());
    assert!(got[1].duplicate && got[1].seq == live[0].seq, "{got:?}");
    let got = ledger.apply_batch(
        &[
            payout(2000, 7, 20_001, "USD"),
            payout(2000, 7, 20_000, "USD"),
        ],
        at,
    );
    assert_eq!(got[0], reused());
    assert!(got[1].duplicate && got[1].seq == live[80].seq, "{got:?}");
}

// ---- 3. format 6 changed without a new version -------------------------------------

/// A crash in the legacy period before any format-6 snapshot: the restart loads the
/// format-5 snapshot again (a new secret) and replays the journal tail; the snapshot's
/// ids and the tail's are both answered, in one batch with other events of the sender.
#[test]
fn sound_a_crash_in_the_legacy_period_replays_onto_the_format_5_snapshot() {
    let live = format_5_ledger(EngineConfig::default());
    let at = Stamp(live.newest_stamp().0 + 60_000);
    let tail = [
        recharge(5_000, 40, "coins_100"),
        gift(5_001, 40, 7, "panda", 1),
    ];
    let applied = live.apply_batch(&tail, at);
    assert!(applied.iter().all(|o| o.is_accepted() && !o.duplicate));
    let log = live.drain_log();
    let restarted = format_5_ledger(EngineConfig::default());
    restarted.replay(&log).unwrap();
    assert_eq!(restarted.state_fingerprint(), live.state_fingerprint());
    let later = Stamp(at.0 + 1_000);
    let before = restarted.wallet(UserId(40), later).coins;
    let batch = [
        recharge(0, 40, "coins_7000"),
        tail[0],
        recharge(5_002, 40, "coins_100"),
        tail[1],
    ];
    let got = restarted.apply_batch(&batch, later);
    assert!(
        got[0].duplicate && got[1].duplicate && got[3].duplicate,
        "{got:?}"
    );
    assert!(got[2].is_accepted() && !got[2].duplicate, "{got:?}");
    assert_eq!(restarted.wallet(UserId(40), later).coins, before + 100);
}

/// A shorter horizon at the restart that loads format 5: a retry inside the new horizon
/// is answered (the legacy period is computed after reconfigure).
#[test]
fn sound_a_format_5_ledger_loaded_with_a_shorter_horizon_answers_inside_it() {
    let short = EngineConfig {
        idempotency_horizon_ms: 60_000,
        ..EngineConfig::default()
    };
    let ledger = format_5_ledger(short);
    let issued = ledger.newest_stamp().0;
    let at = Stamp(issued + 59_000);
    let retry = ledger.apply_issued(&[recharge(0, 40, "coins_7000")], &[issued], at)[0];
    assert!(retry.duplicate, "{retry:?}");
}
