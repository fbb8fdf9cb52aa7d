//! Gateway configuration: one TOML file, every key overridable.
//!
//! # Precedence
//!
//! `defaults < file < environment < command-line flags`. All four layers are merged as TOML
//! values *before* the typed [`Config`] is deserialised, so one mechanism (and one set of error
//! messages) serves every layer:
//!
//! 1. the embedded defaults ([`Config::default`], printed by `ringport config default`);
//! 2. the file given with `--config FILE` (or `RINGPORT_CONFIG`), if any;
//! 3. environment variables `RINGPORT_<SECTION>__<KEY>` (e.g. `RINGPORT_ENGINE__RING_ENTRIES=8192`),
//!    plus the aliases `RINGPORT_AUTH_SECRET` (for `auth.secret`) and `RUST_LOG` (for `log.level`),
//!    each weaker than its canonical `RINGPORT_*__*` spelling;
//! 4. command-line flags: the named ones (`--listen`, `--secret`, ...) and the generic
//!    `--set section.key=value`, which reaches every key.
//!
//! After merging, [`Config::validate`] checks every value and names the offending key.

mod keys;
mod layers;
mod limits;
mod tls;
mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use keys::{default_toml, find as find_key, KeyDoc, KeyKind, KEYS};
pub use layers::{Layers, Override};
pub use limits::LimitsConfig;
pub use tls::{ClientAuth, TlsConfig};
pub use websocket::WebSocketConfig;

/// The whole resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub engine: EngineSettings,
    pub protocol: ProtocolConfig,
    pub auth: AuthConfig,
    pub rooms: RoomsConfig,
    pub history: HistoryConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub cluster: ClusterConfig,
}

/// What the data plane runs on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AppMode {
    /// The push gateway: native protocol, rooms, auth.
    #[default]
    Gateway,
    /// Echo every byte back; for smoke tests and benchmarks of the bare engine.
    Echo,
}

impl AppMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AppMode::Gateway => "gateway",
            AppMode::Echo => "echo",
        }
    }
}

/// `[server]`: where clients connect and how many shards serve them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Client listener (native protocol).
    pub listen: SocketAddr,
    /// Shard threads; 0 means one per available core.
    pub workers: usize,
    /// Pin shard `i` to CPU `i`.
    pub pin_cpus: bool,
    /// Listen backlog passed to `listen(2)`.
    pub backlog: u32,
    /// Application run on the data plane.
    pub app: AppMode,
    /// Memory the gateway may use for connections and history before it sheds load;
    /// 0 = half of physical memory (or of the cgroup's limit, if lower).
    pub memory_budget_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 4666)),
            workers: 0,
            pin_cpus: false,
            backlog: 4096,
            app: AppMode::Gateway,
            memory_budget_bytes: 0,
        }
    }
}

impl ServerConfig {
    /// The memory budget after resolving 0 to half of physical memory.
    pub fn effective_memory_budget(&self) -> u64 {
        match self.memory_budget_bytes {
            0 => crate::gateway::physical_memory().map_or(u64::MAX, |m| m / 2),
            n => n,
        }
    }

    /// Workers after resolving 0 to the number of available cores.
    pub fn effective_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        }
    }
}

/// `engine.io_backend`: which I/O backend the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoBackendMode {
    /// io_uring where the host allows it, else epoll (the environment variable
    /// `RINGPORT_IO_BACKEND`, when set, replaces `auto`).
    #[default]
    Auto,
    /// io_uring only: start fails with a clear message where it is blocked.
    Uring,
    /// Edge-triggered epoll.
    Epoll,
}

impl IoBackendMode {
    /// The engine's setting: `auto` defers to `RINGPORT_IO_BACKEND` when that is set.
    pub fn engine(self) -> ringport_io::IoBackend {
        match self {
            IoBackendMode::Auto => {
                ringport_io::IoBackend::from_env().unwrap_or(ringport_io::IoBackend::Auto)
            }
            IoBackendMode::Uring => ringport_io::IoBackend::Uring,
            IoBackendMode::Epoll => ringport_io::IoBackend::Epoll,
        }
    }
}

