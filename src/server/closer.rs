//! The battle closer: when the service's clock passes a held battle's `end_ms`, it
//! submits the battle's [`BattleClose`] through the ordinary ingest path and waits until
//! it is durable (as `settlement::run_applier` does for reports). The engine accepts
//! it only at or after the end; from its number on the battle is frozen, `GET
//! /v1/battles/{id}` says `ended` once it is committed, and the feeds send `battle_end`
//! when the run holding it is published (review B1, B2, B8).
//!
//! At start the first look closes the battles whose end passed while the process was
//! down. A close that fails (Redis unreachable, the commit queue full) is tried again
//! at the next look: closes are idempotent by the battle's state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::{BattleClose, Event, Status};

use super::Service;

/// How often the closer looks for battles past their end: a `battle_end` comes at most
/// this long (plus a commit) after a battle's `end_ms`.
pub const CLOSE_TICK: Duration = Duration::from_millis(250);
/// Closes submitted per look (one batch; more wait for the next look): bounded by the
/// battles held (`engine.battles_max`) anyway.
pub const CLOSES_PER_TICK_MAX: usize = 256;

/// Closes the battles past their end until the service closes (a cluster node holds
/// none: battles are refused there).
pub async fn run(service: Arc<Service>, mut closing: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CLOSE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.changed() => return,
        }
        if *closing.borrow() {
            return;
        }
        if let Err(e) = close_due(&service).await {
            tracing::warn!(error = %e, "battle closes: retrying at the next look");
        }
    }
}

/// Submits the closes of the battles past their end by the service's clock and waits
/// until they are durable.
async fn close_due(service: &Service) -> Result<(), crate::persist::journal::JournalError> {
    if !service.commits.accepting() {
        return Ok(());
    }
    let now = service.clock.now().0;
    let mut due = service.engine.battles_to_close(now);
    if due.is_empty() {
        return Ok(());
    }
    due.truncate(CLOSES_PER_TICK_MAX);
    let events: Vec<Event> = due
        .into_iter()
        .map(|battle| Event::BattleClose(BattleClose { battle }))
        .collect();
    // Stamped by the service's clock at or after `now` (it never goes back): each close
    // is at or past its battle's end.
    let outcomes = service.apply(&events, &[], "internal");
    for (event, o) in events.iter().zip(&outcomes) {
        if let (Event::BattleClose(c), Status::Rejected(code)) = (event, o.status) {
            tracing::warn!(battle = c.battle.0, %code, "a battle close was refused");
        }
    }
    let last = outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
    service.commits.durable(last).await
}
