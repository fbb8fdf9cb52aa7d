//! The fake backend: a deterministic, socket-free model of the [`Driver`] contract for tests
//! (see [`crate::testing`]). Nothing happens on its own: a test scripts what the "kernel"
//! does (a peer connects, sends bytes, closes, resets; a send is short or fails) and the
//! fake turns that into the completions the contract allows, when the shard next waits.
//!
//! The model, per operation:
//! - accept: takes connections from the fake backlog (single: one, then ends; multishot: up
//!   to `MULTISHOT_HEADROOM / 2` per wait, never ending on its own);
//! - receive: multishot over what the peer sent, split into receive buffers of
//!   `recv_buffer_size`; ends with 0 at the peer's FIN, `-errno` at a scripted error,
//!   `-ENOBUFS` when all `recv_buffers` are lent out;
//! - send: completes with the scripted [`SendOutcome`], else in full, unless sends are held
//!   (then it stays in flight until the test scripts an outcome);
//! - shutdown, close, socket, connect setup: complete at once with success; peer lookup
//!   with `-ENOTSOCK` (the shard then announces the connection without an address);
//! - cancel: ends the targeted operations with `-ECANCELED` first, then itself;
//! - the doorbell read never completes (the shard checks its inbox every turn anyway).
//!
//! Socket numbers are handed out lowest-free-first, like a descriptor table, so a closed
//! socket's number is reused by the next connection. Closing a socket that still has an
//! operation in flight breaks the contract and is recorded as a violation.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Completion, Driver, RecvBuf, Sock};
use crate::conn::ConnectCtx;
use crate::id::{unpack, Op};
use crate::sendq::Prepared;
use crate::EngineConfig;

/// A socket of the fake backend, numbered like a descriptor table (lowest free first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FakeSock(pub u32);

/// An operation the shard issued to the fake backend, in issue order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FakeOp {
    /// Accept on the listener, one connection or multishot.
    Accept {
        /// Keeps accepting until cancelled.
        multishot: bool,
    },
    /// Multishot receive on a socket.
    Recv(FakeSock),
    /// A send (one in flight per socket): the bytes and the queue chunks they came from
    /// (1: a plain send; more: a gathered `sendmsg`).
    Send {
        /// The socket.
        sock: FakeSock,
        /// The bytes offered to the kernel.
        data: Vec<u8>,
        /// Chunks gathered into this send.
        chunks: usize,
    },
    /// Our FIN.
    ShutdownWrite(FakeSock),
    /// Cancel every operation on a socket.
    CancelSock(FakeSock),
    /// Cancel the armed accept.
    CancelAccept,
    /// Cancel of some other operation by its `user_data`.
    Cancel,
    /// Cancel of a socket's receive (a pause).
    CancelRecv(FakeSock),
    /// Close a socket (its number may be reused from the close's completion on).
    Close(FakeSock),
    /// Create an outbound socket.
    Socket,
    /// Connect an outbound socket.
    Connect(FakeSock),
    /// Look up a socket's peer.
    LookupPeer(FakeSock),
    /// Arm the doorbell read.
    ReadDoorbell,
    /// Cancel everything (shard exit).
    CancelAll,
}

/// What the fake kernel does with a send in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Takes at most this many bytes (a short write when fewer than offered; 0 is like
    /// EAGAIN on a readiness backend: nothing went, the shard sends again).
    Accept(usize),
    /// Fails with this errno.
    Fail(i32),
}

/// What a peer did that the receive side sees.
enum Inbound {
    Data(Vec<u8>),
    Fin,
    Error(i32),
}

#[derive(Default)]
struct SockState {
    open: bool,
    inbound: VecDeque<Inbound>,
    sends: VecDeque<SendOutcome>,
    /// Bytes the peer received (what our sends delivered), in order.
    delivered: Vec<u8>,
    fin_sent: bool,
    /// The result the next connect on this socket completes with.
    connect_result: i32,
}

