//! Reading versions out of the tables, shared by read-only and write transactions.
//!
//! Everything here is generic over redb's `ReadableTable`, so the same code serves a Range
//! from a read transaction and a Range, Compare or Put-with-prev_kv inside the write
//! transaction of an apply, where it sees the writes made earlier in the same command (that
//! is how reads inside a Txn see the Txn's own earlier writes).
//!
//! Walking a range of keys hops from user key to user key in the `key_index` table with two
//! B-tree seeks per key (next key, newest version `<= rev`), so its cost is the number of
//! distinct keys, not of versions; a read at the current revision is the same walk with no
//! upper bound on the revision (there is no separate table of live keys: one less
//! key-ordered table to rewrite on every write). A version's data is then one lookup by
//! revision in the `revisions` table.

use std::ops::Bound;

use redb::ReadableTable;

use crate::error::MvccError;
use crate::keyrange::KeyBounds;
use crate::schema::{rev_u64, IndexKey, IndexTag, Record, StoredVersion};
use crate::types::KeyValue;

/// A table readable as the `key_index` table.
pub(crate) trait KvRead: ReadableTable<IndexKey, u8> {}
impl<T: ReadableTable<IndexKey, u8>> KvRead for T {}

/// A table readable as the `revisions` table.
pub(crate) trait RevRead: ReadableTable<(u64, u64), &'static [u8]> {}
impl<T: ReadableTable<(u64, u64), &'static [u8]>> RevRead for T {}

/// Where a walk reads: the live keys, or the state at a past revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Current,
    Revision(i64),
}

/// Borrowed key tables of one transaction.
pub(crate) struct Reader<'a, K, R> {
    pub(crate) index: &'a K,
    pub(crate) revisions: &'a R,
}

impl At {
    /// The highest main revision a read here sees.
    fn upto(self) -> u64 {
        match self {
            At::Current => u64::MAX,
            At::Revision(rev) => rev_u64(rev),
        }
    }
}

impl<K: KvRead, R: RevRead> Reader<'_, K, R> {
    /// The stored record of one exact version.
    pub(crate) fn record(&self, key: &[u8], main: u64, sub: u64) -> Result<Record, MvccError> {
        let missing = || MvccError::Corrupt(format!("index points at missing version {main}.{sub} of key {key:?}"));
        let stored = self.revisions.get((main, sub))?.ok_or_else(missing)?;
        let (stored_key, record) = StoredVersion::split(stored.value())?;
        if stored_key != key {
            return Err(MvccError::Corrupt(format!("version {main}.{sub} is of key {stored_key:?}, not {key:?}")));
        }
        Record::decode(record)
    }

    /// The KeyValue of one exact version (`None` for a tombstone).
    pub(crate) fn kv_of(&self, key: &[u8], main: u64, sub: u64) -> Result<Option<KeyValue>, MvccError> {
        Ok(self.record(key, main, sub)?.into_kv(key, crate::schema::rev_i64(main)))
    }

    /// The live version of `key`, if it exists.
    pub(crate) fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        match self.live_version(key, At::Current)? {
            Some((main, sub)) => self.kv_of(key, main, sub),
            None => Ok(None),
        }
    }

    /// The revision of the version of `key` visible at `at`, if the key was live then.
    pub(crate) fn live_version(&self, key: &[u8], at: At) -> Result<Option<(u64, u64)>, MvccError> {
        let mut it = self.index.range((key, 0u64, 0u64)..=(key, at.upto(), u64::MAX))?;
        match it.next_back() {
            None => Ok(None),
            Some(entry) => {
                let (k, v) = entry?;
                if IndexTag::is_tombstone(v.value()) {
                    Ok(None)
                } else {
                    let (_, main, sub) = k.value();
                    Ok(Some((main, sub)))
                }
            }
        }
    }

    /// The version of `key` just before revision `(main, sub)`, if it was live.
    pub(crate) fn previous(&self, key: &[u8], main: u64, sub: u64) -> Result<Option<KeyValue>, MvccError> {
        let newest_before = {
            let mut it = self.index.range((key, 0u64, 0u64)..(key, main, sub))?;
            match it.next_back() {
                None => None,
                Some(entry) => {
                    let (k, v) = entry?;
                    let (_, m, s) = k.value();
                    (!IndexTag::is_tombstone(v.value())).then_some((m, s))
                }
            }
        };
        match newest_before {
            Some((m, s)) => self.kv_of(key, m, s),
            None => Ok(None),
        }
    }

    /// Calls `f(key, main, sub)` for every key live at `at` within `bounds`, in key order
    /// (descending when `reverse`), until `f` returns `false`.
    pub(crate) fn visit(
        &self,
        bounds: KeyBounds<'_>,
        at: At,
        reverse: bool,
        mut f: impl FnMut(&[u8], u64, u64) -> Result<bool, MvccError>,
    ) -> Result<(), MvccError> {
        if bounds.is_empty() {
            return Ok(());
        }
        if let KeyBounds::Single(key) = bounds {
            if let Some((main, sub)) = self.live_version(key, at)? {
                f(key, main, sub)?;
            }
            return Ok(());
        }
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let next = if reverse {
                self.key_before(bounds, cursor.as_deref())?
            } else {
                self.key_after(bounds, cursor.as_deref())?
            };
            let Some(key) = next else { break };
            if !bounds.contains(&key) {
                break;
            }
            if let Some((main, sub)) = self.live_version(&key, at)? {
                if !f(&key, main, sub)? {
                    break;
                }
            }
            cursor = Some(key);
        }
        Ok(())
    }

    /// The first user key in `key_index` after `cursor` (or at/after the span's start).
    fn key_after(&self, span: KeyBounds<'_>, cursor: Option<&[u8]>) -> Result<Option<Vec<u8>>, MvccError> {
        let lower = match (cursor, span) {
            (Some(c), _) => Bound::Excluded((c, u64::MAX, u64::MAX)),
            (None, KeyBounds::Span { start, .. }) | (None, KeyBounds::Single(start)) => {
                Bound::Included((start, 0u64, 0u64))
            }
        };
        let mut it = self.index.range((lower, Bound::Unbounded))?;
        match it.next() {
            None => Ok(None),
            Some(entry) => Ok(Some(entry?.0.value().0.to_vec())),
        }
    }

    /// The last user key in `key_index` before `cursor` (or before the span's end).
    fn key_before(&self, span: KeyBounds<'_>, cursor: Option<&[u8]>) -> Result<Option<Vec<u8>>, MvccError> {
        let upper = match (cursor, span) {
            (Some(c), _) => Bound::Excluded((c, 0u64, 0u64)),
            (None, KeyBounds::Span { end: Some(e), .. }) => Bound::Excluded((e, 0u64, 0u64)),
            (None, KeyBounds::Span { end: None, .. }) => Bound::Unbounded,
            (None, KeyBounds::Single(k)) => Bound::Included((k, u64::MAX, u64::MAX)),
        };
        let mut it = self.index.range((Bound::Unbounded, upper))?;
        match it.next_back() {
            None => Ok(None),
            Some(entry) => Ok(Some(entry?.0.value().0.to_vec())),
        }
    }
}
