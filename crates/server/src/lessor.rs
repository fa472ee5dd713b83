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
//! - A lease whose remaining TTL fell its lag below what the log records is checkpointed
//!   (a bounded batch per round, most overstated first), so the log never overstates it by
//!   much. The lag is half the TTL for a lease being kept alive (clients renew every
//!   TTL/3, so its keep-alives stay off the log) and at most 1 s for an idle one (every
//!   lease after a promotion, and a lease checkpointed since its last keep-alive).
//! - A keep-alive is answered only after a ReadIndex round begun after it arrived, and
//!   renews from its arrival; a lease past its deadline, or whose expiry is on its way, is
//!   not renewed (TTL 0).
//! - A keep-alive of a lease with a checkpoint in force clears it through the log, and the
//!   clear renews the lease when applied ([`Renewal::ClearCheckpointFirst`]): otherwise a
//!   new leader would continue from the checkpoint and expire the lease early. At most
//!   one checkpoint or clear of a lease is on its way at a time, so the log holds them in
//!   the order the lessor decided them; a failed proposal may still reach the log, so the
//!   lease then counts as checkpointed and the next keep-alive clears it (after it).
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
/// The lag of an idle lease (see [`Timer::lag`]).
const IDLE_LAG: Duration = Duration::from_secs(1);
/// How long an expiry that has not been applied waits before it is proposed again (its
/// proposal may have been lost with a leader change, or refused at apply).
const EXPIRY_RETRY: Duration = Duration::from_secs(3);
/// Most applied lease commands remembered while a promotion reads the store; beyond it
/// the promotion is abandoned and tried again.
const MAX_BUFFERED_DURING_PROMOTION: usize = 100_000;

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// A checkpoint of one lease proposed by this leader and not applied yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    /// A checkpoint of its remaining TTL (the lease task's).
    Checkpoint,
    /// A checkpoint of 0 that clears one (a keep-alive's).
    Clear,
}

/// One lease as the leader times it.
#[derive(Clone, Debug)]
struct Timer {
    ttl: Duration,
    deadline: Instant,
    /// The remaining TTL the applied log gives this lease (its TTL if no checkpoint is in
    /// force): a leader taking over now would give the lease this long.
    recorded: Duration,
    /// The applied log may hold a checkpoint below the TTL: a keep-alive must clear it
    /// first. Also set when a checkpoint proposal failed (it may still be in the log).
    checkpointed: bool,
    /// Not renewed since the timer started (at a promotion) or since its last checkpoint.
    idle: bool,
    /// At most one checkpoint or clear of a lease is on its way at a time, so they apply
    /// in the order the lessor decided them.
    in_flight: Option<InFlight>,
    /// When its expiry was last proposed.
    expiry_proposed: Option<Instant>,
}

impl Timer {
    fn new(ttl: Duration, remaining: Option<Duration>, now: Instant, idle: bool) -> Timer {
        let left = remaining.unwrap_or(ttl);
        Timer {
            ttl,
            deadline: now + left,
            recorded: left,
            checkpointed: remaining.is_some(),
            idle,
            in_flight: None,
            expiry_proposed: None,
        }
    }

    fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// How far the lease's remaining TTL may fall below what the log records before it
    /// is checkpointed. Half the TTL for a lease being kept alive: clients renew every
    /// TTL/3, so such a lease never falls that far and its keep-alives stay off the log.
    /// [`IDLE_LAG`] (at most half the TTL) for an idle one: it is checkpointed soon after
    /// a leader takes over, and then every second while it stays idle, so that a new
    /// leader extends it by little and frequent elections cannot keep it alive.
    fn lag(&self) -> Duration {
        let half = self.ttl / 2;
        if self.idle {
            half.min(IDLE_LAG)
        } else {
            half
        }
    }

    /// How much a leader taking over now would give the lease beyond its real deadline.
    fn overstatement(&self, now: Instant) -> Duration {
        self.recorded.saturating_sub(self.remaining(now))
    }

    fn needs_checkpoint(&self, now: Instant) -> bool {
        now < self.deadline
            && self.in_flight.is_none()
            && self.expiry_proposed.is_none()
            && self.overstatement(now) >= self.lag()
    }