#[derive(Clone, Debug)]
enum Kind {
    Accept { multishot: bool },
    Recv,
    Send(Vec<u8>),
    Shutdown,
    CancelSock,
    Cancel(u64),
    Close,
    Socket,
    Setup,
    Connect,
    LookupPeer,
    Doorbell,
    CancelAll,
}

struct Pending {
    ud: u64,
    kind: Kind,
    sock: u32,
}

/// The fake kernel's state, shared by the [`FakeDriver`] (the shard's side) and the test
/// (through [`crate::testing::FakeShard::kernel`]).
pub struct FakeKernel {
    log: Vec<FakeOp>,
    /// Queued since the last wait, performed in order at the next one.
    queued: Vec<Pending>,
    /// Started and waiting for something (accept, receive, held send, doorbell).
    pending: Vec<Pending>,
    ready: VecDeque<Completion>,
    /// Receive completions' bytes, parallel to `ready` entries that carry data.
    ready_data: VecDeque<Vec<u8>>,
    backlog: usize,
    socks: Vec<SockState>,
    hold_sends: bool,
    violations: Vec<String>,
    /// Operations queued whose last completion was not drained.
    inflight: usize,
}

impl FakeKernel {
    fn new() -> FakeKernel {
        FakeKernel {
            log: Vec::new(),
            queued: Vec::new(),
            pending: Vec::new(),
            ready: VecDeque::new(),
            ready_data: VecDeque::new(),
            backlog: 0,
            socks: Vec::new(),
            hold_sends: false,
            violations: Vec::new(),
            inflight: 0,
        }
    }

    /// A peer connects: one more connection waits in the listen backlog.
    pub fn incoming(&mut self) {
        self.backlog += 1;
    }

    /// The armed accept takes one connection from the backlog now, ahead of the operations
    /// the shard queued since its last wait: the kernel may complete a multishot accept
    /// between two turns, before it sees a cancel the shard queued. The connection's socket,
    /// or `None` when no accept is armed or the backlog is empty.
    pub fn accept_now(&mut self) -> Option<FakeSock> {
        if self.backlog == 0 {
            return None;
        }
        let i = self
            .pending
            .iter()
            .position(|p| matches!(p.kind, Kind::Accept { .. }))?;
        let Kind::Accept { multishot } = self.pending[i].kind else {
            unreachable!("found as an accept")
        };
        let ud = self.pending[i].ud;
        if !multishot {
            self.pending.remove(i);
        }
        self.backlog -= 1;
        let sock = self.alloc_sock();
        self.complete(ud, sock as i32, multishot);
        Some(FakeSock(sock))
    }

    /// Connections waiting in the backlog (not yet accepted).
    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// The peer of `sock` sends `data`.
    pub fn peer_sends(&mut self, sock: FakeSock, data: &[u8]) {
        self.sock(sock)
            .inbound
            .push_back(Inbound::Data(data.to_vec()));
    }

    /// The peer of `sock` sends its FIN.
    pub fn peer_fin(&mut self, sock: FakeSock) {
        self.sock(sock).inbound.push_back(Inbound::Fin);
    }

    /// The receive on `sock` fails with `errno` (e.g. `ECONNRESET`).
    pub fn peer_error(&mut self, sock: FakeSock, errno: i32) {
        self.sock(sock).inbound.push_back(Inbound::Error(errno));
    }

    /// The next send on `sock` ends with `outcome` (scripts queue up, one per send).
    pub fn script_send(&mut self, sock: FakeSock, outcome: SendOutcome) {
        self.sock(sock).sends.push_back(outcome);
    }

    /// Sends without a scripted outcome stay in flight (`true`) or complete in full
    /// (`false`, the default).
    pub fn hold_sends(&mut self, hold: bool) {
        self.hold_sends = hold;
    }

    /// The next connect on `sock` completes with `-errno` (0: success).
    pub fn script_connect(&mut self, sock: FakeSock, errno: i32) {
        self.sock(sock).connect_result = -errno;
    }

