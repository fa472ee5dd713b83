//! Property test: random Put/Delete/Range/Compact sequences against a plain in-memory
//! model (key -> every version ever written).

use std::collections::BTreeMap;

use concord_mvcc::*;
use proptest::prelude::*;

const KEYS: [&[u8]; 6] = [b"a", b"ab", b"b", b"ba", b"c", b"\xff"];

#[derive(Debug, Clone)]
enum Op {
    Put { key: usize, value: u8 },
    Delete { key: usize, end: u8 },
    Range { key: usize, end: u8, back: u8, limit: u8, sort: u8 },
    Compact { back: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS.len(), any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        1 => (0..KEYS.len(), 0..4u8).prop_map(|(key, end)| Op::Delete { key, end }),
        3 => (0..KEYS.len(), 0..4u8, 0..12u8, 0..4u8, 0..4u8)
            .prop_map(|(key, end, back, limit, sort)| Op::Range { key, end, back, limit, sort }),
        1 => (0..8u8).prop_map(|back| Op::Compact { back }),
    ]
}

fn range_end(key: usize, end: u8) -> Vec<u8> {
    match end {
        0 => Vec::new(),
        1 => prefix_end(KEYS[key]),
        2 => vec![0],
        _ => KEYS[(key + 2) % KEYS.len()].to_vec(),
    }
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        e => k >= key && k < e,
    }
}

/// One written version: at `rev`, `None` for a tombstone.
#[derive(Debug, Clone)]
struct Version {
    rev: i64,
    kv: Option<KeyValue>,
}

#[derive(Default)]
struct Model {
    rev: i64,
    compacted: i64,
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
}

impl Model {
    fn new() -> Model {
        Model { rev: 1, compacted: -1, keys: BTreeMap::new() }
    }

    fn at(&self, rev: i64) -> Vec<KeyValue> {
        self.keys
            .values()
            .filter_map(|vs| vs.iter().rev().find(|v| v.rev <= rev))
            .filter_map(|v| v.kv.clone())
            .collect()
    }

    fn live(&self, k: &[u8]) -> Option<KeyValue> {
        self.keys.get(k)?.last()?.kv.clone()
    }

    fn put(&mut self, k: &[u8], value: Vec<u8>) {
        let rev = self.rev + 1;
        let (create, version) = match self.live(k) {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        self.rev = rev;
        self.keys.entry(k.to_vec()).or_default().push(Version {
            rev,
            kv: Some(KeyValue {
                key: k.to_vec(),
                create_revision: create,
                mod_revision: rev,
                version,
                value,
                lease: 0,
            }),
        });
    }

    fn delete(&mut self, key: &[u8], end: &[u8]) -> i64 {
        let doomed: Vec<Vec<u8>> = self
            .keys
            .iter()
            .filter(|(k, vs)| in_range(k, key, end) && vs.last().is_some_and(|v| v.kv.is_some()))
            .map(|(k, _)| k.clone())
            .collect();
        if doomed.is_empty() {
            return 0;
        }
        self.rev += 1;
        for k in &doomed {
            self.keys.get_mut(k).unwrap().push(Version { rev: self.rev, kv: None });
        }
        doomed.len() as i64
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = Store::in_memory().unwrap();
    let mut model = Model::new();
    let mut index = 0u64;
    let mut apply = |cmd: Command| {
        index += 1;
        store.apply(index, &cmd).unwrap().unwrap()
    };
    for op in ops {
        match op {
            Op::Put { key, value } => {
                let a = apply(Command::Put(PutRequest {
                    key: KEYS[key].to_vec(),
                    value: vec![value],
                    ..PutRequest::default()
                }));
                model.put(KEYS[key], vec![value]);
                prop_assert_eq!(a.revision, model.rev);
            }
            Op::Delete { key, end } => {
                let a = apply(Command::DeleteRange(DeleteRangeRequest {
                    key: KEYS[key].to_vec(),
                    range_end: range_end(key, end),
                    prev_kv: false,
                }));
                let n = model.delete(KEYS[key], &range_end(key, end));
                let Ok(Response::DeleteRange(d)) = a.result else {
                    return Err(TestCaseError::fail("delete failed"));
                };
                prop_assert_eq!(d.deleted, n);
                prop_assert_eq!(d.revision, model.rev);
            }
            Op::Compact { back } => {
                let target = model.rev - i64::from(back);
                let a = apply(Command::Compact(CompactionRequest { revision: target, physical: false }));
                if target <= model.compacted {
                    prop_assert_eq!(a.result, Err(MvccError::Compacted));
                } else {
                    prop_assert!(a.result.is_ok());
                    model.compacted = target;
                }
            }
            Op::Range { key, end, back, limit, sort } => {
                let revision = if back == 0 { 0 } else { model.rev + 1 - i64::from(back) };
                let (sort_order, sort_target) = match sort {
                    0 => (SortOrder::None, SortTarget::Key),
                    1 => (SortOrder::Descend, SortTarget::Key),
                    2 => (SortOrder::Descend, SortTarget::Mod),
                    _ => (SortOrder::Ascend, SortTarget::Value),
                };
                let req = RangeRequest {
                    key: KEYS[key].to_vec(),
                    range_end: range_end(key, end),
                    revision,
                    limit: i64::from(limit),
                    sort_order,
                    sort_target,
                    ..RangeRequest::default()
                };
                let got = store.range(&req);
                let at = if revision <= 0 { model.rev } else { revision };
                if revision > model.rev {
                    prop_assert_eq!(got, Err(MvccError::FutureRevision));
                    continue;
                }
                if at < model.compacted {
                    prop_assert_eq!(got, Err(MvccError::Compacted));
                    continue;
                }
                let mut want: Vec<KeyValue> =
                    model.at(at).into_iter().filter(|kv| in_range(&kv.key, &req.key, &req.range_end)).collect();
                let count = want.len() as i64;
                match sort {
                    0 => {}
                    1 => want.reverse(),
                    2 => want.sort_by_key(|kv| std::cmp::Reverse(kv.mod_revision)),
                    _ => want.sort_by(|a, b| a.value.cmp(&b.value)),
                }
                let mut more = false;
                if limit > 0 && want.len() > limit as usize {
                    want.truncate(limit as usize);
                    more = true;
                }
                let got = got.unwrap();
                prop_assert_eq!(got.revision, model.rev);
                prop_assert_eq!(got.count, count);
                prop_assert_eq!(got.more, more);
                prop_assert_eq!(got.kvs, want);
            }
        }
        prop_assert_eq!(store.current_revision(), model.rev);
        prop_assert_eq!(store.compacted_revision(), model.compacted);
    }
    // Finally every kept revision reads as the model says.
    for rev in model.compacted.max(1)..=model.rev {
        let got = store
            .range(&RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..RangeRequest::default() })
            .unwrap();
        prop_assert_eq!(got.kvs, model.at(rev));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
