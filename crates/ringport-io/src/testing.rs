//! A shard on the fake backend, for tests without sockets or io_uring (feature `fake`, and
//! this crate's own unit tests).
//!
//! [`FakeShard`] runs a real shard — the same accept, close, send-queue and timer code as a
//! running engine — on a fake driver whose "kernel" the test scripts, one loop turn at a time,
//! on a virtual clock. The shard never blocks and never reads the system clock: `now` is
//! what the test advanced it to, so timers (handler timers, idle timeouts, close lingers)
//! fire exactly when the test moves the clock past them.
//!
//! ```
//! use ringport_io::testing::{FakeOp, FakeShard};
//! use ringport_io::{ConnId, Ctx, EngineConfig, Handler};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]) {
//!         let _ = ctx.send_copy(conn, data);
//!     }
//! }
//!
//! let mut shard = FakeShard::listening(EngineConfig::default(), |_| Echo);
//! shard.kernel().incoming();
//! shard.settle();
//! let sock = shard.kernel().ops().iter().find_map(|op| match op {
//!     FakeOp::Recv(s) => Some(*s),
//!     _ => None,
//! }).unwrap();
//! shard.kernel().peer_sends(sock, b"ping");
//! shard.settle();
//! assert_eq!(shard.kernel().delivered(sock), b"ping");
//! ```
//!
//! What the fake kernel does with each operation is in [`FakeKernel`]'s docs; a socket
//! closed with an operation still in flight on it is recorded in
//! [`FakeKernel::violations`], which [`FakeShard::settle`] and [`FakeShard::turn`] check.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::EngineShared;
use crate::inbox::ShardShared;
use crate::shard::Shard;
use crate::sys::fake::{lock, FakeDriver};
use crate::{BackendChoice, ConnId, Ctx, EngineConfig, EngineHandle, Handler, IoBackend};

pub use crate::sys::fake::{FakeKernel, FakeOp, FakeSock, SendOutcome};

/// Loop turns [`FakeShard::settle`] runs at most before it decides the shard spins.
const SETTLE_TURNS: usize = 1000;

/// One shard on the fake backend, driven turn by turn on a virtual clock.
pub struct FakeShard<H: Handler> {
    shard: Shard<H>,
    kernel: Arc<Mutex<FakeKernel>>,
    /// The virtual clock: the `now` of the next turn.
    now: Instant,
    /// The shard finished its shutdown (its loop would have exited).
    exited: bool,
}

impl<H: Handler> FakeShard<H> {
    /// A shard with a listener: it arms accepting at once, and [`FakeKernel::incoming`]
    /// connections are accepted. `cfg.workers` is taken as 1 and `cfg.listen` is ignored.
    pub fn listening(cfg: EngineConfig, factory: impl FnOnce(EngineHandle<H>) -> H) -> Self {
        Self::build(cfg, true, factory)
    }

    /// A shard without a listener (outbound connections only, through [`Ctx::connect`]).
    pub fn client(cfg: EngineConfig, factory: impl FnOnce(EngineHandle<H>) -> H) -> Self {
        Self::build(cfg, false, factory)
    }

    fn build(
        mut cfg: EngineConfig,
        listen: bool,
        factory: impl FnOnce(EngineHandle<H>) -> H,
    ) -> Self {
        cfg.workers = 1;
        // The shard needs a descriptor to own as its listener; the fake never uses it.
        let listener = listen
            .then(|| OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null")));
        let handle = EngineHandle {
            shared: Arc::new(EngineShared {
                shards: vec![Arc::new(ShardShared::new().expect("doorbell eventfd"))],
                local_addr: None,
                open: std::sync::atomic::AtomicUsize::new(0),
                backend: BackendChoice {
                    backend: IoBackend::Auto,
                    reason: "fake backend (ringport_io::testing)".into(),
                },
            }),
        };
        let (driver, kernel) = FakeDriver::new(&cfg);
        let cap = cfg.max_connections_per_shard;
        let process_cap = cap as usize;
        let mut shard = Shard::with_driver(
            0,
            cfg,
            Box::new(driver),
            (cap, process_cap),
            listener,
            handle,
            factory,
        );
        let now = shard.core.start;
        shard.begin();
        FakeShard {
            shard,
            kernel,
            now,
            exited: false,
        }
    }

    /// The fake kernel, to script what the peers and the kernel do and to read what the
    /// shard issued.
    pub fn kernel(&self) -> MutexGuard<'_, FakeKernel> {
        lock(&self.kernel)
    }

