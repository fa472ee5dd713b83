//! Txn: compares of every target and result, branches, nested Txns, reads of own writes,
//! checks, and the rollback of a Txn that fails half-way.

use crate::common::*;
use concord_mvcc::*;

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare, success, failure }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(put(k, v))
}

fn op_get(k: &str) -> RequestOp {
    RequestOp::Range(range(k, ""))
}

/// Does `c` hold? (Runs a Txn whose branches only read.)
fn holds(t: &mut T, c: Compare) -> bool {
    let before = t.rev();
    let r = t.txn(txn(vec![c], vec![], vec![])).unwrap();
    assert_eq!(t.rev(), before);
    r.succeeded
}

#[test]
fn compares_every_target_and_result() {
    use CompareResult::*;
    let mut t = T::new();
    t.grant(5, 10).unwrap();
    t.put("x", "filler"); // rev 2
    t.put_req(PutRequest { key: b"k".to_vec(), value: b"m".to_vec(), lease: 5, ..PutRequest::default() }).unwrap(); // rev 3: create 3, mod 3, version 1
    t.put_req(PutRequest { key: b"k".to_vec(), value: b"m".to_vec(), lease: 5, ..PutRequest::default() }).unwrap(); // rev 4: create 3, mod 4, version 2

    // (compare builder, the key's actual value as i64 or via bytes)
    type Mk = fn(CompareResult, i64) -> Compare;
    let ints: [(Mk, i64); 4] = [
        (|r, v| Compare::version("k", r, v), 2),
        (|r, v| Compare::create_revision("k", r, v), 3),
        (|r, v| Compare::mod_revision("k", r, v), 4),
        (|r, v| Compare::lease("k", r, v), 5),
    ];
    for (mk, actual) in ints {
        for (result, below, equal, above) in [
            (Equal, false, true, false),
            (NotEqual, true, false, true),
            (Greater, true, false, false),
            (Less, false, false, true),
        ] {
            // `below`: the compare against actual-1 (the key's value is greater).
            assert_eq!(holds(&mut t, mk(result, actual - 1)), below, "{result:?} {actual}");
            assert_eq!(holds(&mut t, mk(result, actual)), equal, "{result:?} {actual}");
            assert_eq!(holds(&mut t, mk(result, actual + 1)), above, "{result:?} {actual}");
        }
    }
    for (result, l, m, n) in [
        (Equal, false, true, false),
        (NotEqual, true, false, true),
        (Greater, true, false, false),
        (Less, false, false, true),
    ] {
        assert_eq!(holds(&mut t, Compare::value("k", result, "l")), l);
        assert_eq!(holds(&mut t, Compare::value("k", result, "m")), m);
        assert_eq!(holds(&mut t, Compare::value("k", result, "n")), n);
    }
}

#[test]
fn compares_on_missing_keys() {
    use CompareResult::*;
    let mut t = T::new();
    assert!(holds(&mut t, Compare::version("nope", Equal, 0)));
    assert!(holds(&mut t, Compare::create_revision("nope", Equal, 0)));
    assert!(holds(&mut t, Compare::mod_revision("nope", Less, 1)));
    assert!(holds(&mut t, Compare::lease("nope", Equal, 0)));
    // A value compare on a missing key always fails, even "not equal".
    assert!(!holds(&mut t, Compare::value("nope", Equal, "")));
    assert!(!holds(&mut t, Compare::value("nope", NotEqual, "x")));
}

#[test]
fn mismatched_target_union_compares_as_zero() {
    let mut t = T::new();
    t.put("k", "v");
    let mut c = Compare::version("k", CompareResult::Equal, 1);
    c.target = CompareTarget::Mod; // union still says Version(1): compared as 0
    assert!(holds(&mut t, Compare { result: CompareResult::Greater, ..c.clone() }));
    c.target_union = None;
    assert!(holds(&mut t, Compare { result: CompareResult::Greater, ..c }));
    let mut c = Compare::version("k", CompareResult::Equal, 1);
    c.target = CompareTarget::Value; // compared with the empty value
    assert!(holds(&mut t, Compare { result: CompareResult::Greater, ..c }));
}

