//! Incremental frame decoding over the caller's receive buffer (RFC 6455 §5).
//!
//! [`Decoder::next`] looks at the front of the buffer and returns one [`Incoming`]:
//! - data frames are passed on *as their bytes arrive*, unmasked in place
//!   ([`Incoming::Data`], with `end` set on the last piece of a message), so the decoder
//!   never buffers a message; a message's size is checked against the limit from each frame
//!   header, before any of its payload is taken;
//! - control frames (at most 125 + 14 bytes) are returned whole, and may arrive between the
//!   frames of a fragmented message;
//! - an incomplete header or control frame is `Ok(None)`: read more;
//! - every violation is an [`Error`] carrying its close code; after an error or a Close the
//!   decoder returns nothing more.

use bytes::{Buf, Bytes, BytesMut};

use crate::encode::apply_mask;
use crate::{is_valid_close_code, CloseCode, CloseFrame, Error, OpCode, MAX_CONTROL_PAYLOAD};

/// Which end of the connection decodes: a server requires masked frames, a client unmasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decodes client frames (must be masked).
    Server,
    /// Decodes server frames (must not be masked).
    Client,
}

/// One decoded item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Payload bytes of a binary message, unmasked, in order. `end`: the message is complete
    /// after these bytes (may come with an empty payload).
    Data {
        /// The bytes (a split of the receive buffer, no copy).
        payload: BytesMut,
        /// The last piece of the message.
        end: bool,
    },
    /// A Ping; answer with a Pong carrying the same payload.
    Ping(Bytes),
    /// A Pong (unsolicited ones are allowed and ignored).
    Pong(Bytes),
    /// A Close, with its body if it had one; answer with a Close, then close the transport.
    Close(Option<CloseFrame>),
}

/// The data frame whose payload is being passed on.
#[derive(Debug, Clone, Copy)]
struct Streaming {
    /// Payload bytes still to come.
    remaining: u64,
    /// Its mask, and how far into the payload the next byte is (for unmasking in pieces).
    mask: Option<[u8; 4]>,
    offset: usize,
    /// The frame had FIN: its last byte ends the message.
    fin: bool,
}

/// The receiving state of one connection's WebSocket framing.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Server or client side.
    role: Role,
    /// Largest message (sum of its frames' payloads) accepted.
    max_message: u64,
    /// The data frame being passed on, if its payload has not all arrived.
    streaming: Option<Streaming>,
    /// A message is open: its last frame lacked FIN, a continuation must follow.
    in_message: bool,
    /// Payload bytes the open message's frames declared so far.
    message_len: u64,
    /// A Close arrived or an error was returned: nothing more is decoded.
    done: bool,
}

impl Decoder {
    /// A decoder for `role` that refuses messages over `max_message` bytes.
    pub fn new(role: Role, max_message: u64) -> Decoder {
        Decoder {
            role,
            max_message,
            streaming: None,
            in_message: false,
            message_len: 0,
            done: false,
        }
    }

    /// A Close was received or an error returned: later input is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The largest message accepted.
    pub fn max_message(&self) -> u64 {
        self.max_message
    }

