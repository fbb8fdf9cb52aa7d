//! The io_uring driver: a shard's rings (one per direct-descriptor table), operation
//! builders, and the wait.
//!
//! Every method that queues an operation takes the `user_data` the completion will carry.
//! Queued entries reach the kernel in one `io_uring_enter` per ring per loop turn
//! ([`Driver::submit_and_wait`]); only when a submission queue fills mid-turn does the
//! driver submit early. Memory an operation points at (a `msghdr`, a socket address) must
//! stay valid until its completion: callers keep it in pooled, boxed per-operation contexts.
//!
//! # Several descriptor tables per shard
//!
//! The kernel caps one ring's registered file table at RLIMIT_NOFILE (20,000 on the machine
//! this was built on, and not raisable), but several rings coexist in one thread. A shard whose
//! connection cap is above that limit gets more rings, each with its own sparse table and
//! provided-buffer ring, added as the tables before fill (up to
//! [`EngineConfig::max_descriptor_tables`]). Table 0's ring is the one the shard waits on;
//! every other ring runs its completions as plain task work (which interrupts that wait) and
//! has a registered eventfd that the kernel signals when it posts a completion there; table 0
//! keeps a read of that eventfd armed, so one wait covers all rings. A [`Sock`] names its table in its high bits (`table << TABLE_SHIFT |
//! index`), a [`RecvBuf`] likewise (`table << 16 | buffer id`): every operation on a socket
//! goes to the ring that owns its table, so a connection's completions stay in order.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::bufring::BufRing;
use crate::conn::ConnectCtx;
use crate::error::EngineError;
use crate::id::{unpack, Op};
use crate::sendq::Prepared;
use crate::sys::{Completion, Driver, KernelCounters, RecvBuf, Sock};
use crate::EngineConfig;

/// Bits of a [`Sock`] that hold the index inside its table (the kernel's largest table is
/// 2^20 entries); the table number sits above them.
const TABLE_SHIFT: u32 = 20;
const INDEX_MASK: u32 = (1 << TABLE_SHIFT) - 1;
/// Most tables per shard (so a table-qualified socket stays a positive `i32` result).
pub(crate) const MAX_TABLES: u32 = 1024;
/// Connections beyond the listen backlog one multishot accept may take between two waits:
/// the kernel's accept loop runs until the accept queue (at most `backlog + 1` connections)
/// is empty, and handshakes that complete while it runs (on the other core: ~1–2 µs per
/// accept, so ~10 ms for a full queue) join it. 1,024 covers 100,000 handshakes/s for that
/// long.
const ACCEPT_LOOP_MARGIN: usize = 1024;
/// The `user_data` of table 0's read of the wake eventfd (internal: never handed out).
const WAKE_UD: u64 = u64::MAX - 1;

/// What the ring was set up with (probed at start).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Features {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

/// One ring and the direct-descriptor table and buffer ring registered with it.
struct Table {
    /// The ring. Dropped first (in the driver's `Drop`), which closes it: the kernel then
    /// cancels what is left and lets go of the buffers below asynchronously.
    ring: ManuallyDrop<IoUring>,
    /// The provided-buffer ring and its buffers: the kernel writes receives into them.
    bufs: ManuallyDrop<BufRing>,
    /// Entries of the registered table.
    size: u32,
    /// Entries holding a socket (from the accept or socket completion that filled one to
    /// the close that empties it).
    used: u32,
    /// The ring runs its task work only inside its own `io_uring_enter` (DEFER_TASKRUN, with
    /// SINGLE_ISSUER): the condition for trimming its buffers (`trim_recv_buffers`).
    defer_taskrun: bool,
    /// An `io_uring_enter` on this ring since its completion queue was last drained: the
    /// kernel may have written buffers whose completions are not harvested yet.
    entered: bool,
}

impl Table {
    fn room(&self) -> u32 {
        self.size.saturating_sub(self.used)
    }
}

/// The eventfd that rings other than table 0's signal, and table 0's read of it.
struct Wake {
    fd: OwnedFd,
    /// Where the read lands (a leaked box while the driver lives, like the doorbell word).
    buf: *mut u64,
    /// The read is in flight on table 0's ring.
    armed: bool,
}

pub(crate) struct UringDriver {
    /// [`Driver::accept_headroom`]: the listen backlog plus [`ACCEPT_LOOP_MARGIN`].
    accept_headroom: usize,
    /// Table 0 first (the ring the shard waits on); more are added as they fill.
    tables: Vec<Table>,
    /// Entries the shard's tables hold together (the shard's connection cap).
    cap: u32,
    /// Entries per table (the kernel's limit, RLIMIT_NOFILE); the last may be smaller.
    table_size: u32,
    /// Most tables this shard may have.
    max_tables: u32,
    /// Submission queue entries and receive buffers of tables after the first.
    extra_entries: u32,
    extra_buffers: u16,
    recv_buffer_size: u32,
    /// Adding a table failed once (logged): use what there is.
    grow_failed: bool,
    /// The table the armed (or next) accept fills.
    accept_table: usize,
    /// Present once there is more than one table.
    wake: Option<Wake>,
    /// At exit (`cancel_any`): the wake read is not re-armed.
    closing: bool,
    /// Where the doorbell eventfd read lands (a leaked box while the driver lives: the kernel
    /// writes it asynchronously, and on a give-up exit it must never be freed).
    doorbell_buf: *mut u64,
    /// Operations submitted and not yet finished (their last completion not seen), apart
    /// from the internal wake read.
    inflight: usize,
    /// Completions taken off a CQ mid-turn to make room (see `push_chain`), in order, with
    /// their table; handed out first by the next `drain`.
    stashed: Vec<(usize, cqueue::Entry)>,
    /// The first submit error that retrying cannot fix; the shard stops on it.
    failed: Option<io::Error>,
    /// `io_uring_enter` calls on every ring ([`Driver::kernel_counters`]).
    enters: u64,
    /// Drains that found a ring's completion queue overflowed (the kernel keeping
    /// completions in its backlog until an enter flushes them).
    cq_overflows: u64,
}

