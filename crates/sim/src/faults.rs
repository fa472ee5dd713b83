//! What goes wrong in a run and when: the per-seed fault profile and the scheduler that
//! turns it into crashes, restarts, partitions and heals.
//!
//! Each seed draws its own profile (how lossy and slow the network is, how slow the
//! disks, how often nodes crash and links are cut, how large messages may be, how often
//! membership changes and snapshots happen), so a range of seeds covers calm runs as well
//! as storms. The schedule aims at the situations where Raft implementations break:
//! leaders crashing right after they win, nodes restarting quickly after voting, old
//! leaders cut off while a new one takes writes, messages delayed by about an election
//! timeout, a leader cut off with the node it is adding, crashes in the middle of a
//! snapshot transfer.
//!
//! The set of nodes changes during a run (nodes join, removed ones are stopped), so every
//! choice of a victim is made among the nodes that are live at that moment.

use std::collections::BTreeMap;

use concord_raft::NodeId;

use crate::client::WorkloadProfile;
use crate::disk::DiskProfile;
use crate::membership::MembershipProfile;
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
    /// When a partition strikes (and does not isolate the leader), the chance (percent)
    /// it splits the live nodes into two halves rather than cutting off a minority.
    pub halves_percent: u64,
    /// Chance (percent) that a leader that just appended a membership change is cut off
    /// at once together with the node the change is about and just enough others to
    /// make a majority of the *old* voters with it (if no partition is active).
    pub conf_isolate_percent: u64,
    /// Chance (percent) that a follower that just asked the leader for a read index is
    /// crashed at once and brought back within a few steps, so that the leader's answer
    /// can reach its next process: aimed at a member's ReadIndex ids (issue 12's
    /// read-id-reuse). Drawn only with the concord-mvcc state machine, whose nodes number
    /// their reads as a member does (`Simulation::new`); 0 otherwise.
    pub read_crash_percent: u64,
    /// Chance (percent) that a leader that just appended a membership change is crashed
    /// at once (the entry may exist on it alone).
    pub conf_crash_percent: u64,
    /// Chance (percent) that a node that just staged a snapshot chunk that is not the
    /// last is crashed at once (its staged chunks are lost), and brought back quickly.
    pub transfer_crash_percent: u64,
    /// Chance (percent) that a node that just installed a snapshot is crashed before the
    /// install is durable.
    pub install_crash_percent: u64,
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

/// When nodes take snapshots of their state machine and compact their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotProfile {
    /// Chance per node per step of taking a snapshot at its applied index (0: never).
    pub per_million: u32,
    /// Chance (percent) that a snapshot keeps a tail of the log instead of compacting
    /// through its own index.
    pub keep_tail_percent: u64,
    /// Longest tail kept, in entries.
    pub keep_max: u64,
    /// Filler bytes added to each snapshot, so that sending one takes many chunks when
    /// `max_message_bytes` is small.
    pub padding: usize,
}

/// Everything random about a run that is fixed for the whole seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunProfile {
    pub network: NetworkProfile,
    pub disk: DiskProfile,
    /// One node (of the first voters) may be slow: its disk uses `slow_disk`, and the
    /// network adds `network.slow_extra_delay` to every message to or from it.
    pub slow_node: Option<NodeId>,
    pub slow_disk: DiskProfile,
    pub faults: FaultProfile,
    pub workload: WorkloadProfile,
    pub settings: RaftSettings,
    pub snapshots: SnapshotProfile,
    pub membership: MembershipProfile,
}

