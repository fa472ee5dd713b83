//! Crash consistency: a crash may leave any prefix of the unsynced writes on disk. For every
//! byte offset in the writes after the last sync, cut a copy of the files there, recover, and
//! check that the log is exactly the state after the last whole record, never less than what
//! was reported durable.
//!
//! A preallocated segment is not cut by a crash: the writes that did not reach the disk read
//! back as the zeros that were there, from a sector boundary (or from the end of a write
//! that reached the disk whole, a record boundary). The last test checks every such point.

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

/// Segments that grow with each write: a crash may leave the file cut at any byte.
fn opts() -> WalOptions {
    // Large enough that the writes under test stay in one segment.
    common::no_fsync(WalOptions { segment_bytes: 1 << 20, preallocate: false, ..WalOptions::default() })
}

/// Preallocated segments (the default).
fn preallocated() -> WalOptions {
    WalOptions { preallocate: true, ..opts() }
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
fn a_zero_filled_tail_is_unused_space_and_a_record_turning_to_zeros_is_torn() {
    // Pages a crash never wrote read back as zeros, as does a preallocated tail: neither is
    // refused.
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
    let mut wal = Wal::open(&copy, opts()).unwrap();
    assert_eq!(all(&wal), entries(1, 5, 1, 700));
    assert!(wal.recovery_report().torn_tail.is_none(), "nothing written was dropped");
    // The next record goes right after the last one, over the zeros.
    wal.append(&entries(6, 6, 1, 10)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len + 4096, "the zeros were written over, not appended to");
    assert_eq!(
        all(&Wal::open(&copy, opts()).unwrap()),
        entries(1, 6, 1, 700)[..5].iter().cloned().chain(entries(6, 6, 1, 10)).collect::<Vec<_>>()
    );

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

/// The state after each record of a write of `records` after a sync, as [`Expected`], with
/// the file's base length, its end, and the durable index.
fn unsynced_writes(dir: &Path, opts: WalOptions) -> (Expected, u64, u64, u64) {
    let mut wal = Wal::open(dir, opts).unwrap();
    let mut log = entries(1, 20, 1, 30);
    wal.append(&log).unwrap();
    let hs = HardState { term: 1, vote: 1, commit: 10 };
    wal.set_hard_state(hs).unwrap();
    let durable = wal.sync().unwrap();
    // Where the records end: a fresh log holds its header and these records.
    let base = 92 + log.iter().map(record_len).sum::<u64>() + 16 + 24;
    let mut expected = Expected { states: vec![(base, log.clone(), hs)] };
    let mut end = base;
    // Records of many sizes, so that sector boundaries fall at all kinds of places in them:
    // in headers, right after a header's checksum, in payloads, on record boundaries.
    for i in 21..=220u64 {
        let e = common::entry(i, 2, ((i * 37) % 301) as usize);
        wal.append(std::slice::from_ref(&e)).unwrap();
        end += record_len(&e);
        log.push(e);
        expected.states.push((end, log.clone(), hs));
    }
    drop(wal); // flushes the buffered records to the file, without a sync
    (expected, base, end, durable)
}

#[test]
fn crash_in_a_preallocated_segment_at_every_sector_and_record_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, base, end, durable) = unsynced_writes(dir.path(), preallocated());
    let last = segment_files(dir.path()).pop().unwrap();
    let file_len = std::fs::metadata(&last).unwrap().len();
    assert_eq!(file_len, 1 << 20, "the segment was preallocated to its full size");

    let sectors = (base.next_multiple_of(512)..end).step_by(512);
    let records = expected.states.iter().map(|(at, _, _)| *at);
    let mut cuts: Vec<u64> = sectors.chain(records).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let record_start = |cut: u64| expected.states.iter().map(|(at, _, _)| *at).filter(|at| *at <= cut).max().unwrap();
    let in_header = cuts.iter().filter(|&&cut| cut - record_start(cut) > 0 && cut - record_start(cut) < 16).count();
    assert!(in_header >= 3, "some sector boundaries fall inside record headers ({in_header})");

    let scratch = tempfile::tempdir().unwrap();
    for cut in cuts {
        let copy = scratch.path().join(format!("cut-{cut}"));
        copy_dir(dir.path(), &copy);
        let seg = segment_files(&copy).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[cut as usize..end as usize].fill(0);
        std::fs::write(&seg, &bytes).unwrap();

        let mut wal = Wal::open(&copy, preallocated()).unwrap_or_else(|e| panic!("zeros from {cut}: {e}"));
        let (log, hs) = expected.at(cut);
        assert_eq!(all(&wal), log, "zeros from {cut}");
        assert_eq!(wal.initial_hard_state(), hs, "zeros from {cut}");
        assert!(wal.last_index() >= durable, "zeros from {cut} lost durable entries");
        let at_boundary = expected.states.iter().any(|(at, _, _)| *at == cut);
        assert_eq!(wal.recovery_report().torn_tail.is_some(), !at_boundary, "zeros from {cut}");

        // The log takes new writes over the torn record and reopens with them.
        let next = common::entry(wal.last_index() + 1, 9, 5);
        wal.append(std::slice::from_ref(&next)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(&copy, preallocated()).unwrap();
        assert_eq!(all(&wal).last(), Some(&next), "zeros from {cut}");
        assert!(wal.recovery_report().torn_tail.is_none());
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), file_len, "still preallocated");
        std::fs::remove_dir_all(&copy).unwrap();
    }
}

#[test]
fn bytes_after_the_zeros_of_a_preallocated_segment_are_damage() {
    // Zeros, then data: refused, as in a growing file. A disk may persist a later page
    // before an earlier one, but no write after the last record's end was ever fsynced
    // with a hole before it, so this is not a tail a crash leaves behind an acknowledged
    // write; treating it as damage is the safe side.
    let dir = tempfile::tempdir().unwrap();
    let (_, _, end, _) = unsynced_writes(dir.path(), preallocated());
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[end as usize + 4096] = 1;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(dir.path(), preallocated()).unwrap_err();
    assert!(matches!(err, concord_wal::WalError::Corrupt { offset, .. } if offset == end), "{err}");
}

#[test]
fn every_segment_but_the_last_ends_with_its_last_record() {
    // A segment is cut to its records before the next is created, so a preallocated tail
    // never sits in the middle of the log (recovery refuses one there).
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { segment_bytes: 4096, ..preallocated() };
    let mut wal = Wal::open(dir.path(), opts.clone()).unwrap();
    for chunk in entries(1, 200, 1, 100).chunks(7) {
        wal.append(chunk).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4, "{} segments", files.len());
    for file in &files[..files.len() - 1] {
        let bytes = std::fs::read(file).unwrap();
        assert!(bytes.len() < 4096 + 200, "{}: {} bytes", file.display(), bytes.len());
        assert_ne!(bytes.last(), Some(&0), "{} ends in zeros", file.display());
    }
    assert_eq!(std::fs::metadata(files.last().unwrap()).unwrap().len(), 4096, "the last is preallocated");
    assert_eq!(all(&Wal::open(dir.path(), opts).unwrap()), entries(1, 200, 1, 100));
}
