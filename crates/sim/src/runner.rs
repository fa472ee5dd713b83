//! Runs one seed: builds the cluster, drives it step by step through faults, membership
//! changes and snapshots, checks safety after every step, then heals everything and
//! checks liveness, convergence and the clients' history.
//!
//! One step, in a fixed order: inject due faults (and let the operator ask for a
//! membership change, and stop removed nodes); tick the nodes whose turn it is; deliver
//! due messages; complete due disk writes; handle Readies (stage and install snapshots,
//! persist, send, apply, answer reads); let nodes take snapshots and compact; let clients
//! time out and start operations; compare the logs. After every single input to a node,
//! its role, term and commit index are compared with what was last seen, so a leader
//! that exists for a moment is still checked.
//!
//! Node ids are slots: `1..=--nodes` are the first voters; the ids after them are handed
//! out in order to fresh nodes that join (empty disk, no membership). A node removed
//! from the cluster keeps running until the run stops it for good ("retired"); a retired
//! node is never restarted, but its durable log stays in the Log Matching comparison.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use concord_raft::{Config, EntryKind, LogStore, Message, MessageBody, NodeId, Role};

use crate::client::Workload;
use crate::command::Command;
use crate::disk::DiskProfile;
use crate::faults::{FaultAction, FaultScheduler, RunProfile};
use crate::invariants::{
    check_commit_quorum, check_persist_before_send, describe_membership, CommitLimit, Property, SafetyChecker,
    Violation,
};
use crate::linearizability::find_failure;
use crate::liveness::LivenessProbe;
use crate::membership::Operator;
use crate::network::{Network, NetworkProfile};
use crate::node::SimNode;
use crate::options::SimOptions;
use crate::outcome::{SeedOutcome, SeedStats};
use crate::rng::SimRng;
use crate::state_machine::{StateMachine, StateMachineKind};
use crate::trace::{DropReason, Event, MessageSummary, Trace};
use crate::watchers::{History, SimWatcher, MAX_WATCHERS_PER_NODE};
use concord_member::{ReadIds, RequestIds};

/// Simulation steps per logical clock tick of a node.
pub const STEPS_PER_TICK: u64 = 10;
/// The cores' `election_tick` (their default).
pub const ELECTION_TICKS: u64 = 10;
/// Base election timeout in steps.
pub const ELECTION_STEPS: u64 = ELECTION_TICKS * STEPS_PER_TICK;
/// The liveness phase gives the healed cluster this many election timeouts to elect a
/// leader, commit a fresh proposal, and bring every member up to date. Most seeds need
/// one or two. The longest are seeds with pre-vote off whose membership changes left
/// only one or two nodes able to win: every candidacy of a node that cannot win raises
/// the term of the others and restarts their election timers (as in etcd), so the
/// electable nodes time out first only now and then (docs/testing.md has the figures).
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 30;
/// With the concord-mvcc state machine: the chance, in percent, that a node with entries
/// handed to its apply applies some of them in a step, and the most it applies at once.
/// Reads, writes and faults then happen while entries are committed but not applied, as
/// in a member whose apply task lags its Raft loop.
const APPLY_PERCENT_PER_STEP: u64 = 50;
const MAX_APPLY_BATCH: u64 = 16;
/// With the concord-mvcc state machine: the chance, in percent, that a client starts a
/// watch on an up node with room for one in a step, and that a live batch of events is
/// lost for a watcher (see `crate::watchers`).
const WATCH_START_PERCENT_PER_STEP: u64 = 2;
const LIVE_BATCH_LOST_PERCENT: u64 = 10;

/// Runs `seed` with `options`. Deterministic: the same arguments give the same outcome.
/// A panic (of the core or of the simulator) is reported as a violation of its own.
pub fn run_seed(options: &SimOptions, seed: u64) -> SeedOutcome {
    assert!(
        SimOptions::ALLOWED_NODE_COUNTS.contains(&options.nodes),
        "a cluster has 3, 5 or 7 nodes, not {}",
        options.nodes
    );
    if let Err(invalid) = options.validate() {
        panic!("{invalid}");
    }
    let mut simulation = Simulation::new(options, seed, None);
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| simulation.run())) {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        simulation.trace.record(simulation.now, Event::Note(format!("PANIC: {message}")));
        let mut stats = simulation.stats;
        stats.steps = simulation.now;
        return SeedOutcome {
            seed,
            violation: Some(Violation::new(Property::Panic, format!("at step {}: {message}", simulation.now))),
            trace: simulation.trace.lines(),
            stats,
            replay: options.replay_command(seed),
        };
    }
    let mut trace = simulation.trace.lines();
    if let Some(step) = simulation.focus_step {
        // The history is checked at the end of the run, so the last events are not the
        // interesting ones: replay the seed (it is deterministic) and keep the events up
        // to the step at which the history first fails.
        let mut replay = Simulation::new(options, seed, Some(step));
        replay.run();
        if let Some(lines) = replay.trace_at_stop {
            trace = lines;
        }
    }
    let mut stats = simulation.stats;
    stats.elections = simulation.checker.elections();
    stats.commits = simulation.checker.committed_len();
    stats.conf_changes = simulation.checker.conf_changes();
    stats.reads = simulation.workload.stats.reads;
    stats.writes = simulation.workload.stats.writes;
    stats.failed_ops = simulation.workload.stats.failed;
    stats.unknown_ops = simulation.workload.stats.unknown;
    stats.max_history = simulation.workload.history.len() as u64;
    SeedOutcome { seed, violation: simulation.violation, trace, stats, replay: options.replay_command(seed) }
}

