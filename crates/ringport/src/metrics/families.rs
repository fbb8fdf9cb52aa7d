//! The metric families the gateway exports, as one plain snapshot struct and its renderer.
//!
//! A [`MetricsSnapshot`] is a sum over shards taken at scrape time. Most of it comes from the
//! gateway's per-shard cells ([`super::Registry::snapshot`]); the engine-owned numbers
//! (accepted, bytes, buffer-ring exhaustion, send batches, loop busy time) may instead be
//! filled from `EngineHandle::stats` before rendering — every field is public for that.

use super::text::{HistogramSnapshot, MetricType, TextWriter};

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every variant, in label order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Number of variants (size of per-variant arrays).
            pub const COUNT: usize = $name::ALL.len();
            /// The Prometheus label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
            /// Index into per-variant arrays.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum! {
    /// Session state of an open connection.
    ConnState { Handshaking => "handshaking", Active => "active", Sleeping => "sleeping" }
}

label_enum! {
    /// Why a connection closed (engine reasons plus the gateway's own).
    CloseCause {
        Local => "local",
        PeerClosed => "peer_closed",
        PeerReset => "peer_reset",
        IdleTimeout => "idle_timeout",
        SlowConsumer => "slow_consumer",
        Shutdown => "shutdown",
        Io => "io_error",
        HandshakeTimeout => "handshake_timeout",
        HeartbeatTimeout => "heartbeat_timeout",
        AuthFailed => "auth_failed",
        ProtocolError => "protocol_error",
        Kicked => "kicked",
    }
}

label_enum! {
    /// What a push addressed.
    DeliveryKind { Room => "room", User => "user", Broadcast => "broadcast", Publish => "publish" }
}

label_enum! {
    /// Why a message meant for a connection was discarded.
    DropReason {
        SlowConsumer => "slow_consumer",
        NotConnected => "not_connected",
        RateLimited => "rate_limited",
        TooLarge => "too_large",
        HoldbackOverflow => "holdback_overflow",
    }
}

label_enum! {
    /// Why a message was not handed to one of its recipients, on purpose (not an error).
    /// A publisher is not skipped: it receives its own message like every member. A
    /// sleeping connection is not skipped either: held messages count as deliveries,
    /// messages beyond the holdback as `drops_total{reason="holdback_overflow"}`.
    SkipReason { Closing => "closing" }
}

label_enum! {
    /// Direction of traffic.
    Direction { In => "in", Out => "out" }
}

/// Bounds of the send batch histogram (messages per gathered send).
pub static SEND_BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// Bounds of the push-to-send latency histogram, in microseconds.
pub static PUSH_LATENCY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Reads one per-shard counter out of a [`ShardLoop`].
type ShardValue = fn(&ShardLoop) -> u64;

/// Event-loop numbers of one shard (kept per shard: utilisation is a per-thread question).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLoop {
    /// Nanoseconds the loop spent processing (not waiting in io_uring_enter).
    pub busy_ns: u64,
    pub iterations: u64,
    /// Direct descriptor tables (io_uring rings) the shard has; 0 on epoll.
    pub descriptor_tables: u64,
    /// Calls into the kernel to submit or wait (`io_uring_enter` on every ring; `epoll_wait`).
    pub kernel_enters: u64,
    /// Receive operations armed (one per connection while multishot receives stay armed).
    pub recv_arms: u64,
    /// Times a connection's receiving was paused (a client over its publish rate).
    pub recv_pauses: u64,
    /// Times the shard yielded the core between the chunks of a fan-out.
    pub yields: u64,
    /// Loop turns that found a completion queue overflowed (per ring; 0 on epoll).
    pub cq_overflows: u64,
    /// Resident receive-buffer bytes given back to the kernel (`engine.recv_buffer_trim_ms`).
    pub recv_buffer_trimmed_bytes: u64,
}

