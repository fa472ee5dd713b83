//! The safety properties of Raft (paper, Figure 3), checked as the simulation runs.
//!
//! - Election Safety: at most one leader per term, ever.
//! - Log Matching: two logs that hold an entry with the same index and term are
//!   identical up to that index.
//! - Leader Completeness: a leader's log holds every entry committed before its term.
//! - State Machine Safety: no two nodes apply (or commit) different entries at an index,
//!   and every node's state machine after index `i` (applied, taken from a snapshot or
//!   restored from one) is the same.
//!
//! Rules of the protocol are also checked directly, because their breach can stay
//! invisible in the properties above for a long time (the rest of the core may mask it):
//!
//! - Follower Commit: a follower never moves its commit index past what the message it
//!   handles has verified.
//! - Persist Before Send: no message leaves a node in a term its disk does not hold yet
//!   (pre-vote requests and grants, which carry the term of a campaign not started, are
//!   the exception).
//! - Commit Quorum: when a leader's commit index advances, a majority of the voters of
//!   the leader's configuration hold the entry on disk.
//! - Config Safety: a leader is a voter of the configuration in its own log when it is
//!   elected; a membership change moves at most one voter and is proposed only once the
//!   previous one is committed, so no log holds more than one uncommitted configuration.
//! - Snapshot Integrity: snapshot chunks are staged in order, and what is installed is
//!   the complete, undamaged snapshot that was sent.
//!
//! The checker keeps a global record of committed entries, filled the first time any
//! node commits or applies an index, and compares every later commit and apply with it.
//! The record is dense (commit indexes are prefixes), so it is a vector; so is the record
//! of state digests. Logs may be compacted: an index below a node's log is covered by its
//! snapshot, whose state was compared when it was taken, installed or restored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use concord_raft::{
    ConfChangeEntry, Entry, EntryKind, Index, Membership, MemoryLog, Message, MessageBody, NodeId, Raft, Term,
};

use crate::node::LogView;
use crate::trace::MessageSummary;

/// The property a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    ElectionSafety,
    LogMatching,
    LeaderCompleteness,
    StateMachineSafety,
    FollowerCommit,
    PersistBeforeSend,
    CommitQuorum,
    ConfigSafety,
    SnapshotIntegrity,
    Liveness,
    Linearizability,
    /// A node refused a message from a correct peer as one no correct peer sends
    /// (`concord_raft::Refusal`): either the sender broke a rule or the check is wrong.
    PeerInput,
    /// Once every client has its answer, a member still holds a waiter (a leak: in a
    /// server, memory that grows with every request).
    Quiescence,
    /// A node applied a client's write that was proposed there, but no outcome reached
    /// the client's waiter (in a server: a client that times out on a write that
    /// happened).
    LostOutcome,
    /// A watcher was handed other events than the history's for the revisions it went
    /// past: one skipped, repeated or out of order (`crate::watchers`).
    Watch,
    /// The core (or the simulator) panicked.
    Panic,
}

