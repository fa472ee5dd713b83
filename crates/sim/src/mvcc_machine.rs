//! The product's state machine under the simulator: each node's writes go into a real
//! concord-mvcc [`Store`] (in memory), the one every concord member runs, instead of the
//! plain map of [`crate::state_machine::KvStore`] (`--state-machine mvcc`).
//!
//! So the seeded crashes, partitions, snapshot transfers and restores, and the checks
//! (linearizability of what clients saw, equal states at equal applied indexes) apply to
//! the store's apply, its revisions, its command encoding and its snapshot stream. A
//! client's write becomes the etcd request a client would send (a Put, a DeleteRange of
//! one key, a Txn for the compare-and-set), encoded and decoded with the store's own
//! command format, and the answer the store gives is what the client is told.
//!
//! Entries carry what a concord member's entries carry: the command in concord-member's
//! envelope, tagged with the proposing node and a request id, and the outcome reaches the
//! client through concord-member's `Waiters`, by that id, as in the server; reads are
//! numbered by concord-member's `ReadIds` (crates/sim/src/client.rs). Not covered yet:
//! forwarding and the apply task's batching (crates/server): the simulator still plays
//! those parts itself.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use concord_check::Outcome;
use concord_member::envelope::{self, Envelope};
use concord_mvcc::{
    ChunkLimits, Command, Compare, CompareResult, DeleteRangeRequest, Event, EventChunk, MvccError, PutRequest,
    RangeRequest, RequestOp, Response, Store, TxnRequest,
};
use concord_raft::Index;

use crate::command::WriteOp;
use crate::state_machine::{fnv1a, seal, unseal, Reader, FNV_OFFSET};

/// Leads every snapshot of this state machine the simulator writes.
const SNAPSHOT_MAGIC: &[u8; 8] = b"csimmvc1";

pub struct MvccMachine {
    store: Store,
    /// The watch events of the entries applied since [`MvccMachine::take_events`].
    events: Vec<Event>,
}

impl fmt::Debug for MvccMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MvccMachine")
            .field("applied", &self.store.applied_index())
            .field("revision", &self.store.current_revision())
            .finish()
    }
}

impl Default for MvccMachine {
    fn default() -> Self {
        MvccMachine { store: Store::in_memory().expect("an in-memory store opens"), events: Vec::new() }
    }
}

impl MvccMachine {
    /// The value of `key`, as a serializable Range reads it.
    pub fn get(&self, key: &str) -> Option<String> {
        let request = RangeRequest { key: key.as_bytes().to_vec(), ..RangeRequest::default() };
        let response = self.store.range(&request).expect("a range of one key");
        response.kvs.first().map(|kv| String::from_utf8(kv.value.clone()).expect("the simulator writes text"))
    }

    /// Applies the write of the entry at `index` and returns what its client is told.
    pub fn apply(&mut self, index: Index, op: &WriteOp) -> Outcome {
        // Through the store's own encoding, as an entry of a concord log carries it.
        let encoded = request_of(op).encode();
        let command = Command::decode(&encoded).expect("a command decodes as encoded");
        self.apply_command(index, &command)
    }

    /// Applies an entry in a concord member's format (`envelope` around the store's
    /// command, see [`entry_for`]): the proposing node and request id, and the outcome.
    /// `None` for an entry of another format.
    pub fn apply_entry(&mut self, index: Index, data: &[u8]) -> Option<(u64, u64, Outcome)> {
        let Ok(Envelope::Command { origin, request_id, command }) = envelope::decode(data) else {
            return None;
        };
        let command = Command::decode(command).expect("the simulator's commands decode");
        Some((origin, request_id, self.apply_command(index, &command)))
    }

