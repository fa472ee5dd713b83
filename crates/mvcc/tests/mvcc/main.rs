//! Integration tests of concord-mvcc, one module per concern, in one test binary (one link).

mod command;
mod common;
mod compact;
mod determinism;
mod durability;
mod kv;
mod lease;
mod model;
mod range;
mod snapshot;
mod txn;
mod validate;
