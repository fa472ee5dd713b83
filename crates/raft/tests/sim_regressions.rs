//! Regressions found by the deterministic simulator (`concord-sim`), replayed here as
//! small, explicit scenarios so they stay fixed whatever happens to the simulator's seeds.
//!
//! Each test drives a few cores by hand with a minimal, self-contained driver (a
//! `MemoryLog` per node, Readies persisted at once, messages delivered in order unless a
//! link is cut) and names the seed that first showed the problem.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use concord_raft::{
    ConfChange, ConfChangeKind, Config, LogStore, Membership, MemoryLog, Message, MessageBody, NodeId, Raft, Role,
    SnapshotChunk, SnapshotMeta, SnapshotStaging, Term,
};

/// A cluster of cores with instant disks and an ordered network.
struct Cluster {
    nodes: BTreeMap<NodeId, Raft<MemoryLog>>,
    /// What each node's disk holds, for restarts.
    disks: BTreeMap<NodeId, MemoryLog>,
    in_flight: VecDeque<Message>,
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Messages for which this returns true are lost.
    drop_if: Box<dyn Fn(&Message) -> bool>,
    /// Snapshot chunks staged by each node.
    staged: BTreeMap<NodeId, SnapshotStaging>,
    max_message_bytes: u64,
}

impl Cluster {
    fn new(voters: &[NodeId]) -> Self {
        Self::with_message_bytes(voters, 1 << 20)
    }

    fn with_message_bytes(voters: &[NodeId], max_message_bytes: u64) -> Self {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            drop_if: Box::new(|_| false),
            staged: BTreeMap::new(),
            max_message_bytes,
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
        let applied = store.snapshot_meta().index;
        let mut config = Self::config(id, bootstrap);
        config.max_message_bytes = self.max_message_bytes;
        let raft = Raft::new(config, store, applied).expect("starts");
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
                    let handled = raft.handle_ready_in_memory(self.staged.entry(id).or_default());
                    self.in_flight.extend(handled.messages);
                }
            }
            while let Some(message) = self.in_flight.pop_front() {
                busy = true;
                if self.cut.contains(&(message.from, message.to)) || (self.drop_if)(&message) {
                    continue;
                }
                if let Some(raft) = self.nodes.get_mut(&message.to) {
                    raft.step(message).unwrap();
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

fn add_voter(node: NodeId) -> ConfChange {
    ConfChange { kind: ConfChangeKind::AddVoter, node, context: Bytes::new() }
}

/// concord-sim seeds 41, 52, 185, 209 (3 nodes): a voter was added directly on a fresh
/// node (empty disk, no membership yet, as `member add` does), and the leader lost its
/// leadership before the new node received anything. The new node's vote was then
/// needed, but it knew no configuration, so it took every candidate for a non-voter and
/// ignored its vote requests: no leader, for good. Here: {1, 2, 3} adds 4, the change
/// commits on 1, 2, 3, and node 1 is lost for good; 2 and 3 need 4's vote to go on.
#[test]
fn a_node_that_knows_no_configuration_yet_answers_vote_requests() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.disks.insert(4, MemoryLog::new());
    cluster.start(4, &[]);
    cluster.elect(1);
    cluster.propose(1, "x");
    for other in [1, 2, 3] {
        cluster.cut.insert((other, 4));
    }
    let index = cluster.nodes.get_mut(&1).unwrap().propose_conf_change(add_voter(4)).expect("accepted");
    cluster.settle();
    assert!(cluster.nodes[&1].commit_index() >= index, "1, 2 and 3 are a majority of {{1, 2, 3, 4}}");
    assert_eq!(cluster.nodes[&4].last_index(), 0, "node 4 received nothing");
    cluster.crash(1);
    cluster.heal();

    cluster.tick(300);
    let leader = cluster.leader().expect("2, 3 and 4 are a majority of {1, 2, 3, 4}");
    assert!([2, 3].contains(&leader), "{leader}");
    cluster.propose(leader, "y");
    let raft = &cluster.nodes[&leader];
    assert_eq!(raft.commit_index(), raft.last_index());
    assert_eq!(cluster.nodes[&4].commit_index(), raft.commit_index(), "node 4 caught up");
}

/// concord-sim seed 260 (3 nodes): a follower received the last chunk of the snapshot
/// at 85 and, before the application took a Ready, the first chunk of the leader's newer
/// snapshot at 92. One Ready carried both chunks and asked to install the snapshot at 85.
/// The contract says to stage the chunks in order (a chunk at offset 0 starts a new
/// snapshot) and then install the staged snapshot, which was by then the start of the
/// one at 92. The chunks of a later snapshot must wait for the next Ready.
#[test]
fn a_ready_that_installs_a_snapshot_carries_no_chunk_of_a_later_one() {
    let mut follower = Raft::new(Cluster::config(2, &[1, 2]), MemoryLog::new(), 0).expect("starts");
    let meta = |index| SnapshotMeta { index, term: 1, membership: Membership::new([1, 2], []) };
    let chunk = |index, offset, data: &'static [u8], last| Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot {
            chunk: SnapshotChunk { meta: meta(index), offset, data: Bytes::from_static(data), last },
        },
    };
    follower.step(chunk(85, 0, b"snapshot at 85", true)).unwrap();
    follower.step(chunk(92, 0, b"first half of 92", false)).unwrap();
    let ready = follower.ready();
    assert_eq!(ready.install_snapshot, Some(meta(85)));
    let staged: Vec<(u64, u64)> = ready.snapshot_chunks.iter().map(|c| (c.meta.index, c.offset)).collect();
    assert_eq!(staged, vec![(85, 0)], "the Ready ends with the snapshot it installs");
    let next = follower.ready();
    assert_eq!(next.install_snapshot, None);
    let staged: Vec<(u64, u64)> = next.snapshot_chunks.iter().map(|c| (c.meta.index, c.offset)).collect();
    assert_eq!(staged, vec![(92, 0)], "the newer snapshot's chunk comes in the next Ready");
}

