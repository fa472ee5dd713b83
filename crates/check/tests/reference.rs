//! Differential test: on small random histories — concurrent, with unanswered and failed
//! operations, from a real run but with some answers made up, so that many are not
//! linearizable — the
//! checker must agree with a brute-force search over every order, and every violation it
//! reports must itself be non-linearizable by brute force.
//!
//! The brute force shares no code with the checker: it tries every sequence of
//! operations allowed by real time against a plain map, so the checker's optimisations
//! (memo, forced reads, the normal form for unanswered operations, shrinking) are each
//! measured against the definition.

use std::collections::{BTreeMap, HashSet};

use concord_check::{check, Completion, History, Op, Operation, Outcome, Violation};
use proptest::prelude::*;

const KEYS: [&str; 2] = ["k0", "k1"];
const VALUES: [&str; 3] = ["a", "b", "c"];

/// Whether some order of `operations` consistent with real time explains every answer.
fn brute_force_linearizable(operations: &[Operation]) -> bool {
    let relevant: Vec<&Operation> = operations
        .iter()
        .filter(|operation| match operation.completion {
            Completion::Failed => false,
            Completion::Unknown => !matches!(operation.op, Op::Get { .. }),
            Completion::Completed { .. } => true,
        })
        .collect();
    let mut linearized = vec![false; relevant.len()];
    extend(&relevant, &mut linearized, &mut BTreeMap::new(), &mut HashSet::new())
}

/// Dead ends already explored: (which operations took effect, the map then).
type DeadEnds = HashSet<(Vec<bool>, BTreeMap<String, String>)>;

fn completed_at(operation: &Operation) -> Option<u64> {
    match operation.completion {
        Completion::Completed { time, .. } => Some(time),
        _ => None,
    }
}

fn extend(
    operations: &[&Operation],
    linearized: &mut [bool],
    store: &mut BTreeMap<String, String>,
    dead_ends: &mut DeadEnds,
) -> bool {
    if dead_ends.contains(&(linearized.to_vec(), store.clone())) {
        return false;
    }
    let pending_answered = (0..operations.len()).filter(|&i| !linearized[i] && completed_at(operations[i]).is_some());
    let Some(earliest_completion) = pending_answered.filter_map(|i| completed_at(operations[i])).min() else {
        return true;
    };
    for i in 0..operations.len() {
        if linearized[i] || operations[i].invoked_at > earliest_completion {
            continue;
        }
        let before = store.clone();
        if take_effect(operations[i], store) {
            linearized[i] = true;
            if extend(operations, linearized, store, dead_ends) {
                return true;
            }
            linearized[i] = false;
        }
        *store = before;
    }
    dead_ends.insert((linearized.to_vec(), store.clone()));
    false
}

