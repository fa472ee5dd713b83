//! Converting a store written with an older layout, once, at open.
//!
//! Schema 1 kept every record in the key-ordered `kv` table (`(key, main, sub)` → record),
//! a `revs` table from revision to key and a `current` table of the live keys. Schema 2
//! keeps the record, key included, in the revision-ordered `revisions` table only (see
//! [`crate::schema`]); the key index is built in memory at open. The leases and the meta
//! table did not change. The conversion runs inside the transaction that opens the store, so a crash
//! during it leaves the schema-1 store as it was, and the next open converts again.
//!
//! Memory: one version at a time; the transaction itself holds the new tables' pages.

use redb::{ReadableTable, WriteTransaction};

use crate::error::MvccError;
use crate::schema::{Record, StoredVersion, REVISIONS, SCHEMA1_CURRENT, SCHEMA1_KV, SCHEMA1_REVS};

/// Moves schema 1's `kv` table into `revisions`, then deletes it, `revs` and `current`. The caller records the new schema version in the same transaction.
pub(crate) fn from_key_ordered(txn: &WriteTransaction) -> Result<(), MvccError> {
    {
        let old = txn.open_table(SCHEMA1_KV)?;
        let mut revisions = txn.open_table(REVISIONS)?;
        for entry in old.iter()? {
            let (k, v) = entry?;
            let (key, main, sub) = k.value();
            let record = v.value();
            Record::decode(record)?;
            revisions.insert((main, sub), StoredVersion::encode(key, record).as_slice())?;
        }
    }
    txn.delete_table(SCHEMA1_KV)?;
    txn.delete_table(SCHEMA1_REVS)?;
    txn.delete_table(SCHEMA1_CURRENT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use crate::schema::{
        Record, META, META_APPLIED, META_COMPACTED, META_REVISION, META_SCHEMA, SCHEMA1_CURRENT, SCHEMA1_KV,
        SCHEMA1_REVS,
    };
    use crate::types::RangeRequest;
    use crate::Store;

    /// A schema-1 store as the previous build wrote it: key `a` put twice (revisions 2
    /// and 3), key `b` put (4) and deleted (5).
    fn write_schema1(path: &std::path::Path) {
        let db = Database::create(path).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut kv = txn.open_table(SCHEMA1_KV).expect("kv");
            let mut revs = txn.open_table(SCHEMA1_REVS).expect("revs");
            let mut current = txn.open_table(SCHEMA1_CURRENT).expect("current");
            let mut meta = txn.open_table(META).expect("meta");
            let put = |create, version, value: &str| {
                Record::Put { create_revision: create, version, lease: 0, value: value.into() }.encode()
            };
            for (key, main, record) in [
                (b"a".as_slice(), 2u64, put(2, 1, "a1")),
                (b"a", 3, put(2, 2, "a2")),
                (b"b", 4, put(4, 1, "b1")),
                (b"b", 5, Record::Tombstone.encode()),
            ] {
                kv.insert((key, main, 0u64), record.as_slice()).expect("insert");
                revs.insert((main, 0u64), key).expect("insert");
            }
            current.insert(b"a".as_slice(), (3u64, 0u64)).expect("insert");
            meta.insert(META_SCHEMA, 1).expect("meta");
            meta.insert(META_APPLIED, 4).expect("meta");
            meta.insert(META_REVISION, 5).expect("meta");
            meta.insert(META_COMPACTED, -1).expect("meta");
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn a_schema_1_store_is_converted_at_open_and_reads_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        write_schema1(&path);
        let store = Store::open(&path).expect("open converts");
        assert_eq!((store.applied_index(), store.current_revision()), (4, 5));
        let at = |revision| {
            let request = RangeRequest { key: b"a".to_vec(), range_end: b"c".to_vec(), revision, ..Default::default() };
            let response = store.range(&request).expect("range");
            response.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision)).collect::<Vec<_>>()
        };
        assert_eq!(at(0), vec![(b"a".to_vec(), b"a2".to_vec(), 3)]);
        assert_eq!(at(2), vec![(b"a".to_vec(), b"a1".to_vec(), 2)]);
        assert_eq!(at(4), vec![(b"a".to_vec(), b"a2".to_vec(), 3), (b"b".to_vec(), b"b1".to_vec(), 4)]);
        let mut events = store.events_since(2, 100).expect("events");
        store.fill_delete_prevs(&mut events).expect("fill");
        assert_eq!(events.len(), 4);
        assert_eq!(events[3].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b"b1".to_vec()));
        drop(store);
        // The old tables are gone and the schema is recorded: the next open converts nothing.
        let db = Database::open(&path).expect("reopen");
        let txn = db.begin_read().expect("read");
        assert!(txn.open_table(SCHEMA1_KV).is_err(), "schema 1's kv table is deleted");
        assert!(txn.open_table(SCHEMA1_CURRENT).is_err(), "schema 1's current table is deleted");
        assert_eq!(txn.open_table(META).expect("meta").get(META_SCHEMA).expect("get").map(|g| g.value()), Some(2));
    }
}