impl Property {
    pub fn name(self) -> &'static str {
        match self {
            Property::ElectionSafety => "election-safety",
            Property::LogMatching => "log-matching",
            Property::LeaderCompleteness => "leader-completeness",
            Property::StateMachineSafety => "state-machine-safety",
            Property::FollowerCommit => "follower-commit",
            Property::PersistBeforeSend => "persist-before-send",
            Property::CommitQuorum => "commit-quorum",
            Property::ConfigSafety => "config-safety",
            Property::SnapshotIntegrity => "snapshot-integrity",
            Property::Liveness => "liveness",
            Property::Linearizability => "linearizability",
            Property::PeerInput => "peer-input",
            Property::Quiescence => "quiescence",
            Property::LostOutcome => "lost-outcome",
            Property::Watch => "watch",
            Property::Panic => "panic",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken property, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: Property,
    pub detail: String,
}

impl Violation {
    pub fn new(property: Property, detail: impl Into<String>) -> Self {
        Violation { property, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// One committed entry as first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Committed {
    term: Term,
    data: Bytes,
    first_seen_on: NodeId,
}

#[derive(Debug, Default)]
pub struct SafetyChecker {
    /// The leader of each term that had one.
    leaders: BTreeMap<Term, NodeId>,
    /// `committed[i - 1]` is the entry committed at index `i`.
    committed: Vec<Committed>,
    /// `states[i - 1]` is the digest of the state machine after applying index `i`, as
    /// first seen.
    states: Vec<(u64, NodeId)>,
    /// Committed configuration entries, in index order: `(index, membership)`.
    configs: Vec<(Index, Membership)>,
    /// The configuration the cluster was bootstrapped with.
    bootstrap: Membership,
    /// For each pair of nodes, the log versions last found consistent.
    checked_pairs: BTreeMap<(NodeId, NodeId), (u64, u64)>,
}

impl SafetyChecker {
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }

    pub fn committed_len(&self) -> u64 {
        self.committed.len() as u64
    }

    /// A checker for a cluster bootstrapped with `voters`.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        SafetyChecker { bootstrap: Membership::new(voters, []), ..SafetyChecker::default() }
    }

    /// The latest committed configuration set by an entry before `index` (the bootstrap
    /// one if there is none). For the configuration entry at `index` of any log, that is
    /// the configuration the entry changed: a change is proposed only once the previous
    /// one is committed (checked on its own).
    fn config_before(&self, index: Index) -> &Membership {
        let position = self.configs.partition_point(|&(at, _)| at < index);
        position.checked_sub(1).map_or(&self.bootstrap, |p| &self.configs[p].1)
    }

    /// Configuration entries committed so far.
    pub fn conf_changes(&self) -> u64 {
        self.configs.len() as u64
    }

    /// The latest committed configuration, if any configuration entry was committed
    /// (otherwise the bootstrap membership is in effect).
    pub fn committed_config(&self) -> Option<&(Index, Membership)> {
        self.configs.last()
    }

    /// Leader `node` of `term` crashed before its term was durable: it led only in
    /// memory, and (Persist Before Send) told no one, so its leadership is forgotten and
    /// another node may still lead that term.
    pub fn forget_volatile_leader(&mut self, term: Term, node: NodeId) {
        if self.leaders.get(&term) == Some(&node) {
            self.leaders.remove(&term);
        }
    }

    /// `raft` has just been seen as leader of its term: Election Safety, then Leader
    /// Completeness against everything committed so far in earlier terms.
    pub fn on_leader(&mut self, raft: &Raft<MemoryLog>) -> Result<(), Violation> {
        let (id, term) = (raft.id(), raft.term());
        match self.leaders.insert(term, id) {
            Some(other) if other != id => {
                return Err(Violation::new(
                    Property::ElectionSafety,
                    format!("nodes {other} and {id} were both leader in term {term}"),
                ))
            }
            _ => {}
        }
        // Entries below the log's first index are covered by the node's snapshot (the
        // last compacted one's term is still known).
        let floor = (raft.first_index() - 1).max(1);
        for (offset, committed) in self.committed.iter().enumerate().skip(floor as usize - 1) {
            let index = offset as Index + 1;
            if committed.term >= term {
                continue;
            }
            let found = raft.entry_term(index);
            if found != Some(committed.term) {
                return Err(Violation::new(
                    Property::LeaderCompleteness,
                    format!(
                        "node {id} became leader of term {term} with {} at index {index}, \
                         but {index}@t{} was committed (first seen on node {})",
                        found.map_or("nothing".to_string(), |t| format!("term {t}")),
                        committed.term,
                        committed.first_seen_on
                    ),
                ));
            }
        }
        self.check_leader_config(raft)
    }

