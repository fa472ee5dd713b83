//! A mutex guarding a shared counter, with fencing, through the etcd v3 Lock service.
//!
//! Each process grants a lease (`--ttl`), keeps it alive in the background, and for each
//! of `--rounds` rounds:
//!
//! 1. takes the lock `--lock` with that lease; Lock answers with a key that exists exactly
//!    as long as this process holds the lock;
//! 2. reads that key's create revision: the *fencing token*, unique and larger than every
//!    earlier holder's;
//! 3. reads the counter, optionally works for `--hold-ms`;
//! 4. writes `counter + 1` in a transaction that only commits if the lock key still has
//!    that create revision. If the lock was lost meanwhile (lease expired while this
//!    process was paused, say), the write is refused: *fenced off*, not counted. The same
//!    transaction records `<counter>/history/<token>` = `<client-id> <value>`;
//! 5. unlocks.
//!
//! One line per round on stdout: `round=3 client=1234 token=57 counter=12 fenced=false`
//! (`counter` is the value written, or the value it tried to write when `fenced=true`).
//!
//! `--check` writes nothing: it reads the counter and the history and verifies that no two
//! holders overlapped (counter == number of records, and sorted by token the recorded
//! values are exactly 1, 2, 3, ...). It prints a summary and exits 1 on a violation.
//!
//! `--pause-ms MS` makes the first round behave like a process frozen (GC pause, SIGSTOP,
//! a VM migration) while holding the lock: it stops renewing its lease and sleeps MS ms
//! before its write. With MS beyond the TTL the lease expires, another process takes the
//! lock, and the late write is fenced off. The process then grants a fresh lease and goes on.
//!
//! Run against concord (which serves clients on 127.0.0.1:2379 by default) or against
//! etcd; only `--endpoints` changes:
//!
//! ```sh
//! cargo build -p concord-examples
//! for i in 1 2 3 4; do target/debug/fenced-counter --endpoints 127.0.0.1:2379 --rounds 20 & done; wait
//! target/debug/fenced-counter --endpoints 127.0.0.1:2379 --check
//! ```
//!
//! Any unexpected error (a lost connection, a lost lease outside `--pause-ms`) ends the
//! process with a non-zero exit status.

use std::error::Error;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use concord_examples::lease::{KeptLease, LeaseLost};
use etcd_client::{Client, Compare, CompareOp, GetOptions, LockOptions, Txn, TxnOp};

#[derive(Debug, Parser)]
#[command(about = "A mutex guarding a shared counter, with fencing tokens (etcd v3 Lock service).")]
struct Args {
    /// Comma-separated client endpoints (host:port) of concord or etcd.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Name of the lock.
    #[arg(long, default_value = "counter-lock")]
    lock: String,
    /// Key of the counter; the history goes under `<counter>/history/`.
    #[arg(long, default_value = "counter")]
    counter: String,
    /// Number of increments this process makes.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Lease TTL in seconds: how long the lock outlives this process.
    #[arg(long, default_value_t = 5)]
    ttl: i64,
    /// How long to hold the lock each round, between reading and writing the counter.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Name recorded in the history (default: the process id).
    #[arg(long)]
    client_id: Option<String>,
    /// In the first round, freeze this long while holding the lock, lease renewals included.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Verify the counter against its history instead of incrementing it.
    #[arg(long)]
    check: bool,
}

#[derive(Debug)]
enum CounterError {
    Etcd(etcd_client::Error),
    LeaseLost(LeaseLost),
    /// The lock key was gone right after Lock returned it: the lease expired in between.
    LockKeyGone {
        key: String,
    },
    CounterNotANumber {
        key: String,
        value: String,
    },
    BadHistoryRecord {
        key: String,
        value: String,
    },
    CheckFailed {
        reason: String,
    },
}

impl fmt::Display for CounterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterError::Etcd(_) => write!(f, "etcd request failed"),
            CounterError::LeaseLost(_) => write!(f, "lease lost"),
            CounterError::LockKeyGone { key } => write!(f, "lock key {key} vanished right after Lock returned it"),
            CounterError::CounterNotANumber { key, value } => write!(f, "counter {key} holds {value:?}, not a number"),
            CounterError::BadHistoryRecord { key, value } => {
                write!(f, "history record {key} = {value:?} is not `<client> <value>`")
            }
            CounterError::CheckFailed { reason } => write!(f, "check failed: {reason}"),
        }
    }
}