#[test]
fn compares_over_a_range() {
    use CompareResult::*;
    let mut t = T::new();
    for k in ["p/a", "p/b", "p/c"] {
        t.put(k, "v");
    }
    let end = prefix_end(b"p/");
    assert!(holds(&mut t, Compare::version("p/", Equal, 1).with_range_end(end.clone())));
    t.put("p/b", "w");
    assert!(!holds(&mut t, Compare::version("p/", Equal, 1).with_range_end(end.clone())));
    assert!(holds(&mut t, Compare::version("p/", Greater, 0).with_range_end(end.clone())));
    assert!(!holds(&mut t, Compare::value("p/", Equal, "v").with_range_end(end.clone())));
    // An empty range compares a zero KeyValue.
    assert!(holds(&mut t, Compare::create_revision("q/", Equal, 0).with_range_end(prefix_end(b"q/"))));
    assert!(!holds(&mut t, Compare::value("q/", Equal, "").with_range_end(prefix_end(b"q/"))));
    // All compares must hold.
    let r =
        t.txn(txn(vec![Compare::version("p/a", Equal, 1), Compare::version("p/b", Equal, 1)], vec![], vec![])).unwrap();
    assert!(!r.succeeded);
}

#[test]
fn branches_and_one_revision_for_all_writes() {
    use CompareResult::*;
    let mut t = T::new();
    let req = txn(
        vec![Compare::create_revision("lock", Equal, 0)],
        vec![op_put("lock", "me"), op_put("other", "x"), op_get("lock")],
        vec![op_get("lock")],
    );
    let a = t.apply(Command::Txn(req.clone()));
    let Ok(Response::Txn(r)) = a.result else { panic!("{a:?}") };
    assert!(r.succeeded);
    assert_eq!(r.revision, 2);
    assert_eq!(t.rev(), 2);
    assert_eq!(r.responses.len(), 3);
    let ResponseOp::Put(p) = &r.responses[0] else { panic!() };
    assert_eq!(p.revision, 2);
    // The read sees the Txn's own write and the revision it will have.
    let ResponseOp::Range(g) = &r.responses[2] else { panic!() };
    assert_eq!(g.kvs, vec![kv("lock", "me", 2, 2, 1, 0)]);
    assert_eq!(g.revision, 2);
    // Events: both writes at revision 2, in op order.
    assert_eq!(keys(&a.events.iter().map(|e| e.kv.clone()).collect::<Vec<_>>()), vec!["lock", "other"]);
    assert!(a.events.iter().all(|e| e.kv.mod_revision == 2));

    // Second time: the failure branch, read-only, revision unchanged.
    let r = t.txn(req).unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 2);
    let ResponseOp::Range(g) = &r.responses[0] else { panic!() };
    assert_eq!(g.kvs[0].value, b"me");
    assert_eq!(t.rev(), 2);
}

#[test]
fn reads_see_earlier_writes_of_the_same_txn() {
    let mut t = T::new();
    t.put("a", "old");
    let r = t
        .txn(txn(
            vec![],
            vec![
                op_get("a"),
                op_put("a", "new"),
                op_get("a"),
                RequestOp::Range(RangeRequest { revision: 2, ..range("a", "") }),
                RequestOp::DeleteRange(DeleteRangeRequest { prev_kv: true, ..del("b", "\0") }),
            ],
            vec![],
        ))
        .unwrap();
    let vals: Vec<_> = r.responses[..4]
        .iter()
        .map(|op| match op {
            ResponseOp::Range(g) => (g.kvs[0].value.clone(), g.kvs[0].version, g.revision),
            ResponseOp::Put(p) => (b"put".to_vec(), 0, p.revision),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        vals,
        vec![
            (b"old".to_vec(), 1, 2),
            (b"put".to_vec(), 0, 3),
            (b"new".to_vec(), 2, 3),
            (b"old".to_vec(), 1, 3), // an explicit older revision does not see the write
        ]
    );
    let ResponseOp::DeleteRange(d) = &r.responses[4] else { panic!() };
    assert_eq!((d.deleted, d.revision), (0, 3));
}

#[test]
fn deletes_and_puts_in_one_txn_use_sub_revisions() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("b", "1");
    let a = t.apply(Command::Txn(txn(
        vec![],
        vec![RequestOp::DeleteRange(del("a", "")), op_put("c", "1"), op_get("a")],
        vec![],
    )));
    let Ok(Response::Txn(r)) = a.result else { panic!() };
    assert_eq!(r.revision, 4);
    let ResponseOp::Range(g) = &r.responses[2] else { panic!() };
    assert_eq!(g.count, 0);
    assert_eq!(a.events.iter().map(|e| e.kind).collect::<Vec<_>>(), vec![EventKind::Delete, EventKind::Put]);
    // History: at 3, a exists; at 4, a is gone and c is there.
    let mut r = range("a", "d");
    r.revision = 3;
    assert_eq!(keys(&t.range(r.clone()).unwrap().kvs), vec!["a", "b"]);
    r.revision = 4;
    assert_eq!(keys(&t.range(r).unwrap().kvs), vec!["b", "c"]);
}

