//! The errors of the write-ahead log, and what an operator should do about each.
//!
//! Storage errors end up in front of an operator at 3 a.m., so every variant that can stop a
//! node names the file, the byte offset and the next step. Corruption is one variant with a
//! [`CorruptionKind`] so that callers and tests can tell the cases apart without parsing text.

use std::fmt;
use std::io;
use std::path::PathBuf;

use concord_raft::{Index, StorageError};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The files on disk are damaged in a way that is not a torn write at the very end of the
    /// log. The node must not start: it might have acknowledged what is damaged.
    #[error("{}: offset {offset}: {kind}: {detail}. {}", .path.display(), .kind.advice())]
    Corrupt {
        /// The file that is damaged (for a missing segment: the file after the gap).
        path: PathBuf,
        /// Byte offset in `path` where the damage starts.
        offset: u64,
        kind: CorruptionKind,
        /// What exactly was found.
        detail: String,
    },
    /// The disk is full. The partial write was cut back off the file, so the files are as
    /// they were before the call; the call can be retried once there is space again.
    #[error(
        "no space left on the device writing {}: the partial write was undone and the files \
         are consistent; free disk space and retry",
        .path.display()
    )]
    NoSpace { path: PathBuf },
    /// An fsync (or the undo of a failed write) failed earlier. The kernel may have dropped
    /// the dirty pages, so nothing written since the last good fsync can be trusted, and a
    /// retry on the same descriptor could report success falsely. Every call after the
    /// failure returns this error; the process must restart and recover from the disk.
    #[error(
        "the write-ahead log is unusable after a failed fsync or write ({cause}); stop the \
         process and restart it: recovery keeps what reached the disk"
    )]
    Poisoned { cause: String },
    /// Any other I/O error (opening, listing, reading, renaming, removing files).
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An entry whose record would exceed [`crate::WalOptions::max_record_bytes`].
    #[error(
        "entry {index} needs a record of {size} bytes, above the limit of {max} bytes \
         (WalOptions::max_record_bytes); split the proposal or raise the limit"
    )]
    EntryTooLarge { index: Index, size: u64, max: u32 },
    /// The caller broke the contract of a method (a gap in the appended indexes, truncating a
    /// committed entry, compacting past the newest snapshot, ...). Nothing was written.
    #[error("invalid request to the write-ahead log: {0}")]
    Invalid(String),
    /// [`crate::WalOptions`] out of range.
    #[error("invalid write-ahead log options: {0}")]
    BadOptions(String),
}

/// Which kind of damage [`WalError::Corrupt`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CorruptionKind {
    /// A record's header or payload checksum does not match.
    BadChecksum,
    /// A record is cut short in a segment that is not the last one (only the last segment
    /// may end in a torn write).
    Truncated,
    /// A record with a valid checksum that cannot be decoded: unknown record type, unknown
    /// entry kind, wrong payload length.
    BadRecord,
    /// A record longer than the configured maximum.
    TooLarge,
    /// A segment's first record is not a valid segment header, or names another segment.
    BadSegmentHeader,
    /// Entries out of order: a gap in indexes, a term that goes down, a truncation or
    /// compaction marker that does not fit the log before it.
    IndexGap,
    /// A segment file is missing (a gap in segment numbers, or entries before the first
    /// segment that no compaction accounts for).
    MissingSegment,
    /// The hard state says more is committed than the log holds: the end of the log was lost.
    LostTail,
    /// The log was compacted past the newest valid snapshot file.
    MissingSnapshot,
}

impl CorruptionKind {
    /// What the operator can do, in one sentence.
    pub fn advice(self) -> &'static str {
        match self {
            CorruptionKind::MissingSegment => {
                "A segment file was deleted or moved: put it back from a backup, or remove this \
                 member's data directory and re-add the member so it catches up from the leader"
            }
            CorruptionKind::MissingSnapshot => {
                "The snapshot the log depends on is gone or damaged: restore the snap directory \
                 from a backup, or remove this member's data directory and re-add the member"
            }
            CorruptionKind::LostTail => {
                "Acknowledged entries at the end of the log are gone (was the last segment \
                 deleted or cut?): remove this member's data directory and re-add the member"
            }
            _ => {
                "This is not a torn write at the end of the log, so entries this node \
                 acknowledged may be damaged; do not cut the file to make the node start: \
                 restore the data directory from a backup, or remove this member's data \
                 directory and re-add the member so it catches up from the leader"
            }
        }
    }
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CorruptionKind::BadChecksum => "checksum mismatch",
            CorruptionKind::Truncated => "record cut short",
            CorruptionKind::BadRecord => "undecodable record",
            CorruptionKind::TooLarge => "record too large",
            CorruptionKind::BadSegmentHeader => "bad segment header",
            CorruptionKind::IndexGap => "entries out of order",
            CorruptionKind::MissingSegment => "missing segment",
            CorruptionKind::LostTail => "end of log lost",
            CorruptionKind::MissingSnapshot => "missing snapshot",
        })
    }
}

impl WalError {
    /// Maps an I/O error on `path` to [`WalError::NoSpace`] for a full disk and to
    /// [`WalError::Io`] otherwise.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> WalError {
        let path = path.into();
        if is_no_space(&source) {
            WalError::NoSpace { path }
        } else {
            WalError::Io { path, source }
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        kind: CorruptionKind,
        detail: impl Into<String>,
    ) -> WalError {
        WalError::Corrupt { path: path.into(), offset, kind, detail: detail.into() }
    }
}

/// Whether `e` means the file system is out of space (or quota).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl From<WalError> for StorageError {
    fn from(e: WalError) -> Self {
        StorageError::Fatal(e.to_string())
    }
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;
