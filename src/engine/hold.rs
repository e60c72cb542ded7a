//! The earnings hold (`economy.earnings_hold_ms`): diamonds credited become available
//! for payout only once the ledger's time has passed their **release time**.
//!
//! - A credit's release time is `stamp + hold`, with the hold of the economy version in
//!   force when it was credited (a later change of the hold never moves diamonds
//!   already credited), rounded **up** to the hold's grid (`hold / HOLD_GRID_STEPS`,
//!   ms): never early, late by less than one grid step (1/15 of the hold).
//! - The **ledger's time** ([`super::Engine`]'s hold clock) is the newest stamp of the
//!   events applied under the sequence gate — recharges, gifts, account settings,
//!   payouts, settlements — so it never goes back, and a payout sees exactly the time
//!   every event numbered before it left (the gate). A payout spends diamonds whose
//!   release time is at or before it; reads use the later of it and the reader's clock.
//! - Held diamonds are kept per creator in buckets keyed by release time, exactly, in
//!   billionths of a diamond (a share has at most 9 decimals), so a gift's diamonds can
//!   later be taken back from its bucket exactly ([`Holds::reduce`]: the first bucket at
//!   or after its release time holds them, since buckets only ever merge into later ones).
//!
//! # Bounded, and the same whatever order credits arrive in
//! Concurrent chunks merge their credits in any order, and replay merges them per shard:
//! the state must not depend on that order. Inserting a credit and dropping released
//! buckets commute (a bucket is released iff its time is at or before the clock, a
//! maximum), and merging buckets is done only where every engine sees the same state —
//! at an economy change that changes the grid. The bound then holds by construction:
//! under one grid, every held release time lies in `(clock, clock + hold + grid)`, at
//! most `HOLD_GRID_STEPS + 1` grid points; at a grid change each creator keeps at most
//! [`HOLD_BUCKETS_CARRY`] buckets (the latest merge into the latest one, so nothing is
//! released early). Hence at most [`HOLD_BUCKETS_MAX`] buckets per creator. (A bucket
//! beyond the bound, unreachable, would be merged the same way.)

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::event::{CreatorId, NANOS_PER_DIAMOND, Stamp};
use crate::economy::Economy;

/// A hold is divided into this many grid steps: release times are rounded up to a
/// multiple of `hold / HOLD_GRID_STEPS` (7 days: 11.2 hours).
pub const HOLD_GRID_STEPS: u64 = 15;

/// Buckets a creator keeps across a change of the hold's grid.
pub const HOLD_BUCKETS_CARRY: usize = HOLD_GRID_STEPS as usize + 1;

/// Most buckets a creator ever holds: those carried over a grid change plus one grid's.
pub const HOLD_BUCKETS_MAX: usize = 2 * HOLD_BUCKETS_CARRY;

/// The grid release times are rounded up to under a hold of `hold_ms` (`None`: no hold).
pub fn hold_grid_ms(hold_ms: u64) -> Option<u64> {
    (hold_ms > 0).then(|| hold_ms.div_ceil(HOLD_GRID_STEPS))
}

/// When diamonds credited at `stamp` under a hold of `hold_ms` are released (UTC ms):
/// `stamp + hold_ms` rounded up to the hold's grid; `stamp` itself without a hold.
pub fn release_at(stamp: Stamp, hold_ms: u64) -> u64 {
    match hold_grid_ms(hold_ms) {
        None => stamp.0,
        Some(grid) => stamp
            .0
            .saturating_add(hold_ms)
            .div_ceil(grid)
            .saturating_mul(grid),
    }
}

/// The exact diamonds `coins` make at `economy`'s share, in billionths of a diamond.
pub fn nanos_for(economy: &Economy, coins: u128) -> u128 {
    let (n, d) = economy.share_ratio();
    // d is a power of ten <= 10^9: exact.
    coins
        .saturating_mul(n)
        .saturating_mul(NANOS_PER_DIAMOND / d)
}

/// Diamonds released at `release_ms`, in billionths: 24 bytes (the amount as two words,
/// so the bucket is 8-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldBucket {
    pub release_ms: u64,
    nanos: [u64; 2],
}

