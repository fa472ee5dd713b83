//! The log the Raft core reads: concord-wal's log plus this member's snapshot of the state
//! machine, which a leader streams to a follower whose next entry was compacted away, and
//! which a follower stages chunk by chunk before installing it.
//!
//! Files under `<data-dir>/raft/`:
//! - `wal/` and `snap/`: concord-wal's segments and snapshot record. The WAL's snapshot
//!   record is small: the core's `SnapshotMeta` (index, term, membership) and the length
//!   of the state-machine file, if the snapshot has one ([`SnapshotRecord`]).
//! - `snapdata/<index>.mvcc` (16 hex digits): the state machine at that index, as
//!   concord-mvcc's checksummed snapshot stream, with the member directory at the same
//!   index as the stream's application metadata. Chunks are read from it at an offset, so
//!   a snapshot of any size costs one chunk of memory.
//! - `snapdata/incoming.part`: a snapshot being received from the leader.
//! - `snapdata/local.tmp`: a snapshot the apply task is writing.
//!
//! Most snapshots have no state file: the member's own periodic snapshot is the state
//! machine's durable commit itself (its redb file holds the state at or past the index,
//! and a restart replays the log from there), as etcd's is. Writing the whole state
//! machine out on every `--snapshot-count` entries cost a large share of a member's CPU
//! and disk under load, and pinned redb's freed pages for as long as the dump read. A
//! state file is written only when one is needed: a leader asked for a chunk of a
//! snapshot without one notes it (`take_state_file_wanted`), the Raft task asks the apply
//! task for a file, and the file is adopted as a newer snapshot (or attached to the
//! current one if nothing was applied since). A snapshot received from the leader keeps
//! its file, which a restart needs if the state machine's restore from it was cut short.
//!
//! Order of durability, on which restart relies: a state file is complete, fsynced and
//! linked or renamed into place before the WAL records it, and a snapshot without one is
//! recorded only once the state machine holds its index durably; the WAL records it (and, for a snapshot
//! from the leader, drops the log it replaces) before older state files are removed and
//! before the log is compacted. Whatever a crash interrupts, `open` finds either the old
//! snapshot with its file or the new one with its file, and removes the rest.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_mvcc::Store;
use concord_raft::{Entry, HardState, Index, LogStore, SnapshotChunk, SnapshotData, SnapshotMeta, StorageError, Term};
use concord_wal::{Wal, WalError, WalOptions};

use crate::members::{check_snapshot_directory, MemberDirectory};

/// The directory of state-machine snapshot files, under the raft directory.
const STATE_DIR: &str = "snapdata";
/// Where a snapshot arriving from the leader is staged.
const INCOMING_FILE: &str = "incoming.part";
/// Where the apply task writes a snapshot before renaming it to its index.
pub const LOCAL_TEMPORARY_FILE: &str = "local.tmp";
/// Identifies (and versions) the record kept in the WAL's snapshot file: of a snapshot with
/// a state file (followed by the file's length), and of one without (a build older than
/// snapshots without a file refuses the second as not a snapshot record, rather than
/// look for a file that was never written).
const RECORD_MAGIC: &[u8; 8] = b"CNCDSMR1";
const RECORD_MAGIC_WITHOUT_FILE: &[u8; 8] = b"CNCDSMR2";

#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RaftStorageError + '_ {
    move |source| RaftStorageError::Io { path: path.to_path_buf(), source }
}

/// What the WAL's snapshot file holds for this member: the core's metadata and the length
/// of the state file (the state file's own trailer checksums its bytes; the WAL checksums
/// this record), or `None` when the state machine's own durable commit is the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub meta: SnapshotMeta,
    pub state_bytes: Option<u64>,
}

impl SnapshotRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self.state_bytes {
            Some(state_bytes) => {
                out.extend_from_slice(RECORD_MAGIC);
                out.extend_from_slice(&state_bytes.to_le_bytes());
            }
            None => out.extend_from_slice(RECORD_MAGIC_WITHOUT_FILE),
        }
        out.extend_from_slice(&self.meta.encode());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SnapshotRecord, String> {
        let (state_bytes, meta) = match bytes.get(..8) {
            Some(magic) if magic == RECORD_MAGIC => {
                let state_bytes = bytes.get(8..16).ok_or("snapshot record cut short")?;
                (Some(u64::from_le_bytes(state_bytes.try_into().expect("8 bytes"))), &bytes[16..])
            }
            Some(magic) if magic == RECORD_MAGIC_WITHOUT_FILE => (None, &bytes[8..]),
            _ => return Err("not a concord snapshot record (bad magic)".into()),
        };
        let meta = SnapshotMeta::decode(meta).map_err(|e| format!("snapshot metadata: {e}"))?;
        Ok(SnapshotRecord { meta, state_bytes })
    }
}

/// A snapshot the apply task made, for the Raft task to adopt.
#[derive(Debug)]
pub struct LocalSnapshot {
    /// The applied index the snapshot holds.
    pub index: Index,
    /// The state file written for it; `None` for a snapshot that is the state machine's
    /// durable commit at `index`.
    pub state_file: Option<WrittenStateFile>,
    /// The state machine's durable applied index once the snapshot was made (at least
    /// `index`): the log may be compacted up to here without a crash losing anything.
    pub durable_applied: Index,
}

/// A state file the apply task wrote (complete and fsynced).
#[derive(Debug)]
pub struct WrittenStateFile {
    pub path: PathBuf,
    pub bytes: u64,
}

/// What [`RaftStorage::adopt_local`] did with a snapshot the apply task made.
#[derive(Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Recorded in the WAL as this member's snapshot: the log may be compacted behind it.
    Recorded,
    /// A state file at the current snapshot's index, which had none: chunks of the current
    /// snapshot are read from it now; nothing was recorded.
    Attached,
    /// Not newer than the current snapshot: nothing was done (the caller discards it).
    Stale,
}

/// A snapshot being received.
struct Incoming {
    meta: SnapshotMeta,
    file: File,
    received: u64,
    /// The last chunk was staged.
    complete: bool,
}

