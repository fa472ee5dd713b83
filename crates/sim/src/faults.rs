//! What goes wrong in a run and when: the per-seed fault profile and the scheduler that
//! turns it into crashes, restarts, partitions and heals.
//!
//! Each seed draws its own profile (how lossy and slow the network is, how slow the
//! disks, how often nodes crash and links are cut, how large messages may be), so a range
//! of seeds covers calm runs as well as storms. The schedule aims at the situations where
//! Raft implementations break: leaders crashing right after they win, nodes restarting
//! quickly after voting, old leaders cut off while a new one takes writes, and messages
//! delayed by about an election timeout.

use std::collections::BTreeMap;

use concord_raft::NodeId;

use crate::client::WorkloadProfile;
use crate::disk::DiskProfile;
use crate::network::NetworkProfile;
use crate::rng::SimRng;

/// How often each kind of fault strikes. Rates are per simulation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultProfile {
    pub crash_per_million: u32,
    /// When a crash strikes, the chance (percent) it hits the current leader.
    pub leader_crash_percent: u64,
    /// Chance (percent) that a node that just became leader is crashed soon after,
    /// within `new_leader_crash_within` steps.
    pub new_leader_crash_percent: u64,
    pub new_leader_crash_within: u64,
    /// Chance (percent) that a node that just became leader is cut off from everyone
    /// within `new_leader_isolate_within` steps, if no partition is active: its first
    /// entries then exist on it alone.
    pub new_leader_isolate_percent: u64,
    pub new_leader_isolate_within: u64,
    /// Chance (percent) that a leader whose commit index just advanced is crashed at once
    /// if its own disk still has writes in flight: whatever it had not persisted is lost
    /// right after it decided something was committed.
    pub commit_crash_percent: u64,
    /// Chance (percent) that a leader whose commit index just advanced is cut off from
    /// everyone at once (if no partition is active): the messages it already sent are
    /// lost with it, so followers hold only what it had sent before.
    pub commit_isolate_percent: u64,
    /// Chance (percent) that a node that just sent a vote is crashed at once and brought
    /// back within a few steps: it must still remember that vote.
    pub vote_crash_percent: u64,
    /// How long a crashed node stays down, inclusive range of steps.
    pub downtime_min: u64,
    pub downtime_max: u64,
    /// Chance (percent) of a quick bounce (down for a few steps only) instead.
    pub bounce_percent: u64,
    pub partition_per_million: u32,
    /// Chance per step that the leader is asked to hand leadership to another node.
    pub transfer_per_million: u32,
    pub partition_min: u64,
    pub partition_max: u64,
    /// Chance (percent) that a partition cuts links in one direction only.
    pub asymmetric_percent: u64,
    /// When a partition strikes, the chance (percent) it isolates the current leader.
    pub isolate_leader_percent: u64,
}

/// The settings the cores run with. Small limits force many small AppendEntries; the
/// switches cover the configurations an operator may choose, not only the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    pub max_message_bytes: u64,
    pub max_inflight_messages: usize,
    pub heartbeat_tick: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
}

/// Everything random about a run that is fixed for the whole seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunProfile {
    pub network: NetworkProfile,
    pub disk: DiskProfile,
    pub faults: FaultProfile,
    pub workload: WorkloadProfile,
    pub settings: RaftSettings,
}

