//! Compaction: reads below fail, the newest version at the compaction point stays,
//! tombstones and superseded versions go.

use crate::common::*;
use concord_mvcc::*;

fn all_at(t: &T, rev: i64) -> Result<RangeResponse, MvccError> {
    t.range(RangeRequest { revision: rev, ..range("\0", "\0") })
}

#[test]
fn reads_at_and_above_the_compaction_point_are_unchanged() {
    let mut t = T::new();
    for i in 0..5 {
        t.put("a", &format!("v{i}")); // 2..=6
    }
    t.put("b", "1"); // 7
    t.del("b", ""); // 8
    t.put("c", "1"); // 9
    t.del("c", ""); // 10
    t.put("c", "2"); // 11
    let before: Vec<_> = (1..=11).map(|r| all_at(&t, r).unwrap()).collect();

    t.compact(8).unwrap();
    assert_eq!(t.store.compacted_revision(), 8);
    for r in 1..8 {
        assert_eq!(all_at(&t, r), Err(MvccError::Compacted), "rev {r}");
    }
    for r in 8..=11 {
        assert_eq!(all_at(&t, r).unwrap(), before[r as usize - 1], "rev {r}");
    }
    // Kept: a@6 (newest <= 8), c@9, c@10 (tombstone above 8), c@11. Dropped: a@2..5, b@7,
    // the tombstone b@8.
    assert_eq!(t.store.stats().unwrap().versions, 4);
    let events = t.store.events_since(8, usize::MAX).unwrap();
    assert_eq!(events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(), vec![9, 10, 11]);
    assert_eq!(t.store.events_since(7, 10), Err(MvccError::Compacted));
    // The revision does not move; the header answers the current one.
    assert_eq!(t.rev(), 11);
}

#[test]
fn compaction_errors() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    assert_eq!(t.compact(4), Err(MvccError::FutureRevision));
    assert_eq!(t.compact(2), Ok(Response::Compact(CompactionResponse { revision: 3 })));
    assert_eq!(t.compact(2), Err(MvccError::Compacted));
    assert_eq!(t.compact(1), Err(MvccError::Compacted));
    assert_eq!(t.compact(3), Ok(Response::Compact(CompactionResponse { revision: 3 })));
    assert_eq!(t.store.compacted_revision(), 3);
    assert_eq!(t.store.applied_index(), 7);
    // Hash at or below the compacted revision is refused too.
    assert_eq!(t.store.hash_kv(3), Err(MvccError::Compacted));
    assert_eq!(t.store.hash_kv(4), Err(MvccError::FutureRevision));
    assert!(t.store.hash_kv(0).is_ok());
}

#[test]
fn repeated_compactions_keep_exactly_one_version_per_live_key() {
    let mut t = T::new();
    for round in 0..5 {
        for k in ["a", "b", "c"] {
            t.put(k, &format!("{round}"));
        }
        t.del("b", "");
        let rev = t.rev();
        let before = all_at(&t, rev).unwrap();
        t.compact(rev).unwrap();
        assert_eq!(all_at(&t, rev).unwrap(), before);
        let stats = t.store.stats().unwrap();
        assert_eq!((stats.keys, stats.versions), (2, 2), "round {round}");
    }
}

#[test]
fn hash_is_stable_across_compaction_for_kept_history() {
    let mut t = T::new();
    for i in 0..10 {
        t.put(&format!("k{}", i % 3), "v");
    }
    let h11 = t.store.hash_kv(11).unwrap();
    t.compact(5).unwrap();
    let h = t.store.hash_kv(11).unwrap();
    assert_eq!(h.compact_revision, 5);
    assert_eq!(h.hash_revision, 11);
    assert_ne!(h.hash, h11.hash, "compaction removed versions");
    // Two stores that compacted at the same point agree.
    let mut u = T::new();
    for i in 0..10 {
        u.put(&format!("k{}", i % 3), "v");
    }
    u.compact(5).unwrap();
    assert_eq!(u.store.hash_kv(11).unwrap(), h);
    assert_eq!(u.store.hash_kv(0).unwrap(), h);
}

#[test]
fn txn_reads_below_compaction_fail() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("a", "2");
    t.compact(3).unwrap();
    let r = t.txn(TxnRequest {
        success: vec![RequestOp::Range(RangeRequest { revision: 2, ..range("a", "") })],
        ..TxnRequest::default()
    });
    assert_eq!(r, Err(MvccError::Compacted));
}
