//! [`StreamLog`]: one stream's offsets and its bounded replay history.
//!
//! Pure and clock-free: every method takes `now` (ms on the caller's monotonic
//! clock). The history holds the already-encoded PUSH frames (`Bytes`, encoded
//! once and shared with every live recipient), bounded by count and by age.
//!
//! Offsets start at 1 and increase by exactly 1 per append within the epoch.
//! The epoch is the process epoch: history is in memory only, so it cannot be
//! trusted across a restart and a new process always starts a new epoch.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use crate::metrics::limits::{history_trimmed, HistoryTrim};

/// Retention bounds of every stream's history (`[history]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept per stream; 0 keeps none (resume always reports a
    /// gap when anything was missed).
    pub max_messages: usize,
    /// Messages older than this (ms since append) are dropped.
    pub max_age_ms: u64,
    /// Budget of all streams' history bytes together; over it the oldest messages of any
    /// stream are evicted first (enforced by [`crate::streams::Streams`]).
    pub max_bytes: u64,
    /// A log with no append for this long is removed (by `Streams::sweep`).
    pub idle_ttl_ms: u64,
}

impl HistoryLimits {
    /// The limits from the `[history]` config section.
    pub fn from_config(cfg: &crate::config::HistoryConfig) -> Self {
        HistoryLimits {
            max_messages: cfg.max_messages_per_stream as usize,
            max_age_ms: cfg.max_age_ms,
            max_bytes: cfg.max_bytes,
            idle_ttl_ms: cfg.idle_ttl_ms,
        }
    }
}

/// Bytes of bookkeeping counted per retained message on top of its frame.
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>();

/// One retained message.
#[derive(Debug, Clone)]
struct Entry {
    /// Its offset (entries are contiguous, so this is also derivable; kept
    /// for clarity and cheap assertions).
    offset: u64,
    /// When it was appended; decides age trimming.
    at_ms: u64,
    /// The encoded PUSH frame, shared with the live fan-out.
    frame: Bytes,
}

/// Why a resume could not continue exactly after the client's last offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecoveredReason {
    /// Same epoch, but the messages after the client's offset were trimmed.
    Gap,
    /// The client's epoch is not this process's: the history it refers to
    /// is gone (restart) and offsets are not comparable.
    EpochChanged,
}

/// The outcome of [`StreamLog::replay`], computed atomically with the
/// stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Every message after the client's offset follows in `frames`, in
    /// offset order; the last one is `tail` (or none, if the client is
    /// up to date).
    Resumed {
        /// Encoded PUSH frames, offsets `last_offset+1 ..= tail`.
        frames: Vec<Bytes>,
        /// The stream's highest offset when the snapshot was taken.
        tail: u64,
    },
    /// Messages `missing` are lost; delivery continues at `missing.end`
    /// (in `epoch`) with `frames` (the whole retained history).
    NotRecovered {
        /// Gap (trimmed) or EpochChanged (restart).
        reason: NotRecoveredReason,
        /// The epoch delivery continues in.
        epoch: u32,
        /// Lost offsets, half-open, in `epoch` (for `EpochChanged`: `1..first`,
        /// the new epoch's offsets before the first one replayed; never inverted).
        missing: Range<u64>,
        /// Encoded PUSH frames, offsets `missing.end ..= tail`.
        frames: Vec<Bytes>,
        /// The stream's highest offset when the snapshot was taken.
        tail: u64,
    },
}

impl Replay {
    /// The frames to send, in order.
    pub fn frames(&self) -> &[Bytes] {
        match self {
            Replay::Resumed { frames, .. } | Replay::NotRecovered { frames, .. } => frames,
        }
    }

    /// Takes the frames out (to hand them to a session without cloning).
    pub fn into_frames(self) -> Vec<Bytes> {
        match self {
            Replay::Resumed { frames, .. } | Replay::NotRecovered { frames, .. } => frames,
        }
    }

    /// The tail `T` of the snapshot: the connection's last-delivered offset
    /// once the frames are sent. Live pushes with offset ≤ `T` are duplicates.
    pub fn tail(&self) -> u64 {
        match self {
            Replay::Resumed { tail, .. } | Replay::NotRecovered { tail, .. } => *tail,
        }
    }

