//! Holdback of room traffic while a client sleeps.
//!
//! Allocated only when a session goes to sleep and freed on wake, so an
//! awake session pays one null pointer for it. Memory is bounded by
//! `sleep_holdback_frames` shared `Bytes` plus one entry per skipped stream.

use bytes::Bytes;

use crate::ops::Skipped;
use crate::stream::StreamName;

/// What `Session::offer_push` did with a frame; the gateway counts these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for transmission now.
    Sent,
    /// Held until the sleeping client wakes.
    Held,
    /// Not delivered; reported to the client in WAKE_ACK on wake.
    Skipped,
    /// Not delivered: the session is not established (before WELCOME or
    /// after close).
    Dropped,
}

/// Why a push is being delivered; decides what sleep does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushClass {
    /// Room broadcast: held, then skipped, while the client sleeps.
    Room,
    /// Addressed to this user (inbox): always delivered at once.
    Direct,
    /// Marked urgent (PUSH flag): always delivered at once.
    Urgent,
}

/// Frames held and streams skipped during one sleep.
#[derive(Debug, Default)]
pub(crate) struct Holdback {
    /// Room frames waiting for wake, in arrival order.
    pub(crate) held: Vec<Bytes>,
    /// Streams that overflowed the holdback, with their first lost offset.
    pub(crate) skipped: Vec<Skipped>,
}

impl Holdback {
    /// Holds `frame` if there is room, else records it as skipped. Once a
    /// stream skipped, its later frames skip too, so the client never sees a
    /// stream jump past a hole it was not told about.
    pub(crate) fn offer(
        &mut self,
        stream: &StreamName,
        offset: u64,
        frame: Bytes,
        bound: usize,
    ) -> PushOutcome {
        if let Some(s) = self.skipped.iter_mut().find(|s| s.stream == *stream) {
            s.count = s.count.saturating_add(1);
            s.resume_from = s.resume_from.min(offset);
            return PushOutcome::Skipped;
        }
        if self.held.len() < bound {
            self.held.push(frame);
            return PushOutcome::Held;
        }
        self.skipped.push(Skipped {
            stream: stream.clone(),
            resume_from: offset,
            count: 1,
        });
        PushOutcome::Skipped
    }
}
