//! The replicated state machine of the simulated cluster: a plain ordered map, with the
//! snapshot format the simulated nodes store and send, and a digest to compare states.
//!
//! Apply is deterministic (a `BTreeMap`, no clocks), so every node that applies the same
//! entries holds the same map; the outcome of each write (notably whether a CAS took
//! effect) is decided here, at apply time, on the node that answers the client.
//!
//! A snapshot is the map at an applied index, in a checksummed binary form, optionally
//! followed by filler bytes (so that some seeds need many chunks to send one): any
//! damage in staging, transfer or storage shows up as a checksum or framing error when
//! the snapshot is restored.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use concord_check::Outcome;
use concord_raft::Index;

use crate::command::WriteOp;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<String, String>,
}

/// Leads every snapshot this simulator writes.
const SNAPSHOT_MAGIC: &[u8; 8] = b"csimsnp1";

/// FNV-1a, 64 bits: a stable hash that needs no dependency.
pub(crate) fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3))
}

pub(crate) const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

impl KvStore {
    pub fn get(&self, key: &str) -> Option<String> {
        self.map.get(key).cloned()
    }

    /// Applies one write and returns what its client is told.
    pub fn apply(&mut self, op: &WriteOp) -> Outcome {
        match op {
            WriteOp::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                Outcome::Put
            }
            WriteOp::Delete { key } => {
                self.map.remove(key);
                Outcome::Delete
            }
            WriteOp::Cas { key, expected, new } => {
                if self.map.get(key) == expected.as_ref() {
                    self.map.insert(key.clone(), new.clone());
                    Outcome::Cas(true)
                } else {
                    Outcome::Cas(false)
                }
            }
        }
    }

    /// A hash of the contents: two stores with the same digest hold the same map (for
    /// the purposes of the checks; a collision would only hide a difference).
    pub fn digest(&self) -> u64 {
        let mut hash = FNV_OFFSET;
        for (key, value) in &self.map {
            hash = fnv1a(hash, &(key.len() as u32).to_le_bytes());
            hash = fnv1a(hash, key.as_bytes());
            hash = fnv1a(hash, &(value.len() as u32).to_le_bytes());
            hash = fnv1a(hash, value.as_bytes());
        }
        hash
    }

    /// The snapshot of this store at applied `index`, followed by `padding` filler bytes.
    pub fn encode_snapshot(&self, index: Index, padding: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + padding + self.map.len() * 24);
        out.put_slice(SNAPSHOT_MAGIC);
        out.put_u64_le(index);
        out.put_u32_le(self.map.len() as u32);
        for (key, value) in &self.map {
            out.put_u32_le(key.len() as u32);
            out.put_slice(key.as_bytes());
            out.put_u32_le(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u32_le(padding as u32);
        for offset in 0..padding {
            out.put_u8(filler(index, offset));
        }
        seal(out)
    }

    /// Restores a store from [`KvStore::encode_snapshot`]; returns the index it was taken
    /// at. Fails on any damage.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(Index, KvStore), String> {
        let body = unseal(bytes)?;
        let mut reader = Reader::new(body);
        if reader.take(8)? != SNAPSHOT_MAGIC {
            return Err("bad magic".into());
        }
        let index = reader.u64()?;
        let count = reader.u32()?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = reader.string()?;
            let value = reader.string()?;
            map.insert(key, value);
        }
        let padding = reader.u32()? as usize;
        let filler_bytes = reader.take(padding)?;
        if filler_bytes.iter().enumerate().any(|(offset, &byte)| byte != filler(index, offset)) {
            return Err("filler bytes damaged".into());
        }
        if reader.at != body.len() {
            return Err(format!("{} trailing bytes", body.len() - reader.at));
        }
        Ok((index, KvStore { map }))
    }
}

/// Which state machine the simulated nodes run (`--state-machine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StateMachineKind {
    /// The plain map above: small and fast, for the consensus core alone.
    #[default]
    Map,
    /// The product's store, concord-mvcc ([`crate::mvcc_machine`]).
    Mvcc,
}

impl StateMachineKind {
    pub fn name(self) -> &'static str {
        match self {
            StateMachineKind::Map => "map",
            StateMachineKind::Mvcc => "mvcc",
        }
    }
}

impl std::fmt::Display for StateMachineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StateMachineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "map" => Ok(StateMachineKind::Map),
            "mvcc" => Ok(StateMachineKind::Mvcc),
            _ => Err(format!("unknown state machine {s:?}; expected map or mvcc")),
        }
    }
}

/// A node's state machine, of either kind, behind one interface.
#[derive(Debug)]
pub enum StateMachine {
    Map(KvStore),
    Mvcc(Box<crate::mvcc_machine::MvccMachine>),
}

