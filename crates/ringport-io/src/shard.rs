//! A shard: one thread, one ring, one handler. The loop is the whole data plane:
//!
//! ```text
//! loop {
//!     flush sends and receive re-arms           (SQEs, no syscall)
//!     io_uring_enter: submit all, wait >= 1      (the one syscall of the turn)
//!     dispatch completions -> handler callbacks
//!     return receive buffers, drain the inbox, fire timers, handler.on_loop()
//! }
//! ```

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::conn::State;
use crate::core::{Accept, Core};
use crate::id::{pack, unpack, Op};
use crate::inbox::Envelope;
use crate::listener::nofile_limit;
use crate::sendq::Payload;
use crate::sys::{Completion, SubmitFailures};
use crate::timer::Entry;
use crate::{CloseReason, Ctx, EngineConfig, EngineError, EngineHandle, Handler, Origin};

pub(crate) struct Shard<H: Handler> {
    pub(crate) handler: H,
    pub(crate) core: Core<H>,
    completions: Vec<Completion>,
    due: Vec<Entry>,
    mail: Vec<Envelope<H>>,
    notified: Vec<(crate::ConnId, CloseReason)>,
    shutting_down: Option<Instant>,
    /// Control turns taken since the last full one (see `before_wait`).
    control_turns: u32,
}

/// Most control turns between two full turns while sends wait (see `Shard::before_wait`):
/// enough for a handshake's chain (accept, peer-address lookup, receive of the HELLO, its
/// answer), few enough that a connect storm cannot hold a fan-out back for long.
const MAX_CONTROL_TURNS: u32 = 4;

impl<H: Handler> Shard<H> {
    pub fn new(
        index: usize,
        cfg: EngineConfig,
        backend: crate::IoBackend,
        listener: Option<OwnedFd>,
        handle: EngineHandle<H>,
        factory: impl FnOnce(EngineHandle<H>) -> H,
    ) -> Result<Shard<H>, EngineError> {
        let (cap, process_cap) = caps(index, &cfg, backend);
        let driver = crate::sys::open(backend, &cfg, cap)?;
        tracing::debug!(shard = index, backend = driver.name(), cap, "shard ready");
        Ok(Shard::with_driver(
            index,
            cfg,
            driver,
            (cap, process_cap),
            listener,
            handle,
            factory,
        ))
    }

    /// A shard on `driver`, for a slot cap and process-wide cap of `caps` (see [`caps`]).
    /// The fake backend's harness builds its shard here.
    pub fn with_driver(
        index: usize,
        cfg: EngineConfig,
        driver: Box<dyn crate::sys::Driver>,
        (cap, process_cap): (u32, usize),
        listener: Option<OwnedFd>,
        handle: EngineHandle<H>,
        factory: impl FnOnce(EngineHandle<H>) -> H,
    ) -> Shard<H> {
        let core = Core::new(
            index,
            cfg,
            driver,
            cap,
            process_cap,
            listener,
            handle.clone(),
        );
        let handler = factory(handle);
        Shard {
            handler,
            core,
            completions: Vec::with_capacity(1024),
            due: Vec::new(),
            mail: Vec::new(),
            notified: Vec::new(),
            shutting_down: None,
            control_turns: 0,
        }
    }

    /// The handler and a context for it (the fake backend's harness runs test code as a
    /// callback through this, then [`Shard::deliver_closes`]).
    pub fn ctx(&mut self) -> (&mut H, Ctx<'_, H>) {
        (
            &mut self.handler,
            Ctx {
                core: &mut self.core,
            },
        )
    }

    /// Delivers queued `on_close` notifications (which may queue more).
    pub fn deliver_closes(&mut self) {
        while !self.core.notify.is_empty() {
            std::mem::swap(&mut self.core.notify, &mut self.notified);
            let mut list = std::mem::take(&mut self.notified);
            for &(id, reason) in &list {
                let (h, mut ctx) = self.ctx();
                h.on_close(&mut ctx, id, reason);
            }
            list.clear();
            self.notified = list;
        }
    }

