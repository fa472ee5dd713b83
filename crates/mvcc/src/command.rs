//! What travels through the Raft log, and what applying it answers.
//!
//! A [`Command`] is the payload of a normal Raft entry. Its encoding is one format-version
//! byte followed by the postcard (serde) encoding of the enum. Postcard is compact and
//! deterministic; the version byte lets a later build change the encoding and still read old
//! log entries, and makes an old build refuse new entries with a clear error instead of
//! misreading them. New variants must be appended at the end of the enum (postcard encodes
//! the variant index) — that does not need a new version; changing a field does.

use serde::{Deserialize, Serialize};

use crate::error::MvccError;
use crate::types::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Event, LeaseCheckpointRequest,
    LeaseExpireRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};

/// Format version written by [`Command::encode`].
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// A state-machine command, applied in log order on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Changes nothing but the applied index (a new leader's empty entry, or any entry the
    /// server wants recorded as applied, such as a configuration change).
    Noop,
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    /// A client's revoke.
    LeaseRevoke(LeaseRevokeRequest),
    /// The leader's decision that a lease expired (a revoke, valid only in its term).
    LeaseExpire(LeaseExpireRequest),
    /// Remaining TTLs recorded by the leader (valid only in its term).
    LeaseCheckpoint(LeaseCheckpointRequest),
}

impl Command {
    /// The term a leader-only command was decided in: such a command counts only in an
    /// entry of that term (see [`LeaseExpireRequest`]).
    pub fn leader_term(&self) -> Option<u64> {
        match self {
            Command::LeaseExpire(req) => Some(req.term),
            Command::LeaseCheckpoint(req) => Some(req.term),
            _ => None,
        }
    }
}

impl Command {
    /// `[COMMAND_FORMAT_VERSION] ++ postcard(self)`.
    pub fn encode(&self) -> Vec<u8> {
        // Writing into a Vec cannot run out of space, and every type here is serializable.
        postcard::to_extend(self, vec![COMMAND_FORMAT_VERSION]).expect("postcard encoding into a Vec does not fail")
    }

    /// The inverse of [`encode`](Command::encode); unknown versions and trailing bytes are
    /// errors.
    pub fn decode(bytes: &[u8]) -> Result<Command, MvccError> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(MvccError::Decode("empty command".into()));
        };
        if version != COMMAND_FORMAT_VERSION {
            return Err(MvccError::UnknownFormat(version));
        }
        let (cmd, rest) = postcard::take_from_bytes::<Command>(body).map_err(|e| MvccError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(MvccError::Decode(format!("{} trailing bytes after the command", rest.len())));
        }
        Ok(cmd)
    }
}

/// The answer to an applied command, one variant per [`Command`] variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Noop,
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint,
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The Raft index of the entry.
    pub index: u64,
    /// The response, or the etcd error that is this entry's answer (the entry is applied
    /// either way).
    pub result: Result<Response, MvccError>,
    /// Watch events, in revision order (empty when nothing was written).
    pub events: Vec<Event>,
    /// The store revision after the entry (for response headers of errors and no-ops).
    pub revision: i64,
}
