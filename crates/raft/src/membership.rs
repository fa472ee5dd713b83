//! Cluster membership: who votes, who only learns, and how it changes.
//!
//! concord changes membership one server at a time (Raft dissertation §4.1), not by joint
//! consensus. Each change adds or removes at most one *voter*, so any majority of the old
//! voters overlaps any majority of the new ones and no two leaders can be elected in one
//! term across a change. Two rules make that argument hold:
//!
//! - a node uses the latest configuration in its log, committed or not, and falls back to
//!   the previous one if that entry is truncated away ([`MembershipLog`]);
//! - a leader proposes a change only after it has committed an entry of its own term (the
//!   dissertation's errata fix: otherwise a change from an earlier, uncommitted term and a
//!   new one can overlap) and only when no earlier change is uncommitted.
//!
//! Why not joint consensus: every change etcd's Cluster API makes (add, remove, promote one
//! member) is a single-server change; single-server changes need no intermediate
//! configuration, so there is one quorum rule instead of two and nothing to leave.
//!
//! Each configuration entry carries the *whole* resulting membership, not a delta: a node
//! that joins with an empty log learns the full membership from the first configuration
//! entry or snapshot it receives, without knowing how the cluster was bootstrapped.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{Index, NodeId, NO_NODE};

/// The members of the cluster at some point in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Members whose votes and acknowledgements count.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count toward commit.
    pub learners: BTreeSet<NodeId>,
}

/// One single-server change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// A new non-voting member.
    AddLearner,
    /// A new voter, or the promotion of an existing learner to voter.
    AddVoter,
    /// Removes a voter or a learner.
    RemoveNode,
}

/// A membership change as proposed. `context` is opaque to the core: the application puts
/// whatever it needs to act on the change there (for concord, the member's URLs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node: NodeId,
    pub context: Bytes,
}

/// Why a membership change was refused. Nothing was changed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfChangeError {
    #[error("node id must not be 0")]
    ZeroId,
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("node {0} is already a learner")]
    AlreadyLearner(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("node {0} is the only voter and cannot be removed")]
    LastVoter(NodeId),
    #[error("an earlier membership change (entry {index}) is not committed yet")]
    Pending { index: Index },
    #[error("the leader has not yet committed an entry of its term")]
    LeaderNotReady,
    #[error("learner {node} is not in sync with the leader (matched {matched} of {last})")]
    LearnerNotReady { node: NodeId, matched: Index, last: Index },
    #[error("membership has {count} members, the limit is {limit}")]
    TooManyMembers { count: usize, limit: usize },
}

impl Membership {
    pub fn new(voters: impl IntoIterator<Item = NodeId>, learners: impl IntoIterator<Item = NodeId>) -> Self {
        Membership { voters: voters.into_iter().collect(), learners: learners.into_iter().collect() }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The membership after `change`, or why it is not allowed. Never changes the voter
    /// set by more than one node: that is what makes single-server changes safe.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let node = change.node;
        if node == NO_NODE {
            return Err(ConfChangeError::ZeroId);
        }
        let mut next = self.clone();
        match change.kind {
            ConfChangeKind::AddLearner => {
                if self.is_voter(node) {
                    return Err(ConfChangeError::AlreadyVoter(node));
                }
                if !next.learners.insert(node) {
                    return Err(ConfChangeError::AlreadyLearner(node));
                }
            }
            ConfChangeKind::AddVoter => {
                if !next.voters.insert(node) {
                    return Err(ConfChangeError::AlreadyVoter(node));
                }
                next.learners.remove(&node);
            }
            ConfChangeKind::RemoveNode => {
                if self.voters.len() == 1 && self.is_voter(node) {
                    return Err(ConfChangeError::LastVoter(node));
                }
                if !next.voters.remove(&node) && !next.learners.remove(&node) {
                    return Err(ConfChangeError::NotAMember(node));
                }
            }
        }
        debug_assert!(self.voters.symmetric_difference(&next.voters).count() <= 1, "one voter at a time");
        debug_assert!(next.voters.is_disjoint(&next.learners), "a member is a voter or a learner, not both");
        Ok(next)
    }

