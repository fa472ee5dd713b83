//! Regressions found by the deterministic simulator (`concord-sim`), replayed here as
//! small, explicit scenarios so they stay fixed whatever happens to the simulator's seeds.
//!
//! Each test drives a few cores by hand with a minimal, self-contained driver (a
//! `MemoryLog` per node, Readies persisted at once, messages delivered in order unless a
//! link is cut) and names the seed that first showed the problem.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use concord_raft::{ConfChange, ConfChangeKind, Config, LogStore, MemoryLog, Message, NodeId, Raft, Role, Term};

/// A cluster of cores with instant disks and an ordered network.
struct Cluster {
    nodes: BTreeMap<NodeId, Raft<MemoryLog>>,
    /// What each node's disk holds, for restarts.
    disks: BTreeMap<NodeId, MemoryLog>,
    in_flight: VecDeque<Message>,
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Cluster {
    fn new(voters: &[NodeId]) -> Self {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
        };
        for &id in voters {
            cluster.disks.insert(id, MemoryLog::new());
            cluster.start(id, voters);
        }
        cluster
    }

    fn config(id: NodeId, voters: &[NodeId]) -> Config {
        let mut config = Config::new(id, voters.to_vec());
        config.seed = id * 7919;
        config
    }

    fn start(&mut self, id: NodeId, bootstrap: &[NodeId]) {
        let store = self.disks[&id].clone();
        let raft = Raft::new(Self::config(id, bootstrap), store, 0).expect("starts");
        self.nodes.insert(id, raft);
    }

    fn crash(&mut self, id: NodeId) {
        let raft = self.nodes.remove(&id).expect("up");
        // Every Ready was persisted at once: the page cache is the disk.
        self.disks.insert(id, raft.store().clone());
    }

    /// Handles every Ready and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let raft = self.nodes.get_mut(&id).expect("up");
                while raft.has_ready() {
                    busy = true;
                    let ready = raft.ready();
                    assert!(ready.install_snapshot.is_none() && ready.snapshot_chunks.is_empty(), "no snapshots here");
                    if let Some(hard_state) = ready.hard_state {
                        raft.store_mut().hard_state = hard_state;
                    }
                    raft.store_mut().append(&ready.entries);
                    if let Some(last) = ready.entries.last() {
                        raft.on_persisted(last.index, last.term);
                    }
                    self.in_flight.extend(ready.messages);
                    self.in_flight.extend(ready.messages_after_persist);
                }
            }
            while let Some(message) = self.in_flight.pop_front() {
                busy = true;
                if self.cut.contains(&(message.from, message.to)) {
                    continue;
                }
                if let Some(raft) = self.nodes.get_mut(&message.to) {
                    raft.step(message);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    /// Ticks every node `ticks` times, settling after each tick.
    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for raft in self.nodes.values_mut() {
                raft.tick();
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes.values().filter(|r| r.role() == Role::Leader).max_by_key(|r| r.term()).map(|r| r.id())
    }

    fn elect(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("up").campaign();
        self.settle();
        assert_eq!(self.leader(), Some(id), "node {id} should have won");
    }

    fn propose(&mut self, id: NodeId, data: &'static str) {
        self.nodes.get_mut(&id).expect("up").propose(Bytes::from_static(data.as_bytes())).expect("leader accepts");
        self.settle();
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.disks.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }
}

fn remove(node: NodeId) -> ConfChange {
    ConfChange { kind: ConfChangeKind::RemoveNode, node, context: Bytes::new() }
}

/// concord-sim seed 4 (3 nodes): a leader of {2, 5} appended its own removal (config
/// {5}) while cut off from 5, then crashed. Back up, its latest configuration (not
/// committed) no longer had it as a voter, so it never campaigned; node 5 could not win
/// either, because 2's log was longer and 2 refused its vote. The cluster stayed without a
/// leader for good. A node removed by an uncommitted configuration entry must still
/// campaign (without counting its own vote): it may be needed to commit that entry (Raft
/// dissertation §4.2.2).
#[test]
fn a_leader_whose_own_removal_is_uncommitted_can_still_be_elected_to_finish_it() {
    let mut cluster = Cluster::new(&[1, 2]);
    cluster.elect(1);
    cluster.propose(1, "x");
    let committed = cluster.nodes[&1].commit_index();
    assert_eq!(cluster.nodes[&2].commit_index(), committed);

    // The leader removes itself while cut off: the entry exists on it alone.
    cluster.isolate(1);
    let index = cluster.nodes.get_mut(&1).unwrap().propose_conf_change(remove(1)).expect("accepted");
    cluster.settle();
    assert_eq!(cluster.nodes[&1].membership().voters, BTreeSet::from([2]));
    assert_eq!(cluster.nodes[&2].membership().voters, BTreeSet::from([1, 2]));
    cluster.crash(1);
    cluster.start(1, &[1, 2]);
    cluster.heal();
    assert_eq!(cluster.nodes[&1].last_index(), index);

    // Node 2 cannot win: node 1's log is longer. Node 1 must campaign and win with 2's
    // vote alone, commit its removal, and hand over to 2.
    cluster.tick(200);
    let leader = cluster.leader().expect("some node leads again");
    assert_eq!(leader, 2, "node 2 leads once node 1's removal is committed");
    let raft = &cluster.nodes[&2];
    assert!(raft.commit_index() >= index, "the removal is committed");
    assert_eq!(raft.membership().voters, BTreeSet::from([2]));
    assert_eq!(cluster.nodes[&1].role(), Role::Follower);
    let term_of = |raft: &Raft<MemoryLog>, index| -> Term { raft.store().term(index).unwrap() };
    assert_eq!(term_of(&cluster.nodes[&1], index), term_of(raft, index));
}
