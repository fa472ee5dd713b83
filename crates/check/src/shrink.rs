//! Shrinking a non-linearizable key history to the few operations that show the bug.
//!
//! A violation found among thousands of operations is useless until it is small. Plain
//! deletion of operations (delta debugging) shrinks well but misleads: deleting a write
//! changes what later operations should see, so the result is often a *different*,
//! manufactured violation — a read of a value nobody wrote, a compare-and-set that failed
//! on an absent key whose writes were deleted. So the shrinker only *weakens* the
//! history: every change keeps a linearizable history linearizable, so whatever still
//! fails, fails for a reason the original had. The one weakening used is forgetting an
//! answer: a write becomes an unanswered write (it may have taken effect at any time
//! after its invocation, or never); a read or failed compare-and-set is dropped, since
//! without its answer it says nothing.
//!
//! The steps, each keeping the history failing:
//! 1. forget the answers of everything invoked before the latest start time that still
//!    fails (binary search: forgetting more only ever weakens);
//! 2. likewise, of everything invoked after the earliest end time that still fails;
//! 3. forget answers in the window left, in chunks halving down to single operations
//!    (Zeller's ddmin), observers before writers ([`observer_rank`]);
//! 4. keep the operations still answered, plus the unanswered writes of values they rely
//!    on, and of values those rely on, and so on (to show where the values came from, and
//!    so that the failure stays the original one and not that of a value left without a
//!    writer). Dropping unanswered writes never makes a failing history pass.
//! 5. Cutting the front can leave a write unanswered but pinned down by a read of its
//!    value; recalling the answers of blind writes and repeating steps 3 and 4 then drops
//!    such reads. Repeated while the result gets smaller. (Only blind writes: recalling a
//!    compare-and-set's answer would claim a value whose writer may have been dropped.)
//!
//! The result is reported as recorded. Recalling answers only adds constraints, so the
//! report is not linearizable either.
//!
//! The order matters for speed: a failing history costs a full search of everything
//! before the point where it fails, so the front is cut away first.

use std::collections::{HashMap, HashSet};

use crate::history::OpId;
use crate::model::{RegisterOp, ValueId};
use crate::partition::KeyedOperation;
use crate::search::{search, Verdict};

/// Each trial may visit this many times the states the original search needed (weaker
/// histories can have more), but at least [`MIN_STATES_PER_TRIAL`]. A trial that runs out
/// counts as "passes", which only makes the result larger, never wrong.
const TRIAL_STATES_PER_ORIGINAL_STATE: u64 = 4;
const MIN_STATES_PER_TRIAL: u64 = 20_000;

/// A few operations (in the same order, as recorded) that show why `operations` is not
/// linearizable. The search found so after visiting `states_needed` states, of at most
/// `max_states`.
pub(crate) fn shrink(operations: &[KeyedOperation], states_needed: u64, max_states: u64) -> Vec<KeyedOperation> {
    let trial_states =
        states_needed.saturating_mul(TRIAL_STATES_PER_ORIGINAL_STATE).max(MIN_STATES_PER_TRIAL).min(max_states);
    let as_recorded: HashMap<OpId, KeyedOperation> =
        operations.iter().map(|operation| (operation.source, *operation)).collect();

    let shrinker = Shrinker { operations, max_states: trial_states };
    let mut forms = vec![Form::AsRecorded; operations.len()];
    let mut invoked: Vec<u64> = operations.iter().map(|op| op.invoked_at).collect();
    invoked.sort_unstable();
    invoked.dedup();
    forms = shrinker
        .last_failing(invoked.len(), |i| shrinker.forget_where(&forms, |operation| operation.invoked_at < invoked[i]));
    invoked.reverse();
    forms = shrinker
        .last_failing(invoked.len(), |i| shrinker.forget_where(&forms, |operation| operation.invoked_at > invoked[i]));
    let mut witness = shrinker.witness(forms);

    loop {
        let recalled: Vec<KeyedOperation> = witness
            .iter()
            .map(|operation| {
                let recorded = as_recorded[&operation.source];
                if recorded.op.is_blind_write() {
                    recorded
                } else {
                    *operation
                }
            })
            .collect();
        let shrinker = Shrinker { operations: &recalled, max_states: trial_states };
        let smaller = shrinker.witness(vec![Form::AsRecorded; recalled.len()]);
        if smaller.len() >= witness.len() {
            return witness.iter().map(|operation| as_recorded[&operation.source]).collect();
        }
        witness = smaller;
    }
}

/// The order in which answers are forgotten: pure observers (reads, failed
/// compare-and-sets) first, then compare-and-sets that also wrote, then blind writes. An
/// observer pins down when the write it saw took effect; forgetting the observer first
/// keeps the writer's own answer, which shows the same with one operation fewer.
fn observer_rank(op: RegisterOp) -> u8 {
    if op.never_changes_value() {
        0
    } else if op.depends_on_state() {
        1
    } else {
        2
    }
}

