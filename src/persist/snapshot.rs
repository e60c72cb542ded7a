//! Ledger snapshots (SPEC §2.4): a consistent point-in-time engine state in the bincode
//! format, behind a fixed header, written atomically, the last K kept.
//!
//! File `snapshot-<last seq, 20 digits>.gsnap`:
//! ```text
//! offset size
//!      0    8  magic "GIFTSNAP"
//!      8    4  format version (u32 LE)
//!     12    4  shards (u32 LE)
//!     16    8  last sequence number (u64 LE): the state holds every event up to it
//!     24    8  wallets   (u64 LE)
//!     32    8  creators  (u64 LE)
//!     40    8  streams   (u64 LE)
//!     48    8  body bytes (u64 LE)
//!     56    4  CRC-32 of the body (u32 LE)
//!     60    -  body: the engine state (bincode format, serde)
//! ```
//! Format 7 appended the sales per promotion; format 8 the gift records of reversals.
//! Format 2 appended the cluster's settlement reports to the state; format 3 appended the
//! idempotency index (ids by their own hash, with content fingerprints) and leaves the
//! shards' old windows empty. Formats 1 and 2 are still read: their windows' ids move to
//! the index, matching any content (they have no fingerprint). Format 7 appended the
//! purchase totals per sender shard; format 6 reads as 7 without purchases. Format 8
//! appended the recharge records and debts per sender shard; format 7 reads as 8 with
//! none. Format 9 records the target (stream or video) of each held gift's record, so
//! that a gift on a video is reversible; format 8's records read as gifts on streams.
//! Format 10 appended the windowed leaderboards (per sender and creator shard) and the
//! hour of each gift record; format 9 reads with no windows. Format 11 appended the gift
//! records kept apart (another sender's gift reusing a held id) and the `[engine]`
//! values pinned with the ledger; format 10 reads with neither (the configured values).
//! Format 12 appended the PK battles; formats 10 and 11 read with none. Format 13
//! appended the battles' closes (review B2); format 12 reads with none.
//! Written to a temp file, fsynced, renamed, and the directory fsynced. A snapshot is
//! taken at a commit boundary: everything up to its sequence number is in the journal.
//!
//! Size: the header, every format version's decoding and the atomic write are one
//! on-disk contract; split, a version bump would touch several files that must agree.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::economy::Economy;
use crate::engine::{
    Engine, EngineConfig, EngineState, EngineStateV1, EngineStateV2, EngineStateV3, EngineStateV4,
    EngineStateV5, EngineStateV6, EngineStateV7, EngineStateV8, EngineStateV9, LogEntry, StateView,
};
use crate::protocol;

