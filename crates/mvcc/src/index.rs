//! The key index: for every user key, its kept versions in revision order, held in memory.
//!
//! This is etcd's `treeIndex`. The `revisions` table holds the data, keyed by revision and
//! appended in order; the index says which revisions belong to which key. Keeping it in
//! memory is what makes a write cheap: a put or a delete appends one record to
//! `revisions` and touches no key-ordered page on disk. A DeleteRange over many keys
//! writes only their tombstones. The price is etcd's too: memory grows with the number of
//! keys and kept versions (one entry of 32 bytes per version, plus each key once), and
//! the index is rebuilt from `revisions` when the store opens.
//!
//! The map is a persistent B-tree (`imbl::OrdMap`): a clone is O(1) and shares every node.
//! This is how readers get an index that matches their redb read transaction exactly
//! while applies go on. The apply works on its own clone and the store publishes it in
//! the same critical section as the commit. A Txn that fails half-way is undone on the
//! clone, as it is in the tables.
//!
//! Keys and version lists are behind `Arc`s so that copying a node is cheap: an apply's
//! first write under a node copies it (the published index shares it), and a node holds
//! up to 64 entries. With owned keys and lists that copy cloned every key and list in the
//! node — two allocations and the key's bytes per entry, for every write of a random key
//! (4 % of a member's CPU under `etcdctl check perf`, before the page faults it caused);
//! now it takes a reference to each. A write replaces the touched key's list with a new
//! one (the old one may be shared).

use std::sync::Arc;

use imbl::OrdMap;

use crate::error::MvccError;
use crate::keyrange::KeyBounds;
use crate::schema::Record;

/// One kept version of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) main: u64,
    pub(crate) sub: u64,
    pub(crate) tombstone: bool,
    /// The lease the version is attached to (0: none), so that deleting a key detaches
    /// it from its lease without reading the record (etcd keeps this map in its lessor).
    pub(crate) lease: i64,
}

impl Version {
    pub(crate) fn of(main: u64, sub: u64, record: &Record) -> Version {
        match record {
            Record::Put { lease, .. } => Version { main, sub, tombstone: false, lease: *lease },
            Record::Tombstone => Version { main, sub, tombstone: true, lease: 0 },
        }
    }

    /// The version of encoded record bytes (reads the header, not the value).
    pub(crate) fn of_encoded(main: u64, sub: u64, record: &[u8]) -> Result<Version, MvccError> {
        Ok(match Record::lease_of(record)? {
            Some(lease) => Version { main, sub, tombstone: false, lease },
            None => Version { main, sub, tombstone: true, lease: 0 },
        })
    }

    fn revision(&self) -> (u64, u64) {
        (self.main, self.sub)
    }
}

/// The versions of every key (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyIndex {
    /// Versions of each key in increasing revision order; never empty.
    keys: OrdMap<Arc<[u8]>, Arc<[Version]>>,
    /// Versions in all keys.
    versions: u64,
}

impl KeyIndex {
    /// Records a version of `key`. Versions of one key arrive in increasing revision
    /// order (applies append; rebuilds and restores read in revision or key-then-revision
    /// order); anything else is a bug.
    pub(crate) fn push(&mut self, key: &[u8], version: Version) {
        match self.keys.get_mut(key) {
            Some(versions) => {
                let last = versions.last().expect("a key in the index has versions");
                assert!(
                    last.revision() < version.revision(),
                    "versions of a key are added in revision order ({:?} after {:?})",
                    version.revision(),
                    last.revision()
                );
                *versions = versions.iter().copied().chain(std::iter::once(version)).collect();
            }
            None => {
                self.keys.insert(Arc::from(key), Arc::from([version]));
            }
        }
        self.versions += 1;
    }

    /// Forgets version `(main, sub)` of `key` (a compaction, or an undone write); whether
    /// it was there.
    pub(crate) fn remove(&mut self, key: &[u8], main: u64, sub: u64) -> bool {
        let Some(versions) = self.keys.get_mut(key) else { return false };
        let Ok(at) = versions.binary_search_by_key(&(main, sub), Version::revision) else { return false };
        if versions.len() == 1 {
            self.keys.remove(key);
        } else {
            *versions = versions[..at].iter().chain(&versions[at + 1..]).copied().collect();
        }
        self.versions -= 1;
        true
    }

    /// Version `(main, sub)` of `key`, if kept.
    pub(crate) fn version(&self, key: &[u8], main: u64, sub: u64) -> Option<Version> {
        let versions = self.versions(key);
        versions.binary_search_by_key(&(main, sub), Version::revision).ok().map(|at| versions[at])
    }

    /// The kept versions of `key`, oldest first (empty for a key never written or fully
    /// compacted away).
    pub(crate) fn versions(&self, key: &[u8]) -> &[Version] {
        self.keys.get(key).map_or(&[], |versions| versions)
    }

    /// The version of `key` live at main revision `upto` (the newest at or below it, unless
    /// that is a tombstone).
    pub(crate) fn live_version(&self, key: &[u8], upto: u64) -> Option<(u64, u64)> {
        live_in(self.versions(key), upto)
    }

