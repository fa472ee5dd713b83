//! The write side of one apply: the open tables of the write transaction and the revision
//! bookkeeping of the command being applied.
//!
//! A command's writes all get main revision `rev + 1` and increasing sub revisions; the
//! store revision moves to `rev + 1` only when the command wrote something (`sub > 0`), so a
//! read-only Txn or a DeleteRange that matched nothing leaves it alone (etcd's
//! `len(txn.Changes()) != 0`). Each write also records its watch event.
//!
//! Every mutation of the key tables also logs how to undo it. Requests are checked before
//! anything is written, but a Txn can still fail half-way in corner cases etcd itself does
//! not guard (a Put with `ignore_value` after a delete of `[k, "\0")` in the same Txn, or a
//! request the server forgot to validate); [`Writer::rollback`] then takes the command back
//! out of the shared write transaction, so the rest of the batch is unaffected and the
//! entry's answer is the etcd error.

use redb::{Table, WriteTransaction};

use crate::error::MvccError;
use crate::index::{KeyIndex, Version};
use crate::keyrange::KeyBounds;
use crate::read::{At, Reader};
use crate::schema::{rev_u64, Record, StoredVersion, LEASES, LEASE_KEYS, LEASE_REMAINING, REVISIONS};
use crate::types::{Event, EventKind, KeyValue};

/// The `revisions` table of a write transaction.
type RevisionsTable<'t> = Table<'t, (u64, u64), &'static [u8]>;

pub(crate) struct Writer<'t> {
    /// The apply's own clone of the key index; the store publishes it after the commit.
    pub(crate) index: KeyIndex,
    pub(crate) revisions: RevisionsTable<'t>,
    pub(crate) leases: Table<'t, i64, i64>,
    pub(crate) lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    pub(crate) lease_remaining: Table<'t, i64, i64>,
    /// Store revision before the command being applied.
    pub(crate) rev: i64,
    pub(crate) compacted: i64,
    /// Writes made so far by the command being applied.
    pub(crate) sub: u64,
    pub(crate) events: Vec<Event>,
    undo: Vec<Undo>,
}

/// How to take back one mutation of the command being applied.
enum Undo {
    /// A version was added to the index and to `revisions`.
    Inserted { key: Vec<u8>, main: u64, sub: u64 },
    /// `(lease, key)` was added to (`added`) or removed from `lease_keys`.
    LeaseKey { lease: i64, key: Vec<u8>, added: bool },
}

