//! Compaction: forget history at or below a revision, keeping what reads at it need.
//!
//! After `Compact(c)`, for every key only the newest version at or below `c` survives,
//! and not even that one if it is a tombstone; versions above `c` are untouched. Reads at
//! `c` or later answer as before; reads below `c` fail with `Compacted`. This is etcd's
//! `keyIndex.compact` + `scheduleCompaction`, done at once inside the apply transaction
//! (so `physical` is always true), which keeps every member's state identical.
//!
//! Cost: only revisions in `(previous compaction, c]` are visited, through the `revisions`
//! table in batches of [`BATCH`]; for each, the in-memory key index decides whether it is
//! the key's newest version at or below `c`, and if so the key's older versions (and
//! itself, for a tombstone) are doomed and leave the index at once. The doomed revisions
//! then leave `revisions` in one ordered pass per chunk of [`CHUNK`] visited revisions
//! (`retain_in`): removing them one by one, in key order, rewrote pages all over the
//! table (a compaction of 260k puts and their 260k tombstones took over 7 s; see
//! docs/benchmarks.md). Memory: 16 bytes per doomed revision of a chunk. All of it is one
//! redb transaction: a very large window makes one large commit.

use std::ops::Bound;

use redb::ReadableTable;

use crate::error::MvccError;
use crate::schema::{rev_u64, StoredVersion};
use crate::types::{CompactionRequest, CompactionResponse};
use crate::write::Writer;

/// Revisions read from `revisions` per step (tiny in unit tests, so that they cross
/// batch and chunk boundaries).
const BATCH: usize = if cfg!(test) { 3 } else { 1024 };
/// Revisions visited before the doomed ones are removed from `revisions` in one pass.
const CHUNK: usize = if cfg!(test) { 7 } else { 1 << 20 };

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
    let mut doomed: Vec<(u64, u64)> = Vec::new();
    let mut visited = 0usize;
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
        visited += batch.len();
        for (main, sub, key) in batch {
            doom_older_versions(w, &key, main, sub, target, &mut doomed)?;
        }
        if visited >= CHUNK {
            remove_revisions(w, &mut doomed)?;
            visited = 0;
        }
    }
    remove_revisions(w, &mut doomed)?;
    w.compacted = target;
    Ok(CompactionResponse { revision: w.rev })
}

/// Removes `doomed` (emptied) from `revisions` in one ordered pass over the span they
/// cover.
fn remove_revisions(w: &mut Writer<'_>, doomed: &mut Vec<(u64, u64)>) -> Result<(), MvccError> {
    doomed.sort_unstable();
    let (Some(&first), Some(&last)) = (doomed.first(), doomed.last()) else { return Ok(()) };
    let mut removed = 0usize;
    w.revisions.retain_in(first..=last, |revision, _| {
        let keep = doomed.binary_search(&revision).is_err();
        removed += usize::from(!keep);
        keep
    })?;
    if removed != doomed.len() {
        return Err(MvccError::Corrupt(format!(
            "compaction removed {removed} versions of the {} the key index doomed",
            doomed.len()
        )));
    }
    doomed.clear();
    Ok(())
}

/// Handles version `(main, sub)` of `key`: if it is the newest at or below `target`, dooms
/// every older version, and itself too when it is a tombstone; they leave the index now
/// and `revisions` later (see [`remove_revisions`]).
fn doom_older_versions(
    w: &mut Writer<'_>,
    key: &[u8],
    main: u64,
    sub: u64,
    target: i64,
    doomed: &mut Vec<(u64, u64)>,
) -> Result<(), MvccError> {
    let versions = w.index.versions(key);
    let Ok(at) = versions.binary_search_by_key(&(main, sub), |v| (v.main, v.sub)) else {
        return Err(MvccError::Corrupt(format!("key index misses version {main}.{sub} of key {key:?}")));
    };
    if versions.get(at + 1).is_some_and(|newer| newer.main <= rev_u64(target)) {
        // The newest one at or below the target, visited later, takes care of this one.
        return Ok(());
    }
    let keep_this = !versions[at].tombstone;
    let first_doomed = doomed.len();
    doomed.extend(versions[..at].iter().map(|v| (v.main, v.sub)).chain((!keep_this).then_some((main, sub))));
    for &(m, s) in &doomed[first_doomed..] {
        w.index.remove(key, m, s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::types::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
    use crate::{Command, Store};

    fn everything_at(store: &Store, revision: i64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let request = RangeRequest { key: b"\0".to_vec(), range_end: b"\0".to_vec(), revision, ..Default::default() };
        let response = store.range(&request).expect("range");
        response.kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision)).collect()
    }

    /// Windows many batches and chunks long: every read at or above the compaction point
    /// answers as before, and exactly the versions a read there needs are kept.
    #[test]
    fn compaction_across_batches_and_chunks_keeps_what_reads_need() {
        let store = Store::in_memory().expect("store");
        let mut index = 0;
        let mut apply = |command: Command| {
            index += 1;
            store.apply(index, &command).expect("apply");
        };
        for round in 0..5 {
            for key in 0..9 {
                let put = PutRequest {
                    key: format!("k{key}").into_bytes(),
                    value: format!("{round}").into_bytes(),
                    ..Default::default()
                };
                apply(Command::Put(put));
            }
            let doomed = format!("k{round}").into_bytes();
            apply(Command::DeleteRange(DeleteRangeRequest { key: doomed, range_end: Vec::new(), prev_kv: false }));
        }
        let current = store.current_revision();
        let expected: Vec<_> = [current / 3, current / 2, current - 1, current]
            .into_iter()
            .map(|revision| (revision, everything_at(&store, revision)))
            .collect();
        for (revision, before) in &expected {
            let compact = CompactionRequest { revision: *revision, physical: true };
            index += 1;
            store.apply(index, &Command::Compact(compact)).expect("compact");
            for (later, answer) in expected.iter().filter(|(later, _)| later >= revision) {
                assert_eq!(&everything_at(&store, *later), answer, "read at {later} after compacting at {revision}");
            }
            if *revision == current {
                let versions = store.stats().expect("stats").versions as usize;
                assert_eq!(versions, before.len(), "compacted at the current revision: one version per live key");
            }
        }
    }
}
