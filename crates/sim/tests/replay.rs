//! A seed fixes the whole run: replaying it gives the same violation, the same trace and
//! the same counters. This is what makes a failing seed worth reporting.

//!
//! The replays of failing seeds need planted bugs, so they run in scripts/planted-bugs.

#[cfg(concord_planted_bugs)]
use concord_sim::PlantedBug;
use concord_sim::{run_seed, SimOptions, StateMachineKind};

#[cfg(concord_planted_bugs)]
#[test]
fn a_failing_seed_replays_identically() {
    let options = SimOptions::new(3).with_bug(PlantedBug::ForgetVote);
    let first = (0..200)
        .map(|seed| run_seed(&options, seed))
        .find(|outcome| !outcome.is_clean())
        .expect("forget-vote is caught within 200 seeds");
    let again = run_seed(&options, first.seed);
    assert_eq!(again.violation, first.violation);
    assert_eq!(again.trace, first.trace);
    assert_eq!(again.stats, first.stats);
    assert_eq!(again.replay, first.replay);
}

#[cfg(concord_planted_bugs)]
#[test]
fn a_linearizability_failure_replays_identically() {
    let options = SimOptions::new(3).with_bug(PlantedBug::StaleRead);
    let first = (0..300)
        .map(|seed| run_seed(&options, seed))
        .find(|outcome| !outcome.is_clean())
        .expect("stale-read is caught within 300 seeds");
    let again = run_seed(&options, first.seed);
    assert_eq!(again.violation, first.violation);
    assert_eq!(again.trace, first.trace);
    assert_eq!(again.stats, first.stats);
}

#[test]
fn a_clean_seed_replays_identically() {
    let options = SimOptions::new(5);
    let first = run_seed(&options, 42);
    let again = run_seed(&options, 42);
    assert!(first.is_clean(), "{:?}", first.violation);
    assert_eq!(again.stats, first.stats);
    assert_eq!(again.trace, first.trace);
    // A different seed is a different run.
    assert_ne!(run_seed(&options, 43).stats, first.stats);
}

#[test]
fn a_clean_seed_with_concord_mvcc_replays_identically() {
    let options = SimOptions::new(3).with_state_machine(StateMachineKind::Mvcc);
    let first = run_seed(&options, 7);
    let again = run_seed(&options, 7);
    assert!(first.is_clean(), "{:?}", first.violation);
    assert_eq!(again.stats, first.stats);
    assert_eq!(again.trace, first.trace);
    assert!(first.replay.contains("--state-machine mvcc"), "{}", first.replay);
}
