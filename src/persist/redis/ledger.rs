//! What a ledger records about itself next to its journal: its shard count, a cluster
//! node's partition map layout, the `[engine]` values pinned with it, and its economy
//! versions (documents by digest).
//!
//! # Pinned engine limits
//! `engine.recharge_records_per_shard_max`, `engine.gift_records_per_shard_max` and
//! `engine.history_per_user` decide outcomes (`config::engine` "Pinned values"), so a
//! ledger keeps the values it first ran with, in [`Ledger::limits_key`]. They are
//! recorded at the ledger's first start (or the first start of a ledger journaled by a
//! binary before the pin: the values that start replayed with), under the lease, after
//! recovery and before the start's first journal record (the economy version it
//! records): no journal record exists without them, and one `HSET` writes them all. A
//! start (`serve`) and `restore` with another value refuse ([`check_pinned`]: the key,
//! both values, what to do); `audit` replays with the pinned values; the snapshot
//! replica runs with its server's, which were checked.

use std::time::Duration;

use super::journal::RedisJournal;
use crate::config::engine::{EngineConfig, PINNED_KEYS};
use crate::engine::{Engine, Event, LogEntry};
use crate::persist::journal::{Journal, JournalError};

/// How long a start retries journaling the economy version it records before it gives up.
const START_APPEND_TIMEOUT: Duration = Duration::from_secs(60);

impl RedisJournal {
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
            .map_err(JournalError::from)?;
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
            .map_err(JournalError::from)?;
        hex.map(|h| {
            u64::from_str_radix(&h, 16).map_err(|e| {
                JournalError::Ledger(format!("{} {field}: {e}", self.ledger.economies_key()))
            })
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
            .map_err(JournalError::from)?;
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
            .map_err(JournalError::from)?;
        let missing = || {
            JournalError::Ledger(format!(
                "economy document {digest:016x} is not in {}",
                self.ledger.economies_key()
            ))
        };
        let doc = crate::economy::EconomyDoc::from_bytes(&bytes.ok_or_else(missing)?)
            .map_err(|e| JournalError::Ledger(e.to_string()))?;
        if doc.digest() != digest {
            return Err(missing());
        }
        crate::economy::Economy::from_doc(doc).map_err(|e| JournalError::Ledger(e.to_string()))
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
            let now = engine.newest_stamp().max(crate::clock::now());
            engine.check_economy_edit(&next, now)?;
            self.store_economy(&next).await?;
            let version = next.version;
            let outcome = engine.change_economy(next, now)?;
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
                .map_err(|e| match e {
                    JournalError::Ledger(why) => {
                        JournalError::Ledger(format!("seq {}: {why}", entry.seq))
                    }
                    other => other,
                })?;
            if economy.version != change.version {
                return Err(JournalError::Ledger(format!(
                    "seq {}: economy document {:016x} is version {}, the journal says {}",
                    entry.seq, change.digest, economy.version, change.version
                )));
            }
            engine.know_economy(std::sync::Arc::new(economy));
        }
        Ok(())
    }

    /// The shard count recorded for this ledger ([`Ledger::shards_key`]), if any (none
    /// before its first start, or on a ledger started by a binary before this key).
    pub async fn recorded_shards(&self) -> Result<Option<usize>, JournalError> {
        redis::cmd("GET")
            .arg(self.ledger.shards_key())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(JournalError::from)
    }

    /// Records `shards` as this ledger's shard count (under the lease, after recovery).
    pub async fn record_shards(&self, shards: usize) -> Result<(), JournalError> {
        redis::cmd("SET")
            .arg(self.ledger.shards_key())
            .arg(shards)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(JournalError::from)
    }

