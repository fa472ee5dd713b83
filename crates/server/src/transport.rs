//! The peer transport: one long-lived gRPC stream from this member to each other member,
//! carrying batches of Raft messages and forwarded proposals.
//!
//! Each direction of a pair has its own stream, dialed by the sender, so either side can
//! reconnect on its own schedule. Queues are bounded: when a peer is slow or gone, Raft
//! messages are dropped (the protocol tolerates loss and retries by itself) rather than
//! buffered without limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use concord_api::peerpb::{self, peer_client::PeerClient};
use concord_raft::{Message, NodeId};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::convert::{message_to_wire, refusal_to_wire};
use crate::errors::EtcdError;

/// Most messages waiting for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES: usize = 4096;
/// Most messages or proposals packed into one frame.
const FRAME_MAX_ITEMS: usize = 512;
/// Frames stop growing past this many bytes (a single large message still goes alone).
const FRAME_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Largest frame a member accepts.
pub const FRAME_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// HTTP/2 receive window of a peer stream: room for the snapshot chunks the core keeps in
/// flight (4 of 1 MiB) and the frames around them.
pub const PEER_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum Outbound {
    Raft(Message),
    Proposal(Vec<Bytes>),
    /// The receiver's forwarded proposals with these request ids were refused.
    Refused(peerpb::RefusedProposals),
}

impl Outbound {
    fn size_bytes(&self) -> usize {
        match self {
            Outbound::Raft(message) => message.size_bytes() as usize,
            Outbound::Proposal(data) => data.iter().map(|d| d.len() + 8).sum(),
            Outbound::Refused(refused) => 8 * refused.request_ids.len() + 8,
        }
    }
}

/// What a member answers on the peer stream of a member it knows was removed (etcd's
/// text); the removed member stops when it hears it.
pub const MEMBER_REMOVED: &str = "the member has been permanently removed from the cluster";

/// Whether a peer's answer says this member was removed from the cluster.
pub fn is_member_removed(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message() == MEMBER_REMOVED
}

struct PeerLink {
    url: String,
    queue: mpsc::Sender<Outbound>,
}

/// The sending side of the peer transport, owned by the Raft task. The set of peers
/// follows the membership (`set_peers`).
pub struct Transport {
    self_id: NodeId,
    cluster_id: u64,
    /// The runtime the sender tasks run on: the server's, never the Raft thread's own
    /// (where a sender would wait behind every fsync), even for peers added later by the
    /// Raft task.
    runtime: tokio::runtime::Handle,
    peers: BTreeMap<NodeId, PeerLink>,
    /// Set once a peer says this member was removed from the cluster.
    removed: Arc<watch::Sender<bool>>,
}

impl Transport {
    /// Starts one sender task per peer (`peers` maps member id to peer URL), on the
    /// runtime this is called from.
    pub fn start(
        self_id: NodeId,
        cluster_id: u64,
        peers: &BTreeMap<NodeId, String>,
        removed: watch::Sender<bool>,
    ) -> Transport {
        let mut transport = Transport {
            self_id,
            cluster_id,
            runtime: tokio::runtime::Handle::current(),
            peers: BTreeMap::new(),
            removed: Arc::new(removed),
        };
        transport.set_peers(peers);
        transport
    }