    /// Config Safety for a new leader: it is a voter of its own configuration (or, if
    /// that configuration drops it and is not committed, of the one before: it may be
    /// elected to commit its own removal), and its log holds at most one configuration
    /// entry past the committed prefix.
    fn check_leader_config(&self, raft: &Raft<MemoryLog>) -> Result<(), Violation> {
        let (id, term) = (raft.id(), raft.term());
        let latest = raft.membership_index();
        let voter =
            raft.membership().is_voter(id) || (latest > raft.commit_index() && self.config_before(latest).is_voter(id));
        if !voter {
            return Err(Violation::new(
                Property::ConfigSafety,
                format!(
                    "node {id} became leader of term {term} but is a voter neither of the configuration in its log \
                     ({}, entry {latest}) nor, while that is uncommitted, of the one before",
                    describe_membership(raft.membership()),
                ),
            ));
        }
        let low = (self.committed.len() as Index + 1).max(raft.first_index());
        let uncommitted: Vec<Index> = raft
            .log_entries(low, raft.last_index() + 1)
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| e.index)
            .collect();
        if uncommitted.len() > 1 {
            return Err(Violation::new(
                Property::ConfigSafety,
                format!(
                    "node {id} became leader of term {term} with configuration entries {uncommitted:?} past the \
                     committed prefix (ends at {}): a change was proposed before the previous one committed",
                    self.committed.len()
                ),
            ));
        }
        Ok(())
    }

    /// A leader appended a configuration entry at `index` that changes `old` (set by
    /// entry `old_index`) into `new`: the previous configuration must be committed and
    /// the voters may change by one at most.
    pub fn on_conf_proposed(
        &self,
        leader: NodeId,
        index: Index,
        old_index: Index,
        old: &Membership,
        new: &Membership,
    ) -> Result<(), Violation> {
        let moved = old.voters.symmetric_difference(&new.voters).count();
        if moved > 1 {
            return Err(Violation::new(
                Property::ConfigSafety,
                format!(
                    "node {leader} proposed at {index} a change of {moved} voters: {} -> {}",
                    describe_membership(old),
                    describe_membership(new)
                ),
            ));
        }
        if old_index > self.committed.len() as Index {
            return Err(Violation::new(
                Property::ConfigSafety,
                format!(
                    "node {leader} proposed a change at {index} while the configuration entry {old_index} was not \
                     committed (committed prefix ends at {})",
                    self.committed.len()
                ),
            ));
        }
        Ok(())
    }

    /// Records or compares one entry known committed by `node` (`how`: "commits" or
    /// "applies").
    fn record(&mut self, node: NodeId, entry: &Entry, how: &str) -> Result<(), Violation> {
        let index = entry.index;
        let known = self.committed.len() as Index;
        if index == known + 1 {
            self.committed.push(Committed { term: entry.term, data: entry.data.clone(), first_seen_on: node });
            if entry.kind == EntryKind::ConfChange {
                let membership = ConfChangeEntry::decode(&entry.data).map(|e| e.membership).map_err(|error| {
                    Violation::new(
                        Property::StateMachineSafety,
                        format!("node {node} {how} a malformed configuration entry at {index}: {error}"),
                    )
                })?;
                self.configs.push((index, membership));
            }
            return Ok(());
        }
        if index > known + 1 {
            return Err(Violation::new(
                Property::StateMachineSafety,
                format!("node {node} {how} index {index} but index {} was never committed anywhere", known + 1),
            ));
        }
        let committed = &self.committed[index as usize - 1];
        if committed.term != entry.term || committed.data != entry.data {
            return Err(Violation::new(
                Property::StateMachineSafety,
                format!(
                    "node {node} {how} {index}@t{} ({:?}) but node {} committed {index}@t{} ({:?})",
                    entry.term,
                    String::from_utf8_lossy(&entry.data),
                    committed.first_seen_on,
                    committed.term,
                    String::from_utf8_lossy(&committed.data)
                ),
            ));
        }
        Ok(())
    }

