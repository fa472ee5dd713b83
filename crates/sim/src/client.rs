//! Simulated clients: a get/put/delete/compare-and-set workload on a few keys, recorded in
//! a concord-check [`History`] for the linearizability check at the end of the run.
//!
//! Each client has at most one operation outstanding. Writes are proposed once on the
//! node the client picked; the answer comes when that node applies the entry at the
//! proposed index *with the same bytes* (another leader's entry at that index means the
//! outcome is unknown). Reads use ReadIndex on the picked node and are served from its
//! state machine once it has applied the read index. An error from the core means the
//! operation certainly did nothing (`fail`); a crash or a timeout leaves it unknown.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use concord_check::{History, Op, OpId, Outcome};
use concord_raft::{Entry, Index, NodeId, ProposeError, NO_NODE};

use crate::command::{Command, WriteOp};
use crate::invariants::{Property, Violation};
use crate::node::SimNode;
use crate::rng::SimRng;
use crate::state_machine::StateMachineKind;
use crate::trace::{Event, Trace};

/// The shape of the workload, in steps and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadProfile {
    pub clients: usize,
    pub keys: usize,
    /// Pause between two operations of a client, inclusive range.
    pub think_min: u64,
    pub think_max: u64,
    /// An operation with no answer after this many steps is abandoned (outcome unknown).
    pub timeout: u64,
    /// Relative weights of get, put, delete and cas.
    pub weights: [u32; 4],
    /// How many of the clients (the first ones) mostly read, with `reader_weights`:
    /// a reader keeps going back to a node that answers its reads, which is what exposes
    /// an old leader that still serves reads after a new one took writes.
    pub readers: usize,
    pub reader_weights: [u32; 4],
    /// Chance (percent) that a client goes back to the node that last answered it (or
    /// that it was redirected to) rather than picking one at random.
    pub stickiness_percent: u64,
    /// The same for readers.
    pub reader_stickiness_percent: u64,
}

impl WorkloadProfile {
    pub const DEFAULT: WorkloadProfile = WorkloadProfile {
        clients: 4,
        keys: 3,
        think_min: 1,
        think_max: 30,
        timeout: 300,
        weights: [40, 30, 10, 20],
        readers: 1,
        reader_weights: [90, 5, 0, 5],
        stickiness_percent: 90,
        reader_stickiness_percent: 95,
    };
}

#[derive(Clone, Debug)]
enum ClientState {
    Idle {
        next_at: u64,
    },
    Writing {
        op: OpId,
        node: NodeId,
        index: Index,
        payload: Bytes,
        deadline: u64,
    },
    Reading {
        op: OpId,
        node: NodeId,
        key: String,
        request_id: u64,
        /// Known once the node's ReadState for `request_id` came out.
        index: Option<Index>,
        deadline: u64,
    },
}

#[derive(Clone, Debug)]
struct Client {
    id: u64,
    state: ClientState,
    next_request: u64,
    /// The node to go back to: the last one that answered, or the leader we were told of.
    preferred: Option<NodeId>,
    /// What this client last learned each key holds, for CAS expectations.
    known: BTreeMap<String, Option<String>>,
}

/// Counters of finished client operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    pub reads: u64,
    pub writes: u64,
    pub failed: u64,
    pub unknown: u64,
}

#[derive(Debug)]
pub struct Workload {
    profile: WorkloadProfile,
    clients: Vec<Client>,
    pub history: History,
    /// Logical time of the history: one tick per invocation or completion, so real-time
    /// order between operations is exact even within one simulation step.
    clock: u64,
    /// `time_steps[t - 1]` is the simulation step at which history time `t` happened.
    time_steps: Vec<u64>,
    pub stats: WorkloadStats,
    /// Whether clients start new operations (off during the final liveness phase).
    pub active: bool,
    /// What the nodes run; with concord-mvcc, writes are a concord member's entries and
    /// their outcomes come through the node's waiters.
    state_machine: StateMachineKind,
    /// The waiter of each client's write in flight, by client index (concord-mvcc only).
    waiters: HashMap<usize, concord_member::Waiter<Outcome>>,
}

