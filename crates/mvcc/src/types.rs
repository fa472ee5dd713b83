//! Plain Rust mirrors of etcd's request, response and data messages.
//!
//! This crate must not depend on gRPC or protobuf code, so it defines its own types, one per
//! etcd message (`mvccpb.KeyValue`, `etcdserverpb.RangeRequest`, ...), with the same fields
//! and the same meaning; the server converts field by field. Response headers are reduced
//! to the one field this crate knows, `revision` (etcd's `header.revision`); the server fills
//! in cluster id, member id and raft term. Requests derive `serde` because they travel
//! inside [`Command`](crate::Command) through the Raft log.

use serde::{Deserialize, Serialize};

/// etcd's `mvccpb.KeyValue`: one version of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the Put that last created the key (after it did not exist).
    pub create_revision: i64,
    /// Revision of the last change of the key.
    pub mod_revision: i64,
    /// 1 at creation, +1 on every Put; a delete resets the count.
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// Kind of a watch event (`mvccpb.Event.EventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change produced by applying a command (`mvccpb.Event`), in revision order.
///
/// For a `Put`, `kv` is the new version. For a `Delete`, `kv` holds only the key and
/// `mod_revision` = the revision of the deletion, as etcd sends it. `prev_kv` is the version
/// the change replaced (`None` if the key did not exist); watchers that did not ask for
/// `prev_kv` should drop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// `RangeRequest.SortOrder`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// `RangeRequest.SortTarget`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// `etcdserverpb.RangeRequest`.
///
/// `range_end`: empty = only `key`; `[0]` (`"\0"`) = every key `>= key`; otherwise the
/// half-open range `[key, range_end)` (see [`prefix_end`](crate::prefix_end)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Maximum number of kvs returned; 0 = no limit.
    pub limit: i64,
    /// Point in time to read at; `<= 0` = the current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Served locally without ReadIndex; this crate ignores it (the server decides).
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    /// 0 = no bound.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// `header.revision`: the store's revision when the read was served (not the revision
    /// read at).
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More kvs than `limit` matched (after the min/max filters).
    pub more: bool,
    /// Every key in the range at the read revision, regardless of limit and filters.
    pub count: i64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

/// `etcdserverpb.PutResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.DeleteRangeRequest` (`range_end` as in [`RangeRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

/// `etcdserverpb.DeleteRangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// `etcdserverpb.RequestOp`: one operation of a Txn branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// `etcdserverpb.ResponseOp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// `Compare.CompareResult`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareResult {
    #[default]
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// `Compare.CompareTarget`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareTarget {
    #[default]
    Version,
    Create,
    Mod,
    Value,
    Lease,
}

/// `Compare.target_union`. As in etcd, a union variant that does not match `target`
/// compares as 0 (or the empty value).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TargetUnion {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// `etcdserverpb.Compare`: `<target of key(s)> <result> <target_union>`.
///
/// With a `range_end`, every key in the range must satisfy it; when no key exists the
/// compare is made against a zero KeyValue, except a `Value` compare, which then fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub target_union: Option<TargetUnion>,
    pub range_end: Vec<u8>,
}

impl Compare {
    /// `version(key) <result> v`.
    pub fn version(key: impl Into<Vec<u8>>, result: CompareResult, v: i64) -> Compare {
        Compare::with(key, result, CompareTarget::Version, TargetUnion::Version(v))
    }
    /// `create_revision(key) <result> rev`.
    pub fn create_revision(key: impl Into<Vec<u8>>, result: CompareResult, rev: i64) -> Compare {
        Compare::with(key, result, CompareTarget::Create, TargetUnion::CreateRevision(rev))
    }
    /// `mod_revision(key) <result> rev`.
    pub fn mod_revision(key: impl Into<Vec<u8>>, result: CompareResult, rev: i64) -> Compare {
        Compare::with(key, result, CompareTarget::Mod, TargetUnion::ModRevision(rev))
    }
    /// `value(key) <result> value`.
    pub fn value(key: impl Into<Vec<u8>>, result: CompareResult, value: impl Into<Vec<u8>>) -> Compare {
        Compare::with(key, result, CompareTarget::Value, TargetUnion::Value(value.into()))
    }
    /// `lease(key) <result> id`.
    pub fn lease(key: impl Into<Vec<u8>>, result: CompareResult, id: i64) -> Compare {
        Compare::with(key, result, CompareTarget::Lease, TargetUnion::Lease(id))
    }
    /// The same compare over every key in `[key, range_end)`.
    pub fn with_range_end(mut self, range_end: impl Into<Vec<u8>>) -> Compare {
        self.range_end = range_end.into();
        self
    }

    fn with(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget, union: TargetUnion) -> Compare {
        Compare { result, target, key: key.into(), target_union: Some(union), range_end: Vec::new() }
    }
}

/// `etcdserverpb.TxnRequest`: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// The store's revision after the Txn (one more than before iff it wrote something).
    pub revision: i64,
    pub succeeded: bool,
    /// One response per op of the branch that ran, in order.
    pub responses: Vec<ResponseOp>,
}

/// `etcdserverpb.CompactionRequest`. Compaction here is always physical: `physical` is
/// carried for the server (which may wait on it) and otherwise ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompactionRequest {
    pub revision: i64,
    pub physical: bool,
}

/// `etcdserverpb.CompactionResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionResponse {
    pub revision: i64,
}

/// `etcdserverpb.LeaseGrantRequest` after the server picked the id (never 0 here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    pub id: i64,
    /// Seconds; the server applies etcd's minimum-TTL rule before proposing.
    pub ttl: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    pub revision: i64,
    pub id: i64,
    pub ttl: i64,
}

/// `etcdserverpb.LeaseRevokeRequest` (also used for expiry, which the leader proposes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRevokeRequest {
    pub id: i64,
}

/// The leader's decision that a lease expired: a revoke that counts only if the entry
/// carrying it was appended in `term`, the term in which the proposer led and decided
/// (the server refuses it at apply otherwise, so a deposed or stale leader never revokes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseExpireRequest {
    pub id: i64,
    pub term: u64,
}

/// The leader's record of how long leases have left, so that its successor continues from
/// there instead of granting every lease its full TTL again. Like [`LeaseExpireRequest`], it
/// counts only in an entry of `term`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseCheckpointRequest {
    pub term: u64,
    pub checkpoints: Vec<LeaseCheckpoint>,
}

/// One lease's remaining TTL in seconds; 0 (or the full TTL) clears an earlier checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseCheckpoint {
    pub id: i64,
    pub remaining_ttl: i64,
}

/// `etcdserverpb.LeaseRevokeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    pub revision: i64,
}

/// A granted lease and the keys attached to it (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
    /// The remaining TTL the last checkpoint recorded, if one is in force (`None`: the
    /// lease has its whole TTL ahead of it when a new leader takes over).
    pub remaining: Option<i64>,
    pub keys: Vec<Vec<u8>>,
}

/// Answer of [`Store::hash_kv`](crate::Store::hash_kv) (`HashKVResponse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HashKv {
    /// CRC-32C over every version kept at or below `hash_revision`.
    pub hash: u32,
    /// The compacted revision when the hash was taken (-1 if never compacted).
    pub compact_revision: i64,
    /// The revision the hash covers up to (the current one when 0 was asked).
    pub hash_revision: i64,
}

/// Sizes of the store's contents (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StoreStats {
    /// Live keys.
    pub keys: u64,
    /// Stored versions of all keys, tombstones included (what compaction shrinks).
    pub versions: u64,
    /// Granted leases.
    pub leases: u64,
}
