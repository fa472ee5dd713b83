//! A highly-available service: several instances, one active, the others on standby,
//! through the etcd v3 Election service.
//!
//! Each instance grants a lease (`--ttl`), keeps it alive in the background and campaigns
//! in the election `--election` with its `--name`. Campaign blocks while another instance
//! leads; meanwhile the instance prints `standby name=...`. Once elected it prints
//! `active name=... key=... rev=... at=<unix ms>` (`rev`, the create revision of the
//! leader key, is the fencing token for anything the leader writes) and works, printing
//! `working name=... n=...` once a second until it is stopped.
//!
//! On SIGINT or SIGTERM the active instance resigns, so a standby takes over at once, and
//! prints `resigned name=...`. An instance killed outright (`kill -9`, a crash, a lost
//! machine) cannot resign: its leadership ends when its lease expires, up to `--ttl`
//! seconds later. If the lease is lost while active (connection lost, process paused past
//! the TTL) the instance prints `lost name=...` and exits with status 1: another instance
//! may be active already.
//!
//! `--observe` campaigns for nothing: it prints every leader change as
//! `leader value=<name> key=<key> rev=<create revision> at=<unix ms>` until stopped.
//!
//! Run against concord (clients on 127.0.0.1:2379 by default) or etcd; only `--endpoints`
//! changes:
//!
//! ```sh
//! cargo build -p concord-examples
//! target/debug/ha-service --endpoints 127.0.0.1:2379 --observe &
//! target/debug/ha-service --endpoints 127.0.0.1:2379 --name a &
//! target/debug/ha-service --endpoints 127.0.0.1:2379 --name b &
//! kill -TERM %2    # a resigns, b becomes active at once
//! ```

use std::error::Error;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use concord_examples::lease::{KeptLease, LeaseLost};
use concord_examples::unix_millis;
use etcd_client::{Client, LeaderKey, LeaderResponse, ResignOptions};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Parser)]
#[command(about = "An active/standby service through the etcd v3 Election service.")]
struct Args {
    /// Comma-separated client endpoints (host:port) of concord or etcd.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Name of the election.
    #[arg(long, default_value = "ha-service")]
    election: String,
    /// This instance's name, the value it campaigns with.
    #[arg(long, required_unless_present = "observe")]
    name: Option<String>,
    /// Lease TTL in seconds: how long a crashed leader keeps the leadership.
    #[arg(long, default_value_t = 5)]
    ttl: i64,
    /// Print every leader change instead of campaigning.
    #[arg(long, conflicts_with = "name")]
    observe: bool,
}

#[derive(Debug)]
enum HaError {
    Etcd(etcd_client::Error),
    LeaseLost(LeaseLost),
    Signals(std::io::Error),
    /// Campaign returned without a leader key, which the API promises.
    NoLeaderKey,
    /// The server ended the Observe stream, which it only does when shutting down.
    ObserveEnded,
}

impl fmt::Display for HaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaError::Etcd(_) => write!(f, "etcd request failed"),
            HaError::LeaseLost(_) => write!(f, "lease lost"),
            HaError::Signals(_) => write!(f, "cannot listen for SIGINT/SIGTERM"),
            HaError::NoLeaderKey => write!(f, "Campaign answered without a leader key"),
            HaError::ObserveEnded => write!(f, "the server ended the Observe stream"),
        }
    }
}

impl Error for HaError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            HaError::Etcd(e) => Some(e),
            HaError::LeaseLost(e) => Some(e),
            HaError::Signals(e) => Some(e),
            HaError::NoLeaderKey | HaError::ObserveEnded => None,
        }
    }
}

