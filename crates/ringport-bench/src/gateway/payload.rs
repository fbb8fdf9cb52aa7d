//! The fan-out payload: a send timestamp and a sequence number, as ASCII so the same bytes go
//! through the HTTP API's `{"payload": "..."}` and a client PUBLISH unchanged.
//!
//! Layout: 16 hex digits of nanoseconds since this process's clock anchor, 16 hex digits of
//! sequence number, then `.` padding up to the requested size. Publisher and subscribers live
//! in the same bench process, so they share the anchor (one monotonic clock).

use std::sync::OnceLock;
use std::time::Instant;

/// Shortest payload that carries timestamp and sequence.
pub const MIN_SIZE: usize = 32;

static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's clock anchor.
pub fn now_ns() -> u64 {
    ANCHOR.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A `size`-byte payload (at least [`MIN_SIZE`]) stamped now.
pub fn encode(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{:016x}{:016x}", now_ns(), seq).into_bytes();
    v.resize(size.max(MIN_SIZE), b'.');
    v
}

/// (timestamp ns, sequence) of a bench payload; None for anything else.
pub fn decode(p: &[u8]) -> Option<(u64, u64)> {
    Some((hex(p.get(..16)?)?, hex(p.get(16..32)?)?))
}

/// The timestamp alone (what a latency needs; ringport's offsets stand in for the sequence).
pub fn decode_ts(p: &[u8]) -> Option<u64> {
    hex(p.get(..16)?)
}

/// 16 lowercase or uppercase hex digits (run once or twice per delivery, millions of times a
/// second: eight digits at a time in a u64, no table, no UTF-8 check).
fn hex(digits: &[u8]) -> Option<u64> {
    let d: &[u8; 16] = digits.try_into().ok()?;
    let (hi, lo) = d.split_at(8);
    let hi = hex8(u64::from_be_bytes(hi.try_into().ok()?))?;
    let lo = hex8(u64::from_be_bytes(lo.try_into().ok()?))?;
    Some(hi << 32 | lo)
}

/// Every byte of the u64.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Per byte of `x`: 0x80 where `m < byte < n` (and the byte is below 0x80), else 0
/// (`0 <= m <= 127`, `0 <= n <= 128`). No byte's arithmetic carries into the next.
const fn between(x: u64, m: u64, n: u64) -> u64 {
    let low7 = x & (ONES * 127);
    (ONES * (127 + n)).wrapping_sub(low7) & !x & low7.wrapping_add(ONES * (127 - m)) & HIGH
}

/// Eight ASCII hex digits, the first in the most significant byte: their value.
fn hex8(x: u64) -> Option<u64> {
    let digit = between(x, b'0' as u64 - 1, b'9' as u64 + 1);
    // `| 0x20` folds 'A'..='F' onto 'a'..='f' and maps nothing else there.
    let letter = between(x | (ONES * 0x20), b'a' as u64 - 1, b'f' as u64 + 1);
    if digit | letter != HIGH {
        return None;
    }
    // '0'..'9' and 'a'..'f'/'A'..'F' end in 0..9 and 1..6: add 9 to the letters.
    let mut v = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    v = (v | v >> 4) & 0x00ff_00ff_00ff_00ff;
    v = (v | v >> 8) & 0x0000_ffff_0000_ffff;
    v = (v | v >> 16) & 0x0000_0000_ffff_ffff;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: the standard library's parse of 16 hex digits (it also takes a sign,
    /// which a payload's digits never are).
    fn reference(d: &[u8]) -> Option<u64> {
        let s = std::str::from_utf8(d).ok()?;
        if d.len() != 16 || s.starts_with('+') {
            return None;
        }
        u64::from_str_radix(s, 16).ok()
    }

    #[test]
    fn hex_agrees_with_the_standard_parse_for_every_byte_in_every_place() {
        let bases: [&[u8; 16]; 3] = [
            b"0123456789abcdef",
            b"FEDCBA9876543210",
            b"00000000000000ff",
        ];
        for base in bases {
            assert_eq!(hex(base), reference(base));
            for at in 0..16 {
                for b in 0..=255u8 {
                    let mut d = *base;
                    d[at] = b;
                    assert_eq!(hex(&d), reference(&d), "{:?}", String::from_utf8_lossy(&d));
                }
            }
        }
        // Two wrong bytes that could cancel out in a sum.
        assert_eq!(hex(b"0000000000000/:0"), None);
        assert_eq!(hex(b"short"), None);
        assert_eq!(hex(&[b'0'; 17]), None);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let lower = format!("{x:016x}");
            let upper = format!("{x:016X}");
            assert_eq!(hex(lower.as_bytes()), Some(x));
            assert_eq!(hex(upper.as_bytes()), Some(x));
        }
    }

    #[test]
    fn round_trip() {
        let p = encode(42, 64);
        assert_eq!(p.len(), 64);
        let (ts, seq) = decode(&p).unwrap();
        assert_eq!(seq, 42);
        assert!(ts <= now_ns());
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(b"00000000000000ffx000000000000001"), None);
        assert_eq!(
            decode(b"00000000000000FF0000000000000010...."),
            Some((255, 16))
        );
        assert_eq!(encode(1, 8).len(), MIN_SIZE);
        assert_eq!(
            decode_ts(b"00000000000000FF0000000000000010...."),
            Some(255)
        );
        assert_eq!(decode_ts(b"0000000000000g00"), None);
        assert_eq!(decode_ts(b"short"), None);
    }
}
