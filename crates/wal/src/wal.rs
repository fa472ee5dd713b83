//! The write-ahead log a node writes its Raft state through, and reads its stable log from.
//!
//! A [`Wal`] owns a data directory with two subdirectories: `wal/` holds the segments (see
//! [`crate::segment`] and [`crate::record`]) and `snap/` the snapshot files (see
//! [`crate::snapshot`]). Records are buffered and written to the last segment by
//! [`Wal::sync`] with one `write` and one `fdatasync` for everything since the last sync
//! (group commit). Reads go through the [`LogStore`] trait of the consensus core, from
//! an in-memory cache of the tail or from the segments by a positioned read.
//!
//! Invariants kept here, on which recovery relies:
//! - every record in a segment concerns only entries after the segment's base index; a
//!   truncation below it, or a snapshot that replaces the log, starts a new segment whose
//!   header states the new base;
//! - a segment is fdatasynced before the next one is created;
//! - a compaction record is durable before any segment is removed, and a snapshot file is
//!   durable before the log is compacted past what it covers;
//! - after a failed fsync nothing is written again ([`WalError::Poisoned`]).

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use concord_raft::{Entry, HardState, Index, LogStore, StorageError, Term};

use crate::cache::EntryCache;
use crate::error::{CorruptionKind, Result, WalError};
use crate::fsutil::{ensure_dir, preallocate, remove_tmp_files, sync_dir, sync_file, write_at, Faults};
use crate::index::{Loc, LogIndex};
use crate::options::WalOptions;
use crate::record::{
    decode_frame, decode_payload, encode_compact, encode_entry, encode_hard_state, encode_truncate, entry_from_parts,
    Record, SegmentHeader, ENTRY_FIXED_LEN, HEADER_LEN,
};
use crate::recovery::{recover, TornTail};
use crate::segment::Segment;
use crate::snapshot::{Snapshot, SnapshotMeta, SnapshotStore};

/// Bytes of a segment holding only its header record.
const EMPTY_SEGMENT_LEN: u64 = (HEADER_LEN + 76) as u64;
/// Buffered records are written to the file once they reach this size, even before a sync.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Bytes of a truncate record.
const TRUNCATE_RECORD_LEN: u64 = (HEADER_LEN + 8) as u64;

/// What [`Wal::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The directory held no log: a new one was created.
    pub created: bool,
    /// A torn write cut off the end of the last segment.
    pub torn_tail: Option<TornTail>,
    /// The newest snapshot was durable but the log had not yet been reset to it (a crash in
    /// the middle of [`Wal::save_snapshot`]); open finished the job.
    pub completed_snapshot_install: Option<SnapshotMeta>,
    /// Snapshot files newer than the one in use that failed their checksums.
    pub skipped_snapshots: Vec<(PathBuf, String)>,
}

/// A node's durable Raft state: log, hard state and snapshot.
#[derive(Debug)]
pub struct Wal {
    wal_dir: PathBuf,
    opts: WalOptions,
    faults: Faults,
    /// Open segments, oldest first, never empty; the last one is written.
    segments: VecDeque<Segment>,
    index: LogIndex,
    cache: EntryCache,
    hard_state: HardState,
    initial_hard_state: HardState,
    snapshots: SnapshotStore,
    /// Entries up to here (as the log now reads) are on disk for sure.
    durable_index: Index,
    /// Bytes were written to the last segment since its last fdatasync.
    dirty: bool,
    /// Records of the last segment not yet written to the file (they end at its `len`).
    /// Writing them at `sync` makes one `write` per group commit instead of one per call.
    pending: Vec<u8>,
    /// Set by the first failed fsync (or failed undo of a write); then every call fails.
    poisoned: Option<String>,
    report: RecoveryReport,
}

impl Wal {
    /// Opens the log in `dir`, creating it if the directory holds none, and recovers it.
    ///
    /// A torn write at the very end of the last segment is cut off; any other damage is
    /// refused with [`WalError::Corrupt`], which names the file, the offset and what the
    /// operator can do. What recovery read is fsynced before `open` returns, so everything
    /// in the returned log is durable.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        opts.validate()?;
        let root = dir.as_ref();
        let faults = opts.faults.clone();
        let wal_dir = root.join("wal");
        ensure_dir(root, &faults)?;
        ensure_dir(&wal_dir, &faults)?;
        if remove_tmp_files(&wal_dir)? {
            sync_dir(&wal_dir, &faults)?;
        }
        let snapshots = SnapshotStore::open(root.join("snap"), faults.clone())?;
        let mut report = RecoveryReport { skipped_snapshots: snapshots.skipped().to_vec(), ..Default::default() };

