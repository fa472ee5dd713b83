//! Record framing: how one record is laid out on disk and checked when read back.
//!
//! Every record is a 16-byte header followed by its payload:
//!
//! ```text
//! offset  size  field
//!      0     4  payload length, u32 little endian
//!      4     1  record type (see RecordType)
//!      5     3  reserved, zero
//!      8     4  CRC32C of bytes 0..8 (the header checksum)
//!     12     4  CRC32C of the payload
//!     16     n  payload
//! ```
//!
//! The header has its own checksum so that a damaged length field is caught as damage
//! instead of being trusted: recovery may cut a record that runs past the end of the last
//! file (a torn write) only when its length is known to be what was written. All integers
//! are little endian. Payload layouts are below, next to their encoders.

use bytes::{BufMut, Bytes};
use concord_raft::{Entry, EntryKind, HardState, Index, Term};

use crate::error::CorruptionKind;

/// Bytes of a record header.
pub const HEADER_LEN: usize = 16;
/// The largest payload any configuration may allow (the length field is a u32, and reading a
/// record needs it in memory at once).
pub const HARD_MAX_RECORD_BYTES: u32 = 1 << 30;
/// Fixed part of an entry payload: index, term, kind tag.
pub const ENTRY_FIXED_LEN: usize = 17;

/// Magic at the start of every segment header payload: "concord WAL".
pub const SEGMENT_MAGIC: [u8; 8] = *b"CNCDWAL\0";
/// Version of the segment format this code writes and reads.
pub const SEGMENT_VERSION: u32 = 1;
const SEGMENT_HEADER_LEN: usize = 8 + 4 + 8 * 8;

/// What a record holds. The numbers are the on-disk type tags and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// First record of every segment: the state needed to read the segment on its own.
    SegmentHeader = 1,
    /// One log entry.
    Entry = 2,
    /// Term, vote and commit.
    HardState = 3,
    /// Drop every entry at or after an index (a conflicting suffix).
    Truncate = 4,
    /// Drop every entry at or before an index (covered by a snapshot).
    Compact = 5,
}

impl RecordType {
    fn from_tag(tag: u8) -> Option<RecordType> {
        Some(match tag {
            1 => RecordType::SegmentHeader,
            2 => RecordType::Entry,
            3 => RecordType::HardState,
            4 => RecordType::Truncate,
            5 => RecordType::Compact,
            _ => return None,
        })
    }
}

/// The first record of a segment. It carries everything a reader needs when earlier
/// segments have been compacted away: where the log stood when the segment began, how far
/// the log was compacted, and the hard state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number (also its file name).
    pub seq: u64,
    /// The log's last index when the segment began: every record in this segment concerns
    /// only entries after it. Entries up to it come from earlier segments.
    pub base_index: Index,
    /// The term of the entry at `base_index`.
    pub base_term: Term,
    /// The log was compacted up to here (inclusive) when the segment began.
    pub compacted_index: Index,
    pub compacted_term: Term,
    /// The hard state when the segment began.
    pub hard_state: HardState,
}

/// A decoded record; entry data borrows the buffer it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    SegmentHeader(SegmentHeader),
    Entry {
        index: Index,
        term: Term,
        kind: EntryKind,
        data: &'a [u8],
    },
    HardState(HardState),
    /// Entries with index >= `from` are dropped.
    Truncate {
        from: Index,
    },
    /// Entries with index <= `index` are dropped; the entry at `index` had term `term`.
    Compact {
        index: Index,
        term: Term,
    },
}

/// Why bytes at some offset are not a good record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than [`HEADER_LEN`] bytes are left.
    IncompleteHeader { available: usize },
    /// The header checksum does not match: the length cannot be trusted.
    BadHeaderChecksum,
    /// The reserved header bytes are not zero (the header checksum matched, so this was
    /// written by a newer version or is not a record at all).
    BadReserved,
    /// The header is good but announces more payload than the configured maximum.
    TooLarge { len: u32, max: u32 },
    /// The header is good but the payload runs past the end of the buffer.
    IncompletePayload { len: u32, available: usize },
    /// The header is good, the payload is all there, its checksum does not match.
    BadPayloadChecksum { len: u32 },
}

impl FrameError {
    /// The corruption kind this is when it is not a torn tail.
    pub fn kind(&self) -> CorruptionKind {
        match self {
            FrameError::IncompleteHeader { .. } | FrameError::IncompletePayload { .. } => CorruptionKind::Truncated,
            FrameError::BadHeaderChecksum | FrameError::BadPayloadChecksum { .. } => CorruptionKind::BadChecksum,
            FrameError::BadReserved => CorruptionKind::BadRecord,
            FrameError::TooLarge { .. } => CorruptionKind::TooLarge,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            FrameError::IncompleteHeader { available } => {
                format!("record header cut short: only {available} of {HEADER_LEN} bytes")
            }
            FrameError::BadHeaderChecksum => "record header checksum does not match".into(),
            FrameError::BadReserved => "reserved header bytes are not zero".into(),
            FrameError::TooLarge { len, max } => format!(
                "record announces {len} payload bytes, above the limit of {max} \
                 (if WalOptions::max_record_bytes was lowered, raise it back)"
            ),
            FrameError::IncompletePayload { len, available } => {
                format!("record payload cut short: {available} of {len} bytes")
            }
            FrameError::BadPayloadChecksum { len } => {
                format!("payload checksum does not match ({len}-byte payload)")
            }
        }
    }
}

