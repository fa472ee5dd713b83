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
