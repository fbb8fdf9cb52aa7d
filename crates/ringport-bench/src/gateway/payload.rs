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

/// 16 lowercase or uppercase hex digits (run once or twice per delivery, millions of times a
/// second: no UTF-8 check or radix parser).
fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(d))
    })
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
    }
}
