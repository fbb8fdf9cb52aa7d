//! The bounded queue of publishes awaiting PUBLISH_ACK.
//!
//! A publish enters with the next client seq and stays until its ack, across
//! reconnects: after each WELCOME every queued publish is resent with its
//! original seq, and the gateway drops the ones it already published (it
//! acknowledges them without publishing again).

use std::collections::VecDeque;

use bytes::Bytes;

/// One publish awaiting its ack.
#[derive(Debug)]
pub struct Pending<R> {
    /// Client sequence number (assigned once, reused on resend).
    pub seq: u64,
    /// Target room.
    pub room: String,
    /// Body.
    pub payload: Bytes,
    /// Who to tell when the ack arrives.
    pub reply: R,
}

/// Publishes awaiting acks, in seq order, at most `capacity`.
#[derive(Debug)]
pub struct Outbound<R> {
    items: VecDeque<Pending<R>>,
    capacity: usize,
    next_seq: u64,
}

impl<R> Outbound<R> {
    /// An empty queue; seqs start at 1.
    pub fn new(capacity: usize) -> Self {
        Outbound {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Enqueues a publish and returns its seq, or gives `reply` back if the
    /// queue is full.
    pub fn push(&mut self, room: String, payload: Bytes, reply: R) -> Result<u64, R> {
        if self.items.len() >= self.capacity {
            return Err(reply);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push_back(Pending {
            seq,
            room,
            payload,
            reply,
        });
        Ok(seq)
    }

    /// Removes the publish acked by `seq`.
    pub fn ack(&mut self, seq: u64) -> Option<Pending<R>> {
        let i = self.items.iter().position(|p| p.seq == seq)?;
        self.items.remove(i)
    }

    /// Everything to (re)send, in seq order.
    pub fn iter(&self) -> impl Iterator<Item = &Pending<R>> {
        self.items.iter()
    }

    /// Removes everything (client closing).
    pub fn drain(&mut self) -> impl Iterator<Item = Pending<R>> + '_ {
        self.items.drain(..)
    }

    /// Publishes awaiting acks.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing awaits an ack.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let mut q = Outbound::new(2);
        assert_eq!(q.push("r".into(), Bytes::new(), ()), Ok(1));
        assert_eq!(q.push("r".into(), Bytes::new(), ()), Ok(2));
        assert_eq!(q.push("r".into(), Bytes::new(), ()), Err(()));
        assert_eq!(q.ack(1).map(|p| p.seq), Some(1));
        assert_eq!(q.ack(1).map(|p| p.seq), None, "acked once");
        assert_eq!(
            q.push("r".into(), Bytes::new(), ()),
            Ok(3),
            "seqs never reused"
        );
        assert_eq!(q.iter().map(|p| p.seq).collect::<Vec<_>>(), [2, 3]);
    }
}
