//! A lease granted once and renewed in the background, and a way to learn that it is lost.
//!
//! Both the lock and the election tie their keys to a lease: while the lease lives, the
//! key (the lock, or the candidacy) lives. A process that stops renewing it (crashed,
//! partitioned, paused) loses the key one TTL later, which is what lets another process
//! take over. So a holder must know when its lease is gone: from then on it holds nothing.

use std::fmt;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::task::JoinHandle;

/// Why a lease can no longer be counted on.
#[derive(Debug)]
pub enum LeaseLost {
    /// The server answered a renewal with TTL 0: the lease had already expired (or was
    /// revoked), and every key attached to it is deleted.
    Expired { id: i64 },
    /// No answer to a renewal within one TTL, so the lease may have expired meanwhile.
    NoAnswer { id: i64, waited: Duration },
    /// The keep-alive stream ended; the server closes it when it shuts down.
    StreamClosed { id: i64 },
    /// Sending a renewal or reading its answer failed: the connection is lost.
    Rpc { id: i64, source: etcd_client::Error },
    /// The background task stopped without saying why (it panicked or was cancelled).
    KeeperStopped { id: i64 },
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseLost::Expired { id } => write!(f, "lease {id:x} expired"),
            LeaseLost::NoAnswer { id, waited } => {
                write!(f, "lease {id:x}: no answer to a renewal within {waited:?}")
            }
            LeaseLost::StreamClosed { id } => write!(f, "lease {id:x}: the server closed the keep-alive stream"),
            LeaseLost::Rpc { id, .. } => write!(f, "lease {id:x}: keep-alive failed"),
            LeaseLost::KeeperStopped { id } => write!(f, "lease {id:x}: the keep-alive task stopped"),
        }
    }
}

impl std::error::Error for LeaseLost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LeaseLost::Rpc { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A granted lease with a background task renewing it every TTL/3.
///
/// Dropping it stops the renewals (the lease then expires one TTL later on the server);
/// [`KeptLease::revoke`] ends it at once.
#[derive(Debug)]
pub struct KeptLease {
    id: i64,
    keeper: JoinHandle<LeaseLost>,
}

impl KeptLease {
    /// Grants a lease of `ttl_secs` seconds and starts renewing it.
    pub async fn grant(client: &mut Client, ttl_secs: i64) -> Result<Self, etcd_client::Error> {
        let id = client.lease_grant(ttl_secs, None).await?.id();
        // The first keep-alive is sent and answered here, so a lease that cannot be kept
        // fails now rather than later in the background.
        let (keeper, answers) = client.lease_keep_alive(id).await?;
        let ttl = Duration::from_secs(ttl_secs.max(1).unsigned_abs());
        let keeper = tokio::spawn(renew_until_lost(id, ttl, keeper, answers));
        Ok(KeptLease { id, keeper })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Resolves once the lease is lost; pending forever while it is kept. Await it at most
    /// once (in a `select!` beside the work the lease protects).
    pub async fn lost(&mut self) -> LeaseLost {
        (&mut self.keeper).await.unwrap_or(LeaseLost::KeeperStopped { id: self.id })
    }

    /// Stops renewing, as a frozen process would, without telling the server: the lease
    /// runs out one TTL later. Used to show what fencing is for.
    pub fn stop_renewing(self) {
        self.keeper.abort();
    }

    /// Stops renewing and revokes the lease, which deletes its keys at once.
    pub async fn revoke(self, client: &mut Client) -> Result<(), etcd_client::Error> {
        self.keeper.abort();
        client.lease_revoke(self.id).await?;
        Ok(())
    }
}

/// Renews every TTL/3, so two renewals in a row can be lost or late before the lease
/// runs out, and returns why it stopped.
async fn renew_until_lost(
    id: i64,
    ttl: Duration,
    mut keeper: LeaseKeeper,
    mut answers: LeaseKeepAliveStream,
) -> LeaseLost {
    let mut every_third_of_ttl = tokio::time::interval(ttl / 3);
    every_third_of_ttl.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the grant has just renewed the lease: skip it.
    every_third_of_ttl.tick().await;
    loop {
        every_third_of_ttl.tick().await;
        if let Err(source) = keeper.keep_alive().await {
            return LeaseLost::Rpc { id, source };
        }
        match tokio::time::timeout(ttl, answers.message()).await {
            Err(_elapsed) => return LeaseLost::NoAnswer { id, waited: ttl },
            Ok(Err(source)) => return LeaseLost::Rpc { id, source },
            Ok(Ok(None)) => return LeaseLost::StreamClosed { id },
            Ok(Ok(Some(answer))) if answer.ttl() <= 0 => return LeaseLost::Expired { id },
            Ok(Ok(Some(_renewed))) => {}
        }
    }
}
