//! `concord`: the one binary. `serve` runs a member with etcd's flag names; `dev` runs a
//! local cluster of several members in one process for trying things out; `bench` generates
//! load against concord or etcd and reports latencies.

// The simulator's planted bugs (`--cfg concord_planted_bugs`, scripts/planted-bugs) must
// never be in the binary users run: a build of it that sets the cfg stops here.
#[cfg(concord_planted_bugs)]
compile_error!("the concord binary must not be built with --cfg concord_planted_bugs: planted bugs are for the simulator's builds alone (scripts/planted-bugs)");

mod bench;
mod dev;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use concord_server::ServerConfig;
use tracing::Instrument;

#[derive(Parser)]
#[command(name = "concord", version, about = "A replicated key-value store that speaks etcd's v3 API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member. With no flags: a single-member cluster named `default`, data in
    /// ./default.concord, clients on 127.0.0.1:2379, peers on 127.0.0.1:2380.
    Serve(Box<ServeArgs>),
    /// Run a local cluster (3 members unless --nodes) on free loopback ports.
    Dev(dev::DevArgs),
    /// Generate load against concord or etcd and report latencies (like etcd's benchmark).
    Bench(bench::BenchArgs),
}

/// Flags with etcd's names and meanings; each can also come from CONCORD_<FLAG>.
#[derive(Args, Debug)]
struct ServeArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "CONCORD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: ./<name>.concord).
    #[arg(long, env = "CONCORD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, env = "CONCORD_LISTEN_CLIENT_URLS", default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(long, env = "CONCORD_ADVERTISE_CLIENT_URLS", default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "CONCORD_LISTEN_PEER_URLS", default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs, as the rest of the cluster knows them.
    #[arg(
        long,
        env = "CONCORD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380",
        value_delimiter = ','
    )]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=url,name=url,...
    #[arg(long, env = "CONCORD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// 'new' for a new cluster, 'existing' to join one.
    #[arg(long, env = "CONCORD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Initial cluster token; keeps clusters started from the same flags apart.
    #[arg(long, env = "CONCORD_INITIAL_CLUSTER_TOKEN", default_value = "concord-cluster")]
    initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "CONCORD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to time out.
    #[arg(long, env = "CONCORD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Number of committed entries to trigger a snapshot.
    #[arg(long, env = "CONCORD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Number of entries for a slow follower to catch up after compacting the raft log.
    #[arg(long, env = "CONCORD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5000)]
    experimental_snapshot_catchup_entries: u64,
    /// Size of one WAL segment file in bytes (for tests that watch segments go).
    #[arg(long, env = "CONCORD_WAL_SEGMENT_BYTES", default_value_t = 64 << 20, hide = true)]
    wal_segment_bytes: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "CONCORD_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "CONCORD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Duration of periodic watch progress notifications (etcd's flag; e.g. 10m, 5s, 100ms).
    #[arg(
        long,
        env = "CONCORD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_duration_flag
    )]
    experimental_watch_progress_notify_interval: std::time::Duration,
}

fn parse_duration_flag(text: &str) -> Result<std::time::Duration, concord_server::config::ConfigError> {
    concord_server::config::parse_duration(text)
}

impl ServeArgs {
    fn into_config(self) -> ServerConfig {
        let initial_cluster = self.initial_cluster.unwrap_or_else(|| {
            let urls: Vec<String> =
                self.initial_advertise_peer_urls.iter().map(|url| format!("{}={url}", self.name)).collect();
            urls.join(",")
        });
        ServerConfig {
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.concord", self.name))),
            name: self.name,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            wal_segment_bytes: self.wal_segment_bytes,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
}

/// A panic anywhere ends the process, as in etcd. Without this only the panicking thread
/// or task would die: a member whose Raft thread or apply task is gone would keep its
/// ports open and answer every request with an error, and a supervisor would see nothing
/// to restart. The default hook prints the message and backtrace first.
fn exit_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        tracing::error!("a thread panicked; stopping the member");
        std::process::exit(101);
    }));
}

/// mimalloc instead of glibc's malloc: the apply allocates and frees many short-lived
/// buffers (redb's copy-on-write pages, events), and glibc returned that memory to the
/// kernel and faulted it back in, zeroed, over and over (40 % of a 200k-key DeleteRange
/// was the kernel clearing pages: docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    init_logging();
    exit_on_panic();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            let config = (*args).into_config();
            let span = tracing::info_span!("member", name = %config.name);
            concord_server::run(config, stop_signal()).instrument(span).await.map_err(|e| e.to_string())
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Bench(args) => bench::run(args).await.map_err(|e| e.to_string()),
    };
    if let Err(error) = result {
        eprintln!("concord: {error}");
        std::process::exit(1);
    }
}
