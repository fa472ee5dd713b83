//! The Raft node: state shared by every role, the term rules applied to every message
//! before role-specific handling, the clock, and the public API.
//!
//! Role-specific behaviour lives beside this file, one step function per role:
//! `follower.rs`, `candidate.rs` (pre-candidate and candidate) and `leader.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::membership::{ConfChange, ConfChangeEntry, ConfChangeError, ConfChangeKind, Membership, MembershipLog};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::ready::{ReadState, Ready};
use crate::refusal::{self, Refusal};
use crate::rng::SplitMix64;
use crate::snapshot::{SnapshotChunk, SnapshotMeta};
use crate::storage::{LogStore, StorageError};
use crate::types::{Entry, EntryKind, HardState, Index, NodeId, Role, SoftState, Term, NO_NODE};

/// Why a proposal, read or transfer was refused. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader (leader is {leader})")]
    NotLeader { leader: NodeId },
    #[error("no leader is known")]
    NoLeader,
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("proposal of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("too many uncommitted entries ({count}); retry later")]
    Backpressure { count: u64 },
    #[error("too many pending reads ({count}); retry later")]
    TooManyPendingReads { count: usize },
    #[error("node {0} is not a voter")]
    UnknownNode(NodeId),
    #[error(transparent)]
    ConfChange(#[from] ConfChangeError),
}

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A read waiting for its index to be confirmed by a heartbeat round.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub from: NodeId,
    pub request_id: u64,
    pub index: Index,
    pub round: u64,
}

/// Follower only: a snapshot being received from the leader, chunk by chunk.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    pub meta: SnapshotMeta,
    /// Bytes received (and handed to the application) so far.
    pub next_offset: u64,
}

pub struct Raft<S: LogStore> {
    pub(crate) config: Config,
    pub(crate) log: RaftLog<S>,
    /// The configurations in this node's log; the latest is in effect.
    pub(crate) membership: MembershipLog,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) role: Role,
    pub(crate) leader: NodeId,

    /// Ticks since we last heard from a leader (follower), started an election
    /// (candidates), or ran a check-quorum round (leader).
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    pub(crate) rng: SplitMix64,

    /// Votes received in the current (pre-)election.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leader only: replication state of every voter, this node included.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Leader only: the node we are handing leadership to.
    pub(crate) transfer_target: Option<NodeId>,
    /// Leader only: ticks since the transfer started; it is abandoned after an election
    /// timeout. Separate from `election_elapsed`, which is the check-quorum clock.
    pub(crate) transfer_elapsed: u32,
    /// Leader only: proposals appended since the last broadcast.
    pub(crate) broadcast_pending: bool,
    /// Leader only: whether our term and vote are known to be durable. A leader elected
    /// by others' votes asked for them only once they were; a single voter elects itself
    /// at once, and its term is known durable only when an entry of its term is reported
    /// persisted (its new hard state went out in the same Ready or an earlier one).
    /// Until then its messages wait for its disk like anyone's: sent at once, they could
    /// outlive a crash that takes the term back, and the same term could be led again
    /// with other entries.
    pub(crate) term_durable: bool,
    /// Leader only: ReadIndex bookkeeping.
    pub(crate) read_round: u64,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its own term.
    pub(crate) reads_awaiting_commit: VecDeque<(NodeId, u64)>,

    /// Follower only: the snapshot being received.
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,

    pub(crate) outbox: Vec<Message>,
    pub(crate) outbox_after_persist: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) snapshot_chunks: Vec<SnapshotChunk>,
    pub(crate) install_snapshot: Option<SnapshotMeta>,
    last_soft_state: SoftState,
    last_hard_state: HardState,
}