/// Appends one framed record to `buf`, with the payload written by `payload`. Returns the
/// payload length.
///
/// Panics if the payload exceeds [`HARD_MAX_RECORD_BYTES`]; callers check their configured
/// limit before encoding.
pub fn encode_with(buf: &mut Vec<u8>, ty: RecordType, payload: impl FnOnce(&mut Vec<u8>)) -> u32 {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    payload(buf);
    let len = buf.len() - start - HEADER_LEN;
    assert!(len <= HARD_MAX_RECORD_BYTES as usize, "record payload of {len} bytes exceeds the hard limit");
    let len = len as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4] = ty as u8;
    let header_crc = crc32c::crc32c(&buf[start..start + 8]);
    let payload_crc = crc32c::crc32c(&buf[start + HEADER_LEN..]);
    buf[start + 8..start + 12].copy_from_slice(&header_crc.to_le_bytes());
    buf[start + 12..start + 16].copy_from_slice(&payload_crc.to_le_bytes());
    len
}

/// Bytes the record of `entry` takes on disk, header included.
pub fn entry_record_len(entry: &Entry) -> u64 {
    (HEADER_LEN + ENTRY_FIXED_LEN + entry.data.len()) as u64
}

/// Entry payload: index u64, term u64, kind u8, data.
pub fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) -> u32 {
    encode_with(buf, RecordType::Entry, |b| {
        b.put_u64_le(entry.index);
        b.put_u64_le(entry.term);
        b.put_u8(kind_tag(entry.kind));
        b.extend_from_slice(&entry.data);
    })
}

/// Hard state payload: term u64, vote u64, commit u64.
pub fn encode_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    encode_with(buf, RecordType::HardState, |b| put_hard_state(b, hs));
}

/// Truncate payload: from u64.
pub fn encode_truncate(buf: &mut Vec<u8>, from: Index) {
    encode_with(buf, RecordType::Truncate, |b| b.put_u64_le(from));
}

/// Compact payload: index u64, term u64.
pub fn encode_compact(buf: &mut Vec<u8>, index: Index, term: Term) {
    encode_with(buf, RecordType::Compact, |b| {
        b.put_u64_le(index);
        b.put_u64_le(term);
    });
}

/// Segment header payload: magic (8 bytes), version u32, seq, base index, base term, compacted
/// index, compacted term, hard state term, vote, commit (u64 each).
pub fn encode_segment_header(buf: &mut Vec<u8>, h: &SegmentHeader) {
    encode_with(buf, RecordType::SegmentHeader, |b| {
        b.extend_from_slice(&SEGMENT_MAGIC);
        b.put_u32_le(SEGMENT_VERSION);
        b.put_u64_le(h.seq);
        b.put_u64_le(h.base_index);
        b.put_u64_le(h.base_term);
        b.put_u64_le(h.compacted_index);
        b.put_u64_le(h.compacted_term);
        put_hard_state(b, &h.hard_state);
    });
}

fn put_hard_state(b: &mut Vec<u8>, hs: &HardState) {
    b.put_u64_le(hs.term);
    b.put_u64_le(hs.vote);
    b.put_u64_le(hs.commit);
}

/// The on-disk tag of an entry kind. A new [`EntryKind`] variant fails to compile here until
/// it is given a tag (and [`kind_from_tag`] learns it).
pub fn kind_tag(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    }
}

pub fn kind_from_tag(tag: u8) -> Option<EntryKind> {
    match tag {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::ConfChange),
        _ => None,
    }
}

/// Checks the frame at the start of `buf`. On success returns the record type tag, the
/// payload and the total record length.
pub fn decode_frame(buf: &[u8], max_payload: u32) -> Result<(u8, &[u8], usize), FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::IncompleteHeader { available: buf.len() });
    }
    let header_crc = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[0..8]) != header_crc {
        return Err(FrameError::BadHeaderChecksum);
    }
    if buf[5..8] != [0, 0, 0] {
        return Err(FrameError::BadReserved);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    if len > max_payload {
        return Err(FrameError::TooLarge { len, max: max_payload });
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(FrameError::IncompletePayload { len, available: buf.len() - HEADER_LEN });
    }
    let payload = &buf[HEADER_LEN..total];
    let payload_crc = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
    if crc32c::crc32c(payload) != payload_crc {
        return Err(FrameError::BadPayloadChecksum { len });
    }
    Ok((buf[4], payload, total))
}

