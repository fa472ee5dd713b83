//! The etcd Cluster and Maintenance APIs of a 3-member cluster of real `concord` processes.
//!
//! - MemberList, asked of each member: 3 members with their ids, names, peer URLs and
//!   (once published through Raft) client URLs.
//! - Status: API version, the same leader and raft term on every member, raft index and
//!   applied index that move with writes, the answering member's id in the header.
//! - Alarm (get) returns an empty list; Defragment succeeds and keeps the data; HashKV at
//!   one revision agrees across members.

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{AlarmAction, AlarmType, GetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_shows_every_member_with_its_urls() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leader().await;
    let mut expected: Vec<(u64, String, Vec<String>, Vec<String>)> =
        cluster.members.iter().map(|m| (m.id, m.name.clone(), vec![m.peer_url()], vec![m.client_url()])).collect();
    expected.sort();
    for member in 0..cluster.len() {
        let client = cluster.client(member).await;
        let name = cluster.members[member].name.clone();
        // Client URLs arrive through the log (each member publishes its own), so wait.
        let listed = eventually(Duration::from_secs(10), &format!("{name} to list every member's client URLs"), || {
            let mut client = client.clone();
            async move {
                let response = client.member_list().await.map_err(|e| e.to_string())?;
                let mut listed: Vec<(u64, String, Vec<String>, Vec<String>)> = response
                    .members()
                    .iter()
                    .map(|m| (m.id(), m.name().to_string(), m.peer_urls().to_vec(), m.client_urls().to_vec()))
                    .collect();
                listed.sort();
                if listed.iter().any(|(_, _, _, client_urls)| client_urls.is_empty()) {
                    return Err(format!("not every member has client URLs yet: {listed:?}"));
                }
                assert!(response.members().iter().all(|m| !m.is_learner()));
                Ok(listed)
            }
        })
        .await;
        assert_eq!(listed, expected, "MemberList on {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_version_leader_term_and_indexes() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let leader_id = cluster.members[leader].id;
    let mut terms = Vec::new();
    for member in 0..cluster.len() {
        let mut client = cluster.client(member).await;
        let status = client.status().await.expect("status");
        let name = &cluster.members[member].name;
        assert!(
            status.version().starts_with("3."),
            "{name}: version {:?} is not an etcd 3.x API version",
            status.version()
        );
        assert_eq!(status.leader(), leader_id, "{name} names another leader");
        assert_eq!(status.header().map(|h| h.member_id()), Some(cluster.members[member].id), "{name}'s header");
        assert!(status.raft_term() >= 1, "{name}: raft term {}", status.raft_term());
        assert!(status.raft_applied_index() >= 1, "{name}: applied index {}", status.raft_applied_index());
        assert!(
            status.raft_index() >= status.raft_applied_index(),
            "{name}: raft index {} below applied index {}",
            status.raft_index(),
            status.raft_applied_index()
        );
        assert!(status.db_size() > 0, "{name}: db size {}", status.db_size());
        assert!(!status.is_learner());
        terms.push(status.raft_term());
    }
    assert!(terms.iter().all(|&t| t == terms[0]), "members disagree on the term: {terms:?}");

    // Writes move the indexes forward on every member.
    let mut client = cluster.client(leader).await;
    let before = client.status().await.expect("status").raft_index();
    for i in 0..5 {
        client.put(format!("s/{i}"), "v", None).await.expect("put");
    }
    let after = client.status().await.expect("status");
    assert!(after.raft_index() >= before + 5, "raft index went from {before} to {}", after.raft_index());
    assert!(after.raft_applied_index() >= before + 5);
    let target = after.raft_index();
    for member in 0..cluster.len() {
        let client = cluster.client(member).await;
        let name = cluster.members[member].name.clone();
        eventually(Duration::from_secs(10), &format!("{name} to apply index {target}"), || {
            let mut client = client.clone();
            async move {
                let status = client.status().await.map_err(|e| e.to_string())?;
                if status.raft_applied_index() >= target {
                    Ok(())
                } else {
                    Err(format!("applied index {}", status.raft_applied_index()))
                }
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_empty_and_defragment_keeps_data() {
    let cluster = Cluster::start(3).await;
    let mut client = cluster.client(0).await;
    for i in 0..20 {
        client.put(format!("d/{i:02}"), vec![b'x'; 4096], None).await.expect("put");
    }
    client.delete("d/1", Some(etcd_client::DeleteOptions::new().with_prefix())).await.expect("delete");
    for member in 0..cluster.len() {
        let mut client = cluster.client(member).await;
        let name = &cluster.members[member].name;
        let alarms = client.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("alarm get");
        assert_eq!(alarms.alarms().len(), 0, "{name} reports alarms");
        client.defragment().await.unwrap_or_else(|e| panic!("defragment {name}: {e}"));
        let got = client.get("d/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("get");
        assert_eq!(got.count(), 10, "{name} after defragment");
        client.status().await.expect("status after defragment");
    }
    client.put("d/after", "v", None).await.expect("a write after defragmenting every member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_agrees_across_members() {
    let cluster = Cluster::start(3).await;
    let mut client = cluster.client(0).await;
    for i in 0..30 {
        client.put(format!("h/{}", i % 7), format!("{i}"), None).await.expect("put");
    }
    client.delete("h/3", None).await.expect("delete");
    let rev = revision(client.put("h/last", "v", None).await.expect("put").header());
    client.compact(rev - 10, None).await.expect("compact");
    let mut hashes = Vec::new();
    for member in 0..cluster.len() {
        let mut client = cluster.client(member).await;
        // A linearizable read first, so the member has applied everything.
        client.get("h/", None).await.expect("linearizable read");
        let hash = client.hash_kv(rev).await.expect("hash_kv");
        assert_eq!(hash.hash_revision(), rev);
        assert_eq!(hash.compact_version(), rev - 10);
        let earlier = client.hash_kv(rev - 5).await.expect("hash_kv at an earlier revision");
        hashes.push((hash.hash(), earlier.hash()));
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "HashKV differs across members: {hashes:x?}");
    assert_ne!(hashes[0].0, hashes[0].1, "different revisions hash differently");
    assert_status(
        client.hash_kv(rev - 11).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
}

/// etcd's Status.raft_index is the member's committed index (`RaftIndex:
/// ms.rg.CommittedIndex()` in etcd's maintenance server), so with nothing left to apply it
/// equals raft_applied_index, even while entries wait for a quorum that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_raft_index_is_the_committed_index() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    client.put("k", "committed", None).await.expect("a write with quorum");
    for follower in cluster.followers(leader) {
        cluster.kill(follower);
    }
    // Appended to the leader's log, never committed: the leader is alone.
    let lost = tokio::time::timeout(Duration::from_millis(300), client.put("k", "uncommitted", None)).await;
    assert!(!matches!(lost, Ok(Ok(_))), "a write without quorum succeeded");
    eventually(Duration::from_secs(3), "raft_index to equal raft_applied_index", || {
        let mut client = client.clone();
        async move {
            let status = client.status().await.map_err(|e| e.to_string())?;
            if status.raft_index() == status.raft_applied_index() {
                Ok(())
            } else {
                Err(format!(
                    "raft_index {} but raft_applied_index {} with nothing left to commit",
                    status.raft_index(),
                    status.raft_applied_index()
                ))
            }
        }
    })
    .await;
}
