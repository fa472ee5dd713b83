//! Followers: accept the leader's log, and carry its commit index only as far as the log
//! has been verified to match.

use crate::message::{Message, MessageBody, RejectHint};
use crate::raft::Raft;
use crate::ready::ReadState;
use crate::storage::LogStore;
use crate::types::{Entry, Index, Term};

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
            MessageBody::TimeoutNow => {
                // The leader hands over: campaign now, skipping pre-vote and the lease.
                self.start_election(true);
            }
            MessageBody::ReadIndexResponse { request_id, index } => {
                self.read_states.push(ReadState { request_id, index });
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
            Some(last_new_index) => {
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
