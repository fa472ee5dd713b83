//! Segment files: naming, listing, creating, and the handle the log keeps for each.
//!
//! The log is a sequence of files `<seq>.wal` (16 hex digits) in the `wal` directory, with
//! sequence numbers that grow by one and never repeat. Only the last segment is written; a
//! segment is fdatasynced before the next one is created, so every segment but the last is
//! complete on disk. A new segment is born whole (header written, fsynced, renamed into
//! place, directory fsynced), so a segment file that exists always has a valid header.
//!
//! Preallocation: the last segment may be longer than its records, the rest reading as
//! zeros (see `WalOptions::preallocate`). Recovery takes a tail of zeros in the last segment
//! as unused space; a segment is cut to its records before the next one is created
//! ([`Segment::seal`]), so every other segment ends with its last record.

use std::fs::File;
use std::path::{Path, PathBuf};

use concord_raft::Index;

use crate::error::{Result, WalError};
use crate::fsutil::{create_durably, preallocate, sync_file, Faults};
use crate::record::{encode_segment_header, SegmentHeader};

/// Name of the segment file with sequence number `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// The sequence number of a segment file name, or `None` for any other file.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The sequence numbers of the segments in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    /// Open for reading, and for writing when this is the last segment.
    pub file: File,
    /// Bytes of valid records in the file (where the next record goes).
    pub len: u64,
    /// See [`SegmentHeader::base_index`].
    pub base_index: Index,
}

impl Segment {
    /// Creates segment `header.seq` in `dir`, durably, holding only its header, and
    /// preallocated to `preallocate_to` bytes if given (best effort).
    pub fn create(dir: &Path, header: &SegmentHeader, preallocate_to: Option<u64>, faults: &Faults) -> Result<Segment> {
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, header);
        let name = file_name(header.seq);
        let file = create_durably(dir, &name, &[&buf], faults)?;
        if let Some(len) = preallocate_to {
            preallocate(&file, len);
        }
        Ok(Segment {
            seq: header.seq,
            path: dir.join(name),
            file,
            len: buf.len() as u64,
            base_index: header.base_index,
        })
    }
}

impl Segment {
    /// Cuts the file to its records (dropping preallocated space), durably: the segment
    /// then ends exactly with its last record, as recovery requires of every segment but
    /// the last. Call after the records are fdatasynced and before the next segment is
    /// created. Always fdatasyncs, even when the length is already right: an earlier cut
    /// (the undo of a partial write on a full disk) may not be durable yet. A failure
    /// leaves the file's state unknown (the caller poisons the log).
    pub fn seal(&self, faults: &Faults) -> Result<()> {
        let file_len = self.file.metadata().map_err(|e| WalError::io(&self.path, e))?.len();
        debug_assert!(file_len >= self.len, "a segment's file holds all its records");
        if file_len != self.len {
            self.file
                .set_len(self.len)
                .map_err(|e| crate::fsutil::poisoned(&self.path, "cutting a segment to its records", e))?;
        }
        sync_file(&self.file, &self.path, false, faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(file_name(26), "000000000000001a.wal");
        assert_eq!(parse_file_name("000000000000001a.wal"), Some(26));
        assert_eq!(parse_file_name("000000000000001a.wal.tmp"), None);
        assert_eq!(parse_file_name("1a.wal"), None);
        assert_eq!(parse_file_name("zzzzzzzzzzzzzzzz.wal"), None);
    }
}