/// `[engine]`: mirrors `ringport_io::EngineConfig` (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    pub max_connections_per_shard: u32,
    /// Most direct descriptor tables (io_uring rings) per shard.
    pub max_descriptor_tables: u32,
    pub ring_entries: u32,
    pub recv_buffer_size: u32,
    pub recv_buffers: u32,
    /// Give the receive buffers' memory back to the kernel after a shard had no receive for
    /// this long; 0 = never.
    pub recv_buffer_trim_ms: u64,
    pub send_high_water: u64,
    /// Most connections a shard starts a send for in one loop turn (the rest wait for the
    /// next turns, so a big fan-out never holds the shard for long).
    pub max_sends_per_turn: u32,
    /// Most bytes a shard offers the kernel in the sends it starts in one loop turn (big
    /// messages to many connections leave over several turns, for the same reason).
    pub max_send_bytes_per_turn: u64,
    pub close_linger_ms: u64,
    /// What a gracefully closing connection's peer may still send (discarded) before the
    /// close is cut short.
    pub close_discard_max_bytes: u32,
    /// 0 disables the engine's idle timeout (heartbeats still apply).
    pub idle_timeout_ms: u64,
    pub timer_tick_ms: u64,
    pub accept_backoff_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub resolve_peer_addr: bool,
    /// At exit, how long a shard waits for the kernel to finish cancelled operations before
    /// it leaks the memory they may still use.
    pub shutdown_drain_ms: u64,
    /// The I/O backend: auto, uring or epoll.
    pub io_backend: IoBackendMode,
    /// The scheduler time slice each shard thread asks for (EEVDF, Linux 6.12+), in
    /// microseconds; 0 = the kernel's default. Default 100 (docs/benchmarks.md, "A shorter
    /// scheduler slice").
    pub sched_slice_us: u32,
    /// Whether a shard yields the core between the chunks of a fan-out. Default true
    /// (docs/benchmarks.md, "Shards that share a core take turns between chunks").
    pub yield_between_chunks: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_connections_per_shard: 65_536,
            max_descriptor_tables: 64,
            ring_entries: 4096,
            recv_buffer_size: 4096,
            recv_buffers: 1024,
            recv_buffer_trim_ms: 1_000,
            send_high_water: 4 * 1024 * 1024,
            max_sends_per_turn: 64,
            max_send_bytes_per_turn: 1024 * 1024,
            close_linger_ms: 2_000,
            close_discard_max_bytes: 1024 * 1024,
            idle_timeout_ms: 0,
            timer_tick_ms: 10,
            accept_backoff_ms: 100,
            shutdown_timeout_ms: 5_000,
            resolve_peer_addr: true,
            shutdown_drain_ms: 2_000,
            io_backend: IoBackendMode::Auto,
            sched_slice_us: 100,
            yield_between_chunks: true,
        }
    }
}

impl EngineSettings {
    pub fn close_linger(&self) -> Duration {
        Duration::from_millis(self.close_linger_ms)
    }
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }
    pub fn recv_buffer_trim(&self) -> Option<Duration> {
        (self.recv_buffer_trim_ms > 0).then(|| Duration::from_millis(self.recv_buffer_trim_ms))
    }
    pub fn timer_tick(&self) -> Duration {
        Duration::from_millis(self.timer_tick_ms)
    }
    pub fn accept_backoff(&self) -> Duration {
        Duration::from_millis(self.accept_backoff_ms)
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_ms)
    }
}

/// `[protocol]`: limits and timers of the native protocol session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Largest frame payload (the bytes after the 8-byte header), both directions; WELCOME's
    /// `max_payload`. Read under its old name `max_frame_size` too, so older config files
    /// keep working.
    #[serde(alias = "max_frame_size")]
    pub max_payload: u32,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_tolerated: u32,
    pub heartbeat_probe_interval_ms: u64,
    pub heartbeat_close_after: u32,
    pub handshake_timeout_ms: u64,
    pub max_sleep_interval_ms: u64,
    pub sleep_holdback: u32,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            // The defaults and why: docs/protocol.md section 11. A test compares them.
            max_payload: 64 * 1024,
            heartbeat_interval_ms: 30_000,
            heartbeat_tolerated: 2,
            heartbeat_probe_interval_ms: 10_000,
            heartbeat_close_after: 3,
            handshake_timeout_ms: 10_000,
            max_sleep_interval_ms: 300_000,
            sleep_holdback: 64,
        }
    }
}