    /// `raft`'s commit index moved from `from` to its current value: the entries in
    /// between, as its log holds them, must be the committed ones. If the commit index
    /// jumped over entries this node does not hold (it installed a snapshot), the
    /// snapshot's last entry must be the committed one.
    pub fn on_commit(&mut self, raft: &Raft<MemoryLog>, from: Index) -> Result<(), Violation> {
        let to = raft.commit_index();
        if to <= from {
            return Ok(());
        }
        let id = raft.id();
        let base = raft.first_index() - 1;
        if base > from {
            let index = base.min(to);
            let term = raft.entry_term(index);
            let known = self.committed.get(index as usize - 1).map(|c| c.term);
            if known.is_none() || known != term {
                return Err(Violation::new(
                    Property::StateMachineSafety,
                    format!(
                        "node {id} commits through its snapshot at {index}@t{} but the entry committed there is {}",
                        term.unwrap_or(0),
                        known.map_or("unknown".to_string(), |t| format!("of term {t}"))
                    ),
                ));
            }
        }
        for entry in raft.log_entries((from + 1).max(base + 1), to + 1) {
            self.record(id, &entry, "commits")?;
        }
        Ok(())
    }

    /// `node`'s state machine after index `index` has digest `digest` (`how`: "applies",
    /// "snapshots", "installs", "restores"). The first digest seen for an index is the
    /// reference.
    pub fn on_state(&mut self, node: NodeId, index: Index, digest: u64, how: &str) -> Result<(), Violation> {
        if index == 0 {
            return Ok(());
        }
        let known = self.states.len() as Index;
        if index == known + 1 {
            self.states.push((digest, node));
            return Ok(());
        }
        if index > known + 1 {
            return Err(Violation::new(
                Property::StateMachineSafety,
                format!("node {node} {how} the state after {index}, but no node ever applied {}", known + 1),
            ));
        }
        let (expected, first_node) = self.states[index as usize - 1];
        if expected != digest {
            return Err(Violation::new(
                Property::StateMachineSafety,
                format!(
                    "node {node} {how} a state after {index} (digest {digest:#x}) that differs from node \
                     {first_node}'s (digest {expected:#x})"
                ),
            ));
        }
        Ok(())
    }

    /// `node`, which had applied through `applied`, applies `entry`.
    pub fn on_apply(&mut self, node: NodeId, applied: Index, entry: &Entry) -> Result<(), Violation> {
        if entry.index != applied + 1 {
            return Err(Violation::new(
                Property::StateMachineSafety,
                format!("node {node} applied {} right after {applied}: entries must apply in order", entry.index),
            ));
        }
        self.record(node, entry, "applies")
    }

    /// Log Matching over every pair of `logs` (node id, log version, log). Pairs whose
    /// versions did not change since they were last found consistent are skipped.
    pub fn check_log_matching(&mut self, logs: &[(NodeId, u64, LogView<'_>)]) -> Result<(), Violation> {
        for (i, &(a, version_a, log_a)) in logs.iter().enumerate() {
            for &(b, version_b, log_b) in &logs[i + 1..] {
                if self.checked_pairs.get(&(a, b)) == Some(&(version_a, version_b)) {
                    continue;
                }
                logs_match(a, log_a, b, log_b)?;
                self.checked_pairs.insert((a, b), (version_a, version_b));
            }
        }
        Ok(())
    }
}

/// What a message allows a follower's commit index to reach (Follower Commit): an
/// AppendEntries verifies the log only through its last entry, a heartbeat carries a
/// commit index the leader already capped, a snapshot chunk vouches for the snapshot's
/// index, and nothing else may move it. Taken before
/// the message is handled; checked after with [`CommitLimit::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitLimit {
    limit: Option<Index>,
    summary: MessageSummary,
}

impl CommitLimit {
    pub fn of(message: &Message) -> Self {
        let limit = match &message.body {
            MessageBody::AppendEntries { prev_log_index, entries, leader_commit, .. } => {
                Some((*leader_commit).min(prev_log_index + entries.len() as Index))
            }
            MessageBody::Heartbeat { commit, .. } => Some(*commit),
            // A snapshot covers committed entries only.
            MessageBody::InstallSnapshot { chunk } => Some(chunk.meta.index),
            _ => None,
        };
        CommitLimit { limit, summary: MessageSummary::of(message) }
    }

