//! The simulated operator: membership changes proposed to the leader while faults go on.
//!
//! An operator of a real cluster adds learners, promotes them, adds and removes voters,
//! removes the leader itself, and replaces a node (adds a fresh one, then removes an old
//! one). This module decides which change to ask for and when; the runner proposes it
//! with `propose_conf_change` on the leader of the moment, starts fresh nodes, and stops
//! removed nodes for good once their removal is committed.
//!
//! The operator follows the rules an operator must follow, and nothing more (the core
//! enforces the protocol's own rules, and the simulator checks them):
//!
//! - node ids are never reused: a fresh node gets a new id and an empty disk, and a node
//!   the operator decided to remove is never added again;
//! - a node is stopped for good only once a configuration without it is committed (until
//!   then it might still be needed for a quorum); it keeps running for a while after, and
//!   must not disrupt the cluster meanwhile;
//! - the number of voters stays within the seed's bounds (a replacement may pass the
//!   upper one by one voter for a moment), and the number of node ids within a fixed
//!   pool (`--nodes` plus [`MembershipProfile::EXTRA_IDS`]).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use concord_raft::{ConfChange, ConfChangeKind, Membership, NodeId};

use crate::rng::SimRng;

/// How the operator behaves in one seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipProfile {
    /// Chance per step that the operator asks the leader for a change (0: never).
    pub change_per_million: u32,
    /// Bounds on the number of voters.
    pub min_voters: usize,
    pub max_voters: usize,
    /// Most learners at once.
    pub max_learners: usize,
    /// Fresh node ids available beyond the first voters.
    pub extra_ids: u64,
    /// Relative weights of: add a learner, promote a learner, add a voter directly,
    /// remove a voter, remove the leader, remove a learner, replace a node.
    pub weights: [u32; 7],
    /// A removed node is stopped for good between 0 and this many steps after its
    /// removal is seen committed.
    pub retire_max_delay: u64,
}

impl MembershipProfile {
    /// Fresh ids beyond the first voters, in every seed: enough for a few replacements.
    pub const EXTRA_IDS: u64 = 4;

    pub fn draw(rng: &mut SimRng, nodes: usize, election_steps: u64) -> Self {
        MembershipProfile {
            change_per_million: rng.pick(&[0, 1_000, 3_000, 6_000]),
            min_voters: rng.pick(&[nodes - 1, nodes.saturating_sub(2).max(1)]),
            max_voters: rng.pick(&[nodes + 1, nodes + 2]),
            max_learners: rng.pick(&[1, 2]),
            extra_ids: Self::EXTRA_IDS,
            weights: [
                rng.pick(&[10, 30]),
                rng.pick(&[10, 30]),
                rng.pick(&[5, 20]),
                rng.pick(&[10, 30]),
                rng.pick(&[5, 20]),
                rng.pick(&[5, 10]),
                rng.pick(&[10, 30]),
            ],
            retire_max_delay: rng.pick(&[0, election_steps, 4 * election_steps]),
        }
    }
}

/// A change the operator wants proposed to the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub change: ConfChange,
    /// A fresh node to start (empty disk, no membership) before proposing.
    pub start: Option<NodeId>,
    /// What the change is, for the trace.
    pub why: &'static str,
}

/// The operator's memory across a run.
#[derive(Debug)]
pub struct Operator {
    profile: MembershipProfile,
    /// The next fresh id and the last one the pool allows.
    next_id: NodeId,
    last_id: NodeId,
    /// Nodes the operator decided to remove (it proposed their removal): never added
    /// again, stopped once a configuration without them is committed.
    removing: BTreeSet<NodeId>,
    /// A replacement under way: `(incoming, outgoing)`.
    replacing: Option<(NodeId, NodeId)>,
    /// When each removed node is to be stopped.
    retire_at: BTreeMap<NodeId, u64>,
    /// False once the run winds down.
    active: bool,
}

impl Operator {
    pub fn new(profile: MembershipProfile, first_voters: usize) -> Self {
        let first_fresh = first_voters as NodeId + 1;
        Operator {
            profile,
            next_id: first_fresh,
            last_id: first_voters as NodeId + profile.extra_ids,
            removing: BTreeSet::new(),
            replacing: None,
            retire_at: BTreeMap::new(),
            active: true,
        }
    }

    /// The highest node id this run can ever use.
    pub fn last_id(&self) -> NodeId {
        self.last_id
    }

