//! [`RedisJournal`]: appends runs (idempotent by sequence number, through the lease when
//! one is held), trims, reads and replays the journal stream.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::conn::{RedisConn, connect, connect_to};
use super::format::{JournalBatch, StreamEntry, decode_entry, entry_seq};
use super::keys::{JOURNAL_KEY, Ledger};
use super::lease::{FENCED, Fence};
use crate::engine::{Engine, Event, LogEntry, ReplayError};
use crate::persist::journal::{Journal, JournalError};

/// Most records in one journal stream entry: a group commit of more (a long Redis
/// stall lets up to `commit.pending_events_max` events wait) is appended as several
/// entries. ~100 bytes each encoded: entries stay under ~2 MiB (a recovery read of
/// [`RECOVERY_ENTRIES_PER_READ`] entries under ~64 MiB), and decode far below
/// [`super::format::JOURNAL_DECODE_BYTES_MAX`].
pub const JOURNAL_ENTRY_RECORDS_MAX: usize = 16_384;

/// Stream entries read per `XRANGE` during recovery.
pub const RECOVERY_ENTRIES_PER_READ: usize = 32;

/// Why recovery stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("replay: {0}")]
    Replay(#[from] ReplayError),
}

/// Durability beyond the master: `WAIT replicas timeout` after each append.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitReplicas {
    pub replicas: u32,
    pub timeout_ms: u64,
}

#[derive(Clone)]
pub struct RedisJournal {
    pub(super) conn: RedisConn,
    pub(super) key: String,
    pub(super) url: String,
    pub(super) ledger: Ledger,
    pub(super) wait: WaitReplicas,
    /// Set by [`RedisJournal::acquire`]: appends and trims then go through the lease.
    pub(super) fence: Option<std::sync::Arc<Fence>>,
}

impl RedisJournal {
    /// Connects (bounded timeouts; the committer retries failed appends itself).
    pub async fn connect(url: &str) -> Result<RedisJournal, JournalError> {
        Ok(RedisJournal {
            conn: connect(url).await?,
            key: JOURNAL_KEY.to_owned(),
            url: url.to_owned(),
            ledger: Ledger::default(),
            wait: WaitReplicas::default(),
            fence: None,
        })
    }

    /// Connects the way `config` says: one Redis or a Redis Cluster, this node's journal
    /// key, `WAIT` after appends when `redis.wait_replicas` > 0.
    pub async fn open(config: &crate::config::Config) -> Result<RedisJournal, JournalError> {
        let ledger = Ledger::of(config);
        Ok(RedisJournal {
            conn: connect_to(&config.redis.url, config.redis.cluster).await?,
            key: ledger.journal_key(),
            url: config.redis.url.clone(),
            ledger,
            wait: WaitReplicas {
                replicas: config.redis.wait_replicas,
                timeout_ms: config.redis.wait_timeout_ms,
            },
            fence: None,
        })
    }

    /// Takes the ledger lease (`redis.lease_ms`) before this process reads or writes its
    /// journal ([`Fence::take`]: one process at a time may append). From then on every
    /// append and trim checks and renews the lease in the same script, and a task renews
    /// it every third of a lease while idle; once another process holds it, appends fail
    /// with `FENCED` and the committer stops (see `journal::commit`).
    pub async fn acquire(&mut self, lease_ms: u64) -> Result<(), JournalError> {
        let mut conn = self.conn.clone();
        let fence = Arc::new(Fence::take(&mut conn, &self.ledger, &self.key, lease_ms).await?);
        self.fence = Some(fence.clone());
        let journal = self.clone();
        tokio::spawn(async move {
            let period = Duration::from_millis(lease_ms / 3);
            while fence.held() {
                tokio::time::sleep(period).await;
                if let Err(e) = journal.fenced_op::<i64>("renew", "", &[]).await {
                    tracing::warn!(error = %e, "ledger lease renewal failed");
                }
            }
        });
        Ok(())
    }

    /// Gives the lease back (graceful shutdown, after the final commit), so the next
    /// start need not wait for it to run out.
    pub async fn release(&self) {
        if let Some(fence) = &self.fence {
            fence.release(&mut self.conn.clone()).await;
        }
    }

