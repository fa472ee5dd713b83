//! HashKV: a checksum of the key-value history that every member must agree on.
//!
//! etcd's `HashByRev` feeds CRC-32C with every (revision, KeyValue) pair kept at or below
//! the asked revision, in revision order. Here the same walk goes over the `revisions` table
//! and hashes, per version: main and sub revision (big-endian), key length and key, record
//! length and the encoded record (the same bytes as schema 1 hashed, so the hash did not
//! change with the layout). Compaction here is immediate, so every version kept
//! at or below the compacted revision is exactly etcd's "keep" set. The numbers differ from
//! etcd's (different bytes are hashed) but only members of one concord cluster compare them.

use crate::error::MvccError;
use crate::read::RevRead;
use crate::schema::{rev_u64, StoredVersion};
use crate::types::HashKv;

pub(crate) fn hash_kv<R: RevRead>(
    revisions: &R,
    revision: i64,
    current: i64,
    compacted: i64,
) -> Result<HashKv, MvccError> {
    if revision > 0 && revision <= compacted {
        return Err(MvccError::Compacted);
    }
    if revision > current {
        return Err(MvccError::FutureRevision);
    }
    let upto = if revision <= 0 { current } else { revision };
    let mut crc = crc32c::crc32c(b"concord-kv");
    for entry in revisions.range(..=(rev_u64(upto), u64::MAX))? {
        let (k, v) = entry?;
        let (main, sub) = k.value();
        let (key, record) = StoredVersion::split(v.value())?;
        crc = crc32c::crc32c_append(crc, &main.to_be_bytes());
        crc = crc32c::crc32c_append(crc, &sub.to_be_bytes());
        crc = crc32c::crc32c_append(crc, &(key.len() as u64).to_be_bytes());
        crc = crc32c::crc32c_append(crc, key);
        crc = crc32c::crc32c_append(crc, &(record.len() as u64).to_be_bytes());
        crc = crc32c::crc32c_append(crc, record);
    }
    Ok(HashKv { hash: crc, compact_revision: compacted, hash_revision: upto })
}
