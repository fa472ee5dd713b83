//! An in-memory cluster of cores for protocol scenarios: a perfect but controllable
//! network (partitions, crashed nodes), per-node disks that can be stalled, and a text
//! rendering of what happened, so scenario files read like the protocol.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use concord_raft::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, HardState, LogStore, MemoryLog, Message, MessageBody, NodeId,
    Raft, Role,
};

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
    /// The state machine: every entry applied, in order (restored from the snapshot on a
    /// restart or an install, so it always starts at index 1).
    pub applied: Vec<Entry>,
    /// Snapshot bytes received from the leader and not yet installed.
    staging: Vec<u8>,
}

impl Node {
    /// A running node with an empty disk.
    fn fresh(config: Config) -> Node {
        let durable = MemoryLog::new();
        let raft = Raft::new(config.clone(), durable.clone(), 0).expect("valid config");
        Node {
            raft: Some(raft),
            config,
            durable,
            stalled: false,
            disk_queue: VecDeque::new(),
            applied: Vec::new(),
            staging: Vec::new(),
        }
    }
}

/// The harness's snapshot format: the applied entries, so an installed snapshot can be
/// compared entry by entry with what the other nodes applied.
pub fn encode_applied(entries: &[Entry]) -> Bytes {
    let mut out = BytesMut::new();
    for entry in entries {
        out.put_u64_le(entry.index);
        out.put_u64_le(entry.term);
        out.put_u8(u8::from(entry.kind == EntryKind::ConfChange));
        out.put_u32_le(entry.data.len() as u32);
        out.put_slice(&entry.data);
    }
    out.freeze()
}

