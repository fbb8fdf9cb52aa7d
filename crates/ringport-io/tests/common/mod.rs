//! Shared helpers for the engine's loopback integration tests: a recording echo handler,
//! condition polling with deadlines, a poll(2)-driven nonblocking client, payload patterns.
//!
//! Every wait here is a bounded poll for a condition (generous deadlines for a loaded 2-core
//! machine), never a fixed sleep that a slow run could outlast.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringport_io::{
    CloseReason, ConnId, Ctx, Engine, EngineConfig, EngineHandle, Handler, Origin, StatsSnapshot,
};

/// The usual generous deadline for "this must happen".
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every shard's counters summed.
pub fn totals<H: Handler>(h: &EngineHandle<H>) -> StatsSnapshot {
    StatsSnapshot::sum(&h.stats_all())
}

/// Waits until every gauge is at rest: no open connection, no slot, no operation in flight.
pub fn wait_at_rest<H: Handler>(h: &EngineHandle<H>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = totals(h);
        if last.open == 0 && last.slots_used == 0 && last.inflight_ops == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "engine never came to rest: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Descriptors open in this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

/// A deterministic pseudo-random byte pattern (xorshift64*), cheap even in debug builds.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What a [`Recorder`] saw, shared with the test thread.
#[derive(Default)]
pub struct Log {
    pub opens: Mutex<Vec<(ConnId, Origin)>>,
    pub closes: Mutex<Vec<(ConnId, CloseReason)>>,
    pub timers: Mutex<Vec<(ConnId, Instant, Instant)>>,
    /// Bytes the handler queued successfully (echo and flood).
    pub queued: AtomicU64,
    /// The loop-turn time (`Ctx::now`) of `on_open` / `on_close`, per connection.
    pub opened_at: Mutex<HashMap<ConnId, Instant>>,
    pub closed_at: Mutex<HashMap<ConnId, Instant>>,
    /// Bytes delivered to `on_data`, per connection.
    pub received: Mutex<HashMap<ConnId, Vec<u8>>>,
}

impl Log {
    pub fn close_reason(&self, id: ConnId) -> Option<CloseReason> {
        let closes = self.closes.lock().unwrap();
        closes.iter().find(|(c, _)| *c == id).map(|&(_, r)| r)
    }
    pub fn opens(&self) -> Vec<ConnId> {
        self.opens.lock().unwrap().iter().map(|&(c, _)| c).collect()
    }
    pub fn closes_with(&self, reason: CloseReason) -> usize {
        let closes = self.closes.lock().unwrap();
        closes.iter().filter(|&&(_, r)| r == reason).count()
    }
}

/// Behaviour switches of the [`Recorder`].
#[derive(Clone, Copy, Default)]
pub struct Behaviour {
    /// Echo what arrives (with `send_copy`).
    pub echo: bool,
    /// Keep `on_data` bytes in `Log::received`.
    pub keep: bool,
    /// A connection whose first byte is `F` is flooded with this many bytes every tick
    /// instead of echoed (the slow-consumer test).
    pub flood: Option<usize>,
}

/// A handler that records every callback and echoes (or floods).
pub struct Recorder {
    pub log: Arc<Log>,
    pub b: Behaviour,
    flooding: HashMap<ConnId, bool>,
    junk: Vec<u8>,
}

impl Recorder {
    pub fn new(log: Arc<Log>, b: Behaviour) -> Recorder {
        Recorder {
            log,
            b,
            flooding: HashMap::new(),
            junk: vec![0x5a; b.flood.unwrap_or(0)],
        }
    }
}

impl Handler for Recorder {
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, origin: Origin) {
        self.log.opens.lock().unwrap().push((conn, origin));
        self.log.opened_at.lock().unwrap().insert(conn, ctx.now());
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
        if self.b.keep {
            let mut r = self.log.received.lock().unwrap();
            r.entry(conn).or_default().extend_from_slice(data);
        }
        if self.b.flood.is_some() {
            let flooding = *self
                .flooding
                .entry(conn)
                .or_insert(data.first() == Some(&b'F'));
            if flooding {
                let at = ctx.now() + Duration::from_millis(5);
                ctx.set_timer(conn, at);
                return;
            }
        }
        if self.b.echo && ctx.send_copy(conn, data).is_ok() {
            self.log
                .queued
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        self.log
            .timers
            .lock()
            .unwrap()
            .push((conn, ctx.now(), Instant::now()));
        if self.b.flood.is_some() && self.flooding.get(&conn) == Some(&true) {
            let junk = &self.junk;
            if ctx.send_copy(conn, junk).is_ok() {
                self.log
                    .queued
                    .fetch_add(junk.len() as u64, Ordering::Relaxed);
                let at = ctx.now() + Duration::from_millis(5);
                ctx.set_timer(conn, at);
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        self.flooding.remove(&conn);
        self.log.closed_at.lock().unwrap().insert(conn, ctx.now());
        self.log.closes.lock().unwrap().push((conn, reason));
    }
}

/// Starts a listening engine on 127.0.0.1:0 running a [`Recorder`].
pub fn start(cfg: EngineConfig, b: Behaviour) -> (Engine<Recorder>, Arc<Log>, SocketAddr) {
    let log = Arc::new(Log::default());
    let cfg = EngineConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..cfg
    };
    let l = log.clone();
    let engine = Engine::start(cfg, move |_, _| Recorder::new(l.clone(), b)).expect("engine");
    let addr = engine.local_addr().expect("listening");
    (engine, log, addr)
}

/// [`start`] with a handler that echoes every byte back.
pub fn start_echo(cfg: EngineConfig) -> (Engine<Recorder>, Arc<Log>, SocketAddr) {
    start(
        cfg,
        Behaviour {
            echo: true,
            ..Default::default()
        },
    )
}

/// Joins the engine on another thread, failing if it takes longer than `timeout`.
pub fn join_within<H: Handler>(engine: Engine<H>, timeout: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(engine.join());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r.expect("shards exit cleanly"),
        Err(_) => panic!("engine did not join within {timeout:?}"),
    }
}

/// One nonblocking client connection driven by [`pump`]: writes `out`, checks that what
/// comes back is exactly a prefix of `out` (an echo), notes EOF.
pub struct Flow {
    pub sock: TcpStream,
    pub out: Vec<u8>,
    pub sent: usize,
    pub got: usize,
    pub eof: bool,
    /// Stop writing (e.g. after EOF).
    pub write_closed: bool,
    pub error: Option<ErrorKind>,
}

impl Flow {
    pub fn connect(addr: SocketAddr, out: Vec<u8>) -> Flow {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_nonblocking(true).unwrap();
        Flow {
            sock,
            out,
            sent: 0,
            got: 0,
            eof: false,
            write_closed: false,
            error: None,
        }
    }

    pub fn echoed(&self) -> bool {
        self.got == self.out.len()
    }

    fn wants_write(&self) -> bool {
        !self.write_closed && !self.eof && self.sent < self.out.len()
    }

    fn on_writable(&mut self) {
        while self.wants_write() {
            let end = (self.sent + 256 * 1024).min(self.out.len());
            match self.sock.write(&self.out[self.sent..end]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e.kind());
                    self.write_closed = true;
                }
            }
        }
    }

    fn on_readable(&mut self, buf: &mut [u8], received: &AtomicU64) {
        loop {
            match self.sock.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    let end = self.got + n;
                    assert!(
                        end <= self.out.len(),
                        "got {end} bytes back, sent {}",
                        self.out.len()
                    );
                    assert!(
                        buf[..n] == self.out[self.got..end],
                        "echo differs within bytes {}..{end}",
                        self.got
                    );
                    self.got = end;
                    received.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e.kind());
                    self.eof = true;
                    return;
                }
            }
        }
    }
}

