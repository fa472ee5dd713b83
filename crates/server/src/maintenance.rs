//! The etcd Maintenance service: status, hashes, alarms, defragmentation, snapshots and
//! leadership moves.

use std::sync::Arc;
use std::time::Duration;

use concord_api::etcdserverpb::{self as pb, maintenance_server::Maintenance};
use tonic::{Request, Status};

use crate::errors::EtcdError;
use crate::node;
use crate::shared::Shared;

/// The etcd API version concord implements; clients use it to decide what they may ask.
pub const API_VERSION: &str = "3.4.0";

/// How long a Defragment waits for a moment with no read open (see
/// `concord_mvcc::Store::defragment`) before it answers Unavailable: etcdctl's default
/// command timeout.
const DEFRAGMENT_PATIENCE: Duration = Duration::from_secs(5);

pub struct MaintenanceService {
    pub shared: Arc<Shared>,
    /// Where snapshot copies are staged before streaming (the data directory).
    pub snapshot_dir: std::path::PathBuf,
}

fn internal(error: impl std::fmt::Display) -> Status {
    EtcdError::Internal(error.to_string()).into()
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _request: Request<pb::AlarmRequest>) -> Result<tonic::Response<pb::AlarmResponse>, Status> {
        // concord raises no alarms (no space quota, no corruption check yet).
        let header = self.shared.current_header();
        Ok(tonic::Response::new(pb::AlarmResponse { header: Some(header), alarms: Vec::new() }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        // Measuring the size in use walks redb's tables (at most once a second, never
        // waiting for the writer): off the async threads.
        let store = self.shared.store.clone();
        let (db_size, db_size_in_use) = tokio::task::spawn_blocking(move || {
            Ok::<_, concord_mvcc::MvccError>((store.db_size_bytes()?, store.db_size_in_use_bytes()?))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let store = &self.shared.store;
        let status = *self.shared.status.borrow();
        let applied = *self.shared.applied.borrow();
        Ok(tonic::Response::new(pb::StatusResponse {
            header: Some(self.shared.header(store.current_revision())),
            version: API_VERSION.to_string(),
            db_size: db_size as i64,
            leader: status.leader,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: db_size_in_use as i64,
            is_learner: self.shared.directory.member(self.shared.member_id).is_some_and(|m| m.is_learner),
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<tonic::Response<pb::DefragmentResponse>, Status> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.defragment(DEFRAGMENT_PATIENCE))
            .await
            .map_err(internal)?
            .map_err(EtcdError::from)?;
        let header = self.shared.current_header();
        Ok(tonic::Response::new(pb::DefragmentResponse { header: Some(header) }))
    }

    async fn hash(&self, _request: Request<pb::HashRequest>) -> Result<tonic::Response<pb::HashResponse>, Status> {
        let store = self.shared.store.clone();
        let hash =
            tokio::task::spawn_blocking(move || store.hash_kv(0)).await.map_err(internal)?.map_err(EtcdError::from)?;
        let header = self.shared.current_header();
        Ok(tonic::Response::new(pb::HashResponse { header: Some(header), hash: hash.hash }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<tonic::Response<pb::HashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let store = self.shared.store.clone();
        let hash = tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(internal)?
            .map_err(EtcdError::from)?;
        let header = self.shared.current_header();
        Ok(tonic::Response::new(pb::HashKvResponse {
            header: Some(header),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    type SnapshotStream = tokio_stream::wrappers::ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    /// Streams a consistent copy of the state machine (concord-mvcc's checksummed snapshot
    /// format, taken in one read transaction). It is written to a file in the data
    /// directory first, so memory stays bounded whatever the store's size.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        let store = self.shared.store.clone();
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = self.snapshot_dir.join(format!("snapshot-{nanos}.tmp"));
        let written = path.clone();
        let size = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let file = std::fs::File::create(&written).map_err(|e| e.to_string())?;
            let mut out = std::io::BufWriter::new(file);
            store.write_snapshot(&mut out).map_err(|e| e.to_string())?;
            let file = out.into_inner().map_err(|e| e.to_string())?;
            file.metadata().map(|m| m.len()).map_err(|e| e.to_string())
        })
        .await
        .map_err(internal)?;
        let size = match size {
            Ok(size) => size,
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                return Err(internal(error));
            }
        };
        let header = self.shared.current_header();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let result = stream_snapshot_file(&path, size, header, &sender);
            if let Err(error) = result {
                let _ = sender.blocking_send(Err(internal(error)));
            }
            let _ = std::fs::remove_file(&path);
        });
        Ok(tonic::Response::new(tokio_stream::wrappers::ReceiverStream::new(receiver)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<tonic::Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        // As etcd: only the leader moves leadership, and only to a voting member.
        if !self.shared.status.borrow().is_leader {
            return Err(EtcdError::NotLeader.into());
        }
        if self.shared.directory.member(target).is_none_or(|m| m.is_learner) {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shared
            .requests
            .send(node::Request::TransferLeader { to: target, reply })
            .await
            .map_err(|_| EtcdError::Stopped)?;
        answer.await.map_err(|_| EtcdError::Stopped)??;
        // Like etcd, answer once the target leads (or give up after a bound).
        let mut status = self.shared.status.clone();
        let wait = async { status.wait_for(|s| s.leader == target).await.map(|_| ()) };
        let result = tokio::time::timeout(self.shared.leader_wait + Duration::from_secs(1), wait).await;
        match result {
            Ok(Ok(())) => {
                let header = self.shared.current_header();
                Ok(tonic::Response::new(pb::MoveLeaderResponse { header: Some(header) }))
            }
            _ => Err(EtcdError::LeaderTransferTimeout.into()),
        }
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<tonic::Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("concord: downgrade is not supported"))
    }
}

/// Sends the staged snapshot in chunks the way etcd frames its own: the bytes, zero
/// padding to a multiple of 512, then the SHA-256 of all that (etcdctl checks the shape
/// before it keeps the file).
fn stream_snapshot_file(
    path: &std::path::Path,
    size: u64,
    header: pb::ResponseHeader,
    sender: &tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> std::io::Result<()> {
    use sha2::Digest;
    use std::io::Read;
    const CHUNK_BYTES: u64 = 64 * 1024;
    const PAGE_BYTES: u64 = 512;
    let padded = size.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let total = padded + 32;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut sent = 0u64;
    let mut first = true;
    while sent < total {
        let mut blob = Vec::with_capacity(CHUNK_BYTES as usize);
        while (blob.len() as u64) < CHUNK_BYTES && sent + (blob.len() as u64) < padded {
            let position = sent + blob.len() as u64;
            let room = (CHUNK_BYTES - blob.len() as u64).min(padded - position);
            if position < size {
                let take = room.min(size - position) as usize;
                let start = blob.len();
                blob.resize(start + take, 0);
                file.read_exact(&mut blob[start..])?;
            } else {
                blob.resize(blob.len() + room as usize, 0);
            }
        }
        hasher.update(&blob);
        if sent + blob.len() as u64 == padded {
            blob.extend_from_slice(&hasher.clone().finalize());
        }
        sent += blob.len() as u64;
        let response = pb::SnapshotResponse {
            header: if first { Some(header) } else { None },
            remaining_bytes: total - sent,
            blob,
            version: API_VERSION.to_string(),
        };
        first = false;
        if sender.blocking_send(Ok(response)).is_err() {
            return Ok(()); // the client went away
        }
    }
    Ok(())
}
