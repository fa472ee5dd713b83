//! etcd's protobuf KV messages to and from concord-mvcc's plain types.
//!
//! Unknown enum values (a newer client) are refused with InvalidArgument rather than
//! guessed at.

use concord_api::{etcdserverpb as pb, mvccpb};
use concord_mvcc as mvcc;
use tonic::Status;

fn bad_enum(what: &str, value: i32) -> Status {
    Status::invalid_argument(format!("concord: unknown {what} {value}"))
}

pub fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_from_pb(r: pb::RangeRequest) -> Result<mvcc::RangeRequest, Status> {
    let sort_order = match r.sort_order {
        0 => mvcc::SortOrder::None,
        1 => mvcc::SortOrder::Ascend,
        2 => mvcc::SortOrder::Descend,
        other => return Err(bad_enum("sort order", other)),
    };
    let sort_target = match r.sort_target {
        0 => mvcc::SortTarget::Key,
        1 => mvcc::SortTarget::Version,
        2 => mvcc::SortTarget::Create,
        3 => mvcc::SortTarget::Mod,
        4 => mvcc::SortTarget::Value,
        other => return Err(bad_enum("sort target", other)),
    };
    Ok(mvcc::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_to_pb(r: mvcc::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(pb::ResponseHeader { revision: r.revision, ..header }),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_from_pb(r: pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_to_pb(r: mvcc::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(pb::ResponseHeader { revision: r.revision, ..header }),
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

pub fn delete_from_pb(r: pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
}

pub fn delete_to_pb(r: mvcc::DeleteRangeResponse, header: pb::ResponseHeader) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(pb::ResponseHeader { revision: r.revision, ..header }),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn compare_from_pb(c: pb::Compare) -> Result<mvcc::Compare, Status> {
    use pb::compare::TargetUnion as T;
    let result = match c.result {
        0 => mvcc::CompareResult::Equal,
        1 => mvcc::CompareResult::Greater,
        2 => mvcc::CompareResult::Less,
        3 => mvcc::CompareResult::NotEqual,
        other => return Err(bad_enum("compare result", other)),
    };
    let target = match c.target {
        0 => mvcc::CompareTarget::Version,
        1 => mvcc::CompareTarget::Create,
        2 => mvcc::CompareTarget::Mod,
        3 => mvcc::CompareTarget::Value,
        4 => mvcc::CompareTarget::Lease,
        other => return Err(bad_enum("compare target", other)),
    };
    let target_union = c.target_union.map(|u| match u {
        T::Version(v) => mvcc::TargetUnion::Version(v),
        T::CreateRevision(v) => mvcc::TargetUnion::CreateRevision(v),
        T::ModRevision(v) => mvcc::TargetUnion::ModRevision(v),
        T::Value(v) => mvcc::TargetUnion::Value(v),
        T::Lease(v) => mvcc::TargetUnion::Lease(v),
    });
    Ok(mvcc::Compare { result, target, key: c.key, target_union, range_end: c.range_end })
}

fn op_from_pb(op: pb::RequestOp) -> Result<mvcc::RequestOp, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => Ok(mvcc::RequestOp::Range(range_from_pb(r)?)),
        Some(R::RequestPut(r)) => Ok(mvcc::RequestOp::Put(put_from_pb(r))),
        Some(R::RequestDeleteRange(r)) => Ok(mvcc::RequestOp::DeleteRange(delete_from_pb(r))),
        Some(R::RequestTxn(r)) => Ok(mvcc::RequestOp::Txn(txn_from_pb(r)?)),
        None => Err(Status::invalid_argument("concord: empty request op in txn")),
    }
}

pub fn txn_from_pb(t: pb::TxnRequest) -> Result<mvcc::TxnRequest, Status> {
    Ok(mvcc::TxnRequest {
        compare: t.compare.into_iter().map(compare_from_pb).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op_from_pb).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op_from_pb).collect::<Result<_, _>>()?,
    })
}

fn op_to_pb(op: mvcc::ResponseOp, header: pb::ResponseHeader) -> pb::ResponseOp {
    use pb::response_op::Response as R;
    let response = match op {
        mvcc::ResponseOp::Range(r) => R::ResponseRange(range_to_pb(r, header)),
        mvcc::ResponseOp::Put(r) => R::ResponsePut(put_to_pb(r, header)),
        mvcc::ResponseOp::DeleteRange(r) => R::ResponseDeleteRange(delete_to_pb(r, header)),
        mvcc::ResponseOp::Txn(r) => R::ResponseTxn(txn_to_pb(r, header)),
    };
    pb::ResponseOp { response: Some(response) }
}

pub fn txn_to_pb(t: mvcc::TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    let header = pb::ResponseHeader { revision: t.revision, ..header };
    pb::TxnResponse {
        header: Some(header),
        succeeded: t.succeeded,
        responses: t.responses.into_iter().map(|op| op_to_pb(op, header)).collect(),
    }
}
