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