    fn apply_command(&mut self, index: Index, command: &Command) -> Outcome {
        let applied = self
            .store
            .apply(index, command)
            .expect("the in-memory store applies")
            .unwrap_or_else(|| panic!("entry {index} is at or below the store's applied index"));
        self.events.extend(applied.events);
        // What each request of `request_of` is answered with.
        match applied.result {
            Ok(Response::Put(_)) => Outcome::Put,
            Ok(Response::DeleteRange(_)) => Outcome::Delete,
            Ok(Response::Txn(txn)) => Outcome::Cas(txn.succeeded),
            other => panic!("the store answered {command:?} with {other:?}"),
        }
    }

    /// The watch events of the entries applied since the last call, in revision order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The store's revision.
    pub fn current_revision(&self) -> i64 {
        self.store.current_revision()
    }

    /// A watcher's catch-up read from revision `from`, in small chunks (a few revisions,
    /// so that a catch-up takes several reads); `None` if `from` was compacted.
    pub fn events_chunk(&self, from: i64, resumed: bool) -> Option<EventChunk> {
        let limits = ChunkLimits { max_revisions: 3, max_bytes: 1 << 20 };
        match self.store.events_chunk(from, limits, resumed) {
            Ok(chunk) => Some(chunk),
            Err(MvccError::Compacted) => None,
            Err(error) => panic!("a catch-up read of the in-memory store failed: {error}"),
        }
    }

    /// A hash of what a client can observe: the revision, the compacted revision and
    /// every live key with its value, revisions, version and lease. Equal states at equal
    /// applied indexes must give equal digests on every node.
    pub fn digest(&self) -> u64 {
        let mut hash = FNV_OFFSET;
        hash = fnv1a(hash, &self.store.current_revision().to_le_bytes());
        hash = fnv1a(hash, &self.store.compacted_revision().to_le_bytes());
        let everything = RangeRequest { key: vec![0], range_end: vec![0], ..RangeRequest::default() };
        for kv in self.store.range(&everything).expect("a range of everything").kvs {
            hash = fnv1a(hash, &(kv.key.len() as u32).to_le_bytes());
            hash = fnv1a(hash, &kv.key);
            hash = fnv1a(hash, &(kv.value.len() as u32).to_le_bytes());
            hash = fnv1a(hash, &kv.value);
            for number in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
                hash = fnv1a(hash, &number.to_le_bytes());
            }
        }
        hash
    }

    /// The snapshot at applied `index`: the store's own snapshot stream, framed with the
    /// index, `padding` filler bytes (so that some seeds need many chunks) and a checksum
    /// over everything, as the plain map's snapshots are.
    pub fn encode_snapshot(&self, index: Index, padding: usize) -> Bytes {
        let mut stream = Vec::new();
        self.store.write_snapshot(&mut stream).expect("the in-memory store writes a snapshot");
        let mut out = BytesMut::with_capacity(32 + stream.len() + padding);
        out.put_slice(SNAPSHOT_MAGIC);
        out.put_u64_le(index);
        out.put_u32_le(stream.len() as u32);
        out.put_slice(&stream);
        out.put_u32_le(padding as u32);
        out.put_bytes(0xa5, padding);
        seal(out)
    }

    /// Restores a store from [`MvccMachine::encode_snapshot`]; returns the index it was
    /// taken at. Fails on any damage (the frame's checksum, or the stream's own checks).
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(Index, MvccMachine), String> {
        let mut reader = Reader::new(unseal(bytes)?);
        if reader.take(8)? != SNAPSHOT_MAGIC {
            return Err("bad magic".into());
        }
        let index = reader.u64()?;
        let stream_len = reader.u32()? as usize;
        let stream = reader.take(stream_len)?;
        let padding = reader.u32()? as usize;
        if reader.take(padding)?.iter().any(|&byte| byte != 0xa5) {
            return Err("filler bytes damaged".into());
        }
        if !reader.is_done() {
            return Err("trailing bytes".into());
        }
        let (store, meta) = Store::restore_snapshot_in_memory(stream).map_err(|e| e.to_string())?;
        if meta.applied_index > index {
            return Err(format!("the store in the snapshot of {index} has applied {}", meta.applied_index));
        }
        Ok((index, MvccMachine { store, events: Vec::new() }))
    }
}

