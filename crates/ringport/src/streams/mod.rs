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
//! Epochs: history lives in memory only, so each log gets a random epoch when
//! it is created. A restarted process (or a log recreated after it was
//! swept idle) has a different epoch, and a client resuming an old epoch is
//! told `EpochChanged` — never served a replay that mixes epochs.
//!
//! See docs/architecture.md, "Reliable delivery", for how the gateway uses the
//! replay snapshot to resume a connection without gaps or duplicates.

mod dedupe;
mod log;

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Random per process; mixed with `created` to give each new log its epoch.
    epoch_seed: u64,
    /// Logs created so far (makes a recreated log's epoch differ).
    created: AtomicU32,
    /// History bytes over all shards, kept in step under the shard locks so
    /// `/metrics` reads it without locking.
    bytes: AtomicU64,
}

impl Streams {
    /// A registry with `shards` locks and a random epoch seed.
    pub fn new(limits: HistoryLimits, shards: usize) -> Self {
        Streams::with_epoch_seed(limits, shards, random_seed())
    }

    /// As [`new`](Self::new) with a chosen epoch seed (tests).
    pub fn with_epoch_seed(limits: HistoryLimits, shards: usize, seed: u64) -> Self {
        Streams {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            limits,
            epoch_seed: seed,
            created: AtomicU32::new(0),
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

    fn next_epoch(&self) -> u32 {
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        let mut h = DefaultHasher::new();
        (self.epoch_seed, n).hash(&mut h);
        match h.finish() as u32 {
            0 => 1,
            e => e,
        }
    }

    fn log<'a>(&self, shard: &'a mut Shard, stream: &StreamName, now: u64) -> &'a mut StreamLog {
        if !shard.contains_key(stream) {
            shard.insert(stream.clone(), StreamLog::new(self.next_epoch(), now));
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

    /// The stream's epoch (creating its log if needed), e.g. for WELCOME.
    pub fn epoch_of(&self, stream: &StreamName, now: u64) -> u32 {
        let mut shard = self.lock(stream);
        self.log(&mut shard, stream, now).epoch()
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
        let log = self.log(&mut shard, stream, now_ms);
        let before = log.bytes();
        let out = log.append(now_ms, self.limits, encode);
        self.account(before, log.bytes());
        out
    }

    /// Like [`append`](Self::append), with the stream's epoch passed to the
    /// encoder (a PUSH frame carries it).
    pub fn append_with_epoch(
        &self,
        stream: &StreamName,
        now_ms: u64,
        encode: &mut dyn FnMut(u32, u64) -> Bytes,
    ) -> (u32, u64, Bytes) {
        let mut shard = self.lock(stream);
        let log = self.log(&mut shard, stream, now_ms);
        let epoch = log.epoch();
        let before = log.bytes();
        let (offset, frame) = log.append(now_ms, self.limits, &mut |off| encode(epoch, off));
        self.account(before, log.bytes());
        (epoch, offset, frame)
    }

    /// The resume snapshot for a client that has `stream` up to
    /// `last_offset` of `epoch`, taken atomically under the stream's lock.
    /// User inboxes also redeliver unacknowledged messages.
    pub fn replay(&self, stream: &StreamName, epoch: u32, last_offset: u64, now: u64) -> Replay {
        let mut shard = self.lock(stream);
        let log = self.log(&mut shard, stream, now);
        let before = log.bytes();
        let r = log.replay(epoch, last_offset, now, self.limits, stream.is_user());
        self.account(before, log.bytes());
        r
    }

    /// The stream's current `(epoch, tail)` (creating its log if needed): a
    /// connection joining live treats offsets ≤ tail as already past.
    pub fn position(&self, stream: &StreamName, now: u64) -> (u32, u64) {
        let mut shard = self.lock(stream);
        let log = self.log(&mut shard, stream, now);
        (log.epoch(), log.tail())
    }

    /// Records a cumulative ACK of a user inbox; returns how many messages
    /// it newly acknowledged (0 for an unknown stream or an old offset).
    pub fn ack(&self, stream: &StreamName, offset: u64) -> u64 {
        let mut shard = self.lock(stream);
        shard.get_mut(stream).map_or(0, |log| log.ack(offset))
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

    /// Trims every log to the age bound at `now`. Logs with nothing retained
    /// and nothing appended for `max_age_ms` are removed; if such a stream is
    /// used again it starts a new epoch (its offsets could not be resumed
    /// anyway). Returns bytes freed. Call periodically (e.g. once a second).
    pub fn sweep(&self, now: u64) -> usize {
        let mut freed = 0;
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, log| {
                let f = log.trim(now, self.limits);
                freed += f;
                !log.is_empty() || !log.idle_since(now.saturating_sub(self.limits.max_age_ms))
            });
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

/// A seed that differs per process start (std's per-process random hasher
/// keys, the clock and the pid), without an RNG dependency.
fn random_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        d.as_nanos().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests;
