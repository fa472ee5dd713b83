//! Raft snapshots of the state machine: a logical dump and its restore.
//!
//! A follower too far behind the leader's log gets the whole state instead. The dump is
//! written from one read transaction, so it is a consistent cut at its applied index while
//! applies go on. Only the primary data is written — meta, every kept version, the leases;
//! the derived state (the key index, `lease_keys`) is rebuilt on restore, so the
//! format does not depend on how the store is laid out (schema 2 writes the same stream as
//! schema 1 did).
//!
//! The stream also carries the application's own metadata: opaque bytes the caller hands
//! over when the read transaction is open (the server puts its member directory there, the
//! replicated state that lives outside this store), given back by verify and restore.
//!
//! Format (all integers big-endian): the magic `CONCORD-MVCC-SNAP` and a format byte, then
//! records, each a tag byte and a payload:
//!
//! - `1` meta: applied index `u64`, revision `i64`, compacted revision `i64` (first, once);
//! - `5` application metadata: length `u32`, bytes (format 2: right after the meta, once);
//! - `2` version: key length `u32`, key, main `u64`, sub `u64`, record length `u32`, record;
//! - `3` lease: id `i64`, ttl `i64`;
//! - `6` lease checkpoint: id `i64`, remaining TTL `i64` (format 3; after the leases);
//! - `4` end: CRC-32C `u32` of every byte before it, this tag included (so it covers the
//!   application metadata too).
//!
//! Format 1 (before application metadata) is the same without record `5`; it is still read,
//! and reported as having no application metadata (`None`), so that the caller decides what
//! a snapshot without it means. Format 2 (before lease checkpoints) has no record `6`; it is
//! still read. Newer formats are refused by builds that do not know them ("snapshot format
//! 3, this build reads formats 1 to 2"), never half-read.
//!
//! Restore checks the CRC before it commits, so a truncated or damaged stream never becomes
//! a store.

use std::io::{Read, Write};
use std::path::Path;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::MvccError;
use crate::index::{KeyIndex, Version};
use crate::schema::{
    rev_i64, Record, StoredVersion, LEASES, LEASE_KEYS, LEASE_REMAINING, META, META_APPLIED, META_COMPACTED,
    META_REVISION, META_SCHEMA, REVISIONS, SCHEMA_VERSION,
};

const MAGIC: &[u8] = b"CONCORD-MVCC-SNAP";
/// The format this build writes.
const FORMAT: u8 = 3;
/// The format before application metadata, still read.
const FORMAT_WITHOUT_APP_META: u8 = 1;
/// The format before lease checkpoints, still read.
const FORMAT_WITHOUT_LEASE_CHECKPOINTS: u8 = 2;
const TAG_META: u8 = 1;
const TAG_VERSION: u8 = 2;
const TAG_LEASE: u8 = 3;
const TAG_END: u8 = 4;
const TAG_APP_META: u8 = 5;
const TAG_LEASE_CHECKPOINT: u8 = 6;

/// What a snapshot holds, as written or restored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The Raft index the snapshot is at.
    pub applied_index: u64,
    pub revision: i64,
    pub compacted_revision: i64,
    /// Bytes of the stream.
    pub bytes: u64,
    /// The application metadata the stream carries (possibly empty); `None` for a stream
    /// of format 1, written before streams carried any.
    pub app_meta: Option<Vec<u8>>,
}

/// A writer that keeps the CRC and the length of what went through it.
struct Crc<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Crc<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), MvccError> {
        self.inner.write_all(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }
}

fn len_u32(n: usize) -> Result<[u8; 4], MvccError> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| MvccError::Internal(format!("{n} bytes do not fit a snapshot record")))
}

