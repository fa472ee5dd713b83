//! Raft snapshots: write, restore, and refuse damaged streams.

use crate::common::*;
use crate::determinism::{assert_same, random_command, Rng};
use concord_mvcc::*;

fn busy_store(seed: u64, n: u64) -> (Store, Rng) {
    let mut rng = Rng(seed);
    let s = Store::in_memory().unwrap();
    for index in 1..=n {
        let cmd = random_command(&mut rng, &s);
        s.apply(index, &cmd).unwrap();
    }
    (s, rng)
}

#[test]
fn restored_store_equals_the_original_and_goes_on_equally() {
    let (a, mut rng) = busy_store(0x5eed, 200);
    assert!(a.leases().unwrap().iter().any(|l| l.remaining.is_some()), "the snapshot carries lease checkpoints");
    let mut bytes = Vec::new();
    let meta = a.write_snapshot(&mut bytes).unwrap();
    assert_eq!(meta.applied_index, 200);
    assert_eq!(meta.revision, a.current_revision());
    assert_eq!(meta.compacted_revision, a.compacted_revision());
    assert_eq!(meta.bytes, bytes.len() as u64);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restored.redb");
    let (b, bmeta) = Store::restore_snapshot(&path, bytes.as_slice(), Options::default()).unwrap();
    assert_eq!(bmeta, meta);
    assert_same(&a, &b);
    let (c, _) = Store::restore_snapshot_in_memory(bytes.as_slice()).unwrap();
    assert_same(&a, &c);

    // The same entries after the snapshot keep them equal.
    for index in 201..=300 {
        let cmd = random_command(&mut rng, &a);
        let x = a.apply(index, &cmd).unwrap();
        let y = b.apply(index, &cmd).unwrap();
        assert_eq!(x, y);
    }
    assert_same(&a, &b);
    drop(b);
    assert_same(&a, &Store::open(&path).unwrap());
}

#[test]
fn empty_store_snapshot() {
    let s = Store::in_memory().unwrap();
    let mut bytes = Vec::new();
    s.write_snapshot(&mut bytes).unwrap();
    let (r, meta) = Store::restore_snapshot_in_memory(bytes.as_slice()).unwrap();
    assert_eq!((meta.applied_index, meta.revision, meta.compacted_revision), (0, 1, -1));
    assert_same(&s, &r);
}

#[test]
fn damaged_snapshots_are_refused() {
    let mut t = T::new();
    t.grant(1, 5).unwrap();
    t.put_req(PutRequest { lease: 1, ..put("a", "1") }).unwrap();
    t.put("b", "2");
    let mut bytes = Vec::new();
    t.store.write_snapshot(&mut bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Every truncation and every flipped byte fails.
    for n in 0..bytes.len() {
        let err = Store::restore_snapshot_in_memory(&bytes[..n]).unwrap_err();
        assert!(err.is_storage(), "{err}");
    }
    // A failed restore into a file leaves no file behind.
    for n in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join("t.redb");
        let opts = Options { sync: false, ..Options::default() };
        assert!(Store::restore_snapshot(&path, &bytes[..n], opts).is_err());
        assert!(!path.exists());
    }
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        assert!(Store::restore_snapshot_in_memory(bad.as_slice()).is_err(), "flip at {i}");
    }
    // An existing file is never overwritten.
    let path = dir.path().join("exists.redb");
    std::fs::write(&path, b"precious").unwrap();
    let err = Store::restore_snapshot(&path, bytes.as_slice(), Options::default()).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn replacing_a_live_store_adopts_the_snapshot_and_goes_on_equally() {
    let (a, mut rng) = busy_store(0xfeed, 300);
    let mut bytes = Vec::new();
    let meta = a.write_snapshot(&mut bytes).unwrap();
    assert_eq!(Store::verify_snapshot(bytes.as_slice()).unwrap(), meta);

    // A store that applied other things (a member that fell behind on another history
    // prefix is impossible, but a shorter one is the common case) becomes the snapshot.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("behind.redb");
    let (b, _) = busy_store(0xfeed, 120);
    let mut prefix = Vec::new();
    b.write_snapshot(&mut prefix).unwrap();
    let (b, _) = Store::restore_snapshot(&path, prefix.as_slice(), Options::default()).unwrap();
    assert_eq!(b.applied_index(), 120);
    assert_eq!(b.replace_with_snapshot(bytes.as_slice()).unwrap(), meta);
    assert_eq!(b.applied_index(), 300);
    assert_eq!(b.durable_applied_index(), 300);
    assert_same(&a, &b);
    for index in 301..=350 {
        let cmd = random_command(&mut rng, &a);
        assert_eq!(a.apply(index, &cmd).unwrap(), b.apply(index, &cmd).unwrap());
    }
    assert_same(&a, &b);
    // The replacement is on disk.
    drop(b);
    assert_same(&a, &Store::open(&path).unwrap());
}