impl RunProfile {
    /// Draws a profile. `election_steps` is the base election timeout in steps, which
    /// sets the scale of "long" delays and outages.
    pub fn draw(rng: &mut SimRng, election_steps: u64) -> Self {
        let network = NetworkProfile {
            drop_per_million: rng.pick(&[0, 5_000, 20_000, 60_000]),
            duplicate_per_million: rng.pick(&[0, 10_000, 50_000]),
            min_delay: 1,
            max_delay: rng.pick(&[2, 5, 10, 25]),
            spike_per_million: rng.pick(&[0, 5_000, 20_000, 60_000]),
            spike_max_delay: rng.pick(&[election_steps / 2, election_steps, 2 * election_steps]),
        };
        let disk = DiskProfile {
            min_delay: 0,
            max_delay: rng.pick(&[1, 4, 12, 30]),
            stall_per_million: rng.pick(&[0, 10_000, 50_000]),
            stall_max_delay: rng.pick(&[election_steps / 4, election_steps / 2, election_steps]),
        };
        let faults = FaultProfile {
            crash_per_million: rng.pick(&[0, 500, 1_500, 4_000]),
            leader_crash_percent: rng.pick(&[30, 60, 90]),
            new_leader_crash_percent: rng.pick(&[0, 10, 30, 60]),
            new_leader_crash_within: rng.pick(&[5, 20, election_steps / 2]),
            new_leader_isolate_percent: rng.pick(&[0, 30, 60, 90]),
            new_leader_isolate_within: rng.pick(&[1, 3, 10]),
            commit_crash_percent: rng.pick(&[0, 5, 20, 50]),
            commit_isolate_percent: rng.pick(&[0, 5, 20, 50]),
            vote_crash_percent: rng.pick(&[0, 10, 30]),
            downtime_min: 1,
            downtime_max: rng.pick(&[election_steps, 3 * election_steps]),
            bounce_percent: rng.pick(&[10, 40, 70]),
            partition_per_million: rng.pick(&[0, 1_000, 2_000, 4_000]),
            transfer_per_million: rng.pick(&[0, 0, 500, 2_000]),
            partition_min: election_steps / 5,
            partition_max: rng.pick(&[election_steps, 3 * election_steps, 6 * election_steps]),
            asymmetric_percent: rng.pick(&[0, 20, 50]),
            isolate_leader_percent: rng.pick(&[50, 90]),
        };
        let settings = RaftSettings {
            max_message_bytes: rng.pick(&[1 << 20, 256, 64, 64]),
            max_inflight_messages: rng.pick(&[256, 256, 8, 2]),
            heartbeat_tick: rng.pick(&[1, 1, 2, 3]),
            pre_vote: rng.below(4) != 0,
            check_quorum: rng.below(4) != 0,
        };
        let workload = WorkloadProfile {
            clients: rng.between(3, 5) as usize,
            readers: rng.pick(&[0, 1, 2, 2]),
            keys: rng.pick(&[1, 1, 2, 3, 4]),
            timeout: rng.pick(&[election_steps / 2, election_steps / 2, election_steps, 2 * election_steps]),
            stickiness_percent: rng.pick(&[50, 90]),
            ..WorkloadProfile::DEFAULT
        };
        RunProfile { network, disk, faults, workload, settings }
    }
}

/// A fault to carry out now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    Crash(NodeId),
    Restart(NodeId),
    /// Cut both directions between the two groups.
    Split(Vec<NodeId>, Vec<NodeId>),
    /// Cut the links from each `from` node to each `to` node, one direction only.
    OneWay {
        from: Vec<NodeId>,
        to: Vec<NodeId>,
    },
    Heal,
    /// Ask the leader `from` to hand leadership to `to`.
    Transfer {
        from: NodeId,
        to: NodeId,
    },
}

/// Turns a [`FaultProfile`] into timed actions.
#[derive(Debug)]
pub struct FaultScheduler {
    profile: FaultProfile,
    node_count: usize,
    restart_at: BTreeMap<NodeId, u64>,
    crash_at: BTreeMap<NodeId, u64>,
    /// A new leader to cut off at the given step.
    isolate_at: Option<(NodeId, u64)>,
    heal_at: Option<u64>,
}

impl FaultScheduler {
    pub fn new(profile: FaultProfile, node_count: usize) -> Self {
        FaultScheduler {
            profile,
            node_count,
            restart_at: BTreeMap::new(),
            crash_at: BTreeMap::new(),
            isolate_at: None,
            heal_at: None,
        }
    }

    /// A node was just seen to become leader: maybe crash it soon.
    pub fn on_new_leader(&mut self, node: NodeId, now: u64, rng: &mut SimRng) {
        if rng.below(100) < self.profile.new_leader_crash_percent {
            let at = now + rng.between(0, self.profile.new_leader_crash_within);
            self.crash_at.entry(node).or_insert(at);
        }
        if self.heal_at.is_none()
            && self.isolate_at.is_none()
            && rng.below(100) < self.profile.new_leader_isolate_percent
        {
            let at = now + rng.between(0, self.profile.new_leader_isolate_within);
            self.isolate_at = Some((node, at));
        }
    }

