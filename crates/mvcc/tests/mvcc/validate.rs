//! validate_txn and friends: etcd's gRPC-layer checks.

use crate::common::*;
use concord_mvcc::*;

fn p(k: &str) -> RequestOp {
    RequestOp::Put(put(k, "v"))
}

fn d(k: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(del(k, end))
}

fn t(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare: vec![], success, failure }
}

fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp::Txn(t(success, failure))
}

#[test]
fn too_many_ops() {
    let ops = |n: usize| (0..n).map(|i| p(&format!("k{i}"))).collect::<Vec<_>>();
    assert!(validate_txn(&t(ops(4), vec![]), 4).is_ok());
    assert_eq!(validate_txn(&t(ops(5), vec![]), 4), Err(MvccError::TooManyOps));
    assert_eq!(validate_txn(&t(vec![], ops(5)), 4), Err(MvccError::TooManyOps));
    let mut many_compares = t(vec![], vec![]);
    many_compares.compare = (0..5).map(|i| Compare::version(format!("k{i}"), CompareResult::Equal, 0)).collect();
    assert_eq!(validate_txn(&many_compares, 4), Err(MvccError::TooManyOps));
    // A nested Txn gets the budget its parent left: 4 - 2 = 2.
    let two = t(vec![p("a"), nested(ops(2), vec![])], vec![]);
    assert!(validate_txn(&two, 4).is_ok());
    let three = t(vec![p("a"), nested(ops(3), vec![])], vec![]);
    assert_eq!(validate_txn(&three, 4), Err(MvccError::TooManyOps));
    assert!(validate_txn(&t(ops(128), vec![]), DEFAULT_MAX_TXN_OPS).is_ok());
}

#[test]
fn request_shapes() {
    let mut bad = t(vec![], vec![]);
    bad.compare = vec![Compare::version("", CompareResult::Equal, 0)];
    assert_eq!(validate_txn(&bad, 10), Err(MvccError::EmptyKey));
    assert_eq!(validate_txn(&t(vec![p("")], vec![]), 10), Err(MvccError::EmptyKey));
    assert_eq!(validate_txn(&t(vec![RequestOp::Range(range("", "\0"))], vec![]), 10), Err(MvccError::EmptyKey));
    let ignore = RequestOp::Put(PutRequest { ignore_value: true, ..put("a", "value") });
    assert_eq!(validate_txn(&t(vec![], vec![ignore]), 10), Err(MvccError::ValueProvided));
    let ignore = RequestOp::Put(PutRequest { ignore_lease: true, lease: 3, ..put("a", "") });
    assert_eq!(validate_txn(&t(vec![nested(vec![ignore], vec![])], vec![]), 10), Err(MvccError::LeaseProvided));
    assert_eq!(validate_put(&put("", "x")), Err(MvccError::EmptyKey));
    assert_eq!(validate_delete_range(&del("", "")), Err(MvccError::EmptyKey));
    assert_eq!(validate_range(&range("", "")), Err(MvccError::EmptyKey));
    assert!(validate_range(&range("a", "")).is_ok());
}

#[test]
fn duplicate_keys() {
    let dup = Err(MvccError::DuplicateKey);
    let ok = Ok(());
    let cases: Vec<(TxnRequest, Result<(), MvccError>)> = vec![
        (t(vec![p("a"), p("a")], vec![]), dup.clone()),
        (t(vec![p("a")], vec![p("a")]), ok.clone()),
        (t(vec![p("a"), d("a", "")], vec![]), dup.clone()),
        (t(vec![d("a", "c"), p("b")], vec![]), dup.clone()),
        (t(vec![d("a", "c"), p("c")], vec![]), ok.clone()),
        (t(vec![d("a", "b"), d("a", "c")], vec![]), ok.clone()),
        // etcd reads "\0" as the literal end of [key, "\0"): no overlap seen.
        (t(vec![d("a", "\0"), p("b")], vec![]), ok.clone()),
        // Nested: a put in both branches of one nested Txn is fine...
        (t(vec![nested(vec![p("a")], vec![p("a")])], vec![]), ok.clone()),
        // ...but not next to the same put outside.
        (t(vec![p("a"), nested(vec![p("a")], vec![])], vec![]), dup.clone()),
        (t(vec![p("a"), nested(vec![], vec![p("a")])], vec![]), dup.clone()),
        // Two nested Txns putting one key.
        (t(vec![nested(vec![p("a")], vec![]), nested(vec![p("a")], vec![])], vec![]), dup.clone()),
        (t(vec![nested(vec![p("a")], vec![]), nested(vec![], vec![p("a")])], vec![]), dup.clone()),
        // A delete here and a put in a nested Txn, either way round.
        (t(vec![d("a", "z"), nested(vec![p("m")], vec![])], vec![]), dup.clone()),
        (t(vec![p("m"), nested(vec![d("a", "z")], vec![])], vec![]), dup.clone()),
        // etcd misses a nested delete that comes after a sibling's put.
        (t(vec![nested(vec![p("m")], vec![]), nested(vec![d("a", "z")], vec![])], vec![]), ok.clone()),
        // Deep nesting.
        (t(vec![p("k"), nested(vec![nested(vec![p("k")], vec![])], vec![])], vec![]), dup.clone()),
        // The failure branch is checked on its own.
        (t(vec![], vec![p("x"), p("x")]), dup),
        (t(vec![p("x")], vec![p("x"), d("y", "")]), ok),
    ];
    for (n, (req, want)) in cases.into_iter().enumerate() {
        assert_eq!(validate_txn(&req, 128), want, "case {n}");
    }
}