    /// `node`, a follower after handling the message, moved its commit index from
    /// `before` to `after`.
    pub fn check(&self, node: NodeId, before: Index, after: Index) -> Result<(), Violation> {
        if after <= before.max(self.limit.unwrap_or(0)) {
            return Ok(());
        }
        let allowed = match self.limit {
            Some(limit) => format!("which allows at most {limit}"),
            None => "which carries no commit index".to_string(),
        };
        Err(Violation::new(
            Property::FollowerCommit,
            format!("node {node} moved its commit index from {before} to {after} on [{}], {allowed}", self.summary),
        ))
    }
}

/// Persist Before Send: `message` leaves its sender, whose disk holds `durable_term`.
pub fn check_persist_before_send(message: &Message, durable_term: Term) -> Result<(), Violation> {
    let campaign = matches!(
        message.body,
        MessageBody::RequestVote { pre_vote: true, .. }
            | MessageBody::RequestVoteResponse { pre_vote: true, granted: true }
    );
    if campaign || message.term <= durable_term {
        return Ok(());
    }
    Err(Violation::new(
        Property::PersistBeforeSend,
        format!(
            "node {} sent [{}] while its disk holds term {durable_term}",
            message.from,
            MessageSummary::of(message)
        ),
    ))
}

/// Commit Quorum: `leader` moved its commit index to `index`; `holders` are the nodes
/// whose disks hold that entry (or a snapshot covering it). A majority of `voters`, the
/// voters of the leader's configuration, must be among them.
pub fn check_commit_quorum(
    leader: NodeId,
    index: Index,
    voters: &BTreeSet<NodeId>,
    holders: &BTreeSet<NodeId>,
) -> Result<(), Violation> {
    let held = voters.intersection(holders).count();
    let needed = voters.len() / 2 + 1;
    if held >= needed {
        return Ok(());
    }
    Err(Violation::new(
        Property::CommitQuorum,
        format!(
            "node {leader} committed through {index}, but only {held} of the voters {voters:?} hold it on disk \
             ({holders:?}); a majority is {needed}"
        ),
    ))
}

/// Log Matching for two logs (which may start after a compaction point): wherever both
/// hold an entry of the same term, everything both hold up to and including it must be
/// identical.
pub fn logs_match(a: NodeId, log_a: LogView<'_>, b: NodeId, log_b: LogView<'_>) -> Result<(), Violation> {
    let low = log_a.base.0.max(log_b.base.0);
    let high = log_a.last_index().min(log_b.last_index());
    let mut first_difference: Option<Index> = None;
    for index in low..=high {
        let (Some(term_a), Some(term_b)) = (log_a.term(index), log_b.term(index)) else {
            continue; // index 0 of two uncompacted logs
        };
        if term_a != term_b {
            first_difference.get_or_insert(index);
            continue;
        }
        let data_differs = match (log_a.entry(index), log_b.entry(index)) {
            (Some(entry_a), Some(entry_b)) => entry_a.data != entry_b.data || entry_a.kind != entry_b.kind,
            _ => false, // a compaction point: its data is gone
        };
        let problem = if data_differs {
            Some(format!("different data at {index}@t{term_a}"))
        } else {
            first_difference.map(|at| {
                format!(
                    "both hold {index}@t{term_a} but differ at index {at} ({} vs {})",
                    describe(log_a, at),
                    describe(log_b, at)
                )
            })
        };
        if let Some(problem) = problem {
            return Err(Violation::new(Property::LogMatching, format!("logs of nodes {a} and {b}: {problem}")));
        }
    }
    Ok(())
}

fn describe(log: LogView<'_>, index: Index) -> String {
    log.term(index).map_or("nothing".to_string(), |t| format!("t{t}"))
}

/// `voters {1, 2} learners {4}`, for messages.
pub fn describe_membership(membership: &Membership) -> String {
    format!("voters {:?} learners {:?}", membership.voters, membership.learners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_raft::{Config, EntryKind};

    fn entry(index: Index, term: Term, data: &'static str) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Bytes::from_static(data.as_bytes()) }
    }

    #[test]
    fn log_matching_fails_on_a_shared_entry_above_a_difference() {
        fn view(entries: &[Entry]) -> LogView<'_> {
            LogView { base: (0, 0), entries }
        }
        let a = [entry(1, 1, "x"), entry(2, 1, "y"), entry(3, 2, "")];
        let b = [entry(1, 1, "x"), entry(2, 2, "z"), entry(3, 2, "")];
        let violation = logs_match(1, view(&a), 2, view(&b)).unwrap_err();
        assert_eq!(violation.property, Property::LogMatching);
        assert!(violation.detail.contains("differ at index 2"), "{violation}");
        // Diverging without a shared entry above the difference is allowed.
        assert!(logs_match(1, view(&a[..2]), 2, view(&b[..2])).is_ok());
        let c = [entry(1, 1, "x"), entry(2, 1, "other")];
        assert!(logs_match(1, view(&a), 3, view(&c)).is_err());
    }

    #[test]
    fn log_matching_compares_compacted_logs_from_where_both_start() {
        let full = [entry(1, 1, "x"), entry(2, 1, "y"), entry(3, 2, ""), entry(4, 3, "w")];
        // Compacted through 2 (term 1): holds 3@t2 and 4@t3.
        let compacted = LogView { base: (2, 1), entries: &full[2..] };
        let whole = LogView { base: (0, 0), entries: &full };
        assert!(logs_match(1, compacted, 2, whole).is_ok());
        // A log that differs at the compaction point but agrees above it.
        let other = [entry(1, 1, "x"), entry(2, 2, "y"), entry(3, 2, "")];
        let violation = logs_match(1, compacted, 3, LogView { base: (0, 0), entries: &other }).unwrap_err();
        assert!(violation.detail.contains("differ at index 2"), "{violation}");
        // A compaction point above the other log's end shares nothing with it.
        let short = LogView { base: (0, 0), entries: &other[..1] };
        assert!(logs_match(1, LogView { base: (3, 2), entries: &[] }, 4, short).is_ok());
    }

    #[test]
    fn nothing_but_a_pre_vote_leaves_a_node_in_a_term_its_disk_does_not_hold() {
        let message = |term, body| Message { from: 3, to: 4, term, body };
        let append =
            MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, entries: vec![], leader_commit: 0 };
        assert!(check_persist_before_send(&message(11, append.clone()), 11).is_ok());
        let violation = check_persist_before_send(&message(12, append), 11).unwrap_err();
        assert_eq!(violation.property, Property::PersistBeforeSend);
        let pre_vote =
            MessageBody::RequestVote { pre_vote: true, last_log_index: 0, last_log_term: 0, leader_transfer: false };
        assert!(check_persist_before_send(&message(12, pre_vote), 11).is_ok());
    }