    /// Follows an applied checkpoint of this lease, mirroring what the store now holds.
    ///
    /// Proposals of one leader reach the log in the order they were made, but a proposal
    /// that failed (timed out) may still be applied later, after its marker was released.
    /// So an applied checkpoint releases only a marker of its own kind: a positive one
    /// never releases a clear on its way (the clear comes after it), and a clear applied
    /// while a checkpoint is on its way is an old one (a failed keep-alive's) that renews
    /// nothing.
    fn checkpoint_applied(&mut self, remaining_ttl: i64, now: Instant) {
        let clear = remaining_ttl <= 0;
        let own_kind = match self.in_flight {
            Some(InFlight::Clear) => clear,
            Some(InFlight::Checkpoint) => !clear,
            None => true,
        };
        if clear {
            self.checkpointed = false;
            self.recorded = self.ttl;
            if own_kind {
                // A keep-alive's clear: the renewal it was for happens with it, so that
                // no checkpoint can be taken between the clear and the renewal.
                self.idle = false;
                if self.expiry_proposed.is_none() {
                    self.deadline = self.deadline.max(now + self.ttl);
                }
            }
        } else if seconds(remaining_ttl) >= self.ttl {
            self.checkpointed = false;
            self.recorded = self.ttl;
        } else {
            self.checkpointed = true;
            self.recorded = seconds(remaining_ttl);
            self.idle = true;
        }
        if own_kind {
            self.in_flight = None;
        }
    }
}

/// What a keep-alive at the leader comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// No such lease, or it expired before the keep-alive arrived (its expiry is or will
    /// be proposed): etcd answers TTL 0.
    NotFound,
    /// Renewed for its TTL (seconds).
    Renewed(i64),
    /// The lease has a checkpoint in the log: propose a clear (a checkpoint of 0), which
    /// renews it when applied, then ask again.
    ClearCheckpointFirst,
    /// A checkpoint or clear of the lease is on its way: ask again once it is applied.
    Wait,
    /// This member does not time leases now (not the leader, or not yet caught up with
    /// its own term): ask again shortly, or ask the leader.
    NotTiming,
}

#[derive(Default)]
struct State {
    /// The term this member leads and times leases in; `None` when it does not.
    term: Option<u64>,
    timers: HashMap<i64, Timer>,
    /// A promotion reading the store, for this term, and the lease commands applied
    /// meanwhile (replayed once the timers are built).
    promoting: Option<u64>,
    applied_meanwhile: Vec<(Command, Response, Instant)>,
}

impl State {
    fn follow(&mut self, command: &Command, response: &Response, now: Instant) {
        match (command, response) {
            (Command::LeaseGrant(grant), Response::LeaseGrant(_)) => {
                self.timers.insert(grant.id, Timer::new(seconds(grant.ttl), None, now, false));
            }
            (Command::LeaseRevoke(revoke), Response::LeaseRevoke(_)) => {
                self.timers.remove(&revoke.id);
            }
            (Command::LeaseExpire(expire), Response::LeaseRevoke(_)) => {
                self.timers.remove(&expire.id);
            }
            (Command::LeaseCheckpoint(checkpoint), Response::LeaseCheckpoint) => {
                for entry in &checkpoint.checkpoints {
                    if let Some(timer) = self.timers.get_mut(&entry.id) {
                        timer.checkpoint_applied(entry.remaining_ttl, now);
                    }
                }
            }
            _ => {}
        }
    }
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
    /// applied an entry of it; every lease starts idle. The store is read without the
    /// lessor's lock (it may hold many leases); lease commands applied meanwhile are
    /// remembered and replayed on top, which is harmless for those the read already saw.
    /// Returns how many leases are timed, or `None` if the promotion was abandoned
    /// (demoted meanwhile, or too much applied meanwhile).
    pub fn promote(&self, term: u64, store: &Store, now: Instant) -> Result<Option<usize>, MvccError> {
        self.begin_promotion(term);
        let leases = store.lease_timers();
        self.finish_promotion(term, leases?, now)
    }

    fn begin_promotion(&self, term: u64) {
        *self.state() = State { promoting: Some(term), ..State::default() };
    }

