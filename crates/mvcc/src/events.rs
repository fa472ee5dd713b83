//! Watch catch-up: the events of past revisions, read back from the store.
//!
//! A watch that starts at an old revision first needs every change since then; apply only
//! hands out the events of what it applies now. The `revisions` table is the history in
//! revision order, key and data together, so the events of revisions `[from, current]` are
//! one ordered scan (plus, per event, a lookup of the key's version before it). A watcher that
//! starts below the compacted revision cannot be served (etcd: `minRev < compactRev`).

use crate::error::MvccError;
use crate::read::{Reader, RevRead};
use crate::schema::{rev_i64, rev_u64, Record, StoredVersion};
use crate::types::{Event, EventKind, KeyValue};

/// What a bounded catch-up read returns: the events of revisions `from..=through` in order.
/// Every revision up to `through` was read whole, so the next read starts at `through + 1`
/// (`through` is `from - 1` when there was nothing to read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventChunk {
    pub events: Vec<Event>,
    pub through: i64,
    /// The store's revision when it was read: `through < current` means there is more.
    pub current: i64,
}

/// Bounds of one catch-up read. A revision is never split, so a chunk may exceed
/// `max_bytes` by the size of its last revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    pub max_revisions: usize,
    pub max_bytes: usize,
}

/// Roughly what an event costs in memory and on the wire (its keys and values).
fn event_bytes(event: &Event) -> usize {
    let prev = event.prev_kv.as_ref().map_or(0, |p| p.key.len() + p.value.len());
    event.kv.key.len() + event.kv.value.len() + prev + 64
}

/// Events of revisions `from..=current` as in [`events_since`], but stopping after
/// `limits.max_revisions` revisions or once `limits.max_bytes` is reached, and saying how
/// far it read. Unlike `events_since`, `from` is checked against the compacted revision
/// before it is raised to 1, as etcd does (a start of -5 on a never-compacted store, whose
/// compacted revision is -1, is refused).
pub(crate) fn events_chunk<R>(
    reader: &Reader<'_, R>,
    from: i64,
    limits: ChunkLimits,
    compacted: i64,
    current: i64,
) -> Result<EventChunk, MvccError>
where
    R: RevRead,
{
    if from < compacted {
        return Err(MvccError::Compacted);
    }
    let from = from.max(1);
    let mut out = EventChunk { events: Vec::new(), through: current.max(from - 1), current };
    let mut bytes = 0usize;
    let mut revisions = 0usize;
    let mut last_main = None;
    for entry in reader.revisions.range((rev_u64(from), 0u64)..)? {
        let (k, v) = entry?;
        let (main, sub) = k.value();
        if last_main != Some(main) {
            if let Some(done) = last_main {
                if revisions >= limits.max_revisions || bytes >= limits.max_bytes {
                    out.through = rev_i64(done);
                    break;
                }
            }
            revisions += 1;
            last_main = Some(main);
        }
        let event = event_at(reader, v.value(), main, sub)?;
        bytes += event_bytes(&event);
        out.events.push(event);
    }
    Ok(out)
}

/// The event of the version stored as `stored` at `(main, sub)`: a put with the version
/// before it, a delete without (as the apply makes them: see [`fill_delete_prevs`]).
fn event_at<R: RevRead>(reader: &Reader<'_, R>, stored: &[u8], main: u64, sub: u64) -> Result<Event, MvccError> {
    let (key, record) = StoredVersion::split(stored)?;
    let record = Record::decode(record)?;
    Ok(match record.into_kv(key, rev_i64(main)) {
        Some(kv) => Event { kind: EventKind::Put, kv, prev_kv: reader.previous(key, main, sub)? },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue { key: key.to_vec(), mod_revision: rev_i64(main), ..KeyValue::default() },
            prev_kv: None,
        },
    })
}

/// Gives every Delete event without `prev_kv` the version it deleted, read from the
/// store. A delete always removes a live version, so a Delete event without one is one
/// whose version was not read (by the apply or a catch-up read), never one that had none.
/// A version compacted away since (a compaction at or above the delete's revision) stays
/// missing, as in etcd, whose watchers read `prev_kv` the same way and skip what is gone.
pub(crate) fn fill_delete_prevs<R: RevRead>(reader: &Reader<'_, R>, events: &mut [Event]) -> Result<(), MvccError> {
    for event in events.iter_mut().filter(|e| e.kind == EventKind::Delete && e.prev_kv.is_none()) {
        let main = rev_u64(event.kv.mod_revision);
        // A Txn may not both write and delete one key, so the key's version before the
        // delete's revision is the one it deleted.
        event.prev_kv = reader.previous(&event.kv.key, main, 0)?;
    }
    Ok(())
}

