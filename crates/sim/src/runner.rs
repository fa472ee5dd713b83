//! Runs one seed: builds the cluster, drives it step by step through faults, checks
//! safety after every step, then heals everything and checks liveness and the clients'
//! history.
//!
//! One step, in a fixed order: inject due faults; tick the nodes whose turn it is; deliver
//! due messages; complete due disk writes; handle Readies (persist, send, apply, answer
//! reads); let clients time out and start operations; compare the logs. After every
//! single input to a node, its role, term and commit index are compared with what was
//! last seen, so a leader that exists for a moment is still checked.

use concord_raft::{Config, Message, MessageBody, NodeId, Role};

use crate::client::Workload;
use crate::command::Command;
use crate::disk::DiskProfile;
use crate::faults::{FaultAction, FaultScheduler, RunProfile};
use crate::invariants::{CommitLimit, Property, SafetyChecker, Violation};
use crate::linearizability::find_failure;
use crate::liveness::LivenessProbe;
use crate::network::{Network, NetworkProfile};
use crate::node::SimNode;
use crate::options::SimOptions;
use crate::outcome::{SeedOutcome, SeedStats};
use crate::rng::SimRng;
use crate::trace::{DropReason, Event, MessageSummary, Trace};

/// Simulation steps per logical clock tick of a node.
pub const STEPS_PER_TICK: u64 = 10;
/// The cores' `election_tick` (their default).
pub const ELECTION_TICKS: u64 = 10;
/// Base election timeout in steps.
pub const ELECTION_STEPS: u64 = ELECTION_TICKS * STEPS_PER_TICK;
/// The liveness phase gives the healed cluster this many election timeouts to elect a
/// leader and commit a fresh proposal.
pub const LIVENESS_ELECTION_TIMEOUTS: u64 = 20;

/// Runs `seed` with `options`. Deterministic: the same arguments give the same outcome.
pub fn run_seed(options: &SimOptions, seed: u64) -> SeedOutcome {
    assert!(
        SimOptions::ALLOWED_NODE_COUNTS.contains(&options.nodes),
        "a cluster has 3, 5 or 7 nodes, not {}",
        options.nodes
    );
    let mut simulation = Simulation::new(options, seed, None);
    simulation.run();
    let mut trace = simulation.trace.lines();
    if let Some(step) = simulation.focus_step {
        // The history is checked at the end of the run, so the last events are not the
        // interesting ones: replay the seed (it is deterministic) and keep the events up
        // to the step at which the history first fails.
        let mut replay = Simulation::new(options, seed, Some(step));
        replay.run();
        if let Some(lines) = replay.snapshot {
            trace = lines;
        }
    }
    let mut stats = simulation.stats;
    stats.elections = simulation.checker.elections();
    stats.commits = simulation.checker.committed_len();
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
    now: u64,
    nodes: Vec<SimNode>,
    network: Network,
    profile: RunProfile,
    network_profile: NetworkProfile,
    disk_profile: DiskProfile,
    faults: FaultScheduler,
    workload: Workload,
    checker: SafetyChecker,
    liveness: LivenessProbe,
    trace: Trace,
    stats: SeedStats,
    violation: Option<Violation>,
    /// For a linearizability violation: the step of the last operation it names.
    focus_step: Option<u64>,
    /// Stop after this step and keep the trace as it is then (a replay for the report).
    snapshot_at: Option<u64>,
    snapshot: Option<Vec<String>>,
}

