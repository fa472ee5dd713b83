//! Pre-candidates and candidates: starting an election and counting votes.
//!
//! With pre-vote a node first asks "would you vote for me in term T+1?" without changing
//! anyone's term; only a pre-candidate that hears "yes" from a majority raises its term.
//! A node on the far side of a partition therefore cannot inflate terms while cut off,
//! and cannot depose a healthy leader when it returns.

use crate::message::{Message, MessageBody};
use crate::quorum::{vote_result, VoteResult};
use crate::raft::Raft;
use crate::storage::LogStore;
use crate::types::{Role, NO_NODE};

impl<S: LogStore> Raft<S> {
    /// Campaigns: with pre-vote first unless `leader_transfer` (a TimeoutNow told us to
    /// campaign at once).
    pub(crate) fn start_election(&mut self, leader_transfer: bool) {
        if self.config.pre_vote && !leader_transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(leader_transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        // The term is unchanged: we only ask whether we could win term + 1.
        let term = self.term;
        self.reset(term);
        self.role = Role::PreCandidate;
        self.votes.insert(self.config.id, true);
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, leader_transfer: bool) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        let term = self.term + 1;
        self.reset(term);
        self.role = Role::Candidate;
        self.vote = self.config.id;
        self.votes.insert(self.config.id, true);
        self.request_votes(false, leader_transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, leader_transfer: bool) {
        if vote_result(&self.voters(), &self.votes) == VoteResult::Won {
            // A single voter wins at once, before its new term and vote are durable.
            self.election_won(pre_vote, false);
            return;
        }
        let campaign_term = if pre_vote { self.term + 1 } else { self.term };
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for peer in self.peers() {
            let body = MessageBody::RequestVote { pre_vote, last_log_index, last_log_term, leader_transfer };
            let message = Message { from: self.config.id, to: peer, term: campaign_term, body };
            // Vote requests go out only after our own vote (and term) are durable: a
            // candidate that crashed and forgot voting for itself could vote for another
            // in the same term, and both could win.
            self.push_message(message);
        }
    }

    /// `term_durable`: the votes came from others, who were asked only once our term
    /// and vote were durable.
    fn election_won(&mut self, pre_vote: bool, term_durable: bool) {
        if pre_vote {
            self.become_candidate(false);
        } else {
            self.become_leader(term_durable);
        }
    }

    pub(crate) fn step_candidate(&mut self, message: Message) {
        match message.body {
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                let expected_pre_vote = self.role == Role::PreCandidate;
                if pre_vote != expected_pre_vote {
                    return;
                }
                // A grant is for one campaign term: a late grant from an earlier
                // pre-campaign must not count toward this one.
                let campaign_term = if pre_vote { self.term + 1 } else { self.term };
                if granted && message.term != campaign_term {
                    return;
                }
                // A refusal carries the refuser's term, which need not be the term it
                // refused (a vote request of a stale term is refused in the receiver's,
                // see `answer_stale_term`): a late one may reach a campaign in that very
                // term after the same node granted it. A node grants once per term and
                // never takes it back, so a refusal never replaces a grant.
                if !granted && self.votes.get(&message.from) == Some(&true) {
                    return;
                }
                self.votes.insert(message.from, granted);
                match vote_result(&self.voters(), &self.votes) {
                    VoteResult::Won => self.election_won(pre_vote, true),
                    VoteResult::Lost => {
                        let term = self.term;
                        self.become_follower(term, NO_NODE);
                    }
                    VoteResult::Pending => {}
                }
            }
            // Someone already won this term: follow them.
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } | MessageBody::InstallSnapshot { .. } => {
                let term = message.term;
                self.become_follower(term, message.from);
                self.step_follower(message);
            }
            _ => {}
        }
    }
}