        let (segments, index, hard_state) = match recover(&wal_dir, opts.max_record_bytes)? {
            None => {
                if let Some(meta) = snapshots.newest() {
                    return Err(WalError::corrupt(
                        &wal_dir,
                        0,
                        CorruptionKind::MissingSegment,
                        format!("no segment files, but a snapshot at index {} exists: the log was deleted", meta.index),
                    ));
                }
                report.created = true;
                let header = SegmentHeader {
                    seq: 0,
                    base_index: 0,
                    base_term: 0,
                    compacted_index: 0,
                    compacted_term: 0,
                    hard_state: HardState::default(),
                };
                let segment = Segment::create(&wal_dir, &header, opts.preallocate_to(), &faults)?;
                (VecDeque::from([segment]), LogIndex::empty_at(0, 0), HardState::default())
            }
            Some(rec) => {
                let compacted = rec.index.offset();
                let covered = snapshots.newest().map_or(0, |m| m.index);
                if compacted > covered {
                    return Err(WalError::corrupt(
                        snapshots.dir(),
                        0,
                        CorruptionKind::MissingSnapshot,
                        format!(
                            "the log was compacted up to entry {compacted}, but the newest valid \
                             snapshot covers only up to entry {covered}"
                        ),
                    ));
                }
                let last = rec.segments.last().expect("recovery returns at least one segment");
                if let Some(torn) = &rec.torn_tail {
                    last.file.set_len(torn.offset).map_err(|e| WalError::io(&last.path, e))?;
                }
                if let Some(len) = opts.preallocate_to() {
                    preallocate(&last.file, len);
                }
                // Make what recovery read durable: a process that crashed (rather than the
                // machine) leaves unsynced writes in the page cache, readable but not safe.
                sync_file(&last.file, &last.path, false, &faults)?;
                report.torn_tail = rec.torn_tail;
                (VecDeque::from(rec.segments), rec.index, rec.hard_state)
            }
        };

