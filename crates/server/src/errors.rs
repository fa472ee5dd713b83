//! The errors a client can see, with etcd's gRPC status codes and exact message texts.
//!
//! etcd clients match on these strings (etcdctl prints them; client libraries map them
//! back to typed errors), so they are part of the API and must not be reworded.

use concord_mvcc::MvccError;
use tonic::{Code, Status};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// An error of the state machine. Those with etcd's texts keep them (concord-mvcc
    /// owns the texts); storage failures read as ours.
    #[error("{}", mvcc_text(.0))]
    Mvcc(MvccError),
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// Anything else: a storage failure, a bug. The text is ours.
    #[error("concord: {0}")]
    Internal(String),
}

impl EtcdError {
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            Mvcc(error) => mvcc_code(error),
            RequestTooLarge => Code::InvalidArgument,
            MemberNotFound => Code::NotFound,
            MemberBadUrls => Code::InvalidArgument,
            NotLeader
            | BadLeaderTransferee
            | MemberExists
            | PeerUrlExists
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotEnoughStartedMembers => Code::FailedPrecondition,
            TooManyRequests => Code::ResourceExhausted,
            NoLeader | LeaderChanged | Stopped | Timeout | LeaderTransferTimeout | Unhealthy => Code::Unavailable,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<MvccError> for EtcdError {
    fn from(error: MvccError) -> EtcdError {
        EtcdError::Mvcc(error)
    }
}

/// The gRPC code etcd gives each state-machine error.
fn mvcc_code(error: &MvccError) -> Code {
    use MvccError as M;
    match error {
        M::EmptyKey | M::KeyNotFound | M::ValueProvided | M::LeaseProvided | M::TooManyOps | M::DuplicateKey => {
            Code::InvalidArgument
        }
        M::Compacted | M::FutureRevision | M::LeaseTtlTooLarge => Code::OutOfRange,
        M::LeaseNotFound => Code::NotFound,
        M::LeaseExists => Code::FailedPrecondition,
        M::Busy(_) => Code::Unavailable,
        _ => Code::Internal,
    }
}

fn mvcc_text(error: &MvccError) -> String {
    match mvcc_code(error) {
        Code::Internal | Code::Unavailable => format!("concord: {error}"),
        _ => error.to_string(),
    }
}

impl From<EtcdError> for Status {
    fn from(error: EtcdError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_etcd_codes_and_texts() {
        let status: Status = EtcdError::from(MvccError::Compacted).into();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "etcdserver: mvcc: required revision has been compacted");
        let status: Status = EtcdError::NoLeader.into();
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: no leader"));
        let status: Status = EtcdError::from(MvccError::LeaseTtlTooLarge).into();
        assert_eq!((status.code(), status.message()), (Code::OutOfRange, "etcdserver: too large lease TTL"));
        let status: Status = EtcdError::from(MvccError::LeaseNotFound).into();
        assert_eq!((status.code(), status.message()), (Code::NotFound, "etcdserver: requested lease not found"));
        let status: Status = EtcdError::from(MvccError::EmptyKey).into();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "etcdserver: key is not provided"));
        // A store that is busy is a member that cannot serve this now, not a broken one.
        let status: Status = EtcdError::from(MvccError::Busy("try again".into())).into();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unavailable, "concord: concord-mvcc: database busy: try again")
        );
    }
}
