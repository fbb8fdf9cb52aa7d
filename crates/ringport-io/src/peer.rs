//! Peer addresses of accepted connections.
//!
//! Multishot accept cannot return a peer address per connection, so the shard installs the
//! direct descriptor into the fd table for a moment (`IORING_OP_FIXED_FD_INSTALL`), asks
//! `getpeername`, and closes that extra descriptor at once.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

pub(crate) fn peer_addr_of_installed(fd: i32) -> Option<SocketAddr> {
    // SAFETY: `fd` was just installed for us by IORING_OP_FIXED_FD_INSTALL; nothing else
    // owns it, so taking ownership (and closing it on drop) is sound.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = socket2::Socket::from(owned);
    sock.peer_addr().ok().and_then(|a| a.as_socket())
}
