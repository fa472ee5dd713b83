//! Snapshot files: opaque state-machine bytes plus the index and term they cover.
//!
//! A snapshot is what lets the log be compacted, so it must be durable before the log drops
//! anything: it is written to a temporary name, fsynced, renamed, and the directory fsynced.
//! Every file is checksummed; on open the newest file that checks out is the snapshot, and
//! older files are removed only after a newer one is durable.
//!
//! File `<index>-<term>.snap` (16 hex digits each) in the `snap` directory:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "CNCDSNAP"
//!      8     4  format version (1), u32 little endian
//!     12     4  reserved, zero
//!     16     8  last included index
//!     24     8  last included term
//!     32     8  data length
//!     40     4  CRC32C of the data
//!     44     4  CRC32C of bytes 0..44
//!     48     n  data
//! ```

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use concord_raft::{Index, Term};

use crate::error::{Result, WalError};
use crate::fsutil::{create_durably, ensure_dir, remove_tmp_files, sync_dir, Faults};

const MAGIC: [u8; 8] = *b"CNCDSNAP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 48;

/// What a snapshot covers: the log up to and including `index`, whose entry had `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
}

/// A snapshot read back from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// The snapshot directory.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    newest: Option<SnapshotMeta>,
    /// Files that failed their checks on open, with the reason (kept for the operator).
    skipped: Vec<(PathBuf, String)>,
    faults: Faults,
}

fn file_name(meta: SnapshotMeta) -> String {
    format!("{:016x}-{:016x}.snap", meta.index, meta.term)
}

fn parse_file_name(name: &str) -> Option<SnapshotMeta> {
    let stem = name.strip_suffix(".snap")?;
    let (index, term) = stem.split_once('-')?;
    let hex = |s: &str| {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some(SnapshotMeta { index: hex(index)?, term: hex(term)? })
}

fn encode_header(meta: SnapshotMeta, data: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&meta.index.to_le_bytes());
    h[24..32].copy_from_slice(&meta.term.to_le_bytes());
    h[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    h[40..44].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..44]);
    h[44..48].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header against the file's name; returns (data length, data checksum).
