//! The readiness driver: edge-triggered epoll, with the I/O done by the driver itself and
//! reported as completions (the contract in `sys/mod.rs`).
//!
//! Each socket in use has a [`SockState`]: what epoll last said about it (`readable`,
//! `writable`: cleared only when an attempt meets `EAGAIN`, as edge-triggered epoll
//! requires) and the operations queued on it. An operation is attempted when it is queued
//! (optimistically, like io_uring's inline attempt) and again whenever epoll reports the
//! socket ready, until it ends. Every attempt loop has a budget per turn, so one busy socket
//! or a backlog burst cannot starve the others; a socket that used its budget is retried
//! next turn without waiting.

use std::collections::VecDeque;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::bufpool::BufPool;
use crate::conn::ConnectCtx;
use crate::core::MULTISHOT_HEADROOM;
use crate::error::EngineError;
use crate::sendq::Prepared;
use crate::sys::{Completion, Driver, KernelCounters, RecvBuf, Sock};
use crate::EngineConfig;

/// Receives per socket per turn.
const RECV_BUDGET: usize = 8;
/// Connections a multishot accept takes per turn: the shard cancels a multishot accept when
/// fewer than `MULTISHOT_HEADROOM` slots are free, so a turn must not take more than that.
const ACCEPT_BUDGET: usize = MULTISHOT_HEADROOM / 2;
/// Events harvested per `epoll_wait`. Small on purpose: a turn receives on every socket an
/// event names, then the shard handles them and the next wait performs the replies, so a turn
/// of 1,000 sockets has 1,000 receive buffers, payload copies and sockets' state pass through
/// the cache before the first reply is sent; at 64 a socket's data is still warm when its
/// reply goes out (docs/benchmarks.md, "Both backends side by side").
const EVENTS: usize = 64;

/// The `user_data` of a pending operation. Never 0: the shard's socket operations carry
/// their opcode in the top byte, so `Option<Ud>` costs no more than the `u64`.
type Ud = NonZeroU64;

fn ud(user_data: u64) -> Ud {
    NonZeroU64::new(user_data).expect("socket operations carry a non-zero user_data")
}

/// What the driver knows and has queued for one descriptor (indexed by its number). The
/// table grows to the highest descriptor number in use, so every byte here is a byte per
/// connection (and per other descriptor of the process below the highest): the listener's
/// accept and the doorbell read live in the driver, not here.
#[derive(Default)]
struct SockState {
    /// Bumped at each registration: events carry it, so an event for a descriptor number's
    /// previous socket is ignored.
    /// (16 bits: an event can only be stale within the batch one `epoll_wait` returned, far
    /// fewer than 65,536 re-registrations of one number.)
    gen: u16,
    /// Registered with the epoll instance.
    registered: bool,
    /// Epoll reported readable and no attempt met EAGAIN since.
    readable: bool,
    /// Epoll reported writable and no attempt met EAGAIN since.
    writable: bool,
    /// The peer's FIN (or an error) was reported: read until EOF, not until a short read.
    rdhup: bool,
    /// In the retry list for next turn.
    again: bool,
    /// Pending (multishot) receive.
    recv: Option<Ud>,
    /// Pending send.
    send: Option<(Ud, Prepared)>,
    /// Pending connect (waiting for writability).
    connect: Option<Ud>,
}

impl SockState {
    fn pending(&self) -> bool {
        self.recv.is_some() || self.send.is_some() || self.connect.is_some()
    }
}

/// What a descriptor is registered for.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Interest {
    /// A connection: data, writability and the peer's FIN.
    Socket = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP,
    /// A listener or the doorbell eventfd: only readable. Not writability: reading an eventfd
    /// makes it writable, and an edge for that would wake the next wait for nothing (and a
    /// sleeping shard would take a turn before the ring it should wait for).
    Read = libc::EPOLLIN,
}

/// An operation queued by the shard, performed at the next wait (so, as with io_uring,
/// nothing takes effect before the turn's callbacks have run).
enum Queued {
    Accept(RawFd, bool, u64),
    Recv(Sock, u64),
    Send(Sock, Prepared, u64),
    ShutdownWrite(Sock, u64),
    CancelSock(Sock, u64),
    Cancel(u64, u64),
    CancelRecv(Sock, u64, u64),
    CancelAny,
    Close(Sock, u64),
    Socket(i32, u64),
    Connect(Sock, *const ConnectCtx, u64, u64),
    LookupPeer(Sock, u64),
    Doorbell(RawFd, u64),
}

