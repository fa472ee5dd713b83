//! Splitting a history into one small history per key, in the model's terms.
//!
//! Linearizability is local (Herlihy & Wing): a history is linearizable iff its
//! restriction to each object is. Every operation touches one key, so each key is checked
//! on its own, which keeps the searches small and lets a violation name its key.
//!
//! This is also where the history is reduced to what matters for the verdict:
//! - operations known to have failed are dropped (they did not take effect);
//! - reads that never completed are dropped (a read without an answer changes nothing);
//! - values are interned per key, so the search compares integers, not strings.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Completion, History, Key, Op, OpId, Operation, Outcome, Value};
use crate::model::{RegisterOp, ValueId};

/// One operation of a key's history, as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyedOperation {
    /// Where it came from, to report it.
    pub(crate) source: OpId,
    pub(crate) invoked_at: u64,
    /// `None` when no answer arrived: it may take effect any time after its invocation.
    pub(crate) completed_at: Option<u64>,
    pub(crate) op: RegisterOp,
}

/// The operations of one key, ordered by invocation time.
#[derive(Clone, Debug)]
pub(crate) struct KeyPartition {
    pub(crate) key: Key,
    pub(crate) operations: Vec<KeyedOperation>,
}

/// Splits `history` by key, in key order so that verdicts are reproducible.
pub(crate) fn partition_by_key(history: &History) -> Vec<KeyPartition> {
    let mut by_key: BTreeMap<&Key, Vec<&Operation>> = BTreeMap::new();
    for operation in history.operations() {
        if can_have_effect(operation) {
            by_key.entry(operation.op.key()).or_default().push(operation);
        }
    }
    by_key
        .into_iter()
        .map(|(key, operations)| KeyPartition { key: key.clone(), operations: to_register_ops(&operations) })
        .collect()
}

fn can_have_effect(operation: &Operation) -> bool {
    match operation.completion {
        Completion::Failed => false,
        Completion::Unknown => !matches!(operation.op, Op::Get { .. }),
        Completion::Completed { .. } => true,
    }
}

fn to_register_ops<'a>(operations: &[&'a Operation]) -> Vec<KeyedOperation> {
    let mut values = ValueInterner::<'a>::default();
    let mut keyed: Vec<KeyedOperation> = operations
        .iter()
        .map(|operation| {
            let (completed_at, outcome) = match &operation.completion {
                Completion::Completed { time, outcome } => (Some(*time), Some(outcome)),
                Completion::Unknown | Completion::Failed => (None, None),
            };
            KeyedOperation {
                source: operation.id,
                invoked_at: operation.invoked_at,
                completed_at,
                op: values.register_op(&operation.op, outcome),
            }
        })
        .collect();
    keyed.sort_by_key(|operation| (operation.invoked_at, operation.source));
    keyed
}

/// Hands out [`ValueId`]s for one key's values.
#[derive(Default)]
struct ValueInterner<'a> {
    ids: HashMap<&'a Value, ValueId>,
}

impl<'a> ValueInterner<'a> {
    fn id(&mut self, value: Option<&'a Value>) -> ValueId {
        let Some(value) = value else {
            return ValueId::ABSENT;
        };
        let next = ValueId(ValueId::FIRST_VALUE + self.ids.len() as u32);
        *self.ids.entry(value).or_insert(next)
    }

    fn register_op(&mut self, op: &'a Op, outcome: Option<&'a Outcome>) -> RegisterOp {
        match (op, outcome) {
            (Op::Get { .. }, Some(Outcome::Get(observed))) => RegisterOp::Read { observed: self.id(observed.as_ref()) },
            (Op::Get { .. }, _) => unreachable!("reads without an answer are dropped"),
            (Op::Put { value, .. }, _) => RegisterOp::Write { value: self.id(Some(value)) },
            (Op::Delete { .. }, _) => RegisterOp::Write { value: ValueId::ABSENT },
            (Op::Cas { expected, new, .. }, outcome) => RegisterOp::CompareAndSet {
                expected: self.id(expected.as_ref()),
                new: self.id(Some(new)),
                succeeded: match outcome {
                    Some(Outcome::Cas(succeeded)) => Some(*succeeded),
                    _ => None,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_key_and_drops_what_cannot_have_an_effect() {
        let mut history = History::new();
        let put_x = history.invoke(1, Op::Put { key: "x".into(), value: "a".into() }, 1);
        history.complete(put_x, Outcome::Put, 2);
        let failed_put = history.invoke(2, Op::Put { key: "y".into(), value: "b".into() }, 1);
        history.fail(failed_put);
        history.invoke(3, Op::Get { key: "y".into() }, 3);
        let unanswered_delete = history.invoke(4, Op::Delete { key: "y".into() }, 4);
        let read_x = history.invoke(5, Op::Get { key: "x".into() }, 0);
        history.complete(read_x, Outcome::Get(Some("a".into())), 5);

        let partitions = partition_by_key(&history);
        let keys: Vec<&str> = partitions.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["x", "y"]);

        let x = &partitions[0].operations;
        assert_eq!(x[0].source, read_x, "ordered by invocation time");
        let a = ValueId(ValueId::FIRST_VALUE);
        assert_eq!(x[0].op, RegisterOp::Read { observed: a });
        assert_eq!(x[1].op, RegisterOp::Write { value: a });

        let y = &partitions[1].operations;
        assert_eq!(y.len(), 1);
        assert_eq!(y[0].source, unanswered_delete);
        assert_eq!(y[0].completed_at, None);
    }
}