/// Writes the stream from one read transaction and the key index that matches it.
/// `app_meta` is called with the applied index of that transaction, before anything is
/// written; what it returns goes into the stream as the application metadata.
pub(crate) fn write(
    txn: &ReadTransaction,
    index: &KeyIndex,
    out: impl Write,
    app_meta: impl FnOnce(u64) -> Result<Vec<u8>, MvccError>,
) -> Result<SnapshotMeta, MvccError> {
    let meta = txn.open_table(META)?;
    let (applied, revision, compacted) = crate::store::read_meta(&meta)?;
    let app_meta = app_meta(applied)?;
    let mut w = Crc { inner: out, crc: 0, len: 0 };
    w.put(MAGIC)?;
    w.put(&[FORMAT, TAG_META])?;
    w.put(&applied.to_be_bytes())?;
    w.put(&revision.to_be_bytes())?;
    w.put(&compacted.to_be_bytes())?;
    w.put(&[TAG_APP_META])?;
    w.put(&len_u32(app_meta.len())?)?;
    w.put(&app_meta)?;
    let revisions = txn.open_table(REVISIONS)?;
    for (key, version) in index.iter() {
        let (main, sub) = (version.main, version.sub);
        let stored = revisions
            .get((main, sub))?
            .ok_or_else(|| MvccError::Corrupt(format!("key index names missing version {main}.{sub}")))?;
        let (_, record) = StoredVersion::split(stored.value())?;
        w.put(&[TAG_VERSION])?;
        w.put(&len_u32(key.len())?)?;
        w.put(key)?;
        w.put(&main.to_be_bytes())?;
        w.put(&sub.to_be_bytes())?;
        w.put(&len_u32(record.len())?)?;
        w.put(record)?;
    }
    let leases = txn.open_table(LEASES)?;
    for entry in leases.iter()? {
        let (id, ttl) = entry?;
        w.put(&[TAG_LEASE])?;
        w.put(&id.value().to_be_bytes())?;
        w.put(&ttl.value().to_be_bytes())?;
    }
    let remaining = txn.open_table(LEASE_REMAINING)?;
    for entry in remaining.iter()? {
        let (id, remaining_ttl) = entry?;
        w.put(&[TAG_LEASE_CHECKPOINT])?;
        w.put(&id.value().to_be_bytes())?;
        w.put(&remaining_ttl.value().to_be_bytes())?;
    }
    w.put(&[TAG_END])?;
    let crc = w.crc;
    w.put(&crc.to_be_bytes())?;
    w.inner.flush()?;
    Ok(SnapshotMeta {
        applied_index: applied,
        revision,
        compacted_revision: compacted,
        bytes: w.len,
        app_meta: Some(app_meta),
    })
}

/// A reader that keeps the CRC of what it read.
struct CrcReader<R> {
    inner: R,
    crc: u32,
    len: u64,
}

impl<R: Read> CrcReader<R> {
    fn take(&mut self, buf: &mut [u8]) -> Result<(), MvccError> {
        self.inner
            .read_exact(buf)
            .map_err(|e| MvccError::Corrupt(format!("snapshot ends early at byte {}: {e}", self.len)))?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.len += buf.len() as u64;
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, MvccError> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }
    fn u32(&mut self) -> Result<u32, MvccError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, MvccError> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
    fn i64(&mut self) -> Result<i64, MvccError> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(i64::from_be_bytes(b))
    }
    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, MvccError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(MvccError::Corrupt(format!("snapshot record of {n} bytes at byte {}", self.len)));
        }
        // Read through `take` rather than into a buffer of the announced size, so that a
        // damaged length cannot make us allocate a gigabyte before failing.
        let mut b = Vec::new();
        (&mut self.inner).take(n as u64).read_to_end(&mut b)?;
        if b.len() != n {
            return Err(MvccError::Corrupt(format!("snapshot ends early at byte {}", self.len + b.len() as u64)));
        }
        self.crc = crc32c::crc32c_append(self.crc, &b);
        self.len += n as u64;
        Ok(b)
    }
}

/// Largest key or record a snapshot may carry (a guard against reading garbage lengths).
const MAX_FIELD: usize = 1 << 30;

/// Reads a whole stream, checking its framing, every record and the checksum, and hands
/// each version and lease to the callbacks in stream order. Returns the snapshot's meta
/// (with `bytes` = the stream's length). The callbacks may have been called before an
/// error is found further on: a caller that writes must write in a transaction it can
/// abort.
fn parse(
    input: impl Read,
    mut on_version: impl FnMut(Vec<u8>, u64, u64, Vec<u8>, Record) -> Result<(), MvccError>,
    mut on_lease: impl FnMut(i64, i64) -> Result<(), MvccError>,
    mut on_lease_checkpoint: impl FnMut(i64, i64) -> Result<(), MvccError>,
) -> Result<SnapshotMeta, MvccError> {
    let mut r = CrcReader { inner: input, crc: 0, len: 0 };
    let mut magic = vec![0u8; MAGIC.len()];
    r.take(&mut magic)?;
    if magic != MAGIC {
        return Err(MvccError::Corrupt("not a concord-mvcc snapshot".into()));
    }
    let format = r.u8()?;
    if !(FORMAT_WITHOUT_APP_META..=FORMAT).contains(&format) {
        return Err(MvccError::Corrupt(format!(
            "snapshot format {format}, this build reads formats {FORMAT_WITHOUT_APP_META} to {FORMAT}"
        )));
    }
    if r.u8()? != TAG_META {
        return Err(MvccError::Corrupt("snapshot does not start with its meta".into()));
    }
    let applied = r.u64()?;
    let revision = r.i64()?;
    let compacted = r.i64()?;
    let app_meta = if format == FORMAT_WITHOUT_APP_META {
        None
    } else {
        if r.u8()? != TAG_APP_META {
            return Err(MvccError::Corrupt("snapshot has no application metadata after its meta".into()));
        }
        Some(r.bytes(MAX_FIELD)?)
    };
    loop {
        let tag = r.u8()?;
        match tag {
            TAG_VERSION => {
                let key = r.bytes(MAX_FIELD)?;
                let main = r.u64()?;
                let sub = r.u64()?;
                let bytes = r.bytes(MAX_FIELD)?;
                let record = Record::decode(&bytes)?;
                if rev_i64(main) > revision {
                    return Err(MvccError::Corrupt(format!(
                        "snapshot version at {main} above its revision {revision}"
                    )));
                }
                on_version(key, main, sub, bytes, record)?;
            }
            TAG_LEASE => {
                let id = r.i64()?;
                let ttl = r.i64()?;
                on_lease(id, ttl)?;
            }
            TAG_LEASE_CHECKPOINT if format > FORMAT_WITHOUT_LEASE_CHECKPOINTS => {
                let id = r.i64()?;
                let remaining_ttl = r.i64()?;
                on_lease_checkpoint(id, remaining_ttl)?;
            }
            TAG_END => {
                let want = r.crc;
                let got = r.u32()?;
                if want != got {
                    return Err(MvccError::Corrupt(format!(
                        "snapshot checksum mismatch (stored {got:#010x}, computed {want:#010x})"
                    )));
                }
                break;
            }
            other => {
                return Err(MvccError::Corrupt(format!("unknown snapshot record tag {other} at byte {}", r.len - 1)))
            }
        }
    }
    Ok(SnapshotMeta { applied_index: applied, revision, compacted_revision: compacted, bytes: r.len, app_meta })
}

