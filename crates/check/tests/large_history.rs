//! The checker at the scale the simulator uses it: 10,000 operations from 8 concurrent
//! clients on 4 keys, with timeouts and definite failures, produced by a simulated store
//! that applies each request atomically somewhere inside its time window. It must be
//! accepted quickly, and the same run with one read made stale must be rejected with the
//! three operations that show it.

use std::collections::HashMap;
use std::time::Instant;

use concord_check::{check, History, Op, OpId, Operation, Outcome, Violation};

const OPERATIONS: usize = 10_000;
const CLIENTS: u64 = 8;
const KEYS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// SplitMix64: a tiny deterministic generator, so the run is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Answered,
    TimedOutAfterApplying,
    TimedOutBeforeApplying,
    Rejected,
}

struct InFlight {
    id: OpId,
    client: u64,
    op: Op,
    applies_at: u64,
    answers_at: u64,
    fate: Fate,
    outcome: Option<Outcome>,
}

/// A completed put, remembered to build a stale read from.
#[derive(Clone)]
struct AcknowledgedPut {
    id: OpId,
    value: String,
    invoked_at: u64,
    completed_at: u64,
}

/// Makes one read (the first eligible after `after_operations` invocations) return the
/// value of a put that was overwritten by another put before the read was invoked.
struct StaleReadPlan {
    after_operations: usize,
    planted: Option<(OpId, OpId, OpId)>,
}

struct SimulatedRun {
    history: History,
    /// (older put, newer put, stale read) if a stale read was planted.
    planted: Option<(OpId, OpId, OpId)>,
}

fn simulate(seed: u64, mut stale_read: Option<StaleReadPlan>) -> SimulatedRun {
    let mut rng = Rng(seed);
    let mut history = History::new();
    let mut store: HashMap<&str, String> = HashMap::new();
    let mut acknowledged_puts: HashMap<String, Vec<AcknowledgedPut>> = HashMap::new();
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut busy = [false; CLIENTS as usize];
    let mut next_value = 0u64;
    let mut now = 0u64;

    while history.len() < OPERATIONS || !in_flight.is_empty() {
        now += 1;
        for request in in_flight.iter_mut().filter(|r| r.applies_at == now) {
            if request.fate != Fate::TimedOutBeforeApplying && request.fate != Fate::Rejected {
                request.outcome = Some(apply(&mut store, &request.op));
            }
        }
        let (done, still): (Vec<InFlight>, Vec<InFlight>) = in_flight.into_iter().partition(|r| r.answers_at == now);
        in_flight = still;
        for request in done {
            busy[request.client as usize] = false;
            match request.fate {
                Fate::Answered => {
                    let mut outcome = request.outcome.expect("applied before answering");
                    if let Op::Put { key, value } = &request.op {
                        acknowledged_puts.entry(key.clone()).or_default().push(AcknowledgedPut {
                            id: request.id,
                            value: value.clone(),
                            invoked_at: history.get(request.id).invoked_at,
                            completed_at: now,
                        });
                    }
                    if let (Some(plan), Op::Get { key }) = (&mut stale_read, &request.op) {
                        if plan.planted.is_none() && history.len() >= plan.after_operations {
                            let invoked_at = history.get(request.id).invoked_at;
                            let puts = acknowledged_puts.get(key).map_or(&[][..], |p| &p[..]);
                            if let Some((older, newer)) = overwritten_put(puts, invoked_at) {
                                outcome = Outcome::Get(Some(older.value.clone()));
                                plan.planted = Some((older.id, newer.id, request.id));
                            }
                        }
                    }
                    history.complete(request.id, outcome, now);
                }
                Fate::Rejected => history.fail(request.id),
                Fate::TimedOutAfterApplying | Fate::TimedOutBeforeApplying => {}
            }
        }
        for client in 0..CLIENTS {
            if busy[client as usize] || history.len() >= OPERATIONS || !rng.chance(60) {
                continue;
            }
            let key = KEYS[rng.below(KEYS.len() as u64) as usize];
            let op = random_op(&mut rng, key, &store, &mut next_value);
            let id = history.invoke(client, op.clone(), now);
            let applies_at = now + 1 + rng.below(3);
            let fate = match rng.below(100) {
                0..=1 => Fate::TimedOutAfterApplying,
                2..=3 => Fate::TimedOutBeforeApplying,
                4 => Fate::Rejected,
                _ => Fate::Answered,
            };
            busy[client as usize] = true;
            in_flight.push(InFlight {
                id,
                client,
                op,
                applies_at,
                answers_at: applies_at + 1 + rng.below(3),
                fate,
                outcome: None,
            });
        }
    }
    SimulatedRun { history, planted: stale_read.and_then(|plan| plan.planted) }
}

