//! The simulated disk of one node: what survives a crash.
//!
//! The `MemoryLog` inside the node's Raft is its page cache: written at once, lost on a
//! crash. This model keeps the durable copy beside it and a FIFO of write jobs, one per
//! Ready (even a Ready that writes nothing, because its held messages must still wait for
//! the writes before it). Jobs complete in order after a random delay; only then are their
//! entries and hard state durable, their held messages released and `on_persisted`
//! called. A crash drops every job not yet complete.

use std::collections::VecDeque;

use concord_raft::{Entry, HardState, Index, MemoryLog, Message, Term};

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

/// The writes of one Ready, waiting to become durable.
#[derive(Debug)]
pub struct WriteJob {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// `messages_after_persist` of the Ready: sent only once this job is durable.
    pub held_messages: Vec<Message>,
    complete_at: u64,
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

    /// Queues the writes of one Ready at step `now`. Jobs complete in submission order.
    pub fn submit(
        &mut self,
        now: u64,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        held_messages: Vec<Message>,
        profile: &DiskProfile,
        rng: &mut SimRng,
    ) {
        assert!(!self.is_full(), "the node must not take a Ready while its disk is full");
        let earliest = self.pending.back().map_or(0, |job| job.complete_at);
        let complete_at = (now + profile.delay(rng)).max(earliest);
        self.pending.push_back(WriteJob { hard_state, entries, held_messages, complete_at });
    }

    /// Makes the oldest job durable if it is due at `now`, and returns it (its messages
    /// are now free to go, and its last entry is to be reported persisted).
    pub fn complete_next(&mut self, now: u64) -> Option<WriteJob> {
        if self.pending.front()?.complete_at > now {
            return None;
        }
        let job = self.pending.pop_front()?;
        if let Some(hard_state) = job.hard_state {
            self.durable.hard_state = hard_state;
        }
        self.durable.append(&job.entries);
        Some(job)
    }

    /// Loses every write not yet durable. Returns how many entries were lost.
    pub fn crash(&mut self) -> u64 {
        let lost = self.pending.iter().map(|job| job.entries.len() as u64).sum();
        self.pending.clear();
        lost
    }

    /// The log a restarted node starts from.
    pub fn recover(&self) -> MemoryLog {
        self.durable.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_raft::{EntryKind, LogStore};

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
        disk.submit(0, Some(hard_state), vec![entry(1, 2)], vec![], &slow, &mut rng);
        disk.submit(1, None, vec![entry(2, 2)], vec![], &fast, &mut rng);
        // The fast second write may not overtake the slow first one.
        assert!(disk.complete_next(5).is_none());
        let first = disk.complete_next(10).expect("due");
        assert_eq!(first.last_entry(), Some((1, 2)));
        assert_eq!(disk.durable().hard_state, hard_state);
        disk.submit(11, None, vec![entry(3, 2)], vec![], &slow, &mut rng);
        assert!(disk.complete_next(10).is_some());
        assert_eq!(disk.crash(), 1);
        assert_eq!(disk.recover().last_index(), 2);
    }
}