    /// Stops proposing changes (the liveness phase).
    pub fn stop(&mut self) {
        self.active = false;
    }

    /// Whether `id` is to be removed (never to be added again).
    pub fn is_removing(&self, id: NodeId) -> bool {
        self.removing.contains(&id)
    }

    /// Decides whether to ask `leader`, whose configuration is `membership`, for a change
    /// now, and which. `spares` are started nodes that are not stopped for good (the
    /// operator reuses one that is not a member before taking a fresh id).
    pub fn next_change(
        &mut self,
        leader: NodeId,
        membership: &Membership,
        spares: &[NodeId],
        rng: &mut SimRng,
    ) -> Option<Plan> {
        if !self.active || !rng.chance(self.profile.change_per_million) {
            return None;
        }
        let voters = membership.voters.len();
        let plan = |kind, node, start, why| {
            Some(Plan { change: ConfChange { kind, node, context: Bytes::new() }, start, why })
        };
        // A removal that did not take (its entry was lost): ask again.
        if let Some(&node) = self.removing.iter().find(|&&n| membership.contains(n)) {
            if !(membership.is_voter(node) && voters == 1) {
                return plan(ConfChangeKind::RemoveNode, node, None, "remove again");
            }
        }
        if let Some((incoming, outgoing)) = self.replacing {
            if membership.is_learner(incoming) {
                return plan(ConfChangeKind::AddVoter, incoming, None, "replace: promote");
            }
            if !membership.contains(incoming) {
                if self.removing.contains(&incoming) {
                    self.replacing = None;
                } else {
                    return plan(ConfChangeKind::AddLearner, incoming, None, "replace: add");
                }
            } else if membership.contains(outgoing) && outgoing != incoming {
                self.replacing = None;
                return plan(ConfChangeKind::RemoveNode, outgoing, None, "replace: remove");
            } else {
                self.replacing = None;
            }
        }
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let voter_ids: Vec<NodeId> = membership.voters.iter().copied().collect();
        let others: Vec<NodeId> = voter_ids.iter().copied().filter(|&v| v != leader).collect();
        let fresh = self.fresh_node(membership, spares);
        let mut weights = self.profile.weights;
        let feasible = [
            fresh.is_some() && learners.len() < self.profile.max_learners,
            !learners.is_empty() && voters < self.profile.max_voters,
            fresh.is_some() && voters < self.profile.max_voters,
            voters > self.profile.min_voters && !others.is_empty(),
            voters > self.profile.min_voters && voters > 1,
            !learners.is_empty(),
            fresh.is_some() && learners.len() < self.profile.max_learners && !voter_ids.is_empty(),
        ];
        for (weight, ok) in weights.iter_mut().zip(feasible) {
            if !ok {
                *weight = 0;
            }
        }
        if weights.iter().all(|&w| w == 0) {
            return None;
        }
        match rng.weighted(&weights) {
            0 => {
                let (node, start) = fresh.expect("feasible");
                plan(ConfChangeKind::AddLearner, node, start, "add a learner")
            }
            1 => plan(ConfChangeKind::AddVoter, rng.pick(&learners), None, "promote a learner"),
            2 => {
                let (node, start) = fresh.expect("feasible");
                plan(ConfChangeKind::AddVoter, node, start, "add a voter")
            }
            3 => plan(ConfChangeKind::RemoveNode, rng.pick(&others), None, "remove a voter"),
            4 => plan(ConfChangeKind::RemoveNode, leader, None, "remove the leader"),
            5 => plan(ConfChangeKind::RemoveNode, rng.pick(&learners), None, "remove a learner"),
            _ => {
                let (node, start) = fresh.expect("feasible");
                let outgoing = rng.pick(&voter_ids);
                self.replacing = Some((node, outgoing));
                plan(ConfChangeKind::AddLearner, node, start, "replace: add")
            }
        }
    }

    /// A node to add: a started spare that is not a member (and not being removed), or
    /// else a fresh id (to be started). `None` when the pool is used up.
    fn fresh_node(&self, membership: &Membership, spares: &[NodeId]) -> Option<(NodeId, Option<NodeId>)> {
        if let Some(&spare) = spares.iter().find(|&&s| !membership.contains(s) && !self.removing.contains(&s)) {
            return Some((spare, None));
        }
        (self.next_id <= self.last_id).then_some((self.next_id, Some(self.next_id)))
    }

