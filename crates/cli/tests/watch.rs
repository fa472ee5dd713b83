//! The etcd Watch API of real `concord` processes.
//!
//! - `wire_matches_etcd_3_4`: one scripted raw-protobuf session (watch ids chosen and
//!   assigned, duplicates, empty key and empty ranges, negative ids and start revisions,
//!   cancels of known and unknown ids, progress requests, future and compacted starts,
//!   fragments) runs against a real etcd 3.4 (`/usr/bin/etcd`, skipped with a note when
//!   it is missing) and against concord; the replies must be the same field for field
//!   (cluster id, member id and raft term aside).
//! - Through the `etcd-client` crate: prefix watches with prev_kv, past starts, compacted
//!   starts, multi-op Txns, lease revokes, filters, cancel, progress requests and notifications, many
//!   watches created on one stream while writes run (etcd #20655), a watch on a follower
//!   across the leader's death, a slow watcher that falls behind a compaction (etcd
//!   #18089), and `hasleader` streams on a member that lost its leader.
//!
//! Every event check goes through `check_watch`, which compares what a watch received
//! with the history that was written (and read back with Range): revision order, no gap,
//! no duplicate, same values. Its own test plants a skip and a duplicate.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use etcd_client::{
    Client, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse,
    WatchResponseStream,
};

// ---------------------------------------------------------------------------------------
// The checker.

/// One change to one key, as a watch reports it and as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    revision: i64,
    key: Vec<u8>,
    put: bool,
    value: Vec<u8>,
}

fn changes_of(response: &WatchResponse) -> Vec<Change> {
    response
        .events()
        .iter()
        .map(|event| {
            let kv = event.kv().expect("an event carries its key-value");
            Change {
                revision: kv.mod_revision(),
                key: kv.key().to_vec(),
                put: event.event_type() == EventType::Put,
                value: kv.value().to_vec(),
            }
        })
        .collect()
}

/// Compares what a watch received with the history: the events of `history` at revisions
/// `>= start` whose key `wanted` accepts, in history order. `complete` asks for all of
/// them; otherwise a prefix is enough (a watch that was canceled or is still running).
fn check_watch(
    history: &[Change],
    received: &[Change],
    start: i64,
    wanted: impl Fn(&[u8]) -> bool,
    complete: bool,
) -> Result<(), String> {
    let expected: Vec<&Change> = history.iter().filter(|c| c.revision >= start && wanted(&c.key)).collect();
    for (i, got) in received.iter().enumerate() {
        if i > 0 && received[i - 1] == *got {
            return Err(format!("duplicate at position {i}: {got:?}"));
        }
        if i > 0 && got.revision < received[i - 1].revision {
            return Err(format!(
                "out of order at position {i}: revision {} after {}",
                got.revision,
                received[i - 1].revision
            ));
        }
        let Some(want) = expected.get(i) else {
            return Err(format!("extra event at position {i}: {got:?} (history has {} events)", expected.len()));
        };
        if got.revision > want.revision {
            return Err(format!("skip at position {i}: got revision {} but {want:?} was never sent", got.revision));
        }
        if got != *want {
            return Err(format!("differs at position {i}: got {got:?}, history has {want:?}"));
        }
    }
    if complete && received.len() != expected.len() {
        return Err(format!(
            "incomplete: received {} of {} events; first missing {:?}",
            received.len(),
            expected.len(),
            expected.get(received.len())
        ));
    }
    Ok(())
}

#[test]
fn the_checker_catches_a_skip_and_a_duplicate() {
    let change = |revision: i64, key: &str| Change { revision, key: key.into(), put: true, value: b"v".to_vec() };
    let history: Vec<Change> = (2..8).map(|r| change(r, &format!("k{r}"))).collect();
    let all = |_: &[u8]| true;
    assert_eq!(check_watch(&history, &history, 2, all, true), Ok(()));
    assert_eq!(check_watch(&history, &history[1..], 3, all, true), Ok(()));
    assert_eq!(check_watch(&history, &history[..3], 2, all, false), Ok(()));
    let mut skipped = history.clone();
    skipped.remove(2);
    let error = check_watch(&history, &skipped, 2, all, false).expect_err("a skip must be caught");
    assert!(error.starts_with("skip"), "{error}");
    let mut doubled = history.clone();
    doubled.insert(3, history[2].clone());
    let error = check_watch(&history, &doubled, 2, all, false).expect_err("a duplicate must be caught");
    assert!(error.starts_with("duplicate"), "{error}");
    let mut changed = history.clone();
    changed[1].value = b"other".to_vec();
    assert!(check_watch(&history, &changed, 2, all, true).expect_err("a changed value").starts_with("differs"));
    assert!(check_watch(&history, &history[..5], 2, all, true).expect_err("a missing tail").starts_with("incomplete"));
}

