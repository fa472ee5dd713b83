//! Segment files: naming, listing, creating, and the handle the log keeps for each.
//!
//! The log is a sequence of files `<seq>.wal` (16 hex digits) in the `wal` directory, with
//! sequence numbers that grow by one and never repeat. Only the last segment is written; a
//! segment is fdatasynced before the next one is created, so every segment but the last is
//! complete on disk. A new segment is born whole (header written, fsynced, renamed into
//! place, directory fsynced), so a segment file that exists always has a valid header.

use std::fs::File;
use std::path::{Path, PathBuf};

use concord_raft::Index;

use crate::error::{Result, WalError};
use crate::fsutil::{create_durably, Faults};
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
    /// Creates segment `header.seq` in `dir`, durably, holding only its header.
    pub fn create(dir: &Path, header: &SegmentHeader, faults: &Faults) -> Result<Segment> {
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, header);
        let name = file_name(header.seq);
        let file = create_durably(dir, &name, &[&buf], faults)?;
        Ok(Segment {
            seq: header.seq,
            path: dir.join(name),
            file,
            len: buf.len() as u64,
            base_index: header.base_index,
        })
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