pub(crate) struct EpollDriver {
    /// Operations queued since the last wait, in order.
    queued: Vec<Queued>,
    /// The list `queued` is swapped with while it is performed (no allocation per turn).
    queued_spare: Vec<Queued>,
    /// The epoll instance.
    ep: OwnedFd,
    /// `epoll_wait`'s output.
    events: Vec<libc::epoll_event>,
    /// Per-descriptor state, indexed by descriptor number.
    socks: Vec<SockState>,
    /// Descriptors to attempt again next turn (budget used up, still ready).
    again: VecDeque<RawFd>,
    /// The list `again` is swapped with while it is worked through (no allocation per turn).
    again_spare: VecDeque<RawFd>,
    /// Pending accepts: (listener, user_data, multishot).
    accepting: Vec<(RawFd, u64, bool)>,
    /// The pending doorbell read: (eventfd, user_data).
    doorbell: Option<(RawFd, u64)>,
    /// Completions not yet drained, in order.
    done: Vec<Completion>,
    /// Operations queued whose last completion was not drained.
    inflight: usize,
    bufs: BufPool,
    /// The `epoll_wait` error that stopped this driver.
    failed: Option<io::Error>,
    /// `epoll_wait` calls ([`Driver::kernel_counters`]).
    waits: u64,
}

// SAFETY: the raw pointers a pending send holds point into the shard's send pool, which
// lives on the same thread as the driver; the driver moves to its shard thread once, before
// any send is queued, and is used only there.
unsafe impl Send for EpollDriver {}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl EpollDriver {
    pub fn new(cfg: &EngineConfig) -> Result<EpollDriver, EngineError> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(EngineError::Setup {
                what: "creating the epoll instance",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EpollDriver {
            queued: Vec::with_capacity(1024),
            queued_spare: Vec::with_capacity(1024),
            ep,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            socks: Vec::new(),
            again: VecDeque::with_capacity(256),
            again_spare: VecDeque::with_capacity(256),
            accepting: Vec::new(),
            doorbell: None,
            done: Vec::with_capacity(1024),
            inflight: 0,
            bufs: BufPool::new(usize::from(cfg.recv_buffers), cfg.recv_buffer_size as usize),
            failed: None,
            waits: 0,
        })
    }

    fn state(&mut self, fd: RawFd) -> &mut SockState {
        let i = fd as usize;
        if i >= self.socks.len() {
            // Grown by an eighth, not doubled: the table is per-connection memory.
            let more = i + 1 - self.socks.len();
            crate::connmap::reserve_bounded(&mut self.socks, more);
            self.socks.resize_with(i + 1, SockState::default);
        }
        &mut self.socks[i]
    }

    fn complete(&mut self, user_data: u64, result: i32, more: bool, buf: Option<RecvBuf>) {
        self.done.push(Completion {
            user_data,
            result,
            more,
            buf,
        });
    }

