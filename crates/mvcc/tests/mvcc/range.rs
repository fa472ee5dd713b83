//! Range: key range forms, limit/more/count, sort, filters, past revisions.

use crate::common::*;
use concord_mvcc::*;

/// a=2 ab=3 abc=4 b=5 c=6 ÿ=7 then a rewritten at 8 (version 2), b deleted at 9.
fn fixture() -> T {
    let mut t = T::new();
    for (k, v) in [("a", "5"), ("ab", "4"), ("abc", "3"), ("b", "2"), ("c", "1")] {
        t.put(k, v);
    }
    t.put_req(PutRequest { key: vec![0xff], value: b"0".to_vec(), ..PutRequest::default() }).unwrap();
    t.put("a", "6");
    t.del("b", "");
    assert_eq!(t.rev(), 9);
    t
}

fn req(key: &[u8], end: &[u8]) -> RangeRequest {
    RangeRequest { key: key.to_vec(), range_end: end.to_vec(), ..RangeRequest::default() }
}

#[test]
fn range_end_forms() {
    let t = fixture();
    assert_eq!(keys(&t.range(range("ab", "")).unwrap().kvs), vec!["ab"]);
    assert_eq!(t.range(range("b", "")).unwrap().kvs, vec![]);
    assert_eq!(t.range(range("zz", "")).unwrap().count, 0);
    // "\0": every key >= key.
    let r = t.range(req(b"ab", b"\0")).unwrap();
    assert_eq!(r.kvs.len(), 4);
    assert_eq!(r.kvs.last().unwrap().key, vec![0xff]);
    // Prefix.
    let r = t.range(req(b"a", &prefix_end(b"a"))).unwrap();
    assert_eq!(keys(&r.kvs), vec!["a", "ab", "abc"]);
    // Everything.
    assert_eq!(t.range(req(b"\0", b"\0")).unwrap().count, 5);
    // [key, end)
    assert_eq!(keys(&t.range(range("ab", "c")).unwrap().kvs), vec!["ab", "abc"]);
    // end <= key: empty.
    assert_eq!(t.range(range("c", "a")).unwrap().count, 0);
    assert_eq!(t.range(range("c", "c")).unwrap().count, 0);
    // 0xff prefix end is "\0".
    let r = t.range(req(&[0xff], &prefix_end(&[0xff]))).unwrap();
    assert_eq!(r.count, 1);
}

#[test]
fn header_revision_is_current() {
    let t = fixture();
    let mut r = range("a", "");
    r.revision = 3;
    assert_eq!(t.range(r).unwrap().revision, 9);
}

#[test]
fn limit_more_count() {
    let t = fixture();
    let mut r = req(b"\0", b"\0");
    r.limit = 2;
    let resp = t.range(r.clone()).unwrap();
    assert_eq!(keys(&resp.kvs), vec!["a", "ab"]);
    assert!(resp.more);
    assert_eq!(resp.count, 5);
    r.limit = 5;
    let resp = t.range(r.clone()).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (5, false, 5));
    r.limit = 4;
    assert!(t.range(r.clone()).unwrap().more);
    r.limit = 100;
    assert!(!t.range(r).unwrap().more);
}

#[test]
fn count_only_and_keys_only() {
    let t = fixture();
    let mut r = req(b"\0", b"\0");
    r.count_only = true;
    r.limit = 1;
    let resp = t.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 5, false));
    let mut r = req(b"a", &prefix_end(b"a"));
    r.keys_only = true;
    let resp = t.range(r).unwrap();
    assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(resp.kvs[0].mod_revision, 8);
}

