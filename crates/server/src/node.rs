//! The task that owns the Raft core: it turns time, peer messages and client requests into
//! core inputs, and handles every `Ready` in order: send the leader's messages, hand
//! committed entries (already durable here) to the apply task, write and fsync the WAL,
//! send the messages that had to wait for the disk, and release linearizable reads.
//!
//! Group commit falls out of the loop's shape: everything that arrives while one fsync is
//! running is handled in the next iteration and shares the next fsync.
//!
//! Membership: configuration changes are proposed here (the core decides whether they are
//! allowed; this task adds etcd's liveness checks, which need to know whom the leader
//! hears from), and the transport's peers follow the membership: a member added by an
//! entry in the log is dialed as soon as the entry is appended (a new voter's
//! acknowledgement may be needed to commit it), a member gone from the directory is
//! dropped.
//! Snapshots pass through here twice. The apply task's periodic snapshot is recorded in
//! the WAL and the log compacted behind it (keeping a tail for slow followers); when a
//! follower needs the snapshot and it has no state file, the apply task is asked to write
//! one (`ask_for_a_state_file_if_wanted`). A snapshot
//! from the leader is staged chunk by chunk, installed before the Ready's entries are
//! written, and queued to the apply task in order with the committed entries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_raft::{
    ConfChange, ConfChangeEntry, ConfChangeError, Entry, EntryKind, Index, LogStore, Message, MessageBody, NodeId,
    ProposeError, Raft, Role, SnapshotChunk, SnapshotMeta, SoftState, Term, NO_NODE,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::apply::Waiters;
use crate::envelope::{self, ChangeContext};
use crate::errors::EtcdError;
use crate::fatal::Fatal;
use crate::members::MemberDirectory;
use crate::shared::apply_lags;
use crate::storage::{Adoption, CompletionCheck, LocalSnapshot, RaftStorage, RaftStorageError};
use crate::transport::Transport;
use concord_member::ReadIds;

/// Most requests or peer messages taken in one loop iteration, so ticks are never starved.
const MAX_INPUTS_PER_ITERATION: usize = 4096;
/// Most proposals waiting for a leader to be known.
const MAX_WAITING_PROPOSALS: usize = 16_384;
/// Most linearizable reads waiting at once.
const MAX_WAITING_READS: usize = 16_384;
/// Most Readies handled before going back to inputs.
const MAX_READIES_PER_ITERATION: usize = 64;
/// A snapshot transfer from which no chunk was read for this long is over (done, or the
/// follower is gone).
const SNAPSHOT_TRANSFER_IDLE: Duration = Duration::from_secs(5);
/// Longest a new snapshot (and the compaction behind it) waits for a transfer of the
/// current one to finish.
const MAX_COMPACTION_DELAY_FOR_TRANSFER: Duration = Duration::from_secs(600);
/// A state file asked of the apply task that has not arrived after this long (its write
/// failed) is asked for again.
const STATE_FILE_REQUEST_RETRY: Duration = Duration::from_secs(30);

/// What clients (through the gRPC services) ask of the Raft task.
pub enum Request {
    /// Replicate this entry. The outcome arrives through the apply task's waiter for
    /// `request_id` (also inside `data`), or, if the proposal never gets into the log
    /// here, an error through the same waiter at once.
    Propose { data: Bytes, request_id: u64, deadline: Instant },
    /// A linearizable read: answers with the index the state machine must reach first.
    ReadIndex { reply: oneshot::Sender<Result<Index, EtcdError>>, deadline: Instant },
    /// Hand leadership to another member.
    TransferLeader { to: NodeId, reply: oneshot::Sender<Result<(), EtcdError>> },
    /// Propose a membership change (leader only). `expected_membership_index` is the
    /// configuration the caller validated the change against: if another change was
    /// appended since, the caller must validate again. Answers with the entry's index.
    ConfChange {
        change: ConfChange,
        expected_membership_index: Index,
        check: QuorumCheck,
        reply: oneshot::Sender<Result<Index, ConfChangeRefusal>>,
    },
}

/// etcd's strict reconfiguration check (on by default there): a change must not leave the
/// voters that are actually reachable short of a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumCheck {
    /// Adding a learner or promoting one: nothing to protect.
    None,
    /// Adding a voter: every current voter must be live, or the larger quorum may not be
    /// reachable.
    AddVoter,
    /// Removing this voter must leave a live quorum.
    RemoveVoter(NodeId),
}

/// Why a membership change was not proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChangeRefusal {
    /// This member does not lead (any more): ask the leader.
    NotLeader,
    /// Not now (an earlier change is uncommitted, the leader is new or handing over, or
    /// the configuration moved since it was validated): validate again and retry.
    Retry,
    /// Refused for good, with the error the client gets.
    Failed(EtcdError),
}

