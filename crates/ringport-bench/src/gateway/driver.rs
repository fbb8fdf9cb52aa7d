//! The gateway scenarios on the ringport-io engine: one [`GwShard`] handler per shard, each
//! holding its connections' [`ClientConn`] state machines in a `Vec` indexed by
//! `ConnId::index()` (direct descriptors: one bench process holds more than the fd limit).
//!
//! A ticker thread pokes every shard every few milliseconds through the engine inbox; churn
//! opens its due connections and resume aborts its due victims from there.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rand::Rng;
use ringport_io::{
    CloseReason, ConnId, ConnMap, Ctx, Engine, EngineConfig, EngineHandle, Handler, Origin,
};
use serde::Serialize;

use super::client::Event;
use super::counters::{inc, totals, GwCounters, GwTotals};
use super::ledger::{Arrival, Verdict};
use super::publisher::{Publisher, PublisherConfig};
use super::subscriber::{Protocol, Subscriber};
use super::tls::{TlsFailure, TlsLayer, TlsTarget};
use super::tokens::Tokens;
use crate::echo::engine_client::shards_for;
use crate::measure::{LoadDriver, ShardRecorder, SharedStats};
use crate::pacer::{ConnectPacer, SLOW_HANDSHAKE};

/// Churn connects in flight per shard.
const CONNECT_WINDOW: usize = 256;
/// The paced window's starting size per shard (it grows from here: `crate::pacer`).
const INITIAL_WINDOW: usize = 64;
/// Direct-descriptor tables a client shard may use (each holds `table_cap` connections).
const TABLES: usize = 64;
/// How often the ticker pokes each shard.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    Idle,
    Fanout,
    /// Connect, handshake, join, close: `rate` cycles per second in total.
    Churn {
        rate: f64,
        /// Random (exponential) gaps between connects instead of even ones (`--poisson`).
        poisson: bool,
    },
    /// Abort `rate` random connections per second and reconnect them with resume.
    Resume {
        rate: f64,
    },
}

#[derive(Debug, Clone)]
pub struct GwConfig {
    pub target: SocketAddr,
    pub connections: usize,
    pub rooms: Vec<String>,
    pub rooms_per_conn: usize,
    pub tokens: Tokens,
    pub sources: Vec<IpAddr>,
    pub threads: usize,
    pub scenario: Scenario,
    /// The server the subscribers talk to.
    pub protocol: Protocol,
    /// The fan-out/resume publisher, started when the load begins.
    pub publisher: Option<PublisherConfig>,
    /// Per-shard direct-descriptor cap (RLIMIT_NOFILE less a margin).
    pub table_cap: usize,
    /// Most connections between connect and ready at once, over all shards
    /// (`--connect-window`; the pacer adapts below it).
    pub connect_window: usize,
    /// `--tls`: every transport is TLS, verified against these roots and this name.
    pub tls: Option<TlsTarget>,
}

impl GwConfig {
    fn rooms_for(&self, number: usize) -> Vec<String> {
        let r = self.rooms.len();
        if r == 0 {
            return Vec::new();
        }
        (0..self.rooms_per_conn.min(r))
            .map(|k| self.rooms[(number * self.rooms_per_conn + k) % r].clone())
            .collect()
    }

    fn bind_for(&self, i: usize) -> Option<SocketAddr> {
        (!self.sources.is_empty()).then(|| SocketAddr::new(self.sources[i % self.sources.len()], 0))
    }
}

/// What the subscribers' ledgers say at the end of a run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Deliveries {
    /// Distinct (connection, stream, offset) received.
    pub unique: u64,
    pub duplicates: u64,
    /// Offsets that arrived below the highest already seen.
    pub late: u64,
    /// Offsets missing between a connection's first and last received offset.
    pub holes: u64,
    /// Ready members per room when the publisher started.
    pub members: Vec<u64>,
}