    /// The bytes `sock`'s peer has received so far.
    pub fn delivered(&self, sock: FakeSock) -> &[u8] {
        self.socks
            .get(sock.0 as usize)
            .map(|s| s.delivered.as_slice())
            .unwrap_or(&[])
    }

    /// Whether our FIN went out on `sock` (since it was last opened).
    pub fn fin_sent(&self, sock: FakeSock) -> bool {
        self.socks.get(sock.0 as usize).is_some_and(|s| s.fin_sent)
    }

    /// Whether `sock` is open (accepted or created, not closed).
    pub fn is_open(&self, sock: FakeSock) -> bool {
        self.socks.get(sock.0 as usize).is_some_and(|s| s.open)
    }

    /// Every operation issued so far, in order.
    pub fn ops(&self) -> &[FakeOp] {
        &self.log
    }

    /// Takes the operations issued so far (the log starts empty again).
    pub fn take_ops(&mut self) -> Vec<FakeOp> {
        std::mem::take(&mut self.log)
    }

    /// Contract breaches seen (a socket closed with operations in flight on it).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Operations issued whose last completion has not been handed to the shard.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Sends in flight on `sock` (held, waiting for a scripted outcome).
    pub fn sends_in_flight(&self, sock: FakeSock) -> usize {
        self.pending
            .iter()
            .filter(|p| p.sock == sock.0 && matches!(p.kind, Kind::Send(_)))
            .count()
    }

    fn sock(&mut self, sock: FakeSock) -> &mut SockState {
        let i = sock.0 as usize;
        if self.socks.len() <= i {
            self.socks.resize_with(i + 1, SockState::default);
        }
        &mut self.socks[i]
    }

    fn alloc_sock(&mut self) -> u32 {
        let i = match self.socks.iter().position(|s| !s.open) {
            Some(i) => i,
            None => {
                self.socks.push(SockState::default());
                self.socks.len() - 1
            }
        };
        self.socks[i] = SockState {
            open: true,
            ..SockState::default()
        };
        i as u32
    }

    fn queue(&mut self, ud: u64, kind: Kind, sock: u32, logged: FakeOp) {
        self.log.push(logged);
        self.inflight += 1;
        self.queued.push(Pending { ud, kind, sock });
    }

    fn complete(&mut self, ud: u64, result: i32, more: bool) {
        self.ready.push_back(Completion {
            user_data: ud,
            result,
            more,
            buf: None,
        });
    }

    /// Ends every started operation `matches` selects with `-ECANCELED`; how many.
    fn cancel_where(&mut self, matches: impl Fn(&Pending) -> bool) -> usize {
        let (hit, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| matches(p));
        self.pending = kept;
        for p in &hit {
            self.complete(p.ud, -libc::ECANCELED, false);
        }
        hit.len()
    }

    /// Performs the queued operations in order, then lets the started ones progress.
    fn progress(&mut self, bufs: &mut Buffers) {
        for p in std::mem::take(&mut self.queued) {
            match p.kind {
                Kind::Shutdown => {
                    self.sock(FakeSock(p.sock)).fin_sent = true;
                    self.complete(p.ud, 0, false);
                }
                Kind::CancelSock => {
                    let n = self.cancel_where(|q| q.sock == p.sock && q.sock != u32::MAX);
                    self.complete(p.ud, if n > 0 { 0 } else { -libc::ENOENT }, false);
                }
                Kind::Cancel(target) => {
                    let n = self.cancel_where(|q| q.ud == target);
                    self.complete(p.ud, if n > 0 { 0 } else { -libc::ENOENT }, false);
                }
                Kind::CancelAll => {
                    self.cancel_where(|_| true);
                    self.complete(p.ud, 0, false);
                }
                Kind::Close => {
                    let busy = self.pending.iter().filter(|q| q.sock == p.sock).count();
                    if busy > 0 {
                        self.violations.push(format!(
                            "socket {} closed with {busy} operation(s) in flight on it",
                            p.sock
                        ));
                    }
                    let s = self.sock(FakeSock(p.sock));
                    let was_open = std::mem::replace(&mut s.open, false);
                    if !was_open {
                        self.violations
                            .push(format!("socket {} closed twice", p.sock));
                    }
                    self.complete(p.ud, 0, false);
                }
                Kind::Socket => {
                    let sock = self.alloc_sock();
                    self.complete(p.ud, sock as i32, false);
                }
                Kind::Setup => self.complete(p.ud, 0, false),
                Kind::Connect => {
                    let r = self.sock(FakeSock(p.sock)).connect_result;
                    self.complete(p.ud, r, false);
                }
                Kind::LookupPeer => self.complete(p.ud, -libc::ENOTSOCK, false),
                Kind::Accept { .. } | Kind::Recv | Kind::Send(_) | Kind::Doorbell => {
                    self.pending.push(p)
                }
            }
        }
        for p in std::mem::take(&mut self.pending) {
            if !self.advance(&p, bufs) {
                self.pending.push(p);
            }
        }
    }

