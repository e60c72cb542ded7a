//! The engine behind the binary protocol and the HTTP/JSON API: the listeners
//! ([`tcp`], [`http`] over [`http_conn`], [`tls`]), the one admission path of events
//! ([`ingest`]), auth, the live feed ([`sse`]) and what the listeners share
//! ([`Service`]). A node ([`crate::node`]) assembles them with the commit path.

pub mod auth;
pub mod closer;
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
/// must not reorder months or idempotency ages), and never jumping forward: a wall clock
/// stepped ahead (an operator's `date -s`, a bad NTP source) would otherwise move the
/// ledger's time at once — release held diamonds early, close a day's spending window,
/// expire idempotency ages. The stamps follow the wall clock only as fast as the
/// monotonic clock allows plus [`CLOCK_SLEW`] of it (and [`CLOCK_STEP_TOLERANCE_MS`] at
/// once), so a step of an hour is caught up over ten hours; the lag shows in
/// `giftstream_clock_wall_ahead_seconds`.
#[derive(Debug)]
pub struct Clock {
    last_ms: AtomicU64,
    /// The trusted time at a monotonic instant: what forward movement is measured from.
    anchor: parking_lot::Mutex<Anchor>,
}

/// How much faster than the monotonic clock the stamps may run to catch up with a wall
/// clock that stepped forward: a tenth.
pub const CLOCK_SLEW: f64 = 0.1;
/// A forward step this small is followed at once (NTP corrections, scheduling noise).
pub const CLOCK_STEP_TOLERANCE_MS: u64 = 2_000;
/// The anchor moves to the trusted time this often, so the tolerance and the slew are
/// measured over a short span (never accumulated over the process's life).
const CLOCK_REANCHOR_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    trusted_ms: u64,
    at: std::time::Instant,
}

impl Anchor {
    /// The stamp for a wall time `wall` read `elapsed_ms` after the anchor, and the anchor
    /// to keep. Pure, for the tests: the trusted time may advance by `elapsed` and a slew
    /// of it; the stamp by that and the tolerance.
    fn limit(self, wall: u64, elapsed_ms: u64) -> (u64, u64) {
        let slewed = self
            .trusted_ms
            .saturating_add(elapsed_ms)
            .saturating_add((elapsed_ms as f64 * CLOCK_SLEW) as u64);
        let stamp = wall.min(slewed.saturating_add(CLOCK_STEP_TOLERANCE_MS));
        (stamp, wall.min(slewed))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::starting_at(Stamp(0))
    }
}

impl Clock {
    /// A clock that never stamps before `floor` (the ledger's newest recorded stamp); the
    /// wall clock as it reads now is trusted.
    pub fn starting_at(floor: Stamp) -> Clock {
        Clock {
            last_ms: AtomicU64::new(floor.0),
            anchor: parking_lot::Mutex::new(Anchor {
                trusted_ms: crate::clock::now().0,
                at: std::time::Instant::now(),
            }),
        }
    }

    pub fn now(&self) -> Stamp {
        let wall = crate::clock::now().0;
        let now = {
            let mut anchor = self.anchor.lock();
            let elapsed = anchor.at.elapsed().as_millis() as u64;
            let (stamp, trusted) = anchor.limit(wall, elapsed);
            if elapsed >= CLOCK_REANCHOR_MS {
                let ahead = wall.saturating_sub(stamp);
                metrics::gauge!(telemetry::CLOCK_WALL_AHEAD_SECONDS).set(ahead as f64 / 1e3);
                if ahead > 0 {
                    tracing::warn!(
                        ahead_ms = ahead,
                        "the wall clock is ahead of the ledger's time by more than it may jump; \
                         catching up at a tenth of real time"
                    );
                }
                *anchor = Anchor {
                    trusted_ms: trusted,
                    at: std::time::Instant::now(),
                };
            }
            stamp
        };
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
    /// The durable history's reader (`history.enabled`): transaction pages beyond what
    /// the engine keeps in memory.
    pub history: Option<crate::persist::downstream::HistoryReader>,
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
        let now = self.clock.now();
        self.engine.check_economy_edit(&next, now)?;
        if let Some(store) = &self.economy_store {
            store
                .store_economy(&next)
                .await
                .map_err(|e| EconomyChangeError::Unavailable(format!("nothing changed: {e}")))?;
        }
        let version = next.version;
        let outcome = self
            .engine
            .change_economy(next, now)
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

    /// A wall clock stepped an hour ahead moves the stamps by the tolerance at once, then
    /// at a tenth of real time; one that runs normally is followed exactly; a step back
    /// is followed by the anchor (the stamps themselves never go back: `last_ms`).
    #[test]
    fn a_forward_clock_step_is_caught_up_slowly() {
        let t0 = 1_800_000_000_000;
        let anchor = Anchor {
            trusted_ms: t0,
            at: std::time::Instant::now(),
        };
        // Normal: 5 s later the wall reads 5 s later.
        assert_eq!(anchor.limit(t0 + 5_000, 5_000), (t0 + 5_000, t0 + 5_000));
        // NTP noise within the tolerance: followed.
        assert_eq!(anchor.limit(t0 + 1_500, 0), (t0 + 1_500, t0));
        // An hour's step 10 s after the anchor: 10 s + 1 s slew + 2 s tolerance.
        let hour = 3_600_000;
        assert_eq!(
            anchor.limit(t0 + 10_000 + hour, 10_000),
            (t0 + 13_000, t0 + 11_000)
        );
        // Re-anchored every 10 s, the stamps catch up an hour in ten.
        let mut a = anchor;
        let mut real = 0u64;
        let mut stamp = 0;
        while real < 11 * hour {
            real += 10_000;
            let (s, trusted) = a.limit(t0 + real + hour, 10_000);
            stamp = s;
            a = Anchor {
                trusted_ms: trusted,
                at: a.at,
            };
            if real < 9 * hour {
                assert!(stamp < t0 + real + hour, "caught up too fast at {real}");
            }
        }
        assert_eq!(stamp, t0 + real + hour, "caught up within eleven hours");
        // A step back: the anchor follows the wall.
        assert_eq!(anchor.limit(t0 - 60_000, 1_000), (t0 - 60_000, t0 - 60_000));
    }
}