/// Everything the gateway driver learned, filled in by `finish`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GwOutcome {
    pub counters: GwTotals,
    pub deliveries: Deliveries,
    /// Publisher: requests sent, accepted, rejected, and the recipients the server reported
    /// (`None` when its answers carry no count: ringport's HTTP push without
    /// `?wait=delivered`, client PUBLISH, NATS).
    pub published_sent: u64,
    pub published_accepted: u64,
    pub published_rejected: u64,
    pub server_recipients: Option<u64>,
    /// Publish rate asked for, and the largest lateness of a publish against its schedule.
    pub publish_rate: f64,
    pub publisher_max_lag_ms: f64,
    /// Expected deliveries: accepted messages x ready members of their room.
    pub expected: u64,
    /// Resume: per-offset verdict over every connection's stream window.
    pub resume: Option<Verdict>,
    pub publisher_error: Option<String>,
}

pub struct GwLoad {
    cfg: Arc<GwConfig>,
    shared: Vec<Arc<SharedStats>>,
    counters: Vec<Arc<GwCounters>>,
    engine: Engine<GwShard>,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    publisher: Option<Publisher>,
    members: Vec<u64>,
    pub outcome: Arc<Mutex<GwOutcome>>,
}

impl GwLoad {
    pub fn new(cfg: GwConfig) -> anyhow::Result<GwLoad> {
        // A shard adds direct-descriptor tables as they fill (up to TABLES of them), so
        // --threads shards hold a million connections without a thread per table.
        let shards = shards_for(cfg.connections.max(1), cfg.threads, cfg.table_cap * TABLES);
        if shards > cfg.threads {
            eprintln!(
                "note: {} connections need {shards} client shards (direct-descriptor table cap \
                 {} x {TABLES} tables); using {shards} instead of --threads {}",
                cfg.connections, cfg.table_cap, cfg.threads
            );
        }
        let per_shard = match cfg.scenario {
            // Churn holds few connections at a time, but TIME_WAIT is the kernel's, not ours.
            Scenario::Churn { .. } => 4096,
            _ => cfg.connections.div_ceil(shards) + 64,
        };
        let config = EngineConfig {
            workers: shards,
            listen: None,
            max_connections_per_shard: u32::try_from(per_shard).unwrap_or(u32::MAX),
            timer_tick: Duration::from_millis(10),
            resolve_peer_addr: false,
            recv_buffers: 4096,
            max_descriptor_tables: TABLES as u32,
            ..EngineConfig::default()
        };
        let cfg = Arc::new(cfg);
        let shared: Vec<Arc<SharedStats>> = (0..shards).map(|_| Arc::default()).collect();
        let counters: Vec<Arc<GwCounters>> = (0..shards).map(|_| Arc::default()).collect();
        let engine = {
            let (cfg, shared, counters) = (cfg.clone(), shared.clone(), counters.clone());
            Engine::start(config, move |shard, _h: EngineHandle<GwShard>| GwShard {
                cfg: cfg.clone(),
                recorder: ShardRecorder::new(shared[shard].clone()),
                counters: counters[shard].clone(),
                slots: ConnMap::new(),
                next_number: shard,
                stride: shards,
                connecting: 0,
                pacer: ConnectPacer::new(
                    INITIAL_WINDOW,
                    cfg.connect_window.div_ceil(shards),
                    SLOW_HANDSHAKE,
                ),
                loading: None,
                issued: 0,
                next_due: 0.0,
                pings_paused: false,
                stopping: false,
                out: Vec::new(),
                wire: Vec::new(),
                plain: Vec::new(),
                events: Vec::new(),
                turn: TurnCounts::default(),
            })
            .map_err(|e| anyhow!("starting the ringport-io client engine: {e:?}"))?
        };
        Ok(GwLoad {
            cfg,
            shared,
            counters,
            engine,
            ticker: None,
            publisher: None,
            members: Vec::new(),
            outcome: Arc::default(),
        })
    }