    #[test]
    fn commit_quorum_counts_the_voters_that_hold_the_entry() {
        let voters = BTreeSet::from([1, 2, 3, 4]);
        assert!(check_commit_quorum(1, 9, &voters, &BTreeSet::from([1, 2, 4])).is_ok());
        // Two of four (and a learner) is not a majority: the config-quorum bug's count.
        let violation = check_commit_quorum(1, 9, &voters, &BTreeSet::from([1, 4, 5])).unwrap_err();
        assert_eq!(violation.property, Property::CommitQuorum);
    }

    #[test]
    fn states_are_compared_per_index_and_changes_move_one_voter_after_a_committed_one() {
        let mut checker = SafetyChecker::default();
        checker.on_state(1, 1, 7, "applies").unwrap();
        checker.on_state(2, 1, 7, "restores").unwrap();
        assert_eq!(checker.on_state(3, 1, 8, "installs").unwrap_err().property, Property::StateMachineSafety);
        assert!(checker.on_state(3, 3, 8, "installs").is_err(), "a gap");
        let old = Membership::new([1, 2, 3], []);
        let one = Membership::new([1, 2, 3, 4], []);
        let two = Membership::new([1, 2, 4, 5], []);
        checker.on_apply(1, 0, &entry(1, 1, "x")).unwrap();
        assert!(checker.on_conf_proposed(1, 2, 0, &old, &one).is_ok());
        assert_eq!(checker.on_conf_proposed(1, 2, 0, &old, &two).unwrap_err().property, Property::ConfigSafety);
        assert_eq!(checker.on_conf_proposed(1, 3, 2, &one, &old).unwrap_err().property, Property::ConfigSafety);
    }

