//! Starting, addressing and stopping the engine.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::inbox::{Envelope, ShardShared};
use crate::shard::Shard;
use crate::{CloseReason, ConnId, Ctx, EngineConfig, EngineError, Handler, StatsSnapshot};

pub(crate) struct EngineShared<H: Handler> {
    pub shards: Vec<Arc<ShardShared<H>>>,
    pub local_addr: Option<SocketAddr>,
    /// Connections open in the whole process (every shard's `Core::open` together): the
    /// process-wide cap of [`EngineConfig::over_cap_reply`] is checked against it at accept.
    pub open: std::sync::atomic::AtomicUsize,
    /// The I/O backend the shards run on, and why.
    pub backend: crate::BackendChoice,
}

/// A cheap, cloneable way for any thread to reach the engine's shards.
pub struct EngineHandle<H: Handler> {
    pub(crate) shared: Arc<EngineShared<H>>,
}

impl<H: Handler> Clone for EngineHandle<H> {
    fn clone(&self) -> Self {
        EngineHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<H: Handler> std::fmt::Debug for EngineHandle<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("shards", &self.shared.shards.len())
            .finish()
    }
}

impl<H: Handler> EngineHandle<H> {
    /// Connections open in the whole process (all shards).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// The I/O backend the shards run on, and why it was chosen.
    pub fn backend(&self) -> &crate::BackendChoice {
        &self.shared.backend
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.shards.len()
    }

    /// The listener's bound address (port 0 resolved), if the engine listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }

    fn shard_of(&self, shard: usize) -> Option<&Arc<ShardShared<H>>> {
        self.shared.shards.get(shard)
    }

    /// Queues `payload` to `conn` on its shard. Ignored if the connection is gone.
    pub fn send(&self, conn: ConnId, payload: Bytes) {
        if let Some(s) = self.shard_of(conn.shard()) {
            s.post(Envelope::Send(conn, payload));
        }
    }

    /// Queues one shared payload to many connections of one shard.
    pub fn send_many(&self, shard: usize, conns: Vec<ConnId>, payload: Bytes) {
        if let Some(s) = self.shard_of(shard) {
            s.post(Envelope::SendMany(conns, payload));
        }
    }

    /// Closes `conn` gracefully (its queue drains first).
    pub fn close(&self, conn: ConnId, reason: CloseReason) {
        if let Some(s) = self.shard_of(conn.shard()) {
            s.post(Envelope::Close(conn, reason));
        }
    }

    /// Runs `f` on shard `shard`'s thread with its handler and context. Dropped if the shard
    /// has exited.
    pub fn run<F>(&self, shard: usize, f: F)
    where
        F: for<'a> FnOnce(&mut H, &mut Ctx<'a, H>) + Send + 'static,
    {
        if let Some(s) = self.shard_of(shard) {
            s.post(Envelope::Run(Box::new(f)));
        }
    }

    /// A snapshot of shard `shard`'s counters.
    pub fn stats(&self, shard: usize) -> StatsSnapshot {
        self.shard_of(shard)
            .map(|s| s.stats.snapshot())
            .unwrap_or_default()
    }

    /// Snapshots of every shard's counters.
    pub fn stats_all(&self) -> Vec<StatsSnapshot> {
        self.shared
            .shards
            .iter()
            .map(|s| s.stats.snapshot())
            .collect()
    }

    /// Begins graceful shutdown on every shard (idempotent).
    pub fn shutdown(&self) {
        for s in &self.shared.shards {
            s.shutdown.store(true, Ordering::Release);
            s.ring();
        }
    }
}

/// A running engine: its shard threads and a handle to them.
pub struct Engine<H: Handler> {
    handle: EngineHandle<H>,
    threads: Vec<JoinHandle<Result<(), EngineError>>>,
}

impl<H: Handler> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.threads.len())
            .finish()
    }
}

