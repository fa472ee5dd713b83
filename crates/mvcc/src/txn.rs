//! Txn: compares, then one branch of ops, atomically, at one revision.
//!
//! This follows etcd 3.4 (`applierV3backend.Txn`) step by step, quirks included:
//!
//! 1. The compares of the Txn *and of every nested Txn on the chosen path* are evaluated
//!    first, all against the state before the Txn (`compareToPath`). A nested Txn's
//!    compares therefore do not see the writes of the ops before it.
//! 2. Checks against that same state, all Puts of the path first (`ignore_*` needs a live
//!    key; a lease must exist), then all Ranges (revision not compacted, not in the future).
//!    A failed check fails the whole Txn before anything is written.
//! 3. The ops run in order; reads see the Txn's own earlier writes and report the revision
//!    the Txn will have (current + 1 once something was written).

use crate::error::MvccError;
use crate::keyrange::KeyBounds;
use crate::ops;
use crate::range;
use crate::read::{At, Reader, RevRead};
use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RequestOp, ResponseOp, TargetUnion, TxnRequest, TxnResponse,
};
use crate::validate::{validate_delete_range, validate_put, validate_range};
use crate::write::Writer;

/// etcd's `isTxnReadonly`: every op of both branches is a Range (a nested Txn counts as a
/// write). Such a Txn needs no log entry: it is served from one read snapshot.
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| matches!(op, RequestOp::Range(_)))
}

/// Whether a read-only Txn may skip the ReadIndex barrier: it has Ranges and every one is
/// serializable. (etcd also skips it for a Txn with no op at all; concord does not: a
/// compare-only Txn is a check, and a stale answer to a check is a trap.)
pub fn is_serializable(req: &TxnRequest) -> bool {
    let mut ops = req.success.iter().chain(&req.failure).peekable();
    ops.peek().is_some() && ops.all(|op| matches!(op, RequestOp::Range(r) if r.serializable))
}

/// Evaluates a read-only Txn (see [`is_read_only`]) against one snapshot: the compares,
/// then etcd's checks of the chosen branch's Ranges, then the Ranges, all at `revision`.
pub(crate) fn read_only_txn<R: RevRead>(
    reader: &Reader<'_, R>,
    req: &TxnRequest,
    revision: i64,
    compacted: i64,
) -> Result<TxnResponse, MvccError> {
    assert!(is_read_only(req), "a Txn with writes must go through the log");
    let mut succeeded = true;
    for c in &req.compare {
        if !compare(reader, c)? {
            succeeded = false;
            break;
        }
    }
    let ranges = || {
        branch(req, succeeded).iter().filter_map(|op| match op {
            RequestOp::Range(r) => Some(r),
            _ => None,
        })
    };
    for r in ranges() {
        validate_range(r)?;
    }
    for r in ranges() {
        check_range_revision(r, revision, compacted)?;
    }
    let responses = ranges()
        .map(|r| range::range(reader, r, revision, compacted).map(ResponseOp::Range))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TxnResponse { revision, succeeded, responses })
}

/// etcd's `checkRange`: a Range at a revision must be neither in the future nor compacted.
fn check_range_revision(r: &crate::types::RangeRequest, view_rev: i64, compacted: i64) -> Result<(), MvccError> {
    if r.revision == 0 {
        return Ok(());
    }
    if r.revision > view_rev {
        return Err(MvccError::FutureRevision);
    }
    if r.revision < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(())
}

pub(crate) fn apply_txn(w: &mut Writer<'_>, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
    let mut path = Vec::new();
    compare_path(&w.reader(), req, &mut path)?;
    check(w, req, &path, &mut 0, Pass::Shape)?;
    check(w, req, &path, &mut 0, Pass::Put)?;
    check(w, req, &path, &mut 0, Pass::Range)?;
    execute(w, req, &path, &mut 0)
}