/// The entry a concord member proposes for `op` on behalf of its client's request
/// `request_id`, as node `origin`: the envelope around the store's command.
pub fn entry_for(origin: u64, request_id: u64, op: &WriteOp) -> Bytes {
    envelope::encode_command(origin, request_id, &request_of(op).encode())
}

/// The etcd request a client sends for `op`.
fn request_of(op: &WriteOp) -> Command {
    let put = |key: &str, value: &str| PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    };
    match op {
        WriteOp::Put { key, value } => Command::Put(put(key, value)),
        WriteOp::Delete { key } => Command::DeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
            prev_kv: false,
        }),
        WriteOp::Cas { key, expected, new } => {
            // etcd's compare-and-set: the value equals, or the key does not exist
            // (version 0).
            let compare = match expected {
                Some(value) => Compare::value(key.as_bytes(), CompareResult::Equal, value.as_bytes()),
                None => Compare::version(key.as_bytes(), CompareResult::Equal, 0),
            };
            Command::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp::Put(put(key, new))],
                failure: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::KvStore;

    fn ops() -> Vec<WriteOp> {
        let cas = |expected: Option<&str>, new: &str| WriteOp::Cas {
            key: "k".into(),
            expected: expected.map(String::from),
            new: new.into(),
        };
        vec![
            cas(Some("x"), "a"),
            cas(None, "a"),
            cas(None, "b"),
            cas(Some("a"), "b"),
            WriteOp::Put { key: "j".into(), value: "1".into() },
            WriteOp::Delete { key: "k".into() },
            cas(None, "c"),
            WriteOp::Delete { key: "absent".into() },
        ]
    }

    #[test]
    fn answers_as_the_plain_map_does() {
        let (mut map, mut mvcc) = (KvStore::default(), MvccMachine::default());
        for (i, op) in ops().iter().enumerate() {
            assert_eq!(mvcc.apply(i as u64 + 1, op), map.apply(op), "{op:?}");
            for key in ["k", "j", "absent"] {
                assert_eq!(mvcc.get(key), map.get(key), "{key} after {op:?}");
            }
        }
    }

    #[test]
    fn entries_carry_the_proposer_and_request_id_in_a_members_envelope() {
        let mut mvcc = MvccMachine::default();
        let op = WriteOp::Cas { key: "k".into(), expected: None, new: "v".into() };
        let entry = entry_for(3, 77, &op);
        assert_eq!(mvcc.apply_entry(1, &entry), Some((3, 77, Outcome::Cas(true))));
        assert_eq!(mvcc.apply_entry(2, &entry), Some((3, 77, Outcome::Cas(false))), "the key exists now");
        assert_eq!(mvcc.apply_entry(3, b"p 1"), None, "not a member's entry");
    }

    #[test]
    fn snapshots_round_trip_with_the_same_digest_and_damage_is_detected() {
        let mut mvcc = MvccMachine::default();
        for (i, op) in ops().iter().enumerate() {
            mvcc.apply(i as u64 + 1, op);
        }
        for padding in [0, 300] {
            let bytes = mvcc.encode_snapshot(12, padding);
            let (index, restored) = MvccMachine::decode_snapshot(&bytes).unwrap();
            assert_eq!(index, 12);
            assert_eq!(restored.digest(), mvcc.digest());
            assert_eq!(restored.get("j").as_deref(), Some("1"));
            let mut damaged = bytes.to_vec();
            damaged[bytes.len() / 2] ^= 1;
            assert!(MvccMachine::decode_snapshot(&damaged).is_err());
            assert!(MvccMachine::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        }
        // The digest sees revisions, not only values: a put of the same value moves it.
        let before = mvcc.digest();
        mvcc.apply(20, &WriteOp::Put { key: "j".into(), value: "1".into() });
        assert_ne!(mvcc.digest(), before);
    }
}
