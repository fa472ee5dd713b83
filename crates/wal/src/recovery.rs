//! Recovery: read every segment, check it, and rebuild the in-memory index and hard state.
//!
//! The rules, and why:
//! - Segments must be numbered without gaps, and each segment's header must continue the log
//!   the earlier segments built (its base entry must be there with the same term): a
//!   missing or foreign segment is refused, not skipped.
//! - Only the last segment may end badly, and only in the ways a crash leaves a file: a
//!   record cut short (its header checksum vouches for the length), or a final record
//!   that turns to zeros from a disk-sector boundary inside it to the end of the file
//!   (sectors never written; the file may go on in zeros past the record, when it was
//!   preallocated). Such a tail was never fsynced, so it was never acknowledged, and it is
//!   cut off.
//! - The last segment may end in zeros after its records: space preallocated for records
//!   to come (or pages a crash left unwritten, which held nothing fsynced either). That is
//!   no torn write: the zeros stay, and the next record is written over them. Anything else (a bad checksum followed by more data, a
//!   bad record in an earlier segment) may be acknowledged data that went bad: recovery
//!   refuses, naming the file, the offset and what to do.
//! - After replay, the log must start right after the compaction point the records name
//!   (otherwise segments before the first one are missing) and reach the commit index the
//!   hard state names (otherwise its end was lost).
//!
//! Recovery does not change any file: it reports the torn tail and [`crate::Wal::open`] cuts
//! it once every check has passed.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use concord_raft::{HardState, Index, Term};

use crate::error::{CorruptionKind, Result, WalError};
use crate::index::{Loc, LogIndex};
use crate::record::{decode_frame, decode_payload, FrameError, Record, SegmentHeader, HEADER_LEN};
use crate::segment::{self, Segment};

/// Disk sector size assumed when recognising pages a crash left unwritten.
const SECTOR: usize = 512;

/// A torn write cut off the end of the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the torn record began (the file is cut to this length).
    pub offset: u64,
    /// How many bytes of written data were dropped (zeros after them not counted).
    pub dropped_bytes: u64,
}

/// What was found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// Open segments, oldest first; the last is open for writing.
    pub segments: Vec<Segment>,
    pub index: LogIndex,
    pub hard_state: HardState,
    pub torn_tail: Option<TornTail>,
}

/// Reads the segments in `dir`. `Ok(None)` when there are none.
pub fn recover(dir: &Path, max_record_bytes: u32) -> Result<Option<Recovered>> {
    let seqs = segment::list(dir)?;
    if seqs.is_empty() {
        return Ok(None);
    }
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(WalError::corrupt(
                dir.join(segment::file_name(pair[1])),
                0,
                CorruptionKind::MissingSegment,
                format!(
                    "segment {} is missing: {} is followed by {}",
                    segment::file_name(pair[0] + 1),
                    segment::file_name(pair[0]),
                    segment::file_name(pair[1])
                ),
            ));
        }
    }
    let mut replay = Replay::default();
    let mut segments = Vec::with_capacity(seqs.len());
    let mut torn_tail = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = dir.join(segment::file_name(seq));
        let (file, data) = read_segment(&path, is_last)?;
        let scan = scan_segment(&mut replay, &path, seq, &data, is_last, i == 0, max_record_bytes)?;
        // Written bytes past the good records: a torn write (zeros alone are unused space).
        let dropped = &data[scan.valid_len as usize..];
        if let Some(last_written) = dropped.iter().rposition(|&b| b != 0) {
            torn_tail =
                Some(TornTail { path: path.clone(), offset: scan.valid_len, dropped_bytes: last_written as u64 + 1 });
        }
        segments.push(Segment { seq, path, file, len: scan.valid_len, base_index: scan.base_index });
    }

    let first = &segments[0];
    let (compacted, _) = replay.compacted;
    if replay.index.offset() != compacted {
        return Err(WalError::corrupt(
            &first.path,
            0,
            CorruptionKind::MissingSegment,
            format!(
                "the log was compacted up to entry {compacted}, but the oldest segment starts after \
                 entry {}: entries {}..={} are in no segment (an older segment was removed)",
                replay.index.offset(),
                compacted + 1,
                replay.index.offset()
            ),
        ));
    }
    let last = segments.last().expect("at least one segment");
    if replay.hard_state.commit > replay.index.last_index() {
        return Err(WalError::corrupt(
            &last.path,
            last.len,
            CorruptionKind::LostTail,
            format!(
                "the hard state says entry {} is committed but the log ends at entry {}",
                replay.hard_state.commit,
                replay.index.last_index()
            ),
        ));
    }
    Ok(Some(Recovered { segments, index: replay.index, hard_state: replay.hard_state, torn_tail }))
}

