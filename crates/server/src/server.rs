//! Starting and stopping a member: open the data directory, wire the Raft task, the apply
//! task and the transport together, and serve the client and peer gRPC endpoints until
//! asked to stop.
//!
//! Data directory layout: `raft/` (the WAL, its snapshot record and the state-machine
//! snapshot files, see `storage`), `kv.redb` (the state machine), `cluster` (the cluster
//! and member ids, and the membership this member was bootstrapped with, or that it
//! joined an existing cluster; once it exists the `--initial-cluster*` flags are ignored,
//! as with etcd), `members` (the member directory).
//!
//! Joining (`--initial-cluster-state existing`, after `etcdctl member add`): the member
//! asks the peers named in `--initial-cluster` for the cluster id and the member list,
//! finds its own id by its peer URLs, and starts with an empty bootstrap membership: the
//! leader's log tells it the membership. It never campaigns until the log makes it a
//! voter.
//!
//! A member removed from the cluster stops: when it applies its own removal, or when a
//! peer refuses its messages because it was removed. It logs etcd's "the member has been
//! permanently removed from the cluster" and `run` returns `ServerError::Removed`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use concord_api::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use concord_api::peerpb::{self, peer_client::PeerClient, peer_server::PeerServer};
use concord_api::v3electionpb::election_server::ElectionServer;
use concord_api::v3lockpb::lock_server::LockServer;
use concord_mvcc::Store;
use concord_raft::{Config, LogStore, NodeId, Raft};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{error, info, warn};

use crate::apply::{ApplyLoop, SnapshotPolicy, Waiters};
use crate::cluster::{member_from_wire, ClusterService, Reconfigurer};
use crate::config::{cluster_id, socket_address, MemberInfo, ServerConfig, ENVELOPE_OVERHEAD_BYTES};
use crate::coordination::election::ElectionService;
use crate::coordination::follow::EventSource;
use crate::coordination::lock::LockService;
use crate::coordination::Coordination;
use crate::errors::EtcdError;
use crate::fatal::Fatal;
use crate::kv::KvService;
use crate::lease::{min_lease_ttl, run_lease_task, LeaseService, Leases};
use crate::lessor::Lessor;
use crate::maintenance::MaintenanceService;
use crate::members::{Member, MemberDirectory};
use crate::node::{NodeLoop, NodeStatus};
use crate::peer_service::PeerService;
use crate::shared::Shared;
use crate::storage::{RaftStorage, RaftStorageError};
use crate::transport::{Transport, FRAME_LIMIT_BYTES, PEER_RECEIVE_WINDOW_BYTES};
use crate::watch::WatchService;