const _: () = assert!(std::mem::size_of::<HeldBucket>() == 24);

impl HeldBucket {
    fn new(release_ms: u64, nanos: u128) -> Self {
        HeldBucket {
            release_ms,
            nanos: [nanos as u64, (nanos >> 64) as u64],
        }
    }

    pub fn nanos(&self) -> u128 {
        u128::from(self.nanos[0]) | u128::from(self.nanos[1]) << 64
    }

    fn set_nanos(&mut self, nanos: u128) {
        *self = HeldBucket::new(self.release_ms, nanos);
    }
}

/// One creator shard's held diamonds: per creator with any held, its buckets in
/// increasing release time (no entry: nothing held). Buckets at or before the clock are
/// released (dropped when the creator is next touched).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holds {
    pub creators: FxHashMap<CreatorId, Vec<HeldBucket>>,
}

impl Holds {
    /// Holds `nanos` for `creator` until `release_ms` (released at once when that is at or
    /// before `clock`).
    pub fn hold(&mut self, creator: CreatorId, release_ms: u64, nanos: u128, clock: u64) {
        if nanos == 0 || release_ms <= clock {
            return;
        }
        let buckets = self.creators.entry(creator).or_default();
        buckets.retain(|b| b.release_ms > clock);
        match buckets.binary_search_by_key(&release_ms, |b| b.release_ms) {
            Ok(i) => {
                let sum = buckets[i].nanos().saturating_add(nanos);
                buckets[i].set_nanos(sum);
            }
            Err(i) => buckets.insert(i, HeldBucket::new(release_ms, nanos)),
        }
        // Unreachable by construction (module doc); never early if it were reached.
        collapse(buckets, HOLD_BUCKETS_MAX);
    }

    /// Drops `creator`'s buckets released at `clock`.
    pub fn prune(&mut self, creator: CreatorId, clock: u64) {
        if let Some(buckets) = self.creators.get_mut(&creator) {
            buckets.retain(|b| b.release_ms > clock);
            if buckets.is_empty() {
                self.creators.remove(&creator);
            }
        }
    }

    /// At a change of the hold's grid: every creator keeps at most
    /// [`HOLD_BUCKETS_CARRY`] buckets, its latest merged into its latest.
    pub fn carry_over(&mut self, clock: u64) {
        self.creators.retain(|_, buckets| {
            buckets.retain(|b| b.release_ms > clock);
            collapse(buckets, HOLD_BUCKETS_CARRY);
            buckets.shrink_to_fit();
            !buckets.is_empty()
        });
    }

    /// Billionths of a diamond `creator` has held at `at` (released after it).
    pub fn held_nanos(&self, creator: CreatorId, at: u64) -> u128 {
        self.creators.get(&creator).map_or(0, |buckets| {
            buckets
                .iter()
                .filter(|b| b.release_ms > at)
                .map(HeldBucket::nanos)
                .fold(0u128, u128::saturating_add)
        })
    }

    /// Takes back `nanos` credited to `creator` with release time `release_ms` while
    /// they are still held at `clock` (for a reversal of the credit): from the first
    /// bucket at or after `release_ms`, which holds them — or, when a change of the hold's
    /// grid merged them into a later bucket past a newer one (`carry_over`), from the
    /// buckets at or after `release_ms` in release order (merging only ever moves
    /// diamonds later, so they are all there; taking from an earlier one of them only
    /// holds the rest longer, never releases anything early). `false`, and nothing
    /// changes, when they are released or not there.
    pub fn reduce(&mut self, creator: CreatorId, release_ms: u64, nanos: u128, clock: u64) -> bool {
        if release_ms <= clock {
            return false;
        }
        let Some(buckets) = self.creators.get_mut(&creator) else {
            return false;
        };
        let i = buckets.partition_point(|b| b.release_ms < release_ms);
        let later: u128 = buckets[i..]
            .iter()
            .map(HeldBucket::nanos)
            .fold(0u128, u128::saturating_add);
        if later < nanos {
            return false;
        }
        let mut left = nanos;
        for b in buckets[i..].iter_mut() {
            let take = b.nanos().min(left);
            b.set_nanos(b.nanos() - take);
            left -= take;
            if left == 0 {
                break;
            }
        }
        buckets.retain(|b| b.nanos() > 0);
        if buckets.is_empty() {
            self.creators.remove(&creator);
        }
        true
    }

