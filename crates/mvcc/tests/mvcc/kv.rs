//! Put, DeleteRange, revisions, versions, events and the etcd error texts.

use crate::common::*;
use concord_mvcc::*;

#[test]
fn empty_store_is_at_revision_one() {
    let t = T::new();
    assert_eq!(t.store.current_revision(), 1);
    assert_eq!(t.store.applied_index(), 0);
    assert_eq!(t.store.compacted_revision(), -1);
    let r = t.range(range("a", "\0")).unwrap();
    assert_eq!((r.revision, r.count, r.kvs.len()), (1, 0, 0));
}

#[test]
fn revision_version_and_create_revision_across_put_delete_recreate() {
    let mut t = T::new();
    assert_eq!(t.put("a", "1").revision, 2);
    assert_eq!(t.get("a").unwrap(), kv("a", "1", 2, 2, 1, 0));
    assert_eq!(t.put("a", "2").revision, 3);
    assert_eq!(t.get("a").unwrap(), kv("a", "2", 2, 3, 2, 0));
    t.put("b", "x");
    let d = t.del("a", "");
    assert_eq!((d.revision, d.deleted), (5, 1));
    assert_eq!(d.prev_kvs, vec![kv("a", "2", 2, 3, 2, 0)]);
    assert_eq!(t.get("a"), None);
    assert_eq!(t.put("a", "3").revision, 6);
    assert_eq!(t.get("a").unwrap(), kv("a", "3", 6, 6, 1, 0));
    assert_eq!(t.rev(), 6);
}

#[test]
fn delete_of_nothing_keeps_the_revision() {
    let mut t = T::new();
    t.put("a", "1");
    let a = t.apply(Command::DeleteRange(del("zz", "")));
    let Ok(Response::DeleteRange(d)) = a.result else { panic!() };
    assert_eq!((d.revision, d.deleted), (2, 0));
    assert!(a.events.is_empty());
    assert_eq!(a.revision, 2);
    assert_eq!(t.rev(), 2);
    assert_eq!(t.store.applied_index(), 2);
}

#[test]
fn delete_range_forms_and_events() {
    let mut t = T::new();
    for k in ["a", "b", "ba", "bb", "c"] {
        t.put(k, "v");
    }
    let a = t.apply(Command::DeleteRange(del("b", &String::from_utf8(prefix_end(b"b")).unwrap())));
    let Ok(Response::DeleteRange(d)) = a.result else { panic!() };
    assert_eq!((d.deleted, d.revision), (3, 7));
    assert!(d.prev_kvs.is_empty(), "prev_kv not asked");
    let kinds: Vec<_> = a.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Delete; 3]);
    assert_eq!(
        a.events.iter().map(|e| e.kv.key.clone()).collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"ba".to_vec(), b"bb".to_vec()]
    );
    assert!(a.events.iter().all(|e| e.prev_kv.is_none()), "without prev_kv no old version is read");
    let mut events = a.events.clone();
    t.store.fill_delete_prevs(&mut events).unwrap();
    for e in &events {
        assert_eq!(e.kv.mod_revision, 7);
        assert_eq!((e.kv.version, e.kv.create_revision), (0, 0));
        assert_eq!(e.prev_kv.as_ref().unwrap().key, e.kv.key);
    }
    // "\0": everything from the key on.
    let d = t.del("b", "\0");
    assert_eq!(keys(&d.prev_kvs), vec!["c"]);
    assert_eq!(keys(&t.range(range("\0", "\0")).unwrap().kvs), vec!["a"]);
}

#[test]
fn put_events_carry_prev_kv() {
    let mut t = T::new();
    let a = t.apply(Command::Put(put("k", "1")));
    assert_eq!(a.events.len(), 1);
    assert_eq!(a.events[0].kind, EventKind::Put);
    assert_eq!(a.events[0].kv, kv("k", "1", 2, 2, 1, 0));
    assert_eq!(a.events[0].prev_kv, None);
    let a = t.apply(Command::Put(put("k", "2")));
    assert_eq!(a.events[0].prev_kv, Some(kv("k", "1", 2, 2, 1, 0)));
}

#[test]
fn put_prev_kv() {
    let mut t = T::new();
    let mut req = put("a", "1");
    req.prev_kv = true;
    assert_eq!(t.put_req(req.clone()).unwrap().prev_kv, None);
    req.value = b"2".to_vec();
    assert_eq!(t.put_req(req).unwrap().prev_kv, Some(kv("a", "1", 2, 2, 1, 0)));
    // Without prev_kv, none is returned.
    assert_eq!(t.put("a", "3").prev_kv, None);
}

