//! Per-shard counters.
//!
//! Each counter has exactly one writer (its shard thread), so an increment is a relaxed load
//! and store — a plain `mov`, no locked instruction on the hot path — and any thread may read
//! a consistent-enough snapshot at any time (metrics scrapes).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::CloseReason;

/// A single-writer counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (only the owning shard calls this).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads the value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Buckets of the "messages per send" histogram: 1, 2-3, 4-7, ... 512-1023, 1024+ (bucket `i`
/// holds `2^i ..= 2^(i+1) - 1`, the last everything from 1,024 on).
pub const SEND_BATCH_BUCKETS: usize = 11;

/// Kinds of accept errors, counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// The shard's direct descriptor table (connection cap) is full.
    TableFull,
    /// Out of kernel memory or buffers.
    Resources,
    /// The connection was aborted before we accepted it (per-connection, not fatal).
    Aborted,
    /// Anything else.
    Other,
}

impl AcceptError {
    /// Metric label names, by [`AcceptError`] index.
    pub const NAMES: [&'static str; 4] = ["table_full", "resources", "aborted", "other"];
}

/// The counters of one shard.
#[derive(Default, Debug)]
pub struct ShardStats {
    /// Connections accepted.
    pub accepted: Counter,
    /// Outbound connections established.
    pub connected: Counter,
    /// Connections currently open (gauge).
    pub open: Counter,
    /// Connections closed, by [`CloseReason::bucket`].
    pub closed: [Counter; CloseReason::BUCKETS],
    /// Bytes received.
    pub bytes_in: Counter,
    /// Bytes sent (acknowledged by the kernel).
    pub bytes_out: Counter,
    /// Receive completions delivered to the handler.
    pub recvs: Counter,
    /// Payloads queued for sending (`send` / `send_copy` calls that succeeded).
    pub msgs_out: Counter,
    /// Send operations issued (`IORING_OP_SEND` for a lone chunk, `SENDMSG` for more).
    pub sends: Counter,
    /// Histogram of messages per send (see [`SEND_BATCH_BUCKETS`]): the payloads queued to the
    /// connection since its previous send was issued.
    pub send_batch: [Counter; SEND_BATCH_BUCKETS],
    /// Messages counted in `send_batch` (its exact sum).
    pub send_batch_msgs: Counter,
    /// Times the receive buffer ring ran dry (ENOBUFS) and a connection waited for buffers.
    pub bufring_exhausted: Counter,
    /// Resident bytes of receive buffers given back to the kernel after the shard had been
    /// quiet for `EngineConfig::recv_buffer_trim`.
    pub recv_buffer_trimmed_bytes: Counter,
    /// Receive operations armed. A multishot receive stays armed across completions, so this
    /// grows by one per connection; anything beyond that is a re-arm (the kernel ended the
    /// receive: ENOBUFS, a full completion queue, an error). On epoll also one per connection.
    pub recv_arms: Counter,
    /// Times a connection's receiving was paused (`Ctx::pause_receiving`: the handler stops
    /// reading a client over a rate limit, and TCP's window pushes back on it).
    pub recv_pauses: Counter,
    /// Times the shard yielded the core between two chunks of a fan-out
    /// (`EngineConfig::yield_between_chunks`).
    pub yields: Counter,
    /// Calls into the kernel to submit or wait (gauge, updated once per loop turn):
    /// `io_uring_enter` on every ring of the shard, `epoll_wait` on epoll (whose sends and
    /// receives are system calls of their own, not counted here).
    pub kernel_enters: Counter,
    /// Loop turns that found a completion queue overflowed, counted per ring (gauge, updated
    /// once per loop turn; 0 on epoll): the kernel kept completions in its backlog until the
    /// next enter. Growing means `ring_entries` (the CQ is 4x) is too small for a turn.
    pub cq_overflows: Counter,
    /// Accept errors by [`AcceptError`] kind.
    pub accept_errors: [Counter; 4],
    /// Times accepting was paused (table full or resource error).
    pub accept_paused: Counter,
    /// Connections accepted over the process-wide cap, sent `over_cap_reply` and closed.
    pub refused_over_cap: Counter,
    /// Loop turns (io_uring_enter calls that waited).
    pub loops: Counter,
    /// Completions processed.
    pub completions: Counter,
    /// Nanoseconds spent processing (not waiting in the kernel), for loop utilisation.
    pub busy_ns: Counter,
    /// Sends refused or connections closed at the high-water mark.
    pub slow_consumers: Counter,
    /// Graceful closes cut short because the peer sent more than
    /// `EngineConfig::close_discard_max_bytes` after our FIN.
    pub close_discard_cut: Counter,
    /// Connections whose send waited for a later loop turn because the turn had started
    /// `EngineConfig::max_sends_per_turn` sends or `max_send_bytes_per_turn` bytes already
    /// (once per connection per turn).
    pub sends_deferred: Counter,
    /// Ring operations in flight for connections, i.e. apart from the shard's doorbell read
    /// and armed accept (gauge, updated once per loop turn; 0 at rest proves nothing leaked).
    pub inflight_ops: Counter,
    /// Connection slots currently allocated (gauge; includes closing ones).
    pub slots_used: Counter,
    /// Direct descriptor tables (io_uring rings) the shard has (gauge; 0 on epoll). Grows
    /// as tables fill, up to `EngineConfig::max_descriptor_tables`.
    pub descriptor_tables: Counter,
    /// Pooled send blocks currently allocated (gauge).
    pub send_blocks: Counter,
    /// Bytes queued to this shard's connections and not yet sent (gauge, updated once per
    /// loop turn).
    pub queued_bytes: Counter,
}

impl ShardStats {
    pub(crate) fn record_batch(&self, messages: u32) {
        let b = (messages.max(1).ilog2() as usize).min(SEND_BATCH_BUCKETS - 1);
        self.send_batch[b].inc();
        self.send_batch_msgs.add(u64::from(messages));
    }

