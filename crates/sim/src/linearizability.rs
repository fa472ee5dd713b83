//! The end-of-run linearizability check of the clients' history, and where it first fails.
//!
//! concord-check decides whether the whole history is linearizable. When it is not, a
//! person wants to know *when* things went wrong, to read the trace of that moment. The
//! history cut at time `T` (operations invoked by `T`; answers that came after `T` treated
//! as not yet known) is linearizable whenever the whole history is, so the earliest
//! failing cut can be found by binary search over completion times. The report names
//! the checker's explanation for that earliest cut and the simulation step of `T`.

use concord_check::{check, Completion, History, Operation, Violation};

/// The earliest failing cut of a history that is not linearizable.
#[derive(Debug)]
pub struct Failure {
    /// The checker's explanation, for the earliest failing cut.
    pub violation: Violation,
    /// The history time at which the history first fails.
    pub time: u64,
    /// The answer given at `time`: the first one no order of operations explains.
    pub culprit: Option<Operation>,
}

/// `None` if `history` is linearizable; otherwise where it first fails.
pub fn find_failure(history: &History) -> Option<Failure> {
    let whole = check(history).err()?;
    let mut completions: Vec<u64> = history
        .operations()
        .iter()
        .filter_map(|operation| match operation.completion {
            Completion::Completed { time, .. } => Some(time),
            _ => None,
        })
        .collect();
    completions.sort_unstable();
    // Invariant: the cut at `completions[high]` fails (the last cut is the whole history
    // as far as answers go); cuts before `low` pass.
    let (mut low, mut high) = (0, completions.len());
    let mut earliest = None;
    // At most log2(operations) + 1 checks.
    while low < high {
        let middle = low + (high - low) / 2;
        let time = completions[middle];
        match check(&cut(history, time)) {
            Ok(_) => low = middle + 1,
            Err(violation) => {
                earliest = Some(Failure { violation, time, culprit: None });
                high = middle;
            }
        }
    }
    let mut failure = earliest.unwrap_or_else(|| Failure {
        violation: whole,
        time: completions.last().copied().unwrap_or(0),
        culprit: None,
    });
    failure.culprit = history
        .operations()
        .iter()
        .find(|operation| matches!(operation.completion, Completion::Completed { time, .. } if time == failure.time))
        .cloned();
    Some(failure)
}

/// The history as it stood at time `time`: operations invoked by then, with answers that
/// came later dropped (the operation's outcome is then unknown).
pub fn cut(history: &History, time: u64) -> History {
    let mut cut = History::new();
    for operation in history.operations() {
        if operation.invoked_at > time {
            continue;
        }
        let id = cut.invoke(operation.client, operation.op.clone(), operation.invoked_at);
        match &operation.completion {
            Completion::Completed { time: answered, outcome } if *answered <= time => {
                cut.complete(id, outcome.clone(), *answered)
            }
            Completion::Failed => cut.fail(id),
            _ => {}
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_check::{Op, Outcome};

    fn put(key: &str, value: &str) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    fn get(key: &str) -> Op {
        Op::Get { key: key.into() }
    }

    #[test]
    fn finds_the_first_answer_that_cannot_be_explained() {
        let mut history = History::new();
        let write = history.invoke(1, put("k", "a"), 1);
        history.complete(write, Outcome::Put, 2);
        let good_read = history.invoke(2, get("k"), 3);
        history.complete(good_read, Outcome::Get(Some("a".into())), 4);
        let stale_read = history.invoke(2, get("k"), 5);
        history.complete(stale_read, Outcome::Get(None), 6);
        let later = history.invoke(1, put("k", "b"), 7);
        history.complete(later, Outcome::Put, 8);
        let failure = find_failure(&history).expect("the stale read is not linearizable");
        assert_eq!(failure.time, 6);
        assert_eq!(failure.culprit.expect("answered at 6").id, stale_read);
        assert!(find_failure(&cut(&history, 4)).is_none());
    }

    #[test]
    fn a_cut_keeps_unanswered_operations_as_unknown() {
        let mut history = History::new();
        let write = history.invoke(1, put("k", "a"), 1);
        history.complete(write, Outcome::Put, 10);
        let read = history.invoke(2, get("k"), 2);
        history.complete(read, Outcome::Get(Some("a".into())), 3);
        // At time 3 the write has no answer yet, but the read may already have seen it.
        let at_three = cut(&history, 3);
        assert_eq!(at_three.len(), 2);
        assert_eq!(at_three.operations()[0].completion, Completion::Unknown);
        assert!(check(&at_three).is_ok());
    }
}
