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
//! Written to a temp file, fsynced, renamed, and the directory fsynced. A snapshot is
//! taken at a commit boundary: everything up to its sequence number is in the journal.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::economy::Economy;
use crate::engine::{Engine, EngineConfig, EngineState};
use crate::protocol;

pub const MAGIC: [u8; 8] = *b"GIFTSNAP";
pub const VERSION: u32 = 1;
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
        if header.version != VERSION {
            return Err(format!(
                "format version {} (this build reads {VERSION})",
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
    state: &EngineState,
    keep: usize,
) -> Result<(PathBuf, Header), SnapshotError> {
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
    let path = dir.join(file_name(state.last_seq()));
    let tmp = dir.join(format!(".{}.tmp", file_name(state.last_seq())));
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&header.to_bytes()).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    for old in list(dir)?.into_iter().rev().skip(keep.max(1)) {
        let _ = fs::remove_file(old);
    }
    Ok((path, header))
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
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let bytes = fs::read(path).map_err(io(path))?;
    let header = Header::parse(&bytes).map_err(corrupt)?;
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
    let state: EngineState = protocol::decode_serde(body).map_err(corrupt)?;
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
pub fn load_newest(
    dir: &Path,
    economy: &Economy,
    config: &EngineConfig,
) -> Result<Option<(PathBuf, Engine)>, SnapshotError> {
    for path in list(dir)?.into_iter().rev() {
        match read(&path) {
            Ok((_, state)) => match Engine::from_state(economy.clone(), config.clone(), state) {
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
