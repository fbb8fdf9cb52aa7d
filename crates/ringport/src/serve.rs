//! `ringport serve`: start the data plane, then the admin API over it, run until SIGINT or
//! SIGTERM, then shut both down.
//!
//! The engine is started in exactly one place, [`start_data_plane`] (the gateway in
//! [`crate::gateway`], or the echo application in [`crate::echo`]); everything else here is
//! independent of `ringport-io` and is tested with a fake [`DataPlane`].
//!
//! Mapping from the configuration to `ringport_io::EngineConfig` (for the wiring):
//! `workers = server.effective_workers()`, `pin_cpus = server.pin_cpus`,
//! `listen = Some(server.listen)`, `backlog = server.backlog`, and the `[engine]` keys field
//! for field, durations through the `EngineSettings` helpers (`close_linger()`,
//! `idle_timeout()`, `timer_tick()`, `accept_backoff()`, `shutdown_timeout()`), with
//! `recv_buffers` narrowed to `u16` (validation caps it at 32768).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AppMode, Config};
use crate::http::{AdminServer, Gateway, HttpError};

/// Why `serve` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("data plane: {0}")]
    Engine(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A running data plane, as `serve` needs it.
pub trait DataPlane: Send {
    /// What the admin API calls.
    fn gateway(&self) -> Arc<dyn Gateway>;
    /// The client listener's real address.
    fn local_addr(&self) -> Option<SocketAddr>;
    /// Begin graceful shutdown (idempotent).
    fn shutdown(&self);
    /// Wait for every shard to exit.
    fn join(self: Box<Self>) -> Result<(), ServeError>;
}

/// A running engine plus the admin API's view of it: the one [`DataPlane`] implementation,
/// shared by the gateway and the echo application.
pub struct EnginePlane<H: ringport_io::Handler, G> {
    pub(crate) engine: ringport_io::Engine<H>,
    pub(crate) gateway: Arc<G>,
}

impl<H: ringport_io::Handler, G> std::fmt::Debug for EnginePlane<H, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnginePlane")
            .field("engine", &self.engine)
            .finish()
    }
}

impl<H: ringport_io::Handler, G: Gateway> DataPlane for EnginePlane<H, G> {
    fn gateway(&self) -> Arc<dyn Gateway> {
        self.gateway.clone()
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        self.engine.local_addr()
    }
    fn shutdown(&self) {
        // Cluster: the other nodes own this node's streams before its clients move to them.
        self.gateway.leave_cluster();
        self.engine.shutdown();
    }
    fn join(self: Box<Self>) -> Result<(), ServeError> {
        self.engine
            .join()
            .map_err(|e| ServeError::Engine(e.to_string()))
    }
}

/// Starts the engine for `config`: the gateway (default) or the echo application.
pub fn start_data_plane(config: &Config) -> Result<Box<dyn DataPlane>, ServeError> {
    Ok(match config.server.app {
        AppMode::Gateway => Box::new(crate::gateway::start(config)?),
        AppMode::Echo => Box::new(crate::echo::start(config)?),
    })
}

/// The engine configuration for `config` (see the module docs for the mapping).
pub fn engine_config(config: &Config) -> ringport_io::EngineConfig {
    let s = &config.server;
    let e = &config.engine;
    ringport_io::EngineConfig {
        workers: s.effective_workers(),
        pin_cpus: s.pin_cpus,
        listen: Some(s.listen),
        backlog: s.backlog,
        max_connections_per_shard: e.max_connections_per_shard,
        max_descriptor_tables: e.max_descriptor_tables,
        // The gateway sets its "server full" CLOSE (`gateway::start_with_sink`); echo mode
        // leaves the excess in the backlog.
        over_cap_reply: None,
        ring_entries: e.ring_entries,
        recv_buffer_size: e.recv_buffer_size,
        recv_buffers: u16::try_from(e.recv_buffers).unwrap_or(32_768),
        recv_buffer_trim: e.recv_buffer_trim(),
        send_high_water: usize::try_from(e.send_high_water).unwrap_or(usize::MAX),
        slow_consumer: ringport_io::SlowConsumerPolicy::Close,
        max_sends_per_turn: e.max_sends_per_turn,
        max_send_bytes_per_turn: usize::try_from(e.max_send_bytes_per_turn).unwrap_or(1 << 30),
        close_linger: e.close_linger(),
        close_discard_max_bytes: e.close_discard_max_bytes,
        idle_timeout: e.idle_timeout(),
        timer_tick: e.timer_tick(),
        accept_backoff: e.accept_backoff(),
        shutdown_timeout: e.shutdown_timeout(),
        resolve_peer_addr: e.resolve_peer_addr,
        shutdown_drain: e.shutdown_drain(),
        io_backend: e.io_backend.engine(),
        sched_slice: (e.sched_slice_us > 0)
            .then(|| Duration::from_micros(u64::from(e.sched_slice_us))),
        yield_between_chunks: e.yield_between_chunks,
    }
}

