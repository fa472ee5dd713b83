//! The one error type of the crate.
//!
//! Two kinds of failure live here and must not be confused:
//!
//! - **etcd errors** (`Compacted`, `LeaseNotFound`, `DuplicateKey`, ...): the answer to a
//!   request. Their `Display` texts are etcd's exact strings, because clients match on them.
//!   When one comes out of [`apply`](crate::Store::apply) the Raft entry is still applied:
//!   the error is the deterministic result every member computes for that entry.
//! - **storage errors** (`Storage`, `Corrupt`, `Internal`): the store itself failed. The
//!   write transaction is aborted, nothing of the batch is applied, and the caller (the
//!   server) must treat it as fatal. [`MvccError::is_storage`] tells the two apart.

use crate::command::COMMAND_FORMAT_VERSION;

/// Every failure of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is at or below the compacted revision (etcd `ErrCompacted`).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision (etcd `ErrFutureRev`).
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A lease given in a request does not exist (etcd `ErrLeaseNotFound`).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// LeaseGrant with an id that is already granted (etcd `ErrLeaseExists`).
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// LeaseGrant with a TTL above [`MAX_LEASE_TTL`](crate::MAX_LEASE_TTL).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// Put with `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A request without a key (etcd's gRPC-layer `ErrGRPCEmptyKey`).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// Put with `ignore_value` and a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// Put with `ignore_lease` and a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A Txn with more compares or ops than the server allows.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A Txn that writes one key twice (see [`validate_txn`](crate::validate_txn)).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The underlying redb database failed (I/O, full disk, ...).
    #[error("concord-mvcc: storage failure: {0}")]
    Storage(String),
    /// Stored bytes that this build cannot read: a damaged or foreign database file.
    #[error("concord-mvcc: corrupt store: {0}")]
    Corrupt(String),
    /// An invariant of this crate broke (a bug): the batch is aborted rather than applied
    /// half-way.
    #[error("concord-mvcc: internal error: {0}")]
    Internal(String),
    /// A maintenance operation could not get the database to itself in time (readers
    /// stayed open); nothing was changed and it can be tried again.
    #[error("concord-mvcc: database busy: {0}")]
    Busy(String),
    /// `Command::decode` met bytes it cannot parse.
    #[error("concord-mvcc: cannot decode command: {0}")]
    Decode(String),
    /// `Command::decode` met a format version this build does not know.
    #[error(
        "concord-mvcc: unknown command format version {0} (this build reads version {COMMAND_FORMAT_VERSION}); \
         upgrade this member before it applies entries written by a newer one"
    )]
    UnknownFormat(u8),
}

impl MvccError {
    /// True for failures of the store itself (the batch was not applied), false for etcd
    /// errors that are a request's deterministic answer.
    pub fn is_storage(&self) -> bool {
        matches!(self, MvccError::Storage(_) | MvccError::Corrupt(_) | MvccError::Internal(_))
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {
        $(impl From<$t> for MvccError {
            fn from(e: $t) -> Self {
                MvccError::Storage(e.to_string())
            }
        })*
    };
}

storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError,
    std::io::Error
);
