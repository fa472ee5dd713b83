//! A member's configuration, with etcd's flag names and meanings, and the cluster identity
//! derived from it.
//!
//! Member and cluster ids are derived the way etcd derives them (a hash of the peer URLs
//! and the cluster token; the cluster id from the member ids), so every member computes
//! the same ids from the same `--initial-cluster` without talking to the others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use concord_raft::NodeId;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=url,name=url`: every member of the initial cluster.
    pub initial_cluster: String,
    /// `new` or `existing`.
    pub initial_cluster_state: String,
    pub initial_cluster_token: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    /// Entries kept in the log behind a snapshot for slow followers to catch up from
    /// (etcd 3.5's `--experimental-snapshot-catchup-entries`, default 5000).
    pub snapshot_catchup_entries: u64,
    /// Size of a WAL segment file (64 MiB; smaller only in tests, to see segments go).
    pub wal_segment_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How often a `progress_notify` watch that saw no event gets an empty response
    /// (etcd's `--experimental-watch-progress-notify-interval`, default 10 minutes).
    pub watch_progress_notify_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.concord"),
            listen_client_urls: vec!["http://127.0.0.1:2379".into()],
            advertise_client_urls: vec!["http://127.0.0.1:2379".into()],
            listen_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_cluster: "default=http://127.0.0.1:2380".into(),
            initial_cluster_state: "new".into(),
            initial_cluster_token: "concord-cluster".into(),
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5000,
            wal_segment_bytes: 64 << 20,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            watch_progress_notify_interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--initial-cluster has a malformed item {0:?} (expected name=url)")]
    BadClusterItem(String),
    #[error("--initial-cluster does not name this member ({0:?})")]
    NotInCluster(String),
    #[error(
        "--initial-advertise-peer-urls {advertised:?} do not match --initial-cluster's URLs for {name:?} ({listed:?})"
    )]
    PeerUrlMismatch { name: String, advertised: Vec<String>, listed: Vec<String> },
    // The three timing texts are etcd 3.4's (etcdmain "error verifying flags").
    #[error("--heartbeat-interval must be >0 (set to {0}ms)")]
    ZeroHeartbeat(u64),
    #[error("--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat}ms]")]
    BadTimeouts { heartbeat: u64, election: u64 },
    #[error("--election-timeout[{0}ms] is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms")]
    ElectionTimeoutTooLong(u64),
    #[error("--initial-cluster-state must be 'new' or 'existing', not {0:?}")]
    BadClusterState(String),
    #[error("invalid duration {0:?} (expected a number with a unit, as 10m, 5s, 100ms or 1h30m)")]
    BadDuration(String),
    #[error("a duration must be greater than zero")]
    ZeroDuration,
    #[error("{flag} has an invalid URL {url:?}: {reason}")]
    BadUrl { flag: &'static str, url: String, reason: &'static str },
    #[error(
        "--max-request-bytes {requested} is above the largest request the write-ahead log stores in one entry ({limit} bytes)"
    )]
    RequestTooLarge { requested: usize, limit: u64 },
    #[error("--max-request-bytes must be at least 1")]
    ZeroRequestLimit,
}

/// The longest election timeout etcd accepts (etcdmain's `maxElectionMs`).
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// Bytes a request's envelope (request id, kind) adds to it in a log entry.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 1024;

