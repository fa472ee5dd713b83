//! Findings of an adversarial review of the core, kept as regression tests, and the small
//! randomized cluster the reviewer used to hunt for them (random delivery order,
//! duplicates, drops, slow disks, crashes; checks election safety, applied-sequence
//! agreement, majority durability of applied entries, and read freshness after every
//! step). The concord-sim crate is the full simulator; this one is cheap and local.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use concord_raft::{
    Config, Entry, HardState, MemoryLog, Message, MessageBody, NodeId, Raft, ReadState, Role, SnapshotStaging,
};

// ----- a small randomized simulator ---------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Job {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    after: Vec<Message>,
}

struct SimNode {
    raft: Option<Raft<MemoryLog>>,
    config: Config,
    durable: MemoryLog,
    disk: VecDeque<Job>,
    applied: u64,
}

struct Sim {
    nodes: BTreeMap<NodeId, SimNode>,
    net: Vec<Message>,
    rng: Rng,
    /// index -> (term, data) of everything any node ever applied.
    applied: BTreeMap<u64, (u64, Bytes)>,
    leaders: BTreeMap<u64, NodeId>,
    /// request id -> the highest index any node had applied when the read was issued.
    reads: BTreeMap<u64, u64>,
    next_read: u64,
    next_value: u64,
    log: Vec<String>,
}

