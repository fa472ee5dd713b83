//! One simulated member: a Raft core, its disk model, and its in-memory state machine,
//! plus the little bookkeeping the simulator needs to notice what changed.
//!
//! The node follows the Ready contract of concord-raft to the letter: it writes each
//! Ready's hard state and entries to its page cache at once, hands the same writes to its
//! disk as one job, sends `messages` immediately, holds `messages_after_persist` inside
//! the job, and reports `on_persisted` only when the job (and every job before it) is
//! durable. A crash loses the page cache, the queued jobs and the state machine.

use bytes::Bytes;
use concord_raft::{Config, Entry, Index, MemoryLog, Message, NodeId, Raft, ReadState, Role, Term, NO_NODE};

use crate::disk::{Disk, DiskProfile};
use crate::rng::SimRng;
use crate::state_machine::KvStore;

/// What the rest of the simulation must do with one Ready: send, apply, answer reads.
#[derive(Debug, Default)]
pub struct ReadyWork {
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// The facts the simulator watches for changes after every input to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub role: Role,
    pub term: Term,
    pub leader: NodeId,
    pub commit: Index,
}

impl Observed {
    const DOWN: Observed = Observed { role: Role::Follower, term: 0, leader: NO_NODE, commit: 0 };
}

pub struct SimNode {
    pub id: NodeId,
    raft: Option<Raft<MemoryLog>>,
    pub disk: Disk,
    pub kv: KvStore,
    /// Highest index applied to `kv` in this incarnation.
    pub applied: Index,
    /// What the simulator last saw of this node (see [`Observed`]).
    pub observed: Observed,
    /// Highest commit index whose entries the safety checker has compared.
    pub commit_checked: Index,
    /// Bumped whenever the log this node would show (page cache when up, durable log when
    /// down) may have changed, so unchanged pairs skip the Log Matching scan.
    pub log_version: u64,
    /// This node ticks on steps congruent to `tick_phase` (mod steps per tick), so the
    /// nodes' clocks are not in lockstep.
    pub tick_phase: u64,
}

impl SimNode {
    /// Most Readies handled per node per step; the rest wait for the next step.
    pub const MAX_READIES_PER_STEP: usize = 8;

    pub fn new(id: NodeId) -> Self {
        SimNode {
            id,
            raft: None,
            disk: Disk::default(),
            kv: KvStore::default(),
            applied: 0,
            observed: Observed::DOWN,
            commit_checked: 0,
            log_version: 0,
            tick_phase: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    pub fn raft(&self) -> Option<&Raft<MemoryLog>> {
        self.raft.as_ref()
    }

    pub fn raft_mut(&mut self) -> Option<&mut Raft<MemoryLog>> {
        self.raft.as_mut()
    }

    /// Starts (or restarts) the node from its durable state. The state machine starts
    /// empty and is rebuilt as committed entries come out of Ready again.
    pub fn start(&mut self, config: Config, tick_phase: u64) {
        assert!(self.raft.is_none(), "node {} is already up", self.id);
        let raft =
            Raft::new(config, self.disk.recover(), 0).unwrap_or_else(|e| panic!("node {} cannot start: {e}", self.id));
        self.raft = Some(raft);
        self.kv = KvStore::default();
        self.applied = 0;
        self.observed = Observed::DOWN;
        self.commit_checked = 0;
        self.log_version += 1;
        self.tick_phase = tick_phase;
    }

    /// Loses everything that is not durable. Returns how many entries were lost.
    pub fn crash(&mut self) -> u64 {
        self.raft = None;
        self.kv = KvStore::default();
        self.applied = 0;
        self.observed = Observed::DOWN;
        self.log_version += 1;
        self.disk.crash()
    }

    /// The current facts to compare with [`SimNode::observed`].
    pub fn observe(&self) -> Observed {
        match &self.raft {
            Some(raft) => {
                Observed { role: raft.role(), term: raft.term(), leader: raft.leader(), commit: raft.commit_index() }
            }
            None => Observed::DOWN,
        }
    }

    /// The log this node shows: its page cache when up (after its Readies were handled,
    /// the whole log), its durable log when down.
    pub fn visible_log(&self) -> &[Entry] {
        match &self.raft {
            Some(raft) => raft.store().all_entries(),
            None => self.disk.durable().all_entries(),
        }
    }

    /// Takes one Ready, if there is one and the disk queue has room: writes the page
    /// cache, queues the disk job, and returns what remains to be done.
    pub fn take_ready(&mut self, now: u64, profile: &DiskProfile, rng: &mut SimRng) -> Option<ReadyWork> {
        let raft = self.raft.as_mut()?;
        if !raft.has_ready() || self.disk.is_full() {
            return None;
        }
        let ready = raft.ready();
        if let Some(hard_state) = ready.hard_state {
            raft.store_mut().hard_state = hard_state;
        }
        if !ready.entries.is_empty() {
            raft.store_mut().append(&ready.entries);
            self.log_version += 1;
        }
        self.disk.submit(now, ready.hard_state, ready.entries, ready.messages_after_persist, profile, rng);
        Some(ReadyWork {
            messages: ready.messages,
            committed_entries: ready.committed_entries,
            read_states: ready.read_states,
        })
    }

    /// Completes the disk jobs due at `now`, in order, reporting each to the core.
    /// Returns the released messages and `(index, term)` of each persisted entry batch.
    pub fn complete_writes(&mut self, now: u64) -> (Vec<Message>, Vec<(Index, Term)>) {
        let mut released = Vec::new();
        let mut persisted = Vec::new();
        let Some(raft) = self.raft.as_mut() else {
            return (released, persisted);
        };
        let mut completed = 0;
        while completed < Disk::MAX_PENDING_JOBS {
            let Some(job) = self.disk.complete_next(now) else {
                break;
            };
            completed += 1;
            if let Some((index, term)) = job.last_entry() {
                raft.on_persisted(index, term);
                persisted.push((index, term));
            }
            released.extend(job.held_messages);
        }
        (released, persisted)
    }

    /// Proposes `data` if this node is up.
    pub fn propose(&mut self, data: Bytes) -> Option<Result<Index, concord_raft::ProposeError>> {
        self.raft.as_mut().map(|raft| raft.propose(data))
    }
}
