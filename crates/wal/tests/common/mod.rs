//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use concord_raft::{Entry, EntryKind, Index, LogStore, Term};
use concord_wal::{Wal, WalOptions};

/// An entry whose data is derived from its index and term, `len` bytes long.
pub fn entry(index: Index, term: Term, len: usize) -> Entry {
    let data: Vec<u8> = (0..len).map(|i| (index as usize * 31 + term as usize * 7 + i) as u8).collect();
    Entry { index, term, kind: EntryKind::Normal, data: Bytes::from(data) }
}

/// Entries `from..=to` of one term.
pub fn entries(from: Index, to: Index, term: Term, len: usize) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term, len)).collect()
}

/// Tiny segments, so that a few entries span several files.
pub fn small() -> WalOptions {
    WalOptions { segment_bytes: 1024, ..WalOptions::default() }
}

/// `opts` with fsyncs skipped: for tests that simulate crashes by cutting files themselves
/// (they check the log's bookkeeping; real fsyncs on a busy disk would only make them slow).
pub fn no_fsync(opts: WalOptions) -> WalOptions {
    let faults = std::sync::Arc::new(concord_wal::FaultInjector::new());
    faults.skip_syncs(true);
    WalOptions { faults: Some(faults), ..opts }
}

/// Every entry the log holds, read through `LogStore`.
pub fn all(wal: &Wal) -> Vec<Entry> {
    if wal.last_index() < wal.first_index() {
        return Vec::new();
    }
    wal.entries(wal.first_index(), wal.last_index() + 1, u64::MAX).unwrap()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The segment files of the log in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}