impl From<etcd_client::Error> for HaError {
    fn from(e: etcd_client::Error) -> Self {
        HaError::Etcd(e)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    concord_examples::exit_status(run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let client = concord_examples::connect(&args.endpoints).await?;
    let stop = StopSignals::install()?;
    match &args.name {
        Some(name) if !args.observe => serve(client, stop, &args.election, name, args.ttl).await?,
        _ => observe(client, stop, &args.election).await?,
    }
    Ok(())
}

/// SIGINT or SIGTERM: the polite ways to ask an instance to stop.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> Result<Self, HaError> {
        let interrupt = signal(SignalKind::interrupt()).map_err(HaError::Signals)?;
        let terminate = signal(SignalKind::terminate()).map_err(HaError::Signals)?;
        Ok(StopSignals { interrupt, terminate })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// How waiting on standby ended.
enum Standby {
    Elected(LeaderKey),
    Stopped,
    Lost(LeaseLost),
}

/// How being active ended.
enum Active {
    Stopped,
    Lost(LeaseLost),
}

async fn serve(mut client: Client, mut stop: StopSignals, election: &str, name: &str, ttl: i64) -> Result<(), HaError> {
    let mut lease = KeptLease::grant(&mut client, ttl).await?;
    println!("standby name={name}");
    let leader = match wait_on_standby(&client, &mut stop, &mut lease, election, name).await? {
        Standby::Elected(leader) => leader,
        Standby::Stopped => {
            // Revoking deletes our candidacy key, so we leave the queue at once.
            lease.revoke(&mut client).await?;
            println!("stopped name={name} while on standby");
            return Ok(());
        }
        Standby::Lost(lost) => return Err(HaError::LeaseLost(lost)),
    };
    println!(
        "active name={name} key={} rev={} at={}",
        String::from_utf8_lossy(leader.key()),
        leader.rev(),
        unix_millis()
    );
    match work_while_active(&mut stop, &mut lease, name).await {
        Active::Stopped => {
            client.resign(Some(ResignOptions::new().with_leader(leader))).await?;
            println!("resigned name={name}");
            lease.revoke(&mut client).await?;
            Ok(())
        }
        Active::Lost(lost) => {
            // Stop working at once: by the time our lease is gone, another instance may
            // have been elected, and two active instances is what this is here to prevent.
            println!("lost name={name} reason=\"{lost}\"");
            Err(HaError::LeaseLost(lost))
        }
    }
}

async fn wait_on_standby(
    client: &Client,
    stop: &mut StopSignals,
    lease: &mut KeptLease,
    election: &str,
    name: &str,
) -> Result<Standby, HaError> {
    // Campaign gets its own handle so the other branches can run without borrowing it.
    let mut campaigner = client.clone();
    let lease_id = lease.id();
    tokio::select! {
        elected = campaigner.campaign(election, name, lease_id) => {
            elected?.take_leader().map(Standby::Elected).ok_or(HaError::NoLeaderKey)
        }
        () = stop.requested() => Ok(Standby::Stopped),
        lost = lease.lost() => Ok(Standby::Lost(lost)),
    }
}

async fn work_while_active(stop: &mut StopSignals, lease: &mut KeptLease, name: &str) -> Active {
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = every_second.tick() => {
                n += 1;
                println!("working name={name} n={n}");
            }
            () = stop.requested() => return Active::Stopped,
            lost = lease.lost() => return Active::Lost(lost),
        }
    }
}

async fn observe(mut client: Client, mut stop: StopSignals, election: &str) -> Result<(), HaError> {
    let mut changes = client.observe(election).await?;
    loop {
        tokio::select! {
            change = changes.message() => match change? {
                Some(change) => print_leader(&change),
                None => return Err(HaError::ObserveEnded),
            },
            () = stop.requested() => return Ok(()),
        }
    }
}

fn print_leader(change: &LeaderResponse) {
    let at = unix_millis();
    match change.kv() {
        Some(kv) => println!(
            "leader value={} key={} rev={} at={at}",
            String::from_utf8_lossy(kv.value()),
            String::from_utf8_lossy(kv.key()),
            kv.create_revision()
        ),
        None => println!("leader none at={at}"),
    }
}
