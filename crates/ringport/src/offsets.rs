//! Stream offsets: where every pushed message gets its `(epoch, offset)`.
//!
//! Every room (`room:<name>`), every user inbox (`user:<id>`) and the broadcast stream
//! (`room:*`) is a stream with an epoch chosen at process start and strictly increasing
//! offsets, starting at 1 (with [`crate::streams::Streams`], a stream whose log expired
//! continues above every removed tail, so offsets may jump but never repeat). The gateway asks a [`StreamSink`] for the next offset of a stream
//! and hands it a closure that encodes the PUSH frame for that offset; the sink returns the
//! offset and the encoded frame (and may keep the frame as history for resuming clients).
//!
//! [`crate::streams::Streams`] is the implementation (history bounded by count and age, with
//! replay, inbox acks and history memory); the gateway starts with it.
//!
//! Ordering: the gateway calls `append` and queues the returned frame for the shards under
//! the stream's sequencing stripe, so every shard sees a stream's offsets in increasing order
//! and can drop a duplicate (offset ≤ last delivered on that connection) without ever
//! creating a gap.

use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use ringport_proto::StreamName;

use crate::streams::Replay;

/// Assigns offsets to stream messages (and, in richer implementations, keeps history).
pub trait StreamSink: Send + Sync {
    /// Appends one message to `stream` at wall time `now_ms`: picks the epoch and next
    /// offset, calls `encode(epoch, offset)` exactly once to build the frame, and returns
    /// `(epoch, offset, frame)`. The epoch is [`Self::epoch`], or with `adopt` (cluster: this
    /// node owns the stream) the epoch of a replica [`Self::adopt_epoch`] made continuable.
    fn append(
        &self,
        stream: &StreamName,
        now_ms: u64,
        adopt: bool,
        encode: &mut dyn FnMut(u32, u64) -> Bytes,
    ) -> (u32, u64, Bytes);

    /// Cluster: replicas in `epoch` (numbered by a node that left after every one of its
    /// messages arrived here) are continued in that epoch by their new owner.
    fn adopt_epoch(&self, _epoch: u32) {}

    /// The epochs [`Self::adopt_epoch`] made continuable.
    fn adopted_epochs(&self) -> Vec<u32> {
        Vec::new()
    }

    /// The epoch of every stream this sink numbers (PUSH and WELCOME carry it).
    fn epoch(&self) -> u32;

    /// Keeps a message another node of the cluster numbered (`epoch`, `offset`): calls
    /// `encode(offset)` once and returns the frame, or `None` for an offset already kept
    /// (a duplicate). See [`crate::streams::Streams::insert`].
    fn insert(
        &self,
        stream: &StreamName,
        epoch: u32,
        offset: u64,
        now_ms: u64,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> Option<Bytes>;

    /// What a client that has `stream` up to `last_offset` of `epoch` gets on resume: the
    /// retained frames up to the tail `T`, or what was lost. Taken atomically with respect
    /// to `append` (see docs/architecture.md, "Reliable delivery").
    fn replay(&self, stream: &StreamName, epoch: u32, last_offset: u64, now_ms: u64) -> Replay;

    /// The stream's current `(epoch, tail)`, read atomically with respect to `append`: a
    /// connection registered as a recipient in the same shard turn receives exactly the
    /// offsets above `tail` live (ROOM_RESULT and WELCOME report it to the client).
    fn position(&self, stream: &StreamName, now_ms: u64) -> (u32, u64);

    /// Delivery receipts of a user inbox (`None`: no message was ever sent to it).
    fn receipts(&self, _stream: &StreamName) -> Option<crate::streams::InboxReceipts> {
        None
    }

    /// A cumulative ACK of a user inbox; returns how many messages it newly acknowledged.
    fn ack(&self, _stream: &StreamName, _offset: u64) -> u64 {
        0
    }

    /// Memory held by history, in bytes (`ringport_history_bytes`).
    fn history_bytes(&self) -> u64 {
        0
    }

    /// Inbox messages acknowledged so far (delivery receipts), over all users.
    fn acked_total(&self) -> u64 {
        0
    }

    /// Trims history to its age bound at `now_ms` (called about once a second).
    fn sweep(&self, _now_ms: u64) {}

    /// Streams with a log (`ringport_history_streams`).
    fn history_streams(&self) -> u64 {
        0
    }

    /// Up to `limit` retained messages of `stream` above `since` (`None`: this sink keeps
    /// no history).
    fn history(
        &self,
        _stream: &StreamName,
        _since: u64,
        _limit: usize,
        _now_ms: u64,
    ) -> Option<crate::streams::HistoryPage> {
        None
    }
}

/// A non-zero epoch that differs between process starts (std's per-process random hasher
/// keys mixed with the clock and the pid; no extra dependency).
pub fn random_epoch() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    let v = h.finish();
    ((v >> 32) as u32 ^ v as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_epoch_is_never_zero() {
        assert_ne!(random_epoch(), 0);
    }
}
