//! The simulated disk of one node: what survives a crash.
//!
//! The `MemoryLog` inside the node's Raft is its page cache: written at once, lost on a
//! crash. This model keeps the durable copy beside it and a FIFO of write jobs, one per
//! Ready (even a Ready that writes nothing, because its held messages must still wait for
//! the writes before it) and one per snapshot the node takes itself. Jobs complete in
//! order after a random delay; only then are their snapshot, hard state and entries
//! durable (in that order, as the Ready contract asks), their held messages released and
//! `on_persisted` called. A crash drops every job not yet complete. Because every change
//! to the page cache is also queued here, in the same order, the durable log is always
//! the page cache as it was some jobs ago.

use std::collections::VecDeque;

use bytes::Bytes;
use concord_raft::{Entry, HardState, Index, LogStore, MemoryLog, Message, SnapshotMeta, Term};

use crate::rng::SimRng;

/// How slow the disk is, in simulation steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskProfile {
    pub min_delay: u64,
    pub max_delay: u64,
    /// Chance per write of a stall (up to `stall_max_delay`): a leader whose own write is
    /// slow counts replicas without counting itself.
    pub stall_per_million: u32,
    pub stall_max_delay: u64,
}

impl DiskProfile {
    pub const FAST: DiskProfile = DiskProfile { min_delay: 0, max_delay: 2, stall_per_million: 0, stall_max_delay: 2 };

    fn delay(&self, rng: &mut SimRng) -> u64 {
        if rng.chance(self.stall_per_million) {
            rng.between(self.max_delay, self.stall_max_delay.max(self.max_delay))
        } else {
            rng.between(self.min_delay, self.max_delay.max(self.min_delay))
        }
    }
}

/// A snapshot to make durable: saved beside the log, which is then compacted through
/// `compact_to` (for a snapshot installed from the leader, its own index: the log either
/// restarts after it or is cut there).
#[derive(Clone, Debug)]
pub struct SnapshotWrite {
    pub meta: SnapshotMeta,
    pub data: Bytes,
    pub compact_to: Index,
}

impl SnapshotWrite {
    /// Applies this write to `log` (the page cache at once, the durable log later).
    pub fn apply_to(&self, log: &mut MemoryLog) {
        log.save_snapshot(self.meta.clone(), self.data.clone());
        if self.compact_to >= log.first_index() {
            log.compact(self.compact_to);
        }
    }
}

/// The writes of one Ready (or one snapshot), waiting to become durable.
#[derive(Debug, Default)]
pub struct WriteJob {
    pub snapshot: Option<SnapshotWrite>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// `messages_after_persist` of the Ready: sent only once this job is durable.
    pub held_messages: Vec<Message>,
    pub(crate) complete_at: u64,
}

impl WriteJob {
    /// `(index, term)` of the last entry written, to report with `on_persisted`.
    pub fn last_entry(&self) -> Option<(Index, Term)> {
        self.entries.last().map(|e| (e.index, e.term))
    }
}

#[derive(Debug, Default)]
pub struct Disk {
    /// What a restart finds: the log and, in its `hard_state`, term, vote and commit.
    durable: MemoryLog,
    pending: VecDeque<WriteJob>,
}

impl Disk {
    /// Most write jobs queued at once; the node stops taking Readies while it is full.
    pub const MAX_PENDING_JOBS: usize = 1_024;

    pub fn durable(&self) -> &MemoryLog {
        &self.durable
    }

    pub fn is_full(&self) -> bool {
        self.pending.len() >= Self::MAX_PENDING_JOBS
    }

    /// Queues `job` at step `now`. Jobs complete in submission order.
    pub fn submit(&mut self, now: u64, mut job: WriteJob, profile: &DiskProfile, rng: &mut SimRng) {
        assert!(!self.is_full(), "the node must not queue a write while its disk is full");
        let earliest = self.pending.back().map_or(0, |job| job.complete_at);
        job.complete_at = (now + profile.delay(rng)).max(earliest);
        self.pending.push_back(job);
    }