/// Messages from peers.
pub enum Inbound {
    Raft(Message),
    /// Proposals a follower forwarded to us (we may no longer be the leader).
    Proposals(Vec<Bytes>),
    /// The leader refused proposals this member forwarded: they are in no log.
    Refused {
        request_ids: Vec<u64>,
        error: EtcdError,
    },
}

/// What the rest of the server may observe about the Raft state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub leader: NodeId,
    pub term: Term,
    pub is_leader: bool,
    pub commit_index: Index,
    pub last_index: Index,
    /// Index of the entry that set the configuration in effect (committed or not).
    pub membership_index: Index,
}

/// What the apply task is handed, in log order.
pub enum ApplyInput {
    /// Committed entries.
    Entries(Vec<Entry>),
    /// A snapshot from the leader, installed in the log: the state machine becomes it.
    Restore(SnapshotToRestore),
    /// A follower needs the current snapshot, which has no state file: write the state
    /// machine to one (at whatever index it has reached).
    WriteStateFile,
}

/// A snapshot the state machine must be replaced with.
pub struct SnapshotToRestore {
    pub index: Index,
    /// The state file, open at its start (it stays readable even if a newer snapshot
    /// replaces it on disk meanwhile).
    pub file: std::fs::File,
}

pub struct NodeLoop {
    pub raft: Raft<RaftStorage>,
    pub requests: mpsc::Receiver<Request>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub transport: Transport,
    /// Never awaited: a long apply must not stop this task's ticks and heartbeats. What
    /// bounds the queue is `shared::MAX_APPLY_GAP`.
    pub apply: mpsc::UnboundedSender<ApplyInput>,
    /// Snapshots the apply task made, to record and compact behind.
    pub snapshots: mpsc::Receiver<LocalSnapshot>,
    /// Entries kept in the log behind a snapshot, so that a follower a little behind
    /// catches up from the log rather than through a whole snapshot.
    pub snapshot_catchup_entries: u64,
    /// A snapshot the apply task made that waits for a transfer of the current one.
    pub held_snapshot: HeldSnapshot,
    pub status: watch::Sender<NodeStatus>,
    pub tick_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// The member directory (written by the apply task); its peer URLs feed the transport.
    pub directory: MemberDirectory,
    /// Clients waiting for their proposals: told at once when one never gets into the log.
    pub waiters: Waiters,
    /// The state machine's applied index (published by the apply task).
    pub applied: watch::Receiver<u64>,
}

/// A client's proposal waiting for a leader.
struct WaitingProposal {
    data: Bytes,
    request_id: u64,
    deadline: Instant,
}

/// Warnings about refused peer messages: at most one per interval, with a count of the
/// ones not logged, so that a faulty peer cannot flood the log.
#[derive(Default)]
struct RefusalLog {
    last_logged: Option<Instant>,
    not_logged: u64,
}

impl RefusalLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn refused(&mut self, refusal: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self.last_logged.is_some_and(|at| now.duration_since(at) < Self::INTERVAL) {
            self.not_logged += 1;
            return;
        }
        warn!(not_logged_since_last = self.not_logged, "refused a peer message no correct member sends: {refusal}");
        self.last_logged = Some(now);
        self.not_logged = 0;
    }
}

/// What the loop keeps about membership between iterations.
#[derive(Default)]
struct PeerTracking {
    /// When each peer was last heard from (any Raft message): the liveness behind etcd's
    /// reconfiguration checks.
    last_heard: HashMap<NodeId, Instant>,
    /// Peer URLs of members added by configuration entries this log holds but the
    /// directory has not applied yet.
    pending_urls: BTreeMap<NodeId, String>,
    /// Messages the core refused.
    refusals: RefusalLog,
}

/// A snapshot the apply task made, waiting for a transfer of the current one to end.
#[derive(Default)]
pub struct HeldSnapshot {
    /// The snapshot and since when it waits.
    snapshot: Option<(LocalSnapshot, Instant)>,
    /// The wait was logged.
    logged: bool,
    /// When a state file was last asked of the apply task, until one arrives.
    state_file_asked: Option<Instant>,
}

struct WaitingRead {
    reply: oneshot::Sender<Result<Index, EtcdError>>,
    deadline: Instant,
}

