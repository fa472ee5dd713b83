//! Crash consistency: a crash may leave any prefix of the unsynced writes on disk. For every
//! byte offset in the writes after the last sync, cut a copy of the files there, recover, and
//! check that the log is exactly the state after the last whole record, never less than what
//! was reported durable.

mod common;

use std::path::Path;

use common::{all, copy_dir, entries, segment_files};
use concord_raft::{Entry, HardState, LogStore};
use concord_wal::{Wal, WalOptions};

/// The log and hard state after each record, with the byte offset where the record ends.
struct Expected {
    states: Vec<(u64, Vec<Entry>, HardState)>,
}

impl Expected {
    /// The state recovery must yield when the segment is cut at `cut`.
    fn at(&self, cut: u64) -> (&[Entry], HardState) {
        let (_, log, hs) = self.states.iter().rev().find(|(end, _, _)| *end <= cut).expect("cut after the base");
        (log, *hs)
    }
}

fn opts() -> WalOptions {
    // Large enough that the writes under test stay in one segment.
    common::no_fsync(WalOptions { segment_bytes: 1 << 20, ..WalOptions::default() })
}

/// Bytes of an entry's record.
fn record_len(e: &Entry) -> u64 {
    16 + 17 + e.data.len() as u64
}

/// Cuts a copy of `dir` at every offset of the last segment in `from..=to` and checks the
/// recovered state against `expected`.
fn check_every_cut(dir: &Path, from: u64, to: u64, durable: u64, expected: &Expected) {
    let scratch = tempfile::tempdir().unwrap();
    for cut in from..=to {
        let copy = scratch.path().join(format!("cut-{cut}"));
        copy_dir(dir, &copy);
        let last = segment_files(&copy).pop().unwrap();
        std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();

        let mut wal = Wal::open(&copy, opts()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let (log, hs) = expected.at(cut);
        assert_eq!(all(&wal), log, "cut at {cut}");
        assert_eq!(wal.initial_hard_state(), hs, "cut at {cut}");
        assert!(wal.last_index() >= durable.min(log.len() as u64), "cut at {cut} lost durable entries");
        let at_boundary = expected.states.iter().any(|(end, _, _)| *end == cut);
        assert_eq!(wal.recovery_report().torn_tail.is_some(), !at_boundary, "cut at {cut}");

        // The torn bytes are really gone: the log takes new writes and reopens cleanly.
        let next = common::entry(wal.last_index() + 1, 9, 5);
        wal.append(std::slice::from_ref(&next)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(&copy, opts()).unwrap();
        assert_eq!(all(&wal).last(), Some(&next), "cut at {cut}");
        assert!(wal.recovery_report().torn_tail.is_none());
        std::fs::remove_dir_all(&copy).unwrap();
    }
}

#[test]
fn crash_at_every_byte_of_the_unsynced_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts()).unwrap();
    let mut log = entries(1, 20, 1, 30);
    wal.append(&log).unwrap();
    let mut hs = HardState { term: 1, vote: 1, commit: 10 };
    wal.set_hard_state(hs).unwrap();
    let durable = wal.sync().unwrap();
    let last = segment_files(dir.path()).pop().unwrap();
    let base = std::fs::metadata(&last).unwrap().len();

    // Three writes after the sync: entries, a hard state, more entries of varied sizes.
    let mut expected = Expected { states: vec![(base, log.clone(), hs)] };
    let mut end = base;
    let batch1: Vec<Entry> = (21..=24).map(|i| common::entry(i, 2, (i as usize * 13) % 70)).collect();
    wal.append(&batch1).unwrap();
    for e in &batch1 {
        end += record_len(e);
        log.push(e.clone());
        expected.states.push((end, log.clone(), hs));
    }
    hs = HardState { term: 2, vote: 3, commit: 22 };
    wal.set_hard_state(hs).unwrap();
    end += 16 + 24;
    expected.states.push((end, log.clone(), hs));
    let batch2: Vec<Entry> = (25..=27).map(|i| common::entry(i, 2, i as usize)).collect();
    wal.append(&batch2).unwrap();
    for e in &batch2 {
        end += record_len(e);
        log.push(e.clone());
        expected.states.push((end, log.clone(), hs));
    }
    drop(wal);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), end, "all writes landed in the last segment");

    check_every_cut(dir.path(), base, end, durable, &expected);
}

#[test]
fn crash_at_every_byte_of_a_suffix_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts()).unwrap();
    let old = entries(1, 20, 1, 25);
    wal.append(&old).unwrap();
    let hs = HardState { term: 1, vote: 1, commit: 10 };
    wal.set_hard_state(hs).unwrap();
    let durable = wal.sync().unwrap();
    let last = segment_files(dir.path()).pop().unwrap();
    let base = std::fs::metadata(&last).unwrap().len();

    // One write: a truncate record, then entries 15..=18 of term 2.
    let new = entries(15, 18, 2, 25);
    wal.append(&new).unwrap();
    drop(wal);
    let mut expected = Expected { states: vec![(base, old.clone(), hs)] };
    let mut end = base + 16 + 8;
    let mut log = old[..14].to_vec();
    expected.states.push((end, log.clone(), hs));
    for e in &new {
        end += record_len(e);
        log.push(e.clone());
        expected.states.push((end, log.clone(), hs));
    }
    assert_eq!(std::fs::metadata(&last).unwrap().len(), end);

    // What was durable before the caller asked to replace the suffix stays, up to entry 14.
    check_every_cut(dir.path(), base, end, durable.min(14), &expected);
}

#[test]
fn a_zero_filled_tail_is_a_torn_write() {
    // Pages a crash never wrote read back as zeros (or a preallocated tail): cut, not refused.
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), opts()).unwrap();
    wal.append(&entries(1, 5, 1, 700)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let last = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();

    // Whole tail zeros.
    let copy = dir.path().join("zeros");
    copy_dir(&dir.path().join("wal"), &copy.join("wal"));
    let seg = segment_files(&copy).pop().unwrap();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len + 4096).unwrap();
    let wal = Wal::open(&copy, opts()).unwrap();
    assert_eq!(all(&wal), entries(1, 5, 1, 700));
    assert_eq!(wal.recovery_report().torn_tail.as_ref().unwrap().offset, len);
    drop(wal);

    // The last record's payload turns to zeros from a sector boundary to the end.
    let copy = dir.path().join("sector");
    copy_dir(&dir.path().join("wal"), &copy.join("wal"));
    let seg = segment_files(&copy).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let from = (len as usize - 300).next_multiple_of(512);
    assert!(from < len as usize && from > len as usize - 700, "the zeros start inside the last payload");
    bytes[from..].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let wal = Wal::open(&copy, opts()).unwrap();
    assert_eq!(all(&wal), entries(1, 4, 1, 700));
}
