//! Connection ids and the `user_data` encoding of ring operations.
//!
//! A [`ConnId`] names one connection for its whole life and never another: it packs the
//! shard, the slot index inside that shard's slab, and the slot's generation, which is bumped
//! every time the slot is freed. A completion, inbox message or timer that carries a stale
//! generation is ignored, so a late event can never act on a reused slot.

use std::fmt;

/// Bits of the slot index (16 M slots per shard).
pub(crate) const SLOT_BITS: u32 = 24;
/// Bits of the generation.
pub(crate) const GEN_BITS: u32 = 32;
pub(crate) const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
pub(crate) const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

/// Identifies one connection: shard (8 bits) | generation (32 bits) | slot (24 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(shard: usize, slot: u32, gen: u32) -> ConnId {
        debug_assert!(shard < 256);
        debug_assert!(u64::from(slot) <= SLOT_MASK);
        ConnId(
            ((shard as u64) << (SLOT_BITS + GEN_BITS))
                | (u64::from(gen) << SLOT_BITS)
                | u64::from(slot),
        )
    }

    /// The shard (worker thread) that owns this connection.
    pub fn shard(self) -> usize {
        (self.0 >> (SLOT_BITS + GEN_BITS)) as usize
    }

    /// Dense per-shard slot index, below the shard's connection cap: handlers use it to index
    /// their own per-connection state. Reused after close, so always pair it with the full id.
    pub fn index(self) -> usize {
        (self.0 & SLOT_MASK) as usize
    }

    pub(crate) fn slot(self) -> u32 {
        (self.0 & SLOT_MASK) as u32
    }

    pub(crate) fn gen(self) -> u32 {
        ((self.0 >> SLOT_BITS) & GEN_MASK) as u32
    }

    /// The raw 64-bit value (stable for the connection's life; used in APIs and logs).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`ConnId::as_u64`]. An id that names no live connection is harmless:
    /// every operation on it is ignored or reports "not connected".
    pub fn from_u64(v: u64) -> ConnId {
        ConnId(v)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{}#{})", self.shard(), self.slot(), self.gen())
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a ring operation was, stored in the top byte of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Close = 4,
    Shutdown = 5,
    Cancel = 6,
    Socket = 7,
    Setup = 8,
    Connect = 9,
    PeerAddr = 10,
    Doorbell = 11,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Close,
            5 => Op::Shutdown,
            6 => Op::Cancel,
            7 => Op::Socket,
            8 => Op::Setup,
            9 => Op::Connect,
            10 => Op::PeerAddr,
            11 => Op::Doorbell,
            _ => return None,
        })
    }
}

/// `user_data` = op (8 bits) | generation (32 bits) | slot (24 bits).
pub(crate) fn pack(op: Op, slot: u32, gen: u32) -> u64 {
    ((op as u64) << 56) | (u64::from(gen) << SLOT_BITS) | u64::from(slot)
}

/// Splits a `user_data` back into (op, slot, generation).
pub(crate) fn unpack(user_data: u64) -> Option<(Op, u32, u32)> {
    let op = Op::from_u8((user_data >> 56) as u8)?;
    Some((
        op,
        (user_data & SLOT_MASK) as u32,
        ((user_data >> SLOT_BITS) & GEN_MASK) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_round_trips() {
        let id = ConnId::new(7, 0xAB_CDEF, 0xDEAD_BEEF);
        assert_eq!(id.shard(), 7);
        assert_eq!(id.slot(), 0xAB_CDEF);
        assert_eq!(id.gen(), 0xDEAD_BEEF);
        assert_eq!(ConnId::from_u64(id.as_u64()), id);
    }

    #[test]
    fn user_data_round_trips() {
        for op in [Op::Accept, Op::Recv, Op::Send, Op::Doorbell, Op::PeerAddr] {
            let ud = pack(op, 12345, u32::MAX);
            assert_eq!(unpack(ud), Some((op, 12345, u32::MAX)));
        }
        assert_eq!(unpack(0), None);
    }
}
