//! The Redis journal: one stream entry per group commit, appended with one `XADD`.
//!
//! Key layout (hash-tagged so every key of the ledger lives in one Redis Cluster slot):
//! - `giftstream:{ledger}:journal` — a stream; entry id `<last seq of the run>-0`, one
//!   field `b` holding a [`JournalBatch`] in the bincode format.
//!
//! - `giftstream:{ledger}:owner` — the ledger lease (see [`RedisJournal::acquire`]): the
//!   token of the one process that may append; checked and renewed by every append.
//! - `giftstream:{ledger}:head` — the id of the last append, moved by the same script:
//!   an append must find it where its process left it (no gap, no other writer).
//! - `giftstream:{ledger}:shards` — the ledger's `engine.shards`, recorded at each start:
//!   a start with no snapshot replays the journal with it (a ledger keeps its count).
//! - `giftstream:{ledger-<node>}:map` — a cluster node's partition map layout
//!   ([`crate::cluster::PartitionMap::layout`]), recorded at its first start: a start
//!   with another layout is refused (a node's partitions are fixed for its ledger's life).
//!
//! Idempotent by sequence number: the entry id is the run's last sequence number, and
//! Redis refuses an id that is not greater than the stream's top. A retried append
//! whose first attempt did run (a timeout after success) is therefore refused, and
//! recognised as done by reading the stream's top id.

use std::time::Duration;

use bincode::{Decode, Encode};
use futures::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use super::journal::{Journal, JournalError};
use crate::engine::{Engine, Event, GiftTotals, LogEntry, ReplayError, Stamp};
use crate::protocol::{self, WireEvent, WireOutcome};

/// The journal of a single node. A cluster node's is `giftstream:{ledger-<node>}:journal`
/// ([`Ledger::journal_key`]): one slot per node, so its commit is one command on one
/// Redis Cluster master and the nodes' journals spread over the masters.
pub const JOURNAL_KEY: &str = "giftstream:{ledger}:journal";
/// Format version of [`JournalBatch`]. Version 2 added [`JournalRecord::totals`]
/// (version 1 batches are still read; their gifts have no totals); version 3 added the
/// settlement event (`WireEvent::Settlement`; version 2 batches, which cannot hold one,
/// are read as they are); version 4 added the economy change (`WireEvent::Economy`;
/// version 3 batches are read as they are).
pub const JOURNAL_VERSION: u8 = 4;
/// Most records in one journal stream entry: a group commit of more (a long Redis
/// stall lets up to `commit.pending_events_max` events wait) is appended as several
/// entries. ~100 bytes each encoded: entries stay under ~2 MiB (a recovery read of
/// [`RECOVERY_ENTRIES_PER_READ`] entries under ~64 MiB), and decode far below
/// [`protocol::JOURNAL_DECODE_BYTES_MAX`].
pub const JOURNAL_ENTRY_RECORDS_MAX: usize = 16_384;
/// How long a start retries journaling the economy version it records before it gives up.
const START_APPEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Stream entries read per `XRANGE` during recovery.
pub const RECOVERY_ENTRIES_PER_READ: usize = 32;
/// A command that takes longer fails (and the committer retries it).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// One journaled event with its outcome and stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct JournalRecord {
    pub seq: u64,
    pub stamp: u64,
    pub event: WireEvent,
    pub outcome: WireOutcome,
    /// An accepted gift's `(creator, stream)` totals after it ([`GiftTotals`]).
    pub totals: Option<(u64, u64)>,
}

/// One group commit.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct JournalBatch {
    pub version: u8,
    pub records: Vec<JournalRecord>,
}

/// A record of journal format 1 (no totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
struct JournalRecordV1 {
    seq: u64,
    stamp: u64,
    event: WireEvent,
    outcome: WireOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct JournalBatchV1 {
    version: u8,
    records: Vec<JournalRecordV1>,
}

impl JournalBatch {
    pub fn from_entries(entries: &[LogEntry]) -> JournalBatch {
        JournalBatch {
            version: JOURNAL_VERSION,
            records: entries
                .iter()
                .map(|e| JournalRecord {
                    seq: e.seq,
                    stamp: e.stamp.0,
                    event: WireEvent::from(&e.event),
                    outcome: WireOutcome::from(&e.outcome),
                    totals: e.totals.map(|t| (t.creator, t.stream)),
                })
                .collect(),
        }
    }

    /// Decodes a batch of any format this build reads (the version is its first byte).
    pub fn decode(bytes: &[u8]) -> Result<JournalBatch, protocol::DecodeError> {
        match bytes.first() {
            Some(&1) => {}
            Some(&2) | Some(&3) => {
                let mut batch: JournalBatch = protocol::decode_journal(bytes)?;
                batch.version = JOURNAL_VERSION;
                return Ok(batch);
            }
            _ => return protocol::decode_journal(bytes),
        }
        let v1: JournalBatchV1 = protocol::decode_journal(bytes)?;
        Ok(JournalBatch {
            version: JOURNAL_VERSION,
            records: v1
                .records
                .into_iter()
                .map(|r| JournalRecord {
                    seq: r.seq,
                    stamp: r.stamp,
                    event: r.event,
                    outcome: r.outcome,
                    totals: None,
                })
                .collect(),
        })
    }

