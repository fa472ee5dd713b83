//! Watch, Lease, Lock and Election figures, concord against etcd 3.4 on the same machine in
//! the same run.
//!
//! Starts a 3-member cluster of the release `concord` binary and, if `/usr/bin/etcd` (or
//! `CONCORD_BENCH_ETCD`) exists, a 3-member etcd cluster with the same flags, and runs each
//! workload against both, one system after the other. Reports each figure and the ratio
//! concord ÷ etcd (for latencies and memory, lower is better; for rates, higher).
//!
//! Workloads (through the `etcd-client` crate; `lease` and `watch` send every request to the
//! leader's endpoint, `lock` spreads its clients over the members):
//! - memory of 10,000 leases and of 10,000 watchers, first, on the fresh cluster (below);
//! - keep-alives/s: 16 keep-alive streams, each renewing one lease as fast as answers come;
//! - memory of 10,000 leases: the members' summed RSS growth after 10,000 grants;
//! - put→event latency with 1 and with 1,000 watchers of the key (median and p99 over
//!   sequential puts; with 1,000 watchers the latency is until the last watcher has it);
//! - events/s delivered: 100 watchers of a prefix while 32 writers put under it;
//! - memory of 10,000 watchers: the watched member's RSS growth after 10,000 watches (on
//!   10 streams);
//! - lock cycles/s under contention (group `lock`): 1, 16 and 128 clients on ONE lock, each
//!   client its own connection to member `i % 3` and its own lease (TTL 10 s, not kept
//!   alive: a run is shorter), looping Lock (with its lease) then Unlock through the Lock
//!   service; the figure is cycles completed across clients before the deadline ÷ the run's
//!   length. Then the same with 128 clients on MANY locks (each client its own lock name).
//!   At the deadline waiting clients are abandoned and every lease is revoked;
//! - election takeover after `kill -9` of the leader (group `lock`): the bench binary runs
//!   itself again as a candidate process (`CONCORD_BENCH_ROLE=candidate`, see
//!   `run_candidate`) that grants a lease with TTL 2 s, renews it every TTL/3 through a
//!   keep-alive stream, wins the election through the Election service and says `active`.
//!   A standby in this process (its own lease, TTL 2 s, kept alive) then campaigns; once its
//!   key is in the election, after a deterministic 0–600 ms (iteration × 97 ms mod 600, so
//!   the kill lands at different points of the renewal cycle) the candidate gets SIGKILL;
//!   the figure is the time from the kill to the standby's Campaign returning (median and
//!   worst of 20), and how many of the 20 takeovers did not come within 10 s (then the
//!   bench prints the election's keys and their leases' TTLs, abandons that campaign and
//!   goes on). Candidate and standby talk to different members. TTL 2 s is honoured by
//!   both systems: the smallest TTL is ceil(1.5 × election timeout) and the harness runs
//!   both with a 500 ms election timeout (`tests/common`), so the floor is 1 s (the bench
//!   asserts the granted TTL). The expected takeover is the TTL the candidate's lease has
//!   left when it dies, TTL − (time since its last renewal or its grant, 0–667 ms: setting
//!   up the standby takes some tens of ms, so the kill lands before the candidate's first
//!   renewal or just after it), i.e. 1.33–2 s, plus the latency of the leader noticing the
//!   expiry (concord's lease task looks every 100 ms, etcd's lessor every 500 ms), of
//!   committing the revocation, and of the standby's wait seeing its predecessor's delete.
//!
//! Command: `cargo bench -p concord --bench coordination`; `CONCORD_BENCH_WORKLOADS=lease`
//! (or `watch`, or `lock`; a comma-separated list, default `lease,watch,lock`) selects
//! groups. `CONCORD_BENCH_SECS` sets the length of each timed workload (default 5);
//! `CONCORD_BENCH_QUICK=1` runs everything small and short (CI: it must run, its figures
//! mean nothing: 1, 4 and 8 lock clients, 2 takeovers); `CONCORD_BENCH_ONLY=etcd` (or
//! `concord`) runs one system.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{within, Cluster};
use etcd_client::{Client, EventType, GetOptions, LockOptions, ResignOptions, WatchOptions};

