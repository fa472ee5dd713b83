//! `cargo bench -p concord-wal`: durable append throughput next to the raw `fdatasync` rate
//! of the same disk, and the time to recover a large log. Prints a Markdown table.
//!
//! Environment: `CONCORD_BENCH_DIR` (where to write; default the system temp dir, which
//! should be on the disk you care about), `CONCORD_WAL_BENCH_SECS` (seconds per cell,
//! default 2), `CONCORD_WAL_BENCH_RECOVER_MIB` (size of the recovered log, default 1024),
//! `CONCORD_WAL_BENCH_DROP_CACHES=1` (also time recovery with the page cache dropped; needs
//! root, and drops the whole machine's cache, so it is off by default).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use concord_raft::{Entry, EntryKind, LogStore};
use concord_wal::{Wal, WalOptions};

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Length of one measuring slice. Raw and WAL slices alternate so that both see the same
/// disk weather on a noisy machine; the ratio is what to read.
const SLICE: Duration = Duration::from_millis(50);

/// A plain file taking appends of `bytes` bytes, each followed by one fdatasync: the disk's
/// floor for making that much durable (no framing, no checksums, no bookkeeping).
struct Raw {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl Raw {
    fn new(dir: &Path, bytes: usize) -> Raw {
        let path = dir.join(format!("raw-{bytes}"));
        let file = OpenOptions::new().create(true).append(true).open(path).unwrap();
        Raw { file, buf: vec![7u8; bytes] }
    }

    /// Runs for one slice; returns fdatasyncs done.
    fn slice(&mut self) -> u64 {
        let (mut n, start) = (0, Instant::now());
        while start.elapsed() < SLICE {
            self.file.write_all(&self.buf).unwrap();
            self.file.sync_data().unwrap();
            n += 1;
        }
        n
    }
}

/// The WAL taking `per_sync` single-entry appends of `size` bytes, then one sync.
struct Durable {
    wal: Wal,
    data: Bytes,
    per_sync: usize,
    index: u64,
}

impl Durable {
    fn new(dir: &Path, size: usize, per_sync: usize) -> Durable {
        let wal = Wal::open(dir.join(format!("wal-{size}-{per_sync}")), WalOptions::default()).unwrap();
        Durable { wal, data: Bytes::from(vec![7u8; size]), per_sync, index: 0 }
    }

    /// Runs for one slice; returns entries made durable.
    fn slice(&mut self) -> u64 {
        let (first, start) = (self.index, Instant::now());
        while start.elapsed() < SLICE {
            for _ in 0..self.per_sync {
                self.index += 1;
                let e = Entry { index: self.index, term: 1, kind: EntryKind::Normal, data: self.data.clone() };
                self.wal.append(&[e]).unwrap();
            }
            assert_eq!(self.wal.sync().unwrap(), self.index);
        }
        self.index - first
    }
}

/// Writes a log of about `mib` MiB of 1 KiB entries; returns the entry count.
fn build_log(dir: &Path, mib: u64) -> u64 {
    let mut wal = Wal::open(dir, WalOptions::default()).unwrap();
    let data = Bytes::from(vec![7u8; 1024]);
    let per_entry = 16 + 17 + 1024;
    let total = mib * (1 << 20) / per_entry;
    let mut index = 0;
    while index < total {
        let batch: Vec<Entry> = (index + 1..=(index + 256).min(total))
            .map(|i| Entry { index: i, term: 1, kind: EntryKind::Normal, data: data.clone() })
            .collect();
        index += batch.len() as u64;
        wal.append(&batch).unwrap();
        if index % (64 * 1024) == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    total
}

fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn time_open(dir: &Path, entries: u64) -> Duration {
    let start = Instant::now();
    let wal = Wal::open(dir, WalOptions::default()).unwrap();
    let took = start.elapsed();
    assert_eq!(wal.last_index(), entries);
    took
}

fn main() {
    let secs = env_f64("CONCORD_WAL_BENCH_SECS", 2.0);
    let recover_mib = env_f64("CONCORD_WAL_BENCH_RECOVER_MIB", 1024.0) as u64;
    let base = std::env::var_os("CONCORD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let dir = tmp.path();
    println!("# concord-wal benchmark ({secs} s per cell, in {})\n", base.display());

    println!("| entry size | appends per fsync | durable appends/s | WAL fsyncs/s | raw fdatasync/s, same bytes | WAL fsyncs ÷ raw | appends/s ÷ raw |");
    println!("|---|---|---|---|---|---|---|");
    let slices = ((secs / SLICE.as_secs_f64()).ceil() as u32).max(1);
    let elapsed = SLICE.as_secs_f64() * slices as f64;
    for size in [100usize, 1024] {
        for per_sync in [1usize, 8, 64] {
            // The raw file gets the same payload bytes per fdatasync as the WAL's batch.
            let mut raw = Raw::new(dir, size * per_sync);
            let mut wal = Durable::new(dir, size, per_sync);
            let (mut raw_n, mut wal_n) = (0, 0);
            for _ in 0..slices {
                raw_n += raw.slice();
                wal_n += wal.slice();
            }
            let raw = raw_n as f64 / elapsed;
            let rate = wal_n as f64 / elapsed;
            let syncs = rate / per_sync as f64;
            println!(
                "| {size} B | {per_sync} | {rate:.0} | {syncs:.0} | {raw:.0} | {:.2} | {:.2} |",
                syncs / raw,
                rate / raw
            );
        }
    }

    let log_dir = dir.join("recover");
    let start = Instant::now();
    let entries = build_log(&log_dir, recover_mib);
    let build = start.elapsed();
    let warm = time_open(&log_dir, entries);
    let drop_caches = std::env::var("CONCORD_WAL_BENCH_DROP_CACHES").is_ok_and(|v| v == "1");
    let cold = (drop_caches && drop_page_cache()).then(|| time_open(&log_dir, entries));
    println!("\n| recovery of a {recover_mib} MiB log ({entries} entries of 1 KiB) | seconds | MiB/s |");
    println!("|---|---|---|");
    let mibs = |d: Duration| recover_mib as f64 / d.as_secs_f64();
    println!(
        "| write it (appends of 256, fdatasync every 64 Ki entries) | {:.2} | {:.0} |",
        build.as_secs_f64(),
        mibs(build)
    );
    println!("| open, page cache warm | {:.2} | {:.0} |", warm.as_secs_f64(), mibs(warm));
    match cold {
        Some(cold) => println!("| open, page cache dropped | {:.2} | {:.0} |", cold.as_secs_f64(), mibs(cold)),
        None => println!("| open, page cache dropped | (set CONCORD_WAL_BENCH_DROP_CACHES=1, as root) | |"),
    }
}
