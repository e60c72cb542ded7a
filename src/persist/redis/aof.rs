//! The journal Redis's persistence settings (AOF), read and reported at start: settings
//! that lose acknowledged events beyond the durability promise are logged as a warning.

use super::journal::RedisJournal;
use crate::persist::journal::JournalError;

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
                .ok_or_else(|| JournalError::Reply(format!("CONFIG GET {name}: no such setting")))
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
