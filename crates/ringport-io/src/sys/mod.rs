//! Platform code behind one contract, [`Driver`]: the operation set a shard uses (arm accept,
//! arm receive, gathered send, shutdown, cancel, close, socket/connect, peer lookup, doorbell,
//! wait, drain completions, borrow/recycle a receive buffer), in the engine's own types.
//!
//! Two backends implement it:
//! - `uring/`: io_uring. Operations are queued as SQEs and performed by the kernel; sockets
//!   are direct descriptors (a per-ring table), receives come from a provided-buffer ring.
//! - `epoll/`: readiness. Operations are queued in the driver and performed by the driver
//!   itself (`accept4`, `recv`, `sendmsg`, ...) when edge-triggered epoll says the socket is
//!   ready; the results are reported as the same completions. Sockets live in the process
//!   fd table.
//!
//! # The contract a backend provides (what the shard relies on)
//!
//! - **Completions.** Every queued operation carries a caller-chosen `user_data` and ends with
//!   exactly one completion whose [`Completion::more`] is false (its *last* completion);
//!   multishot operations (accept with `multishot`, receive) may deliver any number of
//!   completions with `more` set before it. A completion's `result` is the operation's value
//!   (bytes, a [`Sock`], 0) or a negated errno; a cancelled operation ends with `-ECANCELED`.
//!   Nothing is reported for an operation before the [`Driver::submit_and_wait`] that follows
//!   its queueing, and [`Driver::drain`] hands completions out in the order they happened.
//! - **Accounting.** [`Driver::inflight`] counts operations queued and not yet ended; an
//!   operation queued with `user_data` 0 is internal (cancel targets, closes of refused
//!   sockets) and its completion may be dropped by the shard.
//! - **Tables.** A backend may spread sockets over several descriptor tables (io_uring: one
//!   ring per registered table, since the kernel caps a table at RLIMIT_NOFILE). It picks
//!   the table an accept or socket fills; the shard asks [`Driver::accept_room`] so that an
//!   armed multishot accept never meets a full table. Completions keep their order per
//!   socket (all of a socket's operations go to its table's ring), not across tables.
//! - **Sockets.** A [`Sock`] is whatever the backend names a connection's socket with; it is
//!   valid from the completion that produced it (accept, socket) until the completion of its
//!   [`Driver::close`], after which the backend may hand the same value out again. The caller
//!   closes a socket only when no operation on it is in flight (see "Connection lifetime" in
//!   docs/architecture.md), so an operation can never act on a reused `Sock`.
//! - **Receive buffers.** A receive completion with `result > 0` carries a [`RecvBuf`] the
//!   caller borrows ([`Driver::buffer`]) and returns ([`Driver::recycle`]) before the next
//!   wait. No buffer is held for a connection between receives. When the backend has no free
//!   buffer a receive ends with `-ENOBUFS`, and the caller re-arms it once buffers returned.
//!   A backend may give the memory of buffers that hold nothing to read back to the kernel
//!   ([`Driver::trim_recv_buffers`]); a lent buffer is never touched.
//! - **Sends.** At most one send per socket is in flight (the caller's rule). The memory a
//!   send, connect or doorbell read points at stays valid until its last completion, also
//!   when cancelled; a backend may read it at any time until then.
//! - **Timers** are not a backend operation: the shard's wheel decides the `timeout` of each
//!   [`Driver::submit_and_wait`].

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::conn::ConnectCtx;
use crate::sendq::Prepared;
use crate::{EngineConfig, EngineError, IoBackend};

pub(crate) mod epoll;
#[cfg(any(test, feature = "fake"))]
pub(crate) mod fake;
pub(crate) mod uring;

pub(crate) use uring::SubmitFailures;

/// A connection's socket as its backend names it (io_uring: a direct-descriptor index;
/// epoll: a file descriptor). Opaque to the shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sock(pub(crate) u32);

impl Sock {
    /// No socket.
    pub const NONE: Sock = Sock(u32::MAX);
}

/// A receive buffer lent to the caller by a receive completion (see [`Driver::buffer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecvBuf(pub(crate) u32);

/// One harvested completion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    /// What the operation was queued with.
    pub user_data: u64,
    /// The operation's value, or a negated errno.
    pub result: i32,
    /// More completions will follow for this (multishot) operation.
    pub more: bool,
    /// The receive buffer holding `result` bytes, for a receive completion with data.
    pub buf: Option<RecvBuf>,
}

impl Completion {
    /// More completions will follow for this (multishot) operation.
    pub fn more(&self) -> bool {
        self.more
    }

    /// The receive buffer this completion filled, if any.
    pub fn buffer(&self) -> Option<RecvBuf> {
        self.buf
    }

    /// The socket an accept or socket completion produced (`result >= 0`).
    pub fn sock(&self) -> Sock {
        Sock(self.result as u32)
    }
}

/// The operation set of a shard's I/O backend. See the module docs for the contract.
pub(crate) trait Driver: Send {
    /// The backend's name, for logs, stats and metrics (`uring`, `epoll`).
    fn name(&self) -> &'static str;

