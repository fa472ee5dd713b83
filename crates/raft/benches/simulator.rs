//! Steps per second of the deterministic simulator (concord-sim) driving clusters of
//! cores through faults: how much protocol behaviour a CI minute explores.
//!
//! Run: `cargo bench -p concord-raft --bench simulator`.

use std::time::Instant;

use concord_sim::{run_seed, SimOptions};

fn main() {
    let quick = std::env::var_os("CONCORD_BENCH_QUICK").is_some();
    let seeds = if quick { 5 } else { 200 };
    println!("cluster   seeds      steps  seconds   steps/s  seeds/s");
    for nodes in [3, 5] {
        let options = SimOptions::new(nodes);
        let start = Instant::now();
        let mut steps = 0;
        for seed in 0..seeds {
            let outcome = run_seed(&options, seed);
            assert!(outcome.is_clean(), "seed {seed} failed: {:?}", outcome.violation);
            steps += outcome.stats.steps;
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{nodes} nodes {seeds:>7} {steps:>10} {seconds:>8.2} {:>9.0} {:>8.1}",
            steps as f64 / seconds,
            seeds as f64 / seconds
        );
    }
}
