//! The request ids a member gives its ReadIndex rounds.
//!
//! A follower asks the leader for a read index under an id, and the leader's answer
//! carries the id back; the core hands the answer out as a `ReadState` for that id, and
//! the member releases the reads it sent under it. Matching is by id alone, so an id must
//! not be reused while an answer for its earlier use may still arrive. Within a process
//! the ids count up (a wrap-around takes 2^64 rounds). Across a restart, an answer sent
//! to the previous process can still be in flight: if every process started at 1, that
//! answer would release a new read at the old index, a stale linearizable read. So each
//! process starts at a random point of the 2^64 ids.

/// A process's ReadIndex ids.
#[derive(Debug)]
pub struct ReadIds {
    next: u64,
}

impl ReadIds {
    /// Ids from `random_start` on (drawn from the operating system's randomness by the
    /// server, from the seed by the simulator). Id 0 is never given.
    pub fn new(random_start: u64) -> Self {
        ReadIds { next: random_start.max(1) }
    }

    /// The planted bug `read-id-reuse` (simulator builds only): every process starts at
    /// 1, as concord's did before this module.
    #[cfg(concord_planted_bugs)]
    pub fn planted_reuse() -> Self {
        ReadIds { next: 1 }
    }

    /// The id for the next round.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up_from_the_start_and_skip_zero() {
        let mut ids = ReadIds::new(u64::MAX - 1);
        assert_eq!([ids.next_id(), ids.next_id(), ids.next_id()], [u64::MAX - 1, u64::MAX, 1]);
        assert_eq!(ReadIds::new(0).next_id(), 1);
    }
}
