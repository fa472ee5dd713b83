//! Failures after which a member must stop, and the one way they travel.
//!
//! A failed fsync of the log (its pages may be gone while the error is cleared: nothing
//! written since can be trusted), a state machine that cannot commit, a member directory
//! that cannot be written, a snapshot that does not restore: going on could acknowledge
//! writes that are not durable or let this member's state drift from the others'. The
//! Raft and apply tasks return these instead of ending the process on the spot; `serve`
//! stops the member (no new requests, the other task drained) and returns the error, and
//! the binary exits with it. A restart recovers from what is on disk.

use crate::storage::RaftStorageError;

#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("storage failure: {0}")]
    Storage(#[from] RaftStorageError),
    #[error("write-ahead log failure: {0}")]
    Wal(#[from] concord_wal::WalError),
    #[error("state machine failure: {0}")]
    StateMachine(concord_mvcc::MvccError),
    #[error("cannot write the member directory: {0}")]
    Directory(std::io::Error),
    #[error("restoring the state machine from the leader's snapshot at {index} failed: {detail}")]
    Restore { index: u64, detail: String },
    #[error("committed configuration entry {index} does not decode: {detail}")]
    UndecodableConfiguration { index: u64, detail: String },
    #[error("cannot start a task's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the Raft or the apply task panicked")]
    Panicked,
}
