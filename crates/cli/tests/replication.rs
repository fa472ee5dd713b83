//! Replication across a 3-member cluster of real `concord` processes, seen through clients
//! that talk to one member each.
//!
//! - Writes sent to a follower only (put, txn, delete, compaction) succeed and are then
//!   readable from every member: a linearizable read on each member, then a serializable
//!   (local) read on the same member that must return the same data.
//! - A linearizable read through a follower sees a write that another member (the leader,
//!   or the other follower) has just acknowledged.
//! - A leader frozen (SIGSTOP) while the others elect a new one and take a write serves no
//!   stale linearizable read once it thaws (SIGCONT), even for a read sent while frozen.

mod common;

use common::*;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_follower_reach_every_member() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let follower_id = cluster.members[follower].id;
    let mut client = cluster.client(follower).await;

    let mut last_revision = 0;
    for i in 0..20 {
        let response = client.put(format!("f/{i:02}"), format!("v{i}"), None).await.expect("put through a follower");
        let header = response.header().expect("a header");
        assert_eq!(header.member_id(), follower_id, "the member asked answers");
        assert!(header.revision() > last_revision, "revisions rise with each acknowledged write");
        last_revision = header.revision();
    }
    let txn = Txn::new()
        .when([Compare::version("f/00", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("f/txn", "from txn", None), TxnOp::delete("f/19", None)]);
    let response = client.txn(txn).await.expect("txn through a follower");
    assert!(response.succeeded());
    let deleted = client.delete("f/18", Some(DeleteOptions::new().with_prev_key())).await.expect("delete");
    assert_eq!(deleted.deleted(), 1);
    assert_eq!(deleted.prev_kvs()[0].value(), b"v18");
    let compact_at = revision(deleted.header());
    client.compact(compact_at, None).await.expect("compact through a follower");

    let mut expected: Vec<(String, String)> = (0..18).map(|i| (format!("f/{i:02}"), format!("v{i}"))).collect();
    expected.push(("f/txn".into(), "from txn".into()));
    for member in 0..cluster.len() {
        let mut client = cluster.client(member).await;
        let name = &cluster.members[member].name;
        let linearizable = client.get("f/", Some(GetOptions::new().with_prefix())).await.expect("linearizable read");
        let got: Vec<(String, String)> = keys(&linearizable).into_iter().zip(values(&linearizable)).collect();
        assert_eq!(got, expected, "linearizable read on {name}");
        let serializable =
            client.get("f/", Some(GetOptions::new().with_prefix().with_serializable())).await.expect("local read");
        assert_eq!(
            format!("{:?}", serializable.kvs()),
            format!("{:?}", linearizable.kvs()),
            "a serializable read on {name} right after a linearizable one returns the same key-values"
        );
        assert_status(
            client.get("f/00", Some(GetOptions::new().with_revision(compact_at - 1).with_serializable())).await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_through_a_follower_see_acknowledged_writes() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let mut on_leader = cluster.client(leader).await;
    let mut on_first = cluster.client(followers[0]).await;
    let mut on_second = cluster.client(followers[1]).await;

    // Written on the leader, read at once on a follower.
    for i in 0..30 {
        let put = on_leader.put("lr", format!("{i}"), None).await.expect("put on the leader");
        let written = revision(put.header());
        let read = on_first.get("lr", None).await.expect("linearizable read on a follower");
        assert_eq!(values(&read), [format!("{i}")], "iteration {i}: the follower missed an acknowledged write");
        assert_eq!(read.kvs()[0].mod_revision(), written);
        assert!(revision(read.header()) >= written);
    }
    // Written on one follower, read at once on the other.
    for i in 0..30 {
        let put = on_first.put("ff", format!("{i}"), None).await.expect("put on a follower");
        let written = revision(put.header());
        let read = on_second.get("ff", None).await.expect("linearizable read on the other follower");
        assert_eq!(values(&read), [format!("{i}")], "iteration {i}: the other follower missed an acknowledged write");
        assert_eq!(read.kvs()[0].mod_revision(), written);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thawed_old_leader_serves_no_stale_linearizable_read() {
    let mut cluster = Cluster::start(3).await;
    let old_leader = cluster.wait_for_leader().await;
    let mut on_old = cluster.client(old_leader).await;
    on_old.put("x", "old", None).await.expect("put");

    cluster.pause(old_leader);
    let others = cluster.followers(old_leader);
    let new_leader = cluster.wait_for_leader_among(&others).await;
    let mut on_new = cluster.client(new_leader).await;
    let written = revision(on_new.put("x", "new", None).await.expect("put on the new leader").header());

    // Sent while the old leader is frozen: it is handled the moment it thaws, when the
    // old leader may still believe it leads.
    let mut reader = on_old.clone();
    let read = tokio::spawn(async move { reader.get("x", None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.resume(old_leader);
    let read = within(Duration::from_secs(20), "the read on the thawed leader", read).await.expect("reader task");
    match read {
        Ok(response) => {
            assert_eq!(values(&response), ["new"], "a stale linearizable read after the write at {written}");
            assert!(revision(response.header()) >= written);
        }
        Err(error) => {
            let (code, message) = grpc_status(&error).unwrap_or_else(|| panic!("a non-gRPC error: {error}"));
            eprintln!("observed: the read on the thawed leader failed with {code:?} {message:?}");
            assert_eq!(code, Code::Unavailable, "{message}");
        }
    }
    // Once it has rejoined, it serves the new value.
    cluster.wait_for_leader().await;
    let response = on_old.get("x", None).await.expect("a linearizable read on the old leader");
    assert_eq!(values(&response), ["new"]);
}