    /// A leader's commit index just advanced while its disk has writes in flight:
    /// whether to crash it right now.
    pub fn crash_on_commit(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> bool {
        if rng.below(100) >= self.profile.commit_crash_percent {
            return false;
        }
        self.schedule_restart(node, now, rng);
        true
    }

    /// A node just sent a vote: whether to crash it now (it comes back within a few
    /// steps).
    pub fn crash_after_vote(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> bool {
        if rng.below(100) >= self.profile.vote_crash_percent {
            return false;
        }
        self.restart_at.insert(node, now + rng.between(1, 10));
        true
    }

    /// A leader's commit index just advanced: whether to cut it off right now (the
    /// returned action), healing later.
    pub fn isolate_on_commit(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> Option<FaultAction> {
        if self.heal_at.is_some() || rng.below(100) >= self.profile.commit_isolate_percent {
            return None;
        }
        self.heal_at = Some(now + self.partition_duration(rng));
        let others = (1..=self.node_count as NodeId).filter(|&other| other != node).collect();
        Some(FaultAction::Split(vec![node], others))
    }

    /// The actions due at `now`. `up[i]` says whether node `i + 1` is up; `leader` is
    /// the leader of the highest term among the up nodes, if any.
    pub fn due(&mut self, now: u64, up: &[bool], leader: Option<NodeId>, rng: &mut SimRng) -> Vec<FaultAction> {
        let mut actions = Vec::new();
        let due_restarts: Vec<NodeId> =
            self.restart_at.iter().filter(|&(_, &at)| at <= now).map(|(&node, _)| node).collect();
        for node in due_restarts {
            self.restart_at.remove(&node);
            actions.push(FaultAction::Restart(node));
        }
        if self.heal_at.is_some_and(|at| at <= now) {
            self.heal_at = None;
            actions.push(FaultAction::Heal);
        }
        let due_crashes: Vec<NodeId> =
            self.crash_at.iter().filter(|&(_, &at)| at <= now).map(|(&node, _)| node).collect();
        for node in due_crashes {
            self.crash_at.remove(&node);
            if up[node as usize - 1] {
                actions.push(self.crash(node, now, rng));
            }
        }
        if rng.chance(self.profile.crash_per_million) {
            let victim = match leader {
                Some(leader) if rng.below(100) < self.profile.leader_crash_percent => leader,
                _ => rng.between(1, self.node_count as u64),
            };
            if up[victim as usize - 1] {
                actions.push(self.crash(victim, now, rng));
            }
        }
        if let Some((node, at)) = self.isolate_at {
            if at <= now {
                self.isolate_at = None;
                if self.heal_at.is_none() {
                    let others = (1..=self.node_count as NodeId).filter(|&other| other != node).collect();
                    actions.push(FaultAction::Split(vec![node], others));
                    self.heal_at = Some(now + self.partition_duration(rng));
                }
            }
        }
        if let Some(leader) = leader {
            if rng.chance(self.profile.transfer_per_million) {
                let to = rng.between(1, self.node_count as u64);
                if to != leader {
                    actions.push(FaultAction::Transfer { from: leader, to });
                }
            }
        }
        if self.heal_at.is_none() && rng.chance(self.profile.partition_per_million) {
            actions.push(self.partition(leader, rng));
            self.heal_at = Some(now + self.partition_duration(rng));
        }
        actions
    }

    fn partition_duration(&self, rng: &mut SimRng) -> u64 {
        rng.between(self.profile.partition_min, self.profile.partition_max)
    }

    fn crash(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> FaultAction {
        self.schedule_restart(node, now, rng);
        FaultAction::Crash(node)
    }

    fn schedule_restart(&mut self, node: NodeId, now: u64, rng: &mut SimRng) {
        let downtime = if rng.below(100) < self.profile.bounce_percent {
            rng.between(1, 10)
        } else {
            rng.between(self.profile.downtime_min, self.profile.downtime_max)
        };
        self.restart_at.insert(node, now + downtime);
    }

    fn partition(&mut self, leader: Option<NodeId>, rng: &mut SimRng) -> FaultAction {
        let all: Vec<NodeId> = (1..=self.node_count as NodeId).collect();
        // The smaller side: the leader alone, or a random minority.
        let minority: Vec<NodeId> = match leader {
            Some(leader) if rng.below(100) < self.profile.isolate_leader_percent => vec![leader],
            _ => {
                let size = rng.between(1, (self.node_count as u64 - 1) / 2);
                let mut shuffled = all.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.below(i as u64 + 1) as usize);
                }
                shuffled.truncate(size as usize);
                shuffled.sort_unstable();
                shuffled
            }
        };
        let majority: Vec<NodeId> = all.into_iter().filter(|node| !minority.contains(node)).collect();
        if rng.below(100) < self.profile.asymmetric_percent {
            if rng.below(2) == 0 {
                FaultAction::OneWay { from: minority, to: majority }
            } else {
                FaultAction::OneWay { from: majority, to: minority }
            }
        } else {
            FaultAction::Split(minority, majority)
        }
    }

    /// Forgets every pending fault (the run is winding down).
    pub fn stop(&mut self) {
        self.restart_at.clear();
        self.crash_at.clear();
        self.isolate_at = None;
        self.heal_at = None;
        self.profile.crash_per_million = 0;
        self.profile.partition_per_million = 0;
        self.profile.transfer_per_million = 0;
        self.profile.new_leader_crash_percent = 0;
        self.profile.new_leader_isolate_percent = 0;
        self.profile.commit_crash_percent = 0;
        self.profile.commit_isolate_percent = 0;
        self.profile.vote_crash_percent = 0;
    }
}
