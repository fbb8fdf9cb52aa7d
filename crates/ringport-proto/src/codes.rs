//! Numeric codes carried on the wire: close reasons and request statuses.
//!
//! Both are open sets: a v1 peer must accept codes it does not know (a newer
//! peer may send them), so they are `u16` newtypes with named constants rather
//! than closed enums. The table in `docs/protocol.md` lists the same values.

use core::fmt;

/// Why a connection is being closed (CLOSE frame, `Event::Closed`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseReason(pub u16);

impl CloseReason {
    /// Orderly close requested by the peer or the application.
    pub const NORMAL: Self = Self(0);
    /// The server is shutting down or draining; reconnect elsewhere.
    pub const GOING_AWAY: Self = Self(1);
    /// The peer broke the protocol (bad frame, frame not allowed in this state).
    pub const PROTOCOL_ERROR: Self = Self(2);
    /// No inbound frame for `close_after_misses` heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: Self = Self(3);
    /// No completed handshake within the handshake deadline.
    pub const HANDSHAKE_TIMEOUT: Self = Self(4);
    /// The gateway rejected the HELLO (bad or expired token).
    pub const AUTH_FAILED: Self = Self(5);
    /// A frame declared a payload over the maximum frame size.
    pub const FRAME_TOO_LARGE: Self = Self(6);
    /// The frame header's version byte is not supported.
    pub const UNSUPPORTED_VERSION: Self = Self(7);
    /// A policy limit was hit (rate limit, slow consumer, too many rooms).
    pub const POLICY: Self = Self(8);
    /// Another connection resumed this session.
    pub const REPLACED: Self = Self(9);
    /// Server-side failure.
    pub const INTERNAL: Self = Self(10);
    /// Local only, never sent: the transport (socket) closed without a CLOSE.
    pub const CONNECTION_LOST: Self = Self(0xFFFF);

    /// Symbolic name, or `None` for a code this version does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NORMAL",
            1 => "GOING_AWAY",
            2 => "PROTOCOL_ERROR",
            3 => "HEARTBEAT_TIMEOUT",
            4 => "HANDSHAKE_TIMEOUT",
            5 => "AUTH_FAILED",
            6 => "FRAME_TOO_LARGE",
            7 => "UNSUPPORTED_VERSION",
            8 => "POLICY",
            9 => "REPLACED",
            10 => "INTERNAL",
            0xFFFF => "CONNECTION_LOST",
            _ => return None,
        })
    }
}

impl fmt::Debug for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "CloseReason({})", self.0),
        }
    }
}

/// Outcome of a request (JOIN/LEAVE result, PUBLISH_ACK) or the code of an
/// ERROR frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Status {
    /// The request succeeded.
    pub const OK: Self = Self(0);
    /// The room or stream does not exist.
    pub const NOT_FOUND: Self = Self(1);
    /// The client is not allowed to do this.
    pub const FORBIDDEN: Self = Self(2);
    /// A per-connection limit (rooms, subscriptions) would be exceeded.
    pub const LIMIT_EXCEEDED: Self = Self(3);
    /// Too many requests; retry later.
    pub const RATE_LIMITED: Self = Self(4);
    /// PUBLISH or LEAVE on a room the client has not joined.
    pub const NOT_JOINED: Self = Self(5);
    /// The request is malformed at the application level (e.g. bad room name).
    pub const INVALID: Self = Self(6);
    /// Server-side failure.
    pub const INTERNAL: Self = Self(7);

    /// Symbolic name, or `None` for a code this version does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "OK",
            1 => "NOT_FOUND",
            2 => "FORBIDDEN",
            3 => "LIMIT_EXCEEDED",
            4 => "RATE_LIMITED",
            5 => "NOT_JOINED",
            6 => "INVALID",
            7 => "INTERNAL",
            _ => return None,
        })
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Status({})", self.0),
        }
    }
}