/// Outcome of the compares of `req` and of every nested Txn on the chosen path, in
/// pre-order (etcd's `txnPath`).
fn compare_path<R: RevRead>(reader: &Reader<'_, R>, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
    let mut ok = true;
    for c in &req.compare {
        if !compare(reader, c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    for op in branch(req, ok) {
        if let RequestOp::Txn(nested) = op {
            compare_path(reader, nested, path)?;
        }
    }
    Ok(())
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// etcd's `applyCompare`: every live key in the range must satisfy the compare; with no key,
/// a zero KeyValue is compared, except that a Value compare then fails.
pub(crate) fn compare<R: RevRead>(reader: &Reader<'_, R>, c: &Compare) -> Result<bool, MvccError> {
    let mut any = false;
    let mut all = true;
    reader.visit(KeyBounds::new(&c.key, &c.range_end), At::Current, false, |key, main, sub| {
        any = true;
        let kv = reader.kv_of(key, main, sub)?.unwrap_or_default();
        if !compare_kv(c, &kv) {
            all = false;
            return Ok(false);
        }
        Ok(true)
    })?;
    if !any {
        if c.target == CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(all)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match c.target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        CompareTarget::Version => kv.version.cmp(&int_target(c, CompareTarget::Version)),
        CompareTarget::Create => kv.create_revision.cmp(&int_target(c, CompareTarget::Create)),
        CompareTarget::Mod => kv.mod_revision.cmp(&int_target(c, CompareTarget::Mod)),
        CompareTarget::Lease => kv.lease.cmp(&int_target(c, CompareTarget::Lease)),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// The integer of the union when it matches `target`, else 0 (as etcd's type switch).
fn int_target(c: &Compare, target: CompareTarget) -> i64 {
    match (&c.target_union, target) {
        (Some(TargetUnion::Version(v)), CompareTarget::Version)
        | (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create)
        | (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod)
        | (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
        _ => 0,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The gRPC-layer request checks (empty key, value/lease provided), which a server
    /// may have skipped.
    Shape,
    /// etcd's `checkPut`.
    Put,
    /// etcd's `checkRange`.
    Range,
}

/// Runs one pass of checks over the ops on the path (etcd's `checkRequests`).
fn check(w: &Writer<'_>, req: &TxnRequest, path: &[bool], idx: &mut usize, pass: Pass) -> Result<(), MvccError> {
    let ok = path[*idx];
    *idx += 1;
    for op in branch(req, ok) {
        match (op, pass) {
            (RequestOp::Txn(nested), _) => check(w, nested, path, idx, pass)?,
            (RequestOp::Put(p), Pass::Shape) => validate_put(p)?,
            (RequestOp::DeleteRange(d), Pass::Shape) => validate_delete_range(d)?,
            (RequestOp::Range(r), Pass::Shape) => validate_range(r)?,
            (RequestOp::Put(p), Pass::Put) => {
                if (p.ignore_value || p.ignore_lease) && w.reader().latest(&p.key)?.is_none() {
                    return Err(MvccError::KeyNotFound);
                }
                if p.lease != 0 && !w.lease_exists(p.lease)? {
                    return Err(MvccError::LeaseNotFound);
                }
            }
            (RequestOp::Range(r), Pass::Range) => check_range_revision(r, w.view_rev(), w.compacted)?,
            _ => {}
        }
    }
    Ok(())
}

fn execute(w: &mut Writer<'_>, req: &TxnRequest, path: &[bool], idx: &mut usize) -> Result<TxnResponse, MvccError> {
    let succeeded = path[*idx];
    *idx += 1;
    let ops = branch(req, succeeded);
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let resp = match op {
            RequestOp::Range(r) => ResponseOp::Range(range::range(&w.reader(), r, w.view_rev(), w.compacted)?),
            RequestOp::Put(p) => ResponseOp::Put(ops::put(w, p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(ops::delete_range(w, d)?),
            RequestOp::Txn(nested) => ResponseOp::Txn(execute(w, nested, path, idx)?),
        };
        responses.push(resp);
    }
    Ok(TxnResponse { revision: w.view_rev(), succeeded, responses })
}