    /// The epoch of [`Replay::tail`]: the one delivery continues in (`asked_epoch`, the
    /// resume entry's, when the stream resumed in it).
    pub fn epoch(&self, asked_epoch: u32) -> u32 {
        match self {
            Replay::Resumed { .. } => asked_epoch,
            Replay::NotRecovered { epoch, .. } => *epoch,
        }
    }

    /// Keeps only the newest frames that fit in `budget` bytes (and takes them out of it).
    /// If any had to go, the outcome becomes (or stays) NOT_RECOVERED with the skipped
    /// offsets added to the missing range: for the client the skipped messages are a GAP,
    /// exactly as if retention had dropped them. `asked_epoch` is the resume entry's epoch.
    /// Returns the outcome and whether anything was skipped.
    pub fn capped(self, asked_epoch: u32, budget: &mut u64) -> (Replay, bool) {
        let frames = self.frames();
        let mut kept_bytes = 0u64;
        let mut kept = 0usize;
        for f in frames.iter().rev() {
            let len = f.len() as u64;
            if kept_bytes + len > *budget {
                break;
            }
            kept_bytes += len;
            kept += 1;
        }
        *budget -= kept_bytes;
        let skip = frames.len() - kept;
        if skip == 0 {
            return (self, false);
        }
        let capped = match self {
            Replay::Resumed { mut frames, tail } => {
                let first = tail + 1 - frames.len() as u64;
                let frames = frames.split_off(skip);
                Replay::NotRecovered {
                    reason: NotRecoveredReason::Gap,
                    epoch: asked_epoch,
                    missing: first..first + skip as u64,
                    frames,
                    tail,
                }
            }
            Replay::NotRecovered {
                reason,
                epoch,
                missing,
                mut frames,
                tail,
            } => {
                let continue_at = missing.end + skip as u64;
                let frames = frames.split_off(skip);
                Replay::NotRecovered {
                    reason,
                    epoch,
                    missing: missing.start..continue_at,
                    frames,
                    tail,
                }
            }
        };
        (capped, true)
    }

    /// The RESUME_RESULT frame body for this outcome.
    pub fn resume_result(
        &self,
        stream: &ringport_proto::StreamName,
        asked_epoch: u32,
    ) -> ringport_proto::ResumeResult {
        use ringport_proto::{ResumeOutcome, ResumeResult};
        match self {
            Replay::Resumed { .. } => ResumeResult {
                stream: stream.clone(),
                outcome: ResumeOutcome::Resumed,
                old_epoch: asked_epoch,
                new_epoch: asked_epoch,
                missing_from: 0,
                missing_to: 0,
            },
            Replay::NotRecovered {
                reason,
                epoch,
                missing,
                ..
            } => ResumeResult {
                stream: stream.clone(),
                outcome: match reason {
                    NotRecoveredReason::Gap => ResumeOutcome::Gap,
                    NotRecoveredReason::EpochChanged => ResumeOutcome::EpochChanged,
                },
                old_epoch: asked_epoch,
                new_epoch: *epoch,
                missing_from: missing.start,
                missing_to: missing.end,
            },
        }
    }
}

/// One stream: its epoch, next offset, bounded history and (for user
/// inboxes) the cumulative acknowledgement.
#[derive(Debug)]
pub struct StreamLog {
    /// Epoch all offsets of this log belong to.
    epoch: u32,
    /// Highest offset assigned so far (0: nothing appended yet).
    tail: u64,
    /// Retained messages, oldest first, contiguous offsets ending at `tail`.
    history: VecDeque<Entry>,
    /// Sum of retained frame lengths plus per-entry overhead, for /metrics.
    bytes: usize,
    /// Highest offset the client acknowledged (user inboxes only).
    acked: u64,
    /// Messages acknowledged so far: the delivery receipts of this inbox.
    receipts: u64,
    /// When the log was created or last appended to (ms): a log idle for
    /// `idle_ttl_ms` is removed by `Streams::sweep`.
    last_used_ms: u64,
}

impl StreamLog {
    /// An empty log in `epoch`.
    pub fn new(epoch: u32) -> Self {
        StreamLog {
            epoch,
            tail: 0,
            history: VecDeque::new(),
            bytes: 0,
            acked: 0,
            receipts: 0,
            last_used_ms: 0,
        }
    }

