//! etcd's lock and election services (`v3lockpb.Lock`, `v3electionpb.Election`), served
//! by the member itself.
//!
//! etcd 3.4 serves both by running its client-side recipe (`clientv3/concurrency`)
//! against itself, and so does concord, on the member's own state machine:
//!
//! - A participant is the key `<name>/<lease in hex>`, put with its lease in a Txn that
//!   only creates it if it does not exist. Participants are ordered by that key's create
//!   revision: the oldest holds the lock (leads the election), each other one waits for
//!   the deletion of the participant created just before it. Its create revision is the
//!   participant's fencing token: it only grows.
//! - Waits follow the deletions through [`follow::EventFollower`] (etcd opens a watch)
//!   and confirm the outcome with a linearizable read.
//! - A request with lease 0 gets a lease of [`SESSION_TTL`] seconds that nobody renews
//!   (etcd's session default).
//! - Every error reaches the client as gRPC code Unknown with etcd's text, as etcd's
//!   in-process client hands them on.
//!
//! Where concord is safer than etcd 3.4: a waiter whose own key vanished while it
//! waited (its lease expired) is told so instead of being told it holds the lock or
//! leads, and a waiter whose client gives up or whose member stops withdraws its key.
//! `crates/cli/tests/coordination.rs` compares the observable details with etcd 3.4.23.

pub mod election;
pub mod follow;
pub mod lock;

use std::sync::Arc;
use std::time::Duration;