    /// Registers `fd` (edge-triggered, for `interest`) unless it is; both directions start
    /// as ready, so the first attempt is made at once and EAGAIN clears them. `fresh`: the
    /// kernel just handed out this descriptor number, so whatever the table says about it
    /// is about a previous socket (one closed behind the driver's back, like a listener).
    fn register(&mut self, fd: RawFd, fresh: bool, interest: Interest) -> Result<(), i32> {
        let st = self.state(fd);
        if st.registered && !fresh {
            return Ok(());
        }
        let gen = st.gen.wrapping_add(1);
        let mut ev = libc::epoll_event {
            events: (interest as i32 | libc::EPOLLET) as u32,
            u64: (u64::from(gen) << 32) | fd as u32 as u64,
        };
        // SAFETY: `ev` is a live local; epoll_ctl only reads it.
        let mut rc =
            unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 && errno() == libc::EEXIST {
            // SAFETY: as above.
            rc = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) };
        }
        if rc < 0 {
            return Err(errno());
        }
        *self.state(fd) = SockState {
            gen,
            registered: true,
            readable: true,
            writable: true,
            ..SockState::default()
        };
        Ok(())
    }

    /// Attempts every pending operation of `fd` that its readiness allows.
    fn progress(&mut self, fd: RawFd) {
        let Some(st) = self.socks.get(fd as usize) else {
            return;
        };
        if st.readable && matches!(self.doorbell, Some((d, _)) if d == fd) {
            self.read_doorbell_now(fd);
        }
        if self.socks[fd as usize].readable && self.accepting.iter().any(|a| a.0 == fd) {
            self.accept_now(fd);
        }
        if self.socks[fd as usize].connect.is_some() && self.socks[fd as usize].writable {
            self.connect_now(fd);
        }
        if self.socks[fd as usize].send.is_some() && self.socks[fd as usize].writable {
            self.send_now(fd);
        }
        if self.socks[fd as usize].recv.is_some() && self.socks[fd as usize].readable {
            self.recv_now(fd);
        }
    }

    fn retry_next_turn(&mut self, fd: RawFd) {
        let st = &mut self.socks[fd as usize];
        if !st.again {
            st.again = true;
            self.again.push_back(fd);
        }
    }

    fn read_doorbell_now(&mut self, fd: RawFd) {
        let mut word = 0u64;
        // SAFETY: reads at most 8 bytes into a live local u64.
        let n = unsafe { libc::read(fd, (&mut word as *mut u64).cast(), 8) };
        if n == 8 {
            let (_, ud) = self.doorbell.take().expect("pending doorbell");
            self.complete(ud, 8, false, None);
        } else if n < 0 && errno() == libc::EAGAIN {
            self.socks[fd as usize].readable = false;
        } else {
            let (_, ud) = self.doorbell.take().expect("pending doorbell");
            let r = if n < 0 { -errno() } else { n as i32 };
            self.complete(ud, r, false, None);
        }
    }

    fn accept_now(&mut self, fd: RawFd) {
        let Some(&(_, ud, multishot)) = self.accepting.iter().find(|a| a.0 == fd) else {
            return;
        };
        let budget = if multishot { ACCEPT_BUDGET } else { 1 };
        for _ in 0..budget {
            // SAFETY: null address pointers are allowed (the peer address is not wanted).
            let s = unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if s >= 0 {
                if let Err(e) = self.register(s, true, Interest::Socket) {
                    // SAFETY: `s` was just accepted and is owned by nothing else.
                    unsafe { libc::close(s) };
                    self.end_accept(fd, ud, -e);
                    return;
                }
                self.complete(ud, s, multishot, None);
                if !multishot {
                    self.end_accept_quietly(fd);
                    return;
                }
                continue;
            }
            match errno() {
                libc::EAGAIN => {
                    self.socks[fd as usize].readable = false;
                    return;
                }
                libc::EINTR => {}
                // The connection went away before we took it: the accept goes on.
                e @ (libc::ECONNABORTED | libc::EPROTO) if multishot => {
                    self.complete(ud, -e, true, None)
                }
                e => {
                    self.end_accept(fd, ud, -e);
                    return;
                }
            }
        }
        self.retry_next_turn(fd);
    }

    fn end_accept_quietly(&mut self, fd: RawFd) {
        self.accepting.retain(|a| a.0 != fd);
    }

    fn end_accept(&mut self, fd: RawFd, ud: u64, result: i32) {
        self.end_accept_quietly(fd);
        self.complete(ud, result, false, None);
    }

    fn recv_now(&mut self, fd: RawFd) {
        let Some(ud) = self.socks[fd as usize].recv.map(Ud::get) else {
            return;
        };
        for _ in 0..RECV_BUDGET {
            let Some(buf) = self.bufs.take() else {
                self.socks[fd as usize].recv = None;
                self.complete(ud, -libc::ENOBUFS, false, None);
                return;
            };
            let slot = self.bufs.slot(buf);
            let cap = slot.len();
            // SAFETY: receives at most `cap` bytes into the pool buffer `slot`, which lives
            // in the pool and is not lent out (just taken).
            let n = unsafe { libc::recv(fd, slot.as_mut_ptr().cast(), cap, libc::MSG_DONTWAIT) };
            if n > 0 {
                self.complete(ud, n as i32, true, Some(buf));
                let st = &mut self.socks[fd as usize];
                // A short read of a stream socket emptied it: more data (or the FIN) is a new
                // edge. After an RDHUP, read on until EOF.
                if (n as usize) < cap && !st.rdhup {
                    st.readable = false;
                    return;
                }
                continue;
            }
            self.bufs.put(buf);
            if n == 0 {
                self.socks[fd as usize].recv = None;
                self.complete(ud, 0, false, None);
                return;
            }
            match errno() {
                libc::EAGAIN => {
                    self.socks[fd as usize].readable = false;
                    return;
                }
                libc::EINTR => {}
                e => {
                    self.socks[fd as usize].recv = None;
                    self.complete(ud, -e, false, None);
                    return;
                }
            }
        }
        self.retry_next_turn(fd);
    }

    fn send_now(&mut self, fd: RawFd) {
        let Some((ud, data)) = self.socks[fd as usize].send else {
            return;
        };
        let ud = ud.get();
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        loop {
            let n = match data {
                // SAFETY: the caller of `send` keeps `len` bytes at `ptr` valid until this
                // operation's completion (the trait's contract).
                Prepared::Single { ptr, len } => unsafe {
                    libc::send(fd, ptr.cast(), len as usize, flags)
                },
                // SAFETY: as above for the msghdr, its iovecs and the bytes they point at.
                Prepared::Gathered { msg, .. } => unsafe { libc::sendmsg(fd, msg, flags) },
            };
            if n >= 0 {
                self.socks[fd as usize].send = None;
                self.complete(ud, n as i32, false, None);
                return;
            }
            match errno() {
                libc::EAGAIN => {
                    self.socks[fd as usize].writable = false;
                    return;
                }
                libc::EINTR => {}
                e => {
                    self.socks[fd as usize].send = None;
                    self.complete(ud, -e, false, None);
                    return;
                }
            }
        }
    }

    fn connect_now(&mut self, fd: RawFd) {
        let Some(ud) = self.socks[fd as usize].connect.map(Ud::get) else {
            return;
        };
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `err`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        let result = if rc < 0 {
            -errno()
        } else if err != 0 {
            -err
        } else {
            // Writable without an error: connected, unless the readiness was from before
            // the connect (then the peer is not known yet: wait for the next edge).
            // SAFETY: sockaddr_storage is plain data; getpeername writes at most `alen`
            // bytes into it.
            let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut alen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: as above.
            let rc = unsafe {
                libc::getpeername(
                    fd,
                    (&mut addr as *mut libc::sockaddr_storage).cast(),
                    &mut alen,
                )
            };
            if rc < 0 && errno() == libc::ENOTCONN {
                self.socks[fd as usize].writable = false;
                return;
            }
            0
        };
        self.socks[fd as usize].connect = None;
        self.complete(ud, result, false, None);
    }

    /// Ends every pending operation of `fd` with ECANCELED; how many there were.
    fn cancel_all_of(&mut self, fd: RawFd) -> i32 {
        let mut uds = [None; 5];
        if let Some(st) = self.socks.get_mut(fd as usize) {
            uds[0] = st.recv.take().map(Ud::get);
            uds[1] = st.send.take().map(|(ud, _)| ud.get());
            uds[2] = st.connect.take().map(Ud::get);
        }
        if let Some(i) = self.accepting.iter().position(|a| a.0 == fd) {
            uds[3] = Some(self.accepting.remove(i).1);
        }
        if matches!(self.doorbell, Some((d, _)) if d == fd) {
            uds[4] = self.doorbell.take().map(|(_, ud)| ud);
        }
        let mut n = 0;
        for ud in uds.into_iter().flatten() {
            self.complete(ud, -libc::ECANCELED, false, None);
            n += 1;
        }
        n
    }

    /// The one completion of an operation done at once.
    fn complete_now(&mut self, user_data: u64, result: i32) {
        self.complete(user_data, result, false, None);
    }

    /// Queues an operation (counted in flight now, performed at the next wait).
    fn queue(&mut self, op: Queued, completions: usize) {
        self.inflight += completions;
        self.queued.push(op);
    }

    /// Performs the queued operations, in order.
    fn perform_queued(&mut self) {
        let mut queued = std::mem::take(&mut self.queued_spare);
        std::mem::swap(&mut queued, &mut self.queued);
        for op in queued.drain(..) {
            match op {
                Queued::Accept(l, multishot, ud) => self.perform_accept(l, multishot, ud),
                Queued::Recv(s, ud) => self.perform_recv(s, ud),
                Queued::Send(s, data, ud) => self.perform_send(s, data, ud),
                Queued::ShutdownWrite(s, ud) => self.perform_shutdown_write(s, ud),
                Queued::CancelSock(s, ud) => self.perform_cancel_sock(s, ud),
                Queued::Cancel(target, ud) => self.perform_cancel(target, ud),
                Queued::CancelRecv(s, target, ud) => self.perform_cancel_recv(s, target, ud),
                Queued::CancelAny => self.perform_cancel_any(),
                Queued::Close(s, ud) => self.perform_close(s, ud),
                Queued::Socket(domain, ud) => self.perform_socket(domain, ud),
                // SAFETY: the caller of `connect` keeps the context alive until every one of
                // the connect's completions (the trait's contract).
                Queued::Connect(s, ctx, setup, conn) => unsafe {
                    self.perform_connect(s, &*ctx, setup, conn)
                },
                Queued::LookupPeer(s, ud) => self.perform_lookup_peer(s, ud),
                Queued::Doorbell(fd, ud) => self.perform_read_doorbell(fd, ud),
            }
        }
        self.queued_spare = queued;
    }

    fn perform_cancel_any(&mut self) {
        for fd in 0..self.socks.len() {
            if self.socks[fd].pending() {
                self.cancel_all_of(fd as RawFd);
            }
        }
        while let Some(&(l, _, _)) = self.accepting.first() {
            self.cancel_all_of(l);
        }
        if let Some((d, _)) = self.doorbell {
            self.cancel_all_of(d);
        }
        self.complete_now(0, 0);
    }

    fn perform_accept(&mut self, listener: RawFd, multishot: bool, user_data: u64) {
        if !self.state(listener).registered {
            // SAFETY: fcntl on a descriptor the shard owns; no memory is passed.
            let nonblocking = unsafe {
                let flags = libc::fcntl(listener, libc::F_GETFL);
                flags >= 0 && libc::fcntl(listener, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
            };
            let registered = if nonblocking {
                self.register(listener, false, Interest::Read)
            } else {
                Err(errno())
            };
            if let Err(e) = registered {
                self.complete(user_data, -e, false, None);
                return;
            }
        }
        self.accepting.push((listener, user_data, multishot));
        self.progress(listener);
    }

    fn perform_recv(&mut self, sock: Sock, user_data: u64) {
        let fd = sock.0 as RawFd;
        self.state(fd).recv = Some(ud(user_data));
        self.progress(fd);
    }

    fn perform_send(&mut self, sock: Sock, data: Prepared, user_data: u64) {
        let fd = sock.0 as RawFd;
        self.state(fd).send = Some((ud(user_data), data));
        self.progress(fd);
    }

    fn perform_shutdown_write(&mut self, sock: Sock, user_data: u64) {
        // SAFETY: shutdown(2) takes no memory.
        let r = Self::ret(unsafe { libc::shutdown(sock.0 as RawFd, libc::SHUT_WR) });
        self.complete_now(user_data, r);
    }

    fn perform_cancel_sock(&mut self, sock: Sock, user_data: u64) {
        let n = self.cancel_all_of(sock.0 as RawFd);
        self.complete_now(user_data, if n > 0 { n } else { -libc::ENOENT });
    }

    /// The receive is found through its socket (no search of every socket's state).
    fn perform_cancel_recv(&mut self, sock: Sock, target: u64, user_data: u64) {
        let hit = match self.socks.get_mut(sock.0 as usize) {
            Some(st) if st.recv.map(Ud::get) == Some(target) => {
                st.recv = None;
                true
            }
            _ => false,
        };
        if hit {
            self.complete(target, -libc::ECANCELED, false, None);
        }
        self.complete_now(user_data, if hit { 1 } else { -libc::ENOENT });
    }

    fn perform_cancel(&mut self, target: u64, user_data: u64) {
        let mut n = 0;
        if let Some(i) = self.accepting.iter().position(|a| a.1 == target) {
            self.accepting.remove(i);
            self.complete(target, -libc::ECANCELED, false, None);
            n += 1;
        }
        if matches!(self.doorbell, Some((_, ud)) if ud == target) {
            self.doorbell = None;
            self.complete(target, -libc::ECANCELED, false, None);
            n += 1;
        }
        let hit = NonZeroU64::new(target).and_then(|t| {
            self.socks.iter_mut().find_map(|s| {
                let mut hit = false;
                if s.recv == Some(t) {
                    s.recv = None;
                    hit = true;
                }
                if s.connect == Some(t) {
                    s.connect = None;
                    hit = true;
                }
                if matches!(s.send, Some((ud, _)) if ud == t) {
                    s.send = None;
                    hit = true;
                }
                hit.then_some(t)
            })
        });
        if let Some(t) = hit {
            self.complete(t.get(), -libc::ECANCELED, false, None);
            n += 1;
        }
        self.complete_now(user_data, if n > 0 { n } else { -libc::ENOENT });
    }

    fn perform_close(&mut self, sock: Sock, user_data: u64) {
        let fd = sock.0 as RawFd;
        // The caller closes only sockets with nothing in flight; be safe anyway.
        self.cancel_all_of(fd);
        if let Some(st) = self.socks.get_mut(fd as usize) {
            if st.registered {
                st.registered = false;
                // SAFETY: removes `fd` from our epoll instance; no memory is passed (a null
                // event is allowed for EPOLL_CTL_DEL since Linux 2.6.9).
                unsafe {
                    libc::epoll_ctl(
                        self.ep.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd,
                        std::ptr::null_mut(),
                    )
                };
            }
        }
        // SAFETY: the shard owns `fd` and names it nowhere after this close.
        let r = Self::ret(unsafe { libc::close(fd) });
        self.complete_now(user_data, r);
    }

    fn perform_socket(&mut self, domain: i32, user_data: u64) {
        // SAFETY: socket(2) takes no memory.
        let r = Self::ret(unsafe {
            libc::socket(
                domain,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        });
        self.complete_now(user_data, r);
    }

    unsafe fn perform_connect(
        &mut self,
        sock: Sock,
        ctx: &ConnectCtx,
        setup_ud: u64,
        connect_ud: u64,
    ) {
        let fd = sock.0 as RawFd;
        // SAFETY: setsockopt reads the i32 `ctx.one`, which the caller keeps alive.
        let r = Self::ret(unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&ctx.one as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        });
        let mut failed = r < 0;
        self.complete_now(setup_ud, r);
        if let Some(b) = &ctx.bind {
            let r = if failed {
                -libc::ECANCELED
            } else {
                // SAFETY: `b` is a valid socket address of `b.len()` bytes.
                Self::ret(unsafe { libc::bind(fd, b.as_ptr().cast(), b.len()) })
            };
            failed |= r < 0;
            self.complete_now(setup_ud, r);
        }
        if failed {
            self.complete_now(connect_ud, -libc::ECANCELED);
            return;
        }
        // SAFETY: `ctx.addr` is a valid socket address of `len()` bytes.
        let rc = unsafe { libc::connect(fd, ctx.addr.as_ptr().cast(), ctx.addr.len()) };
        let e = if rc < 0 { errno() } else { 0 };
        if rc == 0 || e != libc::EINPROGRESS {
            self.complete_now(connect_ud, -e);
            if rc == 0 {
                let _ = self.register(fd, true, Interest::Socket);
            }
            return;
        }
        if let Err(e) = self.register(fd, true, Interest::Socket) {
            self.complete(connect_ud, -e, false, None);
            return;
        }
        let st = self.state(fd);
        st.connect = Some(ud(connect_ud));
        // Wait for the connect's own edge.
        st.writable = false;
    }

    fn perform_lookup_peer(&mut self, sock: Sock, user_data: u64) {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no memory; the new descriptor goes to the
        // caller (the completion's contract).
        let r = Self::ret(unsafe { libc::fcntl(sock.0 as RawFd, libc::F_DUPFD_CLOEXEC, 0) });
        self.complete_now(user_data, r);
    }

    fn perform_read_doorbell(&mut self, eventfd: RawFd, user_data: u64) {
        if let Err(e) = self.register(eventfd, false, Interest::Read) {
            self.complete(user_data, -e, false, None);
            return;
        }
        self.doorbell = Some((eventfd, user_data));
        self.progress(eventfd);
    }

    fn ret(rc: libc::c_int) -> i32 {
        if rc < 0 {
            -errno()
        } else {
            rc
        }
    }
}