/// Runs until SIGINT or SIGTERM.
pub fn run(config: &Config) -> Result<(), ServeError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(ServeError::Signals)?;
    }
    run_until(config, start_data_plane, &stop)
}

/// Runs with the given data-plane starter until `stop` becomes true.
pub fn run_until(
    config: &Config,
    start: impl FnOnce(&Config) -> Result<Box<dyn DataPlane>, ServeError>,
    stop: &AtomicBool,
) -> Result<(), ServeError> {
    announce(config);
    let plane = start(config)?;
    let clients = plane.local_addr().unwrap_or(config.server.listen);
    let pages = crate::http::WebPages::new(config, clients);
    let admin = match AdminServer::start_with_pages(&config.admin, plane.gateway(), pages) {
        Ok(admin) => admin,
        Err(e) => {
            plane.shutdown();
            let _ = plane.join();
            return Err(e.into());
        }
    };
    tracing::info!(
        clients = %clients,
        admin = %admin.local_addr(),
        "ringport ready"
    );
    // SIGHUP re-reads the TLS certificate files; connections stay open.
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)) {
        tracing::warn!(error = %e, "cannot install the SIGHUP handler: no certificate reload");
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if hup.swap(false, Ordering::Relaxed) {
            match plane.gateway().reload_tls() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate files reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS reload failed; the old certificate stays")
                }
            }
        }
    }
    tracing::info!(
        timeout_ms = config.engine.shutdown_timeout_ms,
        "shutting down: draining connections"
    );
    plane.shutdown();
    let admin_result = admin.shutdown();
    plane.join()?;
    admin_result?;
    tracing::info!("ringport stopped");
    Ok(())
}

/// The startup banner: what listens where, in which mode, and loud warnings.
pub fn announce(config: &Config) {
    let s = &config.server;
    let mode = match s.app {
        AppMode::Gateway => "gateway (native protocol)",
        AppMode::Echo => "echo (bare engine, no protocol)",
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mode,
        clients = %s.listen,
        admin = %config.admin.listen,
        workers = s.effective_workers(),
        pin_cpus = s.pin_cpus,
        admin_api_key = if config.admin.api_key.is_some() { "required" } else { "not required (loopback)" },
        "ringport starting"
    );
    if s.app == AppMode::Gateway && config.auth.anonymous_allowed() {
        tracing::warn!(
            "!!! ANONYMOUS ACCESS IS ALLOWED: any client reaching {} can connect without a token. \
             Set auth.secret (RINGPORT_AUTH_SECRET or --secret) to require tokens. !!!",
            s.listen
        );
    }
    if s.app == AppMode::Echo {
        tracing::warn!("echo mode: every byte is sent back; no auth, no rooms");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    struct FakePlane {
        shutdowns: Arc<AtomicUsize>,
    }

    impl DataPlane for FakePlane {
        fn gateway(&self) -> Arc<dyn Gateway> {
            Arc::new(crate::http::testing::PushEcho)
        }
        fn local_addr(&self) -> Option<SocketAddr> {
            None
        }
        fn shutdown(&self) {
            self.shutdowns.fetch_add(1, Ordering::SeqCst);
        }
        fn join(self: Box<Self>) -> Result<(), ServeError> {
            Ok(())
        }
    }

    #[test]
    fn engine_config_follows_the_keys() {
        let mut c = Config::default();
        c.server.workers = 3;
        c.engine.recv_buffers = 1024;
        c.engine.idle_timeout_ms = 1500;
        let e = engine_config(&c);
        assert_eq!(e.workers, 3);
        assert_eq!(e.recv_buffers, 1024);
        assert_eq!(e.listen, Some(c.server.listen));
        assert_eq!(e.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            e.recv_buffer_trim,
            Some(Duration::from_secs(1)),
            "the default"
        );
        e.validate().unwrap();
        c.engine.recv_buffer_trim_ms = 0;
        assert_eq!(engine_config(&c).recv_buffer_trim, None, "0 = never");
    }

    #[test]
    fn serves_admin_until_stopped() {
        let mut config = Config::default();
        // Find a free port, then let the server bind it.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        config.admin.listen = probe.local_addr().unwrap();
        drop(probe);
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let admin = config.admin.listen;
        let t = {
            let (stop, shutdowns) = (Arc::clone(&stop), Arc::clone(&shutdowns));
            std::thread::spawn(move || {
                run_until(&config, |_| Ok(Box::new(FakePlane { shutdowns })), &stop)
            })
        };
        let mut body = String::new();
        for _ in 0..100 {
            if let Ok(mut s) = std::net::TcpStream::connect(admin) {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                s.read_to_string(&mut body).unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        stop.store(true, Ordering::SeqCst);
        t.join().unwrap().unwrap();
        assert_eq!(shutdowns.load(Ordering::SeqCst), 1);
    }
}
