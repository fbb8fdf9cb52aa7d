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

/// Each byte's hex digit value, or `INVALID`.
const INVALID: u8 = 0xff;
const HEX: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b'0'..=b'9' => c as u8 - b'0',
            b'a'..=b'f' => c as u8 - b'a' + 10,
            b'A'..=b'F' => c as u8 - b'A' + 10,
            _ => INVALID,
        };
        c += 1;
    }
    t
};

/// 16 lowercase or uppercase hex digits (run once or twice per delivery, millions of times a
/// second: a table lookup per digit, one validity check at the end, no UTF-8 check).
fn hex(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u8;
    for &c in digits {
        let d = HEX[usize::from(c)];
        bad |= d & 0xf0;
        v = v << 4 | u64::from(d & 0x0f);
    }
    (bad == 0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

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
