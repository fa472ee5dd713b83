//! The index through which a member answers linearizable reads: what its state machine
//! holds, and not one entry more.
//!
//! A linearizable read waits until the member has applied its read index, then reads the
//! state machine. The apply takes committed entries in batches; between taking a batch
//! and committing it to the store, the entries are neither visible to readers nor lost
//! (the log holds them). Releasing reads at the index of a batch taken but not yet
//! committed lets a read miss a write that was already acknowledged elsewhere: a stale
//! read. So the gate opens at an index only once the store's commit through it is done.

use concord_raft::Index;

/// The apply's progress, and the reads it releases.
#[derive(Debug, Default)]
pub struct ApplyGate {
    /// Entries through here were taken for applying.
    taken: Index,
    /// Entries through here are committed to the state machine (or came with a
    /// snapshot it was restored from).
    applied: Index,
    /// The planted bug `ack-before-apply`.
    #[cfg(concord_planted_bugs)]
    early: bool,
}

impl ApplyGate {
    /// A state machine that holds the entries through `applied`.
    pub fn new(applied: Index) -> Self {
        ApplyGate {
            taken: applied,
            applied,
            #[cfg(concord_planted_bugs)]
            early: false,
        }
    }

    /// The planted bug `ack-before-apply` (simulator builds only): reads are released as
    /// soon as a batch is taken, before its commit.
    #[cfg(concord_planted_bugs)]
    pub fn plant_early_release(&mut self) {
        self.early = true;
    }

    /// A batch ending at `through` was taken for applying.
    pub fn taken(&mut self, through: Index) {
        self.taken = self.taken.max(through);
    }

    /// The state machine committed the entries through `through` (an apply, or a restore
    /// from a snapshot at that index).
    pub fn committed(&mut self, through: Index) {
        self.applied = self.applied.max(through);
        self.taken = self.taken.max(through);
    }

    /// Reads whose index is at or below this may be answered from the state machine.
    pub fn reads_through(&self) -> Index {
        #[cfg(concord_planted_bugs)]
        if self.early {
            return self.taken;
        }
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_released_only_through_what_is_committed() {
        let mut gate = ApplyGate::new(5);
        assert_eq!(gate.reads_through(), 5);
        gate.taken(9);
        assert_eq!(gate.reads_through(), 5, "taken is not readable");
        gate.committed(7);
        assert_eq!(gate.reads_through(), 7);
        gate.committed(9);
        assert_eq!(gate.reads_through(), 9);
        // A restore from a snapshot past everything taken.
        gate.committed(20);
        assert_eq!(gate.reads_through(), 20);
    }
}
