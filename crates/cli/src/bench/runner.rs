//! The load loop shared by every workload: `--clients` tasks, each with its own
//! [`Worker`] (its own gRPC client over one of the shared channels) and its own
//! [`Recorder`], pull request numbers from one atomic counter until the run is over.
//!
//! Why this shape:
//! - One counter hands out request numbers, so `--total` is exact however many clients,
//!   `--sequential-keys` walks the key space once in order over all clients, and `--rate`
//!   needs no lock: request `n` is due at `start + n / rate`, and a client sleeps until its
//!   request is due (a global schedule, so a slow client does not lower the rate of others,
//!   and no burst follows a stall beyond what the schedule allows).
//! - Nothing is shared on the hot path but that counter and a completed-requests counter
//!   for the progress bar; recorders are merged once, at the end.
//! - Every request has a client-side deadline ([`REQUEST_TIMEOUT`]), so a server that
//!   stops answering turns into counted errors and the run still ends.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use super::config::Stop;
use super::report::Recorder;

/// Longest one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(100);

/// One client's way of sending request number `ticket`. `Err` carries the error message
/// that the report counts.
pub trait Worker: Send + 'static {
    fn call(&mut self, ticket: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// When to stop, how fast to go, and whether to draw progress.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub stop: Stop,
    /// Requests per second over all clients; `None` = as fast as the clients can.
    pub rate: Option<u64>,
    pub progress: bool,
}

/// What all clients share.
struct Shared {
    next_ticket: AtomicU64,
    completed: AtomicU64,
    start: Instant,
    total: Option<u64>,
    deadline: Option<Instant>,
    rate: Option<u64>,
}

impl Shared {
    fn new(plan: &Plan, start: Instant) -> Self {
        let (total, deadline) = match plan.stop {
            Stop::Total(total) => (Some(total), None),
            Stop::Duration(duration) => (None, Some(start + duration)),
        };
        Shared { next_ticket: AtomicU64::new(0), completed: AtomicU64::new(0), start, total, deadline, rate: plan.rate }
    }

    /// The next request number to send and when it is due, or `None` once the run is over.
    fn next(&self) -> Option<(u64, Option<Instant>)> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|total| ticket >= total) {
            return None;
        }
        let due = self.rate.map(|rate| self.start + Duration::from_secs_f64(ticket as f64 / rate as f64));
        let when = due.unwrap_or_else(Instant::now);
        if self.deadline.is_some_and(|deadline| when >= deadline) {
            return None;
        }
        Some((ticket, due))
    }
}

/// Runs `workers` (one per client) until the plan says stop; returns every client's
/// measurements merged, and the time from the first request to the last answer.
pub async fn run<W: Worker>(plan: Plan, workers: Vec<W>) -> (Recorder, Duration) {
    let start = Instant::now();
    let shared = Arc::new(Shared::new(&plan, start));
    let progress = Progress::start(&plan, shared.clone());
    let tasks: Vec<_> = workers.into_iter().map(|worker| tokio::spawn(client(worker, shared.clone()))).collect();
    let mut merged = Recorder::new();
    for task in tasks {
        match task.await {
            Ok(recorder) => merged.merge(&recorder),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    (merged, elapsed)
}

/// One client: send, time, record, repeat.
async fn client<W: Worker>(mut worker: W, shared: Arc<Shared>) -> Recorder {
    let mut recorder = Recorder::new();
    while let Some((ticket, due)) = shared.next() {
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        let sent = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, worker.call(ticket)).await {
            Ok(Ok(())) => recorder.success(sent.elapsed()),
            Ok(Err(message)) => recorder.failure(&message),
            Err(_) => recorder.failure("request timed out (client-side deadline of 10 s)"),
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    recorder
}

/// The progress bar on stderr, redrawn by its own task from the completed counter (so the
/// clients never touch it).
struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(plan: &Plan, shared: Arc<Shared>) -> Self {
        if !plan.progress || !std::io::stderr().is_terminal() {
            return Progress { bar: ProgressBar::hidden(), ticker: None };
        }
        let (length, template) = match plan.stop {
            Stop::Total(total) => (total, "{bar:40} {pos}/{len} requests, {elapsed} elapsed, ETA {eta}"),
            Stop::Duration(duration) => {
                (duration.as_millis() as u64, "{bar:40} {elapsed}/{len_secs} s, {msg} requests")
            }
        };
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).with_key(
            "len_secs",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", state.len().unwrap_or(0) / 1000);
            },
        );
        bar.set_style(style);
        let drawn = bar.clone();
        let stop = plan.stop;
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(PROGRESS_TICK);
            loop {
                interval.tick().await;
                let completed = shared.completed.load(Ordering::Relaxed);
                match stop {
                    Stop::Total(_) => drawn.set_position(completed),
                    Stop::Duration(_) => {
                        drawn.set_position(shared.start.elapsed().as_millis() as u64);
                        drawn.set_message(completed.to_string());
                    }
                }
            }
        });
        Progress { bar, ticker: Some(ticker) }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        calls: Arc<AtomicU64>,
        fail_every: u64,
    }

    impl Worker for Counting {
        async fn call(&mut self, ticket: u64) -> Result<(), String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.fail_every > 0 && ticket.is_multiple_of(self.fail_every) {
                Err("boom".into())
            } else {
                Ok(())
            }
        }
    }

    fn workers(n: usize, calls: &Arc<AtomicU64>, fail_every: u64) -> Vec<Counting> {
        (0..n).map(|_| Counting { calls: calls.clone(), fail_every }).collect()
    }

    #[tokio::test]
    async fn total_is_exact_over_many_clients() {
        let calls = Arc::new(AtomicU64::new(0));
        let plan = Plan { stop: Stop::Total(1_000), rate: None, progress: false };
        let (recorder, _) = run(plan, workers(7, &calls, 10)).await;
        assert_eq!(calls.load(Ordering::Relaxed), 1_000);
        assert_eq!(recorder.successes() + recorder.failures(), 1_000);
        assert_eq!(recorder.failures(), 100);
    }

    #[tokio::test]
    async fn duration_ends_the_run() {
        let calls = Arc::new(AtomicU64::new(0));
        let plan = Plan { stop: Stop::Duration(Duration::from_millis(200)), rate: Some(100), progress: false };
        let (recorder, elapsed) = run(plan, workers(2, &calls, 0)).await;
        // 100/s for 0.2 s: requests 0..20 are due before the deadline
        assert_eq!(recorder.successes(), 20);
        assert!(elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    #[tokio::test]
    async fn rate_caps_the_throughput() {
        let calls = Arc::new(AtomicU64::new(0));
        let plan = Plan { stop: Stop::Total(50), rate: Some(200), progress: false };
        let (_, elapsed) = run(plan, workers(4, &calls, 0)).await;
        // the 50th request is due at 49/200 s
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
    }
}