impl NodeLoop {
    /// Runs until shutdown, or until a storage failure, which it returns: after a failed
    /// fsync the WAL cannot be trusted and continuing could acknowledge writes that are
    /// not durable (see `fatal`).
    pub async fn run(mut self) -> Result<(), Fatal> {
        let mut ticker = tokio::time::interval(self.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting_proposals: VecDeque<WaitingProposal> = VecDeque::new();
        let mut waiting_reads: Vec<WaitingRead> = Vec::new();
        let mut reads_in_flight: HashMap<u64, Vec<WaitingRead>> = HashMap::new();
        let mut read_ids = ReadIds::new(random_start());
        let mut last_soft =
            SoftState { leader: NO_NODE, role: Role::Follower, term: self.raft.term().saturating_sub(1) };
        let mut peers = PeerTracking::default();
        let mut directory_changes = self.directory.subscribe();
        let mut snapshots_open = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.raft.tick(),
                request = self.requests.recv() => {
                    let Some(request) = request else { break };
                    self.take_request(request, &mut waiting_proposals, &mut waiting_reads, &peers);
                    for _ in 0..MAX_INPUTS_PER_ITERATION {
                        match self.requests.try_recv() {
                            Ok(request) => self.take_request(request, &mut waiting_proposals, &mut waiting_reads, &peers),
                            Err(_) => break,
                        }
                    }
                }
                inbound = self.inbound.recv() => {
                    let Some(inbound) = inbound else { break };
                    self.take_inbound(inbound, &mut peers, &mut reads_in_flight).await?;
                    for _ in 0..MAX_INPUTS_PER_ITERATION {
                        match self.inbound.try_recv() {
                            Ok(inbound) => self.take_inbound(inbound, &mut peers, &mut reads_in_flight).await?,
                            Err(_) => break,
                        }
                    }
                }
                made = self.snapshots.recv(), if snapshots_open => {
                    match made {
                        Some(made) => {
                            if made.state_file.is_some() {
                                self.held_snapshot.state_file_asked = None;
                            }
                            let since =
                                self.held_snapshot.snapshot.as_ref().map_or_else(Instant::now, |(_, since)| *since);
                            if let Some((superseded, _)) = self.held_snapshot.snapshot.replace((made, since)) {
                                self.raft.store_mut().discard_local(&superseded);
                            }
                        }
                        // The apply task ended (a fatal error, on its way to `serve`): a
                        // closed channel would answer at once on every turn of the loop.
                        None => snapshots_open = false,
                    }
                }
                _ = self.shutdown.changed() => break,
            }
            self.adopt_held_snapshot()?;

            self.flush_proposals(&mut waiting_proposals);
            self.flush_reads(&mut waiting_reads, &mut reads_in_flight, &mut read_ids);

            for _ in 0..MAX_READIES_PER_ITERATION {
                if !self.raft.has_ready() {
                    break;
                }
                self.handle_ready(&mut reads_in_flight, &mut peers).await?;
            }

            self.ask_for_a_state_file_if_wanted();

            if directory_changes.has_changed().unwrap_or(false) {
                directory_changes.borrow_and_update();
                self.update_transport_peers(&mut peers);
            }

            let soft = self.raft.soft_state();
            if soft != last_soft {
                log_soft_state_change(self.raft.id(), &last_soft, &soft);
                if soft.leader != last_soft.leader {
                    // Reads confirmed by no one now: ask again under the new leader.
                    for (_, reads) in reads_in_flight.drain() {
                        waiting_reads.extend(reads);
                    }
                }
                last_soft = soft;
            }
            let status = NodeStatus {
                leader: soft.leader,
                term: soft.term,
                is_leader: soft.role == Role::Leader,
                commit_index: self.raft.commit_index(),
                last_index: self.raft.last_index(),
                membership_index: self.raft.membership_index(),
            };
            self.status.send_if_modified(|current| {
                let changed = *current != status;
                *current = status;
                changed
            });
        }
        // Make sure what was acknowledged is on disk before going.
        self.raft.store_mut().sync()?;
        Ok(())
    }

    fn take_request(
        &mut self,
        request: Request,
        proposals: &mut VecDeque<WaitingProposal>,
        reads: &mut Vec<WaitingRead>,
        peers: &PeerTracking,
    ) {
        match request {
            Request::Propose { data, request_id, deadline } => {
                if proposals.len() < MAX_WAITING_PROPOSALS {
                    proposals.push_back(WaitingProposal { data, request_id, deadline });
                } else {
                    self.waiters.complete(request_id, Err(EtcdError::TooManyRequests));
                }
            }
            Request::ReadIndex { reply, deadline } => {
                if reads.len() < MAX_WAITING_READS {
                    reads.push(WaitingRead { reply, deadline });
                } else {
                    let _ = reply.send(Err(EtcdError::TooManyRequests));
                }
            }
            Request::TransferLeader { to, reply } => {
                let result = self.raft.transfer_leader(to).map_err(|error| match error {
                    ProposeError::NotLeader { .. } | ProposeError::NoLeader => EtcdError::NotLeader,
                    _ => EtcdError::BadLeaderTransferee,
                });
                let _ = reply.send(result);
            }
            Request::ConfChange { change, expected_membership_index, check, reply } => {
                let _ = reply.send(self.propose_conf_change(change, expected_membership_index, check, peers));
            }
        }
    }

    fn propose_conf_change(
        &mut self,
        change: ConfChange,
        expected_membership_index: Index,
        check: QuorumCheck,
        peers: &PeerTracking,
    ) -> Result<Index, ConfChangeRefusal> {
        if self.raft.role() != Role::Leader {
            return Err(ConfChangeRefusal::NotLeader);
        }
        if self.raft.membership_index() != expected_membership_index {
            return Err(ConfChangeRefusal::Retry);
        }
        self.check_quorum_after(check, peers)?;
        self.raft.propose_conf_change(change).map_err(|error| match error {
            ProposeError::NotLeader { .. } | ProposeError::NoLeader => ConfChangeRefusal::NotLeader,
            ProposeError::TransferInProgress
            | ProposeError::ConfChange(ConfChangeError::Pending { .. })
            | ProposeError::ConfChange(ConfChangeError::LeaderNotReady) => ConfChangeRefusal::Retry,
            ProposeError::ConfChange(ConfChangeError::LearnerNotReady { .. }) => {
                ConfChangeRefusal::Failed(EtcdError::LearnerNotReady)
            }
            ProposeError::ConfChange(ConfChangeError::AlreadyVoter(_) | ConfChangeError::AlreadyLearner(_)) => {
                ConfChangeRefusal::Failed(EtcdError::MemberExists)
            }
            ProposeError::ConfChange(ConfChangeError::NotAMember(_)) => {
                ConfChangeRefusal::Failed(EtcdError::MemberNotFound)
            }
            ProposeError::ConfChange(ConfChangeError::LastVoter(_)) => {
                ConfChangeRefusal::Failed(EtcdError::NotEnoughStartedMembers)
            }
            other => ConfChangeRefusal::Failed(EtcdError::Internal(other.to_string())),
        })
    }

    /// etcd's liveness checks (`mayAddMember`, `mayRemoveMember`), with "live" meaning
    /// heard from within an election timeout (etcd: connected for the last 5 s).
    fn check_quorum_after(&self, check: QuorumCheck, peers: &PeerTracking) -> Result<(), ConfChangeRefusal> {
        let now = Instant::now();
        let window = self.tick_interval * self.raft.config().election_tick;
        let me = self.raft.id();
        let live =
            |id: NodeId| id == me || peers.last_heard.get(&id).is_some_and(|at| now.duration_since(*at) < window);
        let voters = self.raft.voters();
        match check {
            QuorumCheck::None => Ok(()),
            QuorumCheck::AddVoter if voters.iter().all(|&v| live(v)) => Ok(()),
            QuorumCheck::AddVoter => Err(ConfChangeRefusal::Failed(EtcdError::Unhealthy)),
            // A member that is down is not part of the live quorum: removing it is safe.
            QuorumCheck::RemoveVoter(id) if id != me && !live(id) => Ok(()),
            QuorumCheck::RemoveVoter(_) => {
                let active = voters.iter().filter(|&&v| live(v)).count();
                if active.saturating_sub(1) < 1 + (voters.len().saturating_sub(1)) / 2 {
                    Err(ConfChangeRefusal::Failed(EtcdError::Unhealthy))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Points the transport at every member of the directory, plus members that entries
    /// in the log added and the directory does not have yet.
    fn update_transport_peers(&mut self, peers: &mut PeerTracking) {
        let mut wanted = self.directory.peer_addresses();
        let membership = self.raft.membership();
        peers.pending_urls.retain(|id, _| membership.contains(*id) && !wanted.contains_key(id));
        for (id, url) in &peers.pending_urls {
            wanted.insert(*id, url.clone());
        }
        wanted.remove(&self.raft.id());
        peers.last_heard.retain(|id, _| wanted.contains_key(id));
        if wanted != self.transport.peers() {
            info!(peers = ?wanted.keys().map(|id| format!("{id:x}")).collect::<Vec<_>>(), "peers changed");
            self.transport.set_peers(&wanted);
        }
    }

    async fn take_inbound(
        &mut self,
        inbound: Inbound,
        peers: &mut PeerTracking,
        reads_in_flight: &mut HashMap<u64, Vec<WaitingRead>>,
    ) -> Result<(), RaftStorageError> {
        match inbound {
            Inbound::Raft(message) => {
                if let MessageBody::InstallSnapshot { chunk } = &message.body {
                    // A stale term's chunk the core refuses anyway: no need to read anything.
                    let may_adopt = chunk.last && message.term >= self.raft.term();
                    if may_adopt
                        && !self.completes_a_sound_snapshot(message.from, chunk, peers, reads_in_flight).await?
                    {
                        return Ok(());
                    }
                }
                let from = message.from;
                match self.raft.step(message) {
                    Ok(()) => {
                        peers.last_heard.insert(from, Instant::now());
                    }
                    Err(refusal) => peers.refusals.refused(&refusal),
                }
            }
            Inbound::Proposals(data) => self.propose_forwarded(data),
            Inbound::Refused { request_ids, error } => {
                for request_id in request_ids {
                    self.waiters.complete(request_id, Err(error.clone()));
                }
            }
        }
        Ok(())
    }

    /// Whether `chunk`, a last chunk, may be stepped in: the core adopts a snapshot as
    /// soon as its last chunk arrives, and a damaged state file found only at the install
    /// would end this member. So the staged bytes and the chunk's are checked first (the
    /// pending Readies are handled before, so that everything the core took is staged).
    /// A damaged snapshot is refused like any bad peer message, and the transfer starts
    /// over from byte 0.
    async fn completes_a_sound_snapshot(
        &mut self,
        from: NodeId,
        chunk: &SnapshotChunk,
        peers: &mut PeerTracking,
        reads_in_flight: &mut HashMap<u64, Vec<WaitingRead>>,
    ) -> Result<bool, RaftStorageError> {
        for _ in 0..MAX_READIES_PER_ITERATION {
            if !self.raft.has_ready() {
                break;
            }
            self.handle_ready(reads_in_flight, peers).await?;
        }
        match self.raft.store_mut().check_completing_chunk(chunk)? {
            CompletionCheck::Sound | CompletionCheck::NotAContinuation => Ok(true),
            CompletionCheck::Damaged(damage) => {
                peers
                    .refusals
                    .refused(&format_args!("snapshot from {from:x}: {damage}; receiving it again from the start"));
                self.raft.forget_incoming_snapshot();
                self.raft.store_mut().discard_incoming();
                Ok(false)
            }
        }
    }

    /// Proposes what a follower forwarded, if this member still leads. What does not get
    /// into the log (leadership moved, backpressure, this leader's own apply lagging, one
    /// entry too large for this leader) is refused back to the members whose clients wait
    /// for it, so they fail at once instead of at their deadline.
    fn propose_forwarded(&mut self, data: Vec<Bytes>) {
        let (fit, too_large): (Vec<Bytes>, Vec<Bytes>) = data.into_iter().partition(|data| self.fits(data));
        self.refuse_forwarded(&too_large, &EtcdError::RequestTooLarge);
        let refused = if apply_lags(self.raft.commit_index(), *self.applied.borrow()) {
            EtcdError::TooManyRequests
        } else if self.raft.role() == Role::Leader {
            match self.raft.propose_batch(fit.clone()) {
                Ok(_) => return,
                Err(error) => refusal_error(&error),
            }
        } else {
            EtcdError::LeaderChanged
        };
        self.refuse_forwarded(&fit, &refused);
    }

    /// Whether one proposal is within this leader's limit (one that is not is refused on its
    /// own, so that it does not sink the batch it came in).
    fn fits(&self, data: &[u8]) -> bool {
        data.len() as u64 <= self.raft.config().max_proposal_bytes
    }

    /// Tells the members waiting for these forwarded entries that they are in no log.
    fn refuse_forwarded(&self, entries: &[Bytes], error: &EtcdError) {
        let mut by_origin: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        for (origin, request_id) in entries.iter().filter_map(|data| envelope::waiter_of(data)) {
            by_origin.entry(origin).or_default().push(request_id);
        }
        for (origin, request_ids) in by_origin {
            self.transport.refuse(origin, request_ids, error);
        }
    }

    /// A proposal that is not in the log and will not be: whoever waits for it learns why
    /// now, rather than at its deadline (and then as a timeout that says nothing of whether
    /// the write happened).
    fn refuse(&self, proposals: impl IntoIterator<Item = WaitingProposal>, error: &EtcdError) {
        for proposal in proposals {
            self.waiters.complete(proposal.request_id, Err(error.clone()));
        }
    }

    /// Proposes what waits, or forwards it to the leader, or keeps it until one is known.
    fn flush_proposals(&mut self, proposals: &mut VecDeque<WaitingProposal>) {
        let now = Instant::now();
        proposals.retain(|proposal| proposal.deadline > now);
        if proposals.is_empty() {
            return;
        }
        let leader = self.raft.leader();
        if self.raft.role() == Role::Leader {
            let (fit, too_large): (Vec<_>, Vec<_>) =
                proposals.drain(..).partition(|proposal| self.fits(&proposal.data));
            self.refuse(too_large, &EtcdError::RequestTooLarge);
            let batch: Vec<Bytes> = fit.iter().map(|proposal| proposal.data.clone()).collect();
            if let Err(error) = self.raft.propose_batch(batch) {
                // Nothing of the batch is in the log.
                self.refuse(fit, &refusal_error(&error));
            }
        } else if leader != NO_NODE {
            let batch: Vec<Bytes> = proposals.iter().map(|proposal| proposal.data.clone()).collect();
            if self.transport.forward(leader, batch) {
                proposals.clear();
            } else {
                // Not sent, so in no log: the link to the leader is full, or the leader is
                // not among the peers yet (the member list is catching up).
                let error = if self.transport.peers().contains_key(&leader) {
                    EtcdError::TooManyRequests
                } else {
                    EtcdError::LeaderChanged
                };
                self.refuse(proposals.drain(..), &error);
            }
        }
    }

    /// Starts one ReadIndex round for every read waiting, once a leader is known.
    fn flush_reads(
        &mut self,
        reads: &mut Vec<WaitingRead>,
        in_flight: &mut HashMap<u64, Vec<WaitingRead>>,
        read_ids: &mut ReadIds,
    ) {
        let now = Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) = reads.drain(..).partition(|r| r.deadline <= now);
        *reads = waiting;
        let timeout = if self.raft.leader() == NO_NODE { EtcdError::NoLeader } else { EtcdError::Timeout };
        for read in expired {
            let _ = read.reply.send(Err(timeout.clone()));
        }
        for reads in in_flight.values_mut() {
            reads.retain(|r| r.deadline > now);
        }
        in_flight.retain(|_, reads| !reads.is_empty());
        if reads.is_empty() || self.raft.leader() == NO_NODE {
            return;
        }
        let id = read_ids.next_id();
        match self.raft.read_index(id) {
            Ok(()) => {
                in_flight.insert(id, std::mem::take(reads));
            }
            Err(error) => warn!("read index refused: {error}"),
        }
    }

    /// Adopts the snapshot the apply task made, unless this leader is sending its current
    /// snapshot to a follower: adopting would make that snapshot unreadable and restart
    /// the transfer, and a big snapshot taken again faster than it can be sent would never
    /// arrive. Compaction waits for the transfer (bounded, so a follower that keeps
    /// failing cannot keep the log from being compacted forever).
    fn adopt_held_snapshot(&mut self) -> Result<(), RaftStorageError> {
        let Some((_, held_since)) = &self.held_snapshot.snapshot else { return Ok(()) };
        if self.raft.store().is_sending_snapshot(SNAPSHOT_TRANSFER_IDLE)
            && held_since.elapsed() < MAX_COMPACTION_DELAY_FOR_TRANSFER
        {
            if !self.held_snapshot.logged {
                info!("a snapshot is being sent to a follower: a newer snapshot and compaction wait for it");
                self.held_snapshot.logged = true;
            }
            return Ok(());
        }
        self.held_snapshot.logged = false;
        let (made, _) = self.held_snapshot.snapshot.take().expect("checked above");
        self.adopt_snapshot(made)
    }

    /// A leader asked for a chunk of its snapshot, which has no state file: ask the apply
    /// task to write one (once, until it arrives or the request is old enough that its
    /// write must have failed).
    fn ask_for_a_state_file_if_wanted(&mut self) {
        if !self.raft.store().take_state_file_wanted() {
            return;
        }
        let asked = &mut self.held_snapshot.state_file_asked;
        if asked.is_some_and(|at| at.elapsed() < STATE_FILE_REQUEST_RETRY) {
            return;
        }
        *asked = Some(Instant::now());
        info!(
            snapshot_index = self.raft.store().snapshot_meta().index,
            "a follower needs a snapshot: writing the state machine to a state file to send"
        );
        if self.apply.send(ApplyInput::WriteStateFile).is_err() {
            warn!("apply task is gone");
        }
    }

    /// Records a snapshot the apply task made and compacts the log behind it, keeping
    /// `snapshot_catchup_entries` entries, and never past what the state machine holds
    /// durably (a crash must find every entry after its durable state in the log).
    fn adopt_snapshot(&mut self, made: LocalSnapshot) -> Result<(), RaftStorageError> {
        let adoption = match self.raft.snapshot_meta_at(made.index) {
            Ok(meta) => self.raft.store_mut().adopt_local(meta, &made)?,
            // A snapshot from the leader overtook this one: nothing to record.
            Err(_) => Adoption::Stale,
        };
        match adoption {
            Adoption::Recorded => {}
            Adoption::Attached => {
                info!(index = made.index, "wrote a state file of the current snapshot, to send");
                return Ok(());
            }
            Adoption::Stale => {
                self.raft.store_mut().discard_local(&made);
                return Ok(());
            }
        }
        let meta = self.raft.store().snapshot_meta();
        let compact_to = meta.index.saturating_sub(self.snapshot_catchup_entries).min(made.durable_applied);
        let compacted_before = self.raft.store().first_index() - 1;
        if compact_to > compacted_before {
            self.raft.store_mut().compact(compact_to)?;
            self.raft.compact(compact_to);
        }
        info!(
            index = meta.index,
            term = meta.term,
            state_file_bytes = made.state_file.as_ref().map_or(0, |written| written.bytes),
            log_starts_at = self.raft.store().first_index(),
            "saved a snapshot of the state machine"
        );
        Ok(())
    }

    /// Installs the staged snapshot `meta` in the log and queues the state machine's
    /// restore from it, in the apply channel's order: after every entry handed over
    /// before, before every entry after it.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), RaftStorageError> {
        let started = Instant::now();
        let file = self.raft.store_mut().install_incoming(meta)?;
        info!(
            index = meta.index,
            term = meta.term,
            millis = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        let restore = ApplyInput::Restore(SnapshotToRestore { index: meta.index, file });
        if self.apply.send(restore).is_err() {
            warn!("apply task is gone");
        }
        Ok(())
    }

    async fn handle_ready(
        &mut self,
        reads_in_flight: &mut HashMap<u64, Vec<WaitingRead>>,
        peers: &mut PeerTracking,
    ) -> Result<(), RaftStorageError> {
        let ready = self.raft.ready();
        // A member added by one of these entries must be reachable before this Ready's
        // messages go out: they may be the first append to it.
        let mut added = false;
        for entry in ready.entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            let Ok(decoded) = ConfChangeEntry::decode(&entry.data) else { continue };
            let Ok(context) = ChangeContext::decode(&decoded.change.context) else { continue };
            if let Some(url) = context.peer_urls.first() {
                peers.pending_urls.insert(decoded.change.node, url.clone());
                added = true;
            }
        }
        if added {
            self.update_transport_peers(peers);
        }
        for message in ready.messages {
            self.transport.send(message);
        }
        for step in snapshot_steps(&ready.snapshot_chunks, ready.install_snapshot.as_ref()) {
            match step {
                SnapshotStep::Stage(chunk) => {
                    if chunk.offset == 0 {
                        info!(index = chunk.meta.index, term = chunk.meta.term, "receiving a snapshot from the leader");
                    }
                    self.raft.store_mut().stage_chunk(chunk)?
                }
                SnapshotStep::Install(meta) => self.install_snapshot(meta).await?,
            }
        }
        // Committed entries are already durable here: the core hands out nothing above
        // what on_persisted reported (pinned by the rules test
        // `committed_entries_are_only_entries_already_durable_here`). So the apply starts
        // now, in parallel with this Ready's write and fsync, instead of one fsync later;
        // after the snapshot steps, so that a restore queued there stays ahead of them.
        if !ready.committed_entries.is_empty() && self.apply.send(ApplyInput::Entries(ready.committed_entries)).is_err()
        {
            warn!("apply task is gone");
        }
        let wal = self.raft.store_mut();
        let mut must_sync = !ready.entries.is_empty();
        if !ready.entries.is_empty() {
            wal.append(&ready.entries)?;
        }
        if let Some(hard_state) = ready.hard_state {
            // A new term or vote must be durable before anything depends on it; a commit
            // index alone need not be: after a crash it is learned again from the leader,
            // and `Raft::new` accepts a state machine ahead of it. The record is written
            // now and becomes durable with the next sync (etcd's `raft.MustSync`). This
            // keeps an fsync per commit off the path of the next proposal.
            let written = wal.wal().hard_state();
            must_sync |= (hard_state.term, hard_state.vote) != (written.term, written.vote);
            wal.set_hard_state(hard_state)?;
        }
        if must_sync {
            wal.sync()?;
        }
        if let Some(last) = ready.entries.last() {
            self.raft.on_persisted(last.index, last.term);
        }
        for message in ready.messages_after_persist {
            self.transport.send(message);
        }
        for read in ready.read_states {
            if let Some(waiting) = reads_in_flight.remove(&read.request_id) {
                for reader in waiting {
                    let _ = reader.reply.send(Ok(read.index));
                }
            }
        }
        Ok(())
    }
}

/// What a client hears when the core refused its proposal (so it is in no log).
fn refusal_error(error: &ProposeError) -> EtcdError {
    match error {
        ProposeError::Backpressure { .. } | ProposeError::TooManyPendingReads { .. } => EtcdError::TooManyRequests,
        ProposeError::TooLarge { .. } => EtcdError::RequestTooLarge,
        // The leadership is moving or gone: asking again (elsewhere) may succeed.
        ProposeError::TransferInProgress
        | ProposeError::NotLeader { .. }
        | ProposeError::NoLeader
        | ProposeError::UnknownNode(_)
        | ProposeError::ConfChange(_) => EtcdError::LeaderChanged,
    }
}

/// Where this process starts numbering its ReadIndex rounds: random, so that an answer
/// the leader sent to an earlier process of this member (a delayed ReadIndexResponse,
/// matched by id alone) cannot release a read of this one at an older index (see
/// `concord_member::read_ids`).
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded from the operating system's randomness.
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// One thing to do with a Ready's snapshot chunks.
#[derive(Debug, PartialEq, Eq)]
enum SnapshotStep<'a> {
    Stage(&'a SnapshotChunk),
    Install(&'a SnapshotMeta),
}

/// The order in which to stage a Ready's chunks and install its snapshot: the install goes
/// right after the chunk that completes it. The core adopts a snapshot when its last chunk
/// arrives, so that chunk is in the same Ready. At 164ca5e chunks of a newer transfer
/// could follow it there, and staging them first would overwrite the snapshot to install;
/// the core refuses them since 3458316, when the install's chunk is always the last one
/// and this order is the documented one.
fn snapshot_steps<'a>(chunks: &'a [SnapshotChunk], install: Option<&'a SnapshotMeta>) -> Vec<SnapshotStep<'a>> {
    let mut steps: Vec<SnapshotStep<'a>> = chunks.iter().map(SnapshotStep::Stage).collect();
    if let Some(meta) = install {
        let after_last_chunk = chunks.iter().rposition(|c| c.last && c.meta == *meta).map_or(steps.len(), |at| at + 1);
        steps.insert(after_last_chunk, SnapshotStep::Install(meta));
    }
    steps
}

fn log_soft_state_change(id: NodeId, before: &SoftState, after: &SoftState) {
    if after.role == Role::Leader && before.role != Role::Leader {
        info!(member = %format!("{id:x}"), term = after.term, "elected leader");
    } else if before.role == Role::Leader && after.role != Role::Leader {
        info!(member = %format!("{id:x}"), term = after.term, "stepped down");
    } else if after.leader != before.leader && after.leader != NO_NODE {
        info!(member = %format!("{id:x}"), term = after.term, leader = %format!("{:x}", after.leader), "following leader");
    } else if after.leader == NO_NODE && before.leader != NO_NODE {
        info!(member = %format!("{id:x}"), term = after.term, "lost leader");
    } else if after.term != before.term {
        info!(member = %format!("{id:x}"), term = after.term, role = ?after.role, "term changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::Membership;

    fn chunk(index: Index, offset: u64, last: bool) -> SnapshotChunk {
        let meta = SnapshotMeta { index, term: 1, membership: Membership::new([1, 2, 3], []) };
        SnapshotChunk { meta, offset, data: Bytes::from_static(b"abc"), last }
    }

    #[test]
    fn each_process_numbers_its_reads_from_its_own_random_start() {
        let starts: std::collections::BTreeSet<u64> = (0..8).map(|_| ReadIds::new(random_start()).next_id()).collect();
        assert_eq!(starts.len(), 8, "random starts: {starts:?}");
        assert!(!starts.contains(&0));
    }

    #[test]
    fn a_snapshot_is_installed_right_after_its_last_chunk() {
        let (a, b, c) = (chunk(10, 0, false), chunk(10, 3, true), chunk(20, 0, false));
        // The core hands out exactly this when the last chunk of the snapshot at 10 and
        // the first of a newer one at 20 arrive before one Ready is taken.
        let chunks = [a.clone(), b.clone(), c.clone()];
        let steps = snapshot_steps(&chunks, Some(&b.meta));
        assert_eq!(
            steps,
            [SnapshotStep::Stage(&a), SnapshotStep::Stage(&b), SnapshotStep::Install(&b.meta), SnapshotStep::Stage(&c)]
        );
        assert_eq!(snapshot_steps(&chunks[..1], None), [SnapshotStep::Stage(&a)]);
        assert_eq!(snapshot_steps(&[], None), []);
    }
}
