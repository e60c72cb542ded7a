//! The ledger lease: one process at a time appends to a ledger's journal. The lease
//! (`giftstream:{ledger}:owner`) and the journal's head (`giftstream:{ledger}:head`) are
//! checked and moved by one Lua script with every append, so a fenced process can never
//! slip a write in between the check and the write.

use std::time::Duration;

use super::conn::RedisConn;
use super::format::entry_seq;
use super::keys::Ledger;
use crate::persist::journal::JournalError;

/// The lease this process holds on its ledger.
pub(super) struct Fence {
    pub(super) key: String,
    pub(super) token: String,
    pub(super) lease_ms: u64,
    /// Another process holds the lease: never append again.
    pub(super) lost: std::sync::atomic::AtomicBool,
    /// The last sequence number this process appended (the journal's last id, `<seq>-0`,
    /// as this process left it).
    pub(super) appended: std::sync::atomic::AtomicU64,
    /// Released at shutdown: the renewal task stops.
    pub(super) released: std::sync::atomic::AtomicBool,
}

/// The error code of an append refused because another process holds the ledger.
pub(super) const FENCED: &str = "FENCED";

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

impl Fence {
    /// Takes the ledger lease (`redis.lease_ms`) before this process reads or writes its
    /// journal: one process at a time may append. If another holds it, waits up to one
    /// lease and a second for it to run out (a crashed holder's does), then fails naming
    /// the holder (a live holder renews it). Then moves the journal's head to the
    /// journal's last id: the fence's starting point.
    pub(super) async fn take(
        conn: &mut RedisConn,
        ledger: &Ledger,
        journal_key: &str,
        lease_ms: u64,
    ) -> Result<Fence, JournalError> {
        let key = ledger.owner_key();
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
        let mut waiting = false;
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(conn)
                .await
                .map_err(JournalError::from)?;
            if taken.is_some() {
                break;
            }
            let holder: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(conn)
                .await
                .map_err(JournalError::from)?;
            if let Some(holder) = holder.as_deref().filter(|h| holder_is_gone(h, &host)) {
                // A crashed process on this host: no need to wait for its lease. (Were
                // it alive after all, e.g. in another PID namespace, its next append
                // would be refused: the fence, not this check, keeps the journal whole.)
                let deleted: i64 = RELEASE
                    .key(&key)
                    .arg(holder)
                    .invoke_async(conn)
                    .await
                    .map_err(JournalError::from)?;
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
                return Err(JournalError::Fenced(format!(
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
            .key(journal_key)
            .invoke_async(conn)
            .await
            .map_err(JournalError::from)?;
        let _: () = redis::cmd("SET")
            .arg(ledger.head_key())
            .arg(&last)
            .query_async(conn)
            .await
            .map_err(JournalError::from)?;
        tracing::info!(
            key,
            token,
            lease_ms,
            journal_last_id = last,
            "ledger lease taken"
        );
        Ok(Fence {
            key,
            token,
            lease_ms,
            lost: Default::default(),
            appended: entry_seq(&last).into(),
            released: Default::default(),
        })
    }

    /// Still ours to renew: neither released nor lost.
    pub(super) fn held(&self) -> bool {
        use std::sync::atomic::Ordering;
        !self.released.load(Ordering::Acquire) && !self.lost.load(Ordering::Acquire)
    }

    /// Gives the lease back (graceful shutdown, after the final commit), so the next
    /// start need not wait for it to run out.
    pub(super) async fn release(&self, conn: &mut RedisConn) {
        self.released
            .store(true, std::sync::atomic::Ordering::Release);
        let released: redis::RedisResult<i64> = RELEASE
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(conn)
            .await;
        match released {
            Ok(1) => tracing::info!(key = self.key, "ledger lease released"),
            Ok(_) => tracing::warn!(key = self.key, "ledger lease was not ours at release"),
            Err(e) => {
                tracing::warn!(error = %e, "ledger lease release failed; it runs out by itself")
            }
        }
    }

    /// Runs [`FENCED_OP`] on the journal `journal_key` of `ledger`: `op` with its `id`
    /// and `bytes`. A refusal marks the fence lost, for good.
    pub(super) async fn op<T: redis::FromRedisValue>(
        &self,
        conn: &mut RedisConn,
        ledger: &Ledger,
        journal_key: &str,
        op: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<T, JournalError> {
        let fence = self;
        if fence.lost.load(std::sync::atomic::Ordering::Acquire) {
            return Err(JournalError::Fenced(format!(
                "{FENCED}: this process lost the ledger lease ({}) to another process",
                fence.key
            )));
        }
        let appended = fence.appended.load(std::sync::atomic::Ordering::Acquire);
        let result = FENCED_OP
            .key(journal_key)
            .key(&fence.key)
            .key(ledger.head_key())
            .arg(&fence.token)
            .arg(fence.lease_ms)
            .arg(format!("{appended}-0"))
            .arg(op)
            .arg(id)
            .arg(bytes)
            .invoke_async(conn)
            .await
            .map_err(JournalError::from);
        if let Err(e) = &result
            && e.is_fenced()
        {
            fence.lost.store(true, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %e, "fenced: this process no longer holds the ledger; no further appends");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