    /// The runner started fresh node `id`.
    pub fn started(&mut self, id: NodeId) {
        assert_eq!(id, self.next_id, "fresh ids are handed out in order");
        self.next_id += 1;
    }

    /// The leader appended `change`.
    pub fn proposed(&mut self, change: &ConfChange) {
        if change.kind == ConfChangeKind::RemoveNode {
            self.removing.insert(change.node);
            if self.replacing.is_some_and(|(incoming, _)| incoming == change.node) {
                self.replacing = None;
            }
        }
    }

    /// The removed nodes to stop for good at `now`, given the latest committed
    /// configuration (`None`: the first voters' configuration is still in effect).
    /// Nodes whose removal is committed are scheduled for a random moment first.
    pub fn due_retirements(
        &mut self,
        now: u64,
        committed: Option<&Membership>,
        retired: &dyn Fn(NodeId) -> bool,
        rng: &mut SimRng,
    ) -> Vec<NodeId> {
        let Some(committed) = committed else {
            return Vec::new();
        };
        for &node in &self.removing {
            if !committed.contains(node) && !retired(node) && !self.retire_at.contains_key(&node) {
                self.retire_at.insert(node, now + rng.between(0, self.profile.retire_max_delay));
            }
        }
        let due: Vec<NodeId> = self.retire_at.iter().filter(|&(_, &at)| at <= now).map(|(&n, _)| n).collect();
        for node in &due {
            self.retire_at.remove(node);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(weights: [u32; 7]) -> MembershipProfile {
        MembershipProfile {
            change_per_million: 1_000_000,
            min_voters: 2,
            max_voters: 4,
            max_learners: 1,
            extra_ids: 2,
            weights,
            retire_max_delay: 0,
        }
    }

    #[test]
    fn a_replacement_adds_promotes_then_removes() {
        let mut rng = SimRng::new(1);
        let mut operator = Operator::new(profile([0, 0, 0, 0, 0, 0, 1]), 3);
        let mut membership = Membership::new([1, 2, 3], []);
        let add = operator.next_change(1, &membership, &[], &mut rng).expect("a change");
        assert_eq!((add.change.kind, add.change.node, add.start), (ConfChangeKind::AddLearner, 4, Some(4)));
        operator.started(4);
        operator.proposed(&add.change);
        membership = membership.apply(&add.change).unwrap();
        let promote = operator.next_change(1, &membership, &[4], &mut rng).expect("a change");
        assert_eq!((promote.change.kind, promote.change.node), (ConfChangeKind::AddVoter, 4));
        membership = membership.apply(&promote.change).unwrap();
        let remove = operator.next_change(1, &membership, &[4], &mut rng).expect("a change");
        assert_eq!(remove.change.kind, ConfChangeKind::RemoveNode);
        operator.proposed(&remove.change);
        let gone = remove.change.node;
        assert!(operator.is_removing(gone));
        let after = membership.apply(&remove.change).unwrap();
        // Not retired before the removal is committed, then retired.
        assert!(operator.due_retirements(5, Some(&membership), &|_| false, &mut rng).is_empty());
        assert_eq!(operator.due_retirements(6, Some(&after), &|_| false, &mut rng), vec![gone]);
    }

    #[test]
    fn bounds_are_kept_and_ids_are_never_reused() {
        let mut rng = SimRng::new(2);
        let mut operator = Operator::new(profile([1, 1, 1, 1, 1, 1, 1]), 3);
        let mut membership = Membership::new([1, 2, 3], []);
        let mut spares = Vec::new();
        let mut ever_removed = BTreeSet::new();
        for _ in 0..200 {
            let leader = *membership.voters.iter().next().unwrap();
            let Some(plan) = operator.next_change(leader, &membership, &spares, &mut rng) else {
                continue;
            };
            if let Some(id) = plan.start {
                operator.started(id);
                spares.push(id);
            }
            if plan.change.kind != ConfChangeKind::RemoveNode {
                assert!(!ever_removed.contains(&plan.change.node), "{plan:?} re-adds a removed node");
            }
            let Ok(next) = membership.apply(&plan.change) else { continue };
            operator.proposed(&plan.change);
            if plan.change.kind == ConfChangeKind::RemoveNode {
                ever_removed.insert(plan.change.node);
            }
            membership = next;
            assert!((1..=5).contains(&membership.voters.len()), "{membership:?}");
            assert!(membership.learners.len() <= 1);
            assert!(membership.members().all(|id| id <= 5));
        }
    }
}