use concord_api::etcdserverpb as pb;
use concord_mvcc::{
    prefix_end, validate_txn, Command, Compare, CompareResult, DeleteRangeRequest, KeyValue, MvccError, PutRequest,
    RangeRequest, RequestOp, Response, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::errors::EtcdError;
use crate::keys::Keys;
use crate::lease::Leases;
use crate::shared::Shared;
use follow::EventSource;

/// The TTL, in seconds, of the lease granted for a request that names none (etcd's
/// `concurrency` default session TTL).
pub const SESSION_TTL: i64 = 60;
/// Lock and Campaign requests one member keeps waiting at once; more are refused
/// rather than queued (etcd has no limit).
pub const MAX_WAITING: usize = 10_000;
/// Observe streams one member serves at once; a separate budget, so that long-lived
/// observers cannot keep locks from being taken.
pub const MAX_OBSERVERS: usize = 10_000;
/// Withdrawals of abandoned waiters running in the background at once; beyond it an
/// abandoned waiter's key is left to its lease.
pub const MAX_BACKGROUND_WITHDRAWALS: usize = 1024;
/// Attempts to withdraw a participant whose request failed or was abandoned, while the
/// cluster cannot commit (the failure is often the very reason).
const WITHDRAW_ATTEMPTS: u32 = 8;

/// What a lock or election request can fail with. Every one reaches the client as code
/// Unknown with this text, as from etcd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinationError {
    #[error("election: no leader")]
    NoLeader,
    #[error("election: not leader")]
    NotLeader,
    /// etcd's `ErrMissingLeaderKey`, for a Proclaim or Resign without a leader key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// The waiter's own key is gone (its lease expired): it holds nothing. etcd 3.5's
    /// text; 3.4 would grant the lock.
    #[error("mutex: session is expired")]
    LockSessionExpired,
    /// As `LockSessionExpired`, for a campaign (etcd 3.4 would declare it leader).
    #[error("election: session is expired")]
    ElectionSessionExpired,
    #[error("concord: too many waiting lock and campaign requests (limit {MAX_WAITING})")]
    TooManyWaiting,
    #[error("concord: too many observe streams (limit {MAX_OBSERVERS})")]
    TooManyObservers,
    #[error("{0}")]
    Etcd(#[from] EtcdError),
}

impl From<CoordinationError> for Status {
    fn from(error: CoordinationError) -> Status {
        Status::unknown(error.to_string())
    }
}

/// The ways into the member that the lock and election services share.
#[derive(Clone)]
pub struct Coordination {
    pub shared: Arc<Shared>,
    pub leases: Arc<Leases>,
    pub events: EventSource,
    /// Becomes true when the member stops: waits end.
    pub stop: watch::Receiver<bool>,
    waiting: Arc<Semaphore>,
    observing: Arc<Semaphore>,
    withdrawing: Arc<Semaphore>,
}

/// A participant in a lock or an election: its key and that key's create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

impl Coordination {
    pub fn new(shared: Arc<Shared>, leases: Arc<Leases>, events: EventSource, stop: watch::Receiver<bool>) -> Self {
        Coordination {
            shared,
            leases,
            events,
            stop,
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            observing: Arc::new(Semaphore::new(MAX_OBSERVERS)),
            withdrawing: Arc::new(Semaphore::new(MAX_BACKGROUND_WITHDRAWALS)),
        }
    }

    /// A place among the [`MAX_WAITING`] waiting requests, held until it is dropped.
    pub fn admit_waiter(&self) -> Result<OwnedSemaphorePermit, CoordinationError> {
        self.waiting.clone().try_acquire_owned().map_err(|_| CoordinationError::TooManyWaiting)
    }

    /// A place among the [`MAX_OBSERVERS`] Observe streams, held until it is dropped.
    pub fn admit_observer(&self) -> Result<OwnedSemaphorePermit, CoordinationError> {
        self.observing.clone().try_acquire_owned().map_err(|_| CoordinationError::TooManyObservers)
    }

    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        self.shared.header(revision)
    }

    /// The lease a request works under: its own, or for lease 0 a fresh one of
    /// [`SESSION_TTL`] seconds.
    pub async fn session_lease(&self, lease: i64) -> Result<i64, CoordinationError> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self.leases.grant(pb::LeaseGrantRequest { ttl: SESSION_TTL, id: 0 }).await?;
        Ok(granted.id)
    }

    /// Replicates a Txn, validated as the KV service validates one.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, CoordinationError> {
        validate_txn(&request, self.shared.max_txn_ops).map_err(EtcdError::from)?;
        match self.shared.propose(Command::Txn(request)).await? {
            Response::Txn(response) => Ok(response),
            other => Err(EtcdError::Internal(format!("unexpected response {other:?}")).into()),
        }
    }

    /// A linearizable read (etcd's default Get): its kvs and the revision it was served at.
    pub async fn read(&self, request: RangeRequest) -> Result<(Vec<KeyValue>, i64), CoordinationError> {
        self.shared.read_barrier().await?;
        self.read_local(request).await
    }

    /// A read of this member's state machine as it is: linearizable right after
    /// [`Coordination::read`], whose barrier it shares.
    async fn read_local(&self, request: RangeRequest) -> Result<(Vec<KeyValue>, i64), CoordinationError> {
        let store = self.shared.store.clone();
        let response = tokio::task::spawn_blocking(move || store.range(&request))
            .await
            .map_err(|e| EtcdError::Internal(format!("read panicked: {e}")))?
            .map_err(EtcdError::from)?;
        Ok((response.kvs, response.revision))
    }

    /// The oldest participant under `prefix` (the lock holder, the leader), if any.
    pub async fn first_created(&self, prefix: &[u8]) -> Result<(Option<KeyValue>, i64), CoordinationError> {
        let (kvs, revision) = self.read(oldest_under(prefix)).await?;
        Ok((kvs.into_iter().next(), revision))
    }

    /// etcd's `waitDeletes`: waits until no key under `prefix` was created at or before
    /// `me.create_revision - 1`, then checks that `me` itself still exists (else
    /// `expired`). Returns the revision of the read that found no predecessor (etcd's
    /// header).
    pub async fn wait_for_predecessors(
        &self,
        prefix: &[u8],
        me: &Participant,
        expired: CoordinationError,
    ) -> Result<i64, CoordinationError> {
        let mut stop = self.stop.clone();
        let wait = async {
            let free_at = loop {
                let (kvs, revision) = self.read(newest_before(prefix, me.create_revision)).await?;
                let Some(predecessor) = kvs.into_iter().next() else { break revision };
                self.wait_for_delete(&predecessor.key, revision + 1).await?;
            };
            // Predecessors never come back (a new key is newer than `me`); `me` may be gone.
            // Read after the same barrier: one ReadIndex round per wake-up, not two.
            let (kvs, _) = self.read_local(single(&me.key)).await?;
            match kvs.first() {
                Some(kv) if kv.create_revision == me.create_revision => Ok(free_at),
                _ => Err(expired),
            }
        };
        tokio::select! {
            result = wait => result,
            _ = stop.wait_for(|stopped| *stopped) => Err(EtcdError::Stopped.into()),
        }
    }

    /// Waits for a delete of `key` at revision `from` or later. A compacted history
    /// returns too: the caller reads again, which is all it needs.
    async fn wait_for_delete(&self, key: &[u8], from: i64) -> Result<(), CoordinationError> {
        let mut follower = self.events.follow(Keys::Single(key.to_vec()), from);
        loop {
            match follower.next_events().await {
                Ok(events) if events.iter().any(|event| event.kind == concord_mvcc::EventKind::Delete) => return Ok(()),
                Ok(_) => continue,
                Err(EtcdError::Mvcc(MvccError::Compacted)) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Withdraws `participant` with retries, for a request that failed or was abandoned:
    /// a key left behind would hold the lock for nobody for as long as its lease lives.
    async fn withdraw_patiently(&self, participant: &Participant) {
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=WITHDRAW_ATTEMPTS {
            match self.withdraw(participant).await {
                Ok(_) => return,
                Err(CoordinationError::Etcd(EtcdError::Stopped)) => return,
                Err(error) if attempt == WITHDRAW_ATTEMPTS => {
                    tracing::warn!(%error, key = ?String::from_utf8_lossy(&participant.key), "gave up withdrawing a waiter; its lease will");
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Deletes `participant`'s key if it is still the same key (etcd's `Resign`); the
    /// Txn's revision.
    pub async fn withdraw(&self, participant: &Participant) -> Result<i64, CoordinationError> {
        let delete = RequestOp::DeleteRange(DeleteRangeRequest { key: participant.key.clone(), ..Default::default() });
        let txn = TxnRequest { compare: vec![is_participant(participant)], success: vec![delete], failure: vec![] };
        Ok(self.txn(txn).await?.revision)
    }

    /// A guard that withdraws `participant` when dropped armed: a waiting request whose
    /// client gave up (the handler future is dropped) or that failed leaves no key that
    /// would later hold the lock for nobody.
    pub fn withdraw_unless_done(&self, participant: Participant) -> WithdrawGuard {
        WithdrawGuard { coordination: self.clone(), participant: Some(participant) }
    }
}

pub struct WithdrawGuard {
    coordination: Coordination,
    participant: Option<Participant>,
}

impl WithdrawGuard {
    /// The request succeeded: the key stays.
    pub fn keep(mut self) {
        self.participant = None;
    }

    /// Keeps the key on success; on failure withdraws it first (see `withdraw_now`).
    pub async fn settle<T>(self, outcome: Result<T, CoordinationError>) -> Result<T, CoordinationError> {
        match outcome {
            Ok(value) => {
                self.keep();
                Ok(value)
            }
            Err(error) => {
                self.withdraw_now().await;
                Err(error)
            }
        }
    }

    /// The request failed: withdraw before the client hears of it, so that a retry with
    /// the same lease cannot find its key and then lose it to this withdrawal. If this is
    /// abandoned midway, the guard is still armed and `drop` withdraws.
    pub async fn withdraw_now(mut self) {
        let Some(participant) = self.participant.clone() else { return };
        self.coordination.withdraw_patiently(&participant).await;
        self.participant = None;
    }
}

impl Drop for WithdrawGuard {
    fn drop(&mut self) {
        let Some(participant) = self.participant.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Ok(place) = self.coordination.withdrawing.clone().try_acquire_owned() else {
            tracing::warn!(key = ?String::from_utf8_lossy(&participant.key), "too many withdrawals under way; this waiter's key is left to its lease");
            return;
        };
        let coordination = self.coordination.clone();
        runtime.spawn(async move {
            coordination.withdraw_patiently(&participant).await;
            drop(place);
        });
    }
}

/// `<name>/`: the prefix under which a lock's or an election's participants live.
pub fn participants_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// `<prefix><lease in hex>`, as Go's `%x` prints the lease id (lower case, a sign for a
/// negative one).
pub fn participant_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    let mut key = prefix.to_vec();
    key.extend_from_slice(hex.as_bytes());
    key
}

/// `create_revision(key) == participant.create_revision`: the participant still holds its
/// place (etcd's `IsOwner` once it leads).
pub fn is_participant(participant: &Participant) -> Compare {
    Compare::create_revision(participant.key.clone(), CompareResult::Equal, participant.create_revision)
}

/// `create_revision(key) == 0`: the key does not exist.
pub fn is_absent(key: &[u8]) -> Compare {
    Compare::create_revision(key.to_vec(), CompareResult::Equal, 0)
}

pub fn put(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp::Put(PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() })
}

pub fn single(key: &[u8]) -> RangeRequest {
    RangeRequest { key: key.to_vec(), ..Default::default() }
}

/// etcd's `WithFirstCreate`: the oldest key under `prefix`.
pub fn oldest_under(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..Default::default()
    }
}

/// etcd's `WithLastCreate` + `WithMaxCreateRev(create_revision - 1)`: the newest key under
/// `prefix` older than `create_revision`.
fn newest_before(prefix: &[u8], create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Create,
        max_create_revision: create_revision - 1,
        ..Default::default()
    }
}

/// The kvs of the `index`th response of a Txn branch, if it is a range.
pub fn range_kvs(response: &TxnResponse, index: usize) -> &[KeyValue] {
    match response.responses.get(index) {
        Some(ResponseOp::Range(range)) => &range.kvs,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_keys_print_the_lease_as_go_does() {
        assert_eq!(participant_key(b"lock/", 0x293ea23ac96db905), b"lock/293ea23ac96db905".to_vec());
        assert_eq!(participant_key(b"/", 10), b"/a".to_vec());
        assert_eq!(participant_key(b"x/", -255), b"x/-ff".to_vec());
        assert_eq!(participants_prefix(b""), b"/".to_vec());
    }

    #[test]
    fn every_error_is_unknown_with_etcds_text() {
        let status: Status = CoordinationError::NotLeader.into();
        assert_eq!((status.code(), status.message()), (tonic::Code::Unknown, "election: not leader"));
        let status: Status = CoordinationError::from(EtcdError::from(concord_mvcc::MvccError::LeaseNotFound)).into();
        assert_eq!((status.code(), status.message()), (tonic::Code::Unknown, "etcdserver: requested lease not found"));
        let status: Status = CoordinationError::MissingLeaderKey.into();
        assert_eq!(status.message(), "\"leader\" field must be provided");
    }
}
