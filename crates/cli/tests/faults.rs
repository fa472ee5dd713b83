//! Crashes, stops and restarts of real `concord` processes, with clients writing.
//!
//! - SIGKILL of the leader under a stream of writes: the others elect a new leader within a
//!   few election timeouts, writes go on, every acknowledged write is there afterwards; the
//!   killed member restarts from its data directory, catches up, and HashKV at one revision
//!   agrees on all members.
//! - The same three times in a row, each old leader restarting while the next is killed.
//! - No quorum (2 of 3 killed, the survivor being the old leader or a follower): a write to
//!   the survivor fails with Unavailable ("etcdserver: no leader" or "etcdserver: request
//!   timed out") within a bound, a linearizable read too, while a serializable read still
//!   answers; once a member comes back, writes succeed again.
//! - SIGTERM: the process exits with status 0 within a few seconds, and what was written
//!   before is there after a restart (one member; and the leader of three).
//! - SIGKILL of all three members under writes, then restart of all: every acknowledged
//!   write is present and the members' HashKV agree.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, GetOptions};

/// A write a client saw acknowledged: key, value, revision.
type Acked = (String, String, i64);

/// Writers, each putting distinct keys (`PREFIX{writer}/{seq}` = `seq`) one after another
/// until told to stop; what was acknowledged and which writes failed.
struct Writers {
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `per_client` writers share each client (so requests overlap on every member).
    fn start(prefix: &str, clients: Vec<Client>, per_client: usize) -> Writers {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let clients = clients.into_iter().flat_map(|client| std::iter::repeat_n(client, per_client));
        for (writer, mut client) in clients.enumerate() {
            let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                // Bounded in count as well as by the stop flag.
                for seq in 0..5000u32 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("{prefix}{writer}/{seq:05}");
                    let value = seq.to_string();
                    let attempt =
                        tokio::time::timeout(Duration::from_secs(12), client.put(key.clone(), value.clone(), None));
                    match attempt.await {
                        Ok(Ok(response)) => acked.lock().unwrap().push((key, value, revision(response.header()))),
                        Ok(Err(error)) => {
                            failed.lock().unwrap().push(format!("{key}: {error}"));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => failed.lock().unwrap().push(format!("{key}: client-side timeout")),
                    }
                }
            }));
        }
        Writers { acked, failed, stop, tasks }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_for_acks(&self, count: usize, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while self.acked_count() < count {
            if Instant::now() > deadline {
                panic!(
                    "{what}: only {} of {count} writes acknowledged within {limit:?}; failures: {:?}",
                    self.acked_count(),
                    self.failed.lock().unwrap().iter().rev().take(5).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers; returns the acknowledged writes and the failures.
    async fn stop(self) -> (Vec<Acked>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            within(Duration::from_secs(20), "writers to stop", task).await.expect("a writer task panicked");
        }
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acked, failed)
    }
}

/// Every acknowledged write, read back through `client` (linearizable): present, with its
/// value and the revision its writer was told.
async fn assert_all_present(client: &mut Client, prefix: &str, acked: &[Acked], when: &str) {
    let response = client.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("read back");
    let stored: BTreeMap<String, (String, i64)> = response
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (String::from_utf8_lossy(kv.value()).into_owned(), kv.mod_revision()),
            )
        })
        .collect();
    let mut revisions: Vec<i64> = acked.iter().map(|(_, _, revision)| *revision).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), acked.len(), "{when}: two acknowledged puts were told the same revision");
    let mut missing = Vec::new();
    for (key, value, revision) in acked {
        match stored.get(key) {
            Some((v, r)) if v == value && r == revision => {}
            other => missing.push(format!("{key}={value}@{revision} found {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{when}: {} acknowledged writes lost or changed: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (key, (value, _)) in &stored {
        assert!(
            key.ends_with(&format!("/{:05}", value.parse::<u32>().expect("a written value"))),
            "{when}: {key} holds a value never written to it: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_writes() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let survivors = cluster.followers(leader);
    let mut clients = Vec::new();
    for &member in &survivors {
        clients.push(cluster.client(member).await);
    }
    let writers = Writers::start("w/", clients, 4);
    writers.wait_for_acks(60, Duration::from_secs(20), "before the crash").await;

    let killed_at = Instant::now();
    let acked_before = writers.acked_count();
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader_among(&survivors).await;
    let election = killed_at.elapsed();
    eprintln!("observed: new leader {} {election:?} after SIGKILL of the leader", cluster.members[new_leader].name);
    assert!(
        election < 10 * ELECTION_TIMEOUT,
        "a new leader took {election:?}, more than 10 election timeouts of {ELECTION_TIMEOUT:?}"
    );
    let acked_at_election = writers.acked_count();
    writers.wait_for_acks(acked_at_election + 60, Duration::from_secs(20), "after the new leader").await;
    let (acked, failed) = writers.stop().await;
    eprintln!(
        "observed: {} writes acknowledged ({acked_before} before the crash), {} failed: {:?}",
        acked.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );

    let mut reader = cluster.client(survivors[0]).await;
    assert_all_present(&mut reader, "w/", &acked, "after the leader's crash").await;
    let final_revision = current_revision(&mut reader).await;

    cluster.restart(leader);
    cluster.wait_for_leader().await;
    // The restarted member catches up: its own linearizable read has everything, and a
    // local read then returns the same.
    let mut restarted = cluster.client(leader).await;
    assert_all_present(&mut restarted, "w/", &acked, "on the restarted member").await;
    let local = restarted.get("w/", Some(GetOptions::new().with_prefix().with_serializable())).await.unwrap();
    let survivor_view = reader.get("w/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(
        format!("{:?}", local.kvs()),
        format!("{:?}", survivor_view.kvs()),
        "the restarted member's data differs"
    );
    assert_hash_kv_agrees(&cluster, final_revision).await;
}

/// Three rounds of: SIGKILL the leader, wait for a new one, see writes go on, restart the
/// old leader (which may hold entries nobody else has, to be replaced on rejoining).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_repeatedly_under_writes() {
    let mut cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for member in 0..3 {
        clients.push(cluster.client(member).await);
    }
    let writers = Writers::start("rk/", clients, 2);
    writers.wait_for_acks(30, Duration::from_secs(20), "before the first crash").await;
    for round in 0..3 {
        let leader = cluster.wait_for_leader().await;
        cluster.kill(leader);
        let others = cluster.followers(leader);
        let killed_at = Instant::now();
        cluster.wait_for_leader_among(&others).await;
        let election = killed_at.elapsed();
        eprintln!("observed: round {round}: new leader {election:?} after SIGKILL of {}", cluster.members[leader].name);
        assert!(election < 10 * ELECTION_TIMEOUT, "round {round}: a new leader took {election:?}");
        let acked = writers.acked_count();
        writers
            .wait_for_acks(acked + 30, Duration::from_secs(20), &format!("round {round}, after the new leader"))
            .await;
        cluster.restart(leader);
    }
    cluster.wait_for_leader().await;
    let (acked, failed) = writers.stop().await;
    eprintln!("observed: {} writes acknowledged over 3 leader crashes, {} failed", acked.len(), failed.len());
    let mut final_revision = 0;
    for member in 0..3 {
        let mut client = cluster.client(member).await;
        let name = cluster.members[member].name.clone();
        assert_all_present(&mut client, "rk/", &acked, &format!("on {name} after 3 leader crashes")).await;
        final_revision = final_revision.max(current_revision(&mut client).await);
    }
    assert_hash_kv_agrees(&cluster, final_revision).await;
}

/// Kills two members; the survivor is the old leader or a follower.
async fn without_quorum(survivor_is_leader: bool) {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let survivor = if survivor_is_leader { leader } else { followers[0] };
    let mut client = cluster.client(survivor).await;
    client.put("before", "x", None).await.expect("a write with quorum");
    let to_kill: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
    for &member in &to_kill {
        cluster.kill(member);
    }

    // What etcd answers: Unavailable, "no leader" (or "request timed out") after its
    // request timeout. concord's bound: 5 s + 2 election timeouts, after waiting up to 3
    // election timeouts for a leader.
    let bound = Duration::from_secs(5) + 5 * ELECTION_TIMEOUT + Duration::from_secs(2);
    let started = Instant::now();
    let write = within(Duration::from_secs(30), "a write without quorum to fail", client.put("after", "y", None)).await;
    let took = started.elapsed();
    let (code, message) = match &write {
        Ok(response) => panic!("a write without quorum succeeded: {response:?}"),
        Err(error) => grpc_status(error).unwrap_or_else(|| panic!("a non-gRPC error: {error}")),
    };
    eprintln!(
        "observed (survivor is leader: {survivor_is_leader}): write failed after {took:?} with {code:?} {message:?}"
    );
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(
        message == "etcdserver: no leader" || message == "etcdserver: request timed out",
        "unexpected message {message:?}"
    );
    assert!(took < bound, "the write took {took:?} to fail, more than {bound:?}");

    let started = Instant::now();
    let read =
        within(Duration::from_secs(30), "a linearizable read without quorum to fail", client.get("before", None)).await;
    let took = started.elapsed();
    match &read {
        Ok(response) => panic!("a linearizable read without quorum succeeded: {response:?}"),
        Err(error) => {
            eprintln!("observed: linearizable read failed after {took:?} with {:?}", grpc_status(error));
            let (code, _) = grpc_status(error).unwrap_or_else(|| panic!("a non-gRPC error: {error}"));
            assert_eq!(code, Code::Unavailable);
        }
    }
    assert!(took < bound, "the read took {took:?} to fail, more than {bound:?}");
    let local = client.get("before", Some(GetOptions::new().with_serializable())).await.expect("a serializable read");
    assert_eq!(values(&local), ["x"], "a serializable read is served locally without a leader");

    // Quorum back: writes succeed again.
    cluster.restart(to_kill[0]);
    cluster.wait_for_leader().await;
    let mut client = cluster.client(survivor).await;
    eventually(Duration::from_secs(15), "a write once quorum is back", || {
        let mut client = client.clone();
        async move { client.put("again", "z", None).await.map_err(|e| e.to_string()) }
    })
    .await;
    assert_eq!(values(&client.get("before", None).await.unwrap()), ["x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quorum_with_the_leader_surviving() {
    without_quorum(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quorum_with_a_follower_surviving() {
    without_quorum(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_keeps_data() {
    let mut cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let key = format!("t/0/{i:05}");
        let response = client.put(key.clone(), i.to_string(), None).await.expect("put");
        acked.push((key, i.to_string(), revision(response.header())));
    }

    // Writers keep writing (under other prefixes) while the member stops.
    let writers = Writers::start("t/w", vec![client.clone()], 3);
    writers.wait_for_acks(60, Duration::from_secs(20), "before SIGTERM").await;
    let started = Instant::now();
    let status = cluster.terminate(0, Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!("observed: exit {status} {took:?} after SIGTERM, with writers running");
    assert_eq!(status.code(), Some(0), "SIGTERM must end the process with status 0, got {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let (during, _) = writers.stop().await;
    acked.extend(during);
    drop(client);

    cluster.restart(0);
    cluster.wait_for_leader().await;
    let mut client = cluster.client(0).await;
    assert_all_present(&mut client, "t/", &acked, "after SIGTERM and restart").await;
    let revision_before = acked.iter().map(|(_, _, revision)| *revision).max().unwrap();
    assert_eq!(current_revision(&mut client).await, revision_before, "the revision survives a restart");
    let response = client.put("t/0/after", "1", None).await.expect("a write after restart");
    assert_eq!(revision(response.header()), revision_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_of_three() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    let mut acked = Vec::new();
    for i in 0..30u32 {
        let key = format!("t/0/{i:05}");
        let response = client.put(key.clone(), i.to_string(), None).await.expect("put");
        acked.push((key, i.to_string(), revision(response.header())));
    }
    let started = Instant::now();
    let status = cluster.terminate(leader, Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!("observed: the leader exited with {status} {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "SIGTERM must end the process with status 0, got {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let others = cluster.followers(leader);
    cluster.wait_for_leader_among(&others).await;
    let mut on_other = cluster.client(others[0]).await;
    assert_all_present(&mut on_other, "t/", &acked, "after the leader stopped").await;

    cluster.restart(leader);
    cluster.wait_for_leader().await;
    let mut restarted = cluster.client(leader).await;
    assert_all_present(&mut restarted, "t/", &acked, "on the restarted member").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_killed_under_writes_then_restarted() {
    let mut cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for member in 0..3 {
        clients.push(cluster.client(member).await);
    }
    let writers = Writers::start("a/", clients, 3);
    writers.wait_for_acks(150, Duration::from_secs(30), "before the crash").await;
    for member in 0..3 {
        cluster.kill(member);
    }
    let (acked, failed) = writers.stop().await;
    eprintln!("observed: {} writes acknowledged before SIGKILL of all, {} failed", acked.len(), failed.len());

    for member in 0..3 {
        cluster.restart(member);
    }
    cluster.wait_for_leader().await;
    let mut final_revision = 0;
    for member in 0..3 {
        let mut client = cluster.client(member).await;
        let name = cluster.members[member].name.clone();
        assert_all_present(&mut client, "a/", &acked, &format!("on {name} after restarting all")).await;
        final_revision = final_revision.max(current_revision(&mut client).await);
    }
    assert_hash_kv_agrees(&cluster, final_revision).await;
    // And the cluster goes on.
    let mut client = cluster.client(0).await;
    client.put("a/after", "1", None).await.expect("a write after restarting all");
}

/// Peer messages no correct member sends are refused, logged (rate limited) and otherwise
/// ignored: the member keeps serving. Before, the first of these (a heartbeat whose commit
/// index is past the log's end) tripped an assertion and ended the process, and the
/// non-contiguous append made the WAL refuse and the member exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_no_correct_member_sends_are_refused_and_the_member_goes_on() {
    use concord_api::peerpb::{self, peer_client::PeerClient, raft_message::Body};

    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    client.put("before", "1", None).await.expect("put before");
    let header = client.status().await.expect("status").header().expect("header").clone();
    let (to, term) = (header.member_id(), header.raft_term() + 1);
    let message = |body| peerpb::RaftMessage { from: 0xbad, to, term, body: Some(body) };
    let entry = |index, kind, data: Vec<u8>| peerpb::Entry { index, term, kind, data };
    let append = |prev_log_index, entries| {
        message(Body::AppendEntries(peerpb::AppendEntries {
            prev_log_index,
            prev_log_term: 0,
            entries,
            leader_commit: 0,
        }))
    };
    let messages = vec![
        // A commit past the log's end.
        message(Body::Heartbeat(peerpb::Heartbeat { commit: 1 << 40, read_round: 0 })),
        // Entries that do not follow each other.
        append(0, vec![entry(1, 0, b"a".to_vec()), entry(3, 0, b"b".to_vec())]),
        // A configuration entry that does not decode.
        append(0, vec![entry(1, 1, vec![9, 9, 9])]),
        // An entry above what the WAL stores in one record (16 MiB).
        append(0, vec![entry(1, 0, vec![7; 17 << 20])]),
    ];
    let frames: Vec<peerpb::PeerFrame> = messages
        .into_iter()
        .map(|message| peerpb::PeerFrame {
            from: 0xbad,
            cluster_id: header.cluster_id(),
            messages: vec![message],
            ..Default::default()
        })
        .collect();
    let mut peer = PeerClient::connect(cluster.members[0].peer_url())
        .await
        .expect("dial the peer port")
        .max_encoding_message_size(64 << 20);
    let _ = tokio::time::timeout(Duration::from_secs(5), peer.stream(tokio_stream::iter(frames))).await;

    // Still the leader of its term, still serving.
    let mut client = cluster.client(0).await;
    client.put("after", "2", None).await.expect("a put after the refused messages");
    let status = client.status().await.expect("status");
    assert_eq!(status.header().expect("header").raft_term(), header.raft_term(), "no message changed the term");
    let log = cluster.log_text(0);
    assert!(log.contains("refused a peer message no correct member sends"), "the refusal is logged: {log}");
    assert!(log.contains("past this log's last entry"), "with its reason: {log}");
    assert!(!log.contains("panicked"), "{log}");
}
