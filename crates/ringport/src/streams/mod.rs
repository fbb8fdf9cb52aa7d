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
//! served a replay that mixes epochs.
//!
//! Bounded state (docs/operations.md, "Limits and abuse"):
//! - a log exists only once a message was appended to its stream; reading a
//!   position, resuming or acking an unknown stream creates nothing;
//! - a log with no append for `idle_ttl_ms` is removed by [`Streams::sweep`].
//!   Offsets must still never repeat within the epoch, so the registry keeps
//!   one number, the *floor*: the highest tail of any removed log. A new log
//!   starts right above it, and an unknown stream's position is the floor
//!   (a client resuming below it is told GAP, since a removed log's messages
//!   may have been missed). Offsets therefore increase strictly but may jump;
//! - all history together is bounded by `max_bytes`: every retained message
//!   is also queued in append order (`order`), and an append that takes the
//!   total over the budget evicts from the front of that queue, the oldest
//!   messages of any stream first. A resume across an evicted message is told
//!   GAP, as for any trimmed history.
//!
//! See docs/architecture.md, "Reliable delivery", for how the gateway uses the
//! replay snapshot to resume a connection without gaps or duplicates.

mod dedupe;
mod log;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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

/// One page of a stream's retained history (`GET .../history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Epoch the offsets belong to.
    pub epoch: u32,
    /// Highest offset appended.
    pub tail: u64,
    /// Oldest offset still retained (`tail + 1` when none is): offsets below it are gone.
    pub first: u64,
    /// `(offset, encoded PUSH frame)`, oldest first.
    pub frames: Vec<(u64, Bytes)>,
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

/// One lock's share of the logs. Keys are shared with `Streams::order`.
type Shard = HashMap<Arc<StreamName>, StreamLog>;

