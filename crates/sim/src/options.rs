//! What one simulator run is asked to do: cluster size, run length, which planted bug (if
//! any) to switch on, and how much to print.
//!
//! Kept apart from the command line so tests can build options directly and call
//! [`crate::run_seed`] without going through `clap`.

use std::fmt;
use std::str::FromStr;

use concord_raft::PlantedBugs;

use crate::state_machine::StateMachineKind;

/// A known bug the core can be built to contain (`--cfg concord_planted_bugs`, see
/// [`PLANTED_BUGS_BUILD`]), so the simulator can show that its checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// A leader commits entries of earlier terms by counting replicas (Raft Figure 8).
    Figure8,
    /// A node does not persist its vote, so after a restart it may vote twice in a term.
    ForgetVote,
    /// A follower advances its commit index past the prefix it verified.
    CommitPastMatch,
    /// A leader answers ReadIndex without confirming it still leads.
    StaleRead,
    /// While a membership change is uncommitted, a leader counts the quorum size of the
    /// previous configuration over the voters of the new one.
    ConfigQuorum,
    /// Outside the core: a member's waiters (concord-member) hand an applied entry's
    /// outcome to another waiting request than the one the entry carries. Needs
    /// `--state-machine mvcc`, the mode whose writes go through those waiters.
    WaiterMixup,
    /// Outside the core: every member process numbers its ReadIndex rounds from 1, so an
    /// answer meant for a read of the previous process can release a new read at an old
    /// index (concord-member's `ReadIds`). Needs `--state-machine mvcc`.
    ReadIdReuse,
    /// Outside the core: a member's apply releases the reads waiting for an index as soon
    /// as it takes the batch holding it, before the batch is committed to the state
    /// machine (concord-member's `ApplyGate`). Needs `--state-machine mvcc`, whose apply
    /// runs apart from the Raft loop.
    AckBeforeApply,
    /// Outside the core: a watcher takes a live batch that starts past its next revision
    /// from the batch's start, skipping the revisions between, instead of catching up
    /// from the store (concord-member's `WatchCursor`). Needs `--state-machine mvcc`.
    WatchSkip,
    /// Outside the core: every member process numbers the writes it proposes from 1, so an
    /// entry of the previous process applied after a restart answers a new request of
    /// the same id (concord-member's `RequestIds`). Needs `--state-machine mvcc`.
    RequestIdReuse,
}

/// The environment a build needs for `--bug`: the cfg that compiles the bugs into
/// concord-raft, and a target directory of its own so that switching between the two
/// builds does not rebuild everything each time.
pub const PLANTED_BUGS_BUILD: &str = "RUSTFLAGS='--cfg concord_planted_bugs' CARGO_TARGET_DIR=target/planted";

