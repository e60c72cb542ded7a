//! The Redis journal: one stream entry per group commit, appended with one `XADD`.
//!
//! - [`conn`]: the connection ([`RedisConn`], one Redis or a Redis Cluster) and its bounds.
//! - [`keys`]: which keys a ledger uses ([`Ledger`]), all in its journal's slot.
//! - [`format`]: the journal's bincode format ([`JournalBatch`]); [`record`]: its own event
//!   and outcome types (not the wire's).
//! - [`journal`]: [`RedisJournal`]: append (idempotent by sequence number), trim, read, replay.
//! - [`lease`]: the ledger lease and the fence every append goes through.
//! - [`ledger`]: what a ledger records about itself (shard count, partition map,
//!   economy versions).
//! - [`aof`]: the journal Redis's persistence settings, checked at start.
//!
//! Idempotent by sequence number: the entry id is the run's last sequence number, and
//! Redis refuses an id that is not greater than the stream's top. A retried append
//! whose first attempt did run (a timeout after success) is therefore refused, and
//! recognised as done by reading the stream's top id.

pub mod aof;
pub mod conn;
pub mod format;
pub mod journal;
pub mod keys;
pub mod lease;
pub mod ledger;
pub mod record;

pub use aof::AofSettings;
pub use conn::{CONNECTION_TIMEOUT, RESPONSE_TIMEOUT, RedisConn, connect, connect_to};
pub use format::{JOURNAL_VERSION, JournalBatch, JournalRecord};
pub use journal::{
    JOURNAL_ENTRY_RECORDS_MAX, RECOVERY_ENTRIES_PER_READ, RecoveryError, RedisJournal, WaitReplicas,
};
pub use keys::{JOURNAL_KEY, Ledger};
pub use ledger::{Pinned, check_pinned};
pub use record::{JournalEvent, JournalOutcome};
