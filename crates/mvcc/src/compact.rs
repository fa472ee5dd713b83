//! Compaction: forget history at or below a revision, keeping what reads at it need.
//!
//! After `Compact(c)`, for every key only the newest version at or below `c` survives,
//! and not even that one if it is a tombstone; versions above `c` are untouched. Reads at
//! `c` or later answer as before; reads below `c` fail with `Compacted`. This is etcd's
//! `keyIndex.compact` + `scheduleCompaction`, done at once inside the apply transaction
//! (so `physical` is always true), which keeps every member's state identical.
//!
//! Cost: only revisions in `(previous compaction, c]` are visited, through the `revisions` table
//! in batches of [`BATCH`] (memory is bounded by the batch, not by the window); for each,
//! the key index decides whether it is the key's newest version at or below `c`, and if so
//! the key's older versions are removed from both. All of it is one redb transaction: a very large
//! window makes one large commit.

use std::ops::Bound;

use redb::ReadableTable;

use crate::error::MvccError;
use crate::schema::{rev_u64, StoredVersion};
use crate::types::{CompactionRequest, CompactionResponse};
use crate::write::Writer;

/// Revisions read from `revisions` per step.
const BATCH: usize = 1024;

pub(crate) fn compact(w: &mut Writer<'_>, req: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
    let target = req.revision;
    if target <= w.compacted {
        return Err(MvccError::Compacted);
    }
    if target > w.rev {
        return Err(MvccError::FutureRevision);
    }
    let upper = (rev_u64(target), u64::MAX);
    let mut from = Bound::Included((rev_u64(w.compacted.saturating_add(1)), 0u64));
    loop {
        let mut batch: Vec<(u64, u64, Vec<u8>)> = Vec::with_capacity(BATCH);
        for entry in w.revisions.range((from, Bound::Included(upper)))?.take(BATCH) {
            let (k, v) = entry?;
            let (main, sub) = k.value();
            let (key, _) = StoredVersion::split(v.value())?;
            batch.push((main, sub, key.to_vec()));
        }
        let Some(&(main, sub, _)) = batch.last() else {
            break;
        };
        from = Bound::Excluded((main, sub));
        for (main, sub, key) in batch {
            compact_version(w, &key, main, sub, target)?;
        }
    }
    w.compacted = target;
    Ok(CompactionResponse { revision: w.rev })
}

/// Handles version `(main, sub)` of `key`: if it is the newest at or below `target`, drops
/// every older version, and itself too when it is a tombstone.
fn compact_version(w: &mut Writer<'_>, key: &[u8], main: u64, sub: u64, target: i64) -> Result<(), MvccError> {
    let versions = w.index.versions(key);
    let Ok(at) = versions.binary_search_by_key(&(main, sub), |v| (v.main, v.sub)) else {
        return Err(MvccError::Corrupt(format!("key index misses version {main}.{sub} of key {key:?}")));
    };
    if versions.get(at + 1).is_some_and(|newer| newer.main <= rev_u64(target)) {
        // The newest one at or below the target, visited later, takes care of this one.
        return Ok(());
    }
    let keep_this = !versions[at].tombstone;
    let doomed: Vec<(u64, u64)> =
        versions[..at].iter().map(|v| (v.main, v.sub)).chain((!keep_this).then_some((main, sub))).collect();
    for (m, s) in doomed {
        w.index.remove(key, m, s);
        w.revisions.remove((m, s))?;
    }
    Ok(())
}
