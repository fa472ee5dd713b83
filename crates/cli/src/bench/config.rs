//! The flags every `concord bench` workload shares, and their validation.
//!
//! The flag names and defaults are those of etcd's `benchmark` tool, so that a command line
//! written for one runs against the other with the same meaning. Clap parses the text; this
//! module turns the parsed flags into a [`Settings`] whose invariants (at least one
//! connection and one client, a bounded run, keys that fit their size) hold from then on,
//! so the runner and the workloads never check them again.

use std::time::Duration;

use clap::Args;

use super::error::BenchError;
use super::keys::KeyGen;

/// How many requests a run sends when neither `--total` nor `--duration` is given.
pub const DEFAULT_TOTAL: u64 = 10_000;
/// Upper bounds that keep a typo from opening a million sockets or streams.
pub const MAX_CONNS: usize = 1_024;
pub const MAX_CLIENTS: usize = 100_000;
pub const MAX_KEY_SIZE: usize = 1 << 20;
pub const MAX_VAL_SIZE: usize = 64 << 20;

/// Flags common to every workload; `global` so they may come before or after the workload.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// gRPC endpoints, comma-separated (host:port or http://host:port).
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Number of gRPC connections (HTTP/2 channels), shared round-robin by the clients.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients, i.e. requests in flight at once.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Total number of requests (default 10000 unless --duration is given).
    #[arg(long, global = true)]
    pub total: Option<u64>,
    /// Run for this long instead of a number of requests (e.g. 10s, 1m30s).
    #[arg(long, global = true, value_parser = parse_duration_flag)]
    pub duration: Option<Duration>,
    /// Maximum requests per second over all clients (0 = unlimited).
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,
    /// Size of each key in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub key_size: usize,
    /// Size of each value in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys the workload writes (or reads) in.
    #[arg(long, global = true, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys 0, 1, 2, ... (wrapping at --key-space-size) instead of random ones.
    #[arg(long, global = true)]
    pub sequential_keys: bool,
    /// Print one JSON object instead of the text summary (and no progress bar).
    #[arg(long, global = true)]
    pub json: bool,
}

fn parse_duration_flag(text: &str) -> Result<Duration, concord_server::config::ConfigError> {
    concord_server::config::parse_duration(text)
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests have been sent (and answered).
    Total(u64),
    /// Once this much time has passed since the first request.
    Duration(Duration),
}

/// Validated common settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Endpoint URIs with a scheme (`http://host:port`).
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub stop: Stop,
    /// Requests per second over all clients; `None` = unlimited.
    pub rate: Option<u64>,
    pub keys: KeyGen,
    pub val_size: usize,
    pub json: bool,
}

impl CommonArgs {
    /// Checks every flag and their combinations; the first problem found is the error.
    pub fn validate(&self) -> Result<Settings, BenchError> {
        let endpoints = normalize_endpoints(&self.endpoints)?;
        let conns = bounded("--conns", self.conns, MAX_CONNS)?;
        let clients = bounded("--clients", self.clients, MAX_CLIENTS)?;
        let stop = stop_condition(self.total, self.duration)?;
        if self.val_size > MAX_VAL_SIZE {
            return Err(BenchError::Flag(format!("--val-size must be at most {MAX_VAL_SIZE}, not {}", self.val_size)));
        }
        if self.key_size > MAX_KEY_SIZE {
            return Err(BenchError::Flag(format!("--key-size must be at most {MAX_KEY_SIZE}, not {}", self.key_size)));
        }
        let keys = KeyGen::new(self.key_size, self.key_space_size, self.sequential_keys)?;
        let rate = (self.rate > 0).then_some(self.rate);
        Ok(Settings { endpoints, conns, clients, stop, rate, keys, val_size: self.val_size, json: self.json })
    }
}

/// `value` must be in `1..=max`.
fn bounded(flag: &str, value: usize, max: usize) -> Result<usize, BenchError> {
    if value == 0 {
        return Err(BenchError::Flag(format!("{flag} must be at least 1")));
    }
    if value > max {
        return Err(BenchError::Flag(format!("{flag} must be at most {max}, not {value}")));
    }
    Ok(value)
}

