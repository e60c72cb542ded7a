//! The economy versions of a ledger: which one is in force for which sequence numbers,
//! which versions the engine knows by digest, and a change put in force as its own
//! numbered event (holding the sequence gate exclusively, like a payout).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Engine;
use super::event::{EconomyChange, Effect, Event, LogEntry, Outcome, Stamp, Status};
use crate::config::ConfigError;
use crate::economy::Economy;

/// An economy version that cannot follow the one in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EconomyError {
    #[error("economy version {next} cannot follow version {current} (one change at a time)")]
    NotNext { current: u32, next: u32 },
    #[error("economy version {version} moves or drops the catalog code {code} ({id:?})")]
    Codes {
        version: u32,
        code: usize,
        id: String,
    },
}

/// Whether `next` may follow `current`: the next version, every code kept.
pub(super) fn check_successor(current: &Economy, next: &Economy) -> Result<(), EconomyError> {
    if Some(next.version) != current.version.checked_add(1) {
        return Err(EconomyError::NotNext {
            current: current.version,
            next: next.version,
        });
    }
    // Version 0 is not recorded: its codes are the file's positions at this start, which
    // a journal's first version (from any earlier file) need not keep. A ledger's events
    // all follow its first version, except those journaled by a build before versions.
    if current.version == 0 {
        return Ok(());
    }
    let gifts = current.gifts.iter().map(|g| &g.id).enumerate();
    let packages = current.packages.iter().map(|p| &p.id).enumerate();
    let kept = |code: usize, id: &String, now: Option<&String>| {
        if now == Some(id) {
            Ok(())
        } else {
            Err(EconomyError::Codes {
                version: next.version,
                code,
                id: id.clone(),
            })
        }
    };
    for (code, id) in gifts {
        kept(code, id, next.gifts.get(code).map(|g| &g.id))?;
    }
    for (code, id) in packages {
        kept(code, id, next.packages.get(code).map(|p| &p.id))?;
    }
    for (code, id) in current.items.iter().map(|i| &i.id).enumerate() {
        kept(code, id, next.items.get(code).map(|i| &i.id))?;
    }
    Ok(())
}

impl Engine {
    /// At a change of the earnings hold's grid (under the gate, exclusively: every
    /// engine, live or replaying, sees the same held diamonds here), every creator keeps
    /// at most `HOLD_BUCKETS_CARRY` buckets, so that the new grid's fit beside them
    /// (`hold.rs`). Diamonds already credited keep the hold they were credited under.
    pub(super) fn carry_holds_over(&self, current: &Economy, next: &Economy) {
        let grid = super::hold::hold_grid_ms(next.earnings_hold_ms);
        if grid.is_none() || grid == super::hold::hold_grid_ms(current.earnings_hold_ms) {
            return;
        }
        let clock = self.hold_clock.load(Ordering::Acquire);
        for book in self.creators.iter() {
            book.lock().holds.carry_over(clock);
        }
    }

    /// The economy in force now (version 0: not recorded in a ledger yet).
    pub fn economy(&self) -> Arc<Economy> {
        Arc::clone(&self.gate.read())
    }

    /// The economy an event numbered `seq` was applied under (for events this process
    /// applied or replayed; older ones: the one it started with).
    pub fn economy_at(&self, seq: u64) -> Arc<Economy> {
        let in_force = self.in_force.lock();
        let i = in_force.partition_point(|(from, _)| *from < seq).max(1);
        Arc::clone(&in_force[i - 1].1)
    }

    /// The economy version recorded under `digest`, if this engine knows it.
    pub fn economy_by_digest(&self, digest: u64) -> Option<Arc<Economy>> {
        self.economies.lock().get(&digest).cloned()
    }

    /// The version that would put `file`'s terms in force, validated whole, with every
    /// catalog code kept ([`Economy::successor`]); `None` when those terms are in force
    /// and recorded already (a version 0 economy is not recorded: its successor is due).
    pub fn economy_successor(
        &self,
        file: crate::economy::EconomyFile,
    ) -> Result<Option<Economy>, ConfigError> {
        let current = self.economy();
        let next = current.successor(file)?;
        Ok((current.version == 0 || !current.same_terms(&next)).then_some(next))
    }

    /// Whether `next` may be put in force at `now` without refusing a payment already
    /// made under a promotion of the economy in force ([`Economy::check_offers_kept`],
    /// over the retry horizon). The service checks every edit with it (`PUT
    /// /v1/economy`, an edited economy.toml at a start); replay does not (a recorded
    /// change was checked when made).
    pub fn check_economy_edit(&self, next: &Economy, now: Stamp) -> Result<(), ConfigError> {
        self.economy()
            .check_offers_kept(next, now.0, self.config.idempotency_horizon_ms)?;
        Ok(())
    }

    /// The version a start records for `file` (economy.toml), given the digest of the
    /// file the last start saw (`last_file`, [`crate::economy::EconomyFile::digest`]):
    /// `None` when the file was not edited since (an economy put in force by
    /// `PUT /v1/economy` meanwhile stays), or when its terms are in force already.
    pub fn economy_for_start(
        &self,
        file: crate::economy::EconomyFile,
        last_file: Option<u64>,
    ) -> Result<Option<Economy>, ConfigError> {
        if self.economy().version > 0 && last_file == Some(file.digest()) {
            return Ok(None);
        }
        self.economy_successor(file)
    }

    /// Puts `base`'s terms in force as the unrecorded version 0 (`false`, and nothing
    /// changes, once a version is recorded): a ledger whose first recorded version is
    /// `base` replays the events journaled before it — by a build before versions — under
    /// the terms they were applied with, whatever the file at this start says.
    pub fn assume_base_economy(&self, base: &Economy) -> bool {
        let mut gate = self.gate.write();
        if gate.version != 0 {
            return false;
        }
        let mut base = base.clone();
        base.version = 0;
        *gate = Arc::new(base);
        self.in_force.lock()[0].1 = Arc::clone(&gate);
        true
    }

    /// Makes a recorded economy version known, for replaying its change event.
    pub fn know_economy(&self, economy: Arc<Economy>) {
        let digest = economy.to_doc().digest();
        self.economies.lock().insert(digest, economy);
    }

    /// Puts `next` in force for every event numbered after the change, which is logged
    /// (and journaled) as an [`EconomyChange`] with its own number. `next` must be the
    /// version after the one in force and keep its catalog codes
    /// ([`Economy::successor`]). Waits for the chunks in flight, like a payout.
    pub fn change_economy(&self, next: Economy, stamp: Stamp) -> Result<Outcome, EconomyError> {
        let mut gate = self.gate.write();
        check_successor(&gate, &next)?;
        self.carry_holds_over(&gate, &next);
        let doc = next.to_doc();
        let change = EconomyChange {
            version: next.version,
            digest: doc.digest(),
        };
        let next = Arc::new(next);
        self.economies
            .lock()
            .insert(change.digest, Arc::clone(&next));
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let outcome = Outcome {
            seq,
            status: Status::Accepted(Effect::Stored),
            duplicate: false,
            cap: None,
        };
        self.meta_log.lock().push(LogEntry {
            seq,
            stamp,
            event: Event::Economy(change),
            outcome,
            totals: None,
            reversed: None,
        });
        self.in_force.lock().push((seq, Arc::clone(&next)));
        *gate = next;
        Ok(outcome)
    }
}
