//! What every gRPC service of a member shares: the way into the Raft task (propose, read
//! barrier), the state machine for local reads, and the facts for response headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_api::etcdserverpb::ResponseHeader;
use concord_member::RequestIds;
use concord_mvcc::{Command, Response, Store};
use concord_raft::{NodeId, NO_NODE};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::Waiters;
use crate::envelope;
use crate::errors::EtcdError;
use crate::members::MemberDirectory;
use crate::node::{NodeStatus, Request};

/// The gRPC metadata key by which a client asks for a member with a leader (etcd's
/// `rpctypes.MetadataRequireLeaderKey`).
pub const REQUIRE_LEADER_METADATA: &str = "hasleader";

/// Election timeouts without a leader after which a `hasleader` stream is ended (etcd's
/// `maxNoLeaderCnt`).
pub const NO_LEADER_CHECKS: u32 = 3;

/// Whether a client asked for a member with a leader (`hasleader: true`).
pub fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get(REQUIRE_LEADER_METADATA).is_some_and(|value| value.as_bytes() == b"true")
}

/// Most entries this member may have committed but not yet applied before it refuses new
/// proposals with "etcdserver: too many requests" (etcd's
/// `maxGapBetweenApplyAndCommitIndex`, 5000). The Raft task hands committed entries to the
/// apply task without waiting (a long apply, such as a DeleteRange of 200,000 keys, must not
/// stop its ticks and heartbeats), so this is what keeps that queue bounded against this
/// member's own clients and, on a leader, against the proposals followers forward. What a
/// leader commits while a follower's apply lags is not bounded by it (as in etcd): the
/// entries share their buffers with the in-memory log.
pub const MAX_APPLY_GAP: u64 = 5000;

/// Whether the state machine lags the commit index by more than [`MAX_APPLY_GAP`].
pub(crate) fn apply_lags(commit_index: u64, applied: u64) -> bool {
    commit_index.saturating_sub(applied) > MAX_APPLY_GAP
}

