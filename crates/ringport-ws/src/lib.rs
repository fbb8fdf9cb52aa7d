//! WebSocket (RFC 6455) for ringport, sans-IO: the upgrade handshake and the framing.
//!
//! Like `ringport-proto`, this crate reads no clock and touches no socket: the caller feeds it
//! bytes and sends what it returns. The gateway runs it between the engine's byte stream and
//! the protocol [`Session`](../ringport_proto/struct.Session.html); the Rust SDK runs the
//! client side of the same code.
//!
//! ```text
//!  engine bytes -> [TLS, later] -> first bytes "GET "? -> handshake::accept -> Decoder -> Session
//!  Session frames -> encode header (+ shared payload) -> [TLS, later] -> engine
//! ```
//!
//! TLS slots in *under* this layer: it turns ciphertext into the same plaintext byte stream
//! this crate consumes, and encrypts what it produces; nothing here assumes a TCP socket.
//!
//! - [`handshake`]: the HTTP/1.1 upgrade request parsed with `httparse` (bounded in size),
//!   checked against RFC 6455 §4.2.1 (method, version, `Upgrade`, `Connection`,
//!   `Sec-WebSocket-Key`, path and subprotocol), answered with `101` or a plain HTTP error;
//!   and the client side (request, `Sec-WebSocket-Accept` check).
//! - [`Decoder`]: incremental frame decoding over the caller's receive buffer with every
//!   RFC 6455 §5 rule enforced; each violation is an [`Error`] with its close code.
//! - [`encode_header`], [`encode_frame`], [`close_payload`]: the sending side.
//!
//! # Why the framing is written here rather than taken from a crate
//!
//! The well-kept crates (`tungstenite`, `fastwebsockets`, `soketto`) own the stream: they read
//! from a `Read`/`AsyncRead` and buffer a whole message before handing it over. ringport's
//! engine hands each shard borrowed receive-ring buffers and wants (a) data frames passed on
//! as their bytes arrive, unmasked in place, so a connection never holds a second copy of a
//! message (the protocol decoder behind it already bounds frame sizes), (b) the size of a
//! message refused from its frame headers before any payload is buffered, and (c) a frame
//! header encoded separately from a shared `Bytes` payload, so a broadcast is encoded once
//! and sent to every WebSocket connection without a per-connection copy. None of them offers
//! that as a sans-IO API, and the framing is about 300 lines. The parts that are not
//! ringport-specific come from crates: `httparse` (HTTP), `sha1` and `base64` (the accept key).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod close;
mod decode;
mod encode;
mod error;
pub mod handshake;

#[doc(hidden)]
pub mod fuzzing;

pub use close::{is_valid_close_code, CloseCode, CloseFrame};
pub use decode::{Decoder, Incoming, Role};
pub use encode::{apply_mask, close_payload, encode_frame, encode_header, Header, MAX_HEADER};
pub use error::Error;

/// The subprotocol a ringport client must offer (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "ringport.v1";
/// The default request path of the WebSocket endpoint.
pub const DEFAULT_PATH: &str = "/ringport";
/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation = 0x0,
    /// First (or only) frame of a text message.
    Text = 0x1,
    /// First (or only) frame of a binary message.
    Binary = 0x2,
    /// Close (control).
    Close = 0x8,
    /// Ping (control).
    Ping = 0x9,
    /// Pong (control).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode of a 4-bit value; `None` for the reserved values 0x3–0x7 and 0xB–0xF.
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}
