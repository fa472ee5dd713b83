//! Maintenance.Snapshot (`etcdctl snapshot save`): the stream is framed as etcd frames its
//! own (a multiple of 512 bytes plus a SHA-256 trailer, which etcdctl checks), and its
//! payload is a consistent copy of the state machine that concord-mvcc can restore.

mod common;

use common::Cluster;
use sha2::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_streams_a_restorable_consistent_copy() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    for i in 0..50 {
        client.put(format!("snap/{i:02}"), format!("value {i}"), None).await.expect("put");
    }
    client.delete("snap/07", None).await.expect("delete");
    let revision = client.get("snap/00", None).await.expect("get").header().expect("header").revision();

    // Ask a follower: every member holds the same state.
    let follower = cluster.followers(leader)[0];
    let mut follower_client = cluster.client(follower).await;
    let mut stream = follower_client.snapshot().await.expect("snapshot stream");
    let mut bytes = Vec::new();
    let mut last_remaining = u64::MAX;
    while let Some(chunk) = stream.message().await.expect("snapshot chunk") {
        assert!(chunk.remaining_bytes() < last_remaining, "remaining bytes must shrink");
        last_remaining = chunk.remaining_bytes();
        bytes.extend_from_slice(chunk.blob());
    }
    assert_eq!(last_remaining, 0, "the stream ends with nothing remaining");
    assert_eq!(bytes.len() % 512, 32, "etcd's framing: 512-byte pages plus a SHA-256");
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(sha2::Sha256::digest(body).as_slice(), trailer, "the trailer is the body's SHA-256");

    // The body is concord-mvcc's snapshot format, zero-padded to the page size.
    let mut payload = body.to_vec();
    let restored = loop {
        match concord_mvcc::Store::restore_snapshot_in_memory(payload.as_slice()) {
            Ok((store, _)) => break store,
            Err(error) if payload.last() == Some(&0) => {
                payload.pop();
                let _ = error;
            }
            Err(error) => panic!("the snapshot does not restore: {error}"),
        }
    };
    assert!(restored.current_revision() >= revision);
    let range = concord_mvcc::RangeRequest {
        key: b"snap/".to_vec(),
        range_end: concord_mvcc::prefix_end(b"snap/"),
        ..Default::default()
    };
    let kvs = restored.range(&range).expect("range").kvs;
    assert_eq!(kvs.len(), 49, "50 puts, one delete");
    assert_eq!(kvs[0].value, b"value 0");
    assert!(!kvs.iter().any(|kv| kv.key == b"snap/07"));
}
