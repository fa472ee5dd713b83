//! Snapshots and compaction: durable before the log lets go, found again on open.

mod common;

use common::{all, entries, segment_files, small};
use concord_raft::{HardState, LogStore, StorageError};
use concord_wal::{SnapshotMeta, SnapshotStore, Wal, WalError};

fn snap_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<_> =
        std::fs::read_dir(dir.join("snap")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn compaction_drops_whole_segments_below_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    for chunk in entries(1, 100, 1, 50).chunks(5) {
        wal.append(chunk).unwrap();
    }
    wal.set_hard_state(HardState { term: 1, vote: 1, commit: 100 }).unwrap();
    let before = segment_files(dir.path()).len();
    let meta = SnapshotMeta { index: 70, term: 1 };
    wal.save_snapshot(meta, b"state at 70").unwrap();
    assert_eq!(wal.first_index(), 1, "a matching snapshot keeps the log");
    wal.compact(60).unwrap();
    let after = segment_files(dir.path()).len();
    assert!(after < before, "segments below the compaction point are removed ({before} -> {after})");
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(60)), (61, 100, Ok(1)));
    assert_eq!(wal.term(59), Err(StorageError::Compacted(59)));
    assert_eq!(wal.entries(60, 62, u64::MAX), Err(StorageError::Compacted(60)));
    assert!(matches!(wal.compact(80), Err(WalError::Invalid(_))), "past the snapshot");
    drop(wal);

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(60)), (61, 100, Ok(1)));
    assert_eq!(all(&wal), entries(61, 100, 1, 50));
    let snap = wal.load_snapshot().unwrap().unwrap();
    assert_eq!((snap.meta, &snap.data[..]), (meta, &b"state at 70"[..]));
}

#[test]
fn a_snapshot_past_the_log_replaces_it_and_older_snapshots_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(&entries(1, 30, 1, 50)).unwrap();
    wal.set_hard_state(HardState { term: 2, vote: 0, commit: 10 }).unwrap();
    wal.save_snapshot(SnapshotMeta { index: 10, term: 1 }, b"ten").unwrap();
    wal.compact(10).unwrap();
    // A leader's snapshot that ends past our log: the log restarts after it.
    let meta = SnapshotMeta { index: 200, term: 3 };
    wal.save_snapshot(meta, b"two hundred").unwrap();
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(200)), (201, 200, Ok(3)));
    assert_eq!(segment_files(dir.path()).len(), 1, "older segments removed");
    assert_eq!(snap_files(dir.path()), vec!["00000000000000c8-0000000000000003.snap".to_string()]);
    wal.append(&entries(201, 205, 3, 10)).unwrap();
    wal.sync().unwrap();
    drop(wal);

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.snapshot_meta(), Some(meta));
    assert_eq!((wal.first_index(), wal.last_index()), (201, 205));
    assert_eq!(wal.term(200), Ok(3));
    assert_eq!(all(&wal), entries(201, 205, 3, 10));
}

#[test]
fn a_snapshot_conflicting_with_the_log_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(&entries(1, 30, 1, 20)).unwrap();
    wal.set_hard_state(HardState { term: 1, vote: 0, commit: 5 }).unwrap();
    // Entry 20 has term 1 here; the leader's snapshot says term 2.
    wal.save_snapshot(SnapshotMeta { index: 20, term: 2 }, b"x").unwrap();
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(20)), (21, 20, Ok(2)));
    // One that would remove committed entries is refused.
    wal.append(&entries(21, 30, 2, 20)).unwrap();
    wal.set_hard_state(HardState { term: 2, vote: 0, commit: 28 }).unwrap();
    let err = wal.save_snapshot(SnapshotMeta { index: 25, term: 3 }, b"y").unwrap_err();
    assert!(matches!(err, WalError::Invalid(_)), "{err:?}");
}

#[test]
fn an_interrupted_snapshot_install_is_completed_on_open() {
    // The crash came after the snapshot file was durable, before the log was reset.
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(&entries(1, 20, 1, 20)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let meta = SnapshotMeta { index: 50, term: 4 };
    SnapshotStore::open(dir.path().join("snap"), None).unwrap().save(meta, b"fifty").unwrap();

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.recovery_report().completed_snapshot_install, Some(meta));
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(50)), (51, 50, Ok(4)));
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.recovery_report().completed_snapshot_install, None);
    assert_eq!((wal.first_index(), wal.last_index()), (51, 50));
}

#[test]
fn a_log_compacted_past_its_snapshot_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(&entries(1, 40, 1, 20)).unwrap();
    wal.save_snapshot(SnapshotMeta { index: 30, term: 1 }, b"thirty").unwrap();
    wal.compact(30).unwrap();
    drop(wal);
    for f in snap_files(dir.path()) {
        std::fs::remove_file(dir.path().join("snap").join(f)).unwrap();
    }
    let err = Wal::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { kind: concord_wal::CorruptionKind::MissingSnapshot, .. }), "{err:?}");
    assert!(err.to_string().contains("snap"), "{err}");
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(&entries(1, 3, 1, 20)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    std::fs::write(dir.path().join("wal").join("0000000000000009.wal.tmp"), b"half a segment").unwrap();
    std::fs::write(dir.path().join("snap").join("0000000000000001-0000000000000001.snap.tmp"), b"half").unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(all(&wal), entries(1, 3, 1, 20));
    assert!(!dir.path().join("wal").join("0000000000000009.wal.tmp").exists());
    assert!(snap_files(dir.path()).is_empty());
}
