//! Membership changes on clusters of real `concord` processes, through etcd's Cluster API
//! (the `etcd-client` crate), as an operator would make them.
//!
//! - A learner added to a loaded 3-member cluster joins with `--initial-cluster-state
//!   existing`, catches up (HashKV equal at one revision) while writes go on, and is
//!   promoted; every member then lists the same 4 voters. Promoting it before it caught up
//!   fails with etcd's "in sync" error. Prints the catch-up time (`MEMBERSHIP_KEYS` keys,
//!   default 5000).
//! - A voter added directly joins and counts toward the quorum (writes commit with one of
//!   the original members down); restarted, it comes back as the same member.
//! - A follower removed (through the other follower, which forwards to the leader) stops
//!   by itself with etcd's "permanently removed" error; the rest keep serving.
//! - The leader removed while a writer runs: a new leader takes over, the old one exits,
//!   no acknowledged write is lost. Prints how long the cluster had no leader.
//! - MemberUpdate moves a member to a new peer URL; restarted there, it is reached.
//! - Bad input gets etcd's codes and texts: bad or taken peer URLs, a second learner,
//!   promoting a voter or a learner not in sync, unknown members, removal that would
//!   leave no live quorum ("unhealthy cluster"); MoveLeader to a follower works, to an
//!   unknown member fails with "bad leader transferee", and only the leader takes it.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, GetOptions, MemberAddOptions};

/// Waits until member `i` lists exactly `expected` (id, is_learner, started) members.
async fn wait_member_list(cluster: &Cluster, i: usize, expected: &BTreeSet<(u64, bool, bool)>) {
    let mut client = cluster.client(i).await;
    let what = format!("{} to list {expected:x?}", cluster.members[i].name);
    eventually(Duration::from_secs(20), &what, || {
        let mut client = client.clone();
        async move {
            let list = client.member_list().await.map_err(|e| e.to_string())?;
            let got: BTreeSet<(u64, bool, bool)> =
                list.members().iter().map(|m| (m.id(), m.is_learner(), !m.name().is_empty())).collect();
            if &got == expected {
                Ok(())
            } else {
                Err(format!("lists {got:x?}"))
            }
        }
    })
    .await;
    // Names and URLs agree with the harness too.
    let list = client.member_list().await.expect("member list");
    for member in list.members() {
        if let Some(index) = cluster.index_of(member.id()) {
            assert_eq!(member.name(), cluster.members[index].name);
            assert_eq!(member.peer_urls(), [cluster.members[index].peer_url()]);
            assert_eq!(member.client_urls(), [cluster.members[index].client_url()]);
        }
    }
}

/// Puts `count` keys `load/NNNNNN` (100-byte values) through `client`, 8 at a time.
async fn load(client: &Client, count: usize) {
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for key in (writer..count).step_by(8) {
                client.put(format!("load/{key:06}"), vec![b'v'; 100], None).await.expect("load put");
            }
        }));
    }
    for task in tasks {
        task.await.expect("load writer");
    }
}

