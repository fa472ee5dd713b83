//! What the core asks the application to do, collected since the last `ready()` call.
//!
//! The application handles a `Ready` in this order:
//! 1. stage `snapshot_chunks` (a chunk at offset 0 starts a new snapshot); if
//!    `install_snapshot` is set (the staged snapshot is then the one it names: chunks
//!    of a newer snapshot come in a later Ready), make the staged snapshot durable,
//!    restore the state machine from it and replace the stored log with an empty one
//!    after it (or compact through it, if the log holds its last entry); then write
//!    `hard_state` and `entries` (truncating its stored log from `entries[0].index`
//!    first), and send `messages` right away, in parallel with the write;
//! 2. once this write *and every earlier one* is durable, send `messages_after_persist`
//!    and call [`crate::Raft::on_persisted`] with the last entry written;
//! 3. apply `committed_entries` in order, and answer each read in `read_states` once the
//!    state machine has applied its index. Every committed entry handed out is already
//!    durable on this node (the core hands out nothing above what `on_persisted`
//!    reported), so applying may start as soon as the Ready is taken, in parallel with
//!    its write, after its snapshot is installed (the server does this, as etcd's does).
//!    A crash may then leave the state machine ahead of the durable commit index;
//!    `Raft::new` accepts that.
//!
//! A hard state that changes only `commit` need not be durable before step 2: the commit
//! index is volatile state in Raft (a restarted node learns it again, and `Raft::new`
//! accepts a state machine ahead of it), and nothing the core releases depends on it. The
//! server writes such a record and lets the next sync make it durable, as etcd's
//! `raft.MustSync` does. A change of term or vote must be durable first.
//!
//! Readies must be persisted in the order they were taken. A Ready that writes nothing
//! still waits for earlier writes before its `messages_after_persist` go out: a repeated
//! vote grant must not overtake the write of the vote it repeats.

use crate::message::Message;
use crate::snapshot::{SnapshotChunk, SnapshotMeta};
use crate::types::{Entry, HardState, Index, SoftState};

/// A linearizable read that is now safe: serve it from a state machine that has applied
/// at least `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: Index,
}

#[derive(Debug, Default)]
pub struct Ready {
    /// Set when the leader, role or term changed.
    pub soft_state: Option<SoftState>,
    /// Set when term, vote or commit changed: write it (durably before step 2 when term or
    /// vote changed; see the module documentation for a change of commit alone).
    pub hard_state: Option<HardState>,
    /// Pieces of a snapshot arriving from the leader, in order: stage them. When
    /// `install_snapshot` is set, the last of them completes that snapshot.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// The staged snapshot is complete and replaces this node's state: install it before
    /// writing `entries`. Committed entries after it follow in later Readies.
    pub install_snapshot: Option<SnapshotMeta>,
    /// Entries to write, in index order.
    pub entries: Vec<Entry>,
    /// Messages that may be sent before the write completes (a leader's replication).
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this Ready's write is durable (votes,
    /// acknowledgements of entries).
    pub messages_after_persist: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether the application has something to write before releasing
    /// `messages_after_persist`.
    pub fn has_writes(&self) -> bool {
        self.hard_state.is_some()
            || !self.entries.is_empty()
            || self.install_snapshot.is_some()
            || !self.snapshot_chunks.is_empty()
    }
}