    /// The shard's loop, until shutdown completes (`Ok`) or the ring fails for good (`Err`).
    pub fn run(&mut self) -> Result<(), EngineError> {
        let mut failures = SubmitFailures::default();
        let mut stopped = None;
        self.begin();
        let mut busy_from = Instant::now();
        loop {
            let timeout = self.before_wait();
            self.core
                .sh
                .stats
                .busy_ns
                .add(busy_from.elapsed().as_nanos() as u64);
            // A submit that failed while flushing a full queue already lost entries: stop.
            if let Some(e) = self.core.driver.failed() {
                stopped = Some(io::Error::new(e.kind(), e.to_string()));
                break;
            }
            let submitted = self.core.driver.submit_and_wait(timeout);
            self.between_chunks();
            let retry = submitted.is_err();
            if let Err(e) = failures.record(submitted, Instant::now()) {
                stopped = Some(e);
                break;
            }
            if retry {
                // Retryable (the kernel short of memory): pause instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            busy_from = Instant::now();
            if self.after_wait(busy_from) {
                break;
            }
        }
        if let Some(e) = &stopped {
            tracing::error!(
                shard = self.core.shard,
                error = %e,
                "io_uring_enter keeps failing: stopping this shard and closing its connections"
            );
            self.abandon_all(e.raw_os_error().unwrap_or(libc::EIO));
        }
        self.drain_in_flight();
        self.core.sh.close_inbox();
        match stopped {
            None => Ok(()),
            Some(source) => Err(EngineError::RingFailed {
                shard: self.core.shard,
                source,
            }),
        }
    }

    /// Before the first turn: arms accepting and the doorbell read.
    pub fn begin(&mut self) {
        self.core.arm_accept();
        let doorbell = self.core.sh.doorbell_fd();
        self.core
            .driver
            .read_doorbell(doorbell, pack(Op::Doorbell, 0, 0));
    }

    /// The first half of a loop turn, before the wait: queues this turn's sends and receive
    /// re-arms. Returns the wait's timeout (a timer tick while anything is timed).
    pub fn before_wait(&mut self) -> Option<Duration> {
        // While a fan-out's sends wait for later turns, each turn starts a chunk of them
        // (`max_sends_per_turn` and `max_send_bytes_per_turn`, ~0.5 ms of the core). What the
        // last turn's completions queued for connections that have sent nothing yet — a new
        // connection's peer-address lookup, its receive arm, a refused one's close — then
        // goes to the kernel alone
        // first, in a control turn that starts only first sends (a WELCOME): its completions,
        // mostly inline (a lookup, a receive of bytes already there), are handled before the
        // next chunk. A handshake's steps would otherwise each wait for a chunk (three of
        // them from accept to WELCOME). The established connections' receive re-arms do not
        // start control turns (they would only delay the chunks); at most
        // `MAX_CONTROL_TURNS` in a row, so a connect storm cannot stall the fan-out.
        let control = self.core.sends_waiting()
            && self.core.handshake_ops > 0
            && self.control_turns < MAX_CONTROL_TURNS;
        self.control_turns = if control { self.control_turns + 1 } else { 0 };
        self.core.flush(control);
        self.core.handshake_ops = 0;
        // Receives still waiting for buffers are retried next turn even if nothing else
        // happens before it.
        if self.core.sends_waiting() {
            // Sends past this turn's budget: the next turn starts as soon as the kernel has
            // taken this one's (completions that arrived meanwhile are handled first).
            return Some(Duration::ZERO);
        }
        let timed = self.core.wheel.len() > 0
            || !self.core.rearm.is_empty()
            || self.shutting_down.is_some()
            || matches!(self.core.accept, Accept::Backoff(_));
        let tick = timed.then_some(self.core.cfg.timer_tick);
        // A quiet shard wakes up to trim its receive buffers.
        match self.core.trim_at {
            Some(at) => {
                let left = at.saturating_duration_since(self.core.now);
                Some(tick.map_or(left, |t| t.min(left)))
            }
            None => tick,
        }
    }

    /// Right after the turn's submit: while a fan-out's sends still wait for later turns,
    /// yields the core (`EngineConfig::yield_between_chunks`). Such turns never block in the
    /// kernel, so without it a thread sharing the core (another shard, with a connection to
    /// accept or a HELLO to answer) gets in only when the scheduler's tick ends this
    /// thread's slice: 4 ms at `HZ=250`, whatever slice was asked for. The yield comes after
    /// the chunk was handed to the kernel, so its sends are already under way.
    pub fn between_chunks(&mut self) {
        if self.core.cfg.yield_between_chunks && self.core.sends_waiting() {
            std::thread::yield_now();
            self.core.sh.stats.yields.inc();
        }
    }

    /// The second half of a loop turn, after the wait returned at `now`: completions, inbox,
    /// timers, `on_loop`, close notifications, shutdown. True when the loop should exit.
    pub fn after_wait(&mut self, now: Instant) -> bool {
        // What the handler posts to shards this turn (a client PUBLISH fanned out to every
        // shard, say) rings each of them once, when the turn's work is done.
        let _batch = crate::DoorbellBatch::begin();
        self.core.set_now(now);
        self.core.sh.stats.loops.inc();

        let mut batch = std::mem::take(&mut self.completions);
        self.core.driver.drain(&mut batch);
        self.core.sh.stats.completions.add(batch.len() as u64);
        let mut received = false;
        for c in &batch {
            received |= c.buf.is_some();
            self.dispatch(*c);
        }
        batch.clear();
        self.completions = batch;
        self.core.driver.publish_buffers();
        self.trim_when_quiet(received, now);

        if self.core.sh.has_mail() {
            self.drain_inbox();
        }
        self.fire_timers();
        if let Accept::Backoff(at) = self.core.accept {
            if self.core.now_tick >= at && self.shutting_down.is_none() {
                self.core.arm_accept();
            }
        }
        {
            let (h, mut ctx) = self.ctx();
            h.on_loop(&mut ctx);
        }
        self.deliver_closes();
        self.shutdown_progress()
    }

    /// Trims the receive buffers once no receive has used one for
    /// `EngineConfig::recv_buffer_trim`: right after the turn's completions were drained and
    /// handled and its buffers returned, before anything else may enter the ring (the driver
    /// checks that it can prove the trim safe, and declines otherwise: tried again after
    /// another quiet interval). One comparison per turn otherwise.
    fn trim_when_quiet(&mut self, received: bool, now: Instant) {
        let Some(quiet) = self.core.cfg.recv_buffer_trim else {
            return;
        };
        if received {
            self.core.trim_at = Some(now + quiet);
            return;
        }
        if self.core.trim_at.is_none_or(|at| now < at) {
            return;
        }
        match self.core.driver.trim_recv_buffers() {
            Some(bytes) => {
                self.core.trim_at = None;
                self.core.sh.stats.recv_buffer_trimmed_bytes.add(bytes);
            }
            None => self.core.trim_at = Some(now + quiet),
        }
    }

    fn dispatch(&mut self, c: Completion) {
        let Some((op, slot, gen)) = unpack(c.user_data) else {
            return;
        };
        match op {
            Op::Accept => return self.on_accept(c),
            Op::Doorbell => {
                if self.shutting_down.is_none() || self.core.used > 0 {
                    let fd = self.core.sh.doorbell_fd();
                    self.core.driver.read_doorbell(fd, pack(Op::Doorbell, 0, 0));
                }
                return;
            }
            _ => {}
        }
        if (slot as usize) >= self.core.slots.len() || self.core.slots[slot as usize].gen != gen {
            debug_assert!(false, "completion for a freed slot: {op:?} {slot}");
            return;
        }
        if !c.more() {
            self.core.op_finished(slot);
        }
        match op {
            Op::Recv => self.on_recv(slot, c),
            Op::Send => self.on_send(slot, c),
            Op::Shutdown => {
                if c.result < 0 && self.core.slots[slot as usize].state == State::FinSent {
                    self.core.finish(slot);
                }
            }
            // The descriptor was forgotten when the close was issued (see `Core::settle`).
            Op::Close | Op::Cancel => {}
            Op::PeerAddr => {
                if c.result >= 0 {
                    let peer = crate::peer::peer_addr_of_installed(c.result);
                    self.core.set_peer(slot, peer);
                }
                if self.core.slots[slot as usize].state == State::Open {
                    self.announce(slot);
                }
            }
            Op::Socket => self.on_socket(slot, c.result),
            Op::Setup => {
                if c.result < 0 && c.result != -libc::ECANCELED {
                    if let Some(ctx) = self.core.connect_ctx(slot) {
                        if ctx.setup_err == 0 {
                            ctx.setup_err = -c.result;
                        }
                    }
                }
            }
            Op::Connect => self.on_connect(slot, c.result),
            Op::Accept | Op::Doorbell => {}
        }
        self.deliver_closes();
        self.core.settle(slot);
    }

    fn on_accept(&mut self, c: Completion) {
        if !c.more() {
            // The accept operation is over, whatever its result; re-armed below.
            self.core.accept = Accept::Off;
        }
        if c.result >= 0 {
            let fd = c.sock();
            let Some(slot) = self.core.alloc_slot() else {
                // Cannot happen while the table and the slab have the same size; be safe.
                self.core.driver.close(fd, 0);
                if !c.more() {
                    self.core.accept = Accept::PausedFull;
                }
                return;
            };
            if !self.core.count_open(true) {
                self.core.refuse_over_cap(slot, fd);
            } else {
                self.core.sh.stats.accepted.inc();
                let s = &mut self.core.slots[slot as usize];
                s.fd = fd;
                s.state = State::Open;
                s.origin = Origin::Accepted;
                self.core.schedule(slot);
                if self.shutting_down.is_some() {
                    // Accepted after the turn that began the shutdown (and queued this
                    // accept's cancel), before the kernel saw the cancel: the shutdown's
                    // sweep of open connections missed it, so it is closed here like them
                    // (gracefully, its receive armed for the peer's FIN), never announced.
                    self.core.begin_close(slot, CloseReason::Shutdown, true);
                } else if self.core.cfg.resolve_peer_addr {
                    // The handler meets the connection with its peer address known: it is
                    // announced (receive armed, `on_open`) when the lookup completes.
                    let ud = self.core.op_started(slot, Op::PeerAddr);
                    self.core.driver.lookup_peer(fd, ud);
                } else {
                    self.announce(slot);
                }
            }
        } else {
            let errno = -c.result;
            let kind = match errno {
                libc::ENFILE | libc::EMFILE => Some(crate::stats::AcceptError::TableFull),
                libc::ENOMEM | libc::ENOBUFS => Some(crate::stats::AcceptError::Resources),
                libc::ECONNABORTED | libc::EPROTO | libc::EPERM => {
                    Some(crate::stats::AcceptError::Aborted)
                }
                libc::ECANCELED => None,
                _ => Some(crate::stats::AcceptError::Other),
            };
            if let Some(k) = kind {
                self.core.sh.stats.accept_errors[k as usize].inc();
            }
            if !c.more() {
                self.core.accept = match kind {
                    _ if self.shutting_down.is_some() => Accept::Off,
                    // Cancelled to switch to single accepts near the cap.
                    None if self.core.listener.is_some() => {
                        self.core.arm_accept();
                        return;
                    }
                    None => Accept::Off,
                    // The process fd table (shared with other shards and the rest of the
                    // process; epoll's sockets live there): no slot of ours frees it, so
                    // try again after a pause.
                    Some(crate::stats::AcceptError::TableFull) if errno == libc::EMFILE => {
                        self.core.sh.stats.accept_paused.inc();
                        tracing::warn!(
                            shard = self.core.shard,
                            used = self.core.used,
                            "process fd table full (RLIMIT_NOFILE): accepting paused, backing off"
                        );
                        Accept::Backoff(
                            self.core
                                .tick_of(self.core.now + self.core.cfg.accept_backoff),
                        )
                    }
                    Some(crate::stats::AcceptError::TableFull) => {
                        self.core.sh.stats.accept_paused.inc();
                        tracing::warn!(
                            shard = self.core.shard,
                            used = self.core.used,
                            "connection table full: accepting paused until a connection closes"
                        );
                        Accept::PausedFull
                    }
                    Some(crate::stats::AcceptError::Aborted) => Accept::Backoff(self.core.now_tick),
                    Some(_) => {
                        self.core.sh.stats.accept_paused.inc();
                        tracing::warn!(
                            shard = self.core.shard,
                            errno,
                            "accept failed: backing off"
                        );
                        let backoff = self
                            .core
                            .tick_of(self.core.now + self.core.cfg.accept_backoff);
                        Accept::Backoff(backoff)
                    }
                };
                if self.core.accept == Accept::PausedFull && self.core.used < self.core.cap as usize
                {
                    // A slot freed between the failure and now.
                    self.core.arm_accept();
                }
                return;
            }
        }
        if !c.more() && self.shutting_down.is_none() {
            self.core.arm_accept();
        }
    }

    /// Tells the handler of an accepted connection (`on_open`) and starts receiving.
    fn announce(&mut self, slot: u32) {
        let s = &mut self.core.slots[slot as usize];
        if s.announced {
            return;
        }
        s.announced = true;
        let id = self.core.id(slot);
        let (h, mut ctx) = self.ctx();
        h.on_open(&mut ctx, id, Origin::Accepted);
        // Armed after `on_open`: a connection the handler refused there with `Ctx::abort`
        // has no operation left, so its close goes to the kernel at once, with nothing to
        // cancel first (a refused reconnect flood costs an accept and a close each).
        self.core.arm_recv(slot);
        self.deliver_closes();
    }

    fn on_recv(&mut self, slot: u32, c: Completion) {
        if !c.more() {
            self.core.slots[slot as usize].recv_armed = false;
        }
        let res = c.result;
        if res > 0 {
            let Some(bid) = c.buffer() else { return };
            let len = res as usize;
            let st = &self.core.sh.stats;
            st.bytes_in.add(len as u64);
            st.recvs.inc();
            let s = &mut self.core.slots[slot as usize];
            s.bytes_in += len as u64;
            s.recvs = s.recvs.saturating_add(1);
            if s.state == State::Open {
                s.last_recv = self.core.now_tick;
                // SAFETY: `bid` comes from this receive completion and is recycled only
                // below, after the handler (which has no way to recycle it) has returned and
                // dropped `data`.
                let data = unsafe { self.core.driver.buffer(bid, len) };
                let id = self.core.id(slot);
                let (h, mut ctx) = self.ctx();
                h.on_data(&mut ctx, id, data);
            } else if s.state == State::FinSent {
                // Read and discarded (everything we had to send is out): a peer that keeps
                // sending is not read for the whole linger (`finish` cancels the receive, so
                // nothing re-arms it). While our queue still drains (`Draining`), what the
                // peer sent before it read our CLOSE is not held against it.
                self.core.discard(slot, len);
            }
            self.core.driver.recycle(bid);
            if !c.more() {
                self.core.arm_recv(slot);
            }
        } else if res == 0 {
            let s = &mut self.core.slots[slot as usize];
            s.peer_eof = true;
            match s.state {
                State::Open => self.core.begin_close(slot, CloseReason::PeerClosed, true),
                State::FinSent => self.core.finish(slot),
                _ => {}
            }
        } else if res == -libc::ENOBUFS {
            self.core.sh.stats.bufring_exhausted.inc();
            if !c.more() {
                self.core.wait_for_buffers(slot);
            }
        } else if res == -libc::ECANCELED {
            // Cancelled by a pause (`Core::pause_recv`) or a close (`Core::finish`). A pause
            // that ended before the cancel reached the receive — at its deadline, or by a
            // graceful close that must see the peer's FIN — re-armed nothing (one was still
            // armed): arm it again now (a no-op while paused, and after `finish`).
            if !c.more() {
                self.core.arm_recv(slot);
            }
        } else {
            let reason = crate::conn::reason_from_errno(-res);
            self.core.begin_close(slot, reason, false);
        }
    }

    fn on_send(&mut self, slot: u32, c: Completion) {
        let s = &mut self.core.slots[slot as usize];
        if c.result >= 0 {
            let n = c.result as usize;
            self.core.pool.complete(&mut s.q, n);
            s.bytes_out += n as u64;
            self.core.sh.stats.bytes_out.add(n as u64);
            if !s.q.is_empty() {
                self.core.mark_dirty(slot);
            } else if s.state == State::Draining {
                self.core.start_fin(slot);
            }
        } else {
            self.core.pool.complete(&mut s.q, 0);
            if c.result != -libc::ECANCELED {
                let reason = crate::conn::reason_from_errno(-c.result);
                self.core.begin_close(slot, reason, false);
            }
        }
    }

    fn on_socket(&mut self, slot: u32, res: i32) {
        let state = self.core.slots[slot as usize].state;
        if res >= 0 {
            if state == State::Connecting {
                self.core.socket_ready(slot, crate::sys::Sock(res as u32));
            } else {
                // Closed while the socket was being made: the slot is closing, and
                // `settle` (right after this completion) closes the new descriptor.
                self.core.slots[slot as usize].fd = crate::sys::Sock(res as u32);
            }
        } else {
            self.core
                .begin_close(slot, CloseReason::ConnectFailed(-res), false);
        }
    }

    fn on_connect(&mut self, slot: u32, res: i32) {
        if self.core.slots[slot as usize].state != State::Connecting {
            return;
        }
        if res == 0 {
            self.core.sh.stats.connected.inc();
            self.core.count_open(false);
            let s = &mut self.core.slots[slot as usize];
            s.state = State::Open;
            s.last_recv = self.core.now_tick;
            self.core.arm_recv(slot);
            self.core.schedule(slot);
            let id = self.core.id(slot);
            let (h, mut ctx) = self.ctx();
            h.on_open(&mut ctx, id, Origin::Connected);
        } else {
            let setup_err = self
                .core
                .connect_ctx(slot)
                .map(|c| c.setup_err)
                .unwrap_or(0);
            let errno = if res == -libc::ECANCELED && setup_err != 0 {
                setup_err
            } else {
                -res
            };
            self.core
                .begin_close(slot, CloseReason::ConnectFailed(errno), false);
        }
    }

    fn drain_inbox(&mut self) {
        let mut mail = std::mem::take(&mut self.mail);
        self.core.sh.drain(&mut mail);
        for env in mail.drain(..) {
            match env {
                Envelope::Send(conn, payload) => {
                    let _ = self.core.send(conn, Payload::Owned(payload), 1, true);
                }
                Envelope::SendMany(conns, payload) => {
                    for conn in conns {
                        let _ = self.core.send(conn, Payload::Borrowed(&payload), 1, true);
                    }
                }
                Envelope::Close(conn, reason) => {
                    if let Some(slot) = self.core.lookup(conn) {
                        self.core.begin_close(slot, reason, true);
                    }
                }
                Envelope::Run(f) => {
                    let (h, mut ctx) = self.ctx();
                    f(h, &mut ctx);
                }
            }
            self.deliver_closes();
        }
        self.mail = mail;
    }

    fn fire_timers(&mut self) {
        let now_tick = self.core.now_tick;
        if now_tick <= self.core.wheel.current() {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        self.core.wheel.advance(now_tick, &mut due);
        for e in due.drain(..) {
            let slot = (e.key & crate::id::SLOT_MASK) as u32;
            let gen = (e.key >> 24) as u32;
            let Some(s) = self.core.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.gen != gen || s.wheel != e.tick {
                continue; // stale entry
            }
            s.wheel = crate::conn::NEVER;
            if self.core.pause_over(slot) {
                self.core.resume_recv(slot);
            }
            let s = &self.core.slots[slot as usize];
            let (state, timer) = (s.state, s.timer);
            match state {
                State::Draining | State::FinSent if timer <= now_tick => self.core.finish(slot),
                State::Open if self.core.idle_expired(slot) => {
                    self.core.begin_close(slot, CloseReason::IdleTimeout, true)
                }
                State::Open if timer <= now_tick => {
                    self.core.slots[slot as usize].timer = crate::conn::NEVER;
                    let id = self.core.id(slot);
                    let (h, mut ctx) = self.ctx();
                    h.on_timer(&mut ctx, id);
                }
                _ => {}
            }
            self.deliver_closes();
            if self.core.slots[slot as usize].state != State::Free {
                self.core.schedule(slot);
            }
            self.core.settle(slot);
        }
        self.due = due;
    }

    /// Starts and advances graceful shutdown; true when the loop should exit.
    fn shutdown_progress(&mut self) -> bool {
        let requested = self
            .core
            .sh
            .shutdown
            .load(std::sync::atomic::Ordering::Acquire);
        match self.shutting_down {
            None if requested => {
                self.shutting_down = Some(self.core.now + self.core.cfg.shutdown_timeout);
                if self.core.accept == Accept::Armed {
                    // (When Cancelling, a cancel is already on its way.)
                    self.core.driver.cancel(pack(Op::Accept, 0, 0), 0);
                }
                self.core.accept = Accept::Off;
                self.core.listener = None;
                {
                    let (h, mut ctx) = self.ctx();
                    h.on_shutdown(&mut ctx);
                }
                for slot in 0..self.core.slots.len() as u32 {
                    match self.core.slots[slot as usize].state {
                        State::Open => self.core.begin_close(slot, CloseReason::Shutdown, true),
                        State::Connecting => {
                            self.core.begin_close(slot, CloseReason::Shutdown, false)
                        }
                        _ => {}
                    }
                }
                self.deliver_closes();
                false
            }
            Some(deadline) => {
                if self.core.now >= deadline {
                    self.core.force_close_all();
                    self.deliver_closes();
                }
                if self.core.used == 0 {
                    return true;
                }
                if self.core.now >= deadline + Duration::from_secs(3) {
                    tracing::warn!(
                        shard = self.core.shard,
                        slots = self.core.used,
                        "shutdown: giving up on connections still closing"
                    );
                    return true;
                }
                false
            }
            None => false,
        }
    }

    /// The ring failed for good: every live connection is closed (its handler told, with
    /// `CloseReason::Io(errno)`), as far as the ring still takes operations.
    fn abandon_all(&mut self, errno: i32) {
        for slot in 0..self.core.slots.len() as u32 {
            if matches!(
                self.core.slots[slot as usize].state,
                State::Open | State::Connecting | State::Draining | State::FinSent
            ) {
                // Not graceful: straight to `finish` (an already-notified connection that was
                // draining is not told twice).
                self.core.begin_close(slot, CloseReason::Io(errno), false);
            }
        }
        self.deliver_closes();
    }

    /// Cancels whatever is left and waits, at most `shutdown_drain`, for the kernel to let go
    /// of our memory. Past that, the memory the remaining operations may touch is leaked.
    fn drain_in_flight(&mut self) {
        self.core.driver.cancel_any();
        let deadline = Instant::now() + self.core.cfg.shutdown_drain;
        let mut batch = Vec::new();
        while self.core.driver.inflight() > 0 && Instant::now() < deadline {
            if self.core.driver.failed().is_some()
                || self
                    .core
                    .driver
                    .submit_and_wait(Some(Duration::from_millis(10)))
                    .is_err()
            {
                break;
            }
            batch.clear();
            self.core.driver.drain(&mut batch);
            for c in &batch {
                if let Some(bid) = c.buffer() {
                    self.core.driver.recycle(bid);
                }
            }
        }
        if self.core.driver.inflight() > 0 {
            tracing::warn!(
                shard = self.core.shard,
                inflight = self.core.driver.inflight(),
                "exiting with operations in flight: leaking the memory they may still use"
            );
            self.core.leak_kernel_memory();
        }
    }
}

/// A shard's slot cap and the process-wide connection cap for `cfg`: the slot cap is
/// `max_connections_per_shard` (or, when refusing over the cap, every shard's share plus a
/// headroom), clamped to RLIMIT_NOFILE.
fn caps(index: usize, cfg: &EngineConfig, backend: crate::IoBackend) -> (u32, usize) {
    let nofile = nofile_limit().min(u64::from(u32::MAX)) as u32;
    // io_uring: a direct descriptor table holds at most RLIMIT_NOFILE entries, and the
    // shard may have `max_descriptor_tables` of them. epoll: the process fd table.
    let limit = match backend {
        crate::IoBackend::Epoll => nofile,
        _ => nofile.saturating_mul(cfg.max_descriptor_tables.max(1)),
    };
    // Refusing over the cap makes it process-wide: any shard may hold all of it, plus a
    // headroom to accept, answer and close the excess.
    let (wanted, process_cap) = match cfg.over_cap_reply {
        Some(_) => {
            let total = u64::from(cfg.max_connections_per_shard) * cfg.workers as u64;
            let table = (total + u64::from(crate::OVER_CAP_HEADROOM)).min(1 << 24) as u32;
            (table, total as usize)
        }
        None => (
            cfg.max_connections_per_shard,
            cfg.max_connections_per_shard as usize,
        ),
    };
    let cap = wanted.min(limit.max(1));
    if cap < wanted {
        tracing::warn!(
            shard = index,
            requested = wanted,
            cap,
            nofile,
            backend = backend.as_str(),
            "max_connections_per_shard clamped: on epoll to RLIMIT_NOFILE (sockets live in the process fd table), on io_uring to RLIMIT_NOFILE x max_descriptor_tables (the kernel's cap on one direct descriptor table, times the tables a shard may add)"
        );
    }
    (cap, process_cap)
}
