//! The on-disk layout: redb tables, their key/value encodings, and the meta keys.
//!
//! etcd keeps one bucket keyed by revision and an in-memory B-tree from user key to its
//! revisions, rebuilt on every start. Here the key index lives in redb too, so opening the
//! store reads nothing but the meta table and memory does not grow with the key count:
//!
//! | table        | key                         | value                        | used for |
//! |--------------|-----------------------------|------------------------------|----------|
//! | `kv`         | `(user key, main, sub)`     | [`Record`] bytes             | every kept version; reads at a past revision (newest entry `<= rev` of a key) |
//! | `revs`       | `(main, sub)`               | user key                     | revision order: hash, watch catch-up, compaction of a revision window |
//! | `current`    | user key                    | `(main, sub)` of live version| reads at the current revision; absent once deleted |
//! | `meta`       | name                        | i64                          | applied index, revision, compacted revision, schema version |
//! | `leases`     | lease id                    | ttl                          | granted leases |
//! | `lease_keys` | `(lease id, user key)`      | `()`                         | keys attached to a lease, for revoke |
//! | `lease_remaining` | lease id               | remaining TTL (s)            | the leader's last checkpoint of a lease, while it is below the TTL |
//!
//! A revision is etcd's `(main, sub)`: `main` is the store revision of the write, `sub`
//! numbers the writes inside one Txn. Revisions are positive, so they are stored as `u64`
//! (big-endian order = numeric order) and handed out as `i64` like etcd.

use redb::TableDefinition;

use crate::error::MvccError;
use crate::types::KeyValue;

/// Key of the `kv` table: `(user key, main revision, sub revision)`.
pub(crate) type KvKey = (&'static [u8], u64, u64);

pub(crate) const KV: TableDefinition<KvKey, &[u8]> = TableDefinition::new("kv");
pub(crate) const REVS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("revs");
pub(crate) const CURRENT: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("current");
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub(crate) const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Added without a schema change: a store from before simply has no checkpoints.
pub(crate) const LEASE_REMAINING: TableDefinition<i64, i64> = TableDefinition::new("lease_remaining");

/// Version of this layout; a store written with another one is refused at open.
pub(crate) const SCHEMA_VERSION: i64 = 1;

pub(crate) const META_SCHEMA: &str = "schema_version";
pub(crate) const META_APPLIED: &str = "applied_index";
pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACTED: &str = "compacted_revision";

/// Revision of an empty store (etcd starts at 1).
pub(crate) const INITIAL_REVISION: i64 = 1;
/// Compacted revision of a store never compacted (etcd's `compactMainRev` starts at -1).
pub(crate) const NEVER_COMPACTED: i64 = -1;

const TAG_PUT: u8 = 0;
const TAG_TOMBSTONE: u8 = 1;

/// One stored version of a key: what a Put wrote, or the tombstone of a delete.
///
/// Encoding (value of the `kv` table): tag byte `0` then `create_revision`, `version`,
/// `lease` as big-endian i64 and the value bytes; or the single tag byte `1` for a tombstone.
/// `mod_revision` and the key are not stored: they are the table key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Put { create_revision: i64, version: i64, lease: i64, value: Vec<u8> },
    Tombstone,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Record::Tombstone => vec![TAG_TOMBSTONE],
            Record::Put { create_revision, version, lease, value } => {
                let mut out = Vec::with_capacity(25 + value.len());
                out.push(TAG_PUT);
                out.extend_from_slice(&create_revision.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&lease.to_be_bytes());
                out.extend_from_slice(value);
                out
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, MvccError> {
        match bytes.split_first() {
            Some((&TAG_TOMBSTONE, [])) => Ok(Record::Tombstone),
            Some((&TAG_PUT, rest)) if rest.len() >= 24 => {
                let int = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[i * 8..i * 8 + 8]);
                    i64::from_be_bytes(b)
                };
                Ok(Record::Put { create_revision: int(0), version: int(1), lease: int(2), value: rest[24..].to_vec() })
            }
            _ => Err(MvccError::Corrupt(format!("kv record of {} bytes with tag {:?}", bytes.len(), bytes.first()))),
        }
    }

    /// Cheap check on encoded bytes, without copying the value.
    pub(crate) fn is_tombstone(bytes: &[u8]) -> bool {
        bytes.first() == Some(&TAG_TOMBSTONE)
    }

    /// The KeyValue this record is for `key` at `mod_revision`; `None` for a tombstone.
    pub(crate) fn into_kv(self, key: &[u8], mod_revision: i64) -> Option<KeyValue> {
        match self {
            Record::Tombstone => None,
            Record::Put { create_revision, version, lease, value } => {
                Some(KeyValue { key: key.to_vec(), create_revision, mod_revision, version, value, lease })
            }
        }
    }
}

/// Revision as stored (`u64`) to revision as handed out (`i64`).
pub(crate) fn rev_i64(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// Revision as handed out to revision as stored; negative revisions clamp to 0.
pub(crate) fn rev_u64(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let r = Record::Put { create_revision: 3, version: 7, lease: -5, value: b"v".to_vec() };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert_eq!(Record::decode(&Record::Tombstone.encode()).unwrap(), Record::Tombstone);
        assert!(Record::is_tombstone(&Record::Tombstone.encode()));
        assert!(!Record::is_tombstone(&r.encode()));
        assert!(Record::decode(&[0, 1, 2]).is_err());
        assert!(Record::decode(&[]).is_err());
    }
}
