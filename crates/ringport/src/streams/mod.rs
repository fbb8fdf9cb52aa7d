//! Streams: offsets, bounded replay history, resume, inbox acks, publish dedupe.
//!
//! Sans-IO and clock-free: every call takes `now` in ms from the caller's
//! monotonic clock, so all of it is unit-tested with a virtual clock.
//!
//! - [`StreamLog`]: one stream's epoch, strictly increasing offsets (from 1),
//!   and its history of already-encoded PUSH frames, bounded by count and age.
//! - [`Streams`]: the process-wide registry, sharded by stream name, one
//!   mutex per shard. It assigns offsets (`append`, the gateway's stream sink
//!   seam), answers resumes atomically under the stream's lock (`replay`),
//!   records user-inbox acks (`ack`, `receipts`) and reports history memory.
//! - [`PublishDedupes`]: per-session seen client seqs, so a publish resent
//!   after a reconnect is acknowledged but not published twice.
//!
//! Epochs: history lives in memory only, so the process picks a random epoch
//! at start and every stream uses it. A restarted process has a different
//! epoch, and a client resuming an old epoch is told `EpochChanged` — never
//! served a replay that mixes epochs. Logs are never removed while the
//! process runs (their offsets must keep increasing within the epoch); idle
//! logs cost their name and a few words once their history is trimmed.
//!
//! See docs/architecture.md, "Reliable delivery", for how the gateway uses the
//! replay snapshot to resume a connection without gaps or duplicates.

mod dedupe;
mod log;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use ringport_proto::StreamName;

pub use dedupe::{PublishDedupe, PublishDedupes, Seen};
pub use log::{HistoryLimits, NotRecoveredReason, Replay, StreamLog, ENTRY_OVERHEAD};

/// Delivery receipts of one user inbox, for the admin API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxReceipts {
    /// Epoch the offsets belong to.
    pub epoch: u32,
    /// Highest offset appended.
    pub tail: u64,
    /// Cumulative acknowledged offset.
    pub acked: u64,
    /// Messages acknowledged by the client(s) so far.
    pub receipts: u64,
}

/// Totals over every stream, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamsStats {
    /// Streams with a log.
    pub streams: usize,
    /// Retained messages.
    pub messages: usize,
    /// History memory in bytes (frames plus bookkeeping).
    pub bytes: usize,
}

type Shard = HashMap<StreamName, StreamLog>;

/// The registry of every stream's log. Cheap to share (`Arc<Streams>`):
/// shards lock independently, and a lock is held only for one append, one
/// replay snapshot or one ack.
#[derive(Debug)]
pub struct Streams {
    /// One map per lock; a stream lives in the shard its name hashes to.
    shards: Box<[Mutex<Shard>]>,
    /// Retention bounds applied to every log.
    limits: HistoryLimits,
    /// The process epoch, shared by every log.
    epoch: u32,
    /// Inbox messages acknowledged, over all users (delivery receipts).
    acked_total: AtomicU64,
    /// History bytes over all shards, kept in step under the shard locks so
    /// `/metrics` reads it without locking.
    bytes: AtomicU64,
}

impl Streams {
    /// A registry with `shards` locks and a random process epoch.
    pub fn new(limits: HistoryLimits, shards: usize) -> Self {
        Streams::with_epoch(limits, shards, crate::offsets::random_epoch())
    }