/// The history of the keys under `prefix` as Range reads it now: with unique keys that
/// are written once, each key's `mod_revision` is its put.
async fn put_history(client: &mut Client, prefix: &str) -> Vec<Change> {
    let response = client.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("read the history back");
    let mut history: Vec<Change> = response
        .kvs()
        .iter()
        .map(|kv| Change { revision: kv.mod_revision(), key: kv.key().to_vec(), put: true, value: kv.value().to_vec() })
        .collect();
    history.sort_by_key(|c| c.revision);
    history
}

// ---------------------------------------------------------------------------------------
// Collecting a watch stream's responses in the background.

/// Every response of a watch stream, as they arrive, and how the stream ended.
#[derive(Clone, Default)]
struct Collected {
    responses: Arc<Mutex<Vec<WatchResponse>>>,
    ended: Arc<Mutex<Option<String>>>,
}

impl Collected {
    fn start(mut stream: WatchResponseStream) -> Collected {
        let collected = Collected::default();
        let sink = collected.clone();
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(response)) => sink.responses.lock().expect("lock").push(response),
                    Ok(None) => {
                        *sink.ended.lock().expect("lock") = Some("end of stream".into());
                        return;
                    }
                    Err(error) => {
                        *sink.ended.lock().expect("lock") = Some(error.to_string());
                        return;
                    }
                }
            }
        });
        collected
    }

    fn snapshot(&self) -> Vec<WatchResponse> {
        self.responses.lock().expect("lock").clone()
    }

    /// The events received for watch `id`, in order.
    fn changes(&self, id: i64) -> Vec<Change> {
        self.snapshot().iter().filter(|r| r.watch_id() == id).flat_map(changes_of).collect()
    }

    /// Waits until `done` holds for the responses received so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&[WatchResponse]) -> bool) -> Vec<WatchResponse> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let responses = self.snapshot();
            if done(&responses) {
                return responses;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; ended: {:?}; got {responses:#?}",
                    self.ended.lock().expect("lock")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until watch `id` has received events up to `revision`.
    async fn wait_until_revision(&self, id: i64, revision: i64) {
        self.wait_for(&format!("watch {id} to reach revision {revision}"), |responses| {
            responses.iter().filter(|r| r.watch_id() == id).flat_map(changes_of).any(|c| c.revision >= revision)
        })
        .await;
    }
}

/// Opens a watch stream with its first watch and returns the sender, the collector, and
/// the id and header revision of the `created` reply.
async fn open_watch(
    client: &mut Client,
    key: &str,
    options: WatchOptions,
) -> (etcd_client::WatchRequestSender, Collected, i64, i64) {
    let stream = within(Duration::from_secs(10), "opening a watch", client.watch(key, Some(options)))
        .await
        .expect("open a watch stream");
    let (sender, responses) = stream.split();
    let collected = Collected::start(responses);
    let created = collected.wait_for("the created reply", |r| r.iter().any(|r| r.created())).await;
    let created = created.iter().find(|r| r.created()).expect("created");
    assert!(!created.canceled(), "the watch was refused: {:?}", created.cancel_reason());
    (sender, collected, created.watch_id(), revision(created.header()))
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    revision(client.put(key, value, None).await.expect("put").header())
}

// ---------------------------------------------------------------------------------------
// Scenarios through etcd-client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_watch_with_prev_kv_sees_every_change_in_order() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    put(&mut client, "p/a", "0").await;
    let options = WatchOptions::new().with_prefix().with_prev_key();
    let (_sender, collected, id, created_at) = open_watch(&mut client, "p/", options).await;
    let mut history = Vec::new();
    for i in 1..=20 {
        let key = format!("p/{}", ["a", "b", "c"][(i - 1) % 3]);
        let value = format!("v{i}");
        let revision = put(&mut client, &key, &value).await;
        history.push(Change { revision, key: key.into_bytes(), put: true, value: value.into_bytes() });
        put(&mut client, "other", "x").await;
    }
    let deleted = client.delete("p/b", None).await.expect("delete");
    let last = revision(deleted.header());
    history.push(Change { revision: last, key: b"p/b".to_vec(), put: false, value: Vec::new() });
    collected.wait_until_revision(id, last).await;
    check_watch(&history, &collected.changes(id), created_at + 1, |k| k.starts_with(b"p/"), true).expect("the watch");
    // prev_kv: each event carries the key's previous version.
    let responses = collected.snapshot();
    let events: Vec<_> = responses.iter().filter(|r| r.watch_id() == id).flat_map(|r| r.events().to_vec()).collect();
    let first = events[0].prev_kv().expect("p/a had a version before the watch");
    assert_eq!((first.key(), first.value()), (&b"p/a"[..], &b"0"[..]));
    assert!(events[1].prev_kv().is_none(), "p/b was new: no prev_kv");
    let delete = events.last().expect("the delete");
    assert_eq!(delete.event_type(), EventType::Delete);
    assert_eq!(delete.prev_kv().map(|kv| kv.value().to_vec()), Some(b"v20".to_vec()));
    assert_eq!(
        delete.kv().map(|kv| (kv.value().len(), kv.version())),
        Some((0, 0)),
        "a DELETE carries key and revision only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_start_compacted_start_and_future_start() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let mut history = Vec::new();
    for i in 0..10 {
        let value = format!("v{i}");
        let revision = put(&mut client, "h", &value).await;
        history.push(Change { revision, key: b"h".to_vec(), put: true, value: value.into_bytes() });
    }
    let (first, last) = (history[0].revision, history[9].revision);
    // From the past: the whole history of the key, then live.
    let (_s, past, id, _) = open_watch(&mut client, "h", WatchOptions::new().with_start_revision(first)).await;
    let live = put(&mut client, "h", "live").await;
    history.push(Change { revision: live, key: b"h".to_vec(), put: true, value: b"live".to_vec() });
    past.wait_until_revision(id, live).await;
    check_watch(&history, &past.changes(id), first, |_| true, true).expect("a watch from the past");
    // A future start waits for its revision.
    let (_s, future, fid, _) = open_watch(&mut client, "h", WatchOptions::new().with_start_revision(live + 3)).await;
    for i in 0..4 {
        let value = format!("f{i}");
        let revision = put(&mut client, "h", &value).await;
        history.push(Change { revision, key: b"h".to_vec(), put: true, value: value.into_bytes() });
    }
    future.wait_until_revision(fid, live + 4).await;
    check_watch(&history, &future.changes(fid), live + 3, |_| true, true).expect("a watch from the future");
    // Below the compacted revision: created, then canceled with the compacted revision.
    client.compact(last, None).await.expect("compact");
    let (_s, compacted, cid, _) = open_watch(&mut client, "h", WatchOptions::new().with_start_revision(first)).await;
    let responses = compacted.wait_for("the compaction cancel", |r| r.iter().any(|r| r.canceled())).await;
    let cancel = responses.iter().find(|r| r.canceled()).expect("a cancel");
    assert_eq!((cancel.watch_id(), cancel.compact_revision(), cancel.cancel_reason()), (cid, last, ""));
    assert!(cancel.events().is_empty());
    // Exactly the compacted revision is still there.
    let (_s, at, aid, _) = open_watch(&mut client, "h", WatchOptions::new().with_start_revision(last)).await;
    at.wait_until_revision(aid, live + 4).await;
    check_watch(&history, &at.changes(aid), last, |_| true, true).expect("a watch from the compacted revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_events_filters_and_cancel() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    put(&mut client, "t/gone", "x").await;
    let (mut sender, collected, all, _) = open_watch(&mut client, "t/", WatchOptions::new().with_prefix()).await;
    sender
        .watch("t/", Some(WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut])))
        .await
        .expect("watch");
    sender
        .watch("t/", Some(WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoDelete])))
        .await
        .expect("watch");
    let created = collected.wait_for("three created replies", |r| r.iter().filter(|r| r.created()).count() == 3).await;
    let ids: Vec<i64> = created.iter().filter(|r| r.created()).map(|r| r.watch_id()).collect();
    assert_eq!(ids, vec![0, 1, 2], "ids are assigned per stream from 0, in the order of the creates");
    let (no_put, no_delete) = (ids[1], ids[2]);
    let txn = Txn::new().and_then([
        TxnOp::put("t/1", "a", None),
        TxnOp::delete("t/gone", None),
        TxnOp::put("t/2", "b", Some(PutOptions::new())),
        TxnOp::put("outside", "c", None),
    ]);
    let at = revision(client.txn(txn).await.expect("txn").header());
    collected.wait_until_revision(all, at).await;
    collected.wait_until_revision(no_put, at).await;
    collected.wait_until_revision(no_delete, at).await;
    let responses = collected.snapshot();
    let of =
        |id: i64| -> Vec<&WatchResponse> { responses.iter().filter(|r| r.watch_id() == id && !r.created()).collect() };
    let keys = |r: &WatchResponse| -> Vec<(String, bool)> {
        changes_of(r).into_iter().map(|c| (String::from_utf8_lossy(&c.key).into_owned(), c.put)).collect()
    };
    assert_eq!(of(all).len(), 1, "a Txn's events come in one response");
    assert_eq!(revision(of(all)[0].header()), at);
    let expected = vec![("t/1".to_string(), true), ("t/gone".to_string(), false), ("t/2".to_string(), true)];
    assert_eq!(keys(of(all)[0]), expected, "in the Txn's order, outside keys left out");
    assert_eq!(keys(of(no_put)[0]), vec![("t/gone".to_string(), false)]);
    assert_eq!(keys(of(no_delete)[0]), vec![("t/1".to_string(), true), ("t/2".to_string(), true)]);
    // Cancel: acknowledged once; nothing after it; an unknown id gets no reply.
    sender.cancel(all).await.expect("cancel");
    sender.cancel(all).await.expect("cancel again");
    sender.cancel(77).await.expect("cancel an unknown id");
    let responses = collected.wait_for("the cancel", |r| r.iter().any(|r| r.canceled())).await;
    let cancels: Vec<_> = responses.iter().filter(|r| r.canceled()).collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!((cancels[0].watch_id(), cancels[0].compact_revision()), (all, 0));
    let after = put(&mut client, "t/3", "c").await;
    collected.wait_until_revision(no_delete, after).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(collected.changes(all).iter().all(|c| c.revision <= at), "a canceled watch got an event");
    assert_eq!(collected.snapshot().iter().filter(|r| r.canceled()).count(), 1, "cancels of gone ids are not answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_and_progress_notifications() {
    let cluster = Cluster::builder(1).arg("--experimental-watch-progress-notify-interval").arg("300ms").start().await;
    let mut client = cluster.client(0).await;
    let (mut sender, collected, quiet, _) = open_watch(&mut client, "q", WatchOptions::new()).await;
    sender.watch("n", Some(WatchOptions::new().with_progress_notify())).await.expect("watch");
    let created = collected.wait_for("two created", |r| r.iter().filter(|r| r.created()).count() == 2).await;
    let notified = created.iter().filter(|r| r.created()).map(|r| r.watch_id()).nth(1).expect("the second watch");
    let now = put(&mut client, "elsewhere", "x").await;
    sender.request_progress().await.expect("progress request");
    let responses = collected
        .wait_for("the progress reply", |r| r.iter().any(|r| r.watch_id() == -1 && revision(r.header()) == now))
        .await;
    let reply = responses.iter().find(|r| r.watch_id() == -1).expect("a progress reply");
    assert!(reply.events().is_empty() && !reply.created() && !reply.canceled());
    // Notifications: empty responses for the progress_notify watch only, at the current revision.
    let responses = collected
        .wait_for("two progress notifications", |r| {
            r.iter().filter(|r| r.watch_id() == notified && !r.created() && r.events().is_empty()).count() >= 2
        })
        .await;
    let notifications: Vec<_> = responses.iter().filter(|r| r.watch_id() == notified && !r.created()).collect();
    assert!(notifications.iter().all(|r| revision(r.header()) == now && r.events().is_empty()));
    assert!(
        responses.iter().all(|r| r.watch_id() != quiet || r.created()),
        "a watch without progress_notify was notified"
    );
}

