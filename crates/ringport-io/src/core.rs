//! The shard's state apart from its handler: slots, pools, timers and the ring driver, with
//! the operations handlers reach through [`Ctx`](crate::Ctx) and the close machinery.
//!
//! Handler callbacks never run from inside `Core`: a close requested during a callback only
//! changes the slot's state and queues an `on_close` notification, which the shard delivers
//! after the callback returns. That keeps every callback non-reentrant.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::{ConnectCtx, PeerAddr, Slot, State, NEVER, NO_CTX, NO_FD};
use crate::id::{pack, Op};
use crate::inbox::ShardShared;
use crate::sendq::{Payload, SendPool};
use crate::sys::{Driver, Sock};
use crate::timer::TimerWheel;
use crate::{CloseReason, ConnId, EngineConfig, EngineHandle, SendError, SlowConsumerPolicy};

/// Free slots below which accepts are armed one at a time on a backend that bounds a
/// multishot accept to [`MULTISHOT_HEADROOM`]` / 2` sockets per wait (epoll and the fake: they
/// accept in the shard's own loop). io_uring's bound is the listen backlog
/// ([`crate::sys::Driver::accept_headroom`]).
pub(crate) const MULTISHOT_HEADROOM: usize = 64;

/// Whether and why the shard is not accepting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// No listener (client-only engine) or shutting down.
    Off,
    /// An accept operation is in flight.
    Armed,
    /// The accept in flight is being cancelled (to re-arm in a mode that fits the free
    /// slots); its final completion re-arms.
    Cancelling,
    /// The direct descriptor table is full: re-arm when a slot frees.
    PausedFull,
    /// A resource error: re-arm at this tick.
    Backoff(u64),
}

/// How far past `send_high_water` a connection whose backlog was dropped may still queue:
/// room for a goodbye (a CLOSE frame and its transport framing) behind the send in flight.
pub(crate) const SHED_ALLOWANCE: usize = 64 * 1024;

/// `Slot::discard_left` of a close that is never cut short (at shutdown, or with
/// `close_discard_max_bytes` at its largest, 64 MiB).
pub(crate) const NO_DISCARD_CAP: u16 = u16::MAX;

pub(crate) struct Core<H: crate::Handler> {
    pub shard: usize,
    pub cfg: EngineConfig,
    pub driver: Box<dyn Driver>,
    pub slots: Vec<Slot>,
    free: Vec<u32>,
    /// Peer addresses that do not fit a slot's inline `PeerAddr` (IPv6), by slot; removed
    /// when the slot is freed.
    peers_v6: std::collections::HashMap<u32, SocketAddr>,
    /// The tick each paused slot (`Slot::paused`) receives again; removed when the pause
    /// ends or the slot closes. A side table: pauses are rare (a client over a rate limit),
    /// and a deadline in every slot would cost a million connections 8 MB.
    pauses: std::collections::HashMap<u32, u64>,
    /// Slot cap (= the entries of the shard's direct descriptor tables together on io_uring).
    pub cap: u32,
    pub pool: SendPool,
    pub wheel: TimerWheel,
    /// Slots whose queue needs a send this turn.
    dirty: Vec<u32>,
    /// Slots whose send waits for a later turn (`EngineConfig::max_sends_per_turn`), oldest
    /// first; each is also marked `dirty`.
    backlog: std::collections::VecDeque<u32>,
    /// Operations other than sends started since the last flush for connections that have
    /// sent nothing yet (a new connection's peer-address lookup and receive arms, a refused
    /// one's close): a handshake's steps, queued by the last turn's completions (see
    /// `Shard::before_wait`).
    pub handshake_ops: u32,
    /// Slots waiting for receive buffers.
    pub rearm: Vec<u32>,
    /// `on_close` notifications to deliver after the current callback.
    pub notify: Vec<(ConnId, CloseReason)>,
    /// Boxed: the kernel reads the addresses asynchronously, so they must not move when
    /// the pool grows.
    #[allow(clippy::vec_box)]
    connects: Vec<Box<ConnectCtx>>,
    free_connects: Vec<u32>,
    pub listener: Option<OwnedFd>,
    pub accept: Accept,
    /// The armed accept is multishot (else single).
    accept_multishot: bool,
    pub start: Instant,
    pub now: Instant,
    pub now_tick: u64,
    tick_ns: u64,
    idle_ticks: Option<u64>,
    linger_ticks: u64,
    /// When the receive buffers are trimmed unless a receive comes first
    /// (`EngineConfig::recv_buffer_trim` after the last receive that used a buffer); `None`
    /// while nothing was received since the last trim.
    pub trim_at: Option<Instant>,
    /// Connections open on this shard (counted from accept or connect to the start of
    /// their close).
    pub open: usize,
    /// Slots taken (open, connecting or closing).
    pub used: usize,
    /// Process-wide connection cap when refusing over it (`over_cap_reply`); else unused.
    pub limit: usize,
    /// The first refusal over the cap was logged (later ones only count).
    over_cap_logged: bool,
    pub sh: Arc<ShardShared<H>>,
    pub handle: EngineHandle<H>,
}

