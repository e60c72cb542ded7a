//! Tests of the id index: packing, bounds, horizons, reconfiguration, formats.

use super::*;
use crate::engine::event::EventId;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::HashMap;

fn outcome(seq: u64) -> Outcome {
    Outcome {
        seq,
        status: Status::Accepted(Effect::Stored),
        duplicate: false,
        cap: None,
    }
}

const FP: EventFingerprint = EventFingerprint(7);

/// The hash of id `i` (the unkeyed one: these tests craft bucket collisions).
fn hid(i: u128) -> IdHash {
    IdHash::unkeyed(EventId(i))
}

/// A live claim, settled at once (`since` = the stamp: no allowance for clocks ahead).
fn insert(w: &mut IdWindow, id: u128, seq: u64, stamp: u64) -> Claim {
    let claim = w.claim(hid(id), FP, 0, Stamp(stamp), stamp);
    if claim == Claim::Fresh {
        w.settle(hid(id), outcome(seq));
    }
    claim
}

#[test]
fn an_entry_is_20_bytes() {
    assert_eq!(SLOTS * WORDS * 4, 80);
    assert_eq!(KEY_BITS + CHECK_BITS + 8 + 3 + SEQ_BITS, 128);
    let w = IdWindow::new(940_000, 1_000);
    assert_eq!(w.table.len() * 4, 20_000_000, "1M slots of 20 bytes");
}

#[test]
fn every_outcome_kind_round_trips_through_a_snapshot() {
    use crate::protocol::{decode_serde, encode_serde};
    let mut statuses = vec![
        Status::Accepted(Effect::Coins(0)),
        Status::Accepted(Effect::Coins(u64::from(u32::MAX))),
        Status::Accepted(Effect::Coins(u64::MAX)),
        Status::Accepted(Effect::Stored),
        Status::Accepted(Effect::Settled { credited: 7 }),
        Status::Accepted(Effect::Settled { credited: 1 << 40 }),
        Status::Accepted(Effect::PaidOut {
            diamonds_available: 3,
            value: Decimal::new(12_345, 2),
        }),
    ];
    statuses.extend(RejectCode::ALL.iter().map(|&c| Status::Rejected(c)));
    let mut w = IdWindow::new(statuses.len(), 1_000);
    let mut expected = Vec::new();
    for (i, &status) in statuses.iter().enumerate() {
        // Sequence numbers near the epoch's base and far from it (those go wide).
        let seq = if i % 2 == 0 {
            1_000 + i as u64
        } else {
            u64::MAX / 2 + i as u64
        };
        let cap = match status {
            // Every cap a BUDGET_EXCEEDED can name, in turn.
            Status::Rejected(code) => BudgetCap::of(code, i as u64 % 6),
            Status::Accepted(_) => None,
        };
        let o = Outcome {
            seq,
            status,
            duplicate: false,
            cap,
        };
        let id = hid(u128::MAX - i as u128);
        w.remember(id, FP, o, Stamp(i as u64));
        expected.push((id, o));
    }
    let read: IdWindow = decode_serde(&encode_serde(&w).unwrap()).unwrap();
    for window in [&w, &read] {
        assert_eq!(window.len(), expected.len());
        for &(id, o) in &expected {
            assert_eq!(window.lookup(id, FP, 0, Stamp(100)), Some(o));
        }
    }
    assert_eq!(w.canonical(Stamp(100)), read.canonical(Stamp(100)));
    assert!(!w.wide.is_empty() && w.wide.len() < expected.len());
}

#[test]
fn a_full_window_refuses_new_ids_and_never_forgets_a_young_one() {
    // A 1,000 ms horizon: 15 ms epochs; an id counts as stamped at its epoch's end.
    let mut w = IdWindow::new(2, 1_000);
    assert_eq!(insert(&mut w, 1, 1, 100_000), Claim::Fresh);
    assert_eq!(insert(&mut w, 2, 2, 100_010), Claim::Fresh);
    assert_eq!(insert(&mut w, 3, 3, 100_020), Claim::Full);
    assert_eq!(
        w.claim(hid(1), FP, 0, Stamp(101_004), 0),
        Claim::Retry(Some(outcome(1))),
        "still remembered when full, up to its epoch's end (100,004) + the horizon"
    );
    // Past the horizon of id 1, a new id takes its place.
    assert_eq!(insert(&mut w, 3, 3, 101_010), Claim::Fresh);
    assert_eq!(w.get(hid(1), Stamp(101_010)), None);
    assert_eq!(w.get(hid(2), Stamp(101_010)), Some(outcome(2)));
    assert_eq!(w.len(), 2);
    assert_eq!(w.forgot_through, Stamp(100_004));
}

