//! Every operation's payload, and [`Frame`], the decoded form of one frame.
//!
//! One file per family of ops; each payload type knows its own length, how to
//! write itself and how to read itself from a bounds-checked [`Reader`].

mod delivery;
mod handshake;
mod rooms;

use bytes::{BufMut, Bytes, BytesMut};

pub use delivery::{Ack, Push, PushEncoder, PushRef, Skipped, WakeAck};
pub use handshake::{Hello, Resume, ResumeOutcome, ResumePoint, ResumeResult, Welcome};
pub use rooms::{Publish, PublishAck, RoomRequest, RoomResult};

use crate::codes::{CloseReason, Status};
use crate::error::Error;
use crate::frame::{Header, Op, FLAG_URGENT, HEADER_LEN};
use crate::wire::{self, Reader};

/// A payload type's encoding. Implementors keep `body_len` and `write` in
/// step; the round-trip property tests check that they do.
pub(crate) trait Body: Sized {
    /// Exact payload length, validating every length-prefixed field.
    fn body_len(&self) -> Result<usize, Error>;
    /// Writes the payload; only called after `body_len` succeeded.
    fn write<B: BufMut>(&self, dst: &mut B);
    /// Reads the payload; trailing bytes are checked by the caller.
    fn read(r: &mut Reader) -> Result<Self, Error>;
}

/// One decoded frame. Variants are named after their op (see [`Op`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// HELLO, client → server.
    Hello(Hello),
    /// WELCOME, server → client.
    Welcome(Welcome),
    /// PING, either direction.
    Ping {
        /// Opaque value the PONG echoes (e.g. a send timestamp for RTT).
        nonce: u64,
    },
    /// PONG, either direction.
    Pong {
        /// The nonce of the PING being answered.
        nonce: u64,
    },
    /// JOIN, client → server.
    Join(RoomRequest),
    /// LEAVE, client → server.
    Leave(RoomRequest),
    /// ROOM_RESULT, server → client.
    RoomResult(RoomResult),
    /// PUBLISH, client → server.
    Publish(Publish),
    /// PUBLISH_ACK, server → client.
    PublishAck(PublishAck),
    /// PUSH, server → client.
    Push(Push),
    /// ACK, client → server.
    Ack(Ack),
    /// RESUME_RESULT, server → client.
    ResumeResult(ResumeResult),
    /// SLEEP, client → server.
    Sleep {
        /// Heartbeat interval the client would like while asleep, in ms.
        interval_ms: u32,
    },
    /// SLEEP_ACK, server → client.
    SleepAck {
        /// Heartbeat interval granted (clamped by the server), in ms.
        interval_ms: u32,
    },
    /// WAKE, client → server (empty payload).
    Wake,
    /// WAKE_ACK, server → client.
    WakeAck(WakeAck),
    /// ERROR, server → client: a non-fatal problem.
    Error {
        /// What went wrong.
        code: Status,
        /// Human-readable detail (u16-prefixed UTF-8).
        text: String,
    },
    /// CLOSE, either direction: the last frame the sender sends.
    Close {
        /// Why the connection ends.
        reason: CloseReason,
        /// Human-readable detail (u16-prefixed UTF-8).
        text: String,
    },
}

fn text_len(text: &str) -> Result<usize, Error> {
    Ok(2 + wire::check_len("text", text.len(), u16::MAX.into())?)
}

impl Frame {
    /// This frame's op code.
    pub fn op(&self) -> Op {
        match self {
            Frame::Hello(_) => Op::Hello,
            Frame::Welcome(_) => Op::Welcome,
            Frame::Ping { .. } => Op::Ping,
            Frame::Pong { .. } => Op::Pong,
            Frame::Join(_) => Op::Join,
            Frame::Leave(_) => Op::Leave,
            Frame::RoomResult(_) => Op::RoomResult,
            Frame::Publish(_) => Op::Publish,
            Frame::PublishAck(_) => Op::PublishAck,
            Frame::Push(_) => Op::Push,
            Frame::Ack(_) => Op::Ack,
            Frame::ResumeResult(_) => Op::ResumeResult,
            Frame::Sleep { .. } => Op::Sleep,
            Frame::SleepAck { .. } => Op::SleepAck,
            Frame::Wake => Op::Wake,
            Frame::WakeAck(_) => Op::WakeAck,
            Frame::Error { .. } => Op::Error,
            Frame::Close { .. } => Op::Close,
        }
    }

    fn flags(&self) -> u16 {
        match self {
            Frame::Push(p) if p.urgent => FLAG_URGENT,
            _ => 0,
        }
    }

