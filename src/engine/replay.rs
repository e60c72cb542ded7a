//! Replaying journaled entries ([`Engine::replay`]) with their journaled stamps: runs of
//! sender events per shard (on `engine.replay_threads` threads when long), book events
//! and economy changes one by one in sequence order. Replay refuses rather than guesses.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::economies::{EconomyError, check_successor};
use super::event::{BudgetCap, EconomyChange, Effect, Event, EventId, LogEntry, Outcome, Status};
use super::idhash::IdHash;
use super::{Engine, Route};

/// Why a replay stopped. Replay refuses rather than guesses: a log it cannot reproduce
/// means the log or the code changed meaning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("log entry seq {seq} is not after seq {last}")]
    OutOfOrder { seq: u64, last: u64 },
    /// Sequence numbers never skip, so a log that does is missing events (e.g. a
    /// journal trimmed after snapshots that were not loaded).
    #[error(
        "log entry seq {seq} follows seq {last}: events {} to {} are missing (a journal trimmed after snapshots that were not loaded? the snapshot directory may be missing or another one)",
        last + 1,
        seq - 1
    )]
    Gap { seq: u64, last: u64 },
    #[error(
        "log entry seq {seq} (event {event:?}) replayed to {replayed:?}, recorded {recorded:?}"
    )]
    Mismatch {
        seq: u64,
        event: EventId,
        recorded: Status,
        replayed: Status,
    },
    /// The same rejection naming another cap (`BUDGET_EXCEEDED`): the limits replayed
    /// differently from how they were applied.
    #[error(
        "log entry seq {seq} (event {event:?}) replayed to BUDGET_EXCEEDED naming {replayed:?}, recorded naming {recorded:?}"
    )]
    CapMismatch {
        seq: u64,
        event: EventId,
        recorded: Option<BudgetCap>,
        replayed: Option<BudgetCap>,
    },
    #[error(
        "log entry seq {seq} puts economy version {version} in force, whose document (digest {digest:016x}) was not found"
    )]
    UnknownEconomy { seq: u64, version: u32, digest: u64 },
    #[error("log entry seq {seq}: {error}")]
    Economy { seq: u64, error: EconomyError },
}

impl Engine {
    /// Replays logged events (sorted by seq, all after [`Engine::last_seq`]) with their
    /// journaled stamps. Every outcome must come out as recorded, payouts included (they
    /// were applied live with exactly the credits numbered before them). Never reads a
    /// clock.
    pub fn replay(&self, entries: &[LogEntry]) -> Result<(), ReplayError> {
        let mut last = self.last_seq();
        for entry in entries {
            if entry.seq <= last {
                return Err(ReplayError::OutOfOrder {
                    seq: entry.seq,
                    last,
                });
            }
            if entry.seq > last + 1 {
                return Err(ReplayError::Gap {
                    seq: entry.seq,
                    last,
                });
            }
            last = entry.seq;
        }
        // Between two book events (payouts, goals), sender events of different shards
        // are independent: replay them per shard, one lock and one credit merge per
        // shard, and large segments on `engine.replay_threads` threads. Book events go
        // one by one, after every earlier sender event, so they see the credits they saw
        // live.
        let mut i = 0;
        while i < entries.len() {
            let start = i;
            while i < entries.len() && matches!(self.route(&entries[i].event), Route::Sender(_)) {
                i += 1;
            }
            if start < i {
                self.replay_senders(&entries[start..i])?;
            }
            if let Some(entry) = entries.get(i) {
                if let Event::Economy(change) = entry.event {
                    self.replay_economy(entry, change)?;
                    i += 1;
                    continue;
                }
                let route = self.route(&entry.event);
                if let Route::Reversal(s) = route {
                    let replayed = self.replay_reversal(entry, s);
                    check_replayed(entry, &replayed)?;
                    i += 1;
                    continue;
                }
                if let Route::Battle = route {
                    let replayed = self.replay_battle(entry);
                    check_replayed(entry, &replayed)?;
                    self.unlog(route, entry.seq);
                    i += 1;
                    continue;
                }
                let replayed = self.replay_in_book(entry, route);
                check_replayed(entry, &replayed)?;
                self.unlog(route, entry.seq);
                i += 1;
            }
        }
        if let Some(last) = entries.last() {
            self.next_seq.store(last.seq + 1, Ordering::Release);
        }
        Ok(())
    }

    /// Replays a journaled economy change: the version it names must be known
    /// ([`Engine::know_economy`]) and follow the one in force.
    fn replay_economy(&self, entry: &LogEntry, change: EconomyChange) -> Result<(), ReplayError> {
        let next = self
            .economy_by_digest(change.digest)
            .filter(|e| e.version == change.version)
            .ok_or(ReplayError::UnknownEconomy {
                seq: entry.seq,
                version: change.version,
                digest: change.digest,
            })?;
        let mut gate = self.gate.write();
        check_successor(&gate, &next).map_err(|e| ReplayError::Economy {
            seq: entry.seq,
            error: e,
        })?;
        self.carry_holds_over(&gate, &next);
        self.in_force.lock().push((entry.seq, Arc::clone(&next)));
        *gate = next;
        let replayed = Outcome {
            seq: entry.seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
            cap: None,
        };
        check_replayed(entry, &replayed)
    }