impl Sim {
    fn new(size: u64, seed: u64, adjust: impl Fn(&mut Config)) -> Sim {
        let voters: Vec<NodeId> = (1..=size).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let mut config = Config::new(id, voters.clone());
            config.seed = seed.wrapping_mul(31).wrapping_add(id);
            adjust(&mut config);
            let durable = MemoryLog::new();
            let raft = Raft::new(config.clone(), durable.clone(), 0).unwrap();
            nodes.insert(id, SimNode { raft: Some(raft), config, durable, disk: VecDeque::new(), applied: 0 });
        }
        Sim {
            nodes,
            net: Vec::new(),
            rng: Rng(seed),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            next_value: 1,
            log: Vec::new(),
        }
    }

    fn max_applied(&self) -> u64 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    fn handle_ready(&mut self, id: NodeId) {
        let max_applied_before = self.max_applied();
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(raft) = node.raft.as_mut() else { return };
        while raft.has_ready() {
            let rd = raft.ready();
            if let Some(hs) = rd.hard_state {
                raft.store_mut().hard_state = hs;
            }
            raft.store_mut().append(&rd.entries);
            self.net.extend(rd.messages);
            for e in &rd.committed_entries {
                assert_eq!(e.index, node.applied + 1, "n{id} applies out of order");
                node.applied = e.index;
                let seen = self.applied.entry(e.index).or_insert((e.term, e.data.clone()));
                assert_eq!(
                    (seen.0, &seen.1),
                    (e.term, &e.data),
                    "n{id} applied a different entry at {}\n{}",
                    e.index,
                    self.log.join("\n")
                );
            }
            for ReadState { request_id, index } in rd.read_states {
                let floor = self.reads[&request_id];
                assert!(
                    index >= floor,
                    "read {request_id} served at index {index}, but index {floor} had already \
                     been applied when it was issued (stale read)\n{}",
                    self.log.join("\n")
                );
            }
            node.disk.push_back(Job {
                hard_state: rd.hard_state,
                entries: rd.entries,
                after: rd.messages_after_persist,
            });
        }
        let _ = max_applied_before;
    }

    fn flush_one(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(job) = node.disk.pop_front() else { return };
        if let Some(hs) = job.hard_state {
            node.durable.hard_state = hs;
        }
        node.durable.append(&job.entries);
        self.net.extend(job.after);
        if let Some(last) = job.entries.last() {
            if let Some(raft) = node.raft.as_mut() {
                raft.on_persisted(last.index, last.term);
            }
        }
    }

    fn check_durable(&self) {
        let majority = self.nodes.len() / 2 + 1;
        // Only check the newest applied index (cheap) and a sample.
        for (&index, (term, _)) in self.applied.iter().rev().take(5) {
            let holders = self
                .nodes
                .values()
                .filter(|n| {
                    use concord_raft::LogStore;
                    n.durable.term(index).ok() == Some(*term)
                })
                .count();
            assert!(
                holders >= majority,
                "entry {index}/{term} was applied but only {holders} durable copies exist\n{}",
                self.log.join("\n")
            );
        }
        for (id, n) in &self.nodes {
            if let Some(r) = &n.raft {
                if r.role() == Role::Leader {
                    use concord_raft::LogStore;
                    let own = r.match_indexes()[id];
                    if own > 0 {
                        assert_eq!(
                            n.durable.term(own).ok(),
                            r.entry_term(own),
                            "leader n{id} counts itself at {own} but its disk differs"
                        );
                    }
                }
            }
        }
    }

    fn check_leaders(&mut self) {
        self.check_durable();
        for (id, node) in &self.nodes {
            if let Some(raft) = &node.raft {
                if raft.role() == Role::Leader {
                    let prev = self.leaders.entry(raft.term()).or_insert(*id);
                    assert_eq!(*prev, *id, "two leaders in term {}\n{}", raft.term(), self.log.join("\n"));
                }
            }
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn step(&mut self, faults: bool) {
        let ids = self.ids();
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        let roll = self.rng.below(1000);
        match roll {
            0..=49 => {
                if let Some(r) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
                    r.tick();
                    self.log.push(format!("tick {id}"));
                }
            }
            50..=549 if !self.net.is_empty() => {
                let i = self.rng.below(self.net.len() as u64) as usize;
                let m = if faults && self.rng.chance(1) {
                    self.net[i].clone() // duplicate
                } else {
                    self.net.swap_remove(i)
                };
                if faults && self.rng.chance(2) {
                    self.log.push(format!("drop {m:?}"));
                } else if let Some(r) = self.nodes.get_mut(&m.to).unwrap().raft.as_mut() {
                    self.log.push(format!("deliver {m:?}"));
                    r.step(m).unwrap();
                }
            }
            50..=549 => {}
            550..=749 => {
                self.log.push(format!("ready {id}"));
                self.handle_ready(id);
            }
            750..=929 => {
                self.log.push(format!("flush {id}"));
                self.flush_one(id);
            }
            930..=969 => {
                if let Some(r) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
                    if r.role() == Role::Leader {
                        let v = self.next_value;
                        self.next_value += 1;
                        let _ = r.propose(Bytes::from(format!("v{v}")));
                        self.log.push(format!("propose {id} v{v}"));
                    }
                }
            }
            970..=989 => {
                let floor = self.max_applied();
                let rid = self.next_read;
                if let Some(r) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
                    if r.read_index(rid).is_ok() {
                        self.next_read += 1;
                        self.reads.insert(rid, floor);
                        self.log.push(format!("read {id} rid={rid} floor={floor}"));
                    }
                }
            }
            990..=992 if faults => {
                let node = self.nodes.get_mut(&id).unwrap();
                if node.raft.is_some() {
                    node.raft = None;
                    node.disk.clear();
                    node.applied = 0;
                    self.log.push(format!("crash {id}"));
                } else {
                    node.raft = Some(Raft::new(node.config.clone(), node.durable.clone(), 0).unwrap());
                    self.log.push(format!("restart {id}"));
                }
            }
            993 if faults => {
                let to = ids[self.rng.below(ids.len() as u64) as usize];
                if let Some(r) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
                    let _ = r.transfer_leader(to);
                    self.log.push(format!("transfer {id}->{to}"));
                }
            }
            994..=995 if faults => {
                // partition: drop everything currently in flight to/from one node
                let victim = id;
                let before = self.net.len();
                self.net.retain(|m| m.to != victim && m.from != victim);
                self.log.push(format!("lose msgs of {victim}: {}", before - self.net.len()));
            }
            _ => {}
        }
        self.check_leaders();
        if self.log.len() > 400 {
            self.log.drain(..200);
        }
    }

    /// Heals everything and checks the cluster makes progress.
    fn converge(&mut self) -> bool {
        for id in self.ids() {
            let node = self.nodes.get_mut(&id).unwrap();
            if node.raft.is_none() {
                node.raft = Some(Raft::new(node.config.clone(), node.durable.clone(), 0).unwrap());
            }
        }
        let mut proposed: Option<(NodeId, u64)> = None;
        for round in 0..3000 {
            for id in self.ids() {
                if round % 3 == 0 {
                    self.nodes.get_mut(&id).unwrap().raft.as_mut().unwrap().tick();
                }
                self.handle_ready(id);
                while !self.nodes[&id].disk.is_empty() {
                    self.flush_one(id);
                }
            }
            let batch = std::mem::take(&mut self.net);
            for m in batch {
                self.nodes.get_mut(&m.to).unwrap().raft.as_mut().unwrap().step(m).unwrap();
            }
            self.check_leaders();
            if proposed.is_none() || round % 300 == 299 {
                for id in self.ids() {
                    let r = self.nodes.get_mut(&id).unwrap().raft.as_mut().unwrap();
                    if r.role() == Role::Leader {
                        match r.propose(Bytes::from_static(b"final")) {
                            Ok(i) => proposed = Some((id, i)),
                            Err(e) => {
                                if round > 2900 && std::env::var("SEED").is_ok() {
                                    eprintln!("round {round}: n{id} refused: {e}");
                                }
                            }
                        }
                    }
                }
            }
            if let Some((_, idx)) = proposed {
                if self.nodes.values().all(|n| n.applied >= idx)
                    && self.applied.get(&idx).map(|e| e.1.as_ref() == b"final") == Some(true)
                {
                    return true;
                }
            }
        }
        false
    }
}

