//! A bounded record of what happened in a run, for the report of a failing seed.
//!
//! Events are stored as small copyable values and formatted only when printed, so
//! recording every message costs little. Only the last [`Trace::CAPACITY`] events are
//! kept (a ring buffer): a violation is almost always explained by what happened just
//! before it, and a replay with `--verbose` shows the whole run when it is not.

use std::collections::VecDeque;
use std::fmt;

use concord_raft::{Index, Message, MessageBody, NodeId, Role, Term};

/// The gist of a message: enough to follow the protocol in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageSummary {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub detail: MessageDetail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageDetail {
    Vote { pre_vote: bool, last_index: Index, last_term: Term },
    VoteResponse { pre_vote: bool, granted: bool },
    Append { prev_index: Index, prev_term: Term, entries: usize, commit: Index },
    AppendAccepted { match_index: Index },
    AppendRejected { rejected: Index, hint_index: Index, hint_term: Term },
    Heartbeat { commit: Index, read_round: u64 },
    HeartbeatResponse { read_round: u64 },
    ReadIndex { request_id: u64 },
    ReadIndexResponse { request_id: u64, index: Index },
    TimeoutNow,
    Snapshot { index: Index, offset: u64, bytes: usize, last: bool },
    SnapshotResponse { index: Index, next_offset: u64 },
}

impl MessageSummary {
    pub fn of(message: &Message) -> Self {
        let detail = match &message.body {
            MessageBody::RequestVote { pre_vote, last_log_index, last_log_term, .. } => {
                MessageDetail::Vote { pre_vote: *pre_vote, last_index: *last_log_index, last_term: *last_log_term }
            }
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                MessageDetail::VoteResponse { pre_vote: *pre_vote, granted: *granted }
            }
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                MessageDetail::Append {
                    prev_index: *prev_log_index,
                    prev_term: *prev_log_term,
                    entries: entries.len(),
                    commit: *leader_commit,
                }
            }
            MessageBody::AppendEntriesResponse { result } => match result {
                Ok(match_index) => MessageDetail::AppendAccepted { match_index: *match_index },
                Err(hint) => MessageDetail::AppendRejected {
                    rejected: hint.rejected_index,
                    hint_index: hint.hint_index,
                    hint_term: hint.hint_term,
                },
            },
            MessageBody::Heartbeat { commit, read_round } => {
                MessageDetail::Heartbeat { commit: *commit, read_round: *read_round }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                MessageDetail::HeartbeatResponse { read_round: *read_round }
            }
            MessageBody::ReadIndexRequest { request_id } => MessageDetail::ReadIndex { request_id: *request_id },
            MessageBody::ReadIndexResponse { request_id, index } => {
                MessageDetail::ReadIndexResponse { request_id: *request_id, index: *index }
            }
            MessageBody::TimeoutNow => MessageDetail::TimeoutNow,
            MessageBody::InstallSnapshot { chunk } => MessageDetail::Snapshot {
                index: chunk.meta.index,
                offset: chunk.offset,
                bytes: chunk.data.len(),
                last: chunk.last,
            },
            MessageBody::InstallSnapshotResponse { index, next_offset } => {
                MessageDetail::SnapshotResponse { index: *index, next_offset: *next_offset }
            }
        };
        MessageSummary { from: message.from, to: message.to, term: message.term, detail }
    }
}

impl fmt::Display for MessageSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} t{} ", self.from, self.to, self.term)?;
        match self.detail {
            MessageDetail::Vote { pre_vote, last_index, last_term } => {
                write!(f, "{} last={last_index}@t{last_term}", if pre_vote { "PreVote" } else { "Vote" })
            }
            MessageDetail::VoteResponse { pre_vote, granted } => write!(
                f,
                "{} {}",
                if pre_vote { "PreVoteResp" } else { "VoteResp" },
                if granted { "granted" } else { "rejected" }
            ),
            MessageDetail::Append { prev_index, prev_term, entries, commit } => {
                write!(f, "App prev={prev_index}@t{prev_term} entries={entries} commit={commit}")
            }
            MessageDetail::AppendAccepted { match_index } => {
                write!(f, "AppResp ok match={match_index}")
            }
            MessageDetail::AppendRejected { rejected, hint_index, hint_term } => {
                write!(f, "AppResp reject at={rejected} hint={hint_index}@t{hint_term}")
            }
            MessageDetail::Heartbeat { commit, read_round } => {
                write!(f, "Heartbeat commit={commit} round={read_round}")
            }
            MessageDetail::HeartbeatResponse { read_round } => {
                write!(f, "HeartbeatResp round={read_round}")
            }
            MessageDetail::ReadIndex { request_id } => write!(f, "ReadIndex req={request_id}"),
            MessageDetail::ReadIndexResponse { request_id, index } => {
                write!(f, "ReadIndexResp req={request_id} index={index}")
            }
            MessageDetail::TimeoutNow => f.write_str("TimeoutNow"),
            MessageDetail::Snapshot { index, offset, bytes, last } => {
                write!(f, "Snap index={index} offset={offset} bytes={bytes}{}", if last { " last" } else { "" })
            }
            MessageDetail::SnapshotResponse { index, next_offset } => {
                write!(f, "SnapResp index={index} next={next_offset}")
            }
        }
    }
}

/// Why the network did not deliver a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Lost at random.
    Lost,
    /// The link was cut by a partition at delivery time.
    Partitioned,
    /// The receiver was down at delivery time.
    ReceiverDown,
    /// The sender crashed while the message waited for its disk write.
    SenderCrashed,
    /// Too many messages in flight.
    NetworkFull,
}

