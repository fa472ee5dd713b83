//! Latency bookkeeping and the summary a run prints.
//!
//! Each client task owns a [`Recorder`] (no sharing, no locks on the hot path); the runner
//! merges them when the run ends and turns the result into a [`Summary`]. Percentiles come
//! from an HDR histogram at microsecond resolution (3 significant digits: exact below
//! 2.048 ms, within 0.1% above), which keeps memory constant however long the run; the
//! fastest, slowest, average and standard deviation are computed exactly from running sums.
//! As in etcd's benchmark, only successful requests have a latency; failed ones are
//! counted by message, and Requests/sec counts successes only.
//!
//! The text layout copies etcd's `benchmark` (Summary, Response time histogram, Latency
//! distribution) so its users can read it at a glance; `--json` gives the same figures as
//! one object for scripts.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Percentiles reported, as etcd's benchmark does.
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];
/// Distinct error messages kept; later new ones are counted under one "other" entry.
const MAX_DISTINCT_ERRORS: usize = 64;
/// Bars in the text histogram (etcd uses 10 buckets between fastest and slowest).
const BUCKETS: usize = 10;
const BAR_WIDTH: u64 = 40;
/// Highest latency the histogram can hold: an hour, in microseconds (more saturates).
const HIGHEST_US: u64 = 3_600_000_000;

