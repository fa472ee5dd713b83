//! The linearizability search for one key: Wing & Gong's algorithm with Lowe's memo.
//!
//! A depth-first search builds a linearization one operation at a time. The candidates
//! for the next position are the operations invoked before every operation still to be
//! linearized completed (the calls before the first return in the [`CallList`]); a
//! candidate is taken if its recorded answer is possible from the key's current value
//! (the [`model`](crate::model)). When no candidate fits, the search backtracks. Every
//! state reached — the set of linearized operations plus the key's value — is memoized
//! ([`Memo`]), because two paths reaching the same state have the same futures (Lowe,
//! "Testing for linearizability", 2017; the same search as Porcupine and Knossos'
//! "linear" checker). The search succeeds when every answered operation is linearized.
//!
//! Two reductions keep it fast on long, concurrent histories:
//! - a candidate that never changes the value (a read, a failed compare-and-set) and fits
//!   now is taken without trying alternatives (see [`Search::next_move`]), so the orders
//!   of concurrent reads are not explored one by one;
//! - operations without an answer ("unanswered": a timeout, a crash), which may take
//!   effect at any point after their invocation or never, are only placed where they
//!   matter. Unrestricted, any subset of them could take effect at any point. Every
//!   linearizable history has a linearization of this normal form: an unanswered
//!   operation is immediately followed by an operation whose answer depends on the value
//!   it left (a read or a compare-and-set) and that could not have taken effect the same
//!   way without it. (Any other unanswered operation can be dropped — its value is
//!   overwritten before anyone looks — or moved later, past an operation that neither
//!   notices nor changes the value.) The memo records whether the search is in the middle
//!   of such a pair. Unanswered operations with the same effect are interchangeable, so
//!   they are used in invocation order ([`InterchangeableGroup`]); values nothing compares
//!   against are merged first ([`merge_unobserved_values`]), so all unobserved writes
//!   fall into one group; and the memo counts a state that used more of them as already
//!   covered by one that used fewer.

use std::collections::HashMap;

use crate::bitset::Bitset;
use crate::call_list::{CallList, Entry};
use crate::memo::{Memo, Situation, UnansweredUse};
use crate::model::{merge_unobserved_values, RegisterOp, ValueId};
use crate::partition::KeyedOperation;

/// What the search concluded about one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search visited more states than it was allowed to.
    Inconclusive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchOutcome {
    pub(crate) verdict: Verdict,
    pub(crate) states_explored: u64,
}

/// Decides whether `operations` (all on one key) are linearizable, visiting at most
/// `max_states` distinct states.
pub(crate) fn search(operations: &[KeyedOperation], max_states: u64) -> SearchOutcome {
    let mut search = Search::new(operations, max_states);
    let verdict = search.run();
    SearchOutcome { verdict, states_explored: search.memo.states() }
}

/// Unanswered operations with the same effect, in invocation order. The first `used` of
/// them are linearized.
#[derive(Debug)]
struct InterchangeableGroup {
    op: RegisterOp,
    invoked_at: Vec<u64>,
    used: usize,
}

impl InterchangeableGroup {
    /// Whether an unused member had been invoked by `frontier`.
    fn has_member_available_at(&self, frontier: u64) -> bool {
        self.invoked_at.get(self.used).is_some_and(|&invoked_at| invoked_at <= frontier)
    }
}

#[derive(Clone, Copy, Debug)]
enum Choice {
    /// The answered operation with this index.
    Answered(usize),
    /// The next member of the group with this index.
    Unanswered(usize),
}

/// Where to continue looking for the next choice at the current depth.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// A state just reached: nothing tried yet.
    Fresh,
    Call(usize),
    Group(usize),
    /// No alternatives are worth trying.
    Exhausted,
}

/// A choice that leads to a state not visited before.
#[derive(Clone, Copy, Debug)]
struct Move {
    choice: Choice,
    value_after: ValueId,
    /// Taken because it is safe to take first; its alternatives need no trying.
    forced: bool,
}

/// One position of the linearization being built, with what is needed to undo it.
#[derive(Debug)]
struct Step {
    choice: Choice,
    forced: bool,
    value_before: ValueId,
    awaiting_before: Option<ValueId>,
}

struct StateLimitExceeded;

struct Search {
    answered_ops: Vec<RegisterOp>,
    calls: CallList,
    groups: Vec<InterchangeableGroup>,
    linearized_answered: Bitset,
    answered_left: usize,
    /// The key's value after the linearization so far.
    value: ValueId,
    /// `Some(previous value)` right after an unanswered operation changed the value from
    /// `previous value`: the next operation must be one that needs that change.
    awaiting: Option<ValueId>,
    path: Vec<Step>,
    memo: Memo,
    max_states: u64,
}

