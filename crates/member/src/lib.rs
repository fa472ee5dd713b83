//! concord-member: the parts of a concord member that need no I/O, shared by the server
//! (crates/server, which wraps them in tokio tasks and gRPC) and the simulator
//! (crates/sim, which runs them under seeded faults).
//!
//! - `envelope`: what a log entry carries — a state-machine command tagged with the
//!   member and request that proposed it.
//! - `waiters`: clients waiting for their proposals, by request id; the apply completes
//!   them with the outcome of the entry that carries their id.
//! - `read_ids`: the ids of a member's ReadIndex rounds, which no restart may reuse.
//! - `request_ids`: the ids of the requests a member proposes, which no restart may reuse
//!   either.
//! - `apply_gate`: the index through which linearizable reads may be answered, which
//!   follows the state machine's commits, not the batches taken for applying.
//! - `watch_cursor`: where a watcher is in the history, so that it gets every event once,
//!   in order, with no gap.
//!
//! This is the first slice of issue 12's "member logic as deterministic code": the Raft
//! task's and the apply task's loops are still in crates/server.

pub mod apply_gate;
pub mod envelope;
pub mod read_ids;
pub mod request_ids;
pub mod waiters;
pub mod watch_cursor;

pub use apply_gate::ApplyGate;
pub use read_ids::ReadIds;
pub use request_ids::RequestIds;
pub use waiters::{Waiter, Waiters};
pub use watch_cursor::{CursorState, WatchCursor};
