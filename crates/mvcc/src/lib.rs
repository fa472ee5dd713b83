//! concord-mvcc: the replicated state machine of concord.
//!
//! etcd's data model on [redb]: every write raises a cluster-wide revision; each key carries
//! `create_revision`, `mod_revision`, `version` and `lease`; reads may ask for any revision
//! not yet compacted; a Txn is compare-then-ops, atomic, at one revision; leases own keys,
//! and the leader's checkpoints of their remaining TTLs live here too.
//! The server decodes committed Raft entries into [`Command`]s and feeds them to
//! [`Store::apply_batch`] in log order; it serves reads with [`Store::range`] and watch
//! catch-up with [`Store::events_since`].
//!
//! Apply is deterministic — no clock, no randomness, no iteration over hash maps — so every
//! member that applied the same entries holds the same state and the same
//! [`Store::hash_kv`].
//!
//! Module map, one idea each:
//! - [`types`]: plain mirrors of etcd's messages (no protobuf here).
//! - `command`: the log payload and its versioned encoding, and what applying answers.
//! - `error`: etcd's error texts, and storage failures apart from them.
//! - `validate`: etcd's gRPC-layer request checks, for the server to call.
//! - `schema`: the redb tables and encodings. `read`: version lookups and key walks.
//! - `range`, `ops`, `txn`, `compact`, `lease`: the operations. `write`: one apply's writes.
//! - `hash`, `events`: HashKV and watch catch-up. `snapshot`: Raft snapshots of the state.
//! - `store`: the [`Store`] itself. `upgrade`: converts a store of an older layout at open.

mod command;
mod compact;
mod error;
mod events;
mod hash;
mod index;
mod keyrange;
mod lease;
mod ops;
mod range;
mod read;
mod schema;
mod snapshot;
mod store;
mod txn;
pub mod types;
mod upgrade;
mod validate;
mod write;

pub use command::{Applied, Command, Response, COMMAND_FORMAT_VERSION};
pub use error::MvccError;
pub use events::{ChunkLimits, EventChunk};
pub use keyrange::prefix_end;
pub use lease::MAX_LEASE_TTL;
pub use snapshot::SnapshotMeta;
pub use store::{Options, Store, DEFRAGMENT_HOLD, SIZE_IN_USE_MAX_AGE};
pub use txn::{is_read_only as is_read_only_txn, is_serializable as is_serializable_txn};
pub use types::*;
pub use validate::{validate_delete_range, validate_put, validate_range, validate_txn, DEFAULT_MAX_TXN_OPS};
