//! Tunables of the write-ahead log, with their limits.
//!
//! Every size the log works with is bounded and checked here once, on open, so that the rest
//! of the code can assert instead of handle: segments have a floor (a header must fit) and
//! records a ceiling (a record is read into memory whole).

use std::sync::Arc;

use crate::error::{Result, WalError};
use crate::faults::FaultInjector;
use crate::record::HARD_MAX_RECORD_BYTES;

/// The smallest segment size accepted (tests use tiny segments to exercise rollover).
pub const MIN_SEGMENT_BYTES: u64 = 256;
/// The smallest record limit accepted: every fixed-size record must fit.
pub const MIN_RECORD_BYTES: u32 = 128;

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// A new segment is started when the next write would take the current one past this
    /// size. A single write larger than this gets a segment of its own. Default 64 MiB.
    pub segment_bytes: u64,
    /// The largest record payload accepted on write and on read; an entry above it is
    /// rejected with [`WalError::EntryTooLarge`]. Default 16 MiB; at most 1 GiB.
    pub max_record_bytes: u32,
    /// Budget of the in-memory cache of recent entries, in [`concord_raft::Entry::size_bytes`]
    /// units. Default 16 MiB. Zero disables the cache.
    pub cache_bytes: u64,
    /// Give each new segment its whole size up front (`fallocate`), as etcd does. An
    /// append then writes inside the file instead of growing it, so its fdatasync need not
    /// also write the file's size: one disk write per sync instead of two (about 50 µs of
    /// each sync on this project's test machine). Default true. Best effort: where the file
    /// system cannot preallocate, segments grow with each write.
    pub preallocate: bool,
    /// Fault injection for tests; `None` in production.
    #[doc(hidden)]
    pub faults: Option<Arc<FaultInjector>>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            cache_bytes: 16 << 20,
            preallocate: true,
            faults: None,
        }
    }
}

impl WalOptions {
    /// The largest entry data (`Entry::data`) one record holds.
    pub fn max_entry_data_bytes(&self) -> u64 {
        u64::from(self.max_record_bytes).saturating_sub(crate::record::ENTRY_FIXED_LEN as u64)
    }

    /// The length new and reopened segments are preallocated to, if they are.
    pub(crate) fn preallocate_to(&self) -> Option<u64> {
        self.preallocate.then_some(self.segment_bytes)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(WalError::BadOptions(format!(
                "segment_bytes {} is below the minimum of {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if !(MIN_RECORD_BYTES..=HARD_MAX_RECORD_BYTES).contains(&self.max_record_bytes) {
            return Err(WalError::BadOptions(format!(
                "max_record_bytes {} is outside {MIN_RECORD_BYTES}..={HARD_MAX_RECORD_BYTES}",
                self.max_record_bytes
            )));
        }
        Ok(())
    }
}
