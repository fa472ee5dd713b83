//! What running seeds found: the outcome of one seed and the counters that add up over a
//! run, kept apart from the runner so the command line and tests depend only on these.

use serde::Serialize;

use crate::invariants::Violation;

/// Counters of one seed (or, summed, of a whole run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SeedStats {
    pub steps: u64,
    pub elections: u64,
    pub commits: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Leadership transfers asked for.
    pub transfers: u64,
    pub messages: u64,
    pub reads: u64,
    pub writes: u64,
    pub failed_ops: u64,
    pub unknown_ops: u64,
    /// Largest history (operations, however they ended) of one seed.
    pub max_history: u64,
    /// Steps the liveness phase needed to commit its probe.
    pub liveness_steps: u64,
}

impl SeedStats {
    pub fn add(&mut self, other: &SeedStats) {
        self.steps += other.steps;
        self.elections += other.elections;
        self.commits += other.commits;
        self.crashes += other.crashes;
        self.partitions += other.partitions;
        self.transfers += other.transfers;
        self.messages += other.messages;
        self.reads += other.reads;
        self.writes += other.writes;
        self.failed_ops += other.failed_ops;
        self.unknown_ops += other.unknown_ops;
        self.max_history = self.max_history.max(other.max_history);
        self.liveness_steps = self.liveness_steps.max(other.liveness_steps);
    }
}

/// What running one seed found.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    pub seed: u64,
    pub violation: Option<Violation>,
    /// The last events before the end of the run (or the violation), one per line.
    pub trace: Vec<String>,
    pub stats: SeedStats,
    /// The command that replays this seed alone.
    pub replay: String,
}

impl SeedOutcome {
    pub fn is_clean(&self) -> bool {
        self.violation.is_none()
    }
}
