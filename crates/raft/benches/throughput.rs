//! Proposals per second committed through an in-memory 3-node cluster of cores: no disk,
//! no network, so this measures the consensus core's own cost per entry.
//!
//! Run: `cargo bench -p concord-raft --bench throughput`. Prints one line per workload;
//! compare ratios between runs made on the same machine, not absolute numbers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_raft::{Config, MemoryLog, Message, Raft, Role, SnapshotStaging};

struct Cluster {
    nodes: Vec<Raft<MemoryLog>>,
    network: VecDeque<Message>,
    committed_at_leader: u64,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let voters: Vec<u64> = (1..=size).collect();
        let nodes = voters
            .iter()
            .map(|&id| Raft::new(Config::new(id, voters.clone()), MemoryLog::new(), 0).expect("valid config"))
            .collect();
        let mut cluster = Cluster { nodes, network: VecDeque::new(), committed_at_leader: 0 };
        cluster.nodes[0].campaign();
        cluster.run_until_quiet();
        assert_eq!(cluster.nodes[0].role(), Role::Leader);
        cluster
    }

    /// Persists and delivers everything instantly until no node has work left.
    fn run_until_quiet(&mut self) {
        loop {
            let mut moved = false;
            for index in 0..self.nodes.len() {
                let node = &mut self.nodes[index];
                while node.has_ready() {
                    moved = true;
                    // No snapshots here: nothing is compacted.
                    let handled = node.handle_ready_in_memory(&mut SnapshotStaging::default());
                    self.network.extend(handled.messages);
                    if index == 0 {
                        self.committed_at_leader += handled.committed_entries.len() as u64;
                    }
                }
            }
            while let Some(message) = self.network.pop_front() {
                moved = true;
                let to = (message.to - 1) as usize;
                self.nodes[to].step(message).unwrap();
            }
            if !moved {
                return;
            }
        }
    }
}

/// Keeps `concurrency` proposals outstanding until `total` have committed.
fn run(concurrency: u64, total: u64, payload: usize) -> (Duration, u64) {
    let mut cluster = Cluster::new(3);
    let data = Bytes::from(vec![7u8; payload]);
    let start_committed = cluster.committed_at_leader;
    let mut proposed = 0;
    let start = Instant::now();
    while cluster.committed_at_leader - start_committed < total {
        let outstanding = proposed - (cluster.committed_at_leader - start_committed);
        let room = concurrency.saturating_sub(outstanding).min(total - proposed);
        if room > 0 {
            let batch = (0..room).map(|_| data.clone()).collect();
            cluster.nodes[0].propose_batch(batch).expect("leader accepts");
            proposed += room;
        }
        cluster.run_until_quiet();
    }
    (start.elapsed(), cluster.committed_at_leader - start_committed)
}

fn main() {
    // `cargo test --benches` passes --bench; keep that run short.
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CONCORD_BENCH_QUICK").is_some();
    let total = if quick { 2_000 } else { 2_000_000 };
    println!("workload                               committed    seconds    proposals/s");
    for (label, concurrency, payload) in
        [("1 proposer, 100 B", 1, 100), ("64 proposers, 100 B", 64, 100), ("1024 proposers, 100 B", 1024, 100)]
    {
        let total = if concurrency == 1 { total / 10 } else { total };
        let (elapsed, committed) = run(concurrency, total, payload);
        println!(
            "{label:<38} {committed:>9} {:>10.3} {:>14.0}",
            elapsed.as_secs_f64(),
            committed as f64 / elapsed.as_secs_f64()
        );
    }
}
