//! Damage that is not a torn write at the end must stop the node, with an error that names
//! the file, the offset and the kind of damage.

mod common;

use std::path::{Path, PathBuf};

use bytes::BufMut;
use common::{entries, segment_files, small};
use concord_raft::HardState;
use concord_wal::record::{encode_hard_state, encode_with, RecordType};
use concord_wal::{CorruptionKind, Wal, WalError, WalOptions};

/// A log of 60 entries over several tiny segments; returns its segment files. Not
/// preallocated, so that the tests' raw appends land right after the last record (the
/// file's end); tests/crash.rs covers preallocated segments.
fn build(dir: &Path) -> Vec<PathBuf> {
    build_with(dir, false)
}

fn build_with(dir: &Path, preallocate: bool) -> Vec<PathBuf> {
    let mut wal = Wal::open(dir, WalOptions { preallocate, ..small() }).unwrap();
    for chunk in entries(1, 60, 1, 50).chunks(4) {
        wal.append(chunk).unwrap();
    }
    wal.set_hard_state(HardState { term: 1, vote: 1, commit: 30 }).unwrap();
    wal.sync().unwrap();
    let files = segment_files(dir);
    assert!(files.len() >= 4, "need middle segments, got {}", files.len());
    files
}

/// Opens and expects corruption of `kind` at `path`/`offset`, with both in the message.
fn expect_corrupt(dir: &Path, kind: CorruptionKind, path: &Path, offset: u64) -> String {
    let err = Wal::open(dir, small()).unwrap_err();
    let msg = err.to_string();
    match &err {
        WalError::Corrupt { path: p, offset: o, kind: k, .. } => {
            assert_eq!((k, p.as_path(), *o), (&kind, path, offset), "{msg}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
    assert!(msg.contains(&format!("offset {offset}")), "message names the offset: {msg}");
    assert!(msg.contains("re-add the member") || msg.contains("backup"), "message says what to do: {msg}");
    msg
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Offset of the second entry record in a segment (header is 92 bytes, entries 83).
const SECOND_RECORD: u64 = 92 + 83;

#[test]
fn flipped_byte_in_a_middle_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    flip(&files[1], SECOND_RECORD + 40); // in the payload
    expect_corrupt(dir.path(), CorruptionKind::BadChecksum, &files[1], SECOND_RECORD);
}

#[test]
fn flipped_length_in_a_middle_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    flip(&files[2], SECOND_RECORD + 1); // in the length field
    expect_corrupt(dir.path(), CorruptionKind::BadChecksum, &files[2], SECOND_RECORD);
}

#[test]
fn flipped_byte_mid_last_segment_is_not_a_torn_tail() {
    // Damage followed by good records, even in the last segment, may be acknowledged data.
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    let last = files.last().unwrap();
    assert!(std::fs::metadata(last).unwrap().len() > SECOND_RECORD + 83 + 40);
    flip(last, SECOND_RECORD + 20);
    expect_corrupt(dir.path(), CorruptionKind::BadChecksum, last, SECOND_RECORD);
}

#[test]
fn flipped_byte_in_the_last_record_of_a_preallocated_segment_refuses_to_open() {
    // The last record is followed by preallocated zeros, not by the end of the file: damage
    // in it is still damage, not a torn write.
    let (grown, preallocated) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let records_end = std::fs::metadata(build(grown.path()).last().unwrap()).unwrap().len();
    let files = build_with(preallocated.path(), true);
    let last = files.last().unwrap();
    assert_eq!(std::fs::metadata(last).unwrap().len(), 1024, "preallocated");
    // The last record is the hard state (term 1, vote 1, commit 30: 40 bytes, ending in 7
    // zero bytes); no sector boundary falls in those zeros, or the flip below would look
    // like sectors a crash never wrote.
    let record = records_end - 40;
    assert!((records_end - 7..records_end).all(|at| at % 512 != 0));
    flip(last, record + 16);
    expect_corrupt(preallocated.path(), CorruptionKind::BadChecksum, last, record);
}

#[test]
fn cut_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    let cut = SECOND_RECORD + 50;
    std::fs::OpenOptions::new().write(true).open(&files[1]).unwrap().set_len(cut).unwrap();
    expect_corrupt(dir.path(), CorruptionKind::Truncated, &files[1], SECOND_RECORD);
}

#[test]
fn deleted_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    std::fs::remove_file(&files[2]).unwrap();
    let msg = expect_corrupt(dir.path(), CorruptionKind::MissingSegment, &files[3], 0);
    let missing = files[2].file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(missing), "message names the missing file: {msg}");
}

#[test]
fn deleted_first_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    std::fs::remove_file(&files[0]).unwrap();
    expect_corrupt(dir.path(), CorruptionKind::MissingSegment, &files[1], 0);
}

#[test]
fn segment_replaced_by_a_foreign_one_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    std::fs::copy(&files[2], &files[1]).unwrap(); // segment 2's bytes under segment 1's name
    expect_corrupt(dir.path(), CorruptionKind::BadSegmentHeader, &files[1], 0);
}

#[test]
fn unknown_entry_kind_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    let last = files.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    // A well-framed entry 61 with a kind tag this build does not know, then a good record.
    let mut buf = Vec::new();
    encode_with(&mut buf, RecordType::Entry, |b| {
        b.put_u64_le(61);
        b.put_u64_le(1);
        b.put_u8(77);
    });
    encode_hard_state(&mut buf, &HardState { term: 1, vote: 1, commit: 30 });
    append_raw(last, &buf);
    let msg = expect_corrupt(dir.path(), CorruptionKind::BadRecord, last, len);
    assert!(msg.contains("unknown entry kind"), "{msg}");
}

#[test]
fn hard_state_past_the_end_of_the_log_refuses_to_open() {
    // The hard state says entry 70 is committed but the log holds 60: the tail was lost.
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    let last = files.last().unwrap();
    let mut buf = Vec::new();
    encode_hard_state(&mut buf, &HardState { term: 1, vote: 1, commit: 70 });
    append_raw(last, &buf);
    let len = std::fs::metadata(last).unwrap().len();
    expect_corrupt(dir.path(), CorruptionKind::LostTail, last, len);
}

#[test]
fn entry_index_gap_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = build(dir.path());
    let last = files.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let mut buf = Vec::new();
    concord_wal::record::encode_entry(&mut buf, &common::entry(63, 1, 4));
    append_raw(last, &buf);
    let msg = expect_corrupt(dir.path(), CorruptionKind::IndexGap, last, len);
    assert!(msg.contains("expected entry 61"), "{msg}");
}

fn append_raw(path: &Path, buf: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(buf).unwrap();
}