impl<H: Handler> Engine<H> {
    /// Starts `config.workers` shard threads, each with its own ring, listener (when
    /// `config.listen` is set), slab, timer wheel and inbox. `factory(shard, handle)` builds
    /// each shard's handler on that shard's thread. Returns once every shard is ready, or with
    /// the first shard's setup error.
    pub fn start<F>(config: EngineConfig, factory: F) -> Result<Engine<H>, EngineError>
    where
        F: Fn(usize, EngineHandle<H>) -> H + Send + Sync + 'static,
    {
        config.validate().map_err(EngineError::Config)?;
        let backend = crate::sys::choose(&config)?;
        log_backend(&backend);
        let (listeners, local_addr) = match config.listen {
            Some(addr) => {
                let (l, a) = crate::listener::bind_all(addr, config.workers, config.backlog)?;
                (l.into_iter().map(Some).collect::<Vec<_>>(), Some(a))
            }
            None => ((0..config.workers).map(|_| None).collect(), None),
        };
        let mut shards = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let s = ShardShared::new().map_err(|source| EngineError::Setup {
                what: "creating the doorbell eventfd",
                source,
            })?;
            shards.push(Arc::new(s));
        }
        let handle = EngineHandle {
            shared: Arc::new(EngineShared {
                shards,
                local_addr,
                open: std::sync::atomic::AtomicUsize::new(0),
                backend: backend.clone(),
            }),
        };
        let factory = Arc::new(factory);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut threads = Vec::with_capacity(config.workers);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), EngineError>>();
        for (index, listener) in listeners.into_iter().enumerate() {
            let cfg = config.clone();
            let kind = backend.backend;
            let handle = handle.clone();
            let factory = factory.clone();
            let ready = ready_tx.clone();
            let listener: Option<OwnedFd> = listener;
            let t = std::thread::Builder::new()
                .name(format!("ringport-shard-{index}"))
                .spawn(move || {
                    if cfg.pin_cpus {
                        crate::listener::pin_to_cpu(index % cpus);
                    }
                    if let Some(slice) = cfg.sched_slice {
                        crate::listener::set_sched_slice(slice);
                    }
                    let mut shard =
                        match Shard::new(index, cfg, kind, listener, handle.clone(), |h| {
                            factory(index, h)
                        }) {
                            Ok(s) => {
                                let _ = ready.send(Ok(()));
                                s
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return Ok(());
                            }
                        };
                    drop(ready);
                    shard.run()
                })
                .map_err(|source| EngineError::Setup {
                    what: "spawning a shard thread",
                    source,
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let engine = Engine { handle, threads };
        for _ in 0..config.workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    engine.shutdown();
                    let _ = engine.join();
                    return Err(e);
                }
                Err(_) => {
                    engine.shutdown();
                    let _ = engine.join();
                    return Err(EngineError::ShardPanicked(usize::MAX));
                }
            }
        }
        Ok(engine)
    }

    /// A handle to the shards.
    pub fn handle(&self) -> EngineHandle<H> {
        self.handle.clone()
    }

    /// The listener's bound address (port 0 resolved), if the engine listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.handle.local_addr()
    }

    /// Begins graceful shutdown: stop accepting, flush queues within
    /// `shutdown_timeout`, close every connection, exit the shard threads.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Waits for every shard thread to exit; the first shard's error (a panic, or a ring
    /// that failed for good), if any.
    pub fn join(self) -> Result<(), EngineError> {
        let mut result = Ok(());
        for (i, t) in self.threads.into_iter().enumerate() {
            let r = t.join().unwrap_or(Err(EngineError::ShardPanicked(i)));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Says at start which backend runs and why; on epoll, also what caps connections.
fn log_backend(choice: &crate::BackendChoice) {
    match choice.backend {
        crate::IoBackend::Epoll => tracing::info!(
            backend = choice.name(),
            reason = %choice.reason,
            nofile = crate::listener::nofile_limit(),
            "I/O backend: epoll; connections are sockets in the process fd table, so \
             RLIMIT_NOFILE (nofile) caps open connections per process"
        ),
        _ => tracing::info!(
            backend = choice.name(),
            reason = %choice.reason,
            "I/O backend: io_uring"
        ),
    }
}
