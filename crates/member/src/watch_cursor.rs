//! Where one watcher is in the history, and what it takes from each batch of events.
//!
//! A watcher owes every matching event from its start revision on, exactly once and in
//! revision order. Applied events reach it in live batches (each a run of consecutive
//! revisions, in order), but a batch need not continue from where the watcher is: the
//! watch started in the past, batches were dropped for a slow stream, a snapshot from the
//! leader brought revisions that never passed as events. Then the watcher reads the store
//! from its next revision (a catch-up) until it reaches the live batches again, and
//! ignores what a live batch brings that it already has. Taking a batch that starts past
//! its next revision would skip the revisions in between, silently: that is the one
//! thing this type exists to refuse.
//!
//! The server's watch streams (crates/server/src/watch.rs) keep one per watcher; the
//! simulator (`--state-machine mvcc`) runs the same one against its history.

/// Whether a watcher takes live batches, reads the store, or is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorState {
    /// Takes events from live batches that continue from its next revision.
    Live,
    /// Reads the store from its next revision before it takes live batches again.
    CatchingUp,
    /// Its next revision was compacted away: the watch is canceled.
    Compacted,
}

/// One watcher's place in the history (see the module documentation).
#[derive(Debug, Clone)]
pub struct WatchCursor {
    /// The first revision not yet considered for this watcher.
    next: i64,
    state: CursorState,
    /// Past its first read: a later catch-up may not start at the compacted revision
    /// itself (a compaction at C removes the tombstones of C).
    resumed: bool,
    /// The planted bug `watch-skip`.
    #[cfg(concord_planted_bugs)]
    skips_gaps: bool,
}

impl WatchCursor {
    /// A watcher from revision `start` (at least 1) of a store at revision `current`: one
    /// that starts at or before `current` catches up first.
    pub fn new(start: i64, current: i64) -> Self {
        let state = if start <= current { CursorState::CatchingUp } else { CursorState::Live };
        WatchCursor {
            next: start,
            state,
            resumed: false,
            #[cfg(concord_planted_bugs)]
            skips_gaps: false,
        }
    }

    /// The planted bug `watch-skip` (simulator builds only): a live batch that starts past
    /// the watcher's next revision is taken from its start, skipping the revisions between.
    #[cfg(concord_planted_bugs)]
    pub fn plant_gap_skip(&mut self) {
        self.skips_gaps = true;
    }

    /// The first revision not yet considered.
    pub fn next(&self) -> i64 {
        self.next
    }

    pub fn state(&self) -> CursorState {
        self.state
    }

    /// Whether a catch-up read is a resumed one (see `resumed`).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// A live batch of the revisions `first..=last`: the revision from which the watcher
    /// takes its events (it has considered everything before), or `None` if it takes
    /// nothing from it, having everything already or being sent to catch up by a gap.
    pub fn take_live(&mut self, first: i64, last: i64) -> Option<i64> {
        debug_assert!(first <= last, "a batch of revisions {first}..={last}");
        if self.state != CursorState::Live || self.next > last {
            return None;
        }
        if self.next < first {
            #[cfg(concord_planted_bugs)]
            if self.skips_gaps {
                self.next = first;
            }
            if self.next < first {
                self.state = CursorState::CatchingUp;
                return None;
            }
        }
        let from = self.next;
        self.next = last + 1;
        self.resumed = true;
        Some(from)
    }

    /// Revisions through `published` were applied (sent as live batches or brought by a
    /// snapshot) and no live batch is queued for this stream: a live watcher that still
    /// owes one of them catches up.
    pub fn notice_published(&mut self, published: i64) {
        if self.state == CursorState::Live && self.next <= published {
            self.state = CursorState::CatchingUp;
        }
    }

    /// A catch-up read returned the revisions through `through` of a store at `current`.
    pub fn caught_up(&mut self, through: i64, current: i64) {
        debug_assert_eq!(self.state, CursorState::CatchingUp, "a catch-up read while {:?}", self.state);
        self.next = self.next.max(through + 1);
        self.resumed = true;
        if through >= current {
            self.state = CursorState::Live;
        }
    }

    /// The catch-up found its next revision compacted: the watch ends.
    pub fn compacted(&mut self) {
        self.state = CursorState::Compacted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_in_the_past_catches_up_then_takes_only_what_continues() {
        let mut cursor = WatchCursor::new(3, 10);
        assert_eq!(cursor.state(), CursorState::CatchingUp);
        assert_eq!(cursor.take_live(11, 12), None, "not live yet");
        cursor.caught_up(10, 12);
        assert_eq!((cursor.state(), cursor.next()), (CursorState::CatchingUp, 11), "the store moved on meanwhile");
        cursor.caught_up(12, 12);
        assert_eq!(cursor.state(), CursorState::Live);
        assert_eq!(cursor.take_live(11, 12), None, "already read");
        assert_eq!(cursor.take_live(12, 14), Some(13), "the rest of an overlapping batch");
        assert_eq!(cursor.next(), 15);
        // A gap: batches 15..=16 were dropped.
        assert_eq!(cursor.take_live(17, 18), None);
        assert_eq!(cursor.state(), CursorState::CatchingUp);
        assert_eq!(cursor.next(), 15, "nothing skipped");
    }

    #[test]
    fn a_future_watch_is_live_and_a_snapshot_sends_it_to_the_store() {
        let mut cursor = WatchCursor::new(11, 10);
        assert_eq!(cursor.state(), CursorState::Live);
        assert_eq!(cursor.take_live(11, 11), Some(11));
        cursor.notice_published(11);
        assert_eq!(cursor.state(), CursorState::Live, "owes nothing published");
        cursor.notice_published(20);
        assert_eq!(cursor.state(), CursorState::CatchingUp);
        cursor.compacted();
        assert_eq!(cursor.state(), CursorState::Compacted);
        assert_eq!(cursor.take_live(12, 30), None);
    }
}