/// gRPC framing allowance on top of `--max-request-bytes`, as etcd grants.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the data directory {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
    #[error("the data directory {path} belongs to cluster member {member:x}, whose peer URLs are {recorded:?}, not --initial-advertise-peer-urls {advertised:?}; use the flags it was created with (or the URLs `member update` gave it), or another --data-dir")]
    WrongMember { path: String, member: u64, recorded: Vec<String>, advertised: Vec<String> },
    #[error("the data directory {path} is in use by another process")]
    Locked { path: String },
    #[error(transparent)]
    Wal(#[from] concord_wal::WalError),
    #[error(transparent)]
    Storage(#[from] RaftStorageError),
    #[error(transparent)]
    Store(#[from] concord_mvcc::MvccError),
    #[error(transparent)]
    Raft(#[from] concord_raft::RaftError),
    #[error("cannot listen on {url}: {error}")]
    Listen { url: String, error: std::io::Error },
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("{}", crate::transport::MEMBER_REMOVED)]
    Removed,
    #[error("stopping after a fatal error: {0}")]
    Fatal(#[from] Fatal),
}

/// How long a joining member keeps asking its peers for the membership.
const JOIN_DEADLINE: Duration = Duration::from_secs(15);
/// How long a removed member lingers so its last messages (a removed leader's handover)
/// go out: etcd waits 10 ticks of 100 ms.
const REMOVED_LINGER_TICKS: u32 = 10;

/// The membership recorded in the data directory on first start.
struct ClusterFile {
    cluster_id: u64,
    member_id: NodeId,
    /// The bootstrap membership (empty for a member that joined an existing cluster).
    members: BTreeMap<NodeId, MemberInfo>,
    /// This member joined an existing cluster: it has no bootstrap membership.
    joined: bool,
}

impl ClusterFile {
    fn encode(&self) -> String {
        let mut out = format!("cluster {:x}\nmember {:x}\n", self.cluster_id, self.member_id);
        if self.joined {
            out.push_str("joined\n");
        }
        for member in self.members.values() {
            out.push_str(&format!("peer {:x} {} {}\n", member.id, member.name, member.peer_urls.join(",")));
        }
        out
    }

    fn decode(text: &str) -> Option<ClusterFile> {
        let mut cluster = None;
        let mut me = None;
        let mut joined = false;
        let mut members = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next()? {
                "cluster" => cluster = u64::from_str_radix(words.next()?, 16).ok(),
                "member" => me = u64::from_str_radix(words.next()?, 16).ok(),
                "joined" => joined = true,
                "peer" => {
                    let id = u64::from_str_radix(words.next()?, 16).ok()?;
                    let name = words.next()?.to_string();
                    let peer_urls = words.next()?.split(',').map(str::to_string).collect();
                    members.insert(id, MemberInfo { id, name, peer_urls });
                }
                _ => return None,
            }
        }
        Some(ClusterFile { cluster_id: cluster?, member_id: me?, members, joined })
    }
}

fn io_error(path: &Path, error: std::io::Error) -> ServerError {
    ServerError::DataDir { path: path.display().to_string(), error }
}

/// Loads the membership from the data directory, or records the initial one.
/// Takes the data directory's lock for the life of the process: two members writing one
/// WAL would corrupt it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, ServerError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::Locked { path: dir.display().to_string() }),
        Err(std::fs::TryLockError::Error(error)) => Err(io_error(&path, error)),
    }
}

/// Snapshot copies staged for `etcdctl snapshot save` by a process that died mid-stream.
fn remove_stale_snapshot_copies(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot-") && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The cluster file and the members to start the directory with (used only if the data
/// directory has no `members` file yet).
struct Identity {
    cluster: ClusterFile,
    initial_members: Vec<Member>,
}

/// Loads the identity from the data directory, or creates it: from the flags for a new
/// cluster, from the peers for a member joining an existing one.
async fn load_or_create_cluster(config: &ServerConfig) -> Result<Identity, ServerError> {
    let dir = &config.data_dir;
    let path = dir.join("cluster");
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let file = ClusterFile::decode(&text).ok_or_else(|| {
            io_error(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, "unreadable cluster file"))
        })?;
        let initial_members = bootstrap_members(&file.members, dir);
        return Ok(Identity { cluster: file, initial_members });
    }
    let flag_member_id = config.validate()?;
    let identity = if config.initial_cluster_state == "existing" {
        join_existing_cluster(config).await?
    } else {
        let members = config.initial_members()?;
        let initial_members = bootstrap_members(&members, dir);
        let cluster = ClusterFile {
            cluster_id: cluster_id(members.keys().copied()),
            member_id: flag_member_id,
            members,
            joined: false,
        };
        Identity { cluster, initial_members }
    };
    // The directory first: once the cluster file exists, a restart expects it.
    MemberDirectory::open(dir.join("members"), || identity.initial_members.clone())
        .map_err(|e| io_error(&dir.join("members"), e))?;
    let temporary = dir.join("cluster.tmp");
    std::fs::write(&temporary, identity.cluster.encode()).map_err(|e| io_error(&temporary, e))?;
    std::fs::File::open(&temporary).and_then(|f| f.sync_all()).map_err(|e| io_error(&temporary, e))?;
    std::fs::rename(&temporary, &path).map_err(|e| io_error(&path, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))?;
    Ok(identity)
}