struct Scale {
    /// Which workloads run (`CONCORD_BENCH_WORKLOADS=lease`, `watch`, `lock`, or all three
    /// by default).
    lease: bool,
    watch: bool,
    lock: bool,
    seconds: u64,
    leases: usize,
    watchers: usize,
    latency_watchers: usize,
    latency_puts: usize,
    /// Clients contending for one lock, one figure each.
    lock_clients: [usize; 3],
    /// Clients each with its own lock.
    many_locks: usize,
    /// Election takeovers timed.
    takeovers: usize,
}

impl Scale {
    fn from_env() -> Scale {
        let workloads = std::env::var("CONCORD_BENCH_WORKLOADS").unwrap_or_else(|_| "lease,watch,lock".into());
        let (lease, watch) = (workloads.contains("lease"), workloads.contains("watch"));
        let lock = workloads.contains("lock");
        if std::env::var_os("CONCORD_BENCH_QUICK").is_some() {
            return Scale {
                lease,
                watch,
                lock,
                seconds: 1,
                leases: 200,
                watchers: 200,
                latency_watchers: 20,
                latency_puts: 20,
                lock_clients: [1, 4, 8],
                many_locks: 8,
                takeovers: 2,
            };
        }
        let seconds = std::env::var("CONCORD_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        Scale {
            lease,
            watch,
            lock,
            seconds,
            leases: 10_000,
            watchers: 10_000,
            latency_watchers: 1000,
            latency_puts: 200,
            lock_clients: [1, 16, 128],
            many_locks: 128,
            takeovers: 20,
        }
    }
}

/// One system's figures, by workload name, in the order measured.
type Figures = Vec<(String, f64, &'static str)>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os(ROLE).is_some_and(|role| role == "candidate") {
        return run_candidate().await;
    }
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
    if scale.watch {
        for watchers in [1, scale.latency_watchers] {
            let (median, p99) = event_latency(&client, watchers, scale).await;
            figures.push((format!("put→event median, {watchers} watcher(s)"), median, "ms"));
            figures.push((format!("put→event p99, {watchers} watcher(s)"), p99, "ms"));
        }
        let delivered = events_per_second(&client, scale).await;
        figures.push(("events/s delivered (100 watchers, 32 writers)".into(), delivered, "/s"));
    }
    if scale.lock {
        for clients in scale.lock_clients {
            let rate = lock_cycles(cluster, &client, clients, false, scale).await;
            figures.push((format!("lock+unlock cycles/s, {clients} client(s) on 1 lock"), rate, "/s"));
        }
        let clients = scale.many_locks;
        let rate = lock_cycles(cluster, &client, clients, true, scale).await;
        figures.push((format!("lock+unlock cycles/s, {clients} clients on {clients} locks"), rate, "/s"));
        let (median, worst, missed) = election_takeover(cluster, scale).await;
        figures.push(("election takeover after SIGKILL, median (TTL 2 s)".into(), median, "ms"));
        figures.push(("election takeover after SIGKILL, worst (TTL 2 s)".into(), worst, "ms"));
        let label = format!("takeovers missed (none within 10 s of the kill, of {})", scale.takeovers);
        figures.push((label, f64::from(missed), ""));
    }
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

