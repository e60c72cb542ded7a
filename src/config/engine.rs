//! `[engine]` of giftstream.toml: [`EngineConfig`] (the ledger's sizing) and the named
//! limits every field is checked against. The engine's use of it (how long an id is
//! kept, when an event has expired) is in `engine::config`.
//!
//! # Pinned values
//! Five fields decide outcomes, not only sizes (`battles_max` and `battle_retention_ms`:
//! a battle beyond the bound is `BATTLES_FULL`), `recharge_records_per_shard_max` and
//! `gift_records_per_shard_max` (a reversal of a recharge or gift whose record the bound
//! dropped is answered differently) and `history_per_user` (a reversal of a gift no
//! longer held is `NOT_REVERSIBLE` if the gift is in the sender's history, else
//! `ORIGINAL_NOT_FOUND`). The journal is replayed and every outcome compared, so a ledger
//! keeps the values it first ran with ([`EngineConfig::pinned`]): they are recorded
//! beside its journal (`persist::redis::ledger`), a start with another value is refused
//! naming the key, and `giftstream audit` replays with the recorded ones.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Largest number of shards of each kind.
pub const SHARDS_MAX: usize = 1024;
/// Largest top-K list kept per creator, stream and for the creators leaderboard.
pub const TOP_K_MAX: usize = 1000;
/// Largest history kept per user.
pub const HISTORY_PER_USER_MAX: usize = 1000;
/// How far ahead of the server's clock an event's `issued_ms` may be (client clocks
/// drift). The index keeps ids this much longer than the horizon, so that a retry
/// admitted by its `issued_ms` always finds its original.
pub const ISSUED_AHEAD_MAX_MS: u64 = 10_000;
/// Largest idempotency index (ids remembered in all).
pub const IDEMPOTENCY_ENTRIES_MAX: usize = 1 << 30;
/// Largest `recharge_records_per_shard_max`: 2^26 records (about 5 GiB a shard).
pub const RECHARGE_RECORDS_PER_SHARD_MAX: usize = 1 << 26;
/// Most threads a replay applies sender events on.
pub const REPLAY_THREADS_MAX: usize = 64;
/// Most gift records a sender shard may keep for reversals (`engine.gift_records_per_shard_max`).
pub const GIFT_RECORDS_PER_SHARD_MAX: usize = 1 << 26;

// A route packs a shard index in 16 bits (`route_tag`, the id index's legacy routes).
const _: () = assert!(SHARDS_MAX.is_power_of_two() && SHARDS_MAX <= 1 << 16);
// A replay thread takes at least one shard.
const _: () = assert!(REPLAY_THREADS_MAX <= SHARDS_MAX);

/// Engine sizing and bounds. Every field has a limit checked by [`EngineConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Number of shards of each kind; a power of two in 1..=1024. About two per core
    /// that applies batches: every shard keeps its own part of each creator's and
    /// stream's aggregates, so more shards than the cores can use cost memory and cache
    /// misses (BENCHMARKS.md "Shards: 16 → 4"). Fixed for a ledger's life: a snapshot
    /// loads with the count it was taken with.
    pub shards: usize,
    /// Event ids remembered for idempotency, in total (split evenly across the id
    /// shards). Size it to the retry horizon times the peak event rate: when it is full
    /// of ids younger than the horizon, new events are answered `UNAVAILABLE` (retry
    /// later), never admitted by forgetting an id early.
    pub idempotency_entries_max: usize,
    /// The retry horizon: every event id is remembered at least this long (by the
    /// journaled stamps), so a retry within it is answered with the original outcome.
    #[serde(alias = "idempotency_window_ms")]
    pub idempotency_horizon_ms: u64,
    /// Recent history entries kept per user (0 = none). Pinned with the ledger (module
    /// doc): a gift reversal's answer depends on it.
    pub history_per_user: usize,
    /// Length of every top-K list: top gifters per creator and per stream, top creators.
    pub top_k: usize,
    /// Keep a drainable log of applied events (the service's journal feed).
    pub keep_log: bool,
    /// Threads a replay applies long runs of sender events on, in 1..=64 (each takes
    /// every `replay_threads`-th sender shard; 1: the calling thread only). Two by
    /// default: the machine it was sized on has two cores.
    pub replay_threads: usize,
    /// Accepted recharges remembered per sender shard so that a `recharge_reversal` can
    /// take their coins back, in 1..=`RECHARGE_RECORDS_PER_SHARD_MAX`. Records older than
    /// the economy's `recharge_reversal_window_ms` are dropped first; when a shard holds
    /// this many, its oldest record is dropped for the new one (counted in
    /// `giftstream_recharge_records_evicted_total`; a reversal of it is then
    /// `ORIGINAL_NOT_FOUND`). Size it to the recharges of one window per shard. Pinned
    /// with the ledger (module doc).
    pub recharge_records_per_shard_max: usize,
    /// Gift records kept per sender shard for gift reversals while an earnings hold is
    /// in force (140 to 270 bytes each, BENCHMARKS.md "Memory"; 0 = none: no gift is
    /// reversible). When a shard holds this many, its oldest record is dropped early
    /// (that gift is no longer reversible, `NOT_REVERSIBLE`; counted in
    /// `giftstream_gift_records_dropped_total`). At most [`GIFT_RECORDS_PER_SHARD_MAX`].
    /// Pinned with the ledger (module doc).
    pub gift_records_per_shard_max: usize,
    /// Windowed leaderboards (`[engine.windows]`): top gifters per creator and per
    /// stream, and top creators, per UTC hour, day, ISO week and month.
    pub windows: WindowsConfig,
    /// PK battles held at once: scheduled, live, or ended within `battle_retention_ms`
    /// (a battle beyond it is `BATTLES_FULL`). At most [`BATTLES_MAX`]. Pinned with the
    /// ledger (it decides outcomes).
    pub battles_max: usize,
    /// How long an ended battle stays readable (`GET /v1/battles/{id}`) and holds its
    /// place in `battles_max`, after its `end_ms`, judged by the ledger's time (the stamp
    /// of the next battle recorded). Pinned with the ledger (it decides outcomes).
    pub battle_retention_ms: u64,
}