/// The bootstrap members as directory entries, with the client URLs an older data
/// directory recorded in `member_attributes` (before the directory existed).
fn bootstrap_members(members: &BTreeMap<NodeId, MemberInfo>, dir: &Path) -> Vec<Member> {
    let mut client_urls: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("member_attributes")) {
        for line in text.lines() {
            if let Some((id, urls)) = line.split_once(' ') {
                if let Ok(id) = u64::from_str_radix(id, 16) {
                    client_urls.insert(id, urls.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect());
                }
            }
        }
    }
    members
        .values()
        .map(|m| Member {
            id: m.id,
            // Names count as published only through the log (etcd's "started").
            name: if client_urls.contains_key(&m.id) { m.name.clone() } else { String::new() },
            peer_urls: m.peer_urls.clone(),
            client_urls: client_urls.remove(&m.id).unwrap_or_default(),
            is_learner: false,
        })
        .collect()
}

/// `--initial-cluster-state existing`: asks the other members of `--initial-cluster` for
/// the cluster id and the member list, and finds this member in it by its peer URLs (as
/// etcd does; `etcdctl member add` must have added it first).
async fn join_existing_cluster(config: &ServerConfig) -> Result<Identity, ServerError> {
    let mut own_urls = config.initial_advertise_peer_urls.clone();
    own_urls.sort();
    let peer_urls: Vec<String> =
        config.initial_members()?.into_values().filter(|m| m.peer_urls != own_urls).flat_map(|m| m.peer_urls).collect();
    if peer_urls.is_empty() {
        return Err(ServerError::Join(
            "--initial-cluster names no other member to ask for the cluster's membership".into(),
        ));
    }
    // A peer that has not applied `member add` yet does not list this member: ask again.
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut last_error = String::new();
    let (cluster_id, members, me) = 'ask: loop {
        for url in &peer_urls {
            match fetch_members(url).await {
                Ok(response) => {
                    let members: Vec<Member> = response.members.into_iter().map(member_from_wire).collect();
                    let found = members.iter().find(|m| {
                        let mut urls = m.peer_urls.clone();
                        urls.sort();
                        urls == own_urls
                    });
                    match found {
                        Some(me) => break 'ask (response.cluster_id, members.clone(), me.clone()),
                        None => {
                            last_error = format!(
                                "{url}: no member of cluster {:x} has the peer URLs {own_urls:?}; add this member \
                                 first (etcdctl member add {} --peer-urls={})",
                                response.cluster_id,
                                config.name,
                                own_urls.join(",")
                            )
                        }
                    }
                }
                Err(error) => last_error = format!("{url}: {error}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ServerError::Join(format!(
                "could not learn this member's place in the cluster from {peer_urls:?} (last answer: {last_error})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if me.is_started() {
        return Err(ServerError::Join(format!("member {:x} has already been bootstrapped", me.id)));
    }
    info!(member = %format!("{:x}", me.id), cluster = %format!("{cluster_id:x}"), "joining an existing cluster");
    let cluster = ClusterFile { cluster_id, member_id: me.id, members: BTreeMap::new(), joined: true };
    Ok(Identity { cluster, initial_members: members })
}

async fn fetch_members(url: &str) -> Result<peerpb::MembersResponse, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let response = PeerClient::new(channel).members(peerpb::MembersRequest {}).await.map_err(|e| e.to_string())?;
    Ok(response.into_inner())
}

/// Runs a member until `shutdown` resolves; then stops accepting requests, lets the Raft
/// task sync its log, and returns.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    config.validate_flags()?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let Identity { cluster, initial_members } = load_or_create_cluster(&config).await?;
    let member_id = cluster.member_id;
    let directory_path = config.data_dir.join("members");
    let directory =
        MemberDirectory::open(directory_path.clone(), || initial_members).map_err(|e| io_error(&directory_path, e))?;
    remove_stale_snapshot_copies(&config.data_dir);
    let wal_options = config.wal_options();
    let max_entry_bytes = wal_options.max_entry_data_bytes();
    let storage = RaftStorage::open(&config.data_dir.join("raft"), wal_options)?;
    let store = Arc::new(Store::open(config.data_dir.join("kv.redb"))?);
    // Before the checks below: a state machine restored from the snapshot brings the member
    // directory at the snapshot's index with it.
    storage.bring_up_to_snapshot(&store, &directory)?;
    let applied_index = store.applied_index();
    if directory.is_removed(member_id) {
        error!(member = %format!("{member_id:x}"), "{}", crate::transport::MEMBER_REMOVED);
        return Err(ServerError::Removed);
    }
    // The flags must describe the member whose data this is (its URLs as the cluster
    // knows them, which `member update` may have changed since it was created).
    if let Some(me) = directory.member(member_id) {
        let mut recorded = me.peer_urls.clone();
        recorded.sort();
        let mut advertised = config.initial_advertise_peer_urls.clone();
        advertised.sort();
        if recorded != advertised {
            return Err(ServerError::WrongMember {
                path: config.data_dir.display().to_string(),
                member: member_id,
                recorded,
                advertised,
            });
        }
    }

    // The bootstrap membership; a member that joined has none (the log brings it).
    let voters: Vec<NodeId> = if cluster.joined { Vec::new() } else { cluster.members.keys().copied().collect() };
    let mut raft_config = Config::new(member_id, voters);
    raft_config.election_tick = config.election_ticks();
    raft_config.heartbeat_tick = 1;
    raft_config.max_proposal_bytes = (config.max_request_bytes + ENVELOPE_OVERHEAD_BYTES) as u64;
    raft_config.max_entry_bytes = max_entry_bytes;
    raft_config.seed = member_id ^ std::process::id() as u64;
    let snapshot_index = storage.snapshot_meta().index;
    let state_dir = storage.state_dir().to_path_buf();
    let mut raft = Raft::new(raft_config, storage, applied_index)?;
    if raft.voters() == [member_id] {
        raft.campaign();
    }
    info!(
        member = %format!("{member_id:x}"),
        cluster = %format!("{:x}", cluster.cluster_id),
        data_dir = %config.data_dir.display(),
        applied_index,
        snapshot_index,
        first_index = raft.first_index(),
        last_index = raft.last_index(),
        "starting member"
    );

    let (requests_tx, requests_rx) = mpsc::channel(4096);
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let (apply_tx, apply_rx) = mpsc::unbounded_channel();
    // The Raft task takes each snapshot at once; room for a few, so that a state file
    // written to be sent is not dropped behind a periodic snapshot not yet taken.
    let (snapshots_tx, snapshots_rx) = mpsc::channel(4);
    let (status_tx, status_rx) = watch::channel(NodeStatus::default());
    let (applied_tx, applied_rx) = watch::channel(applied_index);
    let (events_tx, _) = broadcast::channel(1024);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let waiters = Waiters::default();
    let lessor = Arc::new(Lessor::default());
    let published_revision = Arc::new(std::sync::atomic::AtomicI64::new(store.current_revision()));
    let (removed_tx, removed_rx) = watch::channel(false);
    let transport = Transport::start(member_id, cluster.cluster_id, &directory.peer_addresses(), removed_tx);

    let tick_interval = Duration::from_millis(config.heartbeat_interval_ms);
    let node = NodeLoop {
        raft,
        requests: requests_rx,
        inbound: inbound_rx,
        transport,
        apply: apply_tx,
        snapshots: snapshots_rx,
        snapshot_catchup_entries: config.snapshot_catchup_entries,
        held_snapshot: Default::default(),
        status: status_tx,
        tick_interval,
        shutdown: shutdown_rx,
        directory: directory.clone(),
        waiters: waiters.clone(),
        applied: applied_rx.clone(),
    };
    // The Raft task gets a thread of its own: its fsyncs block, and nothing a client asks
    // of the other threads (a long state-machine read, say) may delay its heartbeats.
    let mut node_done =
        run_on_own_thread("concord-raft", node.run()).map_err(|error| io_error(&config.data_dir, error))?;
    let apply = ApplyLoop {
        member_id,
        directory: directory.clone(),
        store: store.clone(),
        batches: apply_rx,
        snapshots: SnapshotPolicy {
            every: config.snapshot_count.max(1),
            last_index: snapshot_index,
            dir: state_dir,
            made: snapshots_tx,
        },
        waiters: waiters.clone(),
        applied: applied_tx,
        gate: concord_member::ApplyGate::new(applied_index),
        events: events_tx.clone(),
        published_revision: published_revision.clone(),
        lessor: lessor.clone(),
    };
    // The apply task too: it applies each batch on its own thread, without handing it to
    // a blocking thread and back (two thread wake-ups on every write's path).
    let mut apply_done = match run_on_own_thread("concord-apply", apply.run()) {
        Ok(done) => done,
        Err(error) => {
            // The Raft thread runs already: stop it before giving up.
            let _ = shutdown_tx.send(true);
            let _ = node_done.await;
            return Err(io_error(&config.data_dir, error));
        }
    };

    let shared = Arc::new(Shared::new(
        member_id,
        cluster.cluster_id,
        store,
        requests_tx,
        waiters,
        applied_rx,
        status_rx,
        directory.clone(),
        config.max_request_bytes,
        config.max_txn_ops,
        Duration::from_millis(config.election_timeout_ms),
    ));
    let reconfigurer =
        Arc::new(Reconfigurer { shared: shared.clone(), cluster_token: config.initial_cluster_token.clone() });
    let election_timeout = Duration::from_millis(config.election_timeout_ms);
    let leases = Arc::new(Leases::new(shared.clone(), lessor, min_lease_ttl(election_timeout)));

    // Bind every listener before serving, so a port in use fails the start cleanly.
    let mut client_listeners = Vec::new();
    for url in &config.listen_client_urls {
        let listener = tokio::net::TcpListener::bind(socket_address(url))
            .await
            .map_err(|error| ServerError::Listen { url: url.clone(), error })?;
        client_listeners.push(listener);
    }
    let mut peer_listeners = Vec::new();
    for url in &config.listen_peer_urls {
        let listener = tokio::net::TcpListener::bind(socket_address(url))
            .await
            .map_err(|error| ServerError::Listen { url: url.clone(), error })?;
        peer_listeners.push(listener);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let events = EventSource {
        store: shared.store.clone(),
        events: events_tx.clone(),
        published_revision: published_revision.clone(),
        applied: shared.applied.clone(),
    };
    let coordination = Coordination::new(shared.clone(), leases.clone(), events, stop_rx.clone());
    let max_message = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut client_servers = Vec::new();
    for listener in client_listeners {
        let kv = KvServer::new(KvService { shared: shared.clone() })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(usize::MAX);
        let maintenance = MaintenanceServer::new(MaintenanceService {
            shared: shared.clone(),
            snapshot_dir: config.data_dir.clone(),
        });
        let cluster_service =
            ClusterServer::new(ClusterService { shared: shared.clone(), reconfigurer: reconfigurer.clone() });
        let lease = LeaseServer::new(LeaseService { leases: leases.clone() });
        let watch = WatchServer::new(WatchService {
            shared: shared.clone(),
            events: events_tx.clone(),
            published_revision: published_revision.clone(),
            progress_interval: config.watch_progress_notify_interval,
            stop: stop_rx.clone(),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
        let lock = LockServer::new(LockService { coordination: coordination.clone() })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(usize::MAX);
        let election = ElectionServer::new(ElectionService { coordination: coordination.clone() })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(usize::MAX);
        let mut stop = stop_rx.clone();
        let incoming = without_nagle(listener);
        client_servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(kv)
                .add_service(maintenance)
                .add_service(cluster_service)
                .add_service(lease)
                .add_service(watch)
                .add_service(lock)
                .add_service(election)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        ));
    }
    // Peer streams never end on their own, so peer servers are not shut down gracefully:
    // they keep running while in-flight client requests finish, then are stopped.
    let mut peer_servers = Vec::new();
    for listener in peer_listeners {
        let peer = PeerServer::new(PeerService {
            cluster_id: cluster.cluster_id,
            member_id,
            inbound: inbound_tx.clone(),
            directory: directory.clone(),
            reconfigurer: reconfigurer.clone(),
            leases: leases.clone(),
        })
        .max_decoding_message_size(FRAME_LIMIT_BYTES);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        // HTTP/2's default 64 KiB receive window would let a snapshot chunk through only
        // 64 KiB per round trip; the peer stream carries up to 4 chunks of 1 MiB in flight.
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(PEER_RECEIVE_WINDOW_BYTES)
            .initial_connection_window_size(PEER_RECEIVE_WINDOW_BYTES)
            .add_service(peer)
            .serve_with_incoming(incoming);
        peer_servers.push(tokio::spawn(server));
    }
    info!(clients = ?config.listen_client_urls, peers = ?config.listen_peer_urls, "serving");
    let lease_task = tokio::spawn(run_lease_task(leases.clone(), stop_rx.clone()));

    // Tell the cluster our client URLs (etcd's "publish"), retrying until it commits.
    let publisher = {
        let shared = shared.clone();
        let name = config.name.clone();
        let urls = config.advertise_client_urls.clone();
        tokio::spawn(async move {
            for attempt in 0u32..1000 {
                match shared.publish_attributes(&name, &urls).await {
                    Ok(()) => return,
                    Err(EtcdError::Stopped) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(20)))).await,
                }
            }
        })
    };

    // Either task may end by itself only on a fatal error: then the member stops too.
    let mut node_outcome = None;
    let mut apply_outcome = None;
    let removed = tokio::select! {
        _ = shutdown => false,
        _ = removal(member_id, directory.clone(), removed_rx) => true,
        received = &mut node_done => {
            node_outcome = Some(task_outcome(received));
            false
        }
        received = &mut apply_done => {
            apply_outcome = Some(task_outcome(received));
            false
        }
    };
    if let Some(Err(error)) = node_outcome.as_ref().or(apply_outcome.as_ref()) {
        error!("{error}");
    }
    if removed {
        error!(member = %format!("{member_id:x}"), "{}", crate::transport::MEMBER_REMOVED);
        tokio::time::sleep(tick_interval * REMOVED_LINGER_TICKS).await;
    }
    publisher.abort();
    lease_task.abort();
    info!("stopping: no new requests; syncing the log");
    let _ = stop_tx.send(true);
    // In-flight requests get a moment to finish before the Raft task stops.
    let grace = tokio::time::Instant::now() + Duration::from_secs(2);
    for server in client_servers {
        let _ = tokio::time::timeout_at(grace, server).await;
    }
    for server in &peer_servers {
        server.abort();
    }
    let _ = shutdown_tx.send(true);
    let node_outcome = match node_outcome {
        Some(outcome) => outcome,
        None => task_outcome(node_done.await),
    };
    // The Raft task is gone, so the apply channel closes: the apply task drains it and
    // makes the state machine durable.
    let apply_outcome = match apply_outcome {
        Some(outcome) => outcome,
        None => task_outcome(apply_done.await),
    };
    info!("stopped");
    node_outcome?;
    apply_outcome?;
    if removed {
        return Err(ServerError::Removed);
    }
    Ok(())
}

