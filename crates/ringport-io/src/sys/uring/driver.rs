//! The io_uring driver: one ring per shard, operation builders, and the wait.
//!
//! Every method that queues an operation takes the `user_data` the completion will carry.
//! Queued entries reach the kernel in one `io_uring_enter` per loop turn
//! ([`Driver::submit_and_wait`]); only when the submission queue fills mid-turn does the
//! driver submit early. Memory an operation points at (a `msghdr`, a socket address) must
//! stay valid until its completion: callers keep it in pooled, boxed per-operation contexts.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::bufring::BufRing;
use crate::conn::ConnectCtx;
use crate::error::EngineError;
use crate::sendq::Prepared;
use crate::sys::{Completion, Driver, RecvBuf, Sock};
use crate::EngineConfig;

/// What the ring was set up with (probed at start).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Features {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

pub(crate) struct UringDriver {
    /// The ring. Dropped first (in `Drop`), which closes it: the kernel then cancels what is
    /// left and lets go of the memory below asynchronously.
    ring: ManuallyDrop<IoUring>,
    /// The provided-buffer ring and its buffers: the kernel writes receives into them.
    bufs: ManuallyDrop<BufRing>,
    /// Where the doorbell eventfd read lands (a leaked box while the driver lives: the kernel
    /// writes it asynchronously, and on a give-up exit it must never be freed).
    doorbell_buf: *mut u64,
    /// Operations submitted and not yet finished (their last completion not seen).
    inflight: usize,
    /// Completions taken off the CQ mid-turn to make room (see `push`), in order; handed
    /// out first by the next `drain`.
    stashed: Vec<Completion>,
    /// The first submit error that retrying cannot fix; the shard stops on it.
    failed: Option<io::Error>,
}

// SAFETY: `doorbell_buf` is owned by the driver (a boxed u64 only the driver and the kernel
// touch); the driver moves to its shard thread once and is used only there.
unsafe impl Send for UringDriver {}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // SAFETY: the ring is dropped exactly once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.ring) };
        if self.inflight > 0 {
            // Operations the kernel still holds may write receive buffers and the doorbell
            // word after the ring's fd is closed (its teardown runs asynchronously): that
            // memory is deliberately leaked, never freed or unmapped under the kernel.
            tracing::warn!(
                inflight = self.inflight,
                "ring closed with operations in flight: leaking their buffers"
            );
            return;
        }
        // SAFETY: no operation is in flight and the ring is gone, so the kernel holds no
        // pointer into the buffer ring or the doorbell word; each is dropped exactly once.
        unsafe {
            ManuallyDrop::drop(&mut self.bufs);
            drop(Box::from_raw(self.doorbell_buf));
        }
    }
}

impl UringDriver {
    /// Sets up a ring, probing SINGLE_ISSUER and DEFER_TASKRUN, and registers the shard's
    /// sparse direct-descriptor table and receive buffer ring.
    pub fn new(cfg: &EngineConfig, files: u32) -> Result<UringDriver, EngineError> {
        let entries = cfg.ring_entries;
        let (ring, features) = build_ring(entries)?;
        ring.submitter()
            .register_files_sparse(files)
            .map_err(|source| EngineError::Setup {
                what: "registering the direct descriptor table",
                source,
            })?;
        let bufs =
            BufRing::new(&ring, 0, cfg.recv_buffers, cfg.recv_buffer_size).map_err(|source| {
                EngineError::KernelTooOld {
                    feature: "provided buffer rings (Linux 5.19)",
                    source,
                }
            })?;
        tracing::debug!(
            single_issuer = features.single_issuer,
            defer_taskrun = features.defer_taskrun,
            entries,
            "io_uring ring ready"
        );
        Ok(UringDriver {
            ring: ManuallyDrop::new(ring),
            bufs: ManuallyDrop::new(bufs),
            doorbell_buf: Box::into_raw(Box::new(0)),
            inflight: 0,
            stashed: Vec::new(),
            failed: None,
        })
    }

