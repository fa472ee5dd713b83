//! etcd's Lease service, and the task that expires and checkpoints leases at the leader.
//!
//! Grants and revokes are replicated like any write. Keep-alives and TimeToLive need the
//! leader's lease clock (`lessor`), so a follower forwards them to the leader over the
//! peer protocol, as etcd does. The leader answers a keep-alive only after a ReadIndex
//! round has confirmed, after the keep-alive arrived, that it still leads: a deposed
//! leader that has not noticed yet could otherwise renew a lease its successor expires.
//! LeaseLeases is answered from the member's own state machine.
//!
//! The lease task runs on every member and does something only while the lessor times
//! leases (this member leads and has applied an entry of its term): it proposes an expiry
//! for each lease past its deadline (at most [`EXPIRIES_PER_TICK`] per tick and
//! [`MAX_EXPIRIES_IN_FLIGHT`] at once, so that thousands of leases expiring together do
//! not stall the cluster) and a checkpoint of leases whose remaining TTL the log overstates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_api::etcdserverpb::{self as pb, lease_server::Lease as LeaseApi};
use concord_api::peerpb::peer_client::PeerClient;
use concord_mvcc::{
    Command, LeaseCheckpoint, LeaseCheckpointRequest, LeaseExpireRequest, LeaseGrantRequest, LeaseRevokeRequest,
    Response,
};
use concord_raft::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tracing::{info, warn};

use crate::cluster::is_retryable;
use crate::errors::EtcdError;
use crate::lessor::{Lessor, Renewal};
use crate::shared::{requires_leader, Shared};

/// How often the lease task looks at the clock.
const TICK: Duration = Duration::from_millis(100);
/// Most expiries proposed per tick (1,000 per second, etcd's `leaseRevokeRate`).
pub const EXPIRIES_PER_TICK: usize = 100;
/// Most expiry proposals waiting for their outcome at once.
pub const MAX_EXPIRIES_IN_FLIGHT: usize = 256;
/// How often idle leases are checkpointed (one entry of at most
/// `lessor::MAX_CHECKPOINTS_PER_ENTRY` leases each time).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Pause before asking again when the leader is changing.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Keep-alive responses queued for one stream before its reader is made to wait.
const KEEP_ALIVE_QUEUE: usize = 16;

/// The smallest TTL a lease gets, in seconds: etcd's `ceil(1.5 × election timeout)`.
pub fn min_lease_ttl(election_timeout: Duration) -> i64 {
    let millis = election_timeout.as_millis().saturating_mul(3) / 2;
    i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX).max(1)
}

/// What the Lease service, the peer service and the lease task share.
pub struct Leases {
    pub shared: Arc<Shared>,
    pub lessor: Arc<Lessor>,
    /// Seconds; smaller TTLs are raised to it.
    pub min_ttl: i64,
    /// A channel to the leader's peer endpoint, for forwarding, with the leader it is for.
    leader_channel: Mutex<Option<(NodeId, Channel)>>,
}

impl Leases {
    pub fn new(shared: Arc<Shared>, lessor: Arc<Lessor>, min_ttl: i64) -> Leases {
        Leases { shared, lessor, min_ttl, leader_channel: Mutex::new(None) }
    }

    /// A lease id for a grant that did not choose one: the member id's low 16 bits over a
    /// counter (request ids start from the boot time, so a restart does not repeat them),
    /// positive, as etcd builds them.
    fn new_lease_id(&self) -> i64 {
        let id = ((self.shared.member_id & 0xffff) << 48) | (self.shared.next_request_id() & 0xffff_ffff_ffff);
        i64::try_from(id & (i64::MAX as u64)).unwrap_or(1).max(1)
    }

