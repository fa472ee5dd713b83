//! Range: etcd's read, with its exact rules for `count`, `more`, `limit`, sort and filters.
//!
//! etcd (3.4 `applierV3backend.Range`) fetches `limit + 1` keys when there is no sort and no
//! min/max filter, otherwise every key in the range; then it prunes with the filters, sorts,
//! truncates to `limit` and sets `more` when something was cut. `count` is the number of keys
//! live in the range at the read revision, untouched by limit and filters. The header
//! revision is the store's current revision, whatever revision was read.
//!
//! Memory: the walk always visits every key of the range (to count them) but keeps at most
//! `limit + 1` KeyValues when the order is the natural key order (no sort, or sort by key,
//! ascending or descending: descending walks the range backwards); min/max filters are
//! applied while walking. Only a sort on another target (version, create, mod, value) must
//! hold every matching KeyValue, values included, before sorting: that costs memory
//! proportional to the matching keys and their values, as it does in etcd. Ties keep key
//! order (the sort is stable), which is what etcd's insertion sort gives on small results.

use std::cmp::Ordering;

use crate::error::MvccError;
use crate::keyrange::KeyBounds;
use crate::read::{At, Reader, RevRead};
use crate::schema::rev_i64;
use crate::types::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};

/// Serves `req` on a view whose current revision is `view_rev` and compacted revision is
/// `compacted`.
pub(crate) fn range<R: RevRead>(
    reader: &Reader<'_, R>,
    req: &RangeRequest,
    view_rev: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError> {
    if req.revision > view_rev {
        return Err(MvccError::FutureRevision);
    }
    let rev = if req.revision <= 0 { view_rev } else { req.revision };
    if rev < compacted {
        return Err(MvccError::Compacted);
    }
    let at = if rev >= view_rev { At::Current } else { At::Revision(rev) };
    let bounds = KeyBounds::new(&req.key, &req.range_end);

    // etcd sorts ascending by default when a non-key target is named.
    let order = if req.sort_target != SortTarget::Key && req.sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        req.sort_order
    };
    let natural = order == SortOrder::None || req.sort_target == SortTarget::Key;
    let reverse = req.sort_target == SortTarget::Key && order == SortOrder::Descend;
    let limit = usize::try_from(req.limit).unwrap_or(0);
    // How many matching KeyValues to keep while walking.
    let keep = if req.count_only {
        0
    } else if natural && limit > 0 {
        limit + 1
    } else {
        usize::MAX
    };
    let needs_create = req.min_create_revision != 0 || req.max_create_revision != 0;

    let mut count: i64 = 0;
    let mut kvs: Vec<KeyValue> = Vec::new();
    reader.visit(bounds, at, reverse, |key, main, sub| {
        count += 1;
        if kvs.len() >= keep {
            return Ok(true);
        }
        let mod_rev = rev_i64(main);
        if (req.max_mod_revision != 0 && mod_rev > req.max_mod_revision)
            || (req.min_mod_revision != 0 && mod_rev < req.min_mod_revision)
        {
            return Ok(true);
        }
        let kv = reader
            .kv_of(key, main, sub)?
            .ok_or_else(|| MvccError::Corrupt(format!("live key {key:?} points at a tombstone")))?;
        if needs_create
            && ((req.max_create_revision != 0 && kv.create_revision > req.max_create_revision)
                || (req.min_create_revision != 0 && kv.create_revision < req.min_create_revision))
        {
            return Ok(true);
        }
        kvs.push(kv);
        Ok(true)
    })?;

    if !natural {
        let cmp = comparator(req.sort_target);
        match order {
            SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
            _ => kvs.sort_by(cmp),
        }
    }
    let mut more = false;
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(RangeResponse { revision: view_rev, kvs, more, count })
}

fn comparator(target: SortTarget) -> fn(&KeyValue, &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => |a, b| a.key.cmp(&b.key),
        SortTarget::Version => |a, b| a.version.cmp(&b.version),
        SortTarget::Create => |a, b| a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => |a, b| a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => |a, b| a.value.cmp(&b.value),
    }
}
