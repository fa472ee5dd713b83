//! concord-api: the wire formats concord speaks, generated from .proto files.
//!
//! The etcd v3 API (packages `etcdserverpb`, `mvccpb`, `authpb`, `v3lockpb`,
//! `v3electionpb`) comes from etcd's own .proto files, unchanged, so package, service and
//! method names and field numbers match what etcd clients send. Generated code is not
//! ours to lint.

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// concord's own protocol between members (Raft messages, forwarded proposals).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod peerpb {
    tonic::include_proto!("concordpeerpb");
}