/// Eviction order: one `(stream, offset)` per retained message, oldest first.
/// Entries whose message is already gone (trimmed, or its log removed) are
/// skipped when they reach the front, and dropped by `sweep` when they
/// outnumber the retained messages.
type Order = VecDeque<(Arc<StreamName>, u64)>;

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
    /// Highest tail of any removed log: a new log's offsets start above it.
    floor: AtomicU64,
    /// Logs over all shards (`ringport_history_streams`).
    logs: AtomicU64,
    /// Epochs of cluster nodes that left gracefully with every message they numbered
    /// received here (`cluster/handover.rs`): a replica in such an epoch is continued in it
    /// by its new owner (this process) instead of restarting in the process epoch.
    adopted: Mutex<Vec<u32>>,
    /// Retained messages in append order, for the `max_bytes` eviction. Lock
    /// order: `order` before a shard lock, never the other way round.
    order: Mutex<Order>,
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
            floor: AtomicU64::new(0),
            logs: AtomicU64::new(0),
            adopted: Mutex::new(Vec::new()),
            order: Mutex::new(VecDeque::new()),
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

    fn order(&self) -> MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream's log, created for an append (the only caller that may
    /// create one), with offsets starting above the floor.
    fn log_for_append<'a>(
        &self,
        shard: &'a mut Shard,
        stream: &StreamName,
        now: u64,
    ) -> (Arc<StreamName>, &'a mut StreamLog) {
        let key = match shard.get_key_value(stream) {
            Some((k, _)) => Arc::clone(k),
            None => {
                let k = Arc::new(stream.clone());
                let floor = self.floor.load(Ordering::Relaxed);
                shard.insert(
                    Arc::clone(&k),
                    StreamLog::starting_after(self.epoch, floor, now),
                );
                self.logs.fetch_add(1, Ordering::Relaxed);
                k
            }
        };
        let log = shard.get_mut(stream).expect("present or inserted above");
        (key, log)
    }

    /// Appends under the stream's lock, queues the retained message for
    /// eviction, then enforces the byte budget (after the lock is released:
    /// lock order is `order` before shard).
    fn append_inner(
        &self,
        stream: &StreamName,
        now_ms: u64,
        adopt: bool,
        encode: &mut dyn FnMut(u32, u64) -> Bytes,
    ) -> (u32, u64, Bytes) {
        let (key, epoch, offset, frame, retained) = {
            let mut shard = self.lock(stream);
            let (key, log) = self.log_for_append(&mut shard, stream, now_ms);
            let before = log.bytes();
            if log.epoch() != self.epoch && !(adopt && self.is_adopted(log.epoch())) {
                // A replica of another node's numbering (cluster) that this process now
                // numbers itself: a new epoch, continuing above the replica's tail so a
                // connection's last-delivered offset never hides the new messages. (A
                // replica of a node that handed its streams over is continued as it is.)
                *log = StreamLog::starting_after(self.epoch, log.tail(), now_ms);
            }
            let epoch = log.epoch();
            let (offset, frame) = log.append(now_ms, self.limits, &mut |off| encode(epoch, off));
            let retained = log.tail() == offset && !log.is_empty();
            self.account(before, log.bytes());
            (key, epoch, offset, frame, retained)
        };
        if retained {
            self.order().push_back((key, offset));
        }
        self.enforce_budget();
        (epoch, offset, frame)
    }

    /// Evicts the oldest retained messages of any stream until history fits
    /// `max_bytes`. Returns how many messages were evicted.
    fn enforce_budget(&self) -> u64 {
        let max = self.limits.max_bytes;
        if self.history_bytes() <= max {
            return 0;
        }
        let mut order = self.order();
        let mut evicted = 0;
        while self.history_bytes() > max {
            let Some((stream, offset)) = order.pop_front() else {
                break;
            };
            let mut shard = self.lock(&stream);
            if let Some(log) = shard.get_mut(&*stream) {
                let before = log.bytes();
                evicted += log.evict_through(offset);
                self.account(before, log.bytes());
            }
        }
        drop(order);
        crate::metrics::limits::hit(
            crate::metrics::Limit::HistoryBytes,
            evicted,
            &format_args!(
                "history.max_bytes ({max}) reached: evicting the oldest messages of any stream"
            ),
        );
        evicted
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
    /// returned for the live fan-out. Creates the stream's log if needed.
    pub fn append(
        &self,
        stream: &StreamName,
        now_ms: u64,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> (u64, Bytes) {
        let (_, offset, frame) =
            self.append_inner(stream, now_ms, false, &mut |_, off| encode(off));
        (offset, frame)
    }

    /// Replicas in `epoch` (a node that left with every message it numbered received here)
    /// are continued in that epoch by [`StreamSink::append`] with `adopt`.
    pub fn adopt_epoch(&self, epoch: u32) {
        let mut adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        if epoch != self.epoch && !adopted.contains(&epoch) {
            adopted.push(epoch);
        }
    }

    fn is_adopted(&self, epoch: u32) -> bool {
        let adopted = self.adopted.lock().unwrap_or_else(|e| e.into_inner());
        adopted.contains(&epoch)
    }

    /// Retains a message another node numbered (`epoch`, `offset`) in this process's
    /// replica of `stream` (cluster: the stream's owner is another node). `encode` builds the
    /// frame once. `None`: the replica already has that offset of that epoch (a duplicate,
    /// not to be delivered again). A message that does not follow the replica's tail (another
    /// epoch, or offsets skipped) restarts the replica just below it, so a resume across the
    /// missing offsets is answered GAP or EPOCH_CHANGED, never a silent hole.
    pub fn insert(
        &self,
        stream: &StreamName,
        epoch: u32,
        offset: u64,
        now_ms: u64,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> Option<Bytes> {
        if offset == 0 {
            return None;
        }
        let (key, frame, retained) = {
            let mut shard = self.lock(stream);
            let key = match shard.get_key_value(stream) {
                Some((k, _)) => Arc::clone(k),
                None => {
                    let k = Arc::new(stream.clone());
                    shard.insert(
                        Arc::clone(&k),
                        StreamLog::starting_after(epoch, offset - 1, now_ms),
                    );
                    self.logs.fetch_add(1, Ordering::Relaxed);
                    k
                }
            };
            let log = shard.get_mut(stream).expect("present or inserted above");
            if log.epoch() == epoch && offset <= log.tail() {
                return None;
            }
            let before = log.bytes();
            if log.epoch() != epoch || offset != log.tail() + 1 {
                *log = StreamLog::starting_after(epoch, offset - 1, now_ms);
            }
            let (_, frame) = log.append(now_ms, self.limits, encode);
            let retained = !log.is_empty();
            self.account(before, log.bytes());
            (key, frame, retained)
        };
        if retained {
            self.order().push_back((key, offset));
        }
        self.enforce_budget();
        Some(frame)
    }

    /// The resume snapshot for a client that has `stream` up to
    /// `last_offset` of `epoch`, taken atomically under the stream's lock.
    /// User inboxes also redeliver unacknowledged messages. An unknown stream
    /// (no log) is answered as an empty log at the floor; nothing is created.
    pub fn replay(&self, stream: &StreamName, epoch: u32, last_offset: u64, now: u64) -> Replay {
        let mut shard = self.lock(stream);
        let Some(log) = shard.get_mut(stream) else {
            let floor = self.floor.load(Ordering::Relaxed);
            return StreamLog::replay_without_history(self.epoch, floor, epoch, last_offset);
        };
        let before = log.bytes();
        let r = log.replay(epoch, last_offset, now, self.limits, stream.is_user());
        self.account(before, log.bytes());
        r
    }

    /// Up to `limit` retained messages of `stream` above `since`, trimmed to the age
    /// bound at `now` first. An unknown stream is an empty log at the floor.
    pub fn history(&self, stream: &StreamName, since: u64, limit: usize, now: u64) -> HistoryPage {
        let mut shard = self.lock(stream);
        let Some(log) = shard.get_mut(stream) else {
            let floor = self.floor.load(Ordering::Relaxed);
            return HistoryPage {
                epoch: self.epoch,
                tail: floor,
                first: floor + 1,
                frames: Vec::new(),
            };
        };
        let before = log.bytes();
        log.trim(now, self.limits);
        self.account(before, log.bytes());
        HistoryPage {
            epoch: log.epoch(),
            tail: log.tail(),
            first: log.first_retained().unwrap_or(log.tail() + 1),
            frames: log.page(since, limit),
        }
    }

    /// The stream's current `(epoch, tail)`: a connection joining live treats
    /// offsets ≤ tail as already past. An unknown stream is at the floor (its
    /// first message, whenever it comes, gets an offset above it); nothing is
    /// created.
    pub fn position(&self, stream: &StreamName, _now: u64) -> (u32, u64) {
        let shard = self.lock(stream);
        match shard.get(stream) {
            Some(log) => (log.epoch(), log.tail()),
            None => (self.epoch, self.floor.load(Ordering::Relaxed)),
        }
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
    /// their own log; this catches streams nobody touches), removes logs with
    /// no append for `idle_ttl_ms`, and drops stale eviction entries. Returns
    /// bytes freed. Call periodically (e.g. once a second).
    pub fn sweep(&self, now: u64) -> usize {
        let mut freed = 0;
        let mut removed = 0u64;
        let mut retained = 0usize;
        let idle_cutoff = now.saturating_sub(self.limits.idle_ttl_ms);
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, log| {
                freed += log.trim(now, self.limits);
                if log.idle_since(idle_cutoff) {
                    // Under the shard lock: a log created for this name later
                    // (same lock) reads the raised floor.
                    self.floor.fetch_max(log.tail(), Ordering::Relaxed);
                    freed += log.bytes();
                    removed += 1;
                    false
                } else {
                    retained += log.len();
                    true
                }
            });
        }
        self.bytes.fetch_sub(freed as u64, Ordering::Relaxed);
        self.logs.fetch_sub(removed, Ordering::Relaxed);
        crate::metrics::limits::hit(
            crate::metrics::Limit::HistoryIdle,
            removed,
            &format_args!(
                "history.idle_ttl_ms ({}) passed: removing idle stream logs",
                self.limits.idle_ttl_ms
            ),
        );
        self.compact_order(retained);
        freed
    }

    /// Drops eviction entries of messages already gone once they outnumber
    /// the `retained` messages (bounds `order` to about twice the history).
    fn compact_order(&self, retained: usize) {
        let mut order = self.order();
        if order.len() <= 2 * retained + 1024 {
            return;
        }
        order.retain(|(stream, offset)| {
            let shard = self.lock(stream);
            shard
                .get(&**stream)
                .and_then(StreamLog::first_retained)
                .is_some_and(|first| first <= *offset)
        });
    }

    /// Eviction entries queued (retained messages plus stale ones; tests).
    pub fn order_len(&self) -> usize {
        self.order().len()
    }

    /// Streams with a log (cheap: no lock).
    pub fn streams(&self) -> u64 {
        self.logs.load(Ordering::Relaxed)
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
        adopt: bool,
        encode: &mut dyn FnMut(u32, u64) -> Bytes,
    ) -> (u32, u64, Bytes) {
        self.append_inner(stream, now_ms, adopt, encode)
    }

    fn adopt_epoch(&self, epoch: u32) {
        Streams::adopt_epoch(self, epoch);
    }

    fn adopted_epochs(&self) -> Vec<u32> {
        self.adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn insert(
        &self,
        stream: &StreamName,
        epoch: u32,
        offset: u64,
        now_ms: u64,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> Option<Bytes> {
        Streams::insert(self, stream, epoch, offset, now_ms, encode)
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

    fn history_streams(&self) -> u64 {
        Streams::streams(self)
    }

    fn history(
        &self,
        stream: &StreamName,
        since: u64,
        limit: usize,
        now_ms: u64,
    ) -> Option<HistoryPage> {
        Some(Streams::history(self, stream, since, limit, now_ms))
    }
}

#[cfg(test)]
mod tests;
