//! Measurement that does not care how bytes move: per-shard recorders, the shared counters a
//! sampler thread reads once a second, and the run phases (connect, warm up, measure, stop).
//!
//! A transport (the ringport-io client, the tokio client) owns one [`ShardRecorder`] per
//! shard or task group and implements [`LoadDriver`]; [`run_load`] does the rest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::procfs::{self, ProcSample};
use crate::stats::{new_latency_histogram, record_latency, LatencySummary};

/// Counters and the latency histogram of one shard, flushed by the shard, read by the sampler.
#[derive(Debug)]
pub struct SharedStats {
    pub messages: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Connections open right now.
    pub open: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Connections closed by the peer or by an error while the run was on.
    pub closed_unexpectedly: AtomicU64,
    /// Echoed bytes that differ from what was sent.
    pub mismatches: AtomicU64,
    /// Failed connects by errno (0 = no errno), so a failed run says why.
    connect_errors: Mutex<BTreeMap<i32, u64>>,
    /// Latencies recorded since the sampler last took them.
    interval: Mutex<Histogram<u64>>,
}

impl Default for SharedStats {
    fn default() -> Self {
        SharedStats {
            messages: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            open: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            closed_unexpectedly: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            connect_errors: Mutex::new(BTreeMap::new()),
            interval: Mutex::new(new_latency_histogram()),
        }
    }
}

impl SharedStats {
    /// Counts one failed connect (and its errno, when there is one).
    pub fn connect_failed(&self, errno: Option<i32>) {
        self.connect_failed.fetch_add(1, Ordering::Relaxed);
        let mut m = self
            .connect_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(errno.unwrap_or(0)).or_default() += 1;
    }

    /// Records into the shared histogram directly (for transports without a per-shard loop).
    pub fn with_latencies(&self, f: impl FnOnce(&mut Histogram<u64>)) {
        let mut h = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut h);
    }

    /// Moves the latencies recorded so far into `into` and resets them.
    pub fn take_latencies(&self, into: &mut Histogram<u64>) {
        let mut h = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        into.add(&*h).expect("histograms share bounds");
        h.reset();
    }
}

/// A shard's local recorder: no atomics or locks per message, flushed every `FLUSH_EVERY`.
/// (Used by the engine client, which is compiled only with the `engine` feature.)
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
#[derive(Debug)]
pub struct ShardRecorder {
    shared: Arc<SharedStats>,
    hist: Histogram<u64>,
    messages: u64,
    bytes_sent: u64,
    bytes_received: u64,
    last_flush: Instant,
}

/// How stale the sampler's view of a shard may be.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

#[cfg_attr(not(feature = "engine"), allow(dead_code))]
impl ShardRecorder {
    pub fn new(shared: Arc<SharedStats>) -> ShardRecorder {
        ShardRecorder {
            shared,
            hist: new_latency_histogram(),
            messages: 0,
            bytes_sent: 0,
            bytes_received: 0,
            last_flush: Instant::now(),
        }
    }

    pub fn shared(&self) -> &Arc<SharedStats> {
        &self.shared
    }

    pub fn message_done(&mut self, latency: Duration) {
        record_latency(&mut self.hist, latency);
        self.messages += 1;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.bytes_sent += bytes as u64;
    }

    pub fn received(&mut self, bytes: usize) {
        self.bytes_received += bytes as u64;
    }

    pub fn maybe_flush(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_flush) >= FLUSH_EVERY {
            self.last_flush = now;
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        let s = &self.shared;
        s.messages.fetch_add(self.messages, Ordering::Relaxed);
        s.bytes_sent.fetch_add(self.bytes_sent, Ordering::Relaxed);
        s.bytes_received
            .fetch_add(self.bytes_received, Ordering::Relaxed);
        self.messages = 0;
        self.bytes_sent = 0;
        self.bytes_received = 0;
        if !self.hist.is_empty() {
            let mut h = s.interval.lock().unwrap_or_else(|e| e.into_inner());
            h.add(&self.hist).expect("histograms share bounds");
            self.hist.reset();
        }
    }
}

