//! The etcd Lease API of real `concord` processes, through the `etcd-client` crate.
//!
//! - The API: grant (chosen and assigned ids, the minimum TTL, etcd's errors), put with a
//!   lease, TimeToLive with keys, LeaseLeases, revoke deleting every attached key in one
//!   revision; through a follower as through the leader.
//! - Expiry: keys vanish within TTL + one election timeout after keep-alives stop, and not
//!   before TTL after the last keep-alive; keep-alives through a follower work.
//! - Leader changes: a kept-alive lease survives SIGKILL of the leader and two further
//!   leader changes; an idle lease continues from its checkpoint after a leader change
//!   (etcd would give it its whole TTL again); a leader paused past the TTL and resumed
//!   revokes nothing.
//! - Restarts: leases survive a restart of every member, and still expire afterwards.
//!
//! The test clusters run with a 500 ms election timeout, so the minimum TTL is 1 s.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};

/// A keep-alive loop in the background: renews `id` every `every` through `client`
/// (opening a new stream after an error) and records when the last renewal was answered.
struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    last_ack: Arc<Mutex<Option<Instant>>>,
}

impl KeepAlive {
    fn start(client: Client, id: i64, every: Duration) -> KeepAlive {
        let last_ack = Arc::new(Mutex::new(None));
        let recorded = last_ack.clone();
        let task = tokio::spawn(async move {
            let mut client = client;
            loop {
                if let Ok((mut keeper, mut stream)) = client.lease_keep_alive(id).await {
                    loop {
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                                *recorded.lock().unwrap() = Some(Instant::now());
                            }
                            Ok(Ok(Some(_))) => return, // the lease is gone
                            _ => break,
                        }
                        tokio::time::sleep(every).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        KeepAlive { task, last_ack }
    }

    /// Stops renewing; returns when the last renewal was answered.
    async fn stop(self) -> Instant {
        self.task.abort();
        let _ = self.task.await;
        let last = *self.last_ack.lock().unwrap();
        last.expect("at least one keep-alive was answered")
    }

    fn answered_since(&self, since: Instant) -> bool {
        self.last_ack.lock().unwrap().is_some_and(|at| at > since)
    }
}

async fn exists(client: &mut Client, key: &str) -> bool {
    !client.get(key, None).await.expect("get").kvs().is_empty()
}

/// Waits until `key` is gone; returns when it was first seen gone.
async fn wait_until_gone(client: &mut Client, key: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if !exists(client, key).await {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{key} still exists after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn grant(client: &mut Client, ttl: i64) -> i64 {
    client.lease_grant(ttl, None).await.expect("grant").id()
}

async fn put_leased(client: &mut Client, key: &str, lease: i64) {
    client.put(key, "v", Some(PutOptions::new().with_lease(lease))).await.expect("put with a lease");
}

async fn api_scenario(client: &mut Client) {
    // Chosen and assigned ids; the minimum TTL (ceil(1.5 × 500 ms) = 1 s).
    let chosen = client.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234))).await.unwrap();
    assert_eq!((chosen.id(), chosen.ttl()), (0x1234, 30));
    let assigned = client.lease_grant(0, None).await.unwrap();
    assert!(assigned.id() > 0, "an assigned id is positive: {}", assigned.id());
    assert_eq!(assigned.ttl(), 1, "raised to the minimum TTL");
    assert_eq!(client.lease_grant(-5, None).await.unwrap().ttl(), 1);
    let other = client.lease_grant(30, None).await.unwrap();
    assert_ne!(other.id(), assigned.id());

    // etcd's errors.
    assert_status(
        client.lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234))).await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    assert_status(client.lease_grant(9_000_000_001, None).await, Code::OutOfRange, "etcdserver: too large lease TTL");
    assert_status(client.lease_revoke(0x999).await, Code::NotFound, "etcdserver: requested lease not found");
    assert_status(
        client.put("k", "v", Some(PutOptions::new().with_lease(0x999))).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );

    // Keys attach; TimeToLive tells them; an unknown lease has TTL -1 and no error.
    put_leased(client, "lease/b", 0x1234).await;
    put_leased(client, "lease/a", 0x1234).await;
    client.put("lease/c", "plain", None).await.unwrap();
    let ttl = client.lease_time_to_live(0x1234, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 30);
    assert!((28..=30).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"lease/a".to_vec(), b"lease/b".to_vec()]);
    let without_keys = client.lease_time_to_live(0x1234, None).await.unwrap();
    assert!(without_keys.keys().is_empty());
    let unknown = client.lease_time_to_live(0x999, None).await.unwrap();
    assert_eq!((unknown.id(), unknown.ttl(), unknown.granted_ttl()), (0x999, -1, 0));

    // ignore_lease keeps the lease.
    client.put("lease/a", "w", Some(PutOptions::new().with_ignore_lease())).await.unwrap();
    assert_eq!(client.get("lease/a", None).await.unwrap().kvs()[0].lease(), 0x1234);

    let mut listed: Vec<i64> = client.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    listed.sort();
    let mut expected = vec![0x1234, assigned.id(), other.id()];
    expected.sort();
    // The 1 s leases may have expired already; the others are listed.
    assert!(listed.contains(&0x1234) && listed.contains(&other.id()), "{listed:x?} vs {expected:x?}");

    // A keep-alive answers the granted TTL; an unknown lease answers TTL 0, which
    // etcd-client turns into its "lease not found" error.
    let (mut keeper, mut stream) = client.lease_keep_alive(0x1234).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let renewed = stream.message().await.unwrap().unwrap();
    assert_eq!((renewed.id(), renewed.ttl()), (0x1234, 30));
    match client.lease_keep_alive(0x999).await {
        Err(etcd_client::Error::LeaseKeepAliveError(message)) => assert_eq!(message, "lease not found"),
        other => panic!("a keep-alive of an unknown lease: {:?}", other.map(|_| ())),
    }

    // Revoke deletes every attached key in one revision.
    let before = current_revision(client).await;
    let revoked = client.lease_revoke(0x1234).await.unwrap();
    assert_eq!(revision(revoked.header()), before + 1);
    assert_eq!(
        keys(&client.get("lease/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap()),
        ["lease/c"]
    );
    assert_eq!(client.lease_time_to_live(0x1234, None).await.unwrap().ttl(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_api_on_one_member() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    api_scenario(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_api_through_a_follower() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(cluster.followers(leader)[0]).await;
    api_scenario(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_vanish_within_ttl_and_an_election_timeout_after_keep_alives_stop() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut client = cluster.client(follower).await;
    let ttl = 2;
    let id = grant(&mut client, ttl).await;
    put_leased(&mut client, "expiring", id).await;
    // Kept alive through the follower well past its TTL.
    let keep_alive = KeepAlive::start(cluster.client(follower).await, id, Duration::from_millis(500));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(exists(&mut client, "expiring").await, "kept alive past its TTL");
    let last_ack = keep_alive.stop().await;
    let ttl = Duration::from_secs(ttl as u64);
    let gone = wait_until_gone(&mut client, "expiring", Duration::from_secs(10)).await;
    let lived = gone - last_ack;
    // The leader renewed before the answer reached the client: it may expire the lease a
    // little less than TTL after the client saw the answer, never much less.
    assert!(lived >= ttl - Duration::from_millis(200), "expired {lived:?} after the last keep-alive");
    assert!(lived <= ttl + ELECTION_TIMEOUT + Duration::from_millis(500), "lived {lived:?} after the last keep-alive");
    assert_eq!(client.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_lease_survives_killing_the_leader_and_two_more_leader_changes() {
    let mut cluster = Cluster::start(3).await;
    let first_leader = cluster.wait_for_leader().await;
    // The client and its keep-alives go through one member that is never killed.
    let keeper_member = cluster.followers(first_leader)[0];
    let mut client = cluster.client(keeper_member).await;
    let id = grant(&mut client, 3).await;
    put_leased(&mut client, "kept", id).await;
    let keep_alive = KeepAlive::start(cluster.client(keeper_member).await, id, Duration::from_millis(1000));

    cluster.kill(first_leader);
    let second_leader = cluster.wait_for_leader().await;
    cluster.restart(first_leader);
    cluster.wait_for_leader().await;
    for change in 0..2 {
        let leader = cluster.wait_for_leader().await;
        let target = cluster.followers(leader)[change % 2];
        let mut on_leader = cluster.client(leader).await;
        on_leader.move_leader(cluster.members[target].id).await.expect("move leadership");
        let now_leading = cluster.wait_for_leader().await;
        assert_ne!(now_leading, leader);
        // Long enough for an early expiry to show: more than the TTL.
        let since = Instant::now();
        for _ in 0..20 {
            assert!(exists(&mut client, "kept").await, "the kept-alive lease expired after a leader change");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(keep_alive.answered_since(since), "keep-alives are answered after the leader change");
    }
    assert_ne!(second_leader, first_leader);
    let left = client.lease_time_to_live(id, None).await.unwrap();
    assert!(left.ttl() > 0, "still alive: {left:?}");
    keep_alive.stop().await;
    wait_until_gone(&mut client, "kept", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_lease_continues_from_its_checkpoint_after_a_leader_change() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(cluster.followers(leader)[0]).await;
    // TTL 8: checkpointed once it fell 4 s (half the TTL).
    let granted_at = Instant::now();
    let id = grant(&mut client, 8).await;
    put_leased(&mut client, "idle", id).await;
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let mut on_leader = cluster.client(leader).await;
    let target = cluster.members[cluster.followers(leader)[1]].id;
    on_leader.move_leader(target).await.expect("move leadership");
    assert_ne!(cluster.wait_for_leader().await, leader);
    let gone = wait_until_gone(&mut client, "idle", Duration::from_secs(15)).await;
    let lived = gone - granted_at;
    // etcd gives the lease its whole TTL again: it would live 5 + 8 = 13 s. Here the new
    // leader continues from the checkpoint (taken at 4 s with 4 s left).
    assert!(lived >= Duration::from_secs(8) - Duration::from_millis(200), "expired early: {lived:?}");
    assert!(lived < Duration::from_secs(11), "lived {lived:?}: the new leader did not continue from the checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_the_ttl_revokes_nothing_when_it_resumes() {
    let mut cluster = Cluster::start(3).await;
    let paused = cluster.wait_for_leader().await;
    let keeper_member = cluster.followers(paused)[0];
    let mut client = cluster.client(keeper_member).await;
    let id = grant(&mut client, 2).await;
    put_leased(&mut client, "guarded", id).await;
    let revision_before = current_revision(&mut client).await;
    let keep_alive = KeepAlive::start(cluster.client(keeper_member).await, id, Duration::from_millis(300));

    cluster.pause(paused);
    // Past the TTL: the paused leader's clock says the lease expired long ago.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.resume(paused);
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(keep_alive.answered_since(since), "keep-alives went on");
    assert!(exists(&mut client, "guarded").await, "the resumed leader revoked a kept-alive lease");
    assert_eq!(current_revision(&mut client).await, revision_before, "nothing was revoked or written");
    let mut on_paused = cluster.client(paused).await;
    assert!(
        !on_paused.get("guarded", None).await.unwrap().kvs().is_empty(),
        "the resumed member sees the lease's key too"
    );
    keep_alive.stop().await;
    wait_until_gone(&mut client, "guarded", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_restart_of_every_member_and_still_expire() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    let long = grant(&mut client, 600).await;
    let short = grant(&mut client, 3).await;
    put_leased(&mut client, "long", long).await;
    put_leased(&mut client, "short", short).await;
    for member in 0..3 {
        cluster.terminate(member, Duration::from_secs(10));
    }
    for member in 0..3 {
        cluster.restart(member);
    }
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    let ttl = client.lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!((ttl.granted_ttl(), ttl.keys()), (600, [b"long".to_vec()].as_slice()));
    for member in 0..3 {
        let mut on_member = cluster.client(member).await;
        let mut listed: Vec<i64> = on_member.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
        listed.sort();
        let mut expected = vec![long, short];
        expected.sort();
        assert_eq!(listed, expected, "member {member} lists the leases");
    }
    wait_until_gone(&mut client, "short", Duration::from_secs(10)).await;
    assert!(exists(&mut client, "long").await);
    let revision = current_revision(&mut client).await;
    assert_hash_kv_agrees(&cluster, revision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_travel_with_snapshots_to_a_member_behind_the_compacted_log() {
    let mut cluster = Cluster::builder(3).snapshot_every(100, 50).start().await;
    let leader = cluster.wait_for_leader().await;
    let lagging = cluster.followers(leader)[0];
    cluster.kill(lagging);
    let mut client = cluster.client(leader).await;
    let long = grant(&mut client, 600).await;
    put_leased(&mut client, "snap/a", long).await;
    put_leased(&mut client, "snap/b", long).await;
    // Far more than snapshot-count + catch-up entries: the leader's log no longer holds
    // the entries the lagging member misses.
    for n in 0..300 {
        client.put(format!("filler/{n:03}"), "x", None).await.expect("put");
    }
    cluster.restart(lagging);
    let revision = current_revision(&mut client).await;
    assert_hash_kv_agrees(&cluster, revision).await;
    let log = std::fs::read_to_string(&cluster.members[lagging].log_path).unwrap();
    assert!(log.contains("installed a snapshot from the leader"), "the member caught up without a snapshot");
    let mut on_lagging = cluster.client(lagging).await;
    let listed: Vec<i64> = on_lagging.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    assert_eq!(listed, vec![long], "the restored member's own state machine holds the lease");
    // Revoking it through the restored member deletes the keys the snapshot attached.
    on_lagging.lease_revoke(long).await.expect("revoke");
    assert!(
        keys(&on_lagging.get("snap/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap()).is_empty()
    );
    let revision = current_revision(&mut client).await;
    assert_hash_kv_agrees(&cluster, revision).await;
}