    pub fn into_entries(self) -> Result<Vec<LogEntry>, JournalError> {
        if self.version != JOURNAL_VERSION {
            return Err(JournalError(format!(
                "journal batch version {} (this build reads 1 to {JOURNAL_VERSION})",
                self.version
            )));
        }
        self.records
            .into_iter()
            .map(|r| {
                let event = Event::try_from(r.event)
                    .map_err(|e| JournalError(format!("seq {}: {e}", r.seq)))?;
                let outcome = r
                    .outcome
                    .to_outcome(&event)
                    .map_err(|e| JournalError(format!("seq {}: {e}", r.seq)))?;
                Ok(LogEntry {
                    seq: r.seq,
                    stamp: Stamp(r.stamp),
                    event,
                    outcome,
                    totals: r
                        .totals
                        .map(|(creator, stream)| GiftTotals { creator, stream }),
                })
            })
            .collect()
    }
}

/// Why recovery stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("replay: {0}")]
    Replay(#[from] ReplayError),
}

/// A stream entry as `XRANGE` returns it: id and field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Which ledger's keys a process uses: a single node's, or one cluster node's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The cluster node's name (`cluster.node`); `None` for a single node.
    pub node: Option<String>,
    /// The cluster's partition map (which gifters are this node's).
    pub map: Option<crate::cluster::PartitionMap>,
}

impl Ledger {
    /// The ledger `config` runs: its cluster node, if it is one.
    pub fn of(config: &crate::config::Config) -> Ledger {
        Ledger {
            node: (!config.cluster.node.is_empty()).then(|| config.cluster.node.clone()),
            map: config.partition_map().ok().flatten(),
        }
    }

    pub fn journal_key(&self) -> String {
        match &self.node {
            None => JOURNAL_KEY.to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:journal"),
        }
    }

    /// The ledger lease, in the journal's slot.
    pub fn owner_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:owner".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:owner"),
        }
    }

    /// The ledger's shard count, recorded at each start, in the journal's slot.
    pub fn shards_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:shards".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:shards"),
        }
    }

    /// A cluster node's recorded partition map layout, in the journal's slot (`None` on a
    /// single node, which owns everything).
    pub fn map_key(&self) -> Option<String> {
        self.node
            .as_ref()
            .map(|n| format!("giftstream:{{ledger-{n}}}:map"))
    }

    /// Why this ledger's recovered `engine` must not be served by this node: it holds
    /// state of partitions the node does not own (`None` on a single node, or when all
    /// is its own). `dir` names where the snapshot came from.
    pub fn foreign_state(&self, engine: &Engine, dir: &std::path::Path) -> Option<String> {
        let (map, node) = (self.map.as_ref()?, self.node.as_ref()?);
        let foreign = engine.foreign(|key| map.owns(key));
        let example = foreign.example?;
        Some(format!(
            "the ledger loaded from {} for node {node} holds state of partitions this node \
             does not own ({} wallets, {} creators' payouts or settlements, {} stream goals; \
             e.g. {example}): it is another node's, or the partition map changed. Nothing was \
             served; give node {node} its own snapshot directory",
            dir.display(),
            foreign.wallets,
            foreign.creators,
            foreign.goals
        ))
    }

    /// The ledger's economy versions: a hash from digest (16 hex digits) to the
    /// [`EconomyDoc`](crate::economy::EconomyDoc) bytes, in the journal's slot. Written
    /// before the change is applied, so a journaled change always finds its document;
    /// content-addressed, so a write is never overwritten with other content. Field
    /// `base`: the first version's digest; `file`: the digest of the economy.toml the
    /// last start saw.
    pub fn economies_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:economies".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:economies"),
        }
    }

    /// The id of the journal's last append, written by the same script as the append (so
    /// a failover that loses an append loses its head too), in the journal's slot.
    pub fn head_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:head".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:head"),
        }
    }
}

/// A connection to one Redis or to a Redis Cluster (which routes each command to the
/// master of its key's slot).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Runs `cmd` (a keyless command about one slot, e.g. `WAIT` or `SCAN`) on the master
    /// of `slot_key`'s slot; on one Redis, on it. redis-rs would send a keyless command to
    /// a random node (or every node) of a cluster.
    pub async fn on_slot_master<T: redis::FromRedisValue>(
        &mut self,
        cmd: redis::Cmd,
        slot_key: &str,
    ) -> Result<T, JournalError> {
        let reply = match self {
            RedisConn::Single(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(slot_key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                c.route_command(cmd, routing).await
            }
        }
        .map_err(redis_error)?;
        redis::from_redis_value(reply).map_err(|e| JournalError(format!("redis reply: {e}")))
    }

    /// The keys matching `pattern` in the slot of `slot_key` (on a Redis Cluster, SCAN
    /// goes to that slot's master; on one Redis, to it).
    pub async fn scan_slot(
        &mut self,
        slot_key: &str,
        pattern: &str,
    ) -> Result<Vec<String>, JournalError> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, page): (u64, Vec<String>) = self.on_slot_master(scan, slot_key).await?;
            keys.extend(page);
            cursor = next;
            if cursor == 0 {
                return Ok(keys);
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Durability beyond the master: `WAIT replicas timeout` after each append.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitReplicas {
    pub replicas: u32,
    pub timeout_ms: u64,
}

#[derive(Clone)]
pub struct RedisJournal {
    conn: RedisConn,
    key: String,
    url: String,
    ledger: Ledger,
    wait: WaitReplicas,
    /// Set by [`RedisJournal::acquire`]: appends and trims then go through the lease.
    fence: Option<std::sync::Arc<Fence>>,
}

/// The lease this process holds on its ledger.
struct Fence {
    key: String,
    token: String,
    lease_ms: u64,
    /// Another process holds the lease: never append again.
    lost: std::sync::atomic::AtomicBool,
    /// The last sequence number this process appended (the journal's last id, `<seq>-0`,
    /// as this process left it).
    appended: std::sync::atomic::AtomicU64,
    /// Released at shutdown: the renewal task stops.
    released: std::sync::atomic::AtomicBool,
}

/// The error code of an append refused because another process holds the ledger.
const FENCED: &str = "FENCED";

/// Checks that this process holds the lease, renews it, then runs the operation: `xadd`
/// (id, bytes), `xtrim` (min id) or `renew`. One script, so no write of a fenced process
/// can slip in between the check and the write. KEYS: journal, lease, head. ARGV: token,
/// lease ms, the head as this process left it, operation, id, bytes.
///
/// An append also requires the journal's head to be where this process left it (or to
/// be this very append, byte for byte: an attempt whose reply was lost), and moves it.
/// So it refuses to append after a gap (a failover lost acknowledged appends: continuing
/// would journal runs that depend on lost ones) and after another writer. A lease that
/// ran out (Redis unreachable longer than a lease, or the key lost) is taken back on the
/// same condition by an append; a renewal or trim that finds the head moved while the
/// lease was free does nothing (an append of ours may have run, its reply not yet back:
/// found by the soak test, where Redis is killed mid-append).
static FENCED_OP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local holder = redis.call('GET', KEYS[2])
if holder ~= false and holder ~= ARGV[1] then
  return redis.error_reply('FENCED the ledger is held by another process: ' .. holder)
end
if ARGV[4] == 'xadd' or holder == false then
  local head = redis.call('GET', KEYS[3]) or '0-0'
  local ours = head == ARGV[3]
  if not ours and ARGV[4] == 'xadd' and head == ARGV[5] then
    local entry = redis.call('XRANGE', KEYS[1], ARGV[5], ARGV[5])
    ours = entry[1] ~= nil and entry[1][2][2] == ARGV[6]
  end
  if not ours and ARGV[4] ~= 'xadd' then
    -- Not an append: an append of ours may have run whose reply is still on its way.
    -- Leave the lease alone; the next append (which has the bytes) decides.
    return 0
  end
  if not ours then
    return redis.error_reply('FENCED the journal is not as this process left it (head ' .. head .. ', this process appended up to ' .. ARGV[3] .. '): another process wrote it, or Redis lost appends (a failover); a restart continues from what it holds')
  end
end
if holder == false then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if ARGV[4] == 'xadd' then
  local id = redis.call('XADD', KEYS[1], ARGV[5], 'b', ARGV[6])
  redis.call('SET', KEYS[3], id)
  return id
elseif ARGV[4] == 'xtrim' then
  return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[5])
