//! Watch catch-up: the events of past revisions, read back from the store.
//!
//! A watch that starts at an old revision first needs every change since then; apply only
//! hands out the events of what it applies now. The `revs` table is the history in revision
//! order, so the events of revisions `[from, current]` are one ordered scan. A watcher that
//! starts below the compacted revision cannot be served (etcd: `minRev < compactRev`).

use redb::ReadableTable;

use crate::error::MvccError;
use crate::read::{CurRead, KvRead, Reader};
use crate::schema::{rev_i64, rev_u64};
use crate::types::{Event, EventKind, KeyValue};

/// Events of revisions `from..=current` in order, stopping after the revision during which
/// `max_events` was reached (a revision is never split, so a Txn's events stay together).
pub(crate) fn events_since<K, C, R>(
    reader: &Reader<'_, K, C>,
    revs: &R,
    from: i64,
    max_events: usize,
    compacted: i64,
) -> Result<Vec<Event>, MvccError>
where
    K: KvRead,
    C: CurRead,
    R: ReadableTable<(u64, u64), &'static [u8]>,
{
    let from = from.max(1);
    if from < compacted {
        return Err(MvccError::Compacted);
    }
    let mut out = Vec::new();
    let mut last_main = None;
    for entry in revs.range((rev_u64(from), 0u64)..)? {
        let (k, v) = entry?;
        let (main, sub) = k.value();
        if out.len() >= max_events && last_main != Some(main) {
            break;
        }
        last_main = Some(main);
        let key = v.value();
        let record = reader.record(key, main, sub)?;
        let prev_kv = reader.previous(key, main, sub)?;
        let event = match record.into_kv(key, rev_i64(main)) {
            Some(kv) => Event { kind: EventKind::Put, kv, prev_kv },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: key.to_vec(), mod_revision: rev_i64(main), ..KeyValue::default() },
                prev_kv,
            },
        };
        out.push(event);
    }
    Ok(out)
}
