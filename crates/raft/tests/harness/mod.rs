//! An in-memory cluster of cores for protocol scenarios: a perfect but controllable
//! network (partitions, crashed nodes), per-node disks that can be stalled, and a text
//! rendering of what happened, so scenario files read like the protocol.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use concord_raft::{Config, Entry, HardState, MemoryLog, Message, MessageBody, NodeId, Raft, Role};

/// One Ready's write, held while a node's disk is stalled.
struct DiskJob {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    messages_after_persist: Vec<Message>,
}

pub struct Node {
    pub raft: Option<Raft<MemoryLog>>,
    config: Config,
    /// What survives a crash.
    durable: MemoryLog,
    stalled: bool,
    disk_queue: VecDeque<DiskJob>,
    /// Entries applied since the last (re)start, in order.
    pub applied: Vec<Entry>,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    in_flight: Vec<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Print every delivered message.
    pub verbose: bool,
    /// When false, commands leave messages in flight for `process`/`deliver`/`drop`.
    pub auto: bool,
    pub out: String,
}

/// Most delivery rounds `stabilize` runs before declaring a livelock.
const MAX_ROUNDS: usize = 10_000;

impl Cluster {
    pub fn new(size: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let mut config = Config::new(id, voters.clone());
            config.seed = id * 7919;
            adjust(&mut config);
            let durable = MemoryLog::new();
            let raft = Raft::new(config.clone(), durable.clone(), 0).expect("valid config");
            nodes.insert(
                id,
                Node {
                    raft: Some(raft),
                    config,
                    durable,
                    stalled: false,
                    disk_queue: VecDeque::new(),
                    applied: Vec::new(),
                },
            );
        }
        Cluster { nodes, in_flight: Vec::new(), cut: BTreeSet::new(), verbose: false, auto: true, out: String::new() }
    }

    pub fn raft(&mut self, id: NodeId) -> &mut Raft<MemoryLog> {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).unwrap_or_else(|| panic!("node {id} is down"))
    }

    pub fn live_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.raft.is_some()).map(|(id, _)| *id).collect()
    }

    pub fn take_output(&mut self) -> String {
        let out = std::mem::take(&mut self.out);
        if out.is_empty() {
            "ok\n".to_string()
        } else {
            out
        }
    }

    pub fn tick(&mut self, ids: &[NodeId], count: u32) {
        for _ in 0..count {
            for &id in ids {
                if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                    raft.tick();
                }
            }
            if self.auto {
                self.stabilize();
            }
        }
    }

    /// Handles every node's Ready and delivers every message until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for id in self.live_ids() {
                while self.nodes[&id].raft.as_ref().is_some_and(|r| r.has_ready()) {
                    self.handle_ready(id);
                    moved = true;
                }
            }
            if !self.in_flight.is_empty() {
                let batch = std::mem::take(&mut self.in_flight);
                for message in batch {
                    self.deliver(message);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize within {MAX_ROUNDS} rounds");
    }

    /// Manual mode: handles `id`'s Readies (persisting unless stalled) without delivering.
    pub fn process(&mut self, id: NodeId) {
        while self.nodes[&id].raft.as_ref().is_some_and(|r| r.has_ready()) {
            self.handle_ready(id);
        }
    }

    /// Manual mode: delivers the in-flight messages addressed to `to`, printing them.
    pub fn deliver_to(&mut self, to: NodeId) {
        let (batch, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight).into_iter().partition(|m| m.to == to);
        self.in_flight = rest;
        for message in batch {
            writeln!(self.out, "{}", render_message(&message)).unwrap();
            self.deliver_quietly(message);
        }
    }

    /// Manual mode: loses the in-flight messages sent by `from`, printing them.
    pub fn drop_from(&mut self, from: NodeId) {
        let (batch, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|m| m.from == from);
        self.in_flight = rest;
        for message in batch {
            writeln!(self.out, "{}  (dropped)", render_message(&message)).unwrap();
        }
    }

    fn deliver_quietly(&mut self, message: Message) {
        let verbose = std::mem::replace(&mut self.verbose, false);
        self.deliver(message);
        self.verbose = verbose;
    }

    fn handle_ready(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let raft = node.raft.as_mut().expect("node is live");
        let ready = raft.ready();
        if let Some(soft) = ready.soft_state {
            let role = match soft.role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre-candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            };
            let leader = if soft.leader == 0 { "no leader".to_string() } else { format!("leader n{}", soft.leader) };
            writeln!(self.out, "n{id} is {role} at term {} ({leader})", soft.term).unwrap();
        }
        // The page cache sees writes at once; the durable copy only when the job completes.
        if let Some(hard_state) = ready.hard_state {
            raft.store_mut().hard_state = hard_state;
        }
        raft.store_mut().append(&ready.entries);
        self.in_flight.extend(ready.messages);
        let job = DiskJob {
            hard_state: ready.hard_state,
            entries: ready.entries,
            messages_after_persist: ready.messages_after_persist,
        };
        node.disk_queue.push_back(job);
        if !ready.committed_entries.is_empty() {
            let first = ready.committed_entries[0].index;
            let last = ready.committed_entries.last().unwrap().index;
            let data: Vec<String> =
                ready.committed_entries.iter().filter(|e| !e.data.is_empty()).map(|e| render_data(&e.data)).collect();
            writeln!(self.out, "n{id} applied {first}..={last} [{}]", data.join(" ")).unwrap();
            node.applied.extend(ready.committed_entries);
        }
        for read in ready.read_states {
            writeln!(self.out, "n{id} read {} ready at index {}", read.request_id, read.index).unwrap();
        }
        if !node.stalled {
            self.flush_disk(id);
        }
    }

    /// Completes every queued write of `id`'s disk, in order.
    pub fn flush_disk(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        while let Some(job) = node.disk_queue.pop_front() {
            if let Some(hard_state) = job.hard_state {
                node.durable.hard_state = hard_state;
            }
            node.durable.append(&job.entries);
            self.in_flight.extend(job.messages_after_persist);
            if let Some(last) = job.entries.last() {
                node.raft.as_mut().expect("live").on_persisted(last.index, last.term);
            }
        }
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let reachable = !self.cut.contains(&(from, to)) && self.nodes.get(&to).is_some_and(|n| n.raft.is_some());
        if self.verbose {
            let fate = if reachable { "" } else { "  (dropped)" };
            writeln!(self.out, "{}{fate}", render_message(&message)).unwrap();
        }
        if reachable {
            self.raft(to).step(message);
        }
    }

    pub fn stall(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).unwrap().stalled = true;
    }

    pub fn unstall(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).unwrap().stalled = false;
        self.flush_disk(id);
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, left: &[NodeId], right: &[NodeId]) {
        for &a in left {
            for &b in right {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Cuts only `from -> to`.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&n| n != id).collect();
        self.partition(&[id], &others);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Loses the node's memory and every write its disk has not completed.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.raft = None;
        node.disk_queue.clear();
        node.applied.clear();
        self.in_flight.retain(|m| m.from != id);
    }

    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.raft.is_none(), "node {id} is running");
        node.stalled = false;
        let mut config = node.config.clone();
        config.seed = config.seed.wrapping_add(1);
        node.config = config.clone();
        node.raft = Some(Raft::new(config, node.durable.clone(), 0).expect("restart"));
    }

    pub fn propose(&mut self, id: NodeId, data: &str) {
        let result = self.raft(id).propose(Bytes::copy_from_slice(data.as_bytes()));
        match result {
            Ok(index) => writeln!(self.out, "n{id} proposed {data:?} at index {index}").unwrap(),
            Err(error) => writeln!(self.out, "n{id} refused {data:?}: {error}").unwrap(),
        }
    }

    pub fn status(&mut self) {
        for (id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                writeln!(self.out, "n{id}: down").unwrap();
                continue;
            };
            let role = format!("{:?}", raft.role()).to_lowercase();
            writeln!(
                self.out,
                "n{id}: {role} term={} vote={} leader={} commit={} last={} applied={}",
                raft.term(),
                raft.vote(),
                raft.leader(),
                raft.commit_index(),
                raft.last_index(),
                node.applied.last().map(|e| e.index).unwrap_or(0),
            )
            .unwrap();
        }
    }

    /// Each node's log as `index/term` pairs (data after a colon when present).
    pub fn logs(&mut self) {
        for (id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            let entries = raft.log_entries(1, raft.last_index() + 1);
            let rendered: Vec<String> = entries.iter().map(render_entry).collect();
            writeln!(self.out, "n{id}: {}", rendered.join(" ")).unwrap();
        }
    }

    /// Asserts that every pair of live nodes agrees on what it applied.
    pub fn check_applied_agree(&self) -> Result<(), String> {
        let mut reference: BTreeMap<u64, (u64, Bytes)> = BTreeMap::new();
        for (id, node) in &self.nodes {
            for entry in &node.applied {
                let seen = reference.entry(entry.index).or_insert((entry.term, entry.data.clone()));
                if seen.0 != entry.term || seen.1 != entry.data {
                    return Err(format!("n{id} applied a different entry at index {}", entry.index));
                }
            }
        }
        Ok(())
    }
}

