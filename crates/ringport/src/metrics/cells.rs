//! Per-shard single-writer metric cells.
//!
//! Each shard owns one [`ShardRecorder`]: it is not `Clone` and every write takes `&mut self`,
//! so exactly one thread writes a shard's cells. A write is a relaxed load plus a relaxed store
//! (no locked read-modify-write), which costs what a plain `u64` increment costs; the cells are
//! atomics only so the scraping thread may read them without `unsafe`. Each shard's cells sit
//! in their own allocation, aligned to a cache line, so shards never share a line.
//!
//! The [`Registry`] keeps a read-only `Arc` of every shard's cells and sums them at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::families::{
    CloseCause, ConnState, DeliveryKind, Direction, DropReason, MetricsSnapshot, ShardLoop,
    SkipReason, PUSH_LATENCY_BOUNDS_US, SEND_BATCH_BOUNDS,
};
use super::text::HistogramSnapshot;

/// A value written by one thread, read by any.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl Cell {
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// Only the owning [`ShardRecorder`] calls this (enforced by `&mut` there).
    fn add(&self, n: u64) {
        self.0.store(self.get().wrapping_add(n), Relaxed);
    }
    fn sub(&self, n: u64) {
        self.0.store(self.get().saturating_sub(n), Relaxed);
    }
    fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

fn cells(n: usize) -> Box<[Cell]> {
    (0..n).map(|_| Cell::default()).collect()
}

#[derive(Debug)]
struct HistogramCells {
    bounds: &'static [u64],
    counts: Box<[Cell]>,
    sum: Cell,
}

impl HistogramCells {
    fn new(bounds: &'static [u64]) -> HistogramCells {
        HistogramCells {
            bounds,
            counts: cells(bounds.len() + 1),
            sum: Cell::default(),
        }
    }
    fn record(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].add(1);
        self.sum.add(v);
    }
    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// One shard's cells.
#[derive(Debug)]
#[repr(align(64))]
pub struct ShardMetrics {
    connections_open: Box<[Cell]>,
    accepted: Cell,
    closed: Box<[Cell]>,
    frames: Box<[Cell]>,
    bytes: Box<[Cell]>,
    deliveries: Box<[Cell]>,
    drops: Box<[Cell]>,
    skips: Box<[Cell]>,
    heartbeats_sent: Cell,
    heartbeats_missed: Cell,
    bufring_exhausted: Cell,
    send_batch: HistogramCells,
    push_to_send_us: HistogramCells,
    history_bytes: Cell,
    busy_ns: Cell,
    iterations: Cell,
}

impl ShardMetrics {
    fn new() -> ShardMetrics {
        ShardMetrics {
            connections_open: cells(ConnState::COUNT),
            accepted: Cell::default(),
            closed: cells(CloseCause::COUNT),
            frames: cells(Direction::COUNT),
            bytes: cells(Direction::COUNT),
            deliveries: cells(DeliveryKind::COUNT),
            drops: cells(DropReason::COUNT),
            skips: cells(SkipReason::COUNT),
            heartbeats_sent: Cell::default(),
            heartbeats_missed: Cell::default(),
            bufring_exhausted: Cell::default(),
            send_batch: HistogramCells::new(&SEND_BATCH_BOUNDS),
            push_to_send_us: HistogramCells::new(&PUSH_LATENCY_BOUNDS_US),
            history_bytes: Cell::default(),
            busy_ns: Cell::default(),
            iterations: Cell::default(),
        }
    }

    /// Adds this shard's values into `into` (and appends its loop numbers).
    fn add_to(&self, into: &mut MetricsSnapshot) {
        fn add<const N: usize>(dst: &mut [u64; N], src: &[Cell]) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s.get();
            }
        }
        add(&mut into.connections_open, &self.connections_open);
        into.accepted += self.accepted.get();
        add(&mut into.closed, &self.closed);
        add(&mut into.frames, &self.frames);
        add(&mut into.bytes, &self.bytes);
        add(&mut into.deliveries, &self.deliveries);
        add(&mut into.drops, &self.drops);
        add(&mut into.skips, &self.skips);
        into.heartbeats_sent += self.heartbeats_sent.get();
        into.heartbeats_missed += self.heartbeats_missed.get();
        into.bufring_exhausted += self.bufring_exhausted.get();
        into.send_batch.merge(&self.send_batch.snapshot());
        into.push_to_send_us.merge(&self.push_to_send_us.snapshot());
        into.history_bytes += self.history_bytes.get();
        into.shards.push(ShardLoop {
            busy_ns: self.busy_ns.get(),
            iterations: self.iterations.get(),
        });
    }
}

