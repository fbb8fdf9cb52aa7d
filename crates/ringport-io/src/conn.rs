//! Connection slots: the engine's per-connection state (the "connection context" of IOCP
//! servers, split from the pooled per-operation contexts in `sendq`).
//!
//! A slot is small and owns no heap memory while the connection is idle: no receive buffer
//! (the kernel picks one from the shard's ring only when bytes arrive), no send buffer (the
//! queue is three integers into the shard's pool), and at most one timer-wheel entry.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use crate::sendq::SendQueue;
use crate::sys::Sock;
use crate::{CloseReason, Origin};

/// No socket.
pub(crate) const NO_FD: Sock = Sock::NONE;
/// No deadline / no wheel entry.
pub(crate) const NEVER: u64 = u64::MAX;
/// No pooled context.
pub(crate) const NO_CTX: u32 = u32::MAX;

/// Where a connection is in its life. Closing is layered: `Draining` (queue drains, peer
/// may still send) → `FinSent` (our FIN is out, waiting for the peer's) → `Closing`
/// (operations cancelled, descriptor closed) → `Free` once no operation is outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Free,
    /// Outbound: socket/bind/connect in progress.
    Connecting,
    Open,
    Draining,
    FinSent,
    Closing,
}

pub(crate) struct Slot {
    /// Bumped on free: ids and user_data of the previous occupant go stale.
    pub gen: u32,
    /// The socket (as the backend names it), or `NO_FD`.
    pub fd: Sock,
    pub state: State,
    /// Ring operations in flight for this slot; the slot is freed only at zero.
    pub ops: u16,
    pub recv_armed: bool,
    /// In the shard's dirty list or send backlog (queue needs a send this or a later turn).
    pub dirty: bool,
    /// In the shard's re-arm list (receive stopped on ENOBUFS).
    pub waiting_buffers: bool,
    /// The peer's FIN arrived.
    pub peer_eof: bool,
    /// Receiving is paused (`Ctx::pause_receiving`): nothing re-arms a receive until the
    /// deadline kept in the core's side table (`Core::pauses`).
    pub paused: bool,
    /// The handler was told of this connection (`on_open`, or an outbound connect it
    /// started), so it is owed exactly one `on_close`. An accepted connection is announced
    /// once its peer address is known (when `resolve_peer_addr`); one refused over the cap
    /// never is.
    pub announced: bool,
    /// Its backlog was dropped (`Ctx::drop_unsent`): a goodbye may pass the high-water mark
    /// by [`crate::core::SHED_ALLOWANCE`].
    pub shed: bool,
    pub origin: Origin,
    /// After our FIN (`FinSent`): KiB the peer may still send (read and discarded) before
    /// the close is cut short (`EngineConfig::close_discard_max_bytes`).
    pub discard_left: u16,
    pub q: SendQueue,
    /// Handler timer, or linger deadline while closing (tick), or `NEVER`.
    pub timer: u64,
    /// Tick of this slot's one live wheel entry, or `NEVER`.
    pub wheel: u64,
    /// Tick of the last receive (idle timeout).
    pub last_recv: u64,
    /// Tick the slot was taken (`Core::instant_of` turns it back into an `Instant`): 8
    /// bytes where an `Instant` is 16.
    pub opened_at: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Receives (saturating at `u32::MAX`: 4 bytes where a `u64` would grow the slot).
    pub recvs: u32,
    pub msgs_out: u64,
    /// The peer's address: IPv4 inline, IPv6 in the core's side table (`Core::peer`).
    pub peer: PeerAddr,
    /// Pooled outbound-connect context, or `NO_CTX`.
    pub connect: u32,
}

impl Slot {
    pub fn new() -> Slot {
        Slot {
            gen: 0,
            fd: NO_FD,
            state: State::Free,
            ops: 0,
            recv_armed: false,
            dirty: false,
            waiting_buffers: false,
            peer_eof: false,
            paused: false,
            announced: false,
            shed: false,
            origin: Origin::Accepted,
            discard_left: 0,
            q: SendQueue::default(),
            timer: NEVER,
            wheel: NEVER,
            last_recv: 0,
            opened_at: 0,
            bytes_in: 0,
            bytes_out: 0,
            recvs: 0,
            msgs_out: 0,
            peer: PeerAddr::NONE,
            connect: NO_CTX,
        }
    }

    /// Resets everything but the generation for the next occupant.
    pub fn reset(&mut self) {
        let (gen, dirty) = (self.gen, self.dirty);
        *self = Slot::new();
        self.gen = gen;
        // Still listed in the core's dirty list or send backlog (a slot freed and reused
        // before its turn came): the listing serves the new connection, so it is not
        // listed twice.
        self.dirty = dirty;
    }