/// Everything `/metrics` shows, summed over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub connections_open: [u64; ConnState::COUNT],
    pub accepted: u64,
    pub closed: [u64; CloseCause::COUNT],
    pub frames: [u64; Direction::COUNT],
    pub bytes: [u64; Direction::COUNT],
    pub deliveries: [u64; DeliveryKind::COUNT],
    pub drops: [u64; DropReason::COUNT],
    pub skips: [u64; SkipReason::COUNT],
    pub heartbeats_sent: u64,
    pub heartbeats_missed: u64,
    pub bufring_exhausted: u64,
    /// Connections whose send waited for a later loop turn (`engine.max_sends_per_turn`).
    pub sends_deferred: u64,
    /// Graceful closes cut short: the peer sent more than `engine.close_discard_max_bytes`.
    pub closes_cut_short: u64,
    pub send_batch: HistogramSnapshot,
    pub push_to_send_us: HistogramSnapshot,
    pub history_bytes: u64,
    // --- abuse limits (issue 10) ---
    /// Streams with a log (`ringport_history_streams`).
    pub history_streams: u64,
    /// Receive-buffer capacity held by connections (`ringport_receive_buffer_bytes`).
    pub receive_buffer_bytes: u64,
    /// Connections the engine refused over the process-wide cap (limit `server_full`).
    pub refused_over_cap: u64,
    // --- end abuse limits ---
    /// User-inbox messages acknowledged by clients (delivery receipts).
    pub inbox_acked: u64,
    /// Indexed by shard.
    pub shards: Vec<ShardLoop>,
    /// The engine's I/O backend (`uring`, `epoll`) and why it runs
    /// (`ringport_engine_info`).
    pub io_backend: &'static str,
    pub io_backend_reason: String,
}

impl Default for MetricsSnapshot {
    fn default() -> Self {
        MetricsSnapshot {
            connections_open: [0; ConnState::COUNT],
            accepted: 0,
            closed: [0; CloseCause::COUNT],
            frames: [0; Direction::COUNT],
            bytes: [0; Direction::COUNT],
            deliveries: [0; DeliveryKind::COUNT],
            drops: [0; DropReason::COUNT],
            skips: [0; SkipReason::COUNT],
            heartbeats_sent: 0,
            heartbeats_missed: 0,
            bufring_exhausted: 0,
            sends_deferred: 0,
            closes_cut_short: 0,
            send_batch: HistogramSnapshot::empty(&SEND_BATCH_BOUNDS),
            push_to_send_us: HistogramSnapshot::empty(&PUSH_LATENCY_BOUNDS_US),
            history_bytes: 0,
            history_streams: 0,
            receive_buffer_bytes: 0,
            refused_over_cap: 0,
            inbox_acked: 0,
            shards: Vec::new(),
            io_backend: "",
            io_backend_reason: String::new(),
        }
    }
}

fn by<T: Copy>(
    all: &[T],
    values: &[u64],
    label: impl Fn(T) -> &'static str,
) -> Vec<(&'static str, u64)> {
    all.iter()
        .zip(values)
        .map(|(v, n)| (label(*v), *n))
        .collect()
}