    /// The error that stopped this driver for good, if any: nothing queued since reaches the
    /// kernel, and the shard must stop.
    fn failed(&self) -> Option<&io::Error>;

    /// Direct-descriptor tables in use (io_uring: one ring each; epoll: 0, its sockets live
    /// in the process fd table).
    fn descriptor_tables(&self) -> usize;

    /// Free entries in the table the accept fills: with `rechoose`, the table the next
    /// [`Driver::accept`] will fill is chosen first (the roomiest, adding a table when all
    /// are nearly full and the cap allows); without, the one the armed accept fills.
    /// `usize::MAX` where sockets need no table entry (epoll).
    fn accept_room(&mut self, rechoose: bool) -> usize;

    /// Free table entries (and slots) below which accepts must be armed one at a time: more
    /// than a multishot accept may take between two waits (before a cancel the shard queues
    /// after seeing them takes effect). A connection accepted into a full table is closed by
    /// the kernel, so this bound is what keeps a multishot accept from dropping connections.
    fn accept_headroom(&self) -> usize;

    /// Accepts connections on `listener`: one (ends with the first accepted socket) or
    /// multishot (keeps accepting, each socket a `more` completion, until cancelled or an
    /// error ends it). Between two waits a multishot accept delivers fewer sockets than
    /// [`Driver::accept_headroom`].
    fn accept(&mut self, listener: RawFd, multishot: bool, user_data: u64);

    /// Receives on `sock` until cancelled, the peer's FIN (`result` 0) or an error: each
    /// chunk of bytes a `more` completion carrying a [`RecvBuf`].
    fn recv(&mut self, sock: Sock, user_data: u64);

    /// Sends what `data` points at (partial sends complete with the bytes that went).
    ///
    /// # Safety
    /// What `data` points at (chunks, and a `msghdr` with its iovecs) must stay valid and
    /// unchanged until this operation's completion — also when it is cancelled, and also if
    /// the shard gives up waiting for it at exit (then the memory must be leaked).
    unsafe fn send(&mut self, sock: Sock, data: Prepared, user_data: u64);

    /// Sends our FIN (`shutdown(SHUT_WR)`).
    fn shutdown_write(&mut self, sock: Sock, user_data: u64);

    /// Cancels every operation in flight on `sock`.
    fn cancel_sock(&mut self, sock: Sock, user_data: u64);

    /// Cancels the operation(s) queued with `target`.
    fn cancel(&mut self, target: u64, user_data: u64);

    /// Cancels `sock`'s receive, queued with `target`: it ends with a final `-ECANCELED`
    /// completion (the completions it produced before still arrive first); this operation
    /// completes with the number cancelled, or `-ENOENT` if the receive had ended already.
    fn cancel_recv(&mut self, sock: Sock, target: u64, user_data: u64);

    /// Closes `sock`; from its completion on, `sock` may name another socket.
    fn close(&mut self, sock: Sock, user_data: u64);

    /// A new non-blocking TCP socket of `domain`; the completion's result is its [`Sock`].
    fn socket(&mut self, domain: i32, user_data: u64);

    /// TCP_NODELAY, the optional bind of `ctx`, then connect to its address. The setup steps
    /// complete once each with `setup_ud` (one, or two with a bind); the connect with
    /// `connect_ud` (`-ECANCELED` when a setup step failed).
    ///
    /// # Safety
    /// `ctx` must stay valid and unchanged until every one of these completions arrived —
    /// also when cancelled, and also if the shard gives up at exit (then leaked).
    unsafe fn connect(&mut self, sock: Sock, ctx: &ConnectCtx, setup_ud: u64, connect_ud: u64);

    /// Asks for `sock`'s peer: the completion's result is a new descriptor in the process fd
    /// table, referring to the same socket, that the caller owns (and closes).
    fn lookup_peer(&mut self, sock: Sock, user_data: u64);

    /// Reads the shard's doorbell eventfd (completes when someone rang it).
    fn read_doorbell(&mut self, eventfd: RawFd, user_data: u64);

    /// Performs or submits everything queued and waits for at least one completion, or
    /// `timeout`. `Some(Duration::ZERO)` does not block but still collects what the kernel
    /// has finished (the loop uses it while sends wait for a later turn). Interruptions and
    /// the timeout are not errors; any other error is returned (the shard's
    /// [`SubmitFailures`] policy decides whether to stop).
    fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Moves every available completion into `out`, in order.
    fn drain(&mut self, out: &mut Vec<Completion>);

    /// Operations queued whose last completion has not been drained.
    fn inflight(&self) -> usize;

    /// Cancels every operation in flight (used at exit).
    fn cancel_any(&mut self);

    /// The bytes of a receive completion.
    ///
    /// # Safety
    /// `buf` must come from a not-yet-recycled receive completion of this driver with result
    /// `len`; the slice must be dropped before `recycle(buf)`.
    unsafe fn buffer<'a>(&self, buf: RecvBuf, len: usize) -> &'a [u8];