pub fn render_data(data: &Bytes) -> String {
    String::from_utf8_lossy(data).into_owned()
}

pub fn render_entry(entry: &Entry) -> String {
    if entry.data.is_empty() {
        format!("{}/{}", entry.index, entry.term)
    } else {
        format!("{}/{}:{}", entry.index, entry.term, render_data(&entry.data))
    }
}

pub fn render_message(message: &Message) -> String {
    let head = format!("{}->{} {} t{}", message.from, message.to, message.kind_name(), message.term);
    let tail = match &message.body {
        MessageBody::RequestVote { last_log_index, last_log_term, leader_transfer, .. } => {
            let transfer = if *leader_transfer { " transfer" } else { "" };
            format!(" last={last_log_index}/{last_log_term}{transfer}")
        }
        MessageBody::RequestVoteResponse { granted, .. } => {
            if *granted {
                " granted".into()
            } else {
                " rejected".into()
            }
        }
        MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
            let rendered: Vec<String> = entries.iter().map(render_entry).collect();
            format!(" prev={prev_log_index}/{prev_log_term} [{}] commit={leader_commit}", rendered.join(" "))
        }
        MessageBody::AppendEntriesResponse { result: Ok(index) } => format!(" match={index}"),
        MessageBody::AppendEntriesResponse { result: Err(hint) } => {
            format!(" reject={} hint={}/{}", hint.rejected_index, hint.hint_index, hint.hint_term)
        }
        MessageBody::Heartbeat { commit, read_round } => {
            format!(" commit={commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => format!(" round={read_round}"),
        MessageBody::ReadIndexRequest { request_id } => format!(" id={request_id}"),
        MessageBody::ReadIndexResponse { request_id, index } => {
            format!(" id={request_id} index={index}")
        }
        MessageBody::TimeoutNow => String::new(),
        MessageBody::InstallSnapshot { chunk } => format!(
            " index={}/{} offset={} bytes={}{}",
            chunk.meta.index,
            chunk.meta.term,
            chunk.offset,
            chunk.data.len(),
            if chunk.last { " last" } else { "" }
        ),
        MessageBody::InstallSnapshotResponse { index, next_offset } => format!(" index={index} next={next_offset}"),
    };
    head + &tail
}
