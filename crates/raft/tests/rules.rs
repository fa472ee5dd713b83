//! One test per safety rule of the protocol, driving a single core with crafted messages.
//! Each test fails if the rule it names is broken.

use bytes::Bytes;
use concord_raft::{
    ConfChange, ConfChangeEntry, ConfChangeError, ConfChangeKind, Config, Entry, EntryKind, HardState, Membership,
    MemoryLog, Message, MessageBody, ProposeError, Raft, Ready, Role, SnapshotChunk, SnapshotMeta,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, kind: EntryKind::Normal, data: Bytes::from(format!("{index}/{term}")) }
}

/// Node `id` of a 3-node cluster started from a persisted log of `(index, term)` pairs.
fn node_with_log(id: u64, hard_state: HardState, log: &[(u64, u64)]) -> Raft<MemoryLog> {
    let mut store = MemoryLog::new();
    store.hard_state = hard_state;
    let entries: Vec<Entry> = log.iter().map(|&(i, t)| entry(i, t)).collect();
    store.append(&entries);
    let mut config = Config::new(id, vec![1, 2, 3]);
    config.pre_vote = false;
    config.check_quorum = false;
    Raft::new(config, store, 0).expect("valid config")
}

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message { from, to, term, body }
}

fn vote_request(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    message(
        from,
        to,
        term,
        MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: last_index,
            last_log_term: last_term,
            leader_transfer: false,
        },
    )
}

fn append(from: u64, to: u64, term: u64, prev: (u64, u64), entries: &[(u64, u64)], commit: u64) -> Message {
    let entries = entries.iter().map(|&(i, t)| entry(i, t)).collect();
    message(
        from,
        to,
        term,
        MessageBody::AppendEntries { prev_log_index: prev.0, prev_log_term: prev.1, entries, leader_commit: commit },
    )
}

fn vote_granted(ready: &Ready) -> Option<bool> {
    ready.messages.iter().chain(&ready.messages_after_persist).find_map(|m| match m.body {
        MessageBody::RequestVoteResponse { granted, .. } => Some(granted),
        _ => None,
    })
}

/// Persists a Ready as the application would, instantly.
fn persist(raft: &mut Raft<MemoryLog>, ready: &Ready) {
    if let Some(hard_state) = ready.hard_state {
        raft.store_mut().hard_state = hard_state;
    }
    raft.store_mut().append(&ready.entries);
    if let Some(last) = ready.entries.last() {
        raft.on_persisted(last.index, last.term);
    }
}

#[test]
fn a_vote_reply_waits_for_the_vote_to_be_persisted() {
    let mut node = node_with_log(2, HardState::default(), &[]);
    node.step(vote_request(1, 2, 1, 0, 0)).unwrap();
    let ready = node.ready();
    assert!(ready.messages.is_empty(), "a vote must not be sent before it is durable");
    assert_eq!(vote_granted(&ready), Some(true));
    let hard_state = ready.hard_state.expect("the vote is handed out for persisting");
    assert_eq!((hard_state.term, hard_state.vote), (1, 1));
}

#[test]
fn a_node_votes_at_most_once_per_term() {
    let mut node = node_with_log(3, HardState::default(), &[]);
    node.step(vote_request(1, 3, 1, 0, 0)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(true));
    node.step(vote_request(2, 3, 1, 0, 0)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(false));
    // The same candidate asking again gets the same answer.
    node.step(vote_request(1, 3, 1, 0, 0)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(true));
}

#[test]
fn a_restarted_node_remembers_its_vote() {
    let node = node_with_log(3, HardState { term: 5, vote: 1, commit: 0 }, &[]);
    let mut node = node;
    node.step(vote_request(2, 3, 5, 0, 0)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(false));
}

#[test]
fn votes_go_only_to_candidates_with_up_to_date_logs() {
    let log = [(1, 1), (2, 2), (3, 2)];
    // Same last term, shorter log: refused.
    let mut node = node_with_log(2, HardState { term: 2, vote: 0, commit: 0 }, &log);
    node.step(vote_request(1, 2, 3, 2, 2)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(false));
    // Longer log but older last term: refused.
    let mut node = node_with_log(2, HardState { term: 2, vote: 0, commit: 0 }, &log);
    node.step(vote_request(1, 2, 3, 9, 1)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(false));
    // Later last term, even if shorter: granted.
    let mut node = node_with_log(2, HardState { term: 2, vote: 0, commit: 0 }, &log);
    node.step(vote_request(1, 2, 3, 2, 3)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(true));
}