    /// Runs `f` on every shard and collects its answers (bounded wait).
    fn on_every_shard<T: Send + 'static>(
        &self,
        f: impl Fn(&mut GwShard, &mut Ctx<'_, GwShard>) -> T + Send + Sync + Clone + 'static,
    ) -> Vec<T> {
        let handle = self.engine.handle();
        let (tx, rx) = mpsc::channel();
        for shard in 0..handle.shards() {
            let (f, tx) = (f.clone(), tx.clone());
            handle.run(shard, move |h, ctx| {
                let _ = tx.send(f(h, ctx));
            });
        }
        drop(tx);
        let mut out = Vec::new();
        for _ in 0..handle.shards() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    fn deliveries_so_far(&self) -> u64 {
        totals(&self.counters).pushes
    }

    /// Waits (at most `max`) until every PING sent has its PONG, so a run's counts end
    /// balanced unless the server really failed to answer (what is still missing after
    /// `max` stays in the report: `pings_sent` > `pongs_received`).
    fn await_pongs(&self, max: Duration) {
        let start = Instant::now();
        while start.elapsed() < max {
            let t = totals(&self.counters);
            if t.pongs_received >= t.pings_sent {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until deliveries stop growing (or reach `expected`) and, for resume, until every
    /// connection is ready again; at most `max`.
    fn settle(&self, expected: Option<u64>, max: Duration) {
        let start = Instant::now();
        let mut last = self.deliveries_so_far();
        let mut still_since = Instant::now();
        while start.elapsed() < max {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.deliveries_so_far();
            let t = totals(&self.counters);
            let reconnecting = matches!(self.cfg.scenario, Scenario::Resume { .. })
                && self
                    .shared
                    .iter()
                    .map(|s| s.open.load(Ordering::Relaxed))
                    .sum::<u64>()
                    < self.cfg.connections as u64;
            if expected.is_some_and(|e| t.pushes >= e) && !reconnecting {
                return;
            }
            if now != last {
                last = now;
                still_since = Instant::now();
            } else if still_since.elapsed() > Duration::from_millis(1500) && !reconnecting {
                return;
            }
        }
    }
}

impl LoadDriver for GwLoad {
    fn shared(&self) -> Vec<Arc<SharedStats>> {
        self.shared.clone()
    }

    fn begin_connect(&mut self) -> anyhow::Result<()> {
        if !matches!(self.cfg.scenario, Scenario::Churn { .. }) {
            self.on_every_shard(|h, ctx| h.open_more(ctx));
        }
        Ok(())
    }

    fn begin_load(&mut self, start: Instant) -> anyhow::Result<()> {
        // Members per room, as the subscribers see them now.
        let rooms = self.cfg.rooms.clone();
        let per_shard = self.on_every_shard(move |h, _ctx| h.members(&rooms));
        let mut members = vec![0u64; self.cfg.rooms.len()];
        for m in per_shard {
            for (a, b) in members.iter_mut().zip(m) {
                *a += b;
            }
        }
        self.members = members;
        self.on_every_shard(move |h, _ctx| h.loading = Some(start));
        if let Some(p) = &self.cfg.publisher {
            self.publisher = Some(Publisher::start(p.clone())?);
        }
        if matches!(
            self.cfg.scenario,
            Scenario::Churn { .. } | Scenario::Resume { .. }
        ) {
            let stop = Arc::new(AtomicBool::new(false));
            let handle = self.engine.handle();
            let flag = stop.clone();
            let t = std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    for shard in 0..handle.shards() {
                        handle.run(shard, |h: &mut GwShard, ctx| h.tick(ctx));
                    }
                    std::thread::sleep(TICK);
                }
            });
            self.ticker = Some((stop, t));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        if let Some((stop, t)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
        self.on_every_shard(|h, _ctx| h.loading = None);
        self.on_every_shard(|h, _ctx| h.pings_paused = true);
        self.await_pongs(Duration::from_secs(5));
        let mut out = GwOutcome::default();
        if let Some(p) = self.publisher.take() {
            let stats = p.stats.clone();
            if let Err(e) = p.stop() {
                out.publisher_error = Some(format!("{e:#}"));
            }
            out.published_sent = stats.sent.load(Ordering::Relaxed);
            out.published_accepted = stats.accepted.load(Ordering::Relaxed);
            out.published_rejected = stats.rejected.load(Ordering::Relaxed);
            out.server_recipients = (stats.recipients_reported.load(Ordering::Relaxed) > 0)
                .then(|| stats.recipients.load(Ordering::Relaxed));
            out.publisher_max_lag_ms = stats.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0;
            out.publish_rate = self.cfg.publisher.as_ref().map_or(0.0, |p| p.rate);
            let per_room = stats
                .accepted_per_room
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            out.expected = per_room.iter().zip(&self.members).map(|(a, m)| a * m).sum();
            self.settle(Some(out.expected), Duration::from_secs(10));
        }
        let summaries = self.on_every_shard(|h, _ctx| h.summary());
        let mut d = Deliveries {
            members: self.members.clone(),
            ..Deliveries::default()
        };
        let mut max_offset: Vec<(String, u32, u64)> = Vec::new();
        for s in &summaries {
            d.unique += s.unique;
            d.duplicates += s.duplicates;
            d.late += s.late;
            d.holes += s.holes;
            for (k, e, m) in &s.max_offset {
                match max_offset.iter_mut().find(|(k2, e2, _)| k2 == k && e2 == e) {
                    Some(x) => x.2 = x.2.max(*m),
                    None => max_offset.push((k.clone(), *e, *m)),
                }
            }
        }
        out.deliveries = d;
        if matches!(self.cfg.scenario, Scenario::Resume { .. }) {
            let maxes = Arc::new(max_offset);
            let verdicts = self.on_every_shard(move |h, _ctx| h.verify(&maxes));
            let mut v = Verdict::default();
            verdicts.iter().for_each(|x| v.add(x));
            out.resume = Some(v);
        }
        self.on_every_shard(|h, ctx| h.stop(ctx));
        out.counters = totals(&self.counters);
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = out;
        self.engine.shutdown();
        self.engine
            .join()
            .map_err(|e| anyhow!("ringport-io client engine: {e:?}"))
    }
}

/// One connection of a shard.
struct Slot {
    id: ConnId,
    number: usize,
    /// TCP open.
    open: bool,
    /// Counted in `SharedStats::open` (handshake and joins done).
    ready: bool,
    /// We aborted it on purpose (resume): reconnect on close.
    disrupted: bool,
    /// When the connect was issued (churn handshake latency).
    connect_at: Instant,
    /// Counted in the shard's pacer until ready or closed.
    paced: bool,
    client: Subscriber,
    /// `--tls`: this transport's TLS client (a fresh one per transport).
    tls: Option<Box<TlsLayer>>,
}

/// A shard's summary of its ledgers.
struct Summary {
    unique: u64,
    duplicates: u64,
    late: u64,
    holes: u64,
    /// (stream, epoch, highest offset seen).
    max_offset: Vec<(String, u32, u64)>,
}

pub struct GwShard {
    cfg: Arc<GwConfig>,
    recorder: ShardRecorder,
    counters: Arc<GwCounters>,
    slots: ConnMap<Slot>,
    next_number: usize,
    stride: usize,
    connecting: usize,
    /// Paces the initial connects (`crate::pacer`).
    pacer: ConnectPacer,
    /// Set while the load runs (churn and disruptions only then).
    loading: Option<Instant>,
    /// Churn connects issued since the load began.
    issued: u64,
    /// `--poisson` churn: when the next connect is due, in seconds since the load began.
    next_due: f64,
    /// Set when the run ends: no new PINGs, so the ones in flight can be answered before
    /// the connections close (`GwLoad::await_pongs`).
    pings_paused: bool,
    stopping: bool,
    /// What the protocol client wrote (plaintext).
    out: Vec<u8>,
    /// `--tls`: `out` sealed into records.
    wire: Vec<u8>,
    /// `--tls`: received records opened.
    plain: Vec<u8>,
    events: Vec<Event>,
    /// This loop turn's pushes, duplicates and late arrivals, published to `counters` (shared
    /// atomics) and stamped into `last_push_unix_us` (one wall-clock read) by `on_loop`, once
    /// per turn instead of once per receive.
    turn: TurnCounts,
}

/// See [`GwShard::turn`].
#[derive(Debug, Default, Clone, Copy)]
struct TurnCounts {
    pushes: u64,
    duplicates: u64,
    late: u64,
}

impl GwShard {
    fn stats(&self) -> &SharedStats {
        self.recorder.shared()
    }

    fn connect(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        number: usize,
        client: Option<Subscriber>,
        paced: bool,
    ) {
        let now = ctx.now();
        let tls = match self.cfg.tls.as_ref().map(TlsTarget::connect).transpose() {
            Ok(tls) => tls.map(Box::new),
            Err(_) => {
                // Only an invalid configuration fails here, and it was checked at start.
                inc(&self.counters.tls_errors);
                return;
            }
        };
        match ctx.connect(self.cfg.target, self.cfg.bind_for(number)) {
            Ok(id) => {
                inc(&self.counters.connects);
                let client = client.unwrap_or_else(|| {
                    Subscriber::new(self.cfg.protocol, self.cfg.rooms_for(number), now)
                });
                self.slots.insert(
                    id,
                    Slot {
                        id,
                        number,
                        open: false,
                        ready: false,
                        disrupted: false,
                        connect_at: now,
                        paced,
                        client,
                        tls,
                    },
                );
                self.connecting += 1;
                if paced {
                    self.pacer.issued();
                }
            }
            Err(e) => self.stats().connect_failed(e.raw_os_error()),
        }
    }

    fn open_more(&mut self, ctx: &mut Ctx<'_, Self>) {
        if matches!(self.cfg.scenario, Scenario::Churn { .. }) {
            return;
        }
        while !self.stopping && self.pacer.may_issue() && self.next_number < self.cfg.connections {
            let number = self.next_number;
            self.next_number += self.stride;
            self.connect(ctx, number, None, true);
        }
        self.counters
            .connect_window
            .store(self.pacer.window() as u64, Ordering::Relaxed);
        self.counters
            .window_cuts
            .store(self.pacer.cuts, Ordering::Relaxed);
    }

    /// Called by the ticker while the load runs.
    fn tick(&mut self, ctx: &mut Ctx<'_, Self>) {
        let Some(start) = self.loading else { return };
        if self.stopping {
            return;
        }
        let elapsed = ctx.now().saturating_duration_since(start).as_secs_f64();
        match self.cfg.scenario {
            Scenario::Churn { rate, poisson } => {
                let per_shard = rate / self.stride as f64;
                let mut rng = rand::rng();
                loop {
                    let due = if poisson {
                        elapsed >= self.next_due
                    } else {
                        self.issued < (elapsed * per_shard) as u64
                    };
                    if !due || self.connecting >= CONNECT_WINDOW * 8 {
                        break;
                    }
                    if poisson {
                        // Exponential gap: -ln(U) / rate, U in (0, 1].
                        let u: f64 = 1.0 - rng.random::<f64>();
                        self.next_due += -u.ln() / per_shard;
                    }
                    self.issued += 1;
                    let number = self.next_number;
                    self.next_number += self.stride;
                    self.connect(ctx, number, None, false);
                }
            }
            Scenario::Resume { rate } => {
                let due = (elapsed * rate / self.stride as f64) as u64;
                let mut rng = rand::rng();
                let mut tries = 0;
                while self.issued < due && tries < 64 && !self.slots.is_empty() {
                    tries += 1;
                    let i = rng.random_range(0..self.slots.slot_count());
                    let Some(s) = self
                        .slots
                        .by_slot_mut(i)
                        .map(|(_, s)| s)
                        .filter(|s| s.ready)
                    else {
                        continue;
                    };
                    self.issued += 1;
                    s.disrupted = true;
                    let id = s.id;
                    inc(&self.counters.disconnects);
                    ctx.abort(id, CloseReason::Local);
                }
            }
            _ => {}
        }
    }

    fn members(&self, rooms: &[String]) -> Vec<u64> {
        let mut m = vec![0u64; rooms.len()];
        for s in self.slots.values().filter(|s| s.ready) {
            for r in s.client.rooms() {
                if let Some(i) = rooms.iter().position(|x| x == r) {
                    m[i] += 1;
                }
            }
        }
        m
    }

    fn summary(&self) -> Summary {
        let mut s = Summary {
            unique: 0,
            duplicates: 0,
            late: 0,
            holes: 0,
            max_offset: Vec::new(),
        };
        for slot in self.slots.values() {
            for t in slot.client.streams() {
                s.unique += t.ledger.received.len();
                s.duplicates += t.ledger.duplicates;
                s.late += t.ledger.late;
                s.holes += t.ledger.holes();
                if let Some(m) = t.ledger.received.max() {
                    let k = t.stream.to_string();
                    match s
                        .max_offset
                        .iter_mut()
                        .find(|(k2, e, _)| *k2 == k && *e == t.epoch)
                    {
                        Some(x) => x.2 = x.2.max(m),
                        None => s.max_offset.push((k, t.epoch, m)),
                    }
                }
            }
        }
        s
    }

    /// Every connection's streams, from its first offset to the stream's highest anywhere.
    fn verify(&self, maxes: &[(String, u32, u64)]) -> Verdict {
        let mut v = Verdict::default();
        for slot in self.slots.values() {
            for t in slot.client.streams() {
                let Some(first) = t.ledger.received.min() else {
                    continue;
                };
                let k = t.stream.to_string();
                let last = maxes
                    .iter()
                    .find(|(k2, e, _)| *k2 == k && *e == t.epoch)
                    .map_or(first, |x| x.2);
                v.add(&t.ledger.verify(first, last + 1));
            }
        }
        v
    }

    /// Publishes this turn's push counts and, if there were pushes, the wall clock as the
    /// last push's time (at most a loop turn after the receive).
    fn publish_turn(&mut self) {
        let t = std::mem::take(&mut self.turn);
        if t.pushes == 0 {
            return;
        }
        self.counters.pushes.fetch_add(t.pushes, Ordering::Relaxed);
        if t.duplicates > 0 {
            self.counters
                .duplicates
                .fetch_add(t.duplicates, Ordering::Relaxed);
        }
        if t.late > 0 {
            self.counters.late.fetch_add(t.late, Ordering::Relaxed);
        }
        let unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.counters
            .last_push_unix_us
            .fetch_max(unix_us, Ordering::Relaxed);
    }

    fn stop(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.stopping = true;
        self.publish_turn();
        self.recorder.flush();
        let ids: Vec<ConnId> = self.slots.values().map(|s| s.id).collect();
        for id in ids {
            ctx.close(id, CloseReason::Local);
        }
    }

    /// Sends what the protocol client wrote (sealed into records under `--tls`).
    fn flush_out(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId) {
        let tls = self.slots.get_mut(id).and_then(|s| s.tls.as_deref_mut());
        let bytes = match tls {
            Some(tls) => {
                tls.seal(&mut self.out, &mut self.wire);
                &mut self.wire
            }
            None => &mut self.out,
        };
        if !bytes.is_empty() {
            let _ = ctx.send_copy(id, bytes);
            bytes.clear();
        }
    }

    fn handle_events(&mut self, ctx: &mut Ctx<'_, Self>, id: ConnId) {
        let now = ctx.now();
        let mut events = std::mem::take(&mut self.events);
        let mut close = false;
        // A handshake finished: its place in the connect window goes to the next connect.
        let mut freed = false;
        // Pushes are counted in `self.turn` and published once per loop turn (`on_loop`): the
        // shared counters are atomics, and a turn carries many receives.
        for ev in events.drain(..) {
            match ev {
                Event::Welcomed => inc(&self.counters.welcomed),
                Event::Ready { failed } => {
                    self.counters
                        .join_refused
                        .fetch_add(failed as u64, Ordering::Relaxed);
                    inc(&self.counters.ready);
                    let Some(slot) = self.slots.get_mut(id) else {
                        continue;
                    };
                    slot.ready = true;
                    let started = slot.connect_at;
                    if std::mem::take(&mut slot.paced) {
                        self.pacer.completed(now.saturating_duration_since(started));
                        freed = true;
                    }
                    let next = slot.client.next_ping();
                    self.stats().open.fetch_add(1, Ordering::Relaxed);
                    if let Scenario::Churn { .. } = self.cfg.scenario {
                        self.recorder
                            .message_done(now.saturating_duration_since(started));
                        inc(&self.counters.churn_cycles);
                        close = true;
                    } else if let Some(at) = next {
                        ctx.set_timer(id, at);
                    }
                }
                Event::Push { arrival, latency } => {
                    self.turn.pushes += 1;
                    match arrival {
                        Arrival::Duplicate => self.turn.duplicates += 1,
                        Arrival::Late => self.turn.late += 1,
                        Arrival::InOrder => {}
                    }
                    if arrival != Arrival::Duplicate {
                        match latency {
                            Some(l) => self.recorder.message_done(l),
                            None => self.recorder.message_done(Duration::ZERO),
                        }
                    }
                }
                Event::Pong { rtt } => {
                    inc(&self.counters.pongs_received);
                    if self.cfg.scenario == Scenario::Idle {
                        self.recorder.message_done(rtt);
                    }
                }
                Event::ServerPing => inc(&self.counters.server_pings),
                Event::ResumeAnswered(_) => inc(&self.counters.resume_answered),
                Event::ResumeUnanswered => inc(&self.counters.resume_unanswered),
                Event::ServerClose(_) => {
                    inc(&self.counters.server_closes);
                    close = true;
                }
                Event::ProtocolError => {
                    inc(&self.counters.protocol_errors);
                    close = true;
                }
            }
        }
        self.events = events;
        if close {
            ctx.close(id, CloseReason::Local);
        }
        if freed {
            self.open_more(ctx);
        }
    }
}

impl Handler for GwShard {
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _origin: Origin) {
        let now = ctx.now();
        let resume = matches!(self.cfg.scenario, Scenario::Resume { .. });
        let Some(slot) = self.slots.get_mut(conn) else {
            return;
        };
        slot.open = true;
        self.connecting = self.connecting.saturating_sub(1);
        let token = self.cfg.tokens.for_user(slot.number);
        slot.client.start(&token, resume, &mut self.out, now);
        self.flush_out(ctx, conn);
        self.open_more(ctx);
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        let now = ctx.now();
        let Some(slot) = self.slots.get_mut(conn) else {
            return;
        };
        self.recorder.received(data.len());
        let data = match slot.tls.as_deref_mut() {
            None => data,
            Some(tls) => {
                self.plain.clear();
                if let Err(e) = tls.open(data, &mut self.plain) {
                    if self.counters.tls_errors.load(Ordering::Relaxed) == 0 {
                        // The first one of this shard says why (they are usually all alike).
                        eprintln!(
                            "ringport-bench: TLS transport to {} failed: {e:?}",
                            self.cfg.target
                        );
                    }
                    inc(&self.counters.tls_errors);
                    if let TlsFailure::Closed = e {
                        inc(&self.counters.server_closes);
                    }
                    ctx.close(conn, CloseReason::Local);
                    return;
                }
                &self.plain[..]
            }
        };
        slot.client
            .on_bytes(data, &mut self.out, &mut self.events, now);
        let done = slot.client.is_done();
        self.flush_out(ctx, conn);
        self.handle_events(ctx, conn);
        if done {
            ctx.close(conn, CloseReason::Local);
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        let Some(slot) = self.slots.remove(conn) else {
            return;
        };
        if slot.paced {
            if self.stopping {
                self.pacer.abandoned();
            } else {
                self.pacer.failed();
            }
        }
        if slot.ready {
            self.stats().open.fetch_sub(1, Ordering::Relaxed);
        } else if slot.open {
            if !self.stopping {
                inc(&self.counters.handshake_failed);
                self.stats().connect_failed(None);
            }
        } else {
            self.connecting = self.connecting.saturating_sub(1);
            match reason {
                CloseReason::ConnectFailed(errno) => self.stats().connect_failed(Some(errno)),
                _ if !self.stopping => self.stats().connect_failed(None),
                _ => {}
            }
        }
        let churn = matches!(self.cfg.scenario, Scenario::Churn { .. });
        if slot.disrupted && !self.stopping {
            // Resume: reconnect at once, keeping the ledgers and the session id.
            self.connect(ctx, slot.number, Some(slot.client), false);
        } else if slot.ready && !self.stopping && !churn {
            self.stats()
                .closed_unexpectedly
                .fetch_add(1, Ordering::Relaxed);
        }
        self.open_more(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        if self.pings_paused {
            return;
        }
        let now = ctx.now();
        let Some(slot) = self.slots.get_mut(conn) else {
            return;
        };
        if slot.client.on_timer(&mut self.out, now) {
            inc(&self.counters.pings_sent);
        }
        let next = slot.client.next_ping();
        self.flush_out(ctx, conn);
        if let Some(at) = next {
            ctx.set_timer(conn, at);
        }
    }

    fn on_loop(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.publish_turn();
        self.recorder.maybe_flush(ctx.now());
    }

    fn on_shutdown(&mut self, _ctx: &mut Ctx<'_, Self>) {
        self.stopping = true;
        self.publish_turn();
        self.recorder.flush();
    }
}
