//! Recording client histories of a key-value store and checking them for linearizability.
//!
//! A test (the simulator, or `concord verify` against real processes) records every
//! request its clients make in a [`History`]: invocation time, completion time and answer,
//! or that no answer came, or that the request certainly failed. [`check`] then decides
//! whether some total order of the operations, consistent with real time (an operation
//! that completed before another was invoked comes first), explains every answer when
//! the operations are applied one at a time to a plain map. If none does, the returned
//! [`Violation`] names the key and the few operations that cannot be ordered.
//!
//! How (one module each): the history is split per key (`partition`), since
//! linearizability is local; each key is searched depth-first (`search`) against a
//! register model (`model`), remembering visited states (`memo`); a failing key's history
//! is shrunk (`shrink`) before it is reported (`verdict`). `call_list` and `bitset` are
//! the search's data structures.

mod bitset;
mod call_list;
mod history;
mod memo;
mod model;
mod partition;
mod search;
mod shrink;
mod verdict;

pub use history::{Completion, History, Key, Op, OpId, Operation, Outcome, Value};
pub use verdict::{CheckReport, Violation};

use partition::partition_by_key;
use search::{search, Verdict};
use shrink::shrink;

/// Bounds on the work [`check_with`] may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The most search states to visit for one key before giving up with
    /// [`Violation::Inconclusive`]. Memory grows with it (tens of bytes per state).
    pub max_states_per_key: u64,
}

impl CheckOptions {
    /// Enough for long, highly concurrent histories; a few hundred megabytes at worst.
    pub const DEFAULT_MAX_STATES_PER_KEY: u64 = 2_000_000;
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self { max_states_per_key: Self::DEFAULT_MAX_STATES_PER_KEY }
    }
}

/// Checks `history` for linearizability with the default [`CheckOptions`].
pub fn check(history: &History) -> Result<CheckReport, Violation> {
    check_with(history, CheckOptions::default())
}

/// Checks `history` for linearizability, key by key in key order.
///
/// Returns the first key shown not linearizable; a key whose search ran out of states is
/// reported only if no other key is shown not linearizable.
pub fn check_with(history: &History, options: CheckOptions) -> Result<CheckReport, Violation> {
    let max_states = options.max_states_per_key;
    let mut report = CheckReport::default();
    let mut undecided = None;
    for partition in partition_by_key(history) {
        let outcome = search(&partition.operations, max_states);
        report.operations += partition.operations.len();
        report.keys += 1;
        report.states_explored += outcome.states_explored;
        match outcome.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable => {
                let culprits = shrink(&partition.operations, outcome.states_explored, max_states);
                return Err(Violation::NotLinearizable {
                    key: partition.key,
                    operations: culprits.iter().map(|culprit| history.get(culprit.source).clone()).collect(),
                });
            }
            Verdict::Inconclusive => {
                undecided.get_or_insert(Violation::Inconclusive {
                    key: partition.key,
                    states_explored: outcome.states_explored,
                    max_states,
                });
            }
        }
    }
    match undecided {
        Some(violation) => Err(violation),
        None => Ok(report),
    }
}
