//! Following the events of some keys from a revision on, inside the member: what the lock
//! and election recipes use where etcd's client-side recipe opens a watch.
//!
//! The same rule as a watcher of the Watch service (`crate::watch`): events come from the
//! apply task's broadcast channel when a batch continues exactly from `next`, the first
//! revision still owed; after a gap (the receiver lagged, a follower installed a
//! snapshot) the follower reads the store from `next` in bounded chunks. So every
//! matching event after the start comes exactly once, in revision order, or the follow
//! fails with `Compacted`: never a silent gap. A follower waits alone (one receiver per
//! waiting request), which is why it is not one more watcher of a Watch stream.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use concord_mvcc::{ChunkLimits, Event, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::errors::EtcdError;
use crate::keys::Keys;
use crate::watch::{CATCH_UP_BYTES, CATCH_UP_REVISIONS};

/// Where a follower takes its events from: the member's store and apply broadcast.
#[derive(Clone)]
pub struct EventSource {
    pub store: Arc<Store>,
    pub events: broadcast::Sender<Arc<Vec<Event>>>,
    /// The revision whose events have all been handed to `events` (see `ApplyLoop`).
    pub published_revision: Arc<AtomicI64>,
    pub applied: watch::Receiver<u64>,
}

impl EventSource {
    /// Follows `keys` from revision `from` (inclusive), which must be one past a
    /// revision the caller has read: if `from` is compacted away before the first read
    /// of history, the follow fails with `Compacted` rather than miss what it removed.
    pub fn follow(&self, keys: Keys, from: i64) -> EventFollower {
        EventFollower {
            source: self.clone(),
            live: self.events.subscribe(),
            applied: self.applied.clone(),
            keys,
            next: from,
            behind: false,
            resumed: true,
        }
    }
}

pub struct EventFollower {
    source: EventSource,
    live: broadcast::Receiver<Arc<Vec<Event>>>,
    applied: watch::Receiver<u64>,
    keys: Keys,
    /// The first revision not yet looked at.
    next: i64,
    /// Batches were missed: the store must be read before live batches count again.
    behind: bool,
    /// The start follows a read, so no read of history may start at the compacted
    /// revision itself (see `Store::events_chunk`): its deletions are gone.
    resumed: bool,
}

impl EventFollower {
    /// The next matching events, in revision order (never empty). Fails with etcd's
    /// `Compacted` when the revisions it owes were compacted away, `Stopped` when the
    /// member stops.
    pub async fn next_events(&mut self) -> Result<Vec<Event>, EtcdError> {
        loop {
            if self.must_read_store() {
                let events = self.read_store().await?;
                if !events.is_empty() {
                    return Ok(events);
                }
                continue;
            }
            tokio::select! {
                batch = self.live.recv() => {
                    let events = self.take_live(batch)?;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                // A snapshot's revisions come with no batch: woken by any apply, the
                // check above sees them.
                changed = self.applied.changed() => changed.map_err(|_| EtcdError::Stopped)?,
            }
        }
    }

    /// Behind, or owing a revision that was published while no batch is queued to bring
    /// it (installed by a snapshot). A revision committed but not yet sent does not
    /// count: its batch is on its way.
    fn must_read_store(&self) -> bool {
        self.behind || (self.live.is_empty() && self.source.published_revision.load(Ordering::Acquire) >= self.next)
    }

    fn take_live(&mut self, batch: Result<Arc<Vec<Event>>, RecvError>) -> Result<Vec<Event>, EtcdError> {
        let batch = match batch {
            Ok(batch) => batch,
            Err(RecvError::Lagged(_)) => {
                self.behind = true;
                return Ok(Vec::new());
            }
            Err(RecvError::Closed) => return Err(EtcdError::Stopped),
        };
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(Vec::new()) };
        let (first, last) = (first.kv.mod_revision, last.kv.mod_revision);
        if last < self.next {
            return Ok(Vec::new());
        }
        if first > self.next {
            self.behind = true;
            return Ok(Vec::new());
        }
        let from = self.next;
        self.next = last + 1;
        self.resumed = true;
        Ok(batch.iter().filter(|e| e.kv.mod_revision >= from && self.keys.contains(&e.kv.key)).cloned().collect())
    }

    /// One bounded chunk of history from `next`.
    async fn read_store(&mut self) -> Result<Vec<Event>, EtcdError> {
        let store = self.source.store.clone();
        let (from, resumed) = (self.next, self.resumed);
        let limits = ChunkLimits { max_revisions: CATCH_UP_REVISIONS, max_bytes: CATCH_UP_BYTES };
        let chunk = tokio::task::spawn_blocking(move || store.events_chunk(from, limits, resumed))
            .await
            .map_err(|e| EtcdError::Internal(format!("history read panicked: {e}")))??;
        // A follower never goes back, even if it was started past the store's revision.
        self.next = self.next.max(chunk.through + 1);
        self.resumed = true;
        if chunk.through >= chunk.current {
            self.behind = false;
        }
        Ok(chunk.events.into_iter().filter(|e| self.keys.contains(&e.kv.key)).collect())
    }
}
