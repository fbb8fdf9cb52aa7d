//! The push gateway on the engine: one [`GatewayHandler`] per shard, and the control-plane
//! side that the HTTP API calls.
//!
//! - `conn`: per-connection state (session, reassembly buffer, user, rooms, rate limit,
//!   last delivered offsets).
//! - `handler`: everything [`GatewayHandler`] does, in one module: the engine callbacks (feed
//!   the sans-IO session, act on its events, send what it transmits, keep its timer armed)
//!   in `handler/mod.rs`, and its children: `deliver` (handing queued messages to local
//!   members, batching), `limits` (per-connection rate limits and admission checks),
//!   `overload` (the shard's side of the memory budget), `answers` (the shard's answers to
//!   control-plane questions).
//! - `rooms`: per-shard room and user indexes.
//! - `publish`: numbering a message ([`crate::offsets::StreamSink`]) under its stream's
//!   sequencing stripe, encoding it once, and queueing it for every shard.
//! - `handoff`: the per-shard delivery queues between publishers and shards.
//! - `admission`, `overload`: the process-wide admission tables and memory budget.
//! - `control`: the [`crate::http::Gateway`] implementation (asks the shards through
//!   [`crate::http::ask_all`]) and `/metrics` rendering.
//! - `replay`: resume replay handed to sessions a slice per loop turn.
//! - `tls`: the TLS certificate set (reloaded on SIGHUP); `tls_session`: one connection's
//!   records through rustls' unbuffered API, a layer under `transport` (the shard's side is
//!   `handler/tls.rs`).
//! - `transport`: native or WebSocket framing of a client connection, told apart by its
//!   first bytes (the WebSocket glue is `handler/websocket.rs`).
//!
//! Threads: everything per connection lives on its shard; `Shared` is the read-mostly part
//! every shard and the control plane see (configuration, token verifier, stream sink, metric
//! registry).

mod admission;
mod conn;
mod control;
mod handler;
mod handoff;
mod overload;
mod publish;
mod replay;
mod room_batch;
mod rooms;
#[doc(hidden)]
pub mod scale;
mod tls;
mod tls_session;
mod transport;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringport_io::Engine;
use ringport_proto::SessionConfig;

use crate::auth::Verifier;
use crate::config::{Config, RoomsConfig};
use crate::metrics::{RecorderSlots, Registry};
use crate::offsets::StreamSink;
use crate::serve::{engine_config, EnginePlane, ServeError};
use crate::streams::{HistoryLimits, PublishDedupes, Streams};

use handoff::DeliveryQueues;
use publish::Sequencer;

pub use control::EngineGateway;
pub use handler::GatewayHandler;
pub use overload::physical_memory;
pub(crate) use publish::{Message, PublishError, Published, Target};
pub use tls::{TlsAcceptor, TlsSetupError};

/// The broadcast stream is the room stream `room:*`; clients cannot JOIN `*`, every
/// established connection receives it.
pub const BROADCAST_ROOM: &str = "*";

/// Monotonic and wall clocks of the gateway, both anchored at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    started: Instant,
    started_unix_ms: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
    /// The sessions' clock: ms since start.
    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }
    pub fn instant(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }
    /// Wall-clock ms since the Unix epoch of `at`.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        self.started_unix_ms + self.ms(at)
    }
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What every shard and the control plane share.
pub(crate) struct Shared {
    pub session: Arc<SessionConfig>,
    /// `None` when no secret is configured (tokens cannot be checked).
    pub verifier: Option<Verifier>,
    pub anonymous: bool,
    pub rooms: RoomsConfig,
    pub sink: Arc<dyn StreamSink>,
    /// A stream's stripe is held while a message is numbered and queued for the shards, so
    /// every shard receives a stream's messages in offset order.
    pub sequencer: Sequencer,
    /// Per-shard queues of deliveries (`handoff.rs`).
    pub handoff: DeliveryQueues,
    pub clock: Clock,
    pub registry: Registry,
    pub recorders: RecorderSlots,
    /// Seqs of client publishes already published, per session (a resent PUBLISH is acked,
    /// not published again); also the registry of session ids a client may resume.
    pub publishes: PublishDedupes,
    /// Wall ms of the last history sweep / session expiry (shard 0 runs them).
    pub last_sweep_ms: AtomicU64,
    // --- abuse limits (issue 10) ---
    /// `history.max_replay_bytes`: history one HELLO may replay.
    pub max_replay_bytes: u64,
    /// `history.replay_slice_bytes`: replay a shard hands out per loop turn.
    pub replay_slice_bytes: u64,
    /// `[limits]`: admission and per-connection rates.
    pub limits: crate::config::LimitsConfig,
    /// Per-IP connection counts and rates, process-wide (`gateway/admission.rs`).
    pub peers: admission::PeerTable,
    /// Open connections per user, process-wide.
    pub user_counts: admission::UserCounts,
    /// `server.memory_budget_bytes` and every shard's last measurement.
    pub memory: overload::MemoryBudget,
    // --- end abuse limits ---
    /// `[websocket]`; `None` when WebSocket is disabled.
    pub websocket: Option<transport::WsSettings>,
    /// `[tls]`: the certificate set new TLS handshakes use; `None` when TLS is off.
    pub tls: Option<TlsAcceptor>,
    /// The cluster bus (`--cluster`); `None` for a single node.
    pub cluster: Option<Arc<crate::cluster::ClusterBus>>,
}

