//! Primitive field encodings shared by every op: big-endian integers,
//! length-prefixed text and blobs.
//!
//! Reading is done over a `Bytes` payload so blobs (tokens, message bodies)
//! are zero-copy slices of the receive buffer. Nothing here allocates based on
//! a length read from the wire before the bytes it describes are present.

use bytes::{Buf, BufMut, Bytes};

use crate::error::Error;
use crate::frame::Op;

/// Cursor over one frame's payload; every read is bounds-checked.
pub(crate) struct Reader {
    /// Unread part of the payload.
    buf: Bytes,
    /// Op being decoded, for error context.
    op: Op,
}

impl Reader {
    pub(crate) fn new(op: Op, buf: Bytes) -> Self {
        Reader { buf, op }
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated { op: self.op, field });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, Error> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// A blob with a u16 length prefix.
    pub(crate) fn blob16(&mut self, field: &'static str) -> Result<Bytes, Error> {
        let n = self.u16(field)?;
        self.bytes(usize::from(n), field)
    }

    /// UTF-8 text with a u8 length prefix.
    pub(crate) fn str8(&mut self, field: &'static str) -> Result<String, Error> {
        let n = self.u8(field)?;
        let b = self.bytes(usize::from(n), field)?;
        utf8(b, field)
    }

    /// UTF-8 text with a u16 length prefix.
    pub(crate) fn str16(&mut self, field: &'static str) -> Result<String, Error> {
        let b = self.blob16(field)?;
        utf8(b, field)
    }

    /// Everything left: used for message bodies, which run to the frame's end.
    pub(crate) fn rest(&mut self) -> Bytes {
        core::mem::take(&mut self.buf)
    }

    /// Fails if bytes are left over after the last field.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                op: self.op,
                extra: self.buf.len(),
            })
        }
    }
}

/// [`Reader`]'s borrowing twin over a byte slice: the same reads, the same bounds checks and
/// the same errors, but blobs and text are slices of the input (nothing is allocated or
/// copied). Used to decode a PUSH in place ([`crate::PushRef`]).
pub(crate) struct SliceReader<'a> {
    /// Unread part of the payload.
    buf: &'a [u8],
    /// Op being decoded, for error context.
    op: Op,
}

impl<'a> SliceReader<'a> {
    pub(crate) fn new(op: Op, buf: &'a [u8]) -> Self {
        SliceReader { buf, op }
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated { op: self.op, field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.bytes(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8, field)?);
        Ok(u64::from_be_bytes(a))
    }

    /// UTF-8 text with a u8 length prefix.
    pub(crate) fn str8(&mut self, field: &'static str) -> Result<&'a str, Error> {
        let n = self.u8(field)?;
        let b = self.bytes(usize::from(n), field)?;
        core::str::from_utf8(b).map_err(|_| Error::InvalidUtf8 { field })
    }

    /// Everything left: message bodies run to the frame's end.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }
}

fn utf8(b: Bytes, field: &'static str) -> Result<String, Error> {
    match core::str::from_utf8(&b) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(Error::InvalidUtf8 { field }),
    }
}

/// Checks a length against a prefix's range, for `body_len`.
pub(crate) fn check_len(field: &'static str, len: usize, max: usize) -> Result<usize, Error> {
    if len > max {
        return Err(Error::FieldTooLong { field, len, max });
    }
    Ok(len)
}

/// Writes a u8-prefixed string; the caller validated the length.
pub(crate) fn put_str8<B: BufMut>(dst: &mut B, s: &str) {
    dst.put_u8(s.len() as u8);
    dst.put_slice(s.as_bytes());
}

/// Writes a u16-prefixed blob; the caller validated the length.
pub(crate) fn put_blob16<B: BufMut>(dst: &mut B, b: &[u8]) {
    dst.put_u16(b.len() as u16);
    dst.put_slice(b);
}
