//! concord-server: one member of a concord cluster.
//!
//! Ties the consensus core (concord-raft), the log (concord-wal) and the state machine
//! (concord-mvcc) together, talks to the other members over gRPC, and serves etcd's v3
//! API to clients.
//!
//! - `node`: the task that owns the Raft core and handles every `Ready`.
//! - `storage`: the log the core reads (the WAL) and the snapshot files behind it.
//! - `apply`: the task that applies committed entries and answers waiting clients.
//! - `transport`, `peer_service`, `convert`: the peer protocol.
//! - `shared`, `kv`, `lease`, `maintenance`, `cluster`, `watch`, `coordination` (Lock and
//!   Election): the client-facing services; `keys`: the key sets watches and waits match.
//! - `lessor`: the leader's lease clock (deadlines, checkpoints, keep-alive rules).
//! - `members`: the member directory (who is in the cluster, with names and URLs).
//! - `envelope`: what an entry carries. `errors`: etcd's error codes and texts.
//! - `config`: flags and identities. `server`: start, join, and stop. `fatal`: the
//!   failures that stop a member, on their way up to `server`.

pub mod apply;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod coordination;
pub mod errors;
pub mod fatal;
pub mod keys;
pub mod kv;
pub mod kv_convert;
pub mod lease;
pub mod lessor;
pub mod maintenance;
pub mod members;
pub mod node;
pub mod peer_service;
pub mod server;
pub mod shared;
pub mod storage;
pub mod transport;
pub mod watch;

pub use concord_member::envelope;
pub use config::ServerConfig;
pub use server::{run, ServerError};
