//! Shorthand for writing histories by hand in tests: one call per operation, with its
//! time window and answer, so a scenario reads like the timeline it describes.

#![allow(dead_code)] // each test binary uses a different part

use concord_check::{check, CheckReport, History, Op, OpId, Operation, Outcome, Violation};

#[derive(Default)]
pub struct Scenario {
    pub history: History,
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, client: u64, key: &str, value: &str, window: (u64, u64)) -> OpId {
        self.answered(client, put(key, value), window, Outcome::Put)
    }

    pub fn delete(&mut self, client: u64, key: &str, window: (u64, u64)) -> OpId {
        let op = Op::Delete { key: key.into() };
        self.answered(client, op, window, Outcome::Delete)
    }

    pub fn get(&mut self, client: u64, key: &str, window: (u64, u64), observed: Option<&str>) -> OpId {
        let op = Op::Get { key: key.into() };
        self.answered(client, op, window, Outcome::Get(observed.map(Into::into)))
    }

    pub fn cas(
        &mut self,
        client: u64,
        key: &str,
        (expected, new): (Option<&str>, &str),
        window: (u64, u64),
        succeeded: bool,
    ) -> OpId {
        self.answered(client, cas(key, expected, new), window, Outcome::Cas(succeeded))
    }

    /// A put whose client never heard back.
    pub fn put_unanswered(&mut self, client: u64, key: &str, value: &str, invoked_at: u64) -> OpId {
        self.history.invoke(client, put(key, value), invoked_at)
    }

    /// A compare-and-set whose client never heard back.
    pub fn cas_unanswered(
        &mut self,
        client: u64,
        key: &str,
        (expected, new): (Option<&str>, &str),
        invoked_at: u64,
    ) -> OpId {
        self.history.invoke(client, cas(key, expected, new), invoked_at)
    }

    /// A put the client knows did not happen.
    pub fn put_failed(&mut self, client: u64, key: &str, value: &str, invoked_at: u64) -> OpId {
        let id = self.history.invoke(client, put(key, value), invoked_at);
        self.history.fail(id);
        id
    }

    fn answered(&mut self, client: u64, op: Op, (invoked, completed): (u64, u64), outcome: Outcome) -> OpId {
        let id = self.history.invoke(client, op, invoked);
        self.history.complete(id, outcome, completed);
        id
    }
}

pub fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into() }
}

pub fn cas(key: &str, expected: Option<&str>, new: &str) -> Op {
    Op::Cas { key: key.into(), expected: expected.map(Into::into), new: new.into() }
}

#[track_caller]
pub fn assert_linearizable(history: &History) -> CheckReport {
    check(history).unwrap_or_else(|violation| panic!("expected linearizable, got: {violation}"))
}

/// Asserts the history is not linearizable because of `key`; returns the reported
/// operations.
#[track_caller]
pub fn assert_violation_on(history: &History, key: &str) -> Vec<Operation> {
    match check(history) {
        Err(Violation::NotLinearizable { key: named, operations }) => {
            assert_eq!(named, key, "the violation names the wrong key");
            operations
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

pub fn ids(operations: &[Operation]) -> Vec<OpId> {
    operations.iter().map(|operation| operation.id).collect()
}