/// Drives `flows` with poll(2) until `done(flow)` holds for each one; panics at `deadline`.
/// `received` counts echoed bytes across all calls (progress for other threads).
pub fn pump(
    flows: &mut [Flow],
    deadline: Instant,
    received: &AtomicU64,
    done: impl Fn(&Flow) -> bool,
) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(flows.len());
    let mut idx: Vec<usize> = Vec::with_capacity(flows.len());
    loop {
        pfds.clear();
        idx.clear();
        for (i, f) in flows.iter().enumerate() {
            if done(f) || f.eof {
                continue;
            }
            let mut events = libc::POLLIN;
            if f.wants_write() {
                events |= libc::POLLOUT;
            }
            pfds.push(libc::pollfd {
                fd: f.sock.as_raw_fd(),
                events,
                revents: 0,
            });
            idx.push(i);
        }
        if pfds.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clients stalled: {} of {} flows unfinished (e.g. sent {} got {} of {})",
            pfds.len(),
            flows.len(),
            flows[idx[0]].sent,
            flows[idx[0]].got,
            flows[idx[0]].out.len()
        );
        // SAFETY: pfds is a live, initialised array of pfds.len() pollfd structs.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (p, &i) in pfds.iter().zip(&idx) {
            if p.revents & libc::POLLOUT != 0 {
                flows[i].on_writable();
            }
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                flows[i].on_readable(&mut buf, received);
            }
        }
    }
    for f in flows.iter() {
        assert!(
            done(f),
            "flow ended before done: sent {} got {} of {} eof {} err {:?}",
            f.sent,
            f.got,
            f.out.len(),
            f.eof,
            f.error
        );
    }
}

/// The soft open-file limit (`Max open files` in /proc/self/limits).
pub fn nofile() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files")
}