    /// A compact binary form (used inside configuration entries and snapshot metadata).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.voters.len() as u32);
        out.put_u32_le(self.learners.len() as u32);
        for id in self.members() {
            out.put_u64_le(id);
        }
    }

    /// Decodes [`Membership::encode`]; returns the membership and the bytes it used.
    pub fn decode(bytes: &[u8]) -> Result<(Membership, usize), DecodeError> {
        let voters = read_u32(bytes, 0)? as usize;
        let learners = read_u32(bytes, 4)? as usize;
        let count = voters.checked_add(learners).filter(|&n| n <= MAX_MEMBERS).ok_or(DecodeError::TooManyMembers)?;
        let mut membership = Membership::default();
        for slot in 0..count {
            let id = read_u64(bytes, 8 + slot * 8)?;
            let fresh = if slot < voters { membership.voters.insert(id) } else { membership.learners.insert(id) };
            if id == NO_NODE || !fresh {
                return Err(DecodeError::BadMember(id));
            }
        }
        if !membership.voters.is_disjoint(&membership.learners) {
            return Err(DecodeError::BadMember(*membership.voters.intersection(&membership.learners).next().unwrap()));
        }
        Ok((membership, 8 + count * 8))
    }
}

/// Most members a configuration may hold (voters and learners together).
pub const MAX_MEMBERS: usize = 1024;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("membership record is truncated")]
    Truncated,
    #[error("membership record lists more than {MAX_MEMBERS} members")]
    TooManyMembers,
    #[error("membership record lists member {0} twice or as id 0")]
    BadMember(NodeId),
    #[error("unknown membership change kind {0}")]
    BadKind(u8),
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, DecodeError> {
    let slice = bytes.get(at..at + 4).ok_or(DecodeError::Truncated)?;
    Ok(u32::from_le_bytes(slice.try_into().expect("4 bytes")))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, DecodeError> {
    let slice = bytes.get(at..at + 8).ok_or(DecodeError::Truncated)?;
    Ok(u64::from_le_bytes(slice.try_into().expect("8 bytes")))
}

/// The payload of an [`crate::EntryKind::ConfChange`] entry: the change as proposed and the
/// membership it results in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChangeEntry {
    pub change: ConfChange,
    pub membership: Membership,
}

impl ConfChangeEntry {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(match self.change.kind {
            ConfChangeKind::AddLearner => 0,
            ConfChangeKind::AddVoter => 1,
            ConfChangeKind::RemoveNode => 2,
        });
        out.put_u64_le(self.change.node);
        self.membership.encode(&mut out);
        out.put_slice(&self.change.context);
        out.freeze()
    }

    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        let kind = match bytes.first().ok_or(DecodeError::Truncated)? {
            0 => ConfChangeKind::AddLearner,
            1 => ConfChangeKind::AddVoter,
            2 => ConfChangeKind::RemoveNode,
            &other => return Err(DecodeError::BadKind(other)),
        };
        let node = read_u64(bytes, 1)?;
        let (membership, used) = Membership::decode(&bytes[9..])?;
        let context = bytes.slice(9 + used..);
        Ok(ConfChangeEntry { change: ConfChange { kind, node, context }, membership })
    }
}

/// The configurations a node's log holds: the one in effect at the log's base (the
/// bootstrap configuration or the last snapshot's) and one per configuration entry after
/// it. The node uses the latest, committed or not.
#[derive(Clone, Debug)]
pub struct MembershipLog {
    base_index: Index,
    base: Membership,
    /// `(index of the configuration entry, membership from then on)`, in index order.
    changes: Vec<(Index, Membership)>,
}

impl MembershipLog {
    pub fn new(base_index: Index, base: Membership) -> Self {
        MembershipLog { base_index, base, changes: Vec::new() }
    }

    /// The index below which the log was compacted (its configuration is the base).
    pub fn base_index(&self) -> Index {
        self.base_index
    }

    /// The configuration in effect: the latest in the log.
    pub fn current(&self) -> &Membership {
        self.changes.last().map(|(_, m)| m).unwrap_or(&self.base)
    }

    /// The configuration before the current one, if the current one was set by an entry
    /// still held (not folded into the base by compaction).
    pub fn previous(&self) -> Option<&Membership> {
        match self.changes.len() {
            0 => None,
            1 => Some(&self.base),
            n => Some(&self.changes[n - 2].1),
        }
    }

    /// Index of the entry that set the current configuration (the base index if none).
    pub fn current_index(&self) -> Index {
        self.changes.last().map(|&(i, _)| i).unwrap_or(self.base_index)
    }

    /// The configuration in effect after entry `index` (for a snapshot's metadata).
    pub fn at(&self, index: Index) -> &Membership {
        assert!(index >= self.base_index, "configuration at {index} is below the log's base {}", self.base_index);
        self.changes.iter().rev().find(|&&(i, _)| i <= index).map(|(_, m)| m).unwrap_or(&self.base)
    }

