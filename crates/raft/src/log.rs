//! The node's view of the replicated log: the stable part read through [`LogStore`] and the
//! tail the core holds itself until the application reports it persisted.
//!
//! Keeping the unpersisted tail here (as etcd's `unstable` does) is what lets a leader send
//! entries to followers while its own disk write is still in flight, and lets a follower
//! truncate a conflicting suffix without waiting for the disk.

use std::collections::VecDeque;

use crate::storage::{LogStore, StorageError};
use crate::types::{Entry, Index, Term};

/// Entries the application has not yet reported persisted.
#[derive(Debug, Default)]
struct Unstable {
    /// Index of `entries[0]`; one past the persisted log.
    offset: Index,
    entries: Vec<Entry>,
    /// Entries below this index have already been handed out in a `Ready` for writing.
    handed_out_below: Index,
}

impl Unstable {
    fn last_index(&self) -> Option<Index> {
        self.entries.last().map(|e| e.index)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index < self.offset {
            return None;
        }
        self.entries.get((index - self.offset) as usize).map(|e| e.term)
    }

    /// Appends entries, dropping any existing unstable entries at or after the first one.
    fn truncate_and_append(&mut self, new_entries: &[Entry]) {
        let first = new_entries[0].index;
        if first == self.offset + self.entries.len() as Index {
            self.entries.extend_from_slice(new_entries);
        } else if first <= self.offset {
            // Replaces part of the persisted log: the application truncates it when it
            // writes these entries.
            self.offset = first;
            self.entries = new_entries.to_vec();
        } else {
            self.entries.truncate((first - self.offset) as usize);
            self.entries.extend_from_slice(new_entries);
        }
        self.handed_out_below = self.handed_out_below.min(first).max(self.offset);
    }
}

pub struct RaftLog<S: LogStore> {
    pub(crate) store: S,
    unstable: Unstable,
    /// Writes handed out and not yet reported durable, oldest first:
    /// `(first index, last index, last term)`. A write replaces the log from its first
    /// index, so an older write's entries at or after a pending write's first index may
    /// not survive on disk even once the older write is durable.
    writes_in_flight: VecDeque<(Index, Index, Term)>,
    /// Highest index known to be committed.
    committed: Index,
    /// Highest index handed to the application to apply.
    applying: Index,
    /// A snapshot this node adopted that the application has not installed in its store
    /// yet: `(index, term)`. Until it has, the store's older entries must not be read.
    pending_snapshot: Option<(Index, Term)>,
}

/// What a follower's AppendEntries did to its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The index of the last entry the message carried (or its `prev_log_index`).
    pub last_new_index: Index,
    /// Entries from this index on were written (replacing any conflicting suffix); `None`
    /// when every entry was already present.
    pub written_from: Option<Index>,
}

impl<S: LogStore> RaftLog<S> {
    /// Opens the log over `store`. `applied` is what the application's state machine
    /// already reflects: those entries were committed (only committed entries are
    /// applied), so commit starts at least there even if the persisted commit lags.
    pub fn new(store: S, applied: Index) -> Result<Self, StorageError> {
        let hard_state = store.initial_hard_state();
        let last = store.last_index();
        if hard_state.commit > last || applied > last {
            return Err(StorageError::Fatal(format!(
                "the log ends at {last} but commit is {} and the state machine applied {applied}: \
                 the log lost entries that were acknowledged",
                hard_state.commit
            )));
        }
        let first = store.first_index();
        let snapshot_index = store.snapshot_meta().index;
        if applied < first - 1 || applied < snapshot_index {
            return Err(StorageError::Fatal(format!(
                "the state machine applied entry {applied} but the log was compacted through {} (snapshot at \
                 {snapshot_index}): restore the state machine from the snapshot before starting",
                first - 1
            )));
        }
        let committed = hard_state.commit.max(first - 1).max(applied);
        Ok(RaftLog {
            store,
            unstable: Unstable { offset: last + 1, entries: Vec::new(), handed_out_below: last + 1 },
            writes_in_flight: VecDeque::new(),
            committed,
            applying: applied,
            pending_snapshot: None,
        })
    }

    pub fn first_index(&self) -> Index {
        match self.pending_snapshot {
            Some((index, _)) => index + 1,
            None => self.store.first_index(),
        }
    }

    pub fn last_index(&self) -> Index {
        self.unstable.last_index().unwrap_or(self.unstable.offset - 1)
    }

    /// The highest index the application has reported durable.
    pub fn persisted_index(&self) -> Index {
        self.unstable.offset - 1
    }

    pub fn committed(&self) -> Index {
        self.committed
    }