fn fuzz(size: u64, seeds: std::ops::Range<u64>, adjust: impl Fn(&mut Config) + Copy) {
    let scale: u64 = std::env::var("FUZZ_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut seeds = seeds.start..seeds.start + (seeds.end - seeds.start) * scale;
    if let Some(only) = std::env::var("SEED").ok().and_then(|v| v.parse::<u64>().ok()) {
        if !seeds.contains(&only) {
            return;
        }
        seeds = only..only + 1;
    }
    for seed in seeds {
        let mut sim = Sim::new(size, seed, adjust);
        for _ in 0..20000 {
            sim.step(true);
        }
        let ok = sim.converge();
        if std::env::var("STATS").is_ok() {
            eprintln!(
                "seed {seed}: applied={} terms={} reads_issued={}",
                sim.max_applied(),
                sim.leaders.len(),
                sim.next_read - 1
            );
        }
        let status: Vec<String> = sim
            .nodes
            .iter()
            .map(|(id, n)| {
                let r = n.raft.as_ref().unwrap();
                format!(
                    "n{id} {:?} t{} commit={} last={} persisted={} applied={} matches={:?}",
                    r.role(),
                    r.term(),
                    r.commit_index(),
                    r.last_index(),
                    r.persisted_index(),
                    n.applied,
                    r.match_indexes()
                )
            })
            .collect();
        assert!(ok, "seed {seed}: cluster did not converge:\n{}", status.join("\n"));
    }
}

#[test]
fn fuzz_default_3() {
    fuzz(3, 0..300, |c| {
        c.max_inflight_messages = 2;
        c.max_message_bytes = 60;
    });
}

#[test]
fn fuzz_default_5() {
    fuzz(5, 1000..1200, |c| {
        c.max_inflight_messages = 3;
        c.max_message_bytes = 60;
    });
}

#[test]
fn fuzz_no_prevote_no_cq() {
    fuzz(3, 2000..2300, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
        c.max_inflight_messages = 2;
    });
}

// ----- targeted findings ----------------------------------------------------------------

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message { from, to, term, body }
}

fn drain(r: &mut Raft<MemoryLog>) -> Vec<Message> {
    r.drain_in_memory(&mut SnapshotStaging::default(), 10_000)
}