impl Workload {
    pub fn new(profile: WorkloadProfile, state_machine: StateMachineKind) -> Self {
        let clients = (1..=profile.clients as u64)
            .map(|id| Client {
                id,
                state: ClientState::Idle { next_at: 0 },
                next_request: 1,
                preferred: None,
                known: BTreeMap::new(),
            })
            .collect();
        Workload {
            profile,
            clients,
            history: History::new(),
            clock: 0,
            time_steps: Vec::new(),
            stats: WorkloadStats::default(),
            active: true,
            state_machine,
            waiters: HashMap::new(),
        }
    }

    fn tick_clock(&mut self, now: u64) -> u64 {
        self.clock += 1;
        self.time_steps.push(now);
        self.clock
    }

    /// The simulation step at which history time `time` happened.
    pub fn step_of_time(&self, time: u64) -> Option<u64> {
        let index = usize::try_from(time.checked_sub(1)?).ok()?;
        self.time_steps.get(index).copied()
    }

    /// Whether any client still waits for an answer.
    pub fn has_outstanding(&self) -> bool {
        self.clients.iter().any(|c| !matches!(c.state, ClientState::Idle { .. }))
    }

    /// Lets every idle client whose pause is over start its next operation, on one of
    /// the `live` nodes (`nodes[id - 1]` is node `id`).
    pub fn start_operations(
        &mut self,
        now: u64,
        nodes: &mut [SimNode],
        live: &[NodeId],
        rng: &mut SimRng,
        trace: &mut Trace,
    ) {
        if !self.active || live.is_empty() {
            return;
        }
        for index in 0..self.clients.len() {
            if matches!(self.clients[index].state, ClientState::Idle { next_at } if next_at <= now) {
                self.start_operation(index, now, nodes, live, rng, trace);
            }
        }
    }

    fn pick_node(&mut self, index: usize, live: &[NodeId], rng: &mut SimRng) -> NodeId {
        let stickiness = if index < self.profile.readers {
            self.profile.reader_stickiness_percent
        } else {
            self.profile.stickiness_percent
        };
        let stick = rng.below(100) < stickiness;
        match self.clients[index].preferred {
            Some(node) if stick && live.contains(&node) => node,
            _ => rng.pick(live),
        }
    }

    fn pick_operation(&mut self, index: usize, rng: &mut SimRng) -> (Op, Option<WriteOp>) {
        let key = format!("k{}", rng.below(self.profile.keys as u64));
        let client = &mut self.clients[index];
        let value = format!("c{}-{}", client.id, client.next_request);
        let weights = if index < self.profile.readers { &self.profile.reader_weights } else { &self.profile.weights };
        match rng.weighted(weights) {
            0 => (Op::Get { key }, None),
            1 => {
                let write = WriteOp::Put { key, value };
                (write.to_check_op(), Some(write))
            }
            2 => {
                let write = WriteOp::Delete { key };
                (write.to_check_op(), Some(write))
            }
            _ => {
                let expected = if rng.below(4) == 0 { None } else { client.known.get(&key).cloned().flatten() };
                let write = WriteOp::Cas { key, expected, new: value };
                (write.to_check_op(), Some(write))
            }
        }
    }