/// concord-sim seed 391 (3 nodes): a leader sending a snapshot in chunks took a
/// reordered (older) answer of the follower, with a lower offset, for a restart of the
/// follower and rewound its transfer there; the follower, which held more, answered
/// with its real position, which was past what the leader had sent since the rewind, and
/// the leader ignored such answers. It rewound again at every stall, for good: the
/// follower never caught up (in the seed, a voter of a two-voter configuration, so
/// nothing was committed again).
#[test]
fn a_snapshot_transfer_goes_on_from_where_the_follower_says_it_is() {
    let mut cluster = Cluster::with_message_bytes(&[1, 2, 3], 100);
    cluster.elect(1);
    // Node 3 misses committed entries, and the leader compacts them away.
    cluster.isolate(3);
    cluster.propose(1, "x");
    cluster.propose(1, "y");
    let leader = cluster.nodes.get_mut(&1).unwrap();
    let applied = leader.commit_index();
    assert_eq!(applied, leader.last_index());
    let meta = leader.snapshot_meta_at(applied).expect("applied");
    let store = leader.store_mut();
    store.save_snapshot(meta.clone(), Bytes::from(vec![7u8; 1_000]));
    store.compact(applied);
    leader.compact(applied);
    // Node 3 receives the first 700 bytes; everything it says gets through.
    cluster.drop_if = Box::new(|m| matches!(&m.body, MessageBody::InstallSnapshot { chunk } if chunk.offset >= 700));
    cluster.heal();
    cluster.tick(3);
    assert_eq!(cluster.staged.get(&3).and_then(|s| s.staged()).map(|(_, data)| data.len()), Some(700));
    // A reordered old answer arrives late; then the network is fine again.
    let stale = Message {
        from: 3,
        to: 1,
        term: cluster.nodes[&1].term(),
        body: MessageBody::InstallSnapshotResponse { index: meta.index, next_offset: 100 },
    };
    cluster.drop_if = Box::new(|_| false);
    cluster.in_flight.push_back(stale);
    cluster.settle();
    cluster.tick(100);
    let follower = &cluster.nodes[&3];
    assert_eq!(follower.store().snapshot_meta(), meta, "the follower installed the snapshot");
    assert_eq!(follower.commit_index(), cluster.nodes[&1].commit_index());
}

