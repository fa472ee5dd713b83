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

#[cfg(test)]
mod tests {
    use super::*;
    use concord_mvcc::{Command, CompactionRequest, DeleteRangeRequest, EventKind, PutRequest};
    use std::time::Duration;

    /// A store and the channels the apply task would drive, driven by hand.
    struct Member {
        source: EventSource,
        applied: watch::Sender<u64>,
        index: u64,
    }

    impl Member {
        fn new(capacity: usize) -> Member {
            let store = Arc::new(Store::in_memory().expect("a store"));
            let (events, _) = broadcast::channel(capacity);
            let (applied, applied_rx) = watch::channel(0);
            let published_revision = Arc::new(AtomicI64::new(store.current_revision()));
            Member { source: EventSource { store, events, published_revision, applied: applied_rx }, applied, index: 0 }
        }

        /// Applies `command` as the apply task does: store, then broadcast (if `publish`),
        /// then the published revision, then `applied`.
        fn apply(&mut self, command: Command, publish: bool) -> i64 {
            self.index += 1;
            let applied = self.source.store.apply(self.index, &command).expect("apply").expect("applied");
            if publish && !applied.events.is_empty() {
                let _ = self.source.events.send(Arc::new(applied.events));
            }
            let revision = self.source.store.current_revision();
            self.source.published_revision.store(revision, Ordering::Release);
            self.applied.send_replace(self.index);
            revision
        }

        fn put(&mut self, key: &str) -> i64 {
            self.apply(Command::Put(PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() }), true)
        }

        fn delete(&mut self, key: &str, publish: bool) -> i64 {
            self.apply(Command::DeleteRange(DeleteRangeRequest { key: key.into(), ..Default::default() }), publish)
        }
    }

    async fn next(follower: &mut EventFollower) -> Result<Vec<(EventKind, String, i64)>, EtcdError> {
        let events =
            tokio::time::timeout(Duration::from_secs(5), follower.next_events()).await.expect("events in time")?;
        Ok(events
            .into_iter()
            .map(|e| (e.kind, String::from_utf8_lossy(&e.kv.key).into_owned(), e.kv.mod_revision))
            .collect())
    }

    #[tokio::test]
    async fn live_events_come_once_in_order_for_its_keys_only() {
        let mut member = Member::new(16);
        let start = member.put("a");
        let mut follower = member.source.follow(Keys::Single(b"a".to_vec()), start + 1);
        member.put("b");
        let put = member.put("a");
        let deleted = member.delete("a", true);
        assert_eq!(next(&mut follower).await.unwrap(), vec![(EventKind::Put, "a".into(), put)]);
        assert_eq!(next(&mut follower).await.unwrap(), vec![(EventKind::Delete, "a".into(), deleted)]);
    }

    /// Planted gap: a delete whose batch never passes the channel (a snapshot installed on
    /// a follower) is still found, in the store.
    #[tokio::test]
    async fn an_unpublished_revision_is_read_from_the_store() {
        let mut member = Member::new(16);
        let start = member.put("a");
        let mut follower = member.source.follow(Keys::Single(b"a".to_vec()), start + 1);
        let deleted = member.delete("a", false);
        assert_eq!(next(&mut follower).await.unwrap(), vec![(EventKind::Delete, "a".into(), deleted)]);
    }

    /// A receiver that lagged (its batches dropped) catches up from the store: every
    /// event once, in order.
    #[tokio::test]
    async fn a_lagged_follower_catches_up_without_gap_or_duplicate() {
        let mut member = Member::new(2);
        let start = member.put("x");
        let mut follower = member.source.follow(Keys::prefix(b"k"), start + 1);
        let revisions: Vec<i64> = (0..10).map(|i| member.put(&format!("k{i}"))).collect();
        let mut seen = Vec::new();
        while seen.len() < revisions.len() {
            seen.extend(next(&mut follower).await.unwrap().into_iter().map(|(_, _, revision)| revision));
        }
        assert_eq!(seen, revisions);
    }

    /// A follower started after a read at R fails with Compacted when R + 1 is compacted
    /// away before it reads: the compaction removed the delete it waits for, and a
    /// follower that read on from there would wait forever.
    #[tokio::test]
    async fn a_compacted_start_fails_rather_than_miss_a_delete() {
        let mut member = Member::new(16);
        let read_at = member.put("a");
        let deleted = member.delete("a", false);
        member.apply(Command::Compact(CompactionRequest { revision: deleted, physical: true }), false);
        let mut follower = member.source.follow(Keys::Single(b"a".to_vec()), read_at + 1);
        assert_eq!(next(&mut follower).await, Err(EtcdError::Mvcc(concord_mvcc::MvccError::Compacted)));
    }
}
