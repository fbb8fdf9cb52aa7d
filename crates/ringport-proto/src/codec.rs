//! Incremental frame decoding over a growing receive buffer.
//!
//! The contract (mini-redis style): [`Decoder::decode`] looks at the front of
//! the caller's buffer. If a whole frame is there it is removed and returned;
//! if not, `Ok(None)` says "read more" and the buffer is left untouched. An
//! incomplete frame is an expected state, not an error.
//!
//! Two rules protect the server from hostile lengths:
//! - the declared payload length is checked against the maximum as soon as
//!   the 8 header bytes are present, before any body byte is read;
//! - nothing is allocated from a declared length: the decoder only splits
//!   bytes that already arrived, and list fields grow as entries parse. The
//!   caller's buffer therefore grows only as bytes arrive;
//! - before WELCOME the maximum is at most [`HANDSHAKE_MAX_PAYLOAD`]
//!   ([`Decoder::handshake`]), so an unauthenticated peer cannot make the
//!   server wait for (and buffer) a larger frame.

use bytes::{Buf, BytesMut};

use crate::error::Error;
use crate::frame::{
    Header, Op, DEFAULT_MAX_PAYLOAD, FLAG_URGENT, HANDSHAKE_MAX_PAYLOAD, HEADER_LEN,
};
use crate::ops::{Frame, PushRef};
use crate::wire::SliceReader;

/// One whole frame at the front of a buffer, not decoded yet: its validated header and its
/// payload, borrowed ([`Decoder::view`]). A PUSH decodes from it in place
/// ([`FrameView::push`]); any frame decodes to the owning [`Frame`] ([`FrameView::to_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameView<'a> {
    /// The frame's header (version, op, flags and length checked).
    pub header: Header,
    /// Exactly the frame's payload.
    pub payload: &'a [u8],
}

impl<'a> FrameView<'a> {
    /// Bytes the frame occupies, header included: how far to advance past it.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Never true: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The PUSH this frame carries, decoded in place (`None`: another op). `Some(Err)` is the
    /// error [`Frame::decode`] gives for the same bytes.
    pub fn push(&self) -> Option<Result<PushRef<'a>, Error>> {
        (self.header.op == Op::Push).then(|| {
            let mut r = SliceReader::new(Op::Push, self.payload);
            PushRef::read(&mut r, self.header.flags & FLAG_URGENT != 0)
        })
    }

    /// Decodes the owning [`Frame`] (copies the payload), as [`Decoder::decode`] would.
    pub fn to_frame(&self) -> Result<Frame, Error> {
        Frame::decode(self.header, bytes::Bytes::copy_from_slice(self.payload))
    }
}

/// Stateless frame decoder configured with a maximum payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    /// Largest payload length accepted; larger declarations are rejected from
    /// the header alone.
    max_payload: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Decoder {
    /// A decoder that rejects payloads longer than `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Decoder { max_payload }
    }

    /// The configured maximum payload length.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// The decoder for a connection that has not been sent WELCOME: the same,
    /// with the maximum lowered to [`HANDSHAKE_MAX_PAYLOAD`] if it is above.
    pub fn handshake(&self) -> Decoder {
        Decoder::new(self.max_payload.min(HANDSHAKE_MAX_PAYLOAD))
    }

    /// Parses the header at the front of `buf`, if 8 bytes are present.
    pub fn peek_header(&self, buf: &[u8]) -> Result<Option<Header>, Error> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        Header::parse(head, self.max_payload).map(Some)
    }

    /// Removes and decodes one frame from the front of `buf`.
    ///
    /// - `Ok(Some(frame))`: a frame was consumed.
    /// - `Ok(None)`: not enough bytes yet; `buf` is unchanged.
    /// - `Err(_)`: the stream is corrupt; the connection should be closed
    ///   (see [`Error::close_reason`]). If the header was valid the bad
    ///   frame has been consumed; otherwise `buf` is unchanged.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some(header) = self.peek_header(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + header.len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len as usize).freeze();
        Frame::decode(header, payload).map(Some)
    }

    /// The whole frame at the front of `buf`, without decoding or copying it: `Ok(None)`
    /// while it is incomplete, `Err` for a bad header (as [`decode`](Self::decode)). The
    /// caller advances past [`FrameView::len`] bytes once it has used the view.
    pub fn view<'a>(&self, buf: &'a [u8]) -> Result<Option<FrameView<'a>>, Error> {
        let Some(header) = self.peek_header(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + header.len as usize;
        Ok(buf
            .get(HEADER_LEN..total)
            .map(|payload| FrameView { header, payload }))
    }

    /// Decodes one frame from the front of a byte slice, returning it and the
    /// number of bytes it occupied. Copies the payload; prefer
    /// [`decode`](Self::decode) on a receive buffer.
    pub fn decode_slice(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
        let Some(header) = self.peek_header(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + header.len as usize;
        let Some(payload) = buf.get(HEADER_LEN..total) else {
            return Ok(None);
        };
        let frame = Frame::decode(header, bytes::Bytes::copy_from_slice(payload))?;
        Ok(Some((frame, total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Op, VERSION};

    fn header(op: Op, len: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = VERSION;
        h[1] = op as u8;
        h[4..].copy_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn handshake_decoder_refuses_above_64_kib_from_the_header() {
        let d = Decoder::new(1 << 20);
        let h = d.handshake();
        assert_eq!(h.max_payload(), 65_536);
        assert_eq!(Decoder::new(1_024).handshake().max_payload(), 1_024);
        assert!(h.peek_header(&header(Op::Hello, 65_536)).is_ok());
        let err = h.peek_header(&header(Op::Hello, 65_537)).unwrap_err();
        assert_eq!(err.close_reason(), crate::CloseReason::FRAME_TOO_LARGE);
        assert!(d.peek_header(&header(Op::Hello, 65_537)).is_ok());
    }

    #[test]
    fn a_partial_frame_reserves_nothing_for_its_declared_length() {
        let d = Decoder::new(1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&header(Op::Publish, 1 << 20));
        buf.extend_from_slice(b"abc");
        let cap = buf.capacity();
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), HEADER_LEN + 3);
        assert_eq!(buf.capacity(), cap);
        assert!(cap < 1_024, "{cap}");
    }
}