impl MetricsSnapshot {
    /// Appends the Prometheus text of every family.
    pub fn render(&self, out: &mut String) {
        let mut w = TextWriter::new(out);

        w.family(
            "ringport_build_info",
            "Version of the running gateway (always 1).",
            MetricType::Gauge,
        );
        w.sample(
            "ringport_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );

        w.family(
            "ringport_engine_info",
            "The engine's I/O backend (uring or epoll) and why it runs (always 1).",
            MetricType::Gauge,
        );
        w.sample(
            "ringport_engine_info",
            &[
                ("backend", self.io_backend),
                ("reason", &self.io_backend_reason),
            ],
            1,
        );

        w.family(
            "ringport_connections_open",
            "Open connections by session state.",
            MetricType::Gauge,
        );
        for (state, n) in by(ConnState::ALL, &self.connections_open, ConnState::label) {
            w.sample("ringport_connections_open", &[("state", state)], n);
        }

        w.family(
            "ringport_connections_accepted_total",
            "Connections accepted.",
            MetricType::Counter,
        );
        w.sample("ringport_connections_accepted_total", &[], self.accepted);

        w.family(
            "ringport_connections_closed_total",
            "Connections closed, by reason.",
            MetricType::Counter,
        );
        for (reason, n) in by(CloseCause::ALL, &self.closed, CloseCause::label) {
            w.sample(
                "ringport_connections_closed_total",
                &[("reason", reason)],
                n,
            );
        }

        w.family(
            "ringport_frames_total",
            "Protocol frames by direction.",
            MetricType::Counter,
        );
        for (dir, n) in by(Direction::ALL, &self.frames, Direction::label) {
            w.sample("ringport_frames_total", &[("direction", dir)], n);
        }

        w.family(
            "ringport_bytes_total",
            "Bytes on client sockets by direction.",
            MetricType::Counter,
        );
        for (dir, n) in by(Direction::ALL, &self.bytes, Direction::label) {
            w.sample("ringport_bytes_total", &[("direction", dir)], n);
        }

        w.family(
            "ringport_deliveries_total",
            "Messages queued to a connection, by what addressed them.",
            MetricType::Counter,
        );
        for (kind, n) in by(DeliveryKind::ALL, &self.deliveries, DeliveryKind::label) {
            w.sample("ringport_deliveries_total", &[("kind", kind)], n);
        }

        w.family(
            "ringport_drops_total",
            "Messages discarded for a connection, by reason.",
            MetricType::Counter,
        );
        for (reason, n) in by(DropReason::ALL, &self.drops, DropReason::label) {
            w.sample("ringport_drops_total", &[("reason", reason)], n);
        }

        w.family(
            "ringport_skips_total",
            "Messages not handed to a recipient on purpose, by reason (closing: its connection had already sent or received CLOSE). A publisher receives its own messages and a sleeping connection is not skipped (held messages count as deliveries, those beyond the holdback as drops with reason holdback_overflow).",
            MetricType::Counter,
        );
        for (reason, n) in by(SkipReason::ALL, &self.skips, SkipReason::label) {
            w.sample("ringport_skips_total", &[("reason", reason)], n);
        }

        w.family(
            "ringport_heartbeats_sent_total",
            "Heartbeat probes sent by the server.",
            MetricType::Counter,
        );
        w.sample("ringport_heartbeats_sent_total", &[], self.heartbeats_sent);
        w.family(
            "ringport_heartbeats_missed_total",
            "Heartbeat intervals a client let pass in silence.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_heartbeats_missed_total",
            &[],
            self.heartbeats_missed,
        );

        w.family(
            "ringport_bufring_exhausted_total",
            "Times a shard's receive buffer ring ran empty (ENOBUFS); raise engine.recv_buffers if this grows.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_bufring_exhausted_total",
            &[],
            self.bufring_exhausted,
        );

        w.family(
            "ringport_sends_deferred_total",
            "Connections whose send waited for a later loop turn because the turn had started engine.max_sends_per_turn sends or offered engine.max_send_bytes_per_turn bytes (once per connection per turn): a fan-out spread over turns so handshakes and receives on the shard are not held behind it.",
            MetricType::Counter,
        );
        w.sample("ringport_sends_deferred_total", &[], self.sends_deferred);

        w.family(
            "ringport_closes_cut_short_total",
            "Graceful closes cut short (closed at once; the kernel resets the connection) because the peer sent more than engine.close_discard_max_bytes (131072 for a connection closed before its WELCOME or for abuse) after the server's FIN, instead of reading it for the whole linger.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_closes_cut_short_total",
            &[],
            self.closes_cut_short,
        );

        w.family(
            "ringport_send_batch_messages",
            "Messages per send: those queued to the connection since its previous send.",
            MetricType::Histogram,
        );
        w.histogram("ringport_send_batch_messages", &[], &self.send_batch, 1.0);

        w.family(
            "ringport_push_to_send_seconds",
            "Time from a push arriving to its send being submitted.",
            MetricType::Histogram,
        );
        // Recorded in microseconds, exported in seconds.
        w.histogram(
            "ringport_push_to_send_seconds",
            &[],
            &self.push_to_send_us,
            1e6,
        );

        w.family(
            "ringport_history_bytes",
            "Memory held by message history.",
            MetricType::Gauge,
        );
        w.sample("ringport_history_bytes", &[], self.history_bytes);

        // --- abuse limits (issue 10) ---
        w.family(
            "ringport_history_streams",
            "Streams with a log (a log exists once a message was appended, until it idles out).",
            MetricType::Gauge,
        );
        w.sample("ringport_history_streams", &[], self.history_streams);
        w.family(
            "ringport_receive_buffer_bytes",
            "Memory held by connections' receive buffers (frames not yet complete).",
            MetricType::Gauge,
        );
        w.sample(
            "ringport_receive_buffer_bytes",
            &[],
            self.receive_buffer_bytes,
        );
        super::limits::render(&mut w, &[(super::Limit::ServerFull, self.refused_over_cap)]);
        super::websocket::render(&mut w);
        super::tls::render(&mut w);
        // --- end abuse limits ---

        w.family(
            "ringport_idempotent_replays_total",
            "Pushes answered with the first outcome of their Idempotency-Key instead of publishing again.",
            MetricType::Counter,
        );
        w.sample(
            "ringport_idempotent_replays_total",
            &[],
            crate::http::idempotency::replays(),
        );

        w.family(
            "ringport_inbox_acked_total",
            "User-inbox messages acknowledged by clients (delivery receipts).",
            MetricType::Counter,
        );
        w.sample("ringport_inbox_acked_total", &[], self.inbox_acked);

        w.family(
            "ringport_shard_busy_seconds_total",
            "Time each shard loop spent working; rate() is its utilisation (0..1).",
            MetricType::Counter,
        );
        let labels: Vec<String> = (0..self.shards.len()).map(|i| i.to_string()).collect();
        for (shard, l) in self.shards.iter().enumerate() {
            w.sample_f64(
                "ringport_shard_busy_seconds_total",
                &[("shard", &labels[shard])],
                l.busy_ns as f64 / 1e9,
            );
        }
        w.family(
            "ringport_shard_loop_iterations_total",
            "Event loop iterations per shard.",
            MetricType::Counter,
        );
        for (shard, l) in self.shards.iter().enumerate() {
            w.sample(
                "ringport_shard_loop_iterations_total",
                &[("shard", &labels[shard])],
                l.iterations,
            );
        }
        w.family(
            "ringport_shard_descriptor_tables",
            "Direct descriptor tables (io_uring rings) per shard, added as they fill up to engine.max_descriptor_tables; 0 on epoll.",
            MetricType::Gauge,
        );
        for (shard, l) in self.shards.iter().enumerate() {
            w.sample(
                "ringport_shard_descriptor_tables",
                &[("shard", &labels[shard])],
                l.descriptor_tables,
            );
        }
        let per_shard: [(&str, &str, ShardValue); 6] = [
            (
                "ringport_shard_kernel_enters_total",
                "Calls into the kernel to submit or wait per shard: io_uring_enter on every ring, or epoll_wait on epoll (whose sends and receives are system calls of their own).",
                |l| l.kernel_enters,
            ),
            (
                "ringport_shard_recv_arms_total",
                "Receive operations armed per shard: one per connection while multishot receives stay armed; the excess counts re-arms (ENOBUFS, completion queue overflow, errors).",
                |l| l.recv_arms,
            ),
            (
                "ringport_shard_recv_pauses_total",
                "Times a connection's receiving was paused per shard: a client over its publish rate (limits.publish_bytes_per_ip_per_sec, rooms.publish_rate_per_sec) is not read until it has the tokens again, and TCP's window pushes back on it.",
                |l| l.recv_pauses,
            ),
            (
                "ringport_shard_yields_total",
                "Times a shard yielded its core between two chunks of a fan-out (engine.yield_between_chunks), so a thread sharing the core (another shard with a handshake to answer) gets in without waiting for the scheduler's tick.",
                |l| l.yields,
            ),
            (
                "ringport_shard_cq_overflows_total",
                "Loop turns that found an io_uring completion queue overflowed, per ring; 0 on epoll. Growing means engine.ring_entries is too small.",
                |l| l.cq_overflows,
            ),
            (
                "ringport_shard_recv_buffer_trimmed_bytes_total",
                "Resident bytes of io_uring receive buffers a shard gave back to the kernel (madvise) after engine.recv_buffer_trim_ms without a receive; 0 on epoll.",
                |l| l.recv_buffer_trimmed_bytes,
            ),
        ];
        for (name, help, value) in per_shard {
            w.family(name, help, MetricType::Counter);
            for (shard, l) in self.shards.iter().enumerate() {
                w.sample(name, &[("shard", &labels[shard])], value(l));
            }
        }
    }
}