impl<'t> Writer<'t> {
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        index: KeyIndex,
        rev: i64,
        compacted: i64,
    ) -> Result<Writer<'t>, MvccError> {
        Ok(Writer {
            index,
            revisions: txn.open_table(REVISIONS)?,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            lease_remaining: txn.open_table(LEASE_REMAINING)?,
            rev,
            compacted,
            sub: 0,
            events: Vec::new(),
            undo: Vec::new(),
        })
    }

    /// Starts a command: no writes yet.
    pub(crate) fn begin(&mut self) {
        self.sub = 0;
        self.events.clear();
        self.undo.clear();
    }

    /// Takes back every key-table mutation of the command being applied.
    pub(crate) fn rollback(&mut self) -> Result<(), MvccError> {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Inserted { key, main, sub } => {
                    self.index.remove(&key, main, sub);
                    self.revisions.remove((main, sub))?;
                }
                Undo::LeaseKey { lease, key, added } => {
                    if added {
                        self.lease_keys.remove((lease, key.as_slice()))?;
                    } else {
                        self.lease_keys.insert((lease, key.as_slice()), ())?;
                    }
                }
            }
        }
        self.sub = 0;
        self.events.clear();
        Ok(())
    }

    /// Ends a command: raises the revision if it wrote, returns its events.
    pub(crate) fn finish(&mut self) -> Vec<Event> {
        if self.sub > 0 {
            self.rev += 1;
        }
        self.sub = 0;
        self.undo.clear();
        std::mem::take(&mut self.events)
    }

    /// Revision a read inside the command sees as current (etcd's `storeTxnWrite.Range`).
    pub(crate) fn view_rev(&self) -> i64 {
        if self.sub > 0 {
            self.rev + 1
        } else {
            self.rev
        }
    }

    pub(crate) fn reader(&self) -> Reader<'_, RevisionsTable<'t>> {
        Reader { index: &self.index, revisions: &self.revisions }
    }

    pub(crate) fn lease_exists(&self, id: i64) -> Result<bool, MvccError> {
        use redb::ReadableTable;
        Ok(self.leases.get(id)?.is_some())
    }

    /// Writes a new version of `key` and returns the version it replaced.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<KeyValue>, MvccError> {
        let main = rev_u64(self.rev + 1);
        let sub = self.sub;
        let prev = self.reader().latest(key)?;
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (self.rev + 1, 1),
        };
        let record = Record::Put { create_revision, version, lease, value: value.to_vec() };
        self.insert_version(key, main, sub, &record)?;
        if let Some(p) = &prev {
            if p.lease != 0 {
                self.detach(p.lease, key)?;
            }
        }
        if lease != 0 && self.lease_keys.insert((lease, key), ())?.is_none() {
            self.undo.push(Undo::LeaseKey { lease, key: key.to_vec(), added: true });
        }
        self.sub += 1;
        self.events.push(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: self.rev + 1,
                version,
                value: value.to_vec(),
                lease,
            },
            prev_kv: prev.clone(),
        });
        Ok(prev)
    }

    /// Deletes `key` if it is live; whether it was. Its event carries no `prev_kv` (see
    /// [`Writer::delete_version`]).
    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<bool, MvccError> {
        match self.reader().live_version(key, At::Current) {
            Some((main, sub)) => {
                self.delete_version(key, main, sub, false)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes `key`, whose live version is `(main, sub)`. The old version is read only
    /// `with_prev` (for a DeleteRange that asked for it); otherwise the delete writes the
    /// tombstone and reads nothing, as etcd's does, and its event has no `prev_kv`: a
    /// watcher that wants it reads it with [`crate::Store::fill_delete_prevs`].
    fn delete_version(&mut self, key: &[u8], main: u64, sub: u64, with_prev: bool) -> Result<(), MvccError> {
        let version = self
            .index
            .version(key, main, sub)
            .filter(|v| !v.tombstone)
            .ok_or_else(|| MvccError::Corrupt(format!("{main}.{sub} is not a live version of key {key:?}")))?;
        let prev = if with_prev { self.reader().kv_of(key, main, sub)? } else { None };
        let tombstone_main = rev_u64(self.rev + 1);
        self.insert_version(key, tombstone_main, self.sub, &Record::Tombstone)?;
        if version.lease != 0 {
            self.detach(version.lease, key)?;
        }
        self.sub += 1;
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue { key: key.to_vec(), mod_revision: self.rev + 1, ..KeyValue::default() },
            prev_kv: prev,
        });
        Ok(())
    }

    fn insert_version(&mut self, key: &[u8], main: u64, sub: u64, record: &Record) -> Result<(), MvccError> {
        self.revisions.insert((main, sub), StoredVersion::of(key, record).as_slice())?;
        self.index.push(key, Version::of(main, sub, record));
        self.undo.push(Undo::Inserted { key: key.to_vec(), main, sub });
        Ok(())
    }

    fn detach(&mut self, lease: i64, key: &[u8]) -> Result<(), MvccError> {
        if self.lease_keys.remove((lease, key))?.is_some() {
            self.undo.push(Undo::LeaseKey { lease, key: key.to_vec(), added: false });
        }
        Ok(())
    }

    /// Deletes every live key in the bounds, in key order; returns how many, and the
    /// deleted versions if `with_prev` (copied from the events, which then hold them too;
    /// without `with_prev` no old version is read at all).
    ///
    /// The live keys are collected first with their versions (memory: one copy of each
    /// matched key), then each is deleted without looking it up again.
    pub(crate) fn delete_range(
        &mut self,
        bounds: KeyBounds<'_>,
        with_prev: bool,
    ) -> Result<(usize, Vec<KeyValue>), MvccError> {
        let mut live: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        self.reader().visit(bounds, At::Current, false, |k, main, sub| {
            live.push((k.to_vec(), main, sub));
            Ok(true)
        })?;
        let first_event = self.events.len();
        let deleted = live.len();
        for (key, main, sub) in live {
            self.delete_version(&key, main, sub, with_prev)?;
        }
        let prevs = if with_prev {
            self.events[first_event..].iter().filter_map(|event| event.prev_kv.clone()).collect()
        } else {
            Vec::new()
        };
        Ok((deleted, prevs))
    }
}