    /// A plain copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.get(),
            connected: self.connected.get(),
            open: self.open.get(),
            closed: std::array::from_fn(|i| self.closed[i].get()),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            recvs: self.recvs.get(),
            msgs_out: self.msgs_out.get(),
            sends: self.sends.get(),
            send_batch: std::array::from_fn(|i| self.send_batch[i].get()),
            send_batch_msgs: self.send_batch_msgs.get(),
            bufring_exhausted: self.bufring_exhausted.get(),
            recv_buffer_trimmed_bytes: self.recv_buffer_trimmed_bytes.get(),
            recv_arms: self.recv_arms.get(),
            recv_pauses: self.recv_pauses.get(),
            yields: self.yields.get(),
            kernel_enters: self.kernel_enters.get(),
            cq_overflows: self.cq_overflows.get(),
            accept_errors: std::array::from_fn(|i| self.accept_errors[i].get()),
            accept_paused: self.accept_paused.get(),
            refused_over_cap: self.refused_over_cap.get(),
            loops: self.loops.get(),
            completions: self.completions.get(),
            busy_ns: self.busy_ns.get(),
            slow_consumers: self.slow_consumers.get(),
            close_discard_cut: self.close_discard_cut.get(),
            sends_deferred: self.sends_deferred.get(),
            inflight_ops: self.inflight_ops.get(),
            slots_used: self.slots_used.get(),
            descriptor_tables: self.descriptor_tables.get(),
            send_blocks: self.send_blocks.get(),
            queued_bytes: self.queued_bytes.get(),
        }
    }
}

/// A copy of a shard's counters (see [`ShardStats`] for each field's meaning).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub connected: u64,
    pub open: u64,
    pub closed: [u64; CloseReason::BUCKETS],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub recvs: u64,
    pub msgs_out: u64,
    pub sends: u64,
    pub send_batch: [u64; SEND_BATCH_BUCKETS],
    pub send_batch_msgs: u64,
    pub bufring_exhausted: u64,
    pub recv_buffer_trimmed_bytes: u64,
    pub recv_arms: u64,
    pub recv_pauses: u64,
    pub yields: u64,
    pub kernel_enters: u64,
    pub cq_overflows: u64,
    pub accept_errors: [u64; 4],
    pub accept_paused: u64,
    pub refused_over_cap: u64,
    pub loops: u64,
    pub completions: u64,
    pub busy_ns: u64,
    pub slow_consumers: u64,
    /// See [`ShardStats::close_discard_cut`].
    pub close_discard_cut: u64,
    pub sends_deferred: u64,
    pub inflight_ops: u64,
    pub slots_used: u64,
    pub descriptor_tables: u64,
    pub send_blocks: u64,
    pub queued_bytes: u64,
}

impl StatsSnapshot {
    /// Sum of snapshots (all shards).
    pub fn sum<'a>(it: impl IntoIterator<Item = &'a StatsSnapshot>) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in it {
            t.accepted += s.accepted;
            t.connected += s.connected;
            t.open += s.open;
            for i in 0..CloseReason::BUCKETS {
                t.closed[i] += s.closed[i];
            }
            t.bytes_in += s.bytes_in;
            t.bytes_out += s.bytes_out;
            t.recvs += s.recvs;
            t.msgs_out += s.msgs_out;
            t.sends += s.sends;
            for i in 0..SEND_BATCH_BUCKETS {
                t.send_batch[i] += s.send_batch[i];
            }
            t.send_batch_msgs += s.send_batch_msgs;
            t.bufring_exhausted += s.bufring_exhausted;
            t.recv_buffer_trimmed_bytes += s.recv_buffer_trimmed_bytes;
            t.recv_arms += s.recv_arms;
            t.recv_pauses += s.recv_pauses;
            t.yields += s.yields;
            t.kernel_enters += s.kernel_enters;
            t.cq_overflows += s.cq_overflows;
            for i in 0..4 {
                t.accept_errors[i] += s.accept_errors[i];
            }
            t.accept_paused += s.accept_paused;
            t.refused_over_cap += s.refused_over_cap;
            t.loops += s.loops;
            t.completions += s.completions;
            t.busy_ns += s.busy_ns;
            t.slow_consumers += s.slow_consumers;
            t.close_discard_cut += s.close_discard_cut;
            t.sends_deferred += s.sends_deferred;
            t.inflight_ops += s.inflight_ops;
            t.slots_used += s.slots_used;
            t.descriptor_tables += s.descriptor_tables;
            t.send_blocks += s.send_blocks;
            t.queued_bytes += s.queued_bytes;
        }
        t
    }

    /// Total connections closed.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}
