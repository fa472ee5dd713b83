//! The safety properties of Raft (paper, Figure 3), checked as the simulation runs.
//!
//! - Election Safety: at most one leader per term, ever.
//! - Log Matching: two logs that hold an entry with the same index and term are
//!   identical up to that index.
//! - Leader Completeness: a leader's log holds every entry committed before its term.
//! - State Machine Safety: no two nodes apply (or commit) different entries at an index.
//!
//! One rule of the protocol is also checked directly, message by message, because its
//! breach can stay invisible in the four properties above (the rest of the core may mask
//! it): a follower never moves its commit index past what the message it handles has
//! verified (Follower Commit).
//!
//! The checker keeps a global record of committed entries, filled the first time any
//! node commits or applies an index, and compares every later commit and apply with it.
//! The record is dense (commit indexes are prefixes), so it is a vector.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use concord_raft::{Entry, Index, MemoryLog, Message, MessageBody, NodeId, Raft, Term};

use crate::trace::MessageSummary;

/// The property a run broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    ElectionSafety,
    LogMatching,
    LeaderCompleteness,
    StateMachineSafety,
    FollowerCommit,
    Liveness,
    Linearizability,
}

impl Property {
    pub fn name(self) -> &'static str {
        match self {
            Property::ElectionSafety => "election-safety",
            Property::LogMatching => "log-matching",
            Property::LeaderCompleteness => "leader-completeness",
            Property::StateMachineSafety => "state-machine-safety",
            Property::FollowerCommit => "follower-commit",
            Property::Liveness => "liveness",
            Property::Linearizability => "linearizability",
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
        for (offset, committed) in self.committed.iter().enumerate() {
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
        Ok(())
    }

    /// Records or compares one entry known committed by `node` (`how`: "commits" or
    /// "applies").
    fn record(&mut self, node: NodeId, entry: &Entry, how: &str) -> Result<(), Violation> {
        let index = entry.index;
        let known = self.committed.len() as Index;
        if index == known + 1 {
            self.committed.push(Committed { term: entry.term, data: entry.data.clone(), first_seen_on: node });
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
    /// between, as its log holds them, must be the committed ones.
    pub fn on_commit(&mut self, raft: &Raft<MemoryLog>, from: Index) -> Result<(), Violation> {
        let to = raft.commit_index();
        if to <= from {
            return Ok(());
        }
        for entry in raft.log_entries(from + 1, to + 1) {
            self.record(raft.id(), &entry, "commits")?;
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

    /// Log Matching over every pair of `logs` (node id, log version, entries from index
    /// 1). Pairs whose versions did not change since they were last found consistent are
    /// skipped.
    pub fn check_log_matching(&mut self, logs: &[(NodeId, u64, &[Entry])]) -> Result<(), Violation> {
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
/// commit index the leader already capped, and nothing else may move it. Taken before
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

/// Log Matching for two logs that both start at index 1: wherever both hold an entry of
/// the same term, everything up to and including it must be identical.
pub fn logs_match(a: NodeId, log_a: &[Entry], b: NodeId, log_b: &[Entry]) -> Result<(), Violation> {
    let mut first_difference: Option<Index> = None;
    for (entry_a, entry_b) in log_a.iter().zip(log_b) {
        debug_assert_eq!(entry_a.index, entry_b.index, "logs start at index 1");
        if entry_a.term != entry_b.term {
            first_difference.get_or_insert(entry_a.index);
            continue;
        }
        let index = entry_a.index;
        let problem = if entry_a.data != entry_b.data {
            Some(format!("different data at {index}@t{}", entry_a.term))
        } else {
            first_difference.map(|at| {
                format!(
                    "both hold {index}@t{} but differ at index {at} ({} vs {})",
                    entry_a.term,
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

fn describe(log: &[Entry], index: Index) -> String {
    log.get(index as usize - 1).map_or("nothing".to_string(), |e| format!("t{}", e.term))
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
        let a = [entry(1, 1, "x"), entry(2, 1, "y"), entry(3, 2, "")];
        let b = [entry(1, 1, "x"), entry(2, 2, "z"), entry(3, 2, "")];
        let violation = logs_match(1, &a, 2, &b).unwrap_err();
        assert_eq!(violation.property, Property::LogMatching);
        assert!(violation.detail.contains("differ at index 2"), "{violation}");
        // Diverging without a shared entry above the difference is allowed.
        assert!(logs_match(1, &a[..2], 2, &b[..2]).is_ok());
        let c = [entry(1, 1, "x"), entry(2, 1, "other")];
        assert!(logs_match(1, &a, 3, &c).is_err());
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