/// Events of revisions `from..=current` in order, stopping after the revision during which
/// `max_events` was reached (a revision is never split, so a Txn's events stay together).
pub(crate) fn events_since<R>(
    reader: &Reader<'_, R>,
    from: i64,
    max_events: usize,
    compacted: i64,
) -> Result<Vec<Event>, MvccError>
where
    R: RevRead,
{
    let from = from.max(1);
    if from < compacted {
        return Err(MvccError::Compacted);
    }
    let mut out = Vec::new();
    let mut last_main = None;
    for entry in reader.revisions.range((rev_u64(from), 0u64)..)? {
        let (k, v) = entry?;
        let (main, sub) = k.value();
        if out.len() >= max_events && last_main != Some(main) {
            break;
        }
        last_main = Some(main);
        let event = event_at(reader, v.value(), main, sub)?;
        out.push(event);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::types::{DeleteRangeRequest, EventKind, LeaseGrantRequest, LeaseRevokeRequest, PutRequest};
    use crate::{ChunkLimits, Command, MvccError, Store};

    fn put(store: &Store, index: u64, key: &str, value: &str) {
        let request = PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() };
        store.apply(index, &Command::Put(request)).expect("apply a put");
    }

    #[test]
    fn chunks_stop_at_revision_and_byte_limits_and_say_how_far_they_read() {
        let store = Store::in_memory().expect("open a store");
        for i in 0..5 {
            put(&store, i + 1, &format!("k{i}"), "0123456789");
        }
        let delete = DeleteRangeRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), prev_kv: false };
        store.apply(6, &Command::DeleteRange(delete)).expect("apply a delete");
        // Revisions 2..=6 are the puts, 7 deletes five keys at once.
        let all = ChunkLimits { max_revisions: 100, max_bytes: 1 << 20 };
        let chunk = store.events_chunk(2, all, false).expect("read");
        assert_eq!((chunk.events.len(), chunk.through), (10, 7));
        let two = ChunkLimits { max_revisions: 2, max_bytes: 1 << 20 };
        let chunk = store.events_chunk(2, two, false).expect("read");
        assert_eq!((chunk.events.len(), chunk.through), (2, 3));
        // A revision is never split: one byte of budget still gives all of revision 7.
        let tiny = ChunkLimits { max_revisions: 100, max_bytes: 1 };
        let chunk = store.events_chunk(7, tiny, false).expect("read");
        assert_eq!((chunk.events.len(), chunk.through), (5, 7));
        assert!(chunk.events.iter().all(|e| e.prev_kv.is_none()), "deletes are read without prev_kv");
        let mut deletes = chunk.events.clone();
        store.fill_delete_prevs(&mut deletes).expect("fill");
        assert!(deletes.iter().all(|e| e.prev_kv.as_ref().is_some_and(|p| p.value == b"0123456789")));
        let chunk = store.events_chunk(8, all, false).expect("read");
        assert_eq!((chunk.events.len(), chunk.through), (0, 7));
        // Below the compacted revision (-1 when never compacted), as etcd: refused.
        assert_eq!(store.events_chunk(-5, all, false), Err(MvccError::Compacted));
        assert_eq!(store.events_chunk(-1, all, false).expect("read").events.len(), 10);
        // A resumed read at exactly the compacted revision is refused (its deletes may be
        // gone); a first read there is served, as etcd serves a watch starting there.
        store.apply(11, &Command::Compact(crate::CompactionRequest { revision: 4, physical: true })).expect("compact");
        assert_eq!(store.events_chunk(4, all, true), Err(MvccError::Compacted));
        assert!(store.events_chunk(4, all, false).is_ok());
        assert!(store.events_chunk(5, all, true).is_ok());
    }

    #[test]
    fn a_lease_revoke_gives_the_same_delete_events_live_and_in_catch_up() {
        let store = Store::in_memory().expect("open a store");
        store.apply(1, &Command::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 10 })).expect("grant");
        for (index, key) in [(2, "l/1"), (3, "l/2")] {
            let request = PutRequest { key: key.into(), value: b"v".to_vec(), lease: 7, ..PutRequest::default() };
            store.apply(index, &Command::Put(request)).expect("put with the lease");
        }
        let applied = store.apply(4, &Command::LeaseRevoke(LeaseRevokeRequest { id: 7 })).expect("revoke");
        let live = applied.expect("applied").events;
        let kinds: Vec<_> = live.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision)).collect();
        assert_eq!(kinds, vec![(EventKind::Delete, b"l/1".to_vec(), 4), (EventKind::Delete, b"l/2".to_vec(), 4)]);
        assert!(live.iter().all(|e| e.prev_kv.is_none()), "a revoke reads no old value");
        let mut filled = live.clone();
        store.fill_delete_prevs(&mut filled).expect("fill");
        assert!(filled.iter().all(|e| e.prev_kv.as_ref().is_some_and(|p| p.value == b"v" && p.lease == 7)));
        let all = ChunkLimits { max_revisions: 100, max_bytes: 1 << 20 };
        assert_eq!(store.events_chunk(4, all, false).expect("read").events, live, "catch-up reads what apply sent");
    }
}