impl Search {
    fn new(operations: &[KeyedOperation], max_states: u64) -> Self {
        let mut ops: Vec<RegisterOp> = operations.iter().map(|operation| operation.op).collect();
        merge_unobserved_values(&mut ops);
        let mut answered_ops = Vec::new();
        let mut intervals = Vec::new();
        let mut unanswered = Vec::new();
        for (operation, op) in operations.iter().zip(ops) {
            match operation.completed_at {
                Some(completed_at) => {
                    answered_ops.push(op);
                    intervals.push((operation.invoked_at, completed_at));
                }
                None => unanswered.push((op, operation.invoked_at)),
            }
        }
        Self {
            calls: CallList::new(&intervals),
            groups: group_interchangeable(&unanswered),
            linearized_answered: Bitset::with_capacity(answered_ops.len()),
            answered_left: answered_ops.len(),
            answered_ops,
            value: ValueId::ABSENT,
            awaiting: None,
            path: Vec::new(),
            memo: Memo::default(),
            max_states,
        }
    }

    fn run(&mut self) -> Verdict {
        let mut cursor = Cursor::Fresh;
        while self.answered_left > 0 {
            match self.next_move(cursor) {
                Err(StateLimitExceeded) => return Verdict::Inconclusive,
                Ok(Some(next)) => {
                    self.take(next);
                    cursor = Cursor::Fresh;
                }
                Ok(None) => match self.path.pop() {
                    Some(step) => cursor = self.undo(step),
                    None => return Verdict::NotLinearizable,
                },
            }
        }
        Verdict::Linearizable
    }

    /// The first allowed move at or after `cursor` to a state not visited before.
    ///
    /// In a fresh state, a candidate that never changes the value and fits now is taken
    /// without alternatives: if any linearization continues from here, one continues with
    /// it (it can be moved forward to here: everything that must precede it already
    /// does, and moving it changes no one's value). This collapses the orders of
    /// concurrent reads. Otherwise answered candidates come first (they make progress),
    /// then unanswered ones.
    fn next_move(&mut self, cursor: Cursor) -> Result<Option<Move>, StateLimitExceeded> {
        let first_group = match cursor {
            Cursor::Exhausted => return Ok(None),
            Cursor::Fresh => {
                if let Some((op, after)) = self.fitting_value_preserving_candidate() {
                    let choice = Choice::Answered(op);
                    let fresh = self.first_visit(choice, after)?;
                    return Ok(fresh.then_some(Move { choice, value_after: after, forced: true }));
                }
                return self.next_move(Cursor::Call(self.calls.first()));
            }
            Cursor::Call(mut node) => {
                while let Entry::Call(op) = self.calls.entry(node) {
                    if let Some(after) = self.admissible(self.answered_ops[op]) {
                        let choice = Choice::Answered(op);
                        if self.first_visit(choice, after)? {
                            return Ok(Some(Move { choice, value_after: after, forced: false }));
                        }
                    }
                    node = self.calls.next(node);
                }
                0
            }
            Cursor::Group(group) => group,
        };
        let Some(frontier) = self.calls.frontier() else {
            return Ok(None);
        };
        for group in first_group..self.groups.len() {
            if !self.groups[group].has_member_available_at(frontier) {
                continue;
            }
            let Some(after) = self.admissible(self.groups[group].op) else {
                continue;
            };
            if !self.some_follower_needs(group, after, frontier) {
                continue;
            }
            let choice = Choice::Unanswered(group);
            if self.first_visit(choice, after)? {
                return Ok(Some(Move { choice, value_after: after, forced: false }));
            }
        }
        Ok(None)
    }

    /// An answered candidate that never changes the value and may come next.
    fn fitting_value_preserving_candidate(&self) -> Option<(usize, ValueId)> {
        let mut node = self.calls.first();
        while let Entry::Call(op) = self.calls.entry(node) {
            let candidate = self.answered_ops[op];
            if candidate.never_changes_value() {
                if let Some(after) = self.admissible(candidate) {
                    return Some((op, after));
                }
            }
            node = self.calls.next(node);
        }
        None
    }

    /// The value after `op` if it may come next.
    fn admissible(&self, op: RegisterOp) -> Option<ValueId> {
        let after = op.apply(self.value)?;
        match self.awaiting {
            None => Some(after),
            Some(before) => needs_change(op, before, self.value).then_some(after),
        }
    }

