//! The applied index, reopening, idempotent replay, batches, file maintenance.

use crate::common::*;
use concord_mvcc::*;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn entries(n: u64) -> Vec<(u64, Command)> {
    let mut out = Vec::new();
    out.push((1, Command::LeaseGrant(LeaseGrantRequest { id: 9, ttl: 5 })));
    for i in 2..=n {
        let cmd = match i % 4 {
            0 => Command::DeleteRange(del(&format!("k{}", i % 7), "")),
            1 => Command::Put(PutRequest { lease: 9, ..put(&format!("l{}", i % 5), "leased") }),
            _ => Command::Put(put(&format!("k{}", i % 7), &format!("v{i}"))),
        };
        out.push((i, cmd));
    }
    out
}

fn snapshot(s: &Store) -> (u64, i64, i64, HashKv, RangeResponse, Vec<Lease>) {
    (
        s.applied_index(),
        s.current_revision(),
        s.compacted_revision(),
        s.hash_kv(0).unwrap(),
        s.range(&range("\0", "\0")).unwrap(),
        s.leases().unwrap(),
    )
}

#[test]
fn state_and_applied_index_survive_reopen_and_replay_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let all = entries(60);
    let state = {
        let s = Store::open(&path).unwrap();
        for chunk in all[..40].chunks(7) {
            s.apply_batch(chunk).unwrap();
        }
        assert_eq!(s.applied_index(), 40);
        snapshot(&s)
    };
    let s = Store::open(&path).unwrap();
    assert_eq!(snapshot(&s), state);
    // Replaying what is already applied changes nothing and answers nothing.
    assert!(s.apply_batch(&all[..40]).unwrap().is_empty());
    assert_eq!(s.apply(40, &all[39].1).unwrap(), None);
    assert_eq!(snapshot(&s), state);
    // An overlapping batch applies only the new tail.
    let out = s.apply_batch(&all[30..]).unwrap();
    assert_eq!(out.iter().map(|a| a.index).collect::<Vec<_>>(), (41..=60).collect::<Vec<_>>());
    // Same as one store that applied everything once.
    let fresh = Store::in_memory().unwrap();
    fresh.apply_batch(&all).unwrap();
    assert_eq!(snapshot(&s), snapshot(&fresh));
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(snapshot(&s), snapshot(&fresh));
}

#[test]
fn errors_are_answers_and_advance_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let s = Store::open(&path).unwrap();
        let out = s
            .apply_batch(&[
                (3, Command::Put(put("a", "1"))),
                (4, Command::LeaseRevoke(LeaseRevokeRequest { id: 1 })),
                (5, Command::Put(put("b", "1"))),
                (5, Command::Put(put("dup", "index"))),
                (4, Command::Put(put("old", "index"))),
            ])
            .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].result, Err(MvccError::LeaseNotFound));
        assert_eq!(out[1].revision, 2);
        assert_eq!(out[2].revision, 3);
        assert_eq!(s.applied_index(), 5);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!((s.applied_index(), s.current_revision()), (5, 3));
    let t = T::with(s);
    assert_eq!(t.get("dup"), None);
}

#[test]
fn a_batch_is_one_transaction_with_per_command_results() {
    let s = Store::in_memory().unwrap();
    let batch: Vec<(u64, Command)> =
        (1..=100).map(|i| (i, Command::Put(put(&format!("k{}", i % 10), &i.to_string())))).collect();
    let out = s.apply_batch(&batch).unwrap();
    assert_eq!(out.len(), 100);
    for (n, a) in out.iter().enumerate() {
        assert_eq!(a.revision, n as i64 + 2);
        assert_eq!(a.events.len(), 1);
        assert_eq!(a.events[0].kv.mod_revision, a.revision);
    }
    assert_eq!(s.current_revision(), 101);
    // The events of the batch are the history, read back.
    let replayed = s.events_since(1, usize::MAX).unwrap();
    let applied: Vec<Event> = out.into_iter().flat_map(|a| a.events).collect();
    assert_eq!(replayed, applied);
    // Catch-up in pieces never splits a revision and resumes where it stopped.
    let first = s.events_since(50, 3).unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[0].kv.mod_revision, 50);
}