/// Cycles/s of Lock then Unlock by `clients` clients, all on one lock or (`own_locks`) each
/// on its own; client `i` has its own connection to member `i % 3` and its own lease.
async fn lock_cycles(cluster: &Cluster, admin: &Client, clients: usize, own_locks: bool, scale: &Scale) -> f64 {
    let mut prepared = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut client = cluster.client(i % cluster.len()).await;
        let lease = grant_exactly(&mut client, 10).await;
        let name =
            if own_locks { format!("bench-lock/many-{clients}/{i}") } else { format!("bench-lock/one-{clients}") };
        prepared.push((client, lease, name));
    }
    let leases: Vec<i64> = prepared.iter().map(|(_, lease, _)| *lease).collect();
    let cycles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(scale.seconds);
    let mut tasks = Vec::with_capacity(clients);
    for (mut client, lease, name) in prepared {
        let (cycles, errors) = (cycles.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let outcome = match client.lock(name.as_str(), Some(LockOptions::new().with_lease(lease))).await {
                    Ok(held) => client.unlock(held.key()).await.map(|_| ()),
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(()) => {
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("lock or unlock failed (first error): {error}");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep_until(deadline.into()).await;
    let completed = cycles.load(Ordering::Relaxed);
    // Clients still waiting are abandoned; revoking their leases deletes their keys.
    for task in &tasks {
        task.abort();
    }
    let mut admin = admin.clone();
    for lease in leases {
        admin.lease_revoke(lease).await.expect("revoke a lock client's lease");
    }
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("{failed} lock or unlock calls failed ({clients} clients, own locks: {own_locks})");
    }
    completed as f64 / (deadline - started).as_secs_f64()
}

/// Chooses the candidate role of the bench binary (see `run_candidate`).
const ROLE: &str = "CONCORD_BENCH_ROLE";
/// TTL in seconds of the candidate's and the standby's leases in the takeover workload.
const TAKEOVER_TTL: i64 = 2;
/// A standby's Campaign that has not returned this long after the kill counts as a missed
/// takeover (the candidate's lease is long gone by then).
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);

/// Grants a lease of `ttl` seconds and fails if the server raised the TTL (its minimum).
async fn grant_exactly(client: &mut Client, ttl: i64) -> i64 {
    let granted = client.lease_grant(ttl, None).await.expect("grant a lease");
    assert_eq!(granted.ttl(), ttl, "the server granted another TTL than asked");
    granted.id()
}

/// Renews `lease` every `every` through one keep-alive stream, until aborted.
async fn keep_alive_every(mut client: Client, lease: i64, every: Duration) {
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.expect("open a keep-alive stream");
    loop {
        tokio::time::sleep(every).await;
        keeper.keep_alive().await.expect("send a keep-alive");
        answers.message().await.expect("a keep-alive answer").expect("the keep-alive stream is open");
    }
}

/// The candidate process of the takeover workload: connects to `CONCORD_BENCH_ENDPOINT`,
/// grants a lease of `CONCORD_BENCH_TTL` seconds, keeps it alive every TTL/3, campaigns in
/// `CONCORD_BENCH_ELECTION`, prints `active` and then does nothing until killed (or until
/// its stdin closes: the parent is gone, so no candidate outlives a failed run).
async fn run_candidate() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("candidate: {name} is not set"));
    let endpoint = var("CONCORD_BENCH_ENDPOINT");
    let election = var("CONCORD_BENCH_ELECTION");
    let ttl: i64 = var("CONCORD_BENCH_TTL").parse().expect("candidate: CONCORD_BENCH_TTL is a number");
    let mut client = Client::connect([endpoint], None).await.expect("candidate: connect");
    let lease = grant_exactly(&mut client, ttl).await;
    let renewals = Duration::from_millis(ttl as u64 * 1000 / 3);
    let _keeper = tokio::spawn(keep_alive_every(client.clone(), lease, renewals));
    client.campaign(election, "candidate", lease).await.expect("candidate: campaign");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "active").and_then(|()| stdout.flush()).expect("candidate: write to stdout");
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
}

