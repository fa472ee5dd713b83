//! The Election service (`v3electionpb.Election`): etcd's `concurrency.Election`, served
//! in the member.
//!
//! A campaign is a participant `<name>/<lease hex>` whose value is the proposal; the
//! oldest participant leads. `Leader` reads the oldest; `Observe` streams it and every
//! change of its value, then the next leader once it is deleted; `Proclaim` and `Resign`
//! act only while the caller's key still has the create revision it was elected with.

use std::time::Duration;

use concord_api::mvccpb;
use concord_api::v3electionpb::{self as epb, election_server::Election};
use concord_mvcc::{EventKind, KeyValue, MvccError, RequestOp, TxnRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::{
    is_absent, is_participant, participant_key, participants_prefix, put, range_kvs, single, Coordination,
    CoordinationError, Participant,
};
use crate::errors::EtcdError;
use crate::keys::Keys;
use crate::kv_convert::kv_to_pb;

/// Leader changes queued for one Observe stream; a slow client makes its task wait.
pub const OBSERVE_QUEUE: usize = 16;
/// How long the error that ends an Observe stream may wait for room in its queue.
const FINAL_ERROR_WAIT: Duration = Duration::from_secs(5);

pub struct ElectionService {
    pub coordination: Coordination,
}

type Reply<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(&self, request: Request<epb::CampaignRequest>) -> Reply<epb::CampaignResponse> {
        Ok(tonic::Response::new(self.campaign_for(request.into_inner()).await?))
    }

    async fn proclaim(&self, request: Request<epb::ProclaimRequest>) -> Reply<epb::ProclaimResponse> {
        let request = request.into_inner();
        let leader = request.leader.ok_or(CoordinationError::MissingLeaderKey)?;
        let lease = self.coordination.session_lease(leader.lease).await?;
        let revision = self.proclaim_as(&participant_of(&leader), lease, &request.value).await?;
        Ok(tonic::Response::new(epb::ProclaimResponse { header: Some(self.coordination.header(revision)) }))
    }

    async fn leader(&self, request: Request<epb::LeaderRequest>) -> Reply<epb::LeaderResponse> {
        let prefix = participants_prefix(&request.into_inner().name);
        match self.coordination.first_created(&prefix).await? {
            (Some(kv), revision) => Ok(tonic::Response::new(self.leader_response(revision, kv))),
            (None, _) => Err(CoordinationError::NoLeader.into()),
        }
    }

    type ObserveStream = ReceiverStream<Result<epb::LeaderResponse, Status>>;

    async fn observe(&self, request: Request<epb::LeaderRequest>) -> Reply<Self::ObserveStream> {
        let place = self.coordination.admit_observer()?;
        let prefix = participants_prefix(&request.into_inner().name);
        let (out, responses) = mpsc::channel(OBSERVE_QUEUE);
        let observer = Observer { coordination: self.coordination.clone(), prefix, out };
        tokio::spawn(async move {
            observer.run().await;
            drop(place);
        });
        Ok(tonic::Response::new(ReceiverStream::new(responses)))
    }

    async fn resign(&self, request: Request<epb::ResignRequest>) -> Reply<epb::ResignResponse> {
        let leader = request.into_inner().leader.ok_or(CoordinationError::MissingLeaderKey)?;
        let revision = self.coordination.withdraw(&participant_of(&leader)).await?;
        Ok(tonic::Response::new(epb::ResignResponse { header: Some(self.coordination.header(revision)) }))
    }
}

fn participant_of(leader: &epb::LeaderKey) -> Participant {
    Participant { key: leader.key.clone(), create_revision: leader.rev }
}

impl ElectionService {
    async fn campaign_for(&self, request: epb::CampaignRequest) -> Result<epb::CampaignResponse, CoordinationError> {
        let _place = self.coordination.admit_waiter()?;
        let lease = self.coordination.session_lease(request.lease).await?;
        let prefix = participants_prefix(&request.name);
        let key = participant_key(&prefix, lease);
        let (me, existing_value, revision) = self.enter(&key, &request.value, lease).await?;
        let guard = self.coordination.withdraw_unless_done(me.clone());
        // The same lease campaigning again with another value: the value changes, the
        // place in line does not.
        let entered = match existing_value {
            Some(value) if value != request.value => self.proclaim_as(&me, lease, &request.value).await,
            _ => Ok(revision),
        };
        let waited = match entered {
            Ok(_) => {
                self.coordination.wait_for_predecessors(&prefix, &me, CoordinationError::ElectionSessionExpired).await
            }
            Err(error) => Err(error),
        };
        guard.settle(waited).await?;
        let leader = epb::LeaderKey { name: request.name, key, rev: me.create_revision, lease };
        Ok(epb::CampaignResponse { header: Some(self.coordination.header(revision)), leader: Some(leader) })
    }