    /// A configuration entry at `index` was appended.
    pub fn push(&mut self, index: Index, membership: Membership) {
        assert!(index > self.current_index(), "configuration entries arrive in index order");
        self.changes.push((index, membership));
    }

    /// Entries from `index` on were replaced: their configurations no longer count.
    pub fn truncate_from(&mut self, index: Index) {
        self.changes.retain(|&(i, _)| i < index);
    }

    /// The log up to `index` was compacted: fold its configurations into the base.
    pub fn compact_to(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        self.base = self.at(index).clone();
        self.base_index = index;
        self.changes.retain(|&(i, _)| i > index);
    }

    /// The log was replaced by a snapshot at `index` holding `membership`.
    pub fn reset(&mut self, index: Index, membership: Membership) {
        *self = MembershipLog::new(index, membership);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ConfChangeKind, node: NodeId) -> ConfChange {
        ConfChange { kind, node, context: Bytes::new() }
    }

    #[test]
    fn changes_move_one_member_at_a_time_and_refuse_nonsense() {
        let m = Membership::new([1, 2, 3], []);
        let with_learner = m.apply(&change(ConfChangeKind::AddLearner, 4)).unwrap();
        assert_eq!(with_learner, Membership::new([1, 2, 3], [4]));
        let promoted = with_learner.apply(&change(ConfChangeKind::AddVoter, 4)).unwrap();
        assert_eq!(promoted, Membership::new([1, 2, 3, 4], []));
        assert_eq!(promoted.apply(&change(ConfChangeKind::AddVoter, 4)), Err(ConfChangeError::AlreadyVoter(4)));
        assert_eq!(promoted.apply(&change(ConfChangeKind::AddLearner, 4)), Err(ConfChangeError::AlreadyVoter(4)));
        assert_eq!(with_learner.apply(&change(ConfChangeKind::AddLearner, 4)), Err(ConfChangeError::AlreadyLearner(4)));
        assert_eq!(m.apply(&change(ConfChangeKind::RemoveNode, 9)), Err(ConfChangeError::NotAMember(9)));
        assert_eq!(m.apply(&change(ConfChangeKind::AddVoter, 0)), Err(ConfChangeError::ZeroId));
        let single = Membership::new([1], [2]);
        assert_eq!(single.apply(&change(ConfChangeKind::RemoveNode, 1)), Err(ConfChangeError::LastVoter(1)));
        assert_eq!(single.apply(&change(ConfChangeKind::RemoveNode, 2)).unwrap(), Membership::new([1], []));
    }

    #[test]
    fn entries_round_trip_and_bad_bytes_are_refused() {
        let entry = ConfChangeEntry {
            change: ConfChange { kind: ConfChangeKind::RemoveNode, node: 7, context: Bytes::from_static(b"ctx") },
            membership: Membership::new([1, 2], [9]),
        };
        let bytes = entry.encode();
        assert_eq!(ConfChangeEntry::decode(&bytes).unwrap(), entry);
        for cut in 0..bytes.len() - 3 {
            assert!(ConfChangeEntry::decode(&bytes.slice(..cut)).is_err(), "cut at {cut} decoded");
        }
        let mut bad = bytes.to_vec();
        bad[0] = 7;
        assert_eq!(ConfChangeEntry::decode(&Bytes::from(bad)), Err(DecodeError::BadKind(7)));
    }

    #[test]
    fn the_log_uses_the_latest_configuration_and_reverts_on_truncation() {
        let mut log = MembershipLog::new(0, Membership::new([1, 2, 3], []));
        log.push(5, Membership::new([1, 2, 3, 4], []));
        log.push(9, Membership::new([1, 2, 4], []));
        assert_eq!(log.current(), &Membership::new([1, 2, 4], []));
        assert_eq!(log.at(7), &Membership::new([1, 2, 3, 4], []));
        assert_eq!(log.at(4), &Membership::new([1, 2, 3], []));
        assert_eq!(log.previous(), Some(&Membership::new([1, 2, 3, 4], [])));
        log.truncate_from(9);
        assert_eq!(log.current(), &Membership::new([1, 2, 3, 4], []));
        assert_eq!(log.previous(), Some(&Membership::new([1, 2, 3], [])));
        log.compact_to(6);
        assert_eq!(log.current_index(), 6);
        assert_eq!(log.at(6), &Membership::new([1, 2, 3, 4], []));
        log.truncate_from(3);
        assert_eq!(log.current(), &Membership::new([1, 2, 3, 4], []), "compacted configurations never revert");
    }
}
