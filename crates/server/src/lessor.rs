//! The leader's lease clock: when each lease expires, which leases to checkpoint, and
//! whether a keep-alive must first clear a checkpoint through the log.
//!
//! Leases themselves (id, TTL, attached keys, the last checkpoint) are replicated state in
//! concord-mvcc. Their deadlines are not: only the leader times leases, from its own
//! monotonic clock, and decides expiry by proposing a `LeaseExpire` that names its term
//! (refused at apply in any other term, so a deposed or stale leader never revokes).
//!
//! The rules that make a lease neither expire early nor live forever across leader changes
//! (docs/lease.md states the resulting guarantee):
//!
//! - The lessor works only once its member leads *and* has applied an entry of its own
//!   term ([`Lessor::promote`]): by then it holds every lease change committed before its
//!   term, an expiry proposed by an earlier leader included.
//! - A new leader gives each lease its checkpointed remaining TTL, or the whole TTL if none
//!   is recorded.
//! - A lease whose remaining TTL fell `checkpoint_lag(ttl)` below what the log records is
//!   checkpointed (a bounded batch per round), so the log never overstates it by much: a
//!   new leader extends a lease by at most that lag plus the election's duration. A lease
//!   kept alive every TTL/3 (as clients do) never falls that far, so healthy keep-alives
//!   stay off the log.
//! - A keep-alive of a lease with a checkpoint in force clears it through the log before it
//!   is answered ([`Renewal::ClearCheckpointFirst`]): otherwise a new leader would continue
//!   from the checkpoint and expire the lease before TTL after the keep-alive.
//!
//! The state is plain data driven by explicit `now` instants, so the rules are tested
//! without clocks; the task that drives it lives in `lease`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concord_mvcc::{Command, Lease, LeaseCheckpoint, MvccError, Response, Store};

/// Most leases one checkpoint entry carries.
pub const MAX_CHECKPOINTS_PER_ENTRY: usize = 1000;
/// Longest a lease may go uncheckpointed while its remaining TTL falls (for long TTLs).
const MAX_CHECKPOINT_LAG: Duration = Duration::from_secs(5);
/// How long an expiry that has not been applied waits before it is proposed again (its
/// proposal may have been lost with a leader change, or refused at apply).
const EXPIRY_RETRY: Duration = Duration::from_secs(3);

/// How far a lease's remaining TTL may fall below what the log records before it is
/// checkpointed: half its TTL, at most [`MAX_CHECKPOINT_LAG`]. Clients renew every TTL/3,
/// so a kept-alive lease never reaches it.
pub fn checkpoint_lag(ttl: Duration) -> Duration {
    (ttl / 2).min(MAX_CHECKPOINT_LAG)
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// One lease as the leader times it.
#[derive(Clone, Debug)]
struct Timer {
    ttl: Duration,
    deadline: Instant,
    /// The remaining TTL the log holds for this lease (its TTL if no checkpoint is in
    /// force): a leader taking over now would give the lease this long.
    recorded: Duration,
    /// A checkpoint below the TTL is in the log (or proposed): a keep-alive must clear it.
    checkpointed: bool,
    /// When its expiry was last proposed.
    expiry_proposed: Option<Instant>,
}

impl Timer {
    fn new(ttl: Duration, remaining: Option<Duration>, now: Instant) -> Timer {
        let left = remaining.unwrap_or(ttl);
        Timer { ttl, deadline: now + left, recorded: left, checkpointed: remaining.is_some(), expiry_proposed: None }
    }

    fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// A leader taking over now would give the lease at least the lag more than it has.
    fn needs_checkpoint(&self, now: Instant) -> bool {
        now < self.deadline && self.recorded.saturating_sub(self.remaining(now)) >= checkpoint_lag(self.ttl)
    }
}

/// What a keep-alive at the leader comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// No such lease: etcd answers TTL 0.
    NotFound,
    /// Renewed for its TTL (seconds).
    Renewed(i64),
    /// The lease has a checkpoint in the log: clear it (a checkpoint of 0) and renew again.
    ClearCheckpointFirst,
    /// This member does not time leases now (not the leader, or not yet caught up with
    /// its own term): ask again shortly, or ask the leader.
    NotTiming,
}

