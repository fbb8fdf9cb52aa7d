//! Per-stream positions: exactly-once delivery to the application.
//!
//! The client remembers, per stream, the epoch and the highest offset it
//! handed to the application. A PUSH at or below it (same epoch) is a
//! duplicate (a replay overlapping live traffic, an inbox redelivery) and is
//! dropped. A jump forward or an epoch change that no RESUME_RESULT or
//! WAKE_ACK announced is reported as a loss before the message is delivered:
//! the application is never silently skipped past a hole.

use std::ops::Range;

use crate::{ResumeOutcome, ResumePoint, ResumeResult, StreamName, StreamRef};

/// Why messages of a stream will never arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Same epoch, offsets dropped by the server's history bounds.
    Gap,
    /// The stream restarted (server restart): a new epoch, offsets restart.
    EpochChanged,
    /// Skipped by the server while the client slept (WAKE_ACK).
    SkippedWhileAsleep,
}

/// A loss to report to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// Stream affected.
    pub stream: StreamName,
    /// Why.
    pub reason: LossReason,
    /// Lost offsets, half-open, in `epoch`. For `EpochChanged` they are the
    /// new epoch's offsets before the one delivery continues at (so `1..n`,
    /// possibly empty); everything after the old position in the old epoch
    /// is lost as well. Never inverted.
    pub missing: Range<u64>,
    /// Epoch delivery continues in.
    pub epoch: u32,
}

#[derive(Debug, Clone)]
struct Position {
    epoch: u32,
    /// Highest offset delivered to the application.
    last: u64,
    /// A hole already reported (WAKE_ACK); a jump over exactly it is not
    /// reported again.
    announced: Option<Range<u64>>,
}

/// What to do with a PUSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Deliver,
    /// Report the loss, then deliver it.
    DeliverAfterLoss(Loss),
    /// Already delivered: drop.
    Duplicate,
}

/// Every stream's position, looked up once per PUSH. A session has few streams (its rooms,
/// at most `max_rooms` from WELCOME, its inbox and the broadcast stream) and PUSHes come in
/// runs of one stream, so a vector tried at the last stream found first beats a hash map:
/// a hit compares one name's bytes instead of hashing it (issue 12: the fan-out bench's
/// receive path); a miss compares lengths before bytes.
#[derive(Debug, Default)]
pub struct Positions {
    streams: StreamTable,
}

/// Stream → position, in a vector with the last found entry's index.
#[derive(Debug, Default)]
struct StreamTable {
    entries: Vec<(StreamName, Position)>,
    /// Index of the entry found last (may be past the end after a removal).
    last: usize,
}

impl StreamTable {
    fn index_of(&self, stream: StreamRef<'_>) -> Option<usize> {
        if self
            .entries
            .get(self.last)
            .is_some_and(|(s, _)| *s == stream)
        {
            return Some(self.last);
        }
        self.entries.iter().position(|(s, _)| *s == stream)
    }

    fn get_mut(&mut self, stream: StreamRef<'_>) -> Option<&mut Position> {
        let i = self.index_of(stream)?;
        self.last = i;
        Some(&mut self.entries[i].1)
    }

    fn get(&self, stream: &StreamName) -> Option<&Position> {
        self.index_of(stream.as_ref()).map(|i| &self.entries[i].1)
    }

    fn contains_key(&self, stream: &StreamName) -> bool {
        self.index_of(stream.as_ref()).is_some()
    }

    /// Inserts a stream not in the table.
    fn insert_new(&mut self, stream: StreamName, p: Position) -> &mut Position {
        debug_assert!(!self.contains_key(&stream));
        self.entries.push((stream, p));
        self.last = self.entries.len() - 1;
        &mut self.entries[self.last].1
    }

    fn get_or_insert(&mut self, stream: &StreamName, p: Position) -> &mut Position {
        match self.index_of(stream.as_ref()) {
            Some(i) => {
                self.last = i;
                &mut self.entries[i].1
            }
            None => self.insert_new(stream.clone(), p),
        }
    }

