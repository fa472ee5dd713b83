//! Lease state: which leases exist, their TTL, and which keys hang on them.
//!
//! Only state lives here. When a lease expires is the server's business (its leader
//! proposes a LeaseRevoke); keep-alives never reach the log. A Put with a lease attaches
//! the key (detaching it from its previous lease), a delete detaches it, and revoking a
//! lease deletes all its keys in one revision, in key order, as etcd's lessor does.

use redb::ReadableTable;

use crate::error::MvccError;
use crate::types::{Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse};
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
    Ok(LeaseRevokeResponse { revision: w.view_rev() })
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

/// Every lease, by id.
pub(crate) fn list<L, K>(leases: &L, lease_keys: &K) -> Result<Vec<Lease>, MvccError>
where
    L: ReadableTable<i64, i64>,
    K: ReadableTable<(i64, &'static [u8]), ()>,
{
    let mut out = Vec::new();
    for entry in leases.iter()? {
        let (id, ttl) = entry?;
        let id = id.value();
        out.push(Lease { id, ttl: ttl.value(), keys: attached_keys(lease_keys, id)? });
    }
    Ok(out)
}

/// One lease, if granted.
pub(crate) fn get<L, K>(leases: &L, lease_keys: &K, id: i64) -> Result<Option<Lease>, MvccError>
where
    L: ReadableTable<i64, i64>,
    K: ReadableTable<(i64, &'static [u8]), ()>,
{
    let ttl = leases.get(id)?.map(|g| g.value());
    match ttl {
        None => Ok(None),
        Some(ttl) => Ok(Some(Lease { id, ttl, keys: attached_keys(lease_keys, id)? })),
    }
}
