//! PUSH, ACK and WAKE_ACK: server-to-client delivery and its bookkeeping.

use bytes::{BufMut, Bytes, BytesMut};

use super::Body;
use crate::error::Error;
use crate::frame::{Header, Op, FLAG_URGENT, HEADER_LEN};
use crate::stream::{StreamName, StreamRef};
use crate::wire::{self, Reader, SliceReader};

/// PUSH (server → client): one message on a stream.
///
/// A PUSH carries nothing connection-specific, so the gateway encodes it once
/// and shares the resulting `Bytes` with every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Stream the message belongs to.
    pub stream: StreamName,
    /// Epoch of the stream; offsets restart when it changes.
    pub epoch: u32,
    /// Position of this message in the stream; lets the client detect gaps,
    /// drop duplicates and resume.
    pub offset: u64,
    /// Header flag `URGENT`: delivered at once even to a sleeping client.
    pub urgent: bool,
    /// Message body; runs to the end of the frame.
    pub payload: Bytes,
}

impl Body for Push {
    fn body_len(&self) -> Result<usize, Error> {
        Ok(self.stream.encoded_len()? + 4 + 8 + self.payload.len())
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        self.stream.put(dst);
        dst.put_u32(self.epoch);
        dst.put_u64(self.offset);
        dst.put_slice(&self.payload);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(Push {
            stream: StreamName::read(r)?,
            epoch: r.u32("epoch")?,
            offset: r.u64("offset")?,
            urgent: false, // set from the header by the caller
            payload: r.rest(),
        })
    }
}

/// A PUSH decoded in place ([`FrameView::push`](crate::FrameView::push)): the same fields as
/// [`Push`], with the stream name and the payload borrowed from the receive buffer, so a
/// client that only looks at a message allocates and copies nothing for it (issue 12: the
/// fan-out bench's receive path). [`PushRef::to_owned`] gives the [`Push`] that
/// [`Frame::decode`](crate::Frame::decode) would have returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRef<'a> {
    /// Stream the message belongs to.
    pub stream: StreamRef<'a>,
    /// Epoch of the stream.
    pub epoch: u32,
    /// Position of this message in the stream.
    pub offset: u64,
    /// Header flag `URGENT`.
    pub urgent: bool,
    /// Message body.
    pub payload: &'a [u8],
}

impl<'a> PushRef<'a> {
    /// Decodes a PUSH payload in place: the same checks, in the same order, with the same
    /// errors as the owning decoder (a PUSH's body runs to the frame's end, so it has no
    /// trailing bytes to refuse).
    pub(crate) fn read(r: &mut SliceReader<'a>, urgent: bool) -> Result<PushRef<'a>, Error> {
        Ok(PushRef {
            stream: StreamRef::read(r)?,
            epoch: r.u32("epoch")?,
            offset: r.u64("offset")?,
            urgent,
            payload: r.rest(),
        })
    }

    /// The owning [`Push`] (allocates the name, copies the payload).
    pub fn to_owned(&self) -> Push {
        Push {
            stream: self.stream.to_owned(),
            epoch: self.epoch,
            offset: self.offset,
            urgent: self.urgent,
            payload: Bytes::copy_from_slice(self.payload),
        }
    }
}

impl Push {
    /// The borrowed form ([`PushRef`]).
    pub fn as_ref(&self) -> PushRef<'_> {
        PushRef {
            stream: self.stream.as_ref(),
            epoch: self.epoch,
            offset: self.offset,
            urgent: self.urgent,
            payload: &self.payload,
        }
    }
}

/// One message's PUSH frames, checked once: a publisher validates the stream and payload
/// *before* it numbers the message (so a message that cannot be encoded never takes an
/// offset), then encodes the frame at the offset it got without a fallible step. The bytes
/// equal `Frame::Push(..).to_bytes()` of the same fields.
#[derive(Debug, Clone, Copy)]
pub struct PushEncoder<'a> {
    stream: &'a StreamName,
    payload: &'a [u8],
    /// Body length (fits the header's u32).
    body: u32,
}