end
return 0
",
    )
});

/// The journal's last generated id (trims do not move it); `0-0` for no journal.
static LAST_ID: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
",
    )
});

/// This machine's host name (`/proc/sys/kernel/hostname`; empty if unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Where [`instance_id`] keeps its id: the OS temp directory, which containers do not
/// share (and which a restarted container keeps).
const INSTANCE_ID_FILE: &str = "giftstream-instance-id";

/// A random id of this machine instance — this host, or this container — kept in a file
/// of its temp directory (made by the first process that needs it). Host names and pids
/// do not tell instances apart: two containers with one host name both run as pid 1.
/// Empty if the file cannot be read or made (a lease is then never taken over early).
fn instance_id() -> String {
    let path = std::env::temp_dir().join(INSTANCE_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path)
        && uuid::Uuid::parse_str(id.trim()).is_ok()
    {
        return id.trim().to_owned();
    }
    let id = uuid::Uuid::new_v4().to_string();
    // Made whole or not at all (a rename), so that two first processes agree on one id.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let made = std::fs::write(&tmp, &id).is_ok() && std::fs::hard_link(&tmp, &path).is_ok();
    let _ = std::fs::remove_file(&tmp);
    match std::fs::read_to_string(&path) {
        Ok(kept) if made || uuid::Uuid::parse_str(kept.trim()).is_ok() => kept.trim().to_owned(),
        _ => String::new(),
    }
}

/// The identity a lease holder names as its host: host name and machine instance
/// (`"<hostname>#<instance id>"`); empty if either is unknown.
fn host_identity() -> String {
    let (host, instance) = (hostname(), instance_id());
    if host.is_empty() || instance.is_empty() {
        return String::new();
    }
    format!("{host}#{instance}")
}

