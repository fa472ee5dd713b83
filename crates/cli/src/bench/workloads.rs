//! The five workloads, each a [`Worker`] built once per client before the run starts.
//!
//! Everything a request needs that does not change from one request to the next (the
//! value bytes, the range request, the lease ids, the watch streams) is built here, up
//! front, so the measured loop only picks a key, clones what tonic must own, and sends.
//! Workloads that need state on the server first (watch streams, leases) create it during
//! set-up and fail the whole run if that fails: a benchmark against watches that were
//! never created would measure nothing.

use std::time::Duration;

use concord_api::etcdserverpb::lease_client::LeaseClient;
use concord_api::etcdserverpb::request_op::Request;
use concord_api::etcdserverpb::watch_client::WatchClient;
use concord_api::etcdserverpb::watch_request::RequestUnion;
use concord_api::etcdserverpb::{
    kv_client::KvClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use super::conn::{status_message, MAX_MESSAGE_BYTES};
use super::error::BenchError;
use super::keys::{KeyGen, Rng};
use super::runner::Worker;

/// How long set-up steps (creating a watch, granting a lease) may take each.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// TTL of the leases `lease-keepalive` grants (revoked at the end of the run).
pub const LEASE_TTL_SECONDS: i64 = 300;

pub fn kv_client(channel: &Channel) -> KvClient<Channel> {
    KvClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The channel client number `client` uses.
fn channel_for(channels: &[Channel], client: usize) -> &Channel {
    &channels[client % channels.len()]
}

// ---------------------------------------------------------------------------------------
// put

/// Writes `--val-size` bytes to a key from the key space.
pub struct PutWorker {
    client: KvClient<Channel>,
    keys: KeyGen,
    rng: Rng,
    value: Vec<u8>,
}

impl PutWorker {
    pub fn new(channels: &[Channel], client: usize, keys: &KeyGen, val_size: usize) -> Self {
        PutWorker {
            client: kv_client(channel_for(channels, client)),
            keys: keys.clone(),
            rng: Rng::seeded(client as u64),
            value: value_of(val_size),
        }
    }
}

impl Worker for PutWorker {
    async fn call(&mut self, ticket: u64) -> Result<(), String> {
        let request =
            PutRequest { key: self.keys.key(ticket, &mut self.rng), value: self.value.clone(), ..Default::default() };
        self.client.put(request).await.map(drop).map_err(status_message)
    }
}

/// The value every write sends: `val_size` bytes of `x` (printable, like etcd's
/// benchmark's random letters but without per-request randomness).
pub fn value_of(val_size: usize) -> Vec<u8> {
    vec![b'x'; val_size]
}

// ---------------------------------------------------------------------------------------
// range

/// Reads one fixed range, linearizable or serializable.
pub struct RangeWorker {
    client: KvClient<Channel>,
    request: RangeRequest,
}

impl RangeWorker {
    pub fn new(channels: &[Channel], client: usize, request: &RangeRequest) -> Self {
        RangeWorker { client: kv_client(channel_for(channels, client)), request: request.clone() }
    }
}

/// The range request `range KEY [END]` sends.
pub fn range_request(key: &str, end: Option<&str>, serializable: bool) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.map(|end| end.as_bytes().to_vec()).unwrap_or_default(),
        serializable,
        ..Default::default()
    }
}

impl Worker for RangeWorker {
    async fn call(&mut self, _ticket: u64) -> Result<(), String> {
        self.client.range(self.request.clone()).await.map(drop).map_err(status_message)
    }
}

// ---------------------------------------------------------------------------------------
// txn-mixed

/// Each request is a Txn holding one Range (a read) or one Put (a write) on a key from
/// the key space, reads with probability `rw_ratio / (rw_ratio + 1)`.
pub struct TxnMixedWorker {
    client: KvClient<Channel>,
    keys: KeyGen,
    rng: Rng,
    value: Vec<u8>,
    read_probability: f64,
    serializable: bool,
}

impl TxnMixedWorker {
    pub fn new(
        channels: &[Channel],
        client: usize,
        keys: &KeyGen,
        val_size: usize,
        rw_ratio: f64,
        serializable: bool,
    ) -> Self {
        TxnMixedWorker {
            client: kv_client(channel_for(channels, client)),
            keys: keys.clone(),
            rng: Rng::seeded(client as u64),
            value: value_of(val_size),
            read_probability: read_probability(rw_ratio),
            serializable,
        }
    }

