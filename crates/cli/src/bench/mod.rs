//! `concord bench`: a load generator for concord or etcd, modeled on etcd's `benchmark`
//! tool (same workload names, flag names and report layout) so that etcd users can read
//! and compare its numbers. It speaks the v3 gRPC API directly through the generated
//! tonic clients, with no client library in between, so what it measures is the server.
//!
//! The module tree: `config` (common flags and their validation), `keys` (key generation),
//! `conn` (the shared gRPC channels), `workloads` (what one request of each workload is),
//! `runner` (the concurrent load loop, rate limit and progress bar), `report` (latency
//! statistics and the text or JSON summary). This file only wires them: parse, connect,
//! set up, run, report, clean up.

mod config;
mod conn;
mod error;
mod keys;
mod report;
mod runner;
mod workloads;

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use tonic::transport::Channel;

pub use config::CommonArgs;
pub use error::BenchError;

use config::Settings;
use report::Summary;
use runner::{Plan, Worker};
use workloads::{KeepAliveWorker, PutWorker, RangeWorker, TxnMixedWorker, WatchWorker, Watchers};

/// Most watch streams or leases a run may open.
const MAX_STREAMS: usize = 100_000;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Write keys (random ones from --key-space-size, or in order with --sequential-keys).
    Put,
    /// Read KEY, or the range [KEY, END), over and over.
    Range(RangeArgs),
    /// Txns holding one Range (a read) or one Put (a write) each, mixed by --rw-ratio.
    TxnMixed(TxnMixedArgs),
    /// Put one key and time until each of --watchers watchers of it has seen the event.
    Watch(WatchArgs),
    /// Keep-alive round trips on --leases leases, one keep-alive stream per client.
    LeaseKeepalive(LeaseArgs),
}

/// `l`: linearizable (the default, through the leader's ReadIndex); `s`: serializable
/// (answered from the local member's state).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Consistency {
    #[default]
    L,
    S,
}

#[derive(Args, Debug)]
struct RangeArgs {
    /// Key to read (or first key of the range).
    key: String,
    /// End of the range (exclusive); without it, KEY alone.
    end: Option<String>,
    /// Linearizable (l) or serializable (s) reads.
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
}

#[derive(Args, Debug)]
struct TxnMixedArgs {
    /// Reads per write (1 = as many reads as writes).
    #[arg(long, default_value_t = 1.0)]
    rw_ratio: f64,
    /// Linearizable (l) or serializable (s) reads inside the txns.
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Number of watchers of the key (one watch stream each, round-robin over --conns).
    #[arg(long, default_value_t = 1)]
    watchers: usize,
}

#[derive(Args, Debug)]
struct LeaseArgs {
    /// Number of leases granted up front and kept alive in turn (revoked at the end).
    #[arg(long, default_value_t = 1)]
    leases: usize,
}

/// Runs one benchmark and prints its report on stdout.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let settings = args.common.validate()?;
    validate_workload(&args.workload)?;
    let channels = conn::connect(&settings.endpoints, settings.conns).await?;
    let (name, summary) = run_workload(&args.workload, &settings, &channels).await?;
    print_report(name, &summary, settings.json)
}

fn validate_workload(workload: &Workload) -> Result<(), BenchError> {
    match workload {
        Workload::TxnMixed(args) if !(args.rw_ratio.is_finite() && args.rw_ratio >= 0.0) => {
            Err(BenchError::Flag(format!("--rw-ratio must be a number >= 0, not {}", args.rw_ratio)))
        }
        Workload::Watch(args) => count_flag("--watchers", args.watchers),
        Workload::LeaseKeepalive(args) => count_flag("--leases", args.leases),
        _ => Ok(()),
    }
}

fn count_flag(flag: &str, value: usize) -> Result<(), BenchError> {
    if (1..=MAX_STREAMS).contains(&value) {
        Ok(())
    } else {
        Err(BenchError::Flag(format!("{flag} must be between 1 and {MAX_STREAMS}, not {value}")))
    }
}

