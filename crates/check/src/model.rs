//! The sequential specification of one key: a register that may be absent.
//!
//! The search asks one question millions of times — "if this operation took effect now,
//! with the key holding this value, is its recorded answer possible, and what does the
//! key hold afterwards?" — so the model works on small interned value ids
//! ([`ValueId`]) instead of strings, and each operation carries its answer with it
//! ([`RegisterOp`]), already reduced to what the answer constrains.

use std::collections::HashSet;

/// A value of one key, interned: equal ids mean equal values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ValueId(pub(crate) u32);

impl ValueId {
    /// The key does not exist (the initial state, and the state after a delete).
    pub(crate) const ABSENT: ValueId = ValueId(0);
    /// Stands for every value that no operation compares against (see
    /// [`merge_unobserved_values`]).
    pub(crate) const UNOBSERVED: ValueId = ValueId(1);
    /// The first id handed to a stored value.
    pub(crate) const FIRST_VALUE: u32 = 2;
}

/// One operation on one key together with what its client was told (if anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RegisterOp {
    /// A get that returned `observed`.
    Read { observed: ValueId },
    /// A put (of a value) or a delete (of [`ValueId::ABSENT`]); blind, whatever the answer.
    Write { value: ValueId },
    /// A compare-and-set; `succeeded` is `None` when no answer arrived.
    CompareAndSet { expected: ValueId, new: ValueId, succeeded: Option<bool> },
}

impl RegisterOp {
    /// Takes effect on a key holding `current`: the value it holds afterwards, or `None`
    /// if the recorded answer is impossible from `current`.
    ///
    /// A compare-and-set without an answer is only allowed to take effect when it
    /// succeeds: failing would change nothing, which is the same as never taking effect.
    pub(crate) fn apply(self, current: ValueId) -> Option<ValueId> {
        match self {
            RegisterOp::Read { observed } => (current == observed).then_some(current),
            RegisterOp::Write { value } => Some(value),
            RegisterOp::CompareAndSet { expected, new, succeeded: Some(true) | None } => {
                (current == expected).then_some(new)
            }
            RegisterOp::CompareAndSet { expected, succeeded: Some(false), .. } => {
                (current != expected).then_some(current)
            }
        }
    }

    /// Whether it leaves the value as it found it, whatever that was (reads and failed
    /// compare-and-sets).
    pub(crate) fn never_changes_value(self) -> bool {
        matches!(self, RegisterOp::Read { .. } | RegisterOp::CompareAndSet { succeeded: Some(false), .. })
    }

    /// Whether the answer depends on the value before it (everything but blind writes).
    pub(crate) fn depends_on_state(self) -> bool {
        !self.is_blind_write()
    }

    /// The value this operation compares the current value against, if any.
    pub(crate) fn compared_value(self) -> Option<ValueId> {
        match self {
            RegisterOp::Read { observed } => Some(observed),
            RegisterOp::CompareAndSet { expected, .. } => Some(expected),
            RegisterOp::Write { .. } => None,
        }
    }

    /// The one value the key must hold for this operation to take effect as recorded, if
    /// there is one: what a read returned, what a compare-and-set that took effect found.
    pub(crate) fn relies_on_value(self) -> Option<ValueId> {
        match self {
            RegisterOp::Read { observed } => Some(observed),
            RegisterOp::CompareAndSet { expected, succeeded: Some(true) | None, .. } => Some(expected),
            RegisterOp::CompareAndSet { succeeded: Some(false), .. } | RegisterOp::Write { .. } => None,
        }
    }

    /// Whether it writes blindly (a put or a delete).
    pub(crate) fn is_blind_write(self) -> bool {
        matches!(self, RegisterOp::Write { .. })
    }

    /// The value this operation leaves behind if it takes effect and writes.
    pub(crate) fn written_value(self) -> Option<ValueId> {
        match self {
            RegisterOp::Write { value } => Some(value),
            RegisterOp::CompareAndSet { new, succeeded: Some(true) | None, .. } => Some(new),
            RegisterOp::CompareAndSet { .. } | RegisterOp::Read { .. } => None,
        }
    }

    /// The same request with its answer forgotten, if it can still matter: a write or a
    /// compare-and-set that may have taken effect. `None` for what cannot change the
    /// value (reads, failed compare-and-sets): without their answer they say nothing.
    pub(crate) fn without_answer(self) -> Option<RegisterOp> {
        match self {
            RegisterOp::Write { .. } => Some(self),
            RegisterOp::CompareAndSet { expected, new, succeeded: Some(true) | None } => {
                Some(RegisterOp::CompareAndSet { expected, new, succeeded: None })
            }
            RegisterOp::CompareAndSet { .. } | RegisterOp::Read { .. } => None,
        }
    }
}

/// Replaces every stored value that no operation in `ops` compares against — no read
/// returned it, no compare-and-set expected it — by [`ValueId::UNOBSERVED`].
///
/// Such values are indistinguishable to every operation, so merging them keeps the
/// verdict; it lets the search treat writes of them as interchangeable, which matters
/// when many writes went unanswered.
pub(crate) fn merge_unobserved_values(ops: &mut [RegisterOp]) {
    let compared: HashSet<ValueId> = ops.iter().filter_map(|op| op.compared_value()).collect();
    let merged = |value: ValueId| {
        if value == ValueId::ABSENT || compared.contains(&value) {
            value
        } else {
            ValueId::UNOBSERVED
        }
    };
    for op in ops.iter_mut() {
        match op {
            RegisterOp::Write { value } => *value = merged(*value),
            RegisterOp::CompareAndSet { new, .. } => *new = merged(*new),
            RegisterOp::Read { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ValueId = ValueId(2);
    const B: ValueId = ValueId(3);

    #[test]
    fn reads_must_see_the_current_value() {
        let read_a = RegisterOp::Read { observed: A };
        assert_eq!(read_a.apply(A), Some(A));
        assert_eq!(read_a.apply(B), None);
    }

    #[test]
    fn writes_always_apply() {
        let delete = RegisterOp::Write { value: ValueId::ABSENT };
        assert_eq!(delete.apply(A), Some(ValueId::ABSENT));
    }

    #[test]
    fn compare_and_set_answers_constrain_the_current_value() {
        let cas = |succeeded| RegisterOp::CompareAndSet { expected: A, new: B, succeeded };
        assert_eq!(cas(Some(true)).apply(A), Some(B));
        assert_eq!(cas(Some(true)).apply(B), None);
        assert_eq!(cas(Some(false)).apply(B), Some(B));
        assert_eq!(cas(Some(false)).apply(A), None);
        assert_eq!(cas(None).apply(A), Some(B));
        assert_eq!(cas(None).apply(B), None, "a no-op is the same as no effect");
    }

    #[test]
    fn values_nothing_compares_against_are_merged() {
        const C: ValueId = ValueId(4);
        let mut ops = [
            RegisterOp::Write { value: A },
            RegisterOp::Write { value: B },
            RegisterOp::Read { observed: A },
            RegisterOp::CompareAndSet { expected: ValueId::ABSENT, new: C, succeeded: None },
        ];
        merge_unobserved_values(&mut ops);
        assert_eq!(ops[0], RegisterOp::Write { value: A });
        assert_eq!(ops[1], RegisterOp::Write { value: ValueId::UNOBSERVED });
        assert_eq!(
            ops[3],
            RegisterOp::CompareAndSet { expected: ValueId::ABSENT, new: ValueId::UNOBSERVED, succeeded: None }
        );
    }
}
