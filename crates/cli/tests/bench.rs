//! `concord bench` end to end: the built binary against a 1-member cluster, every
//! workload with a small `--total`, reading its `--json` report. Also: an endpoint that
//! cannot be reached ends the run with exit code 1 and says so, before any load.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// Runs `concord bench ARGS...` (off the async runtime) and returns its output.
async fn bench(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_concord")).arg("bench").args(&args).output().expect("run concord bench")
    })
    .await
    .expect("the bench process")
}

/// Runs a workload against `endpoint` and returns its JSON report, asserting success.
async fn bench_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.extend(["--endpoints".to_string(), endpoint.to_string(), "--json".to_string()]);
    let output = bench(argv).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench {args:?} failed: {:?}\nstdout: {stdout}\nstderr: {stderr}", output.status);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bench {args:?}: not JSON ({e}): {stdout}"))
}

fn assert_clean_run(report: &serde_json::Value, total: u64) {
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["total"], total, "{report}");
    assert!(report["requests_per_second"].as_f64().unwrap() > 0.0, "{report}");
    let p50 = report["p50_ms"].as_f64().unwrap();
    let p99 = report["p99_ms"].as_f64().unwrap();
    let slowest = report["slowest_ms"].as_f64().unwrap();
    let fastest = report["fastest_ms"].as_f64().unwrap();
    assert!(fastest > 0.0 && fastest <= p50 && p50 <= p99 && p99 <= slowest, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_cleanly_against_one_member() {
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.endpoint(0);
    let started = Instant::now();

    let put = bench_json(&endpoint, &["put", "--total", "200", "--clients", "4"]).await;
    assert_clean_run(&put, 200);
    assert_eq!(put["workload"], "put");

    let range = bench_json(&endpoint, &["range", "k", "--total", "100"]).await;
    assert_clean_run(&range, 100);
    let serializable = bench_json(&endpoint, &["range", "k", "--consistency", "s", "--total", "100"]).await;
    assert_clean_run(&serializable, 100);

    let txn = bench_json(&endpoint, &["txn-mixed", "--total", "100", "--clients", "4", "--key-space-size", "10"]).await;
    assert_clean_run(&txn, 100);

    let watch = bench_json(&endpoint, &["watch", "--watchers", "3", "--total", "50", "--clients", "2"]).await;
    assert_clean_run(&watch, 50);

    let keepalive =
        bench_json(&endpoint, &["lease-keepalive", "--leases", "3", "--total", "100", "--clients", "2"]).await;
    assert_clean_run(&keepalive, 100);

    // a rate cap of 200/s over 40 requests takes at least 195 ms (request 39 is due then)
    let capped = bench_json(&endpoint, &["put", "--total", "40", "--rate", "200", "--clients", "4"]).await;
    assert_clean_run(&capped, 40);
    assert!(capped["duration_s"].as_f64().unwrap() >= 0.19, "{capped}");

    let timed = bench_json(&endpoint, &["range", "k", "--duration", "300ms", "--consistency", "s"]).await;
    assert_eq!(timed["errors"], 0, "{timed}");
    let seconds = timed["duration_s"].as_f64().unwrap();
    assert!((0.29..2.0).contains(&seconds), "{timed}");

    assert!(started.elapsed() < Duration::from_secs(10), "the bench runs took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let port = free_ports(1)[0]; // free a moment ago: nothing listens there
    let output = bench(vec!["put".into(), "--endpoints".into(), format!("127.0.0.1:{port}"), "--json".into()]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot reach http://127.0.0.1:{port}")), "{stderr}");
    assert!(output.stdout.is_empty(), "no report without a run: {output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_refused_before_connecting() {
    let output = bench(vec!["put".into(), "--clients".into(), "0".into()]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--clients must be at least 1"), "{output:?}");
}
