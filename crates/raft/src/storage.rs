//! How the core reads the stable log: a small trait the WAL (or an in-memory model)
//! implements.
//!
//! The core never writes through this trait. It hands entries and hard state out in a
//! [`crate::Ready`]; the application writes them and later reports them persisted. Until
//! then the core keeps those entries itself, so the trait only has to answer for what the
//! application has written.

use bytes::Bytes;

use crate::snapshot::{SnapshotData, SnapshotMeta};
use crate::types::{Entry, HardState, Index, Term};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorageError {
    /// The entry was dropped by log compaction.
    #[error("entry {0} has been compacted")]
    Compacted(Index),
    /// The entry is past the end of the stable log.
    #[error("entry {0} is not available")]
    Unavailable(Index),
    /// The configuration in effect at this index is not known here: a member that joined
    /// learns the configuration from the first configuration entry (or snapshot) it
    /// receives, not the ones before it.
    #[error("the configuration at entry {0} is not known here")]
    MembershipUnknown(Index),
    /// The storage itself failed; the node cannot continue safely.
    #[error("storage failure: {0}")]
    Fatal(String),
}

/// Read access to the stable (written) part of the log.
///
/// Invariants an implementation must keep: indexes are contiguous from `first_index` to
/// `last_index`; `term(first_index - 1)` is answerable (the term of the last compacted
/// entry, or 0 for an empty log).
pub trait LogStore {
    /// The hard state and last index found on disk when the node starts.
    fn initial_hard_state(&self) -> HardState;
    /// The first index still held (1 when nothing was compacted).
    fn first_index(&self) -> Index;
    /// The last index written (`first_index - 1` when empty).
    fn last_index(&self) -> Index;
    /// The term of the entry at `index`, for `first_index - 1 <= index <= last_index`.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// Entries `[low, high)`, stopping early once `max_bytes` is exceeded; at least one
    /// entry is returned when the range is non-empty, so progress is always possible.
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The newest durable snapshot (index 0 when there is none). A store that compacts its
    /// log must keep a snapshot at or past the compaction point: `first_index - 1 <=
    /// snapshot_meta().index`.
    fn snapshot_meta(&self) -> SnapshotMeta {
        SnapshotMeta::default()
    }
    /// Up to `max_bytes` of the snapshot at `index`, from byte `offset`. Fails with
    /// [`StorageError::Compacted`] when `index` is no longer the newest snapshot (the
    /// leader then starts over with the newer one).
    fn snapshot_chunk(&self, index: Index, offset: u64, max_bytes: u64) -> Result<SnapshotData, StorageError> {
        let _ = (offset, max_bytes);
        Err(StorageError::Unavailable(index))
    }
}

/// A log held in memory: the reference implementation of [`LogStore`], used by tests,
/// benchmarks and the simulator's disk model.
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    pub hard_state: HardState,
    /// Entries in index order, starting at index `offset + 1`.
    entries: Vec<Entry>,
    /// Index of the entry before `entries[0]` (0 unless compacted).
    offset: Index,
    /// Term at `offset`.
    offset_term: Term,
    snapshot: SnapshotMeta,
    snapshot_data: Bytes,
}

impl MemoryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `entries`, first dropping anything at or after the first new index (the
    /// application's side of "truncate a conflicting suffix").
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.offset && first.index <= self.last_index() + 1,
            "append at {} leaves a gap after {} (offset {})",
            first.index,
            self.last_index(),
            self.offset
        );
        self.entries.truncate((first.index - self.offset - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Drops every entry after `last_index` (used when modelling a crash that loses an
    /// unsynced tail).
    pub fn truncate_after(&mut self, last_index: Index) {
        let keep = last_index.saturating_sub(self.offset) as usize;
        self.entries.truncate(keep);
    }

    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Keeps `data` as the newest snapshot. If the log holds the snapshot's last entry it
    /// is kept (compact it with [`MemoryLog::compact`]); otherwise it is replaced by an
    /// empty log starting after the snapshot, as InstallSnapshot requires.
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: Bytes) {
        assert!(meta.index >= self.snapshot.index, "snapshots only move forward");
        if self.term(meta.index).ok() != Some(meta.term) {
            self.entries.clear();
            self.offset = meta.index;
            self.offset_term = meta.term;
        }
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    /// Drops the entries through `index`, which the snapshot must cover.
    pub fn compact(&mut self, index: Index) {
        assert!(index <= self.snapshot.index, "compaction to {index} past the snapshot at {}", self.snapshot.index);
        if index <= self.offset {
            return;
        }
        let term = self.term(index).expect("compacted entries are in the log");
        self.entries.drain(..(index - self.offset) as usize);
        self.offset = index;
        self.offset_term = term;
    }

    pub fn snapshot_data(&self) -> &Bytes {
        &self.snapshot_data
    }
}

impl LogStore for MemoryLog {
    fn initial_hard_state(&self) -> HardState {
        self.hard_state
    }

    fn first_index(&self) -> Index {
        self.offset + 1
    }

    fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.offset {
            return Err(StorageError::Compacted(index));
        }
        if index == self.offset {
            return Ok(self.offset_term);
        }
        self.entries.get((index - self.offset - 1) as usize).map(|e| e.term).ok_or(StorageError::Unavailable(index))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low <= self.offset {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable(high - 1));
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in &self.entries[(low - self.offset - 1) as usize..(high - self.offset - 1) as usize] {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn snapshot_chunk(&self, index: Index, offset: u64, max_bytes: u64) -> Result<SnapshotData, StorageError> {
        if index != self.snapshot.index || index == 0 {
            return Err(StorageError::Compacted(index));
        }
        let len = self.snapshot_data.len() as u64;
        let start = offset.min(len);
        let end = start.saturating_add(max_bytes.max(1)).min(len);
        Ok(SnapshotData { data: self.snapshot_data.slice(start as usize..end as usize), last: end == len })
    }
}
