//! Snapshots as the core sees them: metadata it must know (the last entry covered and the
//! membership at that point) and the chunks in which a leader streams the application's
//! bytes to a follower whose next entry was compacted away.
//!
//! The core never holds a whole snapshot. A leader reads one chunk at a time through
//! [`crate::LogStore::snapshot_chunk`]; a follower hands each chunk to the application in
//! a [`crate::Ready`] to stage, and when the last one arrives asks it to install the staged
//! snapshot. So a snapshot of any size costs the core one chunk of memory.

use bytes::{BufMut, Bytes, BytesMut};

use crate::membership::{DecodeError, Membership};
use crate::types::{Index, Term};

/// What a snapshot covers: the log through `index` (whose entry had `term`) and the
/// membership in effect there. Index 0 means "no snapshot".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub membership: Membership,
}

impl SnapshotMeta {
    /// A compact binary form, for the application to store beside its snapshot bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u64_le(self.index);
        out.put_u64_le(self.term);
        self.membership.encode(&mut out);
        out.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<SnapshotMeta, DecodeError> {
        let word = |at: usize| -> Result<u64, DecodeError> {
            let slice = bytes.get(at..at + 8).ok_or(DecodeError::Truncated)?;
            Ok(u64::from_le_bytes(slice.try_into().expect("8 bytes")))
        };
        let (membership, _) = Membership::decode(bytes.get(16..).ok_or(DecodeError::Truncated)?)?;
        Ok(SnapshotMeta { index: word(0)?, term: word(8)?, membership })
    }
}

/// A piece of a snapshot in transfer: bytes `[offset, offset + data.len())` of the
/// snapshot described by `meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Bytes,
    /// This chunk ends the snapshot.
    pub last: bool,
}

/// One chunk as read from the application's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    pub data: Bytes,
    /// No bytes follow this chunk.
    pub last: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let meta = SnapshotMeta { index: 42, term: 7, membership: Membership::new([1, 2, 3], [5]) };
        assert_eq!(SnapshotMeta::decode(&meta.encode()).unwrap(), meta);
        assert_eq!(SnapshotMeta::decode(&meta.encode()[..20]), Err(DecodeError::Truncated));
    }
}
