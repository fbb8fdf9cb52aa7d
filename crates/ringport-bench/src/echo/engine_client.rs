//! The echo load on the ringport-io engine: one [`EchoShard`] handler per shard thread.
//!
//! Connections are plain `ctx.connect(target, Some(source))` outbound connections, so they
//! live in the engine's direct-descriptor tables and not in the process fd table: one bench
//! process can hold more connections than the 20,000 open-file limit. Each shard keeps its
//! connections' [`EchoConn`] state in a `Vec` indexed by `ConnId::index()`, sends whatever a
//! connection has due, and records latencies into its own [`ShardRecorder`].

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ringport_io::{
    CloseReason, ConnId, ConnMap, Ctx, Engine, EngineConfig, EngineHandle, Handler, Origin,
};

use super::conn::{pattern, EchoConn};
use super::EchoConfig;
use crate::measure::{LoadDriver, ShardRecorder, SharedStats};

/// Connects in flight per shard (keeps the server's accept backlog from overflowing).
const CONNECT_WINDOW: usize = 256;

pub struct EngineEcho {
    cfg: Arc<EchoConfig>,
    shared: Vec<Arc<SharedStats>>,
    engine: Engine<EchoShard>,
}

impl EngineEcho {
    pub fn new(cfg: EchoConfig) -> anyhow::Result<EngineEcho> {
        let shards = shards_for(cfg.connections, cfg.threads, table_cap());
        if shards > cfg.threads {
            eprintln!(
                "note: {} connections need {shards} client shards (a shard's direct-descriptor table \
                 is capped at RLIMIT_NOFILE); using {shards} instead of --threads {}",
                cfg.connections, cfg.threads
            );
        }
        let per_shard = cfg.connections.div_ceil(shards);
        let config = EngineConfig {
            workers: shards,
            listen: None,
            max_connections_per_shard: u32::try_from(per_shard + 64).unwrap_or(u32::MAX),
            // Open-loop schedules fire from connection timers: a fine tick keeps the sends on time.
            timer_tick: Duration::from_millis(1),
            resolve_peer_addr: false,
            ..EngineConfig::default()
        };
        let cfg = Arc::new(cfg);
        let shared: Vec<Arc<SharedStats>> = (0..shards).map(|_| Arc::default()).collect();
        let engine = {
            let cfg = cfg.clone();
            let shared = shared.clone();
            Engine::start(config, move |shard, _handle: EngineHandle<EchoShard>| {
                EchoShard::new(shard, shards, cfg.clone(), shared[shard].clone())
            })
            .map_err(|e| anyhow!("starting the ringport-io client engine: {e:?}"))?
        };
        Ok(EngineEcho {
            cfg,
            shared,
            engine,
        })
    }

    /// Runs `f` on every shard and waits until all have run it.
    fn on_every_shard(
        &self,
        f: impl Fn(&mut EchoShard, &mut Ctx<'_, EchoShard>) + Send + Sync + Clone + 'static,
    ) {
        let handle = self.engine.handle();
        let (tx, rx) = mpsc::channel();
        for shard in 0..handle.shards() {
            let (f, tx) = (f.clone(), tx.clone());
            handle.run(shard, move |h, ctx| {
                f(h, ctx);
                let _ = tx.send(());
            });
        }
        drop(tx);
        for _ in 0..handle.shards() {
            // A shard that exited drops its closure (and sender) unrun: stop waiting then.
            if rx.recv_timeout(Duration::from_secs(10)).is_err() {
                break;
            }
        }
    }
}

impl LoadDriver for EngineEcho {
    fn shared(&self) -> Vec<Arc<SharedStats>> {
        self.shared.clone()
    }

    fn begin_connect(&mut self) -> anyhow::Result<()> {
        self.on_every_shard(|h, ctx| h.open_more(ctx));
        Ok(())
    }

    fn begin_load(&mut self, start: Instant) -> anyhow::Result<()> {
        if !self.cfg.idle {
            self.on_every_shard(move |h, ctx| h.start(ctx, start));
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        self.on_every_shard(|h, ctx| h.stop(ctx));
        self.engine.shutdown();
        self.engine
            .join()
            .map_err(|e| anyhow!("ringport-io client engine: {e:?}"))
    }
}

/// Connections one shard can hold: the kernel caps a direct-descriptor table at
/// RLIMIT_NOFILE (read from /proc/self/limits), less a margin.
pub fn table_cap() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    soft.saturating_sub(64).max(64)
}

/// Shards needed so that no shard holds more than `cap` connections (at least `threads`).
pub fn shards_for(connections: usize, threads: usize, cap: usize) -> usize {
    threads.max(1).max(connections.div_ceil(cap.max(1)))
}

/// One connection slot of a shard.
struct Slot {
    id: ConnId,
    /// Global connection number (picks the source address and the open-loop phase).
    number: usize,
    /// Set once on_open reported the connection established.
    open: bool,
    /// The echo state machine, once the load started.
    echo: Option<EchoConn>,
}

/// The per-shard handler.
pub struct EchoShard {
    cfg: Arc<EchoConfig>,
    pattern: Vec<u8>,
    recorder: ShardRecorder,
    /// Indexed by `ConnId::index()`.
    slots: ConnMap<Slot>,
    /// Global numbers of the connections this shard opens: shard, shard + shards, ...
    next_number: usize,
    stride: usize,
    connecting: usize,
    /// The load start (open-loop anchor); None until begin_load.
    started: Option<Instant>,
    stopping: bool,
    /// Reused send buffer.
    out: Vec<u8>,
}

impl EchoShard {
    fn new(
        shard: usize,
        shards: usize,
        cfg: Arc<EchoConfig>,
        shared: Arc<SharedStats>,
    ) -> EchoShard {
        EchoShard {
            pattern: pattern(cfg.size),
            out: Vec::with_capacity(cfg.size * cfg.depth),
            recorder: ShardRecorder::new(shared),
            slots: ConnMap::new(),
            next_number: shard,
            stride: shards,
            connecting: 0,
            started: None,
            stopping: false,
            cfg,
        }
    }