    /// Returns a receive buffer (reusable after [`Driver::publish_buffers`]).
    fn recycle(&mut self, buf: RecvBuf);

    /// Makes the recycled buffers available again (called once per loop turn).
    fn publish_buffers(&mut self);

    /// Whether a receive re-armed on `sock` now (after it stopped on ENOBUFS) would find a
    /// free buffer in the buffers its receives draw from: if so, one of them is set aside for
    /// it until the next [`Driver::publish_buffers`]. A backend without a shared buffer
    /// shortage to ration answers `true`.
    fn reserve_recv_buffer(&mut self, sock: Sock) -> bool;

    /// What the backend counts in the kernel's terms (see [`KernelCounters`]); zeros where it
    /// has nothing to count (the fake).
    fn kernel_counters(&self) -> KernelCounters {
        KernelCounters::default()
    }

    /// Gives the memory of receive buffers that hold nothing anyone will read back to the
    /// kernel. The shard calls it after [`Driver::drain`] and [`Driver::publish_buffers`] of
    /// a turn, before its next wait, once no receive has delivered a buffer for
    /// `EngineConfig::recv_buffer_trim`. Returns the resident bytes released, or `None` when
    /// it cannot prove that safe now (a buffer lent, completions not harvested yet): the shard
    /// then tries again after another quiet interval. Backends whose buffers do not become
    /// resident by cycling (epoll's pool reuses the last returned buffer first; the fake)
    /// release nothing.
    fn trim_recv_buffers(&mut self) -> Option<u64> {
        Some(0)
    }
}

/// A backend's running totals of its traffic with the kernel (`ShardStats::kernel_enters`
/// and `ShardStats::cq_overflows` mirror them once per loop turn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelCounters {
    /// Calls that submit or wait: `io_uring_enter` on every ring, `epoll_wait` on epoll.
    pub enters: u64,
    /// Times a drain found a completion queue overflowed (io_uring; 0 on epoll).
    pub cq_overflows: u64,
}

/// The backend an engine runs on, and why (for the start-up log, stats and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    /// The backend in use: [`IoBackend::Uring`] or [`IoBackend::Epoll`].
    pub backend: IoBackend,
    /// Why: `configured`, or the probe's finding when `auto` chose.
    pub reason: String,
}

impl BackendChoice {
    /// The backend's name (`uring`, `epoll`).
    pub fn name(&self) -> &'static str {
        self.backend.as_str()
    }
}

/// Resolves `cfg.io_backend` once per engine start: `auto` probes io_uring (ring setup with
/// the features the engine asks for, the direct-descriptor table, a provided-buffer ring,
/// and the opcodes it issues) and falls back to epoll only when the host blocks or lacks
/// it — never on a transient error such as ENOMEM, which is returned.
pub(crate) fn choose(cfg: &EngineConfig) -> Result<BackendChoice, EngineError> {
    let configured = |backend| BackendChoice {
        backend,
        reason: "configured".into(),
    };
    match cfg.io_backend {
        IoBackend::Uring => Ok(configured(IoBackend::Uring)),
        IoBackend::Epoll => Ok(configured(IoBackend::Epoll)),
        IoBackend::Auto => match probe_off_thread(cfg)? {
            Ok(()) => Ok(BackendChoice {
                backend: IoBackend::Uring,
                reason: "auto: io_uring available".into(),
            }),
            Err(uring::Unusable::Blocked(why)) => Ok(BackendChoice {
                backend: IoBackend::Epoll,
                reason: format!("auto: io_uring unusable here ({why})"),
            }),
            Err(uring::Unusable::Failed(e)) => Err(e),
        },
    }
}

/// [`uring::probe`] on a short-lived thread of its own. The probe sets up a ring the way a
/// shard does (SINGLE_ISSUER, DEFER_TASKRUN): such a ring belongs to the thread that made it,
/// and tearing it down notifies that thread (`TIF_NOTIFY_SIGNAL`), which made the caller's own
/// blocking system calls fail with `EINTR` afterwards. A thread that exits takes that with it.
fn probe_off_thread(cfg: &EngineConfig) -> Result<Result<(), uring::Unusable>, EngineError> {
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("ringport-probe".into())
        .spawn(move || uring::probe(&cfg))
        .map_err(|source| EngineError::Setup {
            what: "spawning the io_uring probe thread",
            source,
        })?
        .join()
        .map_err(|_| EngineError::Setup {
            what: "the io_uring probe thread",
            source: std::io::Error::other("panicked"),
        })
}

/// Opens a shard's backend, for a connection cap of `cap` sockets.
pub(crate) fn open(
    backend: IoBackend,
    cfg: &EngineConfig,
    cap: u32,
) -> Result<Box<dyn Driver>, EngineError> {
    Ok(match backend {
        IoBackend::Epoll => Box::new(epoll::EpollDriver::new(cfg)?),
        IoBackend::Uring | IoBackend::Auto => Box::new(uring::UringDriver::new(cfg, cap)?),
    })
}
