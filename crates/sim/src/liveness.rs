//! The end-of-run progress check: once every fault is healed and every node is back, a
//! leader must be elected and a fresh proposal must be applied by a majority within a
//! bounded number of ticks.
//!
//! Safety checks alone would pass a cluster that stops doing anything; this catches a
//! core that wedges (a livelock of elections, a follower that can never catch up, a
//! leader that never commits).

use std::collections::{BTreeMap, BTreeSet};

use concord_raft::NodeId;

/// Tracks the probe proposals of the liveness phase.
#[derive(Debug, Default)]
pub struct LivenessProbe {
    /// Nodes that applied each probe attempt.
    applied: BTreeMap<u64, BTreeSet<NodeId>>,
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

    /// Returns the attempt number to put in the next probe and notes it was proposed.
    pub fn proposed(&mut self, now: u64) -> u64 {
        self.next_attempt += 1;
        self.last_proposed_at = Some(now);
        self.next_attempt
    }

    /// A node applied probe `attempt`; `majority` applications mean success.
    pub fn on_applied(&mut self, attempt: u64, node: NodeId, majority: usize, now: u64) {
        let nodes = self.applied.entry(attempt).or_default();
        nodes.insert(node);
        if nodes.len() >= majority && self.succeeded_at.is_none() {
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
        let attempt = probe.proposed(0);
        assert!(!probe.wants_proposal(50, 100));
        assert!(probe.wants_proposal(100, 100));
        probe.on_applied(attempt, 1, 2, 10);
        probe.on_applied(attempt, 1, 2, 11);
        assert_eq!(probe.succeeded_at(), None);
        probe.on_applied(attempt, 3, 2, 12);
        assert_eq!(probe.succeeded_at(), Some(12));
        assert!(!probe.wants_proposal(1_000, 100));
    }
}
