//! The one error type: every way a peer can break RFC 6455, each with its close code.

use core::fmt;

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer. The connection must be closed with
/// [`Error::close_code`] (a Close frame carrying it, then the TCP connection).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// RSV1–3 set without a negotiated extension (§5.2).
    ReservedBits(u8),
    /// A reserved opcode, 0x3–0x7 or 0xB–0xF (§5.2).
    UnknownOpcode(u8),
    /// A client frame without a mask (§5.1: the server must close).
    Unmasked,
    /// A server frame with a mask (§5.1: the client must close).
    Masked,
    /// A payload length not in its minimal encoding (§5.2).
    NonMinimalLength,
    /// A 64-bit payload length with the most significant bit set (§5.2).
    LengthOverflow,
    /// A control frame without FIN (§5.5: control frames must not be fragmented).
    FragmentedControl,
    /// A control frame with a payload over 125 bytes (§5.5).
    ControlTooLong(u64),
    /// A text message: ringport carries binary messages only (close code 1003).
    TextMessage,
    /// A continuation frame with no message to continue (§5.4).
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is still open (§5.4).
    ExpectedContinuation,
    /// A message whose frames declare more than the limit (close code 1009), refused from
    /// the frame header before its payload is buffered.
    MessageTooBig {
        /// Bytes the message would reach with this frame.
        declared: u64,
        /// The limit.
        max: u64,
    },
    /// A Close payload of one byte (§5.5.1: a body starts with a two-byte code).
    BadClosePayload,
    /// A close code that must not be sent on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8 (§5.5.1, close code 1007).
    BadUtf8,
}

impl Error {
    /// The close code to answer this violation with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Error::TextMessage => CloseCode::UNSUPPORTED_DATA,
            Error::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Error::BadUtf8 => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Error::ReservedBits(_) => "reserved_bits",
            Error::UnknownOpcode(_) => "unknown_opcode",
            Error::Unmasked => "unmasked",
            Error::Masked => "masked",
            Error::NonMinimalLength => "non_minimal_length",
            Error::LengthOverflow => "length_overflow",
            Error::FragmentedControl => "fragmented_control",
            Error::ControlTooLong(_) => "control_too_long",
            Error::TextMessage => "text_message",
            Error::UnexpectedContinuation => "unexpected_continuation",
            Error::ExpectedContinuation => "expected_continuation",
            Error::MessageTooBig { .. } => "message_too_big",
            Error::BadClosePayload => "bad_close_payload",
            Error::InvalidCloseCode(_) => "invalid_close_code",
            Error::BadUtf8 => "bad_utf8",
        }
    }

    /// Every label [`Error::label`] can return (metrics pre-register them).
    pub const LABELS: [&'static str; 15] = [
        "reserved_bits",
        "unknown_opcode",
        "unmasked",
        "masked",
        "non_minimal_length",
        "length_overflow",
        "fragmented_control",
        "control_too_long",
        "text_message",
        "unexpected_continuation",
        "expected_continuation",
        "message_too_big",
        "bad_close_payload",
        "invalid_close_code",
        "bad_utf8",
    ];
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReservedBits(b) => write!(f, "reserved bits {b:#x} set (no extension)"),
            Error::UnknownOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Error::Unmasked => f.write_str("client frame not masked"),
            Error::Masked => f.write_str("server frame masked"),
            Error::NonMinimalLength => f.write_str("payload length not minimally encoded"),
            Error::LengthOverflow => f.write_str("64-bit payload length with the top bit set"),
            Error::FragmentedControl => f.write_str("fragmented control frame"),
            Error::ControlTooLong(n) => write!(f, "control frame of {n} bytes (at most 125)"),
            Error::TextMessage => f.write_str("text messages are not accepted; send binary"),
            Error::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            Error::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message")
            }
            Error::MessageTooBig { declared, max } => {
                write!(f, "message of {declared} bytes (at most {max})")
            }
            Error::BadClosePayload => f.write_str("close payload of one byte"),
            Error::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            Error::BadUtf8 => f.write_str("close reason is not UTF-8"),
        }
    }
}

impl std::error::Error for Error {}