/// What [`RaftStorage::check_completing_chunk`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum CompletionCheck {
    /// The staged bytes with the chunk are a sound state file of its snapshot.
    Sound,
    /// They are not; why.
    Damaged(String),
    /// The chunk does not continue the staged snapshot (the core will not adopt with it).
    NotAContinuation,
}

/// Reads a whole state file of `meta`'s snapshot, `bytes` long, and checks it: its own
/// checksums, the index it holds, its length and the member directory it carries.
fn check_state_stream(meta: &SnapshotMeta, input: impl Read, bytes: u64) -> Result<(), String> {
    let damaged =
        |error: &dyn std::fmt::Display| format!("the snapshot received for index {} is damaged: {error}", meta.index);
    let checked = Store::verify_snapshot(input).map_err(|error| damaged(&error))?;
    if checked.applied_index != meta.index || checked.bytes != bytes {
        return Err(format!(
            "the snapshot received for index {} holds the state at index {} ({} of {} bytes read)",
            meta.index, checked.applied_index, checked.bytes, bytes
        ));
    }
    check_snapshot_directory(checked.app_meta.as_deref(), meta.index).map_err(|error| damaged(&error))
}

/// The current snapshot's state file, open for chunk reads.
struct StateFile {
    file: File,
    bytes: u64,
}

/// The `LogStore` of a member: see the module documentation.
pub struct RaftStorage {
    wal: Wal,
    state_dir: PathBuf,
    /// The newest durable snapshot (index 0: none).
    snapshot: SnapshotMeta,
    /// The current snapshot's state file, if it has one.
    state_file: Option<StateFile>,
    /// A chunk of the current snapshot was asked for while it had no state file.
    state_file_wanted: Cell<bool>,
    incoming: Option<Incoming>,
    /// The last chunk `check_completing_chunk` last found to complete a sound snapshot,
    /// with what was staged then: staging exactly that chunk makes the file it read.
    /// Dropped as soon as anything else is staged or checked.
    checked_whole: Option<SnapshotChunk>,
    /// When a leader last read a chunk of the current snapshot to send it.
    last_chunk_read: Cell<Option<Instant>>,
}

/// Opens a state file the apply task wrote and checks its length.
fn open_written_state_file(written: &WrittenStateFile) -> Result<StateFile, RaftStorageError> {
    let file = File::open(&written.path).map_err(io_error(&written.path))?;
    let bytes = file.metadata().map_err(io_error(&written.path))?.len();
    if bytes != written.bytes {
        return Err(RaftStorageError::Invalid(format!(
            "the snapshot file {} holds {bytes} bytes, {} were written",
            written.path.display(),
            written.bytes
        )));
    }
    Ok(StateFile { file, bytes })
}

/// The name of the state file of the snapshot at `index`.
pub fn state_file_name(index: Index) -> String {
    format!("{index:016x}.mvcc")
}

fn fsync_dir(dir: &Path) -> Result<(), RaftStorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

impl RaftStorage {
    /// Opens the WAL in `raft_dir` and the snapshot it records; removes state files no
    /// snapshot refers to (staged transfers, interrupted writes, superseded snapshots).
    pub fn open(raft_dir: &Path, options: WalOptions) -> Result<RaftStorage, RaftStorageError> {
        let wal = Wal::open(raft_dir, options)?;
        let state_dir = raft_dir.join(STATE_DIR);
        if !state_dir.is_dir() {
            std::fs::create_dir_all(&state_dir).map_err(io_error(&state_dir))?;
            fsync_dir(raft_dir)?;
        }
        let mut storage = RaftStorage {
            wal,
            state_dir,
            snapshot: SnapshotMeta::default(),
            state_file: None,
            state_file_wanted: Cell::new(false),
            incoming: None,
            checked_whole: None,
            last_chunk_read: Cell::new(None),
        };
        if let Some(saved) = storage.wal.load_snapshot()? {
            let snap_dir = raft_dir.join("snap");
            let record = SnapshotRecord::decode(&saved.data).map_err(|e| {
                RaftStorageError::Invalid(format!(
                    "the snapshot record in {} (index {}) is unreadable: {e}",
                    snap_dir.display(),
                    saved.meta.index
                ))
            })?;
            if (record.meta.index, record.meta.term) != (saved.meta.index, saved.meta.term) {
                return Err(RaftStorageError::Invalid(format!(
                    "the snapshot record in {} says index {} term {}, its file name index {} term {}",
                    snap_dir.display(),
                    record.meta.index,
                    record.meta.term,
                    saved.meta.index,
                    saved.meta.term
                )));
            }
            storage.snapshot = record.meta.clone();
            if let Some(state_bytes) = record.state_bytes {
                storage.state_file = Some(storage.open_recorded_state_file(&record.meta, state_bytes)?);
            }
        }
        storage.remove_state_files(true)?;
        Ok(storage)
    }

    /// Opens the state file the WAL's snapshot record names and checks its length.
    fn open_recorded_state_file(&self, meta: &SnapshotMeta, state_bytes: u64) -> Result<StateFile, RaftStorageError> {
        let path = self.state_dir.join(state_file_name(meta.index));
        let file = File::open(&path).map_err(|error| {
            RaftStorageError::Invalid(format!(
                "the snapshot at index {} needs its state file {}, which cannot be opened ({error}); \
                     restore this member from a backup or remove its data directory and add it again",
                meta.index,
                path.display()
            ))
        })?;
        let bytes = file.metadata().map_err(io_error(&path))?.len();
        if bytes != state_bytes {
            return Err(RaftStorageError::Invalid(format!(
                "the state file {} holds {bytes} bytes, the snapshot record says {state_bytes}; \
                     restore this member from a backup or remove its data directory and add it again",
                path.display(),
            )));
        }
        Ok(StateFile { file, bytes })
    }