    /// The version of `key` just before `(main, sub)`, if it was live.
    pub(crate) fn live_before(&self, key: &[u8], main: u64, sub: u64) -> Option<(u64, u64)> {
        let versions = self.versions(key);
        let before = versions.partition_point(|v| v.revision() < (main, sub));
        versions[..before].last().filter(|v| !v.tombstone).map(Version::revision)
    }

    /// Calls `f(key, main, sub)` for every key in `bounds` live at main revision `upto`, in
    /// key order (descending when `reverse`), until `f` returns `false`.
    pub(crate) fn visit<E>(
        &self,
        bounds: KeyBounds<'_>,
        upto: u64,
        reverse: bool,
        mut f: impl FnMut(&[u8], u64, u64) -> Result<bool, E>,
    ) -> Result<(), E> {
        if bounds.is_empty() {
            return Ok(());
        }
        let range = bounds.as_bounds();
        let mut step = |key: &Arc<[u8]>, versions: &Arc<[Version]>| match live_in(versions, upto) {
            Some((main, sub)) => f(key, main, sub),
            None => Ok(true),
        };
        if reverse {
            for (key, versions) in self.keys.range::<_, [u8]>(range).rev() {
                if !step(key, versions)? {
                    break;
                }
            }
        } else {
            for (key, versions) in self.keys.range::<_, [u8]>(range) {
                if !step(key, versions)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every kept version, in key order and then revision order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Version)> + '_ {
        self.keys.iter().flat_map(|(key, versions)| versions.iter().map(move |v| (&key[..], *v)))
    }

    /// How many versions are kept.
    pub(crate) fn version_count(&self) -> u64 {
        self.versions
    }
}

/// The live version among `versions` at main revision `upto`.
fn live_in(versions: &[Version], upto: u64) -> Option<(u64, u64)> {
    let visible = versions.partition_point(|v| v.main <= upto);
    versions[..visible].last().filter(|v| !v.tombstone).map(Version::revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: u64) -> Version {
        Version { main, sub: 0, tombstone: false, lease: 0 }
    }

    fn tombstone(main: u64) -> Version {
        Version { main, sub: 0, tombstone: true, lease: 0 }
    }

    fn live_keys(index: &KeyIndex, bounds: KeyBounds<'_>, upto: u64, reverse: bool) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        index
            .visit::<()>(bounds, upto, reverse, |k, main, _| {
                out.push((k.to_vec(), main));
                Ok(true)
            })
            .unwrap();
        out
    }

    #[test]
    fn versions_answer_reads_at_every_revision() {
        let mut index = KeyIndex::default();
        index.push(b"a", put(2));
        index.push(b"b", put(3));
        index.push(b"a", put(4));
        index.push(b"a", tombstone(5));
        index.push(b"a", put(6));
        assert_eq!(index.version_count(), 5);
        assert_eq!(index.live_version(b"a", 1), None, "before its first write");
        assert_eq!(index.live_version(b"a", 3), Some((2, 0)));
        assert_eq!(index.live_version(b"a", 5), None, "deleted at 5");
        assert_eq!(index.live_version(b"a", u64::MAX), Some((6, 0)));
        assert_eq!(index.live_before(b"a", 4, 0), Some((2, 0)));
        assert_eq!(index.live_before(b"a", 6, 0), None, "the version before 6 is a tombstone");
        assert_eq!(index.live_before(b"a", 2, 0), None);
        assert_eq!(index.version(b"a", 4, 0), Some(put(4)));
        assert_eq!(index.version(b"a", 3, 0), None);
        let all = KeyBounds::new(b"", b"\0");
        assert_eq!(live_keys(&index, all, 3, false), vec![(b"a".to_vec(), 2), (b"b".to_vec(), 3)]);
        assert_eq!(live_keys(&index, all, 5, false), vec![(b"b".to_vec(), 3)]);
        assert_eq!(live_keys(&index, all, u64::MAX, true), vec![(b"b".to_vec(), 3), (b"a".to_vec(), 6)]);
        assert_eq!(live_keys(&index, KeyBounds::new(b"b", b""), u64::MAX, false), vec![(b"b".to_vec(), 3)]);
        assert_eq!(live_keys(&index, KeyBounds::new(b"a", b"b"), u64::MAX, false), vec![(b"a".to_vec(), 6)]);
        assert!(live_keys(&index, KeyBounds::new(b"b", b"a"), u64::MAX, false).is_empty(), "an empty span");
    }

    #[test]
    fn removing_the_last_version_forgets_the_key_and_clones_are_untouched() {
        let mut index = KeyIndex::default();
        index.push(b"a", put(2));
        index.push(b"a", put(3));
        let published = index.clone();
        assert!(index.remove(b"a", 2, 0));
        assert!(!index.remove(b"a", 2, 0), "already gone");
        assert!(index.remove(b"a", 3, 0));
        assert!(index.versions(b"a").is_empty());
        assert_eq!(index.iter().count(), 0);
        assert_eq!(index.version_count(), 0);
        assert_eq!(published.versions(b"a").len(), 2, "a clone taken before keeps its versions");
        assert_eq!(published.iter().map(|(_, v)| v.main).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    #[should_panic(expected = "revision order")]
    fn a_version_out_of_order_is_a_bug() {
        let mut index = KeyIndex::default();
        index.push(b"a", put(3));
        index.push(b"a", put(2));
    }
}
