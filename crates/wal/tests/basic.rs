//! Appending, reading back, replacing suffixes, rolling segments and restarting.

mod common;

use common::{all, entries, entry, segment_files, small};
use concord_raft::{HardState, LogStore, StorageError};
use concord_wal::{Wal, WalError, WalOptions};

#[test]
fn a_new_log_is_empty_and_reopens_empty() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert!(wal.recovery_report().created);
    assert_eq!((wal.first_index(), wal.last_index(), wal.term(0)), (1, 0, Ok(0)));
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert!(!wal.recovery_report().created);
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    assert_eq!(wal.initial_hard_state(), HardState::default());
}

#[test]
fn appended_entries_and_hard_state_survive_a_restart_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    let written = entries(1, 60, 1, 50);
    for chunk in written.chunks(7) {
        wal.append(chunk).unwrap();
    }
    let hs = HardState { term: 1, vote: 2, commit: 40 };
    wal.set_hard_state(hs).unwrap();
    assert_eq!(wal.sync().unwrap(), 60);
    assert!(segment_files(dir.path()).len() > 3, "tiny segments roll over");
    assert_eq!(all(&wal), written);
    drop(wal);

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.initial_hard_state(), hs);
    assert_eq!(wal.durable_index(), 60);
    assert_eq!(all(&wal), written);
    assert_eq!(wal.term(60), Ok(1));
    assert_eq!(wal.term(61), Err(StorageError::Unavailable(61)));
}

#[test]
fn reads_respect_the_byte_budget_from_cache_and_from_disk() {
    for cache_bytes in [0, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions { cache_bytes, ..small() };
        let mut wal = Wal::open(dir.path(), opts).unwrap();
        wal.append(&entries(1, 20, 1, 100)).unwrap(); // 124 budget bytes each
        let got = wal.entries(3, 20, 300).unwrap();
        assert_eq!(got, entries(3, 4, 1, 100));
        let got = wal.entries(3, 20, 10).unwrap();
        assert_eq!(got.len(), 1, "at least one entry is returned");
        assert_eq!(wal.entries(5, 5, 10).unwrap(), vec![]);
        assert_eq!(wal.entries(1, 22, 10), Err(StorageError::Unavailable(21)));
    }
}

#[test]
fn replacing_a_suffix_within_a_segment_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(&entries(1, 10, 1, 10)).unwrap();
    wal.sync().unwrap();
    let replacement = entries(6, 8, 2, 10);
    wal.append(&replacement).unwrap();
    assert_eq!(wal.durable_index(), 5, "the durable prefix shrinks with the suffix");
    let mut want = entries(1, 5, 1, 10);
    want.extend(replacement);
    assert_eq!(all(&wal), want);
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(all(&wal), want);
}

#[test]
fn replacing_a_suffix_that_began_in_an_earlier_segment_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    for i in 1..=40 {
        wal.append(&[entry(i, 1, 60)]).unwrap();
    }
    let before = segment_files(dir.path()).len();
    wal.append(&entries(3, 5, 2, 60)).unwrap();
    assert_eq!(segment_files(dir.path()).len(), before + 1, "a deep truncation starts a segment");
    let mut want = entries(1, 2, 1, 60);
    want.extend(entries(3, 5, 2, 60));
    assert_eq!(all(&wal), want);
    wal.append(&entries(6, 30, 2, 60)).unwrap();
    want.extend(entries(6, 30, 2, 60));
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(all(&wal), want);
}

#[test]
fn contract_violations_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.append(&entries(1, 5, 2, 10)).unwrap();
    wal.set_hard_state(HardState { term: 2, vote: 1, commit: 3 }).unwrap();
    let invalid = |r: Result<(), WalError>| assert!(matches!(r, Err(WalError::Invalid(_))), "{r:?}");
    invalid(wal.append(&entries(7, 8, 2, 10))); // gap
    invalid(wal.append(&[entry(6, 1, 10)])); // term goes down
    invalid(wal.append(&[entry(6, 2, 10), entry(8, 2, 10)])); // not consecutive
    invalid(wal.append(&entries(3, 4, 3, 10))); // replaces a committed entry
    invalid(wal.set_hard_state(HardState { term: 1, vote: 1, commit: 3 })); // term goes down
    invalid(wal.set_hard_state(HardState { term: 2, vote: 3, commit: 3 })); // second vote
    invalid(wal.set_hard_state(HardState { term: 2, vote: 1, commit: 6 })); // commit past the log
    invalid(wal.compact(2)); // no snapshot covers it
    assert_eq!(all(&wal), entries(1, 5, 2, 10));
}

#[test]
fn an_entry_above_the_record_limit_is_rejected_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { max_record_bytes: 1000, ..small() };
    let mut wal = Wal::open(dir.path(), opts).unwrap();
    wal.append(&[entry(1, 1, 983)]).unwrap(); // 17 + 983 = 1000: exactly the limit
    let err = wal.append(&[entry(2, 1, 984)]).unwrap_err();
    assert!(matches!(err, WalError::EntryTooLarge { index: 2, max: 1000, .. }), "{err:?}");
    assert!(err.to_string().contains("max_record_bytes"), "{err}");
    assert_eq!(wal.last_index(), 1);
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Wal::open(dir.path(), WalOptions { segment_bytes: 10, ..WalOptions::default() }).unwrap_err();
    assert!(matches!(err, WalError::BadOptions(_)), "{err:?}");
}