impl<S: LogStore> Raft<S> {
    /// Starts a node from whatever `store` holds. `applied` is the index the
    /// application's state machine already reflects (0 for an in-memory one; at least the
    /// store's snapshot index once the log was compacted).
    ///
    /// The membership comes from the store's snapshot and the configuration entries after
    /// it; `config.voters` and `config.learners` are the bootstrap membership, used only
    /// when the store has no snapshot. A node joining an existing cluster starts with no
    /// voters: it learns the membership from the leader.
    pub fn new(config: Config, store: S, applied: Index) -> Result<Self, RaftError> {
        config.validate()?;
        let hard_state = store.initial_hard_state();
        let snapshot = store.snapshot_meta();
        let log = RaftLog::new(store, applied)?;
        let membership = if snapshot.index > 0 {
            MembershipLog::new(snapshot.index, snapshot.membership)
        } else {
            MembershipLog::new(0, Membership::new(config.voters.iter().copied(), config.learners.iter().copied()))
        };
        let mut raft = Raft {
            rng: SplitMix64::new(config.seed),
            config,
            log,
            membership,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: NO_NODE,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transfer_target: None,
            transfer_elapsed: 0,
            broadcast_pending: false,
            term_durable: true,
            read_round: 0,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: VecDeque::new(),
            incoming_snapshot: None,
            outbox: Vec::new(),
            outbox_after_persist: Vec::new(),
            read_states: Vec::new(),
            snapshot_chunks: Vec::new(),
            install_snapshot: None,
            last_soft_state: SoftState { leader: NO_NODE, role: Role::Follower, term: hard_state.term },
            last_hard_state: HardState { commit: 0, ..hard_state },
        };
        raft.last_hard_state.commit = raft.log.committed();
        raft.reset_election_timeout();
        raft.load_membership_from_log(snapshot.index)?;
        Ok(raft)
    }