struct Simulation {
    options: SimOptions,
    rng: SimRng,
    /// When the concord-mvcc state machine's apply runs, and its watchers (a generator of
    /// their own, so that the rest of a seed's run is drawn as before).
    apply_rng: SimRng,
    /// Watchers on the nodes (`--state-machine mvcc`), and the history they are checked
    /// against (`crate::watchers`).
    watchers: Vec<SimWatcher>,
    history: History,
    now: u64,
    /// `nodes[i]` is node `i + 1`, for every id the run may use.
    nodes: Vec<SimNode>,
    network: Network,
    profile: RunProfile,
    network_profile: NetworkProfile,
    /// Faults stopped: disks are fast (the liveness phase).
    calm: bool,
    faults: FaultScheduler,
    operator: Operator,
    workload: Workload,
    checker: SafetyChecker,
    liveness: LivenessProbe,
    trace: Trace,
    stats: SeedStats,
    violation: Option<Violation>,
    /// For a linearizability violation: the step of the last operation it names.
    focus_step: Option<u64>,
    /// Stop after this step and keep the trace as it is then (a replay for the report).
    stop_at: Option<u64>,
    trace_at_stop: Option<Vec<String>>,
}

impl Simulation {
    fn new(options: &SimOptions, seed: u64, stop_at: Option<u64>) -> Self {
        let mut rng = SimRng::new(seed);
        let mut profile = RunProfile::draw(&mut rng, ELECTION_STEPS, options.nodes);
        if options.state_machine == StateMachineKind::Mvcc {
            // From a generator of its own, so that the run's sequence stays as it was.
            let mut aimed = SimRng::new(seed ^ 0x7265_6164_6964_7321);
            profile.faults.read_crash_percent = aimed.pick(&[0, 10, 30, 60]);
        }
        let operator = Operator::new(profile.membership, options.nodes);
        let first_voters = options.nodes as NodeId;
        let mut simulation = Simulation {
            options: options.clone(),
            nodes: (1..=operator.last_id())
                .map(|id| SimNode::new(id, id <= first_voters, options.state_machine))
                .collect(),
            network: Network::default(),
            network_profile: profile.network,
            calm: false,
            faults: FaultScheduler::new(profile.faults),
            operator,
            workload: Workload::new(profile.workload, options.state_machine),
            checker: SafetyChecker::new(1..=first_voters),
            liveness: LivenessProbe::default(),
            trace: Trace::new(options.verbose),
            stats: SeedStats::default(),
            violation: None,
            focus_step: None,
            stop_at,
            trace_at_stop: None,
            profile,
            rng,
            apply_rng: SimRng::new(seed ^ 0x6170_706c_7969_6e67),
            watchers: Vec::new(),
            history: History::default(),
            now: 0,
        };
        if options.verbose {
            simulation.trace.record(0, Event::Note(format!("profile: {profile:?}")));
        }
        for id in 1..=first_voters {
            simulation.start_node(id);
        }
        simulation
    }

    fn run(&mut self) {
        while self.now < self.options.steps && !self.stopped() {
            self.step();
            self.now += 1;
        }
        if !self.stopped() {
            self.check_liveness();
        }
        self.stats.steps = self.now;
        if !self.stopped() {
            self.check_history();
        }
    }

    /// Whether the run ends here: a violation was found, or the replay reached its step.
    fn stopped(&self) -> bool {
        self.violation.is_some() || self.trace_at_stop.is_some()
    }

    fn step(&mut self) {
        self.run_step();
        if self.stop_at == Some(self.now) {
            self.trace
                .record(self.now, Event::Note("<- the last operation named by the violation happened here".into()));
            self.trace_at_stop = Some(self.trace.lines());
        }
    }

    fn run_step(&mut self) {
        let phases: [fn(&mut Self); 9] = [
            Self::inject_faults,
            Self::tick_nodes,
            Self::deliver_messages,
            Self::complete_disk_writes,
            Self::handle_readies,
            Self::apply_queued,
            Self::take_snapshots,
            Self::run_clients,
            Self::check_log_matching,
        ];
        for phase in phases {
            if self.violation.is_some() {
                return;
            }
            phase(self);
        }
    }

    fn node_index(id: NodeId) -> usize {
        id as usize - 1
    }

    fn fail(&mut self, violation: Violation) {
        if self.violation.is_none() {
            self.trace.record(self.now, Event::Note(format!("VIOLATION {violation}")));
            self.violation = Some(violation);
        }
    }

    fn check(&mut self, result: Result<(), Violation>) {
        if let Err(violation) = result {
            self.fail(violation);
        }
    }