    #[test]
    fn a_follower_may_commit_only_what_the_message_verified() {
        let append = |entries: Vec<Entry>, leader_commit| Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries { prev_log_index: 4, prev_log_term: 3, entries, leader_commit },
        };
        let one_entry = CommitLimit::of(&append(vec![entry(5, 3, "x")], 9));
        assert!(one_entry.check(2, 2, 5).is_ok());
        let violation = one_entry.check(2, 2, 7).unwrap_err();
        assert_eq!(violation.property, Property::FollowerCommit);
        assert!(CommitLimit::of(&append(vec![], 3)).check(2, 2, 3).is_ok());
        assert!(CommitLimit::of(&append(vec![], 9)).check(2, 2, 5).is_err());
        let heartbeat = CommitLimit::of(&Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Heartbeat { commit: 6, read_round: 0 },
        });
        assert!(heartbeat.check(2, 2, 6).is_ok());
        assert!(heartbeat.check(2, 2, 7).is_err());
        let other = CommitLimit::of(&Message { from: 1, to: 2, term: 3, body: MessageBody::TimeoutNow });
        assert!(other.check(2, 2, 3).is_err());
        assert!(other.check(2, 2, 2).is_ok());
    }

    #[test]
    fn state_machine_safety_compares_every_apply_with_the_first() {
        let mut checker = SafetyChecker::default();
        assert!(checker.on_apply(1, 0, &entry(1, 1, "x")).is_ok());
        assert!(checker.on_apply(2, 0, &entry(1, 1, "x")).is_ok());
        let violation = checker.on_apply(3, 0, &entry(1, 2, "y")).unwrap_err();
        assert_eq!(violation.property, Property::StateMachineSafety);
        assert!(checker.on_apply(1, 1, &entry(3, 1, "z")).is_err());
    }

    #[test]
    fn a_second_leader_in_a_term_and_a_leader_missing_a_committed_entry_are_caught() {
        let mut checker = SafetyChecker::default();
        checker.on_apply(1, 0, &entry(1, 1, "x")).unwrap();
        // A node with an empty log in term 2 would be a leader missing entry 1.
        let mut config = Config::new(2, vec![1, 2, 3]);
        config.seed = 1;
        let mut log = MemoryLog::new();
        log.hard_state.term = 2;
        let raft = Raft::new(config, log, 0).unwrap();
        let violation = checker.on_leader(&raft).unwrap_err();
        assert_eq!(violation.property, Property::LeaderCompleteness);

        let mut checker = SafetyChecker::default();
        let mut log = MemoryLog::new();
        log.hard_state.term = 2;
        let raft_2 = Raft::new(Config::new(2, vec![1, 2, 3]), log.clone(), 0).unwrap();
        let raft_3 = Raft::new(Config::new(3, vec![1, 2, 3]), log, 0).unwrap();
        checker.on_leader(&raft_2).unwrap();
        checker.on_leader(&raft_2).unwrap();
        let violation = checker.on_leader(&raft_3).unwrap_err();
        assert_eq!(violation.property, Property::ElectionSafety);
    }
}
