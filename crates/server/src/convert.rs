//! Raft messages to and from their wire form (concord-api's `peerpb`).
//!
//! The core's types stay free of any serialization dependency; this is the one place
//! that knows both shapes.

use bytes::Bytes;
use concord_api::peerpb;
use concord_raft::{Entry, EntryKind, Message, MessageBody, RejectHint, SnapshotChunk, SnapshotMeta};

use crate::errors::EtcdError;

#[derive(Debug, thiserror::Error)]
#[error("malformed peer message: {0}")]
pub struct DecodeError(&'static str);

/// Why a leader refused forwarded proposals, as `RefusedProposals.reason` says it.
pub fn refusal_to_wire(error: &EtcdError) -> u32 {
    match error {
        EtcdError::TooManyRequests => 2,
        EtcdError::RequestTooLarge => 3,
        _ => 1,
    }
}

/// The error the waiting clients get for a `RefusedProposals.reason` (an unknown reason,
/// from a newer member, reads as the leadership moving: clients retry).
pub fn refusal_from_wire(reason: u32) -> EtcdError {
    match reason {
        2 => EtcdError::TooManyRequests,
        3 => EtcdError::RequestTooLarge,
        _ => EtcdError::LeaderChanged,
    }
}

pub fn entry_to_wire(entry: &Entry) -> peerpb::Entry {
    let kind = match entry.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    };
    peerpb::Entry { index: entry.index, term: entry.term, kind, data: entry.data.to_vec() }
}

pub fn entry_from_wire(entry: peerpb::Entry) -> Result<Entry, DecodeError> {
    let kind = match entry.kind {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        _ => return Err(DecodeError("unknown entry kind")),
    };
    Ok(Entry { index: entry.index, term: entry.term, kind, data: Bytes::from(entry.data) })
}

pub fn message_to_wire(message: &Message) -> peerpb::RaftMessage {
    use peerpb::raft_message::Body;
    let body = match &message.body {
        MessageBody::RequestVote { pre_vote, last_log_index, last_log_term, leader_transfer } => {
            Body::RequestVote(peerpb::RequestVote {
                pre_vote: *pre_vote,
                last_log_index: *last_log_index,
                last_log_term: *last_log_term,
                leader_transfer: *leader_transfer,
            })
        }
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            Body::RequestVoteResponse(peerpb::RequestVoteResponse { pre_vote: *pre_vote, granted: *granted })
        }
        MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
            Body::AppendEntries(peerpb::AppendEntries {
                prev_log_index: *prev_log_index,
                prev_log_term: *prev_log_term,
                entries: entries.iter().map(entry_to_wire).collect(),
                leader_commit: *leader_commit,
            })
        }
        MessageBody::AppendEntriesResponse { result } => {
            let wire = match result {
                Ok(match_index) => {
                    peerpb::AppendEntriesResponse { success: true, match_index: *match_index, ..Default::default() }
                }
                Err(hint) => peerpb::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    rejected_index: hint.rejected_index,
                    hint_index: hint.hint_index,
                    hint_term: hint.hint_term,
                },
            };
            Body::AppendEntriesResponse(wire)
        }
        MessageBody::Heartbeat { commit, read_round } => {
            Body::Heartbeat(peerpb::Heartbeat { commit: *commit, read_round: *read_round })
        }
        MessageBody::HeartbeatResponse { read_round } => {
            Body::HeartbeatResponse(peerpb::HeartbeatResponse { read_round: *read_round })
        }
        MessageBody::ReadIndexRequest { request_id } => {
            Body::ReadIndexRequest(peerpb::ReadIndexRequest { request_id: *request_id })
        }
        MessageBody::ReadIndexResponse { request_id, index } => {
            Body::ReadIndexResponse(peerpb::ReadIndexResponse { request_id: *request_id, index: *index })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(peerpb::TimeoutNow {}),
        MessageBody::InstallSnapshot { chunk } => Body::InstallSnapshot(peerpb::InstallSnapshot {
            meta: chunk.meta.encode().to_vec(),
            offset: chunk.offset,
            data: chunk.data.to_vec(),
            last: chunk.last,
        }),
        MessageBody::InstallSnapshotResponse { index, next_offset } => {
            Body::InstallSnapshotResponse(peerpb::InstallSnapshotResponse { index: *index, next_offset: *next_offset })
        }
    };
    peerpb::RaftMessage { from: message.from, to: message.to, term: message.term, body: Some(body) }
}