impl Simulation {
    fn new(options: &SimOptions, seed: u64, snapshot_at: Option<u64>) -> Self {
        let mut rng = SimRng::new(seed);
        let profile = RunProfile::draw(&mut rng, ELECTION_STEPS);
        let mut simulation = Simulation {
            options: options.clone(),
            nodes: (1..=options.nodes as NodeId).map(SimNode::new).collect(),
            network: Network::default(),
            network_profile: profile.network,
            disk_profile: profile.disk,
            faults: FaultScheduler::new(profile.faults, options.nodes),
            workload: Workload::new(profile.workload),
            checker: SafetyChecker::default(),
            liveness: LivenessProbe::default(),
            trace: Trace::new(options.verbose),
            stats: SeedStats::default(),
            violation: None,
            focus_step: None,
            snapshot_at,
            snapshot: None,
            profile,
            rng,
            now: 0,
        };
        if options.verbose {
            simulation.trace.record(0, Event::Note(format!("profile: {profile:?}")));
        }
        for id in 1..=options.nodes as NodeId {
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
        self.violation.is_some() || self.snapshot.is_some()
    }

    fn step(&mut self) {
        self.run_step();
        if self.snapshot_at == Some(self.now) {
            self.trace
                .record(self.now, Event::Note("<- the last operation named by the violation happened here".into()));
            self.snapshot = Some(self.trace.lines());
        }
    }

    fn run_step(&mut self) {
        self.inject_faults();
        self.tick_nodes();
        self.deliver_messages();
        self.complete_disk_writes();
        self.handle_readies();
        self.run_clients();
        self.check_log_matching();
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

    fn config_for(&mut self, id: NodeId) -> Config {
        let voters = (1..=self.options.nodes as NodeId).collect();
        let mut config = Config::new(id, voters);
        config.seed = self.rng.next_u64();
        let settings = self.profile.settings;
        config.max_message_bytes = settings.max_message_bytes;
        config.max_inflight_messages = settings.max_inflight_messages;
        config.heartbeat_tick = settings.heartbeat_tick;
        config.pre_vote = settings.pre_vote;
        config.check_quorum = settings.check_quorum;
        if let Some(bug) = self.options.bug {
            config.bugs = bug.switches();
        }
        config
    }

    fn start_node(&mut self, id: NodeId) {
        let config = self.config_for(id);
        let phase = self.rng.below(STEPS_PER_TICK);
        let node = &mut self.nodes[Self::node_index(id)];
        node.start(config, phase);
        let raft = node.raft().expect("just started");
        let event =
            Event::Restart { node: id, term: raft.term(), last_index: raft.last_index(), commit: raft.commit_index() };
        self.trace.record(self.now, event);
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
            if let Some(action) = self.faults.isolate_on_commit(id, self.now, &mut self.rng) {
                self.carry_out(action);
            }
        }
        let leader_committed_with_writes_in_flight =
            leader_committed && self.nodes[index].raft().is_some_and(|raft| raft.persisted_index() < raft.last_index());
        if leader_committed_with_writes_in_flight && self.faults.crash_on_commit(id, self.now, &mut self.rng) {
            self.crash_node(id);
        }
    }

    fn observe_all(&mut self) {
        for id in 1..=self.options.nodes as NodeId {
            self.observe(id);
        }
    }

    // ----- faults ------------------------------------------------------------------------

    fn inject_faults(&mut self) {
        let up: Vec<bool> = self.nodes.iter().map(SimNode::is_up).collect();
        let leader = self.current_leader();
        let actions = self.faults.due(self.now, &up, leader, &mut self.rng);
        for action in actions {
            self.carry_out(action);
        }
    }

    fn carry_out(&mut self, action: FaultAction) {
        match action {
            FaultAction::Crash(id) => self.crash_node(id),
            FaultAction::Restart(id) => {
                if !self.nodes[Self::node_index(id)].is_up() {
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
        let node = &mut self.nodes[Self::node_index(id)];
        if !node.is_up() {
            return;
        }
        let lost_entries = node.crash();
        self.stats.crashes += 1;
        self.trace.record(self.now, Event::Crash { node: id, lost_entries });
        self.workload.on_crash(id, self.now, &mut self.trace);
    }

    // ----- time, network, disk -----------------------------------------------------------

    fn tick_nodes(&mut self) {
        let phase = self.now % STEPS_PER_TICK;
        if phase == 0 {
            let number = self.now / STEPS_PER_TICK;
            self.trace.record(self.now, Event::Tick { number });
        }
        for index in 0..self.nodes.len() {
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
            let Some(raft) = self.nodes[Self::node_index(to)].raft_mut() else {
                self.trace.record(self.now, Event::Drop(summary, DropReason::ReceiverDown));
                continue;
            };
            self.trace.record(self.now, Event::Deliver(summary));
            let commit_before = raft.commit_index();
            let commit_limit = CommitLimit::of(&message);
            raft.step(message);
            if self.options.follower_commit_check && raft.role() != Role::Leader {
                if let Err(violation) = commit_limit.check(to, commit_before, raft.commit_index()) {
                    self.fail(violation);
                }
            }
            self.observe(to);
        }
    }

    fn complete_disk_writes(&mut self) {
        for index in 0..self.nodes.len() {
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
        self.send_all(released);
        self.observe(id);
        if voted && self.faults.crash_after_vote(id, self.now, &mut self.rng) {
            self.crash_node(id);
        }
    }

    // ----- Ready handling, apply, reads --------------------------------------------------

    fn handle_readies(&mut self) {
        for index in 0..self.nodes.len() {
            for _ in 0..SimNode::MAX_READIES_PER_STEP {
                if self.violation.is_some() {
                    return;
                }
                let Some(work) = self.nodes[index].take_ready(self.now, &self.disk_profile, &mut self.rng) else {
                    break;
                };
                let id = node_id(index);
                self.send_all(work.messages);
                for entry in work.committed_entries {
                    self.apply(index, &entry);
                }
                for read in work.read_states {
                    self.workload.on_read_state(id, read.request_id, read.index);
                }
                self.workload.serve_reads(&self.nodes[index], self.now, &mut self.rng, &mut self.trace);
                self.observe(id);
                // A write with no disk delay completes at once (this may crash the node).
                self.complete_writes_of(index);
            }
        }
    }

    fn apply(&mut self, index: usize, entry: &concord_raft::Entry) {
        let node = &mut self.nodes[index];
        if let Err(violation) = self.checker.on_apply(node.id, node.applied, entry) {
            self.fail(violation);
            return;
        }
        node.applied = entry.index;
        let command = Command::decode(&entry.data);
        let outcome = match &command {
            Some(Command::Client { op, .. }) => Some(node.kv.apply(op)),
            Some(Command::Probe { attempt }) => {
                let majority = self.options.nodes / 2 + 1;
                self.liveness.on_applied(*attempt, node.id, majority, self.now);
                None
            }
            None => None,
        };
        let id = node.id;
        self.workload.on_applied(id, entry, outcome.as_ref(), self.now, &mut self.rng, &mut self.trace);
    }

    fn run_clients(&mut self) {
        self.workload.expire(self.now, &mut self.trace);
        self.workload.start_operations(self.now, &mut self.nodes, &mut self.rng, &mut self.trace);
        self.observe_all();
    }

    fn check_log_matching(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let logs: Vec<_> = self.nodes.iter().map(|node| (node.id, node.log_version, node.visible_log())).collect();
        if let Err(violation) = self.checker.check_log_matching(&logs) {
            self.fail(violation);
        }
    }

    // ----- the end of the run ------------------------------------------------------------

    /// Heals everything, restarts every node, and requires a fresh proposal to be applied
    /// by a majority within [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts.
    fn check_liveness(&mut self) {
        self.faults.stop();
        self.network.heal();
        self.trace.record(self.now, Event::Note("faults stop: heal, restart all".into()));
        self.network_profile = NetworkProfile::CALM;
        self.disk_profile = DiskProfile::FAST;
        self.workload.active = false;
        for id in 1..=self.options.nodes as NodeId {
            if !self.nodes[Self::node_index(id)].is_up() {
                self.start_node(id);
            }
        }
        let start = self.now;
        let deadline = start + LIVENESS_ELECTION_TIMEOUTS * ELECTION_STEPS;
        while self.now < deadline && !self.stopped() {
            if self.liveness.succeeded_at().is_some() && !self.workload.has_outstanding() {
                break;
            }
            self.propose_probe();
            self.step();
            self.now += 1;
        }
        if self.stopped() {
            return;
        }
        match self.liveness.succeeded_at() {
            Some(at) => self.stats.liveness_steps = at - start,
            None => {
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|node| node.raft())
                    .map(|raft| {
                        format!(
                            "node {} {:?} t{} commit={} last={}",
                            raft.id(),
                            raft.role(),
                            raft.term(),
                            raft.commit_index(),
                            raft.last_index()
                        )
                    })
                    .collect();
                self.fail(Violation::new(
                    Property::Liveness,
                    format!(
                        "no proposal was applied by a majority within {LIVENESS_ELECTION_TIMEOUTS} \
                         election timeouts ({} steps) after healing ({} probes proposed); {}",
                        deadline - start,
                        self.liveness.attempts(),
                        states.join("; ")
                    ),
                ));
            }
        }
    }

    fn propose_probe(&mut self) {
        if !self.liveness.wants_proposal(self.now, 2 * ELECTION_STEPS) {
            return;
        }
        let Some(leader) = self.current_leader() else {
            return;
        };
        let attempt = self.liveness.attempts() + 1;
        let payload = Command::Probe { attempt }.encode();
        let node = &mut self.nodes[Self::node_index(leader)];
        if let Some(Ok(index)) = node.propose(payload) {
            self.liveness.proposed(self.now);
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
