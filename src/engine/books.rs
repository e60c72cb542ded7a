//! The creator and stream books: coin totals merged from the sender shards, diamonds,
//! payouts, stream goals and the top-creators list.
//!
//! Gifts never lock a book on their own: a sender shard buffers the coins of a whole
//! chunk and merges them here once per creator and stream (see `shard.rs`). Payouts and
//! stream goals are applied here, under the book shard's lock.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

use super::EngineConfig;
use super::event::{
    CreatorId, Effect, Event, LogEntry, NANOS_PER_DIAMOND, Outcome, Payout, Settlement, Stamp,
    Status, StreamGoal, StreamId,
};
use super::hold::{self, Holds};
use super::leaderboards::BookWindows;
use super::rules;
use super::topk::TopK;
use super::window::LegacyWindow;
use crate::economy::{Currency, Economy};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CreatorTotals {
    pub coins_received: u128,
    pub diamonds_paid: u128,
}

/// The diamonds a creator was credited, and the fraction of one carried over
/// (`rem / den`, in [0, 1)). Stored, not recomputed from the coins received: a change
/// of `creator_share` applies to coins received after it and never changes diamonds
/// already credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credited {
    pub diamonds: u128,
    pub rem: u128,
    /// A power of ten: the largest share denominator this creator was credited with.
    pub den: u128,
}

impl Default for Credited {
    fn default() -> Self {
        Credited {
            diamonds: 0,
            rem: 0,
            den: 1,
        }
    }
}

impl Credited {
    /// What a creator that received `coins` in total at `economy`'s share holds.
    pub fn of(economy: &Economy, coins: u128) -> Self {
        let mut c = Credited::default();
        c.credit(economy, coins);
        c
    }

    /// Credits `coins` at `economy`'s share, carrying the fraction exactly (both
    /// denominators are powers of ten: the larger one holds both fractions).
    pub fn credit(&mut self, economy: &Economy, coins: u128) {
        let (n, d) = economy.share_ratio();
        let den = self.den.max(d);
        let rem = self.rem.saturating_mul(den / self.den);
        let num = coins
            .saturating_mul(n)
            .saturating_mul(den / d)
            .saturating_add(rem);
        self.diamonds = self.diamonds.saturating_add(num / den);
        self.rem = num % den;
        self.den = den;
    }

    /// Takes back `nanos` billionths of a diamond credited earlier (a reversed gift's,
    /// credited at a share whose denominator divides `den`: exact).
    pub fn take_back(&mut self, nanos: u128) {
        let unit = NANOS_PER_DIAMOND / self.den.min(NANOS_PER_DIAMOND);
        let units = nanos / unit.max(1);
        let total = self
            .diamonds
            .saturating_mul(self.den)
            .saturating_add(self.rem)
            .saturating_sub(units);
        self.diamonds = total / self.den;
        self.rem = total % self.den;
    }

    /// The carried fraction in billionths of a diamond (exact: a share has at most 9
    /// decimals, so the denominator divides 10^9).
    pub fn fraction_nanos(&self) -> u128 {
        self.rem.saturating_mul(NANOS_PER_DIAMOND) / self.den
    }