    /// The connection can still receive (open or closing gracefully) and is not paused.
    pub fn receiving(&self) -> bool {
        !self.paused && matches!(self.state, State::Open | State::Draining | State::FinSent)
    }
}

/// A slot's peer address in 6 bytes instead of `Option<SocketAddr>`'s 32 (issue 16: a
/// million slots): an IPv4 address and port inline (big-endian, byte-aligned so the slot packs
/// it with its other small fields); an IPv6 address only marked here and kept in the core's
/// side table keyed by slot, because a gateway's peers are overwhelmingly IPv4 (and every
/// loopback benchmark is). A connected TCP peer never has port 0, so port 0 marks the other
/// cases: all zero is no address, ip 1 is "in the side table".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerAddr([u8; 6]);

impl PeerAddr {
    pub const NONE: PeerAddr = PeerAddr([0; 6]);
    /// Marks an address kept elsewhere (IPv6, or an IPv4 one with port 0).
    pub const ELSEWHERE: PeerAddr = PeerAddr([0, 0, 0, 1, 0, 0]);

    /// The compact form of `addr`, or `None` when it must go to the side table.
    pub fn v4(addr: SocketAddr) -> Option<PeerAddr> {
        match addr {
            SocketAddr::V4(a) if a.port() != 0 => {
                let mut b = [0; 6];
                b[..4].copy_from_slice(&a.ip().octets());
                b[4..].copy_from_slice(&a.port().to_be_bytes());
                Some(PeerAddr(b))
            }
            _ => None,
        }
    }

    fn port(&self) -> u16 {
        u16::from_be_bytes([self.0[4], self.0[5]])
    }

    /// The address if it is held inline.
    pub fn inline(&self) -> Option<SocketAddr> {
        let [a, b, c, d, ..] = self.0;
        (self.port() != 0)
            .then(|| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), self.port())))
    }

    /// The address lives in the side table.
    pub fn is_elsewhere(&self) -> bool {
        *self == PeerAddr::ELSEWHERE
    }
}

/// The lifecycle state reported in [`ConnInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Outbound connect in progress.
    Connecting,
    /// Open.
    Open,
    /// Closing (queue draining or descriptor closing).
    Closing,
}

/// What the engine knows about one connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address (accepted connections: when `resolve_peer_addr`, shortly after
    /// accept; outbound: the target).
    pub peer: Option<SocketAddr>,
    /// Accepted or outbound.
    pub origin: Origin,
    /// Lifecycle state.
    pub state: ConnState,
    /// When the slot was taken (accept or connect start).
    pub opened_at: Instant,
    /// When bytes last arrived (timer-tick precision).
    pub last_recv: Instant,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Receive completions.
    pub recvs: u64,
    /// Payloads queued for sending.
    pub msgs_out: u64,
    /// Bytes queued and not yet sent.
    pub queued_bytes: usize,
}

/// Pooled context of an outbound connect: addresses the kernel reads asynchronously.
pub(crate) struct ConnectCtx {
    pub addr: socket2::SockAddr,
    pub bind: Option<socket2::SockAddr>,
    /// TCP_NODELAY's value (the kernel reads it from here).
    pub one: i32,
    /// First error of the linked setup (setsockopt/bind), reported instead of ECANCELED.
    pub setup_err: i32,
}

pub(crate) fn reason_from_errno(errno: i32) -> CloseReason {
    match errno {
        libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => CloseReason::PeerReset,
        e => CloseReason::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_stays_small() {
        // A million connections means a million slots (issue 16): 144 bytes before the peer
        // address went inline (6 bytes, not 32) and the open time became a tick.
        assert!(
            std::mem::size_of::<Slot>() <= 112,
            "Slot grew to {} bytes",
            std::mem::size_of::<Slot>()
        );
        assert_eq!(std::mem::size_of::<PeerAddr>(), 6);
    }

    #[test]
    fn peer_addr_keeps_v4_inline_and_marks_v6() {
        let v4: SocketAddr = "127.0.0.9:4242".parse().unwrap();
        assert_eq!(PeerAddr::v4(v4).unwrap().inline(), Some(v4));
        let v6: SocketAddr = "[::1]:4242".parse().unwrap();
        assert_eq!(PeerAddr::v4(v6), None);
        let port0: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(PeerAddr::v4(port0), None, "port 0 marks the other cases");
        assert!(!PeerAddr::v4(v4).unwrap().is_elsewhere());
        assert!(PeerAddr::ELSEWHERE.is_elsewhere());
        assert_eq!(PeerAddr::NONE.inline(), None);
    }
}
