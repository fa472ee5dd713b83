//! Leaders: replicate the log with flow control (and snapshots for followers behind the
//! compaction point), advance the commit index by the Figure 8 rule, confirm leadership
//! for ReadIndex, step down without a quorum or once their own removal commits, hand
//! leadership over on request.

use crate::message::{Message, MessageBody, RejectHint};
use crate::progress::{Progress, ProgressState, MAX_SNAPSHOT_CHUNKS_IN_FLIGHT, SNAPSHOT_STALL_HEARTBEATS};
use crate::quorum::{committed_index, majority};
use crate::raft::{PendingRead, ProposeError, Raft};
use crate::ready::ReadState;
use crate::snapshot::SnapshotChunk;
use crate::storage::{LogStore, StorageError};
use crate::types::{Entry, EntryKind, Index, NodeId, Role, NO_NODE};

impl<S: LogStore> Raft<S> {
    /// `term_durable`: whether our term and vote are known to be on disk (see
    /// [`Raft::term_durable`]).
    pub(crate) fn become_leader(&mut self, term_durable: bool) {
        assert_eq!(self.role, Role::Candidate, "only a candidate that won can lead");
        assert_eq!(self.vote, self.config.id, "a leader voted for itself in its term");
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = self.config.id;
        self.term_durable = term_durable;
        let next = self.log.last_index() + 1;
        // Our own match counts only what our disk holds. We track ourselves even when our
        // latest configuration drops us (we were elected to commit that change).
        let mut own = Progress::new(next, self.config.max_inflight_messages, self.config.max_inflight_bytes);
        own.match_index = self.log.persisted_index();
        own.state = ProgressState::Replicate;
        own.recent_active = true;
        self.progress.insert(self.config.id, own);
        self.track_members();
        // An entry of our own term: entries of earlier terms commit only through it
        // (Figure 8), and ReadIndex waits for it.
        let noop = Entry { index: next, term, kind: EntryKind::Normal, data: Default::default() };
        self.append_as_leader(&[noop]);
        self.broadcast_pending = false;
        self.broadcast_append();
    }

    pub(crate) fn append_as_leader(&mut self, entries: &[Entry]) {
        self.log.append(entries);
        self.broadcast_pending = true;
        // A single voter commits once its own disk has the entries (on_persisted).
        if entries.iter().any(|e| e.kind == EntryKind::ConfChange) {
            self.membership_appended(entries[0].index, entries);
            self.track_members();
        }
    }

    /// Keeps a progress entry for every member of the configuration in effect (and for
    /// ourselves, even while we remove ourselves).
    fn track_members(&mut self) {
        let membership = self.membership.current().clone();
        let id = self.config.id;
        self.progress.retain(|&member, _| member == id || membership.contains(member));
        let next = self.log.last_index() + 1;
        for member in membership.members() {
            self.progress.entry(member).or_insert_with(|| {
                let mut progress =
                    Progress::new(next, self.config.max_inflight_messages, self.config.max_inflight_bytes);
                progress.recent_active = true;
                progress
            });
        }
        if self.transfer_target.is_some_and(|target| !membership.is_voter(target)) {
            self.transfer_target = None;
            self.transfer_elapsed = 0;
        }
    }

