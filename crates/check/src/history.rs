//! Recording what clients asked for and what they were told.
//!
//! A [`History`] is written while a test runs (by the simulator, or by `concord verify` from
//! real clients) and read afterwards by the checker. It stores exactly what a client can
//! know: when it sent a request, when (and whether) it got an answer, and the answer. Each
//! operation ends in one of three ways ([`Completion`]): an answer arrived, the client
//! learned for certain that nothing happened ([`History::fail`]), or nothing is known
//! (a timeout, a crash) — in which case the operation may or may not have taken effect.
//!
//! Misuse of the recorder (completing an operation twice, an answer of the wrong kind,
//! completing before invoking) is a bug in the test harness, not in the system under
//! test, so it panics instead of producing a history the checker would misjudge.

use std::fmt;

/// The name of a key.
pub type Key = String;

/// A value stored under a key.
pub type Value = String;

/// A request a client sends. Every operation touches exactly one key, which is what lets
/// the checker look at each key on its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the current value of `key`.
    Get { key: Key },
    /// Set `key` to `value`, whatever it was.
    Put { key: Key, value: Value },
    /// Remove `key`.
    Delete { key: Key },
    /// Set `key` to `new` if its current value is `expected`; `expected: None` means
    /// "succeeds iff the key is absent".
    Cas { key: Key, expected: Option<Value>, new: Value },
}

impl Op {
    /// The key this operation reads or writes.
    pub fn key(&self) -> &Key {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    /// Whether `outcome` is the kind of answer this operation gets.
    pub fn accepts(&self, outcome: &Outcome) -> bool {
        matches!(
            (self, outcome),
            (Op::Get { .. }, Outcome::Get(_))
                | (Op::Put { .. }, Outcome::Put)
                | (Op::Delete { .. }, Outcome::Delete)
                | (Op::Cas { .. }, Outcome::Cas(_))
        )
    }
}

/// The answer a client received for an [`Op`] of the matching kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The value read, or `None` if the key was absent.
    Get(Option<Value>),
    /// The put was acknowledged.
    Put,
    /// The delete was acknowledged.
    Delete,
    /// Whether the compare-and-set took effect.
    Cas(bool),
}

/// Identifies an operation within the [`History`] that recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// No answer: the operation may have taken effect at any time after its invocation,
    /// or never.
    Unknown,
    /// The client got `outcome` at `time`.
    Completed { time: u64, outcome: Outcome },
    /// The client knows for certain the operation did not take effect.
    Failed,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: OpId,
    pub client: u64,
    pub op: Op,
    pub invoked_at: u64,
    pub completion: Completion,
}

/// Everything the clients of one test run did, in the order it was recorded.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` invoked `op` at logical time `time`; returns an id.
    pub fn invoke(&mut self, client: u64, op: Op, time: u64) -> OpId {
        let id = OpId(self.operations.len());
        self.operations.push(Operation { id, client, op, invoked_at: time, completion: Completion::Unknown });
        id
    }

    /// Records the completion of `id` at `time` with `outcome`.
    ///
    /// # Panics
    ///
    /// If `id` already ended, if `time` is before its invocation, or if `outcome` is not
    /// the kind of answer its operation gets.
    pub fn complete(&mut self, id: OpId, outcome: Outcome, time: u64) {
        let operation = self.unfinished_mut(id);
        assert!(
            time >= operation.invoked_at,
            "operation {id:?} completed at {time}, before its invocation at {}",
            operation.invoked_at
        );
        assert!(
            operation.op.accepts(&outcome),
            "operation {id:?} ({}) cannot have the outcome {outcome:?}",
            operation.op
        );
        operation.completion = Completion::Completed { time, outcome };
    }

    /// Marks `id` as failed for certain (e.g. the client got a definite "not leader" error
    /// before anything was proposed): it did NOT take effect and is dropped from the check.
    ///
    /// # Panics
    ///
    /// If `id` already ended.
    pub fn fail(&mut self, id: OpId) {
        self.unfinished_mut(id).completion = Completion::Failed;
    }

    /// The number of operations recorded, however they ended.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Every recorded operation, in invocation-call order; `OpId`s index this slice.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operation recorded under `id`.
    pub fn get(&self, id: OpId) -> &Operation {
        &self.operations[id.0]
    }

    fn unfinished_mut(&mut self, id: OpId) -> &mut Operation {
        let operation =
            self.operations.get_mut(id.0).unwrap_or_else(|| panic!("{id:?} was not invoked in this history"));
        assert!(
            operation.completion == Completion::Unknown,
            "operation {id:?} already ended: {:?}",
            operation.completion
        );
        operation
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { key } => write!(f, "get {key:?}"),
            Op::Put { key, value } => write!(f, "put {key:?} = {value:?}"),
            Op::Delete { key } => write!(f, "delete {key:?}"),
            Op::Cas { key, expected, new } => {
                write!(f, "cas {key:?} if {} then {new:?}", DisplayValue(expected))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Get(value) => write!(f, "{}", DisplayValue(value)),
            Outcome::Put | Outcome::Delete => f.write_str("ok"),
            Outcome::Cas(true) => f.write_str("succeeded"),
            Outcome::Cas(false) => f.write_str("failed"),
        }
    }
}

/// One line: who, when, what, and what they were told.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Operation { client, op, invoked_at, completion, .. } = self;
        match completion {
            Completion::Completed { time, outcome } => {
                write!(f, "client {client}, invoked {invoked_at}, completed {time}: {op} -> {outcome}")
            }
            Completion::Unknown => write!(f, "client {client}, invoked {invoked_at}, never completed: {op} -> unknown"),
            Completion::Failed => write!(f, "client {client}, invoked {invoked_at}, failed: {op} -> no effect"),
        }
    }
}

struct DisplayValue<'a>(&'a Option<Value>);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value:?}"),
            None => f.write_str("absent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(key: &str) -> Op {
        Op::Get { key: key.into() }
    }

    #[test]
    fn records_operations_and_how_they_ended() {
        let mut history = History::new();
        assert!(history.is_empty());
        let read = history.invoke(1, get("x"), 1);
        let failed = history.invoke(2, get("x"), 2);
        history.complete(read, Outcome::Get(Some("a".into())), 3);
        history.fail(failed);
        assert_eq!(history.len(), 2);
        assert_eq!(history.get(read).to_string(), r#"client 1, invoked 1, completed 3: get "x" -> "a""#);
        assert_eq!(history.get(failed).completion, Completion::Failed);
    }

    #[test]
    #[should_panic(expected = "already ended")]
    fn completing_twice_is_a_harness_bug() {
        let mut history = History::new();
        let id = history.invoke(1, get("x"), 1);
        history.complete(id, Outcome::Get(None), 2);
        history.complete(id, Outcome::Get(None), 3);
    }

    #[test]
    #[should_panic(expected = "cannot have the outcome")]
    fn an_outcome_of_the_wrong_kind_is_a_harness_bug() {
        let mut history = History::new();
        let id = history.invoke(1, get("x"), 1);
        history.complete(id, Outcome::Put, 2);
    }

    #[test]
    #[should_panic(expected = "before its invocation")]
    fn completing_before_invoking_is_a_harness_bug() {
        let mut history = History::new();
        let id = history.invoke(1, get("x"), 5);
        history.complete(id, Outcome::Get(None), 4);
    }
}
