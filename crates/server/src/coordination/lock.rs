//! The Lock service (`v3lockpb.Lock`): etcd's `concurrency.Mutex`, served in the member.
//!
//! Lock puts `<name>/<lease hex>` (unless that key exists: the same lease locking again
//! gets its key back), and in the same Txn reads the oldest participant; if that is not
//! the caller, it waits for every older participant to go. The key it answers with is
//! the lock: deleting it (Unlock, or its lease ending) releases it, and its create
//! revision is the fencing token a holder compares in its writes.

use concord_api::v3lockpb::{self as lpb, lock_server::Lock};
use concord_mvcc::{validate_delete_range, Command, DeleteRangeRequest, RequestOp, Response, TxnRequest};
use tonic::{Request, Status};

use super::{
    is_absent, oldest_under, participant_key, participants_prefix, put, range_kvs, single, Coordination,
    CoordinationError, Participant,
};
use crate::errors::EtcdError;

pub struct LockService {
    pub coordination: Coordination,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<lpb::LockRequest>) -> Result<tonic::Response<lpb::LockResponse>, Status> {
        let request = request.into_inner();
        Ok(tonic::Response::new(self.acquire(&request.name, request.lease).await?))
    }

    async fn unlock(
        &self,
        request: Request<lpb::UnlockRequest>,
    ) -> Result<tonic::Response<lpb::UnlockResponse>, Status> {
        Ok(tonic::Response::new(self.release(request.into_inner().key).await?))
    }
}

impl LockService {
    async fn acquire(&self, name: &[u8], lease: i64) -> Result<lpb::LockResponse, CoordinationError> {
        let lease = self.coordination.session_lease(lease).await?;
        let prefix = participants_prefix(name);
        let key = participant_key(&prefix, lease);
        let (me, holder, revision) = self.join(&prefix, &key, lease).await?;
        if holder == me.create_revision {
            return Ok(lpb::LockResponse { header: Some(self.coordination.header(revision)), key });
        }
        // The key is in line already: a refusal must take it out too.
        let guard = self.coordination.withdraw_unless_done(me.clone());
        let waited = match self.coordination.admit_waiter() {
            Ok(_place) => {
                self.coordination.wait_for_predecessors(&prefix, &me, CoordinationError::LockSessionExpired).await
            }
            Err(refused) => Err(refused),
        };
        let revision = guard.settle(waited).await?;
        Ok(lpb::LockResponse { header: Some(self.coordination.header(revision)), key })
    }

    /// One Txn: create `key` with `lease` unless it exists, and read the oldest
    /// participant. Returns the caller as a participant, the holder's create revision,
    /// and the Txn's revision.
    async fn join(&self, prefix: &[u8], key: &[u8], lease: i64) -> Result<(Participant, i64, i64), CoordinationError> {
        let txn = TxnRequest {
            compare: vec![is_absent(key)],
            success: vec![put(key, b"", lease), RequestOp::Range(oldest_under(prefix))],
            failure: vec![RequestOp::Range(single(key)), RequestOp::Range(oldest_under(prefix))],
        };
        let response = self.coordination.txn(txn).await?;
        let create_revision = if response.succeeded {
            response.revision
        } else {
            range_kvs(&response, 0)
                .first()
                .map(|kv| kv.create_revision)
                .ok_or_else(|| EtcdError::Internal("the lock key vanished within its own Txn".to_string()))?
        };
        // The caller's own key is under the prefix: no holder would be a broken read, and
        // must not read as a free lock.
        let holder = range_kvs(&response, 1)
            .first()
            .map(|kv| kv.create_revision)
            .ok_or_else(|| EtcdError::Internal("the lock's participants read as none within its own Txn".into()))?;
        Ok((Participant { key: key.to_vec(), create_revision }, holder, response.revision))
    }

    /// etcd's Unlock: deletes the key, whatever it is.
    async fn release(&self, key: Vec<u8>) -> Result<lpb::UnlockResponse, CoordinationError> {
        let request = DeleteRangeRequest { key, ..Default::default() };
        validate_delete_range(&request).map_err(EtcdError::from)?;
        match self.coordination.shared.propose(Command::DeleteRange(request)).await? {
            Response::DeleteRange(deleted) => {
                Ok(lpb::UnlockResponse { header: Some(self.coordination.header(deleted.revision)) })
            }
            other => Err(EtcdError::Internal(format!("unexpected response {other:?}")).into()),
        }
    }
}
