//! Regressions from the adversarial review of membership changes and snapshots: each test
//! failed before its fix.
//! - f1*: vote requests from nodes outside the receiver's configuration were ignored, so a
//!   voter added (or a node lagging behind a change) could leave a cluster unable to elect
//!   anyone; messages are now handled without consulting the configuration.
//! - f2*: a leader whose own removal was uncommitted never campaigned again after stepping
//!   down or restarting; it may now campaign among its latest configuration's voters.
//! - f3: chunks of a second snapshot handed out in the same Ready as the install of a first
//!   one replaced the first one's staged bytes.
mod harness;

use concord_raft::{ConfChangeKind, Role};
use harness::Cluster;

/// Prints the cluster's state (shown when the test fails) and asserts someone leads.
fn expect_a_leader(c: &mut Cluster, why: &str) {
    c.status();
    c.members();
    print!("{}", c.take_output());
    assert!(leader_of(c).is_some(), "{why}");
}

fn leader_of(c: &Cluster) -> Option<u64> {
    c.nodes.iter().find(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader)).map(|(id, _)| *id)
}

/// F1 (LIVENESS). {1,2,3}; n3 lags (cut off) while n4 is added as a voter and n2 is
/// removed: C = {1,3,4}, committed by {1,4}. Then n1 crashes. n3 and n4 are a majority of
/// C and both alive, but n3 still has {1,2,3} and drops every (pre-)vote request from n4
/// ("not a voter in my configuration"), while n3's own campaign needs n1 or n2, whose logs
/// are ahead of it. No leader can ever be elected, so n3 never learns C.
#[test]
fn f1_lagging_voter_ignores_votes_from_a_newly_added_voter_forever() {
    let mut c = Cluster::new(3, |_| {});
    c.raft(1).campaign();
    c.stabilize();
    c.propose(1, "a");
    c.stabilize();
    c.add_node(4, |_| {});
    c.isolate(3); // n3 is slow / briefly partitioned
    c.conf_change(1, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    c.conf_change(1, ConfChangeKind::RemoveNode, 2);
    c.stabilize();
    print!("{}", c.take_output());
    assert_eq!(c.raft(1).commit_index(), 4, "both changes committed by {{1,2,4}} and {{1,4}}");
    c.crash(1); // one failure in C = {1,3,4}
    c.crash(2); // the removed member is decommissioned (keeping it up does not help either)
    c.heal();
    c.tick(&[3, 4], 500);
    expect_a_leader(&mut c, "n3 and n4 are a majority of {{1,3,4}} but can never elect a leader");
}

/// F1 variant with n2 kept alive: still no leader.
#[test]
fn f1b_same_with_the_removed_member_still_running() {
    let mut c = Cluster::new(3, |_| {});
    c.raft(1).campaign();
    c.stabilize();
    c.add_node(4, |_| {});
    c.isolate(3);
    c.conf_change(1, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    c.conf_change(1, ConfChangeKind::RemoveNode, 2);
    c.stabilize();
    c.crash(1);
    c.heal();
    c.tick(&[2, 3, 4], 500);
    expect_a_leader(&mut c, "no leader with n2, n3, n4 all up");
}

/// F1 (LIVENESS), the plain form: n4 is added directly as a voter; the change commits on
/// {1,2,3} (3 of 4) before n4 received anything. n1 then crashes. n2, n3, n4 are 3 of the
/// 4 voters, but every election needs n4's vote and n4, whose membership is still empty,
/// drops all vote requests. The cluster never elects a leader again.
#[test]
fn f1c_new_voter_with_empty_membership_ignores_every_candidate() {
    let mut c = Cluster::new(3, |_| {});
    c.raft(1).campaign();
    c.stabilize();
    c.add_node(4, |_| {});
    c.isolate(4); // n4 is still starting up / slow link
    c.conf_change(1, ConfChangeKind::AddVoter, 4);
    c.stabilize();
    assert_eq!(c.raft(1).commit_index(), 2, "AddVoter 4 committed by n1, n2, n3");
    c.crash(1);
    c.heal();
    c.tick(&[2, 3, 4], 500);
    expect_a_leader(&mut c, "three of four voters are up, yet no leader is ever elected");
}

/// F2 (LIVENESS): a 2-voter cluster {1,2}; leader n1 proposes its own removal while n2 is
/// unreachable. The entry is in effect on n1 at once (n1 is no longer a voter there), so
/// check-quorum makes n1 step down, and from then on n1 never campaigns. After the
/// partition heals n2 (config {1,2}) needs n1's vote, but n1's log is longer (it holds the
/// uncommitted removal), so n1 refuses. No leader can ever be elected. Plain Raft (the
/// dissertation) lets n1 campaign and count votes in its latest configuration {2}: n2
/// grants, n1 wins, commits the removal and steps down.
#[test]
fn f2_uncommitted_self_removal_deadlocks_a_two_voter_cluster() {
    let mut c = Cluster::new(2, |_| {});
    c.raft(1).campaign();
    c.stabilize();
    c.isolate(2);
    c.conf_change(1, ConfChangeKind::RemoveNode, 1);
    c.tick(&[1, 2], 30); // n1 steps down by check-quorum
    c.heal();
    c.tick(&[1, 2], 500);
    expect_a_leader(&mut c, "both nodes up and connected, yet no leader is ever elected");
}

/// F2 variant with a crash instead of a partition: leader n1 crashes right after writing
/// its own removal (never sent); on restart it is not a voter in its latest config and
/// never campaigns, and n2 cannot win without n1's vote.
#[test]
fn f2b_uncommitted_self_removal_then_leader_restart() {
    let mut c = Cluster::new(2, |_| {});
    c.raft(1).campaign();
    c.stabilize();
    c.cut_one_way(1, 2);
    c.conf_change(1, ConfChangeKind::RemoveNode, 1);
    c.stabilize();
    c.crash(1);
    c.restart(1);
    c.heal();
    c.tick(&[1, 2], 500);
    expect_a_leader(&mut c, "both nodes up and connected, yet no leader is ever elected");
}

mod snapshot_ready {
    use bytes::Bytes;
    use concord_raft::{
        Config, HardState, Membership, MemoryLog, Message, MessageBody, Raft, SnapshotChunk, SnapshotMeta,
    };

    fn chunk(index: u64, offset: u64, data: &'static [u8], last: bool) -> Message {
        let meta = SnapshotMeta { index, term: 1, membership: Membership::new([1, 2, 3], []) };
        let chunk = SnapshotChunk { meta, offset, data: Bytes::from_static(data), last };
        Message { from: 1, to: 2, term: 1, body: MessageBody::InstallSnapshot { chunk } }
    }

    /// F3 (SAFETY, state-machine divergence for an application that follows the Ready
    /// contract). Follower n2 receives the last chunk of snapshot A (index 5) and then the
    /// first chunk of a newer snapshot B (index 9) before the application calls `ready()`
    /// (the leader took snapshot B and restarted the transfer, or a new leader sends B).
    /// The core adopts A, then accepts B@0 (9 > commit 5, no `incoming_snapshot`), and
    /// hands out ONE Ready with `snapshot_chunks = [A@0 last, B@0]` and
    /// `install_snapshot = A`. The documented procedure ("stage `snapshot_chunks` (a chunk
    /// at offset 0 starts a new snapshot); if `install_snapshot` is set, install the staged
    /// snapshot") installs B's first chunk as snapshot A. The core now believes the state
    /// machine is at index 5 and will apply 6.. on top of it.
    #[test]
    fn f3_a_ready_can_install_bytes_of_a_different_snapshot() {
        let mut store = MemoryLog::new();
        store.hard_state = HardState { term: 1, vote: 1, commit: 0 };
        let mut n2 = Raft::new(Config::new(2, vec![1, 2, 3]), store, 0).unwrap();
        n2.step(chunk(5, 0, b"state-of-A@5", true)).unwrap();
        n2.step(chunk(9, 0, b"first-part-of-B@9", false)).unwrap();
        let ready = n2.ready();
        // The application, exactly as ready.rs documents it:
        let mut staging: Vec<u8> = Vec::new();
        for c in &ready.snapshot_chunks {
            if c.offset == 0 {
                staging.clear();
            }
            staging.extend_from_slice(&c.data);
        }
        let installed = ready.install_snapshot.expect("snapshot A is installed in this Ready");
        assert_eq!(installed.index, 5);
        assert_eq!(n2.commit_index(), 5);
        assert_eq!(
            String::from_utf8_lossy(&staging),
            "state-of-A@5",
            "the bytes installed as snapshot 5 are not snapshot 5's"
        );
    }
}

/// Found by the simulator's peer-input check: a member that joined with an empty disk and
/// received the log from its start knows no configuration before the first configuration
/// entry (the bootstrap configuration is not an entry). It snapshotted an index there, with
/// an empty membership, became leader and sent that snapshot to a follower, which would
/// have known of no voter after installing it. Such an index now has no snapshot
/// description; a later one does.
#[test]
fn a_joined_member_does_not_snapshot_an_index_whose_configuration_it_never_saw() {
    let mut c = Cluster::new(3, |_| {});
    c.raft(1).campaign();
    c.stabilize();
    c.propose(1, "a");
    c.propose(1, "b");
    c.stabilize();
    c.add_node(4, |_| {});
    c.conf_change(1, ConfChangeKind::AddLearner, 4);
    c.stabilize();
    c.propose(1, "c");
    c.stabilize();
    let joined = c.raft(4);
    assert_eq!(joined.commit_index(), 5, "n4 holds and applied the whole log");
    assert!(matches!(joined.snapshot_meta_at(3), Err(concord_raft::StorageError::MembershipUnknown(3))));
    let meta = joined.snapshot_meta_at(5).expect("after the entry that added it");
    assert_eq!(meta.membership, concord_raft::Membership::new([1, 2, 3], [4]));
    // A bootstrap member knows the configuration from the start.
    assert_eq!(c.raft(2).snapshot_meta_at(3).expect("known").membership, concord_raft::Membership::new([1, 2, 3], []));
}
