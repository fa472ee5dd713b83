//! The ids a member gives the requests it proposes.
//!
//! An entry carries the proposing member's id and a request id, and when the member applies
//! it, the waiter registered under that id gets the entry's outcome. An entry proposed by a
//! previous process of the same member can still commit and be applied after a restart:
//! if the new process had given the same id to a new request, that request would be
//! answered with the old entry's outcome. So each process starts its ids where no earlier
//! process of the member has been: the server starts at its boot time in nanoseconds, the
//! simulator at a number drawn for each process.

use std::sync::atomic::{AtomicU64, Ordering};

/// A process's request ids (shared by the tasks that propose).
#[derive(Debug)]
pub struct RequestIds {
    next: AtomicU64,
}

impl RequestIds {
    /// Ids from `start` on (id 0 is never given).
    pub fn new(start: u64) -> Self {
        RequestIds { next: AtomicU64::new(start.max(1)) }
    }

    /// The planted bug `request-id-reuse` (simulator builds only): every process starts at
    /// 1.
    #[cfg(concord_planted_bugs)]
    pub fn planted_restart() -> Self {
        RequestIds::new(1)
    }

    /// An id no other request of this process uses.
    pub fn next_id(&self) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // A wrap-around takes 2^64 requests; id 0 stays unused even then.
        if id == 0 {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up_from_the_start_and_skip_zero() {
        let ids = RequestIds::new(u64::MAX);
        assert_eq!([ids.next_id(), ids.next_id(), ids.next_id()], [u64::MAX, 1, 2]);
        assert_eq!(RequestIds::new(0).next_id(), 1);
    }
}
