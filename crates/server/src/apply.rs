//! The apply task: committed entries go into the state machine in log order, and whoever
//! waits for one of them (a client of this member) gets its outcome.
//!
//! It runs beside the Raft task so a slow state machine does not stall replication: the
//! Raft task hands it committed entries without ever waiting (a long apply must not stop
//! the Raft task's ticks and heartbeats, or its followers would elect another leader).
//! The back-pressure is at the door instead: a member whose state machine lags its commit
//! index by more than `shared::MAX_APPLY_GAP` entries refuses new proposals with
//! "etcdserver: too many requests", as etcd does. A batch of entries is applied in
//! one redb transaction, right on the task's thread: the server gives this task a thread
//! (and a single-threaded runtime) of its own, so blocking there delays nothing else, and
//! a write's path has no hand-off to a blocking thread and back (two thread wake-ups,
//! about 8 % of a single client's put rate).
//!
//! Snapshots: every `snapshot_count` applied entries it makes the state machine durable and
//! hands the Raft task a snapshot without a state file (the store is the snapshot, see
//! `storage`), which the Raft task records before compacting the log. When a leader needs
//! to send a snapshot, the Raft task asks for a state file (`ApplyInput::WriteStateFile`):
//! the task writes the state machine to one (off the apply path, from one read
//! transaction) and hands it over the same way. A snapshot from the leader arrives in the
//! same channel as the entries, so it replaces the state exactly between the entries
//! before it and the ones after it. The member directory travels in the same state file
//! (as the stream's application metadata), captured at the same index as the state (see
//! `start_snapshot`) and installed with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use concord_member::ApplyGate;
use concord_mvcc::{Command, Event, MvccError, Response, Store};
use concord_raft::{ConfChangeEntry, Entry, EntryKind, Index, NodeId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::envelope::{self, ChangeContext, Envelope};
use crate::errors::EtcdError;
use crate::fatal::Fatal;
use crate::members::MemberDirectory;
use crate::node::{ApplyInput, SnapshotToRestore};
use crate::storage::{state_file_name, LocalSnapshot, WrittenStateFile, LOCAL_TEMPORARY_FILE};

/// For each applied index, the request id this member waits for there (if any).
type RequestsByIndex = HashMap<u64, u64>;

/// How often the state machine makes its commits durable.
const DURABLE_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Most entries applied in one redb transaction.
const MAX_ENTRIES_PER_TRANSACTION: usize = 4096;

/// The outcome a waiting client receives: the state machine's answer (membership entries
/// answer `Response::Noop` or the error the client gets).
pub type Outcome = Result<Response, EtcdError>;

/// Clients waiting for their proposals to be applied, by request id (see
/// `concord_member::waiters`).
pub type Waiters = concord_member::Waiters<Outcome>;

/// One client's wait for its proposal's outcome; dropping it deregisters it.
pub type Waiter = concord_member::Waiter<Outcome>;

/// When and where the apply task writes snapshots of the state machine.
pub struct SnapshotPolicy {
    /// A snapshot is written once more than this many entries were applied since the
    /// last one (`--snapshot-count`).
    pub every: u64,
    /// The index of the newest snapshot when the task starts.
    pub last_index: Index,
    /// The state-file directory (`RaftStorage::state_dir`).
    pub dir: PathBuf,
    /// To the Raft task, which records and compacts.
    pub made: mpsc::Sender<LocalSnapshot>,
}

pub struct ApplyLoop {
    pub member_id: NodeId,
    pub directory: MemberDirectory,
    pub store: Arc<Store>,
    /// From the Raft task, which never waits on it (see `shared::MAX_APPLY_GAP` for what
    /// bounds it).
    pub batches: mpsc::UnboundedReceiver<ApplyInput>,
    pub snapshots: SnapshotPolicy,
    pub waiters: Waiters,
    /// The highest index applied, for reads waiting on a ReadIndex: what `gate` releases.
    pub applied: watch::Sender<u64>,
    /// What the store holds, against what was taken for applying (see
    /// `concord_member::apply_gate`).
    pub gate: ApplyGate,
    /// Every event, in revision order, for watchers.
    pub events: broadcast::Sender<Arc<Vec<Event>>>,
    /// The revision up to which every event has been handed to `events` or came with a
    /// snapshot: a watcher that owes a revision at or below it, with nothing queued,
    /// missed it and reads the store (a revision merely committed is not yet sent).
    pub published_revision: Arc<std::sync::atomic::AtomicI64>,
    /// The leader's lease clock, told of every applied lease command.
    pub lessor: Arc<crate::lessor::Lessor>,
}

impl ApplyLoop {
    /// Runs until the Raft task closes the channel. Meant for a thread of its own (see the
    /// module doc): it blocks while it applies.
    pub async fn run(mut self) -> Result<(), Fatal> {
        // Most commits skip the fsync: the WAL already holds every entry durably, and a
        // crash rolls the store back to its last durable commit, from where the WAL is
        // replayed. One durable commit per interval bounds the replay (as etcd's backend
        // batch interval does) and lets redb free pages.
        let mut last_durable = tokio::time::Instant::now();
        let mut dirty = false;
        // Input taken from the channel but not handled yet (a restore that ended a batch).
        let mut held: Option<ApplyInput> = None;
        let mut snapshot_writer: Option<tokio::task::JoinHandle<Result<LocalSnapshot, String>>> = None;
        // The Raft task asked for a state file that is not being written yet.
        let mut state_file_wanted = false;
        loop {
            if state_file_wanted && snapshot_writer.is_none() {
                // `None` while the directory is ahead of the state machine (replaying
                // after a crash): tried again after the next batch.
                snapshot_writer = self.start_snapshot().await;
                state_file_wanted = snapshot_writer.is_none();
            }
            let input = match held.take() {
                Some(input) => Some(input),
                None => tokio::select! {
                    input = self.batches.recv() => input,
                    _ = tokio::time::sleep_until(last_durable + DURABLE_COMMIT_INTERVAL), if dirty => {
                        self.sync_store()?;
                        last_durable = tokio::time::Instant::now();
                        dirty = false;
                        continue;
                    }
                    written = async { snapshot_writer.as_mut().expect("guarded").await }, if snapshot_writer.is_some() => {
                        snapshot_writer = None;
                        self.snapshot_written(written)?;
                        last_durable = tokio::time::Instant::now();
                        dirty = false;
                        continue;
                    }
                },
            };
            let Some(input) = input else { break };
            let batch = match input {
                ApplyInput::Entries(batch) => batch,
                ApplyInput::Restore(snapshot) => {
                    self.restore(snapshot).await?;
                    last_durable = tokio::time::Instant::now();
                    dirty = false;
                    continue;
                }
                ApplyInput::WriteStateFile => {
                    // One being written already will do.
                    state_file_wanted = snapshot_writer.is_none();
                    continue;
                }
            };
            // Take whatever else is queued, up to a restore or a request for a state file: one
            // transaction for all of it.
            let mut entries = batch;
            while entries.len() < MAX_ENTRIES_PER_TRANSACTION {
                match self.batches.try_recv() {
                    Ok(ApplyInput::Entries(more)) => entries.extend(more),
                    Ok(restore) => {
                        held = Some(restore);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let last_index = entries.last().map(|e| e.index).unwrap_or(0);
            self.gate.taken(last_index);
            self.publish_applied();
            let (commands, origins) = self.decode(&entries)?;
            let durable = last_durable.elapsed() >= DURABLE_COMMIT_INTERVAL;
            // Applied right here: this task has a thread of its own (see `ApplyLoop::run`).
            let results = self.store.apply_batch_deferred(&commands, durable).map_err(Fatal::StateMachine)?;
            if durable {
                last_durable = tokio::time::Instant::now();
                dirty = false;
            } else {
                dirty = true;
            }
            self.follow_leases(&commands, &results);
            if let Some(last) = entries.last() {
                self.lessor.set_applied_term(last.term);
            }
            // Events are copied only when someone listens (a big DeleteRange makes one
            // per key, each with the deleted value).
            let listening = self.events.receiver_count() > 0;
            let mut events = Vec::new();
            for applied in results {
                if listening {
                    events.extend(applied.events.iter().cloned());
                }
                if let Some(request_id) = origins.get(&applied.index) {
                    self.waiters.complete(*request_id, applied.result.map_err(EtcdError::from));
                }
            }
            if !events.is_empty() {
                let _ = self.events.send(Arc::new(events));
            }
            self.published_revision.store(self.store.current_revision(), std::sync::atomic::Ordering::Release);
            self.gate.committed(last_index);
            self.publish_applied();
            // While a state file is being written it will be the next snapshot.
            if snapshot_writer.is_none()
                && self.store.applied_index() > self.snapshots.last_index + self.snapshots.every
            {
                self.snapshot_in_store()?;
                last_durable = tokio::time::Instant::now();
                dirty = false;
            }
        }
        if let Some(writer) = snapshot_writer {
            // The Raft task is gone; the file is removed as a leftover on the next start.
            let _ = writer.await;
        }
        if dirty {
            self.sync_store()?;
        }
        Ok(())
    }

    /// Writes the state machine and the member directory to a new state file on a blocking
    /// thread, from one read transaction (applies go on meanwhile): temporary name, fsync,
    /// link to its index, directory fsync. Called between batches only.
    ///
    /// The member directory must be the one at the snapshot's index, not merely a recent
    /// one: a member restored from the snapshot takes it as the directory at that index and
    /// applies the entries after it. Why it is:
    ///
    /// 1. Only this task changes the state machine and the directory, and it is between
    ///    batches here: the state machine's applied index is `at` (the last batch is
    ///    committed), and the directory has applied every entry up to `at` (it applies an
    ///    entry before the state machine commits it) and none after (the next batch is not
    ///    decoded yet) — unless it was ahead already, replaying the log after a crash that
    ///    took back the state machine's latest commits but not the directory's, which
    ///    `export_at` detects (its last change is after `at`): no snapshot then.
    /// 2. The read transaction is opened on the blocking thread, but this task waits until
    ///    it is open before it applies anything else, so the transaction is at `at` too
    ///    (the writer checks it, and abandons the snapshot if not).
    ///
    /// So the stream holds the state and the directory at the same index. Applies resume
    /// once the transaction is open; writing the stream takes as long as it takes.
    async fn start_snapshot(&mut self) -> Option<tokio::task::JoinHandle<Result<LocalSnapshot, String>>> {
        let at = self.store.applied_index();
        let directory = self.directory.export_at(at)?;
        // Counted from here even if the write fails, so a failing disk is not retried
        // after every batch.
        self.snapshots.last_index = at;
        let store = self.store.clone();
        let dir = self.snapshots.dir.clone();
        let (opened_tx, opened) = oneshot::channel::<()>();
        let writer = tokio::task::spawn_blocking(move || {
            let temporary = dir.join(LOCAL_TEMPORARY_FILE);
            let written = (|| -> Result<(u64, u64), String> {
                let file = std::fs::File::create(&temporary).map_err(|e| e.to_string())?;
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                let meta = store
                    .write_snapshot_with(&mut out, move |cut| {
                        let _ = opened_tx.send(());
                        if cut != at {
                            return Err(MvccError::Internal(format!(
                                "the read transaction is at index {cut}, the member directory at {at}"
                            )));
                        }
                        Ok(directory)
                    })
                    .map_err(|e| e.to_string())?;
                let file = out.into_inner().map_err(|e| e.to_string())?;
                file.sync_all().map_err(|e| e.to_string())?;
                Ok((meta.applied_index, meta.bytes))
            })();
            let (index, bytes) = match written {
                Ok(written) => written,
                Err(error) => {
                    let _ = std::fs::remove_file(&temporary);
                    return Err(format!("writing {}: {error}", temporary.display()));
                }
            };
            // Linked, not renamed: a state file of that index may exist already (the
            // current snapshot's, which the WAL records with its length) and must not be
            // replaced.
            let path = dir.join(state_file_name(index));
            let linked = std::fs::hard_link(&temporary, &path);
            let _ = std::fs::remove_file(&temporary);
            linked.map_err(|e| format!("linking {} to {}: {e}", temporary.display(), path.display()))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("fsync {}: {e}", dir.display()))?;
            Ok(LocalSnapshot { index, state_file: Some(WrittenStateFile { path, bytes }), durable_applied: 0 })
        });
        // Open (or failed before opening: the sender is dropped, and the writer's error
        // comes through its handle).
        let _ = opened.await;
        Some(writer)
    }

    /// Makes the state machine durable and hands the Raft task a snapshot of it without a
    /// state file (see `storage`). Called between batches.
    fn snapshot_in_store(&mut self) -> Result<(), Fatal> {
        self.sync_store()?;
        let index = self.store.applied_index();
        self.snapshots.last_index = index;
        let snapshot = LocalSnapshot { index, state_file: None, durable_applied: self.store.durable_applied_index() };
        debug_assert!(snapshot.durable_applied >= index, "a snapshot in the store is durable");
        // Dropped if the Raft task has not taken the last one yet: the next one will do.
        let _ = self.snapshots.made.try_send(snapshot);
        Ok(())
    }

    /// A state file is written: make the state machine durable at least as far (the log
    /// before it may then go), and hand the file to the Raft task.
    fn snapshot_written(
        &mut self,
        written: Result<Result<LocalSnapshot, String>, tokio::task::JoinError>,
    ) -> Result<(), Fatal> {
        let mut snapshot = match written {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(error)) => {
                error!("could not write a snapshot of the state machine (the log is not compacted): {error}");
                return Ok(());
            }
            Err(panic) => {
                error!("writing a snapshot of the state machine panicked: {panic}");
                return Ok(());
            }
        };
        self.sync_store()?;
        snapshot.durable_applied = self.store.durable_applied_index();
        // The next periodic snapshot is counted from here, not from where the file's read
        // began: one taken right after the file would replace it before it is sent.
        self.snapshots.last_index = self.snapshots.last_index.max(self.store.applied_index());
        // The Raft task takes each snapshot at once; if it could not, this one is dropped
        // (it asks for another) rather than waiting here.
        if let Err(refused) = self.snapshots.made.try_send(snapshot) {
            if let Some(written) = refused.into_inner().state_file {
                let _ = std::fs::remove_file(&written.path);
            }
        }
        Ok(())
    }

    /// Replaces the state machine with a snapshot from the leader. Everything handed over
    /// before it is applied; nothing after it is until this is done.
    async fn restore(&mut self, snapshot: SnapshotToRestore) -> Result<(), Fatal> {
        let started = std::time::Instant::now();
        let store = self.store.clone();
        let directory = self.directory.clone();
        let index = snapshot.index;
        // The directory the snapshot carries is installed once the stream is checked and
        // before the state machine commits: a crash between the two leaves the state
        // machine behind the snapshot, and the restart restores both again.
        let restored = tokio::task::spawn_blocking(move || {
            let input = std::io::BufReader::with_capacity(1 << 20, snapshot.file);
            store.replace_with_snapshot_with(input, |meta| {
                if meta.applied_index != index {
                    return Err(MvccError::Internal(format!("the snapshot holds the state at {}", meta.applied_index)));
                }
                directory
                    .restore_from_snapshot(index, meta.app_meta.as_deref())
                    .map_err(|e| MvccError::Storage(format!("installing the member directory: {e}")))
            })
        })
        .await;
        // The Raft task already replaced its log with the snapshot: without the state the
        // member cannot go on. A restart restores from the state file again.
        let meta = match restored {
            Ok(Ok(meta)) if meta.applied_index == index => meta,
            Ok(Ok(meta)) => {
                return Err(Fatal::Restore { index, detail: format!("it holds the state at {}", meta.applied_index) })
            }
            Ok(Err(error)) => return Err(Fatal::Restore { index, detail: error.to_string() }),
            Err(panic) => return Err(Fatal::Restore { index, detail: format!("panicked: {panic}") }),
        };
        // The replacement committed durably: no sync needed.
        self.snapshots.last_index = index;
        self.published_revision.store(meta.revision, std::sync::atomic::Ordering::Release);
        info!(
            index,
            revision = meta.revision,
            bytes = meta.bytes,
            millis = started.elapsed().as_millis() as u64,
            "restored the state machine from the leader's snapshot"
        );
        self.gate.committed(index);
        self.publish_applied();
        Ok(())
    }

    /// Releases the reads waiting for an index the gate now lets through.
    fn publish_applied(&self) {
        let through = self.gate.reads_through();
        self.applied.send_if_modified(|current| {
            let advanced = through > *current;
            if advanced {
                *current = through;
            }
            advanced
        });
    }

    /// Makes the state machine's commits durable, on this task's own thread.
    fn sync_store(&self) -> Result<(), Fatal> {
        self.store.sync().map_err(Fatal::StateMachine)
    }

    /// Turns entries into commands, applying membership entries to the member directory
    /// on the way (before the state machine records their index, so the directory is
    /// never behind it). Returns, per index, the request id if this member is the one
    /// waiting for it.
    fn decode(&self, entries: &[Entry]) -> Result<(Vec<(u64, Command)>, RequestsByIndex), Fatal> {
        let mut commands = Vec::with_capacity(entries.len());
        let mut origins = HashMap::with_capacity(entries.len());
        for entry in entries {
            if entry.kind == EntryKind::ConfChange {
                self.apply_conf_change(entry)?;
                commands.push((entry.index, Command::Noop));
                continue;
            }
            let command = match envelope::decode(&entry.data) {
                Ok(Envelope::Empty) => Command::Noop,
                Ok(Envelope::MemberAttributes { member, request_id, name, client_urls }) => {
                    self.directory
                        .apply_attributes(entry.index, member, &name, &client_urls)
                        .map_err(Fatal::Directory)?;
                    if member == self.member_id {
                        origins.insert(entry.index, request_id);
                    }
                    Command::Noop
                }
                Ok(Envelope::MemberUpdate { origin, request_id, member, peer_urls }) => {
                    let outcome = self
                        .directory
                        .apply_peer_urls_update(entry.index, member, &peer_urls)
                        .map_err(Fatal::Directory)?;
                    if origin == self.member_id {
                        self.waiters.complete(request_id, outcome.map(|()| Response::Noop));
                    }
                    Command::Noop
                }
                Ok(Envelope::Command { origin, request_id, command }) => {
                    if origin == self.member_id {
                        origins.insert(entry.index, request_id);
                    }
                    match Command::decode(command) {
                        Ok(command) => refuse_stale_leader_command(command, entry),
                        Err(error) => {
                            // Every member decodes the same bytes the same way, so
                            // skipping is deterministic; the proposer gets the error.
                            warn!(index = entry.index, "undecodable command: {error}");
                            Command::Noop
                        }
                    }
                }
                Err(error) => {
                    warn!(index = entry.index, "undecodable entry: {error}");
                    Command::Noop
                }
            };
            commands.push((entry.index, command));
        }
        Ok((commands, origins))
    }

    /// The leader's lease clock follows applied grants, revokes, expiries and checkpoints.
    fn follow_leases(&self, commands: &[(u64, Command)], results: &[concord_mvcc::Applied]) {
        let now = std::time::Instant::now();
        // `results` holds the applied entries of `commands`, in order (skipped ones have none).
        let mut commands = commands.iter().peekable();
        for applied in results {
            while commands.next_if(|(index, _)| *index < applied.index).is_some() {}
            let Some((_, command)) = commands.next_if(|(index, _)| *index == applied.index) else { continue };
            if let Ok(response) = &applied.result {
                self.lessor.on_applied(command, response, now);
            }
        }
    }

    /// A committed membership change: the directory follows it, and whoever proposed it
    /// here learns it is done.
    fn apply_conf_change(&self, entry: &Entry) -> Result<(), Fatal> {
        // The core decoded (and checked) this entry when it was appended: failing now is a
        // bug, after which the directory would no longer follow the log.
        let decoded = ConfChangeEntry::decode(&entry.data)
            .map_err(|error| Fatal::UndecodableConfiguration { index: entry.index, detail: error.to_string() })?;
        // Every member decodes the same context bytes the same way.
        let context = ChangeContext::decode(&decoded.change.context).unwrap_or_default();
        self.directory.apply_conf_change(entry.index, &decoded, &context.peer_urls).map_err(Fatal::Directory)?;
        info!(
            index = entry.index,
            change = ?decoded.change.kind,
            member = %format!("{:x}", decoded.change.node),
            "membership change applied"
        );
        if context.origin == self.member_id {
            self.waiters.complete(context.request_id, Ok(Response::Noop));
        }
        Ok(())
    }
}

/// A command only a leader proposes (a lease expiry or checkpoint) counts only in an entry
/// of the term it was decided in: the one leader of that term appended it then. Anything
/// else (a deposed leader's proposal that reached the log through forwarding, say) becomes
/// a no-op, the same way on every member since the entry's term is in the log.
fn refuse_stale_leader_command(command: Command, entry: &Entry) -> Command {
    match command.leader_term() {
        Some(term) if term != entry.term => {
            warn!(index = entry.index, entry_term = entry.term, term, "ignoring a lease command of another term");
            Command::Noop
        }
        _ => command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_mvcc::{LeaseCheckpointRequest, LeaseExpireRequest, LeaseRevokeRequest};

    fn entry(term: u64) -> Entry {
        Entry { index: 7, term, kind: EntryKind::Normal, data: Default::default() }
    }

    #[tokio::test]
    async fn a_waiter_is_forgotten_when_its_client_goes_away() {
        let waiters = Waiters::default();
        let completed = waiters.register(1);
        let abandoned = waiters.register(2);
        let timed_out = waiters.register(3);
        assert_eq!(waiters.count(), 3);
        waiters.complete(1, Ok(Response::Noop));
        assert!(matches!(completed.await, Ok(Ok(Response::Noop))));
        // A handler dropped by its client drops its waiter without waiting for anything.
        drop(abandoned);
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(1), timed_out).await;
        assert!(gave_up.is_err());
        assert_eq!(waiters.count(), 0, "nothing stays behind");
        // An outcome for a forgotten request goes nowhere.
        waiters.complete(2, Ok(Response::Noop));
        assert_eq!(waiters.count(), 0);
    }

    #[test]
    fn lease_commands_of_another_term_become_no_ops() {
        let expire = Command::LeaseExpire(LeaseExpireRequest { id: 1, term: 4 });
        assert_eq!(refuse_stale_leader_command(expire.clone(), &entry(4)), expire);
        assert_eq!(refuse_stale_leader_command(expire, &entry(5)), Command::Noop, "forwarded to a newer leader");
        let checkpoint = Command::LeaseCheckpoint(LeaseCheckpointRequest { term: 4, checkpoints: vec![] });
        assert_eq!(refuse_stale_leader_command(checkpoint, &entry(3)), Command::Noop);
        let revoke = Command::LeaseRevoke(LeaseRevokeRequest { id: 1 });
        assert_eq!(
            refuse_stale_leader_command(revoke.clone(), &entry(9)),
            revoke,
            "a client's revoke counts in any term"
        );
    }
}