/// `[auth]`: client authentication with HS256 JWTs. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 signing secret; at least 32 bytes (RFC 7518 section 3.2).
    pub secret: Option<String>,
    /// Unset means: anonymous clients are allowed exactly when no secret is configured.
    pub allow_anonymous: Option<bool>,
}

fn redacted(v: &Option<String>) -> &'static str {
    if v.is_some() {
        "Some(<redacted>)"
    } else {
        "None"
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &format_args!("{}", redacted(&self.secret)))
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("api_key", &format_args!("{}", redacted(&self.api_key)))
            .field("max_body_size", &self.max_body_size)
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("body_timeout_ms", &self.body_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("idempotency_ttl_ms", &self.idempotency_ttl_ms)
            .field("idempotency_max_keys", &self.idempotency_max_keys)
            .field("max_batch_items", &self.max_batch_items)
            .field("max_page_size", &self.max_page_size)
            .field("demo", &self.demo)
            .field("demo_ws_url", &self.demo_ws_url)
            .field("demo_token_ttl_ms", &self.demo_token_ttl_ms)
            .finish()
    }
}

impl AuthConfig {
    /// Whether clients without a token are accepted.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.secret.is_none())
    }
}

/// `[rooms]`: membership and client publish limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    pub max_rooms_per_connection: u32,
    pub publish_rate_per_sec: u32,
    pub publish_burst: u32,
    pub max_publish_size: u32,
    pub batch_window_ms: u64,
    /// Messages queued for one shard and not yet handed to its connections; a push beyond
    /// it is refused before it is published.
    pub max_pending_deliveries: u32,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_rooms_per_connection: 64,
            publish_rate_per_sec: 10,
            publish_burst: 20,
            max_publish_size: 64 * 1024,
            batch_window_ms: 0,
            max_pending_deliveries: 65_536,
        }
    }
}

/// `[history]`: per-stream replay buffer for resuming clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    pub max_messages_per_stream: u32,
    pub max_age_ms: u64,
    // --- abuse limits (issue 10) ---
    /// Global budget of history memory; the oldest messages of any stream go first.
    pub max_bytes: u64,
    /// A stream log with no append for this long is removed.
    pub idle_ttl_ms: u64,
    /// History bytes one HELLO may replay over all its resume entries.
    pub max_replay_bytes: u64,
    /// History bytes a shard replays per loop turn over all resuming connections.
    pub replay_slice_bytes: u64,
    // --- end abuse limits ---
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            max_messages_per_stream: 1000,
            max_age_ms: 3_600_000,
            // --- abuse limits (issue 10) ---
            max_bytes: 128 << 20,
            idle_ttl_ms: 3_600_000,
            max_replay_bytes: 4 << 20,
            replay_slice_bytes: 256 << 10,
            // --- end abuse limits ---
        }
    }
}

/// `[admin]`: the HTTP API and `/metrics`. `Debug` redacts the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Required when `listen` is not loopback; always enforced when set.
    pub api_key: Option<String>,
    pub max_body_size: u32,
    // --- abuse limits (issue 10) ---
    /// A request head must be complete this long after the connection starts sending it.
    pub header_timeout_ms: u64,
    /// A request's body must arrive and the request be answered this long after its head.
    pub body_timeout_ms: u64,
    /// A kept-alive connection with no request in progress is closed after this long.
    pub idle_timeout_ms: u64,
    /// Admin connections open at once; more are answered 503 and closed.
    pub max_connections: u32,
    // --- end abuse limits ---
    /// How long an `Idempotency-Key` answers its first outcome.
    pub idempotency_ttl_ms: u64,
    /// Idempotency keys remembered at once; the oldest is forgotten beyond it.
    pub idempotency_max_keys: u32,
    /// Items one `POST /v1/publish/batch` may carry.
    pub max_batch_items: u32,
    /// Largest page of a history or presence listing.
    pub max_page_size: u32,
    /// Serve the live-comment demo (`GET /demo`, the SDK under `/sdk/`) and, when
    /// `auth.secret` is set, mint demo tokens at `GET /demo/token`. Off unless asked for.
    pub demo: bool,
    /// WebSocket URL the demo page connects to; unset = `ws://` + the page's host +
    /// `server.listen`'s port + `websocket.path`.
    pub demo_ws_url: Option<String>,
    /// Lifetime of a token minted by `GET /demo/token`.
    pub demo_token_ttl_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4667)),
            api_key: None,
            max_body_size: 1024 * 1024,
            // --- abuse limits (issue 10) ---
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 256,
            // --- end abuse limits ---
            idempotency_ttl_ms: 300_000,
            idempotency_max_keys: 100_000,
            max_batch_items: 1_000,
            max_page_size: 1_000,
            demo: false,
            demo_ws_url: None,
            demo_token_ttl_ms: 600_000,
        }
    }
}

