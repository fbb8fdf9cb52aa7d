//! Engine configuration. Every limit the engine enforces is a field here with a documented
//! default; the gateway maps its TOML keys onto these fields.

use std::net::SocketAddr;
use std::time::Duration;

/// Per-connection send queue policy when queued bytes pass [`EngineConfig::send_high_water`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Drop the queue and close the connection with `CloseReason::SlowConsumer` (default).
    Close,
    /// Refuse the new payload (`SendError::SlowConsumer`) and keep the connection.
    Reject,
}

/// Which I/O backend the shards use ([`EngineConfig::io_backend`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when the host allows it (probed once at start: ring setup, the opcodes and
    /// features the engine uses); epoll where io_uring is blocked (EPERM, ENOSYS,
    /// `kernel.io_uring_disabled`, a missing opcode or feature). Transient errors (ENOMEM)
    /// are errors, never a reason to fall back.
    Auto,
    /// io_uring only: start fails with a clear message where it is blocked.
    Uring,
    /// Edge-triggered epoll (sockets in the process fd table).
    Epoll,
}

impl IoBackend {
    /// The environment variable that sets [`EngineConfig::io_backend`]'s default.
    pub const ENV: &'static str = "RINGPORT_IO_BACKEND";

    /// The backend's name as configured (`auto`, `uring`, `epoll`).
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::Uring => "uring",
            IoBackend::Epoll => "epoll",
        }
    }

    /// The default: [`IoBackend::ENV`] when set, else `Auto`.
    pub fn from_env() -> Result<IoBackend, String> {
        match std::env::var(Self::ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(IoBackend::Auto),
        }
    }
}

impl std::str::FromStr for IoBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<IoBackend, String> {
        match s.trim() {
            "auto" => Ok(IoBackend::Auto),
            "uring" | "io_uring" => Ok(IoBackend::Uring),
            "epoll" => Ok(IoBackend::Epoll),
            other => Err(format!(
                "unknown I/O backend {other:?}: expected auto, uring or epoll"
            )),
        }
    }
}

impl std::fmt::Display for IoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Descriptor-table entries each shard keeps beyond the process-wide cap when
/// [`EngineConfig::over_cap_reply`] is set: room to accept a connection over the cap, send it
/// the reply and close it, while the cap's own connections stay open.
pub const OVER_CAP_HEADROOM: u32 = 64;

