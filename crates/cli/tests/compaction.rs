//! Snapshots and log compaction in a running cluster of real `concord` processes.
//!
//! Every member runs with `--snapshot-count 100 --experimental-snapshot-catchup-entries 50
//! --wal-segment-bytes 16384`, so a few hundred writes make each member write snapshots,
//! compact its log to 50 entries behind the newest one and remove whole WAL segments.
//!
//! - Compaction happens: after 300 writes every member has recorded a snapshot and removed
//!   its first WAL segment, without writing a state file (the state machine's durable
//!   commit is the snapshot; a state file is written only to be sent).
//! - A follower that was down while more than snapshot-count + catch-up entries were
//!   written is behind the leader's compacted log: on restart it receives the leader's
//!   snapshot, which the leader writes to a state file for it (its log says so; the
//!   follower's says it installed one and restored its state machine from it),
//!   reaches the leader's index, serves every key with serializable reads, agrees on
//!   HashKV at one revision, and goes on replicating from the log.
//! - A member restarted (SIGTERM) comes back from its snapshot plus the log after it:
//!   it starts from a snapshot with a compacted log and serves every key and the same
//!   revision.
//! - SIGKILL of members (the leader first) while writes make them snapshot and compact,
//!   then of all three at once: after restarts every acknowledged write is there, on every
//!   member, and HashKV agrees.
//! - The member directory travels with snapshots: with one member down, a fourth member
//!   is added (learner, `--initial-cluster-state existing`) after the log was compacted, so
//!   it catches up through a snapshot and holds every key (HashKV equal); more writes
//!   compact the log past its addition and publication, so the member that was down also
//!   catches up through a snapshot covering them. Both list all four members with names,
//!   peer and client URLs; after the new member is promoted and another removed, every
//!   member lists the same three.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, GetOptions, MemberAddOptions};

const SNAPSHOT_COUNT: u64 = 100;
const CATCHUP_ENTRIES: u64 = 50;
const SEGMENT_BYTES: u64 = 16 * 1024;
/// Writes in flight at once when loading keys.
const WRITE_CONCURRENCY: usize = 8;

fn compacting_cluster(size: usize) -> ClusterBuilder {
    Cluster::builder(size)
        .snapshot_every(SNAPSHOT_COUNT, CATCHUP_ENTRIES)
        .arg("--wal-segment-bytes")
        .arg(SEGMENT_BYTES.to_string())
}

/// Puts `count` keys `{prefix}{n:05}` = `value-{n}`, a few at a time; returns key -> value.
async fn write_keys(client: &Client, prefix: &str, count: usize) -> BTreeMap<String, String> {
    let mut tasks = Vec::new();
    for worker in 0..WRITE_CONCURRENCY {
        let mut client = client.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for n in (worker..count).step_by(WRITE_CONCURRENCY) {
                let (key, value) = (format!("{prefix}{n:05}"), format!("value-{n}"));
                client.put(key.clone(), value.clone(), None).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
                written.push((key, value));
            }
            written
        }));
    }
    let mut all = BTreeMap::new();
    for task in tasks {
        all.extend(within(Duration::from_secs(40), "writing keys", task).await.expect("a writer panicked"));
    }
    all
}

/// Every key under `prefix` as member `member` holds it, read locally (serializable).
async fn local_keys(cluster: &Cluster, member: usize, prefix: &str) -> BTreeMap<String, String> {
    let mut client = cluster.client(member).await;
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix().with_serializable()))
        .await
        .expect("a serializable read");
    response
        .kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), String::from_utf8_lossy(kv.value()).into_owned()))
        .collect()
}

/// `(raft index, applied index)` member `member` reports in Status.
async fn indexes(client: &mut Client) -> Result<(u64, u64), String> {
    let status = client.status().await.map_err(|e| e.to_string())?;
    Ok((status.raft_index(), status.raft_applied_index()))
}

/// Waits until member `member` has applied at least `index`.
async fn wait_applied(cluster: &Cluster, member: usize, index: u64, limit: Duration) {
    let client = cluster.client(member).await;
    let name = cluster.members[member].name.clone();
    eventually(limit, &format!("{name} to apply index {index}"), || {
        let mut client = client.clone();
        async move {
            let (_, applied) = indexes(&mut client).await?;
            if applied >= index {
                Ok(())
            } else {
                Err(format!("applied {applied}"))
            }
        }
    })
    .await;
}

