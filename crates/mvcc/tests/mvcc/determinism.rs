//! Two stores fed the same random commands (one entry at a time vs. random batches, memory
//! vs. file) end in the same state: equal HashKV at every kept revision, equal reads,
//! leases, stats and history.

use crate::common::*;
use concord_mvcc::*;

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const KEYS: [&str; 6] = ["a", "ab", "abc", "b", "ba", "c"];

fn key_range(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let k = rng.pick(&KEYS);
    let end = match rng.below(4) {
        0 => Vec::new(),
        1 => prefix_end(k.as_bytes()),
        2 => vec![0],
        _ => rng.pick(&KEYS).as_bytes().to_vec(),
    };
    (k.as_bytes().to_vec(), end)
}

fn random_put(rng: &mut Rng) -> PutRequest {
    PutRequest {
        key: rng.pick(&KEYS).into(),
        value: format!("v{}", rng.below(1000)).into_bytes(),
        lease: if rng.below(4) == 0 { rng.below(3) as i64 + 1 } else { 0 },
        prev_kv: rng.below(2) == 0,
        ..PutRequest::default()
    }
}

fn random_op(rng: &mut Rng, depth: u32) -> RequestOp {
    match rng.below(if depth > 1 { 3 } else { 4 }) {
        0 => RequestOp::Put(random_put(rng)),
        1 => {
            let (key, range_end) = key_range(rng);
            RequestOp::DeleteRange(DeleteRangeRequest { key, range_end, prev_kv: true })
        }
        2 => {
            let (key, range_end) = key_range(rng);
            RequestOp::Range(RangeRequest { key, range_end, limit: rng.below(3) as i64, ..RangeRequest::default() })
        }
        _ => RequestOp::Txn(random_txn(rng, depth + 1)),
    }
}

fn random_txn(rng: &mut Rng, depth: u32) -> TxnRequest {
    let results = [CompareResult::Equal, CompareResult::Greater, CompareResult::Less, CompareResult::NotEqual];
    let compare = (0..rng.below(3))
        .map(|_| {
            let k = rng.pick(&KEYS);
            let r = results[rng.below(4) as usize];
            let n = rng.below(6) as i64;
            match rng.below(5) {
                0 => Compare::version(k, r, n),
                1 => Compare::create_revision(k, r, n),
                2 => Compare::mod_revision(k, r, n),
                3 => Compare::lease(k, r, n),
                _ => Compare::value(k, r, format!("v{n}")),
            }
        })
        .collect();
    let success = (0..rng.below(4)).map(|_| random_op(rng, depth)).collect();
    let failure = (0..rng.below(3)).map(|_| random_op(rng, depth)).collect();
    TxnRequest { compare, success, failure }
}

pub fn random_command(rng: &mut Rng, store: &Store) -> Command {
    match rng.below(21) {
        0..=6 => Command::Put(random_put(rng)),
        7..=9 => {
            let (key, range_end) = key_range(rng);
            Command::DeleteRange(DeleteRangeRequest { key, range_end, prev_kv: rng.below(2) == 0 })
        }
        10..=13 => Command::Txn(random_txn(rng, 0)),
        14 => {
            let lo = store.compacted_revision().max(0);
            let hi = store.current_revision();
            Command::Compact(CompactionRequest {
                revision: lo + rng.below((hi - lo + 2) as u64) as i64,
                physical: true,
            })
        }
        15 | 16 => Command::LeaseGrant(LeaseGrantRequest { id: rng.below(3) as i64 + 1, ttl: 10 }),
        17 => Command::LeaseRevoke(LeaseRevokeRequest { id: rng.below(3) as i64 + 1 }),
        18 => Command::LeaseExpire(LeaseExpireRequest { id: rng.below(3) as i64 + 1, term: 1 }),
        19 => Command::LeaseCheckpoint(LeaseCheckpointRequest {
            term: 1,
            checkpoints: (0..rng.below(3))
                .map(|_| LeaseCheckpoint { id: rng.below(3) as i64 + 1, remaining_ttl: rng.below(12) as i64 })
                .collect(),
        }),
        _ => Command::Noop,
    }
}

pub fn assert_same(a: &Store, b: &Store) {
    assert_eq!(a.applied_index(), b.applied_index());
    assert_eq!(a.current_revision(), b.current_revision());
    assert_eq!(a.compacted_revision(), b.compacted_revision());
    assert_eq!(a.stats().unwrap(), b.stats().unwrap());
    assert_eq!(a.leases().unwrap(), b.leases().unwrap());
    let from = a.compacted_revision().max(0) + 1;
    for rev in from..=a.current_revision() {
        assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap(), "rev {rev}");
        let req = RangeRequest { revision: rev, ..range("\0", "\0") };
        assert_eq!(a.range(&req).unwrap(), b.range(&req).unwrap(), "rev {rev}");
    }
    assert_eq!(a.events_since(from, usize::MAX).unwrap(), b.events_since(from, usize::MAX).unwrap());
}

#[test]
fn same_commands_same_state() {
    for seed in 1..=4u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let a = Store::in_memory().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let b = Store::open_with(dir.path().join("b.redb"), Options { sync: false, ..Options::default() }).unwrap();
        let mut log: Vec<(u64, Command)> = Vec::new();
        let mut results = Vec::new();
        for index in 1..=300u64 {
            let cmd = random_command(&mut rng, &a);
            results.push(a.apply(index, &cmd).unwrap().unwrap());
            log.push((index, cmd));
        }
        let mut b_results = Vec::new();
        let mut i = 0;
        while i < log.len() {
            let n = 1 + rng.below(40) as usize;
            let end = (i + n).min(log.len());
            b_results.extend(b.apply_batch(&log[i..end]).unwrap());
            i = end;
        }
        assert_eq!(results, b_results, "seed {seed}");
        assert!(a.current_revision() > 50, "the workload writes");
        assert!(results.iter().any(|r| r.result.is_err()), "and has errors");
        assert_same(&a, &b);
        // The events of every apply, concatenated, are the kept history (once each delete
        // has its deleted version: the apply reads it only for a DeleteRange with prev_kv,
        // a catch-up read never).
        let from = a.compacted_revision().max(0) + 1;
        let mut applied: Vec<Event> =
            results.into_iter().flat_map(|r| r.events).filter(|e| e.kv.mod_revision >= from).collect();
        let mut history = b.events_since(from, usize::MAX).unwrap();
        b.fill_delete_prevs(&mut applied).unwrap();
        b.fill_delete_prevs(&mut history).unwrap();
        assert!(applied.iter().all(|e| e.prev_kv.is_some() || e.kind == concord_mvcc::EventKind::Put));
        assert_eq!(history, applied);
        // Reopen b: still the same.
        drop(b);
        let b = Store::open(dir.path().join("b.redb")).unwrap();
        assert_same(&a, &b);
    }
}

#[test]
fn different_commands_different_hash() {
    let mut t = T::new();
    let mut u = T::new();
    t.put("a", "1");
    u.put("a", "2");
    assert_ne!(t.store.hash_kv(0).unwrap(), u.store.hash_kv(0).unwrap());
}
