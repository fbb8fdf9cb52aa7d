//! The fixed 8-byte frame header and the op code table.
//!
//! ```text
//!  0        1        2                 4                                 8
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! |version |   op   |  flags (u16 BE) |     payload length (u32 BE)       |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! ```
//!
//! The header layout is frozen for every protocol version, so any version can
//! read another's header (and a CLOSE saying "unsupported version").

use crate::error::Error;

/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Default maximum payload length (64 KiB).
pub const DEFAULT_MAX_PAYLOAD: u32 = 64 * 1024;
/// Largest payload accepted before WELCOME, whatever the configured maximum (protocol.md
/// section 1): a connection that has not authenticated can make the server buffer no more.
pub const HANDSHAKE_MAX_PAYLOAD: u32 = 64 * 1024;

/// PUSH flag: deliver even to a sleeping client, ahead of held room traffic.
pub const FLAG_URGENT: u16 = 0x0001;

/// Operation codes (byte 1 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Client → server: authenticate and optionally resume.
    Hello = 0x01,
    /// Server → client: handshake accepted.
    Welcome = 0x02,
    /// Either direction: liveness probe; the receiver answers PONG.
    Ping = 0x03,
    /// Either direction: answer to PING, echoing its nonce.
    Pong = 0x04,
    /// Client → server: join a room.
    Join = 0x05,
    /// Client → server: leave a room.
    Leave = 0x06,
    /// Server → client: result of a JOIN or LEAVE.
    RoomResult = 0x07,
    /// Client → server: publish a message to a room.
    Publish = 0x08,
    /// Server → client: result of a PUBLISH.
    PublishAck = 0x09,
    /// Server → client: a message on a stream.
    Push = 0x0A,
    /// Client → server: cumulative acknowledgement of a user-inbox stream.
    Ack = 0x0B,
    /// Server → client: outcome of resuming one stream after HELLO.
    ResumeResult = 0x0C,
    /// Client → server: enter sleep mode with a longer heartbeat interval.
    Sleep = 0x0D,
    /// Server → client: sleep granted, with the interval actually granted.
    SleepAck = 0x0E,
    /// Client → server: leave sleep mode.
    Wake = 0x0F,
    /// Server → client: awake again; lists the offsets to resume from.
    WakeAck = 0x10,
    /// Server → client: a non-fatal error report.
    Error = 0x11,
    /// Either direction: the sender is closing the connection.
    Close = 0x12,
}

impl Op {
    /// Every op, in code order (used by tests and the spec generator).
    pub const ALL: [Op; 18] = [
        Op::Hello,
        Op::Welcome,
        Op::Ping,
        Op::Pong,
        Op::Join,
        Op::Leave,
        Op::RoomResult,
        Op::Publish,
        Op::PublishAck,
        Op::Push,
        Op::Ack,
        Op::ResumeResult,
        Op::Sleep,
        Op::SleepAck,
        Op::Wake,
        Op::WakeAck,
        Op::Error,
        Op::Close,
    ];

    /// Parse an op code byte.
    pub fn from_u8(b: u8) -> Result<Op, Error> {
        match b {
            0x01..=0x12 => Ok(Op::ALL[usize::from(b - 1)]),
            op => Err(Error::UnknownOp { op }),
        }
    }

    /// Flag bits that are defined for this op; all others must be zero.
    pub fn allowed_flags(self) -> u16 {
        match self {
            Op::Push => FLAG_URGENT,
            _ => 0,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Operation carried by the frame.
    pub op: Op,
    /// Op-specific flag bits (only defined bits may be set).
    pub flags: u16,
    /// Length of the payload that follows the header.
    pub len: u32,
}

impl Header {
    /// Parse and validate a header from its 8 bytes.
    ///
    /// Checks, in order: version, op, length against `max_payload`, flags.
    /// The length check happens here, before any payload byte is read.
    pub fn parse(b: &[u8; HEADER_LEN], max_payload: u32) -> Result<Header, Error> {
        if b[0] != VERSION {
            return Err(Error::BadVersion { found: b[0] });
        }
        let op = Op::from_u8(b[1])?;
        let flags = u16::from_be_bytes([b[2], b[3]]);
        let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        if len > max_payload {
            return Err(Error::FrameTooLarge {
                declared: len,
                max: max_payload,
            });
        }
        if flags & !op.allowed_flags() != 0 {
            return Err(Error::ReservedFlags { op, flags });
        }
        Ok(Header { op, flags, len })
    }

    /// Whether `b`, whose version byte is not [`VERSION`], is a HELLO header of another
    /// version: the first step of a version negotiation (docs/protocol.md §10; the header's
    /// layout is frozen for every version), as opposed to bytes that only happen to fail at
    /// the version byte. A HELLO in any version keeps its op code, defines no flag and fits
    /// the handshake maximum; random bytes meet all three about once in 2^24.
    pub fn is_version_offer(b: &[u8; HEADER_LEN]) -> bool {
        let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        b[0] != VERSION
            && b[1] == Op::Hello as u8
            && b[2..4] == [0, 0]
            && len <= HANDSHAKE_MAX_PAYLOAD
    }

    /// The header's 8 wire bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let f = self.flags.to_be_bytes();
        let l = self.len.to_be_bytes();
        [VERSION, self.op as u8, f[0], f[1], l[0], l[1], l[2], l[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_versions_hello_is_an_offer_and_garbage_is_not() {
        let hello = |version: u8, flags: [u8; 2], len: u32| {
            let l = len.to_be_bytes();
            [
                version,
                Op::Hello as u8,
                flags[0],
                flags[1],
                l[0],
                l[1],
                l[2],
                l[3],
            ]
        };
        assert!(Header::is_version_offer(&hello(2, [0, 0], 120)));
        assert!(Header::is_version_offer(&hello(
            9,
            [0, 0],
            HANDSHAKE_MAX_PAYLOAD
        )));
        // This version's own HELLO is no offer: it parses.
        assert!(!Header::is_version_offer(&hello(VERSION, [0, 0], 120)));
        assert!(!Header::is_version_offer(&hello(2, [0, 1], 120)));
        assert!(!Header::is_version_offer(&hello(
            2,
            [0, 0],
            HANDSHAKE_MAX_PAYLOAD + 1
        )));
        let mut other_op = hello(2, [0, 0], 120);
        other_op[1] = Op::Ping as u8;
        assert!(!Header::is_version_offer(&other_op));
        // "GET " and a TLS ClientHello are no offers either.
        assert!(!Header::is_version_offer(b"GET / HT"));
        assert!(!Header::is_version_offer(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01
        ]));
    }
}
