//! Runs of the correct core (no planted bug) must come out clean: no safety violation,
//! progress once faults heal, and a linearizable history; and the runs must really
//! exercise membership changes, snapshots and compaction.

use concord_sim::{run_seed, SeedStats, SimOptions, StateMachineKind};

fn assert_clean(nodes: usize, seeds: std::ops::Range<u64>) -> SeedStats {
    assert_clean_with(SimOptions::new(nodes), seeds)
}

fn assert_clean_with(options: SimOptions, seeds: std::ops::Range<u64>) -> SeedStats {
    let nodes = options.nodes;
    let mut totals = SeedStats::default();
    for seed in seeds {
        let outcome = run_seed(&options, seed);
        if let Some(violation) = &outcome.violation {
            panic!(
                "seed {seed} with {nodes} nodes: {violation}\nreplay: {}\n{}",
                outcome.replay,
                outcome.trace.join("\n")
            );
        }
        assert!(outcome.stats.elections > 0, "seed {seed}: no leader was ever elected");
        assert!(outcome.stats.commits > 0, "seed {seed}: nothing was ever committed");
        totals.add(&outcome.stats);
    }
    totals
}

/// What the runs must have done, summed over the seeds: every kind of membership change
/// and snapshot event the simulator claims to cover.
fn assert_exercised(totals: &SeedStats) {
    let counters = [
        ("conf_changes", totals.conf_changes),
        ("nodes_added", totals.nodes_added),
        ("nodes_retired", totals.nodes_retired),
        ("snapshots_taken", totals.snapshots_taken),
        ("snapshots_installed", totals.snapshots_installed),
        ("snapshot_restores", totals.snapshot_restores),
        ("transfer_crashes", totals.transfer_crashes),
    ];
    for (name, value) in counters {
        assert!(value > 0, "no {name} in the runs: {totals:?}");
    }
    assert!(totals.snapshot_chunks > totals.snapshots_installed, "no snapshot took more than one chunk: {totals:?}");
}

#[test]
fn fifty_seeds_of_three_nodes_are_clean() {
    let totals = assert_clean(3, 0..50);
    assert_exercised(&totals);
}

#[test]
fn fifty_seeds_of_five_nodes_are_clean() {
    let totals = assert_clean(5, 0..50);
    assert_exercised(&totals);
}

#[test]
fn ten_seeds_of_seven_nodes_are_clean() {
    assert_clean(7, 0..10);
}

/// The product's store (concord-mvcc) as every node's state machine: its apply, revisions
/// and snapshot stream under the same faults and checks.
#[test]
fn thirty_seeds_with_concord_mvcc_as_the_state_machine_are_clean() {
    let options = SimOptions::new(3).with_state_machine(StateMachineKind::Mvcc);
    let mut totals = assert_clean_with(options.clone(), 0..20);
    totals.add(&assert_clean_with(SimOptions { nodes: 5, ..options }, 0..10));
    assert_exercised(&totals);
    // The watch check had something to check: watches started, lost batches, catch-ups.
    for (name, value) in [
        ("watchers_started", totals.watchers_started),
        ("watch_batches_lost", totals.watch_batches_lost),
        ("watch_catch_up_reads", totals.watch_catch_up_reads),
    ] {
        assert!(value > 0, "no {name} in the runs: {totals:?}");
    }
}