/// Runs `task` to its end on a new thread with a single-threaded runtime of its own (tasks
/// it spawns run there too, and blocking calls in it block only it). The receiver gets
/// the task's outcome when it ends (a closed receiver: the thread panicked).
fn run_on_own_thread<F>(name: &str, task: F) -> std::io::Result<tokio::sync::oneshot::Receiver<Result<(), Fatal>>>
where
    F: std::future::Future<Output = Result<(), Fatal>> + Send + 'static,
{
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(task),
            Err(error) => Err(Fatal::Runtime(error)),
        };
        let _ = done_tx.send(outcome);
    })?;
    Ok(done)
}

/// What a task run by `run_on_own_thread` ended with.
fn task_outcome(
    received: Result<Result<(), Fatal>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), ServerError> {
    match received {
        Ok(outcome) => outcome.map_err(ServerError::from),
        Err(_) => Err(ServerError::Fatal(Fatal::Panicked)),
    }
}

/// Accepted client connections with Nagle's algorithm off. Responses are small frames
/// written when ready (a watch event, a keep-alive answer, a read): with Nagle on, one
/// written while an earlier one is unacknowledged waits for the client's delayed ACK,
/// 40 ms on Linux (measured: put→event took 44 ms at the median instead of about 1 ms).
fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Resolves once this member is known to be removed from the cluster: it applied its own
/// removal, or a peer refused its messages for that reason.
async fn removal(member_id: NodeId, directory: MemberDirectory, mut peer_says_removed: watch::Receiver<bool>) {
    let mut changes = directory.subscribe();
    let mut transport_running = true;
    loop {
        if transport_running && *peer_says_removed.borrow_and_update() {
            warn!("a peer refused this member's messages: it was removed from the cluster");
            return;
        }
        if directory.is_removed(member_id) {
            return;
        }
        tokio::select! {
            changed = peer_says_removed.changed(), if transport_running => transport_running = changed.is_ok(),
            changed = changes.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}
