//! How a node is configured: who it is, who its peers are, its timing in ticks, and the
//! limits that bound every queue and message.
//!
//! Times are in ticks, not milliseconds: the application decides how long a tick is.

use crate::types::NodeId;

/// Switches that plant known bugs, so the simulator can show its checks catch them.
/// They can be set only in a build with `--cfg concord_planted_bugs` in RUSTFLAGS (the
/// `bugs` field of [`Config`] exists only then); otherwise every switch reads as `false`
/// and the compiler removes the planted paths. A cfg, not a cargo feature: features unify
/// across a workspace build, a cfg reaches only the build that sets it, and the `concord`
/// binary refuses to compile under it. See [`crate::PLANTED_BUGS_COMPILED`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Commit by counting replicas of entries from earlier terms (Raft paper, Figure 8).
    pub figure8: bool,
    /// Hand out the hard state without the vote, so a restarted node forgets it voted.
    pub forget_vote: bool,
    /// A follower moves its commit index to the leader's even past the prefix it has
    /// verified to match.
    pub commit_past_match: bool,
    /// Serve ReadIndex without the heartbeat round that confirms leadership.
    pub stale_read: bool,
    /// While a membership change is uncommitted, commit with the quorum size of the
    /// previous configuration counted over the members of the new one.
    pub config_quorum: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// This node. Never `NO_NODE`.
    pub id: NodeId,
    /// The voters the cluster was bootstrapped with, this node included. Used only until
    /// the log or a snapshot says otherwise; empty for a node joining an existing cluster
    /// (it learns the membership from the leader).
    pub voters: Vec<NodeId>,
    /// Learners the cluster was bootstrapped with (usually none).
    pub learners: Vec<NodeId>,
    /// A follower that hears nothing from a leader for a randomized timeout in
    /// `[election_tick, 2 * election_tick)` campaigns.
    pub election_tick: u32,
    /// A leader sends heartbeats every `heartbeat_tick` ticks. Must be below `election_tick`.
    pub heartbeat_tick: u32,
    /// Probe with a pre-vote before raising the term, so a node that was cut off cannot
    /// depose a healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down, and a
    /// node that hears from a live leader refuses to vote.
    pub check_quorum: bool,
    /// Byte budget of the entries in one AppendEntries (at least one entry is always sent).
    pub max_message_bytes: u64,
    /// Most AppendEntries in flight to one follower before waiting for acknowledgements.
    pub max_inflight_messages: usize,
    /// Most entry bytes in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Largest single proposal payload accepted.
    pub max_proposal_bytes: u64,
    /// Largest entry payload accepted from a peer: what this node's storage can hold in
    /// one record. At least `max_proposal_bytes`, so that a node never proposes what it
    /// would refuse to store; members with different proposal limits still accept each
    /// other's entries up to here.
    pub max_entry_bytes: u64,
    /// Most proposed entries a leader keeps uncommitted before refusing new ones.
    pub max_uncommitted_entries: u64,
    /// Most ReadIndex requests waiting at a leader (or at a follower for the leader's
    /// answer) at once.
    pub max_pending_reads: usize,
    /// Seed of the election-timeout jitter. Give each node a different one.
    pub seed: u64,
    #[cfg(concord_planted_bugs)]
    pub bugs: PlantedBugs,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id must not be 0")]
    ZeroId,
    #[error("node {0} is not among the bootstrap voters or learners")]
    NotAMember(NodeId),
    #[error("member ids must be distinct and non-zero")]
    BadVoters,
    #[error("heartbeat_tick ({heartbeat}) must be at least 1 and below election_tick ({election})")]
    BadTicks { heartbeat: u32, election: u32 },
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("max_proposal_bytes ({proposal}) is above max_entry_bytes ({entry}): this node would propose entries it cannot store")]
    ProposalAboveEntryLimit { proposal: u64, entry: u64 },
}

impl Config {
    /// A configuration with the defaults etcd uses (election 10 ticks, heartbeat 1 tick,
    /// pre-vote and check-quorum on).
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            learners: Vec::new(),
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_message_bytes: 1024 * 1024,
            max_inflight_messages: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_proposal_bytes: 8 * 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
            max_uncommitted_entries: 100_000,
            max_pending_reads: 4096,
            seed: id,
            #[cfg(concord_planted_bugs)]
            bugs: PlantedBugs::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        let mut sorted: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() + self.learners.len() || sorted.contains(&0) {
            return Err(ConfigError::BadVoters);
        }
        // A joining node has no bootstrap membership; otherwise it must be in it.
        if !self.voters.is_empty() && !sorted.contains(&self.id) {
            return Err(ConfigError::NotAMember(self.id));
        }
        if self.heartbeat_tick == 0 || self.heartbeat_tick >= self.election_tick {
            return Err(ConfigError::BadTicks { heartbeat: self.heartbeat_tick, election: self.election_tick });
        }
        for (name, value) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_inflight_messages", self.max_inflight_messages as u64),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_proposal_bytes", self.max_proposal_bytes),
            ("max_uncommitted_entries", self.max_uncommitted_entries),
            ("max_pending_reads", self.max_pending_reads as u64),
            ("max_entry_bytes", self.max_entry_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        if self.max_proposal_bytes > self.max_entry_bytes {
            return Err(ConfigError::ProposalAboveEntryLimit {
                proposal: self.max_proposal_bytes,
                entry: self.max_entry_bytes,
            });
        }
        Ok(())
    }

    #[cfg(concord_planted_bugs)]
    pub(crate) fn bugs(&self) -> PlantedBugs {
        self.bugs
    }

    #[cfg(not(concord_planted_bugs))]
    pub(crate) fn bugs(&self) -> PlantedBugs {
        PlantedBugs::default()
    }
}