impl Error for CounterError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CounterError::Etcd(e) => Some(e),
            CounterError::LeaseLost(e) => Some(e),
            _ => None,
        }
    }
}

impl From<etcd_client::Error> for CounterError {
    fn from(e: etcd_client::Error) -> Self {
        CounterError::Etcd(e)
    }
}

impl From<LeaseLost> for CounterError {
    fn from(e: LeaseLost) -> Self {
        CounterError::LeaseLost(e)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    concord_examples::exit_status(run().await)
}

async fn run() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let mut client = concord_examples::connect(&args.endpoints).await?;
    if args.check {
        check(&mut client, &args.counter).await?;
    } else {
        let client_id = args.client_id.clone().unwrap_or_else(|| std::process::id().to_string());
        run_rounds(&mut client, &args, &client_id).await?;
    }
    Ok(())
}

/// The lock as held: the key Lock returned and its create revision, the fencing token.
struct Held {
    key: Vec<u8>,
    token: i64,
}

struct RoundReport<'a> {
    round: u32,
    client_id: &'a str,
    token: i64,
    counter: u64,
    fenced: bool,
}

impl fmt::Display for RoundReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RoundReport { round, client_id, token, counter, fenced } = self;
        write!(f, "round={round} client={client_id} token={token} counter={counter} fenced={fenced}")
    }
}

async fn run_rounds(client: &mut Client, args: &Args, client_id: &str) -> Result<(), CounterError> {
    let mut lease = KeptLease::grant(client, args.ttl).await?;
    for round in 1..=args.rounds {
        let report = if round == 1 && args.pause_ms > 0 {
            let (report, fresh_lease) = frozen_round(client, args, client_id, round, lease).await?;
            lease = fresh_lease;
            report
        } else {
            let lease_id = lease.id();
            // A lost lease means the lock may be someone else's by now: stop at once
            // rather than finish a round on a lock we no longer hold.
            tokio::select! {
                report = live_round(client, args, client_id, round, lease_id) => report?,
                lost = lease.lost() => return Err(lost.into()),
            }
        };
        println!("{report}");
    }
    lease.revoke(client).await?;
    Ok(())
}

/// A round of a healthy process: its lease is renewed throughout.
async fn live_round<'a>(
    client: &mut Client,
    args: &Args,
    client_id: &'a str,
    round: u32,
    lease_id: i64,
) -> Result<RoundReport<'a>, CounterError> {
    let held = acquire(client, &args.lock, lease_id).await?;
    let next = read_counter(client, &args.counter).await? + 1;
    if args.hold_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.hold_ms)).await;
    }
    let written = fenced_write(client, &held, &args.counter, next, client_id).await?;
    client.unlock(held.key).await?;
    Ok(RoundReport { round, client_id, token: held.token, counter: next, fenced: !written })
}

/// A round in which the process freezes while holding the lock, as in a long GC pause:
/// nothing runs, lease renewals included. Returns the report and a fresh lease, since the
/// old one has expired if the pause outlasted it.
async fn frozen_round<'a>(
    client: &mut Client,
    args: &Args,
    client_id: &'a str,
    round: u32,
    lease: KeptLease,
) -> Result<(RoundReport<'a>, KeptLease), CounterError> {
    let held = acquire(client, &args.lock, lease.id()).await?;
    let next = read_counter(client, &args.counter).await? + 1;
    eprintln!(
        "round={round} client={client_id} token={} freezing_ms={} (lease renewals stop)",
        held.token, args.pause_ms
    );
    lease.stop_renewing();
    tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    let written = fenced_write(client, &held, &args.counter, next, client_id).await?;
    // If the lease expired, the lock key went with it and this deletes nothing; if the
    // pause was short, this releases a lock still held.
    client.unlock(held.key).await?;
    let fresh_lease = KeptLease::grant(client, args.ttl).await?;
    Ok((RoundReport { round, client_id, token: held.token, counter: next, fenced: !written }, fresh_lease))
}

