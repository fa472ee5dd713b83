//! Followers: accept the leader's log, and carry its commit index only as far as the log
//! has been verified to match; receive the leader's snapshot chunk by chunk when they are
//! behind its compaction point.

use crate::message::{Message, MessageBody, RejectHint};
use crate::raft::{IncomingSnapshot, Raft};
use crate::ready::ReadState;
use crate::snapshot::SnapshotChunk;
use crate::storage::LogStore;
use crate::types::{Entry, Index, NodeId, Term};

impl<S: LogStore> Raft<S> {
    pub(crate) fn step_follower(&mut self, message: Message) {
        match message.body {
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_append_entries(message.from, prev_log_index, prev_log_term, &entries, leader_commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed = 0;
                self.leader = message.from;
                // The leader capped `commit` at what it knows we hold, so it is safe to
                // adopt (never past our last index: that would be a leader bug).
                self.log.commit_to(commit);
                self.send(message.from, MessageBody::HeartbeatResponse { read_round });
            }
            // The leader hands over: campaign now, skipping pre-vote and the lease (unless
            // a change since made us a learner or removed us).
            MessageBody::TimeoutNow if self.is_promotable() => self.start_election(true),
            MessageBody::ReadIndexResponse { request_id, index } => {
                self.read_states.push(ReadState { request_id, index });
            }
            MessageBody::InstallSnapshot { chunk } => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_snapshot_chunk(message.from, chunk);
            }
            // A follower cannot serve a forwarded read; the sender will time out.
            _ => {}
        }
    }

    fn handle_append_entries(
        &mut self,
        leader: crate::types::NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: Index,
    ) {
        if prev_log_index < self.log.committed() {
            // Everything up to our commit index already matches (it is committed); a
            // delayed message must not be checked against it.
            let committed = self.log.committed();
            self.send(leader, MessageBody::AppendEntriesResponse { result: Ok(committed) });
            return;
        }
        match self.log.maybe_append(prev_log_index, prev_log_term, entries) {
            Some(outcome) => {
                let last_new_index = outcome.last_new_index;
                if let Some(written_from) = outcome.written_from {
                    self.membership_appended(written_from, entries);
                }
                // Only the prefix through the last entry this message verified is known
                // to match the leader; anything after it may be a stale suffix.
                let verified =
                    if self.config.bugs().commit_past_match { self.log.last_index() } else { last_new_index };
                self.log.commit_to(leader_commit.min(verified));
                self.send(leader, MessageBody::AppendEntriesResponse { result: Ok(last_new_index) });
            }
            None => {
                let probe_from = prev_log_index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(probe_from, prev_log_term);
                let hint = RejectHint { rejected_index: prev_log_index, hint_index, hint_term };
                self.send(leader, MessageBody::AppendEntriesResponse { result: Err(hint) });
            }
        }
    }
}

impl<S: LogStore> Raft<S> {
    /// A piece of the leader's snapshot. Pieces are staged by the application in order;
    /// the last one makes this node adopt the snapshot (its log restarts after it, its
    /// membership is the snapshot's), and the answer then says where its log matches.
    fn handle_snapshot_chunk(&mut self, leader: NodeId, chunk: SnapshotChunk) {
        let (index, term) = (chunk.meta.index, chunk.meta.term);
        let committed = self.log.committed();
        if index <= committed {
            // Nothing in it we lack; our committed prefix matches the leader's log.
            self.incoming_snapshot = None;
            self.send(leader, MessageBody::AppendEntriesResponse { result: Ok(committed) });
            return;
        }
        if self.log.match_term(index, term) {
            // Our log already holds its last entry, so it matches through there (Log
            // Matching), and a snapshot covers only committed entries.
            self.incoming_snapshot = None;
            self.log.commit_to(index);
            self.send(leader, MessageBody::AppendEntriesResponse { result: Ok(index) });
            return;
        }
        let expected = match &self.incoming_snapshot {
            Some(incoming) if incoming.meta == chunk.meta => incoming.next_offset,
            _ => 0,
        };
        if chunk.offset != expected {
            // A gap, a duplicate or a transfer we lost track of: say where we are.
            self.send(leader, MessageBody::InstallSnapshotResponse { index, next_offset: expected });
            return;
        }
        let next_offset = chunk.offset + chunk.data.len() as u64;
        let last = chunk.last;
        let meta = chunk.meta.clone();
        self.snapshot_chunks.push(chunk);
        if !last {
            self.incoming_snapshot = Some(IncomingSnapshot { meta, next_offset });
            self.send(leader, MessageBody::InstallSnapshotResponse { index, next_offset });
            return;
        }
        self.incoming_snapshot = None;
        self.log.restore(index, term);
        self.membership.reset(index, meta.membership.clone());
        self.install_snapshot = Some(meta);
        // Goes out only after the install is durable (followers' messages wait for the disk).
        self.send(leader, MessageBody::AppendEntriesResponse { result: Ok(index) });
    }
}
