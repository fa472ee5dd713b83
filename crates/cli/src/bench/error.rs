//! Why a benchmark run could not start (or had to stop).
//!
//! Failed requests during a run are not errors of this kind: they are counted in the
//! report (see `report.rs`), as etcd's benchmark does, because a load test that stops at
//! the first timeout says nothing about the rest. Only what makes the whole run
//! meaningless ends it: bad flags, an endpoint that cannot be reached at all, a setup step
//! (granting leases, creating watches) that fails.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BenchError {
    /// A flag, or a combination of flags, that makes no sense.
    #[error("{0}")]
    Flag(String),
    /// No gRPC connection could be made to an endpoint.
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// A request made before the measured run failed.
    #[error("setting up the workload failed: {0}")]
    Setup(String),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}
