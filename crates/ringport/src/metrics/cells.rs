//! Per-shard single-writer metric cells.
//!
//! Each shard owns one [`ShardRecorder`]: it is not `Clone` and every write takes `&mut self`,
//! so exactly one thread writes a shard's cells. A write is a relaxed load plus a relaxed store
//! (no locked read-modify-write), which costs what a plain `u64` increment costs; the cells are
//! atomics only so the scraping thread may read them without `unsafe`. Each shard's cells sit
//! inline in one allocation aligned to (and padded to a multiple of) a 64-byte cache line, so
//! shards never share a line.
//!
//! Only what the gateway itself observes has cells here; the engine-owned numbers (socket
//! bytes, buffer-ring exhaustion, send batches, loop time) and the history numbers are read
//! from their owners at scrape time (`EngineGateway::metrics_snapshot`).
//!
//! The [`Registry`] keeps a read-only `Arc` of every shard's cells and sums them at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::families::{
    CloseCause, ConnState, DeliveryKind, Direction, DropReason, MetricsSnapshot, ShardLoop,
    SkipReason, PUSH_LATENCY_BOUNDS_US,
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
}

fn cells<const N: usize>() -> [Cell; N] {
    std::array::from_fn(|_| Cell::default())
}

/// Buckets of the push-to-send histogram, including the overflow bucket.
const PUSH_LATENCY_BUCKETS: usize = PUSH_LATENCY_BOUNDS_US.len() + 1;

#[derive(Debug)]
struct HistogramCells<const B: usize> {
    bounds: &'static [u64],
    /// `bounds.len() + 1` buckets; the last is the overflow bucket.
    counts: [Cell; B],
    sum: Cell,
}

impl<const B: usize> HistogramCells<B> {
    fn new(bounds: &'static [u64]) -> Self {
        debug_assert_eq!(bounds.len() + 1, B);
        HistogramCells {
            bounds,
            counts: cells(),
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

/// One shard's cells, inline in one cache-line-aligned allocation.
#[derive(Debug)]
#[repr(align(64))]
pub struct ShardMetrics {
    connections_open: [Cell; ConnState::COUNT],
    accepted: Cell,
    closed: [Cell; CloseCause::COUNT],
    frames: [Cell; Direction::COUNT],
    deliveries: [Cell; DeliveryKind::COUNT],
    drops: [Cell; DropReason::COUNT],
    skips: [Cell; SkipReason::COUNT],
    heartbeats_sent: Cell,
    heartbeats_missed: Cell,
    /// Capacity of the connections' receive buffers (bytes of incomplete frames).
    receive_buffer: Cell,
    push_to_send_us: HistogramCells<PUSH_LATENCY_BUCKETS>,
}

impl ShardMetrics {
    fn new() -> ShardMetrics {
        ShardMetrics {
            connections_open: cells(),
            accepted: Cell::default(),
            closed: cells(),
            frames: cells(),
            deliveries: cells(),
            drops: cells(),
            skips: cells(),
            heartbeats_sent: Cell::default(),
            heartbeats_missed: Cell::default(),
            receive_buffer: Cell::default(),
            push_to_send_us: HistogramCells::new(&PUSH_LATENCY_BOUNDS_US),
        }
    }

    /// Adds this shard's values into `into` (and appends an entry for its loop numbers,
    /// which the engine fills).
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
        add(&mut into.deliveries, &self.deliveries);
        add(&mut into.drops, &self.drops);
        add(&mut into.skips, &self.skips);
        into.heartbeats_sent += self.heartbeats_sent.get();
        into.heartbeats_missed += self.heartbeats_missed.get();
        into.receive_buffer_bytes += self.receive_buffer.get();
        into.push_to_send_us.merge(&self.push_to_send_us.snapshot());
        into.shards.push(ShardLoop::default());
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
    pub fn frame(&mut self, dir: Direction) {
        self.cells.frames[dir.index()].add(1);
    }
    pub fn frames(&mut self, dir: Direction, n: u64) {
        self.cells.frames[dir.index()].add(n);
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
    /// A connection's receive buffer went from `from` to `to` bytes of capacity.
    pub fn receive_buffer(&mut self, from: usize, to: usize) {
        self.cells.receive_buffer.sub(from as u64);
        self.cells.receive_buffer.add(to as u64);
    }
    /// Receive-buffer capacity this shard's connections hold now.
    pub fn receive_buffer_bytes(&self) -> u64 {
        self.cells.receive_buffer.get()
    }
    pub fn push_to_send(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.cells.push_to_send_us.record(us);
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
        a.frame(Direction::In);
        b.frame(Direction::In);
        a.delivered(DeliveryKind::Room, 100);
        b.dropped(DropReason::SlowConsumer, 2);
        a.skipped(SkipReason::Closing, 1);
        a.receive_buffer(0, 4096);
        b.receive_buffer(0, 100);
        a.receive_buffer(4096, 64);
        a.push_to_send(Duration::from_micros(70));
        b.push_to_send(Duration::from_secs(5));

        let s = reg.snapshot();
        assert_eq!(s.accepted, 2);
        assert_eq!(s.connections_open, [0, 1, 0]);
        assert_eq!(s.closed[CloseCause::HandshakeTimeout.index()], 1);
        assert_eq!(s.frames, [2, 0]);
        assert_eq!(s.deliveries[DeliveryKind::Room.index()], 100);
        assert_eq!(s.drops[DropReason::SlowConsumer.index()], 2);
        assert_eq!(s.skips[SkipReason::Closing.index()], 1);
        assert_eq!(s.push_to_send_us.counts[1], 1, "70us lands in le=100us");
        assert_eq!(
            *s.push_to_send_us.counts.last().unwrap(),
            1,
            "overflow bucket"
        );
        assert_eq!(s.push_to_send_us.sum, 5_000_070);
        assert_eq!(s.receive_buffer_bytes, 164);
        assert_eq!(
            s.shards.len(),
            2,
            "one loop entry per shard, for the engine to fill"
        );
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
            "ringport_sends_deferred_total",
            "ringport_closes_cut_short_total",
            "ringport_send_batch_messages",
            "ringport_push_to_send_seconds",
            "ringport_history_bytes",
            "ringport_receive_buffer_bytes",
            "ringport_inbox_acked_total",
            "ringport_shard_busy_seconds_total",
            "ringport_shard_loop_iterations_total",
            "ringport_shard_descriptor_tables",
            "ringport_shard_kernel_enters_total",
            "ringport_shard_recv_arms_total",
            "ringport_shard_recv_pauses_total",
            "ringport_shard_yields_total",
            "ringport_shard_cq_overflows_total",
            "ringport_shard_recv_buffer_trimmed_bytes_total",
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
        assert!(out.contains("ringport_shard_busy_seconds_total{shard=\"1\"} 0\n"));
        assert!(out.contains("ringport_push_to_send_seconds_bucket{le=\"+Inf\"} 0\n"));
        // Every non-comment line is `name[{labels}] value` with a numeric value.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
    }
}