#[test]
fn a_damaged_snapshot_leaves_a_live_store_untouched_and_fails_verification() {
    let (a, _) = busy_store(0xbad, 80);
    let mut bytes = Vec::new();
    a.write_snapshot(&mut bytes).unwrap();
    let (b, _) = busy_store(0xbad, 40);
    let before = b.hash_kv(0).unwrap();
    for at in [0, 20, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(Store::verify_snapshot(bad.as_slice()).is_err(), "flip at {at}");
        assert!(b.replace_with_snapshot(bad.as_slice()).is_err(), "flip at {at}");
        assert!(b.replace_with_snapshot(&bytes[..at]).is_err(), "cut at {at}");
        assert_eq!(b.applied_index(), 40);
        assert_eq!(b.hash_kv(0).unwrap(), before);
    }
}

/// Offsets in a format-3 stream: the format byte, and the application-metadata record
/// (tag, length, bytes) right after the meta record.
const FORMAT_AT: usize = b"CONCORD-MVCC-SNAP".len();
const APP_META_TAG_AT: usize = FORMAT_AT + 1 + 1 + 8 + 8 + 8;

/// Bytes of one lease-checkpoint record (tag, id, remaining TTL); they come last, right
/// before the end record.
const CHECKPOINT_RECORD_BYTES: usize = 1 + 8 + 8;

/// The stream of a store with `checkpoints` lease checkpoints in format 1 (no
/// application-metadata record, no checkpoint records), checksum recomputed: what a build
/// before both wrote.
fn as_format_1(bytes: &[u8], checkpoints: usize) -> Vec<u8> {
    assert_eq!(bytes[FORMAT_AT], 3);
    assert_eq!(bytes[APP_META_TAG_AT], 5);
    let len = u32::from_be_bytes(bytes[APP_META_TAG_AT + 1..APP_META_TAG_AT + 5].try_into().unwrap()) as usize;
    let end_record = bytes.len() - 5;
    let mut old = bytes[..APP_META_TAG_AT].to_vec();
    old[FORMAT_AT] = 1;
    old.extend_from_slice(&bytes[APP_META_TAG_AT + 5 + len..end_record - checkpoints * CHECKPOINT_RECORD_BYTES]);
    old.push(bytes[end_record]);
    let crc = crc32c::crc32c(&old);
    old.extend_from_slice(&crc.to_be_bytes());
    old
}

#[test]
fn application_metadata_travels_with_the_state_and_comes_back_from_verify_and_restore() {
    let (a, _) = busy_store(0xa99, 150);
    let directory = br#"{"members":{"1":"n1"},"removed":[7]}"#.to_vec();
    let mut bytes = Vec::new();
    let mut seen_at = None;
    let meta = a
        .write_snapshot_with(&mut bytes, |applied| {
            seen_at = Some(applied);
            Ok(directory.clone())
        })
        .unwrap();
    assert_eq!(seen_at, Some(150), "called with the applied index of the cut");
    assert_eq!(meta.applied_index, 150);
    assert_eq!(meta.app_meta.as_deref(), Some(directory.as_slice()));
    assert_eq!(meta.bytes, bytes.len() as u64);

    assert_eq!(Store::verify_snapshot(bytes.as_slice()).unwrap(), meta);
    let (c, cmeta) = Store::restore_snapshot_in_memory(bytes.as_slice()).unwrap();
    assert_eq!(cmeta, meta);
    assert_same(&a, &c);
    let (b, _) = busy_store(0xa99, 60);
    let mut handed = None;
    let replaced = b
        .replace_with_snapshot_with(bytes.as_slice(), |m| {
            // Called before the commit: the store is still at its old index.
            handed = Some((m.clone(), b.applied_index()));
            Ok(())
        })
        .unwrap();
    assert_eq!(replaced, meta);
    assert_eq!(handed, Some((meta.clone(), 60)));
    assert_same(&a, &b);

    // Plain write_snapshot carries empty metadata (Some, not None).
    let mut plain = Vec::new();
    assert_eq!(a.write_snapshot(&mut plain).unwrap().app_meta, Some(Vec::new()));
    assert_eq!(Store::verify_snapshot(plain.as_slice()).unwrap().app_meta, Some(Vec::new()));
}