/// Waits for the lock, then reads the fencing token. Lock's answer carries the key but not
/// its create revision, hence the Get.
async fn acquire(client: &mut Client, lock: &str, lease_id: i64) -> Result<Held, CounterError> {
    let locked = client.lock(lock, Some(LockOptions::new().with_lease(lease_id))).await?;
    let key = locked.key().to_vec();
    let answer = client.get(key.clone(), None).await?;
    match answer.kvs().first() {
        Some(kv) => Ok(Held { token: kv.create_revision(), key }),
        None => Err(CounterError::LockKeyGone { key: String::from_utf8_lossy(&key).into_owned() }),
    }
}

/// The counter's value; a missing key counts as 0.
async fn read_counter(client: &mut Client, counter: &str) -> Result<u64, CounterError> {
    let answer = client.get(counter, None).await?;
    let Some(kv) = answer.kvs().first() else { return Ok(0) };
    let value = String::from_utf8_lossy(kv.value());
    value.parse().map_err(|_| CounterError::CounterNotANumber { key: counter.to_owned(), value: value.into_owned() })
}

/// Writes `value` to the counter, and its history record, only if the lock key still has
/// the create revision it had when we took the lock. A deleted key (lease expired) has
/// create revision 0; a re-created one has a newer revision: either way the compare fails.
/// Returns whether the write happened.
async fn fenced_write(
    client: &mut Client,
    held: &Held,
    counter: &str,
    value: u64,
    client_id: &str,
) -> Result<bool, CounterError> {
    let still_held = Compare::create_revision(held.key.clone(), CompareOp::Equal, held.token);
    let txn = Txn::new().when([still_held]).and_then([
        TxnOp::put(counter, value.to_string(), None),
        TxnOp::put(history_key(counter, held.token), format!("{client_id} {value}"), None),
    ]);
    Ok(client.txn(txn).await?.succeeded())
}

fn history_prefix(counter: &str) -> String {
    format!("{counter}/history/")
}

/// Zero-padded so that `etcdctl get --prefix` lists the records in token order too.
fn history_key(counter: &str, token: i64) -> String {
    format!("{}{token:020}", history_prefix(counter))
}

/// One history record: which client wrote which counter value under which token.
struct Record {
    token: i64,
    client_id: String,
    value: u64,
}

async fn check(client: &mut Client, counter: &str) -> Result<(), CounterError> {
    let value = read_counter(client, counter).await?;
    let mut records = read_history(client, counter).await?;
    records.sort_by_key(|r| r.token);
    let clients = {
        let mut ids: Vec<&str> = records.iter().map(|r| r.client_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let violation = first_violation(value, &records);
    println!("check counter={value} records={} clients={clients} ok={}", records.len(), violation.is_none());
    match violation {
        None => Ok(()),
        Some(reason) => Err(CounterError::CheckFailed { reason }),
    }
}

async fn read_history(client: &mut Client, counter: &str) -> Result<Vec<Record>, CounterError> {
    let answer = client.get(history_prefix(counter), Some(GetOptions::new().with_prefix())).await?;
    answer.kvs().iter().map(|kv| parse_record(kv.key(), kv.value())).collect()
}

fn parse_record(key: &[u8], value: &[u8]) -> Result<Record, CounterError> {
    let key = String::from_utf8_lossy(key);
    let value = String::from_utf8_lossy(value);
    let bad = || CounterError::BadHistoryRecord { key: key.clone().into_owned(), value: value.clone().into_owned() };
    let token = key.rsplit('/').next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let (client_id, counted) = value.rsplit_once(' ').ok_or_else(bad)?;
    let counted = counted.parse().map_err(|_| bad())?;
    Ok(Record { token, client_id: client_id.to_owned(), value: counted })
}

/// With mutual exclusion, holders follow one another, each token larger than the last
/// and each write one more than the last: sorted by token, the values are 1, 2, 3, ...
/// and the counter is the last of them. Two overlapping holders would have read the same
/// value and written the same value + 1, which shows as a repeated value here.
fn first_violation(counter: u64, records_by_token: &[Record]) -> Option<String> {
    for (expected, record) in (1u64..).zip(records_by_token) {
        if record.value != expected {
            return Some(format!(
                "record #{expected} (token {} by client {}) has value {}, expected {expected}",
                record.token, record.client_id, record.value
            ));
        }
    }
    let recorded = records_by_token.len() as u64;
    (counter != recorded).then(|| format!("counter is {counter} but there are {recorded} history records"))
}