/// n1 of {1,2,3} wins term 1 with n2's (injected) votes.
fn leader_n1() -> Raft<MemoryLog> {
    let mut n1 = Raft::new(Config::new(1, vec![1, 2, 3]), MemoryLog::new(), 0).unwrap();
    n1.campaign();
    drain(&mut n1);
    n1.step(msg(2, 1, 1, MessageBody::RequestVoteResponse { pre_vote: true, granted: true })).unwrap();
    drain(&mut n1);
    n1.step(msg(2, 1, 1, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
    drain(&mut n1);
    assert_eq!(n1.role(), Role::Leader);
    n1
}

/// Sanity check for the next test: an isolated leader steps down by check-quorum.
#[test]
fn isolated_leader_steps_down_by_check_quorum() {
    let mut n1 = leader_n1();
    for _ in 0..25 {
        n1.tick();
        drain(&mut n1);
    }
    assert_ne!(n1.role(), Role::Leader);
}

/// leader.rs `transfer_leader` sets `election_elapsed = 0` on every call, and that is
/// also the check-quorum clock: a leader cut off from every peer whose application
/// retries a transfer (to the same, unreachable target) never steps down. etcd ignores a
/// repeated transfer to the same target and does not reset the clock for it.
#[test]
fn repeated_transfers_do_not_postpone_check_quorum() {
    let mut n1 = leader_n1();
    for round in 0..20 {
        for _ in 0..5 {
            n1.tick();
            drain(&mut n1);
        }
        let _ = n1.transfer_leader(2);
        drain(&mut n1);
        let _ = round;
    }
    // 100 ticks (10 election timeouts) without hearing from anyone.
    assert_ne!(n1.role(), Role::Leader, "isolated leader kept leadership for 10 election timeouts");
}

/// raft.rs `step`: a granted pre-vote response is accepted whenever its term equals our
/// term, but a pre-candidate at term T asks for term T+1; a grant carrying term T was
/// given for an *earlier* pre-campaign (made at term T-1) and says nothing about whether
/// the peer would grant now (it may be in a leader's lease). Counting it lets the node
/// raise its term and disrupt a healthy leader, which pre-vote exists to prevent.
#[test]
fn a_late_pre_vote_grant_from_an_earlier_campaign_is_ignored() {
    let mut store = MemoryLog::new();
    store.hard_state = HardState { term: 5, vote: 0, commit: 0 };
    let mut n1 = Raft::new(Config::new(1, vec![1, 2, 3]), store, 0).unwrap();
    n1.campaign(); // pre-candidate at 5, asks for term 6
    drain(&mut n1);
    assert_eq!((n1.role(), n1.term()), (Role::PreCandidate, 5));
    // n3 won term 6 meanwhile; n1 follows it.
    n1.step(msg(3, 1, 6, MessageBody::Heartbeat { commit: 0, read_round: 0 })).unwrap();
    drain(&mut n1);
    assert_eq!((n1.role(), n1.term(), n1.leader()), (Role::Follower, 6, 3));
    // Later n1 times out and pre-campaigns for term 7 ...
    n1.campaign();
    drain(&mut n1);
    assert_eq!((n1.role(), n1.term()), (Role::PreCandidate, 6));
    // ... and n2's delayed grant from the *term-6* pre-campaign arrives.
    n1.step(msg(2, 1, 6, MessageBody::RequestVoteResponse { pre_vote: true, granted: true })).unwrap();
    assert_eq!(
        (n1.role(), n1.term()),
        (Role::PreCandidate, 6),
        "a grant for campaign term 6 was counted toward campaign term 7"
    );
}

/// log.rs `RaftLog::new` clamps `applied` to the persisted commit
/// (`applied.max(first - 1).min(committed)`). HardState says persisting commit is only an
/// optimisation, so a state machine may durably reflect more than the persisted commit
/// (the harness itself applies before the hard state is durable). On restart the already
/// applied entries are handed out again in `committed_entries`: double application.
/// etcd/raft-rs refuse to start in that case instead of silently re-applying.
#[test]
fn restart_with_applied_beyond_persisted_commit_does_not_reapply() {
    let mut store = MemoryLog::new();
    let entries: Vec<Entry> = (1..=3)
        .map(|i| Entry { index: i, term: 1, kind: concord_raft::EntryKind::Normal, data: Bytes::from(format!("e{i}")) })
        .collect();
    store.append(&entries);
    store.hard_state = HardState { term: 1, vote: 1, commit: 1 };
    // The state machine already reflects entries 1..=3.
    let mut n2 = Raft::new(Config::new(2, vec![1, 2, 3]), store, 3).unwrap();
    n2.step(msg(1, 2, 1, MessageBody::Heartbeat { commit: 3, read_round: 0 })).unwrap();
    let rd = n2.ready();
    let reapplied: Vec<u64> = rd.committed_entries.iter().map(|e| e.index).filter(|&i| i <= 3).collect();
    assert!(reapplied.is_empty(), "entries {reapplied:?} handed out again although applied=3 was given");
}

/// leader.rs `handle_append_success`: TimeoutNow is sent only when an ack *advances* the
/// target's match (or at `transfer_leader` time). If that TimeoutNow is lost and the
/// target is already caught up, nothing resends it (proposals are refused during a
/// transfer, so match never advances again); heartbeats do not either. The transfer
/// stalls, with proposals refused, until it is abandoned an election timeout later.
#[test]
fn a_lost_timeout_now_is_resent() {
    let mut n1 = leader_n1();
    // n2 catches up to the leader's last index (the term-1 empty entry).
    let last = n1.last_index();
    n1.step(msg(2, 1, 1, MessageBody::AppendEntriesResponse { result: Ok(last) })).unwrap();
    drain(&mut n1);
    n1.transfer_leader(2).unwrap();
    let first = drain(&mut n1);
    assert!(first.iter().any(|m| m.to == 2 && m.body == MessageBody::TimeoutNow));
    // That TimeoutNow is lost. n2 keeps answering heartbeats and appends.
    let mut resent = false;
    for _ in 0..9 {
        n1.tick();
        for m in drain(&mut n1) {
            if m.to == 2 && m.body == MessageBody::TimeoutNow {
                resent = true;
            }
        }
        n1.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { read_round: 0 })).unwrap();
        n1.step(msg(2, 1, 1, MessageBody::AppendEntriesResponse { result: Ok(last) })).unwrap();
        for m in drain(&mut n1) {
            if m.to == 2 && m.body == MessageBody::TimeoutNow {
                resent = true;
            }
        }
    }
    assert!(resent, "TimeoutNow was never resent to the caught-up target");
}

