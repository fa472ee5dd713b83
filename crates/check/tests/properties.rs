//! Property tests against a reference run: executions that really happened one operation
//! at a time must be accepted however their time windows overlap, and a purely
//! sequential history with one read corrupted must be rejected.

use std::collections::BTreeMap;

use concord_check::{check, History, Op, Outcome, Violation};
use proptest::prelude::*;

const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const VALUES: [&str; 4] = ["v0", "v1", "v2", "v3"];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Get,
    Put,
    Delete,
    Cas,
}

/// What the client learns, and whether the operation really took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Answered,
    UnansweredButApplied,
    UnansweredAndLost,
    Failed,
}

#[derive(Clone, Debug)]
struct PlannedOp {
    key: usize,
    kind: Kind,
    value: usize,
    expected: Option<usize>,
    fate: Fate,
    /// How long before its instant of effect the client invoked it.
    lead: u64,
    /// How long after its instant of effect the client got the answer.
    lag: u64,
}

/// One operation as it will be recorded.
#[derive(Clone, Debug)]
struct Recorded {
    op: Op,
    invoked_at: u64,
    fate: Fate,
    answer: Option<(u64, Outcome)>,
}

fn planned_op(fates: BoxedStrategy<Fate>) -> impl Strategy<Value = PlannedOp> {
    let kind = prop_oneof![
        4 => Just(Kind::Get),
        3 => Just(Kind::Put),
        1 => Just(Kind::Delete),
        2 => Just(Kind::Cas),
    ];
    (0..KEYS.len(), kind, 0..VALUES.len(), proptest::option::of(0..VALUES.len()), fates, 0..50u64, 1..50u64).prop_map(
        |(key, kind, value, expected, fate, lead, lag)| PlannedOp { key, kind, value, expected, fate, lead, lag },
    )
}

fn any_fate() -> BoxedStrategy<Fate> {
    prop_oneof![
        12 => Just(Fate::Answered),
        1 => Just(Fate::UnansweredButApplied),
        1 => Just(Fate::UnansweredAndLost),
        1 => Just(Fate::Failed),
    ]
    .boxed()
}

/// Runs `plan` one operation at a time against a map, the i-th taking effect at
/// `100 + 20 i`. With `overlapping`, each is recorded with a window of its lead and lag
/// around that instant (so windows of neighbours overlap, in either order); without,
/// every window ends before the next begins.
fn execute(plan: &[PlannedOp], overlapping: bool) -> Vec<Recorded> {
    let mut store: BTreeMap<&str, &str> = BTreeMap::new();
    plan.iter()
        .enumerate()
        .map(|(i, planned)| {
            let instant = 100 + 20 * i as u64;
            let (invoked_at, completed_at) =
                if overlapping { (instant - planned.lead, instant + planned.lag) } else { (instant, instant + 1) };
            let key = KEYS[planned.key];
            let value = VALUES[planned.value];
            let expected = planned.expected.map(|e| VALUES[e]);
            let takes_effect = matches!(planned.fate, Fate::Answered | Fate::UnansweredButApplied);
            let current = store.get(key).copied();
            let (op, outcome) = match planned.kind {
                Kind::Get => (Op::Get { key: key.into() }, Outcome::Get(current.map(Into::into))),
                Kind::Put => {
                    if takes_effect {
                        store.insert(key, value);
                    }
                    let op = Op::Put { key: key.into(), value: value.into() };
                    (op, Outcome::Put)
                }
                Kind::Delete => {
                    if takes_effect {
                        store.remove(key);
                    }
                    (Op::Delete { key: key.into() }, Outcome::Delete)
                }
                Kind::Cas => {
                    let succeeded = current == expected;
                    if takes_effect && succeeded {
                        store.insert(key, value);
                    }
                    let op = Op::Cas { key: key.into(), expected: expected.map(Into::into), new: value.into() };
                    (op, Outcome::Cas(succeeded))
                }
            };
            Recorded {
                op,
                invoked_at,
                fate: planned.fate,
                answer: (planned.fate == Fate::Answered).then_some((completed_at, outcome)),
            }
        })
        .collect()
}

fn record(operations: &[Recorded]) -> History {
    let mut history = History::new();
    for (client, operation) in operations.iter().enumerate() {
        let id = history.invoke(client as u64 % 5, operation.op.clone(), operation.invoked_at);
        match (&operation.answer, operation.fate) {
            (Some((time, outcome)), _) => history.complete(id, outcome.clone(), *time),
            (None, Fate::Failed) => history.fail(id),
            (None, _) => {}
        }
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn real_executions_are_accepted(
        plan in proptest::collection::vec(planned_op(any_fate()), 0..60),
    ) {
        let history = record(&execute(&plan, true));
        if let Err(violation) = check(&history) {
            prop_assert!(false, "rejected a real execution: {violation}");
        }
    }

    #[test]
    fn a_corrupted_read_in_a_sequential_history_is_rejected(
        plan in proptest::collection::vec(planned_op(Just(Fate::Answered).boxed()), 1..40),
        which in any::<prop::sample::Index>(),
        replacement in proptest::option::of(0..VALUES.len()),
    ) {
        let mut operations = execute(&plan, false);
        let reads: Vec<usize> = (0..operations.len())
            .filter(|&i| matches!(operations[i].op, Op::Get { .. }))
            .collect();
        prop_assume!(!reads.is_empty());
        let read = &mut operations[reads[which.index(reads.len())]];
        let Some((_, Outcome::Get(observed))) = &mut read.answer else { unreachable!() };
        let replacement = replacement.map(|v| VALUES[v].to_string());
        *observed = if *observed == replacement {
            Some("never written".into())
        } else {
            replacement
        };
        let key = read.op.key().clone();

        match check(&record(&operations)) {
            Err(Violation::NotLinearizable { key: named, operations }) => {
                prop_assert_eq!(named, key);
                prop_assert!(!operations.is_empty());
            }
            other => prop_assert!(false, "expected a violation on {}, got {:?}", key, other),
        }
    }
}