/// Whether a lease `holder` (`"<uuid> (pid P, host H, started T)"`) names a process of
/// this machine instance (`H` = [`host_identity`]: host name and instance id, so two
/// containers with one host name differ) that no longer runs: `kill(P, 0)` finds none,
/// or P is this very process (which holds no lease yet: the holder ran in an earlier PID
/// namespace of this instance, as a restarted container's pid 1 did).
fn holder_is_gone(holder: &str, host: &str) -> bool {
    let field = |name: &str| {
        holder
            .split(&format!("{name} "))
            .nth(1)
            .and_then(|rest| rest.split([',', ')']).next())
    };
    let (Some(pid), Some(their_host)) = (
        field("pid").and_then(|p| p.parse::<i32>().ok()),
        field("host"),
    ) else {
        return false;
    };
    if host.is_empty() || their_host != host || pid <= 0 {
        return false;
    }
    if pid as u32 == std::process::id() {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

/// Deletes the lease if this process holds it.
static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

fn redis_error(e: redis::RedisError) -> JournalError {
    JournalError(format!("redis: {e}"))
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
    /// journal: one process at a time may append. If another holds it, waits up to one
    /// lease and a second for it to run out (a crashed holder's does), then fails naming
    /// the holder (a live holder renews it). From then on every append and trim checks and
    /// renews the lease in the same script, and a task renews it every third of a lease
    /// while idle; once another process holds it, appends fail with `FENCED` and the
    /// committer stops (see `journal::commit`).
    pub async fn acquire(&mut self, lease_ms: u64) -> Result<(), JournalError> {
        let key = self.ledger.owner_key();
        let host = host_identity();
        let token = format!(
            "{} (pid {}, host {host}, started {})",
            uuid::Uuid::new_v4(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        let give_up = std::time::Instant::now() + Duration::from_millis(lease_ms + 1000);
        let mut conn = self.conn.clone();
        let mut waiting = false;
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if taken.is_some() {
                break;
            }
            let holder: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if let Some(holder) = holder.as_deref().filter(|h| holder_is_gone(h, &host)) {
                // A crashed process on this host: no need to wait for its lease. (Were
                // it alive after all, e.g. in another PID namespace, its next append
                // would be refused: the fence, not this check, keeps the journal whole.)
                let deleted: i64 = RELEASE
                    .key(&key)
                    .arg(holder)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_error)?;
                if deleted == 1 {
                    tracing::info!(
                        key,
                        holder,
                        "the lease holder was a process of this host that is gone: lease taken over"
                    );
                }
                continue;
            }
            if std::time::Instant::now() >= give_up {
                return Err(JournalError(format!(
                    "{FENCED}: the ledger ({key}) is held by another running giftstream: {}; \
                     refusing to start a second writer",
                    holder.unwrap_or_default()
                )));
            }
            if !waiting {
                tracing::info!(
                    key,
                    holder = holder.unwrap_or_default(),
                    lease_ms,
                    "the ledger lease is held; waiting for it to run out (a crashed holder's does)"
                );
                waiting = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // We hold the lease: nobody else writes. The head starts at the journal's last
        // id (read once, with `XINFO`: a journal written before heads existed has none).
        let last: String = LAST_ID
            .key(&self.key)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let _: () = redis::cmd("SET")
            .arg(self.ledger.head_key())
            .arg(&last)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        tracing::info!(
            key,
            token,
            lease_ms,
            journal_last_id = last,
            "ledger lease taken"
        );
        let fence = std::sync::Arc::new(Fence {
            key,
            token,
            lease_ms,
            lost: Default::default(),
            appended: entry_seq(&last).into(),
            released: Default::default(),
        });
        self.fence = Some(fence.clone());
        let journal = self.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let period = Duration::from_millis(lease_ms / 3);
            while !fence.released.load(Ordering::Acquire) && !fence.lost.load(Ordering::Acquire) {
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
        let Some(fence) = &self.fence else { return };
        fence
            .released
            .store(true, std::sync::atomic::Ordering::Release);
        let released: redis::RedisResult<i64> = RELEASE
            .key(&fence.key)
            .arg(&fence.token)
            .invoke_async(&mut self.conn.clone())
            .await;
        match released {
            Ok(1) => tracing::info!(key = fence.key, "ledger lease released"),
            Ok(_) => tracing::warn!(key = fence.key, "ledger lease was not ours at release"),
            Err(e) => {
                tracing::warn!(error = %e, "ledger lease release failed; it runs out by itself")
            }
        }
    }

    /// Runs [`FENCED_OP`]: `op` with its `id` and `bytes`. A refusal marks the fence
    /// lost, for good.
    async fn fenced_op<T: redis::FromRedisValue>(
        &self,
        op: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<T, JournalError> {
        let fence = self.fence.as_ref().expect("only with a fence");
        if fence.lost.load(std::sync::atomic::Ordering::Acquire) {
            return Err(JournalError(format!(
                "{FENCED}: this process lost the ledger lease ({}) to another process",
                fence.key
            )));
        }
        let appended = fence.appended.load(std::sync::atomic::Ordering::Acquire);
        let result = FENCED_OP
            .key(&self.key)
            .key(&fence.key)
            .key(self.ledger.head_key())
            .arg(&fence.token)
            .arg(fence.lease_ms)
            .arg(format!("{appended}-0"))
            .arg(op)
            .arg(id)
            .arg(bytes)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error);
        if let Err(e) = &result
            && e.is_fenced()
        {
            fence.lost.store(true, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %e, "fenced: this process no longer holds the ledger; no further appends");
        }
        result
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
            .map_err(redis_error)?;
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
            .map_err(redis_error)?;
        Ok(top.first().map_or(0, |(id, _)| entry_seq(id)))
    }

    /// Stores the document of an economy version (before it is put in force).
    pub async fn store_economy(
        &self,
        economy: &crate::economy::Economy,
    ) -> Result<u64, JournalError> {
        let doc = economy.to_doc();
        let digest = doc.digest();
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("HSET")
            .arg(self.ledger.economies_key())
            .arg(format!("{digest:016x}"))
            .arg(doc.to_bytes())
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if economy.version == 1 {
            // The ledger's first recorded version (see `assume_base_economy`).
            self.set_economy_field("base", digest, true).await?;
        }
        Ok(digest)
    }

    /// The economy version the ledger recorded first (its document's digest is the
    /// `base` field of [`Ledger::economies_key`]), put in force as `engine`'s version 0
    /// if it has recorded none ([`Engine::assume_base_economy`]).
    pub async fn assume_base_economy(&self, engine: &Engine) -> Result<(), JournalError> {
        if engine.economy().version != 0 {
            return Ok(());
        }
        let Some(base) = self.economy_field("base").await? else {
            return Ok(());
        };
        let economy = self.load_economy(base).await?;
        engine.assume_base_economy(&economy);
        Ok(())
    }

    /// A field of the economies hash holding a digest (`base`, `file`).
    async fn economy_field(&self, field: &str) -> Result<Option<u64>, JournalError> {
        let mut conn = self.conn.clone();
        let hex: Option<String> = redis::cmd("HGET")
            .arg(self.ledger.economies_key())
            .arg(field)
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        hex.map(|h| {
            u64::from_str_radix(&h, 16)
                .map_err(|e| JournalError(format!("{} {field}: {e}", self.ledger.economies_key())))
        })
        .transpose()
    }

    async fn set_economy_field(
        &self,
        field: &str,
        digest: u64,
        only_new: bool,
    ) -> Result<(), JournalError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd(if only_new { "HSETNX" } else { "HSET" })
            .arg(self.ledger.economies_key())
            .arg(field)
            .arg(format!("{digest:016x}"))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// The economy version stored under `digest`, checked against it.
    async fn load_economy(&self, digest: u64) -> Result<crate::economy::Economy, JournalError> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.ledger.economies_key())
            .arg(format!("{digest:016x}"))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let missing = || {
            JournalError(format!(
                "economy document {digest:016x} is not in {}",
                self.ledger.economies_key()
            ))
        };
        let doc = crate::economy::EconomyDoc::from_bytes(&bytes.ok_or_else(missing)?)
            .map_err(|e| JournalError(e.to_string()))?;
        if doc.digest() != digest {
            return Err(missing());
        }
        crate::economy::Economy::from_doc(doc).map_err(|e| JournalError(e.to_string()))
    }

    /// At a start, after recovery: records `file` (economy.toml's terms) as the next
    /// economy version if it was edited since the last start (`file` field: the digest
    /// of the file that start saw), appending the change to the journal here, so that
    /// it is durable before the file counts as seen. A `PUT /v1/economy` version stays
    /// in force while the file is unchanged.
    pub async fn adopt_start_economy(
        &self,
        engine: &Engine,
        file: crate::economy::EconomyFile,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let digest = file.digest();
        let last_file = self.economy_field("file").await?;
        if let Some(next) = engine.economy_for_start(file, last_file)? {
            self.store_economy(&next).await?;
            let version = next.version;
            let outcome = engine.change_economy(next, crate::clock::now())?;
            // The engine holds only committed state until serving: its log is the change.
            // Retried like the committer retries (idempotent by seq), within a bound: a
            // replica that `WAIT` needs may still be syncing at a cluster's first start.
            let log = engine.drain_log();
            let deadline = std::time::Instant::now() + START_APPEND_TIMEOUT;
            let mut backoff = crate::persist::journal::RETRY_BACKOFF_MIN;
            while let Err(e) = self.append(&log).await {
                if e.is_fenced() || std::time::Instant::now() >= deadline {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "economy version not journaled yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(crate::persist::journal::RETRY_BACKOFF_MAX);
            }
            tracing::info!(
                version,
                seq = outcome.seq,
                "economy.toml was edited since the last start: a new economy version is in force"
            );
        }
        if last_file != Some(digest) {
            self.set_economy_field("file", digest, false).await?;
        }
        Ok(())
    }

    /// Makes the economy versions `entries` put in force known to `engine` (read from
    /// [`Ledger::economies_key`]), so that it can replay them. A missing or altered
    /// document is an error: the ledger cannot be replayed without it.
    pub async fn know_economies(
        &self,
        engine: &Engine,
        entries: &[LogEntry],
    ) -> Result<(), JournalError> {
        for entry in entries {
            let Event::Economy(change) = entry.event else {
                continue;
            };
            if engine.economy_by_digest(change.digest).is_some() {
                continue;
            }
            let economy = self
                .load_economy(change.digest)
                .await
                .map_err(|e| JournalError(format!("seq {}: {}", entry.seq, e.0)))?;
            if economy.version != change.version {
                return Err(JournalError(format!(
                    "seq {}: economy document {:016x} is version {}, the journal says {}",
                    entry.seq, change.digest, economy.version, change.version
                )));
            }
            engine.know_economy(std::sync::Arc::new(economy));
        }
        Ok(())
    }

    /// Replays every journaled run after the engine's last sequence number into
    /// `engine`, in order. Returns the number of events replayed.
    pub async fn recover_into(&self, engine: &Engine) -> Result<u64, RecoveryError> {
        Ok(self.replay_into(engine, None).await?.0)
    }

    /// Like [`RedisJournal::recover_into`], and also counts event ids that appear more
    /// than once in the journal (an event applied twice; must be 0; economy changes are
    /// not idempotency keys and not counted). Keeps every id in memory: 16 bytes per
    /// journaled event.
    pub async fn audit_into(&self, engine: &Engine) -> Result<(u64, u64), RecoveryError> {
        let mut ids = std::collections::HashSet::new();
        let (replayed, keyed) = self.replay_into(engine, Some(&mut ids)).await?;
        Ok((replayed, keyed - ids.len() as u64))
    }

    async fn replay_into(
        &self,
        engine: &Engine,
        mut ids: Option<&mut std::collections::HashSet<u128>>,
    ) -> Result<(u64, u64), RecoveryError> {
        let mut conn = self.conn.clone();
        let mut start = format!("({}-0", engine.last_seq());
        let mut replayed = 0u64;
        let mut keyed = 0u64;
        loop {
            let page: Vec<StreamEntry> = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(RECOVERY_ENTRIES_PER_READ)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            start = format!("({last_id}");
            for entry in &page {
                let entries = decode_entry(entry)?;
                if let Some(ids) = ids.as_deref_mut() {
                    for e in entries
                        .iter()
                        .filter(|e| !matches!(e.event, Event::Economy(_)))
                    {
                        ids.insert(e.event.id().0);
                        keyed += 1;
                    }
                }
                self.know_economies(engine, &entries).await?;
                engine.replay(&entries)?;
                replayed += entries.len() as u64;
            }
        }
        Ok((replayed, keyed))
    }
}

/// How the journal's Redis keeps its data on disk (`CONFIG GET` on the journal slot's
/// master), as `serve` reports it at start (README "Redis for the journal").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AofSettings {
    /// `appendonly`: `yes` or `no`.
    pub appendonly: String,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: String,
    /// `auto-aof-rewrite-percentage` (0 = never rewrite by itself).
    pub rewrite_percentage: String,
    /// `auto-aof-rewrite-min-size`, in bytes.
    pub rewrite_min_size: String,
}

impl AofSettings {
    /// Why acknowledged events could be lost with these settings beyond what the
    /// durability promise says, if they could.
    pub fn risk(&self) -> Option<String> {
        if self.appendonly != "yes" {
            return Some(format!(
                "the journal's Redis writes no AOF (appendonly {}): a Redis restart loses every \
                 event acknowledged since the last snapshot; set `appendonly yes`",
                self.appendonly
            ));
        }
        if self.appendfsync == "no" {
            return Some(
                "the journal's Redis leaves AOF flushes to the OS (appendfsync no, up to ~30 s): \
                 a machine crash loses that much of what was acknowledged; use everysec or always"
                    .to_owned(),
            );
        }
        None
    }
}

impl RedisJournal {
    /// The shard count recorded for this ledger ([`Ledger::shards_key`]), if any (none
    /// before its first start, or on a ledger started by a binary before this key).
    pub async fn recorded_shards(&self) -> Result<Option<usize>, JournalError> {
        redis::cmd("GET")
            .arg(self.ledger.shards_key())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// Records `shards` as this ledger's shard count (under the lease, after recovery).
    pub async fn record_shards(&self, shards: usize) -> Result<(), JournalError> {
        redis::cmd("SET")
            .arg(self.ledger.shards_key())
            .arg(shards)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// Checks this cluster node's partition map layout against the one recorded for its
    /// ledger ([`Ledger::map_key`]); returns whether one is recorded (a single node: true).
    /// A different layout is an error that says what was recorded and why it is fixed.
    pub async fn check_layout(&self) -> Result<bool, JournalError> {
        let (Some(key), Some(map)) = (self.ledger.map_key(), self.ledger.map.as_ref()) else {
            return Ok(true);
        };
        let recorded: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let Some(recorded) = recorded else {
            return Ok(false);
        };
        let configured = map.layout();
        if recorded != configured {
            return Err(JournalError(format!(
                "this ledger runs with the partition map \"{recorded}\" (recorded in {key}), \
                 the configuration gives \"{configured}\": a node's partitions, the partition \
                 count and the order of the nodes are fixed for the life of its ledger (its \
                 wallets are of its partitions; settlement reports name nodes by their place in \
                 the map). Serve this ledger with the recorded map; to use more machines, move \
                 whole nodes (ARCHITECTURE.md \"Adding a machine\")"
            )));
        }
        Ok(true)
    }

    /// Records this cluster node's partition map layout for its ledger (under the lease,
    /// after recovery; nothing on a single node).
    pub async fn record_layout(&self) -> Result<(), JournalError> {
        let (Some(key), Some(map)) = (self.ledger.map_key(), self.ledger.map.as_ref()) else {
            return Ok(());
        };
        redis::cmd("SET")
            .arg(key)
            .arg(map.layout())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    /// The AOF settings of the Redis holding this ledger's journal (on a cluster, the
    /// master of the journal's slot). Fails where `CONFIG` is refused (some managed Redis
    /// services rename or disable it).
    pub async fn aof_settings(&self) -> Result<AofSettings, JournalError> {
        const NAMES: [&str; 4] = [
            "appendonly",
            "appendfsync",
            "auto-aof-rewrite-percentage",
            "auto-aof-rewrite-min-size",
        ];
        // One `CONFIG GET` of several settings (Redis 7).
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(&NAMES[..]);
        let mut reply: std::collections::HashMap<String, String> =
            self.conn.clone().on_slot_master(cmd, &self.key).await?;
        let mut take = |name: &str| {
            reply
                .remove(name)
                .ok_or_else(|| JournalError(format!("CONFIG GET {name}: no such setting")))
        };
        Ok(AofSettings {
            appendonly: take(NAMES[0])?,
            appendfsync: take(NAMES[1])?,
            rewrite_percentage: take(NAMES[2])?,
            rewrite_min_size: take(NAMES[3])?,
        })
    }

    /// Logs the journal Redis's AOF settings — a warning when they lose acknowledged
    /// events beyond the durability promise — and exports them as
    /// `giftstream_journal_redis_info`.
    pub async fn report_aof_settings(&self) {
        let (appendonly, appendfsync) = match self.aof_settings().await {
            Ok(aof) => {
                match aof.risk() {
                    Some(risk) => tracing::warn!(
                        appendonly = %aof.appendonly,
                        appendfsync = %aof.appendfsync,
                        "{risk} (README \"Redis for the journal\")"
                    ),
                    None => tracing::info!(
                        appendonly = %aof.appendonly,
                        appendfsync = %aof.appendfsync,
                        auto_aof_rewrite_percentage = %aof.rewrite_percentage,
                        auto_aof_rewrite_min_size = %aof.rewrite_min_size,
                        "journal Redis persistence"
                    ),
                }
                (aof.appendonly, aof.appendfsync)
            }
            Err(e) => {
                tracing::info!(error = %e, "could not read the journal Redis's AOF settings");
                ("unknown".to_owned(), "unknown".to_owned())
            }
        };
        metrics::gauge!(
            crate::telemetry::JOURNAL_REDIS_INFO,
            "appendonly" => appendonly,
            "appendfsync" => appendfsync
        )
        .set(1.0);
    }
}

/// A connection with bounded timeouts (redis-rs's default response timeout, 500 ms, is
/// too short for a large write). It reconnects by itself; a command that failed is not
/// retried by it (callers retry).
pub async fn connect(url: &str) -> Result<RedisConn, JournalError> {
    connect_to(url, false).await
}

/// Like [`connect`]; with `cluster`, `url` is a comma-separated list of seed nodes of a
/// Redis Cluster (the same timeouts; it follows `MOVED`/`ASK` and refreshes its slot map
/// by itself, retrying a command at most twice).
pub async fn connect_to(url: &str, cluster: bool) -> Result<RedisConn, JournalError> {
    if cluster {
        let seeds: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .response_timeout(RESPONSE_TIMEOUT)
            .connection_timeout(CONNECTION_TIMEOUT)
            .retries(2)
            .max_retry_wait(500)
            .build()
            .map_err(redis_error)?;
        let conn = client.get_async_connection().await.map_err(redis_error)?;
        return Ok(RedisConn::Cluster(conn));
    }
    let client = redis::Client::open(url).map_err(redis_error)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config)
        .await
        .map(RedisConn::Single)
        .map_err(redis_error)
}

/// Decodes one stream entry into its run, checking that it ends at the entry's id.
fn decode_entry((id, fields): &StreamEntry) -> Result<Vec<LogEntry>, JournalError> {
    let bytes = fields
        .iter()
        .find(|(k, _)| k == "b")
        .map(|(_, v)| v)
        .ok_or_else(|| JournalError(format!("journal entry {id} has no field b")))?;
    let batch = JournalBatch::decode(bytes)
        .map_err(|e| JournalError(format!("journal entry {id}: {e}")))?;
    let entries = batch.into_entries()?;
    if entries.last().map(|e| e.seq) != Some(entry_seq(id)) {
        return Err(JournalError(format!(
            "journal entry {id} does not end at its id"
        )));
    }
    Ok(entries)
}

/// The sequence number in an entry id `<seq>-0`.
fn entry_seq(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Journal for RedisJournal {
    fn as_redis(&self) -> Option<RedisJournal> {
        Some(self.clone())
    }

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
                .map_err(redis_error)
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
            let bytes = protocol::encode(&JournalBatch::from_entries(entries));
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
                    .map_err(redis_error),
            };
            let added = match added {
                Ok(id) if self.wait.replicas > 0 => self.wait_replicas().await.map(|()| id),
                other => other,
            };
            let done = match added {
                Ok(_) => Ok(()),
                // Refused as not greater than the top: done already if the top is ours
                // or later (an earlier attempt that timed out after it ran). "Ours": under
                // the lease no other process appends to this journal.
                Err(e) if e.0.contains("equal or smaller") && self.fence.is_some() => {
                    // Done only if the journal holds exactly this run at its id (the head
                    // check passed, so this is an earlier attempt of ours); anything else
                    // is another writer's entry.
                    let entry: Vec<StreamEntry> = redis::cmd("XRANGE")
                        .arg(&self.key)
                        .arg(&id)
                        .arg(&id)
                        .query_async(&mut self.conn.clone())
                        .await
                        .map_err(redis_error)?;
                    let ours = entry.first().is_some_and(|(_, fields)| {
                        fields.iter().any(|(f, v)| f == "b" && *v == bytes)
                    });
                    if !ours {
                        return Err(JournalError(format!(
                            "{FENCED}: the journal holds another writer's entry at or after {id}"
                        )));
                    }
                    if self.wait.replicas > 0 {
                        self.wait_replicas().await?;
                    }
                    Ok(())
                }
                Err(e) if e.0.contains("equal or smaller") => {
                    let top = self.last_seq().await?;
                    if top < last.seq {
                        return Err(e);
                    }
                    if self.wait.replicas > 0 {
                        self.wait_replicas().await?;
                    }
                    Ok(())
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
            return Err(JournalError(format!(
                "WAIT: {acked} of {} replicas acknowledged within {} ms",
                self.wait.replicas, self.wait.timeout_ms
            )));
        }
        Ok(())
    }
}

/// How a start recovered.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub snapshot: Option<std::path::PathBuf>,
    pub replayed_events: u64,
    pub seconds: f64,
}

/// Start-up recovery (SPEC §2.5): the newest valid snapshot in `config.snapshot.dir`
/// (a corrupt one is reported and the previous one used), then the journal after it.
/// The journal is read only once this process holds the ledger lease
/// ([`RedisJournal::acquire`]); the snapshot loads meanwhile, so waiting for a crashed
/// holder's lease to run out overlaps the longest part of a restart. A ledger keeps its
/// shard count: a snapshot loads with its own ([`crate::persist::snapshot::load_newest`]);
/// without one, the journal is replayed with the count recorded in Redis, if any; the
/// count the ledger then runs with is recorded.
pub async fn recover(
    journal: &mut RedisJournal,
    config: &crate::config::Config,
    economy: crate::economy::Economy,
) -> Result<(std::sync::Arc<Engine>, Recovered), Box<dyn std::error::Error + Send + Sync>> {
    let started = std::time::Instant::now();
    let wanted = economy.to_file();
    let loading = {
        let (dir, engine_config, economy) = (
            config.snapshot.dir.clone(),
            config.engine.clone(),
            economy.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::persist::snapshot::load_newest(&dir, &economy, &engine_config)
        })
    };
    // A cluster node with another partition map than its ledger's is refused before
    // it takes the lease.
    let layout_recorded = journal.check_layout().await?;
    // So is a start whose read-model bucket count is not the recorded one.
    if config.read_model.enabled {
        let url = config.read_model.redis_url(journal.url());
        let mut conn = connect_to(url, journal.cluster()).await?;
        crate::persist::projection::Layout::of(&config.read_model)
            .verify(&mut conn)
            .await?;
    }
    journal.acquire(config.redis.lease_ms).await?;
    let recorded = journal.recorded_shards().await?;
    let (engine, snapshot) = match loading.await?? {
        Some((path, engine)) => (std::sync::Arc::new(engine), Some(path)),
        None => (
            crate::server::build_engine(&with_recorded_shards(config, recorded), economy)?,
            None,
        ),
    };
    // Another node's snapshot is refused before the journal is replayed onto it.
    if let Some(why) = journal
        .ledger()
        .foreign_state(&engine, &config.snapshot.dir)
    {
        journal.release().await;
        return Err(why.into());
    }
    // A ledger whose first recorded version follows events of a build before versions:
    // those replay under that version's terms, not this start's file.
    journal.assume_base_economy(&engine).await?;
    let replayed_events = journal.recover_into(&engine).await?;
    if !layout_recorded {
        // A ledger's first start with a recorded map (or its first start at all): its
        // journal was not yet checked against this map.
        if let Some(why) = journal
            .ledger()
            .foreign_state(&engine, &config.snapshot.dir)
        {
            journal.release().await;
            return Err(why.into());
        }
    }
    if recorded != Some(engine.config().shards) {
        journal.record_shards(engine.config().shards).await?;
    }
    if !layout_recorded {
        journal.record_layout().await?;
        tracing::info!(
            key = journal.ledger().map_key(),
            "recorded this ledger's partition map (fixed for the ledger's life)"
        );
    }
    journal.adopt_start_economy(&engine, wanted).await?;
    Ok((
        engine,
        Recovered {
            snapshot,
            replayed_events,
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

/// `config` with the ledger's recorded shard count, if one is recorded (logged when it
/// differs from `engine.shards`).
pub fn with_recorded_shards(
    config: &crate::config::Config,
    recorded: Option<usize>,
) -> crate::config::Config {
    let mut config = config.clone();
    if let Some(shards) = recorded
        && shards != config.engine.shards
    {
        tracing::warn!(
            recorded = shards,
            configured = config.engine.shards,
            "engine.shards differs from the count this ledger runs with; the ledger keeps its {shards} shards (a shard count is fixed for a ledger's life)"
        );
        config.engine.shards = shards;
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        CreatorId, Effect, EventId, Gift, GiftId, Outcome, Settlement, Status, StreamId, UserId,
    };

    #[test]
    fn journal_batches_of_formats_1_to_3_still_read_and_format_4_keeps_totals_settlements_and_economy_changes()
     {
        let gift = LogEntry {
            seq: 7,
            stamp: Stamp(1_796_083_200_000),
            event: Event::Gift(Gift {
                id: EventId(99),
                sender: UserId(3),
                creator: CreatorId(4),
                stream: StreamId(5),
                gift: GiftId(0),
                count: 2,
            }),
            outcome: Outcome {
                seq: 7,
                status: Status::Accepted(Effect::Coins(40)),
                duplicate: false,
            },
            totals: Some(GiftTotals {
                creator: 12,
                stream: 2,
            }),
        };
        let settlement = LogEntry {
            seq: 8,
            stamp: Stamp(1_796_083_200_001),
            event: Event::Settlement(Settlement {
                id: Settlement::id_for(CreatorId(4), 1, 250),
                creator: CreatorId(4),
                source: 1,
                diamonds: 250,
                nanos: 0,
            }),
            outcome: Outcome {
                seq: 8,
                status: Status::Accepted(Effect::Settled { credited: 200 }),
                duplicate: false,
            },
            totals: None,
        };
        let v3 = protocol::encode(&JournalBatch::from_entries(&[gift, settlement]));
        assert_eq!(v3[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v3).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![gift, settlement]);

        // Format 2 is format 3 without settlements: same bytes but the version.
        let mut v2 = protocol::encode(&JournalBatch::from_entries(&[gift]));
        v2[0] = 2;
        let back = JournalBatch::decode(&v2).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![gift]);

        let record = JournalBatch::from_entries(&[gift]).records[0];
        let v1 = protocol::encode(&JournalBatchV1 {
            version: 1,
            records: vec![JournalRecordV1 {
                seq: record.seq,
                stamp: record.stamp,
                event: record.event,
                outcome: record.outcome,
            }],
        });
        let back = JournalBatch::decode(&v1).unwrap().into_entries().unwrap();
        assert_eq!(
            back,
            vec![LogEntry {
                totals: None,
                ..gift
            }]
        );

        // Format 3 is format 4 without economy changes: same bytes but the version.
        let mut v3_only = v3.clone();
        v3_only[0] = 3;
        let back = JournalBatch::decode(&v3_only)
            .unwrap()
            .into_entries()
            .unwrap();
        assert_eq!(back, vec![gift, settlement]);
        let change = LogEntry {
            seq: 9,
            stamp: Stamp(1_796_083_200_002),
            event: Event::Economy(crate::engine::EconomyChange {
                version: 2,
                digest: 0xFEED,
            }),
            outcome: Outcome {
                seq: 9,
                status: Status::Accepted(Effect::Stored),
                duplicate: false,
            },
            totals: None,
        };
        let v4 = protocol::encode(&JournalBatch::from_entries(&[change]));
        let back = JournalBatch::decode(&v4).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![change]);

        let mut v5 = v3.clone();
        v5[0] = 5;
        let err = JournalBatch::decode(&v5)
            .unwrap()
            .into_entries()
            .unwrap_err();
        assert!(err.to_string().contains("version 5"), "{err}");
    }

    #[test]
    fn a_lease_holder_is_gone_only_if_it_is_a_dead_process_of_this_host() {
        let holder = |pid: u32, host: &str| format!("u (pid {pid}, host {host}, started 1)");
        let me = std::process::id();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(holder_is_gone(&holder(dead, "h1"), "h1"), "exited child");
        assert!(
            holder_is_gone(&holder(me, "h1"), "h1"),
            "our own pid, earlier namespace"
        );
        assert!(!holder_is_gone(&holder(1, "h1"), "h1"), "init is alive");
        assert!(!holder_is_gone(&holder(dead, "h2"), "h1"), "another host");
        assert!(
            !holder_is_gone(&holder(dead, "h1"), ""),
            "unknown host name"
        );
        assert!(
            !holder_is_gone("u (pid 12, started 1)", "h1"),
            "no host: older token"
        );
        assert!(!holder_is_gone("garbage", "h1"));
        // Issue #34: two containers with one host name, both pid 1 — here: another
        // instance's holder with our very pid is a live process elsewhere, not ours.
        assert!(
            !holder_is_gone(&holder(me, "h1#instance-a"), "h1#instance-b"),
            "same host name and pid, another instance"
        );
        assert!(holder_is_gone(
            &holder(me, "h1#instance-a"),
            "h1#instance-a"
        ));
    }

    #[test]
    fn the_host_identity_names_this_instance_and_is_stable() {
        let (a, b) = (host_identity(), host_identity());
        assert_eq!(a, b, "one id per instance");
        let (host, instance) = a.split_once('#').expect("host#instance");
        assert_eq!(host, hostname());
        assert!(uuid::Uuid::parse_str(instance).is_ok(), "{a}");
    }
}