/// Why a run with these options cannot happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("this concord-sim was built without planted bugs; build and run it with {PLANTED_BUGS_BUILD} (scripts/planted-bugs does)")]
    PlantedBugsNotCompiled,
    #[error("bug {0} lives in concord-member, which only --state-machine mvcc runs")]
    BugNeedsMvcc(PlantedBug),
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 10] = [
        PlantedBug::Figure8,
        PlantedBug::ForgetVote,
        PlantedBug::CommitPastMatch,
        PlantedBug::StaleRead,
        PlantedBug::ConfigQuorum,
        PlantedBug::WaiterMixup,
        PlantedBug::ReadIdReuse,
        PlantedBug::AckBeforeApply,
        PlantedBug::WatchSkip,
        PlantedBug::RequestIdReuse,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::Figure8 => "figure8",
            PlantedBug::ForgetVote => "forget-vote",
            PlantedBug::CommitPastMatch => "commit-past-match",
            PlantedBug::StaleRead => "stale-read",
            PlantedBug::ConfigQuorum => "config-quorum",
            PlantedBug::WaiterMixup => "waiter-mixup",
            PlantedBug::ReadIdReuse => "read-id-reuse",
            PlantedBug::AckBeforeApply => "ack-before-apply",
            PlantedBug::WatchSkip => "watch-skip",
            PlantedBug::RequestIdReuse => "request-id-reuse",
        }
    }

    /// The core's switches with only this bug on.
    pub fn switches(self) -> PlantedBugs {
        let mut bugs = PlantedBugs::default();
        match self {
            PlantedBug::Figure8 => bugs.figure8 = true,
            PlantedBug::ForgetVote => bugs.forget_vote = true,
            PlantedBug::CommitPastMatch => bugs.commit_past_match = true,
            PlantedBug::StaleRead => bugs.stale_read = true,
            PlantedBug::ConfigQuorum => bugs.config_quorum = true,
            // Not in the core (see `Simulation::start_node`).
            PlantedBug::WaiterMixup
            | PlantedBug::ReadIdReuse
            | PlantedBug::AckBeforeApply
            | PlantedBug::WatchSkip
            | PlantedBug::RequestIdReuse => {}
        }
        bugs
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlantedBug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == s).ok_or_else(|| {
            let names: Vec<_> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// Options of one run of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Cluster size: 3, 5 or 7.
    pub nodes: usize,
    /// Steps of the faulty phase (the liveness phase after it is bounded separately).
    pub steps: u64,
    /// The planted bug to switch on in every node, if any.
    pub bug: Option<PlantedBug>,
    /// Print every event as it happens (to stderr).
    pub verbose: bool,
    /// Check the Follower Commit rule on every message (on by default; turning it off
    /// shows what the four Raft properties alone would catch).
    pub follower_commit_check: bool,
    /// Check the Commit Quorum rule on every commit of a leader (on by default; turning
    /// it off shows what the other checks alone would catch).
    pub commit_quorum_check: bool,
    /// The state machine every node runs.
    pub state_machine: StateMachineKind,
}

impl SimOptions {
    pub const DEFAULT_STEPS: u64 = 10_000;
    pub const ALLOWED_NODE_COUNTS: [usize; 3] = [3, 5, 7];

    pub fn new(nodes: usize) -> Self {
        SimOptions {
            nodes,
            steps: Self::DEFAULT_STEPS,
            bug: None,
            verbose: false,
            follower_commit_check: true,
            commit_quorum_check: true,
            state_machine: StateMachineKind::Map,
        }
    }

    pub fn with_state_machine(mut self, kind: StateMachineKind) -> Self {
        self.state_machine = kind;
        self
    }

    pub fn with_bug(mut self, bug: PlantedBug) -> Self {
        self.bug = Some(bug);
        self
    }

    /// Refuses a planted bug this run cannot plant (not compiled in, or not in the state
    /// machine chosen): a run that silently left the bug out would report a clean run of
    /// a check that was never put to the test.
    pub fn validate(&self) -> Result<(), OptionsError> {
        match self.bug {
            Some(_) if !concord_raft::PLANTED_BUGS_COMPILED => Err(OptionsError::PlantedBugsNotCompiled),
            Some(
                bug @ (PlantedBug::WaiterMixup
                | PlantedBug::ReadIdReuse
                | PlantedBug::AckBeforeApply
                | PlantedBug::WatchSkip
                | PlantedBug::RequestIdReuse),
            ) if self.state_machine != StateMachineKind::Mvcc => Err(OptionsError::BugNeedsMvcc(bug)),
            _ => Ok(()),
        }
    }

    /// The command that replays `seed` alone with these options.
    pub fn replay_command(&self, seed: u64) -> String {
        let build = if self.bug.is_some() { format!("{PLANTED_BUGS_BUILD} ") } else { String::new() };
        let mut command =
            format!("{build}cargo run --release -p concord-sim -- --seeds {seed}..{} --nodes {}", seed + 1, self.nodes);
        if let Some(bug) = self.bug {
            command.push_str(&format!(" --bug {bug}"));
        }
        if self.state_machine != StateMachineKind::Map {
            command.push_str(&format!(" --state-machine {}", self.state_machine));
        }
        if self.steps != Self::DEFAULT_STEPS {
            command.push_str(&format!(" --steps {}", self.steps));
        }
        if !self.follower_commit_check {
            command.push_str(" --no-follower-commit-check");
        }
        if !self.commit_quorum_check {
            command.push_str(" --no-commit-quorum-check");
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_bug_is_refused_exactly_when_it_cannot_be_planted() {
        let with_bug = SimOptions::new(3).with_bug(PlantedBug::StaleRead);
        let compiled = concord_raft::PLANTED_BUGS_COMPILED;
        let expected = if compiled { Ok(()) } else { Err(OptionsError::PlantedBugsNotCompiled) };
        assert_eq!(with_bug.validate(), expected);
        assert_eq!(SimOptions::new(3).validate(), Ok(()));
        if compiled {
            let mixup = SimOptions::new(3).with_bug(PlantedBug::WaiterMixup);
            assert_eq!(mixup.validate(), Err(OptionsError::BugNeedsMvcc(PlantedBug::WaiterMixup)));
            assert_eq!(mixup.with_state_machine(StateMachineKind::Mvcc).validate(), Ok(()));
        }
    }

    #[test]
    fn bug_names_round_trip() {
        for bug in PlantedBug::ALL {
            assert_eq!(bug.name().parse::<PlantedBug>(), Ok(bug));
        }
        assert!("figure-9".parse::<PlantedBug>().is_err());
    }

    #[test]
    fn the_replay_command_names_everything_that_differs_from_the_defaults() {
        let options = SimOptions::new(5).with_bug(PlantedBug::Figure8);
        assert_eq!(
            options.replay_command(1234),
            "RUSTFLAGS='--cfg concord_planted_bugs' CARGO_TARGET_DIR=target/planted \
             cargo run --release -p concord-sim -- --seeds 1234..1235 --nodes 5 --bug figure8"
        );
        let mut longer = SimOptions::new(3);
        longer.steps = 100;
        assert_eq!(
            longer.replay_command(7),
            "cargo run --release -p concord-sim -- --seeds 7..8 --nodes 3 --steps 100"
        );
    }
}