// SAFETY: `doorbell_buf` and the wake word are owned by the driver (boxed u64s only the
// driver and the kernel touch); the driver moves to its shard thread once and is used only
// there.
unsafe impl Send for UringDriver {}

impl Drop for UringDriver {
    fn drop(&mut self) {
        for t in &mut self.tables {
            // SAFETY: each ring is dropped exactly once, here, and not used after.
            unsafe { ManuallyDrop::drop(&mut t.ring) };
        }
        let wake_armed = self.wake.as_ref().is_some_and(|w| w.armed);
        if self.inflight > 0 || wake_armed {
            // Operations the kernel still holds may write receive buffers and the doorbell
            // or wake word after the rings' fds are closed (their teardown runs
            // asynchronously): that memory is deliberately leaked, never freed or unmapped
            // under the kernel.
            tracing::warn!(
                inflight = self.inflight,
                wake_armed,
                "ring closed with operations in flight: leaking their buffers"
            );
            return;
        }
        // SAFETY: no operation is in flight (the wake read included) and the rings are gone,
        // so the kernel holds no pointer into any buffer ring, the doorbell or the wake word;
        // each is dropped exactly once.
        unsafe {
            for t in &mut self.tables {
                ManuallyDrop::drop(&mut t.bufs);
            }
            drop(Box::from_raw(self.doorbell_buf));
            if let Some(w) = &self.wake {
                drop(Box::from_raw(w.buf));
            }
        }
    }
}

impl UringDriver {
    /// Sets up table 0's ring, probing SINGLE_ISSUER and DEFER_TASKRUN, and registers its
    /// sparse direct-descriptor table and receive buffer ring. `files` is the shard's whole
    /// cap: entries beyond what one table may hold (RLIMIT_NOFILE) come from more tables,
    /// added as they are needed.
    pub fn new(cfg: &EngineConfig, files: u32) -> Result<UringDriver, EngineError> {
        let nofile = crate::listener::nofile_limit().min(u64::from(INDEX_MASK)) as u32;
        Self::with_table_size(cfg, files, nofile)
    }

    /// [`UringDriver::new`] with tables of at most `table_size` entries.
    fn with_table_size(
        cfg: &EngineConfig,
        files: u32,
        table_size: u32,
    ) -> Result<UringDriver, EngineError> {
        let table_size = table_size.max(1).min(files.max(1));
        let max_tables = cfg.max_descriptor_tables.clamp(1, MAX_TABLES);
        let cap = files.min(table_size.saturating_mul(max_tables));
        let table = Table::new(
            cfg.ring_entries,
            table_size,
            cfg.recv_buffers,
            cfg.recv_buffer_size,
            false,
        )?;
        Ok(UringDriver {
            accept_headroom: (cfg.backlog as usize + ACCEPT_LOOP_MARGIN)
                .max(crate::core::MULTISHOT_HEADROOM),
            tables: vec![table],
            cap,
            table_size,
            max_tables,
            extra_entries: (cfg.ring_entries / 4).max(64),
            extra_buffers: (cfg.recv_buffers / 8).max(cfg.recv_buffers.min(16)),
            recv_buffer_size: cfg.recv_buffer_size,
            grow_failed: false,
            accept_table: 0,
            wake: None,
            closing: false,
            doorbell_buf: Box::into_raw(Box::new(0)),
            inflight: 0,
            stashed: Vec::new(),
            failed: None,
            enters: 0,
            cq_overflows: 0,
        })
    }