    /// Lets started operation `p` progress; true when it ended.
    fn advance(&mut self, p: &Pending, bufs: &mut Buffers) -> bool {
        let (ud, sock) = (p.ud, p.sock);
        match &p.kind {
            Kind::Accept { multishot } => {
                let multishot = *multishot;
                let mut taken = 0;
                while self.backlog > 0 && taken < crate::core::MULTISHOT_HEADROOM / 2 {
                    self.backlog -= 1;
                    taken += 1;
                    let s = self.alloc_sock();
                    self.complete(ud, s as i32, multishot);
                    if !multishot {
                        return true;
                    }
                }
                false
            }
            Kind::Recv => loop {
                let st = self.sock(FakeSock(sock));
                match st.inbound.pop_front() {
                    None => return false,
                    Some(Inbound::Fin) => {
                        self.complete(ud, 0, false);
                        return true;
                    }
                    Some(Inbound::Error(e)) => {
                        self.complete(ud, -e, false);
                        return true;
                    }
                    Some(Inbound::Data(mut data)) => {
                        let Some(buf) = bufs.take() else {
                            st.inbound.push_front(Inbound::Data(data));
                            self.complete(ud, -libc::ENOBUFS, false);
                            return true;
                        };
                        let n = data.len().min(bufs.size);
                        let rest = data.split_off(n);
                        if !rest.is_empty() {
                            st.inbound.push_front(Inbound::Data(rest));
                        }
                        self.ready.push_back(Completion {
                            user_data: ud,
                            result: n as i32,
                            more: true,
                            buf: Some(buf),
                        });
                        self.ready_data.push_back(data);
                    }
                }
            },
            Kind::Send(data) => {
                let len = data.len();
                let hold = self.hold_sends;
                let outcome = match self.sock(FakeSock(sock)).sends.pop_front() {
                    Some(o) => o,
                    None if hold => return false,
                    None => SendOutcome::Accept(len),
                };
                let result = match outcome {
                    SendOutcome::Accept(n) => {
                        let n = n.min(len);
                        self.sock(FakeSock(sock))
                            .delivered
                            .extend_from_slice(&data[..n]);
                        n as i32
                    }
                    SendOutcome::Fail(e) => -e,
                };
                self.complete(ud, result, false);
                true
            }
            Kind::Doorbell => false,
            _ => true,
        }
    }
}

/// The fake's receive buffers: lent by a receive completion, free again after
/// `publish_buffers` once recycled (as on io_uring's buffer ring).
struct Buffers {
    size: usize,
    mem: Vec<Box<[u8]>>,
    free: Vec<u32>,
    recycled: Vec<u32>,
    /// Free buffers set aside for re-armed receives since the last publish.
    reserved: usize,
}

impl Buffers {
    fn take(&mut self) -> Option<RecvBuf> {
        self.free.pop().map(RecvBuf)
    }
}