    /// Replays a run of sender-routed entries (sorted by seq), grouped by shard.
    fn replay_senders(&self, entries: &[LogEntry]) -> Result<(), ReplayError> {
        let economy = self.economy();
        let economy = &*economy;
        // The ledger's time after the run (what the next book event sees live): before
        // merging, so that each credit is merged at a time at or after its stamp.
        if let Some(newest) = entries.iter().map(|e| e.stamp.0).max() {
            self.hold_clock.fetch_max(newest, Ordering::AcqRel);
        }
        // Under an earnings hold a credit's release time follows its stamp: merge at
        // each change of stamp (live, a chunk has one stamp).
        let held = economy.earnings_hold_ms > 0;
        let shards = self.senders.len();
        let mut by_shard: Vec<Vec<&LogEntry>> = vec![Vec::new(); shards];
        for e in entries {
            let Route::Sender(s) = self.route(&e.event) else {
                unreachable!("sender run")
            };
            by_shard[s].push(e);
        }
        let replay_shard = |s: usize, chunk: &[&LogEntry]| -> Result<(), ReplayError> {
            if chunk.is_empty() {
                return Ok(());
            }
            let mut shard = self.senders[s].lock();
            // Replayed events are committed already: they do not go to the log.
            let logged = shard.log.len();
            shard.unrecorded_gifts.clear();
            let (mut stamp, mut period) = (chunk[0].stamp, chunk[0].stamp.period());
            for entry in chunk {
                if entry.stamp != stamp {
                    if held {
                        self.merge_credits(&mut shard, economy, stamp);
                    }
                    (stamp, period) = (entry.stamp, entry.stamp.period());
                }
                let replayed = shard.apply(
                    economy,
                    &self.config,
                    &entry.event,
                    entry.seq,
                    entry.stamp,
                    period,
                );
                check_replayed(entry, &replayed)?;
            }
            if self.battles_on() {
                let gifts = chunk
                    .iter()
                    .filter_map(|e| match (&e.event, e.outcome.status) {
                        (Event::Gift(g), Status::Accepted(_)) => Some((*g, e.seq, e.stamp)),
                        _ => None,
                    });
                self.battle_gifts(s, economy, gifts, &shard.unrecorded_gifts);
            }
            shard.log.truncate(logged);
            self.merge_credits(&mut shard, economy, stamp);
            self.remember_replayed(chunk);
            Ok(())
        };
        let threads = self.config.replay_threads.min(shards);
        if entries.len() < REPLAY_PARALLEL_EVENTS_MIN || threads <= 1 {
            return by_shard
                .iter()
                .enumerate()
                .try_for_each(|(s, c)| replay_shard(s, c));
        }
        // Thread `t` replays shards t, t + threads, ... (the calling thread is thread 0);
        // of two errors, the lower thread's is reported.
        let replay_share = |t: usize| {
            by_shard
                .iter()
                .enumerate()
                .filter(|(s, _)| s % threads == t)
                .try_for_each(|(s, c)| replay_shard(s, c))
        };
        let replay_share = &replay_share;
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads)
                .map(|t| scope.spawn(move || replay_share(t)))
                .collect();
            let first = replay_share(0);
            others.into_iter().fold(first, |result, other| {
                result.and(other.join().expect("replay thread"))
            })
        })
    }

    /// Remembers the ids of replayed sender events, one lock per id shard touched. The
    /// journal is the truth: no check (a journaled event was applied).
    fn remember_replayed(&self, chunk: &[&LogEntry]) {
        let mut by_shard: Vec<(IdHash, &LogEntry)> = chunk
            .iter()
            .map(|&e| (self.event_hash(&e.event), e))
            .collect();
        by_shard.sort_unstable_by_key(|&(h, e)| (self.id_shard(h), e.seq));
        for run in by_shard.chunk_by(|a, b| self.id_shard(a.0) == self.id_shard(b.0)) {
            let mut ids = self.ids[self.id_shard(run[0].0)].lock();
            for &(h, e) in run {
                ids.remember(h, e.event.fingerprint(), e.outcome, e.stamp);
            }
        }
    }

    /// Removes the log entry `seq` a replayed book event left (replayed events are
    /// committed already).
    fn unlog(&self, route: Route, seq: u64) {
        let unlog = |log: &mut Vec<LogEntry>| {
            if let Some(i) = log.iter().rposition(|e| e.seq == seq) {
                log.remove(i);
            }
        };
        match route {
            Route::Creator(j) => unlog(&mut self.creators[j].lock().log),
            Route::Stream(k) => unlog(&mut self.streams[k].lock().log),
            Route::Sender(i) | Route::Reversal(i) => unlog(&mut self.senders[i].lock().log),
            Route::Battle => unlog(&mut self.meta_log.lock()),
            Route::Refused => {}
        }
    }

    /// Replays a journaled payout, settlement or goal with its number.
    pub(super) fn replay_in_book(&self, entry: &LogEntry, route: Route) -> Outcome {
        let gate = self.gate.read();
        let mut book = self.lock_book(route);
        if matches!(entry.event, Event::Payout(_) | Event::Settlement(_)) {
            self.hold_clock.fetch_max(entry.stamp.0, Ordering::AcqRel);
        }
        let outcome =
            self.apply_in_book(&mut book, Some(&gate), &entry.event, entry.seq, entry.stamp);
        let id = self.event_hash(&entry.event);
        self.ids[self.id_shard(id)].lock().remember(
            id,
            entry.event.fingerprint(),
            outcome,
            entry.stamp,
        );
        outcome
    }
}