impl StateMachine {
    /// An empty state machine of `kind`.
    pub fn empty(kind: StateMachineKind) -> Self {
        match kind {
            StateMachineKind::Map => StateMachine::Map(KvStore::default()),
            StateMachineKind::Mvcc => StateMachine::Mvcc(Box::default()),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        match self {
            StateMachine::Map(map) => map.get(key),
            StateMachine::Mvcc(mvcc) => mvcc.get(key),
        }
    }

    /// Applies the write of the entry at `index`; what its client is told.
    pub fn apply(&mut self, index: Index, op: &WriteOp) -> Outcome {
        match self {
            StateMachine::Map(map) => map.apply(op),
            StateMachine::Mvcc(mvcc) => mvcc.apply(index, op),
        }
    }

    pub fn digest(&self) -> u64 {
        match self {
            StateMachine::Map(map) => map.digest(),
            StateMachine::Mvcc(mvcc) => mvcc.digest(),
        }
    }

    pub fn encode_snapshot(&self, index: Index, padding: usize) -> Bytes {
        match self {
            StateMachine::Map(map) => map.encode_snapshot(index, padding),
            StateMachine::Mvcc(mvcc) => mvcc.encode_snapshot(index, padding),
        }
    }

    /// Restores a state machine of `kind` from its snapshot; the index it was taken at.
    pub fn decode_snapshot(kind: StateMachineKind, bytes: &[u8]) -> Result<(Index, StateMachine), String> {
        match kind {
            StateMachineKind::Map => KvStore::decode_snapshot(bytes).map(|(i, map)| (i, StateMachine::Map(map))),
            StateMachineKind::Mvcc => crate::mvcc_machine::MvccMachine::decode_snapshot(bytes)
                .map(|(i, mvcc)| (i, StateMachine::Mvcc(Box::new(mvcc)))),
        }
    }
}

/// Ends a snapshot the simulator writes: a checksum over everything before it, so that
/// any damage in staging, transfer or storage shows when it is read back.
pub(crate) fn seal(mut out: BytesMut) -> Bytes {
    let checksum = fnv1a(FNV_OFFSET, &out);
    out.put_u64_le(checksum);
    out.freeze()
}

/// The body of a [`seal`]ed snapshot, if its checksum holds.
pub(crate) fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    let body_len = bytes.len().checked_sub(8).ok_or_else(|| format!("{} bytes is too short", bytes.len()))?;
    let (body, checksum) = bytes.split_at(body_len);
    let expected = u64::from_le_bytes(checksum.try_into().expect("8 bytes"));
    let actual = fnv1a(FNV_OFFSET, body);
    if expected != actual {
        return Err(format!("checksum mismatch over {} bytes ({actual:#x}, stored {expected:#x})", bytes.len()));
    }
    Ok(body)
}

/// The filler byte at `offset` of a snapshot at `index`: varies, so that a chunk put at
/// the wrong offset is noticed.
fn filler(index: Index, offset: usize) -> u8 {
    (index.wrapping_mul(31).wrapping_add(offset as u64 * 7) % 251) as u8
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len()).ok_or("truncated")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_compares_with_the_current_value_or_absence() {
        let mut kv = KvStore::default();
        let cas = |expected: Option<&str>, new: &str| WriteOp::Cas {
            key: "k".into(),
            expected: expected.map(String::from),
            new: new.into(),
        };
        assert_eq!(kv.apply(&cas(Some("x"), "a")), Outcome::Cas(false));
        assert_eq!(kv.apply(&cas(None, "a")), Outcome::Cas(true));
        assert_eq!(kv.apply(&cas(None, "b")), Outcome::Cas(false));
        assert_eq!(kv.apply(&cas(Some("a"), "b")), Outcome::Cas(true));
        assert_eq!(kv.get("k").as_deref(), Some("b"));
        kv.apply(&WriteOp::Delete { key: "k".into() });
        assert_eq!(kv.get("k"), None);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut kv = KvStore::default();
        kv.apply(&WriteOp::Put { key: "k1".into(), value: "c1-1".into() });
        kv.apply(&WriteOp::Put { key: "k0".into(), value: "c2-7".into() });
        for padding in [0, 1, 300] {
            let bytes = kv.encode_snapshot(42, padding);
            let (index, restored) = KvStore::decode_snapshot(&bytes).unwrap();
            assert_eq!((index, &restored), (42, &kv));
            assert_eq!(restored.digest(), kv.digest());
            for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
                assert!(KvStore::decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut} decoded");
            }
            let mut damaged = bytes.to_vec();
            damaged[bytes.len() / 2] ^= 1;
            assert!(KvStore::decode_snapshot(&damaged).is_err());
        }
        assert_ne!(KvStore::default().digest(), kv.digest());
    }
}
