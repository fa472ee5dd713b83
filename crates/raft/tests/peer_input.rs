//! No peer message can crash a node. A 3-node cluster runs normally (ticks, proposals,
//! deliveries) while a faulty peer (a member's id, or a stranger's) slips random messages
//! in: any variant, any term near the cluster's, indexes around the logs' ends and at the
//! extremes, entries that follow each other or not, configuration entries that decode or
//! not. The nodes must never panic, and a node's commit index must stay inside its log.
//! A refusal (`Raft::step` returning `Err`) is fine: that is the point. What the faulty
//! peer may make the cluster *believe* is not checked: Raft does not tolerate lying
//! members (who may send peer messages at all is a matter of authentication).

use std::collections::VecDeque;

use bytes::Bytes;
use concord_raft::{
    ConfChange, ConfChangeEntry, ConfChangeKind, Config, Entry, EntryKind, Membership, MemoryLog, Message, MessageBody,
    NodeId, Raft, RejectHint, SnapshotChunk, SnapshotMeta, SnapshotStaging,
};
use proptest::prelude::*;

/// One action of a run.
#[derive(Clone, Debug)]
enum Action {
    Tick,
    Propose(u8),
    Deliver,
    /// A forged message from `from` to node `to` (1..=3).
    Forge {
        from: NodeId,
        to: NodeId,
        term_delta: i8,
        body: Forged,
    },
}

/// The parts of a forged message; indexes are resolved against the receiver's log.
#[derive(Clone, Debug)]
enum Forged {
    Vote { pre_vote: bool, last: Index_, last_term: u8, transfer: bool },
    VoteResponse { pre_vote: bool, granted: bool },
    Append { prev: Index_, prev_term: u8, entries: Vec<(i8, u8, bool, Vec<u8>)>, commit: Index_ },
    AppendResponse { ok: bool, index: Index_, hint: Index_, hint_term: u8 },
    Heartbeat { commit: Index_, read_round: u8 },
    HeartbeatResponse { read_round: u8 },
    ReadIndex { id: u8 },
    ReadIndexResponse { id: u8, index: Index_ },
    TimeoutNow,
    Snapshot { index: Index_, term: u8, offset: u8, last: bool, voters: Vec<u8> },
    SnapshotResponse { index: Index_, offset: u8 },
}

/// An index relative to the receiver's last index, or an extreme.
#[derive(Clone, Copy, Debug)]
enum Index_ {
    Near(i8),
    Zero,
    Max,
}

impl Index_ {
    fn resolve(self, last: u64) -> u64 {
        match self {
            Index_::Near(delta) => last.saturating_add_signed(delta as i64),
            Index_::Zero => 0,
            Index_::Max => u64::MAX,
        }
    }
}

fn index_() -> impl Strategy<Value = Index_> {
    prop_oneof![8 => (-6i8..6).prop_map(Index_::Near), 1 => Just(Index_::Zero), 1 => Just(Index_::Max)]
}

fn forged() -> impl Strategy<Value = Forged> {
    let entry = (-2i8..3, 0u8..6, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..12));
    prop_oneof![
        1 => (any::<bool>(), index_(), 0u8..6, any::<bool>())
            .prop_map(|(pre_vote, last, last_term, transfer)| Forged::Vote { pre_vote, last, last_term, transfer }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(pre_vote, granted)| Forged::VoteResponse { pre_vote, granted }),
        3 => (index_(), 0u8..6, proptest::collection::vec(entry, 0..4), index_())
            .prop_map(|(prev, prev_term, entries, commit)| Forged::Append { prev, prev_term, entries, commit }),
        1 => (any::<bool>(), index_(), index_(), 0u8..6)
            .prop_map(|(ok, index, hint, hint_term)| Forged::AppendResponse { ok, index, hint, hint_term }),
        2 => (index_(), 0u8..3).prop_map(|(commit, read_round)| Forged::Heartbeat { commit, read_round }),
        1 => (0u8..3).prop_map(|read_round| Forged::HeartbeatResponse { read_round }),
        1 => (0u8..3).prop_map(|id| Forged::ReadIndex { id }),
        1 => (0u8..3, index_()).prop_map(|(id, index)| Forged::ReadIndexResponse { id, index }),
        1 => Just(Forged::TimeoutNow),
        1 => (index_(), 0u8..6, 0u8..3, any::<bool>(), proptest::collection::vec(0u8..5, 0..3))
            .prop_map(|(index, term, offset, last, voters)| Forged::Snapshot { index, term, offset, last, voters }),
        1 => (index_(), 0u8..3).prop_map(|(index, offset)| Forged::SnapshotResponse { index, offset }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Tick),
        2 => any::<u8>().prop_map(Action::Propose),
        6 => Just(Action::Deliver),
        4 => (prop_oneof![Just(1u64), Just(2), Just(3), Just(99)], 1u64..=3, -1i8..3, forged())
            .prop_map(|(from, to, term_delta, body)| Action::Forge { from, to, term_delta, body }),
    ]
}

/// A configuration entry's bytes: a valid one (adding learner 4) or garbage.
fn conf_data(valid: bool, garbage: &[u8]) -> Bytes {
    if valid {
        let change = ConfChange { kind: ConfChangeKind::AddLearner, node: 4, context: Bytes::new() };
        ConfChangeEntry { change, membership: Membership::new([1, 2, 3], [4]) }.encode()
    } else {
        Bytes::copy_from_slice(garbage)
    }
}

