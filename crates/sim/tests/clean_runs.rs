//! Runs of the correct core (no planted bug) must come out clean: no safety violation,
//! progress once faults heal, and a linearizable history.

use concord_sim::{run_seed, SimOptions};

fn assert_clean(nodes: usize, seeds: std::ops::Range<u64>) {
    let options = SimOptions::new(nodes);
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
    }
}

#[test]
fn fifty_seeds_of_three_nodes_are_clean() {
    assert_clean(3, 0..50);
}

#[test]
fn fifty_seeds_of_five_nodes_are_clean() {
    assert_clean(5, 0..50);
}

#[test]
fn ten_seeds_of_seven_nodes_are_clean() {
    assert_clean(7, 0..10);
}