/// A lease revoke deletes the lease's keys in one revision: one response of DELETE events,
/// with prev_kv carrying the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoke_gives_delete_events_in_one_response() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let lease = client.lease_grant(30, None).await.expect("grant").id();
    for key in ["r/1", "r/2"] {
        client.put(key, "v", Some(PutOptions::new().with_lease(lease))).await.expect("put with the lease");
    }
    let options = WatchOptions::new().with_prefix().with_prev_key();
    let (_sender, collected, id, _) = open_watch(&mut client, "r/", options).await;
    let at = revision(client.lease_revoke(lease).await.expect("revoke").header());
    collected.wait_until_revision(id, at).await;
    let responses = collected.snapshot();
    let events: Vec<_> = responses.iter().filter(|r| r.watch_id() == id && !r.created()).collect();
    assert_eq!(events.len(), 1, "one revision, one response");
    let got: Vec<(EventType, Vec<u8>, i64, Option<i64>)> = events[0]
        .events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("kv");
            (e.event_type(), kv.key().to_vec(), kv.mod_revision(), e.prev_kv().map(|p| p.lease()))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (EventType::Delete, b"r/1".to_vec(), at, Some(lease)),
            (EventType::Delete, b"r/2".to_vec(), at, Some(lease)),
        ]
    );
}

