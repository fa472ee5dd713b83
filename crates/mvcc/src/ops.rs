//! Put and DeleteRange as etcd applies them (3.4 `applierV3backend.Put/DeleteRange`),
//! shared by the top-level commands and the ops inside a Txn.

use crate::error::MvccError;
use crate::keyrange::KeyBounds;
use crate::types::{DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse};
use crate::validate::{validate_delete_range, validate_put};
use crate::write::Writer;

/// A top-level Put: request checks, then the lease must exist, then [`put`].
pub(crate) fn apply_put(w: &mut Writer<'_>, req: &PutRequest) -> Result<PutResponse, MvccError> {
    validate_put(req)?;
    if req.lease != 0 && !w.lease_exists(req.lease)? {
        return Err(MvccError::LeaseNotFound);
    }
    put(w, req)
}

/// Writes the Put; `ignore_value`/`ignore_lease` take the live version's value/lease and
/// fail with `KeyNotFound` (before writing) when there is none.
pub(crate) fn put(w: &mut Writer<'_>, req: &PutRequest) -> Result<PutResponse, MvccError> {
    let ignoring = req.ignore_value || req.ignore_lease;
    let prev = if ignoring || req.prev_kv { w.reader().latest(&req.key)? } else { None };
    let (value, lease) = match &prev {
        None if ignoring => return Err(MvccError::KeyNotFound),
        Some(p) => {
            (if req.ignore_value { &p.value } else { &req.value }, if req.ignore_lease { p.lease } else { req.lease })
        }
        None => (&req.value, req.lease),
    };
    w.put(&req.key, value, lease)?;
    Ok(PutResponse { revision: w.view_rev(), prev_kv: if req.prev_kv { prev } else { None } })
}

/// Deletes every live key in the request's range; the revision moves only if one was.
pub(crate) fn delete_range(w: &mut Writer<'_>, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
    validate_delete_range(req)?;
    let (deleted, prev_kvs) = w.delete_range(KeyBounds::new(&req.key, &req.range_end), req.prev_kv)?;
    Ok(DeleteRangeResponse { revision: w.view_rev(), deleted: i64::try_from(deleted).unwrap_or(i64::MAX), prev_kvs })
}