    /// The WAL, for what the Raft task reports (segment paths, durable index).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Where state files live (the apply task writes new snapshots there).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Writes entries after the log (see [`Wal::append`]).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.wal.append(entries)
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), WalError> {
        self.wal.set_hard_state(hard_state)
    }

    /// Makes what was written durable (one fdatasync); returns the durable index.
    pub fn sync(&mut self) -> Result<Index, WalError> {
        self.wal.sync()
    }

    /// Drops the log through `index`, which the snapshot covers (see [`Wal::compact`]).
    pub fn compact(&mut self, index: Index) -> Result<(), WalError> {
        self.wal.compact(index)
    }

    /// Whether a chunk of the current snapshot was read (to be sent) within `recently`.
    pub fn is_sending_snapshot(&self, recently: Duration) -> bool {
        self.last_chunk_read.get().is_some_and(|at| at.elapsed() < recently)
    }

    /// A reader over the current snapshot's state file, from its first byte (`None` when
    /// the snapshot has none).
    pub fn state_reader(&self) -> Result<Option<BufReader<File>>, RaftStorageError> {
        if self.snapshot.index == 0 || self.state_file.is_none() {
            return Ok(None);
        }
        let path = self.state_dir.join(state_file_name(self.snapshot.index));
        let file = File::open(&path).map_err(io_error(&path))?;
        Ok(Some(BufReader::with_capacity(1 << 20, file)))
    }

    /// A state machine behind the snapshot (the process stopped while it was being
    /// restored from one) cannot be brought forward from the log, which may start after
    /// it: it is restored from the snapshot here, before the core starts, and the member
    /// directory with it (installed before the state machine commits, as the apply task
    /// does). A state machine at or past the snapshot leaves the directory alone: the
    /// directory is never behind the state machine.
    ///
    /// A snapshot without a state file was recorded only once the state machine had made
    /// its index durable, so a state machine behind one lost durable commits: an error.
    pub fn bring_up_to_snapshot(&self, store: &Store, directory: &MemberDirectory) -> Result<(), RaftStorageError> {
        let behind = store.applied_index();
        if behind >= self.snapshot.index {
            return Ok(());
        }
        let Some(reader) = self.state_reader()? else {
            return Err(RaftStorageError::Invalid(format!(
                "the state machine is at index {behind}, behind the snapshot at index {}, which it held durably \
                 when the snapshot was recorded (the snapshot has no state file to restore from): the state \
                 machine's file lost commits; restore this member from a backup or remove its data directory \
                 and add it again",
                self.snapshot.index
            )));
        };
        let started = std::time::Instant::now();
        let index = self.snapshot.index;
        let restored = store
            .replace_with_snapshot_with(reader, |meta| {
                if meta.applied_index != index {
                    return Err(concord_mvcc::MvccError::Corrupt(format!(
                        "the state file holds the state at index {}",
                        meta.applied_index
                    )));
                }
                directory
                    .restore_from_snapshot(index, meta.app_meta.as_deref())
                    .map_err(|e| concord_mvcc::MvccError::Storage(format!("installing the member directory: {e}")))
            })
            .map_err(|error| {
                RaftStorageError::Invalid(format!(
                    "restoring the state machine from the snapshot at index {} failed: {error}",
                    self.snapshot.index
                ))
            })?;
        if restored.applied_index != self.snapshot.index {
            return Err(RaftStorageError::Invalid(format!(
                "the state file of the snapshot at index {} holds the state at index {}",
                self.snapshot.index, restored.applied_index
            )));
        }
        tracing::info!(
            applied_index = behind,
            snapshot_index = self.snapshot.index,
            millis = started.elapsed().as_millis() as u64,
            "the state machine was behind the snapshot: restored it from the snapshot"
        );
        Ok(())
    }

    /// Adopts a snapshot the apply task made (`meta` is what the core says about its
    /// index): a newer one is recorded durably in the WAL and served to followers from now
    /// on, and older state files are removed; a state file at the current snapshot's index,
    /// which has none, is attached to it (see [`Adoption`]).
    pub fn adopt_local(&mut self, meta: SnapshotMeta, made: &LocalSnapshot) -> Result<Adoption, RaftStorageError> {
        debug_assert_eq!(meta.index, made.index, "the core's metadata is about the snapshot's index");
        let attaches = meta.index == self.snapshot.index && self.state_file.is_none() && made.state_file.is_some();
        if meta.index <= self.snapshot.index && !attaches {
            return Ok(Adoption::Stale);
        }
        let state = match &made.state_file {
            Some(written) => Some(open_written_state_file(written)?),
            None => None,
        };
        // A state file is written to be sent: counted as in transfer from now, so that a
        // newer snapshot, which would make it unreadable, waits for the transfer (see
        // `is_sending_snapshot`) rather than replace it before the leader's next try reads
        // its first chunk.
        let written_to_send = state.is_some();
        if attaches {
            self.state_file = state;
        } else {
            self.record(meta, state)?;
        }
        if written_to_send {
            self.last_chunk_read.set(Some(Instant::now()));
        }
        Ok(if attaches { Adoption::Attached } else { Adoption::Recorded })
    }

    /// Removes a state file the apply task wrote that will not be adopted (the core no
    /// longer knows its index, or a newer snapshot came first).
    pub fn discard_local(&mut self, made: &LocalSnapshot) {
        let Some(written) = &made.state_file else { return };
        if made.index != self.snapshot.index || self.state_file.is_none() {
            let _ = std::fs::remove_file(&written.path);
        }
    }

    /// Whether a chunk of the current snapshot was asked for, while it had no state file,
    /// since this was last called.
    pub fn take_state_file_wanted(&self) -> bool {
        self.state_file_wanted.replace(false)
    }

    /// Writes one chunk of a snapshot arriving from the leader. A chunk at offset 0 starts
    /// a new staging; any other chunk must continue the one staged (the core hands them out
    /// in order).
    pub fn stage_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), RaftStorageError> {
        if self.checked_whole.as_ref() != Some(chunk) {
            self.checked_whole = None;
        }
        let path = self.state_dir.join(INCOMING_FILE);
        if chunk.offset == 0 {
            self.incoming = None;
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.incoming = Some(Incoming { meta: chunk.meta.clone(), file, received: 0, complete: false });
        }
        let incoming = self
            .incoming
            .as_mut()
            .filter(|incoming| incoming.meta == chunk.meta && incoming.received == chunk.offset && !incoming.complete)
            .ok_or_else(|| {
                RaftStorageError::Invalid(format!(
                    "a chunk at byte {} of the snapshot at index {} does not continue the one being received",
                    chunk.offset, chunk.meta.index
                ))
            })?;
        incoming.file.write_all_at(&chunk.data, chunk.offset).map_err(io_error(&path))?;
        incoming.received += chunk.data.len() as u64;
        incoming.complete = chunk.last;
        Ok(())
    }

    /// Checks the snapshot that `chunk`, a last chunk, would complete: the staged bytes
    /// followed by the chunk's must be a sound state file of the snapshot it names. Called
    /// before the chunk is stepped into the core, which adopts the snapshot as soon as its
    /// last chunk arrives; a damaged one is refused here and the transfer starts over,
    /// where finding it at the install would end the member. A chunk that does not
    /// continue the staging is not checked: the core will not complete a snapshot with it.
    pub fn check_completing_chunk(&mut self, chunk: &SnapshotChunk) -> Result<CompletionCheck, RaftStorageError> {
        debug_assert!(chunk.last, "only a last chunk completes a snapshot");
        self.checked_whole = None;
        let staged_bytes = match &self.incoming {
            _ if chunk.offset == 0 => 0,
            Some(incoming)
                if incoming.meta == chunk.meta && incoming.received == chunk.offset && !incoming.complete =>
            {
                incoming.received
            }
            _ => return Ok(CompletionCheck::NotAContinuation),
        };
        let path = self.state_dir.join(INCOMING_FILE);
        let staged: Box<dyn Read> = if staged_bytes == 0 {
            Box::new(std::io::empty())
        } else {
            Box::new(File::open(&path).map_err(io_error(&path))?.take(staged_bytes))
        };
        let whole = BufReader::with_capacity(1 << 20, staged.chain(&chunk.data[..]));
        let bytes = staged_bytes + chunk.data.len() as u64;
        Ok(match check_state_stream(&chunk.meta, whole, bytes) {
            Ok(()) => {
                self.checked_whole = Some(chunk.clone());
                CompletionCheck::Sound
            }
            Err(damage) => CompletionCheck::Damaged(damage),
        })
    }

    /// Drops the snapshot being received (found damaged); the next one starts at byte 0.
    pub fn discard_incoming(&mut self) {
        self.checked_whole = None;
        if self.incoming.take().is_some() {
            let _ = std::fs::remove_file(self.state_dir.join(INCOMING_FILE));
        }
    }

    /// The staged snapshot is complete: checks it, makes it durable and this member's
    /// snapshot, and replaces the log with an empty one after it (unless the log holds its
    /// last entry). Returns the state file, open at its start, for the state machine to be
    /// restored from.
    pub fn install_incoming(&mut self, meta: &SnapshotMeta) -> Result<File, RaftStorageError> {
        let staged = self.state_dir.join(INCOMING_FILE);
        let incoming =
            self.incoming.take().filter(|incoming| incoming.meta == *meta && incoming.complete).ok_or_else(|| {
                RaftStorageError::Invalid(format!(
                    "asked to install the snapshot at index {} but it is not staged whole",
                    meta.index
                ))
            })?;
        incoming.file.sync_all().map_err(io_error(&staged))?;
        // Checked before the core adopted it (`check_completing_chunk`), as the bytes now
        // staged: not read a second time. A snapshot staged without that check (a caller
        // that steps last chunks in unchecked) is checked here, since a damaged state file
        // must never become this member's state.
        let checked = self.checked_whole.take();
        let read_by_the_check = checked
            .is_some_and(|chunk| chunk.meta == *meta && chunk.offset + chunk.data.len() as u64 == incoming.received);
        if !read_by_the_check {
            let reader = BufReader::with_capacity(1 << 20, File::open(&staged).map_err(io_error(&staged))?);
            check_state_stream(meta, reader, incoming.received).map_err(RaftStorageError::Invalid)?;
        }
        let path = self.state_dir.join(state_file_name(meta.index));
        std::fs::rename(&staged, &path).map_err(io_error(&path))?;
        fsync_dir(&self.state_dir)?;
        let file = File::open(&path).map_err(io_error(&path))?;
        let for_restore = file.try_clone().map_err(io_error(&path))?;
        self.record(meta.clone(), Some(StateFile { file, bytes: incoming.received }))?;
        Ok(for_restore)
    }

    /// Records `meta` with its state file, if any, in the WAL (durably), switches chunk
    /// reads to it, and removes older state files.
    fn record(&mut self, meta: SnapshotMeta, state: Option<StateFile>) -> Result<(), RaftStorageError> {
        let record = SnapshotRecord { meta: meta.clone(), state_bytes: state.as_ref().map(|state| state.bytes) };
        let wal_meta = concord_wal::SnapshotMeta { index: meta.index, term: meta.term };
        self.wal.save_snapshot(wal_meta, &record.encode())?;
        self.snapshot = meta;
        self.state_file = state;
        self.state_file_wanted.set(false);
        // Reads of the snapshot replaced were of a transfer that now starts over.
        self.last_chunk_read.set(None);
        self.remove_state_files(false)
    }

    /// Removes files of the state directory other than the current snapshot's: with
    /// `everything_else` (at open, when nothing is being received or written) all of them;
    /// otherwise only the state files of older snapshots. fsyncs the directory if anything
    /// went. At open, a state file the current snapshot does not record (one attached to
    /// it, or left by an interrupted write) goes too.
    fn remove_state_files(&self, everything_else: bool) -> Result<(), RaftStorageError> {
        let keep = state_file_name(self.snapshot.index);
        let mut removed = false;
        for entry in std::fs::read_dir(&self.state_dir).map_err(io_error(&self.state_dir))? {
            let entry = entry.map_err(io_error(&self.state_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let older = name
                .strip_suffix(".mvcc")
                .and_then(|hex| Index::from_str_radix(hex, 16).ok())
                .is_some_and(|index| index < self.snapshot.index);
            let current = name == keep && self.state_file.is_some();
            if !current && (everything_else || older) {
                std::fs::remove_file(entry.path()).map_err(io_error(&entry.path()))?;
                removed = true;
            }
        }
        if removed {
            fsync_dir(&self.state_dir)?;
        }
        Ok(())
    }
}

impl LogStore for RaftStorage {
    fn initial_hard_state(&self) -> HardState {
        self.wal.initial_hard_state()
    }

    fn first_index(&self) -> Index {
        self.wal.first_index()
    }

    fn last_index(&self) -> Index {
        self.wal.last_index()
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.wal.term(index)
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.wal.entries(low, high, max_bytes)
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    /// A snapshot without a state file answers `Unavailable` (the leader tries again on
    /// the next heartbeat reply) and notes that a file is wanted.
    fn snapshot_chunk(&self, index: Index, offset: u64, max_bytes: u64) -> Result<SnapshotData, StorageError> {
        if index != self.snapshot.index || index == 0 {
            return Err(StorageError::Compacted(index));
        }
        let Some(state) = self.state_file.as_ref() else {
            self.state_file_wanted.set(true);
            return Err(StorageError::Unavailable(index));
        };
        let start = offset.min(state.bytes);
        let end = start.saturating_add(max_bytes.max(1)).min(state.bytes);
        let mut data = vec![0u8; (end - start) as usize];
        state.file.read_exact_at(&mut data, start).map_err(|error| {
            StorageError::Fatal(format!("reading the snapshot at index {index} (byte {start}): {error}"))
        })?;
        self.last_chunk_read.set(Some(Instant::now()));
        Ok(SnapshotData { data: Bytes::from(data), last: end == state.bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::{DirectoryState, Member};
    use concord_mvcc::{Command, PutRequest};
    use concord_raft::{EntryKind, Membership, NodeId};

    fn entries(from: Index, to: Index, term: Term) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry { index, term, kind: EntryKind::Normal, data: Bytes::from(vec![7u8; 64]) })
            .collect()
    }

    /// The member directory at `applied`: member 1, and member `applied + 1` (so each index
    /// has its own), last changed at `applied`.
    fn directory_at(applied: Index) -> DirectoryState {
        let member = |id: NodeId| Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://m{id}:2380")],
            client_urls: vec![format!("http://m{id}:2379")],
            is_learner: false,
        };
        DirectoryState {
            applied_index: applied,
            members: [(1, member(1)), (applied + 1, member(applied + 1))].into_iter().collect(),
            removed: [applied + 2].into_iter().collect(),
        }
    }

    /// A state-machine snapshot at `applied` (one key per entry), with the member directory
    /// of `directory_at(applied)`, as bytes.
    fn state_at(applied: Index) -> Vec<u8> {
        state_with(applied, serde_json::to_vec(&directory_at(applied)).unwrap())
    }

    /// A state-machine snapshot at `applied` carrying `directory`.
    fn state_with(applied: Index, directory: Vec<u8>) -> Vec<u8> {
        let store = Store::in_memory().unwrap();
        for index in 1..=applied {
            let put = PutRequest { key: format!("k{index}").into(), value: vec![b'v'; 100], ..Default::default() };
            store.apply(index, &Command::Put(put)).unwrap();
        }
        let mut bytes = Vec::new();
        store.write_snapshot_with(&mut bytes, |_| Ok(directory)).unwrap();
        bytes
    }

    fn open_directory(dir: &Path) -> MemberDirectory {
        MemberDirectory::open(dir.join("members"), || directory_at(0).member_list()).unwrap()
    }

    fn meta(index: Index, term: Term) -> SnapshotMeta {
        SnapshotMeta { index, term, membership: Membership::new([1, 2, 3], [4]) }
    }

    fn open(dir: &Path) -> RaftStorage {
        RaftStorage::open(dir, WalOptions { segment_bytes: 1024, ..WalOptions::default() }).unwrap()
    }

    /// Reads the whole snapshot at `index` through `snapshot_chunk`, `chunk` bytes at a time.
    fn read_chunks(storage: &RaftStorage, index: Index, chunk: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let piece = storage.snapshot_chunk(index, out.len() as u64, chunk).unwrap();
            assert!(piece.data.len() as u64 <= chunk);
            out.extend_from_slice(&piece.data);
            if piece.last {
                return out;
            }
        }
    }

    #[test]
    fn a_local_snapshot_is_recorded_served_in_chunks_compacted_behind_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        assert_eq!(storage.snapshot_chunk(0, 0, 10), Err(StorageError::Compacted(0)));
        for index in 1..=40 {
            storage.append(&entries(index, index, 1)).unwrap();
        }
        storage.sync().unwrap();
        let segments_before = storage.wal().segment_paths().len();
        assert!(segments_before > 2, "small segments roll over");

        let (made, state) = written(&storage, 30);
        assert_eq!(storage.adopt_local(meta(30, 1), &made).unwrap(), Adoption::Recorded);
        assert_eq!(storage.snapshot_meta(), meta(30, 1));
        // A state file is written to be sent: in transfer from its adoption on.
        assert!(storage.is_sending_snapshot(Duration::from_secs(60)));
        storage.last_chunk_read.set(None);
        assert_eq!(read_chunks(&storage, 30, 1000), state);
        assert!(storage.is_sending_snapshot(Duration::from_secs(60)));
        assert_eq!(storage.snapshot_chunk(29, 0, 10), Err(StorageError::Compacted(29)));

        storage.compact(25).unwrap();
        assert_eq!(storage.first_index(), 26);
        assert!(storage.wal().segment_paths().len() < segments_before, "whole segments before 25 are gone");
        assert_eq!(storage.entries(26, 41, u64::MAX).unwrap().len(), 15);

        // Leftovers of a crash: a half-written local snapshot, a staged transfer, a state
        // file no record refers to. Reopening keeps only the recorded snapshot.
        for leftover in [LOCAL_TEMPORARY_FILE, INCOMING_FILE, &state_file_name(35), &state_file_name(3)] {
            std::fs::write(storage.state_dir().join(leftover), b"junk").unwrap();
        }
        drop(storage);
        let storage = open(dir.path());
        assert_eq!(storage.snapshot_meta(), meta(30, 1));
        assert_eq!((storage.first_index(), storage.last_index()), (26, 40));
        assert_eq!(read_chunks(&storage, 30, 7), state);
        let mut restored = Vec::new();
        std::io::Read::read_to_end(&mut storage.state_reader().unwrap().unwrap(), &mut restored).unwrap();
        assert_eq!(restored, state);
        let names: Vec<String> = std::fs::read_dir(storage.state_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![state_file_name(30)]);
    }

    #[test]
    fn a_snapshot_from_the_leader_is_staged_checked_and_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 5, 1)).unwrap();
        storage.sync().unwrap();
        let state = state_at(20);
        let incoming = meta(20, 2);
        // Restarted transfers start over at offset 0.
        for piece in [&state[..10], &state[..]] {
            for (n, chunk) in piece.chunks(64).enumerate() {
                let offset = (n * 64) as u64;
                let last = offset as usize + chunk.len() == state.len();
                let chunk = SnapshotChunk { meta: incoming.clone(), offset, data: Bytes::copy_from_slice(chunk), last };
                storage.stage_chunk(&chunk).unwrap();
            }
        }
        let mut file = storage.install_incoming(&incoming).unwrap();
        assert_eq!(storage.snapshot_meta(), incoming);
        assert_eq!((storage.first_index(), storage.last_index()), (21, 20));
        assert_eq!(storage.term(20), Ok(2));
        let mut restored = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut restored).unwrap();
        assert_eq!(restored, state);
        assert_eq!(read_chunks(&storage, 20, 1 << 20), state);

        drop(storage);
        let storage = open(dir.path());
        assert_eq!(storage.snapshot_meta(), incoming);
        assert_eq!((storage.first_index(), storage.last_index()), (21, 20));
    }

    /// Bytes `offset..end` of `data`, the state file of `meta`, as a chunk.
    fn chunk_of(meta: &SnapshotMeta, offset: usize, end: usize, data: &[u8]) -> SnapshotChunk {
        SnapshotChunk {
            meta: meta.clone(),
            offset: offset as u64,
            data: Bytes::copy_from_slice(&data[offset..end]),
            last: end == data.len(),
        }
    }

    #[test]
    fn a_damaged_or_disordered_transfer_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 5, 1)).unwrap();
        storage.sync().unwrap();
        let state = state_at(20);
        let incoming = meta(20, 2);
        let chunk = |offset: usize, end: usize, data: &[u8]| chunk_of(&incoming, offset, end, data);
        // A gap.
        storage.stage_chunk(&chunk(0, 10, &state)).unwrap();
        assert!(matches!(storage.stage_chunk(&chunk(20, 30, &state)), Err(RaftStorageError::Invalid(_))));
        // A flipped byte: found before anything is replaced.
        let mut damaged = state.clone();
        damaged[40] ^= 1;
        storage.stage_chunk(&chunk(0, 50, &damaged)).unwrap();
        storage.stage_chunk(&chunk(50, damaged.len(), &damaged)).unwrap();
        let error = storage.install_incoming(&incoming).err().unwrap();
        assert!(error.to_string().contains("damaged"), "{error}");
        // A snapshot of another index than announced.
        let other = state_at(19);
        storage.stage_chunk(&chunk(0, other.len(), &other)).unwrap();
        let error = storage.install_incoming(&incoming).err().unwrap();
        assert!(error.to_string().contains("state at index 19"), "{error}");
        // A member directory that is unreadable, or reflects entries after the snapshot.
        for directory in [b"not json".to_vec(), serde_json::to_vec(&directory_at(21)).unwrap()] {
            let bad = state_with(20, directory);
            storage.stage_chunk(&chunk(0, bad.len(), &bad)).unwrap();
            let error = storage.install_incoming(&incoming).err().unwrap();
            assert!(error.to_string().contains("member directory"), "{error}");
        }
        assert_eq!(storage.snapshot_meta(), SnapshotMeta::default());
        assert_eq!((storage.first_index(), storage.last_index()), (1, 5));
    }

    #[test]
    fn a_completing_chunk_is_checked_with_what_is_staged_before_the_core_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        let state = state_at(20);
        let incoming = meta(20, 2);
        let chunk = |offset: usize, end: usize, data: &[u8]| chunk_of(&incoming, offset, end, data);
        // Whole in one chunk, and in two.
        assert_eq!(storage.check_completing_chunk(&chunk(0, state.len(), &state)).unwrap(), CompletionCheck::Sound);
        storage.stage_chunk(&chunk(0, 50, &state)).unwrap();
        assert_eq!(storage.check_completing_chunk(&chunk(50, state.len(), &state)).unwrap(), CompletionCheck::Sound);
        // A flipped byte in the staged part, or in the last chunk.
        for flipped in [40, state.len() - 3] {
            let mut damaged = state.clone();
            damaged[flipped] ^= 1;
            storage.stage_chunk(&chunk(0, 50, &damaged)).unwrap();
            let found = storage.check_completing_chunk(&chunk(50, damaged.len(), &damaged)).unwrap();
            assert!(matches!(&found, CompletionCheck::Damaged(why) if why.contains("damaged")), "{found:?}");
        }
        // A state file of another index than announced.
        let other = state_at(19);
        let found = storage.check_completing_chunk(&chunk(0, other.len(), &other)).unwrap();
        assert!(matches!(&found, CompletionCheck::Damaged(why) if why.contains("state at index 19")), "{found:?}");
        // Not the continuation of what is staged: not checked (the core will not adopt).
        storage.stage_chunk(&chunk(0, 50, &state)).unwrap();
        let gap = chunk(60, state.len(), &state);
        assert_eq!(storage.check_completing_chunk(&gap).unwrap(), CompletionCheck::NotAContinuation);
        // Discarded, the next transfer starts at 0.
        storage.discard_incoming();
        assert_eq!(
            storage.check_completing_chunk(&chunk(50, state.len(), &state)).unwrap(),
            CompletionCheck::NotAContinuation
        );
        assert!(storage.stage_chunk(&chunk(50, state.len(), &state)).is_err());
        storage.stage_chunk(&chunk(0, state.len(), &state)).unwrap();
        storage.install_incoming(&incoming).unwrap();
        assert_eq!(storage.snapshot_meta(), incoming);
    }

    #[test]
    fn a_check_counts_for_the_install_only_for_the_bytes_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        let state = state_at(20);
        let incoming = meta(20, 2);
        let chunk = |offset: usize, end: usize, data: &[u8]| chunk_of(&incoming, offset, end, data);
        let mut damaged = state.clone();
        damaged[state.len() - 3] ^= 1;
        // Checked sound, then a new transfer restaged in between with a damaged end:
        // the install reads the file again and refuses it.
        storage.stage_chunk(&chunk(0, 50, &state)).unwrap();
        assert_eq!(storage.check_completing_chunk(&chunk(50, state.len(), &state)).unwrap(), CompletionCheck::Sound);
        storage.stage_chunk(&chunk(0, 50, &state)).unwrap();
        storage.stage_chunk(&chunk(50, damaged.len(), &damaged)).unwrap();
        let error = storage.install_incoming(&incoming).expect_err("the restaged file is read again");
        assert!(error.to_string().contains("damaged"), "{error}");
        // Checked sound, the chunk not adopted, and a transfer of the same snapshot and
        // length restaged at once with other bytes (a caller that did not check it): read
        // again and refused.
        assert_eq!(storage.check_completing_chunk(&chunk(0, state.len(), &state)).unwrap(), CompletionCheck::Sound);
        storage.stage_chunk(&chunk(0, damaged.len(), &damaged)).unwrap();
        let error = storage.install_incoming(&incoming).expect_err("other bytes than the checked ones");
        assert!(error.to_string().contains("damaged"), "{error}");
        // Checked sound and staged as checked: installed.
        storage.stage_chunk(&chunk(0, 50, &state)).unwrap();
        assert_eq!(storage.check_completing_chunk(&chunk(50, state.len(), &state)).unwrap(), CompletionCheck::Sound);
        storage.stage_chunk(&chunk(50, state.len(), &state)).unwrap();
        storage.install_incoming(&incoming).unwrap();
        assert_eq!(storage.snapshot_meta(), incoming);
    }

    /// A snapshot the state machine's durable commit holds, with no state file.
    fn in_store(index: Index) -> LocalSnapshot {
        LocalSnapshot { index, state_file: None, durable_applied: index }
    }

    /// A state file of the state at `index`, written where the apply task writes it.
    fn written(storage: &RaftStorage, index: Index) -> (LocalSnapshot, Vec<u8>) {
        written_as(storage, index, state_at(index))
    }

    /// A state file holding `state`, written where the apply task writes the one of `index`.
    fn written_as(storage: &RaftStorage, index: Index, state: Vec<u8>) -> (LocalSnapshot, Vec<u8>) {
        let path = storage.state_dir().join(state_file_name(index));
        std::fs::write(&path, &state).unwrap();
        let made = LocalSnapshot {
            index,
            state_file: Some(WrittenStateFile { path, bytes: state.len() as u64 }),
            durable_applied: index,
        };
        (made, state)
    }

    fn state_dir_names(storage: &RaftStorage) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(storage.state_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_snapshot_without_a_state_file_is_recorded_compacted_behind_and_asks_for_one_when_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 40, 1)).unwrap();
        assert_eq!(storage.adopt_local(meta(30, 1), &in_store(30)).unwrap(), Adoption::Recorded);
        assert_eq!(storage.snapshot_meta(), meta(30, 1));
        storage.compact(25).unwrap();
        assert_eq!(storage.first_index(), 26);
        assert!(state_dir_names(&storage).is_empty(), "no state file was written");

        // A leader asking for a chunk learns to try again, and the storage notes the want,
        // once per ask.
        assert!(!storage.take_state_file_wanted());
        assert_eq!(storage.snapshot_chunk(30, 0, 10), Err(StorageError::Unavailable(30)));
        assert!(storage.take_state_file_wanted());
        assert!(!storage.take_state_file_wanted());
        assert_eq!(storage.snapshot_chunk(29, 0, 10), Err(StorageError::Compacted(29)));
        assert!(!storage.take_state_file_wanted(), "only the current snapshot is wanted");

        // Not newer: stale.
        assert_eq!(storage.adopt_local(meta(30, 1), &in_store(30)).unwrap(), Adoption::Stale);
        assert_eq!(storage.adopt_local(meta(20, 1), &in_store(20)).unwrap(), Adoption::Stale);

        // Reopened: the same snapshot, still without a file, and the log after it.
        drop(storage);
        let storage = open(dir.path());
        assert_eq!(storage.snapshot_meta(), meta(30, 1));
        assert_eq!(storage.first_index(), 26);
        assert!(storage.state_reader().unwrap().is_none());
        assert_eq!(storage.snapshot_chunk(30, 0, 10), Err(StorageError::Unavailable(30)));
    }

    #[test]
    fn a_state_file_at_the_current_index_is_attached_and_one_past_it_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 40, 1)).unwrap();
        assert_eq!(storage.adopt_local(meta(30, 1), &in_store(30)).unwrap(), Adoption::Recorded);
        let _ = storage.snapshot_chunk(30, 0, 10);
        assert!(storage.take_state_file_wanted());

        // Nothing applied since: the file is served as the current snapshot's.
        let (made, state) = written(&storage, 30);
        assert_eq!(storage.adopt_local(meta(30, 1), &made).unwrap(), Adoption::Attached);
        assert!(storage.is_sending_snapshot(Duration::from_secs(60)), "a newer snapshot waits for it to be sent");
        assert_eq!(storage.snapshot_meta(), meta(30, 1));
        assert_eq!(read_chunks(&storage, 30, 7), state);
        assert!(!storage.take_state_file_wanted());
        // A second file of the same index is stale, and discarding it keeps the one in use.
        let (again, _) = written(&storage, 30);
        assert_eq!(storage.adopt_local(meta(30, 1), &again).unwrap(), Adoption::Stale);
        storage.discard_local(&again);
        assert_eq!(read_chunks(&storage, 30, 1000), state);
        // The WAL does not record an attached file: a restart removes it and goes on with
        // the snapshot in the store.
        drop(storage);
        let mut storage = open(dir.path());
        assert_eq!(storage.snapshot_meta(), meta(30, 1));
        assert!(state_dir_names(&storage).is_empty(), "{:?}", state_dir_names(&storage));
        assert_eq!(storage.snapshot_chunk(30, 0, 10), Err(StorageError::Unavailable(30)));

        // A file past the current snapshot is a newer snapshot, recorded with its file.
        let (made, state) = written(&storage, 35);
        assert_eq!(storage.adopt_local(meta(35, 1), &made).unwrap(), Adoption::Recorded);
        assert!(storage.is_sending_snapshot(Duration::from_secs(60)), "a newer snapshot waits for it to be sent");
        assert_eq!(storage.snapshot_chunk(30, 0, 10), Err(StorageError::Compacted(30)), "the leader starts over");
        assert_eq!(read_chunks(&storage, 35, 1000), state);
        drop(storage);
        let mut storage = open(dir.path());
        assert_eq!(storage.snapshot_meta(), meta(35, 1));
        assert_eq!(read_chunks(&storage, 35, 1000), state, "the recorded file survives a restart");
        // The next snapshot in the store replaces it, file and all.
        let _ = read_chunks(&storage, 35, 1000);
        assert_eq!(storage.adopt_local(meta(38, 1), &in_store(38)).unwrap(), Adoption::Recorded);
        assert!(!storage.is_sending_snapshot(Duration::from_secs(60)), "the transfer of 35 is over");
        assert!(state_dir_names(&storage).is_empty(), "{:?}", state_dir_names(&storage));
    }

    #[test]
    fn a_state_machine_behind_a_snapshot_without_a_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 20, 1)).unwrap();
        assert_eq!(storage.adopt_local(meta(20, 1), &in_store(20)).unwrap(), Adoption::Recorded);
        let store = Store::open(dir.path().join("kv.redb")).unwrap();
        let directory = open_directory(dir.path());
        store.apply(1, &Command::Noop).unwrap();
        let error = storage.bring_up_to_snapshot(&store, &directory).unwrap_err();
        assert!(error.to_string().contains("behind the snapshot at index 20"), "{error}");
        assert_eq!(store.applied_index(), 1, "nothing changed");
        for index in 2..=20 {
            store.apply(index, &Command::Noop).unwrap();
        }
        storage.bring_up_to_snapshot(&store, &directory).unwrap();
    }

    #[test]
    fn a_missing_state_file_is_refused_at_open_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 5, 1)).unwrap();
        let (made, _) = written(&storage, 5);
        assert_eq!(storage.adopt_local(meta(5, 1), &made).unwrap(), Adoption::Recorded);
        drop(storage);
        std::fs::remove_file(&made.state_file.expect("written").path).unwrap();
        let error = RaftStorage::open(dir.path(), WalOptions::default()).err().unwrap();
        assert!(error.to_string().contains("needs its state file"), "{error}");
    }

    #[test]
    fn a_state_machine_behind_the_snapshot_is_restored_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = open(dir.path());
        storage.append(&entries(1, 20, 1)).unwrap();
        let (made, state) = written(&storage, 20);
        assert_eq!(storage.adopt_local(meta(20, 1), &made).unwrap(), Adoption::Recorded);

        let store = Store::open(dir.path().join("kv.redb")).unwrap();
        let directory = open_directory(dir.path());
        store.apply(1, &Command::Noop).unwrap();
        storage.bring_up_to_snapshot(&store, &directory).unwrap();
        assert_eq!(store.applied_index(), 20);
        let mut bytes = Vec::new();
        store.write_snapshot_with(&mut bytes, |at| Ok(directory.export_at(at).unwrap())).unwrap();
        assert_eq!(bytes, state, "the state and the directory of the snapshot");
        assert_eq!(directory.snapshot(), directory_at(20));
        assert_eq!(open_directory(dir.path()).snapshot(), directory_at(20), "durably");
        // Ahead of it already: left alone, the directory too.
        store.apply(21, &Command::Noop).unwrap();
        directory.apply_attributes(21, 1, "renamed", &[]).unwrap();
        storage.bring_up_to_snapshot(&store, &directory).unwrap();
        assert_eq!(store.applied_index(), 21);
        assert_eq!(directory.member(1).unwrap().name, "renamed");
    }

    #[test]
    fn a_state_file_of_another_index_or_with_a_bad_directory_restores_nothing() {
        let ahead = serde_json::to_vec(&directory_at(21)).unwrap();
        for (state, why) in [(state_at(19), "state at index 19"), (state_with(20, ahead), "member directory")] {
            let dir = tempfile::tempdir().unwrap();
            let mut storage = open(dir.path());
            storage.append(&entries(1, 20, 1)).unwrap();
            // Recorded as the snapshot at 20.
            let (made, _) = written_as(&storage, 20, state);
            assert_eq!(storage.adopt_local(meta(20, 1), &made).unwrap(), Adoption::Recorded);
            let store = Store::open(dir.path().join("kv.redb")).unwrap();
            let directory = open_directory(dir.path());
            let before = directory.snapshot();
            store.apply(1, &Command::Noop).unwrap();
            let error = storage.bring_up_to_snapshot(&store, &directory).unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
            assert_eq!(store.applied_index(), 1);
            assert_eq!(directory.snapshot(), before);
        }
    }

    #[test]
    fn the_snapshot_record_round_trips() {
        let record = SnapshotRecord { meta: meta(7, 3), state_bytes: Some(12345) };
        assert_eq!(SnapshotRecord::decode(&record.encode()), Ok(record));
        let without_a_file = SnapshotRecord { meta: meta(7, 3), state_bytes: None };
        assert!(!without_a_file.encode().starts_with(RECORD_MAGIC), "an older build must not look for a file");
        assert_eq!(SnapshotRecord::decode(&without_a_file.encode()), Ok(without_a_file));
        assert!(SnapshotRecord::decode(b"CNCDSMR1").is_err());
        assert!(SnapshotRecord::decode(b"something else entirely").is_err());
    }
}
