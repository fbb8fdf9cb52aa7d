//! The crate's one error type.
//!
//! Every variant names its cause, so the gateway can map it to a close reason
//! ([`Error::close_reason`]) and to a metric label without parsing text.

use core::fmt;

use crate::codes::CloseReason;
use crate::frame::Op;

/// Everything that can go wrong while decoding a frame or driving a session.
///
/// Decoding never panics: any input either yields a frame, asks for more
/// bytes (`Ok(None)`), or yields one of these.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The header declares a payload longer than the configured maximum.
    /// Detected from the 8-byte header alone, before any body byte is read.
    FrameTooLarge {
        /// Payload length the peer declared.
        declared: u32,
        /// Largest payload length this decoder accepts.
        max: u32,
    },
    /// The header's version byte is not one this implementation speaks.
    BadVersion {
        /// Version byte found on the wire.
        found: u8,
    },
    /// The header's op code is not assigned in this protocol version.
    UnknownOp {
        /// Op code found on the wire.
        op: u8,
    },
    /// The header sets flag bits that are reserved for this op.
    ReservedFlags {
        /// Op the flags were found on.
        op: Op,
        /// The full flags field.
        flags: u16,
    },
    /// The payload ended before a field it must contain.
    Truncated {
        /// Op whose payload was short.
        op: Op,
        /// Field that could not be read.
        field: &'static str,
    },
    /// The payload has bytes left over after its last field.
    TrailingBytes {
        /// Op whose payload was too long.
        op: Op,
        /// Number of unread bytes.
        extra: usize,
    },
    /// A text field is not valid UTF-8.
    InvalidUtf8 {
        /// Field that held the bad text.
        field: &'static str,
    },
    /// A stream name has a kind byte that is neither room nor user.
    UnknownStreamKind {
        /// Kind byte found on the wire.
        kind: u8,
    },
    /// A name field (room, user id) is empty.
    EmptyName {
        /// Field that was empty.
        field: &'static str,
    },
    /// A field is too long to encode (e.g. a room name over 255 bytes).
    FieldTooLong {
        /// Field that overflowed.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// Largest encodable length.
        max: usize,
    },
    /// A field holds a value outside its defined set (e.g. a resume outcome).
    InvalidValue {
        /// Field that held the value.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// The gateway called a session method that its current state forbids
    /// (e.g. `accept` twice). The session is unchanged.
    InvalidState {
        /// Method that was called.
        action: &'static str,
        /// State the session was in.
        state: crate::session::State,
    },
}

impl Error {
    /// The close reason a server sends when this error ends a connection.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            Error::FrameTooLarge { .. } => CloseReason::FRAME_TOO_LARGE,
            Error::BadVersion { .. } => CloseReason::UNSUPPORTED_VERSION,
            Error::InvalidState { .. } => CloseReason::INTERNAL,
            _ => CloseReason::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::FrameTooLarge { declared, max } => {
                write!(f, "frame payload of {declared} bytes exceeds maximum {max}")
            }
            Error::BadVersion { found } => write!(f, "unsupported protocol version {found}"),
            Error::UnknownOp { op } => write!(f, "unknown op code {op:#04x}"),
            Error::ReservedFlags { op, flags } => {
                write!(f, "reserved flag bits set on {op:?}: {flags:#06x}")
            }
            Error::Truncated { op, field } => write!(f, "{op:?} payload truncated at {field}"),
            Error::TrailingBytes { op, extra } => {
                write!(f, "{op:?} payload has {extra} trailing bytes")
            }
            Error::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            Error::UnknownStreamKind { kind } => write!(f, "unknown stream kind {kind}"),
            Error::EmptyName { field } => write!(f, "{field} is empty"),
            Error::FieldTooLong { field, len, max } => {
                write!(f, "{field} is {len} bytes, maximum {max}")
            }
            Error::InvalidValue { field, value } => write!(f, "{field} has invalid value {value}"),
            Error::InvalidState { action, state } => {
                write!(f, "{action} is not allowed in state {state:?}")
            }
        }
    }
}

impl std::error::Error for Error {}