/// Largest `engine.battles_max`.
pub const BATTLES_MAX: usize = 1 << 16;
/// Largest `engine.battle_retention_ms`: 30 days.
pub const BATTLE_RETENTION_MS_MAX: u64 = 30 * 24 * 3_600_000;

/// The most windows of one kind a ledger may keep (hours: 31 days of them).
pub const WINDOW_HOURS_MAX: u32 = 744;
pub const WINDOW_DAYS_MAX: u32 = 366;
pub const WINDOW_WEEKS_MAX: u32 = 106;
pub const WINDOW_MONTHS_MAX: u32 = 36;

/// `[engine.windows]`: windowed leaderboards and their retention. Off by default: their
/// memory grows with the distinct (window, gifter) pairs of every retained window
/// (`docs/operations.md` "Windowed leaderboards" gives the bytes per pair), which only
/// the operator can size to the traffic; a ledger upgraded without asking for them keeps
/// its memory and its per-gift cost (one branch). Not pinned: no outcome depends on
/// them; turned on later, the windows count from the events applied (or replayed) since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Keep windowed leaderboards.
    pub enabled: bool,
    /// Hour windows kept: the current one and the `hours - 1` before it (0: none).
    pub hours: u32,
    /// Day windows kept (0: none).
    pub days: u32,
    /// ISO week windows kept (0: none).
    pub weeks: u32,
    /// Calendar month windows kept (0: none).
    pub months: u32,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            enabled: false,
            hours: 48,
            days: 14,
            weeks: 8,
            months: 12,
        }
    }
}

impl WindowsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value, max) in [
            ("engine.windows.hours", self.hours, WINDOW_HOURS_MAX),
            ("engine.windows.days", self.days, WINDOW_DAYS_MAX),
            ("engine.windows.weeks", self.weeks, WINDOW_WEEKS_MAX),
            ("engine.windows.months", self.months, WINDOW_MONTHS_MAX),
        ] {
            if value > max {
                return Err(ConfigError::new(key, format!("must be at most {max}")));
            }
        }
        Ok(())
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 4,
            idempotency_entries_max: 1 << 22,
            idempotency_horizon_ms: 10 * 60 * 1000,
            history_per_user: 32,
            top_k: 100,
            keep_log: true,
            replay_threads: 2,
            recharge_records_per_shard_max: 1 << 20,
            gift_records_per_shard_max: 1 << 18,
            windows: WindowsConfig::default(),
            battles_max: 1024,
            battle_retention_ms: 24 * 3_600_000,
        }
    }
}

/// The `[engine]` keys pinned with a ledger (module doc), as their config keys.
pub const PINNED_KEYS: [&str; 5] = [
    "engine.recharge_records_per_shard_max",
    "engine.gift_records_per_shard_max",
    "engine.history_per_user",
    "engine.battles_max",
    "engine.battle_retention_ms",
];