#[test]
fn events_since_keeps_txn_revisions_whole() {
    let mut t = T::new();
    t.put("a", "1");
    t.txn(TxnRequest {
        success: vec![RequestOp::Put(put("x", "1")), RequestOp::Put(put("y", "1")), RequestOp::Put(put("z", "1"))],
        ..TxnRequest::default()
    })
    .unwrap();
    let evs = t.store.events_since(3, 1).unwrap();
    assert_eq!(evs.len(), 3);
    assert!(evs.iter().all(|e| e.kv.mod_revision == 3));
    assert_eq!(t.store.events_since(2, 1).unwrap().len(), 1);
    assert!(t.store.events_since(4, 10).unwrap().is_empty());
}

#[test]
fn defragment_keeps_data_and_gives_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let s = Store::open_with(&path, Options { sync: false, ..Options::default() }).unwrap();
    let big = "x".repeat(4096);
    let batch: Vec<(u64, Command)> = (1..=400).map(|i| (i, Command::Put(put(&format!("k{i}"), &big)))).collect();
    s.apply_batch(&batch).unwrap();
    s.apply_batch(&[
        (401, Command::DeleteRange(del("k", "l"))),
        (402, Command::Put(put("keep", "me"))),
        (403, Command::Compact(CompactionRequest { revision: 403, physical: true })),
    ])
    .unwrap();
    std::thread::sleep(SIZE_IN_USE_MAX_AGE); // the measure taken at open is stale by now
    let in_use_before = s.db_size_in_use_bytes().unwrap();
    let size_before = s.db_size_bytes().unwrap();
    assert!(size_before >= in_use_before);
    let state = snapshot(&s);
    s.defragment(Duration::from_secs(5)).unwrap();
    assert_eq!(snapshot(&s), state);
    assert!(s.db_size_in_use_bytes().unwrap() < in_use_before, "the measure is taken again after a defragmentation");
    assert!(s.db_size_bytes().unwrap() <= size_before);
    assert!(s.db_size_bytes().unwrap() < 1_000_000, "{}", s.db_size_bytes().unwrap());
    assert_eq!(s.stats().unwrap().keys, 1);
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(snapshot(&s), state);
}

#[test]
fn a_store_of_another_schema_version_is_refused() {
    use redb::ReadableDatabase as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    drop(Store::open(&path).unwrap());
    {
        let db = redb::Database::open(&path).unwrap();
        let meta: redb::TableDefinition<&str, i64> = redb::TableDefinition::new("meta");
        let txn = db.begin_write().unwrap();
        txn.open_table(meta).unwrap().insert("schema_version", 99).unwrap();
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(r.open_table(meta).unwrap().get("schema_version").unwrap().unwrap().value(), 99);
    }
    let err = Store::open(&path).unwrap_err();
    assert!(err.is_storage());
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn store_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    // Reads run while another thread applies.
    let s = std::sync::Arc::new(Store::in_memory().unwrap());
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 1..=200u64 {
                s.apply(i, &Command::Put(put("k", &i.to_string()))).unwrap();
            }
        })
    };
    let mut last = 0;
    while last < 201 {
        let r = s.range(&range("k", "")).unwrap();
        // A read is a consistent snapshot: header revision and data agree.
        if let Some(kv) = r.kvs.first() {
            assert_eq!(kv.mod_revision, r.revision);
        }
        assert!(r.revision >= last);
        last = r.revision;
    }
    writer.join().unwrap();
}