#[test]
fn nested_txns() {
    use CompareResult::*;
    let mut t = T::new();
    t.put("flag", "on");
    let inner_ok =
        txn(vec![Compare::value("flag", Equal, "on")], vec![op_put("inner", "yes")], vec![op_put("inner", "no")]);
    let inner_fail = txn(
        vec![Compare::value("flag", Equal, "off")],
        vec![op_put("inner2", "yes")],
        vec![op_put("inner2", "no"), op_get("inner")],
    );
    let r = t
        .txn(txn(vec![], vec![op_put("outer", "1"), RequestOp::Txn(inner_ok), RequestOp::Txn(inner_fail)], vec![]))
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    let ResponseOp::Txn(a) = &r.responses[1] else { panic!() };
    assert!(a.succeeded);
    let ResponseOp::Txn(b) = &r.responses[2] else { panic!() };
    assert!(!b.succeeded);
    let ResponseOp::Range(g) = &b.responses[1] else { panic!() };
    assert_eq!(g.kvs[0].value, b"yes");
    assert_eq!(t.get("inner").unwrap().value, b"yes");
    assert_eq!(t.get("inner2").unwrap().value, b"no");
    for k in ["outer", "inner", "inner2"] {
        assert_eq!(t.get(k).unwrap().mod_revision, 3);
    }
}

#[test]
fn nested_compares_see_the_state_before_the_txn() {
    // etcd evaluates every compare on the path before running any op.
    use CompareResult::*;
    let mut t = T::new();
    let nested =
        txn(vec![Compare::version("x", Equal, 0)], vec![op_put("seen", "before")], vec![op_put("seen", "after")]);
    t.txn(txn(vec![], vec![op_put("x", "1"), RequestOp::Txn(nested)], vec![])).unwrap();
    assert_eq!(t.get("seen").unwrap().value, b"before");
}

#[test]
fn failed_checks_apply_nothing() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("a", "2"); // 3
    t.compact(3).unwrap();
    let hash = t.store.hash_kv(0).unwrap();

    let mut leased = put("b", "1");
    leased.lease = 99;
    let cases = [
        (vec![op_put("z", "1"), RequestOp::Put(leased.clone())], MvccError::LeaseNotFound),
        (
            vec![
                op_put("z", "1"),
                RequestOp::Put(PutRequest { key: b"missing".to_vec(), ignore_value: true, ..PutRequest::default() }),
            ],
            MvccError::KeyNotFound,
        ),
        (
            vec![op_put("z", "1"), RequestOp::Range(RangeRequest { revision: 9, ..range("a", "") })],
            MvccError::FutureRevision,
        ),
        (
            vec![op_put("z", "1"), RequestOp::Range(RangeRequest { revision: 2, ..range("a", "") })],
            MvccError::Compacted,
        ),
        (vec![op_put("z", "1"), op_put("", "1")], MvccError::EmptyKey),
        // Put checks come before range checks, whatever the op order.
        (
            vec![RequestOp::Range(RangeRequest { revision: 9, ..range("a", "") }), RequestOp::Put(leased)],
            MvccError::LeaseNotFound,
        ),
    ];
    for (ops, err) in cases {
        let a = t.apply(Command::Txn(txn(vec![], ops, vec![])));
        assert_eq!(a.result, Err(err));
        assert!(a.events.is_empty());
        assert_eq!(t.rev(), 3);
        assert_eq!(t.get("z"), None);
        assert_eq!(t.store.hash_kv(0).unwrap(), hash);
    }
    // Checks only look at the branch that runs.
    let r = t
        .txn(txn(
            vec![Compare::version("a", CompareResult::Equal, 2)],
            vec![op_put("z", "1")],
            vec![RequestOp::Range(RangeRequest { revision: 9, ..range("a", "") })],
        ))
        .unwrap();
    assert!(r.succeeded);
}

