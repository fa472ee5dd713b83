//! One simulated member: a Raft core, its disk model, and its in-memory state machine,
//! plus the little bookkeeping the simulator needs to notice what changed.
//!
//! The node follows the Ready contract of concord-raft to the letter: it stages the
//! Ready's snapshot chunks in memory, installs a completed snapshot (restoring its state
//! machine from it), writes the Ready's hard state and entries to its page cache at once,
//! hands the same writes to its disk as one job, sends `messages` immediately, holds
//! `messages_after_persist` inside the job, and reports `on_persisted` only when the job
//! (and every job before it) is durable. It also takes snapshots of its own state
//! machine and compacts its log when the simulation tells it to. A crash loses the page
//! cache, the queued jobs, the staged chunks and the state machine; a restart restores
//! the state machine from the durable snapshot, if any, and replays the log after it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use concord_raft::{
    Config, Entry, Index, LogStore, MemoryLog, Message, NodeId, Raft, ReadState, Role, SnapshotMeta, Term, NO_NODE,
};

use crate::disk::{Disk, DiskProfile, SnapshotWrite, WriteJob};
use crate::rng::SimRng;
use crate::state_machine::{StateMachine, StateMachineKind};
use concord_check::Outcome;
use concord_member::{ApplyGate, ReadIds, RequestIds, Waiters};

/// What the rest of the simulation must do with one Ready: send, apply, answer reads,
/// and check what a snapshot install did.
#[derive(Debug, Default)]
pub struct ReadyWork {
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Snapshot chunks staged from this Ready, and whether the last staged one was not
    /// the last of its snapshot (a transfer is under way).
    pub chunks_staged: u64,
    pub transfer_in_progress: bool,
    /// The snapshot this Ready installed: its index and the digest of the restored state.
    pub installed: Option<(Index, u64)>,
    /// The Ready broke the snapshot contract (chunks out of order, an install without a
    /// complete, intact snapshot staged).
    pub snapshot_error: Option<String>,
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

/// A log as Log Matching compares it: the entries held, after the point they start from
/// (`base`: the last compacted entry's index and term, `(0, 0)` when nothing was).
#[derive(Clone, Copy, Debug)]
pub struct LogView<'a> {
    pub base: (Index, Term),
    pub entries: &'a [Entry],
}

impl<'a> LogView<'a> {
    pub fn of(log: &'a MemoryLog) -> Self {
        let base = log.first_index() - 1;
        LogView { base: (base, log.term(base).unwrap_or(0)), entries: log.all_entries() }
    }

    pub fn last_index(&self) -> Index {
        self.base.0 + self.entries.len() as Index
    }

    /// The term at `index`, if this log knows it (the base or an entry).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.base.0 {
            return Some(self.base.1);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&'a Entry> {
        index.checked_sub(self.base.0 + 1).and_then(|offset| self.entries.get(offset as usize))
    }
}

/// A snapshot being received, chunk by chunk (memory only).
#[derive(Debug)]
struct Staged {
    meta: SnapshotMeta,
    data: BytesMut,
}

pub struct SimNode {
    pub id: NodeId,
    /// One of the cluster's first voters (bootstrapped with them), rather than a node
    /// that joined later with no membership of its own.
    pub bootstrap: bool,
    /// Started at least once.
    pub started: bool,
    /// Stopped for good after its removal from the cluster: never restarted.
    pub retired: bool,
    raft: Option<Raft<MemoryLog>>,
    pub disk: Disk,
    pub kv: StateMachine,
    /// Which state machine `kv` is, for restarts and snapshots.
    kind: StateMachineKind,
    /// Clients waiting for the outcome of the writes they proposed here (with the
    /// concord-mvcc state machine: a concord member's waiters, by request id). Lost in a
    /// crash, as a process's are.
    pub waiters: Waiters<Outcome>,
    /// The ids of this incarnation's ReadIndex rounds (with the concord-mvcc state
    /// machine: a concord member's, from a random start per process).
    pub read_ids: ReadIds,
    /// The ids of the writes this incarnation proposes (with the concord-mvcc state
    /// machine: a concord member's, from a random start per process).
    pub request_ids: RequestIds,
    /// Highest index applied to `kv` in this incarnation (or restored from a snapshot).
    pub applied: Index,
    /// Committed entries handed to the apply and not applied yet (with the concord-mvcc
    /// state machine, whose apply runs apart from the Raft loop as a member's apply task
    /// does; empty with the map). Lost in a crash.
    pub apply_queue: VecDeque<Entry>,
    /// The reads the apply releases (concord-member's, as the server's apply task uses it).
    pub gate: ApplyGate,
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
    staged: Option<Staged>,
}