    fn stats(&self) -> &SharedStats {
        self.recorder.shared()
    }

    fn slot_mut(&mut self, conn: ConnId) -> Option<&mut Slot> {
        self.slots.get_mut(conn)
    }

    /// Issues connects until the window is full or every connection of this shard is asked for.
    fn open_more(&mut self, ctx: &mut Ctx<'_, Self>) {
        while !self.stopping
            && self.connecting < CONNECT_WINDOW
            && self.next_number < self.cfg.connections
        {
            let number = self.next_number;
            self.next_number += self.stride;
            match ctx.connect(self.cfg.target, self.cfg.bind_for(number)) {
                Ok(id) => {
                    self.slots.insert(
                        id,
                        Slot {
                            id,
                            number,
                            open: false,
                            echo: None,
                        },
                    );
                    self.connecting += 1;
                }
                Err(e) => self.stats().connect_failed(e.raw_os_error()),
            }
        }
    }

    fn start(&mut self, ctx: &mut Ctx<'_, Self>, start: Instant) {
        self.started = Some(start);
        let ids: Vec<ConnId> = self
            .slots
            .values()
            .filter(|s| s.open)
            .map(|s| s.id)
            .collect();
        for id in ids {
            self.begin_echo(ctx, id);
        }
    }

    fn begin_echo(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId) {
        let Some(start) = self.started else { return };
        let cfg = self.cfg.clone();
        if let Some(slot) = self.slot_mut(id) {
            slot.echo = Some(cfg.new_conn(slot.number, start));
            self.kick(ctx, id);
        }
    }

    /// Sends whatever `id` has due and arms its timer for the next open-loop send.
    fn kick(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId) {
        if self.stopping {
            return;
        }
        let Some(echo) = self.slots.get_mut(id).and_then(|s| s.echo.as_mut()) else {
            return;
        };
        self.out.clear();
        if echo.poll_send(Instant::now(), &self.pattern, &mut self.out) > 0
            && ctx.send_copy(id, &self.out).is_ok()
        {
            self.recorder.sent(self.out.len());
        }
        if let Some(at) = echo.next_wakeup() {
            ctx.set_timer(id, at);
        }
    }

    fn stop(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.stopping = true;
        self.recorder.flush();
        let ids: Vec<ConnId> = self.slots.values().map(|s| s.id).collect();
        for id in ids {
            ctx.close(id, CloseReason::Local);
        }
    }
}

impl Handler for EchoShard {
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _origin: Origin) {
        let Some(slot) = self.slot_mut(conn) else {
            return;
        };
        slot.open = true;
        self.connecting = self.connecting.saturating_sub(1);
        self.stats().open.fetch_add(1, Ordering::Relaxed);
        if self.started.is_some() && !self.cfg.idle {
            self.begin_echo(ctx, conn);
        }
        self.open_more(ctx);
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        let received = Instant::now();
        let Some(slot) = self.slots.get_mut(conn) else {
            return;
        };
        self.recorder.received(data.len());
        let Some(echo) = slot.echo.as_mut() else {
            // Bytes before we sent anything: the server is not an echo server.
            self.recorder
                .shared()
                .mismatches
                .fetch_add(1, Ordering::Relaxed);
            ctx.abort(conn, CloseReason::App(1));
            return;
        };
        let recorder = &mut self.recorder;
        let checked = echo.on_bytes(data, &self.pattern, |sent| {
            recorder.message_done(received.saturating_duration_since(sent));
        });
        if checked.is_err() {
            self.recorder
                .shared()
                .mismatches
                .fetch_add(1, Ordering::Relaxed);
            ctx.abort(conn, CloseReason::App(1));
            return;
        }
        self.kick(ctx, conn);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        let Some(slot) = self.slots.remove(conn) else {
            return;
        };
        if slot.open {
            self.stats().open.fetch_sub(1, Ordering::Relaxed);
            if !self.stopping {
                self.stats()
                    .closed_unexpectedly
                    .fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.connecting = self.connecting.saturating_sub(1);
            match reason {
                CloseReason::ConnectFailed(errno) => self.stats().connect_failed(Some(errno)),
                _ if !self.stopping => self.stats().connect_failed(None),
                _ => {}
            }
        }
        self.open_more(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        self.kick(ctx, conn);
    }

    fn on_loop(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.recorder.maybe_flush(ctx.now());
    }

    fn on_shutdown(&mut self, _ctx: &mut Ctx<'_, Self>) {
        self.stopping = true;
        self.recorder.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_grow_past_the_per_table_cap() {
        assert_eq!(shards_for(50, 1, 19_936), 1);
        assert_eq!(shards_for(25_000, 1, 19_936), 2);
        assert_eq!(shards_for(25_000, 4, 19_936), 4);
        assert_eq!(shards_for(100_000, 1, 19_936), 6);
        assert!(table_cap() >= 64);
    }
}