        let mut wal = Wal {
            wal_dir,
            faults,
            segments,
            durable_index: index.last_index(),
            index,
            cache: EntryCache::new(opts.cache_bytes),
            hard_state,
            initial_hard_state: hard_state,
            snapshots,
            dirty: false,
            pending: Vec::new(),
            poisoned: None,
            report,
            opts,
        };
        if let Some(meta) = wal.snapshots.newest() {
            if meta.index > wal.index.offset() && wal.index.term(meta.index) != Some(meta.term) {
                wal.reset_log(meta)?;
                wal.snapshots.remove_older()?;
                wal.report.completed_snapshot_install = Some(meta);
            }
        }
        Ok(wal)
    }

    /// What [`Wal::open`] found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory holding the segments.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// The hard state as last written (durable after the next [`Wal::sync`]).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The highest index known durable: the entries up to it, as the log now reads, survive
    /// a crash. Moves on [`Wal::sync`]; goes down when a suffix is replaced.
    pub fn durable_index(&self) -> Index {
        self.durable_index
    }

    /// The newest durable snapshot.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshots.newest()
    }

    /// Reads the newest snapshot back (checksummed again).
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>> {
        self.check_poisoned()?;
        self.snapshots.load()
    }

    /// Whether a failed fsync has made the log unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Writes `entries` after the log (buffered, not yet durable: see [`Wal::sync`]). They
    /// are readable through [`LogStore`] at once.
    ///
    /// `entries` must have consecutive indexes and non-decreasing terms. If the first index
    /// is at or below the last index, the log's suffix from there is replaced (the Raft
    /// "truncate a conflicting suffix"); this is written down, so recovery replays it.
    /// Replacing a committed entry (at or below the hard state's commit, or covered by the
    /// snapshot) is refused.
    ///
    /// [`WalError::NoSpace`] comes only when the write buffer had to be written (or a new
    /// segment created): the partial write is undone and the entries are not appended. If
    /// the call replaced a suffix that began before the current segment, the removal of the
    /// suffix may already have taken effect ([`LogStore::last_index`] tells); the files are
    /// consistent either way.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_poisoned()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let (offset, last) = (self.index.offset(), self.index.last_index());
        if first.index <= offset {
            return Err(WalError::Invalid(format!(
                "append at entry {} but the log is compacted up to entry {offset}",
                first.index
            )));
        }
        if first.index > last + 1 {
            return Err(WalError::Invalid(format!(
                "append at entry {} leaves a gap after the last entry {last}",
                first.index
            )));
        }
        let prev = first.index - 1;
        let prev_term = self.index.term(prev).expect("offset <= prev <= last");
        if first.term < prev_term {
            return Err(WalError::Invalid(format!(
                "entry {} has term {}, below the term {prev_term} of the entry before it",
                first.index, first.term
            )));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 || pair[1].term < pair[0].term {
                return Err(WalError::Invalid(format!(
                    "entries must have consecutive indexes and non-decreasing terms: entry {} \
                     (term {}) follows entry {} (term {})",
                    pair[1].index, pair[1].term, pair[0].index, pair[0].term
                )));
            }
        }
        let truncating = first.index <= last;
        // Entries a snapshot covers are committed too, even if the hard state lags.
        let committed = self.hard_state.commit.max(self.snapshots.newest().map_or(0, |m| m.index));
        if truncating && first.index <= committed {
            return Err(WalError::Invalid(format!(
                "replacing entries from {} would remove committed entries (committed up to {committed})",
                first.index
            )));
        }
        let mut size = 0;
        for e in entries {
            let payload = (ENTRY_FIXED_LEN + e.data.len()) as u64;
            if payload > u64::from(self.opts.max_record_bytes) {
                return Err(WalError::EntryTooLarge {
                    index: e.index,
                    size: payload + HEADER_LEN as u64,
                    max: self.opts.max_record_bytes,
                });
            }
            size += payload + HEADER_LEN as u64;
        }

        let deep_truncation = truncating && prev < self.active().base_index;
        let rolled = deep_truncation || self.would_overflow(size + if truncating { TRUNCATE_RECORD_LEN } else { 0 });
        if rolled {
            // The new segment's header states the base, which also replaces any suffix.
            self.roll(if truncating { prev } else { last })?;
        }
        let mut buf = Vec::with_capacity(size as usize + TRUNCATE_RECORD_LEN as usize);
        if truncating && !rolled {
            encode_truncate(&mut buf, first.index);
        }
        let mut placed = Vec::with_capacity(entries.len());
        for e in entries {
            let at = buf.len() as u64;
            placed.push((at, encode_entry(&mut buf, e)));
        }
        let (seq, start) = {
            let active = self.active();
            (active.seq, active.len)
        };
        self.write(&buf)?;

        if truncating && !rolled {
            self.truncate_state(first.index);
        }
        for (e, (at, len)) in entries.iter().zip(placed) {
            self.index.push(e.index, Loc { term: e.term, seq, offset: start + at, len });
            self.cache.push(e.clone());
        }
        Ok(())
    }

    /// Records a new hard state (not yet durable: see [`Wal::sync`]). The term must not go
    /// down, a vote cast in a term must not change, and the commit index must be held in the
    /// log (write the entries first).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.check_poisoned()?;
        let cur = self.hard_state;
        if hs == cur {
            return Ok(());
        }
        if hs.term < cur.term {
            return Err(WalError::Invalid(format!("term {} is below the current term {}", hs.term, cur.term)));
        }
        if hs.term == cur.term && cur.vote != 0 && hs.vote != cur.vote {
            return Err(WalError::Invalid(format!(
                "vote for {} in term {} after voting for {}",
                hs.vote, hs.term, cur.vote
            )));
        }
        if hs.commit > self.index.last_index() {
            return Err(WalError::Invalid(format!(
                "commit {} is past the last entry {}; append the entries first",
                hs.commit,
                self.index.last_index()
            )));
        }
        let mut buf = Vec::with_capacity(HEADER_LEN + 24);
        encode_hard_state(&mut buf, &hs);
        if self.would_overflow(buf.len() as u64) {
            self.roll(self.index.last_index())?;
        }
        self.write(&buf)?;
        self.hard_state = hs;
        Ok(())
    }

    /// Writes the buffered records and makes everything so far durable with one
    /// `fdatasync`; returns the highest durable index. A failed fsync poisons the log (the
    /// process must restart). A full disk returns [`WalError::NoSpace`] with the files as
    /// they were and the records still buffered: `sync` can be retried.
    pub fn sync(&mut self) -> Result<Index> {
        self.check_poisoned()?;
        self.flush()?;
        if self.dirty {
            let active = self.segments.back().expect("never empty");
            let res = sync_file(&active.file, &active.path, false, &self.faults);
            self.guard(res)?;
            self.dirty = false;
        }
        self.durable_index = self.index.last_index();
        Ok(self.durable_index)
    }

    /// Drops the entries up to `index` (which a snapshot must cover) and removes the segments
    /// that hold nothing after it. Syncs first: the compaction is durable before any file
    /// goes. Compacting at or below the current start does nothing.
    pub fn compact(&mut self, index: Index) -> Result<()> {
        self.check_poisoned()?;
        if index <= self.index.offset() {
            return Ok(());
        }
        if index > self.index.last_index() {
            return Err(WalError::Invalid(format!(
                "compaction to entry {index} past the last entry {}",
                self.index.last_index()
            )));
        }
        let covered = self.snapshots.newest().map_or(0, |m| m.index);
        if index > covered {
            return Err(WalError::Invalid(format!(
                "compaction to entry {index} past the newest snapshot (entry {covered}) would \
                 lose entries that no snapshot holds"
            )));
        }
        let term = self.index.term(index).expect("held");
        let mut buf = Vec::with_capacity(HEADER_LEN + 16);
        encode_compact(&mut buf, index, term);
        if self.would_overflow(buf.len() as u64) {
            self.roll(self.index.last_index())?;
        }
        self.write(&buf)?;
        self.index.compact_to(index);
        self.cache.compact_to(index);
        self.sync()?;
        let keep_from = self.segments.iter().rposition(|s| s.base_index <= index).unwrap_or(0);
        self.remove_segments(keep_from)
    }

    /// Saves a snapshot durably. If it does not match the log (it ends past the last entry,
    /// or the entry at its index has another term), the log is replaced by an empty one
    /// starting after it, as Raft's InstallSnapshot requires; otherwise the log is kept and
    /// can be compacted with [`Wal::compact`]. Older snapshot files are removed afterwards.
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        if meta.index < self.index.offset() {
            return Err(WalError::Invalid(format!(
                "snapshot at entry {} is older than the log's start (compacted up to {})",
                meta.index,
                self.index.offset()
            )));
        }
        let replaces_log = self.index.term(meta.index) != Some(meta.term);
        if replaces_log && self.hard_state.commit > meta.index {
            return Err(WalError::Invalid(format!(
                "snapshot at entry {} term {} conflicts with the committed entries up to {}",
                meta.index, meta.term, self.hard_state.commit
            )));
        }
        self.sync()?;
        let res = self.snapshots.save(meta, data);
        self.guard(res)?;
        if replaces_log {
            self.reset_log(meta)?;
        }
        let res = self.snapshots.remove_older();
        self.guard(res)
    }

    /// Replaces the log with an empty one after `meta`, in a new segment, and removes the
    /// older segments.
    fn reset_log(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.sync()?;
        self.seal_active()?;
        let header = SegmentHeader {
            seq: self.active().seq + 1,
            base_index: meta.index,
            base_term: meta.term,
            compacted_index: meta.index,
            compacted_term: meta.term,
            hard_state: self.hard_state,
        };
        let res = Segment::create(&self.wal_dir, &header, self.opts.preallocate_to(), &self.faults);
        let segment = self.guard(res)?;
        self.segments.push_back(segment);
        self.index.reset_to(meta.index, meta.term);
        self.cache.clear();
        self.durable_index = meta.index;
        self.remove_segments(self.segments.len() - 1)
    }

    /// Removes the oldest `count` segments, oldest first, fsyncing the directory after each
    /// removal: a file system may otherwise persist the removals out of order, and a crash
    /// could then leave a gap in the segment numbers, which recovery must refuse. Removed in
    /// order, what a crash or a failure leaves is always a contiguous run.
    fn remove_segments(&mut self, count: usize) -> Result<()> {
        for _ in 0..count {
            let segment = self.segments.pop_front().expect("count < len");
            if let Err(e) = std::fs::remove_file(&segment.path) {
                let err = WalError::io(&segment.path, e);
                self.segments.push_front(segment);
                return Err(err);
            }
            let res = sync_dir(&self.wal_dir, &self.faults);
            self.guard(res)?;
        }
        Ok(())
    }

    /// Whether `bytes` more would take the last segment past its size limit (a segment
    /// holding only its header takes anything).
    fn would_overflow(&self, bytes: u64) -> bool {
        let len = self.active().len;
        len > EMPTY_SEGMENT_LEN && len + bytes > self.opts.segment_bytes
    }

    /// Starts a new segment whose base is `base` (the last index, or lower to replace a
    /// suffix). The current segment is fdatasynced first.
    fn roll(&mut self, base: Index) -> Result<()> {
        assert!(base >= self.index.offset() && base <= self.index.last_index(), "segment base out of the log");
        self.sync()?;
        self.seal_active()?;
        let header = SegmentHeader {
            seq: self.active().seq + 1,
            base_index: base,
            base_term: self.index.term(base).expect("held"),
            compacted_index: self.index.offset(),
            compacted_term: self.index.offset_term(),
            hard_state: self.hard_state,
        };
        let res = Segment::create(&self.wal_dir, &header, self.opts.preallocate_to(), &self.faults);
        let segment = self.guard(res)?;
        self.segments.push_back(segment);
        if base < self.index.last_index() {
            self.truncate_state(base + 1);
        }
        Ok(())
    }

    /// Cuts the last segment's preallocated space off, durably, before a newer segment is
    /// created: only the last segment may end in zeros.
    fn seal_active(&mut self) -> Result<()> {
        let res = self.active().seal(&self.faults);
        self.guard(res)
    }

    /// Drops entries from `from` on in memory (the disk already says so).
    fn truncate_state(&mut self, from: Index) {
        self.index.truncate_from(from);
        self.cache.truncate_from(from);
        self.durable_index = self.durable_index.min(from - 1);
    }

    /// Appends `buf` to the last segment: buffered, and written to the file once the buffer
    /// holds [`WRITE_BUFFER_BYTES`] (or at the next sync). On failure nothing of `buf` stays.
    fn write(&mut self, buf: &[u8]) -> Result<()> {
        let before = self.pending.len();
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            // The buffer starts where the file's written part ends.
            let start = self.active().len - before as u64;
            if let Err(e) = self.flush_pending(start) {
                self.pending.truncate(before);
                return Err(e);
            }
        }
        self.active_mut().len += buf.len() as u64;
        Ok(())
    }

    /// Writes the buffered records to the file (no fsync).
    fn flush(&mut self) -> Result<()> {
        let start = self.active().len - self.pending.len() as u64;
        self.flush_pending(start)
    }

    /// Writes `pending` at `start`; a partial write is cut back off the file, and the
    /// buffer is kept for a retry.
    fn flush_pending(&mut self, start: u64) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let active = self.segments.back().expect("never empty");
        let res = write_at(&active.file, &active.path, &self.pending, start, &self.faults);
        self.guard(res)?;
        self.pending.clear();
        self.dirty = true;
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("never empty")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("never empty")
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(WalError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Passes `res` through, remembering a [`WalError::Poisoned`].
    fn guard<T>(&mut self, res: Result<T>) -> Result<T> {
        if let Err(WalError::Poisoned { cause }) = &res {
            self.poisoned.get_or_insert_with(|| cause.clone());
        }
        res
    }

    fn segment(&self, seq: u64) -> &Segment {
        let front = self.segments.front().expect("never empty").seq;
        let segment = &self.segments[(seq - front) as usize];
        assert_eq!(segment.seq, seq, "segment numbers are contiguous");
        segment
    }

    /// Reads entries `[low, high)` (all held) from the cache or the segments.
    fn read(&self, low: Index, high: Index) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut i = low;
        while i < high {
            if let Some(e) = self.cache.get(i) {
                out.push(e.clone());
                i += 1;
                continue;
            }
            // One positioned read (or one copy from the write buffer) for the run of entries
            // in the same segment and on the same side of the buffer's start.
            let active = self.active();
            let buffered_from = active.len - self.pending.len() as u64;
            let buffered = |loc: &Loc| loc.seq == active.seq && loc.offset >= buffered_from;
            let first = *self.index.loc(i).expect("held");
            let mut j = i + 1;
            while j < high && self.cache.get(j).is_none() {
                let loc = self.index.loc(j).expect("held");
                if loc.seq != first.seq || buffered(loc) != buffered(&first) {
                    break;
                }
                j += 1;
            }
            let last = *self.index.loc(j - 1).expect("held");
            let segment = self.segment(first.seq);
            let end = last.offset + HEADER_LEN as u64 + u64::from(last.len);
            let buf = if buffered(&first) {
                let from = (first.offset - buffered_from) as usize;
                Bytes::copy_from_slice(&self.pending[from..(end - buffered_from) as usize])
            } else {
                let mut buf = vec![0u8; (end - first.offset) as usize];
                segment.file.read_exact_at(&mut buf, first.offset).map_err(|e| WalError::io(&segment.path, e))?;
                Bytes::from(buf)
            };
            for k in i..j {
                let loc = self.index.loc(k).expect("held");
                let at = (loc.offset - first.offset) as usize;
                out.push(self.decode_at(segment, &buf, at, loc.offset, k, loc.term)?);
            }
            i = j;
        }
        Ok(out)
    }

    fn decode_at(
        &self,
        segment: &Segment,
        buf: &Bytes,
        at: usize,
        offset: u64,
        want: Index,
        want_term: Term,
    ) -> Result<Entry> {
        let bad = |detail: String| WalError::corrupt(&segment.path, offset, CorruptionKind::BadChecksum, detail);
        let (ty, payload, _) = decode_frame(&buf[at..], self.opts.max_record_bytes).map_err(|e| bad(e.describe()))?;
        match decode_payload(ty, payload) {
            Ok(Record::Entry { index, term, kind, data }) if index == want && term == want_term => {
                Ok(entry_from_parts(index, term, kind, buf, data))
            }
            other => Err(bad(format!("expected entry {want} (term {want_term}), read {other:?}"))),
        }
    }
}