#[test]
fn a_txn_failing_half_way_is_rolled_back() {
    // etcd's interval check does not see that a delete of ["a", "\0") covers "b", so this
    // Txn passes validation and the Put's check (b exists before the Txn), then fails when
    // the Put runs after the delete. The whole Txn must vanish, and the batch go on.
    let mut t = T::new();
    t.grant(1, 10).unwrap();
    let mut leased = put("b", "1");
    leased.lease = 1;
    t.put_req(leased).unwrap();
    t.put("c", "1");
    let before = (t.store.hash_kv(0).unwrap(), t.store.leases().unwrap(), t.store.stats().unwrap());
    let bad = txn(
        vec![],
        vec![
            op_put("new", "1"),
            RequestOp::DeleteRange(del("a", "\0")),
            RequestOp::Put(PutRequest { key: b"b".to_vec(), ignore_value: true, ..PutRequest::default() }),
        ],
        vec![],
    );
    validate_txn(&bad, DEFAULT_MAX_TXN_OPS).unwrap();
    let out = t.store.apply_batch(&[(4, Command::Txn(bad)), (5, Command::Put(put("after", "1")))]).unwrap();
    t.index = 5;
    assert_eq!(out[0].result, Err(MvccError::KeyNotFound));
    assert!(out[0].events.is_empty());
    assert_eq!(out[0].revision, 3);
    let Ok(Response::Put(p)) = &out[1].result else { panic!() };
    assert_eq!(p.revision, 4);
    assert_eq!(out[1].events[0].kv.mod_revision, 4);
    assert_eq!(t.get("b").unwrap().value, b"1");
    assert_eq!(t.get("new"), None);
    assert_eq!(t.store.leases().unwrap(), before.1);
    let stats = t.store.stats().unwrap();
    assert_eq!((stats.keys, stats.versions), (before.2.keys + 1, before.2.versions + 1));
    // Same history as a store that never saw the bad Txn.
    let mut u = T::new();
    u.grant(1, 10).unwrap();
    let mut leased = put("b", "1");
    leased.lease = 1;
    u.put_req(leased).unwrap();
    u.put("c", "1");
    assert_eq!(u.store.hash_kv(0).unwrap(), before.0);
    u.put("after", "1");
    assert_eq!(u.store.hash_kv(0).unwrap(), t.store.hash_kv(0).unwrap());
}

/// Read-only Txns are served from a snapshot (`Store::txn_read`), not through the log;
/// `T::txn` asserts both answers are the same, here for Ranges at past, compacted and
/// future revisions, with limits, counts and sorting, on either branch.
#[test]
fn read_only_txns_from_a_snapshot_answer_as_the_log() {
    let mut t = T::new();
    for i in 0..6 {
        t.put(&format!("k{i}"), &format!("v{i}"));
    }
    t.del("k1", "");
    t.put("k2", "again");
    t.apply(Command::Compact(CompactionRequest { revision: 4, physical: true }));
    let at = |revision: i64| {
        RequestOp::Range(RangeRequest { key: "k".into(), range_end: "l".into(), revision, ..Default::default() })
    };
    let sorted = RequestOp::Range(RangeRequest {
        key: "k".into(),
        range_end: "l".into(),
        limit: 2,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        ..Default::default()
    });
    let counted = RequestOp::Range(RangeRequest {
        key: "k".into(),
        range_end: "l".into(),
        count_only: true,
        ..Default::default()
    });
    let exists = Compare::version("k2", CompareResult::Greater, 0);
    let missing = Compare::version("k1", CompareResult::Greater, 0);
    let current = t.rev();
    assert!(is_read_only_txn(&txn(vec![exists.clone()], vec![sorted.clone()], vec![at(5)])));
    assert!(!is_read_only_txn(&txn(vec![], vec![op_get("a")], vec![op_put("a", "b")])));
    assert!(t.txn(txn(vec![exists.clone()], vec![sorted.clone(), counted.clone(), at(5)], vec![])).unwrap().succeeded);
    assert!(!t.txn(txn(vec![missing.clone()], vec![at(0)], vec![at(current), counted])).unwrap().succeeded);
    assert_eq!(t.txn(txn(vec![], vec![at(2)], vec![])), Err(MvccError::Compacted));
    assert_eq!(t.txn(txn(vec![], vec![at(current + 1)], vec![])), Err(MvccError::FutureRevision));
    // Only the chosen branch is checked, as through the log.
    assert!(!t.txn(txn(vec![missing], vec![at(2)], vec![at(5)])).unwrap().succeeded);
    assert_eq!(t.rev(), current, "read-only Txns write nothing");
}

#[test]
fn serializable_txns_are_those_with_only_serializable_ranges() {
    let serializable =
        |key: &str| RequestOp::Range(RangeRequest { key: key.into(), serializable: true, ..Default::default() });
    assert!(is_serializable_txn(&txn(vec![], vec![serializable("a")], vec![serializable("b")])));
    assert!(!is_serializable_txn(&txn(vec![], vec![serializable("a")], vec![op_get("b")])));
    // A compare-only Txn is a check: concord answers it linearizably (etcd would not).
    assert!(!is_serializable_txn(&txn(vec![Compare::version("a", CompareResult::Equal, 0)], vec![], vec![])));
}
