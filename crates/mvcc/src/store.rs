//! [`Store`]: the state machine as the server sees it — open, apply, read, maintain.
//!
//! Every apply is one redb write transaction that also stores the applied Raft index, so
//! after a crash the store is exactly at some applied index and the server replays the log
//! after it; entries at or below it are skipped, which makes replay idempotent. A batch of
//! entries shares one transaction (one fsync: the server's group commit). An etcd error is a
//! command's answer, not a failure: the entry still counts as applied. A storage error
//! aborts the whole batch and nothing of it is applied.
//!
//! Reads run in their own read transactions (a consistent snapshot) with the key index
//! published at the same commit (see `index`): a read waits at most for a commit to
//! finish, never for an apply to run. The database sits behind an `RwLock` only so that
//! [`Store::defragment`] can have it alone, as redb's compaction requires. A read holds
//! that lock only while it opens its transaction, not while it runs: a defragmentation
//! waiting for a long read (a snapshot being sent) must not stop every read and apply
//! behind it. So compaction finds the database free of readers only between reads, and
//! [`Store::defragment`] tries in short, bounded holds (see there).
//!
//! Status's "size in use" needs redb's statistics, which only a write transaction gives
//! and which walk every table: it is measured at most once a second, never by waiting for
//! the writer, and the last measure is served meanwhile (see [`Store::db_size_in_use_bytes`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use redb::backends::InMemoryBackend;
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};

use crate::command::{Applied, Command, Response};
use crate::error::MvccError;
use crate::events::{ChunkLimits, EventChunk};
use crate::index::{KeyIndex, Version};
use crate::read::Reader;
use crate::schema::StoredVersion;
use crate::schema::{
    INITIAL_REVISION, LEASES, LEASE_KEYS, LEASE_REMAINING, META, META_APPLIED, META_COMPACTED, META_REVISION,
    META_SCHEMA, NEVER_COMPACTED, REVISIONS, SCHEMA_VERSION, SCHEMA_VERSION_KEY_ORDERED,
};
use crate::snapshot::{self, SnapshotMeta};
use crate::types::{Event, HashKv, Lease, RangeRequest, RangeResponse, StoreStats, TxnRequest, TxnResponse};
use crate::validate::validate_range;
use crate::write::Writer;
use crate::{compact, events, hash, lease, ops, range, txn, upgrade};

/// A reader of the key tables of a read-only snapshot.
type SnapshotReader<'a> = Reader<'a, ReadOnlyTable<(u64, u64), &'static [u8]>>;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct Options {
    /// fsync every commit (redb `Durability::Immediate`). With `false` (redb
    /// `Durability::None`) commits stay atomic but a crash may take the latest ones back:
    /// the store reopens at an older applied index and the server must still have the log
    /// entries after it. Meant for tests and simulations.
    pub sync: bool,
    /// redb's page cache, in bytes.
    pub cache_size: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { sync: true, cache_size: 256 * 1024 * 1024 }
    }
}

/// The revisioned key-value store (see the crate docs).
pub struct Store {
    db: RwLock<Database>,
    /// The key index as of the last commit. A commit and the publication of its index
    /// happen under the write lock; a read opens its transaction and clones the index
    /// under the read lock, so the two always match.
    index: RwLock<KeyIndex>,
    path: Option<PathBuf>,
    sync: bool,
    applied: AtomicU64,
    /// The applied index as of the last durable commit.
    durable_applied: AtomicU64,
    revision: AtomicI64,
    /// The last measure of the bytes in use, and when it was taken.
    size_in_use: Mutex<SizeInUse>,
    compacted: AtomicI64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("applied", &self.applied_index())
            .field("revision", &self.current_revision())
            .field("compacted", &self.compacted_revision())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store in the file at `path`, fsyncing every commit.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, MvccError> {
        Store::open_with(path, Options::default())
    }