pub struct Shared {
    pub member_id: NodeId,
    pub cluster_id: u64,
    pub store: Arc<Store>,
    pub requests: mpsc::Sender<Request>,
    pub waiters: Waiters,
    pub applied: watch::Receiver<u64>,
    pub status: watch::Receiver<NodeStatus>,
    /// Who is in the cluster (names, URLs, learners), as of the last applied entry.
    pub directory: MemberDirectory,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How long a request may wait for replication and apply.
    pub request_timeout: Duration,
    /// How long a request waits for a leader to appear before giving up.
    pub leader_wait: Duration,
    /// Ids for the requests this process proposes (concord-member's `RequestIds`).
    request_ids: RequestIds,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        member_id: NodeId,
        cluster_id: u64,
        store: Arc<Store>,
        requests: mpsc::Sender<Request>,
        waiters: Waiters,
        applied: watch::Receiver<u64>,
        status: watch::Receiver<NodeStatus>,
        directory: MemberDirectory,
        max_request_bytes: usize,
        max_txn_ops: usize,
        election_timeout: Duration,
    ) -> Shared {
        // Request ids start from the boot time in nanoseconds, so ids from before a
        // restart (whose entries may still commit) are never reused.
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Shared {
            member_id,
            cluster_id,
            store,
            requests,
            waiters,
            applied,
            status,
            directory,
            max_request_bytes,
            max_txn_ops,
            request_timeout: Duration::from_secs(5) + 2 * election_timeout,
            leader_wait: 3 * election_timeout,
            request_ids: RequestIds::new(boot),
        }
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.status.borrow().term,
        }
    }

    /// The header of a response about the state machine as it is now.
    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.store.current_revision())
    }

    /// A request id no other request of this member uses (waiters are keyed by it).
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.next_id()
    }

    /// etcd's `hasleader` rule for streams: a client that sends the metadata
    /// `hasleader: true` (etcdctl does for watches and keep-alives) is refused with
    /// "etcdserver: no leader" while this member knows no leader.
    pub fn require_leader_if_asked(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), EtcdError> {
        if requires_leader(metadata) && self.status.borrow().leader == NO_NODE {
            return Err(EtcdError::NoLeader);
        }
        Ok(())
    }

    /// Resolves once this member has had no leader at [`NO_LEADER_CHECKS`] checks in a
    /// row, one per election timeout: etcd then ends every open stream that asked for a
    /// leader (`hasleader`) with "etcdserver: no leader" (its `monitorLeader`).
    pub async fn leader_lost(&self) {
        let every = self.leader_wait / NO_LEADER_CHECKS;
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // A stream that waited on a slow client does not owe a burst of missed checks.
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut without_leader = 0u32;
        while without_leader < NO_LEADER_CHECKS {
            checks.tick().await;
            without_leader = if self.status.borrow().leader == NO_NODE { without_leader + 1 } else { 0 };
        }
    }

    /// Waits (bounded) until some member is known to lead.
    pub async fn wait_for_leader(&self) -> Result<(), EtcdError> {
        let mut status = self.status.clone();
        let deadline = tokio::time::Instant::now() + self.leader_wait;
        loop {
            if status.borrow_and_update().leader != NO_NODE {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(EtcdError::Stopped),
                Err(_) => return Err(EtcdError::NoLeader),
            }
        }
    }

    /// Replicates `command` through Raft and returns the state machine's answer.
    pub async fn propose(&self, command: Command) -> Result<Response, EtcdError> {
        let encoded = command.encode();
        if encoded.len() > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        self.propose_entry(|request_id| envelope::encode_command(self.member_id, request_id, &encoded)).await
    }

    /// Announces this member's client URLs to the cluster (retried by the caller).
    pub async fn publish_attributes(&self, name: &str, client_urls: &[String]) -> Result<(), EtcdError> {
        self.propose_entry(|request_id| {
            envelope::encode_member_attributes(self.member_id, request_id, name, client_urls)
        })
        .await
        .map(|_| ())
    }

    /// MemberUpdate: replicates a member's new peer URLs; the outcome is decided when the
    /// entry is applied (unknown member, URLs taken).
    pub async fn update_member_peer_urls(&self, member: NodeId, peer_urls: &[String]) -> Result<(), EtcdError> {
        self.propose_entry(|request_id| envelope::encode_member_update(self.member_id, request_id, member, peer_urls))
            .await
            .map(|_| ())
    }

    async fn propose_entry(&self, build: impl FnOnce(u64) -> bytes::Bytes) -> Result<Response, EtcdError> {
        self.wait_for_leader().await?;
        if apply_lags(self.status.borrow().commit_index, *self.applied.borrow()) {
            return Err(EtcdError::TooManyRequests);
        }
        let request_id = self.next_request_id();
        let data = build(request_id);
        let outcome = self.waiters.register(request_id);
        let deadline = Instant::now() + self.request_timeout;
        if self.requests.send(Request::Propose { data, request_id, deadline }).await.is_err() {
            return Err(EtcdError::Stopped);
        }
        match tokio::time::timeout(self.request_timeout, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => {
                if self.status.borrow().leader == NO_NODE {
                    Err(EtcdError::NoLeader)
                } else {
                    Err(EtcdError::Timeout)
                }
            }
        }
    }

    /// Returns once this member's state machine reflects every write acknowledged before
    /// the call (ReadIndex, then wait for apply).
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        self.wait_for_leader().await?;
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + self.request_timeout;
        if self.requests.send(Request::ReadIndex { reply, deadline }).await.is_err() {
            return Err(EtcdError::Stopped);
        }
        let index = match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(EtcdError::Stopped),
            Err(_) => return Err(EtcdError::Timeout),
        };
        let mut applied = self.applied.clone();
        let wait = async { applied.wait_for(|applied| *applied >= index).await.map(|_| ()) };
        let result = tokio::time::timeout(self.request_timeout, wait).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_are_refused_while_the_apply_lags_by_more_than_etcds_gap() {
        assert!(!apply_lags(100, 100));
        assert!(!apply_lags(5100, 100), "a gap of exactly 5000 is allowed");
        assert!(apply_lags(5101, 100));
        assert!(!apply_lags(50, 100), "applied ahead of the published commit (a restart): no lag");
    }
}