fn file_names(dir: std::path::PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The state files (`raft/snapdata`) and WAL segments (`raft/wal`) of a member.
fn snapshot_and_segment_files(cluster: &Cluster, member: usize) -> (Vec<String>, Vec<String>) {
    let raft = cluster.members[member].data_dir.join("raft");
    (file_names(raft.join("snapdata")), file_names(raft.join("wal")))
}

/// What member `member` logged since the harness last started it.
fn log_since_last_start(cluster: &Cluster, member: usize) -> String {
    let text = std::fs::read_to_string(&cluster.members[member].log_path).expect("read the member's log");
    let start = text.rfind("=== harness: starting").unwrap_or(0);
    text[start..].to_string()
}

/// The value of `field=` in the last line of `log` that contains `message`.
fn logged_field(log: &str, message: &str, field: &str) -> Option<u64> {
    let line = log.lines().rev().find(|line| line.contains(message))?;
    let value = line.split_whitespace().find_map(|word| word.strip_prefix(&format!("{field}=")))?;
    value.parse().ok()
}

/// Waits until every member has recorded a snapshot and removed its first WAL segment;
/// none has written a state file (no follower needed one).
async fn wait_for_compaction_everywhere(cluster: &Cluster) {
    for member in cluster.running() {
        let name = cluster.members[member].name.as_str();
        eventually(Duration::from_secs(10), &format!("{name} to snapshot and compact"), || async move {
            let (state_files, segments) = snapshot_and_segment_files(cluster, member);
            let first_segment_gone = !segments.contains(&format!("{:016x}.wal", 0));
            let saved = log_since_last_start(cluster, member).contains("saved a snapshot of the state machine");
            if saved && first_segment_gone {
                assert!(state_files.is_empty(), "{name} wrote a state file no one asked for: {state_files:?}");
                Ok(())
            } else {
                Err(format!("saved a snapshot: {saved}, segments {segments:?}"))
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_compacted_log_catches_up_through_a_snapshot() {
    let mut cluster = compacting_cluster(3).start().await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader).await;
    let mut expected = write_keys(&client, "k/", 500).await;
    wait_for_compaction_everywhere(&cluster).await;

    let lagging = cluster.followers(leader)[0];
    cluster.kill(lagging);
    // More than snapshot-count + catch-up entries: the leader's log no longer holds the
    // entry the lagging member needs next.
    expected.extend(write_keys(&client, "k/", 700).await);
    let (leader_index, _) = indexes(&mut client.clone()).await.expect("the leader's status");
    let restarted_at = Instant::now();
    cluster.restart(lagging);
    wait_applied(&cluster, lagging, leader_index, Duration::from_secs(30)).await;
    let caught_up = restarted_at.elapsed();

    let leader_log = log_since_last_start(&cluster, leader);
    assert!(
        leader_log.contains("a follower needs a snapshot: writing the state machine to a state file"),
        "the leader wrote a state file to send; its log:\n{leader_log}"
    );
    let log = log_since_last_start(&cluster, lagging);
    let installed = logged_field(&log, "installed a snapshot from the leader", "index")
        .unwrap_or_else(|| panic!("the restarted member installed no snapshot; its log:\n{log}"));
    let restored = logged_field(&log, "restored the state machine from the leader's snapshot", "index")
        .unwrap_or_else(|| panic!("the restarted member restored no snapshot; its log:\n{log}"));
    let bytes = logged_field(&log, "restored the state machine from the leader's snapshot", "bytes").unwrap_or(0);
    assert_eq!(installed, restored, "the state machine was restored from the snapshot installed");
    eprintln!(
        "observed: {} caught up to index {leader_index} in {caught_up:?} (start included) through a snapshot at \
         index {installed} of {} keys, {bytes} bytes",
        cluster.members[lagging].name,
        expected.len()
    );

    assert_eq!(local_keys(&cluster, lagging, "k/").await, expected, "every key, read from the restarted member");
    let mut reader = cluster.client(leader).await;
    assert_hash_kv_agrees(&cluster, current_revision(&mut reader).await).await;

    // It goes on from the log after the snapshot.
    let more = write_keys(&client, "after/", 40).await;
    let (leader_index, _) = indexes(&mut client.clone()).await.expect("the leader's status");
    wait_applied(&cluster, lagging, leader_index, Duration::from_secs(10)).await;
    assert_eq!(local_keys(&cluster, lagging, "after/").await, more);
    assert_hash_kv_agrees(&cluster, current_revision(&mut reader).await).await;
}

/// Writes `{prefix}{n}` keys one after another until `stop` is set; returns them.
fn keep_writing(
    client: &Client,
    prefix: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<String, String>> {
    let mut client = client.clone();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut written = BTreeMap::new();
        // Bounded: the test stops it within seconds; this only keeps a broken test finite.
        for n in 0..200_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (key, value) = (format!("{prefix}{n:06}"), format!("value-{n}"));
            client.put(key.clone(), value.clone(), None).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
            written.insert(key, value);
        }
        written
    })
}

/// A leader under writes takes a periodic snapshot every few hundred milliseconds here,
/// while it writes a state file for the follower and sends it: the follower catches up,
/// and the leader writes no more than a file or two for it. (Whether a periodic snapshot
/// may replace the file before its first chunk is read depends on timing this test does
/// not control; the storage's unit tests pin that a file written to be sent counts as in
/// transfer from its adoption.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_catches_up_through_a_snapshot_while_writes_go_on() {
    let mut cluster = compacting_cluster(3).start().await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader).await;
    let mut expected = write_keys(&client, "k/", 300).await;
    let lagging = cluster.followers(leader)[0];
    cluster.kill(lagging);
    expected.extend(write_keys(&client, "k/", 700).await);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|w| keep_writing(&client, &format!("during/{w}/"), stop.clone())).collect();
    cluster.restart(lagging);
    let lagging_name = cluster.members[lagging].name.clone();
    eventually(Duration::from_secs(30), &format!("{lagging_name} to install a snapshot"), || async {
        let log = log_since_last_start(&cluster, lagging);
        match logged_field(&log, "restored the state machine from the leader's snapshot", "index") {
            Some(_) => Ok(()),
            None => Err("no snapshot restored yet".to_string()),
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let written = within(Duration::from_secs(20), "the writers to stop", writer).await.expect("a writer panicked");
        assert!(!written.is_empty(), "writes went on during the catch-up");
        expected.extend(written);
    }
    installed_snapshot(&cluster, lagging);
    let leader_log = log_since_last_start(&cluster, leader);
    let files_written = leader_log.matches("a follower needs a snapshot: writing the state machine").count();
    assert!(files_written <= 2, "the leader wrote {files_written} state files for one follower:\n{leader_log}");

    let (leader_index, _) = indexes(&mut client.clone()).await.expect("the leader's status");
    wait_applied(&cluster, lagging, leader_index, Duration::from_secs(20)).await;
    let mut stored = local_keys(&cluster, lagging, "k/").await;
    stored.extend(local_keys(&cluster, lagging, "during/").await);
    assert_eq!(stored, expected, "every key, read from the member that caught up");
    let mut reader = cluster.client(leader).await;
    assert_hash_kv_agrees(&cluster, current_revision(&mut reader).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_comes_back_from_its_snapshot_and_log() {
    // One member: nothing but its own data directory can give it its keys back.
    let mut cluster = compacting_cluster(1).start().await;
    let client = cluster.client(0).await;
    let expected = write_keys(&client, "k/", 500).await;
    wait_for_compaction_everywhere(&cluster).await;
    let revision_before = current_revision(&mut client.clone()).await;
    let (index_before, _) = indexes(&mut client.clone()).await.expect("status");

    let status = cluster.terminate(0, Duration::from_secs(10));
    assert!(status.success(), "SIGTERM exit status {status}");
    cluster.restart(0);
    cluster.wait_for_leader().await;

    let log = log_since_last_start(&cluster, 0);
    let snapshot_index = logged_field(&log, "starting member", "snapshot_index").expect("the start line");
    let first_index = logged_field(&log, "starting member", "first_index").expect("the start line");
    assert!(snapshot_index > SNAPSHOT_COUNT, "started from a snapshot (snapshot_index={snapshot_index})");
    assert!(first_index > 1 && first_index <= snapshot_index + 1, "the log was compacted (first_index={first_index})");
    eprintln!(
        "observed: restarted with a snapshot at {snapshot_index}, log from {first_index} to at least {index_before}"
    );

    assert_eq!(local_keys(&cluster, 0, "k/").await, expected, "every key after the restart");
    let mut client = cluster.client(0).await;
    let linearizable = client.get("k/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(linearizable.count() as usize, expected.len());
    assert_eq!(revision(linearizable.header()), revision_before, "the same revision after the restart");
}

/// A member as MemberList shows it: id, name, peer URLs, client URLs, learner.
type Listed = (u64, String, Vec<String>, Vec<String>, bool);

/// What every member should list for the members `members` of the harness (all started),
/// with `learner` (if any) a learner.
fn expected_list(cluster: &Cluster, members: &[usize], learner: Option<usize>) -> BTreeSet<Listed> {
    members
        .iter()
        .map(|&i| {
            let m = &cluster.members[i];
            (m.id, m.name.clone(), vec![m.peer_url()], vec![m.client_url()], Some(i) == learner)
        })
        .collect()
}

/// Waits until member `member` lists exactly `expected`.
async fn wait_member_list(cluster: &Cluster, member: usize, expected: &BTreeSet<Listed>) {
    let client = cluster.client(member).await;
    let what = format!("{} to list {expected:?}", cluster.members[member].name);
    eventually(Duration::from_secs(20), &what, || {
        let mut client = client.clone();
        async move {
            let list = client.member_list().await.map_err(|e| e.to_string())?;
            let got: BTreeSet<Listed> = list
                .members()
                .iter()
                .map(|m| {
                    (m.id(), m.name().to_string(), m.peer_urls().to_vec(), m.client_urls().to_vec(), m.is_learner())
                })
                .collect();
            if &got == expected {
                Ok(())
            } else {
                Err(format!("lists {got:?}"))
            }
        }
    })
    .await;
}

/// The index of the snapshot member `member` installed from the leader since its last
/// start, having restored its state machine from it.
fn installed_snapshot(cluster: &Cluster, member: usize) -> u64 {
    let log = log_since_last_start(cluster, member);
    let installed = logged_field(&log, "installed a snapshot from the leader", "index")
        .unwrap_or_else(|| panic!("{} installed no snapshot; its log:\n{log}", cluster.members[member].name));
    let restored = logged_field(&log, "restored the state machine from the leader's snapshot", "index")
        .unwrap_or_else(|| panic!("{} restored no snapshot; its log:\n{log}", cluster.members[member].name));
    assert_eq!(installed, restored, "the state machine was restored from the snapshot installed");
    installed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_directory_travels_with_snapshots() {
    let mut cluster = compacting_cluster(3).start().await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader).await;
    let mut expected = write_keys(&client, "k/", 500).await;
    wait_for_compaction_everywhere(&cluster).await;

    // One member goes down for a while: every membership change below happens without it.
    let down = cluster.followers(leader)[0];
    cluster.kill(down);

    // A fourth member, added after the log was compacted: it can only catch up through a
    // snapshot.
    let new = cluster.add_member("n4");
    let mut on_leader = cluster.client(leader).await;
    let added = on_leader
        .member_add([cluster.members[new].peer_url()], Some(MemberAddOptions::new().with_is_learner()))
        .await
        .expect("member add --learner");
    cluster.members[new].id = added.member().expect("the added member").id();
    let all: Vec<usize> = (0..4).collect();
    let initial_cluster = cluster.initial_cluster_of(&all);
    let started = Instant::now();
    cluster.start_joining(new, &initial_cluster);
    let (leader_index, _) = indexes(&mut on_leader).await.expect("the leader's status");
    wait_applied(&cluster, new, leader_index, Duration::from_secs(30)).await;
    let new_snapshot = installed_snapshot(&cluster, new);
    eprintln!(
        "observed: n4 caught up to index {leader_index} in {:?} through a snapshot at index {new_snapshot}",
        started.elapsed()
    );
    // The new member has published its name and client URLs (through the log).
    let up: Vec<usize> = (0..4).filter(|&i| i != down).collect();
    let four = expected_list(&cluster, &all, Some(new));
    wait_member_list(&cluster, leader, &four).await;
    let (published_by, _) = indexes(&mut on_leader).await.expect("the leader's status");

    // More writes: the leader's snapshot covers the addition and the publication, and its
    // log no longer holds them.
    expected.extend(write_keys(&client, "k/", 400).await);
    // The leader holds its newer snapshots back while it has been sending one (to n4) in
    // the last 5 s; then it compacts.
    let leader_name = cluster.members[leader].name.clone();
    eventually(Duration::from_secs(20), &format!("{leader_name} to compact its log past {published_by}"), || {
        let log = log_since_last_start(&cluster, leader);
        async move {
            match logged_field(&log, "saved a snapshot of the state machine", "log_starts_at") {
                Some(first) if first > published_by => Ok(()),
                other => Err(format!("its log starts at {other:?}")),
            }
        }
    })
    .await;
    let started = Instant::now();
    cluster.restart(down);
    let (leader_index, _) = indexes(&mut on_leader).await.expect("the leader's status");
    wait_applied(&cluster, down, leader_index, Duration::from_secs(30)).await;
    let down_snapshot = installed_snapshot(&cluster, down);
    assert!(
        down_snapshot >= published_by,
        "the snapshot {} installed (index {down_snapshot}) covers n4's addition and publication (by {published_by})",
        cluster.members[down].name
    );
    eprintln!(
        "observed: {} caught up to index {leader_index} in {:?} through a snapshot at index {down_snapshot}",
        cluster.members[down].name,
        started.elapsed()
    );

    // Every key everywhere, and every member lists all four with names and URLs.
    let mut reader = cluster.client(leader).await;
    assert_hash_kv_agrees(&cluster, current_revision(&mut reader).await).await;
    for &member in &[new, down] {
        assert_eq!(local_keys(&cluster, member, "k/").await, expected, "every key on {}", cluster.members[member].name);
    }
    for member in 0..4 {
        wait_member_list(&cluster, member, &four).await;
    }

    // Promote the new member, then remove an original one other than the member that was
    // down: the directories installed from snapshots go on with the log.
    let new_id = cluster.members[new].id;
    eventually(Duration::from_secs(20), "n4 to be promotable", || {
        let mut client = on_leader.clone();
        async move { client.member_promote(new_id).await.map_err(|e| e.to_string()) }
    })
    .await;
    let voters = expected_list(&cluster, &all, None);
    for member in 0..4 {
        wait_member_list(&cluster, member, &voters).await;
    }
    let removed = up.iter().copied().find(|&i| i != leader && i != new).expect("a follower to remove");
    let removed_id = cluster.members[removed].id;
    on_leader.member_remove(removed_id).await.expect("member remove");
    let status = cluster.wait_exit(removed, Duration::from_secs(15));
    assert!(!status.success(), "a removed member exits with an error ({status})");
    let rest: Vec<usize> = (0..4).filter(|&i| i != removed).collect();
    let three = expected_list(&cluster, &rest, None);
    for &member in &rest {
        wait_member_list(&cluster, member, &three).await;
    }
    // The three still commit, including the member that caught up through a snapshot.
    let leader = cluster.wait_for_leader().await;
    let mut on_leader = cluster.client(leader).await;
    on_leader.put("after/remove", "ok", None).await.expect("a write after the removal");
    assert_hash_kv_agrees(&cluster, current_revision(&mut on_leader).await).await;
}

/// A write a client saw acknowledged: key, value.
type Acked = (String, String);

/// Writers putting distinct keys until stopped, through a client that balances over every
/// member; what was acknowledged.
struct Writers {
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(client: Client, count: usize) -> Writers {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|writer| {
                let (acked, stop, mut client) = (acked.clone(), stop.clone(), client.clone());
                tokio::spawn(async move {
                    for seq in 0..20_000u32 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let (key, value) = (format!("w/{writer}/{seq:05}"), seq.to_string());
                        let put = client.put(key.clone(), value.clone(), None);
                        match tokio::time::timeout(Duration::from_secs(5), put).await {
                            Ok(Ok(_)) => acked.lock().unwrap().push((key, value)),
                            // Unknown outcome: the key may or may not be there; never checked.
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
            })
            .collect();
        Writers { acked, stop, tasks }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.acked_count() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.acked_count() < target {
            assert!(Instant::now() < deadline, "{what}: only {} of {target} writes acknowledged", self.acked_count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            within(Duration::from_secs(20), "writers to stop", task).await.expect("a writer panicked");
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_killed_while_compacting_lose_nothing_acknowledged() {
    let mut cluster = compacting_cluster(3).start().await;
    let all: Vec<usize> = (0..cluster.len()).collect();
    let writers = Writers::start(cluster.client_for(&all).await, 6);
    writers.wait_for_more(150, "before the first crash").await;

    // Each member in turn, the leader first, killed while snapshots are being written and
    // logs compacted (one every 100 entries), and restarted while writes go on.
    let mut victim = cluster.wait_for_leader().await;
    for round in 0..3 {
        cluster.kill(victim);
        writers.wait_for_more(120, &format!("with a member down (round {round})")).await;
        cluster.restart(victim);
        cluster.wait_for_leader().await;
        writers.wait_for_more(120, &format!("after the restart (round {round})")).await;
        victim = (victim + 1) % cluster.len();
    }
    // All at once.
    for member in 0..cluster.len() {
        cluster.kill(member);
    }
    for member in 0..cluster.len() {
        cluster.restart(member);
    }
    let leader = cluster.wait_for_leader().await;
    writers.wait_for_more(100, "after every member was killed").await;
    let acked = writers.stop().await;

    let mut reader = cluster.client(leader).await;
    let final_revision = current_revision(&mut reader).await;
    let (leader_index, _) = indexes(&mut reader).await.expect("the leader's status");
    eprintln!("observed: {} writes acknowledged across 3 single crashes and one of all members", acked.len());
    for member in 0..cluster.len() {
        wait_applied(&cluster, member, leader_index, Duration::from_secs(20)).await;
        let stored = local_keys(&cluster, member, "w/").await;
        let lost: Vec<&Acked> = acked.iter().filter(|(key, value)| stored.get(key) != Some(value)).collect();
        assert!(
            lost.is_empty(),
            "{}: {} acknowledged writes lost or changed, e.g. {:?}",
            cluster.members[member].name,
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    assert_hash_kv_agrees(&cluster, final_revision).await;
    for member in 0..cluster.len() {
        let (state_files, _) = snapshot_and_segment_files(&cluster, member);
        assert!(
            state_files.len() <= 1 && state_files.iter().all(|name| name.ends_with(".mvcc")),
            "{}: at most the current snapshot's state file, no leftovers: {state_files:?}",
            cluster.members[member].name
        );
    }
}

/// The figure for docs/operations.md: how long a member takes to catch up through a
/// snapshot of many keys. Ignored by default; it loads `CONCORD_FIGURE_KEYS` keys (100 000
/// unless set) of 256-byte values while one follower is down, then restarts it:
///
/// `cargo test --release -p concord --test compaction -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn figure_catch_up_through_a_snapshot() {
    let keys: usize = std::env::var("CONCORD_FIGURE_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let value = "x".repeat(256);
    let mut cluster = compacting_cluster(3).start().await;
    let leader = cluster.wait_for_leader().await;
    let lagging = cluster.followers(leader)[0];
    cluster.kill(lagging);

    // Txns of 128 puts (etcd's --max-txn-ops), 4 in flight.
    let client = cluster.client(leader).await;
    let loading = Instant::now();
    let batches: Vec<Vec<usize>> = (0..keys).collect::<Vec<_>>().chunks(128).map(<[usize]>::to_vec).collect();
    let batches = Arc::new(Mutex::new(batches));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (batches, mut client, value) = (batches.clone(), client.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(batch) = batches.lock().unwrap().pop() else { return };
                let puts: Vec<etcd_client::TxnOp> =
                    batch.iter().map(|n| etcd_client::TxnOp::put(format!("f/{n:07}"), value.clone(), None)).collect();
                client.txn(etcd_client::Txn::new().and_then(puts)).await.expect("a txn of puts");
            }
        }));
    }
    for task in tasks {
        within(Duration::from_secs(600), "loading keys", task).await.expect("a loader panicked");
    }
    let loaded = loading.elapsed();
    let (leader_index, _) = indexes(&mut client.clone()).await.expect("the leader's status");

    let restarted_at = Instant::now();
    cluster.restart(lagging);
    wait_applied(&cluster, lagging, leader_index, Duration::from_secs(300)).await;
    let caught_up = restarted_at.elapsed();
    let log = log_since_last_start(&cluster, lagging);
    let field = |message: &str, name: &str| logged_field(&log, message, name).unwrap_or(0);
    let index = field("installed a snapshot from the leader", "index");
    assert!(index > 0, "the member caught up without a snapshot; its log:\n{log}");
    let mut local = cluster.client(lagging).await;
    let counted = local
        .get("f/", Some(GetOptions::new().with_prefix().with_serializable().with_count_only()))
        .await
        .expect("a serializable count");
    assert_eq!(counted.count() as usize, keys, "every key on the member that caught up");
    let mut reader = cluster.client(leader).await;
    assert_hash_kv_agrees(&cluster, current_revision(&mut reader).await).await;
    eprintln!(
        "figure: {keys} keys of 256 bytes loaded in {loaded:?}; the member that was down caught up to index \
         {leader_index} in {caught_up:?} (process start included) through a snapshot at index {index} of {} bytes \
         (install {} ms, state machine restore {} ms)",
        field("restored the state machine from the leader's snapshot", "bytes"),
        field("installed a snapshot from the leader", "millis"),
        field("restored the state machine from the leader's snapshot", "millis"),
    );
    for line in log.lines().filter(|l| l.contains("starting member") || l.contains("snapshot")) {
        eprintln!("figure: {} log: {line}", cluster.members[lagging].name);
    }
}
