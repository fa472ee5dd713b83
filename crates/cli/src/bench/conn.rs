//! The `--conns` gRPC channels the clients share.
//!
//! A tonic `Channel` is one HTTP/2 connection that multiplexes any number of concurrent
//! requests and is cheap to clone, so clients get clones of a few channels (client `i`
//! uses channel `i % conns`, and channel `j` goes to endpoint `j % endpoints`) instead of
//! a connection each: this is what `--conns` and `--clients` mean in etcd's benchmark too.
//! Every channel connects before the run starts, so an endpoint that cannot be reached
//! stops the run at once with a clear error instead of producing a report of failures.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::error::BenchError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message a client accepts or sends: big enough for wide ranges and large values.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Opens `conns` channels over `endpoints` (URIs with a scheme), round-robin.
pub async fn connect(endpoints: &[String], conns: usize) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        channels.push(connect_one(&endpoints[i % endpoints.len()]).await?);
    }
    Ok(channels)
}

async fn connect_one(uri: &str) -> Result<Channel, BenchError> {
    let failed = |reason: String| BenchError::Connect { endpoint: uri.to_string(), reason };
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(|e| failed(format!("not a valid endpoint URI ({e})")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(failed(error_chain(&error))),
        Err(_) => Err(failed(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// An error with its causes, `outer: inner: innermost` (tonic's own text is just
/// "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A request's failure as the report counts it: the gRPC code and message.
pub fn status_message(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