    /// Whether, after a member of `group` changes the value to `after`, some candidate
    /// could come next (otherwise taking it is a dead end not worth a memo entry).
    fn some_follower_needs(&self, group: usize, after: ValueId, frontier: u64) -> bool {
        let before = self.value;
        let mut node = self.calls.first();
        while let Entry::Call(op) = self.calls.entry(node) {
            if needs_change(self.answered_ops[op], before, after) {
                return true;
            }
            node = self.calls.next(node);
        }
        self.groups.iter().enumerate().any(|(other, candidate)| {
            other != group && candidate.has_member_available_at(frontier) && needs_change(candidate.op, before, after)
        })
    }

    /// Records the state `choice` leads to; false if it, or a better one, was visited.
    fn first_visit(&mut self, choice: Choice, after: ValueId) -> Result<bool, StateLimitExceeded> {
        let (answered, awaiting, used) = match choice {
            Choice::Answered(op) => {
                self.linearized_answered.insert(op);
                let answered = self.linearized_answered.compact();
                self.linearized_answered.remove(op);
                (answered, None, self.unanswered_use(None))
            }
            Choice::Unanswered(group) => {
                (self.linearized_answered.compact(), Some(self.value), self.unanswered_use(Some(group)))
            }
        };
        let situation = Situation { answered, value: after, awaiting };
        if !self.memo.visit(situation, used) {
            return Ok(false);
        }
        if self.memo.states() > self.max_states {
            return Err(StateLimitExceeded);
        }
        Ok(true)
    }

    /// The current use of unanswered operations, plus one more of `one_more`.
    fn unanswered_use(&self, one_more: Option<usize>) -> UnansweredUse {
        self.groups
            .iter()
            .enumerate()
            .map(|(index, group)| (index, group.used + usize::from(one_more == Some(index))))
            .filter(|&(_, used)| used > 0)
            .map(|(index, used)| (index as u32, used as u32))
            .collect()
    }

    fn take(&mut self, next: Move) {
        let Move { choice, value_after, forced } = next;
        self.path.push(Step { choice, forced, value_before: self.value, awaiting_before: self.awaiting });
        match choice {
            Choice::Answered(op) => {
                self.linearized_answered.insert(op);
                self.calls.lift(op);
                self.answered_left -= 1;
                self.awaiting = None;
            }
            Choice::Unanswered(group) => {
                self.groups[group].used += 1;
                self.awaiting = Some(self.value);
            }
        }
        self.value = value_after;
    }

    /// Undoes `step` and returns where to look for an alternative to it.
    fn undo(&mut self, step: Step) -> Cursor {
        self.value = step.value_before;
        self.awaiting = step.awaiting_before;
        match step.choice {
            Choice::Answered(op) => {
                self.linearized_answered.remove(op);
                self.calls.unlift(op);
                self.answered_left += 1;
                if step.forced {
                    Cursor::Exhausted
                } else {
                    Cursor::Call(self.calls.next(self.calls.call_of(op)))
                }
            }
            Choice::Unanswered(group) => {
                self.groups[group].used -= 1;
                Cursor::Group(group + 1)
            }
        }
    }
}

/// Whether `op`, taking effect right after an unanswered operation changed the value
/// from `before` to `after`, depends on that change: it looks at the value, accepts
/// `after`, and is not an operation that would have seen `before` and left it alone
/// (then it could equally have gone first).
fn needs_change(op: RegisterOp, before: ValueId, after: ValueId) -> bool {
    let Some(result) = op.apply(after) else {
        return false;
    };
    let indifferent = result == after && op.apply(before) == Some(before);
    op.depends_on_state() && !indifferent
}

/// Groups unanswered operations, given as (op, invoked_at), by their effect.
fn group_interchangeable(unanswered: &[(RegisterOp, u64)]) -> Vec<InterchangeableGroup> {
    let mut index_of: HashMap<RegisterOp, usize> = HashMap::new();
    let mut groups: Vec<InterchangeableGroup> = Vec::new();
    for &(op, invoked_at) in unanswered {
        let index = *index_of.entry(op).or_insert_with(|| {
            groups.push(InterchangeableGroup { op, invoked_at: Vec::new(), used: 0 });
            groups.len() - 1
        });
        groups[index].invoked_at.push(invoked_at);
    }
    for group in &mut groups {
        group.invoked_at.sort_unstable();
    }
    groups
}