/// etcd #20655's shape: many watches created back to back on one stream while writes go
/// on; each must get every event after its start, none lost while it was being created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watches_created_quickly_during_writes_lose_nothing() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    put(&mut client, "m/0000", "seed").await;
    let writer = {
        let mut client = cluster.client(0).await;
        tokio::spawn(async move {
            for i in 1..=300 {
                client.put(format!("m/{i:04}"), format!("v{i}"), None).await.expect("put");
            }
        })
    };
    let (mut sender, collected, _, _) = open_watch(&mut client, "m/", WatchOptions::new().with_prefix()).await;
    const WATCHES: usize = 60;
    for i in 1..WATCHES {
        // Every third one starts in the past, so catch-up and live delivery interleave.
        let options = if i % 3 == 0 {
            WatchOptions::new().with_prefix().with_start_revision(2)
        } else {
            WatchOptions::new().with_prefix()
        };
        sender.watch("m/", Some(options)).await.expect("create a watch");
    }
    writer.await.expect("the writer");
    let last = put(&mut client, "m/last", "end").await;
    let history = put_history(&mut client, "m/").await;
    let responses =
        collected.wait_for("every created reply", |r| r.iter().filter(|r| r.created()).count() == WATCHES).await;
    let created: Vec<(i64, i64)> =
        responses.iter().filter(|r| r.created()).map(|r| (r.watch_id(), revision(r.header()))).collect();
    assert_eq!(created.iter().map(|c| c.0).collect::<Vec<_>>(), (0..WATCHES as i64).collect::<Vec<_>>());
    for (i, (id, created_at)) in created.into_iter().enumerate() {
        collected.wait_until_revision(id, last).await;
        let start = if i % 3 == 0 && i > 0 { 2 } else { created_at + 1 };
        check_watch(&history, &collected.changes(id), start, |_| true, true)
            .unwrap_or_else(|e| panic!("watch {id} (start {start}): {e}"));
    }
}