    /// Replays the configuration entries after `from` found in the log at start-up.
    fn load_membership_from_log(&mut self, from: Index) -> Result<(), StorageError> {
        let mut next = from.max(self.log.first_index() - 1) + 1;
        let last = self.log.last_index();
        while next <= last {
            let batch = self.log.entries(next, last + 1, self.config.max_message_bytes)?;
            let Some(end) = batch.last().map(|e| e.index) else { break };
            for entry in batch.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                let membership = decode_membership(entry).map_err(StorageError::Fatal)?;
                self.membership.push(entry.index, membership);
            }
            next = end + 1;
        }
        Ok(())
    }

    // ----- observers -------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> NodeId {
        self.vote
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.log.committed()
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    pub fn persisted_index(&self) -> Index {
        self.log.persisted_index()
    }
    /// The voters of the configuration in effect (the latest in this node's log).
    pub fn voters(&self) -> Vec<NodeId> {
        self.membership.current().voters.iter().copied().collect()
    }
    /// The configuration in effect: the latest in this node's log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.membership.current()
    }
    /// Index of the entry that set the configuration in effect.
    pub fn membership_index(&self) -> Index {
        self.membership.current_index()
    }
    /// Whether this node may campaign: it is a voter in its configuration, or the latest
    /// configuration drops it but is not committed yet and it was a voter of the one
    /// before. Until that change commits, this node may be the only one able to win (its
    /// log may be the only one holding the change) and so to commit it (Raft
    /// dissertation §4.2.2); it then asks the voters of its latest configuration and does
    /// not count its own vote.
    pub fn is_promotable(&self) -> bool {
        let id = self.config.id;
        if self.membership.current().is_voter(id) {
            return true;
        }
        self.membership.current_index() > self.log.committed()
            && self.membership.previous().is_some_and(|previous| previous.is_voter(id))
    }
    /// The first index still in the log (entries before it were compacted).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn store(&self) -> &S {
        &self.log.store
    }
    /// The application writes the entries and hard state of each `Ready` through this.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.log.store
    }
    /// The term of the entry at `index` in this node's log (persisted or not).
    pub fn entry_term(&self, index: Index) -> Option<Term> {
        self.log.term(index).ok()
    }
    /// Entries `[low, high)` of this node's log (persisted or not).
    pub fn log_entries(&self, low: Index, high: Index) -> Vec<Entry> {
        self.log.entries(low, high, u64::MAX).expect("log range is readable")
    }
    /// Leader only: how far each voter's log is known to match ours.
    pub fn match_indexes(&self) -> BTreeMap<NodeId, Index> {
        self.progress.iter().map(|(id, p)| (*id, p.match_index)).collect()
    }
    pub fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role, term: self.term }
    }
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed() }
    }

    // ----- inputs ----------------------------------------------------------------------

    /// One logical clock step.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        // Saturating: a node that never campaigns (a learner) ticks forever.
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        // Learners, members still joining and members whose removal is committed never
        // campaign.
        if self.election_elapsed >= self.randomized_election_timeout && self.is_promotable() {
            self.election_elapsed = 0;
            self.start_election(false);
        }
    }

    /// Starts an election now, as if the election timeout had fired.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.is_promotable() {
            self.start_election(false);
        }
    }

    /// Handles a message from a peer. Messages for other nodes or stale in term are
    /// dropped (or answered so the stale sender learns the term). Vote requests from a
    /// node whose removal from the cluster this node knows to be committed are ignored
    /// without looking at their term: a removed member can neither win an election nor
    /// raise anyone's term. Any other node is answered: one this node does not know may
    /// be a voter added by a change it has not received yet, and one removed by a change
    /// that is not committed may still be needed to commit it. Other messages are
    /// accepted from anyone (a member that joined or a leader that is removing itself is
    /// legitimately unknown to some configurations). Node ids are never reused.
    ///
    /// A message no correct peer sends (see [`Refusal`]) is refused whole and changes
    /// nothing: the caller should log the refusal; for the protocol it is a lost message.
    pub fn step(&mut self, message: Message) -> Result<(), Refusal> {
        if message.to != self.config.id || message.from == self.config.id || message.from == NO_NODE {
            return Ok(());
        }
        refusal::check_shape(&message, self.config.max_entry_bytes)?;
        refusal::check_commit(&message, self.log.last_index())?;
        self.step_checked(message);
        Ok(())
    }

    /// [`Raft::step`] for a message that passed the checks.
    fn step_checked(&mut self, message: Message) {
        if matches!(message.body, MessageBody::RequestVote { .. })
            && self.membership.is_removed(message.from, self.log.committed())
        {
            return;
        }
        if message.term > self.term {
            if self.ignores_higher_term(&message) {
                return;
            }
            match &message.body {
                // A pre-vote never changes anyone's term; a granted pre-vote reply carries
                // the term we would campaign in, which we have not adopted yet.
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::RequestVoteResponse { pre_vote: true, granted: true } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::TimeoutNow
                | MessageBody::InstallSnapshot { .. } => self.become_follower(message.term, message.from),
                _ => self.become_follower(message.term, NO_NODE),
            }
        } else if message.term < self.term {
            self.answer_stale_term(&message);
            return;
        }

        if let MessageBody::RequestVote { pre_vote, last_log_index, last_log_term, .. } = message.body {
            self.handle_vote_request(&message, pre_vote, last_log_index, last_log_term);
            return;
        }
        match self.role {
            Role::Follower => self.step_follower(message),
            Role::PreCandidate | Role::Candidate => self.step_candidate(message),
            Role::Leader => self.step_leader(message),
        }
    }

    /// With check-quorum, a node that heard from a live leader within the election
    /// timeout ignores vote requests from higher terms: a node that was cut off must not
    /// depose a leader the rest of the cluster still follows. A leadership transfer
    /// overrides this.
    fn ignores_higher_term(&self, message: &Message) -> bool {
        let MessageBody::RequestVote { leader_transfer, .. } = message.body else {
            return false;
        };
        self.config.check_quorum
            && !leader_transfer
            && self.leader != NO_NODE
            && self.election_elapsed < self.config.election_tick
    }

    fn answer_stale_term(&mut self, message: &Message) {
        match message.body {
            // A leader from an old term (for instance one on the far side of a healed
            // partition) learns of the new term from our answer and steps down.
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                let reply = MessageBody::AppendEntriesResponse { result: Ok(0) };
                self.send(message.from, reply);
            }
            // Tell a lagging pre-candidate our term so it stops probing.
            MessageBody::RequestVote { pre_vote: true, .. } => {
                self.send(message.from, MessageBody::RequestVoteResponse { pre_vote: true, granted: false });
            }
            // And a lagging candidate, as the Raft paper's RequestVote does ("reply false
            // if term < currentTerm", with our term): it adopts our term and its next
            // campaign can be one we vote in. Ignored (as etcd's raft does), it may never
            // catch up with a node that campaigns at the same pace but never asks it for
            // a vote (one whose stale configuration counts it as a learner): found by the
            // simulator with pre-vote off, a cluster of two voters that never elected a
            // leader. (With pre-vote on, the stale pre-vote's refusal above teaches the
            // term.) The refusal is in our term, not the one it refuses; a candidate never
            // lets a refusal replace a grant (`step_candidate`).
            MessageBody::RequestVote { pre_vote: false, .. } => {
                self.send(message.from, MessageBody::RequestVoteResponse { pre_vote: false, granted: false });
            }
            _ => {}
        }
    }

    fn handle_vote_request(&mut self, message: &Message, pre_vote: bool, last_index: Index, last_term: Term) {
        // We may vote for the same candidate again (a repeated request); otherwise only
        // if we have not voted and know no leader in this term. A pre-vote for a future
        // term is answered on the log alone.
        let can_vote = self.vote == message.from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre_vote && message.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        let reply_term = if granted { message.term } else { self.term };
        if granted && !pre_vote {
            self.election_elapsed = 0;
            self.vote = message.from;
        }
        let reply = Message {
            from: self.config.id,
            to: message.from,
            term: reply_term,
            body: MessageBody::RequestVoteResponse { pre_vote, granted },
        };
        self.push_message(reply);
    }

    /// Proposes one entry. Returns its index; it is committed when it shows up in
    /// `committed_entries`.
    pub fn propose(&mut self, data: Bytes) -> Result<Index, ProposeError> {
        self.propose_batch(vec![data])
    }

    /// Proposes several entries at once; they go out together. Returns the last index.
    pub fn propose_batch(&mut self, batch: Vec<Bytes>) -> Result<Index, ProposeError> {
        self.check_can_propose()?;
        for data in &batch {
            if data.len() as u64 > self.config.max_proposal_bytes {
                return Err(ProposeError::TooLarge { size: data.len() as u64, limit: self.config.max_proposal_bytes });
            }
        }
        let uncommitted = self.log.last_index() - self.log.committed() + batch.len() as u64;
        if uncommitted > self.config.max_uncommitted_entries {
            return Err(ProposeError::Backpressure { count: uncommitted });
        }
        let first = self.log.last_index() + 1;
        let entries: Vec<Entry> = batch
            .into_iter()
            .enumerate()
            .map(|(offset, data)| Entry {
                index: first + offset as Index,
                term: self.term,
                kind: EntryKind::Normal,
                data,
            })
            .collect();
        self.append_as_leader(&entries);
        Ok(self.log.last_index())
    }

    /// Proposes a single-server membership change (see [`crate::membership`] for why it
    /// is safe). Refused unless this leader has committed an entry of its own term and
    /// every earlier change is committed; promoting a learner also needs the learner to
    /// be in sync (matched at least 90% of the leader's log, as etcd requires). Returns
    /// the index of the configuration entry; it is in effect from now on, and committed
    /// when it shows up in `committed_entries`.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, ProposeError> {
        self.check_can_propose()?;
        if !self.committed_in_current_term() {
            return Err(ConfChangeError::LeaderNotReady.into());
        }
        let pending = self.membership.current_index();
        if pending > self.log.committed() {
            return Err(ConfChangeError::Pending { index: pending }.into());
        }
        let current = self.membership.current();
        let next = current.apply(&change)?;
        let count = next.members().count();
        if count > crate::membership::MAX_MEMBERS {
            return Err(ConfChangeError::TooManyMembers { count, limit: crate::membership::MAX_MEMBERS }.into());
        }
        if change.kind == ConfChangeKind::AddVoter && current.is_learner(change.node) {
            let matched = self.progress.get(&change.node).map_or(0, |p| p.match_index);
            let last = self.log.last_index();
            if matched.saturating_mul(10) < last.saturating_mul(9) {
                return Err(ConfChangeError::LearnerNotReady { node: change.node, matched, last }.into());
            }
        }
        let data = ConfChangeEntry { change, membership: next }.encode();
        if data.len() as u64 > self.config.max_proposal_bytes {
            return Err(ProposeError::TooLarge { size: data.len() as u64, limit: self.config.max_proposal_bytes });
        }
        let index = self.log.last_index() + 1;
        self.append_as_leader(&[Entry { index, term: self.term, kind: EntryKind::ConfChange, data }]);
        Ok(index)
    }

    /// Asks for a linearizable read. When it is safe, a [`ReadState`] with the same
    /// `request_id` comes out of `ready()`; if leadership is lost first, none ever does
    /// and the caller should time out and retry.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => self.leader_read(self.config.id, request_id),
            _ if self.leader == NO_NODE => Err(ProposeError::NoLeader),
            _ => {
                self.send(self.leader, MessageBody::ReadIndexRequest { request_id });
                Ok(())
            }
        }
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(match self.leader {
                NO_NODE => ProposeError::NoLeader,
                leader => ProposeError::NotLeader { leader },
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    /// What a snapshot of the state machine at `index` must record: the term of that
    /// entry and the membership in effect there. `index` must have been applied (handed
    /// out in `committed_entries`) and not compacted, and its membership known here
    /// ([`StorageError::MembershipUnknown`] otherwise: a member that joined with an empty
    /// disk and received the log from its start has no configuration before the first
    /// configuration entry; a snapshot of such an index would carry no voters, and a
    /// follower installing it would know of none. Snapshot a later index instead.)
    pub fn snapshot_meta_at(&self, index: Index) -> Result<SnapshotMeta, StorageError> {
        if index > self.log.applying() {
            return Err(StorageError::Unavailable(index));
        }
        let term = self.log.term(index)?;
        if index < self.membership.base_index() {
            return Err(StorageError::Compacted(index));
        }
        let membership = self.membership.at(index);
        if membership.voters.is_empty() {
            return Err(StorageError::MembershipUnknown(index));
        }
        Ok(SnapshotMeta { index, term, membership: membership.clone() })
    }

    /// The application has a durable snapshot covering `index` (its store's
    /// `snapshot_meta()` says so) and dropped the log through `index`. The core forgets
    /// what it kept about those entries; a follower that needs one of them gets the
    /// snapshot instead.
    pub fn compact(&mut self, index: Index) {
        assert!(
            index <= self.log.store.snapshot_meta().index,
            "compaction to {index} past the store's snapshot at {}",
            self.log.store.snapshot_meta().index
        );
        self.membership.compact_to(index.min(self.log.applying()));
    }

    /// Whether the next Ready installs a snapshot (a member applies every entry it was
    /// handed before it first).
    pub fn has_snapshot_to_install(&self) -> bool {
        self.install_snapshot.is_some()
    }

    /// The application found the snapshot being received damaged: it checks the staged
    /// bytes together with the last chunk before stepping that chunk in (a snapshot is
    /// adopted as soon as its last chunk is stepped, so afterwards is too late). Forgets
    /// the transfer, as a restart would: the last chunk, sent again, is answered with
    /// "start over at byte 0", and the leader does. Nothing of the transfer was adopted,
    /// so nothing else changes. Call it with every Ready taken (the check needs every
    /// chunk staged anyway); chunks still pending would continue a staging the
    /// application dropped, so they go too.
    pub fn forget_incoming_snapshot(&mut self) {
        debug_assert!(self.install_snapshot.is_none(), "forget_incoming_snapshot with an adopted snapshot pending");
        self.incoming_snapshot = None;
        self.snapshot_chunks.clear();
    }

    /// The application reports that entries through `(index, term)` are durable.
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        self.log.stable_to(index, term);
        if self.role == Role::Leader && self.log.match_term(index, term) {
            if term == self.term {
                self.term_durable = true;
            }
            let persisted = self.log.persisted_index().min(index);
            let own = self.progress.get_mut(&self.config.id).expect("the leader tracks itself");
            if own.maybe_update(persisted) {
                self.maybe_commit();
            }
        }
    }

    // ----- output ----------------------------------------------------------------------

    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || !self.snapshot_chunks.is_empty()
            || self.install_snapshot.is_some()
            || self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.log.has_entries_to_persist()
            || !self.outbox.is_empty()
            || !self.outbox_after_persist.is_empty()
            || self.log.has_entries_to_apply()
            || !self.read_states.is_empty()
    }

    /// Collects everything the application must do now. See [`Ready`] for the contract.
    pub fn ready(&mut self) -> Ready {
        self.log.settle_snapshot();
        if self.broadcast_pending {
            self.broadcast_pending = false;
            self.broadcast_append();
        }
        let mut ready = Ready::default();
        let soft_state = self.soft_state();
        if soft_state != self.last_soft_state {
            self.last_soft_state = soft_state;
            ready.soft_state = Some(soft_state);
        }
        let hard_state = self.hard_state();
        if hard_state != self.last_hard_state {
            self.last_hard_state = hard_state;
            let mut persisted = hard_state;
            if self.config.bugs().forget_vote {
                persisted.vote = NO_NODE;
            }
            ready.hard_state = Some(persisted);
        }
        ready.snapshot_chunks = std::mem::take(&mut self.snapshot_chunks);
        ready.install_snapshot = self.install_snapshot.take();
        if let Some(meta) = &ready.install_snapshot {
            // Chunks of a newer snapshot that arrived after this one completed wait for
            // the next Ready: this one's staged snapshot must be the one it installs.
            if let Some(end) = ready.snapshot_chunks.iter().position(|c| c.last && &c.meta == meta) {
                self.snapshot_chunks = ready.snapshot_chunks.split_off(end + 1);
            }
        }
        ready.entries = self.log.take_entries_to_persist();
        ready.messages = std::mem::take(&mut self.outbox);
        ready.messages_after_persist = std::mem::take(&mut self.outbox_after_persist);
        ready.committed_entries = self.log.take_entries_to_apply(self.config.max_message_bytes.saturating_mul(16));
        ready.read_states = std::mem::take(&mut self.read_states);
        ready
    }

    // ----- shared helpers --------------------------------------------------------------

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = Message { from: self.config.id, to, term: self.term, body };
        self.push_message(message);
    }

    /// A leader's messages depend on nothing it has not persisted (its term and vote were
    /// persisted before it could win, or it waits until they are: see `term_durable`), so
    /// they go out at once. Everything else a node says (votes, acknowledgements) waits
    /// for its writes to be durable.
    pub(crate) fn push_message(&mut self, message: Message) {
        if self.role == Role::Leader && self.term_durable {
            self.outbox.push(message);
        } else {
            self.outbox_after_persist.push(message);
        }
    }

    pub(crate) fn reset_election_timeout(&mut self) {
        let base = self.config.election_tick as u64;
        self.randomized_election_timeout = self.rng.range(base, 2 * base) as u32;
    }

    /// Clears per-term state when the term changes or the role is reset.
    pub(crate) fn reset(&mut self, term: Term) {
        assert!(term >= self.term, "term must never go backwards ({} -> {term})", self.term);
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
        self.votes.clear();
        self.progress.clear();
        self.transfer_target = None;
        self.transfer_elapsed = 0;
        self.broadcast_pending = false;
        self.read_round = 0;
        self.pending_reads.clear();
        self.reads_awaiting_commit.clear();
        self.incoming_snapshot = None;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    /// Every voter but this node: whom a candidate asks for votes.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.membership.current().voters.iter().copied().filter(|&v| v != self.config.id).collect()
    }

    /// Every member but this node, learners included: whom a leader replicates to.
    pub(crate) fn replication_peers(&self) -> Vec<NodeId> {
        self.membership.current().members().filter(|&v| v != self.config.id).collect()
    }

    /// Entries were appended to (or replaced in) the log from `from` on: configuration
    /// entries among them take effect now, and replaced ones no longer count.
    pub(crate) fn membership_appended(&mut self, from: Index, entries: &[Entry]) {
        self.membership.truncate_from(from);
        for entry in entries.iter().filter(|e| e.index >= from && e.kind == EntryKind::ConfChange) {
            let membership = decode_membership(entry).unwrap_or_else(|error| panic!("{error}"));
            self.membership.push(entry.index, membership);
        }
    }

    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed()).map(|t| t == self.term).unwrap_or(false)
    }
}

/// The membership a configuration entry sets.
fn decode_membership(entry: &Entry) -> Result<Membership, String> {
    ConfChangeEntry::decode(&entry.data)
        .map(|decoded| decoded.membership)
        .map_err(|error| format!("configuration entry {} is malformed: {error}", entry.index))
}