impl EngineConfig {
    /// The values pinned with a ledger (module doc), by their config keys
    /// ([`PINNED_KEYS`], in order).
    pub fn pinned(&self) -> [(&'static str, usize); 5] {
        [
            (PINNED_KEYS[0], self.recharge_records_per_shard_max),
            (PINNED_KEYS[1], self.gift_records_per_shard_max),
            (PINNED_KEYS[2], self.history_per_user),
            (PINNED_KEYS[3], self.battles_max),
            (PINNED_KEYS[4], self.battle_retention_ms as usize),
        ]
    }

    /// Sets the pinned value of `key` (one of [`PINNED_KEYS`]); false for another key.
    pub fn set_pinned(&mut self, key: &str, value: usize) -> bool {
        let field = match key {
            "engine.recharge_records_per_shard_max" => &mut self.recharge_records_per_shard_max,
            "engine.gift_records_per_shard_max" => &mut self.gift_records_per_shard_max,
            "engine.history_per_user" => &mut self.history_per_user,
            "engine.battles_max" => &mut self.battles_max,
            "engine.battle_retention_ms" => {
                self.battle_retention_ms = value as u64;
                return true;
            }
            _ => return false,
        };
        *field = value;
        true
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.shards.is_power_of_two() || self.shards > SHARDS_MAX {
            return Err(ConfigError::new(
                "engine.shards",
                format!(
                    "must be a power of two in 1..={SHARDS_MAX}, got {}",
                    self.shards
                ),
            ));
        }
        if self.top_k == 0 || self.top_k > TOP_K_MAX {
            return Err(ConfigError::new(
                "engine.top_k",
                format!("must be in 1..={TOP_K_MAX}"),
            ));
        }
        if self.history_per_user > HISTORY_PER_USER_MAX {
            return Err(ConfigError::new(
                "engine.history_per_user",
                format!("must be at most {HISTORY_PER_USER_MAX}"),
            ));
        }
        if self.idempotency_entries_max < self.shards {
            return Err(ConfigError::new(
                "engine.idempotency_entries_max",
                "must be at least one entry per shard",
            ));
        }
        if self.idempotency_horizon_ms == 0 {
            return Err(ConfigError::new(
                "engine.idempotency_horizon_ms",
                "must be positive",
            ));
        }
        if self.replay_threads == 0 || self.replay_threads > REPLAY_THREADS_MAX {
            return Err(ConfigError::new(
                "engine.replay_threads",
                format!("must be in 1..={REPLAY_THREADS_MAX}"),
            ));
        }
        if self.recharge_records_per_shard_max == 0
            || self.recharge_records_per_shard_max > RECHARGE_RECORDS_PER_SHARD_MAX
        {
            return Err(ConfigError::new(
                "engine.recharge_records_per_shard_max",
                format!("must be in 1..={RECHARGE_RECORDS_PER_SHARD_MAX}"),
            ));
        }
        if self.battles_max > BATTLES_MAX {
            return Err(ConfigError::new(
                "engine.battles_max",
                format!("must be at most {BATTLES_MAX}"),
            ));
        }
        if self.battle_retention_ms > BATTLE_RETENTION_MS_MAX {
            return Err(ConfigError::new(
                "engine.battle_retention_ms",
                format!("must be at most {BATTLE_RETENTION_MS_MAX}"),
            ));
        }
        if self.gift_records_per_shard_max > GIFT_RECORDS_PER_SHARD_MAX {
            return Err(ConfigError::new(
                "engine.gift_records_per_shard_max",
                format!("must be at most {GIFT_RECORDS_PER_SHARD_MAX}"),
            ));
        }
        self.windows.validate()?;
        if self.idempotency_entries_max > IDEMPOTENCY_ENTRIES_MAX {
            return Err(ConfigError::new(
                "engine.idempotency_entries_max",
                format!("must be at most {IDEMPOTENCY_ENTRIES_MAX}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_threads_are_bounded_and_two_by_default() {
        assert_eq!(EngineConfig::default().replay_threads, 2);
        for (threads, valid) in [
            (0, false),
            (1, true),
            (REPLAY_THREADS_MAX, true),
            (65, false),
        ] {
            let config = EngineConfig {
                replay_threads: threads,
                ..EngineConfig::default()
            };
            match config.validate() {
                Ok(()) => assert!(valid, "{threads} threads accepted"),
                Err(e) => {
                    assert!(!valid, "{threads} threads refused");
                    assert_eq!(e.key, "engine.replay_threads");
                }
            }
        }
        // A config written before the field reads with the default.
        let config: EngineConfig = toml::from_str("shards = 8").unwrap();
        assert_eq!(config.replay_threads, 2);
    }
}
