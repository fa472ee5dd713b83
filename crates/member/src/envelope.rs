//! What a Raft entry carries: a state-machine command tagged with the member and request
//! that proposed it, so the member that is waiting for the outcome recognises it when it
//! applies the entry (whether it proposed directly as leader or forwarded to a leader).
//!
//! Layout: a kind byte, then for commands the origin member id and request id (both
//! big-endian u64) and the concord-mvcc command encoding. An empty entry is the leader's
//! no-op of a new term.
//!
//! Configuration-change entries belong to the Raft core (`EntryKind::ConfChange`); what
//! concord puts in their opaque context is a [`ChangeContext`].

use bytes::{BufMut, Bytes, BytesMut};
use concord_raft::NodeId;

const KIND_COMMAND: u8 = 1;
const KIND_MEMBER_ATTRIBUTES: u8 = 2;
const KIND_MEMBER_UPDATE: u8 = 3;

/// Most peer URLs one member may have, and the longest URL accepted: bounds what a
/// membership request puts into the log.
pub const MAX_PEER_URLS: usize = 16;
pub const MAX_URL_BYTES: usize = 512;

/// The context of a configuration-change entry: who waits for it (the member and request
/// that proposed it) and, for an added member, its peer URLs (its name stays empty until
/// it starts and publishes it, as in etcd).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeContext {
    pub origin: NodeId,
    pub request_id: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_urls: Vec<String>,
}

impl ChangeContext {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a change context serializes"))
    }

    pub fn decode(bytes: &[u8]) -> Result<ChangeContext, EnvelopeError> {
        serde_json::from_slice(bytes).map_err(|_| EnvelopeError("malformed configuration change context"))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// An entry with no payload (a new leader's empty entry).
    Empty,
    Command {
        origin: NodeId,
        request_id: u64,
        command: &'a [u8],
    },
    /// A member announces its name and client URLs to the cluster (as etcd's publish).
    MemberAttributes {
        member: NodeId,
        request_id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// MemberUpdate: a member's new peer URLs.
    MemberUpdate {
        origin: NodeId,
        request_id: u64,
        member: NodeId,
        peer_urls: Vec<String>,
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

pub fn encode_member_attributes(member: NodeId, request_id: u64, name: &str, client_urls: &[String]) -> Bytes {
    let text = format!("{name}\n{}", client_urls.join(","));
    let mut out = BytesMut::with_capacity(17 + text.len());
    out.put_u8(KIND_MEMBER_ATTRIBUTES);
    out.put_u64(member);
    out.put_u64(request_id);
    out.put_slice(text.as_bytes());
    out.freeze()
}

pub fn encode_member_update(origin: NodeId, request_id: u64, member: NodeId, peer_urls: &[String]) -> Bytes {
    let text = peer_urls.join(",");
    let mut out = BytesMut::with_capacity(25 + text.len());
    out.put_u8(KIND_MEMBER_UPDATE);
    out.put_u64(origin);
    out.put_u64(request_id);
    out.put_u64(member);
    out.put_slice(text.as_bytes());
    out.freeze()
}

/// The member and request waiting for this entry's outcome, read from the header every
/// kind of entry shares (the origin member, then the request id), without decoding the
/// rest. `None` for an empty entry or one of no known kind.
pub fn waiter_of(data: &[u8]) -> Option<(NodeId, u64)> {
    let (&kind, rest) = data.split_first()?;
    if !matches!(kind, KIND_COMMAND | KIND_MEMBER_ATTRIBUTES | KIND_MEMBER_UPDATE) || rest.len() < 16 {
        return None;
    }
    let origin = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let request_id = u64::from_be_bytes(rest[8..16].try_into().expect("8 bytes"));
    Some((origin, request_id))
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
        KIND_MEMBER_ATTRIBUTES => {
            if rest.len() < 16 {
                return Err(EnvelopeError("member attributes header is truncated"));
            }
            let member = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let request_id = u64::from_be_bytes(rest[8..16].try_into().expect("8 bytes"));
            let text =
                std::str::from_utf8(&rest[16..]).map_err(|_| EnvelopeError("member attributes are not UTF-8"))?;
            let (name, urls) = text.split_once('\n').ok_or(EnvelopeError("member attributes lack a separator"))?;
            let client_urls = urls.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect();
            Ok(Envelope::MemberAttributes { member, request_id, name: name.to_string(), client_urls })
        }
        KIND_MEMBER_UPDATE => {
            if rest.len() < 24 {
                return Err(EnvelopeError("member update header is truncated"));
            }
            let origin = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let request_id = u64::from_be_bytes(rest[8..16].try_into().expect("8 bytes"));
            let member = u64::from_be_bytes(rest[16..24].try_into().expect("8 bytes"));
            let text = std::str::from_utf8(&rest[24..]).map_err(|_| EnvelopeError("peer URLs are not UTF-8"))?;
            let peer_urls = text.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect();
            Ok(Envelope::MemberUpdate { origin, request_id, member, peer_urls })
        }
        _ => Err(EnvelopeError("unknown kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiter_of_every_kind_of_entry() {
        assert_eq!(waiter_of(&encode_command(7, 9, b"cmd")), Some((7, 9)));
        assert_eq!(waiter_of(&encode_member_attributes(5, 3, "n1", &["http://a:1".into()])), Some((5, 3)));
        assert_eq!(waiter_of(&encode_member_update(4, 2, 8, &["http://b:2".into()])), Some((4, 2)));
        assert_eq!(waiter_of(b""), None);
        assert_eq!(waiter_of(&[KIND_COMMAND, 1, 2]), None, "truncated");
        assert_eq!(waiter_of(&[99; 20]), None, "unknown kind");
    }

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let data = encode_command(7, 9, b"cmd");
        assert_eq!(decode(&data), Ok(Envelope::Command { origin: 7, request_id: 9, command: b"cmd" }));
        assert_eq!(decode(b""), Ok(Envelope::Empty));
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&[9]).is_err());
        let data = encode_member_attributes(3, 4, "m1", &["http://a:1".into(), "http://b:2".into()]);
        assert_eq!(
            decode(&data),
            Ok(Envelope::MemberAttributes {
                member: 3,
                request_id: 4,
                name: "m1".into(),
                client_urls: vec!["http://a:1".into(), "http://b:2".into()]
            })
        );
        let data = encode_member_update(1, 2, 3, &["http://c:1".into()]);
        assert_eq!(
            decode(&data),
            Ok(Envelope::MemberUpdate { origin: 1, request_id: 2, member: 3, peer_urls: vec!["http://c:1".into()] })
        );
        assert!(decode(&data[..20]).is_err());
        let context = ChangeContext { origin: 1, request_id: 2, peer_urls: vec!["http://d:1".into()] };
        assert_eq!(ChangeContext::decode(&context.encode()), Ok(context));
        assert!(ChangeContext::decode(b"{").is_err());
    }
}