    /// The buckets still held at `clock`, by creator: the same for equal ledgers whatever
    /// was already dropped (for the state fingerprint).
    pub fn canonical(&self, clock: u64) -> Vec<(CreatorId, Vec<(u64, u128)>)> {
        let mut out: Vec<_> = self
            .creators
            .iter()
            .map(|(&c, buckets)| {
                let held: Vec<(u64, u128)> = buckets
                    .iter()
                    .filter(|b| b.release_ms > clock)
                    .map(|b| (b.release_ms, b.nanos()))
                    .collect();
                (c, held)
            })
            .filter(|(_, held)| !held.is_empty())
            .collect();
        out.sort_unstable_by_key(|(c, _)| *c);
        out
    }
}

/// Keeps at most `max` buckets: the latest ones merge into the latest (never early).
fn collapse(buckets: &mut Vec<HeldBucket>, max: usize) {
    if buckets.len() <= max {
        return;
    }
    let last = buckets[buckets.len() - 1].release_ms;
    let tail = buckets[max - 1..]
        .iter()
        .map(HeldBucket::nanos)
        .fold(0u128, u128::saturating_add);
    buckets.truncate(max - 1);
    buckets.push(HeldBucket::new(last, tail));
}

/// The held diamonds of a ledger, as a snapshot (format 7) records them: the hold clock
/// and each creator shard's [`Holds`].
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct HoldState {
    pub clock: Stamp,
    pub shards: Vec<Holds>,
}