    /// Runs `op` with its `id` and `bytes` through the lease ([`Fence::op`]).
    async fn fenced_op<T: redis::FromRedisValue>(
        &self,
        op: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<T, JournalError> {
        let fence = self.fence.as_ref().expect("only with a fence");
        let mut conn = self.conn.clone();
        fence
            .op(&mut conn, &self.ledger, &self.key, op, id, bytes)
            .await
    }

    /// The URL it connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether `url` is a Redis Cluster.
    pub fn cluster(&self) -> bool {
        matches!(self.conn, RedisConn::Cluster(_))
    }

    /// Whose journal this is.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A new connection to the same Redis (or Redis Cluster).
    pub async fn connect_again(&self) -> Result<RedisConn, JournalError> {
        connect_to(&self.url, self.cluster()).await
    }

    /// The journaled runs whose last sequence number is at least `seq` (the first holds
    /// `seq` unless the journal was trimmed past it), at most `count` of them, in order.
    pub async fn runs_from(
        &self,
        seq: u64,
        count: usize,
    ) -> Result<Vec<Vec<LogEntry>>, JournalError> {
        let mut conn = self.conn.clone();
        let page: Vec<StreamEntry> = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(format!("{seq}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(JournalError::from)?;
        page.iter().map(decode_entry).collect()
    }

    /// A reader of this journal on a connection of its own (made on the calling task's
    /// runtime), for reads: they neither queue in front of this journal's appends on
    /// one connection nor parse their replies on this journal's runtime.
    pub async fn reader(&self) -> Result<RedisJournal, JournalError> {
        Ok(RedisJournal {
            conn: self.connect_again().await?,
            ..self.clone()
        })
    }

    /// The sequence number of the last journaled run (0 for an empty journal).
    pub async fn last_seq(&self) -> Result<u64, JournalError> {
        let mut conn = self.conn.clone();
        let top: Vec<StreamEntry> = redis::cmd("XREVRANGE")
            .arg(&self.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(JournalError::from)?;
        Ok(top.first().map_or(0, |(id, _)| entry_seq(id)))
    }

    /// Replays every journaled run after the engine's last sequence number into
    /// `engine`, in order. Returns the number of events replayed.
    pub async fn recover_into(&self, engine: &Engine) -> Result<u64, RecoveryError> {
        self.replay_into(engine, None).await
    }

    /// Like [`RedisJournal::recover_into`], and also counts event ids journaled again
    /// within the retry horizon of their last copy (an event applied twice; must be 0;
    /// economy changes and battle closes are not idempotency keys and not counted; an id
    /// used again after the horizon is a new event, [`IdAudit`]). Keeps every id in
    /// memory: ~40 bytes per distinct id.
    pub async fn audit_into(&self, engine: &Engine) -> Result<(u64, u64), RecoveryError> {
        let mut ids = IdAudit {
            last_stamp: std::collections::HashMap::new(),
            horizon_ms: engine.config().idempotency_horizon_ms,
            twice: 0,
        };
        let replayed = self.replay_into(engine, Some(&mut ids)).await?;
        Ok((replayed, ids.twice))
    }

    async fn replay_into(
        &self,
        engine: &Engine,
        mut ids: Option<&mut IdAudit>,
    ) -> Result<u64, RecoveryError> {
        let mut conn = self.conn.clone();
        let mut start = format!("({}-0", engine.last_seq());
        let mut replayed = 0u64;
        loop {
            let page: Vec<StreamEntry> = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(RECOVERY_ENTRIES_PER_READ)
                .query_async(&mut conn)
                .await
                .map_err(JournalError::from)?;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            start = format!("({last_id}");
            for entry in &page {
                let entries = decode_entry(entry)?;
                if let Some(ids) = ids.as_deref_mut() {
                    // Economy changes and battle closes are idempotent by their state
                    // (a version, a battle), not by their ids: a close rejected early is
                    // journaled under the id the accepted one has.
                    for e in entries
                        .iter()
                        .filter(|e| !matches!(e.event, Event::Economy(_) | Event::BattleClose(_)))
                    {
                        // A battle's derived id is a domain of its own (review B11): a
                        // client event may carry the same 128 bits.
                        ids.note(
                            (matches!(e.event, Event::Battle(_)), e.event.id().0),
                            e.stamp.0,
                        );
                    }
                }
                self.know_economies(engine, &entries).await?;
                engine.replay(&entries)?;
                replayed += entries.len() as u64;
            }
        }
        Ok(replayed)
    }
}

/// The audit's check of event ids: an id is unique within the retry horizon, so one
/// journaled again less than the horizon after its last copy counts as journaled twice;
/// an id used again after it (a client reusing its own id, a battle PUT again after the
/// index forgot it: review L1) is a new event.
struct IdAudit {
    last_stamp: std::collections::HashMap<(bool, u128), u64>,
    horizon_ms: u64,
    twice: u64,
}

impl IdAudit {
    fn note(&mut self, id: (bool, u128), stamp_ms: u64) {
        if let Some(last) = self.last_stamp.insert(id, stamp_ms)
            && stamp_ms.saturating_sub(last) <= self.horizon_ms
        {
            self.twice += 1;
        }
    }
}

impl Journal for RedisJournal {
    fn trim(&self, seq: u64) -> BoxFuture<'_, Result<u64, JournalError>> {
        Box::pin(async move {
            // Entry ids are the last seq of their run: every run with id <= seq is covered.
            if self.fence.is_some() {
                return self
                    .fenced_op("xtrim", &format!("{}-0", seq + 1), &[])
                    .await;
            }
            let mut conn = self.conn.clone();
            redis::cmd("XTRIM")
                .arg(&self.key)
                .arg("MINID")
                .arg(format!("{}-0", seq + 1))
                .query_async(&mut conn)
                .await
                .map_err(JournalError::from)
        })
    }

    fn append<'a>(&'a self, entries: &'a [LogEntry]) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            // A run is split into stream entries of at most JOURNAL_ENTRY_RECORDS_MAX
            // records, each appended (and idempotent by its id) in turn: however long a
            // stall made the run, every entry reads back. A retry of the run after a
            // failure re-splits it the same way and finds the entries already written.
            for chunk in entries.chunks(JOURNAL_ENTRY_RECORDS_MAX) {
                self.append_entry(chunk).await?;
            }
            Ok(())
        })
    }
}

