//! The receiving end of the peer transport: frames from other members become inputs of
//! the Raft task. Also answers a joining member's question for the membership, and runs
//! membership changes, lease keep-alives and TimeToLive that followers forward to the leader.

use std::sync::Arc;

use bytes::Bytes;
use concord_api::etcdserverpb as etcdpb;
use concord_api::peerpb::{
    peer_server::Peer, MembersRequest, MembersResponse, MembershipChangeRequest, MembershipChangeResponse, PeerFrame,
    StreamAck,
};
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};
use tracing::warn;

use crate::cluster::{change_from_wire, member_to_wire, Reconfigurer};
use crate::convert::{message_from_wire, refusal_from_wire};
use crate::lease::Leases;
use crate::members::MemberDirectory;
use crate::node::Inbound;
use crate::transport::MEMBER_REMOVED;

pub struct PeerService {
    pub cluster_id: u64,
    pub member_id: u64,
    pub inbound: mpsc::Sender<Inbound>,
    pub directory: MemberDirectory,
    pub reconfigurer: Arc<Reconfigurer>,
    pub leases: Arc<Leases>,
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<PeerFrame>>) -> Result<tonic::Response<StreamAck>, Status> {
        let mut frames = request.into_inner();
        while let Some(frame) = frames.message().await? {
            if frame.cluster_id != self.cluster_id {
                warn!(from = %format!("{:x}", frame.from), "refusing a peer of another cluster");
                return Err(Status::failed_precondition("concord: cluster ID mismatch"));
            }
            if self.directory.is_removed(frame.from) {
                // Tells the removed member to stop (it may not have seen its removal:
                // the leader stops replicating to a member once it removes it).
                warn!(from = %format!("{:x}", frame.from), "refusing a member removed from the cluster");
                return Err(Status::failed_precondition(MEMBER_REMOVED));
            }
            for message in frame.messages {
                match message_from_wire(message) {
                    Ok(message) if message.to == self.member_id => {
                        // Waiting here when the Raft task is busy pushes back on the peer.
                        if self.inbound.send(Inbound::Raft(message)).await.is_err() {
                            return Err(Status::unavailable("concord: member is stopping"));
                        }
                    }
                    Ok(_) => warn!("dropping a peer message addressed to another member"),
                    Err(error) => warn!("dropping a malformed peer message: {error}"),
                }
            }
            for proposal in frame.proposals {
                let data: Vec<Bytes> = proposal.data.into_iter().map(Bytes::from).collect();
                if self.inbound.send(Inbound::Proposals(data)).await.is_err() {
                    return Err(Status::unavailable("concord: member is stopping"));
                }
            }
            for refused in frame.refused {
                let error = refusal_from_wire(refused.reason);
                if self.inbound.send(Inbound::Refused { request_ids: refused.request_ids, error }).await.is_err() {
                    return Err(Status::unavailable("concord: member is stopping"));
                }
            }
        }
        Ok(tonic::Response::new(StreamAck {}))
    }

    async fn members(&self, _request: Request<MembersRequest>) -> Result<tonic::Response<MembersResponse>, Status> {
        let members = self.directory.members().iter().map(member_to_wire).collect();
        Ok(tonic::Response::new(MembersResponse { cluster_id: self.cluster_id, members }))
    }

    async fn change_membership(
        &self,
        request: Request<MembershipChangeRequest>,
    ) -> Result<tonic::Response<MembershipChangeResponse>, Status> {
        let change = request.into_inner().change.ok_or_else(|| Status::invalid_argument("concord: no change"))?;
        let change = change_from_wire(change)?;
        let deadline = tokio::time::Instant::now() + self.reconfigurer.shared.request_timeout;
        // Never forwarded again: if this member no longer leads, the follower asks anew.
        let outcome = self.reconfigurer.change_here(&change, deadline).await.map_err(Status::from)?;
        Ok(tonic::Response::new(MembershipChangeResponse {
            member: outcome.added.as_ref().map(member_to_wire),
            members: outcome.members.iter().map(member_to_wire).collect(),
        }))
    }

    async fn lease_renew(
        &self,
        request: Request<etcdpb::LeaseKeepAliveRequest>,
    ) -> Result<tonic::Response<etcdpb::LeaseKeepAliveResponse>, Status> {
        let id = request.into_inner().id;
        let deadline = std::time::Instant::now() + self.leases.shared.request_timeout;
        // Never forwarded again: if this member no longer leads, the follower asks anew.
        let ttl = self.leases.renew_here(id, deadline).await?;
        Ok(tonic::Response::new(self.leases.keep_alive_response(id, ttl)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<etcdpb::LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<etcdpb::LeaseTimeToLiveResponse>, Status> {
        let deadline = std::time::Instant::now() + self.leases.shared.request_timeout;
        Ok(tonic::Response::new(self.leases.time_to_live_here(request.into_inner(), deadline).await?))
    }
}