/// Sets the workload up, runs it, cleans up; returns its name and summary.
async fn run_workload(
    workload: &Workload,
    settings: &Settings,
    channels: &[Channel],
) -> Result<(&'static str, Summary), BenchError> {
    let clients = 0..settings.clients;
    let summary = match workload {
        Workload::Put => {
            let workers = clients.map(|c| PutWorker::new(channels, c, &settings.keys, settings.val_size)).collect();
            ("put", measure(settings, workers).await)
        }
        Workload::Range(args) => {
            let request = workloads::range_request(&args.key, args.end.as_deref(), args.consistency == Consistency::S);
            ("range", measure(settings, clients.map(|c| RangeWorker::new(channels, c, &request)).collect()).await)
        }
        Workload::TxnMixed(args) => {
            let serializable = args.consistency == Consistency::S;
            let workers = clients
                .map(|c| {
                    TxnMixedWorker::new(channels, c, &settings.keys, settings.val_size, args.rw_ratio, serializable)
                })
                .collect();
            ("txn-mixed", measure(settings, workers).await)
        }
        Workload::Watch(args) => {
            let key = settings.keys.key_at(0);
            let watchers = Watchers::start(channels, &key, args.watchers).await?;
            let workers = clients.map(|c| WatchWorker::new(channels, c, &key, settings.val_size, &watchers)).collect();
            let summary = measure(settings, workers).await;
            drop(watchers);
            ("watch", summary)
        }
        Workload::LeaseKeepalive(args) => {
            let leases = workloads::grant_leases(&channels[0], args.leases).await?;
            let mut workers = Vec::with_capacity(settings.clients);
            for client in clients {
                match KeepAliveWorker::open(channels, client, &leases).await {
                    Ok(worker) => workers.push(worker),
                    Err(error) => {
                        workloads::revoke_leases(&channels[0], &leases).await;
                        return Err(error);
                    }
                }
            }
            let summary = measure(settings, workers).await;
            workloads::revoke_leases(&channels[0], &leases).await;
            ("lease-keepalive", summary)
        }
    };
    Ok(summary)
}

async fn measure<W: Worker>(settings: &Settings, workers: Vec<W>) -> Summary {
    let plan = Plan { stop: settings.stop, rate: settings.rate, progress: !settings.json };
    let (recorder, elapsed) = runner::run(plan, workers).await;
    recorder.summary(elapsed)
}

fn print_report(workload: &str, summary: &Summary, json: bool) -> Result<(), BenchError> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", summary.to_json(workload))?;
    } else {
        write!(stdout, "{}", summary.to_text())?;
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Wrapper::try_parse_from(argv).map(|w| w.bench)
    }

    #[test]
    fn common_flags_go_before_or_after_the_workload() {
        let before = parse(&["--clients", "4", "put", "--total", "9"]).unwrap();
        let after = parse(&["put", "--clients", "4", "--total", "9"]).unwrap();
        for args in [before, after] {
            assert_eq!((args.common.clients, args.common.total), (4, Some(9)));
        }
    }

    #[test]
    fn workload_flags() {
        let args = parse(&["range", "a", "z", "--consistency", "s"]).unwrap();
        match args.workload {
            Workload::Range(range) => {
                assert_eq!((range.key.as_str(), range.end.as_deref()), ("a", Some("z")));
                assert_eq!(range.consistency, Consistency::S);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["range", "k", "--consistency", "x"]).is_err());
        assert!(parse(&["range"]).is_err());
        let args = parse(&["txn-mixed"]).unwrap();
        assert!(matches!(args.workload, Workload::TxnMixed(TxnMixedArgs { rw_ratio, .. }) if rw_ratio == 1.0));
        assert!(matches!(parse(&["lease-keepalive"]).unwrap().workload, Workload::LeaseKeepalive(_)));
    }

    #[test]
    fn workload_flags_are_bounded() {
        let invalid = |args: &[&str]| validate_workload(&parse(args).unwrap().workload).is_err();
        assert!(invalid(&["watch", "--watchers", "0"]));
        assert!(invalid(&["lease-keepalive", "--leases", "0"]));
        assert!(invalid(&["txn-mixed", "--rw-ratio=-1"]));
        assert!(invalid(&["txn-mixed", "--rw-ratio", "NaN"]));
        assert!(!invalid(&["txn-mixed", "--rw-ratio", "0"]));
        assert!(!invalid(&["watch", "--watchers", "100"]));
    }
}