/// One member as the initial cluster describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl ServerConfig {
    /// The members of `--initial-cluster`, keyed by member id.
    pub fn initial_members(&self) -> Result<BTreeMap<NodeId, MemberInfo>, ConfigError> {
        let mut urls_by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in self.initial_cluster.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, url) = item.split_once('=').ok_or_else(|| ConfigError::BadClusterItem(item.into()))?;
            check_url("--initial-cluster", url)?;
            urls_by_name.entry(name.to_string()).or_default().push(url.to_string());
        }
        let mut members = BTreeMap::new();
        for (name, mut urls) in urls_by_name {
            urls.sort();
            let id = member_id(&urls, &self.initial_cluster_token);
            members.insert(id, MemberInfo { id, name, peer_urls: urls });
        }
        Ok(members)
    }

    /// Checks the flags that matter on every start (a member restarted on its data
    /// directory ignores `--initial-cluster*`, as etcd does).
    pub fn validate_flags(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::ZeroHeartbeat(self.heartbeat_interval_ms));
        }
        if self.election_timeout_ms < self.heartbeat_interval_ms.saturating_mul(5) {
            return Err(ConfigError::BadTimeouts {
                heartbeat: self.heartbeat_interval_ms,
                election: self.election_timeout_ms,
            });
        }
        if self.election_timeout_ms > MAX_ELECTION_TIMEOUT_MS {
            return Err(ConfigError::ElectionTimeoutTooLong(self.election_timeout_ms));
        }
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            return Err(ConfigError::BadClusterState(self.initial_cluster_state.clone()));
        }
        for url in &self.listen_client_urls {
            check_url("--listen-client-urls", url)?;
        }
        for url in &self.listen_peer_urls {
            check_url("--listen-peer-urls", url)?;
        }
        for url in &self.initial_advertise_peer_urls {
            check_url("--initial-advertise-peer-urls", url)?;
        }
        for url in &self.advertise_client_urls {
            check_url("--advertise-client-urls", url)?;
        }
        let limit = self.wal_options().max_entry_data_bytes().saturating_sub(ENVELOPE_OVERHEAD_BYTES as u64);
        if self.max_request_bytes == 0 {
            return Err(ConfigError::ZeroRequestLimit);
        }
        if self.max_request_bytes as u64 > limit {
            return Err(ConfigError::RequestTooLarge { requested: self.max_request_bytes, limit });
        }
        Ok(())
    }

    /// Checks every flag, `--initial-cluster*` included (first start); returns the id
    /// `--initial-cluster` gives this member.
    pub fn validate(&self) -> Result<NodeId, ConfigError> {
        self.validate_flags()?;
        let members = self.initial_members()?;
        let me = members
            .values()
            .find(|m| m.name == self.name)
            .ok_or_else(|| ConfigError::NotInCluster(self.name.clone()))?;
        let mut advertised = self.initial_advertise_peer_urls.clone();
        advertised.sort();
        if advertised != me.peer_urls {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                advertised,
                listed: me.peer_urls.clone(),
            });
        }
        Ok(me.id)
    }

    /// The write-ahead log's options these flags give.
    pub fn wal_options(&self) -> concord_wal::WalOptions {
        concord_wal::WalOptions { segment_bytes: self.wal_segment_bytes, ..concord_wal::WalOptions::default() }
    }

    /// Ticks per election timeout (the core counts time in heartbeat ticks).
    pub fn election_ticks(&self) -> u32 {
        (self.election_timeout_ms / self.heartbeat_interval_ms).max(2) as u32
    }
}

fn check_url(flag: &'static str, url: &str) -> Result<(), ConfigError> {
    let rest = url.strip_prefix("http://").ok_or(ConfigError::BadUrl {
        flag,
        url: url.into(),
        reason: "only http:// is supported",
    })?;
    match rest.trim_end_matches('/').rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ConfigError::BadUrl { flag, url: url.into(), reason: "expected http://host:port" }),
    }
}