    /// Takes the next item from the front of `buf` (`Ok(None)`: read more). After a Close or
    /// an error, returns `Ok(None)` and leaves `buf` alone.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.step(buf) {
            Err(e) => {
                self.done = true;
                Err(e)
            }
            ok => ok,
        }
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Error> {
        loop {
            if let Some(s) = self.streaming.as_mut() {
                let n = s.remaining.min(buf.len() as u64) as usize;
                if n == 0 {
                    return Ok(None);
                }
                let mut payload = buf.split_to(n);
                if let Some(m) = s.mask {
                    apply_mask(&mut payload, m, s.offset);
                }
                s.offset += n;
                s.remaining -= n as u64;
                let end = s.remaining == 0 && s.fin;
                if s.remaining == 0 {
                    self.streaming = None;
                }
                return Ok(Some(Incoming::Data { payload, end }));
            }
            let Some(h) = self.parse_header(buf)? else {
                return Ok(None);
            };
            if h.opcode.is_control() {
                let total = h.header_len + h.len as usize;
                if buf.len() < total {
                    return Ok(None);
                }
                buf.advance(h.header_len);
                let mut payload = buf.split_to(h.len as usize);
                if let Some(m) = h.mask {
                    apply_mask(&mut payload, m, 0);
                }
                return self.control(h.opcode, payload.freeze()).map(Some);
            }
            self.start_data(&h)?;
            buf.advance(h.header_len);
            if h.len == 0 {
                // Nothing to stream; a FIN frame still ends the message.
                if h.fin {
                    return Ok(Some(Incoming::Data {
                        payload: BytesMut::new(),
                        end: true,
                    }));
                }
                continue;
            }
            self.streaming = Some(Streaming {
                remaining: h.len,
                mask: h.mask,
                offset: 0,
                fin: h.fin,
            });
        }
    }

    /// Checks a data frame header against the message state and the size limit.
    fn start_data(&mut self, h: &FrameHeader) -> Result<(), Error> {
        match h.opcode {
            OpCode::Text => return Err(Error::TextMessage),
            OpCode::Continuation if !self.in_message => return Err(Error::UnexpectedContinuation),
            OpCode::Binary if self.in_message => return Err(Error::ExpectedContinuation),
            OpCode::Binary => self.message_len = 0,
            _ => {}
        }
        let declared = self.message_len.saturating_add(h.len);
        if declared > self.max_message {
            return Err(Error::MessageTooBig {
                declared,
                max: self.max_message,
            });
        }
        self.message_len = declared;
        self.in_message = !h.fin;
        Ok(())
    }

    fn control(&mut self, opcode: OpCode, payload: Bytes) -> Result<Incoming, Error> {
        Ok(match opcode {
            OpCode::Ping => Incoming::Ping(payload),
            OpCode::Pong => Incoming::Pong(payload),
            _ => {
                let close = match payload.len() {
                    0 => None,
                    1 => return Err(Error::BadClosePayload),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !is_valid_close_code(code) {
                            return Err(Error::InvalidCloseCode(code));
                        }
                        let reason =
                            std::str::from_utf8(&payload[2..]).map_err(|_| Error::BadUtf8)?;
                        Some(CloseFrame {
                            code: CloseCode(code),
                            reason: reason.to_owned(),
                        })
                    }
                };
                self.done = true;
                Incoming::Close(close)
            }
        })
    }

    /// Parses the frame header at the front of `buf` without consuming it; every header rule
    /// is checked as soon as the bytes it needs are present.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, Error> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let rsv = b0 & 0x70;
        if rsv != 0 {
            return Err(Error::ReservedBits(rsv >> 4));
        }
        let raw_op = b0 & 0x0f;
        let opcode = OpCode::from_u8(raw_op).ok_or(Error::UnknownOpcode(raw_op))?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(Error::Unmasked),
            (Role::Client, true) => return Err(Error::Masked),
            _ => {}
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(Error::FragmentedControl);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(Error::ControlTooLong(u64::from(len7)));
            }
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + ext + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(None);
        }
        let len = match len7 {
            126 => {
                let n = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
                if n < 126 {
                    return Err(Error::NonMinimalLength);
                }
                n
            }
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(Error::LengthOverflow);
                }
                if n <= u64::from(u16::MAX) {
                    return Err(Error::NonMinimalLength);
                }
                n
            }
            n => u64::from(n),
        };
        let mask = masked.then(|| {
            let m = &buf[2 + ext..2 + ext + 4];
            [m[0], m[1], m[2], m[3]]
        });
        Ok(Some(FrameHeader {
            opcode,
            fin,
            len,
            mask,
            header_len,
        }))
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    opcode: OpCode,
    fin: bool,
    len: u64,
    mask: Option<[u8; 4]>,
    header_len: usize,
}

#[cfg(test)]
mod tests;
