//! One echo connection as a sans-IO state machine: it says what to send and checks what comes
//! back, and never touches a socket or a clock (the transport passes `now` in).
//!
//! Message `seq` is `size` bytes: the sequence number (u64 little endian) followed by a fixed
//! pattern. The server must return the bytes unchanged and in order, so the receiver knows
//! exactly which byte comes next and checks it without buffering, whatever the fragmentation.

use std::collections::VecDeque;
use std::time::Instant;

use crate::stats::OpenLoopSchedule;

/// Bytes of the sequence-number header at the start of every message.
pub const SEQ_LEN: usize = 8;

/// The fixed body of every message (the first `SEQ_LEN` bytes are replaced by the sequence).
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(13))
        .collect()
}

/// The echoed bytes differ from what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub seq: u64,
    pub offset: usize,
}

/// How a connection decides when to send.
#[derive(Debug, Clone)]
pub enum Pacing {
    /// Keep `depth` messages in flight; latency is measured from the actual send.
    ClosedLoop,
    /// Send on a fixed schedule (at most `depth` in flight); latency from the intended time.
    OpenLoop(OpenLoopSchedule),
}

#[derive(Debug)]
pub struct EchoConn {
    /// Message size in bytes (>= SEQ_LEN).
    size: usize,
    /// Most messages in flight at once.
    depth: usize,
    pacing: Pacing,
    /// Sequence number of the next message to send.
    tx_seq: u64,
    /// Send time (closed loop) or intended send time (open loop) of each message in flight,
    /// oldest first; TCP keeps order, so echoes complete in this order.
    in_flight: VecDeque<Instant>,
    /// Sequence number and offset of the next expected echoed byte.
    rx_seq: u64,
    rx_offset: usize,
}

impl EchoConn {
    pub fn new(size: usize, depth: usize, pacing: Pacing) -> EchoConn {
        assert!(
            size >= SEQ_LEN,
            "messages carry an {SEQ_LEN}-byte sequence number"
        );
        EchoConn {
            size,
            depth: depth.max(1),
            pacing,
            tx_seq: 0,
            in_flight: VecDeque::with_capacity(depth.max(1)),
            rx_seq: 0,
            rx_offset: 0,
        }
    }

    /// Appends every message due at `now` to `out`; returns how many.
    pub fn poll_send(&mut self, now: Instant, pattern: &[u8], out: &mut Vec<u8>) -> usize {
        let mut sent = 0;
        while self.in_flight.len() < self.depth {
            let stamp = match &mut self.pacing {
                Pacing::ClosedLoop => now,
                Pacing::OpenLoop(schedule) => match schedule.take_due(now) {
                    Some(intended) => intended,
                    None => break,
                },
            };
            out.extend_from_slice(&self.tx_seq.to_le_bytes());
            out.extend_from_slice(&pattern[SEQ_LEN..self.size]);
            self.in_flight.push_back(stamp);
            self.tx_seq += 1;
            sent += 1;
        }
        sent
    }

    /// When this connection next wants `poll_send` (open loop only, and only if the window has
    /// room; otherwise the next echo will make room and the transport polls then).
    pub fn next_wakeup(&self) -> Option<Instant> {
        match &self.pacing {
            Pacing::OpenLoop(s) if self.in_flight.len() < self.depth => Some(s.next_due()),
            _ => None,
        }
    }

    /// Checks echoed bytes; calls `on_complete(latency_start)` for every message completed.
    pub fn on_bytes(
        &mut self,
        mut data: &[u8],
        pattern: &[u8],
        mut on_complete: impl FnMut(Instant),
    ) -> Result<(), Mismatch> {
        while !data.is_empty() {
            if self.rx_seq >= self.tx_seq {
                // The server sent bytes we never sent.
                return Err(Mismatch {
                    seq: self.rx_seq,
                    offset: self.rx_offset,
                });
            }
            let take = data.len().min(self.size - self.rx_offset);
            let (chunk, rest) = data.split_at(take);
            let start = self.rx_offset;
            let header = self.rx_seq.to_le_bytes();
            for (i, &b) in chunk.iter().enumerate() {
                let off = start + i;
                if off >= SEQ_LEN {
                    // Body: compare the remainder of the chunk in one go.
                    if chunk[i..] != pattern[off..start + take] {
                        let bad = chunk[i..]
                            .iter()
                            .zip(&pattern[off..])
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                        return Err(Mismatch {
                            seq: self.rx_seq,
                            offset: off + bad,
                        });
                    }
                    break;
                }
                if b != header[off] {
                    return Err(Mismatch {
                        seq: self.rx_seq,
                        offset: off,
                    });
                }
            }
            self.rx_offset += take;
            data = rest;
            if self.rx_offset == self.size {
                self.rx_offset = 0;
                self.rx_seq += 1;
                if let Some(stamp) = self.in_flight.pop_front() {
                    on_complete(stamp);
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn echo_in_arbitrary_fragments_completes_every_message() {
        let p = pattern(64);
        let mut c = EchoConn::new(64, 4, Pacing::ClosedLoop);
        let t0 = Instant::now();
        let mut out = Vec::new();
        assert_eq!(c.poll_send(t0, &p, &mut out), 4);
        assert_eq!(out.len(), 256);
        assert_eq!(c.poll_send(t0, &p, &mut out), 0, "window full");
        let mut done = 0;
        for piece in out.chunks(7) {
            c.on_bytes(piece, &p, |_| done += 1).unwrap();
        }
        assert_eq!(done, 4);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn corrupted_or_unsolicited_bytes_are_reported() {
        let p = pattern(16);
        let mut c = EchoConn::new(16, 1, Pacing::ClosedLoop);
        let mut out = Vec::new();
        c.poll_send(Instant::now(), &p, &mut out);
        out[12] ^= 1;
        assert_eq!(
            c.on_bytes(&out, &p, |_| {}),
            Err(Mismatch { seq: 0, offset: 12 })
        );
        let mut c = EchoConn::new(16, 1, Pacing::ClosedLoop);
        assert!(c.on_bytes(b"x", &p, |_| {}).is_err());
        // Wrong sequence number (message 1 echoed as message 0).
        let mut c = EchoConn::new(16, 2, Pacing::ClosedLoop);
        let mut out = Vec::new();
        c.poll_send(Instant::now(), &p, &mut out);
        assert_eq!(
            c.on_bytes(&out[16..], &p, |_| {}),
            Err(Mismatch { seq: 0, offset: 0 })
        );
    }

    #[test]
    fn open_loop_latency_starts_at_the_intended_time() {
        let p = pattern(8);
        let t0 = Instant::now();
        let sched = OpenLoopSchedule::new(t0, Duration::from_millis(10), Duration::ZERO);
        let mut c = EchoConn::new(8, 1, Pacing::OpenLoop(sched));
        let mut out = Vec::new();
        assert_eq!(c.poll_send(t0, &p, &mut out), 1);
        // The echo comes back 50 ms late; message 1 was due at 10 ms but could not leave.
        let mut stamps = Vec::new();
        c.on_bytes(&out, &p, |s| stamps.push(s)).unwrap();
        assert_eq!(stamps, vec![t0]);
        let late = t0 + Duration::from_millis(50);
        out.clear();
        assert_eq!(c.poll_send(late, &p, &mut out), 1, "window of 1");
        c.on_bytes(&out, &p, |s| stamps.push(s)).unwrap();
        assert_eq!(
            stamps[1],
            t0 + Duration::from_millis(10),
            "intended, not actual"
        );
        assert_eq!(c.next_wakeup(), Some(t0 + Duration::from_millis(20)));
    }
}