impl<H: crate::Handler> Core<H> {
    pub fn new(
        shard: usize,
        cfg: EngineConfig,
        driver: Box<dyn Driver>,
        cap: u32,
        limit: usize,
        listener: Option<OwnedFd>,
        handle: EngineHandle<H>,
    ) -> Core<H> {
        let now = Instant::now();
        let tick_ns = cfg.timer_tick.as_nanos().max(1) as u64;
        let ticks = |d: Duration| (d.as_nanos() as u64).div_ceil(tick_ns).max(1);
        Core {
            shard,
            idle_ticks: cfg.idle_timeout.map(ticks),
            linger_ticks: ticks(cfg.close_linger),
            trim_at: None,
            driver,
            slots: Vec::new(),
            free: Vec::new(),
            peers_v6: std::collections::HashMap::new(),
            pauses: std::collections::HashMap::new(),
            cap,
            pool: SendPool::new(),
            wheel: TimerWheel::new(1024),
            dirty: Vec::new(),
            backlog: std::collections::VecDeque::new(),
            handshake_ops: 0,
            rearm: Vec::new(),
            notify: Vec::new(),
            connects: Vec::new(),
            free_connects: Vec::new(),
            accept: if listener.is_some() {
                Accept::Armed
            } else {
                Accept::Off
            },
            listener,
            accept_multishot: false,
            start: now,
            now,
            now_tick: 0,
            tick_ns,
            sh: handle.shared.shards[shard].clone(),
            handle,
            open: 0,
            used: 0,
            limit,
            over_cap_logged: false,
            cfg,
        }
    }

    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_tick = (now.duration_since(self.start).as_nanos() as u64) / self.tick_ns;
    }

    pub fn tick_of(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.start).as_nanos() as u64).div_ceil(self.tick_ns)
    }

    pub fn instant_of(&self, tick: u64) -> Instant {
        self.start + Duration::from_nanos(tick.saturating_mul(self.tick_ns))
    }

    /// Records `slot`'s peer address (IPv6 in the side table).
    pub fn set_peer(&mut self, slot: u32, addr: Option<SocketAddr>) {
        let compact = match addr {
            None => PeerAddr::NONE,
            Some(a) => PeerAddr::v4(a).unwrap_or_else(|| {
                self.peers_v6.insert(slot, a);
                PeerAddr::ELSEWHERE
            }),
        };
        let s = &mut self.slots[slot as usize];
        if s.peer.is_elsewhere() && !compact.is_elsewhere() {
            self.peers_v6.remove(&slot);
        }
        s.peer = compact;
    }

    /// `slot`'s peer address, if known.
    pub fn peer(&self, slot: u32) -> Option<SocketAddr> {
        let p = self.slots[slot as usize].peer;
        if p.is_elsewhere() {
            self.peers_v6.get(&slot).copied()
        } else {
            p.inline()
        }
    }

    pub fn id(&self, slot: u32) -> ConnId {
        ConnId::new(self.shard, slot, self.slots[slot as usize].gen)
    }

    fn key(&self, slot: u32) -> u64 {
        (u64::from(self.slots[slot as usize].gen) << 24) | u64::from(slot)
    }

    /// The slot of a live id (any state but Free), checking shard and generation.
    pub fn lookup(&self, conn: ConnId) -> Option<u32> {
        if conn.shard() != self.shard {
            return None;
        }
        let s = self.slots.get(conn.index())?;
        (s.gen == conn.gen() && s.state != State::Free).then_some(conn.slot())
    }

    /// The slot of an id whose connection is open.
    pub fn lookup_open(&self, conn: ConnId) -> Option<u32> {
        self.lookup(conn)
            .filter(|&s| self.slots[s as usize].state == State::Open)
    }

    pub fn alloc_slot(&mut self) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if (self.slots.len() as u32) < self.cap => {
                // Grown by an eighth, not doubled: the slab is the engine's largest
                // per-connection table (issue 16).
                crate::connmap::reserve_bounded(&mut self.slots, 1);
                self.slots.push(Slot::new());
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let s = &mut self.slots[slot as usize];
        s.reset();
        s.last_recv = self.now_tick;
        s.opened_at = self.now_tick;
        self.used += 1;
        self.sh.stats.slots_used.set(self.used as u64);
        self.check_accept_headroom();
        Some(slot)
    }

    // ---- operation accounting ---------------------------------------------------------

    /// Counts one operation that `slot`'s connection starts and returns the `user_data` its
    /// completion will carry. The only place a slot's operations are counted: the
    /// descriptor is closed, and the slot freed, only once every counted operation has had
    /// its last completion ([`Core::op_finished`], then [`Core::settle`]).
    pub fn op_started(&mut self, slot: u32, op: Op) -> u64 {
        let s = &mut self.slots[slot as usize];
        s.ops += 1;
        if op != Op::Send && s.bytes_out == 0 {
            self.handshake_ops += 1;
        }
        pack(op, slot, s.gen)
    }

    /// The last completion of one of `slot`'s operations arrived.
    pub fn op_finished(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        debug_assert!(s.ops > 0, "completion of an operation never counted");
        s.ops -= 1;
    }

    /// The shard is exiting while the kernel may still hold operations: the memory they can
    /// touch (send contexts and queued payloads, connect contexts) is leaked, never freed.
    /// The driver does the same for its receive buffers and doorbell word.
    pub fn leak_kernel_memory(&mut self) {
        std::mem::forget(std::mem::replace(&mut self.pool, SendPool::new()));
        std::mem::forget(std::mem::take(&mut self.connects));
    }

    // ---- sending -------------------------------------------------------------------------

    fn admit(&mut self, conn: ConnId, len: usize) -> Result<u32, SendError> {
        let slot = self.lookup_open(conn).ok_or(SendError::NotConnected)?;
        let s = &self.slots[slot as usize];
        let allowance = if s.shed { SHED_ALLOWANCE } else { 0 };
        if s.q.bytes as usize + len > self.cfg.send_high_water + allowance {
            self.sh.stats.slow_consumers.inc();
            if self.cfg.slow_consumer == SlowConsumerPolicy::Close {
                self.begin_close(slot, CloseReason::SlowConsumer, false);
            }
            return Err(SendError::SlowConsumer);
        }
        Ok(slot)
    }

    fn queued(&mut self, slot: u32, messages: u32) {
        let s = &mut self.slots[slot as usize];
        s.msgs_out += u64::from(messages);
        self.sh.stats.msgs_out.add(u64::from(messages));
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Queues `payload` (holding `messages` application messages) to `conn`.
    /// Queues `payload`, which begins a record (`starts_record`) or continues the previous
    /// one.
    pub fn send(
        &mut self,
        conn: ConnId,
        payload: Payload<'_>,
        messages: u32,
        starts_record: bool,
    ) -> Result<(), SendError> {
        let slot = self.admit(conn, payload.len())?;
        self.pool.push_shared_part(
            &mut self.slots[slot as usize].q,
            payload,
            messages,
            starts_record,
        );
        self.queued(slot, messages);
        Ok(())
    }

    /// Drops the unsent records queued to `slot` (`SendPool::drop_unsent_records`); from
    /// now on a goodbye may pass the high-water mark by [`SHED_ALLOWANCE`] (what stays
    /// queued — the send in flight — may be close to the mark itself).
    pub fn drop_unsent(&mut self, slot: u32) -> u64 {
        let s = &mut self.slots[slot as usize];
        s.shed = true;
        self.pool.drop_unsent_records(&mut s.q)
    }

    pub fn send_copy(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        let slot = self.admit(conn, data.len())?;
        self.pool.push_copy(&mut self.slots[slot as usize].q, data);
        self.queued(slot, 1);
        Ok(())
    }

    /// Starts `slot`'s send if it is open with bytes queued and none in flight, gathering
    /// chunks up to `max_bytes` (at least one); the bytes it offers the kernel, 0 if it
    /// started none. Takes the slot off the dirty list / backlog either way.
    fn start_send(&mut self, slot: u32, max_bytes: usize) -> usize {
        let s = &mut self.slots[slot as usize];
        s.dirty = false;
        if !matches!(s.state, State::Open | State::Draining) || s.fd == NO_FD {
            return 0;
        }
        let fd = s.fd;
        let Some((prepared, bytes)) = self.pool.prepare_at_most(&mut s.q, max_bytes) else {
            return 0;
        };
        let messages = s.q.take_fresh();
        let ud = self.op_started(slot, Op::Send);
        // SAFETY: a single chunk is heap memory that does not move (a `Bytes` or a pooled
        // block); a gathered send's `msg` is the boxed `SendOp` of this queue's send in
        // flight. Both, and the chunks they point at, are sealed (neither moved, freed nor
        // changed) until this send's completion, also after a cancel, and the pool is leaked
        // rather than dropped if the shard exits before it arrives.
        unsafe { self.driver.send(fd, prepared, ud) };
        self.sh.stats.sends.inc();
        self.sh.stats.record_batch(messages);
        bytes
    }

    /// Sends waiting for a later turn (`max_sends_per_turn` reached); the loop must not
    /// block while there are any.
    pub fn sends_waiting(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Issues this turn's sends and receive re-arms (called right before the ring wait).
    /// `control`: a control turn (`Shard::before_wait`), which starts only first sends and
    /// leaves every waiting send for the next full turn.
    pub fn flush(&mut self, control: bool) {
        // At most `max_sends_per_turn` sends start this turn, in the order connections
        // became ready to send (those still waiting from earlier turns first); the rest wait
        // for the next turns. A connection's first send (a WELCOME, a refusal) does not
        // queue behind them: it goes ahead, within half the budget while others wait — a
        // handshake is not held behind a fan-out, and a connect storm cannot starve one.
        // (Priority for every newly ready connection would let the members a turn just
        // served, re-readied by the next push, overtake the waiting ones again and again.)
        // The same holds for the bytes the started sends offer the kernel
        // (`max_send_bytes_per_turn`): each send gathers only what is left of them.
        let budget = self.cfg.max_sends_per_turn.max(2) as usize;
        let byte_budget = self.cfg.max_send_bytes_per_turn.max(1);
        let (first_quota, first_bytes) = if self.backlog.is_empty() {
            (budget, byte_budget)
        } else {
            (budget / 2, byte_budget / 2)
        };
        let mut dirty = std::mem::take(&mut self.dirty);
        let (mut started, mut bytes) = (0, 0);
        for &slot in &dirty {
            let first = self.slots[slot as usize].bytes_out == 0;
            if first && started < first_quota && bytes < first_bytes {
                let n = self.start_send(slot, first_bytes - bytes);
                started += usize::from(n > 0);
                bytes += n;
            } else {
                self.backlog.push_back(slot);
            }
        }
        dirty.clear();
        self.dirty = dirty;
        while started < budget && bytes < byte_budget && !control {
            let Some(slot) = self.backlog.pop_front() else {
                break;
            };
            let n = self.start_send(slot, byte_budget - bytes);
            started += usize::from(n > 0);
            bytes += n;
        }
        if !control {
            self.sh.stats.sends_deferred.add(self.backlog.len() as u64);
        }
        if !self.rearm.is_empty() {
            // Receives stopped on ENOBUFS, oldest first, each only when its ring has a free
            // buffer for it: re-arming every waiting one each turn would have the kernel fail
            // all but a few again at once, turn after turn (work that grows with the waiting
            // connections times the turns). The rest wait, in order, for the next turn.
            let mut rearm = std::mem::take(&mut self.rearm);
            let mut kept = 0;
            for i in 0..rearm.len() {
                let slot = rearm[i];
                let s = &self.slots[slot as usize];
                if !s.waiting_buffers {
                    continue;
                }
                // A slot that would not be armed (closing, its peer's FIN seen) takes no
                // buffer: it leaves the list without one.
                let armable = !s.recv_armed && !s.peer_eof && s.receiving() && s.fd != NO_FD;
                if armable && !self.driver.reserve_recv_buffer(s.fd) {
                    rearm[kept] = slot;
                    kept += 1;
                    continue;
                }
                self.slots[slot as usize].waiting_buffers = false;
                if armable {
                    self.arm_recv(slot);
                }
            }
            rearm.truncate(kept);
            self.rearm = rearm;
        }
        self.sh
            .stats
            .send_blocks
            .set(self.pool.blocks_allocated() as u64);
        self.sh.stats.queued_bytes.set(self.pool.queued_bytes());
        // Connection operations only: the doorbell read and an armed accept are always there.
        let resident = 1 + usize::from(matches!(self.accept, Accept::Armed | Accept::Cancelling));
        self.sh
            .stats
            .inflight_ops
            .set(self.driver.inflight().saturating_sub(resident) as u64);
        self.sh
            .stats
            .descriptor_tables
            .set(self.driver.descriptor_tables() as u64);
        let k = self.driver.kernel_counters();
        self.sh.stats.kernel_enters.set(k.enters);
        self.sh.stats.cq_overflows.set(k.cq_overflows);
    }

    pub fn mark_dirty(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(slot);
        }
    }

    pub fn wait_for_buffers(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if !s.waiting_buffers {
            s.waiting_buffers = true;
            self.rearm.push(slot);
        }
    }

    pub fn arm_recv(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.recv_armed || s.peer_eof || !s.receiving() || s.fd == NO_FD {
            return;
        }
        s.recv_armed = true;
        let fd = s.fd;
        let ud = self.op_started(slot, Op::Recv);
        self.driver.recv(fd, ud);
        self.sh.stats.recv_arms.inc();
    }

    /// Stops receiving on an open `slot` until `until` (a tick): its armed receive is
    /// cancelled (what the kernel delivered before the cancel still reaches the handler) and
    /// nothing re-arms one before then. A later pause replaces the deadline.
    pub fn pause_recv(&mut self, slot: u32, until: u64) {
        let s = &mut self.slots[slot as usize];
        if s.state != State::Open || until <= self.now_tick {
            return;
        }
        let was_paused = std::mem::replace(&mut s.paused, true);
        self.pauses.insert(slot, until);
        if !was_paused {
            self.sh.stats.recv_pauses.inc();
            if s.recv_armed {
                // The receive ends with a final `-ECANCELED` completion (or, had it ended
                // already, the cancel finds nothing): `recv_armed` clears then, and
                // `Slot::receiving` keeps anything from re-arming it while paused.
                let (fd, gen) = (s.fd, s.gen);
                let target = crate::id::pack(Op::Recv, slot, gen);
                let ud = self.op_started(slot, Op::Cancel);
                self.driver.cancel_recv(fd, target, ud);
            }
        }
        self.schedule(slot);
    }

    /// Ends `slot`'s pause (its deadline passed, or it began closing) and re-arms its
    /// receive. The pause is not held against the peer's idle time: it counts from now.
    pub fn resume_recv(&mut self, slot: u32) {
        if !self.end_pause(slot) {
            return;
        }
        let s = &mut self.slots[slot as usize];
        s.last_recv = s.last_recv.max(self.now_tick);
        self.arm_recv(slot);
    }

    /// Clears `slot`'s pause, if any (re-arms nothing); whether it was paused.
    fn end_pause(&mut self, slot: u32) -> bool {
        let paused = std::mem::replace(&mut self.slots[slot as usize].paused, false);
        if paused {
            self.pauses.remove(&slot);
        }
        paused
    }

    /// Whether `slot` is paused with its deadline at or before now.
    pub fn pause_over(&self, slot: u32) -> bool {
        self.slots[slot as usize].paused
            && self.pauses.get(&slot).is_none_or(|&t| t <= self.now_tick)
    }

    /// Arms accepting: multishot while at least the driver's accept headroom is free, one
    /// connection at a time closer to the cap, not at all at the cap (`PausedFull`: a freed
    /// slot re-arms). The kernel accepts a connection before it looks for a table entry and
    /// closes it when the table is full, so the engine must not leave an accept armed that
    /// could take more connections than it has slots: the excess waits in the backlog.
    pub fn arm_accept(&mut self) {
        let Some(l) = &self.listener else { return };
        let room = self.driver.accept_room(true);
        let free = (self.cap as usize).saturating_sub(self.used).min(room);
        if free == 0 {
            self.accept = Accept::PausedFull;
            return;
        }
        self.accept_multishot = free >= self.driver.accept_headroom();
        self.driver
            .accept(l.as_raw_fd(), self.accept_multishot, pack(Op::Accept, 0, 0));
        self.accept = Accept::Armed;
    }

    /// After a slot was taken (accept or connect): an armed accept that could now take more
    /// connections than there are free slots is cancelled; its final completion re-arms in
    /// the mode that fits (see [`Core::arm_accept`]).
    fn check_accept_headroom(&mut self) {
        let free = (self.cap as usize)
            .saturating_sub(self.used)
            .min(self.driver.accept_room(false));
        let too_many = free == 0 || (self.accept_multishot && free < self.driver.accept_headroom());
        if self.accept == Accept::Armed && too_many {
            self.accept = Accept::Cancelling;
            self.driver.cancel(pack(Op::Accept, 0, 0), 0);
        }
    }

    /// Counts a connection that became open (accepted or connected) on this shard and in
    /// the process. Returns false, counting nothing, for an accepted one over the
    /// process-wide cap (only when refusing over it, `over_cap_reply`).
    pub fn count_open(&mut self, accepted: bool) -> bool {
        let open = &self.handle.shared.open;
        let before = open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if accepted && self.cfg.over_cap_reply.is_some() && before >= self.limit {
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        self.open += 1;
        self.sh.stats.open.set(self.open as u64);
        true
    }

    /// A connection accepted into `slot` over the process-wide cap: it is sent
    /// `over_cap_reply` and closed gracefully (drain, FIN, the peer's FIN or the linger),
    /// without the handler ever seeing it. Its receive is armed only to notice the peer's
    /// FIN or reset; what it sends is discarded.
    pub fn refuse_over_cap(&mut self, slot: u32, fd: Sock) {
        self.sh.stats.refused_over_cap.inc();
        if !self.over_cap_logged {
            self.over_cap_logged = true;
            tracing::warn!(
                shard = self.shard,
                limit = self.limit,
                "connection cap reached: connections over it are refused (logged once per shard; see refused_over_cap)"
            );
        }
        let reply = self.cfg.over_cap_reply.clone().unwrap_or_default();
        let linger = self.now_tick + self.linger_ticks;
        let budget = self.discard_budget(CloseReason::Local);
        let s = &mut self.slots[slot as usize];
        s.fd = fd;
        s.origin = crate::Origin::Accepted;
        s.state = State::Draining;
        s.timer = linger;
        s.discard_left = budget;
        if !reply.is_empty() {
            self.pool.push_shared(&mut s.q, reply, 1);
            self.mark_dirty(slot);
        }
        self.arm_recv(slot);
        self.schedule(slot);
        if self.slots[slot as usize].q.is_empty() {
            self.start_fin(slot);
        }
    }

    // ---- timers --------------------------------------------------------------------------

    /// Makes sure the slot's wheel entry is at or before its earliest deadline.
    pub fn schedule(&mut self, slot: u32) {
        let key = self.key(slot);
        let s = &self.slots[slot as usize];
        let mut next = s.timer;
        if let (State::Open, Some(idle)) = (s.state, self.idle_ticks) {
            next = next.min(s.last_recv + idle + 1);
        }
        if s.paused {
            next = next.min(self.pauses.get(&slot).copied().unwrap_or(0));
        }
        if next == NEVER || next >= s.wheel {
            return;
        }
        let at = self.wheel.schedule(key, next);
        self.slots[slot as usize].wheel = at;
    }

    /// Whether `idle_timeout` has passed since the slot's last receive. `last_recv` is the
    /// tick the receive fell in (rounded down), so the deadline is one tick later than
    /// `last_recv + idle`: a connection is never closed before its full idle time.
    pub fn idle_expired(&self, slot: u32) -> bool {
        let s = &self.slots[slot as usize];
        // A paused connection is not idle: the engine is not reading it (its idle time
        // counts again from the end of the pause).
        !s.paused
            && matches!((s.state, self.idle_ticks), (State::Open, Some(idle)) if self.now_tick > s.last_recv + idle)
    }

    // ---- closing -------------------------------------------------------------------------

    /// Starts closing `slot`. Graceful: drain the queue, send FIN, wait (bounded by the
    /// linger) for the peer's FIN, then close. Otherwise: drop the queue and close now.
    pub fn begin_close(&mut self, slot: u32, reason: CloseReason, graceful: bool) {
        let id = self.id(slot);
        let state = self.slots[slot as usize].state;
        match state {
            State::Open => {
                // A paused connection that closes gracefully reads again (the peer's FIN
                // ends the close); one closed now has its receive cancelled anyway.
                self.end_pause(slot);
                if self.slots[slot as usize].announced {
                    self.notify.push((id, reason));
                }
                self.sh.stats.closed[reason.bucket()].inc();
                self.open -= 1;
                self.sh.stats.open.set(self.open as u64);
                self.handle
                    .shared
                    .open
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if graceful {
                    let budget = self.discard_budget(reason);
                    let s = &mut self.slots[slot as usize];
                    s.state = State::Draining;
                    s.timer = self.now_tick + self.linger_ticks;
                    s.discard_left = budget;
                    self.schedule(slot);
                    // A connection closed before it was announced (its peer-address lookup
                    // still in flight) has no receive armed: arm one, or the peer's FIN
                    // would go unnoticed and the close would wait the whole linger.
                    self.arm_recv(slot);
                    let s = &self.slots[slot as usize];
                    if s.q.is_empty() && !s.q.in_flight() {
                        self.start_fin(slot);
                    }
                } else {
                    self.finish(slot);
                }
            }
            State::Connecting => {
                self.notify.push((id, reason));
                self.sh.stats.closed[reason.bucket()].inc();
                self.finish(slot);
            }
            State::Draining | State::FinSent if !graceful => self.finish(slot),
            _ => {}
        }
    }

    /// What a connection closed for `reason` may still send after our FIN, in KiB
    /// (`close_discard_max_bytes`), or [`NO_DISCARD_CAP`]: a shutdown lets every peer finish
    /// (its FIN, or the deadline), as does the largest setting, 64 MiB.
    fn discard_budget(&self, reason: CloseReason) -> u16 {
        if reason == CloseReason::Shutdown {
            return NO_DISCARD_CAP;
        }
        u16::try_from(self.cfg.close_discard_max_bytes.div_ceil(1024)).unwrap_or(NO_DISCARD_CAP)
    }

    /// Lowers a closing connection's discard budget to `max_bytes` (whole KiB, rounded up) if
    /// that is less than what it has left; nothing for one that is not closing gracefully.
    pub fn cap_discard(&mut self, slot: u32, max_bytes: u32) {
        let s = &mut self.slots[slot as usize];
        if matches!(s.state, State::Draining | State::FinSent) {
            // Below `NO_DISCARD_CAP`, so the cap always holds.
            let cap = u16::try_from(max_bytes.div_ceil(1024))
                .map_or(NO_DISCARD_CAP - 1, |k| k.min(NO_DISCARD_CAP - 1));
            s.discard_left = s.discard_left.min(cap);
        }
    }

    /// Data that arrived after our FIN (`len` bytes, discarded): charged to the connection's
    /// budget; past it, the close is cut short (closed now). Returns whether it was.
    pub fn discard(&mut self, slot: u32, len: usize) -> bool {
        let cost = u16::try_from(len.div_ceil(1024)).unwrap_or(u16::MAX);
        let s = &mut self.slots[slot as usize];
        if s.discard_left == NO_DISCARD_CAP {
            return false;
        }
        if cost <= s.discard_left {
            s.discard_left -= cost;
            return false;
        }
        self.sh.stats.close_discard_cut.inc();
        self.finish(slot);
        true
    }

    /// The queue drained while closing gracefully: send our FIN.
    pub fn start_fin(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.peer_eof || s.fd == NO_FD {
            self.finish(slot);
            return;
        }
        // From here everything the peer sends is discarded, at most `discard_left` KiB of it
        // (set when the close began).
        s.state = State::FinSent;
        let fd = s.fd;
        let ud = self.op_started(slot, Op::Shutdown);
        self.driver.shutdown_write(fd, ud);
    }

    /// Stops the connection: drops what is unsent and cancels what is in flight. The
    /// descriptor is closed, and then the slot freed, by [`Core::settle`] as the operations
    /// complete (see "Connection lifetime" in docs/architecture.md).
    pub fn finish(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if s.state == State::Closing || s.state == State::Free {
            return;
        }
        s.state = State::Closing;
        s.timer = NEVER;
        self.pool.clear_unsent(&mut s.q);
        if s.fd != NO_FD && s.ops > 0 {
            let fd = s.fd;
            let ud = self.op_started(slot, Op::Cancel);
            self.driver.cancel_sock(fd, ud);
        }
        self.settle(slot);
    }

    /// Advances a closing slot after any of its events. The order is the lifetime rule:
    /// 1. while any operation that names the slot's direct descriptor is outstanding
    ///    (including ones the kernel resolves late, like a shutdown it runs in a worker
    ///    thread), nothing else happens: the descriptor index stays this connection's;
    /// 2. then the close is issued: from that moment the kernel may give the index to a new
    ///    connection, and nothing of ours names it any more;
    /// 3. when the close has completed, the slot is freed (its generation bumped).
    pub fn settle(&mut self, slot: u32) {
        let s = &self.slots[slot as usize];
        if s.state != State::Closing || s.ops > 0 {
            return;
        }
        if s.fd != NO_FD {
            let fd = s.fd;
            let ud = self.op_started(slot, Op::Close);
            self.slots[slot as usize].fd = NO_FD;
            self.driver.close(fd, ud);
            return;
        }
        let s = &mut self.slots[slot as usize];
        self.pool.release(&mut s.q);
        if s.connect != NO_CTX {
            self.free_connects.push(s.connect);
            s.connect = NO_CTX;
        }
        s.state = State::Free;
        s.gen = s.gen.wrapping_add(1);
        if s.peer.is_elsewhere() {
            s.peer = PeerAddr::NONE;
            self.peers_v6.remove(&slot);
        }
        self.end_pause(slot);
        self.free.push(slot);
        self.used -= 1;
        self.sh.stats.slots_used.set(self.used as u64);
        if self.accept == Accept::PausedFull {
            self.arm_accept();
        }
    }

    /// Closes the gracefully-closing connections now (linger or shutdown deadline passed).
    pub fn force_close_all(&mut self) {
        for slot in 0..self.slots.len() as u32 {
            match self.slots[slot as usize].state {
                State::Open | State::Connecting => {
                    self.begin_close(slot, CloseReason::Shutdown, false)
                }
                State::Draining | State::FinSent => self.finish(slot),
                _ => {}
            }
        }
    }

    // ---- outbound ------------------------------------------------------------------------

    pub fn connect(
        &mut self,
        addr: SocketAddr,
        bind: Option<SocketAddr>,
    ) -> std::io::Result<ConnId> {
        let slot = self.alloc_slot().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "shard connection cap reached",
            )
        })?;
        let ctx = ConnectCtx {
            addr: addr.into(),
            bind: bind.map(Into::into),
            one: 1,
            setup_err: 0,
        };
        let ci = match self.free_connects.pop() {
            Some(i) => {
                *self.connects[i as usize] = ctx;
                i
            }
            None => {
                self.connects.push(Box::new(ctx));
                (self.connects.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.state = State::Connecting;
        s.announced = true;
        s.origin = crate::Origin::Connected;
        s.connect = ci;
        self.set_peer(slot, Some(addr));
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let ud = self.op_started(slot, Op::Socket);
        self.driver.socket(domain, ud);
        Ok(self.id(slot))
    }

    /// The outbound socket exists: set it up and connect (linked).
    pub fn socket_ready(&mut self, slot: u32, fd: Sock) {
        self.slots[slot as usize].fd = fd;
        let ci = self.slots[slot as usize].connect as usize;
        let has_bind = self.connects[ci].bind.is_some();
        // One count per entry of the chain: each completes once.
        let setup = self.op_started(slot, Op::Setup);
        if has_bind {
            self.op_started(slot, Op::Setup);
        }
        let conn = self.op_started(slot, Op::Connect);
        // SAFETY: the option value and both addresses live in this slot's boxed
        // `ConnectCtx`, which does not move when the pool grows and is reused only after the
        // slot is freed — that is, after every completion of this connect has arrived (each
        // one is counted in the slot's ops). If the shard exits first, the contexts are leaked.
        unsafe {
            self.driver.connect(fd, &self.connects[ci], setup, conn);
        }
    }

    pub fn connect_ctx(&mut self, slot: u32) -> Option<&mut ConnectCtx> {
        let c = self.slots[slot as usize].connect;
        (c != NO_CTX).then(|| &mut *self.connects[c as usize])
    }
}