#[test]
fn an_event_as_old_as_a_dropped_id_is_refused() {
    let mut w = IdWindow::new(4, 1_000);
    insert(&mut w, 1, 1, 100_000);
    insert(&mut w, 2, 2, 102_000); // drops id 1 (its epoch ends at 100,004)
    // A batch stamped before the drop, applied after it: it may be id 1's retry.
    assert_eq!(
        w.claim(hid(1), FP, 0, Stamp(100_500), 100_000),
        Claim::Forgotten
    );
    assert_eq!(
        w.claim(hid(3), FP, 0, Stamp(102_000), 100_005),
        Claim::Fresh
    );
}

#[test]
fn other_content_under_a_remembered_id_is_a_reuse() {
    let mut w = IdWindow::new(4, 1_000);
    insert(&mut w, 1, 1, 0);
    assert_eq!(
        w.claim(hid(1), EventFingerprint(8), 0, Stamp(5), 0),
        Claim::Reused
    );
    // An id from an old snapshot matches any content routed where it was kept.
    w.remember(hid(2), EventFingerprint::legacy(3), outcome(2), Stamp(0));
    assert_eq!(
        w.claim(hid(2), EventFingerprint(9), 3, Stamp(5), 0),
        Claim::Retry(Some(outcome(2)))
    );
    assert_eq!(
        w.claim(hid(2), EventFingerprint(9), 4, Stamp(5), 0),
        Claim::Reused
    );
}

#[test]
fn replay_keeps_the_later_entry_of_a_reused_id_in_any_order() {
    let mut a = IdWindow::new(4, 100);
    a.remember(hid(1), FP, outcome(1), Stamp(0));
    a.remember(hid(1), FP, outcome(5), Stamp(500));
    let mut b = IdWindow::new(4, 100);
    b.remember(hid(1), FP, outcome(5), Stamp(500));
    b.remember(hid(1), FP, outcome(1), Stamp(0));
    assert_eq!(a.get(hid(1), Stamp(500)), Some(outcome(5)));
    assert_eq!(b.get(hid(1), Stamp(500)), Some(outcome(5)));
    assert_eq!(a.canonical(Stamp(500)), b.canonical(Stamp(500)));
}

#[test]
fn a_window_fills_to_its_bound_and_answers_every_id() {
    let n = 100_000;
    let mut w = IdWindow::new(n, 60_000);
    for i in 0..n as u128 {
        let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        assert_eq!(insert(&mut w, id, i as u64 + 1, 1_000), Claim::Fresh);
    }
    assert_eq!(insert(&mut w, u128::MAX, 0, 1_000), Claim::Full);
    assert!(w.stash.len() < 16, "stash: {}", w.stash.len());
    for i in 0..n as u128 {
        let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        assert_eq!(w.get(hid(id), Stamp(2_000)), Some(outcome(i as u64 + 1)));
    }
    // All of it expires at once; the next horizon's ids take the slots.
    for i in 0..n as u128 {
        assert_eq!(insert(&mut w, !i, i as u64 + 1, 200_000), Claim::Fresh);
    }
    assert_eq!(w.len(), n);
}

#[test]
fn epoch_tags_come_round_without_bringing_dead_ids_back() {
    // 64 ms horizon, 1 ms epochs: 256 epochs pass in 256 ms.
    let mut w = IdWindow::new(80, 64);
    let mut seq = 0;
    for t in 0..5_000u64 {
        seq += 1;
        assert_eq!(
            insert(&mut w, u128::from(t), seq, t),
            Claim::Fresh,
            "at {t}"
        );
        if t >= 300 {
            // The id 256 epochs back shares this epoch's tag: long dead.
            assert_eq!(w.get(hid(u128::from(t - 256)), Stamp(t)), None);
            assert_eq!(
                w.get(hid(u128::from(t - 60)), Stamp(t)),
                Some(outcome(seq - 60))
            );
        }
        assert!(w.len() <= 66, "{} live at {t}", w.len());
    }
    // A long silence: every tag comes round at once.
    assert_eq!(insert(&mut w, 1 << 100, 1, 1_000_000), Claim::Fresh);
    assert_eq!(w.len(), 1);
    assert_eq!(w.get(hid(4_999), Stamp(1_000_000)), None);
}