#[test]
fn sorting() {
    let t = fixture();
    let base = req(b"\0", b"\0");
    let sorted = |target, order, limit| {
        let mut r = base.clone();
        r.sort_target = target;
        r.sort_order = order;
        r.limit = limit;
        t.range(r).unwrap()
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(keys(&sorted(Key, Descend, 0).kvs), vec!["\u{FFFD}", "c", "abc", "ab", "a"]);
    let r = sorted(Key, Descend, 2);
    assert_eq!(keys(&r.kvs), vec!["\u{FFFD}", "c"]);
    assert!(r.more);
    assert_eq!(r.count, 5);
    assert_eq!(keys(&sorted(Key, Ascend, 2).kvs), vec!["a", "ab"]);
    // Value: a=6 ab=4 abc=3 c=1 ÿ=0.
    assert_eq!(keys(&sorted(Value, Ascend, 0).kvs), vec!["\u{FFFD}", "c", "abc", "ab", "a"]);
    // A non-key target with order None sorts ascending.
    assert_eq!(keys(&sorted(Value, None, 2).kvs), vec!["\u{FFFD}", "c"]);
    // Mod: ab=3 abc=4 c=6 ÿ=7 a=8.
    let r = sorted(Mod, Descend, 2);
    assert_eq!(keys(&r.kvs), vec!["a", "\u{FFFD}"]);
    assert!(r.more);
    // Create: a=2 ab=3 abc=4 c=6 ÿ=7.
    assert_eq!(keys(&sorted(Create, Descend, 1).kvs), vec!["\u{FFFD}"]);
    assert_eq!(keys(&sorted(Create, Ascend, 1).kvs), vec!["a"]);
    // Version: a=2, others 1; ties keep key order, in both directions.
    assert_eq!(keys(&sorted(Version, Descend, 0).kvs), vec!["a", "ab", "abc", "c", "\u{FFFD}"]);
    assert_eq!(keys(&sorted(Version, Ascend, 0).kvs), vec!["ab", "abc", "c", "\u{FFFD}", "a"]);
}

#[test]
fn min_max_filters() {
    let t = fixture();
    let mut r = req(b"\0", b"\0");
    r.min_mod_revision = 4;
    r.max_mod_revision = 7;
    let resp = t.range(r.clone()).unwrap();
    assert_eq!(keys(&resp.kvs), vec!["abc", "c", "\u{FFFD}"]);
    assert_eq!(resp.count, 5, "count ignores filters");
    r.limit = 2;
    let resp = t.range(r.clone()).unwrap();
    assert_eq!(keys(&resp.kvs), vec!["abc", "c"]);
    assert!(resp.more);
    r.limit = 3;
    assert!(!t.range(r).unwrap().more);

    let mut r = req(b"\0", b"\0");
    r.min_create_revision = 3;
    r.max_create_revision = 6;
    assert_eq!(keys(&t.range(r.clone()).unwrap().kvs), vec!["ab", "abc", "c"]);
    r.sort_order = SortOrder::Descend;
    r.limit = 1;
    let resp = t.range(r).unwrap();
    assert_eq!(keys(&resp.kvs), vec!["c"]);
    assert!(resp.more);
    // Filters only on one side.
    let mut r = req(b"\0", b"\0");
    r.max_create_revision = 2;
    assert_eq!(keys(&t.range(r).unwrap().kvs), vec!["a"]);
}

#[test]
fn past_revisions() {
    let t = fixture();
    let at = |key: &[u8], end: &[u8], rev: i64| {
        let mut r = req(key, end);
        r.revision = rev;
        t.range(r)
    };
    // At 7: a=5 (version 1), b still there, no deletion yet.
    let r = at(b"\0", b"\0", 7).unwrap();
    assert_eq!(keys(&r.kvs), vec!["a", "ab", "abc", "b", "c", "\u{FFFD}"]);
    assert_eq!(r.count, 6);
    assert_eq!(r.kvs[0], kv("a", "5", 2, 2, 1, 0));
    // At 3: only a and ab.
    assert_eq!(keys(&at(b"\0", b"\0", 3).unwrap().kvs), vec!["a", "ab"]);
    assert_eq!(at(b"b", b"", 5).unwrap().kvs[0].value, b"2");
    assert_eq!(at(b"b", b"", 9).unwrap().count, 0);
    assert_eq!(at(b"a", b"", 1).unwrap().count, 0);
    // Reverse walk at a past revision, with limit.
    let mut r = req(b"a", b"c");
    r.revision = 8;
    r.sort_order = SortOrder::Descend;
    r.limit = 2;
    let resp = t.range(r).unwrap();
    assert_eq!(keys(&resp.kvs), vec!["b", "abc"]);
    assert!(resp.more);
    assert_eq!(resp.count, 4);
    // Limit at a past revision.
    let mut r = req(b"\0", b"\0");
    r.revision = 6;
    r.limit = 3;
    let resp = t.range(r).unwrap();
    assert_eq!((keys(&resp.kvs), resp.more, resp.count), (vec!["a".to_string(), "ab".into(), "abc".into()], true, 5));
    // Future.
    assert_eq!(at(b"a", b"", 10), Err(MvccError::FutureRevision));
    // Negative = current.
    assert_eq!(at(b"a", b"", -3).unwrap().kvs[0].value, b"6");
}

#[test]
fn limit_does_not_need_the_whole_range() {
    // Many keys; the response holds only `limit` of them, and count is exact.
    let mut t = T::new();
    let batch: Vec<(u64, Command)> =
        (0..2000u64).map(|i| (i + 1, Command::Put(put(&format!("k{i:05}"), "v")))).collect();
    t.store.apply_batch(&batch).unwrap();
    t.index = 2000;
    let mut r = range("k", "l");
    r.limit = 3;
    let resp = t.range(r.clone()).unwrap();
    assert_eq!(keys(&resp.kvs), vec!["k00000", "k00001", "k00002"]);
    assert_eq!((resp.count, resp.more), (2000, true));
    r.revision = 1000;
    let resp = t.range(r).unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (3, 999, true));
}
