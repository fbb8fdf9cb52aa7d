//! Statistics that do not depend on how bytes move: latency histograms, percentile summaries,
//! the open-loop schedule that corrects for coordinated omission, and the median / ratio /
//! spread arithmetic used when comparing runs.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records (anything slower is clamped to this).
const MAX_LATENCY_NS: u64 = 120_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits, 1 ns .. 120 s.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range (never fails, never panics).
pub fn record_latency(hist: &mut Histogram<u64>, latency: Duration) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    hist.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
}

/// Latency percentiles in microseconds (fractional, so sub-microsecond loopback shows up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn from_histogram(hist: &Histogram<u64>) -> LatencySummary {
        if hist.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            samples: hist.len(),
            p50_us: us(hist.value_at_quantile(0.50)),
            p90_us: us(hist.value_at_quantile(0.90)),
            p99_us: us(hist.value_at_quantile(0.99)),
            p999_us: us(hist.value_at_quantile(0.999)),
            max_us: us(hist.max()),
            mean_us: hist.mean() / 1_000.0,
        }
    }
}

/// The send schedule of one open-loop connection.
///
/// Messages are *intended* to leave every `interval`, whatever the server does. When the
/// connection cannot send on time (its in-flight window is full because the server is slow),
/// the intended times keep their place and latency is measured from the intended time, not
/// from the moment the message finally left. Measuring from the actual send time would hide
/// exactly the stalls a benchmark exists to find ("coordinated omission").
#[derive(Debug, Clone)]
pub struct OpenLoopSchedule {
    next: Instant,
    interval: Duration,
}

impl OpenLoopSchedule {
    /// `phase` offsets the first send so that connections do not all fire in the same instant.
    pub fn new(start: Instant, interval: Duration, phase: Duration) -> OpenLoopSchedule {
        OpenLoopSchedule {
            next: start + phase,
            interval,
        }
    }

    /// The intended send time of the next message.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// If a message is due at `now`, returns its intended send time and advances the schedule.
    pub fn take_due(&mut self, now: Instant) -> Option<Instant> {
        if self.next <= now {
            let due = self.next;
            self.next += self.interval;
            Some(due)
        } else {
            None
        }
    }
}

/// The per-connection interval for a total open-loop rate spread over `connections`.
pub fn per_connection_interval(total_rate: f64, connections: usize) -> Duration {
    let per_conn = total_rate / connections.max(1) as f64;
    Duration::from_secs_f64(1.0 / per_conn.max(1e-9))
}

/// Median of a set of values (mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Ratio of `ours` to `baseline`; None when the baseline is zero or not finite.
pub fn ratio(ours: f64, baseline: f64) -> Option<f64> {
    if baseline == 0.0 || !baseline.is_finite() || !ours.is_finite() {
        None
    } else {
        Some(ours / baseline)
    }
}

/// Median and min–max of the pairwise ratios of alternating runs (run i of ours against run i
/// of the baseline, which ran right next to it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RatioSpread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub pairs: usize,
}

pub fn ratio_spread(ours: &[f64], baseline: &[f64]) -> Option<RatioSpread> {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(baseline)
        .filter_map(|(&o, &b)| ratio(o, b))
        .collect();
    let median = median(&ratios)?;
    Some(RatioSpread {
        median,
        min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        pairs: ratios.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_latency_histogram();
        // 1..=1000 microseconds, one each.
        for us in 1..=1000u64 {
            record_latency(&mut h, Duration::from_micros(us));
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.samples, 1000);
        let close = |got: f64, want: f64| (got - want).abs() / want < 0.01;
        assert!(close(s.p50_us, 500.0), "p50 {}", s.p50_us);
        assert!(close(s.p90_us, 900.0), "p90 {}", s.p90_us);
        assert!(close(s.p99_us, 990.0), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 999.0), "p999 {}", s.p999_us);
        assert!(close(s.max_us, 1000.0), "max {}", s.max_us);
        assert!(close(s.mean_us, 500.5), "mean {}", s.mean_us);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        let s = LatencySummary::from_histogram(&new_latency_histogram());
        assert_eq!(s, LatencySummary::default());
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::ZERO);
        record_latency(&mut h, Duration::from_secs(100_000));
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_LATENCY_NS - MAX_LATENCY_NS / 1000);
    }

    #[test]
    fn merged_shard_histograms_equal_one_histogram() {
        let mut a = new_latency_histogram();
        let mut b = new_latency_histogram();
        let mut all = new_latency_histogram();
        for i in 1..=500u64 {
            record_latency(&mut a, Duration::from_micros(i));
            record_latency(&mut all, Duration::from_micros(i));
            record_latency(&mut b, Duration::from_micros(i * 3));
            record_latency(&mut all, Duration::from_micros(i * 3));
        }
        a.add(&b).unwrap();
        assert_eq!(
            LatencySummary::from_histogram(&a),
            LatencySummary::from_histogram(&all)
        );
    }

    /// A server that stalls for 1 s while a connection should send every 10 ms: measured from
    /// intended send times, the ~100 messages held back by the stall all show the stall.
    #[test]
    fn coordinated_omission_is_corrected_by_intended_send_times() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(10);
        let mut sched = OpenLoopSchedule::new(t0, interval, Duration::ZERO);
        let mut corrected = new_latency_histogram();
        let mut naive = new_latency_histogram();
        // Closed window of 1: the next message can leave only once the previous one returned.
        let service = Duration::from_micros(100);
        let stall_at = t0 + Duration::from_millis(500);
        let stall = Duration::from_secs(1);
        let mut now = t0;
        let end = t0 + Duration::from_secs(3);
        while now < end {
            match sched.take_due(now) {
                Some(intended) => {
                    let sent = now;
                    let mut done = sent + service;
                    if sent <= stall_at && stall_at < done + interval {
                        done = stall_at + stall;
                    }
                    record_latency(&mut corrected, done - intended);
                    record_latency(&mut naive, done - sent);
                    now = done;
                }
                None => now = sched.next_due(),
            }
        }
        let c = LatencySummary::from_histogram(&corrected);
        let n = LatencySummary::from_histogram(&naive);
        // Naive: a single slow sample among ~200, so its p90 looks perfect.
        assert!(n.p90_us < 1_000.0, "naive p90 {}", n.p90_us);
        // Corrected: every message whose intended time fell inside the stall waited for it,
        // so ~1/3 of samples are slow and p90 is hundreds of milliseconds.
        assert!(c.p90_us > 300_000.0, "corrected p90 {}", c.p90_us);
        assert_eq!(c.samples, 300, "the schedule sends every intended message");
        assert!(c.max_us >= 1_000_000.0);
    }

    #[test]
    fn per_connection_interval_spreads_the_rate() {
        assert_eq!(
            per_connection_interval(1000.0, 10),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn median_ratio_and_spread() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(2.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        let s = ratio_spread(&[200.0, 300.0, 100.0], &[100.0, 100.0, 100.0]).unwrap();
        assert_eq!(
            s,
            RatioSpread {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                pairs: 3
            }
        );
        // A zero baseline run is left out, not divided by.
        let s = ratio_spread(&[1.0, 2.0], &[0.0, 1.0]).unwrap();
        assert_eq!(s.pairs, 1);
        assert_eq!(ratio_spread(&[1.0], &[0.0]), None);
    }
}