fn decode_header(h: &[u8; HEADER_LEN], named: SnapshotMeta) -> Result<(u64, u32), String> {
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[0..44]) != u32_at(44) {
        return Err("header checksum does not match".into());
    }
    if h[0..8] != MAGIC {
        return Err("not a concord snapshot (bad magic)".into());
    }
    if u32_at(8) != VERSION {
        return Err(format!("snapshot format version {}, this build reads {VERSION}", u32_at(8)));
    }
    let meta = SnapshotMeta { index: u64_at(16), term: u64_at(24) };
    if meta != named {
        return Err(format!("header says index {} term {}, the file name disagrees", meta.index, meta.term));
    }
    Ok((u64_at(32), u32_at(40)))
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory and finds the newest valid snapshot.
    /// Leftover temporary files from an interrupted save are removed.
    pub fn open(dir: impl AsRef<Path>, faults: Faults) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        ensure_dir(&dir, &faults)?;
        if remove_tmp_files(&dir)? {
            sync_dir(&dir, &faults)?;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| WalError::io(&dir, e))? {
            let entry = entry.map_err(|e| WalError::io(&dir, e))?;
            if let Some(meta) = entry.file_name().to_str().and_then(parse_file_name) {
                found.push(meta);
            }
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        let mut store = SnapshotStore { dir, newest: None, skipped: Vec::new(), faults };
        for meta in found {
            let path = store.path(meta);
            match verify(&path, meta) {
                Ok(_) => {
                    store.newest = Some(meta);
                    break;
                }
                Err(reason) => store.skipped.push((path, reason)),
            }
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, meta: SnapshotMeta) -> PathBuf {
        self.dir.join(file_name(meta))
    }

    /// The newest valid snapshot's metadata.
    pub fn newest(&self) -> Option<SnapshotMeta> {
        self.newest
    }

    /// Snapshot files newer than [`SnapshotStore::newest`] that failed their checks on open.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Writes a snapshot durably and makes it the newest. Older files stay until
    /// [`SnapshotStore::remove_older`].
    pub fn save(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<()> {
        if let Some(newest) = self.newest {
            if meta <= newest {
                return Err(WalError::Invalid(format!(
                    "snapshot at index {} term {} is not newer than the one at index {} term {}",
                    meta.index, meta.term, newest.index, newest.term
                )));
            }
        }
        let header = encode_header(meta, data);
        create_durably(&self.dir, &file_name(meta), &[&header, data], &self.faults)?;
        self.newest = Some(meta);
        Ok(())
    }

    /// Removes every snapshot file but the newest (and the skipped ones), durably.
    pub fn remove_older(&mut self) -> Result<()> {
        let keep = self.newest.map(file_name);
        let mut removed = false;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| WalError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| WalError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if parse_file_name(name).is_some() && Some(name) != keep.as_deref() {
                std::fs::remove_file(entry.path()).map_err(|e| WalError::io(entry.path(), e))?;
                removed = true;
            }
        }
        self.skipped.clear();
        if removed {
            sync_dir(&self.dir, &self.faults)?;
        }
        Ok(())
    }

    /// Reads the newest snapshot back, checking it again.
    pub fn load(&self) -> Result<Option<Snapshot>> {
        let Some(meta) = self.newest else {
            return Ok(None);
        };
        let path = self.path(meta);
        let bytes = std::fs::read(&path).map_err(|e| WalError::io(&path, e))?;
        let bad = |detail: String| WalError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, detail),
        };
        let header: &[u8; HEADER_LEN] =
            bytes.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or_else(|| bad("file too short".into()))?;
        let (len, crc) = decode_header(header, meta).map_err(bad)?;
        let data = &bytes[HEADER_LEN..];
        if data.len() as u64 != len || crc32c::crc32c(data) != crc {
            return Err(bad("snapshot data does not match its checksum (damaged since open)".into()));
        }
        let bytes = Bytes::from(bytes);
        Ok(Some(Snapshot { meta, data: bytes.slice(HEADER_LEN..) }))
    }
}

/// Checks a snapshot file completely, streaming its data through the checksum.
fn verify(path: &Path, named: SnapshotMeta) -> Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).map_err(|_| "file shorter than a snapshot header".to_string())?;
    let (len, want_crc) = decode_header(&header, named)?;
    if file_len != HEADER_LEN as u64 + len {
        return Err(format!("file holds {} data bytes, header says {len}", file_len - HEADER_LEN as u64));
    }
    let mut crc = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    if crc != want_crc {
        return Err("data checksum does not match".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        let meta = SnapshotMeta { index: 300, term: 7 };
        assert_eq!(parse_file_name(&file_name(meta)), Some(meta));
        assert_eq!(parse_file_name("x.snap"), None);
    }

    #[test]
    fn save_load_and_fall_back_to_an_older_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(dir.path(), None).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let old = SnapshotMeta { index: 10, term: 2 };
        let new = SnapshotMeta { index: 20, term: 3 };
        store.save(old, b"old state").unwrap();
        store.save(new, b"new state").unwrap();
        assert!(store.save(old, b"again").is_err(), "snapshots only move forward");
        assert_eq!(store.load().unwrap().unwrap().data, Bytes::from_static(b"new state"));

        // Damage the newest: reopening falls back to the older one, which is still there.
        let path = dir.path().join(file_name(new));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut store = SnapshotStore::open(dir.path(), None).unwrap();
        assert_eq!(store.newest(), Some(old));
        assert_eq!(store.skipped().len(), 1);
        assert_eq!(store.load().unwrap().unwrap().data, Bytes::from_static(b"old state"));

        store.remove_older().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(file_name(old))]);
    }

    #[test]
    fn leftover_tmp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0000000000000001-0000000000000001.snap.tmp"), b"half").unwrap();
        let store = SnapshotStore::open(dir.path(), None).unwrap();
        assert_eq!(store.newest(), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