/// A put `older` and a put `newer` such that `older` completed before `newer` was invoked
/// and `newer` completed before `read_invoked_at`: a read then cannot see `older`.
fn overwritten_put(puts: &[AcknowledgedPut], read_invoked_at: u64) -> Option<(&AcknowledgedPut, &AcknowledgedPut)> {
    let newer = puts.iter().rev().find(|p| p.completed_at < read_invoked_at)?;
    let older = puts.iter().rev().find(|p| p.completed_at < newer.invoked_at)?;
    Some((older, newer))
}

fn random_op(rng: &mut Rng, key: &str, store: &HashMap<&str, String>, next_value: &mut u64) -> Op {
    let key = key.to_string();
    let written_so_far = *next_value;
    let mut fresh = || {
        *next_value += 1;
        format!("v{next_value}")
    };
    match rng.below(20) {
        0..=9 => Op::Get { key },
        10..=14 => Op::Put { key, value: fresh() },
        15..=16 => Op::Delete { key },
        _ => {
            let expected = if rng.chance(70) {
                store.get(key.as_str()).cloned()
            } else {
                Some(format!("v{}", rng.below(written_so_far + 1)))
            };
            Op::Cas { key, expected, new: fresh() }
        }
    }
}

fn apply(store: &mut HashMap<&'static str, String>, op: &Op) -> Outcome {
    let key = KEYS.iter().find(|k| **k == op.key()).expect("known key");
    match op {
        Op::Get { .. } => Outcome::Get(store.get(key).cloned()),
        Op::Put { value, .. } => {
            store.insert(key, value.clone());
            Outcome::Put
        }
        Op::Delete { .. } => {
            store.remove(key);
            Outcome::Delete
        }
        Op::Cas { expected, new, .. } => {
            let succeeded = store.get(key) == expected.as_ref();
            if succeeded {
                store.insert(key, new.clone());
            }
            Outcome::Cas(succeeded)
        }
    }
}

#[test]
fn ten_thousand_concurrent_operations_are_checked_quickly() {
    let run = simulate(7, None);
    assert_eq!(run.history.len(), OPERATIONS);

    let started = Instant::now();
    let report = check(&run.history).unwrap_or_else(|violation| panic!("{violation}"));
    let elapsed = started.elapsed();

    println!("checked in {elapsed:?}: {report}");
    assert_eq!(report.keys, KEYS.len());
    assert!(report.operations > 9_000, "{report}");
}

#[test]
fn a_stale_read_among_ten_thousand_operations_is_found_and_shrunk() {
    let run = simulate(11, Some(StaleReadPlan { after_operations: OPERATIONS / 2, planted: None }));
    let (older, newer, stale) = run.planted.expect("a stale read was planted");
    let key = run.history.get(stale).op.key().clone();

    let started = Instant::now();
    let violation = check(&run.history).unwrap_err();
    let elapsed = started.elapsed();

    println!("found and shrunk in {elapsed:?}:\n{violation}");
    match violation {
        Violation::NotLinearizable { key: named, operations } => {
            assert_eq!(named, key);
            assert_shows_stale_read(&operations, (older, newer, stale));
        }
        other => panic!("expected a violation, got {other}"),
    }
}

/// The report starts with the put the stale read saw and ends with the stale read; in
/// between, what proves the put was overwritten: usually the newer put, sometimes other
/// operations that saw the value replaced (a chain of compare-and-sets and a read of its
/// end, say).
fn assert_shows_stale_read(operations: &[Operation], (older, newer, stale): (OpId, OpId, OpId)) {
    let ids: Vec<OpId> = operations.iter().map(|operation| operation.id).collect();
    let shown = ids.first() == Some(&older) && ids.last() == Some(&stale) && ids.len() <= 6;
    let listed: Vec<String> = operations.iter().map(|operation| format!("{:?} {operation}", operation.id)).collect();
    assert!(shown, "expected {older:?} .. {stale:?} (likely with {newer:?}), got:\n{}", listed.join("\n"));
}

/// The two tests above over many seeds; slow in debug builds, so run it on purpose:
/// `cargo test --release -p concord-check --test large_history -- --ignored`.
#[test]
#[ignore]
fn many_seeds() {
    let mut slowest = std::time::Duration::ZERO;
    for seed in 0..100 {
        let run = simulate(seed, None);
        let started = Instant::now();
        if let Err(violation) = check(&run.history) {
            panic!("seed {seed}: {violation}");
        }
        let planted = simulate(seed, Some(StaleReadPlan { after_operations: OPERATIONS / 2, planted: None }));
        let (older, newer, stale) = planted.planted.expect("a stale read was planted");
        match check(&planted.history) {
            Err(Violation::NotLinearizable { operations, .. }) => {
                assert_shows_stale_read(&operations, (older, newer, stale));
            }
            other => panic!("seed {seed}: expected a violation, got {other:?}"),
        }
        slowest = slowest.max(started.elapsed());
    }
    println!("slowest seed: {slowest:?} to check both runs");
}