    fn body_len(&self) -> Result<usize, Error> {
        match self {
            Frame::Hello(b) => b.body_len(),
            Frame::Welcome(b) => b.body_len(),
            Frame::Ping { .. } | Frame::Pong { .. } => Ok(8),
            Frame::Join(b) | Frame::Leave(b) => b.body_len(),
            Frame::RoomResult(b) => b.body_len(),
            Frame::Publish(b) => b.body_len(),
            Frame::PublishAck(b) => b.body_len(),
            Frame::Push(b) => b.body_len(),
            Frame::Ack(b) => b.body_len(),
            Frame::ResumeResult(b) => b.body_len(),
            Frame::Sleep { .. } | Frame::SleepAck { .. } => Ok(4),
            Frame::Wake => Ok(0),
            Frame::WakeAck(b) => b.body_len(),
            Frame::Error { text, .. } | Frame::Close { text, .. } => Ok(2 + text_len(text)?),
        }
    }

    fn write_body<B: BufMut>(&self, dst: &mut B) {
        match self {
            Frame::Hello(b) => b.write(dst),
            Frame::Welcome(b) => b.write(dst),
            Frame::Ping { nonce } | Frame::Pong { nonce } => dst.put_u64(*nonce),
            Frame::Join(b) | Frame::Leave(b) => b.write(dst),
            Frame::RoomResult(b) => b.write(dst),
            Frame::Publish(b) => b.write(dst),
            Frame::PublishAck(b) => b.write(dst),
            Frame::Push(b) => b.write(dst),
            Frame::Ack(b) => b.write(dst),
            Frame::ResumeResult(b) => b.write(dst),
            Frame::Sleep { interval_ms } | Frame::SleepAck { interval_ms } => {
                dst.put_u32(*interval_ms)
            }
            Frame::Wake => {}
            Frame::WakeAck(b) => b.write(dst),
            Frame::Error { code, text } => {
                dst.put_u16(code.0);
                wire::put_blob16(dst, text.as_bytes());
            }
            Frame::Close { reason, text } => {
                dst.put_u16(reason.0);
                wire::put_blob16(dst, text.as_bytes());
            }
        }
    }

    /// Appends this frame (header and payload) to `dst`, which may be a
    /// `BytesMut` or a `Vec<u8>`. On error nothing is written.
    ///
    /// Fails if a field cannot be encoded (a name over 255 bytes, a text over
    /// 65535 bytes, a payload over 4 GiB). The receiver's size limit is not
    /// checked here; see [`encoded_len`](Self::encoded_len).
    pub fn encode<B: BufMut>(&self, dst: &mut B) -> Result<(), Error> {
        let body = self.body_len()?;
        let len = u32::try_from(body).map_err(|_| Error::FieldTooLong {
            field: "payload",
            len: body,
            max: u32::MAX as usize,
        })?;
        let header = Header {
            op: self.op(),
            flags: self.flags(),
            len,
        };
        dst.put_slice(&header.to_bytes());
        self.write_body(dst);
        Ok(())
    }

    /// Encodes this frame into a fresh, shareable buffer (e.g. one PUSH for
    /// many recipients).
    pub fn to_bytes(&self) -> Result<Bytes, Error> {
        let mut buf = BytesMut::with_capacity(self.encoded_len()?);
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Total encoded length including the header.
    pub fn encoded_len(&self) -> Result<usize, Error> {
        Ok(HEADER_LEN + self.body_len()?)
    }

    /// Decodes a frame from its validated header and exactly its payload.
    pub fn decode(header: Header, payload: Bytes) -> Result<Frame, Error> {
        let mut r = Reader::new(header.op, payload);
        let frame = match header.op {
            Op::Hello => Frame::Hello(Hello::read(&mut r)?),
            Op::Welcome => Frame::Welcome(Welcome::read(&mut r)?),
            Op::Ping => Frame::Ping {
                nonce: r.u64("nonce")?,
            },
            Op::Pong => Frame::Pong {
                nonce: r.u64("nonce")?,
            },
            Op::Join => Frame::Join(RoomRequest::read(&mut r)?),
            Op::Leave => Frame::Leave(RoomRequest::read(&mut r)?),
            Op::RoomResult => Frame::RoomResult(RoomResult::read(&mut r)?),
            Op::Publish => Frame::Publish(Publish::read(&mut r)?),
            Op::PublishAck => Frame::PublishAck(PublishAck::read(&mut r)?),
            Op::Push => {
                let mut p = Push::read(&mut r)?;
                p.urgent = header.flags & FLAG_URGENT != 0;
                Frame::Push(p)
            }
            Op::Ack => Frame::Ack(Ack::read(&mut r)?),
            Op::ResumeResult => Frame::ResumeResult(ResumeResult::read(&mut r)?),
            Op::Sleep => Frame::Sleep {
                interval_ms: r.u32("interval")?,
            },
            Op::SleepAck => Frame::SleepAck {
                interval_ms: r.u32("interval")?,
            },
            Op::Wake => Frame::Wake,
            Op::WakeAck => Frame::WakeAck(WakeAck::read(&mut r)?),
            Op::Error => Frame::Error {
                code: Status(r.u16("code")?),
                text: r.str16("text")?,
            },
            Op::Close => Frame::Close {
                reason: CloseReason(r.u16("reason")?),
                text: r.str16("text")?,
            },
        };
        r.finish()?;
        Ok(frame)
    }
}
