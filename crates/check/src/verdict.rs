//! What the checker tells its caller: a report when the history is linearizable, and
//! otherwise a [`Violation`] that a person can act on without rerunning anything.
//!
//! A violation names the key and lists the operations that cannot be ordered, one per
//! line, already shrunk to a handful. A search that ran out of budget is reported as a
//! violation too ([`Violation::Inconclusive`]): a checker that says "fine" when it does
//! not know would hide exactly the histories that most need a look.

use std::fmt;

use crate::history::{Key, Operation};

/// The result of checking a linearizable history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Operations that entered the check: everything but failed operations and reads
    /// that never got an answer.
    pub operations: usize,
    /// Distinct keys those operations touched.
    pub keys: usize,
    /// Search states visited over all keys.
    pub states_explored: u64,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizable: {} operations on {} keys, {} states explored",
            self.operations, self.keys, self.states_explored
        )
    }
}

/// Why a history was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// No order of the operations on `key` explains what the clients were told.
    /// `operations` is a small subset, in invocation order, that already cannot be
    /// ordered. Each answered operation in it was needed to show that; an unanswered
    /// write appears when it wrote a value a listed operation saw.
    NotLinearizable { key: Key, operations: Vec<Operation> },
    /// The search for `key` visited more than `max_states` states without deciding. The
    /// history may or may not be linearizable.
    Inconclusive { key: Key, states_explored: u64, max_states: u64 },
}

impl Violation {
    /// The key whose history could not be shown linearizable.
    pub fn key(&self) -> &Key {
        match self {
            Violation::NotLinearizable { key, .. } | Violation::Inconclusive { key, .. } => key,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotLinearizable { key, operations } => {
                write!(
                    f,
                    "the history of key {key:?} is not linearizable: \
                     no order of these {} operations explains what the clients were told:",
                    operations.len()
                )?;
                for operation in operations {
                    write!(f, "\n  {operation}")?;
                }
                Ok(())
            }
            Violation::Inconclusive { key, states_explored, max_states } => write!(
                f,
                "could not decide whether the history of key {key:?} is linearizable: \
                 the search gave up after {states_explored} states (limit {max_states})"
            ),
        }
    }
}

impl std::error::Error for Violation {}
