//! Cluster settlements: a creator cashes out on its owner node the diamonds every node
//! credited it.
//!
//! A gift is applied on its sender's node, which credits the creator's diamonds there;
//! a payout is applied on the creator's owner. So each node reports to each creator's
//! owner the diamonds it has credited that creator **in total** (cumulative, from its
//! committed journal only), and the owner journals the report as a settlement event,
//! which adds the increase over that node's last report ([`crate::engine::Settlement`]).
//! Cumulative reports make every step idempotent: a report sent twice, lost, reordered
//! or re-sent after a restart adds exactly what is new, and the next report repairs a
//! lost one.
//!
//! The reports travel through Redis, in the owner's inbox
//! `giftstream:{ledger-<owner>}:settlements` (a stream in the owner's journal slot,
//! [`crate::persist::settlement::Mailbox`]): a node reports while its peer is down, and
//! nothing needs a peer's address or token.
//!
//! - [`Reporter`] (every node): the committer hands it each committed run; it keeps,
//!   per creator owned elsewhere, the coins its senders gave ([`Reporter::committed`]),
//!   and every `cluster.settle_interval_ms` [`run_reporter`] writes the changed ones to
//!   their owners' inboxes (at most [`REPORTS_PER_ENTRY_MAX`] per stream entry and
//!   [`REPORTS_PER_TICK_MAX`] per interval; an inbox over [`INBOX_ENTRIES_MAX`] entries is
//!   not written to until its owner drains it — the reports wait, cumulative). A creator
//!   whose whole diamonds did not change since its last report (its coins grew by less
//!   than a diamond) is not reported again. At start every such creator is reported once
//!   (the owner finds most reports repeated).
//! - [`run_applier`] (every node): reads its own inbox, applies each entry's reports as
//!   settlement events through the ordinary ingest path, waits until they are durable,
//!   then deletes the entry. A crash in between re-applies the entry at the next start:
//!   the same reports are duplicates of the journaled ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::watch;

use crate::cluster::PartitionMap;
use crate::economy::Economy;
use crate::engine::{
    CreatorId, Credited, Effect, Engine, Event, Gift, LogEntry, Settlement, Status, VideoGift,
};
use crate::persist::journal::JournalError;
use crate::persist::redis::RedisConn;
use crate::persist::settlement::{InboxEntry, Mailbox, Report};
use crate::telemetry;

use super::Service;

/// Reports in one inbox entry.
pub const REPORTS_PER_ENTRY_MAX: usize = 4096;
/// Reports written per interval (the rest wait for the next).
pub const REPORTS_PER_TICK_MAX: usize = 256 * 1024;
/// An inbox this long is not written to until its owner drains it.
pub const INBOX_ENTRIES_MAX: u64 = 10_000;
/// Inbox entries the applier reads at a time.
const ENTRIES_PER_READ: usize = 16;

/// What a node has credited the creators other nodes own, and which changed since they
/// were reported.
pub struct Reporter {
    map: PartitionMap,
    local: usize,
    /// The engine: the economy versions committed runs put in force.
    engine: Arc<Engine>,
    state: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// The economy in force at the last committed run taken in.
    economy: Option<Arc<Economy>>,
    /// Per creator owned elsewhere: the diamonds this node's senders credited it
    /// (committed, exactly), and the total last written to its owner's inbox ([`UNSENT`]:
    /// none since this start, or the write failed).
    credited: FxHashMap<CreatorId, (Credited, (u64, u32))>,
    /// Creators whose credit changed since their last report.
    dirty: FxHashSet<CreatorId>,
}

/// No report written yet for this creator since the start.
const UNSENT: (u64, u32) = (u64::MAX, u32::MAX);

/// A credit as a report's `(whole diamonds, billionths)`; held one below [`UNSENT`].
fn exact(credited: &Credited) -> (u64, u32) {
    let whole = u64::try_from(credited.diamonds)
        .unwrap_or(u64::MAX)
        .min(u64::MAX - 1);
    // Below 10^9: fits a u32.
    (whole, credited.fraction_nanos() as u32)
}