    fn remove(&mut self, stream: &StreamName) {
        if let Some(i) = self.index_of(stream.as_ref()) {
            self.entries.swap_remove(i);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&StreamName, &Position)> {
        self.entries.iter().map(|(s, p)| (s, p))
    }
}

impl Positions {
    /// Decides about a PUSH of `stream` (a [`StreamName`] or a borrowed [`StreamRef`]) at
    /// (`epoch`, `offset`) and advances the position if it is delivered. Allocates only for
    /// a stream seen the first time and for a loss report.
    pub fn on_push<'s>(
        &mut self,
        stream: impl Into<StreamRef<'s>>,
        epoch: u32,
        offset: u64,
    ) -> Verdict {
        let stream = stream.into();
        let Some(p) = self.streams.get_mut(stream) else {
            self.streams.insert_new(
                stream.to_owned(),
                Position {
                    epoch,
                    last: offset,
                    announced: None,
                },
            );
            return Verdict::Deliver;
        };
        if p.epoch != epoch {
            let loss = Loss {
                stream: stream.to_owned(),
                reason: LossReason::EpochChanged,
                missing: 1..offset.max(1),
                epoch,
            };
            *p = Position {
                epoch,
                last: offset,
                announced: None,
            };
            return Verdict::DeliverAfterLoss(loss);
        }
        if offset <= p.last {
            return Verdict::Duplicate;
        }
        let missing = p.last + 1..offset;
        p.last = offset;
        if missing.is_empty() {
            return Verdict::Deliver;
        }
        if let Some(a) = p.announced.take() {
            if a.start <= missing.start && missing.end <= a.end {
                return Verdict::Deliver;
            }
        }
        Verdict::DeliverAfterLoss(Loss {
            stream: stream.to_owned(),
            reason: LossReason::Gap,
            missing,
            epoch,
        })
    }

    /// Applies a RESUME_RESULT; returns the loss to report, if any. A
    /// REFUSED result forgets the stream (nothing of it follows).
    pub fn on_resume(&mut self, r: &ResumeResult) -> Option<Loss> {
        let reason = match r.outcome {
            ResumeOutcome::Resumed => return None,
            ResumeOutcome::Refused(_) => {
                self.forget(&r.stream);
                return None;
            }
            ResumeOutcome::Gap => LossReason::Gap,
            ResumeOutcome::EpochChanged => LossReason::EpochChanged,
        };
        let continue_at = r.missing_to;
        let p = self.streams.get_or_insert(
            &r.stream,
            Position {
                epoch: r.old_epoch,
                last: 0,
                announced: None,
            },
        );
        if reason == LossReason::EpochChanged || p.epoch != r.new_epoch {
            *p = Position {
                epoch: r.new_epoch,
                last: continue_at.saturating_sub(1),
                announced: None,
            };
            return Some(Loss {
                stream: r.stream.clone(),
                reason,
                missing: r.missing_from.min(r.missing_to)..r.missing_to,
                epoch: r.new_epoch,
            });
        }
        // A gap may start below what was already delivered (the server
        // redelivers unacknowledged inbox messages); only the part above
        // counts, and delivered offsets stay delivered.
        let start = r.missing_from.max(p.last.saturating_add(1));
        p.last = p.last.max(continue_at.saturating_sub(1));
        (start < continue_at).then(|| Loss {
            stream: r.stream.clone(),
            reason,
            missing: start..continue_at,
            epoch: r.new_epoch,
        })
    }

    /// Applies a WAKE_ACK entry: `count` messages from `resume_from` were
    /// skipped. Returns the loss to report: none for the part at or below the
    /// position, which an urgent message past the skipped run already
    /// revealed (and reported) as a jump.
    pub fn on_skipped(
        &mut self,
        stream: &StreamName,
        resume_from: u64,
        count: u32,
    ) -> Option<Loss> {
        let mut missing = resume_from..resume_from.saturating_add(count.into());
        let epoch = match self.streams.get_mut(stream.as_ref()) {
            Some(p) => {
                missing.start = missing.start.max(p.last.saturating_add(1));
                if missing.is_empty() {
                    return None;
                }
                p.announced = Some(missing.clone());
                p.epoch
            }
            None => 0,
        };
        Some(Loss {
            stream: stream.clone(),
            reason: LossReason::SkippedWhileAsleep,
            missing,
            epoch,
        })
    }

    /// Starts tracking `stream` at `tail` of `epoch` (from a ROOM_RESULT of a
    /// JOIN, or WELCOME for the inbox): offsets above it arrive live, and a
    /// reconnect resumes from it even if no message arrived. A stream already
    /// tracked keeps its position. Returns whether it was started.
    pub fn start(&mut self, stream: &StreamName, epoch: u32, tail: u64) -> bool {
        if self.streams.contains_key(stream) {
            return false;
        }
        self.streams.insert_new(
            stream.clone(),
            Position {
                epoch,
                last: tail,
                announced: None,
            },
        );
        true
    }