#[test]
fn reconfiguring_keeps_every_id_for_at_least_the_new_horizon() {
    let mut w = IdWindow::new(1_000, 10_000);
    for i in 0..500u64 {
        insert(&mut w, u128::from(i), i + 1, 50_000 + i);
    }
    w.reconfigure(2_000, 20_000);
    assert_eq!(w.len(), 500);
    assert_eq!(w.get(hid(0), Stamp(70_000)), Some(outcome(1)));
    w.reconfigure(600, 1_000);
    assert_eq!(w.get(hid(499), Stamp(50_499)), Some(outcome(500)));
    assert_eq!(w.len(), 500);
    assert_eq!(insert(&mut w, 1 << 90, 9_999, 50_500), Claim::Fresh);
}

/// Review finding: ids claimed at a stamp whose epoch is already dead (a clock
/// behind the journal's after a restart) were forgotten on arrival, and an exact
/// retry a few seconds later was applied again. Now such a claim is refused.
#[test]
fn a_claim_behind_the_recorded_time_is_refused_not_forgotten_on_arrival() {
    let mut w = IdWindow::new(100, 640);
    w.remember(hid(99), FP, outcome(1), Stamp(100_000));
    let first = w.claim(hid(5), FP, 0, Stamp(10_000), 9_900);
    if first == Claim::Fresh {
        w.settle(hid(5), outcome(2));
        let retry = w.claim(hid(5), FP, 0, Stamp(10_200), 10_100);
        assert_eq!(retry, Claim::Retry(Some(outcome(2))), "applied twice");
    } else {
        assert_eq!(first, Claim::Forgotten);
        let retry = w.claim(hid(5), FP, 0, Stamp(10_200), 10_100);
        assert_ne!(
            retry,
            Claim::Fresh,
            "a retry of a refused event is refused too"
        );
    }
}

/// Review finding: a reconfigured window wrote entries newer than its newest stamp,
/// and the snapshot could not be read back.
#[test]
fn a_reconfigured_window_round_trips_through_a_snapshot() {
    use crate::protocol::{decode_serde, encode_serde};
    let mut w = IdWindow::new(100, 64_000); // 1,000 ms epochs
    assert_eq!(insert(&mut w, 1, 1, 5_000), Claim::Fresh);
    w.reconfigure(100, 6_400); // 100 ms epochs
    let read: IdWindow = decode_serde(&encode_serde(&w).unwrap()).unwrap();
    assert_eq!(read.get(hid(1), Stamp(5_000)), Some(outcome(1)));
}

/// Review finding: a ~256x shorter horizon mapped two epochs onto one tag (panic).
#[test]
fn reconfiguring_to_a_much_shorter_horizon_keeps_both_epochs() {
    let mut w = IdWindow::new(100, 16_384); // 256 ms epochs
    w.remember(hid(1), FP, outcome(1), Stamp(100));
    w.remember(hid(2), FP, outcome(2), Stamp(300));
    w.reconfigure(100, 64); // 1 ms epochs
    assert_eq!(w.get(hid(2), Stamp(300)), Some(outcome(2)));
    assert_eq!(w.get(hid(1), Stamp(300)), Some(outcome(1)));
}

/// Review finding: ids crafted into a few buckets filled the stash, and a stash bound
/// refused every new id at 4 % of the window's bound.
#[test]
fn ids_crafted_into_few_buckets_do_not_refuse_everyone_else() {
    let entries_max = 100_000;
    let mut w = IdWindow::new(entries_max, 60_000);
    let (mut n, mut i) = (0u64, 0u128);
    while n < 4 * 1_024 + 300 {
        i += 1;
        let [a, b] = w.buckets_of(hid(i).key());
        if a < 1_024 && b < 1_024 {
            n += 1;
            assert_eq!(insert(&mut w, i, n, 1_000), Claim::Fresh, "at {n}");
        }
    }
    assert!(!w.stash.is_empty());
    assert_eq!(insert(&mut w, u128::MAX - 5, n + 1, 1_000), Claim::Fresh);
}