/// Median and worst time in ms from SIGKILL of the elected candidate process to a waiting
/// standby's Campaign returning, over the `scale.takeovers` takeovers that came within
/// `TAKEOVER_LIMIT`, and how many did not.
async fn election_takeover(cluster: &Cluster, scale: &Scale) -> (f64, f64, u32) {
    let bench = std::env::current_exe().expect("the bench binary's path");
    let renewals = Duration::from_millis(TAKEOVER_TTL as u64 * 1000 / 3);
    let mut takeovers = Vec::with_capacity(scale.takeovers);
    let mut missed = 0;
    for iteration in 0..scale.takeovers {
        let election = format!("bench-election/{iteration}");
        let mut candidate = Command::new(&bench)
            .env(ROLE, "candidate")
            .env("CONCORD_BENCH_ENDPOINT", cluster.endpoint(iteration % cluster.len()))
            .env("CONCORD_BENCH_ELECTION", &election)
            .env("CONCORD_BENCH_TTL", TAKEOVER_TTL.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the candidate process");
        let stdout = candidate.stdout.take().expect("the candidate's stdout");
        let said = within(
            Duration::from_secs(15),
            "the candidate to win the election",
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("join the reader")
        .expect("read the candidate's stdout");
        assert_eq!(said.trim(), "active", "the candidate did not win the election");

        let mut standby = cluster.client((iteration + 1) % cluster.len()).await;
        let lease = grant_exactly(&mut standby, TAKEOVER_TTL).await;
        let keeper = tokio::spawn(keep_alive_every(standby.clone(), lease, renewals));
        let campaign = {
            let (mut standby, election) = (standby.clone(), election.clone());
            tokio::spawn(async move {
                let won = standby.campaign(election, "standby", lease).await;
                (won, Instant::now())
            })
        };
        // The standby waits once its key is in the election, behind the candidate's.
        let keys = GetOptions::new().with_prefix().with_count_only();
        let prefix = format!("{election}/");
        within(Duration::from_secs(10), "the standby's campaign to start", async {
            while standby.get(prefix.as_str(), Some(keys.clone())).await.expect("count election keys").count() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(iteration as u64 * 97 % 600)).await;
        let killed = Instant::now();
        candidate.kill().expect("SIGKILL the candidate");
        let mut campaign = campaign;
        match tokio::time::timeout(TAKEOVER_LIMIT, &mut campaign).await {
            Ok(joined) => {
                let (won, elected) = joined.expect("the campaign task");
                let won = won.expect("the standby's campaign");
                takeovers.push((elected - killed).as_secs_f64() * 1000.0);
                let leader = won.leader().expect("the standby's leader key").clone();
                standby.resign(Some(ResignOptions::new().with_leader(leader))).await.expect("resign the standby");
            }
            Err(_) => {
                // Counted, not fatal: say what the election looks like, abandon the
                // campaign; revoking the standby's lease below deletes its key.
                eprintln!(
                    "no takeover {TAKEOVER_LIMIT:?} after the kill (takeover {iteration}); the election: {}",
                    election_state(&mut standby, &prefix).await
                );
                campaign.abort();
                missed += 1;
            }
        }
        candidate.wait().expect("reap the candidate");
        keeper.abort();
        standby.lease_revoke(lease).await.expect("revoke the standby's lease");
    }
    takeovers.sort_by(|a, b| a.total_cmp(b));
    let middle = takeovers.len() / 2;
    let median = match takeovers.len() {
        0 => f64::NAN,
        n if n % 2 == 0 => (takeovers[middle - 1] + takeovers[middle]) / 2.0,
        _ => takeovers[middle],
    };
    (median, takeovers.last().copied().unwrap_or(f64::NAN), missed)
}

/// The keys of an election with their create revisions and their leases' remaining TTL.
async fn election_state(client: &mut Client, prefix: &str) -> String {
    let keys = match client.get(prefix, Some(GetOptions::new().with_prefix())).await {
        Ok(keys) => keys,
        Err(error) => return format!("(read failed: {error})"),
    };
    let mut state = Vec::new();
    for kv in keys.kvs() {
        let ttl = match client.lease_time_to_live(kv.lease(), None).await {
            Ok(answer) => answer.ttl().to_string(),
            Err(error) => format!("? ({error})"),
        };
        state.push(format!(
            "{} created at {} with lease {:x} (TTL left {ttl} s)",
            String::from_utf8_lossy(kv.key()),
            kv.create_revision(),
            kv.lease()
        ));
    }
    format!("[{}] at revision {}", state.join("; "), keys.header().map_or(0, |h| h.revision()))
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
