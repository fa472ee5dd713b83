//! Messages exchanged between Raft peers.
//!
//! One enum variant per RPC and per reply, so a step function matches on exactly what it
//! can receive. Every message carries the sender's term: the single rule "a higher term
//! wins" is applied to all of them in one place before any role-specific handling.

use crate::snapshot::SnapshotChunk;
use crate::types::{Entry, Index, NodeId, Term};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term. For a pre-vote request it is the term the sender *would* campaign
    /// in, which it has not adopted.
    pub term: Term,
    pub body: MessageBody,
}

/// Why a follower refused an AppendEntries, with a hint that lets the leader skip a whole
/// term of divergent entries in one round trip instead of one index at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The `prev_log_index` that did not match.
    pub rejected_index: Index,
    /// The highest index at or below `rejected_index` whose term is at most the leader's
    /// `prev_log_term` (or the follower's last index if its log is shorter).
    pub hint_index: Index,
    /// The follower's term at `hint_index`.
    pub hint_term: Term,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote, or the pre-vote probe that asks "would you vote for me?" without
    /// anyone changing term.
    RequestVote {
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
        /// Set when campaigning because the leader asked us to (TimeoutNow): voters then
        /// ignore their "I still hear from a leader" lease.
        leader_transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    },
    AppendEntriesResponse {
        /// `Ok(match_index)`: the follower's log now matches the leader's through this index.
        result: Result<Index, RejectHint>,
    },
    /// Liveness and leadership confirmation. `commit` is already capped by the leader at
    /// what it knows this follower holds, so the follower can adopt it without checks.
    Heartbeat {
        commit: Index,
        /// The ReadIndex round this heartbeat confirms, if any.
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// A follower forwards a client's linearizable read to the leader.
    ReadIndexRequest {
        request_id: u64,
    },
    /// The leader's answer: the read may be served once the follower has applied `index`.
    ReadIndexResponse {
        request_id: u64,
        index: Index,
    },
    /// The leader tells a caught-up follower to campaign at once (leadership transfer).
    TimeoutNow,
    /// A piece of the leader's snapshot, for a follower whose next entry was compacted
    /// away. Once the last piece is installed the follower answers with an
    /// `AppendEntriesResponse` matching at the snapshot's index.
    InstallSnapshot {
        chunk: SnapshotChunk,
    },
    /// The follower holds the snapshot at `index` up to `next_offset` and wants the rest
    /// from there (0: start over, for instance after the follower restarted).
    InstallSnapshotResponse {
        index: Index,
        next_offset: u64,
    },
}

impl Message {
    /// A short human-readable name, used by traces and test output.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { pre_vote: false, .. } => "Vote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResp",
            MessageBody::RequestVoteResponse { pre_vote: false, .. } => "VoteResp",
            MessageBody::AppendEntries { .. } => "App",
            MessageBody::AppendEntriesResponse { .. } => "AppResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::ReadIndexRequest { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::InstallSnapshot { .. } => "Snap",
            MessageBody::InstallSnapshotResponse { .. } => "SnapResp",
        }
    }

    /// Bytes this message counts for against size limits (entries dominate).
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 48;
        match &self.body {
            MessageBody::AppendEntries { entries, .. } => {
                HEADER_BYTES + entries.iter().map(Entry::size_bytes).sum::<u64>()
            }
            MessageBody::InstallSnapshot { chunk } => {
                HEADER_BYTES + chunk.data.len() as u64 + 8 * chunk.meta.membership.members().count() as u64
            }
            _ => HEADER_BYTES,
        }
    }
}
