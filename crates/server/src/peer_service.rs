//! The receiving end of the peer transport: frames from other members become inputs of
//! the Raft task.

use bytes::Bytes;
use concord_api::peerpb::{peer_server::Peer, PeerFrame, StreamAck};
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};
use tracing::warn;

use crate::convert::message_from_wire;
use crate::node::Inbound;

pub struct PeerService {
    pub cluster_id: u64,
    pub member_id: u64,
    pub inbound: mpsc::Sender<Inbound>,
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
        }
        Ok(tonic::Response::new(StreamAck {}))
    }
}
