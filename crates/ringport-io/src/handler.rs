//! The handler API: plain callbacks on the shard thread, no async runtime on the data path.
//!
//! Each shard owns one `H: Handler`, built on the shard's own thread by the factory given to
//! [`crate::Engine::start`], so a handler need not be `Send`. Callbacks receive a
//! [`Ctx`](crate::Ctx) to queue sends, close connections, set timers and open outbound
//! connections. Nothing a callback does blocks: sends are queued and leave together when the
//! loop turns (one send, gathered when needed, per connection per turn).

use crate::{ConnId, Ctx};

/// How a connection came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Accepted on the shard's listener.
    Accepted,
    /// Opened by [`Ctx::connect`](crate::Ctx::connect).
    Connected,
}

/// Why a connection closed. Every variant is counted per shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed by this side (handler, API) with no more specific reason.
    Local,
    /// The peer closed its side (FIN); our queue was drained first.
    PeerClosed,
    /// The peer reset the connection (RST, broken pipe).
    PeerReset,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
    /// The send queue passed its high-water mark: the peer does not read fast enough.
    SlowConsumer,
    /// The engine is shutting down.
    Shutdown,
    /// An outbound connection failed (errno).
    ConnectFailed(i32),
    /// Any other socket error (errno).
    Io(i32),
    /// An application-defined reason (the gateway's protocol close codes).
    App(u16),
}

impl CloseReason {
    /// Number of counter buckets ([`CloseReason::bucket`]).
    pub const BUCKETS: usize = 9;
    /// Names of the counter buckets, for metrics labels.
    pub const BUCKET_NAMES: [&'static str; Self::BUCKETS] = [
        "local",
        "peer_closed",
        "peer_reset",
        "idle_timeout",
        "slow_consumer",
        "shutdown",
        "connect_failed",
        "io_error",
        "app",
    ];

    /// The counter bucket of this reason.
    pub fn bucket(self) -> usize {
        match self {
            CloseReason::Local => 0,
            CloseReason::PeerClosed => 1,
            CloseReason::PeerReset => 2,
            CloseReason::IdleTimeout => 3,
            CloseReason::SlowConsumer => 4,
            CloseReason::Shutdown => 5,
            CloseReason::ConnectFailed(_) => 6,
            CloseReason::Io(_) => 7,
            CloseReason::App(_) => 8,
        }
    }

    /// A short name (the bucket name).
    pub fn name(self) -> &'static str {
        Self::BUCKET_NAMES[self.bucket()]
    }
}

/// Per-shard callbacks. Every method but `on_data` has an empty default.
pub trait Handler: Sized + 'static {
    /// A connection is open and readable. Data may follow in the same loop turn.
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, origin: Origin) {
        let _ = (ctx, conn, origin);
    }

    /// Bytes arrived. `data` is borrowed from the shard's receive buffer ring and returns to
    /// the kernel when this call returns: copy what must be kept.
    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, data: &[u8]);

    /// The connection is closing; called exactly once per opened (or attempted outbound)
    /// connection. Sends to it fail from now on; what was queued before a graceful close
    /// still drains.
    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// The connection's timer (see [`Ctx::set_timer`](crate::Ctx::set_timer)) fired.
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// Once per loop turn, after completions, inbox and timers, before the turn's sends are
    /// submitted: the place to flush per-turn batches.
    fn on_loop(&mut self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }

    /// Graceful shutdown began: the listener is closed; open connections will be closed with
    /// [`CloseReason::Shutdown`] after this returns (queued bytes still drain).
    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }
}