/// How the engine is built. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Shard (worker thread) count; each has its own ring, listener, slab and timer wheel.
    /// Default: available cores.
    pub workers: usize,
    /// Pin shard `i` to CPU `i % cpus`. Default: false.
    pub pin_cpus: bool,
    /// Address every shard listens on with SO_REUSEPORT; `None` = client-only engine.
    pub listen: Option<SocketAddr>,
    /// listen(2) backlog. Default 4096.
    pub backlog: u32,
    /// Connections (accepted + outbound) per shard. On io_uring they live in direct
    /// descriptor tables, which the kernel caps at RLIMIT_NOFILE entries each: a shard adds
    /// tables (one ring each, up to [`EngineConfig::max_descriptor_tables`]) as they fill, so
    /// this cap may exceed RLIMIT_NOFILE (it is clamped to `RLIMIT_NOFILE ×
    /// max_descriptor_tables`). On epoll the sockets live in the process fd table, so the cap
    /// is clamped to RLIMIT_NOFILE (for the whole process, in fact). At the cap a shard stops accepting: new connections wait in the listen backlog
    /// until a slot frees — unless [`EngineConfig::over_cap_reply`] is set, which makes the
    /// cap process-wide. Default 65,536 (clamped).
    pub max_connections_per_shard: u32,
    /// Refuse connections over the cap instead of leaving them in the backlog. When set, the
    /// cap is process-wide: at most `max_connections_per_shard × workers` connections are
    /// open, whichever shards hold them (the kernel's SO_REUSEPORT hash is uneven, so each
    /// shard's descriptor table is sized for the whole cap plus [`OVER_CAP_HEADROOM`] entries,
    /// clamped to RLIMIT_NOFILE). A connection accepted over the cap is sent these bytes
    /// (e.g. a protocol's "server full" close frame; empty: nothing), closed gracefully
    /// (bounded by `close_linger`) and never shown to the handler; counted in
    /// `ShardStats::refused_over_cap`. Default: `None` (backlog).
    pub over_cap_reply: Option<bytes::Bytes>,
    /// Most direct descriptor tables per shard on io_uring (1 to 1024). Each table beyond the
    /// first is one more ring in the shard's thread (a quarter of `ring_entries`, an eighth
    /// of `recv_buffers`), added only when the tables before it are nearly full; each holds
    /// up to RLIMIT_NOFILE connections. Counted in `ShardStats::descriptor_tables`.
    /// Ignored on epoll. Default 64.
    pub max_descriptor_tables: u32,
    /// Submission queue entries per ring (the completion queue is 4x). Default 4096.
    pub ring_entries: u32,
    /// Bytes per provided receive buffer. Default 4096.
    pub recv_buffer_size: u32,
    /// Provided receive buffers per shard (power of two, at most 32,768). The kernel cycles
    /// through all of them (FIFO), so every buffer becomes resident once traffic has passed:
    /// this is the shard's receive memory (`recv_buffers * recv_buffer_size`) until a quiet
    /// spell trims it ([`EngineConfig::recv_buffer_trim`]).
    /// Default 1024 (4 MiB per shard).
    pub recv_buffers: u16,
    /// Give the receive buffers' memory back to the kernel (`madvise(MADV_DONTNEED)`) once a
    /// shard has had no receive for this long: an idle shard then holds none of it, and the
    /// next receives fault in fresh pages. Only rings set up with DEFER_TASKRUN are trimmed
    /// (the first descriptor table's on Linux 6.1+), never a buffer that is lent. Counted in
    /// `ShardStats::recv_buffer_trimmed_bytes`. `None`: never. Default 1 s.
    pub recv_buffer_trim: Option<Duration>,
    /// Queued bytes per connection before the slow-consumer policy applies; at most
    /// `u32::MAX` (a queue counts its bytes in a `u32`). Default 4 MiB.
    pub send_high_water: usize,
    /// What happens at the high-water mark. Default: close.
    pub slow_consumer: SlowConsumerPolicy,
    /// Most connections a shard starts a send for in one loop turn. A loopback send costs
    /// the sender's core ~5–10 µs (the kernel delivers it and wakes the reader in the same
    /// call), so a fan-out to thousands of connections issued at once would hold the shard —
    /// and every handshake, receive and timer on it — for tens of milliseconds. Past the
    /// budget the rest wait (in order, their messages still coalescing) for the next turns,
    /// which run without blocking. A connection's first send (a WELCOME) goes ahead of the
    /// waiting ones, within half the budget so a connect storm cannot starve them. Counted in `ShardStats::sends_deferred`. Default 64 (about 0.5 ms here; docs/benchmarks.md, "Half the sends per turn").
    pub max_sends_per_turn: u32,
    /// Most bytes a shard offers the kernel in the sends it starts in one loop turn. A send
    /// copies what it carries into the socket (a gathered send up to 64 queued chunks, several
    /// MiB when large messages wait for a peer that stopped reading, and loopback's send
    /// buffer takes MiBs before it fills), at roughly a few GB/s here, so a turn of big sends
    /// could hold the shard for tens of milliseconds however few they are. A send gathers
    /// chunks only up to what is left of the budget (at least one chunk, so a turn always
    /// progresses), and once it is spent the other ready connections wait, in order, as for
    /// `max_sends_per_turn` (counted in `ShardStats::sends_deferred`). Small-message
    /// fan-outs never reach it. 4 KiB to 1 GiB. Default 1 MiB.
    pub max_send_bytes_per_turn: usize,
    /// How long a graceful close waits for the send queue to drain and the peer's FIN.
    /// Default 2 s.
    pub close_linger: Duration,
    /// What a gracefully closing connection's peer may still send once the queue has drained
    /// and our FIN is out (read and discarded, counted in whole KiB per receive) before the
    /// close is cut short: the connection is closed at once (the kernel resets it, as it does
    /// for unread data) instead of waiting for the peer's FIN or the linger. A peer that
    /// floods a closing connection would otherwise be read at line rate for the whole
    /// linger. Not at shutdown: every peer may then finish (its FIN, or the shutdown deadline).
    /// 1 KiB to 64 MiB, the largest meaning no cap; counted in `ShardStats::close_discard_cut`.
    /// Default 1 MiB: more than a fast publisher has in flight when it reads our CLOSE, a
    /// millisecond of a flood.
    pub close_discard_max_bytes: u32,
    /// Close connections that received nothing for this long. Default: none.
    pub idle_timeout: Option<Duration>,
    /// Timer wheel granularity. Default 10 ms.
    pub timer_tick: Duration,
    /// Pause before accepting again after a resource error (ENOMEM, ENOBUFS...). Default 100 ms.
    pub accept_backoff: Duration,
    /// Graceful shutdown: how long to flush queues before closing connections hard. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Look up each accepted connection's peer address (one extra op per accept). Default true.
    pub resolve_peer_addr: bool,
    /// At exit, how long a shard waits for the kernel to finish its cancelled operations.
    /// Past it the shard exits anyway and leaks the memory those operations may still use
    /// (never frees it under the kernel). Default 2 s.
    pub shutdown_drain: Duration,
    /// The time slice each shard thread asks the kernel's scheduler for (EEVDF, Linux 6.12+:
    /// `sched_setattr`'s `sched_runtime` for a normal thread, clamped by the kernel to
    /// 0.1–100 ms; older kernels ignore it). A waking thread with a shorter slice than the
    /// running one preempts it, and a short slice ends the running thread's protection from
    /// preemption sooner: where shards share a core with each other or with other busy
    /// threads, a shard woken by a completion (a handshake's next step) waits for the
    /// running thread's slice, which the kernel otherwise notices only at its tick (4 ms at
    /// `HZ=250`). `None`: the kernel's default slice. Default: `None`.
    pub sched_slice: Option<Duration>,
    /// While a fan-out's sends wait for later turns (`max_sends_per_turn`,
    /// `max_send_bytes_per_turn`), the shard yields the core (`sched_yield`) after each
    /// turn's chunk, counted in `ShardStats::yields`. A shard in such a run of turns never
    /// sleeps, so a thread it shares a core with — another shard with a handshake to answer,
    /// say — would otherwise get the core only when the scheduler's tick (4 ms at `HZ=250`)
    /// ends the running thread's slice, however short the slice (`sched_slice`): two shards
    /// each in a fan-out took turns in 4 ms blocks, and a connection accepted by the one
    /// waiting was not answered for up to 4 ms (docs/benchmarks.md). With nothing else
    /// runnable on the core, a yield returns at once (one system call per chunk of up to
    /// `max_sends_per_turn` sends). Default: true.
    pub yield_between_chunks: bool,
    /// The I/O backend. Default: [`IoBackend::ENV`] (`RINGPORT_IO_BACKEND`) when set, else
    /// `Auto`; an unparseable value there is reported by [`EngineConfig::validate`].
    pub io_backend: IoBackend,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            pin_cpus: false,
            listen: None,
            backlog: 4096,
            max_connections_per_shard: 65_536,
            over_cap_reply: None,
            max_descriptor_tables: 64,
            ring_entries: 4096,
            recv_buffer_size: 4096,
            recv_buffers: 1024,
            recv_buffer_trim: Some(Duration::from_secs(1)),
            send_high_water: 4 << 20,
            slow_consumer: SlowConsumerPolicy::Close,
            max_sends_per_turn: 64,
            max_send_bytes_per_turn: 1 << 20,
            close_linger: Duration::from_secs(2),
            close_discard_max_bytes: 1 << 20,
            idle_timeout: None,
            timer_tick: Duration::from_millis(10),
            accept_backoff: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(5),
            resolve_peer_addr: true,
            sched_slice: None,
            yield_between_chunks: true,
            shutdown_drain: Duration::from_secs(2),
            io_backend: IoBackend::from_env().unwrap_or(IoBackend::Auto),
        }
    }
}