    /// Makes the peers exactly `wanted` (this member left out): starts a sender for each
    /// new one, restarts the sender of a peer whose URL changed, and stops the senders of
    /// peers no longer wanted (their queues close, so their tasks end).
    pub fn set_peers(&mut self, wanted: &BTreeMap<NodeId, String>) {
        self.peers.retain(|id, link| wanted.get(id) == Some(&link.url));
        for (&peer, url) in wanted {
            if peer == self.self_id || self.peers.contains_key(&peer) {
                continue;
            }
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES);
            let (self_id, cluster_id, removed) = (self.self_id, self.cluster_id, self.removed.clone());
            self.runtime.spawn(run_peer(self_id, cluster_id, peer, url.clone(), receiver, removed));
            self.peers.insert(peer, PeerLink { url: url.clone(), queue: sender });
        }
    }

    /// The peers messages can go to, with their URLs.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers.iter().map(|(id, link)| (*id, link.url.clone())).collect()
    }

    /// Queues a Raft message; drops it if the peer's queue is full or unknown.
    pub fn send(&self, message: Message) {
        if let Some(link) = self.peers.get(&message.to) {
            if link.queue.try_send(Outbound::Raft(message)).is_err() {
                debug!("peer queue full; dropping a raft message");
            }
        }
    }

    /// Tells member `to` that the proposals it forwarded with these request ids are in no
    /// log, and why. Dropped if its queue is full (its clients then time out, as before).
    pub fn refuse(&self, to: NodeId, request_ids: Vec<u64>, error: &EtcdError) {
        let refused = peerpb::RefusedProposals { request_ids, reason: refusal_to_wire(error) };
        if let Some(link) = self.peers.get(&to) {
            let _ = link.queue.try_send(Outbound::Refused(refused));
        }
    }

    /// Forwards client proposals to the leader. Returns false if they could not be queued.
    pub fn forward(&self, to: NodeId, data: Vec<Bytes>) -> bool {
        match self.peers.get(&to) {
            Some(link) => link.queue.try_send(Outbound::Proposal(data)).is_ok(),
            None => false,
        }
    }
}

async fn run_peer(
    self_id: NodeId,
    cluster_id: u64,
    peer: NodeId,
    url: String,
    mut queue: mpsc::Receiver<Outbound>,
    removed: Arc<watch::Sender<bool>>,
) {
    let mut backoff = RECONNECT_MIN;
    let mut was_connected = false;
    loop {
        let channel = match tonic::transport::Endpoint::from_shared(url.clone()) {
            Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true).connect().await,
            Err(error) => {
                warn!(peer = %format!("{peer:x}"), %url, "invalid peer URL: {error}");
                return;
            }
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(_) => {
                // Drop what queued up meanwhile: stale Raft messages are worthless. A closed
                // queue means this peer is no longer wanted.
                loop {
                    match queue.try_recv() {
                        Ok(_) => continue,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                if was_connected {
                    info!(peer = %format!("{peer:x}"), "lost connection to peer");
                    was_connected = false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = RECONNECT_MIN;
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(FRAME_LIMIT_BYTES)
            .max_decoding_message_size(FRAME_LIMIT_BYTES);
        let (frames, frames_out) = mpsc::channel::<peerpb::PeerFrame>(64);
        let mut call = tokio::spawn(async move { client.stream(ReceiverStream::new(frames_out)).await });
        if !was_connected {
            info!(peer = %format!("{peer:x}"), "connected to peer");
            was_connected = true;
        }
        // Pump frames until the stream breaks or the node shuts down.
        loop {
            let Some(first) = queue.recv().await else {
                call.abort();
                return;
            };
            let mut frame = peerpb::PeerFrame { from: self_id, cluster_id, ..Default::default() };
            let mut bytes = 0;
            let mut items = 0;
            let mut next = Some(first);
            while let Some(item) = next.take() {
                bytes += item.size_bytes();
                items += 1;
                match item {
                    Outbound::Raft(message) => frame.messages.push(message_to_wire(&message)),
                    Outbound::Proposal(data) => frame
                        .proposals
                        .push(peerpb::ForwardedProposal { data: data.into_iter().map(|d| d.to_vec()).collect() }),
                    Outbound::Refused(refused) => frame.refused.push(refused),
                }
                if items < FRAME_MAX_ITEMS && bytes < FRAME_MAX_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            if frames.send(frame).await.is_err() || call.is_finished() {
                break;
            }
        }
        if call.is_finished() {
            if let Ok(Err(status)) = (&mut call).await {
                if is_member_removed(&status) {
                    warn!(peer = %format!("{peer:x}"), "peer says this member was removed from the cluster");
                    removed.send_replace(true);
                    return;
                }
            }
        }
        call.abort();
        tokio::time::sleep(RECONNECT_MIN).await;
    }
}