/// A watch served by a follower goes on when the leader dies: every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_survives_the_leader_s_death() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let followers = cluster.followers(leader);
    let mut on_follower = cluster.client(followers[0]).await;
    let mut writer = cluster.client_for(&followers).await;
    let start = current_revision(&mut writer).await + 1;
    let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(start);
    let (_sender, collected, id, _) = open_watch(&mut on_follower, "f/", options).await;
    let mut written = 0;
    for i in 0..60 {
        writer.put(format!("f/{i:04}"), format!("v{i}"), None).await.expect("put before the kill");
        written += 1;
    }
    cluster.kill(leader);
    // Writes go on through the survivors; one may fail while they elect.
    for i in written..150 {
        let _ = writer.put(format!("f/{i:04}"), format!("v{i}"), None).await;
    }
    cluster.wait_for_leader().await;
    let last = put(&mut writer, "f/last", "end").await;
    let history = put_history(&mut writer, "f/").await;
    assert!(history.len() > 140, "most writes must have committed: {}", history.len());
    collected.wait_until_revision(id, last).await;
    check_watch(&history, &collected.changes(id), start, |_| true, true).expect("the follower's watch");
    assert!(collected.ended.lock().expect("lock").is_none(), "the stream ended");
}

/// A follower that falls so far behind that it installs the leader's snapshot skips the
/// events of the revisions in it (they never pass apply); its watch must read them from
/// the store, and deliver exactly the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_that_installs_a_snapshot_misses_nothing() {
    let mut cluster = Cluster::builder(3).snapshot_every(100, 20).start().await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut writer = cluster.client(leader).await;
    // No keep-alive: the stream must outlive the follower's pause.
    let mut on_follower = Client::connect([cluster.endpoint(follower)], None).await.expect("connect");
    let start = current_revision(&mut writer).await + 1;
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let (_sender, collected, id, _) = open_watch(&mut on_follower, "z/", options).await;
    for i in 0..20 {
        put(&mut writer, &format!("z/{i:04}"), "before").await;
    }
    cluster.pause(follower);
    for i in 20..400 {
        put(&mut writer, &format!("z/{i:04}"), "while paused").await;
    }
    cluster.resume(follower);
    let last = put(&mut writer, "z/last", "after").await;
    let history = put_history(&mut writer, "z/").await;
    collected.wait_until_revision(id, last).await;
    check_watch(&history, &collected.changes(id), start, |_| true, true).expect("the follower's watch");
    let log = std::fs::read_to_string(&cluster.members[follower].log_path).expect("the follower's log");
    assert!(
        log.contains("restored the state machine from the leader's snapshot"),
        "the follower caught up without a snapshot: the test did not test what it is about"
    );
}