impl EngineConfig {
    /// Checks values that would otherwise fail deep inside the kernel with an obscure errno.
    pub fn validate(&self) -> Result<(), String> {
        if let Err(e) = IoBackend::from_env() {
            return Err(format!("{}: {e}", IoBackend::ENV));
        }
        if self.workers == 0 || self.workers > 255 {
            return Err(format!(
                "workers must be between 1 and 255, got {}",
                self.workers
            ));
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32_768 {
            return Err(format!(
                "recv_buffers must be a power of two between 1 and 32768, got {}",
                self.recv_buffers
            ));
        }
        if self.recv_buffer_size < 64 {
            return Err(format!(
                "recv_buffer_size must be at least 64, got {}",
                self.recv_buffer_size
            ));
        }
        if self.max_connections_per_shard == 0 || self.max_connections_per_shard > (1 << 24) {
            return Err(format!(
                "max_connections_per_shard must be between 1 and 16777216, got {}",
                self.max_connections_per_shard
            ));
        }
        if self.max_descriptor_tables == 0 || self.max_descriptor_tables > 1024 {
            return Err(format!(
                "max_descriptor_tables must be between 1 and 1024, got {}",
                self.max_descriptor_tables
            ));
        }
        if self.ring_entries < 8 || self.ring_entries > 32_768 {
            return Err(format!(
                "ring_entries must be between 8 and 32768, got {}",
                self.ring_entries
            ));
        }
        if self.timer_tick.is_zero() {
            return Err("timer_tick must be positive".into());
        }
        if self.max_sends_per_turn < 2 {
            return Err(format!(
                "max_sends_per_turn must be at least 2 (half a turn's budget goes to new \
                 sends, half to waiting ones), got {}",
                self.max_sends_per_turn
            ));
        }
        if !(4 << 10..=1 << 30).contains(&self.max_send_bytes_per_turn) {
            return Err(format!(
                "max_send_bytes_per_turn must be 4 KiB to 1 GiB, got {}",
                self.max_send_bytes_per_turn
            ));
        }
        if self.send_high_water == 0 {
            return Err("send_high_water must be positive".into());
        }
        if !(1 << 10..=64 << 20).contains(&self.close_discard_max_bytes) {
            return Err(format!(
                "close_discard_max_bytes must be 1 KiB to 64 MiB, got {}",
                self.close_discard_max_bytes
            ));
        }
        if self.send_high_water > u32::MAX as usize {
            return Err(format!(
                "send_high_water must be at most {} (a send queue counts bytes in a u32), got {}",
                u32::MAX,
                self.send_high_water
            ));
        }
        Ok(())
    }
}