    /// One loop turn at the current virtual time: queued operations are performed, what the
    /// test scripted happens, completions are dispatched, timers fire, `on_loop` runs.
    /// Returns how many completions the turn handled.
    ///
    /// # Panics
    /// When the shard broke the backend contract (see [`FakeKernel::violations`]).
    pub fn turn(&mut self) -> usize {
        let before = self.shard.core.sh.stats.completions.get();
        let _timeout = self.shard.before_wait();
        // `submit_and_wait` of the fake performs the queued operations; it never blocks.
        self.shard
            .core
            .driver
            .submit_and_wait(None)
            .expect("the fake backend's wait never fails");
        self.shard.between_chunks();
        if self.shard.after_wait(self.now) {
            self.exited = true;
        }
        let v = self.kernel().violations().to_vec();
        assert!(v.is_empty(), "backend contract broken: {v:?}");
        (self.shard.core.sh.stats.completions.get() - before) as usize
    }

    /// Turns until a turn handles no completion and issues nothing new (the shard waits
    /// for the peer, the test or the clock).
    ///
    /// # Panics
    /// When that takes more than 1,000 turns.
    pub fn settle(&mut self) {
        for _ in 0..SETTLE_TURNS {
            let issued = self.kernel().ops().len();
            let handled = self.turn();
            if handled == 0 && self.kernel().ops().len() == issued {
                return;
            }
        }
        panic!("the shard did not settle within {SETTLE_TURNS} turns");
    }

    /// Moves the virtual clock forward by `by`, one timer tick per turn (as a waiting shard
    /// wakes once per tick), then settles.
    pub fn advance(&mut self, by: Duration) {
        let tick = self.shard.core.cfg.timer_tick.max(Duration::from_nanos(1));
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + tick).min(end);
            self.settle();
        }
    }

    /// The virtual time of the next turn (what [`Ctx::now`] says).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The shard's handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.shard.handler
    }

    /// Runs `f` as a handler callback would run (with the handler and a context), then
    /// delivers the `on_close` calls it caused. What `f` queues leaves at the next turn.
    pub fn with_ctx<R>(&mut self, f: impl FnOnce(&mut H, &mut Ctx<'_, H>) -> R) -> R {
        let r = {
            let (h, mut ctx) = self.shard.ctx();
            f(h, &mut ctx)
        };
        self.shard.deliver_closes();
        r
    }

    /// A handle to the shard, as other threads have (sends and closes through the inbox).
    pub fn handle(&self) -> EngineHandle<H> {
        self.shard.core.handle.clone()
    }

    /// The fake socket of `conn`, while it has one.
    pub fn sock_of(&self, conn: ConnId) -> Option<FakeSock> {
        let slot = self.shard.core.lookup(conn)?;
        let fd = self.shard.core.slots[slot as usize].fd;
        (fd != crate::sys::Sock::NONE).then_some(FakeSock(fd.0))
    }

    /// A snapshot of the shard's counters.
    pub fn stats(&self) -> crate::StatsSnapshot {
        self.shard.core.sh.stats.snapshot()
    }

    /// Slots in use (open, connecting or closing connections).
    pub fn slots_used(&self) -> usize {
        self.shard.core.used
    }

    /// Begins graceful shutdown (as [`EngineHandle::shutdown`] does); the next turns carry
    /// it out.
    pub fn shutdown(&mut self) {
        self.handle().shutdown();
    }

    /// Whether the shard finished shutting down (its loop would have exited).
    pub fn exited(&self) -> bool {
        self.exited
    }
}

impl<H: Handler> std::fmt::Debug for FakeShard<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeShard")
            .field("now", &self.now)
            .field("used", &self.shard.core.used)
            .finish()
    }
}