/// etcd #18089's shape: a watcher that cannot keep up falls behind a compaction. It must
/// get a gap-free prefix of the history and then be canceled with the compacted revision,
/// never skip to after it; meanwhile another stream on the member gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_behind_a_compaction_is_canceled_never_skipped() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let start = current_revision(&mut client).await + 1;
    // The stream's watch is created, then its client stops reading.
    let stream = client.watch("s/", Some(WatchOptions::new().with_prefix())).await.expect("watch");
    let (_sender, mut responses) = stream.split();
    let created = within(Duration::from_secs(5), "created", responses.message()).await.expect("read").expect("created");
    let id = created.watch_id();
    // A second stream on the same member, on its own connection, that keeps reading.
    let mut other_client = Client::connect([cluster.endpoint(0)], None).await.expect("connect");
    let (_other_sender, other, other_id, _) =
        open_watch(&mut other_client, "s/", WatchOptions::new().with_prefix().with_start_revision(start)).await;
    // One write at a time: each is its own apply batch, so more batches than the live
    // channel holds (1024) pass while the stream waits on its full response queue and
    // HTTP/2 window; the values make the backlog larger than those buffers.
    let value = "x".repeat(8192);
    let mut history = Vec::new();
    for i in 0..1500 {
        let key = format!("s/{i:04}");
        let revision = put(&mut client, &key, &value).await;
        history.push(Change { revision, key: key.into_bytes(), put: true, value: value.clone().into_bytes() });
    }
    let compacted = put(&mut client, "s/last", "end").await;
    history.push(Change { revision: compacted, key: b"s/last".to_vec(), put: true, value: b"end".to_vec() });
    // The stuck stream does not hold the other one back.
    within(
        Duration::from_secs(10),
        "the other stream to get every event",
        other.wait_until_revision(other_id, compacted),
    )
    .await;
    check_watch(&history, &other.changes(other_id), start, |_| true, true).expect("the reading stream");
    client.compact(compacted, None).await.expect("compact");
    // Now read everything: events without a gap, then (if the watcher was behind the
    // compaction) a cancel carrying the compacted revision.
    let mut received = Vec::new();
    let mut cancel = None;
    while cancel.is_none() && received.last().map(|c: &Change| c.revision) != Some(compacted) {
        let response = within(Duration::from_secs(20), "the slow watcher's next response", responses.message())
            .await
            .expect("read")
            .expect("the stream ended");
        assert_eq!(response.watch_id(), id);
        received.extend(changes_of(&response));
        if response.canceled() {
            cancel = Some(response);
        }
    }
    check_watch(&history, &received, start, |_| true, cancel.is_none()).expect("the slow watcher");
    eprintln!(
        "slow watcher: {} events up to revision {:?}, canceled: {}",
        received.len(),
        received.last().map(|c| c.revision),
        cancel.is_some()
    );
    // 12 MB of backlog is far more than the stream's queue and HTTP/2 window hold: the
    // watcher must have fallen behind the compaction (else this test tests nothing).
    let cancel = cancel.expect("the slow watcher was not canceled: it cannot have kept 12 MB queued");
    {
        assert_eq!(cancel.compact_revision(), compacted);
        let next = received.last().map_or(start, |c| c.revision + 1);
        assert!(next < compacted, "canceled although revision {next} was still there");
    }
}