/// Per-session window of client seqs remembered beyond the highest contiguous one (the SDK's
/// outbound queue is 1,024 by default).
pub const PUBLISH_DEDUPE_WINDOW: u64 = 4_096;

/// Independently locked parts of the session registry ([`PublishDedupes`]).
const SESSION_LOCKS: usize = 16;
/// A session (its publish dedupe state) can be resumed for this long after its last use.
pub const SESSION_RESUME_MS: u64 = 10 * 60_000;
/// How often history is trimmed to its age bound and idle sessions are forgotten.
pub const SWEEP_EVERY_MS: u64 = 1_000;

/// The session tunables from `[protocol]` and `[rooms]`.
///
/// The session machine probes every `heartbeat_interval_ms / probe_divisor` after
/// `tolerated + 1` silent intervals and closes after `close_after_misses` intervals, so:
/// `probe_divisor = max(1, heartbeat_interval_ms / heartbeat_probe_interval_ms)` and
/// `close_after_misses = heartbeat_tolerated + 1 + ceil(heartbeat_close_after / probe_divisor)`
/// (at least `heartbeat_close_after` probes go unanswered before the close).
pub fn session_config(config: &Config) -> SessionConfig {
    let p = &config.protocol;
    let interval = u32::try_from(p.heartbeat_interval_ms).unwrap_or(u32::MAX);
    let divisor = u32::try_from(p.heartbeat_interval_ms / p.heartbeat_probe_interval_ms.max(1))
        .unwrap_or(u32::MAX)
        .max(1);
    SessionConfig {
        max_payload: p.max_payload,
        heartbeat_interval_ms: interval,
        tolerated_misses: p.heartbeat_tolerated,
        probe_divisor: divisor,
        close_after_misses: p.heartbeat_tolerated + 1 + p.heartbeat_close_after.div_ceil(divisor),
        handshake_timeout_ms: p.handshake_timeout_ms,
        max_sleep_interval_ms: u32::try_from(p.max_sleep_interval_ms).unwrap_or(u32::MAX),
        sleep_holdback_frames: p.sleep_holdback as usize,
        drain_timeout_ms: config.engine.close_linger_ms.max(1),
        max_rooms: u16::try_from(config.rooms.max_rooms_per_connection).unwrap_or(u16::MAX),
    }
}

/// A running gateway data plane.
pub type GatewayPlane = EnginePlane<GatewayHandler, EngineGateway>;

impl GatewayPlane {
    /// The control-plane view (what the HTTP API calls).
    pub fn engine_gateway(&self) -> Arc<EngineGateway> {
        Arc::clone(&self.gateway)
    }
}

/// The frame a connection over the process-wide connection cap receives before it is closed.
pub fn server_full_frame() -> bytes::Bytes {
    ringport_proto::Frame::Close {
        reason: ringport_proto::CloseReason::POLICY,
        text: "server full".into(),
    }
    .to_bytes()
    .unwrap_or_default()
}

/// Starts the gateway with in-memory history ([`Streams`], bounded by `[history]`).
pub fn start(config: &Config) -> Result<GatewayPlane, ServeError> {
    let limits = HistoryLimits::from_config(&config.history);
    start_with_sink(config, Arc::new(Streams::new(limits, 64)))
}