impl Drop for EpollDriver {
    fn drop(&mut self) {
        // Nothing is owned by the kernel here: receives and sends are done synchronously, so
        // buffers and payloads are free to go.
        if self.inflight > 0 {
            tracing::debug!(
                inflight = self.inflight,
                "epoll driver dropped with operations pending"
            );
        }
    }
}

impl Driver for EpollDriver {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn descriptor_tables(&self) -> usize {
        0
    }

    fn accept_room(&mut self, _rechoose: bool) -> usize {
        usize::MAX
    }

    /// The driver accepts at most [`ACCEPT_BUDGET`] sockets per wait itself.
    fn accept_headroom(&self) -> usize {
        MULTISHOT_HEADROOM
    }

    fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    fn accept(&mut self, listener: RawFd, multishot: bool, user_data: u64) {
        self.queue(Queued::Accept(listener, multishot, user_data), 1);
    }

    fn recv(&mut self, sock: Sock, user_data: u64) {
        self.queue(Queued::Recv(sock, user_data), 1);
    }

    unsafe fn send(&mut self, sock: Sock, data: Prepared, user_data: u64) {
        self.queue(Queued::Send(sock, data, user_data), 1);
    }

    fn shutdown_write(&mut self, sock: Sock, user_data: u64) {
        self.queue(Queued::ShutdownWrite(sock, user_data), 1);
    }