impl Reporter {
    /// A cluster node's reporter, from the engine's recovered (committed) state: every
    /// creator owned elsewhere is reported once. `None` on a single node.
    pub fn new(engine: &Arc<Engine>, map: Option<&PartitionMap>) -> Option<Arc<Reporter>> {
        let map = map?;
        let local = map.local_index()?;
        let credited: FxHashMap<CreatorId, (Credited, (u64, u32))> = engine
            .creators_credited(|c| map.owner_of(c.0) != local)
            .into_iter()
            .map(|(c, credited)| (c, (credited, UNSENT)))
            .collect();
        let dirty = credited.keys().copied().collect();
        Some(Arc::new(Reporter {
            map: map.clone(),
            local,
            engine: engine.clone(),
            state: Mutex::new(Pending {
                economy: Some(engine.economy()),
                credited,
                dirty,
            }),
        }))
    }

    /// Takes in a committed run (called by the committer, in commit order): each gift
    /// credits at the economy in force when it was applied.
    pub fn committed(&self, entries: &[LogEntry]) {
        let mut state = self.state.lock();
        let state = &mut *state;
        for e in entries {
            match e.event {
                Event::Economy(change) => match self.engine.economy_by_digest(change.digest) {
                    Some(economy) => state.economy = Some(economy),
                    None => tracing::error!(seq = e.seq, "settlements: unknown economy version"),
                },
                // A gift on a video credits its creator as a stream's does.
                Event::Gift(Gift {
                    creator,
                    gift,
                    count,
                    ..
                })
                | Event::VideoGift(VideoGift {
                    creator,
                    gift,
                    count,
                    ..
                }) if e.outcome.is_accepted() && self.map.owner_of(creator.0) != self.local => {
                    let economy = state.economy.get_or_insert_with(|| self.engine.economy());
                    let cost = economy
                        .gifts
                        .get(gift.0 as usize)
                        .map_or(0, |spec| u128::from(spec.coins) * u128::from(count));
                    let entry = state
                        .credited
                        .entry(creator)
                        .or_insert((Credited::default(), UNSENT));
                    entry.0.credit(economy, cost);
                    state.dirty.insert(creator);
                }
                _ => {}
            }
        }
    }

    /// Up to `max` changed creators with what was credited them here, by owner, marked as
    /// sent; a creator whose credit did not change since its last report is not
    /// reported again.
    fn take(&self, max: usize) -> BTreeMap<usize, Vec<Report>> {
        let mut state = self.state.lock();
        let picked: Vec<CreatorId> = state.dirty.iter().take(max).copied().collect();
        let mut by_owner: BTreeMap<usize, Vec<Report>> = BTreeMap::new();
        for c in picked {
            state.dirty.remove(&c);
            let Some((credited, sent)) = state.credited.get_mut(&c) else {
                continue;
            };
            let now = exact(credited);
            if now == *sent {
                continue;
            }
            *sent = now;
            by_owner
                .entry(self.map.owner_of(c.0))
                .or_default()
                .push((c.0, now.0, now.1));
        }
        by_owner
    }

    /// Marks reports that could not be sent as changed and unsent again.
    fn put_back(&self, reports: &[Report]) {
        let mut state = self.state.lock();
        for &(c, ..) in reports {
            let c = CreatorId(c);
            if let Some((_, sent)) = state.credited.get_mut(&c) {
                *sent = UNSENT;
            }
            state.dirty.insert(c);
        }
    }

    /// Creators waiting for a report.
    pub fn pending(&self) -> usize {
        self.state.lock().dirty.len()
    }

    /// Writes the changed creators' reports to their owners' inboxes.
    async fn flush(&self, mailbox: &mut Mailbox) {
        let local = &self.map.nodes()[self.local].name;
        for (owner, reports) in self.take(REPORTS_PER_TICK_MAX) {
            let owner = &self.map.nodes()[owner].name;
            if let Err((sent, e)) = send(mailbox, owner, local, &reports).await {
                tracing::warn!(%owner, error = %e, "settlement reports not sent; they wait for the next interval");
                self.put_back(&reports[sent..]);
            }
        }
        metrics::gauge!(telemetry::SETTLEMENT_PENDING_CREATORS).set(self.pending() as f64);
    }
}

