//! concord-sim: a deterministic simulator of a concord-raft cluster under faults.
//!
//! A seed fixes everything: the fault profile, every message delay and loss, every crash,
//! partition, membership change, snapshot and client request. [`run_seed`] drives a
//! cluster of 3, 5 or 7 cores (and the nodes that join it) through such a run, checks the
//! Raft safety properties after every step, then heals all faults and checks that the
//! cluster makes progress, that every member catches up, and that the clients' history
//! is linearizable. A failing seed replays exactly, with a trace of its last events.
//!
//! Modules, one idea each: [`rng`] (the seeded PRNG), [`network`] and [`disk`] (the fault
//! models), [`node`] (one member and its Ready handling), [`command`] and
//! [`state_machine`] (what entries carry, what applying them does, snapshots of it;
//! a plain map, or with `--state-machine mvcc` the product's store, [`mvcc_machine`]),
//! [`client`] (the workload and its history), [`membership`] (the operator's membership
//! changes), [`invariants`] (the safety checks), [`faults`] (the per-seed fault profile
//! and schedule), [`liveness`], [`linearizability`] (the history check), [`trace`],
//! [`options`], [`outcome`], and [`runner`] (a whole run).
//!
//! docs/testing.md describes the fault model, the checks and the results.

pub mod client;
pub mod command;
pub mod disk;
pub mod faults;
pub mod invariants;
pub mod linearizability;
pub mod liveness;
pub mod membership;
pub mod mvcc_machine;
pub mod network;
pub mod node;
pub mod options;
pub mod outcome;
pub mod rng;
pub mod runner;
pub mod state_machine;
pub mod trace;
pub mod watchers;

pub use invariants::{Property, Violation};
pub use options::{OptionsError, PlantedBug, SimOptions, PLANTED_BUGS_BUILD};
pub use outcome::{SeedOutcome, SeedStats};
pub use runner::run_seed;
pub use state_machine::StateMachineKind;
