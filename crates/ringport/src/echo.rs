//! `ringport serve --app echo`: the bare engine echoing every byte back (no framing, no
//! auth). For smoke tests and for benchmarking the engine without the protocol.
//!
//! The admin API still runs: pushes and room queries answer `rejected`, `/v1/stats` shows
//! the open connections, and `/metrics` shows the engine's counters.

use std::sync::Arc;

use ringport_io::{ConnId, Ctx, Engine, EngineHandle, Handler, StatsSnapshot};

use crate::config::Config;
use crate::http::{
    ConnectionCounts, ConnectionInfo, Gateway, GatewayError, GatewayStats, Push, PushOutcome,
    Reply, RoomInfo,
};
use crate::metrics::{MetricsSnapshot, ShardLoop};
use crate::serve::{engine_config, EnginePlane, ServeError};

/// Sends every received byte back on the same connection.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        let _ = ctx.send_copy(conn, data);
    }
}

/// The echo data plane.
pub type EchoPlane = EnginePlane<Echo, EchoGateway>;

/// What the admin API sees in echo mode.
#[derive(Debug)]
pub struct EchoGateway {
    handle: EngineHandle<Echo>,
    started: std::time::Instant,
}

/// Starts the echo engine.
pub fn start(config: &Config) -> Result<EchoPlane, ServeError> {
    let engine = Engine::start(engine_config(config), |_shard, _handle| Echo)
        .map_err(|e| ServeError::Engine(e.to_string()))?;
    let gateway = Arc::new(EchoGateway {
        handle: engine.handle(),
        started: std::time::Instant::now(),
    });
    Ok(EchoPlane { engine, gateway })
}

fn no_rooms<T>() -> Result<T, GatewayError> {
    Err(GatewayError::Rejected(
        "echo mode has no protocol, rooms or users".into(),
    ))
}

impl Gateway for EchoGateway {
    fn push_room(&self, _: String, _: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async { no_rooms() })
    }
    fn push_user(&self, _: String, _: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async { no_rooms() })
    }
    fn broadcast(&self, _: Push) -> Reply<'_, PushOutcome> {
        Box::pin(async { no_rooms() })
    }
    fn room_info(&self, _: String, _: usize) -> Reply<'_, RoomInfo> {
        Box::pin(async { no_rooms() })
    }
    fn stats(&self) -> Reply<'_, GatewayStats> {
        let total = StatsSnapshot::sum(&self.handle.stats_all());
        let stats = GatewayStats {
            shards: self.handle.shards(),
            connections: ConnectionCounts {
                active: total.open,
                ..ConnectionCounts::default()
            },
            uptime_seconds: self.started.elapsed().as_secs(),
            io_backend: self.handle.backend().name().to_owned(),
            io_backend_reason: self.handle.backend().reason.clone(),
            ..GatewayStats::default()
        };
        Box::pin(async move { Ok(stats) })
    }
    fn connection(&self, _: u64) -> Reply<'_, Option<ConnectionInfo>> {
        Box::pin(async { Ok(None) })
    }
    fn kick(&self, id: u64, _: Option<String>) -> Reply<'_, bool> {
        // Without per-connection state we cannot tell whether it was open: close and say no.
        let conn = ConnId::from_u64(id);
        if conn.shard() < self.handle.shards() {
            self.handle.close(conn, ringport_io::CloseReason::Local);
        }
        Box::pin(async { Ok(false) })
    }
    fn render_metrics(&self, out: &mut String) {
        let shards = self.handle.stats_all();
        let total = StatsSnapshot::sum(&shards);
        let mut s = MetricsSnapshot {
            accepted: total.accepted,
            bytes: [total.bytes_in, total.bytes_out],
            bufring_exhausted: total.bufring_exhausted,
            sends_deferred: total.sends_deferred,
            closes_cut_short: total.close_discard_cut,
            shards: shards
                .iter()
                .map(|e| ShardLoop {
                    busy_ns: e.busy_ns,
                    iterations: e.loops,
                    descriptor_tables: e.descriptor_tables,
                    kernel_enters: e.kernel_enters,
                    recv_arms: e.recv_arms,
                    recv_pauses: e.recv_pauses,
                    yields: e.yields,
                    cq_overflows: e.cq_overflows,
                    recv_buffer_trimmed_bytes: e.recv_buffer_trimmed_bytes,
                })
                .collect(),
            io_backend: self.handle.backend().name(),
            io_backend_reason: self.handle.backend().reason.clone(),
            ..MetricsSnapshot::default()
        };
        s.connections_open[crate::metrics::ConnState::Active.index()] = total.open;
        s.render(out);
    }
}