    /// One Txn: put `key` = `value` with `lease` unless it exists, else read it. Returns
    /// the caller as a participant, the existing value (if the key existed) and the
    /// Txn's revision.
    async fn enter(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<(Participant, Option<Vec<u8>>, i64), CoordinationError> {
        let txn = TxnRequest {
            compare: vec![is_absent(key)],
            success: vec![put(key, value, lease)],
            failure: vec![RequestOp::Range(single(key))],
        };
        let response = self.coordination.txn(txn).await?;
        if response.succeeded {
            return Ok((
                Participant { key: key.to_vec(), create_revision: response.revision },
                None,
                response.revision,
            ));
        }
        let existing = range_kvs(&response, 0)
            .first()
            .ok_or_else(|| EtcdError::Internal("the campaign key vanished within its own Txn".to_string()))?;
        let me = Participant { key: key.to_vec(), create_revision: existing.create_revision };
        Ok((me, Some(existing.value.clone()), response.revision))
    }

    /// Puts `value` under the leader's key, only while the key is the one elected.
    async fn proclaim_as(&self, leader: &Participant, lease: i64, value: &[u8]) -> Result<i64, CoordinationError> {
        let txn = TxnRequest {
            compare: vec![is_participant(leader)],
            success: vec![put(&leader.key, value, lease)],
            failure: vec![],
        };
        let response = self.coordination.txn(txn).await?;
        if !response.succeeded {
            return Err(CoordinationError::NotLeader);
        }
        Ok(response.revision)
    }

    fn leader_response(&self, revision: i64, kv: KeyValue) -> epb::LeaderResponse {
        epb::LeaderResponse { header: Some(self.coordination.header(revision)), kv: Some(kv_to_pb(kv)) }
    }
}

/// One Observe stream: etcd's `Election.observe` loop.
struct Observer {
    coordination: Coordination,
    prefix: Vec<u8>,
    out: mpsc::Sender<Result<epb::LeaderResponse, Status>>,
}

/// Why an Observe stream ends.
enum End {
    ClientGone,
    Error(CoordinationError),
}

impl From<CoordinationError> for End {
    fn from(error: CoordinationError) -> End {
        End::Error(error)
    }
}

impl From<EtcdError> for End {
    fn from(error: EtcdError) -> End {
        End::Error(error.into())
    }
}

impl Observer {
    async fn run(self) {
        let mut stop = self.coordination.stop.clone();
        let end = tokio::select! {
            _ = self.out.closed() => End::ClientGone,
            _ = stop.wait_for(|stopped| *stopped) => End::Error(EtcdError::Stopped.into()),
            end = self.observe() => end,
        };
        if let End::Error(error) = end {
            // Behind a full queue the error waits its turn, for a bounded time: a client
            // that reads nothing must not keep the task.
            let _ = tokio::time::timeout(FINAL_ERROR_WAIT, self.out.send(Err(error.into()))).await;
        }
    }

    /// Sends the leader, each new value of its key, and once the key is deleted starts
    /// over with whoever leads then. Runs until the client goes or an error.
    async fn observe(&self) -> End {
        // What was sent last, so that starting over after a compaction does not repeat it.
        let mut last_sent = None;
        loop {
            let (revision, leader) = match self.current_leader().await {
                Ok(found) => found,
                Err(End::Error(CoordinationError::Etcd(EtcdError::Mvcc(MvccError::Compacted)))) => continue,
                Err(end) => return end,
            };
            if last_sent != Some((leader.key.clone(), leader.mod_revision)) {
                if let Err(end) = self.send(revision, leader.clone(), &mut last_sent).await {
                    return end;
                }
            }
            match self.follow_leader(&leader.key, revision + 1, &mut last_sent).await {
                // Deleted: the next leader, if any.
                Ok(()) => continue,
                // The leader's history was compacted before it was read: read again
                // (etcd would end the stream).
                Err(End::Error(CoordinationError::Etcd(EtcdError::Mvcc(MvccError::Compacted)))) => continue,
                Err(end) => return end,
            }
        }
    }

    /// The leader now, or, if there is none, the first participant to appear.
    async fn current_leader(&self) -> Result<(i64, KeyValue), End> {
        let (leader, revision) = self.coordination.first_created(&self.prefix).await?;
        if let Some(kv) = leader {
            return Ok((revision, kv));
        }
        let mut follower = self.coordination.events.follow(Keys::prefix(&self.prefix), revision + 1);
        loop {
            let events = follower.next_events().await?;
            if let Some(put) = events.into_iter().find(|event| event.kind == EventKind::Put) {
                return Ok((put.kv.mod_revision, put.kv));
            }
        }
    }

    /// Sends every new value of `key` from `from` on; returns once it is deleted.
    async fn follow_leader(&self, key: &[u8], from: i64, last_sent: &mut Option<(Vec<u8>, i64)>) -> Result<(), End> {
        let mut follower = self.coordination.events.follow(Keys::Single(key.to_vec()), from);
        loop {
            for event in follower.next_events().await? {
                if event.kind == EventKind::Delete {
                    return Ok(());
                }
                self.send(event.kv.mod_revision, event.kv, last_sent).await?;
            }
        }
    }

    async fn send(&self, revision: i64, kv: KeyValue, last_sent: &mut Option<(Vec<u8>, i64)>) -> Result<(), End> {
        *last_sent = Some((kv.key.clone(), kv.mod_revision));
        let response = epb::LeaderResponse {
            header: Some(self.coordination.header(revision)),
            kv: Some::<mvccpb::KeyValue>(kv_to_pb(kv)),
        };
        self.out.send(Ok(response)).await.map_err(|_| End::ClientGone)
    }
}
