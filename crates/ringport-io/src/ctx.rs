//! [`Ctx`]: what a handler callback may do.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::conn::{ConnInfo, ConnState, State, NEVER};
use crate::core::Core;
use crate::sendq::Payload;
use crate::stats::ShardStats;
use crate::{CloseReason, ConnId, EngineHandle, Handler, SendError};

/// The shard context passed to every [`Handler`] callback.
pub struct Ctx<'a, H: Handler> {
    pub(crate) core: &'a mut Core<H>,
}

impl<H: Handler> std::fmt::Debug for Ctx<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("shard", &self.core.shard)
            .finish()
    }
}

impl<H: Handler> Ctx<'_, H> {
    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.core.shard
    }

    /// The time the current loop turn started (one clock read per turn).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Queues a shared payload to `conn`. It leaves, with everything else queued to `conn`
    /// this turn, in one send when the loop turns (a gathered `sendmsg` for more than one
    /// chunk).
    pub fn send(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        self.core.send(conn, Payload::Owned(payload), 1, true)
    }

    /// [`Ctx::send`] of a payload that continues the one queued before it (e.g. a message
    /// body behind its separately queued header): the two are one record for
    /// [`Ctx::drop_unsent`], which never separates them.
    pub fn send_continued(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        self.core.send(conn, Payload::Owned(payload), 1, false)
    }

    /// [`Ctx::send`] of a payload that holds `messages` application messages (e.g. several
    /// frames joined once and shared by many connections), so that the messages-sent and
    /// messages-per-send counters count messages, not payloads.
    pub fn send_messages(
        &mut self,
        conn: ConnId,
        payload: Bytes,
        messages: u32,
    ) -> Result<(), SendError> {
        self.core
            .send(conn, Payload::Owned(payload), messages, true)
    }

    /// [`Ctx::send_messages`] of a payload borrowed from the caller, which shares it with
    /// many connections: the engine takes a reference (one reference-count increment) only
    /// if it queues the payload by reference, and copies it without touching the count when
    /// it goes behind a small unsent tail (the common case when messages arrive faster than
    /// a connection's sends leave).
    pub fn send_shared(
        &mut self,
        conn: ConnId,
        payload: &Bytes,
        messages: u32,
    ) -> Result<(), SendError> {
        self.core
            .send(conn, Payload::Borrowed(payload), messages, true)
    }

    /// Queues a copy of `data` to `conn` (pooled blocks: no allocation in steady state).
    pub fn send_copy(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        self.core.send_copy(conn, data)
    }

    /// Closes `conn` gracefully: what is queued drains (bounded by `close_linger`), then FIN,
    /// then close. `on_close` runs after the current callback returns.
    pub fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(slot) = self.core.lookup(conn) {
            self.core.begin_close(slot, reason, true);
        }
    }

    /// Closes `conn` gracefully, as [`Ctx::close`] does, but reads and discards at most
    /// `max_bytes` (counted in whole KiB per receive, and never more than
    /// `close_discard_max_bytes`) of what the peer sends after our FIN; past it the close is
    /// cut short (`ringport_closes_cut_short_total`). For a peer with no business sending
    /// much after our answer: one refused before its handshake finished, whose client waits
    /// for that answer with at most its first request sent, while each KiB a flooder makes
    /// us read and discard costs as much as a KiB of real traffic.
    pub fn close_discarding(&mut self, conn: ConnId, reason: CloseReason, max_bytes: u32) {
        if let Some(slot) = self.core.lookup(conn) {
            self.core.begin_close(slot, reason, true);
            self.core.cap_discard(slot, max_bytes);
        }
    }

    /// Closes `conn` now, dropping what is queued.
    pub fn abort(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(slot) = self.core.lookup(conn) {
            self.core.begin_close(slot, reason, false);
        }
    }

    /// Drops what is queued to `conn` and not yet handed to the kernel, from the first record
    /// on (a record is what one `send`/`send_copy`/`send_messages` call queued, with any
    /// [`Ctx::send_continued`] payloads behind it): the send in flight and the rest of a
    /// partly sent record stay, so what is queued next reaches the peer after whole records.
    /// For shedding a backlog and then telling the peer why (queue the reason, then
    /// [`Ctx::close`]; the goodbye may pass `send_high_water` by 64 KiB, since the send in
    /// flight may be close to it). Returns the bytes dropped (0 for an unknown or closing id).
    pub fn drop_unsent(&mut self, conn: ConnId) -> usize {
        match self.core.lookup_open(conn) {
            Some(slot) => self.core.drop_unsent(slot) as usize,
            None => 0,
        }
    }

    /// Stops reading `conn` until `at` (timer-tick precision): its armed receive is cancelled
    /// and none is armed before then, so what the peer sends waits in the kernel's socket
    /// buffer and, once that is full, TCP's window stops the peer — backpressure instead of
    /// reading (and refusing) what a client sends over its rate. Bytes the kernel had
    /// already received may still reach `on_data` after the call. A later call replaces the
    /// deadline; a close ends the pause (a graceful one reads again, for the peer's FIN). The
    /// pause does not count as idle time (`EngineConfig::idle_timeout` counts from its end).
    /// A no-op for an id that is not open, or for `at` not after the current tick.
    pub fn pause_receiving(&mut self, conn: ConnId, at: Instant) {
        if let Some(slot) = self.core.lookup_open(conn) {
            let tick = self.core.tick_of(at);
            self.core.pause_recv(slot, tick);
        }
    }

    /// Sets `conn`'s one timer to fire at `at` (timer-tick precision), replacing any earlier
    /// setting; `on_timer` is called then.
    pub fn set_timer(&mut self, conn: ConnId, at: Instant) {
        if let Some(slot) = self.core.lookup_open(conn) {
            let tick = self.core.tick_of(at);
            self.core.slots[slot as usize].timer = tick;
            self.core.schedule(slot);
        }
    }

    /// Clears `conn`'s timer.
    pub fn cancel_timer(&mut self, conn: ConnId) {
        if let Some(slot) = self.core.lookup_open(conn) {
            self.core.slots[slot as usize].timer = NEVER;
        }
    }

    /// Opens an outbound TCP connection from this shard, optionally from a local source
    /// address (e.g. `127.0.0.7:0`, to spread many connections over loopback addresses).
    /// `on_open(.., Origin::Connected)` follows on success, `on_close(..,
    /// CloseReason::ConnectFailed(errno))` on failure.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        bind: Option<SocketAddr>,
    ) -> std::io::Result<ConnId> {
        self.core.connect(addr, bind)
    }

    /// What the engine knows about `conn`.
    pub fn conn_info(&self, conn: ConnId) -> Option<ConnInfo> {
        let slot = self.core.lookup(conn)?;
        let s = &self.core.slots[slot as usize];
        Some(ConnInfo {
            peer: self.core.peer(slot),
            origin: s.origin,
            state: match s.state {
                State::Connecting => ConnState::Connecting,
                State::Open => ConnState::Open,
                _ => ConnState::Closing,
            },
            opened_at: self.core.instant_of(s.opened_at),
            last_recv: self.core.instant_of(s.last_recv),
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            recvs: u64::from(s.recvs),
            msgs_out: s.msgs_out,
            queued_bytes: s.q.bytes as usize,
        })
    }

    /// Bytes queued to `conn` and not yet sent (0 for unknown ids).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.core
            .lookup(conn)
            .map(|s| self.core.slots[s as usize].q.bytes as usize)
            .unwrap_or(0)
    }

    /// Whether `conn` is open (not closing, not stale).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.core.lookup_open(conn).is_some()
    }

    /// Open connections on this shard.
    pub fn open_connections(&self) -> usize {
        self.core.open
    }

    /// A handle to reach other shards.
    pub fn handle(&self) -> &EngineHandle<H> {
        &self.core.handle
    }

    /// This shard's counters.
    pub fn stats(&self) -> &ShardStats {
        &self.core.sh.stats
    }
}
