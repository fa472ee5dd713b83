//! Peer input that no correct member sends, refused before it changes anything.
//!
//! The core's invariants (the commit index never passes the log's end, a log's entries
//! follow each other, every configuration entry decodes) hold only while peers are
//! correct, and the core asserts them. A message that would break one comes from a faulty
//! sender: a bug, a frame damaged in a way its checksums missed, a process that is not a
//! member at all. Acting on it would trip an assertion and end this member. Ignoring it is
//! what the protocol already does with a lost message, so that is what happens: the
//! message is checked first and, if it breaks a rule, refused whole, with the rule it
//! broke returned to the caller to log.
//!
//! Two kinds of checks: [`check_shape`] needs only the message (entries that follow each
//! other, terms that never go down, configurations that decode); [`check_commit`] needs
//! the receiver's log (a heartbeat's commit inside it). Both are cheap next to the work a
//! message causes.

use crate::membership::{ConfChangeEntry, Membership};
use crate::message::{Message, MessageBody};
use crate::types::{EntryKind, Index, NodeId, Term};

/// No log reaches this index (at a million entries a second, it takes 290,000 years): an
/// entry or snapshot past it is refused, so that the log's arithmetic (`index + 1`) never
/// overflows.
pub const MAX_INDEX: Index = Index::MAX / 2;

/// No term reaches this either (a term lasts at least an election timeout): a message of a
/// later term is refused, so that `term + 1` (a campaign) never overflows.
pub const MAX_TERM: Term = Term::MAX / 2;

/// Why a peer's message was refused. Nothing was changed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("message from {from:x}: term {term} is past any cluster's reach ({MAX_TERM})")]
    TermOutOfReach { from: NodeId, term: Term },
    #[error("message from {from:x}: index {index} is past any log's reach ({MAX_INDEX})")]
    IndexOutOfReach { from: NodeId, index: Index },
    #[error("append from {from:x}: entry {index} does not follow entry {previous}")]
    EntriesOutOfOrder { from: NodeId, previous: Index, index: Index },
    #[error("append from {from:x}: entry {index} has term {term}, below the term {previous_term} before it")]
    TermGoesDown { from: NodeId, index: Index, term: Term, previous_term: Term },
    #[error("append from {from:x} in term {message_term}: entry {index} has the later term {term}")]
    TermFromTheFuture { from: NodeId, index: Index, term: Term, message_term: Term },
    #[error("append from {from:x}: entry {index} holds {size} bytes, above this node's limit of {limit}")]
    EntryTooLarge { from: NodeId, index: Index, size: u64, limit: u64 },
    #[error("append from {from:x}: configuration entry {index} is malformed: {detail}")]
    MalformedConfiguration { from: NodeId, index: Index, detail: String },
    #[error("snapshot from {from:x} at {index}: {detail}")]
    MalformedSnapshot { from: NodeId, index: Index, detail: String },
    #[error("heartbeat from {from:x} commits through {commit}, past this log's last entry {last_index}")]
    CommitPastLog { from: NodeId, commit: Index, last_index: Index },
}

/// The rules a message must keep whatever the receiver's state; `max_entry_bytes` is the
/// largest entry payload the receiver stores (`Config::max_entry_bytes`).
pub(crate) fn check_shape(message: &Message, max_entry_bytes: u64) -> Result<(), Refusal> {
    let from = message.from;
    if message.term > MAX_TERM {
        return Err(Refusal::TermOutOfReach { from, term: message.term });
    }
    match &message.body {
        MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, .. } => {
            let (mut previous, mut previous_term) = (*prev_log_index, *prev_log_term);
            for entry in entries {
                if Some(entry.index) != previous.checked_add(1) {
                    return Err(Refusal::EntriesOutOfOrder { from, previous, index: entry.index });
                }
                if entry.index > MAX_INDEX {
                    return Err(Refusal::IndexOutOfReach { from, index: entry.index });
                }
                if entry.term < previous_term {
                    return Err(Refusal::TermGoesDown { from, index: entry.index, term: entry.term, previous_term });
                }
                if entry.term > message.term {
                    return Err(Refusal::TermFromTheFuture {
                        from,
                        index: entry.index,
                        term: entry.term,
                        message_term: message.term,
                    });
                }
                let size = entry.data.len() as u64;
                if size > max_entry_bytes {
                    return Err(Refusal::EntryTooLarge { from, index: entry.index, size, limit: max_entry_bytes });
                }
                if entry.kind == EntryKind::ConfChange {
                    let decoded = ConfChangeEntry::decode(&entry.data).map_err(|error| error.to_string());
                    if let Err(detail) = decoded.and_then(|decoded| check_membership(&decoded.membership)) {
                        return Err(Refusal::MalformedConfiguration { from, index: entry.index, detail });
                    }
                }
                (previous, previous_term) = (entry.index, entry.term);
            }
            Ok(())
        }
        MessageBody::InstallSnapshot { chunk } => {
            let index = chunk.meta.index;
            if index > MAX_INDEX {
                return Err(Refusal::IndexOutOfReach { from, index });
            }
            let problem = if index == 0 {
                Err("a snapshot covers at least one entry".to_string())
            } else if chunk.meta.term > message.term {
                Err(format!("its term {} is later than the sender's term {}", chunk.meta.term, message.term))
            } else {
                check_membership(&chunk.meta.membership)
            };
            problem.map_err(|detail| Refusal::MalformedSnapshot { from, index, detail })
        }
        _ => Ok(()),
    }
}