#[test]
fn a_higher_term_is_adopted_and_a_lower_one_ignored() {
    let mut node = node_with_log(2, HardState { term: 4, vote: 0, commit: 0 }, &[(1, 1)]);
    node.step(append(1, 2, 3, (1, 1), &[(2, 3)], 0)).unwrap();
    assert_eq!(node.last_index(), 1, "an AppendEntries from an old term changes nothing");
    node.step(append(3, 2, 6, (1, 1), &[(2, 6)], 0)).unwrap();
    assert_eq!((node.term(), node.leader(), node.last_index()), (6, 3, 2));
}

#[test]
fn a_conflicting_suffix_is_truncated_and_a_matching_one_kept() {
    let mut node = node_with_log(2, HardState { term: 1, vote: 1, commit: 1 }, &[(1, 1), (2, 1), (3, 1)]);
    // A delayed, shorter AppendEntries whose entries match: nothing is cut.
    node.step(append(1, 2, 1, (1, 1), &[(2, 1)], 1)).unwrap();
    assert_eq!(node.last_index(), 3);
    // A new leader's entry conflicts at index 2: 2 and 3 go, its entry stays.
    node.step(append(3, 2, 2, (1, 1), &[(2, 2)], 1)).unwrap();
    assert_eq!(node.last_index(), 2);
    assert_eq!(node.entry_term(2), Some(2));
    let ready = node.ready();
    assert_eq!(ready.entries, vec![entry(2, 2)], "the application is told to rewrite from index 2");
}

#[test]
fn a_follower_commits_only_what_this_message_verified() {
    // The follower holds a stale suffix (2/1, 3/1) from an old leader.
    let mut node = node_with_log(2, HardState { term: 1, vote: 1, commit: 1 }, &[(1, 1), (2, 1), (3, 1)]);
    // The new leader (term 2) has committed up to 3 in its own log, which differs after
    // index 1; its probe matches only at index 1 and carries no entries.
    node.step(append(3, 2, 2, (1, 1), &[], 3)).unwrap();
    assert_eq!(node.commit_index(), 1, "entries 2 and 3 were not verified against the leader");
    // A rejected probe moves nothing either.
    node.step(append(3, 2, 2, (3, 2), &[], 3)).unwrap();
    assert_eq!(node.commit_index(), 1);
}

