//! concord-raft: the consensus core.
//!
//! A pure, deterministic state machine: no threads, clocks, sockets or disk. Time comes in
//! through [`Raft::tick`], messages through [`Raft::step`], client requests through
//! [`Raft::propose`] and [`Raft::read_index`]; everything the core wants done (persist,
//! send, apply) comes out as data in a [`Ready`]. This is the shape of etcd's raft library
//! and it is what lets the simulator drive whole clusters through faults reproducibly.

pub mod membership;
pub mod message;
pub mod snapshot;
pub mod storage;
pub mod types;

pub use membership::{ConfChange, ConfChangeEntry, ConfChangeError, ConfChangeKind, Membership};
pub use message::{Message, MessageBody, RejectHint};
pub use snapshot::{SnapshotChunk, SnapshotData, SnapshotMeta};
pub use storage::{LogStore, MemoryLog, StorageError};
pub use types::{Entry, EntryKind, HardState, Index, NodeId, Role, SoftState, Term, NO_NODE};

mod candidate;
pub mod config;
mod follower;
pub mod in_memory;
mod leader;
pub mod log;
pub mod progress;
pub mod quorum;
mod raft;
pub mod ready;
mod refusal;
mod rng;

pub use config::{Config, ConfigError, PlantedBugs};
pub use in_memory::{Handled, SnapshotStaging};
pub use raft::{ProposeError, Raft, RaftError};
pub use ready::{ReadState, Ready};
pub use refusal::Refusal;

/// True when this build contains the planted-bug switches (`--cfg concord_planted_bugs`
/// in RUSTFLAGS, as scripts/planted-bugs sets). They are still off unless a
/// `Config::bugs` field is set, which only the simulator does.
pub const PLANTED_BUGS_COMPILED: bool = cfg!(concord_planted_bugs);
