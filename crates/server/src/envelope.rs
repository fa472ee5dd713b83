//! What a Raft entry carries: a state-machine command tagged with the member and request
//! that proposed it, so the member that is waiting for the outcome recognises it when it
//! applies the entry (whether it proposed directly as leader or forwarded to a leader).
//!
//! Layout: a kind byte, then for commands the origin member id and request id (both
//! big-endian u64) and the concord-mvcc command encoding. An empty entry is the leader's
//! no-op of a new term.

use bytes::{BufMut, Bytes, BytesMut};
use concord_raft::NodeId;

const KIND_COMMAND: u8 = 1;

#[derive(Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// An entry with no payload (a new leader's empty entry).
    Empty,
    Command {
        origin: NodeId,
        request_id: u64,
        command: &'a [u8],
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed entry payload: {0}")]
pub struct EnvelopeError(&'static str);

pub fn encode_command(origin: NodeId, request_id: u64, command: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(17 + command.len());
    out.put_u8(KIND_COMMAND);
    out.put_u64(origin);
    out.put_u64(request_id);
    out.put_slice(command);
    out.freeze()
}

pub fn decode(data: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let Some((&kind, rest)) = data.split_first() else {
        return Ok(Envelope::Empty);
    };
    match kind {
        KIND_COMMAND => {
            if rest.len() < 16 {
                return Err(EnvelopeError("command header is truncated"));
            }
            let origin = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let request_id = u64::from_be_bytes(rest[8..16].try_into().expect("8 bytes"));
            Ok(Envelope::Command { origin, request_id, command: &rest[16..] })
        }
        _ => Err(EnvelopeError("unknown kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let data = encode_command(7, 9, b"cmd");
        assert_eq!(decode(&data), Ok(Envelope::Command { origin: 7, request_id: 9, command: b"cmd" }));
        assert_eq!(decode(b""), Ok(Envelope::Empty));
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&[9]).is_err());
    }
}
