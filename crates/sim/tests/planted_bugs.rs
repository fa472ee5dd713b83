//! Each planted bug must be caught: the checks are only worth something if they can fail.
//!
//! Every test searches a seed range and stops at the first violation. The ranges are wide
//! enough to survive small changes in the core (the first failing seed moves whenever
//! the sequence of random draws changes); docs/testing.md records which seed first
//! caught each bug when this was written.
//!
//! They need the bugs compiled in (`--cfg concord_planted_bugs`): scripts/planted-bugs
//! runs them; without the cfg this file is empty.

#![cfg(concord_planted_bugs)]

use concord_sim::{run_seed, PlantedBug, Property, SeedOutcome, SimOptions, StateMachineKind};

/// The first violating seed in `seeds`, if any.
fn first_violation(options: &SimOptions, seeds: std::ops::Range<u64>) -> Option<SeedOutcome> {
    seeds.map(|seed| run_seed(options, seed)).find(|outcome| !outcome.is_clean())
}

fn assert_caught(bug: PlantedBug, nodes: usize, seeds: std::ops::Range<u64>, expected: &[Property]) {
    assert_caught_with(SimOptions::new(nodes).with_bug(bug), seeds, expected);
}

/// A bug of concord-member's, which only the concord-mvcc state machine runs: caught with
/// 3 nodes and with 5.
fn assert_member_bug_caught(bug: PlantedBug, seeds: std::ops::Range<u64>, expected: &[Property]) {
    for nodes in [3, 5] {
        let options = SimOptions::new(nodes).with_bug(bug).with_state_machine(StateMachineKind::Mvcc);
        assert_caught_with(options, seeds.clone(), expected);
    }
}

fn assert_caught_with(options: SimOptions, seeds: std::ops::Range<u64>, expected: &[Property]) {
    let (bug, nodes) = (options.bug.expect("a planted bug"), options.nodes);
    let outcome = first_violation(&options, seeds.clone())
        .unwrap_or_else(|| panic!("bug {bug} was not caught in seeds {seeds:?} with {nodes} nodes"));
    let violation = outcome.violation.as_ref().expect("a violating outcome");
    assert!(
        expected.contains(&violation.property),
        "bug {bug} showed up as {violation} in seed {} (expected one of {expected:?})\n{}",
        outcome.seed,
        outcome.trace.join("\n")
    );
    assert!(!outcome.trace.is_empty(), "a violation comes with a trace");
    assert!(outcome.replay.contains(&format!("--bug {bug}")), "{}", outcome.replay);
}

/// A broken log shows up first as one of these.
const LOG_SAFETY: [Property; 4] =
    [Property::ElectionSafety, Property::LogMatching, Property::LeaderCompleteness, Property::StateMachineSafety];

#[test]
fn figure8_commit_by_counting_is_caught() {
    assert_caught(PlantedBug::Figure8, 3, 0..500, &LOG_SAFETY);
}

#[test]
fn figure8_commit_by_counting_is_caught_with_five_nodes() {
    assert_caught(PlantedBug::Figure8, 5, 0..1000, &LOG_SAFETY);
}

#[test]
fn a_forgotten_vote_is_caught() {
    assert_caught(PlantedBug::ForgetVote, 3, 0..200, &LOG_SAFETY);
}

#[test]
fn a_stale_read_is_caught() {
    assert_caught(PlantedBug::StaleRead, 3, 0..300, &[Property::Linearizability]);
}

/// Caught by the Follower Commit rule: in this core the early commit rarely covers a
/// divergent entry, so the four Raft properties alone seldom see it (docs/testing.md).
#[test]
fn committing_past_the_verified_prefix_is_caught() {
    assert_caught(PlantedBug::CommitPastMatch, 3, 0..200, &[Property::FollowerCommit]);
}

/// A quorum counted against the configuration before an uncommitted change commits
/// entries that a majority of the new configuration does not hold: the Commit Quorum
/// rule sees it at once (or a log property first, when the other side already elected).
#[test]
fn a_quorum_of_the_wrong_configuration_is_caught() {
    let expected = [Property::CommitQuorum, Property::LeaderCompleteness, Property::StateMachineSafety];
    assert_caught(PlantedBug::ConfigQuorum, 3, 0..100, &expected);
    assert_caught(PlantedBug::ConfigQuorum, 5, 0..100, &expected);
}

/// Without the Commit Quorum rule, the damage itself is caught: a leader elected by the
/// old configuration's majority lacks an entry the wrong quorum committed.
#[test]
fn a_quorum_of_the_wrong_configuration_breaks_the_raft_properties() {
    let mut options = SimOptions::new(5).with_bug(PlantedBug::ConfigQuorum);
    options.commit_quorum_check = false;
    assert_caught_with(options, 0..300, &LOG_SAFETY);
}

/// Outside the core: a member's waiters hand an applied entry's outcome to another
/// request than the one the entry carries. A client then gets an answer no order of the
/// requests gives it (a put answered as a compare-and-set), or its own answer never
/// comes; caught as linearizability or as a lost outcome, with 3 nodes and with 5.
#[test]
fn an_outcome_handed_to_the_wrong_waiter_is_caught() {
    assert_member_bug_caught(PlantedBug::WaiterMixup, 0..100, &[Property::Linearizability, Property::LostOutcome]);
}

/// Outside the core: every process numbers its ReadIndex rounds from 1, so the leader's
/// answer to a read of a node's previous process releases a read of the new one at an
/// old index: a stale read, caught as linearizability, with 3 nodes and with 5. It needs
/// the answer to outlive a restart (the aimed fault `read_crash_percent` makes that
/// happen), so it shows in fewer seeds than the others: hence the wider range.
#[test]
fn read_ids_reused_after_a_restart_are_caught() {
    assert_member_bug_caught(PlantedBug::ReadIdReuse, 0..1000, &[Property::Linearizability]);
}

/// Outside the core: a member's apply releases the reads waiting for an index when it
/// takes the batch holding that index, before the batch reaches the state machine. A
/// read on a node whose apply lags then misses a write another node had applied and
/// acknowledged: a stale read, caught as linearizability, with 3 nodes and with 5.
#[test]
fn reads_released_before_the_apply_commits_are_caught() {
    assert_member_bug_caught(PlantedBug::AckBeforeApply, 0..1000, &[Property::Linearizability]);
}

/// Outside the core: a watcher takes a live batch that starts past its next revision,
/// skipping the revisions between, instead of reading them from the store. The watchers
/// of the simulator lose live batches as a slow stream does; caught as `watch`, with 3
/// nodes and with 5.
#[test]
fn a_watcher_that_skips_a_gap_is_caught() {
    assert_member_bug_caught(PlantedBug::WatchSkip, 0..100, &[Property::Watch]);
}

/// Outside the core: every process numbers the writes it proposes from 1, so an entry a
/// node's previous process proposed, applied after the restart, answers the new request
/// that got the same id: caught as linearizability, with 3 nodes and with 5.
#[test]
fn request_ids_reused_after_a_restart_are_caught() {
    assert_member_bug_caught(PlantedBug::RequestIdReuse, 0..1000, &[Property::Linearizability]);
}