/// `[cluster]`: several gateways over NATS (`--cluster`). Unset `servers` = one node, no broker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated (`nats://127.0.0.1:4222,nats://10.0.0.2:4222`).
    pub servers: Option<String>,
    /// This node's name on the bus; unset = `node-` and 8 random hex digits.
    pub node_id: Option<String>,
    /// First token of every subject ringport uses, so clusters can share a broker.
    pub subject_prefix: String,
    /// A NATS `.creds` file (JWT and NKey seed). `Debug` shows only whether it is set.
    pub credentials_file: Option<String>,
    /// A PEM file of CA certificates that the broker's TLS certificate must chain to.
    pub tls_ca_file: Option<String>,
    /// Refuse a broker connection without TLS.
    pub tls_required: bool,
    /// Messages waiting for the broker connection; beyond it they are dropped and counted.
    pub max_pending: u32,
    /// A connection attempt to one server gives up after this long.
    pub connect_timeout_ms: u64,
    /// How often the broker connection is probed; two unanswered probes mean it is gone.
    pub ping_interval_ms: u64,
    /// Longest pause between reconnection attempts (the backoff doubles from 100 ms to it).
    pub reconnect_max_delay_ms: u64,
    /// Handing one message to the NATS client may wait this long; then it is dropped. Also
    /// bounds a publish forwarded to its stream's owner node.
    pub publish_timeout_ms: u64,
    /// A cluster-wide count (`GET /v1/rooms/{room}`, presence, `/v1/stats`) waits this long
    /// for the other nodes; then it answers `partial` without the missing ones.
    pub query_timeout_ms: u64,
    /// Every node keeps a replica of every stream's history (all nodes receive every
    /// message), so a client resumes on any node; `false` routes by interest only (a node
    /// receives the streams it has members of, and a resume elsewhere may be answered GAP).
    pub replicate_history: bool,
    /// (user, node) entries kept of the other nodes' connections per user (with
    /// `limits.max_connections_per_user` set): a peer cannot grow the table beyond it.
    pub max_user_entries: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            servers: None,
            node_id: None,
            subject_prefix: "ringport".to_owned(),
            credentials_file: None,
            tls_ca_file: None,
            tls_required: false,
            max_pending: 65_536,
            connect_timeout_ms: 2_000,
            ping_interval_ms: 2_000,
            reconnect_max_delay_ms: 5_000,
            publish_timeout_ms: 1_000,
            query_timeout_ms: 500,
            replicate_history: true,
            max_user_entries: 1_000_000,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("servers", &self.servers)
            .field("node_id", &self.node_id)
            .field("subject_prefix", &self.subject_prefix)
            .field("credentials_file", &self.credentials_file.is_some())
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_required", &self.tls_required)
            .field("max_pending", &self.max_pending)
            .field("replicate_history", &self.replicate_history)
            .field("max_user_entries", &self.max_user_entries)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The server URLs, or `None` for a single node.
    pub fn server_list(&self) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .servers
            .as_deref()?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (!list.is_empty()).then_some(list)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `ringport=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{origin}: unknown config key `{key}`")]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: {key}: cannot parse {value:?} as {expected}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("invalid configuration: {0}")]
    Merged(String),
    #[error("{key} {requirement}")]
    Invalid {
        key: &'static str,
        requirement: String,
    },
    /// Refused by the engine's validator (`ringport_io::EngineConfig::validate`).
    #[error("{key} {requirement}")]
    Engine { key: String, requirement: String },
}

fn invalid(key: &'static str, requirement: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        requirement: requirement.into(),
    }
}

fn in_range(key: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(
            key,
            format!("must be between {lo} and {hi} (got {v})"),
        ));
    }
    Ok(())
}

/// Shortest accepted HS256 secret (RFC 7518 section 3.2: key at least as long as the hash).
pub const MIN_SECRET_LEN: usize = 32;
/// Shortest accepted admin API key.
pub const MIN_API_KEY_LEN: usize = 16;

impl Config {
    /// `ringport_io::EngineConfig::validate` on the engine configuration this config maps to,
    /// its error named by our key (the engine's message starts with its field name).
    fn validate_engine(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        // Values the mapping would have to clamp are refused here with the engine's range.
        if u16::try_from(e.recv_buffers).is_err() {
            return Err(invalid(
                "engine.recv_buffers",
                format!(
                    "must be a power of two between 1 and 32768, got {}",
                    e.recv_buffers
                ),
            ));
        }
        crate::serve::engine_config(self)
            .validate()
            .map_err(|message| {
                let field = message.split(' ').next().unwrap_or_default();
                let key = keys::KEYS
                    .iter()
                    .filter(|k| k.section == "engine" || k.section == "server")
                    // Durations are `*_ms` keys for the engine's `Duration` fields.
                    .find(|k| k.key == field || k.key.strip_suffix("_ms") == Some(field))
                    .map_or_else(
                        || format!("engine.{field}"),
                        |k| format!("{}.{}", k.section, k.key),
                    );
                ConfigError::Engine {
                    requirement: message[field.len()..].trim_start().to_owned(),
                    key,
                }
            })
    }

    /// Checks every value; the error names the key and the rule it broke.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The engine's own limits (workers, connection slots, ring entries, receive buffers,
        // the send queue's counter) are checked by the engine's validator, once, here and
        // again at start; the ranges below are the gateway's own policy.
        self.validate_engine()?;
        let s = &self.server;
        in_range("server.backlog", s.backlog.into(), 1, 65_535)?;

        let e = &self.engine;
        in_range(
            "engine.recv_buffer_size",
            e.recv_buffer_size.into(),
            64,
            1 << 20,
        )?;
        in_range("engine.send_high_water", e.send_high_water, 1024, u64::MAX)?;
        in_range(
            "engine.max_sends_per_turn",
            u64::from(e.max_sends_per_turn),
            2,
            1_000_000,
        )?;
        in_range(
            "engine.max_send_bytes_per_turn",
            e.max_send_bytes_per_turn,
            4 << 10,
            1 << 30,
        )?;
        in_range("engine.close_linger_ms", e.close_linger_ms, 0, 600_000)?;
        in_range(
            "engine.close_discard_max_bytes",
            u64::from(e.close_discard_max_bytes),
            1 << 10,
            64 << 20,
        )?;
        in_range("engine.idle_timeout_ms", e.idle_timeout_ms, 0, 86_400_000)?;
        in_range(
            "engine.recv_buffer_trim_ms",
            e.recv_buffer_trim_ms,
            0,
            86_400_000,
        )?;
        in_range("engine.timer_tick_ms", e.timer_tick_ms, 1, 1_000)?;
        in_range("engine.accept_backoff_ms", e.accept_backoff_ms, 1, 60_000)?;
        in_range(
            "engine.shutdown_timeout_ms",
            e.shutdown_timeout_ms,
            1,
            600_000,
        )?;
        in_range("engine.shutdown_drain_ms", e.shutdown_drain_ms, 0, 60_000)?;
        if e.sched_slice_us != 0 {
            in_range(
                "engine.sched_slice_us",
                e.sched_slice_us.into(),
                100,
                100_000,
            )?;
        }

        let p = &self.protocol;
        in_range("protocol.max_payload", p.max_payload.into(), 64, 16 << 20)?;
        if e.send_high_water < u64::from(p.max_payload) {
            return Err(invalid(
                "engine.send_high_water",
                format!(
                    "must be at least protocol.max_payload ({}), or one frame would close the connection",
                    p.max_payload
                ),
            ));
        }
        in_range(
            "protocol.heartbeat_interval_ms",
            p.heartbeat_interval_ms,
            100,
            3_600_000,
        )?;
        in_range(
            "protocol.heartbeat_tolerated",
            p.heartbeat_tolerated.into(),
            1,
            100,
        )?;
        in_range(
            "protocol.heartbeat_probe_interval_ms",
            p.heartbeat_probe_interval_ms,
            10,
            p.heartbeat_interval_ms,
        )
        .map_err(|_| {
            invalid(
                "protocol.heartbeat_probe_interval_ms",
                format!(
                    "must be between 10 and protocol.heartbeat_interval_ms ({})",
                    p.heartbeat_interval_ms
                ),
            )
        })?;
        in_range(
            "protocol.heartbeat_close_after",
            p.heartbeat_close_after.into(),
            1,
            100,
        )?;
        in_range(
            "protocol.handshake_timeout_ms",
            p.handshake_timeout_ms,
            100,
            600_000,
        )?;
        if p.max_sleep_interval_ms < p.heartbeat_interval_ms || p.max_sleep_interval_ms > 86_400_000
        {
            return Err(invalid(
                "protocol.max_sleep_interval_ms",
                format!(
                    "must be between protocol.heartbeat_interval_ms ({}) and 86400000",
                    p.heartbeat_interval_ms
                ),
            ));
        }
        in_range(
            "protocol.sleep_holdback",
            p.sleep_holdback.into(),
            0,
            1 << 20,
        )?;

        if let Some(secret) = &self.auth.secret {
            if secret.len() < MIN_SECRET_LEN {
                return Err(invalid(
                    "auth.secret",
                    format!(
                        "must be at least {MIN_SECRET_LEN} bytes (got {})",
                        secret.len()
                    ),
                ));
            }
        }
        if self.auth.allow_anonymous == Some(false) && self.auth.secret.is_none() {
            return Err(invalid(
                "auth.allow_anonymous",
                "is false but auth.secret is not set, so no client could ever connect; \
                 set a secret (RINGPORT_AUTH_SECRET or --secret)",
            ));
        }

        let r = &self.rooms;
        in_range(
            "rooms.max_rooms_per_connection",
            r.max_rooms_per_connection.into(),
            1,
            65_535,
        )?;
        in_range(
            "rooms.publish_rate_per_sec",
            r.publish_rate_per_sec.into(),
            0,
            1_000_000,
        )?;
        in_range("rooms.publish_burst", r.publish_burst.into(), 1, 1_000_000)?;
        in_range(
            "rooms.max_publish_size",
            r.max_publish_size.into(),
            1,
            p.max_payload.into(),
        )
        .map_err(|_| {
            invalid(
                "rooms.max_publish_size",
                format!(
                    "must be between 1 and protocol.max_payload ({})",
                    p.max_payload
                ),
            )
        })?;
        in_range("rooms.batch_window_ms", r.batch_window_ms, 0, 1_000)?;
        in_range(
            "rooms.max_pending_deliveries",
            r.max_pending_deliveries.into(),
            1,
            16_777_216,
        )?;

        self.limits.validate()?;
        self.websocket.validate(self.protocol.max_payload)?;
        self.tls.validate()?;

        let h = &self.history;
        in_range(
            "history.max_messages_per_stream",
            h.max_messages_per_stream.into(),
            0,
            1 << 24,
        )?;
        in_range("history.max_age_ms", h.max_age_ms, 0, 30 * 86_400_000)?;
        // --- abuse limits (issue 10) ---
        in_range("history.max_bytes", h.max_bytes, 1, 1 << 40)?;
        in_range("history.idle_ttl_ms", h.idle_ttl_ms, 1, 30 * 86_400_000)?;
        in_range("history.max_replay_bytes", h.max_replay_bytes, 0, 1 << 32)?;
        in_range(
            "history.replay_slice_bytes",
            h.replay_slice_bytes,
            1,
            1 << 30,
        )?;
        // --- end abuse limits ---

        let a = &self.admin;
        if let Some(key) = &a.api_key {
            if key.len() < MIN_API_KEY_LEN {
                return Err(invalid(
                    "admin.api_key",
                    format!(
                        "must be at least {MIN_API_KEY_LEN} bytes (got {})",
                        key.len()
                    ),
                ));
            }
        } else if !a.listen.ip().is_loopback() {
            return Err(invalid(
                "admin.api_key",
                format!(
                    "is required because admin.listen ({}) is not a loopback address \
                     (set RINGPORT_ADMIN__API_KEY or --api-key)",
                    a.listen
                ),
            ));
        }
        in_range("admin.max_body_size", a.max_body_size.into(), 64, 64 << 20)?;
        // --- abuse limits (issue 10) ---
        in_range("admin.header_timeout_ms", a.header_timeout_ms, 1, 3_600_000)?;
        // Longer than a shard's reply deadline, so a push is never cut short by it.
        in_range("admin.body_timeout_ms", a.body_timeout_ms, 2_500, 3_600_000)?;
        in_range("admin.idle_timeout_ms", a.idle_timeout_ms, 1, 3_600_000)?;
        in_range("admin.max_connections", a.max_connections.into(), 1, 65_536)?;
        // --- end abuse limits ---
        in_range(
            "admin.idempotency_ttl_ms",
            a.idempotency_ttl_ms,
            1_000,
            86_400_000,
        )?;
        in_range(
            "admin.idempotency_max_keys",
            a.idempotency_max_keys.into(),
            1,
            10_000_000,
        )?;
        in_range(
            "admin.max_batch_items",
            a.max_batch_items.into(),
            1,
            100_000,
        )?;
        in_range("admin.max_page_size", a.max_page_size.into(), 1, 100_000)?;
        in_range(
            "admin.demo_token_ttl_ms",
            a.demo_token_ttl_ms,
            1_000,
            86_400_000,
        )?;
        if let Some(url) = &a.demo_ws_url {
            let scheme_ok = url.starts_with("ws://") || url.starts_with("wss://");
            if !scheme_ok
                || url.bytes().any(|b| {
                    b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"' || b == b'<'
                })
            {
                return Err(invalid(
                    "admin.demo_ws_url",
                    format!(
                        "must be a ws:// or wss:// URL without spaces, quotes or < (got {url:?})"
                    ),
                ));
            }
        }

        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "must be a tracing filter such as `info` or `ringport=debug,warn` (got {:?})",
                    self.log.level
                ),
            ));
        }
        self.validate_cluster()
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        for url in c.server_list().unwrap_or_default() {
            let (scheme, rest) = url.split_once("://").unwrap_or(("nats", &url));
            if !matches!(scheme, "nats" | "tls") || rest.is_empty() {
                return Err(invalid(
                    "cluster.servers",
                    format!("must be nats://HOST:PORT or tls://HOST:PORT URLs, comma-separated (got {url:?})"),
                ));
            }
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(id) = &c.node_id {
            if !token_ok(id) {
                return Err(invalid(
                    "cluster.node_id",
                    format!("must be 1 to 64 letters, digits, '-' or '_' (got {id:?})"),
                ));
            }
        }
        if !token_ok(&c.subject_prefix) {
            return Err(invalid(
                "cluster.subject_prefix",
                format!(
                    "must be 1 to 64 letters, digits, '-' or '_' (got {:?})",
                    c.subject_prefix
                ),
            ));
        }
        in_range("cluster.max_pending", c.max_pending.into(), 1, 10_000_000)?;
        in_range(
            "cluster.max_user_entries",
            c.max_user_entries.into(),
            1,
            100_000_000,
        )?;
        in_range(
            "cluster.connect_timeout_ms",
            c.connect_timeout_ms,
            10,
            600_000,
        )?;
        in_range("cluster.ping_interval_ms", c.ping_interval_ms, 100, 600_000)?;
        in_range(
            "cluster.reconnect_max_delay_ms",
            c.reconnect_max_delay_ms,
            100,
            600_000,
        )?;
        in_range(
            "cluster.publish_timeout_ms",
            c.publish_timeout_ms,
            1,
            600_000,
        )?;
        in_range("cluster.query_timeout_ms", c.query_timeout_ms, 1, 60_000)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &Config) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_old_name_of_max_payload_still_reads() {
        let c: Config = toml::from_str("[protocol]\nmax_frame_size = 70000\n").unwrap();
        assert_eq!(c.protocol.max_payload, 70_000);
        let c: Config = toml::from_str("[protocol]\nmax_payload = 70001\n").unwrap();
        assert_eq!(c.protocol.max_payload, 70_001);
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert!(Config::default().auth.anonymous_allowed());
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = Config::default();
        c.engine.recv_buffers = 3000;
        assert_eq!(
            err(&c),
            "engine.recv_buffers must be a power of two between 1 and 32768, got 3000"
        );
        let mut c = Config::default();
        c.engine.ring_entries = 65_536;
        assert!(err(&c).starts_with("engine.ring_entries must be between 8 and 32768"));
        let mut c = Config::default();
        c.server.workers = 1000;
        assert!(err(&c).starts_with("server.workers must be between 1 and 255"));
        let mut c = Config::default();
        c.engine.timer_tick_ms = 0;
        assert_eq!(err(&c), "engine.timer_tick_ms must be positive");
        let mut c = Config::default();
        c.protocol.heartbeat_probe_interval_ms = 60_000;
        assert!(err(&c).starts_with("protocol.heartbeat_probe_interval_ms"));
        let mut c = Config::default();
        c.rooms.max_publish_size = 2 << 20;
        assert!(err(&c).starts_with("rooms.max_publish_size"));
        let mut c = Config::default();
        c.log.level = "info,,=[".into();
        assert!(err(&c).starts_with("log.level"));
        let mut c = Config::default();
        c.engine.sched_slice_us = 50;
        assert!(err(&c).starts_with("engine.sched_slice_us must be between 100 and 100000"));
        c.engine.sched_slice_us = 100;
        c.validate().unwrap();
    }

    #[test]
    fn auth_rules() {
        let mut c = Config::default();
        c.auth.secret = Some("short".into());
        assert!(err(&c).starts_with("auth.secret must be at least 32 bytes"));
        c.auth.secret = Some("x".repeat(32));
        c.validate().unwrap();
        assert!(
            !c.auth.anonymous_allowed(),
            "a secret turns anonymous off by default"
        );
        c.auth.allow_anonymous = Some(true);
        assert!(c.auth.anonymous_allowed());
        let mut c = Config::default();
        c.auth.allow_anonymous = Some(false);
        assert!(err(&c).starts_with("auth.allow_anonymous is false"));
    }

    #[test]
    fn cluster_keys_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.cluster.server_list(), None);
        c.cluster.servers = Some(" nats://127.0.0.1:4222 , nats://10.0.0.2:4222,".into());
        assert_eq!(
            c.cluster.server_list().unwrap(),
            ["nats://127.0.0.1:4222", "nats://10.0.0.2:4222"]
        );
        c.validate().unwrap();
        c.cluster.servers = Some("http://x:1".into());
        assert!(err(&c).starts_with("cluster.servers must be nats://"));
        c.cluster.servers = None;
        c.cluster.node_id = Some("a.b".into());
        assert!(err(&c).starts_with("cluster.node_id must be"));
        c.cluster.node_id = Some("gw-1".into());
        c.cluster.subject_prefix = "a>".into();
        assert!(err(&c).starts_with("cluster.subject_prefix must be"));
    }

    #[test]
    fn non_loopback_admin_needs_a_key() {
        let mut c = Config::default();
        c.admin.listen = "0.0.0.0:4667".parse().unwrap();
        assert!(err(&c).starts_with("admin.api_key is required because admin.listen"));
        c.admin.api_key = Some("k".repeat(16));
        c.validate().unwrap();
        c.admin.api_key = Some("short".into());
        assert!(err(&c).starts_with("admin.api_key must be at least 16 bytes"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = Config::default();
        c.auth.secret = Some("s".repeat(40));
        c.admin.api_key = Some("k".repeat(20));
        let text = format!("{c:?}");
        assert!(!text.contains("ssss") && !text.contains("kkkk"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn durations() {
        let e = EngineSettings::default();
        assert_eq!(e.idle_timeout(), None);
        assert_eq!(e.close_linger(), Duration::from_secs(2));
    }
}
