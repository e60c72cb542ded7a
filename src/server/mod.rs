//! The engine behind the binary protocol and the HTTP/JSON API: the listeners
//! ([`tcp`], [`http`] over [`http_conn`], [`tls`]), the one admission path of events
//! ([`ingest`]), auth, the live feed ([`sse`]) and what the listeners share
//! ([`Service`]). A node ([`crate::node`]) assembles them with the commit path.

pub mod auth;
pub mod http;
pub mod http_conn;
pub mod ingest;
pub mod settlement;
pub mod sse;
pub mod tcp;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::engine::{Engine, Event, Outcome, Stamp};
use crate::persist::journal::CommitHandle;
use crate::telemetry;
use auth::Auth;
use sse::Feeds;

/// Stamps batches with the system's UTC time, never going backwards (a clock step back
/// must not reorder months or idempotency ages).
#[derive(Debug, Default)]
pub struct Clock {
    last_ms: AtomicU64,
}

impl Clock {
    /// A clock that never stamps before `floor` (the ledger's newest recorded stamp).
    pub fn starting_at(floor: Stamp) -> Clock {
        Clock {
            last_ms: AtomicU64::new(floor.0),
        }
    }

    pub fn now(&self) -> Stamp {
        let now = crate::clock::now().0;
        let prev = self.last_ms.fetch_max(now, Ordering::AcqRel);
        Stamp(prev.max(now))
    }
}

/// Resolves once `closing` turns true (or its sender is gone).
pub async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Everything the listeners share.
pub struct Service {
    pub engine: Arc<Engine>,
    pub config: Config,
    pub commits: CommitHandle,
    pub auth: Auth,
    pub feeds: Arc<Feeds>,
    pub clock: Clock,
    pub metrics: PrometheusHandle,
    /// True once state is loaded; false again while shutting down.
    pub ready: AtomicBool,
    pub closing: watch::Receiver<bool>,
    /// A cluster node's partition map (`None`: a single node owns everything).
    pub partitions: Option<crate::cluster::PartitionMap>,
    /// A cluster node's reader of the shared read model, which answers leaderboard and
    /// totals reads for every partition.
    pub shared_reads: Option<crate::persist::read_model::ReadModelReader>,
    /// Where economy versions are stored (the Redis journal; `None`: in memory).
    pub economy_store: Option<crate::persist::redis::RedisJournal>,
    /// One economy change at a time.
    pub economy_changes: tokio::sync::Mutex<()>,
}

/// Why an economy change was not made.
#[derive(Debug, thiserror::Error)]
pub enum EconomyChangeError {
    /// The new economy is invalid: names the key.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Storage is unavailable: nothing changed, or (after the change was applied) it is
    /// not confirmed durable yet.
    #[error("{0}")]
    Unavailable(String),
}

/// An economy version in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EconomyChanged {
    pub version: u32,
    /// The change's sequence number (0 when nothing changed).
    pub seq: u64,
    pub changed: bool,
}

impl Service {
    /// Applies a validated batch and counts its outcomes. `issued_ms`: one per event (0 =
    /// not given), or empty.
    pub fn apply(
        &self,
        events: &[Event],
        issued_ms: &[u64],
        protocol: &'static str,
    ) -> Vec<Outcome> {
        let outcomes = self
            .engine
            .apply_issued(events, issued_ms, self.clock.now());
        self.commits.applied();
        metrics::histogram!(telemetry::BATCH_EVENTS, "protocol" => protocol)
            .record(events.len() as f64);
        telemetry::count_outcomes(events, &outcomes);
        outcomes
    }

    /// Puts `file`'s terms in force as the next economy version, for every event
    /// numbered after the change: validated whole, stored, journaled (waits until
    /// durable). Terms already in force change nothing (the answer names their version).
    pub async fn change_economy(
        &self,
        file: crate::economy::EconomyFile,
    ) -> Result<EconomyChanged, EconomyChangeError> {
        let _one_at_a_time = self.economy_changes.lock().await;
        let Some(next) = self.engine.economy_successor(file)? else {
            return Ok(EconomyChanged {
                version: self.engine.economy().version,
                seq: 0,
                changed: false,
            });
        };
        if let Some(store) = &self.economy_store {
            store
                .store_economy(&next)
                .await
                .map_err(|e| EconomyChangeError::Unavailable(format!("nothing changed: {e}")))?;
        }
        let version = next.version;
        let outcome = self
            .engine
            .change_economy(next, self.clock.now())
            .map_err(|e| ConfigError::new("economy", e.to_string()))?;
        self.commits.applied();
        self.commits.durable(outcome.seq).await.map_err(|_| {
            EconomyChangeError::Unavailable(format!(
                "economy version {version} applied at seq {} but not confirmed durable",
                outcome.seq
            ))
        })?;
        tracing::info!(version, seq = outcome.seq, "economy version in force");
        Ok(EconomyChanged {
            version,
            seq: outcome.seq,
            changed: true,
        })
    }

    /// `Ok` when this node owns every event of the batch (always on a single node);
    /// else the first event it does not own, with its owner. Counted by protocol.
    pub fn check_partitions(
        &self,
        events: &[Event],
        protocol: &'static str,
    ) -> Result<(), crate::cluster::WrongPartition> {
        let Some(map) = &self.partitions else {
            return Ok(());
        };
        map.check(events).inspect_err(|_| {
            metrics::counter!(telemetry::WRONG_PARTITION_TOTAL, "protocol" => protocol)
                .increment(1);
        })
    }

    /// Ready: state loaded, commits healthy, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.commits.healthy() && !*self.closing.borrow()
    }
}

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the final commit failed: applied events may not be durable")]
    FinalCommit,
    #[error(
        "fenced: this process lost the ledger's lease (another process took it, or wrote the \
         journal while it was free); events applied here after that were not journaled and \
         were not acknowledged"
    )]
    Fenced,
    #[error("read model: {0}")]
    ReadModel(#[from] crate::persist::journal::JournalError),
    /// The Redis journal named by `redis.url` cannot be opened.
    #[error("GIFTSTREAM_REDIS_URL: {0}")]
    RedisUrl(crate::persist::journal::JournalError),
    #[error("recovery: {0}")]
    Recovery(Box<dyn std::error::Error + Send + Sync>),
    /// The economy of a ledger in memory cannot be put in force at start.
    #[error(transparent)]
    Economy(#[from] crate::engine::EconomyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger whose journal was stamped by a clock running ahead restarts on a correct
    /// clock: its stamps start at the journal's newest, never behind it.
    #[test]
    fn a_clock_never_stamps_before_the_ledgers_newest_stamp() {
        let ahead = Stamp(crate::clock::now().0 + 3_600_000);
        let clock = Clock::starting_at(ahead);
        assert!(clock.now() >= ahead);
        assert!(clock.now() >= ahead);
        let fresh = Clock::default();
        assert!(fresh.now() < ahead);
    }
}
