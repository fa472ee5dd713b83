//! A bounded cache of the most recent entries, so that the core's reads of the tail (what a
//! leader sends to followers that keep up) are served from memory.
//!
//! The cache always holds a contiguous run of entries ending at the log's last index (or
//! nothing); it is bounded in bytes, counted as [`Entry::size_bytes`], and evicts the oldest.

use std::collections::VecDeque;

use concord_raft::{Entry, Index};

#[derive(Debug)]
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    budget: u64,
}

impl EntryCache {
    pub fn new(budget: u64) -> EntryCache {
        EntryCache { entries: VecDeque::new(), bytes: 0, budget }
    }

    fn first_index(&self) -> Option<Index> {
        self.entries.front().map(|e| e.index)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        let first = self.first_index()?;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// Adds the entry after the last cached one; a non-contiguous entry restarts the cache.
    pub fn push(&mut self, entry: Entry) {
        if self.budget == 0 {
            return;
        }
        if let Some(last) = self.entries.back() {
            if entry.index != last.index + 1 {
                self.clear();
            }
        }
        self.bytes += entry.size_bytes();
        self.entries.push_back(entry);
        while self.bytes > self.budget {
            let e = self.entries.pop_front().expect("non-empty while over budget");
            self.bytes -= e.size_bytes();
        }
    }

    /// Drops cached entries with index >= `from`.
    pub fn truncate_from(&mut self, from: Index) {
        while self.entries.back().is_some_and(|e| e.index >= from) {
            let e = self.entries.pop_back().expect("checked");
            self.bytes -= e.size_bytes();
        }
    }

    /// Drops cached entries with index <= `index`.
    pub fn compact_to(&mut self, index: Index) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= e.size_bytes();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::EntryKind;

    fn e(index: Index, n: usize) -> Entry {
        Entry { index, term: 1, kind: EntryKind::Normal, data: Bytes::from(vec![0; n]) }
    }

    #[test]
    fn evicts_oldest_past_budget() {
        let mut c = EntryCache::new(100);
        for i in 1..=5 {
            c.push(e(i, 16)); // 40 bytes each
        }
        assert!(c.get(3).is_none());
        assert_eq!(c.get(4).unwrap().index, 4);
        assert_eq!(c.get(5).unwrap().index, 5);
        c.truncate_from(5);
        assert!(c.get(5).is_none());
        c.push(e(9, 0));
        assert!(c.get(4).is_none(), "a gap restarts the cache");
        assert!(c.get(9).is_some());
    }
}