/// concord-sim seeds 620 and 693 (3 nodes), in their general form: a node ignored vote
/// requests from any node that was not a voter of its own latest configuration. A
/// voter that lags behind a change does not know the voters it added, so it ignored the
/// only candidates that could win. Here node 1 is replaced by node 4 while node 3 is cut
/// off, then node 2 is lost: 3 and 4 are a majority of {2, 3, 4}, but 3 (still at
/// {1, 2, 3}) ignored 4, and 4 would not vote for 3 (whose log is behind). Only a node
/// whose removal this node knows to be committed may be ignored.
#[test]
fn a_lagging_voter_answers_a_voter_it_does_not_know_yet() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.disks.insert(4, MemoryLog::new());
    cluster.start(4, &[]);
    cluster.elect(1);
    cluster.propose(1, "x");
    cluster.isolate(3);
    cluster.nodes.get_mut(&1).unwrap().propose_conf_change(add_voter(4)).expect("accepted");
    cluster.settle();
    cluster.propose(1, "y");
    let index = cluster.nodes.get_mut(&1).unwrap().propose_conf_change(remove(1)).expect("accepted");
    cluster.settle();
    // The removal committed on 2 and 4 ({2, 3, 4}); node 1 stepped down.
    assert!(cluster.nodes[&2].commit_index() >= index && cluster.nodes[&4].commit_index() >= index);
    assert_eq!(cluster.nodes[&3].membership().voters, BTreeSet::from([1, 2, 3]));
    // Nodes 1 and 2 are gone for good; 4 restarts (so it does not lead already).
    cluster.crash(1);
    cluster.crash(2);
    cluster.crash(4);
    cluster.start(4, &[]);
    cluster.heal();

    cluster.tick(300);
    assert_eq!(cluster.leader(), Some(4), "3 and 4 are a majority of {{2, 3, 4}}");
    cluster.propose(4, "z");
    let leader = &cluster.nodes[&4];
    assert_eq!(cluster.nodes[&3].commit_index(), leader.commit_index());
    assert_eq!(cluster.nodes[&3].membership().voters, BTreeSet::from([2, 3, 4]));
}

/// The vote filter still does what it is for: a node whose removal is committed in the
/// receiver's log can neither get its vote nor raise its term.
#[test]
fn a_node_whose_removal_is_committed_is_ignored() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.elect(1);
    let index = cluster.nodes.get_mut(&1).unwrap().propose_conf_change(remove(3)).expect("accepted");
    cluster.settle();
    cluster.propose(1, "x");
    assert!(cluster.nodes[&2].commit_index() > index, "node 2 knows the removal is committed");
    let term = cluster.nodes[&2].term();
    let request = Message {
        from: 3,
        to: 2,
        term: term + 5,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 100,
            last_log_term: term + 4,
            leader_transfer: true,
        },
    };
    let node_2 = cluster.nodes.get_mut(&2).unwrap();
    node_2.step(request).unwrap();
    assert_eq!(node_2.term(), term, "the removed node raised no term");
    assert!(!node_2.has_ready() || node_2.ready().messages_after_persist.is_empty(), "and got no answer");
}

/// Persists every Ready of `raft` at once (including what the Ready says to install) and
/// returns the messages it sends.
fn persist_all(raft: &mut Raft<MemoryLog>) -> Vec<Message> {
    let mut out = Vec::new();
    while raft.has_ready() {
        let ready = raft.ready();
        assert!(ready.install_snapshot.is_none(), "no snapshots here");
        if let Some(hard_state) = ready.hard_state {
            raft.store_mut().hard_state = hard_state;
        }
        raft.store_mut().append(&ready.entries);
        if let Some(last) = ready.entries.last() {
            raft.on_persisted(last.index, last.term);
        }
        out.extend(ready.messages);
        out.extend(ready.messages_after_persist);
    }
    out
}