/// A writer putting `PREFIX{seq}` one after another until stopped (bounded in count);
/// what was acknowledged, with when.
struct Writer {
    acked: Arc<Mutex<Vec<(String, Instant)>>>,
    errors: Arc<Mutex<BTreeSet<String>>>,
    /// The longest any one put took, acknowledged or not.
    slowest: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(prefix: &str, mut client: Client) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let (acked2, errors2, stop2, prefix) = (acked.clone(), errors.clone(), stop.clone(), prefix.to_string());
        let slowest2 = slowest.clone();
        let task = tokio::spawn(async move {
            for seq in 0..20_000u32 {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let key = format!("{prefix}{seq:05}");
                let sent = Instant::now();
                let outcome = tokio::time::timeout(Duration::from_secs(10), client.put(key.clone(), "x", None)).await;
                let took = sent.elapsed();
                {
                    let mut slowest = slowest2.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
                match outcome {
                    Ok(Ok(_)) => acked2.lock().unwrap().push((key, Instant::now())),
                    Ok(Err(error)) => {
                        errors2.lock().unwrap().insert(error.to_string());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => {
                        errors2.lock().unwrap().insert("client timeout".into());
                    }
                }
            }
        });
        Writer { acked, errors, slowest, stop, task }
    }

    async fn stop(self) -> (Vec<(String, Instant)>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        within(Duration::from_secs(15), "the writer stops", self.task).await.expect("writer task");
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        eprintln!("MEASURE writer: {} acknowledged, slowest put {:?}", acked.len(), *self.slowest.lock().unwrap());
        (acked, errors)
    }
}

/// Waits until member `i` has applied `revision` and returns its HashKV there.
async fn hash_at(cluster: &Cluster, i: usize, revision: i64, limit: Duration) -> u32 {
    let client = cluster.client(i).await;
    let what = format!("{} to reach revision {revision}", cluster.members[i].name);
    eventually(limit, &what, || {
        let mut client = client.clone();
        async move { client.hash_kv(revision).await.map(|r| r.hash()).map_err(|e| e.to_string()) }
    })
    .await
}

/// Every key of `acked` is readable (linearizable) through `client`.
async fn assert_all_present(client: &mut Client, prefix: &str, acked: &[(String, Instant)]) {
    let response = client.get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await.expect("read back");
    let present: BTreeSet<String> = keys(&response).into_iter().collect();
    let lost: Vec<&String> = acked.iter().map(|(key, _)| key).filter(|key| !present.contains(*key)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
}

/// The member with this id must be the leader (Status on member `i`), within a bound.
async fn wait_leader_is(cluster: &Cluster, i: usize, leader: u64) {
    let client = cluster.client(i).await;
    eventually(Duration::from_secs(10), &format!("{leader:x} to lead"), || {
        let mut client = client.clone();
        async move {
            let status = client.status().await.map_err(|e| e.to_string())?;
            if status.leader() == leader {
                Ok(())
            } else {
                Err(format!("leader is {:x}", status.leader()))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_with_a_loaded_cluster_and_is_promoted() {
    let keys: usize = std::env::var("MEMBERSHIP_KEYS").ok().and_then(|n| n.parse().ok()).unwrap_or(5000);
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut on_leader = cluster.client(leader).await;
    let started = Instant::now();
    load(&on_leader, keys).await;
    eprintln!("MEASURE loaded {keys} keys of 100 bytes in {:?}", started.elapsed());

    let learner = cluster.add_member("n4");
    let peer_url = cluster.members[learner].peer_url();
    let added = on_leader
        .member_add([peer_url.as_str()], Some(MemberAddOptions::new().with_is_learner()))
        .await
        .expect("member add --learner");
    let member = added.member().expect("the added member").clone();
    assert!(member.is_learner());
    assert_eq!(member.peer_urls(), std::slice::from_ref(&peer_url));
    assert_eq!(member.name(), "", "not started yet");
    assert_eq!(added.member_list().len(), 4);
    let learner_id = member.id();
    assert_ne!(learner_id, 0);

    // Not started, so not in sync: promotion is refused.
    assert_status(
        on_leader.member_promote(learner_id).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    );

    // Start it as `etcdctl member add` says, with writes going on.
    let writer = Writer::start("during-join/", cluster.client_for(&[0, 1, 2]).await);
    let all: Vec<usize> = (0..4).collect();
    let initial_cluster = cluster.initial_cluster_of(&all);
    let target = current_revision(&mut on_leader).await;
    let joined_at = Instant::now();
    cluster.start_joining(learner, &initial_cluster);
    let leader_hash = hash_at(&cluster, leader, target, Duration::from_secs(10)).await;
    let learner_hash = hash_at(&cluster, learner, target, Duration::from_secs(45)).await;
    let caught_up = joined_at.elapsed();
    assert_eq!(learner_hash, leader_hash, "the learner's HashKV at revision {target}");
    eprintln!("MEASURE learner caught up with {keys} keys (revision {target}) in {caught_up:?} after its start");
    // A learner serves linearizable reads (through the leader's ReadIndex) and says it is one.
    let mut on_learner = cluster.client(learner).await;
    let read = on_learner.get("load/000000", None).await.expect("a linearizable read through the learner");
    assert_eq!(read.kvs().len(), 1);
    assert!(on_learner.status().await.expect("status of the learner").is_learner());

    // In sync now (the writes go on): promote, retrying while it closes the last gap.
    let promoted = eventually(Duration::from_secs(10), "the learner to be promotable", || {
        let mut client = on_leader.clone();
        async move { client.member_promote(learner_id).await.map_err(|e| e.to_string()) }
    })
    .await;
    assert!(promoted.members().iter().all(|m| !m.is_learner()));
    let (acked, errors) = writer.stop().await;
    assert!(errors.is_empty(), "writes failed during the join: {errors:?}");
    assert!(!acked.is_empty());

    cluster.members[learner].id = learner_id;
    let expected: BTreeSet<(u64, bool, bool)> = cluster.members.iter().map(|m| (m.id, false, true)).collect();
    for i in 0..4 {
        wait_member_list(&cluster, i, &expected).await;
    }
    let mut on_new = cluster.client(learner).await;
    let status = on_new.status().await.expect("status of the new member");
    assert!(!status.is_learner());
    assert_all_present(&mut on_new, "during-join/", &acked).await;
    let final_revision = current_revision(&mut on_leader).await;
    let hash = hash_at(&cluster, leader, final_revision, Duration::from_secs(10)).await;
    for i in 0..4 {
        assert_eq!(hash_at(&cluster, i, final_revision, Duration::from_secs(10)).await, hash);
    }
    // The promoted member takes part in elections: it can be made leader.
    on_leader.move_leader(learner_id).await.expect("move leadership to the promoted member");
    wait_leader_is(&cluster, leader, learner_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_added_directly_counts_toward_the_quorum() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut on_leader = cluster.client(leader).await;
    load(&on_leader, 200).await;

    let voter = cluster.add_member("n4");
    let added = on_leader.member_add([cluster.members[voter].peer_url()], None).await.expect("member add");
    let voter_id = added.member().expect("the added member").id();
    assert!(!added.member().unwrap().is_learner());
    let initial_cluster = cluster.initial_cluster_of(&[0, 1, 2, 3]);
    cluster.start_joining(voter, &initial_cluster);
    cluster.members[voter].id = voter_id;
    let target = current_revision(&mut on_leader).await;
    let hash = hash_at(&cluster, leader, target, Duration::from_secs(10)).await;
    assert_eq!(hash_at(&cluster, voter, target, Duration::from_secs(30)).await, hash);
    let expected: BTreeSet<(u64, bool, bool)> = cluster.members.iter().map(|m| (m.id, false, true)).collect();
    wait_member_list(&cluster, voter, &expected).await;

    // 4 voters need 3: with one original follower down, the new member's vote is needed.
    let follower = cluster.followers(leader).into_iter().find(|&i| i != voter).unwrap();
    cluster.kill(follower);
    let put = on_leader.put("after-kill", "committed by 3 of 4", None).await.expect("put with 3 of 4 voters");
    let on_voter = cluster.client(voter).await;
    eventually(Duration::from_secs(5), "the new voter to apply the write", || {
        let mut client = on_voter.clone();
        async move {
            let response = client
                .get("after-kill", Some(GetOptions::new().with_serializable()))
                .await
                .map_err(|e| e.to_string())?;
            if response.kvs().is_empty() {
                Err("not yet".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
    assert!(revision(put.header()) > target);

    // Restarted, the joined member comes back as itself (its data directory says it
    // joined: no bootstrap membership), and so does the killed one.
    cluster.terminate(voter, Duration::from_secs(10));
    cluster.restart(voter);
    cluster.restart(follower);
    cluster.wait_for_leader().await;
    assert_eq!(cluster.members[voter].id, voter_id, "same member id after a restart");
    let mut on_leader = cluster.client_for(&[0, 1, 2, 3]).await;
    let final_revision = current_revision(&mut on_leader).await;
    let hash = hash_at(&cluster, leader, final_revision, Duration::from_secs(10)).await;
    for i in 0..4 {
        assert_eq!(hash_at(&cluster, i, final_revision, Duration::from_secs(10)).await, hash);
        wait_member_list(&cluster, i, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_follower_stops_and_the_rest_keep_serving() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let (removed, other) = (followers[0], followers[1]);
    let removed_id = cluster.members[removed].id;
    // Asked of a follower: it forwards the change to the leader.
    let mut on_other = cluster.client(other).await;
    let response = on_other.member_remove(removed_id).await.expect("member remove");
    let listed: Vec<u64> = response.members().iter().map(|m| m.id()).collect();
    assert_eq!(listed.len(), 2);
    assert!(!listed.contains(&removed_id));

    let status = cluster.wait_exit(removed, Duration::from_secs(15));
    assert!(!status.success(), "a removed member exits with an error ({status})");
    assert!(
        cluster.log_text(removed).contains("the member has been permanently removed from the cluster"),
        "the removed member logs why it stops"
    );

    let mut on_leader = cluster.client(leader).await;
    on_leader.put("after-remove", "ok", None).await.expect("the rest still commit writes");
    let expected: BTreeSet<(u64, bool, bool)> =
        [leader, other].iter().map(|&i| (cluster.members[i].id, false, true)).collect();
    wait_member_list(&cluster, leader, &expected).await;
    wait_member_list(&cluster, other, &expected).await;
    assert_status(on_other.member_remove(removed_id).await, Code::NotFound, "etcdserver: member not found");
    assert_status(on_leader.member_promote(removed_id).await, Code::NotFound, "etcdserver: member not found");
    // Restarted on its data directory, it refuses to serve again.
    cluster.restart(removed);
    let status = cluster.wait_exit(removed, Duration::from_secs(10));
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let leader_id = cluster.members[leader].id;
    let followers = cluster.followers(leader);
    let writer = Writer::start("w/", cluster.client_for(&followers).await);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut on_follower = cluster.client(followers[0]).await;
    let mut statuses = Vec::new();
    for &i in &followers {
        statuses.push(cluster.client(i).await);
    }
    let asked = Instant::now();
    on_follower.member_remove(leader_id).await.expect("remove the leader");
    let answered = asked.elapsed();
    // Until both followers name the same new leader.
    let new_leader = loop {
        let mut leaders = BTreeSet::new();
        for client in statuses.iter_mut() {
            match client.status().await {
                Ok(status) => leaders.insert(status.leader()),
                Err(_) => leaders.insert(0),
            };
        }
        if leaders.len() == 1 {
            let only = *leaders.iter().next().unwrap();
            if only != 0 && only != leader_id {
                break only;
            }
        }
        assert!(asked.elapsed() < Duration::from_secs(15), "no new leader after removing the leader: {leaders:x?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let leaderless = asked.elapsed();
    assert!(cluster.index_of(new_leader).is_some_and(|i| followers.contains(&i)));
    let status = cluster.wait_exit(leader, Duration::from_secs(15));
    assert!(!status.success());
    assert!(cluster.log_text(leader).contains("the member has been permanently removed from the cluster"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, errors) = writer.stop().await;
    let longest_gap = acked.windows(2).map(|pair| pair[1].1 - pair[0].1).max().unwrap_or_default();
    eprintln!(
        "MEASURE remove of the leader: answered after {answered:?}, new leader agreed on after {leaderless:?}, \
         longest pause between acknowledged writes {longest_gap:?} ({} writes, errors: {errors:?})",
        acked.len()
    );
    assert!(acked.len() > 10);
    assert_all_present(&mut on_follower, "w/", &acked).await;
    let expected: BTreeSet<(u64, bool, bool)> =
        followers.iter().map(|&i| (cluster.members[i].id, false, true)).collect();
    for &i in &followers {
        wait_member_list(&cluster, i, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_moves_a_member_to_new_peer_urls() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let moved = cluster.followers(leader)[0];
    let moved_id = cluster.members[moved].id;
    let mut on_leader = cluster.client(leader).await;
    let new_port = free_ports(1)[0];
    let new_url = format!("http://127.0.0.1:{new_port}");

    assert_status(
        on_leader.member_update(moved_id, [cluster.members[leader].peer_url()]).await,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    assert_status(
        on_leader.member_update(12345, [new_url.clone()]).await,
        Code::NotFound,
        "etcdserver: member not found",
    );
    let response = on_leader.member_update(moved_id, [new_url.clone()]).await.expect("member update");
    let listed = response.members().iter().find(|m| m.id() == moved_id).expect("the moved member is listed");
    assert_eq!(listed.peer_urls(), std::slice::from_ref(&new_url));

    // Restarted with the new URLs, it is reached there (the old port is closed).
    cluster.terminate(moved, Duration::from_secs(10));
    cluster.set_peer_port(moved, new_port);
    cluster.restart(moved);
    on_leader.put("after-move", "reached", None).await.expect("put after the move");
    let on_moved = cluster.client(moved).await;
    eventually(Duration::from_secs(10), "the moved member to apply a new write", || {
        let mut client = on_moved.clone();
        async move {
            let response = client
                .get("after-move", Some(GetOptions::new().with_serializable()))
                .await
                .map_err(|e| e.to_string())?;
            if values(&response) == ["reached"] {
                Ok(())
            } else {
                Err(format!("{:?}", values(&response)))
            }
        }
    })
    .await;
    let expected: BTreeSet<(u64, bool, bool)> = cluster.members.iter().map(|m| (m.id, false, true)).collect();
    for i in 0..3 {
        wait_member_list(&cluster, i, &expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcds_errors_and_move_leader_works() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let mut on_leader = cluster.client(leader).await;
    let mut on_follower = cluster.client(followers[0]).await;

    assert_status(
        on_leader.member_add(["http://not a url"], None).await,
        Code::InvalidArgument,
        "etcdserver: given member URLs are invalid",
    );
    assert_status(
        on_follower.member_add([cluster.members[followers[1]].peer_url()], None).await,
        Code::FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    let first = on_follower
        .member_add(["http://127.0.0.1:1"], Some(MemberAddOptions::new().with_is_learner()))
        .await
        .expect("add a learner through a follower");
    let learner_id = first.member().unwrap().id();
    assert_status(
        on_leader.member_add(["http://127.0.0.1:2"], Some(MemberAddOptions::new().with_is_learner())).await,
        Code::FailedPrecondition,
        "etcdserver: too many learner members in cluster",
    );
    assert_status(
        on_follower.member_promote(learner_id).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    assert_status(
        on_follower.member_promote(cluster.members[leader].id).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
    assert_status(on_leader.member_promote(999).await, Code::NotFound, "etcdserver: member not found");
    assert_status(on_leader.member_remove(999).await, Code::NotFound, "etcdserver: member not found");
    assert_status(
        on_leader.move_leader(learner_id).await,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    on_leader.member_remove(learner_id).await.expect("remove the learner that never started");

    // MoveLeader: only the leader takes it, to a voting member.
    assert_status(
        on_follower.move_leader(cluster.members[followers[1]].id).await,
        Code::FailedPrecondition,
        "etcdserver: not leader",
    );
    assert_status(on_leader.move_leader(12345).await, Code::FailedPrecondition, "etcdserver: bad leader transferee");
    let target = cluster.members[followers[0]].id;
    let moved_at = Instant::now();
    on_leader.move_leader(target).await.expect("move-leader");
    eprintln!("MEASURE move-leader answered after {:?}", moved_at.elapsed());
    for i in 0..3 {
        wait_leader_is(&cluster, i, target).await;
    }

    // With one voter down, removing another live one would leave no live quorum.
    let new_leader = followers[0];
    let down = leader;
    let live_follower = followers[1];
    cluster.kill(down);
    tokio::time::sleep(ELECTION_TIMEOUT * 2).await;
    let mut on_new_leader = cluster.client(new_leader).await;
    assert_status(
        on_new_leader.member_remove(cluster.members[live_follower].id).await,
        Code::Unavailable,
        "etcdserver: unhealthy cluster",
    );
    // Removing the member that is down is fine.
    on_new_leader.member_remove(cluster.members[down].id).await.expect("remove the member that is down");
    on_new_leader.put("two-left", "ok", None).await.expect("two of two commit");
}

/// A put proposed while the leader hands over is refused by the core (it accepts no
/// proposal during a transfer). Its client used to learn nothing until the request timeout
/// (7 s here), then read "request timed out" for a write that was in no log; it now hears
/// "etcdserver: leader changed" (Unavailable: clients retry) at once. A put a follower
/// forwarded into the window is refused back to that follower, whose client hears the
/// same. In each of five rounds, eight writers (four on the leader, four on a follower)
/// keep the cluster busy while the leader hands over, so some puts fall in the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_refused_during_a_leader_transfer_fail_at_once() {
    let mut cluster = Cluster::start(3).await;
    let failures: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
    let mut puts = 0;
    for round in 0..5 {
        let leader = cluster.wait_for_leader().await;
        let (target, other) = (cluster.followers(leader)[0], cluster.followers(leader)[1]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for writer in 0..8 {
            let through = if writer % 2 == 0 { leader } else { other };
            let mut client = cluster.client_for(&[through]).await;
            let (stop, failures) = (stop.clone(), failures.clone());
            writers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    if let Err(error) = client.put(format!("r{round}/w{writer}/{n}"), "x", None).await {
                        failures.lock().unwrap().push((started.elapsed(), error.to_string()));
                    }
                    n += 1;
                }
                n
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut on_leader = cluster.client_for(&[leader]).await;
        on_leader.move_leader(cluster.members[target].id).await.expect("move leadership");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            puts += writer.await.expect("writer");
        }
    }
    let failures = failures.lock().unwrap();
    eprintln!("{puts} puts, {} failed: {:?}", failures.len(), failures.iter().take(5).collect::<Vec<_>>());
    for (took, error) in failures.iter() {
        assert!(*took < Duration::from_secs(3), "a put failed only after {took:?}: {error}");
        assert!(error.contains("leader changed"), "{error}");
    }
}