impl RedisJournal {
    /// Appends `entries` (a gap-free run) as one stream entry, id its last seq.
    async fn append_entry(&self, entries: &[LogEntry]) -> Result<(), JournalError> {
        {
            let Some(last) = entries.last() else {
                return Ok(());
            };
            let bytes = JournalBatch::from_entries(entries).encode();
            let id = format!("{}-0", last.seq);
            let added: Result<String, JournalError> = match &self.fence {
                Some(_) => self.fenced_op("xadd", &id, &bytes).await,
                None => redis::cmd("XADD")
                    .arg(&self.key)
                    .arg(&id)
                    .arg("b")
                    .arg(&bytes)
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(JournalError::from),
            };
            let added = match added {
                Ok(id) if self.wait.replicas > 0 => self.wait_replicas().await.map(|()| id),
                other => other,
            };
            let done = match added {
                Ok(_) => Ok(()),
                Err(e @ JournalError::AlreadyAppended(_)) => {
                    self.appended_before(e, &id, &bytes, last.seq).await
                }
                Err(e) => Err(e),
            };
            if let Some(fence) = &self.fence {
                match &done {
                    Ok(()) => fence
                        .appended
                        .store(last.seq, std::sync::atomic::Ordering::Release),
                    Err(e) if e.is_fenced() => {
                        fence.lost.store(true, std::sync::atomic::Ordering::Release)
                    }
                    Err(_) => {}
                }
            }
            done
        }
    }
}

impl RedisJournal {
    /// An append refused as not greater than the stream's top (`refused`): done already
    /// if the top is ours or later (an earlier attempt that timed out after it ran).
    /// "Ours": under the lease no other process appends to this journal.
    async fn appended_before(
        &self,
        refused: JournalError,
        id: &str,
        bytes: &[u8],
        last_seq: u64,
    ) -> Result<(), JournalError> {
        if self.fence.is_some() {
            // Done only if the journal holds exactly this run at its id (the head check
            // passed, so this is an earlier attempt of ours); anything else is another
            // writer's entry.
            let entry: Vec<StreamEntry> = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(id)
                .arg(id)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(JournalError::from)?;
            let ours = entry.first().is_some_and(|(_, fields)| {
                fields
                    .iter()
                    .any(|(f, v)| f == "b" && v.as_slice() == bytes)
            });
            if !ours {
                return Err(JournalError::Fenced(format!(
                    "{FENCED}: the journal holds another writer's entry at or after {id}"
                )));
            }
        } else if self.last_seq().await? < last_seq {
            return Err(refused);
        }
        if self.wait.replicas > 0 {
            self.wait_replicas().await?;
        }
        Ok(())
    }

    /// `WAIT` until `wait.replicas` replicas of the journal's master have every write so
    /// far, or fail (the committer retries; the append is idempotent). On a Redis Cluster
    /// the command is routed to the master of the journal's slot (redis-rs would send a
    /// keyless `WAIT` to every node).
    async fn wait_replicas(&self) -> Result<(), JournalError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.wait.replicas).arg(self.wait.timeout_ms);
        // To the journal's master, on the connection the append used.
        let acked: i64 = self.conn.clone().on_slot_master(wait, &self.key).await?;
        if acked < i64::from(self.wait.replicas) {
            metrics::counter!(crate::telemetry::REDIS_WAIT_SHORT_TOTAL).increment(1);
            return Err(JournalError::ReplicasShort {
                acked,
                replicas: self.wait.replicas,
                timeout_ms: self.wait.timeout_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IdAudit;

    /// Review L1: an id journaled again after the retry horizon (a client reusing its
    /// own id, a battle PUT again after the index forgot it) is a new event; again within
    /// it, an event applied twice. Battle ids are a domain of their own.
    #[test]
    fn an_id_counts_twice_only_within_the_horizon_of_its_last_copy() {
        let mut ids = IdAudit {
            last_stamp: std::collections::HashMap::new(),
            horizon_ms: 600_000,
            twice: 0,
        };
        ids.note((false, 7), 1_000);
        ids.note((true, 7), 1_000);
        assert_eq!(ids.twice, 0, "a battle's id beside a client's");
        ids.note((false, 7), 1_000 + 600_001);
        assert_eq!(ids.twice, 0, "past the horizon: a new event");
        ids.note((false, 7), 1_000 + 600_001 + 600_000);
        assert_eq!(ids.twice, 1, "within the horizon of the last copy");
    }
}
