//! Helpers: a store with an auto-incrementing Raft index and request builders.

use concord_mvcc::*;

pub struct T {
    pub store: Store,
    pub index: u64,
}

impl T {
    pub fn new() -> T {
        T { store: Store::in_memory().unwrap(), index: 0 }
    }

    pub fn with(store: Store) -> T {
        let index = store.applied_index();
        T { store, index }
    }

    pub fn apply(&mut self, cmd: Command) -> Applied {
        self.index += 1;
        self.store.apply(self.index, &cmd).unwrap().expect("entry applied")
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        match self.apply(Command::Put(put(key, value))).result.unwrap() {
            Response::Put(r) => r,
            other => panic!("{other:?}"),
        }
    }

    pub fn put_req(&mut self, req: PutRequest) -> Result<PutResponse, MvccError> {
        self.apply(Command::Put(req)).result.map(|r| match r {
            Response::Put(r) => r,
            other => panic!("{other:?}"),
        })
    }

    pub fn del(&mut self, key: &str, end: &str) -> DeleteRangeResponse {
        let req = DeleteRangeRequest { key: key.into(), range_end: end.into(), prev_kv: true };
        match self.apply(Command::DeleteRange(req)).result.unwrap() {
            Response::DeleteRange(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Applies a Txn through the log. A read-only one is also served from a snapshot
    /// first (as the server serves it), and both answers must be the same.
    pub fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, MvccError> {
        let served = is_read_only_txn(&req).then(|| self.store.txn_read(&req));
        let logged = self.apply(Command::Txn(req.clone())).result.map(|r| match r {
            Response::Txn(r) => r,
            other => panic!("{other:?}"),
        });
        if let Some(served) = served {
            assert_eq!(served, logged, "a read-only Txn from a snapshot answers as through the log: {req:?}");
        }
        logged
    }

    pub fn grant(&mut self, id: i64, ttl: i64) -> Result<Response, MvccError> {
        self.apply(Command::LeaseGrant(LeaseGrantRequest { id, ttl })).result
    }

    pub fn revoke(&mut self, id: i64) -> Applied {
        self.apply(Command::LeaseRevoke(LeaseRevokeRequest { id }))
    }

    pub fn compact(&mut self, revision: i64) -> Result<Response, MvccError> {
        self.apply(Command::Compact(CompactionRequest { revision, physical: true })).result
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let mut r = self.store.range(&range(key, "")).unwrap();
        assert!(r.kvs.len() <= 1);
        r.kvs.pop()
    }

    pub fn range(&self, req: RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(&req)
    }

    pub fn rev(&self) -> i64 {
        self.store.current_revision()
    }
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() }
}

pub fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..RangeRequest::default() }
}

pub fn del(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest { key: key.into(), range_end: end.into(), prev_kv: false }
}

pub fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

pub fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue { key: key.into(), create_revision: create, mod_revision: modr, version, value: value.into(), lease }
}