/// Decodes a payload whose frame checked out. The error is a description for a
/// [`CorruptionKind::BadRecord`].
pub fn decode_payload(ty: u8, p: &[u8]) -> Result<Record<'_>, String> {
    let ty = RecordType::from_tag(ty).ok_or_else(|| format!("unknown record type {ty}"))?;
    let want_len = |n: usize| {
        if p.len() == n {
            Ok(())
        } else {
            Err(format!("{ty:?} record has a {}-byte payload, expected {n}", p.len()))
        }
    };
    Ok(match ty {
        RecordType::SegmentHeader => {
            want_len(SEGMENT_HEADER_LEN)?;
            if p[0..8] != SEGMENT_MAGIC {
                return Err("segment header magic is wrong (not a concord WAL segment)".into());
            }
            let version = u32::from_le_bytes(p[8..12].try_into().expect("4 bytes"));
            if version != SEGMENT_VERSION {
                return Err(format!("segment format version {version}, this build reads version {SEGMENT_VERSION}"));
            }
            let u = |i: usize| u64_at(p, 12 + 8 * i);
            Record::SegmentHeader(SegmentHeader {
                seq: u(0),
                base_index: u(1),
                base_term: u(2),
                compacted_index: u(3),
                compacted_term: u(4),
                hard_state: HardState { term: u(5), vote: u(6), commit: u(7) },
            })
        }
        RecordType::Entry => {
            if p.len() < ENTRY_FIXED_LEN {
                return Err(format!("entry record has a {}-byte payload, too short", p.len()));
            }
            let kind = kind_from_tag(p[16]).ok_or_else(|| format!("unknown entry kind tag {}", p[16]))?;
            Record::Entry { index: u64_at(p, 0), term: u64_at(p, 8), kind, data: &p[ENTRY_FIXED_LEN..] }
        }
        RecordType::HardState => {
            want_len(24)?;
            Record::HardState(HardState { term: u64_at(p, 0), vote: u64_at(p, 8), commit: u64_at(p, 16) })
        }
        RecordType::Truncate => {
            want_len(8)?;
            Record::Truncate { from: u64_at(p, 0) }
        }
        RecordType::Compact => {
            want_len(16)?;
            Record::Compact { index: u64_at(p, 0), term: u64_at(p, 8) }
        }
    })
}

/// Turns a decoded entry record back into an [`Entry`], sharing `owner`'s memory for the data
/// (`data` must be a slice of `owner`).
pub fn entry_from_parts(index: Index, term: Term, kind: EntryKind, owner: &Bytes, data: &[u8]) -> Entry {
    Entry { index, term, kind, data: owner.slice_ref(data) }
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_roundtrip() {
        let e = Entry { index: 7, term: 3, kind: EntryKind::Normal, data: Bytes::from_static(b"hello") };
        let mut buf = Vec::new();
        let len = encode_entry(&mut buf, &e);
        assert_eq!(buf.len() as u64, entry_record_len(&e));
        assert_eq!(len as usize, buf.len() - HEADER_LEN);
        let (ty, payload, total) = decode_frame(&buf, 1024).unwrap();
        assert_eq!(total, buf.len());
        match decode_payload(ty, payload).unwrap() {
            Record::Entry { index, term, kind, data } => {
                assert_eq!((index, term, kind, data), (7, 3, EntryKind::Normal, &b"hello"[..]));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut buf = Vec::new();
        encode_hard_state(&mut buf, &HardState { term: 5, vote: 2, commit: 9 });
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(decode_frame(&b, 1024).is_err(), "flip of bit {bit} in byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn limits_and_short_buffers() {
        let mut buf = Vec::new();
        encode_truncate(&mut buf, 4);
        assert_eq!(decode_frame(&buf[..10], 1024), Err(FrameError::IncompleteHeader { available: 10 }));
        assert_eq!(decode_frame(&buf[..20], 1024), Err(FrameError::IncompletePayload { len: 8, available: 4 }));
        assert_eq!(decode_frame(&buf, 4), Err(FrameError::TooLarge { len: 8, max: 4 }));
    }

    #[test]
    fn unknown_tags_are_rejected() {
        let mut buf = Vec::new();
        encode_with(&mut buf, RecordType::Entry, |b| {
            b.put_u64_le(1);
            b.put_u64_le(1);
            b.put_u8(200);
        });
        let (ty, payload, _) = decode_frame(&buf, 1024).unwrap();
        assert!(decode_payload(ty, payload).unwrap_err().contains("unknown entry kind"));
        assert!(decode_payload(99, payload).unwrap_err().contains("unknown record type"));
    }

    #[test]
    fn segment_header_roundtrip() {
        let h = SegmentHeader {
            seq: 3,
            base_index: 10,
            base_term: 2,
            compacted_index: 4,
            compacted_term: 1,
            hard_state: HardState { term: 2, vote: 1, commit: 9 },
        };
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, &h);
        let (ty, payload, _) = decode_frame(&buf, 1024).unwrap();
        assert_eq!(decode_payload(ty, payload).unwrap(), Record::SegmentHeader(h));
    }
}