impl SimNode {
    /// Most Readies handled per node per step; the rest wait for the next step.
    pub const MAX_READIES_PER_STEP: usize = 8;
    /// Largest snapshot a node stages; a transfer beyond it is a core bug.
    pub const MAX_STAGED_BYTES: usize = 1 << 20;

    pub fn new(id: NodeId, bootstrap: bool, kind: StateMachineKind) -> Self {
        SimNode {
            kind,
            id,
            bootstrap,
            started: false,
            retired: false,
            raft: None,
            disk: Disk::default(),
            kv: StateMachine::empty(kind),
            waiters: Waiters::default(),
            read_ids: ReadIds::new(1),
            request_ids: RequestIds::new(1),
            applied: 0,
            apply_queue: VecDeque::new(),
            gate: ApplyGate::new(0),
            observed: Observed::DOWN,
            commit_checked: 0,
            log_version: 0,
            tick_phase: 0,
            staged: None,
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

    /// Starts (or restarts) the node from its durable state. The state machine is
    /// restored from the durable snapshot, if there is one, and otherwise starts empty;
    /// either way it is rebuilt as committed entries come out of Ready. Returns the
    /// index and state digest of the snapshot restored, or why it could not be.
    pub fn start(&mut self, config: Config, tick_phase: u64) -> Result<Option<(Index, u64)>, String> {
        assert!(self.raft.is_none(), "node {} is already up", self.id);
        assert!(!self.retired, "node {} was retired", self.id);
        let store = self.disk.recover();
        let snapshot = store.snapshot_meta();
        let (kv, applied, restored) = if snapshot.index > 0 {
            let (index, kv) = StateMachine::decode_snapshot(self.kind, store.snapshot_data())
                .map_err(|e| format!("node {} cannot restore its durable snapshot: {e}", self.id))?;
            if index != snapshot.index {
                return Err(format!(
                    "node {}: the snapshot stored for {} holds index {index}",
                    self.id, snapshot.index
                ));
            }
            let digest = kv.digest();
            (kv, index, Some((index, digest)))
        } else {
            (StateMachine::empty(self.kind), 0, None)
        };
        let raft = Raft::new(config, store, applied).unwrap_or_else(|e| panic!("node {} cannot start: {e}", self.id));
        self.raft = Some(raft);
        self.started = true;
        self.kv = kv;
        self.applied = applied;
        self.apply_queue.clear();
        self.gate = ApplyGate::new(applied);
        self.observed = Observed::DOWN;
        self.commit_checked = 0;
        self.log_version += 1;
        self.tick_phase = tick_phase;
        self.staged = None;
        Ok(restored)
    }

    /// Loses everything that is not durable. Returns how many entries and snapshot
    /// writes were lost, and whether a snapshot transfer was half staged.
    pub fn crash(&mut self) -> (u64, u64, bool) {
        self.raft = None;
        self.kv = StateMachine::empty(self.kind);
        self.waiters = Waiters::default();
        self.applied = 0;
        self.apply_queue.clear();
        self.gate = ApplyGate::new(0);
        self.observed = Observed::DOWN;
        self.log_version += 1;
        let staged = self.staged.take().is_some();
        let (entries, snapshots) = self.disk.crash();
        (entries, snapshots, staged)
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
    pub fn visible_log(&self) -> LogView<'_> {
        match &self.raft {
            Some(raft) => LogView::of(raft.store()),
            None => LogView::of(self.disk.durable()),
        }
    }

    /// Whether the durable log holds entry `index` of `term`, or a snapshot covering it.
    pub fn durably_holds(&self, index: Index, term: Term) -> bool {
        let durable = self.disk.durable();
        durable.snapshot_meta().index >= index || durable.term(index) == Ok(term)
    }

    /// Takes one Ready, if there is one and the disk queue has room: stages snapshot
    /// chunks, installs a completed snapshot, writes the page cache, queues the disk job,
    /// and returns what remains to be done.
    pub fn take_ready(&mut self, now: u64, profile: &DiskProfile, rng: &mut SimRng) -> Option<ReadyWork> {
        let raft = self.raft.as_mut()?;
        if !raft.has_ready() || self.disk.is_full() {
            return None;
        }
        let ready = raft.ready();
        let mut work = ReadyWork::default();
        for chunk in ready.snapshot_chunks {
            work.chunks_staged += 1;
            work.transfer_in_progress = !chunk.last;
            if chunk.offset == 0 {
                self.staged = Some(Staged { meta: chunk.meta.clone(), data: BytesMut::new() });
            }
            let fits = match &self.staged {
                Some(staged) => {
                    staged.meta == chunk.meta
                        && staged.data.len() as u64 == chunk.offset
                        && staged.data.len() + chunk.data.len() <= Self::MAX_STAGED_BYTES
                }
                None => false,
            };
            if !fits {
                work.snapshot_error.get_or_insert_with(|| {
                    format!(
                        "node {} was handed chunk {}..{} of the snapshot at {} while holding {}",
                        self.id,
                        chunk.offset,
                        chunk.offset + chunk.data.len() as u64,
                        chunk.meta.index,
                        self.staged.as_ref().map_or("nothing".to_string(), |s| format!(
                            "{} bytes of the snapshot at {}",
                            s.data.len(),
                            s.meta.index
                        ))
                    )
                });
                self.staged = None;
                continue;
            }
            self.staged.as_mut().expect("checked").data.extend_from_slice(&chunk.data);
        }
        let mut job = WriteJob::default();
        if let Some(meta) = ready.install_snapshot {
            match self.staged.take() {
                Some(staged) if staged.meta == meta => {
                    let data: Bytes = staged.data.freeze();
                    match StateMachine::decode_snapshot(self.kind, &data) {
                        Ok((index, kv)) if index == meta.index => {
                            let write = SnapshotWrite { compact_to: meta.index, meta, data };
                            write.apply_to(raft.store_mut());
                            work.installed = Some((index, kv.digest()));
                            assert!(
                                self.apply_queue.is_empty(),
                                "entries handed out before a snapshot are applied first"
                            );
                            self.kv = kv;
                            self.applied = index;
                            self.gate.committed(index);
                            self.log_version += 1;
                            job.snapshot = Some(write);
                        }
                        Ok((index, _)) => {
                            work.snapshot_error = Some(format!(
                                "node {} installed the snapshot at {} but its data is of index {index}",
                                self.id, meta.index
                            ))
                        }
                        Err(error) => {
                            work.snapshot_error = Some(format!(
                                "node {} installed the snapshot at {} from damaged data: {error}",
                                self.id, meta.index
                            ))
                        }
                    }
                }
                other => {
                    work.snapshot_error = Some(format!(
                        "node {} was told to install the snapshot at {} but has {} staged",
                        self.id,
                        meta.index,
                        other.map_or("nothing".to_string(), |s| format!(
                            "{} bytes of the snapshot at {}",
                            s.data.len(),
                            s.meta.index
                        ))
                    ))
                }
            }
        }
        if let Some(hard_state) = ready.hard_state {
            raft.store_mut().hard_state = hard_state;
        }
        if !ready.entries.is_empty() {
            raft.store_mut().append(&ready.entries);
            self.log_version += 1;
        }
        job.hard_state = ready.hard_state;
        job.entries = ready.entries;
        job.held_messages = ready.messages_after_persist;
        self.disk.submit(now, job, profile, rng);
        work.messages = ready.messages;
        work.committed_entries = ready.committed_entries;
        work.read_states = ready.read_states;
        Some(work)
    }

    /// Takes a snapshot of the state machine at the applied index (if it is past the
    /// newest snapshot) and compacts the log through `applied - keep`: the page cache and
    /// the core at once, the disk when the job completes. Returns the snapshot's index
    /// and the compaction point, or `Err` if the core refused an applied index.
    pub fn take_snapshot(
        &mut self,
        keep: u64,
        padding: usize,
        now: u64,
        profile: &DiskProfile,
        rng: &mut SimRng,
    ) -> Result<Option<(Index, Index)>, String> {
        let Some(raft) = self.raft.as_mut() else {
            return Ok(None);
        };
        let index = self.applied;
        if self.disk.is_full() || index <= raft.store().snapshot_meta().index {
            return Ok(None);
        }
        let meta = match raft.snapshot_meta_at(index) {
            Ok(meta) => meta,
            // A node that joined knows no configuration before its first configuration
            // entry: it snapshots once it has applied one.
            Err(concord_raft::StorageError::MembershipUnknown(_)) => return Ok(None),
            Err(e) => {
                return Err(format!("node {} cannot describe a snapshot at its applied index {index}: {e}", self.id))
            }
        };
        let data = self.kv.encode_snapshot(index, padding);
        let compact_to = index.saturating_sub(keep).max(raft.store().first_index() - 1);
        let write = SnapshotWrite { meta, data, compact_to };
        write.apply_to(raft.store_mut());
        raft.compact(compact_to);
        self.log_version += 1;
        self.disk.submit(now, WriteJob { snapshot: Some(write), ..WriteJob::default() }, profile, rng);
        Ok(Some((index, compact_to)))
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