/// Writes `reports` from node `local` to `owner`'s inbox; on error, how many were sent.
async fn send(
    mailbox: &mut Mailbox,
    owner: &str,
    local: &str,
    reports: &[Report],
) -> Result<(), (usize, JournalError)> {
    let len = mailbox.len(owner).await.map_err(|e| (0, e))?;
    if len >= INBOX_ENTRIES_MAX {
        let key = crate::persist::settlement::inbox_key(owner);
        return Err((0, JournalError::InboxFull { key, len }));
    }
    let mut sent = 0;
    for chunk in reports.chunks(REPORTS_PER_ENTRY_MAX) {
        let entry = InboxEntry::new(local, chunk.to_vec());
        mailbox.post(owner, &entry).await.map_err(|e| (sent, e))?;
        sent += chunk.len();
        metrics::counter!(telemetry::SETTLEMENT_REPORTS_TOTAL, "result" => "sent")
            .increment(chunk.len() as u64);
    }
    Ok(())
}

/// Every `interval`, sends the changed creators' reports until `stop`.
pub async fn run_reporter(
    reporter: Arc<Reporter>,
    conn: RedisConn,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut mailbox = Mailbox::new(conn);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => reporter.flush(&mut mailbox).await,
            _ = super::closed(&mut stop) => return,
        }
    }
}

/// Applies the reports in this node's inbox as settlement events until `closing`.
pub async fn run_applier(
    service: Arc<Service>,
    conn: RedisConn,
    interval: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let Some(map) = service.partitions.clone() else {
        return;
    };
    let Some(local) = map.local() else { return };
    let mut inbox = Inbox {
        mailbox: Mailbox::new(conn),
        owner: local.name.clone(),
        after: "0-0".to_owned(),
    };
    loop {
        if *closing.borrow() {
            return;
        }
        match drain(&service, &map, &mut inbox, &mut closing).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) if *closing.borrow() => return,
            Err(e) => {
                tracing::warn!(error = %e, "settlement inbox: retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = super::closed(&mut closing) => return,
        }
    }
}

/// This node's inbox, read up to the entry `after`.
struct Inbox {
    mailbox: Mailbox,
    owner: String,
    after: String,
}

/// Applies the inbox entries after `inbox.after`; true if it read a full page (more may
/// wait).
async fn drain(
    service: &Service,
    map: &PartitionMap,
    inbox: &mut Inbox,
    closing: &mut watch::Receiver<bool>,
) -> Result<bool, JournalError> {
    let page = inbox
        .mailbox
        .read(&inbox.owner, &inbox.after, ENTRIES_PER_READ)
        .await?;
    let full = page.len() == ENTRIES_PER_READ;
    for (id, entry) in page {
        let events = match entry.and_then(|entry| settlements(map, entry)) {
            Ok(events) => events,
            Err(e) => {
                // Not a report this node can apply: left in the inbox for an operator.
                tracing::error!(entry = %id, error = %e, "settlement inbox entry refused");
                inbox.after = id;
                continue;
            }
        };
        apply_durably(service, &events, closing).await?;
        inbox.mailbox.delete(&inbox.owner, &id).await?;
        inbox.after = id;
    }
    Ok(full)
}

/// The settlement events of one inbox entry (reports for creators this node does not
/// own are refused and counted; a report from no other node of the map, or with a
/// fraction of a whole diamond or more, refuses the entry).
fn settlements(map: &PartitionMap, entry: InboxEntry) -> Result<Vec<Event>, String> {
    let source = map
        .index_of(&entry.from)
        .filter(|&i| Some(i) != map.local_index())
        .ok_or_else(|| format!("reports from {:?}, not another node of the map", entry.from))?;
    let mut events = Vec::with_capacity(entry.reports.len());
    for (creator, diamonds, nanos) in entry.reports {
        if u128::from(nanos) >= crate::engine::NANOS_PER_DIAMOND {
            return Err(format!("a report's fraction {nanos} is not below 10^9"));
        }
        if !map.owns(creator) {
            metrics::counter!(telemetry::SETTLEMENT_REPORTS_TOTAL, "result" => "refused")
                .increment(1);
            tracing::error!(creator, from = %entry.from, "a settlement report for a creator this node does not own (do the nodes run the same map?)");
            continue;
        }
        let creator = CreatorId(creator);
        let source = source as u16;
        events.push(Event::Settlement(Settlement {
            id: Settlement::id_for_exact(creator, source, diamonds, nanos),
            creator,
            source,
            diamonds,
            nanos,
        }));
    }
    Ok(events)
}