/// The only writer of one shard's cells; lives in that shard's handler.
#[derive(Debug)]
pub struct ShardRecorder {
    cells: Arc<ShardMetrics>,
}

impl ShardRecorder {
    /// A connection entered `to` (from `from`, or newly opened when `from` is `None`);
    /// `to: None` means it closed.
    pub fn state_change(&mut self, from: Option<ConnState>, to: Option<ConnState>) {
        if let Some(f) = from {
            self.cells.connections_open[f.index()].sub(1);
        }
        if let Some(t) = to {
            self.cells.connections_open[t.index()].add(1);
        }
    }
    pub fn accepted(&mut self) {
        self.cells.accepted.add(1);
    }
    pub fn closed(&mut self, cause: CloseCause) {
        self.cells.closed[cause.index()].add(1);
    }
    pub fn frame(&mut self, dir: Direction, bytes: u64) {
        self.cells.frames[dir.index()].add(1);
        self.cells.bytes[dir.index()].add(bytes);
    }
    /// Socket bytes not tied to a frame count (e.g. taken from engine counters).
    pub fn bytes(&mut self, dir: Direction, bytes: u64) {
        self.cells.bytes[dir.index()].add(bytes);
    }
    pub fn delivered(&mut self, kind: DeliveryKind, n: u64) {
        self.cells.deliveries[kind.index()].add(n);
    }
    pub fn dropped(&mut self, reason: DropReason, n: u64) {
        self.cells.drops[reason.index()].add(n);
    }
    pub fn skipped(&mut self, reason: SkipReason, n: u64) {
        self.cells.skips[reason.index()].add(n);
    }
    pub fn heartbeat_sent(&mut self) {
        self.cells.heartbeats_sent.add(1);
    }
    pub fn heartbeat_missed(&mut self) {
        self.cells.heartbeats_missed.add(1);
    }
    pub fn bufring_exhausted(&mut self) {
        self.cells.bufring_exhausted.add(1);
    }
    pub fn send_batch(&mut self, messages: u64) {
        self.cells.send_batch.record(messages);
    }
    pub fn push_to_send(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.cells.push_to_send_us.record(us);
    }
    pub fn set_history_bytes(&mut self, bytes: u64) {
        self.cells.history_bytes.set(bytes);
    }
    /// One loop iteration that worked for `busy`.
    pub fn loop_iteration(&mut self, busy: Duration) {
        self.cells.iterations.add(1);
        let ns = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
        self.cells.busy_ns.add(ns);
    }
}

/// Recorders waiting for their shards: the engine's shard factory is a shared `Fn`, so it
/// takes shard `i`'s recorder from here on shard `i`'s thread.
#[derive(Debug)]
pub struct RecorderSlots(std::sync::Mutex<Vec<Option<ShardRecorder>>>);

impl RecorderSlots {
    pub fn new(recorders: Vec<ShardRecorder>) -> RecorderSlots {
        RecorderSlots(std::sync::Mutex::new(
            recorders.into_iter().map(Some).collect(),
        ))
    }

    /// Shard `shard`'s recorder; `None` if out of range or already taken (one writer only).
    pub fn take(&self, shard: usize) -> Option<ShardRecorder> {
        let mut slots = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slots.get_mut(shard).and_then(Option::take)
    }
}

/// Read side: every shard's cells, summed at scrape time.
#[derive(Debug, Clone)]
pub struct Registry {
    shards: Vec<Arc<ShardMetrics>>,
}

impl Registry {
    /// A registry for `shards` shards and the one recorder for each (hand recorder `i` to shard `i`).
    pub fn new(shards: usize) -> (Registry, Vec<ShardRecorder>) {
        let cells: Vec<Arc<ShardMetrics>> =
            (0..shards).map(|_| Arc::new(ShardMetrics::new())).collect();
        let recorders = cells
            .iter()
            .map(|c| ShardRecorder {
                cells: Arc::clone(c),
            })
            .collect();
        (Registry { shards: cells }, recorders)
    }

