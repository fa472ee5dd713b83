//! What a leader knows about each follower's log and how it paces replication to it.
//!
//! A follower is either being *probed* (we do not know where its log ends: one
//! AppendEntries at a time, walking back with conflict hints), *replicated to* (its log
//! matches: AppendEntries are pipelined, bounded by an in-flight window in messages and
//! bytes so a slow follower cannot make the leader buffer without limit), or *sent a
//! snapshot* (the entry it needs next was compacted: the snapshot goes out in chunks, a
//! few at a time, and the transfer rewinds to the last acknowledged byte when it stalls).

use crate::snapshot::SnapshotMeta;
use crate::types::Index;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// Most snapshot chunks in flight to one follower.
pub const MAX_SNAPSHOT_CHUNKS_IN_FLIGHT: u64 = 4;
/// Heartbeat replies without an acknowledged snapshot byte before the transfer rewinds to
/// the last acknowledged byte (chunks were lost).
pub const SNAPSHOT_STALL_HEARTBEATS: u32 = 3;

/// A snapshot on its way to a follower.
#[derive(Clone, Debug)]
pub struct SnapshotTransfer {
    pub meta: SnapshotMeta,
    /// Bytes sent so far (the offset of the next chunk).
    pub sent_offset: u64,
    /// Bytes the follower has confirmed holding.
    pub acked_offset: u64,
    /// The last chunk went out; waiting for the follower to install it.
    pub all_sent: bool,
    /// Heartbeat replies since the last acknowledged byte.
    pub stalled_heartbeats: u32,
    /// We already went back to `acked_offset` for the gap the follower reports; its other
    /// answers about the same gap must not make us resend the window again.
    pub rewound: bool,
}

/// AppendEntries sent but not yet acknowledged, oldest first.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// `(last index carried, entry bytes)` per message.
    messages: VecDeque<(Index, u64)>,
    bytes: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_messages: usize, max_bytes: u64) -> Self {
        Inflights { messages: VecDeque::new(), bytes: 0, max_messages, max_bytes }
    }

    pub fn is_full(&self) -> bool {
        self.messages.len() >= self.max_messages || self.bytes >= self.max_bytes
    }

    pub fn add(&mut self, last_index: Index, bytes: u64) {
        assert!(!self.is_full(), "in-flight window overflow");
        if let Some(&(previous, _)) = self.messages.back() {
            assert!(last_index > previous, "in-flight messages must carry increasing indexes");
        }
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Everything up to `index` has been acknowledged.
    pub fn free_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.messages.front() {
            if last > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest slot: a heartbeat reply proves the follower is alive, so if the
    /// window is stuck full (messages lost) we may send one more to provoke a rejection.
    pub fn free_first(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }

    pub fn count(&self) -> usize {
        self.messages.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log on this follower.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    pub state: ProgressState,
    /// In Probe: a probe is outstanding, wait for its answer (or a heartbeat reply).
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest ReadIndex round this follower has acknowledged in the leader's term.
    pub acked_read_round: u64,
    /// Highest commit index we have told this follower, so a commit it has not heard
    /// of yet is sent even when there are no new entries.
    pub sent_commit: Index,
    /// In Snapshot: the transfer.
    pub snapshot: Option<SnapshotTransfer>,
}

impl Progress {
    pub fn new(next_index: Index, max_inflight_messages: usize, max_inflight_bytes: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight_messages, max_inflight_bytes),
            recent_active: false,
            acked_read_round: 0,
            sent_commit: 0,
            snapshot: None,
        }
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
    }

    /// Starts sending the snapshot `meta` from its first byte.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(SnapshotTransfer {
            meta,
            sent_offset: 0,
            acked_offset: 0,
            all_sent: false,
            stalled_heartbeats: 0,
            rewound: false,
        });
    }

    /// Records that an AppendEntries ending at `last_index` (with `bytes` of entries)
    /// was sent.
    pub fn sent_entries(&mut self, last_index: Index, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("entries are not sent while a snapshot is"),
        }
    }

    /// The follower acknowledged a match through `index`. Returns whether that is news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// The follower rejected an AppendEntries at `rejected_index`; `probe_next` is where
    /// the conflict hint says to try next. Returns false for a stale rejection.
    pub fn maybe_decrease_to(&mut self, rejected_index: Index, probe_next: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected_index <= self.match_index {
                    return false;
                }
                self.next_index = self.match_index + 1;
                true
            }
            ProgressState::Probe => {
                if self.next_index - 1 != rejected_index {
                    return false;
                }
                self.next_index = probe_next.min(rejected_index).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
            // Rejections of entries sent before the snapshot started are stale.
            ProgressState::Snapshot => false,
        }
    }
}
