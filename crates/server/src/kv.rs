//! The etcd KV service: reads (Ranges, and Txns that only read) served from the local
//! state machine (after a ReadIndex barrier unless `serializable`), writes replicated
//! through Raft.

use std::sync::Arc;

use concord_api::etcdserverpb::{self as pb, kv_server::Kv};
use concord_mvcc::{self as mvcc, Command, Response};
use tonic::{Request, Status};

use crate::errors::EtcdError;
use crate::kv_convert::*;
use crate::shared::Shared;

pub struct KvService {
    pub shared: Arc<Shared>,
}

fn unexpected(response: Response) -> Status {
    EtcdError::Internal(format!("unexpected response {response:?}")).into()
}

impl KvService {
    /// A Txn whose ops are all Ranges is served as a Range is (etcd does the same): after a
    /// ReadIndex barrier unless every Range is serializable, from one snapshot of this
    /// member's state machine. Through the log it would cost every member the apply (and
    /// the memory of its result) and answer the same.
    async fn read_only_txn(&self, request: mvcc::TxnRequest) -> Result<tonic::Response<pb::TxnResponse>, Status> {
        if !mvcc::is_serializable_txn(&request) {
            self.shared.read_barrier().await?;
        }
        let store = self.shared.store.clone();
        let response = tokio::task::spawn_blocking(move || store.txn_read(&request))
            .await
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .map_err(EtcdError::from)?;
        let header = self.shared.header(response.revision);
        Ok(tonic::Response::new(txn_to_pb(response, header)))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<tonic::Response<pb::RangeResponse>, Status> {
        let request = range_from_pb(request.into_inner())?;
        mvcc::validate_range(&request).map_err(EtcdError::from)?;
        if !request.serializable {
            self.shared.read_barrier().await?;
        }
        let store = self.shared.store.clone();
        let response = tokio::task::spawn_blocking(move || store.range(&request))
            .await
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .map_err(EtcdError::from)?;
        let header = self.shared.header(response.revision);
        Ok(tonic::Response::new(range_to_pb(response, header)))
    }

    type RangeStreamStream = tokio_stream::Empty<Result<pb::RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("concord: RangeStream is not supported (etcd 3.4 has no such method)"))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<tonic::Response<pb::PutResponse>, Status> {
        let request = put_from_pb(request.into_inner());
        mvcc::validate_put(&request).map_err(EtcdError::from)?;
        match self.shared.propose(Command::Put(request)).await? {
            Response::Put(response) => {
                let header = self.shared.header(response.revision);
                Ok(tonic::Response::new(put_to_pb(response, header)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<pb::DeleteRangeResponse>, Status> {
        let request = delete_from_pb(request.into_inner());
        mvcc::validate_delete_range(&request).map_err(EtcdError::from)?;
        match self.shared.propose(Command::DeleteRange(request)).await? {
            Response::DeleteRange(response) => {
                let header = self.shared.header(response.revision);
                Ok(tonic::Response::new(delete_to_pb(response, header)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<tonic::Response<pb::TxnResponse>, Status> {
        let request = txn_from_pb(request.into_inner())?;
        mvcc::validate_txn(&request, self.shared.max_txn_ops).map_err(EtcdError::from)?;
        if mvcc::is_read_only_txn(&request) {
            return self.read_only_txn(request).await;
        }
        match self.shared.propose(Command::Txn(request)).await? {
            Response::Txn(response) => {
                let header = self.shared.header(response.revision);
                Ok(tonic::Response::new(txn_to_pb(response, header)))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<tonic::Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let command =
            Command::Compact(mvcc::CompactionRequest { revision: request.revision, physical: request.physical });
        match self.shared.propose(command).await? {
            Response::Compact(response) => {
                Ok(tonic::Response::new(pb::CompactionResponse { header: Some(self.shared.header(response.revision)) }))
            }
            other => Err(unexpected(other)),
        }
    }
}