#[derive(Default)]
struct State {
    /// The term this member leads and times leases in; `None` when it does not.
    term: Option<u64>,
    timers: HashMap<i64, Timer>,
}

/// The lease clock of one member (see the module docs).
#[derive(Default)]
pub struct Lessor {
    state: Mutex<State>,
    /// Term of the last entry the state machine applied.
    applied_term: AtomicU64,
}

impl Lessor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The term this member times leases in, if it does.
    pub fn timing_term(&self) -> Option<u64> {
        self.state().term
    }

    /// The apply task records the term of each batch's last entry.
    pub fn set_applied_term(&self, term: u64) {
        self.applied_term.store(term, Ordering::Release);
    }

    pub fn applied_term(&self) -> u64 {
        self.applied_term.load(Ordering::Acquire)
    }

    /// Starts timing every lease in the store, for a member that leads in `term` and has
    /// applied an entry of it. The store is read under the lessor's lock, so no applied
    /// change can fall between the read and the start (apply notifications wait for it).
    pub fn promote(&self, term: u64, store: &Store, now: Instant) -> Result<usize, MvccError> {
        let mut state = self.state();
        let leases = store.lease_timers()?;
        state.timers = leases.iter().map(|lease| (lease.id, timer_for(lease, now))).collect();
        state.term = Some(term);
        Ok(state.timers.len())
    }

    /// Stops timing (no longer the leader, or a newer term).
    pub fn demote(&self) {
        let mut state = self.state();
        state.term = None;
        state.timers = HashMap::new();
    }

    /// Follows an applied command (only while timing; harmless to repeat).
    pub fn on_applied(&self, command: &Command, response: &Response, now: Instant) {
        let mut state = self.state();
        if state.term.is_none() {
            return;
        }
        match (command, response) {
            (Command::LeaseGrant(grant), Response::LeaseGrant(_)) => {
                state.timers.insert(grant.id, Timer::new(seconds(grant.ttl), None, now));
            }
            (Command::LeaseRevoke(revoke), Response::LeaseRevoke(_)) => {
                state.timers.remove(&revoke.id);
            }
            (Command::LeaseExpire(expire), Response::LeaseRevoke(_)) => {
                state.timers.remove(&expire.id);
            }
            (Command::LeaseCheckpoint(checkpoint), Response::LeaseCheckpoint) => {
                for entry in &checkpoint.checkpoints {
                    if let Some(timer) = state.timers.get_mut(&entry.id) {
                        let cleared = entry.remaining_ttl <= 0 || seconds(entry.remaining_ttl) >= timer.ttl;
                        if cleared {
                            timer.checkpointed = false;
                            timer.recorded = timer.ttl;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A keep-alive that reached the leader in `term`, whose leadership was confirmed
    /// after the keep-alive arrived.
    pub fn renew(&self, id: i64, term: u64, now: Instant) -> Renewal {
        let mut state = self.state();
        if state.term != Some(term) {
            return Renewal::NotTiming;
        }
        let Some(timer) = state.timers.get_mut(&id) else {
            return Renewal::NotFound;
        };
        if timer.checkpointed {
            return Renewal::ClearCheckpointFirst;
        }
        timer.deadline = now + timer.ttl;
        timer.recorded = timer.ttl;
        timer.expiry_proposed = None;
        Renewal::Renewed(i64::try_from(timer.ttl.as_secs()).unwrap_or(i64::MAX))
    }

    /// `(granted TTL, remaining)` of a lease this leader times.
    pub fn time_to_live(&self, id: i64, term: u64, now: Instant) -> Option<(Duration, Duration)> {
        let state = self.state();
        if state.term != Some(term) {
            return None;
        }
        state.timers.get(&id).map(|timer| (timer.ttl, timer.remaining(now)))
    }

    /// Leases past their deadline whose expiry is not already on its way, at most `limit`,
    /// earliest first; each is marked as proposed. With the term they are decided in.
    pub fn take_expired(&self, now: Instant, limit: usize) -> Option<(u64, Vec<i64>)> {
        let mut state = self.state();
        let term = state.term?;
        let mut due: Vec<(Instant, i64)> = state
            .timers
            .iter()
            .filter(|(_, t)| t.deadline <= now && t.expiry_proposed.is_none_or(|at| now >= at + EXPIRY_RETRY))
            .map(|(id, t)| (t.deadline, *id))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        for (_, id) in &due {
            if let Some(timer) = state.timers.get_mut(id) {
                timer.expiry_proposed = Some(now);
            }
        }
        Some((term, due.into_iter().map(|(_, id)| id).collect()))
    }

    /// Leases whose logged remaining TTL overstates the real one by the lag, at most
    /// [`MAX_CHECKPOINTS_PER_ENTRY`], in id order; each counts as recorded from now on.
    pub fn take_checkpoints(&self, now: Instant) -> Option<(u64, Vec<LeaseCheckpoint>)> {
        let mut state = self.state();
        let term = state.term?;
        let mut due: Vec<i64> =
            state.timers.iter().filter(|(_, t)| t.needs_checkpoint(now)).map(|(id, _)| *id).collect();
        due.sort_unstable();
        due.truncate(MAX_CHECKPOINTS_PER_ENTRY);
        let mut checkpoints = Vec::with_capacity(due.len());
        for id in due {
            let Some(timer) = state.timers.get_mut(&id) else { continue };
            // Whole seconds, rounded up: the log may overstate a lease, never understate it.
            let remaining = timer.remaining(now);
            let remaining_ttl = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
            timer.recorded = Duration::from_secs(remaining_ttl);
            timer.checkpointed = true;
            checkpoints.push(LeaseCheckpoint { id, remaining_ttl: i64::try_from(remaining_ttl).unwrap_or(i64::MAX) });
        }
        Some((term, checkpoints))
    }

    /// How many leases this member times.
    pub fn leases_timed(&self) -> usize {
        self.state().timers.len()
    }
}

fn timer_for(lease: &Lease, now: Instant) -> Timer {
    Timer::new(seconds(lease.ttl), lease.remaining.map(seconds), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_mvcc::{LeaseCheckpointRequest, LeaseExpireRequest, LeaseGrantRequest, LeaseGrantResponse};

    fn granted(lessor: &Lessor, id: i64, ttl: i64, now: Instant) {
        lessor.on_applied(
            &Command::LeaseGrant(LeaseGrantRequest { id, ttl }),
            &Response::LeaseGrant(LeaseGrantResponse { revision: 1, id, ttl }),
            now,
        );
    }

    fn store_with(leases: &[(i64, i64)], checkpoints: &[(i64, i64)]) -> Store {
        let store = Store::in_memory().unwrap();
        let mut index = 0;
        let mut apply = |command: Command| {
            index += 1;
            store.apply(index, &command).unwrap().unwrap().result.unwrap();
        };
        for &(id, ttl) in leases {
            apply(Command::LeaseGrant(LeaseGrantRequest { id, ttl }));
        }
        let checkpoints =
            checkpoints.iter().map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl }).collect();
        apply(Command::LeaseCheckpoint(LeaseCheckpointRequest { term: 1, checkpoints }));
        store
    }

    #[test]
    fn only_a_promoted_leader_times_leases() {
        let lessor = Lessor::default();
        let now = Instant::now();
        granted(&lessor, 1, 10, now);
        assert_eq!(lessor.renew(1, 1, now), Renewal::NotTiming);
        assert_eq!(lessor.take_expired(now + seconds(60), 10), None);
        lessor.promote(3, &store_with(&[(1, 10)], &[]), now).unwrap();
        assert_eq!(lessor.renew(1, 2, now), Renewal::NotTiming, "another term");
        assert_eq!(lessor.renew(1, 3, now), Renewal::Renewed(10));
        assert_eq!(lessor.renew(2, 3, now), Renewal::NotFound);
        lessor.demote();
        assert_eq!(lessor.renew(1, 3, now), Renewal::NotTiming);
        assert_eq!(lessor.leases_timed(), 0);
    }

    #[test]
    fn a_new_leader_continues_from_the_checkpoint_or_the_whole_ttl() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(2, &store_with(&[(1, 10), (2, 10)], &[(1, 4)]), now).unwrap();
        assert_eq!(lessor.time_to_live(1, 2, now), Some((seconds(10), seconds(4))));
        assert_eq!(lessor.time_to_live(2, 2, now), Some((seconds(10), seconds(10))));
        assert_eq!(lessor.take_expired(now + seconds(4), 10), Some((2, vec![1])));
        assert_eq!(lessor.take_expired(now + seconds(4), 10), Some((2, vec![])), "proposed once");
        assert_eq!(lessor.take_expired(now + seconds(8), 10), Some((2, vec![1])), "again after the retry pause");
        assert_eq!(lessor.take_expired(now + seconds(10), 10), Some((2, vec![2])));
    }

    #[test]
    fn a_keep_alive_after_a_checkpoint_clears_it_through_the_log_first() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(2, &store_with(&[(1, 10)], &[(1, 4)]), now).unwrap();
        assert_eq!(lessor.renew(1, 2, now), Renewal::ClearCheckpointFirst);
        let clear = LeaseCheckpointRequest { term: 2, checkpoints: vec![LeaseCheckpoint { id: 1, remaining_ttl: 0 }] };
        lessor.on_applied(&Command::LeaseCheckpoint(clear), &Response::LeaseCheckpoint, now);
        assert_eq!(lessor.renew(1, 2, now + seconds(1)), Renewal::Renewed(10));
        assert_eq!(lessor.time_to_live(1, 2, now + seconds(1)), Some((seconds(10), seconds(10))));
    }

    #[test]
    fn kept_alive_leases_stay_off_the_log_and_idle_ones_are_checkpointed() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[], &[]), now).unwrap();
        granted(&lessor, 1, 30, now);
        granted(&lessor, 2, 30, now);
        // Lease 1 is renewed at 10 s and 20 s (every TTL/3), then no more; lease 2 never.
        let due = |at: u64| {
            let at = now + seconds(at as i64);
            if at < now + seconds(25) {
                assert_eq!(lessor.renew(1, 1, at), Renewal::Renewed(30));
            }
            let (term, checkpoints) = lessor.take_checkpoints(at).unwrap();
            assert_eq!(term, 1);
            checkpoints.iter().map(|c| (c.id, c.remaining_ttl)).collect::<Vec<_>>()
        };
        assert_eq!(due(10), vec![(2, 20)]);
        assert_eq!(due(20), vec![(2, 10)]);
        assert_eq!(due(30), vec![(1, 20)], "lease 1 fell 10 s below its TTL; lease 2 is due to expire");
        assert_eq!(lessor.renew(1, 1, now + seconds(31)), Renewal::ClearCheckpointFirst);

        // A short lease (TTL 4, lag 2 s) is checkpointed once it fell 2 s.
        let lessor = Lessor::default();
        lessor.promote(1, &store_with(&[(3, 4)], &[]), now).unwrap();
        assert_eq!(lessor.take_checkpoints(now + Duration::from_millis(1900)).unwrap().1, vec![]);
        let due = lessor.take_checkpoints(now + Duration::from_millis(2100)).unwrap().1;
        assert_eq!(due, vec![LeaseCheckpoint { id: 3, remaining_ttl: 2 }], "rounded up, never understated");
    }

    #[test]
    fn applied_revokes_and_expiries_stop_the_timer() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10), (2, 10)], &[]), now).unwrap();
        let revoked = Response::LeaseRevoke(concord_mvcc::LeaseRevokeResponse { revision: 2 });
        lessor.on_applied(&Command::LeaseRevoke(concord_mvcc::LeaseRevokeRequest { id: 1 }), &revoked, now);
        lessor.on_applied(&Command::LeaseExpire(LeaseExpireRequest { id: 2, term: 1 }), &revoked, now);
        assert_eq!(lessor.leases_timed(), 0);
        assert_eq!(lessor.take_expired(now + seconds(20), 10), Some((1, vec![])));
    }
}