    fn finish_promotion(&self, term: u64, leases: Vec<Lease>, now: Instant) -> Result<Option<usize>, MvccError> {
        let mut state = self.state();
        if state.promoting != Some(term) {
            return Ok(None);
        }
        state.promoting = None;
        state.timers = leases.iter().map(|lease| (lease.id, timer_for(lease, now))).collect();
        for (command, response, at) in std::mem::take(&mut state.applied_meanwhile) {
            state.follow(&command, &response, at);
        }
        state.term = Some(term);
        Ok(Some(state.timers.len()))
    }

    /// Stops timing (no longer the leader, or a newer term).
    pub fn demote(&self) {
        *self.state() = State::default();
    }

    /// Follows an applied command (only while timing or promoting; harmless to repeat).
    pub fn on_applied(&self, command: &Command, response: &Response, now: Instant) {
        let mut state = self.state();
        if state.promoting.is_some() {
            if state.applied_meanwhile.len() >= MAX_BUFFERED_DURING_PROMOTION {
                *state = State::default();
                return;
            }
            if is_lease_command(command) {
                state.applied_meanwhile.push((command.clone(), response.clone(), now));
            }
            return;
        }
        if state.term.is_some() {
            state.follow(command, response, now);
        }
    }

    /// A keep-alive that `arrived` at the leader in `term`, whose leadership a ReadIndex
    /// round begun after `arrived` confirmed. The new deadline counts from `arrived`: a
    /// leader elected after that round gives the lease its TTL from its own start, later.
    pub fn renew(&self, id: i64, term: u64, arrived: Instant) -> Renewal {
        let mut state = self.state();
        if state.term != Some(term) {
            return Renewal::NotTiming;
        }
        let Some(timer) = state.timers.get_mut(&id) else {
            return Renewal::NotFound;
        };
        if timer.expiry_proposed.is_some() || timer.deadline <= arrived {
            return Renewal::NotFound;
        }
        if timer.in_flight.is_some() {
            return Renewal::Wait;
        }
        if timer.checkpointed {
            timer.in_flight = Some(InFlight::Clear);
            return Renewal::ClearCheckpointFirst;
        }
        timer.deadline = timer.deadline.max(arrived + timer.ttl);
        timer.recorded = timer.ttl;
        timer.idle = false;
        Renewal::Renewed(i64::try_from(timer.ttl.as_secs()).unwrap_or(i64::MAX))
    }

    /// The clear a keep-alive proposed in `term` failed: it may still reach the log, so the
    /// lease stays checkpointed and the next keep-alive clears again (after it). Ignored
    /// once the lessor no longer times leases in `term` (its markers are gone).
    pub fn clear_failed(&self, id: i64, term: u64) {
        let mut state = self.state();
        if state.term != Some(term) {
            return;
        }
        if let Some(timer) = state.timers.get_mut(&id) {
            if timer.in_flight == Some(InFlight::Clear) {
                timer.in_flight = None;
            }
        }
    }