/// A store with `n` keys of 1 kB, not synced (the tests below are about waiting).
fn filled_store(dir: &tempfile::TempDir, n: u64) -> Store {
    let s = Store::open_with(dir.path().join("kv.redb"), Options { sync: false, ..Options::default() }).unwrap();
    let value = "v".repeat(1024);
    let batch: Vec<(u64, Command)> = (1..=n).map(|i| (i, Command::Put(put(&format!("k{i}"), &value)))).collect();
    s.apply_batch(&batch).unwrap();
    s
}

/// Runs `work` on a thread of its own; its result if it ends within `limit`. (A test that
/// would otherwise hang on a lock fails instead.)
fn finishes_within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(work());
    });
    done_rx.recv_timeout(limit).ok()
}

/// Opens a snapshot stream's read transaction and keeps it open until `release` fires:
/// a long read, as a snapshot being sent to a member is.
fn hold_a_read(s: &std::sync::Arc<Store>) -> (std::thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (opened_tx, opened_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let store = s.clone();
    let reader = std::thread::spawn(move || {
        store
            .write_snapshot_with(std::io::sink(), |_| {
                opened_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(Vec::new())
            })
            .unwrap();
    });
    opened_rx.recv().unwrap();
    (reader, release_tx)
}

#[test]
fn a_defragmentation_waiting_for_a_long_read_lets_reads_and_applies_run_and_gives_up_busy() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(filled_store(&dir, 200));
    let (reader, release) = hold_a_read(&s);

    let defragmenting = {
        let store = s.clone();
        std::thread::spawn(move || store.defragment(Duration::from_millis(600)))
    };
    // While it waits, reads and applies go on: each is delayed by at most one hold.
    std::thread::sleep(Duration::from_millis(50));
    let store = s.clone();
    let meanwhile = finishes_within(Duration::from_millis(2000), move || {
        let mut slowest = Duration::ZERO;
        for i in 0..20u64 {
            let started = Instant::now();
            assert_eq!(store.range(&range("k1", "")).unwrap().kvs.len(), 1);
            store.apply_batch(&[(201 + i, Command::Put(put("during", &i.to_string())))]).unwrap();
            slowest = slowest.max(started.elapsed());
        }
        slowest
    });
    let Some(slowest) = meanwhile else {
        release.send(()).unwrap();
        panic!("reads and applies stopped behind a defragmentation waiting for a long read");
    };
    assert!(slowest < Duration::from_millis(300), "a read and an apply waited {slowest:?}");
    let outcome = defragmenting.join().unwrap();
    assert!(matches!(outcome, Err(MvccError::Busy(_))), "{outcome:?}");
    assert_eq!(s.range(&range("during", "")).unwrap().kvs[0].value, b"19");

    release.send(()).unwrap();
    reader.join().unwrap();
    s.defragment(Duration::from_secs(5)).expect("no read is open now");
}

#[test]
fn the_size_in_use_does_not_wait_for_a_running_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(filled_store(&dir, 50));
    let measured = s.db_size_in_use_bytes().unwrap();
    assert!(measured > 0);
    // A restore holds the write transaction while `before_commit` runs.
    let mut stream = Vec::new();
    s.write_snapshot(&mut stream).unwrap();
    let (inside_tx, inside_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let writer = {
        let store = s.clone();
        std::thread::spawn(move || {
            store
                .replace_with_snapshot_with(&stream[..], |_| {
                    inside_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
                .unwrap();
        })
    };
    inside_rx.recv().unwrap();
    // Past the age at which the measure is taken again, the writer is still busy.
    std::thread::sleep(SIZE_IN_USE_MAX_AGE + Duration::from_millis(100));
    let store = s.clone();
    let sizes = finishes_within(Duration::from_millis(500), move || {
        (store.db_size_in_use_bytes().unwrap(), store.db_size_bytes().unwrap())
    });
    release_tx.send(()).unwrap();
    let (in_use, size) = sizes.expect("the size in use waited for the writer");
    assert_eq!(in_use, measured, "the last measure, while the writer is busy");
    assert!(size >= measured);
    writer.join().unwrap();
}
