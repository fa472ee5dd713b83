//! concord-wal: a node's durable Raft state — the write-ahead log, the hard state and the
//! snapshot files.
//!
//! Raft's promise holds only if what a node acknowledged survives a crash. [`Wal`] keeps the
//! log in segmented append-only files of checksummed records, makes many appends durable with
//! one `fdatasync` ([`Wal::sync`], group commit), recovers on open (cutting only a torn write
//! at the very end, refusing anything else with an error that names file, offset and remedy),
//! and implements [`concord_raft::LogStore`] so the consensus core reads the stable log from
//! it directly. See `docs/wal.md` for the on-disk format and the recovery rules.
//!
//! ```no_run
//! use concord_raft::{Entry, EntryKind, HardState, LogStore};
//! use concord_wal::{Wal, WalOptions};
//!
//! let mut wal = Wal::open("/var/lib/concord/member", WalOptions::default())?;
//! wal.append(&[Entry { index: 1, term: 1, kind: EntryKind::Normal, data: "put x".into() }])?;
//! wal.set_hard_state(HardState { term: 1, vote: 1, commit: 0 })?;
//! let durable = wal.sync()?; // one fdatasync for both
//! assert_eq!(durable, wal.last_index());
//! # Ok::<(), concord_wal::WalError>(())
//! ```

mod cache;
mod error;
mod faults;
mod fsutil;
mod index;
mod options;
pub mod record;
mod recovery;
mod segment;
mod snapshot;
mod wal;

pub use error::{CorruptionKind, WalError};
#[doc(hidden)]
pub use faults::FaultInjector;
pub use options::{WalOptions, MIN_RECORD_BYTES, MIN_SEGMENT_BYTES};
pub use recovery::TornTail;
pub use snapshot::{Snapshot, SnapshotMeta, SnapshotStore};
pub use wal::{RecoveryReport, Wal};