/// What a transport must do; [`run_load`] calls these in order.
pub trait LoadDriver {
    /// One entry per shard (or task group).
    fn shared(&self) -> Vec<Arc<SharedStats>>;
    /// Start opening the connections; returns at once (progress shows in `open`).
    fn begin_connect(&mut self) -> anyhow::Result<()>;
    /// Start sending (closed or open loop as configured); `start` anchors open-loop schedules.
    fn begin_load(&mut self, start: Instant) -> anyhow::Result<()>;
    /// Stop sending, flush every recorder, close the connections and wait for the transport.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connect,
    Warmup,
    Measure,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the run began connecting.
    pub t: f64,
    pub phase: Phase,
    pub connections: u64,
    /// Connections that became open (gateway: ready) in this second, net of closes.
    pub opened_per_sec: f64,
    /// Failed connects so far.
    pub connect_failed: u64,
    pub messages_per_sec: f64,
    pub mib_per_sec: f64,
    pub latency: LatencySummary,
    /// Resident memory (KiB) of this bench process at the end of the second.
    pub bench_rss_kib: u64,
    /// CPU this bench process used over the second, in % of one core.
    pub bench_cpu_pct: f64,
    /// The same for the server (`--server-pid`, or found from the port for idle), when known.
    pub server_rss_kib: Option<u64>,
    pub server_cpu_pct: Option<f64>,
}

/// Per-second CPU and RSS of the bench and the server for the timeline.
#[derive(Debug, Default)]
pub struct Usage {
    server_pid: Option<u32>,
    bench: Option<(Instant, ProcSample)>,
    server: Option<(Instant, ProcSample)>,
}

impl Usage {
    pub fn new(server_pid: Option<u32>) -> Usage {
        let mut u = Usage {
            server_pid,
            ..Usage::default()
        };
        u.take();
        u
    }

    /// RSS now and CPU % since the previous call: (bench RSS, bench %, server RSS, server %).
    fn take(&mut self) -> (u64, f64, Option<u64>, Option<f64>) {
        fn step(
            prev: &mut Option<(Instant, ProcSample)>,
            now: Option<ProcSample>,
        ) -> Option<(u64, f64)> {
            let now = now?;
            let at = Instant::now();
            let pct = match prev.as_ref() {
                Some((t, p)) => {
                    let secs = at.duration_since(*t).as_secs_f64().max(1e-3);
                    (now.cpu_secs - p.cpu_secs) * 100.0 / secs
                }
                None => 0.0,
            };
            let rss = now.rss_kib;
            *prev = Some((at, now));
            Some((rss, pct))
        }
        let bench = step(&mut self.bench, procfs::sample_self().ok()).unwrap_or_default();
        let server = self
            .server_pid
            .and_then(|pid| step(&mut self.server, procfs::sample(pid).ok()));
        (bench.0, bench.1, server.map(|s| s.0), server.map(|s| s.1))
    }
}

#[derive(Debug, Clone)]
pub struct RunPlan {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Give up waiting for connections after this long and measure with what is open.
    pub connect_timeout: Duration,
    pub server_pid: Option<u32>,
    /// The server's core: `ksoftirqd/<core>`'s CPU over the measure phase counts as server CPU.
    pub softirq_cpu: Option<usize>,
    pub progress: bool,
    pub label: String,
}

/// Everything measured in one run (the measure phase only, unless said otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub connections_requested: usize,
    /// Most connections open at once, over the whole run.
    pub peak_connections: u64,
    pub connect_failed: u64,
    /// Failed connects by cause, e.g. "os error 99 (Cannot assign requested address)": count.
    pub connect_errors: BTreeMap<String, u64>,
    pub closed_unexpectedly: u64,
    pub mismatches: u64,
    pub connect_secs: f64,
    pub measured_secs: f64,
    pub messages: u64,
    pub messages_per_sec: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub mib_per_sec_received: f64,
    pub latency: LatencySummary,
    /// CPU time (user + system) of this bench process over the measure phase.
    pub bench_cpu_secs: f64,
    /// RSS of this bench process before it opened any connection (0: not readable).
    pub bench_rss_before_kib: u64,
    pub server: Option<ServerUsage>,
    pub timeline: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// CPU time of the server process over the measure phase.
    pub cpu_secs: f64,
    /// CPU time of `ksoftirqd/<server core>` over the measure phase (with `--softirq-cpu`).
    pub softirq_cpu_secs: Option<f64>,
    /// Server CPU time (process plus its core's ksoftirqd, when measured) per message over
    /// the measure phase, microseconds.
    pub cpu_us_per_message: Option<f64>,
    /// RSS before the bench opened any connection, and at the end of the measure phase.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// (RSS after - RSS before) / peak connections.
    pub rss_bytes_per_connection: Option<f64>,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    messages: u64,
    sent: u64,
    received: u64,
    open: u64,
    failed: u64,
    closed: u64,
    mismatches: u64,
}