    /// An empty log whose first append gets offset `tail + 1`: a stream whose log was
    /// removed continues above every removed tail, so no client ever sees an offset twice.
    pub fn starting_after(epoch: u32, tail: u64, now: u64) -> Self {
        let mut log = StreamLog::new(epoch);
        log.tail = tail;
        log.last_used_ms = now;
        log
    }

    /// Whether nothing was appended since `cutoff` (nor created after it).
    pub fn idle_since(&self, cutoff: u64) -> bool {
        self.last_used_ms < cutoff
    }

    /// Evicts retained messages up to and including `offset` (the global byte budget's
    /// oldest-first eviction). Returns how many were evicted; a later resume across them
    /// gets GAP.
    pub fn evict_through(&mut self, offset: u64) -> u64 {
        let mut n = 0;
        while let Some(front) = self.history.front() {
            if front.offset > offset {
                break;
            }
            self.bytes -= front.frame.len() + ENTRY_OVERHEAD;
            self.history.pop_front();
            n += 1;
        }
        if self.history.is_empty() && self.history.capacity() > 16 {
            self.history = VecDeque::new();
        }
        n
    }

    /// A no-history log's answer to a resume (an unknown stream, answered as
    /// an empty log at the floor): everything after `last_offset` up to `tail`
    /// is lost.
    pub fn replay_without_history(
        epoch: u32,
        tail: u64,
        asked_epoch: u32,
        last_offset: u64,
    ) -> Replay {
        let mut log = StreamLog::new(epoch);
        log.tail = tail;
        log.replay(
            asked_epoch,
            last_offset,
            0,
            HistoryLimits {
                max_messages: 0,
                max_age_ms: u64::MAX,
                max_bytes: u64::MAX,
                idle_ttl_ms: u64::MAX,
            },
            false,
        )
    }

    /// The epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Highest offset assigned (0 if none).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Lowest retained offset, if any message is retained.
    pub fn first_retained(&self) -> Option<u64> {
        self.history.front().map(|e| e.offset)
    }

    /// Retained messages.
    pub fn len(&self) -> usize {
        self.history.len()
    }

    /// Whether no message is retained.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }

    /// History memory in bytes (frames plus bookkeeping).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Cumulative acknowledged offset (user inboxes).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Number of messages acknowledged so far (delivery receipts).
    pub fn receipts(&self) -> u64 {
        self.receipts
    }

    /// Assigns the next offset, lets `encode` build the PUSH frame for it,
    /// retains the frame and returns both. Trims to `limits` at `now`.
    pub fn append(
        &mut self,
        now: u64,
        limits: HistoryLimits,
        encode: &mut dyn FnMut(u64) -> Bytes,
    ) -> (u64, Bytes) {
        self.tail += 1;
        self.last_used_ms = self.last_used_ms.max(now);
        let frame = encode(self.tail);
        if limits.max_messages > 0 {
            self.bytes += frame.len() + ENTRY_OVERHEAD;
            self.history.push_back(Entry {
                offset: self.tail,
                at_ms: now,
                frame: frame.clone(),
            });
        }
        self.trim(now, limits);
        (self.tail, frame)
    }

    /// Drops messages beyond the count bound or older than the age bound.
    /// Returns the number of bytes freed.
    pub fn trim(&mut self, now: u64, limits: HistoryLimits) -> usize {
        let before = self.bytes;
        // max_age_ms = 0 means no age limit.
        let oldest_kept = match limits.max_age_ms {
            0 => 0,
            age => now.saturating_sub(age),
        };
        let (mut by_count, mut by_age) = (0, 0);
        while let Some(front) = self.history.front() {
            let too_many = self.history.len() > limits.max_messages;
            let too_old = front.at_ms < oldest_kept;
            if !(too_many || too_old) {
                break;
            }
            if too_old {
                by_age += 1;
            } else {
                by_count += 1;
            }
            self.bytes -= front.frame.len() + ENTRY_OVERHEAD;
            self.history.pop_front();
        }
        history_trimmed(HistoryTrim::Count, by_count);
        history_trimmed(HistoryTrim::Age, by_age);
        if self.history.is_empty() && self.history.capacity() > 16 {
            self.history = VecDeque::new();
        }
        before - self.bytes
    }

