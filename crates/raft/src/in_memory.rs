//! One way to handle a [`Ready`] for a node whose log is a [`MemoryLog`] that is durable
//! the moment it is written: the driver that tests, benchmarks and scenarios share.
//!
//! It does what `ready.rs` asks of an application, in that order: stage the snapshot
//! chunks (a chunk at offset 0 starts a new snapshot), install the staged snapshot the
//! Ready names, write the hard state and entries, report them persisted, and hand back
//! every message (those that had to wait for the disk included: the disk is done) with
//! the committed entries and the read states for the caller to apply and serve.
//!
//! Drivers whose disk takes time are not this one, on purpose: the core's test harness
//! and the adversarial tests queue writes to find what goes wrong between a write and its
//! fsync, the simulator's disk loses unfinished writes in a crash, and the server writes
//! a real WAL. What they share with this one is the order above, which `ready.rs`
//! documents and each of them follows.

use bytes::Bytes;

use crate::message::Message;
use crate::raft::Raft;
use crate::ready::ReadState;
use crate::snapshot::SnapshotMeta;
use crate::storage::{LogStore, MemoryLog};
use crate::types::Entry;

/// The bytes of a snapshot being received, chunk by chunk.
#[derive(Debug, Default)]
pub struct SnapshotStaging {
    staged: Option<(SnapshotMeta, Vec<u8>)>,
}

impl SnapshotStaging {
    /// The snapshot being received and the bytes staged so far.
    pub fn staged(&self) -> Option<(&SnapshotMeta, &[u8])> {
        self.staged.as_ref().map(|(meta, data)| (meta, data.as_slice()))
    }
}

/// What one handled Ready leaves to the caller.
#[derive(Debug, Default)]
pub struct Handled {
    /// Every message to send, in the order the Ready gave them.
    pub messages: Vec<Message>,
    /// Entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads to serve once the state machine has applied their index.
    pub read_states: Vec<ReadState>,
    /// The snapshot installed (its bytes are in the log's store), if any.
    pub installed: Option<SnapshotMeta>,
}

impl Raft<MemoryLog> {
    /// Takes one Ready and handles it with a log that is durable at once (see the module
    /// docs). Panics if the core hands out chunks out of order or names a snapshot it did
    /// not stage: both would be bugs of the core.
    pub fn handle_ready_in_memory(&mut self, staging: &mut SnapshotStaging) -> Handled {
        let ready = self.ready();
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                staging.staged = Some((chunk.meta.clone(), Vec::new()));
            }
            let (meta, data) = staging.staged.as_mut().expect("a snapshot's first chunk is at offset 0");
            assert_eq!((&*meta, data.len() as u64), (&chunk.meta, chunk.offset), "chunks arrive in order");
            data.extend_from_slice(&chunk.data);
        }
        if let Some(meta) = &ready.install_snapshot {
            let (staged, data) = staging.staged.take().expect("the snapshot to install is staged");
            assert_eq!(&staged, meta, "the staged snapshot is the one to install");
            let store = self.store_mut();
            store.save_snapshot(staged, Bytes::from(data));
            // The log kept its entries if it held the snapshot's last one: compact it.
            if store.first_index() <= meta.index {
                store.compact(meta.index);
            }
        }
        if let Some(hard_state) = ready.hard_state {
            self.store_mut().hard_state = hard_state;
        }
        self.store_mut().append(&ready.entries);
        if let Some(last) = ready.entries.last() {
            self.on_persisted(last.index, last.term);
        }
        let mut messages = ready.messages;
        messages.extend(ready.messages_after_persist);
        Handled {
            messages,
            committed_entries: ready.committed_entries,
            read_states: ready.read_states,
            installed: ready.install_snapshot,
        }
    }

    /// Handles Readies until none is left (at most `limit`), returning every message.
    /// For tests that only move messages around.
    pub fn drain_in_memory(&mut self, staging: &mut SnapshotStaging, limit: usize) -> Vec<Message> {
        let mut messages = Vec::new();
        for _ in 0..limit {
            if !self.has_ready() {
                break;
            }
            messages.extend(self.handle_ready_in_memory(staging).messages);
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::membership::Membership;
    use crate::message::MessageBody;
    use crate::snapshot::SnapshotChunk;

    #[test]
    fn a_snapshot_in_two_chunks_is_staged_and_installed_and_the_answer_goes_out() {
        let mut node = Raft::new(Config::new(2, vec![1, 2, 3]), MemoryLog::new(), 0).unwrap();
        let meta = SnapshotMeta { index: 5, term: 1, membership: Membership::new([1, 2, 3], []) };
        let chunk = |offset: u64, data: &'static [u8], last: bool| Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::InstallSnapshot {
                chunk: SnapshotChunk { meta: meta.clone(), offset, data: Bytes::from_static(data), last },
            },
        };
        let mut staging = SnapshotStaging::default();
        node.step(chunk(0, b"state ", false)).unwrap();
        node.step(chunk(6, b"at 5", true)).unwrap();
        let handled = node.handle_ready_in_memory(&mut staging);
        assert_eq!(handled.installed.as_ref().map(|m| m.index), Some(5));
        assert_eq!(node.store().snapshot_data(), &Bytes::from_static(b"state at 5"));
        assert!(handled.messages.iter().any(|m| m.body == MessageBody::AppendEntriesResponse { result: Ok(5) }));
        assert!(node.drain_in_memory(&mut staging, 8).is_empty());
    }
}