pub fn decode_applied(mut bytes: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    while bytes.has_remaining() {
        let index = bytes.get_u64_le();
        let term = bytes.get_u64_le();
        let kind = if bytes.get_u8() == 1 { EntryKind::ConfChange } else { EntryKind::Normal };
        let len = bytes.get_u32_le() as usize;
        let data = Bytes::copy_from_slice(&bytes[..len]);
        bytes.advance(len);
        entries.push(Entry { index, term, kind, data });
    }
    entries
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
    /// The message size limit the cluster was created with (given to nodes added later).
    pub max_message_bytes: Option<u64>,
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
            nodes.insert(id, Node::fresh(config));
        }
        Cluster {
            nodes,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            verbose: false,
            auto: true,
            max_message_bytes: None,
            out: String::new(),
        }
    }

    /// Adds a node that joins the running cluster: empty disk, no bootstrap membership.
    pub fn add_node(&mut self, id: NodeId, adjust: impl Fn(&mut Config)) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let mut config = Config::new(id, Vec::new());
        config.seed = id * 7919;
        adjust(&mut config);
        self.nodes.insert(id, Node::fresh(config));
    }

    /// Proposes a membership change at `id`.
    pub fn conf_change(&mut self, id: NodeId, kind: ConfChangeKind, node: NodeId) {
        let change = ConfChange { kind, node, context: Bytes::new() };
        match self.raft(id).propose_conf_change(change) {
            Ok(index) => writeln!(self.out, "n{id} proposed {kind:?} n{node} at index {index}").unwrap(),
            Err(error) => writeln!(self.out, "n{id} refused {kind:?} n{node}: {error}").unwrap(),
        }
    }

    /// `id` snapshots its state machine at what it applied and compacts its log through
    /// that index minus `keep` entries.
    pub fn snapshot(&mut self, id: NodeId, keep: u64) {
        self.flush_disk(id);
        let node = self.nodes.get_mut(&id).expect("node exists");
        let raft = node.raft.as_mut().expect("node is live");
        let index = node.applied.last().map_or(0, |e| e.index);
        let meta = raft.snapshot_meta_at(index).expect("the applied index has a snapshot");
        let data = encode_applied(&node.applied);
        raft.store_mut().save_snapshot(meta.clone(), data.clone());
        node.durable.save_snapshot(meta.clone(), data);
        let compact_to = index.saturating_sub(keep).max(raft.store().first_index() - 1);
        raft.store_mut().compact(compact_to);
        node.durable.compact(compact_to);
        raft.compact(compact_to);
        writeln!(self.out, "n{id} snapshot at {}/{}, log compacted through {compact_to}", meta.index, meta.term)
            .unwrap();
    }

    /// Each node's view of the membership.
    pub fn members(&mut self) {
        for (id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            let list = |set: &BTreeSet<NodeId>| set.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",");
            let membership = raft.membership();
            writeln!(
                self.out,
                "n{id}: voters=({}) learners=({}) set at {} first={}",
                list(&membership.voters),
                list(&membership.learners),
                raft.membership_index(),
                raft.first_index()
            )
            .unwrap();
        }
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
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                node.staging.clear();
            }
            assert_eq!(chunk.offset, node.staging.len() as u64, "chunks arrive in order");
            node.staging.extend_from_slice(&chunk.data);
        }
        if let Some(meta) = ready.install_snapshot {
            // Installs wait for earlier writes (the snapshot supersedes what they wrote, so
            // they are not reported persisted), then are durable at once.
            while let Some(job) = node.disk_queue.pop_front() {
                complete_write(&mut node.durable, &mut self.in_flight, job);
            }
            let data = Bytes::from(std::mem::take(&mut node.staging));
            node.applied = decode_applied(&data);
            assert_eq!(node.applied.last().map_or(0, |e| e.index), meta.index, "the snapshot holds what it says");
            writeln!(self.out, "n{id} installed snapshot {}/{}", meta.index, meta.term).unwrap();
            raft.store_mut().save_snapshot(meta.clone(), data.clone());
            node.durable.save_snapshot(meta, data);
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
            let data: Vec<String> = ready
                .committed_entries
                .iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| if e.kind == EntryKind::ConfChange { render_conf_change(e) } else { render_data(&e.data) })
                .collect();
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
            if let Some((index, term)) = complete_write(&mut node.durable, &mut self.in_flight, job) {
                node.raft.as_mut().expect("live").on_persisted(index, term);
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
            self.raft(to).step(message).unwrap();
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
        node.staging.clear();
        self.in_flight.retain(|m| m.from != id);
    }

    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.raft.is_none(), "node {id} is running");
        node.stalled = false;
        let mut config = node.config.clone();
        config.seed = config.seed.wrapping_add(1);
        node.config = config.clone();
        // The state machine comes back from the durable snapshot, the rest from the log.
        node.applied = decode_applied(node.durable.snapshot_data());
        let applied = node.durable.snapshot_meta().index;
        node.raft = Some(Raft::new(config, node.durable.clone(), applied).expect("restart"));
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
            let entries = raft.log_entries(raft.first_index(), raft.last_index() + 1);
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

/// Makes one queued write durable and releases the messages that waited for it; returns
/// the last entry written.
fn complete_write(durable: &mut MemoryLog, in_flight: &mut Vec<Message>, job: DiskJob) -> Option<(u64, u64)> {
    if let Some(hard_state) = job.hard_state {
        durable.hard_state = hard_state;
    }
    durable.append(&job.entries);
    in_flight.extend(job.messages_after_persist);
    job.entries.last().map(|last| (last.index, last.term))
}

pub fn render_data(data: &Bytes) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A configuration entry as `conf(+learner 4)`, `conf(+voter 4)` or `conf(-3)`.
pub fn render_conf_change(entry: &Entry) -> String {
    let decoded = concord_raft::ConfChangeEntry::decode(&entry.data).expect("a valid configuration entry");
    let node = decoded.change.node;
    match decoded.change.kind {
        ConfChangeKind::AddLearner => format!("conf(+learner {node})"),
        ConfChangeKind::AddVoter => format!("conf(+voter {node})"),
        ConfChangeKind::RemoveNode => format!("conf(-{node})"),
    }
}

pub fn render_entry(entry: &Entry) -> String {
    if entry.kind == EntryKind::ConfChange {
        format!("{}/{}:{}", entry.index, entry.term, render_conf_change(entry))
    } else if entry.data.is_empty() {
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