    fn cancel_sock(&mut self, sock: Sock, user_data: u64) {
        self.queue(Queued::CancelSock(sock, user_data), 1);
    }

    fn cancel(&mut self, target: u64, user_data: u64) {
        self.queue(Queued::Cancel(target, user_data), 1);
    }

    fn cancel_recv(&mut self, sock: Sock, target: u64, user_data: u64) {
        self.queue(Queued::CancelRecv(sock, target, user_data), 1);
    }

    fn close(&mut self, sock: Sock, user_data: u64) {
        self.queue(Queued::Close(sock, user_data), 1);
    }

    fn socket(&mut self, domain: i32, user_data: u64) {
        self.queue(Queued::Socket(domain, user_data), 1);
    }

    unsafe fn connect(&mut self, sock: Sock, ctx: &ConnectCtx, setup_ud: u64, connect_ud: u64) {
        let completions = 2 + usize::from(ctx.bind.is_some());
        self.queue(
            Queued::Connect(sock, ctx, setup_ud, connect_ud),
            completions,
        );
    }

    fn lookup_peer(&mut self, sock: Sock, user_data: u64) {
        self.queue(Queued::LookupPeer(sock, user_data), 1);
    }

    fn read_doorbell(&mut self, eventfd: RawFd, user_data: u64) {
        self.queue(Queued::Doorbell(eventfd, user_data), 1);
    }