/// An id as the model keeps it: content, stamp, outcome (None: pending).
type Model = HashMap<u128, (u64, u64, Option<Outcome>)>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model that keeps every id with its exact stamp: never `Fresh` for an
    /// id remembered within the horizon, always the recorded outcome for a retry,
    /// `Reused` for other content, `Full` only at the bound.
    #[test]
    fn the_window_never_admits_a_remembered_id_again(
        steps in proptest::collection::vec((0u128..300, 0u64..3, 0u64..40, any::<bool>()), 1..600),
        entries_max in 8usize..200,
    ) {
        let horizon = 640;
        let mut w = IdWindow::new(entries_max, horizon);
        let epoch_ms = horizon / 64;
        let mut model: Model = HashMap::new();
        let (mut stamp, mut seq) = (1_000u64, 0u64);
        for (id, content, advance, settle) in steps {
            stamp += advance;
            let live_in_model = |m: &Model, id: u128| {
                m.get(&id).filter(|(_, s, o)| o.is_none() || (s / epoch_ms + 1) * epoch_ms - 1 + horizon >= stamp).copied()
            };
            let claim = w.claim(hid(id), EventFingerprint(content), 0, Stamp(stamp), stamp - 10);
            match (claim, live_in_model(&model, id)) {
                (Claim::Retry(o), Some((c, _, mo))) => {
                    prop_assert_eq!(c, content);
                    prop_assert_eq!(o, mo);
                }
                (Claim::Reused, Some((c, _, _))) => prop_assert_ne!(c, content),
                (Claim::Fresh, None) => {
                    seq += 1;
                    if settle {
                        let o = outcome(seq);
                        w.settle(hid(id), o);
                        model.insert(id, (content, stamp, Some(o)));
                    } else {
                        w.unclaim(hid(id));
                    }
                }
                (Claim::Full, None) => {
                    let live = model.keys().filter(|&&i| live_in_model(&model, i).is_some()).count();
                    prop_assert!(live >= entries_max, "full at {} of {}", live, entries_max);
                }
                (Claim::Forgotten, None) => {}
                (claim, held) => prop_assert!(false, "{:?} for {:?}", claim, held),
            }
        }
    }
}

/// `IdWindow::warm` (read before a block's claims and settles) only reads: on tables of
/// one, two and many buckets, before and after a reconfigure, a window whose every claim
/// and settle is warmed first answers every id exactly as one never warmed, and no key
/// (0 and `u64::MAX` included) reads outside the table.
#[test]
fn warming_a_key_reads_inside_the_table_and_changes_no_answer() {
    for entries_max in [0, 1, 4, 7, 100, 5_000] {
        let mut warmed = IdWindow::new(entries_max, 1_000);
        let mut plain = IdWindow::new(entries_max, 1_000);
        for round in 0..2u128 {
            if round == 1 {
                warmed.reconfigure(entries_max * 2 + 3, 2_000);
                plain.reconfigure(entries_max * 2 + 3, 2_000);
            }
            for key in [0, 1, u64::MAX, u64::MAX >> 8] {
                std::hint::black_box(warmed.warm_key(key));
            }
            for i in 0..(entries_max as u128 * 2 + 10) {
                let (id, stamp) = (hid(round << 64 | i), 10 + i as u64);
                warmed.warm(std::iter::once(id));
                let claim = warmed.claim(id, FP, 0, Stamp(stamp), stamp);
                assert_eq!(claim, plain.claim(id, FP, 0, Stamp(stamp), stamp));
                if claim == Claim::Fresh {
                    warmed.warm(std::iter::once(id));
                    warmed.settle(id, outcome(i as u64 + 1));
                    plain.settle(id, outcome(i as u64 + 1));
                }
            }
            for i in 0..(entries_max as u128 * 2 + 10) {
                let (id, stamp) = (hid(round << 64 | i), Stamp(20 + i as u64));
                assert_eq!(warmed.get(id, stamp), plain.get(id, stamp), "id {i}");
            }
        }
    }
}