    /// Resume data for HELLO: every stream with a known position.
    pub fn resume_points(&self) -> Vec<ResumePoint> {
        let mut v: Vec<_> = self
            .streams
            .iter()
            .map(|(s, p)| ResumePoint {
                stream: s.clone(),
                epoch: p.epoch,
                last_offset: p.last,
            })
            .collect();
        v.sort_by(|a, b| a.stream.cmp(&b.stream));
        v
    }

    /// Whether `stream` has a known position (it will be resumed, not joined).
    pub fn knows(&self, stream: &StreamName) -> bool {
        self.streams.contains_key(stream)
    }

    /// Forgets a stream (after LEAVE).
    pub fn forget(&mut self, stream: &StreamName) {
        self.streams.remove(stream);
    }

    /// The position of `stream`: (epoch, last delivered offset).
    pub fn get(&self, stream: &StreamName) -> Option<(u32, u64)> {
        self.streams.get(stream).map(|p| (p.epoch, p.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> StreamName {
        StreamName::Room("r".into())
    }

    #[test]
    fn interleaved_streams_keep_their_own_positions() {
        let mut p = Positions::default();
        let names: Vec<StreamName> = (0..70)
            .map(|i| match i % 2 {
                0 => StreamName::Room(format!("r{i}")),
                _ => StreamName::User(format!("r{i}")),
            })
            .collect();
        for offset in 1..=3 {
            for s in &names {
                assert_eq!(p.on_push(s, 1, offset), Verdict::Deliver, "{s} {offset}");
            }
        }
        assert_eq!(p.on_push(&names[3], 1, 3), Verdict::Duplicate);
        assert!(matches!(
            p.on_push(&names[4], 1, 9),
            Verdict::DeliverAfterLoss(Loss { missing, .. }) if missing == (4..9)
        ));
        // The same name as a room and as a user are two streams.
        assert_eq!(p.get(&StreamName::Room("r1".into())), None);
        assert_eq!(p.get(&names[1]), Some((1, 3)));
        // Forgetting moves the last entry into the freed place, and the last-found index
        // may point past the end: every other stream keeps its position.
        p.forget(&names[69]);
        p.forget(&names[0]);
        assert!(!p.knows(&names[0]) && !p.knows(&names[69]));
        for (i, s) in names.iter().enumerate().skip(1).take(68) {
            let last = if i == 4 { 9 } else { 3 };
            assert_eq!(p.get(s), Some((1, last)), "{s}");
        }
        assert!(p.start(&names[0], 2, 7));
        assert_eq!(p.get(&names[0]), Some((2, 7)));
    }

    #[test]
    fn duplicates_are_dropped_by_offset() {
        let mut p = Positions::default();
        assert_eq!(p.on_push(&room(), 1, 5), Verdict::Deliver);
        assert_eq!(p.on_push(&room(), 1, 6), Verdict::Deliver);
        assert_eq!(p.on_push(&room(), 1, 6), Verdict::Duplicate);
        assert_eq!(p.on_push(&room(), 1, 3), Verdict::Duplicate);
        assert_eq!(p.get(&room()), Some((1, 6)));
    }

    #[test]
    fn silent_jump_is_reported() {
        let mut p = Positions::default();
        p.on_push(&room(), 1, 1);
        match p.on_push(&room(), 1, 4) {
            Verdict::DeliverAfterLoss(l) => {
                assert_eq!(l.missing, 2..4);
                assert_eq!(l.reason, LossReason::Gap);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn epoch_change_resets_position() {
        let mut p = Positions::default();
        p.on_push(&room(), 1, 10);
        let r = ResumeResult {
            stream: room(),
            outcome: ResumeOutcome::EpochChanged,
            old_epoch: 1,
            new_epoch: 2,
            missing_from: 1,
            missing_to: 1,
        };
        let loss = p.on_resume(&r).unwrap();
        assert_eq!(
            (loss.epoch, loss.missing.start, loss.missing.end),
            (2, 1, 1)
        );
        assert_eq!(p.on_push(&room(), 2, 1), Verdict::Deliver);
        assert_eq!(
            p.on_push(&room(), 1, 11),
            Verdict::DeliverAfterLoss(Loss {
                stream: room(),
                reason: LossReason::EpochChanged,
                missing: 1..11,
                epoch: 1,
            }),
            "a push from another epoch is never silently mixed in"
        );
    }

    #[test]
    fn epoch_change_ranges_are_in_the_new_epoch_and_never_inverted() {
        // docs/protocol.md 4.10: EPOCH_CHANGED's [missing_from, missing_to) is in new_epoch.
        for last in [22, u64::MAX] {
            let mut p = Positions::default();
            p.on_push(&room(), 1, last);
            match p.on_push(&room(), 2, 5) {
                Verdict::DeliverAfterLoss(l) => {
                    assert_eq!(
                        (l.reason, l.missing, l.epoch),
                        (LossReason::EpochChanged, 1..5, 2)
                    )
                }
                v => panic!("{v:?}"),
            }
            let mut p = Positions::default();
            p.on_push(&room(), 1, last);
            match p.on_push(&room(), 2, 1) {
                Verdict::DeliverAfterLoss(l) => assert_eq!(l.missing, 1..1),
                v => panic!("{v:?}"),
            }
            assert_eq!(p.on_push(&room(), 2, 2), Verdict::Deliver);
        }
        // A GAP reported after a position at u64::MAX does not overflow.
        let mut p = Positions::default();
        p.on_push(&room(), 1, u64::MAX);
        let gap = ResumeResult {
            stream: room(),
            outcome: ResumeOutcome::Gap,
            old_epoch: 1,
            new_epoch: 1,
            missing_from: 3,
            missing_to: 9,
        };
        assert_eq!(p.on_resume(&gap), None);
    }

    #[test]
    fn gap_below_delivered_keeps_delivered() {
        let mut p = Positions::default();
        p.on_push(&room(), 1, 10);
        let r = ResumeResult {
            stream: room(),
            outcome: ResumeOutcome::Gap,
            old_epoch: 1,
            new_epoch: 1,
            missing_from: 5,
            missing_to: 12,
        };
        assert_eq!(p.on_resume(&r).unwrap().missing, 11..12);
        assert_eq!(p.on_push(&room(), 1, 12), Verdict::Deliver);
        let r2 = ResumeResult {
            missing_from: 3,
            missing_to: 8,
            ..r
        };
        assert_eq!(p.on_resume(&r2), None, "entirely below what was delivered");
    }

    #[test]
    fn refused_resume_forgets_the_stream() {
        let mut p = Positions::default();
        p.on_push(&room(), 1, 10);
        let r = ResumeResult {
            stream: room(),
            outcome: ResumeOutcome::Refused(crate::Status::FORBIDDEN),
            old_epoch: 1,
            new_epoch: 1,
            missing_from: 0,
            missing_to: 0,
        };
        assert_eq!(p.on_resume(&r), None);
        assert!(p.resume_points().is_empty(), "not resumed again");
    }

    #[test]
    fn start_sets_a_resume_point_once() {
        let mut p = Positions::default();
        assert!(p.start(&room(), 1, 7));
        assert!(!p.start(&room(), 1, 3), "a known position is kept");
        assert_eq!(p.resume_points()[0].last_offset, 7);
        assert_eq!(p.on_push(&room(), 1, 8), Verdict::Deliver);
        assert_eq!(p.on_push(&room(), 1, 7), Verdict::Duplicate);
    }

    #[test]
    fn announced_skip_is_not_reported_twice() {
        let mut p = Positions::default();
        p.on_push(&room(), 1, 1);
        let loss = p.on_skipped(&room(), 3, 4).unwrap();
        assert_eq!(loss.missing, 3..7);
        assert_eq!(p.on_push(&room(), 1, 2), Verdict::Deliver, "held frame");
        assert_eq!(p.on_push(&room(), 1, 7), Verdict::Deliver);
    }

    #[test]
    fn skipped_run_already_passed_is_not_reported_again() {
        let mut p = Positions::default();
        p.on_push(&room(), 1, 2);
        // Urgent 5 after a skipped run 3..5: the jump is the report.
        assert!(matches!(
            p.on_push(&room(), 1, 5),
            Verdict::DeliverAfterLoss(Loss { ref missing, .. }) if *missing == (3..5)
        ));
        assert_eq!(p.on_skipped(&room(), 3, 2), None);
        assert_eq!(p.on_skipped(&room(), 4, 3).unwrap().missing, 6..7);
    }
}
