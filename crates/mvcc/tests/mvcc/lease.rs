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

fn checkpoint(t: &mut T, entries: &[(i64, i64)]) -> Applied {
    let checkpoints = entries.iter().map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl }).collect();
    t.apply(Command::LeaseCheckpoint(LeaseCheckpointRequest { term: 3, checkpoints }))
}

#[test]
fn checkpoints_record_remaining_ttls_below_the_ttl_only() {
    let mut t = T::new();
    t.grant(1, 10).unwrap();
    t.grant(2, 10).unwrap();
    let remaining = |t: &T, id| t.store.lease(id).unwrap().unwrap().remaining;
    assert_eq!(remaining(&t, 1), None, "a new lease has its whole TTL");
    let rev = t.rev();
    let a = checkpoint(&mut t, &[(1, 4), (2, 10), (99, 3)]);
    assert_eq!(a.result, Ok(Response::LeaseCheckpoint));
    assert!(a.events.is_empty());
    assert_eq!(t.rev(), rev, "checkpoints do not move the revision");
    assert_eq!((remaining(&t, 1), remaining(&t, 2)), (Some(4), None), "a full TTL is no checkpoint");
    assert_eq!(t.store.lease(99).unwrap(), None, "an unknown lease is skipped, not created");
    checkpoint(&mut t, &[(1, 0)]);
    assert_eq!(remaining(&t, 1), None, "0 clears the checkpoint (a keep-alive since)");
    checkpoint(&mut t, &[(1, 3)]);
    t.revoke(1);
    t.grant(1, 10).unwrap();
    assert_eq!(remaining(&t, 1), None, "a revoke takes the checkpoint with the lease");
    let timers: Vec<_> = t.store.lease_timers().unwrap().iter().map(|l| (l.id, l.ttl, l.remaining)).collect();
    assert_eq!(timers, vec![(1, 10, None), (2, 10, None)]);
}

#[test]
fn an_expiry_revokes_like_a_revoke() {
    let mut t = T::new();
    t.grant(5, 10).unwrap();
    t.put_req(leased("k", 5)).unwrap();
    let rev = t.rev();
    let a = t.apply(Command::LeaseExpire(LeaseExpireRequest { id: 5, term: 2 }));
    assert_eq!(a.result, Ok(Response::LeaseRevoke(LeaseRevokeResponse { revision: rev + 1 })));
    assert_eq!(a.events.len(), 1);
    assert_eq!(t.get("k"), None);
    assert_eq!(t.store.lease(5).unwrap(), None);
    let again = t.apply(Command::LeaseExpire(LeaseExpireRequest { id: 5, term: 2 }));
    assert_eq!(again.result, Err(MvccError::LeaseNotFound));
}

#[test]
fn leader_commands_name_their_term() {
    assert_eq!(Command::LeaseExpire(LeaseExpireRequest { id: 1, term: 7 }).leader_term(), Some(7));
    assert_eq!(
        Command::LeaseCheckpoint(LeaseCheckpointRequest { term: 8, checkpoints: vec![] }).leader_term(),
        Some(8)
    );
    assert_eq!(Command::LeaseRevoke(LeaseRevokeRequest { id: 1 }).leader_term(), None);
}