pub fn message_from_wire(message: peerpb::RaftMessage) -> Result<Message, DecodeError> {
    use peerpb::raft_message::Body;
    let body = match message.body.ok_or(DecodeError("missing body"))? {
        Body::RequestVote(v) => MessageBody::RequestVote {
            pre_vote: v.pre_vote,
            last_log_index: v.last_log_index,
            last_log_term: v.last_log_term,
            leader_transfer: v.leader_transfer,
        },
        Body::RequestVoteResponse(v) => MessageBody::RequestVoteResponse { pre_vote: v.pre_vote, granted: v.granted },
        Body::AppendEntries(a) => MessageBody::AppendEntries {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: a.entries.into_iter().map(entry_from_wire).collect::<Result<_, _>>()?,
            leader_commit: a.leader_commit,
        },
        Body::AppendEntriesResponse(r) => MessageBody::AppendEntriesResponse {
            result: if r.success {
                Ok(r.match_index)
            } else {
                Err(RejectHint { rejected_index: r.rejected_index, hint_index: r.hint_index, hint_term: r.hint_term })
            },
        },
        Body::Heartbeat(h) => MessageBody::Heartbeat { commit: h.commit, read_round: h.read_round },
        Body::HeartbeatResponse(h) => MessageBody::HeartbeatResponse { read_round: h.read_round },
        Body::ReadIndexRequest(r) => MessageBody::ReadIndexRequest { request_id: r.request_id },
        Body::ReadIndexResponse(r) => MessageBody::ReadIndexResponse { request_id: r.request_id, index: r.index },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::InstallSnapshot(s) => MessageBody::InstallSnapshot {
            chunk: SnapshotChunk {
                meta: SnapshotMeta::decode(&s.meta).map_err(|_| DecodeError("malformed snapshot metadata"))?,
                offset: s.offset,
                data: Bytes::from(s.data),
                last: s.last,
            },
        },
        Body::InstallSnapshotResponse(r) => {
            MessageBody::InstallSnapshotResponse { index: r.index, next_offset: r.next_offset }
        }
    };
    Ok(Message { from: message.from, to: message.to, term: message.term, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_kind_survives_the_wire() {
        let entry = Entry { index: 3, term: 2, kind: EntryKind::Normal, data: Bytes::from_static(b"x") };
        let bodies = vec![
            MessageBody::RequestVote { pre_vote: true, last_log_index: 4, last_log_term: 2, leader_transfer: true },
            MessageBody::RequestVoteResponse { pre_vote: false, granted: true },
            MessageBody::AppendEntries { prev_log_index: 2, prev_log_term: 1, entries: vec![entry], leader_commit: 2 },
            MessageBody::AppendEntriesResponse { result: Ok(9) },
            MessageBody::AppendEntriesResponse {
                result: Err(RejectHint { rejected_index: 5, hint_index: 4, hint_term: 1 }),
            },
            MessageBody::Heartbeat { commit: 7, read_round: 3 },
            MessageBody::HeartbeatResponse { read_round: 3 },
            MessageBody::ReadIndexRequest { request_id: 11 },
            MessageBody::ReadIndexResponse { request_id: 11, index: 12 },
            MessageBody::TimeoutNow,
            MessageBody::InstallSnapshot {
                chunk: SnapshotChunk {
                    meta: SnapshotMeta { index: 9, term: 2, membership: concord_raft::Membership::new([1, 2], [3]) },
                    offset: 4096,
                    data: Bytes::from_static(b"state"),
                    last: true,
                },
            },
            MessageBody::InstallSnapshotResponse { index: 9, next_offset: 4101 },
        ];
        for body in bodies {
            let message = Message { from: 1, to: 2, term: 5, body };
            let back = message_from_wire(message_to_wire(&message)).unwrap();
            assert_eq!(back, message);
        }
    }
}
