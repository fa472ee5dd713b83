//! The `concord-sim` command: runs a range of seeds and exits 0 only if all are clean.
//!
//! ```text
//! cargo run --release -p concord-sim -- --seeds 0..500 [--nodes 3|5|7] [--bug NAME]
//!     [--steps S] [--keep-going] [--summary-json] [--verbose] [--no-follower-commit-check]
//!     [--no-commit-quorum-check] [--state-machine map|mvcc]
//! ```
//!
//! A failing seed prints a `violation:` line (property, seed, replay command), the
//! details, and the last events of that seed; the run stops there unless `--keep-going`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use concord_sim::{run_seed, PlantedBug, SeedOutcome, SeedStats, SimOptions, StateMachineKind};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(name = "concord-sim", about = "Deterministic fault-injection simulator for the concord Raft core")]
struct Args {
    /// Seeds to run, as a half-open range `FIRST..END`.
    #[arg(long, value_parser = parse_seed_range, default_value = "0..100")]
    seeds: Range<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = parse_node_count)]
    nodes: usize,
    /// Plant a known bug in every node: figure8, forget-vote, commit-past-match, stale-read,
    /// config-quorum, waiter-mixup, read-id-reuse, ack-before-apply, watch-skip and request-id-reuse (the last five with --state-machine mvcc).
    #[arg(long)]
    bug: Option<PlantedBug>,
    /// The state machine every node runs: `map` (a plain map) or `mvcc` (concord's store).
    #[arg(long, default_value = "map")]
    state_machine: StateMachineKind,
    /// Steps of the faulty phase of each seed.
    #[arg(long, default_value_t = SimOptions::DEFAULT_STEPS)]
    steps: u64,
    /// Run every seed even after a violation.
    #[arg(long)]
    keep_going: bool,
    /// Print one JSON object with the totals at the end.
    #[arg(long)]
    summary_json: bool,
    /// Print every event of every seed to stderr.
    #[arg(long)]
    verbose: bool,
    /// Do not check the Follower Commit rule (to see what the Raft properties alone catch).
    #[arg(long)]
    no_follower_commit_check: bool,
    /// Do not check the Commit Quorum rule (to see what the other checks alone catch).
    #[arg(long)]
    no_commit_quorum_check: bool,
}

fn parse_seed_range(text: &str) -> Result<Range<u64>, String> {
    let (first, end) = text.split_once("..").ok_or_else(|| format!("expected FIRST..END, got {text:?}"))?;
    let first: u64 = first.parse().map_err(|e| format!("bad first seed: {e}"))?;
    let end: u64 = end.parse().map_err(|e| format!("bad end seed: {e}"))?;
    if end <= first {
        return Err(format!("empty seed range {first}..{end}"));
    }
    Ok(first..end)
}

fn parse_node_count(text: &str) -> Result<usize, String> {
    let count: usize = text.parse().map_err(|e| format!("{e}"))?;
    if SimOptions::ALLOWED_NODE_COUNTS.contains(&count) {
        Ok(count)
    } else {
        Err(format!("a cluster has 3, 5 or 7 nodes, not {count}"))
    }
}

#[derive(Serialize)]
struct Summary {
    nodes: usize,
    state_machine: String,
    bug: Option<String>,
    seeds: u64,
    clean_seeds: u64,
    violations: u64,
    first_violation_seed: Option<u64>,
    /// Violating seeds per property broken.
    violations_by_property: BTreeMap<String, u64>,
    elapsed_ms: u128,
    #[serde(flatten)]
    totals: SeedStats,
}

fn report(outcome: &SeedOutcome) {
    let Some(violation) = &outcome.violation else {
        return;
    };
    println!("violation: {} in seed {} -- replay: {}", violation.property, outcome.seed, outcome.replay);
    for line in violation.detail.lines() {
        println!("  {line}");
    }
    println!("last {} events of seed {}:", outcome.trace.len(), outcome.seed);
    for line in &outcome.trace {
        println!("  {line}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = SimOptions {
        nodes: args.nodes,
        steps: args.steps,
        bug: args.bug,
        verbose: args.verbose,
        follower_commit_check: !args.no_follower_commit_check,
        commit_quorum_check: !args.no_commit_quorum_check,
        state_machine: args.state_machine,
    };
    if let Err(error) = options.validate() {
        eprintln!("concord-sim: {error}");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut totals = SeedStats::default();
    let mut seeds_run = 0;
    let mut violations = 0;
    let mut first_violation_seed = None;
    let mut violations_by_property = BTreeMap::new();
    for seed in args.seeds.clone() {
        let outcome = run_seed(&options, seed);
        seeds_run += 1;
        totals.add(&outcome.stats);
        if !outcome.is_clean() {
            violations += 1;
            first_violation_seed.get_or_insert(seed);
            if let Some(violation) = &outcome.violation {
                *violations_by_property.entry(violation.property.to_string()).or_default() += 1;
            }
            report(&outcome);
            if !args.keep_going {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let bug = args.bug.map(|b| b.to_string());
    println!(
        "{} of {} seeds clean ({} nodes, {} state machine{}) in {:.1} s",
        seeds_run - violations,
        seeds_run,
        args.nodes,
        args.state_machine,
        bug.as_ref().map_or(String::new(), |b| format!(", bug {b}")),
        elapsed.as_secs_f64()
    );
    if args.summary_json {
        let summary = Summary {
            nodes: args.nodes,
            state_machine: args.state_machine.to_string(),
            bug,
            seeds: seeds_run,
            clean_seeds: seeds_run - violations,
            violations,
            first_violation_seed,
            violations_by_property,
            elapsed_ms: elapsed.as_millis(),
            totals,
        };
        println!("{}", serde_json::to_string(&summary).expect("the summary serializes"));
    }
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