impl RunProfile {
    /// Draws a profile for a cluster of `nodes` first voters. `election_steps` is the
    /// base election timeout in steps, which sets the scale of "long" delays and outages.
    pub fn draw(rng: &mut SimRng, election_steps: u64, nodes: usize) -> Self {
        let network = NetworkProfile {
            drop_per_million: rng.pick(&[0, 5_000, 20_000, 60_000]),
            duplicate_per_million: rng.pick(&[0, 10_000, 50_000]),
            min_delay: 1,
            max_delay: rng.pick(&[2, 5, 10, 25]),
            spike_per_million: rng.pick(&[0, 5_000, 20_000, 60_000]),
            spike_max_delay: rng.pick(&[election_steps / 2, election_steps, 2 * election_steps]),
            slow_node: 0,
            slow_extra_delay: 0,
            fifo: false,
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
            halves_percent: rng.pick(&[0, 20, 50]),
            conf_isolate_percent: rng.pick(&[0, 20, 50]),
            conf_crash_percent: rng.pick(&[0, 10, 30]),
            transfer_crash_percent: rng.pick(&[0, 5, 20]),
            install_crash_percent: rng.pick(&[0, 10, 30]),
            read_crash_percent: 0,
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
        let snapshots = SnapshotProfile {
            per_million: rng.pick(&[0, 1_000, 3_000, 10_000]),
            keep_tail_percent: rng.pick(&[0, 30, 70]),
            keep_max: rng.pick(&[2, 10, 50]),
            padding: rng.pick(&[0, 0, 200, 1_500]),
        };
        let mut network = network;
        let slow_node = (rng.below(3) == 0).then(|| rng.between(1, nodes as u64));
        if slow_node.is_some() {
            network.slow_node = slow_node.unwrap_or(0);
            network.slow_extra_delay = rng.pick(&[5, 20, election_steps / 2]);
        }
        let slow_disk = DiskProfile {
            min_delay: disk.max_delay,
            max_delay: disk.max_delay * rng.pick(&[3, 5, 10]),
            stall_per_million: disk.stall_per_million.max(20_000),
            stall_max_delay: election_steps,
        };
        let membership = MembershipProfile::draw(rng, nodes, election_steps);
        RunProfile { network, disk, slow_node, slow_disk, faults, workload, settings, snapshots, membership }
    }

    /// The disk profile of node `id`.
    pub fn disk_of(&self, id: NodeId) -> &DiskProfile {
        if self.slow_node == Some(id) {
            &self.slow_disk
        } else {
            &self.disk
        }
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
    restart_at: BTreeMap<NodeId, u64>,
    crash_at: BTreeMap<NodeId, u64>,
    /// A new leader to cut off at the given step.
    isolate_at: Option<(NodeId, u64)>,
    heal_at: Option<u64>,
}

impl FaultScheduler {
    pub fn new(profile: FaultProfile) -> Self {
        FaultScheduler {
            profile,
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

    /// A follower just asked the leader for a read index: whether to crash it now (it
    /// comes back within a few steps). No draw when the fault is off, so that runs
    /// without it keep their random sequence.
    pub fn crash_after_read_request(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> bool {
        if self.profile.read_crash_percent == 0 || rng.below(100) >= self.profile.read_crash_percent {
            return false;
        }
        self.restart_at.insert(node, now + rng.between(1, 10));
        true
    }

    /// A leader's commit index just advanced: whether to cut it off right now (the
    /// returned action), healing later. `live` are the nodes running or able to restart.
    pub fn isolate_on_commit(
        &mut self,
        node: NodeId,
        now: u64,
        live: &[NodeId],
        rng: &mut SimRng,
    ) -> Option<FaultAction> {
        if self.heal_at.is_some() || rng.below(100) >= self.profile.commit_isolate_percent {
            return None;
        }
        self.heal_at = Some(now + self.partition_duration(rng));
        let others = live.iter().copied().filter(|&other| other != node).collect();
        Some(FaultAction::Split(vec![node], others))
    }

    /// A leader just appended a membership change about `subject`, changing a
    /// configuration whose voters were `old_voters`: whether to cut it off at once with
    /// `subject` and just enough other old voters to make a majority of the old voters
    /// (the returned action). If a quorum were counted against the old configuration, this
    /// side could commit the change while the other side, which never saw it, still
    /// holds a majority of the old voters and elects a leader of its own.
    pub fn isolate_on_conf_change(
        &mut self,
        leader: NodeId,
        subject: NodeId,
        old_voters: &[NodeId],
        now: u64,
        live: &[NodeId],
        rng: &mut SimRng,
    ) -> Option<FaultAction> {
        if self.heal_at.is_some() || rng.below(100) >= self.profile.conf_isolate_percent {
            return None;
        }
        let mut side = vec![leader];
        if subject != leader && live.contains(&subject) {
            side.push(subject);
        }
        let wanted = old_voters.len() / 2 + 1;
        let mut others: Vec<NodeId> =
            old_voters.iter().copied().filter(|v| !side.contains(v) && live.contains(v)).collect();
        shuffle(&mut others, rng);
        let have = side.iter().filter(|v| old_voters.contains(v)).count();
        side.extend(others.into_iter().take(wanted.saturating_sub(have + 1)));
        side.sort_unstable();
        let rest: Vec<NodeId> = live.iter().copied().filter(|n| !side.contains(n)).collect();
        if rest.is_empty() {
            return None;
        }
        self.heal_at = Some(now + self.partition_duration(rng));
        Some(FaultAction::Split(side, rest))
    }

    /// A leader just appended a membership change: whether to crash it now.
    pub fn crash_on_conf_change(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> bool {
        if rng.below(100) >= self.profile.conf_crash_percent {
            return false;
        }
        self.schedule_restart(node, now, rng);
        true
    }

    /// A node just staged a snapshot chunk with more to come: whether to crash it now
    /// (it comes back within a few steps).
    pub fn crash_mid_transfer(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> bool {
        if rng.below(100) >= self.profile.transfer_crash_percent {
            return false;
        }
        self.restart_at.insert(node, now + rng.between(1, 10));
        true
    }

    /// A node just installed a snapshot (not yet durable): whether to crash it now.
    pub fn crash_on_install(&mut self, node: NodeId, now: u64, rng: &mut SimRng) -> bool {
        if rng.below(100) >= self.profile.install_crash_percent {
            return false;
        }
        self.schedule_restart(node, now, rng);
        true
    }

    /// Forgets the scheduled faults of a node that was stopped for good.
    pub fn forget(&mut self, node: NodeId) {
        self.restart_at.remove(&node);
        self.crash_at.remove(&node);
        if self.isolate_at.is_some_and(|(isolated, _)| isolated == node) {
            self.isolate_at = None;
        }
    }

    /// The actions due at `now`. `up[i]` says whether node `i + 1` is up; `live` are the
    /// nodes running or able to restart (started, not stopped for good); `leader` is the
    /// leader of the highest term among the up nodes, if any.
    pub fn due(
        &mut self,
        now: u64,
        up: &[bool],
        live: &[NodeId],
        leader: Option<NodeId>,
        rng: &mut SimRng,
    ) -> Vec<FaultAction> {
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
        if rng.chance(self.profile.crash_per_million) && !live.is_empty() {
            let victim = match leader {
                Some(leader) if rng.below(100) < self.profile.leader_crash_percent => leader,
                _ => rng.pick(live),
            };
            if up[victim as usize - 1] {
                actions.push(self.crash(victim, now, rng));
            }
        }
        if let Some((node, at)) = self.isolate_at {
            if at <= now {
                self.isolate_at = None;
                if self.heal_at.is_none() {
                    let others = live.iter().copied().filter(|&other| other != node).collect();
                    actions.push(FaultAction::Split(vec![node], others));
                    self.heal_at = Some(now + self.partition_duration(rng));
                }
            }
        }
        if let Some(leader) = leader {
            if rng.chance(self.profile.transfer_per_million) && !live.is_empty() {
                let to = rng.pick(live);
                if to != leader {
                    actions.push(FaultAction::Transfer { from: leader, to });
                }
            }
        }
        if self.heal_at.is_none() && live.len() > 1 && rng.chance(self.profile.partition_per_million) {
            actions.push(self.partition(leader, live, rng));
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

    fn partition(&mut self, leader: Option<NodeId>, live: &[NodeId], rng: &mut SimRng) -> FaultAction {
        let all = live.to_vec();
        // The smaller side: the leader alone, a random minority, or half of the nodes.
        let minority: Vec<NodeId> = match leader {
            Some(leader) if rng.below(100) < self.profile.isolate_leader_percent => vec![leader],
            _ => {
                let size = if rng.below(100) < self.profile.halves_percent {
                    all.len() as u64 / 2
                } else {
                    rng.between(1, ((all.len() as u64).saturating_sub(1) / 2).max(1))
                };
                let mut shuffled = all.clone();
                shuffle(&mut shuffled, rng);
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
        self.profile.conf_isolate_percent = 0;
        self.profile.conf_crash_percent = 0;
        self.profile.transfer_crash_percent = 0;
        self.profile.install_crash_percent = 0;
        self.profile.read_crash_percent = 0;
    }
}

/// Fisher-Yates with the run's generator.
fn shuffle(items: &mut [NodeId], rng: &mut SimRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}