    /// A checkpoint proposed in `term` failed: it may still reach the log, so the leases
    /// count as checkpointed (a keep-alive clears first, after it) and may be checkpointed
    /// again. Ignored once the lessor no longer times leases in `term`.
    pub fn checkpoints_failed(&self, ids: &[i64], term: u64) {
        let mut state = self.state();
        if state.term != Some(term) {
            return;
        }
        for id in ids {
            if let Some(timer) = state.timers.get_mut(id) {
                if timer.in_flight == Some(InFlight::Checkpoint) {
                    timer.in_flight = None;
                }
                timer.checkpointed = true;
            }
        }
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

    /// Leases whose logged remaining TTL overstates the real one by their lag, most
    /// overstated first, at most [`MAX_CHECKPOINTS_PER_ENTRY`]; each is then on its way.
    /// Remaining TTLs are rounded up to whole seconds: the log may overstate a lease,
    /// never understate it.
    pub fn take_checkpoints(&self, now: Instant) -> Option<(u64, Vec<LeaseCheckpoint>)> {
        let mut state = self.state();
        let term = state.term?;
        let mut due: Vec<(Duration, i64)> = state
            .timers
            .iter()
            .filter(|(_, t)| t.needs_checkpoint(now))
            .map(|(id, t)| (t.overstatement(now), *id))
            .collect();
        due.sort_unstable_by(|a, b| b.cmp(a));
        due.truncate(MAX_CHECKPOINTS_PER_ENTRY);
        let mut checkpoints = Vec::with_capacity(due.len());
        for (_, id) in due {
            let Some(timer) = state.timers.get_mut(&id) else { continue };
            let remaining = timer.remaining(now);
            let remaining_ttl = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
            timer.in_flight = Some(InFlight::Checkpoint);
            checkpoints.push(LeaseCheckpoint { id, remaining_ttl: i64::try_from(remaining_ttl).unwrap_or(i64::MAX) });
        }
        Some((term, checkpoints))
    }

    /// How many leases this member times.
    pub fn leases_timed(&self) -> usize {
        self.state().timers.len()
    }
}

fn is_lease_command(command: &Command) -> bool {
    matches!(
        command,
        Command::LeaseGrant(_) | Command::LeaseRevoke(_) | Command::LeaseExpire(_) | Command::LeaseCheckpoint(_)
    )
}

fn timer_for(lease: &Lease, now: Instant) -> Timer {
    Timer::new(seconds(lease.ttl), lease.remaining.map(seconds), now, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_mvcc::{
        LeaseCheckpointRequest, LeaseExpireRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
        LeaseRevokeResponse,
    };

    fn granted(lessor: &Lessor, id: i64, ttl: i64, now: Instant) {
        lessor.on_applied(
            &Command::LeaseGrant(LeaseGrantRequest { id, ttl }),
            &Response::LeaseGrant(LeaseGrantResponse { revision: 1, id, ttl }),
            now,
        );
    }

    fn checkpoint_applied(lessor: &Lessor, entries: &[(i64, i64)], now: Instant) {
        let checkpoints = entries.iter().map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl }).collect();
        let command = Command::LeaseCheckpoint(LeaseCheckpointRequest { term: 1, checkpoints });
        lessor.on_applied(&command, &Response::LeaseCheckpoint, now);
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

    fn taken(lessor: &Lessor, at: Instant) -> Vec<(i64, i64)> {
        let (_, checkpoints) = lessor.take_checkpoints(at).unwrap();
        checkpoints.iter().map(|c| (c.id, c.remaining_ttl)).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn only_a_promoted_leader_times_leases() {
        let lessor = Lessor::default();
        let now = Instant::now();
        granted(&lessor, 1, 10, now);
        assert_eq!(lessor.renew(1, 1, now), Renewal::NotTiming);
        assert_eq!(lessor.take_expired(now + seconds(60), 10), None);
        assert_eq!(lessor.promote(3, &store_with(&[(1, 10)], &[]), now).unwrap(), Some(1));
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
    fn an_expired_lease_or_one_whose_expiry_is_on_its_way_is_not_renewed() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10), (2, 10)], &[]), now).unwrap();
        assert_eq!(lessor.renew(1, 1, now + seconds(10)), Renewal::NotFound, "arrived at its deadline");
        assert_eq!(lessor.take_expired(now + seconds(10), 10), Some((1, vec![1, 2])));
        // A keep-alive that arrived just before the deadline but is handled after the
        // expiry was proposed: the expiry wins, the client hears TTL 0.
        assert_eq!(lessor.renew(2, 1, now + ms(9_990)), Renewal::NotFound);
    }

    #[test]
    fn a_renewal_counts_from_the_keep_alives_arrival() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10)], &[]), now).unwrap();
        assert_eq!(lessor.renew(1, 1, now + seconds(2)), Renewal::Renewed(10));
        assert_eq!(lessor.time_to_live(1, 1, now + seconds(3)), Some((seconds(10), seconds(9))));
    }

    #[test]
    fn a_keep_alive_after_a_checkpoint_clears_it_and_the_clear_renews() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(2, &store_with(&[(1, 10)], &[(1, 4)]), now).unwrap();
        assert_eq!(lessor.renew(1, 2, now), Renewal::ClearCheckpointFirst);
        assert_eq!(lessor.renew(1, 2, now), Renewal::Wait, "one clear at a time");
        assert_eq!(taken(&lessor, now + seconds(3)), vec![], "no checkpoint while the clear is on its way");
        checkpoint_applied(&lessor, &[(1, 0)], now + ms(5));
        assert_eq!(lessor.time_to_live(1, 2, now + ms(5)), Some((seconds(10), seconds(10))), "renewed by the clear");
        assert_eq!(lessor.renew(1, 2, now + ms(5)), Renewal::Renewed(10));
    }

    #[test]
    fn a_keep_alive_waits_for_a_checkpoint_on_its_way_then_clears_it() {
        // The race of a checkpoint taken just before a keep-alive: the checkpoint reaches
        // the log first, so the keep-alive must clear it after it, never before.
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10)], &[]), now).unwrap();
        assert_eq!(taken(&lessor, now + seconds(1)), vec![(1, 9)], "idle after the promotion: lag 1 s");
        assert_eq!(lessor.renew(1, 1, now + seconds(1)), Renewal::Wait);
        checkpoint_applied(&lessor, &[(1, 9)], now + seconds(1));
        assert_eq!(lessor.renew(1, 1, now + seconds(1)), Renewal::ClearCheckpointFirst);
        checkpoint_applied(&lessor, &[(1, 0)], now + seconds(1));
        assert_eq!(lessor.renew(1, 1, now + seconds(1)), Renewal::Renewed(10));
    }

    #[test]
    fn a_failed_proposal_may_still_be_in_the_log_so_the_next_keep_alive_clears() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10)], &[]), now).unwrap();
        assert_eq!(taken(&lessor, now + seconds(1)), vec![(1, 9)]);
        lessor.checkpoints_failed(&[1], 1);
        assert_eq!(lessor.renew(1, 1, now + seconds(1)), Renewal::ClearCheckpointFirst);
        lessor.clear_failed(1, 1);
        assert_eq!(lessor.renew(1, 1, now + seconds(1)), Renewal::ClearCheckpointFirst, "cleared again");
    }

    #[test]
    fn a_failed_checkpoint_landing_late_does_not_release_the_clear_after_it() {
        // Checkpoint C1 fails (times out) but is in the log; a keep-alive's clear follows
        // it. C1 applied must not let another checkpoint be taken before the clear.
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10)], &[]), now).unwrap();
        assert_eq!(taken(&lessor, now + seconds(1)), vec![(1, 9)]);
        lessor.checkpoints_failed(&[1], 1);
        assert_eq!(lessor.renew(1, 1, now + seconds(1)), Renewal::ClearCheckpointFirst);
        checkpoint_applied(&lessor, &[(1, 9)], now + seconds(3));
        assert_eq!(taken(&lessor, now + seconds(6)), vec![], "the clear is still on its way");
        assert_eq!(lessor.renew(1, 1, now + seconds(6)), Renewal::Wait);
        checkpoint_applied(&lessor, &[(1, 0)], now + seconds(6));
        assert_eq!(lessor.renew(1, 1, now + seconds(6)), Renewal::Renewed(10));
        assert_eq!(lessor.time_to_live(1, 1, now + seconds(6)), Some((seconds(10), seconds(10))));
    }

    #[test]
    fn a_failed_clear_landing_late_renews_nothing_and_keeps_the_checkpoint_marker() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 60)], &[(1, 30)]), now).unwrap();
        assert_eq!(lessor.renew(1, 1, now), Renewal::ClearCheckpointFirst);
        lessor.clear_failed(1, 1);
        // The lease stays checkpointed; a later round checkpoints it again.
        assert_eq!(taken(&lessor, now + seconds(2)), vec![(1, 28)]);
        // The failed clear lands now, before the new checkpoint (it was proposed first).
        checkpoint_applied(&lessor, &[(1, 0)], now + seconds(2));
        assert_eq!(lessor.time_to_live(1, 1, now + seconds(2)), Some((seconds(60), seconds(28))), "not renewed");
        assert_eq!(lessor.renew(1, 1, now + seconds(2)), Renewal::Wait, "the checkpoint is still on its way");
        checkpoint_applied(&lessor, &[(1, 28)], now + seconds(2));
        assert_eq!(lessor.renew(1, 1, now + seconds(2)), Renewal::ClearCheckpointFirst);
    }

    #[test]
    fn failures_of_an_earlier_term_are_ignored() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(2, &store_with(&[(1, 10)], &[]), now).unwrap();
        assert_eq!(taken(&lessor, now + seconds(1)), vec![(1, 9)]);
        lessor.checkpoints_failed(&[1], 1);
        assert_eq!(lessor.renew(1, 2, now + seconds(1)), Renewal::Wait, "term 2's checkpoint is still on its way");
    }

    #[test]
    fn kept_alive_leases_stay_off_the_log_and_idle_ones_are_checkpointed_every_second() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[], &[]), now).unwrap();
        granted(&lessor, 1, 60, now);
        granted(&lessor, 2, 60, now);
        // Lease 1 is renewed every 20 s (TTL/3); lease 2 never. Checkpoint rounds every
        // 500 ms, each checkpoint applied at once.
        let mut logged = Vec::new();
        for round in 1..=240u64 {
            let at = now + ms(500 * round);
            if round % 40 == 0 {
                assert_eq!(lessor.renew(1, 1, at), Renewal::Renewed(60), "round {round}");
            }
            let due = taken(&lessor, at);
            checkpoint_applied(&lessor, &due, at);
            logged.extend(due);
        }
        assert!(logged.iter().all(|(id, _)| *id == 2), "the kept-alive lease reached the log: {logged:?}");
        // Lease 2: first at 30 s (half its TTL fell), then once a second until it expired.
        assert_eq!(logged.first(), Some(&(2, 30)));
        assert_eq!(logged.len(), 30, "{logged:?}");
    }

    #[test]
    fn most_overstated_leases_are_checkpointed_first() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[], &[]), now).unwrap();
        // Lease n has n seconds left of a 2,000 s TTL: the smaller n, the more a new leader
        // would overstate it.
        let count = MAX_CHECKPOINTS_PER_ENTRY as i64 + 1;
        for id in 1..=count {
            lessor.state().timers.insert(id, Timer::new(seconds(2000), None, now, true));
            lessor.state().timers.get_mut(&id).unwrap().deadline = now + seconds(id);
        }
        let first = taken(&lessor, now);
        assert_eq!(first.len(), MAX_CHECKPOINTS_PER_ENTRY);
        assert!(first.iter().all(|(id, _)| *id < count), "the least overstated waits: {:?}", first.last());
        assert_eq!(taken(&lessor, now), vec![(count, count)], "the least overstated in the next round");
    }

    #[test]
    fn a_short_lease_is_checkpointed_once_it_fell_half_its_ttl_and_rounded_up() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[], &[]), now).unwrap();
        granted(&lessor, 3, 2, now);
        assert_eq!(taken(&lessor, now + ms(900)), vec![]);
        assert_eq!(taken(&lessor, now + ms(1100)), vec![(3, 1)], "rounded up, never understated");
    }

    #[test]
    fn lease_commands_applied_during_a_promotion_are_not_lost() {
        let lessor = Lessor::default();
        let now = Instant::now();
        // The promotion has read the store (lease 1), then a grant of 7 and a revoke of 1
        // are applied before it finishes.
        lessor.begin_promotion(4);
        let read = store_with(&[(1, 10)], &[]).lease_timers().unwrap();
        granted(&lessor, 7, 30, now);
        let revoked = Response::LeaseRevoke(LeaseRevokeResponse { revision: 2 });
        lessor.on_applied(&Command::LeaseRevoke(LeaseRevokeRequest { id: 1 }), &revoked, now);
        assert_eq!(lessor.renew(7, 4, now), Renewal::NotTiming, "not timing before it finished");
        assert_eq!(lessor.finish_promotion(4, read, now).unwrap(), Some(1));
        assert_eq!(lessor.renew(7, 4, now), Renewal::Renewed(30));
        assert_eq!(lessor.renew(1, 4, now), Renewal::NotFound);
        // A demotion meanwhile abandons the promotion.
        lessor.begin_promotion(5);
        lessor.demote();
        assert_eq!(lessor.finish_promotion(5, Vec::new(), now).unwrap(), None);
        assert_eq!(lessor.timing_term(), None);
    }

    #[test]
    fn applied_revokes_and_expiries_stop_the_timer() {
        let lessor = Lessor::default();
        let now = Instant::now();
        lessor.promote(1, &store_with(&[(1, 10), (2, 10)], &[]), now).unwrap();
        let revoked = Response::LeaseRevoke(LeaseRevokeResponse { revision: 2 });
        lessor.on_applied(&Command::LeaseRevoke(LeaseRevokeRequest { id: 1 }), &revoked, now);
        lessor.on_applied(&Command::LeaseExpire(LeaseExpireRequest { id: 2, term: 1 }), &revoked, now);
        assert_eq!(lessor.leases_timed(), 0);
        assert_eq!(lessor.take_expired(now + seconds(20), 10), Some((1, vec![])));
    }
}
