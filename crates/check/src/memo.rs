//! The search's memory of visited states, which also recognises states that are merely
//! worse versions of visited ones.
//!
//! A state is: which answered operations are linearized, the key's value, whether the
//! search is in the middle of an unanswered-operation pair (see the `search` module),
//! and how many members of each group of interchangeable unanswered operations are used.
//! Two states alike in all but the last are ordered: the one that used fewer unanswered
//! operations can do everything the other can, since an unanswered operation may also
//! never take effect. So a state is skipped if a visited state with the same
//! [`Situation`] used at most as many of every group. Without this, every way of having
//! spent a few unanswered writes would be explored again in full — the search state space
//! grows with the product of the groups' sizes.
//!
//! (Skipping against a state still on the search path is sound too: the better state's
//! own exploration covers every continuation of the worse one.)

use std::collections::HashMap;

use crate::bitset::CompactBitset;
use crate::model::ValueId;

/// Everything about a search state but its use of unanswered operations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Situation {
    pub(crate) answered: CompactBitset,
    pub(crate) value: ValueId,
    pub(crate) awaiting: Option<ValueId>,
}

/// How many members of each group of unanswered operations are used: (group, count)
/// pairs sorted by group, without zero counts.
pub(crate) type UnansweredUse = Box<[(u32, u32)]>;

#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// Per situation, the visited uses none of which uses at least as much as another.
    visited: HashMap<Situation, Vec<UnansweredUse>>,
    states: u64,
}

impl Memo {
    /// Records a state; false if it, or a state at least as good, was recorded before.
    pub(crate) fn visit(&mut self, situation: Situation, used: UnansweredUse) -> bool {
        let uses = self.visited.entry(situation).or_default();
        if uses.iter().any(|earlier| uses_at_most(earlier, &used)) {
            return false;
        }
        uses.retain(|earlier| !uses_at_most(&used, earlier));
        uses.push(used);
        self.states += 1;
        true
    }

    /// The number of states recorded.
    pub(crate) fn states(&self) -> u64 {
        self.states
    }
}

/// Whether `small` uses no more of any group than `large`.
fn uses_at_most(small: &[(u32, u32)], large: &[(u32, u32)]) -> bool {
    let mut large = large.iter().peekable();
    small.iter().all(|&(group, count)| {
        while large.next_if(|&&(other, _)| other < group).is_some() {}
        large.next_if(|&&(other, _)| other == group).is_some_and(|&(_, available)| available >= count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitset::Bitset;

    fn situation() -> Situation {
        Situation { answered: Bitset::with_capacity(8).compact(), value: ValueId::ABSENT, awaiting: None }
    }

    #[test]
    fn compares_uses_group_by_group() {
        assert!(uses_at_most(&[], &[(3, 1)]));
        assert!(uses_at_most(&[(3, 1)], &[(1, 5), (3, 2)]));
        assert!(!uses_at_most(&[(3, 1)], &[(1, 5)]));
        assert!(!uses_at_most(&[(1, 1), (3, 3)], &[(1, 1), (3, 2)]));
        assert!(!uses_at_most(&[(2, 1)], &[(1, 1), (3, 1)]));
    }

    #[test]
    fn a_state_that_used_more_is_not_worth_visiting() {
        let mut memo = Memo::default();
        assert!(memo.visit(situation(), [(0, 1)].into()));
        assert!(!memo.visit(situation(), [(0, 1)].into()), "same state");
        assert!(!memo.visit(situation(), [(0, 2)].into()), "used more");
        assert!(memo.visit(situation(), [(1, 1)].into()), "used different ones");
        assert!(memo.visit(situation(), [].into()), "used less");
        assert!(!memo.visit(situation(), [(1, 1)].into()));
        assert_eq!(memo.states(), 3);
        assert_eq!(memo.visited[&situation()].len(), 1, "only the best is kept");
    }
}
