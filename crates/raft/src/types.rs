//! The vocabulary of the protocol: node ids, terms, indexes, log entries and the hard state.
//!
//! These types are shared by every crate that touches the log (the WAL persists them, the
//! state machine applies them), so they are plain data with no behaviour of their own.

use bytes::Bytes;

/// Identifies a member of the cluster. Zero is reserved for "nobody".
pub type NodeId = u64;
/// A Raft term. Terms only grow.
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1; index 0 is the
/// empty prefix every log shares.
pub type Index = u64;

/// "No node": used for an absent vote or an unknown leader.
pub const NO_NODE: NodeId = 0;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data (possibly empty: a new leader appends an empty entry of its term).
    Normal,
    /// A membership change: the data is a [`crate::ConfChangeEntry`]. It takes effect when
    /// appended to a log, not when committed.
    ConfChange,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in message, batch and in-flight budgets: its payload plus
    /// a fixed header, so that empty entries still cost something.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 24;
        HEADER_BYTES + self.data.len() as u64
    }
}

/// The state a node must persist before it answers anyone: its term, its vote in that
/// term, and how far it knows the log to be committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    /// Who this node voted for in `term`, or `NO_NODE`.
    pub vote: NodeId,
    /// Persisting commit is an optimisation (a restarted node can apply sooner); safety
    /// does not depend on it.
    pub commit: Index,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// The volatile facts an application usually wants to observe: who leads, and what we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: NodeId,
    pub role: Role,
    pub term: Term,
}