    pub fn fraction(&self) -> Decimal {
        // rem < den <= 10^28 (a Decimal's largest scale): exact.
        match (u64::try_from(self.rem), u64::try_from(self.den)) {
            (Ok(rem), Ok(den)) => (Decimal::from(rem) / Decimal::from(den)).normalize(),
            _ => Decimal::from_i128_with_scale(self.rem as i128, self.den.ilog10()).normalize(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CreatorShard {
    pub creators: FxHashMap<CreatorId, CreatorTotals>,
    /// Creators of this shard ranked by diamonds credited.
    pub top: TopK,
    /// Snapshot formats 1 and 2 kept this shard's ids here; moved to the id index at load.
    pub window: LegacyWindow,
    pub log: Vec<LogEntry>,
    /// Money paid out per currency, for revenue accounting and the audit.
    pub paid_value: BTreeMap<Currency, Decimal>,
    /// A cluster owner's creators: per creator, the last diamond total each other node
    /// reported (`(source node, diamonds)`, at most one entry per node). Encoded by
    /// snapshots after the shards (snapshot format 2), hence skipped here.
    #[serde(skip)]
    pub settled: Settled,
    /// The fractions of those reports (encoded after the shards, format 4).
    #[serde(skip)]
    pub settled_nanos: SettledNanos,
    /// Diamonds credited per creator. Encoded by snapshots after the id index (format
    /// 3; older formats recompute them from the coins received), hence skipped here.
    #[serde(skip)]
    pub credited: FxHashMap<CreatorId, Credited>,
    /// Diamonds still held by the earnings hold, per creator (`hold.rs`; encoded by
    /// snapshots last, format 7), hence skipped here.
    #[serde(skip)]
    pub holds: Holds,
    /// Windowed coins received and top creators (`leaderboards.rs`; encoded last, format
    /// 10), hence skipped here.
    #[serde(skip)]
    pub windows: BookWindows,
}

/// A creator's diamonds at a moment of the ledger's time: credited here + settled in =
/// held + available + paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Diamonds {
    pub credited: u128,
    pub settled_in: u128,
    pub held: u128,
    pub available: u128,
    pub paid: u128,
}

/// Per creator, `(source node, diamonds reported)`.
pub(crate) type Settled = FxHashMap<CreatorId, Vec<(u16, u64)>>;

/// The fractions (in billionths) of each node's last report, beside [`Settled`]'s whole
/// diamonds (snapshot format 4; absent: every report was whole).
pub(crate) type SettledNanos = FxHashMap<CreatorId, Vec<(u16, u32)>>;

impl CreatorShard {
    pub(crate) fn new() -> Self {
        CreatorShard {
            creators: FxHashMap::default(),
            top: TopK::default(),
            window: LegacyWindow::default(),
            log: Vec::new(),
            paid_value: BTreeMap::new(),
            settled: Settled::default(),
            settled_nanos: SettledNanos::default(),
            credited: FxHashMap::default(),
            holds: Holds::default(),
            windows: BookWindows::default(),
        }
    }

    /// The whole diamonds of the other nodes' reports for `creator`, their fractions
    /// summed: what a settlement's outcome counts (`Settled { credited }`: the increase).
    /// It does not depend on this node's own credits, so a settlement's outcome is the
    /// same whatever gift chunks are in flight (a settlement holds the gate shared, as
    /// a chunk does).
    fn reported(&self, creator: CreatorId) -> u128 {
        let whole: u128 = self
            .settled
            .get(&creator)
            .map_or(0, |r| r.iter().map(|&(_, d)| u128::from(d)).sum());
        let nanos: u128 = self
            .settled_nanos
            .get(&creator)
            .map_or(0, |f| f.iter().map(|&(_, n)| u128::from(n)).sum());
        whole + nanos / NANOS_PER_DIAMOND
    }

    /// The other nodes' reports for `creator`, exactly, in billionths of a diamond.
    fn reported_nanos(&self, creator: CreatorId) -> u128 {
        let whole: u128 = self
            .settled
            .get(&creator)
            .map_or(0, |r| r.iter().map(|&(_, d)| u128::from(d)).sum());
        let nanos: u128 = self
            .settled_nanos
            .get(&creator)
            .map_or(0, |f| f.iter().map(|&(_, n)| u128::from(n)).sum());
        whole
            .saturating_mul(NANOS_PER_DIAMOND)
            .saturating_add(nanos)
    }

    /// Whole diamonds other nodes' credits add to `creator`'s here (0 on a single node):
    /// their whole diamonds, plus the whole ones their fractions make with this node's
    /// own carried fraction, so that fractions carry across nodes as on one ledger.
    pub(crate) fn settled_in(&self, creator: CreatorId) -> u128 {
        let Some(reports) = self.settled.get(&creator) else {
            return 0;
        };
        let whole: u128 = reports.iter().map(|&(_, d)| u128::from(d)).sum();
        let theirs: u128 = self
            .settled_nanos
            .get(&creator)
            .map_or(0, |f| f.iter().map(|&(_, n)| u128::from(n)).sum());
        let own = self
            .credited
            .get(&creator)
            .map_or(0, |c| c.fraction_nanos());
        whole + (own + theirs) / NANOS_PER_DIAMOND
    }

    /// Diamonds credited to `creator` here.
    pub(crate) fn credited(&self, creator: CreatorId) -> u128 {
        self.credited.get(&creator).map_or(0, |c| c.diamonds)
    }

    /// `creator`'s diamonds when the ledger's time is `at`: held are those whose release
    /// time is after `at`; available = floor(credited and settled in, exactly, less
    /// held, exactly) less paid. Without a hold this is credited + settled in − paid.
    pub(crate) fn diamonds_at(&self, creator: CreatorId, at: u64) -> Diamonds {
        let credited = self.credited.get(&creator).copied().unwrap_or_default();
        let reported_nanos = self.reported_nanos(creator);
        let total_nanos = credited
            .diamonds
            .saturating_mul(NANOS_PER_DIAMOND)
            .saturating_add(credited.fraction_nanos())
            .saturating_add(reported_nanos);
        let held_nanos = self.holds.held_nanos(creator, at).min(total_nanos);
        let released = (total_nanos - held_nanos) / NANOS_PER_DIAMOND;
        let settled_in = self.settled_in(creator);
        let whole = credited.diamonds.saturating_add(settled_in);
        let paid = self.creators.get(&creator).map_or(0, |t| t.diamonds_paid);
        Diamonds {
            credited: credited.diamonds,
            settled_in,
            held: whole.saturating_sub(released),
            // Invariant: paid <= released (a payout is accepted only when available).
            available: released.saturating_sub(paid),
            paid,
        }
    }

    /// Credits `coins` received at `stamp` (the ledger's time `clock` >= `stamp`), held
    /// under the economy's earnings hold.
    pub(crate) fn credit(
        &mut self,
        economy: &Economy,
        top_k: usize,
        creator: CreatorId,
        coins: u128,
        (stamp, clock): (Stamp, u64),
    ) {
        let totals = self.creators.entry(creator).or_default();
        totals.coins_received = totals.coins_received.saturating_add(coins);
        let credited = self.credited.entry(creator).or_default();
        credited.credit(economy, coins);
        self.top.offer(top_k, creator.0, credited.diamonds);
        if economy.earnings_hold_ms > 0 {
            let release = hold::release_at(stamp, economy.earnings_hold_ms);
            let nanos = hold::nanos_for(economy, coins);
            self.holds.hold(creator, release, nanos, clock);
        }
    }

    /// Applies a payout with sequence number `seq` at the ledger's time `clock` (the
    /// payout's stamp or later). The engine applies it once every event numbered before
    /// it has credited the books (and none after it has), so it sees exactly what a
    /// replay in sequence order sees. It spends available diamonds only (none still
    /// held).
    pub(crate) fn payout(
        &mut self,
        economy: &Economy,
        config: &EngineConfig,
        p: &Payout,
        seq: u64,
        (stamp, clock): (Stamp, u64),
    ) -> Outcome {
        self.holds.prune(p.creator, clock);
        let before = self.diamonds_at(p.creator, clock);
        let status = match rules::payout(economy, before.available, p) {
            Ok(value) => {
                let totals = self.creators.entry(p.creator).or_default();
                totals.diamonds_paid += u128::from(p.diamonds);
                assert!(
                    totals.diamonds_paid <= before.credited.saturating_add(before.settled_in),
                    "a payout never pays more than was credited and settled in"
                );
                let paid = self.paid_value.entry(p.currency).or_default();
                *paid = paid.saturating_add(value);
                let after = before.available - u128::from(p.diamonds);
                Status::Accepted(Effect::PaidOut {
                    diamonds_available: u64::try_from(after).unwrap_or(u64::MAX),
                    value,
                })
            }
            Err(code) => Status::Rejected(code),
        };
        let outcome = Outcome {
            seq,
            status,
            duplicate: false,
            cap: None,
        };
        if config.keep_log {
            self.log.push(LogEntry {
                seq,
                stamp,
                event: Event::Payout(*p),
                outcome,
                totals: None,
                reversed: None,
            });
        }
        outcome
    }

    /// Applies a settlement report with sequence number `seq`: the creator's diamonds
    /// from `s.source` become `s.diamonds` if that is more than its last report (reports
    /// are cumulative; an older or repeated one adds nothing). What it adds is held from
    /// its stamp under `economy`'s earnings hold (the one in force at its number).
    pub(crate) fn settle(
        &mut self,
        (economy, config): (&Economy, &EngineConfig),
        s: &Settlement,
        seq: u64,
        (stamp, clock): (Stamp, u64),
    ) -> Outcome {
        let before = self.reported(s.creator);
        let nanos_before = self.reported_nanos(s.creator);
        let reports = self.settled.entry(s.creator).or_default();
        let fractions = self.settled_nanos.entry(s.creator).or_default();
        let last_nanos = fractions
            .iter()
            .find(|(source, _)| *source == s.source)
            .map_or(0, |&(_, n)| n);
        let last = reports
            .iter()
            .find(|(source, _)| *source == s.source)
            .map(|&(_, d)| (d, last_nanos));
        // Reports are cumulative: only one above the last from its node counts.
        if last.is_none_or(|last| (s.diamonds, s.nanos) > last) {
            match reports.iter_mut().find(|(source, _)| *source == s.source) {
                Some((_, d)) => *d = s.diamonds,
                None => reports.push((s.source, s.diamonds)),
            }
            fractions.retain(|(source, _)| *source != s.source);
            if s.nanos != 0 {
                fractions.push((s.source, s.nanos));
            }
        }
        if fractions.is_empty() {
            self.settled_nanos.remove(&s.creator);
        }
        let credited =
            u64::try_from(self.reported(s.creator).saturating_sub(before)).unwrap_or(u64::MAX);
        if economy.earnings_hold_ms > 0 {
            let added = self.reported_nanos(s.creator).saturating_sub(nanos_before);
            let release = hold::release_at(stamp, economy.earnings_hold_ms);
            self.holds.hold(s.creator, release, added, clock);
        }
        let outcome = Outcome {
            seq,
            status: Status::Accepted(Effect::Settled { credited }),
            duplicate: false,
            cap: None,
        };
        if config.keep_log {
            self.log.push(LogEntry {
                seq,
                stamp,
                event: Event::Settlement(*s),
                outcome,
                totals: None,
                reversed: None,
            });
        }
        outcome
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamTotals {
    pub coins_received: u128,
    /// The creator that set the goal; else the smallest creator id gifted to here
    /// (deterministic whatever the merge order).
    pub creator: Option<CreatorId>,
    pub goal_set: bool,
    pub coins_target: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StreamShard {
    pub streams: FxHashMap<StreamId, StreamTotals>,
    /// Snapshot formats 1 and 2 kept this shard's ids here; moved to the id index at load.
    pub window: LegacyWindow,
    pub log: Vec<LogEntry>,
}

impl StreamShard {
    pub(crate) fn new() -> Self {
        StreamShard {
            streams: FxHashMap::default(),
            window: LegacyWindow::default(),
            log: Vec::new(),
        }
    }

    pub(crate) fn credit(&mut self, stream: StreamId, creator: CreatorId, coins: u128) {
        let totals = self.streams.entry(stream).or_default();
        totals.coins_received += coins;
        if !totals.goal_set {
            totals.creator = Some(totals.creator.map_or(creator, |c| c.min(creator)));
        }
    }

    pub(crate) fn goal(
        &mut self,
        config: &EngineConfig,
        g: &StreamGoal,
        seq: u64,
        stamp: Stamp,
    ) -> Outcome {
        let status = match rules::stream_goal(g) {
            Ok(()) => {
                let totals = self.streams.entry(g.stream).or_default();
                totals.creator = Some(g.creator);
                totals.goal_set = true;
                totals.coins_target = g.coins_target;
                Status::Accepted(Effect::Stored)
            }
            Err(code) => Status::Rejected(code),
        };
        let outcome = Outcome {
            seq,
            status,
            duplicate: false,
            cap: None,
        };
        if config.keep_log {
            self.log.push(LogEntry {
                seq,
                stamp,
                event: Event::StreamGoal(*g),
                outcome,
                totals: None,
                reversed: None,
            });
        }
        outcome
    }
}
