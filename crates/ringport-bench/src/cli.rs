//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "ringport-bench",
    version,
    about = "Load generator and client simulator for ringport (loopback only)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Echo load: send messages, verify the echoed bytes, measure throughput and latency.
    Echo(EchoArgs),
    /// Median ratio and min–max spread of alternating runs (reads `echo --json` outputs).
    Compare(CompareArgs),
    /// Hold many idle gateway sessions (handshake + heartbeats) and measure server memory.
    Idle(GatewayArgs),
    /// Subscribe connections to rooms and measure publish fan-out latency.
    Fanout(GatewayArgs),
    /// Open and close gateway sessions continuously (connect/handshake/close churn).
    Churn(GatewayArgs),
    /// Disconnect sessions and resume them from their last offset; verify nothing is lost.
    Resume(GatewayArgs),
    /// Run one of issue 10's attacks against a gateway, bounded in connections and time.
    Attack(AttackArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AttackArgs {
    /// The attack.
    #[arg(long, value_enum)]
    pub kind: ringport_bench::attack::Kind,
    /// Gateway address (loopback only).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub target: SocketAddr,
    /// Admin HTTP API (the admin attacks).
    #[arg(long, default_value = "127.0.0.1:4667")]
    pub admin: SocketAddr,
    /// HS256 secret shared with the server: attackers authenticate as users bench-<first-user + i>.
    #[arg(long, env = "RINGPORT_BENCH_SECRET")]
    pub secret: Option<String>,
    /// Attackers' user numbers start here (keep them apart from the population's).
    #[arg(long, default_value_t = 1_000_000)]
    pub first_user: usize,
    /// Attackers' source addresses (the one-address floods use the first).
    #[arg(long, default_value = "127.0.1.1-127.0.1.64")]
    pub source_addrs: String,
    /// Seconds the attack runs.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Held attacks: connections held; the others: parallel attackers (at most 16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub connections: u32,
    /// The population's room (the resume flood names it to get a replay).
    #[arg(long, default_value = "bench-0")]
    pub room: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Server address (must be on loopback: 127.0.0.0/8 or ::1).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub target: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Seconds to measure (after warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Print one JSON document on stdout instead of the table (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Write summary.md and PNG charts into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Local source addresses, e.g. 127.0.0.2-127.0.0.250 (spreads connections past one
    /// address's ephemeral ports). Without it, a run that needs more than one address's
    /// ports (80% of `ip_local_port_range`) is spread over 127.0.0.2 and up by itself.
    #[arg(long)]
    pub source_addrs: Option<String>,
    /// Client threads (engine shards).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    Tokio,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientTransport {
    /// The ringport-io engine (direct descriptors, scales past the fd limit).
    Engine,
    /// tokio, a task per connection (cross-check; limited by the process fd limit).
    Tokio,
}

#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Bytes per message (at least 8: each carries a sequence number).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(8..=16_777_216))]
    pub size: u32,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub depth: u32,
    /// Open loop: total messages per second over all connections, latency measured from each
    /// message's intended send time (corrects coordinated omission). Default: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Also run the same load against tokio-echo started here, pinned to --server-cpu, and
    /// print ratios (target / baseline).
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Core the baseline server is pinned to (with taskset), the core the target server uses.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// PID of the target server: report its CPU per message and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's core: add `ksoftirqd/<core>`'s CPU to the server's (io_uring's softirq
    /// work is charged there).
    #[arg(long)]
    pub softirq_cpu: Option<usize>,
    /// Open the connections and send nothing (memory per idle connection).
    #[arg(long)]
    pub idle: bool,
    /// Client transport.
    #[arg(long, value_enum, default_value_t = default_transport())]
    pub client: ClientTransport,
}

const fn default_transport() -> ClientTransport {
    if cfg!(feature = "engine") {
        ClientTransport::Engine
    } else {
        ClientTransport::Tokio
    }
}

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Admin HTTP API of the gateway (publisher via HTTP).
    #[arg(long, default_value = "127.0.0.1:4667")]
    pub admin: SocketAddr,
    /// One token for every connection (HELLO). Default: anonymous (empty token).
    #[arg(long, conflicts_with = "secret")]
    pub token: Option<String>,
    /// HS256 secret shared with the server: mint a token per connection for users bench-<i>.
    #[arg(long, env = "RINGPORT_BENCH_SECRET")]
    pub secret: Option<String>,
    /// Rooms, named <room-prefix>0..; connection i joins room (i * rooms-per-conn + k) % rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Rooms each connection joins (idle: 0 = HELLO only, no JOIN).
    #[arg(long, default_value_t = 1)]
    pub rooms_per_conn: usize,
    #[arg(long, default_value = "bench-")]
    pub room_prefix: String,
    /// fanout/resume: publisher messages per second; churn: connect cycles per second;
    /// idle: a publisher is started only if given.
    #[arg(long)]
    pub rate: Option<f64>,
    /// churn: connects arrive at random times (exponential gaps: a Poisson process at
    /// `--rate`) instead of evenly spaced. Evenly spaced connects keep one phase against a
    /// periodic load on the same server (a fan-out publisher at 10 msg/s and churn at 50/s:
    /// every fifth connect meets the same moment of every push), so their latency tail
    /// depends on that phase, which differs from run to run.
    #[arg(long)]
    pub poisson: bool,
    /// Payload bytes (at least 32: timestamp and sequence as hex).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The server under load: ringport, or Redis pub/sub / NATS core for a side-by-side
    /// comparison with the same load, payloads and latency stamping (rooms are channels or
    /// subjects; Redis and NATS run without authentication).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Ringport)]
    pub protocol: ProtocolArg,
    /// How the publisher publishes to ringport: the admin HTTP API (`http`, default), its
    /// batch API (`batch`: the messages due each millisecond in one request) or a protocol
    /// client's PUBLISH (`client`). Redis and NATS always use their own PUBLISH/PUB.
    #[arg(long, visible_alias = "via", value_enum)]
    pub publisher: Option<ViaArg>,
    /// Where a protocol publisher (`--publisher client`, Redis, NATS) connects; default
    /// --target. Another gateway of a cluster publishes on one node while the connections
    /// subscribe on --target's.
    #[arg(long)]
    pub publish_target: Option<SocketAddr>,
    /// resume: induced abrupt disconnects per second (in total).
    #[arg(long, default_value_t = 10.0)]
    pub disconnect_rate: f64,
    /// PID of the server: report its CPU and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's core: add `ksoftirqd/<core>`'s CPU to the server's (io_uring's softirq
    /// work is charged there).
    #[arg(long)]
    pub softirq_cpu: Option<usize>,
    /// Most connections between connect and ready (WELCOME, JOINs answered) at once, over
    /// all client shards. The window starts at 64 per shard and adapts below this bound:
    /// it grows while handshakes are fast and halves when one is slower than 500 ms or fails,
    /// so the connect rate follows what the server accepts without overrunning its backlog.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connect_window: u32,
    /// Speak TLS to --target (ringport with `tls.cert_file`; with `--protocol ringport-ws`
    /// that is WebSocket over TLS). The server's certificate must chain to --tls-ca and name
    /// --tls-server-name. The publisher is unchanged (HTTP on --admin).
    #[arg(long, requires = "tls_ca")]
    pub tls: bool,
    /// PEM file of the certificates to trust under --tls: a CA, or the server's own
    /// self-signed certificate.
    #[arg(long, requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (SNI and verification) under --tls.
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ViaArg {
    Http,
    Batch,
    #[value(alias = "publish")]
    Client,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Ringport,
    /// ringport's protocol over WebSocket (binary messages) on the same port.
    RingportWs,
    Redis,
    Nats,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// `echo --json` outputs of the system under test, in run order.
    #[arg(long, num_args = 1.., required = true)]
    pub ours: Vec<PathBuf>,
    /// `echo --json` outputs of the baseline, in the same order (run i pairs with run i).
    #[arg(long, num_args = 1.., required = true)]
    pub baseline: Vec<PathBuf>,
    #[arg(long, default_value = "ringport")]
    pub ours_name: String,
    #[arg(long, default_value = "tokio")]
    pub baseline_name: String,
    #[arg(long)]
    pub json: bool,
}
