//! The end-to-end harness: a cluster of real `concord serve` processes on free loopback
//! ports, each member with its own data directory and log file in one temporary directory.
//!
//! - `Cluster::start(n)` (or `Cluster::builder(n).arg(..).start()` for extra flags) spawns
//!   `n` members and waits until every running member reports the same leader.
//! - `kill` sends SIGKILL, `terminate` sends SIGTERM and returns the exit status, `restart`
//!   starts a stopped member again with the same flags and data directory; `pause` and
//!   `resume` freeze and thaw a process (SIGSTOP, SIGCONT).
//! - `add_member` prepares a new member (ports, data directory) to join with
//!   `--initial-cluster-state existing`, `start_joining` starts it; `wait_exit` waits for
//!   a member that stops by itself (removed from the cluster); `set_peer_port` gives a
//!   stopped member new peer URLs (after `member update`).
//! - Every wait has a deadline and fails saying what it waited for, with the tail of each
//!   member's log.
//! - Dropping the cluster kills and reaps every process it started; when the test is
//!   failing it also prints the tail of every member's log.

#![allow(dead_code)] // each test binary uses a different part

use std::fmt::Debug;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
pub use tonic::Code;

/// Raft timing used by every test cluster (fast, so elections take well under a second).
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: u64 = 500;
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(ELECTION_MS);
/// Longest a cluster may take to agree on a leader (start, restart, or after a crash).
pub const LEADER_DEADLINE: Duration = Duration::from_secs(15);
/// Per-request timeout of the clients the harness hands out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Ports handed out by this test process, so two clusters started at once never share one.
static PORTS_HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static CLUSTERS_STARTED: AtomicU64 = AtomicU64::new(0);

/// `n` loopback ports that were free a moment ago (the OS picks them; all are held until
/// all are picked, so they are distinct).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut handed_out = PORTS_HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().expect("local address").port();
        held.push(listener);
        if !handed_out.contains(&port) {
            handed_out.push(port);
            ports.push(port);
        }
    }
    ports
}

/// One member: its flags' values and, while it runs, its process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Member id as reported in response headers; 0 until the member has answered.
    pub id: u64,
    /// `--initial-cluster` of a member that joins an existing cluster (otherwise the
    /// cluster's), and whether it joins.
    join_cluster: Option<String>,
    child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

pub struct ClusterBuilder {
    size: usize,
    args: Vec<String>,
    server: Option<PathBuf>,
}

impl ClusterBuilder {
    /// An extra flag (or flag value) for every member, e.g. `--max-txn-ops`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Every member snapshots every `count` applied entries and keeps `catchup` entries
    /// behind each snapshot: a member down for a few hundred writes then needs a snapshot.
    pub fn snapshot_every(self, count: u64, catchup: u64) -> Self {
        self.arg("--snapshot-count")
            .arg(count.to_string())
            .arg("--experimental-snapshot-catchup-entries")
            .arg(catchup.to_string())
    }

    /// Runs another server binary with etcd's flags instead of concord (`/usr/bin/etcd`, to
    /// compare): a binary whose name starts with `etcd` gets no `serve` verb.
    pub fn server(mut self, path: impl Into<PathBuf>) -> Self {
        self.server = Some(path.into());
        self
    }

    /// Starts every member and waits until they agree on a leader.
    pub async fn start(self) -> Cluster {
        let number = CLUSTERS_STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new().prefix("concord-e2e-").tempdir().expect("create a temporary directory");
        let ports = free_ports(2 * self.size);
        let members: Vec<Member> = (0..self.size)
            .map(|i| Member {
                name: format!("n{}", i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("n{}", i + 1)),
                log_path: dir.path().join(format!("n{}.log", i + 1)),
                id: 0,
                join_cluster: None,
                child: None,
            })
            .collect();
        let initial_cluster: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        let server = self.server.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_concord")));
        let mut cluster = Cluster {
            members,
            server,
            args: self.args,
            initial_cluster: initial_cluster.join(","),
            token: format!("e2e-{}-{number}", std::process::id()),
            dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster.wait_for_leader().await;
        cluster
    }
}

/// A running cluster of real processes; see the module documentation.
pub struct Cluster {
    pub members: Vec<Member>,
    /// The server binary (concord unless the builder named another).
    server: PathBuf,
    args: Vec<String>,
    initial_cluster: String,
    token: String,
    // Last, so the directory goes after the processes are reaped.
    dir: tempfile::TempDir,
}

impl Cluster {
    pub fn builder(size: usize) -> ClusterBuilder {
        ClusterBuilder { size, args: Vec::new(), server: None }
    }