/// log.rs `stable_to` (ABA): it trusts `(index, term)` plus `handed_out_below`. When a
/// Ready's entries are replaced (Ready B truncates them) and then replaced back by
/// identical entries (Ready C), the report for the *first* Ready marks them stable
/// although Ready B, still pending, will truncate them on disk. etcd fixed the same hole
/// by tagging appends with the leader term that wrote them (`logMark`). Impact found:
/// `persisted_index` (apply gate, leader self-match) runs ahead of the disk for a
/// window; only entries of older terms are affected, so no wrong commit was found.
#[test]
fn a_write_replaced_by_a_pending_one_is_not_reported_durable() {
    let mut store = MemoryLog::new();
    store.hard_state = HardState { term: 1, vote: 0, commit: 0 };
    let mut n2 = Raft::new(Config::new(2, vec![1, 2, 3]), store, 0).unwrap();
    let entry = |index, term| Entry { index, term, kind: concord_raft::EntryKind::Normal, data: Bytes::new() };
    let append = |from, term, entries: Vec<Entry>| {
        msg(
            from,
            2,
            term,
            MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, entries, leader_commit: 0 },
        )
    };
    let take = |r: &mut Raft<MemoryLog>| {
        let rd = r.ready();
        if let Some(hs) = rd.hard_state {
            r.store_mut().hard_state = hs;
        }
        r.store_mut().append(&rd.entries);
        rd.entries
    };
    n2.step(append(1, 2, vec![entry(1, 2), entry(2, 2), entry(3, 2)])).unwrap();
    let a = take(&mut n2); // Ready A: 1..=3 @2
    n2.step(append(3, 3, vec![entry(1, 3)])).unwrap();
    let b = take(&mut n2); // Ready B: 1 @3 (truncates 2..=3 on disk)
    n2.step(append(1, 4, vec![entry(1, 2), entry(2, 2), entry(3, 2)])).unwrap();
    let c = take(&mut n2); // Ready C: 1..=3 @2 again
    assert_eq!((a.len(), b.len(), c.len()), (3, 1, 3));
    // Only Ready A is durable.
    n2.on_persisted(3, 2);
    assert_eq!(
        n2.persisted_index(),
        0,
        "entries 1..=3 reported durable, but pending Ready B will cut the disk to [1@3]"
    );
}