#[test]
fn the_checksum_covers_the_application_metadata() {
    let (a, _) = busy_store(0xc4c, 30);
    let mut bytes = Vec::new();
    a.write_snapshot_with(&mut bytes, |_| Ok(b"the member directory".to_vec())).unwrap();
    let (b, _) = busy_store(0xc4c, 10);
    let before = b.hash_kv(0).unwrap();
    // Every byte of the record (tag, length, payload), flipped or cut off, is refused.
    for at in APP_META_TAG_AT..APP_META_TAG_AT + 5 + b"the member directory".len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        assert!(Store::verify_snapshot(bad.as_slice()).is_err(), "flip at {at}");
        assert!(b.replace_with_snapshot(bad.as_slice()).is_err(), "flip at {at}");
        assert!(Store::verify_snapshot(&bytes[..at]).is_err(), "cut at {at}");
    }
    // Only the payload bytes, with the length kept: the checksum alone must catch it.
    let mut swapped = bytes.clone();
    swapped[APP_META_TAG_AT + 5..APP_META_TAG_AT + 5 + 3].copy_from_slice(b"THE");
    let err = Store::verify_snapshot(swapped.as_slice()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(b.applied_index(), 10);
    assert_eq!(b.hash_kv(0).unwrap(), before);
}

#[test]
fn errors_of_the_application_abandon_the_write_and_the_replacement() {
    let (a, _) = busy_store(0xe44, 40);
    let mut bytes = Vec::new();
    let err = a.write_snapshot_with(&mut bytes, |_| Err(MvccError::Internal("not consistent".into()))).unwrap_err();
    assert!(err.to_string().contains("not consistent"), "{err}");
    assert!(bytes.is_empty(), "nothing written before the metadata is known");

    a.write_snapshot_with(&mut bytes, |_| Ok(b"x".to_vec())).unwrap();
    let (b, _) = busy_store(0xe44, 20);
    let before = b.hash_kv(0).unwrap();
    let err = b
        .replace_with_snapshot_with(bytes.as_slice(), |_| Err(MvccError::Internal("cannot install".into())))
        .unwrap_err();
    assert!(err.to_string().contains("cannot install"), "{err}");
    assert_eq!(b.applied_index(), 20);
    assert_eq!(b.hash_kv(0).unwrap(), before);
    drop(b);
}

#[test]
fn format_1_streams_are_read_without_application_metadata_and_unknown_formats_refused() {
    let (a, _) = busy_store(0x01d, 70);
    // Old formats had no checkpoints: clear them, so that the old stream holds all of `a`.
    let cleared = (1..=3).map(|id| LeaseCheckpoint { id, remaining_ttl: 0 }).collect();
    a.apply(71, &Command::LeaseCheckpoint(LeaseCheckpointRequest { term: 1, checkpoints: cleared })).unwrap();
    let mut bytes = Vec::new();
    let meta = a.write_snapshot_with(&mut bytes, |_| Ok(b"dir".to_vec())).unwrap();
    let old = as_format_1(&bytes, 0);
    let old_meta = Store::verify_snapshot(old.as_slice()).unwrap();
    assert_eq!(old_meta.app_meta, None);
    assert_eq!(
        (old_meta.applied_index, old_meta.revision, old_meta.compacted_revision, old_meta.bytes),
        (meta.applied_index, meta.revision, meta.compacted_revision, old.len() as u64)
    );
    let (c, _) = Store::restore_snapshot_in_memory(old.as_slice()).unwrap();
    assert_same(&a, &c);
    // Still checksummed.
    let mut bad = old.clone();
    bad[old.len() / 2] ^= 1;
    assert!(Store::verify_snapshot(bad.as_slice()).is_err());

    // Format 2 is format 3 without checkpoint records.
    let mut format_2 = bytes.clone();
    format_2[FORMAT_AT] = 2;
    let crc_at = format_2.len() - 4;
    let crc = crc32c::crc32c(&format_2[..crc_at]);
    format_2[crc_at..].copy_from_slice(&crc.to_be_bytes());
    let (d, _) = Store::restore_snapshot_in_memory(format_2.as_slice()).unwrap();
    assert_same(&a, &d);

    let mut future = bytes.clone();
    future[FORMAT_AT] = 4;
    let err = Store::verify_snapshot(future.as_slice()).unwrap_err();
    assert!(err.to_string().contains("snapshot format 4"), "{err}");
    // A format-2 stream without its metadata record is refused.
    let mut missing = old.clone();
    missing[FORMAT_AT] = 2;
    assert!(Store::verify_snapshot(missing.as_slice()).is_err());
}