/// One client's measurements.
pub struct Recorder {
    histogram: Histogram<u64>,
    sum_us: f64,
    sum_sq_us: f64,
    min_us: u64,
    max_us: u64,
    errors: HashMap<String, u64>,
    error_count: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            histogram: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds"),
            sum_us: 0.0,
            sum_sq_us: 0.0,
            min_us: u64::MAX,
            max_us: 0,
            errors: HashMap::new(),
            error_count: 0,
        }
    }

    /// A request that succeeded after `latency`.
    pub fn success(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, HIGHEST_US);
        self.histogram.saturating_record(us);
        let value = us as f64;
        self.sum_us += value;
        self.sum_sq_us += value * value;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// A request that failed with `message`.
    pub fn failure(&mut self, message: &str) {
        self.error_count += 1;
        if let Some(count) = self.errors.get_mut(message) {
            *count += 1;
        } else if self.errors.len() < MAX_DISTINCT_ERRORS {
            self.errors.insert(message.to_string(), 1);
        } else {
            *self.errors.entry("(other errors)".to_string()).or_insert(0) += 1;
        }
    }

    pub fn successes(&self) -> u64 {
        self.histogram.len()
    }

    #[cfg(test)]
    pub fn failures(&self) -> u64 {
        self.error_count
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: &Recorder) {
        self.histogram.add(&other.histogram).expect("histograms with the same bounds");
        self.sum_us += other.sum_us;
        self.sum_sq_us += other.sum_sq_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
        self.error_count += other.error_count;
        for (message, count) in &other.errors {
            *self.errors.entry(message.clone()).or_insert(0) += count;
        }
    }

    /// The figures of a run that took `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let successes = self.successes();
        let n = successes as f64;
        let (average_us, stddev_us, fastest_us, slowest_us) = if successes == 0 {
            (0.0, 0.0, 0, 0)
        } else {
            let mean = self.sum_us / n;
            let variance = (self.sum_sq_us / n - mean * mean).max(0.0);
            (mean, variance.sqrt(), self.min_us, self.max_us)
        };
        let seconds = elapsed.as_secs_f64();
        let percentiles_us = PERCENTILES.iter().map(|&p| (p, self.nearest_rank(p).min(slowest_us))).collect();
        let mut errors: Vec<(String, u64)> = self.errors.iter().map(|(m, c)| (m.clone(), *c)).collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Summary {
            elapsed,
            successes,
            error_count: self.error_count,
            errors,
            requests_per_second: if seconds > 0.0 { n / seconds } else { 0.0 },
            fastest_us,
            slowest_us,
            average_us,
            stddev_us,
            percentiles_us,
            buckets: self.buckets(fastest_us, slowest_us),
        }
    }

    /// The latency at percentile `p` by nearest rank: the smallest recorded latency that at
    /// least `p`% of requests did not exceed (rank computed in integers, in thousandths of a
    /// percent, so that 99.9% of 1000 is rank 999 and not 1000 through float rounding).
    fn nearest_rank(&self, p: f64) -> u64 {
        let total = self.successes();
        if total == 0 {
            return 0;
        }
        let thousandths = (p * 1000.0).round() as u128;
        let rank = (thousandths * u128::from(total)).div_ceil(100_000).max(1) as u64;
        let mut seen = 0;
        for value in self.histogram.iter_recorded() {
            seen += value.count_at_value();
            if seen >= rank {
                return self.histogram.highest_equivalent(value.value_iterated_to());
            }
        }
        self.max_us
    }

    /// etcd's histogram: BUCKETS + 1 upper bounds from fastest to slowest, each latency in
    /// the first bucket whose bound it does not exceed.
    fn buckets(&self, fastest_us: u64, slowest_us: u64) -> Vec<(u64, u64)> {
        if self.successes() == 0 {
            return Vec::new();
        }
        let step = (slowest_us - fastest_us) as f64 / BUCKETS as f64;
        let mut bounds: Vec<u64> = (0..BUCKETS).map(|i| fastest_us + (step * i as f64) as u64).collect();
        bounds.push(slowest_us);
        let mut counts = vec![0u64; bounds.len()];
        for value in self.histogram.iter_recorded() {
            // the histogram may round a value up past the exact slowest: clamp it back
            let us = self.histogram.highest_equivalent(value.value_iterated_to()).min(slowest_us);
            let slot = bounds.iter().position(|&bound| us <= bound).unwrap_or(BUCKETS);
            counts[slot] += value.count_at_value();
        }
        bounds.into_iter().zip(counts).collect()
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub elapsed: Duration,
    pub successes: u64,
    pub error_count: u64,
    /// Distinct error messages with their counts, most frequent first.
    pub errors: Vec<(String, u64)>,
    pub requests_per_second: f64,
    pub fastest_us: u64,
    pub slowest_us: u64,
    pub average_us: f64,
    pub stddev_us: f64,
    /// (percentile, latency in µs) for each of [`PERCENTILES`].
    pub percentiles_us: Vec<(f64, u64)>,
    /// (upper bound in µs, count) of the text histogram.
    pub buckets: Vec<(u64, u64)>,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn ms(us: f64) -> f64 {
    us / 1e3
}

impl Summary {
    /// Latency at percentile `p` (one of [`PERCENTILES`]) in µs.
    #[cfg(test)]
    pub fn percentile_us(&self, p: f64) -> u64 {
        self.percentiles_us.iter().find(|(q, _)| *q == p).map_or(0, |(_, us)| *us)
    }

    /// The text report, laid out like etcd's benchmark.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nSummary:");
        let _ = writeln!(out, "  Total:\t{:.4} secs.", self.elapsed.as_secs_f64());
        let _ = writeln!(out, "  Slowest:\t{:.4} secs.", secs(self.slowest_us));
        let _ = writeln!(out, "  Fastest:\t{:.4} secs.", secs(self.fastest_us));
        let _ = writeln!(out, "  Average:\t{:.4} secs.", self.average_us / 1e6);
        let _ = writeln!(out, "  Stddev:\t{:.4} secs.", self.stddev_us / 1e6);
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.requests_per_second);
        if !self.buckets.is_empty() {
            let _ = writeln!(out, "\nResponse time histogram:");
            let most = self.buckets.iter().map(|(_, count)| *count).max().unwrap_or(0).max(1);
            for (bound, count) in &self.buckets {
                let bar = "∎".repeat((count * BAR_WIDTH / most) as usize);
                let _ = writeln!(out, "  {:.4} [{count}]\t|{bar}", secs(*bound));
            }
            let _ = writeln!(out, "\nLatency distribution:");
            for (p, us) in &self.percentiles_us {
                let _ = writeln!(out, "  {p}% in {:.4} secs.", secs(*us));
            }
        }
        let _ = writeln!(out, "\nRequests: {} succeeded, {} failed", self.successes, self.error_count);
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\nError distribution:");
            for (message, count) in &self.errors {
                let _ = writeln!(out, "  [{count}]\t{message}");
            }
        }
        out
    }

    /// The same figures as one JSON object (latencies in milliseconds).
    pub fn to_json(&self, workload: &str) -> serde_json::Value {
        let mut object = serde_json::json!({
            "workload": workload,
            "total": self.successes + self.error_count,
            "successes": self.successes,
            "errors": self.error_count,
            "duration_s": self.elapsed.as_secs_f64(),
            "requests_per_second": self.requests_per_second,
            "slowest_ms": ms(self.slowest_us as f64),
            "fastest_ms": ms(self.fastest_us as f64),
            "average_ms": ms(self.average_us),
            "stddev_ms": ms(self.stddev_us),
            "error_messages": self.errors.iter().map(|(m, c)| (m.clone(), serde_json::json!(c)))
                .collect::<serde_json::Map<_, _>>(),
        });
        for (p, us) in &self.percentiles_us {
            let name = format!("p{}_ms", p.to_string().replace('.', "_"));
            object[name] = serde_json::json!(ms(*us as f64));
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder_of(latencies_us: impl IntoIterator<Item = u64>) -> Recorder {
        let mut recorder = Recorder::new();
        for us in latencies_us {
            recorder.success(Duration::from_micros(us));
        }
        recorder
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_microseconds() {
        let summary = recorder_of(1..=1000).summary(Duration::from_secs(2));
        assert_eq!(summary.successes, 1000);
        assert_eq!(summary.percentile_us(10.0), 100);
        assert_eq!(summary.percentile_us(25.0), 250);
        assert_eq!(summary.percentile_us(50.0), 500);
        assert_eq!(summary.percentile_us(75.0), 750);
        assert_eq!(summary.percentile_us(90.0), 900);
        assert_eq!(summary.percentile_us(95.0), 950);
        assert_eq!(summary.percentile_us(99.0), 990);
        assert_eq!(summary.percentile_us(99.9), 999);
        assert_eq!((summary.fastest_us, summary.slowest_us), (1, 1000));
        assert!((summary.average_us - 500.5).abs() < 1e-9);
        // population stddev of 1..=n is sqrt((n^2 - 1) / 12)
        let expected = ((1000.0f64 * 1000.0 - 1.0) / 12.0).sqrt();
        assert!((summary.stddev_us - expected).abs() < 1e-6, "{}", summary.stddev_us);
        assert!((summary.requests_per_second - 500.0).abs() < 1e-9);
    }

    #[test]
    fn a_skewed_distribution_shows_in_the_tail() {
        // 990 fast requests at 1 ms, 10 slow ones at 100 ms
        let summary =
            recorder_of((0..990).map(|_| 1_000).chain((0..10).map(|_| 100_000))).summary(Duration::from_secs(1));
        assert_eq!(summary.percentile_us(50.0), 1_000);
        assert_eq!(summary.percentile_us(99.0), 1_000);
        // 100 ms is recorded within 0.1%
        let p999 = summary.percentile_us(99.9);
        assert!((99_900..=100_100).contains(&p999), "{p999}");
        assert!((summary.average_us - 1_990.0).abs() < 1e-9);
    }

    #[test]
    fn merging_recorders_is_recording_everything_in_one() {
        let mut a = recorder_of(1..=500);
        let b = recorder_of(501..=1000);
        a.merge(&b);
        let merged = a.summary(Duration::from_secs(1));
        let single = recorder_of(1..=1000).summary(Duration::from_secs(1));
        assert_eq!(merged.percentiles_us, single.percentiles_us);
        assert_eq!((merged.fastest_us, merged.slowest_us), (single.fastest_us, single.slowest_us));
        assert!((merged.stddev_us - single.stddev_us).abs() < 1e-6);
    }

    #[test]
    fn errors_are_counted_by_message_not_timed() {
        let mut recorder = recorder_of([100, 200]);
        recorder.failure("deadline exceeded");
        recorder.failure("unavailable");
        recorder.failure("deadline exceeded");
        let summary = recorder.summary(Duration::from_secs(1));
        assert_eq!((summary.successes, summary.error_count), (2, 3));
        assert_eq!(summary.errors, vec![("deadline exceeded".to_string(), 2), ("unavailable".to_string(), 1)]);
        assert!((summary.requests_per_second - 2.0).abs() < 1e-9);
    }

    #[test]
    fn distinct_error_messages_are_bounded() {
        let mut recorder = Recorder::new();
        for i in 0..1000 {
            recorder.failure(&format!("error {i}"));
        }
        let summary = recorder.summary(Duration::from_secs(1));
        assert_eq!(summary.error_count, 1000);
        assert_eq!(summary.errors.len(), MAX_DISTINCT_ERRORS + 1);
        assert_eq!(summary.errors[0], ("(other errors)".to_string(), 1000 - MAX_DISTINCT_ERRORS as u64));
    }

    #[test]
    fn histogram_buckets_span_fastest_to_slowest_and_hold_every_request() {
        let summary = recorder_of(1..=1000).summary(Duration::from_secs(1));
        assert_eq!(summary.buckets.len(), BUCKETS + 1);
        assert_eq!(summary.buckets.first().unwrap().0, 1);
        assert_eq!(summary.buckets.last().unwrap().0, 1000);
        assert_eq!(summary.buckets.iter().map(|(_, c)| c).sum::<u64>(), 1000);
        assert_eq!(summary.buckets[0].1, 1); // only the fastest itself is <= fastest
    }

    #[test]
    fn no_successes_gives_zeros_not_nan() {
        let mut recorder = Recorder::new();
        recorder.failure("unavailable");
        let summary = recorder.summary(Duration::from_secs(1));
        assert_eq!(summary.requests_per_second, 0.0);
        assert_eq!(summary.average_us, 0.0);
        assert!(summary.buckets.is_empty());
        let json = summary.to_json("put");
        assert_eq!(json["errors"], 1);
        assert_eq!(json["p99_ms"], 0.0);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let json = recorder_of(1..=1000).summary(Duration::from_secs(2)).to_json("range");
        for field in [
            "requests_per_second",
            "p50_ms",
            "p99_ms",
            "p99_9_ms",
            "slowest_ms",
            "fastest_ms",
            "average_ms",
            "stddev_ms",
            "total",
            "errors",
            "duration_s",
        ] {
            assert!(json.get(field).is_some(), "missing {field} in {json}");
        }
        assert_eq!(json["p50_ms"], 0.5);
        assert_eq!(json["total"], 1000);
        assert_eq!(json["workload"], "range");
    }

    #[test]
    fn text_has_etcds_sections() {
        let mut recorder = recorder_of(1..=10);
        recorder.failure("unavailable");
        let text = recorder.summary(Duration::from_secs(1)).to_text();
        for section in ["Summary:", "Requests/sec:", "Response time histogram:", "Latency distribution:", "99.9% in"] {
            assert!(text.contains(section), "missing {section} in\n{text}");
        }
        assert!(text.contains("[1]\tunavailable"), "{text}");
    }
}