/// The shard's side of the fake backend.
pub(crate) struct FakeDriver {
    kernel: Arc<Mutex<FakeKernel>>,
    bufs: Buffers,
}

impl FakeDriver {
    /// A driver and the kernel state a test scripts.
    pub fn new(cfg: &EngineConfig) -> (FakeDriver, Arc<Mutex<FakeKernel>>) {
        let kernel = Arc::new(Mutex::new(FakeKernel::new()));
        let count = cfg.recv_buffers.max(1) as usize;
        let size = cfg.recv_buffer_size.max(1) as usize;
        let driver = FakeDriver {
            kernel: kernel.clone(),
            bufs: Buffers {
                size,
                mem: (0..count)
                    .map(|_| vec![0; size].into_boxed_slice())
                    .collect(),
                free: (0..count as u32).rev().collect(),
                recycled: Vec::new(),
                reserved: 0,
            },
        };
        (driver, kernel)
    }

    fn k(&self) -> MutexGuard<'_, FakeKernel> {
        lock(&self.kernel)
    }

    /// Queues an operation on `sock`, logged as `logged(sock)`.
    fn queue_on(&self, sock: Sock, user_data: u64, kind: Kind, logged: fn(FakeSock) -> FakeOp) {
        self.k()
            .queue(user_data, kind, sock.0, logged(FakeSock(sock.0)));
    }
}

/// Locks the fake kernel (a test that panicked while holding it leaves it usable).
pub(crate) fn lock(kernel: &Mutex<FakeKernel>) -> MutexGuard<'_, FakeKernel> {
    kernel.lock().unwrap_or_else(|p| p.into_inner())
}

impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn failed(&self) -> Option<&io::Error> {
        None
    }

    /// No descriptor table is modelled: sockets are plain numbers, limited only by the
    /// engine's slot cap (as on epoll).
    fn descriptor_tables(&self) -> usize {
        0
    }

    fn accept_room(&mut self, _rechoose: bool) -> usize {
        usize::MAX
    }

    /// The fake accepts at most half of it per wait.
    fn accept_headroom(&self) -> usize {
        crate::core::MULTISHOT_HEADROOM
    }

    fn accept(&mut self, _listener: RawFd, multishot: bool, user_data: u64) {
        self.k().queue(
            user_data,
            Kind::Accept { multishot },
            u32::MAX,
            FakeOp::Accept { multishot },
        );
    }

    fn recv(&mut self, sock: Sock, user_data: u64) {
        self.queue_on(sock, user_data, Kind::Recv, FakeOp::Recv);
    }

    unsafe fn send(&mut self, sock: Sock, data: Prepared, user_data: u64) {
        let (bytes, chunks) = match data {
            // SAFETY: the caller guarantees `ptr` points at `len` readable bytes until this
            // operation completes; they are copied here, before this call returns.
            Prepared::Single { ptr, len } => (
                unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec(),
                1,
            ),
            Prepared::Gathered { msg, chunks, .. } => {
                let mut out = Vec::new();
                // SAFETY: the caller guarantees the `msghdr`, its iovec array and every chunk
                // it points at stay valid until this operation completes; they are only read,
                // and only here, before this call returns.
                unsafe {
                    let msg = &*msg;
                    let iovs = std::slice::from_raw_parts(msg.msg_iov, msg.msg_iovlen);
                    for iov in iovs {
                        out.extend_from_slice(std::slice::from_raw_parts(
                            iov.iov_base as *const u8,
                            iov.iov_len,
                        ));
                    }
                }
                (out, chunks as usize)
            }
        };
        let logged = FakeOp::Send {
            sock: FakeSock(sock.0),
            data: bytes.clone(),
            chunks,
        };
        self.k().queue(user_data, Kind::Send(bytes), sock.0, logged);
    }

    fn shutdown_write(&mut self, sock: Sock, user_data: u64) {
        self.queue_on(sock, user_data, Kind::Shutdown, FakeOp::ShutdownWrite);
    }

    fn cancel_sock(&mut self, sock: Sock, user_data: u64) {
        self.queue_on(sock, user_data, Kind::CancelSock, FakeOp::CancelSock);
    }

    fn cancel(&mut self, target: u64, user_data: u64) {
        let logged = match unpack(target) {
            Some((Op::Accept, _, _)) => FakeOp::CancelAccept,
            _ => FakeOp::Cancel,
        };
        self.k()
            .queue(user_data, Kind::Cancel(target), u32::MAX, logged);
    }

    fn cancel_recv(&mut self, sock: Sock, target: u64, user_data: u64) {
        self.queue_on(sock, user_data, Kind::Cancel(target), FakeOp::CancelRecv);
    }

    fn close(&mut self, sock: Sock, user_data: u64) {
        self.queue_on(sock, user_data, Kind::Close, FakeOp::Close);
    }

    fn socket(&mut self, _domain: i32, user_data: u64) {
        self.k()
            .queue(user_data, Kind::Socket, u32::MAX, FakeOp::Socket);
    }

    unsafe fn connect(&mut self, sock: Sock, ctx: &ConnectCtx, setup_ud: u64, connect_ud: u64) {
        let mut k = self.k();
        // One setup completion (TCP_NODELAY), two with a bind; then the connect.
        let setups = if ctx.bind.is_some() { 2 } else { 1 };
        for _ in 0..setups {
            k.inflight += 1;
            k.queued.push(Pending {
                ud: setup_ud,
                kind: Kind::Setup,
                sock: sock.0,
            });
        }
        k.queue(
            connect_ud,
            Kind::Connect,
            sock.0,
            FakeOp::Connect(FakeSock(sock.0)),
        );
    }

    fn lookup_peer(&mut self, sock: Sock, user_data: u64) {
        self.queue_on(sock, user_data, Kind::LookupPeer, FakeOp::LookupPeer);
    }

    fn read_doorbell(&mut self, _eventfd: RawFd, user_data: u64) {
        self.k()
            .queue(user_data, Kind::Doorbell, u32::MAX, FakeOp::ReadDoorbell);
    }

    fn submit_and_wait(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        // Virtual time: the harness decides when a turn happens and what `now` it sees, so
        // the wait never blocks.
        let kernel = self.kernel.clone();
        let mut k = lock(&kernel);
        k.progress(&mut self.bufs);
        // Receive bytes go into the buffers their completions name.
        let mut data = std::mem::take(&mut k.ready_data);
        for c in k.ready.iter() {
            if let Some(b) = c.buf {
                if let Some(d) = data.pop_front() {
                    self.bufs.mem[b.0 as usize][..d.len()].copy_from_slice(&d);
                }
            }
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<Completion>) {
        let mut k = self.k();
        while let Some(c) = k.ready.pop_front() {
            if !c.more {
                k.inflight -= 1;
            }
            out.push(c);
        }
    }

    fn inflight(&self) -> usize {
        self.k().inflight
    }

    fn cancel_any(&mut self) {
        self.k()
            .queue(0, Kind::CancelAll, u32::MAX, FakeOp::CancelAll);
    }

    unsafe fn buffer<'a>(&self, buf: RecvBuf, len: usize) -> &'a [u8] {
        let b = &self.bufs.mem[buf.0 as usize][..len];
        // SAFETY: the buffer is boxed (it does not move when `mem` grows, and `mem` never
        // does) and is not written until it is recycled and published; the caller drops the
        // slice before `recycle`.
        unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) }
    }

    fn recycle(&mut self, buf: RecvBuf) {
        self.bufs.recycled.push(buf.0);
    }

    fn publish_buffers(&mut self) {
        self.bufs.free.append(&mut self.bufs.recycled);
        self.bufs.reserved = 0;
    }

    fn reserve_recv_buffer(&mut self, _sock: Sock) -> bool {
        let b = &mut self.bufs;
        let free = b.reserved < b.free.len();
        b.reserved += usize::from(free);
        free
    }
}
