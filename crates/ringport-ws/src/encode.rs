//! The sending side: frame headers (encoded apart from the payload, so one shared payload
//! can follow many headers), whole frames, masking and Close bodies.

use bytes::{BufMut, BytesMut};

use crate::{CloseCode, OpCode, MAX_CONTROL_PAYLOAD};

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER: usize = 14;

/// An encoded frame header (up to [`MAX_HEADER`] bytes, no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl Header {
    /// The header's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Header({:02x?})", self.as_slice())
    }
}

/// The header of a frame with `opcode`, FIN bit `fin`, a payload of `len` bytes and, for a
/// client frame, `mask` (the payload must then be masked with [`apply_mask`]). The length is
/// always minimally encoded.
pub fn encode_header(opcode: OpCode, fin: bool, len: usize, mask: Option<[u8; 4]>) -> Header {
    let mut bytes = [0u8; MAX_HEADER];
    bytes[0] = (opcode as u8) | if fin { 0x80 } else { 0 };
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = 2;
    if len < 126 {
        bytes[1] = mask_bit | len as u8;
    } else if let Ok(short) = u16::try_from(len) {
        bytes[1] = mask_bit | 126;
        bytes[2..4].copy_from_slice(&short.to_be_bytes());
        n = 4;
    } else {
        bytes[1] = mask_bit | 127;
        bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        n = 10;
    }
    if let Some(m) = mask {
        bytes[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    Header {
        bytes,
        len: n as u8,
    }
}

/// XORs `data` with `mask`, `offset` bytes into the masked payload (so a payload may be
/// unmasked in pieces as it arrives). Masking twice restores the data.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// Appends one whole frame (header and payload, masked when `mask` is given) to `out`.
pub fn encode_frame(
    opcode: OpCode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut BytesMut,
) {
    out.put_slice(encode_header(opcode, fin, payload.len(), mask).as_slice());
    let start = out.len();
    out.put_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// A Close body: the code, then `reason` cut on a character boundary so the body fits a
/// control frame (at most 123 bytes of reason).
pub fn close_payload(code: CloseCode, reason: &str) -> BytesMut {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = BytesMut::with_capacity(2 + end);
    out.put_u16(code.0);
    out.put_slice(&reason.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_minimally_encoded() {
        assert_eq!(
            encode_header(OpCode::Binary, true, 125, None).as_slice(),
            [0x82, 125]
        );
        assert_eq!(
            encode_header(OpCode::Binary, true, 126, None).as_slice(),
            [0x82, 126, 0, 126]
        );
        assert_eq!(
            encode_header(OpCode::Binary, false, 65_535, None).as_slice(),
            [0x02, 126, 0xff, 0xff]
        );
        assert_eq!(
            encode_header(OpCode::Continuation, true, 65_536, None).as_slice(),
            [0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        let h = encode_header(OpCode::Ping, true, 3, Some([1, 2, 3, 4]));
        assert_eq!(h.as_slice(), [0x89, 0x83, 1, 2, 3, 4]);
    }

    #[test]
    fn masking_is_an_involution_and_works_in_pieces() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut whole = *b"Hello, world";
        apply_mask(&mut whole, mask, 0);
        let mut pieces = *b"Hello, world";
        let (a, b) = pieces.split_at_mut(5);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 5);
        assert_eq!(whole, pieces);
        apply_mask(&mut whole, mask, 0);
        assert_eq!(&whole, b"Hello, world");
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let p = close_payload(CloseCode::NORMAL, &long);
        assert!(p.len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        assert_eq!(&p[..2], &1000u16.to_be_bytes());
    }
}
