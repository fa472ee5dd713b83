//! Majority arithmetic: the one place that decides what "a quorum agrees" means.

use crate::types::{Index, NodeId};
use std::collections::BTreeMap;

/// Smallest number of voters that form a majority.
pub fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The highest index that a majority of voters have reached, given each voter's index.
pub fn committed_index(indexes: &mut [Index]) -> Index {
    assert!(!indexes.is_empty(), "a configuration has at least one voter");
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(indexes.len()) - 1]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies the votes cast so far among `voters`.
pub fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let needed = majority(voters.len());
    let granted = voters.iter().filter(|v| votes.get(v) == Some(&true)).count();
    let rejected = voters.iter().filter(|v| votes.get(v) == Some(&false)).count();
    if granted >= needed {
        VoteResult::Won
    } else if rejected > voters.len() - needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_majority_th_highest() {
        assert_eq!(committed_index(&mut [5]), 5);
        assert_eq!(committed_index(&mut [5, 3, 1]), 3);
        assert_eq!(committed_index(&mut [1, 5, 3, 4]), 3);
        assert_eq!(committed_index(&mut [9, 9, 1, 1, 1]), 1);
        assert_eq!(committed_index(&mut [9, 9, 7, 1, 1]), 7);
    }

    #[test]
    fn votes_need_a_majority_to_win_and_enough_rejections_to_lose() {
        let voters = [1, 2, 3, 4, 5];
        let mut votes = BTreeMap::from([(1, true), (2, true)]);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(3, false);
        votes.insert(4, false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(5, false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
        votes.insert(5, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
    }
}