/// [`HoldState`] borrowed at a cut (encodes the same).
#[derive(Serialize)]
pub(crate) struct HoldStateView<'a> {
    pub clock: Stamp,
    pub shards: Vec<&'a Holds>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn release_times_round_up_to_the_grid_and_never_come_early() {
        assert_eq!(release_at(Stamp(1234), 0), 1234);
        let hold = 7 * DAY;
        let grid = hold_grid_ms(hold).unwrap();
        assert_eq!(grid, 40_320_000); // 11.2 hours
        for stamp in [0, 1, grid - 1, grid, 1_794_700_800_000, 1_794_700_800_001] {
            let r = release_at(Stamp(stamp), hold);
            assert!(r >= stamp + hold && r < stamp + hold + grid, "{stamp}");
            assert_eq!(r % grid, 0);
        }
        assert_eq!(release_at(Stamp(u64::MAX - 5), hold), u64::MAX);
        assert_eq!(release_at(Stamp(10), 1), 11);
    }

    #[test]
    fn buckets_merge_by_release_time_and_release_at_the_clock() {
        let c = CreatorId(7);
        let mut h = Holds::default();
        h.hold(c, 100, 5, 50);
        h.hold(c, 100, 7, 50);
        h.hold(c, 200, 1, 50);
        h.hold(c, 40, 9, 50); // released already
        assert_eq!(h.held_nanos(c, 50), 13);
        assert_eq!(h.held_nanos(c, 99), 13);
        assert_eq!(h.held_nanos(c, 100), 1);
        assert_eq!(h.held_nanos(c, 200), 0);
        // Inserting at a later clock drops what it released.
        h.hold(c, 300, 2, 150);
        assert_eq!(h.canonical(150), vec![(c, vec![(200, 1), (300, 2)])]);
        assert_eq!(h.creators[&c].len(), 2);
        h.prune(c, 300);
        assert!(h.creators.is_empty());
    }

    #[test]
    fn order_of_credits_does_not_change_the_state() {
        // Credits and clock advances in any order give the same held diamonds.
        let credits = [
            (10u64, 100u64, 3u128),
            (60, 160, 4),
            (30, 130, 5),
            (200, 300, 6),
        ];
        let mut states = Vec::new();
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]] {
            let (mut h, mut clock) = (Holds::default(), 0);
            for i in order {
                let (stamp, release, nanos) = credits[i];
                clock = clock.max(stamp);
                h.hold(CreatorId(1), release, nanos, clock);
            }
            states.push(h.canonical(clock));
        }
        assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
        assert_eq!(states[0], vec![(CreatorId(1), vec![(300, 6)])]);
    }

    #[test]
    fn the_bound_merges_the_latest_buckets_into_the_latest() {
        let c = CreatorId(1);
        let mut h = Holds::default();
        for i in 1..=(HOLD_BUCKETS_MAX as u64 + 3) {
            h.hold(c, 1000 + i, u128::from(i), 0);
        }
        let buckets = &h.creators[&c];
        assert_eq!(buckets.len(), HOLD_BUCKETS_MAX);
        assert_eq!(
            buckets.last().unwrap().release_ms,
            1000 + HOLD_BUCKETS_MAX as u64 + 3
        );
        let total: u128 = (1..=(HOLD_BUCKETS_MAX as u128 + 3)).sum();
        assert_eq!(h.held_nanos(c, 0), total);
        // Never early: at any time, at least as much is held as was credited later.
        for t in 1000..1000 + HOLD_BUCKETS_MAX as u64 + 3 {
            let exact: u128 = ((t - 999)..=(HOLD_BUCKETS_MAX as u64 + 3))
                .map(u128::from)
                .sum();
            assert!(h.held_nanos(c, t) >= exact, "at {t}");
        }
        h.carry_over(1000);
        assert_eq!(h.creators[&c].len(), HOLD_BUCKETS_CARRY);
        assert_eq!(h.held_nanos(c, 0), total);
    }

    #[test]
    fn a_reversal_takes_back_held_diamonds_only() {
        let c = CreatorId(3);
        let mut h = Holds::default();
        h.hold(c, 100, 10, 0);
        h.hold(c, 200, 5, 0);
        assert!(
            !h.reduce(c, 100, 16, 0),
            "more than the buckets from it on hold"
        );
        assert!(h.reduce(c, 100, 4, 0));
        assert_eq!(h.held_nanos(c, 0), 11);
        assert!(!h.reduce(c, 100, 6, 100), "released at the clock");
        // Merged into a later bucket: still found there.
        let mut h = Holds::default();
        h.hold(c, 300, 9, 0);
        assert!(h.reduce(c, 250, 9, 0));
        assert!(h.creators.is_empty());
        // Merged into a later bucket past a newer, smaller one (a grid change, then a
        // gift released in between; the review's sequence): taken from both, in release
        // order — the newer gift's coin is then held until the later bucket (never
        // released early), and the total held is exact.
        let mut h = Holds::default();
        h.hold(c, 300, 9, 0);
        h.hold(c, 260, 1, 0);
        assert!(h.reduce(c, 250, 9, 0));
        assert_eq!(h.held_nanos(c, 0), 1);
        assert_eq!(h.held_nanos(c, 260), 1, "not released early");
        assert!(!h.reduce(c, 250, 2, 0), "more than is held from it on");
    }

    /// The state bytes a creator's hold adds (issue #31 asks for the figure): its map
    /// entry (key + `Vec` header, with the map's control byte, at the map's full load) and
    /// its buckets. A creator gifted every 10 minutes for a week under a 7-day hold.
    #[test]
    fn bytes_per_creator_with_a_seven_day_hold() {
        let hold = 7 * DAY;
        let mut h = Holds::default();
        let c = CreatorId(1);
        let mut stamp = 1_794_700_800_000u64;
        for _ in 0..(7 * 24 * 6) {
            h.hold(c, release_at(Stamp(stamp), hold), 500_000_000, stamp);
            stamp += 600_000;
        }
        let buckets = &h.creators[&c];
        assert!(buckets.len() <= HOLD_BUCKETS_CARRY, "{}", buckets.len());
        let entry = std::mem::size_of::<(CreatorId, Vec<HeldBucket>)>() + 1;
        let bytes = entry * 8 / 7 + buckets.capacity() * std::mem::size_of::<HeldBucket>();
        println!(
            "earnings hold, 7 days: {} buckets, about {bytes} bytes per creator (0 without a hold)",
            buckets.len()
        );
        assert!(bytes <= 1024, "{bytes}");
    }
}