    /// As [`new`](Self::new) with a chosen epoch (tests).
    pub fn with_epoch(limits: HistoryLimits, shards: usize, epoch: u32) -> Self {
        Streams {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            limits,
            epoch,
            acked_total: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The retention bounds.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    fn lock(&self, stream: &StreamName) -> MutexGuard<'_, Shard> {
        let mut h = DefaultHasher::new();
        stream.hash(&mut h);
        let i = (h.finish() % self.shards.len() as u64) as usize;
        // A panic while holding the lock leaves the map consistent (every
        // mutation is a single step), so a poisoned lock is still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log<'a>(&self, shard: &'a mut Shard, stream: &StreamName) -> &'a mut StreamLog {
        if !shard.contains_key(stream) {
            shard.insert(stream.clone(), StreamLog::new(self.epoch));
        }
        shard.get_mut(stream).expect("inserted above")
    }

    fn account(&self, before: usize, after: usize) {
        if after >= before {
            self.bytes
                .fetch_add((after - before) as u64, Ordering::Relaxed);
        } else {
            self.bytes
                .fetch_sub((before - after) as u64, Ordering::Relaxed);
        }
    }

    /// The process epoch every stream is numbered in (WELCOME, PUSH).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Inbox messages acknowledged so far, over all users.
    pub fn acked_total(&self) -> u64 {
        self.acked_total.load(Ordering::Relaxed)
    }

    /// Assigns the next offset of `stream`; `encode(offset)` builds the PUSH
    /// frame (it runs under the stream's lock, once), which is retained and
    /// returned for the live fan-out.
    pub fn append(
        &self,
        stream: &StreamName,
        now_ms: u64,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> (u64, Bytes) {
        let mut shard = self.lock(stream);
        let log = self.log(&mut shard, stream);
        let before = log.bytes();
        let out = log.append(now_ms, self.limits, encode);
        self.account(before, log.bytes());
        out
    }

    /// The resume snapshot for a client that has `stream` up to
    /// `last_offset` of `epoch`, taken atomically under the stream's lock.
    /// User inboxes also redeliver unacknowledged messages.
    pub fn replay(&self, stream: &StreamName, epoch: u32, last_offset: u64, now: u64) -> Replay {
        let mut shard = self.lock(stream);
        let log = self.log(&mut shard, stream);
        let before = log.bytes();
        let r = log.replay(epoch, last_offset, now, self.limits, stream.is_user());
        self.account(before, log.bytes());
        r
    }

    /// The stream's current `(epoch, tail)` (creating its log if needed): a
    /// connection joining live treats offsets ≤ tail as already past.
    pub fn position(&self, stream: &StreamName, _now: u64) -> (u32, u64) {
        let mut shard = self.lock(stream);
        let log = self.log(&mut shard, stream);
        (log.epoch(), log.tail())
    }

    /// Records a cumulative ACK of a user inbox; returns how many messages
    /// it newly acknowledged (0 for an unknown stream or an old offset).
    pub fn ack(&self, stream: &StreamName, offset: u64) -> u64 {
        let mut shard = self.lock(stream);
        let n = shard.get_mut(stream).map_or(0, |log| log.ack(offset));
        self.acked_total.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Delivery receipts of a user inbox, if it exists.
    pub fn receipts(&self, stream: &StreamName) -> Option<InboxReceipts> {
        let shard = self.lock(stream);
        shard.get(stream).map(|log| InboxReceipts {
            epoch: log.epoch(),
            tail: log.tail(),
            acked: log.acked(),
            receipts: log.receipts(),
        })
    }

    /// History memory in bytes (cheap: no lock).
    pub fn history_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Trims every log to the age bound at `now` (appends and replays trim
    /// their own log; this catches streams nobody touches). Returns bytes
    /// freed. Call periodically (e.g. once a second).
    pub fn sweep(&self, now: u64) -> usize {
        let mut freed = 0;
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            for log in shard.values_mut() {
                freed += log.trim(now, self.limits);
            }
        }
        self.bytes.fetch_sub(freed as u64, Ordering::Relaxed);
        freed
    }

    /// Totals for `/metrics` (locks each shard briefly).
    pub fn stats(&self) -> StreamsStats {
        let mut st = StreamsStats::default();
        for s in self.shards.iter() {
            let shard = s.lock().unwrap_or_else(|e| e.into_inner());
            st.streams += shard.len();
            for log in shard.values() {
                st.messages += log.len();
                st.bytes += log.bytes();
            }
        }
        st
    }
}

impl crate::offsets::StreamSink for Streams {
    fn append(
        &self,
        stream: &StreamName,
        now_ms: u64,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> (u64, Bytes) {
        Streams::append(self, stream, now_ms, encode)
    }

    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn replay(&self, stream: &StreamName, epoch: u32, last_offset: u64, now_ms: u64) -> Replay {
        Streams::replay(self, stream, epoch, last_offset, now_ms)
    }

    fn position(&self, stream: &StreamName, now_ms: u64) -> (u32, u64) {
        Streams::position(self, stream, now_ms)
    }

    fn receipts(&self, stream: &StreamName) -> Option<InboxReceipts> {
        Streams::receipts(self, stream)
    }

    fn ack(&self, stream: &StreamName, offset: u64) -> u64 {
        Streams::ack(self, stream, offset)
    }

    fn history_bytes(&self) -> u64 {
        Streams::history_bytes(self)
    }

    fn acked_total(&self) -> u64 {
        Streams::acked_total(self)
    }

    fn sweep(&self, now_ms: u64) {
        Streams::sweep(self, now_ms);
    }
}

#[cfg(test)]
mod tests;