    /// Whether a snapshot write is still in the queue.
    pub fn snapshot_pending(&self) -> bool {
        self.pending.iter().any(|job| job.snapshot.is_some())
    }

    /// Makes the oldest job durable if it is due at `now`, and returns it (its messages
    /// are now free to go, and its last entry is to be reported persisted).
    pub fn complete_next(&mut self, now: u64) -> Option<WriteJob> {
        if self.pending.front()?.complete_at > now {
            return None;
        }
        let job = self.pending.pop_front()?;
        if let Some(snapshot) = &job.snapshot {
            snapshot.apply_to(&mut self.durable);
        }
        if let Some(hard_state) = job.hard_state {
            self.durable.hard_state = hard_state;
        }
        self.durable.append(&job.entries);
        Some(job)
    }

    /// Loses every write not yet durable. Returns how many entries and snapshots were
    /// lost.
    pub fn crash(&mut self) -> (u64, u64) {
        let entries = self.pending.iter().map(|job| job.entries.len() as u64).sum();
        let snapshots = self.pending.iter().filter(|job| job.snapshot.is_some()).count() as u64;
        self.pending.clear();
        (entries, snapshots)
    }

    /// The log a restarted node starts from.
    pub fn recover(&self) -> MemoryLog {
        self.durable.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_raft::EntryKind;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Default::default() }
    }

    #[test]
    fn jobs_complete_in_order_and_a_crash_loses_the_rest() {
        let mut disk = Disk::default();
        let mut rng = SimRng::new(3);
        let slow = DiskProfile { min_delay: 10, max_delay: 10, ..DiskProfile::FAST };
        let fast = DiskProfile { min_delay: 0, max_delay: 0, ..DiskProfile::FAST };
        let hard_state = HardState { term: 2, vote: 1, commit: 0 };
        let job = |hard_state, entries| WriteJob { hard_state, entries, ..WriteJob::default() };
        disk.submit(0, job(Some(hard_state), vec![entry(1, 2)]), &slow, &mut rng);
        disk.submit(1, job(None, vec![entry(2, 2)]), &fast, &mut rng);
        // The fast second write may not overtake the slow first one.
        assert!(disk.complete_next(5).is_none());
        let first = disk.complete_next(10).expect("due");
        assert_eq!(first.last_entry(), Some((1, 2)));
        assert_eq!(disk.durable().hard_state, hard_state);
        disk.submit(11, job(None, vec![entry(3, 2)]), &slow, &mut rng);
        assert!(disk.complete_next(10).is_some());
        assert_eq!(disk.crash(), (1, 0));
        assert_eq!(disk.recover().last_index(), 2);
    }

    #[test]
    fn a_snapshot_becomes_durable_in_order_and_a_crash_before_loses_it() {
        let mut disk = Disk::default();
        let mut rng = SimRng::new(3);
        let fast = DiskProfile { min_delay: 0, max_delay: 0, ..DiskProfile::FAST };
        let entries = (1..=5).map(|i| entry(i, 1)).collect();
        disk.submit(0, WriteJob { entries, ..WriteJob::default() }, &fast, &mut rng);
        let meta = SnapshotMeta { index: 3, term: 1, membership: Default::default() };
        let snapshot = SnapshotWrite { meta: meta.clone(), data: Bytes::from_static(b"s"), compact_to: 2 };
        disk.submit(0, WriteJob { snapshot: Some(snapshot.clone()), ..WriteJob::default() }, &fast, &mut rng);
        assert!(disk.snapshot_pending());
        assert!(disk.complete_next(0).is_some());
        assert_eq!(disk.crash(), (0, 1));
        assert_eq!(disk.recover().snapshot_meta().index, 0);
        disk.submit(1, WriteJob { snapshot: Some(snapshot), ..WriteJob::default() }, &fast, &mut rng);
        assert!(disk.complete_next(1).is_some());
        let log = disk.recover();
        assert_eq!((log.snapshot_meta(), log.first_index(), log.last_index()), (meta, 3, 5));
    }
}
