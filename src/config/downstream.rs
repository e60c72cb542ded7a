//! `[change_stream]` and `[history]`: the two consumers of committed runs that write
//! for readers outside giftstream — the change stream of every committed event
//! (downstream services) and each user's durable paged history.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The most events `change_stream.events_max` may keep.
pub const CHANGE_STREAM_EVENTS_MAX: u64 = 1_000_000_000;
/// The longest `history.retention_ms`: ten years.
pub const HISTORY_RETENTION_MS_MAX: u64 = 10 * 366 * 86_400_000;
/// The default `history.retention_ms`: 180 days.
pub const HISTORY_RETENTION_MS_DEFAULT: u64 = 180 * 86_400_000;
/// The most entries one write of a follower carries (`*.entries_per_write_max`).
pub const ENTRIES_PER_WRITE_LIMIT: usize = 100_000;
/// The most hash-tagged buckets of the history's keys.
pub const HISTORY_BUCKETS_MAX: u32 = 1024;

/// The change stream: every committed event with its outcome, as versioned JSON, in
/// the Redis stream `giftstream:{ledger}:changes` (a cluster node's:
/// `giftstream:{ledger-<node>}:changes`), written from committed runs off the ack path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeStreamConfig {
    /// Write the change stream (only with a Redis URL). Off by default: every event then
    /// costs a stream entry's memory in the journal's Redis and a write, which a
    /// deployment without downstream consumers should not pay.
    pub enabled: bool,
    /// Retention: about this many of the newest events are kept (`XADD ... MAXLEN ~`:
    /// Redis trims whole nodes, so a little more).
    pub events_max: u64,
    /// Most events in one write (one script, which blocks the journal's Redis while it
    /// runs: the bound keeps journal appends from waiting long behind it).
    pub entries_per_write_max: usize,
    /// Committed runs queued for the writer; when full it reads them back from the
    /// journal.
    pub queue_runs_max: usize,
    /// The nice value (0..=19) of the writer's thread (as `read_model.nice`).
    pub nice: i32,
}

impl Default for ChangeStreamConfig {
    fn default() -> Self {
        ChangeStreamConfig {
            enabled: false,
            events_max: 1_000_000,
            entries_per_write_max: 256,
            queue_runs_max: 1024,
            nice: 10,
        }
    }
}

/// Each user's full history in Redis (per-user streams), for
/// `GET /v1/users/{id}/transactions` pages beyond what the engine keeps in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Write the durable history (only with a Redis URL). Off by default: it costs Redis
    /// memory per user event for the whole retention (docs/operations.md "Durable
    /// history"), to be sized first. Off, pages reach back as far as the engine's
    /// `engine.history_per_user`.
    pub enabled: bool,
    /// How long a line is kept, ms (default 180 days): older lines are trimmed, a key
    /// expires this long after its last line, and a read shows none older.
    pub retention_ms: u64,
    /// Hash-tagged buckets the users' keys spread over (`user id mod buckets`): one Redis
    /// Cluster slot each.
    pub buckets: u32,
    /// Most events in one write (per bucket, one script).
    pub entries_per_write_max: usize,
    /// Committed runs queued for the writer; when full it reads them back from the
    /// journal.
    pub queue_runs_max: usize,
    /// The nice value (0..=19) of the writer's thread (as `read_model.nice`).
    pub nice: i32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: false,
            retention_ms: HISTORY_RETENTION_MS_DEFAULT,
            buckets: 16,
            entries_per_write_max: 256,
            queue_runs_max: 1024,
            nice: 10,
        }
    }
}

/// The checks of both tables, naming the key.
pub(super) fn validate(c: &ChangeStreamConfig, h: &HistoryConfig) -> Result<(), ConfigError> {
    let in_range = |key: &str, v: u64, min: u64, max: u64| {
        if v < min || v > max {
            Err(ConfigError::new(
                key,
                format!("must be in {min}..={max}, got {v}"),
            ))
        } else {
            Ok(())
        }
    };
    in_range(
        "change_stream.events_max",
        c.events_max,
        1_000,
        CHANGE_STREAM_EVENTS_MAX,
    )?;
    let limit = ENTRIES_PER_WRITE_LIMIT as u64;
    in_range(
        "change_stream.entries_per_write_max",
        c.entries_per_write_max as u64,
        1,
        limit,
    )?;
    in_range(
        "change_stream.queue_runs_max",
        c.queue_runs_max as u64,
        1,
        1_000_000,
    )?;
    if !(0..=19).contains(&c.nice) {
        return Err(ConfigError::new("change_stream.nice", "must be in 0..=19"));
    }
    in_range(
        "history.retention_ms",
        h.retention_ms,
        3_600_000,
        HISTORY_RETENTION_MS_MAX,
    )?;
    in_range(
        "history.buckets",
        u64::from(h.buckets),
        1,
        u64::from(HISTORY_BUCKETS_MAX),
    )?;
    in_range(
        "history.entries_per_write_max",
        h.entries_per_write_max as u64,
        1,
        limit,
    )?;
    in_range(
        "history.queue_runs_max",
        h.queue_runs_max as u64,
        1,
        1_000_000,
    )?;
    if !(0..=19).contains(&h.nice) {
        return Err(ConfigError::new("history.nice", "must be in 0..=19"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bound_names_its_key() {
        let (c, h) = (ChangeStreamConfig::default(), HistoryConfig::default());
        assert_eq!(validate(&c, &h), Ok(()));
        let cases: [(&str, ChangeStreamConfig, HistoryConfig); 6] = [
            (
                "change_stream.events_max",
                ChangeStreamConfig {
                    events_max: 10,
                    ..c.clone()
                },
                h.clone(),
            ),
            (
                "change_stream.entries_per_write_max",
                ChangeStreamConfig {
                    entries_per_write_max: 0,
                    ..c.clone()
                },
                h.clone(),
            ),
            (
                "change_stream.nice",
                ChangeStreamConfig {
                    nice: -1,
                    ..c.clone()
                },
                h.clone(),
            ),
            (
                "history.retention_ms",
                c.clone(),
                HistoryConfig {
                    retention_ms: 1,
                    ..h.clone()
                },
            ),
            (
                "history.buckets",
                c.clone(),
                HistoryConfig {
                    buckets: 0,
                    ..h.clone()
                },
            ),
            (
                "history.nice",
                c.clone(),
                HistoryConfig {
                    nice: 20,
                    ..h.clone()
                },
            ),
        ];
        for (key, c, h) in cases {
            assert_eq!(validate(&c, &h).unwrap_err().key, key);
        }
    }
}
