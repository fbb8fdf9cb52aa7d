//! Close codes (RFC 6455 §7.4) and the Close frame body.

use core::fmt;

/// A WebSocket close status code. An open set (like ringport's own codes), so a newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept (ringport: text messages).
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no code received (local only, never sent).
    pub const NO_STATUS: Self = Self(1005);
    /// 1007: payload data inconsistent with its type (bad UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a policy was violated.
    pub const POLICY: Self = Self(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: an unexpected condition on the server.
    pub const INTERNAL: Self = Self(1011);
    /// Base of the private range ringport uses for its own close reasons
    /// (`4000 + ringport_proto::CloseReason`, docs/protocol.md).
    pub const RINGPORT_BASE: u16 = 4000;
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

/// Whether `code` may appear in a Close frame on the wire (§7.4.1, §7.4.2): 1000–1003,
/// 1007–1014 and the registered/private ranges 3000–4999. 1004–1006 and 1015 are reserved
/// or local-only; everything below 1000, 1016–2999 and above 4999 is invalid.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A decoded Close frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason (UTF-8, at most 123 bytes).
    pub reason: String,
}
