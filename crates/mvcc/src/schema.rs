//! The on-disk layout: redb tables, their key/value encodings, and the meta keys.
//!
//! This is etcd's layout. The history is one table keyed by revision: every version is
//! appended once, in revision order, so its bytes (key and value) go to sequential pages
//! and are never moved again. The key index, from user key to its revisions, lives in
//! memory (`index`) and is rebuilt from this table when the store opens. No table is
//! ordered by user key, so a put or a delete at a random key rewrites no key-ordered page,
//! and a DeleteRange over many keys writes only their tombstones.
//!
//! | table        | key                         | value                        | used for |
//! |--------------|-----------------------------|------------------------------|----------|
//! | `revisions`  | `(main, sub)`               | [`StoredVersion`] bytes: key and [`Record`] | every kept version, in revision order: the data of every read, hash, watch catch-up, compaction of a revision window, the key index at open |
//! | `meta`       | name                        | i64                          | applied index, revision, compacted revision, schema version |
//! | `leases`     | lease id                    | ttl                          | granted leases |
//! | `lease_keys` | `(lease id, user key)`      | `()`                         | keys attached to a lease, for revoke |
//! | `lease_remaining` | lease id               | remaining TTL (s)            | the leader's last checkpoint of a lease, while it is below the TTL |
//!
//! A revision is etcd's `(main, sub)`: `main` is the store revision of the write, `sub`
//! numbers the writes inside one Txn. Revisions are positive, so they are stored as `u64`
//! (big-endian order = numeric order) and handed out as `i64` like etcd.
//!
//! Schema 1 (before this layout) kept each record in a key-ordered `kv` table, a `revs`
//! table from revision to key and a `current` table of the live keys, and needed no index
//! in memory; a store of schema 1 is converted at open (`upgrade`), in one transaction.

use redb::TableDefinition;

use crate::error::MvccError;
use crate::types::KeyValue;

/// Key of schema 1's `kv` table: `(user key, main revision, sub revision)`.
pub(crate) type KvKey = (&'static [u8], u64, u64);

pub(crate) const REVISIONS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("revisions");
/// Schema 1's tables, read once to convert them.
pub(crate) const SCHEMA1_KV: TableDefinition<KvKey, &[u8]> = TableDefinition::new("kv");
pub(crate) const SCHEMA1_REVS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("revs");
pub(crate) const SCHEMA1_CURRENT: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("current");
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub(crate) const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Added without a schema change: a store from before simply has no checkpoints.
pub(crate) const LEASE_REMAINING: TableDefinition<i64, i64> = TableDefinition::new("lease_remaining");

/// Version of this layout; a store written with another one is refused at open.
pub(crate) const SCHEMA_VERSION: i64 = 2;
/// The layout of [`SCHEMA1_KV`], [`SCHEMA1_REVS`] and [`SCHEMA1_CURRENT`], converted at open.
pub(crate) const SCHEMA_VERSION_KEY_ORDERED: i64 = 1;

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

/// Value of a `revisions` entry: the user key (length `u32` big-endian, then its bytes)
/// followed by the encoded [`Record`]. The key is stored here, once, because the table is
/// keyed by revision alone.
pub(crate) struct StoredVersion;

impl StoredVersion {
    /// Stored bytes of `key` and an already encoded record.
    pub(crate) fn encode(key: &[u8], record: &[u8]) -> Vec<u8> {
        let mut out = StoredVersion::with_key(key, record.len());
        out.extend_from_slice(record);
        out
    }

    /// Stored bytes of `key` and `record`, encoding the record in place.
    pub(crate) fn of(key: &[u8], record: &Record) -> Vec<u8> {
        let mut out = StoredVersion::with_key(key, record.encoded_len());
        record.encode_into(&mut out);
        out
    }

    fn with_key(key: &[u8], record_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + key.len() + record_len);
        let len = u32::try_from(key.len()).expect("a key is bounded by the request size limit, far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    /// `(key, encoded record)` of stored bytes.
    pub(crate) fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), MvccError> {
        let corrupt = || MvccError::Corrupt(format!("stored version of {} bytes has no whole key", bytes.len()));
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
        if rest.len() < len {
            return Err(corrupt());
        }
        Ok(rest.split_at(len))
    }
}

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

/// A record as encoded, its value borrowed ([`Record::parse`]).
enum Parsed<'a> {
    Put { create_revision: i64, version: i64, lease: i64, value: &'a [u8] },
    Tombstone,
}

impl Record {
    /// The record alone (stored records are encoded with their key: [`StoredVersion::of`]).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    fn encoded_len(&self) -> usize {
        match self {
            Record::Tombstone => 1,
            Record::Put { value, .. } => 25 + value.len(),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Record::Tombstone => out.push(TAG_TOMBSTONE),
            Record::Put { create_revision, version, lease, value } => {
                out.push(TAG_PUT);
                out.extend_from_slice(&create_revision.to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&lease.to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }

    /// The lease of encoded record bytes, without copying the value: `None` for a
    /// tombstone, `Some(0)` for a put without a lease.
    pub(crate) fn lease_of(bytes: &[u8]) -> Result<Option<i64>, MvccError> {
        Ok(match Record::parse(bytes)? {
            Parsed::Tombstone => None,
            Parsed::Put { lease, .. } => Some(lease),
        })
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, MvccError> {
        Ok(match Record::parse(bytes)? {
            Parsed::Tombstone => Record::Tombstone,
            Parsed::Put { create_revision, version, lease, value } => {
                Record::Put { create_revision, version, lease, value: value.to_vec() }
            }
        })
    }

    /// The one reading of the encoding, borrowing the value.
    fn parse(bytes: &[u8]) -> Result<Parsed<'_>, MvccError> {
        match bytes.split_first() {
            Some((&TAG_TOMBSTONE, [])) => Ok(Parsed::Tombstone),
            Some((&TAG_PUT, rest)) if rest.len() >= 24 => {
                let int = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[i * 8..i * 8 + 8]);
                    i64::from_be_bytes(b)
                };
                Ok(Parsed::Put { create_revision: int(0), version: int(1), lease: int(2), value: &rest[24..] })
            }
            _ => Err(MvccError::Corrupt(format!("kv record of {} bytes with tag {:?}", bytes.len(), bytes.first()))),
        }
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
        assert!(Record::decode(&[0, 1, 2]).is_err());
        assert!(Record::decode(&[]).is_err());
    }

    #[test]
    fn stored_version_round_trip() {
        let record = Record::Put { create_revision: 3, version: 7, lease: 0, value: b"value".to_vec() }.encode();
        let stored = StoredVersion::encode(b"key", &record);
        assert_eq!(StoredVersion::split(&stored).unwrap(), (b"key".as_slice(), record.as_slice()));
        let put = Record::Put { create_revision: 3, version: 7, lease: 0, value: b"value".to_vec() };
        assert_eq!(StoredVersion::of(b"key", &put), stored);
        assert_eq!(
            StoredVersion::split(&StoredVersion::encode(b"", &[1])).unwrap(),
            (b"".as_slice(), [1u8].as_slice())
        );
        assert!(StoredVersion::split(&[0, 0, 0, 9, 1]).is_err(), "a key longer than the bytes is refused");
        assert!(StoredVersion::split(&[0, 0]).is_err());
        assert_eq!(Record::lease_of(&Record::Tombstone.encode()).unwrap(), None);
        let leased = Record::Put { create_revision: 3, version: 7, lease: -5, value: b"v".to_vec() }.encode();
        assert_eq!(Record::lease_of(&leased).unwrap(), Some(-5));
        assert!(Record::lease_of(&[0, 1]).is_err());
    }
}