/// Starts the gateway numbering (and possibly recording) messages with `sink`.
pub fn start_with_sink(
    config: &Config,
    sink: Arc<dyn StreamSink>,
) -> Result<GatewayPlane, ServeError> {
    let mut engine_cfg = engine_config(config);
    // At the connection cap (process-wide), a new client is told so and closed rather than
    // left unanswered in the listen backlog.
    engine_cfg.over_cap_reply = Some(server_full_frame());
    // A send over the high-water mark is refused, not closed by the engine: the shard then
    // drops the backlog and tells the client why with a CLOSE (`handler/overload.rs`).
    engine_cfg.slow_consumer = ringport_io::SlowConsumerPolicy::Reject;
    let (registry, recorders) = Registry::new(engine_cfg.workers);
    let (cluster, bus_queue) = match config.cluster.server_list() {
        Some(_) => {
            let (bus, queue) = crate::cluster::ClusterBus::new(
                &config.cluster,
                config.limits.max_connections_per_user,
            );
            (Some(bus), Some(queue))
        }
        None => (None, None),
    };
    if let Some(bus) = &cluster {
        bus.set_epoch(sink.epoch());
    }
    let shared = Arc::new(Shared {
        session: Arc::new(session_config(config)),
        verifier: config
            .auth
            .secret
            .as_deref()
            .map(|s| Verifier::new(s.as_bytes())),
        anonymous: config.auth.anonymous_allowed(),
        rooms: config.rooms.clone(),
        sink,
        sequencer: Sequencer::new(64),
        handoff: DeliveryQueues::new(
            engine_cfg.workers,
            config.rooms.max_pending_deliveries as usize,
        ),
        clock: Clock::new(),
        registry,
        recorders: RecorderSlots::new(recorders),
        publishes: PublishDedupes::new(SESSION_LOCKS, PUBLISH_DEDUPE_WINDOW),
        last_sweep_ms: AtomicU64::new(0),
        max_replay_bytes: config.history.max_replay_bytes,
        replay_slice_bytes: config.history.replay_slice_bytes.max(1),
        limits: config.limits.clone(),
        peers: admission::PeerTable::new(&config.limits),
        user_counts: admission::UserCounts::new(&config.limits),
        memory: overload::MemoryBudget::new(
            config.server.effective_memory_budget(),
            engine_cfg.workers,
        ),
        websocket: transport::WsSettings::from_config(config),
        tls: TlsAcceptor::new(&config.tls).map_err(|e| ServeError::Engine(e.to_string()))?,
        cluster,
    });
    let factory_shared = Arc::clone(&shared);
    let engine = Engine::start(engine_cfg, move |shard, _handle| {
        GatewayHandler::new(shard, Arc::clone(&factory_shared))
    })
    .map_err(|e| ServeError::Engine(e.to_string()))?;
    if let (Some(bus), Some(queue)) = (&shared.cluster, bus_queue) {
        tracing::info!(node = bus.node_id(), servers = ?config.cluster.server_list(), "cluster: joining");
        if let Err(e) = crate::cluster::start(
            &config.cluster,
            Arc::clone(bus),
            queue,
            Arc::downgrade(&shared),
            engine.handle(),
        ) {
            engine.shutdown();
            let _ = engine.join();
            return Err(ServeError::Engine(format!("cluster bridge thread: {e}")));
        }
    }
    let gateway = Arc::new(EngineGateway::new(engine.handle(), shared));
    Ok(GatewayPlane { engine, gateway })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_keys_map_onto_the_session_schedule() {
        let s = session_config(&Config::default());
        // 30 s interval, probes every 10 s, 2 tolerated, 3 unanswered probes.
        assert_eq!(s.heartbeat_interval_ms, 30_000);
        assert_eq!(s.probe_divisor, 3);
        assert_eq!(s.tolerated_misses, 2);
        assert_eq!(s.close_after_misses, 4);
        assert_eq!(s.max_payload, 64 * 1024);
        assert_eq!(s.max_rooms, 64);
        let mut c = Config::default();
        c.protocol.heartbeat_interval_ms = 200;
        c.protocol.heartbeat_tolerated = 1;
        c.protocol.heartbeat_probe_interval_ms = 100;
        c.protocol.heartbeat_close_after = 1;
        let s = session_config(&c);
        assert_eq!((s.probe_divisor, s.close_after_misses), (2, 3));
    }

    #[test]
    fn gateway_defaults_are_the_session_machines_defaults() {
        // ringport-proto documents the same defaults as docs/protocol.md section 11.
        assert_eq!(session_config(&Config::default()), SessionConfig::default());
    }

    #[test]
    fn clock_round_trips() {
        let clock = Clock::new();
        let at = clock.instant(1234);
        assert_eq!(clock.ms(at), 1234);
        assert_eq!(clock.unix_ms(at), clock.started_unix_ms + 1234);
    }
}