    /// Whether we count toward our own quorums (not while we remove ourselves).
    fn self_is_voter(&self) -> bool {
        self.membership.current().is_voter(self.config.id)
    }

    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                let term = self.term;
                self.become_follower(term, crate::types::NO_NODE);
                return;
            }
        }
        if self.transfer_target.is_some() {
            // A transfer that has not finished within an election timeout is abandoned.
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_tick {
                self.transfer_target = None;
                self.transfer_elapsed = 0;
                if self.removal_committed() {
                    // No voter caught up in time: stop anyway, an election follows.
                    let term = self.term;
                    self.become_follower(term, NO_NODE);
                    return;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(0);
        }
    }

    /// Whether a majority (counting ourselves) was heard from since the last check;
    /// resets the marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.config.id;
        let voters = &self.membership.current().voters;
        let mut active = 0;
        for (&member, progress) in self.progress.iter_mut() {
            if voters.contains(&member) && (member == id || progress.recent_active) {
                active += 1;
            }
            progress.recent_active = member == id;
        }
        active >= majority(voters.len())
    }

    pub(crate) fn broadcast_append(&mut self) {
        for peer in self.replication_peers() {
            self.send_append(peer, true);
        }
    }

    fn broadcast_heartbeat(&mut self, read_round: u64) {
        let committed = self.log.committed();
        for peer in self.replication_peers() {
            let progress = self.progress.get_mut(&peer).expect("progress exists for every voter");
            let commit = progress.match_index.min(committed);
            progress.sent_commit = progress.sent_commit.max(commit);
            self.send(peer, MessageBody::Heartbeat { commit, read_round });
        }
    }

    /// Sends the next batch of entries to `to`, if its flow control allows. With
    /// `allow_empty`, sends even when there is nothing new (to carry the commit index or
    /// to probe). Returns whether a message was sent.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let progress = &self.progress[&to];
        if progress.state == ProgressState::Snapshot {
            return self.send_snapshot_chunks(to);
        }
        if progress.is_paused() {
            return false;
        }
        let next = progress.next_index;
        let prev_log_index = next - 1;
        let prev_log_term = match self.log.term(prev_log_index) {
            Ok(term) => term,
            Err(StorageError::Compacted(_)) => return self.start_snapshot(to),
            Err(error) => panic!("reading the leader's own log failed: {error}"),
        };
        let mut budget = self.config.max_message_bytes;
        if progress.state == ProgressState::Replicate {
            let inflight = &progress.inflights;
            budget = budget.min(inflight.max_bytes().saturating_sub(inflight.bytes()).max(1));
        }
        let last = self.log.last_index();
        let entries = match self.log.entries(next, last + 1, budget) {
            Ok(entries) => entries,
            Err(StorageError::Compacted(_)) => return self.start_snapshot(to),
            Err(error) => panic!("reading the leader's own log failed: {error}"),
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_sent = entries.last().map(|e| e.index).unwrap_or(prev_log_index);
        let leader_commit = self.log.committed();
        let progress = self.progress.get_mut(&to).expect("progress exists for every voter");
        progress.sent_entries(last_sent, bytes);
        progress.sent_commit = progress.sent_commit.max(leader_commit.min(last_sent));
        self.send(to, MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit });
        true
    }

    /// Commits the highest index a majority holds, but only if it is from our own term:
    /// an entry from an earlier term may be on a majority and still be overwritten
    /// (Raft paper, Figure 8); it becomes committed when an entry of ours after it is.
    ///
    /// Only the voters of the configuration in effect count, and we count ourselves only
    /// while we are one of them. Once the entry that removes us is committed, we step
    /// down (after telling the others the commit index, and the most up-to-date voter to
    /// campaign at once); callers must check the role afterwards.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let voters = &self.membership.current().voters;
        let mut matches: Vec<Index> =
            voters.iter().map(|v| self.progress.get(v).map_or(0, |p| p.match_index)).collect();
        let candidate = if self.config.bugs().config_quorum {
            // Planted bug: the quorum size of the last committed configuration, counted
            // over the members of the latest one.
            let committed_voters = self.membership.at(self.log.committed()).voters.len();
            matches.sort_unstable_by(|a, b| b.cmp(a));
            matches[(majority(committed_voters) - 1).min(matches.len() - 1)]
        } else {
            committed_index(&mut matches)
        };
        if candidate <= self.log.committed() {
            return false;
        }
        let candidate_term = self.log.term(candidate).expect("a matched entry is in the log");
        if candidate_term != self.term && !self.config.bugs().figure8 {
            return false;
        }
        let had_committed_in_term = self.committed_in_current_term();
        self.log.commit_to(candidate);
        if !had_committed_in_term {
            self.release_reads_awaiting_commit();
        }
        // Followers learn the new commit index from the next AppendEntries.
        self.broadcast_append();
        if self.removal_committed() {
            self.step_down_after_removal();
        }
        true
    }

    /// The entry that removed us is committed: we lead only to hand over.
    pub(crate) fn removal_committed(&self) -> bool {
        !self.self_is_voter() && self.membership.current_index() <= self.log.committed()
    }

    /// Our removal is committed: hand over to the voter whose log is most complete (it
    /// can win at once, with TimeoutNow) and stop leading. If entries appended after our
    /// removal are on no voter yet, that voter is first brought up to date as in a
    /// leadership transfer (new proposals are refused meanwhile); we stop when it is, or
    /// when the transfer times out.
    fn step_down_after_removal(&mut self) {
        let last = self.log.last_index();
        let best = self
            .membership
            .current()
            .voters
            .iter()
            .filter_map(|v| self.progress.get(v).map(|p| (p.match_index, *v)))
            .max();
        match best {
            Some((matched, successor)) if matched == last => {
                self.send(successor, MessageBody::TimeoutNow);
                self.stop_leading_after_removal();
            }
            Some((_, successor)) => {
                if self.transfer_target.is_none() {
                    self.transfer_target = Some(successor);
                    self.transfer_elapsed = 0;
                    self.send_append(successor, true);
                }
            }
            None => self.stop_leading_after_removal(),
        }
    }

    fn stop_leading_after_removal(&mut self) {
        let term = self.term;
        self.become_follower(term, NO_NODE);
    }

    /// Tells the transfer target to campaign; a leader that was removed stops leading.
    fn send_timeout_now(&mut self, to: NodeId) {
        self.send(to, MessageBody::TimeoutNow);
        if self.removal_committed() {
            self.stop_leading_after_removal();
        }
    }

    pub(crate) fn step_leader(&mut self, message: Message) {
        let from = message.from;
        match message.body {
            MessageBody::AppendEntriesResponse { result } => {
                if let Some(progress) = self.progress.get_mut(&from) {
                    progress.recent_active = true;
                }
                match result {
                    Ok(match_index) => self.handle_append_success(from, match_index),
                    Err(hint) => self.handle_append_rejection(from, hint),
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                let last_index = self.log.last_index();
                let Some(progress) = self.progress.get_mut(&from) else {
                    return;
                };
                progress.recent_active = true;
                progress.probe_sent = false;
                if let Some(transfer) = progress.snapshot.as_mut() {
                    // Chunks may have been lost: after a few silent rounds, resend from
                    // the last byte the follower confirmed.
                    transfer.stalled_heartbeats += 1;
                    if transfer.stalled_heartbeats >= SNAPSHOT_STALL_HEARTBEATS {
                        transfer.stalled_heartbeats = 0;
                        transfer.sent_offset = transfer.acked_offset;
                        transfer.all_sent = false;
                    }
                }
                progress.acked_read_round = progress.acked_read_round.max(read_round);
                if progress.state == ProgressState::Replicate && progress.inflights.is_full() {
                    progress.inflights.free_first();
                }
                if self.transfer_target == Some(from) && progress.match_index == last_index {
                    // The TimeoutNow may have been lost: say it again.
                    self.send_timeout_now(from);
                    if self.role != Role::Leader {
                        return;
                    }
                } else if progress.match_index < last_index {
                    // Even with nothing new to send: if our earlier messages were lost
                    // (the follower restarted), this probe provokes a rejection that
                    // restarts replication from where the follower really is.
                    self.send_append(from, true);
                }
                if read_round > 0 {
                    self.release_confirmed_reads();
                }
            }
            MessageBody::ReadIndexRequest { request_id } => {
                // Errors (too many reads) leave the follower's client to time out.
                let _ = self.leader_read(from, request_id);
            }
            MessageBody::InstallSnapshotResponse { index, next_offset } => {
                self.handle_snapshot_response(from, index, next_offset)
            }
            _ => {}
        }
    }

    // ----- snapshots -------------------------------------------------------------------

    /// The entries `to` needs next were compacted: send the newest snapshot instead.
    fn start_snapshot(&mut self, to: NodeId) -> bool {
        let meta = self.log.store.snapshot_meta();
        assert!(
            meta.index >= self.log.first_index() - 1 && meta.index > 0,
            "the log was compacted through {} but the newest snapshot is at {}",
            self.log.first_index() - 1,
            meta.index
        );
        self.progress.get_mut(&to).expect("progress exists for every member").become_snapshot(meta);
        self.send_snapshot_chunks(to)
    }

    /// Sends chunks of the snapshot in transfer to `to`, up to the in-flight window.
    /// Returns whether anything was sent.
    fn send_snapshot_chunks(&mut self, to: NodeId) -> bool {
        let chunk_bytes = self.config.max_message_bytes;
        let mut sent_any = false;
        for _ in 0..MAX_SNAPSHOT_CHUNKS_IN_FLIGHT {
            let progress = &self.progress[&to];
            let transfer = progress.snapshot.as_ref().expect("a snapshot transfer is in progress");
            let window = MAX_SNAPSHOT_CHUNKS_IN_FLIGHT * chunk_bytes;
            if transfer.all_sent || transfer.sent_offset - transfer.acked_offset >= window {
                break;
            }
            let (meta, offset) = (transfer.meta.clone(), transfer.sent_offset);
            let piece = match self.log.store.snapshot_chunk(meta.index, offset, chunk_bytes) {
                Ok(piece) => piece,
                Err(StorageError::Compacted(_)) => {
                    // A newer snapshot replaced this one: start over with it.
                    let newest = self.log.store.snapshot_meta();
                    if newest.index <= meta.index {
                        break;
                    }
                    self.progress.get_mut(&to).expect("progress exists").become_snapshot(newest);
                    continue;
                }
                // Try again on the next heartbeat reply.
                Err(_) => break,
            };
            let transfer = self.progress.get_mut(&to).and_then(|p| p.snapshot.as_mut()).expect("in transfer");
            transfer.sent_offset += piece.data.len() as u64;
            transfer.all_sent = piece.last;
            let chunk = SnapshotChunk { meta, offset, data: piece.data, last: piece.last };
            self.send(to, MessageBody::InstallSnapshot { chunk });
            sent_any = true;
        }
        sent_any
    }

    fn handle_snapshot_response(&mut self, from: NodeId, index: Index, next_offset: u64) {
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        let Some(transfer) = progress.snapshot.as_mut().filter(|t| t.meta.index == index) else {
            return; // about a transfer we are no longer making
        };
        if next_offset > transfer.acked_offset {
            // The follower holds this much of the snapshot, possibly more than we sent
            // since we last rewound (after a stall, or on a reordered older answer): go
            // on from there, or we would resend below it for good.
            transfer.acked_offset = next_offset;
            transfer.sent_offset = transfer.sent_offset.max(next_offset);
            transfer.stalled_heartbeats = 0;
            transfer.rewound = false;
        } else if next_offset < transfer.acked_offset {
            // The follower holds less than it said before: it restarted (and perhaps
            // took an old chunk since), or this is a late answer. Either way resending
            // from there is safe, and a late answer is corrected by the next one.
            transfer.acked_offset = next_offset;
            transfer.sent_offset = next_offset;
            transfer.all_sent = false;
            transfer.rewound = true;
        } else if next_offset == transfer.acked_offset && transfer.sent_offset > next_offset && !transfer.rewound {
            // A chunk after the one it wants arrived first: the wanted one was lost or is
            // late, and the follower drops everything out of order, so resend from there
            // (once per gap).
            transfer.sent_offset = next_offset;
            transfer.all_sent = false;
            transfer.rewound = true;
        }
        self.send_snapshot_chunks(from);
    }

    fn handle_append_success(&mut self, from: NodeId, match_index: Index) {
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        if match_index > last_index {
            return; // Cannot match entries we do not have: a reply from another leadership.
        }
        // A probe answered at exactly the known match also proves where the follower
        // stands: replicate from there without another round trip. Only an answer to the
        // probe in flight counts (a bare `Ok(0)` a follower sends to an old term's
        // message must not restart replication from index 1).
        let probe_confirmed = progress.state == ProgressState::Probe
            && match_index == progress.match_index
            && match_index + 1 == progress.next_index;
        if !progress.maybe_update(match_index) && !probe_confirmed {
            return;
        }
        let first_index = self.log.first_index();
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Replicate => progress.inflights.free_to(match_index),
            // Installed (or the follower caught up some other way): replicate from there
            // once the entries it needs next are still in our log.
            ProgressState::Snapshot if progress.match_index + 1 >= first_index => progress.become_replicate(),
            ProgressState::Snapshot => {}
        }
        let committed = self.maybe_commit();
        if self.role != Role::Leader {
            return; // our own removal committed
        }
        if !committed {
            // Keep the pipeline full, bounded by the follower's in-flight window.
            while self.send_append(from, false) {}
            let progress = &self.progress[&from];
            if progress.sent_commit < self.log.committed().min(progress.match_index) {
                self.send_append(from, true);
            }
        }
        if self.transfer_target == Some(from) && self.progress[&from].match_index == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    fn handle_append_rejection(&mut self, from: NodeId, hint: RejectHint) {
        // Skip back over the follower's divergent term in one step: the follower says
        // it has nothing matching above `hint_index` with a term above `hint_term`; our
        // own log tells where that term (or an earlier one) ends.
        let probe_index = if hint.hint_term > 0 {
            self.log.find_conflict_by_term(hint.hint_index, hint.hint_term).0
        } else {
            hint.hint_index
        };
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        if progress.maybe_decrease_to(hint.rejected_index, probe_index + 1) {
            if progress.state == ProgressState::Replicate {
                progress.become_probe();
            }
            self.send_append(from, true);
        }
    }

    // ----- ReadIndex -------------------------------------------------------------------

    /// A linearizable read at the leader: the commit index is a safe read point only
    /// once (a) this leader has committed an entry of its own term, so the index covers
    /// every write acknowledged by any earlier leader, and (b) a majority has answered a
    /// heartbeat sent after the read arrived, so no newer leader existed at that time.
    pub(crate) fn leader_read(&mut self, from: NodeId, request_id: u64) -> Result<(), ProposeError> {
        let waiting = self.pending_reads.len() + self.reads_awaiting_commit.len();
        if waiting >= self.config.max_pending_reads {
            return Err(ProposeError::TooManyPendingReads { count: waiting });
        }
        if !self.committed_in_current_term() {
            self.reads_awaiting_commit.push_back((from, request_id));
            return Ok(());
        }
        let index = self.log.committed();
        let voters = &self.membership.current().voters;
        let alone = voters.len() == 1 && voters.contains(&self.config.id);
        if alone || self.config.bugs().stale_read {
            self.answer_read(from, request_id, index);
            return Ok(());
        }
        self.read_round += 1;
        let round = self.read_round;
        self.pending_reads.push_back(PendingRead { from, request_id, index, round });
        self.broadcast_heartbeat(round);
        Ok(())
    }

    fn release_reads_awaiting_commit(&mut self) {
        let waiting: Vec<_> = self.reads_awaiting_commit.drain(..).collect();
        for (from, request_id) in waiting {
            let _ = self.leader_read(from, request_id);
        }
    }

    /// Releases every pending read whose round a majority (us included) has acknowledged.
    fn release_confirmed_reads(&mut self) {
        let id = self.config.id;
        let mut acked: Vec<u64> = self
            .membership
            .current()
            .voters
            .iter()
            .map(|voter| match self.progress.get(voter) {
                _ if *voter == id => self.read_round,
                Some(p) => p.acked_read_round,
                None => 0,
            })
            .collect();
        let confirmed_round = committed_index(&mut acked);
        while let Some(read) = self.pending_reads.front().copied() {
            if read.round > confirmed_round {
                break;
            }
            self.pending_reads.pop_front();
            self.answer_read(read.from, read.request_id, read.index);
        }
    }

    fn answer_read(&mut self, from: NodeId, request_id: u64, index: Index) {
        if from == self.config.id {
            self.read_states.push(ReadState { request_id, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { request_id, index });
        }
    }

    // ----- leadership transfer ---------------------------------------------------------

    /// Hands leadership to `to`: once its log matches ours, it is told to campaign at
    /// once (TimeoutNow). New proposals are refused meanwhile; the transfer is abandoned
    /// after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if !self.membership.current().is_voter(to) {
            return Err(ProposeError::UnknownNode(to));
        }
        if to == self.config.id {
            return Ok(());
        }
        if self.transfer_target != Some(to) {
            // A repeated request for the same target keeps the original deadline.
            self.transfer_target = Some(to);
            self.transfer_elapsed = 0;
        }
        if self.progress[&to].match_index == self.log.last_index() {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }
}
