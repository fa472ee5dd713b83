//! `concord dev`: a local cluster in one process, for trying concord out. Each member is a
//! full member (its own WAL, state machine, gRPC endpoints) on free loopback ports.

use std::path::PathBuf;

use clap::Args;
use concord_server::ServerConfig;
use tracing::Instrument;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// How many members.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Keep data here (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// A free loopback port (the OS picks it; it is released again right away).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub async fn run(args: DevArgs) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err(format!("--nodes must be between 1 and 9, not {}", args.nodes));
    }
    let temporary = args.data_dir.is_none();
    let root =
        args.data_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("concord-dev-{}", std::process::id())));
    let mut members = Vec::new();
    for number in 1..=args.nodes {
        let client = free_port().map_err(|e| e.to_string())?;
        let peer = free_port().map_err(|e| e.to_string())?;
        members.push((format!("m{number}"), client, peer));
    }
    let initial_cluster: Vec<String> =
        members.iter().map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}")).collect();
    let initial_cluster = initial_cluster.join(",");
    let endpoints: Vec<String> = members.iter().map(|(_, client, _)| format!("127.0.0.1:{client}")).collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (name, client, peer) in &members {
        let config = ServerConfig {
            name: name.clone(),
            data_dir: root.join(name),
            listen_client_urls: vec![format!("http://127.0.0.1:{client}")],
            advertise_client_urls: vec![format!("http://127.0.0.1:{client}")],
            listen_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
            initial_advertise_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
            initial_cluster: initial_cluster.clone(),
            initial_cluster_token: "concord-dev".into(),
            ..ServerConfig::default()
        };
        let mut stop = stop_rx.clone();
        let span = tracing::info_span!("member", name = %name);
        tasks.push(tokio::spawn(
            concord_server::run(config, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .instrument(span),
        ));
    }
    println!("concord dev: {} members, data in {}", members.len(), root.display());
    for (name, client, peer) in &members {
        println!("  {name}: client http://127.0.0.1:{client}  peer http://127.0.0.1:{peer}");
    }
    println!("try:\n  etcdctl --endpoints={} put greeting hello", endpoints.join(","));
    println!("  etcdctl --endpoints={} get greeting", endpoints.join(","));
    println!("Ctrl-C stops every member.");

    crate::stop_signal().await;
    let _ = stop_tx.send(true);
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failure = Some(error.to_string()),
            Err(error) => failure = Some(error.to_string()),
        }
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&root);
    }
    failure.map_or(Ok(()), Err)
}