fn build(to: &Raft<MemoryLog>, from: NodeId, term_delta: i8, body: Forged) -> Message {
    let last = to.last_index();
    let term = match term_delta {
        // Now and then a term at the extremes.
        -1 if body_is_vote(&body) => u64::MAX,
        _ => to.term().saturating_add_signed(term_delta as i64),
    };
    let body = match body {
        Forged::Vote { pre_vote, last: l, last_term, transfer } => MessageBody::RequestVote {
            pre_vote,
            last_log_index: l.resolve(last),
            last_log_term: last_term as u64,
            leader_transfer: transfer,
        },
        Forged::VoteResponse { pre_vote, granted } => MessageBody::RequestVoteResponse { pre_vote, granted },
        Forged::Append { prev, prev_term, entries, commit } => {
            let prev_log_index = prev.resolve(last);
            let mut index = prev_log_index;
            let entries = entries
                .into_iter()
                .map(|(step, entry_term, conf, data)| {
                    index = index.saturating_add_signed(step as i64);
                    let kind = if conf { EntryKind::ConfChange } else { EntryKind::Normal };
                    let data = if conf { conf_data(data.len() % 2 == 0, &data) } else { Bytes::from(data) };
                    Entry { index, term: entry_term as u64, kind, data }
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term: prev_term as u64,
                entries,
                leader_commit: commit.resolve(last),
            }
        }
        Forged::AppendResponse { ok, index, hint, hint_term } => MessageBody::AppendEntriesResponse {
            result: if ok {
                Ok(index.resolve(last))
            } else {
                Err(RejectHint {
                    rejected_index: index.resolve(last),
                    hint_index: hint.resolve(last),
                    hint_term: hint_term as u64,
                })
            },
        },
        Forged::Heartbeat { commit, read_round } => {
            MessageBody::Heartbeat { commit: commit.resolve(last), read_round: read_round as u64 }
        }
        Forged::HeartbeatResponse { read_round } => MessageBody::HeartbeatResponse { read_round: read_round as u64 },
        Forged::ReadIndex { id } => MessageBody::ReadIndexRequest { request_id: id as u64 },
        Forged::ReadIndexResponse { id, index } => {
            MessageBody::ReadIndexResponse { request_id: id as u64, index: index.resolve(last) }
        }
        Forged::TimeoutNow => MessageBody::TimeoutNow,
        Forged::Snapshot { index, term: snapshot_term, offset, last: is_last, voters } => {
            let meta = SnapshotMeta {
                index: index.resolve(last),
                term: snapshot_term as u64,
                membership: Membership::new(voters.iter().map(|&v| v as u64).filter(|&v| v != 0), []),
            };
            let chunk =
                SnapshotChunk { meta, offset: offset as u64, data: Bytes::from_static(b"state"), last: is_last };
            MessageBody::InstallSnapshot { chunk }
        }
        Forged::SnapshotResponse { index, offset } => {
            MessageBody::InstallSnapshotResponse { index: index.resolve(last), next_offset: offset as u64 }
        }
    };
    Message { from, to: to.id(), term, body }
}

fn body_is_vote(body: &Forged) -> bool {
    matches!(body, Forged::Vote { .. } | Forged::VoteResponse { .. } | Forged::Heartbeat { .. })
}

/// Handles every Ready of `node` (persisting at once) and returns what it sends. The
/// forged snapshots' bytes are meaningless here; only the log matters.
fn drain(node: &mut Raft<MemoryLog>, staging: &mut SnapshotStaging) -> Vec<Message> {
    node.drain_in_memory(staging, 64)
}

fn run(actions: &[Action]) {
    let mut nodes: Vec<Raft<MemoryLog>> = (1..=3)
        .map(|id| {
            let mut config = Config::new(id, vec![1, 2, 3]);
            config.seed = id * 7919;
            Raft::new(config, MemoryLog::new(), 0).unwrap()
        })
        .collect();
    let mut stagings: Vec<SnapshotStaging> = nodes.iter().map(|_| SnapshotStaging::default()).collect();
    let mut network: VecDeque<Message> = VecDeque::new();
    for action in actions {
        match action {
            Action::Tick => nodes.iter_mut().for_each(|node| node.tick()),
            Action::Propose(byte) => {
                for node in &mut nodes {
                    let _ = node.propose(Bytes::copy_from_slice(&[*byte]));
                }
            }
            Action::Deliver => {
                for _ in 0..network.len().min(32) {
                    let message = network.pop_front().expect("counted");
                    if let Some(node) = nodes.get_mut(message.to as usize - 1) {
                        // A correct node's answer to a forged message may itself be
                        // refused (the forgery misled it): that is allowed here.
                        let _ = node.step(message);
                    }
                }
            }
            Action::Forge { from, to, term_delta, body } => {
                let node = &mut nodes[*to as usize - 1];
                let message = build(node, *from, *term_delta, body.clone());
                let _ = node.step(message);
            }
        }
        for (node, staging) in nodes.iter_mut().zip(&mut stagings) {
            for message in drain(node, staging) {
                if (1..=3).contains(&message.to) && network.len() < 4096 {
                    network.push_back(message);
                }
            }
            assert!(
                node.commit_index() <= node.last_index(),
                "node {} commits {} past its last entry {}",
                node.id(),
                node.commit_index(),
                node.last_index()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_peer_message_crashes_a_node(actions in proptest::collection::vec(action(), 1..200)) {
        run(&actions);
    }
}