    pub fn applying(&self) -> Index {
        self.applying
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).expect("the last entry's term is always known")
    }

    /// The term at `index`, for indexes from the last compacted one to the last one.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        match self.pending_snapshot {
            Some((snapshot_index, term)) if index == snapshot_index => Ok(term),
            Some((snapshot_index, _)) if index < snapshot_index => Err(StorageError::Compacted(index)),
            _ => self.store.term(index),
        }
    }

    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Raft's "at least as up-to-date" test (§5.4.1): a later last term wins; with equal
    /// last terms, the longer log wins.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries `[low, high)` within a byte budget (at least one if the range is non-empty).
    pub fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(low <= high && high <= self.last_index() + 1, "bad range {low}..{high}");
        let mut out = Vec::new();
        if low == high {
            return Ok(out);
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        let stable_high = high.min(self.unstable.offset);
        let mut bytes = 0;
        if low < stable_high {
            out = self.store.entries(low, stable_high, max_bytes)?;
            bytes = out.iter().map(Entry::size_bytes).sum();
            if (out.len() as Index) < stable_high - low {
                return Ok(out);
            }
        }
        let unstable_low = low.max(self.unstable.offset);
        for index in unstable_low..high {
            let entry = &self.unstable.entries[(index - self.unstable.offset) as usize];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// The leader appends new entries at the end of its log.
    pub fn append(&mut self, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        assert_eq!(entries[0].index, self.last_index() + 1, "append must extend the log");
        self.unstable.truncate_and_append(entries);
    }

    /// A follower's AppendEntries: if our log holds `(prev_index, prev_term)`, write the
    /// entries, replacing only a conflicting suffix, and return the index of the last new
    /// entry. Entries already present with the same term are kept: a delayed, shorter
    /// AppendEntries must never cut off entries a later one added.
    pub fn maybe_append(&mut self, prev_index: Index, prev_term: Term, entries: &[Entry]) -> Option<AppendOutcome> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new_index = prev_index + entries.len() as Index;
        let conflict = entries.iter().position(|e| !self.match_term(e.index, e.term));
        let mut written_from = None;
        if let Some(position) = conflict {
            let first_conflict = entries[position].index;
            assert!(
                first_conflict > self.committed,
                "entry {first_conflict} conflicts with the committed prefix (commit {})",
                self.committed
            );
            self.unstable.truncate_and_append(&entries[position..]);
            written_from = Some(first_conflict);
        }
        Some(AppendOutcome { last_new_index, written_from })
    }

    /// A follower adopts the leader's snapshot: its log becomes empty after `(index,
    /// term)`, everything through `index` counts as committed and applied (the application
    /// installs the snapshot's state), and writes still in flight no longer matter.
    pub fn restore(&mut self, index: Index, term: Term) {
        assert!(index > self.committed, "a snapshot at {index} is not news at commit {}", self.committed);
        self.pending_snapshot = Some((index, term));
        self.unstable = Unstable { offset: index + 1, entries: Vec::new(), handed_out_below: index + 1 };
        self.writes_in_flight.clear();
        self.committed = index;
        self.applying = index;
    }

    /// Forgets a pending snapshot once the store shows it installed.
    pub fn settle_snapshot(&mut self) {
        if let Some((index, term)) = self.pending_snapshot {
            if self.store.first_index() > index && self.store.term(index) == Ok(term) {
                self.pending_snapshot = None;
            }
        }
    }

    /// The conflict hint (§5.3 optimisation): the largest index at or below `index` whose
    /// term is at most `term`, with that term. Lets the other side skip a whole
    /// divergent term per round trip.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        let floor = self.first_index() - 1;
        loop {
            match self.term(index) {
                Ok(t) if t > term && index > floor => index -= 1,
                Ok(t) => return (index, t),
                Err(_) => return (index, 0),
            }
        }
    }

    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} is past the last index {}", self.last_index());
            self.committed = index;
        }
    }

    /// Entries not yet handed to the application for writing; marks them handed out.
    pub fn take_entries_to_persist(&mut self) -> Vec<Entry> {
        let start = (self.unstable.handed_out_below - self.unstable.offset) as usize;
        let out = self.unstable.entries[start..].to_vec();
        self.unstable.handed_out_below = self.unstable.offset + self.unstable.entries.len() as Index;
        if let (Some(first), Some(last)) = (out.first(), out.last()) {
            self.writes_in_flight.push_back((first.index, last.index, last.term));
        }
        out
    }

    pub fn has_entries_to_persist(&self) -> bool {
        self.unstable.handed_out_below < self.unstable.offset + self.unstable.entries.len() as Index
    }

    /// The application reports the write ending at `(index, term)` durable (and, since
    /// writes complete in order, every earlier one). Entries become persisted only as far
    /// as no later write, pending or not yet handed out, replaces them.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        let Some(position) =
            self.writes_in_flight.iter().position(|&(_, last, last_term)| (last, last_term) == (index, term))
        else {
            return; // not a write we handed out, or already reported
        };
        self.writes_in_flight.drain(..=position);
        let replaced_from = self
            .writes_in_flight
            .iter()
            .map(|&(first, _, _)| first)
            .chain(std::iter::once(self.unstable.handed_out_below))
            .min()
            .expect("the chain is never empty");
        let durable = index.min(replaced_from.saturating_sub(1));
        if durable < self.unstable.offset {
            return;
        }
        let count = (durable + 1 - self.unstable.offset) as usize;
        assert!(count <= self.unstable.entries.len(), "persisted past the end of the log");
        self.unstable.entries.drain(..count);
        self.unstable.offset = durable + 1;
    }

    /// Committed, persisted entries not yet handed to the application, within a budget.
    pub fn take_entries_to_apply(&mut self, max_bytes: u64) -> Vec<Entry> {
        let high = self.committed.min(self.persisted_index());
        if self.applying >= high {
            return Vec::new();
        }
        let entries = self.entries(self.applying + 1, high + 1, max_bytes).expect("committed entries are readable");
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
        entries
    }

    pub fn has_entries_to_apply(&self) -> bool {
        self.applying < self.committed.min(self.persisted_index())
    }
}