fn stop_condition(total: Option<u64>, duration: Option<Duration>) -> Result<Stop, BenchError> {
    match (total, duration) {
        (Some(_), Some(_)) => Err(BenchError::Flag("give --total or --duration, not both".into())),
        (Some(0), None) => Err(BenchError::Flag("--total must be at least 1".into())),
        (Some(total), None) => Ok(Stop::Total(total)),
        (None, Some(duration)) => Ok(Stop::Duration(duration)),
        (None, None) => Ok(Stop::Total(DEFAULT_TOTAL)),
    }
}

/// `host:port` gets `http://`; `https://` is refused (no TLS support); empty entries are
/// refused rather than skipped, since they are most likely a typo.
pub fn normalize_endpoints(endpoints: &[String]) -> Result<Vec<String>, BenchError> {
    if endpoints.is_empty() {
        return Err(BenchError::Flag("--endpoints must name at least one endpoint".into()));
    }
    endpoints
        .iter()
        .map(|endpoint| {
            let endpoint = endpoint.trim();
            if endpoint.is_empty() {
                Err(BenchError::Flag("--endpoints has an empty entry".into()))
            } else if endpoint.starts_with("https://") {
                Err(BenchError::Flag(format!("{endpoint}: TLS endpoints are not supported")))
            } else if endpoint.starts_with("http://") {
                Ok(endpoint.to_string())
            } else {
                Ok(format!("http://{endpoint}"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings, BenchError> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Wrapper::try_parse_from(argv).expect("clap accepts the flags").common.validate()
    }

    fn flag_error(args: &[&str]) -> String {
        match parse(args) {
            Err(BenchError::Flag(message)) => message,
            other => panic!("expected a flag error for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_etcds() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!((settings.conns, settings.clients), (1, 1));
        assert_eq!(settings.stop, Stop::Total(DEFAULT_TOTAL));
        assert_eq!(settings.rate, None);
        assert_eq!(settings.val_size, 8);
        assert!(!settings.json);
    }

    #[test]
    fn zero_clients_or_conns_are_refused() {
        assert_eq!(flag_error(&["--clients", "0"]), "--clients must be at least 1");
        assert_eq!(flag_error(&["--conns", "0"]), "--conns must be at least 1");
        assert!(flag_error(&["--conns", "100000"]).contains("at most"));
    }

    #[test]
    fn total_and_duration() {
        assert_eq!(parse(&["--total", "5"]).unwrap().stop, Stop::Total(5));
        assert_eq!(parse(&["--duration", "10s"]).unwrap().stop, Stop::Duration(Duration::from_secs(10)));
        assert_eq!(flag_error(&["--total", "5", "--duration", "1s"]), "give --total or --duration, not both");
        assert_eq!(flag_error(&["--total", "0"]), "--total must be at least 1");
        assert!(Wrapper::try_parse_from(["bench", "--duration", "0s"]).is_err());
        assert!(Wrapper::try_parse_from(["bench", "--duration", "ten"]).is_err());
    }

    #[test]
    fn rate_zero_means_unlimited() {
        assert_eq!(parse(&["--rate", "0"]).unwrap().rate, None);
        assert_eq!(parse(&["--rate", "500"]).unwrap().rate, Some(500));
    }

    #[test]
    fn endpoints_get_a_scheme() {
        let settings = parse(&["--endpoints", "127.0.0.1:1,http://127.0.0.1:2"]).unwrap();
        assert_eq!(settings.endpoints, vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(flag_error(&["--endpoints", "https://127.0.0.1:1"]).contains("TLS"));
        assert_eq!(flag_error(&["--endpoints", "a:1,,b:2"]), "--endpoints has an empty entry");
    }

    #[test]
    fn keys_must_fit_their_size() {
        assert!(parse(&["--key-size", "2", "--key-space-size", "100"]).is_ok());
        assert!(flag_error(&["--key-size", "2", "--key-space-size", "101"]).contains("--key-size"));
        assert_eq!(flag_error(&["--key-space-size", "0"]), "--key-space-size must be at least 1");
    }
}