fn read_segment(path: &Path, writable: bool) -> Result<(File, Vec<u8>)> {
    let mut file = OpenOptions::new().read(true).write(writable).open(path).map_err(|e| WalError::io(path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(|e| WalError::io(path, e))?;
    Ok((file, data))
}

struct Scan {
    /// Bytes of good records (the whole file unless a torn tail was found).
    valid_len: u64,
    base_index: Index,
}

fn scan_segment(
    replay: &mut Replay,
    path: &Path,
    seq: u64,
    data: &[u8],
    is_last: bool,
    is_first: bool,
    max_record_bytes: u32,
) -> Result<Scan> {
    let corrupt = |offset: usize, kind, detail: String| WalError::corrupt(path, offset as u64, kind, detail);

    let header = match decode_frame(data, max_record_bytes) {
        Ok((ty, payload, total)) => match decode_payload(ty, payload) {
            Ok(Record::SegmentHeader(h)) => (h, total),
            Ok(other) => {
                return Err(corrupt(0, CorruptionKind::BadSegmentHeader, format!("first record is {other:?}")))
            }
            Err(detail) => return Err(corrupt(0, CorruptionKind::BadSegmentHeader, detail)),
        },
        Err(e) => return Err(corrupt(0, CorruptionKind::BadSegmentHeader, e.describe())),
    };
    let (header, mut pos) = header;
    if header.seq != seq {
        return Err(corrupt(
            0,
            CorruptionKind::BadSegmentHeader,
            format!("the header says this is segment {} (a file renamed by hand?)", header.seq),
        ));
    }
    replay.header(&header, is_first).map_err(|(kind, detail)| corrupt(0, kind, detail))?;

    while pos < data.len() {
        match decode_frame(&data[pos..], max_record_bytes) {
            Ok((ty, payload, total)) => {
                let record = decode_payload(ty, payload).map_err(|d| corrupt(pos, CorruptionKind::BadRecord, d))?;
                replay
                    .record(record, seq, pos as u64, payload.len() as u32)
                    .map_err(|(kind, detail)| corrupt(pos, kind, detail))?;
                pos += total;
            }
            Err(e) if is_last && is_torn_tail(data, pos, &e) => break,
            Err(e) => {
                let hint =
                    if is_last { "" } else { " (in a segment that is not the last, where no torn write can be)" };
                return Err(corrupt(pos, e.kind(), format!("{}{hint}", e.describe())));
            }
        }
    }
    Ok(Scan { valid_len: pos as u64, base_index: header.base_index })
}

/// Whether the bad record at `pos` (the frame error `e`) and everything after it is what a
/// crash in the middle of an unsynced write leaves behind.
fn is_torn_tail(data: &[u8], pos: usize, e: &FrameError) -> bool {
    let rest = &data[pos..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    match *e {
        FrameError::IncompleteHeader { .. } | FrameError::IncompletePayload { .. } => true,
        // The header's own sectors were not all written: its length cannot be trusted, but
        // nothing after it was written either.
        FrameError::BadHeaderChecksum => zero_from_sector_to_end(data, pos + 1, pos + HEADER_LEN),
        // The header checked out (or the sector boundary fell after its checksum), so the
        // record's end is known.
        FrameError::BadPayloadChecksum { len } => {
            let end = pos + HEADER_LEN + len as usize;
            end <= data.len() && zero_from_sector_to_end(data, pos + 1, end)
        }
        FrameError::BadReserved | FrameError::TooLarge { .. } => false,
    }
}

/// Whether the data is all zeros from some sector boundary in `from..before` to its end:
/// a record occupying `from..before` whose later sectors were never written.
fn zero_from_sector_to_end(data: &[u8], from: usize, before: usize) -> bool {
    let last_nonzero = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let boundary = last_nonzero.next_multiple_of(SECTOR);
    boundary >= from && boundary < before
}

/// The replay state: the log as the records so far describe it.
#[derive(Default)]
struct Replay {
    index: LogIndex,
    hard_state: HardState,
    /// The highest compaction point named by any record.
    compacted: (Index, Term),
}

type Problem = (CorruptionKind, String);

impl Replay {
    fn header(&mut self, h: &SegmentHeader, is_first: bool) -> Result<(), Problem> {
        if is_first {
            if h.compacted_index > h.base_index {
                return Err((
                    CorruptionKind::BadSegmentHeader,
                    format!("compacted index {} is past the base index {}", h.compacted_index, h.base_index),
                ));
            }
            self.index = LogIndex::empty_at(h.base_index, h.base_term);
            self.compacted = (h.compacted_index, h.compacted_term);
            self.hard_state = h.hard_state;
            return Ok(());
        }
        // A header compaction point past the log's start means a snapshot replaced the log.
        if h.compacted_index > self.index.offset() {
            if self.index.term(h.compacted_index) == Some(h.compacted_term) {
                self.index.compact_to(h.compacted_index);
            } else {
                self.index.reset_to(h.compacted_index, h.compacted_term);
            }
        }
        self.note_compacted(h.compacted_index, h.compacted_term);
        let base_ok = h.base_index >= self.index.offset()
            && h.base_index <= self.index.last_index()
            && self.index.term(h.base_index) == Some(h.base_term);
        if !base_ok {
            return Err((
                CorruptionKind::IndexGap,
                format!(
                    "the segment continues the log after entry {} (term {}), but the earlier \
                     segments hold entries {}..={} ending in term {}: a segment is missing or foreign",
                    h.base_index,
                    h.base_term,
                    self.index.first_index(),
                    self.index.last_index(),
                    self.index.last_term()
                ),
            ));
        }
        if h.base_index < self.index.last_index() {
            self.index.truncate_from(h.base_index + 1);
        }
        self.hard_state = h.hard_state;
        Ok(())
    }

    fn record(&mut self, record: Record<'_>, seq: u64, offset: u64, len: u32) -> Result<(), Problem> {
        let gap = |detail: String| Err((CorruptionKind::IndexGap, detail));
        match record {
            Record::SegmentHeader(_) => {
                return Err((CorruptionKind::BadRecord, "a segment header in the middle of a segment".into()))
            }
            Record::Entry { index, term, .. } => {
                if index != self.index.last_index() + 1 {
                    return gap(format!("expected entry {}, found entry {index}", self.index.last_index() + 1));
                }
                if term < self.index.last_term() {
                    return gap(format!(
                        "entry {index} has term {term}, lower than the term {} before it",
                        self.index.last_term()
                    ));
                }
                self.index.push(index, Loc { term, seq, offset, len });
            }
            Record::HardState(hs) => self.hard_state = hs,
            Record::Truncate { from } => {
                if from <= self.index.offset() || from > self.index.last_index() {
                    return gap(format!(
                        "truncation at {from} outside the log's entries {}..={}",
                        self.index.first_index(),
                        self.index.last_index()
                    ));
                }
                self.index.truncate_from(from);
            }
            Record::Compact { index, term } => {
                if index > self.index.offset() {
                    if index > self.index.last_index() || self.index.term(index) != Some(term) {
                        return gap(format!(
                            "compaction to entry {index} (term {term}) does not match the log's \
                             entries {}..={}",
                            self.index.first_index(),
                            self.index.last_index()
                        ));
                    }
                    self.index.compact_to(index);
                }
                self.note_compacted(index, term);
            }
        }
        Ok(())
    }

    fn note_compacted(&mut self, index: Index, term: Term) {
        if index > self.compacted.0 {
            self.compacted = (index, term);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_tail_detection() {
        let mut data = vec![1u8; 2000];
        assert!(!zero_from_sector_to_end(&data, 100, 2000));
        data[1024..].fill(0);
        assert!(zero_from_sector_to_end(&data, 100, 2000));
        assert!(zero_from_sector_to_end(&data, 100, 1100), "a record followed by preallocated zeros");
        assert!(!zero_from_sector_to_end(&data, 100, 1024), "the zeros start after the record");
        assert!(!zero_from_sector_to_end(&data, 1500, 2000), "the zeros start before the payload");
        data[1990] = 7;
        assert!(!zero_from_sector_to_end(&data, 100, 2000), "zeros must run from a sector boundary to the end");
    }
}
