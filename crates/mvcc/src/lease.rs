//! Lease state: which leases exist, their TTL, and which keys hang on them.
//!
//! Only state lives here. When a lease expires is the server's business (its leader
//! proposes a LeaseExpire); keep-alives never reach the log. What does reach it is the
//! leader's checkpoint of a lease's remaining TTL, kept while it is below the full TTL, so
//! that a new leader continues from it. A Put with a lease attaches
//! the key (detaching it from its previous lease), a delete detaches it, and revoking a
//! lease deletes all its keys in one revision, in key order, as etcd's lessor does.

use redb::ReadableTable;

use crate::error::MvccError;
use crate::types::{
    Lease, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
};
use crate::write::Writer;

/// Largest TTL a lease may have, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

pub(crate) fn grant(w: &mut Writer<'_>, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse, MvccError> {
    // etcd's lessor answers a grant of the "no lease" id with ErrLeaseNotFound.
    if req.id == 0 {
        return Err(MvccError::LeaseNotFound);
    }
    if req.ttl > MAX_LEASE_TTL {
        return Err(MvccError::LeaseTtlTooLarge);
    }
    if w.leases.get(req.id)?.is_some() {
        return Err(MvccError::LeaseExists);
    }
    w.leases.insert(req.id, req.ttl)?;
    Ok(LeaseGrantResponse { revision: w.view_rev(), id: req.id, ttl: req.ttl })
}

pub(crate) fn revoke(w: &mut Writer<'_>, req: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, MvccError> {
    if w.leases.get(req.id)?.is_none() {
        return Err(MvccError::LeaseNotFound);
    }
    let keys = attached_keys(&w.lease_keys, req.id)?;
    for key in keys {
        w.delete(&key)?;
    }
    // Deleting detached every key; drop any stray attachment all the same.
    for key in attached_keys(&w.lease_keys, req.id)? {
        w.lease_keys.remove((req.id, key.as_slice()))?;
    }
    w.leases.remove(req.id)?;
    w.lease_remaining.remove(req.id)?;
    Ok(LeaseRevokeResponse { revision: w.view_rev() })
}

/// Records remaining TTLs; a remaining TTL of 0 or more than the lease's TTL clears the
/// lease's checkpoint (it has its whole TTL again). Unknown leases are skipped: a lease
/// revoked after the leader took its checkpoint.
pub(crate) fn checkpoint(w: &mut Writer<'_>, req: &LeaseCheckpointRequest) -> Result<(), MvccError> {
    for checkpoint in &req.checkpoints {
        let Some(ttl) = w.leases.get(checkpoint.id)?.map(|g| g.value()) else {
            continue;
        };
        if checkpoint.remaining_ttl <= 0 || checkpoint.remaining_ttl >= ttl {
            w.lease_remaining.remove(checkpoint.id)?;
        } else {
            w.lease_remaining.insert(checkpoint.id, checkpoint.remaining_ttl)?;
        }
    }
    Ok(())
}

/// Keys attached to lease `id`, in key order.
pub(crate) fn attached_keys<T: ReadableTable<(i64, &'static [u8]), ()>>(
    lease_keys: &T,
    id: i64,
) -> Result<Vec<Vec<u8>>, MvccError> {
    let mut keys = Vec::new();
    for entry in lease_keys.range((id, &b""[..])..)? {
        let (k, _) = entry?;
        let (lease, key) = k.value();
        if lease != id {
            break;
        }
        keys.push(key.to_vec());
    }
    Ok(keys)
}

/// Every lease, by id; with its attached keys if `with_keys`.
pub(crate) fn list<L, K, R>(leases: &L, lease_keys: &K, remaining: &R, with_keys: bool) -> Result<Vec<Lease>, MvccError>
where
    L: ReadableTable<i64, i64>,
    K: ReadableTable<(i64, &'static [u8]), ()>,
    R: ReadableTable<i64, i64>,
{
    let mut out = Vec::new();
    for entry in leases.iter()? {
        let (id, ttl) = entry?;
        let id = id.value();
        let keys = if with_keys { attached_keys(lease_keys, id)? } else { Vec::new() };
        out.push(Lease { id, ttl: ttl.value(), remaining: remaining.get(id)?.map(|g| g.value()), keys });
    }
    Ok(out)
}

/// One lease, if granted.
pub(crate) fn get<L, K, R>(leases: &L, lease_keys: &K, remaining: &R, id: i64) -> Result<Option<Lease>, MvccError>
where
    L: ReadableTable<i64, i64>,
    K: ReadableTable<(i64, &'static [u8]), ()>,
    R: ReadableTable<i64, i64>,
{
    let ttl = leases.get(id)?.map(|g| g.value());
    match ttl {
        None => Ok(None),
        Some(ttl) => Ok(Some(Lease {
            id,
            ttl,
            remaining: remaining.get(id)?.map(|g| g.value()),
            keys: attached_keys(lease_keys, id)?,
        })),
    }
}
