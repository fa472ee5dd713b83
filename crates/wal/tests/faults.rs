//! A failed fsync poisons the log; a full disk is a clear, recoverable error that leaves the
//! files as they were.

mod common;

use std::sync::Arc;

use common::{all, entries, segment_files, small};
use concord_raft::{HardState, LogStore, StorageError};
use concord_wal::{FaultInjector, SnapshotMeta, Wal, WalError, WalOptions};

fn with_faults() -> (WalOptions, Arc<FaultInjector>) {
    let faults = Arc::new(FaultInjector::new());
    (WalOptions { faults: Some(faults.clone()), ..small() }, faults)
}

#[test]
fn fsync_failure_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, faults) = with_faults();
    let mut wal = Wal::open(dir.path(), opts.clone()).unwrap();
    wal.append(&entries(1, 5, 1, 20)).unwrap();
    assert_eq!(wal.sync().unwrap(), 5);

    wal.append(&entries(6, 8, 1, 20)).unwrap();
    faults.fail_syncs(true);
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(wal.is_poisoned());
    assert_eq!(wal.durable_index(), 5, "nothing after the failed fsync counts as durable");

    // No retry on the same descriptor, even once fsync would work again: every call fails.
    faults.fail_syncs(false);
    assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.append(&entries(9, 9, 1, 20)), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.set_hard_state(HardState { term: 2, vote: 0, commit: 0 }), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.compact(1), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.save_snapshot(SnapshotMeta { index: 5, term: 1 }, b"x"), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.term(3), Err(StorageError::Fatal(_))));
    assert!(matches!(wal.entries(1, 3, 100), Err(StorageError::Fatal(_))));
    drop(wal);

    // A restart recovers at least what was durable.
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert!(wal.last_index() >= 5);
    assert_eq!(all(&wal)[..5], entries(1, 5, 1, 20)[..]);
}

#[test]
fn fsync_failure_while_rolling_a_segment_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, faults) = with_faults();
    let mut wal = Wal::open(dir.path(), opts).unwrap();
    wal.append(&entries(1, 10, 1, 60)).unwrap();
    faults.fail_syncs(true);
    // The next append does not fit the 1 KiB segment: rolling needs an fsync.
    let err = wal.append(&entries(11, 20, 1, 60)).unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err:?}");
    faults.fail_syncs(false);
    assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
}

#[test]
fn enospc_leaves_files_consistent_and_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, faults) = with_faults();
    // A growing file, so that the file lengths below are the records' ends (the undo cuts
    // a preallocated file the same way: back to its records).
    let mut wal =
        Wal::open(dir.path(), WalOptions { segment_bytes: 1 << 20, preallocate: false, ..opts.clone() }).unwrap();
    wal.append(&entries(1, 5, 1, 100)).unwrap();
    wal.sync().unwrap();
    let last = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();

    // The disk fills up 150 bytes into the group commit of 3 entries: part of the write
    // lands, then ENOSPC.
    faults.limit_space(Some(150));
    wal.append(&entries(6, 8, 1, 100)).unwrap(); // buffered until the sync
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, WalError::NoSpace { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no space") && msg.contains(&last.display().to_string()), "{msg}");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len, "the partial write was cut back");
    assert!(!wal.is_poisoned(), "a full disk is not fatal");
    assert_eq!(wal.durable_index(), 5, "nothing new is durable");
    assert_eq!(all(&wal), entries(1, 8, 1, 100), "the entries wait in memory");

    // Once there is space again the sync succeeds, and everything reopens.
    faults.limit_space(None);
    assert_eq!(wal.sync().unwrap(), 8);
    let len = std::fs::metadata(&last).unwrap().len();

    // An append too large to buffer is written at once: on ENOSPC it is refused whole.
    faults.limit_space(Some(1000));
    let big = entries(9, 10, 1, 600 << 10);
    let err = wal.append(&big).unwrap_err();
    assert!(matches!(err, WalError::NoSpace { .. }), "{err:?}");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len);
    assert_eq!(wal.last_index(), 8);
    faults.limit_space(None);
    wal.append(&big).unwrap();
    assert_eq!(wal.sync().unwrap(), 10);
    drop(wal);
    let wal = Wal::open(dir.path(), opts).unwrap();
    let mut want = entries(1, 8, 1, 100);
    want.extend(big);
    assert_eq!(all(&wal), want);
}

#[test]
fn enospc_when_creating_a_segment_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, faults) = with_faults();
    let mut wal = Wal::open(dir.path(), opts.clone()).unwrap();
    wal.append(&entries(1, 10, 1, 60)).unwrap();
    wal.sync().unwrap();
    let files = segment_files(dir.path());
    faults.limit_space(Some(10)); // not even a segment header fits
    let err = wal.append(&entries(11, 20, 1, 60)).unwrap_err();
    assert!(matches!(err, WalError::NoSpace { .. }), "{err:?}");
    assert_eq!(segment_files(dir.path()), files, "no half-made segment is left");
    assert!(std::fs::read_dir(dir.path().join("wal")).unwrap().all(|e| !e
        .unwrap()
        .path()
        .to_string_lossy()
        .ends_with(".tmp")));
    faults.limit_space(None);
    wal.append(&entries(11, 20, 1, 60)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(all(&wal), entries(1, 20, 1, 60));
}