impl<'a> PushEncoder<'a> {
    /// Checks that a PUSH of `payload` on `stream` can be encoded (the stream's name, and a
    /// body within the header's u32); the receiver's size limit is the caller's to check.
    pub fn new(stream: &'a StreamName, payload: &'a [u8]) -> Result<PushEncoder<'a>, Error> {
        let body = stream.encoded_len()? + 4 + 8 + payload.len();
        let body = u32::try_from(body).map_err(|_| Error::FieldTooLong {
            field: "payload",
            len: body,
            max: u32::MAX as usize,
        })?;
        Ok(PushEncoder {
            stream,
            payload,
            body,
        })
    }

    /// Total frame length, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body as usize
    }

    /// The PUSH frame at (`epoch`, `offset`).
    pub fn encode(&self, epoch: u32, offset: u64, urgent: bool) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.frame_len());
        let header = Header {
            op: Op::Push,
            flags: if urgent { FLAG_URGENT } else { 0 },
            len: self.body,
        };
        buf.put_slice(&header.to_bytes());
        self.stream.put(&mut buf);
        buf.put_u32(epoch);
        buf.put_u64(offset);
        buf.put_slice(self.payload);
        buf.freeze()
    }
}

/// ACK (client → server): every message of a user inbox up to and including
/// `offset` has been processed; the server may forget them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The user-inbox stream (`user:<id>`); room streams are never acked.
    pub stream: StreamName,
    /// Highest offset processed (cumulative).
    pub offset: u64,
}

impl Body for Ack {
    fn body_len(&self) -> Result<usize, Error> {
        Ok(self.stream.encoded_len()? + 8)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        self.stream.put(dst);
        dst.put_u64(self.offset);
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        Ok(Ack {
            stream: StreamName::read(r)?,
            offset: r.u64("offset")?,
        })
    }
}

/// WAKE_ACK (server → client): the client is awake. Lists every stream whose
/// messages were skipped while it slept, so it can fetch them or re-sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WakeAck {
    /// Streams with skipped messages; empty when nothing was lost.
    pub skipped: Vec<Skipped>,
}

/// Messages of one stream that were not delivered during sleep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Stream that lost messages.
    pub stream: StreamName,
    /// First offset not delivered: resume (re-fetch) from here.
    pub resume_from: u64,
    /// How many messages were skipped (saturating).
    pub count: u32,
}

impl Body for WakeAck {
    fn body_len(&self) -> Result<usize, Error> {
        wire::check_len("skipped streams", self.skipped.len(), u16::MAX.into())?;
        let mut n = 2;
        for s in &self.skipped {
            n += s.stream.encoded_len()? + 8 + 4;
        }
        Ok(n)
    }

    fn write<B: BufMut>(&self, dst: &mut B) {
        dst.put_u16(self.skipped.len() as u16);
        for s in &self.skipped {
            s.stream.put(dst);
            dst.put_u64(s.resume_from);
            dst.put_u32(s.count);
        }
    }

    fn read(r: &mut Reader) -> Result<Self, Error> {
        let count = r.u16("skipped count")?;
        let mut skipped = Vec::new();
        for _ in 0..count {
            skipped.push(Skipped {
                stream: StreamName::read(r)?,
                resume_from: r.u64("resume from")?,
                count: r.u32("skipped")?,
            });
        }
        Ok(WakeAck { skipped })
    }
}

#[cfg(test)]
mod push_encoder_tests {
    use super::*;
    use crate::ops::Frame;

    #[test]
    fn encodes_what_a_frame_encodes() {
        for (stream, urgent) in [
            (StreamName::Room("lobby".into()), false),
            (StreamName::User("u-42".into()), true),
            (StreamName::Room("r".repeat(crate::MAX_NAME_LEN)), false),
        ] {
            for payload in [&b""[..], b"hello", &[7u8; 3000][..]] {
                let e = PushEncoder::new(&stream, payload).unwrap();
                let frame = Frame::Push(Push {
                    stream: stream.clone(),
                    epoch: 9,
                    offset: 1 << 40,
                    urgent,
                    payload: Bytes::copy_from_slice(payload),
                })
                .to_bytes()
                .unwrap();
                assert_eq!(e.encode(9, 1 << 40, urgent), frame);
                assert_eq!(e.frame_len(), frame.len());
            }
        }
    }

    #[test]
    fn refuses_what_a_frame_refuses() {
        let long = StreamName::Room("r".repeat(crate::MAX_NAME_LEN + 1));
        assert!(PushEncoder::new(&long, b"x").is_err());
        let empty = StreamName::Room(String::new());
        assert!(PushEncoder::new(&empty, b"x").is_err());
    }
}