impl LogStore for Wal {
    fn initial_hard_state(&self) -> HardState {
        self.initial_hard_state
    }

    fn first_index(&self) -> Index {
        self.index.first_index()
    }

    fn last_index(&self) -> Index {
        self.index.last_index()
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.check_poisoned()?;
        if index < self.index.offset() {
            return Err(StorageError::Compacted(index));
        }
        self.index.term(index).ok_or(StorageError::Unavailable(index))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.check_poisoned()?;
        if low <= self.index.offset() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.index.last_index() + 1 {
            return Err(StorageError::Unavailable(high - 1));
        }
        // Decide how many entries fit the budget from the index alone, then read them.
        let mut end = low;
        let mut bytes = 0u64;
        while end < high {
            let loc = self.index.loc(end).expect("held");
            bytes += 24 + u64::from(loc.len) - ENTRY_FIXED_LEN as u64;
            if end > low && bytes > max_bytes {
                break;
            }
            end += 1;
        }
        Ok(self.read(low, end)?)
    }
}

impl Drop for Wal {
    /// Writes buffered records to the file (no fsync), as a clean shutdown would; what is
    /// durable is only ever what `sync` reported.
    fn drop(&mut self) {
        if self.poisoned.is_none() {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_segment_len_matches_the_encoder() {
        let mut buf = Vec::new();
        crate::record::encode_segment_header(
            &mut buf,
            &SegmentHeader {
                seq: 0,
                base_index: 0,
                base_term: 0,
                compacted_index: 0,
                compacted_term: 0,
                hard_state: HardState::default(),
            },
        );
        assert_eq!(buf.len() as u64, EMPTY_SEGMENT_LEN);
        let mut buf = Vec::new();
        encode_truncate(&mut buf, 1);
        assert_eq!(buf.len() as u64, TRUNCATE_RECORD_LEN);
    }

    #[test]
    fn wal_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Wal>();
    }

    #[test]
    fn poisoned_error_is_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let res: Result<()> = Err(crate::fsutil::poisoned(Path::new("x"), "fsync", std::io::Error::other("boom")));
        assert!(wal.guard(res).is_err());
        assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
    }
}
