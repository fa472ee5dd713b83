//! Request checks that etcd makes in its gRPC layer, before a request enters the log.
//!
//! The server calls these on every client request (they are pure), so that a bad request
//! is refused with etcd's error before it costs a Raft round. [`validate_txn`] ports etcd's
//! `checkTxnRequest` and `checkIntervals` exactly, including their limits: the op budget
//! of a nested Txn is what its parent left, a Put may appear in both branches of one nested
//! Txn, and a DeleteRange whose `range_end` is `"\0"` is not seen as overlapping anything
//! (etcd compares it as the literal interval `[key, "\0")`). Applying such a Txn is still
//! safe here: the ops run in order (see [`Writer`](crate::write) for the rollback case).

use std::collections::HashSet;

use crate::error::MvccError;
use crate::types::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// etcd's `checkRangeRequest`.
pub fn validate_range(req: &RangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn validate_put(req: &PutRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub fn validate_delete_range(req: &DeleteRangeRequest) -> Result<(), MvccError> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// etcd's Txn checks: op counts (`TooManyOps`), empty keys, each op's own checks, then
/// writes to one key twice (`DuplicateKey`) in the success and in the failure branch.
pub fn validate_txn(req: &TxnRequest, max_ops: usize) -> Result<(), MvccError> {
    check_txn(req, i64::try_from(max_ops).unwrap_or(i64::MAX))?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn(req: &TxnRequest, max_ops: i64) -> Result<(), MvccError> {
    let opc = req.compare.len().max(req.success.len()).max(req.failure.len());
    let opc = i64::try_from(opc).unwrap_or(i64::MAX);
    if opc > max_ops {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => validate_range(r)?,
            RequestOp::Put(p) => validate_put(p)?,
            RequestOp::DeleteRange(d) => validate_delete_range(d)?,
            RequestOp::Txn(t) => check_txn(t, max_ops - opc)?,
        }
    }
    Ok(())
}

/// A deleted interval `[begin, end)` as etcd's `StringAffineInterval`: an empty `end`
/// is +infinity; a point `k` is `[k, k + "\0")`.
#[derive(Clone)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn contains_point(&self, k: &[u8]) -> bool {
        // [begin, end) intersects [k, k+"\0")  <=>  begin <= k && k < end
        self.begin.as_slice() <= k && (self.end.is_empty() || k < self.end.as_slice())
    }
}

fn intersects(dels: &[Interval], k: &[u8]) -> bool {
    dels.iter().any(|iv| iv.contains_point(k))
}

/// etcd's `checkIntervals`: returns this list's puts and deletes for the parent's check.
fn check_intervals(reqs: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>), MvccError> {
    let mut dels: Vec<Interval> = Vec::new();
    for op in reqs {
        if let RequestOp::DeleteRange(d) = op {
            let end = if d.range_end.is_empty() {
                let mut e = d.key.clone();
                e.push(0);
                e
            } else {
                d.range_end.clone()
            };
            dels.push(Interval { begin: d.key.clone(), end });
        }
    }

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in reqs {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || intersects(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in &puts_else {
            // A key put in both branches is fine: only one branch runs.
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(MvccError::DuplicateKey);
            }
            if intersects(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
        }
        puts.extend(puts_else);
        // etcd unions the children's deletes that meet ["\0", +inf); the others (ranges
        // ending at "\0") contain no point, so keeping them changes nothing.
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for op in reqs {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || intersects(&dels, &p.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