    pub async fn grant(&self, request: pb::LeaseGrantRequest) -> Result<pb::LeaseGrantResponse, EtcdError> {
        let id = if request.id == 0 { self.new_lease_id() } else { request.id };
        let grant = LeaseGrantRequest { id, ttl: request.ttl.max(self.min_ttl) };
        match self.shared.propose(Command::LeaseGrant(grant)).await? {
            Response::LeaseGrant(granted) => Ok(pb::LeaseGrantResponse {
                header: Some(self.shared.header(granted.revision)),
                id: granted.id,
                ttl: granted.ttl,
                error: String::new(),
            }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn revoke(&self, request: pb::LeaseRevokeRequest) -> Result<pb::LeaseRevokeResponse, EtcdError> {
        match self.shared.propose(Command::LeaseRevoke(LeaseRevokeRequest { id: request.id })).await? {
            Response::LeaseRevoke(revoked) => {
                Ok(pb::LeaseRevokeResponse { header: Some(self.shared.header(revoked.revision)) })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Every lease this member's state machine holds, by id.
    pub async fn list(&self) -> Result<pb::LeaseLeasesResponse, EtcdError> {
        let store = self.shared.store.clone();
        let leases = tokio::task::spawn_blocking(move || store.lease_timers())
            .await
            .map_err(|e| EtcdError::Internal(e.to_string()))??;
        Ok(pb::LeaseLeasesResponse {
            header: Some(self.shared.current_header()),
            leases: leases.into_iter().map(|lease| pb::LeaseStatus { id: lease.id }).collect(),
        })
    }

    /// A keep-alive: renewed at the leader (here or forwarded); the TTL it was renewed
    /// for, or 0 for an unknown lease.
    pub async fn renew(&self, id: i64) -> Result<i64, Status> {
        let deadline = Instant::now() + self.shared.request_timeout;
        self.at_leader(deadline, || self.renew_here(id, deadline), |mut client| async move {
            Ok(client.lease_renew(pb::LeaseKeepAliveRequest { id }).await?.into_inner().ttl)
        })
        .await
    }

    /// TimeToLive, answered by the leader (here or forwarded).
    pub async fn time_to_live(
        &self,
        request: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        let deadline = Instant::now() + self.shared.request_timeout;
        self.at_leader(
            deadline,
            || self.time_to_live_here(request, deadline),
            |mut client| async move { Ok(client.lease_time_to_live(request).await?.into_inner()) },
        )
        .await
    }

    /// Runs `here` if this member leads, else `forward` to the leader, following leader
    /// changes until `deadline`.
    async fn at_leader<T, Here, HereFut, Forward, ForwardFut>(
        &self,
        deadline: Instant,
        here: Here,
        forward: Forward,
    ) -> Result<T, Status>
    where
        Here: Fn() -> HereFut,
        HereFut: std::future::Future<Output = Result<T, EtcdError>>,
        Forward: Fn(PeerClient<Channel>) -> ForwardFut,
        ForwardFut: std::future::Future<Output = Result<T, Status>>,
    {
        loop {
            self.shared.wait_for_leader().await?;
            let status = *self.shared.status.borrow();
            let result = if status.is_leader {
                here().await.map_err(Status::from)
            } else {
                match self.leader_client(status.leader) {
                    Ok(client) => self.forward_while_leading(status.leader, deadline, forward(client)).await,
                    Err(error) => Err(error.into()),
                }
            };
            match result {
                Err(status) if is_retryable(&status) && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(status) if is_retryable(&status) => return Err(EtcdError::Timeout.into()),
                other => return other,
            }
        }
    }

    /// Waits for a forwarded request, giving up (to be retried) as soon as `leader` is no
    /// longer the leader: a leader that stopped answering (paused, partitioned) must not
    /// hold a keep-alive until the request times out while its successor expires the lease.
    async fn forward_while_leading<T>(
        &self,
        leader: NodeId,
        deadline: Instant,
        forwarded: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let mut status = self.shared.status.clone();
        tokio::select! {
            result = forwarded => result,
            _ = status.wait_for(|status| status.leader != leader) => Err(EtcdError::NotLeader.into()),
            _ = tokio::time::sleep_until(deadline.into()) => Err(EtcdError::Timeout.into()),
        }
    }

    /// A client of the leader's peer endpoint; the channel is kept while it leads.
    fn leader_client(&self, leader: NodeId) -> Result<PeerClient<Channel>, EtcdError> {
        let mut cached = self.leader_channel.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_leader, channel)) = cached.as_ref() {
            if *cached_leader == leader {
                return Ok(PeerClient::new(channel.clone()));
            }
        }
        // Unknown address: the directory has not caught up; ask again shortly.
        let url = self.shared.directory.member(leader).and_then(|m| m.peer_urls.first().cloned());
        let url = url.ok_or(EtcdError::NotLeader)?;
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(|error| EtcdError::Internal(format!("leader peer URL: {error}")))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        *cached = Some((leader, channel.clone()));
        Ok(PeerClient::new(channel))
    }

    /// What a keep-alive of `id` answers, renewed for `ttl` seconds (0: no such lease).
    pub fn keep_alive_response(&self, id: i64, ttl: i64) -> pb::LeaseKeepAliveResponse {
        pb::LeaseKeepAliveResponse { header: Some(self.shared.current_header()), id, ttl }
    }

    /// Renews at this member, which must lead: `NotLeader` otherwise. The renewal counts
    /// from now, the keep-alive's arrival, before the ReadIndex round that confirms it.
    pub async fn renew_here(&self, id: i64, deadline: Instant) -> Result<i64, EtcdError> {
        let arrived = Instant::now();
        loop {
            let term = self.confirmed_term().await?;
            match self.lessor.renew(id, term, arrived) {
                Renewal::Renewed(ttl) => return Ok(ttl),
                Renewal::NotFound => return Ok(0),
                Renewal::ClearCheckpointFirst => {
                    let clear =
                        LeaseCheckpointRequest { term, checkpoints: vec![LeaseCheckpoint { id, remaining_ttl: 0 }] };
                    if let Err(error) = self.shared.propose(Command::LeaseCheckpoint(clear)).await {
                        self.lessor.clear_failed(id, term);
                        return Err(error);
                    }
                    if Instant::now() >= deadline {
                        return Err(EtcdError::Timeout);
                    }
                }
                Renewal::Wait | Renewal::NotTiming => self.wait_for_lessor(deadline).await?,
            }
        }
    }

    /// TimeToLive at this member, which must lead.
    pub async fn time_to_live_here(
        &self,
        request: pb::LeaseTimeToLiveRequest,
        deadline: Instant,
    ) -> Result<pb::LeaseTimeToLiveResponse, EtcdError> {
        loop {
            let term = self.confirmed_term().await?;
            let store = self.shared.store.clone();
            let lease = tokio::task::spawn_blocking(move || store.lease(request.id))
                .await
                .map_err(|e| EtcdError::Internal(e.to_string()))??;
            let header = Some(self.shared.current_header());
            let Some(lease) = lease else {
                // etcd answers an unknown lease with TTL -1, not an error.
                return Ok(pb::LeaseTimeToLiveResponse {
                    header,
                    id: request.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: vec![],
                });
            };
            let Some((_, remaining)) = self.lessor.time_to_live(request.id, term, Instant::now()) else {
                self.wait_for_lessor(deadline).await?;
                continue;
            };
            return Ok(pb::LeaseTimeToLiveResponse {
                header,
                id: lease.id,
                // etcd truncates the remaining time to whole seconds.
                ttl: i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX),
                granted_ttl: lease.ttl,
                keys: if request.keys { lease.keys } else { Vec::new() },
            });
        }
    }

    /// The term in which this member leads, confirmed by a ReadIndex round that started
    /// after the call (so a leader that was deposed meanwhile finds out first); a term
    /// that changed during the round is not confirmed.
    async fn confirmed_term(&self) -> Result<u64, EtcdError> {
        let before = *self.shared.status.borrow();
        if !before.is_leader {
            return Err(EtcdError::NotLeader);
        }
        self.shared.read_barrier().await?;
        let after = *self.shared.status.borrow();
        if !after.is_leader || after.term != before.term {
            return Err(EtcdError::NotLeader);
        }
        Ok(after.term)
    }

    /// A new leader times leases once it has applied an entry of its term: wait for that.
    async fn wait_for_lessor(&self, deadline: Instant) -> Result<(), EtcdError> {
        if Instant::now() >= deadline {
            return Err(EtcdError::Timeout);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        Ok(())
    }
}

fn unexpected(response: Response) -> EtcdError {
    EtcdError::Internal(format!("unexpected response {response:?}"))
}

/// The etcd Lease service.
pub struct LeaseService {
    pub leases: Arc<Leases>,
}

#[tonic::async_trait]
impl LeaseApi for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<tonic::Response<pb::LeaseGrantResponse>, Status> {
        Ok(tonic::Response::new(self.leases.grant(request.into_inner()).await?))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<tonic::Response<pb::LeaseRevokeResponse>, Status> {
        Ok(tonic::Response::new(self.leases.revoke(request.into_inner()).await?))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::LeaseKeepAliveStream>, Status> {
        self.leases.shared.require_leader_if_asked(request.metadata())?;
        let end_without_leader = requires_leader(request.metadata());
        let mut incoming = request.into_inner();
        let (responses, outgoing) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let leases = self.leases.clone();
        // One keep-alive at a time per stream, in order, as etcd answers them; an error
        // (other than an unknown lease, which answers TTL 0) ends the stream, and so does
        // a lost leader for a `hasleader` stream, as etcd does.
        tokio::spawn(async move {
            let shared = leases.shared.clone();
            let leader_lost = shared.leader_lost();
            tokio::pin!(leader_lost);
            loop {
                let request = tokio::select! {
                    request = incoming.message() => match request {
                        Ok(Some(request)) => request,
                        _ => return,
                    },
                    _ = &mut leader_lost, if end_without_leader => {
                        let _ = responses.send(Err(EtcdError::NoLeader.into())).await;
                        return;
                    }
                };
                let answer = leases.renew(request.id).await.map(|ttl| leases.keep_alive_response(request.id, ttl));
                let failed = answer.is_err();
                if responses.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(outgoing)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<pb::LeaseTimeToLiveResponse>, Status> {
        Ok(tonic::Response::new(self.leases.time_to_live(request.into_inner()).await?))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<tonic::Response<pb::LeaseLeasesResponse>, Status> {
        Ok(tonic::Response::new(self.leases.list().await?))
    }
}

/// The lease task: follows leadership, and while this member times leases, expires and
/// checkpoints them. Ends when `stop` turns true.
pub async fn run_lease_task(leases: Arc<Leases>, mut stop: watch::Receiver<bool>) {
    let mut status = leases.shared.status.clone();
    let mut expiries: JoinSet<()> = JoinSet::new();
    let mut last_checkpoint = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = status.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        while expiries.try_join_next().is_some() {}
        follow_leadership(&leases).await;
        propose_expiries(&leases, &mut expiries);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = Instant::now();
            propose_checkpoints(&leases, &mut expiries);
        }
    }
}

/// Starts timing once this member leads and has applied an entry of its term; stops when
/// it no longer leads in that term.
async fn follow_leadership(leases: &Arc<Leases>) {
    let status = *leases.shared.status.borrow();
    let timing = leases.lessor.timing_term();
    let should_time = status.is_leader && leases.lessor.applied_term() == status.term;
    if timing.is_some() && (!status.is_leader || timing != Some(status.term)) {
        leases.lessor.demote();
        info!(term = status.term, "stopped timing leases: no longer the leader of that term");
    }
    if should_time && leases.lessor.timing_term() != Some(status.term) {
        let (lessor, store) = (leases.lessor.clone(), leases.shared.store.clone());
        let term = status.term;
        let promoted = tokio::task::spawn_blocking(move || lessor.promote(term, &store, Instant::now())).await;
        match promoted {
            Ok(Ok(Some(count))) => info!(term, leases = count, "timing leases as the leader"),
            Ok(Ok(None)) => {} // abandoned; tried again on the next tick
            Ok(Err(error)) => warn!("cannot read the leases to time them: {error}"),
            Err(panic) => warn!("reading the leases panicked: {panic}"),
        }
    }
}

fn propose_expiries(leases: &Arc<Leases>, in_flight: &mut JoinSet<()>) {
    let room = MAX_EXPIRIES_IN_FLIGHT.saturating_sub(in_flight.len()).min(EXPIRIES_PER_TICK);
    if room == 0 {
        return;
    }
    let Some((term, expired)) = leases.lessor.take_expired(Instant::now(), room) else { return };
    for id in expired {
        let leases = leases.clone();
        in_flight.spawn(async move {
            // The outcome is seen through apply; a failed proposal is retried later.
            if let Err(error) = leases.shared.propose(Command::LeaseExpire(LeaseExpireRequest { id, term })).await {
                warn!(lease = %format!("{id:x}"), "expiry not applied yet: {error}");
            }
        });
    }
}

fn propose_checkpoints(leases: &Arc<Leases>, in_flight: &mut JoinSet<()>) {
    let Some((term, checkpoints)) = leases.lessor.take_checkpoints(Instant::now()) else { return };
    if checkpoints.is_empty() {
        return;
    }
    let leases = leases.clone();
    in_flight.spawn(async move {
        let ids: Vec<i64> = checkpoints.iter().map(|checkpoint| checkpoint.id).collect();
        let checkpoint = Command::LeaseCheckpoint(LeaseCheckpointRequest { term, checkpoints });
        if let Err(error) = leases.shared.propose(checkpoint).await {
            warn!("lease checkpoint not applied: {error}");
            leases.lessor.checkpoints_failed(&ids, term);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_ttl_is_etcds() {
        assert_eq!(min_lease_ttl(Duration::from_millis(1000)), 2);
        assert_eq!(min_lease_ttl(Duration::from_millis(100)), 1);
        assert_eq!(min_lease_ttl(Duration::from_millis(5000)), 8);
    }
}