/// Checks a whole stream without storing anything; returns its meta.
pub(crate) fn verify(input: impl Read) -> Result<SnapshotMeta, MvccError> {
    parse(input, |_, _, _, _, _| Ok(()), |_, _| Ok(()), |_, _| Ok(()))
}

/// Fills the empty tables of `txn` from the stream; returns the snapshot's meta and the
/// key index of what it holds.
pub(crate) fn read_into(txn: &WriteTransaction, input: impl Read) -> Result<(SnapshotMeta, KeyIndex), MvccError> {
    let mut index = KeyIndex::default();
    let mut revisions = txn.open_table(REVISIONS)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut lease_keys = txn.open_table(LEASE_KEYS)?;
    let mut lease_remaining = txn.open_table(LEASE_REMAINING)?;
    // Versions come in (key, revision) order: the last one of each key decides whether
    // the key is live, and so attached to its lease.
    let mut last: Option<(Vec<u8>, Record)> = None;
    let mut finish_key = |last: Option<(Vec<u8>, Record)>| -> Result<(), MvccError> {
        if let Some((key, Record::Put { lease, .. })) = last {
            if lease != 0 {
                lease_keys.insert((lease, key.as_slice()), ())?;
            }
        }
        Ok(())
    };
    let snapshot = parse(
        input,
        |key, main, sub, bytes, record| {
            if index.versions(&key).last().is_some_and(|last| (last.main, last.sub) >= (main, sub)) {
                return Err(MvccError::Corrupt(format!(
                    "snapshot versions of key {key:?} are out of revision order at {main}.{sub}"
                )));
            }
            index.push(&key, Version::of(main, sub, &record));
            revisions.insert((main, sub), StoredVersion::encode(&key, &bytes).as_slice())?;
            let next_key = last.as_ref().is_some_and(|(k, ..)| *k != key);
            if next_key {
                finish_key(last.take())?;
            }
            last = Some((key, record));
            Ok(())
        },
        |id, ttl| {
            leases.insert(id, ttl)?;
            Ok(())
        },
        |id, remaining_ttl| {
            lease_remaining.insert(id, remaining_ttl)?;
            Ok(())
        },
    )?;
    finish_key(last.take())?;
    let mut meta = txn.open_table(META)?;
    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
    meta.insert(
        META_APPLIED,
        i64::try_from(snapshot.applied_index).map_err(|_| MvccError::Corrupt("applied index overflow".into()))?,
    )?;
    meta.insert(META_REVISION, snapshot.revision)?;
    meta.insert(META_COMPACTED, snapshot.compacted_revision)?;
    Ok((snapshot, index))
}

/// Empties every table of `txn`, so that [`read_into`] can fill them again.
pub(crate) fn clear(txn: &WriteTransaction) -> Result<(), MvccError> {
    txn.delete_table(REVISIONS)?;
    txn.delete_table(META)?;
    txn.delete_table(LEASES)?;
    txn.delete_table(LEASE_KEYS)?;
    txn.delete_table(LEASE_REMAINING)?;
    Ok(())
}

/// Refuses to restore over an existing file.
pub(crate) fn check_target(path: &Path) -> Result<(), MvccError> {
    if path.exists() {
        return Err(MvccError::Storage(format!(
            "cannot restore a snapshot into {}: the file exists (restore into a new path, \
             then swap it in while the store is closed)",
            path.display()
        )));
    }
    Ok(())
}
