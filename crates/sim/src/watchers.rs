//! Watches under the simulator (`--state-machine mvcc`): watchers on the nodes, fed the
//! way a member's watch streams are, and checked against the history.
//!
//! Each watcher watches every key from a start revision (a little in the past, or the
//! next one) on one node, through concord-member's `WatchCursor`, the one the server's
//! watch streams keep per watcher. It takes each batch of events the node applies as a
//! live batch, except that a batch is sometimes lost for it, as the server's broadcast
//! channel drops batches for a slow stream; it catches up from the node's store in small
//! chunks (`Store::events_chunk`, as the server reads) when the cursor says so, and when a
//! snapshot from the leader brought revisions that never passed as events.
//!
//! The check (`watch`): whenever a watcher's cursor moves from revision `a` to `b`, the
//! events it was handed are exactly the history's events of revisions `a..b`, in order.
//! The history is what the first node to apply each revision produced (every node's state
//! is checked equal at equal indexes, so they all produce the same). A watcher dies with
//! its node's process, as a stream does.

use std::collections::BTreeMap;

use concord_member::{CursorState, WatchCursor};
use concord_mvcc::{Event, EventChunk, EventKind, KeyValue};
use concord_raft::NodeId;

/// Most watchers on one node at once.
pub const MAX_WATCHERS_PER_NODE: usize = 2;
/// Most catch-up reads in a row for one watcher (each reads a few revisions): bounds the
/// loop; a watcher still behind after them goes on at the next apply.
const MAX_CATCH_UP_READS: usize = 10_000;

/// What a watcher sees of an event.
type Seen = (EventKind, KeyValue);

fn seen(event: &Event) -> Seen {
    (event.kind, event.kv.clone())
}

/// One watcher (see the module documentation).
#[derive(Debug)]
pub struct SimWatcher {
    pub node: NodeId,
    pub cursor: WatchCursor,
    /// A live batch was lost for it and nothing has told it yet (the server's `Lagged`).
    pub lagged: bool,
}

/// The events of every revision, as first applied.
#[derive(Debug, Default)]
pub struct History {
    revisions: BTreeMap<i64, Vec<Seen>>,
}

impl History {
    /// Records the events of an apply, for the revisions not recorded yet (a revision's
    /// events come out of one apply; later applies of it, on other nodes or in a replay,
    /// are checked equal through the state digests, not recorded again).
    pub fn record(&mut self, events: &[Event]) {
        for revision in events.chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision) {
            self.revisions.entry(revision[0].kv.mod_revision).or_insert_with(|| revision.iter().map(seen).collect());
        }
    }

    /// Checks that `handed` is exactly the history of revisions `from..to`.
    fn check(&self, watcher: NodeId, from: i64, to: i64, handed: &[Seen]) -> Result<(), String> {
        let expected: Vec<&Seen> = self.revisions.range(from..to).flat_map(|(_, events)| events.iter()).collect();
        let handed: Vec<&Seen> = handed.iter().collect();
        if expected == handed {
            return Ok(());
        }
        let revisions = |events: &[&Seen]| events.iter().map(|(_, kv)| kv.mod_revision).collect::<Vec<_>>();
        Err(format!(
            "a watcher on node {watcher} moved from revision {from} to {to} and was handed the events of revisions \
             {:?}, where the history has {:?}",
            revisions(&handed),
            revisions(&expected)
        ))
    }
}

impl SimWatcher {
    /// A watcher from `start` on `node`, whose store is at revision `current`.
    pub fn new(node: NodeId, start: i64, current: i64) -> Self {
        SimWatcher { node, cursor: WatchCursor::new(start.max(1), current), lagged: false }
    }

    /// A live batch of events (one apply's, in revision order) reaches the watcher, or is
    /// lost for it (`lost`).
    pub fn live(&mut self, batch: &[Event], lost: bool, history: &History) -> Result<(), String> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(()) };
        if lost {
            self.lagged = true;
            return Ok(());
        }
        let (first, last) = (first.kv.mod_revision, last.kv.mod_revision);
        let before = self.cursor.next();
        let Some(from) = self.cursor.take_live(first, last) else { return Ok(()) };
        let handed: Vec<Seen> = batch.iter().filter(|e| e.kv.mod_revision >= from).map(seen).collect();
        history.check(self.node, before, self.cursor.next(), &handed)
    }

    /// Whether the watcher has everything its node's store holds, at revision `current`.
    pub fn is_caught_up(&self, current: i64) -> bool {
        self.cursor.state() == CursorState::Live && self.cursor.next() == current + 1
    }

    /// Nothing more is queued for the watcher's stream: a lost batch (or a snapshot's
    /// revisions) up to `published` sends it to the store.
    pub fn settle(&mut self, published: i64) {
        if self.lagged {
            self.lagged = false;
            self.cursor.notice_published(published);
        }
    }

    /// Catches up while the cursor says so, with `read(from, resumed)` reading the node's
    /// store (`None`: compacted). Returns how many reads it made. The simulator never
    /// compacts a store, so a read answered "compacted" is a violation too.
    pub fn catch_up(
        &mut self,
        history: &History,
        mut read: impl FnMut(i64, bool) -> Option<EventChunk>,
    ) -> Result<u64, String> {
        for reads in 0..MAX_CATCH_UP_READS as u64 {
            if self.cursor.state() != CursorState::CatchingUp {
                return Ok(reads);
            }
            let before = self.cursor.next();
            let Some(chunk) = read(before, self.cursor.resumed()) else {
                self.cursor.compacted();
                return Err(format!(
                    "a watcher on node {} read revision {before} as compacted, from a store that is never compacted",
                    self.node
                ));
            };
            self.cursor.caught_up(chunk.through, chunk.current);
            let handed: Vec<Seen> = chunk.events.iter().map(seen).collect();
            history.check(self.node, before, self.cursor.next(), &handed)?;
        }
        Ok(MAX_CATCH_UP_READS as u64)
    }
}
