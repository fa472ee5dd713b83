//! The end-of-run progress check: once every fault is healed and every node is back, a
//! leader must be elected and a fresh proposal must be applied by a majority of the
//! voters of its configuration within a bounded number of ticks; then every member of
//! that configuration (learners included) must catch up with the leader, and their
//! states must agree.
//!
//! Safety checks alone would pass a cluster that stops doing anything; this catches a
//! core that wedges (a livelock of elections, a follower that can never catch up, a
//! snapshot transfer that never completes, a leader that never commits).

use std::collections::{BTreeMap, BTreeSet};

use concord_raft::NodeId;

/// Tracks the probe proposals of the liveness phase.
#[derive(Debug, Default)]
pub struct LivenessProbe {
    /// Nodes that applied each probe attempt.
    applied: BTreeMap<u64, BTreeSet<NodeId>>,
    /// The voters of the proposing leader's configuration, per attempt.
    voters: BTreeMap<u64, BTreeSet<NodeId>>,
    next_attempt: u64,
    last_proposed_at: Option<u64>,
    succeeded_at: Option<u64>,
}

impl LivenessProbe {
    /// Whether to propose a (new) probe at `now`: none yet, or the last one has had
    /// `retry_after` steps to commit.
    pub fn wants_proposal(&self, now: u64, retry_after: u64) -> bool {
        self.succeeded_at.is_none() && self.last_proposed_at.is_none_or(|at| now >= at + retry_after)
    }

    /// Notes that probe `attempt` (from [`LivenessProbe::next_attempt`]) was proposed
    /// by a leader whose configuration has `voters`.
    pub fn proposed(&mut self, attempt: u64, now: u64, voters: BTreeSet<NodeId>) {
        self.next_attempt = attempt;
        self.last_proposed_at = Some(now);
        self.voters.insert(attempt, voters);
    }

    /// The attempt number to put in the next probe.
    pub fn next_attempt(&self) -> u64 {
        self.next_attempt + 1
    }

    /// A node applied probe `attempt`; once a majority of the voters it was proposed to
    /// applied it, the probe succeeded.
    pub fn on_applied(&mut self, attempt: u64, node: NodeId, now: u64) {
        let nodes = self.applied.entry(attempt).or_default();
        nodes.insert(node);
        let Some(voters) = self.voters.get(&attempt) else {
            return; // a probe of an attempt that was refused: cannot happen
        };
        let applied = voters.intersection(nodes).count();
        if applied > voters.len() / 2 && self.succeeded_at.is_none() {
            self.succeeded_at = Some(now);
        }
    }

    pub fn succeeded_at(&self) -> Option<u64> {
        self.succeeded_at
    }

    pub fn attempts(&self) -> u64 {
        self.next_attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeds_once_a_majority_applied_one_probe() {
        let mut probe = LivenessProbe::default();
        assert!(probe.wants_proposal(0, 100));
        let attempt = probe.next_attempt();
        probe.proposed(attempt, 0, BTreeSet::from([1, 3, 4]));
        assert!(!probe.wants_proposal(50, 100));
        assert!(probe.wants_proposal(100, 100));
        probe.on_applied(attempt, 1, 10);
        probe.on_applied(attempt, 1, 11);
        // A learner (or a removed node) does not count.
        probe.on_applied(attempt, 2, 11);
        assert_eq!(probe.succeeded_at(), None);
        probe.on_applied(attempt, 3, 12);
        assert_eq!(probe.succeeded_at(), Some(12));
        assert!(!probe.wants_proposal(1_000, 100));
    }
}