    /// Nodes that run or may run again: started, and not stopped for good.
    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|node| node.started && !node.retired).map(|node| node.id).collect()
    }

    fn disk_profile_of(&self, id: NodeId) -> DiskProfile {
        if self.calm {
            DiskProfile::FAST
        } else {
            *self.profile.disk_of(id)
        }
    }

    fn config_for(&mut self, id: NodeId) -> Config {
        // The first voters bootstrap with each other; a node that joins later starts
        // with no membership and learns it from the leader.
        let voters = if self.nodes[Self::node_index(id)].bootstrap {
            (1..=self.options.nodes as NodeId).collect()
        } else {
            Vec::new()
        };
        let mut config = Config::new(id, voters);
        config.seed = self.rng.next_u64();
        let settings = self.profile.settings;
        config.max_message_bytes = settings.max_message_bytes;
        config.max_inflight_messages = settings.max_inflight_messages;
        config.heartbeat_tick = settings.heartbeat_tick;
        config.pre_vote = settings.pre_vote;
        config.check_quorum = settings.check_quorum;
        #[cfg(concord_planted_bugs)]
        if let Some(bug) = self.options.bug {
            config.bugs = bug.switches();
        }
        config
    }

    fn start_node(&mut self, id: NodeId) {
        let config = self.config_for(id);
        let phase = self.rng.below(STEPS_PER_TICK);
        let node = &mut self.nodes[Self::node_index(id)];
        let restored = node.start(config, phase);
        if self.options.state_machine == StateMachineKind::Mvcc {
            // A new process numbers its reads and writes from random starts, as a member
            // does.
            node.read_ids = ReadIds::new(self.rng.next_u64());
            node.request_ids = RequestIds::new(self.apply_rng.next_u64());
        }
        #[cfg(concord_planted_bugs)]
        match self.options.bug {
            // A fresh process's waiters (the last ones went with the crash).
            Some(crate::options::PlantedBug::WaiterMixup) => node.waiters.plant_mixup(),
            Some(crate::options::PlantedBug::ReadIdReuse) => node.read_ids = ReadIds::planted_reuse(),
            Some(crate::options::PlantedBug::AckBeforeApply) => node.gate.plant_early_release(),
            Some(crate::options::PlantedBug::RequestIdReuse) => node.request_ids = RequestIds::planted_restart(),
            _ => {}
        }
        let raft = node.raft().expect("just started");
        let event = Event::Restart {
            node: id,
            term: raft.term(),
            last_index: raft.last_index(),
            commit: raft.commit_index(),
            snapshot: raft.store().snapshot_meta().index,
        };
        self.trace.record(self.now, event);
        match restored {
            Ok(Some((index, digest))) => {
                self.stats.snapshot_restores += 1;
                let result = self.checker.on_state(id, index, digest, "restores");
                self.check(result);
            }
            Ok(None) => {}
            Err(error) => self.fail(Violation::new(Property::SnapshotIntegrity, error)),
        }
        self.observe(id);
    }

    /// The leader of the highest term among the up nodes, if any.
    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| node.raft())
            .filter(|raft| raft.role() == Role::Leader)
            .max_by_key(|raft| raft.term())
            .map(|raft| raft.id())
    }

    /// Compares a node's role, term, leader and commit index with what was last seen, and
    /// runs the checks that hang on a change.
    fn observe(&mut self, id: NodeId) {
        let index = Self::node_index(id);
        let seen = self.nodes[index].observe();
        let before = self.nodes[index].observed;
        if seen == before {
            return;
        }
        let Some(raft) = self.nodes[index].raft() else {
            return;
        };
        if (seen.role, seen.term, seen.leader) != (before.role, before.term, before.leader) {
            self.trace
                .record(self.now, Event::Role { node: id, role: seen.role, term: seen.term, leader: seen.leader });
        }
        let mut result = Ok(());
        let became_leader = seen.role == Role::Leader && (before.role != Role::Leader || before.term != seen.term);
        if became_leader {
            result = self.checker.on_leader(raft);
        }
        let commit_checked = self.nodes[index].commit_checked;
        if result.is_ok() && seen.commit > commit_checked {
            let term = raft.entry_term(seen.commit).unwrap_or(0);
            self.trace.record(self.now, Event::Commit { node: id, index: seen.commit, term });
            result = self.checker.on_commit(raft, commit_checked);
        }
        // A leader's commit (including the one that commits its own removal, after which
        // it is a follower of the same term).
        let leader_commit = seen.commit > before.commit
            && seen.term == before.term
            && (seen.role == Role::Leader || before.role == Role::Leader);
        if result.is_ok() && leader_commit && self.options.commit_quorum_check {
            result = self.check_commit_quorum(id);
        }
        let node = &mut self.nodes[index];
        node.observed = seen;
        node.commit_checked = node.commit_checked.max(seen.commit);
        if became_leader {
            self.faults.on_new_leader(id, self.now, &mut self.rng);
        }
        if let Err(violation) = result {
            self.fail(violation);
            return;
        }
        let leader_committed = seen.role == Role::Leader && seen.commit > before.commit;
        if leader_committed {
            let live = self.live_ids();
            if let Some(action) = self.faults.isolate_on_commit(id, self.now, &live, &mut self.rng) {
                self.carry_out(action);
            }
        }
        let leader_committed_with_writes_in_flight =
            leader_committed && self.nodes[index].raft().is_some_and(|raft| raft.persisted_index() < raft.last_index());
        if leader_committed_with_writes_in_flight && self.faults.crash_on_commit(id, self.now, &mut self.rng) {
            self.crash_node(id);
        }
    }

    /// Commit Quorum for the leader `id`, whose commit index just advanced.
    fn check_commit_quorum(&self, id: NodeId) -> Result<(), Violation> {
        let raft = self.nodes[Self::node_index(id)].raft().expect("observed up");
        let index = raft.commit_index();
        let Some(term) = raft.entry_term(index) else {
            return Err(Violation::new(
                Property::CommitQuorum,
                format!("node {id} committed through {index} but does not know that entry's term"),
            ));
        };
        let voters = &raft.membership().voters;
        let holders: BTreeSet<NodeId> = voters
            .iter()
            .copied()
            .filter(|&v| self.nodes.get(Self::node_index(v)).is_some_and(|node| node.durably_holds(index, term)))
            .collect();
        check_commit_quorum(id, index, voters, &holders)
    }

    fn observe_all(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].is_up() {
                self.observe(node_id(index));
            }
        }
    }

    // ----- faults ------------------------------------------------------------------------

    fn inject_faults(&mut self) {
        let up: Vec<bool> = self.nodes.iter().map(SimNode::is_up).collect();
        let live = self.live_ids();
        let leader = self.current_leader();
        let actions = self.faults.due(self.now, &up, &live, leader, &mut self.rng);
        for action in actions {
            self.carry_out(action);
        }
        self.change_membership();
        self.retire_removed_nodes();
    }

    fn carry_out(&mut self, action: FaultAction) {
        match action {
            FaultAction::Crash(id) => self.crash_node(id),
            FaultAction::Restart(id) => {
                let node = &self.nodes[Self::node_index(id)];
                if !node.is_up() && !node.retired {
                    self.start_node(id);
                }
            }
            FaultAction::Split(side_a, side_b) => {
                self.network.split(&side_a, &side_b);
                self.stats.partitions += 1;
                self.trace.record(self.now, Event::Partition(format!("{side_a:?} | {side_b:?} (both ways)")));
            }
            FaultAction::OneWay { from, to } => {
                for &a in &from {
                    for &b in &to {
                        self.network.block(a, b);
                    }
                }
                self.stats.partitions += 1;
                self.trace.record(self.now, Event::Partition(format!("{from:?} -> {to:?} cut (one way)")));
            }
            FaultAction::Transfer { from, to } => {
                let Some(raft) = self.nodes[Self::node_index(from)].raft_mut() else {
                    return;
                };
                let result = raft.transfer_leader(to);
                self.stats.transfers += 1;
                self.trace.record(
                    self.now,
                    Event::Note(format!("node {from} asked to transfer leadership to {to}: {result:?}")),
                );
                self.observe(from);
            }
            FaultAction::Heal => {
                if self.network.has_partition() {
                    self.network.heal();
                    self.trace.record(self.now, Event::Heal);
                }
            }
        }
    }

    fn crash_node(&mut self, id: NodeId) {
        // Its watch streams end with the process.
        self.watchers.retain(|watcher| watcher.node != id);
        let node = &mut self.nodes[Self::node_index(id)];
        let Some(raft) = node.raft() else {
            return;
        };
        let durable_term = node.disk.durable().hard_state.term;
        if raft.role() == Role::Leader && durable_term < raft.term() {
            let term = raft.term();
            self.checker.forget_volatile_leader(term, id);
            self.trace.record(
                self.now,
                Event::Note(format!("node {id} led term {term} in memory only (its disk holds term {durable_term})")),
            );
        }
        let node = &mut self.nodes[Self::node_index(id)];
        let (lost_entries, lost_snapshots, lost_staged) = node.crash();
        self.stats.crashes += 1;
        self.trace.record(self.now, Event::Crash { node: id, lost_entries, lost_snapshots, lost_staged });
        self.workload.on_crash(id, self.now, &mut self.trace);
    }

    // ----- membership --------------------------------------------------------------------

    /// Lets the operator ask the leader for a membership change, and carries out the
    /// faults aimed at that moment.
    fn change_membership(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let Some(leader) = self.current_leader() else {
            return;
        };
        let raft = self.nodes[Self::node_index(leader)].raft().expect("the leader is up");
        let old = raft.membership().clone();
        let old_index = raft.membership_index();
        let live = self.live_ids();
        let Some(plan) = self.operator.next_change(leader, &old, &live, &mut self.rng) else {
            return;
        };
        if let Some(id) = plan.start {
            self.operator.started(id);
            self.stats.nodes_added += 1;
            self.trace.record(self.now, Event::Note(format!("node {id} joins with an empty disk")));
            self.start_node(id);
        }
        let raft = self.nodes[Self::node_index(leader)].raft_mut().expect("the leader is up");
        let change = plan.change.clone();
        match raft.propose_conf_change(plan.change) {
            Ok(index) => {
                let new = raft.membership().clone();
                self.stats.conf_changes_proposed += 1;
                self.trace.record(
                    self.now,
                    Event::Note(format!(
                        "operator ({}): node {leader} appended {:?} {} at {index}; now {}",
                        plan.why,
                        change.kind,
                        change.node,
                        describe_membership(&new)
                    )),
                );
                let result = self.checker.on_conf_proposed(leader, index, old_index, &old, &new);
                self.check(result);
                self.operator.proposed(&change);
                self.observe(leader);
                let old_voters: Vec<NodeId> = old.voters.iter().copied().collect();
                let live = self.live_ids();
                let isolate = self.faults.isolate_on_conf_change(
                    leader,
                    change.node,
                    &old_voters,
                    self.now,
                    &live,
                    &mut self.rng,
                );
                if let Some(action) = isolate {
                    self.carry_out(action);
                } else if self.faults.crash_on_conf_change(leader, self.now, &mut self.rng) {
                    self.crash_node(leader);
                }
            }
            Err(error) => {
                self.stats.conf_changes_refused += 1;
                self.trace.record(
                    self.now,
                    Event::Note(format!(
                        "operator ({}): node {leader} refused {:?} {}: {error}",
                        plan.why, change.kind, change.node
                    )),
                );
            }
        }
    }

    /// Stops for good the removed nodes whose time has come (their removal is
    /// committed).
    fn retire_removed_nodes(&mut self) {
        let committed = self.checker.committed_config().map(|(_, membership)| membership.clone());
        let nodes = &self.nodes;
        let retired = |id: NodeId| nodes[Self::node_index(id)].retired;
        let due = self.operator.due_retirements(self.now, committed.as_ref(), &retired, &mut self.rng);
        for id in due {
            if self.nodes[Self::node_index(id)].is_up() {
                self.watchers.retain(|watcher| watcher.node != id);
                let node = &mut self.nodes[Self::node_index(id)];
                node.crash();
                self.workload.on_crash(id, self.now, &mut self.trace);
            }
            self.nodes[Self::node_index(id)].retired = true;
            self.faults.forget(id);
            self.stats.nodes_retired += 1;
            self.trace.record(self.now, Event::Note(format!("node {id} (removed) is stopped for good")));
        }
    }

    // ----- time, network, disk -----------------------------------------------------------

    fn tick_nodes(&mut self) {
        let phase = self.now % STEPS_PER_TICK;
        if phase == 0 {
            let number = self.now / STEPS_PER_TICK;
            self.trace.record(self.now, Event::Tick { number });
        }
        for index in 0..self.nodes.len() {
            if self.violation.is_some() {
                return;
            }
            let node = &mut self.nodes[index];
            if phase != node.tick_phase {
                continue;
            }
            let Some(raft) = node.raft_mut() else {
                continue;
            };
            raft.tick();
            self.observe(node_id(index));
        }
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for message in messages {
            if let Some(sender) = self.nodes.get(Self::node_index(message.from)) {
                let result = check_persist_before_send(&message, sender.disk.durable().hard_state.term);
                self.check(result);
            }
            self.stats.messages += 1;
            self.network.send(self.now, message, &self.network_profile, &mut self.rng, &mut self.trace);
        }
    }

    fn deliver_messages(&mut self) {
        let mut delivered = 0;
        while delivered < Network::MAX_IN_FLIGHT && self.violation.is_none() {
            let Some(message) = self.network.pop_due(self.now, &mut self.trace) else {
                break;
            };
            delivered += 1;
            let to = message.to;
            let summary = MessageSummary::of(&message);
            let Some(raft) = self.nodes.get_mut(Self::node_index(to)).and_then(SimNode::raft_mut) else {
                self.trace.record(self.now, Event::Drop(summary, DropReason::ReceiverDown));
                continue;
            };
            self.trace.record(self.now, Event::Deliver(summary));
            let commit_before = raft.commit_index();
            let led_before = raft.role() == Role::Leader;
            let commit_limit = CommitLimit::of(&message);
            if let Err(refusal) = raft.step(message) {
                // Every node here is correct (planted bugs aside): none sends what the
                // receiver must refuse.
                self.fail(Violation::new(Property::PeerInput, format!("node {to} refused a message: {refusal}")));
                continue;
            }
            // A leader that commits its own removal is a follower after the message; its
            // commit was a leader's, checked by Commit Quorum.
            if self.options.follower_commit_check && raft.role() != Role::Leader && !led_before {
                if let Err(violation) = commit_limit.check(to, commit_before, raft.commit_index()) {
                    self.fail(violation);
                }
            }
            self.observe(to);
        }
    }

    fn complete_disk_writes(&mut self) {
        for index in 0..self.nodes.len() {
            if self.violation.is_some() {
                return;
            }
            self.complete_writes_of(index);
        }
    }

    fn complete_writes_of(&mut self, index: usize) {
        let (released, persisted) = self.nodes[index].complete_writes(self.now);
        let id = node_id(index);
        for (last_index, term) in persisted {
            self.trace.record(self.now, Event::Persisted { node: id, index: last_index, term });
        }
        let voted = released
            .iter()
            .any(|message| matches!(message.body, MessageBody::RequestVoteResponse { pre_vote: false, granted: true }));
        // A follower's messages wait for its disk, its read requests too.
        let asked_for_read = asks_for_a_read(&released);
        self.send_all(released);
        self.observe(id);
        let crash = (voted && self.faults.crash_after_vote(id, self.now, &mut self.rng))
            || (asked_for_read && self.faults.crash_after_read_request(id, self.now, &mut self.rng));
        if crash {
            self.crash_node(id);
        }
    }

    // ----- Ready handling, apply, reads, snapshots ---------------------------------------

    fn handle_readies(&mut self) {
        for index in 0..self.nodes.len() {
            let id = node_id(index);
            let disk_profile = self.disk_profile_of(id);
            for _ in 0..SimNode::MAX_READIES_PER_STEP {
                if self.violation.is_some() {
                    return;
                }
                // A member's apply task applies everything it was handed before a snapshot
                // from the leader replaces its state.
                if self.nodes[index].raft().is_some_and(|raft| raft.has_snapshot_to_install()) {
                    self.apply_from_queue(index, usize::MAX);
                    if self.violation.is_some() {
                        return;
                    }
                }
                let Some(work) = self.nodes[index].take_ready(self.now, &disk_profile, &mut self.rng) else {
                    break;
                };
                if let Some(error) = work.snapshot_error {
                    self.fail(Violation::new(Property::SnapshotIntegrity, error));
                    return;
                }
                self.stats.snapshot_chunks += work.chunks_staged;
                if let Some((snapshot_index, digest)) = work.installed {
                    self.stats.snapshots_installed += 1;
                    self.trace.record(self.now, Event::SnapshotInstalled { node: id, index: snapshot_index });
                    let result = self.checker.on_state(id, snapshot_index, digest, "installs");
                    self.check(result);
                    self.workload.on_snapshot_installed(id, snapshot_index, self.now, &mut self.trace);
                    // Its revisions never pass as events: its watchers read the store.
                    for watcher in self.watchers.iter_mut().filter(|watcher| watcher.node == id) {
                        watcher.lagged = true;
                    }
                    self.settle_watchers(index);
                }
                let asked_for_read = asks_for_a_read(&work.messages);
                self.send_all(work.messages);
                if self.options.state_machine == StateMachineKind::Mvcc {
                    // Applied later, by `apply_queued`, as a member's apply task runs
                    // apart from its Raft loop.
                    let node = &mut self.nodes[index];
                    if let Some(last) = work.committed_entries.last() {
                        node.gate.taken(last.index);
                    }
                    node.apply_queue.extend(work.committed_entries);
                } else {
                    for entry in work.committed_entries {
                        self.apply(index, &entry);
                    }
                }
                for read in work.read_states {
                    self.workload.on_read_state(id, read.request_id, read.index);
                }
                self.workload.serve_reads(&self.nodes[index], self.now, &mut self.rng, &mut self.trace);
                self.observe(id);
                // Crash in the middle of a snapshot transfer, or right after an install
                // that is not durable yet.
                let crash = if work.installed.is_some() {
                    self.faults.crash_on_install(id, self.now, &mut self.rng)
                } else {
                    work.transfer_in_progress && self.faults.crash_mid_transfer(id, self.now, &mut self.rng)
                };
                if crash && self.nodes[index].is_up() {
                    self.stats.transfer_crashes += 1;
                    self.crash_node(id);
                    break;
                }
                if asked_for_read
                    && self.nodes[index].is_up()
                    && self.faults.crash_after_read_request(id, self.now, &mut self.rng)
                {
                    self.crash_node(id);
                    break;
                }
                // A write with no disk delay completes at once (this may crash the node).
                self.complete_writes_of(index);
            }
        }
    }

    /// The concord-mvcc state machine's apply: each up node with entries queued applies
    /// some of them now (a batch of random size) or leaves them for a later step, then
    /// answers the reads its gate releases.
    fn apply_queued(&mut self) {
        for index in 0..self.nodes.len() {
            if self.violation.is_some() {
                return;
            }
            if self.nodes[index].apply_queue.is_empty() || !self.nodes[index].is_up() {
                continue;
            }
            if self.apply_rng.below(100) >= APPLY_PERCENT_PER_STEP {
                continue;
            }
            let batch = 1 + self.apply_rng.below(MAX_APPLY_BATCH) as usize;
            self.apply_from_queue(index, batch);
            self.workload.serve_reads(&self.nodes[index], self.now, &mut self.rng, &mut self.trace);
            if self.nodes[index].apply_queue.is_empty() {
                self.settle_watchers(index);
            }
        }
        for index in 0..self.nodes.len() {
            self.maybe_start_watcher(index);
        }
    }

    /// Now and then a client starts a watch on node `index` (an up node with room for
    /// one), from a revision a little in the past or the next one.
    fn maybe_start_watcher(&mut self, index: usize) {
        let id = node_id(index);
        let StateMachine::Mvcc(mvcc) = &self.nodes[index].kv else { return };
        if !self.nodes[index].is_up()
            || self.watchers.iter().filter(|watcher| watcher.node == id).count() >= MAX_WATCHERS_PER_NODE
            || self.apply_rng.below(100) >= WATCH_START_PERCENT_PER_STEP
        {
            return;
        }
        let current = mvcc.current_revision();
        let start = current + 1 - self.apply_rng.below(5) as i64;
        #[allow(unused_mut)]
        let mut watcher = SimWatcher::new(id, start, current);
        #[cfg(concord_planted_bugs)]
        if self.options.bug == Some(crate::options::PlantedBug::WatchSkip) {
            watcher.cursor.plant_gap_skip();
        }
        self.watchers.push(watcher);
        self.stats.watchers_started += 1;
        self.catch_up_watchers(index);
    }

    /// The events node `index` just applied reach its watchers as one live batch (lost
    /// for some of them, as a slow stream loses batches), and the history.
    fn deliver_events(&mut self, index: usize) {
        let StateMachine::Mvcc(mvcc) = &mut self.nodes[index].kv else { return };
        let events = mvcc.take_events();
        if events.is_empty() {
            return;
        }
        self.history.record(&events);
        let id = node_id(index);
        let mut delivered = Ok(());
        for watcher in self.watchers.iter_mut().filter(|watcher| watcher.node == id) {
            let lost = self.apply_rng.below(100) < LIVE_BATCH_LOST_PERCENT;
            self.stats.watch_batches_lost += u64::from(lost);
            delivered = watcher.live(&events, lost, &self.history);
            if delivered.is_err() {
                break;
            }
        }
        if let Err(detail) = delivered {
            return self.fail(Violation::new(Property::Watch, detail));
        }
        self.catch_up_watchers(index);
    }

    /// Nothing is queued for node `index`'s watch streams any more: watchers that lost a
    /// batch, or owe revisions a snapshot brought, read the store.
    fn settle_watchers(&mut self, index: usize) {
        let StateMachine::Mvcc(mvcc) = &self.nodes[index].kv else { return };
        let published = mvcc.current_revision();
        let id = node_id(index);
        for watcher in self.watchers.iter_mut().filter(|watcher| watcher.node == id) {
            watcher.settle(published);
        }
        self.catch_up_watchers(index);
    }

    /// At the end of a converged run, with nothing left to apply, every watcher on an up
    /// node has everything its node's store holds: one left behind (waiting for a batch
    /// that will never come, or stuck in a catch-up) is a violation.
    fn check_watchers_caught_up(&mut self) {
        for index in 0..self.nodes.len() {
            let StateMachine::Mvcc(mvcc) = &self.nodes[index].kv else { return };
            if !self.nodes[index].is_up() {
                continue;
            }
            let current = mvcc.current_revision();
            self.settle_watchers(index);
            let id = node_id(index);
            let behind: Vec<i64> = self
                .watchers
                .iter()
                .filter(|watcher| watcher.node == id && !watcher.is_caught_up(current))
                .map(|watcher| watcher.cursor.next())
                .collect();
            if !behind.is_empty() {
                let detail = format!(
                    "at the end of the run node {id}'s store is at revision {current}, but watchers there are at {behind:?}"
                );
                return self.fail(Violation::new(Property::Watch, detail));
            }
        }
    }

    /// Node `index`'s watchers that must read the store do.
    fn catch_up_watchers(&mut self, index: usize) {
        let StateMachine::Mvcc(mvcc) = &self.nodes[index].kv else { return };
        let id = node_id(index);
        let caught_up = self.watchers.iter_mut().filter(|watcher| watcher.node == id).try_fold(0, |reads, watcher| {
            Ok::<u64, String>(
                reads + watcher.catch_up(&self.history, |from, resumed| mvcc.events_chunk(from, resumed))?,
            )
        });
        match caught_up {
            Ok(reads) => self.stats.watch_catch_up_reads += reads,
            Err(detail) => self.fail(Violation::new(Property::Watch, detail)),
        }
    }

    /// Applies up to `most` entries from the front of node `index`'s apply queue, then
    /// hands their events to the node's watchers as one live batch (as a member's apply
    /// task publishes one batch per transaction).
    fn apply_from_queue(&mut self, index: usize, most: usize) {
        for _ in 0..most {
            let Some(entry) = self.nodes[index].apply_queue.pop_front() else { break };
            self.apply(index, &entry);
            if self.violation.is_some() {
                return;
            }
        }
        self.deliver_events(index);
    }

    fn apply(&mut self, index: usize, entry: &concord_raft::Entry) {
        let node = &mut self.nodes[index];
        if let Err(violation) = self.checker.on_apply(node.id, node.applied, entry) {
            self.fail(violation);
            return;
        }
        node.applied = entry.index;
        node.gate.committed(entry.index);
        let command = Command::decode(&entry.data);
        let outcome = match &command {
            Some(Command::Client { op, .. }) => Some(node.kv.apply(entry.index, op)),
            Some(Command::Probe { attempt }) => {
                self.liveness.on_applied(*attempt, node.id, self.now);
                None
            }
            // A concord member's entry (`--state-machine mvcc`): its outcome goes to the
            // request waiting for it here, by the id the entry carries, as in the server.
            None => match &mut node.kv {
                StateMachine::Mvcc(mvcc) if entry.kind == EntryKind::Normal => {
                    mvcc.apply_entry(entry.index, &entry.data).map(|(origin, request, outcome)| {
                        if origin == node.id {
                            node.waiters.complete(request, outcome.clone());
                        }
                        outcome
                    })
                }
                _ => None,
            },
        };
        let id = node.id;
        let digest = node.kv.digest();
        if let Err(violation) = self.checker.on_state(id, entry.index, digest, "applies") {
            self.fail(violation);
            return;
        }
        if let Err(violation) =
            self.workload.on_applied(id, entry, outcome.as_ref(), self.now, &mut self.rng, &mut self.trace)
        {
            self.fail(violation);
        }
    }

    /// Every up node may take a snapshot of its state machine at its applied index and
    /// compact its log (through that index, or keeping a tail).
    fn take_snapshots(&mut self) {
        let policy = self.profile.snapshots;
        if policy.per_million == 0 || self.violation.is_some() {
            return;
        }
        for index in 0..self.nodes.len() {
            if !self.nodes[index].is_up() || !self.rng.chance(policy.per_million) {
                continue;
            }
            let keep =
                if self.rng.below(100) < policy.keep_tail_percent { self.rng.between(1, policy.keep_max) } else { 0 };
            let id = node_id(index);
            let disk_profile = self.disk_profile_of(id);
            match self.nodes[index].take_snapshot(keep, policy.padding, self.now, &disk_profile, &mut self.rng) {
                Ok(Some((snapshot_index, compacted_to))) => {
                    self.stats.snapshots_taken += 1;
                    self.trace.record(self.now, Event::SnapshotTaken { node: id, index: snapshot_index, compacted_to });
                }
                Ok(None) => {}
                Err(error) => self.fail(Violation::new(Property::SnapshotIntegrity, error)),
            }
        }
    }

    fn run_clients(&mut self) {
        self.workload.expire(self.now, &mut self.trace);
        let live = self.live_ids();
        self.workload.start_operations(self.now, &mut self.nodes, &live, &mut self.rng, &mut self.trace);
        self.observe_all();
    }

    fn check_log_matching(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let logs: Vec<_> = self
            .nodes
            .iter()
            .filter(|node| node.started)
            .map(|node| (node.id, node.log_version, node.visible_log()))
            .collect();
        if let Err(violation) = self.checker.check_log_matching(&logs) {
            self.fail(violation);
        }
    }

    // ----- the end of the run ------------------------------------------------------------

    /// Heals everything, restarts every node that is not stopped for good, and requires
    /// a fresh proposal to be applied by a majority of the leader's voters, and then every
    /// member to catch up, within [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts.
    fn check_liveness(&mut self) {
        self.faults.stop();
        self.operator.stop();
        self.network.heal();
        self.trace.record(self.now, Event::Note("faults stop: heal, restart all".into()));
        self.network_profile = NetworkProfile::CALM;
        self.calm = true;
        self.workload.active = false;
        for id in self.live_ids() {
            if !self.nodes[Self::node_index(id)].is_up() {
                self.start_node(id);
            }
        }
        if self.options.verbose {
            self.trace.record(self.now, Event::Note(format!("nodes: {}", self.describe_nodes())));
        }
        let start = self.now;
        let deadline = start + LIVENESS_ELECTION_TIMEOUTS * ELECTION_STEPS;
        let mut converged_at = None;
        while self.now < deadline && !self.stopped() {
            if self.liveness.succeeded_at().is_some() {
                if converged_at.is_none() && self.convergence().is_ok() {
                    converged_at = Some(self.now);
                }
                if converged_at.is_some() && !self.workload.has_outstanding() {
                    break;
                }
            }
            self.propose_probe();
            self.step();
            self.now += 1;
        }
        if self.stopped() {
            return;
        }
        let Some(at) = self.liveness.succeeded_at() else {
            let detail = format!(
                "no proposal was applied by a majority within {LIVENESS_ELECTION_TIMEOUTS} election timeouts \
                 ({} steps) after healing ({} probes proposed); {}",
                deadline - start,
                self.liveness.attempts(),
                self.describe_nodes()
            );
            self.fail(Violation::new(Property::Liveness, detail));
            return;
        };
        self.stats.liveness_steps = at - start;
        if !self.workload.has_outstanding() {
            let left: Vec<(NodeId, usize)> =
                self.nodes.iter().map(|n| (n.id, n.waiters.count())).filter(|&(_, count)| count > 0).collect();
            if !left.is_empty() {
                let detail = format!("every client has its answer, but (node, waiters) {left:?} remain");
                self.fail(Violation::new(Property::Quiescence, detail));
                return;
            }
        }
        match converged_at {
            Some(at) => {
                self.stats.convergence_steps = at - start;
                self.check_watchers_caught_up();
            }
            None => {
                let why = self.convergence().err().unwrap_or_default();
                let detail = format!(
                    "the members did not all catch up within {LIVENESS_ELECTION_TIMEOUTS} election timeouts \
                     ({} steps) after healing: {why}; {}",
                    deadline - start,
                    self.describe_nodes()
                );
                self.fail(Violation::new(Property::Liveness, detail));
            }
        }
    }

    /// Whether every member of the leader's configuration has applied everything the
    /// leader holds, with the same state; `Err` says who lags.
    fn convergence(&mut self) -> Result<(), String> {
        let leader = self.current_leader().ok_or("no leader")?;
        let raft = self.nodes[Self::node_index(leader)].raft().expect("the leader is up");
        let (commit, last) = (raft.commit_index(), raft.last_index());
        if commit < last {
            return Err(format!("leader {leader} has committed {commit} of {last}"));
        }
        let mut digests = BTreeMap::new();
        for member in raft.membership().members() {
            let node = &self.nodes[Self::node_index(member)];
            if !node.is_up() {
                return Err(format!("member {member} is down"));
            }
            if node.applied < commit {
                return Err(format!("member {member} applied {} of {commit}", node.applied));
            }
            digests.insert(member, node.kv.digest());
        }
        let distinct: BTreeSet<u64> = digests.values().copied().collect();
        if distinct.len() > 1 {
            let violation = Violation::new(
                Property::StateMachineSafety,
                format!("every member applied {commit} but their states differ: {digests:x?}"),
            );
            self.fail(violation);
        }
        Ok(())
    }

    fn describe_nodes(&self) -> String {
        let states: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|node| node.raft())
            .map(|raft| {
                format!(
                    "node {} {:?} t{} commit={} last={}@t{} first={} ({}, entry {})",
                    raft.id(),
                    raft.role(),
                    raft.term(),
                    raft.commit_index(),
                    raft.last_index(),
                    raft.entry_term(raft.last_index()).unwrap_or(0),
                    raft.first_index(),
                    describe_membership(raft.membership()),
                    raft.membership_index()
                )
            })
            .collect();
        states.join("; ")
    }

    fn propose_probe(&mut self) {
        if !self.liveness.wants_proposal(self.now, 2 * ELECTION_STEPS) {
            return;
        }
        let Some(leader) = self.current_leader() else {
            return;
        };
        let attempt = self.liveness.next_attempt();
        let payload = Command::Probe { attempt }.encode();
        let node = &mut self.nodes[Self::node_index(leader)];
        if let Some(Ok(index)) = node.propose(payload) {
            let voters = node.raft().expect("up").membership().voters.clone();
            self.liveness.proposed(attempt, self.now, voters);
            self.trace.record(
                self.now,
                Event::Note(format!("liveness probe {attempt} proposed on node {leader} at {index}")),
            );
        }
    }

    fn check_history(&mut self) {
        let Some(failure) = find_failure(&self.workload.history) else {
            return;
        };
        self.focus_step = self.workload.step_of_time(failure.time);
        let step = self.focus_step.map_or("unknown".to_string(), |step| step.to_string());
        let mut detail = format!("the history first fails at history time {} (simulation step {step})", failure.time);
        if let Some(culprit) = &failure.culprit {
            detail.push_str(&format!("; the answer then: {culprit}"));
        }
        detail.push_str(&format!("\nthe checker on the history up to then: {}", failure.violation));
        self.fail(Violation::new(Property::Linearizability, detail));
    }
}

fn node_id(index: usize) -> NodeId {
    index as NodeId + 1
}

/// Whether `messages` hold a follower's ReadIndex request to its leader.
fn asks_for_a_read(messages: &[Message]) -> bool {
    messages.iter().any(|message| matches!(message.body, MessageBody::ReadIndexRequest { .. }))
}
