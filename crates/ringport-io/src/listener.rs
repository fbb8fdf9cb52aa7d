//! Listening sockets and thread placement.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::EngineError;

/// One SO_REUSEPORT listener per shard on the same address; a port of 0 is resolved by the
/// first bind and reused for the rest. The kernel spreads incoming connections over them.
pub(crate) fn bind_all(
    addr: SocketAddr,
    n: usize,
    backlog: u32,
) -> Result<(Vec<OwnedFd>, SocketAddr), EngineError> {
    let mut out = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n {
        let err = |source| EngineError::Listen {
            addr: bound,
            source,
        };
        let s = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        // Accepted sockets inherit TCP_NODELAY from the listener.
        s.set_tcp_nodelay(true).map_err(err)?;
        s.bind(&bound.into()).map_err(err)?;
        s.listen(backlog.min(i32::MAX as u32) as i32).map_err(err)?;
        if bound.port() == 0 {
            bound = s.local_addr().map_err(err)?.as_socket().unwrap_or(bound);
        }
        out.push(OwnedFd::from(s));
    }
    Ok((out, bound))
}

/// Pins the calling thread to `cpu` (best effort; logged on failure).
pub(crate) fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bitmask for which all-zero is the empty set; CPU_SET and
    // sched_setaffinity only read/write that local set.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "could not pin shard thread");
    }
}

/// Asks the scheduler for time slice `slice` for the calling thread (best effort; logged on
/// failure): `sched_setattr(2)` with the normal policy, the thread's nice value and
/// `sched_runtime` = the slice, which EEVDF (Linux 6.12+) takes as the thread's requested
/// slice and older kernels ignore for a normal thread.
pub(crate) fn set_sched_slice(slice: std::time::Duration) {
    /// `struct sched_attr` as of its first published size (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    // SAFETY: getpriority only reads the calling thread's nice value; errno is cleared first
    // so that -1 (a valid nice value) can be told from an error.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if n == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            n
        }
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        deadline: 0,
        period: 0,
    };
    // SAFETY: the kernel reads `size` bytes of `attr`, a live, initialised local laid out as
    // the kernel's struct of that size; pid 0 is the calling thread; nothing is retained.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if rc != 0 {
        tracing::warn!(slice_us = slice.as_micros() as u64, error = %std::io::Error::last_os_error(), "could not set the shard thread's scheduler slice");
    }
}

/// The process's soft open-file limit (the kernel caps a direct descriptor table at it).
pub(crate) fn nofile_limit() -> u64 {
    // SAFETY: getrlimit writes into the local struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur
        } else {
            1024
        }
    }
}