/// concord-sim seed 36 (3 nodes, with --bug stale-read, which played no part): a single
/// voter wins its election without asking anyone, so it led before its new term and
/// vote were on disk, and as a leader it sent its AppendEntries at once, in parallel
/// with that write. It crashed before the write: back in the previous term, it could
/// lead the same term again with different entries (or, in the seed, vote for another
/// candidate of that term: two leaders in one term). Here a learner kept the first
/// incarnation's entry at the same index and term as the second incarnation's different
/// one: Log Matching broken, and the learner would apply the wrong entry.
#[test]
fn a_single_voter_sends_nothing_as_leader_before_its_term_is_durable() {
    let config = |id| {
        let mut config = Cluster::config(id, &[1]);
        config.learners = vec![2];
        config
    };
    let mut learner = Raft::new(config(2), MemoryLog::new(), 0).expect("starts");
    let mut leader = Raft::new(config(1), MemoryLog::new(), 0).expect("starts");
    leader.campaign();
    assert_eq!((leader.role(), leader.term()), (Role::Leader, 1));
    leader.propose(Bytes::from_static(b"first")).expect("leader");
    // The leader sends what it may send at once, for two round trips with the learner,
    // and crashes before its own disk write completed.
    for _ in 0..2 {
        let ready = leader.ready();
        for message in ready.messages {
            learner.step(message).unwrap();
        }
        for message in persist_all(&mut learner) {
            leader.step(message).unwrap();
        }
    }
    let mut leader = Raft::new(config(1), MemoryLog::new(), 0).expect("restarts from an empty disk");
    leader.campaign();
    assert_eq!((leader.role(), leader.term()), (Role::Leader, 1), "the same term again");
    let index = leader.propose(Bytes::from_static(b"second")).expect("leader");
    for _ in 0..10 {
        for message in persist_all(&mut leader) {
            learner.step(message).unwrap();
        }
        for message in persist_all(&mut learner) {
            leader.step(message).unwrap();
        }
    }
    assert_eq!(leader.commit_index(), index);
    assert_eq!(learner.commit_index(), index);
    let entry = |raft: &Raft<MemoryLog>| raft.log_entries(index, index + 1).remove(0);
    assert_eq!(entry(&learner), entry(&leader), "the learner holds the leader's entry");
}

/// Simulator seed 144 (`--state-machine mvcc`, 3 nodes, pre-vote off, once the apply ran
/// apart from the Raft loop): the voters of the last configuration were 2 and 4, and 2 had missed the
/// changes that made it so: in its stale configuration 4 was a learner. Both campaigned
/// for ever. 2 never asked 4 for a vote, and ignored 4's requests, whose term was always
/// a little below its own, without answering; so 4 never learned 2's term, and its
/// campaigns could never be one 2 votes in. A vote request of a stale term is now
/// answered with a refusal that carries the receiver's term, as the Raft paper's
/// RequestVote answers it, and the candidate adopts that term.
#[test]
fn a_vote_request_of_a_stale_term_is_answered_with_the_current_term() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.elect(1);
    let term = cluster.nodes[&2].term();
    // Node 2 moves three terms on (a heartbeat of a later leader).
    let node_2 = cluster.nodes.get_mut(&2).unwrap();
    node_2
        .step(Message { from: 1, to: 2, term: term + 3, body: MessageBody::Heartbeat { commit: 0, read_round: 0 } })
        .unwrap();
    assert_eq!(node_2.term(), term + 3);
    let _ = persist_all(node_2);

    let request = Message {
        from: 3,
        to: 2,
        term: term + 1,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 100,
            last_log_term: term,
            leader_transfer: false,
        },
    };
    node_2.step(request).unwrap();
    let answers = persist_all(node_2);
    let refusal = answers
        .iter()
        .find(|m| m.to == 3 && matches!(m.body, MessageBody::RequestVoteResponse { pre_vote: false, granted: false }))
        .expect("the stale candidate is answered");
    assert_eq!(refusal.term, term + 3, "with the receiver's term");

    // The candidate takes the term from the answer.
    let node_3 = cluster.nodes.get_mut(&3).unwrap();
    node_3.step(refusal.clone()).unwrap();
    assert_eq!(node_3.term(), term + 3);
    assert_eq!(node_3.role(), Role::Follower);
}

/// From a review of the answer above: a refusal carries the refuser's term, so one that
/// refused an earlier campaign can arrive in a later campaign of exactly that term, after
/// the same node granted it. It must not take the grant back.
#[test]
fn a_late_refusal_does_not_replace_a_grant_of_the_same_term() {
    let voters = [1, 2, 3, 4, 5];
    let mut config = Config::new(1, voters.to_vec());
    config.pre_vote = false;
    let mut raft = Raft::new(config, MemoryLog::new(), 0).unwrap();
    raft.campaign();
    assert_eq!(raft.role(), Role::Candidate);
    let term = raft.term();
    let answer = |from: NodeId, granted: bool| Message {
        from,
        to: 1,
        term,
        body: MessageBody::RequestVoteResponse { pre_vote: false, granted },
    };
    raft.step(answer(2, true)).unwrap();
    raft.step(answer(2, false)).unwrap();
    raft.step(answer(3, true)).unwrap();
    assert_eq!(raft.role(), Role::Leader, "1, 2 and 3 are a majority of five");
}