/// Applies `events` through the ingest path, in batches, and waits until they are durable.
async fn apply_durably(
    service: &Service,
    events: &[Event],
    closing: &mut watch::Receiver<bool>,
) -> Result<(), JournalError> {
    for batch in events.chunks(service.config.limits.events_per_frame_max.max(1)) {
        loop {
            if *closing.borrow() {
                return Err(JournalError::ShuttingDown);
            }
            if service.commits.accepting() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let outcomes = service.apply(batch, &[], "cluster");
        let mut credited = 0u64;
        let mut applied = 0u64;
        for o in outcomes.iter().filter(|o| !o.duplicate) {
            if let Status::Accepted(Effect::Settled { credited: c }) = o.status {
                credited = credited.saturating_add(c);
                applied += 1;
            }
        }
        let last = outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
        service.commits.durable(last).await?;
        metrics::counter!(telemetry::SETTLEMENT_REPORTS_TOTAL, "result" => "applied")
            .increment(applied);
        metrics::counter!(telemetry::SETTLEMENT_DIAMONDS_TOTAL).increment(credited);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterConfig, NodeConfig};
    use crate::economy::Economy;
    use crate::engine::{EngineConfig, EventId, Gift, GiftId, Recharge, Stamp, StreamId, UserId};

    fn map() -> PartitionMap {
        let node = |name: &str, partitions: &str| NodeConfig {
            name: name.into(),
            tcp_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            partitions: partitions.into(),
        };
        let config = ClusterConfig {
            node: "a".into(),
            partitions: 8,
            nodes: vec![node("a", "0-3"), node("b", "4-7")],
            ..ClusterConfig::default()
        };
        PartitionMap::from_config(&config).unwrap().unwrap()
    }

    #[test]
    fn the_reporter_reports_committed_exact_credits_to_owners_once_per_change() {
        let map = map();
        let economy = Economy::embedded();
        let engine = Arc::new(Engine::new(economy.clone(), EngineConfig::default()).unwrap());
        let theirs = (1..).find(|&c| map.owner_of(c) == 1).unwrap();
        let ours = (1..).find(|&c| map.owner_of(c) == 0).unwrap();
        let rose = GiftId(economy.gift_index("rose").unwrap());
        let gift = |id: u128, creator: u64, count: u32| {
            Event::Gift(Gift {
                id: EventId(id),
                sender: UserId(1_000_000),
                creator: CreatorId(creator),
                stream: StreamId(5),
                gift: rose,
                count,
            })
        };
        let recharge =
            Event::Recharge(Recharge::of_package(&economy, 1, 1_000_000, "coins_7000").unwrap());
        // Committed before the start: reported once at the start.
        engine.apply_batch(
            &[recharge, gift(2, theirs, 10), gift(3, ours, 10)],
            Stamp(1),
        );
        engine.drain_log();
        let reporter = Reporter::new(&engine, Some(&map)).unwrap();
        assert_eq!(
            reporter.take(100),
            BTreeMap::from([(1, vec![(theirs, 5, 0)])])
        );
        assert!(reporter.take(100).is_empty(), "nothing changed");

        // A rose is half a diamond: reported with its fraction (SPEC: fractions carry).
        let run = |events: &[Event]| {
            engine.apply_batch(events, Stamp(2));
            reporter.committed(&engine.drain_log());
        };
        run(&[gift(4, theirs, 1), gift(5, ours, 100)]);
        assert_eq!(
            reporter.take(100),
            BTreeMap::from([(1, vec![(theirs, 5, 500_000_000)])]),
            "11 roses: 5.5 diamonds"
        );
        run(&[gift(6, theirs, 1)]);
        let reports = reporter.take(100);
        assert_eq!(reports, BTreeMap::from([(1, vec![(theirs, 6, 0)])]));
        // A report that could not be written is sent again, even unchanged.
        reporter.put_back(&reports[&1]);
        assert_eq!(reporter.take(100), reports);
        assert_eq!(reporter.pending(), 0);
    }
}