    fn next_op(&mut self, ticket: u64) -> RequestOp {
        let key = self.keys.key(ticket, &mut self.rng);
        let request = if self.rng.chance(self.read_probability) {
            Request::RequestRange(RangeRequest { key, serializable: self.serializable, ..Default::default() })
        } else {
            Request::RequestPut(PutRequest { key, value: self.value.clone(), ..Default::default() })
        };
        RequestOp { request: Some(request) }
    }
}

/// The share of reads for a read/write ratio (1 = half reads, 3 = three reads per write).
pub fn read_probability(rw_ratio: f64) -> f64 {
    rw_ratio / (rw_ratio + 1.0)
}

impl Worker for TxnMixedWorker {
    async fn call(&mut self, ticket: u64) -> Result<(), String> {
        let request = TxnRequest { success: vec![self.next_op(ticket)], ..Default::default() };
        self.client.txn(request).await.map(drop).map_err(status_message)
    }
}

// ---------------------------------------------------------------------------------------
// watch

/// `watchers` watch streams on one key, each a task that publishes the highest revision
/// it has seen an event for. Dropping this ends the tasks.
pub struct Watchers {
    seen: Vec<watch::Receiver<i64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Watchers {
    /// Opens one stream per watcher (round-robin over the channels) and waits until every
    /// watch is created.
    pub async fn start(channels: &[Channel], key: &[u8], watchers: usize) -> Result<Self, BenchError> {
        let mut seen = Vec::with_capacity(watchers);
        let mut tasks = Vec::with_capacity(watchers);
        for i in 0..watchers {
            let (stream, requests) = open_watch(channel_for(channels, i), key).await?;
            let (publish, receiver) = watch::channel(0i64);
            seen.push(receiver);
            tasks.push(tokio::spawn(follow_watch(stream, requests, publish)));
        }
        Ok(Watchers { seen, tasks })
    }
}

/// A created watch on `key`: its response stream, and the request sender that must stay
/// open for the stream to stay open.
async fn open_watch(
    channel: &Channel,
    key: &[u8],
) -> Result<(Streaming<concord_api::etcdserverpb::WatchResponse>, mpsc::Sender<WatchRequest>), BenchError> {
    let (requests, receiver) = mpsc::channel(1);
    let create = WatchCreateRequest { key: key.to_vec(), ..Default::default() };
    // sent before the call: a server may not answer the call's headers before it reads one
    requests
        .send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })
        .await
        .map_err(|_| BenchError::Setup("watch request channel closed".into()))?;
    let mut client = WatchClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let opened = async {
        let mut stream = client.watch(ReceiverStream::new(receiver)).await.map_err(status_message)?.into_inner();
        match stream.message().await.map_err(status_message)? {
            Some(response) if response.created && !response.canceled => Ok(stream),
            Some(response) => Err(format!("watch not created: {}", response.cancel_reason)),
            None => Err("watch stream ended before the watch was created".into()),
        }
    };
    match tokio::time::timeout(SETUP_TIMEOUT, opened).await {
        Ok(Ok(stream)) => Ok((stream, requests)),
        Ok(Err(message)) => Err(BenchError::Setup(format!("creating a watch: {message}"))),
        Err(_) => Err(BenchError::Setup("creating a watch: no answer within 10 s".into())),
    }
}

/// Publishes the highest mod revision among the events of each response until the stream
/// ends (then the sender drops, and waiting put workers fail with a clear message).
async fn follow_watch(
    mut stream: Streaming<concord_api::etcdserverpb::WatchResponse>,
    _requests: mpsc::Sender<WatchRequest>,
    publish: watch::Sender<i64>,
) {
    while let Ok(Some(response)) = stream.message().await {
        let highest = response.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max();
        if let Some(revision) = highest {
            publish.send_replace(revision);
        }
    }
}

/// Puts the watched key, then waits until every watcher has seen the put's revision: the
/// latency is from sending the put to the slowest watcher's event.
pub struct WatchWorker {
    client: KvClient<Channel>,
    key: Vec<u8>,
    value: Vec<u8>,
    seen: Vec<watch::Receiver<i64>>,
}

impl WatchWorker {
    pub fn new(channels: &[Channel], client: usize, key: &[u8], val_size: usize, watchers: &Watchers) -> Self {
        WatchWorker {
            client: kv_client(channel_for(channels, client)),
            key: key.to_vec(),
            value: value_of(val_size),
            seen: watchers.seen.clone(),
        }
    }
}