#[test]
fn ignore_value_and_ignore_lease() {
    let mut t = T::new();
    t.grant(7, 60).unwrap();
    // Missing key: KeyNotFound, nothing written, entry still applied.
    let req = PutRequest { key: b"a".to_vec(), ignore_value: true, ..PutRequest::default() };
    assert_eq!(t.put_req(req.clone()), Err(MvccError::KeyNotFound));
    assert_eq!(t.rev(), 1);
    assert_eq!(t.store.applied_index(), 2);

    t.put_req(PutRequest { key: b"a".to_vec(), value: b"v".to_vec(), lease: 7, ..PutRequest::default() }).unwrap();
    // ignore_value keeps the value, takes the new lease (0).
    t.put_req(req).unwrap();
    assert_eq!(t.get("a").unwrap(), kv("a", "v", 2, 3, 2, 0));
    // ignore_lease keeps the lease, takes the new value.
    t.put_req(PutRequest { key: b"a".to_vec(), value: b"w".to_vec(), lease: 7, ..PutRequest::default() }).unwrap();
    t.put_req(PutRequest { key: b"a".to_vec(), value: b"x".to_vec(), ignore_lease: true, ..PutRequest::default() })
        .unwrap();
    assert_eq!(t.get("a").unwrap(), kv("a", "x", 2, 5, 4, 7));
    // Both at once.
    let r = t
        .put_req(PutRequest {
            key: b"a".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            prev_kv: true,
            ..PutRequest::default()
        })
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().mod_revision, 5);
    assert_eq!(t.get("a").unwrap(), kv("a", "x", 2, 6, 5, 7));

    // value/lease given together with ignore_*.
    let e =
        t.put_req(PutRequest { key: b"a".to_vec(), value: b"y".to_vec(), ignore_value: true, ..PutRequest::default() });
    assert_eq!(e, Err(MvccError::ValueProvided));
    let e = t.put_req(PutRequest { key: b"a".to_vec(), lease: 7, ignore_lease: true, ..PutRequest::default() });
    assert_eq!(e, Err(MvccError::LeaseProvided));
    assert_eq!(t.rev(), 6);
}

#[test]
fn put_with_unknown_lease_fails() {
    let mut t = T::new();
    let mut req = put("a", "1");
    req.lease = 42;
    let a = t.apply(Command::Put(req));
    assert_eq!(a.result, Err(MvccError::LeaseNotFound));
    assert!(a.events.is_empty());
    assert_eq!((a.revision, t.rev()), (1, 1));
    assert_eq!(t.get("a"), None);
}

#[test]
fn empty_key_is_refused() {
    let mut t = T::new();
    assert_eq!(t.put_req(put("", "v")), Err(MvccError::EmptyKey));
    let a = t.apply(Command::DeleteRange(del("", "\0")));
    assert_eq!(a.result, Err(MvccError::EmptyKey));
    assert_eq!(t.range(range("", "\0")), Err(MvccError::EmptyKey));
}

#[test]
fn noop_advances_only_the_applied_index() {
    let mut t = T::new();
    t.put("a", "1");
    let a = t.apply(Command::Noop);
    assert_eq!(a.result, Ok(Response::Noop));
    assert_eq!((a.revision, t.store.applied_index(), t.rev()), (2, 2, 2));
}

#[test]
fn error_texts_are_etcds() {
    let cases = [
        (MvccError::Compacted, "etcdserver: mvcc: required revision has been compacted"),
        (MvccError::FutureRevision, "etcdserver: mvcc: required revision is a future revision"),
        (MvccError::LeaseNotFound, "etcdserver: requested lease not found"),
        (MvccError::LeaseExists, "etcdserver: lease already exists"),
        (MvccError::LeaseTtlTooLarge, "etcdserver: too large lease TTL"),
        (MvccError::KeyNotFound, "etcdserver: key not found"),
        (MvccError::EmptyKey, "etcdserver: key is not provided"),
        (MvccError::ValueProvided, "etcdserver: value is provided"),
        (MvccError::LeaseProvided, "etcdserver: lease is provided"),
        (MvccError::TooManyOps, "etcdserver: too many operations in txn request"),
        (MvccError::DuplicateKey, "etcdserver: duplicate key given in txn request"),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
        assert!(!e.is_storage());
    }
    assert!(MvccError::Storage("x".into()).is_storage());
    assert!(MvccError::Corrupt("x".into()).is_storage());
}

#[test]
fn keys_and_values_are_bytes() {
    let mut t = T::new();
    let k = vec![0u8, 0xff, 7];
    let v = vec![0u8; 1000];
    t.put_req(PutRequest { key: k.clone(), value: v.clone(), ..PutRequest::default() }).unwrap();
    let r = t.range(RangeRequest { key: k.clone(), ..RangeRequest::default() }).unwrap();
    assert_eq!(r.kvs[0].value, v);
    // An empty value is a value.
    t.put("e", "");
    assert_eq!(t.get("e").unwrap().value, b"");
}
