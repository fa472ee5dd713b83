//! Pieces shared by the example binaries: connecting to a cluster, a lease kept alive in
//! the background, and the wall clock in the form the examples print.
//!
//! Nothing here is specific to concord: every call is plain etcd v3 API, so the same code
//! runs against concord or against etcd.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, ConnectOptions};

pub mod lease;

/// Connects to `endpoints` (`host:port`, no scheme needed).
///
/// No per-request timeout: Lock and Campaign block, by design, for as long as another
/// holder keeps the lock or the leadership. HTTP/2 keep-alive pings instead notice a dead
/// connection, so a blocked call fails instead of hanging once the server is gone.
pub async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    Client::connect(endpoints, Some(options)).await
}

/// Milliseconds since the Unix epoch, for `at=` fields that a script compares across
/// processes on one machine.
pub fn unix_millis() -> u128 {
    // A clock before 1970 is a broken machine, not something an example should handle;
    // 0 keeps the output parseable.
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Turns the outcome of an example's `run` into its exit status, printing an error as one
/// readable line (`error: what: why: ...`) rather than `main`'s `Debug` dump.
pub fn exit_status(outcome: Result<(), Box<dyn Error>>) -> ExitCode {
    let Err(error) = outcome else { return ExitCode::SUCCESS };
    let mut line = format!("error: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        line.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    eprintln!("{line}");
    ExitCode::FAILURE
}