    /// What a client that has everything up to `last_offset` of `epoch`
    /// gets, trimmed at `now` first. User inboxes resume from the lower of
    /// `last_offset` and the acknowledged offset, so unacknowledged messages
    /// are redelivered (at least once on the wire).
    pub fn replay(
        &mut self,
        epoch: u32,
        last_offset: u64,
        now: u64,
        limits: HistoryLimits,
        redeliver_unacked: bool,
    ) -> Replay {
        self.trim(now, limits);
        let tail = self.tail;
        let first = self.first_retained().unwrap_or(tail + 1);
        if epoch != self.epoch {
            return Replay::NotRecovered {
                reason: NotRecoveredReason::EpochChanged,
                epoch: self.epoch,
                // Both ends in the new epoch: its offsets the client will not receive.
                // (Everything after `last_offset` in the old epoch is lost as well.)
                missing: 1..first,
                frames: self.frames_from(first),
                tail,
            };
        }
        // A position beyond the tail cannot come from this epoch's log; the
        // client can only be told nothing is missing.
        let mut from = last_offset.min(tail).saturating_add(1);
        if redeliver_unacked {
            from = from.min(self.acked + 1);
        }
        if from >= first {
            Replay::Resumed {
                frames: self.frames_from(from),
                tail,
            }
        } else {
            Replay::NotRecovered {
                reason: NotRecoveredReason::Gap,
                epoch: self.epoch,
                missing: from..first,
                frames: self.frames_from(first),
                tail,
            }
        }
    }