    /// The names of the `needed` opcodes this kernel does not support.
    pub fn probe_opcodes(&self, needed: &[(u8, &'static str)]) -> io::Result<Vec<&'static str>> {
        let mut probe = io_uring::Probe::new();
        self.ring.submitter().register_probe(&mut probe)?;
        Ok(needed
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|&(_, name)| name)
            .collect())
    }

    /// Queues one entry (see [`UringDriver::push_chain`]).
    fn push(&mut self, entry: squeue::Entry) {
        self.push_chain(&[entry]);
    }

    /// Queues `entries` as one unit: when the submission queue has too little room for all
    /// of them, what is queued goes to the kernel first, so a linked chain (whose last link
    /// ends at the end of a submit) is never split across two submits.
    ///
    /// Every entry is built by a method of this driver whose contract makes the caller keep
    /// the memory it references alive until its completion.
    fn push_chain(&mut self, entries: &[squeue::Entry]) {
        if self.failed.is_some() {
            return;
        }
        debug_assert!(entries.len() <= self.ring.params().sq_entries() as usize);
        loop {
            let room = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if room >= entries.len() {
                break;
            }
            // Not enough room: hand what we have to the kernel and retry.
            match self.ring.submit() {
                Ok(_) => {}
                // Kernels before 5.19 refuse submissions while completions that overflowed
                // the CQ wait in the kernel's backlog: make room (the completions are handed
                // out by the next `drain`) so the backlog can flush, instead of spinning.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.stash_completions(),
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
            self.ring
                .submission()
                .push_multiple(entries)
                .expect("room reserved above");
        }
        self.inflight += entries.len();
    }

    /// Moves the completions in the CQ to `stashed` (to free CQ space mid-turn).
    fn stash_completions(&mut self) {
        let cq = self.ring.completion();
        self.stashed.extend(cq.map(completion_of));
    }
}

/// The engine's view of a CQE: `more` and the provided buffer decoded from its flags.
fn completion_of(c: cqueue::Entry) -> Completion {
    let flags = c.flags();
    Completion {
        user_data: c.user_data(),
        result: c.result(),
        more: cqueue::more(flags),
        buf: cqueue::buffer_select(flags).map(|b| RecvBuf(u32::from(b))),
    }
}

impl Driver for UringDriver {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    /// Multishot accept into kernel-allocated direct descriptors, or (near the connection
    /// cap) one accept: a multishot accept keeps taking connections from the backlog and the
    /// kernel closes any it cannot fit in the table, where a single accept leaves them queued.
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
        self.push(e.user_data(user_data));
    }

    /// Multishot receive on the direct descriptor from the shard's buffer ring.
    fn recv(&mut self, sock: Sock, user_data: u64) {
        let e = opcode::RecvMulti::new(Fixed(sock.0), self.bufs.group())
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// A single chunk goes as `IORING_OP_SEND` (no `msghdr` to import: cheaper than
    /// `IORING_OP_SENDMSG`), more as `IORING_OP_SENDMSG`.
    unsafe fn send(&mut self, sock: Sock, data: Prepared, user_data: u64) {
        let e = match data {
            Prepared::Single { ptr, len } => opcode::Send::new(Fixed(sock.0), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            Prepared::Gathered { msg, .. } => opcode::SendMsg::new(Fixed(sock.0), msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build(),
        };
        self.push(e.user_data(user_data));
    }

    fn shutdown_write(&mut self, sock: Sock, user_data: u64) {
        let e = opcode::Shutdown::new(Fixed(sock.0), libc::SHUT_WR)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    fn cancel_sock(&mut self, sock: Sock, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fixed(sock.0)).all())
            .build()
            .user_data(user_data);
        self.push(e);
    }

    fn cancel(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(target).all())
            .build()
            .user_data(user_data);
        self.push(e);
    }

    fn close(&mut self, sock: Sock, user_data: u64) {
        let e = opcode::Close::new(Fixed(sock.0))
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// A new TCP socket in a kernel-allocated direct descriptor.
    fn socket(&mut self, domain: i32, user_data: u64) {
        let e = opcode::Socket::new(domain, libc::SOCK_STREAM, 0)
            .file_index(Some(io_uring::types::DestinationSlot::auto_target()))
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// TCP_NODELAY, an optional bind, then connect — linked, and queued as one unit so the
    /// chain reaches the kernel whole.
    unsafe fn connect(&mut self, sock: Sock, ctx: &ConnectCtx, setup_ud: u64, connect_ud: u64) {
        let fd = Fixed(sock.0);
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
        self.push_chain(&chain[..=n]);
    }

    /// Installs the direct descriptor into the process fd table
    /// (`IORING_OP_FIXED_FD_INSTALL`).
    fn lookup_peer(&mut self, sock: Sock, user_data: u64) {
        let e = opcode::FixedFdInstall::new(Fixed(sock.0), 0)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Arms the 8-byte read of the shard's doorbell eventfd. The word it lands in belongs to
    /// the driver, which frees it only when no operation is in flight.
    fn read_doorbell(&mut self, eventfd: RawFd, user_data: u64) {
        let e = opcode::Read::new(Fd(eventfd), self.doorbell_buf.cast(), 8)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// One `io_uring_enter`: submits everything queued and waits. A full completion backlog
    /// (EBUSY) is not an error either.
    fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let r = match timeout {
            // Completions already stashed: submit, don't wait.
            _ if !self.stashed.is_empty() => self.ring.submit(),
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match r {
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
        }
    }

    fn drain(&mut self, out: &mut Vec<Completion>) {
        let start = out.len();
        out.append(&mut self.stashed);
        let cq = self.ring.completion();
        out.extend(cq.map(completion_of));
        let finished = out[start..].iter().filter(|c| !c.more).count();
        self.inflight = self.inflight.saturating_sub(finished);
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    fn cancel_any(&mut self) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(0);
        self.push(e);
        let _ = self.ring.submit();
    }

    unsafe fn buffer<'a>(&self, buf: RecvBuf, len: usize) -> &'a [u8] {
        // SAFETY: forwarded contract; buffer ids of this ring fit in u16.
        unsafe { self.bufs.get(buf.0 as u16, len) }
    }

    fn recycle(&mut self, buf: RecvBuf) {
        self.bufs.recycle(buf.0 as u16);
    }

    fn publish_buffers(&mut self) {
        self.bufs.publish();
    }
}
/// Builds a ring of `entries` (completion queue 4x), probing SINGLE_ISSUER and
/// DEFER_TASKRUN. The kernel allocates each ring as physically contiguous pages, which can
/// fail with ENOMEM on a machine whose memory is fragmented (e.g. full of page cache) even
/// with plenty available; the ring is then halved (down to 64 entries) rather than failing.
fn build_ring(mut entries: u32) -> Result<(IoUring, Features), EngineError> {
    loop {
        match try_build_ring(entries) {
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

fn try_build_ring(entries: u32) -> io::Result<(IoUring, Features)> {
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
        assert!(unsafe { libc::dup2(null.as_raw_fd(), d.ring.as_raw_fd()) } >= 0);
        let mut f = SubmitFailures::default();
        let r = d.submit_and_wait(Some(Duration::from_millis(1)));
        assert!(r.is_err(), "submitting to a non-ring fails");
        assert!(f.record(r, Instant::now()).is_err(), "and stops the shard");
    }
}