/// Applies `operation` to `store` if its answer is possible now; unanswered operations
/// only when they change something.
fn take_effect(operation: &Operation, store: &mut BTreeMap<String, String>) -> bool {
    let outcome = match &operation.completion {
        Completion::Completed { outcome, .. } => Some(outcome),
        _ => None,
    };
    match (&operation.op, outcome) {
        (Op::Get { key }, Some(Outcome::Get(observed))) => store.get(key) == observed.as_ref(),
        (Op::Get { .. }, _) => false,
        (Op::Put { key, value }, _) => {
            store.insert(key.clone(), value.clone());
            true
        }
        (Op::Delete { key }, _) => {
            store.remove(key);
            true
        }
        (Op::Cas { key, expected, new }, outcome) => {
            let matches = store.get(key) == expected.as_ref();
            let succeeded = match outcome {
                Some(Outcome::Cas(succeeded)) => *succeeded,
                _ => true,
            };
            if matches && succeeded {
                store.insert(key.clone(), new.clone());
            }
            matches == succeeded
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Answered,
    /// No answer; it took effect at its instant (if `applied`) or never.
    Unanswered {
        applied: bool,
    },
    Failed,
}

/// One operation of a generated history: it takes effect at `instant` (if at all),
/// within its window; its answer is the true one unless `made_up` replaces it.
#[derive(Clone, Debug)]
struct Planned {
    op: Op,
    invoked_at: u64,
    instant: u64,
    completed_at: u64,
    ending: Ending,
    made_up: Option<Outcome>,
}

fn planned_operation() -> impl Strategy<Value = Planned> {
    let key = prop_oneof![3 => Just(KEYS[0]), 1 => Just(KEYS[1])].prop_map(String::from);
    let value = (0..VALUES.len()).prop_map(|v| VALUES[v].to_string());
    let op = prop_oneof![
        3 => key.clone().prop_map(|key| Op::Get { key }),
        3 => (key.clone(), value.clone()).prop_map(|(key, value)| Op::Put { key, value }),
        1 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => (key, proptest::option::of(value.clone()), value)
            .prop_map(|(key, expected, new)| Op::Cas { key, expected, new }),
    ];
    let made_up = prop_oneof![
        proptest::option::of((0..VALUES.len()).prop_map(|v| VALUES[v].to_string())).prop_map(Outcome::Get),
        any::<bool>().prop_map(Outcome::Cas),
    ];
    let ending = prop_oneof![
        5 => Just(Ending::Answered),
        2 => any::<bool>().prop_map(|applied| Ending::Unanswered { applied }),
        1 => Just(Ending::Failed),
    ];
    (op, 0..30u64, 0..8u64, 0..8u64, ending, proptest::option::weighted(0.3, made_up)).prop_map(
        |(op, invoked_at, to_instant, to_completion, ending, made_up)| Planned {
            op,
            invoked_at,
            instant: invoked_at + to_instant,
            completed_at: invoked_at + to_instant + to_completion,
            ending,
            made_up,
        },
    )
}

/// Runs the plan in instant order against a map and records what clients would see,
/// with made-up answers where planned (when they fit the operation).
fn record(plan: &[Planned]) -> History {
    let mut by_instant: Vec<usize> = (0..plan.len()).collect();
    by_instant.sort_by_key(|&i| plan[i].instant);
    let mut store = BTreeMap::new();
    let mut outcomes = vec![None; plan.len()];
    for i in by_instant {
        let planned = &plan[i];
        let applies = matches!(planned.ending, Ending::Answered | Ending::Unanswered { applied: true });
        let mut scratch = store.clone();
        let outcome = execute(&planned.op, &mut scratch);
        if applies {
            store = scratch;
        }
        outcomes[i] = Some(outcome);
    }
    let mut history = History::new();
    for (client, (planned, outcome)) in plan.iter().zip(outcomes).enumerate() {
        let id = history.invoke(client as u64, planned.op.clone(), planned.invoked_at);
        let outcome = match (&planned.op, &planned.made_up) {
            (Op::Get { .. }, Some(made_up @ Outcome::Get(_))) | (Op::Cas { .. }, Some(made_up @ Outcome::Cas(_))) => {
                made_up.clone()
            }
            _ => outcome.expect("every operation was executed"),
        };
        match planned.ending {
            Ending::Answered => history.complete(id, outcome, planned.completed_at),
            Ending::Failed => history.fail(id),
            Ending::Unanswered { .. } => {}
        }
    }
    history
}

fn execute(op: &Op, store: &mut BTreeMap<String, String>) -> Outcome {
    match op {
        Op::Get { key } => Outcome::Get(store.get(key).cloned()),
        Op::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            Outcome::Put
        }
        Op::Delete { key } => {
            store.remove(key);
            Outcome::Delete
        }
        Op::Cas { key, expected, new } => {
            let succeeded = store.get(key) == expected.as_ref();
            if succeeded {
                store.insert(key.clone(), new.clone());
            }
            Outcome::Cas(succeeded)
        }
    }
}

fn rerecord(operations: &[Operation]) -> History {
    let mut history = History::new();
    for operation in operations {
        let id = history.invoke(operation.client, operation.op.clone(), operation.invoked_at);
        match &operation.completion {
            Completion::Completed { time, outcome } => history.complete(id, outcome.clone(), *time),
            Completion::Failed => history.fail(id),
            Completion::Unknown => {}
        }
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn agrees_with_brute_force(plan in proptest::collection::vec(planned_operation(), 2..14)) {
        let history = record(&plan);
        let expected = brute_force_linearizable(history.operations());
        match check(&history) {
            Ok(_) => prop_assert!(expected, "accepted a history that is not linearizable"),
            Err(Violation::NotLinearizable { operations: reported, .. }) => {
                prop_assert!(!expected, "rejected a linearizable history");
                prop_assert!(
                    !brute_force_linearizable(rerecord(&reported).operations()),
                    "reported a linearizable subset: {:#?}", reported
                );
            }
            Err(inconclusive) => prop_assert!(false, "{}", inconclusive),
        }
    }
}
