//! Reading versions: the key index says which version of a key a read sees, the
//! `revisions` table holds its data. Shared by read-only and write transactions.
//!
//! A [`Reader`] pairs an index with a `revisions` table that match exactly: a read-only
//! snapshot's table with the index published at the same commit, or the apply's open
//! write transaction with the index the apply is changing. The latter is how reads inside
//! a Txn (a Range, a Compare, a Put's `prev_kv`) see the Txn's own earlier writes.
//!
//! Walking a range of keys walks the index in key order and picks, per key, the newest
//! version at or below the revision read: its cost is the number of distinct keys, not of
//! versions. A version's data is then one lookup by revision in `revisions`.

use redb::ReadableTable;

use crate::error::MvccError;
use crate::index::KeyIndex;
use crate::keyrange::KeyBounds;
use crate::schema::{rev_u64, Record, StoredVersion};
use crate::types::KeyValue;

/// A table readable as the `revisions` table.
pub(crate) trait RevRead: ReadableTable<(u64, u64), &'static [u8]> {}
impl<T: ReadableTable<(u64, u64), &'static [u8]>> RevRead for T {}

/// Where a walk reads: the live keys, or the state at a past revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Current,
    Revision(i64),
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

/// A key index and the `revisions` table it describes.
pub(crate) struct Reader<'a, R> {
    pub(crate) index: &'a KeyIndex,
    pub(crate) revisions: &'a R,
}

impl<R: RevRead> Reader<'_, R> {
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
        match self.live_version(key, At::Current) {
            Some((main, sub)) => self.kv_of(key, main, sub),
            None => Ok(None),
        }
    }

    /// The revision of the version of `key` visible at `at`, if the key was live then.
    pub(crate) fn live_version(&self, key: &[u8], at: At) -> Option<(u64, u64)> {
        self.index.live_version(key, at.upto())
    }

    /// The version of `key` just before revision `(main, sub)`, if it was live.
    pub(crate) fn previous(&self, key: &[u8], main: u64, sub: u64) -> Result<Option<KeyValue>, MvccError> {
        match self.index.live_before(key, main, sub) {
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
        f: impl FnMut(&[u8], u64, u64) -> Result<bool, MvccError>,
    ) -> Result<(), MvccError> {
        self.index.visit(bounds, at.upto(), reverse, f)
    }
}