    /// The `[engine]` values pinned with this ledger ([`Ledger::limits_key`]), by config
    /// key, and the sequence number they were recorded at; empty before its first start.
    pub async fn pinned_limits(&self) -> Result<Pinned, JournalError> {
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.ledger.limits_key())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(JournalError::from)?;
        let number = |field: &str, text: &str| {
            text.parse::<u64>().map_err(|e| {
                JournalError::Ledger(format!(
                    "{} {field}: {text:?}: {e}",
                    self.ledger.limits_key()
                ))
            })
        };
        let mut pinned = Pinned::default();
        for (field, text) in &fields {
            if field == "seq" {
                pinned.seq = Some(number(field, text)?);
            } else if let Some(key) = PINNED_KEYS.iter().find(|k| **k == field) {
                pinned.values.push((key, number(field, text)? as usize));
            }
        }
        pinned
            .values
            .sort_by_key(|(k, _)| PINNED_KEYS.iter().position(|p| p == k));
        Ok(pinned)
    }

    /// Pins `config`'s values that this ledger has not pinned yet (all of them at its
    /// first start), with `seq`, the ledger's last sequence number (under the lease,
    /// after recovery, before the start journals anything). Returns the keys pinned.
    pub async fn pin_limits(
        &self,
        config: &EngineConfig,
        pinned: &Pinned,
        seq: u64,
    ) -> Result<Vec<&'static str>, JournalError> {
        let missing: Vec<(&'static str, usize)> = config
            .pinned()
            .into_iter()
            .filter(|(k, _)| pinned.get(k).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.ledger.limits_key());
        for (key, value) in &missing {
            cmd.arg(*key).arg(*value);
        }
        if pinned.seq.is_none() {
            cmd.arg("seq").arg(seq);
        }
        let _: i64 = cmd
            .query_async(&mut self.conn.clone())
            .await
            .map_err(JournalError::from)?;
        Ok(missing.into_iter().map(|(k, _)| k).collect())
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
            .map_err(JournalError::from)?;
        let Some(recorded) = recorded else {
            return Ok(false);
        };
        let configured = map.layout();
        if recorded != configured {
            return Err(JournalError::Ledger(format!(
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
            .map_err(JournalError::from)
    }
}

/// The `[engine]` values a ledger pinned ([`RedisJournal::pinned_limits`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    /// (config key, value), in [`PINNED_KEYS`] order; a key not pinned yet is absent.
    pub values: Vec<(&'static str, usize)>,
    /// The ledger's last sequence number when they were pinned.
    pub seq: Option<u64>,
}

impl Pinned {
    /// The pinned value of `key`.
    pub fn get(&self, key: &str) -> Option<usize> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// `config` with the pinned values in place of its own (for `audit`: it replays the
    /// ledger as it ran). Returns the keys whose value changed, with the configured one.
    pub fn apply(&self, config: &mut EngineConfig) -> Vec<(&'static str, usize)> {
        let mut changed = Vec::new();
        for (key, configured) in config.pinned() {
            if let Some(value) = self.get(key).filter(|v| *v != configured) {
                config.set_pinned(key, value);
                changed.push((key, configured));
            }
        }
        changed
    }
}

/// Refuses `config` if one of its pinned values differs from what the ledger pinned
/// (`key`: [`Ledger::limits_key`]): the error names each key, the pinned and the
/// configured value, why, and what to do.
pub fn check_pinned(config: &EngineConfig, pinned: &Pinned, key: &str) -> Result<(), String> {
    let differing: Vec<String> = config
        .pinned()
        .into_iter()
        .filter_map(|(k, configured)| {
            let value = pinned.get(k)?;
            (value != configured).then(|| format!("{k} is {configured}, the ledger's is {value}"))
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    let at = pinned
        .seq
        .map_or(String::new(), |seq| format!(" at seq {seq}"));
    Err(format!(
        "{}: this ledger was pinned to its values (recorded in {key}{at}). They decide \
         outcomes (a reversal of a recharge or gift whose record the bound dropped, or that \
         left the sender's history, is answered differently), and the journal is replayed \
         with every outcome compared: another value could refuse a later replay or decide \
         an event otherwise than it was acknowledged. Nothing was served; set the pinned \
         value in giftstream.toml [engine] to serve this ledger (docs/operations.md \
         \"Pinned engine limits\")",
        differing.join("; ")
    ))
}