    /// One `epoll_wait` (not blocking when completions or retries are waiting), then the
    /// attempts the reported readiness allows.
    fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.perform_queued();
        let ms = if !self.done.is_empty() || !self.again.is_empty() || !self.queued.is_empty() {
            0
        } else {
            match timeout {
                // Rounded up: waking before a timer is due would only spin.
                Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
                None => -1,
            }
        };
        self.waits += 1;
        // SAFETY: `events` is a live buffer of `len` entries the kernel writes into.
        let n = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(e);
        }
        let mut retry = std::mem::take(&mut self.again_spare);
        std::mem::swap(&mut retry, &mut self.again);
        for fd in retry.drain(..) {
            if let Some(st) = self.socks.get_mut(fd as usize) {
                st.again = false;
                self.progress(fd);
            }
        }
        self.again_spare = retry;
        for i in 0..n as usize {
            let ev = self.events[i];
            let (fd, gen) = (ev.u64 as u32 as RawFd, (ev.u64 >> 32) as u16);
            let Some(st) = self.socks.get_mut(fd as usize) else {
                continue;
            };
            if !st.registered || st.gen != gen {
                continue; // the descriptor's previous socket
            }
            let bits = ev.events as i32;
            let broken = bits & (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) != 0;
            st.readable |= bits & libc::EPOLLIN != 0 || broken;
            st.writable |=
                bits & libc::EPOLLOUT != 0 || bits & (libc::EPOLLHUP | libc::EPOLLERR) != 0;
            st.rdhup |= broken;
            let ours = st.pending()
                || self.accepting.iter().any(|a| a.0 == fd)
                || matches!(self.doorbell, Some((d, _)) if d == fd);
            if ours {
                self.progress(fd);
            }
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<Completion>) {
        let finished = self.done.iter().filter(|c| !c.more).count();
        self.inflight = self.inflight.saturating_sub(finished);
        out.append(&mut self.done);
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    fn cancel_any(&mut self) {
        self.queue(Queued::CancelAny, 1);
    }

    unsafe fn buffer<'a>(&self, buf: RecvBuf, len: usize) -> &'a [u8] {
        let b = self.bufs.get(buf, len);
        // SAFETY: the buffer is boxed (it does not move when the pool grows) and is not
        // written until it is recycled; the caller drops the slice before `recycle`.
        unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) }
    }

    fn recycle(&mut self, buf: RecvBuf) {
        self.bufs.put(buf);
    }

    fn publish_buffers(&mut self) {}

    /// A receive here reads only on readiness and returns its buffer to the pool before the
    /// next read, so the pool runs short only while a handler holds buffers: nothing to ration.
    fn reserve_recv_buffer(&mut self, _sock: Sock) -> bool {
        true
    }

    /// `epoll_wait` calls; a readiness backend has no completion queue to overflow.
    fn kernel_counters(&self) -> KernelCounters {
        KernelCounters {
            enters: self.waits,
            cq_overflows: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EpollDriver, SockState};
    use crate::sys::{Completion, Driver};
    use crate::EngineConfig;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    /// A doorbell read wakes the shard's wait once per ring: reading the eventfd (which makes
    /// it writable again) must not wake the next wait. It did when the eventfd was registered
    /// for writability too: each read queued an EPOLLOUT edge, so the wait after a doorbell
    /// returned at once, and a sleeping shard took an extra turn in which it drained posts
    /// meant to wait for a batch's ring (`tests/timers_inbox.rs`,
    /// `a_doorbell_batch_wakes_a_sleeping_shard_once_for_many_posts`).
    #[test]
    fn reading_the_doorbell_does_not_wake_the_next_wait() {
        let mut d = EpollDriver::new(&EngineConfig::default()).expect("epoll driver");
        // SAFETY: eventfd takes no memory; the result is checked and owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let bell = unsafe { OwnedFd::from_raw_fd(fd) };
        let ring = || {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            let n = unsafe { libc::write(bell.as_raw_fd(), (&one as *const u64).cast(), 8) };
            assert_eq!(n, 8);
        };
        let mut out: Vec<Completion> = Vec::new();
        // Armed while nothing rang (as a shard's first turn): the read meets EAGAIN.
        d.read_doorbell(bell.as_raw_fd(), 1);
        d.submit_and_wait(Some(Duration::ZERO)).unwrap();
        d.drain(&mut out);
        assert!(out.is_empty());
        // A ring while the driver waits: the wait reports it, and the read completes.
        ring();
        d.submit_and_wait(Some(Duration::from_secs(10))).unwrap();
        d.drain(&mut out);
        assert_eq!(out.len(), 1, "the ring completes the doorbell read");
        assert_eq!((out[0].user_data, out[0].result), (1, 8));
        out.clear();
        // Re-armed (as the shard does): nothing rang since, so the wait sleeps its timeout.
        d.read_doorbell(bell.as_raw_fd(), 2);
        let started = Instant::now();
        d.submit_and_wait(Some(Duration::from_millis(300))).unwrap();
        let slept = started.elapsed();
        d.drain(&mut out);
        assert!(out.is_empty(), "nothing rang: {out:?}");
        assert!(
            slept >= Duration::from_millis(250),
            "the wait after a doorbell read returned after {slept:?}: woken by the read itself"
        );
    }

    /// The driver keeps one `SockState` per descriptor number up to the highest in use, so
    /// its size is per-connection heap on epoll (docs/benchmarks.md, "epoll's extra bytes").
    #[test]
    fn sock_state_stays_small() {
        let size = std::mem::size_of::<SockState>();
        assert!(size <= 48, "SockState is {size} bytes");
    }
}