/// One thing that happened in the simulated cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Tick {
        number: u64,
    },
    Send(MessageSummary),
    Duplicate(MessageSummary),
    Deliver(MessageSummary),
    Drop(MessageSummary, DropReason),
    Persisted {
        node: NodeId,
        index: Index,
        term: Term,
    },
    Crash {
        node: NodeId,
        lost_entries: u64,
        lost_snapshots: u64,
        lost_staged: bool,
    },
    Restart {
        node: NodeId,
        term: Term,
        last_index: Index,
        commit: Index,
        snapshot: Index,
    },
    /// A node took a snapshot of its state machine and compacted its log.
    SnapshotTaken {
        node: NodeId,
        index: Index,
        compacted_to: Index,
    },
    /// A node installed a snapshot received from the leader.
    SnapshotInstalled {
        node: NodeId,
        index: Index,
    },
    Partition(String),
    Heal,
    Role {
        node: NodeId,
        role: Role,
        term: Term,
        leader: NodeId,
    },
    Commit {
        node: NodeId,
        index: Index,
        term: Term,
    },
    /// A request the node accepted (a write: proposed at `proposed_at`).
    ClientInvoke {
        client: u64,
        node: NodeId,
        op: String,
        proposed_at: Option<Index>,
    },
    /// A request the node refused at once.
    ClientRefused {
        client: u64,
        node: NodeId,
        op: String,
        reason: String,
    },
    ClientComplete {
        client: u64,
        node: NodeId,
        outcome: String,
    },
    ClientIndeterminate {
        client: u64,
        reason: &'static str,
    },
    Note(String),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Tick { number } => write!(f, "tick {number}"),
            Event::Send(m) => write!(f, "send    {m}"),
            Event::Duplicate(m) => write!(f, "dup     {m}"),
            Event::Deliver(m) => write!(f, "deliver {m}"),
            Event::Drop(m, reason) => write!(f, "drop    {m} ({reason:?})"),
            Event::Persisted { node, index, term } => {
                write!(f, "node {node} persisted through {index}@t{term}")
            }
            Event::Crash { node, lost_entries, lost_snapshots, lost_staged } => {
                write!(f, "CRASH node {node} (lost {lost_entries} unpersisted entries")?;
                if *lost_snapshots > 0 {
                    write!(f, ", {lost_snapshots} unpersisted snapshots")?;
                }
                if *lost_staged {
                    f.write_str(", a half-received snapshot")?;
                }
                f.write_str(")")
            }
            Event::Restart { node, term, last_index, commit, snapshot } => {
                write!(f, "RESTART node {node} term={term} last={last_index} commit={commit}")?;
                if *snapshot > 0 {
                    write!(f, " snapshot={snapshot}")?;
                }
                Ok(())
            }
            Event::SnapshotTaken { node, index, compacted_to } => {
                write!(f, "node {node} took a snapshot at {index}, compacted through {compacted_to}")
            }
            Event::SnapshotInstalled { node, index } => write!(f, "node {node} installed the snapshot at {index}"),
            Event::Partition(description) => write!(f, "PARTITION {description}"),
            Event::Heal => f.write_str("HEAL all links"),
            Event::Role { node, role, term, leader } => {
                write!(f, "node {node} is {role:?} in t{term} (leader {leader})")
            }
            Event::Commit { node, index, term } => {
                write!(f, "node {node} commit -> {index}@t{term}")
            }
            Event::ClientInvoke { client, node, op, proposed_at } => {
                write!(f, "client {client} -> node {node}: {op}")?;
                match proposed_at {
                    Some(index) => write!(f, " (proposed at {index})"),
                    None => Ok(()),
                }
            }
            Event::ClientRefused { client, node, op, reason } => {
                write!(f, "client {client} -> node {node}: {op}: refused ({reason})")
            }
            Event::ClientComplete { client, node, outcome } => write!(f, "client {client} <- node {node}: {outcome}"),
            Event::ClientIndeterminate { client, reason } => {
                write!(f, "client {client}: outcome unknown ({reason})")
            }
            Event::Note(text) => f.write_str(text),
        }
    }
}

/// The last events of a run, each stamped with its step.
#[derive(Debug)]
pub struct Trace {
    events: VecDeque<(u64, Event)>,
    verbose: bool,
}

impl Trace {
    /// Events kept for the report of a failing seed.
    pub const CAPACITY: usize = 40;

    /// With `verbose`, every event is also printed to stderr as it is recorded.
    pub fn new(verbose: bool) -> Self {
        Trace { events: VecDeque::with_capacity(Self::CAPACITY), verbose }
    }

    pub fn record(&mut self, step: u64, event: Event) {
        if self.verbose {
            eprintln!("{step:>7}  {event}");
        }
        if self.events.len() == Self::CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back((step, event));
    }

    /// The kept events, oldest first, one per line.
    pub fn lines(&self) -> Vec<String> {
        self.events.iter().map(|(step, event)| format!("{step:>7}  {event}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_events() {
        let mut trace = Trace::new(false);
        for number in 0..100 {
            trace.record(number, Event::Tick { number });
        }
        let lines = trace.lines();
        assert_eq!(lines.len(), Trace::CAPACITY);
        assert!(lines[0].ends_with("tick 60"));
        assert!(lines.last().unwrap().ends_with("tick 99"));
    }
}