    /// Opens (or creates) the store in the file at `path`.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Store, MvccError> {
        let path = path.as_ref();
        let db = redb::Builder::new().set_cache_size(options.cache_size).create(path)?;
        Store::init(db, Some(path.to_path_buf()), options.sync, None)
    }

    /// A store that lives in memory only (tests, simulation).
    pub fn in_memory() -> Result<Store, MvccError> {
        let db = redb::Builder::new().create_with_backend(InMemoryBackend::new())?;
        Store::init(db, None, false, None)
    }

    /// Builds a new store at `path` (which must not exist) from a snapshot written by
    /// [`write_snapshot`](Store::write_snapshot). On any error the partial file is removed.
    /// To replace a live store: restore into a new path, close the old store, rename the
    /// new file over the old one, open it.
    pub fn restore_snapshot(
        path: impl AsRef<Path>,
        input: impl Read,
        options: Options,
    ) -> Result<(Store, SnapshotMeta), MvccError> {
        let path = path.as_ref();
        snapshot::check_target(path)?;
        let result = (|| {
            let db = redb::Builder::new().set_cache_size(options.cache_size).create(path)?;
            let (meta, index) = Store::fill_from_snapshot(&db, input, options.sync)?;
            Ok((Store::init(db, Some(path.to_path_buf()), options.sync, Some(index))?, meta))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// [`restore_snapshot`](Store::restore_snapshot) into an in-memory store.
    pub fn restore_snapshot_in_memory(input: impl Read) -> Result<(Store, SnapshotMeta), MvccError> {
        let db = redb::Builder::new().create_with_backend(InMemoryBackend::new())?;
        let (meta, index) = Store::fill_from_snapshot(&db, input, false)?;
        Ok((Store::init(db, None, false, Some(index))?, meta))
    }

    /// Replaces the whole state of this store with a snapshot, in one transaction: readers
    /// see the old state until it commits and the new one after, and a damaged stream (or
    /// a crash meanwhile) leaves the old state as it was. Durable at once for a store that
    /// syncs. This is how a running member adopts a snapshot its leader sent, without
    /// closing the store its readers share.
    pub fn replace_with_snapshot(&self, input: impl Read) -> Result<SnapshotMeta, MvccError> {
        self.replace_with_snapshot_with(input, |_| Ok(()))
    }

    /// [`replace_with_snapshot`](Store::replace_with_snapshot), calling `before_commit`
    /// with what the stream holds (its application metadata included) once the whole
    /// stream is read and checked, and before the replacement commits; an error from it
    /// aborts the replacement. This is where the application installs state of its own
    /// that must never be behind the store: if it is installed and the process stops
    /// before the commit, the store is still at its old index and restores again.
    pub fn replace_with_snapshot_with(
        &self,
        input: impl Read,
        before_commit: impl FnOnce(&SnapshotMeta) -> Result<(), MvccError>,
    ) -> Result<SnapshotMeta, MvccError> {
        let db = self.db();
        let mut txn = db.begin_write()?;
        txn.set_durability(if self.sync { Durability::Immediate } else { Durability::None })?;
        snapshot::clear(&txn)?;
        let (meta, index) = snapshot::read_into(&txn, input)?;
        before_commit(&meta)?;
        let mut published = self.index_mut();
        txn.commit()?;
        // The replaced index is freed after the lock is released, not under it.
        let replaced = std::mem::replace(&mut *published, index);
        drop(published);
        drop(replaced);
        self.applied.store(meta.applied_index, Ordering::Release);
        self.revision.store(meta.revision, Ordering::Release);
        self.compacted.store(meta.compacted_revision, Ordering::Release);
        if self.sync {
            self.durable_applied.store(meta.applied_index, Ordering::Release);
        }
        Ok(meta)
    }

    /// Reads a whole snapshot stream and checks it (framing, records, checksum) without
    /// storing anything; returns what it holds. For a snapshot that arrived over the
    /// network, before anything depends on it.
    pub fn verify_snapshot(input: impl Read) -> Result<SnapshotMeta, MvccError> {
        snapshot::verify(input)
    }

    /// Fills a new database from a snapshot stream; returns what it holds and its key index.
    fn fill_from_snapshot(db: &Database, input: impl Read, sync: bool) -> Result<(SnapshotMeta, KeyIndex), MvccError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(if sync { Durability::Immediate } else { Durability::None })?;
        let filled = snapshot::read_into(&txn, input)?;
        txn.commit()?;
        Ok(filled)
    }

    /// Opens the store in `db`, creating or converting its tables. `index` is the key
    /// index of what `db` holds when the caller just built it (a restore); otherwise it is
    /// rebuilt from the `revisions` table.
    fn init(db: Database, path: Option<PathBuf>, sync: bool, index: Option<KeyIndex>) -> Result<Store, MvccError> {
        let txn = db.begin_write()?;
        let (applied, revision, compacted) = {
            let mut meta = txn.open_table(META)?;
            // Create every table, so that read transactions can always open them.
            txn.open_table(REVISIONS)?;
            txn.open_table(LEASES)?;
            txn.open_table(LEASE_KEYS)?;
            txn.open_table(LEASE_REMAINING)?;
            let schema = meta.get(META_SCHEMA)?.map(|g| g.value());
            match schema {
                None => {
                    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                    meta.insert(META_APPLIED, 0)?;
                    meta.insert(META_REVISION, INITIAL_REVISION)?;
                    meta.insert(META_COMPACTED, NEVER_COMPACTED)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(SCHEMA_VERSION_KEY_ORDERED) => {
                    upgrade::from_key_ordered(&txn)?;
                    meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                }
                Some(other) => {
                    return Err(MvccError::Corrupt(format!(
                        "store schema version {other}, this build reads version {SCHEMA_VERSION}"
                    )))
                }
            }
            read_meta(&meta)?
        };
        let index = match index {
            Some(index) => index,
            None => load_index(&txn)?,
        };
        txn.commit()?;
        let size_in_use = Mutex::new(SizeInUse { bytes: measure_size_in_use(&db)?, measured_at: Instant::now() });
        Ok(Store {
            size_in_use,
            db: RwLock::new(db),
            index: RwLock::new(index),
            path,
            sync,
            applied: AtomicU64::new(applied),
            durable_applied: AtomicU64::new(applied),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
        })
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    fn db_mut(&self) -> RwLockWriteGuard<'_, Database> {
        self.db.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The published index, for a commit to replace.
    fn index_mut(&self) -> RwLockWriteGuard<'_, KeyIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A read transaction and the key index that matches it. The database lock is held
    /// only while the transaction opens (see the module docs).
    fn read_view(&self) -> Result<(ReadTransaction, KeyIndex), MvccError> {
        let db = self.db();
        let published = self.index.read().unwrap_or_else(|e| e.into_inner());
        let txn = db.begin_read()?;
        Ok((txn, published.clone()))
    }

    /// A read transaction, for reads that need no key index; the lock as in `read_view`.
    fn begin_read(&self) -> Result<ReadTransaction, MvccError> {
        Ok(self.db().begin_read()?)
    }

    /// Index of the last applied Raft entry (0 for a new store).
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The store revision (1 for a new store).
    pub fn current_revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The last compaction's revision (-1 if never compacted, as etcd).
    pub fn compacted_revision(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Applies one entry; `Ok(None)` when `index` was already applied.
    pub fn apply(&self, index: u64, command: &Command) -> Result<Option<Applied>, MvccError> {
        Ok(self.apply_entries(std::iter::once((index, command)))?.pop())
    }

    /// Applies entries in order in one transaction. Entries at or below the applied index
    /// (or not above an earlier entry of the batch) are skipped and get no [`Applied`].
    pub fn apply_batch(&self, entries: &[(u64, Command)]) -> Result<Vec<Applied>, MvccError> {
        self.apply_entries(entries.iter().map(|(i, c)| (*i, c)))
    }

    /// Like [`Store::apply_batch`], but with `durable == false` the commit is not fsynced:
    /// a crash may roll the store back to its last durable commit (consistently, with
    /// the applied index that goes with it). The caller must then still hold the Raft log
    /// after [`Store::durable_applied_index`] to replay, and should call [`Store::sync`]
    /// regularly (redb frees pages only at durable commits).
    pub fn apply_batch_deferred(&self, entries: &[(u64, Command)], durable: bool) -> Result<Vec<Applied>, MvccError> {
        self.apply_entries_with(entries.iter().map(|(i, c)| (*i, c)), durable && self.sync)
    }

    /// Makes every earlier commit durable (one fsync).
    pub fn sync(&self) -> Result<(), MvccError> {
        let db = self.db();
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        self.durable_applied.store(self.applied.load(Ordering::Acquire), Ordering::Release);
        Ok(())
    }

    /// The applied index a crash cannot take back.
    pub fn durable_applied_index(&self) -> u64 {
        self.durable_applied.load(Ordering::Acquire)
    }

    fn apply_entries<'c>(&self, entries: impl Iterator<Item = (u64, &'c Command)>) -> Result<Vec<Applied>, MvccError> {
        self.apply_entries_with(entries, self.sync)
    }

    fn apply_entries_with<'c>(
        &self,
        entries: impl Iterator<Item = (u64, &'c Command)>,
        durable: bool,
    ) -> Result<Vec<Applied>, MvccError> {
        let db = self.db();
        let mut txn = db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        let mut out = Vec::new();
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (applied, revision, compacted, index) = apply_in(&txn, index, entries, &mut out)?;
        if out.is_empty() {
            txn.abort()?;
            return Ok(out);
        }
        let mut published = self.index_mut();
        txn.commit()?;
        // The replaced index is freed after the lock is released, not under it.
        let replaced = std::mem::replace(&mut *published, index);
        drop(published);
        drop(replaced);
        self.applied.store(applied, Ordering::Release);
        self.revision.store(revision, Ordering::Release);
        self.compacted.store(compacted, Ordering::Release);
        if durable {
            self.durable_applied.store(applied, Ordering::Release);
        }
        Ok(out)
    }

    /// Serves a Range from a read-only snapshot.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        validate_range(req)?;
        self.read_snapshot(|reader, revision, compacted| range::range(reader, req, revision, compacted))
    }

    /// Serves a read-only Txn ([`crate::is_read_only_txn`]) from a read-only snapshot, as
    /// the log would have answered it at this revision (nothing written, same revision).
    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.read_snapshot(|reader, revision, compacted| crate::txn::read_only_txn(reader, req, revision, compacted))
    }

    /// Runs `read` on one read-only snapshot of the key tables, with the snapshot's
    /// current and compacted revisions.
    fn read_snapshot<T>(
        &self,
        read: impl FnOnce(&SnapshotReader<'_>, i64, i64) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        let (txn, index) = self.read_view()?;
        let meta = txn.open_table(META)?;
        let (_, revision, compacted) = read_meta(&meta)?;
        let revisions = txn.open_table(REVISIONS)?;
        read(&Reader { index: &index, revisions: &revisions }, revision, compacted)
    }

    /// Hash of the history kept at or below `revision` (0 = current); `Compacted` if
    /// `revision` is at or below the compacted revision, `FutureRevision` above the current.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META)?;
        let (_, current, compacted) = read_meta(&meta)?;
        let revisions = txn.open_table(REVISIONS)?;
        hash::hash_kv(&revisions, revision, current, compacted)
    }

    /// Events of revisions `from..=current` (a `from` below 1 counts as 1), for watchers
    /// that start in the past; at least `max_events` of them unless history ends first,
    /// never splitting a revision. `Compacted` if `from` is below the compacted revision.
    pub fn events_since(&self, from: i64, max_events: usize) -> Result<Vec<Event>, MvccError> {
        let (txn, index) = self.read_view()?;
        let meta = txn.open_table(META)?;
        let (_, _, compacted) = read_meta(&meta)?;
        let revisions = txn.open_table(REVISIONS)?;
        let reader = Reader { index: &index, revisions: &revisions };
        events::events_since(&reader, from, max_events, compacted)
    }

    /// A bounded catch-up read for a watcher: the events of revisions `from..=through`,
    /// with `through` at most the current revision (see [`EventChunk`]). `Compacted` if
    /// `from` is below the compacted revision, or, for a `resumed` read (a watcher that
    /// has already read or been sent events, going on from where it stopped), if `from` is
    /// the compacted revision itself: a compaction at C removes the tombstones of C, so
    /// C's deletes (part of a Txn, or a revoke) can no longer be read. A watcher's first
    /// read may start exactly there, as etcd allows.
    pub fn events_chunk(&self, from: i64, limits: ChunkLimits, resumed: bool) -> Result<EventChunk, MvccError> {
        let (txn, index) = self.read_view()?;
        let meta = txn.open_table(META)?;
        let (_, current, compacted) = read_meta(&meta)?;
        let revisions = txn.open_table(REVISIONS)?;
        let reader = Reader { index: &index, revisions: &revisions };
        if resumed && from <= compacted {
            return Err(MvccError::Compacted);
        }
        events::events_chunk(&reader, from, limits, compacted, current)
    }

    /// Gives each Delete event without `prev_kv` the version it deleted (for a watcher that
    /// asked for `prev_kv`): the apply and the catch-up reads leave it out unless a
    /// DeleteRange asked for it. See `events::fill_delete_prevs`.
    pub fn fill_delete_prevs(&self, events: &mut [Event]) -> Result<(), MvccError> {
        let (txn, index) = self.read_view()?;
        let revisions = txn.open_table(REVISIONS)?;
        events::fill_delete_prevs(&Reader { index: &index, revisions: &revisions }, events)
    }

    /// Every granted lease with its TTL and attached keys, by id.
    pub fn leases(&self) -> Result<Vec<Lease>, MvccError> {
        self.list_leases(true)
    }

    /// Every granted lease with its TTL and checkpoint, by id, without the keys (what a
    /// new leader needs to start timing them).
    pub fn lease_timers(&self) -> Result<Vec<Lease>, MvccError> {
        self.list_leases(false)
    }

    fn list_leases(&self, with_keys: bool) -> Result<Vec<Lease>, MvccError> {
        let txn = self.begin_read()?;
        let leases = txn.open_table(LEASES)?;
        let lease_keys = txn.open_table(LEASE_KEYS)?;
        let remaining = txn.open_table(LEASE_REMAINING)?;
        lease::list(&leases, &lease_keys, &remaining, with_keys)
    }

    /// One lease, if granted.
    pub fn lease(&self, id: i64) -> Result<Option<Lease>, MvccError> {
        let txn = self.begin_read()?;
        let leases = txn.open_table(LEASES)?;
        let lease_keys = txn.open_table(LEASE_KEYS)?;
        let remaining = txn.open_table(LEASE_REMAINING)?;
        lease::get(&leases, &lease_keys, &remaining, id)
    }

    /// Writes a snapshot of the whole state (a consistent cut at one applied index) to
    /// `out`, with empty application metadata; applies may run meanwhile. See
    /// [`restore_snapshot`](Store::restore_snapshot).
    pub fn write_snapshot(&self, out: impl Write) -> Result<SnapshotMeta, MvccError> {
        self.write_snapshot_with(out, |_| Ok(Vec::new()))
    }

    /// [`write_snapshot`](Store::write_snapshot) with application metadata: once the read
    /// transaction the snapshot is written from is open, `app_meta` is called with its
    /// applied index, before anything is written, and what it returns travels in the stream
    /// (restore and verify give it back in [`SnapshotMeta::app_meta`]). A caller that holds
    /// its applies until `app_meta` has run captures its own state at exactly the
    /// snapshot's index; an error from `app_meta` abandons the snapshot.
    pub fn write_snapshot_with(
        &self,
        out: impl Write,
        app_meta: impl FnOnce(u64) -> Result<Vec<u8>, MvccError>,
    ) -> Result<SnapshotMeta, MvccError> {
        let (txn, index) = self.read_view()?;
        snapshot::write(&txn, &index, out, app_meta)
    }

    /// How many live keys, versions and leases the store holds. Counting the live keys
    /// walks the key index (one step per distinct key): for tests and diagnostics.
    pub fn stats(&self) -> Result<StoreStats, MvccError> {
        let (txn, index) = self.read_view()?;
        let mut keys = 0u64;
        let everything = crate::keyrange::KeyBounds::new(b"", b"\0");
        index.visit::<MvccError>(everything, u64::MAX, false, |_, _, _| {
            keys += 1;
            Ok(true)
        })?;
        Ok(StoreStats { keys, versions: index.version_count(), leases: txn.open_table(LEASES)?.len()? })
    }

    /// Size of the database file (for an in-memory store: the bytes allocated).
    pub fn db_size_bytes(&self) -> Result<u64, MvccError> {
        match &self.path {
            Some(p) => Ok(std::fs::metadata(p)?.len()),
            None => self.db_size_in_use_bytes(),
        }
    }

    /// Bytes of the database in use (allocated pages); the rest of the file is free space
    /// that [`defragment`](Store::defragment) gives back. Never waits: the measure is at
    /// most [`SIZE_IN_USE_MAX_AGE`] old when the writer is free, and the last one taken
    /// while an apply or a defragmentation holds the database.
    pub fn db_size_in_use_bytes(&self) -> Result<u64, MvccError> {
        let mut cached = self.size_in_use.lock().unwrap_or_else(|e| e.into_inner());
        if cached.measured_at.elapsed() < SIZE_IN_USE_MAX_AGE {
            return Ok(cached.bytes);
        }
        let Ok(db) = self.db.try_read() else {
            return Ok(cached.bytes);
        };
        match try_measure_size_in_use(&db)? {
            Some(bytes) => {
                *cached = SizeInUse { bytes, measured_at: Instant::now() };
                Ok(bytes)
            }
            None => Ok(cached.bytes),
        }
    }

    /// Compacts the database file (redb `compact`), as etcd's Defragment does; waits up to
    /// `patience` for a moment with no read open. Applies and new reads wait while the
    /// compaction itself runs (redb needs the database alone), and for at most
    /// [`DEFRAGMENT_HOLD`] at a time while it waits for open reads to end; between holds
    /// they run. `Busy` if no moment came within `patience` (a long read, such as a
    /// snapshot being sent, outlasted it).
    pub fn defragment(&self, patience: Duration) -> Result<(), MvccError> {
        let deadline = Instant::now() + patience;
        loop {
            if self.try_defragment_within(DEFRAGMENT_HOLD)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MvccError::Busy(format!(
                    "defragment found no moment without an open read in {} ms; try again",
                    patience.as_millis()
                )));
            }
            std::thread::sleep(DEFRAGMENT_HOLD);
        }
    }

    /// One hold of the database for [`defragment`](Store::defragment): false if reads
    /// were still open when `hold` ran out.
    fn try_defragment_within(&self, hold: Duration) -> Result<bool, MvccError> {
        let mut db = self.db_mut();
        let until = Instant::now() + hold;
        loop {
            match db.compact() {
                Ok(more) => {
                    // Each pass may free more; a handful reaches the fixed point in practice.
                    let mut more = more;
                    for _ in 0..7 {
                        if !more {
                            break;
                        }
                        more = db.compact()?;
                    }
                    let bytes = measure_size_in_use(&db)?;
                    *self.size_in_use.lock().unwrap_or_else(|e| e.into_inner()) =
                        SizeInUse { bytes, measured_at: Instant::now() };
                    return Ok(true);
                }
                Err(redb::CompactionError::TransactionInProgress) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(redb::CompactionError::TransactionInProgress) => return Ok(false),
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// How old the served "size in use" may be when the writer is free to measure it again.
pub const SIZE_IN_USE_MAX_AGE: Duration = Duration::from_secs(1);

/// Longest a defragmentation holds the database while it waits for open reads to end.
pub const DEFRAGMENT_HOLD: Duration = Duration::from_millis(20);

/// A measure of the bytes in use.
#[derive(Clone, Copy, Debug)]
struct SizeInUse {
    bytes: u64,
    measured_at: Instant,
}

/// The bytes in use, waiting for the writer.
fn measure_size_in_use(db: &Database) -> Result<u64, MvccError> {
    size_in_use_of(db.begin_write()?)
}

/// The bytes in use, or `None` if a write transaction is running.
fn try_measure_size_in_use(db: &Database) -> Result<Option<u64>, MvccError> {
    match db.try_begin_write() {
        Ok(txn) => size_in_use_of(txn).map(Some),
        Err(redb::TransactionError::WouldBlock) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

fn size_in_use_of(txn: WriteTransaction) -> Result<u64, MvccError> {
    let stats = txn.stats()?;
    txn.abort()?;
    Ok(stats.allocated_pages() * stats.page_size() as u64)
}

/// `(applied index, revision, compacted revision)` from the meta table.
pub(crate) fn read_meta<T: ReadableTable<&'static str, i64>>(meta: &T) -> Result<(u64, i64, i64), MvccError> {
    let get = |name: &str| -> Result<i64, MvccError> {
        meta.get(name)?.map(|g| g.value()).ok_or_else(|| MvccError::Corrupt(format!("meta entry {name:?} is missing")))
    };
    let applied = u64::try_from(get(META_APPLIED)?).map_err(|_| MvccError::Corrupt("negative applied index".into()))?;
    Ok((applied, get(META_REVISION)?, get(META_COMPACTED)?))
}

/// Applies `entries` inside `txn`, changing `index` with them and pushing one [`Applied`]
/// per applied entry; returns the new `(applied index, revision, compacted revision)` and
/// the index to publish once `txn` commits.
fn apply_in<'c>(
    txn: &WriteTransaction,
    index: KeyIndex,
    entries: impl Iterator<Item = (u64, &'c Command)>,
    out: &mut Vec<Applied>,
) -> Result<(u64, i64, i64, KeyIndex), MvccError> {
    let mut meta = txn.open_table(META)?;
    let (mut applied, revision, compacted) = read_meta(&meta)?;
    let mut w = Writer::open(txn, index, revision, compacted)?;
    for (index, command) in entries {
        if index <= applied {
            continue;
        }
        w.begin();
        let result = match apply_one(&mut w, command) {
            Ok(r) => Ok(r),
            Err(e) if e.is_storage() => return Err(e),
            Err(e) => {
                w.rollback()?;
                Err(e)
            }
        };
        let events = w.finish();
        applied = index;
        out.push(Applied { index, result, events, revision: w.rev });
    }
    meta.insert(
        META_APPLIED,
        i64::try_from(applied).map_err(|_| MvccError::Internal("applied index overflow".into()))?,
    )?;
    meta.insert(META_REVISION, w.rev)?;
    meta.insert(META_COMPACTED, w.compacted)?;
    Ok((applied, w.rev, w.compacted, w.index))
}

/// Builds the key index from the `revisions` table (every kept version, in revision
/// order): what opening a store costs, one read of the history.
fn load_index(txn: &WriteTransaction) -> Result<KeyIndex, MvccError> {
    let revisions = txn.open_table(REVISIONS)?;
    let mut index = KeyIndex::default();
    for entry in revisions.iter()? {
        let (k, v) = entry?;
        let (main, sub) = k.value();
        let (key, record) = StoredVersion::split(v.value())?;
        index.push(key, Version::of_encoded(main, sub, record)?);
    }
    Ok(index)
}

fn apply_one(w: &mut Writer<'_>, command: &Command) -> Result<Response, MvccError> {
    Ok(match command {
        Command::Noop => Response::Noop,
        Command::Put(req) => Response::Put(ops::apply_put(w, req)?),
        Command::DeleteRange(req) => Response::DeleteRange(ops::delete_range(w, req)?),
        Command::Txn(req) => Response::Txn(txn::apply_txn(w, req)?),
        Command::Compact(req) => Response::Compact(compact::compact(w, req)?),
        Command::LeaseGrant(req) => Response::LeaseGrant(lease::grant(w, req)?),
        Command::LeaseRevoke(req) => Response::LeaseRevoke(lease::revoke(w, req)?),
        Command::LeaseExpire(req) => {
            Response::LeaseRevoke(lease::revoke(w, &crate::types::LeaseRevokeRequest { id: req.id })?)
        }
        Command::LeaseCheckpoint(req) => {
            lease::checkpoint(w, req)?;
            Response::LeaseCheckpoint
        }
    })
}
