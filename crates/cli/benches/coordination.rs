//! Watch and Lease figures, concord against etcd 3.4 on the same machine in the same run.
//!
//! Starts a 3-member cluster of the release `concord` binary and, if `/usr/bin/etcd` (or
//! `CONCORD_BENCH_ETCD`) exists, a 3-member etcd cluster with the same flags, and runs each
//! workload against both, one system after the other. Reports each figure and the ratio
//! concord ÷ etcd (for latencies and memory, lower is better; for rates, higher).
//!
//! Workloads (through the `etcd-client` crate, all requests to the leader's endpoint):
//! - memory of 10,000 leases and of 10,000 watchers, first, on the fresh cluster (below);
//! - keep-alives/s: 16 keep-alive streams, each renewing one lease as fast as answers come;
//! - memory of 10,000 leases: the members' summed RSS growth after 10,000 grants;
//! - put→event latency with 1 and with 1,000 watchers of the key (median and p99 over
//!   sequential puts; with 1,000 watchers the latency is until the last watcher has it);
//! - events/s delivered: 100 watchers of a prefix while 32 writers put under it;
//! - memory of 10,000 watchers: the watched member's RSS growth after 10,000 watches (on
//!   10 streams).
//!
//! Command: `cargo bench -p concord --bench coordination`; `CONCORD_BENCH_WORKLOADS=lease`
//! (or `watch`) runs one group. `CONCORD_BENCH_SECS` sets the
//! length of each timed workload (default 5); `CONCORD_BENCH_QUICK=1` runs everything
//! small and short (CI: it must run, its figures mean nothing); `CONCORD_BENCH_ONLY=etcd`
//! (or `concord`) runs one system.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use etcd_client::{Client, EventType, WatchOptions};

struct Scale {
    /// Which workloads run (`CONCORD_BENCH_WORKLOADS=lease`, `watch`, or both by default).
    lease: bool,
    watch: bool,
    seconds: u64,
    leases: usize,
    watchers: usize,
    latency_watchers: usize,
    latency_puts: usize,
}