    pub async fn start(size: usize) -> Cluster {
        Cluster::builder(size).start().await
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The command line of member `i` (the same on every start).
    pub fn command_line(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let is_etcd = self.server.file_name().is_some_and(|name| name.to_string_lossy().starts_with("etcd"));
        let mut args: Vec<String> = if is_etcd { Vec::new() } else { vec!["serve".into()] };
        args.extend([
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            m.client_url(),
            "--advertise-client-urls".into(),
            m.client_url(),
            "--listen-peer-urls".into(),
            m.peer_url(),
            "--initial-advertise-peer-urls".into(),
            m.peer_url(),
            "--initial-cluster".into(),
            m.join_cluster.clone().unwrap_or_else(|| self.initial_cluster.clone()),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--heartbeat-interval".into(),
            HEARTBEAT_MS.to_string(),
            "--election-timeout".into(),
            ELECTION_MS.to_string(),
        ]);
        if m.join_cluster.is_some() {
            args.extend(["--initial-cluster-state".into(), "existing".into()]);
        }
        args.extend(self.args.iter().cloned());
        args
    }

    /// Prepares (does not start) a new member `name` on fresh ports; returns its index.
    /// Add it to the cluster (`member add`) with its `peer_url()`, then `start_joining`.
    pub fn add_member(&mut self, name: &str) -> usize {
        let ports = free_ports(2);
        self.members.push(Member {
            name: name.to_string(),
            client_port: ports[0],
            peer_port: ports[1],
            data_dir: self.dir.path().join(name),
            log_path: self.dir.path().join(format!("{name}.log")),
            id: 0,
            join_cluster: None,
            child: None,
        });
        self.members.len() - 1
    }

    /// Starts member `i` with `--initial-cluster-state existing` and `initial_cluster`
    /// (every current member and itself, as `etcdctl member add` prints it).
    pub fn start_joining(&mut self, i: usize, initial_cluster: &str) {
        self.members[i].join_cluster = Some(initial_cluster.to_string());
        self.spawn(i);
    }

    /// `name=peer URL` for each of the given members, comma-separated.
    pub fn initial_cluster_of(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|&i| format!("{}={}", self.members[i].name, self.members[i].peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits (at most `limit`) for member `i` to exit by itself; returns its status.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> ExitStatus {
        let name = self.members[i].name.clone();
        let mut child = self.members[i].child.take().unwrap_or_else(|| panic!("{name} is not running"));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("poll a child process") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not exit within {limit:?}\n{}", self.log_tails(40));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives a stopped member a new peer port (its flags follow on the next start).
    pub fn set_peer_port(&mut self, i: usize, port: u16) {
        assert!(self.members[i].child.is_none(), "{} is running", self.members[i].name);
        self.members[i].peer_port = port;
        let all: Vec<usize> = (0..self.members.len()).collect();
        let joined = self.members[i].join_cluster.is_some();
        let initial_cluster = self.initial_cluster_of(&all);
        if joined {
            self.members[i].join_cluster = Some(initial_cluster);
        } else {
            self.initial_cluster = initial_cluster;
        }
    }

    /// The text of member `i`'s log file.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_path).unwrap_or_default()
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "{} is already running", self.members[i].name);
        let args = self.command_line(i);
        let member = &mut self.members[i];
        let mut log =
            OpenOptions::new().create(true).append(true).open(&member.log_path).expect("open the member's log file");
        writeln!(log, "=== harness: starting {} ===", member.name).expect("write the log file");
        let stderr = log.try_clone().expect("clone the log file handle");
        let child = Command::new(&self.server)
            .args(&args)
            .env_remove("CONCORD_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .expect("start the concord binary");
        member.child = Some(child);
    }

    /// Indexes of the members whose process is running (as far as the harness knows).
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| self.members[i].child.is_some()).collect()
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Whether member `i`'s process is alive: started by the harness and not exited
    /// (polled, so a member that ended by itself reads as not running).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(child) => child.try_wait().expect("poll a child process").is_none(),
            None => false,
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// A client that talks to member `i` only.
    pub async fn client(&self, i: usize) -> Client {
        self.client_for(&[i]).await
    }

    /// A client that balances over the given members.
    pub async fn client_for(&self, members: &[usize]) -> Client {
        let endpoints: Vec<String> = members.iter().map(|&i| self.endpoint(i)).collect();
        let options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        within(Duration::from_secs(10), "connecting a client", Client::connect(endpoints, Some(options)))
            .await
            .expect("connect an etcd client")
    }

    /// Index of the member with this id.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id && id != 0)
    }

    /// Fails the test at once if a member the harness started has exited by itself.
    fn check_alive(&mut self) {
        for i in 0..self.members.len() {
            let exited = match self.members[i].child.as_mut() {
                Some(child) => child.try_wait().expect("poll a child process"),
                None => None,
            };
            if let Some(status) = exited {
                self.members[i].child = None;
                panic!("{} exited unexpectedly with {status}\n{}", self.members[i].name, self.log_tails(40));
            }
        }
    }

    /// Waits until every running member answers Status and all report the same leader,
    /// which is itself running; returns its index. Learns member ids on the way.
    pub async fn wait_for_leader(&mut self) -> usize {
        let running = self.running();
        self.wait_for_leader_among(&running).await
    }

    /// As `wait_for_leader`, asking only the given members.
    pub async fn wait_for_leader_among(&mut self, members: &[usize]) -> usize {
        let deadline = Instant::now() + LEADER_DEADLINE;
        let mut clients = Vec::new();
        for &i in members {
            clients.push((i, self.client(i).await));
        }
        let mut last = String::from("no answer yet");
        loop {
            self.check_alive();
            let mut leaders = Vec::new();
            for (i, client) in clients.iter_mut() {
                match tokio::time::timeout(Duration::from_secs(1), client.status()).await {
                    Ok(Ok(status)) => {
                        if let Some(header) = status.header() {
                            self.members[*i].id = header.member_id();
                        }
                        leaders.push(status.leader());
                    }
                    Ok(Err(error)) => {
                        last = format!("{}: {error}", self.members[*i].name);
                        break;
                    }
                    Err(_) => {
                        last = format!("{}: Status timed out", self.members[*i].name);
                        break;
                    }
                }
            }
            if leaders.len() == clients.len() {
                let leader = leaders[0];
                if leader != 0 && leaders.iter().all(|&l| l == leader) {
                    if let Some(index) = self.index_of(leader) {
                        if members.contains(&index) {
                            return index;
                        }
                    }
                    last = format!("leader {leader:x} is not among the members asked");
                } else {
                    last = format!("leaders reported: {leaders:x?}");
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no leader agreed on by {:?} within {LEADER_DEADLINE:?} (last: {last})\n{}",
                    members.iter().map(|&i| &self.members[i].name).collect::<Vec<_>>(),
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Indexes of the running members other than `leader`.
    pub fn followers(&self, leader: usize) -> Vec<usize> {
        self.running().into_iter().filter(|&i| i != leader).collect()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, i: usize) {
        let mut child =
            self.members[i].child.take().unwrap_or_else(|| panic!("{} is not running", self.members[i].name));
        let _ = child.kill();
        child.wait().expect("reap a killed member");
    }

    /// SIGTERM, then wait (at most `limit`) for the process to exit; returns its status.
    pub fn terminate(&mut self, i: usize, limit: Duration) -> ExitStatus {
        self.signal(i, "-TERM");
        self.wait_exit(i, limit)
    }

    /// SIGSTOP: the process stays, frozen (its sockets stay open, nothing is answered).
    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT: a paused member goes on where it stopped.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&mut self, i: usize, signal: &str) {
        let name = &self.members[i].name;
        let child = self.members[i].child.as_ref().unwrap_or_else(|| panic!("{name} is not running"));
        let sent = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill {signal} {name} failed: {sent}");
    }

    /// Starts a stopped member again with the same flags and data directory.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// The last `lines` lines of every member's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log_path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {} ({}) last {} lines ---\n", m.name, m.log_path.display(), all.len() - start));
            for line in &all[start..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(60));
        }
    }
}

/// Runs `future`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Calls `attempt` every 50 ms until it returns `Ok`, failing the test after `limit` with
/// the last error.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(error)) => error,
            Err(_) => "attempt timed out".to_string(),
        };
        if Instant::now() > deadline {
            panic!("gave up after {limit:?} waiting for {what}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gRPC code and message of an etcd-client error, if it carries a status.
pub fn grpc_status(error: &etcd_client::Error) -> Option<(Code, String)> {
    match error {
        etcd_client::Error::GRpcStatus(status) => Some((status.code(), status.message().to_string())),
        _ => None,
    }
}

/// Asserts that `result` failed with exactly this gRPC code and message.
#[track_caller]
pub fn assert_status<T: Debug>(result: Result<T, etcd_client::Error>, code: Code, message: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} {message:?}, got success: {value:?}"),
        Err(error) => match grpc_status(&error) {
            Some((c, m)) => assert!(c == code && m == message, "expected {code:?} {message:?}, got {c:?} {m:?}"),
            None => panic!("expected {code:?} {message:?}, got a non-gRPC error: {error}"),
        },
    }
}

/// Values of a get response as strings, in order.
pub fn values(response: &etcd_client::GetResponse) -> Vec<String> {
    response.kvs().iter().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).collect()
}

/// Keys of a get response as strings, in order.
pub fn keys(response: &etcd_client::GetResponse) -> Vec<String> {
    response.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

/// The revision in a response header (0 if absent).
pub fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or(0)
}

/// The cluster's current revision, read through `client` (a linearizable count-only get).
pub async fn current_revision(client: &mut etcd_client::Client) -> i64 {
    let options = etcd_client::GetOptions::new().with_count_only();
    let response = client.get("revision-probe", Some(options)).await.expect("read the revision");
    revision(response.header())
}

/// Waits until every running member can hash at `revision` (it has applied that far),
/// then asserts the hashes agree.
pub async fn assert_hash_kv_agrees(cluster: &Cluster, revision: i64) {
    let mut hashes = Vec::new();
    for member in cluster.running() {
        let client = cluster.client(member).await;
        let name = cluster.members[member].name.clone();
        let hash = eventually(Duration::from_secs(15), &format!("{name} to reach revision {revision}"), || {
            let mut client = client.clone();
            async move { client.hash_kv(revision).await.map_err(|e| e.to_string()) }
        })
        .await;
        assert_eq!(hash.hash_revision(), revision, "{name} hashed another revision");
        hashes.push((name, hash.hash()));
    }
    assert!(hashes.iter().all(|(_, h)| *h == hashes[0].1), "HashKV at revision {revision} differs: {hashes:x?}");
}