    /// Sum over shards now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        for shard in &self.shards {
            shard.add_to(&mut s);
        }
        s
    }

    /// Snapshot rendered as Prometheus text.
    pub fn render(&self, out: &mut String) {
        self.snapshot().render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_write_registry_sums() {
        let (reg, mut recs) = Registry::new(2);
        let (a, b) = recs.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        a.accepted();
        a.state_change(None, Some(ConnState::Handshaking));
        a.state_change(Some(ConnState::Handshaking), Some(ConnState::Active));
        b.accepted();
        b.state_change(None, Some(ConnState::Handshaking));
        b.state_change(Some(ConnState::Handshaking), None);
        b.closed(CloseCause::HandshakeTimeout);
        a.frame(Direction::In, 10);
        b.frame(Direction::In, 5);
        a.delivered(DeliveryKind::Room, 100);
        b.dropped(DropReason::SlowConsumer, 2);
        a.skipped(SkipReason::Sleeping, 1);
        a.send_batch(1);
        b.send_batch(3);
        b.send_batch(5000);
        a.push_to_send(Duration::from_micros(70));
        a.set_history_bytes(10);
        b.set_history_bytes(20);
        a.loop_iteration(Duration::from_millis(1));
        b.loop_iteration(Duration::from_millis(3));

        let s = reg.snapshot();
        assert_eq!(s.accepted, 2);
        assert_eq!(s.connections_open, [0, 1, 0]);
        assert_eq!(s.closed[CloseCause::HandshakeTimeout.index()], 1);
        assert_eq!(s.frames, [2, 0]);
        assert_eq!(s.bytes, [15, 0]);
        assert_eq!(s.deliveries[DeliveryKind::Room.index()], 100);
        assert_eq!(s.drops[DropReason::SlowConsumer.index()], 2);
        assert_eq!(s.skips[SkipReason::Sleeping.index()], 1);
        assert_eq!(s.send_batch.counts[0], 1, "1 message lands in le=1");
        assert_eq!(s.send_batch.counts[2], 1, "3 messages land in le=4");
        assert_eq!(*s.send_batch.counts.last().unwrap(), 1, "overflow bucket");
        assert_eq!(s.send_batch.sum, 5004);
        assert_eq!(s.push_to_send_us.counts[1], 1, "70us lands in le=100us");
        assert_eq!(s.history_bytes, 30);
        assert_eq!(s.shards.len(), 2);
        assert_eq!(s.shards[1].busy_ns, 3_000_000);
    }

    #[test]
    fn each_recorder_is_taken_once() {
        let (_reg, recs) = Registry::new(2);
        let slots = RecorderSlots::new(recs);
        assert!(slots.take(1).is_some());
        assert!(slots.take(1).is_none());
        assert!(slots.take(0).is_some());
        assert!(slots.take(2).is_none());
    }

    #[test]
    fn rendered_text_has_every_family_once() {
        let (reg, mut recs) = Registry::new(2);
        recs[0].accepted();
        recs[1].closed(CloseCause::Kicked);
        recs[0].state_change(None, Some(ConnState::Sleeping));
        recs[1].loop_iteration(Duration::from_millis(500));
        let mut out = String::new();
        reg.render(&mut out);
        for family in [
            "ringport_connections_open",
            "ringport_connections_accepted_total",
            "ringport_connections_closed_total",
            "ringport_frames_total",
            "ringport_bytes_total",
            "ringport_deliveries_total",
            "ringport_drops_total",
            "ringport_skips_total",
            "ringport_heartbeats_sent_total",
            "ringport_heartbeats_missed_total",
            "ringport_bufring_exhausted_total",
            "ringport_send_batch_messages",
            "ringport_push_to_send_seconds",
            "ringport_history_bytes",
            "ringport_inbox_acked_total",
            "ringport_shard_busy_seconds_total",
            "ringport_shard_loop_iterations_total",
        ] {
            assert_eq!(
                out.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
        assert!(out.contains("ringport_connections_open{state=\"sleeping\"} 1\n"));
        assert!(out.contains("ringport_connections_accepted_total 1\n"));
        assert!(out.contains("ringport_connections_closed_total{reason=\"kicked\"} 1\n"));
        assert!(out.contains("ringport_shard_busy_seconds_total{shard=\"1\"} 0.5\n"));
        assert!(out.contains("ringport_push_to_send_seconds_bucket{le=\"+Inf\"} 0\n"));
        // Every non-comment line is `name[{labels}] value` with a numeric value.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
    }
}