impl Scale {
    fn from_env() -> Scale {
        let workloads = std::env::var("CONCORD_BENCH_WORKLOADS").unwrap_or_else(|_| "lease,watch".into());
        let (lease, watch) = (workloads.contains("lease"), workloads.contains("watch"));
        if std::env::var_os("CONCORD_BENCH_QUICK").is_some() {
            return Scale {
                lease,
                watch,
                seconds: 1,
                leases: 200,
                watchers: 200,
                latency_watchers: 20,
                latency_puts: 20,
            };
        }
        let seconds = std::env::var("CONCORD_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        Scale { lease, watch, seconds, leases: 10_000, watchers: 10_000, latency_watchers: 1000, latency_puts: 200 }
    }
}

/// One system's figures, by workload name, in the order measured.
type Figures = Vec<(String, f64, &'static str)>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale = Scale::from_env();
    let etcd = PathBuf::from(std::env::var("CONCORD_BENCH_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    let mut systems: Vec<(&str, Option<PathBuf>)> = vec![("concord", None)];
    if etcd.exists() {
        systems.push(("etcd", Some(etcd)));
    } else {
        eprintln!("no etcd at {} (set CONCORD_BENCH_ETCD): concord alone", etcd.display());
    }
    if let Ok(only) = std::env::var("CONCORD_BENCH_ONLY") {
        systems.retain(|(name, _)| *name == only);
    }
    let mut results: Vec<(&str, Figures)> = Vec::new();
    for (name, server) in systems {
        eprintln!("== {name}");
        let mut builder = Cluster::builder(3);
        if let Some(server) = server {
            builder = builder.server(server);
        }
        let mut cluster = builder.start().await;
        let figures = run_all(&mut cluster, &scale).await;
        results.push((name, figures));
    }
    print_table(&results);
}

async fn run_all(cluster: &mut Cluster, scale: &Scale) -> Figures {
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client(leader).await;
    let mut figures = Figures::new();
    // Memory first, on a fresh cluster: after the throughput workloads the allocators hold
    // freed memory that new leases and watchers would reuse without growing.
    if scale.lease {
        let grown = lease_memory(cluster, &client, scale).await;
        figures.push((format!("RSS growth, {} leases (3 members)", scale.leases), grown, "MiB"));
    }
    if scale.watch {
        let grown = watcher_memory(cluster, leader, &client, scale).await;
        figures.push((format!("RSS growth, {} watchers (1 member)", scale.watchers), grown, "MiB"));
    }
    if scale.lease {
        let rate = keep_alives_per_second(&client, scale).await;
        figures.push(("keep-alives/s (16 streams)".into(), rate, "/s"));
    }
    if !scale.watch {
        return figures;
    }
    for watchers in [1, scale.latency_watchers] {
        let (median, p99) = event_latency(&client, watchers, scale).await;
        figures.push((format!("put→event median, {watchers} watcher(s)"), median, "ms"));
        figures.push((format!("put→event p99, {watchers} watcher(s)"), p99, "ms"));
    }
    let delivered = events_per_second(&client, scale).await;
    figures.push(("events/s delivered (100 watchers, 32 writers)".into(), delivered, "/s"));
    figures
}

async fn keep_alives_per_second(client: &Client, scale: &Scale) -> f64 {
    let answered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(scale.seconds);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let id = client.lease_grant(600, None).await.expect("grant").id();
            let (mut keeper, mut stream) = client.lease_keep_alive(id).await.expect("keep-alive stream");
            while Instant::now() < deadline {
                keeper.keep_alive().await.expect("send a keep-alive");
                stream.message().await.expect("keep-alive answer").expect("stream open");
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await.expect("keep-alive task");
    }
    answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Resident memory of a process, in bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

fn cluster_rss(cluster: &Cluster) -> u64 {
    (0..cluster.len()).filter_map(|i| cluster.pid(i)).map(rss_bytes).sum()
}

const MIB: f64 = 1024.0 * 1024.0;

async fn lease_memory(cluster: &Cluster, client: &Client, scale: &Scale) -> f64 {
    let before = cluster_rss(cluster);
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let mut client = client.clone();
        let count = scale.leases;
        tasks.push(tokio::spawn(async move {
            for _ in (worker..count).step_by(32) {
                client.lease_grant(600, None).await.expect("grant");
            }
        }));
    }
    for task in tasks {
        task.await.expect("grant task");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster_rss(cluster).saturating_sub(before) as f64 / MIB
}

/// Median and p99 in ms of put→event, until every one of `watchers` watchers has the event.
async fn event_latency(client: &Client, watchers: usize, scale: &Scale) -> (f64, f64) {
    let key = format!("latency/{watchers}");
    let received = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let mut client = client.clone();
        let (watcher, mut stream) = client.watch(key.clone(), None).await.expect("watch").split();
        stream.message().await.expect("created").expect("the stream is open");
        let received = received.clone();
        streams.push(watcher);
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                let puts = response.events().iter().filter(|e| e.event_type() == EventType::Put).count();
                received.fetch_add(puts as u64, Ordering::Relaxed);
            }
        }));
    }
    let mut writer = client.clone();
    let mut latencies = Vec::with_capacity(scale.latency_puts);
    for n in 0..scale.latency_puts {
        let target = ((n + 1) * watchers) as u64;
        let sent = Instant::now();
        writer.put(key.clone(), n.to_string(), None).await.expect("put");
        while received.load(Ordering::Relaxed) < target {
            assert!(sent.elapsed() < Duration::from_secs(10), "events did not arrive");
            tokio::task::yield_now().await;
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    drop(streams);
    for task in tasks {
        task.abort();
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

async fn events_per_second(client: &Client, scale: &Scale) -> f64 {
    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..100 {
        let mut client = client.clone();
        let options = WatchOptions::new().with_prefix();
        let (watcher, mut stream) = client.watch("rate/", Some(options)).await.expect("watch").split();
        stream.message().await.expect("created").expect("the stream is open");
        watchers.push(watcher);
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(response)) = stream.message().await {
                received.fetch_add(response.events().len() as u64, Ordering::Relaxed);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(scale.seconds);
    let mut writers = Vec::new();
    for writer in 0..32 {
        let mut client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                client.put(format!("rate/{writer}"), n.to_string(), None).await.expect("put");
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    for writer in writers {
        writer.await.expect("writer");
    }
    // Count what arrived during the run and shortly after (the tail of the queue).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rate = received.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    drop(watchers);
    for reader in readers {
        reader.abort();
    }
    rate
}

async fn watcher_memory(cluster: &Cluster, member: usize, client: &Client, scale: &Scale) -> f64 {
    let pid = cluster.pid(member).expect("the member runs");
    let before = rss_bytes(pid);
    let mut kept = Vec::new();
    let per_stream = scale.watchers / 10;
    for stream in 0..10 {
        let mut client = client.clone();
        let (mut watcher, mut responses) =
            client.watch(format!("mem/{stream}/0"), None).await.expect("open a watch stream").split();
        for n in 1..per_stream {
            watcher.watch(format!("mem/{stream}/{n}"), None).await.expect("add a watch");
        }
        // Every create answered: the watchers exist on the member.
        let mut created = 0;
        while created < per_stream {
            let response = responses.message().await.expect("a watch response").expect("the stream is open");
            created += usize::from(response.created());
        }
        kept.push((watcher, responses));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_bytes(pid).saturating_sub(before) as f64 / MIB;
    drop(kept);
    grown
}

fn print_table(results: &[(&str, Figures)]) {
    let names: Vec<&str> = results.iter().map(|(name, _)| *name).collect();
    println!();
    println!("| workload | {} | concord ÷ etcd |", names.join(" | "));
    println!("| --- |{} ---: |", " ---: |".repeat(names.len()));
    let Some((_, first)) = results.first() else { return };
    for (row, (label, _, unit)) in first.iter().enumerate() {
        let values: Vec<f64> = results.iter().map(|(_, figures)| figures[row].1).collect();
        let cells: Vec<String> = values.iter().map(|v| format!("{v:.2} {unit}")).collect();
        let ratio =
            if values.len() == 2 && values[1] > 0.0 { format!("{:.2}", values[0] / values[1]) } else { "".into() };
        println!("| {label} | {} | {ratio} |", cells.join(" | "));
    }
}
