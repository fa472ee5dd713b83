//! Leases: grant, attach, detach, revoke.

use crate::common::*;
use concord_mvcc::*;

fn leased(k: &str, lease: i64) -> PutRequest {
    PutRequest { lease, ..put(k, "v") }
}

#[test]
fn grant_rules() {
    let mut t = T::new();
    assert_eq!(t.grant(1, 30), Ok(Response::LeaseGrant(LeaseGrantResponse { revision: 1, id: 1, ttl: 30 })));
    assert_eq!(t.grant(1, 30), Err(MvccError::LeaseExists));
    assert_eq!(t.grant(0, 30), Err(MvccError::LeaseNotFound));
    assert_eq!(t.grant(2, MAX_LEASE_TTL + 1), Err(MvccError::LeaseTtlTooLarge));
    t.grant(-4, MAX_LEASE_TTL).unwrap();
    assert_eq!(t.rev(), 1, "grants do not move the revision");
    let ids: Vec<_> = t.store.leases().unwrap().iter().map(|l| (l.id, l.ttl)).collect();
    assert_eq!(ids, vec![(-4, MAX_LEASE_TTL), (1, 30)]);
    assert_eq!(t.store.lease(1).unwrap().unwrap().keys, Vec::<Vec<u8>>::new());
    assert_eq!(t.store.lease(2).unwrap(), None);
}

#[test]
fn attach_move_detach() {
    let mut t = T::new();
    t.grant(1, 10).unwrap();
    t.grant(2, 10).unwrap();
    t.put_req(leased("a", 1)).unwrap();
    t.put_req(leased("b", 1)).unwrap();
    t.put_req(leased("c", 2)).unwrap();
    let keys_of = |t: &T, id| t.store.lease(id).unwrap().unwrap().keys;
    assert_eq!(keys_of(&t, 1), vec![b"a".to_vec(), b"b".to_vec()]);
    // Re-put with another lease moves the key.
    t.put_req(leased("a", 2)).unwrap();
    assert_eq!(keys_of(&t, 1), vec![b"b".to_vec()]);
    assert_eq!(keys_of(&t, 2), vec![b"a".to_vec(), b"c".to_vec()]);
    assert_eq!(t.get("a").unwrap().lease, 2);
    // Put without lease detaches; delete detaches.
    t.put("b", "plain");
    t.del("c", "");
    assert!(keys_of(&t, 1).is_empty());
    assert_eq!(keys_of(&t, 2), vec![b"a".to_vec()]);
}

#[test]
fn revoke_deletes_attached_keys_in_one_revision() {
    let mut t = T::new();
    t.grant(7, 10).unwrap();
    for k in ["z", "m", "a"] {
        t.put_req(leased(k, 7)).unwrap();
    }
    t.put("other", "x");
    let rev = t.rev();
    let a = t.revoke(7);
    assert_eq!(a.result, Ok(Response::LeaseRevoke(LeaseRevokeResponse { revision: rev + 1 })));
    assert_eq!(t.rev(), rev + 1);
    assert_eq!(
        a.events.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision)).collect::<Vec<_>>(),
        vec![
            (EventKind::Delete, b"a".to_vec(), rev + 1),
            (EventKind::Delete, b"m".to_vec(), rev + 1),
            (EventKind::Delete, b"z".to_vec(), rev + 1),
        ]
    );
    assert_eq!(keys(&t.range(range("\0", "\0")).unwrap().kvs), vec!["other"]);
    assert_eq!(t.store.lease(7).unwrap(), None);
    assert_eq!(t.revoke(7).result, Err(MvccError::LeaseNotFound));
    // A lease without keys: revoking it does not move the revision.
    t.grant(8, 10).unwrap();
    let a = t.revoke(8);
    assert!(a.result.is_ok() && a.events.is_empty());
    assert_eq!(t.rev(), rev + 1);
}

#[test]
fn lease_compare_in_txn() {
    let mut t = T::new();
    t.grant(3, 10).unwrap();
    t.put_req(leased("k", 3)).unwrap();
    let r = t
        .txn(TxnRequest {
            compare: vec![Compare::lease("k", CompareResult::Equal, 3)],
            success: vec![RequestOp::Put(PutRequest { ignore_lease: true, ..put("k", "w") })],
            failure: vec![],
        })
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(t.get("k").unwrap().lease, 3);
}