fn totals(shared: &[Arc<SharedStats>]) -> Totals {
    let mut t = Totals::default();
    for s in shared {
        t.messages += s.messages.load(Ordering::Relaxed);
        t.sent += s.bytes_sent.load(Ordering::Relaxed);
        t.received += s.bytes_received.load(Ordering::Relaxed);
        t.open += s.open.load(Ordering::Relaxed);
        t.failed += s.connect_failed.load(Ordering::Relaxed);
        t.closed += s.closed_unexpectedly.load(Ordering::Relaxed);
        t.mismatches += s.mismatches.load(Ordering::Relaxed);
    }
    t
}

fn progress_bar(enabled: bool, len: u64, msg: String) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(msg);
    bar
}

/// Runs connect → warm-up → measure → finish, sampling once a second.
pub fn run_load(plan: &RunPlan, mut driver: Box<dyn LoadDriver>) -> anyhow::Result<RunResult> {
    let shared = driver.shared();
    let server_before = plan.server_pid.map(procfs::sample).transpose()?;
    let bench_rss_before_kib = procfs::sample_self().map_or(0, |s| s.rss_kib);
    let softirq_pid = plan.softirq_cpu.map(procfs::ksoftirqd_pid).transpose()?;
    let mut softirq_before = None;
    let t0 = Instant::now();
    let mut timeline = Vec::new();
    let mut peak = 0u64;
    let mut interval_hist = new_latency_histogram();
    let mut usage = Usage::new(plan.server_pid);

    // Connect.
    driver.begin_connect()?;
    let bar = progress_bar(plan.progress, plan.connections as u64, "connect".into());
    let mut last = totals(&shared);
    let mut next_sample = t0 + Duration::from_secs(1);
    let deadline = t0 + plan.connect_timeout;
    loop {
        let t = totals(&shared);
        peak = peak.max(t.open);
        bar.set_position(t.open);
        if t.open + t.failed >= plan.connections as u64 || Instant::now() >= deadline {
            break;
        }
        if Instant::now() >= next_sample {
            let s = sample(
                t0,
                Phase::Connect,
                &shared,
                &mut last,
                &mut interval_hist,
                &mut usage,
                1.0,
            );
            // Long connect phases (large counts) say how they progress, bar or not.
            if !plan.progress && timeline.len() % 5 == 4 {
                eprintln!(
                    "ringport-bench: connecting: {:.0} s, {} of {} open, {:.0}/s, {} failed",
                    s.t, s.connections, plan.connections, s.opened_per_sec, s.connect_failed
                );
            }
            timeline.push(s);
            next_sample += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // Warm up, then measure.
    let load_start = Instant::now();
    driver.begin_load(load_start)?;
    let total_secs = (plan.warmup + plan.duration).as_secs().max(1);
    let bar = progress_bar(plan.progress, total_secs, plan.label.clone());
    let mut hist = new_latency_histogram();
    let mut measure_base = totals(&shared);
    let mut bench_cpu_before = procfs::sample_self()?;
    let mut server_cpu_before = server_before.clone();
    let mut measure_start = load_start;
    let warmup_end = load_start + plan.warmup;
    let end = warmup_end + plan.duration;
    let mut warm = plan.warmup.is_zero();
    let mut tick = load_start;
    last = totals(&shared);
    while tick < end {
        let prev = tick;
        // A sample ends at the warm-up's end too, so the measure phase starts on time.
        let limit = if warm { end } else { warmup_end.min(end) };
        tick = (tick + Duration::from_secs(1)).min(limit);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let phase = if warm { Phase::Measure } else { Phase::Warmup };
        let secs = tick.duration_since(prev).as_secs_f64();
        let s = sample(
            t0,
            phase,
            &shared,
            &mut last,
            &mut interval_hist,
            &mut usage,
            secs.max(1e-3),
        );
        peak = peak.max(s.connections);
        timeline.push(s);
        if warm {
            hist.add(&interval_hist).expect("same bounds");
        }
        if !warm && tick >= warmup_end {
            warm = true;
            measure_base = totals(&shared);
            bench_cpu_before = procfs::sample_self()?;
            if let Some(pid) = plan.server_pid {
                server_cpu_before = Some(procfs::sample(pid)?);
            }
            softirq_before = softirq_pid.map(procfs::sample).transpose()?;
            measure_start = Instant::now();
        }
        bar.inc(1);
        let t = totals(&shared);
        bar.set_message(format!("{} conns, {} msgs", t.open, t.messages));
    }
    let measure_end = Instant::now();
    let bench_cpu_after = procfs::sample_self()?;
    let server_after = plan.server_pid.map(procfs::sample).transpose()?;
    let softirq_after = softirq_pid.map(procfs::sample).transpose()?;
    bar.finish_and_clear();

    driver.finish()?;
    // What the shards flushed on the way out belongs to the measure phase.
    for s in &shared {
        s.take_latencies(&mut hist);
    }
    let t = totals(&shared);
    let measured_secs = measure_end.duration_since(measure_start).as_secs_f64();
    let messages = t.messages - measure_base.messages;
    let received = t.received - measure_base.received;
    let softirq = match (softirq_before, softirq_after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let server = match (server_cpu_before, server_after, server_before) {
        (Some(b), Some(a), Some(first)) => {
            Some(server_usage(&first, &b, &a, softirq, messages, peak))
        }
        _ => None,
    };
    Ok(RunResult {
        label: plan.label.clone(),
        connections_requested: plan.connections,
        peak_connections: peak,
        connect_failed: t.failed,
        connect_errors: connect_errors(&shared),
        closed_unexpectedly: t.closed,
        mismatches: t.mismatches,
        connect_secs,
        measured_secs,
        messages,
        messages_per_sec: messages as f64 / measured_secs.max(1e-9),
        bytes_sent: t.sent - measure_base.sent,
        bytes_received: received,
        mib_per_sec_received: received as f64 / 1_048_576.0 / measured_secs.max(1e-9),
        latency: LatencySummary::from_histogram(&hist),
        bench_cpu_secs: bench_cpu_after.cpu_secs - bench_cpu_before.cpu_secs,
        bench_rss_before_kib,
        server,
        timeline,
    })
}

fn connect_errors(shared: &[Arc<SharedStats>]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in shared {
        let m = s.connect_errors.lock().unwrap_or_else(|e| e.into_inner());
        for (&errno, &n) in m.iter() {
            let key = if errno == 0 {
                "no errno".to_string()
            } else {
                std::io::Error::from_raw_os_error(errno).to_string()
            };
            *out.entry(key).or_default() += n;
        }
    }
    out
}

fn server_usage(
    first: &ProcSample,
    before: &ProcSample,
    after: &ProcSample,
    softirq_cpu_secs: Option<f64>,
    messages: u64,
    peak: u64,
) -> ServerUsage {
    let cpu = after.cpu_secs - before.cpu_secs;
    let total = cpu + softirq_cpu_secs.unwrap_or(0.0);
    let rss_delta = after.rss_kib as f64 - first.rss_kib as f64;
    ServerUsage {
        pid: after.pid,
        cpu_secs: cpu,
        softirq_cpu_secs,
        cpu_us_per_message: (messages > 0).then(|| total * 1e6 / messages as f64),
        rss_before_kib: first.rss_kib,
        rss_after_kib: after.rss_kib,
        rss_bytes_per_connection: (peak > 0).then(|| rss_delta * 1024.0 / peak as f64),
    }
}

fn sample(
    t0: Instant,
    phase: Phase,
    shared: &[Arc<SharedStats>],
    last: &mut Totals,
    interval_hist: &mut Histogram<u64>,
    usage: &mut Usage,
    secs: f64,
) -> Sample {
    let (bench_rss_kib, bench_cpu_pct, server_rss_kib, server_cpu_pct) = usage.take();
    interval_hist.reset();
    for s in shared {
        s.take_latencies(interval_hist);
    }
    let t = totals(shared);
    let out = Sample {
        t: t0.elapsed().as_secs_f64(),
        phase,
        connections: t.open,
        opened_per_sec: t.open.saturating_sub(last.open) as f64 / secs,
        connect_failed: t.failed,
        messages_per_sec: (t.messages - last.messages) as f64 / secs,
        mib_per_sec: (t.received - last.received) as f64 / 1_048_576.0 / secs,
        latency: LatencySummary::from_histogram(interval_hist),
        bench_rss_kib,
        bench_cpu_pct,
        server_rss_kib,
        server_cpu_pct,
    };
    *last = t;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_recorder_flushes_counters_and_latencies() {
        let shared = Arc::new(SharedStats::default());
        let mut r = ShardRecorder::new(shared.clone());
        r.message_done(Duration::from_micros(10));
        r.message_done(Duration::from_micros(30));
        r.sent(100);
        r.received(64);
        assert_eq!(
            shared.messages.load(Ordering::Relaxed),
            0,
            "nothing before a flush"
        );
        r.flush();
        assert_eq!(shared.messages.load(Ordering::Relaxed), 2);
        assert_eq!(shared.bytes_sent.load(Ordering::Relaxed), 100);
        assert_eq!(shared.bytes_received.load(Ordering::Relaxed), 64);
        let mut h = new_latency_histogram();
        shared.take_latencies(&mut h);
        assert_eq!(h.len(), 2);
        let mut again = new_latency_histogram();
        shared.take_latencies(&mut again);
        assert!(again.is_empty(), "taking resets");
    }
}