/// How an operation takes part in a weakened history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    AsRecorded,
    WithoutAnswer,
    Dropped,
}

/// What forgetting `operation`'s answer leaves of it.
fn weakened(operation: &KeyedOperation) -> Form {
    match (operation.completed_at, operation.op.without_answer()) {
        (None, _) => Form::AsRecorded,
        (Some(_), Some(_)) => Form::WithoutAnswer,
        (Some(_), None) => Form::Dropped,
    }
}

struct Shrinker<'a> {
    operations: &'a [KeyedOperation],
    max_states: u64,
}

impl Shrinker<'_> {
    /// `forms` with the answers forgotten of the operations `select` picks.
    fn forget_where(&self, forms: &[Form], select: impl Fn(&KeyedOperation) -> bool) -> Vec<Form> {
        forms
            .iter()
            .zip(self.operations)
            .map(|(&form, operation)| match form {
                Form::AsRecorded if select(operation) => weakened(operation),
                _ => form,
            })
            .collect()
    }

    /// `forms_for(i)` for the largest `i < count` at which it fails, by binary search.
    /// `forms_for(0)` must fail, and `forms_for(i)` must be weaker as `i` grows.
    fn last_failing(&self, count: usize, forms_for: impl Fn(usize) -> Vec<Form>) -> Vec<Form> {
        let (mut low, mut high) = (0, count.saturating_sub(1));
        while low < high {
            let middle = (low + high).div_ceil(2);
            if self.fails(&forms_for(middle)) {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        forms_for(low)
    }

    /// Forgets every answer of the operations `select` picks that it can while the history
    /// keeps failing.
    fn forget_answers(&self, forms: &mut Vec<Form>, select: impl Fn(RegisterOp) -> bool) {
        let answered = |forms: &[Form]| -> Vec<usize> {
            (0..forms.len())
                .filter(|&i| {
                    let operation = &self.operations[i];
                    forms[i] == Form::AsRecorded && operation.completed_at.is_some() && select(operation.op)
                })
                .collect()
        };
        let mut chunk = answered(forms).len().div_ceil(2).max(1);
        loop {
            let mut changed = false;
            for indices in answered(forms).chunks(chunk) {
                let mut trial = forms.clone();
                for &i in indices {
                    trial[i] = weakened(&self.operations[i]);
                }
                if self.fails(&trial) {
                    *forms = trial;
                    changed = true;
                }
            }
            if chunk == 1 && !changed {
                return;
            }
            chunk = chunk.div_ceil(2);
        }
    }

    /// Steps 3 and 4 on a failing `forms`: the failing history they leave.
    fn witness(&self, mut forms: Vec<Form>) -> Vec<KeyedOperation> {
        for last_rank in 0..=2 {
            self.forget_answers(&mut forms, |op| observer_rank(op) <= last_rank);
        }
        let weakened = self.build_each(&forms);
        let mut kept: Vec<bool> = weakened.iter().map(|op| op.is_some_and(|op| op.completed_at.is_some())).collect();
        loop {
            let relied_on: HashSet<ValueId> = (0..kept.len())
                .filter(|&i| kept[i])
                .filter_map(|i| weakened[i].and_then(|operation| operation.op.relies_on_value()))
                .collect();
            let mut grew = false;
            for i in 0..kept.len() {
                let Some(operation) = weakened[i] else { continue };
                if !kept[i] && operation.op.written_value().is_some_and(|value| relied_on.contains(&value)) {
                    kept[i] = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let kept: Vec<Form> = (0..forms.len()).map(|i| if kept[i] { forms[i] } else { Form::Dropped }).collect();
        let witness = self.build(&kept);
        debug_assert_ne!(
            search(&witness, self.max_states).verdict,
            Verdict::Linearizable,
            "dropping unanswered writes cannot make a history linearizable"
        );
        witness
    }

    /// The weakened history `forms` describes.
    fn build(&self, forms: &[Form]) -> Vec<KeyedOperation> {
        self.build_each(forms).into_iter().flatten().collect()
    }

    /// Each operation as `forms` weakens it; `None` where dropped.
    fn build_each(&self, forms: &[Form]) -> Vec<Option<KeyedOperation>> {
        self.operations
            .iter()
            .zip(forms)
            .map(|(operation, form)| match form {
                Form::AsRecorded => Some(*operation),
                Form::WithoutAnswer => {
                    Some(KeyedOperation { completed_at: None, op: operation.op.without_answer()?, ..*operation })
                }
                Form::Dropped => None,
            })
            .collect()
    }

    fn fails(&self, forms: &[Form]) -> bool {
        search(&self.build(forms), self.max_states).verdict == Verdict::NotLinearizable
    }
}