    /// The names of the `needed` opcodes this kernel does not support.
    pub fn probe_opcodes(&self, needed: &[(u8, &'static str)]) -> io::Result<Vec<&'static str>> {
        let mut probe = io_uring::Probe::new();
        self.tables[0].ring.submitter().register_probe(&mut probe)?;
        Ok(needed
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|&(_, name)| name)
            .collect())
    }

    /// Adds a table (a ring with its own registered table, buffer ring and the wake eventfd)
    /// when the cap allows one more; false when it does not, or setting one up failed
    /// (logged once; the shard then holds what its tables hold).
    fn add_table(&mut self) -> bool {
        let have: u32 = self.tables.iter().map(|t| t.size).sum();
        if self.grow_failed || have >= self.cap || self.tables.len() as u32 >= self.max_tables {
            return false;
        }
        let size = self.table_size.min(self.cap - have);
        let added = self.wake_fd().and_then(|wake| {
            let t = Table::new(
                self.extra_entries,
                size,
                self.extra_buffers,
                self.recv_buffer_size,
                true,
            )?;
            t.ring
                .submitter()
                .register_eventfd(wake)
                .map_err(|source| EngineError::Setup {
                    what: "registering the wake eventfd with a descriptor table's ring",
                    source,
                })?;
            Ok(t)
        });
        match added {
            Ok(t) => {
                self.tables.push(t);
                tracing::debug!(tables = self.tables.len(), size, "descriptor table added");
                true
            }
            Err(e) => {
                self.grow_failed = true;
                tracing::warn!(
                    error = %e,
                    tables = self.tables.len(),
                    "could not add a descriptor table: this shard holds what its tables hold"
                );
                false
            }
        }
    }

    /// The wake eventfd, made on first use.
    fn wake_fd(&mut self) -> Result<RawFd, EngineError> {
        if let Some(w) = &self.wake {
            return Ok(w.fd.as_raw_fd());
        }
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(EngineError::Setup {
                what: "creating the descriptor tables' wake eventfd",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        self.wake = Some(Wake {
            fd,
            buf: Box::into_raw(Box::new(0)),
            armed: false,
        });
        Ok(raw)
    }

    /// The table with the most free entries, adding one when every table is short of the
    /// accept headroom (so a multishot accept can go on in the new one).
    fn roomiest(&mut self) -> usize {
        let best = |tables: &[Table]| {
            (0..tables.len())
                .max_by_key(|&i| (tables[i].room(), std::cmp::Reverse(i)))
                .unwrap_or(0)
        };
        let b = best(&self.tables);
        if (self.tables[b].room() as usize) < self.accept_headroom && self.add_table() {
            return self.tables.len() - 1;
        }
        b
    }

    /// The table `sock` lives in and its index there.
    fn split(sock: Sock) -> (usize, u32) {
        ((sock.0 >> TABLE_SHIFT) as usize, sock.0 & INDEX_MASK)
    }

    /// Queues one entry on table `t`'s ring (see [`UringDriver::push_chain`]).
    fn push(&mut self, t: usize, entry: squeue::Entry) {
        self.push_chain(t, &[entry]);
    }

    /// Queues `entries` as one unit on table `t`'s ring: when its submission queue has too
    /// little room for all of them, what is queued goes to the kernel first, so a linked
    /// chain (whose last link ends at the end of a submit) is never split across two submits.
    ///
    /// Every entry is built by a method of this driver whose contract makes the caller keep
    /// the memory it references alive until its completion.
    fn push_chain(&mut self, t: usize, entries: &[squeue::Entry]) {
        if self.failed.is_some() {
            return;
        }
        debug_assert!(entries.len() <= self.tables[t].ring.params().sq_entries() as usize);
        loop {
            let room = {
                let sq = self.tables[t].ring.submission();
                sq.capacity() - sq.len()
            };
            if room >= entries.len() {
                break;
            }
            // Not enough room: hand what we have to the kernel and retry.
            self.enters += 1;
            self.tables[t].entered = true;
            match self.tables[t].ring.submit() {
                Ok(_) => {}
                // Kernels before 5.19 refuse submissions while completions that overflowed
                // the CQ wait in the kernel's backlog: make room (the completions are handed
                // out by the next `drain`) so the backlog can flush, instead of spinning.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.stash_completions(t),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "io_uring submit failed while flushing a full queue");
                    self.failed = Some(e);
                    return;
                }
            }
        }
        // SAFETY: there is room for every entry (checked above, and nothing else pushes in
        // between); each entry's referenced memory is kept alive by its builder's caller.
        unsafe {
            self.tables[t]
                .ring
                .submission()
                .push_multiple(entries)
                .expect("room reserved above");
        }
        self.inflight += entries.len();
    }

    /// Moves the completions in table `t`'s CQ to `stashed` (to free CQ space mid-turn).
    fn stash_completions(&mut self, t: usize) {
        let cq = self.tables[t].ring.completion();
        self.stashed.extend(cq.map(|c| (t, c)));
    }

    /// Submits what tables other than 0 have queued, and flushes completions that overflowed
    /// their CQ (only an enter with GETEVENTS on that ring does).
    fn enter_other_tables(&mut self) -> io::Result<()> {
        for t in &mut self.tables[1..] {
            let (queued, pending) = {
                let sq = t.ring.submission();
                (!sq.is_empty(), sq.taskrun() || sq.cq_overflow())
            };
            if queued || pending {
                self.enters += 1;
                t.entered = true;
                match t.ring.submit() {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// The engine's view of one CQE of table `t`: `more` and the provided buffer decoded from its
/// flags, the socket of an accept or socket completion qualified with its table (an accepted
/// one counted in the table's `used`, a socket that failed released from it); `None` for the
/// internal wake read (which disarms `wake`).
fn completion_of(
    t: usize,
    c: cqueue::Entry,
    used: &mut u32,
    wake: &mut Option<Wake>,
) -> Option<Completion> {
    if c.user_data() == WAKE_UD {
        if let Some(w) = wake {
            w.armed = false;
        }
        return None;
    }
    let flags = c.flags();
    let mut result = c.result();
    match unpack(c.user_data()) {
        Some((Op::Accept, ..)) if result >= 0 => {
            *used += 1;
            result |= (t as i32) << TABLE_SHIFT;
        }
        // A socket's entry was counted when it was issued (`UringDriver::socket`): released
        // if the kernel did not allocate it.
        Some((Op::Socket, ..)) if result >= 0 => result |= (t as i32) << TABLE_SHIFT,
        Some((Op::Socket, ..)) => *used = used.saturating_sub(1),
        _ => {}
    }
    Some(Completion {
        user_data: c.user_data(),
        result,
        more: cqueue::more(flags),
        buf: cqueue::buffer_select(flags).map(|b| RecvBuf(((t as u32) << 16) | u32::from(b))),
    })
}

impl Table {
    /// A ring with a sparse table of `size` entries and `buffers` receive buffers (`extra`:
    /// a table after the first, see `try_build_ring`).
    fn new(
        entries: u32,
        size: u32,
        buffers: u16,
        buffer_size: u32,
        extra: bool,
    ) -> Result<Table, EngineError> {
        let (ring, features) = build_ring(entries, extra)?;
        ring.submitter()
            .register_files_sparse(size)
            .map_err(|source| EngineError::Setup {
                what: "registering the direct descriptor table",
                source,
            })?;
        let bufs = BufRing::new(&ring, 0, buffers, buffer_size).map_err(|source| {
            EngineError::KernelTooOld {
                feature: "provided buffer rings (Linux 5.19)",
                source,
            }
        })?;
        tracing::debug!(
            single_issuer = features.single_issuer,
            defer_taskrun = features.defer_taskrun,
            entries,
            size,
            "io_uring ring ready"
        );
        Ok(Table {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(bufs),
            size,
            used: 0,
            defer_taskrun: features.defer_taskrun,
            entered: false,
        })
    }
}

impl Driver for UringDriver {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    fn descriptor_tables(&self) -> usize {
        self.tables.len()
    }

    fn accept_headroom(&self) -> usize {
        self.accept_headroom
    }

    fn accept_room(&mut self, rechoose: bool) -> usize {
        if rechoose {
            self.accept_table = self.roomiest();
        }
        self.tables[self.accept_table].room() as usize
    }

    /// Multishot accept into kernel-allocated direct descriptors of the table
    /// [`Driver::accept_room`] chose, or (near its end) one accept: a multishot accept keeps
    /// taking connections from the backlog and the kernel closes any it cannot fit in the
    /// table, where a single accept leaves them queued.
    fn accept(&mut self, listener: RawFd, multishot: bool, user_data: u64) {
        let e = if multishot {
            opcode::AcceptMulti::new(Fd(listener))
                // Direct descriptors are never in the fd table, so there is nothing to
                // close-on-exec (and the kernel rejects SOCK_CLOEXEC with them).
                .allocate_file_index(true)
                .build()
        } else {
            opcode::Accept::new(Fd(listener), std::ptr::null_mut(), std::ptr::null_mut())
                .file_index(Some(io_uring::types::DestinationSlot::auto_target()))
                .build()
        };
        self.push(self.accept_table, e.user_data(user_data));
    }

    /// Multishot receive on the direct descriptor from its table's buffer ring.
    fn recv(&mut self, sock: Sock, user_data: u64) {
        let (t, i) = Self::split(sock);
        let e = opcode::RecvMulti::new(Fixed(i), self.tables[t].bufs.group())
            .build()
            .user_data(user_data);
        self.push(t, e);
    }

    /// A single chunk goes as `IORING_OP_SEND` (no `msghdr` to import: cheaper than
    /// `IORING_OP_SENDMSG`), more as `IORING_OP_SENDMSG`.
    unsafe fn send(&mut self, sock: Sock, data: Prepared, user_data: u64) {
        let (t, i) = Self::split(sock);
        let e = match data {
            Prepared::Single { ptr, len } => opcode::Send::new(Fixed(i), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            Prepared::Gathered { msg, .. } => opcode::SendMsg::new(Fixed(i), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        };
        self.push(t, e.user_data(user_data));
    }

    fn shutdown_write(&mut self, sock: Sock, user_data: u64) {
        let (t, i) = Self::split(sock);
        let e = opcode::Shutdown::new(Fixed(i), libc::SHUT_WR)
            .build()
            .user_data(user_data);
        self.push(t, e);
    }

    fn cancel_sock(&mut self, sock: Sock, user_data: u64) {
        let (t, i) = Self::split(sock);
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fixed(i)).all())
            .build()
            .user_data(user_data);
        self.push(t, e);
    }

    /// Cancels on the ring of the table the accept fills: the only operation the shard
    /// cancels by `user_data` is its accept.
    fn cancel(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target).all())
            .build()
            .user_data(user_data);
        self.push(self.accept_table, e);
    }

    /// On the ring of `sock`'s table, where its receive was queued (a cancel by `user_data`
    /// only searches its own ring).
    fn cancel_recv(&mut self, sock: Sock, target: u64, user_data: u64) {
        let (t, _) = Self::split(sock);
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
            .build()
            .user_data(user_data);
        self.push(t, e);
    }

    /// Closes the direct descriptor; its table entry counts as free from here (the close of
    /// a direct descriptor is done at submit, before any accept of the same enter runs).
    fn close(&mut self, sock: Sock, user_data: u64) {
        let (t, i) = Self::split(sock);
        self.tables[t].used = self.tables[t].used.saturating_sub(1);
        let e = opcode::Close::new(Fixed(i)).build().user_data(user_data);
        self.push(t, e);
    }

    /// A new TCP socket in a kernel-allocated direct descriptor of the roomiest table. Its
    /// entry counts as used from here, not from its completion: many sockets issued in one
    /// turn must not all be sent to a table with room for only some of them (ENFILE).
    fn socket(&mut self, domain: i32, user_data: u64) {
        let t = self.roomiest();
        self.tables[t].used += 1;
        let e = opcode::Socket::new(domain, libc::SOCK_STREAM, 0)
            .file_index(Some(io_uring::types::DestinationSlot::auto_target()))
            .build()
            .user_data(user_data);
        self.push(t, e);
    }

    /// TCP_NODELAY, an optional bind, then connect — linked, and queued as one unit so the
    /// chain reaches the kernel whole.
    unsafe fn connect(&mut self, sock: Sock, ctx: &ConnectCtx, setup_ud: u64, connect_ud: u64) {
        let (t, i) = Self::split(sock);
        let fd = Fixed(i);
        let mut chain = [
            opcode::SetSockOpt::new(
                fd,
                libc::IPPROTO_TCP as u32,
                libc::TCP_NODELAY as u32,
                (&ctx.one as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(setup_ud),
            opcode::Nop::new().build(),
            opcode::Nop::new().build(),
        ];
        let mut n = 1;
        if let Some(b) = &ctx.bind {
            chain[n] = opcode::Bind::new(fd, b.as_ptr().cast(), b.len())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(setup_ud);
            n += 1;
        }
        chain[n] = opcode::Connect::new(fd, ctx.addr.as_ptr().cast(), ctx.addr.len())
            .build()
            .user_data(connect_ud);
        self.push_chain(t, &chain[..=n]);
    }

    /// Installs the direct descriptor into the process fd table
    /// (`IORING_OP_FIXED_FD_INSTALL`).
    fn lookup_peer(&mut self, sock: Sock, user_data: u64) {
        let (t, i) = Self::split(sock);
        let e = opcode::FixedFdInstall::new(Fixed(i), 0)
            .build()
            .user_data(user_data);
        self.push(t, e);
    }

    /// Arms the 8-byte read of the shard's doorbell eventfd on table 0's ring. The word it
    /// lands in belongs to the driver, which frees it only when no operation is in flight.
    fn read_doorbell(&mut self, eventfd: RawFd, user_data: u64) {
        let e = opcode::Read::new(Fd(eventfd), self.doorbell_buf.cast(), 8)
            .build()
            .user_data(user_data);
        self.push(0, e);
    }

    /// Submits on every ring that has something queued, then one `io_uring_enter` on table
    /// 0's ring that submits and waits (other tables wake it through the wake eventfd), then
    /// runs the work the kernel deferred for the other tables. A full completion backlog
    /// (EBUSY) is not an error either.
    fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.tables.len() > 1 {
            self.enter_other_tables()?;
            let arm = match &mut self.wake {
                Some(w) if !w.armed && !self.closing => {
                    w.armed = true;
                    Some((w.fd.as_raw_fd(), w.buf))
                }
                _ => None,
            };
            if let Some((fd, buf)) = arm {
                let e = opcode::Read::new(Fd(fd), buf.cast(), 8)
                    .build()
                    .user_data(WAKE_UD);
                self.push(0, e);
                // The wake read is not a shard operation.
                self.inflight -= 1;
            }
        }
        let ready = !self.stashed.is_empty()
            || self.tables[1..]
                .iter_mut()
                .any(|t| !t.ring.completion().is_empty());
        self.tables[0].entered = true;
        let ring = &self.tables[0].ring;
        self.enters += 1;
        let r = match timeout {
            // Completions already waiting: submit, don't wait.
            _ if ready => ring.submit(),
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                ring.submitter().submit_with_args(1, &args)
            }
            None => ring.submit_and_wait(1),
        };
        let r = match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        };
        if r.is_ok() && self.tables.len() > 1 {
            self.enter_other_tables()?;
        }
        r
    }

    fn drain(&mut self, out: &mut Vec<Completion>) {
        let start = out.len();
        let UringDriver {
            tables,
            wake,
            stashed,
            ..
        } = self;
        for (t, c) in stashed.drain(..) {
            out.extend(completion_of(t, c, &mut tables[t].used, wake));
        }
        for (t, table) in tables.iter_mut().enumerate() {
            let Table {
                ring,
                used,
                entered,
                ..
            } = table;
            self.cq_overflows += u64::from(ring.submission().cq_overflow());
            for c in ring.completion() {
                out.extend(completion_of(t, c, used, wake));
            }
            *entered = false;
        }
        let mut finished = 0;
        for c in &out[start..] {
            finished += usize::from(!c.more);
            if let Some(b) = c.buf {
                self.tables[(b.0 >> 16) as usize].bufs.lent_one();
            }
        }
        self.inflight = self.inflight.saturating_sub(finished);
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    fn cancel_any(&mut self) {
        self.closing = true;
        for t in 0..self.tables.len() {
            let e = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(0);
            self.push(t, e);
            self.enters += 1;
            self.tables[t].entered = true;
            let _ = self.tables[t].ring.submit();
        }
    }

    unsafe fn buffer<'a>(&self, buf: RecvBuf, len: usize) -> &'a [u8] {
        // SAFETY: forwarded contract; the buffer id part of a `RecvBuf` fits in u16.
        unsafe {
            self.tables[(buf.0 >> 16) as usize]
                .bufs
                .get(buf.0 as u16, len)
        }
    }

    fn recycle(&mut self, buf: RecvBuf) {
        self.tables[(buf.0 >> 16) as usize]
            .bufs
            .recycle(buf.0 as u16);
    }

    fn publish_buffers(&mut self) {
        for t in &mut self.tables {
            t.bufs.publish();
        }
    }

    /// A free buffer of the ring of `sock`'s table (each table has its own).
    fn reserve_recv_buffer(&mut self, sock: Sock) -> bool {
        self.tables[Self::split(sock).0].bufs.reserve()
    }

    fn kernel_counters(&self) -> KernelCounters {
        KernelCounters {
            enters: self.enters,
            cq_overflows: self.cq_overflows,
        }
    }

    /// Trims the buffer ring of every table whose ring is DEFER_TASKRUN and that handed out
    /// a buffer since its last trim, when nothing of it can be in use:
    ///
    /// - With DEFER_TASKRUN the kernel copies received bytes into a provided buffer only in
    ///   the ring's task work, and that runs only inside an `io_uring_enter` on this very
    ///   ring (the inline issue of a submitted receive, or the deferred work a wait runs).
    ///   SINGLE_ISSUER (set with it) makes the shard thread the only one that may enter it.
    ///   A multishot receive on a socket never copies on an io-wq worker: the kernel's io-wq
    ///   path re-arms its poll instead (sockets are pollable and non-blocking), and we never
    ///   set IOSQE_ASYNC. So no copy can happen between this ring's last `drain` and the
    ///   shard's next wait, and `madvise` runs on the shard thread in between.
    /// - Every copy before that drain posted its completion with it: the completion queue is
    ///   empty (checked), none waits in the kernel's overflow backlog (the CQ_OVERFLOW flag,
    ///   checked), none is stashed, and no enter happened since the drain (`entered`). Each
    ///   of those completions was handled and its buffer recycled: none is lent (checked).
    ///   So no buffer holds a byte anyone will read.
    ///
    /// A ring without DEFER_TASKRUN (tables after the first, kernels before 6.1) runs its
    /// task work on any return of the shard thread to user space, interrupts included: a
    /// copy (and its completion) can land between these checks and the `madvise`, and the
    /// zeroing would lose its bytes. Such rings are never trimmed.
    fn trim_recv_buffers(&mut self) -> Option<u64> {
        let mut released = 0;
        let mut blocked = !self.stashed.is_empty();
        for t in &mut self.tables {
            if !t.defer_taskrun || !t.bufs.touched() {
                continue;
            }
            let unharvested = !t.ring.completion().is_empty() || t.ring.submission().cq_overflow();
            if blocked || t.entered || unharvested || t.bufs.lent() > 0 {
                blocked = true;
                continue;
            }
            // SAFETY: the checks above and the argument in this method's docs: no buffer of
            // this ring is lent or holds unharvested bytes, and the kernel cannot write into
            // one before the shard's next `io_uring_enter` on this ring, which follows this
            // call on the same thread.
            match unsafe { t.bufs.trim() } {
                Ok(n) => released += n,
                Err(e) => tracing::warn!(error = %e, "trimming the receive buffers failed"),
            }
        }
        (!blocked).then_some(released)
    }
}
/// Builds a ring of `entries` (completion queue 4x), probing SINGLE_ISSUER and
/// DEFER_TASKRUN. The kernel allocates each ring as physically contiguous pages, which can
/// fail with ENOMEM on a machine whose memory is fragmented (e.g. full of page cache) even
/// with plenty available; the ring is then halved (down to 64 entries) rather than failing.
fn build_ring(mut entries: u32, extra: bool) -> Result<(IoUring, Features), EngineError> {
    loop {
        match try_build_ring(entries, extra) {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && entries > 64 => {
                tracing::warn!(
                    entries,
                    "io_uring setup: ENOMEM (fragmented memory?); retrying with half the ring size"
                );
                entries /= 2;
            }
            Err(e) => return Err(uring_unavailable(e)),
            Ok(r) => return Ok(r),
        }
    }
}

/// `extra`: a ring for a table after the first. Such a ring runs its completions as plain
/// task work (no DEFER_TASKRUN, no COOP_TASKRUN): the kernel then interrupts the shard's wait
/// on table 0's ring to post them, and posting signals the wake eventfd. (With DEFER_TASKRUN
/// the work waits for an enter on that very ring, and its eventfd signal for deferred work
/// proved unreliable here: 25,000 connects stalled.)
fn try_build_ring(entries: u32, extra: bool) -> io::Result<(IoUring, Features)> {
    if extra {
        let r = IoUring::builder()
            .setup_cqsize(entries * 4)
            .setup_submit_all()
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 4).build(entries))?;
        return Ok((r, Features::default()));
    }
    match IoUring::builder()
        .setup_cqsize(entries * 4)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .build(entries)
    {
        Ok(r) => {
            let features = Features {
                single_issuer: true,
                defer_taskrun: true,
            };
            Ok((r, features))
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Older kernel: no DEFER_TASKRUN / SINGLE_ISSUER; COOP_TASKRUN is 5.19.
            let r = IoUring::builder()
                .setup_cqsize(entries * 4)
                .setup_coop_taskrun()
                .build(entries)
                .or_else(|_| IoUring::builder().setup_cqsize(entries * 4).build(entries))?;
            Ok((r, Features::default()))
        }
        Err(e) => Err(e),
    }
}

fn uring_unavailable(source: io::Error) -> EngineError {
    let sysctl_disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    EngineError::UringUnavailable {
        source,
        sysctl_disabled,
    }
}

/// When a shard gives up on `io_uring_enter` errors. An error that retrying cannot fix
/// (`EBADF`, `EFAULT`, `EINVAL`, `EOPNOTSUPP`, `ENXIO`) stops the shard at once; others
/// (`ENOMEM`, `EAGAIN`: the kernel short of memory) are retried, each turn after a short
/// pause, until they have lasted [`SubmitFailures::PERSISTENT`]: then the shard stops with a
/// clear error instead of looping forever with a log line per turn.
#[derive(Debug, Default)]
pub(crate) struct SubmitFailures {
    /// When the current run of consecutive failures began.
    since: Option<Instant>,
}

impl SubmitFailures {
    /// How long a retryable error may last before the shard stops.
    pub const PERSISTENT: Duration = Duration::from_secs(5);

    /// Records one submit's outcome at `now`; `Err` when the shard must stop.
    pub fn record(&mut self, result: io::Result<()>, now: Instant) -> Result<(), io::Error> {
        let e = match result {
            Ok(()) => {
                self.since = None;
                return Ok(());
            }
            Err(e) => e,
        };
        let fatal = matches!(
            e.raw_os_error(),
            Some(libc::EBADF | libc::EFAULT | libc::EINVAL | libc::EOPNOTSUPP | libc::ENXIO)
        );
        let since = *self.since.get_or_insert(now);
        if fatal || now.duration_since(since) >= Self::PERSISTENT {
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn err(errno: i32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn an_error_retrying_cannot_fix_stops_at_once() {
        let mut f = SubmitFailures::default();
        let now = Instant::now();
        for errno in [libc::EBADF, libc::EFAULT, libc::EINVAL, libc::EOPNOTSUPP] {
            assert!(f.record(err(errno), now).is_err(), "errno {errno}");
        }
    }

    #[test]
    fn a_retryable_error_stops_only_when_it_persists() {
        let mut f = SubmitFailures::default();
        let t0 = Instant::now();
        assert!(f.record(err(libc::ENOMEM), t0).is_ok());
        assert!(f
            .record(err(libc::ENOMEM), t0 + SubmitFailures::PERSISTENT / 2)
            .is_ok());
        // A success ends the run of failures: the clock starts again.
        assert!(f.record(Ok(()), t0 + SubmitFailures::PERSISTENT).is_ok());
        let t1 = t0 + SubmitFailures::PERSISTENT * 2;
        assert!(f.record(err(libc::EAGAIN), t1).is_ok());
        assert!(f
            .record(err(libc::EAGAIN), t1 + SubmitFailures::PERSISTENT)
            .is_err());
    }

    /// A ring whose descriptor no longer is a ring (replaced under it with /dev/null) makes
    /// every submit fail, and the policy stops the shard on the first one.
    #[test]
    fn a_broken_ring_is_a_stop_not_a_loop() {
        let cfg = EngineConfig {
            ring_entries: 8,
            recv_buffers: 8,
            ..Default::default()
        };
        let mut d = UringDriver::new(&cfg, 16).expect("ring");
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: both descriptors are open; dup2 atomically replaces the ring's descriptor
        // (closing the ring, which has no operation in flight) with a copy of /dev/null's,
        // which the driver then owns and closes on drop.
        assert!(unsafe { libc::dup2(null.as_raw_fd(), d.tables[0].ring.as_raw_fd()) } >= 0);
        let mut f = SubmitFailures::default();
        let r = d.submit_and_wait(Some(Duration::from_millis(1)));
        assert!(r.is_err(), "submitting to a non-ring fails");
        assert!(f.record(r, Instant::now()).is_err(), "and stops the shard");
    }

    /// Waits (bounded) for the next receive completion on `d` and returns it.
    /// Enters the ring until a harvest holds a completion `wanted` takes (bounded: 20 s,
    /// `what` names it then); the harvest stays in `out`.
    fn next_completion(
        d: &mut UringDriver,
        out: &mut Vec<Completion>,
        what: &str,
        wanted: impl Fn(&Completion) -> bool,
    ) -> Completion {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "{what}");
            d.submit_and_wait(Some(Duration::from_millis(200))).unwrap();
            out.clear();
            d.drain(out);
            if let Some(c) = out.iter().find(|c| wanted(c)).copied() {
                return c;
            }
        }
    }

    fn next_recv(d: &mut UringDriver, out: &mut Vec<Completion>) -> Completion {
        let c = next_completion(d, out, "receive completion", |c| c.result != 0);
        assert_eq!(out.len(), 1, "one completion at a time: {out:?}");
        c
    }

    /// Cancels everything in flight and harvests until nothing is (bounded: 20 s).
    fn cancel_and_settle(d: &mut UringDriver, out: &mut Vec<Completion>) {
        d.cancel_any();
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.inflight() > 0 && Instant::now() < deadline {
            d.submit_and_wait(Some(Duration::from_millis(50))).unwrap();
            out.clear();
            d.drain(out);
        }
    }

    /// The socket of the next accept completion.
    fn accepted(d: &mut UringDriver, out: &mut Vec<Completion>) -> Sock {
        let c = next_completion(d, out, "accept completion", |_| true);
        assert!(c.result >= 0, "accept failed: {}", c.result);
        c.sock()
    }

    /// A ring the kernel has cycled through is resident in full; trimming it (when nothing is
    /// lent and every completion is harvested) leaves none of it resident, and receives go on
    /// into the zero-filled pages with their bytes intact. A lent buffer or an enter since the
    /// last drain makes the trim decline.
    #[test]
    fn trimming_an_idle_ring_gives_its_pages_back() {
        use crate::id::pack;
        use std::io::Write;
        const BUFS: u16 = 16;
        let cfg = EngineConfig {
            ring_entries: 16,
            recv_buffers: BUFS,
            recv_buffer_size: 4096,
            ..Default::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut d = UringDriver::new(&cfg, 4).expect("driver");
        assert!(
            d.tables[0].defer_taskrun,
            "this test needs DEFER_TASKRUN (Linux 6.1+)"
        );
        let ring_bytes = u64::from(BUFS) * 4096;
        assert_eq!(d.tables[0].bufs.resident_bytes().unwrap(), 0, "fresh ring");
        d.accept(listener.as_raw_fd(), false, pack(Op::Accept, 0, 0));
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut out = Vec::new();
        let sock = accepted(&mut d, &mut out);
        d.recv(sock, pack(Op::Recv, 1, 0));
        // One message per receive, each waited for: the kernel takes the buffers in ring
        // order, so two rounds touch every one of them.
        let receive = |d: &mut UringDriver, client: &mut std::net::TcpStream, i: usize| {
            let msg = format!("message {i}");
            client.write_all(msg.as_bytes()).unwrap();
            let c = next_recv(d, &mut Vec::new());
            assert!(c.more, "the multishot receive goes on: {c:?}");
            let buf = c.buffer().expect("a provided buffer");
            // SAFETY: `buf` comes from this receive completion with result `c.result`; the
            // slice is copied and dropped before the buffer is recycled.
            let got = unsafe { d.buffer(buf, c.result as usize) }.to_vec();
            assert_eq!(got, msg.as_bytes());
            buf
        };
        for i in 0..2 * usize::from(BUFS) {
            let buf = receive(&mut d, &mut client, i);
            d.recycle(buf);
            d.publish_buffers();
        }
        assert_eq!(
            d.tables[0].bufs.resident_bytes().unwrap(),
            ring_bytes,
            "every buffer was written once"
        );

        // A lent buffer: no trim.
        let lent = receive(&mut d, &mut client, 100);
        assert_eq!(d.trim_recv_buffers(), None, "a buffer is lent");
        d.recycle(lent);
        d.publish_buffers();
        // An enter since the last drain: no trim.
        d.submit_and_wait(Some(Duration::ZERO)).unwrap();
        assert_eq!(d.trim_recv_buffers(), None, "entered since the drain");
        out.clear();
        d.drain(&mut out);
        assert!(out.is_empty(), "nothing was sent: {out:?}");
        assert_eq!(d.tables[0].bufs.resident_bytes().unwrap(), ring_bytes);

        // Quiet: the trim releases the whole ring.
        assert_eq!(d.trim_recv_buffers(), Some(ring_bytes));
        assert_eq!(
            d.tables[0].bufs.resident_bytes().unwrap(),
            0,
            "the trim gave every page back"
        );
        assert_eq!(
            d.trim_recv_buffers(),
            Some(0),
            "nothing touched since: nothing to do"
        );

        // Receives go on into fresh pages, bytes intact.
        for i in 200..200 + usize::from(BUFS) {
            let buf = receive(&mut d, &mut client, i);
            d.recycle(buf);
            d.publish_buffers();
        }
        assert_eq!(d.tables[0].bufs.resident_bytes().unwrap(), ring_bytes);

        cancel_and_settle(&mut d, &mut out);
    }

    /// Sockets spread over several tables when one is full, and a receive on a table other
    /// than 0 wakes the wait on table 0's ring (through the wake eventfd).
    #[test]
    fn accepts_spread_over_tables_and_their_completions_wake_the_wait() {
        use crate::id::pack;
        use std::io::Write;
        let cfg = EngineConfig {
            ring_entries: 16,
            recv_buffers: 16,
            max_descriptor_tables: 8,
            ..Default::default()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut d = UringDriver::with_table_size(&cfg, 12, 4).expect("driver");
        let mut clients = Vec::new();
        let mut socks = Vec::new();
        let mut out = Vec::new();
        for _ in 0..12 {
            assert!(d.accept_room(true) > 0, "a table with room");
            d.accept(listener.as_raw_fd(), false, pack(Op::Accept, 0, 0));
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            socks.push(accepted(&mut d, &mut out));
        }
        let tables: std::collections::BTreeSet<usize> =
            socks.iter().map(|&s| UringDriver::split(s).0).collect();
        assert_eq!(tables.len(), 3, "12 sockets in tables of 4: {socks:?}");
        assert_eq!(d.descriptor_tables(), 3);
        assert_eq!(
            d.accept_room(true),
            0,
            "every table full, none may be added"
        );
        // A receive on the last table: its completion must end a wait on table 0's ring
        // long before the wait's timeout.
        let last = *socks.last().unwrap();
        d.recv(last, pack(Op::Recv, 11, 0));
        d.submit_and_wait(Some(Duration::from_millis(1))).unwrap();
        clients[11].write_all(b"hi").unwrap();
        let start = Instant::now();
        let mut got = None;
        while got.is_none() && start.elapsed() < Duration::from_secs(20) {
            d.submit_and_wait(Some(Duration::from_secs(30))).unwrap();
            out.clear();
            d.drain(&mut out);
            got = out.iter().find(|c| c.result > 0).copied();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "woken by the other table"
        );
        let c = got.expect("receive completion");
        let buf = c.buffer().expect("a provided buffer");
        // SAFETY: `buf` comes from this receive completion with result `c.result`, and the
        // slice is dropped before the buffer is recycled.
        let bytes = unsafe { d.buffer(buf, c.result as usize) }.to_vec();
        assert_eq!(bytes, b"hi");
        d.recycle(buf);
        // Closing frees the entry: the table has room again.
        d.close(last, 0);
        assert_eq!(d.accept_room(true), 1);
        cancel_and_settle(&mut d, &mut out);
    }
}