impl Worker for WatchWorker {
    async fn call(&mut self, _ticket: u64) -> Result<(), String> {
        let request = PutRequest { key: self.key.clone(), value: self.value.clone(), ..Default::default() };
        let response = self.client.put(request).await.map_err(status_message)?.into_inner();
        let revision = response.header.map(|h| h.revision).ok_or("put response without a header")?;
        for seen in &mut self.seen {
            seen.wait_for(|&r| r >= revision).await.map_err(|_| "a watch stream ended".to_string())?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// lease-keepalive

/// Grants `count` leases of [`LEASE_TTL_SECONDS`].
pub async fn grant_leases(channel: &Channel, count: usize) -> Result<Vec<i64>, BenchError> {
    let mut client = LeaseClient::new(channel.clone());
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let grant = client.lease_grant(LeaseGrantRequest { ttl: LEASE_TTL_SECONDS, id: 0 });
        let response = match tokio::time::timeout(SETUP_TIMEOUT, grant).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(BenchError::Setup(format!("granting a lease: {}", status_message(status)))),
            Err(_) => return Err(BenchError::Setup("granting a lease: no answer within 10 s".into())),
        };
        if !response.error.is_empty() {
            return Err(BenchError::Setup(format!("granting a lease: {}", response.error)));
        }
        ids.push(response.id);
    }
    Ok(ids)
}

/// Revokes the leases (best effort: the run is over, a failure here changes nothing).
pub async fn revoke_leases(channel: &Channel, ids: &[i64]) {
    let mut client = LeaseClient::new(channel.clone());
    for &id in ids {
        let _ = tokio::time::timeout(SETUP_TIMEOUT, client.lease_revoke(LeaseRevokeRequest { id })).await;
    }
}

/// One keep-alive stream per client; request `n` refreshes lease `n % leases` and waits
/// for its answer (a round trip on the stream).
pub struct KeepAliveWorker {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    leases: Vec<i64>,
}

impl KeepAliveWorker {
    /// Opens the client's stream with one keep-alive round trip (not measured).
    pub async fn open(channels: &[Channel], client: usize, leases: &[i64]) -> Result<Self, BenchError> {
        let (requests, receiver) = mpsc::channel(1);
        let first = LeaseKeepAliveRequest { id: leases[client % leases.len()] };
        requests.send(first).await.map_err(|_| BenchError::Setup("keep-alive channel closed".into()))?;
        let mut lease = LeaseClient::new(channel_for(channels, client).clone());
        let opened = async {
            let mut responses =
                lease.lease_keep_alive(ReceiverStream::new(receiver)).await.map_err(status_message)?.into_inner();
            expect_alive(responses.message().await)?;
            Ok::<_, String>(responses)
        };
        match tokio::time::timeout(SETUP_TIMEOUT, opened).await {
            Ok(Ok(responses)) => Ok(KeepAliveWorker { requests, responses, leases: leases.to_vec() }),
            Ok(Err(message)) => Err(BenchError::Setup(format!("opening a keep-alive stream: {message}"))),
            Err(_) => Err(BenchError::Setup("opening a keep-alive stream: no answer within 10 s".into())),
        }
    }
}

/// A keep-alive answer that says the lease is still there.
fn expect_alive(answer: Result<Option<LeaseKeepAliveResponse>, tonic::Status>) -> Result<(), String> {
    match answer.map_err(status_message)? {
        Some(response) if response.ttl > 0 => Ok(()),
        Some(response) => Err(format!("lease {:x} not found (TTL {})", response.id, response.ttl)),
        None => Err("keep-alive stream ended".into()),
    }
}

impl Worker for KeepAliveWorker {
    async fn call(&mut self, ticket: u64) -> Result<(), String> {
        let id = self.leases[(ticket % self.leases.len() as u64) as usize];
        self.requests.send(LeaseKeepAliveRequest { id }).await.map_err(|_| "keep-alive stream ended".to_string())?;
        expect_alive(self.responses.message().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_share_follows_the_ratio() {
        assert_eq!(read_probability(1.0), 0.5);
        assert_eq!(read_probability(3.0), 0.75);
        assert_eq!(read_probability(0.0), 0.0);
    }

    #[test]
    fn range_request_from_the_command_line() {
        let request = range_request("a", Some("b"), true);
        assert_eq!(
            (request.key.as_slice(), request.range_end.as_slice(), request.serializable),
            (&b"a"[..], &b"b"[..], true)
        );
        assert!(range_request("k", None, false).range_end.is_empty());
    }

    #[test]
    fn values_have_the_value_size() {
        assert_eq!(value_of(0).len(), 0);
        assert_eq!(value_of(256).len(), 256);
    }
}