/// Sender runs at least this long are replayed on `engine.replay_threads` threads.
pub(super) const REPLAY_PARALLEL_EVENTS_MIN: usize = 4096;

pub(super) fn check_replayed(entry: &LogEntry, replayed: &Outcome) -> Result<(), ReplayError> {
    if replayed.status != entry.outcome.status || replayed.duplicate {
        return Err(ReplayError::Mismatch {
            seq: entry.seq,
            event: entry.event.id(),
            recorded: entry.outcome.status,
            replayed: replayed.status,
        });
    }
    if replayed.cap != entry.outcome.cap {
        return Err(ReplayError::CapMismatch {
            seq: entry.seq,
            event: entry.event.id(),
            recorded: entry.outcome.cap,
            replayed: replayed.cap,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::economy::Economy;
    use crate::engine::EngineConfig;
    use crate::engine::event::{CreatorId, Gift, GiftId, Recharge, Stamp, StreamId, UserId};

    /// A `BUDGET_EXCEEDED` that replays naming another cap is a mismatch: the limits did
    /// not replay as they were applied (the cap is part of the recorded outcome).
    #[test]
    fn a_rejection_naming_another_cap_does_not_replay() {
        let entry = LogEntry {
            seq: 7,
            stamp: Stamp(1),
            event: Event::Recharge(Recharge {
                id: EventId(9),
                user: UserId(1),
                coins: 1,
                price: rust_decimal::Decimal::ONE,
                currency: crate::economy::Currency::USD,
                package: None.into(),
                channel: crate::economy::Channel::App,
                paid_ms: 0,
            }),
            outcome: Outcome::over_budget(7, BudgetCap::DailyBudget),
            totals: None,
            reversed: None,
        };
        assert_eq!(
            check_replayed(&entry, &Outcome::over_budget(7, BudgetCap::DailyBudget)),
            Ok(())
        );
        let err =
            check_replayed(&entry, &Outcome::over_budget(7, BudgetCap::MonthlyBudget)).unwrap_err();
        assert!(
            matches!(err, ReplayError::CapMismatch { seq: 7, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("DailyBudget"), "{err}");
    }

    #[test]
    fn a_replay_gives_the_live_state_on_any_number_of_threads() {
        let economy = Economy::embedded();
        let config = |replay_threads| EngineConfig {
            shards: 8,
            replay_threads,
            ..EngineConfig::default()
        };
        let live = Engine::new(economy.clone(), config(2)).unwrap();
        let users = REPLAY_PARALLEL_EVENTS_MIN as u64;
        let recharges: Vec<Event> = (0..users)
            .map(|u| Recharge::of_package(&economy, u128::from(u), u, "coins_100"))
            .map(|r| Event::Recharge(r.expect("a package of the embedded economy")))
            .collect();
        let panda = GiftId(economy.gift_index("panda").expect("a gift of the catalog"));
        let gifts: Vec<Event> = (0..users)
            .map(|u| {
                Event::Gift(Gift {
                    id: EventId(1 << 64 | u128::from(u)),
                    sender: UserId(u),
                    creator: CreatorId(1_000_000 + u % 7),
                    stream: StreamId(u % 5),
                    gift: panda,
                    count: 1 + (u % 3) as u32,
                })
            })
            .collect();
        let stamp = Stamp(1_794_700_800_000);
        live.apply_batch(&recharges, stamp);
        live.apply_batch(&gifts, Stamp(stamp.0 + 1));
        let log = live.drain_log();
        assert_eq!(log.len(), 2 * users as usize);
        for threads in [1, 2, 3, 8] {
            let replayed = Engine::new(economy.clone(), config(threads)).unwrap();
            replayed.replay(&log).unwrap();
            assert_eq!(
                replayed.state_fingerprint(),
                live.state_fingerprint(),
                "replayed on {threads} threads"
            );
        }
    }
}