/// The host:port part of an http URL (validated by `check_url`).
pub fn socket_address(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// FNV-1a, 64 bits: small, stable across versions and platforms.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for byte in bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A member's id: a hash of its sorted peer URLs and the cluster token (never 0).
pub fn member_id(sorted_peer_urls: &[String], token: &str) -> NodeId {
    let mut hash = FNV_OFFSET;
    for url in sorted_peer_urls {
        hash = fnv1a(url.as_bytes(), hash);
        hash = fnv1a(b"\n", hash);
    }
    hash = fnv1a(token.as_bytes(), hash);
    hash.max(1)
}

/// The id for a member added at run time (MemberAdd): the id its URLs would get in
/// `--initial-cluster` unless that one is `taken` (in use, or once used by a removed
/// member: ids are never reused), else the first free id of the same hash salted with
/// 1, 2, ... Deterministic, so a retried request gets the same id.
pub fn new_member_id(sorted_peer_urls: &[String], token: &str, taken: impl Fn(NodeId) -> bool) -> NodeId {
    let mut id = member_id(sorted_peer_urls, token);
    let mut salt: u64 = 0;
    while taken(id) {
        salt += 1;
        id = fnv1a(&salt.to_be_bytes(), member_id(sorted_peer_urls, token)).max(1);
    }
    id
}

/// Whether `url` is a peer or client URL concord can use (`http://host:port`).
pub fn is_valid_url(url: &str) -> bool {
    check_url("", url).is_ok()
}

/// The cluster's id: a hash of its initial member ids.
pub fn cluster_id(member_ids: impl Iterator<Item = NodeId>) -> u64 {
    let mut ids: Vec<NodeId> = member_ids.collect();
    ids.sort_unstable();
    let mut hash = FNV_OFFSET;
    for id in ids {
        hash = fnv1a(&id.to_be_bytes(), hash);
    }
    hash.max(1)
}

/// Parses a duration as Go's `time.ParseDuration` does for etcd's duration flags: one or
/// more decimal numbers, each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g.
/// `10m`, `1.5s`, `1h30m`. Zero is refused: an interval of zero would spin.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    let duration = Duration::from_secs_f64(total);
    if duration.is_zero() {
        return Err(ConfigError::ZeroDuration);
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_valid_single_member_cluster() {
        let config = ServerConfig::default();
        let id = config.validate().unwrap();
        assert_eq!(config.initial_members().unwrap().len(), 1);
        assert_ne!(id, 0);
    }

    #[test]
    fn ids_depend_on_urls_and_token_only() {
        let a = member_id(&["http://a:1".into()], "t");
        assert_eq!(a, member_id(&["http://a:1".into()], "t"));
        assert_ne!(a, member_id(&["http://a:1".into()], "u"));
        assert_ne!(a, member_id(&["http://a:2".into()], "t"));
    }

    #[test]
    fn run_time_member_ids_avoid_taken_ones() {
        let urls = vec!["http://a:1".to_string()];
        let first = new_member_id(&urls, "t", |_| false);
        assert_eq!(first, member_id(&urls, "t"));
        let second = new_member_id(&urls, "t", |id| id == first);
        assert_ne!(second, first);
        assert_eq!(second, new_member_id(&urls, "t", |id| id == first), "deterministic");
    }

    #[test]
    fn bad_flags_are_refused_with_clear_errors() {
        let config = ServerConfig { initial_cluster: "x".into(), ..Default::default() };
        assert_eq!(config.validate(), Err(ConfigError::BadClusterItem("x".into())));
        let config = ServerConfig { name: "other".into(), ..Default::default() };
        assert_eq!(config.validate(), Err(ConfigError::NotInCluster("other".into())));
        let config = ServerConfig { election_timeout_ms: 400, heartbeat_interval_ms: 100, ..Default::default() };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        let config = ServerConfig { heartbeat_interval_ms: 0, ..Default::default() };
        assert_eq!(config.validate().unwrap_err().to_string(), "--heartbeat-interval must be >0 (set to 0ms)");
        let config = ServerConfig { election_timeout_ms: 60_000, ..Default::default() };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
        let config = ServerConfig { election_timeout_ms: 50_000, ..Default::default() };
        assert!(config.validate().is_ok(), "etcd's limit itself is allowed");
        let config = ServerConfig { advertise_client_urls: vec!["foo".into()], ..Default::default() };
        assert!(matches!(config.validate(), Err(ConfigError::BadUrl { flag: "--advertise-client-urls", .. })));
        let config = ServerConfig { listen_client_urls: vec!["https://x:1".into()], ..Default::default() };
        assert!(matches!(config.validate(), Err(ConfigError::BadUrl { .. })));
    }

    #[test]
    fn durations_parse_as_go_does() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "10", "s", "10x", "1..5s", "-1s"] {
            assert_eq!(parse_duration(bad), Err(ConfigError::BadDuration(bad.into())), "{bad:?}");
        }
        assert_eq!(parse_duration("0s"), Err(ConfigError::ZeroDuration));
    }
}
