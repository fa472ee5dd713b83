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
    /// Steps the liveness phase needed until every member had caught up.
    pub convergence_steps: u64,
    /// Membership changes committed (configuration entries in the committed log).
    pub conf_changes: u64,
    /// Membership changes the leader accepted (appended), and those it refused.
    pub conf_changes_proposed: u64,
    pub conf_changes_refused: u64,
    /// Fresh nodes started to join, and removed nodes stopped for good.
    pub nodes_added: u64,
    pub nodes_retired: u64,
    /// Snapshots nodes took of their own state machine (each followed by a compaction).
    pub snapshots_taken: u64,
    /// Snapshots followers installed from a leader, and the chunks they staged.
    pub snapshots_installed: u64,
    pub snapshot_chunks: u64,
    /// Restarts that restored the state machine from a durable snapshot.
    pub snapshot_restores: u64,
    /// Crashes in the middle of a snapshot transfer (staged chunks lost) or right after
    /// an install that was not yet durable.
    pub transfer_crashes: u64,
    /// Watches started (`--state-machine mvcc`), live batches of events lost for one of
    /// them, and catch-up reads of a node's store they made.
    pub watchers_started: u64,
    pub watch_batches_lost: u64,
    pub watch_catch_up_reads: u64,
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
        self.convergence_steps = self.convergence_steps.max(other.convergence_steps);
        self.conf_changes += other.conf_changes;
        self.conf_changes_proposed += other.conf_changes_proposed;
        self.conf_changes_refused += other.conf_changes_refused;
        self.nodes_added += other.nodes_added;
        self.nodes_retired += other.nodes_retired;
        self.snapshots_taken += other.snapshots_taken;
        self.snapshots_installed += other.snapshots_installed;
        self.snapshot_chunks += other.snapshot_chunks;
        self.snapshot_restores += other.snapshot_restores;
        self.transfer_crashes += other.transfer_crashes;
        self.watchers_started += other.watchers_started;
        self.watch_batches_lost += other.watch_batches_lost;
        self.watch_catch_up_reads += other.watch_catch_up_reads;
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