#[test]
fn a_leader_commits_old_term_entries_only_through_an_entry_of_its_term() {
    // Node 1 holds 2/1 from term 1 and wins term 3.
    let mut leader = node_with_log(1, HardState { term: 2, vote: 0, commit: 1 }, &[(1, 1), (2, 1)]);
    leader.campaign();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    leader.step(message(2, 1, 3, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
    assert_eq!(leader.role(), Role::Leader);
    let ready = leader.ready();
    persist(&mut leader, &ready); // the term-3 empty entry at index 3
                                  // Node 2 acknowledges index 2 only: a majority (1 and 2) holds the term-1 entry.
    leader.step(message(2, 1, 3, MessageBody::AppendEntriesResponse { result: Ok(2) })).unwrap();
    assert_eq!(leader.commit_index(), 1, "Figure 8: counting replicas of a term-1 entry is unsafe");
    // Once the term-3 entry is on a majority, everything before it commits with it.
    leader.step(message(2, 1, 3, MessageBody::AppendEntriesResponse { result: Ok(3) })).unwrap();
    assert_eq!(leader.commit_index(), 3);
}

/// The server hands `committed_entries` to the state machine as soon as it takes the
/// Ready, before that Ready's own write is durable (as etcd's server does). That is safe
/// only because the core hands out nothing this node has not made durable: a follower
/// told that entries are committed in the same message that brings them applies them
/// only after its write of them is reported.
#[test]
fn committed_entries_are_only_entries_already_durable_here() {
    let mut follower = node_with_log(2, HardState { term: 1, vote: 0, commit: 0 }, &[]);
    follower.step(append(1, 2, 1, (0, 0), &[(1, 1), (2, 1)], 2)).unwrap();
    let ready = follower.ready();
    assert_eq!(ready.entries.len(), 2, "the entries are handed out for writing");
    assert!(ready.committed_entries.is_empty(), "committed, but not yet durable on this node: not applied yet");
    follower.store_mut().append(&ready.entries);
    let ready = follower.ready();
    assert!(ready.committed_entries.is_empty(), "written but not reported durable: still not applied");
    follower.on_persisted(2, 1);
    let ready = follower.ready();
    assert_eq!(ready.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn a_leader_counts_itself_only_after_its_disk_has_the_entry() {
    let mut leader = node_with_log(1, HardState::default(), &[]);
    leader.campaign();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    leader.step(message(2, 1, 1, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    leader.step(message(2, 1, 1, MessageBody::AppendEntriesResponse { result: Ok(1) })).unwrap();
    assert_eq!(leader.commit_index(), 1);
    leader.propose(Bytes::from_static(b"x")).unwrap();
    let ready = leader.ready();
    assert_eq!(ready.entries.len(), 1, "the entry is handed out for writing");
    assert!(!ready.messages.is_empty(), "replication starts before the leader's own write completes");
    // Node 2 has it on disk; with node 3 silent, the leader's own disk decides the majority.
    leader.step(message(2, 1, 1, MessageBody::AppendEntriesResponse { result: Ok(2) })).unwrap();
    assert_eq!(leader.commit_index(), 1, "the leader's unpersisted entry must not count");
    leader.store_mut().append(&ready.entries);
    leader.on_persisted(2, 1);
    assert_eq!(leader.commit_index(), 2);
}

#[test]
fn an_acknowledgement_of_nothing_does_not_restart_replication_from_the_start() {
    // Node 1 wins term 3 with a log of four entries; its probe to node 2 is in flight.
    let log = [(1, 1), (2, 1), (3, 2), (4, 2)];
    let mut leader = node_with_log(1, HardState { term: 2, vote: 0, commit: 4 }, &log);
    leader.campaign();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    leader.step(message(3, 1, 3, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
    assert_eq!(leader.role(), Role::Leader);
    let ready = leader.ready();
    persist(&mut leader, &ready);
    // Node 2 answers an older leader's message with a bare Ok(0) in term 3.
    leader.step(message(2, 1, 3, MessageBody::AppendEntriesResponse { result: Ok(0) })).unwrap();
    let ready = leader.ready();
    let restarted = ready.messages.iter().any(|m| {
        m.to == 2 && matches!(m.body, MessageBody::AppendEntries { prev_log_index: 0, ref entries, .. } if !entries.is_empty())
    });
    assert!(!restarted, "the whole log was sent again from index 1: {:?}", ready.messages);
}

#[test]
fn a_follower_in_contact_with_a_leader_ignores_vote_requests() {
    let mut config = Config::new(2, vec![1, 2, 3]);
    config.check_quorum = true;
    config.pre_vote = false;
    let mut node = Raft::new(config, MemoryLog::new(), 0).unwrap();
    node.step(append(1, 2, 1, (0, 0), &[(1, 1)], 0)).unwrap();
    let _ = node.ready();
    node.step(vote_request(3, 2, 2, 1, 1)).unwrap();
    assert_eq!(node.term(), 1, "the disruptive candidate's term is not adopted");
    assert_eq!(vote_granted(&node.ready()), None);
    // A leadership transfer overrides the lease.
    node.step(message(
        3,
        2,
        2,
        MessageBody::RequestVote { pre_vote: false, last_log_index: 1, last_log_term: 1, leader_transfer: true },
    ))
    .unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(true));
}

#[test]
fn a_pre_vote_changes_no_one_s_term() {
    let mut node = node_with_log(2, HardState { term: 3, vote: 0, commit: 0 }, &[(1, 1)]);
    let request =
        MessageBody::RequestVote { pre_vote: true, last_log_index: 1, last_log_term: 1, leader_transfer: false };
    node.step(message(1, 2, 4, request)).unwrap();
    assert_eq!((node.term(), node.vote()), (3, 0));
    let ready = node.ready();
    assert!(ready.hard_state.is_none(), "nothing to persist for a pre-vote");
    assert_eq!(vote_granted(&ready), Some(true));
}

// ----- membership ----------------------------------------------------------------------

/// Node 1 leading `voters` in term 1, its empty entry (index 1) committed and persisted.
fn elected_leader(voters: Vec<u64>) -> Raft<MemoryLog> {
    let mut config = Config::new(1, voters.clone());
    config.pre_vote = false;
    config.check_quorum = false;
    let mut leader = Raft::new(config, MemoryLog::new(), 0).unwrap();
    leader.campaign();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    for &voter in voters.iter().filter(|&&v| v != 1) {
        leader.step(message(voter, 1, 1, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
    }
    assert_eq!(leader.role(), Role::Leader);
    let ready = leader.ready();
    persist(&mut leader, &ready);
    for &voter in voters.iter().filter(|&&v| v != 1) {
        leader.step(message(voter, 1, 1, MessageBody::AppendEntriesResponse { result: Ok(1) })).unwrap();
    }
    assert_eq!(leader.commit_index(), 1);
    leader
}

fn change(kind: ConfChangeKind, node: u64) -> ConfChange {
    ConfChange { kind, node, context: Bytes::new() }
}

fn conf_entry(index: u64, term: u64, kind: ConfChangeKind, node: u64, membership: Membership) -> Entry {
    let data = ConfChangeEntry { change: change(kind, node), membership }.encode();
    Entry { index, term, kind: EntryKind::ConfChange, data }
}

/// Proposes `change` at the leader and persists it; returns its index.
fn propose_change(leader: &mut Raft<MemoryLog>, kind: ConfChangeKind, node: u64) -> u64 {
    let index = leader.propose_conf_change(change(kind, node)).expect("the change is accepted");
    let ready = leader.ready();
    persist(leader, &ready);
    index
}

fn ack(leader: &mut Raft<MemoryLog>, from: u64, index: u64) {
    leader.step(message(from, 1, 1, MessageBody::AppendEntriesResponse { result: Ok(index) })).unwrap();
}

#[test]
fn a_membership_change_waits_for_a_commit_in_the_leaders_term() {
    // The dissertation's errata: a leader that has not committed an entry of its term may
    // hold an uncommitted change from an earlier term; a second change could then form a
    // quorum that does not overlap the first.
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.pre_vote = false;
    let mut leader = Raft::new(config, MemoryLog::new(), 0).unwrap();
    leader.campaign();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    leader.step(message(2, 1, 1, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    assert_eq!(
        leader.propose_conf_change(change(ConfChangeKind::AddLearner, 4)),
        Err(ProposeError::ConfChange(ConfChangeError::LeaderNotReady))
    );
    ack(&mut leader, 2, 1);
    assert!(leader.propose_conf_change(change(ConfChangeKind::AddLearner, 4)).is_ok());
}

#[test]
fn one_membership_change_at_a_time() {
    let mut leader = elected_leader(vec![1, 2, 3]);
    let index = propose_change(&mut leader, ConfChangeKind::AddVoter, 4);
    assert_eq!(
        leader.propose_conf_change(change(ConfChangeKind::RemoveNode, 3)),
        Err(ProposeError::ConfChange(ConfChangeError::Pending { index }))
    );
    ack(&mut leader, 2, index);
    ack(&mut leader, 3, index);
    assert_eq!(leader.commit_index(), index);
    assert!(leader.propose_conf_change(change(ConfChangeKind::RemoveNode, 3)).is_ok());
}

#[test]
fn a_change_is_committed_by_a_majority_of_the_new_configuration() {
    // Adding voter 4 makes four voters: a majority is three. The leader and the new voter
    // are a majority of the old three-voter size but not of the new configuration.
    let mut leader = elected_leader(vec![1, 2, 3]);
    let index = propose_change(&mut leader, ConfChangeKind::AddVoter, 4);
    ack(&mut leader, 4, index);
    assert_eq!(leader.commit_index(), 1, "two of four voters are not a majority");
    ack(&mut leader, 2, index);
    assert_eq!(leader.commit_index(), index);
}

#[test]
fn learner_acknowledgements_do_not_count_toward_commit() {
    let mut leader = elected_leader(vec![1, 2, 3]);
    let added = propose_change(&mut leader, ConfChangeKind::AddLearner, 4);
    ack(&mut leader, 2, added);
    assert_eq!(leader.commit_index(), added);
    let index = leader.propose(Bytes::from_static(b"x")).unwrap();
    let ready = leader.ready();
    persist(&mut leader, &ready);
    ack(&mut leader, 4, index);
    assert_eq!(leader.commit_index(), added, "a learner's copy does not make a majority");
    ack(&mut leader, 3, index);
    assert_eq!(leader.commit_index(), index);
}

#[test]
fn a_configuration_takes_effect_when_appended_and_reverts_when_truncated() {
    let mut follower = node_with_log(2, HardState { term: 1, vote: 1, commit: 1 }, &[(1, 1)]);
    let grown = Membership::new([1, 2, 3, 4], []);
    let entry = conf_entry(2, 1, ConfChangeKind::AddVoter, 4, grown.clone());
    follower
        .step(message(
            1,
            2,
            1,
            MessageBody::AppendEntries { prev_log_index: 1, prev_log_term: 1, entries: vec![entry], leader_commit: 1 },
        ))
        .unwrap();
    assert_eq!(follower.membership(), &grown, "in effect before it commits");
    // A new leader of term 2 never had the entry: it replaces it.
    follower.step(append(3, 2, 2, (1, 1), &[(2, 2)], 1)).unwrap();
    assert_eq!(follower.membership(), &Membership::new([1, 2, 3], []), "the replaced change no longer counts");
}

#[test]
fn a_removed_member_cannot_win_a_pre_vote_or_raise_a_term() {
    // The entry at index 2 removes node 4, which never received it, still thinks it is a
    // voter, and campaigns with pre-vote.
    let removal = conf_entry(2, 1, ConfChangeKind::RemoveNode, 4, Membership::new([1, 2, 3], []));
    let node_with_removal = |commit| {
        let mut store = MemoryLog::new();
        store.hard_state = HardState { term: 1, vote: 1, commit };
        store.append(&[entry(1, 1), removal.clone()]);
        let mut config = Config::new(2, vec![1, 2, 3, 4]);
        config.pre_vote = true;
        config.check_quorum = true;
        Raft::new(config, store, 0).unwrap()
    };
    let pre_vote = |term| {
        message(
            4,
            2,
            term,
            MessageBody::RequestVote { pre_vote: true, last_log_index: 1, last_log_term: 1, leader_transfer: false },
        )
    };
    // A node that knows the removal is committed does not answer at all.
    let mut node = node_with_removal(2);
    node.step(pre_vote(2)).unwrap();
    let ready = node.ready();
    assert_eq!(vote_granted(&ready), None);
    assert!(ready.hard_state.is_none());
    // One that holds it uncommitted still answers (the removed node may be needed to
    // commit it), but the log decides: a log without its own removal is behind.
    let mut node = node_with_removal(1);
    node.step(pre_vote(2)).unwrap();
    assert_eq!(vote_granted(&node.ready()), Some(false));
    assert_eq!(node.term(), 1);
    // With a live leader, the check-quorum lease ignores the request altogether.
    node.step(append(1, 2, 1, (2, 1), &[], 1)).unwrap();
    let _ = node.ready();
    node.step(pre_vote(2)).unwrap();
    assert_eq!(vote_granted(&node.ready()), None);
    assert_eq!(node.term(), 1);
}

#[test]
fn learners_and_nodes_outside_the_configuration_never_campaign() {
    for (voters, learners) in [(vec![1, 2, 3], vec![4]), (vec![], vec![])] {
        let mut config = Config::new(4, voters);
        config.learners = learners;
        let mut node = Raft::new(config, MemoryLog::new(), 0).unwrap();
        for _ in 0..100 {
            node.tick();
        }
        node.campaign();
        assert_eq!((node.role(), node.term()), (Role::Follower, 0));
        let ready = node.ready();
        assert!(ready.messages.is_empty() && ready.messages_after_persist.is_empty());
    }
}

#[test]
fn a_leader_removing_itself_does_not_count_itself_and_steps_down_once_committed() {
    let mut leader = elected_leader(vec![1, 2, 3]);
    let index = propose_change(&mut leader, ConfChangeKind::RemoveNode, 1);
    ack(&mut leader, 2, index);
    assert_eq!(leader.commit_index(), 1, "without itself, the leader needs both remaining voters");
    assert_eq!(leader.role(), Role::Leader, "it leads until the removal commits");
    ack(&mut leader, 3, index);
    assert_eq!(leader.commit_index(), index);
    assert_eq!(leader.role(), Role::Follower);
    let ready = leader.ready();
    assert!(
        ready.messages.iter().any(|m| m.body == MessageBody::TimeoutNow),
        "it hands over to an up-to-date voter: {:?}",
        ready.messages
    );
    for _ in 0..100 {
        leader.tick();
    }
    assert_eq!(leader.role(), Role::Follower, "a removed node never campaigns");
}

fn snapshot_chunk(index: u64, term: u64, last: bool) -> MessageBody {
    let meta = SnapshotMeta { index, term, membership: Membership::new([1, 2, 3], []) };
    MessageBody::InstallSnapshot { chunk: SnapshotChunk { meta, offset: 0, data: Bytes::from_static(b"state"), last } }
}

#[test]
fn a_snapshot_never_replaces_committed_or_matching_entries() {
    // Behind our commit index: nothing to install; the answer says where we match.
    let log = [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)];
    let mut node = node_with_log(2, HardState { term: 1, vote: 1, commit: 5 }, &log);
    node.step(message(1, 2, 1, snapshot_chunk(3, 1, true))).unwrap();
    let ready = node.ready();
    assert!(ready.install_snapshot.is_none() && ready.snapshot_chunks.is_empty());
    assert!(ready
        .messages_after_persist
        .iter()
        .any(|m| m.body == MessageBody::AppendEntriesResponse { result: Ok(5) }));
    assert_eq!(node.last_index(), 5);
    // Our log holds the snapshot's last entry: keep the log (and its suffix), commit
    // through the snapshot.
    let mut node = node_with_log(2, HardState { term: 1, vote: 1, commit: 2 }, &log);
    node.step(message(1, 2, 1, snapshot_chunk(4, 1, true))).unwrap();
    let ready = node.ready();
    assert!(ready.install_snapshot.is_none());
    assert_eq!((node.commit_index(), node.last_index()), (4, 5));
}

#[test]
fn an_installed_snapshot_replaces_a_conflicting_log() {
    let mut node = node_with_log(2, HardState { term: 2, vote: 0, commit: 1 }, &[(1, 1), (2, 1), (3, 2)]);
    node.step(message(1, 2, 3, snapshot_chunk(4, 3, false))).unwrap();
    assert!(node.ready().install_snapshot.is_none(), "not installed before the last chunk");
    let mut last = snapshot_chunk(4, 3, true);
    if let MessageBody::InstallSnapshot { chunk } = &mut last {
        chunk.offset = 5;
    }
    node.step(message(1, 2, 3, last)).unwrap();
    let ready = node.ready();
    assert_eq!(ready.install_snapshot.map(|m| (m.index, m.term)), Some((4, 3)));
    assert_eq!((node.commit_index(), node.last_index()), (4, 4));
    assert_eq!(node.entry_term(4), Some(3));
    assert!(
        ready.messages_after_persist.iter().any(|m| m.body == MessageBody::AppendEntriesResponse { result: Ok(4) }),
        "the install is acknowledged only after it is durable"
    );
}

#[test]
fn a_forgotten_transfer_is_started_over_and_its_last_chunk_adopts_nothing() {
    let mut node = node_with_log(2, HardState { term: 2, vote: 0, commit: 1 }, &[(1, 1), (2, 1), (3, 2)]);
    node.step(message(1, 2, 3, snapshot_chunk(4, 3, false))).unwrap();
    assert_eq!(node.ready().snapshot_chunks.len(), 1, "the first chunk is staged");
    // The application checked the staged bytes with the last chunk and found them damaged.
    node.forget_incoming_snapshot();
    let mut last = snapshot_chunk(4, 3, true);
    if let MessageBody::InstallSnapshot { chunk } = &mut last {
        chunk.offset = 5;
    }
    node.step(message(1, 2, 3, last)).unwrap();
    let ready = node.ready();
    assert!(ready.install_snapshot.is_none() && ready.snapshot_chunks.is_empty(), "nothing adopted or staged");
    assert!(
        ready
            .messages
            .iter()
            .chain(&ready.messages_after_persist)
            .any(|m| m.body == MessageBody::InstallSnapshotResponse { index: 4, next_offset: 0 }),
        "the leader is told to start over: {ready:?}"
    );
    assert_eq!((node.commit_index(), node.last_index()), (1, 3), "the log is untouched");
    // Sent again from byte 0, the snapshot is adopted.
    node.step(message(1, 2, 3, snapshot_chunk(4, 3, true))).unwrap();
    assert_eq!(node.ready().install_snapshot.map(|m| m.index), Some(4));

    // Chunks stepped but not yet handed out go with the transfer.
    let mut node = node_with_log(2, HardState { term: 2, vote: 0, commit: 1 }, &[(1, 1), (2, 1), (3, 2)]);
    node.step(message(1, 2, 3, snapshot_chunk(4, 3, false))).unwrap();
    node.forget_incoming_snapshot();
    assert!(node.ready().snapshot_chunks.is_empty());
}

/// With a rule's planted bug switched on, the test of that rule must see the violation:
/// proof that the tests above can fail.
#[cfg(concord_planted_bugs)]
mod planted_bugs_are_caught {
    use super::*;

    fn with_bugs(mut node: Raft<MemoryLog>, set: impl Fn(&mut concord_raft::PlantedBugs)) -> Raft<MemoryLog> {
        let mut config = node.config().clone();
        set(&mut config.bugs);
        let store = node.store_mut().clone();
        Raft::new(config, store, 0).unwrap()
    }

    /// Node 1 campaigns, wins `term` with node 2's vote, and persists its empty entry.
    fn win_with_vote_of_2(leader: &mut Raft<MemoryLog>, term: u64) {
        leader.campaign();
        let ready = leader.ready();
        persist(leader, &ready);
        leader.step(message(2, 1, term, MessageBody::RequestVoteResponse { pre_vote: false, granted: true })).unwrap();
        assert_eq!((leader.role(), leader.term()), (Role::Leader, term));
        let ready = leader.ready();
        persist(leader, &ready);
    }

    #[test]
    fn commit_past_match_commits_the_stale_suffix() {
        let node = node_with_log(2, HardState { term: 1, vote: 1, commit: 1 }, &[(1, 1), (2, 1), (3, 1)]);
        let mut node = with_bugs(node, |b| b.commit_past_match = true);
        node.step(append(3, 2, 2, (1, 1), &[], 3)).unwrap();
        assert_eq!(node.commit_index(), 3);
    }

    #[test]
    fn figure8_commits_an_old_term_entry_by_counting() {
        let leader = node_with_log(1, HardState { term: 2, vote: 0, commit: 1 }, &[(1, 1), (2, 1)]);
        let mut leader = with_bugs(leader, |b| b.figure8 = true);
        win_with_vote_of_2(&mut leader, 3);
        leader.step(message(2, 1, 3, MessageBody::AppendEntriesResponse { result: Ok(2) })).unwrap();
        assert_eq!(leader.commit_index(), 2);
    }

    #[test]
    fn config_quorum_commits_with_the_old_majority_size() {
        let leader = elected_leader(vec![1, 2, 3]);
        let mut leader = with_bugs(leader, |b| b.config_quorum = true);
        // Restarted from the same store, the leader must win again (term 2).
        win_with_vote_of_2(&mut leader, 2);
        leader.step(message(2, 1, 2, MessageBody::AppendEntriesResponse { result: Ok(2) })).unwrap();
        leader.step(message(3, 1, 2, MessageBody::AppendEntriesResponse { result: Ok(2) })).unwrap();
        let index = leader.propose_conf_change(change(ConfChangeKind::AddVoter, 4)).unwrap();
        let ready = leader.ready();
        persist(&mut leader, &ready);
        leader.step(message(4, 1, 2, MessageBody::AppendEntriesResponse { result: Ok(index) })).unwrap();
        assert_eq!(leader.commit_index(), index, "two of four voters counted as a majority");
    }

    #[test]
    fn forget_vote_hands_out_a_hard_state_without_the_vote() {
        let node = node_with_log(2, HardState::default(), &[]);
        let mut node = with_bugs(node, |b| b.forget_vote = true);
        node.step(vote_request(1, 2, 1, 0, 0)).unwrap();
        assert_eq!(node.ready().hard_state.map(|h| h.vote), Some(0));
    }
}