    /// Up to `limit` retained messages with offsets above `since`, oldest first, with their
    /// offsets (the history API's page).
    pub fn page(&self, since: u64, limit: usize) -> Vec<(u64, Bytes)> {
        let Some(first) = self.first_retained() else {
            return Vec::new();
        };
        let skip =
            usize::try_from(since.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.history
            .iter()
            .skip(skip)
            .take(limit)
            .map(|e| (e.offset, e.frame.clone()))
            .collect()
    }

    fn frames_from(&self, from: u64) -> Vec<Bytes> {
        let Some(first) = self.first_retained() else {
            return Vec::new();
        };
        let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
        self.history
            .iter()
            .skip(skip)
            .map(|e| e.frame.clone())
            .collect()
    }

    /// Records a cumulative ACK up to `offset` (clamped to the tail). Returns
    /// how many messages it newly acknowledged.
    pub fn ack(&mut self, offset: u64) -> u64 {
        let offset = offset.min(self.tail);
        if offset <= self.acked {
            return 0;
        }
        let newly = offset - self.acked;
        self.acked = offset;
        self.receipts += newly;
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: HistoryLimits = HistoryLimits {
        max_messages: 4,
        max_age_ms: 1_000,
        max_bytes: u64::MAX,
        idle_ttl_ms: u64::MAX,
    };

    fn push(log: &mut StreamLog, now: u64) -> u64 {
        log.append(now, LIM, &mut |off| Bytes::from(off.to_string()))
            .0
    }

    fn offsets(r: &Replay) -> Vec<u64> {
        r.frames()
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn offsets_start_at_one_and_increase() {
        let mut log = StreamLog::new(7);
        assert_eq!(
            (1..=5).map(|_| push(&mut log, 0)).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(log.tail(), 5);
        assert_eq!(log.len(), 4, "count bound");
        assert_eq!(log.first_retained(), Some(2));
    }

    #[test]
    fn encode_called_once_and_frame_shared() {
        let mut log = StreamLog::new(1);
        let mut calls = 0;
        let (_, frame) = log.append(0, LIM, &mut |_| {
            calls += 1;
            Bytes::from_static(b"abc")
        });
        assert_eq!(calls, 1);
        let r = log.replay(1, 0, 0, LIM, false);
        assert_eq!(r.frames()[0].as_ptr(), frame.as_ptr(), "same allocation");
    }

    #[test]
    fn max_age_zero_means_no_age_limit() {
        // docs/operations.md: `history.max_age_ms` 0 = no age limit.
        let lim = HistoryLimits::from_config(&crate::config::HistoryConfig {
            max_messages_per_stream: 4,
            max_age_ms: 0,
            ..Default::default()
        });
        let mut log = StreamLog::new(1);
        log.append(0, lim, &mut |off| Bytes::from(off.to_string()));
        log.append(10, lim, &mut |off| Bytes::from(off.to_string()));
        log.trim(86_400_000, lim);
        assert_eq!(log.len(), 2, "a day later both are still kept");
        let r = log.replay(1, 0, 86_400_000, lim, false);
        assert_eq!(offsets(&r), [1, 2]);
    }

    #[test]
    fn age_bound_on_a_virtual_clock() {
        let mut log = StreamLog::new(1);
        push(&mut log, 0);
        push(&mut log, 500);
        push(&mut log, 1_200);
        log.trim(1_400, LIM);
        assert_eq!(log.first_retained(), Some(2));
        log.trim(1_501, LIM);
        assert_eq!(log.first_retained(), Some(3));
        log.trim(10_000, LIM);
        assert!(log.is_empty());
        assert_eq!(log.bytes(), 0);
        assert_eq!(log.tail(), 3, "offsets survive trimming");
    }

    #[test]
    fn resumed_returns_frames_up_to_tail() {
        let mut log = StreamLog::new(9);
        for _ in 0..4 {
            push(&mut log, 0);
        }
        let r = log.replay(9, 2, 0, LIM, false);
        assert!(matches!(r, Replay::Resumed { tail: 4, .. }));
        assert_eq!(offsets(&r), [3, 4]);
        let up_to_date = log.replay(9, 4, 0, LIM, false);
        assert_eq!(up_to_date.frames().len(), 0);
        assert_eq!(up_to_date.tail(), 4);
    }

    #[test]
    fn gap_reports_missing_range_and_continues_at_first_retained() {
        let mut log = StreamLog::new(9);
        for _ in 0..10 {
            push(&mut log, 0);
        }
        let r = log.replay(9, 3, 0, LIM, false);
        match &r {
            Replay::NotRecovered {
                reason, missing, ..
            } => {
                assert_eq!(*reason, NotRecoveredReason::Gap);
                assert_eq!(*missing, 4..7);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(offsets(&r), [7, 8, 9, 10]);
        let rr = r.resume_result(&ringport_proto::StreamName::Room("a".into()), 9);
        assert_eq!((rr.missing_from, rr.missing_to), (4, 7));
    }

    #[test]
    fn epoch_changed_never_replays_old_epoch_positions() {
        let mut log = StreamLog::new(2);
        push(&mut log, 0);
        push(&mut log, 0);
        let r = log.replay(1, 50, 0, LIM, false);
        match &r {
            Replay::NotRecovered {
                reason,
                epoch,
                missing,
                ..
            } => {
                assert_eq!(*reason, NotRecoveredReason::EpochChanged);
                assert_eq!(*epoch, 2);
                // Both ends in the new epoch: nothing of it is missing.
                assert_eq!((missing.start, missing.end), (1, 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            offsets(&r),
            [1, 2],
            "the new epoch's history, from its start"
        );
    }

    #[test]
    fn epoch_changed_ranges_are_never_inverted() {
        // The new epoch's history was trimmed (1..=2 gone): its lost offsets are [1, 3),
        // whatever the client's old position, u64::MAX included.
        let mut log = StreamLog::new(2);
        for _ in 0..6 {
            push(&mut log, 0);
        }
        for last in [0, 22, 50, u64::MAX] {
            let r = log.replay(1, last, 0, LIM, false);
            match &r {
                Replay::NotRecovered {
                    reason, missing, ..
                } => {
                    assert_eq!(*reason, NotRecoveredReason::EpochChanged);
                    assert_eq!((missing.start, missing.end), (1, 3), "last_offset {last}");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(offsets(&r), [3, 4, 5, 6]);
            let rr = r.resume_result(&ringport_proto::StreamName::Room("a".into()), 1);
            assert!(rr.missing_from <= rr.missing_to, "{rr:?}");
        }
        // An empty new epoch: nothing missing, delivery continues at 1.
        let mut empty = StreamLog::new(2);
        match empty.replay(1, u64::MAX, 0, LIM, false) {
            Replay::NotRecovered { missing, .. } => assert_eq!(missing, 1..1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_history_means_gap_when_anything_was_missed() {
        let lim = HistoryLimits {
            max_messages: 0,
            max_age_ms: 1_000,
            max_bytes: u64::MAX,
            idle_ttl_ms: u64::MAX,
        };
        let mut log = StreamLog::new(1);
        for _ in 0..3 {
            log.append(0, lim, &mut |_| Bytes::new());
        }
        assert_eq!(log.bytes(), 0);
        assert!(matches!(
            log.replay(1, 1, 0, lim, false),
            Replay::NotRecovered { ref missing, .. } if *missing == (2..4)
        ));
        assert!(matches!(
            log.replay(1, 3, 0, lim, false),
            Replay::Resumed { .. }
        ));
    }

    #[test]
    fn unacked_inbox_messages_are_redelivered() {
        let mut log = StreamLog::new(1);
        for _ in 0..4 {
            push(&mut log, 0);
        }
        assert_eq!(log.ack(2), 2);
        assert_eq!(log.ack(1), 0, "acks are cumulative");
        assert_eq!(log.ack(99), 2, "clamped to tail");
        assert_eq!(log.receipts(), 4);
        let mut log = StreamLog::new(1);
        for _ in 0..4 {
            push(&mut log, 0);
        }
        log.ack(1);
        // The client saw up to 4 but acknowledged only 1: 2..=4 come again.
        assert_eq!(offsets(&log.replay(1, 4, 0, LIM, true)), [2, 3, 4]);
        assert_eq!(offsets(&log.replay(1, 4, 0, LIM, false)), Vec::<u64>::new());
    }

    #[test]
    fn capped_replay_keeps_the_newest_frames_and_reports_a_gap() {
        let mut log = StreamLog::new(9);
        let lim = HistoryLimits {
            max_messages: 100,
            ..LIM
        };
        for _ in 0..12 {
            // Frames "1".."9" are one byte, "10".."12" two.
            log.append(0, lim, &mut |off| Bytes::from(off.to_string()));
        }
        let mut budget = 7;
        let (r, capped) = log.replay(9, 2, 0, lim, false).capped(9, &mut budget);
        assert!(capped);
        assert_eq!(offsets(&r), [9, 10, 11, 12], "2 + 2 + 2 + 1 bytes");
        assert_eq!(budget, 0);
        match &r {
            Replay::NotRecovered {
                reason, missing, ..
            } => assert_eq!((*reason, missing.clone()), (NotRecoveredReason::Gap, 3..9)),
            other => panic!("{other:?}"),
        }
        let mut budget = 100;
        let (r, capped) = log.replay(9, 2, 0, lim, false).capped(9, &mut budget);
        assert!(!capped);
        assert!(matches!(r, Replay::Resumed { .. }));
        assert_eq!(budget, 100 - (7 + 6));
        let mut budget = 0;
        let (r, _) = log.replay(9, 2, 0, lim, false).capped(9, &mut budget);
        assert!(r.frames().is_empty());
        assert!(matches!(r, Replay::NotRecovered { ref missing, .. } if *missing == (3..13)));
        // An epoch change keeps its reason; the continuation moves past the skipped frames.
        let mut budget = 2;
        let (r, _) = log.replay(1, 50, 0, lim, false).capped(1, &mut budget);
        match &r {
            Replay::NotRecovered {
                reason, missing, ..
            } => {
                assert_eq!(*reason, NotRecoveredReason::EpochChanged);
                assert_eq!((missing.start, missing.end), (1, 12));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(offsets(&r), [12]);
    }

    #[test]
    fn bytes_track_history() {
        let mut log = StreamLog::new(1);
        log.append(0, LIM, &mut |_| Bytes::from_static(b"12345"));
        assert_eq!(log.bytes(), 5 + ENTRY_OVERHEAD);
        for _ in 0..10 {
            log.append(0, LIM, &mut |_| Bytes::from_static(b"12345"));
        }
        assert_eq!(log.bytes(), 4 * (5 + ENTRY_OVERHEAD));
    }
}