    fn start_operation(
        &mut self,
        index: usize,
        now: u64,
        nodes: &mut [SimNode],
        live: &[NodeId],
        rng: &mut SimRng,
        trace: &mut Trace,
    ) {
        let node_id = self.pick_node(index, live, rng);
        let node = &mut nodes[node_id as usize - 1];
        if !node.is_up() {
            // The client cannot reach it: nothing was sent, try elsewhere next step.
            self.clients[index].preferred = None;
            self.clients[index].state = ClientState::Idle { next_at: now + 1 };
            return;
        }
        let (op, write) = self.pick_operation(index, rng);
        let time = self.tick_clock(now);
        let client_id = self.clients[index].id;
        let request = self.clients[index].next_request;
        self.clients[index].next_request += 1;
        let op_id = self.history.invoke(client_id, op.clone(), time);
        let deadline = now + self.profile.timeout;
        let waiters = node.waiters.clone();
        // A concord member's ReadIndex id: its process's next one (a node's reads are
        // matched to their answers by this id alone).
        let read_id =
            (self.state_machine == StateMachineKind::Mvcc && write.is_none()).then(|| node.read_ids.next_id());
        // And a write's request id: its process's next one (an applied entry reaches the
        // waiter of the id it carries).
        let write_id =
            (self.state_machine == StateMachineKind::Mvcc && write.is_some()).then(|| node.request_ids.next_id());
        let raft = node.raft_mut().expect("checked up");
        let submitted = match (write, &op) {
            (Some(write), _) => {
                let payload = match self.state_machine {
                    StateMachineKind::Map => Command::Client { client: client_id, request, op: write }.encode(),
                    StateMachineKind::Mvcc => {
                        // As a concord member proposes a client's request: registered
                        // first, so that no outcome can come before its waiter.
                        let request_id = write_id.expect("drawn for a write");
                        self.waiters.insert(index, waiters.register(request_id));
                        crate::mvcc_machine::entry_for(node_id, request_id, &write)
                    }
                };
                raft.propose(payload.clone()).map(|index| ClientState::Writing {
                    op: op_id,
                    node: node_id,
                    index,
                    payload,
                    deadline,
                })
            }
            (None, Op::Get { key }) => {
                let request_id = read_id.unwrap_or((client_id << 32) | request);
                raft.read_index(request_id).map(|()| ClientState::Reading {
                    op: op_id,
                    node: node_id,
                    key: key.clone(),
                    request_id,
                    index: None,
                    deadline,
                })
            }
            (None, other) => unreachable!("{other} is a write"),
        };
        match submitted {
            Ok(state) => {
                let proposed_at = match state {
                    ClientState::Writing { index, .. } => Some(index),
                    _ => None,
                };
                trace.record(
                    now,
                    Event::ClientInvoke { client: client_id, node: node_id, op: op.to_string(), proposed_at },
                );
                self.clients[index].state = state;
            }
            Err(error) => {
                self.waiters.remove(&index);
                // The core refused outright: the request certainly had no effect.
                self.history.fail(op_id);
                self.stats.failed += 1;
                trace.record(
                    now,
                    Event::ClientRefused {
                        client: client_id,
                        node: node_id,
                        op: op.to_string(),
                        reason: error.to_string(),
                    },
                );
                let client = &mut self.clients[index];
                client.preferred = match error {
                    ProposeError::NotLeader { leader } if leader != NO_NODE => Some(leader),
                    _ => None,
                };
                let pause = rng.between(self.profile.think_min, self.profile.think_max);
                client.state = ClientState::Idle { next_at: now + pause };
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        index: usize,
        op: OpId,
        node: NodeId,
        outcome: Outcome,
        now: u64,
        rng: &mut SimRng,
        trace: &mut Trace,
    ) {
        let time = self.tick_clock(now);
        let client = &mut self.clients[index];
        let learned = match &self.history.get(op).op {
            Op::Get { key } => match &outcome {
                Outcome::Get(value) => Some((key.clone(), value.clone())),
                _ => None,
            },
            Op::Put { key, value } => Some((key.clone(), Some(value.clone()))),
            Op::Delete { key } => Some((key.clone(), None)),
            Op::Cas { key, new, .. } => match outcome {
                Outcome::Cas(true) => Some((key.clone(), Some(new.clone()))),
                _ => {
                    client.known.remove(key);
                    None
                }
            },
        };
        if let Some((key, value)) = learned {
            client.known.insert(key, value);
        }
        client.preferred = Some(node);
        trace.record(now, Event::ClientComplete { client: client.id, node, outcome: outcome.to_string() });
        match outcome {
            Outcome::Get(_) => self.stats.reads += 1,
            _ => self.stats.writes += 1,
        }
        self.history.complete(op, outcome, time);
        let pause = rng.between(self.profile.think_min, self.profile.think_max);
        self.clients[index].state = ClientState::Idle { next_at: now + pause };
        self.waiters.remove(&index);
    }

    /// Leaves the client's operation without an answer (it may or may not have happened).
    fn abandon(&mut self, index: usize, reason: &'static str, now: u64, trace: &mut Trace) {
        self.stats.unknown += 1;
        let client = &mut self.clients[index];
        client.preferred = None;
        trace.record(now, Event::ClientIndeterminate { client: client.id, reason });
        client.state = ClientState::Idle { next_at: now + 1 };
        self.waiters.remove(&index);
    }

    /// `node` applied `entry`; `outcome` is what applying it answered (for client writes).
    /// A violation if a client was handed an answer of another kind than its request's
    /// (the outcome of another request reached its waiter).
    #[allow(clippy::too_many_arguments)]
    pub fn on_applied(
        &mut self,
        node: NodeId,
        entry: &Entry,
        outcome: Option<&Outcome>,
        now: u64,
        rng: &mut SimRng,
        trace: &mut Trace,
    ) -> Result<(), Violation> {
        for index in 0..self.clients.len() {
            let ClientState::Writing { op, node: waiting_on, index: proposed_at, ref payload, .. } =
                self.clients[index].state
            else {
                continue;
            };
            if waiting_on != node || proposed_at != entry.index {
                continue;
            }
            if *payload != entry.data {
                self.abandon(index, "another entry took the proposed index", now, trace);
                continue;
            }
            let outcome = match self.waiters.get_mut(&index) {
                // A concord member's client learns the outcome from its waiter only.
                Some(waiter) => match waiter.try_outcome() {
                    Some(outcome) => outcome,
                    None => {
                        // The node that applied it is the one it was proposed at, with
                        // its waiters of that process (a crash would have abandoned the
                        // client): its outcome went elsewhere or nowhere.
                        return Err(Violation::new(
                            Property::LostOutcome,
                            format!(
                                "node {node} applied client {}'s write at {} but no outcome reached its waiter",
                                self.clients[index].id, entry.index
                            ),
                        ));
                    }
                },
                None => outcome.cloned().expect("a client's own entry always has an outcome"),
            };
            let request = &self.history.get(op).op;
            if !request.accepts(&outcome) {
                return Err(Violation::new(
                    Property::Linearizability,
                    format!(
                        "client {} was answered {outcome:?} by node {node} for {request} (entry {}): no order of \
                         the requests gives that answer to that request",
                        self.clients[index].id, entry.index
                    ),
                ));
            }
            self.finish(index, op, node, outcome, now, rng, trace);
        }
        Ok(())
    }

    /// `node` produced a ReadState: remember the index the read must wait for.
    pub fn on_read_state(&mut self, node: NodeId, request_id: u64, read_index: Index) {
        for client in &mut self.clients {
            if let ClientState::Reading { node: waiting_on, request_id: waiting_for, ref mut index, .. } = client.state
            {
                if waiting_on == node && waiting_for == request_id && index.is_none() {
                    *index = Some(read_index);
                }
            }
        }
    }

    /// Answers every read on `node` whose index the node's apply gate lets through (what
    /// its state machine holds, unless a bug says otherwise).
    pub fn serve_reads(&mut self, node: &SimNode, now: u64, rng: &mut SimRng, trace: &mut Trace) {
        for index in 0..self.clients.len() {
            let ClientState::Reading { op, node: waiting_on, ref key, index: Some(read_index), .. } =
                self.clients[index].state
            else {
                continue;
            };
            if waiting_on != node.id || read_index > node.gate.reads_through() {
                continue;
            }
            let value = node.kv.get(key);
            self.finish(index, op, node.id, Outcome::Get(value), now, rng, trace);
        }
    }

    /// `node` installed a snapshot through `index`: writes it was to apply at or below
    /// that index will never be seen applied one by one there, so their outcome is
    /// unknown.
    pub fn on_snapshot_installed(&mut self, node: NodeId, index: Index, now: u64, trace: &mut Trace) {
        for client in 0..self.clients.len() {
            if let ClientState::Writing { node: waiting_on, index: proposed_at, .. } = self.clients[client].state {
                if waiting_on == node && proposed_at <= index {
                    self.abandon(client, "a snapshot replaced the log at the proposed index", now, trace);
                }
            }
        }
    }

    /// `node` crashed: whatever its clients were waiting for will never be answered.
    pub fn on_crash(&mut self, node: NodeId, now: u64, trace: &mut Trace) {
        for index in 0..self.clients.len() {
            let waiting_on = match self.clients[index].state {
                ClientState::Writing { node, .. } | ClientState::Reading { node, .. } => node,
                ClientState::Idle { .. } => continue,
            };
            if waiting_on == node {
                self.abandon(index, "node crashed", now, trace);
            }
        }
    }

    /// Abandons operations past their deadline.
    pub fn expire(&mut self, now: u64, trace: &mut Trace) {
        for index in 0..self.clients.len() {
            let deadline = match self.clients[index].state {
                ClientState::Writing { deadline, .. } | ClientState::Reading { deadline, .. } => deadline,
                ClientState::Idle { .. } => continue,
            };
            if deadline <= now {
                self.abandon(index, "timed out", now, trace);
            }
        }
    }
}