/// `hasleader: true` (what etcdctl sends): refused at once without a leader, and an open
/// stream is ended after three election timeouts without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hasleader_streams_end_when_the_member_loses_its_leader() {
    use concord_api::etcdserverpb::{self as pb, watch_client::WatchClient, watch_request::RequestUnion};
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let survivor = cluster.followers(leader)[0];
    let channel = tonic::transport::Endpoint::from_shared(cluster.endpoint(survivor))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let open = |channel: tonic::transport::Channel| async move {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = pb::WatchCreateRequest { key: b"k".to_vec(), ..Default::default() };
        tx.send(pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await.expect("send");
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert("hasleader", "true".parse().expect("metadata"));
        (tx, WatchClient::new(channel).watch(request).await)
    };
    let (_tx, opened) = open(channel.clone()).await;
    let mut stream = opened.expect("a watch with a leader").into_inner();
    let created = stream.message().await.expect("read").expect("created");
    assert!(created.created);
    for i in cluster.running() {
        if i != survivor {
            cluster.kill(i);
        }
    }
    // The open stream ends with etcd's error after about three election timeouts.
    let ended = within(ELECTION_TIMEOUT * 12, "the stream to end", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    let status = ended.expect_err("the stream must end with an error");
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: no leader"));
    // A new one is refused at once.
    let (_tx, refused) = open(channel).await;
    let status = refused.expect_err("refused without a leader");
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: no leader"));
}

// ---------------------------------------------------------------------------------------
// The wire, compared with a real etcd 3.4.

mod wire {
    use super::*;
    use concord_api::etcdserverpb::{
        self as pb, kv_client::KvClient, request_op, watch_client::WatchClient, watch_request::RequestUnion as R,
    };
    use std::process::{Child, Command, Stdio};
    use tokio_stream::StreamExt;

    const ETCD: &str = "/usr/bin/etcd";
    /// Values big enough that three of them (as prev_kv of a delete) need fragments: etcd
    /// cuts at --max-request-bytes (1.5 MiB) + 512 KiB.
    const BIG_VALUE: usize = 1_000_000;

    fn create(key: &[u8], range_end: &[u8], id: i64, start: i64) -> pb::WatchRequest {
        let request = pb::WatchCreateRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            watch_id: id,
            start_revision: start,
            ..Default::default()
        };
        pb::WatchRequest { request_union: Some(R::CreateRequest(request)) }
    }

    fn with(mut request: pb::WatchRequest, edit: impl FnOnce(&mut pb::WatchCreateRequest)) -> pb::WatchRequest {
        if let Some(R::CreateRequest(create)) = request.request_union.as_mut() {
            edit(create);
        }
        request
    }

    fn cancel(id: i64) -> pb::WatchRequest {
        pb::WatchRequest { request_union: Some(R::CancelRequest(pb::WatchCancelRequest { watch_id: id })) }
    }

    fn put_op(key: &str, value_len: usize) -> pb::RequestOp {
        let put = pb::PutRequest { key: key.into(), value: vec![b'v'; value_len], ..Default::default() };
        pb::RequestOp { request: Some(request_op::Request::RequestPut(put)) }
    }

    /// A response without what differs between two servers by nature (ids, term).
    fn normalized(response: &pb::WatchResponse) -> String {
        let mut response = response.clone();
        // Big values as their length, so a difference stays readable.
        for event in response.events.iter_mut() {
            for kv in event.kv.iter_mut().chain(event.prev_kv.iter_mut()) {
                if kv.value.len() > 64 {
                    kv.value = format!("<{} bytes>", kv.value.len()).into_bytes();
                }
            }
        }
        if let Some(header) = response.header.as_mut() {
            header.cluster_id = 0;
            header.member_id = 0;
            header.raft_term = 0;
        }
        format!("{response:?}")
    }

    /// Runs the script against the server at `endpoint`; returns, per step, the replies
    /// that came within a quiet period (sorted by watch id: etcd's order between watches
    /// of one revision is a map's order, within a watch it is kept).
    async fn run_script(endpoint: &str) -> Vec<(String, Vec<String>)> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut kv = KvClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // etcd sends the stream's headers with its first reply: create first, then call.
        tx.send(create(b"a", b"", 0, 0)).await.expect("send");
        let mut stream = WatchClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        let mut transcript = Vec::new();
        let mut collect = |name: &str, replies: Vec<pb::WatchResponse>| {
            let mut replies = replies;
            replies.sort_by_key(|r| r.watch_id);
            transcript.push((name.to_string(), replies.iter().map(normalized).collect::<Vec<_>>()));
        };
        macro_rules! quiet {
            () => {{
                let mut replies = Vec::new();
                while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_millis(400), stream.next()).await {
                    replies.push(reply.expect("a watch reply"));
                }
                replies
            }};
        }
        collect("first create (auto id)", quiet!());
        let steps: Vec<(&str, pb::WatchRequest)> = vec![
            ("auto id again", create(b"a", b"", 0, 0)),
            ("chosen id 7", create(b"a", b"", 7, 0)),
            ("duplicate id 7", create(b"a", b"", 7, 0)),
            ("chosen id 2, taken by an auto id", create(b"a", b"", 2, 0)),
            ("auto id skips taken ones", create(b"a", b"", 0, 0)),
            ("chosen id 3", create(b"a", b"", 3, 0)),
            ("auto after 3", create(b"a", b"", 0, 0)),
            ("empty key", create(b"", b"", 0, 0)),
            ("empty key, range end \\0 (all keys)", create(b"", b"\0", 0, 0)),
            ("range end before key", create(b"b", b"a", 0, 0)),
            ("range end equal to key", create(b"b", b"b", 0, 0)),
            ("negative chosen id", create(b"a", b"", -3, 0)),
            ("negative start revision", create(b"a", b"", 0, -5)),
            ("start revision -1", create(b"zz", b"", 0, -1)),
            ("cancel an unknown id", cancel(99)),
            ("progress request", pb::WatchRequest { request_union: Some(R::ProgressRequest(Default::default())) }),
            ("empty request", pb::WatchRequest { request_union: None }),
            ("cancel 0", cancel(0)),
            ("cancel 0 again", cancel(0)),
            ("future start", create(b"a", b"", 0, 1000)),
            (
                "prefix k, prev_kv, fragment",
                with(create(b"k", b"l", 0, 0), |c| {
                    c.prev_kv = true;
                    c.fragment = true;
                }),
            ),
            (
                "prefix k, prev_kv, NOPUT, no fragment",
                with(create(b"k", b"l", 0, 0), |c| {
                    c.prev_kv = true;
                    c.filters = vec![0];
                }),
            ),
        ];
        for (name, step) in steps {
            tx.send(step).await.expect("send");
            collect(name, quiet!());
        }
        kv.put(pb::PutRequest { key: b"a".to_vec(), value: b"x".to_vec(), ..Default::default() }).await.expect("put");
        collect("put a", quiet!());
        let ops = (0..3).map(|i| put_op(&format!("kt{i}"), 10)).collect();
        kv.txn(pb::TxnRequest { success: ops, ..Default::default() }).await.expect("txn");
        collect("txn of three puts", quiet!());
        for i in 0..3 {
            let put = pb::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; BIG_VALUE],
                ..Default::default()
            };
            kv.put(put).await.expect("put a big value");
            collect("put a big value", quiet!());
        }
        let delete = pb::DeleteRangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), ..Default::default() };
        kv.delete_range(delete).await.expect("delete range");
        collect("delete six keys (fragmented for prev_kv + fragment)", quiet!());
        let put = pb::PutRequest { key: b"a".to_vec(), value: b"y".to_vec(), ..Default::default() };
        let at = kv.put(put).await.expect("put").into_inner().header.expect("header").revision;
        kv.compact(pb::CompactionRequest { revision: at, physical: true }).await.expect("compact");
        collect("put a, compact", quiet!());
        tx.send(create(b"a", b"", 0, 1)).await.expect("send");
        collect("start below the compacted revision", quiet!());
        tx.send(create(b"a", b"", 0, at)).await.expect("send");
        collect("start at the compacted revision", quiet!());
        tx.send(cancel(13)).await.expect("send");
        collect("cancel the watch canceled by compaction", quiet!());
        transcript
    }

    struct Etcd {
        child: Child,
        _dir: tempfile::TempDir,
        endpoint: String,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn start_etcd() -> Etcd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ports = free_ports(2);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = Command::new(ETCD)
            .args(["--data-dir", &dir.path().join("etcd").display().to_string()])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, _dir: dir, endpoint: client.clone() };
        eventually(Duration::from_secs(15), "etcd to serve", || {
            let client = client.clone();
            async move {
                let mut c = Client::connect([client], None).await.map_err(|e| e.to_string())?;
                c.status().await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .await;
        etcd
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wire_matches_etcd_3_4() {
        if !std::path::Path::new(ETCD).exists() {
            eprintln!("SKIPPED: {ETCD} is not installed; nothing to compare with");
            return;
        }
        let etcd = start_etcd().await;
        let expected = run_script(&etcd.endpoint).await;
        drop(etcd);
        let cluster = Cluster::start(1).await;
        let got = run_script(&cluster.endpoint(0)).await;
        // The script must have provoked what it is about.
        let all: String = expected.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        for needle in
            ["fragment: true", "compact_revision: -1", "duplicate watch ID", "watcher range is empty", "watch_id: -1"]
        {
            assert!(all.contains(needle), "etcd's transcript lacks {needle:?}: the script no longer tests it");
        }
        for ((step, want), (_, have)) in expected.iter().zip(got.iter()) {
            assert_eq!(have, want, "step {step:?}: concord (left) differs from etcd 3.4 (right)");
        }
        assert_eq!(got.len(), expected.len());
    }
}