pub const MAGIC: [u8; 8] = *b"GIFTSNAP";
pub const VERSION: u32 = 13;
/// The oldest format this build reads.
pub const VERSION_MIN: u32 = 1;
pub const HEADER_BYTES: usize = 60;
const EXTENSION: &str = "gsnap";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub shards: u32,
    pub last_seq: u64,
    pub wallets: u64,
    pub creators: u64,
    pub streams: u64,
    pub body_bytes: u64,
    pub checksum: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a snapshot or corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.shards.to_le_bytes());
        for (i, v) in [
            self.last_seq,
            self.wallets,
            self.creators,
            self.streams,
            self.body_bytes,
        ]
        .iter()
        .enumerate()
        {
            out[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        out[56..60].copy_from_slice(&self.checksum.to_le_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Result<Header, String> {
        if bytes.len() < HEADER_BYTES {
            return Err(format!("{} bytes, shorter than the header", bytes.len()));
        }
        if bytes[0..8] != MAGIC {
            return Err("bad magic".to_owned());
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let header = Header {
            version: u32_at(8),
            shards: u32_at(12),
            last_seq: u64_at(16),
            wallets: u64_at(24),
            creators: u64_at(32),
            streams: u64_at(40),
            body_bytes: u64_at(48),
            checksum: u32_at(56),
        };
        if !(VERSION_MIN..=VERSION).contains(&header.version) {
            return Err(format!(
                "format version {} (this build reads {VERSION_MIN} to {VERSION})",
                header.version
            ));
        }
        Ok(header)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn file_name(last_seq: u64) -> String {
    format!("snapshot-{last_seq:020}.{EXTENSION}")
}

/// Writes `state` into `dir` atomically and keeps the newest `keep` snapshots.
pub fn write(
    dir: &Path,
    state: &StateView<'_>,
    keep: usize,
) -> Result<(PathBuf, Header), SnapshotError> {
    let (tmp, header) = write_temp(dir, state)?;
    publish(dir, &tmp, &header, keep)
}

/// Encodes `state` into a temp file in `dir`, fsynced; [`publish`] renames it into place.
fn write_temp(dir: &Path, state: &StateView<'_>) -> Result<(PathBuf, Header), SnapshotError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let body = protocol::encode_serde(state).map_err(|reason| SnapshotError::Corrupt {
        path: dir.to_owned(),
        reason,
    })?;
    let (wallets, creators, streams) = state.counts();
    let header = Header {
        version: VERSION,
        shards: state.shards() as u32,
        last_seq: state.last_seq(),
        wallets,
        creators,
        streams,
        body_bytes: body.len() as u64,
        checksum: crc32fast::hash(&body),
    };
    let tmp = dir.join(format!(".{}.tmp", file_name(state.last_seq())));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&header.to_bytes()).map_err(io(&tmp))?;
    let mut written = HEADER_BYTES as u64;
    for piece in body.chunks(WRITEBACK_BYTES) {
        f.write_all(piece).map_err(io(&tmp))?;
        writeback(&f, written, piece.len() as u64);
        written += piece.len() as u64;
    }
    f.sync_all().map_err(io(&tmp))?;
    Ok((tmp, header))
}

/// A snapshot goes to disk as it is written, in pieces of this many bytes, rather than
/// in one burst at its fsync: a burst of hundreds of megabytes queues every other write
/// to the disk behind it (Redis's AOF among them) and showed as one-second ack spikes
/// (BENCHMARKS "Snapshots from a replica"). Redis's `rdb-save-incremental-fsync` does
/// the same, every 4 MB.
const WRITEBACK_BYTES: usize = 8 << 20;

/// Starts writing back the piece at `offset` and waits for the piece before it: at most
/// two pieces of the file are dirty at a time. Best effort (Linux; elsewhere the final
/// fsync does it all).
fn writeback(f: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        // SAFETY: plain system calls on a descriptor this function borrows.
        unsafe {
            libc::sync_file_range(
                fd,
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
            let previous = offset.saturating_sub(WRITEBACK_BYTES as u64);
            if previous < offset {
                libc::sync_file_range(
                    fd,
                    previous as libc::off64_t,
                    (offset - previous) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

/// Renames a written temp file into place, fsyncs the directory and keeps the newest
/// `keep` snapshots.
fn publish(
    dir: &Path,
    tmp: &Path,
    header: &Header,
    keep: usize,
) -> Result<(PathBuf, Header), SnapshotError> {
    let path = dir.join(file_name(header.last_seq));
    fs::rename(tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    for old in list(dir)?.into_iter().rev().skip(keep.max(1)) {
        let _ = fs::remove_file(old);
    }
    Ok((path, *header))
}

/// A snapshot being written by a forked child process (see [`fork_snapshot`]).
#[cfg(unix)]
pub struct ForkedSnapshot {
    /// The child and the write end of its gate (one byte = publish, closed without it =
    /// abandon); `None` once reaped.
    child: Option<(libc::pid_t, libc::c_int)>,
    pub last_seq: u64,
}

/// Takes a snapshot the way Redis's BGSAVE does: at a consistent cut (all shard locks
/// held) the process forks; the child holds a copy-on-write image of the state at that
/// instant and encodes and writes it, while the parent releases the locks at once. The
/// ingestion stall is the `fork` itself (copying page tables), not a copy of the state.
///
/// The child writes and fsyncs a temp file, then waits on a pipe: it renames the file
/// into place only after [`ForkedSnapshot::publish`] (the caller has committed the log
/// returned here, so the snapshot never holds an event the journal lacks); if the parent
/// abandons it or dies, the child deletes the temp file.
///
/// With `copy_pages` the child first takes its own copy of the resident pages
/// (`take_own_copy`), so the parent's writes after the fork do not copy them.
///
/// The child touches only the state, the allocator and the file system (no locks other
/// threads could hold, no logging), and leaves with `_exit`.
#[cfg(unix)]
/// Returns the child (or why there is none) and the cut's log, which the caller must
/// commit in either case.
pub fn fork_snapshot(
    engine: &Engine,
    dir: &Path,
    keep: usize,
    copy_pages: bool,
) -> (Result<ForkedSnapshot, SnapshotError>, Vec<LogEntry>) {
    let failed = |what: &str| SnapshotError::Io {
        path: dir.to_owned(),
        source: std::io::Error::other(format!("{what}: {}", std::io::Error::last_os_error())),
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe writes two descriptors into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return (Err(failed("pipe")), Vec::new());
    }
    let [gate_read, gate_write] = fds;
    let (forked, log) = engine.with_cut(|state| {
        // SAFETY: the child runs only `child_writes` and leaves with `_exit`: it takes
        // no lock another thread may have held at the fork (the shard locks are held by
        // this thread; glibc's malloc is fork-safe) and runs no destructors.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_writes(dir, state, keep, copy_pages, gate_read, gate_write);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        (pid, state.last_seq())
    });
    let (pid, last_seq) = forked;
    // SAFETY: closing our copy of the read end, a descriptor we own.
    unsafe { libc::close(gate_read) };
    if pid < 0 {
        let error = failed("fork");
        // SAFETY: as above.
        unsafe { libc::close(gate_write) };
        return (Err(error), log);
    }
    (
        Ok(ForkedSnapshot {
            child: Some((pid, gate_write)),
            last_seq,
        }),
        log,
    )
}

/// Elsewhere than Unix: the cut clones the state (the stall is the copy).
#[cfg(not(unix))]
pub struct ForkedSnapshot {
    state: EngineState,
    dir: PathBuf,
    keep: usize,
    pub last_seq: u64,
}

#[cfg(not(unix))]
pub fn fork_snapshot(
    engine: &Engine,
    dir: &Path,
    keep: usize,
    _copy_pages: bool,
) -> (Result<ForkedSnapshot, SnapshotError>, Vec<LogEntry>) {
    let (state, log) = engine.snapshot();
    let last_seq = state.last_seq();
    (
        Ok(ForkedSnapshot {
            state,
            dir: dir.to_owned(),
            keep,
            last_seq,
        }),
        log,
    )
}

#[cfg(not(unix))]
impl ForkedSnapshot {
    pub fn publish(self) -> Result<PathBuf, SnapshotError> {
        write(&self.dir, &self.state.view(), self.keep).map(|(path, _)| path)
    }

    pub fn abandon(self) {}
}

/// The child's side: 0 published, 1 write failed, 2 abandoned.
#[cfg(unix)]
fn child_writes(
    dir: &Path,
    state: &StateView<'_>,
    keep: usize,
    copy_pages: bool,
    gate_read: libc::c_int,
    gate_write: libc::c_int,
) -> i32 {
    // SAFETY: the child's copy of the write end; closing it lets a parent's death show
    // as end of file. The child runs at the lowest CPU priority: on a small machine the
    // encoding must not take cores from ingestion.
    //
    // Every other inherited descriptor (listening sockets, client connections, Redis) is
    // closed too: an orphaned child must not keep the ports busy for a restarted server
    // or hold connections open.
    unsafe {
        libc::close(gate_write);
        let fd = gate_read as libc::c_uint;
        libc::close_range(3, fd - 1, 0);
        libc::close_range(fd + 1, libc::c_uint::MAX, 0);
    }
    // Before the child yields the CPU: the sooner the pages are its own, the fewer
    // expensive faults the parent takes.
    if copy_pages {
        take_own_copy();
    }
    // SAFETY: plain system call on this process.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
    let Ok((tmp, header)) = write_temp(dir, state) else {
        return 1;
    };
    let mut byte = [0u8; 1];
    // SAFETY: reads at most one byte into a buffer we own.
    let n = unsafe { libc::read(gate_read, byte.as_mut_ptr().cast(), 1) };
    if n != 1 {
        let _ = fs::remove_file(&tmp);
        return 2;
    }
    match publish(dir, &tmp, &header, keep) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// In the forked child, before encoding: makes the child take its own copy of every
/// resident page of its private writable mappings (`MADV_POPULATE_WRITE` over each run of
/// resident pages, found with `mincore`; pages never touched stay untouched).
///
/// After a fork both processes share every page copy-on-write, and whichever writes a
/// shared page first copies it. Left to the parent, the copies happen in its page faults
/// while it serves, and in a multi-threaded process each one also flushes the other
/// CPUs' TLBs: measured after a fork at 1.4 GB, ~75k faults/s took both cores for ~2 s
/// (BENCHMARKS "Snapshots at 1M wallets: the copy-on-write storm"). Taken here, the
/// copies are made by the single-threaded child, and the parent's first write to a page
/// finds it no longer shared: a fault without a copy. The cost: the child holds a copy of
/// the resident state while it writes — the headroom a fork snapshot needs at worst
/// anyway. Best effort: where the kernel refuses (before 5.14, or a special mapping),
/// the parent copies those pages as before.
#[cfg(target_os = "linux")]
fn take_own_copy() {
    let Ok(maps) = fs::read_to_string("/proc/self/maps") else {
        return;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut resident: Vec<u8> = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some("rw-p")) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        }) else {
            continue;
        };
        let pages = (end - start) / page;
        resident.clear();
        resident.resize(pages, 0);
        // SAFETY: the range is one whole mapping of this process; `resident` holds one
        // byte per page.
        if unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                end - start,
                resident.as_mut_ptr(),
            )
        } != 0
        {
            continue;
        }
        let mut i = 0;
        while i < pages {
            if resident[i] & 1 == 0 {
                i += 1;
                continue;
            }
            let run = i;
            while i < pages && resident[i] & 1 == 1 {
                i += 1;
            }
            // SAFETY: populating pages of a mapping this process owns changes no
            // contents, only who holds the copy.
            let refused = unsafe {
                libc::madvise(
                    (start + run * page) as *mut libc::c_void,
                    (i - run) * page,
                    libc::MADV_POPULATE_WRITE,
                )
            } != 0;
            if refused {
                break; // e.g. a special mapping: leave it to the parent
            }
        }
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn take_own_copy() {}

#[cfg(unix)]
impl ForkedSnapshot {
    /// The cut's log is committed: let the child publish, and wait for it (blocking).
    pub fn publish(mut self) -> Result<PathBuf, SnapshotError> {
        let path = PathBuf::from(file_name(self.last_seq));
        let dir_error = |what: String| SnapshotError::Io {
            path: path.clone(),
            source: std::io::Error::other(what),
        };
        let gate = self.child.map_or(-1, |(_, gate)| gate);
        // SAFETY: writes one byte from a buffer we own to our pipe end.
        let wrote = unsafe { libc::write(gate, [1u8].as_ptr().cast(), 1) };
        let status = self.wait();
        if wrote != 1 {
            return Err(dir_error("the snapshot child is gone".to_owned()));
        }
        match status {
            0 => Ok(path),
            code => Err(dir_error(format!(
                "the snapshot child failed (status {code})"
            ))),
        }
    }

    /// The cut's log could not be committed: the child deletes its file.
    pub fn abandon(mut self) {
        let _ = self.wait();
    }

    /// Closes the gate and reaps the child; its exit code (-1 if it did not exit).
    fn wait(&mut self) -> i32 {
        let Some((pid, gate)) = self.child.take() else {
            return -1;
        };
        let mut status = 0;
        // SAFETY: closes our pipe end and waits for our own child.
        unsafe {
            libc::close(gate);
            if libc::waitpid(pid, &mut status, 0) != pid {
                return -1;
            }
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    }
}

#[cfg(unix)]
impl Drop for ForkedSnapshot {
    /// Neither published nor abandoned: abandon (no zombie, no leaked descriptor).
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// Snapshot files in `dir`, oldest first (by sequence number in the name).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == EXTENSION)
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("snapshot-"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(dir)(e)),
    };
    out.sort();
    Ok(out)
}

/// Reads and checks only the header (for `snapshot inspect`).
/// The last sequence number of the oldest kept snapshot that still reads back whole:
/// the journal must cover every kept snapshot's tail, so it is trimmed only up to it.
pub fn oldest_kept(dir: &Path) -> Option<u64> {
    list(dir)
        .ok()?
        .iter()
        .find_map(|p| read_header(p).ok())
        .map(|h| h.last_seq)
}

pub fn read_header(path: &Path) -> Result<Header, SnapshotError> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    File::open(path)
        .and_then(|f| f.take(HEADER_BYTES as u64).read_to_end(&mut bytes))
        .map_err(io(path))?;
    Header::parse(&bytes).map_err(|reason| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// Reads a snapshot and checks everything: magic, version, length, checksum, decoding,
/// and that the decoded state agrees with the header.
pub fn read(path: &Path) -> Result<(Header, EngineState), SnapshotError> {
    let bytes = fs::read(path).map_err(io(path))?;
    parse(path, &bytes)
}

/// Checks and decodes the bytes of a snapshot file (`path` only names it in errors; the
/// snapshot fuzz target drives this).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Header, EngineState), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let header = Header::parse(bytes).map_err(corrupt)?;
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != header.body_bytes {
        return Err(corrupt(format!(
            "body is {} bytes, the header says {}",
            body.len(),
            header.body_bytes
        )));
    }
    if crc32fast::hash(body) != header.checksum {
        return Err(corrupt("checksum mismatch".to_owned()));
    }
    let state: EngineState = match header.version {
        1 => protocol::decode_serde::<EngineStateV1>(body)
            .map_err(corrupt)?
            .into(),
        2 => protocol::decode_serde::<EngineStateV2>(body)
            .map_err(corrupt)?
            .into(),
        3 => protocol::decode_serde::<EngineStateV3>(body)
            .map_err(corrupt)?
            .into(),
        4 => protocol::decode_serde::<EngineStateV4>(body)
            .map_err(corrupt)?
            .into(),
        // Format 6 appended the id index's secret (an `Option`) and the end of its
        // unkeyed ids (a stamp): format 5 is format 6 with `None` and 0 there, one zero
        // byte each.
        5 => protocol::decode_serde::<EngineStateV5>(&[body, &[0u8, 0u8][..]].concat())
            .map_err(corrupt)?
            .into(),
        // Format 7 keeps wallets with day and week counts and the users' budgets beside
        // them (a sender shard's last field): format 6's wallets are converted. It also
        // appended the purchases per sender shard, the earnings hold and the promotion
        // sales: a format-6 state has none (nothing bought, held or promoted).
        6 => protocol::decode_serde::<EngineStateV6>(body)
            .map_err(corrupt)?
            .into(),
        // Format 8 appended, per sender shard, the videos' aggregates, the recharge
        // records, the debts and the gift records: a format-7 state has none (nothing
        // on videos, nothing reversible until new recharges and gifts are recorded).
        7 => protocol::decode_serde::<EngineStateV7>(body)
            .map_err(corrupt)?
            .into(),
        // Format 9 records whether a held gift was on a stream or a video (the last
        // field's records): format 8's records are all gifts on streams.
        8 => protocol::decode_serde::<EngineStateV8>(body)
            .map_err(corrupt)?
            .into(),
        // Format 10 appended the windowed leaderboards: a format-9 state has none.
        9 => protocol::decode_serde::<EngineStateV9>(body)
            .map_err(corrupt)?
            .into(),
        // Format 11 appended the gift records apart and the pinned `[engine]` values
        // (two lists), format 12 the battles (a map): format 10 is format 12 with all
        // three empty, format 11 with no battles, one zero byte each.
        // Format 13 appended the battles' closes (a list): format 12 is format 13 with
        // none, one zero byte more for each format before.
        10 => protocol::decode_serde(&[body, &[0u8; 4][..]].concat()).map_err(corrupt)?,
        11 => protocol::decode_serde(&[body, &[0u8; 2][..]].concat()).map_err(corrupt)?,
        12 => protocol::decode_serde(&[body, &[0u8][..]].concat()).map_err(corrupt)?,
        _ => protocol::decode_serde(body).map_err(corrupt)?,
    };
    if state.last_seq() != header.last_seq
        || state.counts() != (header.wallets, header.creators, header.streams)
        || state.shards() as u32 != header.shards
    {
        return Err(corrupt("the state does not match its header".to_owned()));
    }
    Ok((header, state))
}

/// The newest snapshot in `dir` that reads back whole, loaded into an engine. A corrupt
/// one is reported (`warn`) and the previous one used.
///
/// A ledger keeps the shard count it was started with (an idempotency id is remembered
/// in its sender's shard, and the window does not record the sender, so its ids cannot
/// be dealt out again): a snapshot taken with another `engine.shards` loads with its
/// own count, and the difference is logged.
pub fn load_newest(
    dir: &Path,
    economy: &Economy,
    config: &EngineConfig,
) -> Result<Option<(PathBuf, Engine)>, SnapshotError> {
    for path in list(dir)?.into_iter().rev() {
        match read(&path) {
            Ok((_, state)) => match Engine::from_state(
                economy.clone(),
                with_ledger_values(config, &state, &path),
                state,
            ) {
                Ok(engine) => return Ok(Some((path, engine))),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "snapshot unusable; trying an older one")
                }
            },
            Err(e) => tracing::warn!(error = %e, "snapshot corrupt; trying an older one"),
        }
    }
    Ok(None)
}

/// `config` with what the ledger's snapshot `path` (its `state`) was kept with: its shard
/// count and its pinned `[engine]` values (format 11; an older state's are the
/// configured ones). Each difference is logged: a ledger keeps them for its life, so a
/// restore into an empty Redis pins the snapshot's, not the file's.
pub fn with_ledger_values(config: &EngineConfig, state: &EngineState, path: &Path) -> EngineConfig {
    let shards = state.shards();
    if shards != config.shards {
        tracing::warn!(
            path = %path.display(),
            snapshot_shards = shards,
            configured = config.shards,
            "engine.shards differs from this ledger's snapshot; the ledger keeps its {shards} shards (a shard count is fixed for a ledger's life)"
        );
    }
    let mut ledger = EngineConfig {
        shards,
        ..config.clone()
    };
    for (key, value) in state.pinned() {
        let configured = config.pinned().into_iter().find(|(k, _)| k == key);
        if configured.is_some_and(|(_, v)| v as u64 != *value) {
            tracing::warn!(
                path = %path.display(),
                key,
                snapshot = value,
                configured = configured.map(|(_, v)| v),
                "an [engine] value pinned with this ledger differs from the configuration; the ledger keeps its snapshot's (fixed for the ledger's life)"
            );
        }
        // (A key this build does not know is ignored: it decides nothing here.)
        let _ = ledger.set_pinned(key, *value as usize);
    }
    ledger
}