/// A heartbeat's commit is capped by its leader at what this follower acknowledged, so it
/// is inside this log.
pub(crate) fn check_commit(message: &Message, last_index: Index) -> Result<(), Refusal> {
    match message.body {
        MessageBody::Heartbeat { commit, .. } if commit > last_index => {
            Err(Refusal::CommitPastLog { from: message.from, commit, last_index })
        }
        _ => Ok(()),
    }
}

/// A configuration a member can run with: at least one voter (a voter and a learner at
/// once is refused when it is decoded).
fn check_membership(membership: &Membership) -> Result<(), String> {
    if membership.voters.is_empty() {
        return Err("the configuration has no voter".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{ConfChange, ConfChangeKind};
    use crate::types::Entry;
    use bytes::Bytes;

    fn append(term: Term, prev: (Index, Term), entries: Vec<Entry>) -> Message {
        let body =
            MessageBody::AppendEntries { prev_log_index: prev.0, prev_log_term: prev.1, entries, leader_commit: 0 };
        Message { from: 2, to: 1, term, body }
    }

    fn check_shape_(message: &Message) -> Result<(), Refusal> {
        check_shape(message, 1 << 20)
    }

    fn entry(index: Index, term: Term) -> Entry {
        Entry { index, term, kind: EntryKind::Normal, data: Bytes::from_static(b"x") }
    }

    #[test]
    fn entries_must_follow_each_other_in_non_decreasing_terms_up_to_the_senders() {
        assert_eq!(check_shape_(&append(3, (4, 2), vec![entry(5, 2), entry(6, 3)])), Ok(()));
        assert_eq!(check_shape_(&append(3, (4, 2), vec![])), Ok(()));
        assert!(matches!(
            check_shape_(&append(3, (4, 2), vec![entry(5, 2), entry(7, 2)])),
            Err(Refusal::EntriesOutOfOrder { previous: 5, index: 7, .. })
        ));
        assert!(matches!(
            check_shape_(&append(3, (4, 2), vec![entry(4, 2)])),
            Err(Refusal::EntriesOutOfOrder { previous: 4, index: 4, .. })
        ));
        assert!(matches!(
            check_shape_(&append(3, (4, 2), vec![entry(5, 1)])),
            Err(Refusal::TermGoesDown { index: 5, term: 1, previous_term: 2, .. })
        ));
        assert!(matches!(
            check_shape_(&append(3, (4, 2), vec![entry(5, 4)])),
            Err(Refusal::TermFromTheFuture { index: 5, term: 4, message_term: 3, .. })
        ));
        assert!(matches!(
            check_shape_(&append(3, (Index::MAX, 2), vec![entry(0, 2)])),
            Err(Refusal::EntriesOutOfOrder { .. })
        ));
        assert!(matches!(
            check_shape_(&append(3, (MAX_INDEX, 2), vec![entry(MAX_INDEX + 1, 2)])),
            Err(Refusal::IndexOutOfReach { .. })
        ));
        let large = Entry { data: Bytes::from(vec![7; 17]), ..entry(5, 2) };
        assert_eq!(check_shape(&append(3, (4, 2), vec![entry(5, 2)]), 16), Ok(()));
        assert!(matches!(
            check_shape(&append(3, (4, 2), vec![large]), 16),
            Err(Refusal::EntryTooLarge { index: 5, size: 17, limit: 16, .. })
        ));
    }

    #[test]
    fn configuration_entries_must_decode_to_a_configuration_with_a_voter() {
        let change = ConfChange { kind: ConfChangeKind::AddLearner, node: 4, context: Bytes::new() };
        let good = ConfChangeEntry { change: change.clone(), membership: Membership::new([1, 2, 3], [4]) };
        let no_voter = ConfChangeEntry { change, membership: Membership::new([], [4]) };
        let conf = |index, data: Bytes| Entry { index, term: 2, kind: EntryKind::ConfChange, data };
        assert_eq!(check_shape_(&append(2, (0, 0), vec![conf(1, good.encode())])), Ok(()));
        assert!(matches!(
            check_shape_(&append(2, (0, 0), vec![conf(1, Bytes::from_static(b"\x01\x02"))])),
            Err(Refusal::MalformedConfiguration { index: 1, .. })
        ));
        assert!(matches!(
            check_shape_(&append(2, (0, 0), vec![conf(1, no_voter.encode())])),
            Err(Refusal::MalformedConfiguration { index: 1, .. })
        ));
    }

    #[test]
    fn terms_stay_within_reach() {
        let vote = |term| Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::RequestVoteResponse { pre_vote: false, granted: true },
        };
        assert_eq!(check_shape_(&vote(MAX_TERM)), Ok(()));
        assert_eq!(check_shape_(&vote(Term::MAX)), Err(Refusal::TermOutOfReach { from: 2, term: Term::MAX }));
    }

    #[test]
    fn a_heartbeat_commits_only_inside_the_log() {
        let heartbeat =
            |commit| Message { from: 2, to: 1, term: 3, body: MessageBody::Heartbeat { commit, read_round: 0 } };
        assert_eq!(check_commit(&heartbeat(10), 10), Ok(()));
        assert_eq!(
            check_commit(&heartbeat(11), 10),
            Err(Refusal::CommitPastLog { from: 2, commit: 11, last_index: 10 })
        );
    }
}
